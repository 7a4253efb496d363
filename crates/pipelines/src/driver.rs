//! The shell around [`Core`]: a [`Shell`] owns it and the running jobs, and is the only writer of
//! the pipelines' state. It has no loop of its own: a host runs it in its loop — the control
//! plane's engine, beside the reconciler, or [`Pipelines::start`]'s small loop when pipelines run
//! alone (their tests). HTTP handlers, jobs, polls and the push scanner send the host's loop
//! [`Request`]s (with a reply channel where the caller needs an answer); the host hands each to
//! [`Shell::handle`], one at a time, which writes each step before performing its effects, and
//! calls [`Shell::tick`] when [`Shell::next_deadline`] has come.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Wake};
use std::time::Duration;

use futures_util::future::BoxFuture;
use model::Timestamp;
use pipeline::definition::PipelineDecl;
use pipeline::{ArtifactId, ExecutionRecord, Pipeline, Revision};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::AbortHandle;

use crate::core::{self, Core, Effect, Msg, Prepared, Step};
use crate::jobs::{DeployStep, Deploys};
use crate::{DeployRequest, DeploymentState, Error, PipelinesConfig, artifacts, git};

/// Requests waiting for the loop; a sender waits (it never drops one) when it is full.
const REQUESTS_MAX: usize = 1024;

/// What the loop is asked. Every change of the pipelines' state is one of these, or an `apply`
/// (which its host calls the shell for directly: [`Shell::apply_with`]).
pub enum Request {
    /// Handle a message; answer with the execution it was about, once it is written.
    Handle {
        msg: Msg,
        reply: Option<oneshot::Sender<Result<Option<ExecutionRecord>, Error>>>,
    },
    /// Start an execution at a revision already stored as `artifact`; answer with its id, once
    /// it is written.
    Start {
        pipeline: String,
        revision: Revision,
        artifact: ArtifactId,
        polled: Option<String>,
        reply: oneshot::Sender<Result<String, Error>>,
    },
    CreateRepository {
        name: String,
        reply: oneshot::Sender<Result<bool, Error>>,
    },
    /// Deletes the repository's row unless a pipeline builds from it; the caller removes its
    /// directory.
    DeleteRepository {
        name: String,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Definitions {
        reply: oneshot::Sender<Vec<PipelineDecl>>,
    },
    /// A pipeline's definition, version and whether a changed definition waits.
    Pipeline {
        name: String,
        reply: oneshot::Sender<Option<(PipelineDecl, u64, bool)>>,
    },
    /// A job ended (its report, if any, was sent before).
    JobDone {
        key: String,
    },
    /// A deploy action run's job read what it needs: the deployment to start or adopt.
    Deploy {
        job: String,
        step: DeployStep,
    },
}

/// The way to the loop that hosts the pipelines' [`Shell`]: its standalone loop's channel, or the
/// channel of the control plane's engine (whose messages carry a [`Request`]).
#[derive(Clone)]
pub struct LoopSender(Arc<dyn Fn(Request) -> BoxFuture<'static, bool> + Send + Sync>);

impl LoopSender {
    /// Requests go into `tx` as the host's own messages.
    pub fn new<M: From<Request> + Send + 'static>(tx: mpsc::Sender<M>) -> LoopSender {
        LoopSender(Arc::new(move |request| {
            let tx = tx.clone();
            Box::pin(async move { tx.send(M::from(request)).await.is_ok() })
        }))
    }

    /// Waits while the loop's channel is full; `false` once the loop has ended.
    async fn send(&self, request: Request) -> bool {
        (self.0)(request).await
    }
}

/// What every handler, job and poll shares: settings, the store to read, and the way to the
/// loop. Nothing in it changes the pipelines' state but a request.
pub struct Ctx {
    pub cfg: PipelinesConfig,
    pub store: Arc<store::Store>,
    requests: LoopSender,
    /// Wakes the push scanner (after a `git push`).
    pub(crate) pushed: Notify,
    /// How many times the shell has ticked (its host's loop sleeps until its next deadline in
    /// between).
    turns: AtomicU64,
    /// One git operation at a time on each pipeline's mirror: two fetches into one repository
    /// race (its creation, its ref locks) and one of them fails.
    mirrors: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A running job of one action run.
pub struct Job {
    pub abort: AbortHandle,
    pub stop: Option<watch::Sender<bool>>,
}

/// The running jobs; dropping the table (the shell is dropped) stops them all.
#[derive(Default)]
pub struct Jobs(pub HashMap<String, Job>);

impl Drop for Jobs {
    fn drop(&mut self) {
        for (_, job) in self.0.drain() {
            if let Some(stop) = &job.stop {
                let _ = stop.send(true);
            }
            job.abort.abort();
        }
    }
}

/// How long to wait before writing again after `failed` failed writes in a row: from a quarter
/// second, doubling, to at most 5 s, so a freed disk is noticed within seconds.
fn retry_delay(failed: u32) -> Duration {
    let doubled =
        Duration::from_millis(250).saturating_mul(1u32 << failed.saturating_sub(1).min(16));
    doubled.min(Duration::from_secs(5))
}

pub fn job_key(pipeline: &str, execution: &str, stage: &str, action: &str, run: u32) -> String {
    format!("{pipeline}/{execution}/{stage}/{action}/{run}")
}

/// Runs `future` to its end on this thread: the standalone host's synchronous API waits for its
/// loop, which runs on another thread. On a multi-thread runtime the worker first hands its other
/// tasks (the loop, perhaps) to another thread, so this holds even with one worker; a
/// current-thread runtime would wait for itself, so the synchronous API is not for one.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let wait = move || {
        let waker = Arc::new(Unpark(std::thread::current())).into();
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::park();
        }
    };
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
        _ => wait(),
    }
}

