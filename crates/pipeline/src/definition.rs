//! The one pipeline definition, from `cutover.yaml` to the executor: `spec` parses into it (with
//! positions for every error), `pipelines` stores and executes it, and [`PipelineDecl::machine_spec`]
//! gives the machine its structural view. CodePipeline's limits live here, once.
//!
//! Unlike CodePipeline, the source is not a stage: a pipeline has one `source` and 1 to
//! [`STAGES_MAX`]` - 1` `stages` (CodePipeline's 2 to 50 with the source stage counted).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use model::glob::Glob;
use serde::{Deserialize, Serialize};

pub use crate::spec::{
    ACTIONS_MAX, ACTIONS_PER_STAGE_MAX, ARTIFACTS_PER_ACTION_MAX, ExecutionMode, NAME_CHARS_MAX,
    RUN_ORDER_MAX, STAGES_MAX,
};
use crate::spec::{ActionKind as Category, ActionSpec, PipelineSpec, StageSpec};

/// The name of the machine's first stage, which holds the source action (`source` when a declared
/// stage is already called `Source`).
pub const SOURCE_STAGE: &str = "Source";
/// The source action's name.
pub const SOURCE_ACTION: &str = "Source";
/// The machine's timeout for a build is the build's own timeout plus this, so the build reports
/// TIMED_OUT itself before the machine gives up on it.
const BUILD_TIMEOUT_MARGIN: Duration = Duration::from_secs(120);
/// Longest branch name, in bytes (git's practical limit); a longer text is never a branch.
pub const BRANCH_BYTES_MAX: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineDecl {
    pub name: String,
    pub execution_mode: ExecutionMode,
    pub source: PipelineSource,
    /// 1 to 49, in order; each has 1 to 50 actions.
    pub stages: Vec<StageDecl>,
}

/// Where a pipeline's code comes from and which pushes start it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineSource {
    pub location: SourceLocation,
    /// The branch a manual start and polling build. Pushes to it start the pipeline unless
    /// `branches` says which pushes do. Default `main`.
    pub branch: String,
    /// Push filters, as CodePipeline's trigger `branches`.
    pub branches: Option<BranchFilter>,
    /// The artifact holding the checked-out commit. Default `source`.
    pub output_artifact: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceLocation {
    /// `repository: NAME`: a repository cutover hosts; a push to it starts the pipeline.
    Repository(String),
    /// `url: …`: a repository cutover fetches from (any URL or path `git fetch` takes; a relative
    /// path is relative to the cutover.yaml file), polled every `poll_interval`, started by a
    /// push webhook, or both. Polling every minute when neither is given.
    Url { url: String, poll_interval: Option<Duration>, webhook: Option<WebhookTrigger> },
}

/// A GitHub- or Gitea-style push webhook, verified with `X-Hub-Signature-256`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookTrigger {
    /// The environment variable of the control plane (`cutover up`) that holds the shared
    /// secret. The secret itself is never in cutover.yaml.
    pub secret_env: String,
}

/// Branch globs ([`model::glob`]): `*` matches within one `/`-separated part, `**` (a whole part)
/// across parts, `?` one character. A branch matches when it matches an include (or there are none) and no exclude:
/// excludes win, as in CodePipeline.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BranchFilter {
    pub includes: Vec<String>,
    pub excludes: Vec<String>,
}

impl BranchFilter {
    pub fn matches(&self, branch: &str) -> bool {
        // Branch names are short; a longer text (from a webhook) cannot be one.
        if branch.len() > BRANCH_BYTES_MAX {
            return false;
        }
        let matches =
            |pattern: &String| Glob::new(pattern).is_ok_and(|glob| glob.matches_path(branch));
        (self.includes.is_empty() || self.includes.iter().any(matches))
            && !self.excludes.iter().any(matches)
    }
}

