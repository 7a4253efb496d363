//! The HTTP/1.1 client for target connections, driven inside the request's own future.
//!
//! hyper's client runs every connection as a task of its own and hands it each request through a
//! channel, a oneshot for the answer, a `want` handshake and a channel for the response body:
//! several task wake-ups and allocations per request, on a path whose whole budget is a few
//! microseconds. Here the request's future writes the request head, reads the response head and
//! returns an [`Answer`]: the head as the target sent it, and a body that reads the target's
//! socket itself. [`crate::h1`] encodes its own request head and copies the answer to its client
//! as raw bytes; the HTTP/2 side ([`send`]) goes through `http` types and hyper's server. An idle
//! keep-alive connection is only a socket and its buffers, parked in the pool of the worker that
//! opened it.
//!
//! What it deliberately does not do: pipelining (one request per connection at a time), HTTP/2
//! to targets, HTTP/0.9 responses, obsolete header line folding, replaying a request whose body
//! was streamed, or reusing a connection whose target sent more than the response it was asked
//! for.

use std::collections::HashMap;
use std::fmt;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice, Write as _};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::fields::{Known, MAX_HEAD, MAX_HEADERS, classify};
use crate::target::{TargetRt, lock};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A chunk-size line with its extensions.
const MAX_CHUNK_LINE: usize = 4096;
/// The largest body frame handed to hyper's server at once.
const MAX_FRAME: usize = 64 * 1024;
/// How much room a read asks for: small answers arrive whole, big ones in large frames.
const READ_SIZE: usize = 16 * 1024;
/// Room for a response head (and a small body behind it): what an idle pooled connection keeps.
const HEAD_READ_SIZE: usize = 4096;

/// Why a request to a target failed.
#[derive(Debug)]
pub enum Error {
    /// No connection could be opened.
    Connect(String),
    /// The connection failed before any byte of a response arrived (write error, EOF, reset).
    /// On a reused connection that usually means the target closed it while it sat idle.
    NoResponse(io::Error),
    /// The target broke the protocol or the connection after it began to answer.
    Target(String),
    /// The client's request body failed: the client's fault, never the target's.
    RequestBody(ClientFault),
    /// The target was released after draining; its connections are cut.
    Closed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect(why) => write!(f, "cannot connect: {why}"),
            Error::NoResponse(e) => write!(f, "connection failed before a response: {e}"),
            Error::Target(why) => write!(f, "{why}"),
            Error::RequestBody(fault) => write!(f, "request body: {fault}"),
            Error::Closed => write!(f, "the target was released"),
        }
    }
}

impl std::error::Error for Error {}

/// What went wrong with a client's request body. Each is the client's error: the load
/// balancer answers it itself (see `metrics`) and no target group is blamed.
#[derive(Debug, thiserror::Error)]
pub enum ClientFault {
    /// The body is not valid framing (chunked), or not as long as it said.
    #[error("{0}")]
    Framing(#[from] BadFraming),
    #[error("longer than its Content-Length")]
    TooLong,
    /// The client half-closed its connection before the body ended.
    #[error("the client closed its side inside the body")]
    Truncated,
    /// The client sent no byte of its body for the idle timeout (ALB's 408).
    #[error("the client sent nothing for the idle timeout")]
    Stalled,
    /// The client's connection failed (a reset): there is nobody left to answer (ALB's 460).
    #[error("the client went away: {0}")]
    Gone(io::Error),
    /// An HTTP/2 client's stream failed (a reset, or a body longer or shorter than its
    /// `content-length`, which hyper checks).
    #[error("{0}")]
    Stream(String),
}

impl ClientFault {
    /// The load balancer's answer, if anyone is left to read one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientFault::Framing(_)
            | ClientFault::TooLong
            | ClientFault::Truncated
            | ClientFault::Stream(_) => Some(StatusCode::BAD_REQUEST),
            ClientFault::Stalled => Some(StatusCode::REQUEST_TIMEOUT),
            ClientFault::Gone(_) => None,
        }
    }
}

impl From<std::convert::Infallible> for ClientFault {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl From<hyper::Error> for ClientFault {
    fn from(e: hyper::Error) -> Self {
        ClientFault::Stream(e.to_string())
    }
}

/// Chunked framing that breaks RFC 9112 §7.1, from a client or a target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadFraming {
    #[error("chunk size line over {MAX_CHUNK_LINE} bytes")]
    LineTooLong,
    #[error("invalid chunk size line: {0}")]
    SizeLine(&'static str),
    #[error("chunk data not followed by CRLF")]
    DataEnd,
    #[error("trailers over {MAX_HEAD} bytes or {MAX_HEADERS} fields")]
    TrailersTooLarge,
    #[error("malformed trailers")]
    Trailers,
}

impl From<BadFraming> for Error {
    /// On the response side, bad framing is the target's.
    fn from(e: BadFraming) -> Self {
        Error::Target(format!("response body: {e}"))
    }
}

fn target_error(what: &str, e: io::Error) -> Error {
    Error::Target(format!("{what}: {e}"))
}

/// Cuts a target's connections, in use or not, when the target is released: there is no
/// connection task to tell, so each connection keeps a waker here that the request's future
/// registers whenever it waits on the connection.
pub struct Closer {
    closed: AtomicBool,
    /// Open connections to the target (pooled, in use).
    open: AtomicU64,
    next_id: AtomicU64,
    wakers: Mutex<HashMap<u64, Arc<AtomicWaker>>>,
}

impl Default for Closer {
    fn default() -> Self {
        Closer {
            closed: AtomicBool::new(false),
            open: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            wakers: Mutex::new(HashMap::new()),
        }
    }
}

impl Closer {
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Marks the target closed and wakes every request waiting on one of its connections.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for waker in lock(&self.wakers).values() {
            waker.wake();
        }
    }

