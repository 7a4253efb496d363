//! `cargo xtask bench-scale`: the control plane and the data plane with many load balancers.
//!
//! Starts a real `cutover up` twice, each time with a fresh data directory, on a cutover.yaml of
//! load balancers of one listener each, whose rules forward (by host) to pairs of target groups of
//! 10 static targets each, health-checked at ALB's defaults (30 s; nothing listens there, so they
//! turn unhealthy, as checks of a real fleet run): first the anchor, one load balancer of 10 target
//! groups and 100 targets, then 10 load balancers of 100 target groups each, 1,000 target groups
//! and 10,000 targets, each load balancer at ALB's quota. For each it measures the first `apply`,
//! an `apply` that changes nothing, a routing change (one rule's action, from `apply` until the
//! listener answers with the new action), and the CPU of the control plane and of the data plane
//! while idle (once every target has had the checks that decide its first state), and prints each
//! with its ratio to the anchor. With `--runs N` both sizes are measured N times, interleaved, and
//! each figure is the median: the machine is shared, one run can be unlucky.
//!
//! ```sh
//! cargo xtask bench-scale [--runs 3] [--idle-seconds 20] [--debug]   # --debug: the dev build;
//!                                                          # --idle-seconds 0: no idle CPU
//! cargo xtask bench-scale --cutover /tmp/cutover-before    # a binary built elsewhere, e.g. the
//!                                                          # commit before a change
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{free_addr, workspace};

/// Target groups per load balancer, targets per target group.
const TARGETS_PER_GROUP: usize = 10;

struct Scale {
    load_balancers: usize,
    groups_per_lb: usize,
}

struct Figures {
    first_apply: Duration,
    unchanged_apply: Duration,
    routing_change: Duration,
    control_cpu: f64,
    data_cpu: f64,
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let (mut idle_seconds, mut runs, mut profile) = (20u64, 1usize, "release");
    let mut given: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--idle-seconds" => idle_seconds = it.next().context("--idle-seconds N")?.parse()?,
            "--runs" => runs = it.next().context("--runs N")?.parse::<usize>()?.max(1),
            "--debug" => profile = "debug",
            "--cutover" => given = Some(it.next().context("--cutover PATH")?.into()),
            other => bail!(
                "unknown option {other}; usage: cargo xtask bench-scale [--runs N] [--idle-seconds N] [--debug | --cutover PATH]"
            ),
        }
    }
    let cutover = match given {
        // Another build, e.g. an older commit's, to compare with.
        Some(path) => {
            profile = "given";
            path
        }
        None => build(profile)?,
    };
    let idle = Duration::from_secs(idle_seconds);
    let (mut anchors, mut larges) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        eprintln!("run {run} of {runs}");
        anchors.push(measure(&cutover, &Scale { load_balancers: 1, groups_per_lb: 10 }, idle)?);
        larges.push(measure(&cutover, &Scale { load_balancers: 10, groups_per_lb: 100 }, idle)?);
    }
    let (anchor, large) = (Figures::median(&anchors), Figures::median(&larges));

    println!(
        "\ncutover bench-scale ({profile} build; median of {runs} run(s); idle CPU over {idle_seconds} s, \
         as a share of one core)"
    );
    println!(
        "{:<34} {:>22} {:>26} {:>7}",
        "", "1 LB, 10 TGs, 100 targets", "10 LBs, 1,000 TGs, 10,000 targets", "ratio"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let rows = [
        ("apply, creating everything (ms)", ms(anchor.first_apply), ms(large.first_apply)),
        ("apply, nothing changed (ms)", ms(anchor.unchanged_apply), ms(large.unchanged_apply)),
        (
            "routing change, apply to served (ms)",
            ms(anchor.routing_change),
            ms(large.routing_change),
        ),
        ("control plane idle CPU (%)", anchor.control_cpu * 100.0, large.control_cpu * 100.0),
        ("data plane idle CPU (%)", anchor.data_cpu * 100.0, large.data_cpu * 100.0),
    ];
    for (what, a, l) in rows {
        println!("{what:<34} {a:>22.1} {l:>26.1} {:>7.2}", l / a.max(f64::EPSILON));
    }
    Ok(())
}

impl Figures {
    /// Each figure's median over `runs` (the upper one of an even count).
    fn median(runs: &[Figures]) -> Figures {
        fn mid<T: PartialOrd + Copy>(runs: &[Figures], f: impl Fn(&Figures) -> T) -> T {
            let mut v: Vec<T> = runs.iter().map(f).collect();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            v[v.len() / 2]
        }
        Figures {
            first_apply: mid(runs, |f| f.first_apply),
            unchanged_apply: mid(runs, |f| f.unchanged_apply),
            routing_change: mid(runs, |f| f.routing_change),
            control_cpu: mid(runs, |f| f.control_cpu),
            data_cpu: mid(runs, |f| f.data_cpu),
        }
    }
}

