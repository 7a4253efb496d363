//! The simulated world outside the control plane: the task runtime and the load balancer. Both
//! outlive a crash of the control plane, as the real ones do.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use model::Timestamp;
use reconciler::{ContainerHealth, RoutingView};
use routes::{HealthReport, TargetHealth, TargetState};

/// First port handed to a simulated task; ports are reused once free, as the OS does.
const PORT_BASE: u16 = 20_000;

/// Consecutive health-check results that change a target's state (ALB's thresholds).
const HEALTH_THRESHOLD: u32 = 2;

/// A task in the simulated runtime.
#[derive(Clone, Debug)]
pub struct RuntimeTask {
    pub task_set_id: String,
    pub addr: SocketAddr,
    /// The container health check answers from this time on (with `container_unhealthy`'s
    /// verdict); `Unknown` before.
    pub check_from: Timestamp,
    pub container_unhealthy: bool,
    /// The application answers the load balancer's health checks with errors.
    pub lb_unhealthy: bool,
    /// The process exited: its code and why; what remains until the runtime removes it.
    pub exited: Option<(Option<i32>, String)>,
}

impl RuntimeTask {
    pub fn is_alive(&self) -> bool {
        self.exited.is_none()
    }

    pub fn container(&self, now: Timestamp) -> ContainerHealth {
        match (now >= self.check_from, self.container_unhealthy) {
            (false, _) => ContainerHealth::Unknown,
            (true, false) => ContainerHealth::Healthy,
            (true, true) => ContainerHealth::Unhealthy,
        }
    }
}

/// The task runtime: every task it runs or still holds the remains of, by task id.
#[derive(Clone, Debug, Default)]
pub struct Runtime {
    pub tasks: BTreeMap<String, RuntimeTask>,
}

impl Runtime {
    /// The lowest port no task holds.
    pub fn free_addr(&self) -> SocketAddr {
        let port = (PORT_BASE..)
            .find(|port| !self.tasks.values().any(|t| t.addr.port() == *port))
            .expect("fewer tasks than ports");
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    pub fn by_addr(&self, addr: SocketAddr) -> Option<&RuntimeTask> {
        self.tasks.values().find(|t| t.addr == addr && t.is_alive())
    }
}

/// One target as the load balancer's health checks see it.
#[derive(Clone, Debug)]
struct Target {
    state: TargetState,
    /// Consecutive checks that disagreed with `state` (or, while `Initial`, passed/failed).
    passes: u32,
    fails: u32,
    /// While draining: when the last in-flight request ends and the target is forgotten.
    drained_at: Option<Timestamp>,
}

/// The load balancer: the routing table it serves (the last one pushed *and* accepted) and the
/// health of its targets, which follows the tasks with a lag of [`HEALTH_THRESHOLD`] checks.
#[derive(Clone, Debug, Default)]
pub struct LoadBalancer {
    pub served_version: u64,
    pub served: RoutingView,
    targets: BTreeMap<(String, SocketAddr), Target>,
}

impl LoadBalancer {
    /// Serves `view` as `version` if it is not older than what it serves (the proxy's rule).
    pub fn apply(
        &mut self,
        version: u64,
        view: RoutingView,
        now: Timestamp,
        drain_for: std::time::Duration,
    ) -> bool {
        if version < self.served_version {
            return false;
        }
        let listed = |view: &RoutingView| -> Vec<(String, SocketAddr)> {
            view.targets
                .iter()
                .flat_map(|(tg, addrs)| addrs.iter().map(move |a| (tg.clone(), *a)))
                .collect()
        };
        let new = listed(&view);
        for key in listed(&self.served) {
            if !new.contains(&key)
                && let Some(target) = self.targets.get_mut(&key)
            {
                target.state = TargetState::Draining;
                target.drained_at = Some(now.saturating_add(drain_for));
            }
        }
        for key in new {
            let fresh =
                Target { state: TargetState::Initial, passes: 0, fails: 0, drained_at: None };
            let target = self.targets.entry(key).or_insert_with(|| fresh.clone());
            if target.state == TargetState::Draining {
                // Registered again: ALB checks it from scratch.
                *target = fresh;
            }
        }
        self.served_version = version;
        self.served = view;
        true
    }

    /// One round of health checks against the runtime; drained targets are forgotten.
    pub fn check(&mut self, runtime: &Runtime, now: Timestamp) {
        self.targets.retain(|_, t| t.drained_at.is_none_or(|at| now < at));
        for ((_, addr), target) in &mut self.targets {
            if target.state == TargetState::Draining {
                continue;
            }
            let passes = runtime.by_addr(*addr).is_some_and(|t| !t.lb_unhealthy);
            if passes {
                target.passes += 1;
                target.fails = 0;
            } else {
                target.fails += 1;
                target.passes = 0;
            }
            if target.passes >= HEALTH_THRESHOLD {
                target.state = TargetState::Healthy;
            } else if target.fails >= HEALTH_THRESHOLD {
                target.state = TargetState::Unhealthy;
            }
        }
    }

    /// `GET /v1/health`: every target it knows, draining ones included.
    pub fn report(&self) -> HealthReport {
        let mut report = HealthReport { version: self.served_version, ..HealthReport::default() };
        for ((tg, addr), target) in &self.targets {
            report.target_groups.entry(tg.clone()).or_default().push(TargetHealth {
                addr: *addr,
                state: target.state,
                reason: None,
                description: None,
                in_flight: 0,
            });
        }
        report
    }
}
