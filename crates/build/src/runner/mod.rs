//! The build runner: runs a parsed buildspec's phases for real, in one persistent shell, with
//! CodeBuild's transitions after a failure, its environment variables, a timeout that kills the
//! whole process tree, live logs and artifact collection.
//!
//! Transitions (reference §6.2), for a phase whose commands or `finally` failed:
//!
//! | phase fails | `on-failure` absent | `ABORT` | `CONTINUE` |
//! |---|---|---|---|
//! | install, pre_build | later phases and upload skipped | same | next phase runs |
//! | build | post_build runs, upload attempted | post_build and upload skipped | next phase runs |
//! | post_build | upload attempted | upload skipped | upload attempted |
//!
//! `RETRY…` re-runs the phase while its output matches the pattern; when retries are used up the
//! column "absent" applies. Any failure makes the build FAILED and sets
//! `CODEBUILD_BUILD_SUCCEEDING=0` from the failing command on (so `finally` and post_build see it).

mod log;
mod shell;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use model::Timestamp;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::artifacts::{self, ArtifactOutput};
use crate::buildspec::{Artifacts, BuildSpec, Command, OnFailure, Phase, PhaseType, looks_secret};
pub use log::{LogLine, LogSink, LogStats, LogStream, MemorySink, SECRET_LEN_MIN};
use log::{Logger, Masker, now};
use shell::{Outcome, Shell, find_program, single_quote};

/// CodeBuild's default build timeout (§6.2).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Caps on what a build may produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of log kept; later command output is dropped after one marker line.
    pub log_bytes_max: usize,
    /// Longest log line; the rest of a longer line is dropped and counted.
    pub log_line_bytes_max: usize,
    pub artifact_files_max: usize,
    pub artifact_bytes_max: u64,
    /// Bytes of `exported-variables` values in total (CodePipeline's output-variable limit).
    pub exported_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            log_bytes_max: 16 * 1024 * 1024,
            log_line_bytes_max: 16 * 1024,
            artifact_files_max: 100_000,
            artifact_bytes_max: 5 * 1024 * 1024 * 1024,
            exported_bytes_max: 122_880,
        }
    }
}

/// A variable the caller gives the build (a project's variables, a start-build override). These
/// win over `env.variables`, as CodeBuild's project and StartBuild variables do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildVariable {
    pub name: String,
    pub value: String,
    /// Masked in the log as `***` (names that look secret are masked anyway).
    pub secret: bool,
}

/// Everything about one build that is not in the buildspec.
#[derive(Clone, Debug)]
pub struct BuildContext {
    /// `CODEBUILD_BUILD_ID`, `<project>:<id>` in CodeBuild.
    pub build_id: String,
    /// `CODEBUILD_BUILD_NUMBER`, the project's build counter.
    pub build_number: u64,
    /// A fresh directory with the source checked out: `CODEBUILD_SRC_DIR`, where commands start
    /// and where artifact paths are resolved.
    pub source_dir: PathBuf,
    /// Where artifacts go: the primary artifact in `primary/`, each secondary one in
    /// `secondary/<identifier>/`. Created if missing; best outside `source_dir`.
    pub artifacts_dir: PathBuf,
    /// `CODEBUILD_SOURCE_VERSION`: what was asked for (a branch, a tag, a commit).
    pub source_version: Option<String>,
    /// `CODEBUILD_RESOLVED_SOURCE_VERSION`: the commit that was checked out.
    pub resolved_source_version: Option<String>,
    /// `CODEBUILD_SOURCE_REPO_URL`.
    pub source_repo_url: Option<String>,
    /// `CODEBUILD_INITIATOR`, such as `codepipeline/<pipeline>` or a user name.
    pub initiator: String,
    /// The environment the build starts from (the "image's" variables); nothing else of the
    /// calling process leaks in. [`host_env`] is a sensible default.
    pub base_env: Vec<(String, String)>,
    pub variables: Vec<BuildVariable>,
    pub timeout: Duration,
    pub limits: Limits,
    /// When it becomes `true` the build stops (processes killed, status STOPPED).
    pub stop: Option<watch::Receiver<bool>>,
}

