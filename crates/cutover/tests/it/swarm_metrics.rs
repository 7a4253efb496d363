//! The API's metrics with a load balancer on every node of the swarm, end to end on the real
//! cluster of `scripts/cluster up`: `GET /v1/metrics` answers the figures alarms read (the sum
//! over the manager's data plane and every answering node) and each node's own beside them. This
//! test fails, it does not skip, when the cluster is not up.

use crate::harness::*;
use crate::swarm_lb_fixture::*;

/// `api-blue`'s request count in a metrics snapshot (the sum, or one node's).
fn blue_requests(snapshot: &serde_json::Value) -> u64 {
    snapshot["target_groups"]["api-blue"]["requests"].as_u64().unwrap_or(0)
}

#[test]
fn swarm_metrics_the_api_shows_the_sum_alarms_read_and_each_node_s_own_labelled() {
    let lb = SwarmLb::start("8s");
    lb.cluster.cli_ok(&["apply", "-f", "swarm-lb.yaml"]);
    wait_for_or(
        "production to answer v1 on node1 and node2",
        LIMIT,
        || {
            (0..2)
                .all(|n| get(lb.prod_on(n), "/").is_ok_and(|a| a == (200, "v1".into())))
                .then_some(())
        },
        || lb.seen(),
    );
    for (node, requests) in [(0, 20), (1, 30)] {
        for _ in 0..requests {
            assert_eq!(get(lb.prod_on(node), "/").unwrap(), (200, "v1".into()));
        }
    }
    let metrics = || lb.cluster.api(reqwest::Method::GET, "/v1/metrics", &serde_json::Value::Null);
    let (_, seen) = wait_for_or(
        "the API's metrics to count node1's 20 requests and node2's 30",
        LIMIT,
        || {
            let (status, seen) = metrics();
            let nodes = &seen["nodes"];
            (status == 200
                && blue_requests(&nodes["node1"]) >= 20
                && blue_requests(&nodes["node2"]) >= 30)
                .then_some((status, seen))
        },
        || format!("{:?}\n{}", metrics(), lb.seen()),
    );
    let nodes = seen["nodes"].as_object().unwrap();
    let labels: Vec<&str> = nodes.keys().map(String::as_str).collect();
    // node3 is left out while it does not answer (another test may cut it off meanwhile).
    assert!(labels.starts_with(&["manager", "node1", "node2"]), "{seen}");
    assert!(labels.len() <= 4, "{seen}");
    // The top level is the sum of the very parts shown beside it: what alarms read.
    let parts: u64 = nodes.values().map(blue_requests).sum();
    assert_eq!(blue_requests(&seen), parts, "{seen}");
    assert!(blue_requests(&seen) >= 50, "{seen}");
}
