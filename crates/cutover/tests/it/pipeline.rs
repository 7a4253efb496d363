//! The mission: `git push` to cutover's own remote builds with the repository's `buildspec.yml`
//! and releases blue/green. The repository is shaped like seed 001 (its app, `buildspec.yml`,
//! `taskdef.json` with `<IMAGE1_NAME>`, `appspec.yaml` with `<TASK_DEFINITION>`); on the process
//! runtime the build produces a directory instead of an image.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

const BUILDSPEC: &str = r#"version: 0.2
phases:
  pre_build:
    commands:
      - IMAGE_TAG=$(echo $CODEBUILD_RESOLVED_SOURCE_VERSION | cut -c 1-7)
      - IMAGE_DIR="$IMAGES_DIR/web-$IMAGE_TAG"
  build:
    commands:
      - ./test.sh
      - mkdir -p "$IMAGE_DIR" && cp "$DEMO_APP" "$IMAGE_DIR/cutover-demo-app"
  post_build:
    commands:
      - printf '{"ImageURI":"%s"}' "$IMAGE_DIR" > imageDetail.json
artifacts:
  files:
    - imageDetail.json
"#;

fn write_app(repo: &Path, version: &str, test_passes: bool, hook: &str) {
    let taskdef = format!(
        r#"{{"family": "web", "containerDefinitions": [{{"name": "web", "image": "<IMAGE1_NAME>",
            "command": ["cutover-demo-app"], "essential": true, "stopTimeout": 2,
            "portMappings": [{{"containerPort": 8080, "hostPort": 8080, "protocol": "tcp"}}],
            "environment": [{{"name": "APP_VERSION", "value": "{version}"}}]}}],
            "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "256", "memory": "512"}}"#
    );
    std::fs::write(repo.join("taskdef.json"), taskdef).unwrap();
    std::fs::write(repo.join("appspec.yaml"), appspec(hook)).unwrap();
    std::fs::write(repo.join("buildspec.yml"), BUILDSPEC).unwrap();
    let test = if test_passes {
        "#!/bin/sh\necho tests pass\n"
    } else {
        "#!/bin/sh\necho 'unit tests failed' >&2\nexit 1\n"
    };
    std::fs::write(repo.join("test.sh"), test).unwrap();
    Command::new("chmod").arg("+x").arg(repo.join("test.sh")).status().unwrap();
}

fn push(cluster: &Cluster, repo: &Path, message: &str) -> String {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["push", "-q", "cutover", "main"]);
    let commit = git(repo, &["rev-parse", "HEAD"]);
    // The execution of this commit.
    wait_for("an execution of the push", Duration::from_secs(30), || {
        let executions = cluster.json(&["pipelines", "executions", "web"]);
        executions
            .as_array()?
            .iter()
            .find(|e| e["commit"] == commit.as_str())
            .map(|e| e["id"].as_str().unwrap().to_string())
    })
}

fn finished(cluster: &Cluster, id: &str) -> serde_json::Value {
    wait_for("the execution to finish", Duration::from_secs(120), || {
        let execution = cluster.json(&["pipelines", "execution", "web", id]);
        execution["ended_at"].is_u64().then_some(execution)
    })
}

