//! Performing a machine's `StartAction` and `CancelAction`: builds with `builder::run`, deploys
//! by asking the host's deployments ([`crate::DeployRequest`]) and following them to their end,
//! approvals (nothing to do until someone decides).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pipeline::{ActionKind, ArtifactId, Effect, Input, Revision};
use tokio::sync::watch;

use crate::artifacts::ArtifactError;
use crate::driver::Request;
use crate::driver::{Ctx, Job, Jobs, job_key};
use crate::{DeployRequest, Deployment, DeploymentState, FileText, api, artifacts, registry};
use pipeline::definition::{ActionDecl, ActionKind as Settings};

/// Largest template file read from an artifact.
const TEMPLATE_BYTES_MAX: u64 = 1024 * 1024;

/// One run of one action.
#[derive(Clone, Debug)]
pub struct Run {
    pipeline: String,
    execution_id: String,
    stage: String,
    action: String,
    run: u32,
}

impl Run {
    fn key(&self) -> String {
        job_key(&self.pipeline, &self.execution_id, &self.stage, &self.action, self.run)
    }

    fn result(
        &self,
        succeeded: bool,
        message: String,
        outputs: Vec<(String, ArtifactId)>,
    ) -> Input {
        Input::ActionResult {
            execution_id: self.execution_id.clone(),
            stage: self.stage.clone(),
            action: self.action.clone(),
            run: self.run,
            succeeded,
            message,
            outputs,
            external_ref: None,
        }
    }

    fn started(&self, external_ref: String) -> Input {
        Input::ActionStarted {
            execution_id: self.execution_id.clone(),
            stage: self.stage.clone(),
            action: self.action.clone(),
            run: self.run,
            external_ref,
        }
    }
}

/// The deploy action runs the shell follows, and what it asks of its host's deployments. A run is
/// `starting` from its `StartAction` until its host says the deployment started (or why not),
/// then `following` its deployment until that ends.
#[derive(Default)]
pub struct Deploys {
    /// By the run's job key: its files are being read, or its host is asked to start it.
    starting: HashMap<String, Run>,
    /// By deployment id.
    following: HashMap<String, Run>,
    /// What the host is asked and has not taken yet ([`crate::Shell::deploys`]).
    pub outbox: Vec<DeployRequest>,
}

impl Deploys {
    /// Whether the run is already starting or following a deployment (an idempotent start).
    fn has_run(&self, key: &str) -> bool {
        self.starting.contains_key(key) || self.following.values().any(|r| r.key() == key)
    }

    /// What the run's job found: a deployment to adopt, one to start, or why it cannot. Returns
    /// the report for the run's machine, if any. A run no longer starting (it was cancelled
    /// meanwhile) starts nothing.
    pub fn prepared(&mut self, job: String, step: DeployStep) -> Option<(String, Input)> {
        let run = self.starting.get(&job)?.clone();
        match step {
            DeployStep::Adopt(id) => {
                self.starting.remove(&job);
                self.following.insert(id.clone(), run.clone());
                self.outbox.push(DeployRequest::Follow { id: id.clone() });
                Some((run.pipeline.clone(), run.started(id)))
            }
            DeployStep::Start(deployment) => {
                self.outbox.push(DeployRequest::Start { job, deployment });
                None
            }
            DeployStep::Failed(message) => {
                self.starting.remove(&job);
                Some((run.pipeline.clone(), run.result(false, message, vec![])))
            }
        }
    }

    /// The host started the run's deployment (its id) or says why it could not; the report for
    /// the run's machine. A deployment started for a run cancelled meanwhile is stopped.
    pub fn started(
        &mut self,
        job: &str,
        started: Result<String, String>,
    ) -> Option<(String, Input)> {
        match (self.starting.remove(job), started) {
            (Some(run), Ok(id)) => {
                self.following.insert(id.clone(), run.clone());
                Some((run.pipeline.clone(), run.started(id)))
            }
            (Some(run), Err(message)) => {
                Some((run.pipeline.clone(), run.result(false, message, vec![])))
            }
            (None, Ok(id)) => {
                self.outbox.push(DeployRequest::Stop { id });
                None
            }
            (None, Err(_)) => None,
        }
    }

