//! Turns a container spec into a program, arguments, working directory and environment.
//!
//! `image` is a directory; argv = `entryPoint ++ command`; argv[0] is looked up in the image
//! directory first (as a path relative to it) and then on `PATH`. When argv is empty, the one
//! executable file at the top of the image directory is run. `workingDirectory` is relative to
//! the image directory (a leading `/` is ignored, as if the directory were the container's root).

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::{ContainerSpec, DEFAULT_PATH, RuntimeError, TaskSpec};

/// Everything needed to spawn a container (or run its health check).
#[derive(Debug, Clone)]
pub struct Launch {
    pub image_dir: PathBuf,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
}

/// Checks the image directory and finds the program. `env` is filled in later by [`environment`].
pub fn resolve(c: &ContainerSpec) -> Result<Launch, RuntimeError> {
    let image_dir = PathBuf::from(&c.image);
    if !image_dir.is_absolute() {
        return Err(RuntimeError::ImageNotADirectory {
            container: c.name.clone(),
            image: c.image.clone(),
        });
    }
    match std::fs::metadata(&image_dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(RuntimeError::ImageNotADirectory {
                container: c.name.clone(),
                image: c.image.clone(),
            });
        }
        Err(_) => {
            return Err(RuntimeError::ImageNotFound {
                container: c.name.clone(),
                image: c.image.clone(),
            });
        }
    }
    let cwd = match &c.working_directory {
        Some(w) => image_dir.join(w.trim_start_matches('/')),
        None => image_dir.clone(),
    };
    if !cwd.is_dir() {
        return Err(RuntimeError::WorkingDirectoryNotFound {
            container: c.name.clone(),
            path: cwd,
        });
    }
    let mut argv: Vec<String> = c.entry_point.iter().chain(&c.command).cloned().collect();
    let path_var = path_of(&c.environment);
    let program = if argv.is_empty() {
        sole_executable(&image_dir, &c.name)?
    } else {
        let argv0 = argv.remove(0);
        find_program(&argv0, &image_dir, &path_var).ok_or_else(|| {
            RuntimeError::ProgramNotFound {
                container: c.name.clone(),
                detail: format!(
                    "program `{argv0}` is neither an executable file in image directory {} nor on PATH",
                    image_dir.display()
                ),
            }
        })?
    };
    Ok(Launch { image_dir, program, args: argv, cwd, env: Vec::new() })
}

/// The `PATH` a container sees: its task definition's, else ours, else a default.
fn path_of(env: &[(String, String)]) -> String {
    env.iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_else(|| DEFAULT_PATH.to_string())
}

/// argv[0] in the image directory first, then (for a bare name) on `PATH`.
pub fn find_program(argv0: &str, image_dir: &Path, path_var: &str) -> Option<PathBuf> {
    if argv0.is_empty() {
        return None;
    }
    let in_image = image_dir.join(argv0.trim_start_matches('/'));
    if is_executable(&in_image) {
        return Some(in_image);
    }
    if argv0.contains('/') {
        let p = PathBuf::from(argv0);
        return (p.is_absolute() && is_executable(&p)).then_some(p);
    }
    std::env::split_paths(path_var).map(|d| d.join(argv0)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn sole_executable(dir: &Path, container: &str) -> Result<PathBuf, RuntimeError> {
    let not_found = |detail| RuntimeError::ProgramNotFound { container: container.into(), detail };
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| not_found(format!("cannot list image directory {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_executable(p))
        .take(10)
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(not_found(format!(
            "neither `entryPoint` nor `command` is set and image directory {} holds no executable file to run",
            dir.display()
        ))),
        _ => Err(not_found(format!(
            "neither `entryPoint` nor `command` is set and image directory {} holds several executable files ({}), so which one to run is ambiguous",
            dir.display(),
            found.iter().filter_map(|p| p.file_name()?.to_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The environment of container `c` of `task`, as documented on the crate.
pub fn environment(
    task: &TaskSpec,
    c: &ContainerSpec,
    ip: Ipv4Addr,
    lb_addr: Option<SocketAddr>,
) -> Vec<(String, String)> {
    // The control plane's secrets never reach a task (a task definition's `environment` wins).
    let mut env = crate::host_env(&[]);
    env.extend(c.environment.iter().cloned());
    if c.ports.is_empty() {
        env.retain(|(k, _)| k != "PORT");
    }
    env.extend(crate::task_variables(task, c, &ip.to_string()));
    if let Some(a) = lb_addr {
        env.push(("CUTOVER_TASK_ADDR".into(), a.to_string()));
    }
    // Later entries win when a name repeats; keep only the last one.
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<(String, String)> =
        env.into_iter().rev().filter(|(k, _)| seen.insert(k.clone())).collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_variables_win_and_names_are_unique() {
        let mut task = TaskSpec::new("t1", "web", "web:3");
        let mut c = ContainerSpec::new("app", "/img");
        c.ports = vec![8080, 9090];
        c.environment = vec![
            ("A".into(), "1".into()),
            ("HOST".into(), "0.0.0.0".into()),
            ("A".into(), "2".into()),
        ];
        task.containers.push(c.clone());
        let env = environment(
            &task,
            &c,
            Ipv4Addr::new(127, 77, 0, 9),
            Some("127.77.0.9:8080".parse().unwrap()),
        );
        let get = |k: &str| {
            let v: Vec<_> = env.iter().filter(|(n, _)| n == k).collect();
            assert!(v.len() <= 1, "{k} repeated");
            v.first().map(|(_, v)| v.clone())
        };
        assert_eq!(get("A").as_deref(), Some("2"));
        assert_eq!(get("HOST").as_deref(), Some("127.77.0.9"));
        assert_eq!(get("PORT").as_deref(), Some("8080"));
        assert_eq!(get("CUTOVER_REVISION").as_deref(), Some("web:3"));
        assert_eq!(get("CUTOVER_TASK_ADDR").as_deref(), Some("127.77.0.9:8080"));
        assert!(get("PATH").is_some());
    }
}
