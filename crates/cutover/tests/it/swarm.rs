//! The Swarm runtime end to end, on the real three-worker swarm of `scripts/cluster up` (which
//! `.ci/run` starts): the real `cutover` binary places a service's tasks on the workers, reports
//! their overlay addresses, replaces a task killed on its node, and adopts its Swarm services
//! after a `kill -9`. These tests fail, they do not skip, when the cluster is not up.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;
use crate::swarm_lb_fixture::{registry_image, require_cluster};

const LIMIT: Duration = Duration::from_secs(90);

/// A cutover with a service `api` of four tasks on the swarm (no load balancer: the data plane
/// runs on this machine, which does not reach the overlay).
fn swarm_cluster() -> Cluster {
    require_cluster();
    let image = registry_image();
    let cluster = Cluster::start(Options::default());
    std::fs::write(
        cluster.path("api-taskdef.json"),
        format!(
            r#"{{"family": "api", "containerDefinitions": [{{"name": "api", "image": "{image}",
                "essential": true, "stopTimeout": 2, "portMappings": [{{"containerPort": 8080}}],
                "environment": [{{"name": "APP_VERSION", "value": "v1"}}]}}]}}"#
        ),
    )
    .unwrap();
    std::fs::write(
        cluster.path("swarm.yaml"),
        "services:\n  - { name: api, runtime: swarm, task_definition: api-taskdef.json, desired_count: 4 }\n",
    )
    .unwrap();
    cluster
}

/// This installation's Swarm services, by name, with the node of each running task.
fn swarm_tasks(cluster: &Cluster) -> BTreeMap<String, String> {
    let instance =
        std::fs::read_to_string(cluster.data_dir().join("docker/instance-id")).unwrap_or_default();
    let output = Command::new("docker")
        .args([
            "service",
            "ls",
            "-q",
            "--filter",
            &format!("label=cutover.instance={}", instance.trim()),
        ])
        .output()
        .expect("docker service ls");
    let mut tasks = BTreeMap::new();
    for id in String::from_utf8_lossy(&output.stdout).lines() {
        let ps = Command::new("docker")
            .args([
                "service",
                "ps",
                id,
                "--filter",
                "desired-state=running",
                "--format",
                "{{.Name}} {{.Node}}",
            ])
            .output()
            .expect("docker service ps");
        for line in String::from_utf8_lossy(&ps.stdout).lines() {
            if let Some((name, node)) = line.split_once(' ') {
                tasks.insert(name.to_string(), node.to_string());
            }
        }
    }
    tasks
}

/// What cutover and Swarm say of this installation's tasks, for a timeout's message.
fn swarm_seen(cluster: &Cluster) -> String {
    let listed = cluster.cli(&["tasks", "list", "--all"]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let instance =
        std::fs::read_to_string(cluster.data_dir().join("docker/instance-id")).unwrap_or_default();
    let services = Command::new("docker")
        .args(["service", "ls", "-q", "--filter"])
        .arg(format!("label=cutover.instance={}", instance.trim()))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(String::from).collect())
        .unwrap_or_else(|_| Vec::<String>::new());
    let ps = Command::new("docker")
        .args([
            "service",
            "ps",
            "--no-trunc",
            "--format",
            "{{.Name}} {{.Node}} {{.CurrentState}} {{.Error}}",
        ])
        .args(&services)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        })
        .unwrap_or_default();
    format!("cutover tasks list --all:\n{listed}\ndocker service ps:\n{ps}")
}

