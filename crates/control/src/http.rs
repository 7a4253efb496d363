//! The HTTP API (`/v1/...`): handlers that read the store directly and send every mutation to
//! the engine's loop. See `docs/api.md`.

use std::collections::BTreeMap;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use store::Store;
use tokio::sync::{mpsc, oneshot};

use crate::access;
use crate::api::*;
use crate::apply::ApplyStep;
use crate::declared::*;
use crate::engine::{self, Command, Msg, Shared};
use crate::error::ApiError;
use crate::state::{self, Snapshot};
use crate::target_group_stream::target_group_stream;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub shared: Arc<Shared>,
    pub tx: mpsc::Sender<Msg>,
    pub token: Option<String>,
    /// Single sign-on, when `cutover up --oidc-issuer` set it up.
    pub oidc: Option<Arc<crate::access::oidc::Oidc>>,
    /// Where people open the console when not at the API's own address (`--console-url`).
    pub console_url: Option<crate::access::console_sso::ConsoleUrl>,
    pub status: Arc<StatusView>,
    pub runtimes: Arc<std::collections::BTreeMap<String, Arc<dyn runtime::Runtime>>>,
    pub lb: crate::lb::LbClient,
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/apply", post(apply))
        .route("/v1/services", get(services))
        .route("/v1/services/{name}", get(service))
        .route("/v1/tasks", get(tasks))
        .route("/v1/tasks/{id}/logs", get(task_logs))
        .route("/v1/target-groups", get(target_groups))
        .route("/v1/certificates", get(certificates))
        .route("/v1/target-groups/{name}", get(target_group))
        .route("/v1/target-groups/{name}/targets", post(register_target).delete(deregister_target))
        .route("/v1/task-definitions", get(task_definitions).post(register_task_definition))
        .route("/v1/task-definitions/{id}", get(task_definition).delete(deregister_task_definition))
        .route("/v1/deployment-configs", get(deployment_configs))
        .route("/v1/deployment-configs/{name}/preview", get(preview))
        .route("/v1/deployments", get(deployments).post(create_deployment))
        .route("/v1/deployments/{id}", get(deployment))
        .route("/v1/deployments/{id}/events", get(deployment_events))
        .route("/v1/deployments/{id}/stream", get(crate::stream::deployment_stream))
        .route("/v1/pipelines/{name}/stream", get(crate::pipeline_stream::pipeline_stream))
        .route("/v1/services/{name}/stream", get(crate::service_stream::service_stream))
        .route("/v1/target-groups/{name}/stream", get(target_group_stream))
        .route("/v1/deployments/{id}/stop", post(stop))
        .route("/v1/deployments/{id}/rollback", post(rollback))
        .route("/v1/deployments/{id}/continue", post(continue_deployment))
        .route("/v1/deployments/{id}/lifecycle-hooks/{execution}", put(hook_status))
        .route("/v1/alarms", get(alarm_list))
        .route("/v1/alarms/{name}", get(alarm_get))
        .route("/v1/metrics/query", get(metrics_query))
        .route("/v1/shutdown", post(shutdown))
        .route("/v1/metrics", get(metrics_json))
        .route("/metrics", get(metrics_text))
        .route("/v1/tokens", get(access::list_tokens).post(access::create_token))
        .route("/v1/tokens/{name}", delete(access::revoke_token))
        .route("/v1/login/oidc", get(access::login_start).post(access::login_finish))
        .route("/v1/audit", get(access::audit_trail));
    api.with_state(state)
}

