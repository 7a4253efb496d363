//! HTTP/1.1 client connections, served inline: one task per connection reads a request head,
//! encodes the target's head straight from the client's bytes, exchanges it over a pooled
//! target connection ([`crate::upstream`]) and writes the answer back — the shape of nginx's
//! event loop. No per-request task, channel, timer or header map on the request side: on a path
//! whose whole budget is a few microseconds, those were most of hyper's server cost.
//!
//! Timeouts are one watchdog per connection ([`Watch`]): the request loop only records what it
//! is doing and when it last moved a byte; the watchdog's single timer fires at most once per
//! idle period and decides from that record whether the connection idled, a head trickled, a
//! target took too long (504) or a body stalled.
//!
//! What the conduct rules say (ALB's): a head over 64 KiB or a line over 16 KiB is refused with
//! 431/414; both `Content-Length` and `Transfer-Encoding`, two lengths, a bad length, or a
//! transfer coding other than a single `chunked` is 400 and closes the connection (request
//! smuggling), as is a missing (HTTP/1.1), repeated or invalid `Host`; an absolute form's
//! authority is the target's `Host`; header names other than letters, digits and hyphens are
//! dropped; hop-by-hop headers (RFC 9110 §7.6.1) do not cross; `X-Forwarded-*` are set. A
//! client's faults in its body (invalid chunked framing, a body cut short or stalled) are its
//! own: 400 or 408 and the listener's `elb_4xx`, never a 5xx of the target group (see
//! `metrics`).

use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header;
use http::{Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use routes::rules::RequestView;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::clock;
use crate::fields::{
    Known, MAX_HEAD, MAX_HEADERS, MAX_LINE, connection_listed, is_hop_by_hop, is_valid_host,
    is_valid_name, name_is,
};
use crate::forward::{self, ConnCtx, ProxyBody, Retryable, Routed};
use crate::metrics as m;
use crate::mirror::{self, Mirrorable};
use crate::sync::SideWaker;
use crate::target::{InFlight, TargetRt};
use crate::upstream::{
    self, Answer, BadFraming, Chunked, ClientFault, Delimit, Head, Outgoing, Step, UpstreamBody,
    UpstreamConn,
};

/// Room a read asks for; a typical request head fits many times over.
const READ_SIZE: usize = 4096;

/// How long a closing connection reads what the client still sends (nginx's
/// `lingering_timeout`).
const LINGER: Duration = Duration::from_secs(2);

static CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What the request loop is doing, for the watchdog.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Between requests, nothing buffered.
    Idle,
    /// A request head is arriving, since this time.
    Head(u64),
    /// Waiting on a target until this time (connect, send, response head): then 504.
    Target(u64),
    /// Moving a body either way; ends when no byte moved for the idle timeout.
    Body,
    /// An upgraded connection (see [`crate::tunnel`]).
    Tunnel,
    /// Closing; bounded by [`LINGER`].
    Closing,
}

/// What the request loop tells its watchdog. Both run in one task, so every access is
/// uncontended; atomics only because a connection's task must be `Send`.
struct Watch {
    /// The [`Phase`], with its time in `phase_at`.
    phase: AtomicU8,
    phase_at: AtomicU64,
    /// `clock::now_ms()` of the last byte moved.
    activity: AtomicU64,
    /// The listener stopped: finish the request in flight and close.
    closing: AtomicBool,
    /// The target did not answer in time: the waiting request ends with a 504.
    timed_out: AtomicBool,
    /// The request body's last read from the client found nothing: a request that times out
    /// now does so waiting on its client (408), not on its target (504).
    awaiting_client: AtomicBool,
}

impl Watch {
    fn new() -> Self {
        Watch {
            phase: AtomicU8::new(0),
            phase_at: AtomicU64::new(0),
            activity: AtomicU64::new(clock::now_ms()),
            closing: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
            awaiting_client: AtomicBool::new(false),
        }
    }

    #[inline]
    fn touch(&self) {
        self.activity.store(clock::now_ms(), Relaxed);
    }

    #[inline]
    fn set(&self, phase: Phase) {
        let (kind, at) = match phase {
            Phase::Idle => (0, 0),
            Phase::Head(since) => (1, since),
            Phase::Target(deadline) => (2, deadline),
            Phase::Body => (3, 0),
            Phase::Tunnel => (4, 0),
            Phase::Closing => (5, 0),
        };
        self.phase_at.store(at, Relaxed);
        self.phase.store(kind, Relaxed);
    }

    #[inline]
    fn phase(&self) -> Phase {
        let at = self.phase_at.load(Relaxed);
        match self.phase.load(Relaxed) {
            0 => Phase::Idle,
            1 => Phase::Head(at),
            2 => Phase::Target(at),
            3 => Phase::Body,
            4 => Phase::Tunnel,
            _ => Phase::Closing,
        }
    }

    fn closing(&self) -> bool {
        self.closing.load(Relaxed)
    }

    /// Runs `f` until it ends or the watchdog says the target took too long (`None`). Takes
    /// the future pinned where the caller made it: a request's exchange with its target is a
    /// large future, and moving it into this one would copy it on every request.
    fn until_timeout<'a, F: Future>(
        &'a self,
        mut f: Pin<&'a mut F>,
    ) -> impl Future<Output = Option<F::Output>> + 'a {
        self.timed_out.store(false, Relaxed);
        poll_fn(move |cx| {
            if self.timed_out.load(Relaxed) {
                return Poll::Ready(None);
            }
            f.as_mut().poll(cx).map(Some)
        })
    }
}

/// What the watchdog found.
enum Expired {
    /// Idle between requests or a stalled body: drop the connection.
    Close,
    /// A target did not answer in time: the request loop answers 504.
    Target,
    /// A head did not arrive within the header timeout: the request loop answers 408.
    Header,
}

/// When the watchdog should look again, or why it ends the connection. `header_ms` is shorter
/// than `idle_ms`.
fn check(w: &Watch, idle_ms: u64, header_ms: u64) -> Result<u64, Expired> {
    let now = clock::now_ms();
    let idle_until = w.activity.load(Relaxed) + idle_ms;
    let (until, expired) = match w.phase() {
        Phase::Idle | Phase::Body if now < idle_until => {
            // A head may start before the idle timeout ends: look again within the header
            // timeout, so that a head's deadline is never missed.
            return Ok((idle_until - now).min(header_ms));
        }
        Phase::Idle | Phase::Body => (idle_until, Expired::Close),
        Phase::Head(since) => (since + header_ms, Expired::Header),
        // These keep their own time.
        Phase::Tunnel | Phase::Closing => return Ok(idle_ms),
        // A request body still arriving (ALB's idle timeout counts bytes either way) holds the
        // deadline off.
        Phase::Target(deadline) => (deadline.max(idle_until), Expired::Target),
    };
    if now >= until { Err(expired) } else { Ok(until - now) }
}