fn shutting_down() -> Error {
    Error::Internal("the pipelines subsystem is shutting down".into())
}

/// The pipelines' side that outlives no loop: what the API's routes and the push scanner share.
/// Dropping it stops the scanner (and, for [`Pipelines::start`], the standalone loop with its
/// jobs: builds are killed; a deployment goes on and is adopted by the next start).
pub struct Pipelines {
    ctx: Arc<Ctx>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The standalone loop's own requests (an `apply`), when this host runs one.
    standalone: Option<mpsc::Sender<Standalone>>,
}

/// What the standalone loop takes: the shell's requests, an `apply` whose transaction the caller
/// runs (the loop waits for its verdict and takes nothing else meanwhile), and the answers of
/// the deployments it asked for ([`Deployments`]).
enum Standalone {
    Request(Request),
    Started {
        job: String,
        started: Result<String, String>,
    },
    Ended {
        id: String,
        state: DeploymentState,
    },
    Apply {
        prepared: oneshot::Sender<Result<Prepared, Error>>,
        apply: Box<Apply>,
        verdict: oneshot::Receiver<bool>,
    },
    Plan {
        plan: oneshot::Sender<Result<Vec<crate::api::PlanItem>, Error>>,
        apply: Box<Apply>,
    },
}

impl From<Request> for Standalone {
    fn from(request: Request) -> Standalone {
        Standalone::Request(request)
    }
}

/// The declarations an `apply` brings.
struct Apply {
    repositories: Vec<config::RepositoryDecl>,
    pipelines: Vec<config::PipelineDecl>,
}

impl Pipelines {
    /// Pipelines on a loop of their own (without the control plane: their tests): restores
    /// every pipeline from the store, resumes them and spawns the loop. What the deploy actions
    /// ask comes out of the receiver; answer through [`Pipelines::deployments`]. Call inside a
    /// tokio runtime.
    pub fn start(
        config: PipelinesConfig,
        store: Arc<store::Store>,
    ) -> Result<(Pipelines, mpsc::UnboundedReceiver<DeployRequest>), Error> {
        let (tx, rx) = mpsc::channel(REQUESTS_MAX);
        let (deploys, deploys_rx) = mpsc::unbounded_channel();
        let (mut pipelines, shell) = Pipelines::hosted(config, store, LoopSender::new(tx.clone()))?;
        pipelines.tasks.push(tokio::spawn(shell.run_alone(rx, deploys)));
        pipelines.standalone = Some(tx);
        Ok((pipelines, deploys_rx))
    }

    /// How the standalone loop's deployments are answered.
    pub fn deployments(&self) -> Option<Deployments> {
        let tx = self.standalone.clone()?;
        Some(Deployments { tx, ctx: self.ctx.clone() })
    }