impl BuildContext {
    /// A context with CodeBuild's defaults: 60-minute timeout, [`host_env`], default limits.
    pub fn new(
        build_id: impl Into<String>,
        source_dir: impl Into<PathBuf>,
        artifacts_dir: impl Into<PathBuf>,
    ) -> BuildContext {
        BuildContext {
            build_id: build_id.into(),
            build_number: 1,
            source_dir: source_dir.into(),
            artifacts_dir: artifacts_dir.into(),
            source_version: None,
            resolved_source_version: None,
            source_repo_url: None,
            initiator: "cutover".to_string(),
            base_env: host_env(),
            variables: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            limits: Limits::default(),
            stop: None,
        }
    }
}

/// The variables of this process a build needs to find tools and the Docker engine (`PATH`,
/// `HOME`, `LANG`, `DOCKER_HOST`…), and nothing else: a control plane's own secrets stay out.
/// The same base as every task and hook gets ([`runtime::host_env`]), plus what a build that
/// talks to Docker or clones over SSH needs.
pub fn host_env() -> Vec<(String, String)> {
    runtime::host_env(&[
        "SSH_AUTH_SOCK",
        "DOCKER_HOST",
        "DOCKER_CONFIG",
        "DOCKER_CERT_PATH",
        "DOCKER_TLS_VERIFY",
        "DOCKER_CONTEXT",
    ])
}

/// How a build ended (CodeBuild's `buildStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildStatus {
    Succeeded,
    Failed,
    /// Something went wrong in cutover, not in the build (the shell could not start).
    Fault,
    TimedOut,
    Stopped,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Succeeded => "SUCCEEDED",
            BuildStatus::Failed => "FAILED",
            BuildStatus::Fault => "FAULT",
            BuildStatus::TimedOut => "TIMED_OUT",
            BuildStatus::Stopped => "STOPPED",
        }
    }
}

/// How a phase ended. `ClientError` is a problem with what the buildspec asked for (no file
/// matches `artifacts.files`); `Skipped` (not in CodeBuild, which leaves such phases out) marks a
/// phase not run because an earlier one aborted the build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhaseStatus {
    Succeeded,
    Failed,
    ClientError,
    Fault,
    TimedOut,
    Stopped,
    Skipped,
}

impl PhaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseStatus::Succeeded => "SUCCEEDED",
            PhaseStatus::Failed => "FAILED",
            PhaseStatus::ClientError => "CLIENT_ERROR",
            PhaseStatus::Fault => "FAULT",
            PhaseStatus::TimedOut => "TIMED_OUT",
            PhaseStatus::Stopped => "STOPPED",
            PhaseStatus::Skipped => "SKIPPED",
        }
    }
}

/// Why a phase ended as it did (CodeBuild's phase `contexts`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseContext {
    /// `COMMAND_EXECUTION_ERROR`, `CLIENT_ERROR`, `BUILD_TIMED_OUT`, …
    pub status_code: String,
    pub message: String,
}

/// One phase of a finished build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseRecord {
    pub phase: PhaseType,
    pub status: PhaseStatus,
    /// `None` when the phase did not run.
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub duration: Duration,
    /// 1, more with `on-failure: RETRY`, 0 when it did not run.
    pub attempts: u32,
    pub contexts: Vec<PhaseContext>,
}

/// What a build did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildResult {
    pub status: BuildStatus,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    pub duration: Duration,
    /// INSTALL, PRE_BUILD, BUILD, POST_BUILD, UPLOAD_ARTIFACTS, always all five, in order.
    pub phases: Vec<PhaseRecord>,
    /// `env.exported-variables` as they were at the end of the last phase that ran; unset ones
    /// are left out.
    pub exported_variables: BTreeMap<String, String>,
    /// The primary artifact first; empty when none was collected.
    pub artifacts: Vec<ArtifactOutput>,
    pub log: LogStats,
}

impl BuildResult {
    pub fn phase(&self, phase: PhaseType) -> Option<&PhaseRecord> {
        self.phases.iter().find(|p| p.phase == phase)
    }

    pub fn primary_artifact(&self) -> Option<&ArtifactOutput> {
        self.artifacts.iter().find(|a| a.identifier.is_none())
    }
}

/// How a block of commands or a phase ended, internally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Ok,
    Failed,
    TimedOut,
    Stopped,
    Fault,
}

