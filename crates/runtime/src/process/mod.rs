//! The process runtime: every container a local process, every task its own loopback address.
//!
//! - **Image.** `image` is an absolute path to a directory holding the program. argv =
//!   `entryPoint ++ command`; `argv[0]` is looked up in the image directory first (as a path
//!   relative to it), then on `PATH`; with an empty argv, the one executable file at the top of
//!   the image directory runs. `workingDirectory` is relative to the image directory (default:
//!   the image directory itself). Each task runs from its own copy of the image directory
//!   (`snapshot`), as a container runs from its image. Containers inherit only `PATH`, `HOME`, `USER`, `LOGNAME`,
//!   `LANG`, `LC_ALL`, `LC_CTYPE`, `TZ` and `TMPDIR` from the control plane.
//! - **Network.** Each task gets its own address in `127.77.0.0/16` (configurable with
//!   [`ProcessRuntime::with_address_range`]), unique among the tasks of the state directory that
//!   have not stopped, including ones started by an earlier control plane. All containers of a
//!   task share it, as on `awsvpc`, and keep their declared ports: the load balancer targets
//!   `127.x.y.z:containerPort`. Programs must bind `$HOST` (not `0.0.0.0` or `localhost`), and
//!   health-check commands should probe `$HOST:$PORT`. See the crate docs for the environment.
//! - **Processes.** Every container runs in its own session, with stdin from `/dev/null` and
//!   stdout and stderr appended straight to `state_dir/tasks/<task_id>/<container>.log`, so it
//!   keeps running and logging when the control plane dies. The files under that directory are
//!   described in `store`.
//! - **Exit.** Our own children are reaped and their exit codes recorded; a task adopted from an
//!   earlier control plane is watched through `/proc` (exit code unknown). When an essential
//!   container exits, the task stops (the other containers are stopped).
//! - **Stop.** SIGTERM to the container's process group, then SIGKILL to everything left in its
//!   session after `stop_timeout`; containers stop in reverse `dependsOn` order.
//! - **Not enforced:** `cpu`, `memory`, `memoryReservation` (recorded only; the process runtime
//!   has no cgroups). `dependsOn` waits are bounded by [`DEPENDENCY_TIMEOUT`].

mod health;
mod launch;
mod snapshot;
pub(crate) mod store;
pub(crate) mod sys;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::watch;

use self::launch::Launch;
use self::store::{ExitRecord, RecordError, StopCause, StoppedRecord, TaskRecord};
use self::sys::ProcId;
use crate::depends_on::{self, Condition, Observed, StartPlan, WaitError};
use crate::{ContainerSpec, Health, Runtime, RuntimeError, TaskHandle, TaskSpec, TaskState};

/// How long `start` waits for a `dependsOn` condition (the ECS default `startTimeout`).
pub const DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(180);

/// How long after SIGKILL a stop waits for the processes to disappear before giving up.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// How often an adopted container (not our child) is checked for exit.
const ADOPTED_POLL: Duration = Duration::from_millis(250);

const MAX_CONTAINERS: usize = 100;
const MAX_TASK_DIRS: usize = 100_000;

/// Runs tasks as local processes; see the module docs.
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    tasks_dir: PathBuf,
    lock_path: PathBuf,
    net: Ipv4Addr,
    prefix: u8,
    /// Next offset in the range to try, so a freed address is not handed out again at once.
    cursor: Mutex<u32>,
    tasks: Mutex<HashMap<String, Arc<Task>>>,
}

/// Gives the task in `task_dir` its own copy of each image directory its containers run from
/// (containers of the task that name the same directory share one copy, as they share the
/// directory itself) and points their launches there (see `snapshot`). On failure, the launches
/// come back unchanged with the reason, for the caller to fail the start as it fails any other.
fn copy_images(task_dir: &Path, launches: Vec<Launch>) -> (Vec<Launch>, Option<String>) {
    let mut copies: Vec<PathBuf> = Vec::with_capacity(launches.len());
    for (i, l) in launches.iter().enumerate() {
        let first = launches.iter().position(|other| other.image_dir == l.image_dir);
        if let Some(first) = first.filter(|&f| f < i) {
            copies.push(copies[first].clone());
            continue;
        }
        let copy = snapshot::image_copy_dir(task_dir, i);
        if let Err(err) = snapshot::copy_image(&l.image_dir, &copy) {
            return (launches, Some(err.to_string()));
        }
        copies.push(copy);
    }
    let rebased = launches.into_iter().zip(copies).map(|(l, c)| snapshot::rebase(l, &c)).collect();
    (rebased, None)
}

/// Where a runtime starts looking for free addresses: anywhere in the range, so that runtimes on
/// other state directories (another installation, a concurrent test) rarely probe the same
/// address at the same moment — the bind probe in `allocate` cannot see a task that has not
/// bound yet. Reduced modulo the range's size where it is used.
fn random_start() -> u32 {
    use std::hash::BuildHasher;
    // Each `RandomState` gets fresh keys, so this is a new well-mixed number on every call.
    std::collections::hash_map::RandomState::new().hash_one(sys::now_ms()) as u32
}

