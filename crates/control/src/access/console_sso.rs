//! Single sign-on in the web console: "Sign in with <provider>" on `/login` runs the same
//! authorization code flow with PKCE as `cutover login`, with cutover's own `/login/callback` as
//! the redirect URI, and opens the same kind of session (the provider as `via`, the bindings of
//! the user's groups), which the console's cookie then carries.
//!
//! A login in flight keeps its PKCE verifier, state and nonce in a short-lived cookie of its own
//! rather than on the server: nothing to store or expire, and a callback is accepted only in the
//! browser that started the login (the state in the redirect must equal the cookie's).

use axum::http::{HeaderMap, header};
use base64::Engine;

use super::oidc::{LoginFinish, LoginSecrets};
use crate::http::AppState;

/// The cookie of a login in flight.
pub const LOGIN_COOKIE: &str = "cutover_sso_login";

/// How long a person has to sign in at the provider.
pub const LOGIN_MS: u64 = 10 * 60 * 1000;

/// What `/login/callback` is asked to redirect to after signing in.
pub const CALLBACK_PATH: &str = "/login/callback";

/// A login the console started: its secrets, and the console page to come back to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingLogin {
    pub secrets: LoginSecrets,
    /// A path of this server (`login::safe_next` made it one), never another site's URL.
    pub next: String,
}

impl PendingLogin {
    /// The `Set-Cookie` value that keeps the login until the provider redirects back.
    ///
    /// `SameSite=Lax`, not `Strict`: the provider's redirect to `/login/callback` is a top-level
    /// navigation started by another site, with which browsers send Lax cookies but not Strict
    /// ones. Lax still keeps it out of other sites' subrequests and form posts. `Path` limits it
    /// to the callback; `HttpOnly` keeps the verifier from scripts; `Secure` over HTTPS.
    pub fn cookie(&self, secure: bool) -> String {
        let next = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.next);
        let s = &self.secrets;
        login_cookie(&format!("{}.{}.{}.{next}", s.verifier, s.state, s.nonce), LOGIN_MS, secure)
    }

    /// The login of the request's cookie, if it has a well-formed one.
    pub fn from_headers(headers: &HeaderMap) -> Option<PendingLogin> {
        let value = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == LOGIN_COOKIE)?
            .1;
        let mut parts = value.trim().split('.');
        let mut part = || parts.next().filter(|p| !p.is_empty()).map(String::from);
        let (verifier, state, nonce, next) = (part()?, part()?, part()?, part()?);
        let next = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(next).ok()?;
        Some(PendingLogin {
            secrets: LoginSecrets { verifier, state, nonce },
            next: String::from_utf8(next).ok()?,
        })
    }

    /// What `/login/callback` hands to the provider's token endpoint, if `state` is this login's
    /// (else the redirect belongs to another login, or was forged by another site).
    pub fn finish(&self, code: &str, state: &str, redirect_uri: &str) -> Option<LoginFinish> {
        crate::http::constant_time_eq(state.as_bytes(), self.secrets.state.as_bytes()).then(|| {
            LoginFinish {
                code: code.to_string(),
                code_verifier: self.secrets.verifier.clone(),
                redirect_uri: redirect_uri.to_string(),
                nonce: self.secrets.nonce.clone(),
            }
        })
    }
}

/// The `Set-Cookie` value that removes a login's cookie once it is used.
pub fn cleared_login_cookie(secure: bool) -> String {
    login_cookie("", 0, secure)
}

fn login_cookie(value: &str, max_age_ms: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{LOGIN_COOKIE}={value}; Path={CALLBACK_PATH}; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        max_age_ms / 1000
    )
}

/// The address people open the console at when it is not the API's own — behind a reverse
/// proxy that ends TLS, or under a DNS name — as `cutover up --console-url` gives it (Grafana's
/// `root_url`, Argo CD's `url`): the base of single sign-on's redirect URI, and whether the
/// cookies of requests made there are `Secure`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleUrl {
    /// `scheme://host[:port]`, as browsers send its host and port (`Host`), lowercased.
    origin: String,
    /// `host[:port]`, without the scheme's default port.
    authority: String,
    https: bool,
}

/// Why a `--console-url` is refused, with what to give instead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadConsoleUrl {
    #[error(
        "`{0}` is not an absolute http(s) URL; give the address people open the console at, \
         like https://cutover.example.com"
    )]
    NotAWebUrl(String),
    #[error(
        "`{0}`: use https:// (plain http only at a loopback address, like \
         http://localhost:7400): the session cookie would cross the network in clear"
    )]
    NotHttps(String),
    #[error("`{0}` carries a user or password; remove them")]
    Credentials(String),
    #[error(
        "`{url}` has a {part}; give only the scheme, host and port: the console is served at \
         the root of its address (a reverse proxy that serves it under a path must strip it)"
    )]
    BeyondOrigin { url: String, part: &'static str },
}

