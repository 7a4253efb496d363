//! `cargo xtask tidy`, also run by `cargo test` (`xtask/tests/tidy.rs`): the rules of
//! ARCHITECTURE.md that a machine can check, over the whole workspace.
//!
//! - the pure crates do no IO, judged by their dependency lists and by the paths their non-test
//!   code names (`purity`);
//! - every `**Invariant:**` of ARCHITECTURE.md names the tests that enforce it, and they exist
//!   (`invariants`);
//! - no non-test function is over [`length::MAX_LINES`] lines, except those of the ratchet list
//!   `xtask/tidy-allow.txt`, which may only shrink (`length`);
//! - the data plane depends on no crate that knows deployments, and the control plane's HTTP
//!   handlers never write the store (`layers`);
//! - every `[dependencies]` entry is used (`unused`).
//!
//! Each check is a pure function of what it reads (manifests, sources, the list); this module
//! does the reading.

mod invariants;
mod layers;
mod length;
mod purity;
mod unused;

use std::fmt;
use std::path::{Path, PathBuf};

pub use length::MAX_LINES;

/// One thing tidy objects to: where, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Relative to the workspace root.
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the workspace's manifests with `cargo metadata`: {0}")]
    Metadata(#[from] cargo_metadata::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: cannot parse: {message}")]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
}

/// A workspace member as tidy sees it: its name, directory and declared `[dependencies]`.
#[derive(Clone, Debug)]
pub struct Package {
    pub name: String,
    /// Relative to the workspace root.
    pub dir: PathBuf,
    /// The names code uses for its normal dependencies (renamed, `-` as `_`).
    pub dependencies: Vec<String>,
}

/// A Rust source file, relative to the workspace root, and its text.
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// Runs every check over the workspace at `root`; the findings, in a stable order.
pub fn check(root: &Path) -> Result<Vec<Finding>, Error> {
    let packages = packages(root)?;
    let mut findings = Vec::new();
    for package in &packages {
        let sources = read_sources(root, &package_source_dirs(package))?;
        if purity::is_pure(&package.name) {
            findings.extend(purity::check_dependencies(package));
            for source in &sources {
                findings.extend(purity::check_source(source)?);
            }
        }
        if package.name == layers::DATA_PLANE {
            findings.extend(layers::check_data_plane(package));
        }
        for source in sources.iter().filter(|s| s.path == Path::new(layers::HTTP_HANDLERS)) {
            findings.extend(layers::check_http_handlers(source)?);
        }
        findings.extend(unused::check(package, &sources)?);
    }
    let architecture = read(root, Path::new("ARCHITECTURE.md"))?;
    findings.extend(invariants::check(&architecture, |path| read(root, path).ok())?);
    let crate_sources = read_sources(root, &length_source_dirs(root, &packages))?;
    let allow = match read(root, Path::new(length::ALLOW_LIST)) {
        Ok(source) => source.text,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            String::new()
        }
        Err(other) => return Err(other),
    };
    findings.extend(length::check(&crate_sources, &allow)?);
    Ok(findings)
}

/// `cargo xtask tidy`: prints every finding and what to do; fails when there is one.
pub fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(arg) = args.first() {
        return Err(format!("tidy takes no arguments (got `{arg}`)").into());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root");
    let findings = check(root)?;
    for finding in &findings {
        println!("{finding}");
    }
    print!("{}", length::ratchet_summary(root)?);
    if findings.is_empty() {
        println!("tidy: ok");
        Ok(())
    } else {
        Err(format!("tidy: {} finding(s)", findings.len()).into())
    }
}

/// The workspace's members, from `cargo metadata` (manifests only: nothing is resolved).
pub fn packages(root: &Path) -> Result<Vec<Package>, Error> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .manifest_path(root.join("Cargo.toml"))
        .no_deps()
        .exec()?;
    let root = metadata.workspace_root.as_std_path();
    let mut packages: Vec<Package> = metadata
        .workspace_packages()
        .into_iter()
        .map(|p| Package {
            name: p.name.to_string(),
            dir: p
                .manifest_path
                .parent()
                .map(|dir| dir.as_std_path().strip_prefix(root).unwrap_or(dir.as_std_path()))
                .unwrap_or(Path::new(""))
                .to_path_buf(),
            dependencies: p
                .dependencies
                .iter()
                .filter(|d| d.kind == cargo_metadata::DependencyKind::Normal)
                .map(|d| d.rename.as_deref().unwrap_or(&d.name).replace('-', "_"))
                .collect(),
        })
        .collect();
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(packages)
}

