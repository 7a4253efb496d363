//! Lock-free counters for the request path and their rendering as JSON snapshots and Prometheus
//! text.
//!
//! # Which answer feeds which metric
//!
//! A target group's ELB 5xx (ALB's `HTTPCode_ELB_5XX_Count`, which deployment alarms watch)
//! counts only what the target group is at fault for; whatever a client does is a client error
//! of the listener (ALB's `HTTPCode_ELB_4XX_Count`), so that no client can trip an alarm on
//! green. Tested answer by answer in `tests/answers.rs`.
//!
//! | answer | when | counter |
//! |---|---|---|
//! | 400 | malformed head; smuggling-shaped framing; no, two or an invalid `Host`; a chunked body with invalid framing; a body cut short when the client closes; an HTTP/2 body error | listener `elb_4xx` |
//! | 405 | `CONNECT` | listener `elb_4xx` |
//! | 408 | the request body stalls on the client for the idle timeout (HTTP/1 and HTTP/2) | listener `elb_4xx` |
//! | 414, 431 | request line over 16 KiB; head over 64 KiB or 100 fields | listener `elb_4xx` |
//! | none (ALB's 460) | the client resets its connection mid-body | listener `elb_4xx` |
//! | fixed response | a fixed-response action | listener `fixed_responses` |
//! | redirect | a redirect action | listener `redirects` |
//! | 503 | a forward whose weights are all 0 | listener `elb_503_no_group` |
//! | 503 | the chosen target group has no target | group `elb_503` |
//! | 502 | no connection to a target (refused, failed; also `target_connection_errors`), reset or EOF before a response, a malformed response, a 101 nobody asked for, a target released mid-request | target and group `elb_502` |
//! | 504 | the target sent no response head within the idle timeout while the request was not waiting on its client | target and group `elb_504` |
//! | the target's status | the target answered | target and group `target_1xx`…`target_5xx` |
//! | the retry group's answer | a forward's retry sent a request its group failed (a 5xx, or a 502 before any byte of an answer) again to its retry group | the failure as above on the group that failed, and its `retries`; the retry as any request on the retry group |
//! | the failure | the same, but the retry budget was spent | the failure as above, and `retry_budget_exhausted` of the group that failed |
//! | the other target's answer | a new connection to a target was refused (the request moves on), or had not opened after 250 ms and another target's opened first | the refused or outpaced target's `target_connection_errors`, the group's `passive_ejections` (and `hedged_connects`, `hedges_won` when hedged); the answer as any request on the target that served it |
//! | none (discarded) | a forward's mirror sent a copy of the request to its mirror group | only the mirror group's `mirrored` counters: the copy's status (or the 502/503/504 the load balancer would have answered), its response time, and `mismatches` when its status class differs from the client's answer's; `dropped` when `max_in_flight` copies were in flight and it was not sent |
//!
//! Every counter is sharded by worker thread (each shard on its own cache lines), so two threads
//! counting requests for the same target never bounce a cache line between cores; a snapshot sums
//! the shards.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use routes::{
    Histogram, MetricsSnapshot, MirroredMetrics, RESPONSE_TIME_BUCKETS_US, RequestCounters,
    TargetGroupMetrics, TargetState,
};

use routes::latency::{LATENCY_BUCKETS, latency_bucket};

use crate::sync::CachePadded;

