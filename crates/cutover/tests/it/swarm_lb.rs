//! The load balancer on every node of the swarm, end to end on the real three-worker swarm of
//! `scripts/cluster up`: the real `cutover up` runs its data plane as a global Swarm service
//! (the image built from the `cutover` under test by `scripts/swarm-lb-image`), pushes every
//! routing table to each node's instance, and clients call production on the nodes' own
//! addresses. These tests fail, they do not skip, when the cluster is not up.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::swarm_lb_fixture::*;

#[test]
fn swarm_lb_a_canary_served_by_every_node_moves_on_two_nodes_with_no_failed_request_and_a_rollback_reaches_all()
 {
    let lb = SwarmLb::start("8s");
    let applied = Instant::now();
    lb.cluster.cli_ok(&["apply", "-f", "swarm-lb.yaml"]);
    wait_for_or(
        "production to answer v1 on every node's address",
        LIMIT,
        || {
            (0..3)
                .all(|n| get(lb.prod_on(n), "/").is_ok_and(|a| a == (200, "v1".into())))
                .then_some(())
        },
        || lb.seen(),
    );
    println!(
        "apply of four swarm tasks to production answering on all three nodes: {:.1}s",
        applied.elapsed().as_secs_f64()
    );
    // Every node's load balancer acknowledged the table the control plane serves.
    let status = lb.cluster.json(&["status"]);
    let nodes = status["node_load_balancers"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = nodes.iter().filter_map(|n| n["node"].as_str()).collect();
    assert_eq!(names, ["node1", "node2", "node3"], "{status}");
    assert!(nodes.iter().all(|n| n["answering"] == true), "{status}");
    // Without the token, a node's admin API answers nothing.
    let admin: SocketAddr = format!("{}:{}", NODES[0], lb.admin).parse().unwrap();
    assert_eq!(get(admin, "/v1/routes").unwrap().0, 401);

    // A canary v1 → v2 while clients call production on node1 and node2.
    let (load1, load2) = (Load::start(lb.prod_on(0), 2), Load::start(lb.prod_on(1), 2));
    let deployed = Instant::now();
    let id = lb.deploy("api-v2.json");
    wait_for_or(
        "the deployment to green healthy on the nodes (traffic moving)",
        LIMIT,
        || (lb.cluster.deployment(&id)["traffic"]["production_green_percent"] == 20).then_some(()),
        || format!("{}\n{}", lb.cluster.deployment(&id), lb.seen()),
    );
    println!(
        "deploy to green healthy on the nodes' load balancers (20% moved): {:.1}s",
        deployed.elapsed().as_secs_f64()
    );
    wait_for_or(
        "the deployment to succeed",
        LIMIT,
        || (lb.cluster.deployment(&id)["status"] == "Succeeded").then_some(()),
        || format!("{}\n{}", lb.cluster.deployment(&id), lb.seen()),
    );
    let (on1, on2) = (load1.finish(), load2.finish());
    for (node, samples) in [("node1", &on1), ("node2", &on2)] {
        assert!(samples.len() > 100, "{node}: only {} requests", samples.len());
        assert_eq!(failures(samples), Vec::<&Sample>::new(), "{node}: requests failed");
        // The split moved here: v1 only, a window with both, then v2 only.
        let first_v2 = samples.iter().position(|s| s.version == "v2");
        let last_v1 = samples.iter().rposition(|s| s.version == "v1");
        assert!(
            matches!((first_v2, last_v1), (Some(f), Some(l)) if f < l),
            "{node}: no canary window with both versions: {:?}",
            versions(samples)
        );
        assert_eq!(samples.last().unwrap().version, "v2", "{node}");
    }

    // A canary v2 → v3 stopped while 20% is on green: every node is back on blue at once.
    let token = lb.token();
    let id = lb.deploy("api-v3.json");
    // After v2's release, v2's target group is blue: green is the other one.
    let traffic = &lb.cluster.deployment(&id)["traffic"];
    let green = traffic["green_target_group"].as_str().unwrap().to_string();
    wait_for_or(
        "every node's load balancer to send 20% to green",
        LIMIT,
        || {
            (0..3)
                .all(|n| {
                    lb.served_on(n, &token)
                        .and_then(|s| green_weight(&s, &green))
                        .is_some_and(|w| w > 0)
                })
                .then_some(())
        },
        || lb.seen(),
    );
    // One watcher per node, each on its own keep-alive connection, notes when its node's load
    // balancer first serves blue only.
    let watchers: Vec<_> = (0..3)
        .map(|n| {
            let (url, token, green) = (
                format!("http://{}:{}/v1/routes", NODES[n], lb.admin),
                token.clone(),
                green.clone(),
            );
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let deadline = Instant::now() + LIMIT;
                while Instant::now() < deadline {
                    let served = client.get(&url).bearer_auth(&token).send().ok();
                    let served = served.and_then(|r| r.json::<serde_json::Value>().ok());
                    if served.and_then(|s| green_weight(&s, &green)) == Some(0) {
                        return Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                None
            })
        })
        .collect();
    let stopped = Instant::now();
    lb.cluster.cli_ok(&["deployments", "stop", &id, "--rollback"]);
    let answered = stopped.elapsed();
    let reached: Vec<Instant> = watchers
        .into_iter()
        .enumerate()
        .map(|(n, w)| {
            w.join().unwrap().unwrap_or_else(|| panic!("node{} kept green: {}", n + 1, lb.seen()))
        })
        .collect();
    let after: Vec<Duration> = reached.iter().map(|at| at.duration_since(stopped)).collect();
    let last = *after.iter().max().unwrap();
    println!(
        "rollback to blue only on every node's load balancer: {:.0} ms after `deployments stop \
         --rollback` was run (its answer came after {:.0} ms); node1, node2, node3 at {:?}; \
         first to last node {:.0} ms",
        last.as_secs_f64() * 1000.0,
        answered.as_secs_f64() * 1000.0,
        after,
        (last - *after.iter().min().unwrap()).as_secs_f64() * 1000.0
    );
    wait_for_or(
        "production to answer v2 on every node",
        LIMIT,
        || {
            (0..3)
                .all(|n| get(lb.prod_on(n), "/").is_ok_and(|a| a == (200, "v2".into())))
                .then_some(())
        },
        || lb.seen(),
    );
}

#[test]
fn swarm_lb_a_control_plane_killed_mid_canary_leaves_every_node_serving_and_its_successor_finishes_adopting_all()
 {
    let mut lb = SwarmLb::start("15s");
    lb.cluster.cli_ok(&["apply", "-f", "swarm-lb.yaml"]);
    wait_for_or(
        "production to answer v1 on every node's address",
        LIMIT,
        || {
            (0..3)
                .all(|n| get(lb.prod_on(n), "/").is_ok_and(|a| a == (200, "v1".into())))
                .then_some(())
        },
        || lb.seen(),
    );
    let id = lb.deploy("api-v2.json");
    wait_for_or(
        "the canary to move 20% to green",
        LIMIT,
        || (lb.cluster.deployment(&id)["traffic"]["production_green_percent"] == 20).then_some(()),
        || format!("{}\n{}", lb.cluster.deployment(&id), lb.seen()),
    );
    let before = services_of(&lb);
    let load = Load::start(lb.prod_on(2), 2);
    lb.cluster.kill_control_plane();
    // Without a control plane, the nodes keep serving the canary's split.
    let alone = Instant::now();
    wait_for("two seconds without a control plane", LIMIT, || {
        (alone.elapsed() > Duration::from_secs(2)).then_some(())
    });
    lb.cluster.up();
    wait_for_or(
        "the adopted deployment to succeed",
        LIMIT,
        || (lb.cluster.deployment(&id)["status"] == "Succeeded").then_some(()),
        || format!("{}\n{}", lb.cluster.deployment(&id), lb.seen()),
    );
    let samples = load.finish();
    assert_eq!(failures(&samples), Vec::<&Sample>::new(), "requests failed on node3");
    assert!(versions(&samples).contains_key("v1") && versions(&samples).contains_key("v2"));
    // One data plane, adopted; of the tasks, the four of green and nothing started twice.
    let data_planes = |names: &[String]| -> Vec<String> {
        names.iter().filter(|n| n.starts_with("cutover-lb-")).cloned().collect()
    };
    assert_eq!(data_planes(&services_of(&lb)), data_planes(&before));
    assert_eq!(data_planes(&before).len(), 1, "{before:?}");
    let tasks = wait_for_or(
        "blue's four task services removed, green's four left",
        LIMIT,
        || {
            let tasks: Vec<String> =
                services_of(&lb).into_iter().filter(|n| !n.starts_with("cutover-lb-")).collect();
            (tasks.len() == 4).then_some(tasks)
        },
        || format!("{:?}", services_of(&lb)),
    );
    assert!(
        tasks.iter().all(|t| before.contains(t)),
        "green's tasks were started again: {tasks:?} vs {before:?}"
    );
    lb.cluster.cli_ok(&["down"]);
    wait_for_or(
        "every service of the installation gone",
        LIMIT,
        || services_of(&lb).is_empty().then_some(()),
        || format!("{:?}", services_of(&lb)),
    );
}
