//! Each task runs from its own copy of its image directory, as a container runs from an image
//! layer: a build that writes the next version into the same directory (the quickstart's
//! buildspec rebuilding a commit that is already deployed) never writes into a program a running
//! task executes (`Text file busy`), and never changes what a running task sees.
//!
//! The copy follows symbolic links, so a link to a program outside the directory is copied too:
//! inside a container there is no outside to point to. The copy lives in the private data
//! directory and stays private: it keeps only the owner's permission bits of what it copies.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::launch::Launch;

/// Directories deeper than this are refused: it also ends a cycle of symbolic links.
const DEPTH_MAX: usize = 32;

/// Where container `index` of the task in `task_dir` keeps its copy of its image.
pub fn image_copy_dir(task_dir: &Path, index: usize) -> PathBuf {
    task_dir.join("images").join(index.to_string())
}

/// An image directory that could not be copied for a task.
#[derive(Debug, thiserror::Error)]
#[error("cannot copy image directory {} for the task: {source}", from.display())]
pub struct CopyImageError {
    from: PathBuf,
    source: std::io::Error,
}

/// Copies the image directory `from` to `to` (which must not exist yet).
pub fn copy_image(from: &Path, to: &Path) -> Result<(), CopyImageError> {
    copy_dir(from, to, 0).map_err(|source| CopyImageError { from: from.to_path_buf(), source })
}

fn copy_dir(from: &Path, to: &Path, depth: usize) -> std::io::Result<()> {
    if depth > DEPTH_MAX {
        return Err(std::io::Error::other(format!(
            "{} is more than {DEPTH_MAX} directories deep (a cycle of symbolic links?)",
            from.display()
        )));
    }
    std::fs::create_dir_all(to)?;
    std::fs::set_permissions(to, owner_only(&std::fs::metadata(from)?))?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        // `metadata` follows symbolic links: a link is copied as what it points to.
        let meta = std::fs::metadata(&source)?;
        if meta.is_dir() {
            copy_dir(&source, &target, depth + 1)?;
        } else if meta.is_file() {
            std::fs::copy(&source, &target)?;
            std::fs::set_permissions(&target, owner_only(&meta))?;
        }
        // Sockets, FIFOs and devices are not part of an image.
    }
    Ok(())
}

/// The permissions of `meta` without group and other bits.
fn owner_only(meta: &std::fs::Metadata) -> Permissions {
    Permissions::from_mode(meta.permissions().mode() & 0o700)
}

/// `launch` with every path inside the image directory moved to `copy`.
pub fn rebase(mut launch: Launch, copy: &Path) -> Launch {
    let moved = |path: &Path| match path.strip_prefix(&launch.image_dir) {
        Ok(rest) => copy.join(rest),
        Err(_) => path.to_path_buf(),
    };
    launch.program = moved(&launch.program);
    launch.cwd = moved(&launch.cwd);
    launch.image_dir = copy.to_path_buf();
    launch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_the_image_move_to_the_copy_and_others_stay() {
        let launch = Launch {
            image_dir: "/srv/images/web-1".into(),
            program: "/srv/images/web-1/bin/app".into(),
            args: vec!["app".into()],
            cwd: "/srv/images/web-1/data".into(),
            env: Vec::new(),
        };
        let copy = Path::new("/state/tasks/t-1/images/0");
        let moved = rebase(launch.clone(), copy);
        assert_eq!(moved.program, Path::new("/state/tasks/t-1/images/0/bin/app"));
        assert_eq!(moved.cwd, Path::new("/state/tasks/t-1/images/0/data"));
        assert_eq!(moved.image_dir, copy);
        let on_path = Launch { program: "/usr/bin/python3".into(), ..launch };
        assert_eq!(rebase(on_path, copy).program, Path::new("/usr/bin/python3"));
    }
}
