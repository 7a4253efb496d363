//! Team access (issue 15): who may call which endpoint, named credentials and the audit trail.
//!
//! The decision is pure ([`decision::decide`] over [`permissions::ENDPOINTS`]); this module is
//! the shell around it: [`authorize`] is the layer `serve` puts around the merged router (the
//! control plane's and the pipelines'), so no endpoint is reached without its permission.
//!
//! Credentials and the audit trail are tables of their own (`store::access`), written here and
//! not through the engine's loop: no deployment decision reads them, so they cannot interleave
//! with one.

mod ambient;
pub mod console_session;
pub mod console_sso;
pub mod credentials;
pub mod decision;
pub mod oidc;
pub mod permissions;
mod reference;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::http::AppState;
use credentials::{Caller, StoredBindings};
use decision::{Binding, Decision};
use permissions::{Matched, Permission, Resource, ResourceFrom, Rule};

pub use reference::reference_markdown;

/// Largest request body read to find its deployment group (`POST /v1/deployments`), and largest
/// `apply` answer read to record its plan.
const INSPECTED_BODY_MAX: usize = 16 * 1024 * 1024;

/// How often a credential's last use is written at most.
const LAST_USE_RESOLUTION_MS: u64 = 10_000;

/// `POST /v1/tokens`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateTokenRequest {
    pub name: String,
    #[serde(default)]
    pub role: Option<String>,
    /// Permissions one by one, instead of a role.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Globs over resource names; none is `*`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Milliseconds from now; none never expires.
    #[serde(default)]
    pub expires_in_ms: Option<u64>,
}

/// A credential as `tokens list` shows it (never its secret nor its hash).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenView {
    pub name: String,
    pub bindings: Vec<String>,
    /// A single sign-on session's user, and the provider they signed in through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub last_used_at: Option<u64>,
}

/// The answer to `POST /v1/tokens`: the one time the secret is shown.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub token: TokenView,
    pub secret: String,
}

/// One entry of the audit trail, as `GET /v1/audit` returns it (one JSON line of an export).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    /// Milliseconds since the epoch.
    pub at: u64,
    pub actor: String,
    /// The permission the request needed (or `webhook`).
    pub action: String,
    pub resource: String,
    pub source: String,
    pub outcome: String,
    /// `request` (method and path); for `apply` its `plan` and `applied`, for `deploy` the
    /// `deployment`.
    pub detail: serde_json::Value,
}

impl From<store::AuditRow> for AuditEntry {
    fn from(row: store::AuditRow) -> AuditEntry {
        AuditEntry {
            seq: row.seq,
            at: row.at,
            actor: row.actor,
            action: row.action,
            resource: row.resource,
            source: row.source,
            outcome: row.outcome,
            detail: row
                .detail
                .and_then(|d| serde_json::from_str(&d).ok())
                .unwrap_or(serde_json::Value::Null),
        }
    }
}

