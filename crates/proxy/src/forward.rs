//! The request path: pick the route once, choose a target group by weight and a target by the
//! group's algorithm, clean the request like ALB does, forward it over a pooled keep-alive
//! connection and stream the answer back. Every failure becomes a well-formed 400/502/503/504.

use std::net::IpAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use routes::rules::RequestView;

use crate::listener::ListenerShared;
use crate::metrics::{self as m};
use crate::mirror::Mirrorable;
use crate::state::{CompiledAction, Fixed, Shared};
use crate::target::{GroupRt, InFlight, TargetRt};
use crate::upstream::UpstreamConn;
use crate::upstream::{self, ClientFault, UpstreamBody};

/// Targets one request may try when connections are refused (nginx's `proxy_next_upstream
/// error`): a task that just died, before the health checks notice, costs no request. Only a
/// failed connect moves a request on — by then nothing of it has reached any target.
const MAX_CONNECT_ATTEMPTS: usize = 3;

/// How long a new connection to a target may take before a connection to another target of its
/// group is opened beside it: RFC 8305's recommended "Connection Attempt Delay". A target on the
/// same LAN or overlay answers a SYN in well under a millisecond, and the kernel resends a lost
/// SYN only after 1 s, so a connection not open after 250 ms is almost surely lost (a dead
/// machine, a full accept queue), while a hedge rarely fires on a merely busy target.
const HEDGE_DELAY: Duration = Duration::from_millis(250);

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// One client connection, as every request on it needs it.
pub struct ConnCtx {
    pub shared: Arc<Shared>,
    pub listener: Arc<ListenerShared>,
    pub client_ip: HeaderValue,
    /// The client's address, for `source-ip` conditions.
    pub peer_ip: IpAddr,
    pub tls: bool,
    /// Whether the connection is idle, for shedding at the connection cap.
    pub slot: Arc<crate::limits::ConnSlot>,
}

/// The body of every response the load balancer sends.
pub enum ProxyBody {
    Target(TargetBody),
    Full(Option<Bytes>),
}