    fn enroll(self: &Arc<Self>) -> Enrolled {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let waker = Arc::new(AtomicWaker::new());
        lock(&self.wakers).insert(id, waker.clone());
        self.open.fetch_add(1, Ordering::Relaxed);
        Enrolled { closer: self.clone(), id, waker }
    }
}

/// One connection's place in its target's [`Closer`].
struct Enrolled {
    closer: Arc<Closer>,
    id: u64,
    waker: Arc<AtomicWaker>,
}

impl Enrolled {
    /// Ready once the target is closed; until then the task is woken when it is.
    #[inline]
    fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.closer.is_closed() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // Checked again: `close` may have run between the first check and the registration.
        if self.closer.is_closed() { Poll::Ready(()) } else { Poll::Pending }
    }
}

impl Drop for Enrolled {
    fn drop(&mut self) {
        lock(&self.closer.wakers).remove(&self.id);
        self.closer.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A target connection after a 101, for a tunnel.
pub struct Upgraded {
    pub stream: TcpStream,
    /// What the target sent right after its 101 head.
    pub leftover: Bytes,
    /// The connection stays counted among its target's, and learns when the target is released.
    pub release: Release,
}

/// An upgraded connection's place in its target's [`Closer`].
pub struct Release(Enrolled);

impl Release {
    /// Resolves once the target is released at the end of its deregistration delay.
    pub async fn released(&self) {
        poll_fn(|cx| self.0.poll_closed(cx)).await
    }
}

/// A connection to a target. Its socket is registered with the reactor of the worker that
/// opened it, so only that worker may use it.
pub struct UpstreamConn {
    stream: TcpStream,
    /// Bytes read from the target and not used yet.
    buf: BytesMut,
    /// The request head being written; kept so that its allocation is reused.
    out: Vec<u8>,
    enrolled: Enrolled,
}

impl UpstreamConn {
    pub async fn connect(addr: SocketAddr, closer: &Arc<Closer>) -> Result<Box<Self>, Error> {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Error::Connect(e.to_string())),
            Err(_) => return Err(Error::Connect("connect timed out".into())),
        };
        let _ = stream.set_nodelay(true);
        Ok(Box::new(UpstreamConn {
            stream,
            buf: BytesMut::new(),
            out: Vec::new(),
            enrolled: closer.enroll(),
        }))
    }

    /// Whether an idle connection still looks usable. Costs no syscall unless the reactor saw
    /// the socket readable; then one read tells a closed or chattering connection (both are
    /// dropped) from a stale readiness flag.
    pub fn still_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Parks the connection: forgets the waker of the request that last used it, so that an
    /// idle connection does not keep a finished task's memory alive, and drops a grown buffer.
    pub fn park(&mut self) {
        drop(self.enrolled.waker.take());
        // A large body made the read buffer grow; an idle connection waits with a small one.
        if self.buf.is_empty() && self.buf.capacity() > 2 * HEAD_READ_SIZE {
            self.buf = BytesMut::new();
        }
    }

    /// Reads more of the response into `buf`; `Ok(0)` is EOF. Ends with [`Error::Closed`] when
    /// the target is released while this waits.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, Error>> {
        match poll_read_more(&self.stream, &mut self.buf, READ_SIZE, cx) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(target_error("reading the response body", e))),
            Poll::Pending => self.enrolled.poll_closed(cx).map(|()| Err(Error::Closed)),
        }
    }

    /// The buffer the next request head is encoded into, emptied; whatever follows the head in
    /// it (a small body) goes out in the same write.
    pub fn head_buf(&mut self) -> &mut Vec<u8> {
        self.out.clear();
        &mut self.out
    }

    /// Writes the encoded request head (see [`UpstreamConn::head_buf`]) and the body, and reads
    /// the response head. Returns the head and whether the whole request was written (a target
    /// may answer before it has read the body).
    async fn exchange<B>(&mut self, outgoing: Outgoing<B>) -> Result<(Head, bool), Error>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<ClientFault>,
    {
        let UpstreamConn { stream, buf, out, enrolled } = self;
        let stream = &*stream;
        let exchange = async move {
            write_all(stream, out).await.map_err(Error::NoResponse)?;
            match outgoing {
                Outgoing::Empty => Ok((read_head(stream, buf).await?, true)),
                Outgoing::Length(len, body) => {
                    send_body_while_reading(stream, buf, body, Some(len)).await
                }
                Outgoing::Chunked(body) => send_body_while_reading(stream, buf, body, None).await,
            }
        };
        let mut exchange = pin!(exchange);
        poll_fn(|cx| match exchange.as_mut().poll(cx) {
            Poll::Ready(done) => Poll::Ready(done),
            Poll::Pending => enrolled.poll_closed(cx).map(|()| Err(Error::Closed)),
        })
        .await
    }
}