/// Serves an HTTP/1 client connection until it closes, idles out, or its listener stops.
pub async fn serve<I>(io: I, ctx: Arc<ConnCtx>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ls = ctx.listener.clone();
    let idle_ms = ls.idle_timeout_ms.load(std::sync::atomic::Ordering::Relaxed);
    let header_ms = ls.header_timeout_ms.load(std::sync::atomic::Ordering::Relaxed);
    let watch = Watch::new();
    let mut conn = Conn {
        io,
        buf: BytesMut::with_capacity(READ_SIZE),
        out: Vec::with_capacity(1024),
        kept: Vec::new(),
        kept_head_len: 0,
        ctx: &ctx,
        w: &watch,
    };
    let mut stop_rx = ls.stop.subscribe();
    let mut stop = pin!(crate::flag_set(&mut stop_rx));
    let mut run = pin!(conn.run());
    let mut tick = pin!(tokio::time::sleep(Duration::from_millis(header_ms)));
    let mut stopping = false;
    // A `select!` over the three, except that the watchdog's timer and the stop signal are
    // polled only when they fired (see `SideWaker`), not on every wake-up of the request loop.
    let mut side = SideWaker::new();
    poll_fn(|cx| {
        loop {
            if run.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            if !side.fired(cx) {
                return Poll::Pending;
            }
            let mut side_cx = side.context();
            if tick.as_mut().poll(&mut side_cx).is_ready() {
                // A little past the moment, as the clock is coarse.
                let wait = match check(&watch, idle_ms, header_ms) {
                    Ok(wait) => wait + 5,
                    Err(Expired::Close) => return Poll::Ready(()),
                    Err(Expired::Target | Expired::Header) => {
                        // Seen by the request loop, polled again right away.
                        watch.timed_out.store(true, Relaxed);
                        idle_ms
                    }
                };
                tick.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(wait));
                // The reset timer registers its waker when next polled.
                side.again();
            }
            if !stopping && stop.as_mut().poll(&mut side_cx).is_ready() {
                stopping = true;
                watch.closing.store(true, Relaxed);
                if matches!(watch.phase(), Phase::Idle | Phase::Closing) {
                    return Poll::Ready(());
                }
            }
        }
    })
    .await
}

/// A client connection's state between requests.
struct Conn<'a, I> {
    io: I,
    /// Bytes read from the client and not used yet.
    buf: BytesMut,
    /// The response head (and small bodies) being written; reused.
    out: Vec<u8>,
    /// A request kept whole for a retry (its target's head and its body); reused, and never
    /// allocated on a connection none of whose requests may be retried.
    kept: Vec<u8>,
    /// Bytes of `kept` its head takes.
    kept_head_len: usize,
    ctx: &'a ConnCtx,
    w: &'a Watch,
}

/// A request head, read and checked.
struct Request {
    /// Bytes of `buf` it took.
    head_len: usize,
    head_method: bool,
    body: RequestBody,
    /// The client keeps the connection open after this request (HTTP/1.1 without `close`, or
    /// HTTP/1.0 with `keep-alive`).
    keep_alive: bool,
    http10: bool,
    upgrade: bool,
    expect_continue: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum RequestBody {
    None,
    Length(u64),
    Chunked,
}

/// What a head turned out to be. Returned once per head and taken apart at once, so its size
/// costs nothing; boxing the large variant would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// More bytes are needed.
    Partial,
    /// Refused with this status; the connection closes.
    Bad(StatusCode),
    Ok(Request, Action),
}

/// What to do with a request, decided while its head is borrowed.
enum Action {
    /// Forward to this target; its head is encoded in `Conn::out`.
    Forward(Arc<TargetRt>, Duration, Option<Retryable>, Option<Mirrorable>),
    Respond(Response<ProxyBody>),
}

