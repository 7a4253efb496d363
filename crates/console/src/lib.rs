//! cutover's web console: pages rendered on the server from the read models the API answers
//! with (`control::http`, `control::engine::deployment_view`), one small script that follows a
//! deployment's server-sent-event stream (`GET /v1/deployments/{id}/stream`) and calls the API's
//! own actions, and a style sheet — all compiled into the binary. `cutover up` serves it at its
//! API address behind the API's authorization layer, so every page and action needs the same
//! permissions as the API (`control::access::permissions::ENDPOINTS`). See `docs/console.md`.
//!
//! The handlers here are thin: they read, then call the pure renderers (`deployment`,
//! `overview`, `login`) and the pure decisions (`decide`).

mod alarm_pages;
mod decide;
mod deployment;
mod graph;
mod history;
mod layout;
mod login;
mod metrics;
mod overview;
mod pipeline_actions;
mod pipeline_pages;
mod pipeline_routes;
mod services;
mod target_groups;
mod task_definition_diff;
mod task_definitions;
mod tasks;

use axum::Router;
use axum::extract::{ConnectInfo, Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use control::access::CallerBindings;
use control::access::{console_session, console_sso};
use control::http::AppState;
use control::{ApiError, Peer};
use serde::Deserialize;

/// The console's routes; `control::serve` merges them beside the API's.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(overview_page))
        .route("/deployments/{id}", get(deployment_page))
        .route("/login", get(login_page).post(sign_in))
        .route("/login/sso", get(sso_start))
        .route("/login/callback", get(sso_callback))
        .route("/logout", post(sign_out))
        .route("/console/{file}", get(asset))
        .merge(pipeline_routes::routes())
        .route("/task-definitions/{family}", get(task_definitions::page))
        .route("/services/{name}", get(services::page))
        .route("/tasks/{id}", get(tasks::page))
        .route("/history", get(history::page))
        .route("/target-groups/{name}/metrics", get(metrics_page))
        .route("/target-groups/{name}", get(target_groups::page))
        .route("/alarms", get(alarms_page))
        .route("/alarms/{name}", get(alarm_page))
        .with_state(state)
}

const CSS: &str = include_str!("../assets/console.css");
const JS: &str = include_str!("../assets/console.js");

/// The style sheet and the script; anything else is not found.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// Every page's headers: no framing by other sites, no inline script, nothing from elsewhere.
pub(crate) fn html_page(status: StatusCode, markup: maud::Markup) -> Response {
    let headers = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; \
             form-action 'self'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    (status, headers, Html(markup.into_string())).into_response()
}

/// An API error as a page of its own, with what to do.
pub(crate) fn error_page(err: ApiError, viewer: Option<&layout::Viewer>) -> Response {
    let main = maud::html! {
        h1 { "Not available" }
        p.why { (err.body.error) }
        p { a href="/" { "Back to the overview" } }
    };
    html_page(err.status, layout::page("Not available", viewer, main))
}

/// Who opened a page: the bindings the authorization layer found (which decide the buttons), and
/// the viewer the frame shows. Without bindings (a route the layer did not see) it holds none,
/// so nothing is offered.
pub(crate) struct Visitor {
    pub(crate) bindings: Vec<control::access::decision::Binding>,
    pub(crate) viewer: layout::Viewer,
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let bindings =
            parts.extensions.get::<CallerBindings>().map(|b| b.0.clone()).unwrap_or_default();
        let viewer = viewer(state, &parts.headers, &bindings);
        Ok(Visitor { bindings, viewer })
    }
}

impl Visitor {
    /// Whether they may read logs (a build's, a task's): a viewer may not, since programs print
    /// what they should not.
    pub(crate) fn may_read_logs(&self) -> bool {
        use control::access::decision::{Decision, decide};
        use control::access::permissions::{Permission, Resource};
        decide(&self.bindings, Permission::Logs, &Resource::Any) == Decision::Allow
    }
}

/// The answer of every page: what was `read`, rendered `whole` in the frame, or, when the page's
/// script asks for it (`?part=live`), only its `live` part; what could not be read as an error
/// page.
pub(crate) fn respond<T>(
    read: Result<T, ApiError>,
    query: &PartQuery,
    visitor: &Visitor,
    live: impl FnOnce(&T) -> maud::Markup,
    whole: impl FnOnce(&T, &layout::Viewer) -> maud::Markup,
) -> Response {
    match read {
        Ok(page) if query.is_live() => html_page(StatusCode::OK, live(&page)),
        Ok(page) => html_page(StatusCode::OK, whole(&page, &visitor.viewer)),
        Err(err) => error_page(err, Some(&visitor.viewer)),
    }
}

