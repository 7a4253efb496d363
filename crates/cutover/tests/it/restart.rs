//! `kill -9` of the control plane in the middle of a deployment: nothing is lost, and nothing
//! counted before the restart is counted again (no false rollback).

use std::time::Duration;

use crate::harness::*;

#[test]
fn control_plane_killed_mid_shift_resumes_and_adopts_tasks() {
    let mut cluster = Cluster::start(Options {
        config: "{ name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 6s }",
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let load = Load::start(cluster.prod, 2);

    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("the canary step (20% on green)", Duration::from_secs(30), || {
        (cluster.deployment(&id)["traffic"]["production_green_percent"] == 20).then_some(())
    });
    assert_eq!(cluster.app_processes(), 4, "blue and green should run two tasks each");
    // The data plane serves the split (the store records a route before it is sent).
    wait_for("production to serve the canary", Duration::from_secs(10), || {
        load.samples().iter().rev().take(200).any(|s| s.version == "v2").then_some(())
    });

    cluster.kill_control_plane();
    // The data plane keeps serving the canary split while the control plane is dead.
    let before = load.samples().len();
    wait_for("traffic to keep flowing without a control plane", Duration::from_secs(10), || {
        (load.samples().len() > before + 100).then_some(())
    });
    assert!(
        load.samples()[before..].iter().any(|s| s.version == "v2"),
        "the canary split was lost"
    );

    cluster.up();
    wait_for("the deployment to finish after the restart", Duration::from_secs(60), || {
        let view = cluster.deployment(&id);
        (view["completed_at"].is_u64()).then_some(view)
    });
    let view = cluster.deployment(&id);
    assert_eq!(view["status"], "Succeeded", "{view}");
    let samples = load.finish();
    assert_eq!(failures(&samples), Vec::<&Sample>::new(), "requests failed across the restart");

    // Adopted, not duplicated or orphaned: two green tasks serve, blue's two are gone.
    wait_for("exactly the two green tasks to remain", Duration::from_secs(30), || {
        (cluster.app_processes() == 2).then_some(())
    });
    let tasks = cluster.json(&["tasks", "list"]);
    let running: Vec<_> =
        tasks.as_array().unwrap().iter().filter(|t| t["last_status"] == "RUNNING").collect();
    assert_eq!(running.len(), 2, "{tasks}");
    assert!(running.iter().all(|t| t["task_definition"] == "web:2"), "{tasks}");
    assert_eq!(get(cluster.prod, "/").unwrap().1, "v2");
}

/// A 5xx alarm on green and an alarm on `Error` log lines, both over 10-second periods with a
/// threshold of 10, as an operator would set them for a real service.
const TEN_SECOND_ALARMS: &str = r#"metric_filters:
  - { name: app-errors, service: web, pattern: Error, metric: AppErrors, default_value: 0 }
alarms:
  - { name: green-5xx, metric: HTTPCode_Target_5XX_Count, target_group: green, statistic: Sum, period: 10s, evaluation_periods: 1, threshold: 10, comparison: ">=" }
  - { name: app-errors, metric: AppErrors, service: web, statistic: Sum, period: 10s, evaluation_periods: 1, threshold: 10, comparison: ">=", treat_missing_data: notBreaching }
"#;

/// `count` requests to `/fail`: each answers 500 and logs an `Error` line in the task that served it.
fn fail_requests(cluster: &Cluster, count: usize) {
    for _ in 0..count {
        assert_eq!(get(cluster.prod, "/fail").unwrap().0, 500);
    }
}

/// The load balancer's cumulative request count of a target group since it started.
fn requests_served(cluster: &Cluster, target_group: &str) -> u64 {
    let (status, snapshot) =
        cluster.api(reqwest::Method::GET, "/v1/metrics", &serde_json::Value::Null);
    assert_eq!(status, 200, "{snapshot}");
    snapshot["target_groups"][target_group]["requests"].as_u64().unwrap_or(0)
}

#[test]
fn a_restart_mid_canary_neither_recounts_old_errors_nor_rolls_back_a_healthy_release() {
    let mut cluster = Cluster::start(Options {
        config: "{ name: quick-canary, type: TimeBasedCanary, percentage: 10, interval: 40s }",
        auto_rollback: "[DEPLOYMENT_FAILURE, DEPLOYMENT_STOP_ON_ALARM]",
        group_extra: "    alarms: [green-5xx, app-errors]",
        top_extra: TEN_SECOND_ALARMS.into(),
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    // web-blue answers 20 errors while it serves v1 …
    fail_requests(&cluster, 20);
    // … then v2 moves to web-green (the group's alarms ignored: app-errors is in ALARM) …
    cluster.cli_ok(&deploy_args(
        "taskdef-v2.json",
        "appspec.yaml",
        &["--config", "CodeDeployDefault.ECSAllAtOnce", "--ignore-alarms", "--wait"],
    ));
    // … and v2's tasks, blue in the next deployment, log 20 errors.
    fail_requests(&cluster, 20);
    wait_for("app-errors to count them", Duration::from_secs(20), || {
        (cluster.json(&["alarms", "get", "app-errors"])[0]["state"] == "ALARM").then_some(())
    });
    wait_for("app-errors to be OK again", Duration::from_secs(40), || {
        (cluster.json(&["alarms", "get", "app-errors"])[0]["state"] == "OK").then_some(())
    });

    // A healthy release onto web-blue, whose 5xx counter and whose blue tasks' logs hold those
    // errors from before.
    let load = Load::start(cluster.prod, 2);
    let created = cluster.json(&deploy_args("taskdef.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("the canary step (10% on green)", Duration::from_secs(30), || {
        (cluster.deployment(&id)["traffic"]["production_green_percent"] == 10).then_some(())
    });
    // green-5xx has judged the canary (OK, stored) before the kill, so the restarted control
    // plane evaluates the same alarm instance.
    let key = format!("green-5xx@{id}");
    wait_for("green-5xx to be OK on the canary", Duration::from_secs(30), || {
        let alarms = cluster.json(&["alarms", "list"]);
        let ok = alarms.as_array()?.iter().any(|a| a["key"] == key.as_str() && a["state"] == "OK");
        ok.then_some(())
    });
    assert_eq!(cluster.deployment(&id)["traffic"]["production_green_percent"], 10);
    let served_before_kill = requests_served(&cluster, "web-blue");
    cluster.kill_control_plane();
    cluster.up();

    wait_for("the deployment to finish after the restart", Duration::from_secs(90), || {
        let view = cluster.deployment(&id);
        (view["completed_at"].is_u64()).then_some(view)
    });
    let view = cluster.deployment(&id);
    assert_eq!(view["status"], "Succeeded", "{view}");
    assert!(view["error_code"].is_null(), "{view}");
    let samples = load.finish();
    assert_eq!(failures(&samples), Vec::<&Sample>::new(), "requests failed across the restart");
    let app_errors = cluster.json(&["alarms", "get", "app-errors"]);
    assert_ne!(app_errors[0]["state"], "ALARM", "old log lines were counted again: {app_errors}");

    // Every request the metric store counts for web-blue since the restart was served after the
    // kill: no one-second datapoint holds the load balancer's whole history.
    let served_since_kill = requests_served(&cluster, "web-blue") - served_before_kill;
    let metrics = cluster.json(&[
        "metrics",
        "RequestCount",
        "--target-group",
        "web-blue",
        "--statistic",
        "Sum",
        "--period",
        "1",
        "--since",
        "300",
    ]);
    let points = metrics["datapoints"].as_array().unwrap();
    assert!(!points.is_empty(), "web-blue served the release, yet has no datapoints: {metrics}");
    let counted: f64 = points.iter().map(|p| p["value"].as_f64().unwrap()).sum();
    assert!(
        counted <= served_since_kill as f64,
        "{counted} requests counted since the restart, but only {served_since_kill} were served \
         since the kill: {metrics}"
    );
}
