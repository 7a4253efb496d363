//! The routing table of cutover's load balancer.
//!
//! The control plane computes a whole [`RouteTable`] from its state and sends it to the data plane
//! with a version number; the data plane swaps it in atomically and reports the version it serves.
//! Both sides use these types, so they cannot disagree about what a table means. The serde form is
//! the wire protocol between the two (`PUT /v1/routes` on the data plane's admin address), so
//! changes here must stay backward compatible or bump [`PROTOCOL_VERSION`].
//!
//! Invariant: this crate knows nothing of deployments, services or colours. A blue/green shift is
//! just a change of weights in a [`ForwardAction`].

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub mod acme;
pub mod latency;
pub mod redirect;
pub mod rules;
pub use rules::{Condition, QueryValue, Rule};

/// Bumped on any incompatible change of the wire form.
pub const PROTOCOL_VERSION: u32 = 1;

/// ALB's weight range for a weighted forward.
pub const WEIGHT_MAX: u16 = 999;

/// Everything the data plane serves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    /// Monotonically increasing; the data plane ignores a table older than the one it serves.
    pub version: u64,
    /// By listener name.
    pub listeners: BTreeMap<String, Listener>,
    /// By target-group name.
    pub target_groups: BTreeMap<String, TargetGroup>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Address and port to accept connections on.
    pub bind: SocketAddr,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The default action: what a request no rule takes gets.
    pub action: Action,
    /// ALB's listener rules, evaluated from the lowest priority up before the default action.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// ALB's `idle_timeout.timeout_seconds`, in milliseconds: a client connection with no data
    /// either way for this long is closed, and a target that sends no response headers for this
    /// long is answered with 504. `None` means ALB's default, [`DEFAULT_IDLE_TIMEOUT_MS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// What one client may hold of this listener; unset fields take the defaults.
    #[serde(default, skip_serializing_if = "ConnectionLimits::is_default")]
    pub limits: ConnectionLimits,
}

/// ALB's default idle timeout (60 s).
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;

/// A listener's limits on its client connections, as nginx and HAProxy operators set them. (The
/// total number of client connections is the data plane's own limit, derived from its open-file
/// limit.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionLimits {
    /// Connections one client address may hold open at once; its next one is closed at once.
    /// `None` means [`ConnectionLimits::DEFAULT_MAX_PER_CLIENT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_client: Option<u32>,
    /// nginx's `client_header_timeout`, HAProxy's `timeout http-request`, in milliseconds: the
    /// time a client has to send a complete request head from its first byte. A head still
    /// incomplete then is answered 408 and the connection closed; a new connection that sends
    /// nothing for this long is closed without an answer. Shorter than the idle timeout. `None` means [`ConnectionLimits::DEFAULT_HEADER_TIMEOUT_MS`], or the idle
    /// timeout when that is shorter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_timeout_ms: Option<u64>,
}

impl ConnectionLimits {
    pub const DEFAULT_MAX_PER_CLIENT: u32 = 1000;
    pub const MAX_PER_CLIENT_RANGE: std::ops::RangeInclusive<u32> = 1..=1_000_000;
    pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;

    pub fn is_default(&self) -> bool {
        *self == ConnectionLimits::default()
    }

    pub fn max_per_client(&self) -> u32 {
        self.max_per_client.unwrap_or(Self::DEFAULT_MAX_PER_CLIENT)
    }

    /// The header timeout in force with the idle timeout `idle_ms`.
    pub fn header_timeout_ms(&self, idle_ms: u64) -> u64 {
        self.header_timeout_ms.unwrap_or(Self::DEFAULT_HEADER_TIMEOUT_MS.min(idle_ms))
    }

    /// Why these limits cannot be served with the idle timeout `idle_ms`, if they cannot.
    pub fn check(&self, idle_ms: u64) -> Result<(), LimitsError> {
        if let Some(n) = self.max_per_client
            && !Self::MAX_PER_CLIENT_RANGE.contains(&n)
        {
            return Err(LimitsError::MaxPerClient { value: n });
        }
        if let Some(ms) = self.header_timeout_ms
            && (ms == 0 || ms >= idle_ms)
        {
            return Err(LimitsError::HeaderTimeout { header_ms: ms, idle_ms });
        }
        Ok(())
    }
}

