//! Client-connection limits, as nginx and HAProxy operators know them: the data plane holds at
//! most [`Limits::cap`] client connections (derived from its open-file limit, HAProxy's rule for
//! `maxconn`); at the cap, a new connection closes the oldest *idle* keep-alive connections first
//! (never one with a request in flight), and is refused at once only when none is idle; a client
//! address holding its listener's `max_per_client` has its new connection closed at once. The
//! warnings about all of it are rate-limited ([`Throttle`]).
//!
//! The decisions are pure functions ([`cap_for_file_limit`], [`admission`], [`Throttle::allow`]);
//! the accept loop in [`crate::listener`] acts on them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

use crate::clock;
use crate::sync::CachePadded;
use crate::target::lock;

/// Descriptors kept for what is not a client connection: listeners, the admin API, health
/// checks, the state file, the runtimes' own.
pub const RESERVED_FDS: u64 = 256;

/// At most one warning of a kind per this many milliseconds.
pub const WARNING_INTERVAL_MS: u64 = 1000;

/// The most client connections `nofile` descriptors allow: each proxied connection may need two
/// (the client's and a target's) once the reserve is set aside, so that accepting never runs the
/// process out of descriptors for its targets.
pub fn cap_for_file_limit(nofile: u64) -> u64 {
    (nofile.saturating_sub(RESERVED_FDS) / 2).max(1)
}

/// The data plane's open-file limit, after raising the soft limit to the hard one.
pub fn raise_file_limit() -> u64 {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!("cannot raise the open-file limit: {e}");
    }
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!("cannot read the open-file limit ({e}); assuming 1024");
            1024
        }
    }
}

/// What to do with a connection just accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Serve,
    /// Close this many idle connections, oldest first, then serve; refuse if none is idle.
    ShedThenServe(u64),
    /// Its client address holds its listener's limit already: close it at once.
    RefuseClient,
}

/// Decides for a new connection from `client_open` of its address (limit `per_client`) and
/// `open` client connections in all (`shedding` of them closing already; limit `cap`).
pub fn admission(
    open: u64,
    shedding: u64,
    cap: u64,
    client_open: u32,
    per_client: u32,
) -> Admission {
    if client_open >= per_client {
        return Admission::RefuseClient;
    }
    let staying = open.saturating_sub(shedding);
    if staying < cap {
        return Admission::Serve;
    }
    // A little more than one at a large cap, so that a flood of new clients does not scan for
    // the oldest idle connection on every accept.
    Admission::ShedThenServe(staying - cap + 1 + cap / 128)
}

/// A connection's state as the shedder sees it: busy, idle since a time, or shed.
pub struct ConnSlot {
    /// [`BUSY`], [`SHED`], or `clock::now_ms() + 1` when it became idle.
    state: AtomicU64,
    waker: AtomicWaker,
    /// Its place in the order of accepts: of two connections idle since the same (coarse)
    /// millisecond, the older goes first.
    seq: u64,
}

const BUSY: u64 = 0;
const SHED: u64 = u64::MAX;

impl ConnSlot {
    /// A new connection is idle until its first byte.
    fn new(seq: u64) -> Self {
        ConnSlot { state: AtomicU64::new(clock::now_ms() + 1), waker: AtomicWaker::new(), seq }
    }

