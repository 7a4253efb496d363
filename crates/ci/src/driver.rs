//! The driver: one `pipeline::Pipeline` per pipeline, persisted after every step, its effects
//! performed by jobs; the background loop (deadlines, pushes, polling, retention); `apply`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use model::Timestamp;
use pipeline::{Effect, Input, InputError, Pipeline, Revision};
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;

use crate::def::PipelineDef;
use crate::{CiConfig, Deployer, Error, Shared, artifacts, git};

/// How often the loop looks at deadlines, pushes and polls without being woken.
const TICK: Duration = Duration::from_millis(250);
/// How often retention runs.
const GC_EVERY: Duration = Duration::from_secs(60);

pub struct Slot {
    pub def: PipelineDef,
    pub machine: Pipeline,
    pub version: u64,
    pub pending: Option<PipelineDef>,
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
    clock: AtomicU64,
    push_lock: tokio::sync::Mutex<()>,
    polls: Mutex<HashMap<String, (u64, bool)>>,
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
            clock: AtomicU64::new(0),
            push_lock: tokio::sync::Mutex::new(()),
            polls: Mutex::new(HashMap::new()),
        });
        let rows = inner.store.read(|tx| tx.ci_pipeline_list())?;
        let now = inner.now();
        let mut names = Vec::new();
        {
            let mut slots = lock(&inner.slots);
            for row in rows {
                let def: PipelineDef = serde_json::from_str(&row.definition)
                    .map_err(|e| Error::Internal(format!("pipeline {}: {e}", row.name)))?;
                let mut machine: Pipeline = serde_json::from_str(&row.machine)
                    .map_err(|e| Error::Internal(format!("pipeline {} snapshot: {e}", row.name)))?;
                machine.resume(now);
                let pending = row.pending_definition.and_then(|p| serde_json::from_str(&p).ok());
                names.push(row.name.clone());
                slots.insert(row.name, Slot { def, machine, version: row.version, pending });
            }
        }
        for name in names {
            inner.step(&name, |_, _| Ok(())).ok();
        }
        let task = tokio::spawn(run_loop(inner.clone()));
        Ok(Ci { inner, task })
    }

    pub(crate) fn shared(&self) -> Shared {
        self.inner.clone()
    }

    /// Creates the declared repositories and creates or updates the declared pipelines; see the
    /// crate docs for what a changed definition does. Validates everything first: on error
    /// nothing changed.
    pub fn apply(
        &self,
        repositories: &[spec::RepositoryDecl],
        pipelines: &[spec::PipelineDecl],
    ) -> Result<Vec<crate::api::PlanItem>, Error> {
        self.inner.apply(repositories, pipelines)
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
    /// Wall-clock milliseconds that never go backwards.
    pub fn now(&self) -> Timestamp {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let prev = self.clock.fetch_max(wall, Ordering::SeqCst);
        Timestamp::from_millis(wall.max(prev))
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
        git::init_bare(&self.repo_dir(name), "main").map_err(Error::Internal)?;
        let now = self.now().as_millis();
        Ok(self.store.transaction(|tx| tx.ci_repository_create(name, now))?)
    }

    pub fn apply(
        &self,
        repositories: &[spec::RepositoryDecl],
        pipelines: &[spec::PipelineDecl],
    ) -> Result<Vec<crate::api::PlanItem>, Error> {
        let now = self.now();
        for r in repositories {
            if !valid_name(&r.name) {
                return Err(Error::Invalid(format!("repository `{}`: invalid name", r.name)));
            }
        }
        let mut defs = Vec::new();
        for p in pipelines {
            let def = PipelineDef::from_decl(p);
            if !valid_name(&def.name) {
                return Err(Error::Invalid(format!("pipeline `{}`: invalid name", def.name)));
            }
            let machine = Pipeline::new(def.machine_spec(), now)
                .map_err(|e| Error::Invalid(format!("pipeline `{}`: {e}", def.name)))?;
            defs.push((def, machine));
        }
        let mut plan = Vec::new();
        let existing: HashSet<String> =
            self.store.read(|tx| tx.ci_repository_list())?.into_iter().map(|r| r.0).collect();
        for r in repositories {
            let created = self.create_repository(&r.name)?;
            plan.push(crate::api::PlanItem {
                kind: "repository".into(),
                name: r.name.clone(),
                action: if created && !existing.contains(&r.name) { "create" } else { "unchanged" }
                    .into(),
                detail: Some(self.clone_url(&r.name)),
            });
        }
        let mut slots = lock(&self.slots);
        let mut rows = Vec::new();
        for (def, machine) in defs {
            let name = def.name.clone();
            let action = match slots.get_mut(&name) {
                None => {
                    slots.insert(name.clone(), Slot { def, machine, version: 1, pending: None });
                    "create"
                }
                Some(slot) if slot.def == def => {
                    if slot.pending.take().is_some() {
                        "update"
                    } else {
                        "unchanged"
                    }
                }
                Some(slot) if slot.machine.is_idle() => {
                    slot.def = def;
                    slot.machine = machine;
                    slot.version += 1;
                    slot.pending = None;
                    "update"
                }
                Some(slot) => {
                    slot.pending = Some(def);
                    "update-pending"
                }
            };
            if action != "unchanged" {
                rows.push(name.clone());
            }
            plan.push(crate::api::PlanItem {
                kind: "pipeline".into(),
                name,
                action: action.into(),
                detail: None,
            });
        }
        let ms = now.as_millis();
        let puts: Vec<store::CiPipelineRow> = rows
            .iter()
            .filter_map(|n| slots.get(n).map(|s| slot_row(n, s, ms)))
            .collect::<Result<_, _>>()?;
        drop(slots);
        self.store.transaction(|tx| {
            for row in &puts {
                tx.ci_pipeline_put(row)?;
            }
            Ok(())
        })?;
        self.wake.notify_one();
        Ok(plan)
    }

    /// Applies `f` to the pipeline's machine, persists it, records the executions it touched,
    /// then performs the effects.
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
        let res = f(&mut slot.machine, now);
        let snapshot = serde_json::to_string(&slot.machine)
            .map_err(|e| Error::Internal(format!("snapshot of {name}: {e}")))?;
        self.store
            .transaction(|tx| tx.ci_pipeline_set_machine(name, &snapshot, now.as_millis()))?;
        let mut effects = Vec::new();
        while let Some(e) = slot.machine.poll_effect() {
            effects.push(e);
        }
        let mut touched: Vec<String> = Vec::new();
        for e in &effects {
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
        let records: Vec<store::CiExecutionRow> = touched
            .iter()
            .filter_map(|id| slot.machine.execution(id))
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
            .collect();
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
        drop(slots);
        self.store.transaction(|tx| {
            for r in &records {
                tx.ci_execution_put(r)?;
            }
            if let Some(row) = &swapped {
                tx.ci_pipeline_put(row)?;
            }
            Ok(())
        })?;
        for (e, revision) in starts {
            crate::jobs::perform(self, name, &def, e, revision);
        }
        res.map_err(|e| match e {
            InputError::UnknownExecution(_) => Error::NotFound(e.to_string()),
            other => Error::Conflict(other.to_string()),
        })
    }

    /// Feeds a job's report; refusals are logged (a late report of an action that was given up).
    pub fn report(self: &Arc<Self>, pipeline: &str, input: Input) {
        if let Err(err) = self.step(pipeline, |m, now| m.handle_input(input, now)) {
            tracing::info!(pipeline, "report not taken: {err}");
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
        let c = commit.clone();
        let (artifact, author, message) = tokio::task::spawn_blocking(move || {
            let staged = artifacts::staging(&data_dir)?;
            git::export_tree(&repo, &c, &staged)?;
            let id = artifacts::store(&data_dir, &staged)?;
            let (author, message) = git::commit_info(&repo, &c);
            Ok::<_, String>((id, author, message))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(Error::Internal)?;
        let artifact = pipeline::ArtifactId::new(artifact).map_err(Error::Internal)?;
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

    pub fn defs(&self) -> Vec<PipelineDef> {
        lock(&self.slots).values().map(|s| s.def.clone()).collect()
    }

    pub fn def(&self, name: &str) -> Option<PipelineDef> {
        lock(&self.slots).get(name).map(|s| s.def.clone())
    }

    /// Turns the pushes recorded by the hosted repositories' hooks into executions.
    pub async fn process_pushes(self: &Arc<Self>) {
        let _guard = self.push_lock.lock().await;
        let repos = match self.store.read(|tx| tx.ci_repository_list()) {
            Ok(r) => r,
            Err(err) => return tracing::warn!("listing repositories: {err}"),
        };
        for (repo, _) in repos {
            let dir = self.repo_dir(&repo);
            let d = dir.clone();
            let pushes = tokio::task::spawn_blocking(move || git::pending_pushes(&d))
                .await
                .unwrap_or_default();
            for push in pushes {
                for (commit, r) in &push.updates {
                    let Some(branch) = r.strip_prefix("refs/heads/") else { continue };
                    for def in self.defs() {
                        if def.source.repository.as_deref() != Some(repo.as_str())
                            || !def.triggers_on(branch)
                        {
                            continue;
                        }
                        if let Err(err) = self
                            .trigger(
                                &def.name,
                                dir.clone(),
                                commit.clone(),
                                branch.into(),
                                push.pusher.clone(),
                            )
                            .await
                        {
                            tracing::warn!(
                                pipeline = def.name,
                                "push to {repo} not started: {err}"
                            );
                        }
                    }
                }
                let _ = std::fs::remove_file(&push.file);
            }
        }
    }

    /// Polls a URL source and starts an execution when its branch moved.
    async fn poll_source(self: Arc<Self>, def: PipelineDef) {
        let Some(url) = def.source.url.clone() else { return };
        let name = def.name.clone();
        let branch = def.source.branch.clone();
        let mirror = self.mirror_dir(&name);
        let last = self.store.read(|tx| tx.ci_source_get(&name)).ok().flatten();
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
                        let _ = self.store.transaction(|tx| tx.ci_source_set(&name, &commit, now));
                        if let Err(err) = self
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
        if let Some(p) = lock(&self.polls).get_mut(&name) {
            p.1 = false;
        }
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
        let Ok(rows) = self.store.read(|tx| tx.ci_execution_retained(KEEP)) else { return };
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
        let removed = artifacts::collect_garbage(&self.cfg.data_dir, &keep);
        if removed > 0 {
            tracing::info!("removed {removed} artifacts past retention");
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.cfg.data_dir
    }
}

const KEEP: u32 = artifacts::KEEP_EXECUTIONS;

fn slot_row(name: &str, slot: &Slot, now: u64) -> Result<store::CiPipelineRow, Error> {
    let j = |e: serde_json::Error| Error::Internal(format!("pipeline {name}: {e}"));
    Ok(store::CiPipelineRow {
        name: name.to_string(),
        definition: serde_json::to_string(&slot.def).map_err(j)?,
        machine: serde_json::to_string(&slot.machine).map_err(j)?,
        pending_definition: slot
            .pending
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(j)?,
        version: slot.version,
        updated_at: now,
    })
}

async fn run_loop(inner: Shared) {
    let mut last_gc = std::time::Instant::now();
    inner.process_pushes().await;
    loop {
        let now = inner.now();
        let due: Vec<String> = lock(&inner.slots)
            .iter()
            .filter(|(_, s)| s.machine.poll_timeout().is_some_and(|t| t <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let _ = inner.step(&name, |m, now| {
                m.handle_timeout(now);
                Ok(())
            });
        }
        inner.process_pushes().await;
        inner.due_polls();
        if last_gc.elapsed() > GC_EVERY {
            last_gc = std::time::Instant::now();
            let i = inner.clone();
            let _ = tokio::task::spawn_blocking(move || i.collect_garbage()).await;
        }
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}
