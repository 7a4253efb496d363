//! Every decision of cutover's control plane as one pure, deterministic state machine.
//!
//! The control plane's shell feeds [`Observation`]s (API commands already validated, what the
//! runtimes and the data plane report, alarm states, hook results) and the time into a
//! [`Reconciler`]; it gets back the [`Effect`]s to perform (start and stop tasks, run and cancel
//! hooks, push a routing table, record events), and sleeps until [`Reconciler::next_deadline`] or
//! the next observation. Nothing here reads a clock, draws a random number or touches the world.
//! A `Reconciler` is `Serialize`/`Deserialize`, and *all* of its state is in it: the shell writes
//! it with every decision, before performing the decision's effects, and after a restart loads it,
//! reports what the runtimes still run, and carries on.
//!
//! # What it decides
//!
//! - **Desired state.** Every task set is kept at its desired count: missing tasks are started,
//!   extra ones (the newest first) are deactivated, a draining task set whose tasks all stopped is
//!   retired. After a failure, the next start waits [`decide::restart_backoff`].
//! - **Tasks.** A task's health comes from its container health check and its target's health
//!   ([`decide::task_health`]); a task whose container check fails is replaced; a task taken out of
//!   its target group (ECS's DEACTIVATING) is stopped when its drain is over ([`decide::drain_over`]).
//! - **Deployments.** Each deployment is a `rollout::Rollout`; the reconciler tells it when green
//!   is healthy or has failed ([`decide::green_verdict`], three failures in a row fail green),
//!   hands it each alarm in ALARM once while it watches alarms, and gives its effects their meaning
//!   for task sets and routing: the green task set in the idle target group, blue terminated, green
//!   stopped, a leftover deployment kept routing until it is rolled back.
//! - **Routing.** What the data plane must serve ([`RoutingView`]); a change is pushed as one new
//!   version, and a push that failed is retried.
//!
//! # Order within one call
//!
//! [`Reconciler::observe`] first applies the observation, then reconciles: tasks whose drain is
//! over are stopped, task sets are brought to their counts, deployments are told about green and
//! alarms and their due deadlines fire, and the routing table is pushed if it changed. A rejected
//! command ([`Rejected`]) changes nothing.

mod decide;
mod deployments;
mod observe;
mod routing;
mod state;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use model::{LifecycleEvent, RuntimeKind};
use serde::{Deserialize, Serialize};

pub use decide::{
    ContainerHealth, FailureRecord, GREEN_FAILURES_MAX, GreenVerdict, GreenView,
    RESTART_BACKOFF_MAX, drain_over, green_target_group, green_verdict, restart_backoff,
    task_health,
};
pub use routing::{GroupRoute, RoutingView};
pub use state::{Deployment, Group, Reconciler, Restored, STATE_VERSION, Task, TaskSet};

/// What the shell tells the reconciler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Observation {
    /// A command from the API, validated and resolved by the shell.
    Command(Command),
    /// The runtime started a task: its opaque handle and the address it serves on.
    TaskStarted {
        task_id: String,
        handle: String,
        addr: Option<SocketAddr>,
    },
    TaskFailedToStart {
        task_id: String,
        reason: String,
    },
    /// What the runtime says about a task it was asked about.
    TaskInspected {
        task_id: String,
        state: TaskProbe,
    },
    /// A stopped task's runtime is done with it.
    TaskStopped {
        task_id: String,
    },
    /// The data plane's health report.
    TargetHealth(routes::HealthReport),
    /// The data plane serves this routing-table version.
    RoutesApplied {
        version: u64,
    },
    /// The data plane refused or did not answer the push of this version.
    RoutesFailed {
        version: u64,
        error: String,
    },
    /// The state of every alarm instance, by instance key (`name`, or `name@deployment` for an
    /// alarm on a deployment's green target group).
    Alarms(Vec<AlarmReading>),
    /// A hook execution finished (its own report, or the shell's runner).
    HookResult {
        deployment_id: String,
        execution_id: String,
        succeeded: bool,
        message: String,
    },
    /// What the shell routes beside the reconciler's view (listeners, rules, targets registered
    /// by hand) changed: the table is pushed as a new version.
    RoutesChanged,
    /// Nothing but time passed.
    Tick,
}

/// A command from the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// `apply` changed what is declared.
    Declare(Declared),
    CreateDeployment(Box<NewDeployment>),
    /// Stop a deployment; `rollback: Some(true)` also rolls back a leftover one.
    Stop {
        deployment_id: String,
        rollback: Option<bool>,
    },
    Continue {
        deployment_id: String,
        wait: Wait,
    },
    /// Stop every task, then report [`Effect::ShutDown`].
    Shutdown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wait {
    Ready,
    Termination,
}