/// Builds the `cutover` binary of this workspace with `profile`; where it is.
pub(crate) fn build(profile: &str) -> anyhow::Result<PathBuf> {
    let (root, target) = workspace();
    eprintln!("building cutover ({profile})…");
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build.args(["build", "--quiet", "-p", "cutover"]).current_dir(&root);
    if profile == "release" {
        build.arg("--release");
    }
    if !build.status()?.success() {
        bail!("cargo build failed");
    }
    Ok(target.join(profile).join("cutover"))
}

fn measure(cutover: &Path, scale: &Scale, idle: Duration) -> anyhow::Result<Figures> {
    let tmp = std::env::temp_dir().join(format!(
        "cutover-bench-scale-{}-{}",
        std::process::id(),
        scale.load_balancers
    ));
    std::fs::create_dir_all(&tmp)?;
    let data = tmp.join("data");
    let ports: Vec<SocketAddr> = (0..scale.load_balancers).map(|_| free_addr()).collect();
    let api = free_addr();
    let log = std::fs::File::create(tmp.join("up.log"))?;
    let up = Command::new(cutover)
        .args([
            "up",
            "--listen",
            &api.to_string(),
            "--lb-admin",
            "127.0.0.1:0",
            "--lb-threads",
            "1",
        ])
        .env("CUTOVER_DATA_DIR", &data)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let mut up = Guard { child: up, cutover: cutover.to_path_buf(), data: data.clone() };
    let cli = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(cutover)
            .args(args)
            .env("CUTOVER_DATA_DIR", &data)
            .env("CUTOVER_API", format!("http://{api}"))
            .current_dir(&tmp)
            .output()?;
        if !out.status.success() {
            bail!("cutover {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    };
    wait("cutover up", Duration::from_secs(30), || cli(&["status"]).is_ok())?;
    eprintln!(
        "{} load balancer(s), {} target groups, {} targets",
        scale.load_balancers,
        scale.load_balancers * scale.groups_per_lb,
        scale.load_balancers * scale.groups_per_lb * TARGETS_PER_GROUP
    );

    std::fs::write(tmp.join("cutover.yaml"), cutover_yaml(scale, &ports, "before"))?;
    let first_apply = timed(|| cli(&["apply", "-f", "cutover.yaml"]))?;
    wait("the first listener to answer", Duration::from_secs(60), || {
        answer(ports[0]).is_some_and(|body| body == "before")
    })?;
    let unchanged_apply = timed(|| cli(&["apply", "-f", "cutover.yaml"]))?;
    std::fs::write(tmp.join("cutover.yaml"), cutover_yaml(scale, &ports, "after"))?;
    let start = Instant::now();
    cli(&["apply", "-f", "cutover.yaml"])?;
    wait("the routing change to be served", Duration::from_secs(60), || {
        answer(ports[0]).is_some_and(|body| body == "after")
    })?;
    let routing_change = start.elapsed();

    if idle.is_zero() {
        // Only apply and the routing change: no wait for the targets' first states.
        up.stop();
        let _ = std::fs::remove_dir_all(&tmp);
        let (control_cpu, data_cpu) = (f64::NAN, f64::NAN);
        return Ok(Figures { first_apply, unchanged_apply, routing_change, control_cpu, data_cpu });
    }
    let lb = lb_record(&data)?;
    // Idle is once every target has its first state: the checks of a new target decide it only
    // after its threshold of them, an interval apart.
    let mut unsettled = usize::MAX;
    wait_or("every target's first health state", Duration::from_secs(180), || {
        unsettled = targets_initial(lb.admin).unwrap_or(usize::MAX);
        (unsettled == 0).then_some(()).ok_or_else(|| format!("{unsettled} still initial"))
    })?;
    let data_plane = lb.pid;
    let (control0, data0, t0) = (cpu_ns(up.child.id())?, cpu_ns(data_plane)?, Instant::now());
    std::thread::sleep(idle); // the measurement window itself
    let elapsed = t0.elapsed().as_nanos() as f64;
    let control_cpu = (cpu_ns(up.child.id())? - control0) as f64 / elapsed;
    let data_cpu = (cpu_ns(data_plane)? - data0) as f64 / elapsed;
    up.stop();
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(Figures { first_apply, unchanged_apply, routing_change, control_cpu, data_cpu })
}

/// The large size's file (10 load balancers, 1,000 target groups, 10,000 targets), on ports no
/// one listens on: for `bench-parse`, which reads it without applying it.
pub(crate) fn large_cutover_yaml() -> String {
    let ports: Vec<SocketAddr> =
        (0..10).map(|lb| SocketAddr::from(([127, 0, 0, 1], 20_000 + lb))).collect();
    cutover_yaml(&Scale { load_balancers: 10, groups_per_lb: 100 }, &ports, "before")
}

/// Each load balancer: one listener whose rules (one per pair of target groups, by host) forward
/// to the pair, and whose first rule answers `first_body` itself, for the routing change.
fn cutover_yaml(scale: &Scale, ports: &[SocketAddr], first_body: &str) -> String {
    let mut yaml = String::from("load_balancers:\n");
    let mut groups = String::from("target_groups:\n");
    for (lb, port) in ports.iter().enumerate() {
        yaml += &format!(
            "  - name: lb{lb}\n    listeners:\n      - name: http\n        port: {}\n        \
             default_action: {{ fixed_response: {{ status_code: 404 }} }}\n        rules:\n          \
             - {{ priority: 1, conditions: [{{ path_pattern: ['/'] }}], action: {{ fixed_response: \
             {{ status_code: 200, body: {first_body} }} }} }}\n",
            port.port()
        );
        for pair in 0..scale.groups_per_lb / 2 {
            let (blue, green) = (format!("lb{lb}-{pair}-b"), format!("lb{lb}-{pair}-g"));
            yaml += &format!(
                "          - {{ priority: {}, conditions: [{{ host_header: [svc{pair}.example.com] }}], \
                 action: {{ forward: [{{ target_group: {blue}, weight: 1 }}, {{ target_group: {green}, weight: 0 }}] }} }}\n",
                pair + 2
            );
            for (k, name) in [blue, green].iter().enumerate() {
                let n = (lb * scale.groups_per_lb + pair * 2 + k) * TARGETS_PER_GROUP;
                let targets: Vec<String> = (n..n + TARGETS_PER_GROUP)
                    .map(|t| format!("127.89.{}.{}:9", t / 250, t % 250 + 1))
                    .collect();
                groups += &format!("  - {{ name: {name}, targets: [{}] }}\n", targets.join(", "));
            }
        }
    }
    yaml + &groups
}

/// The body of `GET /` on `addr`, when it answers 200.
fn answer(addr: SocketAddr) -> Option<String> {
    get(addr, "/")
}

/// The body of `GET path` on `addr`, when it answers 200.
fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

fn timed(f: impl FnOnce() -> anyhow::Result<String>) -> anyhow::Result<Duration> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed())
}

