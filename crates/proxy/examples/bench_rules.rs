//! What listener rules cost a request: `bench_rules --lb PATH` starts the data plane (`PATH` is
//! the `lb` example's binary, one worker thread) in front of a target that answers `200 ok`, and
//! measures requests through it with today's single default action and with 1, 10 and 100 rules
//! in front of it. Every rule has a host and a path condition with wildcards that the request
//! does not meet, so each request evaluates all of them and then takes the default action: the
//! worst case for its listener. Configurations are measured in turn, round after round (the
//! median round is shown), and printed as requests/s and the data plane's CPU time per request,
//! each with its ratio to the default action alone, and the time the data plane took to take
//! each table (a routing change).
//!
//! The last configuration is many load balancers' worth in one table: 100 rules each forwarding
//! to a target group of its own among 1,000 target groups of 10 targets (10,000 targets, health
//! checks off, so only the table's size is measured), compared with the 1-rule case. Then, with
//! no load, the same 10,000 targets health-checked at ALB's default 30 s interval: the data
//! plane's idle CPU.
//!
//! ```sh
//! cargo build -p proxy --release --examples
//! target/release/examples/bench_rules --lb target/release/examples/lb [--seconds 3] [--rounds 5] [--connections 8]
//! ```

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use routes::{
    Action, Condition, ConnectionLimits, ForwardAction, HealthCheck, Listener, RouteTable, Rule,
    Target, TargetGroup, WeightedTargetGroup,
};

#[path = "common/bench.rs"]
mod bench;
use bench::*;

/// (rules, target groups besides the one served): today's single default action, rules before
/// it, and many load balancers in one table.
const CONFIGS: [(usize, usize); 5] = [(0, 0), (1, 0), (10, 0), (100, 0), (100, 1000)];
struct Opts {
    lb: String,
    seconds: u64,
    rounds: usize,
    connections: usize,
}

#[derive(Clone, Copy)]
struct Sample {
    requests_per_s: f64,
    cpu_us_per_request: f64,
    /// How long the data plane took to take the table (PUT /v1/routes answered).
    put_ms: f64,
}

fn main() -> anyhow::Result<()> {
    let o = parse()?;
    let backend = start_backend()?;
    let (admin, listen) = (free_addr()?, free_addr()?);
    let mut child = Command::new(&o.lb)
        .args(["--admin", &admin.to_string(), "--threads", "1"])
        .spawn()
        .with_context(|| format!("starting {}", o.lb))?;
    let result = bench(&o, &child, admin, listen, backend);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn parse() -> anyhow::Result<Opts> {
    let mut o = Opts { lb: String::new(), seconds: 3, rounds: 5, connections: 8 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--lb" => o.lb = value()?,
            "--seconds" => o.seconds = value()?.parse().context("--seconds N")?,
            "--rounds" => o.rounds = value()?.parse().context("--rounds N")?,
            "--connections" => o.connections = value()?.parse().context("--connections N")?,
            other => bail!(
                "unknown argument {other}; use --lb PATH [--seconds N] [--rounds N] [--connections N]"
            ),
        }
    }
    if o.lb.is_empty() || o.seconds == 0 || o.rounds == 0 || o.connections == 0 {
        bail!(
            "--lb PATH (the lb example's binary) is required; --seconds, --rounds and --connections must be >= 1"
        );
    }
    Ok(o)
}