/// Reads what the socket has into `buf`'s spare room (made `room` first if under a quarter of
/// it).
fn poll_read_more(
    stream: &TcpStream,
    buf: &mut BytesMut,
    room: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < room / 4 {
        buf.reserve(room);
    }
    loop {
        ready!(stream.poll_read_ready(cx))?;
        let room = buf.capacity() - buf.len();
        match stream.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Ok(n) if n > 0 && n < room => {
                // A read that did not fill the buffer drained the socket (epoll is
                // edge-triggered), so its readiness is cleared now, without the extra read that
                // would otherwise find it empty — as tokio's own `AsyncRead` does. No event is
                // lost: readiness set by a newer event survives (tokio compares event ticks).
                let _ = stream.try_io(Interest::READABLE, || {
                    Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock))
                });
                return Poll::Ready(Ok(n));
            }
            done => return Poll::Ready(done),
        }
    }
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match stream.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn write_all_vectored(stream: &TcpStream, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !bufs.is_empty() {
        match stream.try_write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How the request body goes to the target, after the head.
pub enum Outgoing<B> {
    Empty,
    Length(u64, B),
    Chunked(B),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length,
    Chunked,
}

impl<B> Outgoing<B> {
    pub fn framing(&self) -> Framing {
        match self {
            Outgoing::Empty => Framing::Empty,
            Outgoing::Length(..) => Framing::Length,
            Outgoing::Chunked(_) => Framing::Chunked,
        }
    }
}

/// A body that has ended before it started (GET, `Content-Length: 0`) is not sent at all; a
/// declared length is kept; anything else is streamed chunked.
fn outgoing<B: Body>(parts: &Parts, body: B) -> Outgoing<B> {
    if body.is_end_stream() || body.size_hint().exact() == Some(0) {
        return Outgoing::Empty;
    }
    let mut lengths = parts.headers.get_all(header::CONTENT_LENGTH).iter();
    match (lengths.next().map(|v| parse_length(v.as_bytes())), lengths.next()) {
        (Some(Some(len)), None) => Outgoing::Length(len, body),
        _ => Outgoing::Chunked(body),
    }
}

pub fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The request head in one buffer, written with one syscall.
pub fn encode_head(parts: &Parts, framing: Framing, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        // hyper's server answers the client's 100-continue itself once the body is read; passed
        // on, the target would send a 100 of its own.
        let skip = (name == header::EXPECT
            && value.as_bytes().eq_ignore_ascii_case(b"100-continue"))
            || name == header::TRANSFER_ENCODING
            || (framing == Framing::Chunked && name == header::CONTENT_LENGTH);
        if skip {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

enum BodyFailure {
    /// The target stopped taking the body; it may still have answered.
    Target,
    /// The client's side is at fault: the exchange ends.
    Client(Error),
}

/// Streams the request body while waiting for the response head, as a target may answer (and
/// close) before it has read the whole body. Returns whether the body was sent whole.
async fn send_body_while_reading<B>(
    stream: &TcpStream,
    buf: &mut BytesMut,
    body: B,
    length: Option<u64>,
) -> Result<(Head, bool), Error>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<ClientFault>,
{
    let mut writing = pin!(write_body(stream, body, length));
    let mut reading = pin!(read_head(stream, buf));
    let mut written = None;
    poll_fn(|cx| {
        if written.is_none()
            && let Poll::Ready(result) = writing.as_mut().poll(cx)
        {
            written = Some(match result {
                Ok(()) => true,
                Err(BodyFailure::Target) => false,
                Err(BodyFailure::Client(e)) => return Poll::Ready(Err(e)),
            });
        }
        let head = ready!(reading.as_mut().poll(cx))?;
        Poll::Ready(Ok((head, written == Some(true))))
    })
    .await
}

/// Writes the body as is when its length was declared (refusing one that turns out longer or
/// shorter), chunked otherwise, with the client's trailers if it sent any.
async fn write_body<B>(
    stream: &TcpStream,
    mut body: B,
    length: Option<u64>,
) -> Result<(), BodyFailure>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<ClientFault>,
{
    let client = |fault: ClientFault| BodyFailure::Client(Error::RequestBody(fault));
    let mut left = length.unwrap_or(0);
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| client(e.into()))?;
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                trailers = frame.into_trailers().ok();
                continue;
            }
        };
        if data.is_empty() {
            continue;
        }
        let written = if length.is_some() {
            if data.len() as u64 > left {
                return Err(client(ClientFault::TooLong));
            }
            left -= data.len() as u64;
            write_all(stream, &data).await
        } else {
            let size = format!("{:x}\r\n", data.len());
            let mut parts =
                [IoSlice::new(size.as_bytes()), IoSlice::new(&data), IoSlice::new(b"\r\n")];
            write_all_vectored(stream, &mut parts).await
        };
        written.map_err(|_| BodyFailure::Target)?;
    }
    if length.is_some() {
        if left > 0 {
            return Err(client(ClientFault::Truncated));
        }
        return Ok(());
    }
    let mut last = b"0\r\n".to_vec();
    for (name, value) in trailers.iter().flatten() {
        last.extend_from_slice(name.as_str().as_bytes());
        last.extend_from_slice(b": ");
        last.extend_from_slice(value.as_bytes());
        last.extend_from_slice(b"\r\n");
    }
    last.extend_from_slice(b"\r\n");
    write_all(stream, &last).await.map_err(|_| BodyFailure::Target)
}

