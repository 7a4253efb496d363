//! `cargo xtask bench-lb`: throughput and latency of cutover's load balancer next to the backend
//! alone, nginx and HAProxy (same worker-thread count, keep-alive to the backend, logging off),
//! measured with wrk in one run; a blue/green weight sweep under full load (cutover's admin API vs
//! `nginx -s reload`); and cutover's resident memory idle and with 10,000 client connections.
//!
//! It installs nothing: it checks for wrk, nginx and haproxy and says how to install them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use routes::*;

use crate::{free_addr, workspace};

struct Opts {
    duration: u64,
    connections: u32,
    threads: Vec<usize>,
    /// `auto`: `cutover lb` if it builds and has the subcommand, else the proxy example.
    lb: String,
    /// Parts to run: throughput, shift, memory (all by default).
    only: Vec<String>,
    /// Throughput rounds; each round measures every server once, in turn, and the table shows
    /// the median round, so a burst of background load cannot favour one server. Five, because on
    /// a shared 2-core machine the p99 ratio to nginx from three rounds moved by up to a quarter
    /// between runs.
    rounds: usize,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        duration: 10,
        connections: 64,
        threads: vec![1, 2],
        lb: "auto".into(),
        only: Vec::new(),
        rounds: 5,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--duration" => {
                o.duration = value()?.trim_end_matches('s').parse().context("--duration SECS")?
            }
            "--connections" => o.connections = value()?.parse().context("--connections N")?,
            "--threads" => {
                o.threads = value()?
                    .split(',')
                    .map(|t| t.parse().context("--threads 1,2"))
                    .collect::<Result<_, _>>()?
            }
            "--lb" => o.lb = value()?.clone(),
            "--rounds" => o.rounds = value()?.parse().context("--rounds N")?,
            "--only" => o.only = value()?.split(',').map(str::to_string).collect(),
            other => bail!(
                "unknown option {other}; use --duration SECS, --connections N, --threads 1,2, --rounds N, --lb auto|cutover|example, --only throughput,shift,memory"
            ),
        }
    }
    if let Some(part) =
        o.only.iter().find(|p| !["throughput", "shift", "memory"].contains(&p.as_str()))
    {
        bail!("--only takes throughput, shift and/or memory, not {part}");
    }
    if !["auto", "cutover", "example"].contains(&o.lb.as_str()) {
        bail!("--lb must be auto, cutover or example");
    }
    if o.duration < 2 || o.connections == 0 || o.threads.is_empty() || o.rounds == 0 {
        bail!("--duration must be >= 2, --connections >= 1, --rounds >= 1, --threads non-empty");
    }
    Ok(o)
}

/// A child process killed when dropped, so a failed run leaves nothing behind.
struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command) -> anyhow::Result<Proc> {
        let child = cmd.spawn().with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        Ok(Proc { child, name: name.into() })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status})", self.name);
        }
        Ok(())
    }
}

