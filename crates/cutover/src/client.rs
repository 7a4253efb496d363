//! The CLI's HTTP client for the control plane's API.

use std::time::Duration;

use control::api::ErrorBody;
use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    token: Option<String>,
    /// The token is the session of `cutover login`, whose refusal the API explains.
    session: bool,
}

/// Why a request to the API failed. Only [`ClientError::Unreachable`] means that no control
/// plane runs there: an answer of any kind, a refusal of the token included, comes from one.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach cutover at {base} ({source}); is `cutover up` running? (set --api or CUTOVER_API)"
    )]
    Unreachable { base: String, source: reqwest::Error },
    #[error(
        "cutover at {base} answers with a certificate this CLI does not trust ({detail}); give \
         the CA that signed it with --ca-cert FILE or CUTOVER_CA_CERT"
    )]
    Untrusted { base: String, detail: String },
    #[error(
        "cutover at {base} is running but refused the API token ({status}): give the token \
         `cutover up` was started with, with --token or CUTOVER_TOKEN (when `cutover up` \
         generated it, it is in DATA_DIR/token)"
    )]
    Unauthorized { base: String, status: StatusCode },
    /// Single sign-on refused (the login, or the session it opened): the API says why and that
    /// `cutover login` signs in again.
    #[error("cutover at {base} refused the session of `cutover login` ({status}): {message}")]
    SignIn { base: String, status: StatusCode, message: String },
    /// The credential is valid but lacks a permission; the API says which and what grants it.
    #[error("cutover at {base} refused this credential (403 Forbidden): {message}")]
    Forbidden { base: String, message: String },
    /// The API's own message, which says what to do.
    #[error("{0}")]
    Api(String),
    #[error("cutover at {base} answered {status} to {path} without saying why; {hint}")]
    Unexplained { base: String, path: String, status: StatusCode, hint: &'static str },
    #[error("talking to {base}: {source}")]
    Transport { base: String, source: reqwest::Error },
    #[error("unexpected answer from {base} ({source}): {text}")]
    Unexpected { base: String, text: String, source: serde_json::Error },
}

impl ClientError {
    /// Whether no control plane answers at all (nothing listens, or it stopped).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. })
    }

    /// Whether the connection failed rather than the API refused: nothing listens, or it went
    /// away mid-request (a restart). Asking again may succeed.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. } | ClientError::Transport { .. })
    }
}

/// What is wrong with the server's certificate, when that is why a request failed (rustls's
/// own words, e.g. "invalid peer certificate: UnknownIssuer").
fn certificate_problem(err: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        let text = e.to_string();
        if text.contains("certificate") {
            return Some(text);
        }
        source = e.source();
    }
    None
}

/// The error for a non-2xx answer `text` to `path`: the API's message when it sent one.
fn answer_error(base: &str, path: &str, status: StatusCode, text: &str) -> ClientError {
    if status == StatusCode::FORBIDDEN
        && let Ok(body) = serde_json::from_str::<ErrorBody>(text)
        && !body.error.trim().is_empty()
    {
        return ClientError::Forbidden { base: base.to_string(), message: body.error };
    }
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return ClientError::Unauthorized { base: base.to_string(), status };
    }
    let message = match serde_json::from_str::<ErrorBody>(text) {
        Ok(body) => {
            let mut message = body.error;
            for diagnostic in body.diagnostics {
                message.push_str("\n  ");
                message.push_str(&diagnostic);
            }
            message
        }
        Err(_) if !text.trim().is_empty() => format!("{status}: {}", text.trim()),
        Err(_) => String::new(),
    };
    if !message.trim().is_empty() {
        return ClientError::Api(message);
    }
    let hint = if status == StatusCode::NOT_FOUND {
        "check the name or id (the `list` command of its kind shows them), and that this CLI is \
         the same version as `cutover up`"
    } else {
        "see the output of `cutover up`"
    };
    ClientError::Unexplained { base: base.to_string(), path: path.to_string(), status, hint }
}

