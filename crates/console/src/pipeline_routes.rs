//! The pipeline pages' handlers: read from the store (`pipelines::views`), decide the buttons
//! (`pipeline_actions`), render (`pipelines`).

use axum::Extension;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use control::ApiError;
use control::access::CallerBindings;
use control::access::decision::{Binding, Decision, decide};
use control::access::permissions::{Permission, Resource};
use control::http::AppState;

use crate::pipeline_pages::{self as pages, BuildPage, ExecutionPage, PipelinePage};
use crate::{PartQuery, error_page, html_page, pipeline_actions, viewer};

/// How many executions a pipeline's page lists.
const HISTORY: u32 = control::pipeline_stream::EXECUTIONS_FOLLOWED;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/pipelines", get(list_page))
        .route("/pipelines/{name}", get(pipeline_page))
        .route("/pipelines/{name}/executions/{id}", get(execution_page))
        .route("/builds/{id}", get(build_page))
}

fn api_error(err: pipelines::Error) -> ApiError {
    match err {
        pipelines::Error::Store(err) => err.into(),
        other => ApiError::internal(other.to_string()),
    }
}

async fn list_page(
    State(state): State<AppState>,
    Extension(CallerBindings(bindings)): Extension<CallerBindings>,
    headers: HeaderMap,
) -> Response {
    let viewer = viewer(&state, &headers, &bindings);
    match pipelines::views::pipelines(&state.store) {
        Ok(list) => html_page(StatusCode::OK, pages::list(&list, &viewer)),
        Err(err) => error_page(api_error(err), Some(&viewer)),
    }
}

fn read_pipeline(
    state: &AppState,
    name: &str,
    bindings: &[Binding],
) -> Result<PipelinePage, ApiError> {
    let pipeline = pipelines::views::pipelines(&state.store)
        .map_err(api_error)?
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no pipeline `{name}`; the pipelines page lists those declared"
            ))
        })?;
    let latest = pipelines::views::executions_in_full(&state.store, name, 1)
        .map_err(api_error)?
        .into_iter()
        .next();
    let history = pipelines::views::executions(&state.store, name, HISTORY).map_err(api_error)?;
    Ok(PipelinePage {
        release: pipeline_actions::release(name, &pipeline.branch, bindings),
        actions: latest
            .as_ref()
            .map(|e| pipeline_actions::for_execution(e, bindings))
            .unwrap_or_default(),
        pipeline,
        latest,
        history,
    })
}

async fn pipeline_page(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<PartQuery>,
    Extension(CallerBindings(bindings)): Extension<CallerBindings>,
    headers: HeaderMap,
) -> Response {
    let viewer = viewer(&state, &headers, &bindings);
    match read_pipeline(&state, &name, &bindings) {
        Ok(page) if query.part.as_deref() == Some("live") => {
            html_page(StatusCode::OK, pages::pipeline_live(&page))
        }
        Ok(page) => html_page(StatusCode::OK, pages::pipeline_whole(&page, &viewer)),
        Err(err) => error_page(err, Some(&viewer)),
    }
}

async fn execution_page(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
    Query(query): Query<PartQuery>,
    Extension(CallerBindings(bindings)): Extension<CallerBindings>,
    headers: HeaderMap,
) -> Response {
    let viewer = viewer(&state, &headers, &bindings);
    let execution = match pipelines::views::execution(&state.store, &id) {
        Ok(Some(e)) if e.summary.pipeline == name => e,
        Ok(_) => {
            let err = ApiError::not_found(format!("pipeline `{name}` has no execution `{id}`"));
            return error_page(err, Some(&viewer));
        }
        Err(err) => return error_page(api_error(err), Some(&viewer)),
    };
    let page = ExecutionPage {
        actions: pipeline_actions::for_execution(&execution, &bindings),
        execution,
    };
    if query.part.as_deref() == Some("live") {
        return html_page(StatusCode::OK, pages::execution_live(&page));
    }
    html_page(StatusCode::OK, pages::execution_whole(&page, &viewer))
}

async fn build_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<PartQuery>,
    Extension(CallerBindings(bindings)): Extension<CallerBindings>,
    headers: HeaderMap,
) -> Response {
    let viewer = viewer(&state, &headers, &bindings);
    let build = match pipelines::views::build(&state.store, &id) {
        Ok(Some(build)) => build,
        Ok(None) => {
            return error_page(ApiError::not_found(format!("no build `{id}`")), Some(&viewer));
        }
        Err(err) => return error_page(api_error(err), Some(&viewer)),
    };
    if query.part.as_deref() == Some("live") {
        return html_page(StatusCode::OK, pages::build_live(&build));
    }
    let logs = decide(&bindings, Permission::Logs, &Resource::Any) == Decision::Allow;
    html_page(StatusCode::OK, pages::build_whole(&BuildPage { build, logs }, &viewer))
}
