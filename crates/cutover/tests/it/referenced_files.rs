//! The files a cutover.yaml names are checked like the file itself: a missing one is reported at
//! the field that names it, by `validate` before anything runs and by `apply`; a broken one in its
//! own file; an oversized file with its real size.

use std::process::{Command, Output};

use crate::harness::*;

const TASKDEF: &str = r#"{"family": "web", "containerDefinitions": [{"name": "web", "image": "app",
  "command": ["cutover-demo-app"], "portMappings": [{"containerPort": 8080}]}]}"#;

fn cutover_yaml(task_definition: &str) -> String {
    format!(
        "target_groups:
  - name: web-blue
services:
  - name: web
    task_definition: {task_definition}
    load_balancer: {{ target_group: web-blue, container_name: web, container_port: 8080 }}
"
    )
}

fn validate(dir: &std::path::Path, file: &str) -> Output {
    Command::new(CUTOVER).args(["validate", file]).current_dir(dir).output().unwrap()
}

#[test]
fn validate_reports_a_missing_task_definition_at_the_field_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cutover.yaml"), cutover_yaml("taskdef-v9.json")).unwrap();
    let output = validate(dir.path(), "cutover.yaml");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "cutover.yaml:5:22: services[0].task_definition: task definition file `taskdef-v9.json` \
         does not exist (looked for taskdef-v9.json); fix the path (relative to this file), or \
         name a registered task definition like `web:3` (`cutover task-definitions list`)\n"
    );

    // A task definition that is there but broken is reported in its own file.
    std::fs::write(dir.path().join("taskdef-v9.json"), TASKDEF.replace("\"app\",", "\"app\""))
        .unwrap();
    let output = validate(dir.path(), "cutover.yaml");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "taskdef-v9.json:2:3: containerDefinitions[0]: expected `,` or `}` after a member; is a \
         comma missing?\n"
    );

    std::fs::write(dir.path().join("taskdef-v9.json"), TASKDEF).unwrap();
    let output = validate(dir.path(), "cutover.yaml");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "cutover.yaml: ok\n");
    assert!(output.status.success());
}

#[test]
fn an_oversized_file_is_reported_with_its_real_size_at_1_1() {
    let dir = tempfile::tempdir().unwrap();
    let big = std::fs::File::create(dir.path().join("big.yaml")).unwrap();
    big.set_len(50 * 1024 * 1024).unwrap();
    let output = validate(dir.path(), "big.yaml");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "big.yaml:1:1: the file is 50.0 MiB (52428800 bytes), more than the 1 MiB \
             (1048576-byte) limit; is this the right file?"
        ),
        "{stderr}"
    );
}

#[test]
fn apply_reports_a_missing_task_definition_at_the_field_that_names_it() {
    let cluster = Cluster::start(Options::default());
    std::fs::write(cluster.path("bad.yaml"), cutover_yaml("deploy/taskdef-v9.json")).unwrap();
    let output = cluster.cli(&["apply", "-f", "bad.yaml"]);
    assert!(!output.status.success());
    let looked_at = cluster.dir.path().canonicalize().unwrap().join("deploy/taskdef-v9.json");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "bad.yaml:5:22: services[0].task_definition: task definition file \
         `deploy/taskdef-v9.json` does not exist (looked for {})",
        looked_at.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    // Nothing was applied.
    assert_eq!(cluster.json(&["task-definitions", "list"]).as_array().unwrap().len(), 0);
}

#[test]
fn apply_reports_an_unregistered_task_definition_at_the_field_that_names_it() {
    let cluster = Cluster::start(Options::default());
    std::fs::write(cluster.path("bad.yaml"), cutover_yaml("web:9")).unwrap();
    let output = cluster.cli(&["apply", "-f", "bad.yaml"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = "bad.yaml:5:22: services[0].task_definition: no registered task definition \
                    `web:9` (`cutover task-definitions list`); register it, or name a taskdef.json \
                    file next to this file";
    assert!(stderr.contains(expected), "{stderr}");
}
