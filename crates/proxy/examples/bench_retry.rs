//! What retry on blue costs a request that does not fail: `bench_retry --lb PATH --baseline
//! PATH` starts two data planes (`PATH`s are the `lb` example's binary built from this tree and
//! from the commit before retry on blue, one worker thread each) in front of a target that
//! answers `200 ok`, and measures requests through them: the baseline with a plain forward, this
//! tree with the same forward (retry off: the hot path must not pay for it), and this tree with a
//! canary forward that retries on blue (every GET is kept whole for a retry, none fails).
//! Configurations are measured in turn, round after round (the median round is shown), and
//! printed as requests/s and the data plane's CPU time per request, each with its ratio to the
//! baseline.
//!
//! ```sh
//! cargo build -p proxy --release --examples            # this tree's lb
//! # the baseline's: the same in a checkout of the commit before retry on blue
//! target/release/examples/bench_retry --lb target/release/examples/lb --baseline /tmp/lb-before [--seconds 3] [--rounds 5] [--connections 8]
//! ```

use std::net::SocketAddr;
use std::process::{Child, Command};

use anyhow::{Context, bail};
use routes::{
    Action, ConnectionLimits, ForwardAction, HealthCheck, Listener, Retry, RouteTable, Target,
    TargetGroup, WeightedTargetGroup,
};

#[path = "common/bench.rs"]
#[allow(dead_code)] // shared by the benchmarks: this one holds no static fleet
mod bench;
use bench::*;

struct Opts {
    lb: String,
    baseline: String,
    seconds: u64,
    rounds: usize,
    connections: usize,
}

type Sample = Throughput;

/// A data plane the benchmark started, and where it listens.
struct Lb {
    child: Child,
    admin: SocketAddr,
    listen: SocketAddr,
}

impl Drop for Lb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_lb(path: &str) -> anyhow::Result<Lb> {
    let (admin, listen) = (free_addr()?, free_addr()?);
    let child = Command::new(path)
        .args(["--admin", &admin.to_string(), "--threads", "1"])
        .spawn()
        .with_context(|| format!("starting {path}"))?;
    Ok(Lb { child, admin, listen })
}

const CONFIGS: [&str; 3] =
    ["baseline, plain forward", "this tree, retry off", "this tree, retry on blue"];

fn main() -> anyhow::Result<()> {
    let o = parse()?;
    let backend = start_backend()?;
    let (baseline, current) = (start_lb(&o.baseline)?, start_lb(&o.lb)?);
    put_table(baseline.admin, &table(1, baseline.listen, backend, false))?;
    let mut version = 1;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); CONFIGS.len()];
    for round in 1..=o.rounds {
        for (i, what) in CONFIGS.iter().enumerate() {
            let lb = if i == 0 { &baseline } else { &current };
            if i > 0 {
                version += 1;
                put_table(lb.admin, &table(version, lb.listen, backend, i == 2))?;
            }
            let sample = load(o.connections, o.seconds, lb.child.id(), lb.listen)?;
            eprintln!(
                "round {round}: {what:<26} {:>8.0} req/s, {:.1} µs CPU per request",
                sample.requests_per_s, sample.cpu_us_per_request
            );
            samples[i].push(sample);
        }
    }
    let medians: Vec<Sample> =
        samples.into_iter().map(|runs| median(runs, |s| s.requests_per_s)).collect();
    let base = medians[0];
    println!(
        "\nretry on blue, {} connections, median of {} rounds of {} s (data plane: 1 worker thread)",
        o.connections, o.rounds, o.seconds
    );
    println!("{:<26} {:>10} {:>7} {:>14} {:>7}", "", "req/s", "ratio", "CPU µs/req", "ratio");
    for (what, m) in CONFIGS.iter().zip(&medians) {
        println!(
            "{what:<26} {:>10.0} {:>7.2} {:>14.1} {:>7.2}",
            m.requests_per_s,
            m.requests_per_s / base.requests_per_s,
            m.cpu_us_per_request,
            m.cpu_us_per_request / base.cpu_us_per_request,
        );
    }
    Ok(())
}

fn parse() -> anyhow::Result<Opts> {
    let mut o =
        Opts { lb: String::new(), baseline: String::new(), seconds: 3, rounds: 5, connections: 8 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--lb" => o.lb = value()?,
            "--baseline" => o.baseline = value()?,
            "--seconds" => o.seconds = value()?.parse().context("--seconds N")?,
            "--rounds" => o.rounds = value()?.parse().context("--rounds N")?,
            "--connections" => o.connections = value()?.parse().context("--connections N")?,
            other => bail!(
                "unknown argument {other}; use --lb PATH --baseline PATH [--seconds N] [--rounds N] [--connections N]"
            ),
        }
    }
    if o.lb.is_empty()
        || o.baseline.is_empty()
        || o.seconds == 0
        || o.rounds == 0
        || o.connections == 0
    {
        bail!(
            "--lb PATH and --baseline PATH (the lb example's binaries) are required; --seconds, --rounds and --connections must be >= 1"
        );
    }
    Ok(o)
}

/// A listener forwarding to the target: a plain forward, or a canary's (`green` at weight 1,
/// `blue` at 0, both the same target) whose failures would be retried on blue — the baseline's
/// routes know no retry, so it only ever gets the plain one.
fn table(version: u64, listen: SocketAddr, backend: SocketAddr, retry: bool) -> RouteTable {
    let mut t = RouteTable { version, ..RouteTable::default() };
    let group = || TargetGroup {
        health_check: HealthCheck { enabled: false, ..HealthCheck::default() },
        deregistration_delay_ms: 0,
        algorithm: Default::default(),
        targets: vec![Target { addr: backend }],
    };
    t.target_groups.insert("green".into(), group());
    let mut weights = vec![WeightedTargetGroup { name: "green".into(), weight: 1 }];
    if retry {
        t.target_groups.insert("blue".into(), group());
        weights.push(WeightedTargetGroup { name: "blue".into(), weight: 0 });
    }
    let mut forward = ForwardAction::weighted(weights);
    forward.retry = retry.then(|| Retry::to("blue"));
    t.listeners.insert(
        "web".into(),
        Listener {
            bind: listen,
            tls: None,
            idle_timeout_ms: None,
            limits: ConnectionLimits::default(),
            rules: Vec::new(),
            action: Action::Forward(forward),
        },
    );
    t
}
