//! UPLOAD_ARTIFACTS: finds the files an `artifacts` section names in the source directory and
//! copies them into the caller's output directory (blocking IO; the runner calls it off the
//! async threads).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::buildspec::Artifacts;
use model::glob::Glob;

/// One artifact a build produced: a directory of files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactOutput {
    /// `None` for the primary artifact, the `secondary-artifacts` key otherwise.
    pub identifier: Option<String>,
    /// `name`, expanded in the build's shell (`app-$(date +%F)` → `app-2026-08-01`).
    pub name: Option<String>,
    /// Where the files are.
    pub dir: PathBuf,
    /// The files, relative to `dir`, sorted.
    pub files: Vec<PathBuf>,
    pub bytes: u64,
}

pub(crate) struct Limits {
    pub files_max: usize,
    pub bytes_max: u64,
    /// Directory entries a walk may look at, so `**/*` over a huge tree fails instead of
    /// running for hours.
    pub entries_max: usize,
}

/// Why the artifacts could not be collected: CodeBuild's CLIENT_ERROR, with what to change.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CollectError {
    #[error("the source directory {} is not readable: {source}", dir.display())]
    SourceUnreadable { dir: PathBuf, source: std::io::Error },
    #[error(
        "`{other}` and `{label}` would both be written as `{}`{}; rename one or exclude it with \
         exclude-paths",
        dest.display(),
        if *discard_paths { " (discard-paths: yes)" } else { "" }
    )]
    SameDestination { other: String, label: String, dest: PathBuf, discard_paths: bool },
    #[error("no matching artifact paths found")]
    NothingMatched,
    #[error(
        "the artifact has {files} files, more than the limit of {max}; narrow `files` or use \
         exclude-paths"
    )]
    TooManyFiles { files: usize, max: usize },
    #[error("the artifact is {bytes} bytes, more than the limit of {max} bytes")]
    TooLarge { bytes: u64, max: u64 },
    #[error("cannot create the artifact directory {}: {source}", dir.display())]
    CreateOutput { dir: PathBuf, source: std::io::Error },
    #[error("cannot create {}: {source}", dir.display())]
    CreateDir { dir: PathBuf, source: std::io::Error },
    #[error("cannot copy `{label}`: {source}")]
    Copy { label: String, source: std::io::Error },
    #[error(
        "the artifact patterns looked at more than {max} files and directories; narrow `files` \
         or base-directory"
    )]
    TooManyEntries { max: usize },
    #[error(
        "base-directory `{0}` does not exist in the source directory after the build; check the \
         path (it is relative to CODEBUILD_SRC_DIR)"
    )]
    BaseDirMissing(String),
    #[error("base-directory `{0}` leads outside the source directory (through a symlink)")]
    BaseDirOutside(String),
}

#[derive(Debug)]
pub(crate) struct Collected {
    /// The files copied, relative to `dest`, and their total size; the error is CodeBuild's
    /// CLIENT_ERROR message.
    pub result: Result<(Vec<PathBuf>, u64), CollectError>,
    /// Log lines: patterns that matched nothing, symlinks skipped.
    pub warnings: Vec<String>,
}

/// Copies what `spec` selects from `src` into `dest` (created). `skip` are directories never
/// looked into (the output directories, when the caller put them inside the source directory).
pub(crate) fn collect(
    src: &Path,
    spec: &Artifacts,
    dest: &Path,
    skip: &[PathBuf],
    limits: &Limits,
) -> Collected {
    let src = match fs::canonicalize(src) {
        Ok(src) => src,
        Err(e) => {
            return Collected {
                result: Err(CollectError::SourceUnreadable { dir: src.to_path_buf(), source: e }),
                warnings: Vec::new(),
            };
        }
    };
    let mut walker = Walker { root: src.clone(), skip, entries: 0, limits, warnings: Vec::new() };
    let result = copy_selected(&mut walker, spec, dest);
    Collected { result, warnings: walker.warnings }
}

