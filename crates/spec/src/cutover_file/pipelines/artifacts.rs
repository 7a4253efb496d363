//! Artifacts across a pipeline: the defaults an action's settings imply, who produces each
//! artifact, and whether every input is produced by something that runs earlier.

use std::collections::HashMap;

use pipeline::definition::{
    ARTIFACTS_PER_ACTION_MAX, ActionDecl, ActionKind, DeployAction, ImagePlaceholder, StageDecl,
};

use super::DEFAULT_PLACEHOLDER;
use super::{
    actions::{RawAction, RawDeploy, RawKind, with_article},
    values::is_artifact_name,
};
use crate::cutover_file::{Loc, Named};
use crate::decode::Cx;
use crate::diag::suggest;

/// Who produces an artifact.
pub(super) struct Producer {
    /// 0 for the source, then 1 for the first stage…
    pub(super) stage: usize,
    pub(super) run_order: u16,
    pub(super) line: u32,
    pub(super) what: String,
    pub(super) from_build: bool,
}

impl Producer {
    /// Whether this runs, and succeeds, before an action of `stage` with `run_order`.
    fn before(&self, stage: usize, run_order: u16) -> bool {
        self.stage < stage || (self.stage == stage && self.run_order < run_order)
    }
}

/// Every artifact of the pipeline by name.
type Producers = HashMap<String, Producer>;

/// Stages as written: each stage's name and actions.
type RawStages = [(Option<Named>, Vec<RawAction>)];

/// Fills in default artifacts and checks that every input comes from something that runs
/// earlier and that every output name is used once. Reports every problem; the stages only when
/// there were none.
pub(super) fn resolve_artifacts(
    cx: &mut Cx<'_>,
    raw: &RawStages,
    source_name: &str,
    source_loc: &Loc,
) -> Option<Vec<StageDecl>> {
    let errors_before = cx.error_count();
    let mut producers = Producers::new();
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
    let outputs = register_outputs(cx, raw, &mut producers);
    let mut stages = Vec::new();
    for (s, (stage_name, actions)) in raw.iter().enumerate() {
        let decls = actions
            .iter()
            .zip(&outputs[s])
            .filter_map(|(a, outputs)| {
                resolve_action(cx, &producers, s + 1, a, outputs.clone(), source_name)
            })
            .collect();
        if let Some((name, _)) = stage_name {
            stages.push(StageDecl { name: name.clone(), actions: decls });
        }
    }
    (cx.error_count() == errors_before).then_some(stages)
}

