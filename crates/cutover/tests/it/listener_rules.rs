//! Two services behind one listener port by host name, each deployment group routing its own
//! listener rule: a release or a rollback of one never touches the other's rule or answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const HEALTH: &str = "{ path: /health, interval: 1s, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: 2, matcher: \"200\" }";
const WEB: &str = "web.example.com";
const API: &str = "api.example.com";

/// The harness's web stack with its production listener shared by host: web.example.com is the
/// `web` group's rule, api.example.com the `api` group's, anything else a 404.
fn shared_port_cluster() -> Cluster {
    shared_port_cluster_with(Options::default())
}

/// [`shared_port_cluster`] with more `options` (hooks of the `web` group).
fn shared_port_cluster_with(options: Options) -> Cluster {
    let cluster = Cluster::start(options);
    let web = std::fs::read_to_string(cluster.path("cutover.yaml")).unwrap();
    let prod = format!("      - {{ name: prod, port: {} }}\n", cluster.prod.port());
    assert!(web.contains(&prod), "the harness's production listener: {web}");
    let shared = web
        .replacen(
            &prod,
            &format!(
                "      - name: prod\n        port: {}\n        \
                 default_action: {{ fixed_response: {{ status_code: 404, body: no such site }} }}\n        \
                 rules:\n          \
                 - {{ priority: 10, conditions: [{{ host_header: [{WEB}] }}], action: {{ forward: web-blue }} }}\n          \
                 - {{ priority: 20, conditions: [{{ host_header: [{API}] }}], action: {{ forward: api-blue }} }}\n",
                cluster.prod.port()
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
            "deployment_groups:\n  - { application: api, name: api-prod, service: api, deployment_config: quick-canary, \
             target_groups: [api-blue, api-green], production_listener: web/prod, auto_rollback: [DEPLOYMENT_FAILURE] }\n",
            1,
        );
    std::fs::write(cluster.path("cutover.yaml"), shared).unwrap();
    let plan = cluster.cli_ok(&["apply", "-f", "cutover.yaml"]);
    assert!(plan.contains("rules on prod: 10 host-header, 20 host-header"), "{plan}");
    for host in [WEB, API] {
        wait_for(&format!("{host} to serve v1"), Duration::from_secs(30), || {
            (request(cluster.prod, host).ok()? == (200, "v1".to_string())).then_some(())
        });
    }
    assert_eq!(request(cluster.prod, "other.example.com").unwrap(), (404, String::new()));
    cluster
}

/// The rule of `priority` on the production listener, as the data plane serves it.
fn served_rule(cluster: &Cluster, priority: u64) -> Value {
    let admin = cluster.json(&["status"])["lb_admin"].as_str().unwrap().to_string();
    let served: Value =
        reqwest::blocking::get(format!("http://{admin}/v1/routes")).unwrap().json().unwrap();
    served["table"]["listeners"]["web/prod"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["priority"] == priority)
        .cloned()
        .unwrap_or_else(|| panic!("no rule {priority} served: {served}"))
}

/// One request for `/` with `Host: host`: the status and the `X-Version` the app answers.
fn request(addr: SocketAddr, host: &str) -> std::io::Result<(u16, String)> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream);
    send(&mut reader, host)
}