    /// Deployment `id` ended: the report for the run that follows it, if one does.
    pub fn ended(&mut self, id: &str, state: &DeploymentState) -> Option<(String, Input)> {
        let message = match state {
            DeploymentState::InProgress => return None,
            DeploymentState::Succeeded => format!("deployment {id} Succeeded"),
            DeploymentState::Failed { message } => format!("deployment {id} Failed: {message}"),
            DeploymentState::Stopped { message } => format!("deployment {id} Stopped: {message}"),
        };
        let run = self.following.remove(id)?;
        let succeeded = *state == DeploymentState::Succeeded;
        Some((run.pipeline.clone(), run.result(succeeded, message, vec![])))
    }

    /// Cancels a deploy action run: its deployment is stopped (its end is the run's result); a
    /// run whose deployment has not started yet is cancelled at once. Without a run in this
    /// process (a restart), the deployment it recorded is stopped and followed.
    fn cancel(&mut self, ctx: &Ctx, r: Run) -> Option<Input> {
        let key = r.key();
        if let Some(id) = self.following.iter().find(|(_, run)| run.key() == key).map(|(id, _)| id)
        {
            self.outbox.push(DeployRequest::Stop { id: id.clone() });
            return None;
        }
        if self.starting.remove(&key).is_some() {
            return Some(r.result(false, "cancelled".into(), vec![]));
        }
        match ctx.store.read(|tx| tx.ci_job_get(&key)) {
            Ok(Some(id)) => {
                self.outbox.push(DeployRequest::Stop { id: id.clone() });
                self.outbox.push(DeployRequest::Follow { id: id.clone() });
                self.following.insert(id, r);
                None
            }
            Ok(None) => Some(r.result(false, "cancelled".into(), vec![])),
            Err(err) => {
                tracing::error!(job = key, "cannot read the deployment to stop: {err}");
                Some(r.result(
                    false,
                    format!("cancelled; its deployment is unknown: {err}"),
                    vec![],
                ))
            }
        }
    }
}

/// What a deploy action's job found, for the loop.
#[derive(Debug)]
pub enum DeployStep {
    /// The run started this deployment before a restart: follow it, start no other.
    Adopt(String),
    /// Ask the host to start this one.
    Start(Deployment),
    /// The action fails with this message.
    Failed(String),
}

/// Starts a machine's `StartAction` as a job (once: a run already running is left alone; an
/// approval waits for a decision) or cancels its `CancelAction`.
pub fn perform(
    ctx: &Arc<Ctx>,
    jobs: &mut Jobs,
    deploys: &mut Deploys,
    pipeline: &str,
    action: Option<Box<ActionDecl>>,
    effect: Effect,
    revision: Revision,
) {
    match effect {
        Effect::StartAction {
            execution_id,
            stage,
            action: name,
            run,
            kind,
            inputs,
            outputs,
            ..
        } => {
            let r = Run { pipeline: pipeline.into(), execution_id, stage, action: name, run };
            let key = r.key();
            if jobs.0.contains_key(&key) || deploys.has_run(&key) || kind == ActionKind::Approval {
                return; // already running (idempotent start), or waits for a decision
            }
            let Some(adef) = action else {
                let msg =
                    format!("the pipeline's definition has no action {}/{}", r.stage, r.action);
                return report(ctx, &r, r.result(false, msg, vec![]));
            };
            if !matches!(adef.kind, Settings::Build(_)) {
                deploys.starting.insert(key, r.clone());
                let c = ctx.clone();
                tokio::spawn(async move {
                    let step = prepare_deploy(&c, &r, &adef, &inputs, &revision).await;
                    c.send(Request::Deploy { job: r.key(), step }).await;
                });
                return;
            }
            let (stop_tx, stop_rx) = watch::channel(false);
            let c = ctx.clone();
            let handle = tokio::spawn(async move {
                let ended = build(&c, &r, &adef, &inputs, &outputs, revision, stop_rx).await;
                c.job_done(r.key()).await;
                if let Some((input, record)) = ended {
                    c.report_build(&r.pipeline, input, record.as_ref().map(build_row)).await;
                }
            });
            jobs.0.insert(key, Job { abort: handle.abort_handle(), stop: Some(stop_tx) });
        }
        Effect::CancelAction { execution_id, stage, action, run, kind } => {
            let r = Run { pipeline: pipeline.into(), execution_id, stage, action, run };
            if let Some(job) = jobs.0.get(&r.key()) {
                // A build stopped reports its own end.
                if let Some(stop) = &job.stop {
                    let _ = stop.send(true);
                }
                return;
            }
            let cancelled = if kind.is_deploy() {
                deploys.cancel(ctx, r.clone())
            } else if kind != ActionKind::Approval {
                Some(r.result(false, "cancelled".into(), vec![]))
            } else {
                None
            };
            if let Some(input) = cancelled {
                report(ctx, &r, input);
            }
        }
        _ => {}
    }
}

