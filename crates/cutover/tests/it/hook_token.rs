//! A hook reports through an API that needs a token with its own token, `$CUTOVER_HOOK_TOKEN`,
//! which authorizes that one report and nothing else, and only while the execution is pending.

use std::time::Duration;

use crate::harness::*;

/// One request with `token` as the bearer: its status code.
fn status_with(token: &str, method: reqwest::Method, url: &str, body: serde_json::Value) -> u16 {
    reqwest::blocking::Client::new()
        .request(method, url)
        .bearer_auth(token)
        .json(&body)
        .timeout(Duration::from_secs(30))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn a_hook_reports_with_its_own_token_which_allows_nothing_else_and_expires() {
    // The hook hands its environment to the test through this directory, waits for `go`, reports
    // through the API with the CLI and then would sleep past the test: only the report ends it.
    let handoff = tempfile::tempdir().unwrap();
    let dir = handoff.path().display();
    let hook = format!(
        r#"  - {{ name: report, timeout: 60s, run: "echo $CUTOVER_HOOK_TOKEN $CUTOVER_HOOK_EXECUTION_ID > {dir}/token.tmp && mv {dir}/token.tmp {dir}/token; i=0; while [ ! -f {dir}/go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; {CUTOVER} hooks report $CUTOVER_DEPLOYMENT_ID $CUTOVER_HOOK_EXECUTION_ID --status Succeeded --message reported-with-the-hook-token > {dir}/report.log 2>&1; sleep 50" }}"#
    );
    let api_token = "the-api-token-of-this-test".to_string();
    let cluster = Cluster::start(Options {
        hooks: Box::leak(hook.into_boxed_str()),
        env: vec![("CUTOVER_TOKEN", api_token.clone())],
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    std::fs::write(cluster.path("appspec-report.yaml"), appspec("report")).unwrap();
    cluster.cli_ok(&deploy_args("taskdef-v2.json", "appspec-report.yaml", &[]));
    let id = cluster.json(&["deployments", "list"])[0]["id"].as_str().unwrap().to_string();

    let handed = wait_for("the hook to start", Duration::from_secs(60), || {
        std::fs::read_to_string(handoff.path().join("token")).ok()
    });
    let (token, execution) = handed.trim().split_once(' ').expect("token and execution id");
    assert!(token.len() >= 32, "a hook token of {} characters", token.len());
    assert_ne!(token, api_token);

    // While the execution is pending, the token opens nothing but its own report.
    let api = cluster.api_url();
    let report = serde_json::json!({"status": "Failed", "message": "not mine to report"});
    use reqwest::Method;
    let elsewhere = [
        (
            "GET /v1/deployments",
            Method::GET,
            format!("{api}/v1/deployments"),
            serde_json::Value::Null,
        ),
        (
            "another execution",
            Method::PUT,
            format!("{api}/v1/deployments/{id}/lifecycle-hooks/BeforeInstall-0"),
            report.clone(),
        ),
        (
            "another deployment",
            Method::PUT,
            format!("{api}/v1/deployments/d-other/lifecycle-hooks/{execution}"),
            report.clone(),
        ),
        ("a deploy", Method::POST, format!("{api}/v1/deployments"), serde_json::json!({})),
        ("a stop", Method::POST, format!("{api}/v1/deployments/{id}/stop"), serde_json::json!({})),
    ];
    for (what, method, url, body) in elsewhere {
        assert_eq!(status_with(token, method, &url, body), 403, "{what} with the hook's token");
    }
    let status = cluster.deployment(&id)["status"].clone();
    assert!(status != "Failed" && status != "Stopped", "nothing above touched it: {status}");

    // The hook reports with the CLI and its own token; the deployment goes on to the end.
    std::fs::write(handoff.path().join("go"), "").unwrap();
    let view = wait_for("the deployment to succeed", Duration::from_secs(90), || {
        let view = cluster.deployment(&id);
        assert_ne!(view["status"], "Failed", "{view}");
        (view["status"] == "Succeeded").then_some(view)
    });
    let log = std::fs::read_to_string(handoff.path().join("report.log")).unwrap_or_default();
    assert!(
        view.to_string().contains("reported-with-the-hook-token"),
        "the result came through the API: {view}\nhooks report said: {log}"
    );

    // The execution is over: its token opens nothing, its own report included.
    let execution = format!("{api}/v1/deployments/{id}/lifecycle-hooks/{execution}");
    assert_eq!(
        status_with(token, Method::PUT, &execution, serde_json::json!({"status": "Succeeded"})),
        401,
        "the report after the execution completed"
    );
    assert_eq!(
        status_with(token, Method::GET, &format!("{api}/v1/deployments"), serde_json::Value::Null),
        401
    );
}

/// Accepts one HTTP request on `listener`, answers `200` with no body (the result comes through
/// the API) and returns the request's JSON body.
fn one_hook_call(listener: std::net::TcpListener) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Read, Write};
    let (stream, _) = listener.accept().unwrap();
    let mut reader = BufReader::new(stream);
    let mut content_length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).unwrap();
    let mut stream = reader.into_inner();
    stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").unwrap();
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn an_http_hook_reports_with_the_token_of_its_payload() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook = format!(
        "  - {{ name: remote, url: \"http://{}/hook\", timeout: 60s }}",
        listener.local_addr().unwrap()
    );
    let cluster = Cluster::start(Options {
        hooks: Box::leak(hook.into_boxed_str()),
        env: vec![("CUTOVER_TOKEN", "the-api-token-of-this-test".to_string())],
        ..Options::default()
    });
    let call = std::thread::spawn(move || one_hook_call(listener));
    cluster.apply_and_wait_for_v1();
    std::fs::write(cluster.path("appspec-remote.yaml"), appspec("remote")).unwrap();
    cluster.cli_ok(&deploy_args("taskdef-v2.json", "appspec-remote.yaml", &[]));
    let payload = call.join().unwrap();
    let token = payload["HookToken"].as_str().expect("HookToken in the payload");
    let report = format!(
        "{}/v1/deployments/{}/lifecycle-hooks/{}",
        cluster.api_url(),
        payload["DeploymentId"].as_str().unwrap(),
        payload["LifecycleEventHookExecutionId"].as_str().unwrap()
    );

    let deployments = format!("{}/v1/deployments", cluster.api_url());
    assert_eq!(
        status_with(token, reqwest::Method::GET, &deployments, serde_json::Value::Null),
        403
    );
    let succeeded = serde_json::json!({"status": "Succeeded", "message": "remote check passed"});
    assert_eq!(status_with(token, reqwest::Method::PUT, &report, succeeded.clone()), 200);
    let id = payload["DeploymentId"].as_str().unwrap();
    wait_for("the deployment to succeed", Duration::from_secs(90), || {
        let view = cluster.deployment(id);
        assert_ne!(view["status"], "Failed", "{view}");
        (view["status"] == "Succeeded").then_some(())
    });
    assert_eq!(status_with(token, reqwest::Method::PUT, &report, succeeded), 401);
}