struct Runner<'b, S: LogSink> {
    spec: &'b BuildSpec,
    ctx: BuildContext,
    log: Logger<S>,
    shell: Option<Shell>,
    program: Option<PathBuf>,
    env: Vec<(String, String)>,
    deadline: Instant,
    succeeding: bool,
    phase: Option<PhaseType>,
    /// Output of the current phase attempt, kept for `RETRY-<regex>` (bounded).
    captured: Option<String>,
}

/// Bytes of a phase's output kept for matching a retry pattern.
const RETRY_CAPTURE_MAX: usize = 256 * 1024;

/// Runs `build` in `ctx.source_dir`. Never fails: what went wrong is in the result's statuses
/// and in the log.
pub async fn run(build: &BuildSpec, ctx: BuildContext, log: impl LogSink) -> BuildResult {
    let started = Instant::now();
    let started_at = now();
    let source_dir =
        std::path::absolute(&ctx.source_dir).unwrap_or_else(|_| ctx.source_dir.clone());
    let env = environment(build, &ctx, &source_dir, started_at);
    let secrets = secret_pairs(build, &ctx, &env);
    let (masker, short) = Masker::new(secrets.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut logger = Logger::new(log, masker, ctx.limits.log_bytes_max);
    for name in short {
        logger.system(
            None,
            &format!(
                "warning: secret {name} is shorter than {SECRET_LEN_MIN} characters and is not \
                 masked in this log"
            ),
        );
    }
    for v in ctx.variables.iter().filter(|v| is_builtin(&v.name)) {
        logger.system(None, &format!("warning: variable {} is reserved and was not set", v.name));
    }
    let deadline = started + ctx.timeout;
    let mut ctx = ctx;
    ctx.source_dir = source_dir;
    let mut runner = Runner {
        spec: build,
        program: find_program(build.env.shell),
        ctx,
        log: logger,
        shell: None,
        env,
        deadline,
        succeeding: true,
        phase: None,
        captured: None,
    };
    let mut result = runner.run_all().await;
    if let Some(shell) = runner.shell.take() {
        shell.close().await;
    }
    result.duration = started.elapsed();
    result.started_at = started_at;
    result.ended_at = now();
    runner.log.essential(
        None,
        &format!("Build {} in {}", result.status.as_str(), model::format_duration(result.duration)),
    );
    result.log = runner.log.stats();
    result
}

/// The variables the runner sets itself, each as `CODEBUILD_NAME` and `CUTOVER_NAME`.
const BUILTIN: [&str; 9] = [
    "BUILD_ID",
    "BUILD_NUMBER",
    "SRC_DIR",
    "SOURCE_VERSION",
    "RESOLVED_SOURCE_VERSION",
    "SOURCE_REPO_URL",
    "BUILD_SUCCEEDING",
    "START_TIME",
    "INITIATOR",
];

/// Whether `name` is one of the runner's own variables, which a caller cannot set. Other names
/// with these prefixes are the caller's to give (the pipeline's `CUTOVER_PIPELINE`,
/// `CUTOVER_COMMIT`, a secondary source's `CODEBUILD_SRC_DIR_name`…).
fn is_builtin(name: &str) -> bool {
    ["CODEBUILD_", "CUTOVER_"]
        .iter()
        .filter_map(|prefix| name.strip_prefix(prefix))
        .any(|rest| BUILTIN.contains(&rest))
}

/// The build's starting environment, later layers winning: the base, `env.variables`, the
/// caller's variables, then the built-in `CODEBUILD_*`/`CUTOVER_*` variables.
fn environment(
    build: &BuildSpec,
    ctx: &BuildContext,
    source_dir: &Path,
    started_at: Timestamp,
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &ctx.base_env {
        env.insert(k.clone(), v.clone());
    }
    for (k, v) in &build.env.variables {
        env.insert(k.clone(), v.clone());
    }
    for v in ctx.variables.iter().filter(|v| !is_builtin(&v.name)) {
        env.insert(v.name.clone(), v.value.clone());
    }
    let mut builtin = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            env.insert(format!("CODEBUILD_{name}"), value.clone());
            env.insert(format!("CUTOVER_{name}"), value);
        }
    };
    builtin("BUILD_ID", Some(ctx.build_id.clone()));
    builtin("BUILD_NUMBER", Some(ctx.build_number.to_string()));
    builtin("SRC_DIR", Some(source_dir.display().to_string()));
    builtin("SOURCE_VERSION", ctx.source_version.clone().or(ctx.resolved_source_version.clone()));
    builtin("RESOLVED_SOURCE_VERSION", ctx.resolved_source_version.clone());
    builtin("SOURCE_REPO_URL", ctx.source_repo_url.clone());
    builtin("BUILD_SUCCEEDING", Some("1".to_string()));
    builtin("START_TIME", Some(started_at.as_millis().to_string()));
    builtin("INITIATOR", Some(ctx.initiator.clone()));
    env.into_iter().collect()
}

