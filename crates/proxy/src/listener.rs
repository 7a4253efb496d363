//! Listener sockets and client connections: accept, TLS with ALPN, HTTP/1.1 or HTTP/2, idle
//! timeout and graceful close when the listener goes away or the process stops.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    pub idle_timeout_ms: AtomicU64,
    /// Turns true when the listener is removed or the process stops.
    pub stop: watch::Sender<bool>,
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
            idle_timeout_ms: AtomicU64::new(idle_ms),
            stop: watch::channel(false).0,
        }
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
                        let (ls, shared2) = (ls.clone(), shared.clone());
                        shared.workers.dispatch(stream, move |stream| serve(stream, peer, ls, shared2));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(bind = %ls.bind, "accept failed: {e}");
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

/// Counts an open client connection while alive.
struct ConnGuard(Arc<Shared>, Arc<ListenerShared>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.client_conns.fetch_sub(1, Ordering::Relaxed);
        self.1.conns.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve(stream: TcpStream, peer: SocketAddr, ls: Arc<ListenerShared>, shared: Arc<Shared>) {
    shared.client_conns.fetch_add(1, Ordering::Relaxed);
    ls.conns.fetch_add(1, Ordering::Relaxed);
    let _guard = ConnGuard(shared.clone(), ls.clone());
    // Until the client sends something, hold only the socket: hyper allocates its buffers as
    // soon as it starts, and idle connections are the common case at scale.
    let idle = Duration::from_millis(ls.idle_timeout_ms.load(Ordering::Relaxed));
    let mut stop = ls.stop.subscribe();
    // `peek`, not `readable`: tokio reports a fresh socket readable before any byte arrives.
    let mut first = [0u8; 1];
    tokio::select! {
        peeked = tokio::time::timeout(idle, stream.peek(&mut first)) => {
            if !matches!(peeked, Ok(Ok(n)) if n > 0) {
                return;
            }
        }
        _ = crate::flag_set(&mut stop) => return,
    }
    // Boxed so that the waiting task above stays small: the serving future holds hyper's and
    // rustls' connection state inline, several KiB that an idle connection should not carry.
    Box::pin(serve_active(stream, peer, ls, shared)).await;
}

async fn serve_active(
    stream: TcpStream,
    peer: SocketAddr,
    ls: Arc<ListenerShared>,
    shared: Arc<Shared>,
) {
    let client_ip = HeaderValue::from_str(&peer.ip().to_canonical().to_string())
        .unwrap_or(HeaderValue::from_static("unknown"));
    let acceptor = ls.tls.load_full();
    let ctx = |tls: bool| {
        Arc::new(ConnCtx {
            shared: shared.clone(),
            listener: ls.clone(),
            client_ip: client_ip.clone(),
            tls,
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
            let shared = std::sync::Arc::new(crate::state::Shared::new(None, 1).unwrap());
            let ls = std::sync::Arc::new(super::ListenerShared::new(0, addr, None, 60_000));
            let fut = super::serve(stream, addr, ls, shared);
            let bytes = size(&fut);
            let ls = std::sync::Arc::new(super::ListenerShared::new(0, addr, None, 60_000));
            let shared = std::sync::Arc::new(crate::state::Shared::new(None, 1).unwrap());
            let active = super::serve_active(
                tokio::net::TcpStream::connect(addr).await.unwrap(),
                addr,
                ls.clone(),
                shared.clone(),
            );
            assert!(bytes < 1024, "the connection task is {bytes} bytes");
            // Serving, it holds the request path's state inline (TLS and HTTP/2 are boxed).
            let serving = size(&active);
            assert!(serving < 6 * 1024, "the serving connection task is {serving} bytes");
        });
    }
}
