//! The alarm window: an alarm is handed to a deployment only while the deployment watches alarms
//! (`rollout::Rollout::is_watching_alarms`), so an alarm in ALARM before the window opens stops
//! the deployment as soon as it does.

use std::time::Duration;

use crate::harness::*;

#[test]
fn an_alarm_in_alarm_during_the_ready_wait_without_a_test_listener_stops_the_deployment_once_traffic_shifts()
 {
    let cluster = Cluster::start(Options {
        termination_wait: "30s",
        auto_rollback: "[DEPLOYMENT_FAILURE, DEPLOYMENT_STOP_ON_ALARM]",
        group_extra: "    alarms: [green-has-hosts]\n    ready_wait: 10m",
        // In ALARM as soon as green has a healthy host: during the ready wait, where green
        // serves nobody without a test listener.
        top_extra: r#"alarms:
  - { name: green-has-hosts, metric: HealthyHostCount, target_group: green, statistic: Minimum, period: 1s, evaluation_periods: 1, threshold: 1, comparison: ">=" }
"#
        .into(),
        ..Options::default()
    });
    let file = cluster.dir.path().join("cutover.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    let without_test_listener: String = yaml
        .lines()
        .filter(|line| !line.contains("test_listener:") && !line.contains("{ name: test, port:"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(yaml.lines().count(), without_test_listener.lines().count() + 2);
    std::fs::write(&file, without_test_listener).unwrap();
    cluster.apply_and_wait_for_v1();

    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("the ready wait", Duration::from_secs(30), || {
        (cluster.deployment(&id)["status"] == "Ready").then_some(())
    });
    wait_for("the alarm on green to be in ALARM", Duration::from_secs(30), || {
        let views = cluster.json(&["alarms", "get", "green-has-hosts"]);
        views.as_array()?.iter().any(|v| v["state"] == "ALARM").then_some(())
    });
    // Polled a few times while still in the ready wait: the alarm stays in ALARM meanwhile.
    for _ in 0..3 {
        assert_eq!(cluster.deployment(&id)["status"], "Ready");
    }

    cluster.cli_ok(&["deployments", "continue", &id]);
    wait_for("the deployment to end", Duration::from_secs(60), || {
        cluster.deployment(&id)["completed_at"].is_u64().then_some(())
    });
    let view = cluster.deployment(&id);
    assert_eq!(view["status"], "Stopped", "{view}");
    assert_eq!(view["error_code"], "ALARM_ACTIVE", "{view}");
    assert_eq!(view["rolled_back"], true, "{view}");
    assert!(view["error_message"].as_str().unwrap().contains("green-has-hosts"), "{view}");
    wait_for("production back on v1", Duration::from_secs(10), || {
        (get(cluster.prod, "/").ok()?.1 == "v1").then_some(())
    });
}
