//! cutover's control plane.
//!
//! [`serve`] runs it: the HTTP API, and the engine loop ([`engine`]) that owns all state changes.
//! The data plane runs as its own process ([`lb`]); tasks run under a [`runtime::Runtime`].
//! Everything is stored in SQLite ([`store`]) before it is acted upon, so the process can be
//! killed at any moment and started again.

pub mod access;
pub mod api;
mod apply;
pub mod certificates;
mod clock;
pub mod data_dir;
mod declared;
mod deployment;
mod documents;
pub mod engine;
mod error;
pub mod fleet;
mod hooks;
pub mod http;
pub mod judging;
pub mod lb;
pub mod monitor;
mod narrate;
mod outage;
pub mod persisted;
pub mod pipeline_stream;
mod pollers;
pub mod preview;
mod routing;
pub mod service_stream;
mod state;
pub mod stream;
pub mod target_group_stream;
mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

pub use error::ApiError;
pub use tls::{ApiTls, Peer};

/// How to start the control plane (`cutover up`).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// Required on every request when set; generated when the API listens beyond loopback.
    pub token: Option<String>,
    /// Serve the API over HTTPS with this certificate and key.
    pub tls: Option<ApiTls>,
    /// Admin address of the data plane, when one must be started (port 0: any free port).
    pub lb_admin: SocketAddr,
    pub lb_threads: usize,
    /// A JSON file of registry credentials for image pulls:
    /// `[{"server": "registry.example.com:5000", "username": "…", "password": "…"}]`.
    pub registry_credentials: Option<PathBuf>,
    /// Single sign-on through an OpenID provider (`cutover login`).
    pub oidc: Option<access::oidc::OidcConfig>,
    /// The console's public address behind a reverse proxy or a DNS name (`--console-url`).
    pub console_url: Option<access::console_sso::ConsoleUrl>,
    /// The web console's routes, served beside the API behind the same authorization layer
    /// (the `console` crate, which depends on this one, hands them in).
    pub console: Option<fn(http::AppState) -> axum::Router>,
    /// The load balancer on every node of the swarm, for `runtime: swarm` services with a load
    /// balancer; `None`: such services have none to serve them.
    pub swarm_lb: Option<fleet::FleetConfig>,
}

#[derive(Deserialize)]
struct CredentialEntry {
    server: String,
    username: String,
    password: String,
}

/// Reads the registry credentials file. Its content is never logged.
fn read_credentials(path: &std::path::Path) -> anyhow::Result<Vec<runtime::RegistryCredential>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading registry credentials {}", path.display()))?;
    let entries: Vec<CredentialEntry> = serde_json::from_str(&text).map_err(|err| {
        anyhow::anyhow!(
            "{}: line {} column {}: expected a JSON list of {{\"server\", \"username\", \"password\"}}",
            path.display(),
            err.line(),
            err.column()
        )
    })?;
    Ok(entries
        .into_iter()
        .map(|e| runtime::RegistryCredential {
            server: e.server,
            username: e.username,
            password: e.password,
        })
        .collect())
}

/// What `cutover up` records so that the CLI and a later `cutover up` find the running pieces.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiRecord {
    pub url: String,
    pub pid: u32,
}

pub fn api_record_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("api.json")
}

