//! What the engine decides by survives `kill -9` of the control plane: green's failures in a row
//! (three fail green, so a restart between the second and the third must not give a crashing
//! green three more tries), and the routing version at which a draining task left the table (so
//! a restart does not keep a task the load balancer has released running until its
//! deregistration delay ends).

use std::io::{Read, Write};
use std::net::TcpStream;
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

/// The tasks of task definition `web:1` (blue), by id, with their status.
fn blue_tasks(cluster: &Cluster) -> Vec<(String, String)> {
    let tasks = cluster.json(&["tasks", "list", "--all"]);
    let blue = tasks.as_array().unwrap().iter().filter(|t| t["task_definition"] == "web:1");
    blue.map(|t| (t["id"].as_str().unwrap().into(), t["last_status"].as_str().unwrap().into()))
        .collect()
}

#[test]
fn a_task_draining_across_a_restart_stops_once_the_load_balancer_releases_it() {
    let mut cluster = Cluster::start(Options::default());
    // A deregistration delay far longer than the test: only the load balancer letting go of a
    // draining task can end its drain in time.
    let yaml = std::fs::read_to_string(cluster.path("cutover.yaml")).unwrap();
    let yaml = yaml.replace("deregistration_delay: 1s", "deregistration_delay: 300s");
    std::fs::write(cluster.path("cutover.yaml"), yaml).unwrap();
    cluster.apply_and_wait_for_v1();
    // A request in flight on one of blue's tasks keeps that target draining in the load balancer
    // (which waits for the target's answer even when the client has gone) until it is answered,
    // well after the restart below.
    let mut slow = TcpStream::connect(cluster.prod).unwrap();
    slow.write_all(b"GET /slow?ms=30000 HTTP/1.1\r\nHost: web\r\n\r\n").unwrap();
    cluster.cli_ok(&deploy_args(
        "taskdef-v2.json",
        "appspec.yaml",
        &["--config", "CodeDeployDefault.ECSAllAtOnce", "--wait"],
    ));
    let draining =
        wait_for("one blue task to drain, the other to stop", Duration::from_secs(60), || {
            let blue = blue_tasks(&cluster);
            let draining: Vec<_> =
                blue.iter().filter(|(_, status)| status == "DEACTIVATING").collect();
            let stopped = blue.iter().filter(|(_, status)| status == "STOPPED").count();
            (draining.len() == 1 && stopped == 1).then(|| draining[0].0.clone())
        });

    cluster.kill_control_plane();
    cluster.up();
    let status = |cluster: &Cluster| {
        blue_tasks(cluster).into_iter().find(|(id, _)| *id == draining).map(|(_, status)| status)
    };
    assert_eq!(status(&cluster).as_deref(), Some("DEACTIVATING"), "the request still holds it");

    // The request is answered: the load balancer lets go of the target, and the task stops long
    // before its deregistration delay ends.
    slow.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut answer = [0u8; 12];
    slow.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    wait_for("the released task to stop", Duration::from_secs(20), || {
        (status(&cluster).as_deref() == Some("STOPPED")).then_some(())
    });
}