/// The layer around every route: finds the endpoint, the caller and the resource, decides, and
/// records changes and refusals in the audit trail.
pub async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method =
        if request.method() == Method::HEAD { Method::GET } else { request.method().clone() };
    let path = request.uri().path().to_string();
    let Some(matched) = permissions::endpoint_of(method.as_str(), &path, request.uri().query())
    else {
        // As the router answers a path it does not have (the CLI says what to check); a route
        // the permission map does not list is never reached.
        return StatusCode::NOT_FOUND.into_response();
    };
    let source = request
        .extensions()
        .get::<ConnectInfo<crate::tls::Peer>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.0.ip().to_string());
    let (permission, from) = match matched.endpoint.rule {
        Rule::Needs(permission, from) => (permission, from),
        Rule::Public => return webhook(&state, request, next, &matched, source).await,
        // The login handler records what came of it, with the provider.
        Rule::SignIn => return next.run(request).await,
    };
    let (caller, session) = caller(&state, request.headers());
    let authority = request.uri().authority().map(|a| a.as_str().to_string());
    let ambient_refusal = matches!(caller, Caller::Local)
        .then(|| ambient::refusal(authority.as_deref(), request.headers()))
        .flatten();
    // A person's browser opening a page of the console: sent to sign in rather than given JSON.
    let page = (method == Method::GET && accepts_html(request.headers()))
        .then(|| request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string());
    let mut audit = Audit { state: &state, caller: &caller, permission, source, method, path };
    if let Some(why) = ambient_refusal {
        audit.record(&Resource::Any, "denied".into(), Some(serde_json::json!({"browser": why})));
        return ApiError::new(StatusCode::FORBIDDEN, why).into_response();
    }
    let Some(bindings) = caller.bindings() else {
        return match &caller {
            Caller::Hook(grant) if credentials::hook_may(grant, &audit.method, &audit.path) => {
                let response = next.run(request).await;
                audit.record(&Resource::Any, outcome(response.status()), None);
                response
            }
            _ => {
                let refused = audit.refuse_unauthenticated();
                page.map_or(refused, |page| console_session::sign_in_redirect(&page))
            }
        };
    };
    if let Some(secret) = &session
        && audit.method != Method::GET
        && !console_session::csrf_matches(request.headers(), secret)
    {
        audit.record(
            &Resource::Any,
            "denied".into(),
            Some(serde_json::json!({"csrf": "missing or wrong"})),
        );
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "this request came with a console session's cookie but without its CSRF token \
             (X-CSRF-Token): only the console's own pages may act with a session; reload the \
             page and use its buttons, or send a token in Authorization instead",
        )
        .into_response();
    }
    let (request, resource) = match resource(&state, request, &matched, from).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    match decision::decide(&bindings, permission, &resource) {
        Decision::Allow => {
            let mut request = request;
            request.extensions_mut().insert(CallerBindings(bindings));
            request.extensions_mut().insert(model::access::Principal(caller.actor()));
            audit.run(request, next, &resource).await
        }
        Decision::Deny { missing, resource, would_grant } => {
            audit.record(&resource, "denied".into(), None);
            forbidden(&caller, missing, &resource, &would_grant)
        }
    }
}

/// A webhook, which its handler authenticates by its signature: what came of it goes to the
/// audit trail all the same (a push it accepted, or a call it refused).
async fn webhook(
    state: &AppState,
    request: Request,
    next: Next,
    matched: &Matched,
    source: String,
) -> Response {
    let request_line = format!("{} {}", request.method(), request.uri().path());
    let response = next.run(request).await;
    let status = response.status();
    append(
        state,
        store::AuditRow {
            seq: 0,
            at: crate::clock::now().as_millis(),
            actor: "webhook".into(),
            action: "webhook".into(),
            resource: Resource::Pipeline(matched.param("pipeline").unwrap_or_default().into())
                .to_string(),
            source,
            outcome: if status == StatusCode::UNAUTHORIZED {
                "unauthenticated".into()
            } else {
                outcome(status)
            },
            detail: Some(serde_json::json!({ "request": request_line }).to_string()),
        },
    );
    response
}

/// Appends an entry. A store that cannot be written loses it, with a warning: refusing every
/// request then would stop rollbacks too.
fn append(state: &AppState, entry: store::AuditRow) {
    if let Err(err) = state.store.transaction(|tx| tx.audit_append(&entry)) {
        tracing::warn!(actor = %entry.actor, action = %entry.action, "audit entry lost: {err}");
    }
}

/// Whether the client asks for HTML first (a browser navigating), not JSON.
fn accepts_html(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| {
        accept.split(',').next().is_some_and(|m| m.trim().starts_with("text/html"))
    })
}

/// The bindings of the caller of an allowed request, for handlers that decide more.
#[derive(Clone, Debug)]
pub struct CallerBindings(pub Vec<Binding>);

/// The token from `Authorization: Bearer T`, or HTTP Basic with the token as password (git).
fn presented_secret(headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.trim().to_string());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':').map_or(text.clone(), |(_, password)| password.to_string()))
}

