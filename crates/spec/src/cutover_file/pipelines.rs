//! `repositories` and `pipelines` in cutover.yaml: CodePipeline's model (a source, then stages of
//! build, deploy and approval actions joined by named artifacts) in cutover's spelling, with
//! CodePipeline's structural rules checked where they were broken.
//!
//! Unlike CodePipeline, the source is not a stage: a pipeline has one `source` and 1 to 49
//! `stages` (CodePipeline's 2 to 50 with the source stage counted).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use model::format_duration;

use super::{GroupMeta, Loc, Named, check_unique, name};
use crate::decode::{BareNumber, Cx, Field, Fields, quote};
use crate::diag::suggest;
use crate::taskdef::optional;
use crate::tree::{Node, Value, child_index, child_key};

/// A repository cutover hosts (`repositories:`): `git push` goes to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositoryDecl {
    pub name: String,
}

/// A pipeline (`pipelines:`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineDecl {
    pub name: String,
    pub execution_mode: ExecutionMode,
    pub source: PipelineSource,
    /// 1 to 49, in order; each has 1 to 50 actions.
    pub stages: Vec<StageDecl>,
}

/// What happens to an execution that reaches a stage another execution holds (CodePipeline's
/// `executionMode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ExecutionMode {
    /// At most one execution waits in front of a busy stage; a newer one replaces it, and the
    /// replaced one ends `Superseded`.
    #[default]
    Superseded,
    /// Executions wait in order; none is superseded.
    Queued,
}

impl ExecutionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionMode::Superseded => "SUPERSEDED",
            ExecutionMode::Queued => "QUEUED",
        }
    }
}

/// Where a pipeline's code comes from and which pushes start it.
#[derive(Clone, Debug, PartialEq, Eq)]
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceLocation {
    /// `repository: NAME`: a repository cutover hosts; a push to it starts the pipeline.
    Repository(String),
    /// `url: …`: a repository cutover fetches from (any URL or path `git fetch` takes; a relative
    /// path is relative to the cutover.yaml file), polled every `poll_interval`, started by a
    /// push webhook, or both. Polling every minute when neither is given.
    Url { url: String, poll_interval: Option<Duration>, webhook: Option<WebhookTrigger> },
}

/// A GitHub- or Gitea-style push webhook, verified with `X-Hub-Signature-256`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookTrigger {
    /// The environment variable of the control plane (`cutover up`) that holds the shared
    /// secret. The secret itself is never in cutover.yaml.
    pub secret_env: String,
}

/// Branch globs: `*` matches within one `/`-separated part, `**` across parts, `?` one
/// character. A branch matches when it matches an include (or there are none) and no exclude:
/// excludes win, as in CodePipeline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BranchFilter {
    pub includes: Vec<String>,
    pub excludes: Vec<String>,
}

impl BranchFilter {
    pub fn matches(&self, branch: &str) -> bool {
        (self.includes.is_empty() || self.includes.iter().any(|p| glob_matches(p, branch)))
            && !self.excludes.iter().any(|p| glob_matches(p, branch))
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageDecl {
    pub name: String,
    pub actions: Vec<ActionDecl>,
}

/// An action; defaults are filled in, so `input_artifacts` and `output_artifacts` are what the
/// action really reads and writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionDecl {
    pub name: String,
    /// 1 to 999. Actions of a stage with the same run order run in parallel; a higher one runs
    /// after the lower ones have succeeded.
    pub run_order: u16,
    pub input_artifacts: Vec<String>,
    pub output_artifacts: Vec<String>,
    pub kind: ActionKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildAction {
    /// Path of the buildspec inside the first input artifact. Default `buildspec.yml`.
    pub buildspec: String,
    /// Default 60 minutes, at most 36 hours (CodeBuild's).
    pub timeout: Duration,
    /// Variables set for the build, over the buildspec's `env.variables`.
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagePlaceholder {
    pub artifact: String,
    /// Without angle brackets: `IMAGE1_NAME`.
    pub placeholder: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployEcsAction {
    pub service: String,
    /// Path of `imagedefinitions.json` inside the input artifact. Default `imagedefinitions.json`.
    pub image_definitions: String,
    /// How long to wait for the service to be stable. Default and maximum 60 minutes (ECS's).
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalAction {
    /// Without a decision by then, the action fails. Default 7 days, at most 60 days.
    pub timeout: Duration,
    /// Shown to whoever approves.
    pub comment: Option<String>,
}

/// A deployment group, written `application/group`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeploymentGroupRef {
    pub application: String,
    pub deployment_group: String,
}

impl DeploymentGroupRef {
    /// Reads `application/group`; both are names (1 to 100 of `A-Z a-z 0-9 . _ -`).
    pub fn parse(text: &str) -> Result<DeploymentGroupRef, String> {
        let is_name = |s: &str| {
            (1..=super::NAME_LENGTH_MAX).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        };
        match text.split_once('/') {
            Some((app, group)) if is_name(app) && is_name(group) => Ok(DeploymentGroupRef {
                application: app.to_string(),
                deployment_group: group.to_string(),
            }),
            _ => Err(format!(
                "{} is not a deployment group reference; write `<application>/<deployment group>`, \
                 like web/web-prod",
                quote(text)
            )),
        }
    }
}

impl fmt::Display for DeploymentGroupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.application, self.deployment_group)
    }
}

// ---------------------------------------------------------------------------------------------
// Limits and defaults (CodePipeline's, CodeBuild's and ECS's where they exist).

const STAGES_MAX: usize = 49;
const ACTIONS_PER_STAGE_MAX: usize = 50;
const ACTIONS_PER_PIPELINE_MAX: usize = 500;
const RUN_ORDER_MAX: u16 = 999;
const ARTIFACTS_MAX: usize = 5;
const IMAGES_MAX: usize = 4;
const ARTIFACT_NAME_LENGTH_MAX: usize = 100;
const BRANCH_PATTERNS_MAX: usize = 8;
const BRANCH_LENGTH_MAX: usize = 255;
const COMMENT_LENGTH_MAX: usize = 512;
const ENV_NAME_LENGTH_MAX: usize = 255;
const PATH_LENGTH_MAX: usize = 1024;
const DEFAULT_BRANCH: &str = "main";
const DEFAULT_SOURCE_ARTIFACT: &str = "source";
const DEFAULT_BUILDSPEC: &str = "buildspec.yml";
const DEFAULT_TASK_DEFINITION_PATH: &str = "taskdef.json";
const DEFAULT_APPSPEC_PATH: &str = "appspec.yaml";
const DEFAULT_IMAGE_DEFINITIONS: &str = "imagedefinitions.json";
const DEFAULT_PLACEHOLDER: &str = "IMAGE1_NAME";
const POLL_INTERVAL_DEFAULT: Duration = Duration::from_secs(60);
const POLL_INTERVAL_MAX: Duration = Duration::from_secs(24 * 3600);
const BUILD_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60 * 60);
const BUILD_TIMEOUT_MAX: Duration = Duration::from_secs(36 * 3600);
const ECS_TIMEOUT_MAX: Duration = Duration::from_secs(60 * 60);
const APPROVAL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);
const APPROVAL_TIMEOUT_MAX: Duration = Duration::from_secs(60 * 24 * 3600);

