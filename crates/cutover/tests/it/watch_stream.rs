//! `cutover deployments watch` follows the deployment's event stream, the one the console's
//! deployment page reads: a change prints at once, and when `cutover up` is killed and started
//! again, watch follows the same deployment on to its end without printing an event twice.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;

/// A `cutover deployments watch --output json` of its own, killed if the test ends before it.
struct Watch {
    child: Child,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Watch {
    fn start(cluster: &Cluster, id: &str) -> Watch {
        let mut child = Command::new(CUTOVER)
            .args(["deployments", "watch", id, "--output", "json"])
            .env("CUTOVER_API", cluster.api_url())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(cluster.path("watch.stderr")).unwrap())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|err| panic!("watch printed {line:?}, not JSON: {err}"));
                sink.lock().unwrap().push(value);
            }
        });
        Watch { child, lines }
    }

    fn lines(&self) -> Vec<serde_json::Value> {
        self.lines.lock().unwrap().clone()
    }

    /// The newest event's sequence number printed so far.
    fn last_seq(&self) -> i64 {
        self.lines().iter().filter_map(|l| l["seq"].as_i64()).max().unwrap_or(0)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_follows_the_stream_prints_a_change_at_once_and_resumes_after_a_restart_without_repeating()
{
    let mut cluster = Cluster::start(Options {
        config: "{ name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 30m }",
        group_extra: "    ready_wait: 30m",
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("the ready wait", Duration::from_secs(90), || {
        (cluster.deployment(&id)["status"] == "Ready").then_some(())
    });
    let mut watch = Watch::start(&cluster, &id);
    wait_for_or(
        "watch to print the events so far",
        Duration::from_secs(30),
        || (watch.last_seq() > 0).then_some(()),
        || format!("{:?}", watch.lines()),
    );

    // A change prints as soon as the engine writes it.
    let before = watch.last_seq();
    let continued = Instant::now();
    cluster.cli_ok(&["deployments", "continue", &id]);
    wait_for_or(
        "watch to print the events of the reroute",
        Duration::from_secs(30),
        || (watch.last_seq() > before).then_some(()),
        || format!("{:?}", watch.lines()),
    );
    eprintln!("watch printed the reroute's first event {:?} after continue", continued.elapsed());

    // cutover up killed and started again: watch keeps following the same deployment.
    cluster.kill_control_plane();
    cluster.up();
    cluster.cli_ok(&["deployments", "rollback", &id]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = watch.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "watch did not end: {:?}", watch.lines());
        std::thread::sleep(Duration::from_millis(100));
    };
    // The reader thread has the last line once the pipe closes.
    wait_for_or(
        "watch's final view",
        Duration::from_secs(10),
        || watch.lines().last().filter(|l| l["completed_at"].is_u64()).map(drop),
        || {
            let stderr = std::fs::read_to_string(cluster.path("watch.stderr")).unwrap();
            format!("{:?}; stderr: {stderr}", watch.lines())
        },
    );
    let lines = watch.lines();
    let stderr = std::fs::read_to_string(cluster.path("watch.stderr")).unwrap();
    assert_eq!(status.code(), Some(1), "a rolled-back deployment; stderr: {stderr}");
    assert!(stderr.contains("following it again"), "the stream was not dropped? {stderr}");
    let last = lines.last().unwrap();
    assert_eq!(
        (last["status"].as_str(), last["rolled_back"].as_bool()),
        (Some("Stopped"), Some(true))
    );
    let seqs: Vec<i64> = lines.iter().filter_map(|l| l["seq"].as_i64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "an event printed twice or out of order: {seqs:?}"
    );
    let url = format!("{}/v1/deployments/{id}/events?after=0", cluster.api_url());
    let all: serde_json::Value = reqwest::blocking::get(url).unwrap().json().unwrap();
    let all: Vec<i64> = all.as_array().unwrap().iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert_eq!(seqs, all, "every event of the deployment, once");
}
