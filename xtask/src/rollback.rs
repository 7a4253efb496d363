//! `cargo xtask bench-rollback`: how fast a bad release is back on blue, and what it costs the
//! clients with and without retry on blue.
//!
//! Starts a real `cutover up` (release build, process runtime) with two tasks of the demo app,
//! a 50% canary with a long interval, and an alarm on green's 5xx count (`Sum >= 1` over a 1-second
//! period, 1 of 1, DEPLOYMENT_STOP_ON_ALARM). Each run deploys a v2 whose every response is a 500
//! while keep-alive clients call the production listener as fast as they can. The first runs have
//! the group's `retry_on_blue: false` and measure, from what the clients saw: the time from the
//! first failing response served by green to the last response served by green (after which
//! production is 100% blue), and how many client requests failed in that window. CodeDeploy's
//! equivalent is minutes: CloudWatch evaluates at most every 10 seconds (a minute for standard
//! periods) and CodeDeploy polls alarms on its own schedule. The same number of runs follows in
//! the same invocation with retry on blue (the default): the client requests that failed
//! during the whole run (goal 0), and from the data plane's metrics the requests green failed,
//! how many blue answered again (and how many the budget refused), and blue's extra load while
//! green was in the split: the retries over the requests blue took first-hand meanwhile, which
//! at a 50% canary are as many as green took.
//!
//! Each part runs on its own fresh installation; `--only retry|shadow|slow` runs one of them.
//! `phases` holds the shadow and slow-green parts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use routes::MetricsSnapshot;
use testkit::http::{Load, Sample, get};

use crate::{free_addr, workspace};

mod phases;

/// A running installation the runs deploy to.
struct Bench {
    cutover: PathBuf,
    dir: PathBuf,
    prod: SocketAddr,
    lb_admin: SocketAddr,
    /// `cutover up`, stopped when the bench is dropped.
    up: Guard,
}

