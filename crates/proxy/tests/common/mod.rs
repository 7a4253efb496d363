//! Test support: a proxy started in-process, tiny hyper backends, table builders and a polling
//! `wait_until` (tests wait on conditions with a deadline, never on a fixed sleep).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy::{ProxyConfig, ProxyHandle};
use routes::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::Role;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after `within`.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {within:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An address for a proxy listener: the OS picks a free port, which is then released for the
/// proxy to bind.
/// A free address for a listener the load balancer binds later (see `testkit::free_port`).
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], testkit::free_port()))
}

pub struct Lb {
    pub handle: Option<ProxyHandle>,
    pub admin: SocketAddr,
    pub http: HttpClient,
}

impl Lb {
    pub async fn start(state_file: Option<PathBuf>) -> Lb {
        let handle = proxy::start(ProxyConfig {
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            state_file,
            worker_threads: 2,
            admin_token: None,
        })
        .await
        .expect("proxy starts");
        let admin = handle.admin_addr();
        Lb { handle: Some(handle), admin, http: client() }
    }

    pub async fn shutdown(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }

    pub async fn put(&self, table: &RouteTable) -> (u16, serde_json::Value) {
        let req = Request::put(format!("http://{}/v1/routes", self.admin))
            .body(Full::new(Bytes::from(serde_json::to_vec(table).unwrap())))
            .unwrap();
        let resp = self.http.request(req).await.expect("admin answers");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    /// PUTs a table that must be accepted.
    pub async fn apply(&self, table: &RouteTable) {
        let (status, body) = self.put(table).await;
        assert_eq!(status, 200, "table v{} refused: {body}", table.version);
        assert_eq!(body["version"], table.version);
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let (status, body) = get(&self.http, &format!("http://{}{path}", self.admin)).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    pub async fn health(&self) -> HealthReport {
        self.get_json("/v1/health").await
    }

    pub async fn metrics(&self) -> MetricsSnapshot {
        self.get_json("/v1/metrics").await
    }

    pub async fn target_state(&self, group: &str, addr: SocketAddr) -> Option<TargetHealth> {
        self.health().await.target_groups.get(group)?.iter().find(|t| t.addr == addr).cloned()
    }

    pub async fn wait_state(
        &self,
        group: &str,
        addr: SocketAddr,
        state: TargetState,
        within: Duration,
    ) {
        wait_until(&format!("{addr} in `{group}` is {state:?}"), within, || async {
            self.target_state(group, addr).await.map(|t| t.state) == Some(state)
        })
        .await;
    }
}

pub async fn get(client: &HttpClient, url: &str) -> (u16, String) {
    let resp = client
        .request(Request::get(url).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Fast health-check settings for tests.
pub fn hc(interval_ms: u64) -> HealthCheck {
    HealthCheck {
        enabled: true,
        path: "/health".into(),
        port: None,
        interval_ms,
        timeout_ms: interval_ms.max(50),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        matcher: vec![(200, 299)],
    }
}

pub fn group(targets: &[SocketAddr], health_check: HealthCheck, delay_ms: u64) -> TargetGroup {
    TargetGroup {
        health_check,
        deregistration_delay_ms: delay_ms,
        algorithm: Algorithm::RoundRobin,
        targets: targets.iter().map(|&addr| Target { addr }).collect(),
    }
}

pub fn forward(groups: &[(&str, u16)]) -> Action {
    Action::Forward(ForwardAction::weighted(
        groups
            .iter()
            .map(|(name, weight)| WeightedTargetGroup { name: name.to_string(), weight: *weight })
            .collect(),
    ))
}

pub fn listener(bind: SocketAddr, action: Action) -> Listener {
    Listener {
        bind,
        tls: None,
        action,
        idle_timeout_ms: None,
        limits: ConnectionLimits::default(),
        rules: Vec::new(),
    }
}

pub fn table(
    version: u64,
    listeners: Vec<(&str, Listener)>,
    groups: Vec<(&str, TargetGroup)>,
) -> RouteTable {
    RouteTable {
        version,
        listeners: listeners
            .into_iter()
            .map(|(n, l)| (n.to_string(), l))
            .collect::<BTreeMap<_, _>>(),
        target_groups: groups.into_iter().map(|(n, g)| (n.to_string(), g)).collect(),
    }
}

/// A tiny HTTP backend. `/health` answers `health_status` after `health_delay_ms`;
/// `/slow?ms=N` answers after N ms; `/echo` returns the request headers and body; `/chunks` and
/// `/stream` answer chunked (at once; over 10 s); `/ws` is a WebSocket echo; anything else answers 200 with the backend's name. `hits` counts non-health requests.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    pub hits: Arc<AtomicU64>,
    pub health_checks: Arc<AtomicU64>,
    pub health_status: Arc<AtomicU16>,
    pub health_delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct BackendState {
    name: String,
    hits: Arc<AtomicU64>,
    health_checks: Arc<AtomicU64>,
    health_status: Arc<AtomicU16>,
    health_delay_ms: Arc<AtomicU64>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = BackendState {
            name: name.to_string(),
            hits: Arc::new(AtomicU64::new(0)),
            health_checks: Arc::new(AtomicU64::new(0)),
            health_status: Arc::new(AtomicU16::new(200)),
            health_delay_ms: Arc::new(AtomicU64::new(0)),
        };
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(backend_handle(s, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Backend {
            addr,
            name: name.into(),
            hits: state.hits,
            health_checks: state.health_checks,
            health_status: state.health_status,
            health_delay_ms: state.health_delay_ms,
            task,
        }
    }
}

pub type BackendBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(body: impl Into<Bytes>) -> BackendBody {
    Full::new(body.into()).map_err(|never| match never {}).boxed()
}

async fn backend_handle(s: BackendState, req: Request<Incoming>) -> Response<BackendBody> {
    let path = req.uri().path().to_string();
    if path == "/chunks" {
        s.hits.fetch_add(1, Ordering::SeqCst);
        // Three frames at once and no length: hyper sends them chunked.
        let parts =
            ["one\n", "two\n", "three\n"].map(|p| Ok(hyper::body::Frame::data(Bytes::from(p))));
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(parts));
        return Response::new(BodyExt::boxed(body));
    }
    if path == "/stream" {
        s.hits.fetch_add(1, Ordering::SeqCst);
        // 200 chunks, one every 50 ms: a response that outlives any test's drain delay.
        let ticks = futures_util::stream::unfold(0u32, |i| async move {
            if i >= 200 {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Some((Ok(hyper::body::Frame::data(Bytes::from(format!("tick {i}\n")))), i + 1))
        });
        return Response::new(BodyExt::boxed(http_body_util::StreamBody::new(ticks)));
    }
    let (parts, body) = backend_plain(s, req).await.into_parts();
    Response::from_parts(
        parts,
        full(body.collect().await.map(|b| b.to_bytes()).unwrap_or_default()),
    )
}

async fn backend_plain(s: BackendState, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        s.health_checks.fetch_add(1, Ordering::SeqCst);
        let delay = s.health_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let mut r = Response::new(Full::new(Bytes::from_static(b"health")));
        *r.status_mut() = StatusCode::from_u16(s.health_status.load(Ordering::SeqCst)).unwrap();
        return r;
    }
    s.hits.fetch_add(1, Ordering::SeqCst);
    let mut body = s.name.clone();
    match path.as_str() {
        "/slow" => {
            let ms: u64 = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        "/echo" => {
            body = req
                .headers()
                .iter()
                .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
                .collect();
            let collected =
                req.body_mut().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            body.push_str(&format!("body: {}\n", String::from_utf8_lossy(&collected)));
        }
        "/ws" => {
            let key = req.headers().get("sec-websocket-key").cloned();
            let Some(key) = key else {
                let mut r = Response::new(Full::new(Bytes::from_static(b"not a websocket")));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                return r;
            };
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let name = s.name.clone();
            tokio::spawn(async move {
                let Ok(upgraded) = hyper::upgrade::on(&mut req).await else { return };
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() {
                        let reply = format!("{name}: {}", msg.to_text().unwrap_or(""));
                        if ws.send(reply.into()).await.is_err() {
                            break;
                        }
                    } else if msg.is_close() {
                        break;
                    }
                }
            });
            return Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", accept)
                .body(Full::new(Bytes::new()))
                .unwrap();
        }
        _ => {}
    }
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert("x-backend", s.name.parse().unwrap());
    r
}

/// Sends raw bytes on a new connection and returns everything the server sends until it closes
/// (or 3 s pass).
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