/// Who made the request: by its `Authorization` header, else by a console session's cookie
/// (then also that session's secret, whose CSRF token an action must carry).
fn caller(state: &AppState, headers: &HeaderMap) -> (Caller, Option<String>) {
    if let Some(secret) = presented_secret(headers) {
        return (caller_of_secret(state, &secret).0, None);
    }
    if let Some(secret) = console_session::session_secret(headers) {
        return (caller_of_secret(state, &secret).0, Some(secret));
    }
    let caller = if state.token.is_some() { Caller::Anonymous } else { Caller::Local };
    (caller, None)
}

/// Who holds `secret`, and when what they hold expires.
fn caller_of_secret(state: &AppState, secret: &str) -> (Caller, Option<u64>) {
    if state
        .token
        .as_ref()
        .is_some_and(|t| crate::http::constant_time_eq(t.as_bytes(), secret.as_bytes()))
    {
        return (Caller::Bootstrap, None);
    }
    if let Some(grant) = state.shared.hook_tokens.lookup(secret) {
        return (Caller::Hook(grant), None);
    }
    let now = crate::clock::now();
    let row = state.store.read(|tx| tx.credential_by_hash(&credentials::hash_secret(secret)));
    let row = row.ok().flatten();
    if let Some(row) = &row
        && row.last_used_at.is_none_or(|t| now.as_millis() >= t + LAST_USE_RESOLUTION_MS)
    {
        // Best effort: a store that cannot be written must not lock everyone out.
        let _ = state.store.transaction(|tx| tx.credential_touch(&row.name, now.as_millis()));
    }
    // A console session ends with the credential it was opened with.
    let parent = row
        .as_ref()
        .and_then(|r| serde_json::from_str::<StoredBindings>(&r.bindings).ok())
        .and_then(|b| b.parent);
    if let Some(parent) = parent
        && !console_session::parent_holds(state, &parent, now.as_millis())
    {
        return (Caller::Unknown, None);
    }
    let expires_at = row.as_ref().and_then(|r| r.expires_at);
    (with_declared_roles(state, credentials::named_caller(row, now)), expires_at)
}

/// `caller` with the roles its bindings name that are not built in looked up as `cutover.yaml`
/// declares them now: a role that `apply` changed or removed takes effect at the next request.
fn with_declared_roles(state: &AppState, caller: Caller) -> Caller {
    let resolve = |bindings: Vec<Binding>| {
        if bindings.iter().any(Binding::names_declared_role) {
            decision::resolve(bindings, &declared_roles(&state.store))
        } else {
            bindings
        }
    };
    match caller {
        Caller::Named { name, bindings } => Caller::Named { name, bindings: resolve(bindings) },
        Caller::User { user, via, bindings } => {
            Caller::User { user, via, bindings: resolve(bindings) }
        }
        other => other,
    }
}

/// The roles `cutover.yaml` declares (`access.roles`), as the last `apply` stored them. A store
/// that cannot be read declares none: a binding to a declared role then grants nothing, which
/// fails closed.
pub fn declared_roles(store: &store::Store) -> Vec<model::access::DeclaredRole> {
    use store::DocumentStore;
    let docs = store.read(|tx| tx.doc_list::<crate::declared::RoleDoc>());
    docs.map(|docs| docs.into_iter().map(|(_, doc)| doc.0).collect()).unwrap_or_else(|err| {
        tracing::warn!("the declared roles could not be read: {err}");
        Vec::new()
    })
}

/// What the plan says of a role `apply` deletes: the credentials bound to it, which then grant
/// nothing (as with AWS, a credential's permissions are its policy's: none once it is gone).
pub(crate) fn bound_to_role(store: &store::Store, role: &str) -> Result<Option<String>, ApiError> {
    let rows = store.read(|tx| tx.credential_list())?;
    let bound: Vec<String> = rows
        .iter()
        .filter(|row| {
            serde_json::from_str::<StoredBindings>(&row.bindings).is_ok_and(|stored| {
                stored.bindings.iter().any(|b| b.grants == decision::Grants::Role(role.into()))
            })
        })
        .map(|row| row.name.clone())
        .collect();
    Ok((!bound.is_empty()).then(|| {
        format!(
            "the credentials bound to it grant nothing until it is declared again: {}",
            bound.join(", ")
        )
    }))
}