impl<I> Conn<'_, I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    /// Serves requests until the connection should close, then closes it.
    async fn run(&mut self) {
        if self.requests().await {
            self.linger().await;
        }
    }

    /// nginx's lingering close: the response is followed by a FIN, and what the client still
    /// sends (the rest of a refused body, pipelined requests) is read and dropped for a while.
    /// Closing a socket with unread bytes would send a reset instead, which can destroy the
    /// response before the client reads it.
    async fn linger(&mut self) {
        self.w.set(Phase::Closing);
        if self.io.shutdown().await.is_err() {
            return;
        }
        let drain = async {
            loop {
                self.buf.clear();
                if self.read().await == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }

    /// The request loop. Returns when the connection should close: true if the client is
    /// still there, false once it closed or failed.
    async fn requests(&mut self) -> bool {
        loop {
            self.w.set(Phase::Idle);
            let (req, action) = loop {
                if !self.buf.is_empty() {
                    match parse_request(&self.buf, self.ctx, &mut self.out) {
                        Parsed::Ok(req, action) => break (req, action),
                        Parsed::Bad(status) => {
                            self.ctx.listener.counters.inc(m::L_REQUESTS);
                            self.ctx.listener.counters.inc(m::L_ELB4XX);
                            let resp = forward::lb_response(status, true);
                            return self.respond(resp, true, false).await.is_ok();
                        }
                        Parsed::Partial => {
                            if self.w.phase() == Phase::Idle {
                                self.w.set(Phase::Head(clock::now_ms()));
                            }
                        }
                    }
                }
                let w = self.w;
                let read = w.until_timeout(pin!(self.read())).await;
                match read {
                    Some(0) => return false,
                    Some(_) => {}
                    None => return self.header_timeout().await,
                }
            };
            self.buf.advance(req.head_len);
            let keep = match action {
                Action::Respond(resp) => {
                    let keep = req.keep_alive && req.body == RequestBody::None;
                    self.respond(resp, !keep, req.head_method).await.is_ok() && keep
                }
                Action::Forward(target, timeout, retryable, mirror) => {
                    self.forward(&req, target, timeout, retryable, mirror).await
                }
            };
            if !keep || self.w.closing() {
                return true;
            }
            self.trim_buffers();
            if self.buf.is_empty() {
                // Nothing of a next request yet: at the connection cap, this one may be shed.
                self.ctx.slot.idle();
            }
        }
    }

    /// The head did not arrive within the header timeout: 408 and close, as HAProxy's
    /// `timeout http-request` answers, so that a slow client learns why. No lingering: a client
    /// trickling its head would hold the connection on.
    async fn header_timeout(&mut self) -> bool {
        let ls = &self.ctx.listener;
        ls.counters.inc(m::L_REQUESTS);
        ls.counters.inc(m::L_ELB4XX);
        ls.header_timeouts.fetch_add(1, Relaxed);
        let resp = forward::lb_response(StatusCode::REQUEST_TIMEOUT, true);
        let _ = self.respond(resp, true, false).await;
        let _ = self.io.shutdown().await;
        false
    }

    /// Gives back what a large request or response made the buffers grow to: a keep-alive
    /// connection waits with small ones.
    fn trim_buffers(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 2 * READ_SIZE {
            self.buf = BytesMut::with_capacity(READ_SIZE);
        }
        if self.out.capacity() > 2 * READ_SIZE {
            self.out = Vec::with_capacity(1024);
        }
        if self.kept.capacity() > 2 * READ_SIZE {
            self.kept = Vec::new();
        }
    }

    /// Reads more from the client; 0 on EOF or error.
    async fn read(&mut self) -> usize {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        let io = &mut self.io;
        let buf = &mut self.buf;
        let slot = &self.ctx.slot;
        let read = poll_fn(|cx| {
            // Shed for a newer client while idle: as if the client had closed.
            if slot.poll_shed(cx).is_ready() {
                return Poll::Ready(Ok(0));
            }
            tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf)
        });
        match read.await {
            Ok(n) => {
                if n > 0 {
                    // A byte that raced the shedding is dropped with the connection.
                    if !slot.busy() {
                        return 0;
                    }
                    self.w.touch();
                }
                n
            }
            Err(_) => 0,
        }
    }

    async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.io.write_all(data).await?;
        self.io.flush().await?;
        self.w.touch();
        Ok(())
    }

    /// Writes a response the load balancer makes itself (fixed, redirect, errors).
    async fn respond(
        &mut self,
        resp: Response<ProxyBody>,
        close: bool,
        head_method: bool,
    ) -> io::Result<()> {
        // Writing to the client: a client that stops reading is cut at the idle timeout.
        self.w.set(Phase::Body);
        let (parts, body) = resp.into_parts();
        let body = match body {
            ProxyBody::Full(data) => data.unwrap_or_default(),
            ProxyBody::Target(_) => Bytes::new(),
        };
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        encode_status(&mut out, parts.status, None);
        for (name, value) in &parts.headers {
            if name != header::CONNECTION && name != header::CONTENT_LENGTH {
                push_header(&mut out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        push_header(&mut out, b"content-length", body.len().to_string().as_bytes());
        if close {
            push_header(&mut out, b"connection", b"close");
        }
        out.extend_from_slice(b"\r\n");
        if !head_method {
            out.extend_from_slice(&body);
        }
        let written = self.write(&out).await;
        self.out = out;
        written
    }

    /// Forwards one request and streams the answer back; returns whether the connection may
    /// carry another request. A request its forward may retry (see [`Retryable`]) or copy to
    /// a mirror group (see [`Mirrorable`]) is kept whole first, when its body fits: a copy
    /// then goes to the mirror group beside it, and it is sent to the retry group when its
    /// target fails it before any byte of an answer reached the client.
    async fn forward(
        &mut self,
        req: &Request,
        target: Arc<TargetRt>,
        timeout: Duration,
        retryable: Option<Retryable>,
        mirror: Option<Mirrorable>,
    ) -> bool {
        // A chunked body whose framing already arrived broken is refused before any target
        // hears of the request.
        if req.body == RequestBody::Chunked
            && let Err(e) = check_chunked_prefix(&self.buf)
        {
            return self.client_fault(ClientFault::Framing(e), req).await;
        }
        self.w.awaiting_client.store(false, Relaxed);
        self.w.set(Phase::Target(clock::now_ms() + timeout.as_millis() as u64));
        let worker = crate::workers::current();
        // Only a body of known length, small enough, is kept whole.
        let fits = |max_body_bytes: u64| match req.body {
            RequestBody::None => true,
            RequestBody::Length(n) => n <= max_body_bytes,
            RequestBody::Chunked => false,
        };
        let retryable = retryable.filter(|r| fits(r.max_body_bytes));
        let mirror = mirror.filter(|m| fits(m.max_body_bytes));
        let kept = retryable.is_some() || mirror.is_some();
        if kept && let Err(fault) = self.keep_whole(req).await {
            return self.client_fault(fault, req).await;
        }
        let copy = mirror.and_then(|m| {
            mirror::send(m, &self.kept, self.kept_head_len, req.head_method, timeout, worker)
        });
        let mut tried = self.try_target(req, target, worker, kept).await;
        // Held until the retry's answer has gone to the client: a retry in flight.
        let mut _permit = None;
        if retryable.is_some() && tried.may_retry() {
            (tried, _permit) = self.retry(req, tried, timeout, worker).await;
        }
        if let Some(copy) = copy
            && let Some(status) = tried.client_status()
        {
            copy.tell(status);
        }
        match tried {
            Tried::Answered(guard, answer) => self.pass_on(req, guard, answer, worker).await,
            Tried::Unreachable(_, resp) => self.respond_error(resp, req).await,
            Tried::Failed(_) => {
                let resp = forward::lb_response(StatusCode::BAD_GATEWAY, true);
                let _ = self.respond(resp, true, req.head_method).await;
                false
            }
            Tried::TimedOut(guard) => self.gateway_timeout(&guard.target, req).await,
            Tried::ClientFault(fault) => self.client_fault(fault, req).await,
        }
    }

    /// One try of the request at `target` (or another target of its group when its connection
    /// is refused), up to the answer's head, which is counted in the target's metrics; the
    /// request is the one in `kept` when `kept`, else the head in `out` and the client's body.
    async fn try_target(
        &mut self,
        req: &Request,
        target: Arc<TargetRt>,
        worker: usize,
        kept: bool,
    ) -> Tried {
        let started = std::time::Instant::now();
        let mut guard = InFlight::new(target);
        let opened =
            self.w.until_timeout(pin!(forward::open_upstream(self.ctx, &mut guard, worker))).await;
        let (conn, reused) = match opened {
            Some(Ok(opened)) => opened,
            Some(Err(resp)) => return Tried::Unreachable(guard, resp),
            None => return Tried::TimedOut(guard),
        };
        let t = &guard.target;
        let exchanged = if kept {
            self.exchange_kept(req, t, conn, reused).await
        } else {
            self.exchange(req, t, conn, reused).await
        };
        match exchanged {
            Some(Ok(answer)) => {
                record_answer(t, answer.head.status(), started);
                Tried::Answered(guard, answer)
            }
            Some(Err(upstream::Error::RequestBody(fault))) => Tried::ClientFault(fault),
            Some(Err(e)) => {
                // The connection went with the error: a request cut mid-body never goes back
                // to the pool.
                tracing::debug!(target = %t.addr, "target failed: {e}");
                t.counters.inc(m::ELB502);
                t.group_counters.inc(m::ELB502);
                Tried::Failed(guard)
            }
            None if self.w.awaiting_client.load(Relaxed) => {
                Tried::ClientFault(ClientFault::Stalled)
            }
            None => Tried::TimedOut(guard),
        }
    }

    /// Sends a request its target failed to its forward's retry group, when the table served
    /// now has one for the failed group and its budget allows; the failure stands otherwise.
    /// The failure stays counted on the target that failed.
    async fn retry(
        &mut self,
        req: &Request,
        failed: Tried,
        timeout: Duration,
        worker: usize,
    ) -> (Tried, Option<forward::RetryPermit>) {
        let Some(failed_target) = failed.target() else { return (failed, None) };
        let (target, permit) = match forward::retry_target(self.ctx, failed_target) {
            Ok(found) => found,
            Err(why) => {
                tracing::debug!(target = %failed_target.addr, "not retried: {why:?}");
                return (failed, None);
            }
        };
        // The failed try is over: out of its target's in-flight count before the retry starts.
        match failed {
            Tried::Answered(guard, answer) => discard(guard, answer, worker),
            other => drop(other),
        }
        self.w.set(Phase::Target(clock::now_ms() + timeout.as_millis() as u64));
        (self.try_target(req, target, worker, true).await, Some(permit))
    }

    /// Keeps the request whole in `kept` — its target's head, and its body (of a known length
    /// the caller checked) read to the end from the client — so that it can be sent twice.
    async fn keep_whole(&mut self, req: &Request) -> Result<(), ClientFault> {
        let len = match req.body {
            RequestBody::Length(n) => n as usize,
            RequestBody::None | RequestBody::Chunked => 0,
        };
        if len > 0 {
            self.read_body_whole(req, len).await?;
        }
        self.kept.clear();
        self.kept.extend_from_slice(&self.out);
        self.kept_head_len = self.out.len();
        self.kept.extend_from_slice(&self.buf[..len]);
        self.buf.advance(len);
        Ok(())
    }

    /// Reads from the client until `buf` holds the `len` bytes of the request's body (after a
    /// `100 Continue` when the client waits for one).
    async fn read_body_whole(&mut self, req: &Request, len: usize) -> Result<(), ClientFault> {
        if req.expect_continue && self.buf.is_empty() {
            self.write(CONTINUE).await.map_err(ClientFault::Gone)?;
        }
        while self.buf.len() < len {
            self.buf.reserve(len - self.buf.len());
            let (io, buf, w) = (&mut self.io, &mut self.buf, self.w);
            let read = poll_fn(|cx| {
                let polled = tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf);
                w.awaiting_client.store(polled.is_pending(), Relaxed);
                polled
            });
            match w.until_timeout(pin!(read)).await {
                None => return Err(ClientFault::Stalled),
                Some(Ok(0)) => return Err(ClientFault::Truncated),
                Some(Ok(_)) => w.touch(),
                Some(Err(e)) => return Err(ClientFault::Gone(e)),
            }
        }
        self.w.awaiting_client.store(false, Relaxed);
        Ok(())
    }

    /// Streams a target's answer to the client; returns whether the connection may carry
    /// another request.
    async fn pass_on(
        &mut self,
        req: &Request,
        guard: InFlight,
        mut answer: Answer,
        worker: usize,
    ) -> bool {
        self.w.set(Phase::Body);
        let t = &guard.target;
        let status = answer.head.status();
        // Whether the client's request body was read to its end: if not, the rest of it is
        // still on the connection, which therefore cannot carry another request.
        let body_done = match req.body {
            RequestBody::None => true,
            _ => answer.body.request_complete(),
        };
        if status == StatusCode::SWITCHING_PROTOCOLS {
            if !req.upgrade {
                // A target may not switch protocols unasked.
                return self.bad_gateway(t, req).await;
            }
            return self.upgrade(answer, guard).await;
        }

        let keep = req.keep_alive && body_done && !self.w.closing();
        let (out, chunked, keep) = self.response_head(req, &answer, keep);
        let streamed = self.stream_body(&mut answer.body, out, chunked).await;
        self.out.clear();
        match streamed {
            Ok(()) => {
                if let Some(conn) = answer.body.take_reusable() {
                    t.give_back(worker, conn);
                }
                drop(guard);
                keep
            }
            Err(why) => {
                tracing::debug!(target = %t.addr, "response body: {why}");
                false
            }
        }
    }

    /// Sends the request kept whole (see [`Conn::keep_whole`]) over `conn`, in one
    /// write, and reads the answer's head; `None` when the watchdog fired first.
    async fn exchange_kept(
        &mut self,
        req: &Request,
        t: &TargetRt,
        mut conn: Box<UpstreamConn>,
        reused: bool,
    ) -> Option<Result<Answer, upstream::Error>> {
        conn.head_buf().extend_from_slice(&self.kept);
        let none = Outgoing::<http_body_util::Empty<Bytes>>::Empty;
        let exchange = pin!(upstream::send_encoded(t, conn, reused, req.head_method, none));
        self.w.until_timeout(exchange).await
    }

    /// Sends the request to the target over `conn` (its head, and as much of a declared-length
    /// body as already arrived, in one write; then the rest of the body) and reads the answer's
    /// head; `None` when the watchdog fired first.
    async fn exchange(
        &mut self,
        req: &Request,
        t: &TargetRt,
        mut conn: Box<UpstreamConn>,
        reused: bool,
    ) -> Option<Result<Answer, upstream::Error>> {
        let head = conn.head_buf();
        std::mem::swap(head, &mut self.out);
        // A client that sent body bytes already is not waiting for the 100.
        let continue_sent = !req.expect_continue || !self.buf.is_empty();
        let mut body = ClientBody {
            io: &mut self.io,
            buf: &mut self.buf,
            state: BodyState::Done,
            continue_sent,
            continue_at: 0,
            w: self.w,
        };
        let outgoing = match req.body {
            RequestBody::None => Outgoing::Empty,
            RequestBody::Length(n) => {
                let now = (n as usize).min(body.buf.len());
                if now > 0 && body.continue_sent {
                    head.extend_from_slice(&body.buf[..now]);
                    body.buf.advance(now);
                }
                let left = n - if body.continue_sent { now as u64 } else { 0 };
                if left == 0 {
                    Outgoing::Empty
                } else {
                    body.state = BodyState::Length(left);
                    Outgoing::Length(left, body)
                }
            }
            RequestBody::Chunked => {
                body.state = BodyState::Chunked(Chunked::Size);
                Outgoing::Chunked(body)
            }
        };
        let exchange = pin!(upstream::send_encoded(t, conn, reused, req.head_method, outgoing));
        self.w.until_timeout(exchange).await
    }

    /// The head of the answer to the client: status, the target's headers, and the framing
    /// this client gets (a body without a length goes to HTTP/1.1 clients re-chunked; an
    /// HTTP/1.0 client gets it raw and ended by the close). Returns it with whether the body
    /// is chunked and whether the connection stays open. (Inlined: a step of the request path,
    /// which measured slower as a call.)
    #[inline(always)]
    fn response_head(
        &mut self,
        req: &Request,
        answer: &Answer,
        keep: bool,
    ) -> (Vec<u8>, bool, bool) {
        let mut keep = keep;
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        encode_status(&mut out, answer.head.status(), answer.head.reason());
        let unsized_body = matches!(answer.delimit, Delimit::Chunked | Delimit::UntilClose);
        let chunked = unsized_body && !req.http10;
        if unsized_body && req.http10 {
            keep = false;
        }
        encode_headers(&mut out, &answer.head, unsized_body);
        if chunked {
            push_header(&mut out, b"transfer-encoding", b"chunked");
        }
        if !keep {
            push_header(&mut out, b"connection", b"close");
        } else if req.http10 {
            push_header(&mut out, b"connection", b"keep-alive");
        }
        out.extend_from_slice(b"\r\n");
        (out, chunked, keep)
    }

    /// The target failed (refused mid-exchange, reset, answered garbage or switched protocols
    /// unasked): a 502 of its target group, and the connection closes.
    async fn bad_gateway(&mut self, t: &TargetRt, req: &Request) -> bool {
        t.counters.inc(m::ELB502);
        t.group_counters.inc(m::ELB502);
        let resp = forward::lb_response(StatusCode::BAD_GATEWAY, true);
        let _ = self.respond(resp, true, req.head_method).await;
        false
    }

    /// The target did not answer within the listener's idle timeout. The connection closes: the
    /// request's body may be half sent.
    async fn gateway_timeout(&mut self, t: &TargetRt, req: &Request) -> bool {
        t.counters.inc(m::ELB504);
        t.group_counters.inc(m::ELB504);
        let resp = forward::lb_response(StatusCode::GATEWAY_TIMEOUT, true);
        let _ = self.respond(resp, true, req.head_method).await;
        false
    }

    /// The client's own fault (see [`ClientFault`]): a client error of the listener, never of
    /// the target group; answered when someone is left to read it. The connection closes, as
    /// what remains of the body cannot be told from a next request.
    async fn client_fault(&mut self, fault: ClientFault, req: &Request) -> bool {
        tracing::debug!(client = ?self.ctx.client_ip, "client error: {fault}");
        self.ctx.listener.counters.inc(m::L_ELB4XX);
        if let Some(status) = fault.status() {
            let resp = forward::lb_response(status, true);
            let _ = self.respond(resp, true, req.head_method).await;
        }
        false
    }

    /// An error answer before anything of the target's reached the client.
    async fn respond_error(&mut self, resp: Response<ProxyBody>, req: &Request) -> bool {
        let keep = req.keep_alive && req.body == RequestBody::None && !self.w.closing();
        self.respond(resp, !keep, req.head_method).await.is_ok() && keep
    }

    /// Copies the response body to the client, after `out` (the head). Frames already read go
    /// out with the head in one write; then each read from the target is one write.
    async fn stream_body(
        &mut self,
        body: &mut UpstreamBody,
        mut out: Vec<u8>,
        chunked: bool,
    ) -> Result<(), String> {
        loop {
            // Take what is already buffered without waiting, so small answers leave in one write.
            let buffered =
                body.poll_copy(&mut Context::from_waker(Waker::noop()), &mut out, chunked);
            let copied = match buffered {
                Poll::Ready(copied) => copied,
                Poll::Pending => {
                    if !out.is_empty() {
                        self.write(&out)
                            .await
                            .map_err(|e| format!("writing to the client: {e}"))?;
                        out.clear();
                    }
                    poll_fn(|cx| body.poll_copy(cx, &mut out, chunked)).await
                }
            };
            match copied {
                Ok(true) => {
                    // Large bodies go out as they come, not gathered.
                    if out.len() >= 64 * 1024 {
                        self.write(&out)
                            .await
                            .map_err(|e| format!("writing to the client: {e}"))?;
                        out.clear();
                    }
                }
                Ok(false) => {
                    if chunked {
                        out.extend_from_slice(b"0\r\n\r\n");
                    }
                    break;
                }
                Err(e) => {
                    if !out.is_empty() {
                        let _ = self.write(&out).await;
                    }
                    return Err(e.to_string());
                }
            }
        }
        if !out.is_empty() {
            self.write(&out).await.map_err(|e| format!("writing to the client: {e}"))?;
        }
        out.clear();
        self.out = out;
        Ok(())
    }

    /// After a 101: the head goes to the client, then bytes flow both ways until one side
    /// closes (see [`crate::tunnel`]).
    async fn upgrade(&mut self, answer: Answer, guard: InFlight) -> bool {
        let t = guard.target.clone();
        let head = &answer.head;
        let protocol = head.values(Known::Upgrade).next();
        let websocket = protocol.is_some_and(|p| p.eq_ignore_ascii_case(b"websocket"));
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        encode_status(&mut out, head.status(), head.reason());
        encode_headers(&mut out, head, false);
        if let Some(protocol) = protocol {
            push_header(&mut out, b"upgrade", protocol);
        }
        push_header(&mut out, b"connection", b"upgrade");
        out.extend_from_slice(b"\r\n");
        let Some(upstream) = answer.body.into_upgrade() else {
            t.counters.inc(m::ELB502);
            t.group_counters.inc(m::ELB502);
            return false;
        };
        let idle = Duration::from_millis(
            self.ctx.listener.idle_timeout_ms.load(std::sync::atomic::Ordering::Relaxed),
        );
        let tunnel = crate::tunnel::Tunnel::open(t);
        drop(guard);
        if self.write(&out).await.is_err() {
            return false;
        }
        self.w.set(Phase::Tunnel);
        let early = self.buf.split().freeze();
        // Boxed: most connections never upgrade, and their tasks should not carry its room.
        Box::pin(tunnel.run(self.ctx, &mut self.io, early, upstream, websocket, idle)).await;
        false
    }
}

fn encode_status(out: &mut Vec<u8>, status: StatusCode, reason: Option<&[u8]>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    let reason = reason.unwrap_or(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

#[inline]
fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A target's fields for the client: hop-by-hop ones, those its `Connection` lists and invalid
/// names dropped; `Content-Length` too when the body is `rechunked` (it only ever frames the
/// body or answers a HEAD).
fn encode_headers(out: &mut Vec<u8>, head: &Head, rechunked: bool) {
    let listing = head.values(Known::Connection).next().is_some();
    for (name, value, known) in head.fields() {
        let skip = match known {
            Known::Other => {
                listing
                    && head.values(Known::Connection).any(|c| {
                        connection_listed(c).any(|l| l.as_bytes().eq_ignore_ascii_case(name))
                    })
            }
            Known::ContentLength => rechunked,
            Known::TransferEncoding
            | Known::Connection
            | Known::Upgrade
            | Known::HopByHop
            | Known::Invalid => true,
        };
        if !skip {
            push_header(out, name, value);
        }
    }
}

/// A request head that passed every check (RFC 9112's and ALB's), borrowed from the client's
/// buffer.
pub(crate) struct CheckedHead<'b> {
    /// Bytes of the buffer it took.
    pub head_len: usize,
    pub method: &'b str,
    /// The path and query to send, in origin form (an absolute form's path, `/` when it has
    /// none), or `*` for `OPTIONS`.
    pub path: &'b str,
    /// The absolute form's authority: the target's Host (RFC 9112 §3.2.2).
    pub authority: Option<&'b str>,
    /// The one Host field's value (always present on HTTP/1.1).
    pub host: Option<&'b [u8]>,
    pub http10: bool,
    pub body: RequestBody,
    /// The client keeps the connection open after this request.
    pub keep_alive: bool,
    /// The protocol of an upgrade the client asks for (`Connection: upgrade` and `Upgrade`).
    pub upgrade: Option<&'b [u8]>,
    pub expect_continue: bool,
    /// `X-Forwarded-For` fields.
    pub xff: usize,
    /// Fields the `Connection` header lists, which do not cross.
    pub listed: Vec<&'b str>,
}

impl CheckedHead<'_> {
    /// The Host the target gets: the absolute form's authority, or the client's Host.
    pub fn target_host(&self) -> Option<&[u8]> {
        self.authority.map(str::as_bytes).or(self.host)
    }
}

/// Parses a request head at the front of `buf` with httparse (strict: no obsolete folding, no
/// bare LF in the request line, valid tokens); `None` while it is incomplete. The sizes ALB
/// allows are enforced here: 431 for a head over 64 KiB or too many fields, 414 for a request
/// line over 16 KiB.
pub(crate) fn parse_head<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<(httparse::Request<'h, 'b>, usize)>, StatusCode> {
    let mut req = httparse::Request::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, buf, headers);
    match parsed {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
            Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        }
        Ok(httparse::Status::Complete(len)) => Ok(Some((req, len))),
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
            } else if memchr::memchr(b'\n', buf).is_none() && buf.len() > MAX_LINE {
                Err(StatusCode::URI_TOO_LONG)
            } else {
                Ok(None)
            }
        }
        Err(httparse::Error::TooManyHeaders) => Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(_) => Err(StatusCode::BAD_REQUEST),
    }
}