/// Connection limits that cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error(
        "max_per_client {value} is not {min}-{max}",
        min = ConnectionLimits::MAX_PER_CLIENT_RANGE.start(),
        max = ConnectionLimits::MAX_PER_CLIENT_RANGE.end()
    )]
    MaxPerClient { value: u32 },
    #[error(
        "header_timeout_ms {header_ms} must be at least 1 and shorter than the idle timeout \
         ({idle_ms} ms): a client that stops sending its head is cut off before an idle one"
    )]
    HeaderTimeout { header_ms: u64, idle_ms: u64 },
}

/// Certificate and key files (PEM) for an HTTPS listener: its default certificate, and more
/// that a client gets when the host it names (SNI) is one of theirs, as an ALB listener's
/// certificate list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub certificate_file: String,
    pub key_file: String,
    /// Chosen by SNI, the first whose certificate names the host; the default otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateFiles>,
    /// Certificates for the listener's host names obtained over ACME, served by SNI after
    /// `certificates` once they are on disk; the default certificate is the first name's when
    /// `certificate_file` is one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<acme::Acme>,
}

/// One more certificate of an HTTPS listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    pub certificate_file: String,
    pub key_file: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    Forward(ForwardAction),
    FixedResponse(FixedResponse),
    Redirect(Redirect),
}

/// A (weighted) forward over up to five target groups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAction {
    pub target_groups: Vec<WeightedTargetGroup>,
    /// Lets a request choose one of these target groups itself, whatever the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Preview>,
    /// Sends a request another of these target groups failed again to one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Sends a copy of some of the requests to another of these target groups, whose answers
    /// are measured and discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
}

impl ForwardAction {
    /// A weighted forward without preview routing, retries or mirroring.
    pub fn weighted(target_groups: Vec<WeightedTargetGroup>) -> ForwardAction {
        ForwardAction { target_groups, preview: None, retry: None, mirror: None }
    }
}

/// A forward's mirror (cutover's own; ALB has none; Envoy's `request_mirror_policies`, Istio's
/// `mirror`): of the requests the forward sends to its other groups, `percent` are also sent, as
/// a copy, to `target_group`. The client gets the answer of the group its request was routed to
/// and never waits for the copy: the copy goes out beside the request, and its answer is read,
/// measured (in the mirror group's `mirrored` counters: status, response time, and whether its
/// status class differs from the answer the client got) and thrown away. Only when it is safe
/// and cheap: the method is one of `methods`, the request body was kept whole (a
/// `Content-Length` of at most `max_body_bytes`; a chunked body is never copied), the request
/// was not pinned by preview routing, and fewer than `max_in_flight` copies to the group are in
/// flight (a copy beyond it is not sent, and counted as dropped) — so a slow or dead mirror
/// group costs the clients nothing.
///
/// The same bounds as [`Retry`]'s, for the same reason: a request the data plane sends twice
/// must be one that may run twice, and one it can hold in memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// One of the forward's target groups, at any weight (usually 0).
    pub target_group: String,
    /// The share of the requests copied, 1–100: request `n` of those that may be copied is
    /// copied when `⌊n × percent / 100⌋` steps up, so the share is exact and evenly spread.
    pub percent: u8,
    /// Methods whose requests may be copied (uppercase tokens).
    #[serde(default = "Mirror::default_methods")]
    pub methods: Vec<String>,
    #[serde(default = "Mirror::default_max_body_bytes")]
    pub max_body_bytes: u32,
    #[serde(default = "Mirror::default_max_in_flight")]
    pub max_in_flight: u32,
}

