//! The Swarm runtime: every task a Docker Swarm service of one replica on an overlay network
//! cutover owns, placed by Swarm on any worker of a multi-node cluster, its address the task's
//! overlay IP (as with ECS `awsvpc`). `docs/swarm.md` says how to set a cluster up.
//!
//! - **Engine.** The one `DOCKER_HOST` engine, which must be a Swarm manager; cutover talks to
//!   nothing else (no node's engine), as the Docker runtime talks to one engine.
//! - **Mapping** (`decide::service_spec`): `entryPoint` → the service's command, `command` → its
//!   args, `environment` (plus the variables of the crate docs, `HOST=0.0.0.0`), `workingDirectory`,
//!   `healthCheck`, `stopTimeout` → stop grace period, `dockerLabels` → container labels, hard
//!   memory and task `cpu` → limits, `memoryReservation` and container `cpu` → reservations.
//!   Endpoint mode `dnsrr` (Swarm's virtual IPs need IPVS, and the load balancer is cutover's
//!   own); one container per task, since a Swarm service has no pods.
//! - **Images** are run by registry digest, resolved once through the manager when the task
//!   starts, so every node runs the same bytes whatever happens to the tag later; an image no
//!   registry has is refused with what to do.
//! - **Replacement** is cutover's: Swarm never restarts a task (restart condition `none`); a task
//!   that fails, or whose node Swarm lost, is reported `Exited` with Swarm's reason and the
//!   engine starts a new one (see `decide::service_spec` for why).
//! - **Adoption.** Services carry the labels of the Docker runtime (`cutover.task-id`,
//!   `cutover.instance`, `cutover.task-spec`, …); [`Runtime::list_owned`] finds this
//!   installation's services after a restart and nobody else's.
//! - **Logs** stay on the nodes (`docker service logs cutover-TASK` on the manager); `cutover
//!   logs` does not show them yet.

mod data_plane;
mod decide;
pub mod lb_image;
mod tasks_api;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    NetworkCreateRequest, NodeSpecAvailabilityEnum, NodeSpecRoleEnum, NodeState,
    ServiceSpecModeReplicated,
};
use bollard::query_parameters::{
    InspectNetworkOptions, InspectServiceOptions, ListNodesOptions, ListServicesOptions,
    ListTasksOptions, UpdateServiceOptions,
};

pub use data_plane::{DataPlaneNode, DataPlaneSpec, data_plane_service_name};
pub use decide::{DEFAULT_OVERLAY, service_name};

use crate::docker::{
    LABEL_DEPLOYMENT, LABEL_INSTANCE, LABEL_MANAGED, LABEL_REVISION, LABEL_SERVICE, LABEL_SPEC,
    LABEL_STARTED, LABEL_TASK, connect_engine, docker_host, engine_err, engine_message,
    instance_id, is_status,
};
use crate::process::valid_task_id;
use crate::{Health, Runtime, RuntimeError, TaskHandle, TaskSpec, TaskState};
use decide::{NodeLoad, Observed, Placement};

/// How long a start may take (pulling the image on the node included) before it is given up.
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// Beyond a task's stop grace period, how long its node may take to report it stopped.
const STOP_MARGIN: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);
/// How long `remove` waits for Swarm's task reaper (it runs every fraction of a second).
const REAP_LIMIT: Duration = Duration::from_secs(10);

/// Runs tasks as Swarm services; see the module docs.
pub struct SwarmRuntime {
    docker: Docker,
    /// Where the engine answers, for the reads bollard cannot type (`tasks_api`).
    host: String,
    /// This installation's id (`state_dir/instance-id`), as on the Docker runtime.
    instance: String,
    /// Held from choosing a task's node until its service exists, so that tasks started
    /// together (a task set's) see each other and spread.
    placing: tokio::sync::Mutex<()>,
}

impl SwarmRuntime {
    /// Connects to the manager named by `DOCKER_HOST` (default the local socket).
    pub async fn connect(state_dir: PathBuf) -> Result<SwarmRuntime, RuntimeError> {
        SwarmRuntime::connect_to(&docker_host(), state_dir).await
    }

    /// Connects to the engine at `host`, which must be a Swarm manager.
    pub async fn connect_to(host: &str, state_dir: PathBuf) -> Result<SwarmRuntime, RuntimeError> {
        let (docker, info) = connect_engine(host).await?;
        let swarm = info.swarm.unwrap_or_default();
        if swarm.control_available != Some(true) {
            let state = swarm.local_node_state.map(|s| s.to_string()).unwrap_or_default();
            return Err(RuntimeError::NotSwarmManager {
                host: host.to_string(),
                state: if state.is_empty() { "inactive".into() } else { state },
            });
        }
        let instance = instance_id(&state_dir)?;
        Ok(SwarmRuntime {
            docker,
            host: host.to_string(),
            instance,
            placing: tokio::sync::Mutex::new(()),
        })
    }

