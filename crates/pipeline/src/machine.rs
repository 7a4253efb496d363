//! The `Pipeline` state machine: executions moving through locked stages, their actions, and the
//! rules across executions (waiting, superseding, queueing, retry).

use std::collections::VecDeque;

use model::text::{one_line, truncate};
use model::{Timestamp, format_duration};
use serde::{Deserialize, Serialize};

use crate::record::{
    ActionRecord, ActionStatus, ArtifactId, Decision, ExecutionRecord, ExecutionStatus, Position,
    Revision, StageRecord, StageStatus, StopRequest,
};
use crate::spec::{ActionKind, ExecutionMode, PipelineSpec, SpecError};
use crate::{
    ACTIVE_EXECUTIONS_MAX, CANCELS_KEPT, EXECUTION_ID_BYTES_MAX, Effect, HISTORY_MAX, Input,
    InputError, MESSAGE_BYTES_MAX, RetryMode, TEXT_BYTES_MAX,
};

/// Who holds a stage, who waits in front of it, and who entered it last (for retry).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StageLock {
    holder: Option<String>,
    /// Arrival order; at most one entry in SUPERSEDED mode.
    waiting: VecDeque<String>,
    last_entered: Option<String>,
}

/// One run of one action, as `CancelAction` names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RunKey {
    execution_id: String,
    stage: String,
    action: String,
    run: u32,
    kind: ActionKind,
}

impl RunKey {
    fn cancel_effect(&self) -> Effect {
        Effect::CancelAction {
            execution_id: self.execution_id.clone(),
            stage: self.stage.clone(),
            action: self.action.clone(),
            run: self.run,
            kind: self.kind,
        }
    }
}

/// An approval waiting for a decision, for `approvals list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingApproval {
    pub execution_id: String,
    pub stage: String,
    pub action: String,
    pub deadline: Timestamp,
}

/// Every execution of one pipeline. See the crate docs for the rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Snapshot")]
pub struct Pipeline {
    spec: PipelineSpec,
    /// One per stage of the spec.
    locks: Vec<StageLock>,
    /// Unfinished executions, oldest (lowest `seq`) first.
    active: Vec<ExecutionRecord>,
    /// Finished executions, oldest first, at most `HISTORY_MAX`.
    history: VecDeque<ExecutionRecord>,
    /// How many executions were started; the next one's `seq` is this plus one.
    executions_started: u64,
    /// Cancelled runs that have not reported since, oldest first, at most `CANCELS_KEPT`.
    pending_cancels: VecDeque<RunKey>,
    effects: VecDeque<Effect>,
    /// The latest time seen.
    now: Timestamp,
}

/// A snapshot as read, before it is checked against its own spec.
#[derive(Deserialize)]
struct Snapshot {
    spec: PipelineSpec,
    locks: Vec<StageLock>,
    active: Vec<ExecutionRecord>,
    history: VecDeque<ExecutionRecord>,
    executions_started: u64,
    pending_cancels: VecDeque<RunKey>,
    effects: VecDeque<Effect>,
    now: Timestamp,
}

/// A snapshot that does not describe a machine this crate could have written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSnapshot {
    #[error("the snapshot's pipeline spec is invalid: {0}")]
    Spec(SpecError),
    #[error("a pipeline snapshot has one stage lock per stage")]
    Locks,
    #[error("execution `{0}` in the snapshot does not match the pipeline's stages and actions")]
    Stages(String),
    #[error("active execution `{0}` in the snapshot is not inside or in front of a stage")]
    Position(String),
    #[error("a stage lock in the snapshot names an execution that is not active")]
    LockHolder,
}

impl TryFrom<Snapshot> for Pipeline {
    type Error = InvalidSnapshot;

    /// Refuses a snapshot whose records do not match its spec: the machine indexes them by
    /// position.
    fn try_from(s: Snapshot) -> Result<Pipeline, InvalidSnapshot> {
        s.spec.validate().map_err(InvalidSnapshot::Spec)?;
        if s.locks.len() != s.spec.stages.len() {
            return Err(InvalidSnapshot::Locks);
        }
        for record in s.active.iter().chain(&s.history) {
            let matches = record.stages.len() == s.spec.stages.len()
                && record.stages.iter().zip(&s.spec.stages).all(|(r, spec)| {
                    r.name == spec.name
                        && r.actions.len() == spec.actions.len()
                        && r.actions
                            .iter()
                            .zip(&spec.actions)
                            .all(|(r, spec)| r.name == spec.name && r.kind == spec.kind)
                });
            if !matches {
                return Err(InvalidSnapshot::Stages(record.id.clone()));
            }
        }
        let stages = s.spec.stages.len();
        for rec in &s.active {
            let in_range = match rec.position {
                Position::InStage(i) | Position::Waiting(i) => i > 0 && i < stages,
                Position::Done => false,
            };
            if !in_range || rec.status.is_terminal() {
                return Err(InvalidSnapshot::Position(rec.id.clone()));
            }
        }
        let known = |id: &String| s.active.iter().any(|it| it.id == *id);
        if !s.locks.iter().all(|lock| lock.holder.iter().chain(&lock.waiting).all(known)) {
            return Err(InvalidSnapshot::LockHolder);
        }
        let mut history = s.history;
        while history.len() > HISTORY_MAX {
            history.pop_front();
        }
        let mut pending_cancels = s.pending_cancels;
        while pending_cancels.len() > CANCELS_KEPT {
            pending_cancels.pop_front();
        }
        Ok(Pipeline {
            spec: s.spec,
            locks: s.locks,
            active: s.active,
            history,
            executions_started: s.executions_started,
            pending_cancels,
            effects: s.effects,
            now: s.now,
        })
    }
}

impl Pipeline {
    /// A pipeline with no executions yet; refuses a spec that [`PipelineSpec::validate`] refuses.
    pub fn new(spec: PipelineSpec, now: Timestamp) -> Result<Pipeline, SpecError> {
        spec.validate()?;
        let pipeline = Pipeline {
            locks: vec![StageLock::default(); spec.stages.len()],
            spec,
            active: Vec::new(),
            history: VecDeque::new(),
            executions_started: 0,
            pending_cancels: VecDeque::new(),
            effects: VecDeque::new(),
            now,
        };
        pipeline.debug_assert_invariants(true);
        Ok(pipeline)
    }

