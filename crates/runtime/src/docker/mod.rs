//! The Docker runtime: every container a Docker container, every task its own IP on a network
//! cutover owns, as with ECS `awsvpc`.
//!
//! - **Network.** Tasks join the user-defined bridge network [`TaskSpec::network`] (default
//!   `cutover`), created with the label `cutover.managed=true` when missing. The first container
//!   a task starts gets the task's IP; the others share its network namespace
//!   (`container:<id>`), so all containers of a task reach each other on `localhost` and the
//!   load balancer targets `containerIP:containerPort`. That first container must therefore keep
//!   running for the task's lifetime (make it the essential one, not an init container).
//! - **Mapping.** `entryPoint`, `command`, `environment`, `workingDirectory`, ports (exposed),
//!   `healthCheck` (the container's Docker health check), `stopTimeout`, `dockerLabels`; container
//!   `cpu` as CPU shares, `memory` as the hard limit, `memoryReservation` as the soft one; task
//!   `memory` caps containers without their own limit, task `cpu` caps each container's CPUs.
//!   The environment is as documented on the crate, with `HOST=0.0.0.0` (the task has its own
//!   network namespace) and without `CUTOVER_TASK_ADDR` (the IP is known only once the first
//!   container runs).
//! - **Labels.** `cutover.task-id`, `cutover.service`, `cutover.revision`, `cutover.deployment`,
//!   `cutover.container`, `cutover.started-at-ms` and `cutover.task-spec` (the spec, for
//!   adoption). Only containers carrying `cutover.task-id` are ever listed, stopped or removed.
//! - **Images** are used from the engine when present and pulled otherwise (with the matching
//!   [`RegistryCredential`], if any); a failed pull is [`RuntimeError::ImagePull`] with the
//!   engine's message.
//! - **Logs** are streamed into the same per-container files as the process runtime (see
//!   `logs`). **Exits** are watched with the engine's wait API; an essential container exiting
//!   stops the task.
//! - [`Runtime::list_owned`] returns every task that still has containers, running or exited, so
//!   the control plane can adopt the live ones and remove the dead ones.

mod logs;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerState, HealthConfig, HealthStatusEnum, HostConfig,
    HostConfigLogConfig, NetworkCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions,
    ListNetworksOptions, RemoveContainerOptions, StartContainerOptions, StopContainerOptions,
    WaitContainerOptions,
};
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::depends_on::{self, Condition, StartPlan, WaitError};
use crate::process::store::{self, StopCause, StoppedRecord};
use crate::process::{DEPENDENCY_TIMEOUT, join_all, lock, valid_task_id, validate};
use crate::{Health, Runtime, RuntimeError, TaskHandle, TaskSpec, TaskState};

/// The network tasks join when their spec names none.
pub const DEFAULT_NETWORK: &str = "cutover";

pub(crate) const LABEL_TASK: &str = "cutover.task-id";
pub(crate) const LABEL_SERVICE: &str = "cutover.service";
pub(crate) const LABEL_REVISION: &str = "cutover.revision";
pub(crate) const LABEL_DEPLOYMENT: &str = "cutover.deployment";
const LABEL_CONTAINER: &str = "cutover.container";
pub(crate) const LABEL_STARTED: &str = "cutover.started-at-ms";
pub(crate) const LABEL_SPEC: &str = "cutover.task-spec";
pub(crate) const LABEL_MANAGED: &str = "cutover.managed";
/// Which cutover installation (data directory) owns a container. Two installations may share
/// one engine; each must only ever see, adopt and remove its own containers.
pub(crate) const LABEL_INSTANCE: &str = "cutover.instance";

/// Per-request limit of the engine client; long enough for a stop with the largest ECS
/// stop timeout (120 s).
const REQUEST_TIMEOUT_SECS: u64 = 300;
/// How long `connect` waits for the engine to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(200);

/// Serialises network creation in this process: engines before API 1.44 happily create two
/// networks with the same name.
static NETWORK_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Registry credentials used when an image has to be pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryCredential {
    /// Registry host, e.g. `registry.example.com:5000`; `docker.io` for Docker Hub.
    pub server: String,
    pub username: String,
    pub password: String,
}

/// Runs tasks as Docker containers; see the module docs.
pub struct DockerRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    /// This installation's id, stored in `state_dir/instance-id` on first use.
    instance: String,
    tasks_dir: PathBuf,
    ncpu: i64,
    credentials: Mutex<Vec<RegistryCredential>>,
    tasks: Mutex<HashMap<String, Arc<Task>>>,
}

impl DockerRuntime {
    /// Connects to the engine named by `DOCKER_HOST` (default `unix:///var/run/docker.sock`),
    /// keeping task logs under `state_dir/tasks/<task_id>/`.
    pub async fn connect(state_dir: PathBuf) -> Result<DockerRuntime, RuntimeError> {
        DockerRuntime::connect_to(&docker_host(), state_dir).await
    }

