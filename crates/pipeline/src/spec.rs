//! The pipeline definition (stages, actions, artifacts) and the rules a definition must follow
//! before a machine will run it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use model::format_duration;
use serde::{Deserialize, Serialize};

/// At most this many stages, the source stage included (AWS: 2 to 50).
pub const STAGES_MAX: usize = 50;
/// At most this many actions in one stage (AWS: 50).
pub const ACTIONS_PER_STAGE_MAX: usize = 50;
/// At most this many actions in the whole pipeline (AWS: 500).
pub const ACTIONS_MAX: usize = 500;
/// At most this many input artifacts, and as many output artifacts, per action (CodePipeline's
/// "valid input and output artifacts for each action type": CodeBuild takes 1 to 5 inputs and 0
/// to 5 outputs, the most of any action cutover runs).
pub const ARTIFACTS_PER_ACTION_MAX: usize = 5;
/// Longest pipeline, stage, action and artifact name, in characters (AWS: 100).
pub const NAME_CHARS_MAX: usize = 100;
/// Longest `config_key`, in bytes.
pub const CONFIG_KEY_BYTES_MAX: usize = 256;
/// `run_order` is 1 to this (AWS: 999).
pub const RUN_ORDER_MAX: u32 = 999;
/// Shortest and longest approval timeout (AWS: 5 minutes to 86,400 minutes).
pub const APPROVAL_TIMEOUT_MIN: Duration = Duration::from_secs(5 * 60);
pub const APPROVAL_TIMEOUT_MAX: Duration = Duration::from_secs(86_400 * 60);
/// Shortest timeout of any other action: long enough that a deadline never falls in the call that
/// set it. The longest is the same as for approvals.
pub const ACTION_TIMEOUT_MIN: Duration = Duration::from_secs(1);

/// One pipeline: its stages in order. The first stage is the source stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineSpec {
    pub name: String,
    #[serde(default)]
    pub execution_mode: ExecutionMode,
    pub stages: Vec<StageSpec>,
}

/// How executions share the stages (AWS `executionMode`; PARALLEL is not supported).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionMode {
    /// One execution per stage; at most one waits in front of a busy stage, and a newer arrival
    /// supersedes it.
    #[default]
    Superseded,
    /// One execution per stage; the others wait in arrival order and none is superseded.
    Queued,
}

impl ExecutionMode {
    /// As written in `execution_mode:`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionMode::Superseded => "SUPERSEDED",
            ExecutionMode::Queued => "QUEUED",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSpec {
    pub name: String,
    pub actions: Vec<ActionSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionSpec {
    pub name: String,
    pub kind: ActionKind,
    /// What the control plane looks up to run the action (a build project, a deployment group,
    /// ...). Opaque here; handed back in `Effect::StartAction`.
    #[serde(default)]
    pub config_key: String,
    /// Actions of a stage with the same `run_order` run in parallel; ascending orders run one
    /// after another. Gaps are allowed.
    #[serde(default = "default_run_order")]
    pub run_order: u32,
    #[serde(default)]
    pub input_artifacts: Vec<String>,
    #[serde(default)]
    pub output_artifacts: Vec<String>,
    /// `None`: [`ActionKind::default_timeout`].
    #[serde(default)]
    pub timeout: Option<Duration>,
}

fn default_run_order() -> u32 {
    1
}

/// What an action does; the control plane decides how.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ActionKind {
    /// The push (or poll) that starts an execution. Only in the first stage, and only there.
    Source,
    /// A CodeBuild-style build (`buildspec.yml`).
    Build,
    /// A build used as a test step.
    Test,
    /// A blue/green deployment (CodeDeployToECS: task definition, AppSpec, `imageDetail.json`).
    Deploy,
    /// A standard ECS deployment (`imagedefinitions.json`).
    DeployEcs,
    /// A manual approval: waits for `Input::Approve` or `Input::Reject`.
    Approval,
    /// A command or HTTP call the control plane runs.
    Invoke,
}

impl ActionKind {
    pub const ALL: [ActionKind; 7] = [
        ActionKind::Source,
        ActionKind::Build,
        ActionKind::Test,
        ActionKind::Deploy,
        ActionKind::DeployEcs,
        ActionKind::Approval,
        ActionKind::Invoke,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Source => "Source",
            ActionKind::Build => "Build",
            ActionKind::Test => "Test",
            ActionKind::Deploy => "Deploy",
            ActionKind::DeployEcs => "DeployEcs",
            ActionKind::Approval => "Approval",
            ActionKind::Invoke => "Invoke",
        }
    }

    pub fn parse(text: &str) -> Option<ActionKind> {
        ActionKind::ALL.into_iter().find(|it| it.as_str() == text)
    }

