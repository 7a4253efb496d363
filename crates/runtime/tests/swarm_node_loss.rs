//! A worker of the test cluster cut off mid-run (its veth to the bridge down, as a machine that
//! loses its network): the Swarm runtime reports its task ended, naming the node, so the engine
//! replaces it elsewhere, and a stop never waits on the lost node. A test binary of its own:
//! cargo runs test binaries one at a time, so no other cluster test sees node3 go.
//! Needs `scripts/cluster up`; fails, naming it, when the cluster is not up.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::time::{Duration, Instant};

use bollard::Docker;
use runtime::{ContainerSpec, Runtime, SwarmRuntime, TaskSpec, TaskState};

/// Runs `ip link set VETH STATE`; the cluster's worker N hangs off `cov-nodeN`.
fn link(state: &str) {
    let status = std::process::Command::new("ip")
        .args(["link", "set", "cov-node3", state])
        .status()
        .expect("ip link");
    assert!(status.success(), "ip link set cov-node3 {state}");
}

async fn node3_state(docker: &Docker) -> String {
    let nodes = docker.list_nodes(None::<bollard::query_parameters::ListNodesOptions>).await;
    nodes
        .unwrap_or_default()
        .into_iter()
        .find(|n| n.description.as_ref().and_then(|d| d.hostname.as_deref()) == Some("node3"))
        .and_then(|n| n.status?.state)
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// Brings node3 back, whatever the test did, so the cluster stays whole.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        link("up");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_a_task_on_a_node_that_is_cut_off_is_reported_ended_naming_the_node_and_its_stop_does_not_wait()
 {
    cluster::require_cluster().await;
    let docker = cluster::manager();
    assert_eq!(node3_state(&docker).await, "ready", "node3 of the test cluster must be ready");
    let state = tempfile::tempdir().unwrap();
    let rt = SwarmRuntime::connect(state.path().to_path_buf()).await.expect("manager");
    let mut c = ContainerSpec::new("web", cluster::demo_image().await);
    c.ports = vec![8080];
    c.stop_timeout = Duration::from_secs(20);
    let mut spec = TaskSpec::new(format!("lost-{}", std::process::id()), "svc", "svc:1");
    spec.containers.push(c);
    spec.placement_constraints = vec!["node.labels.cutover.node==node3".into()];
    let handle = rt.start(spec).await.expect("start on node3");

    let _restore = Restore;
    link("down");
    let cut = Instant::now();
    let reason = loop {
        if let TaskState::Exited { reason, .. } = rt.inspect(&handle).await {
            break reason;
        }
        assert!(cut.elapsed() < Duration::from_secs(90), "node3's loss was never reported");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let detected = cut.elapsed();
    assert_eq!(
        reason,
        "node node3 is down: Swarm lost contact with it, so its task cannot be reached"
    );
    println!("node loss reported {:.1}s after the cut", detected.as_secs_f64());

    // The stop does not wait out the 20 s grace period for a node that cannot answer.
    let stopping = Instant::now();
    rt.stop(&handle).await.expect("stop");
    assert!(stopping.elapsed() < Duration::from_secs(10), "stop waited {:?}", stopping.elapsed());
    rt.remove(&handle).await.expect("remove");
    assert_eq!(rt.inspect(&handle).await, TaskState::Gone);

    link("up");
    let back = Instant::now();
    while node3_state(&docker).await != "ready" {
        assert!(back.elapsed() < Duration::from_secs(90), "node3 did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