/// Checks what a parsed head says about itself: line sizes, framing (RFC 9112 §6.3: both
/// `Content-Length` and `Transfer-Encoding`, two lengths, a bad length, a transfer coding other
/// than a final `chunked`, or one on HTTP/1.0 — request smuggling shapes), `Host` (§3.2: exactly
/// one on HTTP/1.1, at most one on HTTP/1.0, always valid) and the request target's form (§3.2).
/// The only transfer coding accepted is a single `chunked`.
pub(crate) fn check_head<'b>(
    req: &httparse::Request<'_, 'b>,
    head_len: usize,
) -> Result<CheckedHead<'b>, StatusCode> {
    const BAD: StatusCode = StatusCode::BAD_REQUEST;
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(BAD);
    };
    if method.len() + path.len() + 10 > MAX_LINE {
        return Err(StatusCode::URI_TOO_LONG);
    }
    let http10 = version == 0;

    // One pass for what the request says about itself.
    let mut length: Option<u64> = None;
    let mut lengths = 0;
    // Transfer codings over every Transfer-Encoding field, and whether they are `chunked` alone.
    let mut codings = 0;
    let mut chunked_only = true;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut upgrade_token = false;
    let mut upgrade_header = None;
    let mut expect_continue = false;
    let mut host = None;
    let mut hosts = 0;
    let mut xff = 0;
    let mut listed: Vec<&str> = Vec::new();
    for h in req.headers.iter() {
        if h.name.len() + h.value.len() + 4 > MAX_LINE {
            return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        let name = h.name;
        if name_is(name, "content-length") {
            lengths += 1;
            length = Some(upstream::parse_length(h.value).ok_or(BAD)?);
        } else if name_is(name, "transfer-encoding") {
            // Only `chunked` is framing the load balancer can check and the target will read
            // the same way; another coding (gzip, say) would have to reach the target intact.
            for coding in h.value.split(|&b| b == b',') {
                codings += 1;
                chunked_only &= coding.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
        } else if name_is(name, "connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    upgrade_token = true;
                }
            }
            listed.extend(connection_listed(h.value));
        } else if name_is(name, "upgrade") {
            upgrade_header = Some(h.value);
        } else if name_is(name, "expect") {
            expect_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name_is(name, "host") {
            hosts += 1;
            host = Some(h.value);
        } else if name_is(name, "x-forwarded-for") {
            xff += 1;
        }
    }
    let transfer_encoding = codings > 0;
    if lengths > 1 || (transfer_encoding && (lengths > 0 || codings > 1 || !chunked_only || http10))
    {
        return Err(BAD);
    }
    let host_ok = match host {
        Some(h) => hosts == 1 && is_valid_host(h),
        None => http10,
    };
    if !host_ok {
        return Err(BAD);
    }
    let (path, authority) = request_target(method, path).ok_or(BAD)?;
    let body = match (transfer_encoding, length) {
        (true, _) => RequestBody::Chunked,
        (false, Some(0) | None) => RequestBody::None,
        (false, Some(n)) => RequestBody::Length(n),
    };
    Ok(CheckedHead {
        head_len,
        method,
        path,
        authority,
        host,
        http10,
        body,
        keep_alive: if http10 { keep_alive_token && !close } else { !close },
        upgrade: upgrade_header.filter(|_| upgrade_token),
        expect_continue,
        xff,
        listed,
    })
}

