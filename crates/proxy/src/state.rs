//! The data plane's state and how a new route table becomes live: validate everything, bind new
//! sockets, persist, then swap one `ArcSwap` so that every request sees either the old table or
//! the new one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use routes::rules::{self, Matcher, RequestView};
use routes::{
    Action, Applied, DEFAULT_IDLE_TIMEOUT_MS, FixedResponse, ForwardAction, Listener, Preview,
    PreviewFrom, Redirect, RouteTable, Rule, TargetGroup, WEIGHT_MAX,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::limits::Limits;
use crate::listener::{self, ListenerShared};
use crate::metrics::Sequence;
use crate::target::{GroupCfg, GroupRt, HealthChanges, TargetRt, lock};
use crate::workers::Workers;
use crate::{health, tls};

/// ALB's quotas, so a table stays a size the data plane can serve. A table holds every load
/// balancer of an installation: `cutover.yaml` applies ALB's per-load-balancer quotas (50
/// listeners, 100 target groups each), and the whole table gets what a region holds (50 load
/// balancers of 50 listeners, 3,000 target groups).
const MAX_LISTENERS: usize = 2_500;
const MAX_GROUPS: usize = 3_000;
const MAX_GROUPS_PER_FORWARD: usize = 5;
const MAX_TARGETS_PER_GROUP: usize = 1000;
const MAX_FIXED_BODY: usize = 64 * 1024;

pub struct Shared {
    pub table: ArcSwap<Compiled>,
    pub groups: Mutex<BTreeMap<String, Arc<GroupRt>>>,
    /// What moves the health report of `groups` (the admin API's ETag).
    pub health_changes: Arc<HealthChanges>,
    pub listeners: Mutex<HashMap<SocketAddr, Arc<ListenerShared>>>,
    next_slot: AtomicUsize,
    apply_lock: tokio::sync::Mutex<()>,
    state_file: Option<PathBuf>,
    pub started_at_unix_ms: u64,
    pub client_conns: AtomicU64,
    pub shutting_down: AtomicBool,
    pub workers: Workers,
    pub limits: Limits,
}

/// A route table compiled for the request path.
pub struct Compiled {
    pub table: RouteTable,
    /// False until the first table is applied (any version is accepted then).
    pub applied: bool,
    /// By listener slot (stable per bind address).
    pub slots: Vec<Option<Route>>,
}

pub struct Route {
    /// The listener's rules, lowest priority first, each compiled once for this table.
    pub rules: Box<[(Matcher, CompiledAction)]>,
    /// The default action, for a request no rule takes.
    pub action: CompiledAction,
    pub idle_timeout: Duration,
}

impl Route {
    /// The action of the first rule that takes `req`, else the default action. A listener
    /// without rules pays one length check.
    #[inline]
    pub fn action_for<R: RequestView + ?Sized>(&self, req: &R) -> &CompiledAction {
        if self.rules.is_empty() {
            return &self.action;
        }
        rules::first_match(&self.rules, req).unwrap_or(&self.action)
    }

    /// Every action of the listener: its rules' and its default.
    pub fn actions(&self) -> impl Iterator<Item = &CompiledAction> {
        self.rules.iter().map(|(_, a)| a).chain(std::iter::once(&self.action))
    }
}

pub enum CompiledAction {
    Forward(Forward),
    Fixed(Fixed),
    Redirect(Redirect),
}

pub struct Forward {
    /// (cumulative weight, group), only groups with weight > 0.
    pub groups: Vec<(u32, Arc<GroupRt>)>,
    pub total: u32,
    seq: Sequence,
    /// Boxed: most forwards have none, and the route stays small.
    pub preview: Option<Box<CompiledPreview>>,
    /// Boxed for the same reason.
    pub retry: Option<Box<CompiledRetry>>,
    /// Boxed for the same reason.
    pub mirror: Option<Box<CompiledMirror>>,
}

/// [`routes::Mirror`], ready for the request path.
pub struct CompiledMirror {
    /// Where copies go.
    pub to: Arc<GroupRt>,
    /// Uppercase method names.
    methods: Box<[Box<[u8]>]>,
    pub max_body_bytes: u64,
    pub max_in_flight: u64,
    policy: routes::Mirror,
    /// Counts the requests that may be copied, per worker thread, for the share.
    seq: Sequence,
}

impl CompiledMirror {
    /// Whether a request of `method` may be copied.
    #[inline]
    pub fn allows(&self, method: &[u8]) -> bool {
        self.methods.iter().any(|m| **m == *method)
    }

    /// Whether the next request that may be copied is: the share holds on each worker thread.
    #[inline]
    pub fn takes_next(&self) -> bool {
        self.policy.copies(self.seq.next() as u64)
    }
}

/// [`routes::Retry`], ready for the request path.
pub struct CompiledRetry {
    /// Where failed requests go again.
    pub to: Arc<GroupRt>,
    /// The forward's other groups, at any weight: a group a rollback just weighted 0 still has
    /// requests in flight, whose failures are retried all the same.
    pub from: Vec<Arc<GroupRt>>,
    /// Uppercase method names.
    methods: Box<[Box<[u8]>]>,
    pub max_body_bytes: u64,
    pub policy: routes::Retry,
}

impl CompiledRetry {
    /// Whether a request of `method` may be sent twice.
    #[inline]
    pub fn allows(&self, method: &[u8]) -> bool {
        self.methods.iter().any(|m| **m == *method)
    }

    /// The group of the forward's other groups that `group_counters` belong to.
    pub fn failed_group(&self, group_counters: &Arc<crate::metrics::Counters>) -> Option<&GroupRt> {
        self.from.iter().find(|g| Arc::ptr_eq(&g.counters, group_counters)).map(|g| &**g)
    }

    /// Requests in flight to the forward's groups now, retries included.
    pub fn in_flight(&self) -> u64 {
        let mut total = 0;
        for group in std::iter::once(&self.to).chain(&self.from) {
            total += group.registered.load().iter().map(|t| t.in_flight.total()).sum::<u64>();
        }
        total
    }
}

/// [`routes::Preview`], ready for the request path.
pub struct CompiledPreview {
    from: PreviewFrom,
    /// The header's name in lowercase, or the cookie's name as written.
    name: Box<[u8]>,
    /// Value → group, a handful at most.
    groups: Vec<(Box<[u8]>, Arc<GroupRt>)>,
}

impl CompiledPreview {
    /// The group a request chooses by its header or cookie, if it names one. The first header
    /// (or cookie) of that name decides, as most servers read a single-valued field.
    pub fn choose<'h>(
        &self,
        headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
    ) -> Option<&Arc<GroupRt>> {
        let named = |value: &[u8]| {
            self.groups.iter().find(|(v, _)| **v == *value.trim_ascii()).map(|(_, g)| g)
        };
        for (name, value) in headers {
            match self.from {
                PreviewFrom::Header if name.eq_ignore_ascii_case(&self.name) => {
                    return named(value);
                }
                PreviewFrom::Cookie if name.eq_ignore_ascii_case(b"cookie") => {
                    // RFC 6265 §5.4: `name=value` pairs separated by `;` and a space.
                    for pair in value.split(|&b| b == b';') {
                        if let Some((cookie, value)) = split_once(pair.trim_ascii(), b'=')
                            && *cookie == *self.name
                        {
                            return named(value);
                        }
                    }
                }
                _ => {}
            }
        }
        None
    }
}