impl Mirror {
    /// RFC 9110's safe methods (§9.2.1) but `TRACE`: a copy of a request that changes nothing
    /// changes nothing. Idempotent writes (`PUT`, `DELETE`) are not copied by default: sent by
    /// green's new code beside blue's, they would write twice, and write what no customer chose.
    pub const DEFAULT_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];
    /// Copies in flight to the mirror group at most, by default: enough for every copy of a
    /// busy service whose green answers as fast as blue, few enough that a green that hangs
    /// holds at most this many connections and buffers.
    pub const DEFAULT_MAX_IN_FLIGHT: u32 = 100;
    /// The most `max_in_flight` may be.
    pub const MAX_IN_FLIGHT_LIMIT: u32 = 10_000;

    /// A mirror of `percent` of the requests to `target_group`, with the defaults.
    pub fn to(target_group: impl Into<String>, percent: u8) -> Mirror {
        Mirror {
            target_group: target_group.into(),
            percent,
            methods: Self::default_methods(),
            max_body_bytes: Retry::DEFAULT_MAX_BODY_BYTES,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
        }
    }

    fn default_methods() -> Vec<String> {
        Self::DEFAULT_METHODS.iter().map(|m| m.to_string()).collect()
    }
    fn default_max_body_bytes() -> u32 {
        Retry::DEFAULT_MAX_BODY_BYTES
    }
    fn default_max_in_flight() -> u32 {
        Self::DEFAULT_MAX_IN_FLIGHT
    }

    /// Whether the `n`th request (0-based) of those that may be copied is copied: exactly
    /// `percent` of every hundred consecutive ones, spread evenly.
    pub fn copies(&self, n: u64) -> bool {
        let percent = u64::from(self.percent.min(100));
        (n.wrapping_add(1)).wrapping_mul(percent) / 100 != n.wrapping_mul(percent) / 100
    }
}

/// A forward's retry (cutover's own; ALB never retries): a request that went to one of the
/// forward's target groups other than `target_group` and failed there — the target answered
/// 5xx, or no connection could be made, or it was reset or answered garbage before any byte of
/// its answer went to the client — is sent once more, to `target_group`, and the client gets
/// that answer. The failure still counts in the metrics of the group that failed. Only when it
/// is safe: the method is one of `methods`, the request body was kept whole (a
/// `Content-Length` of at most `max_body_bytes`; a chunked body is never retried), and the
/// request was not pinned to its group by preview routing. A budget in Envoy's model keeps a
/// failing group from piling its load onto `target_group`: at most `budget_percent` of the
/// requests in flight on the forward's groups may be retries in flight, and never fewer than
/// `min_retry_concurrency`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// One of the forward's target groups, at any weight.
    pub target_group: String,
    /// Methods whose requests may be sent twice (uppercase tokens).
    #[serde(default = "Retry::default_methods")]
    pub methods: Vec<String>,
    #[serde(default = "Retry::default_max_body_bytes")]
    pub max_body_bytes: u32,
    #[serde(default = "Retry::default_budget_percent")]
    pub budget_percent: u8,
    #[serde(default = "Retry::default_min_retry_concurrency")]
    pub min_retry_concurrency: u32,
}

impl Retry {
    /// RFC 9110's idempotent methods (§9.2.2) but `TRACE`, which a load balancer never needs
    /// to send twice.
    pub const DEFAULT_METHODS: [&str; 5] = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"];
    /// The largest request body kept for a retry: a form or a JSON document, not an upload.
    pub const DEFAULT_MAX_BODY_BYTES: u32 = 64 * 1024;
    /// The most a body kept for a retry may be: what one request holds in memory.
    pub const MAX_BODY_BYTES_LIMIT: u32 = 1024 * 1024;
    /// Envoy's default share for `retry_budget`.
    pub const DEFAULT_BUDGET_PERCENT: u8 = 20;
    /// Envoy's floor is 3; this one is 10, because the retries go to blue, which carried all of
    /// production just before the deployment and keeps its tasks through it: at the handful of
    /// requests in flight where the floor decides (a few keep-alive clients at full speed), a
    /// floor of 3 turns a broken green's failures back into failed requests, while 10 requests
    /// in flight are nothing blue cannot take. Under real load the share decides.
    pub const DEFAULT_MIN_RETRY_CONCURRENCY: u32 = 10;

