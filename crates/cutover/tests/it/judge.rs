//! The canary judge end to end: a green that answers 200 but 30 % slower than blue is rolled
//! back by the judge, which names both versions' numbers; a green as fast as blue is judged not
//! worse and released; a judge of mirrored traffic rolls a slower green back during its shadow
//! phase, before it serves any client.

use std::time::{Duration, Instant};

use crate::harness::*;

/// 50 % of production on green for long enough to judge several periods, and roll back on an
/// alarm.
const CANARY: &str = "{ name: quick-canary, type: TimeBasedCanary, percentage: 50, interval: 40s }";
const ROLLBACK_ON_ALARM: &str = "[DEPLOYMENT_FAILURE, DEPLOYMENT_STOP_ON_ALARM]";
/// Green may be at most 10 % slower; 2 of the last 3 periods of 2 s judged worse fire.
const LATENCY_JUDGE: &str = r#"alarms:
  - { name: latency-judge, kind: canary-judge, metric: latency, tolerance: 10%, confidence: 0.99, min_samples: 50, period: 2s, evaluation_periods: 3, datapoints_to_alarm: 2 }
"#;
/// Blue answers `/` in 20 ms.
pub(crate) const BLUE_LATENCY_MS: u64 = 20;

/// A shadow phase copying all of production to green for a minute, then a canary.
const SHADOWED_CANARY: &str = "{ name: quick-canary, type: TimeBasedCanary, percentage: 50, \
                               interval: 40s, mirror: { percentage: 100, duration: 60s } }";
/// The latency judge of `LATENCY_JUDGE`, on green's answers to the copies.
const SHADOW_JUDGE: &str = r#"alarms:
  - { name: shadow-judge, kind: canary-judge, metric: latency, source: mirrored, tolerance: 10%, confidence: 0.99, min_samples: 50, period: 2s, evaluation_periods: 3, datapoints_to_alarm: 2 }
"#;

/// A cluster whose v1 answers in 20 ms, with `taskdef-v2-{ms}.json` for each green latency.
pub(crate) fn cluster(green_latencies_ms: &[u64]) -> Cluster {
    cluster_with(
        Options {
            config: CANARY,
            auto_rollback: ROLLBACK_ON_ALARM,
            group_extra: "    alarms: [latency-judge]",
            top_extra: LATENCY_JUDGE.into(),
            ..Options::default()
        },
        green_latencies_ms,
    )
}

