//! cutover's pipelines (issue 5): repositories cutover hosts over git's smart HTTP protocol,
//! watched repositories polled at an interval, GitHub/Gitea push webhooks, and the driver that
//! runs one `pipeline::Pipeline` machine per declared pipeline, performing its effects with
//! `build` (CodeBuild's buildspec) and the deployments of the loop that hosts them.
//!
//! # What the control plane does with it
//!
//! - `cutover up`: [`Pipelines::hosted`] with the data directory, the API's public URL and token,
//!   the store and the way into the engine's loop ([`LoopSender`]); the engine owns the returned
//!   [`Shell`] and hands it every [`Request`] its channel brings and a tick when
//!   [`Shell::next_deadline`] comes, performs what its deploy actions ask ([`Shell::deploys`]) as
//!   its own commands, and tells it when a deployment has started and ended. Nest [`router`] into the API server (its `/v1/webhooks/…`
//!   route must stay reachable without the API token: it is authenticated by its HMAC signature;
//!   every other route checks the token itself). Without a control plane (the crate's tests),
//!   [`Pipelines::start`] runs the same shell in a small loop of its own.
//! - `cutover apply`: [`Shell::plan`] for the plan, then [`Shell::apply_with`] with the file's
//!   `repositories` and `pipelines` and the control plane's own writes, in one transaction.
//!   Pipelines that are no longer declared are deleted (their unfinished executions are stopped
//!   and abandoned, their history kept); hosted repositories that are no longer declared are
//!   kept, and deleted only by `DELETE /v1/repos/{name}` once no pipeline uses them.
//!
//! # Rules
//!
//! - **State.** Every pipeline's definition and machine live in SQLite as one versioned document
//!   (`store::documents`, kind `pipeline`; a `ci_pipelines` row of an older cutover is read as
//!   its version 0); it is written after every step and before the step's effects are
//!   performed, so `kill -9` loses nothing: the next start restores every machine and calls
//!   `resume`, which starts again every action that was in progress. A build in progress is run
//!   again (same run number, a new build id); a deployment that was started is adopted by the id
//!   recorded in `ci_jobs`, not started twice. A push recorded by the hook but not yet turned into
//!   an execution is picked up at the next start.
//! - **One loop.** The pipelines' state (every machine, what is due, the running jobs) has one
//!   owner, the [`Shell`], run by its host's loop (the control plane's engine); its decisions
//!   are pure (`core::Core`: a message and the time in, a step out: the rows to write, then the
//!   effects to perform). HTTP handlers, jobs, polls and the push scanner send it requests and
//!   wait for its answer where they need one: a webhook or a manual start is answered once its
//!   execution is stored, an approval once it is written, and `apply` is one call into the shell
//!   from its decision to its commit. Every time is `store::clock`'s (builds' included). The
//!   loop sleeps until its next deadline (an action's timeout, a poll, retention, a retry of what
//!   the store refused) or until a request arrives.
//! - **A full disk.** Nothing that is already true outside is dropped when the store refuses to
//!   record it: an action's report and the build record it brings (kept by the loop) and a
//!   push (kept in its repository) wait until they are written; a deployment is started
//!   only with its id's record (the standalone host writes that record until it is stored); an
//!   API write is answered 503 and changes nothing.
//! - **Executions** are `{pipeline}-{n}` (unique across pipelines, so `approvals approve ID`
//!   needs no pipeline name). Their long-term history is `ci_executions`, one row per execution,
//!   updated after every step that touched it.
//! - **A changed definition** (`apply`) keeps the history: an idle pipeline gets a new machine at
//!   once (version + 1); one with unfinished executions keeps running the old definition until
//!   they finish, then switches (`update_pending` in the API meanwhile). Retrying a stage of an
//!   execution that ran under an older definition is refused, as in CodePipeline.
//! - **Sources.** A push to a hosted repository is recorded by its `post-receive` hook in
//!   `repos/NAME.git/pushes/` and starts every pipeline whose source is that repository and whose
//!   branch rules take the pushed branch (one execution per pushed branch and pipeline). A URL
//!   source is polled with `git ls-remote` every `poll_interval` (every minute when it has
//!   neither a poll interval nor a webhook); the first poll of a new pipeline starts it when the
//!   branch exists, as CodePipeline does when a pipeline is created; a changed head is fetched
//!   into `mirrors/PIPELINE.git` and starts an execution.
//! - **Artifacts** are stored content-addressed in `artifacts/sha256-<hex>` (the hash of a
//!   manifest of paths, modes and content hashes). Retention keeps the artifacts of every
//!   unfinished execution and of the newest [`artifacts::KEEP_EXECUTIONS`] executions of each
//!   pipeline; the rest are deleted (after a 10-minute grace period).
//! - **Builds** run in `work/<build-id>/src`, a copy of the first input artifact; other inputs
//!   are copied to `work/<build-id>/in/<artifact>` and named by `CODEBUILD_SRC_DIR_<artifact>`.
//!   The first declared output is the buildspec's primary artifact, the others its secondary
//!   artifacts of the same identifier. Logs go to `builds/<build-id>.log` and are kept; build
//!   ids are `{pipeline}-b{n}`. Besides CodeBuild's variables a build gets `CUTOVER_PIPELINE`,
//!   `CUTOVER_EXECUTION_ID`, `CUTOVER_COMMIT`, `CUTOVER_BRANCH`.
//! - **Deployments** are the host's ([`DeployRequest`]): the action reads its files in a job,
//!   the host starts the deployment in its loop and records its id under the action run
//!   (`ci_jobs`) in the deployment's own transaction, and says when it ended; the action
//!   succeeds only when the deployment ends `Succeeded`. Stopping an execution stops its running
//!   deployment (cutover's difference from AWS; it rolls back as the group says).