/// Reports to the run's machine through the loop (it is not taken in the middle of a step).
fn report(ctx: &Arc<Ctx>, r: &Run, input: Input) {
    let (c, pipeline) = (ctx.clone(), r.pipeline.clone());
    tokio::spawn(async move { c.report(&pipeline, input).await });
}

// ---------------------------------------------------------------------------------------------
// Builds.

fn now_ms(ctx: &Ctx) -> u64 {
    ctx.now().as_millis()
}

/// The build's stored record; the loop writes it with the report that brings it.
fn build_row(b: &api::Build) -> store::CiBuildRow {
    store::CiBuildRow {
        id: b.id.clone(),
        pipeline: b.pipeline.clone(),
        execution_id: b.execution_id.clone(),
        status: b.status.clone(),
        body: serde_json::to_string(b).unwrap_or_default(),
        started_at: b.started_at,
        ended_at: b.ended_at,
    }
}

/// How a build ended: the action's result, and the build's final record (none when no build
/// could be allocated).
type BuildEnd = (Input, Option<api::Build>);

pub fn log_path(data_dir: &Path, build_id: &str) -> PathBuf {
    data_dir.join("builds").join(format!("{build_id}.log"))
}

async fn build(
    ctx: &Arc<Ctx>,
    r: &Run,
    adef: &ActionDecl,
    inputs: &[(String, ArtifactId)],
    outputs: &[String],
    revision: Revision,
    stop: watch::Receiver<bool>,
) -> Option<BuildEnd> {
    let Settings::Build(settings) = &adef.kind else { return None };
    let key = format!("ci.builds.{}", r.pipeline);
    let n = match ctx.store.transaction(|tx| tx.next_sequence(&key)) {
        Ok(n) => n,
        Err(err) => {
            let message = format!("cannot allocate a build: {err}");
            return Some((r.result(false, message, vec![]), None));
        }
    };
    let id = format!("{}-b{n}", r.pipeline);
    let mut record = api::Build {
        id: id.clone(),
        pipeline: r.pipeline.clone(),
        execution_id: r.execution_id.clone(),
        stage: r.stage.clone(),
        action: r.action.clone(),
        build_number: n,
        commit: revision.commit.clone(),
        status: "IN_PROGRESS".into(),
        started_at: now_ms(ctx),
        ended_at: None,
        phases: Vec::new(),
        message: None,
        exported_variables: Vec::new(),
    };
    ctx.report_build(&r.pipeline, r.started(id.clone()), Some(build_row(&record))).await;
    let data_dir = ctx.data_dir().to_path_buf();
    let log_file = log_path(&data_dir, &id);
    let mut log = match std::fs::OpenOptions::new().create(true).append(true).open(&log_file) {
        Ok(f) => f,
        Err(err) => {
            let msg = format!("cannot open the build log: {err}");
            return Some(finish_fail(ctx, r, record, msg));
        }
    };
    let work = data_dir.join("work").join(&id);
    let prepared = match prepare(&data_dir, &work, inputs, &settings.buildspec).await {
        Ok(prepared) => prepared,
        Err(err) => {
            let msg = err.to_string();
            let _ = writeln!(log, "[cutover] {msg}");
            return Some(finish_fail(ctx, r, record, msg));
        }
    };
    let mut build = builder::BuildContext::new(id.clone(), work.join("src"), work.join("out"));
    build.build_number = n;
    build.source_version = Some(revision.branch.clone()).filter(|b| !b.is_empty());
    build.resolved_source_version = Some(revision.commit.clone()).filter(|c| !c.is_empty());
    build.initiator = format!("codepipeline/{}", r.pipeline);
    build.timeout = settings.timeout;
    build.stop = Some(stop);
    build.variables = build_variables(&settings.env, prepared.variables, r, &revision);
    let sink = move |line: &builder::LogLine| {
        let _ = writeln!(log, "{}", line.render());
    };
    let result = builder::run(&prepared.spec, build, sink).await;
    record_result(&mut record, &result);
    if result.status != builder::BuildStatus::Succeeded {
        let failed = result
            .phases
            .iter()
            .find(|p| p.status != builder::PhaseStatus::Succeeded)
            .map(|p| format!(" in {}", p.phase))
            .unwrap_or_default();
        let msg = format!("build {id} {}{failed}", result.status.as_str());
        record.message = Some(msg.clone());
        let _ = std::fs::remove_dir_all(&work);
        return Some((r.result(false, msg, vec![]), Some(record)));
    }
    let stored = match store_outputs(
        &data_dir,
        ctx.file_time(),
        &result,
        outputs,
        &settings.buildspec,
    )
    .await
    {
        Ok(stored) => stored,
        Err(OutputFailure::Missing(msg)) => {
            record.message = Some(msg.clone());
            record.status = "FAILED".into();
            return Some((r.result(false, msg, vec![]), Some(record)));
        }
        Err(OutputFailure::Storing { name, err }) => {
            let msg = format!("storing `{name}`: {err}");
            return Some(finish_fail(ctx, r, record, msg));
        }
    };
    let _ = std::fs::remove_dir_all(&work);
    Some((r.result(true, format!("build {id} SUCCEEDED"), stored), Some(record)))
}