/// The request's resource; for a deployment group in the body, the body is read and put back.
async fn resource(
    state: &AppState,
    request: Request,
    matched: &Matched,
    from: ResourceFrom,
) -> Result<(Request, Resource), Response> {
    let param = |name| matched.param(name).unwrap_or_default().to_string();
    let resource = match from {
        ResourceFrom::Any => Resource::Any,
        ResourceFrom::Global => Resource::Global,
        ResourceFrom::Pipeline => Resource::Pipeline(param("name")),
        ResourceFrom::PipelineOfRun => {
            let run = matched.param("execution").or(matched.param("id")).unwrap_or_default();
            Resource::Pipeline(permissions::pipeline_of_run(run).to_string())
        }
        ResourceFrom::Repository => Resource::Repository(
            matched.param("repo").or(matched.param("name")).unwrap_or_default().to_string(),
        ),
        ResourceFrom::GroupOfDeployment => {
            let id = param("id");
            match state.store.read(|tx| tx.deployment_get(&id)) {
                Ok(Some(row)) => Resource::DeploymentGroup(format!(
                    "{}/{}",
                    row.application, row.deployment_group
                )),
                // An unknown deployment belongs to no group: only a binding on `*` reaches its
                // 404, so a scoped credential learns nothing about other groups' ids.
                _ => Resource::Global,
            }
        }
        ResourceFrom::GroupInBody => {
            let (parts, body) = request.into_parts();
            let bytes = axum::body::to_bytes(body, INSPECTED_BODY_MAX).await.map_err(|_| {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the request body is over 16 MiB")
                    .into_response()
            })?;
            #[derive(Deserialize)]
            struct GroupField {
                group: String,
            }
            let group = serde_json::from_slice::<GroupField>(&bytes).map(|g| g.group);
            // A body without a group is the handler's to refuse; only `*` gets that far.
            let resource = group.map_or(Resource::Global, Resource::DeploymentGroup);
            return Ok((Request::from_parts(parts, Body::from(bytes)), resource));
        }
    };
    Ok((request, resource))
}

fn outcome(status: StatusCode) -> String {
    if status.is_success() { "succeeded".into() } else { format!("failed ({})", status.as_u16()) }
}

fn forbidden(
    caller: &Caller,
    missing: Permission,
    resource: &Resource,
    would_grant: &Binding,
) -> Response {
    let scope = would_grant.scopes.join(",");
    let role = match &would_grant.grants {
        decision::Grants::Role(role) | decision::Grants::Declared { role, .. } => role.as_str(),
        decision::Grants::Permissions(_) => "admin",
    };
    let gone: Vec<String> = caller
        .bindings()
        .unwrap_or_default()
        .iter()
        .filter_map(|b| b.gone_role().map(|role| format!("role {role}")))
        .collect();
    let gone = if gone.is_empty() {
        String::new()
    } else {
        format!(
            " (its {} is no longer declared in cutover.yaml's access.roles, so it grants nothing)",
            gone.join(" and ")
        )
    };
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "{} lacks the permission `{missing}` on {resource}{gone}; a binding of {would_grant} \
             grants it (an admin runs `cutover tokens create NAME --role {role} --scope '{scope}'`; \
             docs/access.md lists what each role may do)",
            caller.actor()
        ),
    )
    .into_response()
}

/// One request's entry in the audit trail.
struct Audit<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    permission: Permission,
    source: String,
    method: Method,
    path: String,
}

