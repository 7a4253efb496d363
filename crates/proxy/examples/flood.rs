//! Measures the connection limits at their defaults: `flood --lb PATH [--connections N]` starts
//! the data plane (`PATH` is the `lb` example's binary) with a one-listener table, opens `N` idle
//! keep-alive connections (one request each, from many loopback addresses, under the per-client
//! default), then `N` connections that send nothing, and reports how many the data plane holds,
//! its resident memory, and how fast new clients are served at the cap.
//!
//! ```sh
//! cargo build -p proxy --release --examples
//! target/release/examples/flood --lb target/release/examples/lb --connections 12000
//! ```

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use routes::{
    Action, ConnectionLimits, ForwardAction, HealthCheck, Listener, MetricsSnapshot, RouteTable,
    Target, TargetGroup, WeightedTargetGroup,
};

/// Connections per source address, under the default `max_per_client`.
const PER_SOURCE: usize = 500;

fn main() -> anyhow::Result<()> {
    let mut lb = None;
    let mut n = 12_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--lb" => lb = Some(value()?),
            "--connections" => n = value()?.parse()?,
            other => bail!("unknown argument {other}; use --lb PATH [--connections N]"),
        }
    }
    let lb = lb.context("--lb PATH (the lb example's binary) is required")?;
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let backend = start_backend()?;
    let admin = free_addr()?;
    let listen = free_addr()?;
    let mut child = Command::new(&lb)
        .args(["--admin", &admin.to_string(), "--threads", "2"])
        .spawn()
        .with_context(|| format!("starting {lb}"))?;
    let result = measure(&child, admin, listen, backend, n);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn measure(
    child: &Child,
    admin: SocketAddr,
    listen: SocketAddr,
    backend: SocketAddr,
    n: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(admin).is_err() {
        if Instant::now() > deadline {
            bail!("the data plane did not listen on {admin} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let table = serde_json::to_string(&table(listen, backend))?;
    let (status, body) = http(admin, "PUT", "/v1/routes", &table)?;
    if status != 200 {
        bail!("table refused: {status} {body}");
    }
    let pid = child.id();
    let cap = metrics(admin)?.max_client_connections;
    let idle_kib = rss_kib(pid)?;
    println!("data plane: limit {cap} client connections; resident {idle_kib} KiB with none");

    // Keep-alive connections that served one request each, then idle.
    let started = Instant::now();
    let mut kept = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = connect(source(i), listen)?;
        request(&mut s)?;
        kept.push(s);
    }
    let m = settle(admin, cap.min(n as u64))?;
    let rss = rss_kib(pid)?;
    let shed = m.listeners["web"].shed_connections;
    println!(
        "{n} keep-alive clients in {:.1} s: {} held, {shed} shed; resident {rss} KiB ({:.1} KiB per held connection)",
        started.elapsed().as_secs_f64(),
        m.client_connections,
        (rss - idle_kib) as f64 / m.client_connections.max(1) as f64
    );
    newcomers(listen, n, "at the cap, among idle keep-alive connections")?;
    drop(kept);
    settle(admin, 0)?;

    // Connections that send nothing (the issue's 20,000 idle clients).
    let started = Instant::now();
    let mut silent = Vec::with_capacity(n);
    for i in 0..n {
        silent.push(connect(source(i), listen)?);
    }
    let m = settle(admin, cap.min(n as u64))?;
    println!(
        "{n} silent clients in {:.1} s: {} held; resident {} KiB",
        started.elapsed().as_secs_f64(),
        m.client_connections,
        rss_kib(pid)?
    );
    newcomers(listen, 2 * n, "at the cap, among silent connections")?;
    let m = metrics(admin)?;
    let l = &m.listeners["web"];
    println!(
        "totals: shed {}, refused per client {}, refused at capacity {}, accept errors {}",
        l.shed_connections,
        l.rejected_connections_per_client,
        l.rejected_connections_at_capacity,
        m.accept_errors
    );
    drop(silent);
    Ok(())
}

/// 100 new clients, each timed from connect to its answer.
fn newcomers(listen: SocketAddr, first_source: usize, what: &str) -> anyhow::Result<()> {
    let mut times = Vec::with_capacity(100);
    for i in 0..100 {
        let started = Instant::now();
        let mut s = connect(source(first_source + i * PER_SOURCE), listen)?;
        request(&mut s).with_context(|| format!("new client {i} {what}"))?;
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "100 new clients {what}: all served; p50 {:.2} ms, max {:.2} ms",
        times[50].as_secs_f64() * 1e3,
        times[99].as_secs_f64() * 1e3
    );
    Ok(())
}

/// Waits until the data plane holds at most `most` client connections and that number stays
/// put (shed ones take a moment to close; a batch of them leaves it a little under the limit).
fn settle(admin: SocketAddr, most: u64) -> anyhow::Result<MetricsSnapshot> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = u64::MAX;
    loop {
        let m = metrics(admin)?;
        if m.client_connections <= most && m.client_connections == last {
            return Ok(m);
        }
        last = m.client_connections;
        if Instant::now() > deadline {
            bail!("{} client connections after 30 s, not at most {most}", m.client_connections);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `i`-th connection's source address: `PER_SOURCE` per address of 127.1.0.0/16.
fn source(i: usize) -> Ipv4Addr {
    let a = (i / PER_SOURCE) as u16;
    Ipv4Addr::new(127, 1, (a >> 8) as u8, a as u8)
}

/// Connects from a chosen loopback address (the standard library cannot bind before
/// connecting; tokio's `TcpSocket` can), as a blocking socket.
fn connect(from: Ipv4Addr, to: SocketAddr) -> anyhow::Result<TcpStream> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_io().build().expect("a runtime")
    });
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((from, 0)))?;
        socket.connect(to).await
    })?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

fn request(s: &mut TcpStream) -> anyhow::Result<()> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: flood\r\n\r\n")?;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(b"\r\n\r\nok") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("closed before the answer: {:?}", String::from_utf8_lossy(&got));
        }
        got.extend_from_slice(&buf[..n]);
    }
    if !got.starts_with(b"HTTP/1.1 200") {
        bail!("answered {:?}", String::from_utf8_lossy(&got));
    }
    Ok(())
}

fn table(listen: SocketAddr, backend: SocketAddr) -> RouteTable {
    let mut t = RouteTable { version: 1, ..RouteTable::default() };
    t.target_groups.insert(
        "g".into(),
        TargetGroup {
            health_check: HealthCheck { enabled: false, ..HealthCheck::default() },
            deregistration_delay_ms: 0,
            algorithm: Default::default(),
            targets: vec![Target { addr: backend }],
        },
    );
    t.listeners.insert(
        "web".into(),
        Listener {
            bind: listen,
            tls: None,
            idle_timeout_ms: None,
            limits: ConnectionLimits::default(),
            rules: Vec::new(),
            action: Action::Forward(ForwardAction::weighted(vec![WeightedTargetGroup {
                name: "g".into(),
                weight: 1,
            }])),
        },
    );
    t
}

/// A target answering every request `200 ok`, a thread per connection.
fn start_backend() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = stream;
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        got.drain(..end + 4);
                        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    Ok(addr)
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn metrics(admin: SocketAddr) -> anyhow::Result<MetricsSnapshot> {
    let (status, body) = http(admin, "GET", "/v1/metrics", "")?;
    if status != 200 {
        bail!("GET /v1/metrics: {status} {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/PID/status")
}