fn send(reader: &mut BufReader<TcpStream>, host: &str) -> std::io::Result<(u16, String)> {
    reader.get_mut().write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (mut version, mut length) = (String::new(), 0usize);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let Some((name, value)) = line.trim_end().split_once(':') else { break };
        match name.to_ascii_lowercase().as_str() {
            "x-version" => version = value.trim().to_string(),
            "content-length" => length = value.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    reader.read_exact(&mut vec![0; length])?;
    Ok((status, version))
}

/// A client calling `/` with `Host: host` on one keep-alive connection as fast as it can,
/// recording (status, version) of every request, until [`HostLoad::finish`].
struct HostLoad {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<(u16, String)>>>,
    thread: std::thread::JoinHandle<()>,
}

impl HostLoad {
    fn start(addr: SocketAddr, host: &'static str) -> HostLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), answers.clone());
        let thread = std::thread::spawn(move || {
            let mut conn: Option<BufReader<TcpStream>> = None;
            while !s.load(Ordering::Relaxed) {
                let reused = conn.is_some();
                let answer = (|| {
                    let reader = match &mut conn {
                        Some(reader) => reader,
                        None => {
                            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                            conn.insert(BufReader::new(stream))
                        }
                    };
                    send(reader, host)
                })();
                let answer = match answer {
                    Ok(answer) => answer,
                    // A keep-alive connection closed between requests is no failed request.
                    Err(_) if reused => {
                        conn = None;
                        continue;
                    }
                    Err(e) => (0, e.to_string()),
                };
                a.lock().unwrap().push(answer);
            }
        });
        HostLoad { stop, answers, thread }
    }

    fn finish(self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        std::mem::take(&mut *self.answers.lock().unwrap())
    }
}

fn deploy(cluster: &Cluster, group: &str, wait: bool) -> Value {
    let mut args = vec![
        "deploy",
        "--group",
        group,
        "--task-definition",
        "taskdef-v2.json",
        "--appspec",
        "appspec.yaml",
    ];
    if wait {
        args.push("--wait");
        let out = cluster.cli_ok(&args);
        assert!(out.contains("succeeded"), "{out}");
        return Value::Null;
    }
    cluster.json(&args)
}

#[test]
fn a_canary_of_one_host_s_service_leaves_the_other_host_untouched() {
    let cluster = shared_port_cluster();
    let api_rule = served_rule(&cluster, 20);
    let (web, api) = (HostLoad::start(cluster.prod, WEB), HostLoad::start(cluster.prod, API));
    deploy(&cluster, "web/web-prod", true);
    let (web, api) = (web.finish(), api.finish());

    assert!(web.len() > 100 && api.len() > 100, "{} web and {} api requests", web.len(), api.len());
    let failed = |answers: &[(u16, String)]| {
        answers.iter().filter(|(status, _)| *status != 200).cloned().collect::<Vec<_>>()
    };
    assert_eq!(failed(&web), [], "web.example.com failed during its release");
    assert_eq!(failed(&api), [], "api.example.com failed during web's release");
    let first_v2 = web.iter().position(|(_, v)| v == "v2").expect("web never served v2");
    let last_v1 = web.iter().rposition(|(_, v)| v == "v1").expect("web never served v1");
    assert!(first_v2 < last_v1, "web's rule never split traffic through a canary");
    assert_eq!(web.last().unwrap().1, "v2");
    assert!(api.iter().all(|(_, v)| v == "v1"), "api.example.com served another version");
    assert_eq!(served_rule(&cluster, 20), api_rule, "web's release changed api's rule");
    let web_rule = served_rule(&cluster, 10);
    let weights: Vec<(&str, u64)> = web_rule["action"]["target_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["weight"].as_u64().unwrap()))
        .collect();
    assert_eq!(weights, [("web-green", 100), ("web-blue", 0)], "{web_rule}");
    assert_eq!(request(cluster.prod, "other.example.com").unwrap(), (404, String::new()));
}

#[test]
fn a_rollback_of_one_host_s_service_leaves_the_other_s_rule_untouched() {
    let cluster = shared_port_cluster();
    let web_rule = served_rule(&cluster, 10);
    let web = HostLoad::start(cluster.prod, WEB);
    let created = deploy(&cluster, "api/api-prod", false);
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("api's canary to reach green", Duration::from_secs(60), || {
        (cluster.deployment(&id)["traffic"]["production_green_percent"] == 20).then_some(())
    });
    assert_ne!(served_rule(&cluster, 20)["action"]["target_groups"][1]["weight"], 0);
    cluster.cli_ok(&["deployments", "stop", &id, "--rollback"]);
    wait_for("api's rollback to end", Duration::from_secs(30), || {
        cluster.deployment(&id)["completed_at"].is_u64().then_some(())
    });
    let web = web.finish();

    assert!(web.len() > 50, "only {} web requests", web.len());
    assert!(
        web.iter().all(|a| *a == (200, "v1".to_string())),
        "web.example.com answered otherwise during api's rollback"
    );
    assert_eq!(served_rule(&cluster, 10), web_rule, "api's rollback changed web's rule");
    let api_rule = served_rule(&cluster, 20);
    let weights: Vec<u64> = api_rule["action"]["target_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, [100, 0], "api is back on blue: {api_rule}");
    wait_for("api.example.com to serve v1 only", Duration::from_secs(10), || {
        (request(cluster.prod, API).ok()? == (200, "v1".to_string())).then_some(())
    });
}

#[test]
fn hooks_of_a_group_on_host_rules_get_the_host_names_that_reach_its_rules() {
    let hosts_file = tempfile::NamedTempFile::new().unwrap();
    let hosts_path = hosts_file.path().display().to_string();
    // The hook validates green through the test listener, which serves web only by host, as
    // users write it: the request must carry the test rule's host or it gets the 404.
    let hook = format!(
        "  - {{ name: check-by-host, timeout: 30s, run: \"printf '%s %s' \\\"$CUTOVER_TEST_HOST\\\" \
         \\\"$CUTOVER_PRODUCTION_HOST\\\" > {hosts_path} && curl -fsS -o /dev/null -H \\\"Host: \
         $CUTOVER_TEST_HOST\\\" $CUTOVER_TEST_URL/health\" }}"
    );
    let cluster = shared_port_cluster_with(Options {
        hooks: Box::leak(hook.into_boxed_str()),
        group_extra: "    hooks: { AfterAllowTestTraffic: check-by-host }",
        ..Options::default()
    });
    let yaml = std::fs::read_to_string(cluster.path("cutover.yaml")).unwrap();
    let test = format!("      - {{ name: test, port: {} }}\n", cluster.test.port());
    assert!(yaml.contains(&test), "the harness's test listener: {yaml}");
    let by_host = yaml.replacen(
        &test,
        &format!(
            "      - name: test\n        port: {}\n        \
             default_action: {{ fixed_response: {{ status_code: 404, body: no such site }} }}\n        \
             rules:\n          \
             - {{ priority: 5, conditions: [{{ host_header: ['*.web-test.example.com', web-test.example.com] }}], \
             action: {{ forward: web-blue }} }}\n",
            cluster.test.port()
        ),
        1,
    );
    std::fs::write(cluster.path("cutover.yaml"), by_host).unwrap();
    cluster.cli_ok(&["apply", "-f", "cutover.yaml"]);
    // `apply` returns once the change is stored; the data plane serves it a moment later.
    let last = std::cell::RefCell::new(None);
    wait_for_or(
        "the test listener to answer another host with its 404",
        Duration::from_secs(30),
        || {
            let answer = request(cluster.test, "other.example.com").ok();
            let served = answer == Some((404, String::new()));
            *last.borrow_mut() = answer;
            served.then_some(())
        },
        || format!("{:?}", last.borrow()),
    );

    deploy(&cluster, "web/web-prod", true);
    assert_eq!(
        std::fs::read_to_string(hosts_file.path()).unwrap(),
        format!("web-test.example.com {WEB}"),
        "the hosts the hook was given"
    );
}