pub const REQUESTS: usize = 0;
pub const T1XX: usize = 1;
pub const T2XX: usize = 2;
pub const T3XX: usize = 3;
pub const T4XX: usize = 4;
pub const T5XX: usize = 5;
pub const ELB502: usize = 6;
pub const ELB503: usize = 7;
pub const ELB504: usize = 8;
pub const CONN_ERRORS: usize = 9;
pub const FAIL_OPEN: usize = 10;
const SUM_US: usize = 11;
const COUNT: usize = 12;
const BUCKET0: usize = 13;
const N_BUCKETS: usize = RESPONSE_TIME_BUCKETS_US.len() + 1;
/// A target group's requests that its forward's retry sent again to another group.
pub const RETRIES: usize = BUCKET0 + N_BUCKETS;
/// A target group's failed requests that the retry budget kept from being retried.
pub const RETRY_BUDGET_EXHAUSTED: usize = RETRIES + 1;
/// A mirror group's copies whose status class differed from the answer the client got.
pub const MIRROR_MISMATCHES: usize = RETRY_BUDGET_EXHAUSTED + 1;
/// Copies not sent to a mirror group because its `max_in_flight` copies were in flight.
pub const MIRROR_DROPPED: usize = MIRROR_MISMATCHES + 1;
/// A target group's new connections that were slow to open, so another target's was tried too.
pub const HEDGED_CONNECTS: usize = MIRROR_DROPPED + 1;
/// Hedged connections whose second target connected first and took the request.
pub const HEDGES_WON: usize = HEDGED_CONNECTS + 1;
/// A target group's targets passively ejected after a failed or outpaced connection.
pub const PASSIVE_EJECTIONS: usize = HEDGES_WON + 1;
const N_FIELDS: usize = PASSIVE_EJECTIONS + 1;

/// Listener counters reuse the same storage with their own field names.
pub const L_REQUESTS: usize = 0;
pub const L_FIXED: usize = 1;
pub const L_REDIRECT: usize = 2;
pub const L_ELB4XX: usize = 3;
pub const L_ELB503: usize = 4;

/// Shards per counter; worker threads beyond this many share them.
pub const SHARDS: usize = 8;

type Shard = CachePadded<[AtomicU64; N_FIELDS]>;

/// A set of monotonic counters plus a response-time histogram.
pub struct Counters {
    shards: Box<[Shard]>,
    /// Response times in `routes::latency`'s fine buckets, for target groups and the copies
    /// mirrored to them (the canary judge compares two distributions), sharded as the counters.
    fine: Option<Box<[FineShard]>>,
}

type FineShard = CachePadded<[AtomicU64; LATENCY_BUCKETS]>;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's shard; worker threads get distinct shards while there are no more than
/// `SHARDS` of them.
#[inline]
pub fn shard_index() -> usize {
    SHARD.with(|s| {
        let v = s.get();
        if v != usize::MAX {
            return v;
        }
        let v = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
        s.set(v);
        v
    })
}

/// Gives this thread its own shard (a worker thread's index), so that workers never share one.
pub fn set_shard(index: usize) {
    SHARD.with(|s| s.set(index % SHARDS));
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            shards: (0..SHARDS)
                .map(|_| CachePadded(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            fine: None,
        }
    }
}

impl Counters {
    /// A target group's counters: these also keep response times in fine buckets.
    pub fn with_fine_response_times() -> Counters {
        let shards =
            (0..SHARDS).map(|_| CachePadded(std::array::from_fn(|_| AtomicU64::new(0)))).collect();
        Counters { fine: Some(shards), ..Counters::default() }
    }

    #[inline]
    pub fn add(&self, field: usize, n: u64) {
        self.shards[shard_index()].0[field].fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self, field: usize) {
        self.add(field, 1);
    }

    /// Counts a target's status code in its class.
    #[inline]
    pub fn status(&self, status: u16) {
        let field = match status {
            100..=199 => T1XX,
            200..=299 => T2XX,
            300..=399 => T3XX,
            400..=499 => T4XX,
            _ => T5XX,
        };
        self.inc(field);
    }

