//! Script tests for the deployment state machine: a spec line and timed inputs in, a timed trace
//! of effects out, compared with expect-test snapshots (`UPDATE_EXPECT=1` rewrites them).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use expect_test::{Expect, expect};
use model::{DeploymentConfig, LifecycleEvent, Timestamp, TrafficRouting, parse_duration};

use crate::{AutoRollback, Effect, Hook, Input, InputError, Rollout, RolloutSpec, preview};

/// A limit on everything, even in tests.
const STEPS_MAX: usize = 10_000;

enum Action {
    Input(Input),
    /// Snapshot to JSON, restore in a "new process", and resume.
    Restart,
}

/// Parses the spec line of a script, e.g.
/// `spec canary=10%/5m test-listener hook=AfterAllowTestTraffic:smoke:1m ready-wait=30m
/// termination-wait=1h install-timeout=10m rollback=failure,alarm,stop`.
/// Defaults: AllAtOnce, no test listener, no hooks, no waits, install timeout 1h, no rollback.
fn parse_spec(line: &str) -> RolloutSpec {
    let mut spec = RolloutSpec {
        deployment_id: "d-1".to_string(),
        routing: TrafficRouting::AllAtOnce,
        has_test_listener: false,
        hooks: BTreeMap::new(),
        ready_wait: None,
        termination_wait: Duration::ZERO,
        auto_rollback: AutoRollback::default(),
        install_timeout: Duration::from_secs(3600),
    };
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("spec"), "a script starts with a spec line");
    for word in words {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        let duration = || parse_duration(value).unwrap();
        match key {
            "config" => spec.routing = DeploymentConfig::predefined(value).unwrap().routing,
            "canary" | "linear" => {
                let (percent, interval) = value.split_once('/').unwrap();
                let percent = percent.trim_end_matches('%').parse().unwrap();
                let interval = parse_duration(interval).unwrap();
                spec.routing = if key == "canary" {
                    TrafficRouting::Canary { percent, interval }
                } else {
                    TrafficRouting::Linear { percent, interval }
                };
                spec.routing.validate().unwrap();
            }
            "test-listener" => spec.has_test_listener = true,
            "hook" => {
                let [event, name, timeout] = value.split(':').collect::<Vec<_>>()[..] else {
                    panic!("write hooks as hook=Event:name:timeout, not {value}");
                };
                let event = LifecycleEvent::parse(event).unwrap();
                let hook =
                    Hook { name: name.to_string(), timeout: parse_duration(timeout).unwrap() };
                spec.hooks.insert(event, hook);
            }
            "ready-wait" => spec.ready_wait = Some(duration()),
            "termination-wait" => spec.termination_wait = duration(),
            "install-timeout" => spec.install_timeout = duration(),
            "rollback" => {
                for part in value.split(',') {
                    match part {
                        "failure" => spec.auto_rollback.on_failure = true,
                        "alarm" => spec.auto_rollback.on_alarm = true,
                        "stop" => spec.auto_rollback.on_stop_request = true,
                        other => panic!("unknown rollback event {other}"),
                    }
                }
            }
            other => panic!("unknown spec key {other}"),
        }
    }
    spec
}

/// Parses one timed line: `10s healthy`, `1m hook-ok BeforeInstall-1 all good`,
/// `2m hook-fail AfterInstall-2 500 from /health`, `3m unhealthy task exited`, `continue-ready`,
/// `continue-termination`, `stop`, `stop rollback`, `stop no-rollback`, `alarm NAME REASON`,
/// `served` (the load balancer serves the latest route; scripts with `routes-served-by-script`),
/// `restart`.
fn parse_action(line: &str) -> (Timestamp, Action) {
    let (at, rest) = line.split_once(' ').unwrap();
    let at = Timestamp::ZERO.saturating_add(parse_duration(at).unwrap());
    let (command, args) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
    let hook_result = |succeeded| {
        let (execution_id, message) = args.split_once(' ').unwrap_or((args, ""));
        Input::HookResult {
            execution_id: execution_id.to_string(),
            succeeded,
            message: message.to_string(),
        }
    };
    let input = match command {
        "restart" => return (at, Action::Restart),
        "healthy" => Input::GreenHealthy,
        "unhealthy" => Input::GreenUnhealthy { reason: args.to_string() },
        "hook-ok" => hook_result(true),
        "hook-fail" => hook_result(false),
        "continue-ready" => Input::ContinueReadyWait,
        "continue-termination" => Input::ContinueTerminationWait,
        "served" => Input::RoutesServed,
        "stop" => Input::Stop {
            rollback: match args {
                "" => None,
                "rollback" => Some(true),
                "no-rollback" => Some(false),
                other => panic!("stop takes rollback or no-rollback, not {other}"),
            },
        },
        "alarm" => {
            let (name, reason) = args.split_once(' ').unwrap_or((args, ""));
            Input::Alarm { name: name.to_string(), reason: reason.to_string() }
        }
        other => panic!("unknown command {other}"),
    };
    (at, Action::Input(input))
}

/// A parsed script. Unless its spec says `routes-served-by-script`, the load balancer serves
/// every route at once: the driver answers a machine that waits for it with `RoutesServed` at the
/// same instant.
struct Script {
    spec: RolloutSpec,
    actions: VecDeque<(Timestamp, Action)>,
    routes_served_at_once: bool,
}

fn parse_script(script: &str) -> Script {
    // The spec may continue on further lines; timed lines start with a digit.
    let lines: Vec<_> = script.lines().map(str::trim).filter(|it| !it.is_empty()).collect();
    let spec_len =
        lines.iter().take_while(|it| !it.starts_with(|c: char| c.is_ascii_digit())).count();
    let spec_line = lines[..spec_len].join(" ");
    let routes_served_at_once =
        !spec_line.split_whitespace().any(|w| w == "routes-served-by-script");
    let spec_line = spec_line.replace("routes-served-by-script", "");
    let spec = parse_spec(&spec_line);
    let actions: VecDeque<_> = lines[spec_len..].iter().map(|it| parse_action(it)).collect();
    assert!(actions.iter().zip(actions.iter().skip(1)).all(|(a, b)| a.0 <= b.0), "time order");
    Script { spec, actions, routes_served_at_once }
}

/// Moves the effects the machine has queued into the trace, checking that nothing follows
/// `Finished`.
fn drain(rollout: &mut Rollout, now: Timestamp, finished: &mut bool, trace: &mut String) {
    while let Some(effect) = rollout.poll_effect() {
        assert!(!*finished, "`{effect}` after Finished");
        *finished = matches!(effect, Effect::Finished(_));
        writeln!(trace, "{:<8} {effect}", now.to_string()).unwrap();
    }
}

fn restart(rollout: &Rollout) -> Rollout {
    let json = serde_json::to_string(rollout).unwrap();
    let restored: Rollout = serde_json::from_str(&json).unwrap();
    assert_eq!(&restored, rollout, "the snapshot lost something: {json}");
    restored
}

/// Runs a script: the driver advances `now` to the next input or the next deadline, whichever
/// comes first, and returns every effect with its time. On a tie the input is delivered, and the
/// machine handles the due deadline first.
fn run(script: &str) -> (Rollout, String) {
    let Script { spec, mut actions, routes_served_at_once } = parse_script(script);
    let mut rollout = Rollout::new(spec, Timestamp::ZERO);
    let (mut now, mut trace, mut finished) = (Timestamp::ZERO, String::new(), false);
    for _ in 0..STEPS_MAX {
        drain(&mut rollout, now, &mut finished, &mut trace);
        if routes_served_at_once && rollout.awaits_routes_served() {
            rollout.handle_input(Input::RoutesServed, now).unwrap();
            continue;
        }
        let next_action = actions.front().map(|(at, _)| *at);
        let deadline = rollout.poll_timeout();
        if let Some(at) = next_action.filter(|at| deadline.is_none_or(|it| *at <= it)) {
            let (_, action) = actions.pop_front().unwrap();
            now = at;
            match action {
                Action::Input(input) => {
                    // Printed after the effects of the same call: the machine handles due
                    // deadlines before the input.
                    if let Err(err) = rollout.handle_input(input, now) {
                        drain(&mut rollout, now, &mut finished, &mut trace);
                        writeln!(trace, "{:<8} error: {err}", now.to_string()).unwrap();
                    }
                }
                Action::Restart => {
                    rollout = restart(&rollout);
                    writeln!(trace, "{:<8} -- restart --", now.to_string()).unwrap();
                    rollout.resume(now);
                }
            }
        } else if let Some(deadline) = deadline {
            now = deadline;
            rollout.handle_timeout(now);
        } else {
            assert!(rollout.is_finished() && finished, "no deadline, but not finished");
            return (rollout, trace);
        }
    }
    panic!("script did not settle in {STEPS_MAX} steps");
}