/// A final response head as the target sent it (informational ones are skipped, except 101):
/// its bytes, and where each field's name and value are in them. The HTTP/1 path copies fields
/// straight to the client; HTTP/2 builds a header map ([`Answer::into_response`]).
pub struct Head {
    status: StatusCode,
    version: Version,
    /// Where the reason phrase is, when it is not the usual one for the status.
    reason: Option<(u32, u32)>,
    bytes: Bytes,
    fields: Vec<Field>,
}

struct Field {
    /// Name start, name end, value start, value end.
    span: [u32; 4],
    known: Known,
}

impl Head {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The target's own reason phrase, if it is not the usual one.
    pub fn reason(&self) -> Option<&[u8]> {
        self.reason.map(|(a, b)| &self.bytes[a as usize..b as usize])
    }

    /// Each field's name, value and kind, in the order the target sent them.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8], Known)> {
        self.fields.iter().map(|f| {
            let [n0, n1, v0, v1] = f.span.map(|i| i as usize);
            (&self.bytes[n0..n1], &self.bytes[v0..v1], f.known)
        })
    }

    /// The values of the fields of this kind.
    pub fn values(&self, known: Known) -> impl Iterator<Item = &[u8]> {
        self.fields().filter(move |f| f.2 == known).map(|f| f.1)
    }

    fn has(&self, known: Known) -> bool {
        self.fields.iter().any(|f| f.known == known)
    }

    fn header_map(&self) -> Result<HeaderMap, Error> {
        let mut headers = HeaderMap::with_capacity(self.fields.len());
        for &Field { span: [n0, n1, v0, v1], .. } in &self.fields {
            let name = HeaderName::from_bytes(&self.bytes[n0 as usize..n1 as usize]);
            let value = HeaderValue::from_maybe_shared(self.bytes.slice(v0 as usize..v1 as usize));
            match (name, value) {
                (Ok(name), Ok(value)) => {
                    headers.append(name, value);
                }
                _ => return Err(Error::Target("invalid header in the response".into())),
            }
        }
        Ok(headers)
    }
}

async fn read_head(stream: &TcpStream, buf: &mut BytesMut) -> Result<Head, Error> {
    let mut answered = !buf.is_empty();
    loop {
        if let Some(head) = parse_head(buf)? {
            return Ok(head);
        }
        if buf.len() >= MAX_HEAD {
            return Err(Error::Target(format!("response head over {MAX_HEAD} bytes")));
        }
        let n = poll_fn(|cx| poll_read_more(stream, buf, HEAD_READ_SIZE, cx)).await;
        match n {
            Ok(0) if !answered => {
                return Err(Error::NoResponse(io::ErrorKind::UnexpectedEof.into()));
            }
            Err(e) if !answered => return Err(Error::NoResponse(e)),
            Ok(0) => return Err(Error::Target("connection closed inside a response head".into())),
            Err(e) => return Err(target_error("reading the response head", e)),
            Ok(_) => answered = true,
        }
    }
}