impl PipelineSource {
    /// Whether a push to `branch` starts the pipeline.
    pub fn triggers_on(&self, branch: &str) -> bool {
        match &self.branches {
            Some(filter) => filter.matches(branch),
            None => branch == self.branch,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageDecl {
    pub name: String,
    pub actions: Vec<ActionDecl>,
}

/// An action; defaults are filled in, so `input_artifacts` and `output_artifacts` are what the
/// action really reads and writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionDecl {
    pub name: String,
    /// 1 to 999. Actions of a stage with the same run order run in parallel; a higher one runs
    /// after the lower ones have succeeded.
    pub run_order: u16,
    pub input_artifacts: Vec<String>,
    pub output_artifacts: Vec<String>,
    pub kind: ActionKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionKind {
    /// `type: build` (CodeBuild).
    Build(BuildAction),
    /// `type: deploy` (CodeDeployToECS: blue/green through a deployment group).
    Deploy(DeployAction),
    /// `type: deploy_ecs` (the ECS action: `imagedefinitions.json`, for a service without a
    /// deployment group).
    DeployEcs(DeployEcsAction),
    /// `type: approval` (manual approval).
    Approval(ApprovalAction),
}

impl ActionKind {
    /// As written in `type:`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ActionKind::Build(_) => "build",
            ActionKind::Deploy(_) => "deploy",
            ActionKind::DeployEcs(_) => "deploy_ecs",
            ActionKind::Approval(_) => "approval",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildAction {
    /// Path of the buildspec inside the first input artifact. Default `buildspec.yml`.
    pub buildspec: String,
    /// Default 60 minutes, at most 36 hours (CodeBuild's).
    pub timeout: Duration,
    /// Variables set for the build, over the buildspec's `env.variables`.
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployAction {
    pub deployment_group: DeploymentGroupRef,
    /// Default: the source artifact.
    pub task_definition_template_artifact: String,
    /// Default `taskdef.json`.
    pub task_definition_template_path: String,
    /// Default: the source artifact.
    pub appspec_template_artifact: String,
    /// Default `appspec.yaml`.
    pub appspec_template_path: String,
    /// 0 to 4. Default: `IMAGE1_NAME` from the output of the build action that runs before this
    /// one, when there is exactly one such output; none when there is no build before.
    pub image_placeholders: Vec<ImagePlaceholder>,
}

/// `<placeholder>` in the task definition template is replaced by `ImageURI` from
/// `imageDetail.json` in `artifact`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePlaceholder {
    pub artifact: String,
    /// Without angle brackets: `IMAGE1_NAME`.
    pub placeholder: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployEcsAction {
    pub service: String,
    /// Path of `imagedefinitions.json` inside the input artifact. Default `imagedefinitions.json`.
    pub image_definitions: String,
    /// How long to wait for the service to be stable. Default and maximum 60 minutes (ECS's).
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalAction {
    /// Without a decision by then, the action fails. Default 7 days, at most 60 days.
    pub timeout: Duration,
    /// Shown to whoever approves: what they are asked (CodePipeline's `CustomData`).
    pub comment: Option<String>,
    /// An http(s) page to review before deciding (CodePipeline's `ExternalEntityLink`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_url: Option<String>,
}

/// A deployment group, written `application/group`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeploymentGroupRef {
    pub application: String,
    pub deployment_group: String,
}

impl DeploymentGroupRef {
    /// Reads `application/group`; both are names (1 to 100 of `A-Z a-z 0-9 . _ -`).
    pub fn parse(text: &str) -> Result<DeploymentGroupRef, NotAGroupRef> {
        let is_name = |s: &str| {
            (1..=NAME_CHARS_MAX).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        };
        match text.split_once('/') {
            Some((app, group)) if is_name(app) && is_name(group) => Ok(DeploymentGroupRef {
                application: app.to_string(),
                deployment_group: group.to_string(),
            }),
            _ => Err(NotAGroupRef { text: text.to_string() }),
        }
    }
}

/// A `deployment_group` that is not `application/group`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} is not a deployment group reference; write `<application>/<deployment group>`, like \
     web/web-prod",
    quote(text)
)]
pub struct NotAGroupRef {
    pub text: String,
}

/// `text` in double quotes, cut after 60 characters (a reference can be a whole line of junk).
fn quote(text: &str) -> String {
    const SHOWN_MAX: usize = 60;
    if text.chars().count() > SHOWN_MAX {
        let head: String = text.chars().take(SHOWN_MAX).collect();
        format!("{head:?}…")
    } else {
        format!("{text:?}")
    }
}

impl fmt::Display for DeploymentGroupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.application, self.deployment_group)
    }
}

impl PipelineDecl {
    /// How often a URL source is polled (`None`: a hosted repository, or webhook only).
    pub fn poll_interval(&self) -> Option<Duration> {
        match &self.source.location {
            SourceLocation::Url { poll_interval, .. } => *poll_interval,
            SourceLocation::Repository(_) => None,
        }
    }

    /// The hosted repository this pipeline builds, if its source is one.
    pub fn repository(&self) -> Option<&str> {
        match &self.source.location {
            SourceLocation::Repository(name) => Some(name),
            SourceLocation::Url { .. } => None,
        }
    }

