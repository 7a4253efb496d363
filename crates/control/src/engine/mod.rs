//! The reconcile loop: the one task that changes the control plane's state.
//!
//! Every mutation (API commands, hook results, task start/stop results, timer ticks) arrives as a
//! [`Msg`] on one channel and is handled to completion before the next, so there are no races
//! between, say, a rollback and a scheduled traffic shift. Each pass:
//!
//! 1. stops drained tasks and keeps every task set at its desired count (replacing tasks that
//!    exited or went unhealthy, as the runtimes' reports said);
//! 3. feeds each active deployment's state machine (green healthy / green failing / deadlines)
//!    and performs its effects, writing them to the store first;
//! 4. recomputes the routing table and sends it to the data plane when it changed.
//!
//! The loop never waits for IO: starting and stopping tasks, running hooks, reading the data
//! plane's health and metrics, inspecting tasks and pushing routing tables run in tasks of their
//! own (`pollers`) that report back as messages, so neither a 30-second graceful stop nor a data
//! plane that does not answer delays a rollback. Between messages the loop sleeps until its next
//! deadline.

pub mod project;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use model::{DeploymentStatus, Timestamp};
use reconciler::{GreenVerdict, GreenView};
use rollout::{Effect, Input, Rollout};
use routes::{HealthReport, RouteTable};
use runtime::{Runtime, TaskHandle, TaskState};
use store::{DeploymentRow, Store, TaskRow, TaskSetRow};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::api;
use crate::clock;
use crate::declared::*;
use crate::deployment::{self, DeploymentBody};
use crate::error::ApiError;
use crate::hooks::{self, HookContext, HookRun};
use crate::lb::LbClient;
use crate::outage::StoreOutage;
use crate::records;
use crate::state::{self, Snapshot};

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
    /// What the runtimes said about the tasks the store says run.
    TasksInspected(Vec<crate::pollers::Inspection>),
    /// The data plane took the loop's table `version`, or did not.
    RoutesPushed {
        version: u64,
        result: Result<(), String>,
    },
}

pub enum Command {
    Apply(api::ApplyRequest),
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
    /// The ECS deploy action (`imagedefinitions.json`): a new revision of the service's task
    /// definition with these containers' images, deployed through the service's group.
    DeployImages {
        service: String,
        images: Vec<(String, String)>,
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
}

impl Shared {
    pub fn monitor(&self) -> std::sync::MutexGuard<'_, crate::monitor::Monitor> {
        self.monitor.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Something that happened outside the loop and must be recorded. When the store cannot take it,
/// the engine keeps it and applies it again once it can, rather than dropping it.
#[derive(Clone, Debug)]
enum Report {
    Input { deployment_id: String, input: Input },
    TaskStarted { task_id: String, result: Result<TaskHandle, String> },
    TaskStopped { task_id: String },
}

/// Where the engine lives: its API's URL (given to hooks), data directory, and how many threads a
/// data plane it (re)starts gets.
pub struct EngineSettings {
    pub api_url: String,
    pub data_dir: std::path::PathBuf,
    pub lb_threads: usize,
}

pub struct Engine {
    pub store: Arc<Store>,
    pub runtimes: BTreeMap<String, Arc<dyn Runtime>>,
    pub lb: LbClient,
    pub shared: Arc<Shared>,
    pub api_url: String,
    pub data_dir: std::path::PathBuf,
    pub lb_threads: usize,
    /// Pipelines, when `cutover up` started them.
    pub ci: Option<Arc<pipelines::Pipelines>>,
    machines: BTreeMap<String, Rollout>,
    routes_version: u64,
    last_pushed: Option<RouteTable>,
    tx: mpsc::Sender<Msg>,
    pusher: crate::pollers::RoutePusher,
    running_hooks: HashMap<(String, String), tokio::task::JoinHandle<()>>,
    /// Green's verdict may use the tasks' health: it was derived from a health report about
    /// the routing table last ordered (or a later one).
    health_fresh: bool,
    /// The latest health poll was answered.
    health_known: bool,
    shutting_down: bool,
    health_checked: HashMap<String, bool>,
    /// Set while the store cannot be written.
    outage: Option<StoreOutage>,
    /// Reports the store could not take, in the order they came, to apply once it can.
    deferred: Vec<Report>,
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
            ci: None,
            machines: BTreeMap::new(),
            routes_version: 0,
            last_pushed: None,
            tx,
            pusher,
            running_hooks: HashMap::new(),
            health_fresh: false,
            health_known: false,
            shutting_down: false,
            health_checked: HashMap::new(),
            outage: None,
            deferred: Vec::new(),
        }
    }

