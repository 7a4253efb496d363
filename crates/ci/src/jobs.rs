//! Performing a machine's `StartAction` and `CancelAction`: builds with `build::run`, deploys
//! through the [`Deployer`](crate::Deployer), approvals (nothing to do until someone decides).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pipeline::{ActionKind, ArtifactId, Effect, Input, Revision};
use tokio::sync::watch;

use crate::artifacts::ArtifactError;
use crate::driver::{Inner, Job, job_key};
use crate::{DeployError, DeploymentState, FileText, api, artifacts};
use pipeline::definition::{ActionDecl, ActionKind as Settings, PipelineDecl};

/// How often a running deployment is asked how it stands.
const DEPLOY_POLL: Duration = Duration::from_millis(500);
/// Consecutive failures to read a deployment's state before the action fails.
const DEPLOY_POLL_ERRORS_MAX: u32 = 60;
/// Largest template file read from an artifact.
const TEMPLATE_BYTES_MAX: u64 = 1024 * 1024;

/// One run of one action.
#[derive(Clone, Debug)]
struct Run {
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

pub fn perform(
    inner: &Arc<Inner>,
    pipeline: &str,
    def: &PipelineDecl,
    effect: Effect,
    revision: Revision,
) {
    match effect {
        Effect::StartAction { execution_id, stage, action, run, kind, inputs, outputs, .. } => {
            let r = Run { pipeline: pipeline.into(), execution_id, stage, action, run };
            let key = r.key();
            let mut jobs = inner.jobs.lock().unwrap_or_else(|p| p.into_inner());
            if jobs.contains_key(&key) || kind == ActionKind::Approval {
                return; // already running (idempotent start), or waits for a decision
            }
            let Some(adef) = def.action(&r.stage, &r.action).cloned() else {
                let i = inner.clone();
                let msg =
                    format!("the pipeline's definition has no action {}/{}", r.stage, r.action);
                tokio::spawn(async move { i.report(&r.pipeline, r.result(false, msg, vec![])) });
                return;
            };
            let (stop_tx, stop_rx) = watch::channel(false);
            let i = inner.clone();
            let handle = tokio::spawn(async move {
                let k = r.key();
                let pipeline = r.pipeline.clone();
                let input = match &adef.kind {
                    Settings::Build(_) => {
                        build(&i, &r, &adef, &inputs, &outputs, revision, stop_rx).await
                    }
                    _ => deploy(&i, &r, &adef, &inputs, revision).await,
                };
                i.jobs.lock().unwrap_or_else(|p| p.into_inner()).remove(&k);
                if let Some(input) = input {
                    i.report(&pipeline, input);
                }
            });
            jobs.insert(key, Job { abort: handle.abort_handle(), stop: Some(stop_tx) });
        }
        Effect::CancelAction { execution_id, stage, action, run, kind } => {
            let r = Run { pipeline: pipeline.into(), execution_id, stage, action, run };
            let key = r.key();
            let running = {
                let jobs = inner.jobs.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(job) = jobs.get(&key) {
                    if let Some(stop) = &job.stop {
                        let _ = stop.send(true);
                    }
                    true
                } else {
                    false
                }
            };
            let i = inner.clone();
            tokio::spawn(async move {
                if kind.is_deploy() {
                    let id = i.store.read(|tx| tx.ci_job_get(&key)).unwrap_or_else(|err| {
                        tracing::error!(job = key, "cannot read the deployment to stop: {err}");
                        None
                    });
                    if let Some(id) = id {
                        if let Err(err) = i.deployer.stop(&id).await {
                            tracing::warn!(
                                deployment = id,
                                "stopping the deployment failed: {err}"
                            );
                        }
                        if !running {
                            // Nobody polls it since a restart: wait for its end here.
                            let input = wait_deployment(&i, &r, &id).await;
                            return i.report(&r.pipeline, input);
                        }
                        return;
                    }
                }
                if !running && kind != ActionKind::Approval {
                    i.report(&r.pipeline, r.result(false, "cancelled".into(), vec![]));
                }
            });
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Builds.

fn now_ms(inner: &Inner) -> u64 {
    inner.now().as_millis()
}

/// Records the build; a full disk delays it until the record is written.
async fn put_build(inner: &Inner, b: &api::Build) {
    let row = store::CiBuildRow {
        id: b.id.clone(),
        pipeline: b.pipeline.clone(),
        execution_id: b.execution_id.clone(),
        status: b.status.clone(),
        body: serde_json::to_string(b).unwrap_or_default(),
        started_at: b.started_at,
        ended_at: b.ended_at,
    };
    let what = format!("the record of build {}", b.id);
    // Any other store error is logged there; the build itself goes on.
    let _ = inner.write_until_stored(&what, |tx| tx.ci_build_put(&row)).await;
}

pub fn log_path(data_dir: &Path, build_id: &str) -> PathBuf {
    data_dir.join("builds").join(format!("{build_id}.log"))
}

async fn build(
    inner: &Arc<Inner>,
    r: &Run,
    adef: &ActionDecl,
    inputs: &[(String, ArtifactId)],
    outputs: &[String],
    revision: Revision,
    stop: watch::Receiver<bool>,
) -> Option<Input> {
    let Settings::Build(settings) = &adef.kind else { return None };
    let key = format!("ci.builds.{}", r.pipeline);
    let n = match inner.store.transaction(|tx| tx.next_sequence(&key)) {
        Ok(n) => n,
        Err(err) => {
            return Some(r.result(false, format!("cannot allocate a build: {err}"), vec![]));
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
        started_at: now_ms(inner),
        ended_at: None,
        phases: Vec::new(),
        message: None,
        exported_variables: Vec::new(),
    };
    put_build(inner, &record).await;
    inner.report(&r.pipeline, r.started(id.clone()));
    let data_dir = inner.data_dir().to_path_buf();
    let log_file = log_path(&data_dir, &id);
    let mut log = match std::fs::OpenOptions::new().create(true).append(true).open(&log_file) {
        Ok(f) => f,
        Err(err) => {
            let msg = format!("cannot open the build log: {err}");
            return Some(finish_fail(inner, r, &mut record, msg).await);
        }
    };
    let work = data_dir.join("work").join(&id);
    let prepared = match prepare(&data_dir, &work, inputs, &settings.buildspec).await {
        Ok(prepared) => prepared,
        Err(err) => {
            let msg = err.to_string();
            let _ = writeln!(log, "[cutover] {msg}");
            return Some(finish_fail(inner, r, &mut record, msg).await);
        }
    };
    let mut ctx = build::BuildContext::new(id.clone(), work.join("src"), work.join("out"));
    ctx.build_number = n;
    ctx.source_version = Some(revision.branch.clone()).filter(|b| !b.is_empty());
    ctx.resolved_source_version = Some(revision.commit.clone()).filter(|c| !c.is_empty());
    ctx.initiator = format!("codepipeline/{}", r.pipeline);
    ctx.timeout = settings.timeout;
    ctx.stop = Some(stop);
    ctx.variables = build_variables(&settings.env, prepared.variables, r, &revision);
    let sink = move |line: &build::LogLine| {
        let _ = writeln!(log, "{}", line.render());
    };
    let result = build::run(&prepared.spec, ctx, sink).await;
    record_result(&mut record, &result);
    if result.status != build::BuildStatus::Succeeded {
        let failed = result
            .phases
            .iter()
            .find(|p| p.status != build::PhaseStatus::Succeeded)
            .map(|p| format!(" in {}", p.phase))
            .unwrap_or_default();
        let msg = format!("build {id} {}{failed}", result.status.as_str());
        record.message = Some(msg.clone());
        put_build(inner, &record).await;
        let _ = std::fs::remove_dir_all(&work);
        return Some(r.result(false, msg, vec![]));
    }
    let stored =
        match store_outputs(&data_dir, inner.file_time(), &result, outputs, &settings.buildspec)
            .await
        {
            Ok(stored) => stored,
            Err(OutputFailure::Missing(msg)) => {
                record.message = Some(msg.clone());
                record.status = "FAILED".into();
                put_build(inner, &record).await;
                return Some(r.result(false, msg, vec![]));
            }
            Err(OutputFailure::Storing { name, err }) => {
                let msg = format!("storing `{name}`: {err}");
                return Some(finish_fail(inner, r, &mut record, msg).await);
            }
        };
    put_build(inner, &record).await;
    let _ = std::fs::remove_dir_all(&work);
    Some(r.result(true, format!("build {id} SUCCEEDED"), stored))
}

/// A build's workspace, ready to run.
struct Prepared {
    spec: build::BuildSpec,
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
    InvalidBuildspec { buildspec: String, errors: spec::Errors },
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
    let spec = build::parse_buildspec(buildspec, &text)
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
) -> Vec<build::BuildVariable> {
    let mut vars: Vec<(String, String)> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.extend(inputs);
    vars.push(("CUTOVER_PIPELINE".into(), r.pipeline.clone()));
    vars.push(("CUTOVER_EXECUTION_ID".into(), r.execution_id.clone()));
    vars.push(("CUTOVER_COMMIT".into(), revision.commit.clone()));
    vars.push(("CUTOVER_BRANCH".into(), revision.branch.clone()));
    vars.into_iter()
        .map(|(name, value)| build::BuildVariable { name, value, secret: false })
        .collect()
}

/// The build's status, end, phases and exported variables into its record.
fn record_result(record: &mut api::Build, result: &build::BuildResult) {
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
    result: &build::BuildResult,
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

async fn finish_fail(inner: &Inner, r: &Run, record: &mut api::Build, msg: String) -> Input {
    record.status = "FAILED".into();
    record.ended_at = Some(now_ms(inner));
    record.message = Some(msg.clone());
    put_build(inner, record).await;
    r.result(false, msg, vec![])
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
    Invalid { file: String, errors: spec::Errors },
    #[error(
        "{file} has no container image `<{placeholder}>` to replace with {image} from `{artifact}`"
    )]
    NoPlaceholder { file: String, placeholder: String, image: String, artifact: String },
    #[error("the ECS action needs an input artifact")]
    NoInput,
    #[error("not a deploy action")]
    NotADeploy,
    #[error(transparent)]
    Deploy(#[from] DeployError),
}

// ---------------------------------------------------------------------------------------------
// Deployments.

fn artifact_dir(
    inner: &Inner,
    inputs: &[(String, ArtifactId)],
    name: &str,
) -> Result<PathBuf, StartError> {
    inputs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, id)| artifacts::dir(inner.data_dir(), id.as_str()))
        .ok_or_else(|| StartError::NotAnInput(name.to_string()))
}

/// Reads the templates and images and starts the deployment.
async fn start_deployment(
    inner: &Arc<Inner>,
    r: &Run,
    adef: &ActionDecl,
    inputs: &[(String, ArtifactId)],
    revision: &Revision,
) -> Result<String, StartError> {
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
            let td_dir = artifact_dir(inner, inputs, task_definition_artifact)?;
            let td_name = format!("{task_definition_artifact}/{task_definition_path}");
            let mut td_text = read_capped(&td_dir.join(task_definition_path))?;
            let parsed = spec::parse_task_definition(&td_name, &td_text)
                .map_err(|errors| StartError::Invalid { file: td_name.clone(), errors })?;
            let mut td = parsed.value;
            for pipeline::definition::ImagePlaceholder { artifact, placeholder } in images {
                let dir = artifact_dir(inner, inputs, artifact)?;
                let detail_path = dir.join("imageDetail.json");
                let text = read_capped(&detail_path).map_err(|source| {
                    StartError::NoImageDetail { artifact: artifact.clone(), source }
                })?;
                let file = format!("{artifact}/imageDetail.json");
                let detail = build::parse_image_detail(&file, &text)
                    .map_err(|errors| StartError::Invalid { file, errors })?
                    .value;
                let bare = placeholder.trim_start_matches('<').trim_end_matches('>');
                if spec::substitute_image_placeholder(&mut td, bare, &detail.image_uri) == 0 {
                    return Err(StartError::NoPlaceholder {
                        file: td_name,
                        placeholder: bare.to_string(),
                        image: detail.image_uri,
                        artifact: artifact.clone(),
                    });
                }
                // The text keeps the file's own layout (and line numbers for the deployer's
                // diagnostics); URIs are checked not to need JSON escaping.
                td_text = td_text.replace(&format!("<{bare}>"), &detail.image_uri);
            }
            let ap_dir = artifact_dir(inner, inputs, appspec_artifact)?;
            let appspec_text = read_capped(&ap_dir.join(appspec_path))?;
            let group = deployment_group.to_string();
            Ok(inner
                .deployer
                .deploy(
                    &group,
                    FileText {
                        name: td_name,
                        text: td_text,
                        base_dir: Some(td_dir.to_string_lossy().into_owned()),
                    },
                    FileText {
                        name: format!("{appspec_artifact}/{appspec_path}"),
                        text: appspec_text,
                        base_dir: Some(ap_dir.to_string_lossy().into_owned()),
                    },
                    description,
                )
                .await?)
        }
        Settings::DeployEcs(pipeline::definition::DeployEcsAction {
            service,
            image_definitions,
            ..
        }) => {
            let (name, _) = inputs.first().ok_or(StartError::NoInput)?;
            let dir = artifact_dir(inner, inputs, name)?;
            let text = read_capped(&dir.join(image_definitions))?;
            let file = format!("{name}/{image_definitions}");
            let defs = build::parse_image_definitions(&file, &text)
                .map_err(|errors| StartError::Invalid { file, errors })?
                .value;
            let images = defs.into_iter().map(|d| (d.name, d.image_uri)).collect();
            Ok(inner.deployer.deploy_image_definitions(service, images).await?)
        }
        _ => Err(StartError::NotADeploy),
    }
}

async fn deploy(
    inner: &Arc<Inner>,
    r: &Run,
    adef: &ActionDecl,
    inputs: &[(String, ArtifactId)],
    revision: Revision,
) -> Option<Input> {
    let key = r.key();
    // A restart adopts the deployment this run already started; when that cannot be known, none
    // is started (a second one would race the first).
    let existing = match inner.store.read(|tx| tx.ci_job_get(&key)) {
        Ok(existing) => existing,
        Err(err) => {
            let message = format!("cannot tell whether this action started a deployment: {err}");
            return Some(r.result(false, message, vec![]));
        }
    };
    let id = match existing {
        Some(id) => id,
        None => match start_deployment(inner, r, adef, inputs, &revision).await {
            Ok(id) => {
                // Written before anything else of the action, whatever the disk says: without
                // it, a restart would start the deployment again.
                let what = format!("deployment {id} of {key}");
                let now = now_ms(inner);
                let _ = inner.write_until_stored(&what, |tx| tx.ci_job_put(&key, &id, now)).await;
                id
            }
            Err(err) => return Some(r.result(false, err.to_string(), vec![])),
        },
    };
    inner.report(&r.pipeline, r.started(id.clone()));
    Some(wait_deployment(inner, r, &id).await)
}

async fn wait_deployment(inner: &Arc<Inner>, r: &Run, id: &str) -> Input {
    let mut errors = 0;
    loop {
        match inner.deployer.deployment_state(id).await {
            Ok(DeploymentState::InProgress) => errors = 0,
            Ok(DeploymentState::Succeeded) => {
                return r.result(true, format!("deployment {id} Succeeded"), vec![]);
            }
            Ok(DeploymentState::Failed { message }) => {
                return r.result(false, format!("deployment {id} Failed: {message}"), vec![]);
            }
            Ok(DeploymentState::Stopped { message }) => {
                return r.result(false, format!("deployment {id} Stopped: {message}"), vec![]);
            }
            Err(err) => {
                errors += 1;
                if errors >= DEPLOY_POLL_ERRORS_MAX {
                    return r.result(false, format!("deployment {id}: {err}"), vec![]);
                }
            }
        }
        tokio::time::sleep(DEPLOY_POLL).await;
    }
}
