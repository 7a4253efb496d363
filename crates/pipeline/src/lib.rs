//! CodePipeline's executions as a pure, deterministic state machine.
//!
//! One [`Pipeline`] per pipeline owns every execution of it, because stage locking and
//! superseding are decisions across executions. The control plane feeds [`Input`]s and the time
//! into it, performs the [`Effect`]s it returns, and sleeps until [`Pipeline::poll_timeout`].
//! Nothing here reads a clock or touches the world, so a 7-day approval timeout is tested in
//! microseconds and the same inputs at the same times always give the same effects. A `Pipeline`
//! is `Serialize`/`Deserialize`: the control plane persists a snapshot after every step and, after
//! a restart, restores it and calls [`Pipeline::resume`].
//!
//! [`definition`] is the one pipeline definition, as `cutover.yaml` declares it and `ci` stores
//! and runs it, with CodePipeline's limits; [`definition::PipelineDecl::machine_spec`] gives the
//! machine its structural view, a [`PipelineSpec`].
//!
//! # The model
//!
//! A [`PipelineSpec`] lists stages in order; the first is the source stage, with exactly one
//! [`ActionKind::Source`] action whose single output artifact is the pushed revision. Each later
//! stage has actions with a `run_order`: equal orders run in parallel, ascending orders one after
//! another. [`PipelineSpec::validate`] applies AWS's structure rules (aws-semantics.md §5.1): 2 to
//! 50 stages, 1 to 50 actions per stage and 500 per pipeline, unique stage names, action names
//! unique in their stage, output artifact names unique in the pipeline, and every input artifact
//! produced by an action that runs earlier (an earlier stage, or a lower `run_order` in the same
//! stage); plus cutover's: at most 5 inputs and 5 outputs per action, approvals have no
//! artifacts, timeouts 1 s (approvals 5 min) to 60 days.
//!
//! [`Input::SourceChanged`] starts an execution: its source stage and action succeed at once with
//! the given artifact, and the execution moves to the second stage. When an action succeeds, its
//! declared outputs join the execution's artifacts, and later actions get their inputs' ids in
//! [`Effect::StartAction`]. When every action of a stage succeeded, the execution moves on; after
//! the last stage it has `Succeeded`.
//!
//! # Rules (AWS's where AWS has one, aws-semantics.md §5.2–5.3; cutover's choices marked)
//!
//! - **Stage locks.** In both modes a stage holds one execution at a time. An execution that
//!   finished a stage leaves it (unlocking it) and enters the next stage if that is free, or waits
//!   in front of it. When a stage is unlocked (its execution succeeded, failed or stopped there),
//!   the first waiting execution enters it in the same step. The source stage never locks.
//! - **SUPERSEDED** (default): at most one execution waits in front of a stage. When another
//!   arrives, the older of the two (lower `seq`) ends `Superseded` ("superseded by e3 while
//!   waiting for stage Build") and the newer waits. An execution inside a stage is never
//!   superseded: superseding happens only between stages.
//! - **QUEUED**: waiting executions enter in arrival order; none is superseded. At most
//!   [`ACTIVE_EXECUTIONS_MAX`] executions are unfinished at once; a push beyond that is refused
//!   with [`InputError::TooManyExecutions`] (SUPERSEDED mode never gets there: at most one
//!   execution per stage plus one waiting in front of it).
//! - **Failure.** An action fails when it reports `succeeded: false`, when it reports success
//!   without exactly its declared outputs (the message says which), or when it times out
//!   ([`ActionSpec::timeout`], else [`ActionKind::default_timeout`]: builds 8 h, blue/green
//!   deploys 5 days, ECS deploys 1 h, approvals 7 days, others 1 h); a timed-out action is
//!   cancelled ([`Effect::CancelAction`]). A failed action fails its stage once its parallel
//!   siblings have finished (they are not cancelled), no later `run_order` starts, and the
//!   execution fails: `stage Build failed: action compile failed: exit 2`. Later stages never
//!   start.
//! - **Manual approval.** An [`ActionKind::Approval`] action starts like any other (the control
//!   plane records the pending approval and notifies) and waits for [`Input::Approve`] or
//!   [`Input::Reject`]. Rejection or no decision before its timeout (default 7 days) fails it. The
//!   stage stays locked while it waits. Approvals cannot be reported with `ActionResult`.
//! - **Stop** ([`Input::Stop`]). An execution waiting between stages stops at once. Inside a
//!   stage, no further action starts and:
//!   - "stop and abandon" (`abandon: true`) marks every action in progress `Abandoned` and cancels
//!     it; the stage and the execution are `Stopped` at once, unlocking the stage;
//!   - "stop and wait" (`abandon: false`) lets actions in progress finish (stage and execution
//!     `Stopping`), then both are `Stopped`, whatever the actions' results;
//!   - **cutover's difference from AWS**: a running deployment ([`ActionKind::is_deploy`]) is
//!     always asked to stop ([`Effect::CancelAction`]), with either kind of stop; "stop and wait"
//!     then waits for the deployment to report how it ended (rolled back, normally). Approvals in
//!     progress are abandoned and cancelled with either kind of stop (nobody should approve a
//!     stopped release). AWS leaves the deployment running.
//!   - A stop asked for while another is under way: "abandon" after "wait" abandons what still
//!     runs; a repeated "wait" changes nothing (`Ok`). A stop after the execution ended is
//!     [`InputError::AlreadyFinished`]. A stopped execution ends `Stopped` even when one of its
//!     actions failed meanwhile; the stage's message says so.
//! - **Retry** ([`Input::Retry`]): only a `Failed` execution whose stage is `Failed`, and only if
//!   no other execution entered that stage since (the latest execution in the stage; AWS's rule).
//!   `FailedActions` re-runs the actions that did not succeed, from the lowest `run_order` among
//!   them, keeping the other actions' results and outputs; `AllActions` re-runs the whole stage,
//!   dropping the outputs its actions had produced. The execution becomes `InProgress` again
//!   (another [`Effect::Finished`] will follow), the stage's `attempt` goes up, and it continues
//!   through the later stages with the normal rules, including being superseded while it waits.
//!   The source stage cannot be retried; an execution that fell out of the history cannot either.
//! - **Action runs.** Every start of an action has a run number (1, then +1 per retry) carried by
//!   `StartAction`, `CancelAction` and the reports. A report for a run that is not in progress is
//!   refused with [`InputError::NotRunning`], except a late result of a cancelled run (accepted and
//!   ignored: the cancelled build or deployment finishing) and an exact repeat of an accepted
//!   verdict (accepted, no change: an HTTP retry).
//! - **Time.** Every entry point first handles the deadlines due at `now` (a deadline at exactly
//!   `now` is due), then the input, so an input never beats a deadline it arrived after: an
//!   approval at 7 days for a 7-day timeout is refused. Time never goes backwards:
//!   debug-asserted, and release builds clamp to the latest time seen. Deadlines due at the same
//!   time fire in execution, stage and action order.
//! - **Restart** ([`Pipeline::resume`]): effects queued and not yet polled are kept; then every
//!   action in progress and not being cancelled is started again with the **same run number**
//!   and its original deadline, and every cancellation not yet confirmed by a result is requested
//!   again. `StartAction` and
//!   `CancelAction` are therefore idempotent per (execution, stage, action, run): the control
//!   plane adopts a job it already runs for that key (a deployment has its own persisted state)
//!   instead of starting a second one. Deadlines are absolute: one that passed while the control
//!   plane was down fires at the next `handle_timeout`.
//! - **History.** Finished executions keep their whole record for [`HISTORY_MAX`] executions
//!   (oldest dropped first); that is what `retry` and late reports look up. The control plane
//!   keeps the long-term history from the effects.
//! - **Limits.** Text from outside (messages, comments, names of people, reasons, external refs,
//!   revision fields) is cut to [`TEXT_BYTES_MAX`] bytes with control characters replaced by
//!   spaces, so every effect prints on one line; stage and execution messages are cut to
//!   [`MESSAGE_BYTES_MAX`]. Execution ids are 1 to [`EXECUTION_ID_BYTES_MAX`] bytes of
//!   `A-Z a-z 0-9 . _ -`. At most [`CANCELS_KEPT`] unconfirmed cancellations are remembered for
//!   `resume`.
//!
//! # Effects
//!
//! `StartAction` means the action is `InProgress` from now on (no separate `ActionStatus` is
//! emitted for the start). Every other change of an execution, stage or action emits its whole
//! current state (`ExecutionStatus`, `StageStatus` with its timestamps, `ActionStatus` with its
//! timestamps and external ref), so the control plane overwrites its copy. An action the machine
//! gives up (timeout, abandon) emits `ActionStatus` and then `CancelAction`. An execution ends
//! with `ExecutionStatus` and then `Finished`, in the same call. Within one call the order is:
//! the action, then its stage, then its execution, then the execution that moved into the stage
//! it unlocked.
//!
//! # Wiring it into the control plane
//!
//! - One machine per pipeline, built from the pipeline's definition in `cutover.yaml`. After every
//!   call, persist the snapshot *before* performing the effects it queued (so effects not yet
//!   performed survive a crash: `resume` keeps them), then drain `poll_effect` and sleep until
//!   `poll_timeout`. After a restart, restore and call `resume`.
//! - A push, a webhook, a poll that found a new commit or `pipelines start`: store the source
//!   artifact content-addressed, allocate an execution id, send `SourceChanged`.
//! - `StartAction` by kind: `Build`/`Test` run the buildspec with the input artifacts unpacked
//!   (the first input is the primary source), report `ActionStarted` with the build id, then
//!   `ActionResult` with the declared outputs stored content-addressed. `Deploy` renders the task
//!   definition and AppSpec from the inputs, starts a deployment (a `rollout` machine), reports
//!   `ActionStarted` with the deployment id and `ActionResult` when it ends (`succeeded` only for
//!   `Succeeded`). `Approval` records a pending approval; `approvals approve EXECUTION` finds the
//!   action with [`Pipeline::pending_approvals`] and sends `Approve`.
//! - `CancelAction`: kill the build, stop the deployment (rolling back as its group says),
//!   withdraw the approval.
//! - Artifact retention: keep every artifact referenced by an execution the machine still knows
//!   ([`Pipeline::active`] and [`Pipeline::history`]); older ones can go under the retention
//!   limit.
//!
//! # Invariants
//!
//! Checked with `debug_assert` at the end of every entry point: a stage's lock holder is the one
//! execution inside it; every waiting execution is in its stage's queue, and a SUPERSEDED queue
//! holds at most one; nobody waits in front of a free stage; the source stage never locks;
//! unfinished executions are `InProgress` or `Stopping`, finished ones are terminal and have no
//! action in progress; actions are in progress only in the stage their execution is in, each
//! with a deadline; every execution ends (every unfinished execution is inside a stage with an
//! action in progress, hence a deadline, or waits behind one); the bounds above hold.

