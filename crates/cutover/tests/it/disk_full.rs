//! A data directory that fills up during a canary: the engine says so, acts on nothing it could
//! not write, and carries on by itself once space is freed.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::*;

/// Writes zeros into `path` until the filesystem refuses another byte.
pub fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("creating the filler file");
    for chunk in [1 << 20, 4096, 1] {
        let zeros = vec![0u8; chunk];
        while file.write_all(&zeros).is_ok() {}
    }
    // What the page cache still holds is written now, or refused too.
    let _ = file.sync_all();
}

fn events(cluster: &Cluster, id: &str) -> Vec<String> {
    let (status, events) = cluster.api(
        reqwest::Method::GET,
        &format!("/v1/deployments/{id}/events"),
        &serde_json::Value::Null,
    );
    assert_eq!(status, 200, "{events}");
    events.as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_string()).collect()
}

#[test]
fn full_data_directory_pauses_a_canary_with_a_warning_and_it_resumes_once_space_is_freed() {
    let cluster = Cluster::start(Options {
        config: "{ name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 4s }",
        data_dir_tmpfs: Some("64m"),
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("the canary step (20% on green)", Duration::from_secs(30), || {
        (cluster.deployment(&id)["traffic"]["production_green_percent"] == 20).then_some(())
    });

    let filler = cluster.data_dir().join("filler");
    fill(&filler);
    let filled_at = Instant::now();
    let warning =
        wait_for("`cutover status` to warn about the store", Duration::from_secs(30), || {
            let status = cluster.cli_ok(&["status"]);
            status
                .lines()
                .find(|l| l.starts_with("warning:") && l.contains("cannot be written"))
                .map(str::to_string)
        });
    assert!(warning.contains("database or disk is full"), "{warning}");
    assert!(warning.contains("since"), "the warning says since when: {warning}");
    let held =
        wait_for("the deployment's events to say it cannot write", Duration::from_secs(10), || {
            events(&cluster, &id).into_iter().find(|e| e.contains("cannot write"))
        });
    assert!(held.contains("database or disk is full"), "{held}");

    // The canary's interval passes twice over while the disk is full: the shift to 100% is a
    // decision the engine cannot write, so it must not happen.
    wait_for("two canary intervals with a full disk", Duration::from_secs(20), || {
        let view = cluster.deployment(&id);
        assert_eq!(view["traffic"]["production_green_percent"], 20, "acted while full: {view}");
        assert!(view["completed_at"].is_null(), "finished while full: {view}");
        (filled_at.elapsed() > Duration::from_secs(8)).then_some(())
    });

    std::fs::remove_file(&filler).unwrap();
    let view = wait_for("the deployment to finish by itself", Duration::from_secs(60), || {
        let view = cluster.deployment(&id);
        view["completed_at"].is_u64().then_some(view)
    });
    assert_eq!(view["status"], "Succeeded", "{view}");
    let status = cluster.cli_ok(&["status"]);
    assert!(!status.contains("cannot be written"), "the warning outlived the outage: {status}");
    let events = events(&cluster, &id);
    assert!(
        events.iter().any(|e| e.contains("cannot write") && e.contains("database or disk is full")),
        "the held notice was not written once space came back: {events:?}"
    );
    assert!(
        events.iter().any(|e| e.contains("can be written again")),
        "no event says the store recovered: {events:?}"
    );
    assert_eq!(get(cluster.prod, "/").unwrap().1, "v2");
}

#[test]
fn a_hook_result_that_arrives_while_the_disk_is_full_is_kept_and_the_release_goes_on() {
    let markers = tempfile::tempdir().unwrap();
    let marker = markers.path().join("hook-finished");
    // The hook outlives the fill by a few seconds, and says when it has finished.
    let hooks: &'static str = Box::leak(
        format!("  - {{ name: slow, run: \"sleep 3; touch {}\", timeout: 60s }}", marker.display())
            .into_boxed_str(),
    );
    let cluster =
        Cluster::start(Options { hooks, data_dir_tmpfs: Some("64m"), ..Options::default() });
    cluster.apply_and_wait_for_v1();
    std::fs::write(cluster.path("appspec-slow.yaml"), appspec("slow")).unwrap();
    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec-slow.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("the slow hook to run", Duration::from_secs(30), || {
        (cluster.deployment(&id)["current_event"] == "AfterAllowTestTraffic").then_some(())
    });

    let filler = cluster.data_dir().join("filler");
    fill(&filler);
    wait_for("the hook to finish while the disk is full", Duration::from_secs(30), || {
        marker.exists().then_some(())
    });
    wait_for("`cutover status` to warn about the store", Duration::from_secs(30), || {
        cluster.cli_ok(&["status"]).contains("cannot be written").then_some(())
    });
    let view = cluster.deployment(&id);
    assert_eq!(view["current_event"], "AfterAllowTestTraffic", "acted while full: {view}");

    std::fs::remove_file(&filler).unwrap();
    let view = wait_for("the deployment to finish by itself", Duration::from_secs(60), || {
        let view = cluster.deployment(&id);
        view["completed_at"].is_u64().then_some(view)
    });
    assert_eq!(view["status"], "Succeeded", "the hook's result was lost: {view}");
}
