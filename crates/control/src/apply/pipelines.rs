//! The repositories and pipelines of a `cutover.yaml`: `pipelines` validates and plans them, and stores
//! them in the apply's own transaction (`commit`).

use std::path::Path;

use crate::api::PlanItem;
use crate::engine::Engine;
use crate::error::ApiError;

/// The file's pipelines, a watched repository's relative path made relative to cutover.yaml
/// (`base_dir`), like every other path in it.
pub(super) fn with_absolute_sources(
    file: &config::CutoverFile,
    base_dir: Option<&str>,
) -> Vec<config::PipelineDecl> {
    let mut pipelines = file.pipelines.clone();
    if let Some(base) = base_dir {
        for pipeline in &mut pipelines {
            if let config::SourceLocation::Url { url, .. } = &mut pipeline.source.location
                && !url.contains("://")
                && !Path::new(url.as_str()).is_absolute()
            {
                *url = Path::new(base).join(url.as_str()).display().to_string();
            }
        }
    }
    pipelines
}

/// What `pipelines` would do with the file's repositories and pipelines (validated before anything
/// changes); refused when this control plane runs no pipelines and the file declares some.
pub(super) fn plan(
    engine: &Engine,
    file: &config::CutoverFile,
    pipelines: &[config::PipelineDecl],
) -> Result<Vec<PlanItem>, ApiError> {
    let Some(shell) = &engine.pipelines else {
        if !file.repositories.is_empty() || !file.pipelines.is_empty() {
            return Err(ApiError::conflict("pipelines are not running in this control plane"));
        }
        return Ok(Vec::new());
    };
    let items = shell.plan(&file.repositories, pipelines).map_err(ci_error)?;
    Ok(items.into_iter().map(ci_plan_item).collect())
}

pub(super) fn ci_error(err: pipelines::Error) -> ApiError {
    match err {
        pipelines::Error::Invalid(m) | pipelines::Error::NotFound(m) => ApiError::bad_request(m),
        pipelines::Error::Conflict(m) => ApiError::conflict(m),
        pipelines::Error::Store(err) => ApiError::from(err),
        other => ApiError::internal(other.to_string()),
    }
}

pub(super) fn ci_plan_item(i: pipelines::api::PlanItem) -> PlanItem {
    PlanItem {
        kind: i.kind,
        name: i.name,
        action: if i.action == "unchanged" { "no change".into() } else { i.action },
        detail: i.detail,
    }
}
