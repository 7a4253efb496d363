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

#[test]
fn an_apply_waiting_for_the_data_plane_s_check_holds_up_no_rollback() {
    let cluster = Cluster::start(Options { termination_wait: "10m", ..Options::default() });
    cluster.apply_and_wait_for_v1();
    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("the termination wait (Baking)", Duration::from_secs(60), || {
        (cluster.deployment(&id)["status"] == "Baking").then_some(())
    });
    // A new listener, whose port only the data plane can check before the table is stored (a
    // change of rules or target groups alone is checked by the control plane itself).
    let yaml = std::fs::read_to_string(cluster.path("cutover.yaml")).unwrap();
    let changed = yaml.replacen(
        "      - { name: test,",
        &format!(
            "      - {{ name: extra, port: {}, default_action: {{ fixed_response: {{ status_code: 503 }} }} }}\n      - {{ name: test,",
            free_port()
        ),
        1,
    );
    assert_ne!(changed, yaml);
    std::fs::write(cluster.path("cutover.yaml"), changed).unwrap();

    let record = std::fs::read_to_string(cluster.data_dir().join("lb/lb.json")).unwrap();
    let pid = serde_json::from_str::<serde_json::Value>(&record).unwrap()["pid"].as_i64().unwrap();
    let frozen = Frozen::new(pid as i32);
    std::thread::scope(|scope| {
        let apply = scope.spawn(|| cluster.cli(&["apply", "-f", "cutover.yaml"]));
        // The apply's request is in: its CLI is connected to the API (nothing else is now), and
        // sent its request as it connected, long before another CLI can start.
        let api_port = cluster.api_url().rsplit(':').next().unwrap().to_string();
        wait_for("the apply's CLI connected to the API", Duration::from_secs(10), || {
            connected_to(&api_port).then_some(())
        });
        let started = Instant::now();
        let output = cluster.cli(&["deployments", "stop", &id]);
        let took = started.elapsed();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert!(took < Duration::from_secs(2), "the stop waited {took:?} behind the apply");
        assert_eq!(cluster.deployment(&id)["rolled_back"], true);
        drop(frozen);
        let applied = apply.join().unwrap();
        let stderr = String::from_utf8_lossy(&applied.stderr);
        // Thawed in time, the data plane answers the check and the file is applied; had the
        // check timed out while it was frozen, nothing would have changed, and the apply says so.
        assert!(applied.status.success() || stderr.contains("nothing was changed"), "{stderr}");
    });
    wait_for("production back on v1", Duration::from_secs(30), || {
        (get(cluster.prod, "/").ok()?.1 == "v1").then_some(())
    });
}

/// Whether a client holds an established TCP connection to local port `port`.
fn connected_to(port: &str) -> bool {
    let output = std::process::Command::new("ss")
        .args(["-Htn", "state", "established"])
        .arg(format!("( dport = :{port} )"))
        .output()
        .expect("running ss");
    !String::from_utf8_lossy(&output.stdout).trim().is_empty()
}
