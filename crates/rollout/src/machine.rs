//! The `Rollout` state machine: the sequence of lifecycle events, its waits, and how it ends.

use std::collections::VecDeque;

use model::text::{one_line, truncate};
use model::{
    DeploymentStatus, ErrorCode, LifecycleEvent, LifecycleEventStatus, Timestamp, format_duration,
};
use serde::{Deserialize, Serialize};

use crate::{
    Effect, EventRecord, Hook, Input, InputError, MESSAGE_BYTES_MAX, Outcome,
    ROUTES_SERVED_TIMEOUT, RolloutSpec, TEXT_BYTES_MAX, wire,
};

/// One step of the deployment: a lifecycle event or one of the two waits between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Event(LifecycleEvent),
    ReadyWait,
    TerminationWait,
}

/// AWS's order (aws-semantics.md §1.1), with the ready wait placed before `BeforeAllowTraffic`.
const SEQUENCE: [Step; 11] = [
    Step::Event(LifecycleEvent::BeforeInstall),
    Step::Event(LifecycleEvent::Install),
    Step::Event(LifecycleEvent::AfterInstall),
    Step::Event(LifecycleEvent::AllowTestTraffic),
    Step::Event(LifecycleEvent::AfterAllowTestTraffic),
    Step::ReadyWait,
    Step::Event(LifecycleEvent::BeforeAllowTraffic),
    Step::Event(LifecycleEvent::AllowTraffic),
    Step::Event(LifecycleEvent::AfterAllowTraffic),
    Step::TerminationWait,
    Step::Event(LifecycleEvent::End),
];

/// The index in `SEQUENCE` of the step that follows `step`.
fn step_after(step: Step) -> usize {
    SEQUENCE.iter().position(|it| *it == step).expect("invariant: every step is in SEQUENCE") + 1
}

/// Whether a step finished at once or the machine now waits for an input or a deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Next,
    Wait,
}

/// What the machine is waiting for. Every phase but `Finished` has a deadline, which is why every
/// deployment finishes even if no input ever arrives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    /// Only inside `Rollout::new`, before the first step.
    Created,
    /// A hook runs for `event` and must report before `deadline`.
    Hook {
        #[serde(with = "wire::one")]
        event: LifecycleEvent,
        execution_id: String,
        hook: Hook,
        #[serde(with = "wire::one")]
        deadline: Timestamp,
    },
    /// Green was started and must be healthy before `deadline`.
    Install {
        #[serde(with = "wire::one")]
        deadline: Timestamp,
    },
    /// STOP_DEPLOYMENT: waiting for `ContinueReadyWait`.
    ReadyWait {
        #[serde(with = "wire::one")]
        deadline: Timestamp,
    },
    /// `AllowTraffic`: `applied` steps of the schedule, which started at `t0`, are in effect.
    Shift {
        #[serde(with = "wire::one")]
        t0: Timestamp,
        applied: usize,
    },
    /// `event` (`AllowTestTraffic` or `AllowTraffic`) has routed; it ends once the load balancer
    /// serves that routing (`Input::RoutesServed`), and fails at `deadline`.
    RoutesServed {
        #[serde(with = "wire::one")]
        event: LifecycleEvent,
        #[serde(with = "wire::one")]
        deadline: Timestamp,
    },
    /// Production is 100% green; blue stays warm until `deadline`.
    TerminationWait {
        #[serde(with = "wire::one")]
        deadline: Timestamp,
    },
    Finished,
}

/// What the machine knows about the green task set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Green {
    /// Not created yet (`BeforeInstall`).
    Absent,
    /// `StartGreen` was emitted; not reported healthy yet.
    Starting,
    Healthy,
    /// Reported unhealthy; the deployment failed, and green may be left running for inspection.
    Unhealthy,
    /// `StopGreen` was emitted.
    Stopped,
}

/// A hook result that was accepted, so that a retried callback can be recognised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct HookReport {
    execution_id: String,
    succeeded: bool,
}

