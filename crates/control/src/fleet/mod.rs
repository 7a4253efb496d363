//! The data plane on every node of a swarm (`docs/swarm.md`), as the control plane drives it.
//!
//! Tables are **pushed**, as to the manager's own data plane: the control plane knows the
//! version it must see acknowledged, and each instance is a task of its own here
//! ([`instance_loop`]), so a node that does not answer is retried in the background and never
//! holds up another node or the next routing change: a rollback reaches every answering node at
//! once. An instance that starts (a new node, a restarted container) serves nothing and is sent
//! the current table as soon as it answers. Health and metrics are read from every answering
//! instance and merged (`decide`); the admin API of each instance needs the installation's token.

pub mod decide;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use routes::{HealthReport, MetricsSnapshot, RouteTable};
use runtime::SwarmRuntime;
use runtime::swarm::{DataPlaneNode, DataPlaneSpec};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

pub use decide::InstanceView;

/// How often an instance is asked for its health (and so whether it needs the table).
const POLL: Duration = Duration::from_millis(200);
/// How often the swarm is asked which nodes there are, and the service is checked.
const DISCOVER: Duration = Duration::from_secs(2);
/// An instance that does not connect within this is not answering.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a push waits for every answering instance to acknowledge its table before it is
/// reported failed (and pushed again by the engine).
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// How `cutover up` runs the data plane on the swarm's nodes.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// Where the image with `/cutover` the nodes run comes from.
    pub image: LbImage,
    /// The admin port published on every node (`--swarm-lb-admin-port`).
    pub admin_port: u16,
    pub threads: usize,
    pub network: String,
}

/// Where the image of the nodes' load balancer comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LbImage {
    /// `--swarm-lb-image`: run this image, as it is.
    Given(String),
    /// `--swarm-registry`: made from this very executable and pushed to this registry the
    /// first time a load balancer must run on the nodes (`runtime::swarm::lb_image`).
    Publish { registry: String },
    /// Neither: a swarm service's load balancer cannot run; `cutover status` says what to do.
    Unnamed,
}

/// Why the nodes cannot run a load balancer when no image or registry is named.
pub const NO_REGISTRY: &str = "a `runtime: swarm` service has a load balancer, which runs on \
     every node of the swarm from an image of cutover that every node pulls, and no registry is \
     named: restart `cutover up` with `--swarm-registry HOST:PORT` (a registry every node \
     reaches; cutover builds the image from its own executable and pushes it there), or with \
     `--swarm-lb-image` naming an image you built";

/// The data plane on every node; cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

struct Inner {
    swarm: Arc<SwarmRuntime>,
    config: FleetConfig,
    token: String,
    http: reqwest::Client,
    /// The swarm's half of the latest table.
    wanted: watch::Sender<Option<Arc<RouteTable>>>,
    /// By node name.
    instances: Mutex<BTreeMap<String, Instance>>,
    /// Why the service could not be made to run, for `cutover status`.
    service_error: Mutex<Option<String>>,
}

struct Instance {
    view: InstanceView,
    health: Option<HealthReport>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The token file's content: the admin token, kept across restarts of `cutover up` so that it
/// adopts the instances it started.
#[derive(Serialize, Deserialize)]
struct TokenFile {
    token: String,
}

/// The installation's admin token for the nodes' data plane (`DATA_DIR/lb/cluster-token.json`,
/// mode 0600), made on first use.
pub fn token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("lb").join("cluster-token.json");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(file) = serde_json::from_str::<TokenFile>(&text)
    {
        return Ok(file.token);
    }
    std::fs::create_dir_all(data_dir.join("lb"))?;
    let token = crate::generate_token();
    let text = serde_json::to_string(&TokenFile { token: token.clone() })?;
    crate::write_private(&path, text.as_bytes())
        .with_context(|| format!("keeping the data plane's token in {}", path.display()))?;
    Ok(token)
}

impl Fleet {
    /// Starts following the swarm's nodes; the service itself is made once a table has
    /// listeners for the nodes.
    pub fn start(swarm: Arc<SwarmRuntime>, config: FleetConfig, token: String) -> Fleet {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy()
            .build()
            .expect("invariant: a plain HTTP client always builds");
        let fleet = Fleet {
            inner: Arc::new(Inner {
                swarm,
                config,
                token,
                http,
                wanted: watch::channel(None).0,
                instances: Mutex::new(BTreeMap::new()),
                service_error: Mutex::new(None),
            }),
        };
        tokio::spawn(discover(Arc::downgrade(&fleet.inner)));
        fleet
    }

    /// Hands every instance the swarm's half of a table; returns at once.
    pub fn push(&self, table: RouteTable) {
        self.inner.wanted.send_replace(Some(Arc::new(table)));
    }