/// The whole API: this router and `others` (the pipelines'), behind the authorization layer,
/// so no route of either is reached without the permission `access` maps it to.
pub fn authorized(state: AppState, others: Router) -> Router {
    router(state.clone())
        .merge(others)
        .layer(middleware::from_fn_with_state(state, crate::access::authorize))
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn send(state: &AppState, command: Command) -> Result<Json<serde_json::Value>, ApiError> {
    let (reply, answer) = oneshot::channel();
    state
        .tx
        .send(Msg::Command(command, reply))
        .await
        .map_err(|_| ApiError::internal("the control plane is shutting down"))?;
    let value =
        answer.await.map_err(|_| ApiError::internal("the control plane dropped the request"))??;
    Ok(Json(value))
}

async fn status(State(state): State<AppState>) -> Json<StatusView> {
    let mut view = (*state.status).clone();
    view.routes_version = *state.shared.routes_version.read().unwrap_or_else(|p| p.into_inner());
    if let Some(outage) = &*state.shared.store_outage.read().unwrap_or_else(|p| p.into_inner()) {
        view.warnings.push(outage.warning(&view.data_dir));
    }
    if let Some(fleet) = state.lb.fleet() {
        view.warnings.extend(fleet.service_error());
        view.node_load_balancers = fleet
            .views()
            .into_iter()
            .map(|i| crate::api::NodeLoadBalancerView {
                node: i.node,
                admin: i.admin.to_string(),
                acknowledged_version: i.acknowledged,
                answering: i.answering,
                error: i.error,
            })
            .collect();
    }
    Json(view)
}

/// How many times a file is planned again because what it leads to changed while the data plane
/// checked it (another apply, a deployment's routing) before the API gives up.
const APPLY_ATTEMPTS: usize = 3;

/// `apply` in the engine's loop, and the data plane's check of the routing table it leads to
/// here, outside it: the loop never waits for the data plane.
async fn apply(
    State(state): State<AppState>,
    Json(request): Json<ApplyRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut validated = None;
    for _ in 0..APPLY_ATTEMPTS {
        let command = Command::Apply { request: request.clone(), validated: validated.take() };
        let Json(answer) = send(&state, command).await?;
        match serde_json::from_value(answer)? {
            ApplyStep::Applied(response) => return Ok(Json(serde_json::to_value(response)?)),
            ApplyStep::Validate(table, cluster) => {
                crate::apply::validate_routes(&state.lb, &table, &cluster).await?;
                validated = Some(*table);
            }
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "what this file leads to changed each time the load balancer had checked it; apply it again",
    ))
}

fn snapshot(state: &AppState) -> Result<Snapshot, ApiError> {
    Ok(state.store.read(Snapshot::load)?)
}

fn service_view(snapshot: &Snapshot, service: &ServiceDoc) -> ServiceView {
    let sets: Vec<TaskSetView> = snapshot
        .task_sets
        .iter()
        .filter(|ts| ts.service == service.name)
        .map(|ts| engine::task_set_view(ts, &snapshot.tasks))
        .collect();
    let primary = sets.iter().find(|s| s.status == "PRIMARY");
    ServiceView {
        name: service.name.clone(),
        runtime: service.runtime.clone(),
        desired_count: service.desired_count,
        running_count: sets
            .iter()
            .filter(|s| s.status != "DRAINING")
            .map(|s| s.running_count)
            .sum(),
        task_definition: primary.map(|p| p.task_definition.clone()),
        container_name: service.load_balancer.as_ref().map(|lb| lb.container_name.clone()),
        container_port: service.load_balancer.as_ref().map(|lb| lb.container_port),
        deployment_group: snapshot.group_of_service(&service.name).map(|g| g.key()),
        task_sets: sets,
    }
}

async fn services(State(state): State<AppState>) -> Result<Json<Vec<ServiceView>>, ApiError> {
    let snapshot = snapshot(&state)?;
    Ok(Json(snapshot.services.iter().map(|s| service_view(&snapshot, s)).collect()))
}

async fn service(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ServiceView>, ApiError> {
    let snapshot = snapshot(&state)?;
    let service = snapshot.service(&name).ok_or_else(|| {
        ApiError::not_found(format!("no service `{name}`; `cutover services list` shows them"))
    })?;
    Ok(Json(service_view(&snapshot, service)))
}

#[derive(Deserialize)]
struct TaskQuery {
    service: Option<String>,
    #[serde(default)]
    all: bool,
}

async fn tasks(
    State(state): State<AppState>,
    Query(query): Query<TaskQuery>,
) -> Result<Json<Vec<TaskView>>, ApiError> {
    Ok(Json(task_view_list(&state, query.service, query.all)?))
}

/// The tasks as `GET /v1/tasks?service=&all=` answers them.
pub fn task_view_list(
    state: &AppState,
    service: Option<String>,
    all: bool,
) -> Result<Vec<TaskView>, ApiError> {
    let query = TaskQuery { service, all };
    let (tasks, sets, retired) = state.store.read(|tx| {
        let stopped_kept = if query.all { state::STOPPED_TASKS_KEPT } else { 0 };
        Ok((
            tx.task_list(stopped_kept)?,
            tx.task_set_list()?,
            tx.resource_list(crate::declared::KIND_RETIRED_TASK_SET)?,
        ))
    })?;
    let retired: BTreeMap<String, String> = retired
        .into_iter()
        .filter_map(|(id, td)| Some((id, serde_json::from_str(&td).ok()?)))
        .collect();
    Ok(task_views(tasks, &sets, &retired, &query))
}

/// `tasks list`: the tasks that have not stopped, and with `all` the stopped ones kept too,
/// each with its task definition (also once its task set is gone), health as known (a stopped
/// task's is `UNKNOWN`, as ECS reports it), and why and when it stopped.
fn task_views(
    tasks: Vec<store::TaskRow>,
    sets: &[store::TaskSetRow],
    retired: &BTreeMap<String, String>,
    query: &TaskQuery,
) -> Vec<TaskView> {
    tasks
        .into_iter()
        .filter(|t| query.all || t.last_status != model::TaskStatus::Stopped)
        .filter(|t| query.service.as_ref().is_none_or(|s| *s == t.service))
        .map(|t| {
            let set = sets.iter().find(|s| s.id == t.task_set_id);
            let task_definition = set
                .map(|s| s.task_definition.clone())
                .or_else(|| retired.get(&t.task_set_id).cloned())
                .unwrap_or_else(|| "unknown".to_string());
            let health = if t.last_status == model::TaskStatus::Stopped {
                model::TaskHealth::Unknown
            } else {
                t.health
            };
            TaskView {
                id: t.id,
                service: t.service,
                task_set_id: t.task_set_id,
                task_definition,
                runtime: t.runtime.to_string(),
                last_status: t.last_status.to_string(),
                desired_status: t.desired_status.to_string(),
                health: health.to_string(),
                addr: t.addr,
                target_group: set.and_then(|s| s.target_group.clone()),
                started_at: t.started_at,
                stopped_at: t.stopped_at,
                stopped_reason: t.stopped_reason,
            }
        })
        .collect()
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    follow: bool,
}

/// A task's output: every container's log, prefixed with the container name when there are
/// several. With `follow`, the response streams new lines as they are written.
async fn task_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let task = state.store.read(|tx| tx.task_get(&id))?.ok_or_else(|| {
        ApiError::not_found(format!("no task {id}; `cutover tasks list` shows them"))
    })?;
    let rt = state.runtimes.get(task.runtime.as_str()).cloned().ok_or_else(|| {
        ApiError::conflict(format!("the {} runtime is not available", task.runtime))
    })?;
    let files = rt.log_files(&id);
    let mut contents = Vec::new();
    let mut offsets = Vec::new();
    for (_, path) in &files {
        let data = tokio::fs::read(path).await.unwrap_or_default();
        offsets.push(data.len() as u64);
        contents.extend_from_slice(&data);
    }
    if !query.follow {
        return Ok(
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], contents).into_response()
        );
    }
    let store = state.store.clone();
    let stream = futures_util::stream::unfold(
        (Some(contents), files, offsets, store, id),
        |(first, files, mut offsets, store, id)| async move {
            if let Some(first) = first {
                return Some((Ok::<_, Infallible>(first), (None, files, offsets, store, id)));
            }
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let mut chunk = Vec::new();
                for ((_, path), offset) in files.iter().zip(offsets.iter_mut()) {
                    if let Ok(data) = tokio::fs::read(path).await
                        && (data.len() as u64) > *offset
                    {
                        chunk.extend_from_slice(&data[*offset as usize..]);
                        *offset = data.len() as u64;
                    }
                }
                if !chunk.is_empty() {
                    return Some((Ok(chunk), (None, files, offsets, store, id)));
                }
                let stopped = store
                    .read(|tx| tx.task_get(&id))
                    .ok()
                    .flatten()
                    .is_none_or(|t| t.last_status == model::TaskStatus::Stopped);
                if stopped {
                    return None;
                }
            }
        },
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(stream))
        .into_response())
}