impl Audit<'_> {
    fn record(&self, resource: &Resource, outcome: String, detail: Option<serde_json::Value>) {
        let mut detail = detail.unwrap_or_else(|| serde_json::json!({}));
        detail["request"] = format!("{} {}", self.method, self.path).into();
        if let Caller::User { via, .. } = self.caller {
            detail["via"] = via.as_str().into();
        }
        let entry = store::AuditRow {
            seq: 0,
            at: crate::clock::now().as_millis(),
            actor: self.caller.actor(),
            action: self.permission.name().to_string(),
            resource: resource.to_string(),
            source: self.source.clone(),
            outcome,
            detail: Some(detail.to_string()),
        };
        append(self.state, entry);
    }

    fn refuse_unauthenticated(&mut self) -> Response {
        let message = match self.caller {
            Caller::Hook(grant) => {
                self.record(&Resource::Any, "denied".into(), None);
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "a hook's token only reports its own execution (PUT {}); use the API \
                         token for anything else",
                        grant.report_path()
                    ),
                )
                .into_response();
            }
            Caller::Expired { name, at } => format!(
                "the credential {name} expired at {}; ask an admin for a new one (`cutover tokens \
                 create`), then pass it with --token or CUTOVER_TOKEN",
                utc_text(at.as_millis())
            ),
            Caller::SessionExpired { user, at } => format!(
                "the session of {user} expired at {}; sign in again with `cutover login`",
                utc_text(at.as_millis())
            ),
            Caller::Unknown => "this token is not valid (revoked, expired or mistyped): sign in \
                                again with `cutover login`, or pass a valid token with --token or \
                                CUTOVER_TOKEN"
                .into(),
            _ => "this API needs a token: pass --token or set CUTOVER_TOKEN (the bootstrap token \
                  is the one `cutover up` was given, or DATA_DIR/token; an admin creates named \
                  ones with `cutover tokens create`), or sign in with `cutover login` where single \
                  sign-on is set up"
                .into(),
        };
        self.record(&Resource::Any, "unauthenticated".into(), None);
        let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Basic realm=\"cutover\"".parse().expect("static"));
        response
    }

    /// Runs an allowed request; a change goes to the audit trail with its outcome (and for
    /// `apply` the plan, for `deploy` the deployment's id).
    async fn run(&self, request: Request, next: Next, resource: &Resource) -> Response {
        // A read changes nothing, whatever it reads (credentials, the trail itself).
        let changes = self.method != Method::GET && self.permission.changes();
        let response = next.run(request).await;
        if !changes {
            return response;
        }
        let status = response.status();
        if !matches!(self.permission, Permission::Apply | Permission::Deploy)
            || !status.is_success()
        {
            self.record(resource, outcome(status), None);
            return response;
        }
        let (parts, body) = response.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, INSPECTED_BODY_MAX).await else {
            self.record(resource, outcome(status), None);
            return ApiError::internal("the answer was too large to record").into_response();
        };
        let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let detail = match self.permission {
            Permission::Apply => serde_json::json!({
                "plan": answer.get("plan"), "applied": answer.get("applied"),
            }),
            _ => serde_json::json!({ "deployment": answer.get("id") }),
        };
        self.record(resource, outcome(status), Some(detail));
        Response::from_parts(parts, Body::from(bytes))
    }
}

/// A time as people read it in lists and messages: `2026-12-06 10:44:37Z` (UTC).
pub fn utc_text(ms: u64) -> String {
    let at = i64::try_from(ms).ok().and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok());
    at.unwrap_or(jiff::Timestamp::MAX).strftime("%Y-%m-%d %H:%M:%SZ").to_string()
}

// -- credentials and the audit trail

fn token_view(row: &store::CredentialRow) -> TokenView {
    let stored = serde_json::from_str::<StoredBindings>(&row.bindings).ok();
    let bindings = stored.as_ref().map_or_else(
        || vec!["(unreadable: grants nothing)".into()],
        |b| b.bindings.iter().map(|b| b.to_string()).collect(),
    );
    let session = stored.and_then(|s| s.session);
    TokenView {
        name: row.name.clone(),
        bindings,
        user: session.as_ref().map(|s| s.user.clone()),
        via: session.map(|s| s.via),
        created_at: row.created_at,
        expires_at: row.expires_at,
        last_used_at: row.last_used_at,
    }
}

pub async fn list_tokens(State(state): State<AppState>) -> Result<Json<Vec<TokenView>>, ApiError> {
    let rows = state.store.read(|tx| tx.credential_list())?;
    Ok(Json(rows.iter().map(token_view).collect()))
}