fn split_once(bytes: &[u8], at: u8) -> Option<(&[u8], &[u8])> {
    let i = bytes.iter().position(|&b| b == at)?;
    Some((&bytes[..i], &bytes[i + 1..]))
}

impl Forward {
    /// Weighted choice without shared state: a per-thread counter spread by Fibonacci hashing is
    /// a low-discrepancy sequence, so every window of requests splits close to the weights.
    #[inline]
    pub fn choose(&self) -> Option<&Arc<GroupRt>> {
        match self.groups.len() {
            0 => None,
            1 => Some(&self.groups[0].1),
            _ => {
                let n = self.seq.next() as u64;
                let x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
                let r = ((x * self.total as u64) >> 32) as u32;
                self.groups.iter().find(|(cum, _)| r < *cum).map(|(_, g)| g)
            }
        }
    }
}

pub struct Fixed {
    pub status: StatusCode,
    pub content_type: HeaderValue,
    pub body: Bytes,
}

/// Why a table was refused; `status` is the admin API's answer.
#[derive(Debug)]
pub struct ApplyError {
    pub status: StatusCode,
    pub message: String,
}

fn bad(message: String) -> ApplyError {
    ApplyError { status: StatusCode::BAD_REQUEST, message }
}

fn conflict(message: String) -> ApplyError {
    ApplyError { status: StatusCode::CONFLICT, message }
}

impl Shared {
    /// `nofile` is the open-file limit, from which the connection cap follows.
    pub fn new(
        state_file: Option<PathBuf>,
        worker_threads: usize,
        nofile: u64,
    ) -> anyhow::Result<Self> {
        // A process of its own, without the control plane's store::clock: when it started, shown only.
        #[allow(clippy::disallowed_methods)]
        let started_at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Ok(Shared {
            table: ArcSwap::from_pointee(Compiled {
                table: RouteTable::default(),
                applied: false,
                slots: Vec::new(),
            }),
            groups: Mutex::new(BTreeMap::new()),
            health_changes: Arc::default(),
            listeners: Mutex::new(HashMap::new()),
            next_slot: AtomicUsize::new(0),
            apply_lock: tokio::sync::Mutex::new(()),
            state_file,
            started_at_unix_ms,
            client_conns: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            workers: Workers::start(worker_threads)?,
            limits: Limits::new(nofile, worker_threads),
        })
    }

    pub fn version(&self) -> u64 {
        self.table.load().table.version
    }
}

/// Validates, binds, persists and swaps in `table`; answers only once it is live.
pub async fn apply(
    shared: &Arc<Shared>,
    table: RouteTable,
    persist: bool,
) -> Result<Applied, ApplyError> {
    let _one_at_a_time = shared.apply_lock.lock().await;
    if shared.shutting_down.load(Ordering::SeqCst) {
        return Err(ApplyError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the load balancer is shutting down".into(),
        });
    }
    let current = shared.table.load_full();
    if current.applied {
        let served = current.table.version;
        if table.version < served {
            return Err(conflict(format!(
                "version {} is older than the served version {served}; send a version >= {served}",
                table.version
            )));
        }
        if table.version == served {
            if table == current.table {
                return Ok(Applied { version: served });
            }
            return Err(conflict(format!(
                "version {served} is already served with different content; send the change as version {}",
                served + 1
            )));
        }
    }
    let (acceptors, bound) = prepare(shared, &table)?;

    if persist && let Some(path) = &shared.state_file {
        write_state(path, &table).map_err(|e| ApplyError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("cannot persist the table to state file {}: {e}", path.display()),
        })?;
    }

    commit(shared, table, acceptors, bound);
    Ok(Applied { version: shared.version() })
}