pub mod api;
mod artifacts;
mod core;
mod driver;
#[doc(hidden)]
pub mod fuzzing;
mod git;
mod githttp;
mod jobs;
mod legacy;
mod push_event;
pub mod registry;
mod routes;
mod sources;
mod stored;
mod webhook;

use std::path::PathBuf;
use std::sync::Arc;

pub use artifacts::KEEP_EXECUTIONS;
pub use driver::{Deployments, LoopSender, Pipelines, Request, Shell};
pub use routes::router;

/// How `Pipelines` is set up.
#[derive(Clone, Debug)]
pub struct PipelinesConfig {
    pub data_dir: PathBuf,
    /// The API's URL as clients see it, like `http://127.0.0.1:7070` (`clone_url` is
    /// `{api_url}/git/NAME.git`).
    pub api_url: String,
    /// The API token; `None` allows every request (a loopback-only API).
    pub token: Option<String>,
}

/// A file of a deployment, as `cutover deploy --task-definition FILE` reads one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileText {
    /// For diagnostics, like `source/taskdef.json`.
    pub name: String,
    pub text: String,
    /// The directory relative paths in the file are resolved against (the artifact's).
    pub base_dir: Option<String>,
}

/// How a deployment stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeploymentState {
    InProgress,
    Succeeded,
    Failed { message: String },
    Stopped { message: String },
}

/// What a deploy action deploys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deployment {
    /// The `deploy` action: register the task definition as a new revision, write it into the
    /// AppSpec's `<TASK_DEFINITION>`, and start a deployment in `group` (`application/group`).
    Files { group: String, task_definition: FileText, appspec: FileText, description: String },
    /// The ECS action: a new revision of the service's task definition with these containers'
    /// images, deployed through the service's group.
    Images { service: String, images: Vec<(String, String)> },
}

/// What the deploy actions ask of their host's deployments ([`Shell::deploys`]), in its loop;
/// the host answers with [`Shell::deployment_started`] and [`Shell::deployment_ended`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeployRequest {
    /// Start this deployment for the action run `job`, and record its id under `job` (`ci_jobs`)
    /// before anything else, in the deployment's own transaction where the host stores both: a
    /// restart then adopts it instead of starting another.
    Start { job: String, deployment: Deployment },
    /// Stop it, rolling back as its group says (a pipeline that is stopped takes its release
    /// back); one that has ended is left as it is.
    Stop { id: String },
    /// Say when it has ended: an action run adopted after a restart follows it.
    Follow { id: String },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Git(#[from] git::GitError),
    #[error(transparent)]
    Artifact(#[from] artifacts::ArtifactError),
    #[error(transparent)]
    InvalidArtifactId(#[from] pipeline::InvalidArtifactId),
}

pub(crate) type Shared = Arc<driver::Ctx>;