impl ProxyBody {
    fn empty() -> Self {
        ProxyBody::Full(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = upstream::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, upstream::Error>>> {
        match self.get_mut() {
            ProxyBody::Target(t) => t.poll_frame(cx),
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Target(t) => t.inner.is_end_stream(),
            ProxyBody::Full(data) => data.is_none(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Target(t) => t.inner.size_hint(),
            ProxyBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// A target's response body: keeps the request counted in flight, and gives the keep-alive
/// connection back to the pool once the body has been read to the end.
pub struct TargetBody {
    inner: UpstreamBody,
    /// The worker whose pool the connection goes back to.
    worker: usize,
    guard: InFlight,
    /// A retry's place in its budget, held until its answer has gone to the client.
    _permit: Option<RetryPermit>,
}

impl TargetBody {
    #[inline]
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, upstream::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.give_back();
        }
        polled
    }

    /// Pools the connection if the body was read to its end and the connection is reusable;
    /// a body abandoned midway takes its connection down with it.
    #[inline]
    fn give_back(&mut self) {
        if let Some(conn) = self.inner.take_reusable() {
            self.guard.target.give_back(self.worker, conn);
        }
    }
}

impl Drop for TargetBody {
    fn drop(&mut self) {
        // hyper stops polling once a body says it has ended; the connection is reusable then.
        self.give_back();
    }
}

pub fn lb_response(status: StatusCode, close: bool) -> Response<ProxyBody> {
    let body: &'static str = match status.as_u16() {
        400 => "400 Bad Request\n",
        405 => "405 Method Not Allowed\n",
        408 => "408 Request Time-out\n",
        414 => "414 Request-URI Too Large\n",
        431 => "431 Request Header Fields Too Large\n",
        502 => "502 Bad Gateway\n",
        503 => "503 Service Temporarily Unavailable\n",
        504 => "504 Gateway Time-out\n",
        _ => "",
    };
    let mut r = Response::new(ProxyBody::Full(Some(Bytes::from_static(body.as_bytes()))));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::SERVER, HeaderValue::from_static("cutover"));
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Where a request goes, decided once from the table it arrived under.
pub enum Routed {
    /// To this target, waiting at most this long for its answer; whether it may be retried;
    /// whether a copy of it goes to a mirror group.
    Forward(Arc<TargetRt>, Duration, Option<Retryable>, Option<Mirrorable>),
    /// The load balancer answers itself (fixed response, redirect, 503).
    Respond(Response<ProxyBody>),
}

/// A request as routing sees it: what listener rules look at, and its fields in order (read
/// only when a forward has preview routing).
pub trait Routable: RequestView {
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])>;
}

/// Picks the action of the connection's listener for `req` (its first rule that takes it, or its
/// default action), a target group by weight and a target in it; counts the request.
/// `redirect` builds a redirect from the request it knows.
pub fn route<R: Routable>(
    ctx: &ConnCtx,
    req: &R,
    redirect: impl FnOnce(&routes::Redirect) -> Response<ProxyBody>,
) -> Routed {
    let lc = &ctx.listener.counters;
    let table = ctx.shared.table.load();
    let Some(route) = table.slots.get(ctx.listener.slot).and_then(Option::as_ref) else {
        // The listener is being removed; this connection is closing.
        return Routed::Respond(lb_response(StatusCode::SERVICE_UNAVAILABLE, true));
    };
    match route.action_for(req) {
        CompiledAction::Fixed(f) => {
            lc.inc(m::L_FIXED);
            Routed::Respond(fixed(f))
        }
        CompiledAction::Redirect(r) => {
            lc.inc(m::L_REDIRECT);
            Routed::Respond(redirect(r))
        }
        CompiledAction::Forward(fwd) => {
            let previewed = fwd.preview.as_ref().and_then(|p| p.choose(req.fields()));
            let pinned = previewed.is_some();
            let Some(mut group) = previewed.or_else(|| fwd.choose()) else {
                lc.inc(m::L_ELB503);
                return Routed::Respond(lb_response(StatusCode::SERVICE_UNAVAILABLE, false));
            };
            // A request pinned by preview routing wants that group's answer, failure or not.
            let retry = fwd.retry.as_deref().filter(|r| !pinned && !Arc::ptr_eq(group, &r.to));
            let mut picked = group.pick();
            if picked.is_none()
                && let Some(r) = retry
            {
                // A group without a target (its last one just left the table) sends nothing
                // anywhere yet: the retry group takes the request, whatever its method.
                group = &r.to;
                picked = group.pick();
            }
            group.counters.inc(m::REQUESTS);
            let Some((target, fail_open)) = picked else {
                group.counters.inc(m::ELB503);
                return Routed::Respond(lb_response(StatusCode::SERVICE_UNAVAILABLE, false));
            };
            if fail_open {
                group.counters.inc(m::FAIL_OPEN);
            }
            let retryable = retry
                .filter(|r| !Arc::ptr_eq(group, &r.to) && r.allows(req.method()))
                .map(|r| Retryable { max_body_bytes: r.max_body_bytes });
            // A tester pinned by preview routing asked for one version only.
            let mirror = fwd
                .mirror
                .as_deref()
                .filter(|m| !pinned && !Arc::ptr_eq(group, &m.to) && m.allows(req.method()))
                .filter(|m| m.takes_next())
                .map(Mirrorable::of);
            Routed::Forward(target, route.idle_timeout, retryable, mirror)
        }
    }
}

/// A request its forward's retry may send again should its group fail it (see
/// [`routes::Retry`]): its method is one the retry takes, it was not pinned by preview routing,
/// and its group is not the retry group itself. Whether its body can be kept is the caller's to
/// tell.
#[derive(Clone, Copy, Debug)]
pub struct Retryable {
    /// The largest body kept for a retry.
    pub max_body_bytes: u64,
}

/// Why a failed request was not retried.
#[derive(Debug, PartialEq, Eq)]
pub enum NoRetry {
    /// The table served now has no retry for the group that failed (it changed meanwhile), or
    /// the retry group has no target.
    NoRetryGroup,
    /// The retry budget is spent; counted in the failed group's `retry_budget_exhausted`.
    BudgetExhausted,
}

/// A retry in flight, counted in its retry group's budget until dropped.
pub struct RetryPermit {
    group: Arc<GroupRt>,
}

impl Drop for RetryPermit {
    fn drop(&mut self) {
        self.group.retries_in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A target of the retry group for a request `failed` could not serve, with its place in the
/// budget, under the table served now (a rollback may have weighted `failed`'s group 0 since;
/// its requests in flight are retried all the same). Counts the retry, or the spent budget, in
/// the failed group's metrics, and the request in the retry group's.
pub fn retry_target(
    ctx: &ConnCtx,
    failed: &TargetRt,
) -> Result<(Arc<TargetRt>, RetryPermit), NoRetry> {
    let table = ctx.shared.table.load();
    let route = table.slots.get(ctx.listener.slot).and_then(Option::as_ref);
    let found = route.into_iter().flat_map(|r| r.actions()).find_map(|action| match action {
        CompiledAction::Forward(fwd) => {
            let retry = fwd.retry.as_deref()?;
            Some((retry, retry.failed_group(&failed.group_counters)?))
        }
        _ => None,
    });
    let Some((retry, failed_group)) = found else { return Err(NoRetry::NoRetryGroup) };
    let allowed = retry.policy.allowed_retries(retry.in_flight());
    let to = &retry.to;
    let before = to.retries_in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let permit = RetryPermit { group: to.clone() };
    if before >= allowed {
        failed_group.counters.inc(m::RETRY_BUDGET_EXHAUSTED);
        return Err(NoRetry::BudgetExhausted);
    }
    let Some((target, fail_open)) = to.pick() else { return Err(NoRetry::NoRetryGroup) };
    failed_group.counters.inc(m::RETRIES);
    to.counters.inc(m::REQUESTS);
    if fail_open {
        to.counters.inc(m::FAIL_OPEN);
    }
    Ok((target, permit))
}

/// Handles one HTTP/2 client request (HTTP/1 connections are served by [`crate::h1`]); never
/// fails.
pub async fn handle(ctx: Arc<ConnCtx>, req: Request<Incoming>) -> Response<ProxyBody> {
    let lc = &ctx.listener.counters;
    lc.inc(m::L_REQUESTS);
    if conflicting_framing(req.headers()) {
        lc.inc(m::L_ELB4XX);
        return lb_response(StatusCode::BAD_REQUEST, true);
    }
    if req.method() == Method::CONNECT {
        lc.inc(m::L_ELB4XX);
        return lb_response(StatusCode::METHOD_NOT_ALLOWED, false);
    }
    let authority = req.uri().authority().map(|a| a.as_str());
    let Some(host) = target_host(authority, req.headers().get_all(header::HOST).iter()) else {
        lc.inc(m::L_ELB4XX);
        return lb_response(StatusCode::BAD_REQUEST, false);
    };
    let view = H2Request { req: &req, host: &host, source: ctx.peer_ip };
    let routed = route(&ctx, &view, |r| {
        let host = host.to_str().unwrap_or("");
        redirect(r, host, req.uri().path(), req.uri().query(), &ctx)
    });
    match routed {
        Routed::Respond(resp) => resp,
        Routed::Forward(target, timeout, retryable, mirror) => {
            let ctx = &ctx;
            mirrored(ctx, req, host, timeout, mirror, |req| {
                forward(ctx, req, target, timeout, retryable)
            })
            .await
        }
    }
}

/// Sends a copy of an HTTP/2 client's request to its forward's mirror group (see
/// [`crate::mirror`]) beside forwarding it with `forward`, when its body can be kept whole: a
/// request without a body, or with a `content-length` of at most the mirror's bound, read to
/// its end first (as over HTTP/1); a longer body, or one of unknown length, streams through as
/// always and is not copied. The copy learns the status the client got, for its mismatch count.
async fn mirrored<F>(
    ctx: &ConnCtx,
    mut req: Request<Incoming>,
    host: HeaderValue,
    timeout: Duration,
    mirror: Option<Mirrorable>,
    forward: impl FnOnce(Request<H2Body>) -> F,
) -> Response<ProxyBody>
where
    F: std::future::Future<Output = Response<ProxyBody>>,
{
    prepare_request(ctx, &mut req, host);
    let fits = |m: &Mirrorable| {
        req.body().is_end_stream()
            || declared_length(req.headers()).is_some_and(|n| n <= m.max_body_bytes)
    };
    let Some(mirror) = mirror.filter(fits) else {
        return forward(req.map(H2Body::Client)).await;
    };
    let (parts, body) = req.into_parts();
    let kept = match keep_whole(ctx, body, declared_length(&parts.headers), timeout).await {
        Ok(kept) => kept,
        Err(resp) => return resp,
    };
    let framing =
        if kept.is_empty() { upstream::Framing::Empty } else { upstream::Framing::Length };
    let mut copy = Vec::with_capacity(512 + kept.len());
    upstream::encode_head(&parts, framing, &mut copy);
    let head_len = copy.len();
    copy.extend_from_slice(&kept);
    let head_method = parts.method == Method::HEAD;
    let worker = crate::workers::current();
    let told = crate::mirror::send(mirror, &copy, head_len, head_method, timeout, worker);
    let body = if kept.is_empty() { H2Body::Kept(None) } else { H2Body::Kept(Some(kept)) };
    let resp = forward(Request::from_parts(parts, body)).await;
    if let Some(told) = told {
        told.tell(resp.status());
    }
    resp
}

/// The one `content-length` of a request, if it declares one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (Some(value), None) => upstream::parse_length(value.as_bytes()),
        _ => None,
    }
}

/// Reads an HTTP/2 request's body (of `length` bytes, or none) to its end within `timeout`;
/// the client's fault (a stall: 408, a reset or a body of another length: 400) is the answer.
async fn keep_whole(
    ctx: &ConnCtx,
    mut body: Incoming,
    length: Option<u64>,
    timeout: Duration,
) -> Result<Bytes, Response<ProxyBody>> {
    use http_body_util::BodyExt as _;
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let length = length.unwrap_or(0);
    let mut kept = BytesMut::with_capacity(length as usize);
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(ClientFault::from)?;
            if let Ok(data) = frame.into_data() {
                kept.extend_from_slice(&data);
                if kept.len() as u64 > length {
                    return Err(ClientFault::TooLong);
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, read).await {
        Err(_elapsed) => Err(client_fault(ctx, ClientFault::Stalled)),
        Ok(Err(fault)) => Err(client_fault(ctx, fault)),
        // hyper checks the body against its `content-length`: a shorter one is a stream error.
        Ok(Ok(())) => Ok(kept.freeze()),
    }
}

/// An HTTP/2 client's request body as it goes to a target.
enum H2Body {
    /// Streamed from the client as its frames arrive.
    Client(Incoming),
    /// Read whole first (see [`mirrored`]); `None` when empty.
    Kept(Option<Bytes>),
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            H2Body::Client(incoming) => Pin::new(incoming).poll_frame(cx),
            H2Body::Kept(kept) => Poll::Ready(kept.take().map(|data| Ok(Frame::data(data)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            H2Body::Client(incoming) => incoming.is_end_stream(),
            H2Body::Kept(kept) => kept.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            H2Body::Client(incoming) => incoming.size_hint(),
            H2Body::Kept(kept) => SizeHint::with_exact(kept.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

/// An HTTP/2 request as routing sees it.
struct H2Request<'a> {
    req: &'a Request<Incoming>,
    host: &'a HeaderValue,
    source: IpAddr,
}

impl RequestView for H2Request<'_> {
    fn host(&self) -> &[u8] {
        self.host.as_bytes()
    }
    fn path(&self) -> &[u8] {
        self.req.uri().path().as_bytes()
    }
    fn query(&self) -> Option<&[u8]> {
        self.req.uri().query().map(str::as_bytes)
    }
    fn method(&self) -> &[u8] {
        self.req.method().as_str().as_bytes()
    }
    fn source_ip(&self) -> IpAddr {
        self.source
    }
    fn any_header(&self, name: &[u8], matches: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        // HTTP/2 field names are lowercase already, as `name` is.
        self.req
            .headers()
            .iter()
            .any(|(n, v)| n.as_str().as_bytes() == name && matches(v.as_bytes()))
    }
}

impl Routable for H2Request<'_> {
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.req.headers().iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    }
}

/// The Host an HTTP/2 request's target gets (RFC 9113 §8.3.1): its `:authority`, which a
/// `host` field, if there is one, must name too; without `:authority`, its one `host` field.
/// Either must be a valid host (see [`crate::fields::is_valid_host`]). `None`: the request is
/// malformed (400) — no authority at all, two `host` fields, or a `host` that disagrees.
fn target_host<'a>(
    authority: Option<&str>,
    mut hosts: impl Iterator<Item = &'a HeaderValue>,
) -> Option<HeaderValue> {
    let (host, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return None;
    }
    let value = match (authority, host) {
        (Some(a), Some(h)) if !a.as_bytes().eq_ignore_ascii_case(h.as_bytes()) => return None,
        (Some(a), _) => HeaderValue::from_str(a).ok()?,
        (None, Some(h)) => h.clone(),
        (None, None) => return None,
    };
    crate::fields::is_valid_host(value.as_bytes()).then_some(value)
}

/// Smuggling-shaped framing in an HTTP/2 request (HTTP/1 heads are checked by [`crate::h1`]).
#[inline]
fn conflicting_framing(h: &HeaderMap) -> bool {
    let mut lengths = h.get_all(header::CONTENT_LENGTH).iter();
    lengths.next().is_some()
        && (lengths.next().is_some() || h.contains_key(header::TRANSFER_ENCODING))
}

fn fixed(f: &Fixed) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::Full(Some(f.body.clone())));
    *r.status_mut() = f.status;
    r.headers_mut().insert(header::CONTENT_TYPE, f.content_type.clone());
    r.headers_mut().insert(header::SERVER, HeaderValue::from_static("cutover"));
    r
}