#[track_caller]
fn check(script: &str, expect: Expect) {
    expect.assert_eq(&run(script).1);
}

// Success with each predefined config. These show every weight change and its time.

#[test]
fn predefined_all_at_once_shifts_everything_at_once() {
    check(
        "spec config=CodeDeployDefault.ECSAllAtOnce test-listener termination-wait=5m
         20s healthy",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic Skipped
            20s      event BeforeAllowTraffic Skipped
            20s      event AllowTraffic InProgress
            20s      route prod green=100% test=green
            20s      event AllowTraffic Succeeded
            20s      event AfterAllowTraffic Skipped
            20s      status Baking
            5m20s    event End InProgress
            5m20s    terminate-blue
            5m20s    event End Succeeded
            5m20s    status Succeeded
            5m20s    finished Succeeded
        "#]],
    );
}

#[test]
fn predefined_linear_10_percent_every_1_minute_takes_9_minutes() {
    check(
        "spec config=CodeDeployDefault.ECSLinear10PercentEvery1Minutes test-listener
         20s healthy",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic Skipped
            20s      event BeforeAllowTraffic Skipped
            20s      event AllowTraffic InProgress
            20s      route prod green=10% test=green
            1m20s    route prod green=20% test=green
            2m20s    route prod green=30% test=green
            3m20s    route prod green=40% test=green
            4m20s    route prod green=50% test=green
            5m20s    route prod green=60% test=green
            6m20s    route prod green=70% test=green
            7m20s    route prod green=80% test=green
            8m20s    route prod green=90% test=green
            9m20s    route prod green=100% test=green
            9m20s    event AllowTraffic Succeeded
            9m20s    event AfterAllowTraffic Skipped
            9m20s    event End InProgress
            9m20s    terminate-blue
            9m20s    event End Succeeded
            9m20s    status Succeeded
            9m20s    finished Succeeded
        "#]],
    );
}

#[test]
fn predefined_linear_10_percent_every_3_minutes_takes_27_minutes() {
    check(
        "spec config=CodeDeployDefault.ECSLinear10PercentEvery3Minutes
         20s healthy",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic Skipped: no test listener
            20s      event AfterAllowTestTraffic Skipped: no test listener
            20s      event BeforeAllowTraffic Skipped
            20s      event AllowTraffic InProgress
            20s      route prod green=10% test=blue
            3m20s    route prod green=20% test=blue
            6m20s    route prod green=30% test=blue
            9m20s    route prod green=40% test=blue
            12m20s   route prod green=50% test=blue
            15m20s   route prod green=60% test=blue
            18m20s   route prod green=70% test=blue
            21m20s   route prod green=80% test=blue
            24m20s   route prod green=90% test=blue
            27m20s   route prod green=100% test=blue
            27m20s   event AllowTraffic Succeeded
            27m20s   event AfterAllowTraffic Skipped
            27m20s   event End InProgress
            27m20s   terminate-blue
            27m20s   event End Succeeded
            27m20s   status Succeeded
            27m20s   finished Succeeded
        "#]],
    );
}

#[test]
fn predefined_canary_10_percent_5_minutes_shifts_the_rest_after_5_minutes() {
    check(
        "spec config=CodeDeployDefault.ECSCanary10Percent5Minutes test-listener
         20s healthy",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic Skipped
            20s      event BeforeAllowTraffic Skipped
            20s      event AllowTraffic InProgress
            20s      route prod green=10% test=green
            5m20s    route prod green=100% test=green
            5m20s    event AllowTraffic Succeeded
            5m20s    event AfterAllowTraffic Skipped
            5m20s    event End InProgress
            5m20s    terminate-blue
            5m20s    event End Succeeded
            5m20s    status Succeeded
            5m20s    finished Succeeded
        "#]],
    );
}

#[test]
fn predefined_canary_10_percent_15_minutes_shifts_the_rest_after_15_minutes() {
    check(
        "spec config=CodeDeployDefault.ECSCanary10Percent15Minutes test-listener termination-wait=1h
         20s healthy",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic Skipped
            20s      event BeforeAllowTraffic Skipped
            20s      event AllowTraffic InProgress
            20s      route prod green=10% test=green
            15m20s   route prod green=100% test=green
            15m20s   event AllowTraffic Succeeded
            15m20s   event AfterAllowTraffic Skipped
            15m20s   status Baking
            1h15m20s event End InProgress
            1h15m20s terminate-blue
            1h15m20s event End Succeeded
            1h15m20s status Succeeded
            1h15m20s finished Succeeded
        "#]],
    );
}

#[test]
fn custom_canary_shifts_at_its_own_interval() {
    check(
        "spec canary=25%/90s test-listener
         5s healthy",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            5s       event Install Succeeded
            5s       event AfterInstall Skipped
            5s       event AllowTestTraffic InProgress
            5s       route prod green=0% test=green
            5s       event AllowTestTraffic Succeeded
            5s       event AfterAllowTestTraffic Skipped
            5s       event BeforeAllowTraffic Skipped
            5s       event AllowTraffic InProgress
            5s       route prod green=25% test=green
            1m35s    route prod green=100% test=green
            1m35s    event AllowTraffic Succeeded
            1m35s    event AfterAllowTraffic Skipped
            1m35s    event End InProgress
            1m35s    terminate-blue
            1m35s    event End Succeeded
            1m35s    status Succeeded
            1m35s    finished Succeeded
        "#]],
    );
}

#[test]
fn custom_linear_with_a_percentage_that_does_not_divide_100_ends_at_100() {
    check(
        "spec linear=30%/20s
         5s healthy",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            5s       event Install Succeeded
            5s       event AfterInstall Skipped
            5s       event AllowTestTraffic Skipped: no test listener
            5s       event AfterAllowTestTraffic Skipped: no test listener
            5s       event BeforeAllowTraffic Skipped
            5s       event AllowTraffic InProgress
            5s       route prod green=30% test=blue
            25s      route prod green=60% test=blue
            45s      route prod green=90% test=blue
            1m5s     route prod green=100% test=blue
            1m5s     event AllowTraffic Succeeded
            1m5s     event AfterAllowTraffic Skipped
            1m5s     event End InProgress
            1m5s     terminate-blue
            1m5s     event End Succeeded
            1m5s     status Succeeded
            1m5s     finished Succeeded
        "#]],
    );
}

#[test]
fn every_hook_runs_in_order_and_the_test_listener_follows_green() {
    check(
        "spec canary=10%/1m test-listener termination-wait=10m
              hook=BeforeInstall:pre:1m hook=AfterInstall:installed:1m
              hook=AfterAllowTestTraffic:smoke-test:5m hook=BeforeAllowTraffic:gate:1m
              hook=AfterAllowTraffic:verify:1m
         2s  hook-ok BeforeInstall-1
         20s healthy
         21s hook-ok AfterInstall-2
         50s hook-ok AfterAllowTestTraffic-3 12 checks passed
         51s hook-ok BeforeAllowTraffic-4
         2m  hook-ok AfterAllowTraffic-5 p99 latency unchanged",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall InProgress
            0s       run-hook BeforeInstall pre (exec BeforeInstall-1)
            2s       event BeforeInstall Succeeded
            2s       event Install InProgress
            2s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall InProgress
            20s      run-hook AfterInstall installed (exec AfterInstall-2)
            21s      event AfterInstall Succeeded
            21s      event AllowTestTraffic InProgress
            21s      route prod green=0% test=green
            21s      event AllowTestTraffic Succeeded
            21s      event AfterAllowTestTraffic InProgress
            21s      run-hook AfterAllowTestTraffic smoke-test (exec AfterAllowTestTraffic-3)
            50s      event AfterAllowTestTraffic Succeeded: 12 checks passed
            50s      event BeforeAllowTraffic InProgress
            50s      run-hook BeforeAllowTraffic gate (exec BeforeAllowTraffic-4)
            51s      event BeforeAllowTraffic Succeeded
            51s      event AllowTraffic InProgress
            51s      route prod green=10% test=green
            1m51s    route prod green=100% test=green
            1m51s    event AllowTraffic Succeeded
            1m51s    event AfterAllowTraffic InProgress
            1m51s    run-hook AfterAllowTraffic verify (exec AfterAllowTraffic-5)
            2m       event AfterAllowTraffic Succeeded: p99 latency unchanged
            2m       status Baking
            12m      event End InProgress
            12m      terminate-blue
            12m      event End Succeeded
            12m      status Succeeded
            12m      finished Succeeded
        "#]],
    );
}