    #[inline]
    pub fn observe_us(&self, us: u64) {
        let shard = &self.shards[shard_index()].0;
        let bucket = RESPONSE_TIME_BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(RESPONSE_TIME_BUCKETS_US.len());
        shard[BUCKET0 + bucket].fetch_add(1, Ordering::Relaxed);
        shard[SUM_US].fetch_add(us, Ordering::Relaxed);
        shard[COUNT].fetch_add(1, Ordering::Relaxed);
        if let Some(fine) = &self.fine {
            fine[shard_index()].0[latency_bucket(us)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The fine buckets that counted answers, `(index, answers)` ascending (empty for counters
    /// without them).
    pub fn fine_response_times(&self) -> Vec<(u32, u64)> {
        let Some(fine) = &self.fine else { return Vec::new() };
        // Every answer counted in a fine bucket is counted in `COUNT` too (`observe_us`): a
        // group that never answered (most of a large table's, almost every mirror's counters)
        // has no bucket to sum, and its 17 KiB of them stay out of the cache.
        if self.get(COUNT) == 0 {
            return Vec::new();
        }
        // One shard's buckets after another: memory read in order, not a line of each shard
        // per bucket.
        let mut answers = [0u64; LATENCY_BUCKETS];
        for shard in fine.iter() {
            for (sum, bucket) in answers.iter_mut().zip(&shard.0) {
                *sum += bucket.load(Ordering::Relaxed);
            }
        }
        (0..LATENCY_BUCKETS as u32).zip(answers).filter(|&(_, n)| n > 0).collect()
    }

    pub fn get(&self, field: usize) -> u64 {
        self.shards.iter().map(|s| s.0[field].load(Ordering::Relaxed)).sum()
    }

    /// A mirror group's counters of its copies (see [`routes::MirroredMetrics`]).
    pub fn mirrored_metrics(&self) -> MirroredMetrics {
        MirroredMetrics {
            counters: self.request_counters(),
            mismatches: self.get(MIRROR_MISMATCHES),
            dropped: self.get(MIRROR_DROPPED),
            response_time_fine: self.fine_response_times(),
        }
    }

    pub fn request_counters(&self) -> RequestCounters {
        let mut buckets = Vec::with_capacity(RESPONSE_TIME_BUCKETS_US.len());
        let mut running = 0;
        for i in 0..RESPONSE_TIME_BUCKETS_US.len() {
            running += self.get(BUCKET0 + i);
            buckets.push(running);
        }
        RequestCounters {
            requests: self.get(REQUESTS),
            target_1xx: self.get(T1XX),
            target_2xx: self.get(T2XX),
            target_3xx: self.get(T3XX),
            target_4xx: self.get(T4XX),
            target_5xx: self.get(T5XX),
            elb_502: self.get(ELB502),
            elb_503: self.get(ELB503),
            elb_504: self.get(ELB504),
            target_connection_errors: self.get(CONN_ERRORS),
            response_time: Histogram { buckets, sum_us: self.get(SUM_US), count: self.get(COUNT) },
        }
    }
}

/// A sequence number per thread: round robin and weighted choice without a shared counter.
pub struct Sequence {
    shards: Box<[CachePadded<AtomicUsize>]>,
}

impl Default for Sequence {
    fn default() -> Self {
        Sequence { shards: (0..SHARDS).map(|_| CachePadded(AtomicUsize::new(0))).collect() }
    }
}

impl Sequence {
    #[inline]
    pub fn next(&self) -> usize {
        self.shards[shard_index()].0.fetch_add(1, Ordering::Relaxed)
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn state_name(state: TargetState) -> &'static str {
    match state {
        TargetState::Initial => "initial",
        TargetState::Healthy => "healthy",
        TargetState::Unhealthy => "unhealthy",
        TargetState::Draining => "draining",
        TargetState::Unused => "unused",
        TargetState::Unavailable => "unavailable",
    }
}

/// Renders a snapshot in Prometheus' text exposition format (0.0.4).
pub fn prometheus(s: &MetricsSnapshot) -> String {
    let mut out = String::with_capacity(4096);
    family(&mut out, "cutover_lb_routes_version", "gauge", "Route-table version served.");
    let _ = writeln!(out, "cutover_lb_routes_version {}", s.version);
    family(&mut out, "cutover_lb_client_connections", "gauge", "Open client connections.");
    let _ = writeln!(out, "cutover_lb_client_connections {}", s.client_connections);
    listener_families(&mut out, s);
    target_group_families(&mut out, s);
    let targets = target_labels(s);
    target_traffic_families(&mut out, &targets);
    target_response_time_family(&mut out, &targets);
    target_connection_families(&mut out, &targets);
    connection_limits(&mut out, s);
    out
}

/// A family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Requests, open connections and the answers each listener gave itself.
fn listener_families(out: &mut String, s: &MetricsSnapshot) {
    family(out, "cutover_lb_listener_requests_total", "counter", "Requests per listener.");
    for (name, l) in &s.listeners {
        let _ = writeln!(
            out,
            "cutover_lb_listener_requests_total{{listener=\"{}\"}} {}",
            escape(name),
            l.requests
        );
    }
    family(out, "cutover_lb_listener_connections", "gauge", "Open client connections.");
    for (name, l) in &s.listeners {
        let _ = writeln!(
            out,
            "cutover_lb_listener_connections{{listener=\"{}\"}} {}",
            escape(name),
            l.active_connections
        );
    }
    family(
        out,
        "cutover_lb_listener_responses_total",
        "counter",
        "Responses a listener generated itself (fixed, redirect, 400, 503 with no group).",
    );
    for (name, l) in &s.listeners {
        let n = escape(name);
        for (kind, v) in [
            ("fixed_response", l.fixed_responses),
            ("redirect", l.redirects),
            ("elb_4xx", l.elb_4xx),
            ("elb_503_no_group", l.elb_503_no_group),
        ] {
            let _ = writeln!(
                out,
                "cutover_lb_listener_responses_total{{listener=\"{n}\",kind=\"{kind}\"}} {v}"
            );
        }
    }
}

/// Per target group: requests, the load balancer's own 5xx, fail-open and host counts.
fn target_group_families(out: &mut String, s: &MetricsSnapshot) {
    family(
        out,
        "cutover_lb_target_group_requests_total",
        "counter",
        "Requests routed to a target group, including those answered 503 for lack of targets.",
    );
    for (g, m) in &s.target_groups {
        let _ = writeln!(
            out,
            "cutover_lb_target_group_requests_total{{target_group=\"{}\"}} {}",
            escape(g),
            m.counters.requests
        );
    }
    family(
        out,
        "cutover_lb_elb_responses_total",
        "counter",
        "5xx the load balancer generated itself, per target group.",
    );
    for (g, m) in &s.target_groups {
        let g = escape(g);
        for (code, v) in
            [("502", m.counters.elb_502), ("503", m.counters.elb_503), ("504", m.counters.elb_504)]
        {
            let _ = writeln!(
                out,
                "cutover_lb_elb_responses_total{{target_group=\"{g}\",code=\"{code}\"}} {v}"
            );
        }
    }
    type PerGroup = (&'static str, &'static str, &'static str, fn(&TargetGroupMetrics) -> u64);
    let per_group: [PerGroup; 12] = [
        (
            "cutover_lb_mirrored_requests_total",
            "counter",
            "Copies of requests a forward's mirror sent to a target group (answers discarded).",
            |m| m.mirrored.counters.requests,
        ),
        (
            "cutover_lb_mirrored_5xx_total",
            "counter",
            "Mirrored copies answered 5xx, by a target or by the load balancer for it.",
            |m| m.mirrored.server_errors(),
        ),
        (
            "cutover_lb_mirrored_mismatches_total",
            "counter",
            "Mirrored copies whose status class differed from the answer the client got.",
            |m| m.mirrored.mismatches,
        ),
        (
            "cutover_lb_mirrored_dropped_total",
            "counter",
            "Copies not mirrored because the mirror group had max_in_flight copies in flight.",
            |m| m.mirrored.dropped,
        ),
        (
            "cutover_lb_retries_total",
            "counter",
            "Requests a target group failed that were sent again to its forward's retry group.",
            |m| m.retries,
        ),
        (
            "cutover_lb_hedged_connects_total",
            "counter",
            "New target connections slow to open (250 ms) that another target's connection raced.",
            |m| m.hedged_connects,
        ),
        (
            "cutover_lb_hedges_won_total",
            "counter",
            "Hedged connections where the second target connected first and took the request.",
            |m| m.hedges_won,
        ),
        (
            "cutover_lb_passive_ejections_total",
            "counter",
            "Targets taken out of this load balancer's picks after a refused or slow connection.",
            |m| m.passive_ejections,
        ),
        (
            "cutover_lb_retry_budget_exhausted_total",
            "counter",
            "Failed requests of a target group not retried because the retry budget was spent.",
            |m| m.retry_budget_exhausted,
        ),
        ("cutover_lb_unhealthy_routing_requests_total", "counter", "Fail-open requests.", |m| {
            m.unhealthy_routing_requests
        }),
        ("cutover_lb_healthy_hosts", "gauge", "Healthy targets per group.", |m| {
            m.healthy_host_count
        }),
        ("cutover_lb_unhealthy_hosts", "gauge", "Unhealthy targets per group.", |m| {
            m.unhealthy_host_count
        }),
    ];
    for (name, kind, help, value) in per_group {
        family(out, name, kind, help);
        for (g, m) in &s.target_groups {
            let _ = writeln!(out, "{name}{{target_group=\"{}\"}} {}", escape(g), value(m));
        }
    }
}

/// Every target with its labels (`target_group="…",target="…"`).
fn target_labels(s: &MetricsSnapshot) -> Vec<(String, &routes::TargetMetrics)> {
    s.target_groups
        .iter()
        .flat_map(|(g, m)| {
            m.targets
                .iter()
                .map(move |t| (format!("target_group=\"{}\",target=\"{}\"", escape(g), t.addr), t))
        })
        .collect()
}

/// Per target: requests, status classes, the load balancer's own 502/504 and failed connects.
fn target_traffic_families(out: &mut String, targets: &[(String, &routes::TargetMetrics)]) {
    family(out, "cutover_lb_requests_total", "counter", "Requests sent to a target.");
    for (l, t) in targets {
        let _ = writeln!(out, "cutover_lb_requests_total{{{l}}} {}", t.counters.requests);
    }
    family(out, "cutover_lb_target_responses_total", "counter", "Status codes from targets.");
    for (l, t) in targets {
        let c = &t.counters;
        for (class, v) in [
            ("1xx", c.target_1xx),
            ("2xx", c.target_2xx),
            ("3xx", c.target_3xx),
            ("4xx", c.target_4xx),
            ("5xx", c.target_5xx),
        ] {
            let _ = writeln!(
                out,
                "cutover_lb_target_responses_total{{{l},code_class=\"{class}\"}} {v}"
            );
        }
    }
    family(
        out,
        "cutover_lb_target_elb_responses_total",
        "counter",
        "502/504 the load balancer generated for a target.",
    );
    for (l, t) in targets {
        let c = &t.counters;
        for (code, v) in [("502", c.elb_502), ("504", c.elb_504)] {
            let _ =
                writeln!(out, "cutover_lb_target_elb_responses_total{{{l},code=\"{code}\"}} {v}");
        }
    }
    family(
        out,
        "cutover_lb_target_connection_errors_total",
        "counter",
        "Failed connects to a target.",
    );
    for (l, t) in targets {
        let _ = writeln!(
            out,
            "cutover_lb_target_connection_errors_total{{{l}}} {}",
            t.counters.target_connection_errors
        );
    }
}

fn target_response_time_family(out: &mut String, targets: &[(String, &routes::TargetMetrics)]) {
    family(
        out,
        "cutover_lb_target_response_seconds",
        "histogram",
        "Time from sending a request to a target to receiving its response headers.",
    );
    for (l, t) in targets {
        let h = &t.counters.response_time;
        for (bound, v) in RESPONSE_TIME_BUCKETS_US.iter().zip(&h.buckets) {
            let _ = writeln!(
                out,
                "cutover_lb_target_response_seconds_bucket{{{l},le=\"{}\"}} {v}",
                *bound as f64 / 1e6
            );
        }
        let _ = writeln!(
            out,
            "cutover_lb_target_response_seconds_bucket{{{l},le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "cutover_lb_target_response_seconds_sum{{{l}}} {}",
            h.sum_us as f64 / 1e6
        );
        let _ = writeln!(out, "cutover_lb_target_response_seconds_count{{{l}}} {}", h.count);
    }
}

/// Per target: open and in-flight connections, WebSockets, and its health state.
fn target_connection_families(out: &mut String, targets: &[(String, &routes::TargetMetrics)]) {
    family(out, "cutover_lb_active_connections", "gauge", "Open connections to a target.");
    for (l, t) in targets {
        let _ = writeln!(out, "cutover_lb_active_connections{{{l}}} {}", t.active_connections);
    }
    family(out, "cutover_lb_in_flight_requests", "gauge", "Requests in flight to a target.");
    for (l, t) in targets {
        let _ = writeln!(out, "cutover_lb_in_flight_requests{{{l}}} {}", t.in_flight);
    }
    family(
        out,
        "cutover_lb_long_lived_connections",
        "gauge",
        "Upgraded (WebSocket) connections open to a target.",
    );
    for (l, t) in targets {
        let _ =
            writeln!(out, "cutover_lb_long_lived_connections{{{l}}} {}", t.long_lived_connections);
    }
    family(out, "cutover_lb_target_health", "gauge", "1 for the state a target is in.");
    for (l, t) in targets {
        let _ =
            writeln!(out, "cutover_lb_target_health{{{l},state=\"{}\"}} 1", state_name(t.state));
    }
}

/// The connection limits' families (see `crate::limits`): ALB's `RejectedConnectionCount` by
/// reason, shedding, header timeouts and failed accepts.
fn connection_limits(out: &mut String, s: &MetricsSnapshot) {
    family(
        out,
        "cutover_lb_max_client_connections",
        "gauge",
        "Most client connections held at once; at it, the oldest idle one is closed for a new one.",
    );
    let _ = writeln!(out, "cutover_lb_max_client_connections {}", s.max_client_connections);
    family(
        out,
        "cutover_lb_accept_errors_total",
        "counter",
        "Failed accepts (EMFILE and the like).",
    );
    let _ = writeln!(out, "cutover_lb_accept_errors_total {}", s.accept_errors);
    family(
        out,
        "cutover_lb_listener_rejected_connections_total",
        "counter",
        "Connections closed on arrival: the client held its limit (per_client), or the data plane \
         held its limit with none idle (capacity).",
    );
    for (name, l) in &s.listeners {
        let n = escape(name);
        for (reason, v) in [
            ("per_client", l.rejected_connections_per_client),
            ("capacity", l.rejected_connections_at_capacity),
        ] {
            let _ = writeln!(
                out,
                "cutover_lb_listener_rejected_connections_total{{listener=\"{n}\",reason=\"{reason}\"}} {v}"
            );
        }
    }
    for (family_name, help, value) in [
        (
            "cutover_lb_listener_shed_connections_total",
            "Idle keep-alive connections closed, oldest first, to serve new ones.",
            (|l: &routes::ListenerMetrics| l.shed_connections)
                as fn(&routes::ListenerMetrics) -> u64,
        ),
        (
            "cutover_lb_listener_header_timeouts_total",
            "Request heads not complete within the header timeout (answered 408).",
            |l| l.header_timeouts,
        ),
    ] {
        family(out, family_name, "counter", help);
        for (name, l) in &s.listeners {
            let _ = writeln!(out, "{family_name}{{listener=\"{}\"}} {}", escape(name), value(l));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fine_response_times_sum_every_shard_s_answers_by_bucket() {
        let c = Counters::with_fine_response_times();
        assert!(c.fine_response_times().is_empty(), "no answer yet");
        // Observed from threads of different shards, as workers do.
        std::thread::scope(|s| {
            for shard in 0..SHARDS {
                let c = &c;
                s.spawn(move || {
                    set_shard(shard);
                    c.observe_us(5);
                    if shard % 2 == 0 {
                        c.observe_us(1_000);
                    }
                });
            }
        });
        let expected = [(latency_bucket(5) as u32, 8), (latency_bucket(1_000) as u32, 4)];
        assert_eq!(c.fine_response_times(), expected);
        assert!(Counters::default().fine_response_times().is_empty(), "counters without them");
    }
}
