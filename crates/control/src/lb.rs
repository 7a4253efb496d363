//! The control plane's side of the data plane: its admin-API client, and starting or adopting the
//! `cutover lb` process.
//!
//! The data plane is a separate process on purpose: it keeps serving its last routing table while
//! the control plane is down or restarting. `cutover up` adopts a data plane that already answers
//! on the admin address recorded in the data directory instead of starting a second one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use routes::{Applied, HealthReport, RouteTable};
use serde::{Deserialize, Serialize};

/// What `cutover up` records about the data plane it started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LbRecord {
    pub admin_addr: SocketAddr,
    pub pid: u32,
}

/// What [`LbClient::health_since`] found.
pub enum HealthAnswer {
    /// The report is the one last seen.
    Unchanged,
    /// A report other than the one last seen, and its ETag for the next question.
    Changed { report: HealthReport, etag: Option<String> },
}

/// How long the data plane may take to check a table for `apply`: longer than the client's 5 s,
/// which a table of 10,000 targets outgrew on a loaded machine (the check waits for a table
/// being applied, then parses, validates and binds); `apply` is answered only after it anyway.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct LbClient {
    http: reqwest::Client,
    base: String,
    admin_addr: SocketAddr,
    /// The data plane on every node of the swarm, beside this one, when `cutover up` runs it.
    fleet: Option<crate::fleet::Fleet>,
}

#[derive(Deserialize)]
struct RoutesAnswer {
    version: u64,
}

impl LbClient {
    pub fn new(admin_addr: SocketAddr) -> LbClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(1))
            .no_proxy()
            .build()
            .expect("invariant: a plain HTTP client always builds");
        LbClient { http, base: format!("http://{admin_addr}"), admin_addr, fleet: None }
    }

    /// This data plane and the one on every node of the swarm.
    pub fn with_fleet(self, fleet: Option<crate::fleet::Fleet>) -> LbClient {
        LbClient { fleet, ..self }
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn fleet(&self) -> Option<&crate::fleet::Fleet> {
        self.fleet.as_ref()
    }

    /// The routing-table version the data plane serves, or an error when it does not answer.
    pub async fn served_version(&self) -> anyhow::Result<u64> {
        let answer: RoutesAnswer = self
            .http
            .get(format!("{}/v1/routes", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(answer.version)
    }

    /// Sends a whole table; returns once the data plane serves it.
    pub async fn put_routes(&self, table: &RouteTable) -> anyhow::Result<Applied> {
        let response = self.http.put(format!("{}/v1/routes", self.base)).json(table).send().await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("the load balancer refused routing table v{}: {status} {body}", table.version);
        }
        Ok(response.json().await?)
    }

    /// Asks the data plane whether it would serve `table` (it is valid, its certificates load,
    /// its new listeners' ports are free) without applying it: the check `apply` makes before
    /// it stores a table, which the engine pushes only once it is stored.
    pub async fn validate_routes(&self, table: &RouteTable) -> anyhow::Result<()> {
        let url = format!("{}/v1/routes/validate", self.base);
        let request = self.http.post(url).timeout(CHECK_TIMEOUT).json(table);
        let response = request.send().await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let reason =
                serde_json::from_str::<routes::AdminError>(&body).map_or(body, |e| e.error);
            bail!("{status}: {reason}");
        }
        Ok(())
    }

    /// The data plane's health report, unless it is still the one whose ETag is `seen`: an
    /// unchanged report of thousands of targets is then neither sent nor parsed.
    pub async fn health_since(&self, seen: Option<&str>) -> anyhow::Result<HealthAnswer> {
        let mut request = self.http.get(format!("{}/v1/health", self.base));
        if let Some(seen) = seen {
            request = request.header(reqwest::header::IF_NONE_MATCH, seen);
        }
        let answer = request.send().await?;
        if answer.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(HealthAnswer::Unchanged);
        }
        let answer = answer.error_for_status()?;
        let etag = answer
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(HealthAnswer::Changed { report: answer.json().await?, etag })
    }

    /// The data plane's counters by target group, without each target's own.
    pub async fn metrics(&self) -> anyhow::Result<routes::MetricsSnapshot> {
        Ok(self
            .http
            .get(format!("{}/v1/metrics?per_target=false", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// The data plane's cumulative metrics, as JSON (passed through to the API).
    pub async fn metrics_json(&self) -> anyhow::Result<serde_json::Value> {
        Ok(self
            .http
            .get(format!("{}/v1/metrics", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Prometheus text of the data plane.
    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }
}

pub fn record_path(data_dir: &Path) -> PathBuf {
    data_dir.join("lb").join("lb.json")
}

pub fn read_record(data_dir: &Path) -> Option<LbRecord> {
    let text = std::fs::read_to_string(record_path(data_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Finds the data plane of this data directory, or starts one. Returns a client for it.
///
/// `preferred_admin` is used when a new process must be started and no earlier address is
/// recorded; port 0 picks a free port.
pub async fn ensure_running(
    data_dir: &Path,
    preferred_admin: SocketAddr,
    threads: usize,
) -> anyhow::Result<(LbClient, bool)> {
    if let Some(record) = read_record(data_dir) {
        let client = LbClient::new(record.admin_addr);
        if client.served_version().await.is_ok() {
            return Ok((client, true));
        }
    }
    let admin_addr = if preferred_admin.port() == 0 {
        free_loopback_port(preferred_admin)?
    } else {
        preferred_admin
    };
    let lb_dir = data_dir.join("lb");
    std::fs::create_dir_all(&lb_dir).with_context(|| format!("creating {}", lb_dir.display()))?;
    let log_path = lb_dir.join("lb.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let exe =
        std::env::current_exe().context("locating the cutover binary to start `cutover lb`")?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("lb")
        .arg("--admin")
        .arg(admin_addr.to_string())
        .arg("--state-file")
        .arg(lb_dir.join("routes.json"))
        .arg("--threads")
        .arg(threads.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own process group: Ctrl-C on `cutover up` must not take the data plane down with it.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().context("starting the load balancer (`cutover lb`)")?;
    let record = LbRecord { admin_addr, pid: child.id() };
    write_atomically(&record_path(data_dir), serde_json::to_string(&record)?.as_bytes())?;

    let client = LbClient::new(admin_addr);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if client.served_version().await.is_ok() {
            // Not waited for: the data plane outlives us (dropping a std `Child` neither kills
            // nor reaps it). `cutover down` stops it through the recorded pid.
            drop(child);
            return Ok((client, false));
        }
        // A load balancer that could not start says why in its log: say it now, not after
        // the deadline.
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last = log.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("");
            bail!("the load balancer could not start ({status}): {}", last.trim());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "the load balancer did not answer on {admin_addr} within 15s; see {}",
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_loopback_port(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)
        .context("finding a free port for the load balancer's admin API")?;
    Ok(listener.local_addr()?)
}

pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} into place", tmp.display()))?;
    Ok(())
}
