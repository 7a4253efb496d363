//! The decisions themselves, as plain functions of what is known: each answers one question the
//! control plane used to answer inline in its loop.

use std::time::Duration;

use model::{TaskHealth, Timestamp};
use routes::{HealthReport, TargetState};
use serde::{Deserialize, Serialize};

/// A green task set whose tasks failed this many times in a row fails its deployment.
pub const GREEN_FAILURES_MAX: u32 = 3;

/// Longest wait between two attempts to start a task set's tasks after failures. ECS's throttle
/// goes up to 15 minutes; a local runtime recovers faster.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(15);

/// What the task's runtime says about its essential containers' health checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerHealth {
    Healthy,
    Unhealthy,
    /// No check, or none answered yet.
    Unknown,
}

/// Failures of one task set's tasks in a row, for backoff and for failing a green task set. A
/// healthy task ends the row.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub count: u32,
    pub last_reason: String,
    pub last_at: Timestamp,
}

impl FailureRecord {
    pub fn note(&mut self, reason: &str, now: Timestamp) {
        self.count += 1;
        self.last_reason = reason.to_string();
        self.last_at = now;
    }

    /// When the next attempt to start a task may be made: at once without failures, else after
    /// [`restart_backoff`].
    pub fn retry_at(&self) -> Timestamp {
        if self.count == 0 {
            return Timestamp::ZERO;
        }
        self.last_at.saturating_add(restart_backoff(self.count))
    }
}

/// Exponential backoff after `failures` failures in a row: 250 ms doubled per failure, capped
/// at [`RESTART_BACKOFF_MAX`].
pub fn restart_backoff(failures: u32) -> Duration {
    Duration::from_millis(250u64 << failures.min(6)).min(RESTART_BACKOFF_MAX)
}

/// ECS's task health: with a container health check, the task is healthy only once the check
/// says so (and, in a target group, the load balancer agrees); without one, the load balancer's
/// view decides, and a task outside any target group is healthy while it runs.
pub fn task_health(
    container: ContainerHealth,
    checked: bool,
    lb: Option<TargetState>,
    in_target_group: bool,
) -> TaskHealth {
    match (container, checked) {
        (ContainerHealth::Unhealthy, _) => return TaskHealth::Unhealthy,
        (ContainerHealth::Unknown, true) => return TaskHealth::Unknown,
        _ => {}
    }
    match (lb, in_target_group) {
        (Some(TargetState::Healthy), _) => TaskHealth::Healthy,
        (Some(TargetState::Unhealthy), _) => TaskHealth::Unhealthy,
        (_, false) => TaskHealth::Healthy,
        _ => TaskHealth::Unknown,
    }
}

/// Whether a deactivating task's drain is over: its deregistration delay has passed, or the data
/// plane has let go of it (it serves a table without the task and no longer lists it, because
/// nothing was in flight).
pub fn drain_over(
    stop_at: Option<Timestamp>,
    addr: Option<std::net::SocketAddr>,
    removed_at_version: Option<u64>,
    health: &HealthReport,
    now: Timestamp,
) -> bool {
    if stop_at.is_none_or(|at| now >= at) {
        return true;
    }
    let (Some(addr), Some(removed_at)) = (addr, removed_at_version) else { return false };
    health.version >= removed_at && !health.target_groups.values().flatten().any(|t| t.addr == addr)
}

/// What green looks like to its deployment right now.
#[derive(Clone, Debug)]
pub struct GreenView<'a> {
    pub target_group: &'a str,
    pub desired: u32,
    /// Green tasks meant to run that run and are healthy.
    pub healthy: u32,
    pub failures: &'a FailureRecord,
    /// The deployment waits for green in `Install`.
    pub installing: bool,
    /// The deployment has succeeded: blue is gone, green is just the service.
    pub succeeded: bool,
    /// The data plane's report is about the routing table last ordered (or a later one).
    pub health_fresh: bool,
    pub was_healthy: bool,
    pub failure_reported: bool,
}

/// What the deployment is told about green, if anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GreenVerdict {
    Healthy,
    Unhealthy(String),
}

/// Green is healthy when every desired task is; it has failed when its tasks failed
/// [`GREEN_FAILURES_MAX`] times in a row, or when, once healthy, it has no healthy target left.
/// Each failure is reported once.
pub fn green_verdict(green: &GreenView<'_>) -> Option<GreenVerdict> {
    if !green.failure_reported && green.failures.count >= GREEN_FAILURES_MAX {
        return Some(GreenVerdict::Unhealthy(format!(
            "green tasks failed {} times in a row; last: {}",
            green.failures.count, green.failures.last_reason
        )));
    }
    if green.installing && green.desired > 0 && green.healthy >= green.desired && green.health_fresh
    {
        return Some(GreenVerdict::Healthy);
    }
    // Not waiting for a fresh report: a stale one cannot make a green task healthy, and green's
    // last tasks dying is itself a routing change, so the report is stale exactly then (a shift
    // or a continue in that window would move production onto a green with no task).
    let lost_every_target = green.was_healthy
        && !green.installing
        && !green.failure_reported
        && green.healthy == 0
        && !green.succeeded;
    lost_every_target.then(|| {
        GreenVerdict::Unhealthy(format!(
            "green target group {} has no healthy targets",
            green.target_group
        ))
    })
}

/// The target group green goes to: the one of the group's two that blue is not in.
pub fn green_target_group<'a>(target_groups: &'a [String; 2], blue: &str) -> &'a str {
    if target_groups[0] == blue { &target_groups[1] } else { &target_groups[0] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_health_follows_ecs() {
        use ContainerHealth as C;
        use TaskHealth as H;
        // A container check that has not answered yet keeps the task UNKNOWN, whatever the LB says.
        assert_eq!(task_health(C::Unknown, true, Some(TargetState::Healthy), true), H::Unknown);
        assert_eq!(task_health(C::Healthy, true, Some(TargetState::Healthy), true), H::Healthy);
        assert_eq!(task_health(C::Unhealthy, true, Some(TargetState::Healthy), true), H::Unhealthy);
        // Without a container check the load balancer decides.
        assert_eq!(task_health(C::Unknown, false, Some(TargetState::Healthy), true), H::Healthy);
        assert_eq!(
            task_health(C::Unknown, false, Some(TargetState::Unhealthy), true),
            H::Unhealthy
        );
        assert_eq!(task_health(C::Unknown, false, Some(TargetState::Initial), true), H::Unknown);
        // Outside any target group, a running task is healthy.
        assert_eq!(task_health(C::Unknown, false, None, false), H::Healthy);
    }

    #[test]
    fn restart_backoff_doubles_from_half_a_second_and_stops_at_15_seconds() {
        let waits: Vec<u128> = (1..=8).map(|n| restart_backoff(n).as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);
    }

    #[test]
    fn green_goes_to_the_target_group_blue_is_not_in() {
        let groups = ["tg-a".to_string(), "tg-b".to_string()];
        assert_eq!(green_target_group(&groups, "tg-a"), "tg-b");
        assert_eq!(green_target_group(&groups, "tg-b"), "tg-a");
    }
}
