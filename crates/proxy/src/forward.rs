//! The request path: pick the route once, choose a target group by weight and a target by the
//! group's algorithm, clean the request like ALB does, forward it over a pooled keep-alive
//! connection and stream the answer back. Every failure becomes a well-formed 400/502/503/504.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::conn_io::ConnShared;
use crate::listener::ListenerShared;
use crate::metrics::{self as m};
use crate::state::{CompiledAction, Fixed, Shared};
use crate::target::{InFlight, Sender, TargetRt};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Targets one request may try when connections are refused (nginx's `proxy_next_upstream
/// error`): a task that just died, before the health checks notice, costs no request. Only a
/// failed connect moves a request on — by then nothing of it has reached any target.
const MAX_CONNECT_ATTEMPTS: usize = 3;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// One client connection, as every request on it needs it.
pub struct ConnCtx {
    pub shared: Arc<Shared>,
    pub listener: Arc<ListenerShared>,
    pub io: Arc<ConnShared>,
    pub client_ip: HeaderValue,
    pub tls: bool,
    pub h2: bool,
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
    type Error = hyper::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
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
    inner: Incoming,
    sender: Option<Sender>,
    /// The worker whose pool the connection goes back to.
    worker: usize,
    guard: InFlight,
}

impl TargetBody {
    #[inline]
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.give_back();
        }
        polled
    }

    #[inline]
    fn give_back(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.guard.0.give_back(self.worker, sender);
        }
    }
}

