//! The `Runtime` trait that runs tasks for the control plane, and its implementations.
//!
//! A *task* is what ECS calls a task: one or more containers started together from a task
//! definition, sharing one network address (as with `awsvpc`). The control plane converts a task
//! definition into a [`TaskSpec`], asks a [`Runtime`] to [`start`](Runtime::start) it, registers
//! [`TaskHandle::addr`] in a target group, polls [`inspect`](Runtime::inspect), and finally
//! [`stop`](Runtime::stop)s and [`remove`](Runtime::remove)s it. Tasks outlive the control
//! plane: after a restart, [`list_owned`](Runtime::list_owned) finds the tasks that are still
//! running so they can be adopted instead of started again.
//!
//! Two implementations:
//!
//! - [`ProcessRuntime`] (`"process"`, the embedded default): every container is a local process
//!   in its own session, every task has its own loopback address. See [`process`] for the
//!   details, including the environment variables each container receives.
//! - [`DockerRuntime`] (`"docker"`): every container is a Docker container with its own IP on a
//!   network cutover owns. See [`docker`].
//! - [`SwarmRuntime`] (`"swarm"`): every task is a Docker Swarm service of one replica, placed by
//!   Swarm on a worker of a multi-node cluster, with its own IP on an overlay network. See
//!   [`swarm`].
//!
//! Both check `dependsOn`, start containers in its order and decide when a wait is over with
//! [`depends_on`], so the two cannot disagree about a task definition.
//!
//! # Environment of a container
//!
//! Every container gets the task definition's `environment`, and on top of it (these win):
//!
//! | variable | value |
//! |---|---|
//! | `HOST` | the address to bind: the task's own loopback address (process runtime), `0.0.0.0` (docker: the task has its own network namespace) |
//! | `PORT` | the container's first declared port (unset when it declares none) |
//! | `CUTOVER_TASK_ID` | [`TaskSpec::task_id`] |
//! | `CUTOVER_SERVICE` | [`TaskSpec::service`] |
//! | `CUTOVER_REVISION` | [`TaskSpec::revision`], e.g. `web:3` |
//! | `CUTOVER_DEPLOYMENT_ID` | [`TaskSpec::deployment_id`] (unset when there is none) |
//! | `CUTOVER_CONTAINER_NAME` | the container's name |
//! | `CUTOVER_TASK_ADDR` | `ip:port` where the load balancer reaches the task ([`TaskHandle::addr`]; unset when no container declares a port; process runtime only, since a container's IP is known only once it runs) |

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod depends_on;
pub mod docker;
mod error;
mod host_env;
pub mod process;
pub mod swarm;

pub use docker::{DockerRuntime, RegistryCredential};
pub use error::RuntimeError;
pub use host_env::{DEFAULT_PATH, HOST_VARIABLES, host_env};
pub use process::{ProcessRuntime, valid_task_id};
pub use swarm::SwarmRuntime;

/// Runs tasks. Dyn-compatible: the control plane holds an `Arc<dyn Runtime>`.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// `"process"`, `"docker"` or `"swarm"`.
    fn kind(&self) -> &'static str;

    /// Starts every container of the task, honouring `depends_on`, and returns once each one is
    /// started (not necessarily healthy). A container that cannot be started fails the whole
    /// task: the ones already started are stopped again.
    async fn start(&self, spec: TaskSpec) -> Result<TaskHandle, RuntimeError>;

    /// Stops the task gracefully: SIGTERM, then SIGKILL after each container's `stop_timeout`.
    /// Containers stop in the reverse of their `depends_on` order. Idempotent: stopping a
    /// stopped or unknown task succeeds.
    async fn stop(&self, handle: &TaskHandle) -> Result<(), RuntimeError>;

    /// What the task is doing now.
    async fn inspect(&self, handle: &TaskHandle) -> TaskState;

    /// Every task this runtime started (also in an earlier process) that still exists, for
    /// adoption after a control-plane restart.
    async fn list_owned(&self) -> Result<Vec<TaskHandle>, RuntimeError>;

    /// Forgets a stopped task. Its logs stay until retention removes them. Removing an unknown
    /// task succeeds; removing a running one fails with [`RuntimeError::StillRunning`].
    async fn remove(&self, handle: &TaskHandle) -> Result<(), RuntimeError>;

    /// The per-container log files (stdout and stderr interleaved) of a task, in container
    /// order, for the containers that have one. The control plane tails these.
    fn log_files(&self, task_id: &str) -> Vec<(String, PathBuf)>;
}

/// A task as the runtime needs it; the control plane builds it from a task definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Unique among all tasks: `[A-Za-z0-9_.-]`, at most 128 characters, not starting with `.`.
    pub task_id: String,
    pub service: String,
    /// `family:revision`, e.g. `web:3`.
    pub revision: String,
    pub deployment_id: Option<String>,
    pub containers: Vec<ContainerSpec>,
    /// The container and port the load balancer targets; `None` means the first declared port.
    pub lb_container: Option<(String, u16)>,
    /// Task-level CPU units (`"1024"`), as in the task definition.
    pub cpu: Option<String>,
    /// Task-level memory in MiB (`"2048"`), as in the task definition.
    pub memory: Option<String>,
    /// Docker network name (docker runtime: a bridge, default `cutover`; swarm runtime: an
    /// overlay, default `cutover-overlay`).
    pub network: Option<String>,
    /// Swarm node constraints (`node.labels.zone==b`), from the task definition's
    /// `placementConstraints` (swarm runtime only; the others run on one machine).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_constraints: Vec<String>,
}