    /// A retry to `target_group` with the defaults.
    pub fn to(target_group: impl Into<String>) -> Retry {
        Retry {
            target_group: target_group.into(),
            methods: Self::default_methods(),
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            budget_percent: Self::DEFAULT_BUDGET_PERCENT,
            min_retry_concurrency: Self::DEFAULT_MIN_RETRY_CONCURRENCY,
        }
    }

    fn default_methods() -> Vec<String> {
        Self::DEFAULT_METHODS.iter().map(|m| m.to_string()).collect()
    }
    fn default_max_body_bytes() -> u32 {
        Self::DEFAULT_MAX_BODY_BYTES
    }
    fn default_budget_percent() -> u8 {
        Self::DEFAULT_BUDGET_PERCENT
    }
    fn default_min_retry_concurrency() -> u32 {
        Self::DEFAULT_MIN_RETRY_CONCURRENCY
    }

    /// A method name as `methods` takes it: an RFC 9110 token in uppercase.
    pub fn is_valid_method(method: &str) -> bool {
        (1..=32).contains(&method.len())
            && method.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
    }

    /// Retries that may be in flight while `in_flight` requests are (retries included): Envoy's
    /// `max(min_retry_concurrency, budget_percent × active requests)`.
    pub fn allowed_retries(&self, in_flight: u64) -> u64 {
        let share = in_flight.saturating_mul(u64::from(self.budget_percent)) / 100;
        share.max(u64::from(self.min_retry_concurrency))
    }
}

/// Preview routing (cutover's own; ALB has no equivalent): a request whose header or cookie
/// `name` has one of the `target_groups` keys as its value goes to that target group, even at
/// weight 0. Any other request follows the weights. The engine sets it on a production listener
/// while green serves the test listener, so that a tester can pin themselves to green (or blue).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preview {
    pub from: PreviewFrom,
    /// The header's name (any case) or the cookie's name (exact).
    pub name: String,
    /// Value → target group; each must be one of the forward's target groups.
    pub target_groups: BTreeMap<String, String>,
}

impl Preview {
    /// Longest name and value, in bytes.
    pub const TEXT_MAX: usize = 256;

    /// A header or cookie name: an RFC 9110 token (§5.6.2), which both may be.
    pub fn is_valid_name(name: &str) -> bool {
        (1..=Self::TEXT_MAX).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    }

