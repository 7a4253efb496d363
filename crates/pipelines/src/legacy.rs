//! Pipeline definitions as `pipelines` stored them before there was one definition type
//! (`ci_pipelines.definition` held `pipelines::def::PipelineDef`, a copy of the declaration in a shape of
//! its own). Read at start and turned into the one definition
//! (`pipeline::definition::PipelineDecl`), which is what is stored from then on.

use std::collections::BTreeMap;
use std::time::Duration;

use pipeline::definition::{
    ActionDecl, ActionKind, ApprovalAction, BranchFilter, BuildAction, DeployAction,
    DeployEcsAction, DeploymentGroupRef, ExecutionMode, ImagePlaceholder, PipelineDecl,
    PipelineSource, SourceLocation, StageDecl, WebhookTrigger,
};
use serde::Deserialize;

/// A stored definition of either shape.
pub fn read_definition(json: &str) -> serde_json::Result<PipelineDecl> {
    serde_json::from_str::<PipelineDecl>(json)
        .or_else(|err| serde_json::from_str::<PipelineDef>(json).map(Into::into).map_err(|_| err))
}

#[derive(Deserialize)]
struct PipelineDef {
    name: String,
    queued: bool,
    source: SourceDef,
    stages: Vec<StageDef>,
}

#[derive(Deserialize)]
struct SourceDef {
    repository: Option<String>,
    url: Option<String>,
    poll_interval_secs: Option<u64>,
    webhook_secret_env: Option<String>,
    branch: String,
    includes: Option<Vec<String>>,
    excludes: Vec<String>,
    output_artifact: String,
}

#[derive(Deserialize)]
struct StageDef {
    name: String,
    actions: Vec<ActionDef>,
}

