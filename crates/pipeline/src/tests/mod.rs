//! In-crate tests: scripts of timed inputs against a simulated clock, with the effects compared to
//! expect-test snapshots (`UPDATE_EXPECT=1` rewrites them), spec validation, and a seeded
//! simulation with random inputs that checks the invariants from the effect stream.

mod api;
mod scripts;
mod sim;
mod spec;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use expect_test::Expect;
use model::{Timestamp, parse_duration};

use crate::{
    ActionSpec, ArtifactId, Effect, ExecutionMode, Input, Pipeline, PipelineSpec, RetryMode,
    Revision, StageSpec,
};

/// A limit on everything, even in tests.
const STEPS_MAX: usize = 10_000;

/// Source → Build → Deploy, the seeds' shape.
const STANDARD: &str = "
    stage Source src Source out=src
    stage Build compile Build in=src out=img timeout=1h
    stage Deploy deploy Deploy in=src,img timeout=2h
";

/// Parses spec lines: `mode queued`, `stage NAME ACTION; ACTION; ...` where an action is
/// `name Kind [in=a,b] [out=c] [order=N] [timeout=D] [config=K]`, and `standard` for
/// [`STANDARD`].
fn parse_spec(lines: &[&str]) -> PipelineSpec {
    let mut spec = PipelineSpec {
        name: "app".to_string(),
        execution_mode: ExecutionMode::Superseded,
        stages: vec![],
    };
    let expanded: Vec<&str> = lines
        .iter()
        .flat_map(|line| if *line == "standard" { STANDARD.lines().collect() } else { vec![*line] })
        .map(str::trim)
        .filter(|it| !it.is_empty())
        .collect();
    for line in expanded {
        let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
        match keyword {
            "mode" => {
                spec.execution_mode = match rest.trim() {
                    "queued" => ExecutionMode::Queued,
                    "superseded" => ExecutionMode::Superseded,
                    other => panic!("unknown mode {other}"),
                }
            }
            "stage" => {
                let (name, actions) = rest.trim().split_once(' ').unwrap();
                let actions = actions.split(';').map(parse_action_spec).collect();
                spec.stages.push(StageSpec { name: name.to_string(), actions });
            }
            other => panic!("unknown spec line {other}"),
        }
    }
    spec
}

fn parse_action_spec(text: &str) -> ActionSpec {
    let mut words = text.split_whitespace();
    let name = words.next().unwrap().to_string();
    let kind = crate::ActionKind::parse(words.next().unwrap()).unwrap();
    let mut action = ActionSpec {
        name,
        kind,
        config_key: String::new(),
        run_order: 1,
        input_artifacts: vec![],
        output_artifacts: vec![],
        timeout: None,
    };
    let list = |v: &str| v.split(',').map(str::to_string).collect();
    for word in words {
        let (key, value) = word.split_once('=').unwrap();
        match key {
            "in" => action.input_artifacts = list(value),
            "out" => action.output_artifacts = list(value),
            "order" => action.run_order = value.parse().unwrap(),
            "timeout" => action.timeout = Some(parse_duration(value).unwrap()),
            "config" => action.config_key = value.to_string(),
            other => panic!("unknown action key {other}"),
        }
    }
    action
}

enum Step {
    Input(Input),
    /// Snapshot to JSON, restore in a "new process", and resume.
    Restart,
}

/// `Stage/action#run`.
fn parse_address(text: &str) -> (String, String, u32) {
    let (stage, rest) = text.split_once('/').unwrap();
    let (action, run) = rest.split_once('#').unwrap_or((rest, "0"));
    (stage.to_string(), action.to_string(), run.parse().unwrap())
}

/// The outputs an action reports by default: each declared output as `{name}-{execution}`.
fn default_outputs(
    spec: &PipelineSpec,
    execution: &str,
    stage: &str,
    action: &str,
) -> Vec<(String, ArtifactId)> {
    let Some(s) = spec.stage_index(stage) else { return vec![] };
    let Some(action) = spec.stages[s].actions.iter().find(|it| it.name == action) else {
        return vec![];
    };
    action
        .output_artifacts
        .iter()
        .map(|name| (name.clone(), ArtifactId::new(format!("{name}-{execution}")).unwrap()))
        .collect()
}