impl ConsoleUrl {
    pub fn parse(text: &str) -> Result<ConsoleUrl, BadConsoleUrl> {
        let not_web = || BadConsoleUrl::NotAWebUrl(text.to_string());
        let url = reqwest::Url::parse(text).map_err(|_| not_web())?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(not_web()),
        };
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(not_web)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(BadConsoleUrl::Credentials(text.to_string()));
        }
        let beyond = |part| BadConsoleUrl::BeyondOrigin { url: text.to_string(), part };
        if url.path() != "/" {
            return Err(beyond("path"));
        }
        if url.query().is_some() {
            return Err(beyond("query"));
        }
        if url.fragment().is_some() {
            return Err(beyond("fragment"));
        }
        let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
        let loopback = host == "localhost" || ip.is_ok_and(|ip| ip.is_loopback());
        if !https && !loopback {
            return Err(BadConsoleUrl::NotHttps(text.to_string()));
        }
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        Ok(ConsoleUrl { origin: format!("{}://{authority}", url.scheme()), authority, https })
    }

    /// `scheme://host[:port]`, as people open it.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Whether a request with this `Host` was made at this address.
    fn serves(&self, host: Option<&str>) -> bool {
        host.is_some_and(|host| host.eq_ignore_ascii_case(&self.authority))
    }
}

/// A request whose `Host` is not this server's address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "single sign-on works at this console's own address, {api}; this page was opened as \
     {host}: open {api}/login instead"
)]
pub struct ForeignHost {
    pub host: String,
    pub api: String,
}

/// The redirect URI of a login started by a request to `host`: `/login/callback` at the
/// console's public address `console` when the request was made there, else at this server's
/// own address `api_url` (its scheme is whether this server speaks TLS).
///
/// The `Host` header is the client's to choose, so it is only accepted when it names one of
/// those two addresses: a URI built from any Host would let a request with a forged one make the
/// provider send the code (and the person) to another site, should the provider's registration
/// be loose. The registered redirect URIs are then exactly `CONSOLE/login/callback` and
/// `API/login/callback`.
pub fn redirect_uri(
    host: Option<&str>,
    api_url: &str,
    console: Option<&ConsoleUrl>,
) -> Result<String, ForeignHost> {
    let api = api_url.trim_end_matches('/');
    if let Some(console) = console.filter(|c| c.serves(host)) {
        return Ok(format!("{}{CALLBACK_PATH}", console.origin));
    }
    let authority = api.split_once("://").map_or(api, |(_, authority)| authority);
    match host {
        Some(host) if host.eq_ignore_ascii_case(authority) => Ok(format!("{api}{CALLBACK_PATH}")),
        other => Err(ForeignHost {
            host: other.unwrap_or("(no Host header)").to_string(),
            api: console.map_or(api, |c| c.origin.as_str()).to_string(),
        }),
    }
}

/// Whether the console's cookies for a request to `host` are `Secure`: when it was made at the
/// console's public address, whether people open that with https (a proxy in front may end TLS
/// and speak plain HTTP to cutover); else whether this server speaks HTTPS itself.
pub fn secure_cookies(host: Option<&str>, api_url: &str, console: Option<&ConsoleUrl>) -> bool {
    match console.filter(|c| c.serves(host)) {
        Some(console) => console.https,
        None => api_url.starts_with("https://"),
    }
}

/// The `Set-Cookie` value that makes `session` (opened by a single sign-on) the console's
/// session, for as long as it lasts.
pub fn session_cookie(session: &super::oidc::Session, secure: bool) -> String {
    let lasts_ms = session.expires_at.saturating_sub(crate::clock::now().as_millis());
    super::console_session::session_cookie(&session.secret, lasts_ms, secure)
}