    /// Applies an input at `now`, after any deadline already due. `Err` means nothing changed
    /// because of the input (a due deadline may still have been handled).
    pub fn handle_input(&mut self, input: Input, now: Timestamp) -> Result<(), InputError> {
        let now = self.observe(now);
        self.fire_due_deadlines(now);
        let res = self.apply(input, now);
        self.fire_due_deadlines(now);
        self.debug_assert_invariants(true);
        res
    }

    /// Handles every deadline due at `now`; a call before the next deadline does nothing.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let now = self.observe(now);
        self.fire_due_deadlines(now);
        self.debug_assert_invariants(true);
    }

    /// When `handle_timeout` should be called next: the earliest deadline of an action in
    /// progress. `None` when nothing runs.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.in_flight().filter_map(|(_, _, _, act)| act.deadline).min()
    }

    /// The next effect to perform, in order.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// After restoring a snapshot in a new process: keeps the effects not yet polled, then asks
    /// again for every action in progress (`StartAction` with the same run and deadline) and for
    /// every cancellation not confirmed by a result (`CancelAction`), skipping any already queued.
    /// Deadlines are kept; any that passed fire at the next `handle_timeout`.
    pub fn resume(&mut self, now: Timestamp) {
        // A restarted process may read an earlier wall clock; that is not a bug here.
        self.now = now.max(self.now);
        let mut again = Vec::new();
        for (rec, s, a, act) in self.in_flight() {
            if act.cancel_requested {
                continue; // its cancellation is in `pending_cancels`
            }
            let spec = &self.spec.stages[s].actions[a];
            again.push(Effect::StartAction {
                execution_id: rec.id.clone(),
                stage: self.spec.stages[s].name.clone(),
                action: spec.name.clone(),
                run: act.run,
                kind: spec.kind,
                config_key: spec.config_key.clone(),
                inputs: act.inputs.clone(),
                outputs: spec.output_artifacts.clone(),
                deadline: act.deadline.unwrap_or(self.now),
            });
        }
        again.extend(self.pending_cancels.iter().map(RunKey::cancel_effect));
        for effect in again {
            if !self.effects.contains(&effect) {
                self.effects.push_back(effect);
            }
        }
        self.debug_assert_invariants(false);
    }

    pub fn spec(&self) -> &PipelineSpec {
        &self.spec
    }

    /// Unfinished executions, oldest first.
    pub fn active(&self) -> &[ExecutionRecord] {
        &self.active
    }

    /// The kept finished executions, oldest first (at most [`HISTORY_MAX`]).
    pub fn history(&self) -> impl Iterator<Item = &ExecutionRecord> {
        self.history.iter()
    }

    /// An unfinished or kept finished execution.
    pub fn execution(&self, id: &str) -> Option<&ExecutionRecord> {
        self.active.iter().chain(&self.history).find(|it| it.id == id)
    }

    /// The execution inside stage `stage`.
    pub fn stage_holder(&self, stage: &str) -> Option<&str> {
        let s = self.spec.stage_index(stage)?;
        self.locks[s].holder.as_deref()
    }

    /// The executions waiting in front of stage `stage`, in the order they will enter.
    pub fn waiting(&self, stage: &str) -> Vec<&str> {
        match self.spec.stage_index(stage) {
            Some(s) => self.locks[s].waiting.iter().map(String::as_str).collect(),
            None => Vec::new(),
        }
    }

    /// The execution a retry of stage `stage` would re-run, if one may.
    pub fn retryable(&self, stage: &str) -> Option<&str> {
        let s = self.spec.stage_index(stage)?;
        let id = self.locks[s].last_entered.as_deref()?;
        self.check_retry(id, s).ok().map(|_| id)
    }

    /// Approvals waiting for a decision, oldest execution first.
    pub fn pending_approvals(&self) -> Vec<PendingApproval> {
        self.in_flight()
            .filter(|(_, _, _, act)| act.kind == ActionKind::Approval && !act.cancel_requested)
            .map(|(rec, s, a, act)| PendingApproval {
                execution_id: rec.id.clone(),
                stage: self.spec.stages[s].name.clone(),
                action: self.spec.stages[s].actions[a].name.clone(),
                deadline: act.deadline.unwrap_or(self.now),
            })
            .collect()
    }

    /// The approval of `execution_id` that waits for a decision (the one of `stage` and
    /// `action` when they are given), or why there is none, in words that name what exists.
    pub fn pending_approval(
        &self,
        execution_id: &str,
        stage: Option<&str>,
        action: Option<&str>,
    ) -> Result<PendingApproval, InputError> {
        let pending = self.pending_approvals().into_iter().find(|p| {
            p.execution_id == execution_id
                && stage.is_none_or(|s| s == p.stage)
                && action.is_none_or(|a| a == p.action)
        });
        if let Some(pending) = pending {
            return Ok(pending);
        }
        let Some(rec) = self.active.iter().find(|it| it.id == execution_id) else {
            return Err(self.not_active(execution_id));
        };
        if let (Some(stage), Some(action)) = (stage, action) {
            let (s, a) = self.locate(stage, action)?;
            return Err(InputError::NoPendingApproval {
                execution_id: execution_id.to_string(),
                stage: stage.to_string(),
                action: action.to_string(),
                current: describe(&rec.stages[s].actions[a]),
            });
        }
        let position = match rec.position {
            Position::InStage(s) => format!("in stage {}", self.spec.stages[s].name),
            Position::Waiting(s) => format!("waiting for stage {}", self.spec.stages[s].name),
            Position::Done => "done".to_string(),
        };
        Err(InputError::NotAwaitingApproval {
            execution_id: execution_id.to_string(),
            current: format!("{}, {position}", rec.status),
        })
    }

    /// No execution is unfinished.
    pub fn is_idle(&self) -> bool {
        self.active.is_empty()
    }

    fn observe(&mut self, now: Timestamp) -> Timestamp {
        debug_assert!(now >= self.now, "time went backwards: {now} after {}", self.now);
        let now = now.max(self.now);
        self.now = now;
        now
    }

    /// Every action in progress: its execution, stage index, action index and record.
    fn in_flight(
        &self,
    ) -> impl Iterator<Item = (&ExecutionRecord, usize, usize, &ActionRecord)> + '_ {
        self.active.iter().flat_map(|rec| {
            rec.stages.iter().enumerate().flat_map(move |(s, stage)| {
                stage
                    .actions
                    .iter()
                    .enumerate()
                    .filter(|(_, act)| act.status == Some(ActionStatus::InProgress))
                    .map(move |(a, act)| (rec, s, a, act))
            })
        })
    }

    fn fire_due_deadlines(&mut self, now: Timestamp) {
        // Each firing ends one action in progress; what it starts is due later (timeouts are at
        // least a second), so the actions in progress now bound the loop.
        let bound = self.in_flight().count();
        for _ in 0..=bound {
            let due = self
                .in_flight()
                .filter_map(|(rec, s, a, act)| {
                    act.deadline
                        .filter(|it| *it <= now)
                        .map(|it| (it, rec.seq, s, a, rec.id.clone()))
                })
                .min();
            let Some((_, _, s, a, id)) = due else { return };
            self.on_deadline(&id, s, a, now);
        }
        debug_assert!(false, "deadlines kept firing at {now}");
    }

    fn on_deadline(&mut self, id: &str, s: usize, a: usize, now: Timestamp) {
        let spec = &self.spec.stages[s].actions[a];
        let timeout = format_duration(spec.effective_timeout());
        let message = if spec.kind == ActionKind::Approval {
            format!("no decision within {timeout} (approval timeout)")
        } else {
            format!("timed out after {timeout}")
        };
        self.end_action(id, s, a, ActionStatus::Failed, Some(message), true, now);
        self.settle_stage(id, s, now);
    }

    fn apply(&mut self, input: Input, now: Timestamp) -> Result<(), InputError> {
        match input {
            Input::SourceChanged { execution_id, revision, artifact } => {
                self.source_changed(execution_id, revision, artifact, now)
            }
            Input::ActionStarted { execution_id, stage, action, run, external_ref } => {
                self.action_started(&execution_id, &stage, &action, run, &external_ref)
            }
            Input::ActionResult {
                execution_id,
                stage,
                action,
                run,
                succeeded,
                message,
                outputs,
                external_ref,
            } => {
                let report = Report { succeeded, message, outputs, external_ref };
                self.action_result(&execution_id, &stage, &action, run, report, now)
            }
            Input::Approve { execution_id, stage, action, comment, by } => {
                self.decide(&execution_id, &stage, &action, true, &comment, &by, now)
            }
            Input::Reject { execution_id, stage, action, comment, by } => {
                self.decide(&execution_id, &stage, &action, false, &comment, &by, now)
            }
            Input::Stop { execution_id, abandon, reason } => {
                self.stop(&execution_id, abandon, &reason, now)
            }
            Input::Retry { execution_id, stage, mode } => {
                self.retry(&execution_id, &stage, mode, now)
            }
        }
    }

    fn source_changed(
        &mut self,
        id: String,
        revision: Revision,
        artifact: ArtifactId,
        now: Timestamp,
    ) -> Result<(), InputError> {
        check_execution_id(&id)?;
        if self.execution(&id).is_some() {
            return Err(InputError::DuplicateExecution(id));
        }
        if self.active.len() >= ACTIVE_EXECUTIONS_MAX {
            return Err(InputError::TooManyExecutions { limit: ACTIVE_EXECUTIONS_MAX });
        }
        self.executions_started += 1;
        let revision = Revision {
            commit: clean_text(&revision.commit),
            branch: clean_text(&revision.branch),
            pushed_by: clean_text(&revision.pushed_by),
            message: clean_text(&revision.message),
        };
        let source_output = self.spec.stages[0].actions[0].output_artifacts[0].clone();
        let mut stages: Vec<StageRecord> = self
            .spec
            .stages
            .iter()
            .map(|stage| StageRecord {
                name: stage.name.clone(),
                status: None,
                attempt: 0,
                started: None,
                ended: None,
                message: None,
                actions: stage
                    .actions
                    .iter()
                    .map(|action| ActionRecord {
                        name: action.name.clone(),
                        kind: action.kind,
                        status: None,
                        run: 0,
                        started: None,
                        ended: None,
                        deadline: None,
                        message: None,
                        external_ref: None,
                        inputs: Vec::new(),
                        outputs: Vec::new(),
                        cancel_requested: false,
                        decision: None,
                    })
                    .collect(),
            })
            .collect();
        // The source stage and its action complete at once: the artifact is already stored.
        let source = &mut stages[0];
        source.status = Some(StageStatus::Succeeded);
        source.attempt = 1;
        source.started = Some(now);
        source.ended = Some(now);
        let action = &mut source.actions[0];
        action.status = Some(ActionStatus::Succeeded);
        action.run = 1;
        action.started = Some(now);
        action.ended = Some(now);
        action.outputs = vec![(source_output.clone(), artifact.clone())];
        action.external_ref = Some(revision.commit.clone()).filter(|it| !it.is_empty());
        self.active.push(ExecutionRecord {
            id: id.clone(),
            seq: self.executions_started,
            revision,
            status: ExecutionStatus::InProgress,
            message: None,
            started: now,
            ended: None,
            position: Position::InStage(0),
            stop: None,
            stages,
            artifacts: vec![(source_output, artifact)],
        });
        self.emit_execution(&id);
        self.emit_action(&id, 0, 0);
        self.emit_stage(&id, 0);
        self.locks[0].last_entered = Some(id.clone());
        self.arrive(&id, 1, now);
        Ok(())
    }

    fn action_started(
        &mut self,
        id: &str,
        stage: &str,
        action: &str,
        run: u32,
        external_ref: &str,
    ) -> Result<(), InputError> {
        let (s, a) = self.locate(stage, action)?;
        let Some(idx) = self.active.iter().position(|it| it.id == id) else {
            return Err(self.not_active(id));
        };
        let act = &mut self.active[idx].stages[s].actions[a];
        if act.run != run || act.status != Some(ActionStatus::InProgress) {
            return Err(InputError::NotRunning {
                execution_id: id.to_string(),
                stage: stage.to_string(),
                action: action.to_string(),
                run,
                current: describe(act),
            });
        }
        act.external_ref = Some(clean_text(external_ref)).filter(|it| !it.is_empty());
        self.emit_action(id, s, a);
        Ok(())
    }

    fn action_result(
        &mut self,
        id: &str,
        stage: &str,
        action: &str,
        run: u32,
        report: Report,
        now: Timestamp,
    ) -> Result<(), InputError> {
        let (s, a) = self.locate(stage, action)?;
        let kind = self.spec.stages[s].actions[a].kind;
        if kind == ActionKind::Approval {
            return Err(InputError::UseApproveOrReject {
                stage: stage.to_string(),
                action: action.to_string(),
            });
        }
        let Some(rec) = self.execution(id) else {
            return Err(InputError::UnknownExecution(id.to_string()));
        };
        let act = &rec.stages[s].actions[a];
        let key = RunKey {
            execution_id: id.to_string(),
            stage: stage.to_string(),
            action: action.to_string(),
            run,
            kind,
        };
        let in_progress = act.run == run && act.status == Some(ActionStatus::InProgress);
        if !in_progress {
            // The cancelled build or deployment finishing: nothing to decide.
            if let Some(i) = self.pending_cancels.iter().position(|it| *it == key) {
                self.pending_cancels.remove(i);
                return Ok(());
            }
            let verdict =
                if report.succeeded { ActionStatus::Succeeded } else { ActionStatus::Failed };
            if act.run == run && act.status == Some(verdict) && !act.cancel_requested {
                return Ok(()); // a repeated report
            }
            return Err(InputError::NotRunning {
                execution_id: id.to_string(),
                stage: stage.to_string(),
                action: action.to_string(),
                run,
                current: describe(act),
            });
        }
        // Only a stop leaves a running action with a cancel requested: a deployment that ends
        // unsuccessfully after it was asked to stop was stopped, not failed, and CodePipeline
        // calls what a stop ended Abandoned.
        let stopped_reason = match &self.active_ref(id).stop {
            Some(stop) if act.cancel_requested => Some(stop.reason.clone()),
            _ => None,
        };
        if act.cancel_requested {
            self.pending_cancels.retain(|it| *it != key);
        }
        let declared = &self.spec.stages[s].actions[a].output_artifacts;
        let message = clean_text(&report.message);
        let (status, message, outputs) = if !report.succeeded {
            match stopped_reason {
                Some(reason) => {
                    let message = if message.is_empty() {
                        format!("abandoned: {reason}")
                    } else {
                        format!("abandoned: {reason}; {message}")
                    };
                    (ActionStatus::Abandoned, message, Vec::new())
                }
                None => (ActionStatus::Failed, message, Vec::new()),
            }
        } else {
            match check_outputs(declared, &report.outputs) {
                Ok(()) => (ActionStatus::Succeeded, message, report.outputs),
                Err(problem) => {
                    let message = if message.is_empty() {
                        format!("reported success, but {problem}")
                    } else {
                        format!("reported success ({message}), but {problem}")
                    };
                    (ActionStatus::Failed, message, Vec::new())
                }
            }
        };
        let rec = self.active_mut(id);
        for (name, artifact) in &outputs {
            set_artifact(&mut rec.artifacts, name, artifact.clone());
        }
        let act = &mut rec.stages[s].actions[a];
        act.outputs = outputs;
        if let Some(external_ref) = report.external_ref.map(|it| clean_text(&it))
            && !external_ref.is_empty()
        {
            act.external_ref = Some(external_ref);
        }
        let message = Some(truncate(message, MESSAGE_BYTES_MAX)).filter(|it| !it.is_empty());
        self.end_action(id, s, a, status, message, false, now);
        self.settle_stage(id, s, now);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        id: &str,
        stage: &str,
        action: &str,
        approved: bool,
        comment: &str,
        by: &str,
        now: Timestamp,
    ) -> Result<(), InputError> {
        let (s, a) = self.locate(stage, action)?;
        if self.spec.stages[s].actions[a].kind != ActionKind::Approval {
            return Err(InputError::NotAnApproval {
                stage: stage.to_string(),
                action: action.to_string(),
            });
        }
        let Some(idx) = self.active.iter().position(|it| it.id == id) else {
            return Err(self.not_active(id));
        };
        let act = &mut self.active[idx].stages[s].actions[a];
        if act.status != Some(ActionStatus::InProgress) {
            return Err(InputError::NoPendingApproval {
                execution_id: id.to_string(),
                stage: stage.to_string(),
                action: action.to_string(),
                current: describe(act),
            });
        }
        let by = Some(clean_text(by)).filter(|it| !it.is_empty()).unwrap_or("someone".to_string());
        let comment = clean_text(comment);
        let verb = if approved { "approved" } else { "rejected" };
        let message = if comment.is_empty() {
            format!("{verb} by {by}")
        } else {
            format!("{verb} by {by}: {comment}")
        };
        act.decision = Some(Decision { approved, by, comment });
        let status = if approved { ActionStatus::Succeeded } else { ActionStatus::Failed };
        self.end_action(id, s, a, status, Some(message), false, now);
        self.settle_stage(id, s, now);
        Ok(())
    }

    fn stop(
        &mut self,
        id: &str,
        abandon: bool,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), InputError> {
        let Some(idx) = self.active.iter().position(|it| it.id == id) else {
            return Err(self.not_active(id));
        };
        let reason = Some(clean_text(reason)).filter(|it| !it.is_empty());
        let reason = reason.unwrap_or_else(|| "stop requested".to_string());
        match self.active[idx].position {
            Position::Waiting(s) => {
                self.locks[s].waiting.retain(|it| it != id);
                self.active[idx].stop = Some(StopRequest { abandon, reason: reason.clone() });
                let message = format!(
                    "stopped while waiting for stage {}: {reason}",
                    self.spec.stages[s].name
                );
                self.finish_execution(id, ExecutionStatus::Stopped, Some(message), now);
            }
            Position::InStage(s) => {
                if let Some(previous) = &self.active[idx].stop
                    && (previous.abandon || !abandon)
                {
                    return Ok(()); // already stopping at least this hard
                }
                self.active[idx].stop = Some(StopRequest { abandon, reason: reason.clone() });
                for a in 0..self.spec.stages[s].actions.len() {
                    let act = &self.active[idx].stages[s].actions[a];
                    if act.status != Some(ActionStatus::InProgress) {
                        continue;
                    }
                    if abandon || act.kind == ActionKind::Approval {
                        let message = Some(format!("abandoned: {reason}"));
                        self.end_action(id, s, a, ActionStatus::Abandoned, message, true, now);
                    } else if act.kind.is_deploy() && !act.cancel_requested {
                        // cutover's difference from AWS: the deployment is stopped too.
                        let message = format!("asked to stop: {reason}");
                        self.active[idx].stages[s].actions[a].message = Some(message);
                        self.emit_action(id, s, a);
                        self.request_cancel(id, s, a);
                    }
                }
                let running = self.active[idx].stages[s]
                    .actions
                    .iter()
                    .any(|it| it.status == Some(ActionStatus::InProgress));
                if running && self.active[idx].status != ExecutionStatus::Stopping {
                    let rec = &mut self.active[idx];
                    rec.status = ExecutionStatus::Stopping;
                    rec.message = Some(reason.clone());
                    rec.stages[s].status = Some(StageStatus::Stopping);
                    self.emit_stage(id, s);
                    self.emit_execution(id);
                }
                self.settle_stage(id, s, now);
            }
            Position::Done => debug_assert!(false, "active execution {id} is done"),
        }
        Ok(())
    }

    fn retry(
        &mut self,
        id: &str,
        stage: &str,
        mode: RetryMode,
        now: Timestamp,
    ) -> Result<(), InputError> {
        let s = self
            .spec
            .stage_index(stage)
            .ok_or_else(|| InputError::UnknownStage(stage.to_string()))?;
        let h = self.check_retry(id, s)?;
        let Some(mut rec) = self.history.remove(h) else {
            return Err(InputError::UnknownExecution(id.to_string()));
        };
        rec.status = ExecutionStatus::InProgress;
        rec.message = None;
        rec.ended = None;
        rec.stop = None;
        let ExecutionRecord { stages, artifacts, .. } = &mut rec;
        for act in &mut stages[s].actions {
            let rerun = match mode {
                RetryMode::AllActions => true,
                RetryMode::FailedActions => act.status != Some(ActionStatus::Succeeded),
            };
            if rerun {
                for (name, _) in act.outputs.drain(..) {
                    artifacts.retain(|(it, _)| *it != name);
                }
                act.status = None;
                act.started = None;
                act.ended = None;
                act.deadline = None;
                act.message = None;
                act.external_ref = None;
                act.inputs.clear();
                act.cancel_requested = false;
                act.decision = None;
            }
        }
        let at = self.active.iter().position(|it| it.seq > rec.seq).unwrap_or(self.active.len());
        self.active.insert(at, rec);
        self.emit_execution(id);
        self.enter_stage(id, s, now);
        Ok(())
    }

    /// Whether execution `id` may retry stage `s`; its index in the history if so.
    fn check_retry(&self, id: &str, s: usize) -> Result<usize, InputError> {
        let stage = &self.spec.stages[s].name;
        let refuse = |reason: String| InputError::NotRetryable {
            execution_id: id.to_string(),
            stage: stage.clone(),
            reason,
        };
        if s == 0 {
            return Err(refuse(
                "the source stage cannot be retried; push again or start the pipeline".to_string(),
            ));
        }
        if let Some(rec) = self.active.iter().find(|it| it.id == id) {
            return Err(refuse(format!("the execution is still {}", rec.status)));
        }
        let Some(h) = self.history.iter().position(|it| it.id == id) else {
            return Err(InputError::UnknownExecution(id.to_string()));
        };
        let rec = &self.history[h];
        if rec.status != ExecutionStatus::Failed {
            return Err(refuse(format!(
                "the execution is {}; only a failed execution can be retried",
                rec.status
            )));
        }
        if rec.stages[s].status != Some(StageStatus::Failed) {
            let status = rec.stages[s].status.map_or("not reached", StageStatus::as_str);
            return Err(refuse(format!(
                "the stage is {status} in this execution; retry the stage where it failed"
            )));
        }
        let lock = &self.locks[s];
        if let Some(newer) = lock.last_entered.as_deref().filter(|it| *it != id) {
            return Err(refuse(format!(
                "execution {newer} entered the stage after it; only the latest execution in a \
                 stage can be retried"
            )));
        }
        if let Some(holder) = &lock.holder {
            return Err(refuse(format!("execution {holder} is in the stage")));
        }
        if self.active.len() >= ACTIVE_EXECUTIONS_MAX {
            return Err(InputError::TooManyExecutions { limit: ACTIVE_EXECUTIONS_MAX });
        }
        Ok(h)
    }

    /// Execution `id` finished stage `s - 1` (or its source) and wants stage `s`.
    fn arrive(&mut self, id: &str, s: usize, now: Timestamp) {
        if self.locks[s].holder.is_none() {
            debug_assert!(
                self.locks[s].waiting.is_empty(),
                "executions wait in front of a free stage"
            );
            self.enter_stage(id, s, now);
            return;
        }
        match self.spec.execution_mode {
            ExecutionMode::Queued => {
                self.locks[s].waiting.push_back(id.to_string());
                self.wait(id, s);
            }
            ExecutionMode::Superseded => {
                let Some(waiting) = self.locks[s].waiting.pop_front() else {
                    self.locks[s].waiting.push_back(id.to_string());
                    self.wait(id, s);
                    return;
                };
                let seq =
                    |it: &str| self.active.iter().find(|rec| rec.id == it).map_or(0, |rec| rec.seq);
                let (older, newer) = if seq(&waiting) < seq(id) {
                    (waiting, id.to_string())
                } else {
                    (id.to_string(), waiting)
                };
                self.locks[s].waiting.push_back(newer.clone());
                let message = format!(
                    "superseded by {newer} while waiting for stage {}",
                    self.spec.stages[s].name
                );
                self.finish_execution(&older, ExecutionStatus::Superseded, Some(message), now);
                if newer == id {
                    self.wait(id, s);
                }
            }
        }
    }

    fn wait(&mut self, id: &str, s: usize) {
        let message = format!("waiting for stage {}", self.spec.stages[s].name);
        let rec = self.active_mut(id);
        rec.position = Position::Waiting(s);
        rec.message = Some(message);
        self.emit_execution(id);
    }

    fn enter_stage(&mut self, id: &str, s: usize, now: Timestamp) {
        let lock = &mut self.locks[s];
        lock.holder = Some(id.to_string());
        lock.last_entered = Some(id.to_string());
        let rec = self.active_mut(id);
        rec.position = Position::InStage(s);
        let was_waiting = rec.message.take().is_some();
        let stage = &mut rec.stages[s];
        stage.status = Some(StageStatus::InProgress);
        stage.attempt += 1;
        stage.started = Some(now);
        stage.ended = None;
        stage.message = None;
        if was_waiting {
            self.emit_execution(id);
        }
        self.emit_stage(id, s);
        self.settle_stage(id, s, now);
    }

    /// Decides what stage `s` of `id` does next once nothing more runs: stop, fail, start the
    /// next run order, or succeed.
    fn settle_stage(&mut self, id: &str, s: usize, now: Timestamp) {
        // Each pass starts a run order whose actions have not run, so the actions bound the loop.
        for _ in 0..=self.spec.stages[s].actions.len() + 1 {
            let rec = self.active_ref(id);
            let actions = &rec.stages[s].actions;
            if actions.iter().any(|it| it.status == Some(ActionStatus::InProgress)) {
                return;
            }
            let failures: Vec<String> = actions
                .iter()
                .filter(|it| it.status == Some(ActionStatus::Failed))
                .map(|it| match &it.message {
                    Some(message) => format!("action {} failed: {message}", it.name),
                    None => format!("action {} failed", it.name),
                })
                .collect();
            if let Some(stop) = &rec.stop {
                let mut message = format!("stopped: {}", stop.reason);
                for failure in failures {
                    message = format!("{message}; {failure}");
                }
                self.end_stage(id, s, StageStatus::Stopped, Some(message), now);
                return;
            }
            if !failures.is_empty() {
                self.end_stage(id, s, StageStatus::Failed, Some(failures.join("; ")), now);
                return;
            }
            if !self.start_next_group(id, s, now) {
                self.end_stage(id, s, StageStatus::Succeeded, None, now);
                return;
            }
        }
        debug_assert!(false, "stage {s} of {id} did not settle");
    }

    /// Starts the actions of the lowest run order that has not run; `false` if none is left.
    fn start_next_group(&mut self, id: &str, s: usize, now: Timestamp) -> bool {
        let rec = self.active_ref(id);
        let stage = &rec.stages[s];
        let order = self.spec.stages[s]
            .actions
            .iter()
            .zip(&stage.actions)
            .filter(|(_, act)| act.status.is_none())
            .map(|(spec, _)| spec.run_order)
            .min();
        let Some(order) = order else { return false };
        let starting: Vec<usize> = (0..stage.actions.len())
            .filter(|&a| {
                stage.actions[a].status.is_none()
                    && self.spec.stages[s].actions[a].run_order == order
            })
            .collect();
        for a in starting {
            self.start_action(id, s, a, now);
        }
        true
    }

    fn start_action(&mut self, id: &str, s: usize, a: usize, now: Timestamp) {
        let spec = &self.spec.stages[s].actions[a];
        let (stage, action) = (self.spec.stages[s].name.clone(), spec.name.clone());
        let rec = self
            .active
            .iter_mut()
            .find(|it| it.id == id)
            .expect("invariant: a starting action belongs to an active execution");
        let mut inputs = Vec::with_capacity(spec.input_artifacts.len());
        let mut missing = None;
        for name in &spec.input_artifacts {
            match rec.artifact(name) {
                Some(artifact) => inputs.push((name.clone(), artifact.clone())),
                None => missing = missing.or(Some(name.clone())),
            }
        }
        let act = &mut rec.stages[s].actions[a];
        act.run += 1;
        act.status = Some(ActionStatus::InProgress);
        act.started = Some(now);
        act.ended = None;
        act.message = None;
        act.external_ref = None;
        act.outputs.clear();
        act.cancel_requested = false;
        act.decision = None;
        act.inputs = inputs.clone();
        if let Some(name) = missing {
            // Validation makes every input an earlier output; this keeps a bug from hanging.
            debug_assert!(false, "input artifact {name} of {stage}/{action} was not produced");
            let message = Some(format!("input artifact {name} was not produced by this execution"));
            self.end_action(id, s, a, ActionStatus::Failed, message, false, now);
            return;
        }
        let deadline = now.saturating_add(spec.effective_timeout());
        act.deadline = Some(deadline);
        let effect = Effect::StartAction {
            execution_id: id.to_string(),
            stage,
            action,
            run: act.run,
            kind: spec.kind,
            config_key: spec.config_key.clone(),
            inputs,
            outputs: spec.output_artifacts.clone(),
            deadline,
        };
        self.effects.push_back(effect);
    }

    #[allow(clippy::too_many_arguments)]
    fn end_action(
        &mut self,
        id: &str,
        s: usize,
        a: usize,
        status: ActionStatus,
        message: Option<String>,
        cancel: bool,
        now: Timestamp,
    ) {
        let act = &mut self.active_mut(id).stages[s].actions[a];
        act.status = Some(status);
        act.ended = Some(now);
        act.deadline = None;
        act.message = message;
        let cancel = cancel && !act.cancel_requested;
        self.emit_action(id, s, a);
        if cancel {
            self.request_cancel(id, s, a);
        }
    }

    /// Emits `CancelAction` for the latest run of the action and remembers it for `resume`.
    fn request_cancel(&mut self, id: &str, s: usize, a: usize) {
        let stage = self.spec.stages[s].name.clone();
        let act = &mut self.active_mut(id).stages[s].actions[a];
        act.cancel_requested = true;
        let key = RunKey {
            execution_id: id.to_string(),
            stage,
            action: act.name.clone(),
            run: act.run,
            kind: act.kind,
        };
        self.effects.push_back(key.cancel_effect());
        self.pending_cancels.push_back(key);
        while self.pending_cancels.len() > CANCELS_KEPT {
            self.pending_cancels.pop_front();
        }
    }

    fn end_stage(
        &mut self,
        id: &str,
        s: usize,
        status: StageStatus,
        message: Option<String>,
        now: Timestamp,
    ) {
        let rec = self.active_mut(id);
        let stage = &mut rec.stages[s];
        stage.status = Some(status);
        stage.ended = Some(now);
        stage.message = message.map(|it| truncate(it, MESSAGE_BYTES_MAX));
        let stage_message = stage.message.clone().unwrap_or_default();
        let reason = rec.stop.as_ref().map(|it| it.reason.clone()).unwrap_or_default();
        self.emit_stage(id, s);
        self.locks[s].holder = None;
        let name = &self.spec.stages[s].name;
        match status {
            StageStatus::Succeeded if s + 1 < self.spec.stages.len() => self.arrive(id, s + 1, now),
            StageStatus::Succeeded => {
                self.finish_execution(id, ExecutionStatus::Succeeded, None, now);
            }
            StageStatus::Failed => {
                let message = format!("stage {name} failed: {stage_message}");
                self.finish_execution(id, ExecutionStatus::Failed, Some(message), now);
            }
            _ => {
                debug_assert_eq!(status, StageStatus::Stopped);
                let message = format!("stopped in stage {name}: {reason}");
                self.finish_execution(id, ExecutionStatus::Stopped, Some(message), now);
            }
        }
        // The stage is free: the first execution waiting in front of it enters.
        if self.locks[s].holder.is_none()
            && let Some(next) = self.locks[s].waiting.pop_front()
        {
            self.enter_stage(&next, s, now);
        }
    }

    fn finish_execution(
        &mut self,
        id: &str,
        status: ExecutionStatus,
        message: Option<String>,
        now: Timestamp,
    ) {
        let Some(idx) = self.active.iter().position(|it| it.id == id) else {
            debug_assert!(false, "finishing {id}, which is not active");
            return;
        };
        let mut rec = self.active.remove(idx);
        rec.status = status;
        rec.message = message.map(|it| truncate(it, MESSAGE_BYTES_MAX));
        rec.ended = Some(now);
        rec.position = Position::Done;
        self.effects.push_back(Effect::ExecutionStatus {
            execution_id: rec.id.clone(),
            status,
            message: rec.message.clone(),
        });
        self.effects.push_back(Effect::Finished {
            execution_id: rec.id.clone(),
            status,
            message: rec.message.clone(),
        });
        self.history.push_back(rec);
        while self.history.len() > HISTORY_MAX {
            self.history.pop_front();
        }
    }

    fn locate(&self, stage: &str, action: &str) -> Result<(usize, usize), InputError> {
        let s = self
            .spec
            .stage_index(stage)
            .ok_or_else(|| InputError::UnknownStage(stage.to_string()))?;
        let a = self.spec.stages[s].actions.iter().position(|it| it.name == action).ok_or_else(
            || InputError::UnknownAction { stage: stage.to_string(), action: action.to_string() },
        )?;
        Ok((s, a))
    }

    /// The error for an input that needs `id` to be unfinished.
    fn not_active(&self, id: &str) -> InputError {
        match self.history.iter().find(|it| it.id == id) {
            Some(rec) => {
                InputError::AlreadyFinished { execution_id: id.to_string(), status: rec.status }
            }
            None => InputError::UnknownExecution(id.to_string()),
        }
    }

    fn active_ref(&self, id: &str) -> &ExecutionRecord {
        self.active
            .iter()
            .find(|it| it.id == id)
            .expect("invariant: the machine only works on active executions it looked up")
    }

    fn active_mut(&mut self, id: &str) -> &mut ExecutionRecord {
        self.active
            .iter_mut()
            .find(|it| it.id == id)
            .expect("invariant: the machine only works on active executions it looked up")
    }

    fn emit_execution(&mut self, id: &str) {
        let rec = self.active_ref(id);
        let effect = Effect::ExecutionStatus {
            execution_id: rec.id.clone(),
            status: rec.status,
            message: rec.message.clone(),
        };
        self.effects.push_back(effect);
    }

    fn emit_stage(&mut self, id: &str, s: usize) {
        let rec = self.active_ref(id);
        let stage = &rec.stages[s];
        let effect = Effect::StageStatus {
            execution_id: rec.id.clone(),
            stage: stage.name.clone(),
            attempt: stage.attempt,
            status: stage.status.unwrap_or(StageStatus::InProgress),
            started: stage.started.unwrap_or_default(),
            ended: stage.ended,
            message: stage.message.clone(),
        };
        self.effects.push_back(effect);
    }

    fn emit_action(&mut self, id: &str, s: usize, a: usize) {
        let rec = self.active_ref(id);
        let act = &rec.stages[s].actions[a];
        let effect = Effect::ActionStatus {
            execution_id: rec.id.clone(),
            stage: rec.stages[s].name.clone(),
            action: act.name.clone(),
            run: act.run,
            status: act.status.unwrap_or(ActionStatus::InProgress),
            started: act.started.unwrap_or_default(),
            ended: act.ended,
            message: act.message.clone(),
            external_ref: act.external_ref.clone(),
        };
        self.effects.push_back(effect);
    }

    /// `due_checked`: deadlines up to `now` have been handled (not so right after `resume`).
    fn debug_assert_invariants(&self, due_checked: bool) {
        if !cfg!(debug_assertions) {
            return;
        }
        let stages = self.spec.stages.len();
        assert_eq!(self.locks.len(), stages);
        assert!(
            self.locks[0].holder.is_none() && self.locks[0].waiting.is_empty(),
            "the source stage locked"
        );
        for (s, lock) in self.locks.iter().enumerate() {
            if let Some(holder) = &lock.holder {
                let rec = self.active.iter().find(|it| it.id == *holder);
                let rec = rec.unwrap_or_else(|| {
                    panic!("stage {s} is held by {holder}, which is not active")
                });
                assert_eq!(rec.position, Position::InStage(s), "holder {holder} of stage {s}");
                assert!(
                    matches!(
                        rec.stages[s].status,
                        Some(StageStatus::InProgress | StageStatus::Stopping)
                    ),
                    "stage {s} held by {holder} is {:?}",
                    rec.stages[s].status
                );
            }
            assert!(
                lock.holder.is_some() || lock.waiting.is_empty(),
                "executions wait in front of free stage {s}"
            );
            if self.spec.execution_mode == ExecutionMode::Superseded {
                assert!(
                    lock.waiting.len() <= 1,
                    "{} executions wait in front of stage {s}",
                    lock.waiting.len()
                );
            }
            for waiting in &lock.waiting {
                let rec = self.active.iter().find(|it| it.id == *waiting);
                let rec = rec
                    .unwrap_or_else(|| panic!("{waiting} waits for stage {s} but is not active"));
                assert_eq!(rec.position, Position::Waiting(s));
            }
        }
        assert!(self.active.len() <= ACTIVE_EXECUTIONS_MAX);
        assert!(self.history.len() <= HISTORY_MAX);
        assert!(self.pending_cancels.len() <= CANCELS_KEPT);
        assert!(
            self.active.windows(2).all(|w| w[0].seq < w[1].seq),
            "active executions out of order"
        );
        for rec in &self.active {
            assert!(!rec.status.is_terminal(), "{} is active but {}", rec.id, rec.status);
            assert_eq!(
                rec.stop.is_some(),
                rec.status == ExecutionStatus::Stopping,
                "{} stop",
                rec.id
            );
            match rec.position {
                Position::InStage(s) => {
                    assert_eq!(
                        self.locks[s].holder.as_deref(),
                        Some(rec.id.as_str()),
                        "{} in stage {s}",
                        rec.id
                    );
                    let running = rec.stages[s]
                        .actions
                        .iter()
                        .any(|it| it.status == Some(ActionStatus::InProgress));
                    assert!(
                        running,
                        "{} is in stage {s} with nothing running: it would never end",
                        rec.id
                    );
                }
                Position::Waiting(s) => {
                    assert!(self.locks[s].waiting.contains(&rec.id), "{} waits", rec.id)
                }
                Position::Done => panic!("active execution {} is done", rec.id),
            }
            for (s, stage) in rec.stages.iter().enumerate() {
                for act in &stage.actions {
                    if act.status == Some(ActionStatus::InProgress) {
                        assert_eq!(
                            rec.position,
                            Position::InStage(s),
                            "{} runs {} outside its stage",
                            rec.id,
                            act.name
                        );
                        let deadline =
                            act.deadline.unwrap_or_else(|| panic!("{} has no deadline", act.name));
                        if due_checked {
                            assert!(deadline > self.now, "{} is overdue", act.name);
                        }
                    }
                }
            }
        }
        for rec in &self.history {
            assert!(rec.status.is_terminal(), "{} is finished but {}", rec.id, rec.status);
            assert_eq!(rec.position, Position::Done);
            let running = rec
                .stages
                .iter()
                .flat_map(|it| &it.actions)
                .any(|it| it.status == Some(ActionStatus::InProgress));
            assert!(!running, "finished {} has an action in progress", rec.id);
        }
        let mut ids: Vec<&str> =
            self.active.iter().chain(&self.history).map(|it| it.id.as_str()).collect();
        ids.sort_unstable();
        assert!(ids.windows(2).all(|w| w[0] != w[1]), "an execution id appears twice");
    }
}