#[test]
fn git_push_builds_and_releases_blue_green_and_bad_pushes_change_nothing() {
    let images = tempfile::tempdir().unwrap();
    let pipeline = format!(
        r#"repositories:
  - name: web
pipelines:
  - name: web
    source: {{ repository: web, branch: main }}
    stages:
      - name: Build
        actions:
          - name: build
            type: build
            env: {{ IMAGES_DIR: "{images}", DEMO_APP: "{demo}" }}
      - name: Deploy
        actions:
          - {{ name: deploy, type: deploy, deployment_group: web/web-prod }}
"#,
        images = images.path().display(),
        demo = demo_app().display(),
    );
    let cluster = Cluster::start(Options { top_extra: pipeline, ..Options::default() });
    cluster.apply_and_wait_for_v1();
    let remote = cluster.json(&["repos", "get", "web"])["clone_url"].as_str().unwrap().to_string();

    let repo = cluster.path("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["remote", "add", "cutover", &remote]);

    // Push 1: the app at v1 (the service runs v1 already; this release goes through the pipeline).
    write_app(&repo, "v1", true, "");
    let first = push(&cluster, &repo, "v1");
    let execution = finished(&cluster, &first);
    assert_eq!(execution["status"], "Succeeded", "{execution}");

    // Push 2: v2, released through the canary while production is under load.
    let test_addr = cluster.test;
    let test_watch = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        wait_for("the test listener to serve v2", Duration::from_secs(120), || {
            (get(test_addr, "/").ok()?.1 == "v2").then(|| started.elapsed())
        })
    });
    let load = Load::start(cluster.prod, 4);
    write_app(&repo, "v2", true, "");
    let second = push(&cluster, &repo, "v2");
    let execution = finished(&cluster, &second);
    let samples = load.finish();
    assert_eq!(execution["status"], "Succeeded", "{execution}");
    assert_eq!(
        failures(&samples),
        Vec::<&Sample>::new(),
        "requests failed during the pipeline's release"
    );
    let first_v2 =
        samples.iter().position(|s| s.version == "v2").expect("production never served v2");
    let last_v1 =
        samples.iter().rposition(|s| s.version == "v1").expect("production served v1 first");
    assert!(first_v2 < last_v1, "production moved through a canary (both versions at once)");
    assert_eq!(samples.last().unwrap().version, "v2");
    let test_saw_v2 = test_watch.join().unwrap();
    assert!(
        test_saw_v2 <= samples[first_v2].at + Duration::from_millis(500),
        "the test listener served v2 first"
    );
    let deployments = execution["deployments"].as_array().unwrap();
    assert_eq!(deployments.len(), 1, "{execution}");
    let deployment = cluster.deployment(deployments[0].as_str().unwrap());
    assert_eq!(deployment["status"], "Succeeded");
    assert!(deployment["task_definition"].as_str().unwrap().starts_with("web:"));

    // Push 3: a build that fails deploys nothing; production keeps v2.
    let deployments_before = cluster.json(&["deployments", "list"]).as_array().unwrap().len();
    write_app(&repo, "v3", false, "");
    let third = push(&cluster, &repo, "v3 with failing tests");
    let execution = finished(&cluster, &third);
    assert_eq!(execution["status"], "Failed", "{execution}");
    assert_eq!(
        cluster.json(&["deployments", "list"]).as_array().unwrap().len(),
        deployments_before
    );
    let build_id = execution["builds"][0].as_str().unwrap().to_string();
    let log = cluster.cli_ok(&["builds", "logs", &build_id]);
    assert!(log.contains("unit tests failed"), "the build log is kept: {log}");
    assert_eq!(get(cluster.prod, "/").unwrap().1, "v2");

    // Push 4: its validation hook fails: the release rolls back and production stays on v2.
    write_app(&repo, "v4", true, "fail");
    let fourth = push(&cluster, &repo, "v4 failing its smoke test");
    let execution = finished(&cluster, &fourth);
    assert_eq!(execution["status"], "Failed", "{execution}");
    let deployment = cluster.deployment(execution["deployments"][0].as_str().unwrap());
    assert_eq!(deployment["rolled_back"], true, "{deployment}");
    assert_eq!(get(cluster.prod, "/").unwrap().1, "v2");

    // Started again on the deployed commit, the build writes v2 into the very image directory
    // production's tasks were started from: they run their own copies, so the build and the
    // release succeed.
    let deployed = git(&repo, &["rev-parse", "HEAD~2"]);
    let started = cluster.json(&["pipelines", "start", "web", "--commit", &deployed]);
    let execution = finished(&cluster, started["execution_id"].as_str().unwrap());
    assert_eq!(execution["status"], "Succeeded", "{execution}");
    assert_eq!(get(cluster.prod, "/").unwrap().1, "v2");
}
