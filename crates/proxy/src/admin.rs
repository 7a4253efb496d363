//! The admin API on a loopback address: `PUT/GET /v1/routes`, `POST /v1/routes/validate`,
//! `GET /v1/health` (with an ETag: `If-None-Match` makes polling an unchanged report cheap),
//! `GET /v1/metrics` (JSON; `?per_target=false` without each target's own figures) and
//! `GET /metrics` (Prometheus text). With a token it may listen beyond loopback, and answers only
//! requests that carry it.

use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use routes::{
    AdminError, HealthReport, ListenerMetrics, MetricsSnapshot, RouteTable, ServedRoutes,
    TargetGroupMetrics, TargetMetrics,
};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::{self as m};
use crate::state::{self, Shared};
use crate::target::{hash_target_health, lock};

/// Largest route table accepted.
const MAX_TABLE_BYTES: usize = 16 * 1024 * 1024;

/// The shortest admin token accepted: a guessable one would not protect the routing table.
pub const MIN_TOKEN_LEN: usize = 16;

pub fn spawn(
    shared: Arc<Shared>,
    listener: TcpListener,
    token: Option<Arc<str>>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    };
                    let shared = shared.clone();
                    let token = token.clone();
                    let mut stop = stop.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| {
                            let shared = shared.clone();
                            let token = token.clone();
                            async move {
                                if !authorized(token.as_deref(), &req) {
                                    return Ok::<_, Infallible>(error(
                                        StatusCode::UNAUTHORIZED,
                                        "this admin API needs `Authorization: Bearer <token>`",
                                    ));
                                }
                                Ok::<_, Infallible>(handle(&shared, req).await)
                            }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .serve_connection(TokioIo::new(stream), svc);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = crate::flag_set(&mut stop) => {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.await;
                            }
                        }
                    });
                }
                _ = crate::flag_set(&mut stop) => break,
            }
        }
    });
}

/// Whether `req` may use the admin API: always without a token, otherwise only with it (compared
/// in time independent of where it differs, so a wrong guess says nothing about the token).
fn authorized<B>(token: Option<&str>, req: &Request<B>) -> bool {
    let Some(token) = token else { return true };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    given.len() == token.len()
        && given.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body =
        serde_json::to_vec(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, &AdminError { error: message.into() })
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::PUT, "/v1/routes") => match read_table(req).await {
            Ok(table) => match state::apply(shared, table, true).await {
                Ok(applied) => json(StatusCode::OK, &applied),
                Err(e) => error(e.status, e.message),
            },
            Err(refused) => refused,
        },
        // What a PUT would check, and nothing else: the control plane asks before it stores a
        // table, and pushes it only once stored.
        (Method::POST, "/v1/routes/validate") => match read_table(req).await {
            Ok(table) => match state::check(shared, &table).await {
                Ok(()) => json(StatusCode::OK, &serde_json::json!({ "valid": true })),
                Err(e) => error(e.status, e.message),
            },
            Err(refused) => refused,
        },
        (Method::GET, "/v1/routes") => {
            let c = shared.table.load();
            json(StatusCode::OK, &ServedRoutes { version: c.table.version, table: c.table.clone() })
        }
        (Method::GET, "/v1/health") => health(shared, req.headers()),
        (Method::GET, "/v1/metrics") => match per_target(req.uri().query()) {
            Ok(per_target) => json(StatusCode::OK, &snapshot(shared, per_target)),
            Err(unknown) => error(StatusCode::BAD_REQUEST, unknown),
        },
        (Method::GET, "/metrics") => {
            let mut r =
                Response::new(Full::new(Bytes::from(m::prometheus(&snapshot(shared, true)))));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (_, "/v1/routes") => error(StatusCode::METHOD_NOT_ALLOWED, "use GET or PUT on /v1/routes"),
        (_, "/v1/routes/validate") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "use POST on /v1/routes/validate")
        }
        (_, "/v1/health" | "/v1/metrics" | "/metrics") => {
            error(StatusCode::METHOD_NOT_ALLOWED, format!("use GET on {path}"))
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!(
                "no {path}; try /v1/routes, /v1/routes/validate, /v1/health, /v1/metrics or /metrics"
            ),
        ),
    }
}

/// The route table a request carries, or the answer that refuses it.
async fn read_table(req: Request<Incoming>) -> Result<RouteTable, Response<Full<Bytes>>> {
    let body = match Limited::new(req.into_body(), MAX_TABLE_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the table (at most {MAX_TABLE_BYTES} bytes): {e}"),
            ));
        }
    };
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("the body is not a route table: {e}")))
}

/// `GET /v1/health`, with an ETag of what it says: a poller that sends the tag it last saw in
/// `If-None-Match` is answered `304 Not Modified` without a body while nothing changed (RFC 9110
/// 13.1.2), so polling 10,000 targets costs a pass over them, not a report of them. The tag of a
/// full answer is that of its body, never of a moment before or after it.
fn health(shared: &Shared, headers: &http::HeaderMap) -> Response<Full<Bytes>> {
    let current = health_etag_now(shared);
    let seen = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == current || tag.trim() == "*");
    let (mut r, tag) = if seen {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        (r, current)
    } else {
        let report = health_report(shared);
        (json(StatusCode::OK, &report), health_etag(&report))
    };
    if let Ok(tag) = header::HeaderValue::from_str(&tag) {
        r.headers_mut().insert(header::ETAG, tag);
    }
    r
}