/// The request target's form (RFC 9112 §3.2): origin form as it is; absolute form (a proxy's,
/// `http` or `https` in any case) split into its path (`/` if none) and its authority, which
/// must be a valid host without user info; `*` only for `OPTIONS`; the authority form only for
/// `CONNECT` (which is refused later, with 405). `None` for anything else.
fn request_target<'b>(method: &str, target: &'b str) -> Option<(&'b str, Option<&'b str>)> {
    if target.starts_with('/') {
        return Some((target, None));
    }
    if target == "*" {
        return (method == "OPTIONS").then_some((target, None));
    }
    if method == "CONNECT" {
        return is_valid_host(target.as_bytes()).then_some((target, None));
    }
    let (scheme, rest) = target.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if !is_valid_host(authority.as_bytes()) {
        return None;
    }
    Some((if path.is_empty() { "/" } else { path }, Some(authority)))
}

/// Parses and checks a request head at the front of `buf`, routes it, and for a forward
/// encodes the target's head into `out`.
fn parse_request(buf: &[u8], ctx: &ConnCtx, out: &mut Vec<u8>) -> Parsed {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let checked = match parse_head(buf, &mut headers) {
        Ok(None) => return Parsed::Partial,
        Ok(Some((req, head_len))) => check_head(&req, head_len).map(|head| (req, head)),
        Err(status) => Err(status),
    };
    let (req, head) = match checked {
        Ok(checked) => checked,
        Err(status) => return Parsed::Bad(status),
    };
    let request = |action| {
        Parsed::Ok(
            Request {
                head_len: head.head_len,
                head_method: head.method == "HEAD",
                body: head.body,
                keep_alive: head.keep_alive,
                http10: head.http10,
                upgrade: head.upgrade.is_some(),
                expect_continue: head.expect_continue,
            },
            action,
        )
    };
    let lc = &ctx.listener.counters;
    lc.inc(m::L_REQUESTS);
    if head.method == "CONNECT" {
        lc.inc(m::L_ELB4XX);
        return request(Action::Respond(forward::lb_response(
            StatusCode::METHOD_NOT_ALLOWED,
            false,
        )));
    }

    if let Some(answer) = crate::acme::http_01_answer(ctx, head.method, head.path) {
        return request(Action::Respond(answer));
    }
    let view = H1Request { fields: req.headers, head: &head, source: ctx.peer_ip };
    let routed = forward::route(ctx, &view, |r| {
        let host = head.target_host().and_then(|h| std::str::from_utf8(h).ok()).unwrap_or("");
        let (path, query) = match head.path.split_once('?') {
            Some((p, q)) => (if p.is_empty() { "/" } else { p }, Some(q)),
            None => (head.path, None),
        };
        forward::redirect(r, host, path, query, ctx)
    });
    let (target, timeout, retryable, mirror) = match routed {
        Routed::Respond(resp) => return request(Action::Respond(resp)),
        Routed::Forward(target, timeout, retryable, mirror) => (target, timeout, retryable, mirror),
    };
    encode_request_head(out, &req, &head, ctx);
    request(Action::Forward(target, timeout, retryable, mirror))
}