/// Parses a complete response head off the front of `buf`; `None` when more bytes are needed.
pub(crate) fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, Error> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        let mut fields = Vec::new();
        let (len, code, version, reason) = {
            let mut headers =
                [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut res,
                buf,
                &mut headers,
            );
            let len = match parsed {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => return Err(Error::Target(format!("malformed response head: {e}"))),
            };
            let base = buf.as_ptr() as usize;
            let at = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
            fields.reserve_exact(res.headers.len());
            for h in res.headers.iter() {
                let (name, value) = (at(h.name.as_bytes()), at(h.value));
                fields.push(Field {
                    span: [name, name + h.name.len() as u32, value, value + h.value.len() as u32],
                    known: classify(h.name),
                });
            }
            let code = res.code.unwrap_or(0);
            let phrase = res.reason.unwrap_or("");
            let status = StatusCode::from_u16(code).ok();
            // Like hyper: only a reason phrase other than the usual one is kept. An empty one
            // is not kept either: httparse gives a phrase with obs-text as a static "", which
            // is not in `buf` and has no position there.
            let reason = (!phrase.is_empty()
                && status.and_then(|s| s.canonical_reason()) != Some(phrase))
            .then(|| (at(phrase.as_bytes()), at(phrase.as_bytes()) + phrase.len() as u32));
            let version = if res.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
            (len, status, version, reason)
        };
        let Some(status) = code else {
            return Err(Error::Target("response status out of range".into()));
        };
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            buf.advance(len);
            continue;
        }
        let bytes = buf.split_to(len).freeze();
        return Ok(Some(Head { status, version, reason, bytes, fields }));
    }
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delimit {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Returns the framing and whether the connection must close after this response.
pub(crate) fn response_framing(head: &Head, head_request: bool) -> Result<(Delimit, bool), Error> {
    let status = head.status.as_u16();
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok((Delimit::None, false));
    }
    if head.has(Known::TransferEncoding) {
        let last = head.values(Known::TransferEncoding).last();
        let chunked = last
            .and_then(|v| v.rsplit(|&b| b == b',').next())
            .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        // With a Content-Length as well the message is suspect: decoded, but never reused.
        let must_close = head.has(Known::ContentLength);
        return Ok(if chunked {
            (Delimit::Chunked, must_close)
        } else {
            (Delimit::UntilClose, true)
        });
    }
    let mut lengths = head.values(Known::ContentLength);
    match (lengths.next(), lengths.next()) {
        (None, _) => Ok((Delimit::UntilClose, true)),
        (Some(v), None) => match parse_length(v) {
            Some(n) => Ok((Delimit::Length(n), false)),
            None => Err(Error::Target("invalid Content-Length in the response".into())),
        },
        (Some(_), Some(_)) => {
            Err(Error::Target("more than one Content-Length in the response".into()))
        }
    }
}

/// Whether the connection may carry another request, by the response's version and
/// `Connection` header.
fn keep_alive(head: &Head) -> bool {
    let mut keep = head.version == Version::HTTP_11;
    for value in head.values(Known::Connection) {
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                return false;
            }
            if token.eq_ignore_ascii_case(b"keep-alive") {
                keep = true;
            }
        }
    }
    keep
}

/// A connection for the next request to `target`: one of `worker`'s idle ones, or a new one.
/// Says whether it was reused. A failure here means nothing of the request reached the target,
/// so the request may go to another.
pub async fn checkout_or_connect(
    target: &TargetRt,
    worker: usize,
) -> Result<(Box<UpstreamConn>, bool), Error> {
    if target.closer.is_closed() {
        return Err(Error::Closed);
    }
    match target.checkout(worker) {
        Some(conn) => Ok((conn, true)),
        None => Ok((UpstreamConn::connect(target.addr, &target.closer).await?, false)),
    }
}

/// Sends a request over `conn` (the HTTP/2 side's path; HTTP/1 clients encode their own head
/// and call [`send_encoded`]).
pub async fn send<B>(
    target: &TargetRt,
    mut conn: Box<UpstreamConn>,
    reused: bool,
    req: Request<B>,
) -> Result<Response<UpstreamBody>, Error>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<ClientFault>,
{
    let (parts, body) = req.into_parts();
    let outgoing = outgoing(&parts, body);
    encode_head(&parts, outgoing.framing(), conn.head_buf());
    send_encoded(target, conn, reused, parts.method == Method::HEAD, outgoing)
        .await?
        .into_response()
}

