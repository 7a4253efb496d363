//! `cutover apply` deletes what cutover.yaml no longer declares, as Terraform and
//! CloudFormation do: the plan says so, a dry run changes nothing, a deployment in progress
//! blocks the deletion of its service, pipelines go and hosted repositories stay.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const HEALTH: &str = "{ path: /health, interval: 1s, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: 2, matcher: \"200\" }";

/// The cluster's file with a second stack next to `web`: a load balancer with one listener, two
/// target groups, a service of one task and its deployment group. Returns the listener's address.
fn add_api_stack(cluster: &Cluster) -> SocketAddr {
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let web = std::fs::read_to_string(cluster.path("cutover.yaml")).unwrap();
    std::fs::write(cluster.path("without-api.yaml"), &web).unwrap();
    let with_api = web
        .replacen(
            "load_balancers:\n",
            &format!(
                "load_balancers:\n  - name: api\n    listeners:\n      - {{ name: main, port: {} }}\n",
                api.port()
            ),
            1,
        )
        .replacen(
            "target_groups:\n",
            &format!(
                "target_groups:\n  - {{ name: api-blue, health_check: {HEALTH}, deregistration_delay: 1s }}\n  \
                 - {{ name: api-green, health_check: {HEALTH}, deregistration_delay: 1s }}\n"
            ),
            1,
        )
        .replacen(
            "services:\n",
            "services:\n  - name: api\n    task_definition: taskdef.json\n    desired_count: 1\n    \
             load_balancer: { target_group: api-blue, container_name: web, container_port: 8080 }\n",
            1,
        )
        .replacen(
            "deployment_groups:\n",
            "deployment_groups:\n  - { application: api, name: api-prod, service: api, target_groups: \
             [api-blue, api-green], production_listener: api/main }\n",
            1,
        );
    std::fs::write(cluster.path("cutover.yaml"), with_api).unwrap();
    api
}

/// Applies cutover.yaml (with the api stack) and waits until both stacks serve v1.
fn apply_both_stacks(cluster: &Cluster, api: SocketAddr) {
    cluster.apply_and_wait_for_v1();
    wait_for("the api listener to serve v1", Duration::from_secs(30), || {
        (get(api, "/").ok()? == (200, "v1".to_string())).then_some(())
    });
    assert_eq!(cluster.app_processes(), 3, "web's two tasks and api's one");
}

/// (kind, name, action) of every plan item.
fn plan(response: &Value) -> Vec<(String, String, String)> {
    response["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let field = |k: &str| p[k].as_str().unwrap().to_string();
            (field("kind"), field("name"), field("action"))
        })
        .collect()
}

fn deletes(response: &Value) -> Vec<(String, String)> {
    plan(response).into_iter().filter(|(_, _, a)| a == "delete").map(|(k, n, _)| (k, n)).collect()
}