    /// A value: visible characters without the `;` and `,` that separate cookies and list items.
    pub fn is_valid_value(value: &str) -> bool {
        (1..=Self::TEXT_MAX).contains(&value.len())
            && value.bytes().all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreviewFrom {
    Header,
    Cookie,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedTargetGroup {
    pub name: String,
    /// 0..=999, as on ALB. Requests split in proportion to the weights; a group at weight 0 gets
    /// nothing but stays referenced (and therefore health-checked), as CodeDeploy keeps the idle
    /// target group in the production rule.
    pub weight: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedResponse {
    pub status_code: u16,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub body: String,
}

/// ALB's redirect action. `None` parts keep the request's own; `host`, `path` and `query` may
/// reuse them with `#{protocol}`, `#{host}`, `#{port}`, `#{path}` and `#{query}`
/// ([`Redirect::location`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub path: Option<String>,
    /// Without the leading `?`; empty drops the request's query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// 301 or 302.
    pub status_code: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    pub health_check: HealthCheck,
    /// How long a deregistered target may finish its in-flight requests, in milliseconds.
    pub deregistration_delay_ms: u64,
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Registered targets. A target that disappears from this list starts draining.
    pub targets: Vec<Target>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    #[default]
    RoundRobin,
    LeastOutstandingRequests,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub addr: SocketAddr,
}

/// ALB's health-check settings for a target group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub enabled: bool,
    pub path: String,
    /// `None` means the traffic port.
    #[serde(default)]
    pub port: Option<u16>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// Inclusive ranges of accepted status codes: `200` is `[(200, 200)]`, `200-299,302` is
    /// `[(200, 299), (302, 302)]`.
    pub matcher: Vec<(u16, u16)>,
}

impl Default for HealthCheck {
    /// ALB's defaults for an HTTP target group.
    fn default() -> Self {
        HealthCheck {
            enabled: true,
            path: "/".to_string(),
            port: None,
            interval_ms: 30_000,
            timeout_ms: 5_000,
            healthy_threshold: 5,
            unhealthy_threshold: 2,
            matcher: vec![(200, 200)],
        }
    }
}

impl HealthCheck {
    pub fn matches(&self, status: u16) -> bool {
        self.matcher.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

/// Why a text is not an ALB matcher.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    #[error("`{code}` is not an HTTP status code in matcher `{matcher}`")]
    NotAStatusCode { code: String, matcher: String },
    #[error("status code {code} in matcher `{matcher}` is not 100-599")]
    OutOfRange { code: u16, matcher: String },
    #[error("range `{range}` in matcher `{matcher}` is backwards")]
    Backwards { range: String, matcher: String },
}

/// Parses an ALB matcher: `200`, `200-299`, `200,202,300-399`.
pub fn parse_matcher(text: &str) -> Result<Vec<(u16, u16)>, MatcherError> {
    let mut ranges = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let parse = |s: &str| -> Result<u16, MatcherError> {
            let code: u16 = s.trim().parse().map_err(|_| MatcherError::NotAStatusCode {
                code: s.to_string(),
                matcher: text.to_string(),
            })?;
            if !(100..=599).contains(&code) {
                return Err(MatcherError::OutOfRange { code, matcher: text.to_string() });
            }
            Ok(code)
        };
        let range = match part.split_once('-') {
            Some((lo, hi)) => (parse(lo)?, parse(hi)?),
            None => {
                let code = parse(part)?;
                (code, code)
            }
        };
        if range.0 > range.1 {
            return Err(MatcherError::Backwards {
                range: part.to_string(),
                matcher: text.to_string(),
            });
        }
        ranges.push(range);
    }
    Ok(ranges)
}

// ---------------------------------------------------------------------------------------------
// What the data plane reports back.

/// `GET /v1/routes` and the answer to `PUT /v1/routes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The version now served.
    pub version: u64,
}

/// `GET /v1/routes`: the table the data plane serves (version 0 and an empty table before the
/// first `PUT`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedRoutes {
    pub version: u64,
    pub table: RouteTable,
}

/// The body of every 4xx/5xx answer of the admin API: what went wrong and what to fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminError {
    pub error: String,
}

/// ALB's target health states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    Initial,
    Healthy,
    Unhealthy,
    Draining,
    Unused,
    Unavailable,
}

/// `GET /v1/health`: the health of every target the data plane knows, by target group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The route-table version the data plane serves.
    pub version: u64,
    pub target_groups: BTreeMap<String, Vec<TargetHealth>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHealth {
    pub addr: SocketAddr,
    pub state: TargetState,
    /// ALB's reason codes: `Elb.InitialHealthChecking`, `Target.ResponseCodeMismatch`,
    /// `Target.Timeout`, `Target.FailedHealthChecks`, `Target.DeregistrationInProgress`…
    #[serde(default)]
    pub reason: Option<String>,
    /// Human-readable detail, e.g. `health check returned 503`.
    #[serde(default)]
    pub description: Option<String>,
    /// Requests in flight to this target right now.
    #[serde(default)]
    pub in_flight: u64,
}

// ---------------------------------------------------------------------------------------------
// Metrics: `GET /v1/metrics` on the data plane.

