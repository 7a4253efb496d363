//! The pipeline API as an axum `Router` the control plane merges into its server.

use pipeline::definition::{ActionKind, PipelineDecl, SourceLocation};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use pipeline::{ExecutionRecord, Input, RetryMode};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::api::{self, ExecutionSummary};
use crate::core::{Decision, Msg};
use crate::driver::Request as Ask;
use crate::{Error, Pipelines, Shared, git, jobs};
use model::access::Principal;

/// Most executions `executions` lists.
const EXECUTIONS_LIST_MAX: u32 = 100;
/// Largest log returned without `follow`.
const LOG_BYTES_MAX: u64 = 16 * 1024 * 1024;

pub fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

pub fn err_response(err: Error) -> Response {
    if let Error::Store(err) = &err
        && err.is_write_failure()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the data directory cannot be written ({err}); nothing was changed: free space \
                 there (`cutover status` says since when), then retry"
            ),
        );
    }
    let status = match &err {
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Invalid(_) => StatusCode::BAD_REQUEST,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::Internal(_)
        | Error::Store(_)
        | Error::Git(_)
        | Error::Artifact(_)
        | Error::InvalidArtifactId(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, err.to_string())
}

/// The token from `Authorization: Bearer T` or HTTP Basic (any user, the token as password).
fn presented_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    if let Some(t) = value.strip_prefix("Bearer ") {
        return Some(t.trim().to_string());
    }
    let b = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(b.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':').map_or(text.clone(), |(_, p)| p.to_string()))
}

/// The Basic user name (what git sends), for "who pushed".
pub fn user_of(headers: &HeaderMap) -> String {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return "anonymous".into();
    };
    if let Some(b) = value.trim().strip_prefix("Basic ")
        && let Ok(d) = base64::engine::general_purpose::STANDARD.decode(b.trim())
    {
        let text = String::from_utf8_lossy(&d);
        let user = text.split(':').next().unwrap_or("");
        let user: String = user.chars().filter(|c| !c.is_control()).take(64).collect();
        if !user.is_empty() {
            return user;
        }
    }
    "api".into()
}

/// What an execution started through the API shows where a push shows its pusher: an API token
/// names nobody, git-style Basic credentials name their user.
fn started_manually_by(headers: &HeaderMap) -> String {
    match user_of(headers).as_str() {
        "anonymous" | "api" => "started manually".into(),
        user => format!("started manually by {user}"),
    }
}

async fn auth(State(inner): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(token) = &inner.cfg.token {
        let ok = presented_token(req.headers())
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes())));
        if !ok {
            let mut resp = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API token: send `Authorization: Bearer TOKEN`, or for git use \
                 http://x:TOKEN@host/git/NAME.git"
                    .into(),
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"cutover\"".parse().expect("static"),
            );
            return resp;
        }
    }
    next.run(req).await
}

/// Every route of the pipeline API. `/v1/webhooks/{pipeline}` is authenticated by its signature;
/// the others by the API token (when one is configured).
pub fn router(ci: &Pipelines) -> Router {
    let inner = ci.ctx();
    let authed = Router::new()
        .route("/v1/repos", post(create_repo).get(list_repos))
        .route("/v1/repos/{name}", get(get_repo).delete(delete_repo))
        .route("/git/{*rest}", any(crate::githttp::handle))
        .route("/v1/pipelines", get(list_pipelines))
        .route("/v1/pipelines/{name}", get(get_pipeline))
        .route("/v1/pipelines/{name}/start", post(start_pipeline))
        .route("/v1/pipelines/{name}/executions", get(list_executions))
        .route("/v1/pipelines/{name}/executions/{id}", get(get_execution))
        .route("/v1/pipelines/{name}/executions/{id}/stop", post(stop_execution))
        .route("/v1/pipelines/{name}/executions/{id}/retry", post(retry_execution))
        .route("/v1/approvals/{execution}/approve", post(approve))
        .route("/v1/approvals/{execution}/reject", post(reject))
        .route("/v1/builds/{id}", get(get_build))
        .route("/v1/builds/{id}/logs", get(build_logs))
        .layer(middleware::from_fn_with_state(inner.clone(), auth));
    Router::new()
        .route("/v1/webhooks/{pipeline}", post(crate::webhook::handle))
        .merge(authed)
        .with_state(inner)
}

// -- repositories