/// `cutover tasks list` of service `api`: the running ones, by id, with their addresses.
fn running(cluster: &Cluster) -> BTreeMap<String, String> {
    let tasks = cluster.json(&["tasks", "list", "--service", "api"]);
    tasks
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["last_status"] == "RUNNING")
        .map(|t| {
            (t["id"].as_str().unwrap().to_string(), t["addr"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

fn on_overlay(addr: &str) -> bool {
    addr.starts_with("10.98.0.") && addr.ends_with(":8080")
}

#[test]
fn swarm_a_service_of_four_tasks_spreads_over_three_nodes_and_a_task_killed_on_its_node_is_replaced()
 {
    let cluster = swarm_cluster();
    let applied = std::time::Instant::now();
    cluster.cli_ok(&["apply", "-f", "swarm.yaml"]);
    let tasks = wait_for_or(
        "four running swarm tasks with overlay addresses",
        LIMIT,
        || {
            let tasks = running(&cluster);
            (tasks.len() == 4 && tasks.values().all(|a| on_overlay(a))).then_some(tasks)
        },
        || swarm_seen(&cluster),
    );
    println!("apply to four running swarm tasks: {:.1}s", applied.elapsed().as_secs_f64());
    let view = cluster.json(&["tasks", "list", "--service", "api"]);
    assert!(view.as_array().unwrap().iter().all(|t| t["runtime"] == "swarm"), "{view}");
    let placed = swarm_tasks(&cluster);
    let mut nodes: Vec<&String> = placed.values().collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes, ["node1", "node2", "node3"], "placed: {placed:?}");

    // Kill one task's container on its node, behind Swarm's and cutover's back.
    let (victim, _) = tasks.iter().next().unwrap();
    let service = Command::new("docker")
        .args(["service", "ls", "-q", "--filter", &format!("label=cutover.task-id={victim}")])
        .output()
        .unwrap();
    let service = String::from_utf8_lossy(&service.stdout).trim().to_string();
    let ps = Command::new("docker")
        .args([
            "service",
            "ps",
            &service,
            "--format",
            "{{.Node}}",
            "--filter",
            "desired-state=running",
        ])
        .output()
        .unwrap();
    let node = String::from_utf8_lossy(&ps.stdout).trim().to_string();
    let node_engine = format!("unix:///run/cutover-cluster/{node}.sock");
    // Swarm reports a task once its container is starting: wait until it runs.
    let container = wait_for("the task's container running on its node", LIMIT, || {
        let ids = Command::new("docker")
            .args(["-H", &node_engine, "ps", "-q", "--filter"])
            .arg(format!("label=cutover.task-id={victim}"))
            .output()
            .ok()?;
        let id = String::from_utf8_lossy(&ids.stdout).trim().to_string();
        (!id.is_empty()).then_some(id)
    });
    let kill =
        Command::new("docker").args(["-H", &node_engine, "kill", &container]).status().unwrap();
    assert!(kill.success());
    let killed = std::time::Instant::now();

    let reason = wait_for("the killed task reported stopped with Swarm's reason", LIMIT, || {
        let all = cluster.json(&["tasks", "list", "--service", "api", "--all"]);
        let task = all.as_array()?.iter().find(|t| t["id"] == victim.as_str())?.clone();
        (task["last_status"] == "STOPPED")
            .then(|| task["stopped_reason"].as_str().unwrap_or("").to_string())
    });
    // Swarm's words, then the exit code as the engine words it for every runtime.
    assert_eq!(
        reason,
        format!("Swarm task failed on {node}: task: non-zero exit (137) (exit code 137)")
    );
    let after = wait_for("a replacement: four running tasks again", LIMIT, || {
        let tasks = running(&cluster);
        (tasks.len() == 4 && !tasks.contains_key(victim) && tasks.values().all(|a| on_overlay(a)))
            .then_some(tasks)
    });
    assert_eq!(after.keys().filter(|id| tasks.contains_key(*id)).count(), 3);
    println!("kill to a running replacement: {:.1}s", killed.elapsed().as_secs_f64());
}

#[test]
fn swarm_a_restarted_control_plane_adopts_its_swarm_services_and_duplicates_nothing() {
    let mut cluster = swarm_cluster();
    cluster.cli_ok(&["apply", "-f", "swarm.yaml"]);
    let before = wait_for("four running swarm tasks", LIMIT, || {
        let tasks = running(&cluster);
        (tasks.len() == 4 && tasks.values().all(|a| on_overlay(a))).then_some(tasks)
    });
    cluster.kill_control_plane();
    // The tasks keep running without the control plane.
    assert_eq!(swarm_tasks(&cluster).len(), 4);
    cluster.up();
    wait_for("the same four tasks, adopted", LIMIT, || (running(&cluster) == before).then_some(()));
    assert_eq!(swarm_tasks(&cluster).len(), 4, "no Swarm service was started twice");
    // `down` removes every Swarm service of the installation.
    cluster.cli_ok(&["down"]);
    wait_for("its swarm services gone", LIMIT, || swarm_tasks(&cluster).is_empty().then_some(()));
}