/// The parts of `Input::ActionResult` after the action's address.
struct Report {
    succeeded: bool,
    message: String,
    outputs: Vec<(String, ArtifactId)>,
    external_ref: Option<String>,
}

/// An action's success report whose outputs are not the declared ones.
#[derive(Debug, thiserror::Error)]
#[error("its outputs were {reported} where the action declares {declared}")]
struct WrongOutputs {
    /// Both as `[a, b]`, cleaned to print on one line.
    reported: String,
    declared: String,
}

/// Whether `reported` names exactly the declared outputs, each once.
fn check_outputs(
    declared: &[String],
    reported: &[(String, ArtifactId)],
) -> Result<(), WrongOutputs> {
    let mut names: Vec<&str> = reported.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = declared.iter().map(String::as_str).collect();
    expected.sort_unstable();
    if names == expected {
        return Ok(());
    }
    let list = |names: &[&str]| {
        let shown: Vec<String> = names
            .iter()
            .take(crate::spec::ARTIFACTS_PER_ACTION_MAX + 1)
            .map(|it| clean_text(it))
            .collect();
        format!("[{}]", shown.join(", "))
    };
    Err(WrongOutputs { reported: list(&names), declared: list(&expected) })
}

fn set_artifact(artifacts: &mut Vec<(String, ArtifactId)>, name: &str, artifact: ArtifactId) {
    match artifacts.iter_mut().find(|(it, _)| it == name) {
        Some((_, id)) => *id = artifact,
        None => artifacts.push((name.to_string(), artifact)),
    }
}

fn check_execution_id(id: &str) -> Result<(), InputError> {
    let valid = !id.is_empty()
        && id.len() <= EXECUTION_ID_BYTES_MAX
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid { Ok(()) } else { Err(InputError::InvalidExecutionId(clean_text(id))) }
}

/// An action's state, for error messages.
fn describe(act: &ActionRecord) -> String {
    match act.status {
        None if act.run == 0 => "it has not started".to_string(),
        None => format!("its run #{} belongs to an earlier attempt of the stage", act.run),
        Some(status) => format!("its latest run is #{}, {status}", act.run),
    }
}

/// Text from outside, made safe for one-line output and bounded.
fn clean_text(text: &str) -> String {
    one_line(text, TEXT_BYTES_MAX)
}
