//! Parsers and validators for the files cutover users already have: ECS task definitions
//! (`taskdef.json`), CodeDeploy AppSpecs for ECS (`appspec.yaml` or `.json`) and cutover's own
//! declarative file (`cutover.yaml`: load balancers, services, deployment groups, alarms and
//! metric filters, repositories and pipelines).
//!
//! Pure: every function takes text and returns a value or [`Errors`]; nothing here reads a file.
//! Every diagnostic names the file, the line and column (1-based, in characters), the field path
//! (`containerDefinitions[0].portMappings[0].containerPort`) and what to do about it.
//!
//! Limits: files over [`FILE_SIZE_MAX`] (1 MiB) are refused before parsing ([`check_file_size`]
//! with the size on disk, before reading); nesting is capped at
//! [`DEPTH_MAX`]; YAML aliases may add at most [`ALIAS_NODES_MAX`] values (billion-laughs files
//! fail fast); [`text_from_bytes`] turns raw bytes into text with the size and UTF-8 checks done
//! first.
//!
//! The positioned YAML/JSON layer under these parsers is the `syntax` crate.

mod appspec;
mod cutover_file;
#[doc(hidden)]
pub mod fuzzing;
mod references;
mod taskdef;
mod validate;

pub use appspec::{
    AppSpec, TaskDefinitionRef, TaskDefinitionRefError, check_appspec_against, parse_appspec,
};
pub use cutover_file::BadListenerRef;
pub use cutover_file::{
    AccessDecl, ActionDecl, ActionKind, AlarmDecl, AlarmDimension, ApprovalAction, AutoRollback,
    BranchFilter, BuildAction, CutoverFile, DeployAction, DeployEcsAction, DeploymentGroupRef,
    DeploymentGroupSpec, ExecutionMode, GREEN, HookAction, HookSpec, ImagePlaceholder,
    LOAD_BALANCER_METRICS, ListenerAction, ListenerRef, ListenerRule, ListenerSpec,
    LoadBalancerSpec, MetricFilterDecl, PipelineDecl, PipelineSource, PreviewSpec, RepositoryDecl,
    RetryOnBlue, RuntimeKind, SERVICE_DIMENSION, ServiceLoadBalancer, ServiceSpec, SourceLocation,
    StageDecl, TARGET_GROUP_DIMENSION, TargetGroupSpec, WebhookTrigger, check_service_against,
    parse_cutover_file, resolve_deployment_config,
};
pub use references::{
    FileReference, ReferenceKind, file_references, names_a_file, task_definition_files,
    task_definition_pos,
};
pub use syntax::decode::ERRORS_MAX;
pub use syntax::diag::{Diagnostic, Errors, Parsed, Severity};
pub use syntax::text_from_bytes;
pub use syntax::tree::{ALIAS_NODES_MAX, DEPTH_MAX, FILE_SIZE_MAX, check_file_size};
pub use taskdef::{
    ContainerDefinition, ContainerDependency, ContainerHealthCheck, DependencyCondition,
    KeyValuePair, PlacementConstraint, PortMapping, TaskDefinition, parse_task_definition,
    substitute_image_placeholder,
};
pub use validate::{FileKind, detect_kind, validate};