/// A build's workspace, ready to run.
struct Prepared {
    spec: builder::BuildSpec,
    /// `CODEBUILD_SRC_DIR_<artifact>` for every input after the first.
    variables: Vec<(String, String)>,
}

/// Why a build's workspace could not be prepared; the build fails with this message.
#[derive(Debug, thiserror::Error)]
enum PrepareError {
    #[error("preparing the workspace: a build needs an input artifact (the source)")]
    NoInput,
    #[error("preparing the workspace: {0}")]
    Copy(#[from] ArtifactError),
    #[error("preparing the workspace: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
    #[error("{buildspec} not found in the source: {source}")]
    NoBuildspec { buildspec: String, source: ReadError },
    #[error("{buildspec} is invalid: {errors}")]
    InvalidBuildspec { buildspec: String, errors: config::Errors },
}

/// Copies the inputs into the build's workspace (`src` holds the first, `in/<artifact>` the
/// others) and reads the buildspec from the first.
async fn prepare(
    data_dir: &Path,
    work: &Path,
    inputs: &[(String, ArtifactId)],
    buildspec: &str,
) -> Result<Prepared, PrepareError> {
    let variables = {
        let (work, data_dir) = (work.to_path_buf(), data_dir.to_path_buf());
        let inputs = inputs.to_vec();
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(&work);
            let Some((_, first)) = inputs.first() else { return Err(PrepareError::NoInput) };
            artifacts::copy_tree(&artifacts::dir(&data_dir, first.as_str()), &work.join("src"))?;
            let mut extra = Vec::new();
            for (name, aid) in inputs.iter().skip(1) {
                let d = work.join("in").join(name);
                artifacts::copy_tree(&artifacts::dir(&data_dir, aid.as_str()), &d)?;
                extra.push((format!("CODEBUILD_SRC_DIR_{name}"), d.to_string_lossy().into_owned()));
            }
            Ok(extra)
        })
        .await??
    };
    let text = read_capped(&work.join("src").join(buildspec))
        .map_err(|source| PrepareError::NoBuildspec { buildspec: buildspec.into(), source })?;
    let spec = builder::parse_buildspec(buildspec, &text)
        .map_err(|errors| PrepareError::InvalidBuildspec { buildspec: buildspec.into(), errors })?
        .value;
    Ok(Prepared { spec, variables })
}

/// The build's variables: the action's `env`, the inputs' directories, then cutover's own.
fn build_variables(
    env: &std::collections::BTreeMap<String, String>,
    inputs: Vec<(String, String)>,
    r: &Run,
    revision: &Revision,
) -> Vec<builder::BuildVariable> {
    let mut vars: Vec<(String, String)> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.extend(inputs);
    vars.push(("CUTOVER_PIPELINE".into(), r.pipeline.clone()));
    vars.push(("CUTOVER_EXECUTION_ID".into(), r.execution_id.clone()));
    vars.push(("CUTOVER_COMMIT".into(), revision.commit.clone()));
    vars.push(("CUTOVER_BRANCH".into(), revision.branch.clone()));
    vars.into_iter()
        .map(|(name, value)| builder::BuildVariable { name, value, secret: false })
        .collect()
}

