//! cutover's pipelines (issue 5): repositories cutover hosts over git's smart HTTP protocol,
//! watched repositories polled at an interval, GitHub/Gitea push webhooks, and the driver that
//! runs one `pipeline::Pipeline` machine per declared pipeline, performing its effects with
//! `build` (CodeBuild's buildspec) and a [`Deployer`] the control plane implements.
//!
//! # What the control plane does with it
//!
//! - `cutover up`: [`Pipelines::hosted`] with the data directory, the API's public URL and token, a
//!   [`Deployer`], the store and the way into the engine's loop ([`LoopSender`]); the engine owns
//!   the returned [`Shell`] and hands it every [`Request`] its channel brings and a tick when
//!   [`Shell::next_deadline`] comes. Nest [`router`] into the API server (its `/v1/webhooks/…`
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
//!   owner, the [`Shell`], run by its host's loop (the control plane's engine); its decisions are pure (`core::Core`: a message and the time in, a
//!   step out: the rows to write, then the effects to perform). HTTP handlers, jobs, polls and
//!   the push scanner send it requests and wait for its answer where they need one: a webhook or
//!   a manual start is answered once its execution is stored, an approval once it is written, and
//!   `apply` is one call into the shell from its decision to its commit. Every time is
//!   `store::clock`'s (builds' included). The loop sleeps until its next deadline (an action's timeout, a poll,
//!   retention, a retry of what the store refused) or until a request arrives.
//! - **A full disk.** Nothing that is already true outside is dropped when the store refuses to
//!   record it: a started deployment's id and a build's record (written by their job), an
//!   action's report (kept by the loop) and a push (kept in its repository) wait until they are
//!   written; an API write is answered 503 and changes nothing.
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
//! - **Deployments** go through the [`Deployer`]; the action succeeds only when the deployment
//!   ends `Succeeded`. Stopping an execution stops its running deployment (cutover's difference
//!   from AWS; the deployer rolls back as the group says).

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
mod routes;
mod sources;
mod stored;
mod webhook;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

pub use artifacts::KEEP_EXECUTIONS;
pub use driver::{LoopSender, Pipelines, Request, Shell};
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

/// A file handed to the deployer, as `cutover deploy --task-definition FILE` reads one.
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

/// What the control plane does for the deploy actions.
#[async_trait]
pub trait Deployer: Send + Sync {
    /// Registers the task definition as a new revision, writes it into the AppSpec's
    /// `<TASK_DEFINITION>`, and starts a deployment in `group` (`application/group`). `job` is
    /// the action run's key: a deployer that stores deployments records the new id under it
    /// (`ci_jobs`) in the deployment's own transaction (the action writes it again after).
    async fn deploy(
        &self,
        group: &str,
        task_definition: FileText,
        appspec: FileText,
        description: String,
        job: &str,
    ) -> Result<String, DeployError>;
    async fn deployment_state(&self, id: &str) -> Result<DeploymentState, DeployError>;
    /// Stops the deployment, rolling back as its group says; one that has already ended is
    /// left as it is (`Ok`).
    async fn stop(&self, id: &str) -> Result<(), DeployError>;
    /// The ECS action: a new revision of the service's task definition with these containers'
    /// images, deployed through the service's group if it has one, else by replacing tasks.
    async fn deploy_image_definitions(
        &self,
        service: &str,
        images: Vec<(String, String)>,
        job: &str,
    ) -> Result<String, DeployError>;
}

/// Why the [`Deployer`] could not do what a deploy action asked; the action fails with it.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The control plane refused the request: a file is invalid, the group has an active
    /// deployment, … The message says what to do.
    #[error("{0}")]
    Refused(String),
    /// The control plane cannot take the request now (it is shutting down, or its data directory
    /// cannot be written).
    #[error("{0}")]
    Unavailable(String),
    #[error("no deployment {0}")]
    UnknownDeployment(String),
    /// The deployment's stored record could not be read.
    #[error("deployment {id}: its record cannot be read: {reason}")]
    Unreadable { id: String, reason: String },
    #[error(transparent)]
    Store(#[from] store::Error),
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