    /// Connects to the engine at `host` (`unix:///path` or `tcp://host:port`).
    pub async fn connect_to(host: &str, state_dir: PathBuf) -> Result<DockerRuntime, RuntimeError> {
        let (docker, info) = connect_engine(host).await?;
        let tasks_dir = state_dir.join("tasks");
        std::fs::create_dir_all(&tasks_dir)
            .map_err(|e| RuntimeError::io("cannot create", &tasks_dir, e))?;
        let instance = instance_id(&state_dir)?;
        Ok(DockerRuntime {
            inner: Arc::new(Inner {
                docker,
                instance,
                tasks_dir,
                ncpu: info.ncpu.unwrap_or(1).max(1),
                credentials: Mutex::new(Vec::new()),
                tasks: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Credentials for pulling images from private registries.
    pub fn with_credentials(self, credentials: Vec<RegistryCredential>) -> DockerRuntime {
        *lock(&self.inner.credentials) = credentials;
        self
    }
}

/// The engine `DOCKER_HOST` names, by default the local socket.
pub(crate) fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
}

/// The one way cutover connects to a Docker Engine (`unix:///path` or `tcp://host:port`): the
/// client with its version negotiated, and what the engine says about itself.
pub(crate) async fn connect_engine(
    host: &str,
) -> Result<(Docker, bollard::models::SystemInfo), RuntimeError> {
    let unreachable =
        |detail: String| RuntimeError::EngineUnreachable { host: host.to_string(), detail };
    let docker = if host.starts_with("unix://") || host.starts_with('/') {
        Docker::connect_with_unix(host, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
    } else {
        return Err(unreachable(
            "unsupported address; use unix:///path/to/docker.sock or tcp://host:port".into(),
        ));
    }
    .map_err(|e| unreachable(e.to_string()))?;
    let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
        .await
        .map_err(|_| unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    let info = tokio::time::timeout(CONNECT_TIMEOUT, docker.info())
        .await
        .map_err(|_| unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    Ok((docker, info))
}

impl Drop for DockerRuntime {
    fn drop(&mut self) {
        for t in lock(&self.inner.tasks).values() {
            t.detach.send_replace(true);
        }
    }
}

/// A task known to this runtime instance.
struct Task {
    id: String,
    dir: PathBuf,
    spec: TaskSpec,
    network: String,
    /// Start order; the first container owns the network namespace.
    order: Vec<usize>,
    levels: Vec<Vec<usize>>,
    started_at_ms: u64,
    /// Docker ids by container index; `None` for one not created (yet).
    ids: Mutex<Vec<Option<String>>>,
    ip: Mutex<Option<Ipv4Addr>>,
    spawn_lock: tokio::sync::Mutex<()>,
    stop_begun: AtomicBool,
    stopped: tokio::sync::OnceCell<StoppedRecord>,
    /// Turns true when the runtime is dropped or the task removed: exit watchers end.
    detach: watch::Sender<bool>,
    log_followers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// What a container is doing, from `inspect`.
#[derive(Debug, Clone)]
struct Observed {
    /// False when the engine no longer knows the container.
    exists: bool,
    running: bool,
    exit_code: Option<i64>,
    oom_killed: bool,
    finished_at: String,
    health: Health,
}

impl Observed {
    fn from_state(state: Option<ContainerState>) -> Observed {
        let s = state.unwrap_or_default();
        let health = match s.health.and_then(|h| h.status) {
            Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
            Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
            _ => Health::Unknown,
        };
        Observed {
            exists: true,
            running: s.running.unwrap_or(false) || s.restarting.unwrap_or(false),
            exit_code: s.exit_code,
            oom_killed: s.oom_killed.unwrap_or(false),
            finished_at: s.finished_at.unwrap_or_default(),
            health,
        }
    }

    /// A container that no longer exists.
    fn missing() -> Observed {
        Observed {
            exists: false,
            running: false,
            exit_code: None,
            oom_killed: false,
            finished_at: String::new(),
            health: Health::Unknown,
        }
    }
}

fn exit_reason(name: &str, o: &Observed) -> String {
    match o.exit_code {
        _ if !o.exists => {
            format!(
                "essential container {name} is gone (removed outside cutover; exit code unknown)"
            )
        }
        _ if o.oom_killed => format!(
            "essential container {name} was killed for exceeding its memory limit (OOMKilled, exit code {})",
            o.exit_code.unwrap_or(137)
        ),
        Some(code) => format!("essential container {name} exited with code {code}"),
        None => format!("essential container {name} exited (exit code unknown)"),
    }
}

/// Why a container's `dependsOn` wait ended without its condition holding.
#[derive(Debug, thiserror::Error)]
enum StartWaitError {
    #[error(transparent)]
    Wait(#[from] WaitError),
    #[error(transparent)]
    Engine(#[from] RuntimeError),
}

fn exit_code(o: &Observed) -> Option<i32> {
    if !o.exists || o.running {
        return None;
    }
    o.exit_code.and_then(|c| i32::try_from(c).ok())
}

/// When a container finished, for ordering exits.
fn finished(o: &Observed) -> logs::Stamp {
    logs::parse_rfc3339(&o.finished_at).unwrap_or((i64::MAX, 0))
}

/// The engine's own words for an error.
pub(crate) fn engine_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        DockerError::DockerStreamError { error } => error.trim().to_string(),
        other => other.to_string(),
    }
}

/// A network of the name a task joins, as far as deduplication needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NetworkSummary {
    id: String,
    /// Created by cutover (labelled), so cutover may remove it.
    managed: bool,
}

/// Of several networks with one name, which to remove: every process must keep the same one
/// without talking to the others, so the one kept is the smallest id, and only networks cutover
/// created are ever removed.
fn duplicate_networks_to_remove(networks: &[NetworkSummary]) -> Vec<String> {
    let Some(kept) = networks.iter().map(|n| &n.id).min() else { return Vec::new() };
    networks.iter().filter(|n| n.managed && &n.id != kept).map(|n| n.id.clone()).collect()
}

pub(crate) fn is_status(e: &DockerError, status: u16) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code, .. } if *status_code == status)
}

pub(crate) fn engine_err(what: impl Into<String>, e: &DockerError) -> RuntimeError {
    RuntimeError::Engine { what: what.into(), message: engine_message(e) }
}

/// The id of this installation, created on first use (random, so that copies of a data directory
/// made before first use do not collide).
pub(crate) fn instance_id(state_dir: &Path) -> Result<String, RuntimeError> {
    let path = state_dir.join("instance-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    let id: String = {
        use rand::Rng;
        let n: u64 = rand::rng().random();
        format!("{n:016x}")
    };
    std::fs::create_dir_all(state_dir)
        .map_err(|e| RuntimeError::io("cannot create", state_dir, e))?;
    std::fs::write(&path, &id).map_err(|e| RuntimeError::io("cannot write", &path, e))?;
    Ok(id)
}

fn container_name(task_id: &str, container: &str) -> String {
    format!("cutover-{task_id}-{container}")
}

/// ECS task `cpu`: units (`1024`) or vCPUs (`1 vCPU`, `0.5 vcpu`), as CPU units.
pub(crate) fn parse_task_cpu(s: &str) -> Option<f64> {
    let t = s.trim().to_ascii_lowercase();
    match t.strip_suffix("vcpu") {
        Some(v) => v.trim().parse::<f64>().ok().map(|v| v * 1024.0),
        None => t.parse::<f64>().ok(),
    }
}

/// ECS task `memory`: MiB (`2048`) or GB (`2 GB`, `0.5gb`), as MiB.
pub(crate) fn parse_task_memory(s: &str) -> Option<f64> {
    let t = s.trim().to_ascii_lowercase();
    match t.strip_suffix("gb") {
        Some(v) => v.trim().parse::<f64>().ok().map(|v| v * 1024.0),
        None => t.strip_suffix("mb").unwrap_or(&t).trim().parse::<f64>().ok(),
    }
}

/// Whether an image reference names a tag or digest (else Docker would pull every tag).
fn has_tag_or_digest(image: &str) -> bool {
    image.contains('@') || image.rsplit('/').next().is_some_and(|last| last.contains(':'))
}

/// The registry an image reference points at.
fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

impl Inner {
    fn task_dir(&self, id: &str) -> PathBuf {
        self.tasks_dir.join(id)
    }

    async fn ensure_image(&self, image: &str, container: &str) -> Result<(), RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(engine_err(format!("cannot inspect image {image}"), &e)),
        }
        tracing::info!(%image, "pulling image");
        let registry = registry_of(image);
        let credentials = lock(&self.credentials)
            .iter()
            .find(|c| {
                let server = c.server.trim_start_matches("https://").trim_end_matches('/');
                server == registry || (registry == "docker.io" && server.ends_with("docker.io/v1"))
            })
            .map(|c| DockerCredentials {
                username: Some(c.username.clone()),
                password: Some(c.password.clone()),
                serveraddress: Some(c.server.clone()),
                ..Default::default()
            });
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            tag: (!has_tag_or_digest(image)).then(|| "latest".to_string()),
            ..Default::default()
        };
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        while let Some(item) = progress.next().await {
            if let Err(e) = item {
                return Err(RuntimeError::ImagePull {
                    container: container.to_string(),
                    image: image.to_string(),
                    message: engine_message(&e),
                });
            }
        }
        Ok(())
    }

    async fn ensure_network(&self, name: &str) -> Result<(), RuntimeError> {
        let _serial = NETWORK_LOCK.lock().await;
        if self.networks_named(name).await?.is_empty() {
            let request = NetworkCreateRequest {
                name: name.to_string(),
                driver: Some("bridge".into()),
                attachable: Some(true),
                labels: Some(HashMap::from([(LABEL_MANAGED.to_string(), "true".to_string())])),
                ..Default::default()
            };
            match self.docker.create_network(request).await {
                Ok(_) => tracing::info!(network = %name, "created network"),
                Err(e) if is_status(&e, 409) => {}
                Err(e) => return Err(engine_err(format!("cannot create network {name}"), &e)),
            }
        }
        // Another process (a second installation, a test run beside this one) may have created
        // one of the same name at the same moment: engines before API 1.44 allow it, and then
        // every use of the name fails as ambiguous. Every process keeps the same one.
        let networks = self.networks_named(name).await?;
        for id in duplicate_networks_to_remove(&networks) {
            match self.docker.remove_network(&id).await {
                Ok(()) => tracing::info!(network = %name, %id, "removed a duplicate network"),
                Err(e) => tracing::warn!(
                    network = %name,
                    %id,
                    "cannot remove a duplicate network: {}",
                    engine_message(&e)
                ),
            }
        }
        Ok(())
    }

    /// The networks whose name is exactly `name` (the engine's filter also matches parts).
    async fn networks_named(&self, name: &str) -> Result<Vec<NetworkSummary>, RuntimeError> {
        let options = ListNetworksOptions {
            filters: Some(HashMap::from([("name".to_string(), vec![name.to_string()])])),
        };
        let networks = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|e| engine_err(format!("cannot list networks named {name}"), &e))?;
        Ok(networks
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .map(|n| NetworkSummary {
                managed: n.labels.is_some_and(|l| l.contains_key(LABEL_MANAGED)),
                id: n.id.unwrap_or_default(),
            })
            .collect())
    }