    /// Pipelines hosted in another loop (the control plane's engine): restores every pipeline
    /// from the store and resumes them, and returns the API's side and the [`Shell`] the host's
    /// loop owns; requests reach that loop through `requests`. Call inside a tokio runtime.
    pub fn hosted(
        config: PipelinesConfig,
        store: Arc<store::Store>,
        requests: LoopSender,
    ) -> Result<(Pipelines, Shell), Error> {
        for sub in ["repos", "artifacts", "builds", "work", "mirrors"] {
            let p = config.data_dir.join(sub);
            std::fs::create_dir_all(&p)
                .map_err(|e| Error::Internal(format!("cannot create {}: {e}", p.display())))?;
        }
        let slots = store.read(|tx| Ok(crate::stored::load(tx)))?.map_err(|err| match err {
            crate::stored::LoadError::Store(err) => Error::Store(err),
            other => Error::Internal(other.to_string()),
        })?;
        let ctx = Arc::new(Ctx {
            cfg: config,
            store,
            requests,
            pushed: Notify::new(),
            turns: AtomicU64::new(0),
            mirrors: std::sync::Mutex::default(),
        });
        // Resumed machines are written again before their effects run (the first tick).
        let core = Core::restore(slots, ctx.now());
        let shell =
            Shell { core, ctx: ctx.clone(), jobs: Jobs::default(), deploys: Deploys::default() };
        let tasks = vec![tokio::spawn(crate::sources::scan_pushes(ctx.clone()))];
        Ok((Pipelines { ctx, tasks, standalone: None }, shell))
    }

    pub(crate) fn ctx(&self) -> Arc<Ctx> {
        self.ctx.clone()
    }

    /// How many times the shell has ticked; its loop sleeps until its next deadline or until
    /// asked something in between, so an idle installation adds none.
    #[doc(hidden)]
    pub fn loop_turns(&self) -> u64 {
        self.ctx.turns.load(Ordering::Relaxed)
    }

    /// [`Shell::apply_with`] without more writes, on the standalone loop.
    pub fn apply(
        &self,
        repositories: &[config::RepositoryDecl],
        pipelines: &[config::PipelineDecl],
    ) -> Result<Vec<crate::api::PlanItem>, Error> {
        Ok(self.apply_with(repositories, pipelines, |_| Ok(()))?.0)
    }

    /// [`Shell::apply_with`] on the standalone loop: the loop decides, this thread writes the
    /// pipelines' rows and `also` in one transaction, and the loop takes no other request from
    /// its decision to the commit, so no execution starts in between on a definition that is
    /// being replaced or deleted.
    pub fn apply_with<T>(
        &self,
        repositories: &[config::RepositoryDecl],
        pipelines: &[config::PipelineDecl],
        also: impl FnOnce(&store::Tx<'_>) -> store::Result<T>,
    ) -> Result<(Vec<crate::api::PlanItem>, T), Error> {
        let apply =
            Box::new(Apply { repositories: repositories.to_vec(), pipelines: pipelines.to_vec() });
        let (verdict, verdict_rx) = oneshot::channel();
        let prepared =
            self.ask_alone(|prepared| Standalone::Apply { prepared, apply, verdict: verdict_rx })??;
        if let Err(err) = init_repositories(&self.ctx, repositories) {
            let _ = verdict.send(false);
            return Err(err);
        }
        let ms = self.ctx.now().as_millis();
        let written = self.ctx.store.transaction(|tx| {
            write_apply(tx, repositories, &prepared, ms)?;
            also(tx)
        });
        let _ = verdict.send(written.is_ok());
        Ok((prepared.plan, written?))
    }

    /// What [`Pipelines::apply`] would do with these declarations now; changes nothing.
    pub fn plan(
        &self,
        repositories: &[config::RepositoryDecl],
        pipelines: &[config::PipelineDecl],
    ) -> Result<Vec<crate::api::PlanItem>, Error> {
        let apply =
            Box::new(Apply { repositories: repositories.to_vec(), pipelines: pipelines.to_vec() });
        self.ask_alone(|plan| Standalone::Plan { plan, apply })?
    }

    fn ask_alone<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> Standalone,
    ) -> Result<T, Error> {
        let Some(tx) = &self.standalone else {
            return Err(Error::Internal("these pipelines are hosted by another loop".into()));
        };
        block_on(async {
            let (reply, answer) = oneshot::channel();
            tx.send(request(reply)).await.map_err(|_| shutting_down())?;
            answer.await.map_err(|_| shutting_down())
        })
    }

