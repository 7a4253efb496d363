//! `repositories` and `pipelines` in cutover.yaml: CodePipeline's model (a source, then stages of
//! build, deploy and approval actions joined by named artifacts) in cutover's spelling, with
//! CodePipeline's structural rules checked where they were broken. What it reads is
//! `pipeline::definition`, the one pipeline definition `ci` stores and executes; its limits are
//! that module's.
//!
//! This module reads the pipeline and its source; [`actions`] reads stages and actions,
//! [`artifacts`] fills in default artifacts and checks where each input comes from, [`values`]
//! checks single values (branches, URLs, paths, names) and [`checks`] what pipelines name in the
//! rest of the file.

mod actions;
mod artifacts;
mod checks;
mod values;

use std::time::Duration;

use model::format_duration;
pub use pipeline::definition::{
    ActionDecl, ActionKind, ApprovalAction, BranchFilter, BuildAction, DeployAction,
    DeployEcsAction, DeploymentGroupRef, ExecutionMode, ImagePlaceholder, PipelineDecl,
    PipelineSource, SourceLocation, StageDecl, WebhookTrigger,
};

use super::{Loc, Named, name};
use crate::decode::{BareNumber, Cx, Field, Fields, quote};
use crate::diag::suggest;
use crate::taskdef::optional;
use crate::tree::{Node, child_index, child_key};
pub(super) use checks::cross_check;
use values::{artifact_name, check_branch, check_env_name, check_git_url};

/// A repository cutover hosts (`repositories:`): `git push` goes to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositoryDecl {
    pub name: String,
}

// ---------------------------------------------------------------------------------------------
// Limits and defaults (CodePipeline's, CodeBuild's and ECS's where they exist).

// The structural ones (stages, actions, run orders, artifacts, names) are the definition's own,
// in `pipeline::definition`; these are the settings'.
const IMAGES_MAX: usize = 4;
const BRANCH_PATTERNS_MAX: usize = 8;
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
    let stages = stages_field.and_then(|s| actions::stages(cx, &s, source_artifact, &mut meta));
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
    let written = Location {
        repository: repository?,
        url: url?,
        poll_interval: poll_interval?,
        webhook: webhook?,
    };
    let location = location(cx, field, written, meta)?;
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

/// A source's location fields as written, each with where.
struct Location {
    repository: Option<Named>,
    url: Option<Named>,
    poll_interval: Option<(Duration, Loc)>,
    webhook: Option<(WebhookTrigger, Loc)>,
}

/// Where the code comes from: exactly one of a hosted repository (no polling or webhook) and a
/// URL (polled every minute unless it has a webhook or its own interval).
fn location(
    cx: &mut Cx<'_>,
    field: &Field<'_>,
    written: Location,
    meta: &mut PipelineMeta,
) -> Option<SourceLocation> {
    let Location { repository, url, poll_interval, webhook } = written;
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
    Some(location)
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