/// [`cluster`] with `options`.
fn cluster_with(options: Options, green_latencies_ms: &[u64]) -> Cluster {
    let cluster = Cluster::start(options);
    let with_latency = |taskdef: &str, ms: u64| {
        let version = if taskdef == "taskdef.json" { "v1" } else { "v2" };
        let text = std::fs::read_to_string(cluster.path(taskdef)).unwrap();
        let set = format!(r#"{{"name": "APP_VERSION", "value": "{version}"}}"#);
        assert!(text.contains(&set), "{text}");
        text.replace(&set, &format!(r#"{set}, {{"name": "LATENCY_MS", "value": "{ms}"}}"#))
    };
    std::fs::write(cluster.path("taskdef.json"), with_latency("taskdef.json", BLUE_LATENCY_MS))
        .unwrap();
    for &ms in green_latencies_ms {
        let text = with_latency("taskdef-v2.json", ms);
        std::fs::write(cluster.path(&format!("taskdef-v2-{ms}.json")), text).unwrap();
    }
    cluster.apply_and_wait_for_v1();
    cluster
}

/// Polls the deployment until `done` says so, or fails after `timeout` with the last view seen.
fn wait_for_view(
    cluster: &Cluster,
    id: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let view = cluster.deployment(id);
        if done(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; the deployment last was {view:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_green_thirty_percent_slower_that_answers_200_is_rolled_back_by_the_judge_naming_both_sides() {
    let cluster = cluster(&[26]);
    let load = Load::start(cluster.prod, 4);
    let created = cluster.json(&deploy_args("taskdef-v2-26.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    let view =
        wait_for_view(&cluster, &id, "the deployment to end", Duration::from_secs(120), |v| {
            v["completed_at"].is_u64()
        });
    let samples = load.finish();

    assert_eq!(view["status"], "Stopped", "{view:#}");
    assert_eq!(view["error_code"], "ALARM_ACTIVE", "{view:#}");
    assert_eq!(view["rolled_back"], true, "{view:#}");
    assert_eq!(view["traffic"]["production_green_percent"], 0, "{view:#}");
    // Slower, never failing: every answer the clients got was a 200.
    assert!(samples.iter().all(|s| s.status == 200), "{:?}", failures(&samples));
    assert!(samples.iter().any(|s| s.version == "v2"), "green never served production");

    // The reason names the judge, both versions' percentiles and the test's result.
    let message = view["error_message"].as_str().unwrap();
    for part in ["latency-judge", "web-green (green) vs web-blue (blue)", "p99", "Mann–Whitney U"]
    {
        assert!(message.contains(part), "the reason lacks `{part}`: {message}");
    }
    assert!(message.contains("is slower than blue beyond the 10% tolerance"), "{message}");
    let judged = &view["judges"][0];
    assert_eq!(judged["alarm"], "latency-judge", "{view:#}");
    assert_eq!(judged["judgement"]["verdict"], "worse", "{view:#}");
    // The rank test judges the whole distribution, which a fixed 6 ms more moves at its middle;
    // the tails are the machine's scheduling noise under load (a CI run once saw blue's p99
    // above green's in the period shown while the test rightly judged green slower).
    let p50 = |side: &str| judged["judgement"][side]["p50"].as_f64().unwrap();
    assert!(p50("green") > p50("blue") * 1.1, "green p50 {} vs blue {}", p50("green"), p50("blue"));
    assert!(judged["judgement"]["test"]["p_value"].as_f64().unwrap() < 0.01, "{view:#}");

    // `deployments get` shows the two versions side by side with the verdict.
    let text = cluster.cli_ok(&["deployments", "get", &id]);
    for part in ["CANARY JUDGE", "GREEN", "BLUE", "p99", "WORSE", "Mann–Whitney U"] {
        assert!(text.contains(part), "`deployments get` lacks `{part}`:\n{text}");
    }
    wait_for("production back on v1", Duration::from_secs(60), || {
        (get(cluster.prod, "/").ok()?.1 == "v1").then_some(())
    });
}

#[test]
fn a_green_as_fast_as_blue_is_judged_not_worse_and_released() {
    let cluster = cluster(&[BLUE_LATENCY_MS]);
    let load = Load::start(cluster.prod, 4);
    let created = cluster.json(&deploy_args(
        &format!("taskdef-v2-{BLUE_LATENCY_MS}.json"),
        "appspec.yaml",
        &[],
    ));
    let id = created["id"].as_str().unwrap().to_string();
    // The judge compares the two versions while both serve production.
    let judged = wait_for_view(
        &cluster,
        &id,
        "a canary period judged not worse",
        Duration::from_secs(90),
        |v| v["judges"][0]["judgement"]["verdict"] == "not_worse",
    );
    let judgement = &judged["judges"][0]["judgement"];
    assert!(judgement["green"]["timed"].as_u64().unwrap() >= 50, "{judged:#}");
    assert!(judgement["blue"]["timed"].as_u64().unwrap() >= 50, "{judged:#}");

    let view =
        wait_for_view(&cluster, &id, "the deployment to end", Duration::from_secs(120), |v| {
            v["completed_at"].is_u64()
        });
    let samples = load.finish();
    assert_eq!(view["status"], "Succeeded", "{view:#}");
    assert!(samples.iter().all(|s| s.status == 200), "{:?}", failures(&samples));
    let alarm = cluster.json(&["alarms", "list"]);
    let went_to_alarm = alarm
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["history"].as_array().is_some_and(|h| h.iter().any(|t| t["to"] == "ALARM")));
    assert!(!went_to_alarm, "the judge fired on a healthy green: {alarm:#}");
}

#[test]
fn a_judge_of_mirrored_traffic_rolls_a_slower_green_back_before_it_serves_any_client() {
    let cluster = cluster_with(
        Options {
            config: SHADOWED_CANARY,
            auto_rollback: ROLLBACK_ON_ALARM,
            group_extra: "    alarms: [shadow-judge]",
            top_extra: SHADOW_JUDGE.into(),
            ..Options::default()
        },
        &[26],
    );
    let load = Load::start(cluster.prod, 4);
    let output = cluster.cli(&deploy_args("taskdef-v2-26.json", "appspec.yaml", &["--wait"]));
    let id = cluster.json(&["deployments", "list"])[0]["id"].as_str().unwrap().to_string();
    let samples = load.finish();

    let view = cluster.deployment(&id);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{view:#}");
    assert_eq!(view["status"], "Stopped", "{view:#}");
    assert_eq!(view["error_code"], "ALARM_ACTIVE", "{view:#}");
    assert_eq!(view["rolled_back"], true, "{view:#}");
    let message = view["error_message"].as_str().unwrap();
    for part in ["shadow-judge", "answering copies of production's requests", "Mann–Whitney U"] {
        assert!(message.contains(part), "the reason lacks `{part}`: {message}");
    }
    let judged = &view["judges"][0];
    assert_eq!(judged["judgement"]["verdict"], "worse", "{view:#}");
    assert_eq!(judged["judgement"]["criteria"]["source"], "mirrored", "{view:#}");
    // Green's side is its answers to the copies of the period, blue's its clients'.
    let copies = judged["mirrored"]["copies"].as_u64().expect("the period's copies");
    assert_eq!(judged["judgement"]["green"]["requests"], copies, "{view:#}");
    let p50 = |side: &str| judged["judgement"][side]["p50"].as_f64().unwrap();
    assert!(p50("green") > p50("blue") * 1.1, "green p50 {} vs blue {}", p50("green"), p50("blue"));
    assert!(stdout.contains("canary judge shadow-judge: green, answering copies"), "{stdout}");

    // No client ever got green's answer: at green's own server, copies only.
    assert!(
        samples.iter().all(|s| s.status == 200 && s.version == "v1"),
        "{:?}",
        failures(&samples)
    );
    let green = view["task_definition"].as_str().expect("the deployment's task definition");
    let (at_green, served) = crate::shadow_traffic::green_root_requests(&cluster, green);
    assert!(!at_green.is_empty(), "green got copies");
    assert_eq!(served, Vec::<String>::new(), "green served a client's request");
}
