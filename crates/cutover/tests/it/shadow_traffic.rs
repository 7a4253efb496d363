//! Shadow traffic end to end: a broken green behind a deployment config with a shadow phase is
//! rolled back by an alarm on its mirrored 5xx before it answers a single client — counted at
//! green's own server, whose log marks each copy `shadow` — and the deployment shows what the
//! copies got, to the copy.

use std::cell::RefCell;
use std::time::Duration;

use crate::harness::*;

/// A shadow phase copying all of production to green for a minute, then a canary: only the
/// alarm ends the phase.
const SHADOWED_CANARY: &str = "{ name: quick-canary, type: TimeBasedCanary, percentage: 50, \
                               interval: 60s, mirror: { percentage: 100, duration: 60s } }";

const MIRRORED_5XX: &str = r#"alarms:
  - { name: mirrored-5xx, metric: MirroredTarget_5XX_Count, target_group: green, statistic: Sum, period: 1s, evaluation_periods: 1, threshold: 1, comparison: ">=", treat_missing_data: notBreaching }
"#;

/// The lines of the logs of `task_definition`'s tasks (green's, stopped or not) that are
/// requests for `/`: `(copies, client requests)`.
pub(crate) fn green_root_requests(
    cluster: &Cluster,
    task_definition: &str,
) -> (Vec<String>, Vec<String>) {
    let tasks = cluster.json(&["tasks", "list", "--service", "web", "--all"]);
    let green: Vec<String> = tasks
        .as_array()
        .expect("a list of tasks")
        .iter()
        .filter(|t| t["task_definition"] == task_definition)
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!green.is_empty(), "green has tasks: {tasks}");
    let lines: Vec<String> = green
        .iter()
        .flat_map(|id| cluster.cli_ok(&["logs", id]).lines().map(String::from).collect::<Vec<_>>())
        // The demo app logs `PEER "GET /" STATUS …`.
        .filter(|line| line.contains("\"GET /\" "))
        .collect();
    lines.into_iter().partition(|line| line.contains(" shadow"))
}

#[test]
fn a_broken_green_in_a_shadow_phase_is_rolled_back_before_it_answers_any_client() {
    let cluster = Cluster::start(Options {
        config: SHADOWED_CANARY,
        auto_rollback: "[DEPLOYMENT_FAILURE, DEPLOYMENT_STOP_ON_ALARM]",
        group_extra: "    alarms: [mirrored-5xx]",
        top_extra: MIRRORED_5XX.into(),
        ..Options::default()
    });
    // v2 answers every request but its health check with a 500.
    let broken = std::fs::read_to_string(cluster.path("taskdef-v2-errors.json"))
        .unwrap()
        .replace(r#""value": "0.3""#, r#""value": "1.0""#);
    assert!(broken.contains(r#""value": "1.0""#), "{broken}");
    std::fs::write(cluster.path("taskdef-v2-broken.json"), broken).unwrap();
    cluster.apply_and_wait_for_v1();

    let load = Load::start(cluster.prod, 4);
    let output = cluster.cli(&deploy_args("taskdef-v2-broken.json", "appspec.yaml", &["--wait"]));
    let id = cluster.json(&["deployments", "list"])[0]["id"].as_str().unwrap().to_string();
    let samples = load.finish();

    let view = cluster.deployment(&id);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let up_log = std::fs::read_to_string(cluster.path("up.log")).unwrap_or_default();
    let up_log = &up_log[up_log.len().saturating_sub(4000)..];
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}\n{view}\n{up_log}");
    assert_eq!(view["status"], "Stopped", "{view}");
    assert_eq!(view["error_code"], "ALARM_ACTIVE", "{view}");
    assert_eq!(view["rolled_back"], true, "{view}");
    assert!(view["error_message"].as_str().unwrap().contains("mirrored-5xx"), "{view}");
    assert!(stdout.contains("(shadow traffic)"), "the watch says what the phase does: {stdout}");

    assert!(!samples.is_empty(), "the clients sent requests");
    assert_eq!(failures(&samples), Vec::<&Sample>::new(), "requests failed at the client");
    let from_green: Vec<&Sample> = samples.iter().filter(|s| s.version != "v1").collect();
    assert_eq!(from_green, Vec::<&Sample>::new(), "a client got green's answer");

    // At green's own server: copies, and not one request of a client.
    let green = view["task_definition"].as_str().expect("the deployment's task definition");
    let (copies, served) = green_root_requests(&cluster, green);
    assert!(!copies.is_empty(), "green got copies of production's requests: {served:?}");
    assert_eq!(served, Vec::<String>::new(), "green served a client's request");

    // The deployment's figures of its phase count every copy green's server logged (and those
    // it never got, as the load balancer's 5xx), once its last seconds are tallied.
    let last_seen = RefCell::new(String::new());
    let mirrored = wait_for_or(
        "the deployment's shadow figures to count the copies green's server logged",
        Duration::from_secs(30),
        || {
            let mirrored = cluster.deployment(&id)["mirrored"].clone();
            let at_green = green_root_requests(&cluster, green).0.len() as u64;
            *last_seen.borrow_mut() = format!("{mirrored:#} and {at_green} copies at green");
            let unanswered = mirrored["green_lb_5xx"].as_u64()?;
            (mirrored["copies"].as_u64()? == at_green + unanswered).then_some((mirrored, at_green))
        },
        || last_seen.take(),
    );
    let (mirrored, at_green) = mirrored;
    assert_eq!(mirrored["green_5xx"], at_green, "green answered each copy it got with a 500");
    assert_eq!(mirrored["green_2xx"], 0, "{mirrored:#}");
    assert_eq!(
        mirrored["mismatches"], mirrored["copies"],
        "blue answered 200 to every client, green never: every copy differed"
    );
    assert!(mirrored["blue_requests"].as_u64().unwrap() > 0, "{mirrored:#}");
    let text = cluster.cli_ok(&["deployments", "get", &id]);
    for part in ["SHADOW TRAFFIC", "GREEN (COPIES)", "BLUE (CLIENTS)", "class mismatches"] {
        assert!(text.contains(part), "`deployments get` lacks `{part}`:\n{text}");
    }
    let copies = mirrored["copies"].to_string();
    assert!(
        text.lines().any(|line| line.split_whitespace().take(2).eq(["requests", copies.as_str()])),
        "`deployments get` shows {copies} copies:\n{text}"
    );
}
