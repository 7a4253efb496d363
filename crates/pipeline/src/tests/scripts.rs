//! Script tests: one behaviour each, the whole effect trace (or its brief form) as the snapshot.

use expect_test::expect;

use super::{check, check_brief, run};

// Success and failure of one execution.

#[test]
fn straight_success_runs_equal_run_orders_in_parallel_and_ascending_ones_in_sequence() {
    check(
        "stage Source src Source out=src
         stage Build compile Build in=src out=img; lint Test in=src
         stage Deploy deploy Deploy in=src,img; smoke Test in=src order=2
         0s push e1
         1m ok e1 Build/lint#1
         3m ok e1 Build/compile#1 ref=b-1
         4m started e1 Deploy/deploy#1 d-1
         9m ok e1 Deploy/deploy#1
         10m ok e1 Deploy/smoke#1",
        expect![[r#"
            0s       execution e1 InProgress
            0s       action e1 Source/src#1 Succeeded [c-e1] after 0s
            0s       stage e1 Source Succeeded
            0s       stage e1 Build InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 8h
            0s       start e1 Build/lint#1 Test in[src=src-e1] until 8h
            1m       action e1 Build/lint#1 Succeeded after 1m
            3m       action e1 Build/compile#1 Succeeded [b-1] after 3m
            3m       stage e1 Build Succeeded
            3m       stage e1 Deploy InProgress
            3m       start e1 Deploy/deploy#1 Deploy in[src=src-e1 img=img-e1] until 120h3m
            4m       action e1 Deploy/deploy#1 InProgress [d-1]
            9m       action e1 Deploy/deploy#1 Succeeded [d-1] after 6m
            9m       start e1 Deploy/smoke#1 Test in[src=src-e1] until 8h9m
            10m      action e1 Deploy/smoke#1 Succeeded after 1m
            10m      stage e1 Deploy Succeeded
            10m      execution e1 Succeeded
            10m      finished e1 Succeeded
        "#]],
    );
}

#[test]
fn failing_build_fails_the_execution_and_the_deploy_never_starts() {
    check(
        "standard
         0s push e1
         2m fail e1 Build/compile#1 ref=b-1 exit status 2",
        expect![[r#"
            0s       execution e1 InProgress
            0s       action e1 Source/src#1 Succeeded [c-e1] after 0s
            0s       stage e1 Source Succeeded
            0s       stage e1 Build InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            2m       action e1 Build/compile#1 Failed [b-1] after 2m: exit status 2
            2m       stage e1 Build Failed: action compile failed: exit status 2
            2m       execution e1 Failed: stage Build failed: action compile failed: exit status 2
            2m       finished e1 Failed: stage Build failed: action compile failed: exit status 2
        "#]],
    );
}

#[test]
fn a_failed_action_fails_the_stage_only_after_its_parallel_siblings_finish() {
    check(
        "stage Source src Source out=src
         stage Build compile Build in=src out=img; lint Test in=src; package Build in=img order=2
         stage Deploy deploy Deploy in=src,img
         0s push e1
         1m fail e1 Build/lint#1 3 warnings
         3m ok e1 Build/compile#1",
        expect![[r#"
            0s       execution e1 InProgress
            0s       action e1 Source/src#1 Succeeded [c-e1] after 0s
            0s       stage e1 Source Succeeded
            0s       stage e1 Build InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 8h
            0s       start e1 Build/lint#1 Test in[src=src-e1] until 8h
            1m       action e1 Build/lint#1 Failed after 1m: 3 warnings
            3m       action e1 Build/compile#1 Succeeded after 3m
            3m       stage e1 Build Failed: action lint failed: 3 warnings
            3m       execution e1 Failed: stage Build failed: action lint failed: 3 warnings
            3m       finished e1 Failed: stage Build failed: action lint failed: 3 warnings
        "#]],
    );
}

#[test]
fn success_without_exactly_the_declared_outputs_fails_the_action() {
    check(
        "standard
         0s push e1
         2m ok e1 Build/compile#1 outputs=none built",
        expect![[r#"
            0s       execution e1 InProgress
            0s       action e1 Source/src#1 Succeeded [c-e1] after 0s
            0s       stage e1 Source Succeeded
            0s       stage e1 Build InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            2m       action e1 Build/compile#1 Failed after 2m: reported success (built), but its outputs were [] where the action declares [img]
            2m       stage e1 Build Failed: action compile failed: reported success (built), but its outputs were [] where the action declares [img]
            2m       execution e1 Failed: stage Build failed: action compile failed: reported success (built), but its outputs were [] where the action declares [img]
            2m       finished e1 Failed: stage Build failed: action compile failed: reported success (built), but its outputs were [] where the action declares [img]
        "#]],
    );
}

#[test]
fn an_action_that_does_not_report_in_time_fails_and_is_cancelled() {
    check(
        "standard
         0s push e1
         1h ok e1 Build/compile#1",
        expect![[r#"
            0s       execution e1 InProgress
            0s       action e1 Source/src#1 Succeeded [c-e1] after 0s
            0s       stage e1 Source Succeeded
            0s       stage e1 Build InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            1h       action e1 Build/compile#1 Failed after 1h: timed out after 1h
            1h       cancel e1 Build/compile#1 Build
            1h       stage e1 Build Failed: action compile failed: timed out after 1h
            1h       execution e1 Failed: stage Build failed: action compile failed: timed out after 1h
            1h       finished e1 Failed: stage Build failed: action compile failed: timed out after 1h
        "#]],
    );
}

// SUPERSEDED and QUEUED.

#[test]
fn superseded_three_quick_pushes_supersede_the_middle_one() {
    check(
        "standard
         0s push e1
         10s push e2
         20s push e3
         2m ok e1 Build/compile#1
         4m ok e3 Build/compile#1
         5m ok e1 Deploy/deploy#1
         8m ok e3 Deploy/deploy#1",
        expect![[r#"
            0s       execution e1 InProgress
            0s       action e1 Source/src#1 Succeeded [c-e1] after 0s
            0s       stage e1 Source Succeeded
            0s       stage e1 Build InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            10s      execution e2 InProgress
            10s      action e2 Source/src#1 Succeeded [c-e2] after 0s
            10s      stage e2 Source Succeeded
            10s      execution e2 InProgress: waiting for stage Build
            20s      execution e3 InProgress
            20s      action e3 Source/src#1 Succeeded [c-e3] after 0s
            20s      stage e3 Source Succeeded
            20s      execution e2 Superseded: superseded by e3 while waiting for stage Build
            20s      finished e2 Superseded: superseded by e3 while waiting for stage Build
            20s      execution e3 InProgress: waiting for stage Build
            2m       action e1 Build/compile#1 Succeeded after 2m
            2m       stage e1 Build Succeeded
            2m       stage e1 Deploy InProgress
            2m       start e1 Deploy/deploy#1 Deploy in[src=src-e1 img=img-e1] until 2h2m
            2m       execution e3 InProgress
            2m       stage e3 Build InProgress
            2m       start e3 Build/compile#1 Build in[src=src-e3] out[img] until 1h2m
            4m       action e3 Build/compile#1 Succeeded after 2m
            4m       stage e3 Build Succeeded
            4m       execution e3 InProgress: waiting for stage Deploy
            5m       action e1 Deploy/deploy#1 Succeeded after 3m
            5m       stage e1 Deploy Succeeded
            5m       execution e1 Succeeded
            5m       finished e1 Succeeded
            5m       execution e3 InProgress
            5m       stage e3 Deploy InProgress
            5m       start e3 Deploy/deploy#1 Deploy in[src=src-e3 img=img-e3] until 2h5m
            8m       action e3 Deploy/deploy#1 Succeeded after 3m
            8m       stage e3 Deploy Succeeded
            8m       execution e3 Succeeded
            8m       finished e3 Succeeded
        "#]],
    );
}

#[test]
fn superseding_happens_only_between_stages_never_mid_stage() {
    // e2 is inside Build when e3 and e4 arrive: it is never superseded there. It is superseded
    // only once it waits in front of Deploy and the newer e3 arrives there too.
    check_brief(
        "standard
         0s push e1
         1m ok e1 Build/compile#1
         2m push e2
         3m push e3
         4m ok e2 Build/compile#1
         5m push e4
         6m ok e3 Build/compile#1
         7m ok e1 Deploy/deploy#1
         8m ok e4 Build/compile#1
         9m ok e3 Deploy/deploy#1
         10m ok e4 Deploy/deploy#1",
        expect![[r#"
            0s       execution e1 InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            1m       start e1 Deploy/deploy#1 Deploy in[src=src-e1 img=img-e1] until 2h1m
            2m       execution e2 InProgress
            2m       start e2 Build/compile#1 Build in[src=src-e2] out[img] until 1h2m
            3m       execution e3 InProgress
            3m       execution e3 InProgress: waiting for stage Build
            4m       execution e2 InProgress: waiting for stage Deploy
            4m       execution e3 InProgress
            4m       start e3 Build/compile#1 Build in[src=src-e3] out[img] until 1h4m
            5m       execution e4 InProgress
            5m       execution e4 InProgress: waiting for stage Build
            6m       execution e2 Superseded: superseded by e3 while waiting for stage Deploy
            6m       finished e2 Superseded: superseded by e3 while waiting for stage Deploy
            6m       execution e3 InProgress: waiting for stage Deploy
            6m       execution e4 InProgress
            6m       start e4 Build/compile#1 Build in[src=src-e4] out[img] until 1h6m
            7m       execution e1 Succeeded
            7m       finished e1 Succeeded
            7m       execution e3 InProgress
            7m       start e3 Deploy/deploy#1 Deploy in[src=src-e3 img=img-e3] until 2h7m
            8m       execution e4 InProgress: waiting for stage Deploy
            9m       execution e3 Succeeded
            9m       finished e3 Succeeded
            9m       execution e4 InProgress
            9m       start e4 Deploy/deploy#1 Deploy in[src=src-e4 img=img-e4] until 2h9m
            10m      execution e4 Succeeded
            10m      finished e4 Succeeded
        "#]],
    );
}

#[test]
fn queued_runs_all_three_in_order() {
    check_brief(
        "mode queued
         standard
         0s push e1
         10s push e2
         20s push e3
         2m ok e1 Build/compile#1
         4m ok e2 Build/compile#1
         5m ok e1 Deploy/deploy#1
         6m ok e3 Build/compile#1
         7m ok e2 Deploy/deploy#1
         8m ok e3 Deploy/deploy#1",
        expect![[r#"
            0s       execution e1 InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            10s      execution e2 InProgress
            10s      execution e2 InProgress: waiting for stage Build
            20s      execution e3 InProgress
            20s      execution e3 InProgress: waiting for stage Build
            2m       start e1 Deploy/deploy#1 Deploy in[src=src-e1 img=img-e1] until 2h2m
            2m       execution e2 InProgress
            2m       start e2 Build/compile#1 Build in[src=src-e2] out[img] until 1h2m
            4m       execution e2 InProgress: waiting for stage Deploy
            4m       execution e3 InProgress
            4m       start e3 Build/compile#1 Build in[src=src-e3] out[img] until 1h4m
            5m       execution e1 Succeeded
            5m       finished e1 Succeeded
            5m       execution e2 InProgress
            5m       start e2 Deploy/deploy#1 Deploy in[src=src-e2 img=img-e2] until 2h5m
            6m       execution e3 InProgress: waiting for stage Deploy
            7m       execution e2 Succeeded
            7m       finished e2 Succeeded
            7m       execution e3 InProgress
            7m       start e3 Deploy/deploy#1 Deploy in[src=src-e3 img=img-e3] until 2h7m
            8m       execution e3 Succeeded
            8m       finished e3 Succeeded
        "#]],
    );
}

// Manual approval.

const PROD: &str = "
    stage Source src Source out=src
    stage Build compile Build in=src out=img timeout=1h
    stage Prod approval Approval; deploy Deploy in=src,img order=2 timeout=2h
";

#[test]
fn an_approval_lets_the_deploy_start() {
    check(
        &format!(
            "{PROD}
             0s push e1
             1m ok e1 Build/compile#1
             30m approve e1 Prod/approval alice canary looked fine
             40m ok e1 Prod/deploy#1"
        ),
        expect![[r#"
            0s       execution e1 InProgress
            0s       action e1 Source/src#1 Succeeded [c-e1] after 0s
            0s       stage e1 Source Succeeded
            0s       stage e1 Build InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            1m       action e1 Build/compile#1 Succeeded after 1m
            1m       stage e1 Build Succeeded
            1m       stage e1 Prod InProgress
            1m       start e1 Prod/approval#1 Approval until 168h1m
            30m      action e1 Prod/approval#1 Succeeded after 29m: approved by alice: canary looked fine
            30m      start e1 Prod/deploy#1 Deploy in[src=src-e1 img=img-e1] until 2h30m
            40m      action e1 Prod/deploy#1 Succeeded after 10m
            40m      stage e1 Prod Succeeded
            40m      execution e1 Succeeded
            40m      finished e1 Succeeded
        "#]],
    );
}

#[test]
fn a_rejection_fails_the_execution() {
    check(
        &format!(
            "{PROD}
             0s push e1
             1m ok e1 Build/compile#1
             30m reject e1 Prod/approval bob not on a Friday"
        ),
        expect![[r#"
            0s       execution e1 InProgress
            0s       action e1 Source/src#1 Succeeded [c-e1] after 0s
            0s       stage e1 Source Succeeded
            0s       stage e1 Build InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            1m       action e1 Build/compile#1 Succeeded after 1m
            1m       stage e1 Build Succeeded
            1m       stage e1 Prod InProgress
            1m       start e1 Prod/approval#1 Approval until 168h1m
            30m      action e1 Prod/approval#1 Failed after 29m: rejected by bob: not on a Friday
            30m      stage e1 Prod Failed: action approval failed: rejected by bob: not on a Friday
            30m      execution e1 Failed: stage Prod failed: action approval failed: rejected by bob: not on a Friday
            30m      finished e1 Failed: stage Prod failed: action approval failed: rejected by bob: not on a Friday
        "#]],
    );
}

#[test]
fn an_approval_without_a_decision_fails_after_7_days_and_a_late_decision_is_refused() {
    check(
        &format!(
            "{PROD}
             0s push e1
             1m ok e1 Build/compile#1
             168h1m approve e1 Prod/approval alice sorry, was on holiday"
        ),
        expect![[r#"
            0s       execution e1 InProgress
            0s       action e1 Source/src#1 Succeeded [c-e1] after 0s
            0s       stage e1 Source Succeeded
            0s       stage e1 Build InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            1m       action e1 Build/compile#1 Succeeded after 1m
            1m       stage e1 Build Succeeded
            1m       stage e1 Prod InProgress
            1m       start e1 Prod/approval#1 Approval until 168h1m
            168h1m   action e1 Prod/approval#1 Failed after 168h: no decision within 168h (approval timeout)
            168h1m   cancel e1 Prod/approval#1 Approval
            168h1m   stage e1 Prod Failed: action approval failed: no decision within 168h (approval timeout)
            168h1m   execution e1 Failed: stage Prod failed: action approval failed: no decision within 168h (approval timeout)
            168h1m   finished e1 Failed: stage Prod failed: action approval failed: no decision within 168h (approval timeout)
            168h1m   error: execution `e1` has already finished (Failed); start a new execution
        "#]],
    );
}

#[test]
fn a_waiting_approval_keeps_the_stage_locked() {
    check_brief(
        &format!(
            "{PROD}
             0s push e1
             1m ok e1 Build/compile#1
             2m push e2
             3m ok e2 Build/compile#1
             1h approve e1 Prod/approval alice
             1h5m ok e1 Prod/deploy#1
             2h approve e2 Prod/approval alice
             2h5m ok e2 Prod/deploy#1"
        ),
        expect![[r#"
            0s       execution e1 InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            1m       start e1 Prod/approval#1 Approval until 168h1m
            2m       execution e2 InProgress
            2m       start e2 Build/compile#1 Build in[src=src-e2] out[img] until 1h2m
            3m       execution e2 InProgress: waiting for stage Prod
            1h       start e1 Prod/deploy#1 Deploy in[src=src-e1 img=img-e1] until 3h
            1h5m     execution e1 Succeeded
            1h5m     finished e1 Succeeded
            1h5m     execution e2 InProgress
            1h5m     start e2 Prod/approval#1 Approval until 169h5m
            2h       start e2 Prod/deploy#1 Deploy in[src=src-e2 img=img-e2] until 4h
            2h5m     execution e2 Succeeded
            2h5m     finished e2 Succeeded
        "#]],
    );
}

// Stop.

#[test]
fn stop_and_wait_lets_a_running_build_finish() {
    check(
        "standard
         0s push e1
         1m stop e1 wait wrong branch
         3m ok e1 Build/compile#1",
        expect![[r#"
            0s       execution e1 InProgress
            0s       action e1 Source/src#1 Succeeded [c-e1] after 0s
            0s       stage e1 Source Succeeded
            0s       stage e1 Build InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            1m       stage e1 Build Stopping
            1m       execution e1 Stopping: wrong branch
            3m       action e1 Build/compile#1 Succeeded after 3m
            3m       stage e1 Build Stopped: stopped: wrong branch
            3m       execution e1 Stopped: stopped in stage Build: wrong branch
            3m       finished e1 Stopped: stopped in stage Build: wrong branch
        "#]],
    );
}

#[test]
fn stop_and_wait_stops_a_running_deployment_waits_for_it_and_abandons_the_action() {
    // CodePipeline marks what a stop ended Abandoned, a deploy action as an approval: the
    // deployment did not fail, it was stopped.
    check(
        "standard
         0s push e1
         1m ok e1 Build/compile#1
         2m started e1 Deploy/deploy#1 d-1
         3m stop e1 wait bad release
         4m fail e1 Deploy/deploy#1 deployment d-1 Stopped, rolled back",
        expect![[r#"
            0s       execution e1 InProgress
            0s       action e1 Source/src#1 Succeeded [c-e1] after 0s
            0s       stage e1 Source Succeeded
            0s       stage e1 Build InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            1m       action e1 Build/compile#1 Succeeded after 1m
            1m       stage e1 Build Succeeded
            1m       stage e1 Deploy InProgress
            1m       start e1 Deploy/deploy#1 Deploy in[src=src-e1 img=img-e1] until 2h1m
            2m       action e1 Deploy/deploy#1 InProgress [d-1]
            3m       action e1 Deploy/deploy#1 InProgress [d-1]: asked to stop: bad release
            3m       cancel e1 Deploy/deploy#1 Deploy
            3m       stage e1 Deploy Stopping
            3m       execution e1 Stopping: bad release
            4m       action e1 Deploy/deploy#1 Abandoned [d-1] after 3m: abandoned: bad release; deployment d-1 Stopped, rolled back
            4m       stage e1 Deploy Stopped: stopped: bad release
            4m       execution e1 Stopped: stopped in stage Deploy: bad release
            4m       finished e1 Stopped: stopped in stage Deploy: bad release
        "#]],
    );
}

#[test]
fn stop_and_abandon_abandons_at_once_and_cancels_the_deployment() {
    check(
        "standard
         0s push e1
         1m ok e1 Build/compile#1
         2m started e1 Deploy/deploy#1 d-1
         3m stop e1 abandon bad release
         4m fail e1 Deploy/deploy#1 deployment d-1 Stopped
         5m fail e1 Deploy/deploy#1 deployment d-1 Stopped
         6m stop e1 wait again",
        expect![[r#"
            0s       execution e1 InProgress
            0s       action e1 Source/src#1 Succeeded [c-e1] after 0s
            0s       stage e1 Source Succeeded
            0s       stage e1 Build InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            1m       action e1 Build/compile#1 Succeeded after 1m
            1m       stage e1 Build Succeeded
            1m       stage e1 Deploy InProgress
            1m       start e1 Deploy/deploy#1 Deploy in[src=src-e1 img=img-e1] until 2h1m
            2m       action e1 Deploy/deploy#1 InProgress [d-1]
            3m       action e1 Deploy/deploy#1 Abandoned [d-1] after 2m: abandoned: bad release
            3m       cancel e1 Deploy/deploy#1 Deploy
            3m       stage e1 Deploy Stopped: stopped: bad release
            3m       execution e1 Stopped: stopped in stage Deploy: bad release
            3m       finished e1 Stopped: stopped in stage Deploy: bad release
            5m       error: run #1 of `Deploy/deploy` in execution `e1` is not in progress (its latest run is #1, Abandoned); report for the run of the latest start-action
            6m       error: execution `e1` has already finished (Stopped); start a new execution
        "#]],
    );
}

#[test]
fn stop_and_abandon_after_stop_and_wait_abandons_what_still_runs() {
    check(
        "stage Source src Source out=src
         stage Build compile Build in=src out=img; lint Test in=src
         stage Deploy deploy Deploy in=src,img
         0s push e1
         1m stop e1 wait
         2m stop e1 wait
         3m ok e1 Build/lint#1
         4m stop e1 abandon taking too long",
        expect![[r#"
            0s       execution e1 InProgress
            0s       action e1 Source/src#1 Succeeded [c-e1] after 0s
            0s       stage e1 Source Succeeded
            0s       stage e1 Build InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 8h
            0s       start e1 Build/lint#1 Test in[src=src-e1] until 8h
            1m       stage e1 Build Stopping
            1m       execution e1 Stopping: stop requested
            3m       action e1 Build/lint#1 Succeeded after 3m
            4m       action e1 Build/compile#1 Abandoned after 4m: abandoned: taking too long
            4m       cancel e1 Build/compile#1 Build
            4m       stage e1 Build Stopped: stopped: taking too long
            4m       execution e1 Stopped: stopped in stage Build: taking too long
            4m       finished e1 Stopped: stopped in stage Build: taking too long
        "#]],
    );
}

#[test]
fn a_stop_unlocks_the_stage_for_the_waiting_execution() {
    check_brief(
        "standard
         0s push e1
         1m push e2
         2m stop e1 abandon
         3m ok e2 Build/compile#1
         4m ok e2 Deploy/deploy#1",
        expect![[r#"
            0s       execution e1 InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            1m       execution e2 InProgress
            1m       execution e2 InProgress: waiting for stage Build
            2m       cancel e1 Build/compile#1 Build
            2m       execution e1 Stopped: stopped in stage Build: stop requested
            2m       finished e1 Stopped: stopped in stage Build: stop requested
            2m       execution e2 InProgress
            2m       start e2 Build/compile#1 Build in[src=src-e2] out[img] until 1h2m
            3m       start e2 Deploy/deploy#1 Deploy in[src=src-e2 img=img-e2] until 2h3m
            4m       execution e2 Succeeded
            4m       finished e2 Succeeded
        "#]],
    );
}

#[test]
fn an_execution_waiting_between_stages_stops_at_once() {
    check_brief(
        "standard
         0s push e1
         1m push e2
         2m stop e2 wait not this one
         3m ok e1 Build/compile#1
         4m ok e1 Deploy/deploy#1
         5m stop nope wait",
        expect![[r#"
            0s       execution e1 InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            1m       execution e2 InProgress
            1m       execution e2 InProgress: waiting for stage Build
            2m       execution e2 Stopped: stopped while waiting for stage Build: not this one
            2m       finished e2 Stopped: stopped while waiting for stage Build: not this one
            3m       start e1 Deploy/deploy#1 Deploy in[src=src-e1 img=img-e1] until 2h3m
            4m       execution e1 Succeeded
            4m       finished e1 Succeeded
            5m       error: no execution `nope` in this pipeline (it never existed, or finished long enough ago to have left the kept history)
        "#]],
    );
}

// Retry.

#[test]
fn retry_failed_actions_reruns_only_what_failed_and_keeps_the_other_outputs() {
    check(
        "stage Source src Source out=src
         stage Build compile Build in=src out=img; lint Test in=src
         stage Deploy deploy Deploy in=src,img
         0s push e1
         1m fail e1 Build/lint#1 flaky
         2m ok e1 Build/compile#1 img=img-1
         10m retry e1 Build failed
         11m ok e1 Build/lint#2
         12m ok e1 Deploy/deploy#1",
        expect![[r#"
            0s       execution e1 InProgress
            0s       action e1 Source/src#1 Succeeded [c-e1] after 0s
            0s       stage e1 Source Succeeded
            0s       stage e1 Build InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 8h
            0s       start e1 Build/lint#1 Test in[src=src-e1] until 8h
            1m       action e1 Build/lint#1 Failed after 1m: flaky
            2m       action e1 Build/compile#1 Succeeded after 2m
            2m       stage e1 Build Failed: action lint failed: flaky
            2m       execution e1 Failed: stage Build failed: action lint failed: flaky
            2m       finished e1 Failed: stage Build failed: action lint failed: flaky
            10m      execution e1 InProgress
            10m      stage e1 Build InProgress (attempt 2)
            10m      start e1 Build/lint#2 Test in[src=src-e1] until 8h10m
            11m      action e1 Build/lint#2 Succeeded after 1m
            11m      stage e1 Build Succeeded (attempt 2)
            11m      stage e1 Deploy InProgress
            11m      start e1 Deploy/deploy#1 Deploy in[src=src-e1 img=img-1] until 120h11m
            12m      action e1 Deploy/deploy#1 Succeeded after 1m
            12m      stage e1 Deploy Succeeded
            12m      execution e1 Succeeded
            12m      finished e1 Succeeded
        "#]],
    );
}

#[test]
fn retry_all_actions_reruns_the_whole_stage() {
    check(
        "stage Source src Source out=src
         stage Build compile Build in=src out=img; lint Test in=src
         stage Deploy deploy Deploy in=src,img
         0s push e1
         1m fail e1 Build/lint#1 flaky
         2m ok e1 Build/compile#1 img=img-1
         10m retry e1 Build all
         11m ok e1 Build/lint#2
         12m ok e1 Build/compile#2 img=img-2
         13m ok e1 Deploy/deploy#1",
        expect![[r#"
            0s       execution e1 InProgress
            0s       action e1 Source/src#1 Succeeded [c-e1] after 0s
            0s       stage e1 Source Succeeded
            0s       stage e1 Build InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 8h
            0s       start e1 Build/lint#1 Test in[src=src-e1] until 8h
            1m       action e1 Build/lint#1 Failed after 1m: flaky
            2m       action e1 Build/compile#1 Succeeded after 2m
            2m       stage e1 Build Failed: action lint failed: flaky
            2m       execution e1 Failed: stage Build failed: action lint failed: flaky
            2m       finished e1 Failed: stage Build failed: action lint failed: flaky
            10m      execution e1 InProgress
            10m      stage e1 Build InProgress (attempt 2)
            10m      start e1 Build/compile#2 Build in[src=src-e1] out[img] until 8h10m
            10m      start e1 Build/lint#2 Test in[src=src-e1] until 8h10m
            11m      action e1 Build/lint#2 Succeeded after 1m
            12m      action e1 Build/compile#2 Succeeded after 2m
            12m      stage e1 Build Succeeded (attempt 2)
            12m      stage e1 Deploy InProgress
            12m      start e1 Deploy/deploy#1 Deploy in[src=src-e1 img=img-2] until 120h12m
            13m      action e1 Deploy/deploy#1 Succeeded after 1m
            13m      stage e1 Deploy Succeeded
            13m      execution e1 Succeeded
            13m      finished e1 Succeeded
        "#]],
    );
}

#[test]
fn retry_is_refused_once_a_newer_execution_entered_the_stage() {
    check_brief(
        "standard
         0s push e1
         1m fail e1 Build/compile#1
         2m push e2
         3m retry e1 Build failed
         4m fail e2 Build/compile#1
         5m retry e2 Build failed
         6m ok e2 Build/compile#2
         7m ok e2 Deploy/deploy#1",
        expect![[r#"
            0s       execution e1 InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            1m       execution e1 Failed: stage Build failed: action compile failed
            1m       finished e1 Failed: stage Build failed: action compile failed
            2m       execution e2 InProgress
            2m       start e2 Build/compile#1 Build in[src=src-e2] out[img] until 1h2m
            3m       error: stage `Build` of execution `e1` cannot be retried: execution e2 entered the stage after it; only the latest execution in a stage can be retried
            4m       execution e2 Failed: stage Build failed: action compile failed
            4m       finished e2 Failed: stage Build failed: action compile failed
            5m       execution e2 InProgress
            5m       start e2 Build/compile#2 Build in[src=src-e2] out[img] until 1h5m
            6m       start e2 Deploy/deploy#1 Deploy in[src=src-e2 img=img-e2] until 2h6m
            7m       execution e2 Succeeded
            7m       finished e2 Succeeded
        "#]],
    );
}

#[test]
fn retry_is_allowed_while_newer_executions_have_not_reached_the_stage() {
    // e1 failed in Deploy; e2 is still building, so e1 is the latest execution in Deploy.
    check_brief(
        "standard
         0s push e1
         1m ok e1 Build/compile#1
         2m push e2
         3m fail e1 Deploy/deploy#1 hook failed
         4m retry e1 Deploy failed
         5m ok e2 Build/compile#1
         6m ok e1 Deploy/deploy#2
         7m ok e2 Deploy/deploy#1",
        expect![[r#"
            0s       execution e1 InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            1m       start e1 Deploy/deploy#1 Deploy in[src=src-e1 img=img-e1] until 2h1m
            2m       execution e2 InProgress
            2m       start e2 Build/compile#1 Build in[src=src-e2] out[img] until 1h2m
            3m       execution e1 Failed: stage Deploy failed: action deploy failed: hook failed
            3m       finished e1 Failed: stage Deploy failed: action deploy failed: hook failed
            4m       execution e1 InProgress
            4m       start e1 Deploy/deploy#2 Deploy in[src=src-e1 img=img-e1] until 2h4m
            5m       execution e2 InProgress: waiting for stage Deploy
            6m       execution e1 Succeeded
            6m       finished e1 Succeeded
            6m       execution e2 InProgress
            6m       start e2 Deploy/deploy#1 Deploy in[src=src-e2 img=img-e2] until 2h6m
            7m       execution e2 Succeeded
            7m       finished e2 Succeeded
        "#]],
    );
}

#[test]
fn retry_is_refused_where_there_is_nothing_to_retry() {
    check_brief(
        "standard
         0s push e1
         1m retry e1 Build failed
         2m fail e1 Build/compile#1
         3m retry e1 Deploy failed
         3m retry e1 Source failed
         3m retry e1 Nope failed
         3m retry e9 Build failed
         4m push e2
         5m ok e2 Build/compile#1
         6m ok e2 Deploy/deploy#1
         7m retry e2 Deploy all",
        expect![[r#"
            0s       execution e1 InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            1m       error: stage `Build` of execution `e1` cannot be retried: the execution is still InProgress
            2m       execution e1 Failed: stage Build failed: action compile failed
            2m       finished e1 Failed: stage Build failed: action compile failed
            3m       error: stage `Deploy` of execution `e1` cannot be retried: the stage is not reached in this execution; retry the stage where it failed
            3m       error: stage `Source` of execution `e1` cannot be retried: the source stage cannot be retried; push again or start the pipeline
            3m       error: the pipeline has no stage `Nope`
            3m       error: no execution `e9` in this pipeline (it never existed, or finished long enough ago to have left the kept history)
            4m       execution e2 InProgress
            4m       start e2 Build/compile#1 Build in[src=src-e2] out[img] until 1h4m
            5m       start e2 Deploy/deploy#1 Deploy in[src=src-e2 img=img-e2] until 2h5m
            6m       execution e2 Succeeded
            6m       finished e2 Succeeded
            7m       error: stage `Deploy` of execution `e2` cannot be retried: the execution is Succeeded; only a failed execution can be retried
        "#]],
    );
}

// Reports that do not fit.

#[test]
fn reports_for_runs_not_in_progress_are_refused_or_ignored() {
    check_brief(
        &format!(
            "{PROD}
             0s push e1
             1m ok e1 Build/compile#2
             1m started e1 Build/compile#2 b-2
             1m ok e9 Build/compile#1
             1m ok e1 Build/nope#1
             2m ok e1 Build/compile#1
             2m ok e1 Build/compile#1
             2m fail e1 Build/compile#1
             3m ok e1 Prod/approval#1
             3m approve e1 Build/compile alice
             3m approve e1 Prod/approval alice
             3m approve e1 Prod/approval alice
             4m ok e1 Prod/deploy#1"
        ),
        expect![[r#"
            0s       execution e1 InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            1m       error: run #2 of `Build/compile` in execution `e1` is not in progress (its latest run is #1, InProgress); report for the run of the latest start-action
            1m       error: run #2 of `Build/compile` in execution `e1` is not in progress (its latest run is #1, InProgress); report for the run of the latest start-action
            1m       error: no execution `e9` in this pipeline (it never existed, or finished long enough ago to have left the kept history)
            1m       error: stage `Build` has no action `nope`
            2m       start e1 Prod/approval#1 Approval until 168h2m
            2m       error: run #1 of `Build/compile` in execution `e1` is not in progress (its latest run is #1, Succeeded); report for the run of the latest start-action
            3m       error: `Prod/approval` is a manual approval: answer it with approve or reject, not with an action result
            3m       error: `Build/compile` is not a manual approval action
            3m       start e1 Prod/deploy#1 Deploy in[src=src-e1 img=img-e1] until 2h3m
            3m       error: approval `Prod/approval` of execution `e1` is not waiting for a decision (its latest run is #1, Succeeded)
            4m       execution e1 Succeeded
            4m       finished e1 Succeeded
        "#]],
    );
}

#[test]
fn an_input_never_beats_a_deadline_it_arrived_after() {
    check_brief(
        "standard
         0s push e1
         0s push e1
         0s push bad/id
         1h ok e1 Build/compile#1",
        expect![[r#"
            0s       execution e1 InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            0s       error: execution `e1` already exists in this pipeline; allocate a new id for every execution
            0s       error: `bad/id` is not a valid execution id: use 1 to 128 bytes of A-Z a-z 0-9 . _ -
            1h       cancel e1 Build/compile#1 Build
            1h       execution e1 Failed: stage Build failed: action compile failed: timed out after 1h
            1h       finished e1 Failed: stage Build failed: action compile failed: timed out after 1h
        "#]],
    );
}

// Restart.

/// The trace without restart markers and the starts `resume` asks for again.
fn without_restarts(trace: &str) -> String {
    let mut out = String::new();
    let mut after_restart = false;
    for line in trace.lines() {
        if line.ends_with("-- restart --") {
            after_restart = true;
            continue;
        }
        let effect = line[9..].trim_start();
        if after_restart && (effect.starts_with("start ") || effect.starts_with("cancel ")) {
            continue;
        }
        after_restart = false;
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn snapshot_restore_and_resume_mid_action_continues_identically() {
    let script = |restart: [&str; 2]| {
        format!(
            "{PROD}
             0s push e1
             1m ok e1 Build/compile#1
             2m push e2
             {}
             3m approve e1 Prod/approval alice
             4m started e1 Prod/deploy#1 d-1
             {}
             5m ok e2 Build/compile#1
             9m ok e1 Prod/deploy#1
             10m reject e2 Prod/approval alice",
            restart[0], restart[1]
        )
    };
    let (plain, plain_trace) = run(&script(["", ""]));
    let (restarted, restarted_trace) = run(&script(["2m restart", "4m restart"]));
    assert_eq!(without_restarts(&restarted_trace), plain_trace);
    assert_eq!(
        serde_json::to_value(&plain).unwrap(),
        serde_json::to_value(&restarted).unwrap(),
        "the final states differ"
    );
    expect![[r#"
        0s       execution e1 InProgress
        0s       action e1 Source/src#1 Succeeded [c-e1] after 0s
        0s       stage e1 Source Succeeded
        0s       stage e1 Build InProgress
        0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
        1m       action e1 Build/compile#1 Succeeded after 1m
        1m       stage e1 Build Succeeded
        1m       stage e1 Prod InProgress
        1m       start e1 Prod/approval#1 Approval until 168h1m
        2m       execution e2 InProgress
        2m       action e2 Source/src#1 Succeeded [c-e2] after 0s
        2m       stage e2 Source Succeeded
        2m       stage e2 Build InProgress
        2m       start e2 Build/compile#1 Build in[src=src-e2] out[img] until 1h2m
        2m       -- restart --
        2m       start e1 Prod/approval#1 Approval until 168h1m
        2m       start e2 Build/compile#1 Build in[src=src-e2] out[img] until 1h2m
        3m       action e1 Prod/approval#1 Succeeded after 2m: approved by alice
        3m       start e1 Prod/deploy#1 Deploy in[src=src-e1 img=img-e1] until 2h3m
        4m       action e1 Prod/deploy#1 InProgress [d-1]
        4m       -- restart --
        4m       start e1 Prod/deploy#1 Deploy in[src=src-e1 img=img-e1] until 2h3m
        4m       start e2 Build/compile#1 Build in[src=src-e2] out[img] until 1h2m
        5m       action e2 Build/compile#1 Succeeded after 3m
        5m       stage e2 Build Succeeded
        5m       execution e2 InProgress: waiting for stage Prod
        9m       action e1 Prod/deploy#1 Succeeded [d-1] after 6m
        9m       stage e1 Prod Succeeded
        9m       execution e1 Succeeded
        9m       finished e1 Succeeded
        9m       execution e2 InProgress
        9m       stage e2 Prod InProgress
        9m       start e2 Prod/approval#1 Approval until 168h9m
        10m      action e2 Prod/approval#1 Failed after 1m: rejected by alice
        10m      stage e2 Prod Failed: action approval failed: rejected by alice
        10m      execution e2 Failed: stage Prod failed: action approval failed: rejected by alice
        10m      finished e2 Failed: stage Prod failed: action approval failed: rejected by alice
    "#]]
    .assert_eq(&restarted_trace);
}

#[test]
fn resume_asks_again_for_a_cancellation_not_confirmed() {
    check(
        "standard
         0s push e1
         1m ok e1 Build/compile#1
         2m stop e1 abandon
         3m restart
         4m fail e1 Deploy/deploy#1 stopped
         5m restart",
        expect![[r#"
            0s       execution e1 InProgress
            0s       action e1 Source/src#1 Succeeded [c-e1] after 0s
            0s       stage e1 Source Succeeded
            0s       stage e1 Build InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            1m       action e1 Build/compile#1 Succeeded after 1m
            1m       stage e1 Build Succeeded
            1m       stage e1 Deploy InProgress
            1m       start e1 Deploy/deploy#1 Deploy in[src=src-e1 img=img-e1] until 2h1m
            2m       action e1 Deploy/deploy#1 Abandoned after 1m: abandoned: stop requested
            2m       cancel e1 Deploy/deploy#1 Deploy
            2m       stage e1 Deploy Stopped: stopped: stop requested
            2m       execution e1 Stopped: stopped in stage Deploy: stop requested
            2m       finished e1 Stopped: stopped in stage Deploy: stop requested
            3m       -- restart --
            3m       cancel e1 Deploy/deploy#1 Deploy
            5m       -- restart --
        "#]],
    );
}

#[test]
fn a_stop_withdraws_a_waiting_approval_even_when_it_waits_for_running_actions() {
    check(
        "stage Source src Source out=src
         stage Prod approval Approval; smoke Test in=src
         0s push e1
         1m stop e1 wait release cancelled
         2m approve e1 Prod/approval alice
         3m ok e1 Prod/smoke#1",
        expect![[r#"
            0s       execution e1 InProgress
            0s       action e1 Source/src#1 Succeeded [c-e1] after 0s
            0s       stage e1 Source Succeeded
            0s       stage e1 Prod InProgress
            0s       start e1 Prod/approval#1 Approval until 168h
            0s       start e1 Prod/smoke#1 Test in[src=src-e1] until 8h
            1m       action e1 Prod/approval#1 Abandoned after 1m: abandoned: release cancelled
            1m       cancel e1 Prod/approval#1 Approval
            1m       stage e1 Prod Stopping
            1m       execution e1 Stopping: release cancelled
            2m       error: approval `Prod/approval` of execution `e1` is not waiting for a decision (its latest run is #1, Abandoned)
            3m       action e1 Prod/smoke#1 Succeeded after 3m
            3m       stage e1 Prod Stopped: stopped: release cancelled
            3m       execution e1 Stopped: stopped in stage Prod: release cancelled
            3m       finished e1 Stopped: stopped in stage Prod: release cancelled
        "#]],
    );
}

#[test]
fn a_deployment_that_never_confirms_its_stop_ends_at_its_deadline() {
    check(
        "standard
         0s push e1
         1m ok e1 Build/compile#1
         2m stop e1 wait",
        expect![[r#"
            0s       execution e1 InProgress
            0s       action e1 Source/src#1 Succeeded [c-e1] after 0s
            0s       stage e1 Source Succeeded
            0s       stage e1 Build InProgress
            0s       start e1 Build/compile#1 Build in[src=src-e1] out[img] until 1h
            1m       action e1 Build/compile#1 Succeeded after 1m
            1m       stage e1 Build Succeeded
            1m       stage e1 Deploy InProgress
            1m       start e1 Deploy/deploy#1 Deploy in[src=src-e1 img=img-e1] until 2h1m
            2m       action e1 Deploy/deploy#1 InProgress: asked to stop: stop requested
            2m       cancel e1 Deploy/deploy#1 Deploy
            2m       stage e1 Deploy Stopping
            2m       execution e1 Stopping: stop requested
            2h1m     action e1 Deploy/deploy#1 Failed after 2h: timed out after 2h
            2h1m     stage e1 Deploy Stopped: stopped: stop requested; action deploy failed: timed out after 2h
            2h1m     execution e1 Stopped: stopped in stage Deploy: stop requested
            2h1m     finished e1 Stopped: stopped in stage Deploy: stop requested
        "#]],
    );
}
