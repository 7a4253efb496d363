//! `GET /v1/services/{name}/stream`: one service, live, as server-sent events — `service` (as
//! `GET /v1/services/{name}` answers), `tasks` (its tasks, the stopped ones kept too, as
//! `GET /v1/tasks?service=NAME&all=true`) and `targets` (target group → its targets' ALB health
//! and reason, for the target groups of its task sets), each sent first and again as soon as it
//! changes. The engine wakes it on every change it writes and every health report that moves
//! (`Shared::changed`). The console's service page follows it.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event, Sse};
use futures_util::Stream;

use crate::api::{ServiceView, TaskView};
use crate::error::ApiError;
use crate::http::AppState;
use crate::stream::TargetsView;

/// One service as its page shows it.
pub struct ServiceState {
    pub service: ServiceView,
    /// Newest first.
    pub tasks: Vec<TaskView>,
    pub targets: TargetsView,
}

/// The service `name`, its tasks and the health of its task sets' target groups.
pub fn service_state(state: &AppState, name: &str) -> Result<ServiceState, ApiError> {
    let service = crate::http::service_views(state)?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            ApiError::not_found(format!("no service `{name}`; `cutover services list` shows them"))
        })?;
    let mut tasks = crate::http::task_view_list(state, Some(name.to_string()), true)?;
    tasks.sort_by(|a, b| b.started_at.cmp(&a.started_at).then_with(|| a.id.cmp(&b.id)));
    let health = state.shared.health.read().unwrap_or_else(|p| p.into_inner());
    let targets = service
        .task_sets
        .iter()
        .filter_map(|set| set.target_group.clone())
        .map(|tg| {
            let targets = health.target_groups.get(&tg).cloned().unwrap_or_default();
            // Without the requests in flight, which move with every request.
            let targets =
                targets.into_iter().map(|t| routes::TargetHealth { in_flight: 0, ..t }).collect();
            (tg, targets)
        })
        .collect();
    drop(health);
    Ok(ServiceState { service, tasks, targets })
}

fn observe(state: &AppState, name: &str) -> Result<Vec<(&'static str, String, String)>, ApiError> {
    let seen = service_state(state, name)?;
    Ok(vec![
        ("service", String::new(), serde_json::to_string(&seen.service)?),
        ("tasks", String::new(), serde_json::to_string(&seen.tasks)?),
        ("targets", String::new(), serde_json::to_string(&seen.targets)?),
    ])
}

pub async fn service_stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    crate::pipeline_stream::follow(state, name, observe)
}