    /// AWS's action timeouts (aws-semantics.md §5.3, §5.7): CodeBuild 8 h, CodeDeployToECS 5
    /// days, ECS 1 h, manual approval 7 days, anything else 1 h. A source action never waits (it
    /// completes when the push arrives); its value is unused.
    pub fn default_timeout(self) -> Duration {
        const HOUR: u64 = 3600;
        Duration::from_secs(match self {
            ActionKind::Build | ActionKind::Test => 8 * HOUR,
            ActionKind::Deploy => 5 * 24 * HOUR,
            ActionKind::Approval => 7 * 24 * HOUR,
            ActionKind::Source | ActionKind::DeployEcs | ActionKind::Invoke => HOUR,
        })
    }

    /// Deployments are asked to stop when their execution is stopped, even by "stop and wait"
    /// (cutover's difference from AWS).
    pub fn is_deploy(self) -> bool {
        matches!(self, ActionKind::Deploy | ActionKind::DeployEcs)
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ActionSpec {
    pub fn effective_timeout(&self) -> Duration {
        self.timeout.unwrap_or_else(|| self.kind.default_timeout())
    }
}

/// A definition the machine refuses, with the path of the field to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SpecError {
    /// Like `stages[1].actions[0].input_artifacts[2]`.
    pub path: String,
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError { path: path.into(), message: message.into() }
}

/// Every output artifact declared so far: name → (stage index, run order, where it was declared).
type Outputs<'a> = BTreeMap<&'a str, (usize, u32, String)>;

impl PipelineSpec {
    /// AWS's structure rules (aws-semantics.md §5.1) plus cutover's limits; see the crate docs.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_name("name", &self.name, NameKind::Entity)?;
        if self.stages.len() < 2 || self.stages.len() > STAGES_MAX {
            return Err(err(
                "stages",
                format!(
                    "a pipeline has 2 to {STAGES_MAX} stages (a source stage and at least one \
                     more), not {}",
                    self.stages.len()
                ),
            ));
        }
        let total: usize = self.stages.iter().map(|it| it.actions.len()).sum();
        if total > ACTIONS_MAX {
            return Err(err(
                "stages",
                format!("a pipeline has at most {ACTIONS_MAX} actions, not {total}"),
            ));
        }
        let mut stage_names = BTreeSet::new();
        let mut outputs = Outputs::new();
        for (s, stage) in self.stages.iter().enumerate() {
            let path = format!("stages[{s}]");
            check_name(&format!("{path}.name"), &stage.name, NameKind::Entity)?;
            if !stage_names.insert(stage.name.as_str()) {
                return Err(err(
                    format!("{path}.name"),
                    format!("stage name `{}` is used twice; stage names are unique", stage.name),
                ));
            }
            check_actions(&path, s, stage)?;
            // A stage's outputs are registered before its inputs are checked, so that a same-stage
            // input is judged by run order wherever in the list its producer is written.
            register_outputs(&path, s, stage, &mut outputs)?;
            check_inputs(&path, s, stage, &outputs)?;
        }
        Ok(())
    }

    /// The index of the stage called `name`.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|it| it.name == name)
    }
}

/// A stage's actions: how many, the source stage's single source action, unique names, and each
/// action's own rules.
fn check_actions(path: &str, s: usize, stage: &StageSpec) -> Result<(), SpecError> {
    if stage.actions.is_empty() || stage.actions.len() > ACTIONS_PER_STAGE_MAX {
        return Err(err(
            format!("{path}.actions"),
            format!(
                "a stage has 1 to {ACTIONS_PER_STAGE_MAX} actions, not {}",
                stage.actions.len()
            ),
        ));
    }
    if s == 0 {
        check_source_stage(path, stage)?;
    }
    let mut action_names = BTreeSet::new();
    for (a, action) in stage.actions.iter().enumerate() {
        let path = format!("{path}.actions[{a}]");
        check_name(&format!("{path}.name"), &action.name, NameKind::Entity)?;
        if !action_names.insert(action.name.as_str()) {
            return Err(err(
                format!("{path}.name"),
                format!(
                    "action name `{}` is used twice in stage `{}`; action names are unique \
                     within a stage",
                    action.name, stage.name
                ),
            ));
        }
        check_action(&path, s, action)?;
    }
    Ok(())
}

fn check_source_stage(path: &str, stage: &StageSpec) -> Result<(), SpecError> {
    let [action] = &stage.actions[..] else {
        return Err(err(
            format!("{path}.actions"),
            "the first stage holds exactly one action, of kind Source",
        ));
    };
    if action.kind != ActionKind::Source {
        return Err(err(
            format!("{path}.actions[0].kind"),
            format!("the first stage's action must be of kind Source, not {}", action.kind),
        ));
    }
    if !action.input_artifacts.is_empty() || action.output_artifacts.len() != 1 {
        return Err(err(
            format!("{path}.actions[0]"),
            "a source action has no input artifacts and exactly one output artifact (the pushed \
             revision)",
        ));
    }
    Ok(())
}

