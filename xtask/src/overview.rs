//! `cargo xtask bench-overview`: the console's overview with a long history.
//!
//! Starts a real `cutover up` (release build) on a cutover.yaml of 100 deployment groups (process
//! runtime services of desired count 0, each with its own listener and pair of target groups),
//! makes one real deployment through the API and stops it, then stops `cutover up` and writes
//! 10,000 past deployments into its data directory through the store, each a copy of the real
//! one's stored row in another group at another time. Each group's deployments are older than the
//! next group's, so the first groups' last deployments lie far behind the newest 1,000. It starts
//! `cutover up` again, checks that every group shows its last deployment, then times `GET /` (the
//! overview) against the anchor `GET /v1/status`, interleaved, and prints medians, p95s, their
//! ratio and whether the overview is under 200 ms; and each console page's weight against 300 KB.
//!
//! ```sh
//! cargo xtask bench-overview [--requests 50] [--cutover PATH]
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::free_addr;
use crate::scale::{Guard, build, wait};

const GROUPS: usize = 100;
const PAST_DEPLOYMENTS: usize = 10_000;
/// The issue's bars: the overview's load time, and any page's weight.
const OVERVIEW_BUDGET: Duration = Duration::from_millis(200);
const PAGE_BUDGET_BYTES: usize = 300 * 1024;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let (mut requests, mut given) = (50usize, None::<PathBuf>);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--requests" => requests = it.next().context("--requests N")?.parse::<usize>()?.max(2),
            "--cutover" => given = Some(it.next().context("--cutover PATH")?.into()),
            other => bail!(
                "unknown option {other}; usage: cargo xtask bench-overview [--requests N] [--cutover PATH]"
            ),
        }
    }
    let cutover = match given {
        // Absolute: the CLI runs in the fixture's directory.
        Some(path) => std::fs::canonicalize(&path).with_context(|| path.display().to_string())?,
        None => build("release")?,
    };
    let tmp = std::env::temp_dir().join(format!("cutover-bench-overview-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let result = measure(&cutover, &tmp, requests);
    match &result {
        Ok(()) => drop(std::fs::remove_dir_all(&tmp)),
        Err(_) => eprintln!("kept {} (its up.log) to look at", tmp.display()),
    }
    result
}

fn measure(cutover: &Path, tmp: &Path, requests: usize) -> anyhow::Result<()> {
    let data = tmp.join("data");
    let api = free_addr();
    write_fixture(tmp)?;
    let template = {
        let up = start(cutover, tmp, api)?;
        up.cli(&["apply", "-f", "cutover.yaml"])?;
        let created: serde_json::Value = serde_json::from_str(&up.cli(&[
            "deploy",
            "--group",
            "app/g000",
            "--task-definition",
            "taskdef.json",
            "--appspec",
            "appspec.yaml",
            "--output",
            "json",
        ])?)?;
        let id = created["id"].as_str().context("deploy printed no id")?.to_string();
        up.cli(&["deployments", "stop", &id])?;
        wait("the deployment to stop", Duration::from_secs(60), || {
            up.cli(&["deployments", "get", &id, "--output", "json"])
                .ok()
                .and_then(|out| serde_json::from_str::<serde_json::Value>(&out).ok())
                .is_some_and(|d| d["status"] == "Stopped")
        })?;
        id
    };
    eprintln!("writing {PAST_DEPLOYMENTS} past deployments into {}", data.display());
    write_history(&data, &template)?;
    let up = start(cutover, tmp, api)?;
    let overview = get(api, "/").context("GET / after the restart")?;
    let empty = overview.matches("none yet").count();
    if empty > 0 {
        bail!("{empty} of {GROUPS} groups show no last deployment on the overview");
    }
    let (mut page, mut anchor) = (Vec::new(), Vec::new());
    for _ in 0..requests {
        page.push(timed(api, "/")?);
        anchor.push(timed(api, "/v1/status")?);
    }
    let weights = page_weights(api, &template)?;
    drop(up);
    report(&mut page, &mut anchor, &weights);
    Ok(())
}

/// 100 groups: each a listener of its own, two target groups and a service with no tasks.
fn write_fixture(tmp: &Path) -> anyhow::Result<()> {
    let mut yaml = String::from("load_balancers:\n");
    let (mut groups, mut services, mut deployment_groups) =
        (String::new(), String::new(), String::new());
    for g in 0..GROUPS {
        // 25 groups a load balancer: 50 target groups, under ALB's quotas.
        if g % 25 == 0 {
            yaml += &format!("  - name: web{}\n    listeners:\n", g / 25);
        }
        yaml += &format!("      - {{ name: l{g:03}, port: {} }}\n", free_addr().port());
        groups += &format!("  - {{ name: g{g:03}-blue }}\n  - {{ name: g{g:03}-green }}\n");
        services += &format!(
            "  - {{ name: s{g:03}, runtime: process, task_definition: taskdef.json, desired_count: 0, \
             load_balancer: {{ target_group: g{g:03}-blue, container_name: web, container_port: 8080 }} }}\n"
        );
        deployment_groups += &format!(
            "  - {{ application: app, name: g{g:03}, service: s{g:03}, \
             deployment_config: CodeDeployDefault.ECSAllAtOnce, target_groups: [g{g:03}-blue, g{g:03}-green], \
             production_listener: web{}/l{g:03}, termination_wait: 0s }}\n",
            g / 25
        );
    }
    yaml += &format!(
        "target_groups:\n{groups}services:\n{services}deployment_groups:\n{deployment_groups}"
    );
    std::fs::write(tmp.join("cutover.yaml"), yaml)?;
    std::fs::write(
        tmp.join("taskdef.json"),
        r#"{"family": "app", "containerDefinitions": [{"name": "web", "image": "app",
            "command": ["sleep", "3600"], "essential": true,
            "portMappings": [{"containerPort": 8080, "protocol": "tcp"}]}]}"#,
    )?;
    std::fs::write(
        tmp.join("appspec.yaml"),
        "version: 0.0\nResources:\n  - TargetService:\n      Type: AWS::ECS::Service\n      \
         Properties:\n        TaskDefinition: <TASK_DEFINITION>\n        LoadBalancerInfo:\n          \
         ContainerName: \"web\"\n          ContainerPort: 8080\n",
    )?;
    Ok(())
}

