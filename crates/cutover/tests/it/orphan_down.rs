//! `cutover down` with no control plane running stops what a killed one left behind, and what it
//! creates under the data directory is as private as what `cutover up` creates.

use std::os::unix::fs::DirBuilderExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;

/// `path` and everything under it, not following symbolic links.
fn tree(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_path_buf()];
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            out.extend(tree(&entry.path()));
        }
    }
    out
}

#[test]
fn down_without_a_control_plane_keeps_the_data_dir_private_under_an_open_umask() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::DirBuilder::new().mode(0o700).create(&data_dir).unwrap();
    // Nothing listens there: this is the orphan path.
    let api = format!("http://127.0.0.1:{}", free_port());

    // The usual umask of a shell, under which a new directory is 0755.
    let down = Command::new("sh")
        .args(["-c", "umask 022; exec \"$0\" down", CUTOVER])
        .env("CUTOVER_DATA_DIR", &data_dir)
        .env("CUTOVER_API", &api)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&down.stdout);
    assert!(down.status.success(), "{stdout}{}", String::from_utf8_lossy(&down.stderr));
    assert!(stdout.contains("the control plane is not running"), "{stdout}");

    let entries = tree(&data_dir);
    assert!(entries.len() > 1, "down created nothing under the data directory: {entries:?}");
    let open: Vec<String> = entries
        .iter()
        .filter_map(|path| {
            let mode = std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777;
            (mode & 0o077 != 0).then(|| format!("{mode:o} {}", path.display()))
        })
        .collect();
    assert_eq!(open, Vec::<String>::new(), "readable by other users");
}