/// Runs the control plane until it is told to shut down (Ctrl-C, SIGTERM or `cutover down`).
/// Ctrl-C stops only the control plane: the data plane and the tasks keep serving.
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let tightened = data_dir::prepare(&config.data_dir)?;
    if tightened > 0 {
        warn!(
            "{tightened} files and directories under {} were readable by other users; they are \
             private now (0700 directories, 0600 files), as cutover keeps its data directory",
            config.data_dir.display()
        );
    }
    let lock = lock_data_dir(&config.data_dir)?;
    let store = Arc::new(
        store::Store::open(&config.data_dir.join("state.db"))
            .with_context(|| format!("opening {}", config.data_dir.join("state.db").display()))?,
    );

    let (runtimes, swarm, mut warnings) = start_runtimes(&config).await?;

    let (lb, adopted) =
        lb::ensure_running(&config.data_dir, config.lb_admin, config.lb_threads).await?;
    info!(admin = %lb.admin_addr(), adopted, "load balancer ready");
    let lb = lb.with_fleet(start_fleet(&config, swarm, &mut warnings)?);

    let (listener, url, token) = bind_api(&config).await?;

    let shared = Arc::new(engine::Shared::default());
    let (tx, rx) = mpsc::channel(1024);
    let mut engine = engine::Engine::new(
        store.clone(),
        runtimes.clone(),
        lb.clone(),
        shared.clone(),
        engine::EngineSettings {
            api_url: url.clone(),
            data_dir: config.data_dir.clone(),
            lb_threads: config.lb_threads,
        },
        tx.clone(),
    );
    // Pipelines live in the engine's loop: one owner, one clock for both.
    let (ci, pipelines_shell) = pipelines::Pipelines::hosted(
        pipelines::PipelinesConfig {
            data_dir: config.data_dir.join("pipelines"),
            api_url: url.clone(),
            // The authorization layer around both routers checks every credential.
            token: None,
        },
        store.clone(),
        pipelines::LoopSender::new(tx.clone()),
    )
    .map_err(|err| anyhow::anyhow!("starting pipelines: {err}"))?;
    engine.pipelines = Some(pipelines_shell);
    engine.recover().await.context("recovering state")?;
    let engine_done = tokio::spawn(engine.run(rx));
    certificates::spawn(store.clone(), shared.clone());

    let status = api::StatusView {
        version: env!("CARGO_PKG_VERSION").to_string(),
        data_dir: config.data_dir.display().to_string(),
        api: url.clone(),
        lb_admin: lb.admin_addr().to_string(),
        routes_version: 0,
        runtimes: runtimes.keys().cloned().collect(),
        warnings,
        node_load_balancers: Vec::new(),
    };
    let state = http::AppState {
        store,
        shared: shared.clone(),
        tx,
        token,
        oidc: config
            .oidc
            .clone()
            .map(access::oidc::Oidc::new)
            .transpose()
            .context("single sign-on's HTTP client")?
            .map(Arc::new),
        console_url: config.console_url.clone(),
        status: Arc::new(status),
        runtimes: Arc::new(runtimes),
        lb,
    };
    info!(api = %url, data_dir = %config.data_dir.display(), "cutover is up");
    let down = shared.clone();
    let down_fleet = state.lb.fleet().cloned();
    let data_dir = config.data_dir.clone();
    let mut others = pipelines::router(&ci);
    if let Some(console) = config.console {
        others = others.merge(console(state.clone()));
    }
    let app = http::authorized(state, others).into_make_service_with_connect_info::<tls::Peer>();
    let stopped = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate() => {}
            _ = down.shutdown.notified() => {
                // `cutover down`: the tasks are stopped; stop the data plane too.
                if let Some(record) = lb::read_record(&data_dir) {
                    stop_pid(record.pid);
                }
                if let Some(fleet) = down_fleet.as_ref()
                    && let Err(err) = fleet.remove().await
                {
                    warn!("removing the load balancers of the swarm's nodes: {err:#}");
                }
            }
        }
    };
    match &config.tls {
        Some(acceptor) => {
            let listener = tls::TlsListener::new(listener, tls::http1_only(&acceptor.0))?;
            axum::serve(listener, app).with_graceful_shutdown(stopped).await?
        }
        None => axum::serve(listener, app).with_graceful_shutdown(stopped).await?,
    }
    engine_done.abort();
    let _ = std::fs::remove_file(api_record_path(&config.data_dir));
    drop(lock);
    Ok(())
}