pub(crate) fn target_group_view(state: &AppState, doc: TargetGroupDoc) -> TargetGroupView {
    let health = state.shared.health.read().unwrap_or_else(|p| p.into_inner());
    TargetGroupView {
        targets: health.target_groups.get(&doc.name).cloned().unwrap_or_default(),
        manual_targets: doc.manual_targets().map(|t| t.to_string()).collect(),
        name: doc.name,
        health_check: doc.health_check,
        deregistration_delay_ms: doc.deregistration_delay_ms,
        algorithm: doc.algorithm,
    }
}

/// The certificates cutover obtains over ACME: names, expiry, next renewal, last error.
async fn certificates(
    State(state): State<AppState>,
) -> Result<Json<Vec<crate::certificates::CertificateStatus>>, ApiError> {
    let wanted = crate::certificates::wanted(&state.store)?;
    Ok(Json(::acme::status(&wanted, crate::clock::now())))
}

async fn target_groups(
    State(state): State<AppState>,
) -> Result<Json<Vec<TargetGroupView>>, ApiError> {
    let docs: Vec<TargetGroupDoc> = state.store.read(|tx| state::docs(tx, KIND_TARGET_GROUP))?;
    Ok(Json(docs.into_iter().map(|d| target_group_view(&state, d)).collect()))
}