impl Opts {
    fn runs(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
}

impl Drop for Proc {
    /// SIGTERM first: nginx's master only stops its workers when asked politely; SIGKILL would
    /// orphan them with the listening socket.
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn wait_port(addr: SocketAddr, what: &str, proc: &mut Proc) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        proc.check_alive()?;
        if Instant::now() > deadline {
            bail!("{what} did not listen on {addr} within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).context("no HTTP status")?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

#[derive(Default, Clone)]
struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
    /// CPU time the server's processes used per request (user + system), in microseconds.
    cpu_us_per_request: f64,
}

fn ms(text: &str) -> f64 {
    let t = text.trim();
    let (num, factor) = if let Some(v) = t.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = t.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = t.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (t, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * factor
}

fn parse_wrk(out: &str) -> anyhow::Result<Wrk> {
    let mut w = Wrk::default();
    for line in out.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("50%") {
            w.p50_ms = ms(v);
        } else if let Some(v) = l.strip_prefix("99%") {
            w.p99_ms = ms(v);
        } else if l.contains(" requests in ") {
            w.requests = l.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("Socket errors:") {
            w.socket_errors =
                v.split(',').filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok()).sum();
        }
    }
    if w.requests == 0 {
        bail!("wrk printed no result:\n{out}");
    }
    Ok(w)
}

fn wrk_cmd(wrk: &Path, addr: SocketAddr, o: &Opts, seconds: u64) -> Command {
    let mut c = Command::new(wrk);
    let threads = o.connections.min(2);
    c.args([
        format!("-t{threads}"),
        format!("-c{}", o.connections),
        format!("-d{seconds}s"),
        "--latency".into(),
        format!("http://{addr}/"),
    ]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn run_wrk(wrk: &Path, addr: SocketAddr, o: &Opts) -> anyhow::Result<Wrk> {
    run_wrk_measuring(wrk, addr, o, None)
}

/// One wrk run, after a one-second warm-up; with `server`, also the CPU time that process and
/// its children (nginx's workers) used per request.
fn run_wrk_measuring(
    wrk: &Path,
    addr: SocketAddr,
    o: &Opts,
    server: Option<u32>,
) -> anyhow::Result<Wrk> {
    let _ = wrk_cmd(wrk, addr, o, 1).output()?;
    let cpu_before = server.map(cpu_ns).transpose()?;
    let out = wrk_cmd(wrk, addr, o, o.duration).output().context("running wrk")?;
    let mut w = parse_wrk(&String::from_utf8_lossy(&out.stdout))?;
    if let (Some(pid), Some(before)) = (server, cpu_before) {
        let ns = cpu_ns(pid)?.saturating_sub(before);
        w.cpu_us_per_request = ns as f64 / 1e3 / w.requests as f64;
    }
    Ok(w)
}

/// Nanoseconds on a CPU of a process's threads and of its live child processes (nginx's workers),
/// from the scheduler's own accounting (`/proc/PID/task/TID/schedstat`).
fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("reading /proc/{pid}/task"))?
    {
        let task = task?.path();
        // A thread may end between listing and reading; it then counts for nothing.
        let schedstat = std::fs::read_to_string(task.join("schedstat")).unwrap_or_default();
        total +=
            schedstat.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        let children = std::fs::read_to_string(task.join("children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            total += cpu_ns(child).unwrap_or(0);
        }
    }
    Ok(total)
}

fn median(mut runs: Vec<Wrk>) -> Wrk {
    runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    let mid = runs.len() / 2;
    let mut m = runs[mid].clone();
    // Latency and CPU medians are taken separately: the run with the median throughput need not
    // have the median p99.
    let pick = |f: fn(&Wrk) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[mid]
    };
    m.p50_ms = pick(|w| w.p50_ms);
    m.p99_ms = pick(|w| w.p99_ms);
    m.cpu_us_per_request = pick(|w| w.cpu_us_per_request);
    m
}

struct Lb {
    bin: PathBuf,
    prefix: Vec<String>,
}

/// `target/release/cutover lb` when the binary has it, else the proxy crate's example.
fn build_lb(root: &Path, target: &Path, which: &str) -> anyhow::Result<Lb> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let cutover = target.join("release/cutover");
    if which != "example"
        && {
            eprintln!("building cutover (release)…");
            Command::new(&cargo)
                .args(["build", "--release", "-p", "cutover"])
                .current_dir(root)
                .status()?
                .success()
        }
        && Command::new(&cutover)
            .args(["lb", "--help"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    {
        return Ok(Lb { bin: cutover, prefix: vec!["lb".into()] });
    }
    if which == "cutover" {
        bail!(
            "`cutover lb` is not available (cargo build --release -p cutover, then `cutover lb --help`)"
        );
    }
    eprintln!("`cutover lb` is not there yet; using the proxy crate's `lb` example");
    let status = Command::new(&cargo)
        .args(["build", "--release", "-p", "proxy", "--example", "lb"])
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("cargo build --release -p proxy --example lb failed");
    }
    Ok(Lb { bin: target.join("release/examples/lb"), prefix: Vec::new() })
}

fn health_check() -> HealthCheck {
    HealthCheck {
        enabled: true,
        path: "/".into(),
        port: None,
        interval_ms: 2_000,
        timeout_ms: 1_000,
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        matcher: vec![(200, 299)],
    }
}

fn lb_table(
    version: u64,
    listen: SocketAddr,
    blue: SocketAddr,
    green: Option<SocketAddr>,
    green_pct: u16,
) -> RouteTable {
    let mut t = RouteTable { version, ..RouteTable::default() };
    let group = |addr| TargetGroup {
        health_check: health_check(),
        deregistration_delay_ms: 30_000,
        algorithm: Algorithm::RoundRobin,
        targets: vec![Target { addr }],
    };
    t.target_groups.insert("blue".into(), group(blue));
    let mut weights = vec![WeightedTargetGroup { name: "blue".into(), weight: 100 - green_pct }];
    if let Some(g) = green {
        t.target_groups.insert("green".into(), group(g));
        weights.push(WeightedTargetGroup { name: "green".into(), weight: green_pct });
    }
    t.listeners.insert(
        "bench".into(),
        Listener {
            bind: listen,
            tls: None,
            idle_timeout_ms: None,
            // One client address opens every connection, and the memory measurement holds
            // them silent for a while: the defaults would refuse and close most of them.
            limits: routes::ConnectionLimits {
                max_per_client: Some(1_000_000),
                header_timeout_ms: Some(59_000),
            },
            action: Action::Forward(ForwardAction::weighted(weights)),
            rules: Vec::new(),
        },
    );
    t
}

struct Cutover {
    proc: Proc,
    admin: SocketAddr,
}

fn start_cutover(
    lb: &Lb,
    threads: usize,
    tmp: &Path,
    table: &RouteTable,
) -> anyhow::Result<Cutover> {
    let admin = free_addr();
    let log = std::fs::File::create(tmp.join(format!("cutover-{threads}.log")))?;
    let mut proc = Proc::spawn(
        "cutover lb",
        Command::new(&lb.bin)
            .args(&lb.prefix)
            .args(["--admin", &admin.to_string(), "--threads", &threads.to_string()])
            .stdout(Stdio::null())
            .stderr(log),
    )?;
    wait_port(admin, "cutover's admin API", &mut proc)?;
    put_table(admin, table)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = http(admin, "GET", "/v1/health", "")?;
        let report: HealthReport = serde_json::from_str(&body).context("/v1/health")?;
        if report.target_groups.values().flatten().all(|t| t.state == TargetState::Healthy) {
            break;
        }
        if Instant::now() > deadline {
            bail!("targets not healthy within 20 s: {body}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Cutover { proc, admin })
}

fn put_table(admin: SocketAddr, table: &RouteTable) -> anyhow::Result<()> {
    let (status, body) = http(admin, "PUT", "/v1/routes", &serde_json::to_string(table)?)?;
    if status != 200 {
        bail!("PUT /v1/routes answered {status}: {body}");
    }
    Ok(())
}

fn nginx_conf(
    tmp: &Path,
    threads: usize,
    listen: SocketAddr,
    upstreams: &[(SocketAddr, u32)],
) -> String {
    let servers: String =
        upstreams.iter().map(|(a, w)| format!("    server {a} weight={w};\n")).collect();
    let t = tmp.display();
    format!(
        "worker_processes {threads};\npid {t}/nginx.pid;\nerror_log {t}/nginx-error.log error;\n\
worker_rlimit_nofile 20000;\nevents {{ worker_connections 16384; }}\n\
http {{\n  access_log off;\n  keepalive_requests 1000000;\n  client_body_temp_path {t}/nginx-body;\n  proxy_temp_path {t}/nginx-proxy;\n  fastcgi_temp_path {t}/nginx-fcgi;\n  uwsgi_temp_path {t}/nginx-uwsgi;\n  scgi_temp_path {t}/nginx-scgi;\n\
  upstream backend {{\n{servers}    keepalive 256;\n    keepalive_requests 1000000;\n  }}\n\
  server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://backend;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
    )
}

fn nginx_args(tmp: &Path) -> Vec<String> {
    let conf = tmp.join("nginx.conf");
    vec![
        "-p".into(),
        tmp.display().to_string(),
        "-c".into(),
        conf.display().to_string(),
        "-e".into(),
        tmp.join("nginx-error.log").display().to_string(),
    ]
}

fn start_nginx(
    nginx: &Path,
    tmp: &Path,
    threads: usize,
    listen: SocketAddr,
    upstreams: &[(SocketAddr, u32)],
) -> anyhow::Result<Proc> {
    std::fs::write(tmp.join("nginx.conf"), nginx_conf(tmp, threads, listen, upstreams))?;
    let mut p = Proc::spawn(
        "nginx",
        Command::new(nginx)
            .args(nginx_args(tmp))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    wait_port(listen, "nginx", &mut p)?;
    Ok(p)
}

fn start_haproxy(
    haproxy: &Path,
    tmp: &Path,
    threads: usize,
    listen: SocketAddr,
    backend: SocketAddr,
) -> anyhow::Result<Proc> {
    let cfg = format!(
        "global\n  nbthread {threads}\n  maxconn 8000\n\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\n  http-reuse always\n\n\
frontend fe\n  bind {listen}\n  default_backend be\n\nbackend be\n  server s1 {backend}\n"
    );
    let path = tmp.join("haproxy.cfg");
    std::fs::write(&path, cfg)?;
    let mut p = Proc::spawn(
        "haproxy",
        Command::new(haproxy)
            .args(["-f", &path.display().to_string(), "-db"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.join("haproxy.log"))?),
    )?;
    wait_port(listen, "haproxy", &mut p)?;
    Ok(p)
}

fn start_backend(tmp: &Path, name: &str) -> anyhow::Result<(Proc, SocketAddr)> {
    let addr = free_addr();
    let exe = std::env::current_exe()?;
    let log = std::fs::File::create(tmp.join(format!("backend-{name}.log")))?;
    let mut p = Proc::spawn(
        "backend",
        Command::new(exe)
            .args(["backend", "--addr", &addr.to_string(), "--threads", "1", "--name", name])
            .stderr(log),
    )?;
    wait_port(addr, "the backend", &mut p)?;
    Ok((p, addr))
}

fn hits(addr: SocketAddr) -> anyhow::Result<u64> {
    Ok(http(addr, "GET", "/__hits", "")?.1.trim().parse()?)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// What the 0→10→50→100→0 % sweep did.
struct Sweep {
    wrk: Wrk,
    green_hits: u64,
}

const SWEEP: [u16; 5] = [0, 10, 50, 100, 0];

fn sweep(
    wrk: &Path,
    listen: SocketAddr,
    o: &Opts,
    green: SocketAddr,
    mut set: impl FnMut(usize, u16) -> anyhow::Result<()>,
) -> anyhow::Result<Sweep> {
    let before = hits(green)?;
    let child = wrk_cmd(wrk, listen, o, o.duration).spawn()?;
    let step = Duration::from_millis(o.duration * 1000 / SWEEP.len() as u64);
    let start = Instant::now();
    for (i, pct) in SWEEP.iter().enumerate().skip(1) {
        let at = step * i as u32;
        if let Some(wait) = at.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        set(i, *pct)?;
    }
    let out = child.wait_with_output()?;
    let wrk = parse_wrk(&String::from_utf8_lossy(&out.stdout))?;
    Ok(Sweep { wrk, green_hits: hits(green)? - before })
}

fn fmt_ms(v: f64) -> String {
    if v < 1.0 { format!("{:.0}us", v * 1000.0) } else { format!("{v:.2}ms") }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    let tools: Vec<(&str, Option<PathBuf>)> =
        ["wrk", "nginx", "haproxy"].iter().map(|t| (*t, find_tool(t))).collect();
    let missing: Vec<&str> = tools.iter().filter(|(_, p)| p.is_none()).map(|(t, _)| *t).collect();
    if !missing.is_empty() {
        bail!(
            "missing {}; install them with: apt-get install -y wrk nginx haproxy",
            missing.join(", ")
        );
    }
    let [wrk, nginx, haproxy] = [0, 1, 2].map(|i| tools[i].1.clone().unwrap_or_default());
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: cannot raise the open-file limit: {e}");
    }
    let (root, target) = workspace();
    let lb = build_lb(&root, &target, &o.lb)?;
    let tmp = std::env::temp_dir().join(format!("cutover-bench-lb-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = bench(&o, &lb, &tmp, &wrk, &nginx, &haproxy);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn bench(
    o: &Opts,
    lb: &Lb,
    tmp: &Path,
    wrk: &Path,
    nginx: &Path,
    haproxy: &Path,
) -> anyhow::Result<()> {
    let (_blue_proc, blue) = start_backend(tmp, "blue")?;
    let (_green_proc, green) = start_backend(tmp, "green")?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    eprintln!("measuring: wrk -c{} -d{}s per run, {cores} cores…", o.connections, o.duration);
    let servers = Servers { lb, tmp, wrk, nginx, haproxy };

    let direct = if o.runs("throughput") { run_wrk(wrk, blue, o)? } else { Wrk::default() };
    let (rows, rounds) = measure_throughput(o, &servers, blue)?;
    // Shift under load and memory, with the most threads asked for.
    let threads = *o.threads.iter().max().unwrap_or(&2);
    let sweeps = if o.runs("shift") {
        Some(measure_shift(o, &servers, threads, blue, green)?)
    } else {
        None
    };
    let memory =
        if o.runs("memory") { Some(measure_memory(lb, tmp, threads, blue)?) } else { None };

    if o.runs("throughput") {
        print_throughput(o, lb, cores, &direct, &rows, &rounds);
    }
    if let Some((cutover_sweep, nginx_sweep)) = &sweeps {
        print_shift(o, threads, cutover_sweep, nginx_sweep);
    }
    if let Some((idle_kib, open_kib, used_kib, conns)) = memory {
        print_memory(threads, idle_kib, open_kib, used_kib, conns);
    }
    Ok(())
}

/// What the benchmark starts and measures with.
struct Servers<'a> {
    lb: &'a Lb,
    tmp: &'a Path,
    wrk: &'a Path,
    nginx: &'a Path,
    haproxy: &'a Path,
}

/// Per thread count, each server's median run, and cutover's and nginx's runs round by round.
type Throughput = (Vec<(usize, &'static str, Wrk)>, Vec<(usize, Vec<Wrk>, Vec<Wrk>)>);

fn measure_throughput(
    o: &Opts,
    servers: &Servers<'_>,
    blue: SocketAddr,
) -> anyhow::Result<Throughput> {
    let Servers { lb, tmp, wrk, nginx, haproxy } = *servers;
    let mut rows: Vec<(usize, &'static str, Wrk)> = Vec::new();
    // Per thread count, cutover's and nginx's runs round by round: on a shared machine the
    // spread between rounds says how far to trust the medians.
    let mut rounds: Vec<(usize, Vec<Wrk>, Vec<Wrk>)> = Vec::new();
    for &threads in o.threads.iter().filter(|_| o.runs("throughput")) {
        // All three run side by side (idle unless measured); rounds interleave them.
        let (c_listen, n_listen, h_listen) = (free_addr(), free_addr(), free_addr());
        let c = start_cutover(lb, threads, tmp, &lb_table(1, c_listen, blue, None, 0))?;
        let n = start_nginx(nginx, tmp, threads, n_listen, &[(blue, 1)])?;
        let h = start_haproxy(haproxy, tmp, threads, h_listen, blue)?;
        let servers = [
            ("cutover", c_listen, c.proc.pid()),
            ("nginx", n_listen, n.pid()),
            ("haproxy", h_listen, h.pid()),
        ];
        let mut runs: Vec<Vec<Wrk>> = vec![Vec::new(); servers.len()];
        for round in 0..o.rounds {
            for (i, (_, listen, pid)) in servers.iter().enumerate() {
                runs[i].push(run_wrk_measuring(wrk, *listen, o, Some(*pid))?);
            }
            eprintln!("  {threads} thread(s): round {} of {} done", round + 1, o.rounds);
        }
        rounds.push((threads, runs[0].clone(), runs[1].clone()));
        for ((name, _, _), runs) in servers.iter().zip(runs) {
            rows.push((threads, name, median(runs)));
        }
    }

    Ok((rows, rounds))
}

/// A weight sweep under full load, through cutover's admin API and through nginx reloads.
fn measure_shift(
    o: &Opts,
    servers: &Servers<'_>,
    threads: usize,
    blue: SocketAddr,
    green: SocketAddr,
) -> anyhow::Result<(Sweep, Sweep)> {
    let Servers { lb, tmp, wrk, nginx, .. } = *servers;
    let listen = free_addr();
    let cutover_sweep = {
        let c = start_cutover(lb, threads, tmp, &lb_table(1, listen, blue, Some(green), 0))?;
        let _ = wrk_cmd(wrk, listen, o, 1).output()?;
        sweep(wrk, listen, o, green, |i, pct| {
            put_table(c.admin, &lb_table(1 + i as u64, listen, blue, Some(green), pct))
        })?
    };
    let nginx_sweep = {
        let upstreams = |pct: u16| -> Vec<(SocketAddr, u32)> {
            match pct {
                0 => vec![(blue, 1)],
                100 => vec![(green, 1)],
                p => vec![(blue, (100 - p) as u32), (green, p as u32)],
            }
        };
        let listen = free_addr();
        let _n = start_nginx(nginx, tmp, threads, listen, &upstreams(0))?;
        let _ = wrk_cmd(wrk, listen, o, 1).output()?;
        sweep(wrk, listen, o, green, |_, pct| {
            std::fs::write(
                tmp.join("nginx.conf"),
                nginx_conf(tmp, threads, listen, &upstreams(pct)),
            )?;
            let status =
                Command::new(nginx).args(nginx_args(tmp)).args(["-s", "reload"]).status()?;
            if !status.success() {
                bail!("nginx -s reload failed");
            }
            Ok(())
        })?
    };
    Ok((cutover_sweep, nginx_sweep))
}

/// cutover's resident memory (KiB): idle, with 10,000 client connections open (at most what
/// its open-file limit lets it hold), then after one request on each; and how many it held.
fn measure_memory(
    lb: &Lb,
    tmp: &Path,
    threads: usize,
    blue: SocketAddr,
) -> anyhow::Result<(u64, u64, u64, usize)> {
    let listen = free_addr();
    let mut c = start_cutover(lb, threads, tmp, &lb_table(1, listen, blue, None, 0))?;
    std::thread::sleep(Duration::from_millis(300));
    let idle = rss_kib(c.proc.pid())?;
    // At most what the data plane's open-file limit lets it hold.
    let (_, body) = http(c.admin, "GET", "/v1/metrics", "")?;
    let cap = serde_json::from_str::<MetricsSnapshot>(&body)?.max_client_connections;
    let want = 10_000.min(cap as usize);
    let mut socks = Vec::with_capacity(want);
    for _ in 0..want {
        socks.push(
            TcpStream::connect(listen)
                .context("opening client connections (raise the open-file limit?)")?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http(c.admin, "GET", "/v1/metrics", "")?;
        let m: MetricsSnapshot = serde_json::from_str(&body)?;
        if m.client_connections >= want as u64 {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {} of {want} connections accepted within 30 s", m.client_connections);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let open = rss_kib(c.proc.pid())?;
    let mut buf = [0u8; 512];
    for s in &mut socks {
        s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")?;
        let mut got = Vec::new();
        while !got.ends_with(b"hello, world\n") {
            let n = s.read(&mut buf)?;
            if n == 0 {
                bail!("connection closed before the answer");
            }
            got.extend_from_slice(&buf[..n]);
        }
    }
    let used = rss_kib(c.proc.pid())?;
    c.proc.check_alive()?;
    Ok((idle, open, used, socks.len()))
}

fn print_throughput(
    o: &Opts,
    lb: &Lb,
    cores: usize,
    direct: &Wrk,
    rows: &[(usize, &'static str, Wrk)],
    rounds: &[(usize, Vec<Wrk>, Vec<Wrk>)],
) {
    println!();
    println!(
        "cutover bench-lb ({}) — wrk -t{} -c{} -d{}s --latency, median of {} interleaved rounds; backend: 1 thread, 13-byte body; {cores} cores shared by wrk, proxy and backend",
        lb.bin.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        o.connections.min(2),
        o.connections,
        o.duration,
        o.rounds
    );
    println!();
    println!(
        "{:<8} {:<9} {:>11} {:>9} {:>9} {:>9}   {:>16} {:>16}",
        "threads",
        "server",
        "req/s",
        "p50",
        "p99",
        "CPU/req",
        "vs nginx rps/p99",
        "vs haproxy rps/p99"
    );
    println!(
        "{:<8} {:<9} {:>11.0} {:>9} {:>9} {:>9}",
        "-",
        "backend",
        direct.rps,
        fmt_ms(direct.p50_ms),
        fmt_ms(direct.p99_ms),
        "-"
    );
    for &threads in &o.threads {
        let get = |name: &str| {
            rows.iter().find(|(t, n, _)| *t == threads && *n == name).map(|r| r.2.clone())
        };
        let (Some(c), Some(n), Some(h)) = (get("cutover"), get("nginx"), get("haproxy")) else {
            continue;
        };
        for (name, w) in [("cutover", &c), ("nginx", &n), ("haproxy", &h)] {
            let ratios = if name == "cutover" {
                format!(
                    "   {:>7.2}x /{:>5.2}x {:>8.2}x /{:>5.2}x",
                    c.rps / n.rps,
                    c.p99_ms / n.p99_ms,
                    c.rps / h.rps,
                    c.p99_ms / h.p99_ms
                )
            } else {
                String::new()
            };
            let errors = if w.non_2xx + w.socket_errors > 0 {
                format!("  ({} non-2xx, {} socket errors)", w.non_2xx, w.socket_errors)
            } else {
                String::new()
            };
            println!(
                "{:<8} {:<9} {:>11.0} {:>9} {:>9} {:>9}{ratios}{errors}",
                threads,
                name,
                w.rps,
                fmt_ms(w.p50_ms),
                fmt_ms(w.p99_ms),
                format!("{:.1}µs", w.cpu_us_per_request)
            );
        }
    }
    println!(
        "(ratios: req/s higher is better, p99 lower is better; CPU/req: the server's user+system CPU time per request)"
    );
    println!();
    println!("cutover / nginx round by round (rps ≥ 1 and p99 ≤ 1 is the target):");
    for (threads, c, n) in rounds {
        let ratio = |f: fn(&Wrk) -> f64| -> Vec<f64> {
            c.iter().zip(n).map(|(c, n)| f(c) / f(n)).collect()
        };
        let (rps, p99) = (ratio(|w| w.rps), ratio(|w| w.p99_ms));
        let met = rps.iter().zip(&p99).filter(|(r, p)| **r >= 1.0 && **p <= 1.0).count();
        let list = |v: &[f64]| v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" ");
        println!(
            "  {threads} thread(s): rps {}   p99 {}   both met in {met} of {} rounds",
            list(&rps),
            list(&p99),
            rps.len()
        );
    }
}

fn print_shift(o: &Opts, threads: usize, cutover_sweep: &Sweep, nginx_sweep: &Sweep) {
    println!();
    println!(
        "shift under load ({threads} threads): green weight 0→10→50→100→0 % during one {}s wrk run",
        o.duration
    );
    println!(
        "{:<26} {:>10} {:>8} {:>14} {:>12}",
        "", "requests", "non-2xx", "socket errors", "green served"
    );
    for (name, s) in
        [("cutover (PUT /v1/routes)", &cutover_sweep), ("nginx (nginx -s reload)", &nginx_sweep)]
    {
        println!(
            "{:<26} {:>10} {:>8} {:>14} {:>12}",
            name, s.wrk.requests, s.wrk.non_2xx, s.wrk.socket_errors, s.green_hits
        );
    }
}

fn print_memory(threads: usize, idle_kib: u64, open_kib: u64, used_kib: u64, conns: usize) {
    println!();
    println!(
        "cutover resident memory ({threads} threads): idle {:.1} MiB; {conns} open client connections {:.1} MiB; after one request on each {:.1} MiB ({:.1} KiB per connection)",
        idle_kib as f64 / 1024.0,
        open_kib as f64 / 1024.0,
        used_kib as f64 / 1024.0,
        (used_kib.saturating_sub(idle_kib)) as f64 / conns as f64
    );
}
