//! A blue/green release end to end, and a release whose validation hook fails.

use std::time::Duration;

use crate::harness::*;

#[test]
fn canary_release_moves_production_to_green_with_zero_failed_requests() {
    let cluster = Cluster::start(Options::default());
    cluster.apply_and_wait_for_v1();

    // Watch the test listener: it must serve v2 before production does.
    let test_addr = cluster.test;
    let test_watch = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        wait_for("test listener to serve v2", Duration::from_secs(60), || {
            (get(test_addr, "/").ok()?.1 == "v2").then(|| started.elapsed())
        })
    });
    let load = Load::start(cluster.prod, 4);
    let output = cluster.cli(&deploy_args("taskdef-v2.json", "appspec.yaml", &["--wait"]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "deploy failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("succeeded"), "{stdout}");
    // `deploy --wait` speaks to a person: where traffic goes and when it moves next, never the
    // engine's effect names.
    for said in [
        "Starting the new version's tasks (green) in target group web-green",
        "Routing production traffic: 20% to green (web-green), 80% to blue (web-blue)",
        "Moving production traffic: 20% on green (web-green), 80% on blue (web-blue); test \
         listener on green; green tasks 2/2 healthy; next step at ",
    ] {
        assert!(stdout.contains(said), "`{said}` missing from: {stdout}");
    }
    for internal in ["start-green", "terminate-blue", "route prod"] {
        assert!(!stdout.contains(internal), "`{internal}` in: {stdout}");
    }
    let test_saw_v2_after = test_watch.join().unwrap();
    let samples = load.finish();

    assert!(samples.len() > 200, "the load client made only {} requests", samples.len());
    assert_eq!(failures(&samples), Vec::<&Sample>::new(), "requests failed during the release");

    // Production moved: v1 only, then a canary window with both, then v2 only.
    let first_v2 =
        samples.iter().position(|s| s.version == "v2").expect("production never served v2");
    let last_v1 =
        samples.iter().rposition(|s| s.version == "v1").expect("production never served v1");
    assert!(
        first_v2 < last_v1,
        "no window served both versions: the split never moved through a canary"
    );
    let window = &samples[first_v2..=last_v1];
    let green_share =
        window.iter().filter(|s| s.version == "v2").count() as f64 / window.len() as f64;
    assert!(
        (0.05..0.6).contains(&green_share),
        "green's share during the canary was {green_share:.2}, not about 20%"
    );
    assert!(samples.last().unwrap().version == "v2", "production does not end on v2");
    let first_v2_at = samples[first_v2].at;
    assert!(
        test_saw_v2_after <= first_v2_at + Duration::from_millis(500),
        "the test listener served v2 at {test_saw_v2_after:?}, production already at {first_v2_at:?}"
    );

    // The deployment records every lifecycle event and ends with blue gone.
    let deployments = cluster.json(&["deployments", "list"]);
    let id = deployments[0]["id"].as_str().unwrap().to_string();
    let view = cluster.deployment(&id);
    assert_eq!(view["status"], "Succeeded");
    let events: Vec<(String, String)> = view["lifecycle_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (e["event"].as_str().unwrap().to_string(), e["status"].as_str().unwrap().to_string())
        })
        .collect();
    for event in ["Install", "AllowTestTraffic", "AllowTraffic", "End"] {
        assert!(
            events.contains(&(event.to_string(), "Succeeded".to_string())),
            "{event} not Succeeded in {events:?}"
        );
    }
    wait_for("blue's tasks to stop after the termination wait", Duration::from_secs(30), || {
        (cluster.app_processes() == 2).then_some(())
    });
    let service = cluster.json(&["services", "get", "web"]);
    assert_eq!(service["task_definition"], "web:2");
}

#[test]
fn failing_test_traffic_hook_rolls_back_before_production_sees_green() {
    let cluster = Cluster::start(Options::default());
    cluster.apply_and_wait_for_v1();
    std::fs::write(cluster.path("appspec-fail.yaml"), appspec("fail")).unwrap();

    let load = Load::start(cluster.prod, 2);
    let output = cluster.cli(&deploy_args("taskdef-v2.json", "appspec-fail.yaml", &["--wait"]));
    let samples = load.finish();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "deploy --wait must exit 1 when the deployment fails: {stdout}"
    );
    assert!(stdout.contains("rolled back"), "{stdout}");

    assert_eq!(failures(&samples), Vec::<&Sample>::new());
    assert!(
        samples.iter().all(|s| s.version == "v1"),
        "production served green although its test hook failed"
    );

    let id = cluster.json(&["deployments", "list"])[0]["id"].as_str().unwrap().to_string();
    let view = cluster.deployment(&id);
    assert_eq!(view["status"], "Failed");
    assert_eq!(view["error_code"], "HOOK_EXECUTION_FAILURE");
    assert!(view["error_message"].as_str().unwrap().contains("validation failed"), "{view}");
    assert_eq!(view["rolled_back"], true);
    assert_eq!(view["traffic"]["production_green_percent"], 0);
    assert_eq!(view["traffic"]["test_to_green"], false);
    assert_eq!(get(cluster.test, "/").unwrap().1, "v1", "the test listener is back on blue");
    wait_for("green's tasks to stop", Duration::from_secs(30), || {
        (cluster.app_processes() == 2).then_some(())
    });

    // The group accepts the next deployment once this one is over.
    cluster.cli_ok(&deploy_args("taskdef-v2.json", "appspec.yaml", &["--wait"]));
    assert_eq!(get(cluster.prod, "/").unwrap().1, "v2");
}

