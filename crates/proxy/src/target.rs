//! Live state of target groups and targets: health, in-flight requests, connection pools, draining.
//!
//! These objects outlive route-table versions: a new table that keeps a target keeps the same
//! `TargetRt`, so health state and counters carry over and re-applying a table changes nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use routes::{Algorithm, HealthCheck, TargetHealth, TargetState};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::clock;
use crate::metrics::{self, Counters, Sequence};
use crate::sync::CachePadded;
use crate::upstream::{Closer, UpstreamConn};

/// Idle keep-alive connections kept per target and worker (nginx's `keepalive`, which is also
/// per worker, is usually set to a few dozen).
const POOL_SIZE: usize = 512;

/// How long a target stays passively ejected (see [`TargetRt::eject`]) when no health check
/// passes first: nginx's `fail_timeout` default. Long enough that a dead machine's targets cost
/// at most one hedge delay per ejection until the health checks take them out (ALB's fastest
/// is two failed checks 5 s apart), short enough that a target with health checks disabled,
/// which only this timer brings back, is tried again soon.
pub const EJECTION: Duration = Duration::from_secs(10);

const H_INITIAL: u8 = 0;
const H_HEALTHY: u8 = 1;
const H_UNHEALTHY: u8 = 2;
/// Health checks disabled: ALB's `unavailable`, and routable.
const H_UNAVAILABLE: u8 = 3;

/// A draining target's reason and description, as ALB reports them.
const DRAINING_DETAIL: (&str, &str) =
    ("Target.DeregistrationInProgress", "Target deregistration is in progress");

/// What moves the health report (`GET /v1/health`), counted so that telling whether it moved is a
/// few atomic loads instead of a pass over every target: the admin API's ETag is made of these
/// counts (see `admin::health`). Each count is bumped *after* the change it counts is written, so
/// a count read before a report is built never claims a change the report does not hold.
pub struct HealthChanges {
    /// Bumped after a target's state, reason or description changed, and after a route table
    /// or a released target changed which targets the groups have.
    health: AtomicU64,
    /// Bumped after a request in flight to any target started or ended, per thread shard (as
    /// [`InFlightCount`]), so that the request path writes no cache line another worker does.
    in_flight: Box<[CachePadded<AtomicU64>]>,
}

impl Default for HealthChanges {
    fn default() -> Self {
        HealthChanges {
            health: AtomicU64::new(0),
            in_flight: (0..metrics::SHARDS).map(|_| CachePadded::default()).collect(),
        }
    }
}

impl HealthChanges {
    /// A target's health or a group's targets changed (just now, written before this call).
    pub fn health_changed(&self) {
        self.health.fetch_add(1, Ordering::SeqCst);
    }

    /// How many times health or membership changed.
    pub fn health_count(&self) -> u64 {
        self.health.load(Ordering::SeqCst)
    }

    /// On the request path, twice a request. Release, read with Acquire: a reader that sees
    /// this bump sees the in-flight count written before it, which is all the tag relies on (a
    /// count read before the targets' is never ahead of them). No total order is needed.
    #[inline]
    fn in_flight_moved(&self, shard: usize) {
        self.in_flight[shard].fetch_add(1, Ordering::Release);
    }

    /// How many requests in flight started or ended. Every shard only grows, so the sum moves
    /// whenever one does.
    pub fn in_flight_count(&self) -> u64 {
        self.in_flight.iter().map(|s| s.load(Ordering::Acquire)).fold(0, u64::wrapping_add)
    }
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind, still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The result of one health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Mismatch(u16),
    Timeout,
    Failed(String),
}

#[derive(Default)]
struct Detail {
    reason: Option<&'static str>,
    description: Option<String>,
    passes: u32,
    failures: u32,
}

#[derive(Default)]
struct Tasks {
    health: Option<AbortHandle>,
    drain: Option<AbortHandle>,
}

