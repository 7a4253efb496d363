//! The on-disk record of process tasks, under `state_dir/tasks/<task_id>/`.
//!
//! | file | written by | when |
//! |---|---|---|
//! | `task.json` | the runtime that started the task, atomically (temp file + rename) | before the first container starts, after each one starts, when all have |
//! | `<container>.log` | the container itself (stdout and stderr, append-only) | always |
//! | `<container>.exit.json` | whoever reaped the container's leader | when it exits |
//! | `stopped.json` | whoever finished stopping the task | once all its processes are gone |
//!
//! One file per fact, each written by one party, so two runtimes on the same directory (a
//! control plane and its successor) never lose each other's writes. `remove` deletes everything
//! but the logs.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::process::sys::ProcId;
use crate::{RuntimeError, TaskSpec};

/// Bumped when the layout changes incompatibly.
pub const FORMAT: u32 = 1;

/// Larger record files are not ours (or are corrupt) and are not read.
const MAX_RECORD_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    pub format: u32,
    pub spec: TaskSpec,
    pub ip: Ipv4Addr,
    pub started_at_ms: u64,
    /// In the order of `spec.containers`; `None` for a container not started (yet).
    pub procs: Vec<Option<ProcId>>,
    /// Every container was started.
    pub complete: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub at_ms: u64,
}

/// How a task ended, as `inspect` reports it; both runtimes write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedRecord {
    pub code: Option<i32>,
    pub reason: String,
    pub at_ms: u64,
}

/// Why a task stopped.
pub enum StopCause {
    Requested,
    /// The essential container at this index exited.
    EssentialExited(usize),
    StartFailed(String),
    Interrupted,
}

impl StopCause {
    /// The container whose exit the record reports: the essential one that exited, or for a
    /// requested stop the load-balanced container (else the first essential one). `None` when
    /// the task never ran.
    pub fn reported_container(&self, spec: &TaskSpec) -> Option<usize> {
        match self {
            StopCause::EssentialExited(i) => Some(*i),
            StopCause::Requested => spec
                .lb_container
                .as_ref()
                .and_then(|(name, _)| spec.containers.iter().position(|c| &c.name == name))
                .or_else(|| spec.containers.iter().position(|c| c.essential)),
            StopCause::StartFailed(_) | StopCause::Interrupted => None,
        }
    }

    /// The record of the stop. `exit` is the reported container's exit code and the runtime's
    /// sentence for how it exited, which becomes the reason when that exit stopped the task.
    pub fn record(&self, exit: Option<(Option<i32>, String)>, at_ms: u64) -> StoppedRecord {
        let (code, exit_reason) = exit.unzip();
        let reason = match self {
            StopCause::EssentialExited(_) => exit_reason.unwrap_or_default(),
            StopCause::Requested => "stopped on request".to_string(),
            StopCause::StartFailed(r) => format!("failed to start: {r}"),
            StopCause::Interrupted => {
                "cutover stopped while it was starting this task, so it was stopped".to_string()
            }
        };
        StoppedRecord { code: code.flatten(), reason, at_ms }
    }
}

pub fn task_file(dir: &Path) -> PathBuf {
    dir.join("task.json")
}

pub fn stopped_file(dir: &Path) -> PathBuf {
    dir.join("stopped.json")
}

pub fn log_file(dir: &Path, container: &str) -> PathBuf {
    dir.join(format!("{container}.log"))
}

pub fn exit_file(dir: &Path, container: &str) -> PathBuf {
    dir.join(format!("{container}.exit.json"))
}

/// Why a task's record cannot be read, or adopted.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is {len} bytes, more than a task record can be; delete it", path.display())]
    TooLarge { path: PathBuf, len: u64 },
    #[error("{} is not a valid task record: {source}", path.display())]
    Invalid { path: PathBuf, source: serde_json::Error },
    #[error("{} has format {found}, this cutover reads format {FORMAT}", path.display())]
    Format { path: PathBuf, found: u32 },
    #[error("{} is inconsistent", path.display())]
    Inconsistent { path: PathBuf },
    #[error(transparent)]
    Spec(Box<RuntimeError>),
}

/// Reads a JSON record; `Ok(None)` when the file does not exist.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, RecordError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(RecordError::Read { path: path.to_path_buf(), source }),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX_RECORD_BYTES {
        return Err(RecordError::TooLarge { path: path.to_path_buf(), len });
    }
    serde_json::from_reader(std::io::BufReader::new(file))
        .map(Some)
        .map_err(|source| RecordError::Invalid { path: path.to_path_buf(), source })
}

/// Writes a JSON record atomically: a reader sees the old or the new file, never a mix.
pub fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), RuntimeError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        serde_json::to_writer_pretty(&mut f, value).map_err(std::io::Error::other)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        RuntimeError::io("cannot write", path, e)
    })
}

/// Deletes a file that may not exist.
pub fn remove(path: &Path) -> Result<(), RuntimeError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RuntimeError::io("cannot delete", path, e)),
    }
}
