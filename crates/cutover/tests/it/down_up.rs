//! `cutover down`, then `cutover up` on the same data directory: a new start, whose services run
//! again and whose own `down` ends.

use std::time::Duration;

use crate::harness::*;

/// Healthy targets of the service's target group, as the API reports them.
fn healthy_targets(cluster: &Cluster) -> usize {
    let tg = cluster.json(&["target-groups", "get", "web-blue"]);
    tg["targets"].as_array().map_or(0, |t| t.iter().filter(|t| t["state"] == "healthy").count())
}

#[test]
fn up_after_down_runs_the_services_again_and_the_next_down_ends() {
    let mut cluster = Cluster::start(Options::default());
    cluster.apply_and_wait_for_v1();
    let down = cluster.cli_ok(&["down"]);
    assert!(down.contains("cutover is down: tasks stopped"), "{down}");
    wait_for("the first run's tasks to exit", Duration::from_secs(30), || {
        (cluster.app_processes() == 0).then_some(())
    });

    // No apply: what is stored runs again.
    cluster.up();
    wait_for_or(
        "production to serve v1 from 2 healthy tasks again",
        Duration::from_secs(30),
        || (healthy_targets(&cluster) == 2 && get(cluster.prod, "/").ok()?.1 == "v1").then_some(()),
        || {
            cluster.cli_ok(&["services", "list"])
                + &cluster.cli_ok(&["target-groups", "get", "web-blue"])
        },
    );

    // Before the fix, this `down` waited 120 s for a shutdown its state said was already over.
    let down = cluster.cli(&["down"]);
    let stdout = String::from_utf8_lossy(&down.stdout);
    assert!(
        down.status.success() && stdout.contains("cutover is down: tasks stopped"),
        "{stdout}{}",
        String::from_utf8_lossy(&down.stderr)
    );
    wait_for("the second run's tasks to exit", Duration::from_secs(30), || {
        (cluster.app_processes() == 0).then_some(())
    });
}

/// A `cutover down` sent to the wrong address (a stale `CUTOVER_API` in the shell) used to take
/// the running control plane for dead and stop its load balancer and tasks; the data directory's
/// lock says it runs, so nothing is stopped and the error names where it answers.
#[test]
fn down_at_an_address_nothing_answers_stops_nothing_of_a_running_control_plane() {
    let cluster = Cluster::start(Options::default());
    cluster.apply_and_wait_for_v1();
    let nowhere = format!("http://127.0.0.1:{}", free_port());

    let down = cluster.cli(&["down", "--api", &nowhere]);
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(!down.status.success(), "{stderr}");
    assert!(
        stderr.contains("nothing was stopped")
            && stderr.contains(&format!("cutover down --api {}", cluster.api_url())),
        "{stderr}"
    );
    assert_eq!(get(cluster.prod, "/").unwrap().1, "v1", "production still served");
    assert_eq!(cluster.app_processes(), 2, "the tasks still run");
    assert_eq!(healthy_targets(&cluster), 2);
}
