//! CodeDeploy's ECS blue/green deployment as a pure, deterministic state machine.
//!
//! The control plane feeds [`Input`]s and the time into a [`Rollout`], performs the [`Effect`]s it
//! returns, and sleeps until [`Rollout::poll_timeout`]. Nothing here reads a clock, draws a random
//! number or touches the world, so a 15-minute canary is tested in microseconds and the same inputs
//! at the same times always give the same effects. A `Rollout` is `Serialize`/`Deserialize`: the
//! control plane persists a snapshot after every step and, after a restart, restores it and calls
//! [`Rollout::resume`].
//!
//! # The sequence
//!
//! AWS's order (aws-semantics.md §1.1), one step at a time:
//!
//! 1. `BeforeInstall`: its hook, if any. Nothing exists yet.
//! 2. `Install`: [`Effect::StartGreen`], then wait for [`Input::GreenHealthy`] at most
//!    `install_timeout`.
//! 3. `AfterInstall`: its hook.
//! 4. `AllowTestTraffic`: `Route { 0, test_to_green: true }`, then wait for
//!    [`Input::RoutesServed`] at most [`ROUTES_SERVED_TIMEOUT`]. Skipped without a test listener.
//! 5. `AfterAllowTestTraffic`: its hook. Skipped without a test listener, even if a hook is named
//!    (the event's message says so).
//! 6. Ready wait, only with `ready_wait: Some(w)` (STOP_DEPLOYMENT): status `Ready` until
//!    [`Input::ContinueReadyWait`]; after `w` the deployment is `Stopped` (`TIMEOUT`), rolled back
//!    iff `auto_rollback.on_stop_request`. The wait sits *before* `BeforeAllowTraffic` (AWS does not
//!    say; §1.1 recommends this).
//! 7. `BeforeAllowTraffic`: its hook.
//! 8. `AllowTraffic`: one [`Effect::Route`] per step of `routing.schedule()`, the step at
//!    `t0 + after` where `t0` is when `AllowTraffic` began. The test listener stays on green. After
//!    the last step, wait for [`Input::RoutesServed`] at most [`ROUTES_SERVED_TIMEOUT`].
//! 9. `AfterAllowTraffic`: its hook.
//! 10. Termination wait: status `Baking` for `termination_wait` (blue warm, alarms watched, rollback
//!     possible); [`Input::ContinueTerminationWait`] ends it early. A zero wait skips it.
//! 11. `End`: [`Effect::TerminateBlue`] (the point of no return), status `Succeeded`.
//!
//! Each lifecycle event records `InProgress` and then `Succeeded` or `Failed`, with timestamps,
//! in [`Rollout::events`]. An event with nothing to do (no hook, no test listener) goes straight
//! from `Pending` to `Skipped`, with its start and end at the same instant. Events that never began
//! stay `Pending`. Every [`Effect::Event`] carries the event's *whole* current status and message,
//! so the control plane can overwrite its copy.
//!
//! # Rules where AWS is silent (or where cutover chose)
//!
//! - **Hooks.** A hook fails when it reports `succeeded: false` or when no result arrives within
//!   its timeout (message `hook NAME timed out after 30s`). Both give `HOOK_EXECUTION_FAILURE`.
//!   A hook that times out is cancelled ([`Effect::CancelHook`]). Execution ids are
//!   `{event}-{n}`, where `n` counts every hook execution this deployment has started (1-based,
//!   kept in the snapshot), so ids never repeat, even across restarts. The control plane prefixes
//!   the deployment id. Only the five hookable events run hooks. A hook named for another event is
//!   ignored (the `config` crate rejects it first).
//! - **Hooks run at least once.** After a restart, [`Rollout::resume`] cancels the execution that
//!   was in flight and starts a fresh one with a new id and the full timeout. The old id's result
//!   is then rejected with [`InputError::UnknownHookExecution`]. Hooks must tolerate running twice.
//! - **Install.** Green must be healthy within `install_timeout`, otherwise `Failed` with
//!   `CUSTOMER_APPLICATION_UNHEALTHY` and a message saying how long it waited.
//!   [`Input::GreenUnhealthy`] at any point after `StartGreen` fails the deployment with the same
//!   code and the runtime's reason. Health reports before `StartGreen` or after the deployment
//!   finished are ignored (they describe a green this deployment does not own), and a repeated
//!   `GreenHealthy` is a no-op.
//! - **Rollback** is one `Route { production_green_percent: 0, test_to_green: false }` (production
//!   and test back on blue in one atomic change), then [`Effect::StopGreen`], then
//!   `Finished { rolled_back: true }`. It is possible from `Install` until `TerminateBlue`,
//!   including the termination wait. In `BeforeInstall` nothing exists, so a failure or stop there
//!   finishes with `rolled_back: false` and emits neither `Route` nor `StopGreen`, whatever was
//!   asked.
//! - **Green gets production traffic only while healthy.** `GreenUnhealthy` while production is
//!   partly or wholly on green takes production off green in the same step, even when rollback on
//!   failure is off: then the route is `{0, test_to_green unchanged}` and green keeps running for
//!   inspection (`rolled_back: false`).
//! - **Failure without `on_failure`** finishes `Failed` with `rolled_back: false` and leaves routing
//!   and task sets as they are (apart from the rule above). Blue is never terminated by a failure;
//!   cleaning up is the next deployment's job.
//! - **Stop** ([`Input::Stop`]) finishes `Stopped` with `MANUAL_STOP`. `rollback: None` rolls back
//!   iff `auto_rollback.on_stop_request`; `Some(b)` is explicit. Stop without rollback leaves
//!   routing and task sets exactly as they are (AWS: "components stay as they are"), including a
//!   partial shift.
//! - **Alarms** ([`Input::Alarm`]) are watched from `AllowTestTraffic` (from `AllowTraffic` without a
//!   test listener) until `TerminateBlue`; before, green serves nobody, so the alarm speaks about
//!   blue: it is ignored and noted in the message of the latest event that began. A watched alarm
//!   stops the deployment: `Stopped` with `ALARM_ACTIVE` and `alarm NAME: REASON`, rolled back iff
//!   `auto_rollback.on_alarm`.
//! - **Cancellation.** A hook in flight when the deployment stops or fails is cancelled; the
//!   lifecycle event in progress is marked `Failed` with the deployment's error message.
//! - **Order of the final step**: `Event(.., Failed)`, `CancelHook`, `Route`, `StopGreen`,
//!   `Status`, `Finished`, all from the same call, so the control plane persists them together.
//! - **Late deadlines first.** Every entry point first handles the deadlines that are due at `now`
//!   (a deadline at exactly `now` is due), then the input, then any deadline the input made due
//!   (a zero timeout), so that afterwards `poll_timeout` is later than `now`; only `resume`
//!   leaves overdue deadlines for the next `handle_timeout`. An input never beats a deadline it
//!   arrived after: a hook result at 31 s for a 30 s timeout is rejected, whatever order the
//!   control plane's event loop picked. If several shift steps are overdue, only the latest weight
//!   is applied.
//! - **After `Finished`**: `Stop`, `ContinueReadyWait` and `ContinueTerminationWait` are rejected
//!   with [`InputError::AlreadyFinished`], except `Stop` after success, which gets
//!   [`InputError::PastPointOfNoReturn`] (blue is gone; deploy the previous revision instead).
//!   Observations of the world (`GreenHealthy`, `GreenUnhealthy`, `Alarm`) are accepted and
//!   ignored, and so is a repeated `HookResult` with the same id and verdict as one already
//!   accepted (an HTTP retry of the callback). Any other `HookResult` after `Finished` is
//!   `AlreadyFinished`.
//! - **Continue out of place**: `ContinueReadyWait` outside the ready wait is
//!   [`InputError::NotWaitingForReady`] (also when repeated after it took effect, as AWS does);
//!   `ContinueTerminationWait` outside the termination wait is
//!   [`InputError::NotWaitingForTermination`].
//! - **Time** never goes backwards: every entry point debug-asserts it and release builds clamp to
//!   the latest time seen. `resume` clamps silently: a restarted process may see an earlier wall
//!   clock.
//! - **Restart** ([`Rollout::resume`]): waits keep their absolute deadlines (wall-clock promises:
//!   the shift schedule, the ready wait, the termination wait), so a control plane that was down
//!   past a deadline handles it at once. The steps that `resume` re-executes restart their
//!   timers: the hook in flight (new execution, full timeout) and `Install` (`StartGreen` again,
//!   full `install_timeout`, so a green that became healthy while nobody watched is not failed
//!   before the control plane can report it).
//! - **Limits.** Text from outside (reasons, hook messages, alarm names, execution ids) is cut to
//!   [`TEXT_BYTES_MAX`] bytes with control characters replaced by spaces, so an effect always
//!   prints on one line; an event's accumulated message is cut to [`MESSAGE_BYTES_MAX`].
//!
//! # Invariants
//!
//! Checked with `debug_assert` at the end of every entry point: the green percentage is at most
//! 100; production is on green only while green is healthy; after a rollback production and test
//! are on blue and green is stopped; a finished machine emits nothing after `Finished` and has no
//! deadline; blue is terminated exactly when the deployment succeeded; the event with a hook in
//! flight is `InProgress`.

