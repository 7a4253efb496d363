//! The API client and the operator: what `apply` declares, and random commands with random
//! deployment configurations.

use std::collections::BTreeMap;
use std::time::Duration;

use model::{LifecycleEvent, RuntimeKind, TrafficRouting};
use reconciler::{Command, Declared, GroupSpec, NewDeployment, ServiceSpec, Wait};
use rollout::{AutoRollback, Hook, RolloutSpec};

use crate::rng::Rng;

/// The services of every run, each with its deployment group `app/NAME` over `NAME-a` and
/// `NAME-b`.
pub const SERVICES: [&str; 2] = ["web", "api"];

/// The alarms every group watches.
pub const ALARMS: [&str; 2] = ["errors", "latency"];

/// How a task definition behaves, drawn when it is first deployed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quality {
    /// Faults only at the configured rates.
    Good,
    /// Faults ten times as often (while faults are on).
    Flaky,
    /// Its tasks never become healthy: they fail to start, exit, or fail their checks.
    Broken,
}

pub fn group_key(service: &str) -> String {
    format!("app/{service}")
}

/// What `apply` declares with these desired counts and deregistration delays.
pub fn declared(counts: &BTreeMap<String, u32>, delays: &BTreeMap<String, Duration>) -> Declared {
    let mut declared = Declared { deregistration_delays: delays.clone(), ..Declared::default() };
    for service in SERVICES {
        let spec = ServiceSpec {
            runtime: RuntimeKind::Process,
            task_definition: format!("{service}:1"),
            desired_count: counts[service],
            target_group: Some(format!("{service}-a")),
            health_checked: false,
        };
        declared.services.insert(service.to_string(), spec);
        let group = GroupSpec {
            service: service.to_string(),
            target_groups: [format!("{service}-a"), format!("{service}-b")],
            alarms: ALARMS.iter().map(|a| a.to_string()).collect(),
        };
        declared.groups.insert(group_key(service), group);
    }
    declared
}

/// A deployment of a random group with a random configuration.
pub fn new_deployment(rng: &mut Rng, id: &str, revision: u32) -> NewDeployment {
    let service = *rng.pick(&SERVICES);
    let routing = match rng.below(3) {
        0 => TrafficRouting::AllAtOnce,
        1 => TrafficRouting::Canary {
            percent: rng.between(1, 99) as u8,
            interval: rng.millis(1_000, 120_000),
        },
        _ => TrafficRouting::Linear {
            percent: *rng.pick(&[10u8, 20, 25, 33, 50]),
            interval: rng.millis(1_000, 30_000),
        },
    };
    let mut hooks = BTreeMap::new();
    for event in LifecycleEvent::HOOKABLE {
        if rng.chance(300) {
            let hook = Hook { name: format!("check-{event}"), timeout: rng.millis(1_000, 60_000) };
            hooks.insert(event, hook);
        }
    }
    let spec = RolloutSpec {
        deployment_id: id.to_string(),
        routing,
        has_test_listener: rng.chance(500),
        hooks,
        ready_wait: rng.chance(250).then(|| rng.millis(1_000, 120_000)),
        termination_wait: if rng.chance(500) { Duration::ZERO } else { rng.millis(1, 60_000) },
        auto_rollback: AutoRollback {
            on_failure: rng.chance(600),
            on_alarm: rng.chance(600),
            on_stop_request: rng.chance(500),
        },
        install_timeout: rng.millis(10_000, 300_000),
        mirror: None,
    };
    NewDeployment {
        group: group_key(service),
        spec,
        task_definition: format!("{service}:{revision}"),
        health_checked: rng.chance(500),
        ignore_alarms: rng.chance(150),
    }
}

/// The longest a deployment of `spec` can take once nothing goes wrong any more: every hook to
/// its timeout, green's install timeout, the ready wait, the shift and the termination wait, and
/// `slack` for the pushes, health checks and restarts in between.
pub fn bound(spec: &RolloutSpec, slack: Duration) -> Duration {
    let hooks: Duration = spec.hooks.values().map(|h| h.timeout).sum();
    hooks
        + spec.install_timeout
        + spec.ready_wait.unwrap_or_default()
        + spec.routing.total_duration()
        + spec.termination_wait
        + slack
}

/// A stop of `id`: with rollback, without, or as its configuration says.
pub fn stop(rng: &mut Rng, id: &str) -> Command {
    let rollback = *rng.pick(&[None, Some(true), Some(false)]);
    Command::Stop { deployment_id: id.to_string(), rollback }
}

pub fn continue_(rng: &mut Rng, id: &str) -> Command {
    let wait = *rng.pick(&[Wait::Ready, Wait::Termination]);
    Command::Continue { deployment_id: id.to_string(), wait }
}
