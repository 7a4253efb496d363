//! End-to-end tests of `pipelines` at its boundary: real git over HTTP, real builds in bash, a fake
//! deployer.

mod common;

use std::path::Path;
use std::time::Duration;

use common::registry::Registry;
use common::*;
use pipelines::DeploymentState;

fn app_files(buildspec: &str) -> Vec<(&'static str, String)> {
    vec![
        ("buildspec.yml", buildspec.to_string()),
        ("taskdef.json", TASKDEF.to_string()),
        ("appspec.yaml", APPSPEC.to_string()),
    ]
}

fn as_refs<'a>(files: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    files.iter().map(|(a, b)| (*a, b.as_str())).collect()
}

fn release_pipeline() -> config::PipelineDecl {
    pipeline(
        "web",
        source_repo("app"),
        vec![
            stage("Build", vec![build_action("image", Some("build"))]),
            stage("Deploy", vec![deploy_action(Some("build"))]),
        ],
    )
}

/// The build names its image in a real registry; the deploy action hands the deployer that
/// image pinned to the digest its tag names when the action runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_push_builds_and_hands_the_image_pinned_by_digest_to_the_deployer() {
    let registry = tokio::task::block_in_place(Registry::start);
    let tmp = tempfile::tempdir().unwrap();
    let deployer = FakeDeployer::new(DeploymentState::Succeeded);
    let server = Server::start(&tmp.path().join("data"), Some("s3cret"), deployer.clone()).await;
    let plan = server
        .ci()
        .apply(&[config::RepositoryDecl { name: "app".into() }], &[release_pipeline()])
        .unwrap();
    assert_eq!(plan.len(), 2, "{plan:?}");
    let (s, repo) = server.get("/v1/repos/app").await;
    assert_eq!(s, 200);
    assert_eq!(repo["clone_url"], format!("{}/git/app.git", server.url));

    let work = tmp.path().join("work");
    let buildspec = BUILDSPEC_OK.replace("web:%s", &format!("{}/web:%s", registry.addr));
    work_repo(&work, &as_refs(&app_files(&buildspec)));
    let commit = git_ok(&work, &["rev-parse", "HEAD"]);
    // The image the build names, pushed as a buildspec's `docker push` would.
    let digest = tokio::task::block_in_place(|| registry.push("web", &commit, "v1"));
    let out = push(&work, &server.remote("app")).await;
    assert!(out.status.success(), "push: {}", String::from_utf8_lossy(&out.stderr));

    let execs = server.wait_executions("web", 1).await;
    let id = execs[0]["id"].as_str().unwrap().to_string();
    let exec = server.wait_status("web", &id, "Succeeded").await;
    assert_eq!(exec["commit"], commit);
    assert_eq!(exec["pushed_by"], "tester");
    assert_eq!(exec["deployments"], serde_json::json!(["d-1"]));
    let stages: Vec<_> =
        exec["stages"].as_array().unwrap().iter().map(|s| s["status"].clone()).collect();
    assert_eq!(stages, vec!["Succeeded", "Succeeded", "Succeeded"]);
    assert!(exec["stages"][1]["duration_ms"].is_u64());

    let calls = deployer.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].group, "web/web-prod");
    let td = &calls[0].task_definition.text;
    let pinned = format!("{}/web:{commit}@{digest}", registry.addr);
    assert!(td.contains(&format!("\"{pinned}\"")), "{td}");
    assert!(!td.contains("<IMAGE1_NAME>"), "{td}");
    assert!(
        calls[0].appspec.text.contains("TaskDefinition: <TASK_DEFINITION>"),
        "left for the deployer"
    );

    let build_id = exec["builds"][0].as_str().unwrap();
    let (s, build) = server.get(&format!("/v1/builds/{build_id}")).await;
    assert_eq!(s, 200);
    assert_eq!(build["status"], "SUCCEEDED");
    assert!(
        build["phases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["phase"] == "BUILD" && p["status"] == "SUCCEEDED"),
        "{build:#}"
    );
    let log = server.get_text(&format!("/v1/builds/{build_id}/logs?follow=true")).await;
    assert!(log.contains(&format!("building {commit}")), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_push_is_refused_when_a_token_is_set() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("data"),
        Some("s3cret"),
        FakeDeployer::new(DeploymentState::Succeeded),
    )
    .await;
    server
        .ci()
        .apply(&[config::RepositoryDecl { name: "app".into() }], &[release_pipeline()])
        .unwrap();
    let work = tmp.path().join("work");
    work_repo(&work, &as_refs(&app_files(BUILDSPEC_OK)));
    let out = push(&work, &format!("{}/git/app.git", server.url)).await;
    assert!(!out.status.success(), "an anonymous push must fail");
    let wrong = server.url.replace("http://", "http://x:wrong@") + "/git/app.git";
    let out = push(&work, &wrong).await;
    assert!(!out.status.success(), "a push with a wrong token must fail");
    let (s, _) = reqwest::get(format!("{}/v1/pipelines", server.url))
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(s, 401);
    assert!(server.executions("web").await.is_empty());
    let heads = git_ok(&server.data_dir.join("repos/app.git"), &["for-each-ref", "refs/heads"]);
    assert!(heads.is_empty(), "nothing was pushed: {heads}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_build_fails_the_execution_and_never_deploys() {
    let tmp = tempfile::tempdir().unwrap();
    let deployer = FakeDeployer::new(DeploymentState::Succeeded);
    let server = Server::start(&tmp.path().join("data"), None, deployer.clone()).await;
    server
        .ci()
        .apply(&[config::RepositoryDecl { name: "app".into() }], &[release_pipeline()])
        .unwrap();
    let failing = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo compiling\n      - exit 3\nartifacts:\n  files:\n    - '**/*'\n";
    let work = tmp.path().join("work");
    work_repo(&work, &as_refs(&app_files(failing)));
    assert!(push(&work, &server.remote("app")).await.status.success());
    let id = server.wait_executions("web", 1).await[0]["id"].as_str().unwrap().to_string();
    let exec = server.wait_status("web", &id, "Failed").await;
    assert_eq!(exec["stages"][1]["status"], "Failed");
    assert!(exec["stages"][2]["status"].is_null(), "deploy stage never started: {exec:#}");
    let build_id = exec["builds"][0].as_str().unwrap();
    let (_, build) = server.get(&format!("/v1/builds/{build_id}")).await;
    assert_eq!(build["status"], "FAILED");
    assert!(deployer.calls().is_empty());
}

/// The build names a tag its registry never got: the deploy action fails with what to push and
/// asks for no deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_whose_image_the_registry_does_not_have_fails_and_starts_no_deployment() {
    let registry = tokio::task::block_in_place(Registry::start);
    let tmp = tempfile::tempdir().unwrap();
    let deployer = FakeDeployer::new(DeploymentState::Succeeded);
    let server = Server::start(&tmp.path().join("data"), None, deployer.clone()).await;
    server
        .ci()
        .apply(&[config::RepositoryDecl { name: "app".into() }], &[release_pipeline()])
        .unwrap();
    let work = tmp.path().join("work");
    let buildspec = BUILDSPEC_OK.replace("web:%s", &format!("{}/web:%s", registry.addr));
    work_repo(&work, &as_refs(&app_files(&buildspec)));
    let commit = git_ok(&work, &["rev-parse", "HEAD"]);
    assert!(push(&work, &server.remote("app")).await.status.success());
    let id = server.wait_executions("web", 1).await[0]["id"].as_str().unwrap().to_string();
    let exec = server.wait_status("web", &id, "Failed").await;
    assert_eq!(exec["stages"][1]["status"], "Succeeded", "{exec:#}");
    assert_eq!(exec["stages"][2]["status"], "Failed", "{exec:#}");
    let message = exec["stages"][2]["actions"][0]["message"].as_str().unwrap_or_default();
    assert_eq!(
        message,
        format!(
            "registry {0} has no tag `{commit}` of web: push it before the deploy stage runs \
             (`docker push {0}/web:{commit}` in the buildspec)",
            registry.addr
        ),
        "{exec:#}"
    );
    assert!(deployer.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_quick_pushes_supersede_the_waiting_execution() {
    let tmp = tempfile::tempdir().unwrap();
    let gate = tmp.path().join("gate");
    let deployer = FakeDeployer::new(DeploymentState::Succeeded);
    let server = Server::start(&tmp.path().join("data"), None, deployer.clone()).await;
    server
        .ci()
        .apply(&[config::RepositoryDecl { name: "app".into() }], &[release_pipeline()])
        .unwrap();
    let gated = BUILDSPEC_OK.replace(
        "      - echo \"building",
        &format!(
            "      - while [ ! -e {} ]; do sleep 0.05; done\n      - echo \"building",
            gate.display()
        ),
    );
    let work = tmp.path().join("work");
    work_repo(&work, &as_refs(&app_files(&gated)));
    assert!(push(&work, &server.remote("app")).await.status.success());
    let first = server.wait_executions("web", 1).await[0]["id"].as_str().unwrap().to_string();
    // The first execution holds the Build stage (its build waits for the gate).
    let ok = wait_until(Duration::from_secs(30), || async {
        server.execution("web", &first).await["stages"][1]["status"] == "InProgress"
    })
    .await;
    assert!(ok, "first execution never entered Build");
    commit(&work, &[("v", "2")], "second");
    assert!(push(&work, &server.remote("app")).await.status.success());
    server.wait_executions("web", 2).await;
    let third_commit = commit(&work, &[("v", "3")], "third");
    assert!(push(&work, &server.remote("app")).await.status.success());
    let execs = server.wait_executions("web", 3).await;
    let (third, second) = (
        execs[0]["id"].as_str().unwrap().to_string(),
        execs[1]["id"].as_str().unwrap().to_string(),
    );
    server.wait_status("web", &second, "Superseded").await;
    std::fs::write(&gate, "open").unwrap();
    server.wait_status("web", &first, "Succeeded").await;
    let done = server.wait_status("web", &third, "Succeeded").await;
    assert_eq!(done["commit"], third_commit);
    assert_eq!(deployer.calls().len(), 2, "the superseded execution never deployed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_approved_and_rejected_through_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let deployer = FakeDeployer::new(DeploymentState::Succeeded);
    let server = Server::start(&tmp.path().join("data"), Some("t0ken"), deployer.clone()).await;
    let p = pipeline(
        "gated",
        source_repo("app"),
        vec![stage("Approve", vec![approval_action()]), stage("Deploy", vec![deploy_action(None)])],
    );
    server.ci().apply(&[config::RepositoryDecl { name: "app".into() }], &[p]).unwrap();
    let work = tmp.path().join("work");
    work_repo(
        &work,
        &[
            ("taskdef.json", TASKDEF.replace("<IMAGE1_NAME>", "img:1").as_str()),
            ("appspec.yaml", APPSPEC),
        ],
    );
    assert!(push(&work, &server.remote("app")).await.status.success());
    let id = server.wait_executions("gated", 1).await[0]["id"].as_str().unwrap().to_string();
    let ok = wait_until(Duration::from_secs(30), || async {
        server.execution("gated", &id).await["stages"][1]["status"] == "InProgress"
    })
    .await;
    assert!(ok, "approval stage not reached");
    let (s, v) = server
        .post(
            &format!("/v1/approvals/{id}/approve"),
            serde_json::json!({"comment": "ship it", "by": "ops"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let exec = server.wait_status("gated", &id, "Succeeded").await;
    assert_eq!(exec["stages"][1]["actions"][0]["decision"]["comment"], "ship it");
    assert_eq!(deployer.calls().len(), 1);

    // A second push, rejected.
    commit(&work, &[("v", "2")], "second");
    assert!(push(&work, &server.remote("app")).await.status.success());
    let id2 = server.wait_executions("gated", 2).await[0]["id"].as_str().unwrap().to_string();
    let ok = wait_until(Duration::from_secs(30), || async {
        server.execution("gated", &id2).await["stages"][1]["status"] == "InProgress"
    })
    .await;
    assert!(ok, "approval stage not reached");
    let (s, v) = server
        .post(&format!("/v1/approvals/{id2}/reject"), serde_json::json!({"comment": "not today"}))
        .await;
    assert_eq!(s, 200, "{v}");
    server.wait_status("gated", &id2, "Failed").await;
    assert_eq!(deployer.calls().len(), 1, "a rejected release is not deployed");
    let (s, v) = server.post(&format!("/v1/approvals/{id2}/approve"), serde_json::json!({})).await;
    assert_eq!(s, 409, "nothing waits any more");
    assert_eq!(
        v["error"],
        format!("execution `{id2}` has already finished (Failed); start a new execution")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_start_says_it_was_started_manually_and_by_whom() {
    let tmp = tempfile::tempdir().unwrap();
    let deployer = FakeDeployer::new(DeploymentState::Succeeded);
    let server = Server::start(&tmp.path().join("data"), Some("t0ken"), deployer.clone()).await;
    let p = pipeline("gated", source_repo("app"), vec![stage("Approve", vec![approval_action()])]);
    server.ci().apply(&[config::RepositoryDecl { name: "app".into() }], &[p]).unwrap();
    let work = tmp.path().join("work");
    work_repo(&work, &[("v", "1")]);
    assert!(push(&work, &server.remote("app")).await.status.success());
    let pushed = server.wait_executions("gated", 1).await;
    assert_eq!(pushed[0]["pushed_by"], "tester", "a push names the pusher");

    // The API token says nothing about who started it; git-style Basic credentials do.
    let (s, v) = server.post("/v1/pipelines/gated/start", serde_json::json!({})).await;
    assert_eq!(s, 201, "{v}");
    let started = server.wait_executions("gated", 2).await;
    assert_eq!(started[0]["pushed_by"], "started manually");
    let response = reqwest::Client::new()
        .post(format!("{}/v1/pipelines/gated/start", server.url))
        .basic_auth("alice", Some("t0ken"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201, "{:?}", response.text().await);
    let started = server.wait_executions("gated", 3).await;
    assert_eq!(started[0]["pushed_by"], "started manually by alice");
}

fn url_pipeline(
    name: &str,
    url: &str,
    poll: Option<Duration>,
    webhook: Option<&str>,
) -> config::PipelineDecl {
    let source = config::PipelineSource {
        location: config::SourceLocation::Url {
            url: url.into(),
            poll_interval: poll,
            webhook: webhook.map(|w| config::WebhookTrigger { secret_env: w.into() }),
        },
        branch: "main".into(),
        branches: None,
        output_artifact: "source".into(),
    };
    pipeline(name, source, vec![stage("Deploy", vec![deploy_action(None)])])
}

fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_with_a_good_signature_triggers_and_a_bad_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // The secret comes from the environment of the process; cargo gives every test process
    // CARGO_MANIFEST_DIR (setting a variable would need `unsafe`, which the workspace denies).
    let secret = env!("CARGO_MANIFEST_DIR");
    let deployer = FakeDeployer::new(DeploymentState::Succeeded);
    let server = Server::start(&tmp.path().join("data"), Some("api-token"), deployer.clone()).await;
    let upstream = tmp.path().join("upstream");
    work_repo(
        &upstream,
        &[
            ("taskdef.json", TASKDEF.replace("<IMAGE1_NAME>", "img:1").as_str()),
            ("appspec.yaml", APPSPEC),
        ],
    );
    let head = git_ok(&upstream, &["rev-parse", "HEAD"]);
    let url = format!("file://{}", upstream.display());
    server
        .ci()
        .apply(&[], &[url_pipeline("hooked", &url, None, Some("CARGO_MANIFEST_DIR"))])
        .unwrap();

    let body = serde_json::to_vec(&serde_json::json!({
        "ref": "refs/heads/main", "after": head,
        "pusher": {"name": "grace"}, "head_commit": {"message": "first"}
    }))
    .unwrap();
    let client = reqwest::Client::new();
    let hook = format!("{}/v1/webhooks/hooked", server.url);
    let missing = client
        .post(&hook)
        .header("X-GitHub-Event", "push")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 401);
    let bad = client
        .post(&hook)
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", sign("wrong", &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    assert!(server.executions("hooked").await.is_empty(), "no execution from a refused hook");

    let good = client
        .post(&hook)
        .header("X-Gitea-Event", "push")
        .header("X-Hub-Signature-256", sign(secret, &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(good.status().as_u16(), 202);
    let v: serde_json::Value = good.json().await.unwrap();
    let id = v["execution_id"].as_str().unwrap().to_string();
    let exec = server.wait_status("hooked", &id, "Succeeded").await;
    assert_eq!(exec["commit"], head);
    assert_eq!(exec["pushed_by"], "grace");

    // Another branch does not start the pipeline.
    let other =
        serde_json::to_vec(&serde_json::json!({"ref": "refs/heads/dev", "after": head})).unwrap();
    let resp = client
        .post(&hook)
        .header("X-Hub-Signature-256", sign(secret, &other))
        .body(other)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(server.executions("hooked").await.len(), 1);
}

/// Two webhooks for one pipeline at the same time: the loop takes them one after the other, so
/// each starts its own execution under its own number, and each is answered only once its
/// execution is stored (a client that reads it right after the 202 finds it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_webhooks_start_one_stored_execution_each_numbered_in_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = env!("CARGO_MANIFEST_DIR");
    let deployer = FakeDeployer::new(DeploymentState::InProgress);
    let server = Server::start(&tmp.path().join("data"), None, deployer.clone()).await;
    let upstream = tmp.path().join("upstream");
    work_repo(
        &upstream,
        &[
            ("taskdef.json", TASKDEF.replace("<IMAGE1_NAME>", "img:1").as_str()),
            ("appspec.yaml", APPSPEC),
        ],
    );
    let first = git_ok(&upstream, &["rev-parse", "HEAD"]);
    let second = commit(&upstream, &[("README", "two")], "second");
    let url = format!("file://{}", upstream.display());
    server
        .ci()
        .apply(&[], &[url_pipeline("hooked", &url, None, Some("CARGO_MANIFEST_DIR"))])
        .unwrap();

    let hook = format!("{}/v1/webhooks/hooked", server.url);
    let deliver = |commit: String| {
        let (hook, server_url) = (hook.clone(), server.url.clone());
        async move {
            let body = serde_json::to_vec(&serde_json::json!({
                "ref": "refs/heads/main", "after": commit, "pusher": {"name": "grace"}
            }))
            .unwrap();
            let client = reqwest::Client::new();
            let answer = client
                .post(&hook)
                .header("X-GitHub-Event", "push")
                .header("X-Hub-Signature-256", sign(secret, &body))
                .body(body)
                .send()
                .await
                .unwrap();
            let status = answer.status().as_u16();
            let v: serde_json::Value = answer.json().await.unwrap();
            assert_eq!(status, 202, "{v}");
            let id = v["execution_id"].as_str().unwrap().to_string();
            // Read at once, by the client that was answered: the execution is already stored.
            let stored = client
                .get(format!("{server_url}/v1/pipelines/hooked/executions/{id}"))
                .send()
                .await
                .unwrap();
            assert_eq!(stored.status().as_u16(), 200, "{id} was answered before it was stored");
            let stored: serde_json::Value = stored.json().await.unwrap();
            assert_eq!(stored["commit"], commit.as_str());
            id
        }
    };
    let (a, b) = tokio::join!(deliver(first.clone()), deliver(second.clone()));
    let mut ids = [a, b];
    ids.sort();
    assert_eq!(ids, ["hooked-1".to_string(), "hooked-2".to_string()], "one execution each");
    let executions = server.executions("hooked").await;
    assert_eq!(executions.len(), 2, "{executions:#?}");
    let started = |id: &str| {
        executions.iter().find(|e| e["id"] == id).unwrap()["started_at"].as_u64().unwrap()
    };
    assert!(started("hooked-1") <= started("hooked-2"), "numbered in the order they started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_to_an_unknown_pipeline_is_refused_like_a_bad_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let deployer = FakeDeployer::new(DeploymentState::Succeeded);
    let server = Server::start(&tmp.path().join("data"), Some("api-token"), deployer).await;
    let url = format!("file://{}", tmp.path().join("upstream").display());
    server
        .ci()
        .apply(
            &[],
            &[
                url_pipeline("hooked", &url, None, Some("CARGO_MANIFEST_DIR")),
                url_pipeline("polled", &url, Some(Duration::from_secs(3600)), None),
            ],
        )
        .unwrap();
    let body =
        br#"{"ref": "refs/heads/main", "after": "0123456789abcdef0123456789abcdef01234567"}"#;
    let client = reqwest::Client::new();
    let answer = |pipeline: &'static str, signature: Option<String>| {
        let mut request = client
            .post(format!("{}/v1/webhooks/{pipeline}", server.url))
            .header("X-GitHub-Event", "push")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("X-Hub-Signature-256", signature);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };

    // A known pipeline with a wrong signature, and without one: the reference answers.
    let bad = answer("hooked", Some(sign("wrong", body))).await;
    let missing = answer("hooked", None).await;
    assert_eq!(bad.0, 401, "{bad:?}");
    assert_eq!(missing.0, 401, "{missing:?}");
    // An unknown pipeline, and one without a webhook, answer exactly the same: the answer does
    // not tell which pipelines exist.
    for pipeline in ["no-such-pipeline", "polled"] {
        assert_eq!(answer(pipeline, Some(sign("wrong", body))).await, bad, "{pipeline}");
        assert_eq!(answer(pipeline, None).await, missing, "{pipeline}");
    }
    assert!(server.executions("hooked").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_file_repository_is_polled_and_a_new_commit_triggers() {
    let tmp = tempfile::tempdir().unwrap();
    let deployer = FakeDeployer::new(DeploymentState::Succeeded);
    let server = Server::start(&tmp.path().join("data"), None, deployer.clone()).await;
    let upstream = tmp.path().join("upstream");
    work_repo(
        &upstream,
        &[
            ("taskdef.json", TASKDEF.replace("<IMAGE1_NAME>", "img:1").as_str()),
            ("appspec.yaml", APPSPEC),
        ],
    );
    let url = format!("file://{}", upstream.display());
    server
        .ci()
        .apply(&[], &[url_pipeline("watched", &url, Some(Duration::from_secs(1)), None)])
        .unwrap();
    // The first poll starts the pipeline on the current head, as creating a CodePipeline does.
    let first = server.wait_executions("watched", 1).await[0]["id"].as_str().unwrap().to_string();
    server.wait_status("watched", &first, "Succeeded").await;
    let second_commit = commit(&upstream, &[("v", "2")], "second");
    let execs = server.wait_executions("watched", 2).await;
    assert_eq!(execs[0]["commit"], second_commit);
    assert_eq!(execs[0]["message"], "second");
    server.wait_status("watched", execs[0]["id"].as_str().unwrap(), "Succeeded").await;
    assert_eq!(deployer.calls().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_an_execution_in_progress_and_adopts_its_deployment() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let deployer = FakeDeployer::new(DeploymentState::InProgress);
    let server = Server::start(&data, None, deployer.clone()).await;
    server
        .ci()
        .apply(&[config::RepositoryDecl { name: "app".into() }], &[release_pipeline()])
        .unwrap();
    let work = tmp.path().join("work");
    work_repo(&work, &as_refs(&app_files(BUILDSPEC_OK)));
    assert!(push(&work, &server.remote("app")).await.status.success());
    let id = server.wait_executions("web", 1).await[0]["id"].as_str().unwrap().to_string();
    let ok = wait_until(Duration::from_secs(60), || async { !deployer.calls().is_empty() }).await;
    assert!(ok, "deployment never started");
    let store = server.store.clone();
    server.stop();

    let server = Server::start_with(&data, None, deployer.clone(), store).await;
    assert_eq!(server.execution("web", &id).await["status"], "InProgress");
    deployer.set_outcome(DeploymentState::Succeeded);
    server.wait_status("web", &id, "Succeeded").await;
    assert_eq!(deployer.calls().len(), 1, "the running deployment was adopted, not started again");
}

/// A pipeline `plain` (repository `app`, one deploy stage) whose first execution has started a
/// deployment that stays in progress. Returns the server, the deployer and the execution's id.
async fn an_execution_deploying(tmp: &Path) -> (Server, std::sync::Arc<FakeDeployer>, String) {
    let deployer = FakeDeployer::new(DeploymentState::InProgress);
    let server = Server::start(&tmp.join("data"), None, deployer.clone()).await;
    let p = pipeline("plain", source_repo("app"), vec![stage("Deploy", vec![deploy_action(None)])]);
    server.ci().apply(&[config::RepositoryDecl { name: "app".into() }], &[p]).unwrap();
    let work = tmp.join("work");
    work_repo(
        &work,
        &[
            ("taskdef.json", TASKDEF.replace("<IMAGE1_NAME>", "img:1").as_str()),
            ("appspec.yaml", APPSPEC),
        ],
    );
    assert!(push(&work, &server.remote("app")).await.status.success());
    let id = server.wait_executions("plain", 1).await[0]["id"].as_str().unwrap().to_string();
    let ok = wait_until(Duration::from_secs(30), || async { !deployer.calls().is_empty() }).await;
    assert!(ok, "deployment never started");
    (server, deployer, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_an_execution_stops_its_running_deployment() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, deployer, id) = an_execution_deploying(tmp.path()).await;
    let (s, v) = server
        .post(
            &format!("/v1/pipelines/plain/executions/{id}/stop"),
            serde_json::json!({"abandon": false}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let exec = server.wait_status("plain", &id, "Stopped").await;
    assert_eq!(*deployer.stops.lock().unwrap(), vec!["d-1".to_string()]);
    assert_eq!(exec["deployments"], serde_json::json!(["d-1"]));
}

/// (kind, name, action) of each plan item.
fn items(plan: &[pipelines::api::PlanItem]) -> Vec<(&str, &str, &str)> {
    plan.iter().map(|i| (i.kind.as_str(), i.name.as_str(), i.action.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_no_longer_declared_is_deleted_and_its_running_deployment_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, deployer, id) = an_execution_deploying(tmp.path()).await;
    let repos = [config::RepositoryDecl { name: "app".into() }];

    // The plan says what goes, and changes nothing.
    let plan = server.ci().plan(&repos, &[]).unwrap();
    assert_eq!(items(&plan), [("repository", "app", "unchanged"), ("pipeline", "plain", "delete")]);
    let detail = plan[1].detail.as_deref().unwrap();
    assert!(detail.contains(&id), "the plan names the execution it stops: {detail}");
    assert_eq!(server.get("/v1/pipelines").await.1.as_array().unwrap().len(), 1);
    assert!(deployer.stops.lock().unwrap().is_empty());

    // Applied without the pipeline (nor the repository): the pipeline goes, the repository stays.
    let plan = server.ci().apply(&[], &[]).unwrap();
    assert_eq!(items(&plan), [("repository", "app", "keep"), ("pipeline", "plain", "delete")]);
    let keep = plan[0].detail.as_deref().unwrap();
    assert!(
        keep.contains("git data is kept") && keep.contains("cutover repos delete app"),
        "{keep}"
    );
    assert_eq!(server.get("/v1/pipelines").await.1, serde_json::json!([]));
    let (status, _) = server.get("/v1/pipelines/plain").await;
    assert_eq!(status, 404);
    // Its execution was stopped and abandoned, which stopped its deployment; history stays.
    let ok = wait_until(Duration::from_secs(30), || async {
        !deployer.stops.lock().unwrap().is_empty()
    })
    .await;
    assert!(ok, "the running deployment was not stopped");
    assert_eq!(*deployer.stops.lock().unwrap(), vec!["d-1".to_string()]);
    let exec = server.execution("plain", &id).await;
    assert_eq!(exec["status"], "Stopped", "{exec:#}");
    let (status, repos) = server.get("/v1/repos").await;
    assert_eq!((status, repos[0]["name"].clone()), (200, serde_json::json!("app")));
    // Nothing left to delete.
    assert_eq!(items(&server.ci().apply(&[], &[]).unwrap()), [("repository", "app", "keep")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_is_deleted_only_when_no_pipeline_builds_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    let deployer = FakeDeployer::new(DeploymentState::Succeeded);
    let data = tmp.path().join("data");
    let server = Server::start(&data, None, deployer).await;
    let repos = [config::RepositoryDecl { name: "app".into() }];
    server.ci().apply(&repos, &[release_pipeline()]).unwrap();
    let work = tmp.path().join("work");
    work_repo(&work, &as_refs(&app_files(BUILDSPEC_OK)));

    let (status, body) = server.delete("/v1/repos/app").await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("web"), "names the pipeline: {body}");
    assert!(data.join("repos/app.git/HEAD").exists());

    server.ci().apply(&repos, &[]).unwrap();
    let (status, body) = server.delete("/v1/repos/app").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get("/v1/repos").await.1, serde_json::json!([]));
    assert!(!data.join("repos/app.git").exists(), "its git data is gone");
    assert!(!push(&work, &server.remote("app")).await.status.success(), "nothing to push to");
    let (status, body) = server.delete("/v1/repos/app").await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_with_changes_nothing_when_the_callers_writes_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let deployer = FakeDeployer::new(DeploymentState::Succeeded);
    let server = Server::start(&tmp.path().join("data"), None, deployer).await;
    let repos = [config::RepositoryDecl { name: "app".into() }];
    server.ci().apply(&repos, &[release_pipeline()]).unwrap();

    // A new repository and pipeline, and the old pipeline deleted: all refused together.
    let other = [config::RepositoryDecl { name: "other".into() }];
    let p =
        pipeline("plain", source_repo("other"), vec![stage("Deploy", vec![deploy_action(None)])]);
    let result = server.ci().apply_with(&other, &[p], |tx| {
        tx.resource_put("probe", "x", "{}", 1)?;
        Err::<(), _>(store::Error::Conflict("the caller refused".into()))
    });
    assert!(matches!(result, Err(pipelines::Error::Store(_))), "{result:?}");
    let names: Vec<String> = server
        .get("/v1/pipelines")
        .await
        .1
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["web"]);
    let repos_now = server.get("/v1/repos").await.1;
    assert_eq!(repos_now.as_array().unwrap().len(), 1, "{repos_now}");
    assert_eq!(server.store.read(|tx| tx.resource_get("probe", "x")).unwrap(), None);
    let stored: Vec<String> = server
        .store
        .read(|tx| store::DocumentStore::document_rows(tx, "pipeline"))
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(stored, ["web"]);
}

/// The driver sleeps until its next deadline (an action's timeout, a poll, retention) instead of
/// looking every quarter second: a pipeline waiting for an approval due in days costs no turn of
/// the loop, while the approval it waits for is still taken at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_sleeps_until_its_next_deadline_and_wakes_for_what_it_is_told() {
    let tmp = tempfile::tempdir().unwrap();
    let deployer = FakeDeployer::new(DeploymentState::Succeeded);
    let server = Server::start(&tmp.path().join("data"), None, deployer.clone()).await;
    let p = pipeline("gated", source_repo("app"), vec![stage("Approve", vec![approval_action()])]);
    server.ci().apply(&[config::RepositoryDecl { name: "app".into() }], &[p]).unwrap();
    let work = tmp.path().join("work");
    work_repo(&work, &[("README", "gated")]);
    assert!(push(&work, &server.remote("app")).await.status.success());
    let id = server.wait_executions("gated", 1).await[0]["id"].as_str().unwrap().to_string();
    let waiting = wait_until(Duration::from_secs(30), || async {
        server.execution("gated", &id).await["stages"][1]["status"] == "InProgress"
    })
    .await;
    assert!(waiting, "approval stage not reached");

    // Idleness can only be seen over a span of time: two seconds, in which a loop on a 250 ms
    // tick turns eight times and one that sleeps until its next deadline (a minute away, at
    // most: retention) does not turn.
    let before = server.ci().loop_turns();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_turns = server.ci().loop_turns() - before;
    assert!(idle_turns <= 1, "the idle loop turned {idle_turns} times in 2 s");

    let (status, body) =
        server.post(&format!("/v1/approvals/{id}/approve"), serde_json::json!({})).await;
    assert_eq!(status, 200, "{body}");
    server.wait_status("gated", &id, "Succeeded").await;
}
