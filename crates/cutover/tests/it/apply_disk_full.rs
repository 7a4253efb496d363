//! An `apply` the store cannot take never reaches the data plane: it is validated there, stored,
//! and only then served, so a full disk (or a crash) between the two leaves the load balancer
//! on the table the store has.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::disk_full::fill;
use crate::harness::*;

/// The routing table the data plane serves, from its admin API (a read: it writes nothing).
fn served_routes(cluster: &Cluster) -> Value {
    let admin = cluster.json(&["status"])["lb_admin"].as_str().unwrap().to_string();
    reqwest::blocking::get(format!("http://{admin}/v1/routes")).unwrap().json().unwrap()
}

fn listener_names(served: &Value) -> Vec<String> {
    served["table"]["listeners"].as_object().unwrap().keys().cloned().collect()
}

#[test]
fn an_apply_adding_a_listener_on_a_full_disk_fails_and_the_data_plane_never_serves_it() {
    let cluster = Cluster::start(Options { data_dir_tmpfs: Some("64m"), ..Options::default() });
    cluster.apply_and_wait_for_v1();
    let extra: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = std::fs::read_to_string(cluster.path("cutover.yaml")).unwrap();
    let with_listener = yaml.replacen(
        "      - { name: test,",
        &format!(
            "      - {{ name: extra, port: {}, default_action: {{ fixed_response: {{ status_code: 503 }} }} }}\n      - {{ name: test,",
            extra.port()
        ),
        1,
    );
    assert_ne!(with_listener, yaml, "the listener was not added");
    std::fs::write(cluster.path("extra.yaml"), with_listener).unwrap();
    let before = served_routes(&cluster);

    fill(&cluster.data_dir().join("filler"));
    let output = cluster.cli(&["apply", "-f", "extra.yaml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "applied on a full disk: {stderr}");
    assert!(stderr.contains("the data directory cannot be written"), "{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");

    let after = served_routes(&cluster);
    assert_eq!(after["version"], before["version"], "the data plane got another table: {after}");
    assert_eq!(listener_names(&after), ["web/prod", "web/test"], "{after}");
    assert!(std::net::TcpStream::connect(extra).is_err(), "{extra} listens");

    // Once there is room again, the same file applies and the listener serves.
    std::fs::remove_file(cluster.data_dir().join("filler")).unwrap();
    wait_for("the file to apply once space is freed", Duration::from_secs(30), || {
        cluster.cli(&["apply", "-f", "extra.yaml"]).status.success().then_some(())
    });
    wait_for("the new listener to answer", Duration::from_secs(10), || {
        get(extra, "/").ok().filter(|(status, _)| *status == 503)
    });
    assert!(listener_names(&served_routes(&cluster)).contains(&"web/extra".to_string()));
}