/// A worker's idle connections to one target.
// Boxed: a connection moves between the pool, the request and its response body by pointer,
// and is several hundred bytes.
#[allow(clippy::vec_box)]
type Pool = Mutex<Vec<Box<UpstreamConn>>>;

pub struct TargetRt {
    pub addr: SocketAddr,
    pub in_flight: InFlightCount,
    /// Upgraded (WebSocket) tunnels open to this target.
    pub long_lived: AtomicU64,
    /// Cuts the target's connections when it is released; counts them.
    pub closer: Arc<Closer>,
    health: AtomicU8,
    pub draining: AtomicBool,
    /// Until when ([`clock::now_ms`]) the target is passively ejected; 0 when it is not.
    ejected_until_ms: AtomicU64,
    detail: Mutex<Detail>,
    pub counters: Counters,
    pub group_counters: Arc<Counters>,
    /// Idle keep-alive connections, one pool per worker: a connection's I/O runs on the worker
    /// that opened it, so only that worker may send on it. Last in, first out, as nginx's
    /// `keepalive` cache: the warmest connection serves next, and ones left over from a burst
    /// idle until the target closes them. The lock is only ever contended by `close`; each
    /// pool has its cache line, so workers taking and returning connections do not share one.
    pools: Box<[CachePadded<Pool>]>,
    /// Woken when a draining target's last request or tunnel ends.
    pub idle: Notify,
    tasks: Mutex<Tasks>,
    /// Told of every change to what [`report`](Self::report) says.
    changes: Arc<HealthChanges>,
}

impl TargetRt {
    pub fn new(
        addr: SocketAddr,
        group_counters: Arc<Counters>,
        changes: Arc<HealthChanges>,
        checks_enabled: bool,
        workers: usize,
    ) -> Self {
        let (health, detail) = if checks_enabled {
            (
                H_INITIAL,
                Detail {
                    reason: Some("Elb.InitialHealthChecking"),
                    description: Some("Initial health checks in progress".into()),
                    ..Detail::default()
                },
            )
        } else {
            (H_UNAVAILABLE, disabled_detail())
        };
        TargetRt {
            addr,
            in_flight: InFlightCount::default(),
            long_lived: AtomicU64::new(0),
            closer: Arc::new(Closer::default()),
            health: AtomicU8::new(health),
            draining: AtomicBool::new(false),
            ejected_until_ms: AtomicU64::new(0),
            detail: Mutex::new(detail),
            counters: Counters::default(),
            group_counters,
            pools: (0..workers.max(1)).map(|_| CachePadded(Mutex::new(Vec::new()))).collect(),
            idle: Notify::new(),
            tasks: Mutex::new(Tasks::default()),
            changes,
        }
    }

    /// Healthy, or not health-checked at all.
    #[inline]
    pub fn routable(&self) -> bool {
        matches!(self.health.load(Ordering::Relaxed), H_HEALTHY | H_UNAVAILABLE)
    }

    /// Takes the target out of its group's picks for [`EJECTION`], or until a health check
    /// passes, while the group has other targets to pick (nginx's `max_fails=1`, Envoy's outlier
    /// detection): its connection was refused, timed out or was outpaced by a hedge. Local to
    /// this load balancer; the health state the control plane reads is the health checks' alone.
    /// Counts the ejection in the group's metrics unless the target was ejected already.
    pub fn eject(&self) {
        let now = clock::now_ms();
        let before =
            self.ejected_until_ms.swap(now + EJECTION.as_millis() as u64, Ordering::Relaxed);
        if !ejected_at(before, now) {
            self.group_counters.inc(metrics::PASSIVE_EJECTIONS);
        }
    }