/// Checks `table` as [`apply`] would, without applying or persisting it: it is valid, every TLS
/// certificate loads and every new listener's socket can be bound (the sockets are closed again).
pub async fn check(shared: &Arc<Shared>, table: &RouteTable) -> Result<(), ApplyError> {
    // Under the apply lock, so that a table being applied meanwhile cannot own a port this one
    // binds for a moment (or the other way round).
    let _one_at_a_time = shared.apply_lock.lock().await;
    prepare(shared, table).map(drop)
}

/// A listener's TLS acceptor and the state of the files it was built from.
type Tls = Option<(TlsAcceptor, tls::FilesStamp)>;

type Prepared = (HashMap<SocketAddr, Tls>, HashMap<SocketAddr, TcpListener>);

/// Everything of applying `table` that can fail: validation, TLS acceptors, new sockets.
fn prepare(shared: &Shared, table: &RouteTable) -> Result<Prepared, ApplyError> {
    validate(table).map_err(|e| bad(e.to_string()))?;

    let mut acceptors: HashMap<SocketAddr, Tls> = HashMap::new();
    for (name, l) in &table.listeners {
        let acceptor = match &l.tls {
            Some(cfg) => {
                // Stamped before reading: a file replaced meanwhile is read again.
                let stamp = tls::FilesStamp::of(cfg);
                let acceptor =
                    tls::acceptor(cfg).map_err(|e| bad(format!("listener `{name}`: {e}")))?;
                Some((acceptor, stamp))
            }
            None => None,
        };
        acceptors.insert(l.bind, acceptor);
    }

    // Bind what is new; if any bind fails, the ones made so far are dropped with this map.
    let existing: BTreeSet<SocketAddr> = lock(&shared.listeners).keys().copied().collect();
    let mut bound: HashMap<SocketAddr, TcpListener> = HashMap::new();
    for (name, l) in &table.listeners {
        if existing.contains(&l.bind) {
            continue;
        }
        let socket = listener::bind(l.bind).map_err(|e| {
            conflict(format!(
                "listener `{name}`: cannot listen on {}: {e}; free the port or choose another bind address",
                l.bind
            ))
        })?;
        bound.insert(l.bind, socket);
    }
    Ok((acceptors, bound))
}

/// From here on nothing can fail: the table is valid and every socket is bound.
fn commit(
    shared: &Arc<Shared>,
    table: RouteTable,
    mut acceptors: HashMap<SocketAddr, Tls>,
    mut bound: HashMap<SocketAddr, TcpListener>,
) {
    let mut groups_out: HashMap<String, Arc<GroupRt>> = HashMap::new();
    {
        let mut groups = lock(&shared.groups);
        for (name, tg) in &table.target_groups {
            let cfg = group_cfg(tg);
            let group = groups
                .entry(name.clone())
                .or_insert_with(|| Arc::new(GroupRt::new(name, cfg.clone())))
                .clone();
            if **group.cfg.load() != cfg {
                group.cfg.store(Arc::new(cfg));
            }
            set_targets(shared, &group, tg);
            groups_out.insert(name.clone(), group);
        }
        for (name, group) in groups.iter() {
            if !table.target_groups.contains_key(name) {
                set_targets(
                    shared,
                    group,
                    &TargetGroup { targets: Vec::new(), ..empty_group(group) },
                );
            }
        }
        groups.retain(|name, g| {
            table.target_groups.contains_key(name) || !lock(&g.draining).is_empty()
        });
        shared.health_changes.health_changed();
    }

    let mut new_listeners = Vec::new();
    let mut removed = Vec::new();
    let mut slot_of: HashMap<SocketAddr, usize> = HashMap::new();
    {
        let mut listeners = lock(&shared.listeners);
        for l in table.listeners.values() {
            let (acceptor, stamp) = acceptors.remove(&l.bind).flatten().unzip();
            let idle = l.idle_timeout_ms.unwrap_or(DEFAULT_IDLE_TIMEOUT_MS);
            if let Some(ls) = listeners.get(&l.bind) {
                ls.tls.store(acceptor.map(Arc::new));
                *lock(&ls.tls_stamp) = stamp;
                ls.idle_timeout_ms.store(idle, Ordering::Relaxed);
                ls.set_limits(&l.limits, idle);
                slot_of.insert(l.bind, ls.slot);
            } else if let Some(socket) = bound.remove(&l.bind) {
                let slot = shared.next_slot.fetch_add(1, Ordering::Relaxed);
                let ls = Arc::new(ListenerShared::new(slot, l.bind, acceptor, idle));
                *lock(&ls.tls_stamp) = stamp;
                ls.set_limits(&l.limits, idle);
                listeners.insert(l.bind, ls.clone());
                slot_of.insert(l.bind, slot);
                new_listeners.push((ls, socket));
            }
        }
        let keep: BTreeSet<SocketAddr> = table.listeners.values().map(|l| l.bind).collect();
        listeners.retain(|bind, ls| {
            let stays = keep.contains(bind);
            if !stays {
                removed.push(ls.clone());
            }
            stays
        });
    }

    let slots_len = shared.next_slot.load(Ordering::Relaxed);
    let mut slots: Vec<Option<Route>> = (0..slots_len).map(|_| None).collect();
    for l in table.listeners.values() {
        let Some(&slot) = slot_of.get(&l.bind) else { continue };
        slots[slot] = Some(Route {
            rules: compile_rules(&l.rules, &groups_out),
            action: compile_action(&l.action, &groups_out),
            idle_timeout: Duration::from_millis(
                l.idle_timeout_ms.unwrap_or(DEFAULT_IDLE_TIMEOUT_MS),
            ),
        });
    }
    let version = table.version;
    shared.table.store(Arc::new(Compiled { table, applied: true, slots }));

    for (ls, socket) in new_listeners {
        listener::spawn_accept(shared.clone(), ls, socket);
    }
    for ls in removed {
        ls.stop.send_replace(true);
    }
    tracing::info!(version, "route table applied");
}