impl Bench {
    /// Starts a fresh `cutover up` from the release binaries in `bin`, applies `setup` and waits
    /// until production serves v1.
    fn install(bin: &Path, part: &str, setup: Setup) -> anyhow::Result<Bench> {
        let dir = std::env::temp_dir()
            .join(format!("cutover-bench-rollback-{part}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("app"))?;
        std::fs::copy(bin.join("cutover-demo-app"), dir.join("app/cutover-demo-app"))?;
        let cutover = bin.join("cutover");
        let (api, lb_admin) = (free_addr(), free_addr());
        let log = std::fs::File::create(dir.join("up.log"))?;
        let up = Guard(
            Command::new(&cutover)
                .args(["up", "--listen", &api.to_string(), "--lb-admin", &lb_admin.to_string()])
                .args(["--lb-threads", "1"])
                .env("CUTOVER_DATA_DIR", dir.join("data"))
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?,
            cutover.clone(),
            dir.join("data"),
        );
        let bench = Bench { cutover, dir, prod: free_addr(), lb_admin, up };
        wait("cutover up", Duration::from_secs(30), || bench.cli(&["status"]).is_ok())?;
        bench.apply(setup)?;
        wait("v1 to serve", Duration::from_secs(30), || {
            get(bench.prod, "/").is_ok_and(|(s, v)| s == 200 && v == "v1")
        })?;
        Ok(bench)
    }

    /// Stops `cutover up` and removes the bench's files.
    fn finish(mut self) {
        self.up.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.cutover)
            .args(args)
            .env("CUTOVER_DATA_DIR", self.dir.join("data"))
            .current_dir(&self.dir)
            .output()?;
        if !out.status.success() {
            bail!("cutover {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// The CLI's answer as JSON (`--output json`).
    fn json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let all: Vec<&str> = args.iter().copied().chain(["--output", "json"]).collect();
        let out = self.cli(&all)?;
        serde_json::from_str(&out).with_context(|| format!("cutover {args:?}: {out}"))
    }

    /// Writes the files of `setup` and applies its `cutover.yaml`.
    fn apply(&self, setup: Setup) -> anyhow::Result<()> {
        write_files(&self.dir, self.prod, setup)?;
        self.cli(&["apply", "-f", "cutover.yaml"])?;
        Ok(())
    }

    /// `cutover deploy --wait` of `taskdef` to the group: Ok when the deployment succeeded.
    fn deploy(&self, taskdef: &str) -> anyhow::Result<String> {
        self.cli(&[
            "deploy",
            "--group",
            "web/web-prod",
            "--task-definition",
            taskdef,
            "--appspec",
            "appspec.yaml",
            "--wait",
        ])
    }

    /// The newest deployment's view.
    fn newest_deployment(&self) -> anyhow::Result<serde_json::Value> {
        let list = self.json(&["deployments", "list"])?;
        let id = list[0]["id"].as_str().context("no deployment")?.to_string();
        self.json(&["deployments", "get", &id])
    }

    /// The data plane's counters (`GET /v1/metrics` on its admin address).
    fn metrics(&self) -> anyhow::Result<MetricsSnapshot> {
        let mut stream = TcpStream::connect_timeout(&self.lb_admin, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"GET /v1/metrics HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        let at = answer.windows(4).position(|w| w == b"\r\n\r\n").context("no head end")?;
        serde_json::from_slice(&answer[at + 4..]).context("the metrics' JSON")
    }

    /// One deployment of the broken v2 under load, until it is rolled back; the clients' answers.
    fn deploy_broken(&self, run: usize) -> anyhow::Result<Vec<Sample>> {
        let load = Load::start(self.prod, 4);
        std::thread::sleep(Duration::from_millis(300));
        let created = self.deploy("taskdef-bad.json");
        std::thread::sleep(Duration::from_millis(500));
        let samples = load.finish();
        if created.is_ok() {
            bail!("run {run}: the bad release succeeded; the alarm did not fire");
        }
        wait("production back on v1", Duration::from_secs(30), || {
            get(self.prod, "/").is_ok_and(|(_, v)| v == "v1")
        })?;
        Ok(samples)
    }
}

/// Which of the bench's parts to run (`--only`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Only {
    All,
    /// The canary runs with and without retry on blue.
    Retry,
    /// A broken green behind a shadow phase.
    Shadow,
    /// A 30 % slower green: the canary judge against a fixed latency alarm.
    Slow,
}

const USAGE: &str =
    "usage: cargo xtask bench-rollback [--runs N] [--only retry|shadow|slow] [--debug]";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut runs = 5usize;
    let mut only = Only::All;
    let mut profile = "release";
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => runs = it.next().context("--runs needs a number")?.parse()?,
            "--only" => {
                only = match it.next().map(String::as_str) {
                    Some("retry") => Only::Retry,
                    Some("shadow") => Only::Shadow,
                    Some("slow") => Only::Slow,
                    other => bail!("--only {other:?}: expected retry, shadow or slow; {USAGE}"),
                }
            }
            // The dev build: figures of the same order, without a release build's wait.
            "--debug" => profile = "debug",
            other => bail!("unknown option {other}; {USAGE}"),
        }
    }
    let (root, target) = workspace();
    eprintln!("building cutover and the demo app ({profile})…");
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build.args(["build", "--quiet", "-p", "cutover", "-p", "demo-app"]).current_dir(&root);
    if profile == "release" {
        build.arg("--release");
    }
    if !build.status()?.success() {
        bail!("cargo build failed");
    }
    let bin = target.join(profile);
    println!("cutover bench-rollback ({profile} build) — {runs} runs per part");
    if matches!(only, Only::All | Only::Retry) {
        let bench = Bench::install(&bin, "retry", Setup::Canary { retry_on_blue: false })?;
        without_retry(&bench, runs)?;
        bench.apply(Setup::Canary { retry_on_blue: true })?;
        with_retry(&bench, runs)?;
        bench.finish();
    }
    if matches!(only, Only::All | Only::Shadow) {
        let bench = Bench::install(&bin, "shadow", Setup::Shadow)?;
        phases::shadow(&bench, runs)?;
        bench.finish();
    }
    if matches!(only, Only::All | Only::Slow) {
        let bench = Bench::install(&bin, "slow", Setup::Slow { p99_threshold_secs: None })?;
        phases::slow(&bench, runs)?;
        bench.finish();
    }
    Ok(())
}