    /// Containers labelled with `task_id` (or with any task id when `None`).
    async fn containers(
        &self,
        task_id: Option<&str>,
    ) -> Result<Vec<bollard::models::ContainerSummary>, RuntimeError> {
        let label = match task_id {
            Some(id) => format!("{LABEL_TASK}={id}"),
            None => LABEL_TASK.to_string(),
        };
        let options = ListContainersOptions {
            all: true,
            // Several label filters are ANDed by the engine.
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![label, format!("{LABEL_INSTANCE}={}", self.instance)],
            )])),
            ..Default::default()
        };
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| engine_err("cannot list containers", &e))
    }

    async fn observe(&self, id: &str) -> Result<Observed, RuntimeError> {
        match self.docker.inspect_container(id, None::<InspectContainerOptions>).await {
            Ok(r) => Ok(Observed::from_state(r.state)),
            Err(e) if is_status(&e, 404) => Ok(Observed::missing()),
            Err(e) => Err(engine_err(format!("cannot inspect container {id}"), &e)),
        }
    }

    async fn container_ip(&self, id: &str, network: &str) -> Result<Ipv4Addr, RuntimeError> {
        let r = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| engine_err(format!("cannot inspect container {id}"), &e))?;
        r.network_settings
            .and_then(|n| n.networks)
            .and_then(|mut nets| nets.remove(network))
            .and_then(|ep| ep.ip_address)
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| RuntimeError::Engine {
                what: format!("container {id}"),
                message: format!("has no IPv4 address on network {network}"),
            })
    }

    /// The task from memory, else rebuilt from its containers' labels (adopting it).
    async fn get_or_load(self: &Arc<Self>, id: &str) -> Result<Option<Arc<Task>>, RuntimeError> {
        if !valid_task_id(id) {
            return Ok(None);
        }
        if let Some(t) = lock(&self.tasks).get(id) {
            return Ok(Some(Arc::clone(t)));
        }
        let found = self.containers(Some(id)).await?;
        let Some(first) = found.first() else {
            return Ok(None);
        };
        let labels = first.labels.clone().unwrap_or_default();
        let spec: TaskSpec = labels
            .get(LABEL_SPEC)
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| RuntimeError::Engine {
                what: format!("task {id}"),
                message: format!(
                    "its containers carry no readable `{LABEL_SPEC}` label; remove them by hand (docker rm -f)"
                ),
            })?;
        let StartPlan { order, levels } = validate(&spec)?;
        let mut ids = vec![None; spec.containers.len()];
        for c in &found {
            let name = c.labels.as_ref().and_then(|l| l.get(LABEL_CONTAINER));
            let index = name.and_then(|n| spec.containers.iter().position(|s| &s.name == n));
            if let (Some(i), Some(cid)) = (index, &c.id) {
                ids[i] = Some(cid.clone());
            }
        }
        let network = spec.network.clone().unwrap_or_else(|| DEFAULT_NETWORK.to_string());
        let ip = match &ids[order[0]] {
            Some(owner) => self.container_ip(owner, &network).await.ok(),
            None => None,
        };
        let dir = self.task_dir(id);
        let stopped = tokio::sync::OnceCell::new();
        if let Ok(Some(s)) = store::read::<StoppedRecord>(&store::stopped_file(&dir)) {
            let _ = stopped.set(s);
        }
        let complete = ids.iter().all(Option::is_some);
        let task = Arc::new(Task {
            id: id.to_string(),
            dir,
            network,
            order,
            levels,
            started_at_ms: labels.get(LABEL_STARTED).and_then(|s| s.parse().ok()).unwrap_or(0),
            ids: Mutex::new(ids),
            ip: Mutex::new(ip),
            spawn_lock: tokio::sync::Mutex::new(()),
            stop_begun: AtomicBool::new(stopped.initialized()),
            stopped,
            detach: watch::Sender::new(false),
            log_followers: Mutex::new(Vec::new()),
            spec,
        });
        {
            let mut tasks = lock(&self.tasks);
            if let Some(t) = tasks.get(id) {
                return Ok(Some(Arc::clone(t)));
            }
            tasks.insert(id.to_string(), Arc::clone(&task));
        }
        std::fs::create_dir_all(&task.dir)
            .map_err(|e| RuntimeError::io("cannot create", &task.dir, e))?;
        // Catch up on the logs and watch for exits, as the previous control plane did.
        let ids = task.ids();
        let mut essential_gone = None;
        for (i, cid) in ids.iter().enumerate() {
            let Some(cid) = cid else { continue };
            self.follow_logs(&task, i, cid);
            let observed = self.observe(cid).await?;
            if observed.running {
                self.watch_exit(&task, i, cid.clone());
            } else if task.spec.containers[i].essential && essential_gone.is_none() {
                essential_gone = Some(i);
            }
        }
        if !task.stopped.initialized() {
            if !complete {
                let (inner, t) = (Arc::clone(self), Arc::clone(&task));
                tokio::spawn(async move { inner.stop_task(&t, StopCause::Interrupted).await });
            } else if let Some(i) = essential_gone {
                let (inner, t) = (Arc::clone(self), Arc::clone(&task));
                tokio::spawn(
                    async move { inner.stop_task(&t, StopCause::EssentialExited(i)).await },
                );
            }
        }
        Ok(Some(task))
    }

    fn follow_logs(&self, task: &Arc<Task>, i: usize, cid: &str) {
        let handle = tokio::spawn(logs::follow(
            self.docker.clone(),
            task.dir.clone(),
            task.spec.containers[i].name.clone(),
            cid.to_string(),
        ));
        lock(&task.log_followers).push(handle);
    }

    /// Waits for the container to stop; an essential one stops the task.
    fn watch_exit(self: &Arc<Self>, task: &Arc<Task>, i: usize, cid: String) {
        let inner = Arc::clone(self);
        let task = Arc::clone(task);
        tokio::spawn(async move {
            let mut detach = task.detach.subscribe();
            loop {
                let options = WaitContainerOptions { condition: "not-running".into() };
                let mut wait = inner.docker.wait_container(&cid, Some(options));
                let outcome = tokio::select! {
                    r = wait.next() => r,
                    _ = detach.wait_for(|d| *d) => return,
                };
                match outcome {
                    None
                    | Some(Ok(_))
                    | Some(Err(DockerError::DockerContainerWaitError { .. })) => {
                        break;
                    }
                    Some(Err(e)) if is_status(&e, 404) => break,
                    Some(Err(e)) => {
                        // The engine restarted or the request timed out: look again.
                        tracing::debug!(container = %cid, %e, "waiting for the container failed");
                        match inner.observe(&cid).await {
                            Ok(o) if !o.running => break,
                            _ => tokio::time::sleep(Duration::from_secs(1)).await,
                        }
                    }
                }
            }
            if task.spec.containers[i].essential
                && !*task.detach.borrow()
                && !task.stop_begun.load(Ordering::SeqCst)
            {
                inner.stop_task(&task, StopCause::EssentialExited(i)).await;
            }
        });
    }

    /// Stops the task once; later callers wait for the first stop and get its record.
    async fn stop_task(self: &Arc<Self>, task: &Arc<Task>, cause: StopCause) -> StoppedRecord {
        let inner = Arc::clone(self);
        let t = Arc::clone(task);
        task.stopped
            .get_or_init(|| async move {
                {
                    let _spawning = t.spawn_lock.lock().await;
                    t.stop_begun.store(true, Ordering::SeqCst);
                }
                let ids = t.ids();
                for level in t.levels.iter().rev() {
                    let stops = level.iter().filter_map(|&i| {
                        let cid = ids[i].clone()?;
                        let timeout = t.spec.containers[i].stop_timeout;
                        Some(inner.stop_container(cid, timeout))
                    });
                    join_all(stops).await;
                }
                let rec = inner.stopped_record(&t, &cause).await;
                if let Err(e) = std::fs::create_dir_all(&t.dir)
                    .map_err(|e| RuntimeError::io("cannot create", &t.dir, e))
                    .and_then(|()| store::write(&store::stopped_file(&t.dir), &rec))
                {
                    tracing::warn!(task = %t.id, %e, "cannot record that the task stopped");
                }
                tracing::info!(task = %t.id, reason = %rec.reason, "task stopped");
                rec
            })
            .await
            .clone()
    }

    async fn stop_container(&self, cid: String, timeout: Duration) {
        let secs = i32::try_from(timeout.as_millis().div_ceil(1000)).unwrap_or(i32::MAX);
        let options = StopContainerOptions { t: Some(secs), signal: None };
        match self.docker.stop_container(&cid, Some(options)).await {
            Ok(()) => {}
            Err(e) if is_status(&e, 304) || is_status(&e, 404) => {}
            Err(e) => tracing::warn!(container = %cid, %e, "cannot stop container"),
        }
    }

    async fn stopped_record(&self, task: &Task, cause: &StopCause) -> StoppedRecord {
        let at_ms = crate::process::sys::now_ms();
        let exit = match cause.reported_container(&task.spec) {
            Some(i) => {
                let observed = match task.ids()[i].clone() {
                    Some(cid) => self.observe(&cid).await.unwrap_or_else(|_| Observed::missing()),
                    None => Observed::missing(),
                };
                Some((exit_code(&observed), exit_reason(&task.spec.containers[i].name, &observed)))
            }
            None => None,
        };
        cause.record(exit, at_ms)
    }

    async fn state(self: &Arc<Self>, task: &Arc<Task>) -> Result<TaskState, RuntimeError> {
        if let Some(rec) = task.stopped.get() {
            return Ok(TaskState::Exited { code: rec.code, reason: rec.reason.clone() });
        }
        let ids = task.ids();
        let mut observed = Vec::with_capacity(ids.len());
        for cid in &ids {
            observed.push(match cid {
                Some(cid) => Some(self.observe(cid).await?),
                None => None,
            });
        }
        if observed.iter().flatten().all(|o| !o.exists) {
            // Removed, by another runtime or by hand.
            lock(&self.tasks).remove(&task.id);
            task.detach.send_replace(true);
            return Ok(TaskState::Gone);
        }
        let gone = observed
            .iter()
            .enumerate()
            .filter(|(i, _)| task.spec.containers[*i].essential)
            .filter_map(|(i, o)| Some((i, o.clone()?)))
            .filter(|(_, o)| !o.running)
            .min_by_key(|(_, o)| finished(o));
        if let Some((i, o)) = gone {
            if !task.stop_begun.load(Ordering::SeqCst) {
                let (inner, t) = (Arc::clone(self), Arc::clone(task));
                tokio::spawn(
                    async move { inner.stop_task(&t, StopCause::EssentialExited(i)).await },
                );
            }
            return Ok(TaskState::Exited {
                code: exit_code(&o),
                reason: exit_reason(&task.spec.containers[i].name, &o),
            });
        }
        let health = crate::combine_health(
            observed
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    let c = &task.spec.containers[*i];
                    c.essential && c.health_check.is_some()
                })
                .map(|(_, o)| o.as_ref().map_or(Health::Unknown, |o| o.health)),
        );
        Ok(TaskState::Running { health })
    }
}