fn copy_selected(
    walker: &mut Walker<'_>,
    spec: &Artifacts,
    dest: &Path,
) -> Result<(Vec<PathBuf>, u64), CollectError> {
    let src = walker.root.clone();
    let limits = walker.limits;
    let bases = base_dirs(walker, spec.base_directory.as_ref())?;
    // Destination path → (source path, how it was named in messages).
    let mut chosen: BTreeMap<PathBuf, (PathBuf, String)> = BTreeMap::new();
    for base in &bases {
        let mut found: BTreeMap<Vec<String>, PathBuf> = BTreeMap::new();
        for pattern in &spec.files {
            let before = found.len();
            walker.matching(base, pattern, &mut found)?;
            if found.len() == before {
                walker.warnings.push(format!(
                    "Skipping invalid file path {pattern}: nothing matches it under {}",
                    shown(&src, base)
                ));
            }
        }
        found.retain(|rel, _| !excluded(rel, &spec.exclude_paths));
        for (rel, path) in found {
            let dest_rel = if spec.discard_paths {
                PathBuf::from(rel.last().cloned().unwrap_or_default())
            } else {
                rel.iter().collect()
            };
            let label = shown(&src, &path);
            if let Some((_, other)) = chosen.get(&dest_rel) {
                return Err(CollectError::SameDestination {
                    other: other.clone(),
                    label,
                    dest: dest_rel,
                    discard_paths: spec.discard_paths,
                });
            }
            chosen.insert(dest_rel, (path, label));
        }
    }
    if chosen.is_empty() {
        return Err(CollectError::NothingMatched);
    }
    if chosen.len() > limits.files_max {
        return Err(CollectError::TooManyFiles { files: chosen.len(), max: limits.files_max });
    }
    let mut bytes = 0u64;
    for (path, _) in chosen.values() {
        bytes += fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    }
    if bytes > limits.bytes_max {
        return Err(CollectError::TooLarge { bytes, max: limits.bytes_max });
    }
    fs::create_dir_all(dest)
        .map_err(|source| CollectError::CreateOutput { dir: dest.to_path_buf(), source })?;
    for (dest_rel, (path, label)) in &chosen {
        let to = dest.join(dest_rel);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)
                .map_err(|source| CollectError::CreateDir { dir: parent.to_path_buf(), source })?;
        }
        fs::copy(path, &to)
            .map_err(|source| CollectError::Copy { label: label.clone(), source })?;
    }
    Ok((chosen.into_keys().collect(), bytes))
}

/// A path relative to the source directory, for messages.
fn shown(src: &Path, path: &Path) -> String {
    match path.strip_prefix(src) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

/// Whether `exclude-paths` drops a file: a pattern matches the file or a directory above it.
fn excluded(rel: &[String], exclude: &[Glob]) -> bool {
    let names: Vec<&str> = rel.iter().map(String::as_str).collect();
    exclude.iter().any(|g| (1..=names.len()).any(|n| g.matches(&names[..n])))
}

struct Walker<'a> {
    root: PathBuf,
    skip: &'a [PathBuf],
    entries: usize,
    limits: &'a Limits,
    warnings: Vec<String>,
}

enum Kind {
    File(PathBuf),
    Dir(PathBuf),
    Other,
}