    /// Whether the target is passively ejected now (see [`eject`](Self::eject)). One relaxed
    /// load unless it was ever ejected: this is on every pick.
    #[inline]
    pub fn ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && ejected_at(until, clock::now_ms())
    }

    pub fn state(&self) -> TargetState {
        if self.draining.load(Ordering::SeqCst) {
            return TargetState::Draining;
        }
        match self.health.load(Ordering::Relaxed) {
            H_INITIAL => TargetState::Initial,
            H_HEALTHY => TargetState::Healthy,
            H_UNHEALTHY => TargetState::Unhealthy,
            _ => TargetState::Unavailable,
        }
    }

    pub fn report(&self) -> TargetHealth {
        let state = self.state();
        let (reason, description) = if state == TargetState::Draining {
            let (reason, description) = DRAINING_DETAIL;
            (Some(reason.to_string()), Some(description.to_string()))
        } else {
            let d = lock(&self.detail);
            (d.reason.map(str::to_string), d.description.clone())
        };
        TargetHealth {
            addr: self.addr,
            state,
            reason,
            description,
            in_flight: self.in_flight.total(),
        }
    }

    /// Applies one health-check result with ALB's thresholds; true if routability changed.
    pub fn record(&self, outcome: Outcome, hc: &HealthCheck) -> bool {
        let mut d = lock(&self.detail);
        let before = self.health.load(Ordering::Relaxed);
        // Whether the reason or description changed: a target that keeps failing the same way
        // says the same, and its report holds.
        let mut detail_changed = false;
        let mut next = before;
        if before == H_UNAVAILABLE {
            // Checks were just enabled again: start over.
            next = H_INITIAL;
            d.passes = 0;
            d.failures = 0;
        }
        match outcome {
            Outcome::Pass => {
                // It answers again: a passive ejection ends with the first check that says so.
                self.ejected_until_ms.store(0, Ordering::Relaxed);
                d.failures = 0;
                d.passes = d.passes.saturating_add(1);
                let promote = match next {
                    H_INITIAL => true,
                    H_UNHEALTHY => d.passes >= hc.healthy_threshold,
                    _ => false,
                };
                if promote || next == H_HEALTHY {
                    next = H_HEALTHY;
                    detail_changed = d.reason.is_some() || d.description.is_some();
                    d.reason = None;
                    d.description = None;
                }
            }
            failure => {
                d.passes = 0;
                d.failures = d.failures.saturating_add(1);
                let (reason, description) = match &failure {
                    Outcome::Mismatch(code) => (
                        "Target.ResponseCodeMismatch",
                        format!("Health checks failed with these codes: [{code}]"),
                    ),
                    Outcome::Timeout => ("Target.Timeout", "Request timed out".to_string()),
                    Outcome::Failed(why) => {
                        ("Target.FailedHealthChecks", format!("Health checks failed: {why}"))
                    }
                    Outcome::Pass => unreachable_pass(),
                };
                if next == H_UNHEALTHY || d.failures >= hc.unhealthy_threshold {
                    next = H_UNHEALTHY;
                    detail_changed = d.reason != Some(reason)
                        || d.description.as_deref() != Some(description.as_str());
                    d.reason = Some(reason);
                    d.description = Some(description);
                }
            }
        }
        self.health.store(next, Ordering::Relaxed);
        if before != next || detail_changed {
            self.changes.health_changed();
        }
        routable_code(before) != routable_code(next)
    }

    /// Health checks were switched off for the group; true if routability changed.
    pub fn disable_checks(&self) -> bool {
        let mut d = lock(&self.detail);
        let before = self.health.swap(H_UNAVAILABLE, Ordering::Relaxed);
        // The checker calls this every second while checks stay off: only the first one says
        // something new.
        if before != H_UNAVAILABLE {
            *d = disabled_detail();
            self.changes.health_changed();
        }
        routable_code(before) != routable_code(H_UNAVAILABLE)
    }

    pub fn healthy(&self) -> bool {
        self.health.load(Ordering::Relaxed) == H_HEALTHY
    }

    pub fn unhealthy(&self) -> bool {
        self.health.load(Ordering::Relaxed) == H_UNHEALTHY
    }

    pub fn is_idle(&self) -> bool {
        self.in_flight.total() == 0 && self.long_lived.load(Ordering::SeqCst) == 0
    }

    /// Ends every connection to the target (pooled, in use, upgraded) and its background tasks.
    pub fn close(&self) {
        self.closer.close();
        for pool in &self.pools {
            lock(pool).clear();
        }
        let mut tasks = lock(&self.tasks);
        if let Some(h) = tasks.health.take() {
            h.abort();
        }
        if let Some(h) = tasks.drain.take() {
            h.abort();
        }
    }

    pub fn set_health_task(&self, handle: AbortHandle) {
        lock(&self.tasks).health = Some(handle);
    }

    pub fn set_drain_task(&self, handle: AbortHandle) {
        if let Some(old) = lock(&self.tasks).drain.replace(handle) {
            old.abort();
        }
    }

    /// Registered again while draining: stop draining, keep health and counters.
    pub fn undrain(&self) {
        if let Some(h) = lock(&self.tasks).drain.take() {
            h.abort();
        }
        self.draining.store(false, Ordering::SeqCst);
        self.changes.health_changed();
    }

    /// Deregistered: reported as draining until released.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.changes.health_changed();
    }

    /// Open connections to this target (pooled or in use).
    pub fn open_conns(&self) -> u64 {
        self.closer.open()
    }

    /// Takes one of `worker`'s idle keep-alive connections, dropping ones the target closed
    /// meanwhile.
    #[inline]
    pub fn checkout(&self, worker: usize) -> Option<Box<UpstreamConn>> {
        let pool = &self.pools[worker % self.pools.len()];
        while let Some(mut conn) = lock(pool).pop() {
            if conn.still_open() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a connection `worker` opened for its next request (closed if the pool is full or
    /// the target was released).
    #[inline]
    pub fn give_back(&self, worker: usize, mut conn: Box<UpstreamConn>) {
        if self.closer.is_closed() {
            return;
        }
        conn.park();
        let pool = &self.pools[worker % self.pools.len()];
        {
            let mut pool = lock(pool);
            if pool.len() < POOL_SIZE {
                pool.push(conn);
            }
        }
        // `close` may have emptied the pools between the check above and the push.
        if self.closer.is_closed() {
            lock(pool).clear();
        }
    }

    /// Ends a request counted by [`InFlight::new`] in `shard`; a draining target that has
    /// nothing left in flight is told so.
    #[inline]
    fn end_request(&self, shard: usize) {
        self.in_flight.shards[shard].fetch_sub(1, Ordering::SeqCst);
        self.changes.in_flight_moved(shard);
        // Every count and this load are sequentially consistent: of requests ending at once on
        // different workers, the last one to decrement sees the total at zero.
        if self.draining.load(Ordering::SeqCst) && self.in_flight.total() == 0 {
            self.idle.notify_one();
        }
    }

    pub fn end_long_lived(&self) {
        if self.long_lived.fetch_sub(1, Ordering::SeqCst) == 1
            && self.draining.load(Ordering::SeqCst)
        {
            self.idle.notify_one();
        }
    }
}

/// Whether an ejection that lasts until `until_ms` (0: none) still holds at `now_ms`.
fn ejected_at(until_ms: u64, now_ms: u64) -> bool {
    now_ms < until_ms
}

fn unreachable_pass() -> (&'static str, String) {
    ("Target.FailedHealthChecks", "Health checks failed".to_string())
}

fn disabled_detail() -> Detail {
    Detail {
        reason: Some("Target.HealthCheckDisabled"),
        description: Some("Health checks are disabled".into()),
        ..Detail::default()
    }
}

fn routable_code(h: u8) -> bool {
    matches!(h, H_HEALTHY | H_UNAVAILABLE)
}

/// Requests in flight to a target, counted per thread shard (as the metrics are, see
/// [`metrics::shard_index`]) so that workers starting and ending requests to the same target never
/// write one cache line; readers sum the shards.
pub struct InFlightCount {
    shards: Box<[CachePadded<AtomicU64>]>,
}

impl Default for InFlightCount {
    fn default() -> Self {
        InFlightCount { shards: (0..metrics::SHARDS).map(|_| CachePadded::default()).collect() }
    }
}

impl InFlightCount {
    /// Requests in flight now. A shard never goes below zero (a request ends in the shard it
    /// started in), so neither does the sum.
    #[inline]
    pub fn total(&self) -> u64 {
        self.shards.iter().map(|s| s.load(Ordering::SeqCst)).sum()
    }
}

/// Counts a request in flight to a target until dropped.
pub struct InFlight {
    pub target: Arc<TargetRt>,
    shard: usize,
}

impl InFlight {
    #[inline]
    pub fn new(target: Arc<TargetRt>) -> Self {
        let shard = metrics::shard_index();
        target.in_flight.shards[shard].fetch_add(1, Ordering::SeqCst);
        target.changes.in_flight_moved(shard);
        InFlight { target, shard }
    }
}

impl Drop for InFlight {
    #[inline]
    fn drop(&mut self) {
        self.target.end_request(self.shard);
    }
}

/// A group's settings that may change from one table to the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupCfg {
    pub health_check: HealthCheck,
    pub deregistration_delay: Duration,
    pub algorithm: Algorithm,
}

/// The targets a request may go to right now.
pub struct Routable {
    pub targets: Vec<Arc<TargetRt>>,
    /// No registered target is healthy, so all of them are used (ALB's fail-open).
    pub fail_open: bool,
    pub algorithm: Algorithm,
}

pub struct GroupRt {
    pub name: Arc<str>,
    pub counters: Arc<Counters>,
    pub cfg: ArcSwap<GroupCfg>,
    /// Registered (not draining) targets, in table order.
    pub registered: ArcSwap<Vec<Arc<TargetRt>>>,
    pub draining: Mutex<Vec<Arc<TargetRt>>>,
    pub routable: ArcSwap<Routable>,
    seq: Sequence,
    recompute_lock: Mutex<()>,
    /// Retries in flight to this group (see [`crate::state::CompiledRetry`]): its retry budget's
    /// count, kept here so that it outlives a route table.
    pub retries_in_flight: AtomicU64,
    /// What the group answered to copies a forward's mirror sent it (see
    /// [`crate::mirror`]), apart from `counters`, which count what clients got.
    pub mirrored: Counters,
    /// Copies in flight to this group: what a mirror's `max_in_flight` bounds.
    pub mirrors_in_flight: AtomicU64,
}

impl GroupRt {
    pub fn new(name: &str, cfg: GroupCfg) -> Self {
        let algorithm = cfg.algorithm;
        GroupRt {
            name: name.into(),
            counters: Arc::new(Counters::with_fine_response_times()),
            cfg: ArcSwap::from_pointee(cfg),
            registered: ArcSwap::from_pointee(Vec::new()),
            draining: Mutex::new(Vec::new()),
            routable: ArcSwap::from_pointee(Routable {
                targets: Vec::new(),
                fail_open: false,
                algorithm,
            }),
            seq: Sequence::default(),
            recompute_lock: Mutex::new(()),
            retries_in_flight: AtomicU64::new(0),
            mirrored: Counters::with_fine_response_times(),
            mirrors_in_flight: AtomicU64::new(0),
        }
    }

    /// Rebuilds the routable set after a health or membership change.
    pub fn recompute(&self) {
        let _serialised = lock(&self.recompute_lock);
        let registered = self.registered.load_full();
        let algorithm = self.cfg.load().algorithm;
        let healthy: Vec<_> = registered.iter().filter(|t| t.routable()).cloned().collect();
        let routable = if healthy.is_empty() {
            Routable { targets: registered.to_vec(), fail_open: !registered.is_empty(), algorithm }
        } else {
            Routable { targets: healthy, fail_open: false, algorithm }
        };
        self.routable.store(Arc::new(routable));
    }

    /// Another routable target of this group for a request `failed` could not take (its
    /// connection was refused, or is slow to open): the next one after it in the routable order
    /// that is not passively ejected, else the next one. `None` when `failed` is not (or no
    /// longer) routable here or is the only target.
    pub fn pick_after(&self, failed: &Arc<TargetRt>) -> Option<Arc<TargetRt>> {
        let routable = self.routable.load();
        let n = routable.targets.len();
        let at = routable.targets.iter().position(|t| Arc::ptr_eq(t, failed))?;
        if n < 2 {
            return None;
        }
        let after = |i: usize| &routable.targets[(at + i) % n];
        let next = (1..n).map(after).find(|t| !t.ejected()).unwrap_or_else(|| after(1));
        Some(next.clone())
    }

    /// Chooses a target for one request; `None` when the group has no registered target.
    #[inline]
    pub fn pick(&self) -> Option<(Arc<TargetRt>, bool)> {
        let routable = self.routable.load();
        let n = routable.targets.len();
        let target = match n {
            0 => return None,
            1 => &routable.targets[0],
            _ => {
                let start = self.seq.next() % n;
                let from_start = (0..n).map(|i| &routable.targets[(start + i) % n]);
                // Passively ejected targets only when every target is.
                let chosen = match routable.algorithm {
                    Algorithm::RoundRobin => from_start.clone().find(|t| !t.ejected()),
                    Algorithm::LeastOutstandingRequests => from_start
                        .clone()
                        .filter(|t| !t.ejected())
                        .min_by_key(|t| t.in_flight.total()),
                };
                chosen.unwrap_or(&routable.targets[start])
            }
        };
        Some((target.clone(), routable.fail_open))
    }

    /// Every target the group still has, registered first, then draining.
    pub fn all_targets(&self) -> Vec<Arc<TargetRt>> {
        let mut all = self.registered.load_full().to_vec();
        all.extend(lock(&self.draining).iter().cloned());
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group_of(n: usize) -> GroupRt {
        let cfg = GroupCfg {
            health_check: HealthCheck { enabled: false, ..HealthCheck::default() },
            deregistration_delay: Duration::ZERO,
            algorithm: Algorithm::RoundRobin,
        };
        let g = GroupRt::new("tg", cfg);
        let targets = (0..n)
            .map(|i| {
                let addr = SocketAddr::from(([127, 0, 0, 1], 8000 + i as u16));
                Arc::new(TargetRt::new(addr, g.counters.clone(), Arc::default(), false, 1))
            })
            .collect();
        g.registered.store(Arc::new(targets));
        g.recompute();
        g
    }

    #[test]
    fn an_ejected_target_is_picked_only_when_every_target_is() {
        crate::clock::ensure_started();
        let g = group_of(3);
        let targets = g.registered.load_full();
        targets[1].eject();
        for _ in 0..12 {
            let (t, _) = g.pick().unwrap();
            assert!(!Arc::ptr_eq(&t, &targets[1]), "picked the ejected target");
        }
        assert!(Arc::ptr_eq(&g.pick_after(&targets[0]).unwrap(), &targets[2]));
        targets[0].eject();
        targets[2].eject();
        assert!(g.pick().is_some(), "all ejected: all are picked again");
        assert_eq!(g.counters.get(metrics::PASSIVE_EJECTIONS), 3);
        targets[0].eject();
        assert_eq!(g.counters.get(metrics::PASSIVE_EJECTIONS), 3, "already ejected: not counted");
    }

    #[test]
    fn a_passing_health_check_ends_an_ejection_and_a_failing_one_does_not() {
        crate::clock::ensure_started();
        let g = group_of(1);
        let t = &g.registered.load_full()[0];
        t.eject();
        let hc = HealthCheck::default();
        t.record(Outcome::Timeout, &hc);
        assert!(t.ejected(), "a failing check keeps it ejected");
        t.record(Outcome::Pass, &hc);
        assert!(!t.ejected());
    }

    #[test]
    fn an_ejection_lasts_until_its_time() {
        assert!(ejected_at(10_000, 9_999));
        assert!(!ejected_at(10_000, 10_000));
        assert!(!ejected_at(0, 0), "0 is no ejection");
    }
}