/// Who is looking, from what the authorization layer found.
pub(crate) fn viewer(
    state: &AppState,
    headers: &HeaderMap,
    bindings: &[control::access::decision::Binding],
) -> layout::Viewer {
    let session = console_session::session_secret(headers);
    let holds = bindings.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
    layout::Viewer {
        holds: if state.token.is_none() && session.is_none() {
            format!("{holds} (local: this API needs no token)")
        } else {
            holds
        },
        signed_in: session.is_some(),
        csrf: session.map(|s| console_session::csrf_token(&s)),
    }
}

#[derive(Deserialize)]
pub(crate) struct PartQuery {
    pub(crate) part: Option<String>,
    /// The window of a metrics page (`5m`, `1h`, `3h`).
    #[serde(default)]
    pub(crate) range: Option<String>,
}

async fn deployment_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<PartQuery>,
    visitor: Visitor,
) -> Response {
    let read = read_deployment(&state, &id, &visitor.bindings);
    respond(read, &query, &visitor, deployment::live, deployment::whole)
}

/// The most events the deployment page lists (the newest).
const EVENTS_SHOWN: usize = 200;

fn read_deployment(
    state: &AppState,
    id: &str,
    bindings: &[control::access::decision::Binding],
) -> Result<deployment::DeploymentPage, ApiError> {
    let view = control::engine::deployment_view(&state.store, &state.shared, id)?;
    let schedule = control::http::routing_of(state, &view.deployment_config)?
        .map(|routing| decide::schedule(&routing, &view))
        .unwrap_or_default();
    let mut events = control::http::deployment_event_views(state, id)?;
    events.reverse();
    events.truncate(EVENTS_SHOWN);
    Ok(deployment::DeploymentPage {
        targets: control::stream::targets_of(state, &view),
        actions: decide::actions(&view, bindings),
        schedule,
        events,
        view,
    })
}

