//! Connection limits over real sockets: the data plane's cap sheds the oldest idle keep-alive
//! connection for a new client and never one with a request in flight; a client address over its
//! cap is refused at once; a head sent too slowly is answered 408 at the header timeout; the
//! warnings about all of it are rate-limited. Time-based behaviour uses short configured
//! timeouts and deadlines, never a fixed sleep.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use routes::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;

/// A target that answers `/hold` only when the test adds a permit (a request held in flight for
/// as long as a test needs), and anything else at once.
struct HeldBackend {
    addr: SocketAddr,
    release: Arc<Semaphore>,
    /// `/hold` requests that arrived.
    held: Arc<Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HeldBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HeldBackend {
    async fn start() -> HeldBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let release = Arc::new(Semaphore::new(0));
        let held = Arc::new(Semaphore::new(0));
        let (r, h) = (release.clone(), held.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { continue };
                let (release, held) = (r.clone(), h.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(end) = head_end(&buf) else {
                            let mut chunk = [0u8; 1024];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end);
                        if head.starts_with("GET /hold ") {
                            held.add_permits(1);
                            release.acquire().await.expect("open").forget();
                        }
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        HeldBackend { addr, release, held, task }
    }

    /// Waits until `n` `/hold` requests reached the target (they are in flight).
    async fn wait_held(&self, n: u32) {
        let permits = tokio::time::timeout(Duration::from_secs(5), self.held.acquire_many(n))
            .await
            .expect("the held requests reach the target within 5 s")
            .expect("open");
        permits.forget();
    }
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// A listener forwarding to `target`, health checks off, with `limits`.
async fn setup(target: SocketAddr, limits: ConnectionLimits, idle_ms: u64) -> (Lb, SocketAddr) {
    let lb = Lb::start(None).await;
    let port = free_addr();
    let mut l = listener(port, forward(&[("g", 1)]));
    l.idle_timeout_ms = Some(idle_ms);
    l.limits = limits;
    let check = HealthCheck { enabled: false, ..hc(1000) };
    lb.apply(&table(1, vec![("web", l)], vec![("g", group(&[target], check, 0))])).await;
    (lb, port)
}

/// Connects from `source` (an address of 127.0.0.0/8).
async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
    socket.connect(to).await.expect("connect")
}

/// Sends a GET on a keep-alive connection and reads its answer (`Content-Length: 2`); `None` if
/// the connection closed first.
async fn get_on(s: &mut TcpStream, path: &str) -> Option<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
    s.write_all(request.as_bytes()).await.ok()?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    let read = async {
        loop {
            if let Some(end) = head_end(&got)
                && got.len() >= end + 2
            {
                return Some(String::from_utf8_lossy(&got).into_owned());
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.expect("an answer or a close in 5 s")
}

/// Whether the server closed `s` within `within` (EOF or reset), reading and dropping anything
/// it sent first.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Whether `s` is still open: the server neither closed it nor sent anything for `quiet`.
async fn still_open(s: &mut TcpStream, quiet: Duration) -> bool {
    let mut chunk = [0u8; 16];
    tokio::time::timeout(quiet, s.read(&mut chunk)).await.is_err()
}

async fn listener_metrics(lb: &Lb) -> ListenerMetrics {
    lb.metrics().await.listeners["web"].clone()
}

async fn wait_connections(lb: &Lb, n: u64) {
    wait_until(&format!("{n} client connections are open"), Duration::from_secs(5), || async {
        lb.metrics().await.client_connections == n
    })
    .await;
}

fn ok(answer: Option<String>) -> bool {
    answer.is_some_and(|a| a.starts_with("HTTP/1.1 200"))
}

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_the_oldest_idle_connection_is_shed_and_the_new_client_served() {
    let b = HeldBackend::start().await;
    let (lb, port) = setup(b.addr, ConnectionLimits::default(), 30_000).await;
    lb.handle.as_ref().unwrap().limit_connections(3);
    let mut oldest = connect_from(LOCAL, port).await;
    assert!(ok(get_on(&mut oldest, "/").await));
    let mut second = connect_from(LOCAL, port).await;
    assert!(ok(get_on(&mut second, "/").await));
    let mut third = connect_from(LOCAL, port).await;
    assert!(ok(get_on(&mut third, "/").await));
    wait_connections(&lb, 3).await;

    let mut newcomer = connect_from(LOCAL, port).await;
    assert!(ok(get_on(&mut newcomer, "/").await), "the client over the cap is served");
    assert!(
        closed_within(&mut oldest, Duration::from_secs(2)).await,
        "the oldest idle connection is closed to make room"
    );
    assert!(ok(get_on(&mut second, "/").await), "the others stay open");
    assert!(ok(get_on(&mut third, "/").await), "the others stay open");
    let m = listener_metrics(&lb).await;
    assert_eq!(m.shed_connections, 1);
    assert_eq!(m.rejected_connections_at_capacity, 0);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_a_request_in_flight_is_never_shed() {
    let b = HeldBackend::start().await;
    let (lb, port) = setup(b.addr, ConnectionLimits::default(), 30_000).await;
    lb.handle.as_ref().unwrap().limit_connections(2);
    // The oldest connection is busy: its request waits on the target.
    let mut busy = connect_from(LOCAL, port).await;
    busy.write_all(b"GET /hold HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    b.wait_held(1).await;
    let mut idle = connect_from(LOCAL, port).await;
    assert!(ok(get_on(&mut idle, "/").await));
    wait_connections(&lb, 2).await;

    // At the cap, the idle one goes, however young, and the busy one stays.
    let mut newcomer = connect_from(LOCAL, port).await;
    assert!(ok(get_on(&mut newcomer, "/").await), "the new client is served");
    assert!(closed_within(&mut idle, Duration::from_secs(2)).await, "the idle one is shed");
    assert!(still_open(&mut busy, Duration::from_millis(200)).await, "the busy one stays");

    // With every connection busy, nothing can be shed: a new client is refused at once instead
    // of waiting in the accept queue.
    newcomer.write_all(b"GET /hold HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    b.wait_held(1).await;
    wait_connections(&lb, 2).await;
    let mut refused = connect_from(LOCAL, port).await;
    let started = Instant::now();
    assert!(closed_within(&mut refused, Duration::from_secs(2)).await, "refused, not hung");
    assert!(started.elapsed() < Duration::from_secs(1), "refused after {:?}", started.elapsed());

    // Both held requests finish normally.
    b.release.add_permits(2);
    for s in [&mut busy, &mut newcomer] {
        let mut answer = vec![0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut answer))
            .await
            .expect("the held request is answered")
            .unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&answer));
    }
    let m = listener_metrics(&lb).await;
    assert_eq!(m.shed_connections, 1);
    assert_eq!(m.rejected_connections_at_capacity, 1);
    let text = get(&lb.http, &format!("http://{}/metrics", lb.admin)).await.1;
    for line in [
        "cutover_lb_listener_rejected_connections_total{listener=\"web\",reason=\"capacity\"} 1",
        "cutover_lb_listener_shed_connections_total{listener=\"web\"} 1",
    ] {
        assert!(text.contains(line), "no `{line}` in {text}");
    }
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_its_per_address_cap_a_client_is_refused_at_once_and_others_are_served() {
    let b = HeldBackend::start().await;
    let limits = ConnectionLimits { max_per_client: Some(2), ..ConnectionLimits::default() };
    let (lb, port) = setup(b.addr, limits, 30_000).await;
    let mut first = connect_from(LOCAL, port).await;
    assert!(ok(get_on(&mut first, "/").await));
    let mut second = connect_from(LOCAL, port).await;
    assert!(ok(get_on(&mut second, "/").await));

    let mut third = connect_from(LOCAL, port).await;
    let started = Instant::now();
    assert_eq!(get_on(&mut third, "/").await, None, "the third connection is closed unanswered");
    assert!(started.elapsed() < Duration::from_secs(1), "refused after {:?}", started.elapsed());
    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 2), port).await;
    assert!(ok(get_on(&mut other, "/").await), "another address is served");
    assert!(ok(get_on(&mut first, "/").await), "the client's open connections still serve");

    // Once the client closes one, it may open another.
    drop(second);
    wait_connections(&lb, 2).await;
    let mut again = connect_from(LOCAL, port).await;
    assert!(ok(get_on(&mut again, "/").await));

    let m = listener_metrics(&lb).await;
    assert_eq!(m.rejected_connections_per_client, 1);
    assert_eq!(m.shed_connections, 0);
    let text = get(&lb.http, &format!("http://{}/metrics", lb.admin)).await.1;
    let line =
        "cutover_lb_listener_rejected_connections_total{listener=\"web\",reason=\"per_client\"} 1";
    assert!(text.contains(line), "no `{line}` in {text}");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_head_is_answered_408_at_the_header_timeout() {
    let b = HeldBackend::start().await;
    let limits = ConnectionLimits { header_timeout_ms: Some(300), ..ConnectionLimits::default() };
    // The idle timeout is far longer: the header timeout is what ends the trickle.
    let (lb, port) = setup(b.addr, limits, 20_000).await;
    let mut s = connect_from(LOCAL, port).await;
    s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 256];
    // One byte every 50 ms: the connection is never idle, and the head never complete.
    let closed = loop {
        if started.elapsed() > Duration::from_secs(5) {
            break false;
        }
        let _ = s.write_all(b"X").await;
        match tokio::time::timeout(Duration::from_millis(50), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    };
    let waited = started.elapsed();
    let answer = String::from_utf8_lossy(&got).into_owned();
    assert!(closed, "a trickled head held the connection for 5 s; got {answer:?}");
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer:?}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1500),
        "closed after {waited:?}"
    );
    assert_eq!(listener_metrics(&lb).await.header_timeouts, 1);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout_without_an_answer() {
    let b = HeldBackend::start().await;
    let limits = ConnectionLimits { header_timeout_ms: Some(300), ..ConnectionLimits::default() };
    let (lb, port) = setup(b.addr, limits, 20_000).await;
    let mut s = connect_from(LOCAL, port).await;
    let started = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    let waited = started.elapsed();
    assert!(read.is_ok(), "a silent connection held for 5 s");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1500),
        "closed after {waited:?}"
    );
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_timeout_not_shorter_than_the_idle_timeout_is_refused() {
    let b = HeldBackend::start().await;
    let lb = Lb::start(None).await;
    let mut l = listener(free_addr(), forward(&[("g", 1)]));
    l.idle_timeout_ms = Some(5_000);
    l.limits.header_timeout_ms = Some(5_000);
    let check = HealthCheck { enabled: false, ..hc(1000) };
    let (status, body) =
        lb.put(&table(1, vec![("web", l)], vec![("g", group(&[b.addr], check, 0))])).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"],
        "listener `web`: header_timeout_ms 5000 must be at least 1 and shorter than the idle \
         timeout (5000 ms): a client that stops sending its head is cut off before an idle one"
    );
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_follows_the_open_file_limit() {
    let lb = Lb::start(None).await;
    let (soft, _hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    let cap = lb.metrics().await.max_client_connections;
    // Each proxied connection may need two descriptors (the client's and a target's), after a
    // reserve of 256 for listeners, health checks, the admin API and files.
    assert_eq!(cap, (soft - 256) / 2, "soft limit {soft}");
    lb.handle.as_ref().unwrap().limit_connections(7);
    assert_eq!(lb.metrics().await.max_client_connections, 7);
    lb.handle.as_ref().unwrap().limit_connections(u64::MAX);
    assert_eq!(lb.metrics().await.max_client_connections, cap, "never above the file limit's");
    lb.shutdown().await;
}

/// Everything the process logs, for the tests that read warnings.
fn captured_log() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(|| {
        struct Writer;
        impl std::io::Write for Writer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                captured_log().lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(|| Writer)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        Mutex::new(Vec::new())
    })
}

/// The captured lines about `bind` that contain `what`.
fn log_lines(bind: SocketAddr, what: &str) -> Vec<String> {
    let log = captured_log().lock().unwrap();
    String::from_utf8_lossy(&log)
        .lines()
        .filter(|l| l.contains(&bind.to_string()) && l.contains(what))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warning_about_refused_connections_is_rate_limited_and_counts_what_it_suppressed() {
    captured_log();
    let b = HeldBackend::start().await;
    let limits = ConnectionLimits { max_per_client: Some(1), ..ConnectionLimits::default() };
    let (lb, port) = setup(b.addr, limits, 30_000).await;
    let mut holder = connect_from(LOCAL, port).await;
    assert!(ok(get_on(&mut holder, "/").await));

    // 30 refusals in a burst: one line.
    for _ in 0..30 {
        let mut s = connect_from(LOCAL, port).await;
        assert!(closed_within(&mut s, Duration::from_secs(2)).await);
    }
    let what = "over the limit of 1 connections per client";
    let first = log_lines(port, what);
    assert_eq!(first.len(), 1, "{first:#?}");
    // More refusals, until the next interval lets a line through: it counts the suppressed ones.
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        let mut s = connect_from(LOCAL, port).await;
        assert!(closed_within(&mut s, Duration::from_secs(2)).await);
        let lines = log_lines(port, what);
        if lines.len() > 1 {
            break lines[1].clone();
        }
        assert!(Instant::now() < deadline, "no second warning within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let suppressed: u64 = second
        .split("and ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of suppressed warnings in {second:?}"));
    assert!(suppressed >= 29, "{second}");
    lb.shutdown().await;
}
