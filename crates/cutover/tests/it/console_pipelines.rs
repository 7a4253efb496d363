//! The console's pipeline pages in a real headless Chromium against a real `cutover up`, real
//! `git push`es and real builds: a build's log follows live, an approval approved in the browser
//! lets the deploy stage start, and a viewer finds no button and has a forged approval refused.
//! Every page a test opens is written to `target/console-screenshots/`.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::console::{Browser, wait_until};
use crate::harness::*;

/// A build that prints a line, then waits for the test to create `$GATE` before it goes on: the
/// line is in the log while the build still runs. Then it builds the demo app's "image".
const BUILDSPEC: &str = r#"version: 0.2
phases:
  pre_build:
    commands:
      - echo "first line of the build"
      - while [ ! -e "$GATE" ]; do sleep 0.1; done
      - echo "after the gate"
  build:
    commands:
      - IMAGE_DIR="$IMAGES_DIR/web-$(echo $CODEBUILD_RESOLVED_SOURCE_VERSION | cut -c 1-7)"
      - mkdir -p "$IMAGE_DIR" && cp "$DEMO_APP" "$IMAGE_DIR/cutover-demo-app"
  post_build:
    commands:
      - printf '{"ImageURI":"%s"}' "$IMAGE_DIR" > imageDetail.json
artifacts:
  files:
    - imageDetail.json
"#;

/// Build, approve, deploy: seed 001's pipeline.
fn pipeline_yaml(images: &Path, gate: &Path) -> String {
    format!(
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
            env: {{ IMAGES_DIR: "{images}", DEMO_APP: "{demo}", GATE: "{gate}" }}
      - name: Approve
        actions:
          - {{ name: approve, type: approval, comment: Release this commit to production? }}
      - name: Deploy
        actions:
          - {{ name: deploy, type: deploy, deployment_group: web/web-prod }}
"#,
        images = images.display(),
        demo = demo_app().display(),
        gate = gate.display(),
    )
}

