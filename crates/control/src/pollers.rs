//! The work the engine's loop must never wait for, each in a task of its own that reports back as
//! a message: the data plane's health, its metrics, what the runtimes say about running tasks, and
//! pushing routing tables. A data plane that stops answering, or a runtime that is slow to
//! inspect, then delays nothing the loop decides: a rollback is recorded at once and reaches the
//! data plane as soon as it answers again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use routes::RouteTable;
use runtime::{Runtime, TaskHandle, TaskState};
use store::Store;
use tokio::sync::mpsc;
use tracing::warn;

use crate::clock;
use crate::engine::{Msg, Shared};
use crate::lb::{HealthAnswer, LbClient};

/// How often the data plane's health is read.
const HEALTH_POLL: Duration = Duration::from_millis(200);
/// How often the runtimes are asked about running tasks.
const INSPECT_POLL: Duration = Duration::from_millis(250);
/// How often the metric poller checks whether the monitor wants a snapshot.
const METRICS_CHECK: Duration = Duration::from_millis(250);
/// Pushes waiting for the data plane at most; more means it has not answered for long, and the
/// loop pushes its latest table again once a push fails.
const PUSHES_QUEUED_MAX: usize = 64;

/// Starts the pollers; each ends when the loop's channel closes.
pub fn spawn_all(
    lb: LbClient,
    store: Arc<Store>,
    runtimes: BTreeMap<String, Arc<dyn Runtime>>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Msg>,
) {
    tokio::spawn(poll_health(lb.clone(), tx.clone()));
    tokio::spawn(poll_metrics(lb, shared, tx.clone()));
    tokio::spawn(inspect_tasks(store, runtimes, tx));
}