/// One deployment. See the crate docs for the sequence and its rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    spec: RolloutSpec,
    #[serde(with = "wire::one")]
    status: DeploymentStatus,
    phase: Phase,
    production_green_percent: u8,
    test_to_green: bool,
    green: Green,
    blue_terminated: bool,
    /// How many hook executions have been started; the `n` of the next id is this plus one.
    hook_executions: u64,
    /// At most one per hookable event, since a reported hook never runs again.
    hook_reports: Vec<HookReport>,
    /// One per `LifecycleEvent::ALL`, in order (checked when a snapshot is read).
    #[serde(deserialize_with = "deserialize_events")]
    events: Vec<EventRecord>,
    effects: VecDeque<Effect>,
    outcome: Option<Outcome>,
    /// `Effect::Finished` has been polled: from now on nothing is emitted, not even by `resume`.
    finished_delivered: bool,
    /// The latest time seen.
    #[serde(with = "wire::one")]
    now: Timestamp,
}

impl Rollout {
    /// A deployment that starts at `now`: status `InProgress`, and `BeforeInstall` begun.
    pub fn new(spec: RolloutSpec, now: Timestamp) -> Rollout {
        let events = LifecycleEvent::ALL
            .iter()
            .map(|&event| EventRecord {
                event,
                status: LifecycleEventStatus::Pending,
                start: None,
                end: None,
                message: None,
            })
            .collect();
        let mut rollout = Rollout {
            spec,
            status: DeploymentStatus::Created,
            phase: Phase::Created,
            production_green_percent: 0,
            test_to_green: false,
            green: Green::Absent,
            blue_terminated: false,
            hook_executions: 0,
            hook_reports: Vec::new(),
            events,
            effects: VecDeque::new(),
            outcome: None,
            finished_delivered: false,
            now,
        };
        rollout.set_status(DeploymentStatus::InProgress);
        rollout.run_from(0, now);
        rollout.fire_due_deadlines(now);
        rollout.debug_assert_invariants();
        rollout
    }

    /// Applies an input at `now`, after any deadline already due. `Err` means nothing changed
    /// because of the input (a due deadline may still have been handled). On return,
    /// `poll_timeout` is later than `now`.
    pub fn handle_input(&mut self, input: Input, now: Timestamp) -> Result<(), InputError> {
        let now = self.observe(now);
        self.fire_due_deadlines(now);
        let res = self.apply(input, now);
        // A step the input began may already be due (a zero timeout).
        self.fire_due_deadlines(now);
        self.debug_assert_invariants();
        res
    }