/// The runs with `retry_on_blue: false`: the rollback window and the failures in it.
fn without_retry(bench: &Bench, runs: usize) -> anyhow::Result<()> {
    println!("alarm: green HTTPCode_Target_5XX_Count Sum >= 1 per 1s, 1 of 1");
    println!("without retry on blue (retry_on_blue: false):");
    println!(
        "{:>4}  {:>22}  {:>16}  {:>16}",
        "run", "first 500 → all blue", "failed requests", "requests on green"
    );
    let mut windows = Vec::new();
    let mut failures = Vec::new();
    for run in 1..=runs {
        let samples = bench.deploy_broken(run)?;
        let first_bad = samples
            .iter()
            .position(|s| s.status == 500 && s.version == "v2")
            .context("green never failed")?;
        let last_green =
            samples.iter().rposition(|s| s.version == "v2").context("green never served")?;
        let window = samples[last_green].at.saturating_sub(samples[first_bad].at);
        let failed = samples[first_bad..=last_green].iter().filter(|s| s.status != 200).count();
        let on_green = samples.iter().filter(|s| s.version == "v2").count();
        println!(
            "{run:>4}  {:>19.0} ms  {failed:>16}  {on_green:>16}",
            window.as_secs_f64() * 1000.0
        );
        windows.push(window);
        failures.push(failed);
    }
    windows.sort();
    failures.sort();
    let median = windows[windows.len() / 2];
    println!(
        "median {:.0} ms, worst {:.0} ms (goal: under 1000 ms at a 1-second alarm period; CodeDeploy: minutes); failed requests: median {}, worst {}",
        median.as_secs_f64() * 1000.0,
        windows.last().map_or(0.0, |w| w.as_secs_f64() * 1000.0),
        failures[failures.len() / 2],
        failures.last().copied().unwrap_or(0),
    );
    Ok(())
}

/// The runs with retry on blue (its defaults): what the clients saw, and what blue took on.
fn with_retry(bench: &Bench, runs: usize) -> anyhow::Result<()> {
    println!("with retry on blue (the default: 20% of the requests in flight, at least 10):");
    println!(
        "{:>4}  {:>16}  {:>14}  {:>8}  {:>16}  {:>18}",
        "run",
        "failed requests",
        "green failed",
        "retries",
        "budget exhausted",
        "blue's extra load"
    );
    let mut worst_failed = 0;
    let mut loads = Vec::new();
    for run in 1..=runs {
        let before = bench.metrics()?;
        let samples = bench.deploy_broken(run)?;
        let after = bench.metrics()?;
        let failed = samples.iter().filter(|s| s.status != 200).count();
        let delta = |pick: fn(&routes::TargetGroupMetrics) -> u64| {
            let of = |m: &MetricsSnapshot| m.target_groups.get("web-green").map_or(0, pick);
            of(&after).saturating_sub(of(&before))
        };
        let green_failed = delta(|g| g.counters.target_5xx + g.counters.elb_502);
        let green_requests = delta(|g| g.counters.requests);
        let (retries, exhausted) = (delta(|g| g.retries), delta(|g| g.retry_budget_exhausted));
        // At 50/50, blue took first-hand as many requests as green while green was in the split.
        let extra = 100.0 * retries as f64 / green_requests.max(1) as f64;
        println!(
            "{run:>4}  {failed:>16}  {green_failed:>14}  {retries:>8}  {exhausted:>16}  {:>17.0}%",
            extra
        );
        worst_failed = worst_failed.max(failed);
        loads.push(extra);
    }
    loads.sort_by(f64::total_cmp);
    println!(
        "failed requests at the client: worst {worst_failed} (goal 0 for GETs); blue's extra load while green was in the split: median +{:.0}%, worst +{:.0}%",
        loads[loads.len() / 2],
        loads.last().copied().unwrap_or(0.0)
    );
    Ok(())
}

/// The group under bench: its deployment config, its alarms and how its versions behave.
#[derive(Clone, Copy)]
enum Setup {
    /// A 50 % canary for a minute, an alarm on green's 5xx; retry on blue on or off.
    Canary { retry_on_blue: bool },
    /// A shadow phase copying all of production to green for a minute before the canary, an
    /// alarm on the copies' 5xx.
    Shadow,
    /// Blue answers in 20 ms. A 50 % canary for 20 s watched by the latency judge and a fixed
    /// alarm on green's p99 over the same periods: `None` while calibrating (never fires).
    Slow { p99_threshold_secs: Option<f64> },
}

/// Blue's latency in the slow part, and green's 30 % more.
const BLUE_LATENCY_MS: u64 = 20;
const SLOW_GREEN_LATENCY_MS: u64 = 26;