impl ProcessRuntime {
    /// A runtime keeping its records and logs under `state_dir` (created if missing).
    pub fn new(state_dir: PathBuf) -> Result<ProcessRuntime, RuntimeError> {
        let tasks_dir = state_dir.join("tasks");
        std::fs::create_dir_all(&tasks_dir)
            .map_err(|e| RuntimeError::io("cannot create", &tasks_dir, e))?;
        let lock_path = state_dir.join("addresses.lock");
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| RuntimeError::io("cannot create", &lock_path, e))?;
        Ok(ProcessRuntime {
            inner: Arc::new(Inner {
                tasks_dir,
                lock_path,
                net: Ipv4Addr::new(127, 77, 0, 0),
                prefix: 16,
                cursor: Mutex::new(random_start()),
                tasks: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Uses `net/prefix` (inside `127.0.0.0/8`, prefix 8 to 30) for task addresses instead of
    /// `127.77.0.0/16`.
    pub fn with_address_range(
        self,
        net: Ipv4Addr,
        prefix: u8,
    ) -> Result<ProcessRuntime, RuntimeError> {
        if net.octets()[0] != 127 || !(8..=30).contains(&prefix) {
            return Err(RuntimeError::InvalidSpec {
                task_id: String::new(),
                detail: format!(
                    "address range {net}/{prefix} is not inside 127.0.0.0/8 with a prefix of 8 to 30; the process runtime gives tasks loopback addresses"
                ),
            });
        }
        let mask = u32::MAX << (32 - prefix);
        let inner = Arc::new(Inner {
            tasks_dir: self.inner.tasks_dir.clone(),
            lock_path: self.inner.lock_path.clone(),
            net: Ipv4Addr::from(u32::from(net) & mask),
            prefix,
            cursor: Mutex::new(random_start()),
            tasks: Mutex::new(HashMap::new()),
        });
        Ok(ProcessRuntime { inner })
    }

    /// Deletes the directories (logs) of removed tasks whose files were last written more than
    /// `older_than` ago. Returns how many were deleted.
    pub fn prune_logs(&self, older_than: Duration) -> Result<usize, RuntimeError> {
        let dir = &self.inner.tasks_dir;
        let entries =
            std::fs::read_dir(dir).map_err(|e| RuntimeError::io("cannot list", dir, e))?;
        // Files' modification times are the OS's wall clock.
        #[allow(clippy::disallowed_methods)]
        let cutoff =
            std::time::SystemTime::now().checked_sub(older_than).unwrap_or(std::time::UNIX_EPOCH);
        let mut pruned = 0;
        for entry in entries.flatten().take(MAX_TASK_DIRS) {
            let path = entry.path();
            if !path.is_dir() || store::task_file(&path).exists() {
                continue;
            }
            let newest = std::fs::read_dir(&path)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|f| f.metadata().ok()?.modified().ok())
                .max();
            if newest.is_none_or(|t| t < cutoff) {
                std::fs::remove_dir_all(&path)
                    .map_err(|e| RuntimeError::io("cannot delete", &path, e))?;
                pruned += 1;
            }
        }
        Ok(pruned)
    }

    fn range_text(&self) -> String {
        format!("{}/{}", self.inner.net, self.inner.prefix)
    }
}

impl Drop for ProcessRuntime {
    fn drop(&mut self) {
        // Health checks and pollers of a dropped runtime stop; our children are still reaped
        // (by their reaper tasks) so their exit codes are recorded for the next runtime.
        let tasks = lock(&self.inner.tasks);
        for t in tasks.values() {
            t.detach.send_replace(true);
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A task known to this runtime instance.
struct Task {
    id: String,
    dir: PathBuf,
    spec: TaskSpec,
    ip: Ipv4Addr,
    lb_addr: Option<SocketAddr>,
    started_at_ms: u64,
    containers: Vec<Container>,
    /// Reverse-stop levels: container indices grouped by `dependsOn` depth.
    levels: Vec<Vec<usize>>,
    /// `start` is still starting containers.
    starting: AtomicBool,
    /// Held while a container is being spawned, so a stop never misses one.
    spawn_lock: tokio::sync::Mutex<()>,
    stop_begun: AtomicBool,
    stopped: tokio::sync::OnceCell<StoppedRecord>,
    /// Turns true when the runtime is dropped or the task removed: background work ends.
    detach: watch::Sender<bool>,
    /// Turns true when the task stops: health checks end.
    checks_off: watch::Sender<bool>,
}

struct Container {
    spec: ContainerSpec,
    /// `None` when the image or program of an adopted container is gone.
    launch: Option<Launch>,
    proc: OnceLock<ProcId>,
    /// Whether `proc` is our child (reaped by us) rather than adopted.
    own: AtomicBool,
    exit: watch::Sender<Option<ExitRecord>>,
    health: watch::Sender<Health>,
}

impl Task {
    fn handle(&self) -> TaskHandle {
        TaskHandle {
            task_id: self.id.clone(),
            runtime_id: self
                .containers
                .iter()
                .filter_map(|c| c.proc.get().map(|p| p.pid.to_string()))
                .collect::<Vec<_>>()
                .join(","),
            addr: self.lb_addr,
            started_at_ms: self.started_at_ms,
        }
    }

    fn record(&self, complete: bool) -> TaskRecord {
        TaskRecord {
            format: store::FORMAT,
            spec: self.spec.clone(),
            ip: self.ip,
            started_at_ms: self.started_at_ms,
            procs: self.containers.iter().map(|c| c.proc.get().copied()).collect(),
            complete,
        }
    }

    fn any_running(&self) -> bool {
        self.containers.iter().any(|c| c.proc.get().is_some_and(sys::container_running))
    }

    /// The first essential container that exited (earliest), if any.
    fn essential_exit(&self) -> Option<(usize, ExitRecord)> {
        self.containers
            .iter()
            .enumerate()
            .filter(|(_, c)| c.spec.essential)
            .filter_map(|(i, c)| Some((i, (*c.exit.borrow())?)))
            .min_by_key(|(_, e)| e.at_ms)
    }

    fn health(&self) -> Health {
        crate::combine_health(
            self.containers
                .iter()
                .filter(|c| c.spec.essential && c.spec.health_check.is_some())
                .map(|c| *c.health.borrow()),
        )
    }

    fn state(&self) -> TaskState {
        if let Some(rec) = self.stopped.get() {
            return TaskState::Exited { code: rec.code, reason: rec.reason.clone() };
        }
        if let Some((i, e)) = self.essential_exit() {
            return TaskState::Exited {
                code: exit_code(&e),
                reason: exit_reason(&self.containers[i].spec.name, &e),
            };
        }
        if self.starting.load(Ordering::SeqCst) {
            return TaskState::Running { health: Health::Unknown };
        }
        TaskState::Running { health: self.health() }
    }

    /// Called when container `i` exited: an essential one stops the task.
    fn on_exit(self: &Arc<Self>, i: usize) {
        if !self.containers[i].spec.essential
            || *self.detach.borrow()
            || self.stop_begun.load(Ordering::SeqCst)
        {
            return;
        }
        let task = Arc::clone(self);
        tokio::spawn(async move {
            task.stop(StopCause::EssentialExited(i)).await;
        });
    }

    /// Stops the task once; later callers wait for the first stop and get its record.
    async fn stop(self: &Arc<Self>, cause: StopCause) -> StoppedRecord {
        let task = Arc::clone(self);
        self.stopped
            .get_or_init(|| async move {
                {
                    let _spawning = task.spawn_lock.lock().await;
                    task.stop_begun.store(true, Ordering::SeqCst);
                }
                task.checks_off.send_replace(true);
                for level in task.levels.iter().rev() {
                    let stops = level.iter().map(|&i| task.stop_container(i));
                    join_all(stops).await;
                }
                let rec = task.stopped_record(&cause);
                if let Err(e) = store::write(&store::stopped_file(&task.dir), &rec) {
                    tracing::warn!(task = %task.id, %e, "cannot record that the task stopped");
                }
                tracing::info!(task = %task.id, reason = %rec.reason, "task stopped");
                rec
            })
            .await
            .clone()
    }

    fn stopped_record(&self, cause: &StopCause) -> StoppedRecord {
        let at_ms = sys::now_ms();
        let exit = cause.reported_container(&self.spec).map(|i| {
            let c = &self.containers[i];
            // No exit record: the container's leader exited while no runtime was watching.
            let e = (*c.exit.borrow()).unwrap_or(ExitRecord { code: None, signal: None, at_ms });
            (exit_code(&e), exit_reason(&c.spec.name, &e))
        });
        cause.record(exit, at_ms)
    }

    /// SIGTERM, wait up to the stop timeout, SIGKILL; then wait for the exit to be recorded.
    async fn stop_container(&self, i: usize) {
        let c = &self.containers[i];
        let Some(p) = c.proc.get().copied() else {
            return;
        };
        if sys::container_running(&p) {
            sys::signal_container(&p, Signal::SIGTERM);
            if !wait_until(c.spec.stop_timeout, || !sys::container_running(&p)).await {
                tracing::info!(task = %self.id, container = %c.spec.name, timeout = ?c.spec.stop_timeout, "did not stop after SIGTERM; sending SIGKILL");
                sys::signal_container(&p, Signal::SIGKILL);
                if !wait_until(KILL_WAIT, || !sys::container_running(&p)).await {
                    tracing::warn!(task = %self.id, container = %c.spec.name, "processes survived SIGKILL");
                }
            }
        }
        if c.own.load(Ordering::SeqCst) {
            // The reaper records the exit code right after the process is gone.
            let mut rx = c.exit.subscribe();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|e| e.is_some())).await;
        } else if c.exit.borrow().is_none() {
            record_exit(&self.dir, c, None);
        }
    }
}

/// Records an exit: from the reaper (`Some(status)`), or unknown (adopted process gone).
fn record_exit(dir: &Path, c: &Container, status: Option<std::process::ExitStatus>) {
    let file = store::exit_file(dir, &c.spec.name);
    let rec = match status {
        Some(s) => ExitRecord { code: s.code(), signal: s.signal(), at_ms: sys::now_ms() },
        None => match store::read::<ExitRecord>(&file) {
            // Someone (the runtime that started it) already recorded the real exit.
            Ok(Some(r)) => {
                c.exit.send_replace(Some(r));
                return;
            }
            _ => ExitRecord { code: None, signal: None, at_ms: sys::now_ms() },
        },
    };
    if let Err(e) = store::write(&file, &rec) {
        tracing::warn!(container = %c.spec.name, %e, "cannot record the exit");
    }
    c.exit.send_replace(Some(rec));
}

fn exit_code(e: &ExitRecord) -> Option<i32> {
    // A signal death reads as 128+signal, as Docker reports it.
    e.code.or(e.signal.map(|s| 128 + s))
}

fn exit_reason(name: &str, e: &ExitRecord) -> String {
    match (e.code, e.signal) {
        (Some(code), _) => format!("essential container {name} exited with code {code}"),
        (None, Some(sig)) => format!(
            "essential container {name} was killed by {} (exit code {})",
            sys::signal_name(sig),
            128 + sig
        ),
        (None, None) => format!(
            "essential container {name} exited while cutover was not watching it (exit code unknown)"
        ),
    }
}

pub(crate) async fn join_all<F: std::future::Future<Output = ()>>(futs: impl Iterator<Item = F>) {
    let mut set = Vec::new();
    for f in futs {
        set.push(f);
    }
    // The futures borrow the task, so they cannot be spawned; poll them together instead.
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = set.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        pinned.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if pinned.is_empty() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await
}

/// Polls `cond` until it holds (true) or `limit` passes (false).
pub(crate) async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut pause = Duration::from_millis(10);
    loop {
        if cond() {
            return true;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Checks what the runtime relies on and returns the start order and the stop levels.
pub(crate) fn validate(spec: &TaskSpec) -> Result<StartPlan, RuntimeError> {
    let invalid =
        |detail: String| RuntimeError::InvalidSpec { task_id: spec.task_id.clone(), detail };
    if !valid_task_id(&spec.task_id) {
        return Err(invalid(format!(
            "task id `{}` must be 1 to 128 characters of A-Z a-z 0-9 _ . - and not start with `.`",
            spec.task_id
        )));
    }
    if spec.containers.is_empty() || spec.containers.len() > MAX_CONTAINERS {
        return Err(invalid(format!(
            "a task needs 1 to {MAX_CONTAINERS} containers, this one has {}",
            spec.containers.len()
        )));
    }
    let mut index = HashMap::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let ok = !c.name.is_empty()
            && c.name.len() <= 255
            && c.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(invalid(format!(
                "container name `{}` must be 1 to 255 characters of A-Z a-z 0-9 _ -",
                c.name
            )));
        }
        if index.insert(c.name.as_str(), i).is_some() {
            return Err(invalid(format!("two containers are named {}", c.name)));
        }
    }
    if !spec.containers.iter().any(|c| c.essential) {
        return Err(invalid("at least one container must be essential".into()));
    }
    let plan = depends_on::plan(&spec.containers).map_err(|e| invalid(e.to_string()))?;
    if let Some((name, port)) = &spec.lb_container {
        match index.get(name.as_str()) {
            None => {
                return Err(invalid(format!(
                    "the load balancer targets container {name}, which is not in the task"
                )));
            }
            Some(&i) if !spec.containers[i].ports.contains(port) => {
                return Err(invalid(format!(
                    "the load balancer targets port {port} of container {name}, which does not declare it in portMappings"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(plan)
}

/// What a task id may be, in every runtime and in the CLI: it names a directory and a URL path
/// segment.
pub fn valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The load balancer's address: `lb_container`'s port, else the first declared port.
fn lb_addr(spec: &TaskSpec, ip: Ipv4Addr) -> Option<SocketAddr> {
    let port = match &spec.lb_container {
        Some((_, port)) => Some(*port),
        None => spec.containers.iter().find_map(|c| c.ports.first().copied()),
    };
    port.map(|p| SocketAddr::from((ip, p)))
}

impl Inner {
    fn task_dir(&self, id: &str) -> PathBuf {
        self.tasks_dir.join(id)
    }

    /// Picks a free address and reserves it by writing the task's first record, all under an
    /// exclusive lock shared with every runtime on this state directory.
    fn allocate(&self, spec: &TaskSpec) -> Result<(Ipv4Addr, PathBuf, u64), RuntimeError> {
        let lock_file = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.lock_path)
            .map_err(|e| RuntimeError::io("cannot open", &self.lock_path, e))?;
        lock_file.lock().map_err(|e| RuntimeError::io("cannot lock", &self.lock_path, e))?;
        let dir = self.task_dir(&spec.task_id);
        if store::task_file(&dir).exists() {
            return Err(RuntimeError::AlreadyExists { task_id: spec.task_id.clone() });
        }
        let used = self.addresses_in_use();
        let size: u32 = 1 << (32 - self.prefix);
        let base = u32::from(self.net);
        let ports: Vec<u16> = spec.containers.iter().flat_map(|c| c.ports.clone()).collect();
        let mut cursor = lock(&self.cursor);
        for step in 0..size {
            let offset = (*cursor % size + step) % size;
            let ip = Ipv4Addr::from(base + offset);
            let last = ip.octets()[3];
            if last == 0 || last == 255 || used.contains(&ip) {
                continue;
            }
            // Something outside our records (another state directory, a stray program) may
            // hold the address: the task's ports must be free on it.
            if ports.iter().any(|&p| TcpListener::bind((ip, p)).is_err()) {
                continue;
            }
            *cursor = (offset + 1) % size;
            drop(cursor);
            std::fs::create_dir_all(&dir)
                .map_err(|e| RuntimeError::io("cannot create", &dir, e))?;
            let started_at_ms = sys::now_ms();
            let record = TaskRecord {
                format: store::FORMAT,
                spec: spec.clone(),
                ip,
                started_at_ms,
                procs: vec![None; spec.containers.len()],
                complete: false,
            };
            store::write(&store::task_file(&dir), &record)?;
            return Ok((ip, dir, started_at_ms));
        }
        Err(RuntimeError::NoFreeAddress {
            task_id: spec.task_id.clone(),
            range: format!("{}/{}", self.net, self.prefix),
        })
    }

    /// Addresses of recorded tasks that have not stopped.
    fn addresses_in_use(&self) -> HashSet<Ipv4Addr> {
        let Ok(entries) = std::fs::read_dir(&self.tasks_dir) else {
            return HashSet::new();
        };
        entries
            .flatten()
            .take(MAX_TASK_DIRS)
            .filter_map(|e| {
                let dir = e.path();
                if store::stopped_file(&dir).exists() {
                    return None;
                }
                let rec: TaskRecord = store::read(&store::task_file(&dir)).ok()??;
                Some(rec.ip)
            })
            .collect()
    }

    /// The task from memory, else from its record on disk (adopting it). `Ok(None)`: unknown.
    fn get_or_load(self: &Arc<Self>, id: &str) -> Result<Option<Arc<Task>>, RecordError> {
        if !valid_task_id(id) {
            return Ok(None);
        }
        let dir = self.task_dir(id);
        if !store::task_file(&dir).exists() {
            // Removed, possibly by another runtime on the same directory.
            if let Some(t) = lock(&self.tasks).remove(id) {
                t.detach.send_replace(true);
            }
            return Ok(None);
        }
        if let Some(t) = lock(&self.tasks).get(id) {
            return Ok(Some(Arc::clone(t)));
        }
        let Some(rec) = store::read::<TaskRecord>(&store::task_file(&dir))? else {
            return Ok(None);
        };
        let task = adopt(id, dir, rec)?;
        let mut tasks = lock(&self.tasks);
        if let Some(t) = tasks.get(id) {
            // Loaded concurrently by another call; keep that one.
            return Ok(Some(Arc::clone(t)));
        }
        tasks.insert(id.to_string(), Arc::clone(&task));
        drop(tasks);
        watch_adopted(&task);
        Ok(Some(task))
    }
}

/// Builds a task from its record (written by this or an earlier control plane).
fn adopt(id: &str, dir: PathBuf, rec: TaskRecord) -> Result<Arc<Task>, RecordError> {
    if rec.format != store::FORMAT {
        return Err(RecordError::Format { path: store::task_file(&dir), found: rec.format });
    }
    if rec.procs.len() != rec.spec.containers.len() {
        return Err(RecordError::Inconsistent { path: store::task_file(&dir) });
    }
    let StartPlan { levels, .. } =
        validate(&rec.spec).map_err(|e| RecordError::Spec(Box::new(e)))?;
    let lb = lb_addr(&rec.spec, rec.ip);
    let containers = rec
        .spec
        .containers
        .iter()
        .zip(&rec.procs)
        .enumerate()
        .map(|(i, (c, p))| {
            let launch = launch::resolve(c).ok().map(|mut l| {
                l.env = launch::environment(&rec.spec, c, rec.ip, lb);
                // The copy this container runs from (see `copy_images`); tasks started before
                // images were copied run from the image itself.
                let first = rec.spec.containers.iter().position(|other| other.image == c.image);
                let copy = snapshot::image_copy_dir(&dir, first.unwrap_or(i));
                if copy.is_dir() { snapshot::rebase(l, &copy) } else { l }
            });
            let proc = OnceLock::new();
            if let Some(p) = p {
                let _ = proc.set(*p);
            }
            let exit = store::read::<ExitRecord>(&store::exit_file(&dir, &c.name)).ok().flatten();
            Container {
                spec: c.clone(),
                launch,
                proc,
                own: AtomicBool::new(false),
                exit: watch::Sender::new(exit),
                health: watch::Sender::new(Health::Unknown),
            }
        })
        .collect();
    let stopped = tokio::sync::OnceCell::new();
    if let Ok(Some(s)) = store::read::<StoppedRecord>(&store::stopped_file(&dir)) {
        let _ = stopped.set(s);
    }
    let task = Task {
        id: id.to_string(),
        dir,
        ip: rec.ip,
        lb_addr: lb,
        started_at_ms: rec.started_at_ms,
        containers,
        levels,
        starting: AtomicBool::new(false),
        spawn_lock: tokio::sync::Mutex::new(()),
        stop_begun: AtomicBool::new(stopped.initialized()),
        stopped,
        detach: watch::Sender::new(false),
        checks_off: watch::Sender::new(false),
        spec: rec.spec,
    };
    // An incomplete record means the control plane died while starting the task; it stays
    // "starting" until `watch_adopted` has stopped what did start.
    task.starting.store(!rec.complete, Ordering::SeqCst);
    Ok(Arc::new(task))
}

/// Starts the background work for an adopted task: exit polling, health checks, and the stop
/// of a task that is already over (essential container gone, or start interrupted).
fn watch_adopted(task: &Arc<Task>) {
    if task.stopped.initialized() {
        return;
    }
    for (i, c) in task.containers.iter().enumerate() {
        let Some(p) = c.proc.get().copied() else {
            continue;
        };
        if c.exit.borrow().is_some() {
            continue;
        }
        if sys::leader(&p) != sys::Leader::Alive {
            record_exit(&task.dir, c, None);
            continue;
        }
        let t = Arc::clone(task);
        tokio::spawn(async move {
            let mut detach = t.detach.subscribe();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(ADOPTED_POLL) => {}
                    _ = detach.wait_for(|d| *d) => return,
                }
                if sys::leader(&p) != sys::Leader::Alive {
                    record_exit(&t.dir, &t.containers[i], None);
                    t.on_exit(i);
                    return;
                }
            }
        });
        start_health_check(task, i);
    }
    if task.starting.load(Ordering::SeqCst) {
        let t = Arc::clone(task);
        tokio::spawn(async move {
            t.stop(StopCause::Interrupted).await;
            t.starting.store(false, Ordering::SeqCst);
        });
    } else if let Some((i, _)) = task.essential_exit() {
        let t = Arc::clone(task);
        tokio::spawn(async move {
            t.stop(StopCause::EssentialExited(i)).await;
        });
    }
}

fn start_health_check(task: &Arc<Task>, i: usize) {
    let c = &task.containers[i];
    let (Some(check), Some(launch), Some(p)) =
        (c.spec.health_check.clone(), c.launch.clone(), c.proc.get())
    else {
        return;
    };
    let mut exit = c.exit.subscribe();
    let mut off = task.checks_off.subscribe();
    let mut detach = task.detach.subscribe();
    // Checks end when the container exits, the task stops, or the runtime lets go of it (a
    // dropped sender also ends the wait).
    let done = async move {
        tokio::select! {
            _ = exit.wait_for(|e| e.is_some()) => {}
            _ = off.wait_for(|s| *s) => {}
            _ = detach.wait_for(|d| *d) => {}
        }
    };
    tokio::spawn(health::run(
        c.spec.name.clone(),
        check,
        launch,
        p.started_at_ms,
        c.health.clone(),
        done,
    ));
}

impl ProcessRuntime {
    async fn start_task(&self, spec: TaskSpec) -> Result<TaskHandle, RuntimeError> {
        let StartPlan { order, levels } = validate(&spec)?;
        let mut launches = Vec::with_capacity(spec.containers.len());
        for c in &spec.containers {
            launches.push(launch::resolve(c)?);
        }
        let inner = Arc::clone(&self.inner);
        let spec_for_alloc = spec.clone();
        let (ip, dir, started_at_ms) =
            tokio::task::spawn_blocking(move || inner.allocate(&spec_for_alloc)).await.map_err(
                |e| RuntimeError::StartFailed {
                    task_id: spec.task_id.clone(),
                    reason: format!("address allocation panicked: {e}"),
                },
            )??;
        let task_dir = dir.clone();
        let (launches, copy_failure) =
            tokio::task::spawn_blocking(move || copy_images(&task_dir, launches)).await.map_err(
                |e| RuntimeError::StartFailed {
                    task_id: spec.task_id.clone(),
                    reason: format!("copying the image panicked: {e}"),
                },
            )?;
        let lb = lb_addr(&spec, ip);
        let containers = spec
            .containers
            .iter()
            .zip(launches)
            .map(|(c, mut l)| {
                l.env = launch::environment(&spec, c, ip, lb);
                Container {
                    spec: c.clone(),
                    launch: Some(l),
                    proc: OnceLock::new(),
                    own: AtomicBool::new(true),
                    exit: watch::Sender::new(None),
                    health: watch::Sender::new(Health::Unknown),
                }
            })
            .collect();
        let task = Arc::new(Task {
            id: spec.task_id.clone(),
            dir,
            ip,
            lb_addr: lb,
            started_at_ms,
            containers,
            levels,
            starting: AtomicBool::new(true),
            spawn_lock: tokio::sync::Mutex::new(()),
            stop_begun: AtomicBool::new(false),
            stopped: tokio::sync::OnceCell::new(),
            detach: watch::Sender::new(false),
            checks_off: watch::Sender::new(false),
            spec,
        });
        lock(&self.inner.tasks).insert(task.id.clone(), Arc::clone(&task));
        tracing::info!(task = %task.id, %ip, "starting task");

        let mut failure = copy_failure
            .map(|reason| RuntimeError::StartFailed { task_id: task.id.clone(), reason });
        for &i in &order {
            if failure.is_some() {
                break;
            }
            if let Err(err) = wait_for_dependencies(&task, i).await {
                let reason = err.to_string();
                failure = Some(RuntimeError::StartFailed { task_id: task.id.clone(), reason });
                break;
            }
            let spawned = {
                let _spawning = task.spawn_lock.lock().await;
                if task.stop_begun.load(Ordering::SeqCst) {
                    None
                } else {
                    Some(spawn_container(&task, i))
                }
            };
            match spawned {
                None => {
                    let rec = task.stop(StopCause::StartFailed(String::new())).await;
                    failure = Some(RuntimeError::StartFailed {
                        task_id: task.id.clone(),
                        reason: rec.reason,
                    });
                    break;
                }
                Some(Err(e)) => {
                    failure = Some(e);
                    break;
                }
                Some(Ok(())) => {
                    store::write(&store::task_file(&task.dir), &task.record(false))?;
                }
            }
        }
        if let Some(err) = failure {
            task.stop(StopCause::StartFailed(err.to_string())).await;
            task.starting.store(false, Ordering::SeqCst);
            lock(&self.inner.tasks).remove(&task.id);
            task.detach.send_replace(true);
            return Err(err);
        }
        store::write(&store::task_file(&task.dir), &task.record(true))?;
        task.starting.store(false, Ordering::SeqCst);
        Ok(task.handle())
    }
}

/// Waits until container `i`'s `dependsOn` conditions hold; `Err` says which one cannot.
async fn wait_for_dependencies(task: &Arc<Task>, i: usize) -> Result<(), WaitError> {
    let me = &task.containers[i].spec;
    for (name, condition) in &me.depends_on {
        let Some(dep) = task.containers.iter().find(|c| &c.spec.name == name) else {
            continue;
        };
        // `validate` accepted every condition.
        let Some(condition) = Condition::parse(condition) else { continue };
        let mut verdict: Option<Result<(), WaitError>> = None;
        let done = wait_until(DEPENDENCY_TIMEOUT, || {
            if task.stop_begun.load(Ordering::SeqCst) {
                verdict = Some(Err(WaitError::TaskStopped {
                    container: me.name.clone(),
                    dependency: name.clone(),
                }));
                return true;
            }
            let observed = match &*dep.exit.borrow() {
                Some(exit) => Observed::Exited(exit_code(exit)),
                None => Observed::Running(*dep.health.borrow()),
            };
            verdict = depends_on::verdict(&me.name, name, condition, observed);
            verdict.is_some()
        })
        .await;
        if !done {
            return Err(WaitError::TimedOut {
                container: me.name.clone(),
                dependency: name.clone(),
                condition,
                secs: DEPENDENCY_TIMEOUT.as_secs(),
            });
        }
        verdict.unwrap_or(Ok(()))?;
    }
    Ok(())
}

/// Spawns container `i` in its own session with its output going to its log file.
fn spawn_container(task: &Arc<Task>, i: usize) -> Result<(), RuntimeError> {
    let c = &task.containers[i];
    let Some(l) = &c.launch else {
        return Err(RuntimeError::StartFailed {
            task_id: task.id.clone(),
            reason: format!("container {} has no launch description", c.spec.name),
        });
    };
    let log_path = store::log_file(&task.dir, &c.spec.name);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| RuntimeError::io("cannot open log file", &log_path, e))?;
    let log_err =
        log.try_clone().map_err(|e| RuntimeError::io("cannot open log file", &log_path, e))?;
    let argv0 = c
        .spec
        .entry_point
        .iter()
        .chain(&c.spec.command)
        .next()
        .cloned()
        .unwrap_or_else(|| l.program.display().to_string());
    let mut cmd = tokio::process::Command::new(&l.program);
    cmd.arg0(&argv0)
        .args(&l.args)
        .env_clear()
        .envs(l.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&l.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err);
    sys::new_session(&mut cmd);
    let mut child = sys::spawn_unless_busy(&mut cmd).map_err(|source| RuntimeError::Spawn {
        container: c.spec.name.clone(),
        program: l.program.display().to_string(),
        source,
    })?;
    let started_at_ms = sys::now_ms();
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    let start_ticks = sys::stat(pid).map(|s| s.start_ticks).unwrap_or(0);
    let _ = c.proc.set(ProcId { pid, start_ticks, started_at_ms });
    tracing::info!(task = %task.id, container = %c.spec.name, pid, "container started");
    let t = Arc::clone(task);
    tokio::spawn(async move {
        let status = child.wait().await;
        let c = &t.containers[i];
        match status {
            Ok(s) => record_exit(&t.dir, c, Some(s)),
            Err(e) => {
                tracing::warn!(task = %t.id, container = %c.spec.name, %e, "cannot wait for the container");
                record_exit(&t.dir, c, None);
            }
        }
        t.on_exit(i);
    });
    start_health_check(task, i);
    Ok(())
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    fn kind(&self) -> &'static str {
        "process"
    }

    async fn start(&self, spec: TaskSpec) -> Result<TaskHandle, RuntimeError> {
        self.start_task(spec).await.map_err(|e| match e {
            RuntimeError::NoFreeAddress { task_id, .. } => {
                RuntimeError::NoFreeAddress { task_id, range: self.range_text() }
            }
            e => e,
        })
    }

    async fn stop(&self, handle: &TaskHandle) -> Result<(), RuntimeError> {
        let task = match self.inner.get_or_load(&handle.task_id) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(()),
            Err(err) => {
                let detail = err.to_string();
                return Err(RuntimeError::BadRecord { task_id: handle.task_id.clone(), detail });
            }
        };
        task.stop(StopCause::Requested).await;
        Ok(())
    }

    async fn inspect(&self, handle: &TaskHandle) -> TaskState {
        match self.inner.get_or_load(&handle.task_id) {
            Ok(Some(t)) => t.state(),
            Ok(None) => TaskState::Gone,
            Err(e) => TaskState::Exited {
                code: None,
                reason: format!("the task's record cannot be read: {e}"),
            },
        }
    }

    async fn list_owned(&self) -> Result<Vec<TaskHandle>, RuntimeError> {
        let dir = &self.inner.tasks_dir;
        let entries =
            std::fs::read_dir(dir).map_err(|e| RuntimeError::io("cannot list", dir, e))?;
        let mut ids: Vec<String> = entries
            .flatten()
            .take(MAX_TASK_DIRS)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        let mut handles = Vec::new();
        for id in ids {
            match self.inner.get_or_load(&id) {
                Ok(Some(t)) if t.any_running() => handles.push(t.handle()),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(task = %id, %e, "skipping a task whose record cannot be read")
                }
            }
        }
        Ok(handles)
    }

    async fn remove(&self, handle: &TaskHandle) -> Result<(), RuntimeError> {
        let task = match self.inner.get_or_load(&handle.task_id) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(()),
            Err(_) => {
                // An unreadable record: forget it all the same, keeping the logs.
                let dir = self.inner.task_dir(&handle.task_id);
                return store::remove(&store::task_file(&dir));
            }
        };
        if task.stopped.get().is_none() && task.any_running() {
            return Err(RuntimeError::StillRunning { task_id: task.id.clone() });
        }
        task.detach.send_replace(true);
        task.checks_off.send_replace(true);
        store::remove(&store::task_file(&task.dir))?;
        store::remove(&store::stopped_file(&task.dir))?;
        // The task's copies of its images: only its logs are kept after it is forgotten.
        let images = task.dir.join("images");
        if images.exists() {
            std::fs::remove_dir_all(&images)
                .map_err(|e| RuntimeError::io("cannot delete", &images, e))?;
        }
        for c in &task.containers {
            store::remove(&store::exit_file(&task.dir, &c.spec.name))?;
        }
        lock(&self.inner.tasks).remove(&task.id);
        Ok(())
    }

    fn log_files(&self, task_id: &str) -> Vec<(String, PathBuf)> {
        if !valid_task_id(task_id) {
            return Vec::new();
        }
        let dir = self.inner.task_dir(task_id);
        let names: Vec<String> = match store::read::<TaskRecord>(&store::task_file(&dir)) {
            Ok(Some(rec)) => rec.spec.containers.into_iter().map(|c| c.name).collect(),
            _ => {
                let mut names: Vec<String> = std::fs::read_dir(&dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| {
                        e.file_name().to_str()?.strip_suffix(".log").map(str::to_string)
                    })
                    .collect();
                names.sort();
                names
            }
        };
        names
            .into_iter()
            .map(|n| {
                let p = store::log_file(&dir, &n);
                (n, p)
            })
            .filter(|(_, p)| p.exists())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str) -> ContainerSpec {
        ContainerSpec::new(name, "/img")
    }

    #[test]
    fn cycles_unknown_names_and_bad_conditions_are_rejected() {
        let mut spec = TaskSpec::new("t", "s", "f:1");
        let mut a = container("a");
        a.depends_on = vec![("b".into(), "START".into())];
        let mut b = container("b");
        b.depends_on = vec![("a".into(), "START".into())];
        spec.containers = vec![a.clone(), b];
        assert!(validate(&spec).unwrap_err().to_string().contains("cycle"));

        a.depends_on = vec![("nope".into(), "START".into())];
        spec.containers = vec![a.clone()];
        assert!(validate(&spec).unwrap_err().to_string().contains("nope"));

        let mut side = container("side");
        side.essential = false;
        a.depends_on = vec![("side".into(), "HEALTHY".into())];
        spec.containers = vec![a, side];
        assert!(validate(&spec).unwrap_err().to_string().contains("no healthCheck"));
    }

    #[test]
    fn task_ids_cannot_escape_the_state_directory() {
        assert!(valid_task_id("web-3f2a.1"));
        assert!(!valid_task_id("../etc"));
        assert!(!valid_task_id(".hidden"));
        assert!(!valid_task_id("a/b"));
        assert!(!valid_task_id(""));
    }
}
