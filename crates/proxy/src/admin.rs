//! The admin API on a loopback address: `PUT/GET /v1/routes`, `POST /v1/routes/validate`,
//! `GET /v1/health` (with an ETag: `If-None-Match` makes polling an unchanged report cheap),
//! `GET /v1/metrics` (JSON; `?per_target=false` without each target's own figures) and
//! `GET /metrics` (Prometheus text). With a token it may listen beyond loopback, and answers only
//! requests that carry it.

use std::convert::Infallible;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

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
use crate::target::{HealthChanges, lock};

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
    let tags = Arc::new(HealthTags::new());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    };
                    let shared = shared.clone();
                    let tags = tags.clone();
                    let token = token.clone();
                    let mut stop = stop.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| {
                            let shared = shared.clone();
                            let tags = tags.clone();
                            let token = token.clone();
                            async move {
                                if !authorized(token.as_deref(), &req) {
                                    return Ok::<_, Infallible>(error(
                                        StatusCode::UNAUTHORIZED,
                                        "this admin API needs `Authorization: Bearer <token>`",
                                    ));
                                }
                                Ok::<_, Infallible>(handle(&shared, &tags, req).await)
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

async fn handle(
    shared: &Arc<Shared>,
    tags: &HealthTags,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
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
        (Method::GET, "/v1/health") => health(shared, tags, req.headers()),
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
/// 13.1.2). While no target moves and no request starts or ends, telling so is a few atomic loads
/// (see [`HealthChanges`]), whatever the number of targets; after requests moved, a pass of
/// atomic loads over the targets' in-flight counts. A 304 always means the very body last sent:
/// the tag never stays while the report changes.
fn health(shared: &Shared, tags: &HealthTags, headers: &http::HeaderMap) -> Response<Full<Bytes>> {
    // Read before the report is built: what changes after this moves the counts, so a tag made
    // of them is never that of a report holding less than they say.
    let counts = ChangeCounts::of(&shared.health_changes);
    let current = tags.tag(shared.version(), counts.health, tags.in_flight_now(shared, counts));
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
        let in_flight =
            fold_in_flight(report.target_groups.values().flatten().map(|t| t.in_flight));
        let tag = tags.tag(report.version, counts.health, in_flight);
        (json(StatusCode::OK, &report), tag)
    };
    if let Ok(tag) = header::HeaderValue::from_str(&tag) {
        r.headers_mut().insert(header::ETAG, tag);
    }
    r
}

/// [`HealthChanges`]' counts at one moment.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ChangeCounts {
    health: u64,
    in_flight: u64,
}

impl ChangeCounts {
    fn of(changes: &HealthChanges) -> Self {
        ChangeCounts { health: changes.health_count(), in_flight: changes.in_flight_count() }
    }
}

/// The health report's ETags of one data plane process.
struct HealthTags {
    /// Random per process: a restarted data plane starts its counts over, and must not answer
    /// 304 to a tag its predecessor gave for other targets' states.
    seed: std::hash::RandomState,
    /// The in-flight fold of the last pass over the targets, and the counts it was made at:
    /// while they hold, no request started or ended and no target came or went since.
    last_pass: Mutex<Option<(ChangeCounts, u64)>>,
}

impl HealthTags {
    fn new() -> Self {
        HealthTags { seed: std::hash::RandomState::new(), last_pass: Mutex::new(None) }
    }

    /// The tag of a report of table `version`, made after `health` changes, whose requests in
    /// flight fold to `in_flight` ([`fold_in_flight`]).
    fn tag(&self, version: u64, health: u64, in_flight: u64) -> String {
        format!("\"{:016x}\"", self.seed.hash_one((version, health, in_flight)))
    }

    /// [`fold_in_flight`] of the targets now, by a pass over them only if a request started or
    /// ended or a target came or went since the last pass (`counts` were read before).
    fn in_flight_now(&self, shared: &Shared, counts: ChangeCounts) -> u64 {
        if let Some((at, fold)) = *lock(&self.last_pass)
            && at == counts
        {
            return fold;
        }
        let mut fold = InFlightFold::default();
        for group in lock(&shared.groups).values() {
            // The report's order: registered targets, then draining ones.
            group.registered.load().iter().for_each(|t| fold.add(t.in_flight.total()));
            lock(&group.draining).iter().for_each(|t| fold.add(t.in_flight.total()));
        }
        let fold = fold.finish();
        *lock(&self.last_pass) = Some((counts, fold));
        fold
    }
}

/// A hash of every target's requests in flight, in the report's order (groups by name, then
/// each group's targets): the part of the health report that changes without its targets
/// changing. Targets with none are left out, which says as much while the targets are the same.
fn fold_in_flight(in_flight: impl IntoIterator<Item = u64>) -> u64 {
    let mut fold = InFlightFold::default();
    in_flight.into_iter().for_each(|n| fold.add(n));
    fold.finish()
}

/// [`fold_in_flight`] one target at a time.
#[derive(Default)]
struct InFlightFold {
    hasher: std::hash::DefaultHasher,
    at: usize,
}

impl InFlightFold {
    fn add(&mut self, in_flight: u64) {
        if in_flight > 0 {
            (self.at, in_flight).hash(&mut self.hasher);
        }
        self.at += 1;
    }

    fn finish(&self) -> u64 {
        self.hasher.finish()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_flight_fold_tells_which_target_has_how_many_requests() {
        let fold = |counts: &[u64]| fold_in_flight(counts.iter().copied());
        assert_eq!(fold(&[0, 2, 0]), fold(&[0, 2, 0]));
        assert_ne!(fold(&[0, 2, 0]), fold(&[0, 1, 0]), "a request ended");
        assert_ne!(fold(&[1, 0, 0]), fold(&[0, 1, 0]), "a request moved to another target");
        assert_ne!(fold(&[0, 0, 0]), fold(&[0, 0, 1]), "a request started");
    }
}