impl Setup {
    /// `(deployment config, alarms, the group's alarms, retry on blue)` of `cutover.yaml`.
    fn group(self) -> (&'static str, String, &'static str, bool) {
        let green_5xx = |metric: &str| {
            format!(
                "  - {{ name: green-5xx, metric: {metric}, target_group: green, statistic: Sum, period: 1s, evaluation_periods: 1, threshold: 1, comparison: \">=\", treat_missing_data: notBreaching }}\n"
            )
        };
        match self {
            Setup::Canary { retry_on_blue } => (
                "{ name: half-canary, type: TimeBasedCanary, percentage: 50, interval: 60s }",
                green_5xx("HTTPCode_Target_5XX_Count"),
                "[green-5xx]",
                retry_on_blue,
            ),
            Setup::Shadow => (
                "{ name: half-canary, type: TimeBasedCanary, percentage: 50, interval: 60s, mirror: { percentage: 100, duration: 60s } }",
                green_5xx("MirroredTarget_5XX_Count"),
                "[green-5xx]",
                true,
            ),
            Setup::Slow { p99_threshold_secs } => {
                // A threshold no answer reaches while calibrating.
                let threshold = p99_threshold_secs.unwrap_or(60.0);
                let alarms = format!(
                    "  - {{ name: latency-judge, kind: canary-judge, metric: latency, tolerance: 10%, confidence: 0.99, min_samples: 50, period: 2s, evaluation_periods: 3, datapoints_to_alarm: 2 }}\n  - {{ name: green-p99, metric: TargetResponseTime, target_group: green, statistic: p99, period: 2s, evaluation_periods: 3, datapoints_to_alarm: 2, threshold: {threshold:.6}, comparison: \">\", treat_missing_data: notBreaching }}\n"
                );
                (
                    "{ name: half-canary, type: TimeBasedCanary, percentage: 50, interval: 20s }",
                    alarms,
                    "[latency-judge, green-p99]",
                    true,
                )
            }
        }
    }
}

fn write_files(dir: &Path, prod: SocketAddr, setup: Setup) -> anyhow::Result<()> {
    let taskdef = |version: &str, errors: &str, latency_ms: Option<u64>| {
        let latency = latency_ms
            .map(|ms| format!(r#", {{"name": "LATENCY_MS", "value": "{ms}"}}"#))
            .unwrap_or_default();
        format!(
            r#"{{"family": "web", "containerDefinitions": [{{"name": "web", "image": "app", "command": ["cutover-demo-app"],
              "portMappings": [{{"containerPort": 8080}}], "stopTimeout": 2,
              "environment": [{{"name": "APP_VERSION", "value": "{version}"}}, {{"name": "ERROR_RATE", "value": "{errors}"}}{latency}]}}]}}"#
        )
    };
    let blue_latency = matches!(setup, Setup::Slow { .. }).then_some(BLUE_LATENCY_MS);
    std::fs::write(dir.join("taskdef.json"), taskdef("v1", "0", blue_latency))?;
    std::fs::write(dir.join("taskdef-bad.json"), taskdef("v2", "1.0", blue_latency))?;
    // A healthy release: the same version and latency as blue, in new tasks.
    std::fs::write(dir.join("taskdef-healthy.json"), taskdef("v1", "0", blue_latency))?;
    std::fs::write(dir.join("taskdef-slow.json"), taskdef("v2", "0", Some(SLOW_GREEN_LATENCY_MS)))?;
    std::fs::write(
        dir.join("appspec.yaml"),
        "version: 0.0\nResources:\n  - TargetService:\n      Type: AWS::ECS::Service\n      Properties:\n        TaskDefinition: <TASK_DEFINITION>\n        LoadBalancerInfo:\n          ContainerName: web\n          ContainerPort: 8080\n",
    )?;
    let health = "{ path: /health, interval: 1s, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: 2 }";
    let (config, alarms, group_alarms, retry_on_blue) = setup.group();
    std::fs::write(
        dir.join("cutover.yaml"),
        format!(
            r#"load_balancers:
  - name: web
    listeners: [{{ name: prod, port: {port} }}]
target_groups:
  - {{ name: web-blue, health_check: {health}, deregistration_delay: 1s }}
  - {{ name: web-green, health_check: {health}, deregistration_delay: 1s }}
services:
  - {{ name: web, task_definition: taskdef.json, desired_count: 2, load_balancer: {{ target_group: web-blue, container_name: web, container_port: 8080 }} }}
deployment_configs:
  - {config}
alarms:
{alarms}deployment_groups:
  - application: web
    name: web-prod
    service: web
    deployment_config: half-canary
    target_groups: [web-blue, web-green]
    production_listener: web/prod
    alarms: {group_alarms}
    auto_rollback: [DEPLOYMENT_FAILURE, DEPLOYMENT_STOP_ON_ALARM]
    retry_on_blue: {retry_on_blue}
"#,
            port = prod.port()
        ),
    )?;
    Ok(())
}

struct Guard(Child, PathBuf, PathBuf);

impl Guard {
    fn stop(&mut self) {
        let _ = Command::new(&self.1)
            .arg("down")
            .env("CUTOVER_DATA_DIR", &self.2)
            .stdout(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

fn wait(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !ok() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
