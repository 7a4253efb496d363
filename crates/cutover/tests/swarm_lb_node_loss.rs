//! A worker of the test cluster cut off mid-canary (its veth to the bridge down, as a machine
//! that loses its network) while clients call production on the two other nodes: the release
//! ends by its rules, the surviving nodes' load balancers keep answering, and the requests that
//! failed meanwhile are counted and printed. A test binary of its own: cargo runs test binaries
//! one at a time, so no other cluster test sees node3 go. Needs `scripts/cluster up`.

#[allow(dead_code, unused_imports)]
#[path = "it/harness.rs"]
mod harness;
#[path = "it/swarm_lb_fixture.rs"]
mod swarm_lb_fixture;

use std::time::{Duration, Instant};

use harness::*;
use swarm_lb_fixture::*;

/// Runs `ip link set cov-node3 STATE`: the cluster's worker 3 hangs off that veth.
fn link(state: &str) {
    let status = std::process::Command::new("ip")
        .args(["link", "set", "cov-node3", state])
        .status()
        .expect("ip link");
    assert!(status.success(), "ip link set cov-node3 {state}");
}

/// Brings node3 back however the test ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        link("up");
    }
}

#[test]
fn swarm_lb_a_node_cut_off_mid_canary_leaves_the_other_nodes_serving_and_the_release_ends_by_its_rules()
 {
    let lb = SwarmLb::start("20s");
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
    let (load1, load2) = (Load::start(lb.prod_on(0), 2), Load::start(lb.prod_on(1), 2));
    let _restore = Restore;
    link("down");
    let cut = Instant::now();
    let status = wait_for_or(
        "the deployment to end",
        Duration::from_secs(180),
        || {
            let status = lb.cluster.deployment(&id)["status"].as_str()?.to_string();
            matches!(status.as_str(), "Succeeded" | "Failed" | "Stopped").then_some(status)
        },
        || format!("{}\n{}", lb.cluster.deployment(&id), lb.seen()),
    );
    let ended = cut.elapsed();
    let (on1, on2) = (load1.finish(), load2.finish());
    println!(
        "node3 cut off mid-canary: the deployment ended {status} {:.1}s later",
        ended.as_secs_f64()
    );
    for (node, samples) in [("node1", &on1), ("node2", &on2)] {
        let failed = failures(samples);
        println!(
            "{node}: {} requests, {} failed ({:?}); versions {:?}",
            samples.len(),
            failed.len(),
            failed.iter().map(|s| (s.status, s.error.clone())).take(5).collect::<Vec<_>>(),
            versions(samples)
        );
        // The surviving node's load balancer kept answering to the end.
        let last = samples.last().expect("requests were made");
        assert_eq!(last.status, 200, "{node}: last answer {last:?}");
        let late = samples.iter().rev().take(50).filter(|s| s.status == 200).count();
        assert_eq!(late, 50.min(samples.len()), "{node}: failing at the end");
    }
    // Whatever the release's end, production answers on the surviving nodes.
    for n in 0..2 {
        let (status, _) = get(lb.prod_on(n), "/").unwrap();
        assert_eq!(status, 200, "node{}", n + 1);
    }
}