pub mod definition;
mod machine;
pub mod record;
pub mod spec;

#[cfg(test)]
mod tests;

use std::fmt;

use model::{Timestamp, format_duration};
use serde::{Deserialize, Serialize};

pub use machine::{InvalidSnapshot, PendingApproval, Pipeline};
pub use record::{
    ActionRecord, ActionStatus, ArtifactId, Decision, ExecutionRecord, ExecutionStatus,
    InvalidArtifactId, Position, Revision, StageRecord, StageStatus, StopRequest,
};
pub use spec::{ActionKind, ActionSpec, ExecutionMode, PipelineSpec, SpecError, StageSpec};

/// Longest text taken from an input, in bytes.
pub const TEXT_BYTES_MAX: usize = 1024;
/// Longest stage or execution message, in bytes.
pub const MESSAGE_BYTES_MAX: usize = 4096;
/// Longest execution id, in bytes.
pub const EXECUTION_ID_BYTES_MAX: usize = 128;
/// Most unfinished executions of one pipeline (QUEUED mode; SUPERSEDED stays below it).
pub const ACTIVE_EXECUTIONS_MAX: usize = 100;
/// Finished executions whose whole record is kept.
pub const HISTORY_MAX: usize = 20;
/// Cancellations remembered until their action reports, for `resume` to request again.
pub const CANCELS_KEPT: usize = 64;

