//! The engine never waits for the data plane: a data plane that stops answering (here frozen
//! with SIGSTOP) delays no decision. A rollback is decided, recorded and answered at once, and
//! production goes back to blue as soon as the data plane answers again.

use std::time::{Duration, Instant};

use crate::harness::*;

/// Freezes a process until dropped, so that a failing assertion never leaves it frozen.
struct Frozen(i32);

impl Frozen {
    fn new(pid: i32) -> Frozen {
        signal(pid, "-STOP");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

fn signal(pid: i32, sig: &str) {
    let status = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

#[test]
fn a_rollback_is_decided_and_answered_at_once_while_the_data_plane_does_not_answer() {
    let cluster = Cluster::start(Options { termination_wait: "10m", ..Options::default() });
    cluster.apply_and_wait_for_v1();
    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("the termination wait (Baking)", Duration::from_secs(60), || {
        (cluster.deployment(&id)["status"] == "Baking").then_some(())
    });
    // The store records a route before the data plane serves it.
    wait_for("production on green", Duration::from_secs(10), || {
        (get(cluster.prod, "/").ok()?.1 == "v2").then_some(())
    });

    let record = std::fs::read_to_string(cluster.data_dir().join("lb/lb.json")).unwrap();
    let pid = serde_json::from_str::<serde_json::Value>(&record).unwrap()["pid"].as_i64().unwrap();
    let frozen = Frozen::new(pid as i32);
    let started = Instant::now();
    let output = cluster.cli(&["deployments", "stop", &id]);
    let took = started.elapsed();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(took < Duration::from_secs(2), "the stop request took {took:?}");
    let view = cluster.deployment(&id);
    assert_eq!(view["status"], "Stopped", "{view}");
    assert_eq!(view["rolled_back"], true, "{view}");
    assert_eq!(view["traffic"]["production_green_percent"], 0, "{view}");

    drop(frozen);
    wait_for("production back on v1", Duration::from_secs(30), || {
        (get(cluster.prod, "/").ok()?.1 == "v1").then_some(())
    });
}