/// The load balancer on every node of the swarm, whenever the engine manages a swarm (its image
/// is made, or found missing, only once a swarm service has a load balancer); a warning for
/// `cutover status` when an image or registry was named but the engine manages no swarm.
fn start_fleet(
    config: &ServerConfig,
    swarm: Option<Arc<runtime::SwarmRuntime>>,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Option<fleet::Fleet>> {
    match (swarm, &config.swarm_lb) {
        (Some(swarm), Some(fleet_config)) => {
            let token = fleet::token(&config.data_dir)?;
            Ok(Some(fleet::Fleet::start(swarm, fleet_config.clone(), token)))
        }
        (None, Some(fleet_config)) if fleet_config.image != fleet::LbImage::Unnamed => {
            warnings.push(
                "--swarm-lb-image or --swarm-registry is set but this Docker Engine is no Swarm \
                 manager: no load balancer runs on the swarm's nodes"
                    .to_string(),
            );
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// One control plane per data directory: two would fight over the same tasks and routes. The
/// lock is released by the OS when the process dies, even by `kill -9`.
fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    try_lock_data_dir(data_dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "another `cutover up` is already running for {}; stop it first (`cutover down`) or \
             use another --data-dir",
            data_dir.display()
        )
    })
}

/// The data directory's lock, or `None` while a `cutover up` holds it: whoever holds it owns the
/// directory's tasks and load balancer. `cutover down` takes it before stopping what a control
/// plane that died left behind, so that it never stops a running one's (nor races one starting).
pub fn try_lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<Option<std::fs::File>> {
    let lock_path = data_dir.join("control.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    Ok(lock.try_lock().is_ok().then_some(lock))
}

type Runtimes = BTreeMap<String, Arc<dyn runtime::Runtime>>;

/// The process runtime, and the Docker runtime when the engine answers; a Docker Engine that does
/// not answer is a warning for `cutover status`, not a failure. The swarm runtime also on its
/// own, for the load balancer on the swarm's nodes.
async fn start_runtimes(
    config: &ServerConfig,
) -> anyhow::Result<(Runtimes, Option<Arc<runtime::SwarmRuntime>>, Vec<String>)> {
    let mut warnings = Vec::new();
    let mut runtimes: Runtimes = BTreeMap::new();
    let process = runtime::ProcessRuntime::new(config.data_dir.join("tasks"))
        .map_err(|err| anyhow::anyhow!("starting the process runtime: {err}"))?;
    runtimes.insert("process".into(), Arc::new(process));
    let credentials = match &config.registry_credentials {
        Some(path) => read_credentials(path)?,
        None => Vec::new(),
    };
    match runtime::DockerRuntime::connect(config.data_dir.join("docker")).await {
        Ok(docker) => {
            runtimes.insert("docker".into(), Arc::new(docker.with_credentials(credentials)));
        }
        Err(err) => {
            let message = format!(
                "docker runtime unavailable ({err}); services with `runtime: docker` will not start \
                 tasks until the Docker Engine answers (set DOCKER_HOST if it is not at \
                 unix:///var/run/docker.sock, then restart `cutover up`). Services on the process \
                 runtime are not affected."
            );
            warn!("{message}");
            warnings.push(message);
        }
    }
    // The swarm runtime only where this engine manages a swarm; otherwise it says what to do
    // when a service asks for it, and nothing else changes.
    let mut swarm_runtime = None;
    match runtime::SwarmRuntime::connect(config.data_dir.join("docker")).await {
        Ok(swarm) => {
            let swarm = Arc::new(swarm);
            runtimes.insert("swarm".into(), swarm.clone());
            swarm_runtime = Some(swarm);
        }
        Err(err) if runtimes.contains_key("docker") => {
            info!("swarm runtime unavailable: {err}");
        }
        Err(_) => {}
    }

    Ok((runtimes, swarm_runtime, warnings))
}

/// Binds the API, decides its token (required beyond loopback) and records where it answers.
async fn bind_api(
    config: &ServerConfig,
) -> anyhow::Result<(tokio::net::TcpListener, String, Option<String>)> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the API to {}", config.listen))?;
    let local = listener.local_addr()?;
    let token = match (&config.token, local.ip().is_loopback()) {
        (Some(token), _) => Some(token.clone()),
        (None, true) => None,
        (None, false) => {
            let token = generate_token();
            let path = config.data_dir.join("token");
            write_private(&path, token.as_bytes())?;
            warn!(
                "the API listens on {local}, beyond loopback: it requires the token in {}",
                path.display()
            );
            Some(token)
        }
    };
    let url = format!(
        "{}://{}",
        if config.tls.is_some() { "https" } else { "http" },
        if local.ip().is_unspecified() {
            SocketAddr::new([127, 0, 0, 1].into(), local.port())
        } else {
            local
        }
    );
    lb::write_atomically(
        &api_record_path(&config.data_dir),
        serde_json::to_string(&ApiRecord { url: url.clone(), pid: std::process::id() })?.as_bytes(),
    )?;

    Ok((listener, url, token))
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// Sends SIGTERM to a process we started (the data plane), which then shuts down gracefully.
#[allow(unsafe_code)]
pub fn stop_pid(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill(2) has no memory-safety preconditions; a stale pid at worst signals nothing
    // or, if reused, a process of our own user that the caller recorded.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

fn generate_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}