/// What the control plane tells the machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// A push (or a poll, or a manual start) on the watched branch: a new execution with this id,
    /// whose source artifact the control plane has already stored.
    SourceChanged {
        execution_id: String,
        revision: Revision,
        artifact: ArtifactId,
    },
    /// A started action's job has an id worth showing (the build id, the deployment id).
    ActionStarted {
        execution_id: String,
        stage: String,
        action: String,
        run: u32,
        external_ref: String,
    },
    /// An action's job ended.
    ActionResult {
        execution_id: String,
        stage: String,
        action: String,
        run: u32,
        succeeded: bool,
        message: String,
        /// Exactly the action's declared output artifacts, each once, when it succeeded.
        outputs: Vec<(String, ArtifactId)>,
        external_ref: Option<String>,
    },
    Approve {
        execution_id: String,
        stage: String,
        action: String,
        comment: String,
        by: String,
    },
    Reject {
        execution_id: String,
        stage: String,
        action: String,
        comment: String,
        by: String,
    },
    /// `abandon: false` is "stop and wait", `true` is "stop and abandon".
    Stop {
        execution_id: String,
        abandon: bool,
        reason: String,
    },
    Retry {
        execution_id: String,
        stage: String,
        mode: RetryMode,
    },
}

/// AWS `retryMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetryMode {
    FailedActions,
    AllActions,
}

