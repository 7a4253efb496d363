//! The driver: one `pipeline::Pipeline` per pipeline, persisted after every step, its effects
//! performed by jobs; the background loop (deadlines, pushes, polling, retention); `apply`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use model::Timestamp;
use pipeline::{Effect, Input, InputError, Pipeline, Revision};
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;

use crate::{CiConfig, Deployer, Error, Shared, artifacts, git};
use pipeline::definition::{PipelineDecl, SourceLocation};

/// How often retention runs.
const GC_EVERY: Duration = Duration::from_secs(60);
/// How soon a pipeline whose step the store refused is stepped again.
const UNWRITTEN_RETRY: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct Slot {
    pub def: PipelineDecl,
    pub machine: Pipeline,
    pub version: u64,
    pub pending: Option<PipelineDecl>,
}

/// A running job of one action run.
pub struct Job {
    pub abort: AbortHandle,
    pub stop: Option<watch::Sender<bool>>,
}

pub struct Inner {
    pub cfg: CiConfig,
    pub deployer: Arc<dyn Deployer>,
    pub store: Arc<store::Store>,
    pub slots: Mutex<BTreeMap<String, Slot>>,
    pub jobs: Mutex<HashMap<String, Job>>,
    pub wake: Notify,
    pub closed: AtomicBool,
    push_lock: tokio::sync::Mutex<()>,
    polls: Mutex<HashMap<String, (u64, bool)>>,
    /// Pipelines whose last step could not be written: stepped again until it is.
    unwritten: Mutex<HashSet<String>>,
    /// Pushes whose execution the store could not record: taken again until it can.
    pushes_waiting: AtomicBool,
    /// (push file, pipeline/ref) already started, so a push taken again starts only the rest.
    started_pushes: Mutex<HashSet<(PathBuf, String)>>,
    /// How many times the loop has run (it sleeps until its next deadline in between).
    pub turns: std::sync::atomic::AtomicU64,
}

/// How long to wait before writing again after `failed` failed writes in a row: from a quarter
/// second, doubling, to at most 5 s, so a freed disk is noticed within seconds.
fn retry_delay(failed: u32) -> Duration {
    let doubled =
        Duration::from_millis(250).saturating_mul(1u32 << failed.saturating_sub(1).min(16));
    doubled.min(Duration::from_secs(5))
}

/// The pipelines subsystem. Dropping it stops its loop and its jobs (builds are killed; a
/// deployment goes on and is adopted by the next start).
pub struct Ci {
    inner: Shared,
    task: tokio::task::JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn job_key(pipeline: &str, execution: &str, stage: &str, action: &str, run: u32) -> String {
    format!("{pipeline}/{execution}/{stage}/{action}/{run}")
}

impl Ci {
    /// Restores every pipeline from the store, resumes them and spawns the loop. Call inside a
    /// tokio runtime.
    pub fn start(
        config: CiConfig,
        deployer: Arc<dyn Deployer>,
        store: Arc<store::Store>,
    ) -> Result<Ci, Error> {
        for sub in ["repos", "artifacts", "builds", "work", "mirrors"] {
            let p = config.data_dir.join(sub);
            std::fs::create_dir_all(&p)
                .map_err(|e| Error::Internal(format!("cannot create {}: {e}", p.display())))?;
        }
        let inner = Arc::new(Inner {
            cfg: config,
            deployer,
            store,
            slots: Mutex::new(BTreeMap::new()),
            jobs: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            push_lock: tokio::sync::Mutex::new(()),
            polls: Mutex::new(HashMap::new()),
            unwritten: Mutex::new(HashSet::new()),
            pushes_waiting: AtomicBool::new(false),
            started_pushes: Mutex::new(HashSet::new()),
            turns: std::sync::atomic::AtomicU64::new(0),
        });
        let rows = inner.store.read(|tx| tx.ci_pipeline_list())?;
        let now = inner.now();
        let mut names = Vec::new();
        {
            let mut slots = lock(&inner.slots);
            for row in rows {
                let def = crate::legacy::read_definition(&row.definition)
                    .map_err(|e| Error::Internal(format!("pipeline {}: {e}", row.name)))?;
                let mut machine: Pipeline = serde_json::from_str(&row.machine)
                    .map_err(|e| Error::Internal(format!("pipeline {} snapshot: {e}", row.name)))?;
                machine.resume(now);
                let pending =
                    row.pending_definition.and_then(|p| crate::legacy::read_definition(&p).ok());
                names.push(row.name.clone());
                slots.insert(row.name, Slot { def, machine, version: row.version, pending });
            }
        }
        for name in names {
            // Writes the resumed machine before its effects run; one the store refuses is
            // stepped again by the loop (`unwritten`).
            if let Err(err) = inner.step(&name, |_, _| Ok(())) {
                tracing::warn!(pipeline = name, "resuming, not written yet: {err}");
            }
        }
        let task = tokio::spawn(run_loop(inner.clone()));
        Ok(Ci { inner, task })
    }

