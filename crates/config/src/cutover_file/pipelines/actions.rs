//! Stages and actions as written: each action's type and settings, read with defaults; artifacts
//! are resolved afterwards ([`super::artifacts`]).

use std::collections::BTreeMap;

use pipeline::definition::{
    ACTIONS_MAX, ACTIONS_PER_STAGE_MAX, ApprovalAction, BuildAction, DeployEcsAction,
    DeploymentGroupRef, RUN_ORDER_MAX, STAGES_MAX, StageDecl,
};

use super::{
    APPROVAL_TIMEOUT_DEFAULT, APPROVAL_TIMEOUT_MAX, BUILD_TIMEOUT_DEFAULT, BUILD_TIMEOUT_MAX,
    COMMENT_LENGTH_MAX, DEFAULT_APPSPEC_PATH, DEFAULT_BUILDSPEC, DEFAULT_IMAGE_DEFINITIONS,
    DEFAULT_TASK_DEFINITION_PATH, ECS_TIMEOUT_MAX, IMAGES_MAX, PipelineMeta,
};
use super::{
    artifacts::resolve_artifacts,
    values::{
        artifact_list, artifact_name, bounded_duration, check_env_name, check_placeholder,
        check_review_url, relative_path,
    },
};
use crate::cutover_file::{Loc, Named, check_unique, name};
use crate::taskdef::optional;
use syntax::decode::{Cx, Field, Fields, quote};
use syntax::diag::suggest;
use syntax::tree::{Node, Value, child_index, child_key};

// ---------------------------------------------------------------------------------------------
// Stages and actions.

/// An action as written, before artifact defaults are resolved.
pub(super) struct RawAction {
    pub(super) name: Option<Named>,
    /// The action's map, where errors about what is missing go.
    pub(super) loc: Loc,
    pub(super) run_order: u16,
    /// The type as written, even when its settings are wrong, so that a mistake in a build's
    /// settings does not also lose its output artifact.
    pub(super) type_name: Option<&'static str>,
    pub(super) kind: Option<RawKind>,
    pub(super) inputs: Option<(Vec<Named>, Loc)>,
    pub(super) outputs: Option<(Vec<Named>, Loc)>,
    /// Every field read well.
    pub(super) ok: bool,
}

pub(super) enum RawKind {
    Build(BuildAction),
    Deploy(RawDeploy),
    DeployEcs(DeployEcsAction),
    Approval(ApprovalAction),
}

impl RawKind {
    pub(super) fn as_str(&self) -> &'static str {
        match self {
            RawKind::Build(_) => "build",
            RawKind::Deploy(_) => "deploy",
            RawKind::DeployEcs(_) => "deploy_ecs",
            RawKind::Approval(_) => "approval",
        }
    }
}

pub(super) struct RawDeploy {
    pub(super) group: DeploymentGroupRef,
    pub(super) task_definition_artifact: Option<Named>,
    pub(super) task_definition_path: String,
    pub(super) appspec_artifact: Option<Named>,
    pub(super) appspec_path: String,
    /// (artifact, placeholder) as written.
    pub(super) images: Option<(Vec<(Named, String)>, Loc)>,
}

pub(super) fn stages(
    cx: &mut Cx<'_>,
    field: &Field<'_>,
    source_artifact: Option<(String, Loc)>,
    meta: &mut PipelineMeta,
) -> Option<Vec<StageDecl>> {
    let items = cx.list(field.node, &field.path)?;
    // The source is not written as a stage, but it is one of CodePipeline's.
    let declared_max = STAGES_MAX - 1;
    if items.is_empty() || items.len() > declared_max {
        cx.error(
            field.node.pos,
            &field.path,
            format!(
                "a pipeline has 1 to {declared_max} stages after its source (CodePipeline's 2 to \
                 {STAGES_MAX}, \
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
    if total > ACTIONS_MAX {
        cx.error(
            field.node.pos,
            &field.path,
            format!(
                "{total} actions; a pipeline has at most {ACTIONS_MAX} \
                 (CodePipeline's limit)"
            ),
        );
        ok = false;
    }
    let (source_name, source_loc) = source_artifact?;
    let stages = resolve_artifacts(cx, &raw, &source_name, &source_loc);
    if ok { stages } else { None }
}

pub(super) const ACTION_FIELDS: &[&str] =
    &["name", "type", "run_order", "input_artifacts", "output_artifacts"];
pub(super) const BUILD_FIELDS: &[&str] = &["buildspec", "timeout", "env"];
pub(super) const DEPLOY_FIELDS: &[&str] = &[
    "deployment_group",
    "task_definition_template_artifact",
    "task_definition_template_path",
    "appspec_template_artifact",
    "appspec_template_path",
    "image_placeholders",
];
pub(super) const DEPLOY_ECS_FIELDS: &[&str] = &["service", "image_definitions", "timeout"];
pub(super) const APPROVAL_FIELDS: &[&str] = &["timeout", "comment", "review_url"];
pub(super) const ACTION_TYPES: [(&str, &[&str]); 4] = [
    ("build", BUILD_FIELDS),
    ("deploy", DEPLOY_FIELDS),
    ("deploy_ecs", DEPLOY_ECS_FIELDS),
    ("approval", APPROVAL_FIELDS),
];

pub(super) fn action(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
    meta: &mut PipelineMeta,
) -> Option<RawAction> {
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
pub(super) fn with_article(type_name: &str) -> String {
    let article = if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {type_name}")
}

/// "a", "a and b", "a, b and c".
pub(super) fn join_or(items: &[&str], word: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} {word} {last}", init.join(", ")),
    }
}

pub(super) fn build_action(cx: &mut Cx<'_>, f: &mut Fields<'_>) -> Option<BuildAction> {
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

pub(super) fn deploy_action(
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
                Err(err) => {
                    cx.error(g.node.pos, &g.path, err.to_string());
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

pub(super) fn deploy_ecs_action(
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

pub(super) fn approval_action(cx: &mut Cx<'_>, f: &mut Fields<'_>) -> Option<ApprovalAction> {
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
    let review_url = optional(cx, f, "review_url", |cx, u| {
        let s = cx.string(u.node, &u.path)?;
        if let Err(why) = check_review_url(&s) {
            cx.error(u.node.pos, &u.path, why);
            return None;
        }
        Some(s)
    });
    Some(ApprovalAction {
        timeout: timeout?.unwrap_or(APPROVAL_TIMEOUT_DEFAULT),
        comment: comment?,
        review_url: review_url?,
    })
}