/// Upper bounds, in microseconds, of the response-time histogram buckets (a last, implicit
/// bucket is `+Inf`). Fixed so that snapshots taken at different times can be subtracted.
pub const RESPONSE_TIME_BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// `GET /v1/metrics`: cumulative counters since the data plane started, like Prometheus counters.
///
/// The control plane turns them into per-period values (CloudWatch's `Sum` over a period) by
/// subtracting two snapshots. Counters of a target group or target restart from zero when it is
/// removed and added again, and all of them when `started_at_unix_ms` changes (a restart of the
/// data plane); a consumer treats a decrease as such a reset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// The route-table version served when the snapshot was taken.
    pub version: u64,
    /// When this data-plane process started (Unix epoch, ms): identifies the counter epoch.
    pub started_at_unix_ms: u64,
    /// When the snapshot was taken (Unix epoch, ms).
    pub taken_at_unix_ms: u64,
    /// Client connections open right now, over all listeners.
    pub client_connections: u64,
    /// The most client connections the data plane holds at once (from its open-file limit);
    /// at it, a new connection closes the oldest idle one.
    #[serde(default)]
    pub max_client_connections: u64,
    /// Accepts that failed (out of file descriptors and the like), over all listeners.
    #[serde(default)]
    pub accept_errors: u64,
    /// By listener name.
    #[serde(default)]
    pub listeners: BTreeMap<String, ListenerMetrics>,
    /// By target-group name; includes groups that left the table while their targets drain.
    #[serde(default)]
    pub target_groups: BTreeMap<String, TargetGroupMetrics>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerMetrics {
    pub bind: Option<SocketAddr>,
    /// Every request the listener answered, whatever its action.
    pub requests: u64,
    /// Client connections open right now.
    pub active_connections: u64,
    /// Answers of a fixed-response action.
    pub fixed_responses: u64,
    /// Answers of a redirect action.
    pub redirects: u64,
    /// 4xx the load balancer generated itself (malformed or smuggling requests: 400).
    pub elb_4xx: u64,
    /// 503 for a forward whose weights are all zero (no target group can be chosen).
    pub elb_503_no_group: u64,
    /// ALB's `RejectedConnectionCount`: connections closed at once on arrival, because their
    /// client address held `max_per_client` already.
    #[serde(default)]
    pub rejected_connections_per_client: u64,
    /// Connections closed at once on arrival because the data plane held its maximum and none
    /// of its connections was idle (ALB's `RejectedConnectionCount` too).
    #[serde(default)]
    pub rejected_connections_at_capacity: u64,
    /// Idle keep-alive connections closed, oldest first, to make room for new ones.
    #[serde(default)]
    pub shed_connections: u64,
    /// Request heads not complete within the header timeout (answered 408).
    #[serde(default)]
    pub header_timeouts: u64,
}

/// Counters of requests for which a target group (and usually a target) was chosen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounters {
    /// ALB's `RequestCount`: requests routed to this group or target.
    pub requests: u64,
    /// ALB's `HTTPCode_Target_2XX_Count` and siblings: status codes the targets sent.
    pub target_2xx: u64,
    pub target_3xx: u64,
    pub target_4xx: u64,
    pub target_5xx: u64,
    /// Status 1xx (101 Switching Protocols for WebSocket upgrades).
    #[serde(default)]
    pub target_1xx: u64,
    /// ALB's `HTTPCode_ELB_502_Count`: the target refused, reset or answered garbage.
    pub elb_502: u64,
    /// ALB's `HTTPCode_ELB_503_Count`: no registered target to send to.
    pub elb_503: u64,
    /// ALB's `HTTPCode_ELB_504_Count`: the target sent no response headers within the idle timeout.
    pub elb_504: u64,
    /// ALB's `TargetConnectionErrorCount`: failed connects to a target.
    pub target_connection_errors: u64,
    /// ALB's `TargetResponseTime`: from sending the request to receiving the response headers.
    pub response_time: Histogram,
}