/// How often HTTPS listeners' certificate and key files are looked at for a renewal.
const CERTIFICATE_POLL: Duration = Duration::from_secs(1);

/// Serves renewed certificates: every [`CERTIFICATE_POLL`], an HTTPS listener whose certificate
/// or key files changed since its acceptor was built gets a new acceptor from them, for the
/// handshakes that follow; connections already open keep theirs and are never dropped. Files
/// that do not make a usable acceptor (a renewal half written, a key that does not match) leave
/// the listener serving what it had, with a warning, until they change again.
pub fn spawn_certificate_reloader(shared: Arc<Shared>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CERTIFICATE_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if shared.shutting_down.load(Ordering::Relaxed) {
                return;
            }
            // Under the apply lock: a table applied meanwhile sets the acceptors itself.
            let _one_at_a_time = shared.apply_lock.lock().await;
            reload_changed_certificates(&shared);
        }
    });
}

fn reload_changed_certificates(shared: &Shared) {
    let table = shared.table.load();
    for (name, l) in &table.table.listeners {
        let Some(cfg) = &l.tls else { continue };
        let Some(ls) = lock(&shared.listeners).get(&l.bind).cloned() else { continue };
        let stamp = tls::FilesStamp::of(cfg);
        if lock(&ls.tls_stamp).as_ref() == Some(&stamp) {
            continue;
        }
        match tls::acceptor(cfg) {
            Ok(acceptor) => {
                ls.tls.store(Some(Arc::new(acceptor)));
                tracing::info!(listener = %name, "certificates reloaded from disk");
            }
            Err(e) => tracing::warn!(
                listener = %name,
                "certificates changed on disk but cannot be served ({e}); still serving the previous ones"
            ),
        }
        *lock(&ls.tls_stamp) = Some(stamp);
    }
}

fn empty_group(group: &GroupRt) -> TargetGroup {
    let cfg = group.cfg.load();
    TargetGroup {
        health_check: cfg.health_check.clone(),
        deregistration_delay_ms: cfg.deregistration_delay.as_millis() as u64,
        algorithm: cfg.algorithm,
        targets: Vec::new(),
    }
}

fn group_cfg(tg: &TargetGroup) -> GroupCfg {
    GroupCfg {
        health_check: tg.health_check.clone(),
        deregistration_delay: Duration::from_millis(tg.deregistration_delay_ms),
        algorithm: tg.algorithm,
    }
}

/// Makes `tg.targets` the group's registered targets: keeps known ones (with their health),
/// brings back draining ones, starts checks for new ones and drains the ones that left.
fn set_targets(shared: &Arc<Shared>, group: &Arc<GroupRt>, tg: &TargetGroup) {
    let old = group.registered.load_full();
    let mut draining = lock(&group.draining);
    let mut list = Vec::with_capacity(tg.targets.len());
    for target in &tg.targets {
        if let Some(t) = old.iter().find(|t| t.addr == target.addr) {
            list.push(t.clone());
        } else if let Some(pos) = draining.iter().position(|t| t.addr == target.addr) {
            let t = draining.remove(pos);
            t.undrain();
            list.push(t);
        } else {
            let enabled = tg.health_check.enabled;
            let t = Arc::new(TargetRt::new(
                target.addr,
                group.counters.clone(),
                shared.health_changes.clone(),
                enabled,
                shared.workers.count(),
            ));
            // The task also runs while checks are disabled, to notice when they come back.
            health::spawn(group.clone(), t.clone());
            list.push(t);
        }
    }
    for t in old.iter() {
        if !tg.targets.iter().any(|x| x.addr == t.addr) {
            t.start_draining();
            draining.push(t.clone());
            spawn_drain(shared.clone(), group.clone(), t.clone());
        }
    }
    drop(draining);
    if !tg.health_check.enabled {
        for t in &list {
            t.disable_checks();
        }
    }
    group.registered.store(Arc::new(list));
    group.recompute();
}

/// Drains a deregistered target: no new requests (it is out of the routable set already), and it
/// is released when idle or when the delay ends, whichever comes first.
fn spawn_drain(shared: Arc<Shared>, group: Arc<GroupRt>, target: Arc<TargetRt>) {
    let delay = group.cfg.load().deregistration_delay;
    let t = target.clone();
    let task = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            if t.is_idle() {
                break;
            }
            tokio::select! {
                _ = t.idle.notified() => {}
                _ = tokio::time::sleep_until(deadline) => break,
                // Belt and braces: an idle moment that raced the notification.
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        release(&shared, &group, &t);
    });
    target.set_drain_task(task.abort_handle());
}