/// A redirect for a request to `host` (the Host header, perhaps with a port), `path`, `query`.
pub fn redirect(
    r: &routes::Redirect,
    host: &str,
    path: &str,
    query: Option<&str>,
    ctx: &ConnCtx,
) -> Response<ProxyBody> {
    let parts = routes::redirect::RequestParts {
        protocol: if ctx.tls { "https" } else { "http" },
        // The Host header may carry a port; the redirect's port decides.
        host: strip_port(host),
        port: ctx.listener.bind.port(),
        path,
        query,
    };
    let Ok(location) = HeaderValue::from_str(&r.location(&parts)) else {
        return lb_response(StatusCode::BAD_REQUEST, true);
    };
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() =
        StatusCode::from_u16(r.status_code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    resp.headers_mut().insert(header::LOCATION, location);
    resp.headers_mut().insert(header::SERVER, HeaderValue::from_static("cutover"));
    resp
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Forwards an HTTP/2 client's request (prepared for its target) to `target`, and to the retry
/// group should `target` fail it when it may be retried.
async fn forward(
    ctx: &ConnCtx,
    req: Request<H2Body>,
    target: Arc<TargetRt>,
    timeout: Duration,
    retryable: Option<Retryable>,
) -> Response<ProxyBody> {
    let worker = crate::workers::current();
    // HTTP/2 request bodies are not kept for a retry: a request without one is, to be sent
    // again.
    let kept = retryable.filter(|_| req.body().is_end_stream()).map(|_| bodiless_copy(&req));
    let awaiting_client = Arc::new(AtomicBool::new(false));
    let req = req.map(|inner| ClientStream { inner, awaiting_client: awaiting_client.clone() });
    let tried = attempt(ctx, req, target, timeout, worker, &awaiting_client).await;
    let Some(kept) = kept.filter(|_| tried.may_retry()) else {
        return tried.into_response(worker, None);
    };
    let Some(failed) = tried.target() else { return tried.into_response(worker, None) };
    match retry_target(ctx, &failed) {
        Ok((target, permit)) => {
            // The failed try is over (its connection goes with its answer).
            drop(tried);
            let idle = Arc::new(AtomicBool::new(false));
            let retried = attempt(ctx, kept, target, timeout, worker, &idle).await;
            retried.into_response(worker, Some(permit))
        }
        Err(why) => {
            tracing::debug!(target = %failed.addr, "not retried: {why:?}");
            tried.into_response(worker, None)
        }
    }
}

/// A request without a body, as it goes to a target, to send again.
fn bodiless_copy<B>(req: &Request<B>) -> Request<http_body_util::Empty<Bytes>> {
    let mut copy = Request::new(http_body_util::Empty::new());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// How one try of an HTTP/2 client's request at a target ended.
enum Tried {
    /// The target answered (counted in its metrics).
    Answered(InFlight, Response<UpstreamBody>),
    /// The target failed before any answer (its 502 counted): the client's answer, unless a
    /// retry mends it.
    Failed(Arc<TargetRt>, Response<ProxyBody>),
    /// An answer that stands: a timeout, or the client's own fault.
    Final(Response<ProxyBody>),
}

impl Tried {
    /// A 5xx or a failure before any answer: a retry may mend it.
    fn may_retry(&self) -> bool {
        match self {
            Tried::Answered(_, resp) => resp.status().is_server_error(),
            Tried::Failed(..) => true,
            Tried::Final(_) => false,
        }
    }

    fn target(&self) -> Option<Arc<TargetRt>> {
        match self {
            Tried::Answered(guard, _) => Some(guard.target.clone()),
            Tried::Failed(target, _) => Some(target.clone()),
            Tried::Final(_) => None,
        }
    }

    /// The answer for the client; a retry's `permit` lasts as long as its answer's body.
    fn into_response(self, worker: usize, permit: Option<RetryPermit>) -> Response<ProxyBody> {
        let (guard, resp) = match self {
            Tried::Answered(guard, resp) => (guard, resp),
            Tried::Failed(_, resp) | Tried::Final(resp) => return resp,
        };
        let (mut parts, body) = resp.into_parts();
        if needs_cleaning(&parts.headers) {
            strip_hop_by_hop(&mut parts.headers);
        }
        let body = TargetBody { inner: body, worker, guard, _permit: permit };
        Response::from_parts(parts, ProxyBody::Target(body))
    }
}

/// Sends `req` to `target` (or another target of its group when its connection is refused)
/// within `timeout`, and counts the answer in its metrics.
async fn attempt<B>(
    ctx: &ConnCtx,
    req: Request<B>,
    target: Arc<TargetRt>,
    timeout: Duration,
    worker: usize,
    awaiting_client: &AtomicBool,
) -> Tried
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<ClientFault>,
{
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut guard = InFlight::new(target);
    let opened = tokio::time::timeout_at(deadline, open_upstream(ctx, &mut guard, worker)).await;
    let t = &guard.target;
    let (conn, reused) = match opened {
        Err(_elapsed) => {
            t.counters.inc(m::ELB504);
            t.group_counters.inc(m::ELB504);
            return Tried::Final(lb_response(StatusCode::GATEWAY_TIMEOUT, false));
        }
        Ok(Err(resp)) => return Tried::Failed(guard.target.clone(), resp),
        Ok(Ok(opened)) => opened,
    };
    let sent = tokio::time::timeout_at(deadline, upstream::send(t, conn, reused, req)).await;
    let resp = match sent {
        Err(_elapsed) if awaiting_client.load(Ordering::Relaxed) => {
            return Tried::Final(client_fault(ctx, ClientFault::Stalled));
        }
        Err(_elapsed) => {
            t.counters.inc(m::ELB504);
            t.group_counters.inc(m::ELB504);
            return Tried::Final(lb_response(StatusCode::GATEWAY_TIMEOUT, false));
        }
        Ok(Err(upstream::Error::RequestBody(fault))) => {
            return Tried::Final(client_fault(ctx, fault));
        }
        Ok(Err(e)) => {
            tracing::debug!(target = %t.addr, "target failed: {e}");
            t.counters.inc(m::ELB502);
            t.group_counters.inc(m::ELB502);
            return Tried::Failed(t.clone(), lb_response(StatusCode::BAD_GATEWAY, false));
        }
        Ok(Ok(answer)) => answer,
    };
    let us = started.elapsed().as_micros() as u64;
    let status = resp.status();
    t.counters.observe_us(us);
    t.group_counters.observe_us(us);
    t.counters.status(status.as_u16());
    t.group_counters.status(status.as_u16());

    if status == StatusCode::SWITCHING_PROTOCOLS {
        // HTTP/2 has no upgrades, so none was asked for; a target may not switch unasked.
        t.counters.inc(m::ELB502);
        t.group_counters.inc(m::ELB502);
        return Tried::Failed(t.clone(), lb_response(StatusCode::BAD_GATEWAY, false));
    }
    Tried::Answered(guard, resp)
}

/// The client's own fault (see [`ClientFault`]): a client error of the listener, never of the
/// target group; answered if its stream still listens.
fn client_fault(ctx: &ConnCtx, fault: ClientFault) -> Response<ProxyBody> {
    tracing::debug!(client = ?ctx.client_ip, "client error: {fault}");
    ctx.listener.counters.inc(m::L_ELB4XX);
    lb_response(fault.status().unwrap_or(StatusCode::BAD_REQUEST), false)
}

/// An HTTP/2 client's request body that remembers whether its last poll waited on the client,
/// so that a request timing out then is the client's fault (408), not its target's (504).
struct ClientStream {
    inner: H2Body,
    awaiting_client: Arc<AtomicBool>,
}

impl Body for ClientStream {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        self.awaiting_client.store(polled.is_pending(), Ordering::Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection for the request `guard` counts in flight to its target; a refused connection
/// moves the request (and `guard`) to another target of the group, and a slow one races one to
/// another target ([`connect_hedged`]). A target whose connection failed or was outpaced is
/// passively ejected ([`TargetRt::eject`]). The caller holds the guard, so it still knows the
/// target when this is cut short by a timeout. The error is the answer for the client.
pub async fn open_upstream(
    ctx: &ConnCtx,
    guard: &mut InFlight,
    worker: usize,
) -> Result<(Box<UpstreamConn>, bool), Response<ProxyBody>> {
    let mut attempt = 1;
    loop {
        let t = &guard.target;
        t.counters.inc(m::REQUESTS);
        let opened = if t.closer.is_closed() {
            Err(upstream::Error::Closed)
        } else if let Some(idle) = t.checkout(worker) {
            return Ok((idle, true));
        } else {
            connect_hedged(ctx, guard, worker).await
        };
        match opened {
            Ok(opened) => return Ok(opened),
            Err(e) => {
                let t = &guard.target;
                connect_failed(t, &e);
                if attempt < MAX_CONNECT_ATTEMPTS
                    && let Some(next) = another_target(ctx, t)
                {
                    attempt += 1;
                    *guard = InFlight::new(next);
                    continue;
                }
                t.counters.inc(m::ELB502);
                t.group_counters.inc(m::ELB502);
                return Err(lb_response(StatusCode::BAD_GATEWAY, false));
            }
        }
    }
}

/// A new connection for the request `guard` counts: to its target, or, when that one has not
/// opened within [`HEDGE_DELAY`] and the group has another target, to whichever of the two
/// opens first (the guard moves with the request; the other attempt is dropped). Nothing of
/// the request is sent before, so this is safe for every method. A target outpaced by the
/// other is ejected; one that fails while the other still tries is counted and ejected here,
/// and the request waits for the other. The error is the last target's, which `guard` then
/// counts. With no other target, the connect timeout (10 s, ALB's) is the bound.
async fn connect_hedged(
    ctx: &ConnCtx,
    guard: &mut InFlight,
    worker: usize,
) -> Result<(Box<UpstreamConn>, bool), upstream::Error> {
    let slow = guard.target.clone();
    let mut first = pin!(UpstreamConn::connect(slow.addr, &slow.closer));
    if let Ok(opened) = tokio::time::timeout(HEDGE_DELAY, &mut first).await {
        return opened.map(|conn| (conn, false));
    }
    let Some(other) = another_target(ctx, &slow) else {
        return first.await.map(|conn| (conn, false));
    };
    slow.group_counters.inc(m::HEDGED_CONNECTS);
    let mut hedge = pin!(upstream::checkout_or_connect(&other, worker));
    tokio::select! {
        biased;
        opened = &mut first => match opened {
            Ok(conn) => Ok((conn, false)),
            Err(e) => {
                connect_failed(&slow, &e);
                move_request(guard, &other);
                hedge.await
            }
        },
        opened = &mut hedge => match opened {
            Ok(opened) => {
                tracing::debug!(target = %slow.addr, to = %other.addr, "connect outpaced by a hedge");
                slow.counters.inc(m::CONN_ERRORS);
                slow.group_counters.inc(m::CONN_ERRORS);
                slow.group_counters.inc(m::HEDGES_WON);
                slow.eject();
                move_request(guard, &other);
                Ok(opened)
            }
            Err(e) => {
                connect_failed(&other, &e);
                first.await.map(|conn| (conn, false))
            }
        },
    }
}

/// Counts a connection `target` could not open, and ejects it.
fn connect_failed(target: &TargetRt, e: &upstream::Error) {
    tracing::debug!(target = %target.addr, "{e}");
    target.counters.inc(m::CONN_ERRORS);
    target.group_counters.inc(m::CONN_ERRORS);
    target.eject();
}

/// Moves the request `guard` counts to `to`.
fn move_request(guard: &mut InFlight, to: &Arc<TargetRt>) {
    to.counters.inc(m::REQUESTS);
    *guard = InFlight::new(to.clone());
}

/// The target group `failed` serves this listener's requests from (in whichever of its forwards,
/// as the route table says now), and the next routable target in it.
fn another_target(ctx: &ConnCtx, failed: &Arc<TargetRt>) -> Option<Arc<TargetRt>> {
    let table = ctx.shared.table.load();
    let route = table.slots.get(ctx.listener.slot)?.as_ref()?;
    route.actions().find_map(|action| match action {
        CompiledAction::Forward(fwd) => {
            fwd.groups.iter().find_map(|(_, group)| group.pick_after(failed))
        }
        _ => None,
    })
}

#[inline]
fn is_hop_by_hop(name: &HeaderName) -> bool {
    crate::fields::is_hop_by_hop(name.as_str())
}

#[inline]
fn is_valid_name(name: &HeaderName) -> bool {
    crate::fields::is_valid_name(name.as_str())
}

#[inline]
fn needs_cleaning(h: &HeaderMap) -> bool {
    h.keys().any(|k| is_hop_by_hop(k) || !is_valid_name(k))
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), those `Connection` lists, and invalid names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut listed: Vec<HeaderName> = Vec::new();
    for value in h.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',') {
            if let Ok(name) = HeaderName::from_bytes(token.trim().as_bytes())
                && name != header::HOST
            {
                listed.push(name);
            }
        }
    }
    for name in listed {
        h.remove(name);
    }
    let invalid: Vec<HeaderName> = h.keys().filter(|k| !is_valid_name(k)).cloned().collect();
    for name in invalid {
        h.remove(name);
    }
    for name in [
        &header::CONNECTION,
        &header::TRANSFER_ENCODING,
        &header::TE,
        &header::TRAILER,
        &header::UPGRADE,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
    ] {
        h.remove(name);
    }
}

/// Rewrites an HTTP/2 client request for an HTTP/1.1 target, whose Host is `host` (see
/// [`target_host`]).
#[inline]
fn prepare_request(ctx: &ConnCtx, req: &mut Request<Incoming>, host: HeaderValue) {
    req.headers_mut().insert(header::HOST, host);
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        // The target gets origin form.
        let pq =
            req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
    }
    *req.version_mut() = Version::HTTP_11;
    let h = req.headers_mut();
    if needs_cleaning(h) {
        strip_hop_by_hop(h);
    }

    let mut xff = h.get_all(&X_FORWARDED_FOR).iter();
    match (xff.next(), xff.next()) {
        (None, _) => {
            h.insert(X_FORWARDED_FOR.clone(), ctx.client_ip.clone());
        }
        (Some(_), _) => {
            let mut joined = BytesMut::with_capacity(64);
            for v in h.get_all(&X_FORWARDED_FOR) {
                joined.extend_from_slice(v.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(ctx.client_ip.as_bytes());
            if let Ok(v) = HeaderValue::from_maybe_shared(joined.freeze()) {
                h.insert(X_FORWARDED_FOR.clone(), v);
            }
        }
    }
    let proto =
        if ctx.tls { HeaderValue::from_static("https") } else { HeaderValue::from_static("http") };
    h.insert(X_FORWARDED_PROTO.clone(), proto);
    h.insert(X_FORWARDED_PORT.clone(), ctx.listener.port_header.clone());
}