/// Adds a stage's outputs to `outputs`; an output name is unique in the pipeline.
fn register_outputs<'a>(
    path: &str,
    s: usize,
    stage: &'a StageSpec,
    outputs: &mut Outputs<'a>,
) -> Result<(), SpecError> {
    for (a, action) in stage.actions.iter().enumerate() {
        for (o, output) in action.output_artifacts.iter().enumerate() {
            let path = format!("{path}.actions[{a}].output_artifacts[{o}]");
            check_name(&path, output, NameKind::Artifact)?;
            if let Some((_, _, other)) = outputs.get(output.as_str()) {
                return Err(err(
                    path,
                    format!(
                        "output artifact `{output}` is also produced by {other}; output artifact \
                         names are unique in a pipeline"
                    ),
                ));
            }
            let at = format!("action `{}/{}`", stage.name, action.name);
            outputs.insert(output, (s, action.run_order, at));
        }
    }
    Ok(())
}

/// Every input of a stage's actions is produced by an action that runs before it.
fn check_inputs(
    path: &str,
    s: usize,
    stage: &StageSpec,
    outputs: &Outputs<'_>,
) -> Result<(), SpecError> {
    for (a, action) in stage.actions.iter().enumerate() {
        for (i, input) in action.input_artifacts.iter().enumerate() {
            let path = format!("{path}.actions[{a}].input_artifacts[{i}]");
            check_name(&path, input, NameKind::Artifact)?;
            if action.input_artifacts[..i].contains(input) {
                return Err(err(path, format!("input artifact `{input}` is listed twice")));
            }
            match outputs.get(input.as_str()) {
                Some((os, order, _)) if *os < s || (*os == s && *order < action.run_order) => {}
                Some((_, order, at)) => {
                    return Err(err(
                        path,
                        format!(
                            "input artifact `{input}` is produced by {at} (run_order {order}), \
                             which does not run before this action (run_order {}); an input \
                             comes from an earlier stage or a lower run_order in the same stage",
                            action.run_order
                        ),
                    ));
                }
                None => {
                    return Err(err(
                        path,
                        format!(
                            "input artifact `{input}` is not produced by any action that runs \
                             before this one"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn check_action(path: &str, stage: usize, action: &ActionSpec) -> Result<(), SpecError> {
    if stage > 0 && action.kind == ActionKind::Source {
        return Err(err(format!("{path}.kind"), "Source actions belong in the first stage only"));
    }
    if action.run_order == 0 || action.run_order > RUN_ORDER_MAX {
        return Err(err(
            format!("{path}.run_order"),
            format!("run_order is 1 to {RUN_ORDER_MAX}, not {}", action.run_order),
        ));
    }
    if action.config_key.len() > CONFIG_KEY_BYTES_MAX
        || action.config_key.chars().any(char::is_control)
    {
        return Err(err(
            format!("{path}.config_key"),
            format!(
                "a config key is at most {CONFIG_KEY_BYTES_MAX} bytes without control characters"
            ),
        ));
    }
    for (what, list) in [
        ("input_artifacts", &action.input_artifacts),
        ("output_artifacts", &action.output_artifacts),
    ] {
        if list.len() > ARTIFACTS_PER_ACTION_MAX {
            return Err(err(
                format!("{path}.{what}"),
                format!(
                    "an action has at most {ARTIFACTS_PER_ACTION_MAX} {what}, not {}",
                    list.len()
                ),
            ));
        }
    }
    if action.kind == ActionKind::Approval
        && (!action.input_artifacts.is_empty() || !action.output_artifacts.is_empty())
    {
        return Err(err(path, "an approval action has no input or output artifacts"));
    }
    if let Some(timeout) = action.timeout {
        let (min, max) = if action.kind == ActionKind::Approval {
            (APPROVAL_TIMEOUT_MIN, APPROVAL_TIMEOUT_MAX)
        } else {
            (ACTION_TIMEOUT_MIN, APPROVAL_TIMEOUT_MAX)
        };
        if timeout < min || timeout > max {
            return Err(err(
                format!("{path}.timeout"),
                format!(
                    "{} actions time out after {} to {}, not {}",
                    action.kind,
                    format_duration(min),
                    format_duration(max),
                    format_duration(timeout)
                ),
            ));
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum NameKind {
    /// Pipelines, stages, actions: `[A-Za-z0-9.@_-]`.
    Entity,
    /// Artifacts: `[A-Za-z0-9_-]`.
    Artifact,
}

fn check_name(path: &str, name: &str, kind: NameKind) -> Result<(), SpecError> {
    let allowed = |c: char| {
        c.is_ascii_alphanumeric()
            || c == '_'
            || c == '-'
            || (kind == NameKind::Entity && (c == '.' || c == '@'))
    };
    let chars = if kind == NameKind::Entity { "A-Z a-z 0-9 . @ _ -" } else { "A-Z a-z 0-9 _ -" };
    if name.is_empty() || name.chars().count() > NAME_CHARS_MAX || !name.chars().all(allowed) {
        return Err(err(
            path,
            format!("`{name}` is not a valid name: use 1 to {NAME_CHARS_MAX} of {chars}"),
        ));
    }
    Ok(())
}