fn release(shared: &Shared, group: &Arc<GroupRt>, target: &Arc<TargetRt>) {
    let mut groups = lock(&shared.groups);
    let mut draining = lock(&group.draining);
    let Some(pos) = draining.iter().position(|t| Arc::ptr_eq(t, target)) else { return };
    draining.remove(pos);
    let empty = draining.is_empty();
    drop(draining);
    // `close` aborts this very task's handle; nothing async follows, so that is harmless.
    target.close();
    let in_table = shared.table.load().table.target_groups.contains_key(&*group.name);
    if empty && !in_table {
        groups.remove(&*group.name);
    }
    shared.health_changes.health_changed();
}

/// The rules in priority order, compiled. [`validate`] has refused a table with a rule that does
/// not compile, so none is left out here.
fn compile_rules(
    rules: &[Rule],
    groups: &HashMap<String, Arc<GroupRt>>,
) -> Box<[(Matcher, CompiledAction)]> {
    let mut sorted: Vec<&Rule> = rules.iter().collect();
    sorted.sort_by_key(|r| r.priority);
    sorted
        .into_iter()
        .filter_map(|r| Some((Matcher::new(r).ok()?, compile_action(&r.action, groups))))
        .collect()
}

fn compile_action(action: &Action, groups: &HashMap<String, Arc<GroupRt>>) -> CompiledAction {
    match action {
        Action::Forward(fwd) => {
            let mut total = 0u32;
            let mut list = Vec::new();
            for w in &fwd.target_groups {
                if w.weight == 0 {
                    continue;
                }
                if let Some(g) = groups.get(&w.name) {
                    total += w.weight as u32;
                    list.push((total, g.clone()));
                }
            }
            let preview = fwd.preview.as_ref().map(|p| {
                Box::new(CompiledPreview {
                    from: p.from,
                    name: match p.from {
                        PreviewFrom::Header => p.name.to_ascii_lowercase().into_bytes().into(),
                        PreviewFrom::Cookie => p.name.as_bytes().into(),
                    },
                    groups: p
                        .target_groups
                        .iter()
                        .filter_map(|(value, tg)| {
                            groups.get(tg).map(|g| (value.as_bytes().into(), g.clone()))
                        })
                        .collect(),
                })
            });
            CompiledAction::Forward(Forward {
                groups: list,
                total,
                seq: Sequence::default(),
                preview,
                retry: fwd.retry.as_ref().and_then(|r| compile_retry(r, fwd, groups)),
                mirror: fwd.mirror.as_ref().and_then(|m| compile_mirror(m, groups)),
            })
        }
        Action::FixedResponse(f) => CompiledAction::Fixed(Fixed {
            status: StatusCode::from_u16(f.status_code).unwrap_or(StatusCode::OK),
            content_type: f
                .content_type
                .as_deref()
                .and_then(|c| HeaderValue::from_str(c).ok())
                .unwrap_or(HeaderValue::from_static("text/plain; charset=utf-8")),
            body: Bytes::from(f.body.clone()),
        }),
        Action::Redirect(r) => CompiledAction::Redirect(r.clone()),
    }
}

/// [`validate_retry`] has refused a retry to a group the forward does not name.
fn compile_retry(
    retry: &routes::Retry,
    fwd: &ForwardAction,
    groups: &HashMap<String, Arc<GroupRt>>,
) -> Option<Box<CompiledRetry>> {
    let to = groups.get(&retry.target_group)?.clone();
    let from = fwd
        .target_groups
        .iter()
        .filter(|w| w.name != retry.target_group)
        .filter_map(|w| groups.get(&w.name).cloned())
        .collect();
    Some(Box::new(CompiledRetry {
        to,
        from,
        methods: retry.methods.iter().map(|m| m.as_bytes().into()).collect(),
        max_body_bytes: u64::from(retry.max_body_bytes),
        policy: retry.clone(),
    }))
}

/// [`validate_mirror`] has refused a mirror to a group the forward does not name.
fn compile_mirror(
    mirror: &routes::Mirror,
    groups: &HashMap<String, Arc<GroupRt>>,
) -> Option<Box<CompiledMirror>> {
    Some(Box::new(CompiledMirror {
        to: groups.get(&mirror.target_group)?.clone(),
        methods: mirror.methods.iter().map(|m| m.as_bytes().into()).collect(),
        max_body_bytes: u64::from(mirror.max_body_bytes),
        max_in_flight: u64::from(mirror.max_in_flight),
        policy: mirror.clone(),
        seq: Sequence::default(),
    }))
}

