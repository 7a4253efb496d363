//! The pipeline pages' handlers: read from the store (`pipelines::views`), decide the buttons
//! (`pipeline_actions`), render (`pipelines`).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use control::ApiError;
use control::access::decision::Binding;
use control::http::AppState;

use crate::pipeline_pages::{self as pages, BuildPage, ExecutionPage, PipelinePage};
use crate::{PartQuery, Visitor, error_page, html_page, pipeline_actions, respond};

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

async fn list_page(State(state): State<AppState>, visitor: Visitor) -> Response {
    match pipelines::views::pipelines(&state.store) {
        Ok(list) => html_page(StatusCode::OK, pages::list(&list, &visitor.viewer)),
        Err(err) => error_page(api_error(err), Some(&visitor.viewer)),
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
    visitor: Visitor,
) -> Response {
    let read = read_pipeline(&state, &name, &visitor.bindings);
    respond(read, &query, &visitor, pages::pipeline_live, pages::pipeline_whole)
}

fn read_execution(
    state: &AppState,
    name: &str,
    id: &str,
    bindings: &[Binding],
) -> Result<ExecutionPage, ApiError> {
    match pipelines::views::execution(&state.store, id).map_err(api_error)? {
        Some(execution) if execution.summary.pipeline == name => Ok(ExecutionPage {
            actions: pipeline_actions::for_execution(&execution, bindings),
            execution,
        }),
        _ => Err(ApiError::not_found(format!("pipeline `{name}` has no execution `{id}`"))),
    }
}

async fn execution_page(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
    Query(query): Query<PartQuery>,
    visitor: Visitor,
) -> Response {
    let read = read_execution(&state, &name, &id, &visitor.bindings);
    respond(read, &query, &visitor, pages::execution_live, pages::execution_whole)
}

async fn build_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<PartQuery>,
    visitor: Visitor,
) -> Response {
    let read = match pipelines::views::build(&state.store, &id) {
        Ok(Some(build)) => Ok(BuildPage { build, logs: visitor.may_read_logs() }),
        Ok(None) => Err(ApiError::not_found(format!("no build `{id}`"))),
        Err(err) => Err(api_error(err)),
    };
    respond(read, &query, &visitor, |page| pages::build_live(&page.build), pages::build_whole)
}
