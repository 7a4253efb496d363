//! Retry on blue end to end: a green that fails every request behind a canary costs the clients
//! nothing, while its failures still trip the alarm that rolls it back.

use std::time::Duration;

use crate::harness::*;

/// Half of production on green for a minute: only the alarm ends the canary.
const HALF_CANARY: &str =
    "{ name: quick-canary, type: TimeBasedCanary, percentage: 50, interval: 60s }";

const GREEN_5XX: &str = r#"alarms:
  - { name: green-5xx, metric: HTTPCode_Target_5XX_Count, target_group: green, statistic: Sum, period: 1s, evaluation_periods: 1, threshold: 1, comparison: ">=", treat_missing_data: notBreaching }
"#;

/// The sum of `metric`'s one-second datapoints of `target_group` over the last five minutes.
fn metric_sum(cluster: &Cluster, metric: &str, target_group: &str) -> (f64, serde_json::Value) {
    let metrics = cluster.json(&[
        "metrics",
        metric,
        "--target-group",
        target_group,
        "--statistic",
        "Sum",
        "--period",
        "1",
        "--since",
        "300",
    ]);
    let sum = metrics["datapoints"]
        .as_array()
        .map_or(0.0, |points| points.iter().filter_map(|p| p["value"].as_f64()).sum());
    (sum, metrics)
}

/// Waits up to 60 s for `condition` to hold; on timeout, says what it saw last (its `Err`).
fn wait_until_ok<T>(what: &str, mut condition: impl FnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match condition() {
            Ok(value) => return value,
            Err(seen) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "timed out waiting for {what}; last seen:\n{seen}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_broken_green_behind_a_canary_fails_no_get_and_is_rolled_back() {
    let cluster = Cluster::start(Options {
        config: HALF_CANARY,
        auto_rollback: "[DEPLOYMENT_FAILURE, DEPLOYMENT_STOP_ON_ALARM]",
        // `retry_on_blue` is left out: it is on by default.
        group_extra: "    alarms: [green-5xx]",
        top_extra: GREEN_5XX.into(),
        ..Options::default()
    });
    // v2 answers every request but its health check with a 500.
    let broken = std::fs::read_to_string(cluster.path("taskdef-v2-errors.json"))
        .unwrap()
        .replace(r#""value": "0.3""#, r#""value": "1.0""#);
    assert!(broken.contains(r#""value": "1.0""#), "{broken}");
    std::fs::write(cluster.path("taskdef-v2-broken.json"), broken).unwrap();
    cluster.apply_and_wait_for_v1();

    let load = Load::start(cluster.prod, 4);
    let output = cluster.cli(&deploy_args("taskdef-v2-broken.json", "appspec.yaml", &["--wait"]));
    let id = cluster.json(&["deployments", "list"])[0]["id"].as_str().unwrap().to_string();
    // Requests after the rollback too: production serves them from blue alone.
    let mark = load.samples().len();
    wait_for("200 more requests after the rollback", Duration::from_secs(60), || {
        (load.samples().len() > mark + 200).then_some(())
    });
    let samples = load.finish();

    let view = cluster.deployment(&id);
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stdout));
    assert_eq!(view["status"], "Stopped", "{view}");
    assert_eq!(view["error_code"], "ALARM_ACTIVE", "{view}");
    assert_eq!(view["rolled_back"], true, "{view}");
    assert_eq!(view["traffic"]["production_green_percent"], 0, "{view}");
    assert!(view["error_message"].as_str().unwrap().contains("green-5xx"), "{view}");

    // Green failed every request it took, and each was answered by blue instead.
    assert_eq!(failures(&samples), Vec::<&Sample>::new(), "GETs failed at the client");
    let green_answers: Vec<&Sample> = samples.iter().filter(|s| s.version != "v1").collect();
    assert_eq!(green_answers, Vec::<&Sample>::new(), "a client got green's answer");

    // Green's failures are still green's, in the metrics the alarm watched, and each was retried.
    // (A snapshot may fall between a 500 and its retry: the next one has both.)
    let counted = wait_until_ok("every one of green's 500s to be counted as retried", || {
        let (green_5xx, metrics_5xx) =
            metric_sum(&cluster, "HTTPCode_Target_5XX_Count", "web-green");
        let (retried, metrics_retries) = metric_sum(&cluster, "RetryCount", "web-green");
        // At least: a green task stopped mid-request after the rollback is a 502, retried too.
        if green_5xx >= 1.0 && retried >= green_5xx {
            return Ok(retried);
        }
        Err(format!("5xx: {metrics_5xx}\nretries: {metrics_retries}"))
    });
    let (exhausted, metrics) = metric_sum(&cluster, "RetryBudgetExhaustedCount", "web-green");
    assert_eq!(exhausted, 0.0, "{counted} retried, but the budget ran out: {metrics}");
}
