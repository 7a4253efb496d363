//! The pipelines' state and every decision about it, with no IO: one `pipeline::Pipeline` machine
//! per declared pipeline, when to step them, what to write before acting, what to poll and when,
//! and what `apply` changes. The shell (`driver`) owns one [`Core`], feeds it [`Msg`]s one at a
//! time, writes each [`Step`]'s rows in one transaction and then either performs its effects
//! ([`Core::written`]) or puts the state back ([`Core::refused`]). Nothing here reads a clock or
//! touches the store, so a host with its own loop (the control plane's engine) can run it as is.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use model::Timestamp;
use pipeline::definition::{ActionDecl, PipelineDecl, SourceLocation};
use pipeline::{ArtifactId, ExecutionRecord, Input, InputError, Pipeline, Revision};

use crate::Error;
use crate::api::PlanItem;
use crate::stored::PipelineDoc;

/// How often retention runs.
pub const GC_EVERY: Duration = Duration::from_secs(60);
/// How soon what the store refused (a step, a job's report) is taken again.
pub const UNWRITTEN_RETRY: Duration = Duration::from_millis(250);

/// One declared pipeline: its definition, its machine, and a changed definition waiting for the
/// machine to be idle.
#[derive(Clone, Debug)]
pub struct Slot {
    pub def: PipelineDecl,
    pub machine: Pipeline,
    pub version: u64,
    pub pending: Option<PipelineDecl>,
}

/// What the shell tells the core.
#[derive(Clone, Debug)]
pub enum Msg {
    /// A job's report (an action started or ended), with the record of the build it ran, if
    /// any, written in the same transaction. One the store refuses is kept and fed again until it
    /// is written.
    Report { pipeline: String, input: Input, build: Option<Box<store::CiBuildRow>> },
    /// An operator's command (stop, retry). One the store refuses is answered with the error.
    Command { pipeline: String, input: Input },
    /// Approve or reject an approval the execution waits for (the only one, or the named one).
    Decide { pipeline: String, decision: Decision },
    /// A new revision of the pipeline's source, already stored as `artifact`. `polled` is the
    /// commit to remember as the source's last seen head (a poll's or a webhook's), written with
    /// the execution so that it is never started twice.
    Start {
        pipeline: String,
        execution_id: String,
        revision: Revision,
        artifact: ArtifactId,
        polled: Option<String>,
    },
    /// Take the pipeline's due timeout, or write what was not written (a resumed machine, a
    /// step the store refused).
    Due { pipeline: String },
    /// A poll of the pipeline's source ended; the next one is due an interval after it began.
    PollDone { pipeline: String },
}

/// An approval decision, as the API takes it.
#[derive(Clone, Debug)]
pub struct Decision {
    pub execution_id: String,
    pub stage: Option<String>,
    pub action: Option<String>,
    pub approved: bool,
    pub comment: String,
    pub by: String,
}

/// What the shell does once a step is written, in order.
// An action is the common effect and each lives only until performed: boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Effect {
    /// Start (idempotently) or cancel an action run: `effect` is the machine's `StartAction` or
    /// `CancelAction`; `action` its declaration (`None`: the definition has no such action).
    Action {
        pipeline: String,
        action: Option<Box<ActionDecl>>,
        effect: pipeline::Effect,
        revision: Revision,
    },
    /// Poll the pipeline's URL source and report [`Msg::PollDone`] (and [`Msg::Start`] for a
    /// new head).
    Poll { pipeline: String, url: String, branch: String },
    /// A deleted pipeline's mirror of its URL source is no longer needed.
    RemoveMirror { pipeline: String },
    /// Delete the artifacts past retention, keeping these (the unfinished executions').
    CollectGarbage { keep: HashSet<String> },
}