impl TaskSpec {
    /// A task with no containers yet and every optional field unset.
    pub fn new(
        task_id: impl Into<String>,
        service: impl Into<String>,
        revision: impl Into<String>,
    ) -> TaskSpec {
        TaskSpec {
            task_id: task_id.into(),
            service: service.into(),
            revision: revision.into(),
            deployment_id: None,
            containers: Vec::new(),
            lb_container: None,
            cpu: None,
            memory: None,
            network: None,
            placement_constraints: Vec::new(),
        }
    }
}

/// One container of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// `[A-Za-z0-9_-]`, at most 255 characters, unique in the task.
    pub name: String,
    /// Process runtime: an absolute path to a directory holding the program. Docker: an image.
    pub image: String,
    pub essential: bool,
    pub entry_point: Vec<String>,
    pub command: Vec<String>,
    pub environment: Vec<(String, String)>,
    pub working_directory: Option<String>,
    /// Declared container ports (TCP).
    pub ports: Vec<u16>,
    pub health_check: Option<HealthCheckSpec>,
    /// Grace between SIGTERM and SIGKILL (ECS default 30 s).
    pub stop_timeout: Duration,
    /// CPU units (docker: relative shares).
    pub cpu: Option<u32>,
    /// Hard memory limit in MiB.
    pub memory_mib: Option<u32>,
    /// Soft memory limit in MiB.
    pub memory_reservation_mib: Option<u32>,
    /// `(container name, condition)` with condition `START`, `COMPLETE`, `SUCCESS` or `HEALTHY`.
    pub depends_on: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
}

impl ContainerSpec {
    /// An essential container with ECS defaults (stop timeout 30 s) and nothing else set.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: image.into(),
            essential: true,
            entry_point: Vec::new(),
            command: Vec::new(),
            environment: Vec::new(),
            working_directory: None,
            ports: Vec::new(),
            health_check: None,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            cpu: None,
            memory_mib: None,
            memory_reservation_mib: None,
            depends_on: Vec::new(),
            labels: BTreeMap::new(),
        }
    }
}

/// The ECS default grace period between SIGTERM and SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A container health check (task definition `healthCheck`, §2.5 of the AWS reference).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckSpec {
    /// `["CMD", program, args...]` or `["CMD-SHELL", "shell command"]`; exit 0 means healthy.
    pub command: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures (after the start period) that make the container unhealthy.
    pub retries: u32,
    /// Failures during this period after the start do not count; a success marks healthy.
    pub start_period: Duration,
}

impl HealthCheckSpec {
    /// A health check with the ECS defaults: interval 30 s, timeout 5 s, 3 retries, no start period.
    pub fn new(command: Vec<String>) -> HealthCheckSpec {
        HealthCheckSpec {
            command,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            retries: 3,
            start_period: Duration::ZERO,
        }
    }
}

/// What the control plane keeps about a started task (and stores in SQLite).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskHandle {
    pub task_id: String,
    /// Process runtime: the container pids, comma-separated, in container order. Docker: the
    /// container ids.
    pub runtime_id: String,
    /// Where the load-balanced container's port is reachable.
    pub addr: Option<SocketAddr>,
    /// Milliseconds since the Unix epoch.
    pub started_at_ms: u64,
}

/// A task's health: its essential containers' health checks combined, UNHEALTHY over UNKNOWN over
/// HEALTHY. Containers without a health check do not take part; a task none of whose essential
/// containers has a health check is `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Health {
    Healthy,
    Unhealthy,
    /// No health check, or no verdict yet (still in the start period, or not enough results).
    Unknown,
}

/// What [`Runtime::inspect`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    Running {
        health: Health,
    },
    Exited {
        /// The exit code of the container that ended the task, when known.
        code: Option<i32>,
        /// Why, e.g. "essential container web exited with code 1".
        reason: String,
    },
    /// The runtime knows nothing about this task (never started here, or removed).
    Gone,
}

/// Combines container healths with the ECS priority UNHEALTHY > UNKNOWN > HEALTHY.
pub fn combine_health(healths: impl IntoIterator<Item = Health>) -> Health {
    let mut any = false;
    let mut unknown = false;
    for h in healths {
        any = true;
        match h {
            Health::Unhealthy => return Health::Unhealthy,
            Health::Unknown => unknown = true,
            Health::Healthy => {}
        }
    }
    if !any || unknown { Health::Unknown } else { Health::Healthy }
}

/// The variables of the table above that every runtime gives container `c` of `task`, with
/// `host` as `HOST`; appended after the task definition's `environment`, so they win.
pub(crate) fn task_variables(
    task: &TaskSpec,
    c: &ContainerSpec,
    host: &str,
) -> Vec<(String, String)> {
    let mut vars = vec![("HOST".to_string(), host.to_string())];
    if let Some(p) = c.ports.first() {
        vars.push(("PORT".into(), p.to_string()));
    }
    vars.push(("CUTOVER_TASK_ID".into(), task.task_id.clone()));
    vars.push(("CUTOVER_SERVICE".into(), task.service.clone()));
    vars.push(("CUTOVER_REVISION".into(), task.revision.clone()));
    if let Some(d) = &task.deployment_id {
        vars.push(("CUTOVER_DEPLOYMENT_ID".into(), d.clone()));
    }
    vars.push(("CUTOVER_CONTAINER_NAME".into(), c.name.clone()));
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_combines_with_ecs_priority() {
        use Health::*;
        assert_eq!(combine_health([Healthy, Unknown, Unhealthy]), Unhealthy);
        assert_eq!(combine_health([Healthy, Unknown]), Unknown);
        assert_eq!(combine_health([Healthy, Healthy]), Healthy);
        assert_eq!(combine_health([]), Unknown);
    }
}