    /// Deletes a hosted repository and its git data; refused while a pipeline builds from it.
    pub fn delete_repository(&self, name: &str) -> Result<(), Error> {
        let name = name.to_string();
        self.ctx
            .ask_blocking(|reply| Request::DeleteRepository { name: name.clone(), reply })??;
        self.ctx.remove_repository_dir(&name)
    }

    /// Creates a hosted repository (`false`: it existed already).
    pub fn create_repository(&self, name: &str) -> Result<bool, Error> {
        self.ctx.init_repository(name)?;
        let name = name.to_string();
        self.ctx.ask_blocking(|reply| Request::CreateRepository { name, reply })?
    }
}

/// The answers of the standalone loop's deployments, to what came out of [`Pipelines::start`]'s
/// receiver.
#[derive(Clone)]
pub struct Deployments {
    tx: mpsc::Sender<Standalone>,
    ctx: Arc<Ctx>,
}

impl Deployments {
    /// The deployment of `job` ([`DeployRequest::Start`]) started as `id`, or could not start.
    /// The id is recorded under `job` first, until the store takes it.
    pub async fn started(&self, job: &str, started: Result<String, String>) {
        if let Ok(id) = &started {
            let what = format!("deployment {id} of {job}");
            let now = self.ctx.now().as_millis();
            // Any other store error is logged there; the run goes on with its deployment.
            let _ = self.ctx.write_until_stored(&what, |tx| tx.ci_job_put(job, id, now)).await;
        }
        let _ = self.tx.send(Standalone::Started { job: job.to_string(), started }).await;
    }

    /// Deployment `id` ended.
    pub async fn ended(&self, id: &str, state: DeploymentState) {
        let _ = self.tx.send(Standalone::Ended { id: id.to_string(), state }).await;
    }
}

impl Drop for Pipelines {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Checks the declarations and builds each pipeline's definition and a fresh machine for it;
/// with the hosted repositories that exist.
#[allow(clippy::type_complexity)]
fn validate(
    ctx: &Ctx,
    repositories: &[config::RepositoryDecl],
    pipelines: &[config::PipelineDecl],
) -> Result<(Vec<(PipelineDecl, Pipeline)>, HashSet<String>), Error> {
    let now = ctx.now();
    for r in repositories {
        if !valid_name(&r.name) {
            return Err(Error::Invalid(format!("repository `{}`: invalid name", r.name)));
        }
    }
    let mut defs = Vec::new();
    for def in pipelines {
        if !valid_name(&def.name) {
            return Err(Error::Invalid(format!("pipeline `{}`: invalid name", def.name)));
        }
        let machine = Pipeline::new(def.machine_spec(), now)
            .map_err(|e| Error::Invalid(format!("pipeline `{}`: {e}", def.name)))?;
        defs.push((def.clone(), machine));
    }
    let existing = ctx.store.read(|tx| tx.ci_repository_list())?.into_iter().map(|r| r.0).collect();
    Ok((defs, existing))
}

/// Creates the declared repositories' directories, before their rows are written: creating one
/// is idempotent (it also reinstalls the hook), and a directory without its row is invisible, so
/// a failed transaction leaves nothing behind that anyone sees.
fn init_repositories(ctx: &Ctx, repositories: &[config::RepositoryDecl]) -> Result<(), Error> {
    for r in repositories {
        git::init_bare(&ctx.repo_dir(&r.name), "main")?;
    }
    Ok(())
}

/// An apply's rows, in the caller's transaction.
fn write_apply(
    tx: &store::Tx<'_>,
    repositories: &[config::RepositoryDecl],
    prepared: &Prepared,
    ms: u64,
) -> store::Result<()> {
    for r in repositories {
        tx.ci_repository_create(&r.name, ms)?;
    }
    for (name, doc) in &prepared.puts {
        crate::stored::put(tx, name, doc, ms)?;
    }
    for name in &prepared.deletes {
        crate::stored::delete(tx, name)?;
    }
    Ok(())
}

pub fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && !name.starts_with('.')
        && !name.ends_with(".git")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Ctx {
    /// The time, from the same clock as the control plane's ([`store::clock`]): wall-clock
    /// milliseconds advanced on the monotonic clock, so a step of the wall clock neither times
    /// an action out early nor holds a pipeline up.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_millis(store::clock::now_ms())
    }