/// Copies of the real deployment `template` spread over the groups and the past month, group by
/// group: each group's deployments older than the next group's.
fn write_history(data: &Path, template: &str) -> anyhow::Result<()> {
    let store = store::Store::open(&data.join("state.db"))?;
    let row = store.read(|tx| tx.deployment_get(template))?.context("the template deployment")?;
    let body: serde_json::Value = serde_json::from_str(&row.body)?;
    let machine: serde_json::Value = serde_json::from_str(&row.machine)?;
    let step = 30 * 24 * 3600 * 1000 / PAST_DEPLOYMENTS as u64;
    let start = row.created_at.saturating_sub(step * (PAST_DEPLOYMENTS as u64 + 1));
    store.transaction(|tx| {
        for n in 0..PAST_DEPLOYMENTS {
            let group = format!("g{:03}", n * GROUPS / PAST_DEPLOYMENTS);
            let id = format!("d-past{n:05}");
            let (mut body, mut machine) = (body.clone(), machine.clone());
            body["deployment_group"] = group.clone().into();
            body["service"] = format!("s{}", &group[1..]).into();
            if machine["spec"]["deployment_id"].is_string() {
                machine["spec"]["deployment_id"] = id.clone().into();
            }
            let at = start + n as u64 * step;
            tx.deployment_put(&store::DeploymentRow {
                id,
                deployment_group: group,
                body: body.to_string(),
                machine: machine.to_string(),
                created_at: at,
                updated_at: at + 1000,
                completed_at: Some(at + 1000),
                ..row.clone()
            })?;
        }
        Ok(())
    })?;
    Ok(())
}