/// The build's status, end, phases and exported variables into its record.
fn record_result(record: &mut api::Build, result: &builder::BuildResult) {
    record.status = result.status.as_str().to_string();
    record.ended_at = Some(result.ended_at.as_millis());
    record.phases = result
        .phases
        .iter()
        .map(|p| api::BuildPhase {
            phase: p.phase.to_string(),
            status: p.status.as_str().to_string(),
            started_at: p.started_at.map(|t| t.as_millis()),
            ended_at: p.ended_at.map(|t| t.as_millis()),
            duration_ms: p.duration.as_millis() as u64,
            contexts: p
                .contexts
                .iter()
                .map(|c| format!("{}: {}", c.status_code, c.message))
                .collect(),
        })
        .collect();
    record.exported_variables = result.exported_variables.clone().into_iter().collect();
}

enum OutputFailure {
    /// The buildspec produced no artifact for a declared output.
    Missing(String),
    /// An artifact could not be stored.
    Storing { name: String, err: crate::Error },
}

/// Stores the declared outputs: the first is the primary artifact, the others secondary ones
/// by identifier.
async fn store_outputs(
    data_dir: &Path,
    now: std::time::SystemTime,
    result: &builder::BuildResult,
    outputs: &[String],
    buildspec: &str,
) -> Result<Vec<(String, ArtifactId)>, OutputFailure> {
    let mut stored = Vec::new();
    for (i, name) in outputs.iter().enumerate() {
        let art = if i == 0 {
            result.primary_artifact()
        } else {
            result.artifacts.iter().find(|a| a.identifier.as_deref() == Some(name.as_str()))
        };
        let Some(art) = art else {
            return Err(OutputFailure::Missing(format!(
                "the action declares output artifact `{name}` but {buildspec} produced no {}",
                if i == 0 {
                    "primary artifact (add `artifacts: files:`)".to_string()
                } else {
                    format!("secondary artifact `{name}`")
                }
            )));
        };
        let (dir, dd) = (art.dir.clone(), data_dir.to_path_buf());
        let res = tokio::task::spawn_blocking(move || {
            let staged = artifacts::staging(&dd)?;
            artifacts::copy_tree(&dir, &staged)?;
            Ok(ArtifactId::new(artifacts::store(&dd, &staged, now)?)?)
        })
        .await
        .unwrap_or_else(|e| Err(crate::Error::Internal(e.to_string())));
        match res {
            Ok(aid) => stored.push((name.clone(), aid)),
            Err(err) => return Err(OutputFailure::Storing { name: name.clone(), err }),
        }
    }
    Ok(stored)
}

fn finish_fail(ctx: &Ctx, r: &Run, mut record: api::Build, msg: String) -> BuildEnd {
    record.status = "FAILED".into();
    record.ended_at = Some(now_ms(ctx));
    record.message = Some(msg.clone());
    (r.result(false, msg, vec![]), Some(record))
}

/// A file of an artifact that could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is larger than {TEMPLATE_BYTES_MAX} bytes", path.display())]
    TooLarge { path: PathBuf },
}

fn read_capped(path: &Path) -> Result<String, ReadError> {
    let io = |source| ReadError::Io { path: path.to_path_buf(), source };
    if std::fs::metadata(path).map_err(io)?.len() > TEMPLATE_BYTES_MAX {
        return Err(ReadError::TooLarge { path: path.to_path_buf() });
    }
    std::fs::read_to_string(path).map_err(io)
}

/// Why a deploy action could not start its deployment; the action fails with this message.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("artifact `{0}` is not an input of this action")]
    NotAnInput(String),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("imageDetail.json not found in artifact `{artifact}`: {source}")]
    NoImageDetail { artifact: String, source: ReadError },
    #[error("{file} is invalid: {errors}")]
    Invalid { file: String, errors: config::Errors },
    #[error(
        "{file} has no container image `<{placeholder}>` to replace with {image} from `{artifact}`"
    )]
    NoPlaceholder { file: String, placeholder: String, image: String, artifact: String },
    #[error(transparent)]
    Pin(#[from] registry::PinError),
    #[error("the ECS action needs an input artifact")]
    NoInput,
    #[error("not a deploy action")]
    NotADeploy,
}