    /// [`Ctx::now`] as a file time, for the artifacts' modification times.
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

    /// Runs `f` on the pipeline's mirror (in a blocking thread), alone: a fetch of a webhook, a
    /// poll and a manual start never run into each other.
    pub async fn in_mirror<T: Send + 'static>(
        &self,
        pipeline: &str,
        f: impl FnOnce(&std::path::Path) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let lock = {
            let mut mirrors = self.mirrors.lock().unwrap_or_else(|p| p.into_inner());
            mirrors.entry(pipeline.to_string()).or_default().clone()
        };
        let _alone = lock.lock().await;
        let dir = self.mirror_dir(pipeline);
        tokio::task::spawn_blocking(move || f(&dir))
            .await
            .map_err(|e| Error::Internal(e.to_string()))
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.cfg.data_dir
    }

    /// Sends the loop a request and waits for its answer.
    pub async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        if !self.requests.send(request(reply)).await {
            return Err(shutting_down());
        }
        answer.await.map_err(|_| shutting_down())
    }

    /// [`Ctx::ask`] for the synchronous API.
    fn ask_blocking<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, Error> {
        block_on(self.ask(request))
    }

    /// Feeds a job's report to its pipeline's machine (kept until the store can take it).
    pub async fn report(&self, pipeline: &str, input: pipeline::Input) {
        self.report_build(pipeline, input, None).await;
    }

    /// [`Ctx::report`] with the record of the build the job runs, written with the report.
    pub async fn report_build(
        &self,
        pipeline: &str,
        input: pipeline::Input,
        build: Option<store::CiBuildRow>,
    ) {
        let msg = Msg::Report { pipeline: pipeline.to_string(), input, build: build.map(Box::new) };
        let _ = self.requests.send(Request::Handle { msg, reply: None }).await;
    }

    /// Sends the loop a request that needs no answer.
    pub(crate) async fn send(&self, request: Request) {
        self.requests.send(request).await;
    }

    pub(crate) async fn job_done(&self, key: String) {
        let _ = self.requests.send(Request::JobDone { key }).await;
    }

    /// Handles `msg` and answers with the execution it was about, once written.
    pub async fn handle(&self, msg: Msg) -> Result<Option<ExecutionRecord>, Error> {
        self.ask(|reply| Request::Handle { msg, reply: Some(reply) }).await?
    }

    pub async fn definitions(&self) -> Vec<PipelineDecl> {
        self.ask(|reply| Request::Definitions { reply }).await.unwrap_or_default()
    }

    pub async fn definition(&self, name: &str) -> Option<PipelineDecl> {
        let name = name.to_string();
        self.ask(|reply| Request::Pipeline { name, reply }).await.ok().flatten().map(|p| p.0)
    }

    /// Stores the commit's tree as the source artifact and starts an execution; its id once it
    /// is written. `polled` is remembered as the source's last seen head in the same write.
    pub async fn start(
        &self,
        pipeline: &str,
        repo: PathBuf,
        commit: String,
        branch: String,
        pushed_by: String,
        polled: Option<String>,
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
        let artifact = ArtifactId::new(artifact)?;
        let pushed_by = if pushed_by.is_empty() { author } else { pushed_by };
        let revision = Revision { commit, branch, pushed_by, message };
        let pipeline = pipeline.to_string();
        let id = self
            .ask(|reply| Request::Start {
                pipeline: pipeline.clone(),
                revision,
                artifact,
                polled,
                reply,
            })
            .await??;
        tracing::info!(pipeline, execution = %id, "execution started");
        Ok(id)
    }

    /// Creates the repository's directory (idempotent), after checking its name.
    pub fn init_repository(&self, name: &str) -> Result<(), Error> {
        if !valid_name(name) {
            return Err(Error::Invalid(format!(
                "`{name}` is not a repository name: use 1 to 100 of A-Z a-z 0-9 . _ -, not \
                 starting with a dot nor ending in .git"
            )));
        }
        Ok(git::init_bare(&self.repo_dir(name), "main")?)
    }

    /// Removes a deleted repository's git data.
    pub fn remove_repository_dir(&self, name: &str) -> Result<(), Error> {
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

    /// Writes what `write` writes, trying again with backoff while the store cannot be written
    /// (a full disk), so that a fact already true outside (a deployment the standalone host's
    /// deployments started) is never lost; `what` names it in the log. Another kind of store error is logged
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
}