/// The rows one step writes, in one transaction, before any of its effects.
#[derive(Clone, Debug, Default)]
pub struct Write {
    /// The pipeline's document, as the step left it.
    pub pipeline: Option<(String, PipelineDoc)>,
    /// The history of the executions the step touched.
    pub executions: Vec<store::CiExecutionRow>,
    /// The source head to remember: (pipeline, commit).
    pub source: Option<(String, String)>,
    /// The records of the builds a report brought.
    pub builds: Vec<store::CiBuildRow>,
}

impl Write {
    pub fn is_empty(&self) -> bool {
        self.pipeline.is_none()
            && self.executions.is_empty()
            && self.source.is_none()
            && self.builds.is_empty()
    }
}

/// One decision: what to write, then what to do, and the answer for whoever asked. Hand it back
/// to [`Core::written`] or [`Core::refused`].
#[derive(Debug)]
#[must_use = "a step is either written or refused"]
pub struct Step {
    pub write: Write,
    effects: Vec<Effect>,
    /// The execution the message was about, as it is after the step; or why it was refused.
    pub outcome: Result<Option<ExecutionRecord>, Error>,
    undo: Option<Undo>,
}

#[derive(Debug)]
struct Undo {
    pipeline: String,
    before: Box<Slot>,
    /// A report to keep and feed again when the store refuses the step.
    report: Option<Held>,
}

/// A report kept until the store can take it: (pipeline, input, the build record it brings).
type Held = (String, Input, Option<Box<store::CiBuildRow>>);

impl Step {
    fn refusal(err: Error) -> Step {
        Step { write: Write::default(), effects: Vec::new(), outcome: Err(err), undo: None }
    }
}

/// What `apply` does to one declared pipeline.
#[derive(Clone, Debug)]
pub enum Change {
    Create(PipelineDecl, Pipeline),
    /// An idle pipeline gets the new definition and a fresh machine at once.
    Replace(PipelineDecl, Pipeline),
    /// A busy one switches when its executions have finished.
    Pending(PipelineDecl),
    /// The definition went back to the one running: forget the pending one.
    DropPending,
    Unchanged,
}

/// What applying a file would do: the plan shown, the rows to write and delete, and the changes
/// to make once they are written ([`Core::applied`]).
#[derive(Clone, Debug)]
pub struct Prepared {
    pub plan: Vec<PlanItem>,
    pub puts: Vec<(String, PipelineDoc)>,
    pub deletes: Vec<String>,
    pub changes: Vec<(String, Change)>,
}

/// When a URL source is polled next, and whether a poll is running.
#[derive(Clone, Copy, Debug, Default)]
struct Poll {
    due: Timestamp,
    running: bool,
}

/// Every pipeline and what is due; see the module's documentation.
#[derive(Debug)]
pub struct Core {
    slots: BTreeMap<String, Slot>,
    /// Pipelines to step again: resumed ones not written yet, and those whose step the store
    /// refused (taken again at `retry_at`).
    unwritten: BTreeSet<String>,
    /// Job reports the store refused, fed again in order at `retry_at`.
    held: Vec<Held>,
    retry_at: Option<Timestamp>,
    polls: BTreeMap<String, Poll>,
    next_gc: Timestamp,
}

impl Core {
    /// The pipelines as stored, each machine resumed (an action that was in progress starts
    /// again); every one is written again before its effects are performed.
    pub fn restore(slots: BTreeMap<String, Slot>, now: Timestamp) -> Core {
        let mut slots = slots;
        for slot in slots.values_mut() {
            slot.machine.resume(now);
        }
        Core {
            unwritten: slots.keys().cloned().collect(),
            retry_at: Some(now),
            slots,
            held: Vec::new(),
            polls: BTreeMap::new(),
            next_gc: now.saturating_add(GC_EVERY),
        }
    }

    pub fn definitions(&self) -> impl Iterator<Item = &PipelineDecl> {
        self.slots.values().map(|s| &s.def)
    }

