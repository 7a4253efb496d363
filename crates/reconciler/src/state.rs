//! The reconciler's whole state: what the shell persists with every decision.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use model::{DesiredStatus, RuntimeKind, TaskHealth, TaskSetStatus, TaskStatus, Timestamp};
use rollout::Rollout;
use serde::{Deserialize, Serialize};

use crate::decide::{ContainerHealth, FailureRecord};
use crate::routing::RoutingView;
use crate::{Declared, wire};

/// The version of the persisted state's shape. A shell that finds an older one converts it
/// before deserializing; a newer one is refused.
pub const STATE_VERSION: u32 = 1;

/// Desired state, every task set and task, every deployment that is active or still routes, and
/// what was pushed to the data plane. See the crate docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reconciler {
    pub(crate) version: u32,
    /// Latest time seen: time never goes backwards in here.
    pub(crate) now: Timestamp,
    /// Makes ids unique across installations; the shell draws it once.
    pub(crate) id_salt: u64,
    pub(crate) next_id: u64,
    pub(crate) declared: Declared,
    pub(crate) task_sets: BTreeMap<String, TaskSet>,
    pub(crate) tasks: BTreeMap<String, Task>,
    pub(crate) deployments: BTreeMap<String, Deployment>,
    pub(crate) groups: BTreeMap<String, Group>,
    /// The data plane's latest health report.
    pub(crate) health: routes::HealthReport,
    /// The latest state of every alarm instance (alarms are level-triggered).
    pub(crate) alarms: Vec<crate::AlarmReading>,
    pub(crate) routes: RoutesState,
    pub(crate) shutting_down: bool,
    pub(crate) shut_down: bool,
}

/// A task set, as on ECS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSet {
    pub id: String,
    pub service: String,
    pub task_definition: String,
    pub target_group: Option<String>,
    #[serde(with = "wire::one")]
    pub status: TaskSetStatus,
    pub deployment_id: Option<String>,
    pub desired_count: u32,
    #[serde(with = "wire::one")]
    pub runtime: RuntimeKind,
    pub health_checked: bool,
    /// Its tasks' failures in a row.
    pub failures: FailureRecord,
    pub created_at: Timestamp,
}

/// A task, as on ECS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub task_set_id: String,
    #[serde(with = "wire::one")]
    pub last_status: TaskStatus,
    #[serde(with = "wire::one")]
    pub desired_status: DesiredStatus,
    #[serde(with = "wire::one")]
    pub health: TaskHealth,
    /// What its runtime last said about its containers' health checks.
    pub container_health: ContainerHealth,
    /// The runtime's handle, opaque here.
    pub handle: Option<String>,
    pub addr: Option<SocketAddr>,
    /// When a deactivating task is stopped at the latest (its drain ends).
    pub stop_at: Option<Timestamp>,
    /// The routing-table version that no longer lists it: the data plane serving that version
    /// without the task means its drain is over.
    pub removed_at_version: Option<u64>,
    pub stopped_reason: Option<String>,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub stopped_at: Option<Timestamp>,
}

impl Task {
    /// Meant to run and not stopped: counts towards its task set's desired count.
    pub fn is_live(&self) -> bool {
        self.desired_status == DesiredStatus::Running && self.last_status != TaskStatus::Stopped
    }

    /// Should receive traffic: running, meant to run, with an address.
    pub fn is_serving(&self) -> bool {
        self.desired_status == DesiredStatus::Running
            && self.last_status == TaskStatus::Running
            && self.addr.is_some()
    }
}

pub(crate) fn is_zero(percent: &u8) -> bool {
    *percent == 0
}

/// A deployment that is active, or finished but still routing (a leftover).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub group: String,
    pub machine: Rollout,
    pub service: String,
    pub task_definition: String,
    pub health_checked: bool,
    pub blue_task_set: String,
    pub green_task_set: Option<String>,
    pub blue_target_group: String,
    pub green_target_group: String,
    /// The routing last ordered by the machine (or by a rollback of a leftover).
    pub production_green_percent: u8,
    pub test_to_green: bool,
    /// The share of production copied to green (a shadow phase), as last ordered.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mirror_percent: u8,
    /// Green had all its targets healthy at least once.
    pub green_was_healthy: bool,
    /// Green's failure was reported to the machine (once).
    pub green_failure_reported: bool,
    /// Alarms that stop it (empty with `--ignore-alarms`).
    pub alarms: Vec<String>,
    /// Alarm instances already handed to the machine: each is handed over once.
    pub alarms_fed: BTreeSet<String>,
    /// Rolled back after it finished (a leftover rolled back by request).
    pub rolled_back_later: bool,
}

/// One deployment group's bookkeeping.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The task set serving production when no deployment is active (ECS's PRIMARY).
    pub primary_task_set: Option<String>,
    pub active_deployment: Option<String>,
    /// Ended without rolling back and left green running; routes until rolled back.
    pub leftover_deployment: Option<String>,
}

