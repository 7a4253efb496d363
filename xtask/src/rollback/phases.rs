//! The parts of `cargo xtask bench-rollback` that show what a fixed 5xx alarm cannot:
//!
//! - **shadow**: a broken green (every answer a 500) behind a shadow phase that copies all of
//!   production to it, with an alarm on the copies' 5xx. How many client requests green ever
//!   served, counted at green's own server (its log marks each copy `shadow`; goal 0), how many
//!   failed at the client, and the time from the deployment's AllowTraffic start to the end of
//!   its rollback.
//! - **slow**: a green that answers 200 but 30 % slower (26 ms against blue's 20 ms), watched by
//!   the canary judge and by a fixed alarm on green's p99 `TargetResponseTime`. The fixed alarm
//!   is first tuned to the judge's false-positive rate on a healthy release: a few v1 → v1'
//!   releases under the same load, and the threshold just above the worst p99 green showed in
//!   any of their 2-second periods, so neither fires on a healthy release. Then the slow green:
//!   whether each fired.

use std::time::Duration;

use anyhow::{Context, bail};
use testkit::http::{Load, get};

use super::{Bench, SLOW_GREEN_LATENCY_MS, Setup, wait};

/// Unix milliseconds of `view`'s AllowTraffic start, and of its end (`completed_at`).
fn allow_traffic_to_end(view: &serde_json::Value) -> anyhow::Result<(u64, u64)> {
    let start = view["lifecycle_events"]
        .as_array()
        .and_then(|events| events.iter().find(|e| e["event"] == "AllowTraffic"))
        .and_then(|e| e["start_time"].as_u64())
        .with_context(|| format!("the deployment never started AllowTraffic: {view}"))?;
    let end = view["completed_at"].as_u64().with_context(|| format!("not ended: {view}"))?;
    Ok((start, end))
}

/// The requests for `/` in the logs of the tasks of `task_definition` (stopped ones too):
/// `(copies, client requests)`.
fn green_root_requests(bench: &Bench, task_definition: &str) -> anyhow::Result<(usize, usize)> {
    let tasks = bench.json(&["tasks", "list", "--service", "web", "--all"])?;
    let mut copies = 0;
    let mut served = 0;
    for task in tasks.as_array().context("a list of tasks")? {
        if task["task_definition"] != task_definition {
            continue;
        }
        let id = task["id"].as_str().context("a task id")?;
        // The demo app logs `PEER "GET /" STATUS …`, and ` shadow` after a copy.
        for line in bench.cli(&["logs", id])?.lines().filter(|l| l.contains("\"GET /\" ")) {
            if line.contains(" shadow") {
                copies += 1;
            } else {
                served += 1;
            }
        }
    }
    Ok((copies, served))
}

/// The shadow runs: a broken green rolled back before it answers a client.
pub(super) fn shadow(bench: &Bench, runs: usize) -> anyhow::Result<()> {
    println!(
        "shadow phase (mirror 100% of production to green for 60s, then a 50% canary); green answers every request with a 500;"
    );
    println!("alarm: green MirroredTarget_5XX_Count Sum >= 1 per 1s, 1 of 1");
    println!(
        "{:>4}  {:>26}  {:>16}  {:>26}  {:>14}",
        "run",
        "client requests on green",
        "failed requests",
        "AllowTraffic → rolled back",
        "copies green got"
    );
    let (mut worst_served, mut worst_failed, mut times) = (0, 0, Vec::new());
    // Every run deploys the same task definition, so its tasks' logs add up run by run.
    let (mut copies_before, mut served_before) = (0, 0);
    for run in 1..=runs {
        let load = Load::start(bench.prod, 4);
        std::thread::sleep(Duration::from_millis(300));
        let created = bench.deploy("taskdef-bad.json");
        let samples = load.finish();
        if created.is_ok() {
            bail!("run {run}: the bad release succeeded; the alarm did not fire");
        }
        let view = bench.newest_deployment()?;
        if view["rolled_back"] != true {
            bail!("run {run}: the deployment was not rolled back: {view}");
        }
        let (start, end) = allow_traffic_to_end(&view)?;
        let green = view["task_definition"].as_str().context("the deployment's task definition")?;
        let (copies_so_far, served_so_far) = green_root_requests(bench, green)?;
        let copies = copies_so_far.saturating_sub(copies_before);
        let served = served_so_far.saturating_sub(served_before);
        (copies_before, served_before) = (copies_so_far, served_so_far);
        let failed = samples.iter().filter(|s| s.status != 200).count();
        let time = end.saturating_sub(start);
        println!("{run:>4}  {served:>26}  {failed:>16}  {time:>23} ms  {copies:>14}");
        worst_served = worst_served.max(served);
        worst_failed = worst_failed.max(failed);
        times.push(time);
        wait("production back on v1", Duration::from_secs(30), || {
            get(bench.prod, "/").is_ok_and(|(_, v)| v == "v1")
        })?;
    }
    times.sort();
    println!(
        "client requests green served: worst {worst_served} (goal 0); failed at the client: worst {worst_failed} (goal 0); AllowTraffic → rolled back: median {} ms, worst {} ms",
        times[times.len() / 2],
        times.last().copied().unwrap_or(0),
    );
    Ok(())
}

/// Green's per-period p99 `TargetResponseTime` (seconds) in `[from, to]` (Unix ms), the periods
/// the fixed alarm evaluates, with their sample counts.
fn green_p99s(bench: &Bench, green: &str, from: u64, to: u64) -> anyhow::Result<Vec<(f64, u64)>> {
    let view = bench.json(&[
        "metrics",
        "TargetResponseTime",
        "--target-group",
        green,
        "--statistic",
        "p99",
        "--period",
        "2",
        "--since",
        "300",
    ])?;
    let points = view["datapoints"].as_array().context("datapoints")?;
    Ok(points
        .iter()
        .filter(|p| p["start"].as_u64().is_some_and(|s| s + 2000 > from && s <= to))
        .filter_map(|p| Some((p["value"].as_f64()?, p["sample_count"].as_u64()?)))
        .collect())
}