    /// Brings the world in line with the store after a (re)start: adopts tasks that are still
    /// running, forgets the ones that died while we were away, removes ones we no longer own,
    /// restores deployments, and sends the data plane the table it should serve.
    pub async fn recover(&mut self) -> anyhow::Result<()> {
        let now = clock::now();
        let served = self.lb.served_version().await.unwrap_or(0);
        let stored: u64 = self
            .store
            .read(|tx| tx.meta_get("routes_version"))?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        self.routes_version = served.max(stored);
        if served > stored {
            // Drains count from the version the data plane serves (`records::note_removal`).
            let version = served.to_string();
            self.store.transaction(|tx| tx.meta_set("routes_version", &version))?;
        }

        let mut owned: HashMap<String, (String, TaskHandle)> = HashMap::new();
        for (kind, rt) in &self.runtimes {
            match rt.list_owned().await {
                Ok(handles) => {
                    for handle in handles {
                        owned.insert(handle.task_id.clone(), (kind.clone(), handle));
                    }
                }
                Err(err) => warn!("listing {kind} tasks: {err}"),
            }
        }
        let tasks = self.store.read(|tx| tx.task_list(0))?;
        let mut adopted = 0;
        for mut task in tasks {
            if task.last_status == model::TaskStatus::Stopped {
                continue;
            }
            match owned.remove(&task.id) {
                Some((_, handle)) => {
                    adopted += 1;
                    task.handle = Some(serde_json::to_string(&handle)?);
                    task.addr = handle.addr.map(|a| a.to_string());
                    if task.last_status == model::TaskStatus::Provisioning {
                        task.last_status = model::TaskStatus::Running;
                        task.started_at = Some(now.as_millis());
                    }
                    if task.last_status == model::TaskStatus::Stopping {
                        task.last_status = model::TaskStatus::Deactivating;
                        task.stop_at = Some(now.as_millis());
                    }
                }
                None => {
                    task.last_status = model::TaskStatus::Stopped;
                    task.desired_status = model::DesiredStatus::Stopped;
                    task.stopped_at = Some(now.as_millis());
                    task.stopped_reason.get_or_insert_with(|| {
                        "task was gone when the control plane restarted".into()
                    });
                    self.store.transaction(|tx| {
                        let reason = "task exited while the control plane was down";
                        records::note_failure(tx, &task.task_set_id, reason, now)?;
                        records::forget_removal(tx, &task.id)
                    })?;
                }
            }
            self.store.transaction(|tx| tx.task_put(&task))?;
        }
        for (task_id, (kind, handle)) in owned {
            warn!(task = %task_id, "removing a {kind} task this control plane no longer owns");
            if let Some(rt) = self.runtimes.get(&kind) {
                let _ = rt.stop(&handle).await;
                let _ = rt.remove(&handle).await;
            }
        }
        info!(adopted, "tasks adopted after start");

        let saved: Vec<(String, alarms::Alarm)> = self
            .store
            .read(|tx| tx.resource_list(KIND_ALARM_STATE))?
            .into_iter()
            .filter_map(|(key, body)| Some((key, serde_json::from_str(&body).ok()?)))
            .collect();
        self.monitor().restore(saved);

        let active = self.store.read(|tx| tx.deployment_list_active())?;
        for row in active {
            match serde_json::from_str::<Rollout>(&row.machine) {
                Ok(mut machine) => {
                    machine.resume(now);
                    info!(deployment = %row.id, status = %machine.status(), "resuming deployment");
                    self.machines.insert(row.id.clone(), machine);
                    self.drive(&row.id, now)?;
                }
                Err(err) => warn!(deployment = %row.id, "cannot restore deployment state: {err}"),
            }
        }
        self.reconcile().await;
        Ok(())
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
                _ = sleep_until(wake) => {}
            }
            self.reconcile().await;
            if self.shutting_down && self.all_tasks_stopped() {
                self.shared.shutdown.notify_waiters();
                return;
            }
        }
    }

    /// The earliest time something is due without a message: a deployment's deadline, the end
    /// of a drain, a restart after backoff, the next write attempt during a store outage.
    ///
    /// Only deadlines after `now`: one that passed was acted on by the pass that just ran, or
    /// waits for the store (the outage's retry is then a deadline); either way it must not wake
    /// the loop again at once. The pollers' messages wake it at least every few hundred ms.
    fn next_deadline(&self, now: Timestamp) -> Option<Timestamp> {
        let machines = self.machines.values().filter_map(Rollout::poll_timeout);
        let retries = self
            .store
            .read(records::all_failures)
            .unwrap_or_default()
            .into_values()
            .map(|record| record.retry_at());
        let drains = self
            .store
            .read(|tx| tx.task_list(0))
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.last_status == model::TaskStatus::Deactivating)
            .filter_map(|t| t.stop_at.map(Timestamp::from_millis));
        let outage = self.outage.as_ref().map(|o| o.retry_at);
        machines.chain(retries).chain(drains).chain(outage).filter(|at| *at > now).min()
    }

    fn all_tasks_stopped(&self) -> bool {
        self.store
            .read(|tx| tx.task_list(0))
            .map(|tasks| tasks.iter().all(|t| t.last_status == model::TaskStatus::Stopped))
            .unwrap_or(true)
    }

    async fn handle(&mut self, msg: Msg) {
        let report = match msg {
            Msg::Command(command, reply) => {
                let result = self.command(command).await;
                let _ = reply.send(result);
                return;
            }
            Msg::HookDone { deployment_id, execution_id, succeeded, message } => {
                self.forget_hook(&deployment_id, &execution_id);
                let input = Input::HookResult { execution_id, succeeded, message };
                Report::Input { deployment_id, input }
            }
            Msg::TaskStarted { task_id, result } => Report::TaskStarted { task_id, result },
            Msg::TaskStopped { task_id } => Report::TaskStopped { task_id },
            Msg::Health(report) => return self.health_reported(report),
            Msg::TasksInspected(answers) => {
                let now = clock::now();
                for crate::pollers::Inspection { task_id, handle, state } in answers {
                    if let Err(err) = self.task_inspected(&task_id, handle, state, now) {
                        warn!(task = %task_id, "recording what the runtime said: {err:#}");
                    }
                }
                // The tasks' health now says what the latest report says: green's verdict may
                // use them, if that report is about the table last ordered.
                let served = self.shared.health.read().unwrap_or_else(|p| p.into_inner()).version;
                self.health_fresh = self.health_known && served >= self.routes_version;
                return;
            }
            Msg::RoutesPushed { version, result } => return self.routes_pushed(version, result),
        };
        self.apply_report(report);
    }

    /// Records a report; one the store cannot take now is kept, and applied again once it can
    /// ([`Engine::store_writable`]).
    fn apply_report(&mut self, report: Report) {
        let result = match report.clone() {
            Report::Input { deployment_id, input } => {
                self.feed(&deployment_id, input).map_err(|err| anyhow::anyhow!(err.body.error))
            }
            Report::TaskStarted { task_id, result } => self.task_started(&task_id, result),
            Report::TaskStopped { task_id } => self.task_stopped(&task_id),
        };
        let Err(err) = result else { return };
        if self.store.write_failure().is_some() {
            self.deferred.push(report);
            return;
        }
        match report {
            Report::Input { deployment_id, .. } => {
                info!(deployment = %deployment_id, "input not used: {err:#}")
            }
            Report::TaskStarted { task_id, .. } => {
                warn!(task = %task_id, "recording task start: {err:#}")
            }
            Report::TaskStopped { task_id } => {
                warn!(task = %task_id, "recording task stop: {err:#}")
            }
        }
    }

    fn task_stopped(&mut self, task_id: &str) -> anyhow::Result<()> {
        let now = clock::now();
        self.store.transaction(|tx| {
            if let Some(mut task) = tx.task_get(task_id)? {
                task.last_status = model::TaskStatus::Stopped;
                task.stopped_at = Some(now.as_millis());
                tx.task_put(&task)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    async fn command(&mut self, command: Command) -> Result<serde_json::Value, ApiError> {
        let now = clock::now();
        match command {
            Command::Apply(request) => {
                let response = crate::apply::apply(self, request, now).await?;
                Ok(serde_json::to_value(response)?)
            }
            Command::CreateDeployment(request) => {
                let id = self.create_deployment(request, now)?;
                self.drive(&id, now)?;
                self.reconcile().await;
                Ok(serde_json::to_value(self.deployment_view(&id)?)?)
            }
            Command::Stop { id, rollback } => {
                if !self.machines.contains_key(&id)
                    && rollback == Some(true)
                    && self.is_leftover(&id)?
                {
                    self.roll_back_leftover(&id, now)?;
                    self.reconcile().await;
                    return Ok(serde_json::to_value(self.deployment_view(&id)?)?);
                }
                self.feed(&id, Input::Stop { rollback })?;
                self.reconcile().await;
                Ok(serde_json::to_value(self.deployment_view(&id)?)?)
            }
            Command::Continue { id, wait } => {
                let input = match wait.as_str() {
                    "READY_WAIT" => Input::ContinueReadyWait,
                    "TERMINATION_WAIT" => Input::ContinueTerminationWait,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "unknown wait `{other}`; use READY_WAIT or TERMINATION_WAIT"
                        )));
                    }
                };
                self.feed(&id, input)?;
                self.reconcile().await;
                Ok(serde_json::to_value(self.deployment_view(&id)?)?)
            }
            Command::HookStatus { id, execution_id, succeeded, message } => {
                if let Some(handle) = self.forget_hook(&id, &execution_id) {
                    handle.abort();
                }
                self.feed(&id, Input::HookResult { execution_id, succeeded, message })?;
                self.reconcile().await;
                Ok(serde_json::json!({ "status": "accepted" }))
            }
            Command::RegisterTaskDefinition(file) => {
                let (family, revision) =
                    crate::apply::register_task_definition(&self.store, &file, now)?;
                Ok(serde_json::json!({
                    "family": family,
                    "revision": revision,
                    "arn": config::TaskDefinitionRef::arn(&family, revision),
                }))
            }
            Command::DeregisterTaskDefinition { family, revision } => {
                let found = self.store.transaction(|tx| {
                    tx.task_definition_set_status(&family, revision, "INACTIVE")
                })?;
                if !found {
                    return Err(ApiError::not_found(format!(
                        "no task definition {family}:{revision}"
                    )));
                }
                Ok(
                    serde_json::json!({ "family": family, "revision": revision, "status": "INACTIVE" }),
                )
            }
            Command::RegisterTarget { target_group, addr, register } => {
                self.register_target(&target_group, &addr, register, now).await
            }
            Command::DeployImages { service, images } => {
                let request = crate::apply::image_definitions_deployment(self, &service, &images)?;
                let id = self.create_deployment(request, now)?;
                self.drive(&id, now)?;
                self.reconcile().await;
                Ok(serde_json::to_value(self.deployment_view(&id)?)?)
            }
            Command::Shutdown => self.shutdown(now),
        }
    }

    /// Registers or deregisters an IP target by hand (`cutover target-groups register`).
    async fn register_target(
        &mut self,
        target_group: &str,
        addr: &str,
        register: bool,
        now: Timestamp,
    ) -> Result<serde_json::Value, ApiError> {
        let addr: std::net::SocketAddr = addr.parse().map_err(|_| {
            ApiError::bad_request(format!("`{addr}` is not an address:port such as 127.0.0.1:9000"))
        })?;
        let mut doc: TargetGroupDoc = self
            .store
            .read(|tx| state::doc(tx, KIND_TARGET_GROUP, target_group))?
            .ok_or_else(|| ApiError::not_found(format!("no target group `{target_group}`")))?;
        if register {
            if !doc.manual_targets().any(|t| *t == addr) {
                doc.registered.push(addr);
            }
        } else {
            // A declared target deregistered by hand comes back with the next apply,
            // as the file still says so.
            doc.targets.retain(|t| *t != addr);
            doc.registered.retain(|t| *t != addr);
        }
        let body = serde_json::to_string(&doc)?;
        self.store.transaction(|tx| {
            tx.resource_put(KIND_TARGET_GROUP, target_group, &body, now.as_millis())
        })?;
        self.reconcile().await;
        Ok(serde_json::to_value(doc)?)
    }

    /// Stops every task and then the loop (`cutover down`).
    fn shutdown(&mut self, now: Timestamp) -> Result<serde_json::Value, ApiError> {
        self.shutting_down = true;
        let result = self.store.transaction(|tx| {
            for mut ts in tx.task_set_list()? {
                ts.status = model::TaskSetStatus::Draining;
                ts.desired_count = 0;
                tx.task_set_put(&ts)?;
            }
            Ok(())
        });
        result?;
        // Stop at once rather than after the drain: the operator asked for everything to go.
        let tasks = self.store.read(|tx| tx.task_list(0))?;
        for task in tasks.into_iter().filter(|t| t.last_status != model::TaskStatus::Stopped) {
            self.begin_stop(task, now, "cutover down")?;
        }
        Ok(serde_json::json!({ "status": "stopping" }))
    }

    // -----------------------------------------------------------------------------------------
    // Deployments.

    fn create_deployment(
        &mut self,
        request: api::CreateDeploymentRequest,
        now: Timestamp,
    ) -> Result<String, ApiError> {
        let (id, machine) = crate::apply::create_deployment(self, request, now)?;
        self.machines.insert(id.clone(), machine);
        Ok(id)
    }

    fn is_leftover(&self, id: &str) -> Result<bool, ApiError> {
        let snapshot = self.store.read(Snapshot::load)?;
        Ok(snapshot.group_states.values().any(|s| s.leftover_deployment.as_deref() == Some(id)))
    }

    /// Rolls back a deployment that ended without rolling back (stopped without rollback, or
    /// failed with auto-rollback off) and left green in place: production and test traffic go
    /// back to blue in one routing change, and green drains and stops.
    fn roll_back_leftover(&mut self, id: &str, now: Timestamp) -> Result<(), ApiError> {
        self.store.transaction(|tx| {
            let mut row = tx
                .deployment_get(id)?
                .ok_or_else(|| store::Error::Conflict(format!("deployment {id} vanished")))?;
            let mut body: DeploymentBody = serde_json::from_str(&row.body)?;
            body.route_production_green_percent = 0;
            body.route_test_to_green = false;
            body.rolled_back = true;
            if let Some(green) = &body.green_task_set {
                let reason = format!("deployment {id} was rolled back: green stopped");
                drain_task_set(tx, green, now, &reason)?;
            }
            let key = format!("{}/{}", body.application, body.deployment_group);
            let mut group_state: GroupState =
                state::doc(tx, KIND_GROUP_STATE, &key)?.unwrap_or_default();
            group_state.leftover_deployment = None;
            tx.resource_put(
                KIND_GROUP_STATE,
                &key,
                &serde_json::to_string(&group_state)?,
                now.as_millis(),
            )?;
            row.body = serde_json::to_string(&body)?;
            row.updated_at = now.as_millis();
            tx.deployment_put(&row)?;
            tx.event_append(
                id,
                now.as_millis(),
                "rollback",
                "rolled back by request: production and test traffic on blue, green stopping",
            )?;
            Ok(())
        })?;
        Ok(())
    }

    /// Feeds one input to a deployment's machine and performs what it decides.
    pub fn feed(&mut self, id: &str, input: Input) -> Result<(), ApiError> {
        let now = clock::now();
        let Some(machine) = self.machines.get_mut(id) else {
            let exists = self.store.read(|tx| tx.deployment_get(id))?.is_some();
            return Err(if exists {
                ApiError::conflict(format!("deployment {id} has already completed"))
            } else {
                ApiError::not_found(format!(
                    "no deployment {id}; `cutover deployments list` shows them"
                ))
            });
        };
        let before = machine.clone();
        machine.handle_input(input, now).map_err(|err| ApiError::conflict(err.to_string()))?;
        self.drive_or_undo(id, before, now)
    }

    /// [`Engine::drive`]; when the decision cannot be written, the machine goes back to
    /// `before`, so that nothing acts on it and it is taken again, at its own time, later.
    fn drive_or_undo(&mut self, id: &str, before: Rollout, now: Timestamp) -> Result<(), ApiError> {
        let result = self.drive(id, now);
        if result.is_err()
            && let Some(machine) = self.machines.get_mut(id)
        {
            *machine = before;
        }
        result
    }

    /// Performs every pending effect of a deployment, recording each one and the machine's new
    /// snapshot in one transaction before any side effect that leaves the process happens.
    fn drive(&mut self, id: &str, now: Timestamp) -> Result<(), ApiError> {
        let Some(machine) = self.machines.get_mut(id) else { return Ok(()) };
        // Effects stay queued in the machine until they are written (a failed write puts it back).
        let unpolled = machine.clone();
        let mut effects = Vec::new();
        while let Some(effect) = machine.poll_effect() {
            effects.push(effect);
        }
        let machine_json = serde_json::to_string(&*machine)?;
        let status = machine.status();
        let finished = machine.is_finished();
        if effects.is_empty() {
            return Ok(());
        }
        let mut work = DriveWork::default();
        let written = self.store.transaction(|tx| {
            let mut row = tx
                .deployment_get(id)?
                .ok_or_else(|| store::Error::Conflict(format!("deployment {id} vanished")))?;
            let mut body: DeploymentBody = serde_json::from_str(&row.body)?;
            let group_key = format!("{}/{}", body.application, body.deployment_group);
            let mut group_state: GroupState =
                state::doc(tx, KIND_GROUP_STATE, &group_key)?.unwrap_or_default();
            let sides = crate::narrate::Sides {
                blue_target_group: &body.blue_target_group,
                green_target_group: &body.green_target_group,
            };
            let sentences: Vec<String> =
                effects.iter().map(|e| crate::narrate::effect_sentence(e, sides)).collect();
            let mut record = DeploymentRecord {
                id,
                row: &mut row,
                body: &mut body,
                group_state: &mut group_state,
            };
            for (effect, sentence) in effects.iter().zip(&sentences) {
                tx.event_append(id, now.as_millis(), "effect", sentence)?;
                record_effect(tx, &mut record, effect, now, &mut work)?;
            }
            row.status = status.as_str().to_string();
            row.machine = machine_json.clone();
            row.body = serde_json::to_string(&body)?;
            row.updated_at = now.as_millis();
            if finished && row.completed_at.is_none() {
                row.completed_at = Some(now.as_millis());
            }
            if finished {
                records::forget_deployment(tx, id)?;
            }
            tx.deployment_put(&row)?;
            tx.resource_put(
                KIND_GROUP_STATE,
                &group_key,
                &serde_json::to_string(&group_state)?,
                now.as_millis(),
            )?;
            Ok(())
        });
        if let Err(err) = written {
            if let Some(machine) = self.machines.get_mut(id) {
                *machine = unpolled;
            }
            return Err(err.into());
        }
        // From here on every effect is written: an error must not make the caller undo it.
        for effect in &effects {
            info!(deployment = %id, "{effect}");
        }
        for execution_id in work.hooks_to_cancel {
            if let Some(handle) = self.forget_hook(id, &execution_id) {
                handle.abort();
            }
        }
        for (event, execution_id, hook, timeout) in work.hooks_to_run {
            if let Err(err) = self.spawn_hook(id, event, execution_id, &hook, timeout) {
                // The machine's own timeout for the hook settles it.
                warn!(deployment = %id, "starting hook {hook}: {}", err.body.error);
            }
        }
        if finished {
            self.machines.remove(id);
            self.shared.hook_tokens.revoke_deployment(id);
        }
        Ok(())
    }

    /// A hook execution is no longer pending: its token stops working at once.
    fn forget_hook(
        &mut self,
        deployment_id: &str,
        execution_id: &str,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.shared.hook_tokens.revoke(deployment_id, execution_id);
        self.running_hooks.remove(&(deployment_id.to_string(), execution_id.to_string()))
    }

    fn spawn_hook(
        &mut self,
        id: &str,
        event: model::LifecycleEvent,
        execution_id: String,
        hook_name: &str,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        let (body, snapshot) = self.store.read(|tx| {
            let row = tx
                .deployment_get(id)?
                .ok_or_else(|| store::Error::Conflict(format!("no deployment {id}")))?;
            let body: DeploymentBody = serde_json::from_str(&row.body)?;
            Ok((body, Snapshot::load(tx)?))
        })?;
        let group =
            snapshot.group(&format!("{}/{}", body.application, body.deployment_group)).cloned();
        let target =
            body.hooks.get(event.as_str()).filter(|h| h.name == hook_name).map(|h| h.target());
        let ctx = HookContext {
            deployment_id: id.to_string(),
            execution_id: execution_id.clone(),
            event: event.as_str().to_string(),
            test_url: group
                .as_ref()
                .and_then(|g| g.test_listener.as_ref())
                .and_then(|l| snapshot.listener_url(l)),
            production_url: group
                .as_ref()
                .and_then(|g| snapshot.listener_url(&g.production_listener)),
            api_url: self.api_url.clone(),
            callback_url: format!(
                "{}/v1/deployments/{id}/lifecycle-hooks/{execution_id}",
                self.api_url
            ),
            token: self.shared.hook_tokens.grant(id, &execution_id),
        };
        let tx = self.tx.clone();
        let deployment_id = id.to_string();
        let exec = execution_id.clone();
        let hook_name = hook_name.to_string();
        let handle = tokio::spawn(async move {
            let run = match target {
                Some(target) => hooks::run(target, ctx, timeout).await,
                None => HookRun::Done {
                    succeeded: false,
                    message: format!("hook `{hook_name}` is not resolved for this deployment"),
                },
            };
            if let HookRun::Done { succeeded, message } = run {
                let _ = tx
                    .send(Msg::HookDone { deployment_id, execution_id: exec, succeeded, message })
                    .await;
            }
        });
        self.running_hooks.insert((id.to_string(), execution_id), handle);
        Ok(())
    }

    pub fn deployment_view(&self, id: &str) -> Result<api::DeploymentView, ApiError> {
        deployment_view(&self.store, &self.shared, id)
    }

    // -----------------------------------------------------------------------------------------
    // The pass.

    pub async fn reconcile(&mut self) {
        let now = clock::now();
        if !self.store_writable(now) {
            return;
        }
        if let Err(err) = self.watch_alarms(now) {
            warn!("evaluating alarms: {err:#}");
        }
        if let Err(err) = self.stop_drained(now) {
            warn!("stopping drained tasks: {err:#}");
        }
        if let Err(err) = self.schedule(now) {
            warn!("scheduling tasks: {}", err.body.error);
        }
        if let Err(err) = self.advance_deployments(now) {
            warn!("advancing deployments: {}", err.body.error);
        }
        if let Err(err) = self.push_routes() {
            warn!("updating the load balancer: {err:#}");
        }
        self.note_store_failure(clock::now());
    }

    // -----------------------------------------------------------------------------------------
    // A store that cannot be written.

    /// Whether this pass may go on: not while the store refuses writes and the next retry is not
    /// due, nor when that retry fails. A retry that succeeds ends the outage: it writes the
    /// events held meanwhile, and the reports that were kept are applied.
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
                for report in std::mem::take(&mut self.deferred) {
                    self.apply_report(report);
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
        let deployments: Vec<String> = self.machines.keys().cloned().collect();
        self.set_outage(Some(StoreOutage::begin(error, now, &deployments)));
    }

    fn set_outage(&mut self, outage: Option<StoreOutage>) {
        *self.shared.store_outage.write().unwrap_or_else(|p| p.into_inner()) = outage.clone();
        self.outage = outage;
    }

    fn monitor(&self) -> std::sync::MutexGuard<'_, crate::monitor::Monitor> {
        self.shared.monitor()
    }

    /// Reads task logs into the metric filters, evaluates alarms (over the metrics the poller
    /// sampled), and stops the deployments whose alarms are in ALARM while they watch them.
    fn watch_alarms(&mut self, now: Timestamp) -> anyhow::Result<()> {
        let (alarm_docs, filter_docs, tasks): (
            Vec<crate::monitor::AlarmDoc>,
            Vec<crate::monitor::MetricFilterDoc>,
            Vec<TaskRow>,
        ) = self.store.read(|tx| {
            Ok((
                state::docs(tx, KIND_ALARM)?,
                state::docs(tx, KIND_METRIC_FILTER)?,
                tx.task_list(0)?,
            ))
        })?;
        let mut deployments = Vec::new();
        let mut watching = Vec::new();
        for (id, machine) in &self.machines {
            let Some(row) = self.store.read(|tx| tx.deployment_get(id))? else { continue };
            let body: DeploymentBody = serde_json::from_str(&row.body)?;
            let group: Option<DeploymentGroupDoc> = self.store.read(|tx| {
                state::doc(
                    tx,
                    KIND_DEPLOYMENT_GROUP,
                    &format!("{}/{}", body.application, body.deployment_group),
                )
            })?;
            let watched = match (&group, body.ignore_alarms) {
                (Some(group), false) => group.alarms.clone(),
                _ => Vec::new(),
            };
            if machine.is_watching_alarms() {
                watching.push((id.clone(), body.green_target_group.clone(), watched.clone()));
            }
            deployments.push((id.clone(), body.green_target_group.clone(), watched));
        }
        if alarm_docs.is_empty() && filter_docs.is_empty() {
            return Ok(());
        }
        let mut logs: BTreeMap<String, Vec<std::path::PathBuf>> = BTreeMap::new();
        for task in tasks.iter().filter(|t| t.last_status != model::TaskStatus::Stopped) {
            if let Some(rt) = self.runtimes.get(task.runtime.as_str()) {
                logs.entry(task.service.clone())
                    .or_default()
                    .extend(rt.log_files(&task.id).into_iter().map(|(_, p)| p));
            }
        }
        let world =
            crate::monitor::World { alarms: &alarm_docs, filters: &filter_docs, deployments, logs };
        let changed = self.monitor().evaluate(&world, now);
        if !changed.is_empty() {
            self.store.transaction(|tx| {
                for (key, alarm) in &changed {
                    tx.resource_put(
                        KIND_ALARM_STATE,
                        key,
                        &serde_json::to_string(alarm)?,
                        now.as_millis(),
                    )?;
                }
                Ok(())
            })?;
        }
        // Level-triggered, as CodeDeploy polls alarm states: an alarm in ALARM stops every
        // deployment that watches it, also one that started watching after the alarm fired.
        let mut to_feed = Vec::new();
        let handed_over: BTreeMap<String, std::collections::BTreeSet<String>> =
            self.store.read(|tx| {
                let ids = watching.iter().map(|(id, ..)| id);
                ids.map(|id| Ok((id.clone(), records::alarms_handed_over(tx, id)?))).collect()
            })?;
        {
            let monitor = self.monitor();
            for (id, green, watched) in &watching {
                for name in watched {
                    let key = match monitor.alarm(&format!("{name}@{id}")) {
                        Some(_) => format!("{name}@{id}"),
                        None => name.clone(),
                    };
                    let Some(alarm) = monitor.alarm(&key) else { continue };
                    if alarm.state() != alarms::AlarmState::Alarm
                        || handed_over.get(id).is_some_and(|keys| keys.contains(&key))
                    {
                        continue;
                    }
                    let requests = green_requests(monitor.store(), green, alarm.spec(), now);
                    // The state machine names the alarm in the deployment's error; this adds
                    // how much traffic green had.
                    let reason = format!(
                        "{} ({requests} requests on {green} in that window)",
                        alarm.reason()
                    );
                    to_feed.push((id.clone(), key, name.clone(), reason));
                }
            }
        }
        for (id, key, name, reason) in to_feed {
            let event = format!("alarm {name} is in ALARM: {reason}");
            // Counted as handed over with its event: an alarm whose event cannot be written is
            // tried again on the next pass (alarms are level-triggered).
            self.store.transaction(|tx| {
                tx.event_append(&id, now.as_millis(), "alarm", &event)?;
                records::note_alarm_handed_over(tx, &id, &key, now)
            })?;
            self.apply_report(Report::Input {
                deployment_id: id,
                input: Input::Alarm { name, reason },
            });
        }
        Ok(())
    }

    fn health_reported(&mut self, report: Result<HealthReport, String>) {
        match report {
            Ok(report) => {
                // Not fresh until the tasks' health is derived from it (the next inspection).
                self.health_fresh = false;
                self.health_known = true;
                *self.shared.health.write().unwrap_or_else(|p| p.into_inner()) = report;
            }
            Err(err) => {
                if self.health_known {
                    warn!("the load balancer does not answer ({err}); restarting it");
                }
                self.health_fresh = false;
                self.health_known = false;
                // The next pass pushes the table again, which starts a data plane that died.
                self.last_pushed = None;
            }
        }
    }

    fn routes_pushed(&mut self, version: u64, result: Result<(), String>) {
        if let Err(err) = result {
            warn!("updating the load balancer (routing table v{version}): {err}");
            if version == self.routes_version {
                self.last_pushed = None;
            }
        }
    }

    fn target_state(&self, target_group: &str, addr: &str) -> Option<routes::TargetHealth> {
        let health = self.shared.health.read().unwrap_or_else(|p| p.into_inner());
        health.target_groups.get(target_group)?.iter().find(|t| t.addr.to_string() == addr).cloned()
    }

    /// Records what a runtime said about a task that ran when it was asked: its health, or that
    /// it exited or vanished. An answer about a task that stopped meanwhile is old news.
    fn task_inspected(
        &mut self,
        task_id: &str,
        handle: TaskHandle,
        state: TaskState,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        let Some(mut task) = self.store.read(|tx| tx.task_get(task_id))? else { return Ok(()) };
        if task.last_status != model::TaskStatus::Running {
            return Ok(());
        }
        let before = task.clone();
        let mut failure = None;
        match state {
            TaskState::Running { health } => {
                let ts = self.store.read(|tx| tx.task_set_get(&task.task_set_id))?;
                let tg = ts.as_ref().and_then(|ts| ts.target_group.clone());
                let lb_state = match (&tg, &task.addr) {
                    (Some(tg), Some(addr)) => self.target_state(tg, addr).map(|t| t.state),
                    _ => None,
                };
                let checked =
                    ts.is_some_and(|ts| self.has_container_health_check(&ts.task_definition));
                let health = container_health(health);
                // Without a report from the data plane (none yet since this process started, or
                // the last poll failed) a task's target health is unknown, not lost: it keeps what
                // was last known, or green's verdict, which does not wait for a fresh report,
                // would read a restart as green having lost every target.
                let target_health_known = tg.is_none() || self.health_known;
                if target_health_known || health == reconciler::ContainerHealth::Unhealthy {
                    task.health = reconciler::task_health(health, checked, lb_state, tg.is_some());
                }
                if task.health == model::TaskHealth::Healthy {
                    self.end_failures(&task.task_set_id)?;
                }
                if health == reconciler::ContainerHealth::Unhealthy
                    && task.desired_status == model::DesiredStatus::Running
                {
                    // ECS replaces a task whose essential container is unhealthy.
                    self.store.transaction(|tx| {
                        let reason = "container health check failed";
                        records::note_failure(tx, &task.task_set_id, reason, now)?;
                        tx.task_put(&task)
                    })?;
                    return self
                        .begin_stop(task, now, "task failed its container health check")
                        .map_err(|e| anyhow::anyhow!(e.body.error));
                }
            }
            TaskState::Exited { code, reason } => {
                let reason = match code {
                    Some(code) => format!("{reason} (exit code {code})"),
                    None => reason,
                };
                failure = task_ended(&mut task, reason, now);
                task.health = model::TaskHealth::Unknown;
                if let Some(rt) = self.runtimes.get(task.runtime.as_str()).cloned() {
                    tokio::spawn(async move {
                        let _ = rt.remove(&handle).await;
                    });
                }
            }
            TaskState::Gone => {
                failure = task_ended(&mut task, "task disappeared from its runtime".into(), now);
            }
        }
        if task != before {
            // The task and its failure are recorded together, or neither is.
            self.store.transaction(|tx| {
                if let Some(reason) = &failure {
                    records::note_failure(tx, &task.task_set_id, reason, now)?;
                }
                tx.task_put(&task)
            })?;
        }
        Ok(())
    }

    /// A healthy task ends its task set's row of failures; written only when there is one, as
    /// every inspection of a healthy task comes here.
    fn end_failures(&self, task_set_id: &str) -> store::Result<()> {
        if self.store.read(|tx| records::failures(tx, task_set_id))?.count == 0 {
            return Ok(());
        }
        self.store.transaction(|tx| records::clear_failures(tx, task_set_id))
    }

    /// Stops the deactivating tasks whose drain is over.
    fn stop_drained(&mut self, now: Timestamp) -> anyhow::Result<()> {
        let (tasks, removals) =
            self.store.read(|tx| Ok((tx.task_list(0)?, records::removals(tx)?)))?;
        for task in tasks.into_iter().filter(|t| t.last_status == model::TaskStatus::Deactivating) {
            let drained = {
                let health = self.shared.health.read().unwrap_or_else(|p| p.into_inner());
                reconciler::drain_over(
                    task.stop_at.map(Timestamp::from_millis),
                    task.addr.as_deref().and_then(|a| a.parse().ok()),
                    removals.get(&task.id).copied(),
                    &health,
                    now,
                )
            };
            if drained {
                self.begin_stop(task, now, "").map_err(|e| anyhow::anyhow!(e.body.error))?;
            }
        }
        Ok(())
    }

    /// Whether a task definition (`family:revision`) gives an essential container a health check.
    fn has_container_health_check(&mut self, task_definition: &str) -> bool {
        if let Some(known) = self.health_checked.get(task_definition) {
            return *known;
        }
        let checked = crate::apply::split_revision(task_definition)
            .and_then(|(family, revision)| {
                self.store.read(|tx| tx.task_definition_get(&family, revision)).ok().flatten()
            })
            .and_then(|row| serde_json::from_str::<config::TaskDefinition>(&row.body).ok())
            .is_some_and(|td| {
                td.container_definitions.iter().any(|c| c.essential && c.health_check.is_some())
            });
        // Revisions are immutable, so the answer can be kept.
        self.health_checked.insert(task_definition.to_string(), checked);
        checked
    }

    /// Takes a task out of service and stops it in the background.
    fn begin_stop(
        &mut self,
        mut task: TaskRow,
        now: Timestamp,
        reason: &str,
    ) -> Result<(), ApiError> {
        task.desired_status = model::DesiredStatus::Stopped;
        task.last_status = model::TaskStatus::Stopping;
        if !reason.is_empty() {
            task.stopped_reason.get_or_insert_with(|| reason.to_string());
        }
        self.store.transaction(|tx| {
            records::forget_removal(tx, &task.id)?;
            tx.task_put(&task)
        })?;
        let rt = self.runtimes.get(task.runtime.as_str()).cloned();
        let handle =
            task.handle.as_deref().and_then(|h| serde_json::from_str::<TaskHandle>(h).ok());
        let tx = self.tx.clone();
        let task_id = task.id.clone();
        let _ = now;
        tokio::spawn(async move {
            if let (Some(rt), Some(handle)) = (rt, handle) {
                if let Err(err) = rt.stop(&handle).await {
                    warn!(task = %task_id, "stopping task: {err}");
                }
                let _ = rt.remove(&handle).await;
            }
            let _ = tx.send(Msg::TaskStopped { task_id }).await;
        });
        Ok(())
    }

    /// Keeps every task set at its desired count.
    fn schedule(&mut self, now: Timestamp) -> Result<(), ApiError> {
        let snapshot = self.store.read(Snapshot::load)?;
        for ts in &snapshot.task_sets {
            let live: Vec<&TaskRow> = snapshot
                .tasks
                .iter()
                .filter(|t| {
                    t.task_set_id == ts.id
                        && t.desired_status == model::DesiredStatus::Running
                        && t.last_status != model::TaskStatus::Stopped
                })
                .collect();
            if ts.status == model::TaskSetStatus::Draining {
                let remaining = snapshot
                    .tasks
                    .iter()
                    .any(|t| t.task_set_id == ts.id && t.last_status != model::TaskStatus::Stopped);
                if live.is_empty() && !remaining {
                    // Its stopped tasks stay listed: they keep naming their task definition.
                    self.store.transaction(|tx| {
                        let td = serde_json::to_string(&ts.task_definition)?;
                        tx.resource_put(KIND_RETIRED_TASK_SET, &ts.id, &td, now.as_millis())?;
                        records::clear_failures(tx, &ts.id)?;
                        tx.task_set_delete(&ts.id)
                    })?;
                }
                continue;
            }
            let desired = ts.desired_count as usize;
            if live.len() > desired {
                let mut extra: Vec<&TaskRow> = live.clone();
                extra.sort_by_key(|t| std::cmp::Reverse(t.created_at));
                let stop: Vec<String> =
                    extra.iter().take(live.len() - desired).map(|t| t.id.clone()).collect();
                self.store.transaction(|tx| {
                    for id in &stop {
                        if let Some(task) = tx.task_get(id)? {
                            let reason = format!("service scaled in to {desired} task(s)");
                            deactivate(tx, task, ts, now, &reason)?;
                        }
                    }
                    Ok(())
                })?;
                continue;
            }
            if live.len() < desired && !self.shutting_down {
                let failures = self.store.read(|tx| records::failures(tx, &ts.id))?;
                if now < failures.retry_at() {
                    continue;
                }
                for _ in live.len()..desired {
                    self.start_task(&snapshot, ts, now)?;
                }
            }
        }
        Ok(())
    }

    fn start_task(
        &mut self,
        snapshot: &Snapshot,
        ts: &TaskSetRow,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        let service = snapshot.service(&ts.service).ok_or_else(|| {
            ApiError::internal(format!("task set {} has no service {}", ts.id, ts.service))
        })?;
        // `apply` stores only runtimes it knows.
        let runtime = model::RuntimeKind::parse(&service.runtime).ok_or_else(|| {
            ApiError::internal(format!("service {} has an unknown runtime", service.name))
        })?;
        let rt = self.runtimes.get(&service.runtime).cloned().ok_or_else(|| {
            ApiError::conflict(format!(
                "service {} uses the {} runtime, which is not available: see `cutover up`'s output",
                service.name, service.runtime
            ))
        })?;
        let (family, revision) =
            crate::apply::split_revision(&ts.task_definition).ok_or_else(|| {
                ApiError::internal(format!("bad task definition id {}", ts.task_definition))
            })?;
        let td_row =
            self.store.read(|tx| tx.task_definition_get(&family, revision))?.ok_or_else(|| {
                ApiError::internal(format!("task definition {} is missing", ts.task_definition))
            })?;
        let td: config::TaskDefinition = serde_json::from_str(&td_row.body)?;
        let task_id = deployment::new_id("t");
        let lb_container = match (&ts.deployment_id, &service.load_balancer) {
            (Some(deployment_id), _) => self
                .store
                .read(|tx| tx.deployment_get(deployment_id))?
                .and_then(|row| serde_json::from_str::<DeploymentBody>(&row.body).ok())
                .map(|body| (body.container_name, body.container_port)),
            (None, Some(lb)) => Some((lb.container_name.clone(), lb.container_port)),
            (None, None) => None,
        };
        let task_spec = crate::apply::task_spec(
            &task_id,
            service,
            &ts.task_definition,
            ts.deployment_id.clone(),
            &td,
            lb_container,
        );
        let row = TaskRow {
            id: task_id.clone(),
            task_set_id: ts.id.clone(),
            service: ts.service.clone(),
            runtime,
            last_status: model::TaskStatus::Provisioning,
            desired_status: model::DesiredStatus::Running,
            health: model::TaskHealth::Unknown,
            handle: None,
            addr: None,
            stop_at: None,
            stopped_reason: None,
            created_at: now.as_millis(),
            started_at: None,
            stopped_at: None,
        };
        self.store.transaction(|tx| tx.task_put(&row))?;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = rt.start(task_spec).await.map_err(|err| err.to_string());
            let _ = tx.send(Msg::TaskStarted { task_id, result }).await;
        });
        Ok(())
    }

    fn task_started(
        &mut self,
        task_id: &str,
        result: Result<TaskHandle, String>,
    ) -> anyhow::Result<()> {
        let now = clock::now();
        let Some(mut task) = self.store.read(|tx| tx.task_get(task_id))? else { return Ok(()) };
        match result {
            Ok(handle) => {
                task.handle = Some(serde_json::to_string(&handle)?);
                task.addr = handle.addr.map(|a| a.to_string());
                task.started_at = Some(now.as_millis());
                if task.desired_status == model::DesiredStatus::Stopped {
                    // Stopped while starting (a rollback overtook it): stop it now.
                    self.store.transaction(|tx| tx.task_put(&task))?;
                    self.begin_stop(task, now, "").map_err(|e| anyhow::anyhow!(e.body.error))?;
                    return Ok(());
                }
                task.last_status = model::TaskStatus::Running;
            }
            Err(reason) => {
                warn!(task = %task_id, "task failed to start: {reason}");
                let reason = format!("task failed to start: {reason}");
                task.last_status = model::TaskStatus::Stopped;
                task.desired_status = model::DesiredStatus::Stopped;
                task.stopped_at = Some(now.as_millis());
                task.stopped_reason = Some(reason.clone());
                // Counted with the task's end: a report the store refused is applied again later.
                self.store.transaction(|tx| {
                    records::note_failure(tx, &task.task_set_id, &reason, now)?;
                    tx.task_put(&task)
                })?;
                return Ok(());
            }
        }
        self.store.transaction(|tx| tx.task_put(&task))?;
        Ok(())
    }

    /// Tells each active deployment what it waits for, and fires due deadlines.
    fn advance_deployments(&mut self, now: Timestamp) -> Result<(), ApiError> {
        let ids: Vec<String> = self.machines.keys().cloned().collect();
        for id in ids {
            let Some(row) = self.store.read(|tx| tx.deployment_get(&id))? else { continue };
            let mut body: DeploymentBody = serde_json::from_str(&row.body)?;
            let mut input = None;
            if let Some(green_id) = body.green_task_set.clone() {
                let (tasks, ts) =
                    self.store.read(|tx| Ok((tx.task_list(0)?, tx.task_set_get(&green_id)?)))?;
                let desired = ts.as_ref().map_or(0, |ts| ts.desired_count) as usize;
                let green_tasks: Vec<&TaskRow> = tasks
                    .iter()
                    .filter(|t| {
                        t.task_set_id == green_id
                            && t.desired_status == model::DesiredStatus::Running
                            && t.last_status == model::TaskStatus::Running
                    })
                    .collect();
                let healthy =
                    green_tasks.iter().filter(|t| t.health == model::TaskHealth::Healthy).count();
                let machine = &self.machines[&id];
                let failures = self.store.read(|tx| records::failures(tx, &green_id))?;
                let view = GreenView {
                    target_group: &body.green_target_group,
                    desired: desired as u32,
                    healthy: healthy as u32,
                    failures: &failures,
                    installing: machine.current_event() == Some(model::LifecycleEvent::Install),
                    succeeded: machine.status() == DeploymentStatus::Succeeded,
                    health_fresh: self.health_fresh,
                    was_healthy: body.green_was_healthy,
                    failure_reported: body.green_failure_reported,
                };
                input = reconciler::green_verdict(&view).map(|verdict| match verdict {
                    GreenVerdict::Healthy => {
                        body.green_was_healthy = true;
                        Input::GreenHealthy
                    }
                    GreenVerdict::Unhealthy(reason) => {
                        body.green_failure_reported = true;
                        Input::GreenUnhealthy { reason }
                    }
                });
            }
            if input.is_some() {
                let mut row = row.clone();
                row.body = serde_json::to_string(&body)?;
                self.store.transaction(|tx| tx.deployment_put(&row))?;
            }
            if let Some(input) = input {
                // Its flag is written: were the input not taken for want of a write, it is kept
                // and fed again rather than lost.
                self.apply_report(Report::Input { deployment_id: id.clone(), input });
            }
            match self.machines.get_mut(&id) {
                Some(machine) if machine.poll_timeout().is_some_and(|at| at <= now) => {
                    let before = machine.clone();
                    machine.handle_timeout(now);
                    self.drive_or_undo(&id, before, now)?;
                }
                // Effects a failed write left queued (a new or resumed deployment's) go now.
                _ => self.drive(&id, now)?,
            }
        }
        Ok(())
    }

    /// Whether the data plane already serves `table` (compared without its version).
    pub fn serves_routes(&self, table: &RouteTable) -> bool {
        self.last_pushed.as_ref().is_some_and(|last| *last == *table)
    }

    /// Orders the data plane to serve the table the state implies, when it changed: the push
    /// runs in the pusher's task, which reports back ([`Msg::RoutesPushed`]).
    fn push_routes(&mut self) -> anyhow::Result<()> {
        let snapshot = self.store.read(Snapshot::load)?;
        let mut table = snapshot.route_table(0);
        let unchanged = self.last_pushed.as_ref().is_some_and(|last| *last == table);
        if unchanged {
            return Ok(());
        }
        let version = self.routes_version + 1;
        self.store.transaction(|tx| tx.meta_set("routes_version", &version.to_string()))?;
        table.version = version;
        if !self.pusher.push(table.clone()) {
            anyhow::bail!("the data plane has not taken a table for long; pushing again later");
        }
        self.routes_version = version;
        // What the tasks' health says is about an older table now.
        self.health_fresh = false;
        *self.shared.routes_version.write().unwrap_or_else(|p| p.into_inner()) = version;
        table.version = 0;
        self.last_pushed = Some(table);
        Ok(())
    }
}