/// Commits the app at v2 and pushes it to cutover's remote `url`; the execution it started.
pub(crate) fn push_v2(cluster: &Cluster, url: &str) -> String {
    let repo = cluster.path("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["remote", "add", "cutover", url]);
    let taskdef = r#"{"family": "web", "containerDefinitions": [{"name": "web", "image": "<IMAGE1_NAME>",
        "command": ["cutover-demo-app"], "essential": true, "stopTimeout": 2,
        "portMappings": [{"containerPort": 8080, "hostPort": 8080, "protocol": "tcp"}],
        "environment": [{"name": "APP_VERSION", "value": "v2"}]}],
        "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "256", "memory": "512"}"#;
    std::fs::write(repo.join("taskdef.json"), taskdef).unwrap();
    std::fs::write(repo.join("appspec.yaml"), appspec("")).unwrap();
    std::fs::write(repo.join("buildspec.yml"), BUILDSPEC).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "v2"]);
    git(&repo, &["push", "-q", "cutover", "main"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    wait_for("an execution of the push", Duration::from_secs(30), || {
        let executions = cluster.json(&["pipelines", "executions", "web"]);
        executions
            .as_array()?
            .iter()
            .find(|e| e["commit"] == commit.as_str())
            .map(|e| e["id"].as_str().unwrap().to_string())
    })
}

/// The status of action `action` of stage `stage` in the execution, as the API says.
fn action_of(execution: &serde_json::Value, stage: &str, action: &str) -> serde_json::Value {
    let stage = execution["stages"].as_array().unwrap().iter().find(|s| s["name"] == stage);
    let action =
        stage.and_then(|s| s["actions"].as_array().unwrap().iter().find(|a| a["name"] == action));
    action.cloned().unwrap_or_default()
}

/// What a pipeline page shows now: its status badge, its buttons, each action's status by
/// `stage/action`, and a build log with whether it still follows.
fn page_state(browser: &Browser) -> serde_json::Value {
    browser.run(
        "const s = document.getElementById('status'); const log = document.getElementById('build-log');
         const actions = {};
         for (const row of document.querySelectorAll('tr[data-stage]'))
           actions[row.dataset.stage + '/' + row.dataset.actionName] = row.dataset.status || null;
         return { status: s && s.dataset.status,
                  buttons: [...document.querySelectorAll('button[data-action]')].map(b => b.textContent),
                  actions, log: log && log.textContent, log_state: log && log.dataset.state || null,
                  live: document.body.dataset.live || null };",
    )
}

#[track_caller]
fn wait_for_page(
    browser: &Browser,
    what: &str,
    predicate: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_until(what, Duration::from_secs(60), || page_state(browser), predicate)
}

#[test]
fn a_build_log_follows_live_and_approving_in_the_browser_starts_the_deploy_stage() {
    let images = tempfile::tempdir().unwrap();
    let gate = images.path().join("gate");
    let cluster = Cluster::start(Options {
        top_extra: pipeline_yaml(images.path(), &gate),
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let remote = cluster.json(&["repos", "get", "web"])["clone_url"].as_str().unwrap().to_string();
    let id = push_v2(&cluster, &remote);
    let build = wait_for("the execution's build", Duration::from_secs(30), || {
        let execution = cluster.json(&["pipelines", "execution", "web", &id]);
        execution["builds"][0].as_str().map(str::to_string)
    });
    let browser = Browser::start();

    // The build's first line shows while the build waits at the gate, still in progress.
    browser.goto(&format!("{}/builds/{build}", cluster.api_url()));
    wait_for_page(&browser, "the first line of the running build", |s| {
        s["status"] == "IN_PROGRESS"
            && s["log_state"] == "following"
            && s["log"].as_str().is_some_and(|log| log.contains("first line of the build"))
    });
    assert_eq!(cluster.json(&["builds", "get", &build])["status"], "IN_PROGRESS");
    browser.screenshot("build-running");
    browser.run("window.sameDocument = true;");
    std::fs::write(&gate, "").unwrap();
    let done = wait_for_page(&browser, "the rest of the log and the build's success", |s| {
        s["status"] == "SUCCEEDED"
            && s["log_state"] == "ended"
            && s["log"].as_str().is_some_and(|log| log.contains("after the gate"))
    });
    assert!(!done["log"].as_str().unwrap().contains("after the gate\nafter the gate"), "{done}");
    assert_eq!(browser.run("return window.sameDocument === true;"), json!(true), "reloaded");
    browser.screenshot("build-succeeded");

    // The approval waits for a human: the overview says so, the pipeline page offers it.
    wait_until(
        "the approval in progress",
        Duration::from_secs(60),
        || cluster.json(&["pipelines", "execution", "web", &id]),
        |e| action_of(e, "Approve", "approve")["status"] == "InProgress",
    );
    browser.goto(&format!("{}/", cluster.api_url()));
    let overview =
        browser.run("return document.getElementById('waiting-h').parentElement.innerText;");
    assert!(
        overview.as_str().unwrap().contains(&format!("{id} · web · approval Approve / approve")),
        "{overview}"
    );
    browser.screenshot("overview-pipelines");
    browser.goto(&format!("{}/pipelines/web", cluster.api_url()));
    wait_for_page(&browser, "the approval's buttons", |s| {
        s["actions"]["Approve/approve"] == "InProgress"
            && s["buttons"]
                == json!([
                    "Release change",
                    "Approve",
                    "Reject",
                    "Stop and wait",
                    "Stop and abandon"
                ])
            && s["live"] == "following"
    });
    browser.screenshot("pipeline-approval");
    browser.run("window.sameDocument = true;");

    let opened = browser.run(
        "[...document.querySelectorAll('button[data-action]')].find(b => b.textContent === 'Approve').click();
         return [document.getElementById('confirm').open, !document.getElementById('confirm-comment-label').hidden];",
    );
    assert_eq!(opened, json!([true, true]), "the dialog asks for a comment");
    browser.fill("#confirm-comment", "checked on staging");
    browser.screenshot("pipeline-approve-dialog");
    browser.click("#confirm-ok");
    wait_for_page(&browser, "the deploy stage started, without a reload", |s| {
        s["actions"]["Approve/approve"] == "Succeeded"
            && matches!(s["actions"]["Deploy/deploy"].as_str(), Some("InProgress" | "Succeeded"))
    });
    assert_eq!(browser.run("return window.sameDocument === true;"), json!(true), "reloaded");
    browser.screenshot("pipeline-deploying");
    let execution = cluster.json(&["pipelines", "execution", "web", &id]);
    assert_eq!(
        action_of(&execution, "Approve", "approve")["decision"],
        json!({"approved": true, "by": "local", "comment": "checked on staging"})
    );
    assert!(
        execution["deployments"][0].is_string(),
        "the deploy action started a deployment: {execution}"
    );

    browser.goto(&format!("{}/pipelines/web/executions/{id}", cluster.api_url()));
    wait_for_page(&browser, "the execution page", |s| s["actions"]["Build/build"] == "Succeeded");
    browser.screenshot("pipeline-execution");
}

#[test]
fn the_task_definition_page_diffs_two_revisions_and_refuses_a_revision_that_does_not_exist() {
    let cluster = Cluster::start(Options::default());
    cluster.apply_and_wait_for_v1();
    cluster.cli_ok(&["task-definitions", "register", "taskdef-v2.json"]);
    let browser = Browser::start();
    browser.goto(&format!("{}/task-definitions/web", cluster.api_url()));
    let rows = browser.run(
        "return [...document.querySelectorAll('#diff tr[data-field]')]
           .map(r => [r.dataset.field, ...[...r.cells].slice(1).map(c => c.innerText)]);",
    );
    assert!(
        rows.as_array().unwrap().contains(&json!([
            "containerDefinitions[web].environment[APP_VERSION]",
            "v1",
            "v2"
        ])),
        "web:1 → web:2 shows the changed environment: {rows}"
    );
    browser.screenshot("task-definition-diff");

    let response =
        reqwest::blocking::get(format!("{}/task-definitions/web?from=9", cluster.api_url()))
            .unwrap();
    let (status, body) = (response.status().as_u16(), response.text().unwrap());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("there is no revision web:9; web has revisions 1, 2"), "{body}");
}

#[test]
fn a_viewer_sees_no_pipeline_buttons_and_a_forged_approval_is_refused() {
    let images = tempfile::tempdir().unwrap();
    let gate = images.path().join("gate");
    std::fs::write(&gate, "").unwrap();
    let bootstrap = "console-pipelines-bootstrap";
    let cluster = Cluster::start(Options {
        top_extra: pipeline_yaml(images.path(), &gate),
        env: vec![("CUTOVER_TOKEN", bootstrap.into())],
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let viewer = cluster.json(&["tokens", "create", "alice", "--role", "viewer"])["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let remote = cluster.json(&["repos", "get", "web"])["clone_url"].as_str().unwrap().to_string();
    let id = push_v2(&cluster, &remote.replacen("http://", &format!("http://ci:{bootstrap}@"), 1));
    wait_until(
        "the approval in progress",
        Duration::from_secs(90),
        || cluster.json(&["pipelines", "execution", "web", &id]),
        |e| action_of(e, "Approve", "approve")["status"] == "InProgress",
    );

    let browser = Browser::start();
    browser.goto(&format!("{}/pipelines/web", cluster.api_url()));
    assert!(browser.url().contains("/login?next=/pipelines/web"), "{}", browser.url());
    browser.fill("#token", &viewer);
    browser.click("form[action='/login'] button[type=submit]");
    let seen = wait_for_page(&browser, "the approval, for the viewer", |s| {
        s["actions"]["Approve/approve"] == "InProgress" && s["live"] == "following"
    });
    assert_eq!(seen["buttons"], json!([]), "a viewer gets no button: {seen}");
    browser.screenshot("pipeline-viewer");

    // The viewer forges the approval the page does not offer, with the session's CSRF token.
    let forged = browser.run_async(&format!(
        "fetch('/v1/approvals/{id}/approve', {{ method: 'POST', body: '{{\"comment\":\"forged\"}}',
           headers: {{ 'Content-Type': 'application/json',
                      'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content }} }})
         .then(async r => done([r.status, (await r.json()).error]));"
    ));
    assert_eq!(forged[0], 403, "{forged}");
    assert!(forged[1].as_str().unwrap().contains("lacks the permission `approve`"), "{forged}");
    let execution = cluster.json(&["pipelines", "execution", "web", &id]);
    let approval = action_of(&execution, "Approve", "approve");
    assert_eq!(
        (approval["status"].as_str(), &approval["decision"]),
        (Some("InProgress"), &json!(null))
    );
    assert_eq!(execution["status"], "InProgress", "nothing changed: {execution}");
}

/// A pipeline that only asks: a push waits at once for a human, who is asked a question and given
/// a page to review (CodePipeline's `CustomData` and `ExternalEntityLink`).
pub(crate) const APPROVAL_ONLY: &str = r#"repositories:
  - name: web
pipelines:
  - name: web
    source: { repository: web, branch: main }
    stages:
      - name: Approve
        actions:
          - name: approve
            type: approval
            comment: Does <v2> pass the checks on staging?
            review_url: "https://review.example.com/changes/42?tab=diff&x=1"
"#;

#[test]
fn an_approval_shows_its_question_and_review_link_and_is_recorded_as_the_signed_in_user() {
    let bootstrap = "console-approver-bootstrap";
    let cluster = Cluster::start(Options {
        top_extra: APPROVAL_ONLY.into(),
        env: vec![("CUTOVER_TOKEN", bootstrap.into())],
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let carol = cluster.json(&["tokens", "create", "carol", "--role", "deployer"])["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let remote = cluster.json(&["repos", "get", "web"])["clone_url"].as_str().unwrap().to_string();
    let id = push_v2(&cluster, &remote.replacen("http://", &format!("http://ci:{bootstrap}@"), 1));
    wait_until(
        "the approval in progress",
        Duration::from_secs(60),
        || cluster.json(&["pipelines", "execution", "web", &id]),
        |e| action_of(e, "Approve", "approve")["status"] == "InProgress",
    );

    let browser = Browser::start();
    browser.goto(&format!("{}/login", cluster.api_url()));
    browser.fill("#token", &carol);
    browser.click("form[action='/login'] button[type=submit]");
    wait_until(
        "the overview, signed in",
        Duration::from_secs(30),
        || browser.url(),
        |u| !u.contains("/login"),
    );
    let asks = "return [...document.querySelectorAll('[data-asks]')].map(a => {
                  const link = a.querySelector('a.review');
                  return [a.querySelector('q').textContent, link && link.getAttribute('href')];
                });";
    let question = "Does <v2> pass the checks on staging?";
    let review = "https://review.example.com/changes/42?tab=diff&x=1";
    assert_eq!(browser.run(asks), json!([[question, review]]), "the overview's waiting list");
    browser.screenshot("overview-approval-asks");

    browser.goto(&format!("{}/pipelines/web", cluster.api_url()));
    wait_for_page(&browser, "the approval's buttons", |s| {
        s["actions"]["Approve/approve"] == "InProgress" && s["live"] == "following"
    });
    assert_eq!(browser.run(asks), json!([[question, review]]), "the pipeline page's approval");
    browser.screenshot("pipeline-approval-asks");
    browser.run(
        "[...document.querySelectorAll('button[data-action]')].find(b => b.textContent === 'Approve').click();",
    );
    browser.fill("#confirm-comment", "staging is green");
    browser.click("#confirm-ok");
    wait_for_page(&browser, "the approval decided", |s| {
        s["actions"]["Approve/approve"] == "Succeeded"
    });

    // The API and the CLI say who approved: the signed-in credential, not "console".
    let execution = cluster.json(&["pipelines", "execution", "web", &id]);
    assert_eq!(
        action_of(&execution, "Approve", "approve")["decision"],
        json!({"approved": true, "by": "user:carol", "comment": "staging is green"})
    );
    let trail = cluster.json(&["audit", "--action", "approve", "--actor", "user:carol"]);
    let entry =
        trail.as_array().unwrap().iter().find(|e| {
            e["detail"]["request"] == format!("POST /v1/approvals/{id}/approve").as_str()
        });
    assert_eq!(
        entry.map(|e| (&e["resource"], &e["outcome"], &e["detail"]["via"])),
        Some((&json!("pipeline web"), &json!("succeeded"), &json!("console"))),
        "{trail}"
    );
}

/// What the service page shows now: each task's status, health and address, and each target's
/// state, by id and address.
fn service_state(browser: &Browser) -> serde_json::Value {
    browser.run(
        "return { tasks: [...document.querySelectorAll('tr[data-task]')].map(r =>
                    [r.dataset.status, r.dataset.health, r.cells[3].innerText, r.cells[4].innerText]),
                  targets: [...document.querySelectorAll('tr[data-target]')].map(r => r.dataset.state),
                  live: document.body.dataset.live || null };",
    )
}

#[test]
fn the_service_page_shows_tasks_live_and_a_tasks_page_follows_its_log() {
    let cluster = Cluster::start(Options::default());
    cluster.apply_and_wait_for_v1();
    let browser = Browser::start();
    browser.goto(&format!("{}/services/web", cluster.api_url()));
    let running = |s: &serde_json::Value, td: &str| {
        s["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| {
                t[0] == "RUNNING"
                    && t[1] == "HEALTHY"
                    && t[2].as_str().is_some_and(|a| a.starts_with("127."))
                    && t[3] == td
            })
            .count()
    };
    wait_until(
        "two healthy v1 tasks with their addresses, following the stream",
        Duration::from_secs(30),
        || service_state(&browser),
        |s| running(s, "web:1") == 2 && s["live"] == "following",
    );
    browser.screenshot("service");

    // A task's page follows its log: a request sent to the task now shows in it.
    let task = cluster.json(&["tasks", "list"]).as_array().unwrap()[0].clone();
    let (id, addr) = (task["id"].as_str().unwrap(), task["addr"].as_str().unwrap());
    browser.goto(&format!("{}/tasks/{id}", cluster.api_url()));
    let log = || browser.run("return document.getElementById('task-log').textContent;");
    wait_until("the task's log", Duration::from_secs(30), log, |l| {
        l.as_str().is_some_and(|l| l.contains("listening on"))
    });
    get(addr.parse().unwrap(), "/followed-by-the-console").expect("the task answers");
    wait_until("the request in the log, without a reload", Duration::from_secs(30), log, |l| {
        l.as_str().is_some_and(|l| l.contains("GET /followed-by-the-console"))
    });
    browser.screenshot("task");

    browser.goto(&format!("{}/services/web", cluster.api_url()));
    wait_until(
        "the service page again",
        Duration::from_secs(30),
        || service_state(&browser),
        |s| s["live"] == "following",
    );
    browser.run("window.sameDocument = true;");

    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    assert!(created["id"].is_string(), "{created}");
    wait_until(
        "green's tasks on the page, healthy, without a reload",
        Duration::from_secs(90),
        || service_state(&browser),
        |s| running(s, "web:2") >= 1,
    );
    assert_eq!(browser.run("return window.sameDocument === true;"), json!(true), "reloaded");
    browser.screenshot("service-deploying");
}