fn push(execution_id: &str) -> Input {
    Input::SourceChanged {
        execution_id: execution_id.to_string(),
        revision: Revision {
            commit: format!("c-{execution_id}"),
            branch: "main".to_string(),
            pushed_by: "dev".to_string(),
            message: String::new(),
        },
        artifact: ArtifactId::new(format!("src-{}", execution_id.replace('/', "_"))).unwrap(),
    }
}

/// Parses one timed line:
/// `push e1`;
/// `ok e1 Build/compile#1 [name=id ...] [ref=b-1] [message words]` (default outputs unless some
/// `name=id` is given; `outputs=none` for none);
/// `fail e1 Build/compile#1 [ref=b-1] message words`; `started e1 Deploy/deploy#1 d-1`;
/// `approve e1 Prod/approval alice comment words`; `reject ...`;
/// `stop e1 wait|abandon reason words`; `retry e1 Build failed|all`; `restart`.
fn parse_step(spec: &PipelineSpec, line: &str) -> (Timestamp, Step) {
    let (at, rest) = line.split_once(' ').unwrap();
    let at = Timestamp::ZERO.saturating_add(parse_duration(at).unwrap());
    let words: Vec<&str> = rest.split_whitespace().collect();
    let input = match words[0] {
        "restart" => return (at, Step::Restart),
        "push" => push(words[1]),
        "ok" | "fail" => {
            let execution_id = words[1].to_string();
            let (stage, action, run) = parse_address(words[2]);
            let mut outputs = None;
            let mut external_ref = None;
            let mut message = vec![];
            for word in &words[3..] {
                match word.split_once('=') {
                    Some(("ref", value)) => external_ref = Some(value.to_string()),
                    Some(("outputs", "none")) => outputs = Some(vec![]),
                    Some((name, id)) => outputs
                        .get_or_insert_with(Vec::new)
                        .push((name.to_string(), ArtifactId::new(id).unwrap())),
                    None => message.push(*word),
                }
            }
            let succeeded = words[0] == "ok";
            let outputs = match outputs {
                Some(outputs) => outputs,
                None if succeeded => default_outputs(spec, &execution_id, &stage, &action),
                None => vec![],
            };
            Input::ActionResult {
                execution_id,
                stage,
                action,
                run,
                succeeded,
                message: message.join(" "),
                outputs,
                external_ref,
            }
        }
        "started" => {
            let (stage, action, run) = parse_address(words[2]);
            Input::ActionStarted {
                execution_id: words[1].to_string(),
                stage,
                action,
                run,
                external_ref: words[3].to_string(),
            }
        }
        "approve" | "reject" => {
            let (stage, action, _) = parse_address(words[2]);
            let (execution_id, by) = (words[1].to_string(), words[3].to_string());
            let comment = words[4..].join(" ");
            if words[0] == "approve" {
                Input::Approve { execution_id, stage, action, comment, by }
            } else {
                Input::Reject { execution_id, stage, action, comment, by }
            }
        }
        "stop" => Input::Stop {
            execution_id: words[1].to_string(),
            abandon: match words[2] {
                "wait" => false,
                "abandon" => true,
                other => panic!("stop takes wait or abandon, not {other}"),
            },
            reason: words[3..].join(" "),
        },
        "retry" => Input::Retry {
            execution_id: words[1].to_string(),
            stage: words[2].to_string(),
            mode: match words[3] {
                "failed" => RetryMode::FailedActions,
                "all" => RetryMode::AllActions,
                other => panic!("retry takes failed or all, not {other}"),
            },
        },
        other => panic!("unknown command {other}"),
    };
    (at, Step::Input(input))
}

fn parse_script(script: &str) -> (PipelineSpec, VecDeque<(Timestamp, Step)>) {
    // Timed lines start with a digit; everything before them is the spec.
    let lines: Vec<_> = script.lines().map(str::trim).filter(|it| !it.is_empty()).collect();
    let spec_len =
        lines.iter().take_while(|it| !it.starts_with(|c: char| c.is_ascii_digit())).count();
    let spec = parse_spec(&lines[..spec_len]);
    let steps: VecDeque<_> = lines[spec_len..].iter().map(|it| parse_step(&spec, it)).collect();
    assert!(steps.iter().zip(steps.iter().skip(1)).all(|(a, b)| a.0 <= b.0), "time order");
    (spec, steps)
}

/// JSON out and back, as the control plane persists and restores a snapshot.
fn restart(pipeline: &Pipeline) -> Pipeline {
    let json = serde_json::to_string(pipeline).unwrap();
    let restored: Pipeline = serde_json::from_str(&json).unwrap();
    assert_eq!(&restored, pipeline, "the snapshot lost something: {json}");
    restored
}