// ---------------------------------------------------------------------------------------------
// Repositories.

pub(super) fn repository(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> (Option<RepositoryDecl>, Option<Named>) {
    let Some(mut f) = cx.map(node, path) else { return (None, None) };
    let name = name(cx, &mut f, "repository").and_then(|(n, loc)| {
        // The name becomes a URL path and a directory: no hidden names, and no `.git` that the
        // remote URL would double.
        let problem = if n.starts_with('.') {
            Some("must not start with `.`")
        } else if n.to_ascii_lowercase().ends_with(".git") {
            Some("must not end with `.git` (the remote URL adds it)")
        } else {
            None
        };
        if let Some(problem) = problem {
            cx.error(loc.pos, &loc.path, format!("repository name `{n}` {problem}"));
            return None;
        }
        Some((n, loc))
    });
    f.finish(cx, &["name"], &[]);
    (name.clone().map(|(name, _)| RepositoryDecl { name }), name)
}

// ---------------------------------------------------------------------------------------------
// Pipelines.

#[derive(Default)]
pub(super) struct PipelineMeta {
    pub name: Option<Named>,
    pub repository: Option<Named>,
    pub deployment_groups: Vec<(DeploymentGroupRef, Loc)>,
    pub ecs_services: Vec<Named>,
}

const PIPELINE_FIELDS: &[&str] = &["name", "execution_mode", "source", "stages"];

pub(super) fn pipeline(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> (Option<PipelineDecl>, PipelineMeta) {
    let mut meta = PipelineMeta::default();
    let Some(mut f) = cx.map(node, path) else { return (None, meta) };
    meta.name = name(cx, &mut f, "pipeline");
    let execution_mode =
        optional(cx, &mut f, "execution_mode", |cx, m| match cx.str(m.node, &m.path)? {
            "SUPERSEDED" => Some(ExecutionMode::Superseded),
            "QUEUED" => Some(ExecutionMode::Queued),
            "PARALLEL" => {
                cx.error(
                    m.node.pos,
                    &m.path,
                    "PARALLEL is not supported: executions of one pipeline deploy to the same \
                     deployment group, one at a time; use SUPERSEDED or QUEUED",
                );
                None
            }
            other => {
                let mut message = format!("{} is not SUPERSEDED or QUEUED", quote(other));
                if let Some(s) = suggest(other, ["SUPERSEDED", "QUEUED"]) {
                    message.push_str(&format!("; did you mean `{s}`?"));
                }
                cx.error(m.node.pos, &m.path, message);
                None
            }
        });
    let source = f
        .require(
            cx,
            "source",
            "say where the code comes from, like `source: { repository: web }` or `source: { \
             url: https://… }`",
        )
        .and_then(|s| source(cx, &s, &mut meta));
    let stages_field = f.require(cx, "stages", "add the stages that follow the source");
    f.finish(cx, PIPELINE_FIELDS, &[]);
    let source_artifact = source.as_ref().map(|(s, loc)| (s.output_artifact.clone(), loc.clone()));
    let stages = stages_field.and_then(|s| stages(cx, &s, source_artifact, &mut meta));
    let spec = (|| {
        Some(PipelineDecl {
            name: meta.name.as_ref()?.0.clone(),
            execution_mode: execution_mode?.unwrap_or_default(),
            source: source?.0,
            stages: stages?,
        })
    })();
    (spec, meta)
}

const SOURCE_FIELDS: &[&str] =
    &["repository", "url", "poll_interval", "webhook", "branch", "branches", "output_artifact"];

/// The source and where its output artifact was named (or the source itself).
fn source(
    cx: &mut Cx<'_>,
    field: &Field<'_>,
    meta: &mut PipelineMeta,
) -> Option<(PipelineSource, Loc)> {
    let mut f = cx.map(field.node, &field.path)?;
    let repository = optional(cx, &mut f, "repository", |cx, r| {
        cx.nonempty(r.node, &r.path).map(|s| (s, Loc::of(r)))
    });
    let url = optional(cx, &mut f, "url", |cx, u| {
        let s = cx.str(u.node, &u.path)?;
        match check_git_url(s) {
            Ok(()) => Some((s.to_string(), Loc::of(u))),
            Err(message) => {
                cx.error(u.node.pos, &u.path, message);
                None
            }
        }
    });
    let poll_interval = optional(cx, &mut f, "poll_interval", |cx, p| {
        let d = cx.duration(p.node, &p.path, BareNumber::Rejected)?;
        if d < Duration::from_secs(1) || d > POLL_INTERVAL_MAX {
            cx.error(
                p.node.pos,
                &p.path,
                format!("poll_interval {} is out of range: 1s to 24h", format_duration(d)),
            );
            return None;
        }
        Some((d, Loc::of(p)))
    });
    let webhook = optional(cx, &mut f, "webhook", webhook);
    let branch = optional(cx, &mut f, "branch", |cx, b| {
        let s = cx.str(b.node, &b.path)?;
        match check_branch(s, false) {
            Ok(()) => Some(s.to_string()),
            Err(message) => {
                cx.error(b.node.pos, &b.path, message);
                None
            }
        }
    });
    let branches = optional(cx, &mut f, "branches", branch_filter);
    let output_artifact = optional(cx, &mut f, "output_artifact", |cx, o| {
        artifact_name(cx, o.node, &o.path).map(|s| (s, Loc::of(o)))
    });
    f.finish(cx, SOURCE_FIELDS, &[]);
    let (repository, url, poll_interval, webhook) = (repository?, url?, poll_interval?, webhook?);
    let location = match (repository, url) {
        (Some((name, loc)), None) => {
            let extra = poll_interval
                .as_ref()
                .map(|(_, l)| ("poll_interval", l))
                .or(webhook.as_ref().map(|(_, l)| ("webhook", l)));
            if let Some((key, loc)) = extra {
                cx.error(
                    loc.pos,
                    &loc.path,
                    format!(
                        "`{key}` is for `url` sources; a push to a repository cutover hosts starts \
                         the pipeline at once"
                    ),
                );
                return None;
            }
            meta.repository = Some((name.clone(), loc));
            SourceLocation::Repository(name)
        }
        (None, Some((url, _))) => SourceLocation::Url {
            url,
            poll_interval: match (&poll_interval, &webhook) {
                (Some((d, _)), _) => Some(*d),
                (None, Some(_)) => None,
                (None, None) => Some(POLL_INTERVAL_DEFAULT),
            },
            webhook: webhook.map(|(w, _)| w),
        },
        (None, None) if webhook.is_some() => {
            cx.error(
                field.node.pos,
                &child_key(&field.path, "url"),
                "missing required field `url`; a webhook says when to fetch, `url` says where \
                 from: add the repository's clone URL",
            );
            return None;
        }
        _ => {
            cx.error(
                field.node.pos,
                &field.path,
                "a source has exactly one of `repository: NAME` (a repository cutover hosts) or \
                 `url: …` (a repository cutover fetches from)",
            );
            return None;
        }
    };
    let (output_artifact, artifact_loc) =
        output_artifact?.unwrap_or_else(|| (DEFAULT_SOURCE_ARTIFACT.to_string(), Loc::of(field)));
    Some((
        PipelineSource {
            location,
            branch: branch?.unwrap_or_else(|| DEFAULT_BRANCH.to_string()),
            branches: branches?,
            output_artifact,
        },
        artifact_loc,
    ))
}

fn webhook(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<(WebhookTrigger, Loc)> {
    let mut f = cx.map(field.node, &field.path)?;
    let secret_env = if let Some((pos, path)) = f.take_key("secret") {
        cx.error(
            pos,
            &path,
            "the secret must not be written in cutover.yaml: the file lives in git next to the \
             code, and whoever reads it could sign pushes; put the secret in an environment \
             variable of `cutover up` and name the variable: `secret_env: WEBHOOK_SECRET`",
        );
        None
    } else {
        f.require(
            cx,
            "secret_env",
            "name the environment variable of `cutover up` that holds the webhook's secret, like \
             `secret_env: WEBHOOK_SECRET`",
        )
        .and_then(|e| {
            let s = cx.str(e.node, &e.path)?;
            match check_env_name(s) {
                Ok(()) => Some(s.to_string()),
                Err(message) => {
                    cx.error(e.node.pos, &e.path, message);
                    None
                }
            }
        })
    };
    f.finish(cx, &["secret_env"], &[]);
    Some((WebhookTrigger { secret_env: secret_env? }, Loc::of(field)))
}

fn branch_filter(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<BranchFilter> {
    let mut f = cx.map(field.node, &field.path)?;
    let patterns = |cx: &mut Cx<'_>, f: &mut Fields<'_>, key: &str| {
        optional(cx, f, key, |cx, p| {
            let items = cx.list(p.node, &p.path)?;
            if items.is_empty() || items.len() > BRANCH_PATTERNS_MAX {
                cx.error(
                    p.node.pos,
                    &p.path,
                    format!(
                        "{key} has 1 to {BRANCH_PATTERNS_MAX} patterns (CodePipeline's limit); \
                         found {}",
                        items.len()
                    ),
                );
                return None;
            }
            let mut out = Vec::new();
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                let path = child_index(&p.path, i);
                let Some(s) = cx.str(item, &path) else {
                    ok = false;
                    continue;
                };
                if let Err(message) = check_branch(s, true) {
                    cx.error(item.pos, &path, message);
                    ok = false;
                }
                out.push(s.to_string());
            }
            ok.then_some(out)
        })
    };
    let includes = patterns(cx, &mut f, "includes");
    let excludes = patterns(cx, &mut f, "excludes");
    f.finish(cx, &["includes", "excludes"], &[]);
    let (includes, excludes) = (includes?, excludes?);
    if includes.is_none() && excludes.is_none() {
        cx.error(
            field.node.pos,
            &field.path,
            "a branch filter needs `includes`, `excludes` or both, like `branches: { includes: \
             [main, \"release/*\"] }`",
        );
        return None;
    }
    Some(BranchFilter {
        includes: includes.unwrap_or_default(),
        excludes: excludes.unwrap_or_default(),
    })
}

// ---------------------------------------------------------------------------------------------
// Stages and actions.

/// An action as written, before artifact defaults are resolved.
struct RawAction {
    name: Option<Named>,
    /// The action's map, where errors about what is missing go.
    loc: Loc,
    run_order: u16,
    /// The type as written, even when its settings are wrong, so that a mistake in a build's
    /// settings does not also lose its output artifact.
    type_name: Option<&'static str>,
    kind: Option<RawKind>,
    inputs: Option<(Vec<Named>, Loc)>,
    outputs: Option<(Vec<Named>, Loc)>,
    /// Every field read well.
    ok: bool,
}

enum RawKind {
    Build(BuildAction),
    Deploy(RawDeploy),
    DeployEcs(DeployEcsAction),
    Approval(ApprovalAction),
}

impl RawKind {
    fn as_str(&self) -> &'static str {
        match self {
            RawKind::Build(_) => "build",
            RawKind::Deploy(_) => "deploy",
            RawKind::DeployEcs(_) => "deploy_ecs",
            RawKind::Approval(_) => "approval",
        }
    }
}

struct RawDeploy {
    group: DeploymentGroupRef,
    task_definition_artifact: Option<Named>,
    task_definition_path: String,
    appspec_artifact: Option<Named>,
    appspec_path: String,
    /// (artifact, placeholder) as written.
    images: Option<(Vec<(Named, String)>, Loc)>,
}

fn stages(
    cx: &mut Cx<'_>,
    field: &Field<'_>,
    source_artifact: Option<(String, Loc)>,
    meta: &mut PipelineMeta,
) -> Option<Vec<StageDecl>> {
    let items = cx.list(field.node, &field.path)?;
    if items.is_empty() || items.len() > STAGES_MAX {
        cx.error(
            field.node.pos,
            &field.path,
            format!(
                "a pipeline has 1 to {STAGES_MAX} stages after its source (CodePipeline's 2 to 50, \
                 counting the source stage); found {}",
                items.len()
            ),
        );
        return None;
    }
    let mut raw: Vec<(Option<Named>, Vec<RawAction>)> = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let path = child_index(&field.path, i);
        let Some(mut f) = cx.map(item, &path) else {
            ok = false;
            continue;
        };
        let stage_name = name(cx, &mut f, "stage");
        let actions = f.require(cx, "actions", "add the stage's actions").and_then(|a| {
            let list = cx.list(a.node, &a.path)?;
            if list.is_empty() || list.len() > ACTIONS_PER_STAGE_MAX {
                cx.error(
                    a.node.pos,
                    &a.path,
                    format!(
                        "a stage has 1 to {ACTIONS_PER_STAGE_MAX} actions; found {}",
                        list.len()
                    ),
                );
                return None;
            }
            let mut out = Vec::new();
            for (j, node) in list.iter().enumerate() {
                out.extend(action(cx, node, &child_index(&a.path, j), meta));
            }
            // Names of actions that failed to read at all are unknown; the others still
            // get their duplicate checks.
            Some((out, list.len()))
        });
        f.finish(cx, &["name", "actions"], &[]);
        ok &= stage_name.is_some();
        match actions {
            Some((actions, written)) => {
                ok &= actions.len() == written && actions.iter().all(|a| a.ok);
                check_unique(cx, "action", actions.iter().filter_map(|a| a.name.as_ref()));
                raw.push((stage_name, actions));
            }
            None => ok = false,
        }
    }
    check_unique(cx, "stage", raw.iter().filter_map(|(n, _)| n.as_ref()));
    let total: usize = raw.iter().map(|(_, a)| a.len()).sum();
    if total > ACTIONS_PER_PIPELINE_MAX {
        cx.error(
            field.node.pos,
            &field.path,
            format!(
                "{total} actions; a pipeline has at most {ACTIONS_PER_PIPELINE_MAX} \
                 (CodePipeline's limit)"
            ),
        );
        ok = false;
    }
    let (source_name, source_loc) = source_artifact?;
    let stages = resolve_artifacts(cx, &raw, &source_name, &source_loc);
    if ok { stages } else { None }
}

/// Who produces an artifact.
struct Producer {
    /// 0 for the source, then 1 for the first stage…
    stage: usize,
    run_order: u16,
    line: u32,
    what: String,
    from_build: bool,
}

impl Producer {
    /// Whether this runs, and succeeds, before an action of `stage` with `run_order`.
    fn before(&self, stage: usize, run_order: u16) -> bool {
        self.stage < stage || (self.stage == stage && self.run_order < run_order)
    }
}

/// Fills in default artifacts and checks that every input comes from something that runs
/// earlier and that every output name is used once. Reports every problem; the stages only when
/// there were none.
fn resolve_artifacts(
    cx: &mut Cx<'_>,
    raw: &[(Option<Named>, Vec<RawAction>)],
    source_name: &str,
    source_loc: &Loc,
) -> Option<Vec<StageDecl>> {
    let errors_before = cx.error_count();
    let mut producers: HashMap<String, Producer> = HashMap::new();
    producers.insert(
        source_name.to_string(),
        Producer {
            stage: 0,
            run_order: 0,
            line: source_loc.pos.line(),
            what: "the source".to_string(),
            from_build: false,
        },
    );
    // Outputs first, so that an input produced later can be told apart from one never produced.
    let mut outputs: Vec<Vec<Vec<String>>> = Vec::new();
    for (s, (stage_name, actions)) in raw.iter().enumerate() {
        let stage_label = stage_name.as_ref().map_or("?", |(n, _)| n.as_str());
        let mut stage_outputs = Vec::new();
        for a in actions {
            let action_label = a.name.as_ref().map_or("?", |(n, _)| n.as_str());
            let defaulted = a.outputs.is_none();
            let written: Vec<Named> = match (&a.outputs, a.type_name, &a.name) {
                (Some((list, _)), _, _) => list.clone(),
                (None, Some("build"), Some((n, loc))) => {
                    if is_artifact_name(n) {
                        vec![(n.clone(), loc.clone())]
                    } else {
                        cx.error(
                            loc.pos,
                            &loc.path,
                            format!(
                                "a build action's output artifact is named after it, and `{n}` \
                                 is not a valid artifact name (letters, digits, `_` and `-`); \
                                 name it with `output_artifacts`"
                            ),
                        );
                        Vec::new()
                    }
                }
                _ => Vec::new(),
            };
            for (artifact, loc) in &written {
                if let Some(p) = producers.get(artifact) {
                    let why = if defaulted {
                        " (this build action's default output, named after it)"
                    } else {
                        ""
                    };
                    cx.error(
                        loc.pos,
                        &loc.path,
                        format!(
                            "artifact `{artifact}`{why} is already produced by {} (line {}); \
                             output artifact names are unique in a pipeline{}",
                            p.what,
                            p.line,
                            if defaulted { "; name it with `output_artifacts`" } else { "" }
                        ),
                    );
                    continue;
                }
                producers.insert(
                    artifact.clone(),
                    Producer {
                        stage: s + 1,
                        run_order: a.run_order,
                        line: loc.pos.line(),
                        what: format!("action `{action_label}` in stage `{stage_label}`"),
                        from_build: a.type_name == Some("build"),
                    },
                );
            }
            stage_outputs.push(written.into_iter().map(|(n, _)| n).collect());
        }
        outputs.push(stage_outputs);
    }

    let mut stages = Vec::new();
    for (s, (stage_name, actions)) in raw.iter().enumerate() {
        let stage = s + 1;
        let mut decls = Vec::new();
        for (i, a) in actions.iter().enumerate() {
            let Some(kind) = &a.kind else { continue };
            let earlier_builds: Vec<&str> = {
                let mut v: Vec<(&Producer, &str)> = producers
                    .iter()
                    .filter(|(_, p)| p.from_build && p.before(stage, a.run_order))
                    .map(|(n, p)| (p, n.as_str()))
                    .collect();
                v.sort_by_key(|(p, n)| (p.stage, p.run_order, p.line, *n));
                v.into_iter().map(|(_, n)| n).collect()
            };
            let outputs = &outputs[s][i];
            if !outputs.is_empty()
                && !matches!(kind, RawKind::Build(_))
                && let Some((_, loc)) = &a.outputs
            {
                cx.error(
                    loc.pos,
                    &loc.path,
                    format!(
                        "{} action produces no artifacts; remove output_artifacts",
                        with_article(kind.as_str())
                    ),
                );
            }
            let Some((inputs, kind)) = action_inputs(cx, a, kind, source_name, &earlier_builds)
            else {
                continue;
            };
            for (artifact, loc) in &inputs {
                check_available(cx, &producers, artifact, loc, stage, a.run_order);
            }
            let Some((name, _)) = &a.name else { continue };
            decls.push(ActionDecl {
                name: name.clone(),
                run_order: a.run_order,
                input_artifacts: inputs.into_iter().map(|(n, _)| n).collect(),
                output_artifacts: outputs.clone(),
                kind,
            });
        }
        if let Some((name, _)) = stage_name {
            stages.push(StageDecl { name: name.clone(), actions: decls });
        }
    }
    (cx.error_count() == errors_before).then_some(stages)
}

/// The inputs of an action, each with where it was written (or the field that implied it), and
/// its configuration with defaults filled in.
fn action_inputs(
    cx: &mut Cx<'_>,
    a: &RawAction,
    kind: &RawKind,
    source: &str,
    earlier_builds: &[&str],
) -> Option<(Vec<Named>, ActionKind)> {
    let explicit = a.inputs.as_ref();
    let type_name = kind.as_str();
    let count_error = |cx: &mut Cx<'_>, takes: &str, n: usize| {
        let loc = explicit.map_or(&a.loc, |(_, l)| l);
        cx.error(
            loc.pos,
            &loc.path,
            format!("{} action takes {takes}; found {n}", with_article(type_name)),
        );
    };
    match kind {
        RawKind::Build(build) => {
            let inputs = match explicit {
                Some((list, _)) => list.clone(),
                None => vec![(source.to_string(), a.loc.clone())],
            };
            if inputs.is_empty() || inputs.len() > ARTIFACTS_MAX {
                count_error(cx, "1 to 5 input artifacts", inputs.len());
                return None;
            }
            Some((inputs, ActionKind::Build(build.clone())))
        }
        RawKind::Approval(approval) => {
            if let Some((list, loc)) = explicit
                && !list.is_empty()
            {
                cx.error(
                    loc.pos,
                    &loc.path,
                    "an approval action reads no artifacts; remove input_artifacts",
                );
                return None;
            }
            Some((Vec::new(), ActionKind::Approval(approval.clone())))
        }
        RawKind::DeployEcs(ecs) => {
            let inputs = match (explicit, earlier_builds) {
                (Some((list, _)), _) => list.clone(),
                (None, [one]) => vec![(one.to_string(), a.loc.clone())],
                (None, []) => {
                    cx.error(
                        a.loc.pos,
                        &a.loc.path,
                        "no build action runs before this one to produce imagedefinitions.json; \
                         name the artifact that holds it with `input_artifacts: [NAME]`",
                    );
                    return None;
                }
                (None, several) => {
                    cx.error(
                        a.loc.pos,
                        &a.loc.path,
                        format!(
                            "several build artifacts come before this action ({}); name the one \
                             that holds imagedefinitions.json with `input_artifacts: [{}]`",
                            several.join(", "),
                            several[0]
                        ),
                    );
                    return None;
                }
            };
            if inputs.len() != 1 {
                count_error(cx, "exactly one input artifact", inputs.len());
                return None;
            }
            Some((inputs, ActionKind::DeployEcs(ecs.clone())))
        }
        RawKind::Deploy(d) => {
            let td = d
                .task_definition_artifact
                .clone()
                .unwrap_or_else(|| (source.to_string(), a.loc.clone()));
            let appspec =
                d.appspec_artifact.clone().unwrap_or_else(|| (source.to_string(), a.loc.clone()));
            let images: Vec<(Named, String)> = match (&d.images, earlier_builds) {
                (Some((list, _)), _) => list.clone(),
                (None, []) => Vec::new(),
                (None, [one]) => {
                    vec![((one.to_string(), a.loc.clone()), DEFAULT_PLACEHOLDER.to_string())]
                }
                (None, several) => {
                    cx.error(
                        a.loc.pos,
                        &a.loc.path,
                        format!(
                            "several build artifacts come before this action ({}); name the one \
                             whose imageDetail.json gives the image: `image_placeholders: [{{ \
                             artifact: {}, placeholder: {DEFAULT_PLACEHOLDER} }}]`",
                            several.join(", "),
                            several[0]
                        ),
                    );
                    return None;
                }
            };
            let mut referenced: Vec<Named> = vec![td.clone(), appspec.clone()];
            referenced.extend(images.iter().map(|(artifact, _)| artifact.clone()));
            let inputs = match explicit {
                Some((list, list_loc)) => {
                    let mut ok = true;
                    for (artifact, loc) in &referenced {
                        if !list.iter().any(|(n, _)| n == artifact) {
                            // A default reference has no place of its own: point at the list.
                            let loc = if loc.path == a.loc.path { list_loc } else { loc };
                            cx.error(
                                loc.pos,
                                &loc.path,
                                format!(
                                    "artifact `{artifact}` is used by this action but is not in \
                                     its input_artifacts; add it"
                                ),
                            );
                            ok = false;
                        }
                    }
                    if !ok {
                        return None;
                    }
                    list.clone()
                }
                None => {
                    let mut out: Vec<Named> = Vec::new();
                    for r in referenced {
                        if !out.iter().any(|(n, _)| *n == r.0) {
                            out.push(r);
                        }
                    }
                    out
                }
            };
            if inputs.is_empty() || inputs.len() > ARTIFACTS_MAX {
                count_error(cx, "1 to 5 input artifacts", inputs.len());
                return None;
            }
            let action = DeployAction {
                deployment_group: d.group.clone(),
                task_definition_template_artifact: td.0,
                task_definition_template_path: d.task_definition_path.clone(),
                appspec_template_artifact: appspec.0,
                appspec_template_path: d.appspec_path.clone(),
                image_placeholders: images
                    .into_iter()
                    .map(|((artifact, _), placeholder)| ImagePlaceholder { artifact, placeholder })
                    .collect(),
            };
            Some((inputs, ActionKind::Deploy(action)))
        }
    }
}