    /// How many times the background loop has run; it sleeps until its next deadline or until
    /// woken in between, so an idle installation adds none.
    #[doc(hidden)]
    pub fn loop_turns(&self) -> u64 {
        self.inner.turns.load(Ordering::Relaxed)
    }

    pub(crate) fn shared(&self) -> Shared {
        self.inner.clone()
    }

    /// Makes the pipelines what the declarations say, as `cutover apply` does: creates the
    /// declared repositories, creates or updates the declared pipelines (see the crate docs for
    /// what a changed definition does) and deletes the pipelines no longer declared, stopping
    /// their unfinished executions. Repositories that are no longer declared are kept (`keep`).
    /// Validates everything first: on error nothing changed.
    pub fn apply(
        &self,
        repositories: &[spec::RepositoryDecl],
        pipelines: &[spec::PipelineDecl],
    ) -> Result<Vec<crate::api::PlanItem>, Error> {
        Ok(self.inner.apply_with(repositories, pipelines, |_| Ok(()))?.0)
    }

    /// [`Ci::apply`] with more writes of the caller in the same transaction: `also` runs inside
    /// it, and when it fails nothing is changed, neither by `ci` nor by `also`.
    pub fn apply_with<T>(
        &self,
        repositories: &[spec::RepositoryDecl],
        pipelines: &[spec::PipelineDecl],
        also: impl FnOnce(&store::Tx<'_>) -> store::Result<T>,
    ) -> Result<(Vec<crate::api::PlanItem>, T), Error> {
        self.inner.apply_with(repositories, pipelines, also)
    }

    /// What [`Ci::apply`] would do with these declarations now; changes nothing.
    pub fn plan(
        &self,
        repositories: &[spec::RepositoryDecl],
        pipelines: &[spec::PipelineDecl],
    ) -> Result<Vec<crate::api::PlanItem>, Error> {
        self.inner.plan(repositories, pipelines)
    }

    /// Deletes a hosted repository and its git data; refused while a pipeline builds from it.
    pub fn delete_repository(&self, name: &str) -> Result<(), Error> {
        self.inner.delete_repository(name)
    }

    /// Creates a hosted repository (`false`: it existed already).
    pub fn create_repository(&self, name: &str) -> Result<bool, Error> {
        self.inner.create_repository(name)
    }
}

impl Drop for Ci {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.task.abort();
        for (_, job) in lock(&self.inner.jobs).drain() {
            if let Some(stop) = &job.stop {
                let _ = stop.send(true);
            }
            job.abort.abort();
        }
    }
}

pub fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && !name.starts_with('.')
        && !name.ends_with(".git")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Inner {
    /// The time, from the same clock as the control plane's ([`store::clock`]): wall-clock
    /// milliseconds advanced on the monotonic clock, so a step of the wall clock neither times
    /// an action out early nor holds a pipeline up.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_millis(store::clock::now_ms())
    }

    /// [`Inner::now`] as a file time, for the artifacts' modification times.
    pub fn file_time(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + Duration::from_millis(self.now().as_millis())
    }

    pub fn repo_dir(&self, name: &str) -> PathBuf {
        self.cfg.data_dir.join("repos").join(format!("{name}.git"))
    }

    pub fn mirror_dir(&self, pipeline: &str) -> PathBuf {
        self.cfg.data_dir.join("mirrors").join(format!("{pipeline}.git"))
    }

    pub fn clone_url(&self, name: &str) -> String {
        format!("{}/git/{name}.git", self.cfg.api_url.trim_end_matches('/'))
    }

    pub fn create_repository(&self, name: &str) -> Result<bool, Error> {
        if !valid_name(name) {
            return Err(Error::Invalid(format!(
                "`{name}` is not a repository name: use 1 to 100 of A-Z a-z 0-9 . _ -, not \
                 starting with a dot nor ending in .git"
            )));
        }
        git::init_bare(&self.repo_dir(name), "main")?;
        let now = self.now().as_millis();
        Ok(self.store.transaction(|tx| tx.ci_repository_create(name, now))?)
    }

    /// Checks the declarations and builds each pipeline's definition and a fresh machine for it.
    fn validate(
        repositories: &[spec::RepositoryDecl],
        pipelines: &[spec::PipelineDecl],
        now: Timestamp,
    ) -> Result<Vec<(PipelineDecl, Pipeline)>, Error> {
        for r in repositories {
            if !valid_name(&r.name) {
                return Err(Error::Invalid(format!("repository `{}`: invalid name", r.name)));
            }
        }
        let mut defs = Vec::new();
        for p in pipelines {
            let def = p.clone();
            if !valid_name(&def.name) {
                return Err(Error::Invalid(format!("pipeline `{}`: invalid name", def.name)));
            }
            let machine = Pipeline::new(def.machine_spec(), now)
                .map_err(|e| Error::Invalid(format!("pipeline `{}`: {e}", def.name)))?;
            defs.push((def, machine));
        }
        Ok(defs)
    }