/// Sends the head already in `conn`'s [`UpstreamConn::head_buf`], then `outgoing`. A request
/// whose body is empty or went out with its head, which a reused connection failed before any
/// answer, is sent once more on a new connection: the target most likely closed the idle
/// connection as the request went out.
pub async fn send_encoded<B>(
    target: &TargetRt,
    mut conn: Box<UpstreamConn>,
    mut reused: bool,
    head_request: bool,
    outgoing: Outgoing<B>,
) -> Result<Answer, Error>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<ClientFault>,
{
    let mut outgoing = Some(outgoing);
    loop {
        let out = outgoing.take().unwrap_or(Outgoing::Empty);
        let replayable = matches!(out, Outgoing::Empty);
        match conn.exchange(out).await {
            Ok((head, request_complete)) => {
                return into_answer(conn, head, head_request, request_complete);
            }
            Err(Error::NoResponse(_)) if reused && replayable => {
                reused = false;
                let head = std::mem::take(&mut conn.out);
                conn = UpstreamConn::connect(target.addr, &target.closer).await?;
                conn.out = head;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A target's answer: its head, and its body read from the connection.
pub struct Answer {
    pub head: Head,
    /// How the target delimits the body (`None` for HEAD, 1xx, 204, 304 and 101).
    pub delimit: Delimit,
    pub body: UpstreamBody,
}

impl Answer {
    /// As hyper's server takes it.
    pub fn into_response(self) -> Result<Response<UpstreamBody>, Error> {
        let headers = self.head.header_map()?;
        let reason = self.head.reason().and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok());
        let mut resp = Response::new(self.body);
        *resp.status_mut() = self.head.status;
        *resp.version_mut() = self.head.version;
        *resp.headers_mut() = headers;
        if let Some(reason) = reason {
            resp.extensions_mut().insert(reason);
        }
        Ok(resp)
    }
}

fn into_answer(
    conn: Box<UpstreamConn>,
    head: Head,
    head_request: bool,
    request_complete: bool,
) -> Result<Answer, Error> {
    let (delimit, state, reusable) = if head.status == StatusCode::SWITCHING_PROTOCOLS {
        if !request_complete {
            return Err(Error::Target("switched protocols before the request was sent".into()));
        }
        (Delimit::None, State::Done, false)
    } else {
        let (delimit, must_close) = response_framing(&head, head_request)?;
        let reusable = request_complete && !must_close && keep_alive(&head);
        let state = match delimit {
            Delimit::None | Delimit::Length(0) => State::Done,
            Delimit::Length(n) => State::Length(n),
            Delimit::Chunked => State::Chunked(Chunked::Size),
            Delimit::UntilClose => State::UntilClose,
        };
        (delimit, state, reusable)
    };
    let mut body = UpstreamBody { conn: Some(conn), state, reusable, request_complete };
    body.settle();
    Ok(Answer { head, delimit, body })
}

enum State {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    /// Read to its end.
    Done,
    /// Failed; the connection is gone.
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunked {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

/// What the buffered bytes of a body give next.
pub enum Step {
    /// The next `n` bytes of the buffer are body data, left there for the caller, who takes
    /// them before asking again: a client on HTTP/1 copies them out, HTTP/2 splits them off.
    Data(usize),
    /// The body's trailer fields; the body has ended.
    Trailers(HeaderMap),
    End,
    More,
}

/// A target's response body, read straight from its connection.
pub struct UpstreamBody {
    conn: Option<Box<UpstreamConn>>,
    state: State,
    /// Whether the connection may carry another request once this body has been read.
    reusable: bool,
    /// Whether the whole request went to the target before it answered.
    request_complete: bool,
}

impl UpstreamBody {
    /// Whether the whole request, body included, went out before the target answered.
    pub fn request_complete(&self) -> bool {
        self.request_complete
    }

    /// The connection, if the body was read to its end and the connection can be reused: the
    /// response allowed it, the request was sent whole and the target sent nothing more.
    pub fn take_reusable(&mut self) -> Option<Box<UpstreamConn>> {
        let whole = matches!(self.state, State::Done) && self.reusable;
        if whole && self.conn.as_ref().is_some_and(|c| c.buf.is_empty()) {
            return self.conn.take();
        }
        None
    }

    /// After a 101: the raw connection and whatever the target sent past the response head.
    pub fn into_upgrade(mut self) -> Option<Upgraded> {
        let conn = *self.conn.take()?;
        let UpstreamConn { stream, buf, enrolled, .. } = conn;
        Some(Upgraded { stream, leftover: buf.freeze(), release: Release(enrolled) })
    }

    fn fail(&mut self, e: Error) -> Poll<Result<Step, Error>> {
        self.state = State::Failed;
        self.conn = None;
        Poll::Ready(Err(e))
    }

    /// The body's next step, reading from the target when nothing usable is buffered; never
    /// `More`. After `Data(n)`, the caller takes the bytes with [`UpstreamBody::take`].
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Result<Step, Error>> {
        loop {
            if matches!(self.state, State::Done | State::Failed) {
                return Poll::Ready(Ok(Step::End));
            }
            let Some(conn) = self.conn.as_mut() else { return Poll::Ready(Ok(Step::End)) };
            if conn.enrolled.closer.is_closed() {
                return self.fail(Error::Closed);
            }
            match self.next_buffered() {
                Ok(Step::More) => {}
                Ok(Step::Trailers(trailers)) => {
                    self.state = State::Done;
                    return Poll::Ready(Ok(Step::Trailers(trailers)));
                }
                Ok(step) => return Poll::Ready(Ok(step)),
                Err(e) => return self.fail(e),
            }
            let Some(conn) = self.conn.as_mut() else { return Poll::Ready(Ok(Step::End)) };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(self.state, State::UntilClose) => {
                    self.state = State::Done;
                    return Poll::Ready(Ok(Step::End));
                }
                Ok(0) => {
                    return self
                        .fail(Error::Target("connection closed inside the response body".into()));
                }
                Ok(_) => {}
                Err(e) => return self.fail(e),
            }
        }
    }

    /// Hands the `n` data bytes a `Step::Data(n)` announced to `f`, which consumes them.
    fn take<R>(&mut self, n: usize, f: impl FnOnce(&mut BytesMut) -> R) -> R {
        let conn = self.conn.as_mut().expect("data is announced only with its connection");
        debug_assert!(conn.buf.len() >= n);
        let taken = f(&mut conn.buf);
        self.settle();
        taken
    }

    /// Appends the body's next data to `out`, re-chunked when `rechunk`: an HTTP/1 client's
    /// copy, without making a `Bytes` of each piece first. `Ok(false)` once the body has ended;
    /// trailers are dropped, as a client on HTTP/1 is not known to accept them.
    pub fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<u8>,
        rechunk: bool,
    ) -> Poll<Result<bool, Error>> {
        loop {
            match ready!(self.poll_step(cx))? {
                // An empty piece, copied as a chunk, would end the client's body early.
                Step::Data(0) | Step::Trailers(_) => {}
                Step::Data(n) => {
                    self.take(n, |buf| {
                        if rechunk {
                            let _ = write!(out, "{n:x}\r\n");
                        }
                        out.extend_from_slice(&buf[..n]);
                        if rechunk {
                            out.extend_from_slice(b"\r\n");
                        }
                        buf.advance(n);
                    });
                    return Poll::Ready(Ok(true));
                }
                Step::End | Step::More => return Poll::Ready(Ok(false)),
            }
        }
    }

    /// Takes the next step from bytes already read.
    fn next_buffered(&mut self) -> Result<Step, Error> {
        let Some(conn) = self.conn.as_mut() else { return Ok(Step::End) };
        let buf = &mut conn.buf;
        match &mut self.state {
            State::Done | State::Failed => Ok(Step::End),
            State::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = buf.len().min(MAX_FRAME).min(*left as usize);
                *left -= n as u64;
                if *left == 0 {
                    self.state = State::Done;
                }
                Ok(Step::Data(n))
            }
            State::UntilClose => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                Ok(Step::Data(buf.len().min(MAX_FRAME)))
            }
            State::Chunked(chunked) => {
                let step = decode_chunked(chunked, buf)?;
                if matches!(step, Step::End) {
                    self.state = State::Done;
                }
                Ok(step)
            }
        }
    }

    /// Moves a chunked body past framing bytes already read, so that a body whose end has
    /// arrived says so at once: hyper's server then stops polling it and the connection goes
    /// back to the pool without another read.
    fn settle(&mut self) {
        if let (State::Chunked(chunked), Some(conn)) = (&mut self.state, self.conn.as_mut())
            && skip_framing(chunked, &mut conn.buf)
        {
            self.state = State::Done;
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        Poll::Ready(match ready!(this.poll_step(cx)) {
            Ok(Step::Data(n)) => {
                Some(Ok(Frame::data(this.take(n, |buf| buf.split_to(n).freeze()))))
            }
            Ok(Step::Trailers(trailers)) => Some(Ok(Frame::trailers(trailers))),
            Ok(Step::End | Step::More) => None,
            Err(e) => Some(Err(e)),
        })
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// Decodes chunked framing from `buf` (a target's response or a client's request body).
pub fn decode_chunked(state: &mut Chunked, buf: &mut BytesMut) -> Result<Step, BadFraming> {
    loop {
        match *state {
            Chunked::Size => {
                let Some(nl) = memchr::memchr(b'\n', buf) else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(BadFraming::LineTooLong);
                    }
                    return Ok(Step::More);
                };
                if nl > MAX_CHUNK_LINE {
                    return Err(BadFraming::LineTooLong);
                }
                let size = parse_chunk_size(&buf[..=nl])?;
                buf.advance(nl + 1);
                *state = if size == 0 { Chunked::Trailers } else { Chunked::Data(size) };
            }
            Chunked::Data(left) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = buf.len().min(MAX_FRAME).min(left as usize);
                *state = if left == n as u64 {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(left - n as u64)
                };
                return Ok(Step::Data(n));
            }
            Chunked::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Step::More);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(BadFraming::DataEnd);
                }
                buf.advance(2);
                *state = Chunked::Size;
            }
            Chunked::Trailers => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                    return Ok(Step::End);
                }
                let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
                    if buf.len() > MAX_HEAD {
                        return Err(BadFraming::TrailersTooLarge);
                    }
                    return Ok(Step::More);
                };
                let trailers = parse_trailers(&buf[..end + 4])?;
                buf.advance(end + 4);
                return Ok(Step::Trailers(trailers));
            }
        }
    }
}