pub async fn create_token(
    State(state): State<AppState>,
    axum::Extension(CallerBindings(creator)): axum::Extension<CallerBindings>,
    Json(request): Json<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    credentials::check_name(&request.name).map_err(|err| ApiError::bad_request(err.to_string()))?;
    let declared = declared_roles(&state.store);
    let binding =
        Binding::checked(request.role.as_deref(), &request.permissions, &request.scopes, &declared)
            .map_err(|err| ApiError::bad_request(err.to_string()))?;
    let granted = decision::resolve(vec![binding.clone()], &declared);
    if let Some(permission) = decision::not_held(&creator, &granted[0]) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "a credential grants only what its creator holds everywhere, and this one lacks \
                 `{permission}` on *; leave it out, or have an admin create the credential"
            ),
        ));
    }
    let secret = credentials::generate_secret();
    let now = crate::clock::now().as_millis();
    let row = store::CredentialRow {
        name: request.name.clone(),
        secret_hash: credentials::hash_secret(&secret),
        bindings: serde_json::to_string(&StoredBindings {
            bindings: vec![binding],
            session: None,
            parent: None,
        })?,
        created_at: now,
        expires_at: request.expires_in_ms.map(|ms| now.saturating_add(ms)),
        last_used_at: None,
    };
    if !state.store.transaction(|tx| tx.credential_create(&row))? {
        return Err(ApiError::conflict(format!(
            "a credential named {} exists; revoke it first (`cutover tokens revoke {}`) or \
             choose another name",
            request.name, request.name
        )));
    }
    Ok((StatusCode::CREATED, Json(CreatedToken { token: token_view(&row), secret })))
}

pub async fn revoke_token(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !state.store.transaction(|tx| tx.credential_delete(&name))? {
        return Err(ApiError::not_found(format!(
            "no credential {name}; `cutover tokens list` shows them"
        )));
    }
    Ok(Json(serde_json::json!({ "revoked": name })))
}

/// `GET /v1/login/oidc`: where `cutover login` sends its user's browser.
pub async fn login_start(
    State(state): State<AppState>,
) -> Result<Json<oidc::LoginStart>, ApiError> {
    let oidc = single_sign_on(&state)?;
    let start =
        oidc.start().await.map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
    Ok(Json(start))
}

/// `POST /v1/login/oidc`: redeems the code of a login, checks its ID token and opens a session
/// with the bindings of the user's groups (see [`sign_in_with_provider`]).
pub async fn login_finish(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<crate::tls::Peer>,
    Json(login): Json<oidc::LoginFinish>,
) -> Result<(StatusCode, Json<oidc::Session>), ApiError> {
    let source = peer.0.ip().to_string();
    let session = sign_in_with_provider(&state, &login, &source, "POST /v1/login/oidc").await?;
    Ok((StatusCode::CREATED, Json(session)))
}

