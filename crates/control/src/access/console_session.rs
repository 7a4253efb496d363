//! The web console's sign-in: a person pastes a credential once and gets a session cookie in
//! place of the `Authorization` header.
//!
//! A session is a credential of its own (stored as a hash, listed by `tokens list`, revoked by
//! `tokens revoke` or by signing out) with the bindings of the credential it was opened with, and
//! it lives no longer than that credential: the hash of its parent is kept, and a session whose
//! parent was revoked or expired (or a bootstrap token that was changed) is refused at the next
//! request. The cookie is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site sends
//! it) and `Secure` over HTTPS; every request it authenticates that is not a read must also carry
//! the session's CSRF token in `X-CSRF-Token`, which only the console's own pages know.

use axum::http::HeaderMap;
use axum::http::header;
use sha2::{Digest, Sha256};

use super::credentials::{self, Caller, SessionOf, StoredBindings};
use crate::http::AppState;

/// The cookie's name.
pub const SESSION_COOKIE: &str = "cutover_session";

/// The header every action of a console session carries.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How long a console session lasts at most (a working day), and never past its parent.
pub const SESSION_MS: u64 = 12 * 60 * 60 * 1000;

/// What `via` names for a session opened in the console (the audit trail's `via`).
pub const VIA_CONSOLE: &str = "console";

/// The session secret of the request's cookie, if it has one.
pub fn session_secret(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

/// The CSRF token of a session: derived from its secret, which only the server and the cookie
/// (that scripts cannot read) hold, so it needs no storage and no other site can compute it.
pub fn csrf_token(session_secret: &str) -> String {
    let digest = Sha256::digest(format!("cutover console csrf\0{session_secret}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the request carries the CSRF token of `session_secret`.
pub fn csrf_matches(headers: &HeaderMap, session_secret: &str) -> bool {
    headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).is_some_and(|presented| {
        crate::http::constant_time_eq(presented.as_bytes(), csrf_token(session_secret).as_bytes())
    })
}

/// The `Set-Cookie` value that opens a session (`secure` over HTTPS).
pub fn session_cookie(secret: &str, max_age_ms: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        max_age_ms / 1000
    )
}

/// The `Set-Cookie` value that removes the session's cookie.
pub fn cleared_cookie(secure: bool) -> String {
    session_cookie("", 0, secure)
}

/// Where a browser that opens a page without a session is sent: the sign-in page, which comes
/// back to `page` (a path of this server, never another site's URL) once signed in.
pub fn sign_in_redirect(page: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let location = format!("/login?next={}", percent_encode(page));
    (axum::http::StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// `text` with everything but unreserved characters and `/` percent-encoded, for a query value.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A session the console opened.
#[derive(Debug)]
pub struct Opened {
    pub secret: String,
    pub expires_at: u64,
    /// How long it lasts from now, for the cookie's `Max-Age`.
    pub lasts_ms: u64,
    /// Who signed in, as the audit trail names them.
    pub actor: String,
}

/// Why a pasted credential opens no session, in words for the sign-in page.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignInRefused {
    #[error(
        "this token is not valid (revoked, expired or mistyped); ask an admin for one \
         (`cutover tokens create NAME --role viewer`) and paste its secret"
    )]
    NotValid,
    #[error("the credential {0} has expired; ask an admin for a new one (`cutover tokens create`)")]
    Expired(String),
    #[error(
        "a hook's token only reports its own execution; sign in with a named credential or the \
         bootstrap token"
    )]
    HookToken,
    #[error("the store could not be written, so no session was opened; try again")]
    Store,
}

/// Opens a session for whoever holds `secret` (the bootstrap token, a named credential or a
/// single sign-on session), with exactly their bindings, until `now + SESSION_MS` or their own
/// expiry, whichever is first.
/// The sign-in goes to the audit trail (action `login`, via `console`) with `source`, whatever
/// came of it.
pub fn open(state: &AppState, secret: &str, source: &str) -> Result<Opened, SignInRefused> {
    let now = crate::clock::now().as_millis();
    let opened = open_at(state, secret.trim(), now);
    let (actor, outcome) = match &opened {
        Ok(opened) => (opened.actor.clone(), "succeeded".to_string()),
        Err(SignInRefused::Expired(name)) => (format!("token:{name}"), "unauthenticated".into()),
        Err(SignInRefused::Store) => ("anonymous".into(), "failed (503)".into()),
        Err(_) => ("anonymous".into(), "unauthenticated".into()),
    };
    super::append(
        state,
        store::AuditRow {
            seq: 0,
            at: now,
            actor,
            action: "login".into(),
            resource: super::Resource::Any.to_string(),
            source: source.to_string(),
            outcome,
            detail: Some(
                serde_json::json!({ "request": "POST /login", "via": VIA_CONSOLE }).to_string(),
            ),
        },
    );
    opened
}