    /// Handles every deadline due at `now`; a call before the deadline does nothing.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let now = self.observe(now);
        self.fire_due_deadlines(now);
        self.debug_assert_invariants();
    }

    /// When `handle_timeout` should be called next; `None` once finished.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match &self.phase {
            Phase::Created | Phase::Finished => None,
            Phase::Hook { deadline, .. }
            | Phase::Install { deadline }
            | Phase::ReadyWait { deadline }
            | Phase::RoutesServed { deadline, .. }
            | Phase::TerminationWait { deadline } => Some(*deadline),
            Phase::Shift { t0, applied } => self
                .spec
                .routing
                .schedule()
                .get(*applied)
                .map(|shift| t0.saturating_add(shift.after)),
        }
    }

    /// The next effect to perform, in order.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        let effect = self.effects.pop_front();
        if matches!(effect, Some(Effect::Finished(_))) {
            self.finished_delivered = true;
        }
        self.debug_assert_invariants();
        effect
    }

    /// After restoring a snapshot in a new process: replaces any effects still queued with what
    /// the world must look like now.
    ///
    /// - Always the current `Route` (the data plane may have lost or never got it).
    /// - `StartGreen` if green should exist; `Install` restarts its full `install_timeout`.
    /// - For a hook in flight: `CancelHook` for the old execution and a fresh `RunHook` with a new
    ///   execution id and the full timeout. **Hooks are at least once across restarts**: the old
    ///   execution may have run, completely or partly; its result is rejected from now on.
    /// - A finished deployment whose `Finished` was not polled yet re-emits its end state
    ///   (`Route`, `StopGreen`/`TerminateBlue` if emitted, `Finished`); once `Finished` was polled,
    ///   `resume` emits nothing.
    ///
    /// Queued `Status` and `Event` effects are dropped: `status()` and `events()` hold the same.
    /// Deadlines of waits (shift steps, ready wait, termination wait) are absolute and kept; any
    /// that passed while the control plane was down fire at the next `handle_timeout`.
    pub fn resume(&mut self, now: Timestamp) {
        // A restarted process may read an earlier wall clock; that is not a bug here.
        let now = now.max(self.now);
        self.now = now;
        if self.finished_delivered {
            return;
        }
        self.effects.clear();
        let route = Effect::Route {
            production_green_percent: self.production_green_percent,
            test_to_green: self.test_to_green,
        };
        if let Some(outcome) = self.outcome.clone() {
            // Pushed directly: `emit` refuses effects once an outcome exists.
            self.effects.push_back(route);
            if self.green == Green::Stopped {
                self.effects.push_back(Effect::StopGreen);
            }
            if self.blue_terminated {
                self.effects.push_back(Effect::TerminateBlue);
            }
            self.effects.push_back(Effect::Finished(outcome));
        } else {
            self.emit(route);
            if matches!(self.green, Green::Starting | Green::Healthy) {
                self.emit(Effect::StartGreen);
            }
            match self.phase.clone() {
                Phase::Hook { event, execution_id, hook, .. } => {
                    self.emit(Effect::CancelHook { execution_id: execution_id.clone() });
                    let new_id = self.start_hook(event, hook, now);
                    self.note(
                        event,
                        format!("execution {execution_id} replaced by {new_id} after a restart"),
                    );
                }
                Phase::Install { .. } => {
                    self.phase =
                        Phase::Install { deadline: now.saturating_add(self.spec.install_timeout) };
                }
                // The new process pushes its routing again: a full wait for that push.
                Phase::RoutesServed { event, .. } => {
                    self.phase = Phase::RoutesServed {
                        event,
                        deadline: now.saturating_add(ROUTES_SERVED_TIMEOUT),
                    };
                }
                Phase::Created
                | Phase::ReadyWait { .. }
                | Phase::Shift { .. }
                | Phase::TerminationWait { .. }
                | Phase::Finished => {}
            }
        }
        self.debug_assert_invariants();
    }

    pub fn status(&self) -> DeploymentStatus {
        self.status
    }

    /// The lifecycle event in progress; `None` during the ready and termination waits and once
    /// finished.
    pub fn current_event(&self) -> Option<LifecycleEvent> {
        self.events
            .iter()
            .find(|it| it.status == LifecycleEventStatus::InProgress)
            .map(|it| it.event)
    }

    /// `(production_green_percent, test_to_green)`, as last routed.
    pub fn routing(&self) -> (u8, bool) {
        (self.production_green_percent, self.test_to_green)
    }

    pub fn is_finished(&self) -> bool {
        self.outcome.is_some()
    }

    /// Whether an [`Input::Alarm`] would stop the deployment now: from test traffic (production
    /// traffic, without a test listener) until blue is terminated. The control plane hands an
    /// alarm over only then; before, the machine would only note it.
    pub fn is_watching_alarms(&self) -> bool {
        self.alarms_watched()
    }

    /// Whether the machine waits for [`Input::RoutesServed`]: the shell tells it once the load
    /// balancer confirmed the routing it was last given.
    pub fn awaits_routes_served(&self) -> bool {
        matches!(self.phase, Phase::RoutesServed { .. })
    }

    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Every lifecycle event in execution order, including those still `Pending`.
    pub fn events(&self) -> &[EventRecord] {
        &self.events
    }

    pub fn spec(&self) -> &RolloutSpec {
        &self.spec
    }

    fn observe(&mut self, now: Timestamp) -> Timestamp {
        debug_assert!(now >= self.now, "time went backwards: {now} after {}", self.now);
        let now = now.max(self.now);
        self.now = now;
        now
    }

    fn fire_due_deadlines(&mut self, now: Timestamp) {
        // Each firing moves to a later phase or applies every due shift step at once, so the
        // sequence bounds the loop.
        for _ in 0..2 * SEQUENCE.len() {
            match self.poll_timeout() {
                Some(deadline) if deadline <= now => self.on_deadline(now),
                _ => return,
            }
        }
        debug_assert!(false, "deadlines kept firing at {now}: {:?}", self.phase);
    }

    fn on_deadline(&mut self, now: Timestamp) {
        let on_failure = self.spec.auto_rollback.on_failure;
        match self.phase.clone() {
            Phase::Hook { hook, .. } => {
                let message =
                    format!("hook {} timed out after {}", hook.name, format_duration(hook.timeout));
                self.end_unsuccessfully(
                    DeploymentStatus::Failed,
                    ErrorCode::HookExecutionFailure,
                    message,
                    on_failure,
                    now,
                );
            }
            Phase::Install { .. } => {
                let started = self.record(LifecycleEvent::Install).start.unwrap_or(now);
                let message = format!(
                    "green tasks were not healthy after {} (install timeout {})",
                    format_duration(now.since(started)),
                    format_duration(self.spec.install_timeout)
                );
                self.end_unsuccessfully(
                    DeploymentStatus::Failed,
                    ErrorCode::CustomerApplicationUnhealthy,
                    message,
                    on_failure,
                    now,
                );
            }
            Phase::ReadyWait { .. } => {
                let wait = self.spec.ready_wait.unwrap_or_default();
                let message =
                    format!("ready wait of {} expired without a continue", format_duration(wait));
                self.end_unsuccessfully(
                    DeploymentStatus::Stopped,
                    ErrorCode::Timeout,
                    message,
                    self.spec.auto_rollback.on_stop_request,
                    now,
                );
            }
            Phase::Shift { .. } => {
                if self.apply_due_shifts(now) {
                    self.await_routes_served(LifecycleEvent::AllowTraffic, now);
                }
            }
            Phase::RoutesServed { event, .. } => {
                let message = format!(
                    "the load balancer did not serve {} within {}",
                    routed_by(event),
                    format_duration(ROUTES_SERVED_TIMEOUT)
                );
                self.end_unsuccessfully(
                    DeploymentStatus::Failed,
                    ErrorCode::Timeout,
                    message,
                    on_failure,
                    now,
                );
            }
            Phase::TerminationWait { .. } => self.run_from(step_after(Step::TerminationWait), now),
            Phase::Created | Phase::Finished => {}
        }
    }

    fn apply(&mut self, input: Input, now: Timestamp) -> Result<(), InputError> {
        if self.outcome.is_some() {
            return self.apply_after_finish(input);
        }
        let auto_rollback = self.spec.auto_rollback;
        match input {
            Input::GreenHealthy => {
                if let Phase::Install { .. } = self.phase {
                    self.green = Green::Healthy;
                    self.end_event(
                        LifecycleEvent::Install,
                        LifecycleEventStatus::Succeeded,
                        None,
                        now,
                    );
                    self.run_from(step_after(Step::Event(LifecycleEvent::Install)), now);
                }
                Ok(())
            }
            Input::GreenUnhealthy { reason } => {
                if matches!(self.green, Green::Starting | Green::Healthy) {
                    self.green = Green::Unhealthy;
                    self.end_unsuccessfully(
                        DeploymentStatus::Failed,
                        ErrorCode::CustomerApplicationUnhealthy,
                        format!("green is unhealthy: {}", clean_text(&reason)),
                        auto_rollback.on_failure,
                        now,
                    );
                }
                Ok(())
            }
            Input::HookResult { execution_id, succeeded, message } => {
                self.apply_hook_result(execution_id, succeeded, &message, now)
            }
            Input::ContinueReadyWait => {
                let Phase::ReadyWait { .. } = self.phase else {
                    return Err(InputError::NotWaitingForReady);
                };
                self.set_status(DeploymentStatus::InProgress);
                self.run_from(step_after(Step::ReadyWait), now);
                Ok(())
            }
            Input::ContinueTerminationWait => {
                let Phase::TerminationWait { .. } = self.phase else {
                    return Err(InputError::NotWaitingForTermination);
                };
                self.run_from(step_after(Step::TerminationWait), now);
                Ok(())
            }
            Input::Stop { rollback } => {
                self.end_unsuccessfully(
                    DeploymentStatus::Stopped,
                    ErrorCode::ManualStop,
                    "stopped by request".to_string(),
                    rollback.unwrap_or(auto_rollback.on_stop_request),
                    now,
                );
                Ok(())
            }
            Input::RoutesServed => {
                if let Phase::RoutesServed { event, .. } = self.phase {
                    self.end_event(event, LifecycleEventStatus::Succeeded, None, now);
                    self.run_from(step_after(Step::Event(event)), now);
                }
                Ok(())
            }
            Input::Alarm { name, reason } => {
                let (name, reason) = (clean_text(&name), clean_text(&reason));
                if self.alarms_watched() {
                    self.end_unsuccessfully(
                        DeploymentStatus::Stopped,
                        ErrorCode::AlarmActive,
                        format!("alarm {name}: {reason}"),
                        auto_rollback.on_alarm,
                        now,
                    );
                } else {
                    let from = self.alarm_watch_start();
                    let latest = self
                        .events
                        .iter()
                        .rev()
                        .find(|it| it.status != LifecycleEventStatus::Pending)
                        .map_or(LifecycleEvent::BeforeInstall, |it| it.event);
                    self.note(
                        latest,
                        format!("alarm {name} ignored (alarms are watched from {from}): {reason}"),
                    );
                }
                Ok(())
            }
        }
    }

    fn apply_hook_result(
        &mut self,
        execution_id: String,
        succeeded: bool,
        message: &str,
        now: Timestamp,
    ) -> Result<(), InputError> {
        let (event, hook) = match &self.phase {
            Phase::Hook { event, execution_id: current, hook, .. } if *current == execution_id => {
                (*event, hook.clone())
            }
            _ => {
                return if self.is_duplicate_report(&execution_id, succeeded) {
                    Ok(())
                } else {
                    Err(InputError::UnknownHookExecution(clean_text(&execution_id)))
                };
            }
        };
        // Recorded before ending the deployment so that the hook is not cancelled: it is done.
        self.hook_reports.push(HookReport { execution_id, succeeded });
        let message = clean_text(message);
        if succeeded {
            let message = (!message.is_empty()).then_some(message);
            self.end_event(event, LifecycleEventStatus::Succeeded, message, now);
            self.run_from(step_after(Step::Event(event)), now);
        } else {
            let message = if message.is_empty() {
                format!("hook {} failed", hook.name)
            } else {
                format!("hook {} failed: {message}", hook.name)
            };
            self.end_unsuccessfully(
                DeploymentStatus::Failed,
                ErrorCode::HookExecutionFailure,
                message,
                self.spec.auto_rollback.on_failure,
                now,
            );
        }
        Ok(())
    }

    fn apply_after_finish(&mut self, input: Input) -> Result<(), InputError> {
        match input {
            Input::Stop { .. } if self.blue_terminated => Err(InputError::PastPointOfNoReturn),
            Input::Stop { .. } | Input::ContinueReadyWait | Input::ContinueTerminationWait => {
                Err(InputError::AlreadyFinished)
            }
            Input::HookResult { execution_id, succeeded, .. } => {
                if self.is_duplicate_report(&execution_id, succeeded) {
                    Ok(())
                } else {
                    Err(InputError::AlreadyFinished)
                }
            }
            // Observations of the world while the control plane tears down: nothing to decide.
            Input::GreenHealthy
            | Input::GreenUnhealthy { .. }
            | Input::Alarm { .. }
            | Input::RoutesServed => Ok(()),
        }
    }

    fn is_duplicate_report(&self, execution_id: &str, succeeded: bool) -> bool {
        self.hook_reports
            .iter()
            .any(|it| it.execution_id == execution_id && it.succeeded == succeeded)
    }

    fn alarm_watch_start(&self) -> LifecycleEvent {
        if self.spec.has_test_listener {
            LifecycleEvent::AllowTestTraffic
        } else {
            LifecycleEvent::AllowTraffic
        }
    }

    fn alarms_watched(&self) -> bool {
        self.record(self.alarm_watch_start()).status != LifecycleEventStatus::Pending
            && !self.blue_terminated
            && self.outcome.is_none()
    }

    /// Runs steps from `SEQUENCE[idx]` until one has to wait.
    fn run_from(&mut self, idx: usize, now: Timestamp) {
        for &step in &SEQUENCE[idx.min(SEQUENCE.len())..] {
            if self.begin_step(step, now) == Flow::Wait {
                return;
            }
        }
        debug_assert!(false, "the sequence ran out without finishing");
    }

    fn begin_step(&mut self, step: Step, now: Timestamp) -> Flow {
        use LifecycleEvent as E;
        match step {
            Step::Event(
                event @ (E::BeforeInstall
                | E::AfterInstall
                | E::AfterAllowTestTraffic
                | E::BeforeAllowTraffic
                | E::AfterAllowTraffic),
            ) => {
                let hook = self.spec.hooks.get(&event).cloned();
                if event == E::AfterAllowTestTraffic && !self.spec.has_test_listener {
                    let message = match hook {
                        Some(hook) => format!("hook {} not run: no test listener", hook.name),
                        None => "no test listener".to_string(),
                    };
                    self.skip_event(event, Some(message), now);
                    return Flow::Next;
                }
                match hook {
                    Some(hook) => {
                        self.begin_event(event, now);
                        self.start_hook(event, hook, now);
                        Flow::Wait
                    }
                    None => {
                        self.skip_event(event, None, now);
                        Flow::Next
                    }
                }
            }
            Step::Event(E::Install) => {
                self.begin_event(E::Install, now);
                self.green = Green::Starting;
                self.emit(Effect::StartGreen);
                self.phase =
                    Phase::Install { deadline: now.saturating_add(self.spec.install_timeout) };
                Flow::Wait
            }
            Step::Event(E::AllowTestTraffic) => {
                if !self.spec.has_test_listener {
                    self.skip_event(E::AllowTestTraffic, Some("no test listener".to_string()), now);
                    return Flow::Next;
                }
                self.begin_event(E::AllowTestTraffic, now);
                self.set_route(0, true);
                self.await_routes_served(E::AllowTestTraffic, now);
                Flow::Wait
            }
            Step::ReadyWait => match self.spec.ready_wait {
                None => Flow::Next,
                Some(wait) => {
                    self.set_status(DeploymentStatus::Ready);
                    self.phase = Phase::ReadyWait { deadline: now.saturating_add(wait) };
                    Flow::Wait
                }
            },
            Step::Event(E::AllowTraffic) => {
                self.begin_event(E::AllowTraffic, now);
                self.phase = Phase::Shift { t0: now, applied: 0 };
                if self.apply_due_shifts(now) {
                    self.await_routes_served(E::AllowTraffic, now);
                }
                Flow::Wait
            }
            Step::TerminationWait => {
                if self.spec.termination_wait.is_zero() {
                    return Flow::Next;
                }
                self.set_status(DeploymentStatus::Baking);
                self.phase = Phase::TerminationWait {
                    deadline: now.saturating_add(self.spec.termination_wait),
                };
                Flow::Wait
            }
            Step::Event(E::End) => {
                self.begin_event(E::End, now);
                self.blue_terminated = true;
                self.emit(Effect::TerminateBlue);
                self.end_event(E::End, LifecycleEventStatus::Succeeded, None, now);
                self.set_status(DeploymentStatus::Succeeded);
                self.finish(Outcome {
                    status: DeploymentStatus::Succeeded,
                    error: None,
                    rolled_back: false,
                });
                Flow::Wait
            }
        }
    }

    /// Starts a new execution of `hook` and returns its id.
    fn start_hook(&mut self, event: LifecycleEvent, hook: Hook, now: Timestamp) -> String {
        self.hook_executions += 1;
        let execution_id = format!("{event}-{}", self.hook_executions);
        self.emit(Effect::RunHook {
            event,
            execution_id: execution_id.clone(),
            hook: hook.name.clone(),
            timeout: hook.timeout,
        });
        self.phase = Phase::Hook {
            event,
            execution_id: execution_id.clone(),
            deadline: now.saturating_add(hook.timeout),
            hook,
        };
        execution_id
    }

    /// Routes every schedule step due at `now` (only the latest weight is emitted) and says whether
    /// the shift is complete.
    fn apply_due_shifts(&mut self, now: Timestamp) -> bool {
        let Phase::Shift { t0, applied } = self.phase else {
            debug_assert!(false, "apply_due_shifts outside AllowTraffic: {:?}", self.phase);
            return false;
        };
        let schedule = self.spec.routing.schedule();
        let due = schedule.iter().take_while(|shift| t0.saturating_add(shift.after) <= now).count();
        if due > applied {
            self.phase = Phase::Shift { t0, applied: due };
            self.set_route(schedule[due - 1].green_percent, self.spec.has_test_listener);
        }
        let complete = due >= schedule.len();
        // A schedule from a valid config always ends at 100%; this keeps an invalid one from
        // terminating blue while production is still on it.
        if complete && self.production_green_percent != 100 {
            self.set_route(100, self.spec.has_test_listener);
        }
        complete
    }

    /// `event` has routed; it ends when the load balancer serves that routing.
    fn await_routes_served(&mut self, event: LifecycleEvent, now: Timestamp) {
        let deadline = now.saturating_add(ROUTES_SERVED_TIMEOUT);
        self.phase = Phase::RoutesServed { event, deadline };
    }

    /// Stops or fails the deployment, rolling back if asked and possible.
    fn end_unsuccessfully(
        &mut self,
        status: DeploymentStatus,
        code: ErrorCode,
        message: String,
        rollback_wanted: bool,
        now: Timestamp,
    ) {
        if let Some(event) = self.current_event() {
            self.end_event(event, LifecycleEventStatus::Failed, Some(message.clone()), now);
        }
        if let Phase::Hook { execution_id, .. } = &self.phase
            && !self.hook_reports.iter().any(|it| it.execution_id == *execution_id)
        {
            let execution_id = execution_id.clone();
            self.emit(Effect::CancelHook { execution_id });
        }
        // In BeforeInstall nothing exists yet, so there is nothing to roll back.
        let rolled_back = rollback_wanted && self.green != Green::Absent && !self.blue_terminated;
        if rolled_back {
            self.set_route(0, false);
            self.emit(Effect::StopGreen);
            self.green = Green::Stopped;
        } else if self.green == Green::Unhealthy && self.production_green_percent > 0 {
            // Production never stays on an unhealthy green, rollback or not.
            self.set_route(0, self.test_to_green);
        }
        self.set_status(status);
        self.finish(Outcome { status, error: Some((code, message)), rolled_back });
    }

    fn finish(&mut self, outcome: Outcome) {
        self.emit(Effect::Finished(outcome.clone()));
        self.outcome = Some(outcome);
        self.phase = Phase::Finished;
    }

    fn emit(&mut self, effect: Effect) {
        debug_assert!(self.outcome.is_none(), "a finished rollout emitted `{effect}`");
        self.effects.push_back(effect);
    }

    fn set_status(&mut self, status: DeploymentStatus) {
        if self.status != status {
            self.status = status;
            self.emit(Effect::Status(status));
        }
    }

    fn set_route(&mut self, production_green_percent: u8, test_to_green: bool) {
        self.production_green_percent = production_green_percent.min(100);
        self.test_to_green = test_to_green;
        self.emit(Effect::Route {
            production_green_percent: self.production_green_percent,
            test_to_green,
        });
    }

    fn record(&self, event: LifecycleEvent) -> &EventRecord {
        &self.events[event_index(event)]
    }

    fn record_mut(&mut self, event: LifecycleEvent) -> &mut EventRecord {
        &mut self.events[event_index(event)]
    }

    fn emit_record(&mut self, event: LifecycleEvent) {
        let record = self.record(event);
        let effect =
            Effect::Event { event, status: record.status, message: record.message.clone() };
        self.emit(effect);
    }

    fn begin_event(&mut self, event: LifecycleEvent, now: Timestamp) {
        let record = self.record_mut(event);
        record.status = LifecycleEventStatus::InProgress;
        record.start = Some(now);
        self.emit_record(event);
    }

    fn end_event(
        &mut self,
        event: LifecycleEvent,
        status: LifecycleEventStatus,
        message: Option<String>,
        now: Timestamp,
    ) {
        let record = self.record_mut(event);
        record.status = status;
        record.start.get_or_insert(now);
        record.end = Some(now);
        if let Some(message) = message {
            append_message(record, &message);
        }
        self.emit_record(event);
    }

    fn skip_event(&mut self, event: LifecycleEvent, message: Option<String>, now: Timestamp) {
        self.end_event(event, LifecycleEventStatus::Skipped, message, now);
    }

    /// Adds a note to an event's message without changing its status.
    fn note(&mut self, event: LifecycleEvent, note: String) {
        append_message(self.record_mut(event), &note);
        self.emit_record(event);
    }

    fn debug_assert_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        let (percent, test_to_green) = self.routing();
        assert!(percent <= 100, "green carries {percent}% of production");
        assert!(
            percent == 0 || self.green == Green::Healthy,
            "production is {percent}% on a green that is {:?}",
            self.green
        );
        assert!(
            !test_to_green || matches!(self.green, Green::Healthy | Green::Unhealthy),
            "test traffic goes to a green that is {:?}",
            self.green
        );
        let finished = self.outcome.is_some();
        assert_eq!(finished, self.phase == Phase::Finished, "phase {:?}", self.phase);
        assert_eq!(finished, self.status.is_terminal(), "status {}", self.status);
        assert_eq!(self.blue_terminated, self.status == DeploymentStatus::Succeeded);
        if self.blue_terminated {
            assert_eq!(percent, 100, "blue was terminated while it served production");
        }
        if let Some(outcome) = &self.outcome {
            assert_eq!(outcome.status, self.status);
            if outcome.rolled_back {
                assert_eq!((percent, test_to_green), (0, false), "rolled back but still routed");
                assert_eq!(self.green, Green::Stopped);
            }
        }
        if let Some(idx) = self.effects.iter().position(|it| matches!(it, Effect::Finished(_))) {
            assert_eq!(idx + 1, self.effects.len(), "effects after Finished: {:?}", self.effects);
        }
        if self.finished_delivered {
            assert!(finished && self.effects.is_empty(), "a finished rollout emits nothing more");
            assert_eq!(self.poll_timeout(), None);
        }
        let in_progress =
            self.events.iter().filter(|it| it.status == LifecycleEventStatus::InProgress).count();
        assert!(in_progress <= 1, "{in_progress} events in progress");
        if let Phase::Hook { event, .. } | Phase::RoutesServed { event, .. } = &self.phase {
            assert_eq!(self.current_event(), Some(*event));
        }
        assert_eq!(self.events.len(), LifecycleEvent::ALL.len());
    }
}