async fn target_group(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<TargetGroupView>, ApiError> {
    let doc: TargetGroupDoc = state
        .store
        .read(|tx| state::doc(tx, KIND_TARGET_GROUP, &name))?
        .ok_or_else(|| ApiError::not_found(format!("no target group `{name}`")))?;
    Ok(Json(target_group_view(&state, doc)))
}

async fn register_target(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(request): Json<RegisterTargetRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    send(&state, Command::RegisterTarget { target_group: name, addr: request.addr, register: true })
        .await
}

async fn deregister_target(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(request): Json<RegisterTargetRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    send(
        &state,
        Command::RegisterTarget { target_group: name, addr: request.addr, register: false },
    )
    .await
}

fn task_definition_view(row: store::TaskDefinitionRow) -> TaskDefinitionView {
    TaskDefinitionView {
        arn: config::TaskDefinitionRef::arn(&row.family, row.revision),
        family: row.family,
        revision: row.revision,
        status: row.status,
        registered_at: row.registered_at,
        body: serde_json::from_str(&row.body).unwrap_or(serde_json::Value::Null),
    }
}

async fn task_definitions(
    State(state): State<AppState>,
) -> Result<Json<Vec<TaskDefinitionView>>, ApiError> {
    let rows = state.store.read(|tx| tx.task_definition_list())?;
    Ok(Json(rows.into_iter().map(task_definition_view).collect()))
}

fn parse_td_id(id: &str) -> Result<(String, Option<u32>), ApiError> {
    let id = id.rsplit('/').next().unwrap_or(id);
    match id.rsplit_once(':') {
        Some((family, revision)) => {
            let revision = revision
                .parse()
                .map_err(|_| ApiError::bad_request(format!("`{id}` is not family:revision")))?;
            Ok((family.to_string(), Some(revision)))
        }
        None => Ok((id.to_string(), None)),
    }
}

async fn task_definition(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TaskDefinitionView>, ApiError> {
    let (family, revision) = parse_td_id(&id)?;
    let row = state
        .store
        .read(|tx| match revision {
            Some(revision) => tx.task_definition_get(&family, revision),
            None => tx.task_definition_latest(&family),
        })?
        .ok_or_else(|| ApiError::not_found(format!("no task definition `{id}`")))?;
    Ok(Json(task_definition_view(row)))
}

async fn register_task_definition(
    State(state): State<AppState>,
    Json(request): Json<RegisterTaskDefinitionRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    send(&state, Command::RegisterTaskDefinition(request.file)).await
}

async fn deregister_task_definition(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (family, revision) = parse_td_id(&id)?;
    let revision = revision
        .ok_or_else(|| ApiError::bad_request("deregister needs family:revision, e.g. web:3"))?;
    send(&state, Command::DeregisterTaskDefinition { family, revision }).await
}

async fn deployment_configs(
    State(state): State<AppState>,
) -> Result<Json<Vec<DeploymentConfigView>>, ApiError> {
    let mut views: Vec<DeploymentConfigView> = model::PREDEFINED_CONFIGS
        .iter()
        .map(|(name, routing)| DeploymentConfigView {
            name: name.to_string(),
            routing: routing.to_string(),
            predefined: true,
        })
        .collect();
    let custom: Vec<DeploymentConfigDoc> =
        state.store.read(|tx| state::docs(tx, KIND_DEPLOYMENT_CONFIG))?;
    views.extend(custom.into_iter().map(|d| DeploymentConfigView {
        name: d.name.clone(),
        routing: d.to_model().routing.to_string(),
        predefined: false,
    }));
    Ok(Json(views))
}

#[derive(Deserialize)]
struct PreviewQuery {
    /// Preview with a deployment group's settings (test listener, waits, hooks).
    group: Option<String>,
}

async fn preview(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<PreviewQuery>,
) -> Result<Json<PreviewView>, ApiError> {
    let snapshot = snapshot(&state)?;
    let custom: Vec<model::DeploymentConfig> =
        snapshot.deployment_configs.iter().map(|d| d.to_model()).collect();
    let config = config::resolve_deployment_config(&name, &custom).ok_or_else(|| {
        ApiError::not_found(format!(
            "no deployment config `{name}`; `cutover deployment-configs list` shows them"
        ))
    })?;
    let group = match &query.group {
        Some(key) => Some(
            snapshot
                .group(key)
                .cloned()
                .ok_or_else(|| ApiError::not_found(format!("no deployment group `{key}`")))?,
        ),
        None => None,
    };
    Ok(Json(crate::preview::preview_view(&config, group.as_ref())))
}

/// A page of the deployment history: every filter given holds.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct DeploymentsQuery {
    /// `application/group`.
    pub group: Option<String>,
    /// A deployment status (`Succeeded`, `Stopped`…).
    pub status: Option<String>,
    /// Created at or after, in milliseconds since the epoch.
    pub since: Option<u64>,
    /// Created within this many milliseconds before now.
    pub within_ms: Option<u64>,
    /// Created before, in milliseconds since the epoch.
    pub until: Option<u64>,
    /// Older than this deployment: the next page after one that ended with it.
    pub before: Option<String>,
    /// At most this many (50 by default, at most 1000).
    pub limit: Option<u32>,
}

async fn deployments(
    State(state): State<AppState>,
    Query(query): Query<DeploymentsQuery>,
) -> Result<Json<Vec<DeploymentView>>, ApiError> {
    Ok(Json(deployment_views(&state, &query)?))
}

/// The deployments `query` selects, newest first; a filter that cannot be one (an unknown
/// status, a page after a deployment that does not exist) is refused with what to do.
pub fn deployment_views(
    state: &AppState,
    query: &DeploymentsQuery,
) -> Result<Vec<DeploymentView>, ApiError> {
    let group = match query.group.as_deref().map(|g| g.split_once('/')) {
        None => None,
        Some(Some(pair)) => Some(pair),
        // Not `application/group`: no group's name, so no deployment's.
        Some(None) => return Ok(Vec::new()),
    };
    if let Some(status) = &query.status
        && model::DeploymentStatus::parse(status).is_none()
    {
        let known: Vec<&str> = model::DeploymentStatus::ALL.iter().map(|s| s.as_str()).collect();
        return Err(ApiError::bad_request(format!(
            "status `{status}` is not a deployment status; use one of {}",
            known.join(", ")
        )));
    }
    let within = query.within_ms.map(|ms| crate::clock::now().as_millis().saturating_sub(ms));
    let history = store::DeploymentHistory {
        group,
        status: query.status.as_deref(),
        since: query.since.max(within),
        until: query.until,
        before: query.before.as_deref(),
        limit: query.limit.unwrap_or(50).min(1000),
    };
    let rows = state.store.read(|tx| {
        if let Some(before) = history.before
            && tx.deployment_get(before)?.is_none()
        {
            return Ok(None);
        }
        tx.deployment_history(&history).map(Some)
    })?;
    let Some(rows) = rows else {
        let before = history.before.unwrap_or_default();
        return Err(ApiError::not_found(format!(
            "no deployment `{before}` to list the deployments older than; page with the id of \
             the last deployment of the page before"
        )));
    };
    rows.iter().map(|row| engine::deployment_view(&state.store, &state.shared, &row.id)).collect()
}

// -- What the console reads beside the API's answers (the same read models).

/// Every service as `GET /v1/services` answers it.
pub fn service_views(state: &AppState) -> Result<Vec<ServiceView>, ApiError> {
    let snapshot = snapshot(state)?;
    Ok(snapshot.services.iter().map(|s| service_view(&snapshot, s)).collect())
}

/// [`service_views`] and [`deployment_group_keys`] from one read of the store.
pub fn service_views_and_group_keys(
    state: &AppState,
) -> Result<(Vec<ServiceView>, Vec<String>), ApiError> {
    let snapshot = snapshot(state)?;
    let services = snapshot.services.iter().map(|s| service_view(&snapshot, s)).collect();
    Ok((services, snapshot.groups.iter().map(|g| g.key()).collect()))
}

/// Every deployment group's `application/group`, in the order cutover.yaml declares them.
pub fn deployment_group_keys(state: &AppState) -> Result<Vec<String>, ApiError> {
    Ok(snapshot(state)?.groups.iter().map(|g| g.key()).collect())
}

/// The traffic routing of deployment config `name`, predefined or declared; `None` when it is
/// neither (any more).
pub fn routing_of(state: &AppState, name: &str) -> Result<Option<model::TrafficRouting>, ApiError> {
    let custom: Vec<DeploymentConfigDoc> =
        state.store.read(|tx| state::docs(tx, KIND_DEPLOYMENT_CONFIG))?;
    let custom: Vec<model::DeploymentConfig> = custom.iter().map(|d| d.to_model()).collect();
    Ok(config::resolve_deployment_config(name, &custom).map(|c| c.routing))
}

/// Every revision of task-definition family `family` as `GET /v1/task-definitions` answers
/// them, oldest first.
pub fn task_definition_views(
    state: &AppState,
    family: &str,
) -> Result<Vec<TaskDefinitionView>, ApiError> {
    let rows = state.store.read(|tx| tx.task_definition_list())?;
    Ok(rows.into_iter().filter(|r| r.family == family).map(task_definition_view).collect())
}

/// A deployment's events as `GET /v1/deployments/{id}/events` answers them.
pub fn deployment_event_views(state: &AppState, id: &str) -> Result<Vec<EventView>, ApiError> {
    let rows = state.store.read(|tx| tx.event_list(id, 0))?;
    Ok(rows
        .into_iter()
        .map(|e| EventView { seq: e.seq, at: e.at, kind: e.kind, message: e.message })
        .collect())
}

/// Every declared target group's name.
pub fn target_group_names(state: &AppState) -> Result<Vec<String>, ApiError> {
    let docs: Vec<TargetGroupDoc> = state.store.read(|tx| state::docs(tx, KIND_TARGET_GROUP))?;
    Ok(docs.into_iter().map(|d| d.name).collect())
}

/// The datapoints of each `(metric, statistic)` in `period`s over the last `since`, from the
/// metric store `GET /v1/metrics/query` reads, with the time they were read at (the control
/// plane's clock).
pub fn recent_datapoints(
    state: &AppState,
    queries: &[(alarms::MetricId, alarms::Statistic)],
    period: alarms::Period,
    since: Duration,
) -> (model::Timestamp, Vec<Vec<alarms::Datapoint>>) {
    let now = crate::clock::now();
    let from = model::Timestamp(now.as_millis().saturating_sub(since.as_millis() as u64));
    let monitor = state.shared.monitor.lock().unwrap_or_else(|p| p.into_inner());
    let read = |(id, statistic): &(alarms::MetricId, alarms::Statistic)| {
        let series = monitor.store().series(id);
        series.and_then(|s| s.datapoints(period, *statistic, from, now).ok()).unwrap_or_default()
    };
    (now, queries.iter().map(read).collect())
}

async fn create_deployment(
    State(state): State<AppState>,
    Json(request): Json<CreateDeploymentRequest>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    Ok((StatusCode::CREATED, send(&state, Command::CreateDeployment(request)).await?))
}

async fn deployment(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    Ok(Json(engine::deployment_view(&state.store, &state.shared, &id)?))
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: i64,
}

async fn deployment_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    let (rows, last_seq) =
        state.store.read(|tx| Ok((tx.event_list(&id, query.after)?, tx.event_last_seq()?)))?;
    let mut events: Vec<EventView> = rows
        .into_iter()
        .map(|e| EventView { seq: e.seq, at: e.at, kind: e.kind, message: e.message })
        .collect();
    // Events the store could not take yet (it cannot be written) are shown all the same.
    if let Some(outage) = &*state.shared.store_outage.read().unwrap_or_else(|p| p.into_inner()) {
        events.extend(outage.event_views(&id, last_seq, query.after));
    }
    Ok(Json(events))
}

