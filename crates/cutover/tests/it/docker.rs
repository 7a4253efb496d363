//! The Docker runtime end to end: every task a real container on the real engine, with its own
//! IP on cutover's network, registered in the target group as `containerIP:containerPort`.

use std::time::Duration;

use crate::harness::*;

fn docker_cluster(config: &'static str) -> Cluster {
    Cluster::start(Options { docker: true, config, ..Options::default() })
}

const CANARY: &str = "{ name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 3s }";

#[test]
fn docker_canary_release_then_a_crashed_container_and_a_missing_image() {
    let cluster = docker_cluster(CANARY);
    cluster.apply_and_wait_for_v1();
    let tasks = cluster.json(&["tasks", "list"]);
    for task in tasks.as_array().unwrap() {
        let addr = task["addr"].as_str().unwrap();
        assert!(!addr.starts_with("127."), "a container task has its own IP, not loopback: {addr}");
    }
    assert_eq!(cluster.containers().len(), 2);

    // v1 → v2 through the canary, under load.
    let load = Load::start(cluster.prod, 4);
    cluster.cli_ok(&deploy_args("taskdef-v2.json", "appspec.yaml", &["--wait"]));
    let samples = load.finish();
    assert_eq!(failures(&samples), Vec::<&Sample>::new());
    let first_v2 =
        samples.iter().position(|s| s.version == "v2").expect("production never served v2");
    let last_v1 =
        samples.iter().rposition(|s| s.version == "v1").expect("production never served v1");
    assert!(first_v2 < last_v1, "the split never held both versions");
    assert_eq!(samples.last().unwrap().version, "v2");
    wait_for("blue's containers to go", Duration::from_secs(60), || {
        (cluster.containers().len() == 2).then_some(())
    });

    // A container killed by hand is replaced by the scheduler.
    let victim = cluster.containers()[0].clone();
    assert!(
        std::process::Command::new("docker").args(["kill", &victim]).status().unwrap().success()
    );
    wait_for("a replacement container to be healthy", Duration::from_secs(60), || {
        let containers = cluster.containers();
        let tasks = cluster.json(&["tasks", "list", "--service", "web"]);
        let healthy = tasks
            .as_array()?
            .iter()
            .filter(|t| t["last_status"] == "RUNNING" && t["health"] == "HEALTHY")
            .count();
        (containers.len() == 2 && !containers.contains(&victim) && healthy == 2).then_some(())
    });

    // An image that cannot be pulled fails the deployment with the engine's own message, and
    // production stays on v2.
    let output =
        cluster.cli(&deploy_args("taskdef-missing-image.json", "appspec.yaml", &["--wait"]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let id = cluster.json(&["deployments", "list"])[0]["id"].as_str().unwrap().to_string();
    let view = cluster.deployment(&id);
    assert_eq!(view["status"], "Failed", "{view}");
    let message = view["error_message"].as_str().unwrap();
    assert!(
        message.contains("cutover-e2e/does-not-exist"),
        "the reason names the image: {message}"
    );
    assert_eq!(view["rolled_back"], true);
    assert_eq!(get(cluster.prod, "/").unwrap().1, "v2");
}

#[test]
fn docker_green_failing_its_container_health_check_never_gets_production_traffic() {
    let cluster = docker_cluster(CANARY);
    cluster.apply_and_wait_for_v1();
    let load = Load::start(cluster.prod, 2);
    let output = cluster.cli(&deploy_args("taskdef-v3.json", "appspec.yaml", &["--wait"]));
    let samples = load.finish();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(samples.iter().all(|s| s.version == "v1"), "production served the unhealthy v3");
    assert_eq!(failures(&samples), Vec::<&Sample>::new());
    let id = cluster.json(&["deployments", "list"])[0]["id"].as_str().unwrap().to_string();
    let view = cluster.deployment(&id);
    assert_eq!(view["status"], "Failed", "{view}");
    assert_eq!(view["rolled_back"], true);
    assert!(view["error_message"].as_str().unwrap().contains("health check"), "{view}");
    wait_for("v3's containers to be removed", Duration::from_secs(60), || {
        (cluster.containers().len() == 2).then_some(())
    });
}

#[test]
fn docker_control_plane_killed_mid_deployment_adopts_its_containers() {
    let mut cluster = docker_cluster(
        "{ name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 6s }",
    );
    cluster.apply_and_wait_for_v1();
    let load = Load::start(cluster.prod, 2);
    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("the canary step", Duration::from_secs(60), || {
        (cluster.deployment(&id)["traffic"]["production_green_percent"] == 20).then_some(())
    });
    let before: Vec<String> = cluster.containers();
    assert_eq!(before.len(), 4);

    cluster.kill_control_plane();
    cluster.up();
    // Adopted: the same four containers, none started twice.
    let mut after = cluster.containers();
    let mut expected = before.clone();
    after.sort();
    expected.sort();
    assert_eq!(after, expected, "containers were replaced instead of adopted");

    wait_for("the deployment to finish", Duration::from_secs(90), || {
        cluster.deployment(&id)["completed_at"].is_u64().then_some(())
    });
    assert_eq!(cluster.deployment(&id)["status"], "Succeeded");
    let samples = load.finish();
    assert_eq!(failures(&samples), Vec::<&Sample>::new());
    wait_for("no stray containers", Duration::from_secs(60), || {
        (cluster.containers().len() == 2).then_some(())
    });
}