fn open_at(state: &AppState, secret: &str, now: u64) -> Result<Opened, SignInRefused> {
    let (caller, parent_expiry) = super::caller_of_secret(state, secret);
    let (user, bindings) = match &caller {
        Caller::Bootstrap => ("bootstrap".to_string(), caller.bindings()),
        Caller::Named { name, bindings } => (name.clone(), Some(bindings.clone())),
        Caller::User { user, bindings, .. } => (user.clone(), Some(bindings.clone())),
        Caller::Expired { name, .. } => return Err(SignInRefused::Expired(name.clone())),
        Caller::Hook(_) => return Err(SignInRefused::HookToken),
        _ => return Err(SignInRefused::NotValid),
    };
    let bindings = bindings.ok_or(SignInRefused::NotValid)?;
    let session_secret = credentials::generate_secret();
    let expires_at = parent_expiry.map_or(now + SESSION_MS, |e| e.min(now + SESSION_MS));
    let row = store::CredentialRow {
        name: session_name(),
        secret_hash: credentials::hash_secret(&session_secret),
        bindings: serde_json::to_string(&StoredBindings {
            // Declared roles by name, so that a change of the role reaches the session too.
            bindings: bindings.iter().map(super::decision::Binding::stored).collect(),
            session: Some(SessionOf { user: user.clone(), via: VIA_CONSOLE.into() }),
            parent: Some(credentials::hash_secret(secret)),
        })
        .map_err(|_| SignInRefused::Store)?,
        created_at: now,
        expires_at: Some(expires_at),
        last_used_at: None,
    };
    state.store.transaction(|tx| tx.credential_create(&row)).map_err(|_| SignInRefused::Store)?;
    Ok(Opened {
        secret: session_secret,
        expires_at,
        lasts_ms: expires_at.saturating_sub(now),
        actor: format!("user:{user}"),
    })
}

/// Ends the session of `secret` (signing out): its credential is deleted, so the cookie opens
/// nothing any more, wherever it was copied to.
pub fn close(state: &AppState, secret: &str) {
    let hash = credentials::hash_secret(secret);
    let row = state.store.read(|tx| tx.credential_by_hash(&hash)).ok().flatten();
    if let Some(row) = row {
        let _ = state.store.transaction(|tx| tx.credential_delete(&row.name));
    }
}

/// Whether the credential a session was opened with still holds: the bootstrap token of this
/// start, or a stored credential that has not expired.
pub fn parent_holds(state: &AppState, parent_hash: &str, now: u64) -> bool {
    if state.token.as_ref().is_some_and(|t| credentials::hash_secret(t) == parent_hash) {
        return true;
    }
    let parent = state.store.read(|tx| tx.credential_by_hash(parent_hash)).ok().flatten();
    parent.is_some_and(|p| p.expires_at.is_none_or(|e| now < e))
}

/// A console session's name in `tokens list`: `console-` and 48 random bits.
fn session_name() -> String {
    let bytes: [u8; 6] = rand::random();
    format!("console-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_http_only_same_site_strict_and_secure_over_https() {
        let cookie = session_cookie("cutover_abc", 3_600_000, true);
        assert_eq!(
            cookie,
            "cutover_session=cutover_abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600; Secure"
        );
        assert!(!session_cookie("s", 1000, false).contains("Secure"));
        assert!(
            cleared_cookie(false).starts_with("cutover_session=; ")
                && cleared_cookie(false).contains("Max-Age=0")
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "theme=dark; cutover_session=cutover_abc".parse().unwrap());
        assert_eq!(session_secret(&headers).as_deref(), Some("cutover_abc"));
    }

    #[test]
    fn only_the_session_s_own_csrf_token_matches() {
        let mut headers = HeaderMap::new();
        assert!(!csrf_matches(&headers, "cutover_a"), "no token");
        headers.insert(CSRF_HEADER, csrf_token("cutover_b").parse().unwrap());
        assert!(!csrf_matches(&headers, "cutover_a"), "another session's token");
        headers.insert(CSRF_HEADER, csrf_token("cutover_a").parse().unwrap());
        assert!(csrf_matches(&headers, "cutover_a"));
        assert_ne!(csrf_token("cutover_a"), "cutover_a");
    }
}