/// The tokens a hook wrote to `dir`, by execution id.
fn handed_tokens(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut tokens: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            let execution = name.strip_suffix(".token")?.to_string();
            Some((execution, std::fs::read_to_string(entry.path()).ok()?.trim().to_string()))
        })
        .collect();
    tokens.sort();
    tokens
}

#[test]
fn a_hook_run_again_after_a_restart_gets_a_new_token_and_the_old_one_opens_nothing() {
    let handoff = tempfile::tempdir().unwrap();
    let dir = handoff.path().display();
    // Each execution leaves its token under its own id and waits (bounded) for `go`.
    let hook = format!(
        r#"  - {{ name: wait, timeout: 60s, run: "echo $CUTOVER_HOOK_TOKEN > {dir}/$CUTOVER_HOOK_EXECUTION_ID.tmp && mv {dir}/$CUTOVER_HOOK_EXECUTION_ID.tmp {dir}/$CUTOVER_HOOK_EXECUTION_ID.token; i=0; while [ ! -f {dir}/go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done" }}"#
    );
    let mut cluster = Cluster::start(Options {
        hooks: Box::leak(hook.into_boxed_str()),
        env: vec![("CUTOVER_TOKEN", "the-api-token-of-this-test".to_string())],
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    std::fs::write(cluster.path("appspec-wait.yaml"), appspec("wait")).unwrap();
    cluster.cli_ok(&deploy_args("taskdef-v2.json", "appspec-wait.yaml", &[]));
    let id = cluster.json(&["deployments", "list"])[0]["id"].as_str().unwrap().to_string();
    let first = wait_for("the hook to start", Duration::from_secs(60), || {
        handed_tokens(handoff.path()).pop()
    });

    cluster.kill_control_plane();
    cluster.up();
    let second = wait_for("the hook to run again", Duration::from_secs(60), || {
        handed_tokens(handoff.path()).into_iter().find(|(execution, _)| *execution != first.0)
    });
    assert_ne!(second.1, first.1, "the execution run again has a token of its own");

    let report = |execution: &str| {
        format!("{}/v1/deployments/{id}/lifecycle-hooks/{execution}", cluster.api_url())
    };
    let succeeded = serde_json::json!({"status": "Succeeded"});
    for execution in [&first.0, &second.0] {
        assert_eq!(
            status_with(&first.1, reqwest::Method::PUT, &report(execution), succeeded.clone()),
            401,
            "the token from before the restart, for {execution}"
        );
    }
    assert_eq!(status_with(&second.1, reqwest::Method::PUT, &report(&second.0), succeeded), 200);
    std::fs::write(handoff.path().join("go"), "").unwrap();
    wait_for("the deployment to succeed", Duration::from_secs(90), || {
        let view = cluster.deployment(&id);
        assert_ne!(view["status"], "Failed", "{view}");
        (view["status"] == "Succeeded").then_some(())
    });
}

#[test]
fn a_hook_that_prints_its_token_leaves_no_token_in_the_deployments_history() {
    let cluster = Cluster::start(Options {
        hooks: r#"  - { name: leak, run: "echo token=$CUTOVER_HOOK_TOKEN.; exit 3", timeout: 10s }"#,
        env: vec![("CUTOVER_TOKEN", "the-api-token-of-this-test".to_string())],
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    std::fs::write(cluster.path("appspec-leak.yaml"), appspec("leak")).unwrap();
    let deploy = cluster.cli(&deploy_args("taskdef-v2.json", "appspec-leak.yaml", &["--wait"]));
    assert_eq!(deploy.status.code(), Some(1), "the hook fails the deployment");
    let id = cluster.json(&["deployments", "list"])[0]["id"].as_str().unwrap().to_string();
    let message = cluster.deployment(&id)["error_message"].as_str().unwrap().to_string();
    assert!(message.contains("token=[CUTOVER_HOOK_TOKEN]."), "{message}");
}