/// The issuer's host, for the button ("Sign in with id.example.com").
pub fn provider_name(state: &AppState) -> Option<String> {
    let issuer = &state.oidc.as_ref()?.config.issuer;
    let host = reqwest::Url::parse(issuer).ok().and_then(|u| u.host_str().map(String::from));
    Some(host.unwrap_or_else(|| issuer.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> PendingLogin {
        PendingLogin { secrets: LoginSecrets::generate(), next: "/deployments/d-1?x=1".into() }
    }

    #[test]
    fn a_login_in_flight_is_kept_in_a_lax_http_only_cookie_for_ten_minutes_on_the_callback() {
        let login = pending();
        let cookie = login.cookie(true);
        let (pair, attributes) = cookie.split_once("; ").unwrap();
        assert_eq!(attributes, "Path=/login/callback; HttpOnly; SameSite=Lax; Max-Age=600; Secure");
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, format!("theme=dark; {pair}").parse().unwrap());
        assert_eq!(PendingLogin::from_headers(&headers), Some(login));
        assert!(!pending().cookie(false).contains("Secure"));
        assert!(cleared_login_cookie(false).contains("Max-Age=0"));
    }

    #[test]
    fn only_the_state_of_this_browser_s_login_redeems_a_code() {
        let login = pending();
        let uri = "http://127.0.0.1:7400/login/callback";
        let finish = login.finish("c-1", &login.secrets.state, uri).unwrap();
        assert_eq!(finish.code_verifier, login.secrets.verifier);
        assert_eq!(finish.nonce, login.secrets.nonce);
        assert_eq!(finish.redirect_uri, uri);
        assert!(login.finish("c-1", &pending().secrets.state, uri).is_none());
        assert!(login.finish("c-1", "", uri).is_none());
    }

    #[test]
    fn the_redirect_uri_is_this_server_s_own_callback_and_a_foreign_host_is_refused() {
        let api = "https://cutover.internal:7400";
        assert_eq!(
            redirect_uri(Some("cutover.internal:7400"), api, None).unwrap(),
            "https://cutover.internal:7400/login/callback"
        );
        let refused = redirect_uri(Some("evil.test"), api, None).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "single sign-on works at this console's own address, https://cutover.internal:7400; \
             this page was opened as evil.test: open https://cutover.internal:7400/login instead"
        );
        assert!(redirect_uri(None, api, None).is_err());
        assert!(redirect_uri(Some("cutover.internal:7401"), api, None).is_err());
    }

    #[test]
    fn behind_a_proxy_the_console_s_public_address_is_the_redirect_uri_and_decides_secure() {
        let api = "http://127.0.0.1:7400";
        let console = ConsoleUrl::parse("https://Cutover.Example.com/").unwrap();
        assert_eq!(console.origin(), "https://cutover.example.com");
        let console = Some(&console);
        assert_eq!(
            redirect_uri(Some("cutover.example.com"), api, console).unwrap(),
            "https://cutover.example.com/login/callback"
        );
        // The API's own address still works where it is reached directly.
        assert_eq!(
            redirect_uri(Some("127.0.0.1:7400"), api, console).unwrap(),
            "http://127.0.0.1:7400/login/callback"
        );
        let refused = redirect_uri(Some("evil.test"), api, console).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "single sign-on works at this console's own address, https://cutover.example.com; \
             this page was opened as evil.test: open https://cutover.example.com/login instead"
        );
        assert!(redirect_uri(Some("cutover.example.com:8443"), api, console).is_err());
        // The proxy ends TLS and speaks plain HTTP to cutover: the browser's cookies are Secure.
        assert!(secure_cookies(Some("cutover.example.com"), api, console));
        assert!(!secure_cookies(Some("127.0.0.1:7400"), api, console));
        assert!(!secure_cookies(Some("evil.test"), api, console));
        assert!(secure_cookies(
            Some("cutover.internal:7400"),
            "https://cutover.internal:7400",
            None
        ));
        let on_a_port = ConsoleUrl::parse("http://localhost:8080").unwrap();
        assert_eq!(
            redirect_uri(Some("localhost:8080"), api, Some(&on_a_port)).unwrap(),
            "http://localhost:8080/login/callback"
        );
        assert!(!secure_cookies(Some("localhost:8080"), api, Some(&on_a_port)));
    }

    #[test]
    fn a_console_url_is_https_or_loopback_with_nothing_beyond_its_host_and_port() {
        for ok in [
            "https://cutover.example.com",
            "https://cutover.example.com:8443/",
            "http://localhost:7400",
            "http://127.0.0.2:7400/",
            "http://[::1]:7400",
        ] {
            assert!(ConsoleUrl::parse(ok).is_ok(), "{ok}");
        }
        let said = |bad: &str| ConsoleUrl::parse(bad).unwrap_err().to_string();
        assert_eq!(
            said("http://cutover.example.com"),
            "`http://cutover.example.com`: use https:// (plain http only at a loopback address, \
             like http://localhost:7400): the session cookie would cross the network in clear"
        );
        assert_eq!(
            said("https://example.com/cutover"),
            "`https://example.com/cutover` has a path; give only the scheme, host and port: the \
             console is served at the root of its address (a reverse proxy that serves it under a \
             path must strip it)"
        );
        assert!(said("https://example.com/?a=1").contains("has a query"));
        assert!(said("https://example.com/#top").contains("has a fragment"));
        assert!(said("https://me:pw@example.com").contains("carries a user or password"));
        for not_web in ["cutover.example.com", "ftp://example.com", "/console", "https://"] {
            assert!(said(not_web).contains("is not an absolute http(s) URL"), "{not_web}");
        }
    }
}