struct Up {
    guard: Guard,
    tmp: PathBuf,
    api: SocketAddr,
}

impl Up {
    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.guard.cutover)
            .args(args)
            .env("CUTOVER_DATA_DIR", &self.guard.data)
            .env("CUTOVER_API", format!("http://{}", self.api))
            .current_dir(&self.tmp)
            .output()?;
        if !out.status.success() {
            bail!("cutover {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }
}

fn start(cutover: &Path, tmp: &Path, api: SocketAddr) -> anyhow::Result<Up> {
    let data = tmp.join("data");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(tmp.join("up.log"))?;
    let child = Command::new(cutover)
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
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let up = Up {
        guard: Guard { child, cutover: cutover.to_path_buf(), data },
        tmp: tmp.to_path_buf(),
        api,
    };
    wait("cutover up", Duration::from_secs(120), || up.cli(&["status"]).is_ok())?;
    Ok(up)
}

/// Each console page with the data it shows here, and its weight in bytes.
fn page_weights(api: SocketAddr, deployment: &str) -> anyhow::Result<Vec<(String, usize)>> {
    let pages = [
        "/".to_string(),
        format!("/deployments/{deployment}"),
        "/history".into(),
        "/services/s000".into(),
        "/task-definitions/app".into(),
        "/target-groups/g000-blue".into(),
        "/target-groups/g000-blue/metrics".into(),
        "/alarms".into(),
        "/pipelines".into(),
        "/console/console.css".into(),
        "/console/console.js".into(),
    ];
    pages
        .into_iter()
        .map(|path| {
            let body = get(api, &path).with_context(|| format!("GET {path}"))?;
            Ok((path, body.len()))
        })
        .collect()
}

fn report(page: &mut [Duration], anchor: &mut [Duration], weights: &[(String, usize)]) {
    let (page_median, page_p95) = percentiles(page);
    let (anchor_median, anchor_p95) = percentiles(anchor);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "\ncutover bench-overview: {GROUPS} deployment groups, {PAST_DEPLOYMENTS} past deployments, {} requests each",
        page.len()
    );
    println!("{:<22}{:>12}{:>12}", "", "median", "p95");
    println!("{:<22}{:>10.1}ms{:>10.1}ms", "GET /v1/status", ms(anchor_median), ms(anchor_p95));
    println!("{:<22}{:>10.1}ms{:>10.1}ms", "GET / (overview)", ms(page_median), ms(page_p95));
    println!(
        "{:<22}{:>11.1}x{:>11.1}x",
        "ratio",
        ms(page_median) / ms(anchor_median),
        ms(page_p95) / ms(anchor_p95)
    );
    let verdict = if page_p95 < OVERVIEW_BUDGET { "under" } else { "OVER" };
    println!("overview p95 is {verdict} the {} ms budget", OVERVIEW_BUDGET.as_millis());
    println!("\npage weights (budget {} KB):", PAGE_BUDGET_BYTES / 1024);
    for (path, bytes) in weights {
        let verdict = if *bytes < PAGE_BUDGET_BYTES { "ok" } else { "OVER" };
        println!("  {path:<36}{:>8.1} KB  {verdict}", *bytes as f64 / 1024.0);
    }
}

/// The median and the 95th percentile (nearest rank).
fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let rank =
        |p: f64| samples[((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    (rank(0.5), rank(0.95))
}

fn timed(api: SocketAddr, path: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    get(api, path).with_context(|| format!("GET {path}"))?;
    Ok(start.elapsed())
}

/// The body of `GET path` on `addr`, when it answers 200.
fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    // HTTP/1.0: the body comes whole, not chunked, so its length is the page's weight.
    // Addressed to the loopback address: a token-less API refuses any other name.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    s.write_all(request.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let out = String::from_utf8(out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_string())
}