    /// `image` as a registry digest reference (`host/name@sha256:…`) every node can pull.
    async fn resolve_image(&self, image: &str, container: &str) -> Result<String, RuntimeError> {
        if image.contains("@sha256:") {
            return Ok(image.to_string());
        }
        let not_in_registry = |message: String| RuntimeError::ImageNotInRegistry {
            container: container.to_string(),
            image: image.to_string(),
            message,
        };
        let found = self
            .docker
            .inspect_registry_image(image, None)
            .await
            .map_err(|e| not_in_registry(engine_message(&e)))?;
        let digest = found
            .descriptor
            .digest
            .ok_or_else(|| not_in_registry("the registry gave no digest".into()))?;
        Ok(format!("{}@{digest}", repository_of(image)))
    }

    /// The overlay network exists (created, labelled as cutover's, when missing) and is one.
    async fn ensure_overlay(&self, name: &str, task_id: &str) -> Result<(), RuntimeError> {
        let options = InspectNetworkOptions { scope: Some("swarm".into()), ..Default::default() };
        match self.docker.inspect_network(name, Some(options)).await {
            Ok(n) if n.driver.as_deref() == Some("overlay") => return Ok(()),
            Ok(n) => {
                return Err(RuntimeError::InvalidSpec {
                    task_id: task_id.to_string(),
                    detail: format!(
                        "network {name} is a {} network; swarm tasks need an attachable overlay \
                         network: name one in the service's `network`, or leave it out for \
                         `{DEFAULT_OVERLAY}`",
                        n.driver.unwrap_or_default()
                    ),
                });
            }
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(engine_err(format!("cannot inspect network {name}"), &e)),
        }
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("overlay".into()),
            attachable: Some(true),
            labels: Some(HashMap::from([(LABEL_MANAGED.to_string(), "true".to_string())])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => tracing::info!(network = %name, "created overlay network"),
            Err(e) if is_status(&e, 409) => {}
            Err(e) => return Err(engine_err(format!("cannot create network {name}"), &e)),
        }
        Ok(())
    }

    /// The service of task `task_id`, if this installation has one.
    async fn service(
        &self,
        task_id: &str,
    ) -> Result<Option<bollard::models::Service>, RuntimeError> {
        if !valid_task_id(task_id) {
            return Ok(None);
        }
        let name = service_name(task_id);
        match self.docker.inspect_service(&name, None::<InspectServiceOptions>).await {
            Ok(s) => {
                let labels = s.spec.as_ref().and_then(|s| s.labels.as_ref());
                let ours = labels.is_some_and(|l| {
                    l.get(LABEL_INSTANCE) == Some(&self.instance)
                        && l.get(LABEL_TASK).map(String::as_str) == Some(task_id)
                });
                Ok(ours.then_some(s))
            }
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(engine_err(format!("cannot inspect service {name}"), &e)),
        }
    }

    /// The service's Swarm tasks, newest first, with their nodes' names and liveness.
    async fn observe(
        &self,
        service_id: &str,
        network: &str,
    ) -> Result<Vec<Observed>, RuntimeError> {
        let mut tasks = tasks_api::service_tasks(&self.host, service_id, network).await?;
        let nodes = self
            .docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(|e| engine_err("cannot list swarm nodes", &e))?;
        let nodes: HashMap<String, (String, bool)> = nodes
            .into_iter()
            .filter_map(|n| {
                let name = n.description.and_then(|d| d.hostname).unwrap_or_default();
                let state = n.status.and_then(|s| s.state);
                let alive = !matches!(state, Some(NodeState::DOWN | NodeState::DISCONNECTED));
                Some((n.id?, (name, alive)))
            })
            .collect();
        tasks.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(tasks
            .into_iter()
            .map(|t| {
                let node = t.node_id.as_ref().and_then(|id| nodes.get(id).cloned());
                Observed { node, ..t.observed }
            })
            .collect())
    }