mod machine;
mod preview;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use model::{DeploymentStatus, ErrorCode, LifecycleEvent, LifecycleEventStatus, Timestamp};
use serde::{Deserialize, Serialize};

pub use machine::Rollout;
pub use preview::preview;

/// Longest text taken from an input (reason, hook message, alarm name, execution id), in bytes.
pub const TEXT_BYTES_MAX: usize = 1024;
/// Longest message kept for one lifecycle event, in bytes.
pub const MESSAGE_BYTES_MAX: usize = 4096;
/// How long green may take to become healthy when the deployment group does not say: CodeDeploy's
/// 60 minutes per lifecycle event.
pub const INSTALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3600);
/// How long a routing change that the next event depends on may take to be served: the load
/// balancer confirms a table in milliseconds, and restarts in about a second when it died; a
/// minute without it means it cannot take the table, and the deployment fails (`TIMEOUT`) rather
/// than run a hook against traffic that never moved.
pub const ROUTES_SERVED_TIMEOUT: Duration = Duration::from_secs(60);

/// What the user asked for: one deployment of a deployment group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutSpec {
    pub deployment_id: String,
    #[serde(with = "wire::one")]
    pub routing: model::TrafficRouting,
    pub has_test_listener: bool,
    /// Only the five hookable events; a hook for any other event is ignored.
    #[serde(with = "wire::map")]
    pub hooks: BTreeMap<LifecycleEvent, Hook>,
    /// `Some(w)`: STOP_DEPLOYMENT, wait for `ContinueReadyWait` at most `w`, then `Stopped`.
    /// `None`: CONTINUE_DEPLOYMENT.
    pub ready_wait: Option<Duration>,
    /// Blue stays warm this long after production is 100% green (status `Baking`).
    pub termination_wait: Duration,
    pub auto_rollback: AutoRollback,
    /// Green must become healthy within this (AWS: 60 minutes per event;
    /// [`INSTALL_TIMEOUT_DEFAULT`] unless the deployment group says otherwise).
    pub install_timeout: Duration,
}

