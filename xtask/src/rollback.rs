//! `cargo xtask bench-rollback`: how fast a bad release is back on blue.
//!
//! Starts a real `cutover up` (release build, process runtime) with two tasks of the demo app,
//! a 50% canary with a long interval, and an alarm on green's 5xx count (`Sum >= 1` over a 1-second
//! period, 1 of 1, DEPLOYMENT_STOP_ON_ALARM). Each run deploys a v2 whose every response is a 500
//! while keep-alive clients call the production listener as fast as they can, and measures, from
//! what the clients saw: the time from the first failing response served by green to the last
//! response served by green (after which production is 100% blue), and how many client requests
//! failed in that window. CodeDeploy's equivalent is minutes: CloudWatch evaluates at most every
//! 10 seconds (a minute for standard periods) and CodeDeploy polls alarms on its own schedule.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use testkit::http::{Load, get};

use crate::{free_addr, workspace};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut runs = 5usize;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => runs = it.next().context("--runs needs a number")?.parse()?,
            other => bail!("unknown option {other}; usage: cargo xtask bench-rollback [--runs N]"),
        }
    }
    let (root, target) = workspace();
    eprintln!("building cutover and the demo app (release)…");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "-p", "cutover", "-p", "demo-app"])
        .current_dir(&root)
        .status()?;
    if !status.success() {
        bail!("cargo build failed");
    }
    let bin = target.join("release");
    let tmp = std::env::temp_dir().join(format!("cutover-bench-rollback-{}", std::process::id()));
    std::fs::create_dir_all(tmp.join("app"))?;
    std::fs::copy(bin.join("cutover-demo-app"), tmp.join("app/cutover-demo-app"))?;
    let prod = free_addr();
    let api = free_addr();
    write_files(&tmp, prod)?;

    let cutover = bin.join("cutover");
    let data = tmp.join("data");
    let cli = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(&cutover)
            .args(args)
            .env("CUTOVER_DATA_DIR", &data)
            .current_dir(&tmp)
            .output()?;
        if !out.status.success() {
            bail!("cutover {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    };
    let log = std::fs::File::create(tmp.join("up.log"))?;
    let mut up = Guard(
        Command::new(&cutover)
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
            .spawn()?,
        cutover.clone(),
        data.clone(),
    );
    wait("cutover up", Duration::from_secs(30), || cli(&["status"]).is_ok())?;
    cli(&["apply", "-f", "cutover.yaml"])?;
    wait("v1 to serve", Duration::from_secs(30), || {
        get(prod, "/").is_ok_and(|(s, v)| s == 200 && v == "v1")
    })?;

    println!(
        "cutover bench-rollback — {runs} runs; alarm: green HTTPCode_Target_5XX_Count Sum >= 1 per 1s, 1 of 1"
    );
    println!(
        "{:>4}  {:>22}  {:>16}  {:>16}",
        "run", "first 500 → all blue", "failed requests", "requests on green"
    );
    let mut windows = Vec::new();
    for run in 1..=runs {
        let load = Load::start(prod, 4);
        std::thread::sleep(Duration::from_millis(300));
        let created = cli(&[
            "deploy",
            "--group",
            "web/web-prod",
            "--task-definition",
            "taskdef-bad.json",
            "--appspec",
            "appspec.yaml",
            "--wait",
        ]);
        std::thread::sleep(Duration::from_millis(500));
        let samples = load.finish();
        if created.is_ok() {
            bail!("run {run}: the bad release succeeded; the alarm did not fire");
        }
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
        wait("production back on v1", Duration::from_secs(30), || {
            get(prod, "/").is_ok_and(|(_, v)| v == "v1")
        })?;
    }
    windows.sort();
    let median = windows[windows.len() / 2];
    println!(
        "median {:.0} ms, worst {:.0} ms (goal: under 1000 ms at a 1-second alarm period; CodeDeploy: minutes)",
        median.as_secs_f64() * 1000.0,
        windows.last().map_or(0.0, |w| w.as_secs_f64() * 1000.0)
    );
    up.stop();
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

fn write_files(dir: &Path, prod: SocketAddr) -> anyhow::Result<()> {
    let taskdef = |version: &str, errors: &str| {
        format!(
            r#"{{"family": "web", "containerDefinitions": [{{"name": "web", "image": "app", "command": ["cutover-demo-app"],
              "portMappings": [{{"containerPort": 8080}}], "stopTimeout": 2,
              "environment": [{{"name": "APP_VERSION", "value": "{version}"}}, {{"name": "ERROR_RATE", "value": "{errors}"}}]}}]}}"#
        )
    };
    std::fs::write(dir.join("taskdef.json"), taskdef("v1", "0"))?;
    std::fs::write(dir.join("taskdef-bad.json"), taskdef("v2", "1.0"))?;
    std::fs::write(
        dir.join("appspec.yaml"),
        "version: 0.0\nResources:\n  - TargetService:\n      Type: AWS::ECS::Service\n      Properties:\n        TaskDefinition: <TASK_DEFINITION>\n        LoadBalancerInfo:\n          ContainerName: web\n          ContainerPort: 8080\n",
    )?;
    let health = "{ path: /health, interval: 1s, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: 2 }";
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
  - {{ name: half-canary, type: TimeBasedCanary, percentage: 50, interval: 60s }}
alarms:
  - {{ name: green-5xx, metric: HTTPCode_Target_5XX_Count, target_group: green, statistic: Sum, period: 1s, evaluation_periods: 1, threshold: 1, comparison: ">=", treat_missing_data: notBreaching }}
deployment_groups:
  - application: web
    name: web-prod
    service: web
    deployment_config: half-canary
    target_groups: [web-blue, web-green]
    production_listener: web/prod
    alarms: [green-5xx]
    auto_rollback: [DEPLOYMENT_FAILURE, DEPLOYMENT_STOP_ON_ALARM]
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