    async fn start_task(&self, spec: TaskSpec) -> Result<TaskHandle, RuntimeError> {
        if !valid_task_id(&spec.task_id) {
            return Err(RuntimeError::InvalidSpec {
                task_id: spec.task_id.clone(),
                detail: "task ids are [A-Za-z0-9_.-], at most 128 characters".into(),
            });
        }
        let container = spec.containers.first().map(|c| (c.name.clone(), c.image.clone()));
        let image = match &container {
            Some((name, image)) => self.resolve_image(image, name).await?,
            None => String::new(),
        };
        let network = spec.network.clone().unwrap_or_else(|| DEFAULT_OVERLAY.to_string());
        let started_at_ms = crate::process::sys::now_ms();
        self.ensure_overlay(&network, &spec.task_id).await?;
        let placing = self.placing.lock().await;
        let nodes = self.node_loads(&spec).await?;
        let at = Placement {
            image: &image,
            network: &network,
            instance: &self.instance,
            started_at_ms,
            node_id: decide::spread(&nodes).map(|n| n.id.as_str()),
        };
        let service_spec = decide::service_spec(&spec, &at)?;
        if self.service(&spec.task_id).await?.is_some() {
            return Err(RuntimeError::AlreadyExists { task_id: spec.task_id.clone() });
        }
        let created = match self.docker.create_service(service_spec, None).await {
            Ok(r) => r,
            Err(e) if is_status(&e, 409) => {
                return Err(RuntimeError::AlreadyExists { task_id: spec.task_id.clone() });
            }
            Err(e) => {
                let name = service_name(&spec.task_id);
                return Err(engine_err(format!("cannot create service {name}"), &e));
            }
        };
        drop(placing);
        let service_id = created.id.unwrap_or_default();
        tracing::info!(task = %spec.task_id, service = %service_id, %image, "swarm service created");
        match self.wait_running(&spec, &service_id, &network, started_at_ms).await {
            Ok(handle) => Ok(handle),
            Err(err) => {
                // A task that did not start leaves no service behind.
                if let Err(e) = self.docker.delete_service(&service_id).await {
                    tracing::warn!(service = %service_id, "cannot remove the service of a failed start: {}", engine_message(&e));
                }
                Err(err)
            }
        }
    }