/// A lifecycle hook: what the control plane runs, and how long it may take to report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    pub name: String,
    pub timeout: Duration,
}

/// CodeDeploy's `autoRollbackConfiguration.events`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoRollback {
    /// `DEPLOYMENT_FAILURE`.
    pub on_failure: bool,
    /// `DEPLOYMENT_STOP_ON_ALARM`.
    pub on_alarm: bool,
    /// `DEPLOYMENT_STOP_ON_REQUEST`; also decides what an expired ready wait does.
    pub on_stop_request: bool,
}

/// What the control plane tells the machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// Every green task runs and is healthy in the green target group.
    GreenHealthy,
    /// Green has no healthy target any more, or its tasks cannot start or keep crashing.
    GreenUnhealthy {
        reason: String,
    },
    /// A hook's callback.
    HookResult {
        execution_id: String,
        succeeded: bool,
        message: String,
    },
    ContinueReadyWait,
    ContinueTerminationWait,
    /// A user stop. `None`: roll back iff `auto_rollback.on_stop_request`; `Some(b)`: explicit (the
    /// CLI's `rollback` is `Stop { rollback: Some(true) }`).
    Stop {
        rollback: Option<bool>,
    },
    /// An alarm of the deployment group went to ALARM.
    Alarm {
        name: String,
        reason: String,
    },
    /// The load balancer serves the latest [`Effect::Route`] (and every one before it). The
    /// events that follow a routing change wait for it: a hook after `AllowTestTraffic` or
    /// `AllowTraffic` tests what clients now reach, so it must not start while the load balancer
    /// still routes as before. Ignored when nothing waits for it.
    RoutesServed,
}