fn check_available(
    cx: &mut Cx<'_>,
    producers: &HashMap<String, Producer>,
    artifact: &str,
    loc: &Loc,
    stage: usize,
    run_order: u16,
) {
    match producers.get(artifact) {
        Some(p) if p.before(stage, run_order) => {}
        Some(p) => cx.error(
            loc.pos,
            &loc.path,
            format!(
                "artifact `{artifact}` is produced by {} (line {}), which does not run before this \
                 action; an input comes from the source, an earlier stage, or a lower run_order \
                 in the same stage",
                p.what, p.line
            ),
        ),
        None => {
            let mut known: Vec<&str> = producers
                .iter()
                .filter(|(_, p)| p.before(stage, run_order))
                .map(|(n, _)| n.as_str())
                .collect();
            known.sort_unstable();
            let mut message = format!("no artifact named `{artifact}`");
            match suggest(artifact, known.iter().copied()) {
                Some(s) => message.push_str(&format!("; did you mean `{s}`?")),
                None => message.push_str(&format!(
                    "; artifacts produced before this action: {}",
                    known.join(", ")
                )),
            }
            cx.error(loc.pos, &loc.path, message);
        }
    }
}

const ACTION_FIELDS: &[&str] =
    &["name", "type", "run_order", "input_artifacts", "output_artifacts"];