    /// The workers that can take a task now (ready, active), with how many running tasks each
    /// holds, of the task's task set (this installation's, same service, revision and
    /// deployment) and of any kind.
    async fn node_loads(&self, task: &TaskSpec) -> Result<Vec<NodeLoad>, RuntimeError> {
        let nodes = self
            .docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(|e| engine_err("cannot list swarm nodes", &e))?;
        let options = ListServicesOptions {
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![
                    format!("{LABEL_INSTANCE}={}", self.instance),
                    format!("{LABEL_SERVICE}={}", task.service),
                    format!("{LABEL_REVISION}={}", task.revision),
                ],
            )])),
            ..Default::default()
        };
        let services = self
            .docker
            .list_services(Some(options))
            .await
            .map_err(|e| engine_err("cannot list services", &e))?;
        let task_set: Vec<bollard::models::Service> = services
            .into_iter()
            .filter(|s| label(s, LABEL_DEPLOYMENT) == task.deployment_id.as_ref())
            .collect();
        // Where each of the task set's tasks is: the node its service is pinned to, known as soon
        // as the service exists (its task may not be scheduled yet), else its task's node.
        let pinned: Vec<String> = task_set.iter().filter_map(pinned_node).collect();
        let unpinned: HashSet<String> = task_set
            .iter()
            .filter(|s| pinned_node(s).is_none())
            .filter_map(|s| s.id.clone())
            .collect();
        let running = ListTasksOptions {
            filters: Some(HashMap::from([(
                "desired-state".to_string(),
                vec!["running".to_string()],
            )])),
        };
        let tasks = self
            .docker
            .list_tasks(Some(running))
            .await
            .map_err(|e| engine_err("cannot list swarm tasks", &e))?;
        Ok(nodes
            .into_iter()
            .filter(|n| {
                let spec = n.spec.as_ref();
                spec.and_then(|s| s.role) == Some(NodeSpecRoleEnum::WORKER)
                    && spec.and_then(|s| s.availability) == Some(NodeSpecAvailabilityEnum::ACTIVE)
                    && n.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY)
                    && decide::meets(
                        &spec.and_then(|s| s.labels.clone()).unwrap_or_default(),
                        &task.placement_constraints,
                    )
            })
            .filter_map(|n| {
                let id = n.id?;
                let on_node = tasks.iter().filter(|t| t.node_id.as_ref() == Some(&id));
                let of_task_set = pinned.iter().filter(|p| **p == id).count()
                    + on_node
                        .clone()
                        .filter(|t| t.service_id.as_ref().is_some_and(|s| unpinned.contains(s)))
                        .count();
                Some(NodeLoad {
                    hostname: n.description.and_then(|d| d.hostname).unwrap_or_default(),
                    of_task_set,
                    all: on_node.count(),
                    id,
                })
            })
            .collect())
    }

    /// Polls until the service's task runs with an overlay address, or cannot.
    async fn wait_running(
        &self,
        spec: &TaskSpec,
        service_id: &str,
        network: &str,
        started_at_ms: u64,
    ) -> Result<TaskHandle, RuntimeError> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let failed =
            |reason: String| RuntimeError::StartFailed { task_id: spec.task_id.clone(), reason };
        loop {
            let tasks = self.observe(service_id, network).await?;
            if let Some(t) = tasks.first() {
                if let Some(reason) = decide::start_failure(t) {
                    return Err(failed(reason));
                }
                if (t.state == "running" || t.state == "starting")
                    && let Some(ip) = t.ip
                {
                    return Ok(handle(spec, service_id, Some(ip), started_at_ms));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let last = tasks.first().map_or("no task yet".to_string(), |t| t.state.clone());
                return Err(failed(format!(
                    "not running after {}s (Swarm task state: {last})",
                    START_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// `host/name:tag` without its tag.
fn repository_of(image: &str) -> &str {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => image,
    }
}

/// The handle of a task: its service id and the overlay address of its load-balanced port.
fn handle(
    spec: &TaskSpec,
    service_id: &str,
    ip: Option<std::net::Ipv4Addr>,
    started_at_ms: u64,
) -> TaskHandle {
    let port = match &spec.lb_container {
        Some((_, port)) => Some(*port),
        None => spec.containers.iter().find_map(|c| c.ports.first().copied()),
    };
    TaskHandle {
        task_id: spec.task_id.clone(),
        runtime_id: service_id.chars().take(12).collect(),
        addr: ip.zip(port).map(|(ip, port)| SocketAddr::from((ip, port))),
        started_at_ms,
    }
}

fn replicas(service: &bollard::models::Service) -> u64 {
    let mode = service.spec.as_ref().and_then(|s| s.mode.as_ref());
    let replicas = mode.and_then(|m| m.replicated.as_ref()).and_then(|r| r.replicas);
    replicas.and_then(|r| u64::try_from(r).ok()).unwrap_or(0)
}

fn label<'a>(service: &'a bollard::models::Service, key: &str) -> Option<&'a String> {
    service.spec.as_ref()?.labels.as_ref()?.get(key)
}

/// The node a service's placement pins it to (`node.id==…`), as `decide::spread` chose it.
fn pinned_node(service: &bollard::models::Service) -> Option<String> {
    let placement = service.spec.as_ref()?.task_template.as_ref()?.placement.as_ref()?;
    placement.constraints.as_ref()?.iter().find_map(|c| {
        let (key, value) = c.split_once("==")?;
        (key.trim() == "node.id").then(|| value.trim().to_string())
    })
}

fn network_of(service: &bollard::models::Service) -> String {
    service
        .spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.networks.as_ref())
        .and_then(|n| n.first())
        .and_then(|n| n.target.clone())
        .unwrap_or_else(|| DEFAULT_OVERLAY.to_string())
}

fn has_health_check(service: &bollard::models::Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.container_spec.as_ref())
        .is_some_and(|c| c.health_check.is_some())
}

/// Whether Swarm may still have the task's container running (anything short of an end state).
fn not_over(t: &Observed) -> bool {
    !decide::is_over(&t.state)
}

impl SwarmRuntime {
    /// Waits, for at most [`REAP_LIMIT`], until Swarm's task reaper has deleted the tasks of
    /// service `id` that scaling to zero marked for removal (see [`decide::reaper_pending`]).
    /// After the limit the service is removed anyway: a reaper that slow is not racing.
    async fn wait_reaped(
        &self,
        id: &str,
        network: &str,
        mut tasks: Vec<Observed>,
    ) -> Result<(), RuntimeError> {
        let deadline = tokio::time::Instant::now() + REAP_LIMIT;
        while decide::reaper_pending(&tasks) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
            tasks = self.observe(id, network).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Runtime for SwarmRuntime {
    fn kind(&self) -> &'static str {
        "swarm"
    }

    async fn start(&self, spec: TaskSpec) -> Result<TaskHandle, RuntimeError> {
        self.start_task(spec).await
    }

    async fn stop(&self, handle: &TaskHandle) -> Result<(), RuntimeError> {
        let Some(service) = self.service(&handle.task_id).await? else { return Ok(()) };
        let id = service.id.clone().unwrap_or_default();
        if replicas(&service) != 0 {
            // Scaling to zero stops the task with its grace period and keeps the service, so
            // `inspect` still says how it ended until `remove`.
            let mut spec = service.spec.clone().unwrap_or_default();
            if let Some(mode) = spec.mode.as_mut() {
                mode.replicated = Some(ServiceSpecModeReplicated { replicas: Some(0) });
            }
            let version = service.version.as_ref().and_then(|v| v.index).unwrap_or(0);
            let options = UpdateServiceOptions {
                version: i32::try_from(version).unwrap_or(i32::MAX),
                ..Default::default()
            };
            self.docker
                .update_service(&id, spec, options, None)
                .await
                .map_err(|e| engine_err(format!("cannot scale service {id} to zero"), &e))?;
        }
        let grace = service
            .spec
            .as_ref()
            .and_then(|s| s.task_template.as_ref()?.container_spec.as_ref()?.stop_grace_period)
            .and_then(|n| u64::try_from(n).ok())
            .map_or(crate::DEFAULT_STOP_TIMEOUT, Duration::from_nanos);
        let deadline = tokio::time::Instant::now() + grace + STOP_MARGIN;
        let network = network_of(&service);
        loop {
            let tasks = self.observe(&id, &network).await?;
            // A task on a lost node never reports again; it is not waited for.
            let live = |t: &&Observed| not_over(t) && t.node.as_ref().is_none_or(|(_, up)| *up);
            if !tasks.iter().any(|t| live(&t)) || tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn inspect(&self, handle: &TaskHandle) -> TaskState {
        let service = match self.service(&handle.task_id).await {
            Ok(Some(s)) => s,
            Ok(None) => return TaskState::Gone,
            Err(e) => {
                // The manager is unreachable or confused: no verdict, rather than a false exit.
                tracing::warn!(task = %handle.task_id, %e, "cannot inspect task");
                return TaskState::Running { health: Health::Unknown };
            }
        };
        let id = service.id.clone().unwrap_or_default();
        match self.observe(&id, &network_of(&service)).await {
            Ok(tasks) => decide::task_state(&tasks, replicas(&service), has_health_check(&service)),
            Err(e) => {
                tracing::warn!(task = %handle.task_id, %e, "cannot inspect task");
                TaskState::Running { health: Health::Unknown }
            }
        }
    }

    async fn list_owned(&self) -> Result<Vec<TaskHandle>, RuntimeError> {
        let options = ListServicesOptions {
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("{LABEL_INSTANCE}={}", self.instance), LABEL_TASK.to_string()],
            )])),
            ..Default::default()
        };
        let services = self
            .docker
            .list_services(Some(options))
            .await
            .map_err(|e| engine_err("cannot list services", &e))?;
        let mut handles = Vec::new();
        for service in services {
            let spec: Option<TaskSpec> =
                label(&service, LABEL_SPEC).and_then(|s| serde_json::from_str(s).ok());
            let Some(spec) = spec else {
                let name = service.spec.as_ref().and_then(|s| s.name.clone()).unwrap_or_default();
                tracing::warn!(service = %name, "skipping a service without a readable `{LABEL_SPEC}` label; remove it by hand (docker service rm)");
                continue;
            };
            let id = service.id.clone().unwrap_or_default();
            let tasks = self.observe(&id, &network_of(&service)).await?;
            let ip = tasks.first().filter(|t| not_over(t)).and_then(|t| t.ip);
            let started = label(&service, LABEL_STARTED).and_then(|s| s.parse().ok()).unwrap_or(0);
            handles.push(handle(&spec, &id, ip, started));
        }
        handles.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        Ok(handles)
    }

    async fn remove(&self, handle: &TaskHandle) -> Result<(), RuntimeError> {
        let Some(service) = self.service(&handle.task_id).await? else { return Ok(()) };
        let id = service.id.clone().unwrap_or_default();
        let tasks = self.observe(&id, &network_of(&service)).await?;
        if !decide::may_remove(replicas(&service), &tasks) {
            return Err(RuntimeError::StillRunning { task_id: handle.task_id.clone() });
        }
        self.wait_reaped(&id, &network_of(&service), tasks).await?;
        match self.docker.delete_service(&id).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(engine_err(format!("cannot remove service {id}"), &e)),
        }
    }

    fn log_files(&self, _task_id: &str) -> Vec<(String, PathBuf)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_reference_loses_its_tag_but_keeps_its_registry_port() {
        assert_eq!(repository_of("10.99.0.1:5000/web:v2"), "10.99.0.1:5000/web");
        assert_eq!(repository_of("10.99.0.1:5000/web"), "10.99.0.1:5000/web");
        assert_eq!(repository_of("web:v2"), "web");
    }
}