/// What the machine asks the control plane to do, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// The deployment's status changed.
    Status(#[serde(with = "wire::one")] DeploymentStatus),
    /// A lifecycle event's whole current state (status and accumulated message).
    Event {
        #[serde(with = "wire::one")]
        event: LifecycleEvent,
        #[serde(with = "wire::one")]
        status: LifecycleEventStatus,
        message: Option<String>,
    },
    /// Create the green task set in the idle target group (idempotent on the control side).
    StartGreen,
    /// Run `hook` and report its result as `Input::HookResult` with this `execution_id`.
    RunHook {
        #[serde(with = "wire::one")]
        event: LifecycleEvent,
        execution_id: String,
        hook: String,
        timeout: Duration,
    },
    /// Stop the hook execution if it still runs; its result will be rejected.
    CancelHook { execution_id: String },
    /// The whole routing state of the group, applied as one atomic route-table change.
    Route { production_green_percent: u8, test_to_green: bool },
    /// Delete the green task set (after its drain).
    StopGreen,
    /// Delete the blue task set: the point of no return.
    TerminateBlue,
    /// The deployment is over; nothing follows.
    Finished(Outcome),
}

/// How a deployment ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `Succeeded`, `Failed` or `Stopped`.
    #[serde(with = "wire::one")]
    pub status: DeploymentStatus,
    #[serde(with = "wire::opt")]
    pub error: Option<(ErrorCode, String)>,
    pub rolled_back: bool,
}

/// One lifecycle event of a deployment, for `deployments get`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    #[serde(with = "wire::one")]
    pub event: LifecycleEvent,
    #[serde(with = "wire::one")]
    pub status: LifecycleEventStatus,
    #[serde(with = "wire::opt")]
    pub start: Option<Timestamp>,
    #[serde(with = "wire::opt")]
    pub end: Option<Timestamp>,
    pub message: Option<String>,
}

/// An input the machine rejected; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error(
        "the deployment is not in its ready wait; continue it only while its status is Ready \
         (deployment groups with actionOnTimeout STOP_DEPLOYMENT)"
    )]
    NotWaitingForReady,
    #[error(
        "the deployment is not in its termination wait; continue it only while its status is \
         Baking (production fully on green, blue still running)"
    )]
    NotWaitingForTermination,
    #[error("the deployment has already finished; start a new deployment to change what runs")]
    AlreadyFinished,
    #[error(
        "no hook execution `{0}` is waiting for a result: it already reported, timed out, was \
         cancelled, or was replaced after a control-plane restart; report for the execution id of \
         the latest run-hook"
    )]
    UnknownHookExecution(String),
    #[error(
        "the blue task set has already been terminated, so the deployment can no longer be \
         stopped or rolled back; to go back, deploy the previous task definition"
    )]
    PastPointOfNoReturn,
}

impl fmt::Display for Effect {
    /// One line, for traces, logs and `deployment-configs preview`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::Status(status) => write!(f, "status {status}"),
            Effect::Event { event, status, message } => {
                write!(f, "event {event} {status}")?;
                if let Some(message) = message {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            Effect::StartGreen => f.write_str("start-green"),
            Effect::RunHook { event, execution_id, hook, timeout: _ } => {
                write!(f, "run-hook {event} {hook} (exec {execution_id})")
            }
            Effect::CancelHook { execution_id } => write!(f, "cancel-hook {execution_id}"),
            Effect::Route { production_green_percent, test_to_green } => {
                let test = if *test_to_green { "green" } else { "blue" };
                write!(f, "route prod green={production_green_percent}% test={test}")
            }
            Effect::StopGreen => f.write_str("stop-green"),
            Effect::TerminateBlue => f.write_str("terminate-blue"),
            Effect::Finished(outcome) => write!(f, "finished {outcome}"),
        }
    }
}

impl fmt::Display for Outcome {
    /// `Succeeded`, `Failed HOOK_EXECUTION_FAILURE: ...`, `Stopped rolled-back ALARM_ACTIVE: ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        if self.rolled_back {
            f.write_str(" rolled-back")?;
        }
        if let Some((code, message)) = &self.error {
            write!(f, " {code}: {message}")?;
        }
        Ok(())
    }
}