    pub fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.get(name)
    }

    pub fn execution(&self, pipeline: &str, id: &str) -> Option<&ExecutionRecord> {
        self.slots.get(pipeline)?.machine.execution(id)
    }

    /// The pipelines (current or pending definition) whose source is the hosted repository.
    pub fn users_of(&self, repository: &str) -> Vec<String> {
        self.slots
            .iter()
            .filter(|(_, s)| {
                std::iter::once(&s.def)
                    .chain(s.pending.as_ref())
                    .any(|d| d.repository() == Some(repository))
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// When the shell must call [`Core::tick`] at the latest: a machine's timeout, the retry of
    /// what the store refused, a poll, retention.
    pub fn next_deadline(&self) -> Timestamp {
        let timeouts = self.slots.values().filter_map(|s| s.machine.poll_timeout());
        let polls = self.polled().filter_map(|(name, _)| {
            let poll = self.polls.get(name).copied().unwrap_or_default();
            (!poll.running).then_some(poll.due)
        });
        timeouts.chain(polls).chain(self.retry_at).fold(self.next_gc, Timestamp::min)
    }

    /// The declared pipelines with a URL source polled at an interval.
    fn polled(&self) -> impl Iterator<Item = (&String, Duration)> {
        self.slots.iter().filter_map(|(n, s)| s.def.poll_interval().map(|i| (n, i)))
    }

    /// What is due now: the messages to handle (due timeouts, unwritten steps, held reports), and
    /// the polls and retention to start.
    pub fn tick(&mut self, now: Timestamp) -> (Vec<Msg>, Vec<Effect>) {
        let mut msgs = Vec::new();
        let retry = self.retry_at.is_some_and(|t| t <= now);
        if retry {
            self.retry_at = None;
            msgs.extend(self.unwritten.iter().map(|p| Msg::Due { pipeline: p.clone() }));
            msgs.extend(
                std::mem::take(&mut self.held)
                    .into_iter()
                    .map(|(pipeline, input, build)| Msg::Report { pipeline, input, build }),
            );
        }
        for (name, slot) in &self.slots {
            let due = slot.machine.poll_timeout().is_some_and(|t| t <= now);
            if due && !(retry && self.unwritten.contains(name)) {
                msgs.push(Msg::Due { pipeline: name.clone() });
            }
        }
        let mut effects = Vec::new();
        let polled: Vec<(String, Duration)> = self.polled().map(|(n, i)| (n.clone(), i)).collect();
        for (name, interval) in polled {
            let poll = self.polls.entry(name.clone()).or_default();
            if poll.running || poll.due > now {
                continue;
            }
            *poll = Poll { due: now.saturating_add(interval), running: true };
            if let SourceLocation::Url { url, .. } = &self.slots[&name].def.source.location {
                let branch = self.slots[&name].def.source.branch.clone();
                effects.push(Effect::Poll { pipeline: name, url: url.clone(), branch });
            }
        }
        if now >= self.next_gc {
            self.next_gc = now.saturating_add(GC_EVERY);
            // Artifacts of executions the machines hold (a retry may need them).
            let keep = self
                .slots
                .values()
                .flat_map(|s| s.machine.active())
                .flat_map(|rec| rec.artifacts.iter().map(|(_, id)| id.as_str().to_string()))
                .collect();
            effects.push(Effect::CollectGarbage { keep });
        }
        (msgs, effects)
    }

    /// Decides what `msg` changes. Nothing is acted on before the step's rows are written.
    pub fn handle(&mut self, msg: Msg, now: Timestamp) -> Step {
        match msg {
            Msg::Report { pipeline, input, build } => {
                let report = input.clone();
                let mut step = self.step(&pipeline, now, |m, now| m.handle_input(input, now));
                // The build ran, whatever the machine makes of its report.
                step.write.builds.extend(build.clone().map(|b| *b));
                if let Some(undo) = &mut step.undo {
                    undo.report = Some((pipeline.clone(), report, build));
                }
                step.outcome = step.outcome.map(|_| None);
                step
            }
            Msg::Command { pipeline, input } => {
                let shown = input_execution(&input).map(str::to_string);
                let mut step = self.step(&pipeline, now, |m, now| m.handle_input(input, now));
                step.outcome = step.outcome.map(|_| self.shown(&pipeline, shown.as_deref()));
                step
            }
            Msg::Decide { pipeline, decision } => {
                let shown = decision.execution_id.clone();
                let mut step = self.step(&pipeline, now, |m, now| {
                    let Decision { execution_id, stage, action, approved, comment, by } = decision;
                    let p =
                        m.pending_approval(&execution_id, stage.as_deref(), action.as_deref())?;
                    let (execution_id, stage, action) = (p.execution_id, p.stage, p.action);
                    let input = if approved {
                        Input::Approve { execution_id, stage, action, comment, by }
                    } else {
                        Input::Reject { execution_id, stage, action, comment, by }
                    };
                    m.handle_input(input, now)
                });
                step.outcome = step.outcome.map(|_| self.shown(&pipeline, Some(&shown)));
                step
            }
            Msg::Start { pipeline, execution_id, revision, artifact, polled } => {
                let id = execution_id.clone();
                let input = Input::SourceChanged { execution_id, revision, artifact };
                let mut step = self.step(&pipeline, now, |m, now| m.handle_input(input, now));
                if step.outcome.is_ok() {
                    step.write.source = polled.map(|commit| (pipeline.clone(), commit));
                }
                step.outcome = step.outcome.map(|_| self.shown(&pipeline, Some(&id)));
                step
            }
            Msg::Due { pipeline } => {
                let mut step = self.step(&pipeline, now, |m, now| {
                    if m.poll_timeout().is_some_and(|t| t <= now) {
                        m.handle_timeout(now);
                    }
                    Ok(())
                });
                step.outcome = step.outcome.map(|_| None);
                step
            }
            Msg::PollDone { pipeline } => {
                if let Some(poll) = self.polls.get_mut(&pipeline) {
                    poll.running = false;
                }
                Step { write: Write::default(), effects: Vec::new(), outcome: Ok(None), undo: None }
            }
        }
    }

    fn shown(&self, pipeline: &str, execution: Option<&str>) -> Option<ExecutionRecord> {
        self.execution(pipeline, execution?).cloned()
    }

    /// The step's rows are written: the state stands, and its effects are to be performed.
    pub fn written(&mut self, step: Step) -> Vec<Effect> {
        if let Some(undo) = step.undo {
            self.unwritten.remove(&undo.pipeline);
        }
        step.effects
    }

    /// The store refused the step's rows: the pipeline goes back to where it was. When the store
    /// cannot be written for now (`retry`), the step is taken again later: a due timeout is still
    /// due, a resumed machine still holds its effects, and a job's report is kept.
    pub fn refused(&mut self, step: Step, retry: bool, now: Timestamp) {
        let Some(undo) = step.undo else { return };
        if let Some(slot) = self.slots.get_mut(&undo.pipeline) {
            *slot = *undo.before;
        }
        if !retry {
            return;
        }
        match undo.report {
            Some(held) => self.held.push(held),
            None => {
                self.unwritten.insert(undo.pipeline);
            }
        }
        self.retry_at = Some(now.saturating_add(UNWRITTEN_RETRY));
    }

    /// Applies `f` to the pipeline's machine and collects what the step writes and does.
    fn step(
        &mut self,
        name: &str,
        now: Timestamp,
        f: impl FnOnce(&mut Pipeline, Timestamp) -> Result<(), InputError>,
    ) -> Step {
        let Some(slot) = self.slots.get_mut(name) else {
            return Step::refusal(Error::NotFound(format!(
                "no pipeline `{name}`; declare it in cutover.yaml and apply"
            )));
        };
        let before = Box::new(slot.clone());
        let res = f(&mut slot.machine, now);
        let mut machine_effects = Vec::new();
        while let Some(e) = slot.machine.poll_effect() {
            machine_effects.push(e);
        }
        let executions = execution_rows(name, &slot.machine, &machine_effects);
        let mut effects = Vec::new();
        for e in machine_effects {
            let (execution_id, stage, action) = match &e {
                pipeline::Effect::StartAction { execution_id, stage, action, .. }
                | pipeline::Effect::CancelAction { execution_id, stage, action, .. } => {
                    (execution_id, stage, action)
                }
                _ => continue,
            };
            let revision = match &e {
                pipeline::Effect::StartAction { .. } => slot
                    .machine
                    .execution(execution_id)
                    .map(|r| r.revision.clone())
                    .unwrap_or_default(),
                _ => Revision::default(),
            };
            let action = slot.def.action(stage, action).cloned().map(Box::new);
            effects.push(Effect::Action {
                pipeline: name.to_string(),
                action,
                effect: e,
                revision,
            });
        }
        // A changed definition waits for the machine to be idle.
        if slot.machine.is_idle()
            && let Some(def) = slot.pending.take()
        {
            // Validated when applied: a pending definition is always a valid one.
            if let Ok(m) = Pipeline::new(def.machine_spec(), now) {
                slot.machine = m;
                slot.def = def;
                slot.version += 1;
            }
        }
        let outcome = res.map(|()| None).map_err(|e| match e {
            InputError::UnknownExecution(_) => Error::NotFound(e.to_string()),
            other => Error::Conflict(other.to_string()),
        });
        Step {
            write: Write {
                pipeline: Some((name.to_string(), PipelineDoc::of(slot))),
                executions,
                source: None,
                builds: Vec::new(),
            },
            effects,
            outcome,
            undo: Some(Undo { pipeline: name.to_string(), before, report: None }),
        }
    }

    /// What applying these declarations (validated, each with a fresh machine) would do, given
    /// the pipelines as they are now and the hosted repositories that exist. Changes nothing.
    pub fn prepare_apply(
        &self,
        existing_repos: &HashSet<String>,
        repositories: &[config::RepositoryDecl],
        defs: Vec<(PipelineDecl, Pipeline)>,
        clone_url: impl Fn(&str) -> String,
    ) -> Prepared {
        let mut plan = Vec::new();
        for r in repositories {
            let action = if existing_repos.contains(&r.name) { "unchanged" } else { "create" };
            plan.push(item("repository", &r.name, action, Some(clone_url(&r.name))));
        }
        // A hosted repository holds the only copy of what was pushed to it: apply never deletes
        // one, `DELETE /v1/repos/{name}` does.
        let mut kept: Vec<&String> = existing_repos
            .iter()
            .filter(|name| !repositories.iter().any(|r| r.name == **name))
            .collect();
        kept.sort();
        for name in kept {
            let detail = format!(
                "no longer in cutover.yaml; its git data is kept; delete it with `cutover repos \
                 delete {name}`"
            );
            plan.push(item("repository", name, "keep", Some(detail)));
        }
        let declared: HashSet<String> = defs.iter().map(|(d, _)| d.name.clone()).collect();
        let (mut changes, mut puts) = (Vec::new(), Vec::new());
        for (def, machine) in defs {
            let name = def.name.clone();
            let slot = self.slots.get(&name);
            let (action, change) = match slot {
                None => ("create", Change::Create(def, machine)),
                Some(slot) if slot.def == def && slot.pending.is_some() => {
                    ("update", Change::DropPending)
                }
                Some(slot) if slot.def == def => ("unchanged", Change::Unchanged),
                Some(slot) if slot.machine.is_idle() => ("update", Change::Replace(def, machine)),
                Some(_) => ("update-pending", Change::Pending(def)),
            };
            let version = slot.map_or(1, |s| s.version + 1);
            let doc = match (&change, slot) {
                (Change::Create(def, machine) | Change::Replace(def, machine), _) => {
                    let new =
                        Slot { def: def.clone(), machine: machine.clone(), version, pending: None };
                    Some(PipelineDoc::of(&new))
                }
                (Change::Pending(def), Some(s)) => {
                    Some(PipelineDoc::of(&Slot { pending: Some(def.clone()), ..s.clone() }))
                }
                (Change::DropPending, Some(s)) => {
                    Some(PipelineDoc::of(&Slot { pending: None, ..s.clone() }))
                }
                _ => None,
            };
            puts.extend(doc.map(|doc| (name.clone(), doc)));
            plan.push(item("pipeline", &name, action, None));
            changes.push((name, change));
        }
        let mut deletes = Vec::new();
        for (name, slot) in self.slots.iter().filter(|(name, _)| !declared.contains(*name)) {
            let unfinished: Vec<&str> =
                slot.machine.active().iter().map(|r| r.id.as_str()).collect();
            let detail = if unfinished.is_empty() {
                "its execution history is kept".to_string()
            } else {
                format!(
                    "stops and abandons its unfinished execution(s) {} (a running deployment is \
                     stopped as its group says); its execution history is kept",
                    unfinished.join(", ")
                )
            };
            plan.push(item("pipeline", name, "delete", Some(detail)));
            deletes.push(name.clone());
        }
        Prepared { plan, puts, deletes, changes }
    }

    /// `prepared` is written: the pipelines become what it says. A deleted pipeline's unfinished
    /// executions are stopped and abandoned (what CodePipeline does when a pipeline is deleted
    /// mid-run); the step writes their final records and cancels their actions.
    pub fn applied(&mut self, prepared: Prepared, now: Timestamp) -> (Write, Vec<Effect>) {
        for (name, change) in prepared.changes {
            match change {
                Change::Create(def, machine) => {
                    self.slots.insert(name, Slot { def, machine, version: 1, pending: None });
                }
                Change::Replace(def, machine) => {
                    if let Some(slot) = self.slots.get_mut(&name) {
                        *slot = Slot { def, machine, version: slot.version + 1, pending: None };
                    }
                }
                Change::Pending(def) => {
                    if let Some(slot) = self.slots.get_mut(&name) {
                        slot.pending = Some(def);
                    }
                }
                Change::DropPending => {
                    if let Some(slot) = self.slots.get_mut(&name) {
                        slot.pending = None;
                    }
                }
                Change::Unchanged => {}
            }
        }
        let mut write = Write::default();
        let mut effects = Vec::new();
        for name in prepared.deletes {
            let Some(mut slot) = self.slots.remove(&name) else { continue };
            self.polls.remove(&name);
            self.unwritten.remove(&name);
            self.held.retain(|(p, _, _)| *p != name);
            effects.push(Effect::RemoveMirror { pipeline: name.clone() });
            let ids: Vec<String> = slot.machine.active().iter().map(|r| r.id.clone()).collect();
            for execution_id in ids {
                let reason = "the pipeline was deleted (it is no longer in cutover.yaml)".into();
                // An active execution can always be stopped and abandoned.
                let _ = slot
                    .machine
                    .handle_input(Input::Stop { execution_id, abandon: true, reason }, now);
            }
            let mut machine_effects = Vec::new();
            while let Some(e) = slot.machine.poll_effect() {
                machine_effects.push(e);
            }
            write.executions.extend(execution_rows(&name, &slot.machine, &machine_effects));
            for e in machine_effects {
                if matches!(e, pipeline::Effect::CancelAction { .. }) {
                    effects.push(Effect::Action {
                        pipeline: name.clone(),
                        action: None,
                        effect: e,
                        revision: Revision::default(),
                    });
                }
            }
        }
        (write, effects)
    }
}

fn item(kind: &str, name: &str, action: &str, detail: Option<String>) -> PlanItem {
    PlanItem { kind: kind.into(), name: name.into(), action: action.into(), detail }
}

/// The execution a command is about.
fn input_execution(input: &Input) -> Option<&str> {
    match input {
        Input::Stop { execution_id, .. } | Input::Retry { execution_id, .. } => Some(execution_id),
        _ => None,
    }
}

/// The records of the executions `effects` touched, to be stored as their history.
fn execution_rows(
    name: &str,
    machine: &Pipeline,
    effects: &[pipeline::Effect],
) -> Vec<store::CiExecutionRow> {
    use pipeline::Effect as E;
    let mut touched: Vec<&String> = Vec::new();
    for e in effects {
        let id = match e {
            E::ExecutionStatus { execution_id, .. }
            | E::StageStatus { execution_id, .. }
            | E::StartAction { execution_id, .. }
            | E::CancelAction { execution_id, .. }
            | E::ActionStatus { execution_id, .. }
            | E::Finished { execution_id, .. } => execution_id,
        };
        if !touched.contains(&id) {
            touched.push(id);
        }
    }
    touched
        .into_iter()
        .filter_map(|id| machine.execution(id))
        .filter_map(|rec| {
            Some(store::CiExecutionRow {
                pipeline: name.to_string(),
                id: rec.id.clone(),
                seq: rec.seq,
                status: rec.status.as_str().to_string(),
                record: serde_json::to_string(rec).ok()?,
                started_at: rec.started.as_millis(),
                ended_at: rec.ended.map(|t| t.as_millis()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::ExecutionStatus;

    const T0: u64 = 1_700_000_000_000;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(T0 + ms)
    }

    fn build_pipeline(name: &str, buildspec: &str) -> PipelineDecl {
        config::PipelineDecl {
            name: name.into(),
            execution_mode: config::ExecutionMode::Superseded,
            source: config::PipelineSource {
                location: config::SourceLocation::Repository("app".into()),
                branch: "main".into(),
                branches: None,
                output_artifact: "source".into(),
            },
            stages: vec![config::StageDecl {
                name: "Build".into(),
                actions: vec![config::ActionDecl {
                    name: "build".into(),
                    run_order: 1,
                    input_artifacts: vec!["source".into()],
                    output_artifacts: vec![],
                    kind: config::ActionKind::Build(config::BuildAction {
                        buildspec: buildspec.into(),
                        timeout: Duration::from_secs(600),
                        env: Default::default(),
                    }),
                }],
            }],
        }
    }

    /// A core with these pipelines applied at `at(0)`.
    fn applied(defs: &[PipelineDecl]) -> Core {
        let mut core = Core::restore(BTreeMap::new(), at(0));
        apply(&mut core, defs, at(0));
        core
    }

    fn apply(core: &mut Core, defs: &[PipelineDecl], now: Timestamp) -> Vec<PlanItem> {
        let fresh = defs
            .iter()
            .map(|d| (d.clone(), Pipeline::new(d.machine_spec(), now).unwrap()))
            .collect();
        let prepared = core.prepare_apply(&HashSet::new(), &[], fresh, |n| n.to_string());
        let plan = prepared.plan.clone();
        let _ = core.applied(prepared, now);
        plan
    }

    fn start(core: &mut Core, n: u32, now: Timestamp) -> Step {
        core.handle(
            Msg::Start {
                pipeline: "app".into(),
                execution_id: format!("app-{n}"),
                revision: Revision { commit: format!("c{n}"), ..Revision::default() },
                artifact: ArtifactId::new(format!("sha256-{n}")).unwrap(),
                polled: Some(format!("c{n}")),
            },
            now,
        )
    }

    fn built(n: u32) -> Msg {
        Msg::Report {
            pipeline: "app".into(),
            input: Input::ActionResult {
                execution_id: format!("app-{n}"),
                stage: "Build".into(),
                action: "build".into(),
                run: 1,
                succeeded: true,
                message: "built".into(),
                outputs: vec![],
                external_ref: None,
            },
            build: None,
        }
    }

    fn status(core: &Core, id: &str) -> ExecutionStatus {
        core.execution("app", id).unwrap().status
    }

    #[test]
    fn a_start_writes_the_execution_and_the_polled_head_before_its_build_starts() {
        let mut core = applied(&[build_pipeline("app", "buildspec.yml")]);
        let step = start(&mut core, 1, at(10));
        assert_eq!(step.write.pipeline.as_ref().map(|(n, _)| n.as_str()), Some("app"));
        assert_eq!(
            step.write.executions.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["app-1"]
        );
        assert_eq!(step.write.source, Some(("app".into(), "c1".into())));
        let effects = core.written(step);
        let started: Vec<_> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Action { effect: pipeline::Effect::StartAction { action, .. }, .. } => {
                    Some(action.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(started, ["build"]);
    }

    #[test]
    fn a_report_the_store_refuses_is_undone_kept_and_fed_again_after_the_retry_delay() {
        let mut core = applied(&[build_pipeline("app", "buildspec.yml")]);
        let step = start(&mut core, 1, at(10));
        let _ = core.written(step);
        let step = core.handle(built(1), at(20));
        assert_eq!(status(&core, "app-1"), ExecutionStatus::Succeeded, "decided in memory");
        core.refused(step, true, at(20));
        assert_eq!(status(&core, "app-1"), ExecutionStatus::InProgress, "put back");
        assert_eq!(core.next_deadline(), at(20).saturating_add(UNWRITTEN_RETRY));

        let (early, _) = core.tick(at(20));
        assert!(early.is_empty(), "nothing before the retry: {early:?}");
        let (msgs, _) = core.tick(at(20).saturating_add(UNWRITTEN_RETRY));
        assert!(matches!(msgs.as_slice(), [Msg::Report { input: Input::ActionResult { .. }, .. }]));
        let step = core.handle(msgs.into_iter().next().unwrap(), at(300));
        let _ = core.written(step);
        assert_eq!(status(&core, "app-1"), ExecutionStatus::Succeeded);
    }

    #[test]
    fn a_build_s_record_is_written_with_its_report_and_kept_with_it_when_the_store_refuses() {
        let mut core = applied(&[build_pipeline("app", "buildspec.yml")]);
        let step = start(&mut core, 1, at(10));
        let _ = core.written(step);
        let record = store::CiBuildRow {
            id: "app-b1".into(),
            pipeline: "app".into(),
            execution_id: "app-1".into(),
            status: "SUCCEEDED".into(),
            body: "{}".into(),
            started_at: T0 + 10,
            ended_at: Some(T0 + 20),
        };
        let Msg::Report { pipeline, input, .. } = built(1) else { unreachable!() };
        let report = Msg::Report { pipeline, input, build: Some(Box::new(record.clone())) };

        let step = core.handle(report, at(20));
        assert_eq!(step.write.builds, std::slice::from_ref(&record), "in the report's transaction");
        assert!(!step.write.executions.is_empty());
        core.refused(step, true, at(20));
        let (msgs, _) = core.tick(at(20).saturating_add(UNWRITTEN_RETRY));
        let [Msg::Report { build, .. }] = msgs.as_slice() else { panic!("{msgs:?}") };
        assert_eq!(build.as_deref(), Some(&record), "kept with the report");
    }

    #[test]
    fn a_definition_applied_while_an_execution_runs_waits_for_it_and_is_written_when_it_ends() {
        let mut core = applied(&[build_pipeline("app", "buildspec.yml")]);
        let step = start(&mut core, 1, at(10));
        let _ = core.written(step);
        let plan = apply(&mut core, &[build_pipeline("app", "ci/buildspec.yml")], at(20));
        assert_eq!(plan.iter().map(|i| i.action.as_str()).collect::<Vec<_>>(), ["update-pending"]);
        assert_eq!(core.slot("app").unwrap().version, 1);

        let step = core.handle(built(1), at(30));
        let (_, doc) = step.write.pipeline.clone().expect("the switch is written with the step");
        assert_eq!(doc.revision, 2);
        assert!(doc.pending.is_none());
        assert_eq!(doc.definition, build_pipeline("app", "ci/buildspec.yml"));
        let _ = core.written(step);
        assert!(core.slot("app").unwrap().pending.is_none());
    }
}