    /// What applying these declarations would do, item by item, given the pipelines as they
    /// are now. Pure: the caller decides whether to carry it out.
    fn decide(
        &self,
        slots: &BTreeMap<String, Slot>,
        existing_repos: &HashSet<String>,
        repositories: &[spec::RepositoryDecl],
        defs: Vec<(PipelineDecl, Pipeline)>,
    ) -> (Vec<crate::api::PlanItem>, Vec<(String, Change)>, Vec<String>) {
        let mut plan = Vec::new();
        for r in repositories {
            plan.push(crate::api::PlanItem {
                kind: "repository".into(),
                name: r.name.clone(),
                action: if existing_repos.contains(&r.name) { "unchanged" } else { "create" }
                    .into(),
                detail: Some(self.clone_url(&r.name)),
            });
        }
        // A hosted repository holds the only copy of what was pushed to it: apply never deletes
        // one, `DELETE /v1/repos/{name}` does.
        let mut kept: Vec<&String> = existing_repos
            .iter()
            .filter(|name| !repositories.iter().any(|r| r.name == **name))
            .collect();
        kept.sort();
        for name in kept {
            plan.push(crate::api::PlanItem {
                kind: "repository".into(),
                name: name.clone(),
                action: "keep".into(),
                detail: Some(format!(
                    "no longer in cutover.yaml; its git data is kept; delete it with `cutover \
                     repos delete {name}`"
                )),
            });
        }
        let declared: HashSet<String> = defs.iter().map(|(d, _)| d.name.clone()).collect();
        let mut changes = Vec::new();
        for (def, machine) in defs {
            let name = def.name.clone();
            let (action, change) = match slots.get(&name) {
                None => ("create", Change::Create(def, machine)),
                Some(slot) if slot.def == def => {
                    if slot.pending.is_some() {
                        ("update", Change::DropPending)
                    } else {
                        ("unchanged", Change::Unchanged)
                    }
                }
                Some(slot) if slot.machine.is_idle() => ("update", Change::Replace(def, machine)),
                Some(_) => ("update-pending", Change::Pending(def)),
            };
            plan.push(crate::api::PlanItem {
                kind: "pipeline".into(),
                name: name.clone(),
                action: action.into(),
                detail: None,
            });
            changes.push((name, change));
        }
        let mut deletes = Vec::new();
        for (name, slot) in slots.iter().filter(|(name, _)| !declared.contains(*name)) {
            let unfinished: Vec<&str> =
                slot.machine.active().iter().map(|r| r.id.as_str()).collect();
            plan.push(crate::api::PlanItem {
                kind: "pipeline".into(),
                name: name.clone(),
                action: "delete".into(),
                detail: Some(if unfinished.is_empty() {
                    "its execution history is kept".to_string()
                } else {
                    format!(
                        "stops and abandons its unfinished execution(s) {} (a running deployment \
                         is stopped as its group says); its execution history is kept",
                        unfinished.join(", ")
                    )
                }),
            });
            deletes.push(name.clone());
        }
        (plan, changes, deletes)
    }

    /// The plan [`Inner::apply_with`] would carry out now; changes nothing.
    pub fn plan(
        &self,
        repositories: &[spec::RepositoryDecl],
        pipelines: &[spec::PipelineDecl],
    ) -> Result<Vec<crate::api::PlanItem>, Error> {
        let defs = Self::validate(repositories, pipelines, self.now())?;
        let existing: HashSet<String> =
            self.store.read(|tx| tx.ci_repository_list())?.into_iter().map(|r| r.0).collect();
        let slots = lock(&self.slots);
        Ok(self.decide(&slots, &existing, repositories, defs).0)
    }