// ---------------------------------------------------------------------------------------------
// Deployments.

fn artifact_dir(
    ctx: &Ctx,
    inputs: &[(String, ArtifactId)],
    name: &str,
) -> Result<PathBuf, StartError> {
    inputs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, id)| artifacts::dir(ctx.data_dir(), id.as_str()))
        .ok_or_else(|| StartError::NotAnInput(name.to_string()))
}

/// The deployment the action asks for, from its templates and images, each image pinned to the
/// digest its tag names now ([`registry::pin`]).
async fn deployment_of(
    ctx: &Ctx,
    r: &Run,
    adef: &ActionDecl,
    inputs: &[(String, ArtifactId)],
    revision: &Revision,
) -> Result<Deployment, StartError> {
    let description = format!(
        "pipeline {} execution {} commit {}",
        r.pipeline,
        r.execution_id,
        revision.commit.get(..12).unwrap_or(&revision.commit)
    );
    match &adef.kind {
        Settings::Deploy(pipeline::definition::DeployAction {
            deployment_group,
            task_definition_template_artifact: task_definition_artifact,
            task_definition_template_path: task_definition_path,
            appspec_template_artifact: appspec_artifact,
            appspec_template_path: appspec_path,
            image_placeholders: images,
        }) => {
            let td_dir = artifact_dir(ctx, inputs, task_definition_artifact)?;
            let td_name = format!("{task_definition_artifact}/{task_definition_path}");
            let mut td_text = read_capped(&td_dir.join(task_definition_path))?;
            let parsed = config::parse_task_definition(&td_name, &td_text)
                .map_err(|errors| StartError::Invalid { file: td_name.clone(), errors })?;
            let mut td = parsed.value;
            for pipeline::definition::ImagePlaceholder { artifact, placeholder } in images {
                let dir = artifact_dir(ctx, inputs, artifact)?;
                let detail_path = dir.join("imageDetail.json");
                let text = read_capped(&detail_path).map_err(|source| {
                    StartError::NoImageDetail { artifact: artifact.clone(), source }
                })?;
                let file = format!("{artifact}/imageDetail.json");
                let detail = builder::parse_image_detail(&file, &text)
                    .map_err(|errors| StartError::Invalid { file, errors })?
                    .value;
                let bare = placeholder.trim_start_matches('<').trim_end_matches('>');
                if config::substitute_image_placeholder(&mut td, bare, &detail.image_uri) == 0 {
                    return Err(StartError::NoPlaceholder {
                        file: td_name,
                        placeholder: bare.to_string(),
                        image: detail.image_uri,
                        artifact: artifact.clone(),
                    });
                }
                let image =
                    registry::pin(&detail.image_uri, Path::new(registry::DOCKER_CERTS_D)).await?;
                // The text keeps the file's own layout (and line numbers for the deployment's
                // diagnostics); URIs are checked not to need JSON escaping, and a pinned one
                // adds only a checked digest.
                td_text = td_text.replace(&format!("<{bare}>"), &image);
            }
            let ap_dir = artifact_dir(ctx, inputs, appspec_artifact)?;
            let appspec_text = read_capped(&ap_dir.join(appspec_path))?;
            Ok(Deployment::Files {
                group: deployment_group.to_string(),
                task_definition: FileText {
                    name: td_name,
                    text: td_text,
                    base_dir: Some(td_dir.to_string_lossy().into_owned()),
                },
                appspec: FileText {
                    name: format!("{appspec_artifact}/{appspec_path}"),
                    text: appspec_text,
                    base_dir: Some(ap_dir.to_string_lossy().into_owned()),
                },
                description,
            })
        }
        Settings::DeployEcs(pipeline::definition::DeployEcsAction {
            service,
            image_definitions,
            ..
        }) => {
            let (name, _) = inputs.first().ok_or(StartError::NoInput)?;
            let dir = artifact_dir(ctx, inputs, name)?;
            let text = read_capped(&dir.join(image_definitions))?;
            let file = format!("{name}/{image_definitions}");
            let defs = builder::parse_image_definitions(&file, &text)
                .map_err(|errors| StartError::Invalid { file, errors })?
                .value;
            let mut images = Vec::with_capacity(defs.len());
            for d in defs {
                let image =
                    registry::pin(&d.image_uri, Path::new(registry::DOCKER_CERTS_D)).await?;
                images.push((d.name, image));
            }
            Ok(Deployment::Images { service: service.clone(), images })
        }
        _ => Err(StartError::NotADeploy),
    }
}