fn validate_mirror(
    listener: &str,
    m: &routes::Mirror,
    forwarded: &BTreeSet<&String>,
) -> Result<(), InvalidTable> {
    let bad = |problem: String| Err(InvalidTable::listener(listener, problem));
    if !forwarded.contains(&m.target_group) {
        return bad(format!(
            "mirror names target group `{}`, which this forward does not",
            m.target_group
        ));
    }
    if !(1..=100).contains(&m.percent) {
        return bad(format!("mirror percent {} is not 1-100", m.percent));
    }
    if let Some(method) = m.methods.iter().find(|m| !routes::Retry::is_valid_method(m)) {
        return bad(format!(
            "mirror method {method:?} is not an uppercase method name such as GET"
        ));
    }
    if m.max_body_bytes > routes::Retry::MAX_BODY_BYTES_LIMIT {
        return bad(format!(
            "mirror max_body_bytes {} is above {}",
            m.max_body_bytes,
            routes::Retry::MAX_BODY_BYTES_LIMIT
        ));
    }
    if !(1..=routes::Mirror::MAX_IN_FLIGHT_LIMIT).contains(&m.max_in_flight) {
        return bad(format!(
            "mirror max_in_flight {} is not 1-{}",
            m.max_in_flight,
            routes::Mirror::MAX_IN_FLIGHT_LIMIT
        ));
    }
    Ok(())
}

fn validate_retry(
    listener: &str,
    r: &routes::Retry,
    forwarded: &BTreeSet<&String>,
) -> Result<(), InvalidTable> {
    let bad = |problem: String| Err(InvalidTable::listener(listener, problem));
    if !forwarded.contains(&r.target_group) {
        return bad(format!(
            "retry names target group `{}`, which this forward does not",
            r.target_group
        ));
    }
    if let Some(m) = r.methods.iter().find(|m| !routes::Retry::is_valid_method(m)) {
        return bad(format!("retry method {m:?} is not an uppercase method name such as GET"));
    }
    if r.max_body_bytes > routes::Retry::MAX_BODY_BYTES_LIMIT {
        return bad(format!(
            "retry max_body_bytes {} is above {}",
            r.max_body_bytes,
            routes::Retry::MAX_BODY_BYTES_LIMIT
        ));
    }
    if r.budget_percent > 100 {
        return bad(format!("retry budget_percent {} is not 0-100", r.budget_percent));
    }
    Ok(())
}

fn validate_preview(
    listener: &str,
    p: &Preview,
    forwarded: &BTreeSet<&String>,
) -> Result<(), InvalidTable> {
    if !Preview::is_valid_name(&p.name) {
        return Err(InvalidTable::listener(
            listener,
            format!(
                "preview {} name {:?} is not a valid field or cookie name",
                match p.from {
                    PreviewFrom::Header => "header",
                    PreviewFrom::Cookie => "cookie",
                },
                p.name
            ),
        ));
    }
    for (value, tg) in &p.target_groups {
        if !Preview::is_valid_value(value) {
            return Err(InvalidTable::listener(
                listener,
                format!(
                    "preview value {value:?} must be 1-{} visible characters without `;` or `,`",
                    Preview::TEXT_MAX
                ),
            ));
        }
        if !forwarded.contains(tg) {
            return Err(InvalidTable::listener(
                listener,
                format!(
                    "preview value {value:?} names target group `{tg}`, which this forward does not"
                ),
            ));
        }
    }
    Ok(())
}

/// Why the data plane refuses a routing table: which listener or target group, and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTable {
    #[error("{count} listeners; at most {MAX_LISTENERS}")]
    TooManyListeners { count: usize },
    #[error("{count} target groups; at most {MAX_GROUPS}")]
    TooManyGroups { count: usize },
    #[error("listeners `{first}` and `{second}` both bind {bind}; give each its own address")]
    SameBind { first: String, second: String, bind: SocketAddr },
    #[error("listener `{listener}`: {problem}")]
    Listener { listener: String, problem: String },
    #[error("listener `{listener}` rule {priority}: {problem}")]
    Rule { listener: String, priority: u32, problem: String },
    #[error("target group `{group}`: {problem}")]
    TargetGroup { group: String, problem: String },
}

impl InvalidTable {
    fn listener(listener: &str, problem: String) -> InvalidTable {
        InvalidTable::Listener { listener: listener.to_string(), problem }
    }
}

/// Everything that can be checked without touching the machine.
pub fn validate(table: &RouteTable) -> Result<(), InvalidTable> {
    if table.listeners.len() > MAX_LISTENERS {
        return Err(InvalidTable::TooManyListeners { count: table.listeners.len() });
    }
    if table.target_groups.len() > MAX_GROUPS {
        return Err(InvalidTable::TooManyGroups { count: table.target_groups.len() });
    }
    let mut binds: HashMap<SocketAddr, &str> = HashMap::new();
    for (name, l) in &table.listeners {
        if let Some(other) = binds.insert(l.bind, name) {
            return Err(InvalidTable::SameBind {
                first: other.to_string(),
                second: name.clone(),
                bind: l.bind,
            });
        }
        validate_listener(name, l, table)?;
    }
    for (name, tg) in &table.target_groups {
        validate_group(name, tg)?;
    }
    Ok(())
}

fn validate_listener(name: &str, l: &Listener, table: &RouteTable) -> Result<(), InvalidTable> {
    let bad = |problem: String| InvalidTable::listener(name, problem);
    if l.bind.port() == 0 {
        return Err(bad(format!("bind {} needs a port (1-65535)", l.bind)));
    }
    if let Some(ms) = l.idle_timeout_ms
        && !(1..=4_000_000).contains(&ms)
    {
        return Err(bad(format!("idle_timeout_ms {ms} is not 1-4000000")));
    }
    let idle = l.idle_timeout_ms.unwrap_or(DEFAULT_IDLE_TIMEOUT_MS);
    l.limits.check(idle).map_err(|e| bad(e.to_string()))?;
    validate_rules(name, &l.rules, table)?;
    validate_action(name, &l.action, table)
}