/// [`decode_chunked`] without producing anything: consumes the framing that is already
/// buffered up to the next data or trailers. Returns true if that reached the body's end.
/// Leaves anything malformed in place for `decode_chunked` to report.
fn skip_framing(state: &mut Chunked, buf: &mut BytesMut) -> bool {
    loop {
        match *state {
            Chunked::DataEnd if buf.starts_with(b"\r\n") => {
                buf.advance(2);
                *state = Chunked::Size;
            }
            Chunked::Size => {
                let Some(nl) = memchr::memchr(b'\n', buf) else { return false };
                let Ok(size) = parse_chunk_size(&buf[..=nl]) else { return false };
                buf.advance(nl + 1);
                *state = if size == 0 { Chunked::Trailers } else { Chunked::Data(size) };
            }
            Chunked::Trailers if buf.starts_with(b"\r\n") => {
                buf.advance(2);
                return true;
            }
            _ => return false,
        }
    }
}

/// `chunk-size [ chunk-ext ] CRLF`, strictly (RFC 9112 §7.1): hex digits that fit in 64 bits,
/// then extensions `;name` or `;name=value` (a token or a quoted string), with optional spaces
/// and tabs only around their `;` and `=`.
fn parse_chunk_size(line: &[u8]) -> Result<u64, BadFraming> {
    let bad = BadFraming::SizeLine;
    let line = line.strip_suffix(b"\r\n").ok_or_else(|| bad("no CRLF"))?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(bad("no size"));
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(digit))
            .ok_or_else(|| bad("size overflows"))?;
    }
    if !valid_chunk_ext(&line[digits..]) {
        return Err(bad("invalid extension"));
    }
    Ok(size)
}