/// Each action's outputs (by stage, then action), with every one recorded in `producers`; an
/// output named twice is reported and left out.
fn register_outputs(
    cx: &mut Cx<'_>,
    raw: &RawStages,
    producers: &mut Producers,
) -> Vec<Vec<Vec<String>>> {
    let mut outputs = Vec::new();
    for (s, (stage_name, actions)) in raw.iter().enumerate() {
        let stage_label = stage_name.as_ref().map_or("?", |(n, _)| n.as_str());
        let mut stage_outputs = Vec::new();
        for a in actions {
            let action_label = a.name.as_ref().map_or("?", |(n, _)| n.as_str());
            let defaulted = a.outputs.is_none();
            let written = written_outputs(cx, a);
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
    outputs
}

/// The outputs an action declares, or the one a build has by default: named after it.
fn written_outputs(cx: &mut Cx<'_>, a: &RawAction) -> Vec<Named> {
    match (&a.outputs, a.type_name, &a.name) {
        (Some((list, _)), _, _) => list.clone(),
        (None, Some("build"), Some((n, loc))) => {
            if is_artifact_name(n) {
                vec![(n.clone(), loc.clone())]
            } else {
                cx.error(
                    loc.pos,
                    &loc.path,
                    format!(
                        "a build action's output artifact is named after it, and `{n}` is not a \
                         valid artifact name (letters, digits, `_` and `-`); name it with \
                         `output_artifacts`"
                    ),
                );
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

/// The build outputs that are ready before an action of `stage` with `run_order`, in the order
/// they were produced.
fn earlier_builds(producers: &Producers, stage: usize, run_order: u16) -> Vec<&str> {
    let mut builds: Vec<(&Producer, &str)> = producers
        .iter()
        .filter(|(_, p)| p.from_build && p.before(stage, run_order))
        .map(|(n, p)| (p, n.as_str()))
        .collect();
    builds.sort_by_key(|(p, n)| (p.stage, p.run_order, p.line, *n));
    builds.into_iter().map(|(_, n)| n).collect()
}

/// One action with its artifacts resolved, or `None` when something about it was reported.
fn resolve_action(
    cx: &mut Cx<'_>,
    producers: &Producers,
    stage: usize,
    a: &RawAction,
    outputs: Vec<String>,
    source: &str,
) -> Option<ActionDecl> {
    let kind = a.kind.as_ref()?;
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
    let earlier_builds = earlier_builds(producers, stage, a.run_order);
    let (inputs, kind) = action_inputs(cx, a, kind, source, &earlier_builds)?;
    for (artifact, loc) in &inputs {
        check_available(cx, producers, artifact, loc, stage, a.run_order);
    }
    let (name, _) = a.name.as_ref()?;
    Some(ActionDecl {
        name: name.clone(),
        run_order: a.run_order,
        input_artifacts: inputs.into_iter().map(|(n, _)| n).collect(),
        output_artifacts: outputs,
        kind,
    })
}

/// Reports that an action has the wrong number of inputs, at its list (or the action when the
/// inputs are implied).
fn count_error(cx: &mut Cx<'_>, a: &RawAction, kind: &RawKind, takes: &str, n: usize) {
    let loc = a.inputs.as_ref().map_or(&a.loc, |(_, l)| l);
    cx.error(
        loc.pos,
        &loc.path,
        format!("{} action takes {takes}; found {n}", with_article(kind.as_str())),
    );
}

/// Whether an action has 1 to [`ARTIFACTS_PER_ACTION_MAX`] inputs; reports it when not.
fn inputs_in_range(cx: &mut Cx<'_>, a: &RawAction, kind: &RawKind, inputs: &[Named]) -> bool {
    let ok = !inputs.is_empty() && inputs.len() <= ARTIFACTS_PER_ACTION_MAX;
    if !ok {
        let takes = format!("1 to {ARTIFACTS_PER_ACTION_MAX} input artifacts");
        count_error(cx, a, kind, &takes, inputs.len());
    }
    ok
}

/// The inputs of an action, each with where it was written (or the field that implied it), and
/// its configuration with defaults filled in.
pub(super) fn action_inputs(
    cx: &mut Cx<'_>,
    a: &RawAction,
    kind: &RawKind,
    source: &str,
    earlier_builds: &[&str],
) -> Option<(Vec<Named>, ActionKind)> {
    match kind {
        RawKind::Build(build) => {
            let inputs = match &a.inputs {
                Some((list, _)) => list.clone(),
                None => vec![(source.to_string(), a.loc.clone())],
            };
            inputs_in_range(cx, a, kind, &inputs)
                .then(|| (inputs, ActionKind::Build(build.clone())))
        }
        RawKind::Approval(approval) => {
            if let Some((list, loc)) = &a.inputs
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
            let inputs = deploy_ecs_inputs(cx, a, earlier_builds)?;
            if inputs.len() != 1 {
                count_error(cx, a, kind, "exactly one input artifact", inputs.len());
                return None;
            }
            Some((inputs, ActionKind::DeployEcs(ecs.clone())))
        }
        RawKind::Deploy(d) => deploy_inputs(cx, a, kind, d, source, earlier_builds),
    }
}

/// An ECS deploy reads `imagedefinitions.json` from its input, by default the one build output
/// that comes before it.
fn deploy_ecs_inputs(
    cx: &mut Cx<'_>,
    a: &RawAction,
    earlier_builds: &[&str],
) -> Option<Vec<Named>> {
    match (&a.inputs, earlier_builds) {
        (Some((list, _)), _) => Some(list.clone()),
        (None, [one]) => Some(vec![(one.to_string(), a.loc.clone())]),
        (None, []) => {
            cx.error(
                a.loc.pos,
                &a.loc.path,
                "no build action runs before this one to produce imagedefinitions.json; name the \
                 artifact that holds it with `input_artifacts: [NAME]`",
            );
            None
        }
        (None, several) => {
            cx.error(
                a.loc.pos,
                &a.loc.path,
                format!(
                    "several build artifacts come before this action ({}); name the one that \
                     holds imagedefinitions.json with `input_artifacts: [{}]`",
                    several.join(", "),
                    several[0]
                ),
            );
            None
        }
    }
}

/// A blue/green deploy reads its task definition and AppSpec templates (by default from the
/// source) and the images it fills in (by default `IMAGE1_NAME` from the one build output that
/// comes before it); its inputs are those artifacts, or the list written, which must hold them.
fn deploy_inputs(
    cx: &mut Cx<'_>,
    a: &RawAction,
    kind: &RawKind,
    d: &RawDeploy,
    source: &str,
    earlier_builds: &[&str],
) -> Option<(Vec<Named>, ActionKind)> {
    let from_source = || (source.to_string(), a.loc.clone());
    let td = d.task_definition_artifact.clone().unwrap_or_else(from_source);
    let appspec = d.appspec_artifact.clone().unwrap_or_else(from_source);
    let images = deploy_images(cx, a, d, earlier_builds)?;
    let mut referenced: Vec<Named> = vec![td.clone(), appspec.clone()];
    referenced.extend(images.iter().map(|(artifact, _)| artifact.clone()));
    let inputs = match &a.inputs {
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
                            "artifact `{artifact}` is used by this action but is not in its \
                             input_artifacts; add it"
                        ),
                    );
                    ok = false;
                }
            }
            ok.then(|| list.clone())?
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
    if !inputs_in_range(cx, a, kind, &inputs) {
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

/// The images a deploy fills in: as written, or `IMAGE1_NAME` from the one build output before
/// it, or none when no build comes before.
fn deploy_images(
    cx: &mut Cx<'_>,
    a: &RawAction,
    d: &RawDeploy,
    earlier_builds: &[&str],
) -> Option<Vec<(Named, String)>> {
    match (&d.images, earlier_builds) {
        (Some((list, _)), _) => Some(list.clone()),
        (None, []) => Some(Vec::new()),
        (None, [one]) => {
            Some(vec![((one.to_string(), a.loc.clone()), DEFAULT_PLACEHOLDER.to_string())])
        }
        (None, several) => {
            cx.error(
                a.loc.pos,
                &a.loc.path,
                format!(
                    "several build artifacts come before this action ({}); name the one whose \
                     imageDetail.json gives the image: `image_placeholders: [{{ artifact: {}, \
                     placeholder: {DEFAULT_PLACEHOLDER} }}]`",
                    several.join(", "),
                    several[0]
                ),
            );
            None
        }
    }
}

pub(super) fn check_available(
    cx: &mut Cx<'_>,
    producers: &Producers,
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