/// Checks, from the inputs given and the effects seen, the rules that must hold whatever
/// happens: one execution per stage at a time, artifacts consumed were produced earlier by the
/// same execution, nothing after `Finished` unless a retry re-opened the execution, and every
/// execution ends.
#[derive(Default)]
struct Observer {
    /// Per execution, the artifact it produced last under each name (the source, then the
    /// outputs of successful runs).
    produced: BTreeMap<String, BTreeMap<String, ArtifactId>>,
    /// Outputs reported for a run, credited when the machine says the run succeeded.
    reported: BTreeMap<RunId, Vec<(String, ArtifactId)>>,
    /// Per stage, the execution the effects say is inside it.
    inside: BTreeMap<String, String>,
    /// Executions whose `Finished` was seen (and not re-opened since).
    finished: BTreeMap<String, crate::ExecutionStatus>,
    /// Executions a retry was accepted for, whose re-opening is expected.
    reopening: BTreeSet<String>,
    started: BTreeSet<String>,
    /// Runs started and not ended, by (execution, stage, action, run).
    running: BTreeSet<RunId>,
}

/// (execution, stage, action, run).
type RunId = (String, String, String, u32);

impl Observer {
    fn accepted(&mut self, pipeline: &Pipeline, input: &Input) {
        match input {
            Input::SourceChanged { execution_id, artifact, .. } => {
                assert!(self.started.insert(execution_id.clone()), "{execution_id} accepted twice");
                let name = pipeline.spec().stages[0].actions[0].output_artifacts[0].clone();
                self.produced
                    .entry(execution_id.clone())
                    .or_default()
                    .insert(name, artifact.clone());
            }
            Input::ActionResult { execution_id, stage, action, run, outputs, .. } => {
                let key = (execution_id.clone(), stage.clone(), action.clone(), *run);
                self.reported.insert(key, outputs.clone());
            }
            Input::Retry { execution_id, .. } => {
                self.reopening.insert(execution_id.clone());
            }
            _ => {}
        }
    }

    fn saw(&mut self, pipeline: &Pipeline, effect: &Effect) {
        let id = match effect {
            Effect::ExecutionStatus { execution_id, .. }
            | Effect::StageStatus { execution_id, .. }
            | Effect::StartAction { execution_id, .. }
            | Effect::ActionStatus { execution_id, .. }
            | Effect::Finished { execution_id, .. } => execution_id,
            Effect::CancelAction { .. } => return, // may follow Finished (stop and abandon)
        };
        if self.finished.contains_key(id) {
            let reopened = matches!(
                effect,
                Effect::ExecutionStatus { status: crate::ExecutionStatus::InProgress, .. }
            );
            assert!(reopened && self.reopening.remove(id), "`{effect}` after {id} finished");
            self.finished.remove(id);
        }
        match effect {
            // The source stage never locks; every other stage holds one execution at a time.
            Effect::StageStatus { execution_id, stage, status, .. }
                if pipeline.spec().stage_index(stage) != Some(0) =>
            {
                let holder = self.inside.get(stage);
                if status.is_terminal() {
                    assert_eq!(
                        holder,
                        Some(execution_id),
                        "{execution_id} left {stage} without being in it"
                    );
                    self.inside.remove(stage);
                } else {
                    assert!(
                        holder.is_none_or(|it| it == execution_id),
                        "{execution_id} entered {stage} while {holder:?} is inside"
                    );
                    self.inside.insert(stage.clone(), execution_id.clone());
                }
            }
            Effect::StartAction { execution_id, stage, action, run, inputs, .. } => {
                let s = pipeline.spec().stage_index(stage).unwrap();
                let spec =
                    pipeline.spec().stages[s].actions.iter().find(|it| it.name == *action).unwrap();
                let names: Vec<&String> = inputs.iter().map(|(name, _)| name).collect();
                assert!(
                    names.iter().copied().eq(spec.input_artifacts.iter()),
                    "inputs of {effect}"
                );
                let produced = self.produced.get(execution_id).cloned().unwrap_or_default();
                for (name, artifact) in inputs {
                    assert_eq!(
                        produced.get(name),
                        Some(artifact),
                        "{execution_id} consumed {name}={artifact}, not what it produced last under \
                         that name"
                    );
                }
                self.running.insert((execution_id.clone(), stage.clone(), action.clone(), *run));
            }
            Effect::ActionStatus { execution_id, stage, action, run, status, .. } => {
                let key = (execution_id.clone(), stage.clone(), action.clone(), *run);
                if *status != crate::ActionStatus::InProgress {
                    self.running.remove(&key);
                }
                if *status == crate::ActionStatus::Succeeded {
                    let outputs = self.reported.remove(&key).unwrap_or_default();
                    self.produced.entry(execution_id.clone()).or_default().extend(outputs);
                }
            }
            Effect::Finished { execution_id, status, .. } => {
                assert!(status.is_terminal());
                assert!(
                    !self.running.iter().any(|it| it.0 == *execution_id),
                    "{execution_id} finished with actions running"
                );
                self.finished.insert(execution_id.clone(), *status);
            }
            Effect::ExecutionStatus { .. }
            | Effect::StageStatus { .. }
            | Effect::CancelAction { .. } => {}
        }
    }

