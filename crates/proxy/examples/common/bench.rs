//! What the data-plane benchmarks share: a target, the admin API, a request, CPU time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use routes::{HealthCheck, RouteTable, Target, TargetGroup};

pub fn request(s: &mut TcpStream) -> anyhow::Result<()> {
    s.write_all(
        b"GET /app/page?id=7 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: bench\r\n\r\n",
    )?;
    let mut got = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
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

pub fn put_table(admin: SocketAddr, table: &RouteTable) -> anyhow::Result<()> {
    let body = serde_json::to_string(table)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match http(admin, "PUT", "/v1/routes", &body) {
            Ok((200, _)) => return Ok(()),
            Ok((status, answer)) => bail!("PUT /v1/routes: {status} {answer}"),
            // The data plane is still starting.
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e),
        }
    }
}

/// A target answering every request `200 ok`, a thread per connection.
pub fn start_backend() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = stream;
                let _ = s.set_nodelay(true);
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

pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
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

/// User and system CPU time of process `pid`, in nanoseconds.
pub fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) closing with `)`.
    let fields: Vec<&str> =
        stat.rsplit_once(')').context("/proc/PID/stat")?.1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Ok(ticks * 10_000_000)
}

/// What one round of load measured: the data plane's throughput and its CPU time per request.
#[derive(Clone, Copy)]
pub struct Throughput {
    pub requests_per_s: f64,
    pub cpu_us_per_request: f64,
}

/// `connections` keep-alive clients sending requests back to back to `listen` for `seconds`,
/// with the CPU time of the data plane `pid` over the same window.
pub fn load(
    connections: usize,
    seconds: u64,
    pid: u32,
    listen: SocketAddr,
) -> anyhow::Result<Throughput> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..connections {
        let mut s = TcpStream::connect(listen)?;
        s.set_nodelay(true)?;
        request(&mut s)?; // warm: the connection and the target's pooled one exist
        let (stop, done) = (stop.clone(), done.clone());
        clients.push(std::thread::spawn(move || -> anyhow::Result<()> {
            while !stop.load(Ordering::Relaxed) {
                request(&mut s)?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    let (cpu0, t0, n0) = (cpu_ns(pid)?, Instant::now(), done.load(Ordering::Relaxed));
    std::thread::sleep(Duration::from_secs(seconds)); // the measurement window itself
    let (cpu1, elapsed, n1) = (cpu_ns(pid)?, t0.elapsed(), done.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    let n = (n1 - n0).max(1) as f64;
    Ok(Throughput {
        requests_per_s: n / elapsed.as_secs_f64(),
        cpu_us_per_request: (cpu1 - cpu0) as f64 / 1000.0 / n,
    })
}

/// The round with the median throughput (its CPU time with it, as measured together).
pub fn median<T: Copy>(mut runs: Vec<T>, throughput: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| throughput(a).total_cmp(&throughput(b)));
    runs[runs.len() / 2]
}

/// Targets in a group of the benchmarks' static fleet: ten per group, like `bench-scale`'s.
pub const TARGETS_PER_GROUP: usize = 10;

/// `groups` target groups named `{prefix}{n}` of [`TARGETS_PER_GROUP`] loopback targets each
/// that nothing listens on (127.88.x.y:9, distinct across groups), health-checked at ALB's
/// defaults when `checked`: what a fleet held but not reached costs.
pub fn static_target_groups(
    prefix: &str,
    groups: usize,
    checked: bool,
) -> impl Iterator<Item = (String, TargetGroup)> {
    (0..groups).map(move |g| {
        let targets = (0..TARGETS_PER_GROUP)
            .map(|i| {
                let n = g * TARGETS_PER_GROUP + i;
                let ip = std::net::Ipv4Addr::new(127, 88, (n / 250) as u8, (n % 250) as u8 + 1);
                Target { addr: SocketAddr::new(ip.into(), 9) }
            })
            .collect();
        let group = TargetGroup {
            health_check: HealthCheck { enabled: checked, ..HealthCheck::default() },
            deregistration_delay_ms: 0,
            algorithm: Default::default(),
            targets,
        };
        (format!("{prefix}{g}"), group)
    })
}