fn validate_action(name: &str, action: &Action, table: &RouteTable) -> Result<(), InvalidTable> {
    match action {
        Action::Forward(f) => validate_forward(name, f, table),
        Action::FixedResponse(f) => validate_fixed_response(name, f),
        Action::Redirect(r) => validate_redirect(name, r),
    }
}

/// ALB's rules for listener rules: at most [`rules::MAX_RULES_PER_LOAD_BALANCER`], priorities unique,
/// conditions ALB accepts, and actions valid as a default action's.
fn validate_rules(name: &str, list: &[Rule], table: &RouteTable) -> Result<(), InvalidTable> {
    if list.len() > rules::MAX_RULES_PER_LOAD_BALANCER {
        return Err(InvalidTable::listener(
            name,
            format!("{} rules; at most {}", list.len(), rules::MAX_RULES_PER_LOAD_BALANCER),
        ));
    }
    let mut priorities = BTreeSet::new();
    for rule in list {
        let in_rule = |problem: String| InvalidTable::Rule {
            listener: name.to_string(),
            priority: rule.priority,
            problem,
        };
        if !priorities.insert(rule.priority) {
            return Err(InvalidTable::listener(
                name,
                format!(
                    "two rules have priority {}; priorities are unique per listener",
                    rule.priority
                ),
            ));
        }
        Matcher::new(rule).map_err(|e| in_rule(e.to_string()))?;
        validate_action(name, &rule.action, table).map_err(|e| match e {
            InvalidTable::Listener { problem, .. } => in_rule(problem),
            other => other,
        })?;
    }
    Ok(())
}

fn validate_forward(name: &str, f: &ForwardAction, table: &RouteTable) -> Result<(), InvalidTable> {
    let bad = |problem: String| InvalidTable::listener(name, problem);
    if f.target_groups.len() > MAX_GROUPS_PER_FORWARD {
        return Err(bad(format!(
            "forward names {} target groups; at most {MAX_GROUPS_PER_FORWARD}",
            f.target_groups.len()
        )));
    }
    let mut seen = BTreeSet::new();
    for w in &f.target_groups {
        if !table.target_groups.contains_key(&w.name) {
            return Err(bad(format!(
                "forward references target group `{}`, which is not in target_groups",
                w.name
            )));
        }
        if !seen.insert(&w.name) {
            return Err(bad(format!("target group `{}` appears twice in one forward", w.name)));
        }
        if w.weight > WEIGHT_MAX {
            return Err(bad(format!(
                "weight {} of target group `{}` is above {WEIGHT_MAX}",
                w.weight, w.name
            )));
        }
    }
    if let Some(p) = &f.preview {
        validate_preview(name, p, &seen)?;
    }
    if let Some(r) = &f.retry {
        validate_retry(name, r, &seen)?;
    }
    if let Some(m) = &f.mirror {
        validate_mirror(name, m, &seen)?;
    }
    Ok(())
}

fn validate_fixed_response(name: &str, f: &FixedResponse) -> Result<(), InvalidTable> {
    let bad = |problem: String| InvalidTable::listener(name, problem);
    let FixedResponse { status_code, content_type, body } = f;
    if !(200..=599).contains(status_code) || (300..400).contains(status_code) {
        return Err(bad(format!("fixed response status {status_code} must be 2XX, 4XX or 5XX")));
    }
    if let Some(ct) = content_type
        && HeaderValue::from_str(ct).is_err()
    {
        return Err(bad(format!("content_type `{ct}` is not a header value")));
    }
    if body.len() > MAX_FIXED_BODY {
        return Err(bad(format!(
            "fixed response body is {} bytes; at most {MAX_FIXED_BODY}",
            body.len()
        )));
    }
    Ok(())
}

fn validate_redirect(name: &str, r: &Redirect) -> Result<(), InvalidTable> {
    let bad = |problem: String| InvalidTable::listener(name, problem);
    if r.status_code != 301 && r.status_code != 302 {
        return Err(bad(format!("redirect status {} must be 301 or 302", r.status_code)));
    }
    if let Some(p) = &r.protocol
        && !p.eq_ignore_ascii_case("http")
        && !p.eq_ignore_ascii_case("https")
    {
        return Err(bad(format!("redirect protocol `{p}` must be HTTP or HTTPS")));
    }
    if r.port == Some(0) {
        return Err(bad("redirect port 0 is not a port".to_string()));
    }
    let literal = |text: &str| {
        routes::redirect::strip_placeholders(text).map_err(|unknown| {
            bad(format!(
                "redirect `{text}` holds {unknown}; the placeholders are {}",
                routes::redirect::PLACEHOLDERS.join(", ")
            ))
        })
    };
    if let Some(h) = &r.host
        && (h.is_empty() || literal(h)?.contains(['/', ' ', '?', '#', '@']))
    {
        return Err(bad(format!("redirect host `{h}` is not a host name")));
    }
    if let Some(p) = &r.path
        && (!p.starts_with('/') || literal(p)?.contains([' ', '?', '#']))
    {
        return Err(bad(format!("redirect path `{p}` must start with / and hold no query")));
    }
    if let Some(q) = &r.query
        && (q.starts_with('?') || literal(q)?.contains([' ', '#']))
    {
        return Err(bad(format!(
            "redirect query `{q}` must be a query without its leading ? and without spaces"
        )));
    }
    Ok(())
}