/// The ETag of a health report: a hash of what it says, quoted.
pub fn health_etag(report: &HealthReport) -> String {
    let mut h = std::hash::DefaultHasher::new();
    report.version.hash(&mut h);
    for (name, targets) in &report.target_groups {
        (name, targets.len()).hash(&mut h);
        for t in targets {
            let (reason, description) = (t.reason.as_deref(), t.description.as_deref());
            hash_target_health(&mut h, t.addr, t.state, reason, description, t.in_flight);
        }
    }
    format!("\"{:016x}\"", h.finish())
}

/// [`health_etag`] of the report [`health_report`] would build now, without building it.
fn health_etag_now(shared: &Shared) -> String {
    let mut h = std::hash::DefaultHasher::new();
    shared.version().hash(&mut h);
    for (name, group) in lock(&shared.groups).iter() {
        let targets = group.all_targets();
        (&**name, targets.len()).hash(&mut h);
        for t in &targets {
            t.hash_report(&mut h);
        }
    }
    format!("\"{:016x}\"", h.finish())
}

/// `GET /v1/metrics?per_target=false` leaves each target's own figures out: the control plane
/// samples every target group's several times a second and needs no target's.
/// A query it does not know is refused with what to send instead.
fn per_target(query: Option<&str>) -> Result<bool, String> {
    let mut per_target = true;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        per_target = match pair {
            "per_target=true" => true,
            "per_target=false" => false,
            other => {
                return Err(format!(
                    "unknown query `{other}`; use per_target=false or per_target=true"
                ));
            }
        };
    }
    Ok(per_target)
}

pub fn health_report(shared: &Shared) -> HealthReport {
    let version = shared.version();
    let groups = lock(&shared.groups).clone();
    HealthReport {
        version,
        target_groups: groups
            .iter()
            .map(|(name, g)| (name.clone(), g.all_targets().iter().map(|t| t.report()).collect()))
            .collect(),
    }
}

/// The data plane's counters; each target's own only when `per_target`.
pub fn snapshot(shared: &Shared, per_target: bool) -> MetricsSnapshot {
    let compiled = shared.table.load_full();
    let groups = lock(&shared.groups).clone();
    let listeners = lock(&shared.listeners).clone();
    // The data plane is a process of its own, without the control plane's store::clock: the
    // snapshot says when it was taken on the OS's wall clock, which the reader only shows.
    #[allow(clippy::disallowed_methods)]
    let mut snap = MetricsSnapshot {
        version: compiled.table.version,
        started_at_unix_ms: shared.started_at_unix_ms,
        taken_at_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        client_connections: shared.client_conns.load(Ordering::Relaxed),
        max_client_connections: shared.limits.cap(),
        accept_errors: shared.limits.accept_errors.load(Ordering::Relaxed),
        ..MetricsSnapshot::default()
    };
    for (name, l) in &compiled.table.listeners {
        let Some(ls) = listeners.get(&l.bind) else { continue };
        let c = &ls.counters;
        snap.listeners.insert(
            name.clone(),
            ListenerMetrics {
                bind: Some(l.bind),
                requests: c.get(m::L_REQUESTS),
                active_connections: ls.conns.load(Ordering::Relaxed),
                fixed_responses: c.get(m::L_FIXED),
                redirects: c.get(m::L_REDIRECT),
                elb_4xx: c.get(m::L_ELB4XX),
                elb_503_no_group: c.get(m::L_ELB503),
                rejected_connections_per_client: ls.rejected_per_client.load(Ordering::Relaxed),
                rejected_connections_at_capacity: ls.rejected_at_capacity.load(Ordering::Relaxed),
                shed_connections: ls.shed.load(Ordering::Relaxed),
                header_timeouts: ls.header_timeouts.load(Ordering::Relaxed),
            },
        );
    }
    for (name, g) in &groups {
        let targets = g.all_targets();
        let registered = g.registered.load_full();
        snap.target_groups.insert(
            name.clone(),
            TargetGroupMetrics {
                counters: g.counters.request_counters(),
                unhealthy_routing_requests: g.counters.get(m::FAIL_OPEN),
                healthy_host_count: registered.iter().filter(|t| t.healthy()).count() as u64,
                unhealthy_host_count: registered.iter().filter(|t| t.unhealthy()).count() as u64,
                active_connections: targets.iter().map(|t| t.open_conns()).sum(),
                retries: g.counters.get(m::RETRIES),
                retry_budget_exhausted: g.counters.get(m::RETRY_BUDGET_EXHAUSTED),
                hedged_connects: g.counters.get(m::HEDGED_CONNECTS),
                hedges_won: g.counters.get(m::HEDGES_WON),
                passive_ejections: g.counters.get(m::PASSIVE_EJECTIONS),
                mirrored: g.mirrored.mirrored_metrics(),
                targets: targets
                    .iter()
                    .filter(|_| per_target)
                    .map(|t| TargetMetrics {
                        addr: t.addr,
                        state: t.state(),
                        counters: t.counters.request_counters(),
                        in_flight: t.in_flight.total(),
                        active_connections: t.open_conns(),
                        long_lived_connections: t.long_lived.load(Ordering::Relaxed),
                    })
                    .collect(),
                response_time_fine: g.counters.fine_response_times(),
            },
        );
    }
    snap
}
