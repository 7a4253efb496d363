//! The reconcile loop: the one task that changes the control plane's state, a thin executor
//! around `reconciler::Reconciler`.
//!
//! Every mutation (API commands, runtime answers, the data plane's reports, hook results, alarm
//! states, deadlines) arrives as a [`Msg`] on one channel and becomes an `Observation`
//! (`observe`). The reconciler decides; when its state changed, the engine writes the state,
//! the rows the API reads (`project`) and the history of its effects in ONE transaction
//! (`write`), and only then performs the effects (`effects`), each in a task of its own that
//! reports back as a message. The loop never awaits IO, and sleeps until the reconciler's next
//! deadline or the next message.
//!
//! The pipelines live in this loop too: it owns their `pipelines::Shell`, hands it the requests
//! of their handlers and jobs (`Msg::Pipelines`) and a tick at its deadlines, creates the
//! deployments their deploy actions ask for as its own commands and tells them when those end
//! (`pipeline_deploys`).
//!
//! A write the store refuses (a full disk) changes nothing: the engine keeps its previous state,
//! performs nothing, keeps the observation and feeds it again once the store can be written
//! (`outage`).

mod alarms;
mod commands;
mod effects;
pub mod observe;
mod pipeline_deploys;
pub mod project;
mod recover;
pub mod write;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use model::Timestamp;
use reconciler::{Observation, Reconciler};
use routes::{HealthReport, RouteTable};
use runtime::{Runtime, TaskHandle};
use store::{Store, TaskRow, TaskSetRow};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::api;
use crate::clock;
use crate::deployment::{self, DeploymentBody};
use crate::error::ApiError;
use crate::lb::LbClient;
use crate::outage::StoreOutage;

pub type Reply = oneshot::Sender<Result<serde_json::Value, ApiError>>;

pub enum Msg {
    Command(Command, Reply),
    HookDone {
        deployment_id: String,
        execution_id: String,
        succeeded: bool,
        message: String,
    },
    TaskStarted {
        task_id: String,
        result: Result<TaskHandle, String>,
    },
    TaskStopped {
        task_id: String,
    },
    /// The data plane's health, or why it did not answer.
    Health(Result<HealthReport, String>),
    /// The data plane answered that its health is the report last sent as [`Msg::Health`].
    HealthUnchanged,
    /// What the runtimes said about the tasks the store says run.
    TasksInspected(Vec<crate::pollers::Inspection>),
    /// The data plane took the loop's table `version`, or did not.
    RoutesPushed {
        version: u64,
        result: Result<(), String>,
    },
    /// For the pipelines, whose state this loop owns too (`pipelines::Shell`).
    Pipelines(pipelines::Request),
}

impl From<pipelines::Request> for Msg {
    fn from(request: pipelines::Request) -> Msg {
        Msg::Pipelines(request)
    }
}

pub enum Command {
    /// One pass of `apply`: answered with an [`crate::apply::ApplyStep`].
    Apply {
        request: api::ApplyRequest,
        /// The routing table the data plane has checked for this request, if any.
        validated: Option<RouteTable>,
    },
    CreateDeployment(api::CreateDeploymentRequest),
    Stop {
        id: String,
        rollback: Option<bool>,
    },
    Continue {
        id: String,
        wait: String,
    },
    HookStatus {
        id: String,
        execution_id: String,
        succeeded: bool,
        message: String,
    },
    RegisterTaskDefinition(api::FileUpload),
    DeregisterTaskDefinition {
        family: String,
        revision: u32,
    },
    RegisterTarget {
        target_group: String,
        addr: String,
        register: bool,
    },
    /// Stop every task and the data plane, then exit (`cutover down`).
    Shutdown,
}

