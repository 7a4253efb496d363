//! Running `git` (blocking; call from `spawn_blocking`): bare repositories, the post-receive hook
//! that records pushes, remote heads, fetches into a mirror, and exporting a commit's tree.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Longest git output read, in bytes.
const OUTPUT_MAX: usize = 4 * 1024 * 1024;

/// The hook that records every push of a hosted repository as one file in `GIT_DIR/pushes/`:
/// the first line is the pusher, then git's `old new ref` lines. A file survives a crash of the
/// control plane, so a push is never lost between receive-pack and the pipeline.
pub const POST_RECEIVE: &str = r#"#!/bin/sh
# Installed by cutover: records this push for the pipelines watching the repository.
dir="$GIT_DIR/pushes"
mkdir -p "$dir" || exit 0
f="$dir/$(date +%s%N)-$$"
{ printf '%s\n' "${REMOTE_USER:-unknown}"; cat; } > "$f.tmp" && mv "$f.tmp" "$f"
"#;

/// Why a git command (or the export of a tree) failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: &'static str, source: std::io::Error },
    #[error("git {command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("branch `{branch}` not found at {url}")]
    NoBranch { branch: String, url: String },
    #[error("`{0}` is not a commit id")]
    NotACommit(String),
    #[error("git archive has no output")]
    NoArchive,
    #[error("exporting commit {commit} failed: {stderr}")]
    Export { commit: String, stderr: String },
}

/// An IO error at `path`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GitError + '_ {
    move |source| GitError::Io { path: path.to_path_buf(), source }
}

pub fn git(dir: Option<&Path>, args: &[&str]) -> Result<String, GitError> {
    let mut cmd = Command::new("git");
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    cmd.args(args)
        .env_clear()
        .envs(runtime::host_env(&[]))
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null());
    let out = cmd
        .output()
        .map_err(|source| GitError::Spawn { program: "git (is it installed?)", source })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr: String = stderr.trim().chars().take(2000).collect();
        let command = args.first().copied().unwrap_or("").to_string();
        return Err(GitError::Failed { command, stderr });
    }
    let stdout = &out.stdout[..out.stdout.len().min(OUTPUT_MAX)];
    Ok(String::from_utf8_lossy(stdout).into_owned())
}

/// Creates a bare repository that accepts pushes over HTTP and records them.
pub fn init_bare(path: &Path, branch: &str) -> Result<(), GitError> {
    if !path.join("HEAD").exists() {
        let p = path.to_string_lossy();
        git(None, &["init", "--bare", "--quiet", &format!("--initial-branch={branch}"), &p])?;
    }
    git(Some(path), &["config", "http.receivepack", "true"])?;
    git(Some(path), &["config", "receive.denyDeleteCurrent", "warn"])?;
    install_hook(path)
}

pub fn install_hook(path: &Path) -> Result<(), GitError> {
    let hook = path.join("hooks").join("post-receive");
    std::fs::create_dir_all(path.join("hooks")).map_err(io(&hook))?;
    std::fs::write(&hook, POST_RECEIVE).map_err(io(&hook))?;
    set_executable(&hook)
}

fn set_executable(path: &Path) -> Result<(), GitError> {
    use std::os::unix::fs::PermissionsExt;
    // Owner only: repositories live in the private data directory.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io(path))
}

/// A recorded push: who, and the updated refs.
#[derive(Debug)]
pub struct Push {
    pub file: PathBuf,
    pub pusher: String,
    /// (new commit, ref)
    pub updates: Vec<(String, String)>,
}

/// The pushes recorded in a hosted repository, oldest first.
pub fn pending_pushes(repo: &Path) -> Vec<Push> {
    let Ok(entries) = std::fs::read_dir(repo.join("pushes")) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_none())
        .collect();
    files.sort();
    files
        .into_iter()
        .take(1000)
        .filter_map(|file| {
            let text = std::fs::read_to_string(&file).ok()?;
            let mut lines = text.lines();
            let pusher = lines.next().unwrap_or("unknown").to_string();
            let updates = lines
                .filter_map(|l| {
                    let mut parts = l.split_whitespace();
                    let (_old, new, r) = (parts.next()?, parts.next()?, parts.next()?);
                    (!new.chars().all(|c| c == '0')).then(|| (new.to_string(), r.to_string()))
                })
                .collect();
            Some(Push { file, pusher, updates })
        })
        .collect()
}

pub fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit a branch points at in a local repository, if the branch exists.
pub fn local_head(repo: &Path, branch: &str) -> Result<Option<String>, GitError> {
    let out = git(
        Some(repo),
        &["for-each-ref", "--format=%(objectname)", &format!("refs/heads/{branch}")],
    )?;
    Ok(out.lines().next().map(str::to_string).filter(|s| is_commit_id(s)))
}

/// The commit a branch points at in a remote (`git ls-remote`).
pub fn remote_head(url: &str, branch: &str) -> Result<Option<String>, GitError> {
    let out = git(None, &["ls-remote", "--", url, &format!("refs/heads/{branch}")])?;
    Ok(out
        .lines()
        .find(|l| l.ends_with(&format!("\trefs/heads/{branch}")))
        .and_then(|l| l.split('\t').next())
        .map(str::to_string)
        .filter(|s| is_commit_id(s)))
}

/// Fetches `branch` of `url` into the bare mirror (created if missing) and returns its commit.
pub fn fetch_into_mirror(mirror: &Path, url: &str, branch: &str) -> Result<String, GitError> {
    if !mirror.join("HEAD").exists() {
        git(None, &["init", "--bare", "--quiet", &mirror.to_string_lossy()])?;
    }
    let refspec = format!("+refs/heads/{branch}:refs/heads/{branch}");
    git(Some(mirror), &["fetch", "--quiet", "--no-tags", "--", url, &refspec])?;
    local_head(mirror, branch)?
        .ok_or_else(|| GitError::NoBranch { branch: branch.to_string(), url: url.to_string() })
}

/// The commit's subject line and author name.
pub fn commit_info(repo: &Path, commit: &str) -> (String, String) {
    match git(Some(repo), &["log", "-1", "--format=%an%n%s", commit]) {
        Ok(out) => {
            let mut lines = out.lines();
            let author = lines.next().unwrap_or("").to_string();
            (author, lines.next().unwrap_or("").to_string())
        }
        Err(_) => (String::new(), String::new()),
    }
}

/// Writes the commit's tree (no `.git`) into `dest`, which must not exist.
pub fn export_tree(repo: &Path, commit: &str, dest: &Path) -> Result<(), GitError> {
    if !is_commit_id(commit) {
        return Err(GitError::NotACommit(commit.to_string()));
    }
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    let archive = Command::new("git")
        .current_dir(repo)
        .env_clear()
        .envs(runtime::host_env(&[]))
        .args(["archive", "--format=tar", commit])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| GitError::Spawn { program: "git archive", source })?;
    let Some(stdout) = archive.stdout else { return Err(GitError::NoArchive) };
    let tar = Command::new("tar")
        .current_dir(dest)
        .env_clear()
        .envs(runtime::host_env(&[]))
        .args(["-xf", "-"])
        .stdin(stdout)
        .output()
        .map_err(|source| GitError::Spawn { program: "tar", source })?;
    if !tar.status.success() {
        let stderr = String::from_utf8_lossy(&tar.stderr).trim().to_string();
        return Err(GitError::Export { commit: commit.to_string(), stderr });
    }
    Ok(())
}