struct LbRecord {
    pid: u32,
    admin: SocketAddr,
}

/// The data plane's process and admin address, from the record `cutover up` keeps of them.
fn lb_record(data: &Path) -> anyhow::Result<LbRecord> {
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("lb/lb.json"))?)?;
    Ok(LbRecord {
        pid: record["pid"].as_u64().map(|p| p as u32).context("lb.json has no pid")?,
        admin: record["admin_addr"].as_str().context("lb.json has no admin_addr")?.parse()?,
    })
}

/// How many targets the data plane still reports in their initial state.
fn targets_initial(admin: SocketAddr) -> anyhow::Result<usize> {
    let body = get(admin, "/v1/health").context("GET /v1/health")?;
    let report: routes::HealthReport = serde_json::from_str(&body)?;
    Ok(report
        .target_groups
        .values()
        .flatten()
        .filter(|t| t.state == routes::TargetState::Initial)
        .count())
}

/// User and system CPU time of process `pid`, in nanoseconds (USER_HZ is 100 on Linux).
fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> =
        stat.rsplit_once(')').context("/proc/PID/stat")?.1.split_whitespace().collect();
    Ok((fields[11].parse::<u64>()? + fields[12].parse::<u64>()?) * 10_000_000)
}

pub(crate) struct Guard {
    pub(crate) child: Child,
    pub(crate) cutover: PathBuf,
    pub(crate) data: PathBuf,
}

impl Guard {
    fn stop(&mut self) {
        // The address this `cutover up` recorded in its data directory, never a CUTOVER_API
        // the shell that ran the benchmark may still export.
        let _ = Command::new(&self.cutover)
            .arg("down")
            .env("CUTOVER_DATA_DIR", &self.data)
            .env_remove("CUTOVER_API")
            .stdout(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

pub(crate) fn wait(
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    wait_or(what, timeout, || ok().then_some(()).ok_or_else(String::new))
}

/// Polls `ok` until it holds; on timeout, says what it last saw.
fn wait_or(
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> Result<(), String>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match ok() {
            Ok(()) => return Ok(()),
            Err(seen) if Instant::now() > deadline => {
                bail!("timed out after {timeout:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