async fn stop(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Option<Json<StopRequest>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rollback = body.and_then(|Json(b)| b.rollback);
    send(&state, Command::Stop { id, rollback }).await
}

async fn rollback(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    send(&state, Command::Stop { id, rollback: Some(true) }).await
}

async fn continue_deployment(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(request): Json<ContinueRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    send(&state, Command::Continue { id, wait: request.wait }).await
}

async fn hook_status(
    State(state): State<AppState>,
    Path((id, execution_id)): Path<(String, String)>,
    Json(request): Json<HookStatusRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let succeeded = match request.status.as_str() {
        "Succeeded" => true,
        "Failed" => false,
        other => {
            return Err(ApiError::bad_request(format!(
                "status `{other}` is not Succeeded or Failed"
            )));
        }
    };
    let message =
        request.message.unwrap_or_else(|| format!("reported {} through the API", request.status));
    send(&state, Command::HookStatus { id, execution_id, succeeded, message }).await
}

async fn shutdown(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    send(&state, Command::Shutdown).await
}

/// The data plane's metrics; with load balancers on the swarm's nodes, the sum alarms read and
/// each node's own (`fleet::decide::fleet_metrics`).
async fn metrics_json(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let manager = state.lb.metrics_json().await.map_err(|err| {
        ApiError::new(StatusCode::BAD_GATEWAY, format!("load balancer metrics: {err}"))
    })?;
    let nodes = match state.lb.fleet() {
        Some(fleet) => fleet.metrics().await,
        None => Vec::new(),
    };
    if nodes.is_empty() {
        return Ok(Json(manager));
    }
    let manager: routes::MetricsSnapshot = serde_json::from_value(manager)?;
    Ok(Json(serde_json::to_value(crate::fleet::decide::fleet_metrics(manager, nodes))?))
}