/// An HTTP/1 request head as routing sees it.
struct H1Request<'a, 'b> {
    fields: &'a [httparse::Header<'b>],
    head: &'a CheckedHead<'b>,
    source: IpAddr,
}

impl RequestView for H1Request<'_, '_> {
    fn host(&self) -> &[u8] {
        self.head.target_host().unwrap_or_default()
    }
    fn path(&self) -> &[u8] {
        let path = self.head.path.as_bytes();
        path.iter().position(|&b| b == b'?').map_or(path, |q| &path[..q])
    }
    fn query(&self) -> Option<&[u8]> {
        let path = self.head.path.as_bytes();
        path.iter().position(|&b| b == b'?').map(|q| &path[q + 1..])
    }
    fn method(&self) -> &[u8] {
        self.head.method.as_bytes()
    }
    fn source_ip(&self) -> IpAddr {
        self.source
    }
    fn any_header(&self, name: &[u8], matches: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        self.fields.iter().any(|f| f.name.as_bytes().eq_ignore_ascii_case(name) && matches(f.value))
    }
}

impl forward::Routable for H1Request<'_, '_> {
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.iter().map(|f| (f.name.as_bytes(), f.value))
    }
}

/// The target's request head: origin form, the Host the request names, the client's fields
/// cleaned like ALB does, and the `X-Forwarded-*` fields.
fn encode_request_head(
    out: &mut Vec<u8>,
    req: &httparse::Request<'_, '_>,
    head: &CheckedHead<'_>,
    ctx: &ConnCtx,
) {
    out.clear();
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    if head.path.starts_with('?') {
        // `http://host?q`: the path of an absolute form without one is `/`.
        out.push(b'/');
    }
    out.extend_from_slice(head.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(host) = head.target_host() {
        push_header(out, b"host", host);
    }
    let mut xff = head.xff;
    let mut first_xff = true;
    for h in req.headers.iter() {
        let name = h.name;
        if name_is(name, "x-forwarded-for") {
            // Joined into one line, the client's address last.
            if first_xff {
                out.extend_from_slice(b"x-forwarded-for: ");
                first_xff = false;
            }
            out.extend_from_slice(h.value);
            out.extend_from_slice(b", ");
            xff -= 1;
            if xff == 0 {
                out.extend_from_slice(ctx.client_ip.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            continue;
        }
        let skip = is_hop_by_hop(name)
            || !is_valid_name(name)
            || name_is(name, "host")
            || name_is(name, "x-forwarded-proto")
            || name_is(name, "x-forwarded-port")
            || (head.expect_continue && name_is(name, "expect"))
            || head.listed.iter().any(|l| name_is(name, l));
        if !skip {
            push_header(out, name.as_bytes(), h.value);
        }
    }
    if first_xff {
        push_header(out, b"x-forwarded-for", ctx.client_ip.as_bytes());
    }
    push_header(out, b"x-forwarded-proto", if ctx.tls { b"https" } else { b"http" });
    push_header(out, b"x-forwarded-port", ctx.listener.port_header.as_bytes());
    if let Some(proto) = head.upgrade {
        push_header(out, b"upgrade", proto);
        push_header(out, b"connection", b"upgrade");
    }
    if head.body == RequestBody::Chunked {
        push_header(out, b"transfer-encoding", b"chunked");
    }
    out.extend_from_slice(b"\r\n");
}

/// Checks the chunked framing of the body bytes already buffered, without taking them.
fn check_chunked_prefix(buf: &[u8]) -> Result<(), BadFraming> {
    let mut state = Chunked::Size;
    let mut rest = BytesMut::from(buf);
    loop {
        match upstream::decode_chunked(&mut state, &mut rest)? {
            Step::Data(n) => rest.advance(n),
            Step::More | Step::End | Step::Trailers(_) => return Ok(()),
        }
    }
}

enum BodyState {
    Length(u64),
    Chunked(Chunked),
    Done,
}

/// How one try of a request at a target ended.
enum Tried {
    /// The target answered (counted in its metrics); nothing of it went to the client yet.
    Answered(InFlight, Answer),
    /// No target of the group took a connection: the 502 for the client (counted).
    Unreachable(InFlight, Response<ProxyBody>),
    /// The connection failed, or the target broke the protocol, before any byte of an answer
    /// (its 502 counted).
    Failed(InFlight),
    /// The target sent no answer in time (its 504 not counted yet).
    TimedOut(InFlight),
    ClientFault(ClientFault),
}

impl Tried {
    /// Whether the request failed at its target in a way a retry may mend: a 5xx, a refused
    /// connection, a reset or garbage before the answer. Not a timeout: the client has waited
    /// long enough already.
    fn may_retry(&self) -> bool {
        match self {
            Tried::Answered(_, answer) => answer.head.status().is_server_error(),
            Tried::Unreachable(..) | Tried::Failed(_) => true,
            Tried::TimedOut(_) | Tried::ClientFault(_) => false,
        }
    }

    /// The status the client gets for this try: the target's, or the load balancer's for it;
    /// none when the client is at fault.
    fn client_status(&self) -> Option<StatusCode> {
        match self {
            Tried::Answered(_, answer) => Some(answer.head.status()),
            Tried::Unreachable(_, resp) => Some(resp.status()),
            Tried::Failed(_) => Some(StatusCode::BAD_GATEWAY),
            Tried::TimedOut(_) => Some(StatusCode::GATEWAY_TIMEOUT),
            Tried::ClientFault(_) => None,
        }
    }

    fn target(&self) -> Option<&TargetRt> {
        match self {
            Tried::Answered(guard, _)
            | Tried::Unreachable(guard, _)
            | Tried::Failed(guard)
            | Tried::TimedOut(guard) => Some(&guard.target),
            Tried::ClientFault(_) => None,
        }
    }
}

/// The most of an answer nobody reads that is read to save its connection.
const DISCARD_MAX: usize = 64 * 1024;

/// Drops an answer the client will not get (a retry replaces it): its connection goes back to
/// the pool when the rest of its body has arrived already, and is closed otherwise.
fn discard(guard: InFlight, mut answer: Answer, worker: usize) {
    let mut sink = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    while sink.len() <= DISCARD_MAX {
        match answer.body.poll_copy(&mut cx, &mut sink, false) {
            Poll::Ready(Ok(true)) => {}
            Poll::Ready(Ok(false)) => {
                if let Some(conn) = answer.body.take_reusable() {
                    guard.target.give_back(worker, conn);
                }
                return;
            }
            Poll::Ready(Err(_)) | Poll::Pending => return,
        }
    }
}

/// A target's answer in its and its group's metrics: the status and the time to its head.
/// (Inlined: a step of the request path, which measured slower as a call.)
#[inline(always)]
fn record_answer(t: &TargetRt, status: StatusCode, started: std::time::Instant) {
    let us = started.elapsed().as_micros() as u64;
    t.counters.observe_us(us);
    t.group_counters.observe_us(us);
    t.counters.status(status.as_u16());
    t.group_counters.status(status.as_u16());
}

/// The client's request body as the target connection pulls it: read from the client
/// connection, chunked framing decoded (the target gets it re-chunked, canonically).
pub struct ClientBody<'a, I> {
    io: &'a mut I,
    buf: &'a mut BytesMut,
    state: BodyState,
    /// `100 Continue` went out (or was not asked for).
    continue_sent: bool,
    continue_at: usize,
    w: &'a Watch,
}

impl<I: AsyncRead + AsyncWrite + Unpin> ClientBody<'_, I> {
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.continue_at < CONTINUE.len() {
            let n = ready!(Pin::new(&mut *self.io).poll_write(cx, &CONTINUE[self.continue_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.continue_at += n;
        }
        ready!(Pin::new(&mut *self.io).poll_flush(cx))?;
        self.continue_sent = true;
        Poll::Ready(Ok(()))
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(16 * 1024);
        }
        let polled = tokio_util::io::poll_read_buf(Pin::new(&mut *self.io), cx, self.buf);
        self.w.awaiting_client.store(polled.is_pending(), Relaxed);
        let n = ready!(polled)?;
        if n > 0 {
            self.w.touch();
        }
        Poll::Ready(Ok(n))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> Body for ClientBody<'_, I> {
    type Data = Bytes;
    type Error = ClientFault;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientFault>>> {
        let this = self.get_mut();
        if !this.continue_sent
            && let Err(e) = ready!(this.poll_continue(cx))
        {
            this.state = BodyState::Done;
            return Poll::Ready(Some(Err(ClientFault::Gone(e))));
        }
        loop {
            match &mut this.state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Length(left) => {
                    if !this.buf.is_empty() {
                        let n = this.buf.len().min(*left as usize).min(64 * 1024);
                        *left -= n as u64;
                        if *left == 0 {
                            this.state = BodyState::Done;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(this.buf.split_to(n).freeze()))));
                    }
                }
                BodyState::Chunked(chunked) => match upstream::decode_chunked(chunked, this.buf) {
                    Ok(Step::Data(n)) => {
                        return Poll::Ready(Some(Ok(Frame::data(this.buf.split_to(n).freeze()))));
                    }
                    Ok(Step::Trailers(trailers)) => {
                        this.state = BodyState::Done;
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Step::End) => {
                        this.state = BodyState::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Step::More) => {}
                    Err(e) => {
                        this.state = BodyState::Done;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                },
            }
            match ready!(this.poll_fill(cx)) {
                Ok(0) => {
                    this.state = BodyState::Done;
                    return Poll::Ready(Some(Err(ClientFault::Truncated)));
                }
                Ok(_) => {}
                Err(e) => {
                    this.state = BodyState::Done;
                    return Poll::Ready(Some(Err(ClientFault::Gone(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Length(n) => SizeHint::with_exact(n),
            BodyState::Done => SizeHint::with_exact(0),
            BodyState::Chunked(_) => SizeHint::default(),
        }
    }
}