    /// The URL and the webhook secret's variable, if the source is a URL with a webhook.
    pub fn webhook(&self) -> Option<(&str, &str)> {
        match &self.source.location {
            SourceLocation::Url { url, webhook: Some(webhook), .. } => {
                Some((url, &webhook.secret_env))
            }
            _ => None,
        }
    }

    pub fn action(&self, stage: &str, action: &str) -> Option<&ActionDecl> {
        self.stages.iter().find(|s| s.name == stage)?.actions.iter().find(|a| a.name == action)
    }

    pub fn source_stage_name(&self) -> &'static str {
        if self.stages.iter().any(|s| s.name == SOURCE_STAGE) { "source" } else { SOURCE_STAGE }
    }

    /// What the machine runs: a source stage with the source action, then the declared stages,
    /// each action with its category and its timeout.
    pub fn machine_spec(&self) -> PipelineSpec {
        let source = StageSpec {
            name: self.source_stage_name().to_string(),
            actions: vec![ActionSpec {
                name: SOURCE_ACTION.to_string(),
                kind: Category::Source,
                config_key: String::new(),
                run_order: 1,
                input_artifacts: Vec::new(),
                output_artifacts: vec![self.source.output_artifact.clone()],
                timeout: None,
            }],
        };
        let declared = self.stages.iter().map(|s| StageSpec {
            name: s.name.clone(),
            actions: s
                .actions
                .iter()
                .map(|a| ActionSpec {
                    name: a.name.clone(),
                    kind: a.kind.category(),
                    config_key: format!("{}/{}", s.name, a.name),
                    run_order: u32::from(a.run_order),
                    input_artifacts: a.input_artifacts.clone(),
                    output_artifacts: a.output_artifacts.clone(),
                    timeout: a.kind.machine_timeout(),
                })
                .collect(),
        });
        PipelineSpec {
            name: self.name.clone(),
            execution_mode: self.execution_mode,
            stages: std::iter::once(source).chain(declared).collect(),
        }
    }
}

impl ActionKind {
    /// The machine's category for this action.
    pub fn category(&self) -> Category {
        match self {
            ActionKind::Build(_) => Category::Build,
            ActionKind::Deploy(_) => Category::Deploy,
            ActionKind::DeployEcs(_) => Category::DeployEcs,
            ActionKind::Approval(_) => Category::Approval,
        }
    }

    /// How long the machine lets the action run (`None`: the category's default).
    fn machine_timeout(&self) -> Option<Duration> {
        match self {
            ActionKind::Build(build) => Some(build.timeout + BUILD_TIMEOUT_MARGIN),
            ActionKind::Deploy(_) => None,
            ActionKind::DeployEcs(ecs) => Some(ecs.timeout),
            ActionKind::Approval(approval) => Some(approval.timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_win_over_includes() {
        let filter = BranchFilter {
            includes: vec!["release/**".into()],
            excludes: vec!["release/old-*".into()],
        };
        assert!(filter.matches("release/2"));
        assert!(!filter.matches("release/old-1"));
        assert!(!filter.matches("main"));
        let everything_but = BranchFilter { includes: vec![], excludes: vec!["wip/**".into()] };
        assert!(everything_but.matches("main"));
        assert!(!everything_but.matches("wip/x"));
        assert!(!everything_but.matches(&"x".repeat(BRANCH_BYTES_MAX + 1)));
    }

    #[test]
    fn a_declared_stage_called_source_moves_the_machine_s_source_stage_aside() {
        let decl = |stage: &str| PipelineDecl {
            name: "web".into(),
            execution_mode: ExecutionMode::Queued,
            source: PipelineSource {
                location: SourceLocation::Repository("web".into()),
                branch: "main".into(),
                branches: None,
                output_artifact: "src".into(),
            },
            stages: vec![StageDecl {
                name: stage.into(),
                actions: vec![ActionDecl {
                    name: "ok".into(),
                    run_order: 1,
                    input_artifacts: vec![],
                    output_artifacts: vec![],
                    kind: ActionKind::Approval(ApprovalAction {
                        timeout: Duration::from_secs(3600),
                        comment: None,
                        review_url: None,
                    }),
                }],
            }],
        };
        let spec = decl("Approve").machine_spec();
        spec.validate().unwrap();
        let names: Vec<&str> = spec.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Source", "Approve"]);
        assert_eq!(spec.execution_mode, ExecutionMode::Queued);
        assert_eq!(spec.stages[1].actions[0].config_key, "Approve/ok");
        assert_eq!(spec.stages[1].actions[0].timeout, Some(Duration::from_secs(3600)));
        let names: Vec<String> =
            decl("Source").machine_spec().stages.into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["source", "Source"]);
    }
}