/// What the HTTP handlers may read without going through the loop.
#[derive(Default)]
pub struct Shared {
    pub health: RwLock<HealthReport>,
    /// Metrics, metric filters and alarm instances. Held only for the length of synchronous
    /// work, never across an await.
    pub monitor: std::sync::Mutex<crate::monitor::Monitor>,
    pub routes_version: RwLock<u64>,
    pub shutdown: tokio::sync::Notify,
    /// Set while the store cannot be written: for `cutover status` and the deployments' events.
    pub store_outage: RwLock<Option<StoreOutage>>,
    /// Tokens of pending hook executions, checked by the API's authentication.
    pub hook_tokens: crate::hooks::HookTokens,
    /// Counts the engine's changes (a decision written, the data plane's health moving), so the
    /// API's live streams (`GET /v1/deployments/{id}/stream`, the console) wake without polling.
    pub changed: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    pub fn monitor(&self) -> std::sync::MutexGuard<'_, crate::monitor::Monitor> {
        self.monitor.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where the engine lives: its API's URL (given to hooks), data directory, and how many threads a
/// data plane it (re)starts gets.
pub struct EngineSettings {
    pub api_url: String,
    pub data_dir: std::path::PathBuf,
    pub lb_threads: usize,
}

/// Why an observation was not taken.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Rejected(#[from] reconciler::Rejected),
    /// The decision could not be written; nothing changed, and the observation is kept.
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl From<StepError> for ApiError {
    fn from(err: StepError) -> ApiError {
        use reconciler::Rejected;
        match err {
            StepError::Rejected(rejected @ Rejected::NoSuchDeployment(_))
            | StepError::Rejected(rejected @ Rejected::NoSuchGroup(_)) => {
                ApiError::not_found(rejected.to_string())
            }
            StepError::Rejected(rejected) => ApiError::conflict(rejected.to_string()),
            StepError::Store(err) => err.into(),
        }
    }
}

pub struct Engine {
    pub store: Arc<Store>,
    pub runtimes: BTreeMap<String, Arc<dyn Runtime>>,
    pub lb: LbClient,
    pub shared: Arc<Shared>,
    pub api_url: String,
    pub data_dir: std::path::PathBuf,
    pub lb_threads: usize,
    /// The pipelines' state and jobs, when `cutover up` started them: this loop is their one
    /// owner too, and wakes for their deadlines as for the reconciler's.
    pub pipelines: Option<pipelines::Shell>,
    /// The cutover.yaml `apply` parsed last, parsed again only when its text changes.
    pub last_parsed: crate::apply::LastParsed,
    /// The one state: every decision is the reconciler's.
    state: Reconciler,
    /// The rows last written from `state`, to write only what changed.
    projection: project::Projection,
    /// The routing table last handed to the data plane (without its version).
    last_pushed: Option<RouteTable>,
    tx: mpsc::Sender<Msg>,
    pusher: crate::pollers::RoutePusher,
    running_hooks: HashMap<(String, String), tokio::task::JoinHandle<()>>,
    /// Set while the store cannot be written.
    outage: Option<StoreOutage>,
    /// Observations the store could not take, in the order they came, to feed again once it can.
    deferred: Vec<Observation>,
    /// Every task stopped after `cutover down`: the loop ends.
    shut_down: bool,
    /// The data plane answered its latest health poll.
    lb_answering: bool,
}

impl Engine {
    pub fn new(
        store: Arc<Store>,
        runtimes: BTreeMap<String, Arc<dyn Runtime>>,
        lb: LbClient,
        shared: Arc<Shared>,
        settings: EngineSettings,
        tx: mpsc::Sender<Msg>,
    ) -> Engine {
        let EngineSettings { api_url, data_dir, lb_threads } = settings;
        let restart = crate::pollers::Restart { data_dir: data_dir.clone(), threads: lb_threads };
        let pusher = crate::pollers::RoutePusher::spawn(lb.clone(), restart, tx.clone());
        Engine {
            store,
            runtimes,
            lb,
            shared,
            api_url,
            data_dir,
            lb_threads,
            pipelines: None,
            last_parsed: crate::apply::LastParsed::default(),
            state: Reconciler::new(0, 0, clock::now()),
            projection: project::Projection::default(),
            last_pushed: None,
            tx,
            pusher,
            running_hooks: HashMap::new(),
            outage: None,
            deferred: Vec::new(),
            shut_down: false,
            lb_answering: true,
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        crate::pollers::spawn_all(
            self.lb.clone(),
            self.store.clone(),
            self.runtimes.clone(),
            self.shared.clone(),
            self.tx.clone(),
        );
        loop {
            let wake = self.next_deadline(clock::now()).map(instant_at);
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg).await,
                    None => return,
                },
                _ = sleep_until(wake) => self.tick(),
            }
            if self.shut_down {
                self.shared.shutdown.notify_waiters();
                return;
            }
        }
    }

    /// The earliest time something is due without a message: the reconciler's next deadline,
    /// the next write attempt during a store outage, or the pipelines' next deadline. Of the
    /// first two only those after `now`: one that passed was acted on, or waits for the store.
    /// The pipelines' may have passed (a resumed machine to write): it is due at once.
    fn next_deadline(&self, now: Timestamp) -> Option<Timestamp> {
        let outage = self.outage.as_ref().map(|o| o.retry_at);
        let reconciler =
            self.state.next_deadline().into_iter().chain(outage).filter(|at| *at > now);
        let pipelines = self.pipelines.as_ref().map(pipelines::Shell::next_deadline);
        reconciler.chain(pipelines).min()
    }

    /// A deadline passed: the store is tried again during an outage, time is observed, and the
    /// pipelines take what is due.
    fn tick(&mut self) {
        if self.store_writable(clock::now()) {
            self.feed(Observation::Tick);
        }
        if let Some(pipelines) = &mut self.pipelines
            && pipelines.next_deadline() <= clock::now()
        {
            pipelines.tick();
            // What it wrote (a timeout, a poll's execution) shows on the streams.
            self.shared.changed.send_modify(|n| *n += 1);
        }
        self.pipeline_deploys();
    }

    /// Takes one message, then performs what the pipelines' deploy actions asked meanwhile.
    async fn handle(&mut self, msg: Msg) {
        self.take(msg).await;
        self.pipeline_deploys();
    }

    async fn take(&mut self, msg: Msg) {
        let observation = match msg {
            Msg::Command(command, reply) => {
                let result = self.command(command).await;
                let _ = reply.send(result);
                return;
            }
            Msg::HookDone { deployment_id, execution_id, succeeded, message } => {
                self.forget_hook(&deployment_id, &execution_id);
                Observation::HookResult { deployment_id, execution_id, succeeded, message }
            }
            Msg::TaskStarted { task_id, result } => observe::task_started(task_id, result),
            Msg::TaskStopped { task_id } => Observation::TaskStopped { task_id },
            Msg::Health(Ok(report)) => {
                self.lb_answering = true;
                let moved = std::mem::replace(
                    &mut *self.shared.health.write().unwrap_or_else(|p| p.into_inner()),
                    report.clone(),
                ) != report;
                if moved {
                    self.shared.changed.send_modify(|n| *n += 1);
                }
                self.evaluate_alarms();
                let observed = observe::target_health(report);
                // Only requests in flight moved: nothing the reconciler decides by.
                if matches!(&observed, Observation::TargetHealth(r) if r == self.state.target_health())
                {
                    return;
                }
                observed
            }
            Msg::HealthUnchanged => {
                // The data plane answers; alarms are evaluated at its pace whether or not its
                // targets' health moved.
                self.lb_answering = true;
                self.evaluate_alarms();
                return;
            }
            Msg::Health(Err(err)) => {
                // The data plane may have died: the table is pushed again, which starts it. Once
                // per outage: each failure would put the reconciler's retry off again.
                if !std::mem::replace(&mut self.lb_answering, false) {
                    return;
                }
                warn!("the load balancer does not answer ({err}); pushing the table again");
                self.last_pushed = None;
                let version = self.state.routes_version();
                Observation::RoutesFailed { version, error: err }
            }
            Msg::TasksInspected(answers) => {
                for crate::pollers::Inspection { task_id, state, .. } in answers {
                    self.feed(observe::task_inspected(task_id, state));
                }
                return;
            }
            Msg::Pipelines(request) => {
                // Only a request that may write wakes the streams: a stream reading the
                // pipelines never asks the loop, so it cannot wake itself.
                let reads = matches!(
                    request,
                    pipelines::Request::Definitions { .. } | pipelines::Request::Pipeline { .. }
                );
                if let Some(pipelines) = &mut self.pipelines {
                    pipelines.handle(request);
                    if !reads {
                        self.shared.changed.send_modify(|n| *n += 1);
                    }
                }
                return;
            }
            Msg::RoutesPushed { version, result } => {
                if let Err(err) = &result {
                    warn!("updating the load balancer (routing table v{version}): {err}");
                    self.last_pushed = None;
                }
                observe::routes_pushed(version, result)
            }
        };
        self.feed(observation);
    }

    /// Feeds a report from outside the loop; one the store cannot take now is kept and fed again
    /// once it can. A rejected one (a hook result for a deployment that ended) is logged.
    pub(crate) fn feed(&mut self, observation: Observation) {
        if !self.store_writable(clock::now()) {
            self.deferred.push(observation);
            return;
        }
        match self.step(observation.clone(), |_| Ok(())) {
            Ok(()) => {}
            Err(StepError::Store(err)) if err.is_write_failure() => {
                self.deferred.push(observation);
                self.note_store_failure(clock::now());
            }
            Err(err) => info!("not taken: {err}"),
        }
    }

    /// One decision: the observation into the reconciler; if the state changed, the state, its
    /// rows, the effects' history and `also` (what only the shell knows, e.g. a new deployment's
    /// row, so only with a decision that changes the state) written in one transaction; then the
    /// effects performed. On any error nothing changed.
    pub(crate) fn step(
        &mut self,
        observation: Observation,
        also: impl FnOnce(&store::Tx<'_>) -> store::Result<()>,
    ) -> Result<(), StepError> {
        let now = clock::now();
        let before = self.state.clone();
        let effects = self.state.observe(observation, now)?;
        if effects.is_empty() && !self.state.differs_from(&before) {
            return Ok(());
        }
        let written = self.store.transaction(|tx| {
            also(tx)?;
            write::write(tx, &self.state, &self.projection, &effects, now)
        });
        match written {
            Ok(projection) => {
                self.projection = projection;
                self.shared.changed.send_modify(|n| *n += 1);
                self.perform(effects);
                Ok(())
            }
            Err(err) => {
                self.state = before;
                Err(err.into())
            }
        }
    }

    pub fn deployment_view(&self, id: &str) -> Result<api::DeploymentView, ApiError> {
        deployment_view(&self.store, &self.shared, id)
    }

    /// Whether the data plane already serves `table` (compared without its version).
    pub fn serves_routes(&self, table: &RouteTable) -> bool {
        self.last_pushed.as_ref().is_some_and(|last| *last == *table)
    }

    /// The table last handed to the data plane (as version 0), unless a push of it failed.
    pub fn served_routes(&self) -> Option<&RouteTable> {
        self.last_pushed.as_ref()
    }

    // -----------------------------------------------------------------------------------------
    // A store that cannot be written.

    /// Whether decisions may be written: not while the store refuses writes and the next retry
    /// is not due, nor when that retry fails. A retry that succeeds ends the outage: it writes the
    /// events held meanwhile, and the observations that were kept are fed again.
    fn store_writable(&mut self, now: Timestamp) -> bool {
        self.note_store_failure(now);
        let Some(outage) = &self.outage else { return true };
        if now < outage.retry_at {
            return false;
        }
        let mut events = outage.held.clone();
        events.extend(outage.recovered_events(now));
        let written = self.store.transaction(|tx| {
            tx.meta_set("store_checked_at", &now.as_millis().to_string())?;
            for event in &events {
                tx.event_append(
                    &event.deployment_id,
                    event.at.as_millis(),
                    crate::outage::EVENT_KIND,
                    &event.message,
                )?;
            }
            Ok(())
        });
        match written {
            Ok(()) => {
                info!(
                    "the data directory can be written again after {}; carrying on",
                    model::format_duration(now.since(outage.since))
                );
                self.set_outage(None);
                for observation in std::mem::take(&mut self.deferred) {
                    self.feed(observation);
                }
                true
            }
            Err(err) => {
                let mut outage = outage.clone();
                outage.failed_again(err.to_string(), now);
                tracing::debug!("the data directory still cannot be written: {err}");
                self.set_outage(Some(outage));
                false
            }
        }
    }

    /// Starts an outage when the store has just refused a write.
    fn note_store_failure(&mut self, now: Timestamp) {
        if self.outage.is_some() {
            return;
        }
        let Some(error) = self.store.write_failure() else { return };
        warn!(
            "cannot write to the data directory ({error}); acting on nothing until it can be \
             written, retrying with backoff"
        );
        let deployments: Vec<String> = self
            .state
            .deployments()
            .filter(|d| !d.machine.is_finished())
            .map(|d| d.id.clone())
            .collect();
        self.set_outage(Some(StoreOutage::begin(error, now, &deployments)));
    }

    fn set_outage(&mut self, outage: Option<StoreOutage>) {
        *self.shared.store_outage.write().unwrap_or_else(|p| p.into_inner()) = outage.clone();
        self.outage = outage;
    }
}