    /// Between requests with nothing buffered: may be shed from now on.
    pub fn idle(&self) {
        let _ = self.state.compare_exchange(
            BUSY,
            clock::now_ms() + 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// A byte arrived: the connection is busy unless it was shed already (false: close it).
    #[inline]
    pub fn busy(&self) -> bool {
        let state = self.state.load(Ordering::Acquire);
        if state == BUSY {
            return true;
        }
        state != SHED
            && self.state.compare_exchange(state, BUSY, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Ready once the connection was shed; only an idle connection can be.
    #[inline]
    pub fn poll_shed(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.state.load(Ordering::Acquire) == BUSY {
            return Poll::Pending;
        }
        self.waker.register(cx.waker());
        if self.state.load(Ordering::Acquire) == SHED { Poll::Ready(()) } else { Poll::Pending }
    }

    pub async fn shed(&self) {
        std::future::poll_fn(|cx| self.poll_shed(cx)).await
    }

    pub fn was_shed(&self) -> bool {
        self.state.load(Ordering::Acquire) == SHED
    }

    /// When it became idle, if it is idle.
    fn idle_since(&self) -> Option<u64> {
        match self.state.load(Ordering::Acquire) {
            BUSY | SHED => None,
            since => Some(since),
        }
    }

    /// Sheds it if it is still idle since `since`.
    fn try_shed(&self, since: u64) -> bool {
        let shed =
            self.state.compare_exchange(since, SHED, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if shed {
            self.waker.wake();
        }
        shed
    }
}

/// Every open client connection's slot, in shards so that connections closing on different
/// workers rarely meet on one lock; only shedding reads them all.
struct Registry {
    shards: Box<[CachePadded<Mutex<Shard>>]>,
}

#[derive(Default)]
struct Shard {
    next_id: u64,
    slots: HashMap<u64, Arc<ConnSlot>>,
}

/// Where a connection is registered, to find it again when it closes.
#[derive(Clone, Copy, Debug)]
pub struct SlotKey {
    shard: usize,
    id: u64,
}

impl Registry {
    fn new(shards: usize) -> Self {
        Registry {
            shards: (0..shards.max(1)).map(|_| CachePadded(Mutex::new(Shard::default()))).collect(),
        }
    }

    /// Registers the connection accepted `seq`-th.
    fn insert(&self, seq: u64) -> (SlotKey, Arc<ConnSlot>) {
        let shard = (seq % self.shards.len() as u64) as usize;
        let slot = Arc::new(ConnSlot::new(seq));
        let mut s = lock(&self.shards[shard].0);
        let id = s.next_id;
        s.next_id += 1;
        s.slots.insert(id, slot.clone());
        (SlotKey { shard, id }, slot)
    }

    fn remove(&self, key: SlotKey) {
        lock(&self.shards[key.shard].0).slots.remove(&key.id);
    }

    /// Sheds up to `n` idle connections, oldest first; returns how many.
    fn shed_oldest(&self, n: u64) -> u64 {
        let mut idle: Vec<(u64, Arc<ConnSlot>)> = Vec::new();
        for shard in self.shards.iter() {
            let s = lock(&shard.0);
            idle.extend(
                s.slots.values().filter_map(|slot| Some((slot.idle_since()?, slot.clone()))),
            );
        }
        let n = usize::try_from(n).unwrap_or(usize::MAX).min(idle.len());
        if n == 0 {
            return 0;
        }
        if n < idle.len() {
            idle.select_nth_unstable_by_key(n - 1, |(since, slot)| (*since, slot.seq));
        }
        // One that turned busy since the scan stays: a request it started is never cut.
        idle[..n].iter().filter(|(since, slot)| slot.try_shed(*since)).count() as u64
    }
}

/// The data plane's connection limits and their state.
pub struct Limits {
    /// The cap derived from the open-file limit.
    file_cap: u64,
    cap: AtomicU64,
    registry: Registry,
    /// Connections shed that have not closed yet.
    shedding: AtomicU64,
    accepted: AtomicU64,
    pub accept_errors: AtomicU64,
    pub warn_accept_error: Throttle,
    pub warn_capacity: Throttle,
    pub warn_shed: Throttle,
    pub warn_per_client: Throttle,
}

impl Limits {
    pub fn new(nofile: u64, shards: usize) -> Self {
        let file_cap = cap_for_file_limit(nofile);
        Limits {
            file_cap,
            cap: AtomicU64::new(file_cap),
            registry: Registry::new(shards),
            shedding: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            warn_accept_error: Throttle::default(),
            warn_capacity: Throttle::default(),
            warn_shed: Throttle::default(),
            warn_per_client: Throttle::default(),
        }
    }

    pub fn cap(&self) -> u64 {
        self.cap.load(Ordering::Relaxed)
    }

    /// Lowers the cap; never above what the open-file limit allows.
    pub fn set_cap(&self, max: u64) {
        self.cap.store(max.clamp(1, self.file_cap), Ordering::Relaxed);
    }

    pub fn shedding(&self) -> u64 {
        self.shedding.load(Ordering::Relaxed)
    }

    pub fn register(&self) -> (SlotKey, Arc<ConnSlot>) {
        self.registry.insert(self.accepted.fetch_add(1, Ordering::Relaxed))
    }

    /// Forgets a closing connection's slot.
    pub fn release(&self, key: SlotKey, slot: &ConnSlot) {
        self.registry.remove(key);
        if slot.was_shed() {
            self.shedding.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Sheds up to `n` idle connections, oldest first; returns how many.
    pub fn shed_oldest(&self, n: u64) -> u64 {
        let shed = self.registry.shed_oldest(n);
        self.shedding.fetch_add(shed, Ordering::Relaxed);
        shed
    }
}

/// Open connections per client address of one listener.
#[derive(Default)]
pub struct PerClient {
    open: Mutex<HashMap<IpAddr, u32>>,
}

impl PerClient {
    pub fn open(&self, ip: IpAddr) -> u32 {
        lock(&self.open).get(&ip).copied().unwrap_or(0)
    }

    pub fn add(&self, ip: IpAddr) {
        *lock(&self.open).entry(ip).or_insert(0) += 1;
    }

    pub fn remove(&self, ip: IpAddr) {
        let mut open = lock(&self.open);
        if let Some(n) = open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }
}

/// A rate limit for one kind of warning: at most one line per [`WARNING_INTERVAL_MS`], which
/// says how many it stands for.
#[derive(Default)]
pub struct Throttle {
    /// `clock::now_ms()` from which the next line may go out.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    /// Whether a warning may be logged at `now_ms`, and if so how many were suppressed since
    /// the last one.
    pub fn allow(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Relaxed);
        if now_ms < next
            || self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms + WARNING_INTERVAL_MS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// `" (and N more like it since the last warning)"`, or nothing.
pub fn suppressed_note(n: u64) -> String {
    if n == 0 { String::new() } else { format!(" (and {n} more like it since the last warning)") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_two_descriptors_per_connection_after_the_reserve() {
        assert_eq!(cap_for_file_limit(20_000), 9_872);
        assert_eq!(cap_for_file_limit(1_048_576), 524_160);
        assert_eq!(cap_for_file_limit(1024), 384);
        assert_eq!(cap_for_file_limit(100), 1, "never zero");
    }

    #[test]
    fn admission_refuses_a_client_at_its_limit_and_sheds_at_the_cap() {
        assert_eq!(admission(0, 0, 10, 0, 1), Admission::Serve);
        assert_eq!(admission(9, 0, 10, 0, 1), Admission::Serve);
        assert_eq!(admission(10, 0, 10, 0, 1), Admission::ShedThenServe(1));
        // Those closing already make room.
        assert_eq!(admission(10, 1, 10, 0, 1), Admission::Serve);
        assert_eq!(admission(5, 0, 10, 1, 1), Admission::RefuseClient);
        // A client at its limit is refused even when the cap would shed for it.
        assert_eq!(admission(10, 0, 10, 3, 3), Admission::RefuseClient);
        // At a large cap, a batch.
        assert_eq!(admission(12_800, 0, 12_800, 0, 1000), Admission::ShedThenServe(101));
    }

    #[test]
    fn a_throttle_lets_one_line_through_per_interval_and_counts_the_rest() {
        let t = Throttle::default();
        assert_eq!(t.allow(5_000), Some(0));
        assert_eq!(t.allow(5_001), None);
        assert_eq!(t.allow(5_999), None);
        assert_eq!(t.allow(6_000), Some(2));
        assert_eq!(t.allow(6_000), None);
        assert_eq!(t.allow(9_000), Some(1));
    }

    #[test]
    fn only_idle_connections_are_shed_oldest_first() {
        crate::clock::ensure_started();
        let r = Registry::new(2);
        let (_, busy) = r.insert(0);
        assert!(busy.busy());
        let slots: Vec<_> = (1..=4).map(|i| r.insert(i).1).collect();
        // Idle since different times, the second oldest; the last two since the same
        // millisecond, where the one accepted first is the older.
        for (slot, since) in slots.iter().zip([30, 10, 20, 20]) {
            slot.state.store(since, Ordering::Relaxed);
        }
        assert_eq!(r.shed_oldest(1), 1);
        assert!(slots[1].was_shed());
        assert!(!slots[1].busy(), "a shed connection cannot turn busy");
        assert_eq!(r.shed_oldest(1), 1);
        assert!(slots[2].was_shed() && !slots[3].was_shed());
        assert_eq!(r.shed_oldest(5), 2);
        assert!(!busy.was_shed());
        assert_eq!(r.shed_oldest(1), 0, "nothing idle is left");
    }
}