async fn poll_health(lb: LbClient, tx: mpsc::Sender<Msg>) {
    let mut every = tokio::time::interval(HEALTH_POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The ETag of the report last sent to the loop: while the data plane answers "not modified",
    // the loop hears only that it answers.
    let mut seen: Option<String> = None;
    loop {
        every.tick().await;
        let msg = match lb.fleet() {
            // The nodes' load balancers health-check the swarm's targets: their reports join the
            // manager's, which is read whole, since a node's may change while it does not.
            // Until a node has reported, the swarm's target groups are unknown, not empty.
            Some(fleet) if fleet.awaiting_node_health() => Msg::HealthUnchanged,
            Some(fleet) => match lb.health_since(None).await {
                Ok(HealthAnswer::Changed { report, .. }) => {
                    Msg::Health(Ok(crate::fleet::decide::merge_health(report, &fleet.health())))
                }
                Ok(HealthAnswer::Unchanged) => Msg::HealthUnchanged,
                Err(err) => Msg::Health(Err(format!("{err:#}"))),
            },
            None => match lb.health_since(seen.as_deref()).await {
                Ok(HealthAnswer::Unchanged) => Msg::HealthUnchanged,
                Ok(HealthAnswer::Changed { report, etag }) => {
                    seen = etag;
                    Msg::Health(Ok(report))
                }
                Err(err) => {
                    seen = None;
                    Msg::Health(Err(format!("{err:#}")))
                }
            },
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

/// Samples the data plane's metrics whenever the monitor wants a snapshot; alarms are evaluated
/// by the loop.
async fn poll_metrics(lb: LbClient, shared: Arc<Shared>, tx: mpsc::Sender<Msg>) {
    let mut every = tokio::time::interval(METRICS_CHECK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !tx.is_closed() {
        every.tick().await;
        if !shared.monitor().should_poll(clock::now()) {
            continue;
        }
        match lb.metrics().await {
            Ok(snapshot) => {
                // The nodes' counters join the manager's: alarms read the sum.
                let snapshot = match lb.fleet() {
                    Some(fleet) => {
                        let mut parts = vec![("manager".to_string(), snapshot)];
                        parts.extend(fleet.metrics().await);
                        crate::fleet::decide::sum_metrics(&parts)
                    }
                    None => snapshot,
                };
                shared.monitor().record_snapshot(snapshot, clock::now());
            }
            Err(err) => warn!("reading the load balancer's metrics: {err:#}"),
        }
    }
}

/// Asks the runtimes about every task the store says runs, and reports each answer.
async fn inspect_tasks(
    store: Arc<Store>,
    runtimes: BTreeMap<String, Arc<dyn Runtime>>,
    tx: mpsc::Sender<Msg>,
) {
    let mut every = tokio::time::interval(INSPECT_POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let running = match store.read(|tx| tx.task_list(0)) {
            Ok(tasks) => tasks.into_iter().filter(|t| t.last_status == model::TaskStatus::Running),
            Err(err) => {
                warn!("listing tasks to inspect: {err}");
                continue;
            }
        };
        let mut answers = Vec::new();
        for task in running {
            let Some(rt) = runtimes.get(task.runtime.as_str()) else { continue };
            let Some(handle) =
                task.handle.as_deref().and_then(|h| serde_json::from_str::<TaskHandle>(h).ok())
            else {
                continue;
            };
            let state: TaskState = rt.inspect(&handle).await;
            answers.push(Inspection { task_id: task.id, handle, state });
        }
        // One message per round, also an empty one: the loop's pass runs once for all of them.
        if tx.send(Msg::TasksInspected(answers)).await.is_err() {
            return;
        }
    }
}

/// What a runtime said about a task the store said runs.
pub struct Inspection {
    pub task_id: String,
    pub handle: TaskHandle,
    pub state: TaskState,
}

/// Sends routing tables to the data plane one at a time, in the order they were made.
#[derive(Clone)]
pub struct RoutePusher {
    /// The loop's tables, with the load balancers the swarm's nodes serve, each reported back as
    /// [`Msg::RoutesPushed`].
    queue: mpsc::Sender<(RouteTable, BTreeSet<String>)>,
}

/// Where a data plane that died is started again.
pub struct Restart {
    pub data_dir: std::path::PathBuf,
    pub threads: usize,
}

impl RoutePusher {
    pub fn spawn(lb: LbClient, restart: Restart, tx: mpsc::Sender<Msg>) -> RoutePusher {
        let (queue, pushes) = mpsc::channel(PUSHES_QUEUED_MAX);
        tokio::spawn(push_tables(lb, restart, pushes, tx));
        RoutePusher { queue }
    }

    /// Queues the loop's table, whose `cluster` load balancers the swarm's nodes serve (see
    /// `fleet::decide::split`); `false` when the queue is full (the data plane has not answered
    /// for long), and the table must be pushed again later.
    pub fn push(&self, table: RouteTable, cluster: BTreeSet<String>) -> bool {
        self.queue.try_send((table, cluster)).is_ok()
    }
}

async fn push_tables(
    lb: LbClient,
    restart: Restart,
    mut pushes: mpsc::Receiver<(RouteTable, BTreeSet<String>)>,
    tx: mpsc::Sender<Msg>,
) {
    let mut waiting = None;
    loop {
        let first = match waiting.take() {
            Some(newer) => newer,
            None => match pushes.recv().await {
                Some(table) => table,
                None => return,
            },
        };
        // Of the tables waiting, only the newest matters: it replaces the others whole.
        let (mut table, mut cluster) = first;
        while let Ok(next) = pushes.try_recv() {
            (table, cluster) = next;
        }
        let version = table.version;
        let split = crate::fleet::decide::split(&table, &cluster);
        // The nodes get their half at once, each in its own task: none waits for another.
        if let Some(fleet) = lb.fleet() {
            fleet.push(split.cluster.unwrap_or(RouteTable { version, ..RouteTable::default() }));
        }
        let mut result = push_or_restart(&lb, &restart, &split.local).await;
        if let (Ok(()), Some(fleet)) = (&result, lb.fleet()) {
            // Applied once every answering node serves it too; a newer table does not wait.
            tokio::select! {
                applied = fleet.wait_applied(version) => result = applied.map_err(anyhow::Error::msg),
                newer = pushes.recv() => {
                    waiting = newer;
                    continue;
                }
            }
        }
        let result = result.map_err(|err| format!("{err:#}"));
        if tx.send(Msg::RoutesPushed { version, result }).await.is_err() {
            return;
        }
    }
}

/// Pushes a table; when the data plane does not take it, perhaps it died: start it again (it
/// restores its last table from its state file) and retry once.
async fn push_or_restart(
    lb: &LbClient,
    restart: &Restart,
    table: &RouteTable,
) -> anyhow::Result<()> {
    let Err(err) = lb.put_routes(table).await else { return Ok(()) };
    crate::lb::ensure_running(&restart.data_dir, lb.admin_addr(), restart.threads).await?;
    lb.put_routes(table).await.map_err(|retry| anyhow::anyhow!("{err:#}; retry: {retry:#}"))?;
    Ok(())
}