pub fn deployment_view(
    store: &Store,
    _shared: &Shared,
    id: &str,
) -> Result<api::DeploymentView, ApiError> {
    let row = store.read(|tx| tx.deployment_get(id))?.ok_or_else(|| {
        ApiError::not_found(format!("no deployment {id}; `cutover deployments list` shows them"))
    })?;
    let mut views = deployment_views(store, std::slice::from_ref(&row))?;
    Ok(views.remove(0))
}

/// The views of the deployments `rows`, in their order. What they share (task sets, tasks, the
/// judges' periods) is read once for all of them, so a page that lists many deployments (the
/// overview: every group's last one) reads a few queries, not a few per deployment.
pub fn deployment_views(
    store: &Store,
    rows: &[store::DeploymentRow],
) -> Result<Vec<api::DeploymentView>, ApiError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let (sets, tasks, judged, mirrored) = store.read(|tx| {
        Ok((
            tx.task_set_list()?,
            tx.task_list(0)?,
            tx.resource_list(alarms::KIND_JUDGED_PERIOD)?,
            tx.resource_list(alarms::KIND_MIRRORED)?,
        ))
    })?;
    rows.iter()
        .map(|row| {
            let body: DeploymentBody = serde_json::from_str(&row.body)?;
            let machine: rollout::Rollout = serde_json::from_str(&row.machine)?;
            let set_view = |set_id: &str| {
                sets.iter().find(|s| s.id == set_id).map(|s| task_set_view(s, &tasks))
            };
            let blue = set_view(&body.blue_task_set);
            let green = body.green_task_set.as_deref().and_then(set_view);
            let mut view = deployment::view(row, &body, &machine, blue, green);
            view.judges = alarms::judges_of(&judged, &row.id);
            view.mirrored = alarms::mirrored_of(&mirrored, &row.id);
            Ok(view)
        })
        .collect()
}

pub fn task_set_view(ts: &TaskSetRow, tasks: &[TaskRow]) -> api::TaskSetView {
    let mine = tasks.iter().filter(|t| t.task_set_id == ts.id);
    api::TaskSetView {
        id: ts.id.clone(),
        status: ts.status.to_string(),
        task_definition: ts.task_definition.clone(),
        target_group: ts.target_group.clone(),
        deployment_id: ts.deployment_id.clone(),
        desired_count: ts.desired_count,
        running_count: mine.clone().filter(|t| t.last_status == model::TaskStatus::Running).count()
            as u32,
        healthy_count: mine
            .filter(|t| {
                t.last_status == model::TaskStatus::Running
                    && t.health == model::TaskHealth::Healthy
            })
            .count() as u32,
    }
}

/// Sleeps until `at`, or forever without a deadline (a message wakes the loop then).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The monotonic instant at which the control plane's clock reads `at` (now, if it has passed).
fn instant_at(at: Timestamp) -> tokio::time::Instant {
    tokio::time::Instant::now() + at.since(clock::now())
}
