//! The data directory is private: it holds the API token, the SQLite state (hook output,
//! deployment history), task and build logs, artifacts and git repositories. Directories are
//! 0700 and files 0600 (an executable keeps its owner's execute bit), for what cutover creates
//! and for what an earlier version left behind with looser modes.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What cutover keeps at the top of a data directory. Only these are tightened: a data
/// directory given by mistake (`--data-dir ~`) must not have the user's own files changed.
const OWN_ENTRIES: &[&str] = &[
    "state.db",
    "state.db-wal",
    "state.db-shm",
    "state.db-journal",
    "control.lock",
    "api.json",
    "token",
    "lb",
    "tasks",
    "docker",
    "pipelines",
];

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("creating the data directory {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error(
        "making {path} private (chmod {mode:o}): {source}; fix its owner or choose another --data-dir"
    )]
    Chmod { path: PathBuf, mode: u32, source: std::io::Error },
}

/// Makes every file and directory this process (and its children: tasks, hooks, builds)
/// creates from now on unreadable to other users (umask 077).
#[allow(unsafe_code)]
pub fn private_by_default() {
    // SAFETY: umask(2) only swaps the process's file-mode creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// The mode `mode` becomes: nothing for group and others, the owner's bits kept.
pub fn private_mode(mode: u32) -> u32 {
    mode & 0o700
}

/// Creates `dir` (0700) if needed and takes group and other permissions off it and off
/// everything cutover keeps in it. Returns how many entries were tightened.
pub fn prepare(dir: &Path) -> Result<usize, DataDirError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| DataDirError::Create { path: dir.to_path_buf(), source })?;
    let mut tightened = tighten(dir)?;
    for name in OWN_ENTRIES {
        tightened += tighten_tree(&dir.join(name))?;
    }
    Ok(tightened)
}

/// [`tighten`] on `path` and, for a directory, everything below it. Symbolic links are
/// neither followed nor changed (their mode means nothing).
fn tighten_tree(path: &Path) -> Result<usize, DataDirError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(0) };
    if meta.file_type().is_symlink() {
        return Ok(0);
    }
    let mut tightened = tighten(path)?;
    if meta.is_dir() {
        let entries = std::fs::read_dir(path).into_iter().flatten().flatten();
        for entry in entries {
            tightened += tighten_tree(&entry.path())?;
        }
    }
    Ok(tightened)
}

/// Takes group and other permissions off one file or directory; 1 when it had any.
fn tighten(path: &Path) -> Result<usize, DataDirError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(0) };
    let mode = meta.permissions().mode() & 0o7777;
    let private = private_mode(mode);
    if mode == private || meta.file_type().is_symlink() {
        return Ok(0);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(private)).map_err(|source| {
        DataDirError::Chmod { path: path.to_path_buf(), mode: private, source }
    })?;
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_modes_keep_only_the_owners_bits() {
        assert_eq!(private_mode(0o644), 0o600);
        assert_eq!(private_mode(0o755), 0o700);
        assert_eq!(private_mode(0o777), 0o700);
        assert_eq!(private_mode(0o4755), 0o700, "no setuid on anything cutover keeps");
        assert_eq!(private_mode(0o600), 0o600);
    }

    #[test]
    fn an_existing_data_directory_is_tightened_but_not_what_cutover_does_not_own() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(dir.join("tasks/t-1")).unwrap();
        std::fs::write(dir.join("tasks/t-1/stdout.log"), "x").unwrap();
        std::fs::write(dir.join("state.db"), "x").unwrap();
        std::fs::write(dir.join("notes.txt"), "the user's own").unwrap();
        let set = |p: &str, mode: u32| {
            std::fs::set_permissions(dir.join(p), std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
        for (p, m) in [("", 0o755), ("tasks", 0o755), ("tasks/t-1", 0o775)] {
            set(p, m);
        }
        for p in ["tasks/t-1/stdout.log", "state.db", "notes.txt"] {
            set(p, 0o644);
        }

        assert_eq!(prepare(&dir).unwrap(), 5);
        assert_eq!(
            ["", "tasks", "tasks/t-1", "tasks/t-1/stdout.log", "state.db", "notes.txt"].map(mode),
            [0o700, 0o700, 0o700, 0o600, 0o600, 0o644]
        );
        assert_eq!(prepare(&dir).unwrap(), 0, "nothing left to tighten");
    }
}