fn api_stack_deletes() -> Vec<(String, String)> {
    [
        ("deployment_group", "api/api-prod"),
        ("service", "api"),
        ("target_group", "api-blue"),
        ("target_group", "api-green"),
        ("load_balancer", "api"),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect()
}

fn service_names(cluster: &Cluster) -> Vec<String> {
    cluster
        .json(&["services", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn removing_a_service_with_its_group_target_groups_and_listener_deletes_them() {
    let cluster = Cluster::start(Options::default());
    let api = add_api_stack(&cluster);
    apply_both_stacks(&cluster, api);
    let api_tasks: Vec<String> = cluster
        .json(&["tasks", "list", "--service", "api"])
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(api_tasks.len(), 1);

    // Web keeps serving, without a failed request, while the api stack goes.
    let load = Load::start(cluster.prod, 2);
    let out = cluster.cli_ok(&["apply", "-f", "without-api.yaml"]);
    assert!(out.contains("plan: 0 to create, 0 to update, 5 to delete"), "{out}");
    assert!(out.contains("applied 5 change(s)"), "{out}");
    let service_line = out
        .lines()
        .find(|l| l.contains("service") && l.contains(" api "))
        .unwrap_or_else(|| panic!("no plan line for service api: {out}"));
    assert!(
        service_line.starts_with('-') && service_line.contains("delete"),
        "a deletion is marked: {service_line}"
    );

    // The api task leaves its target group and stops; its listener closes.
    wait_for("the api task to stop", Duration::from_secs(30), || {
        let tasks = cluster.json(&["tasks", "list", "--service", "api", "--all"]);
        let tasks = tasks.as_array()?;
        tasks.iter().all(|t| t["last_status"] == "STOPPED").then(|| tasks.clone())
    })
    .iter()
    .for_each(|t| {
        assert!(api_tasks.contains(&t["id"].as_str().unwrap().to_string()));
        let reason = t["stopped_reason"].as_str().unwrap_or_default();
        assert!(reason.contains("service api was deleted"), "stopped reason: {t}");
    });
    wait_for("api's process to exit", Duration::from_secs(30), || {
        (cluster.app_processes() == 2).then_some(())
    });
    wait_for("the api listener to close", Duration::from_secs(10), || {
        get(api, "/").is_err().then_some(())
    });
    let samples = load.finish();
    assert!(samples.len() > 20, "the load client made only {} requests", samples.len());
    assert_eq!(failures(&samples), Vec::<&Sample>::new(), "web failed while api was deleted");

    assert_eq!(service_names(&cluster), ["web"]);
    assert!(!cluster.cli(&["target-groups", "get", "api-blue"]).status.success());
    let groups: Vec<String> = cluster
        .json(&["target-groups", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(groups, ["web-blue", "web-green"]);
    assert_eq!(get(cluster.prod, "/").unwrap().1, "v1");

    // Nothing is left to delete: the same file again changes nothing.
    let again = cluster.json(&["apply", "-f", "without-api.yaml"]);
    assert!(plan(&again).iter().all(|(_, _, a)| a == "no change"), "{again:#}");
    let out = cluster.cli_ok(&["apply", "-f", "without-api.yaml"]);
    assert!(
        out.contains("plan: 0 to create, 0 to update, 0 to delete") && out.contains("no changes"),
        "{out}"
    );
}

#[test]
fn a_dry_run_with_deletions_changes_nothing() {
    let cluster = Cluster::start(Options::default());
    let api = add_api_stack(&cluster);
    apply_both_stacks(&cluster, api);

    let response = cluster.json(&["apply", "--dry-run", "-f", "without-api.yaml"]);
    assert_eq!(response["applied"], false);
    assert_eq!(deletes(&response), api_stack_deletes(), "{response:#}");
    let service = response["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "service" && p["name"] == "api")
        .unwrap();
    assert!(service["detail"].as_str().unwrap().contains("1 task(s)"), "{service}");
    let out = cluster.cli_ok(&["apply", "--dry-run", "-f", "without-api.yaml"]);
    assert!(out.contains("plan: 0 to create, 0 to update, 5 to delete"), "{out}");
    assert!(out.contains("run without --dry-run to apply"), "{out}");

    // Everything is still there and serving.
    assert_eq!(service_names(&cluster), ["api", "web"]);
    cluster.cli_ok(&["target-groups", "get", "api-green"]);
    assert_eq!(get(api, "/").unwrap(), (200, "v1".to_string()));
    assert_eq!(cluster.app_processes(), 3);
    let running = cluster.json(&["tasks", "list", "--service", "api"]);
    assert_eq!(running[0]["last_status"], "RUNNING", "{running}");
    // And the real plan is still the same.
    let response = cluster.json(&["apply", "--dry-run", "-f", "without-api.yaml"]);
    assert_eq!(deletes(&response), api_stack_deletes());
}

#[test]
fn removing_a_service_whose_group_is_deploying_is_refused_and_changes_nothing() {
    // The ready wait keeps the deployment in progress until it is continued or stopped.
    let cluster =
        Cluster::start(Options { group_extra: "    ready_wait: 10m", ..Options::default() });
    cluster.apply_and_wait_for_v1();
    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();

    // A file without web's stack, that also declares a new target group.
    let reduced = "target_groups:\n  - { name: extra, targets: [\"127.0.0.1:9\"] }\n";
    std::fs::write(cluster.path("reduced.yaml"), reduced).unwrap();
    let output = cluster.cli(&["apply", "-f", "reduced.yaml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("service web")
            && stderr.contains(&format!("deployment {id} in progress"))
            && stderr.contains(&format!("cutover deployments watch {id}"))
            && stderr.contains(&format!("cutover deployments stop {id}")),
        "{stderr}"
    );
    let request = serde_json::json!({
        "file": { "name": "reduced.yaml", "text": reduced },
        "dry_run": false,
    });
    let (status, body) = cluster.api(reqwest::Method::POST, "/v1/apply", &request);
    assert_eq!(status, 409, "{body}");

    // Nothing changed: the new target group does not exist, web still serves from blue, the
    // deployment goes on.
    assert!(!cluster.cli(&["target-groups", "get", "extra"]).status.success());
    assert_eq!(service_names(&cluster), ["web"]);
    assert_eq!(get(cluster.prod, "/").unwrap(), (200, "v1".to_string()));
    let deployment = cluster.deployment(&id);
    assert!(deployment["completed_at"].is_null(), "{deployment}");

    // Once the deployment is over, the same file deletes web's stack.
    cluster.cli_ok(&["deployments", "stop", &id, "--rollback"]);
    wait_for("the deployment to end", Duration::from_secs(30), || {
        cluster.deployment(&id)["completed_at"].is_u64().then_some(())
    });
    let response = cluster.json(&["apply", "-f", "reduced.yaml"]);
    let deleted = deletes(&response);
    for item in [
        ("deployment_group", "web/web-prod"),
        ("service", "web"),
        ("target_group", "web-blue"),
        ("load_balancer", "web"),
        ("deployment_config", "quick-canary"),
        ("hook", "fail"),
    ] {
        assert!(
            deleted.contains(&(item.0.to_string(), item.1.to_string())),
            "{item:?} in {deleted:?}"
        );
    }
    wait_for("web's tasks to stop", Duration::from_secs(30), || {
        (cluster.app_processes() == 0).then_some(())
    });
    wait_for("the production listener to close", Duration::from_secs(10), || {
        get(cluster.prod, "/").is_err().then_some(())
    });
    // Deployment history stays.
    assert_eq!(cluster.deployment(&id)["id"], id.as_str());
}

#[test]
fn a_removed_pipeline_is_deleted_and_its_execution_stopped_and_a_removed_repository_is_kept() {
    let pipelines = r#"repositories:
  - name: app
pipelines:
  - name: release
    source: { repository: app, branch: main }
    stages:
      - name: Approve
        actions:
          - { name: ok, type: approval, timeout: 1h }
"#;
    let cluster = Cluster::start(Options { top_extra: pipelines.into(), ..Options::default() });
    let full = std::fs::read_to_string(cluster.path("cutover.yaml")).unwrap();
    let without = full.replace(pipelines, "");
    assert_ne!(full, without);
    std::fs::write(cluster.path("without-pipelines.yaml"), without).unwrap();
    cluster.apply_and_wait_for_v1();
    assert_eq!(cluster.json(&["pipelines", "list"])[0]["name"], "release");

    // A push starts an execution, which waits for its approval.
    let remote = cluster.json(&["repos", "get", "app"])["clone_url"].as_str().unwrap().to_string();
    let work = cluster.path("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    std::fs::write(work.join("README"), "hello\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(&work, &["push", "-q", &remote, "main"]);
    let execution = wait_for("an execution waiting for approval", Duration::from_secs(30), || {
        let executions = cluster.json(&["pipelines", "executions", "release"]);
        let first = executions.as_array()?.first()?.clone();
        (first["status"] == "InProgress").then(|| first["id"].as_str().unwrap().to_string())
    });

    // The repository cannot go while a pipeline builds from it.
    let output = cluster.cli(&["repos", "delete", "app"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("release"), "{stderr}");

    let response = cluster.json(&["apply", "-f", "without-pipelines.yaml"]);
    let items = plan(&response);
    assert!(items.contains(&("pipeline".into(), "release".into(), "delete".into())), "{items:?}");
    assert!(items.contains(&("repository".into(), "app".into(), "keep".into())), "{items:?}");
    let keep = response["plan"].as_array().unwrap().iter().find(|p| p["action"] == "keep").unwrap();
    let detail = keep["detail"].as_str().unwrap();
    assert!(
        detail.contains("no longer in cutover.yaml") && detail.contains("cutover repos delete app"),
        "{detail}"
    );
    assert!(deletes(&response) == [("pipeline".to_string(), "release".to_string())], "{items:?}");

    assert_eq!(cluster.json(&["pipelines", "list"]), serde_json::json!([]));
    let stopped = cluster.json(&["pipelines", "execution", "release", &execution]);
    assert_eq!(stopped["status"], "Stopped", "{stopped:#}");
    // The repository and what was pushed to it stay.
    let repo = cluster.json(&["repos", "get", "app"]);
    assert_eq!(repo["branches"][0][0], "main", "{repo}");
    assert_eq!(get(cluster.prod, "/").unwrap().1, "v1");

    // Now nothing uses it: `repos delete` removes it and its git data.
    cluster.cli_ok(&["repos", "delete", "app"]);
    assert_eq!(cluster.json(&["repos", "list"]), serde_json::json!([]));
    assert!(!cluster.data_dir().join("pipelines/repos/app.git").exists());
    let again = cluster.json(&["apply", "-f", "without-pipelines.yaml"]);
    assert!(plan(&again).iter().all(|(_, _, a)| a == "no change"), "{again:#}");
}

/// The version of the routing table the data plane serves, from its admin API.
fn served_routes_version(cluster: &Cluster) -> u64 {
    let admin = cluster.json(&["status"])["lb_admin"].as_str().unwrap().to_string();
    let served: Value =
        reqwest::blocking::get(format!("http://{admin}/v1/routes")).unwrap().json().unwrap();
    served["version"].as_u64().unwrap()
}

#[test]
fn applying_an_unchanged_file_changes_nothing_not_even_the_routing_table_version() {
    let cluster = Cluster::start(Options::default());
    cluster.apply_and_wait_for_v1();
    let before = served_routes_version(&cluster);
    let status_before = cluster.json(&["status"])["routes_version"].as_u64().unwrap();

    let response = cluster.json(&["apply", "-f", "cutover.yaml"]);
    let actions: Vec<String> = plan(&response).into_iter().map(|(_, _, action)| action).collect();
    assert!(actions.iter().all(|a| a == "no change"), "{response:#}");

    assert_eq!(served_routes_version(&cluster), before, "the data plane got a new table");
    assert_eq!(cluster.json(&["status"])["routes_version"], status_before);
}

#[test]
fn a_file_the_load_balancer_refuses_changes_neither_the_store_nor_the_served_table() {
    let cluster = Cluster::start(Options::default());
    cluster.apply_and_wait_for_v1();
    let before = served_routes_version(&cluster);
    // A new listener on a port another program holds: only the data plane can find that out.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let yaml = std::fs::read_to_string(cluster.path("cutover.yaml")).unwrap();
    let with_listener = yaml.replacen(
        "      - { name: test,",
        &format!(
            "      - {{ name: busy, port: {port}, default_action: {{ fixed_response: {{ status_code: 503 }} }} }}\n      - {{ name: test,"
        ),
        1,
    );
    std::fs::write(cluster.path("busy.yaml"), with_listener).unwrap();

    let output = cluster.cli(&["apply", "-f", "busy.yaml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("the load balancer refused the new configuration"), "{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");

    assert_eq!(served_routes_version(&cluster), before, "the data plane serves a new table");
    let plan = cluster.json(&["apply", "--dry-run", "-f", "cutover.yaml"]);
    let actions: Vec<String> = plan_actions(&plan);
    assert!(actions.iter().all(|a| a == "no change"), "the store changed: {plan:#}");
    assert_eq!(get(cluster.prod, "/").unwrap(), (200, "v1".to_string()));
    drop(taken);
}

fn plan_actions(response: &Value) -> Vec<String> {
    plan(response).into_iter().map(|(_, _, action)| action).collect()
}