/// Values to mask: variables the caller marked secret, the names a buildspec expects from a
/// secret store, and every variable whose name looks secret.
fn secret_pairs(
    build: &BuildSpec,
    ctx: &BuildContext,
    env: &[(String, String)],
) -> Vec<(String, String)> {
    let store: Vec<&str> = build.env.secret_names().collect();
    let mut out: Vec<(String, String)> = ctx
        .variables
        .iter()
        .filter(|v| v.secret)
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect();
    for (k, v) in env {
        if looks_secret(k) || store.contains(&k.as_str()) {
            out.push((k.clone(), v.clone()));
        }
    }
    out
}

impl<S: LogSink> Runner<'_, S> {
    async fn run_all(&mut self) -> BuildResult {
        let mut phases: Vec<PhaseRecord> = Vec::new();
        let mut status: Option<BuildStatus> = None;
        let mut failed = false;
        // Why later phases are skipped, once a phase aborted the build.
        let mut aborted: Option<String> = None;
        let mut upload = true;

        if let Err(err) = self.start_shell().await {
            let message = err.to_string();
            let at = now();
            self.log.essential(None, &format!("Could not start the build's shell: {message}"));
            for phase in PhaseType::ALL {
                let mut record = skipped(phase, "the build's shell could not start");
                if phase == PhaseType::Install {
                    record = PhaseRecord {
                        phase,
                        status: PhaseStatus::Fault,
                        started_at: Some(at),
                        ended_at: Some(at),
                        duration: Duration::ZERO,
                        attempts: 1,
                        contexts: vec![context("FAULT", &message)],
                    };
                }
                phases.push(record);
            }
            return self.result(BuildStatus::Fault, phases, BTreeMap::new(), Vec::new());
        }

        for phase_type in PhaseType::COMMAND_PHASES {
            if let Some(reason) = &aborted {
                phases.push(skipped(phase_type, reason));
                continue;
            }
            if status.is_some() {
                phases.push(skipped(phase_type, "the build had already ended"));
                continue;
            }
            let Some(phase) = self.spec.phases.get(phase_type) else {
                let at = now();
                phases.push(PhaseRecord {
                    phase: phase_type,
                    status: PhaseStatus::Succeeded,
                    started_at: Some(at),
                    ended_at: Some(at),
                    duration: Duration::ZERO,
                    attempts: 0,
                    contexts: Vec::new(),
                });
                continue;
            };
            let record = self.run_phase(phase_type, phase).await;
            match record.status {
                PhaseStatus::TimedOut => status = Some(BuildStatus::TimedOut),
                PhaseStatus::Stopped => status = Some(BuildStatus::Stopped),
                PhaseStatus::Fault => status = Some(BuildStatus::Fault),
                PhaseStatus::Failed => {
                    failed = true;
                    let explicit = match &phase.on_failure {
                        Some(OnFailure::Abort) => Some(true),
                        Some(OnFailure::Continue) => Some(false),
                        Some(OnFailure::Retry { .. }) | None => None,
                    };
                    let abort = match (explicit, phase_type) {
                        (Some(abort), _) => abort,
                        (None, PhaseType::Install | PhaseType::PreBuild) => true,
                        (None, _) => false,
                    };
                    if abort {
                        aborted = Some(format!("{phase_type} failed and aborted the build"));
                        upload = false;
                    }
                }
                _ => {}
            }
            phases.push(record);
        }

        let exported =
            if status.is_none() { self.capture_exported().await } else { BTreeMap::new() };

        let mut outputs = Vec::new();
        if let Some(reason) = &aborted {
            phases.push(skipped(PhaseType::UploadArtifacts, reason));
        } else if let Some(s) = status {
            phases.push(skipped(
                PhaseType::UploadArtifacts,
                &format!("the build ended {}", s.as_str()),
            ));
        } else if upload {
            let (record, collected) = self.upload().await;
            match record.status {
                PhaseStatus::Succeeded => {}
                PhaseStatus::TimedOut => status = Some(BuildStatus::TimedOut),
                PhaseStatus::Stopped => status = Some(BuildStatus::Stopped),
                PhaseStatus::Fault => status = Some(BuildStatus::Fault),
                _ => failed = true,
            }
            outputs = collected;
            phases.push(record);
        }
        let status =
            status.unwrap_or(if failed { BuildStatus::Failed } else { BuildStatus::Succeeded });
        self.result(status, phases, exported, outputs)
    }

    fn result(
        &self,
        status: BuildStatus,
        phases: Vec<PhaseRecord>,
        exported_variables: BTreeMap<String, String>,
        artifacts: Vec<ArtifactOutput>,
    ) -> BuildResult {
        BuildResult {
            status,
            started_at: Timestamp::ZERO,
            ended_at: Timestamp::ZERO,
            duration: Duration::ZERO,
            phases,
            exported_variables,
            artifacts,
            log: LogStats::default(),
        }
    }

    async fn start_shell(&mut self) -> Result<(), ShellError> {
        let Some(program) = self.program.clone() else {
            return Err(ShellError::NotFound(self.spec.env.shell.program().to_string()));
        };
        let mut env = self.env.clone();
        if !self.succeeding {
            for (k, v) in env.iter_mut() {
                if k == "CODEBUILD_BUILD_SUCCEEDING" || k == "CUTOVER_BUILD_SUCCEEDING" {
                    *v = "0".to_string();
                }
            }
        }
        let shell = Shell::spawn(
            &program,
            self.spec.env.shell,
            &self.ctx.source_dir,
            &env,
            self.ctx.limits.log_line_bytes_max,
        )
        .await
        .map_err(|source| ShellError::Spawn {
            program,
            dir: self.ctx.source_dir.clone(),
            source,
        })?;
        self.shell = Some(shell);
        Ok(())
    }

    async fn run_phase(&mut self, phase_type: PhaseType, phase: &Phase) -> PhaseRecord {
        self.phase = Some(phase_type);
        let started = Instant::now();
        let started_at = now();
        let mut attempts = 0;
        let retry = match &phase.on_failure {
            Some(OnFailure::Retry { count, pattern }) => regex::RegexBuilder::new(pattern)
                .size_limit(1 << 20)
                .build()
                .ok()
                .map(|r| (*count, r)),
            _ => None,
        };
        let (end, contexts) = loop {
            attempts += 1;
            self.log.system(Some(phase_type), &format!("Entering phase {phase_type}"));
            self.captured = retry.as_ref().map(|_| String::new());
            let (mut end, mut contexts) = self.run_block(&phase.commands).await;
            if matches!(end, End::Ok | End::Failed) {
                let (f_end, f_contexts) = self.run_block(&phase.finally).await;
                contexts.extend(f_contexts);
                if f_end != End::Ok {
                    end = f_end;
                }
            }
            let output = self.captured.take().unwrap_or_default();
            if end == End::Failed
                && let Some((count, re)) = &retry
                && attempts <= *count
                && re.is_match(&output)
            {
                self.log.essential(
                    Some(phase_type),
                    &format!(
                        "Phase complete: {phase_type} State: FAILED; retrying (attempt {} of {}) \
                         because the output matches /{}/",
                        attempts + 1,
                        count + 1,
                        re.as_str()
                    ),
                );
                continue;
            }
            break (end, contexts);
        };
        let status = match end {
            End::Ok => PhaseStatus::Succeeded,
            End::Failed => PhaseStatus::Failed,
            End::TimedOut => PhaseStatus::TimedOut,
            End::Stopped => PhaseStatus::Stopped,
            End::Fault => PhaseStatus::Fault,
        };
        self.log.essential(
            Some(phase_type),
            &format!("Phase complete: {phase_type} State: {}", status.as_str()),
        );
        for c in &contexts {
            self.log.essential(
                Some(phase_type),
                &format!("Phase context status code: {} Message: {}", c.status_code, c.message),
            );
        }
        PhaseRecord {
            phase: phase_type,
            status,
            started_at: Some(started_at),
            ended_at: Some(now()),
            duration: started.elapsed(),
            attempts,
            contexts,
        }
    }

    /// Runs commands until the first failure (the rest of the block is skipped, §6.2).
    async fn run_block(&mut self, commands: &[Command]) -> (End, Vec<PhaseContext>) {
        for command in commands {
            self.log
                .system(self.phase, &format!("Running command {}", shown_command(&command.text)));
            let outcome = self.exec(&command.text, true).await;
            // Contexts are kept with the build record, so a secret in a command stays out of it too.
            let shown = self.log.masker().mask(&shown_command(&command.text)).into_owned();
            let (end, context) = match outcome {
                Outcome::Exited(0) => continue,
                Outcome::Exited(code) => {
                    self.log.system(
                        self.phase,
                        &format!("Command did not exit successfully {shown} exit status {code}"),
                    );
                    (
                        End::Failed,
                        context(
                            "COMMAND_EXECUTION_ERROR",
                            &format!(
                                "Error while executing command: {shown}. Reason: exit status {code}"
                            ),
                        ),
                    )
                }
                Outcome::ShellExited(code) => {
                    self.log.system(
                        self.phase,
                        &format!(
                            "The build's shell exited (status {code}) while running {shown}; later \
                             commands run in a new shell, without the variables and directory set \
                             so far. Avoid `exit` and `set -e` at the top level of a command."
                        ),
                    );
                    if let Some(old) = self.shell.take() {
                        old.close().await;
                    }
                    if code != 0 {
                        self.succeeding = false;
                    }
                    if let Err(err) = self.start_shell().await {
                        return (End::Fault, vec![context("FAULT", &err.to_string())]);
                    }
                    if code == 0 {
                        continue;
                    }
                    (
                        End::Failed,
                        context(
                            "COMMAND_EXECUTION_ERROR",
                            &format!(
                                "Error while executing command: {shown}. Reason: the shell exited with status {code}"
                            ),
                        ),
                    )
                }
                Outcome::TimedOut => {
                    let message = format!(
                        "Build timed out after {}; the build's processes were killed",
                        model::format_duration(self.ctx.timeout)
                    );
                    self.log.essential(self.phase, &message);
                    return (End::TimedOut, vec![context("BUILD_TIMED_OUT", &message)]);
                }
                Outcome::Stopped => {
                    let message = "Build stopped; the build's processes were killed";
                    self.log.essential(self.phase, message);
                    return (End::Stopped, vec![context("BUILD_STOPPED", message)]);
                }
                Outcome::Fault(message) => {
                    self.log.essential(self.phase, &message);
                    return (End::Fault, vec![context("FAULT", &message)]);
                }
            };
            if end == End::Failed && self.succeeding {
                self.succeeding = false;
                let _ = self
                    .exec("export CODEBUILD_BUILD_SUCCEEDING=0 CUTOVER_BUILD_SUCCEEDING=0", false)
                    .await;
            }
            return (end, vec![context]);
        }
        (End::Ok, Vec::new())
    }

    /// Runs one command in the shell; `logged` output goes to the log (and the retry capture).
    async fn exec(&mut self, command: &str, logged: bool) -> Outcome {
        let Some(shell) = self.shell.as_mut() else {
            return Outcome::Fault("the build's shell is not running".to_string());
        };
        let phase = self.phase;
        let log = &mut self.log;
        let captured = &mut self.captured;
        shell
            .run(command, self.deadline, &mut self.ctx.stop, |line| {
                if logged {
                    if let Some(c) = captured.as_mut()
                        && c.len() < RETRY_CAPTURE_MAX
                    {
                        c.push_str(&line);
                        c.push('\n');
                    }
                    log.output(phase, &line);
                }
            })
            .await
    }

    /// Runs an internal command whose result is written to a private file, and reads the file.
    async fn exec_capture(&mut self, script: &str, max: usize) -> Option<Vec<u8>> {
        let dir =
            std::env::temp_dir().join(format!("cutover-build-{:032x}", rand::random::<u128>()));
        let made = {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(0o700).create(&dir)
        };
        if made.is_err() {
            return None;
        }
        let file = dir.join("out");
        let command = format!("{{ {script}; }} > {}", single_quote(&file.display().to_string()));
        let outcome = self.exec(&command, false).await;
        let bytes = match outcome {
            Outcome::Exited(0) => read_bounded(&file, max),
            _ => None,
        };
        let _ = std::fs::remove_dir_all(&dir);
        bytes
    }

    /// `exported-variables`, read from the shell after the last phase (§6.1: frozen then).
    async fn capture_exported(&mut self) -> BTreeMap<String, String> {
        let names = &self.spec.env.exported_variables;
        let mut out = BTreeMap::new();
        if names.is_empty() || self.shell.is_none() {
            return out;
        }
        let script: String = names
            .iter()
            .map(|n| {
                format!("if [ \"${{{n}+set}}\" = set ]; then printf '%s=%s\\0' {n} \"${n}\"; fi; ")
            })
            .collect();
        let max = self.ctx.limits.exported_bytes_max;
        let Some(bytes) = self.exec_capture(script.trim_end_matches("; "), max + 1).await else {
            self.log.system(
                None,
                "warning: could not read the exported variables from the build's shell",
            );
            return out;
        };
        if bytes.len() > max {
            self.log.system(
                None,
                &format!("warning: the exported variables are over {max} bytes in total; none were exported"),
            );
            return out;
        }
        let mut refused = Vec::new();
        for record in bytes.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            let record = String::from_utf8_lossy(record);
            let Some((name, value)) = record.split_once('=') else { continue };
            // CodeBuild does not export secrets (§6.1); a copy of one is still one.
            if self.log.masker().is_secret(value) {
                self.log.system(
                    None,
                    &format!("warning: exported variable {name} holds a secret value and was not exported"),
                );
                refused.push(name.to_string());
                continue;
            }
            out.insert(name.to_string(), value.to_string());
        }
        for n in names {
            if !out.contains_key(n) && !refused.contains(n) {
                self.log
                    .system(None, &format!("exported variable {n} is not set; it is not exported"));
            }
        }
        out
    }

    /// `name`, expanded in the build's shell as CodeBuild does.
    async fn artifact_name(&mut self, raw: &str) -> String {
        let escaped: String = raw
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        match self.exec_capture(&format!("printf '%s' \"{escaped}\""), 4096).await {
            Some(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).into_owned(),
            _ => raw.to_string(),
        }
    }

    async fn upload(&mut self) -> (PhaseRecord, Vec<ArtifactOutput>) {
        let phase = PhaseType::UploadArtifacts;
        self.phase = Some(phase);
        let started = Instant::now();
        let started_at = now();
        let mut outputs = Vec::new();
        let record = |status: PhaseStatus, contexts: Vec<PhaseContext>| PhaseRecord {
            phase,
            status,
            started_at: Some(started_at),
            ended_at: Some(now()),
            duration: started.elapsed(),
            attempts: 1,
            contexts,
        };
        let Some(spec) = self.spec.artifacts.clone() else {
            return (record(PhaseStatus::Succeeded, Vec::new()), outputs);
        };
        self.log.system(Some(phase), "Entering phase UPLOAD_ARTIFACTS");
        let mut jobs: Vec<(Option<String>, Artifacts, PathBuf)> =
            vec![(None, spec.clone(), self.ctx.artifacts_dir.join("primary"))];
        for (id, a) in &spec.secondary {
            jobs.push((
                Some(id.clone()),
                a.clone(),
                self.ctx.artifacts_dir.join("secondary").join(id),
            ));
        }
        let skip: Vec<PathBuf> = std::fs::create_dir_all(&self.ctx.artifacts_dir)
            .ok()
            .and_then(|()| std::fs::canonicalize(&self.ctx.artifacts_dir).ok())
            .into_iter()
            .collect();
        for (identifier, artifact, dest) in jobs {
            let name = match &artifact.name {
                Some(raw) => Some(self.artifact_name(raw).await),
                None => None,
            };
            let src = self.ctx.source_dir.clone();
            let limits = artifacts::Limits {
                files_max: self.ctx.limits.artifact_files_max,
                bytes_max: self.ctx.limits.artifact_bytes_max,
                entries_max: 1_000_000,
            };
            let skip = skip.clone();
            let job_spec = artifact.clone();
            let job_dest = dest.clone();
            let job = tokio::task::spawn_blocking(move || {
                artifacts::collect(&src, &job_spec, &job_dest, &skip, &limits)
            });
            let mut stop = self.ctx.stop.clone();
            let outcome = tokio::select! {
                r = job => r.map_err(|e| format!("artifact collection failed: {e}")),
                () = tokio::time::sleep_until(self.deadline) => {
                    let message = format!(
                        "Build timed out after {} while collecting artifacts",
                        model::format_duration(self.ctx.timeout)
                    );
                    self.log.essential(Some(phase), &message);
                    return (record(PhaseStatus::TimedOut, vec![context("BUILD_TIMED_OUT", &message)]), outputs);
                }
                () = shell::stopped(&mut stop) => {
                    let message = "Build stopped while collecting artifacts";
                    self.log.essential(Some(phase), message);
                    return (record(PhaseStatus::Stopped, vec![context("BUILD_STOPPED", message)]), outputs);
                }
            };
            let label = identifier
                .as_deref()
                .map(|i| format!("secondary artifact {i}"))
                .unwrap_or_else(|| "artifact".into());
            if let Ok(collected) = &outcome {
                for w in &collected.warnings {
                    self.log.system(Some(phase), w);
                }
            }
            match outcome.map(|c| c.result) {
                Ok(Ok((files, bytes))) => {
                    self.log.system(
                        Some(phase),
                        &format!("Collected {} files ({bytes} bytes) for the {label}", files.len()),
                    );
                    outputs.push(ArtifactOutput { identifier, name, dir: dest, files, bytes });
                }
                Ok(Err(message)) => {
                    let message = format!("{label}: {message}");
                    self.log.essential(
                        Some(phase),
                        "Phase complete: UPLOAD_ARTIFACTS State: CLIENT_ERROR",
                    );
                    self.log.essential(
                        Some(phase),
                        &format!("Phase context status code: CLIENT_ERROR Message: {message}"),
                    );
                    return (
                        record(PhaseStatus::ClientError, vec![context("CLIENT_ERROR", &message)]),
                        outputs,
                    );
                }
                Err(message) => {
                    self.log.essential(Some(phase), &message);
                    return (record(PhaseStatus::Fault, vec![context("FAULT", &message)]), outputs);
                }
            }
        }
        self.log.essential(Some(phase), "Phase complete: UPLOAD_ARTIFACTS State: SUCCEEDED");
        (record(PhaseStatus::Succeeded, Vec::new()), outputs)
    }
}

