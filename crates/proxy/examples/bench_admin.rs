//! What the control plane's polls cost the data plane at 1,000 target groups of 10 targets
//! (10,000 targets, health-checked at ALB's default 30 s against loopback addresses nothing
//! listens on): `bench_admin --lb PATH` starts the data plane (`PATH` is the `lb` example's
//! binary, one worker thread), and times, round after round (the median round is shown),
//!
//! - `GET /v1/health` answered whole: the anchor,
//! - `GET /v1/health` with `If-None-Match` of the tag last seen, as the control plane polls it
//!   5 times a second (a round counts how many were answered 304),
//! - `GET /v1/metrics?per_target=false`, as the control plane samples it 4 times a second,
//!
//! each as wall time and as the data plane's CPU time per request, and the ratio to the anchor.
//!
//! ```sh
//! cargo build -p proxy --release --examples
//! target/release/examples/bench_admin --lb target/release/examples/lb [--rounds 5]
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use routes::RouteTable;

#[path = "common/bench.rs"]
#[allow(dead_code)] // shared by the benchmarks: this one drives the admin API only
mod bench;
use bench::*;

const GROUPS: usize = 1_000;

/// (what, path, conditional, requests per round)
const POLLS: [(&str, &str, bool, usize); 3] = [
    ("GET /v1/health, whole (anchor)", "/v1/health", false, 20),
    ("GET /v1/health, If-None-Match", "/v1/health", true, 500),
    ("GET /v1/metrics?per_target=false", "/v1/metrics?per_target=false", false, 100),
];

#[derive(Clone, Copy)]
struct Sample {
    wall_us: f64,
    cpu_us: f64,
    not_modified: usize,
}

fn main() -> anyhow::Result<()> {
    let (lb, rounds) = parse()?;
    let admin = free_addr()?;
    let mut child = Command::new(&lb)
        .args(["--admin", &admin.to_string(), "--threads", "1"])
        .spawn()
        .with_context(|| format!("starting {lb}"))?;
    let result = bench(&child, admin, rounds);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn parse() -> anyhow::Result<(String, usize)> {
    let (mut lb, mut rounds) = (String::new(), 5);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--lb" => lb = value()?,
            "--rounds" => rounds = value()?.parse().context("--rounds N")?,
            other => bail!("unknown argument {other}; use --lb PATH [--rounds N]"),
        }
    }
    if lb.is_empty() || rounds == 0 {
        bail!("usage: bench_admin --lb PATH [--rounds N]");
    }
    Ok((lb, rounds))
}

fn bench(child: &Child, admin: SocketAddr, rounds: usize) -> anyhow::Result<()> {
    put_table(admin, &table())?;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); POLLS.len()];
    for _ in 0..rounds {
        for (i, &(_, path, conditional, requests)) in POLLS.iter().enumerate() {
            samples[i].push(round(child, admin, path, conditional, requests)?);
        }
    }
    println!(
        "{GROUPS} target groups, {} targets, median of {rounds} rounds",
        GROUPS * TARGETS_PER_GROUP
    );
    println!(
        "{:<36} {:>12} {:>8} {:>12} {:>8} {:>10}",
        "", "wall us/req", "ratio", "cpu us/req", "ratio", "304s"
    );
    let medians: Vec<Sample> =
        samples.into_iter().map(|runs| median(runs, |s: &Sample| -s.wall_us)).collect();
    let anchor = medians[0];
    for ((what, _, conditional, requests), s) in POLLS.iter().zip(&medians) {
        let not_modified =
            if *conditional { format!("{}/{requests}", s.not_modified) } else { "-".into() };
        println!(
            "{what:<36} {:>12.1} {:>8.3} {:>12.1} {:>8.3} {not_modified:>10}",
            s.wall_us,
            s.wall_us / anchor.wall_us,
            s.cpu_us,
            s.cpu_us / anchor.cpu_us,
        );
    }
    Ok(())
}

/// `requests` polls of `path` on one keep-alive connection; conditional ones send the tag the
/// round's first (whole) answer carried.
fn round(
    child: &Child,
    admin: SocketAddr,
    path: &str,
    conditional: bool,
    requests: usize,
) -> anyhow::Result<Sample> {
    let mut s = TcpStream::connect(admin)?;
    s.set_nodelay(true)?;
    let tag = if conditional { get(&mut s, path, None)?.1 } else { None };
    let (cpu0, t0) = (cpu_ns(child.id())?, Instant::now());
    let mut not_modified = 0;
    for _ in 0..requests {
        let (status, _) = get(&mut s, path, tag.as_deref())?;
        not_modified += usize::from(status == 304);
    }
    let wall = t0.elapsed();
    let cpu = Duration::from_nanos(cpu_ns(child.id())? - cpu0);
    Ok(Sample {
        wall_us: wall.as_secs_f64() * 1e6 / requests as f64,
        cpu_us: cpu.as_secs_f64() * 1e6 / requests as f64,
        not_modified,
    })
}

/// One GET on a keep-alive connection: the status and the ETag; the body is read and dropped.
fn get(s: &mut TcpStream, path: &str, seen: Option<&str>) -> anyhow::Result<(u16, Option<String>)> {
    let condition = seen.map(|tag| format!("If-None-Match: {tag}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: admin\r\n{condition}\r\n")?;
    let mut got = Vec::with_capacity(64 * 1024);
    let mut buf = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("closed before the head");
        }
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let status: u16 = head.get(9..12).and_then(|c| c.parse().ok()).context("status")?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (field, value) = l.split_once(':')?;
            field.eq_ignore_ascii_case(name).then(|| value.trim().to_string())
        })
    };
    let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = got.len() - head_end;
    while body < length {
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("closed in the body");
        }
        body += n;
    }
    if status != 200 && status != 304 {
        bail!("GET {path}: {status}");
    }
    Ok((status, header("etag")))
}

fn table() -> RouteTable {
    let mut t = RouteTable { version: 1, ..RouteTable::default() };
    t.target_groups.extend(static_target_groups("group", GROUPS, true));
    t
}
