//! The service scheduler keeps the desired count.

use std::time::Duration;

use crate::harness::*;

#[test]
fn a_task_that_exits_is_replaced_and_the_replacement_is_listed() {
    let cluster = Cluster::start(Options::default());
    cluster.apply_and_wait_for_v1();
    let tasks = cluster.json(&["tasks", "list", "--service", "web"]);
    let victim = tasks[0].clone();
    let victim_id = victim["id"].as_str().unwrap().to_string();
    let pid = pid_of_task(&victim_id).expect("the task's process");

    let load = Load::start(cluster.prod, 2);
    // SIGKILL: the task dies without draining, as a crash would.
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );

    let replacement =
        wait_for("a replacement task to run and be healthy", Duration::from_secs(30), || {
            let tasks = cluster.json(&["tasks", "list", "--service", "web"]);
            let running: Vec<serde_json::Value> = tasks
                .as_array()?
                .iter()
                .filter(|t| t["last_status"] == "RUNNING" && t["health"] == "HEALTHY")
                .cloned()
                .collect();
            (running.len() == 2 && running.iter().all(|t| t["id"] != victim_id.as_str()))
                .then_some(running)
        });
    assert_eq!(replacement.len(), 2);
    let all = cluster.json(&["tasks", "list", "--all"]);
    let stopped = all
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == victim_id.as_str())
        .expect("the dead task is listed");
    assert_eq!(stopped["last_status"], "STOPPED");
    assert!(stopped["stopped_reason"].as_str().unwrap().contains("exit"), "{stopped}");

    // Killing a target fails the requests already on their way to it (as on ALB); once the
    // replacement serves, no request fails.
    let mark = load.samples().len();
    wait_for("300 more requests", Duration::from_secs(30), || {
        (load.samples().len() > mark + 300).then_some(())
    });
    let samples = load.finish();
    assert!(
        failures(&samples[mark..]).is_empty(),
        "requests fail after the replacement: {:?}",
        failures(&samples[mark..])
    );
    // Only those: a request that finds the dead task's port refusing connections moves on to the
    // other task (the load balancer's retry on a refused connect), so with two clients sending one
    // request at a time, at most one request each was lost in flight, plus one each sent on a
    // kept-alive connection the load balancer had not yet seen close.
    let failed = failures(&samples[..mark]);
    assert!(failed.len() <= 4, "{} requests failed after the task died: {failed:?}", failed.len());
}

#[test]
fn stop_without_rollback_keeps_the_split_until_rolled_back() {
    let cluster = Cluster::start(Options {
        config: "{ name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 30s }",
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("the canary step", Duration::from_secs(30), || {
        (cluster.deployment(&id)["traffic"]["production_green_percent"] == 20).then_some(())
    });
    let view = cluster.json(&["deployments", "stop", &id, "--no-rollback"]);
    assert_eq!(view["status"], "Stopped");
    assert_eq!(view["error_code"], "MANUAL_STOP");
    assert_eq!(
        view["traffic"]["production_green_percent"], 20,
        "stop without rollback leaves the split: {view}"
    );

    // A new deployment is refused until the leftover green is dealt with.
    let output = cluster.cli(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains(&format!("cutover deployments rollback {id}"))
    );

    let view = cluster.json(&["deployments", "rollback", &id]);
    assert_eq!(view["traffic"]["production_green_percent"], 0);
    assert_eq!(view["rolled_back"], true);
    wait_for("production to be all blue and green gone", Duration::from_secs(30), || {
        let all_v1 = (0..20).all(|_| get(cluster.prod, "/").is_ok_and(|r| r.1 == "v1"));
        (all_v1 && cluster.app_processes() == 2).then_some(())
    });
}

/// The pid of a process task, from its environment.
pub fn pid_of_task(task_id: &str) -> Option<u32> {
    let needle = format!("CUTOVER_TASK_ID={task_id}");
    std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()).find_map(|entry| {
        let pid: u32 = entry.file_name().to_string_lossy().parse().ok()?;
        let environ = std::fs::read(entry.path().join("environ")).ok()?;
        environ.split(|b| *b == 0).any(|var| var == needle.as_bytes()).then_some(pid)
    })
}