impl Task {
    fn ids(&self) -> Vec<Option<String>> {
        lock(&self.ids).clone()
    }

    fn handle(&self) -> TaskHandle {
        let ip = *lock(&self.ip);
        let port = match &self.spec.lb_container {
            Some((_, port)) => Some(*port),
            None => self.spec.containers.iter().find_map(|c| c.ports.first().copied()),
        };
        TaskHandle {
            task_id: self.id.clone(),
            runtime_id: self
                .ids()
                .iter()
                .flatten()
                .map(|id| id.chars().take(12).collect::<String>())
                .collect::<Vec<_>>()
                .join(","),
            addr: ip.zip(port).map(|(ip, port)| SocketAddr::from((ip, port))),
            started_at_ms: self.started_at_ms,
        }
    }
}

impl DockerRuntime {
    fn create_body(&self, task: &Task, i: usize, owner: Option<&str>) -> ContainerCreateBody {
        let spec = &task.spec;
        let c = &spec.containers[i];
        // The container has its own network namespace: it listens on every address of it.
        let variables = crate::task_variables(spec, c, "0.0.0.0");
        let env: Vec<String> =
            c.environment.iter().chain(&variables).map(|(k, v)| format!("{k}={v}")).collect();

        let mut labels: HashMap<String, String> =
            c.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        labels.insert(LABEL_TASK.into(), spec.task_id.clone());
        labels.insert(LABEL_INSTANCE.into(), self.inner.instance.clone());
        labels.insert(LABEL_SERVICE.into(), spec.service.clone());
        labels.insert(LABEL_REVISION.into(), spec.revision.clone());
        if let Some(d) = &spec.deployment_id {
            labels.insert(LABEL_DEPLOYMENT.into(), d.clone());
        }
        labels.insert(LABEL_CONTAINER.into(), c.name.clone());
        labels.insert(LABEL_STARTED.into(), task.started_at_ms.to_string());
        labels.insert(LABEL_SPEC.into(), serde_json::to_string(spec).unwrap_or_default());

        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        let healthcheck = c.health_check.as_ref().map(|h| HealthConfig {
            test: Some(h.command.clone()),
            interval: Some(nanos(h.interval)),
            timeout: Some(nanos(h.timeout)),
            retries: Some(i64::from(h.retries)),
            start_period: Some(nanos(h.start_period)),
            // Engines with API 1.44+ probe this often during the start period, as the process
            // runtime does; older ones ignore it and wait a full interval.
            start_interval: (h.start_period > Duration::ZERO)
                .then(|| nanos(h.interval.min(Duration::from_secs(1)))),
        });

        const MIB: i64 = 1024 * 1024;
        let task_memory = spec.memory.as_deref().and_then(parse_task_memory);
        let memory = c
            .memory_mib
            .map(|m| i64::from(m) * MIB)
            .or(task_memory.map(|m| (m * MIB as f64) as i64));
        let nano_cpus = spec
            .cpu
            .as_deref()
            .and_then(parse_task_cpu)
            .map(|units| ((units / 1024.0) * 1e9) as i64)
            .map(|n| n.clamp(10_000_000, self.inner.ncpu * 1_000_000_000));
        let host_config = HostConfig {
            network_mode: Some(match owner {
                Some(owner) => format!("container:{owner}"),
                None => task.network.clone(),
            }),
            cpu_shares: c.cpu.map(|s| i64::from(s.max(2))),
            nano_cpus,
            memory,
            memory_reservation: c.memory_reservation_mib.map(|m| i64::from(m) * MIB),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), "10m".to_string()),
                    ("max-file".to_string(), "3".to_string()),
                ])),
            }),
            ..Default::default()
        };
        // Ports belong to the namespace owner; joiners may not declare any.
        let exposed_ports = owner.is_none().then(|| {
            spec.containers
                .iter()
                .flat_map(|c| c.ports.iter())
                .map(|p| (format!("{p}/tcp"), HashMap::new()))
                .collect()
        });
        ContainerCreateBody {
            image: Some(c.image.clone()),
            entrypoint: (!c.entry_point.is_empty()).then(|| c.entry_point.clone()),
            cmd: (!c.command.is_empty()).then(|| c.command.clone()),
            env: Some(env),
            working_dir: c.working_directory.clone(),
            labels: Some(labels),
            healthcheck,
            stop_timeout: Some(i64::try_from(c.stop_timeout.as_secs()).unwrap_or(i64::MAX)),
            exposed_ports,
            host_config: Some(host_config),
            ..Default::default()
        }
    }

    async fn start_container(&self, task: &Arc<Task>, i: usize) -> Result<(), RuntimeError> {
        let c = &task.spec.containers[i];
        let owner = if task.order[0] == i { None } else { task.ids()[task.order[0]].clone() };
        let body = self.create_body(task, i, owner.as_deref());
        let name = container_name(&task.id, &c.name);
        let options = CreateContainerOptions { name: Some(name.clone()), platform: String::new() };
        let docker = &self.inner.docker;
        let created = match docker.create_container(Some(options), body).await {
            Ok(r) => r,
            Err(e) if is_status(&e, 409) => {
                return Err(RuntimeError::AlreadyExists { task_id: task.id.clone() });
            }
            Err(e) => return Err(engine_err(format!("cannot create container {name}"), &e)),
        };
        lock(&task.ids)[i] = Some(created.id.clone());
        docker
            .start_container(&created.id, None::<StartContainerOptions>)
            .await
            .map_err(|e| engine_err(format!("cannot start container {name}"), &e))?;
        if owner.is_none() {
            let ip = self.inner.container_ip(&created.id, &task.network).await?;
            *lock(&task.ip) = Some(ip);
        }
        tracing::info!(task = %task.id, container = %c.name, id = %created.id, "container started");
        self.inner.follow_logs(task, i, &created.id);
        self.inner.watch_exit(task, i, created.id);
        Ok(())
    }

    /// Waits until container `i`'s `dependsOn` conditions hold; `Err` says which one cannot.
    async fn wait_for_dependencies(&self, task: &Task, i: usize) -> Result<(), StartWaitError> {
        let me = &task.spec.containers[i];
        for (name, condition) in &me.depends_on {
            let Some(j) = task.spec.containers.iter().position(|c| &c.name == name) else {
                continue;
            };
            // `validate` accepted every condition.
            let Some(condition) = Condition::parse(condition) else { continue };
            if condition == Condition::Start {
                continue;
            }
            let Some(cid) = task.ids()[j].clone() else {
                continue;
            };
            let deadline = tokio::time::Instant::now() + DEPENDENCY_TIMEOUT;
            loop {
                if task.stop_begun.load(Ordering::SeqCst) {
                    return Err(WaitError::TaskStopped {
                        container: me.name.clone(),
                        dependency: name.clone(),
                    }
                    .into());
                }
                let o = self.inner.observe(&cid).await?;
                let observed = if o.running {
                    depends_on::Observed::Running(o.health)
                } else {
                    depends_on::Observed::Exited(exit_code(&o))
                };
                if let Some(verdict) = depends_on::verdict(&me.name, name, condition, observed) {
                    verdict?;
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(WaitError::TimedOut {
                        container: me.name.clone(),
                        dependency: name.clone(),
                        condition,
                        secs: DEPENDENCY_TIMEOUT.as_secs(),
                    }
                    .into());
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }

    /// A container that joins the task's namespace cannot start once the owner exited; say
    /// that, rather than the engine's words about namespaces.
    async fn explain_start_failure(&self, task: &Task, i: usize, e: RuntimeError) -> RuntimeError {
        let owner = task.order[0];
        if owner == i {
            return e;
        }
        let Some(owner_id) = task.ids()[owner].clone() else {
            return e;
        };
        match self.inner.observe(&owner_id).await {
            Ok(o) if !o.running => RuntimeError::StartFailed {
                task_id: task.id.clone(),
                reason: format!(
                    "{} before container {} could start in its network namespace",
                    exit_reason(&task.spec.containers[owner].name, &o)
                        .trim_start_matches("essential "),
                    task.spec.containers[i].name
                ),
            },
            _ => e,
        }
    }

    async fn start_task(&self, spec: TaskSpec) -> Result<TaskHandle, RuntimeError> {
        let StartPlan { order, levels } = validate(&spec)?;
        let mut images = HashSet::new();
        for c in &spec.containers {
            if images.insert(c.image.clone()) {
                self.inner.ensure_image(&c.image, &c.name).await?;
            }
        }
        if !self.inner.containers(Some(&spec.task_id)).await?.is_empty() {
            return Err(RuntimeError::AlreadyExists { task_id: spec.task_id.clone() });
        }
        let network = spec.network.clone().unwrap_or_else(|| DEFAULT_NETWORK.to_string());
        self.inner.ensure_network(&network).await?;
        let dir = self.inner.task_dir(&spec.task_id);
        std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io("cannot create", &dir, e))?;
        // A task id reused after `remove` starts with a clean record (its logs continue).
        store::remove(&store::stopped_file(&dir))?;
        for c in &spec.containers {
            store::remove(&logs::cursor_file(&dir, &c.name))?;
        }
        let task = Arc::new(Task {
            id: spec.task_id.clone(),
            dir,
            network,
            order: order.clone(),
            levels,
            started_at_ms: crate::process::sys::now_ms(),
            ids: Mutex::new(vec![None; spec.containers.len()]),
            ip: Mutex::new(None),
            spawn_lock: tokio::sync::Mutex::new(()),
            stop_begun: AtomicBool::new(false),
            stopped: tokio::sync::OnceCell::new(),
            detach: watch::Sender::new(false),
            log_followers: Mutex::new(Vec::new()),
            spec,
        });
        lock(&self.inner.tasks).insert(task.id.clone(), Arc::clone(&task));
        tracing::info!(task = %task.id, network = %task.network, "starting task");

        let mut failure = None;
        for &i in &order {
            if let Err(err) = self.wait_for_dependencies(&task, i).await {
                let reason = err.to_string();
                failure = Some(RuntimeError::StartFailed { task_id: task.id.clone(), reason });
                break;
            }
            let _spawning = task.spawn_lock.lock().await;
            if task.stop_begun.load(Ordering::SeqCst) {
                drop(_spawning);
                let rec = self.inner.stop_task(&task, StopCause::StartFailed(String::new())).await;
                failure = Some(RuntimeError::StartFailed {
                    task_id: task.id.clone(),
                    reason: rec.reason,
                });
                break;
            }
            if let Err(e) = self.start_container(&task, i).await {
                failure = Some(self.explain_start_failure(&task, i, e).await);
                break;
            }
        }
        let Some(err) = failure else {
            return Ok(task.handle());
        };
        // Undo: a task that did not start leaves no container behind (its logs stay).
        self.inner.stop_task(&task, StopCause::StartFailed(err.to_string())).await;
        task.detach.send_replace(true);
        for cid in task.ids().into_iter().flatten() {
            let options = RemoveContainerOptions { force: true, v: true, link: false };
            if let Err(e) = self.inner.docker.remove_container(&cid, Some(options)).await {
                tracing::warn!(container = %cid, %e, "cannot remove the container of a failed start");
            }
        }
        lock(&self.inner.tasks).remove(&task.id);
        Err(err)
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    fn kind(&self) -> &'static str {
        "docker"
    }

    async fn start(&self, spec: TaskSpec) -> Result<TaskHandle, RuntimeError> {
        self.start_task(spec).await
    }

    async fn stop(&self, handle: &TaskHandle) -> Result<(), RuntimeError> {
        let Some(task) = self.inner.get_or_load(&handle.task_id).await? else {
            return Ok(());
        };
        self.inner.stop_task(&task, StopCause::Requested).await;
        Ok(())
    }

    async fn inspect(&self, handle: &TaskHandle) -> TaskState {
        let task = match self.inner.get_or_load(&handle.task_id).await {
            Ok(Some(t)) => t,
            Ok(None) => return TaskState::Gone,
            Err(e) => {
                // The engine is unreachable or confused: no verdict, rather than a false exit.
                tracing::warn!(task = %handle.task_id, %e, "cannot inspect task");
                return TaskState::Running { health: Health::Unknown };
            }
        };
        match self.inner.state(&task).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(task = %handle.task_id, %e, "cannot inspect task");
                TaskState::Running { health: Health::Unknown }
            }
        }
    }

    async fn list_owned(&self) -> Result<Vec<TaskHandle>, RuntimeError> {
        let mut ids: Vec<String> = self
            .inner
            .containers(None)
            .await?
            .into_iter()
            .filter_map(|c| c.labels?.get(LABEL_TASK).cloned())
            .collect();
        ids.sort();
        ids.dedup();
        let mut handles = Vec::new();
        for id in ids {
            match self.inner.get_or_load(&id).await {
                Ok(Some(t)) => handles.push(t.handle()),
                Ok(None) => {}
                Err(e) => tracing::warn!(task = %id, %e, "skipping a task that cannot be adopted"),
            }
        }
        Ok(handles)
    }

    async fn remove(&self, handle: &TaskHandle) -> Result<(), RuntimeError> {
        let Some(task) = self.inner.get_or_load(&handle.task_id).await? else {
            return Ok(());
        };
        let ids = task.ids();
        for cid in ids.iter().flatten() {
            if self.inner.observe(cid).await?.running {
                return Err(RuntimeError::StillRunning { task_id: task.id.clone() });
            }
        }
        task.detach.send_replace(true);
        // Let the log copies reach the end before the containers (and their logs) go.
        let followers: Vec<_> = lock(&task.log_followers).drain(..).collect();
        for f in followers {
            let _ = tokio::time::timeout(Duration::from_secs(5), f).await;
        }
        for cid in ids.iter().flatten() {
            let options = RemoveContainerOptions { force: false, v: true, link: false };
            match self.inner.docker.remove_container(cid, Some(options)).await {
                Ok(()) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(engine_err(format!("cannot remove container {cid}"), &e)),
            }
        }
        store::remove(&store::stopped_file(&task.dir))?;
        for c in &task.spec.containers {
            store::remove(&logs::cursor_file(&task.dir, &c.name))?;
        }
        lock(&self.inner.tasks).remove(&task.id);
        Ok(())
    }

    fn log_files(&self, task_id: &str) -> Vec<(String, PathBuf)> {
        if !valid_task_id(task_id) {
            return Vec::new();
        }
        let dir = self.inner.task_dir(task_id);
        let known = lock(&self.inner.tasks)
            .get(task_id)
            .map(|t| t.spec.containers.iter().map(|c| c.name.clone()).collect());
        let names: Vec<String> = known.unwrap_or_else(|| log_names_in(&dir));
        names
            .into_iter()
            .map(|n| {
                let p = store::log_file(&dir, &n);
                (n, p)
            })
            .filter(|(_, p)| p.exists())
            .collect()
    }
}

