//! cutover's data plane: an Application Load Balancer on one machine.
//!
//! It serves the [`routes::RouteTable`] the control plane sends to its admin API: listeners
//! (HTTP, HTTPS with HTTP/2 by ALPN), weighted forwards over target groups, fixed responses and
//! redirects, health checks with ALB's states and reason codes, draining on deregistration,
//! WebSocket pass-through, and metrics. A new table replaces the old one atomically; a request
//! picks its route once and is never disturbed by a later change.
//!
//! Layout: [`state`] applies tables, [`listener`] accepts connections and hands them to
//! [`workers`]; [`h1`] serves HTTP/1 connections and [`forward`] HTTP/2 requests (through
//! hyper), both routing with [`forward::route`] and reaching targets through [`upstream`]
//! ([`fields`] names the header fields that never cross);
//! [`mirror`] sends copies of requests to a mirror group; [`tunnel`] carries upgraded connections; [`target`] holds per-target state and pools,
//! [`health`] checks targets, [`admin`] serves the admin API, [`metrics`] counts; [`sync`] has the
//! padding and waking tools that keep workers from sharing cache lines.

mod acme;
mod admin;
mod clock;
mod conn_io;
mod fields;
mod forward;
#[doc(hidden)]
pub mod fuzzing;
mod h1;
mod health;
mod limits;
mod listener;
mod metrics;
mod mirror;
mod state;
mod sync;
mod target;
mod tls;
mod tunnel;
mod upstream;
mod workers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::state::Shared;
pub use crate::state::{InvalidTable, validate as validate_table};
use crate::target::lock;
pub use crate::tls::{TlsError, acceptor as tls_acceptor};

/// How long a stopping data plane lets open requests finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Admin API address; a loopback address unless `admin_token` is set.
    pub admin_addr: SocketAddr,
    /// When set, every admin request must carry `Authorization: Bearer <token>`, and the admin
    /// API may listen beyond loopback (a data plane on every node of a Swarm cluster, whose
    /// control plane pushes tables over the cluster's network).
    pub admin_token: Option<String>,
    /// The last applied RouteTable is persisted here (atomically: write tmp + rename) and loaded
    /// at start.
    pub state_file: Option<PathBuf>,
    /// Worker threads serving client connections, each with its own single-threaded runtime
    /// (see `workers`); at least one.
    pub worker_threads: usize,
}

/// A running data plane started with [`start`].
pub struct ProxyHandle {
    shared: Arc<Shared>,
    admin_addr: SocketAddr,
    admin_stop: watch::Sender<bool>,
}

/// Serves with `worker_threads` workers until SIGTERM/SIGINT.
pub fn run_blocking(config: ProxyConfig) -> anyhow::Result<()> {
    // The caller's thread runs the admin API, health checks and accepting; the workers serve
    // connections on their own threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .thread_name("cutover-lb")
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    runtime.block_on(async move {
        let handle = start(config).await?;
        wait_for_signal().await?;
        tracing::info!("stopping: closing listeners and letting open requests finish");
        handle.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Starts the workers and the admin API on the current runtime; returns when listening.
pub async fn start(config: ProxyConfig) -> anyhow::Result<ProxyHandle> {
    if !config.admin_addr.ip().is_loopback() && config.admin_token.is_none() {
        anyhow::bail!(
            "admin address {} is not a loopback address; without --admin-token-file the admin \
             API has no authentication, so bind it to 127.0.0.1 or [::1], or give it a token",
            config.admin_addr
        );
    }
    if config.admin_token.as_deref().is_some_and(|t| t.len() < admin::MIN_TOKEN_LEN) {
        anyhow::bail!(
            "the admin token is shorter than {} characters; use a long random one",
            admin::MIN_TOKEN_LEN
        );
    }
    clock::ensure_started();
    // A load balancer holds two descriptors per proxied connection; the default soft limit
    // (often 1024) would cap it far below what the machine allows.
    let nofile = limits::raise_file_limit();
    let shared = Arc::new(Shared::new(config.state_file.clone(), config.worker_threads, nofile)?);
    if let Some(path) = &config.state_file
        && let Some(table) = state::read_state(path)?
    {
        let version = table.version;
        state::apply(&shared, table, false).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot serve the table saved in {} (version {version}): {}",
                path.display(),
                e.message
            )
        })?;
    }
    state::spawn_certificate_reloader(shared.clone());
    let admin = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("cannot listen on admin address {}", config.admin_addr))?;
    let admin_addr = admin.local_addr()?;
    let (admin_stop, stop_rx) = watch::channel(false);
    admin::spawn(shared.clone(), admin, config.admin_token.map(Arc::from), stop_rx);
    tracing::info!(%admin_addr, "load balancer admin API listening");
    Ok(ProxyHandle { shared, admin_addr, admin_stop })
}

impl ProxyHandle {
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Sets the most client connections the data plane holds at once: by default, and at most,
    /// what its open-file limit allows (see `limits::cap_for_file_limit`).
    pub fn limit_connections(&self, max: u64) {
        self.shared.limits.set_cap(max);
    }

    /// Stops accepting, lets open requests finish (up to 10 s), then closes everything.
    pub async fn shutdown(self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        self.admin_stop.send_replace(true);
        let listeners: Vec<_> = lock(&self.shared.listeners).drain().map(|(_, l)| l).collect();
        for l in &listeners {
            l.stop.send_replace(true);
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while self.shared.client_conns.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let groups: Vec<_> =
            std::mem::take(&mut *lock(&self.shared.groups)).into_values().collect();
        for g in groups {
            for t in g.all_targets() {
                t.close();
            }
        }
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || shared.workers.stop_and_join()).await;
    }
}

impl Drop for ProxyHandle {
    /// A handle dropped without `shutdown` (a failed test, say) still ends its worker threads,
    /// which would otherwise live on with the connections they serve.
    fn drop(&mut self) {
        self.shared.workers.stop();
    }
}

/// Resolves once a stop/close flag turns true (or its sender is gone). Wraps `wait_for`, whose
/// result holds a lock guard that must not live inside a `select!` of a spawned task.
pub(crate) async fn flag_set(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
