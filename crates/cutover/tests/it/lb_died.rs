//! A data plane that dies is started again by the control plane, serving the table it should.

use std::time::Duration;

use crate::harness::*;

/// The pid of the data plane `cutover up` started, from its record in the data directory.
fn lb_pid(cluster: &Cluster) -> u32 {
    let record = std::fs::read_to_string(cluster.data_dir().join("lb/lb.json")).unwrap();
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    record["pid"].as_u64().unwrap() as u32
}

#[test]
fn a_data_plane_killed_is_started_again_and_serves_production() {
    let cluster = Cluster::start(Options::default());
    cluster.apply_and_wait_for_v1();
    let pid = lb_pid(&cluster);
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(killed, "kill -9 {pid}");
    wait_for("production to stop answering", Duration::from_secs(10), || {
        get(cluster.prod, "/").is_err().then_some(())
    });

    wait_for("a new data plane to serve v1 on production", Duration::from_secs(30), || {
        (get(cluster.prod, "/").ok()?.1 == "v1").then_some(())
    });
    assert_ne!(lb_pid(&cluster), pid, "a new data plane was started");
}