impl Drop for TargetBody {
    fn drop(&mut self) {
        // hyper stops polling once a body says it has ended; the connection is reusable then.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

fn lb_response(status: StatusCode, close: bool) -> Response<ProxyBody> {
    let body: &'static str = match status.as_u16() {
        400 => "400 Bad Request\n",
        405 => "405 Method Not Allowed\n",
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

/// Handles one client request; never fails.
pub async fn handle(ctx: Arc<ConnCtx>, req: Request<Incoming>) -> Response<ProxyBody> {
    let lc = &ctx.listener.counters;
    lc.inc(m::L_REQUESTS);
    if !ctx.h2 {
        let index = ctx.io.next_request.fetch_add(1, Ordering::Relaxed);
        if ctx.io.bad_head.load(Ordering::Acquire) <= index {
            lc.inc(m::L_ELB4XX);
            let status = StatusCode::from_u16(ctx.io.bad_status.load(Ordering::Relaxed))
                .unwrap_or(StatusCode::BAD_REQUEST);
            return lb_response(status, true);
        }
    }
    if conflicting_framing(req.headers()) {
        lc.inc(m::L_ELB4XX);
        return lb_response(StatusCode::BAD_REQUEST, true);
    }
    if req.method() == Method::CONNECT {
        lc.inc(m::L_ELB4XX);
        return lb_response(StatusCode::METHOD_NOT_ALLOWED, false);
    }

    let (target, timeout) = {
        let table = ctx.shared.table.load();
        let Some(route) = table.slots.get(ctx.listener.slot).and_then(Option::as_ref) else {
            // The listener is being removed; this connection is closing.
            return lb_response(StatusCode::SERVICE_UNAVAILABLE, true);
        };
        match &route.action {
            CompiledAction::Fixed(f) => {
                lc.inc(m::L_FIXED);
                return fixed(f);
            }
            CompiledAction::Redirect(r) => {
                lc.inc(m::L_REDIRECT);
                return redirect(r, &req, &ctx);
            }
            CompiledAction::Forward(fwd) => {
                let Some(group) = fwd.choose() else {
                    lc.inc(m::L_ELB503);
                    return lb_response(StatusCode::SERVICE_UNAVAILABLE, false);
                };
                group.counters.inc(m::REQUESTS);
                let Some((target, fail_open)) = group.pick() else {
                    group.counters.inc(m::ELB503);
                    return lb_response(StatusCode::SERVICE_UNAVAILABLE, false);
                };
                if fail_open {
                    group.counters.inc(m::FAIL_OPEN);
                }
                (target, route.idle_timeout)
            }
        }
    };
    forward(ctx, req, target, timeout).await
}

/// Smuggling-shaped framing that survived parsing (HTTP/2, where hyper's h1 normalising does
/// not apply; the raw-head scanner covers HTTP/1).
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

fn redirect(r: &routes::Redirect, req: &Request<Incoming>, ctx: &ConnCtx) -> Response<ProxyBody> {
    let request_proto = if ctx.tls { "https" } else { "http" };
    let proto = r.protocol.as_deref().map(str::to_ascii_lowercase);
    let proto = proto.as_deref().unwrap_or(request_proto);
    let request_host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    // The Host header may carry a port; the redirect's port decides.
    let request_host = strip_port(request_host);
    let host = r.host.as_deref().unwrap_or(request_host);
    let port = r.port.unwrap_or(ctx.listener.bind.port());
    let default_port = if proto == "https" { 443 } else { 80 };
    let path = r.path.as_deref().unwrap_or(req.uri().path());
    let mut location = format!("{proto}://{host}");
    if port != default_port {
        location.push_str(&format!(":{port}"));
    }
    location.push_str(path);
    if let Some(q) = req.uri().query() {
        location.push('?');
        location.push_str(q);
    }
    let Ok(location) = HeaderValue::from_str(&location) else {
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

enum SendError {
    /// No connection to the target; the request, never sent, comes back for another target.
    Connect(String, Box<Request<Incoming>>),
    Response(hyper::Error),
}

async fn forward(
    ctx: Arc<ConnCtx>,
    mut req: Request<Incoming>,
    target: Arc<TargetRt>,
    timeout: Duration,
) -> Response<ProxyBody> {
    let upgrade = prepare_request(&ctx, &mut req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let worker = crate::workers::current();
    let mut target = target;
    let mut attempt = 1;
    let (guard, mut resp, sender) = loop {
        target.counters.inc(m::REQUESTS);
        let guard = InFlight::new(target);
        let t = &guard.0;
        match tokio::time::timeout_at(deadline, send(t, worker, req)).await {
            Err(_elapsed) => {
                t.counters.inc(m::ELB504);
                t.group_counters.inc(m::ELB504);
                return lb_response(StatusCode::GATEWAY_TIMEOUT, false);
            }
            Ok(Err(SendError::Connect(why, unsent))) => {
                tracing::debug!(target = %t.addr, "connect failed: {why}");
                t.counters.inc(m::CONN_ERRORS);
                t.group_counters.inc(m::CONN_ERRORS);
                if attempt < MAX_CONNECT_ATTEMPTS
                    && let Some(next) = another_target(&ctx, t)
                {
                    attempt += 1;
                    target = next;
                    req = *unsent;
                    continue;
                }
                t.counters.inc(m::ELB502);
                t.group_counters.inc(m::ELB502);
                return lb_response(StatusCode::BAD_GATEWAY, false);
            }
            Ok(Err(SendError::Response(e))) => {
                tracing::debug!(target = %t.addr, "target failed: {e}");
                t.counters.inc(m::ELB502);
                t.group_counters.inc(m::ELB502);
                return lb_response(StatusCode::BAD_GATEWAY, false);
            }
            Ok(Ok((resp, sender))) => break (guard, resp, sender),
        }
    };
    let t = &guard.0;
    let us = started.elapsed().as_micros() as u64;
    let status = resp.status();
    t.counters.observe_us(us);
    t.group_counters.observe_us(us);
    t.counters.status(status.as_u16());
    t.group_counters.status(status.as_u16());

    if status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            // A target may not switch protocols unasked.
            t.counters.inc(m::ELB502);
            t.group_counters.inc(m::ELB502);
            return lb_response(StatusCode::BAD_GATEWAY, false);
        };
        let target_upgrade = hyper::upgrade::on(&mut resp);
        let websocket = resp
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
        ctx.io.stop_scan.store(true, Ordering::Relaxed);
        strip_hop_by_hop(resp.headers_mut(), true);
        crate::tunnel::spawn(
            ctx.clone(),
            guard.0.clone(),
            client_upgrade,
            target_upgrade,
            websocket,
            timeout,
        );
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, ProxyBody::empty());
    }

    if needs_cleaning(resp.headers()) {
        strip_hop_by_hop(resp.headers_mut(), false);
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(
        parts,
        ProxyBody::Target(TargetBody { inner: body, sender: Some(sender), worker, guard }),
    )
}

/// The target group `failed` serves this listener's requests from, as the route table says now,
/// and the next routable target in it.
fn another_target(ctx: &ConnCtx, failed: &Arc<TargetRt>) -> Option<Arc<TargetRt>> {
    let table = ctx.shared.table.load();
    let route = table.slots.get(ctx.listener.slot)?.as_ref()?;
    let CompiledAction::Forward(fwd) = &route.action else { return None };
    fwd.groups.iter().find_map(|(_, group)| group.pick_after(failed))
}

/// Sends over a pooled connection, or a new one; a request the pooled connection never took
/// (it closed meanwhile) is retried on another.
async fn send(
    t: &Arc<TargetRt>,
    worker: usize,
    mut req: Request<Incoming>,
) -> Result<(Response<Incoming>, Sender), SendError> {
    for _ in 0..4 {
        let mut sender = match t.checkout(worker) {
            Some(s) => s,
            None => match connect(t).await {
                Ok(s) => s,
                Err(why) => return Err(SendError::Connect(why, Box::new(req))),
            },
        };
        match sender.try_send_request(req).await {
            Ok(resp) => return Ok((resp, sender)),
            Err(mut e) => match e.take_message() {
                Some(unsent) => req = unsent,
                None => return Err(SendError::Response(e.into_error())),
            },
        }
    }
    Err(SendError::Connect(
        "connections kept closing before the request could be sent".into(),
        Box::new(req),
    ))
}

async fn connect(t: &Arc<TargetRt>) -> Result<Sender, String> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(t.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("connect timed out".into()),
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    t.conns.fetch_add(1, Ordering::Relaxed);
    let mut closed = t.closed();
    let target = t.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = conn.with_upgrades() => {}
            // Released after draining: cut what is left.
            _ = crate::flag_set(&mut closed) => {}
        }
        target.conns.fetch_sub(1, Ordering::Relaxed);
    });
    Ok(sender)
}

#[inline]
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// ALB's `drop_invalid_header_fields`: only letters, digits and hyphens.
#[inline]
fn is_valid_name(name: &HeaderName) -> bool {
    name.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[inline]
fn needs_cleaning(h: &HeaderMap) -> bool {
    h.keys().any(|k| is_hop_by_hop(k) || !is_valid_name(k))
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1) and invalid names; keeps `Upgrade` and sets
/// `Connection: upgrade` when `upgrade` is allowed and asked for. Returns whether it was.
fn strip_hop_by_hop(h: &mut HeaderMap, allow_upgrade: bool) -> bool {
    let mut listed: Vec<HeaderName> = Vec::new();
    let mut upgrade_token = false;
    for value in h.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',') {
            let token = token.trim();
            if token.eq_ignore_ascii_case("upgrade") {
                upgrade_token = true;
            } else if let Ok(name) = HeaderName::from_bytes(token.as_bytes())
                && name != header::HOST
            {
                listed.push(name);
            }
        }
    }
    let upgrade = allow_upgrade && upgrade_token && h.contains_key(header::UPGRADE);
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
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
    ] {
        h.remove(name);
    }
    if upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(header::UPGRADE);
    }
    upgrade
}

/// Rewrites a client request for the target; returns whether it asks for a protocol upgrade.
#[inline]
fn prepare_request(ctx: &ConnCtx, req: &mut Request<Incoming>) -> bool {
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        // HTTP/2 (or absolute-form HTTP/1): the target gets origin form and a Host header.
        if !req.headers().contains_key(header::HOST)
            && let Some(a) = req.uri().authority()
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            req.headers_mut().insert(header::HOST, v);
        }
        let pq =
            req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
    }
    *req.version_mut() = Version::HTTP_11;
    let h = req.headers_mut();
    let upgrade = if needs_cleaning(h) { strip_hop_by_hop(h, !ctx.h2) } else { false };

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
    upgrade
}
