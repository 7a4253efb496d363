//! Bad input gets a clear error and changes nothing.

use crate::harness::*;

#[test]
fn invalid_files_are_refused_and_change_nothing() {
    let cluster = Cluster::start(Options::default());
    cluster.apply_and_wait_for_v1();

    // A cutover.yaml whose deployment group uses the same target group twice.
    let yaml = std::fs::read_to_string(cluster.path("cutover.yaml")).unwrap();
    std::fs::write(
        cluster.path("bad.yaml"),
        yaml.replace("[web-blue, web-green]", "[web-blue, web-blue]"),
    )
    .unwrap();
    let output = cluster.cli(&["apply", "-f", "bad.yaml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("bad.yaml:"), "the error names the file and line: {stderr}");
    assert!(stderr.contains("target_groups"), "the error names the field: {stderr}");
    let validate = cluster.cli(&["validate", "bad.yaml"]);
    assert_eq!(validate.status.code(), Some(1));

    // An AppSpec naming a container the task definition does not have.
    std::fs::write(cluster.path("appspec-bad.yaml"), appspec("").replace("\"web\"", "\"api\""))
        .unwrap();
    let output = cluster.cli(&deploy_args("taskdef-v2.json", "appspec-bad.yaml", &[]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("appspec-bad.yaml") && stderr.contains("api"), "{stderr}");

    // Nothing changed: no deployment, no new revision, production still v1.
    assert_eq!(cluster.json(&["deployments", "list"]).as_array().unwrap().len(), 0);
    assert_eq!(cluster.json(&["task-definitions", "list"]).as_array().unwrap().len(), 1);
    assert_eq!(get(cluster.prod, "/").unwrap().1, "v1");

    // A second deployment while one is active is refused with the id of the active one.
    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap();
    let output = cluster.cli(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(id) && stderr.contains("active deployment"), "{stderr}");
    cluster.cli_ok(&["deployments", "stop", id, "--rollback"]);
}