impl Walker<'_> {
    /// What `path` is, following a symlink only when it stays inside the source directory.
    fn kind(&mut self, path: &Path) -> Kind {
        let Ok(meta) = fs::symlink_metadata(path) else { return Kind::Other };
        if meta.is_file() {
            return Kind::File(path.to_path_buf());
        }
        if meta.is_dir() {
            return if self.skip.iter().any(|s| s == path) {
                Kind::Other
            } else {
                Kind::Dir(path.to_path_buf())
            };
        }
        if meta.file_type().is_symlink() {
            match fs::canonicalize(path) {
                Ok(target) if target.starts_with(&self.root) && target.is_file() => {
                    return Kind::File(path.to_path_buf());
                }
                Ok(target) if target.is_dir() => {
                    // Directory links are not followed: they can loop, and what they point at
                    // is reachable by its own path.
                    return Kind::Other;
                }
                Ok(_) => self.warnings.push(format!(
                    "skipped {}: it is a symlink to a file outside the source directory",
                    shown(&self.root, path)
                )),
                Err(_) => {}
            }
        }
        Kind::Other
    }

    fn count(&mut self) -> Result<(), CollectError> {
        self.entries += 1;
        if self.entries > self.limits.entries_max {
            return Err(CollectError::TooManyEntries { max: self.limits.entries_max });
        }
        Ok(())
    }

    /// Every file under `dir`, with its names relative to `dir` prefixed by `rel`.
    fn files_under(
        &mut self,
        dir: &Path,
        rel: &mut Vec<String>,
        out: &mut dyn FnMut(&[String], PathBuf),
    ) -> Result<(), CollectError> {
        let Ok(read) = fs::read_dir(dir) else { return Ok(()) };
        let mut children: Vec<_> = read.filter_map(Result::ok).map(|e| e.path()).collect();
        children.sort();
        for child in children {
            self.count()?;
            let name =
                child.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            rel.push(name);
            match self.kind(&child) {
                Kind::File(p) => out(rel, p),
                Kind::Dir(d) => self.files_under(&d, rel, out)?,
                Kind::Other => {}
            }
            rel.pop();
        }
        Ok(())
    }

    fn matching(
        &mut self,
        base: &Path,
        pattern: &Glob,
        found: &mut BTreeMap<Vec<String>, PathBuf>,
    ) -> Result<(), CollectError> {
        if pattern.is_literal() {
            let names: Vec<String> = pattern
                .as_str()
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(str::to_string)
                .collect();
            let path = names.iter().fold(base.to_path_buf(), |p, n| p.join(n));
            match self.kind(&path) {
                Kind::File(p) => {
                    found.insert(names, p);
                }
                // A directory named outright means everything in it.
                Kind::Dir(d) => {
                    let mut rel = names.clone();
                    self.files_under(&d, &mut rel, &mut |r, p| {
                        found.insert(r.to_vec(), p);
                    })?;
                }
                Kind::Other => {}
            }
            return Ok(());
        }
        let prefix = pattern.literal_prefix();
        let start = prefix.iter().fold(base.to_path_buf(), |p, n| p.join(n));
        let Kind::Dir(start) = self.kind(&start) else { return Ok(()) };
        let mut rel = prefix.clone();
        self.files_under(&start, &mut rel, &mut |r, p| {
            let names: Vec<&str> = r.iter().map(String::as_str).collect();
            if pattern.matches(&names) {
                found.insert(r.to_vec(), p);
            }
        })
    }

    /// Directories (at any depth) whose path relative to the source directory matches `g`.
    fn dirs_matching(
        &mut self,
        dir: &Path,
        rel: &mut Vec<String>,
        g: &Glob,
        out: &mut Vec<PathBuf>,
    ) -> Result<(), CollectError> {
        let Ok(read) = fs::read_dir(dir) else { return Ok(()) };
        let mut children: Vec<_> = read.filter_map(Result::ok).map(|e| e.path()).collect();
        children.sort();
        for child in children {
            self.count()?;
            if let Kind::Dir(d) = self.kind(&child) {
                rel.push(
                    child.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                );
                let names: Vec<&str> = rel.iter().map(String::as_str).collect();
                if g.matches(&names) {
                    out.push(d.clone());
                }
                self.dirs_matching(&d, rel, g, out)?;
                rel.pop();
            }
        }
        Ok(())
    }
}

fn base_dirs(w: &mut Walker<'_>, base: Option<&Glob>) -> Result<Vec<PathBuf>, CollectError> {
    let Some(g) = base else { return Ok(vec![w.root.clone()]) };
    if g.is_literal() {
        let path = g
            .as_str()
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .fold(w.root.clone(), |p, n| p.join(n));
        // A base directory that is itself a link is fine as long as it stays inside.
        let real =
            fs::canonicalize(&path).map_err(|_| CollectError::BaseDirMissing(g.to_string()))?;
        if !real.is_dir() {
            return Err(CollectError::BaseDirMissing(g.to_string()));
        }
        if !real.starts_with(&w.root) {
            return Err(CollectError::BaseDirOutside(g.to_string()));
        }
        return Ok(vec![real]);
    }
    let mut out = Vec::new();
    let root = w.root.clone();
    w.dirs_matching(&root, &mut Vec::new(), g, &mut out)?;
    if out.is_empty() {
        return Err(CollectError::BaseDirMissing(g.to_string()));
    }
    Ok(out)
}