/// A cumulative histogram: `buckets[i]` counts observations `<= RESPONSE_TIME_BUCKETS_US[i]`;
/// observations above the last bound are only in `count`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    pub buckets: Vec<u64>,
    pub sum_us: u64,
    pub count: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetGroupMetrics {
    #[serde(flatten)]
    pub counters: RequestCounters,
    /// ALB's `UnhealthyRoutingRequestCount`: requests routed by fail-open.
    pub unhealthy_routing_requests: u64,
    /// ALB's `HealthyHostCount` / `UnHealthyHostCount` right now (draining targets are in neither).
    pub healthy_host_count: u64,
    pub unhealthy_host_count: u64,
    /// Open connections to this group's targets right now (pooled, in use and upgraded).
    pub active_connections: u64,
    /// Requests this group failed that its forward's retry sent again to another group (see
    /// [`Retry`]); their failures are counted here all the same.
    #[serde(default)]
    pub retries: u64,
    /// Requests this group failed that would have been retried but for the retry budget: the
    /// client got this group's failure.
    #[serde(default)]
    pub retry_budget_exhausted: u64,
    /// New connections to a target that had not opened after the hedge delay (250 ms), so a
    /// connection to another target of the group was opened beside it (RFC 8305's attempt
    /// delay); the request went to whichever connected first.
    #[serde(default)]
    pub hedged_connects: u64,
    /// Hedged connections the second target won.
    #[serde(default)]
    pub hedges_won: u64,
    /// Targets this load balancer stopped picking for a while after their connection was
    /// refused, timed out or was outpaced by a hedge (nginx's `max_fails`/`fail_timeout`).
    #[serde(default)]
    pub passive_ejections: u64,
    /// Copies of requests a forward's mirror sent to this group (see [`Mirror`]); counted here
    /// only, never in `counters` nor in its targets' counters, which stay what clients got.
    #[serde(default, skip_serializing_if = "MirroredMetrics::is_empty")]
    pub mirrored: MirroredMetrics,
    pub targets: Vec<TargetMetrics>,
    /// The group's response times in fine buckets (`latency::latency_bucket`): `(bucket index,
    /// answers)` for the buckets that have any, cumulative since the group appeared, ascending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_time_fine: Vec<(u32, u64)>,
}

/// What a target group answered to the copies of requests mirrored to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirroredMetrics {
    /// `requests` is the copies sent; each ends in one status: the target's (`target_2xx`…),
    /// or the one the load balancer would have answered for it (`elb_502` refused, reset or
    /// garbage; `elb_503` no target; `elb_504` no answer within the listener's idle timeout).
    /// `response_time` is from sending the copy to its answer's head.
    #[serde(flatten)]
    pub counters: RequestCounters,
    /// Copies whose status class (2xx, 3xx, 4xx, 5xx) differed from the class of the answer
    /// the client got for the same request.
    pub mismatches: u64,
    /// Copies not sent because `max_in_flight` copies were in flight already.
    pub dropped: u64,
    /// The copies' response times in fine buckets, as [`TargetGroupMetrics::response_time_fine`]
    /// (so that a canary judge can rank them against blue's); empty from an older data plane.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_time_fine: Vec<(u32, u64)>,
}

impl MirroredMetrics {
    /// No copy was sent nor dropped: the group was never a mirror group.
    pub fn is_empty(&self) -> bool {
        self.counters.requests == 0 && self.dropped == 0
    }