fn log_names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log").map(str::to_string))
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_duplicate_networks_every_process_keeps_the_smallest_id_and_removes_only_its_own() {
        let net = |id: &str, managed| NetworkSummary { id: id.into(), managed };
        assert_eq!(duplicate_networks_to_remove(&[]), Vec::<String>::new());
        assert_eq!(duplicate_networks_to_remove(&[net("b", true)]), Vec::<String>::new());
        let seen_by_one = [net("c", true), net("a", true), net("b", false)];
        let seen_by_other = [net("b", false), net("a", true), net("c", true)];
        assert_eq!(duplicate_networks_to_remove(&seen_by_one), ["c"]);
        assert_eq!(duplicate_networks_to_remove(&seen_by_other), ["c"]);
        // The one kept may be someone else's; ours beside it still go.
        assert_eq!(duplicate_networks_to_remove(&[net("z", true), net("a", false)]), ["z"]);
    }

    #[test]
    fn task_sizes_parse_in_both_ecs_forms() {
        assert_eq!(parse_task_cpu("1024"), Some(1024.0));
        assert_eq!(parse_task_cpu("0.5 vCPU"), Some(512.0));
        assert_eq!(parse_task_memory("2048"), Some(2048.0));
        assert_eq!(parse_task_memory("2 GB"), Some(2048.0));
        assert_eq!(parse_task_memory("lots"), None);
    }

    #[test]
    fn image_references_are_understood() {
        assert!(has_tag_or_digest("nginx:1.27"));
        assert!(has_tag_or_digest("localhost:5000/app@sha256:abc"));
        assert!(!has_tag_or_digest("localhost:5000/app"));
        assert!(!has_tag_or_digest("nginx"));
        assert_eq!(registry_of("nginx"), "docker.io");
        assert_eq!(registry_of("library/nginx:1"), "docker.io");
        assert_eq!(registry_of("localhost:5000/app"), "localhost:5000");
        assert_eq!(registry_of("registry.example.com/team/app:2"), "registry.example.com");
    }
}