#[test]
fn without_a_test_listener_test_traffic_events_are_skipped_even_with_a_hook() {
    check(
        "spec canary=10%/1m hook=AfterAllowTestTraffic:smoke-test:5m
         20s healthy",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic Skipped: no test listener
            20s      event AfterAllowTestTraffic Skipped: hook smoke-test not run: no test listener
            20s      event BeforeAllowTraffic Skipped
            20s      event AllowTraffic InProgress
            20s      route prod green=10% test=blue
            1m20s    route prod green=100% test=blue
            1m20s    event AllowTraffic Succeeded
            1m20s    event AfterAllowTraffic Skipped
            1m20s    event End InProgress
            1m20s    terminate-blue
            1m20s    event End Succeeded
            1m20s    status Succeeded
            1m20s    finished Succeeded
        "#]],
    );
}

// Hook failures, at each hookable event, with and without rollback on failure.

#[test]
fn hook_failure_in_before_install_has_nothing_to_roll_back() {
    let script = |rollback| {
        format!(
            "spec test-listener hook=BeforeInstall:pre:1m {rollback}
             10s hook-fail BeforeInstall-1 database migration failed"
        )
    };
    check(
        &script("rollback=failure"),
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall InProgress
            0s       run-hook BeforeInstall pre (exec BeforeInstall-1)
            10s      event BeforeInstall Failed: hook pre failed: database migration failed
            10s      status Failed
            10s      finished Failed HOOK_EXECUTION_FAILURE: hook pre failed: database migration failed
        "#]],
    );
    // Without rollback the trace is the same: nothing was created.
    assert_eq!(run(&script("")).1, run(&script("rollback=failure")).1);
}

#[test]
fn hook_failure_in_after_install_rolls_back_iff_on_failure() {
    let script = |rollback| {
        format!(
            "spec test-listener hook=AfterInstall:installed:1m {rollback}
             20s healthy
             30s hook-fail AfterInstall-1 config check failed"
        )
    };
    check(
        &script("rollback=failure"),
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall InProgress
            20s      run-hook AfterInstall installed (exec AfterInstall-1)
            30s      event AfterInstall Failed: hook installed failed: config check failed
            30s      route prod green=0% test=blue
            30s      stop-green
            30s      status Failed
            30s      finished Failed rolled-back HOOK_EXECUTION_FAILURE: hook installed failed: config check failed
        "#]],
    );
    check(
        &script(""),
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall InProgress
            20s      run-hook AfterInstall installed (exec AfterInstall-1)
            30s      event AfterInstall Failed: hook installed failed: config check failed
            30s      status Failed
            30s      finished Failed HOOK_EXECUTION_FAILURE: hook installed failed: config check failed
        "#]],
    );
}

#[test]
fn hook_failure_in_after_allow_test_traffic_rolls_back_iff_on_failure() {
    let script = |rollback| {
        format!(
            "spec test-listener hook=AfterAllowTestTraffic:smoke-test:5m {rollback}
             20s healthy
             1m  hook-fail AfterAllowTestTraffic-1 3 of 12 checks failed"
        )
    };
    check(
        &script("rollback=failure"),
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic InProgress
            20s      run-hook AfterAllowTestTraffic smoke-test (exec AfterAllowTestTraffic-1)
            1m       event AfterAllowTestTraffic Failed: hook smoke-test failed: 3 of 12 checks failed
            1m       route prod green=0% test=blue
            1m       stop-green
            1m       status Failed
            1m       finished Failed rolled-back HOOK_EXECUTION_FAILURE: hook smoke-test failed: 3 of 12 checks failed
        "#]],
    );
    check(
        &script(""),
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic InProgress
            20s      run-hook AfterAllowTestTraffic smoke-test (exec AfterAllowTestTraffic-1)
            1m       event AfterAllowTestTraffic Failed: hook smoke-test failed: 3 of 12 checks failed
            1m       status Failed
            1m       finished Failed HOOK_EXECUTION_FAILURE: hook smoke-test failed: 3 of 12 checks failed
        "#]],
    );
}

#[test]
fn hook_failure_in_before_allow_traffic_rolls_back_iff_on_failure() {
    let script = |rollback| {
        format!(
            "spec test-listener hook=BeforeAllowTraffic:gate:5m {rollback}
             20s healthy
             1m  hook-fail BeforeAllowTraffic-1 change freeze"
        )
    };
    check(
        &script("rollback=failure"),
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic Skipped
            20s      event BeforeAllowTraffic InProgress
            20s      run-hook BeforeAllowTraffic gate (exec BeforeAllowTraffic-1)
            1m       event BeforeAllowTraffic Failed: hook gate failed: change freeze
            1m       route prod green=0% test=blue
            1m       stop-green
            1m       status Failed
            1m       finished Failed rolled-back HOOK_EXECUTION_FAILURE: hook gate failed: change freeze
        "#]],
    );
    check(
        &script(""),
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic Skipped
            20s      event BeforeAllowTraffic InProgress
            20s      run-hook BeforeAllowTraffic gate (exec BeforeAllowTraffic-1)
            1m       event BeforeAllowTraffic Failed: hook gate failed: change freeze
            1m       status Failed
            1m       finished Failed HOOK_EXECUTION_FAILURE: hook gate failed: change freeze
        "#]],
    );
}

#[test]
fn a_hook_after_a_routing_event_starts_only_once_the_load_balancer_serves_that_routing() {
    // The hooks test what clients reach: while the load balancer still routes as before, the
    // routing event goes on and no hook runs.
    check(
        "spec test-listener routes-served-by-script
         hook=AfterAllowTestTraffic:smoke:1m hook=AfterAllowTraffic:check:1m
         10s healthy
         12s served
         13s hook-ok AfterAllowTestTraffic-1
         15s served
         16s hook-ok AfterAllowTraffic-2",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            10s      event Install Succeeded
            10s      event AfterInstall Skipped
            10s      event AllowTestTraffic InProgress
            10s      route prod green=0% test=green
            12s      event AllowTestTraffic Succeeded
            12s      event AfterAllowTestTraffic InProgress
            12s      run-hook AfterAllowTestTraffic smoke (exec AfterAllowTestTraffic-1)
            13s      event AfterAllowTestTraffic Succeeded
            13s      event BeforeAllowTraffic Skipped
            13s      event AllowTraffic InProgress
            13s      route prod green=100% test=green
            15s      event AllowTraffic Succeeded
            15s      event AfterAllowTraffic InProgress
            15s      run-hook AfterAllowTraffic check (exec AfterAllowTraffic-2)
            16s      event AfterAllowTraffic Succeeded
            16s      event End InProgress
            16s      terminate-blue
            16s      event End Succeeded
            16s      status Succeeded
            16s      finished Succeeded
        "#]],
    );
}

#[test]
fn a_routing_the_load_balancer_never_serves_fails_the_deployment_after_a_minute() {
    // A restart pushes the routing again and waits a full minute for it; then the deployment
    // fails, and rolls back as a failure does.
    check(
        "spec test-listener routes-served-by-script rollback=failure
         10s healthy
         40s restart",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            10s      event Install Succeeded
            10s      event AfterInstall Skipped
            10s      event AllowTestTraffic InProgress
            10s      route prod green=0% test=green
            40s      -- restart --
            40s      route prod green=0% test=green
            40s      start-green
            1m40s    event AllowTestTraffic Failed: the load balancer did not serve test traffic on green within 1m
            1m40s    route prod green=0% test=blue
            1m40s    stop-green
            1m40s    status Failed
            1m40s    finished Failed rolled-back TIMEOUT: the load balancer did not serve test traffic on green within 1m
        "#]],
    );
}

#[test]
fn hook_failure_in_after_allow_traffic_rolls_back_iff_on_failure() {
    let script = |rollback| {
        format!(
            "spec canary=10%/1m test-listener hook=AfterAllowTraffic:verify:5m {rollback}
             20s healthy
             2m  hook-fail AfterAllowTraffic-1 checkout flow broken"
        )
    };
    check(
        &script("rollback=failure"),
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic Skipped
            20s      event BeforeAllowTraffic Skipped
            20s      event AllowTraffic InProgress
            20s      route prod green=10% test=green
            1m20s    route prod green=100% test=green
            1m20s    event AllowTraffic Succeeded
            1m20s    event AfterAllowTraffic InProgress
            1m20s    run-hook AfterAllowTraffic verify (exec AfterAllowTraffic-1)
            2m       event AfterAllowTraffic Failed: hook verify failed: checkout flow broken
            2m       route prod green=0% test=blue
            2m       stop-green
            2m       status Failed
            2m       finished Failed rolled-back HOOK_EXECUTION_FAILURE: hook verify failed: checkout flow broken
        "#]],
    );
    // Without rollback production stays on the (healthy) green; blue is left running.
    check(
        &script(""),
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic Skipped
            20s      event BeforeAllowTraffic Skipped
            20s      event AllowTraffic InProgress
            20s      route prod green=10% test=green
            1m20s    route prod green=100% test=green
            1m20s    event AllowTraffic Succeeded
            1m20s    event AfterAllowTraffic InProgress
            1m20s    run-hook AfterAllowTraffic verify (exec AfterAllowTraffic-1)
            2m       event AfterAllowTraffic Failed: hook verify failed: checkout flow broken
            2m       status Failed
            2m       finished Failed HOOK_EXECUTION_FAILURE: hook verify failed: checkout flow broken
        "#]],
    );
}