/// The event records of a snapshot, refused unless they list every event in order: the machine
/// indexes them by event.
fn deserialize_events<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<EventRecord>, D::Error> {
    let events = Vec::<EventRecord>::deserialize(d)?;
    if !events.iter().map(|it| it.event).eq(LifecycleEvent::ALL) {
        return Err(serde::de::Error::custom(
            "a rollout snapshot must list every lifecycle event once, in order",
        ));
    }
    Ok(events)
}

fn event_index(event: LifecycleEvent) -> usize {
    LifecycleEvent::ALL
        .iter()
        .position(|it| *it == event)
        .expect("invariant: LifecycleEvent::ALL lists every event")
}

fn append_message(record: &mut EventRecord, message: &str) {
    let joined = match record.message.take() {
        None => message.to_string(),
        Some(old) => format!("{old}; {message}"),
    };
    record.message = Some(truncate(joined, MESSAGE_BYTES_MAX));
}

/// Text from outside, made safe for one-line output and bounded.
fn clean_text(text: &str) -> String {
    one_line(text, TEXT_BYTES_MAX)
}

/// What the load balancer must serve before `event` (a routing event) ends, for messages.
fn routed_by(event: LifecycleEvent) -> &'static str {
    match event {
        LifecycleEvent::AllowTestTraffic => "test traffic on green",
        _ => "production traffic on green",
    }
}