/// The one owner of the pipelines' state: the core, and the jobs performing its actions. Its host
/// runs it in a loop: every [`Request`] into [`Shell::handle`], and [`Shell::tick`] once
/// [`Shell::next_deadline`] has come. Dropping it stops the jobs.
pub struct Shell {
    core: Core,
    ctx: Arc<Ctx>,
    jobs: Jobs,
    deploys: Deploys,
}

impl Shell {
    /// When [`Shell::tick`] is due at the latest (it may have passed: call it at once then): an
    /// action's timeout, a poll, retention, a retry of what the store refused.
    pub fn next_deadline(&self) -> Timestamp {
        self.core.next_deadline()
    }

    /// Handles what is due now.
    pub fn tick(&mut self) {
        self.ctx.turns.fetch_add(1, Ordering::Relaxed);
        let (msgs, effects) = self.core.tick(self.ctx.now());
        for msg in msgs {
            let pipeline = msg_pipeline(&msg).to_string();
            if let Err(err) = self.take(msg) {
                tracing::debug!(pipeline, "not taken now: {err}");
            }
        }
        self.perform(effects);
    }

    /// The standalone host's loop: handles what is due, hands out what the deploy actions ask,
    /// then sleeps until the next deadline or the next request.
    async fn run_alone(
        mut self,
        mut requests: mpsc::Receiver<Standalone>,
        deploys: mpsc::UnboundedSender<DeployRequest>,
    ) {
        loop {
            self.tick();
            for request in self.deploys() {
                let _ = deploys.send(request);
            }
            let wake_at = self.next_deadline();
            let sleep = Duration::from_millis(
                wake_at.as_millis().saturating_sub(self.ctx.now().as_millis()),
            );
            tokio::select! {
                request = requests.recv() => match request {
                    Some(Standalone::Request(request)) => self.handle(request),
                    Some(Standalone::Started { job, started }) => {
                        self.deployment_started(&job, started)
                    }
                    Some(Standalone::Ended { id, state }) => self.deployment_ended(&id, &state),
                    Some(Standalone::Apply { prepared, apply, verdict }) => {
                        let decided = self.prepare_apply(&apply.repositories, &apply.pipelines);
                        let kept = decided.as_ref().ok().cloned();
                        let _ = prepared.send(decided);
                        if let Some(kept) = kept
                            && verdict.await == Ok(true)
                        {
                            self.applied(kept);
                        }
                    }
                    Some(Standalone::Plan { plan, apply }) => {
                        let _ = plan.send(self.plan(&apply.repositories, &apply.pipelines));
                    }
                    None => return,
                },
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Takes one request.
    pub fn handle(&mut self, request: Request) {
        match request {
            Request::Handle { msg, reply } => {
                let report = matches!(msg, Msg::Report { .. });
                let pipeline = msg_pipeline(&msg).to_string();
                let outcome = self.take(msg);
                match (&outcome, report) {
                    (Err(Error::Store(err)), true) if err.is_write_failure() => {
                        tracing::warn!(
                            pipeline,
                            "report kept until the store can be written: {err}"
                        )
                    }
                    (Err(err), true) => tracing::info!(pipeline, "report not taken: {err}"),
                    _ => {}
                }
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            }
            Request::Start { pipeline, revision, artifact, polled, reply } => {
                let _ = reply.send(self.start(pipeline, revision, artifact, polled));
            }
            Request::CreateRepository { name, reply } => {
                let now = self.ctx.now().as_millis();
                let created = self.ctx.store.transaction(|tx| tx.ci_repository_create(&name, now));
                let _ = reply.send(created.map_err(Error::from));
            }
            Request::DeleteRepository { name, reply } => {
                let _ = reply.send(self.delete_repository(&name));
            }
            Request::Definitions { reply } => {
                let _ = reply.send(self.core.definitions().cloned().collect());
            }
            Request::Pipeline { name, reply } => {
                let slot = self.core.slot(&name);
                let _ = reply.send(slot.map(|s| (s.def.clone(), s.version, s.pending.is_some())));
            }
            Request::JobDone { key } => {
                self.jobs.0.remove(&key);
            }
            Request::Deploy { job, step } => {
                if let Some((pipeline, input)) = self.deploys.prepared(job, step) {
                    self.report(pipeline, input);
                }
            }
        }
    }

    /// What the deploy actions ask of the host since it last took them: perform each in order,
    /// and answer with [`Shell::deployment_started`] and [`Shell::deployment_ended`].
    pub fn deploys(&mut self) -> Vec<DeployRequest> {
        std::mem::take(&mut self.deploys.outbox)
    }

    /// The host started the deployment [`DeployRequest::Start`] asked for `job` (its id, which it
    /// recorded), or says why it could not.
    pub fn deployment_started(&mut self, job: &str, started: Result<String, String>) {
        if let Some((pipeline, input)) = self.deploys.started(job, started) {
            self.report(pipeline, input);
        }
    }

    /// Deployment `id` ended: the action run that follows it ends with it.
    pub fn deployment_ended(&mut self, id: &str, state: &DeploymentState) {
        if let Some((pipeline, input)) = self.deploys.ended(id, state) {
            self.report(pipeline, input);
        }
    }

    /// Feeds a report to its pipeline's machine; one the store cannot take now is kept.
    fn report(&mut self, pipeline: String, input: pipeline::Input) {
        let msg = Msg::Report { pipeline, input, build: None };
        self.handle(Request::Handle { msg, reply: None });
    }

    /// What applying these declarations would do now; changes nothing.
    pub fn plan(
        &self,
        repositories: &[config::RepositoryDecl],
        pipelines: &[config::PipelineDecl],
    ) -> Result<Vec<crate::api::PlanItem>, Error> {
        Ok(self.prepare_apply(repositories, pipelines)?.plan)
    }

    /// Makes the pipelines what the declarations say, as `cutover apply` does: creates the
    /// declared repositories, creates or updates the declared pipelines (see the crate docs for
    /// what a changed definition does) and deletes the pipelines no longer declared, stopping
    /// their unfinished executions. Repositories that are no longer declared are kept (`keep`).
    /// Validates everything first, and writes the pipelines' rows and `also` (the caller's) in
    /// one transaction: when it fails, nothing changed, neither here nor by `also`.
    pub fn apply_with<T>(
        &mut self,
        repositories: &[config::RepositoryDecl],
        pipelines: &[config::PipelineDecl],
        also: impl FnOnce(&store::Tx<'_>) -> store::Result<T>,
    ) -> Result<(Vec<crate::api::PlanItem>, T), Error> {
        let prepared = self.prepare_apply(repositories, pipelines)?;
        init_repositories(&self.ctx, repositories)?;
        let ms = self.ctx.now().as_millis();
        let written = self.ctx.store.transaction(|tx| {
            write_apply(tx, repositories, &prepared, ms)?;
            also(tx)
        })?;
        let plan = prepared.plan.clone();
        self.applied(prepared);
        Ok((plan, written))
    }

    /// Validates the declarations and decides what applying them changes; changes nothing.
    fn prepare_apply(
        &self,
        repositories: &[config::RepositoryDecl],
        pipelines: &[config::PipelineDecl],
    ) -> Result<Prepared, Error> {
        let (defs, existing_repos) = validate(&self.ctx, repositories, pipelines)?;
        Ok(self
            .core
            .prepare_apply(&existing_repos, repositories, defs, |name| self.ctx.clone_url(name)))
    }

    /// Handles one message: writes its step, then performs its effects; when the store refuses
    /// the step, the core puts the state back (and takes it again later, if the store cannot be
    /// written for now).
    fn take(&mut self, msg: Msg) -> Result<Option<ExecutionRecord>, Error> {
        let now = self.ctx.now();
        let mut step: Step = self.core.handle(msg, now);
        let written = if step.write.is_empty() {
            Ok(())
        } else {
            self.ctx.store.transaction(|tx| write_step(tx, &step.write, now.as_millis()))
        };
        match written {
            Ok(()) => {
                let outcome = std::mem::replace(&mut step.outcome, Ok(None));
                let effects = self.core.written(step);
                self.perform(effects);
                outcome
            }
            Err(err) => {
                self.core.refused(step, err.is_write_failure(), now);
                Err(err.into())
            }
        }
    }

    /// Numbers the execution and starts it.
    fn start(
        &mut self,
        pipeline: String,
        revision: Revision,
        artifact: ArtifactId,
        polled: Option<String>,
    ) -> Result<String, Error> {
        if self.core.slot(&pipeline).is_none() {
            return Err(Error::NotFound(format!("no pipeline `{pipeline}`")));
        }
        let key = format!("ci.executions.{pipeline}");
        let n = self.ctx.store.transaction(|tx| tx.next_sequence(&key))?;
        let execution_id = format!("{pipeline}-{n}");
        let id = execution_id.clone();
        self.take(Msg::Start { pipeline, execution_id, revision, artifact, polled })?;
        Ok(id)
    }

    /// The apply's rows are written: the core takes the changes; a deleted pipeline's stopped
    /// executions are recorded and its actions cancelled.
    fn applied(&mut self, prepared: Prepared) {
        let now = self.ctx.now();
        let (write, effects) = self.core.applied(prepared, now);
        if !write.is_empty()
            && let Err(err) =
                self.ctx.store.transaction(|tx| write_step(tx, &write, now.as_millis()))
        {
            tracing::warn!("recording the executions of deleted pipelines: {err}");
        }
        self.perform(effects);
    }

    fn delete_repository(&mut self, name: &str) -> Result<(), Error> {
        let mut users = self.core.users_of(name);
        users.sort();
        if !users.is_empty() {
            return Err(Error::Conflict(format!(
                "repository `{name}` is the source of pipeline(s) {}; remove them from \
                 cutover.yaml and apply first, then delete the repository",
                users.join(", ")
            )));
        }
        if !self.ctx.store.transaction(|tx| tx.ci_repository_delete(name))? {
            return Err(Error::NotFound(format!("no repository `{name}`")));
        }
        Ok(())
    }

    fn perform(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Action { pipeline, action, effect, revision } => crate::jobs::perform(
                    &self.ctx,
                    &mut self.jobs,
                    &mut self.deploys,
                    &pipeline,
                    action,
                    effect,
                    revision,
                ),
                Effect::Poll { pipeline, url, branch } => {
                    tokio::spawn(crate::sources::poll(self.ctx.clone(), pipeline, url, branch));
                }
                Effect::RemoveMirror { pipeline } => {
                    let dir = self.ctx.mirror_dir(&pipeline);
                    tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir));
                    tracing::info!(pipeline, "pipeline deleted");
                }
                Effect::CollectGarbage { keep } => {
                    let ctx = self.ctx.clone();
                    tokio::task::spawn_blocking(move || collect_garbage(&ctx, keep));
                }
            }
        }
    }
}