/// What was ordered of the data plane and what it confirmed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutesState {
    /// The latest version ordered (pushed or being pushed).
    pub version: u64,
    /// The view of that version; `None` until one was ordered, or after a failed push, which
    /// makes the next pass push again.
    pub ordered: Option<RoutingView>,
    /// The latest version the data plane confirmed serving.
    pub applied: u64,
    /// A failed push is retried at this time.
    pub retry_at: Option<Timestamp>,
}

/// State an older cutover kept as rows instead of as one document, in the reconciler's types:
/// the shell converts the rows, [`Reconciler::restore`] takes them.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub declared: Declared,
    pub task_sets: Vec<TaskSet>,
    pub tasks: Vec<Task>,
    /// Deployments that are active or leftovers (every other one is history only).
    pub deployments: Vec<Deployment>,
    /// By `application/group`.
    pub groups: BTreeMap<String, Group>,
    /// The routing-table version the data plane already serves.
    pub routes_version: u64,
}

impl Reconciler {
    /// An empty reconciler. `id_salt` (drawn once by the shell) keeps the ids it makes unique
    /// across installations; `routes_version` is the version the data plane already serves.
    pub fn new(id_salt: u64, routes_version: u64, now: Timestamp) -> Reconciler {
        Reconciler {
            version: STATE_VERSION,
            now,
            id_salt,
            next_id: 0,
            declared: Declared::default(),
            task_sets: BTreeMap::new(),
            tasks: BTreeMap::new(),
            deployments: BTreeMap::new(),
            groups: BTreeMap::new(),
            health: routes::HealthReport::default(),
            alarms: Vec::new(),
            routes: RoutesState { version: routes_version, ..RoutesState::default() },
            shutting_down: false,
            shut_down: false,
        }
    }

    /// A reconciler holding what an older cutover stored as rows. What those rows never held
    /// starts empty: failure records, alarms already handed over, drains waiting for a routing
    /// version (a drain still ends at its `stop_at`), and the data plane's health, which its next
    /// report gives.
    pub fn restore(id_salt: u64, restored: Restored, now: Timestamp) -> Reconciler {
        let Restored { declared, task_sets, tasks, deployments, groups, routes_version } = restored;
        let ids = task_sets.iter().map(|ts| &ts.id).chain(tasks.iter().map(|t| &t.id));
        let next_id = ids.filter_map(|id| id_number(id, id_salt)).max().unwrap_or(0);
        Reconciler {
            next_id,
            declared,
            task_sets: task_sets.into_iter().map(|ts| (ts.id.clone(), ts)).collect(),
            tasks: tasks.into_iter().map(|t| (t.id.clone(), t)).collect(),
            deployments: deployments.into_iter().map(|d| (d.id.clone(), d)).collect(),
            groups,
            ..Reconciler::new(id_salt, routes_version, now)
        }
    }

    pub fn task_sets(&self) -> impl Iterator<Item = &TaskSet> {
        self.task_sets.values()
    }

    pub fn task_set(&self, id: &str) -> Option<&TaskSet> {
        self.task_sets.get(id)
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    pub fn deployments(&self) -> impl Iterator<Item = &Deployment> {
        self.deployments.values()
    }

    pub fn deployment(&self, id: &str) -> Option<&Deployment> {
        self.deployments.get(id)
    }

    /// Every deployment group's bookkeeping, by `application/group`.
    pub fn groups(&self) -> impl Iterator<Item = (&str, &Group)> {
        self.groups.iter().map(|(key, group)| (key.as_str(), group))
    }

    pub fn group(&self, key: &str) -> Option<&Group> {
        self.groups.get(key)
    }

    pub fn declared(&self) -> &Declared {
        &self.declared
    }

    /// Whether anything but the time seen differs from `before`: a state that does not is not
    /// worth writing.
    pub fn differs_from(&self, before: &Reconciler) -> bool {
        *self != Reconciler { now: self.now, ..before.clone() }
    }

    /// The data plane's health as last observed.
    pub fn target_health(&self) -> &routes::HealthReport {
        &self.health
    }

    /// The routing-table version last ordered of the data plane.
    pub fn routes_version(&self) -> u64 {
        self.routes.version
    }

    /// A new id with `prefix`, unique in this installation's history.
    pub(crate) fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:x}-{}", self.id_salt as u32, self.next_id)
    }

    /// The tasks of a task set.
    pub(crate) fn tasks_of<'a>(&'a self, task_set_id: &'a str) -> impl Iterator<Item = &'a Task> {
        self.tasks.values().filter(move |t| t.task_set_id == task_set_id)
    }
}

/// The number of an id [`Reconciler::new_id`] made with this salt; `None` for any other id (an
/// older cutover's), which can never collide with one made here.
fn id_number(id: &str, id_salt: u64) -> Option<u64> {
    let (rest, number) = id.rsplit_once('-')?;
    let (_, salt) = rest.rsplit_once('-')?;
    (salt == format!("{:x}", id_salt as u32)).then(|| number.parse().ok()).flatten()
}
