//! A deployment group's `install_timeout`: how long green has to become healthy.

use std::time::{Duration, Instant};

use crate::harness::*;

/// A green whose every target fails the target group's health check fails the deployment once
/// the group's install timeout has passed (4 s here, not the default hour), naming it; production
/// never leaves blue.
#[test]
fn a_green_that_never_becomes_healthy_fails_after_the_group_s_install_timeout() {
    let cluster =
        Cluster::start(Options { group_extra: "    install_timeout: 4s", ..Options::default() });
    cluster.apply_and_wait_for_v1();
    // v2 whose /health answers 503: its tasks run, and the load balancer never finds them healthy.
    let unhealthy = std::fs::read_to_string(cluster.path("taskdef-v2.json")).unwrap().replace(
        r#"{"name": "APP_VERSION", "value": "v2"}"#,
        r#"{"name": "APP_VERSION", "value": "v2"}, {"name": "FAIL_HEALTH", "value": "1"}"#,
    );
    std::fs::write(cluster.path("taskdef-unhealthy.json"), unhealthy).unwrap();

    let started = Instant::now();
    let output = cluster.cli(&deploy_args("taskdef-unhealthy.json", "appspec.yaml", &["--wait"]));
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let id = cluster.json(&["deployments", "list"])[0]["id"].as_str().unwrap().to_string();
    let view = cluster.deployment(&id);
    assert_eq!(view["status"], "Failed", "{view}");
    let message = view["error_message"].as_str().unwrap();
    assert!(message.contains("(install timeout 4s)"), "{message}");
    assert!(message.starts_with("green tasks were not healthy after 4"), "{message}");
    assert!(took >= Duration::from_secs(4), "failed before its install timeout: {took:?}");
    assert!(took < Duration::from_secs(60), "the group's install timeout was not used: {took:?}");
    assert_eq!(get(cluster.prod, "/").unwrap().1, "v1", "production left blue");
}