fn repo_view(inner: &Shared, name: &str, created_at: u64) -> api::Repository {
    let branches = git::git(
        Some(&inner.repo_dir(name)),
        &["for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads"],
    )
    .unwrap_or_default()
    .lines()
    .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
    .collect();
    api::Repository { name: name.into(), clone_url: inner.clone_url(name), created_at, branches }
}

async fn create_repo(
    State(inner): State<Shared>,
    Json(body): Json<api::CreateRepository>,
) -> Response {
    let i = inner.clone();
    let name = body.name.clone();
    match tokio::task::spawn_blocking(move || i.init_repository(&name)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return err_response(err),
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
    let name = body.name.clone();
    match inner.ask(|reply| Ask::CreateRepository { name, reply }).await.and_then(|r| r) {
        Ok(created) => {
            let status = if created { StatusCode::CREATED } else { StatusCode::OK };
            (status, Json(repo_view(&inner, &body.name, inner.now().as_millis()))).into_response()
        }
        Err(err) => err_response(err),
    }
}

async fn list_repos(State(inner): State<Shared>) -> Response {
    match inner.store.read(|tx| tx.ci_repository_list()) {
        Ok(rows) => Json(rows.iter().map(|(n, c)| repo_view(&inner, n, *c)).collect::<Vec<_>>())
            .into_response(),
        Err(err) => err_response(err.into()),
    }
}

async fn get_repo(State(inner): State<Shared>, Path(name): Path<String>) -> Response {
    match inner.store.read(|tx| tx.ci_repository_list()) {
        Ok(rows) => match rows.iter().find(|(n, _)| *n == name) {
            Some((n, c)) => Json(repo_view(&inner, n, *c)).into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                format!("no repository `{name}`; create it with `cutover repos create {name}`"),
            ),
        },
        Err(err) => err_response(err.into()),
    }
}