/// Whether the alarm `name` (any deployment's instance of it) went to ALARM since `since`.
fn went_to_alarm(bench: &Bench, name: &str, since: u64) -> anyhow::Result<bool> {
    let alarms = bench.json(&["alarms", "list"])?;
    Ok(alarms.as_array().context("a list of alarms")?.iter().any(|a| {
        a["name"] == name
            && a["history"].as_array().is_some_and(|h| {
                h.iter()
                    .any(|t| t["to"] == "ALARM" && t["at"].as_u64().is_some_and(|at| at >= since))
            })
    }))
}

/// One deployment of `taskdef` under load until it ends: its view and the clients' failures.
fn release(bench: &Bench, taskdef: &str) -> anyhow::Result<(serde_json::Value, usize)> {
    let before = bench.newest_deployment().ok().map(|v| v["id"].clone());
    let load = Load::start(bench.prod, 4);
    std::thread::sleep(Duration::from_millis(300));
    // Err when the deployment was rolled back, which the view says too.
    let outcome = bench.deploy(taskdef);
    let samples = load.finish();
    let view = bench.newest_deployment()?;
    if Some(&view["id"]) == before.as_ref() || view["completed_at"].is_null() {
        bail!("deploying {taskdef} did not create a deployment that ended: {outcome:?}");
    }
    Ok((view, samples.iter().filter(|s| s.status != 200).count()))
}

/// The slow runs: the fixed alarm tuned on healthy releases, then a 30 % slower green.
pub(super) fn slow(bench: &Bench, runs: usize) -> anyhow::Result<()> {
    println!(
        "slow green: blue answers in 20 ms, green in {SLOW_GREEN_LATENCY_MS} ms (30% slower, every answer a 200); 50% canary for 20s;"
    );
    println!(
        "judge: latency, tolerance 10%, confidence 0.99, 2 of 3 periods of 2s; fixed alarm: green TargetResponseTime p99 > T, 2 of 3 periods of 2s"
    );
    println!("tuning T on {runs} healthy releases (v1 → v1', same latency):");
    println!(
        "{:>4}  {:>10}  {:>16}  {:>22}  {:>14}",
        "run", "status", "judge fired", "green's worst p99", "periods"
    );
    let mut worst_healthy = 0f64;
    let mut judge_false_positives = 0;
    for run in 1..=runs {
        let (view, _) = release(bench, "taskdef-healthy.json")?;
        let (start, end) = allow_traffic_to_end(&view)?;
        let green = view["traffic"]["green_target_group"].as_str().context("green's group")?;
        let p99s = green_p99s(bench, green, start, end)?;
        let worst = p99s.iter().map(|(v, _)| *v).fold(0f64, f64::max);
        let fired = went_to_alarm(bench, "latency-judge", start)?;
        judge_false_positives += usize::from(fired);
        let status = view["status"].as_str().unwrap_or("?");
        println!(
            "{run:>4}  {status:>10}  {fired:>16}  {:>19.1} ms  {:>14}",
            worst * 1000.0,
            p99s.len()
        );
        worst_healthy = worst_healthy.max(worst);
    }
    // Just above the worst healthy period: the fixed alarm fires on none of them either.
    let threshold = worst_healthy * 1.02;
    println!(
        "judge fired on {judge_false_positives} of {runs} healthy releases; T = {:.1} ms (2% above the worst healthy p99)",
        threshold * 1000.0
    );
    bench.apply(Setup::Slow { p99_threshold_secs: Some(threshold) })?;
    println!("the 30% slower green:");
    println!(
        "{:>4}  {:>10}  {:>12}  {:>12}  {:>22}  {:>26}  {:>8}",
        "run",
        "status",
        "judge fired",
        "fixed fired",
        "green's worst p99",
        "AllowTraffic → rolled back",
        "failed"
    );
    let (mut judge_caught, mut fixed_caught) = (0, 0);
    for run in 1..=runs {
        let (view, failed) = release(bench, "taskdef-slow.json")?;
        let (start, end) = allow_traffic_to_end(&view)?;
        let green = view["traffic"]["green_target_group"].as_str().context("green's group")?;
        let worst =
            green_p99s(bench, green, start, end)?.iter().map(|(v, _)| *v).fold(0f64, f64::max);
        let judge = went_to_alarm(bench, "latency-judge", start)?;
        let fixed = went_to_alarm(bench, "green-p99", start)?;
        judge_caught += usize::from(judge);
        fixed_caught += usize::from(fixed);
        let status = view["status"].as_str().unwrap_or("?");
        let time = if view["rolled_back"] == true {
            format!("{} ms", end.saturating_sub(start))
        } else {
            "not rolled back".into()
        };
        println!(
            "{run:>4}  {status:>10}  {judge:>12}  {fixed:>12}  {:>19.1} ms  {time:>26}  {failed:>8}",
            worst * 1000.0
        );
        if view["status"] == "Succeeded" {
            // The slow green is production now: put v1 back for the next run.
            bench.deploy("taskdef-healthy.json").context("redeploying v1")?;
        }
        wait("production back on v1", Duration::from_secs(30), || {
            get(bench.prod, "/").is_ok_and(|(_, v)| v == "v1")
        })?;
    }
    println!(
        "on the 30% slower green: the judge fired in {judge_caught} of {runs} runs, the fixed p99 alarm tuned to the same false-positive rate in {fixed_caught} of {runs}"
    );
    Ok(())
}