/// What a runtime says about a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskProbe {
    Running { container: ContainerHealth },
    Exited { code: Option<i32>, reason: String },
    Gone,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmReading {
    pub key: String,
    pub in_alarm: bool,
    /// Why it is in ALARM, with its datapoints.
    pub reason: String,
}

/// What `apply` declared, as far as the reconciler's decisions need it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declared {
    pub services: BTreeMap<String, ServiceSpec>,
    /// By `application/group`.
    pub groups: BTreeMap<String, GroupSpec>,
    /// Deregistration delay by target group.
    pub deregistration_delays: BTreeMap<String, Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    #[serde(with = "wire::one")]
    pub runtime: RuntimeKind,
    /// `family:revision`.
    pub task_definition: String,
    pub desired_count: u32,
    pub target_group: Option<String>,
    /// The task definition gives an essential container a health check.
    pub health_checked: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    pub service: String,
    pub target_groups: [String; 2],
    /// Alarms that stop the group's deployments.
    pub alarms: Vec<String>,
}

/// A deployment the API created: its machine's spec and what green runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDeployment {
    pub group: String,
    pub spec: rollout::RolloutSpec,
    /// Green's task definition, `family:revision`.
    pub task_definition: String,
    pub health_checked: bool,
    /// The deployment ignores its group's alarms.
    pub ignore_alarms: bool,
}

/// What the shell must do, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Effect {
    /// Start a task of this task set and report [`Observation::TaskStarted`] or
    /// [`Observation::TaskFailedToStart`].
    StartTask(TaskLaunch),
    /// Stop the task (gracefully), remove it, and report [`Observation::TaskStopped`].
    StopTask {
        task_id: String,
    },
    /// Remove what is left of a task that exited.
    RemoveTask {
        task_id: String,
    },
    RunHook {
        deployment_id: String,
        #[serde(with = "wire::one")]
        event: LifecycleEvent,
        execution_id: String,
        hook: String,
        timeout: Duration,
    },
    CancelHook {
        deployment_id: String,
        execution_id: String,
    },
    /// Serve this routing view as table `version`; report [`Observation::RoutesApplied`] or
    /// [`Observation::RoutesFailed`].
    PushRoutes {
        version: u64,
        view: RoutingView,
    },
    /// A deployment's machine decided this (for its history, its status and its API view).
    Rollout {
        deployment_id: String,
        effect: rollout::Effect,
    },
    /// Something to add to a deployment's history.
    Event {
        deployment_id: String,
        kind: EventKind,
        message: String,
    },
    /// A drained task set is gone, with its tasks as they ended (they leave the state with it):
    /// the shell's history keeps them, naming its task definition.
    TaskSetRetired {
        task_set: Box<TaskSet>,
        tasks: Vec<Task>,
    },
    /// A deployment left the reconciler's state (finished, and routes nothing any more): as it
    /// ended (its machine, its last routing, whether it was rolled back later), for its history.
    DeploymentClosed(Box<Deployment>),
    /// Every task stopped after [`Command::Shutdown`].
    ShutDown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Alarm,
    Rollback,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Alarm => "alarm",
            EventKind::Rollback => "rollback",
        }
    }
}

/// Everything a runtime needs to start a task that the reconciler knows; the shell adds the
/// task definition's containers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLaunch {
    pub task_id: String,
    pub task_set_id: String,
    pub service: String,
    pub task_definition: String,
    #[serde(with = "wire::one")]
    pub runtime: RuntimeKind,
    pub deployment_id: Option<String>,
}

/// A command the reconciler refused; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("no deployment {0}; `cutover deployments list` shows them")]
    NoSuchDeployment(String),
    #[error("deployment {0} has already completed")]
    AlreadyCompleted(String),
    #[error(
        "deployment group {group} already has an active deployment {active}; one deployment runs \
         per group at a time (as on CodeDeploy): wait for it (`cutover deployments watch {active}`) \
         or stop it (`cutover deployments stop {active}`)"
    )]
    GroupBusy { group: String, active: String },
    #[error(
        "deployment {leftover} of group {group} ended without rolling back and left its green \
         tasks in place; roll it back first (`cutover deployments rollback {leftover}`)"
    )]
    LeftoverInPlace { group: String, leftover: String },
    #[error("no deployment group `{0}`; apply it first (`cutover apply -f cutover.yaml`)")]
    NoSuchGroup(String),
    #[error("service {0} has no running task set to deploy over; apply it first")]
    NoBlue(String),
    #[error("deployment {id}: {source}")]
    Machine { id: String, source: rollout::InputError },
}
