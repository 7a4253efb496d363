//! Content-addressed artifacts under `DATA_DIR/artifacts/sha256-<hex>`: the hex is the SHA-256
//! of a manifest listing every file's relative path, mode (executable or not, symlink) and
//! content hash, so the same tree is stored once. Also directory copies and retention.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

/// Executions per pipeline whose artifacts are kept (besides every unfinished execution).
pub const KEEP_EXECUTIONS: u32 = 10;
/// An unreferenced artifact younger than this is kept: it may belong to an execution being
/// created right now.
const GRACE: Duration = Duration::from_secs(600);
/// Most files in one artifact.
const FILES_MAX: usize = 200_000;

/// Why an artifact could not be stored, hashed or copied.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("storing artifact {}: {source}", path.display())]
    Store { path: PathBuf, source: std::io::Error },
    #[error("artifact has more than {FILES_MAX} files")]
    TooManyFiles,
}

/// An IO error at `path`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io { path: path.to_path_buf(), source }
}

pub fn dir(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join("artifacts").join(id)
}

/// Moves the finished tree at `staged` into the store and returns its id. `now` (from
/// `store::clock`) starts the artifact's grace period: retention measures it on the same clock.
pub fn store(data_dir: &Path, staged: &Path, now: SystemTime) -> Result<String, ArtifactError> {
    let id = format!("sha256-{}", manifest_hash(staged)?);
    let dest = dir(data_dir, &id);
    if dest.exists() {
        let _ = fs::remove_dir_all(staged);
    } else if let Err(err) = fs::rename(staged, &dest) {
        if !dest.exists() {
            return Err(ArtifactError::Store { path: dest, source: err });
        }
        let _ = fs::remove_dir_all(staged);
    }
    // Fresh (again) for retention's grace period.
    if let Ok(f) = fs::File::open(&dest) {
        let _ = f.set_modified(now);
    }
    Ok(id)
}

/// A fresh staging directory under `DATA_DIR/artifacts/.staging`.
pub fn staging(data_dir: &Path) -> Result<PathBuf, ArtifactError> {
    let p =
        data_dir.join("artifacts").join(".staging").join(format!("{:016x}", rand::random::<u64>()));
    fs::create_dir_all(p.parent().unwrap_or(&p)).map_err(io(&p))?;
    Ok(p)
}

fn manifest_hash(root: &Path) -> Result<String, ArtifactError> {
    let mut entries = Vec::new();
    walk(root, Path::new(""), &mut entries)?;
    entries.sort();
    let mut h = Sha256::new();
    for line in entries {
        h.update(line.as_bytes());
        h.update(b"\n");
    }
    Ok(hex::encode(h.finalize()))
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) -> Result<(), ArtifactError> {
    let here = root.join(rel);
    let entries = fs::read_dir(&here).map_err(io(&here))?;
    for entry in entries {
        let entry = entry.map_err(io(&here))?;
        if out.len() > FILES_MAX {
            return Err(ArtifactError::TooManyFiles);
        }
        let rel = rel.join(entry.file_name());
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).map_err(io(&path))?;
        let name = rel.to_string_lossy();
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(io(&path))?;
            out.push(format!("l {name} {}", target.display()));
        } else if meta.is_dir() {
            out.push(format!("d {name}"));
            walk(root, &rel, out)?;
        } else {
            use std::os::unix::fs::PermissionsExt;
            let exec = meta.permissions().mode() & 0o111 != 0;
            out.push(format!("f {} {name} {}", if exec { "x" } else { "-" }, file_hash(&path)?));
        }
    }
    Ok(())
}

fn file_hash(path: &Path) -> Result<String, ArtifactError> {
    let mut f = fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Copies a tree (files, directories, symlinks as links).
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), ArtifactError> {
    fs::create_dir_all(to).map_err(io(to))?;
    let entries = fs::read_dir(from).map_err(io(from))?;
    for entry in entries {
        let entry = entry.map_err(io(from))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let meta = fs::symlink_metadata(&src).map_err(io(&src))?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&src).map_err(io(&src))?;
            std::os::unix::fs::symlink(target, &dst).map_err(io(&dst))?;
        } else if meta.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            fs::copy(&src, &dst).map_err(io(&dst))?;
        }
    }
    Ok(())
}

/// Removes stored artifacts not in `keep` and older than the grace period at `now`.
pub fn collect_garbage(
    data_dir: &Path,
    keep: &std::collections::HashSet<String>,
    now: SystemTime,
) -> usize {
    let Ok(entries) = fs::read_dir(data_dir.join("artifacts")) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("sha256-") || keep.contains(&name) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > GRACE);
        if old && fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retention measures the grace period on the clock the artifact was stored by, so a wall
    /// clock set back after a start cannot make a fresh artifact look old.
    #[test]
    fn an_unreferenced_artifact_is_removed_only_after_the_grace_period_of_its_clock() {
        let data = tempfile::tempdir().unwrap();
        // Far ahead of the system's wall clock (2033), as `store::clock` is after the wall clock
        // was set back.
        let stored_at = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let staged = staging(data.path()).unwrap();
        fs::create_dir_all(&staged).unwrap();
        fs::write(staged.join("imageDetail.json"), "{}").unwrap();
        let id = store(data.path(), &staged, stored_at).unwrap();
        let keep = std::collections::HashSet::new();
        assert_eq!(collect_garbage(data.path(), &keep, stored_at + GRACE / 2), 0);
        assert!(dir(data.path(), &id).exists());
        assert_eq!(collect_garbage(data.path(), &keep, stored_at + GRACE * 2), 1);
        assert!(!dir(data.path(), &id).exists());
    }
}