/// What a deployment's effects change in the store, inside the transaction that records them.
struct DeploymentRecord<'a> {
    id: &'a str,
    row: &'a mut DeploymentRow,
    body: &'a mut DeploymentBody,
    group_state: &'a mut GroupState,
}

/// What a deployment's effects leave to do once they are written.
#[derive(Default)]
struct DriveWork {
    hooks_to_run: Vec<(model::LifecycleEvent, String, String, Duration)>,
    hooks_to_cancel: Vec<String>,
}

/// Gives one effect of a deployment's machine its meaning for task sets, routing and the
/// group, in the transaction that records it; what leaves the process goes into `work`.
fn record_effect(
    tx: &store::Tx<'_>,
    record: &mut DeploymentRecord<'_>,
    effect: &Effect,
    now: Timestamp,
    work: &mut DriveWork,
) -> store::Result<()> {
    match effect {
        Effect::Status(_) | Effect::Event { .. } => {}
        Effect::StartGreen => {
            if record.body.green_task_set.is_none() {
                let service: ServiceDoc = state::doc(tx, KIND_SERVICE, &record.body.service)?
                    .ok_or_else(|| {
                        store::Error::Conflict(format!("service {} vanished", record.body.service))
                    })?;
                let ts = TaskSetRow {
                    id: deployment::new_id("ts"),
                    service: record.body.service.clone(),
                    task_definition: record.body.task_definition.clone(),
                    target_group: Some(record.body.green_target_group.clone()),
                    status: model::TaskSetStatus::Active,
                    deployment_id: Some(record.id.to_string()),
                    desired_count: service.desired_count,
                    created_at: now.as_millis(),
                    updated_at: now.as_millis(),
                };
                tx.task_set_put(&ts)?;
                record.body.green_task_set = Some(ts.id);
            }
        }
        Effect::RunHook { event, execution_id, hook, timeout } => {
            work.hooks_to_run.push((*event, execution_id.clone(), hook.clone(), *timeout));
        }
        Effect::CancelHook { execution_id } => work.hooks_to_cancel.push(execution_id.clone()),
        Effect::Route { production_green_percent, test_to_green } => {
            record.body.route_production_green_percent = *production_green_percent;
            record.body.route_test_to_green = *test_to_green;
        }
        Effect::StopGreen => {
            if let Some(green) = &record.body.green_task_set {
                let reason = format!("deployment {} ended without green: green stopped", record.id);
                drain_task_set(tx, green, now, &reason)?;
            }
        }
        Effect::TerminateBlue => {
            let reason = format!("deployment {} replaced blue with green", record.id);
            let blue = &record.body.blue_task_set;
            drain_task_set(tx, blue, now, &reason)?;
            if let Some(green_id) = &record.body.green_task_set {
                if let Some(mut green) = tx.task_set_get(green_id)? {
                    green.status = model::TaskSetStatus::Primary;
                    green.updated_at = now.as_millis();
                    tx.task_set_put(&green)?;
                }
                record.group_state.primary_task_set = Some(green_id.clone());
            }
        }
        Effect::Finished(outcome) => {
            record.body.rolled_back = outcome.rolled_back;
            if let Some((code, message)) = &outcome.error {
                record.body.error_code = Some(code.as_str().to_string());
                record.body.error_message = Some(message.clone());
            }
            record.row.completed_at = Some(now.as_millis());
            record.group_state.active_deployment = None;
            let green_left_running = outcome.status != DeploymentStatus::Succeeded
                && !outcome.rolled_back
                && record.body.green_task_set.is_some();
            if green_left_running {
                record.group_state.leftover_deployment = Some(record.id.to_string());
            }
        }
    }
    Ok(())
}