const BUILD_FIELDS: &[&str] = &["buildspec", "timeout", "env"];
const DEPLOY_FIELDS: &[&str] = &[
    "deployment_group",
    "task_definition_template_artifact",
    "task_definition_template_path",
    "appspec_template_artifact",
    "appspec_template_path",
    "image_placeholders",
];
const DEPLOY_ECS_FIELDS: &[&str] = &["service", "image_definitions", "timeout"];
const APPROVAL_FIELDS: &[&str] = &["timeout", "comment"];
const ACTION_TYPES: [(&str, &[&str]); 4] = [
    ("build", BUILD_FIELDS),
    ("deploy", DEPLOY_FIELDS),
    ("deploy_ecs", DEPLOY_ECS_FIELDS),
    ("approval", APPROVAL_FIELDS),
];

fn action(cx: &mut Cx<'_>, node: &Node, path: &str, meta: &mut PipelineMeta) -> Option<RawAction> {
    let mut f = cx.map(node, path)?;
    let errors_before = cx.error_count();
    let loc = Loc::node(node, path);
    let action_name = name(cx, &mut f, "action");
    let kind_name = f
        .require(cx, "type", "add `type: build` (or deploy, deploy_ecs, approval)")
        .and_then(|t| {
            let s = cx.str(t.node, &t.path)?;
            if let Some((k, _)) = ACTION_TYPES.iter().find(|(k, _)| *k == s) {
                return Some(*k);
            }
            let types = ACTION_TYPES.map(|(k, _)| k);
            let mut message =
                format!("{} is not an action type; use {}", quote(s), types.join(", "));
            if let Some(sug) = suggest(s, types) {
                message = format!("{} is not an action type; did you mean `{sug}`?", quote(s));
            }
            cx.error(t.node.pos, &t.path, message);
            None
        });
    let run_order = optional(cx, &mut f, "run_order", |cx, r| {
        cx.int(r.node, &r.path, 1, i128::from(RUN_ORDER_MAX), "run_order")
            .and_then(|n| u16::try_from(n).ok())
    });
    let inputs = optional(cx, &mut f, "input_artifacts", artifact_list);
    let outputs = optional(cx, &mut f, "output_artifacts", artifact_list);
    let mut known: Vec<&str> = ACTION_FIELDS.to_vec();
    let kind = match kind_name {
        Some(k) => {
            let own = ACTION_TYPES.iter().find(|(t, _)| *t == k).map_or(&[][..], |(_, f)| *f);
            known.extend(own);
            for key in ACTION_TYPES.iter().flat_map(|(_, fields)| fields.iter()) {
                if own.contains(key) {
                    continue;
                }
                if let Some((pos, key_path)) = f.take_key(key) {
                    let owners: Vec<&str> = ACTION_TYPES
                        .iter()
                        .filter(|(_, fields)| fields.contains(key))
                        .map(|(t, _)| *t)
                        .collect();
                    cx.error(
                        pos,
                        &key_path,
                        format!(
                            "`{key}` is a setting of {} actions; {} action takes: {}",
                            join_or(&owners, "and"),
                            with_article(k),
                            own.join(", ")
                        ),
                    );
                }
            }
            match k {
                "build" => build_action(cx, &mut f).map(RawKind::Build),
                "deploy" => deploy_action(cx, &mut f, meta).map(RawKind::Deploy),
                "deploy_ecs" => deploy_ecs_action(cx, &mut f, meta).map(RawKind::DeployEcs),
                _ => approval_action(cx, &mut f).map(RawKind::Approval),
            }
        }
        None => {
            // The settings cannot be checked without a type; do not call them unknown either.
            known.extend(ACTION_TYPES.iter().flat_map(|(_, fields)| fields.iter()));
            None
        }
    };
    f.finish(cx, &known, &[]);
    let ok = cx.error_count() == errors_before;
    Some(RawAction {
        name: action_name,
        loc,
        run_order: run_order.flatten().unwrap_or(1),
        type_name: kind_name,
        kind: if ok { kind } else { None },
        inputs: inputs.flatten(),
        outputs: outputs.flatten(),
        ok,
    })
}