fn msg_pipeline(msg: &Msg) -> &str {
    match msg {
        Msg::Report { pipeline, .. }
        | Msg::Command { pipeline, .. }
        | Msg::Decide { pipeline, .. }
        | Msg::Start { pipeline, .. }
        | Msg::Due { pipeline }
        | Msg::PollDone { pipeline } => pipeline,
    }
}

/// A step's rows, in the caller's transaction.
fn write_step(tx: &store::Tx<'_>, write: &core::Write, now: u64) -> store::Result<()> {
    if let Some((name, doc)) = &write.pipeline {
        crate::stored::put(tx, name, doc, now)?;
    }
    for row in &write.executions {
        tx.ci_execution_put(row)?;
    }
    if let Some((name, commit)) = &write.source {
        tx.ci_source_set(name, commit, now)?;
    }
    for row in &write.builds {
        tx.ci_build_put(row)?;
    }
    Ok(())
}

/// Deletes the artifacts past retention: every one but those of the retained executions and of
/// `keep` (the unfinished executions').
fn collect_garbage(ctx: &Ctx, mut keep: HashSet<String>) {
    // Without the retained executions nothing is known to be unused: delete nothing.
    let rows = match ctx.store.read(|tx| tx.ci_execution_retained(artifacts::KEEP_EXECUTIONS)) {
        Ok(rows) => rows,
        Err(err) => return tracing::warn!("retention skipped: {err}"),
    };
    for row in rows {
        if let Ok(rec) = serde_json::from_str::<ExecutionRecord>(&row.record) {
            keep.extend(rec.artifacts.iter().map(|(_, id)| id.as_str().to_string()));
        }
    }
    let removed = artifacts::collect_garbage(&ctx.cfg.data_dir, &keep, ctx.file_time());
    if removed > 0 {
        tracing::info!("removed {removed} artifacts past retention");
    }
}