    /// Waits until every answering instance serves `version` (see [`decide::applied`]), for at
    /// most [`APPLY_WAIT`]; instances that do not answer are not waited for.
    pub async fn wait_applied(&self, version: u64) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + APPLY_WAIT;
        loop {
            let views = self.views();
            if views.iter().all(|i| !i.answering) || decide::applied(&views, version) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let behind: Vec<String> = views
                    .iter()
                    .filter(|i| i.answering && i.acknowledged != Some(version))
                    .map(|i| i.node.clone())
                    .collect();
                return Err(format!(
                    "the load balancers of {} have not acknowledged routing table v{version} \
                     within {}s",
                    behind.join(", "),
                    APPLY_WAIT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What each node's instance has acknowledged, by node name.
    pub fn views(&self) -> Vec<InstanceView> {
        let instances = self.inner.instances.lock().unwrap_or_else(|p| p.into_inner());
        instances.values().map(|i| i.view.clone()).collect()
    }

    /// Why the data plane's service could not be made to run, if it could not.
    pub fn service_error(&self) -> Option<String> {
        self.inner.service_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the nodes serve target groups whose health only they report while none of them
    /// has reported yet (after a start, before the first node answers): a report without those
    /// groups would read as their having no targets at all, and fail a green that is healthy.
    pub fn awaiting_node_health(&self) -> bool {
        let serves =
            self.inner.wanted.borrow().as_ref().is_some_and(|t| !t.target_groups.is_empty());
        serves && self.health().is_empty()
    }

    /// The latest health report of every answering instance, by node name.
    pub fn health(&self) -> Vec<(String, HealthReport)> {
        let instances = self.inner.instances.lock().unwrap_or_else(|p| p.into_inner());
        instances
            .iter()
            .filter(|(_, i)| i.view.answering)
            .filter_map(|(node, i)| Some((node.clone(), i.health.clone()?)))
            .collect()
    }

    /// The metrics of every answering instance, read now, by node name.
    pub async fn metrics(&self) -> Vec<(String, MetricsSnapshot)> {
        let answering: Vec<(String, SocketAddr)> =
            self.views().into_iter().filter(|i| i.answering).map(|i| (i.node, i.admin)).collect();
        let reads = answering.into_iter().map(|(node, admin)| async move {
            let read = self.inner.get::<MetricsSnapshot>(admin, "/v1/metrics").await;
            read.map(|m| (node, m)).map_err(|err| warn!("reading a node's metrics: {err:#}"))
        });
        futures_util::future::join_all(reads).await.into_iter().flatten().collect()
    }

    /// Has every answering node's load balancer check `cluster` (the swarm's half of a new
    /// table) without applying it: refused when one refuses it, naming the node; a node that
    /// does not answer is only noted (logged), never waited for. Refused too when the nodes
    /// need a load balancer and no image or registry was named to run one from.
    pub async fn validate(&self, cluster: &RouteTable) -> Result<(), String> {
        if self.inner.config.image == LbImage::Unnamed
            && !decide::listener_ports(cluster).is_empty()
        {
            return Err(NO_REGISTRY.to_string());
        }
        let instances = self.views();
        let checks = instances.into_iter().map(|i| async move {
            let check = if i.answering {
                self.inner.check_routes(i.admin, cluster).await
            } else {
                decide::NodeCheck::Silent(i.error.unwrap_or_else(|| "not answering".into()))
            };
            (i.node, check)
        });
        let checks = futures_util::future::join_all(checks).await;
        for note in decide::judge_node_checks(&checks)? {
            warn!("{note}");
        }
        Ok(())
    }

    /// Removes the service and its secret (`cutover down`).
    pub async fn remove(&self) -> anyhow::Result<()> {
        self.inner.instances.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.inner.swarm.remove_data_plane().await?;
        Ok(())
    }
}

impl Inner {
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        admin: SocketAddr,
        path: &str,
    ) -> anyhow::Result<T> {
        Ok(self
            .http
            .get(format!("http://{admin}{path}"))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// One node's check of a table (`POST /v1/routes/validate`, which applies nothing).
    async fn check_routes(&self, admin: SocketAddr, table: &RouteTable) -> decide::NodeCheck {
        let sent = self
            .http
            .post(format!("http://{admin}/v1/routes/validate"))
            .bearer_auth(&self.token)
            .json(table)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(err) => return decide::NodeCheck::Silent(format!("{err:#}")),
        };
        let status = response.status();
        if status.is_success() {
            return decide::NodeCheck::Valid;
        }
        let body = response.text().await.unwrap_or_default();
        let reason = serde_json::from_str::<routes::AdminError>(&body).map_or(body, |e| e.error);
        if status.is_server_error() && reason.is_empty() {
            return decide::NodeCheck::Silent(format!("{status}"));
        }
        decide::NodeCheck::Refused(reason)
    }

    async fn put_routes(&self, admin: SocketAddr, table: &RouteTable) -> anyhow::Result<()> {
        let response = self
            .http
            .put(format!("http://{admin}/v1/routes"))
            .bearer_auth(&self.token)
            .json(table)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            anyhow::bail!("refused routing table v{}: {status} {body}", table.version);
        }
        Ok(())
    }

    fn update(&self, node: &str, change: impl FnOnce(&mut Instance)) {
        let mut instances = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(instance) = instances.get_mut(node) {
            change(instance);
        }
    }
}

/// Follows the swarm's workers, an instance task for each, and keeps the service running what
/// the latest table needs (its listener ports). Ends when the fleet is dropped. Nodes are
/// followed only once the service runs: an installation whose swarm services have no load
/// balancer has no instance to wait for or to report.
async fn discover(inner: std::sync::Weak<Inner>) {
    let mut ensured: Option<BTreeSet<u16>> = None;
    let mut image: Option<String> = None;
    loop {
        let Some(fleet) = inner.upgrade() else { return };
        let wanted = fleet.wanted.borrow().clone();
        let ports = wanted.as_deref().map(decide::listener_ports).filter(|p| !p.is_empty());
        if let Some(ports) = ports
            && ensured.as_ref() != Some(&ports)
        {
            let result = match image.clone() {
                Some(known) => Ok(known),
                None => fleet.image().await,
            };
            let result = match result {
                Ok(found) => {
                    image = Some(found.clone());
                    fleet.ensure_service(found, ports.clone()).await
                }
                Err(error) => Err(error),
            };
            if let Err(error) = &result {
                warn!("{error}");
            } else {
                ensured = Some(ports);
            }
            *fleet.service_error.lock().unwrap_or_else(|p| p.into_inner()) = result.err();
        }
        if ensured.is_some() {
            match fleet.swarm.data_plane_nodes().await {
                Ok(nodes) => follow_nodes(&fleet, nodes),
                Err(err) => warn!("listing the swarm's nodes for the data plane: {err}"),
            }
        }
        drop(fleet);
        tokio::time::sleep(DISCOVER).await;
    }
}

impl Inner {
    /// The image the nodes run, made and pushed first when `cutover up` named a registry.
    async fn image(&self) -> Result<String, String> {
        match &self.config.image {
            LbImage::Given(image) => Ok(image.clone()),
            LbImage::Publish { registry } => self
                .swarm
                .publish_data_plane_image(registry)
                .await
                .map_err(|e| format!("the data plane on the nodes: {e}")),
            LbImage::Unnamed => Err(format!("the data plane on the nodes: {NO_REGISTRY}")),
        }
    }

    /// The global service runs `image` with `ports` published.
    async fn ensure_service(&self, image: String, ports: BTreeSet<u16>) -> Result<(), String> {
        let spec = DataPlaneSpec {
            image,
            listener_ports: ports,
            admin_port: self.config.admin_port,
            token: self.token.clone(),
            network: self.config.network.clone(),
            threads: self.config.threads,
        };
        self.swarm
            .ensure_data_plane(&spec)
            .await
            .map_err(|e| format!("the data plane on the nodes: {e}"))
    }
}

/// Starts an instance task for each new node, and ends the tasks of nodes that left the swarm.
fn follow_nodes(fleet: &Arc<Inner>, nodes: Vec<DataPlaneNode>) {
    let mut instances = fleet.instances.lock().unwrap_or_else(|p| p.into_inner());
    let names: BTreeSet<&str> = nodes.iter().map(|n| n.hostname.as_str()).collect();
    instances.retain(|name, _| names.contains(name.as_str()));
    for node in &nodes {
        let admin = SocketAddr::new(node.addr, fleet.config.admin_port);
        if instances.get(&node.hostname).is_some_and(|i| i.view.admin == admin) {
            continue;
        }
        info!(node = %node.hostname, %admin, "following the node's load balancer");
        let view = InstanceView {
            node: node.hostname.clone(),
            admin,
            acknowledged: None,
            answering: false,
            error: None,
        };
        let task = tokio::spawn(instance_loop(Arc::downgrade(fleet), node.hostname.clone(), admin));
        instances.insert(node.hostname.clone(), Instance { view, health: None, task });
    }
}

/// One node's instance: reads its health every [`POLL`], and sends it the wanted table as soon
/// as there is a new one, or as soon as it answers serving another version.
async fn instance_loop(inner: std::sync::Weak<Inner>, node: String, admin: SocketAddr) {
    let Some(mut wanted) = inner.upgrade().map(|f| f.wanted.subscribe()) else { return };
    let mut served: Option<u64> = None;
    loop {
        let table = wanted.borrow_and_update().clone();
        let Some(fleet) = inner.upgrade() else { return };
        if let Some(table) = table.filter(|t| decide::needs_push(served, t.version)) {
            let version = table.version;
            // What it serves now is read from its health just below.
            let pushed = fleet.put_routes(admin, &table).await;
            fleet.update(&node, |i| match pushed {
                Ok(()) => {
                    i.view.acknowledged = Some(version);
                    i.view.answering = true;
                    i.view.error = None;
                }
                Err(err) => {
                    i.view.answering = false;
                    i.view.error = Some(format!("{err:#}"));
                }
            });
        }
        let health = fleet.get::<HealthReport>(admin, "/v1/health").await;
        served = health.as_ref().ok().map(|h| h.version);
        fleet.update(&node, |i| match health {
            Ok(report) => {
                i.view.answering = true;
                i.view.acknowledged = Some(report.version);
                i.view.error = None;
                i.health = Some(report);
            }
            Err(err) => {
                i.view.answering = false;
                i.view.error = Some(format!("{err:#}"));
                i.health = None;
            }
        });
        drop(fleet);
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(POLL) => {}
        }
    }
}
