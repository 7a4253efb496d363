//! Green's failures in a row survive a restart of the control plane: they decide when green has
//! failed (three in a row, as ECS's circuit breaker counts them), so a restart between the second
//! and the third must not give a crashing green three more tries.

use std::time::Duration;

use crate::harness::*;
use crate::scheduler::pid_of_task;

/// `kill -9` of the one running green task that is not in `killed`, once it runs; waits until
/// the control plane has seen it stop.
fn crash_green_task(cluster: &Cluster, killed: &mut Vec<String>) {
    let (id, pid) = wait_for("a green task to run", Duration::from_secs(30), || {
        let tasks = cluster.json(&["tasks", "list", "--service", "web"]);
        tasks.as_array()?.iter().find_map(|t| {
            let id = t["id"].as_str()?;
            let green = t["task_definition"] == "web:2" && t["last_status"] == "RUNNING";
            (green && !killed.iter().any(|k| k == id))
                .then(|| Some((id.to_string(), pid_of_task(id)?)))
                .flatten()
        })
    });
    let killed_ok = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(killed_ok, "kill -9 {pid} (task {id})");
    wait_for("the control plane to see the task stop", Duration::from_secs(30), || {
        let tasks = cluster.json(&["tasks", "list", "--all"]);
        let task = tasks.as_array()?.iter().find(|t| t["id"] == id.as_str())?.clone();
        (task["last_status"] == "STOPPED").then_some(())
    });
    killed.push(id);
}

#[test]
fn green_failing_twice_before_a_restart_and_once_after_fails_the_deployment() {
    let mut cluster = Cluster::start(Options::default());
    // One task per task set, so that every green failure is one task's.
    let yaml = std::fs::read_to_string(cluster.path("cutover.yaml")).unwrap();
    std::fs::write(
        cluster.path("cutover.yaml"),
        yaml.replace("desired_count: 2", "desired_count: 1"),
    )
    .unwrap();
    cluster.cli_ok(&["apply", "-f", "cutover.yaml"]);
    wait_for("production to serve v1", Duration::from_secs(30), || {
        (get(cluster.prod, "/").ok()?.1 == "v1").then_some(())
    });
    // Green never passes its target group's health check, so Install waits for it (an hour) and
    // only its failures can end the deployment; nor does a healthy task reset the count.
    let taskdef = std::fs::read_to_string(cluster.path("taskdef-v2.json")).unwrap();
    let unhealthy = taskdef.replace(
        r#"{"name": "APP_VERSION", "value": "v2"}"#,
        r#"{"name": "APP_VERSION", "value": "v2"}, {"name": "FAIL_HEALTH", "value": "1"}"#,
    );
    std::fs::write(cluster.path("taskdef-v2-unhealthy.json"), unhealthy).unwrap();
    let created = cluster.json(&deploy_args("taskdef-v2-unhealthy.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();

    let mut killed = Vec::new();
    crash_green_task(&cluster, &mut killed);
    crash_green_task(&cluster, &mut killed);
    assert_eq!(cluster.deployment(&id)["status"], "InProgress", "two failures are not yet three");

    cluster.kill_control_plane();
    cluster.up();
    crash_green_task(&cluster, &mut killed);

    let view =
        wait_for("the third failure to fail the deployment", Duration::from_secs(30), || {
            let view = cluster.deployment(&id);
            view["completed_at"].is_u64().then_some(view)
        });
    assert_eq!(view["status"], "Failed", "{view}");
    let message = view["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("green tasks failed 3 times in a row"), "{view}");
    assert_eq!(view["rolled_back"], true, "{view}");
    assert_eq!(get(cluster.prod, "/").unwrap().1, "v1");
}
