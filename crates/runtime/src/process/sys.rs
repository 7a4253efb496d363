//! Linux process plumbing: `/proc` reading, session-wide signals, spawning into a new session.
//!
//! A container is identified by its leader's pid *and* start time (`/proc/<pid>/stat` field 22),
//! so a recycled pid is never mistaken for ours. Every container runs in its own session (the
//! leader called `setsid`), so its session id is the leader's pid and every descendant that did
//! not leave the session can be found and signalled, even after the leader is gone.

use std::io;

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// A container's leader process as recorded at spawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: i32,
    /// Start time in clock ticks since boot, from `/proc/<pid>/stat`.
    pub start_ticks: u64,
    /// Milliseconds since the Unix epoch.
    pub started_at_ms: u64,
}

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub state: char,
    pub session: i32,
    pub start_ticks: u64,
}

/// Reads `/proc/<pid>/stat`; `None` when the process does not exist (or cannot be read).
pub fn stat(pid: i32) -> Option<Stat> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field N is fields[N - 3].
    let state = fields.first()?.chars().next()?;
    let session = fields.get(6 - 3)?.parse().ok()?;
    let start_ticks = fields.get(22 - 3)?.parse().ok()?;
    Some(Stat { state, session, start_ticks })
}

/// Where a recorded leader stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leader {
    /// Our process, still running.
    Alive,
    /// Our process, exited but not yet reaped by its parent.
    Zombie,
    /// No process with that pid.
    Absent,
    /// The pid now belongs to another process.
    Recycled,
}

pub fn leader(p: &ProcId) -> Leader {
    match stat(p.pid) {
        None => Leader::Absent,
        Some(s) if s.start_ticks != p.start_ticks => Leader::Recycled,
        Some(s) if is_dead_state(s.state) => Leader::Zombie,
        Some(_) => Leader::Alive,
    }
}

fn is_dead_state(state: char) -> bool {
    matches!(state, 'Z' | 'X' | 'x')
}

/// The running (non-zombie) members of session `sid`.
pub fn session_members(sid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|s| s.session == sid && !is_dead_state(s.state)))
        .collect()
}

/// Whether anything of the container still runs: its leader, or a descendant that stayed in
/// its session. A recycled leader pid means the session is not ours any more.
pub fn container_running(p: &ProcId) -> bool {
    match leader(p) {
        Leader::Alive => true,
        Leader::Recycled => false,
        Leader::Zombie | Leader::Absent => !session_members(p.pid).is_empty(),
    }
}

/// Sends `sig` to the container's process group and to every other process of its session.
/// Does nothing when the leader pid has been recycled, so a stranger is never signalled.
pub fn signal_container(p: &ProcId, sig: Signal) {
    if leader(p) == Leader::Recycled {
        return;
    }
    // The group first: that is what `docker stop` and ECS do, and it reaches the leader even
    // while it is between fork and setsid.
    match signal::killpg(Pid::from_raw(p.pid), sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pid = p.pid, %e, "could not signal process group"),
    }
    // Descendants that made their own process group are still in the session.
    for pid in session_members(p.pid) {
        if pid != p.pid {
            let _ = signal::kill(Pid::from_raw(pid), sig);
        }
    }
}

/// Makes the command's child the leader of a new session (and process group) before it execs,
/// so it survives the control plane and can be signalled as a whole.
#[allow(unsafe_code)]
pub fn new_session(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec. It only calls setsid(2), which
    // is async-signal-safe, and touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| match nix::unistd::setsid() {
            Ok(_) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        });
    }
}

/// How long, in all, a spawn waits for a program that is `Text file busy`.
const BUSY_RETRY_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Spawns `cmd`, trying again for a moment while its program is `Text file busy` (ETXTBSY).
///
/// A task's program is a fresh copy of its image. While it was being written, another thread of
/// this process may have forked (a hook, a probe, another task): that child holds the copy's
/// write descriptor until it execs, however briefly, and an exec of a file open for writing
/// fails. The copy is complete by then, so waiting for the stray descriptor to close is right.
/// The wait is counted in the pauses taken, so no clock is read.
pub fn spawn_unless_busy(cmd: &mut tokio::process::Command) -> io::Result<tokio::process::Child> {
    let mut waited = std::time::Duration::ZERO;
    let mut pause = std::time::Duration::from_millis(2);
    loop {
        match cmd.spawn() {
            Err(e)
                if e.raw_os_error() == Some(Errno::ETXTBSY as i32) && waited < BUSY_RETRY_LIMIT =>
            {
                std::thread::sleep(pause);
                waited += pause;
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

/// Milliseconds since the Unix epoch.
// Task start and exit times, stored with the task for the control plane that adopts it after a
// restart; `runtime` does not depend on `store`, whose clock this would otherwise be.
#[allow(clippy::disallowed_methods)]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A signal's name for messages, e.g. `SIGKILL`.
pub fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_and_parens_in_the_name() {
        let line = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 0\n";
        let s = parse_stat(line).expect("parses");
        assert_eq!(s.state, 'S');
        assert_eq!(s.session, 4242);
        assert_eq!(s.start_ticks, 987654);
    }

    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_is_recycled() {
        let pid = std::process::id() as i32;
        let s = stat(pid).expect("own stat");
        let me = ProcId { pid, start_ticks: s.start_ticks, started_at_ms: 0 };
        assert_eq!(leader(&me), Leader::Alive);
        let other = ProcId { start_ticks: s.start_ticks + 1, ..me };
        assert_eq!(leader(&other), Leader::Recycled);
        assert!(!container_running(&other));
    }

    /// An executable file with a write descriptor open, as a forked child holds one for an instant.
    fn busy_program(dir: &std::path::Path) -> (std::path::PathBuf, std::fs::File) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join("app");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&path)
            .unwrap();
        file.write_all(b"#!/bin/sh\nexit 0\n").unwrap();
        (path, file)
    }

    #[tokio::test]
    async fn a_program_still_open_for_writing_is_text_file_busy_to_a_plain_spawn() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _writer) = busy_program(dir.path());
        let err = tokio::process::Command::new(&path).spawn().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::ETXTBSY as i32), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_spawn_waits_out_a_program_that_is_text_file_busy_for_a_moment() {
        let dir = tempfile::tempdir().unwrap();
        let (path, writer) = busy_program(dir.path());
        let closer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(writer);
        });
        let mut child = spawn_unless_busy(&mut tokio::process::Command::new(&path)).unwrap();
        assert!(child.wait().await.unwrap().success());
        closer.join().unwrap();
    }
}
