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

/// A private CA and a certificate it signed for `host`, as PEM files `dir/web.pem` and
/// `dir/web.key`; returns the CA's certificate (PEM).
fn certificate_for(dir: &std::path::Path, host: &str) -> String {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![host.to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("web.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("web.key"), key.serialize_pem()).unwrap();
    ca.pem()
}

fn https_site(port: u16) -> String {
    format!(
        "load_balancers:
  - name: edge
    listeners:
      - name: https
        port: {port}
        protocol: HTTPS
        certificate_file: tls/web.pem
        key_file: tls/web.key
        default_action: {{ fixed_response: {{ status_code: 200, body: served over tls }} }}
"
    )
}

#[test]
fn certificate_paths_are_relative_to_the_cutover_yaml_wherever_apply_runs() {
    let cluster = Cluster::start(Options::default());
    // The file and its certificate live in `site/`; apply runs from the directory above it, and
    // `cutover up` (so the load balancer) from another directory again.
    let site = cluster.path("site");
    let ca = certificate_for(&site.join("tls"), "web.example.com");
    let port = free_port();
    std::fs::write(site.join("cutover.yaml"), https_site(port)).unwrap();
    let plan = cluster.cli_ok(&["apply", "-f", "site/cutover.yaml"]);
    assert!(plan.contains("plan: 1 to create, 0 to update, 0 to delete"), "{plan}");

    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .resolve("web.example.com", addr)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let body = wait_for("the HTTPS listener to answer", std::time::Duration::from_secs(30), || {
        let response = client.get(format!("https://web.example.com:{port}/")).send().ok()?;
        response.text().ok()
    });
    assert_eq!(body, "served over tls");

    // Applying the same file again, from inside its directory, changes nothing.
    let output = Command::new(CUTOVER)
        .args(["apply", "-f", "cutover.yaml"])
        .env("CUTOVER_DATA_DIR", cluster.data_dir())
        .env("CUTOVER_API", cluster.api_url())
        .current_dir(&site)
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{plan}{}", String::from_utf8_lossy(&output.stderr));
    assert!(plan.contains("plan: 0 to create, 0 to update, 0 to delete"), "{plan}");
}

#[test]
fn a_relative_certificate_path_sent_without_its_directory_is_refused_at_its_field() {
    let cluster = Cluster::start(Options::default());
    let text = https_site(free_port());
    let (status, answer) = cluster.api(
        reqwest::Method::POST,
        "/v1/apply",
        &serde_json::json!({ "file": { "name": "cutover.yaml", "text": text } }),
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"], "cutover.yaml is not valid (2 error(s)); nothing was changed",
        "{answer}"
    );
    assert_eq!(
        answer["diagnostics"],
        serde_json::json!([
            "cutover.yaml:7:27: load_balancers[0].listeners[0].certificate_file: certificate \
             file `tls/web.pem` is relative, and cutover.yaml was sent without its directory; \
             give an absolute path, or apply with `cutover apply -f`, which sends the file's \
             directory",
            "cutover.yaml:8:19: load_balancers[0].listeners[0].key_file: key file `tls/web.key` \
             is relative, and cutover.yaml was sent without its directory; give an absolute \
             path, or apply with `cutover apply -f`, which sends the file's directory",
        ])
    );
    // Nothing was applied: the load balancer serves no listener.
    let admin = cluster.json(&["status"])["lb_admin"].as_str().unwrap().to_string();
    let served: serde_json::Value =
        reqwest::blocking::get(format!("http://{admin}/v1/routes")).unwrap().json().unwrap();
    assert_eq!(served["table"]["listeners"], serde_json::json!({}), "{served}");
}

/// A rule change alone needs no check by the data plane, except on a TLS listener: its
/// certificates are read from disk again, and a certificate broken since is refused before
/// anything is stored, while the listener keeps serving what it served.
#[test]
fn a_change_on_a_tls_listener_whose_certificate_broke_on_disk_is_refused_and_changes_nothing() {
    let cluster = Cluster::start(Options::default());
    let site = cluster.path("site");
    let ca = certificate_for(&site.join("tls"), "web.example.com");
    let port = free_port();
    std::fs::write(site.join("cutover.yaml"), https_site(port)).unwrap();
    cluster.cli_ok(&["apply", "-f", "site/cutover.yaml"]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .resolve("web.example.com", addr)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let served = || {
        let response = client.get(format!("https://web.example.com:{port}/")).send().ok()?;
        response.text().ok()
    };
    let body = wait_for("the HTTPS listener to answer", std::time::Duration::from_secs(30), served);
    assert_eq!(body, "served over tls");
    let admin = cluster.json(&["status"])["lb_admin"].as_str().unwrap().to_string();
    let served_table = || -> serde_json::Value {
        reqwest::blocking::get(format!("http://{admin}/v1/routes")).unwrap().json().unwrap()
    };
    let before = served_table();

    std::fs::write(site.join("tls/web.pem"), "not a certificate\n").unwrap();
    let changed = https_site(port).replace("served over tls", "changed");
    std::fs::write(site.join("cutover.yaml"), changed).unwrap();
    let output = cluster.cli(&["apply", "-f", "site/cutover.yaml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "the load balancer refused the new configuration, nothing was changed: 400 Bad \
             Request: listener `edge/https`: "
        ),
        "{stderr}"
    );
    assert_eq!(served_table(), before, "the data plane serves another table");
    assert_eq!(served().as_deref(), Some("served over tls"));
    let plan = cluster.cli_ok(&["apply", "--dry-run", "-f", "site/cutover.yaml"]);
    assert!(plan.contains("plan: 0 to create, 1 to update, 0 to delete"), "{plan}");
}