impl Client {
    /// A client of the API at `base`; an HTTPS one trusts the system's CAs and `ca_certs`.
    pub fn new(
        base: String,
        token: Option<String>,
        ca_certs: Vec<reqwest::Certificate>,
    ) -> Result<Client, ClientError> {
        let mut builder =
            reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).no_proxy();
        for cert in ca_certs {
            builder = builder.add_root_certificate(cert);
        }
        let base = base.trim_end_matches('/').to_string();
        let http = builder
            .build()
            .map_err(|source| ClientError::Transport { base: base.clone(), source })?;
        Ok(Client { http, base, token, session: false })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request
    }

    /// Sends `request`; a 2xx answer is returned as it is, anything else as an error.
    fn send(
        &self,
        path: &str,
        request: reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response, ClientError> {
        let response = request.send().map_err(|source| {
            if let Some(detail) = certificate_problem(&source) {
                ClientError::Untrusted { base: self.base.clone(), detail }
            } else if source.is_connect() {
                ClientError::Unreachable { base: self.base.clone(), source }
            } else {
                ClientError::Transport { base: self.base.clone(), source }
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().unwrap_or_default();
        if status == StatusCode::UNAUTHORIZED
            && (self.session || path == crate::login::LOGIN_PATH)
            && let Ok(body) = serde_json::from_str::<ErrorBody>(&text)
        {
            return Err(ClientError::SignIn {
                base: self.base.clone(),
                status,
                message: body.error,
            });
        }
        Err(answer_error(&self.base, path, status, &text))
    }

    fn json<T: DeserializeOwned>(
        &self,
        path: &str,
        request: reqwest::blocking::RequestBuilder,
    ) -> Result<T, ClientError> {
        let text = self
            .send(path, request)?
            .text()
            .map_err(|source| ClientError::Transport { base: self.base.clone(), source })?;
        serde_json::from_str(&text).map_err(|source| ClientError::Unexpected {
            base: self.base.clone(),
            text,
            source,
        })
    }

    /// A client whose token is the session `cutover login` kept.
    pub fn with_session(self) -> Client {
        Client { session: true, ..self }
    }

    /// The API's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(path, self.request(reqwest::Method::GET, path))
    }

    /// A streamed answer (logs), with no overall timeout.
    pub fn get_text(&self, path: &str) -> Result<reqwest::blocking::Response, ClientError> {
        let request =
            self.request(reqwest::Method::GET, path).timeout(Duration::from_secs(24 * 3600));
        self.send(path, request)
    }

    /// A server-sent-event stream, with no overall timeout; `last_event_id` resumes after the
    /// event of that id, as a browser's `EventSource` does when it reconnects.
    pub fn get_events(
        &self,
        path: &str,
        last_event_id: Option<i64>,
    ) -> Result<reqwest::blocking::Response, ClientError> {
        let mut request = self
            .request(reqwest::Method::GET, path)
            .timeout(Duration::from_secs(24 * 3600))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        self.send(path, request)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.json(path, self.request(reqwest::Method::POST, path).json(body))
    }

    pub fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.json(path, self.request(reqwest::Method::PUT, path).json(body))
    }

    pub fn delete<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.json(path, self.request(reqwest::Method::DELETE, path).json(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_token_is_never_mistaken_for_anything_else() {
        for status in [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN] {
            let err = answer_error("http://127.0.0.1:1", "/v1/status", status, "");
            assert!(matches!(err, ClientError::Unauthorized { .. }), "{err}");
            assert!(!err.is_unreachable());
        }
        let err =
            answer_error("http://127.0.0.1:1", "/v1/x", StatusCode::FORBIDDEN, r#"{"error":"x"}"#);
        assert!(matches!(err, ClientError::Forbidden { .. }), "{err}");
        assert!(!err.is_unreachable());
    }

    #[test]
    fn an_answer_without_a_body_still_says_what_to_do() {
        let err = answer_error("http://127.0.0.1:1", "/v1/x", StatusCode::NOT_FOUND, "");
        let empty = r#"{"error": " "}"#;
        let empty_error = answer_error("http://127.0.0.1:1", "/v1/x", StatusCode::NOT_FOUND, empty);
        assert_eq!(empty_error.to_string(), err.to_string());
        assert_eq!(
            err.to_string(),
            "cutover at http://127.0.0.1:1 answered 404 Not Found to /v1/x without saying why; \
             check the name or id (the `list` command of its kind shows them), and that this CLI \
             is the same version as `cutover up`"
        );
    }
}