/// Where a package's non-test code lives: `src/`, and the examples and benchmarks that may use
/// its normal dependencies.
fn package_source_dirs(package: &Package) -> Vec<PathBuf> {
    ["src", "examples", "benches"].iter().map(|d| package.dir.join(d)).collect()
}

/// `crates/*/src` and `xtask/src`: the code the function-length bound applies to.
fn length_source_dirs(root: &Path, packages: &[Package]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = packages
        .iter()
        .map(|p| p.dir.join("src"))
        .filter(|d| d.starts_with("crates") || d.starts_with("xtask"))
        .filter(|d| root.join(d).is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn read(root: &Path, path: &Path) -> Result<Source, Error> {
    let text = std::fs::read_to_string(root.join(path))
        .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    Ok(Source { path: path.to_path_buf(), text })
}

/// Every `.rs` file under `dirs` (relative to `root`; missing ones are skipped), sorted, except
/// the files of test-only modules.
fn read_sources(root: &Path, dirs: &[PathBuf]) -> Result<Vec<Source>, Error> {
    let mut paths = Vec::new();
    for dir in dirs {
        collect_rs(root, dir, &mut paths)?;
    }
    paths.sort();
    let sources = paths.into_iter().map(|path| read(root, &path)).collect::<Result<_, _>>()?;
    without_test_modules(sources)
}

/// `sources` without the files that `#[cfg(test)] mod name;` declarations bring in (`name.rs`,
/// `name/…`): they are test code, however they are laid out.
pub fn without_test_modules(sources: Vec<Source>) -> Result<Vec<Source>, Error> {
    let mut test_paths = Vec::new();
    for source in &sources {
        for item in parse(source)?.items {
            if let syn::Item::Mod(m) = item
                && m.content.is_none()
                && is_test_only(&m.attrs)
            {
                let dir = module_dir(&source.path);
                test_paths.push(dir.join(format!("{}.rs", m.ident)));
                test_paths.push(dir.join(m.ident.to_string()));
            }
        }
    }
    Ok(sources.into_iter().filter(|s| !test_paths.iter().any(|p| s.path.starts_with(p))).collect())
}

/// Where the files of the modules a source file declares live.
fn module_dir(path: &Path) -> PathBuf {
    let parent = path.parent().unwrap_or(Path::new(""));
    match path.file_stem().and_then(|s| s.to_str()) {
        Some("lib" | "main" | "mod") | None => parent.to_path_buf(),
        Some(stem) => parent.join(stem),
    }
}

fn collect_rs(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let entries = match std::fs::read_dir(root.join(dir)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(Error::Io { path: dir.to_path_buf(), source }),
    };
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        let path = dir.join(entry.file_name());
        let kind = entry.file_type().map_err(|source| Error::Io { path: path.clone(), source })?;
        if kind.is_dir() {
            collect_rs(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Parses a source file with syn, or says where it cannot.
fn parse(source: &Source) -> Result<syn::File, Error> {
    syn::parse_file(&source.text).map_err(|e| {
        let start: proc_macro2::LineColumn = e.span().start();
        Error::Parse {
            path: source.path.clone(),
            line: start.line,
            column: start.column + 1,
            message: e.to_string(),
        }
    })
}

/// Whether an item's attributes make it test-only: `#[cfg(test)]`, `#[test]`, `#[tokio::test]`.
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        let path = attr.path();
        if path.is_ident("cfg") {
            let mut test = false;
            let _ = attr.parse_nested_meta(|meta| {
                test |= meta.path.is_ident("test");
                Ok(())
            });
            return test;
        }
        path.segments.last().is_some_and(|s| s.ident == "test")
    })
}