    /// Makes the pipelines subsystem what the declarations say: creates the declared
    /// repositories, creates or updates the declared pipelines, and deletes the pipelines that
    /// are no longer declared (stopping and abandoning their unfinished executions). Everything
    /// is validated first, and every row is written in one transaction together with what `also`
    /// writes, so either all of it happens or nothing does.
    pub fn apply_with<T>(
        self: &Arc<Self>,
        repositories: &[spec::RepositoryDecl],
        pipelines: &[spec::PipelineDecl],
        also: impl FnOnce(&store::Tx<'_>) -> store::Result<T>,
    ) -> Result<(Vec<crate::api::PlanItem>, T), Error> {
        let now = self.now();
        let defs = Self::validate(repositories, pipelines, now)?;
        let existing: HashSet<String> =
            self.store.read(|tx| tx.ci_repository_list())?.into_iter().map(|r| r.0).collect();
        // The directories first: creating one is idempotent (it also reinstalls the hook), and a
        // directory without its row is invisible, so a failed transaction leaves nothing behind
        // that anyone sees.
        for r in repositories {
            git::init_bare(&self.repo_dir(&r.name), "main")?;
        }
        // The pipelines stay locked from the decision to the change in memory, so no execution
        // can start in between on a definition that is being replaced or deleted.
        let mut slots = lock(&self.slots);
        let (plan, changes, deletes) = self.decide(&slots, &existing, repositories, defs);
        let ms = now.as_millis();
        let mut puts = Vec::new();
        for (name, change) in &changes {
            let slot = slots.get(name);
            let row = match (change, slot) {
                (Change::Create(def, machine) | Change::Replace(def, machine), _) => {
                    let version = slot.map_or(1, |s| s.version + 1);
                    row_of(name, def, machine, None, version, ms)?
                }
                (Change::Pending(def), Some(s)) => {
                    row_of(name, &s.def, &s.machine, Some(def), s.version, ms)?
                }
                (Change::DropPending, Some(s)) => {
                    row_of(name, &s.def, &s.machine, None, s.version, ms)?
                }
                _ => continue,
            };
            puts.push(row);
        }
        let value = self.store.transaction(|tx| {
            for r in repositories {
                tx.ci_repository_create(&r.name, ms)?;
            }
            for row in &puts {
                tx.ci_pipeline_put(row)?;
            }
            for name in &deletes {
                tx.ci_pipeline_delete(name)?;
            }
            also(tx)
        })?;
        for (name, change) in changes {
            match change {
                Change::Create(def, machine) => {
                    slots.insert(name, Slot { def, machine, version: 1, pending: None });
                }
                Change::Replace(def, machine) => {
                    if let Some(slot) = slots.get_mut(&name) {
                        slot.def = def;
                        slot.machine = machine;
                        slot.version += 1;
                        slot.pending = None;
                    }
                }
                Change::Pending(def) => {
                    if let Some(slot) = slots.get_mut(&name) {
                        slot.pending = Some(def);
                    }
                }
                Change::DropPending => {
                    if let Some(slot) = slots.get_mut(&name) {
                        slot.pending = None;
                    }
                }
                Change::Unchanged => {}
            }
        }
        let removed: Vec<(String, Slot)> =
            deletes.into_iter().filter_map(|n| slots.remove(&n).map(|s| (n, s))).collect();
        drop(slots);
        for (name, slot) in removed {
            self.stop_deleted(&name, slot);
        }
        self.wake.notify_one();
        Ok((plan, value))
    }

    /// Stops and abandons every unfinished execution of a pipeline that was just deleted (what
    /// CodePipeline does when a pipeline is deleted mid-run): builds are killed, a running
    /// deployment is stopped. The executions' final records are kept as history.
    fn stop_deleted(self: &Arc<Self>, name: &str, mut slot: Slot) {
        lock(&self.polls).remove(name);
        let _ = std::fs::remove_dir_all(self.mirror_dir(name));
        let now = self.now();
        let ids: Vec<String> = slot.machine.active().iter().map(|r| r.id.clone()).collect();
        for id in ids {
            let input = Input::Stop {
                execution_id: id.clone(),
                abandon: true,
                reason: "the pipeline was deleted (it is no longer in cutover.yaml)".into(),
            };
            if let Err(err) = slot.machine.handle_input(input, now) {
                tracing::warn!(pipeline = name, execution = id, "stopping: {err}");
            }
        }
        let mut effects = Vec::new();
        while let Some(e) = slot.machine.poll_effect() {
            effects.push(e);
        }
        let records = execution_rows(name, &slot.machine, &effects);
        if let Err(err) = self.store.transaction(|tx| {
            for r in &records {
                tx.ci_execution_put(r)?;
            }
            Ok(())
        }) {
            tracing::warn!(pipeline = name, "recording the stopped executions: {err}");
        }
        for e in effects {
            if matches!(e, Effect::CancelAction { .. }) {
                crate::jobs::perform(self, name, &slot.def, e, Revision::default());
            }
        }
        tracing::info!(pipeline = name, "pipeline deleted");
    }

    /// Deletes a hosted repository and its git data, unless a pipeline builds from it.
    pub fn delete_repository(&self, name: &str) -> Result<(), Error> {
        let slots = lock(&self.slots);
        let mut users: Vec<&str> = slots
            .iter()
            .filter(|(_, s)| {
                std::iter::once(&s.def)
                    .chain(s.pending.as_ref())
                    .any(|d| d.repository() == Some(name))
            })
            .map(|(n, _)| n.as_str())
            .collect();
        users.sort();
        if !users.is_empty() {
            return Err(Error::Conflict(format!(
                "repository `{name}` is the source of pipeline(s) {}; remove them from \
                 cutover.yaml and apply first, then delete the repository",
                users.join(", ")
            )));
        }
        let deleted = self.store.transaction(|tx| tx.ci_repository_delete(name))?;
        drop(slots);
        if !deleted {
            return Err(Error::NotFound(format!("no repository `{name}`")));
        }
        let dir = self.repo_dir(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(Error::Internal(format!(
                "repository `{name}` is deleted, but its directory {} could not be removed: {err}",
                dir.display()
            ))),
        }
    }

    /// Applies `f` to the pipeline's machine, persists it and the executions it touched in one
    /// transaction, then performs the effects. When the store cannot be written, the pipeline
    /// goes back to where it was (nothing is acted on that was not written): a due timeout is
    /// taken again on a later tick, and the caller of an input gets the error.
    pub fn step<T>(
        self: &Arc<Self>,
        name: &str,
        f: impl FnOnce(&mut Pipeline, Timestamp) -> Result<T, InputError>,
    ) -> Result<T, Error> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Internal("the pipelines subsystem is shutting down".into()));
        }
        let now = self.now();
        let mut slots = lock(&self.slots);
        let slot = slots.get_mut(name).ok_or_else(|| {
            Error::NotFound(format!("no pipeline `{name}`; declare it in cutover.yaml and apply"))
        })?;
        let before = slot.clone();
        let res = f(&mut slot.machine, now);
        let mut effects = Vec::new();
        while let Some(e) = slot.machine.poll_effect() {
            effects.push(e);
        }
        let snapshot = serde_json::to_string(&slot.machine)
            .map_err(|e| Error::Internal(format!("snapshot of {name}: {e}")))?;
        let records = execution_rows(name, &slot.machine, &effects);
        let mut starts = Vec::new();
        for e in effects {
            tracing::debug!(pipeline = name, "{e}");
            match e {
                Effect::StartAction { .. } | Effect::CancelAction { .. } => {
                    let revision = match &e {
                        Effect::StartAction { execution_id, .. } => slot
                            .machine
                            .execution(execution_id)
                            .map(|r| r.revision.clone())
                            .unwrap_or_default(),
                        _ => Revision::default(),
                    };
                    starts.push((e, revision));
                }
                _ => {}
            }
        }
        // A changed definition waits for the machine to be idle.
        let mut swapped = None;
        if slot.machine.is_idle()
            && let Some(def) = slot.pending.take()
        {
            match Pipeline::new(def.machine_spec(), now) {
                Ok(m) => {
                    slot.machine = m;
                    slot.def = def;
                    slot.version += 1;
                    swapped = Some(slot_row(name, slot, now.as_millis())?);
                }
                Err(e) => tracing::warn!(pipeline = name, "pending definition refused: {e}"),
            }
        }
        let def = slot.def.clone();
        let written = self.store.transaction(|tx| {
            tx.ci_pipeline_set_machine(name, &snapshot, now.as_millis())?;
            for r in &records {
                tx.ci_execution_put(r)?;
            }
            if let Some(row) = &swapped {
                tx.ci_pipeline_put(row)?;
            }
            Ok(())
        });
        if let Err(err) = written {
            *slot = before;
            if err.is_write_failure() {
                lock(&self.unwritten).insert(name.to_string());
            }
            return Err(err.into());
        }
        lock(&self.unwritten).remove(name);
        drop(slots);
        // The machine may have a new deadline, earlier than the one the loop sleeps until.
        self.wake.notify_one();
        for (e, revision) in starts {
            crate::jobs::perform(self, name, &def, e, revision);
        }
        res.map_err(|e| match e {
            InputError::UnknownExecution(_) => Error::NotFound(e.to_string()),
            other => Error::Conflict(other.to_string()),
        })
    }

    /// Feeds a job's report; refusals are logged (a late report of an action that was given up).
    /// A report the store cannot take now is not dropped: it is fed again, with backoff, until it
    /// is written, so a full disk delays a pipeline rather than stalling it.
    pub fn report(self: &Arc<Self>, pipeline: &str, input: Input) {
        match self.step(pipeline, |m, now| m.handle_input(input.clone(), now)) {
            Err(Error::Store(err)) if err.is_write_failure() => {
                tracing::warn!(pipeline, "report kept until the store can be written: {err}");
                let inner = self.clone();
                let pipeline = pipeline.to_string();
                tokio::spawn(async move { inner.report_when_writable(&pipeline, input).await });
            }
            Err(err) => tracing::info!(pipeline, "report not taken: {err}"),
            Ok(()) => {}
        }
    }

    /// Writes what `write` writes, trying again with backoff while the store cannot be written
    /// (a full disk), so that a fact already true outside (a started deployment, a build's
    /// result) is never lost; `what` names it in the log. Another kind of store error is logged
    /// and returned.
    pub async fn write_until_stored(
        &self,
        what: &str,
        write: impl Fn(&store::Tx<'_>) -> store::Result<()>,
    ) -> Result<(), store::Error> {
        for failed in 0u32.. {
            if failed > 0 {
                tokio::time::sleep(retry_delay(failed)).await;
            }
            match self.store.transaction(&write) {
                Ok(()) => {
                    if failed > 0 {
                        tracing::info!("{what}: written");
                    }
                    return Ok(());
                }
                Err(err) if err.is_write_failure() => {
                    if failed == 0 {
                        tracing::warn!("{what}: kept until the store can be written: {err}");
                    }
                }
                Err(err) => {
                    tracing::error!("{what}: {err}");
                    return Err(err);
                }
            }
        }
        unreachable!("the retry loop only ends by returning")
    }

    async fn report_when_writable(self: Arc<Self>, pipeline: &str, input: Input) {
        for failed in 1u32.. {
            tokio::time::sleep(retry_delay(failed)).await;
            match self.step(pipeline, |m, now| m.handle_input(input.clone(), now)) {
                Err(Error::Store(err)) if err.is_write_failure() => continue,
                Err(err) => return tracing::info!(pipeline, "report not taken: {err}"),
                Ok(()) => return tracing::info!(pipeline, "kept report written"),
            }
        }
    }

    /// Stores the commit's tree as the source artifact and starts an execution.
    pub async fn trigger(
        self: &Arc<Self>,
        pipeline: &str,
        repo: PathBuf,
        commit: String,
        branch: String,
        pushed_by: String,
    ) -> Result<String, Error> {
        let data_dir = self.cfg.data_dir.clone();
        let (c, now) = (commit.clone(), self.file_time());
        let (artifact, author, message) = tokio::task::spawn_blocking(move || {
            let staged = artifacts::staging(&data_dir)?;
            git::export_tree(&repo, &c, &staged)?;
            let id = artifacts::store(&data_dir, &staged, now)?;
            let (author, message) = git::commit_info(&repo, &c);
            Ok::<_, Error>((id, author, message))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        let artifact = pipeline::ArtifactId::new(artifact)?;
        let key = format!("ci.executions.{pipeline}");
        let n = self.store.transaction(|tx| tx.next_sequence(&key))?;
        let execution_id = format!("{pipeline}-{n}");
        let pushed_by = if pushed_by.is_empty() { author } else { pushed_by };
        let revision = Revision { commit, branch, pushed_by, message };
        let id = execution_id.clone();
        self.step(pipeline, move |m, now| {
            m.handle_input(Input::SourceChanged { execution_id: id, revision, artifact }, now)
        })?;
        tracing::info!(pipeline, execution = %execution_id, "execution started");
        Ok(execution_id)
    }

    pub fn defs(&self) -> Vec<PipelineDecl> {
        lock(&self.slots).values().map(|s| s.def.clone()).collect()
    }

    pub fn def(&self, name: &str) -> Option<PipelineDecl> {
        lock(&self.slots).get(name).map(|s| s.def.clone())
    }

    /// Turns the pushes recorded by the hosted repositories' hooks into executions. A push
    /// whose execution the store could not record stays recorded and is taken again (the loop
    /// wakes for it); the executions it did start are not started twice.
    pub async fn process_pushes(self: &Arc<Self>) {
        let _guard = self.push_lock.lock().await;
        let repos = match self.store.read(|tx| tx.ci_repository_list()) {
            Ok(r) => r,
            Err(err) => return tracing::warn!("listing repositories: {err}"),
        };
        let mut waiting = false;
        for (repo, _) in repos {
            let dir = self.repo_dir(&repo);
            let d = dir.clone();
            let pushes = tokio::task::spawn_blocking(move || git::pending_pushes(&d))
                .await
                .unwrap_or_default();
            for push in pushes {
                if self.start_push(&repo, &dir, &push).await {
                    if let Err(err) = std::fs::remove_file(&push.file) {
                        tracing::warn!(
                            "removing the processed push {}: {err}",
                            push.file.display()
                        );
                    }
                    lock(&self.started_pushes).retain(|(file, _)| *file != push.file);
                } else {
                    waiting = true;
                }
            }
        }
        let were_waiting = self.pushes_waiting.swap(waiting, Ordering::SeqCst);
        if waiting && !were_waiting {
            // The loop may sleep until a later deadline: it learns that it must take them again
            // (once; while they wait, it wakes for them every `UNWRITTEN_RETRY`).
            self.wake.notify_one();
        }
    }

    /// Starts an execution of every pipeline the push starts; `false` when one could not be
    /// recorded for now (the store cannot be written) and the push must be taken again.
    async fn start_push(self: &Arc<Self>, repo: &str, dir: &Path, push: &git::Push) -> bool {
        let mut done = true;
        for (commit, r) in &push.updates {
            let Some(branch) = r.strip_prefix("refs/heads/") else { continue };
            for def in self.defs() {
                if def.repository() != Some(repo) || !def.source.triggers_on(branch) {
                    continue;
                }
                let started = (push.file.clone(), format!("{}/{r}", def.name));
                if lock(&self.started_pushes).contains(&started) {
                    continue;
                }
                let pusher = push.pusher.clone();
                match self
                    .trigger(&def.name, dir.into(), commit.clone(), branch.into(), pusher)
                    .await
                {
                    Ok(_) => {
                        lock(&self.started_pushes).insert(started);
                    }
                    Err(Error::Store(err)) if err.is_write_failure() => {
                        tracing::warn!(
                            pipeline = def.name,
                            "push to {repo} kept until the store can be written: {err}"
                        );
                        done = false;
                    }
                    Err(err) => {
                        tracing::warn!(pipeline = def.name, "push to {repo} not started: {err}")
                    }
                }
            }
        }
        done
    }

    /// Polls a URL source and starts an execution when its branch moved.
    async fn poll_source(self: Arc<Self>, def: PipelineDecl) {
        let SourceLocation::Url { url, .. } = def.source.location.clone() else { return };
        let name = def.name.clone();
        let branch = def.source.branch.clone();
        let mirror = self.mirror_dir(&name);
        let last = match self.store.read(|tx| tx.ci_source_get(&name)) {
            Ok(last) => last,
            // Without the last commit every head looks new: poll again later instead.
            Err(err) => {
                tracing::warn!(pipeline = name, "reading the last polled commit: {err}");
                self.poll_done(&name);
                return;
            }
        };
        let (u, b) = (url.clone(), branch.clone());
        let head = tokio::task::spawn_blocking(move || git::remote_head(&u, &b)).await;
        match head {
            Ok(Ok(Some(head))) if Some(&head) != last.as_ref() => {
                let m = mirror.clone();
                let fetched =
                    tokio::task::spawn_blocking(move || git::fetch_into_mirror(&m, &url, &branch))
                        .await;
                match fetched {
                    Ok(Ok(commit)) => {
                        let now = self.now().as_millis();
                        // Unrecorded, the commit would trigger again at the next poll: start
                        // nothing now, the next poll tries again.
                        if let Err(err) =
                            self.store.transaction(|tx| tx.ci_source_set(&name, &commit, now))
                        {
                            tracing::warn!(pipeline = name, "recording the polled commit: {err}");
                        } else if let Err(err) = self
                            .trigger(
                                &name,
                                mirror,
                                commit,
                                def.source.branch.clone(),
                                String::new(),
                            )
                            .await
                        {
                            tracing::warn!(
                                pipeline = name,
                                "poll found a change, not started: {err}"
                            );
                        }
                    }
                    Ok(Err(err)) => tracing::warn!(pipeline = name, "fetch failed: {err}"),
                    Err(err) => tracing::warn!(pipeline = name, "fetch failed: {err}"),
                }
            }
            Ok(Err(err)) => tracing::warn!(pipeline = name, "polling the source failed: {err}"),
            _ => {}
        }
        self.poll_done(&name);
    }

    /// The next poll of `name` may start; the loop learns when.
    fn poll_done(&self, name: &str) {
        if let Some(p) = lock(&self.polls).get_mut(name) {
            p.1 = false;
        }
        self.wake.notify_one();
    }

    /// The pipelines to step now: a timeout has come, or their last step was not written.
    fn due_machines(&self, now: Timestamp) -> Vec<String> {
        let unwritten = lock(&self.unwritten).clone();
        lock(&self.slots)
            .iter()
            .filter(|(n, s)| {
                s.machine.poll_timeout().is_some_and(|t| t <= now) || unwritten.contains(*n)
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Every deadline the loop waits for: the machines' timeouts, the next try of a pipeline
    /// step or a push the store refused, the polls not running.
    fn deadlines(&self) -> Vec<Timestamp> {
        let mut out: Vec<Timestamp> =
            lock(&self.slots).values().filter_map(|s| s.machine.poll_timeout()).collect();
        if !lock(&self.unwritten).is_empty() || self.pushes_waiting.load(Ordering::SeqCst) {
            out.push(self.now().saturating_add(UNWRITTEN_RETRY));
        }
        let polled: HashSet<String> = self
            .defs()
            .into_iter()
            .filter(|d| d.poll_interval().is_some())
            .map(|d| d.name)
            .collect();
        let polls = lock(&self.polls);
        for name in polled {
            match polls.get(&name) {
                Some((_, true)) => {} // running: it wakes the loop when done
                Some((due, false)) => out.push(Timestamp::from_millis(*due)),
                None => out.push(self.now()), // never polled yet
            }
        }
        out
    }

    fn due_polls(self: &Arc<Self>) {
        let now = self.now().as_millis();
        for def in self.defs() {
            let Some(interval) = def.poll_interval() else { continue };
            let mut polls = lock(&self.polls);
            let entry = polls.entry(def.name.clone()).or_insert((0, false));
            if entry.1 || entry.0 > now {
                continue;
            }
            *entry = (now + interval.as_millis() as u64, true);
            drop(polls);
            tokio::spawn(self.clone().poll_source(def));
        }
    }

    fn collect_garbage(&self) {
        // Without the retained executions nothing is known to be unused: delete nothing.
        let rows = match self.store.read(|tx| tx.ci_execution_retained(KEEP)) {
            Ok(rows) => rows,
            Err(err) => return tracing::warn!("retention skipped: {err}"),
        };
        let mut keep = HashSet::new();
        for row in rows {
            if let Ok(rec) = serde_json::from_str::<pipeline::ExecutionRecord>(&row.record) {
                keep.extend(rec.artifacts.iter().map(|(_, id)| id.as_str().to_string()));
            }
        }
        // Artifacts of executions the machines hold (a retry may need them).
        for slot in lock(&self.slots).values() {
            for rec in slot.machine.active() {
                keep.extend(rec.artifacts.iter().map(|(_, id)| id.as_str().to_string()));
            }
        }
        let removed = artifacts::collect_garbage(&self.cfg.data_dir, &keep, self.file_time());
        if removed > 0 {
            tracing::info!("removed {removed} artifacts past retention");
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.cfg.data_dir
    }
}

const KEEP: u32 = artifacts::KEEP_EXECUTIONS;

/// The records of the executions `effects` touched, to be stored as their history.
fn execution_rows(
    name: &str,
    machine: &Pipeline,
    effects: &[Effect],
) -> Vec<store::CiExecutionRow> {
    let mut touched: Vec<String> = Vec::new();
    for e in effects {
        let id = match e {
            Effect::ExecutionStatus { execution_id, .. }
            | Effect::StageStatus { execution_id, .. }
            | Effect::StartAction { execution_id, .. }
            | Effect::CancelAction { execution_id, .. }
            | Effect::ActionStatus { execution_id, .. }
            | Effect::Finished { execution_id, .. } => execution_id,
        };
        if !touched.contains(id) {
            touched.push(id.clone());
        }
    }
    touched
        .iter()
        .filter_map(|id| machine.execution(id))
        .filter_map(|rec| {
            Some(store::CiExecutionRow {
                pipeline: name.to_string(),
                id: rec.id.clone(),
                seq: rec.seq,
                status: rec.status.as_str().to_string(),
                record: serde_json::to_string(rec).ok()?,
                started_at: rec.started.as_millis(),
                ended_at: rec.ended.map(|t| t.as_millis()),
            })
        })
        .collect()
}

/// What `apply` does to one declared pipeline.
enum Change {
    Create(PipelineDecl, Pipeline),
    /// An idle pipeline gets the new definition and a fresh machine at once.
    Replace(PipelineDecl, Pipeline),
    /// A busy one switches when its executions have finished.
    Pending(PipelineDecl),
    /// The definition went back to the one running: forget the pending one.
    DropPending,
    Unchanged,
}

fn row_of(
    name: &str,
    def: &PipelineDecl,
    machine: &Pipeline,
    pending: Option<&PipelineDecl>,
    version: u64,
    now: u64,
) -> Result<store::CiPipelineRow, Error> {
    let j = |e: serde_json::Error| Error::Internal(format!("pipeline {name}: {e}"));
    Ok(store::CiPipelineRow {
        name: name.to_string(),
        definition: serde_json::to_string(def).map_err(j)?,
        machine: serde_json::to_string(machine).map_err(j)?,
        pending_definition: pending.map(serde_json::to_string).transpose().map_err(j)?,
        version,
        updated_at: now,
    })
}

fn slot_row(name: &str, slot: &Slot, now: u64) -> Result<store::CiPipelineRow, Error> {
    row_of(name, &slot.def, &slot.machine, slot.pending.as_ref(), slot.version, now)
}

/// The loop: steps the machines whose deadline has come (and those whose last step the store
/// refused), turns recorded pushes into executions, starts due polls and runs retention, then
/// sleeps until the next of those deadlines or until woken (`Inner::wake`: a step, an apply, a
/// finished poll).
async fn run_loop(inner: Shared) {
    let mut next_gc = inner.now().saturating_add(GC_EVERY);
    inner.process_pushes().await;
    loop {
        inner.turns.fetch_add(1, Ordering::Relaxed);
        let now = inner.now();
        for name in inner.due_machines(now) {
            // A failed write leaves the timeout due (or the resumed effects queued): the loop
            // tries again after `UNWRITTEN_RETRY`.
            if let Err(err) = inner.step(&name, |m, now| {
                if m.poll_timeout().is_some_and(|t| t <= now) {
                    m.handle_timeout(now);
                }
                Ok(())
            }) {
                tracing::debug!(pipeline = name, "not written, trying again: {err}");
            }
        }
        inner.process_pushes().await;
        inner.due_polls();
        if now >= next_gc {
            next_gc = now.saturating_add(GC_EVERY);
            let i = inner.clone();
            if let Err(err) = tokio::task::spawn_blocking(move || i.collect_garbage()).await {
                tracing::warn!("retention stopped: {err}");
            }
        }
        let wake_at = next_wake(inner.deadlines(), next_gc);
        let sleep =
            Duration::from_millis(wake_at.as_millis().saturating_sub(inner.now().as_millis()));
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// When the loop must look again: the earliest of the deadlines and the next retention.
fn next_wake(deadlines: impl IntoIterator<Item = Timestamp>, next_gc: Timestamp) -> Timestamp {
    deadlines.into_iter().fold(next_gc, Timestamp::min)
}