fn skipped(phase: PhaseType, reason: &str) -> PhaseRecord {
    PhaseRecord {
        phase,
        status: PhaseStatus::Skipped,
        started_at: None,
        ended_at: None,
        duration: Duration::ZERO,
        attempts: 0,
        contexts: vec![context("SKIPPED", reason)],
    }
}

/// Why the build's shell could not start: a FAULT of the build.
#[derive(Debug, thiserror::Error)]
enum ShellError {
    #[error("`{0}` was not found in /bin, /usr/bin or PATH; install it or set env.shell")]
    NotFound(String),
    #[error("{} in {}: {source}", program.display(), dir.display())]
    Spawn { program: PathBuf, dir: PathBuf, source: std::io::Error },
}

fn context(status_code: &str, message: &str) -> PhaseContext {
    PhaseContext { status_code: status_code.to_string(), message: message.to_string() }
}

/// A command as the log shows it: long scripts are cut, so one line stays one line.
fn shown_command(text: &str) -> String {
    const SHOWN_MAX: usize = 1000;
    let one_line = text.trim_end().replace('\n', "\\n");
    if one_line.chars().count() > SHOWN_MAX {
        let head: String = one_line.chars().take(SHOWN_MAX).collect();
        format!("{head}…")
    } else {
        one_line
    }
}

fn read_bounded(path: &Path, max: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut out = Vec::new();
    file.take(max as u64).read_to_end(&mut out).ok()?;
    Some(out)
}