async fn overview_page(State(state): State<AppState>, visitor: Visitor) -> Response {
    match overview::read(&state) {
        Ok(model) => html_page(StatusCode::OK, overview::render(&model, &visitor.viewer)),
        Err(err) => error_page(err, Some(&visitor.viewer)),
    }
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_page(State(state): State<AppState>, Query(query): Query<NextQuery>) -> Response {
    let next = login::safe_next(query.next.as_deref());
    if state.token.is_none() {
        // Nothing to sign in to: this API needs no token.
        return Redirect::to(&next).into_response();
    }
    let provider = console_sso::provider_name(&state);
    html_page(StatusCode::OK, login::render(&next, None, provider.as_deref()))
}

/// `GET /login/sso`: sends the browser to the provider to sign in, with this login's secrets in
/// a cookie of its own until it comes back to `/login/callback`.
async fn sso_start(
    State(state): State<AppState>,
    Query(query): Query<NextQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(oidc) = state.oidc.clone() else {
        let why = "this cutover has no single sign-on; sign in with a token";
        return html_page(StatusCode::NOT_FOUND, login::refused(why));
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let redirect_uri = match console_sso::redirect_uri(host, &state.status.api, public(&state)) {
        Ok(uri) => uri,
        Err(foreign) => {
            return html_page(StatusCode::BAD_REQUEST, login::refused(&foreign.to_string()));
        }
    };
    let pending = console_sso::PendingLogin {
        secrets: control::access::oidc::LoginSecrets::generate(),
        next: login::safe_next(query.next.as_deref()),
    };
    let url = match oidc.start().await {
        Ok(start) => start.authorization_url(&redirect_uri, &pending.secrets),
        Err(err) => Err(err),
    };
    match url {
        Ok(url) => {
            let cookie = pending.cookie(secure(&state, &headers));
            ([(header::SET_COOKIE, cookie)], Redirect::to(url.as_str())).into_response()
        }
        Err(err) => html_page(StatusCode::BAD_GATEWAY, login::refused(&err.to_string())),
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /login/callback`: where the provider sends the browser back. The state must be this
/// browser's login's; the code is redeemed and its ID token checked exactly as for `cutover
/// login`, and the session it opens is the console's cookie from then on.
async fn sso_callback(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Query(query): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    let secure = secure(&state, &headers);
    let cleared = console_sso::cleared_login_cookie(secure);
    let refused = |status, why: &str| {
        let mut response = html_page(status, login::refused(why));
        if let Ok(cleared) = HeaderValue::from_str(&cleared) {
            response.headers_mut().append(header::SET_COOKIE, cleared);
        }
        response
    };
    if let Some(error) = &query.error {
        let described = query.error_description.as_deref().unwrap_or(error);
        return refused(StatusCode::UNAUTHORIZED, &format!("the provider said: {described}"));
    }
    let pending = console_sso::PendingLogin::from_headers(&headers);
    let redirect_uri = console_sso::redirect_uri(
        headers.get(header::HOST).and_then(|h| h.to_str().ok()),
        &state.status.api,
        public(&state),
    );
    let finish = match (pending.as_ref(), &query.code, &query.state, &redirect_uri) {
        (Some(pending), Some(code), Some(got), Ok(uri)) => pending.finish(code, got, uri),
        _ => None,
    };
    let (Some(pending), Some(finish)) = (pending, finish) else {
        let why = "this sign-in was not started in this browser, or took longer than 10                    minutes; start it again";
        return refused(StatusCode::BAD_REQUEST, why);
    };
    let source = peer.0.ip().to_string();
    let request = "GET /login/callback";
    match control::access::sign_in_with_provider(&state, &finish, &source, request).await {
        Ok(session) => {
            let cookies = [console_sso::session_cookie(&session, secure), cleared.clone()];
            let mut response = html_page(StatusCode::OK, login::signed_in(&pending.next));
            let response_headers = response.headers_mut();
            for cookie in cookies {
                if let Ok(cookie) = HeaderValue::from_str(&cookie) {
                    response_headers.append(header::SET_COOKIE, cookie);
                }
            }
            // A next path that is no header value (non-ASCII) is left to the page's link.
            if let Ok(refresh) = HeaderValue::from_str(&format!("0;url={}", pending.next)) {
                response_headers.insert(header::REFRESH, refresh);
            }
            response
        }
        Err(err) => refused(err.status, &err.body.error),
    }
}

/// Whether the cookies of a request are marked `Secure`: when it was made over HTTPS, to this
/// server or to the console's public address (a proxy in front may end TLS).
fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    console_sso::secure_cookies(host, &state.status.api, public(state))
}

/// The console's public address, when `cutover up --console-url` gave one.
fn public(state: &AppState) -> Option<&console_sso::ConsoleUrl> {
    state.console_url.as_ref()
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /login`: the pasted credential opens a session; the cookie carries it from then on.
async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let next = login::safe_next(form.next.as_deref());
    if login::cross_site(&headers) {
        let refused = "sign in from this console's own page";
        let provider = console_sso::provider_name(&state);
        return html_page(
            StatusCode::FORBIDDEN,
            login::render(&next, Some(refused), provider.as_deref()),
        );
    }
    match console_session::open(&state, &form.token, &peer.0.ip().to_string()) {
        Ok(opened) => {
            let secure = secure(&state, &headers);
            let cookie = console_session::session_cookie(&opened.secret, opened.lasts_ms, secure);
            ([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response()
        }
        Err(refused) => {
            let provider = console_sso::provider_name(&state);
            let refused = refused.to_string();
            html_page(
                StatusCode::UNAUTHORIZED,
                login::render(&next, Some(&refused), provider.as_deref()),
            )
        }
    }
}

/// `POST /logout`: the session ends on the server and its cookie is removed.
async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(secret) = console_session::session_secret(&headers) {
        console_session::close(&state, &secret);
    }
    let secure = secure(&state, &headers);
    let cookie = console_session::cleared_cookie(secure);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

/// `/target-groups/{name}/metrics`, or its live part with `?part=live`.
async fn metrics_page(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<PartQuery>,
    visitor: Visitor,
) -> Response {
    let read = metrics::read(&state, &name, metrics::Range::named(query.range.as_deref()));
    respond(read, &query, &visitor, metrics::live, metrics::whole)
}

/// `/alarms`, or its live part with `?part=live`.
async fn alarms_page(
    State(state): State<AppState>,
    Query(query): Query<PartQuery>,
    visitor: Visitor,
) -> Response {
    let read = alarm_pages::read_all(&state);
    respond(read, &query, &visitor, |a| alarm_pages::table(a), |a, v| alarm_pages::list_page(a, v))
}

/// `/alarms/{name}`, or its live part with `?part=live`.
async fn alarm_page(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<PartQuery>,
    visitor: Visitor,
) -> Response {
    let read = alarm_pages::read_one(&state, &name);
    let whole = |alarms: &Vec<_>, viewer: &_| alarm_pages::detail_page(&name, alarms, viewer);
    respond(read, &query, &visitor, |a| alarm_pages::detail(a), whole)
}

impl PartQuery {
    /// Whether the page's script asks for the part that follows changes, not the whole page.
    fn is_live(&self) -> bool {
        self.part.as_deref() == Some("live")
    }
}