/// "a build", "an approval".
fn with_article(type_name: &str) -> String {
    let article = if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {type_name}")
}

/// "a", "a and b", "a, b and c".
fn join_or(items: &[&str], word: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} {word} {last}", init.join(", ")),
    }
}

fn build_action(cx: &mut Cx<'_>, f: &mut Fields<'_>) -> Option<BuildAction> {
    let buildspec = optional(cx, f, "buildspec", relative_path);
    let timeout = optional(cx, f, "timeout", |cx, t| {
        bounded_duration(cx, t, BUILD_TIMEOUT_MAX, "36h, CodeBuild's limit")
    });
    let env = optional(cx, f, "env", |cx, e| {
        let Value::Map(entries) = &e.node.value else {
            let word = cx.map_word();
            cx.type_error(e.node, &e.path, word);
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for entry in entries {
            let path = child_key(&e.path, &entry.key);
            if let Err(message) = check_env_name(&entry.key) {
                cx.error(entry.key_pos, &path, message);
                ok = false;
                continue;
            }
            if entry.key.starts_with("CODEBUILD_") {
                cx.error(
                    entry.key_pos,
                    &path,
                    format!(
                        "`{}`: names starting with CODEBUILD_ are set by the build itself; pick \
                         another name",
                        entry.key
                    ),
                );
                ok = false;
                continue;
            }
            let value = match &entry.value.value {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                _ => {
                    cx.type_error(&entry.value, &path, "string");
                    ok = false;
                    continue;
                }
            };
            out.insert(entry.key.clone(), value);
        }
        ok.then_some(out)
    });
    Some(BuildAction {
        buildspec: buildspec?.unwrap_or_else(|| DEFAULT_BUILDSPEC.to_string()),
        timeout: timeout?.unwrap_or(BUILD_TIMEOUT_DEFAULT),
        env: env?.unwrap_or_default(),
    })
}

fn deploy_action(
    cx: &mut Cx<'_>,
    f: &mut Fields<'_>,
    meta: &mut PipelineMeta,
) -> Option<RawDeploy> {
    let group = f
        .require(
            cx,
            "deployment_group",
            "name the deployment group that releases the new task definition, like \
             `deployment_group: web/web-prod`",
        )
        .and_then(|g| {
            let s = cx.str(g.node, &g.path)?;
            match DeploymentGroupRef::parse(s) {
                Ok(r) => {
                    meta.deployment_groups.push((r.clone(), Loc::of(&g)));
                    Some(r)
                }
                Err(message) => {
                    cx.error(g.node.pos, &g.path, message);
                    None
                }
            }
        });
    let named_artifact = |cx: &mut Cx<'_>, a: &Field<'_>| {
        artifact_name(cx, a.node, &a.path).map(|s| (s, Loc::of(a)))
    };
    let td_artifact = optional(cx, f, "task_definition_template_artifact", named_artifact);
    let td_path = optional(cx, f, "task_definition_template_path", relative_path);
    let appspec_artifact = optional(cx, f, "appspec_template_artifact", named_artifact);
    let appspec_path = optional(cx, f, "appspec_template_path", relative_path);
    let images = optional(cx, f, "image_placeholders", |cx, i| {
        let items = cx.list(i.node, &i.path)?;
        if items.len() > IMAGES_MAX {
            cx.error(
                i.node.pos,
                &i.path,
                format!(
                    "{} images; a deploy action fills in at most {IMAGES_MAX} (CodeDeployToECS's \
                     Image1 to Image4)",
                    items.len()
                ),
            );
            return None;
        }
        let mut out: Vec<(Named, String)> = Vec::new();
        let mut ok = true;
        for (n, item) in items.iter().enumerate() {
            let path = child_index(&i.path, n);
            let Some(mut f) = cx.map(item, &path) else {
                ok = false;
                continue;
            };
            let artifact = f
                .require(cx, "artifact", "name the artifact whose imageDetail.json gives the image")
                .and_then(|a| named_artifact(cx, &a));
            let placeholder = optional(cx, &mut f, "placeholder", |cx, p| {
                let s = cx.str(p.node, &p.path)?;
                match check_placeholder(s) {
                    Ok(()) => Some((s.to_string(), Loc::of(p))),
                    Err(message) => {
                        cx.error(p.node.pos, &p.path, message);
                        None
                    }
                }
            });
            f.finish(cx, &["artifact", "placeholder"], &[]);
            let (Some(artifact), Some(placeholder)) = (artifact, placeholder) else {
                ok = false;
                continue;
            };
            let (placeholder, loc) = placeholder
                .unwrap_or_else(|| (format!("IMAGE{}_NAME", n + 1), Loc::node(item, &path)));
            if out.iter().any(|(_, p)| *p == placeholder) {
                cx.error(
                    loc.pos,
                    &loc.path,
                    format!("placeholder `{placeholder}` is filled in twice; one image each"),
                );
                ok = false;
                continue;
            }
            out.push((artifact, placeholder));
        }
        ok.then_some((out, Loc::of(i)))
    });
    Some(RawDeploy {
        group: group?,
        task_definition_artifact: td_artifact?,
        task_definition_path: td_path?.unwrap_or_else(|| DEFAULT_TASK_DEFINITION_PATH.to_string()),
        appspec_artifact: appspec_artifact?,
        appspec_path: appspec_path?.unwrap_or_else(|| DEFAULT_APPSPEC_PATH.to_string()),
        images: images?,
    })
}

fn deploy_ecs_action(
    cx: &mut Cx<'_>,
    f: &mut Fields<'_>,
    meta: &mut PipelineMeta,
) -> Option<DeployEcsAction> {
    let service = f
        .require(cx, "service", "name the service whose images the action replaces")
        .and_then(|s| {
            let name = cx.nonempty(s.node, &s.path)?;
            meta.ecs_services.push((name.clone(), Loc::of(&s)));
            Some(name)
        });
    let image_definitions = optional(cx, f, "image_definitions", relative_path);
    let timeout = optional(cx, f, "timeout", |cx, t| {
        bounded_duration(cx, t, ECS_TIMEOUT_MAX, "60m, ECS's deployment timeout limit")
    });
    Some(DeployEcsAction {
        service: service?,
        image_definitions: image_definitions?
            .unwrap_or_else(|| DEFAULT_IMAGE_DEFINITIONS.to_string()),
        timeout: timeout?.unwrap_or(ECS_TIMEOUT_MAX),
    })
}

fn approval_action(cx: &mut Cx<'_>, f: &mut Fields<'_>) -> Option<ApprovalAction> {
    let timeout = optional(cx, f, "timeout", |cx, t| {
        bounded_duration(cx, t, APPROVAL_TIMEOUT_MAX, "60 days, CodePipeline's limit")
    });
    let comment = optional(cx, f, "comment", |cx, c| {
        let s = cx.string(c.node, &c.path)?;
        if s.chars().count() > COMMENT_LENGTH_MAX {
            cx.error(
                c.node.pos,
                &c.path,
                format!("the comment is longer than {COMMENT_LENGTH_MAX} characters"),
            );
            return None;
        }
        Some(s)
    });
    Some(ApprovalAction {
        timeout: timeout?.unwrap_or(APPROVAL_TIMEOUT_DEFAULT),
        comment: comment?,
    })
}

/// A duration of at least 1s and at most `max`; a bare integer counts minutes, as the
/// `timeoutInMinutes` fields of CodeBuild, CodePipeline and ECS.
fn bounded_duration(
    cx: &mut Cx<'_>,
    field: &Field<'_>,
    max: Duration,
    limit: &str,
) -> Option<Duration> {
    let d = cx.duration(field.node, &field.path, BareNumber::Minutes)?;
    if d < Duration::from_secs(1) || d > max {
        cx.error(
            field.node.pos,
            &field.path,
            format!("{} is out of range: 1s to {limit}", format_duration(d)),
        );
        return None;
    }
    Some(d)
}

fn artifact_list(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<(Vec<Named>, Loc)> {
    let items = cx.list(field.node, &field.path)?;
    if items.len() > ARTIFACTS_MAX {
        cx.error(
            field.node.pos,
            &field.path,
            format!("{} artifacts; an action has at most {ARTIFACTS_MAX}", items.len()),
        );
        return None;
    }
    let mut out: Vec<Named> = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let path = child_index(&field.path, i);
        let Some(s) = artifact_name(cx, item, &path) else {
            ok = false;
            continue;
        };
        if out.iter().any(|(n, _)| *n == s) {
            cx.error(item.pos, &path, format!("artifact `{s}` is listed twice"));
            ok = false;
            continue;
        }
        out.push((s, Loc::node(item, &path)));
    }
    ok.then_some((out, Loc::of(field)))
}

fn is_artifact_name(s: &str) -> bool {
    (1..=ARTIFACT_NAME_LENGTH_MAX).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

fn artifact_name(cx: &mut Cx<'_>, node: &Node, path: &str) -> Option<String> {
    let s = cx.str(node, path)?;
    if !is_artifact_name(s) {
        cx.error(
            node.pos,
            path,
            format!(
                "{} is not a valid artifact name: use 1 to {ARTIFACT_NAME_LENGTH_MAX} letters, \
                 digits, `_` and `-`",
                quote(s)
            ),
        );
        return None;
    }
    Some(s.to_string())
}

/// A path inside an artifact: relative, and not leaving it.
fn relative_path(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<String> {
    let s = cx.nonempty(field.node, &field.path)?;
    let problem = if s.len() > PATH_LENGTH_MAX {
        Some(format!("is longer than {PATH_LENGTH_MAX} bytes"))
    } else if s.chars().any(char::is_control) {
        Some("contains a control character".to_string())
    } else if s.starts_with('/') || s.starts_with('\\') || s.get(1..2) == Some(":") {
        Some("is absolute; give a path inside the artifact, like `taskdef.json`".to_string())
    } else if s.split(['/', '\\']).any(|part| part == "..") {
        Some("leaves the artifact with `..`; give a path inside it".to_string())
    } else {
        None
    };
    if let Some(problem) = problem {
        cx.error(field.node.pos, &field.path, format!("path {} {problem}", quote(&s)));
        return None;
    }
    Some(s)
}

fn check_placeholder(s: &str) -> Result<(), String> {
    if let Some(inner) = s.strip_prefix('<').and_then(|r| r.strip_suffix('>')) {
        return Err(format!(
            "write the placeholder without angle brackets: `{inner}` (the task definition has \
             `{s}`)"
        ));
    }
    let ok = (1..=100).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if !ok {
        return Err(format!(
            "{} is not a valid placeholder: use letters, digits, `_` and `-`, like IMAGE1_NAME",
            quote(s)
        ));
    }
    Ok(())
}

fn check_env_name(s: &str) -> Result<(), String> {
    let ok = (1..=ENV_NAME_LENGTH_MAX).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not an environment variable name: use letters, digits and `_`, not starting \
             with a digit",
            quote(s)
        ))
    }
}