/// Requests the green target group received over an alarm's evaluation window: part of the
/// explanation of a rollback.
fn green_requests(
    store: &alarms::MetricStore,
    green: &str,
    spec: &alarms::AlarmSpec,
    now: Timestamp,
) -> u64 {
    let id = alarms::MetricId::new("RequestCount").with("target_group", green);
    let from = Timestamp(now.as_millis().saturating_sub(spec.lookback().as_millis() as u64));
    store
        .series(&id)
        .and_then(|series| series.datapoints(spec.period, alarms::Statistic::Sum, from, now).ok())
        .map_or(0, |points| points.iter().map(|p| p.value as u64).sum())
}

/// What a runtime says about a task's containers, in the reconciler's terms.
fn container_health(health: runtime::Health) -> reconciler::ContainerHealth {
    match health {
        runtime::Health::Healthy => reconciler::ContainerHealth::Healthy,
        runtime::Health::Unhealthy => reconciler::ContainerHealth::Unhealthy,
        runtime::Health::Unknown => reconciler::ContainerHealth::Unknown,
    }
}

/// A task stopped on its own; the failure of its task set it is, if it was meant to run.
fn task_ended(task: &mut TaskRow, reason: String, now: Timestamp) -> Option<String> {
    let failure = (task.desired_status == model::DesiredStatus::Running).then(|| reason.clone());
    task.last_status = model::TaskStatus::Stopped;
    task.desired_status = model::DesiredStatus::Stopped;
    task.stopped_at = Some(now.as_millis());
    task.stopped_reason.get_or_insert(reason);
    failure
}

