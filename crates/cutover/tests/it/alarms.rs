//! Alarms stop and roll back deployments: a 5xx alarm on green, an alarm on `Error` log lines,
//! an alarm already in ALARM, rollback during the termination wait, and a flap inside M of N.

use std::time::Duration;

use crate::harness::*;

const SLOW_CANARY: &str =
    "{ name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 20s }";
const ROLLBACK_ON_ALARM: &str = "[DEPLOYMENT_FAILURE, DEPLOYMENT_STOP_ON_ALARM]";

const GREEN_5XX: &str = r#"alarms:
  - { name: green-5xx, metric: HTTPCode_Target_5XX_Count, target_group: green, statistic: Sum, period: 1s, evaluation_periods: 1, threshold: 1, comparison: ">=", treat_missing_data: notBreaching }
"#;

fn deploy(cluster: &Cluster, taskdef: &str) -> (std::process::Output, String) {
    let output = cluster.cli(&deploy_args(taskdef, "appspec.yaml", &["--wait"]));
    let id = cluster.json(&["deployments", "list"])[0]["id"].as_str().unwrap().to_string();
    (output, id)
}

fn effects(cluster: &Cluster, id: &str) -> Vec<String> {
    let output = cluster.cli(&["deployments", "watch", id, "--output", "json"]);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["message"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_5xx_alarm_on_green_rolls_the_canary_back_before_the_next_shift() {
    let cluster = Cluster::start(Options {
        config: SLOW_CANARY,
        auto_rollback: ROLLBACK_ON_ALARM,
        group_extra: "    alarms: [green-5xx]",
        top_extra: GREEN_5XX.into(),
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let load = Load::start(cluster.prod, 4);
    let (output, id) = deploy(&cluster, "taskdef-v2-errors.json");
    let samples = load.finish();
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stdout));

    let view = cluster.deployment(&id);
    assert_eq!(view["status"], "Stopped", "{view}");
    assert_eq!(view["error_code"], "ALARM_ACTIVE");
    assert_eq!(view["rolled_back"], true);
    assert_eq!(view["traffic"]["production_green_percent"], 0);
    let message = view["error_message"].as_str().unwrap();
    assert!(message.contains("green-5xx"), "the reason names the alarm: {message}");
    assert!(message.contains("threshold"), "the reason carries the threshold: {message}");
    assert!(
        message.contains("requests on web-green"),
        "the reason counts green's requests: {message}"
    );

    // Production never went past the canary step, and went back to blue within the 20 s step.
    let history = effects(&cluster, &id);
    assert!(
        !history.iter().any(|m| m.contains("green=100%")),
        "production reached 100% green: {history:?}"
    );
    let v2: Vec<&Sample> = samples.iter().filter(|s| s.version == "v2").collect();
    assert!(!v2.is_empty(), "green never served production");
    let window = v2.last().unwrap().at - v2.first().unwrap().at;
    assert!(window < Duration::from_secs(10), "green served production for {window:?}");
    wait_for("green's tasks to stop", Duration::from_secs(30), || {
        (cluster.app_processes() == 2).then_some(())
    });
    assert_eq!(get(cluster.prod, "/").unwrap().1, "v1");
}

#[test]
fn an_alarm_on_error_log_lines_rolls_the_canary_back() {
    let cluster = Cluster::start(Options {
        config: SLOW_CANARY,
        auto_rollback: ROLLBACK_ON_ALARM,
        group_extra: "    alarms: [app-errors]",
        top_extra: r#"metric_filters:
  - { name: app-errors, service: web, pattern: Error, metric: AppErrors, default_value: 0 }
alarms:
  - { name: app-errors, metric: AppErrors, service: web, statistic: Sum, period: 1s, evaluation_periods: 1, threshold: 1, comparison: ">=", treat_missing_data: notBreaching }
"#.into(),
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let load = Load::start(cluster.prod, 4);
    let (output, id) = deploy(&cluster, "taskdef-v2-errors.json");
    load.finish();
    assert_eq!(output.status.code(), Some(1));
    let view = cluster.deployment(&id);
    assert_eq!(view["status"], "Stopped", "{view}");
    assert_eq!(view["error_code"], "ALARM_ACTIVE");
    assert_eq!(view["rolled_back"], true);
    assert!(view["error_message"].as_str().unwrap().contains("app-errors"), "{view}");
    let alarm = cluster.json(&["alarms", "get", "app-errors"]);
    assert!(alarm[0]["history"].as_array().unwrap().iter().any(|t| t["to"] == "ALARM"), "{alarm}");
}

#[test]
fn an_alarm_already_in_alarm_blocks_a_deployment_unless_overridden() {
    let cluster = Cluster::start(Options {
        group_extra: "    alarms: [blue-has-hosts]",
        auto_rollback: ROLLBACK_ON_ALARM,
        // Always in ALARM while blue serves: a stand-in for an alarm still firing.
        top_extra: r#"alarms:
  - { name: blue-has-hosts, metric: HealthyHostCount, target_group: web-blue, statistic: Minimum, period: 1s, evaluation_periods: 1, threshold: 1, comparison: ">=" }
"#.into(),
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    wait_for("the alarm to be in ALARM", Duration::from_secs(20), || {
        (cluster.json(&["alarms", "get", "blue-has-hosts"])[0]["state"] == "ALARM").then_some(())
    });
    let output = cluster.cli(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("blue-has-hosts") && stderr.contains("--ignore-alarms"), "{stderr}");
    assert_eq!(cluster.json(&["deployments", "list"]).as_array().unwrap().len(), 0);

    cluster.cli_ok(&deploy_args("taskdef-v2.json", "appspec.yaml", &["--wait", "--ignore-alarms"]));
    assert_eq!(get(cluster.prod, "/").unwrap().1, "v2");
}

#[test]
fn an_alarm_during_the_termination_wait_rolls_back_to_the_warm_blue() {
    let cluster = Cluster::start(Options {
        config: "{ name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 1s }",
        termination_wait: "30s",
        auto_rollback: ROLLBACK_ON_ALARM,
        group_extra: "    alarms: [green-5xx]",
        top_extra: GREEN_5XX.into(),
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("the termination wait (Baking)", Duration::from_secs(30), || {
        (cluster.deployment(&id)["status"] == "Baking").then_some(())
    });
    // Baking begins once all of production is ordered onto green; the data plane serves that
    // table a moment later (the rollout does not wait for its acknowledgement).
    wait_for("production on v2", Duration::from_secs(10), || {
        (get(cluster.prod, "/").ok()?.1 == "v2").then_some(())
    });

    // Green misbehaves while blue is still warm.
    for _ in 0..5 {
        let _ = get(cluster.prod, "/fail");
    }
    wait_for("the rollback", Duration::from_secs(20), || {
        cluster.deployment(&id)["completed_at"].is_u64().then_some(())
    });
    let view = cluster.deployment(&id);
    assert_eq!(view["status"], "Stopped", "{view}");
    assert_eq!(view["rolled_back"], true);
    wait_for("production back on v1", Duration::from_secs(10), || {
        (get(cluster.prod, "/").ok()?.1 == "v1").then_some(())
    });
}

#[test]
fn an_alarm_that_flaps_once_inside_m_of_n_does_not_roll_back() {
    let cluster = Cluster::start(Options {
        config: "{ name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 8s }",
        auto_rollback: ROLLBACK_ON_ALARM,
        group_extra: "    alarms: [green-5xx-2-of-3]",
        top_extra: r#"alarms:
  - { name: green-5xx-2-of-3, metric: HTTPCode_Target_5XX_Count, target_group: green, statistic: Sum, period: 1s, evaluation_periods: 3, datapoints_to_alarm: 2, threshold: 1, comparison: ">=", treat_missing_data: notBreaching }
"#.into(),
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("the canary step", Duration::from_secs(30), || {
        (cluster.deployment(&id)["traffic"]["production_green_percent"] == 20).then_some(())
    });
    // One bad second on green (through the test listener, which serves green): 1 of 3 breaching.
    let _ = get(cluster.test, "/fail");
    wait_for("the deployment to finish", Duration::from_secs(60), || {
        cluster.deployment(&id)["completed_at"].is_u64().then_some(())
    });
    let view = cluster.deployment(&id);
    assert_eq!(
        view["status"], "Succeeded",
        "one breaching datapoint of three must not stop it: {view}"
    );
    let alarm = cluster.json(&["alarms", "list"]);
    assert!(
        alarm.as_array().unwrap().iter().all(|a| a["history"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["to"] != "ALARM")),
        "{alarm}"
    );
}

#[test]
fn a_client_s_malformed_request_to_green_does_not_trip_an_elb_5xx_alarm() {
    let cluster = Cluster::start(Options {
        config: "{ name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 2s }",
        auto_rollback: ROLLBACK_ON_ALARM,
        group_extra: "    alarms: [green-elb-5xx]\n    ready_wait: 10m\n    preview: { header: X-Deploy-Version }",
        top_extra: r#"alarms:
  - { name: green-elb-5xx, metric: HTTPCode_ELB_5XX_Count, target_group: green, statistic: Sum, period: 1s, evaluation_periods: 1, threshold: 1, comparison: ">=", treat_missing_data: notBreaching }
"#
        .into(),
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("green to serve the test listener", Duration::from_secs(30), || {
        (get(cluster.test, "/").ok()?.1 == "v2").then_some(())
    });

    // The request of issue 13: pinned to green by the preview header, chunked, with an invalid
    // chunk size. It is the client's 400, never a 5xx of green's target group.
    for _ in 0..5 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(cluster.prod).unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nHost: shop\r\nX-Deploy-Version: green\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
    }
    // Green's target group counted the five requests: the alarm has seen them.
    wait_for("green's requests in the metric store", Duration::from_secs(10), || {
        let view = cluster.json(&[
            "metrics",
            "RequestCount",
            "--target-group",
            "web-green",
            "--since",
            "60",
        ]);
        let sum: f64 =
            view["datapoints"].as_array()?.iter().filter_map(|d| d["value"].as_f64()).sum();
        (sum >= 5.0).then_some(())
    });
    cluster.cli_ok(&["deployments", "continue", &id]);
    wait_for("the deployment to end", Duration::from_secs(60), || {
        cluster.deployment(&id)["completed_at"].is_u64().then_some(())
    });
    let view = cluster.deployment(&id);
    assert_eq!(view["status"], "Succeeded", "{view}");
    assert_eq!(get(cluster.prod, "/").unwrap().1, "v2");
}