/// A branch name as git accepts it (`git check-ref-format --branch`); with `glob`, `*` and `?`
/// are wildcards.
fn check_branch(s: &str, glob: bool) -> Result<(), String> {
    if s.is_empty() {
        return Err("a branch name must not be empty".to_string());
    }
    if s.len() > BRANCH_LENGTH_MAX {
        return Err(format!("a branch name is at most {BRANCH_LENGTH_MAX} bytes"));
    }
    if let Some(short) = s.strip_prefix("refs/heads/") {
        return Err(format!("write the branch name without `refs/heads/`: `{short}`"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || matches!(c, '~' | '^' | ':' | '\\' | '['))
    {
        return Err(format!(
            "{} contains {c:?}, which git does not allow in branch names",
            quote(s)
        ));
    }
    if !glob && s.contains(['*', '?']) {
        return Err(format!(
            "{} is a pattern; `branch` is one branch (the one a manual start builds): put \
             patterns in `branches: {{ includes: [...] }}`",
            quote(s)
        ));
    }
    let bad = s.starts_with('-')
        || s.starts_with('/')
        || s.ends_with('/')
        || s.ends_with('.')
        || s.ends_with(".lock")
        || s.contains("..")
        || s.contains("//")
        || s.contains("@{")
        || s == "@"
        || s.split('/').any(|part| part.starts_with('.'));
    if bad {
        return Err(format!(
            "{} is not a valid branch name (see `git check-ref-format`)",
            quote(s)
        ));
    }
    Ok(())
}

/// A URL or path `git fetch` takes, without the transports that run commands and without
/// credentials, which would then be in the file.
fn check_git_url(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("the URL is empty; give a repository URL or path".to_string());
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{} contains spaces or control characters", quote(s)));
    }
    if s.starts_with('-') {
        return Err(format!("{} starts with `-`, which git would read as an option", quote(s)));
    }
    if let Some((scheme, rest)) = s.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        let authority = rest.split('/').next().unwrap_or("");
        match scheme.as_str() {
            "file" => {}
            "http" | "https" | "ssh" | "git" | "git+ssh" | "ssh+git" => {
                let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                if host.is_empty() {
                    return Err(format!("{} has no host", quote(s)));
                }
                if let Some((user, _)) = authority.rsplit_once('@')
                    && (scheme.starts_with("http") || user.contains(':'))
                {
                    return Err(format!(
                        "{} carries credentials, which would then be in cutover.yaml; remove \
                         them and let git supply them (a credential helper, or an SSH key with \
                         an ssh:// URL)",
                        quote(s)
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "{} uses `{scheme}://`; use https://, http://, ssh://, git://, file:// or a \
                     path",
                    quote(s)
                ));
            }
        }
        return Ok(());
    }
    if s.contains("::") {
        return Err(format!(
            "{} uses a remote helper (`transport::address`), which cutover does not accept (`ext::` \
             runs commands); use https://, ssh://, file:// or a path",
            quote(s)
        ));
    }
    Ok(())
}

/// `*` within one `/`-separated part, `**` across parts, `?` one character other than `/`.
fn glob_matches(pattern: &str, text: &str) -> bool {
    #[derive(Clone, Copy)]
    enum Token {
        Any,
        AnyInPart,
        One,
        Char(char),
    }
    // Branch names are short; a longer text cannot be one.
    if text.len() > 4 * BRANCH_LENGTH_MAX {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '*' if p.get(i + 1) == Some(&'*') => {
                tokens.push(Token::Any);
                while p.get(i) == Some(&'*') {
                    i += 1;
                }
            }
            '*' => {
                tokens.push(Token::AnyInPart);
                i += 1;
            }
            '?' => {
                tokens.push(Token::One);
                i += 1;
            }
            c => {
                tokens.push(Token::Char(c));
                i += 1;
            }
        }
    }
    let t: Vec<char> = text.chars().collect();
    // matched[j]: the tokens so far match the first j characters.
    let mut matched = vec![false; t.len() + 1];
    matched[0] = true;
    for token in tokens {
        let mut next = vec![false; t.len() + 1];
        match token {
            Token::Any => {
                let mut any = false;
                for j in 0..=t.len() {
                    any |= matched[j];
                    next[j] = any;
                }
            }
            Token::AnyInPart => {
                for j in 0..=t.len() {
                    next[j] = matched[j] || (j > 0 && next[j - 1] && t[j - 1] != '/');
                }
            }
            Token::One => {
                for j in 1..=t.len() {
                    next[j] = matched[j - 1] && t[j - 1] != '/';
                }
            }
            Token::Char(c) => {
                for j in 1..=t.len() {
                    next[j] = matched[j - 1] && t[j - 1] == c;
                }
            }
        }
        matched = next;
    }
    matched[t.len()]
}

