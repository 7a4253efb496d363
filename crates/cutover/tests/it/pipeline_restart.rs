//! Pipelines live in the engine's loop: a push's execution and the deployment its deploy action
//! starts are decided by that one loop, and `kill -9` of the control plane between the deployment's
//! start and its end loses neither: the next `cutover up` adopts the deployment (it does not start
//! another) and the execution finishes with it.

use std::time::{Duration, Instant};

use crate::harness::*;

/// Waits for `condition`, which answers the value once it holds and, either way, what it saw;
/// on timeout the panic prints the last thing seen, so a failure under load explains itself.
#[track_caller]
fn wait_showing<T>(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> (Option<T>, String),
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let (value, seen) = condition();
        if let Some(value) = value {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen: {seen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The executions of pipeline `web`, or what the CLI said instead.
fn executions(cluster: &Cluster) -> Result<Vec<serde_json::Value>, String> {
    let output = cluster.cli(&["pipelines", "executions", "web", "--output", "json"]);
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Array(list)) if output.status.success() => Ok(list),
        _ => Err(format!("{text}{}", String::from_utf8_lossy(&output.stderr))),
    }
}

#[test]
fn a_pipeline_deployment_interrupted_by_kill_9_is_adopted_once_and_its_execution_finishes() {
    let pipeline = r#"repositories:
  - name: web
pipelines:
  - name: web
    source: { repository: web, branch: main }
    stages:
      - name: Deploy
        actions:
          - { name: deploy, type: deploy, deployment_group: web/web-prod }
"#;
    let mut cluster = Cluster::start(Options {
        // Slow enough that the kill lands while the deployment runs.
        config: "{ name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 6s }",
        top_extra: pipeline.to_string(),
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let remote = cluster.json(&["repos", "get", "web"])["clone_url"].as_str().unwrap().to_string();

    // The release: v2 of the service's own app directory (absolute: the deploy action reads the
    // task definition from the pushed commit's artifact).
    let repo = cluster.path("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let taskdef = std::fs::read_to_string(cluster.path("taskdef-v2.json"))
        .unwrap()
        .replace(r#""image": "app""#, &format!(r#""image": "{}""#, cluster.path("app").display()));
    std::fs::write(repo.join("taskdef.json"), taskdef).unwrap();
    std::fs::write(repo.join("appspec.yaml"), appspec("")).unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["remote", "add", "cutover", &remote]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "v2"]);
    git(&repo, &["push", "-q", "cutover", "main"]);

    // The execution records the deployment its action started.
    let (execution_id, deployment_id) = wait_showing(
        "the push's execution to start its deployment",
        Duration::from_secs(60),
        || {
            let list = match executions(&cluster) {
                Ok(list) => list,
                Err(said) => return (None, said),
            };
            let started = list.first().and_then(|summary| {
                let id = summary["id"].as_str()?.to_string();
                let execution = cluster.json(&["pipelines", "execution", "web", &id]);
                let deployment = execution["deployments"][0].as_str()?.to_string();
                Some((id, deployment))
            });
            (started, serde_json::Value::Array(list).to_string())
        },
    );
    wait_showing("the deployment to run green", Duration::from_secs(60), || {
        let view = cluster.deployment(&deployment_id);
        (
            (view["status"] == "InProgress" && view["green"]["running_count"] == 2).then_some(()),
            view.to_string(),
        )
    });

    cluster.kill_control_plane();
    cluster.up();

    let execution =
        wait_showing("the execution to finish after the restart", Duration::from_secs(120), || {
            let execution = cluster.json(&["pipelines", "execution", "web", &execution_id]);
            (execution["ended_at"].is_u64().then(|| execution.clone()), execution.to_string())
        });
    assert_eq!(execution["status"], "Succeeded", "{execution}");
    assert_eq!(execution["deployments"], serde_json::json!([deployment_id]), "{execution}");
    let deployments = cluster.json(&["deployments", "list"]);
    let ids: Vec<&str> =
        deployments.as_array().unwrap().iter().filter_map(|d| d["id"].as_str()).collect();
    assert_eq!(ids, [deployment_id.as_str()], "adopted, not started again: {deployments}");
    assert_eq!(cluster.deployment(&deployment_id)["status"], "Succeeded");
    assert_eq!(get(cluster.prod, "/").unwrap().1, "v2");
    let executions = executions(&cluster).unwrap();
    assert_eq!(executions.len(), 1, "one push, one execution: {executions:?}");
}