/// What the machine asks the control plane to do, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// An execution's whole current status.
    ExecutionStatus { execution_id: String, status: ExecutionStatus, message: Option<String> },
    /// A stage execution's whole current state.
    StageStatus {
        execution_id: String,
        stage: String,
        attempt: u32,
        status: StageStatus,
        started: Timestamp,
        ended: Option<Timestamp>,
        message: Option<String>,
    },
    /// Run an action (idempotent per execution, stage, action and run); it is `InProgress` from
    /// now on. Report with `ActionStarted`/`ActionResult` (`Approve`/`Reject` for approvals)
    /// before `deadline`, when it fails.
    StartAction {
        execution_id: String,
        stage: String,
        action: String,
        run: u32,
        kind: ActionKind,
        config_key: String,
        /// Every declared input, with the id of the artifact this execution produced under it.
        inputs: Vec<(String, ArtifactId)>,
        /// The declared output artifacts, to report on success.
        outputs: Vec<String>,
        deadline: Timestamp,
    },
    /// Stop this run if it still runs (kill the build, stop the deployment, withdraw the
    /// approval); idempotent. The machine may wait for the run's result ("stop and wait" on a
    /// deployment): a control plane with no job for this run (it never started one before a
    /// crash) reports it failed, so the execution need not wait for the deadline.
    CancelAction { execution_id: String, stage: String, action: String, run: u32, kind: ActionKind },
    /// An action's whole current state, after its start.
    ActionStatus {
        execution_id: String,
        stage: String,
        action: String,
        run: u32,
        status: ActionStatus,
        started: Timestamp,
        ended: Option<Timestamp>,
        message: Option<String>,
        external_ref: Option<String>,
    },
    /// The execution ended (until a retry re-opens a failed one).
    Finished { execution_id: String, status: ExecutionStatus, message: Option<String> },
}