    /// At the end: every execution accepted has finished, as its record says.
    fn check_all_ended(&self, pipeline: &Pipeline) {
        assert!(pipeline.is_idle(), "unfinished executions: {:?}", pipeline.active());
        for id in &self.started {
            let status = self.finished.get(id).unwrap_or_else(|| panic!("{id} never finished"));
            if let Some(rec) = pipeline.execution(id) {
                assert_eq!(rec.status, *status, "{id}");
            }
        }
        assert!(self.inside.is_empty(), "stages still held: {:?}", self.inside);
    }
}

/// Moves the queued effects into the trace, checking them.
fn drain(pipeline: &mut Pipeline, observer: &mut Observer, now: Timestamp, trace: &mut String) {
    while let Some(effect) = pipeline.poll_effect() {
        observer.saw(pipeline, &effect);
        writeln!(trace, "{:<8} {effect}", now.to_string()).unwrap();
    }
}

/// Runs a script: the driver advances `now` to the next input or the next deadline, whichever
/// comes first, and returns every effect with its time. On a tie the input is delivered (the
/// machine handles the due deadline first). After the last input it lets every deadline fire, so
/// every execution ends.
fn run(script: &str) -> (Pipeline, String) {
    let (spec, mut steps) = parse_script(script);
    let mut pipeline = Pipeline::new(spec, Timestamp::ZERO).unwrap();
    let mut observer = Observer::default();
    let (mut now, mut trace) = (Timestamp::ZERO, String::new());
    for _ in 0..STEPS_MAX {
        drain(&mut pipeline, &mut observer, now, &mut trace);
        let next_step = steps.front().map(|(at, _)| *at);
        let deadline = pipeline.poll_timeout();
        if let Some(at) = next_step.filter(|at| deadline.is_none_or(|it| *at <= it)) {
            let (_, step) = steps.pop_front().unwrap();
            now = at;
            match step {
                Step::Input(input) => match pipeline.handle_input(input.clone(), now) {
                    Ok(()) => observer.accepted(&pipeline, &input),
                    Err(err) => {
                        // Printed after the effects of the same call: due deadlines come first.
                        drain(&mut pipeline, &mut observer, now, &mut trace);
                        writeln!(trace, "{:<8} error: {err}", now.to_string()).unwrap();
                    }
                },
                Step::Restart => {
                    pipeline = restart(&pipeline);
                    writeln!(trace, "{:<8} -- restart --", now.to_string()).unwrap();
                    pipeline.resume(now);
                }
            }
        } else if let Some(deadline) = deadline {
            now = deadline;
            pipeline.handle_timeout(now);
        } else {
            observer.check_all_ended(&pipeline);
            return (pipeline, trace);
        }
    }
    panic!("script did not settle in {STEPS_MAX} steps");
}

#[track_caller]
fn check(script: &str, expect: Expect) {
    expect.assert_eq(&run(script).1);
}

/// Only the lines that show how executions move: execution statuses, starts, cancels and ends.
#[track_caller]
fn check_brief(script: &str, expect: Expect) {
    let trace = run(script).1;
    let brief: String = trace
        .lines()
        .filter(|line| {
            let effect = line[9..].trim_start();
            ["execution ", "start ", "cancel ", "finished ", "error", "--"]
                .iter()
                .any(|it| effect.starts_with(it))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    expect.assert_eq(&brief);
}