/// Takes every live task of a task set out of its target group; they stop after their drain.
/// Returns the tasks deactivated.
/// Drains a task set: its tasks stop once their target group releases them, with `reason` as
/// their stopped reason (as ECS's `stoppedReason`) unless they already have one.
pub(crate) fn drain_task_set(
    tx: &store::Tx<'_>,
    task_set_id: &str,
    now: Timestamp,
    reason: &str,
) -> store::Result<Vec<TaskRow>> {
    let Some(mut ts) = tx.task_set_get(task_set_id)? else { return Ok(Vec::new()) };
    ts.status = model::TaskSetStatus::Draining;
    ts.desired_count = 0;
    ts.updated_at = now.as_millis();
    tx.task_set_put(&ts)?;
    let mut out = Vec::new();
    for task in tx.task_list(0)? {
        if task.task_set_id == task_set_id
            && task.desired_status == model::DesiredStatus::Running
            && task.last_status != model::TaskStatus::Stopped
        {
            out.push(deactivate(tx, task, &ts, now, reason)?);
        }
    }
    Ok(out)
}

/// ECS's DEACTIVATING: the task leaves its target group now and is stopped when the target
/// group's deregistration delay ends (or earlier, once the load balancer has released it).
fn deactivate(
    tx: &store::Tx<'_>,
    mut task: TaskRow,
    ts: &TaskSetRow,
    now: Timestamp,
    reason: &str,
) -> store::Result<TaskRow> {
    let delay_ms = match &ts.target_group {
        Some(tg) => state::doc::<TargetGroupDoc>(tx, KIND_TARGET_GROUP, tg)?
            .map_or(0, |d| d.deregistration_delay_ms),
        None => 0,
    };
    task.desired_status = model::DesiredStatus::Stopped;
    task.stopped_reason.get_or_insert_with(|| reason.to_string());
    if task.last_status == model::TaskStatus::Running {
        task.last_status = model::TaskStatus::Deactivating;
        task.stop_at = Some(now.as_millis() + delay_ms);
        records::note_removal(tx, &task.id, now)?;
    }
    tx.task_put(&task)?;
    Ok(task)
}

pub fn deployment_view(
    store: &Store,
    _shared: &Shared,
    id: &str,
) -> Result<api::DeploymentView, ApiError> {
    let (row, sets, tasks): (DeploymentRow, Vec<TaskSetRow>, Vec<TaskRow>) = store
        .read(|tx| {
            let row = tx.deployment_get(id)?;
            Ok(row.map(|row| (row, tx.task_set_list(), tx.task_list(0))))
        })?
        .map(|(row, sets, tasks)| Ok::<_, store::Error>((row, sets?, tasks?)))
        .transpose()?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no deployment {id}; `cutover deployments list` shows them"
            ))
        })?;
    let body: DeploymentBody = serde_json::from_str(&row.body)?;
    let machine: Rollout = serde_json::from_str(&row.machine)?;
    let set_view =
        |set_id: &str| sets.iter().find(|s| s.id == set_id).map(|s| task_set_view(s, &tasks));
    let blue = set_view(&body.blue_task_set);
    let green = body.green_task_set.as_deref().and_then(set_view);
    Ok(deployment::view(&row, &body, &machine, blue, green))
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
