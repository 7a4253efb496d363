//! `POST /v1/webhooks/{pipeline}`: GitHub- and Gitea-style push events, verified with
//! `X-Hub-Signature-256` (HMAC-SHA256 of the raw body with the secret in the environment variable
//! the pipeline names). A valid push to a branch the pipeline takes fetches the pipeline's URL and
//! starts an execution at the pushed commit.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::api::WebhookResult;
use crate::push_event::{Payload, PushEvent, read_payload};
use crate::routes::error;
use crate::{Shared, git};

fn ignored(why: &str) -> Response {
    (StatusCode::OK, Json(WebhookResult { execution_id: None, ignored: Some(why.into()) }))
        .into_response()
}

/// Whether `header` is `sha256=<hex>` of the body under `secret`, compared in constant time.
pub fn signature_ok(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else { return false };
    let Ok(sig) = hex::decode(hex_sig) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return false };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn signature_problem(sig: Option<&str>) -> &'static str {
    if sig.is_none() { "missing X-Hub-Signature-256" } else { "bad X-Hub-Signature-256" }
}

/// The one answer to a webhook that is not signed with its pipeline's secret.
fn unauthorized(sig: Option<&str>) -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        format!(
            "{}: sign the body with HMAC-SHA256 and the pipeline's secret",
            signature_problem(sig)
        ),
    )
}

pub async fn handle(
    State(inner): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let sig = headers.get("x-hub-signature-256").and_then(|v| v.to_str().ok());
    // Every refusal before the signature is checked answers exactly as a bad signature does, so
    // that an unauthenticated caller learns nothing, not even which pipelines exist; the reason
    // is in the server's log only.
    let refuse = |reason: String| {
        tracing::warn!(pipeline = ?name, "webhook refused: {reason}");
        unauthorized(sig)
    };
    let Some(def) = inner.definition(&name).await else {
        return refuse("no such pipeline".into());
    };
    let Some((url, secret_env)) = def.webhook().map(|(u, s)| (u.to_string(), s.to_string())) else {
        return refuse(
            "the pipeline has no webhook; give its source `url` and `webhook: {secret_env: …}`"
                .into(),
        );
    };
    let secret = std::env::var(&secret_env).unwrap_or_default();
    if secret.is_empty() {
        return refuse(format!("the environment variable {secret_env} of `cutover up` is not set"));
    }
    if !signature_ok(secret.as_bytes(), &body, sig) {
        return refuse(signature_problem(sig).into());
    }
    let event = ["x-github-event", "x-gitea-event", "x-gogs-event"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .unwrap_or("push");
    let (branch, after, pushed_by) = match read_payload(event, &body) {
        Ok(Payload::Push(PushEvent { branch, commit, pushed_by })) => (branch, commit, pushed_by),
        Ok(Payload::Ignored(why)) => return ignored(&why),
        Err(err) => return error(StatusCode::BAD_REQUEST, err.to_string()),
    };
    if !def.source.triggers_on(&branch) {
        return ignored(&format!("branch `{branch}` does not start this pipeline"));
    }
    let mirror = inner.mirror_dir(&name);
    let (b, a) = (branch.clone(), after.clone());
    let fetched = inner
        .in_mirror(&name, move |m| {
            git::fetch_into_mirror(m, &url, &b)?;
            let on_branch = git::git(Some(m), &["cat-file", "-e", &format!("{a}^{{commit}}")]);
            Ok::<_, git::GitError>(on_branch.is_ok())
        })
        .await;
    match fetched {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            let why = format!("commit {after} is not on branch {branch} of the source");
            return error(StatusCode::BAD_GATEWAY, format!("fetching the source failed: {why}"));
        }
        Ok(Err(err)) => {
            return error(StatusCode::BAD_GATEWAY, format!("fetching the source failed: {err}"));
        }
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
    // The pushed head of the polled branch is remembered with the execution, in one write, so
    // that a poll of the same source does not start this commit again. The answer waits for that
    // write: an accepted webhook's execution is stored (the sender retries one not accepted).
    let polled = (branch == def.source.branch).then(|| after.clone());
    match inner.start(&name, mirror, after, branch, pushed_by, polled).await {
        Ok(id) => {
            (StatusCode::ACCEPTED, Json(WebhookResult { execution_id: Some(id), ignored: None }))
                .into_response()
        }
        Err(err) => crate::routes::err_response(err),
    }
}