// ---------------------------------------------------------------------------------------------
// Checks across items.

pub(super) fn cross_check(
    cx: &mut Cx<'_>,
    repositories: &[Named],
    pipelines: &[PipelineMeta],
    groups: &[GroupMeta],
    services: &[&str],
) {
    check_unique(cx, "repository", repositories);
    check_unique(cx, "pipeline", pipelines.iter().filter_map(|p| p.name.as_ref()));
    let repository_names: Vec<&str> = repositories.iter().map(|(n, _)| n.as_str()).collect();
    let declared_groups: Vec<String> = groups
        .iter()
        .filter_map(|g| Some(format!("{}/{}", g.application.as_ref()?, g.name.as_ref()?.0)))
        .collect();
    for p in pipelines {
        if let Some((repository, loc)) = &p.repository
            && !repository_names.contains(&repository.as_str())
        {
            let mut message = format!(
                "repository `{repository}` is not declared in this file; it must exist (`cutover \
                 repos create {repository}`) before a push can start the pipeline"
            );
            if let Some(s) = suggest(repository, repository_names.iter().copied()) {
                message.push_str(&format!("; did you mean `{s}`?"));
            }
            cx.note(loc.pos, &loc.path, message);
        }
        for (group, loc) in &p.deployment_groups {
            let text = group.to_string();
            if declared_groups.contains(&text) {
                continue;
            }
            let mut message = format!(
                "deployment group {text} is not declared in this file; it must exist when the \
                 pipeline deploys"
            );
            if let Some(s) = suggest(&text, declared_groups.iter().map(String::as_str)) {
                message.push_str(&format!("; did you mean `{s}`?"));
            }
            cx.note(loc.pos, &loc.path, message);
        }
        for (service, loc) in &p.ecs_services {
            let owner =
                groups.iter().find(|g| g.service.as_ref().is_some_and(|(s, _)| s == service));
            if let Some(g) = owner {
                let group = format!(
                    "{}/{}",
                    g.application.as_deref().unwrap_or("?"),
                    g.name.as_ref().map_or("?", |(n, _)| n.as_str())
                );
                cx.error(
                    loc.pos,
                    &loc.path,
                    format!(
                        "service `{service}` is released blue/green by deployment group {group}; \
                         use a `deploy` action with `deployment_group: {group}` (deploy_ecs, like \
                         ECS's own deploy action, is for services without a deployment group)"
                    ),
                );
            } else if !services.contains(&service.as_str()) {
                let mut message = format!(
                    "service `{service}` is not declared in this file; it must exist when the \
                     pipeline deploys"
                );
                if let Some(s) = suggest(service, services.iter().copied()) {
                    message.push_str(&format!("; did you mean `{s}`?"));
                }
                cx.note(loc.pos, &loc.path, message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_within_and_across_parts() {
        assert!(glob_matches("main", "main"));
        assert!(!glob_matches("main", "main2"));
        assert!(glob_matches("release/*", "release/1.2"));
        assert!(!glob_matches("release/*", "release/1.2/hotfix"));
        assert!(glob_matches("release/**", "release/1.2/hotfix"));
        assert!(glob_matches("feature/**", "feature/"));
        assert!(glob_matches("**", "anything/at/all"));
        assert!(glob_matches("v?", "v1"));
        assert!(!glob_matches("v?", "v/"));
        assert!(glob_matches("*-stable", "2024-stable"));
        assert!(!glob_matches("*-stable", "a/2024-stable"));
    }

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
    }

    #[test]
    fn git_urls() {
        for ok in [
            "https://github.com/me/app.git",
            "ssh://git@github.com/me/app.git",
            "git@github.com:me/app.git",
            "file:///srv/git/app",
            "/srv/git/app",
            "../app",
            "app",
        ] {
            assert_eq!(check_git_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "https://me:secret@github.com/me/app.git",
            "https://TOKEN@github.com/me/app.git",
            "ssh://me:pw@host/app",
            "ext::sh",
            "ftp://host/app",
            "-uhost",
            "https:///app",
            "a b",
        ] {
            assert!(check_git_url(bad).is_err(), "{bad}");
        }
    }
}