async fn metrics_text(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.lb.metrics_text().await.map_err(|err| {
        ApiError::new(StatusCode::BAD_GATEWAY, format!("load balancer metrics: {err}"))
    })?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

fn alarm_view(key: &str, alarm: &alarms::Alarm) -> AlarmView {
    let spec = alarm.spec();
    AlarmView {
        key: key.to_string(),
        name: spec.name.clone(),
        metric: spec.metric.to_string(),
        statistic: spec.statistic.to_string(),
        period_secs: spec.period.secs().into(),
        evaluation_periods: spec.evaluation_periods,
        datapoints_to_alarm: spec.datapoints_to_alarm(),
        comparison: spec.comparison_operator.to_string(),
        threshold: spec.threshold,
        treat_missing_data: spec.treat_missing_data.as_str().to_string(),
        state: alarm.state().as_str().to_string(),
        reason: alarm.reason().to_string(),
        state_since: alarm.state_since().as_millis(),
        reason_data: alarm.reason_data().and_then(|d| serde_json::to_value(d).ok()),
        history: alarm
            .history()
            .rev()
            .map(|t| AlarmTransitionView {
                at: t.time.as_millis(),
                from: t.from.as_str().to_string(),
                to: t.to.as_str().to_string(),
                reason: t.reason.clone(),
            })
            .collect(),
    }
}

/// Every alarm instance: the live ones from the monitor, and declared alarms not evaluated yet.
pub fn alarm_views(state: &AppState) -> Result<Vec<AlarmView>, ApiError> {
    let declared: Vec<crate::monitor::AlarmDoc> =
        state.store.read(|tx| state::docs(tx, KIND_ALARM))?;
    let saved: Vec<(String, String)> = state.store.read(|tx| tx.resource_list(KIND_ALARM_STATE))?;
    let monitor = state.shared.monitor.lock().unwrap_or_else(|p| p.into_inner());
    let mut views: Vec<AlarmView> =
        monitor.alarms().iter().map(|(key, alarm)| alarm_view(key, alarm)).collect();
    for (key, body) in saved {
        if views.iter().any(|v| v.key == key) {
            continue;
        }
        if let Ok(alarm) = serde_json::from_str::<alarms::Alarm>(&body) {
            views.push(alarm_view(&key, &alarm));
        }
    }
    for doc in declared {
        if !views.iter().any(|v| v.name == doc.spec.name)
            && let Ok(alarm) = alarms::Alarm::new(doc.spec.clone(), model::Timestamp::ZERO)
        {
            let mut view = alarm_view(&doc.spec.name, &alarm);
            view.reason = match doc.dimension {
                    crate::monitor::DimensionDoc::Green => "watches the green target group of each deployment that lists it; none is running".into(),
                    _ => "not evaluated yet".into(),
                };
            view.state_since = 0;
            views.push(view);
        }
    }
    views.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(views)
}

async fn alarm_list(State(state): State<AppState>) -> Result<Json<Vec<AlarmView>>, ApiError> {
    Ok(Json(alarm_views(&state)?))
}

async fn alarm_get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<AlarmView>>, ApiError> {
    let views: Vec<AlarmView> =
        alarm_views(&state)?.into_iter().filter(|v| v.name == name || v.key == name).collect();
    if views.is_empty() {
        return Err(ApiError::not_found(format!(
            "no alarm `{name}`; `cutover alarms list` shows them"
        )));
    }
    Ok(Json(views))
}

#[derive(Deserialize)]
struct MetricQuery {
    metric: String,
    target_group: Option<String>,
    service: Option<String>,
    #[serde(default = "default_statistic")]
    statistic: String,
    #[serde(default = "default_period")]
    period: u32,
    /// How far back, in seconds.
    #[serde(default = "default_since")]
    since: u64,
}

fn default_statistic() -> String {
    "Sum".into()
}

fn default_period() -> u32 {
    1
}

fn default_since() -> u64 {
    300
}

async fn metrics_query(
    State(state): State<AppState>,
    Query(query): Query<MetricQuery>,
) -> Result<Json<MetricQueryView>, ApiError> {
    let statistic: alarms::Statistic = query
        .statistic
        .parse()
        .map_err(|err| ApiError::bad_request(format!("statistic: {err}")))?;
    let period = alarms::Period::from_secs(query.period)
        .map_err(|err| ApiError::bad_request(format!("period: {err}")))?;
    let mut id = alarms::MetricId::new(query.metric.clone());
    if let Some(tg) = &query.target_group {
        id = id.with("target_group", tg.as_str());
    }
    if let Some(service) = &query.service {
        id = id.with("service", service.as_str());
    }
    let now = crate::clock::now();
    let from = model::Timestamp(now.as_millis().saturating_sub(query.since.saturating_mul(1000)));
    let monitor = state.shared.monitor.lock().unwrap_or_else(|p| p.into_inner());
    let datapoints = match monitor.store().series(&id) {
        Some(series) => series
            .datapoints(period, statistic, from, now)
            .map_err(|err| ApiError::bad_request(format!("period: {err}")))?
            .into_iter()
            .map(|d| MetricPointView {
                start: d.start.as_millis(),
                value: d.value,
                sample_count: d.sample_count,
            })
            .collect(),
        None => Vec::new(),
    };
    Ok(Json(MetricQueryView {
        metric: id.to_string(),
        statistic: statistic.to_string(),
        period_secs: period.secs().into(),
        datapoints,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, set: &str, last_status: model::TaskStatus) -> store::TaskRow {
        store::TaskRow {
            id: id.into(),
            task_set_id: set.into(),
            service: "web".into(),
            runtime: model::RuntimeKind::Process,
            last_status,
            desired_status: if last_status == model::TaskStatus::Stopped {
                model::DesiredStatus::Stopped
            } else {
                model::DesiredStatus::Running
            },
            health: model::TaskHealth::Healthy,
            handle: None,
            addr: None,
            stop_at: None,
            stopped_reason: None,
            created_at: 1,
            started_at: Some(2),
            stopped_at: None,
        }
    }

    #[test]
    fn stopped_tasks_are_listed_only_with_all_and_keep_their_task_definition_once_their_set_is_gone()
     {
        let tasks = || {
            vec![
                task("t-blue", "ts-blue", model::TaskStatus::Stopped),
                task("t-lost", "ts-never-recorded", model::TaskStatus::Stopped),
                task("t-green", "ts-green", model::TaskStatus::Running),
            ]
        };
        let sets = [store::TaskSetRow {
            id: "ts-green".into(),
            service: "web".into(),
            task_definition: "web:2".into(),
            target_group: Some("web-green".into()),
            status: model::TaskSetStatus::Primary,
            deployment_id: None,
            desired_count: 1,
            created_at: 1,
            updated_at: 1,
        }];
        let retired = BTreeMap::from([("ts-blue".to_string(), "web:1".to_string())]);
        let shown = |all| {
            let query = TaskQuery { service: None, all };
            task_views(tasks(), &sets, &retired, &query)
                .into_iter()
                .map(|t| format!("{} {} {} {}", t.id, t.last_status, t.task_definition, t.health))
                .collect::<Vec<_>>()
        };
        assert_eq!(shown(false), ["t-green RUNNING web:2 HEALTHY"]);
        assert_eq!(
            shown(true),
            [
                "t-blue STOPPED web:1 UNKNOWN",
                "t-lost STOPPED unknown UNKNOWN",
                "t-green RUNNING web:2 HEALTHY"
            ]
        );
    }
}