#[derive(Deserialize)]
struct ActionDef {
    name: String,
    run_order: u16,
    input_artifacts: Vec<String>,
    output_artifacts: Vec<String>,
    kind: KindDef,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum KindDef {
    Build {
        buildspec: String,
        timeout_secs: u64,
        env: BTreeMap<String, String>,
    },
    Deploy {
        application: String,
        deployment_group: String,
        task_definition_artifact: String,
        task_definition_path: String,
        appspec_artifact: String,
        appspec_path: String,
        images: Vec<(String, String)>,
    },
    DeployEcs {
        service: String,
        image_definitions: String,
        timeout_secs: u64,
    },
    Approval {
        timeout_secs: u64,
        comment: Option<String>,
    },
}

impl From<PipelineDef> for PipelineDecl {
    fn from(old: PipelineDef) -> PipelineDecl {
        let source = old.source;
        let location = match (source.repository, source.url) {
            (Some(name), _) => SourceLocation::Repository(name),
            (None, url) => SourceLocation::Url {
                url: url.unwrap_or_default(),
                poll_interval: source.poll_interval_secs.map(Duration::from_secs),
                webhook: source.webhook_secret_env.map(|secret_env| WebhookTrigger { secret_env }),
            },
        };
        PipelineDecl {
            name: old.name,
            execution_mode: if old.queued {
                ExecutionMode::Queued
            } else {
                ExecutionMode::Superseded
            },
            source: PipelineSource {
                location,
                branch: source.branch,
                branches: source
                    .includes
                    .map(|includes| BranchFilter { includes, excludes: source.excludes }),
                output_artifact: source.output_artifact,
            },
            stages: old
                .stages
                .into_iter()
                .map(|s| StageDecl {
                    name: s.name,
                    actions: s.actions.into_iter().map(ActionDecl::from).collect(),
                })
                .collect(),
        }
    }
}

impl From<ActionDef> for ActionDecl {
    fn from(old: ActionDef) -> ActionDecl {
        ActionDecl {
            name: old.name,
            run_order: old.run_order,
            input_artifacts: old.input_artifacts,
            output_artifacts: old.output_artifacts,
            kind: old.kind.into(),
        }
    }
}

impl From<KindDef> for ActionKind {
    fn from(old: KindDef) -> ActionKind {
        match old {
            KindDef::Build { buildspec, timeout_secs, env } => ActionKind::Build(BuildAction {
                buildspec,
                timeout: Duration::from_secs(timeout_secs),
                env,
            }),
            KindDef::Deploy {
                application,
                deployment_group,
                task_definition_artifact,
                task_definition_path,
                appspec_artifact,
                appspec_path,
                images,
            } => ActionKind::Deploy(DeployAction {
                deployment_group: DeploymentGroupRef { application, deployment_group },
                task_definition_template_artifact: task_definition_artifact,
                task_definition_template_path: task_definition_path,
                appspec_template_artifact: appspec_artifact,
                appspec_template_path: appspec_path,
                image_placeholders: images
                    .into_iter()
                    .map(|(artifact, placeholder)| ImagePlaceholder { artifact, placeholder })
                    .collect(),
            }),
            KindDef::DeployEcs { service, image_definitions, timeout_secs } => {
                ActionKind::DeployEcs(DeployEcsAction {
                    service,
                    image_definitions,
                    timeout: Duration::from_secs(timeout_secs),
                })
            }
            KindDef::Approval { timeout_secs, comment } => ActionKind::Approval(ApprovalAction {
                timeout: Duration::from_secs(timeout_secs),
                comment,
                review_url: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row written before there was one definition type: a hosted source, a build with its
    /// default output, a deploy with one image, and an approval.
    const STORED_AS_CI_DEF: &str = r#"{"name":"web","queued":true,"source":{"repository":"web","url":null,"poll_interval_secs":null,"webhook_secret_env":null,"branch":"main","includes":["release/**"],"excludes":["release/old-*"],"output_artifact":"source"},"stages":[{"name":"Build","actions":[{"name":"build","run_order":1,"input_artifacts":["source"],"output_artifacts":["build"],"kind":{"build":{"buildspec":"buildspec.yml","timeout_secs":3600,"env":{"A":"1"}}}}]},{"name":"Approve","actions":[{"name":"ok","run_order":1,"input_artifacts":[],"output_artifacts":[],"kind":{"approval":{"timeout_secs":86400,"comment":"look"}}}]},{"name":"Deploy","actions":[{"name":"deploy","run_order":1,"input_artifacts":["source","build"],"output_artifacts":[],"kind":{"deploy":{"application":"web","deployment_group":"web-prod","task_definition_artifact":"source","task_definition_path":"taskdef.json","appspec_artifact":"source","appspec_path":"appspec.yaml","images":[["build","IMAGE1_NAME"]]}}}]}]}"#;

    #[test]
    fn a_definition_stored_in_ci_s_old_shape_loads_as_the_one_definition() {
        let decl = read_definition(STORED_AS_CI_DEF).unwrap();
        assert_eq!(decl.execution_mode, ExecutionMode::Queued);
        assert_eq!(decl.repository(), Some("web"));
        assert!(decl.source.triggers_on("release/2"));
        assert!(!decl.source.triggers_on("release/old-1"));
        let Some(ActionKind::Build(build)) = decl.action("Build", "build").map(|a| &a.kind) else {
            panic!("no build action: {decl:?}");
        };
        assert_eq!(build.timeout, Duration::from_secs(3600));
        let Some(ActionKind::Deploy(deploy)) = decl.action("Deploy", "deploy").map(|a| &a.kind)
        else {
            panic!("no deploy action: {decl:?}");
        };
        assert_eq!(deploy.deployment_group.to_string(), "web/web-prod");
        assert_eq!(deploy.image_placeholders[0].artifact, "build");
        // Stored again, it is the one definition's shape, and reads back the same.
        let again = read_definition(&serde_json::to_string(&decl).unwrap()).unwrap();
        assert_eq!(again, decl);
    }

    #[test]
    fn a_definition_of_neither_shape_is_refused_with_the_current_shape_s_error() {
        let err = read_definition(r#"{"name":"web"}"#).unwrap_err();
        assert!(err.to_string().contains("missing field"), "{err}");
    }
}
