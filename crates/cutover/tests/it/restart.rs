//! `kill -9` of the control plane in the middle of a deployment.

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
