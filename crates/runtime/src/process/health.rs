//! Container health checks run by the process runtime, with the ECS/Docker semantics of §2.5.
//!
//! - A probe is `["CMD", program, args...]` (program looked up like a container's argv[0]) or
//!   `["CMD-SHELL", "command"]` (run by `/bin/sh -c`), in the container's working directory and
//!   environment (so `$HOST` and `$PORT` reach the container), killed after `timeout`.
//! - Status starts `Unknown`. A success makes it `Healthy` and resets the failure count; a
//!   failure after the start period counts, and `retries` consecutive ones make it `Unhealthy`.
//!   Failures during the start period do not count.
//! - The first probe runs `min(interval, 1 s)` after the container starts, and while the status
//!   is still `Unknown` within the start period probes repeat at that pace (Docker's
//!   `start-interval`), so a container is reported healthy soon after it is ready; otherwise
//!   probes are `interval` apart.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::watch;

use super::launch::{self, Launch};
use super::sys;
use crate::{Health, HealthCheckSpec};

const START_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The health state machine, separated from the timing so it can be tested directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracker {
    pub status: Health,
    failures: u32,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker { status: Health::Unknown, failures: 0 }
    }

    pub fn record(&mut self, success: bool, in_start_period: bool, retries: u32) {
        if success {
            self.status = Health::Healthy;
            self.failures = 0;
        } else if !in_start_period {
            self.failures = self.failures.saturating_add(1);
            if self.failures >= retries.max(1) {
                self.status = Health::Unhealthy;
            }
        }
    }
}

/// Probes until `done` completes, publishing every verdict on `health`.
pub async fn run(
    container: String,
    check: HealthCheckSpec,
    launch: Launch,
    started_at_ms: u64,
    health: watch::Sender<Health>,
    done: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(done);
    let quick = check.interval.min(START_PROBE_INTERVAL);
    let mut tracker = Tracker::new();
    let mut delay = quick;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut done => return,
        }
        let outcome = probe(&check, &launch).await;
        let since_start = Duration::from_millis(sys::now_ms().saturating_sub(started_at_ms));
        let in_start_period = since_start < check.start_period;
        let before = tracker.status;
        tracker.record(outcome.is_ok(), in_start_period, check.retries);
        if tracker.status != before {
            match &outcome {
                Ok(()) => tracing::info!(%container, status = ?tracker.status, "health changed"),
                Err(e) => {
                    tracing::info!(%container, status = ?tracker.status, probe = %e, "health changed")
                }
            }
        }
        health.send_if_modified(|h| std::mem::replace(h, tracker.status) != tracker.status);
        delay = if tracker.status == Health::Unknown && in_start_period {
            quick
        } else {
            check.interval
        };
    }
}

/// Why one health-check probe failed.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("the health check has no command")]
    NoCommand,
    #[error("the health check has no program")]
    NoProgram,
    #[error("health check program `{0}` is neither in the image directory nor on PATH")]
    ProgramNotFound(String),
    #[error("cannot run {}: {source}", program.display())]
    Spawn { program: std::path::PathBuf, source: std::io::Error },
    #[error("probe {0}")]
    Failed(std::process::ExitStatus),
    #[error("cannot wait for the probe: {0}")]
    Wait(std::io::Error),
    #[error("probe timed out after {0:?}")]
    TimedOut(Duration),
}

/// Runs one probe; `Err` says why it failed.
async fn probe(check: &HealthCheckSpec, launch: &Launch) -> Result<(), ProbeError> {
    let (program, args) = match check.command.split_first() {
        Some((kind, rest)) if kind == "CMD-SHELL" => {
            (std::path::PathBuf::from("/bin/sh"), vec!["-c".to_string(), rest.join(" ")])
        }
        Some((kind, rest)) if kind == "CMD" => program_and_args(rest, launch)?,
        Some(_) => program_and_args(&check.command, launch)?,
        None => return Err(ProbeError::NoCommand),
    };
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = super::sys::spawn_unless_busy(&mut cmd)
        .map_err(|source| ProbeError::Spawn { program, source })?;
    match tokio::time::timeout(check.timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(ProbeError::Failed(status)),
        Ok(Err(e)) => Err(ProbeError::Wait(e)),
        Err(_) => {
            // The probe may have started helpers of its own: kill its whole group.
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            Err(ProbeError::TimedOut(check.timeout))
        }
    }
}

fn program_and_args(
    argv: &[String],
    launch: &Launch,
) -> Result<(std::path::PathBuf, Vec<String>), ProbeError> {
    let (argv0, rest) = argv.split_first().ok_or(ProbeError::NoProgram)?;
    let path_var =
        launch.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or("");
    let program = launch::find_program(argv0, &launch.image_dir, path_var)
        .ok_or_else(|| ProbeError::ProgramNotFound(argv0.clone()))?;
    Ok((program, rest.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_the_start_period_do_not_count_and_a_success_counts_at_once() {
        let mut t = Tracker::new();
        for _ in 0..5 {
            t.record(false, true, 3);
        }
        assert_eq!(t.status, Health::Unknown);
        t.record(true, true, 3);
        assert_eq!(t.status, Health::Healthy);
    }

    #[test]
    fn retries_consecutive_failures_make_it_unhealthy_and_a_success_heals() {
        let mut t = Tracker::new();
        t.record(true, false, 3);
        t.record(false, false, 3);
        t.record(false, false, 3);
        assert_eq!(t.status, Health::Healthy);
        t.record(false, false, 3);
        assert_eq!(t.status, Health::Unhealthy);
        t.record(true, false, 3);
        assert_eq!(t.status, Health::Healthy);
        t.record(false, false, 3);
        assert_eq!(t.status, Health::Healthy, "the count restarted after the success");
    }
}