/// What a deploy action run does: adopt the deployment it started before a restart (recorded
/// under its key), else start the one its files describe. When whether it started one cannot be
/// known, it starts none (a second would race the first) and fails.
async fn prepare_deploy(
    ctx: &Ctx,
    r: &Run,
    adef: &ActionDecl,
    inputs: &[(String, ArtifactId)],
    revision: &Revision,
) -> DeployStep {
    let key = r.key();
    match ctx.store.read(|tx| tx.ci_job_get(&key)) {
        Ok(Some(id)) => DeployStep::Adopt(id),
        Ok(None) => match deployment_of(ctx, r, adef, inputs, revision).await {
            Ok(deployment) => DeployStep::Start(deployment),
            Err(err) => DeployStep::Failed(err.to_string()),
        },
        Err(err) => DeployStep::Failed(format!(
            "cannot tell whether this action started a deployment: {err}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> Run {
        Run {
            pipeline: "web".into(),
            execution_id: "web-1".into(),
            stage: "Deploy".into(),
            action: "deploy".into(),
            run: 1,
        }
    }

    fn files() -> Deployment {
        let file = |name: &str| FileText { name: name.into(), text: "{}".into(), base_dir: None };
        Deployment::Files {
            group: "web/web-prod".into(),
            task_definition: file("source/taskdef.json"),
            appspec: file("source/appspec.yaml"),
            description: "pipeline web".into(),
        }
    }

    #[test]
    fn a_deploy_run_asks_for_its_deployment_once_follows_it_and_ends_with_it() {
        let mut deploys = Deploys::default();
        let (r, key) = (run(), run().key());
        deploys.starting.insert(key.clone(), r.clone());
        assert!(deploys.has_run(&key), "a second StartAction of the run starts nothing");
        assert!(deploys.prepared(key.clone(), DeployStep::Start(files())).is_none());
        assert_eq!(
            deploys.outbox,
            [DeployRequest::Start { job: key.clone(), deployment: files() }]
        );

        let started = deploys.started(&key, Ok("d-1".into()));
        assert!(
            matches!(&started, Some((p, Input::ActionStarted { external_ref, .. })) if p == "web" && external_ref == "d-1"),
            "{started:?}"
        );
        assert!(deploys.has_run(&key), "it follows d-1 now");
        assert!(deploys.ended("d-1", &DeploymentState::InProgress).is_none());
        let ended =
            deploys.ended("d-1", &DeploymentState::Stopped { message: "rolled back".into() });
        assert!(
            matches!(&ended, Some((_, Input::ActionResult { succeeded: false, message, .. })) if message == "deployment d-1 Stopped: rolled back"),
            "{ended:?}"
        );
        assert!(deploys.ended("d-1", &DeploymentState::Succeeded).is_none(), "reported once");
        assert!(!deploys.has_run(&key));
    }

    #[test]
    fn a_deployment_started_for_a_run_no_longer_starting_is_stopped() {
        let mut deploys = Deploys::default();
        let key = run().key();
        deploys.starting.insert(key.clone(), run());
        let _ = deploys.prepared(key.clone(), DeployStep::Start(files()));
        let _ = deploys.started(&key, Err("group busy".into()));
        deploys.outbox.clear();
        assert!(deploys.started(&key, Ok("d-2".into())).is_none());
        assert_eq!(deploys.outbox, [DeployRequest::Stop { id: "d-2".into() }]);
    }

    #[test]
    fn an_adopted_deployment_is_followed_and_its_run_reported_started() {
        let mut deploys = Deploys::default();
        let key = run().key();
        deploys.starting.insert(key.clone(), run());
        let adopted = deploys.prepared(key.clone(), DeployStep::Adopt("d-7".into()));
        assert!(matches!(adopted, Some((_, Input::ActionStarted { .. }))), "{adopted:?}");
        assert_eq!(deploys.outbox, [DeployRequest::Follow { id: "d-7".into() }]);
        assert!(deploys.ended("d-7", &DeploymentState::Succeeded).is_some());
    }
}