#[test]
fn a_preview_header_pins_a_tester_to_green_on_production_until_the_rollback() {
    // The ready wait holds the deployment while green serves the test listener.
    let cluster = Cluster::start(Options {
        group_extra: "    ready_wait: 10m\n    preview: { header: X-Deploy-Version }",
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let pinned = |side| get_with(cluster.prod, "/", &[("X-Deploy-Version", side)]);
    assert_eq!(pinned("green").unwrap(), (200, "v1".to_string()), "no green outside a deployment");

    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("the test listener to serve v2", Duration::from_secs(30), || {
        (get(cluster.test, "/").ok()?.1 == "v2").then_some(())
    });
    // The test listener and the preview change in one routing table, so from now on the header
    // reaches green every time, while production as a whole stays on blue.
    for _ in 0..20 {
        assert_eq!(pinned("green").unwrap(), (200, "v2".to_string()));
        assert_eq!(pinned("blue").unwrap(), (200, "v1".to_string()));
        assert_eq!(get(cluster.prod, "/").unwrap(), (200, "v1".to_string()));
    }
    assert_eq!(cluster.deployment(&id)["status"], "Ready");

    cluster.cli_ok(&["deployments", "stop", &id, "--rollback"]);
    wait_for("the rollback to end the preview", Duration::from_secs(30), || {
        (pinned("green").ok()?.1 == "v1").then_some(())
    });
    wait_for("the deployment to end", Duration::from_secs(30), || {
        cluster.deployment(&id)["completed_at"].is_u64().then_some(())
    });
    assert_eq!(pinned("green").unwrap(), (200, "v1".to_string()));
}

#[test]
fn a_deployment_stopped_without_rollback_ends_preview_routing_and_keeps_its_weights() {
    // A canary that holds 80/20 for ten minutes: the stop comes while both sides serve production.
    let cluster = Cluster::start(Options {
        config: "{ name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 10m }",
        group_extra: "    preview: { cookie: deploy_version }",
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let pinned = || get_with(cluster.prod, "/", &[("Cookie", "deploy_version=green")]);

    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("production to move 20% to green", Duration::from_secs(60), || {
        (cluster.deployment(&id)["traffic"]["production_green_percent"] == 20).then_some(())
    });
    assert_eq!(pinned().unwrap(), (200, "v2".to_string()), "the cookie pins to green meanwhile");

    cluster.cli_ok(&["deployments", "stop", &id, "--no-rollback"]);
    wait_for("the deployment to end", Duration::from_secs(30), || {
        cluster.deployment(&id)["completed_at"].is_u64().then_some(())
    });
    let served = served_routes(&cluster);
    let production = &served["table"]["listeners"]["web/prod"]["action"];
    assert_eq!(production["preview"], serde_json::Value::Null, "{production}");
    // The weights stay where the stop found them, so the cookie now gets the 80/20 split.
    let weights: Vec<u64> = production["target_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, [80, 20], "{production}");
    wait_for("a pinned request to reach blue", Duration::from_secs(10), || {
        (pinned().ok()?.1 == "v1").then_some(())
    });
}

/// The routing table the data plane serves, from its admin API.
fn served_routes(cluster: &Cluster) -> serde_json::Value {
    let admin = cluster.json(&["status"])["lb_admin"].as_str().unwrap().to_string();
    reqwest::blocking::get(format!("http://{admin}/v1/routes")).unwrap().json().unwrap()
}

#[test]
fn tasks_list_shows_what_runs_and_with_all_what_stopped_with_its_task_definition_and_reason() {
    let cluster = Cluster::start(Options::default());
    cluster.apply_and_wait_for_v1();
    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("the deployment to succeed", Duration::from_secs(60), || {
        (cluster.deployment(&id)["status"] == "Succeeded").then_some(())
    });

    // Once blue's tasks have stopped (and their task set is gone), the default list shows only
    // green's, and `--all` adds blue's with what they ran, why and when they stopped.
    let last = std::cell::RefCell::new(serde_json::Value::Null);
    let stopped = wait_for_or(
        "blue's tasks to stop",
        Duration::from_secs(60),
        || {
            last.replace(cluster.json(&["tasks", "list", "--all"]));
            let all = last.borrow();
            // Blue's tasks are web:1's (a green task that failed to start is another row).
            let blue: Vec<serde_json::Value> = all
                .as_array()?
                .iter()
                .filter(|t| t["task_definition"] == "web:1")
                .cloned()
                .collect();
            (blue.len() == 2 && blue.iter().all(|t| t["last_status"] == "STOPPED")).then_some(blue)
        },
        || format!("{:#}", last.borrow()),
    );
    for task in &stopped {
        assert_eq!(task["task_definition"], "web:1", "{task}");
        assert_eq!(task["health"], "UNKNOWN", "{task}");
        assert_eq!(
            task["stopped_reason"],
            format!("deployment {id} replaced blue with green"),
            "{task}"
        );
        assert!(task["stopped_at"].is_u64(), "{task}");
    }
    let running = cluster.json(&["tasks", "list"]);
    let running = running.as_array().unwrap();
    assert_eq!(running.len(), 2, "{running:?}");
    for task in running {
        assert_eq!(task["last_status"], "RUNNING", "{task}");
        assert_eq!(task["task_definition"], "web:2", "{task}");
    }
    let table = cluster.cli_ok(&["tasks", "list", "--all"]);
    assert!(table.contains(&format!("deployment {id} replaced blue with green")), "{table}");
}