/// A single sign-on, wherever it came from (the CLI's loopback redirect or the console's
/// callback): redeems the code, checks its ID token and opens a session with the bindings of the
/// user's groups. Every outcome goes to the audit trail as a `login` with the provider as `via`
/// and `request` (what the person's client asked), so both ways in are one model.
pub async fn sign_in_with_provider(
    state: &AppState,
    login: &oidc::LoginFinish,
    source: &str,
    request: &str,
) -> Result<oidc::Session, ApiError> {
    let oidc = single_sign_on(state)?;
    let now = crate::clock::now().as_millis();
    let via = oidc.config.issuer.clone();
    let record = |actor: String, outcome: &str, problem: Option<String>| {
        let mut detail = serde_json::json!({ "request": request, "via": via });
        if let Some(problem) = problem {
            detail["problem"] = problem.into();
        }
        append(
            state,
            store::AuditRow {
                seq: 0,
                at: now,
                actor,
                action: "login".into(),
                resource: Resource::Any.to_string(),
                source: source.to_string(),
                outcome: outcome.into(),
                detail: Some(detail.to_string()),
            },
        );
    };
    let mappings = group_mappings(state, oidc);
    let (identity, bindings) = match oidc.finish(login, now, &mappings).await {
        Ok(found) => found,
        Err(err) => {
            let (status, actor, outcome) = match &err {
                oidc::LoginError::NoRole { user, .. } => {
                    (StatusCode::FORBIDDEN, format!("user:{user}"), "denied")
                }
                oidc::LoginError::Provider { .. } => {
                    (StatusCode::BAD_GATEWAY, "anonymous".into(), "failed (502)")
                }
                _ => (StatusCode::UNAUTHORIZED, "anonymous".into(), "unauthenticated"),
            };
            record(actor, outcome, Some(err.to_string()));
            return Err(ApiError::new(status, err.to_string()));
        }
    };
    let secret = credentials::generate_secret();
    let expires_at = now.saturating_add(oidc.config.session_ms);
    let session = credentials::SessionOf { user: identity.user.clone(), via: via.clone() };
    let row = store::CredentialRow {
        // Sessions are listed (and revoked) with the named credentials.
        name: credentials::session_name(),
        secret_hash: credentials::hash_secret(&secret),
        bindings: serde_json::to_string(&StoredBindings {
            bindings: bindings.clone(),
            session: Some(session),
            parent: None,
        })?,
        created_at: now,
        expires_at: Some(expires_at),
        last_used_at: None,
    };
    state.store.transaction(|tx| tx.credential_create(&row))?;
    record(format!("user:{}", identity.user), "succeeded", None);
    Ok(oidc::Session {
        secret,
        user: identity.user,
        provider: via,
        bindings: bindings.iter().map(ToString::to_string).collect(),
        expires_at,
    })
}

/// Which groups get which roles: `cutover up --oidc-group` when given, else what cutover.yaml's
/// `access.oidc.groups` declares. The flags win so that an operator can always get in again by
/// restarting with them, whatever a file applied (a break-glass, as with a bootstrap token).
fn group_mappings(state: &AppState, oidc: &oidc::Oidc) -> Vec<oidc::GroupMapping> {
    if !oidc.config.groups.is_empty() {
        return oidc.config.groups.clone();
    }
    use store::DocumentStore;
    let declared = state.store.read(|tx| tx.doc_list::<crate::declared::GroupDoc>());
    let declared = declared.unwrap_or_else(|err| {
        tracing::warn!("the declared group mappings could not be read: {err}");
        Vec::new()
    });
    let groups: Vec<_> = declared.into_iter().map(|(_, doc)| doc.0).collect();
    oidc::declared_mappings(&groups)
}

fn single_sign_on(state: &AppState) -> Result<&oidc::Oidc, ApiError> {
    state.oidc.as_deref().ok_or_else(|| {
        ApiError::not_found(
            "this cutover has no single sign-on; its operator sets it up with `cutover up \
             --oidc-issuer URL --oidc-client-id ID --oidc-group GROUP=ROLE`, or asks an admin for \
             a token (`cutover tokens create`)",
        )
    })
}

#[derive(Deserialize)]
pub struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    resource: Option<String>,
    /// Milliseconds since the epoch.
    since: Option<u64>,
    /// Only the last this many milliseconds (by the control plane's clock).
    within_ms: Option<u64>,
    after: Option<u64>,
    limit: Option<u32>,
}

pub async fn audit_trail(
    State(state): State<AppState>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let filter = store::AuditFilter {
        actor: query.actor,
        action: query.action,
        resource: query.resource,
        since: query
            .since
            .max(query.within_ms.map(|ms| crate::clock::now().as_millis().saturating_sub(ms))),
        after: query.after,
        limit: query.limit.unwrap_or(1000).min(100_000),
    };
    let rows = state.store.read(|tx| tx.audit_list(&filter))?;
    Ok(Json(rows.into_iter().map(AuditEntry::from).collect()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(super::utc_text(0), "1970-01-01 00:00:00Z");
        assert_eq!(super::utc_text(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(super::utc_text(1_796_553_877_999), "2026-12-06 10:44:37Z");
    }
}
