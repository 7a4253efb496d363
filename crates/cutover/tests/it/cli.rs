//! The CLI's own conduct: every error says what to do, a refused token stops nothing, output
//! into a closed pipe ends quietly, flags are checked before anything starts, files get no
//! terminal colours, `get` prints one object, and predefined or declared configs preview offline.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// The CLI with no control plane anywhere: a data directory of its own and an API address
/// where nothing listens.
fn offline(dir: &Path, args: &[&str]) -> Output {
    Command::new(CUTOVER)
        .args(args)
        .env("CUTOVER_DATA_DIR", dir.join("data"))
        .env("CUTOVER_API", format!("http://127.0.0.1:{}", free_port()))
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Ids of the tasks running now.
fn task_ids(cluster: &Cluster) -> Vec<String> {
    let tasks = cluster.json(&["tasks", "list"]);
    let mut ids: Vec<String> = tasks
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["last_status"] == "RUNNING")
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn down_and_status_with_a_wrong_token_stop_nothing_and_say_how_to_give_the_right_one() {
    let cluster = Cluster::start(Options {
        env: vec![("CUTOVER_TOKEN", "the-right-token".to_string())],
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let tasks_before = task_ids(&cluster);
    assert_eq!(tasks_before.len(), 2, "{tasks_before:?}");
    let lb_before = std::fs::read_to_string(cluster.data_dir().join("lb/lb.json")).unwrap();

    let refused = format!(
        "error: cutover at {} is running but refused the API token (401 Unauthorized): give the \
         token `cutover up` was started with, with --token or CUTOVER_TOKEN (when `cutover up` \
         generated it, it is in DATA_DIR/token)",
        cluster.api_url()
    );
    let wrong = [("CUTOVER_TOKEN", "a-wrong-token")];
    let down = cluster.cli_with_env(&wrong, &["down"]);
    assert_eq!(down.status.code(), Some(2), "{down:?}");
    assert_eq!(stderr(&down), format!("{refused}; nothing was stopped\n"));
    assert_eq!(String::from_utf8_lossy(&down.stdout), "", "down claims to have stopped something");
    let status = cluster.cli_with_env(&wrong, &["status"]);
    assert_eq!(status.status.code(), Some(2), "{status:?}");
    assert_eq!(stderr(&status), format!("{refused}\n"));

    // The same tasks and the same load balancer serve production; the control plane answers.
    assert_eq!(get(cluster.prod, "/").unwrap(), (200, "v1".to_string()));
    assert_eq!(task_ids(&cluster), tasks_before, "the tasks were replaced");
    assert_eq!(
        std::fs::read_to_string(cluster.data_dir().join("lb/lb.json")).unwrap(),
        lb_before,
        "the load balancer was replaced"
    );
    cluster.cli_ok(&["status"]);
}

#[test]
fn logs_of_what_is_not_a_task_id_say_what_to_do() {
    let cluster = Cluster::start(Options::default());
    let output = cluster.cli(&["logs", "../../x"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        "error: `../../x` is not a task id (1 to 128 of A-Z a-z 0-9 _ . -, not starting with `.`); \
         `cutover tasks list --all` shows them\n"
    );
    let output = cluster.cli(&["logs", "t-unknown"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stderr(&output), "error: no task t-unknown; `cutover tasks list` shows them\n");
}

#[test]
fn an_answer_without_a_message_still_says_what_to_do() {
    let cluster = Cluster::start(Options::default());
    // `..` leaves the deployments' routes: the API answers a bare 404.
    let output = cluster.cli(&["deployments", "get", ".."]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        format!(
            "error: cutover at {} answered 404 Not Found to /v1/deployments/.. without saying \
             why; check the name or id (the `list` command of its kind shows them), and that this \
             CLI is the same version as `cutover up`\n",
            cluster.api_url()
        )
    );
}

#[test]
fn json_output_into_a_closed_pipe_ends_quietly() {
    let cluster = Cluster::start(Options::default());
    for args in [
        vec!["status", "-o", "json"],
        vec!["deployment-configs", "list", "-o", "json"],
        vec!["deployment-configs", "preview", "CodeDeployDefault.ECSLinear10PercentEvery1Minutes"],
    ] {
        // `cutover … | head -c 0`: the reader is gone before the first byte is written.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = Command::new(CUTOVER)
            .args(&args)
            .env("CUTOVER_DATA_DIR", cluster.data_dir())
            .env("CUTOVER_API", cluster.api_url())
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
            .wait_with_output()
            .unwrap();
        assert_eq!(stderr(&output), "", "{args:?}");
        assert_eq!(output.status.signal(), Some(libc::SIGPIPE), "{args:?}: {:?}", output.status);
    }
}

#[test]
fn up_refuses_a_load_balancer_admin_address_beyond_loopback_at_once_on_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let started = Instant::now();
    let mut child = Command::new(CUTOVER)
        .args(["up", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--lb-admin", &format!("0.0.0.0:{port}")])
        .env("CUTOVER_DATA_DIR", dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited =
        wait_for("cutover up to refuse", Duration::from_secs(20), || child.try_wait().unwrap());
    let took = started.elapsed();
    let output = child.wait_with_output().unwrap();
    assert_eq!(exited.code(), Some(2));
    assert_eq!(
        stderr(&output),
        format!(
            "error: --lb-admin 0.0.0.0:{port}: the load balancer's admin API has no \
             authentication and must listen on loopback; use e.g. --lb-admin 127.0.0.1:{port}\n"
        )
    );
    assert!(took < Duration::from_secs(5), "refused only after {took:?}");
    assert!(!dir.path().join("data").exists(), "something was started or created");
}

#[test]
fn up_reports_a_load_balancer_that_cannot_start_at_once_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    // The admin port is taken: the load balancer starts, cannot listen, and exits.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = taken.local_addr().unwrap();
    let started = Instant::now();
    let mut child = Command::new(CUTOVER)
        .args(["up", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--lb-admin", &admin.to_string()])
        .env("CUTOVER_DATA_DIR", dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited =
        wait_for("cutover up to give up", Duration::from_secs(30), || child.try_wait().unwrap());
    let took = started.elapsed();
    let output = child.wait_with_output().unwrap();
    assert_eq!(exited.code(), Some(2));
    let stderr = stderr(&output);
    assert!(
        stderr.starts_with("error: the load balancer could not start (exit status: 2): error: ")
            && stderr.contains(&format!("cannot listen on admin address {admin}")),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(10), "reported only after {took:?}");
}

#[test]
fn log_files_written_by_up_hold_no_terminal_colour_codes() {
    let cluster = Cluster::start(Options::default());
    cluster.apply_and_wait_for_v1();
    for log in [cluster.path("up.log"), cluster.data_dir().join("lb/lb.log")] {
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("INFO"), "{} has no log lines: {text}", log.display());
        assert!(!text.contains('\u{1b}'), "{} holds ANSI escapes: {text:?}", log.display());
    }
}

#[test]
fn get_prints_one_object_in_json() {
    let pipeline = r#"repositories:
  - name: app
pipelines:
  - name: release
    source: { repository: app, branch: main }
    stages:
      - name: Approve
        actions:
          - { name: ok, type: approval, timeout: 1h }
"#;
    let cluster = Cluster::start(Options { top_extra: pipeline.into(), ..Options::default() });
    cluster.cli_ok(&["apply", "-f", "cutover.yaml"]);
    let repo = cluster.json(&["repos", "get", "app"]);
    assert_eq!(repo["name"], "app", "{repo}");
    assert!(repo["clone_url"].as_str().unwrap().ends_with("/app.git"), "{repo}");
    let pipeline = cluster.json(&["pipelines", "get", "release"]);
    assert_eq!(pipeline["name"], "release", "{pipeline}");
    // Every other `get` already answers one object.
    assert_eq!(cluster.json(&["services", "get", "web"])["name"], "web");
    assert_eq!(cluster.json(&["target-groups", "get", "web-blue"])["name"], "web-blue");
}

#[test]
fn predefined_and_file_declared_configs_preview_without_a_control_plane() {
    let cluster = Cluster::start(Options::default());
    cluster.cli_ok(&["apply", "-f", "cutover.yaml"]);
    let api = |path: &str| cluster.api(reqwest::Method::GET, path, &serde_json::Value::Null);
    let (status, predefined) =
        api("/v1/deployment-configs/CodeDeployDefault.ECSCanary10Percent5Minutes/preview");
    assert_eq!(status, 200);
    let (status, declared) = api("/v1/deployment-configs/quick-canary/preview?group=web/web-prod");
    assert_eq!(status, 200);

    let json = |output: Output| -> serde_json::Value {
        assert!(output.status.success(), "{}", stderr(&output));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let dir = cluster.dir.path();
    let name = "CodeDeployDefault.ECSCanary10Percent5Minutes";
    assert_eq!(
        json(offline(dir, &["deployment-configs", "preview", name, "-o", "json"])),
        predefined
    );
    let from_file = ["deployment-configs", "preview", "quick-canary", "--group", "web/web-prod"];
    let from_file = [&from_file[..], &["--file", "cutover.yaml", "-o", "json"]].concat();
    assert_eq!(json(offline(dir, &from_file)), declared);

    let unknown = offline(dir, &["deployment-configs", "preview", "nope", "-f", "cutover.yaml"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert_eq!(
        stderr(&unknown),
        "error: no deployment config `nope`: it is neither predefined (CodeDeployDefault.*) nor \
         declared in cutover.yaml\n"
    );
}