    /// Copies answered with a 5xx, by a target or by the load balancer for it.
    pub fn server_errors(&self) -> u64 {
        let c = &self.counters;
        c.target_5xx + c.elb_502 + c.elb_503 + c.elb_504
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetMetrics {
    pub addr: SocketAddr,
    pub state: TargetState,
    #[serde(flatten)]
    pub counters: RequestCounters,
    /// Requests in flight right now.
    pub in_flight: u64,
    /// Open connections to the target right now (pooled, in use and upgraded).
    pub active_connections: u64,
    /// Upgraded (WebSocket) tunnels and other long-lived connections open right now.
    pub long_lived_connections: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_parse_like_alb() {
        assert_eq!(parse_matcher("200").unwrap(), vec![(200, 200)]);
        assert_eq!(parse_matcher("200-299,302").unwrap(), vec![(200, 299), (302, 302)]);
        assert_eq!(
            parse_matcher("299-200").unwrap_err().to_string(),
            "range `299-200` in matcher `299-200` is backwards"
        );
        assert!(parse_matcher("ok").is_err());
    }

    #[test]
    fn a_table_round_trips_through_json() {
        let mut table = RouteTable { version: 7, ..RouteTable::default() };
        table.target_groups.insert(
            "blue".into(),
            TargetGroup {
                health_check: HealthCheck::default(),
                deregistration_delay_ms: 300_000,
                algorithm: Algorithm::RoundRobin,
                targets: vec![Target { addr: "127.0.0.1:8080".parse().unwrap() }],
            },
        );
        table.listeners.insert(
            "prod".into(),
            Listener {
                bind: "127.0.0.1:8000".parse().unwrap(),
                tls: None,
                idle_timeout_ms: None,
                limits: ConnectionLimits::default(),
                rules: Vec::new(),
                action: Action::Forward(ForwardAction {
                    target_groups: vec![
                        WeightedTargetGroup { name: "blue".into(), weight: 100 },
                        WeightedTargetGroup { name: "green".into(), weight: 0 },
                    ],
                    preview: Some(Preview {
                        from: PreviewFrom::Header,
                        name: "X-Cutover-Preview".into(),
                        target_groups: [("green".into(), "green".into())].into(),
                    }),
                    retry: Some(Retry::to("blue")),
                    mirror: Some(Mirror::to("green", 50)),
                }),
            },
        );
        let json = serde_json::to_string(&table).unwrap();
        assert_eq!(serde_json::from_str::<RouteTable>(&json).unwrap(), table);
    }

    #[test]
    fn a_retry_given_only_its_group_takes_the_default_budget_and_the_idempotent_methods() {
        let retry: Retry = serde_json::from_str(r#"{"target_group": "blue"}"#).unwrap();
        assert_eq!(retry, Retry::to("blue"));
        assert_eq!(retry.methods, ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]);
        assert_eq!((retry.budget_percent, retry.min_retry_concurrency), (20, 10));
        assert_eq!(retry.max_body_bytes, 64 * 1024);
    }

    #[test]
    fn the_retry_budget_is_a_share_of_the_requests_in_flight_never_below_its_floor() {
        let retry = Retry { min_retry_concurrency: 3, ..Retry::to("blue") };
        assert_eq!(retry.allowed_retries(0), 3, "the floor with nothing in flight");
        assert_eq!(retry.allowed_retries(14), 3, "20% of 14 is under the floor");
        assert_eq!(retry.allowed_retries(100), 20);
        assert_eq!(retry.allowed_retries(1001), 200, "rounded down");
        let none = Retry { budget_percent: 0, min_retry_concurrency: 0, ..retry };
        assert_eq!(none.allowed_retries(1000), 0);
        assert_eq!(Retry::to("b").allowed_retries(u64::MAX), u64::MAX / 100, "no overflow");
    }

    #[test]
    fn a_mirror_copies_exactly_its_share_evenly_spread() {
        for percent in [1, 10, 33, 50, 99, 100] {
            let mirror = Mirror::to("green", percent);
            let copied = (0..1000).filter(|&n| mirror.copies(n)).count();
            assert_eq!(copied, usize::from(percent) * 10, "{percent}%");
        }
        let half = Mirror::to("green", 50);
        let pattern: Vec<bool> = (0..6).map(|n| half.copies(n)).collect();
        assert_eq!(pattern, [false, true, false, true, false, true], "every other request");
        assert!(!(0..1000).any(|n| Mirror::to("green", 0).copies(n)));
    }

    #[test]
    fn a_mirror_given_its_group_and_share_copies_only_safe_methods() {
        let mirror: Mirror =
            serde_json::from_str(r#"{"target_group": "green", "percent": 20}"#).unwrap();
        assert_eq!(mirror, Mirror::to("green", 20));
        assert_eq!(mirror.methods, ["GET", "HEAD", "OPTIONS"]);
        assert_eq!((mirror.max_body_bytes, mirror.max_in_flight), (64 * 1024, 100));
    }

    #[test]
    fn preview_names_are_tokens_and_values_are_single_visible_words() {
        for ok in ["X-Deploy-Version", "deploy_version", "a"] {
            assert!(Preview::is_valid_name(ok), "{ok}");
        }
        for bad in ["", "X Deploy", "a:b", "a;b", "é", &"a".repeat(257)] {
            assert!(!Preview::is_valid_name(bad), "{bad}");
        }
        assert!(Preview::is_valid_value("green"));
        for bad in ["", "a b", "a;b", "a,b", "é"] {
            assert!(!Preview::is_valid_value(bad), "{bad}");
        }
    }
}