/// An input the machine refused; nothing changed because of it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error(
        "`{0}` is not a valid execution id: use 1 to {EXECUTION_ID_BYTES_MAX} bytes of \
         A-Z a-z 0-9 . _ -"
    )]
    InvalidExecutionId(String),
    #[error(
        "execution `{0}` already exists in this pipeline; allocate a new id for every execution"
    )]
    DuplicateExecution(String),
    #[error(
        "the pipeline already has {limit} unfinished executions; stop some, or wait for them, \
         before starting another"
    )]
    TooManyExecutions { limit: usize },
    #[error(
        "no execution `{0}` in this pipeline (it never existed, or finished long enough ago to \
         have left the kept history)"
    )]
    UnknownExecution(String),
    #[error("the pipeline has no stage `{0}`")]
    UnknownStage(String),
    #[error("stage `{stage}` has no action `{action}`")]
    UnknownAction { stage: String, action: String },
    #[error(
        "run #{run} of `{stage}/{action}` in execution `{execution_id}` is not in progress \
         ({current}); report for the run of the latest start-action"
    )]
    NotRunning { execution_id: String, stage: String, action: String, run: u32, current: String },
    #[error(
        "`{stage}/{action}` is a manual approval: answer it with approve or reject, not with an \
         action result"
    )]
    UseApproveOrReject { stage: String, action: String },
    #[error("`{stage}/{action}` is not a manual approval action")]
    NotAnApproval { stage: String, action: String },
    #[error(
        "approval `{stage}/{action}` of execution `{execution_id}` is not waiting for a decision \
         ({current})"
    )]
    NoPendingApproval { execution_id: String, stage: String, action: String, current: String },
    #[error(
        "execution `{execution_id}` is not waiting for an approval (it is {current}); approve \
         or reject it while its approval action is InProgress"
    )]
    NotAwaitingApproval { execution_id: String, current: String },
    #[error("execution `{execution_id}` has already finished ({status}); start a new execution")]
    AlreadyFinished { execution_id: String, status: ExecutionStatus },
    #[error("stage `{stage}` of execution `{execution_id}` cannot be retried: {reason}")]
    NotRetryable { execution_id: String, stage: String, reason: String },
}

impl fmt::Display for Effect {
    /// One line, for traces and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::ExecutionStatus { execution_id, status, message } => {
                write!(f, "execution {execution_id} {status}")?;
                write_message(f, message)
            }
            Effect::StageStatus { execution_id, stage, attempt, status, message, .. } => {
                write!(f, "stage {execution_id} {stage} {status}")?;
                if *attempt > 1 {
                    write!(f, " (attempt {attempt})")?;
                }
                write_message(f, message)
            }
            Effect::StartAction {
                execution_id,
                stage,
                action,
                run,
                kind,
                config_key,
                inputs,
                outputs,
                deadline,
            } => {
                write!(f, "start {execution_id} {stage}/{action}#{run} {kind}")?;
                if !config_key.is_empty() {
                    write!(f, " config={config_key}")?;
                }
                if !inputs.is_empty() {
                    let inputs: Vec<_> = inputs.iter().map(|(n, id)| format!("{n}={id}")).collect();
                    write!(f, " in[{}]", inputs.join(" "))?;
                }
                if !outputs.is_empty() {
                    write!(f, " out[{}]", outputs.join(" "))?;
                }
                write!(f, " until {deadline}")
            }
            Effect::CancelAction { execution_id, stage, action, run, kind } => {
                write!(f, "cancel {execution_id} {stage}/{action}#{run} {kind}")
            }
            Effect::ActionStatus {
                execution_id,
                stage,
                action,
                run,
                status,
                started,
                ended,
                message,
                external_ref,
            } => {
                write!(f, "action {execution_id} {stage}/{action}#{run} {status}")?;
                if let Some(external_ref) = external_ref {
                    write!(f, " [{external_ref}]")?;
                }
                if let Some(ended) = ended {
                    write!(f, " after {}", format_duration(ended.since(*started)))?;
                }
                write_message(f, message)
            }
            Effect::Finished { execution_id, status, message } => {
                write!(f, "finished {execution_id} {status}")?;
                write_message(f, message)
            }
        }
    }
}

fn write_message(f: &mut fmt::Formatter<'_>, message: &Option<String>) -> fmt::Result {
    match message {
        Some(message) => write!(f, ": {message}"),
        None => Ok(()),
    }
}
