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

pub fn dir(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join("artifacts").join(id)
}

/// Moves the finished tree at `staged` into the store and returns its id.
pub fn store(data_dir: &Path, staged: &Path) -> Result<String, String> {
    let id = format!("sha256-{}", manifest_hash(staged)?);
    let dest = dir(data_dir, &id);
    if dest.exists() {
        let _ = fs::remove_dir_all(staged);
        // Fresh again for retention's grace period.
        if let Ok(f) = fs::File::open(&dest) {
            // A file's modification time is the OS's wall clock, and is compared with it below.
            #[allow(clippy::disallowed_methods)]
            let _ = f.set_modified(SystemTime::now());
        }
    } else if let Err(err) = fs::rename(staged, &dest) {
        if !dest.exists() {
            return Err(format!("storing artifact {}: {err}", dest.display()));
        }
        let _ = fs::remove_dir_all(staged);
    }
    Ok(id)
}

/// A fresh staging directory under `DATA_DIR/artifacts/.staging`.
pub fn staging(data_dir: &Path) -> Result<PathBuf, String> {
    let p =
        data_dir.join("artifacts").join(".staging").join(format!("{:016x}", rand::random::<u64>()));
    fs::create_dir_all(p.parent().unwrap_or(&p)).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(p)
}

fn manifest_hash(root: &Path) -> Result<String, String> {
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

fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) -> Result<(), String> {
    let here = root.join(rel);
    let entries = fs::read_dir(&here).map_err(|e| format!("{}: {e}", here.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", here.display()))?;
        if out.len() > FILES_MAX {
            return Err(format!("artifact has more than {FILES_MAX} files"));
        }
        let rel = rel.join(entry.file_name());
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let name = rel.to_string_lossy();
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(|e| format!("{}: {e}", path.display()))?;
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

fn file_hash(path: &Path) -> Result<String, String> {
    let mut f = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Copies a tree (files, directories, symlinks as links).
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let entries = fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", from.display()))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let meta = fs::symlink_metadata(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&src).map_err(|e| format!("{}: {e}", src.display()))?;
            std::os::unix::fs::symlink(target, &dst)
                .map_err(|e| format!("{}: {e}", dst.display()))?;
        } else if meta.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            fs::copy(&src, &dst).map_err(|e| format!("{}: {e}", dst.display()))?;
        }
    }
    Ok(())
}

/// Removes stored artifacts not in `keep` and older than the grace period.
pub fn collect_garbage(data_dir: &Path, keep: &std::collections::HashSet<String>) -> usize {
    let Ok(entries) = fs::read_dir(data_dir.join("artifacts")) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("sha256-") || keep.contains(&name) {
            continue;
        }
        // Ages of files: their modification times are the OS's wall clock.
        #[allow(clippy::disallowed_methods)]
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > GRACE);
        if old && fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}