/// `*( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`.
fn valid_chunk_ext(mut ext: &[u8]) -> bool {
    fn skip_bws(s: &[u8]) -> &[u8] {
        let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        &s[n..]
    }
    while !ext.is_empty() {
        let Some(rest) = skip_bws(ext).strip_prefix(b";") else { return false };
        let rest = skip_bws(rest);
        let name = token_len(rest);
        if name == 0 {
            return false;
        }
        ext = &rest[name..];
        if let Some(value) = skip_bws(ext).strip_prefix(b"=") {
            let value = skip_bws(value);
            let len = if value.first() == Some(&b'"') {
                quoted_string_len(value)
            } else {
                token_len(value)
            };
            if len == 0 {
                return false;
            }
            ext = &value[len..];
        }
    }
    true
}

/// Length of the RFC 9110 token at the start of `s` (0 if none).
fn token_len(s: &[u8]) -> usize {
    s.iter().take_while(|&&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)).count()
}

/// Length of the RFC 9110 quoted-string at the start of `s`, quotes included (0 if none).
fn quoted_string_len(s: &[u8]) -> usize {
    let text = |b: u8| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80;
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return i + 1,
            b'\\' if s.get(i + 1).is_some_and(|&b| text(b)) => i += 2,
            b'\\' => return 0,
            b if text(b) => i += 1,
            _ => return 0,
        }
    }
    0
}

/// The trailer section `block` (up to and including its final CRLF CRLF), strictly: every
/// line ends with CRLF, and the fields take the whole block. httparse alone would end the
/// section at a bare LF and leave the rest of the block unread, accepting whatever it held.
pub(crate) fn parse_trailers(block: &[u8]) -> Result<HeaderMap, BadFraming> {
    let mut parsed = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let bad = || BadFraming::Trailers;
    if memchr::memchr_iter(b'\n', block).any(|i| i == 0 || block[i - 1] != b'\r') {
        return Err(bad());
    }
    let fields = match httparse::parse_headers(block, &mut parsed) {
        Ok(httparse::Status::Complete((len, fields))) if len == block.len() => fields,
        Err(httparse::Error::TooManyHeaders) => return Err(BadFraming::TrailersTooLarge),
        _ => return Err(bad()),
    };
    let mut trailers = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_bytes(f.value).map_err(|_| bad())?;
        trailers.append(name, value);
    }
    Ok(trailers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a whole chunked body from `data`.
    fn decode_all(data: &[u8]) -> Result<Step, BadFraming> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::from(data);
        loop {
            match decode_chunked(&mut state, &mut buf)? {
                Step::Data(n) => buf.advance(n),
                step => return Ok(step),
            }
        }
    }

    #[test]
    fn a_reason_phrase_with_obs_text_is_replaced_by_the_usual_one() {
        // Found by the `upstream_response` fuzz target: the phrase's position was computed
        // from a string outside the buffer (an overflow, and a bad slice in release builds).
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 O\xff\xff\r\nContent-Length: 0\r\n\r\n"[..]);
        let head = parse_head(&mut buf).unwrap().expect("a complete head");
        assert_eq!((head.status(), head.reason()), (StatusCode::OK, None));
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 Fine\r\n\r\n"[..]);
        assert_eq!(parse_head(&mut buf).unwrap().unwrap().reason(), Some(&b"Fine"[..]));
    }

    #[test]
    fn a_trailer_section_is_crlf_lines_to_its_end_and_nothing_else() {
        // Found by the `chunked` fuzz target: a bare LF ended the section for httparse, and
        // what followed it up to the next CRLF CRLF was dropped unread.
        let smuggled = b"0\r\n\n\x050\r5\r\nBarc\x01zz00;ex\nhrz\r\n\r\n";
        assert_eq!(decode_all(smuggled).err(), Some(BadFraming::Trailers));
        assert_eq!(decode_all(b"0\r\nA: b\nC: d\r\n\r\n").err(), Some(BadFraming::Trailers));
        let Ok(Step::Trailers(fields)) = decode_all(b"0\r\nA: b\r\nC: d\r\n\r\n") else {
            panic!("valid trailers refused")
        };
        assert_eq!((fields["a"].as_bytes(), fields["c"].as_bytes()), (&b"b"[..], &b"d"[..]));
    }
}
