//! Real clock steps seen by the real `cutover up` (through libfaketime): timeouts and canary
//! intervals are durations, measured on a monotonic clock, so a step of the wall clock changes
//! none of them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::harness::*;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Options whose `cutover up` reads its wall clock through libfaketime, with the offset in
/// `offset_file` (`+0`, `+1h`, `-1h`: libfaketime's relative format), re-read on every call.
fn faked(offset_file: &PathBuf, options: Options) -> Options {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's `faketime` package (.ci/run does)"
    );
    std::fs::write(offset_file, "+0\n").unwrap();
    Options {
        up_env: vec![
            ("LD_PRELOAD", LIBFAKETIME.to_string()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
            ("FAKETIME_NO_CACHE", "1".to_string()),
            ("FAKETIME_TIMESTAMP_FILE", offset_file.display().to_string()),
        ],
        ..options
    }
}

fn offset_file(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

#[test]
fn wall_clock_step_forward_during_a_hook_does_not_time_it_out() {
    let (_keep, offset) = offset_file("faketime.rc");
    let cluster = Cluster::start(faked(
        &offset,
        Options {
            hooks: "  - { name: slow, run: \"sleep 4\", timeout: 20s }",
            ..Options::default()
        },
    ));
    cluster.apply_and_wait_for_v1();
    std::fs::write(cluster.path("appspec-slow.yaml"), appspec("slow")).unwrap();
    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec-slow.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("the slow hook to run", Duration::from_secs(30), || {
        (cluster.deployment(&id)["current_event"] == "AfterAllowTestTraffic").then_some(())
    });

    std::fs::write(&offset, "+1h\n").unwrap();
    let view = wait_for("the deployment to finish", Duration::from_secs(60), || {
        let view = cluster.deployment(&id);
        view["completed_at"].is_u64().then_some(view)
    });
    assert_eq!(view["status"], "Succeeded", "a clock step timed the hook out: {view}");
    let hook = view["lifecycle_events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "AfterAllowTestTraffic")
        .cloned()
        .unwrap();
    assert_eq!(hook["status"], "Succeeded", "{view}");
}

#[test]
fn wall_clock_step_backward_during_a_canary_keeps_the_next_step_on_time() {
    let (_keep, offset) = offset_file("faketime.rc");
    let cluster = Cluster::start(faked(
        &offset,
        Options {
            config: "{ name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 4s }",
            ..Options::default()
        },
    ));
    cluster.apply_and_wait_for_v1();
    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("the canary step (20% on green)", Duration::from_secs(30), || {
        (cluster.deployment(&id)["traffic"]["production_green_percent"] == 20).then_some(())
    });
    let canary_at = Instant::now();

    std::fs::write(&offset, "-1h\n").unwrap();
    wait_for("all traffic on green after the 4 s interval", Duration::from_secs(30), || {
        (cluster.deployment(&id)["traffic"]["production_green_percent"] == 100).then_some(())
    });
    let waited = canary_at.elapsed();
    assert!(
        waited < Duration::from_secs(8),
        "the canary step came {waited:?} after the 20% step, its interval is 4 s"
    );
    let view = wait_for("the deployment to finish", Duration::from_secs(60), || {
        let view = cluster.deployment(&id);
        view["completed_at"].is_u64().then_some(view)
    });
    assert_eq!(view["status"], "Succeeded", "{view}");
}

#[test]
fn a_restart_under_a_wall_clock_set_back_keeps_the_stored_schedule() {
    let (_keep, offset) = offset_file("faketime.rc");
    let mut cluster = Cluster::start(faked(
        &offset,
        Options {
            config: "{ name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 4s }",
            ..Options::default()
        },
    ));
    cluster.apply_and_wait_for_v1();
    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_for("the canary step (20% on green)", Duration::from_secs(30), || {
        (cluster.deployment(&id)["traffic"]["production_green_percent"] == 20).then_some(())
    });

    // The stored deadline is 4 s of wall clock away; the restarted process reads a wall clock an
    // hour earlier, and must still reach it in about 4 s, not in an hour.
    cluster.kill_control_plane();
    std::fs::write(&offset, "-1h\n").unwrap();
    let restarted_at = Instant::now();
    cluster.up();
    wait_for("all traffic on green after the restart", Duration::from_secs(30), || {
        (cluster.deployment(&id)["traffic"]["production_green_percent"] == 100).then_some(())
    });
    let waited = restarted_at.elapsed();
    assert!(
        waited < Duration::from_secs(12),
        "the canary step came {waited:?} after the restart, its interval is 4 s"
    );
}