fn bench(
    o: &Opts,
    child: &Child,
    admin: SocketAddr,
    listen: SocketAddr,
    backend: SocketAddr,
) -> anyhow::Result<()> {
    let mut version = 0;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); CONFIGS.len()];
    for round in 1..=o.rounds {
        for (i, &(rules, groups)) in CONFIGS.iter().enumerate() {
            version += 1;
            let t = table(version, listen, backend, rules, groups, false);
            let put = Instant::now();
            put_table(admin, &t)?;
            let put_ms = put.elapsed().as_secs_f64() * 1000.0;
            let Throughput { requests_per_s, cpu_us_per_request } =
                load(o.connections, o.seconds, child.id(), listen)?;
            let sample = Sample { requests_per_s, cpu_us_per_request, put_ms };
            eprintln!(
                "round {round}: {rules:>3} rules, {groups:>4} more target groups: {:>8.0} req/s, \
                 {:.1} µs CPU per request, table taken in {put_ms:.1} ms",
                sample.requests_per_s, sample.cpu_us_per_request
            );
            samples[i].push(sample);
        }
    }
    let medians: Vec<Sample> =
        samples.into_iter().map(|runs| median(runs, |s| s.requests_per_s)).collect();
    let base = medians[0];
    println!(
        "\nlistener rules, {} connections, median of {} rounds of {} s (data plane: 1 worker thread)",
        o.connections, o.rounds, o.seconds
    );
    println!(
        "{:<44} {:>10} {:>7} {:>14} {:>7} {:>12}",
        "", "req/s", "ratio", "CPU µs/req", "ratio", "table ms"
    );
    for (&(rules, groups), m) in CONFIGS.iter().zip(&medians) {
        let what = match (rules, groups) {
            (0, _) => "default action only".to_string(),
            (_, 0) => format!("{rules} rules, none match"),
            _ => format!(
                "{rules} rules, {groups} target groups, {} targets",
                groups * TARGETS_PER_GROUP
            ),
        };
        println!(
            "{what:<44} {:>10.0} {:>7.2} {:>14.1} {:>7.2} {:>12.1}",
            m.requests_per_s,
            m.requests_per_s / base.requests_per_s,
            m.cpu_us_per_request,
            m.cpu_us_per_request / base.cpu_us_per_request,
            m.put_ms,
        );
    }
    let (one_rule, scale) = (medians[1], medians[CONFIGS.len() - 1]);
    println!(
        "\n1,000 target groups and 100 rules against 1 rule: {:.2}x the requests/s, {:.2}x the CPU per request",
        scale.requests_per_s / one_rule.requests_per_s,
        scale.cpu_us_per_request / one_rule.cpu_us_per_request
    );
    idle(o, child, admin, listen, backend, version + 1)
}

/// The data plane with no requests while it health-checks 10,000 targets every 30 s (ALB's
/// default interval): its CPU, as a share of one core.
fn idle(
    o: &Opts,
    child: &Child,
    admin: SocketAddr,
    listen: SocketAddr,
    backend: SocketAddr,
    version: u64,
) -> anyhow::Result<()> {
    let groups = CONFIGS[CONFIGS.len() - 1].1;
    put_table(admin, &table(version, listen, backend, 100, groups, true))?;
    // Every target gets its first check at once: the steady state comes after the first interval.
    let settle = Duration::from_secs(35);
    let window = Duration::from_secs(o.seconds * 10);
    eprintln!("idle: waiting {settle:?} for the first round of checks, then measuring {window:?}");
    std::thread::sleep(settle);
    let (cpu0, t0) = (cpu_ns(child.id())?, Instant::now());
    std::thread::sleep(window); // the measurement window itself
    let share = (cpu_ns(child.id())? - cpu0) as f64 / t0.elapsed().as_nanos() as f64;
    println!(
        "idle, {} targets health-checked every 30 s: {:.1}% of one core",
        groups * TARGETS_PER_GROUP,
        share * 100.0
    );
    Ok(())
}

/// A listener whose default action forwards to the target, behind `rules` rules that each look
/// at the host and the path, with wildcards, and take none of the benchmark's requests.
/// With `groups` more target groups of [`TARGETS_PER_GROUP`] targets each that no request
/// reaches (nothing listens there), each rule forwarding to one of its own; `checked`: those
/// targets are health-checked at ALB's defaults.
fn table(
    version: u64,
    listen: SocketAddr,
    backend: SocketAddr,
    rules: usize,
    groups: usize,
    checked: bool,
) -> RouteTable {
    let mut t = RouteTable { version, ..RouteTable::default() };
    t.target_groups.extend(static_target_groups("more", groups, checked));
    t.target_groups.insert(
        "g".into(),
        TargetGroup {
            health_check: HealthCheck { enabled: false, ..HealthCheck::default() },
            deregistration_delay_ms: 0,
            algorithm: Default::default(),
            targets: vec![Target { addr: backend }],
        },
    );
    let forward = Action::Forward(ForwardAction::weighted(vec![WeightedTargetGroup {
        name: "g".into(),
        weight: 1,
    }]));
    let rules = (1..=rules)
        .map(|i| Rule {
            action: match groups {
                0 => forward.clone(),
                _ => Action::Forward(ForwardAction::weighted(vec![WeightedTargetGroup {
                    name: format!("more{}", (i - 1) * groups / 100),
                    weight: 1,
                }])),
            },
            priority: i as u32,
            conditions: vec![
                Condition::HostHeader {
                    values: vec![format!("*.svc{i}.example.com"), format!("svc{i}.example.com")],
                },
                Condition::PathPattern { values: vec![format!("/api{i}/*")] },
            ],
        })
        .collect();
    t.listeners.insert(
        "web".into(),
        Listener {
            bind: listen,
            tls: None,
            idle_timeout_ms: None,
            limits: ConnectionLimits::default(),
            rules,
            action: forward,
        },
    );
    t
}
