//! Listener sockets and client connections: accept, TLS with ALPN, HTTP/1.1 or HTTP/2, idle
//! timeout and graceful close when the listener goes away or the process stops.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::conn_io::{ConnIo, ConnShared};
use crate::forward::{self, ConnCtx};
use crate::limits::{Admission, ConnSlot, PerClient, SlotKey, admission, suppressed_note};
use crate::metrics::Counters;
use crate::state::Shared;
use crate::sync::SideWaker;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const ACCEPT_BACKLOG: u32 = 4096;

/// What a listener's connections share; lives as long as the listener's bind address is in the
/// table, whatever its name, action or TLS settings become.
pub struct ListenerShared {
    pub slot: usize,
    pub bind: SocketAddr,
    pub counters: Counters,
    pub conns: AtomicU64,
    pub port_header: HeaderValue,
    pub tls: ArcSwapOption<TlsAcceptor>,
    /// The state of the certificate and key files `tls` was built from, to notice a renewal.
    pub tls_stamp: std::sync::Mutex<Option<crate::tls::FilesStamp>>,
    pub idle_timeout_ms: AtomicU64,
    /// The header timeout in force (see [`routes::ConnectionLimits`]).
    pub header_timeout_ms: AtomicU64,
    pub max_per_client: AtomicU32,
    pub per_client: PerClient,
    /// Turns true when the listener is removed or the process stops.
    pub stop: watch::Sender<bool>,
    /// Connections closed at once on arrival: their client held `max_per_client`; the data
    /// plane held its cap and none was idle.
    pub rejected_per_client: AtomicU64,
    pub rejected_at_capacity: AtomicU64,
    /// Idle connections of this listener shed for new ones.
    pub shed: AtomicU64,
    /// Heads answered 408.
    pub header_timeouts: AtomicU64,
}

impl ListenerShared {
    pub fn new(slot: usize, bind: SocketAddr, tls: Option<TlsAcceptor>, idle_ms: u64) -> Self {
        ListenerShared {
            slot,
            bind,
            counters: Counters::default(),
            conns: AtomicU64::new(0),
            port_header: HeaderValue::from(bind.port()),
            tls: ArcSwapOption::from(tls.map(Arc::new)),
            tls_stamp: std::sync::Mutex::new(None),
            idle_timeout_ms: AtomicU64::new(idle_ms),
            header_timeout_ms: AtomicU64::new(
                routes::ConnectionLimits::default().header_timeout_ms(idle_ms),
            ),
            max_per_client: AtomicU32::new(routes::ConnectionLimits::DEFAULT_MAX_PER_CLIENT),
            per_client: PerClient::default(),
            stop: watch::channel(false).0,
            rejected_per_client: AtomicU64::new(0),
            rejected_at_capacity: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            header_timeouts: AtomicU64::new(0),
        }
    }

    /// Serves `limits` (validated) from now on, with the idle timeout `idle_ms`.
    pub fn set_limits(&self, limits: &routes::ConnectionLimits, idle_ms: u64) {
        self.header_timeout_ms.store(limits.header_timeout_ms(idle_ms), Ordering::Relaxed);
        self.max_per_client.store(limits.max_per_client(), Ordering::Relaxed);
    }
}

pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Accepts connections on the caller's runtime until the listener stops, handing each to a
/// worker.
pub fn spawn_accept(shared: Arc<Shared>, ls: Arc<ListenerShared>, socket: TcpListener) {
    tokio::spawn(async move {
        let mut stop = ls.stop.subscribe();
        loop {
            tokio::select! {
                accepted = accept(&socket) => match accepted {
                    Ok((stream, peer)) => {
                        // A refused connection is closed here, at once: the client learns now
                        // instead of hanging.
                        if let Some(guard) = admit(&shared, &ls, peer.ip()) {
                            shared.workers.dispatch(stream, move |stream| serve(stream, peer, guard));
                        }
                    }
                    Err(e) => {
                        accept_failed(&shared, &ls, &e);
                        // Back off instead of spinning on an error that will repeat.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
                _ = crate::flag_set(&mut stop) => break,
            }
        }
        tracing::info!(bind = %ls.bind, "listener closed");
    });
}

/// Accepts one connection, released from this runtime's reactor for the worker that will serve
/// it (it stays non-blocking).
async fn accept(socket: &TcpListener) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    let (stream, peer) = socket.accept().await?;
    let _ = stream.set_nodelay(true);
    Ok((stream.into_std()?, peer))
}

/// Applies the connection limits to a connection just accepted from `ip`: `None` refuses it
/// (the caller closes it), after counting and warning.
fn admit(shared: &Arc<Shared>, ls: &Arc<ListenerShared>, ip: IpAddr) -> Option<ConnGuard> {
    let ip = ip.to_canonical();
    let limits = &shared.limits;
    let per_client = ls.max_per_client.load(Ordering::Relaxed);
    let cap = limits.cap();
    let open = shared.client_conns.load(Ordering::Relaxed);
    match admission(open, limits.shedding(), cap, ls.per_client.open(ip), per_client) {
        Admission::Serve => {}
        Admission::RefuseClient => {
            ls.rejected_per_client.fetch_add(1, Ordering::Relaxed);
            if let Some(n) = limits.warn_per_client.allow(crate::clock::now_ms()) {
                tracing::warn!(
                    bind = %ls.bind,
                    "client {ip} is over the limit of {per_client} connections per client; its \
                     new connection was closed (a proxy in front needs a higher \
                     `connections.max_per_client` in cutover.yaml){}",
                    suppressed_note(n)
                );
            }
            return None;
        }
        Admission::ShedThenServe(wanted) => {
            let shed = limits.shed_oldest(wanted);
            if shed == 0 {
                ls.rejected_at_capacity.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = limits.warn_capacity.allow(crate::clock::now_ms()) {
                    tracing::warn!(
                        bind = %ls.bind,
                        "the data plane holds its limit of {cap} client connections and none is \
                         idle; a new connection was closed (raise the open-file limit of \
                         `cutover lb`, `ulimit -n`, for more){}",
                        suppressed_note(n)
                    );
                }
                return None;
            }
            if let Some(n) = limits.warn_shed.allow(crate::clock::now_ms()) {
                tracing::warn!(
                    bind = %ls.bind,
                    "the data plane holds its limit of {cap} client connections: closed {shed} \
                     idle keep-alive connections, oldest first, to serve new ones{}",
                    suppressed_note(n)
                );
            }
        }
    }
    Some(ConnGuard::new(shared.clone(), ls.clone(), ip))
}

/// An accept that failed: out of descriptors (`EMFILE`, `ENFILE`) or the like. Idle connections
/// are shed to give descriptors back to the clients waiting in the backlog.
fn accept_failed(shared: &Shared, ls: &ListenerShared, e: &std::io::Error) {
    let limits = &shared.limits;
    limits.accept_errors.fetch_add(1, Ordering::Relaxed);
    // Linux's ENFILE and EMFILE.
    let out_of_descriptors = matches!(e.raw_os_error(), Some(23 | 24));
    let shed = if out_of_descriptors { limits.shed_oldest(1 + limits.cap() / 128) } else { 0 };
    if let Some(n) = limits.warn_accept_error.allow(crate::clock::now_ms()) {
        let freed = if shed > 0 {
            format!("; closed {shed} idle keep-alive connections, oldest first, to make room")
        } else {
            String::new()
        };
        tracing::warn!(bind = %ls.bind, "accept failed: {e}{freed}{}", suppressed_note(n));
    }
}

/// Counts an open client connection while alive, and keeps its place for shedding.
struct ConnGuard {
    shared: Arc<Shared>,
    ls: Arc<ListenerShared>,
    ip: IpAddr,
    key: SlotKey,
    slot: Arc<ConnSlot>,
}

impl ConnGuard {
    fn new(shared: Arc<Shared>, ls: Arc<ListenerShared>, ip: IpAddr) -> Self {
        shared.client_conns.fetch_add(1, Ordering::Relaxed);
        ls.conns.fetch_add(1, Ordering::Relaxed);
        ls.per_client.add(ip);
        let (key, slot) = shared.limits.register();
        ConnGuard { shared, ls, ip, key, slot }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.slot.was_shed() {
            self.ls.shed.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.limits.release(self.key, &self.slot);
        self.ls.per_client.remove(self.ip);
        self.ls.conns.fetch_sub(1, Ordering::Relaxed);
        self.shared.client_conns.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve(stream: TcpStream, peer: SocketAddr, guard: ConnGuard) {
    // Until the client sends something, hold only the socket: hyper allocates its buffers as
    // soon as it starts, and idle connections are the common case at scale. A client that sends
    // nothing within the header timeout is closed (nginx's `client_header_timeout`), and one
    // shed for a newer client too.
    let ls = &guard.ls;
    let wait = Duration::from_millis(ls.header_timeout_ms.load(Ordering::Relaxed));
    let mut stop = ls.stop.subscribe();
    // `peek`, not `readable`: tokio reports a fresh socket readable before any byte arrives.
    let mut first = [0u8; 1];
    tokio::select! {
        peeked = tokio::time::timeout(wait, stream.peek(&mut first)) => {
            if !matches!(peeked, Ok(Ok(n)) if n > 0) {
                return;
            }
        }
        _ = guard.slot.shed() => return,
        _ = crate::flag_set(&mut stop) => return,
    }
    if !guard.slot.busy() {
        return;
    }
    // Boxed so that the waiting task above stays small: the serving future holds hyper's and
    // rustls' connection state inline, several KiB that an idle connection should not carry.
    Box::pin(serve_active(stream, peer, &guard)).await;
}

async fn serve_active(stream: TcpStream, peer: SocketAddr, guard: &ConnGuard) {
    let client_ip = HeaderValue::from_str(&peer.ip().to_canonical().to_string())
        .unwrap_or(HeaderValue::from_static("unknown"));
    let acceptor = guard.ls.tls.load_full();
    let ctx = |tls: bool| {
        Arc::new(ConnCtx {
            shared: guard.shared.clone(),
            listener: guard.ls.clone(),
            client_ip: client_ip.clone(),
            peer_ip: peer.ip().to_canonical(),
            tls,
            slot: guard.slot.clone(),
        })
    };
    match acceptor {
        None => crate::h1::serve(stream, ctx(false)).await,
        // Boxed: TLS state and hyper's HTTP/2 connection are large, and a plain connection's
        // task should not carry room for them.
        Some(acceptor) => Box::pin(serve_tls(stream, peer, acceptor, ctx)).await,
    }
}

async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Arc<TlsAcceptor>,
    ctx: impl Fn(bool) -> Arc<ConnCtx>,
) {
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => return,
    };
    // A TLS-ALPN-01 validation is the handshake alone (RFC 8737 §3).
    if tls.get_ref().1.alpn_protocol() == Some(routes::acme::ACME_TLS_ALPN) {
        return;
    }
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        serve_h2(tls, ctx(true)).await;
    } else {
        crate::h1::serve(tls, ctx(true)).await;
    }
}

/// When an HTTP/2 connection's watchdog should look again, or `None` when the connection has
/// moved no byte for the idle timeout.
fn next_check(ls: &ListenerShared, io: &ConnShared) -> Option<Duration> {
    let limit = ls.idle_timeout_ms.load(Ordering::Relaxed);
    let used = io.idle_ms();
    (used < limit).then(|| Duration::from_millis((limit - used + 25).min(limit)))
}

async fn serve_h2<I>(stream: I, ctx: Arc<ConnCtx>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ls = ctx.listener.clone();
    let conn_io = Arc::new(ConnShared::new());
    let io = ConnIo::new(stream, conn_io.clone());
    let idle = Duration::from_millis(ls.idle_timeout_ms.load(Ordering::Relaxed));
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new()).max_concurrent_streams(256);
    let svc = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(forward::handle(ctx, req).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    let mut conn = pin!(conn);
    let mut stop_rx = ls.stop.subscribe();
    let mut stop = pin!(crate::flag_set(&mut stop_rx));
    let mut closing = false;
    let mut tick = pin!(tokio::time::sleep(idle));
    // As `h1::serve`: the timer and the stop signal are polled only when they fired.
    let mut side = SideWaker::new();
    poll_fn(|cx| {
        loop {
            if conn.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            if closing || !side.fired(cx) {
                return Poll::Pending;
            }
            let mut side_cx = side.context();
            if stop.as_mut().poll(&mut side_cx).is_ready() {
                conn.as_mut().graceful_shutdown();
                closing = true;
                continue;
            }
            if tick.as_mut().poll(&mut side_cx).is_ready() {
                match next_check(&ls, &conn_io) {
                    Some(wait) => {
                        tick.as_mut().reset(tokio::time::Instant::now() + wait);
                        side.again();
                    }
                    None => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    /// An idle client connection costs its task's future; keep that small (see `serve`), and a
    /// serving one not much more.
    #[test]
    fn an_idle_connection_task_is_small() {
        fn size<F: std::future::Future>(_: &F) -> usize {
            size_of::<F>()
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let shared = std::sync::Arc::new(crate::state::Shared::new(None, 1, 1024).unwrap());
            let ls = std::sync::Arc::new(super::ListenerShared::new(0, addr, None, 60_000));
            let guard = || super::ConnGuard::new(shared.clone(), ls.clone(), addr.ip());
            let fut = super::serve(stream, addr, guard());
            let bytes = size(&fut);
            let serving_guard = guard();
            let active = super::serve_active(
                tokio::net::TcpStream::connect(addr).await.unwrap(),
                addr,
                &serving_guard,
            );
            assert!(bytes < 1024, "the connection task is {bytes} bytes");
            // Serving, it holds the request path's state inline (TLS and HTTP/2 are boxed).
            let serving = size(&active);
            assert!(serving < 6 * 1024, "the serving connection task is {serving} bytes");
        });
    }
}
