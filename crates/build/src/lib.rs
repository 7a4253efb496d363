//! CodeBuild's buildspec 0.2 for cutover: [`parse_buildspec`] reads `buildspec.yml` strictly
//! (pure, diagnostics with file:line:column and field path), [`run`] executes it for real in one
//! persistent shell with CodeBuild's phase rules, variables, timeout, live logs and artifacts,
//! and [`parse_image_detail`]/[`parse_image_definitions`] read what a build hands to a deploy.
//!
//! The parsing modules (`buildspec`, `image`; globs are `model::glob`) do no IO; `runner` and `artifacts` do.

mod artifacts;
mod buildspec;
#[doc(hidden)]
pub mod fuzzing;
mod image;
mod runner;

pub use artifacts::ArtifactOutput;
pub use buildspec::{
    Artifacts, BuildSpec, Command, Env, OnFailure, Phase, PhaseType, Phases, RETRY_COUNT_MAX,
    Shell, looks_secret, parse_buildspec, render,
};
pub use image::{
    IMAGE_DEFINITIONS_SIZE_MAX, IMAGE_DETAIL_SIZE_MAX, IMAGE_URI_MAX, ImageDefinition, ImageDetail,
    ImageUriError, check_image_uri, parse_image_definitions, parse_image_detail,
};
pub use model::glob::Glob;
pub use runner::{
    BuildContext, BuildResult, BuildStatus, BuildVariable, DEFAULT_TIMEOUT, Limits, LogLine,
    LogSink, LogStats, LogStream, MemorySink, PhaseContext, PhaseRecord, PhaseStatus,
    SECRET_LEN_MIN, host_env, run,
};
pub use spec::{
    ALIAS_NODES_MAX, DEPTH_MAX, Diagnostic, ERRORS_MAX, Errors, FILE_SIZE_MAX, Parsed, Severity,
};