/// Deletes the repository and its git data; 409 while a pipeline builds from it.
async fn delete_repo(State(inner): State<Shared>, Path(name): Path<String>) -> Response {
    let n = name.clone();
    if let Err(err) =
        inner.ask(|reply| Ask::DeleteRepository { name: n, reply }).await.and_then(|r| r)
    {
        return err_response(err);
    }
    let (i, n) = (inner.clone(), name.clone());
    match tokio::task::spawn_blocking(move || i.remove_repository_dir(&n)).await {
        Ok(Ok(())) => Json(serde_json::json!({ "name": name, "deleted": true })).into_response(),
        Ok(Err(err)) => err_response(err),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

// -- pipelines and executions

fn ms(t: Option<model::Timestamp>) -> Option<u64> {
    t.map(|t| t.as_millis())
}

pub(crate) fn summary(pipeline: &str, rec: &ExecutionRecord) -> ExecutionSummary {
    ExecutionSummary {
        id: rec.id.clone(),
        pipeline: pipeline.into(),
        status: rec.status.as_str().into(),
        commit: rec.revision.commit.clone(),
        branch: rec.revision.branch.clone(),
        pushed_by: rec.revision.pushed_by.clone(),
        message: rec.revision.message.clone(),
        started_at: rec.started.as_millis(),
        ended_at: ms(rec.ended),
        status_message: rec.message.clone(),
    }
}

/// What the approval `stage`/`action` of `definition` asks, when it asks anything.
fn approval_request(
    definition: Option<&PipelineDecl>,
    stage: &str,
    action: &str,
) -> Option<api::ApprovalRequest> {
    let declared = definition?.stages.iter().find(|s| s.name == stage)?;
    let declared = declared.actions.iter().find(|a| a.name == action)?;
    match &declared.kind {
        ActionKind::Approval(approval)
            if approval.comment.is_some() || approval.review_url.is_some() =>
        {
            Some(api::ApprovalRequest {
                comment: approval.comment.clone(),
                review_url: approval.review_url.clone(),
            })
        }
        _ => None,
    }
}

/// `rec` as the API answers it; an approval in progress carries what `definition` (the one the
/// running executions run: `stored::definition`) has it ask.
pub fn execution_view(
    pipeline: &str,
    rec: &ExecutionRecord,
    definition: Option<&PipelineDecl>,
) -> api::Execution {
    let mut deployments = Vec::new();
    let mut builds = Vec::new();
    let stages = rec
        .stages
        .iter()
        .map(|s| api::Stage {
            name: s.name.clone(),
            status: s.status.map(|st| st.as_str().into()),
            attempt: s.attempt,
            started_at: ms(s.started),
            ended_at: ms(s.ended),
            duration_ms: s.started.zip(s.ended).map(|(a, b)| b.since(a).as_millis() as u64),
            message: s.message.clone(),
            actions: s
                .actions
                .iter()
                .map(|a| {
                    if let Some(r) = &a.external_ref {
                        if a.kind.is_deploy() {
                            deployments.push(r.clone());
                        } else if matches!(
                            a.kind,
                            pipeline::ActionKind::Build | pipeline::ActionKind::Test
                        ) {
                            builds.push(r.clone());
                        }
                    }
                    api::Action {
                        name: a.name.clone(),
                        kind: a.kind.as_str().into(),
                        status: a.status.map(|st| st.as_str().into()),
                        run: a.run,
                        started_at: ms(a.started),
                        ended_at: ms(a.ended),
                        duration_ms: a
                            .started
                            .zip(a.ended)
                            .map(|(x, y)| y.since(x).as_millis() as u64),
                        message: a.message.clone(),
                        external_ref: a.external_ref.clone(),
                        decision: a.decision.as_ref().map(|d| api::Decision {
                            approved: d.approved,
                            by: d.by.clone(),
                            comment: d.comment.clone(),
                        }),
                        request: (a.status == Some(pipeline::ActionStatus::InProgress))
                            .then(|| approval_request(definition, &s.name, &a.name))
                            .flatten(),
                    }
                })
                .collect(),
        })
        .collect();
    api::Execution {
        summary: summary(pipeline, rec),
        stages,
        deployments,
        builds,
        artifacts: rec.artifacts.iter().map(|(n, id)| (n.clone(), id.as_str().into())).collect(),
    }
}

pub(crate) fn record_of(row: &store::CiExecutionRow) -> Option<ExecutionRecord> {
    serde_json::from_str(&row.record).ok()
}

async fn list_pipelines(State(inner): State<Shared>) -> Response {
    let names: Vec<String> = inner.definitions().await.into_iter().map(|d| d.name).collect();
    let mut out = Vec::new();
    for n in names {
        if let Some(p) = pipeline_view(&inner, &n).await {
            out.push(p);
        }
    }
    Json(out).into_response()
}

async fn pipeline_view(inner: &Shared, name: &str) -> Option<api::PipelineSummary> {
    let n = name.to_string();
    let (def, version, pending) =
        inner.ask(|reply| Ask::Pipeline { name: n, reply }).await.ok().flatten()?;
    let latest = inner
        .store
        .read(|tx| tx.ci_execution_list(name, 1))
        .ok()
        .and_then(|rows| rows.first().and_then(record_of))
        .map(|rec| summary(name, &rec));
    Some(api::PipelineSummary {
        name: name.into(),
        version,
        source: match &def.source.location {
            SourceLocation::Repository(r) => format!("repository:{r}"),
            SourceLocation::Url { url, .. } => url.clone(),
        },
        branch: def.source.branch.clone(),
        execution_mode: def.execution_mode.as_str().into(),
        stages: def.machine_spec().stages.into_iter().map(|s| s.name).collect(),
        latest_execution: latest,
        update_pending: pending,
    })
}

async fn get_pipeline(State(inner): State<Shared>, Path(name): Path<String>) -> Response {
    match pipeline_view(&inner, &name).await {
        Some(p) => Json(p).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no pipeline `{name}`")),
    }
}

async fn list_executions(State(inner): State<Shared>, Path(name): Path<String>) -> Response {
    if inner.definition(&name).await.is_none() {
        return error(StatusCode::NOT_FOUND, format!("no pipeline `{name}`"));
    }
    match inner.store.read(|tx| tx.ci_execution_list(&name, EXECUTIONS_LIST_MAX)) {
        Ok(rows) => {
            Json(rows.iter().filter_map(record_of).map(|r| summary(&name, &r)).collect::<Vec<_>>())
                .into_response()
        }
        Err(err) => err_response(err.into()),
    }
}

async fn get_execution(
    State(inner): State<Shared>,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    match inner.store.read(|tx| tx.ci_execution_get(&id)) {
        Ok(Some(row)) if row.pipeline == name => match record_of(&row) {
            Some(rec) => {
                let definition = definition_of(&inner.store, &name);
                Json(execution_view(&name, &rec, definition.as_ref())).into_response()
            }
            None => {
                error(StatusCode::INTERNAL_SERVER_ERROR, "stored execution is unreadable".into())
            }
        },
        Ok(_) => error(StatusCode::NOT_FOUND, format!("pipeline `{name}` has no execution `{id}`")),
        Err(err) => err_response(err.into()),
    }
}

async fn start_pipeline(
    State(inner): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Option<Json<api::StartPipeline>>,
) -> Response {
    let Some(def) = inner.definition(&name).await else {
        return error(StatusCode::NOT_FOUND, format!("no pipeline `{name}`"));
    };
    let branch = def.source.branch.clone();
    let commit = body.and_then(|b| b.0.commit);
    let (repo, url) = match &def.source.location {
        SourceLocation::Repository(r) => (inner.repo_dir(r), None),
        SourceLocation::Url { url, .. } => (inner.mirror_dir(&name), Some(url.clone())),
    };
    let (r, b) = (repo.clone(), branch.clone());
    let resolved = match url {
        Some(_) => inner.in_mirror(&name, move |m| resolve_commit(m, url, &b, commit)).await,
        None => tokio::task::spawn_blocking(move || resolve_commit(&r, url, &b, commit))
            .await
            .map_err(|e| Error::Internal(e.to_string())),
    };
    let commit = match resolved {
        Ok(Ok(c)) => c,
        Ok(Err(err)) => return error(StatusCode::CONFLICT, err.to_string()),
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    };
    match inner.start(&name, repo, commit, branch, started_manually_by(&headers), None).await {
        Ok(id) => {
            (StatusCode::CREATED, Json(serde_json::json!({ "execution_id": id }))).into_response()
        }
        Err(err) => err_response(err),
    }
}

/// Why a manual start found no commit to build.
#[derive(Debug, thiserror::Error)]
enum NoCommit {
    #[error(transparent)]
    Fetch(#[from] git::GitError),
    #[error("commit `{0}` not found in the source")]
    Unknown(String),
    #[error("the source has no branch `{0}` yet; push to it first")]
    NoBranch(String),
}

/// The commit a manual start builds: the one asked for, or the branch's head (fetched first for
/// a URL source). Blocking.
fn resolve_commit(
    repo: &std::path::Path,
    url: Option<String>,
    branch: &str,
    commit: Option<String>,
) -> Result<String, NoCommit> {
    if let Some(url) = url {
        git::fetch_into_mirror(repo, &url, branch)?;
    }
    match commit {
        Some(c) => git::git(Some(repo), &["rev-parse", "--verify", &format!("{c}^{{commit}}")])
            .map(|s| s.trim().to_string())
            .map_err(|_| NoCommit::Unknown(c)),
        None => git::local_head(repo, branch)?.ok_or_else(|| NoCommit::NoBranch(branch.into())),
    }
}

/// The definition of `pipeline` its running executions run; `None` when it cannot be read, so
/// an answer then lacks only what an approval in progress asks.
pub(crate) fn definition_of(store: &store::Store, pipeline: &str) -> Option<PipelineDecl> {
    store.read(|tx| Ok(crate::stored::definition(tx, pipeline))).ok()?.ok()?
}

/// The execution as a command left it, once written.
fn execution_response(
    store: &store::Store,
    pipeline: &str,
    id: &str,
    outcome: Result<Option<ExecutionRecord>, Error>,
) -> Response {
    match outcome {
        Ok(Some(rec)) => {
            let definition = definition_of(store, pipeline);
            Json(execution_view(pipeline, &rec, definition.as_ref())).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no execution `{id}`")),
        Err(err) => err_response(err),
    }
}

async fn stop_execution(
    State(inner): State<Shared>,
    Path((name, id)): Path<(String, String)>,
    body: Option<Json<api::StopExecution>>,
) -> Response {
    let body = body.map(|b| b.0).unwrap_or_default();
    let reason = body.reason.unwrap_or_else(|| "stopped through the API".into());
    let input = Input::Stop { execution_id: id.clone(), abandon: body.abandon, reason };
    let outcome = inner.handle(Msg::Command { pipeline: name.clone(), input }).await;
    execution_response(&inner.store, &name, &id, outcome)
}

async fn retry_execution(
    State(inner): State<Shared>,
    Path((name, id)): Path<(String, String)>,
    Json(body): Json<api::RetryExecution>,
) -> Response {
    let mode = match body.mode.as_deref() {
        None | Some("FAILED_ACTIONS") => RetryMode::FailedActions,
        Some("ALL_ACTIONS") => RetryMode::AllActions,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("mode `{other}`: use FAILED_ACTIONS or ALL_ACTIONS"),
            );
        }
    };
    let input = Input::Retry { execution_id: id.clone(), stage: body.stage, mode };
    let outcome = inner.handle(Msg::Command { pipeline: name.clone(), input }).await;
    execution_response(&inner.store, &name, &id, outcome)
}

/// Who an approval's decision is recorded as: the authenticated caller where cutover's access
/// layer stands in front (the API of `cutover up`), whatever the body says; the body's `by`
/// (else `api`) only where nothing authenticates, as in this crate's own server.
fn decided_by(principal: Option<Principal>, claimed: Option<String>) -> String {
    principal.map(|Principal(actor)| actor).or(claimed).unwrap_or_else(|| "api".into())
}

async fn decide(
    inner: Shared,
    execution: String,
    principal: Option<Principal>,
    body: api::ApprovalDecision,
    approved: bool,
) -> Response {
    let pipeline = match inner.store.read(|tx| tx.ci_execution_get(&execution)) {
        Ok(Some(row)) => row.pipeline,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no execution `{execution}`")),
        Err(err) => return err_response(err.into()),
    };
    let decision = Decision {
        execution_id: execution.clone(),
        stage: body.stage,
        action: body.action,
        approved,
        comment: body.comment,
        by: decided_by(principal, body.by),
    };
    let outcome = inner.handle(Msg::Decide { pipeline: pipeline.clone(), decision }).await;
    execution_response(&inner.store, &pipeline, &execution, outcome)
}

async fn approve(
    State(inner): State<Shared>,
    Path(execution): Path<String>,
    principal: Option<Extension<Principal>>,
    body: Option<Json<api::ApprovalDecision>>,
) -> Response {
    let principal = principal.map(|Extension(p)| p);
    decide(inner, execution, principal, body.map(|b| b.0).unwrap_or_default(), true).await
}

async fn reject(
    State(inner): State<Shared>,
    Path(execution): Path<String>,
    principal: Option<Extension<Principal>>,
    body: Option<Json<api::ApprovalDecision>>,
) -> Response {
    let principal = principal.map(|Extension(p)| p);
    decide(inner, execution, principal, body.map(|b| b.0).unwrap_or_default(), false).await
}

// -- builds

async fn get_build(State(inner): State<Shared>, Path(id): Path<String>) -> Response {
    match inner.store.read(|tx| tx.ci_build_get(&id)) {
        Ok(Some(row)) => match serde_json::from_str::<api::Build>(&row.body) {
            Ok(b) => Json(b).into_response(),
            Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
        },
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no build `{id}`")),
        Err(err) => err_response(err.into()),
    }
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    follow: bool,
}

async fn build_logs(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Response {
    match inner.store.read(|tx| tx.ci_build_get(&id)) {
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no build `{id}`")),
        Err(err) => return err_response(err.into()),
    }
    let path = jobs::log_path(inner.data_dir(), &id);
    if !q.follow {
        let text = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut buf = Vec::new();
            if let Ok(f) = std::fs::File::open(&path) {
                let _ = f.take(LOG_BYTES_MAX).read_to_end(&mut buf);
            }
            buf
        })
        .await
        .unwrap_or_default();
        return ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response();
    }
    // Follow: send what is there, then what is appended, until the build has ended and the
    // file has nothing more.
    let state = (inner, id, path, 0u64, false);
    let stream =
        futures_util::stream::unfold(state, |(inner, id, path, offset, done)| async move {
            if done {
                return None;
            }
            loop {
                let ended = inner
                    .store
                    .read(|tx| tx.ci_build_get(&id))
                    .ok()
                    .flatten()
                    .is_none_or(|r| r.ended_at.is_some());
                let chunk = read_from(&path, offset);
                if !chunk.is_empty() {
                    let next = offset + chunk.len() as u64;
                    return Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from(chunk)),
                        (inner, id, path, next, false),
                    ));
                }
                if ended {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(stream))
        .into_response()
}

fn read_from(path: &std::path::Path, offset: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return Vec::new() };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(256 * 1024).read_to_end(&mut buf);
    buf
}