fn validate_group(name: &str, tg: &TargetGroup) -> Result<(), InvalidTable> {
    let hc = &tg.health_check;
    let at = |problem: String| InvalidTable::TargetGroup { group: name.to_string(), problem };
    if !hc.path.starts_with('/') || hc.path.len() > 1024 || hc.path.contains([' ', '\r', '\n']) {
        return Err(at(format!(
            "health_check.path `{}` must start with / (1-1024 chars, no spaces)",
            hc.path
        )));
    }
    if hc.port == Some(0) {
        return Err(at(
            "health_check.port 0 is not a port; leave it out for the traffic port".into()
        ));
    }
    if hc.interval_ms < 10 || hc.interval_ms > 300_000 {
        return Err(at(format!("health_check.interval_ms {} is not 10-300000", hc.interval_ms)));
    }
    if hc.timeout_ms == 0 || hc.timeout_ms > 120_000 {
        return Err(at(format!("health_check.timeout_ms {} is not 1-120000", hc.timeout_ms)));
    }
    for (field, v) in [
        ("healthy_threshold", hc.healthy_threshold),
        ("unhealthy_threshold", hc.unhealthy_threshold),
    ] {
        if !(1..=10).contains(&v) {
            return Err(at(format!("health_check.{field} {v} is not 1-10")));
        }
    }
    if hc.matcher.is_empty() {
        return Err(at("health_check.matcher is empty; use [[200, 200]] for ALB's default".into()));
    }
    for &(lo, hi) in &hc.matcher {
        if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
            return Err(at(format!(
                "health_check.matcher range {lo}-{hi} is not within 100-599 in order"
            )));
        }
    }
    if tg.deregistration_delay_ms > 3_600_000 {
        return Err(at(format!(
            "deregistration_delay_ms {} is above 3600000 (one hour)",
            tg.deregistration_delay_ms
        )));
    }
    if tg.targets.len() > MAX_TARGETS_PER_GROUP {
        return Err(at(format!("{} targets; at most {MAX_TARGETS_PER_GROUP}", tg.targets.len())));
    }
    let mut seen = BTreeSet::new();
    for t in &tg.targets {
        if t.addr.port() == 0 {
            return Err(at(format!("target {} needs a port", t.addr)));
        }
        if !seen.insert(t.addr) {
            return Err(at(format!("target {} is registered twice", t.addr)));
        }
    }
    Ok(())
}

/// Writes atomically: a crash leaves either the old file or the new one.
fn write_state(path: &Path, table: &RouteTable) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(table).map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) =
            std::fs::File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Loads the table saved by a previous run, if any.
pub fn read_state(path: &Path) -> anyhow::Result<Option<RouteTable>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => anyhow::bail!("cannot read state file {}: {e}", path.display()),
    };
    let table = serde_json::from_slice(&text).map_err(|e| {
        anyhow::anyhow!(
            "state file {} is not a route table ({e}); fix or delete it (the control plane will send the table again)",
            path.display()
        )
    })?;
    Ok(Some(table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::GroupCfg;

    fn preview(from: PreviewFrom, name: &str) -> CompiledPreview {
        let group = |name: &str| {
            Arc::new(GroupRt::new(
                name,
                GroupCfg {
                    health_check: routes::HealthCheck::default(),
                    deregistration_delay: Duration::ZERO,
                    algorithm: routes::Algorithm::default(),
                },
            ))
        };
        let mut fwd = routes::ForwardAction::weighted(Vec::new());
        fwd.preview = Some(Preview {
            from,
            name: name.into(),
            target_groups: BTreeMap::from([("green".to_string(), "g".to_string())]),
        });
        let groups = HashMap::from([("g".to_string(), group("g"))]);
        match compile_action(&Action::Forward(fwd), &groups) {
            CompiledAction::Forward(f) => *f.preview.expect("a preview was set"),
            _ => unreachable!("a forward compiles to a forward"),
        }
    }

    fn chosen(p: &CompiledPreview, headers: &[(&str, &str)]) -> Option<String> {
        p.choose(headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
            .map(|g| g.name.to_string())
    }

    #[test]
    fn a_cookie_split_over_several_fields_is_found_as_http2_sends_it() {
        let p = preview(PreviewFrom::Cookie, "deploy_version");
        let h2 = [("cookie", "session=1"), ("cookie", "deploy_version=green"), ("cookie", "x=y")];
        assert_eq!(chosen(&p, &h2).as_deref(), Some("g"));
        assert_eq!(chosen(&p, &[("cookie", "deploy_versionx=green")]), None);
        assert_eq!(chosen(&p, &[("cookie", "a=b;deploy_version=green")]).as_deref(), Some("g"));
    }

    #[test]
    fn the_first_header_of_the_name_decides() {
        let p = preview(PreviewFrom::Header, "X-Deploy-Version");
        assert_eq!(chosen(&p, &[("x-deploy-version", "green")]).as_deref(), Some("g"));
        assert_eq!(
            chosen(&p, &[("X-DEPLOY-VERSION", "blue"), ("x-deploy-version", "green")]),
            None
        );
    }
}
