//! A pipeline's definition as `ci` stores it (a serde copy of `spec::PipelineDecl`, so a restart
//! needs no cutover.yaml), and its translation into the `pipeline` crate's `PipelineSpec`.

use std::collections::BTreeMap;
use std::time::Duration;

use pipeline::{ActionKind as MachineKind, ActionSpec, ExecutionMode, PipelineSpec, StageSpec};
use serde::{Deserialize, Serialize};

/// The name of the machine's first stage, which holds the source action.
pub const SOURCE_STAGE: &str = "Source";
/// The source action's name.
pub const SOURCE_ACTION: &str = "Source";
/// The machine's timeout for a build is the build's own timeout plus this, so the build reports
/// TIMED_OUT itself before the machine gives up on it.
const BUILD_TIMEOUT_MARGIN: Duration = Duration::from_secs(120);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineDef {
    pub name: String,
    pub queued: bool,
    pub source: SourceDef,
    pub stages: Vec<StageDef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceDef {
    /// A hosted repository's name, or `None` for a URL.
    pub repository: Option<String>,
    pub url: Option<String>,
    pub poll_interval_secs: Option<u64>,
    pub webhook_secret_env: Option<String>,
    pub branch: String,
    pub includes: Option<Vec<String>>,
    pub excludes: Vec<String>,
    pub output_artifact: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageDef {
    pub name: String,
    pub actions: Vec<ActionDef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionDef {
    pub name: String,
    pub run_order: u16,
    pub input_artifacts: Vec<String>,
    pub output_artifacts: Vec<String>,
    pub kind: KindDef,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KindDef {
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
        /// (artifact, placeholder without brackets)
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

impl PipelineDef {
    pub fn from_decl(d: &spec::PipelineDecl) -> PipelineDef {
        let (repository, url, poll, secret) = match &d.source.location {
            spec::SourceLocation::Repository(name) => (Some(name.clone()), None, None, None),
            spec::SourceLocation::Url { url, poll_interval, webhook } => (
                None,
                Some(url.clone()),
                poll_interval.map(|it| it.as_secs().max(1)),
                webhook.as_ref().map(|it| it.secret_env.clone()),
            ),
        };
        PipelineDef {
            name: d.name.clone(),
            queued: d.execution_mode == spec::ExecutionMode::Queued,
            source: SourceDef {
                repository,
                url,
                poll_interval_secs: poll,
                webhook_secret_env: secret,
                branch: d.source.branch.clone(),
                includes: d.source.branches.as_ref().map(|it| it.includes.clone()),
                excludes: d
                    .source
                    .branches
                    .as_ref()
                    .map(|it| it.excludes.clone())
                    .unwrap_or_default(),
                output_artifact: d.source.output_artifact.clone(),
            },
            stages: d
                .stages
                .iter()
                .map(|s| StageDef {
                    name: s.name.clone(),
                    actions: s.actions.iter().map(action_from_decl).collect(),
                })
                .collect(),
        }
    }

    /// The `spec` view of the source, for its branch rules.
    pub fn source_decl(&self) -> spec::PipelineSource {
        let location = match (&self.source.repository, &self.source.url) {
            (Some(name), _) => spec::SourceLocation::Repository(name.clone()),
            (None, url) => spec::SourceLocation::Url {
                url: url.clone().unwrap_or_default(),
                poll_interval: self.source.poll_interval_secs.map(Duration::from_secs),
                webhook: self
                    .source
                    .webhook_secret_env
                    .clone()
                    .map(|secret_env| spec::WebhookTrigger { secret_env }),
            },
        };
        spec::PipelineSource {
            location,
            branch: self.source.branch.clone(),
            branches: self.source.includes.clone().map(|includes| spec::BranchFilter {
                includes,
                excludes: self.source.excludes.clone(),
            }),
            output_artifact: self.source.output_artifact.clone(),
        }
    }

    pub fn triggers_on(&self, branch: &str) -> bool {
        self.source_decl().triggers_on(branch)
    }

    /// How often a URL source is polled: `poll_interval`, else every minute when no webhook is
    /// configured, else never (webhook only).
    pub fn poll_interval(&self) -> Option<Duration> {
        self.source.url.as_ref()?;
        match (self.source.poll_interval_secs, &self.source.webhook_secret_env) {
            (Some(s), _) => Some(Duration::from_secs(s)),
            (None, None) => Some(Duration::from_secs(60)),
            (None, Some(_)) => None,
        }
    }

    pub fn action(&self, stage: &str, action: &str) -> Option<&ActionDef> {
        self.stages.iter().find(|s| s.name == stage)?.actions.iter().find(|a| a.name == action)
    }

    pub fn source_stage_name(&self) -> &'static str {
        if self.stages.iter().any(|s| s.name == SOURCE_STAGE) { "source" } else { SOURCE_STAGE }
    }

    pub fn machine_spec(&self) -> PipelineSpec {
        let mut stages = vec![StageSpec {
            name: self.source_stage_name().to_string(),
            actions: vec![ActionSpec {
                name: SOURCE_ACTION.to_string(),
                kind: MachineKind::Source,
                config_key: String::new(),
                run_order: 1,
                input_artifacts: Vec::new(),
                output_artifacts: vec![self.source.output_artifact.clone()],
                timeout: None,
            }],
        }];
        for s in &self.stages {
            stages.push(StageSpec {
                name: s.name.clone(),
                actions: s
                    .actions
                    .iter()
                    .map(|a| {
                        let (kind, timeout) = match &a.kind {
                            KindDef::Build { timeout_secs, .. } => (
                                MachineKind::Build,
                                Some(Duration::from_secs(*timeout_secs) + BUILD_TIMEOUT_MARGIN),
                            ),
                            KindDef::Deploy { .. } => (MachineKind::Deploy, None),
                            KindDef::DeployEcs { timeout_secs, .. } => {
                                (MachineKind::DeployEcs, Some(Duration::from_secs(*timeout_secs)))
                            }
                            KindDef::Approval { timeout_secs, .. } => {
                                (MachineKind::Approval, Some(Duration::from_secs(*timeout_secs)))
                            }
                        };
                        ActionSpec {
                            name: a.name.clone(),
                            kind,
                            config_key: format!("{}/{}", s.name, a.name),
                            run_order: u32::from(a.run_order),
                            input_artifacts: a.input_artifacts.clone(),
                            output_artifacts: a.output_artifacts.clone(),
                            timeout,
                        }
                    })
                    .collect(),
            });
        }
        PipelineSpec {
            name: self.name.clone(),
            execution_mode: if self.queued {
                ExecutionMode::Queued
            } else {
                ExecutionMode::Superseded
            },
            stages,
        }
    }
}

fn action_from_decl(a: &spec::ActionDecl) -> ActionDef {
    let kind = match &a.kind {
        spec::ActionKind::Build(b) => KindDef::Build {
            buildspec: b.buildspec.clone(),
            timeout_secs: b.timeout.as_secs().max(1),
            env: b.env.clone(),
        },
        spec::ActionKind::Deploy(d) => KindDef::Deploy {
            application: d.deployment_group.application.clone(),
            deployment_group: d.deployment_group.deployment_group.clone(),
            task_definition_artifact: d.task_definition_template_artifact.clone(),
            task_definition_path: d.task_definition_template_path.clone(),
            appspec_artifact: d.appspec_template_artifact.clone(),
            appspec_path: d.appspec_template_path.clone(),
            images: d
                .image_placeholders
                .iter()
                .map(|p| (p.artifact.clone(), p.placeholder.clone()))
                .collect(),
        },
        spec::ActionKind::DeployEcs(d) => KindDef::DeployEcs {
            service: d.service.clone(),
            image_definitions: d.image_definitions.clone(),
            timeout_secs: d.timeout.as_secs().max(1),
        },
        spec::ActionKind::Approval(ap) => KindDef::Approval {
            timeout_secs: ap.timeout.as_secs().max(1),
            comment: ap.comment.clone(),
        },
    };
    ActionDef {
        name: a.name.clone(),
        run_order: a.run_order,
        input_artifacts: a.input_artifacts.clone(),
        output_artifacts: a.output_artifacts.clone(),
        kind,
    }
}