#[test]
fn hook_timeout_fails_cancels_the_hook_and_rejects_its_late_result() {
    check(
        "spec test-listener hook=AfterAllowTestTraffic:smoke-test:30s rollback=failure
         20s healthy
         1m  hook-ok AfterAllowTestTraffic-1",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic InProgress
            20s      run-hook AfterAllowTestTraffic smoke-test (exec AfterAllowTestTraffic-1)
            50s      event AfterAllowTestTraffic Failed: hook smoke-test timed out after 30s
            50s      cancel-hook AfterAllowTestTraffic-1
            50s      route prod green=0% test=blue
            50s      stop-green
            50s      status Failed
            50s      finished Failed rolled-back HOOK_EXECUTION_FAILURE: hook smoke-test timed out after 30s
            1m       error: the deployment has already finished; start a new deployment to change what runs
        "#]],
    );
}

#[test]
fn a_hook_result_at_its_deadline_loses_to_the_timeout() {
    let (rollout, trace) = run("spec hook=BeforeInstall:pre:30s
         30s hook-ok BeforeInstall-1");
    assert!(trace.contains("hook pre timed out after 30s"), "{trace}");
    assert_eq!(rollout.status(), model::DeploymentStatus::Failed);
}

#[test]
fn unknown_hook_executions_are_rejected_without_effect() {
    check(
        "spec hook=BeforeInstall:pre:1m
         5s hook-ok BeforeInstall-7
         6s hook-ok BeforeInstall-1
         7s hook-ok BeforeInstall-1
         8s hook-fail BeforeInstall-1
         9s healthy",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall InProgress
            0s       run-hook BeforeInstall pre (exec BeforeInstall-1)
            5s       error: no hook execution `BeforeInstall-7` is waiting for a result: it already reported, timed out, was cancelled, or was replaced after a control-plane restart; report for the execution id of the latest run-hook
            6s       event BeforeInstall Succeeded
            6s       event Install InProgress
            6s       start-green
            8s       error: no hook execution `BeforeInstall-1` is waiting for a result: it already reported, timed out, was cancelled, or was replaced after a control-plane restart; report for the execution id of the latest run-hook
            9s       event Install Succeeded
            9s       event AfterInstall Skipped
            9s       event AllowTestTraffic Skipped: no test listener
            9s       event AfterAllowTestTraffic Skipped: no test listener
            9s       event BeforeAllowTraffic Skipped
            9s       event AllowTraffic InProgress
            9s       route prod green=100% test=blue
            9s       event AllowTraffic Succeeded
            9s       event AfterAllowTraffic Skipped
            9s       event End InProgress
            9s       terminate-blue
            9s       event End Succeeded
            9s       status Succeeded
            9s       finished Succeeded
        "#]],
    );
}

// Ready wait.

#[test]
fn ready_wait_continued_shifts_production_traffic() {
    check(
        "spec canary=10%/1m test-listener ready-wait=1h
         20s healthy
         10m continue-ready
         10m30s continue-ready",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic Skipped
            20s      status Ready
            10m      status InProgress
            10m      event BeforeAllowTraffic Skipped
            10m      event AllowTraffic InProgress
            10m      route prod green=10% test=green
            10m30s   error: the deployment is not in its ready wait; continue it only while its status is Ready (deployment groups with actionOnTimeout STOP_DEPLOYMENT)
            11m      route prod green=100% test=green
            11m      event AllowTraffic Succeeded
            11m      event AfterAllowTraffic Skipped
            11m      event End InProgress
            11m      terminate-blue
            11m      event End Succeeded
            11m      status Succeeded
            11m      finished Succeeded
        "#]],
    );
}

#[test]
fn ready_wait_expiry_stops_and_rolls_back_with_on_stop_request() {
    check(
        "spec test-listener ready-wait=30m rollback=stop
         20s healthy",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic Skipped
            20s      status Ready
            30m20s   route prod green=0% test=blue
            30m20s   stop-green
            30m20s   status Stopped
            30m20s   finished Stopped rolled-back TIMEOUT: ready wait of 30m expired without a continue
        "#]],
    );
}

#[test]
fn ready_wait_expiry_without_on_stop_request_leaves_green_on_the_test_listener() {
    check(
        "spec test-listener ready-wait=30m rollback=failure,alarm
         20s healthy
         31m continue-ready",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic Skipped
            20s      status Ready
            30m20s   status Stopped
            30m20s   finished Stopped TIMEOUT: ready wait of 30m expired without a continue
            31m      error: the deployment has already finished; start a new deployment to change what runs
        "#]],
    );
}

// Stop.

#[test]
fn stop_with_rollback_during_the_shift_puts_production_and_test_back_on_blue() {
    check(
        "spec linear=10%/1m test-listener
         20s healthy
         3m stop rollback",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic Skipped
            20s      event BeforeAllowTraffic Skipped
            20s      event AllowTraffic InProgress
            20s      route prod green=10% test=green
            1m20s    route prod green=20% test=green
            2m20s    route prod green=30% test=green
            3m       event AllowTraffic Failed: stopped by request
            3m       route prod green=0% test=blue
            3m       stop-green
            3m       status Stopped
            3m       finished Stopped rolled-back MANUAL_STOP: stopped by request
        "#]],
    );
}

#[test]
fn stop_without_rollback_during_the_shift_leaves_the_partial_shift() {
    check(
        "spec linear=10%/1m test-listener rollback=stop
         20s healthy
         3m stop no-rollback",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic Skipped
            20s      event BeforeAllowTraffic Skipped
            20s      event AllowTraffic InProgress
            20s      route prod green=10% test=green
            1m20s    route prod green=20% test=green
            2m20s    route prod green=30% test=green
            3m       event AllowTraffic Failed: stopped by request
            3m       status Stopped
            3m       finished Stopped MANUAL_STOP: stopped by request
        "#]],
    );
}

#[test]
fn stop_without_an_explicit_choice_rolls_back_iff_on_stop_request() {
    let script = |rollback| {
        format!(
            "spec canary=10%/5m {rollback}
             20s healthy
             1m  stop"
        )
    };
    assert!(run(&script("rollback=stop")).0.outcome().unwrap().rolled_back);
    assert!(!run(&script("rollback=failure,alarm")).0.outcome().unwrap().rolled_back);
}

#[test]
fn stop_during_a_hook_cancels_it() {
    check(
        "spec test-listener hook=AfterInstall:installed:10m
         20s healthy
         1m  stop rollback
         2m  hook-ok AfterInstall-1 too late",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall InProgress
            20s      run-hook AfterInstall installed (exec AfterInstall-1)
            1m       event AfterInstall Failed: stopped by request
            1m       cancel-hook AfterInstall-1
            1m       route prod green=0% test=blue
            1m       stop-green
            1m       status Stopped
            1m       finished Stopped rolled-back MANUAL_STOP: stopped by request
            2m       error: the deployment has already finished; start a new deployment to change what runs
        "#]],
    );
}

#[test]
fn stop_during_before_install_has_nothing_to_roll_back() {
    check(
        "spec hook=BeforeInstall:pre:10m rollback=stop
         1m stop rollback",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall InProgress
            0s       run-hook BeforeInstall pre (exec BeforeInstall-1)
            1m       event BeforeInstall Failed: stopped by request
            1m       cancel-hook BeforeInstall-1
            1m       status Stopped
            1m       finished Stopped MANUAL_STOP: stopped by request
        "#]],
    );
}

// Termination wait and the point of no return.

#[test]
fn rollback_is_still_possible_during_the_termination_wait() {
    check(
        "spec test-listener termination-wait=1h
         20s healthy
         30m stop rollback",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic Skipped
            20s      event BeforeAllowTraffic Skipped
            20s      event AllowTraffic InProgress
            20s      route prod green=100% test=green
            20s      event AllowTraffic Succeeded
            20s      event AfterAllowTraffic Skipped
            20s      status Baking
            30m      route prod green=0% test=blue
            30m      stop-green
            30m      status Stopped
            30m      finished Stopped rolled-back MANUAL_STOP: stopped by request
        "#]],
    );
}

#[test]
fn continue_termination_wait_terminates_blue_at_once() {
    check(
        "spec termination-wait=1h
         5s  continue-termination
         20s healthy
         10m continue-termination",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            5s       error: the deployment is not in its termination wait; continue it only while its status is Baking (production fully on green, blue still running)
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic Skipped: no test listener
            20s      event AfterAllowTestTraffic Skipped: no test listener
            20s      event BeforeAllowTraffic Skipped
            20s      event AllowTraffic InProgress
            20s      route prod green=100% test=blue
            20s      event AllowTraffic Succeeded
            20s      event AfterAllowTraffic Skipped
            20s      status Baking
            10m      event End InProgress
            10m      terminate-blue
            10m      event End Succeeded
            10m      status Succeeded
            10m      finished Succeeded
        "#]],
    );
}

#[test]
fn after_blue_is_terminated_stop_is_refused_and_alarms_are_ignored() {
    check(
        "spec termination-wait=10m rollback=alarm,stop
         20s healthy
         11m alarm error-rate 5xx above 1%
         12m stop rollback
         13m continue-termination",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic Skipped: no test listener
            20s      event AfterAllowTestTraffic Skipped: no test listener
            20s      event BeforeAllowTraffic Skipped
            20s      event AllowTraffic InProgress
            20s      route prod green=100% test=blue
            20s      event AllowTraffic Succeeded
            20s      event AfterAllowTraffic Skipped
            20s      status Baking
            10m20s   event End InProgress
            10m20s   terminate-blue
            10m20s   event End Succeeded
            10m20s   status Succeeded
            10m20s   finished Succeeded
            12m      error: the blue task set has already been terminated, so the deployment can no longer be stopped or rolled back; to go back, deploy the previous task definition
            13m      error: the deployment has already finished; start a new deployment to change what runs
        "#]],
    );
}

// Green health.

#[test]
fn green_never_healthy_fails_after_the_install_timeout() {
    check(
        "spec test-listener install-timeout=10m rollback=failure",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            10m      event Install Failed: green tasks were not healthy after 10m (install timeout 10m)
            10m      route prod green=0% test=blue
            10m      stop-green
            10m      status Failed
            10m      finished Failed rolled-back CUSTOMER_APPLICATION_UNHEALTHY: green tasks were not healthy after 10m (install timeout 10m)
        "#]],
    );
}

#[test]
fn green_that_cannot_start_fails_the_install_with_the_runtime_reason() {
    check(
        "spec install-timeout=10m rollback=failure
         40s unhealthy task exited with code 1 three times: bind: address already in use",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            40s      event Install Failed: green is unhealthy: task exited with code 1 three times: bind: address already in use
            40s      route prod green=0% test=blue
            40s      stop-green
            40s      status Failed
            40s      finished Failed rolled-back CUSTOMER_APPLICATION_UNHEALTHY: green is unhealthy: task exited with code 1 three times: bind: address already in use
        "#]],
    );
}

#[test]
fn green_unhealthy_mid_shift_without_auto_rollback_takes_production_off_green() {
    check(
        "spec linear=10%/1m test-listener
         20s healthy
         3m30s unhealthy no healthy target in the green target group",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic Skipped
            20s      event BeforeAllowTraffic Skipped
            20s      event AllowTraffic InProgress
            20s      route prod green=10% test=green
            1m20s    route prod green=20% test=green
            2m20s    route prod green=30% test=green
            3m20s    route prod green=40% test=green
            3m30s    event AllowTraffic Failed: green is unhealthy: no healthy target in the green target group
            3m30s    route prod green=0% test=green
            3m30s    status Failed
            3m30s    finished Failed CUSTOMER_APPLICATION_UNHEALTHY: green is unhealthy: no healthy target in the green target group
        "#]],
    );
}

#[test]
fn green_unhealthy_during_baking_with_auto_rollback_rolls_back() {
    check(
        "spec test-listener termination-wait=1h rollback=failure
         20s healthy
         10m unhealthy no healthy target in the green target group",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic Skipped
            20s      event BeforeAllowTraffic Skipped
            20s      event AllowTraffic InProgress
            20s      route prod green=100% test=green
            20s      event AllowTraffic Succeeded
            20s      event AfterAllowTraffic Skipped
            20s      status Baking
            10m      route prod green=0% test=blue
            10m      stop-green
            10m      status Failed
            10m      finished Failed rolled-back CUSTOMER_APPLICATION_UNHEALTHY: green is unhealthy: no healthy target in the green target group
        "#]],
    );
}

// Alarms.

#[test]
fn alarm_before_test_traffic_is_ignored_and_noted() {
    let (rollout, trace) = run("spec canary=10%/1m test-listener rollback=alarm
         10s alarm error-rate 5xx above 1% on blue
         20s healthy");
    expect![[r#"
        0s       status InProgress
        0s       event BeforeInstall Skipped
        0s       event Install InProgress
        0s       start-green
        10s      event Install InProgress: alarm error-rate ignored (alarms are watched from AllowTestTraffic): 5xx above 1% on blue
        20s      event Install Succeeded: alarm error-rate ignored (alarms are watched from AllowTestTraffic): 5xx above 1% on blue
        20s      event AfterInstall Skipped
        20s      event AllowTestTraffic InProgress
        20s      route prod green=0% test=green
        20s      event AllowTestTraffic Succeeded
        20s      event AfterAllowTestTraffic Skipped
        20s      event BeforeAllowTraffic Skipped
        20s      event AllowTraffic InProgress
        20s      route prod green=10% test=green
        1m20s    route prod green=100% test=green
        1m20s    event AllowTraffic Succeeded
        1m20s    event AfterAllowTraffic Skipped
        1m20s    event End InProgress
        1m20s    terminate-blue
        1m20s    event End Succeeded
        1m20s    status Succeeded
        1m20s    finished Succeeded
    "#]].assert_eq(&trace);
    assert_eq!(rollout.outcome().unwrap().status, model::DeploymentStatus::Succeeded);
}

#[test]
fn alarm_without_test_listener_is_watched_from_allow_traffic() {
    check(
        "spec canary=10%/1m ready-wait=10m rollback=alarm
         20s healthy
         1m  alarm error-rate ignored while waiting
         2m  continue-ready
         2m  alarm error-rate 5xx 3.2% > 1%",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic Skipped: no test listener
            20s      event AfterAllowTestTraffic Skipped: no test listener
            20s      status Ready
            1m       event AfterAllowTestTraffic Skipped: no test listener; alarm error-rate ignored (alarms are watched from AllowTraffic): ignored while waiting
            2m       status InProgress
            2m       event BeforeAllowTraffic Skipped
            2m       event AllowTraffic InProgress
            2m       route prod green=10% test=blue
            2m       event AllowTraffic Failed: alarm error-rate: 5xx 3.2% > 1%
            2m       route prod green=0% test=blue
            2m       stop-green
            2m       status Stopped
            2m       finished Stopped rolled-back ALARM_ACTIVE: alarm error-rate: 5xx 3.2% > 1%
        "#]],
    );
}

#[test]
fn alarm_during_the_shift_rolls_back() {
    check(
        "spec canary=10%/5m test-listener rollback=alarm
         20s healthy
         2m  alarm error-rate 5xx 3.2% > 1% for 3 of 3 datapoints",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic Skipped
            20s      event BeforeAllowTraffic Skipped
            20s      event AllowTraffic InProgress
            20s      route prod green=10% test=green
            2m       event AllowTraffic Failed: alarm error-rate: 5xx 3.2% > 1% for 3 of 3 datapoints
            2m       route prod green=0% test=blue
            2m       stop-green
            2m       status Stopped
            2m       finished Stopped rolled-back ALARM_ACTIVE: alarm error-rate: 5xx 3.2% > 1% for 3 of 3 datapoints
        "#]],
    );
}

#[test]
fn alarm_during_the_shift_without_on_alarm_stops_in_place() {
    check(
        "spec canary=10%/5m test-listener rollback=failure
         20s healthy
         2m  alarm latency p99 2.1s > 1s",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic Skipped
            20s      event BeforeAllowTraffic Skipped
            20s      event AllowTraffic InProgress
            20s      route prod green=10% test=green
            2m       event AllowTraffic Failed: alarm latency: p99 2.1s > 1s
            2m       status Stopped
            2m       finished Stopped ALARM_ACTIVE: alarm latency: p99 2.1s > 1s
        "#]],
    );
}

// Inputs out of place.

#[test]
fn continue_inputs_out_of_place_are_rejected_with_advice() {
    check(
        "spec termination-wait=1m
         1s continue-ready
         2s continue-termination",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            1s       error: the deployment is not in its ready wait; continue it only while its status is Ready (deployment groups with actionOnTimeout STOP_DEPLOYMENT)
            2s       error: the deployment is not in its termination wait; continue it only while its status is Baking (production fully on green, blue still running)
            1h       event Install Failed: green tasks were not healthy after 1h (install timeout 1h)
            1h       status Failed
            1h       finished Failed CUSTOMER_APPLICATION_UNHEALTHY: green tasks were not healthy after 1h (install timeout 1h)
        "#]],
    );
}

#[test]
fn after_finishing_commands_are_refused_and_observations_ignored() {
    check(
        "spec hook=BeforeInstall:pre:1m
         10s hook-fail BeforeInstall-1 no
         11s hook-fail BeforeInstall-1 retried callback
         12s hook-ok BeforeInstall-1
         13s healthy
         14s unhealthy gone
         15s alarm a b
         16s continue-ready
         17s stop",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall InProgress
            0s       run-hook BeforeInstall pre (exec BeforeInstall-1)
            10s      event BeforeInstall Failed: hook pre failed: no
            10s      status Failed
            10s      finished Failed HOOK_EXECUTION_FAILURE: hook pre failed: no
            12s      error: the deployment has already finished; start a new deployment to change what runs
            16s      error: the deployment has already finished; start a new deployment to change what runs
            17s      error: the deployment has already finished; start a new deployment to change what runs
        "#]],
    );
}

// Restarts.

#[test]
fn restart_mid_hook_runs_the_hook_again_with_a_new_execution() {
    check(
        "spec test-listener hook=AfterAllowTestTraffic:smoke-test:5m
         20s healthy
         1m  restart
         2m  hook-ok AfterAllowTestTraffic-1 the old execution reports
         3m  hook-ok AfterAllowTestTraffic-2",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            20s      event Install Succeeded
            20s      event AfterInstall Skipped
            20s      event AllowTestTraffic InProgress
            20s      route prod green=0% test=green
            20s      event AllowTestTraffic Succeeded
            20s      event AfterAllowTestTraffic InProgress
            20s      run-hook AfterAllowTestTraffic smoke-test (exec AfterAllowTestTraffic-1)
            1m       -- restart --
            1m       route prod green=0% test=green
            1m       start-green
            1m       cancel-hook AfterAllowTestTraffic-1
            1m       run-hook AfterAllowTestTraffic smoke-test (exec AfterAllowTestTraffic-2)
            1m       event AfterAllowTestTraffic InProgress: execution AfterAllowTestTraffic-1 replaced by AfterAllowTestTraffic-2 after a restart
            2m       error: no hook execution `AfterAllowTestTraffic-1` is waiting for a result: it already reported, timed out, was cancelled, or was replaced after a control-plane restart; report for the execution id of the latest run-hook
            3m       event AfterAllowTestTraffic Succeeded: execution AfterAllowTestTraffic-1 replaced by AfterAllowTestTraffic-2 after a restart
            3m       event BeforeAllowTraffic Skipped
            3m       event AllowTraffic InProgress
            3m       route prod green=100% test=green
            3m       event AllowTraffic Succeeded
            3m       event AfterAllowTraffic Skipped
            3m       event End InProgress
            3m       terminate-blue
            3m       event End Succeeded
            3m       status Succeeded
            3m       finished Succeeded
        "#]],
    );
}

#[test]
fn restart_mid_install_starts_green_again_with_a_full_timeout() {
    check(
        "spec install-timeout=10m rollback=failure
         9m restart
         18m healthy",
        expect![[r#"
            0s       status InProgress
            0s       event BeforeInstall Skipped
            0s       event Install InProgress
            0s       start-green
            9m       -- restart --
            9m       route prod green=0% test=blue
            9m       start-green
            18m      event Install Succeeded
            18m      event AfterInstall Skipped
            18m      event AllowTestTraffic Skipped: no test listener
            18m      event AfterAllowTestTraffic Skipped: no test listener
            18m      event BeforeAllowTraffic Skipped
            18m      event AllowTraffic InProgress
            18m      route prod green=100% test=blue
            18m      event AllowTraffic Succeeded
            18m      event AfterAllowTraffic Skipped
            18m      event End InProgress
            18m      terminate-blue
            18m      event End Succeeded
            18m      status Succeeded
            18m      finished Succeeded
        "#]],
    );
}

#[test]
fn restart_mid_shift_continues_identically() {
    let script = "spec linear=10%/1m test-listener termination-wait=5m
         20s healthy
         XXX
         12m continue-termination";
    let (plain_rollout, plain) = run(&script.replace("XXX", ""));
    let (restarted_rollout, restarted) = run(&script.replace("XXX", "4m30s restart"));
    // The restart adds its marker and re-emits the current route and green; nothing else changes.
    let expected_extra =
        "4m30s    -- restart --\n4m30s    route prod green=50% test=green\n4m30s    start-green\n";
    assert_eq!(restarted.replace(expected_extra, ""), plain);
    assert!(restarted.contains(expected_extra), "{restarted}");
    assert_eq!(restarted_rollout.events(), plain_rollout.events());
}

#[test]
fn restart_after_a_long_outage_fires_overdue_deadlines_at_once() {
    let Script { spec, .. } = parse_script("spec canary=10%/5m termination-wait=10m");
    let mut rollout = Rollout::new(spec, Timestamp::ZERO);
    let t = |s: u64| Timestamp::from_millis(s * 1000);
    rollout.handle_input(Input::GreenHealthy, t(20)).unwrap();
    while rollout.poll_effect().is_some() {}
    // The control plane dies at 1m and comes back after an hour.
    let snapshot = serde_json::to_string(&rollout).unwrap();
    let mut rollout: Rollout = serde_json::from_str(&snapshot).unwrap();
    let mut trace = String::new();
    let mut drain = |rollout: &mut Rollout, now: Timestamp| {
        while let Some(effect) = rollout.poll_effect() {
            writeln!(trace, "{:<8} {effect}", now.to_string()).unwrap();
        }
    };
    rollout.resume(t(3600));
    drain(&mut rollout, t(3600));
    assert_eq!(rollout.poll_timeout(), Some(t(320)), "the canary's second step is overdue");
    rollout.handle_timeout(t(3600));
    drain(&mut rollout, t(3600));
    rollout.handle_input(Input::RoutesServed, t(3600)).unwrap();
    drain(&mut rollout, t(3600));
    expect![[r#"
        1h       route prod green=10% test=blue
        1h       start-green
        1h       route prod green=100% test=blue
        1h       event AllowTraffic Succeeded
        1h       event AfterAllowTraffic Skipped
        1h       status Baking
    "#]]
    .assert_eq(&trace);
}

#[test]
fn restart_of_a_finished_rollout_repeats_the_end_only_if_finished_was_not_polled() {
    let Script { spec, .. } = parse_script("spec rollback=stop");
    let mut rollout = Rollout::new(spec, Timestamp::ZERO);
    rollout.handle_input(Input::Stop { rollback: None }, Timestamp::from_millis(10)).unwrap();
    // Snapshot taken before the effects were performed.
    let mut restored = restart(&rollout);
    restored.resume(Timestamp::from_millis(5_000));
    let effects: Vec<_> =
        std::iter::from_fn(|| restored.poll_effect()).map(|it| it.to_string()).collect();
    expect![[r#"
        [
            "route prod green=0% test=blue",
            "stop-green",
            "finished Stopped rolled-back MANUAL_STOP: stopped by request",
        ]
    "#]]
    .assert_debug_eq(&effects);
    // Once Finished was polled, a restored machine has nothing left to say.
    let mut restored = restart(&restored);
    restored.resume(Timestamp::from_millis(6_000));
    assert_eq!(restored.poll_effect(), None);
}

#[test]
fn snapshots_round_trip_through_json_at_every_step() {
    let Script { spec, .. } = parse_script(
        "spec canary=10%/1m test-listener hook=AfterAllowTestTraffic:smoke:1m ready-wait=1h
         termination-wait=10m rollback=failure,alarm",
    );
    let mut rollout = Rollout::new(spec, Timestamp::ZERO);
    let t = |s: u64| Timestamp::from_millis(s * 1000);
    let inputs = [
        (t(10), Input::Alarm { name: "a".into(), reason: "ignored during Install".into() }),
        (t(20), Input::GreenHealthy),
        (t(25), Input::RoutesServed),
        (
            t(30),
            Input::HookResult {
                execution_id: "AfterAllowTestTraffic-1".into(),
                succeeded: true,
                message: "ok".into(),
            },
        ),
        (t(40), Input::ContinueReadyWait),
    ];
    for (now, input) in inputs {
        rollout.handle_input(input, now).unwrap();
        assert_eq!(restart(&rollout), rollout);
        while rollout.poll_effect().is_some() {}
        assert_eq!(restart(&rollout), rollout);
    }
    rollout.handle_timeout(t(100));
    assert_eq!(restart(&rollout), rollout);
    rollout.handle_input(Input::RoutesServed, t(100)).unwrap();
    assert_eq!(restart(&rollout), rollout);
    let json = serde_json::to_string(&rollout).unwrap();
    // Model types travel by their CodeDeploy names, so a snapshot reads like the API.
    assert!(json.contains(r#""status":"Baking""#), "{json}");
    assert!(json.contains(r#""AfterAllowTestTraffic":{"name":"smoke""#), "{json}");
}

#[test]
fn a_snapshot_with_missing_events_is_refused() {
    let Script { spec, .. } = parse_script("spec");
    let rollout = Rollout::new(spec, Timestamp::ZERO);
    let mut json: serde_json::Value = serde_json::to_value(&rollout).unwrap();
    json["events"].as_array_mut().unwrap().pop();
    let err = serde_json::from_value::<Rollout>(json).unwrap_err().to_string();
    assert!(err.contains("every lifecycle event"), "{err}");
}

// Records, preview, display.

#[test]
fn events_record_status_times_and_messages() {
    let (rollout, _) = run("spec canary=10%/1m test-listener hook=AfterAllowTestTraffic:smoke:1m
         termination-wait=2m rollback=failure
         5s  alarm error-rate noise
         20s healthy
         30s hook-ok AfterAllowTestTraffic-1 12 checks passed
         2m  stop rollback");
    let table: String = rollout
        .events()
        .iter()
        .map(|it| {
            let time = |t: Option<Timestamp>| t.map_or("-".to_string(), |t| t.to_string());
            let line = format!(
                "{:<22} {:<10} {:<5} {:<5} {}",
                it.event.to_string(),
                it.status.to_string(),
                time(it.start),
                time(it.end),
                it.message.as_deref().unwrap_or("")
            );
            format!("{}\n", line.trim_end())
        })
        .collect();
    expect![[r#"
        BeforeInstall          Skipped    0s    0s
        Install                Succeeded  0s    20s   alarm error-rate ignored (alarms are watched from AllowTestTraffic): noise
        AfterInstall           Skipped    20s   20s
        AllowTestTraffic       Succeeded  20s   20s
        AfterAllowTestTraffic  Succeeded  20s   30s   12 checks passed
        BeforeAllowTraffic     Skipped    30s   30s
        AllowTraffic           Succeeded  30s   1m30s
        AfterAllowTraffic      Skipped    1m30s 1m30s
        End                    Pending    -     -
    "#]].assert_eq(&table);
    assert_eq!(rollout.current_event(), None);
    assert_eq!(rollout.routing(), (0, false));
}

#[test]
fn current_event_and_routing_follow_the_deployment() {
    let Script { spec, .. } =
        parse_script("spec canary=10%/1m test-listener ready-wait=1h termination-wait=1h");
    let mut rollout = Rollout::new(spec, Timestamp::ZERO);
    let t = |s: u64| Timestamp::from_millis(s * 1000);
    assert_eq!(rollout.current_event(), Some(LifecycleEvent::Install));
    rollout.handle_input(Input::GreenHealthy, t(1)).unwrap();
    // Routed, but not served yet: the event goes on until the load balancer serves it.
    assert_eq!(rollout.current_event(), Some(LifecycleEvent::AllowTestTraffic));
    assert_eq!(rollout.routing(), (0, true));
    assert!(rollout.awaits_routes_served());
    rollout.handle_input(Input::RoutesServed, t(1)).unwrap();
    assert_eq!((rollout.current_event(), rollout.status()), (None, model::DeploymentStatus::Ready));
    assert!(!rollout.awaits_routes_served());
    rollout.handle_input(Input::ContinueReadyWait, t(2)).unwrap();
    assert_eq!(rollout.current_event(), Some(LifecycleEvent::AllowTraffic));
    assert_eq!(rollout.routing(), (10, true));
    assert!(!rollout.awaits_routes_served(), "a canary step does not wait for the load balancer");
    assert_eq!(rollout.poll_timeout(), Some(t(62)));
    rollout.handle_timeout(t(62));
    assert_eq!(rollout.current_event(), Some(LifecycleEvent::AllowTraffic));
    assert!(rollout.awaits_routes_served());
    rollout.handle_input(Input::RoutesServed, t(62)).unwrap();
    assert_eq!(
        (rollout.current_event(), rollout.status()),
        (None, model::DeploymentStatus::Baking)
    );
    assert_eq!(rollout.routing(), (100, true));
    assert_eq!(rollout.poll_timeout(), Some(t(62 + 3600)));
    assert!(!rollout.is_finished());
}

#[test]
fn preview_of_a_canary_shows_the_whole_timeline() {
    let Script { spec, .. } = parse_script(
        "spec config=CodeDeployDefault.ECSCanary10Percent5Minutes test-listener
         hook=AfterAllowTestTraffic:smoke-test:5m ready-wait=1h termination-wait=1h",
    );
    let timeline: String = preview(&spec)
        .iter()
        .map(|(at, effect)| format!("{:<8} {effect}\n", model::format_duration(*at)))
        .collect();
    expect![[r#"
        0s       status InProgress
        0s       event BeforeInstall Skipped
        0s       event Install InProgress
        0s       start-green
        0s       event Install Succeeded
        0s       event AfterInstall Skipped
        0s       event AllowTestTraffic InProgress
        0s       route prod green=0% test=green
        0s       event AllowTestTraffic Succeeded
        0s       event AfterAllowTestTraffic InProgress
        0s       run-hook AfterAllowTestTraffic smoke-test (exec AfterAllowTestTraffic-1)
        0s       event AfterAllowTestTraffic Succeeded
        0s       status Ready
        0s       status InProgress
        0s       event BeforeAllowTraffic Skipped
        0s       event AllowTraffic InProgress
        0s       route prod green=10% test=green
        5m       route prod green=100% test=green
        5m       event AllowTraffic Succeeded
        5m       event AfterAllowTraffic Skipped
        5m       status Baking
        1h5m     event End InProgress
        1h5m     terminate-blue
        1h5m     event End Succeeded
        1h5m     status Succeeded
        1h5m     finished Succeeded
    "#]]
    .assert_eq(&timeline);
}

#[test]
fn effects_print_on_one_line_even_with_hostile_text() {
    let Script { spec, .. } = parse_script("spec");
    let mut rollout = Rollout::new(spec, Timestamp::ZERO);
    let reason = format!("crashed\nwith\ttabs {}", "x".repeat(5000));
    rollout.handle_input(Input::GreenUnhealthy { reason }, Timestamp::ZERO).unwrap();
    let effects: Vec<_> = std::iter::from_fn(|| rollout.poll_effect()).collect();
    for effect in &effects {
        let line = effect.to_string();
        assert!(!line.contains('\n') && !line.contains('\t'), "{line:?}");
        assert!(line.len() < 1100, "{} bytes", line.len());
    }
    let err = InputError::UnknownHookExecution("x".into()).to_string();
    assert!(err.contains("latest run-hook"), "{err}");
}

// Property test: random inputs at random times.

/// xorshift64: deterministic and dependency-free; the seed is printed on failure.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn secs(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_secs(lo + self.below(hi - lo + 1))
    }
}

fn random_spec(rng: &mut Rng) -> RolloutSpec {
    let routing = match rng.below(7) {
        0..5 => model::PREDEFINED_CONFIGS[rng.below(5) as usize].1,
        5 => {
            TrafficRouting::Canary { percent: 1 + rng.below(99) as u8, interval: rng.secs(1, 900) }
        }
        _ => {
            TrafficRouting::Linear { percent: 1 + rng.below(99) as u8, interval: rng.secs(1, 300) }
        }
    };
    let mut hooks = BTreeMap::new();
    for event in LifecycleEvent::HOOKABLE {
        if rng.chance(50) {
            hooks.insert(event, Hook { name: format!("h-{event}"), timeout: rng.secs(0, 600) });
        }
    }
    RolloutSpec {
        deployment_id: "d-sim".to_string(),
        routing,
        has_test_listener: rng.chance(50),
        hooks,
        ready_wait: rng.chance(30).then(|| rng.secs(0, 3600)),
        termination_wait: if rng.chance(50) { Duration::ZERO } else { rng.secs(1, 3600) },
        auto_rollback: AutoRollback {
            on_failure: rng.chance(50),
            on_alarm: rng.chance(50),
            on_stop_request: rng.chance(50),
        },
        install_timeout: rng.secs(1, 3600),
    }
}

/// What the control plane would have done to the world by performing the effects.
#[derive(Default)]
struct World {
    green_exists: bool,
    blue_terminated: bool,
    route: (u8, bool),
    last_run_hook: Option<String>,
    finished: bool,
}

impl World {
    fn perform(&mut self, rollout: &mut Rollout, trace: &mut String, now: Timestamp) {
        while let Some(effect) = rollout.poll_effect() {
            assert!(!self.finished, "`{effect}` after Finished");
            writeln!(trace, "{now} {effect}").unwrap();
            match effect {
                Effect::Route { production_green_percent, test_to_green } => {
                    assert!(production_green_percent <= 100);
                    assert!(
                        production_green_percent == 0 || self.green_exists,
                        "production routed to a green that does not exist"
                    );
                    self.route = (production_green_percent, test_to_green);
                }
                Effect::StartGreen => self.green_exists = true,
                Effect::StopGreen => self.green_exists = false,
                Effect::TerminateBlue => {
                    assert!(!self.blue_terminated, "blue terminated twice");
                    assert_eq!(self.route.0, 100, "blue terminated while serving production");
                    self.blue_terminated = true;
                }
                Effect::RunHook { execution_id, .. } => self.last_run_hook = Some(execution_id),
                Effect::Finished(outcome) => {
                    self.finished = true;
                    assert_eq!(outcome.status, rollout.status());
                    assert!(outcome.status.is_terminal());
                    if outcome.rolled_back {
                        assert_eq!(self.route, (0, false), "rolled back but still routed");
                        assert!(!self.green_exists, "rolled back but green still exists");
                    }
                    assert_eq!(
                        outcome.status == model::DeploymentStatus::Succeeded,
                        self.blue_terminated
                    );
                }
                Effect::Status(_) | Effect::Event { .. } | Effect::CancelHook { .. } => {}
            }
        }
    }
}

fn simulate(seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let spec = random_spec(&mut rng);
    let mut rollout = Rollout::new(spec, Timestamp::ZERO);
    let (mut now, mut world, mut trace) = (Timestamp::ZERO, World::default(), String::new());
    let step = |rollout: &mut Rollout, world: &mut World, trace: &mut String, now| {
        world.perform(rollout, trace, now);
        assert_eq!(rollout.routing(), world.route, "the machine and the world disagree on routing");
        assert_eq!(rollout.poll_timeout().is_none(), rollout.is_finished());
    };
    step(&mut rollout, &mut world, &mut trace, now);
    for _ in 0..300 {
        if rng.chance(60) {
            now = now.saturating_add(Duration::from_millis(rng.below(180_000)));
        }
        // Whether the deployment had ended at `now`, counting deadlines the input will fire first.
        let mut resumed = false;
        let input = match rng.below(100) {
            0..25 => Some(Input::GreenHealthy),
            25..28 => Some(Input::GreenUnhealthy { reason: "crashed".into() }),
            28..50 => Some(Input::HookResult {
                execution_id: world.last_run_hook.clone().unwrap_or_default(),
                succeeded: rng.chance(85),
                message: String::new(),
            }),
            50..53 => Some(Input::HookResult {
                execution_id: format!("BeforeInstall-{}", rng.below(4)),
                succeeded: rng.chance(50),
                message: "stray".into(),
            }),
            53..60 => Some(Input::ContinueReadyWait),
            60..65 => Some(Input::ContinueTerminationWait),
            65..68 => Some(Input::Stop {
                rollback: [None, Some(true), Some(false)][rng.below(3) as usize],
            }),
            68..72 => Some(Input::Alarm { name: "error-rate".into(), reason: "5xx".into() }),
            72..80 => Some(Input::RoutesServed),
            80..86 => {
                rollout = restart(&rollout);
                writeln!(trace, "{now} -- restart --").unwrap();
                rollout.resume(now);
                resumed = true;
                None
            }
            _ => {
                rollout.handle_timeout(now);
                None
            }
        };
        if let Some(input) = input {
            let unhealthy = matches!(input, Input::GreenUnhealthy { .. });
            // Whether the deployment had ended at `now`, counting the deadlines that the input
            // fires first.
            let was_finished = unhealthy && {
                let mut probe = rollout.clone();
                probe.handle_timeout(now);
                probe.is_finished()
            };
            if let Err(err) = rollout.handle_input(input, now) {
                writeln!(trace, "{now} error: {err}").unwrap();
            }
            if unhealthy && !was_finished {
                assert_eq!(rollout.routing().0, 0, "production left on an unhealthy green");
            }
        }
        step(&mut rollout, &mut world, &mut trace, now);
        if let Some(deadline) = rollout.poll_timeout() {
            // Entry points other than `resume` handle every due deadline.
            assert!(resumed || deadline > now, "deadline {deadline} is due at {now}");
        }
    }
    // With no more inputs, the deadlines alone finish every deployment.
    for _ in 0..200 {
        let Some(deadline) = rollout.poll_timeout() else { break };
        now = now.max(deadline);
        rollout.handle_timeout(now);
        step(&mut rollout, &mut world, &mut trace, now);
    }
    assert!(rollout.is_finished() && world.finished, "the deployment never finished");
    trace
}

#[test]
fn random_inputs_at_random_times_keep_the_invariants_and_always_finish() {
    for seed in 0..500 {
        let run = std::panic::catch_unwind(|| simulate(seed));
        let trace =
            run.unwrap_or_else(|_| panic!("seed {seed} failed; replay with simulate({seed})"));
        assert_eq!(simulate(seed), trace, "seed {seed} is not deterministic");
    }
}

/// The alarm window as the control plane reads it, at each step of a deployment.
fn watching_alarms_trace(spec: &str, inputs: &[(&str, Input)]) -> String {
    let mut rollout = Rollout::new(parse_spec(spec), Timestamp::ZERO);
    let mut trace = String::new();
    let mut now = Timestamp::ZERO;
    let note = |rollout: &Rollout, what: &str, trace: &mut String| {
        let status = rollout.status().as_str();
        let event = rollout.current_event().map_or("-", |e| e.as_str());
        let watching = rollout.is_watching_alarms();
        writeln!(trace, "{what:<22} {status:<10} {event:<22} watching={watching}").unwrap();
    };
    note(&rollout, "created", &mut trace);
    for (what, input) in inputs {
        rollout.handle_input(input.clone(), now).unwrap();
        while rollout.poll_effect().is_some() {}
        // The load balancer serves each routing at once here.
        if rollout.awaits_routes_served() {
            rollout.handle_input(Input::RoutesServed, now).unwrap();
            while rollout.poll_effect().is_some() {}
        }
        note(&rollout, what, &mut trace);
        now = now.saturating_add(Duration::from_secs(1));
    }
    while let Some(at) = rollout.poll_timeout() {
        rollout.handle_timeout(at);
        while rollout.poll_effect().is_some() {}
        if rollout.awaits_routes_served() {
            rollout.handle_input(Input::RoutesServed, at).unwrap();
            while rollout.poll_effect().is_some() {}
        }
        note(&rollout, "deadline", &mut trace);
    }
    trace
}

#[test]
fn alarms_are_watched_from_production_traffic_without_a_test_listener_not_in_the_ready_wait() {
    // Without a test listener green serves nobody in the ready wait: an alarm there speaks about
    // blue, so the window opens only with AllowTraffic.
    let trace = watching_alarms_trace(
        "spec ready-wait=1h termination-wait=10m",
        &[("healthy", Input::GreenHealthy), ("continue-ready", Input::ContinueReadyWait)],
    );
    expect![[r#"
        created                InProgress Install                watching=false
        healthy                Ready      -                      watching=false
        continue-ready         Baking     -                      watching=true
        deadline               Succeeded  -                      watching=false
    "#]]
    .assert_eq(&trace);
}

#[test]
fn alarms_are_watched_from_test_traffic_with_a_test_listener_including_the_ready_wait() {
    let trace = watching_alarms_trace(
        "spec test-listener ready-wait=1h termination-wait=10m",
        &[("healthy", Input::GreenHealthy), ("continue-ready", Input::ContinueReadyWait)],
    );
    expect![[r#"
        created                InProgress Install                watching=false
        healthy                Ready      -                      watching=true
        continue-ready         Baking     -                      watching=true
        deadline               Succeeded  -                      watching=false
    "#]]
    .assert_eq(&trace);
}
