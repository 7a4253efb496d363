//! Script tests: a declared world and timed observations in, a timed transcript of effects and
//! the final state out, compared with expect-test snapshots (`UPDATE_EXPECT=1` rewrites them).
//!
//! The world of every script: service `web` (2 tasks, process runtime) in target group `blue`
//! with a 30 s deregistration delay, deployment group `app/web` over `blue` and `green` watching
//! alarm `errors`. Script lines are `TIME command args`:
//!
//! - `declare count=N [checked] [alarms=a,b] [no-service]`: what `apply` declares now;
//! - `deploy ID [test-listener] [ready-wait=D] [termination-wait=D] [install-timeout=D]
//!   [rollback=failure,alarm,stop] [ignore-alarms]`;
//! - `start` / `fail-start REASON`: every task being provisioned started (on 127.0.0.1:9001,
//!   9002, … in order) or failed to start;
//! - `healthy TG [PORTS]` / `unhealthy TG [PORTS]`: the data plane reports every target of `TG`
//!   so (only those on `PORTS`, the others still initial), at the routing version last ordered;
//!   `released`: it serves the last version and lists nobody;
//! - `running [unhealthy-container]`, `exit TASK CODE REASON`, `gone TASK`: runtime reports;
//! - `stopped`: every stopping task's runtime is done with it;
//! - `applied` / `push-failed`: the data plane's answer to the last push;
//! - `alarm KEY REASON` / `ok KEY`: alarm states (every other alarm is OK);
//! - `hook-ok ID EXEC`, `stop ID [rollback|no-rollback]`, `continue ID ready|termination`,
//!   `shutdown`, `tick`;
//! - `restart`: the state goes through JSON, as after `kill -9` and a new `cutover up`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use expect_test::{Expect, expect};
use model::{RuntimeKind, TaskStatus, Timestamp, TrafficRouting, parse_duration};
use routes::{HealthReport, TargetHealth, TargetState};

use crate::*;

const STEPS_MAX: usize = 10_000;

struct World {
    reconciler: Reconciler,
    now: Timestamp,
    trace: String,
    next_port: u16,
    alarms: BTreeMap<String, String>,
    /// Starts the runtime fails at once (`fail-starts N REASON`).
    failing_starts: (u32, String),
}

fn declared(args: &str) -> Declared {
    let mut count = 2;
    let mut checked = false;
    let mut alarms = vec!["errors".to_string()];
    let mut with_service = true;
    for word in args.split_whitespace() {
        match word.split_once('=').unwrap_or((word, "")) {
            ("count", n) => count = n.parse().unwrap(),
            ("checked", _) => checked = true,
            ("alarms", names) => alarms = names.split(',').map(str::to_string).collect(),
            ("no-service", _) => with_service = false,
            other => panic!("unknown declare word {other:?}"),
        }
    }
    let service = ServiceSpec {
        runtime: RuntimeKind::Process,
        task_definition: "web:1".into(),
        desired_count: count,
        target_group: Some("blue".into()),
        health_checked: checked,
    };
    let group =
        GroupSpec { service: "web".into(), target_groups: ["blue".into(), "green".into()], alarms };
    Declared {
        services: if with_service {
            [("web".to_string(), service)].into()
        } else {
            BTreeMap::new()
        },
        groups: if with_service {
            [("app/web".to_string(), group)].into()
        } else {
            BTreeMap::new()
        },
        deregistration_delays: [
            ("blue".to_string(), Duration::from_secs(30)),
            ("green".to_string(), Duration::from_secs(30)),
        ]
        .into(),
    }
}

fn deployment(id: &str, args: &str) -> NewDeployment {
    let mut spec = rollout::RolloutSpec {
        deployment_id: id.to_string(),
        routing: TrafficRouting::AllAtOnce,
        has_test_listener: false,
        hooks: BTreeMap::new(),
        ready_wait: None,
        termination_wait: Duration::ZERO,
        auto_rollback: rollout::AutoRollback::default(),
        install_timeout: Duration::from_secs(3600),
        mirror: None,
    };
    let mut ignore_alarms = false;
    for word in args.split_whitespace() {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        let duration = || parse_duration(value).unwrap();
        match key {
            "test-listener" => spec.has_test_listener = true,
            "ready-wait" => spec.ready_wait = Some(duration()),
            "termination-wait" => spec.termination_wait = duration(),
            "install-timeout" => spec.install_timeout = duration(),
            "ignore-alarms" => ignore_alarms = true,
            "hook" => {
                let event = model::LifecycleEvent::parse(value).unwrap();
                let hook = rollout::Hook {
                    name: format!("{value}-hook"),
                    timeout: Duration::from_secs(60),
                };
                spec.hooks.insert(event, hook);
            }
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
            other => panic!("unknown deploy word {other}"),
        }
    }
    NewDeployment {
        group: "app/web".into(),
        spec,
        task_definition: "web:2".into(),
        health_checked: false,
        ignore_alarms,
    }
}

impl World {
    fn tasks_in(&self, status: TaskStatus) -> Vec<Task> {
        self.reconciler.tasks().filter(|t| t.last_status == status).cloned().collect()
    }

    /// The observations one script line stands for.
    fn observations(&mut self, command: &str, args: &str) -> Vec<Observation> {
        let word = |n: usize| args.split_whitespace().nth(n).unwrap_or("").to_string();
        let rest = |n: usize| args.split_whitespace().skip(n).collect::<Vec<_>>().join(" ");
        match command {
            "declare" => vec![Observation::Command(Command::Declare(declared(args)))],
            "deploy" => {
                let new = deployment(&word(0), &rest(1));
                vec![Observation::Command(Command::CreateDeployment(Box::new(new)))]
            }
            "start" => self
                .tasks_in(TaskStatus::Provisioning)
                .into_iter()
                .map(|t| {
                    self.next_port += 1;
                    let addr = Some(([127, 0, 0, 1], 9000 + self.next_port).into());
                    Observation::TaskStarted { task_id: t.id, handle: "h".into(), addr }
                })
                .collect(),
            "fail-starts" => {
                self.failing_starts = (word(0).parse().unwrap(), rest(1));
                Vec::new()
            }
            "fail-start" => self
                .tasks_in(TaskStatus::Provisioning)
                .into_iter()
                .map(|t| Observation::TaskFailedToStart { task_id: t.id, reason: args.into() })
                .collect(),
            "healthy" | "unhealthy" => {
                vec![self.health_report(&word(0), command == "healthy", &word(1))]
            }
            "released" => vec![Observation::TargetHealth(HealthReport {
                version: self.reconciler.routes_version(),
                target_groups: BTreeMap::new(),
            })],
            "running" => {
                let container = match args {
                    "unhealthy-container" => ContainerHealth::Unhealthy,
                    _ => ContainerHealth::Unknown,
                };
                self.tasks_in(TaskStatus::Running)
                    .into_iter()
                    .map(|t| Observation::TaskInspected {
                        task_id: t.id,
                        state: TaskProbe::Running { container },
                    })
                    .collect()
            }
            "exit" => vec![Observation::TaskInspected {
                task_id: word(0),
                state: TaskProbe::Exited { code: word(1).parse().ok(), reason: rest(2) },
            }],
            "gone" => vec![Observation::TaskInspected { task_id: word(0), state: TaskProbe::Gone }],
            "stopped" => self
                .tasks_in(TaskStatus::Stopping)
                .into_iter()
                .map(|t| Observation::TaskStopped { task_id: t.id })
                .collect(),
            "applied" => {
                vec![Observation::RoutesApplied { version: self.reconciler.routes_version() }]
            }
            "push-failed" => vec![Observation::RoutesFailed {
                version: self.reconciler.routes_version(),
                error: "connection refused".into(),
            }],
            "alarm" => {
                self.alarms.insert(word(0), rest(1));
                vec![self.alarm_readings()]
            }
            "ok" => {
                self.alarms.remove(&word(0));
                vec![self.alarm_readings()]
            }
            "hook-ok" => vec![Observation::HookResult {
                deployment_id: word(0),
                execution_id: word(1),
                succeeded: true,
                message: String::new(),
            }],
            "stop" => vec![Observation::Command(Command::Stop {
                deployment_id: word(0),
                rollback: match word(1).as_str() {
                    "" => None,
                    "rollback" => Some(true),
                    "no-rollback" => Some(false),
                    other => panic!("stop takes rollback or no-rollback, not {other}"),
                },
            })],
            "continue" => vec![Observation::Command(Command::Continue {
                deployment_id: word(0),
                wait: if word(1) == "ready" { Wait::Ready } else { Wait::Termination },
            })],
            "shutdown" => vec![Observation::Command(Command::Shutdown)],
            "tick" => vec![Observation::Tick],
            other => panic!("unknown command {other}"),
        }
    }

    /// Every task of `tg` the data plane knows (the ones it serves in `state`, the ones
    /// draining as draining), at the routing version last ordered. With `ports` (`9003,9005`),
    /// only the targets on those ports are checked yet; the others are still initial.
    fn health_report(&self, tg: &str, healthy: bool, ports: &str) -> Observation {
        let state = if healthy { TargetState::Healthy } else { TargetState::Unhealthy };
        let r = &self.reconciler;
        let targets = r
            .tasks()
            .filter(|t| {
                r.task_set(&t.task_set_id).and_then(|ts| ts.target_group.as_deref()) == Some(tg)
            })
            .filter(|t| matches!(t.last_status, TaskStatus::Running | TaskStatus::Deactivating))
            .filter_map(|t| {
                let addr = t.addr?;
                let checked =
                    ports.is_empty() || ports.split(',').any(|p| p == addr.port().to_string());
                let state = match (t.is_serving(), checked) {
                    (false, _) => TargetState::Draining,
                    (true, false) => TargetState::Initial,
                    (true, true) => state,
                };
                Some(TargetHealth { addr, state, reason: None, description: None, in_flight: 0 })
            })
            .collect();
        let report = HealthReport {
            version: r.routes_version(),
            target_groups: [(tg.to_string(), targets)].into(),
        };
        Observation::TargetHealth(report)
    }

    fn alarm_readings(&self) -> Observation {
        Observation::Alarms(
            self.alarms
                .iter()
                .map(|(key, reason)| AlarmReading {
                    key: key.clone(),
                    in_alarm: true,
                    reason: reason.clone(),
                })
                .collect(),
        )
    }

    fn step(&mut self, observation: Observation) {
        match self.reconciler.observe(observation, self.now) {
            Ok(effects) => {
                let mut failed = Vec::new();
                for effect in effects {
                    let line = effect_line(&effect);
                    writeln!(self.trace, "{:<8} {line}", self.now.to_string()).unwrap();
                    if let Effect::StartTask(launch) = effect
                        && self.failing_starts.0 > 0
                    {
                        self.failing_starts.0 -= 1;
                        let reason = self.failing_starts.1.clone();
                        failed.push(Observation::TaskFailedToStart {
                            task_id: launch.task_id,
                            reason,
                        });
                    }
                }
                for observation in failed {
                    self.step(observation);
                }
            }
            Err(rejected) => {
                writeln!(self.trace, "{:<8} rejected: {rejected}", self.now.to_string()).unwrap()
            }
        }
    }

    /// A restart of an older cutover's data: only what its rows held is kept (see
    /// [`Reconciler::restore`]).
    fn restart_from_rows(&mut self) {
        let r = &self.reconciler;
        let restored = crate::Restored {
            declared: r.declared().clone(),
            task_sets: r
                .task_sets()
                .map(|ts| TaskSet { failures: Default::default(), ..ts.clone() })
                .collect(),
            tasks: r.tasks().map(|t| Task { removed_at_version: None, ..t.clone() }).collect(),
            deployments: r
                .deployments()
                .map(|d| Deployment { alarms_fed: Default::default(), ..d.clone() })
                .collect(),
            groups: r
                .declared()
                .groups
                .keys()
                .filter_map(|key| Some((key.clone(), r.group(key)?.clone())))
                .collect(),
            routes_version: r.routes_version(),
        };
        let next_id = r.next_id;
        self.reconciler = Reconciler::restore(r.id_salt, restored, self.now);
        assert_eq!(self.reconciler.next_id, next_id, "a restored reconciler would reuse an id");
        writeln!(self.trace, "{:<8} -- restart from rows --", self.now.to_string()).unwrap();
    }

    fn restart(&mut self) {
        let json = serde_json::to_string(&self.reconciler).unwrap();
        let restored: Reconciler = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, self.reconciler, "the persisted state lost something: {json}");
        self.reconciler = restored;
        writeln!(self.trace, "{:<8} -- restart --", self.now.to_string()).unwrap();
    }
}

/// One line per effect; routing views in short.
fn effect_line(effect: &Effect) -> String {
    match effect {
        Effect::StartTask(launch) => {
            format!(
                "start-task {} of {} ({})",
                launch.task_id, launch.task_set_id, launch.task_definition
            )
        }
        Effect::StopTask { task_id } => format!("stop-task {task_id}"),
        Effect::RemoveTask { task_id } => format!("remove-task {task_id}"),
        Effect::RunHook { deployment_id, execution_id, hook, .. } => {
            format!("run-hook {deployment_id} {hook} (exec {execution_id})")
        }
        Effect::CancelHook { deployment_id, execution_id } => {
            format!("cancel-hook {deployment_id} {execution_id}")
        }
        Effect::PushRoutes { version, view } => {
            let mut line = format!("push-routes v{version}");
            for (key, g) in &view.groups {
                let test = if g.test_to_green { "green" } else { "blue" };
                write!(
                    line,
                    " {key}: blue={} green={}% test={test}",
                    g.blue_target_group, g.production_green_percent
                )
                .unwrap();
            }
            for (tg, addrs) in &view.targets {
                let ports: Vec<String> = addrs.iter().map(|a| a.port().to_string()).collect();
                write!(line, " {tg}=[{}]", ports.join(",")).unwrap();
            }
            line
        }
        Effect::Rollout { deployment_id, effect } => format!("{deployment_id}: {effect}"),
        Effect::Event { deployment_id, kind, message } => {
            format!("event {deployment_id} {}: {message}", kind.as_str())
        }
        Effect::TaskSetRetired { task_set, tasks } => {
            let ended: Vec<String> =
                tasks.iter().map(|t| format!("{} {}", t.id, t.last_status)).collect();
            format!(
                "task-set-retired {} ({}) with [{}]",
                task_set.id,
                task_set.task_definition,
                ended.join(", ")
            )
        }
        Effect::DeploymentClosed(d) => {
            let later = if d.rolled_back_later { ", rolled back later" } else { "" };
            format!(
                "closed {} ({}{later}, production {}% on green)",
                d.id,
                d.machine.status(),
                d.production_green_percent
            )
        }
        Effect::ShutDown => "shut-down".to_string(),
    }
}

/// The state at the end of a script: task sets, their tasks, groups.
fn state_summary(r: &Reconciler) -> String {
    let mut out = String::new();
    for ts in r.task_sets() {
        write!(
            out,
            "{} {} {} desired={} tg={}",
            ts.id,
            ts.task_definition,
            ts.status,
            ts.desired_count,
            ts.target_group.as_deref().unwrap_or("-")
        )
        .unwrap();
        if ts.failures.count > 0 {
            write!(out, " failures={}", ts.failures.count).unwrap();
        }
        out.push('\n');
        for t in r.tasks().filter(|t| t.task_set_id == ts.id) {
            write!(out, "  {} {} {}", t.id, t.last_status, t.health).unwrap();
            if let Some(reason) = &t.stopped_reason {
                write!(out, " ({reason})").unwrap();
            }
            out.push('\n');
        }
    }
    for (key, g) in &r.groups {
        writeln!(
            out,
            "group {key} primary={} active={} leftover={}",
            g.primary_task_set.as_deref().unwrap_or("-"),
            g.active_deployment.as_deref().unwrap_or("-"),
            g.leftover_deployment.as_deref().unwrap_or("-"),
        )
        .unwrap();
    }
    out
}

/// Runs a script: time moves to the next line or the next deadline, whichever comes first (a
/// deadline is observed as a `tick`), and the transcript shows every effect with its time, then
/// the final state.
fn run(script: &str) -> String {
    let mut lines: VecDeque<(Timestamp, String, String)> = script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let at = parts.next().unwrap();
            let at = Timestamp::ZERO.saturating_add(parse_duration(at).unwrap());
            (at, parts.next().unwrap().to_string(), parts.next().unwrap_or("").to_string())
        })
        .collect();
    assert!(lines.iter().zip(lines.iter().skip(1)).all(|(a, b)| a.0 <= b.0), "time order");
    let mut world = World {
        reconciler: Reconciler::new(0, 0, Timestamp::ZERO),
        now: Timestamp::ZERO,
        trace: String::new(),
        next_port: 0,
        alarms: BTreeMap::new(),
        failing_starts: (0, String::new()),
    };
    for _ in 0..STEPS_MAX {
        let next_line = lines.front().map(|(at, _, _)| *at);
        let deadline = world.reconciler.next_deadline();
        if let Some(at) = next_line.filter(|at| deadline.is_none_or(|d| *at <= d)) {
            let (_, command, args) = lines.pop_front().unwrap();
            world.now = at;
            if command == "restart" {
                world.restart();
                continue;
            }
            if command == "resume" {
                world.restart();
                for effect in world.reconciler.resume(world.now) {
                    writeln!(world.trace, "{:<8} {}", world.now.to_string(), effect_line(&effect))
                        .unwrap();
                }
                continue;
            }
            if command == "restart-from-rows" {
                world.restart_from_rows();
                continue;
            }
            for observation in world.observations(&command, &args) {
                world.step(observation);
            }
        } else if let Some(deadline) = deadline {
            world.now = deadline.max(world.now);
            world.step(Observation::Tick);
        } else {
            writeln!(world.trace, "--").unwrap();
            world.trace.push_str(&state_summary(&world.reconciler));
            return world.trace;
        }
    }
    panic!("script did not settle in {STEPS_MAX} steps");
}

#[track_caller]
fn check(script: &str, expect: Expect) {
    expect.assert_eq(&run(script));
}

#[test]
fn a_declared_service_starts_its_tasks_and_they_become_targets_once_running() {
    check(
        "
        0s declare
        1s start
        2s applied
        ",
        expect![[r#"
            0s       start-task t-0-2 of ts-0-1 (web:1)
            0s       start-task t-0-3 of ts-0-1 (web:1)
            0s       push-routes v1 app/web: blue=blue green=0% test=blue
            1s       push-routes v2 app/web: blue=blue green=0% test=blue blue=[9001]
            1s       push-routes v3 app/web: blue=blue green=0% test=blue blue=[9001,9002]
            --
            ts-0-1 web:1 PRIMARY desired=2 tg=blue
              t-0-2 RUNNING UNKNOWN
              t-0-3 RUNNING UNKNOWN
            group app/web primary=ts-0-1 active=- leftover=-
        "#]],
    );
}

#[test]
fn a_deployment_whose_green_is_healthy_shifts_terminates_blue_and_drains_it() {
    check(
        "
        0s declare
        1s start
        2s applied
        3s healthy blue
        10s deploy d-1
        11s start
        11s applied
        12s healthy green
        13s applied
        14s released
        15s stopped
        ",
        expect![[r#"
            0s       start-task t-0-2 of ts-0-1 (web:1)
            0s       start-task t-0-3 of ts-0-1 (web:1)
            0s       push-routes v1 app/web: blue=blue green=0% test=blue
            1s       push-routes v2 app/web: blue=blue green=0% test=blue blue=[9001]
            1s       push-routes v3 app/web: blue=blue green=0% test=blue blue=[9001,9002]
            10s      d-1: status InProgress
            10s      d-1: event BeforeInstall Skipped
            10s      d-1: event Install InProgress
            10s      d-1: start-green
            10s      start-task t-0-5 of ts-0-4 (web:2)
            10s      start-task t-0-6 of ts-0-4 (web:2)
            10s      push-routes v4 app/web: blue=blue green=0% test=blue blue=[9001,9002]
            11s      push-routes v5 app/web: blue=blue green=0% test=blue blue=[9001,9002] green=[9003]
            11s      push-routes v6 app/web: blue=blue green=0% test=blue blue=[9001,9002] green=[9003,9004]
            12s      d-1: event Install Succeeded
            12s      d-1: event AfterInstall Skipped
            12s      d-1: event AllowTestTraffic Skipped: no test listener
            12s      d-1: event AfterAllowTestTraffic Skipped: no test listener
            12s      d-1: event BeforeAllowTraffic Skipped
            12s      d-1: event AllowTraffic InProgress
            12s      d-1: route prod green=100% test=blue
            12s      push-routes v7 app/web: blue=blue green=100% test=blue blue=[9001,9002] green=[9003,9004]
            13s      d-1: event AllowTraffic Succeeded
            13s      d-1: event AfterAllowTraffic Skipped
            13s      d-1: event End InProgress
            13s      d-1: terminate-blue
            13s      d-1: event End Succeeded
            13s      d-1: status Succeeded
            13s      d-1: finished Succeeded
            13s      closed d-1 (Succeeded, production 100% on green)
            13s      push-routes v8 app/web: blue=green green=0% test=blue green=[9003,9004]
            14s      stop-task t-0-2
            14s      stop-task t-0-3
            15s      task-set-retired ts-0-1 (web:1) with [t-0-2 STOPPED, t-0-3 STOPPED]
            --
            ts-0-4 web:2 PRIMARY desired=2 tg=green
              t-0-5 RUNNING UNKNOWN
              t-0-6 RUNNING UNKNOWN
            group app/web primary=ts-0-4 active=- leftover=-
        "#]],
    );
}

#[test]
fn green_tasks_failing_three_times_in_a_row_fail_the_deployment_and_roll_back() {
    check(
        "
        0s declare count=1
        1s start
        2s applied
        9s fail-starts 3 image not found
        10s deploy d-1 rollback=failure
        ",
        expect![[r#"
            0s       start-task t-0-2 of ts-0-1 (web:1)
            0s       push-routes v1 app/web: blue=blue green=0% test=blue
            1s       push-routes v2 app/web: blue=blue green=0% test=blue blue=[9001]
            10s      d-1: status InProgress
            10s      d-1: event BeforeInstall Skipped
            10s      d-1: event Install InProgress
            10s      d-1: start-green
            10s      start-task t-0-4 of ts-0-3 (web:2)
            10s      push-routes v3 app/web: blue=blue green=0% test=blue blue=[9001]
            10.500s  start-task t-0-5 of ts-0-3 (web:2)
            11.500s  start-task t-0-6 of ts-0-3 (web:2)
            11.500s  d-1: event Install Failed: green is unhealthy: green tasks failed 3 times in a row; last: task failed to start: image not found
            11.500s  d-1: route prod green=0% test=blue
            11.500s  d-1: stop-green
            11.500s  d-1: status Failed
            11.500s  d-1: finished Failed rolled-back CUSTOMER_APPLICATION_UNHEALTHY: green is unhealthy: green tasks failed 3 times in a row; last: task failed to start: image not found
            11.500s  closed d-1 (Failed, production 0% on green)
            11.500s  task-set-retired ts-0-3 (web:2) with [t-0-4 STOPPED, t-0-5 STOPPED, t-0-6 STOPPED]
            11.500s  push-routes v4 app/web: blue=blue green=0% test=blue blue=[9001]
            --
            ts-0-1 web:1 PRIMARY desired=1 tg=blue
              t-0-2 RUNNING UNKNOWN
            group app/web primary=ts-0-1 active=- leftover=-
        "#]],
    );
}

#[test]
fn restarts_after_failures_back_off_from_half_a_second_doubling_up_to_15_seconds() {
    check(
        "
        0s fail-starts 7 no such file
        0s declare count=1
        50s start
        51s healthy blue
        ",
        expect![[r#"
            0s       start-task t-0-2 of ts-0-1 (web:1)
            0s       push-routes v1 app/web: blue=blue green=0% test=blue
            500ms    start-task t-0-3 of ts-0-1 (web:1)
            1.500s   start-task t-0-4 of ts-0-1 (web:1)
            3.500s   start-task t-0-5 of ts-0-1 (web:1)
            7.500s   start-task t-0-6 of ts-0-1 (web:1)
            15.500s  start-task t-0-7 of ts-0-1 (web:1)
            30.500s  start-task t-0-8 of ts-0-1 (web:1)
            45.500s  start-task t-0-9 of ts-0-1 (web:1)
            50s      push-routes v2 app/web: blue=blue green=0% test=blue blue=[9001]
            --
            ts-0-1 web:1 PRIMARY desired=1 tg=blue
              t-0-2 STOPPED UNKNOWN (task failed to start: no such file)
              t-0-3 STOPPED UNKNOWN (task failed to start: no such file)
              t-0-4 STOPPED UNKNOWN (task failed to start: no such file)
              t-0-5 STOPPED UNKNOWN (task failed to start: no such file)
              t-0-6 STOPPED UNKNOWN (task failed to start: no such file)
              t-0-7 STOPPED UNKNOWN (task failed to start: no such file)
              t-0-8 STOPPED UNKNOWN (task failed to start: no such file)
              t-0-9 RUNNING HEALTHY
            group app/web primary=ts-0-1 active=- leftover=-
        "#]],
    );
}

#[test]
fn a_deactivated_task_stops_when_the_data_plane_releases_it_or_at_its_deregistration_delay() {
    check(
        "
        0s declare count=3
        1s start
        2s applied
        10s declare count=1
        11s applied
        12s released
        13s stopped
        ",
        expect![[r#"
            0s       start-task t-0-2 of ts-0-1 (web:1)
            0s       start-task t-0-3 of ts-0-1 (web:1)
            0s       start-task t-0-4 of ts-0-1 (web:1)
            0s       push-routes v1 app/web: blue=blue green=0% test=blue
            1s       push-routes v2 app/web: blue=blue green=0% test=blue blue=[9001]
            1s       push-routes v3 app/web: blue=blue green=0% test=blue blue=[9001,9002]
            1s       push-routes v4 app/web: blue=blue green=0% test=blue blue=[9001,9002,9003]
            10s      push-routes v5 app/web: blue=blue green=0% test=blue blue=[9001]
            12s      stop-task t-0-3
            12s      stop-task t-0-4
            --
            ts-0-1 web:1 PRIMARY desired=1 tg=blue
              t-0-2 RUNNING UNKNOWN
              t-0-3 STOPPED UNKNOWN (service scaled in to 1 task(s))
              t-0-4 STOPPED UNKNOWN (service scaled in to 1 task(s))
            group app/web primary=ts-0-1 active=- leftover=-
        "#]],
    );
}

#[test]
fn a_deactivated_task_the_data_plane_still_lists_stops_after_its_deregistration_delay() {
    check(
        "
        0s declare count=2
        1s start
        2s applied
        2s healthy blue
        10s declare count=1
        11s applied
        12s healthy blue
        41s stopped
        ",
        expect![[r#"
            0s       start-task t-0-2 of ts-0-1 (web:1)
            0s       start-task t-0-3 of ts-0-1 (web:1)
            0s       push-routes v1 app/web: blue=blue green=0% test=blue
            1s       push-routes v2 app/web: blue=blue green=0% test=blue blue=[9001]
            1s       push-routes v3 app/web: blue=blue green=0% test=blue blue=[9001,9002]
            10s      push-routes v4 app/web: blue=blue green=0% test=blue blue=[9001]
            40s      stop-task t-0-3
            --
            ts-0-1 web:1 PRIMARY desired=1 tg=blue
              t-0-2 RUNNING HEALTHY
              t-0-3 STOPPED HEALTHY (service scaled in to 1 task(s))
            group app/web primary=ts-0-1 active=- leftover=-
        "#]],
    );
}

#[test]
fn an_alarm_in_alarm_stops_a_watching_deployment_once_and_not_again_after_a_restart() {
    check(
        "
        0s declare count=1
        1s start
        2s applied
        10s deploy d-1 termination-wait=10m
        11s start
        11s applied
        12s healthy green
        12s applied
        13s alarm errors 5xx above 10 for 1 datapoint
        14s restart
        15s alarm errors 5xx above 10 for 2 datapoints
        16s stopped
        ",
        expect![[r#"
            0s       start-task t-0-2 of ts-0-1 (web:1)
            0s       push-routes v1 app/web: blue=blue green=0% test=blue
            1s       push-routes v2 app/web: blue=blue green=0% test=blue blue=[9001]
            10s      d-1: status InProgress
            10s      d-1: event BeforeInstall Skipped
            10s      d-1: event Install InProgress
            10s      d-1: start-green
            10s      start-task t-0-4 of ts-0-3 (web:2)
            10s      push-routes v3 app/web: blue=blue green=0% test=blue blue=[9001]
            11s      push-routes v4 app/web: blue=blue green=0% test=blue blue=[9001] green=[9002]
            12s      d-1: event Install Succeeded
            12s      d-1: event AfterInstall Skipped
            12s      d-1: event AllowTestTraffic Skipped: no test listener
            12s      d-1: event AfterAllowTestTraffic Skipped: no test listener
            12s      d-1: event BeforeAllowTraffic Skipped
            12s      d-1: event AllowTraffic InProgress
            12s      d-1: route prod green=100% test=blue
            12s      push-routes v5 app/web: blue=blue green=100% test=blue blue=[9001] green=[9002]
            12s      d-1: event AllowTraffic Succeeded
            12s      d-1: event AfterAllowTraffic Skipped
            12s      d-1: status Baking
            13s      event d-1 alarm: alarm errors is in ALARM: 5xx above 10 for 1 datapoint
            13s      d-1: status Stopped
            13s      d-1: finished Stopped ALARM_ACTIVE: alarm errors: 5xx above 10 for 1 datapoint
            13s      push-routes v6 app/web: blue=blue green=100% test=blue blue=[9001] green=[9002]
            14s      -- restart --
            --
            ts-0-1 web:1 PRIMARY desired=1 tg=blue
              t-0-2 RUNNING UNKNOWN
            ts-0-3 web:2 ACTIVE desired=1 tg=green
              t-0-4 RUNNING HEALTHY
            group app/web primary=ts-0-1 active=- leftover=d-1
        "#]],
    );
}

#[test]
fn an_alarm_is_not_handed_over_before_the_deployment_watches_alarms_and_stops_it_once_it_does() {
    // Without a test listener, green serves nobody in the ready wait: the alarm waits for
    // AllowTraffic, and stops the deployment then (alarms are level-triggered).
    check(
        "
        0s declare count=1
        1s start
        2s applied
        10s deploy d-1 ready-wait=1h termination-wait=10m rollback=alarm
        11s start
        11s applied
        12s healthy green
        13s alarm errors 5xx above 10
        20s continue d-1 ready
        21s released
        22s stopped
        ",
        expect![[r#"
            0s       start-task t-0-2 of ts-0-1 (web:1)
            0s       push-routes v1 app/web: blue=blue green=0% test=blue
            1s       push-routes v2 app/web: blue=blue green=0% test=blue blue=[9001]
            10s      d-1: status InProgress
            10s      d-1: event BeforeInstall Skipped
            10s      d-1: event Install InProgress
            10s      d-1: start-green
            10s      start-task t-0-4 of ts-0-3 (web:2)
            10s      push-routes v3 app/web: blue=blue green=0% test=blue blue=[9001]
            11s      push-routes v4 app/web: blue=blue green=0% test=blue blue=[9001] green=[9002]
            12s      d-1: event Install Succeeded
            12s      d-1: event AfterInstall Skipped
            12s      d-1: event AllowTestTraffic Skipped: no test listener
            12s      d-1: event AfterAllowTestTraffic Skipped: no test listener
            12s      d-1: status Ready
            20s      d-1: status InProgress
            20s      d-1: event BeforeAllowTraffic Skipped
            20s      d-1: event AllowTraffic InProgress
            20s      d-1: route prod green=100% test=blue
            20s      event d-1 alarm: alarm errors is in ALARM: 5xx above 10
            20s      d-1: event AllowTraffic Failed: alarm errors: 5xx above 10
            20s      d-1: route prod green=0% test=blue
            20s      d-1: stop-green
            20s      d-1: status Stopped
            20s      d-1: finished Stopped rolled-back ALARM_ACTIVE: alarm errors: 5xx above 10
            20s      closed d-1 (Stopped, production 0% on green)
            20s      push-routes v5 app/web: blue=blue green=0% test=blue blue=[9001]
            21s      stop-task t-0-4
            22s      task-set-retired ts-0-3 (web:2) with [t-0-4 STOPPED]
            --
            ts-0-1 web:1 PRIMARY desired=1 tg=blue
              t-0-2 RUNNING UNKNOWN
            group app/web primary=ts-0-1 active=- leftover=-
        "#]],
    );
}

#[test]
fn a_leftover_deployment_keeps_routing_until_rolled_back_in_one_routing_change() {
    check(
        "
        0s declare count=1
        1s start
        2s applied
        10s deploy d-1 termination-wait=10m
        11s start
        11s applied
        12s healthy green
        12s applied
        20s stop d-1 no-rollback
        30s deploy d-2
        40s stop d-1 rollback
        41s released
        42s stopped
        50s deploy d-2
        ",
        expect![[r#"
            0s       start-task t-0-2 of ts-0-1 (web:1)
            0s       push-routes v1 app/web: blue=blue green=0% test=blue
            1s       push-routes v2 app/web: blue=blue green=0% test=blue blue=[9001]
            10s      d-1: status InProgress
            10s      d-1: event BeforeInstall Skipped
            10s      d-1: event Install InProgress
            10s      d-1: start-green
            10s      start-task t-0-4 of ts-0-3 (web:2)
            10s      push-routes v3 app/web: blue=blue green=0% test=blue blue=[9001]
            11s      push-routes v4 app/web: blue=blue green=0% test=blue blue=[9001] green=[9002]
            12s      d-1: event Install Succeeded
            12s      d-1: event AfterInstall Skipped
            12s      d-1: event AllowTestTraffic Skipped: no test listener
            12s      d-1: event AfterAllowTestTraffic Skipped: no test listener
            12s      d-1: event BeforeAllowTraffic Skipped
            12s      d-1: event AllowTraffic InProgress
            12s      d-1: route prod green=100% test=blue
            12s      push-routes v5 app/web: blue=blue green=100% test=blue blue=[9001] green=[9002]
            12s      d-1: event AllowTraffic Succeeded
            12s      d-1: event AfterAllowTraffic Skipped
            12s      d-1: status Baking
            20s      d-1: status Stopped
            20s      d-1: finished Stopped MANUAL_STOP: stopped by request
            20s      push-routes v6 app/web: blue=blue green=100% test=blue blue=[9001] green=[9002]
            30s      rejected: deployment d-1 of group app/web ended without rolling back and left its green tasks in place; roll it back first (`cutover deployments rollback d-1`)
            40s      event d-1 rollback: rolled back by request: production and test traffic on blue, green stopping
            40s      closed d-1 (Stopped, rolled back later, production 0% on green)
            40s      push-routes v7 app/web: blue=blue green=0% test=blue blue=[9001]
            41s      stop-task t-0-4
            42s      task-set-retired ts-0-3 (web:2) with [t-0-4 STOPPED]
            50s      d-2: status InProgress
            50s      d-2: event BeforeInstall Skipped
            50s      d-2: event Install InProgress
            50s      d-2: start-green
            50s      start-task t-0-6 of ts-0-5 (web:2)
            50s      push-routes v8 app/web: blue=blue green=0% test=blue blue=[9001]
            1h50s    d-2: event Install Failed: green tasks were not healthy after 1h (install timeout 1h)
            1h50s    d-2: status Failed
            1h50s    d-2: finished Failed CUSTOMER_APPLICATION_UNHEALTHY: green tasks were not healthy after 1h (install timeout 1h)
            1h50s    push-routes v9 app/web: blue=blue green=0% test=blue blue=[9001]
            --
            ts-0-1 web:1 PRIMARY desired=1 tg=blue
              t-0-2 RUNNING UNKNOWN
            ts-0-5 web:2 ACTIVE desired=1 tg=green
              t-0-6 PROVISIONING UNKNOWN
            group app/web primary=ts-0-1 active=- leftover=d-2
        "#]],
    );
}

#[test]
fn a_scale_in_deactivates_the_newest_tasks_first() {
    check(
        "
        0s declare count=1
        1s start
        2s declare count=3
        3s start
        4s applied
        10s declare count=2
        10s released
        11s stopped
        ",
        expect![[r#"
            0s       start-task t-0-2 of ts-0-1 (web:1)
            0s       push-routes v1 app/web: blue=blue green=0% test=blue
            1s       push-routes v2 app/web: blue=blue green=0% test=blue blue=[9001]
            2s       start-task t-0-3 of ts-0-1 (web:1)
            2s       start-task t-0-4 of ts-0-1 (web:1)
            3s       push-routes v3 app/web: blue=blue green=0% test=blue blue=[9001,9002]
            3s       push-routes v4 app/web: blue=blue green=0% test=blue blue=[9001,9002,9003]
            10s      push-routes v5 app/web: blue=blue green=0% test=blue blue=[9001,9002]
            10s      stop-task t-0-4
            --
            ts-0-1 web:1 PRIMARY desired=2 tg=blue
              t-0-2 RUNNING UNKNOWN
              t-0-3 RUNNING UNKNOWN
              t-0-4 STOPPED UNKNOWN (service scaled in to 2 task(s))
            group app/web primary=ts-0-1 active=- leftover=-
        "#]],
    );
}

#[test]
fn shutdown_stops_every_task_at_once_starts_none_and_reports_when_all_stopped() {
    check(
        "
        0s declare count=2
        1s start
        2s applied
        10s deploy d-1
        11s shutdown
        12s start
        13s stopped
        ",
        expect![[r#"
            0s       start-task t-0-2 of ts-0-1 (web:1)
            0s       start-task t-0-3 of ts-0-1 (web:1)
            0s       push-routes v1 app/web: blue=blue green=0% test=blue
            1s       push-routes v2 app/web: blue=blue green=0% test=blue blue=[9001]
            1s       push-routes v3 app/web: blue=blue green=0% test=blue blue=[9001,9002]
            10s      d-1: status InProgress
            10s      d-1: event BeforeInstall Skipped
            10s      d-1: event Install InProgress
            10s      d-1: start-green
            10s      start-task t-0-5 of ts-0-4 (web:2)
            10s      start-task t-0-6 of ts-0-4 (web:2)
            10s      push-routes v4 app/web: blue=blue green=0% test=blue blue=[9001,9002]
            11s      stop-task t-0-2
            11s      stop-task t-0-3
            11s      push-routes v5 app/web: blue=blue green=0% test=blue
            12s      stop-task t-0-5
            12s      stop-task t-0-6
            13s      task-set-retired ts-0-1 (web:1) with [t-0-2 STOPPED, t-0-3 STOPPED]
            13s      task-set-retired ts-0-4 (web:2) with [t-0-5 STOPPED, t-0-6 STOPPED]
            13s      shut-down
            1h10s    d-1: event Install Failed: green tasks were not healthy after 1h (install timeout 1h)
            1h10s    d-1: status Failed
            1h10s    d-1: finished Failed CUSTOMER_APPLICATION_UNHEALTHY: green tasks were not healthy after 1h (install timeout 1h)
            1h10s    push-routes v6 app/web: blue=blue green=0% test=blue
            --
            group app/web primary=ts-0-1 active=- leftover=d-1
        "#]],
    );
}

/// `cutover down` persists the state it ends in; the next `cutover up` is a new start: its
/// services run again and its own `down` ends.
#[test]
fn after_a_shutdown_the_next_start_runs_the_services_again_and_shuts_down_again() {
    check(
        "
        0s declare count=1
        1s start
        2s shutdown
        3s stopped
        10s resume
        10s declare count=1
        11s start
        12s shutdown
        13s stopped
        ",
        expect![[r#"
            0s       start-task t-0-2 of ts-0-1 (web:1)
            0s       push-routes v1 app/web: blue=blue green=0% test=blue
            1s       push-routes v2 app/web: blue=blue green=0% test=blue blue=[9001]
            2s       stop-task t-0-2
            2s       push-routes v3 app/web: blue=blue green=0% test=blue
            3s       task-set-retired ts-0-1 (web:1) with [t-0-2 STOPPED]
            3s       shut-down
            10s      -- restart --
            10s      push-routes v4 app/web: blue=blue green=0% test=blue
            10s      start-task t-0-4 of ts-0-3 (web:1)
            11s      push-routes v5 app/web: blue=blue green=0% test=blue blue=[9002]
            12s      stop-task t-0-4
            12s      push-routes v6 app/web: blue=blue green=0% test=blue
            13s      task-set-retired ts-0-3 (web:1) with [t-0-4 STOPPED]
            13s      shut-down
            --
            group app/web primary=ts-0-3 active=- leftover=-
        "#]],
    );
}

#[test]
fn a_container_failing_its_health_check_is_replaced() {
    check(
        "
        0s declare count=1 checked
        1s start
        2s applied
        3s running unhealthy-container
        4s stopped
        ",
        expect![[r#"
            0s       start-task t-0-2 of ts-0-1 (web:1)
            0s       push-routes v1 app/web: blue=blue green=0% test=blue
            1s       push-routes v2 app/web: blue=blue green=0% test=blue blue=[9001]
            3s       stop-task t-0-2
            3s       push-routes v3 app/web: blue=blue green=0% test=blue
            3.500s   start-task t-0-3 of ts-0-1 (web:1)
            --
            ts-0-1 web:1 PRIMARY desired=1 tg=blue failures=1
              t-0-2 STOPPED UNKNOWN (task failed its container health check)
              t-0-3 PROVISIONING UNKNOWN
            group app/web primary=ts-0-1 active=- leftover=-
        "#]],
    );
}

#[test]
fn a_push_the_data_plane_refused_is_retried() {
    check(
        "
        0s declare count=1
        0s push-failed
        1s start
        1s push-failed
        ",
        expect![[r#"
            0s       start-task t-0-2 of ts-0-1 (web:1)
            0s       push-routes v1 app/web: blue=blue green=0% test=blue
            500ms    push-routes v2 app/web: blue=blue green=0% test=blue
            1s       push-routes v3 app/web: blue=blue green=0% test=blue blue=[9001]
            1.500s   push-routes v4 app/web: blue=blue green=0% test=blue blue=[9001]
            --
            ts-0-1 web:1 PRIMARY desired=1 tg=blue
              t-0-2 RUNNING UNKNOWN
            group app/web primary=ts-0-1 active=- leftover=-
        "#]],
    );
}

#[test]
fn commands_that_cannot_be_taken_are_rejected_and_change_nothing() {
    check(
        "
        0s declare count=1
        1s start
        2s deploy d-1 termination-wait=1h
        3s deploy d-2
        4s continue d-1 ready
        5s stop d-9
        ",
        expect![[r#"
            0s       start-task t-0-2 of ts-0-1 (web:1)
            0s       push-routes v1 app/web: blue=blue green=0% test=blue
            1s       push-routes v2 app/web: blue=blue green=0% test=blue blue=[9001]
            2s       d-1: status InProgress
            2s       d-1: event BeforeInstall Skipped
            2s       d-1: event Install InProgress
            2s       d-1: start-green
            2s       start-task t-0-4 of ts-0-3 (web:2)
            2s       push-routes v3 app/web: blue=blue green=0% test=blue blue=[9001]
            3s       rejected: deployment group app/web already has an active deployment d-1; one deployment runs per group at a time (as on CodeDeploy): wait for it (`cutover deployments watch d-1`) or stop it (`cutover deployments stop d-1`)
            4s       rejected: deployment d-1: the deployment is not in its ready wait; continue it only while its status is Ready (deployment groups with actionOnTimeout STOP_DEPLOYMENT)
            5s       rejected: no deployment d-9; `cutover deployments list` shows them
            1h2s     d-1: event Install Failed: green tasks were not healthy after 1h (install timeout 1h)
            1h2s     d-1: status Failed
            1h2s     d-1: finished Failed CUSTOMER_APPLICATION_UNHEALTHY: green tasks were not healthy after 1h (install timeout 1h)
            1h2s     push-routes v4 app/web: blue=blue green=0% test=blue blue=[9001]
            --
            ts-0-1 web:1 PRIMARY desired=1 tg=blue
              t-0-2 RUNNING UNKNOWN
            ts-0-3 web:2 ACTIVE desired=1 tg=green
              t-0-4 PROVISIONING UNKNOWN
            group app/web primary=ts-0-1 active=- leftover=d-1
        "#]],
    );
}

#[test]
fn the_persisted_state_round_trips_and_names_statuses_as_ecs_does() {
    let mut r = Reconciler::new(7, 0, Timestamp::ZERO);
    r.observe(Observation::Command(Command::Declare(declared("count=1"))), Timestamp::ZERO)
        .unwrap();
    let json = serde_json::to_value(&r).unwrap();
    let task = json["tasks"].as_object().unwrap().values().next().unwrap();
    assert_eq!(task["last_status"], "PROVISIONING");
    assert_eq!(task["desired_status"], "RUNNING");
    assert_eq!(
        json["task_sets"].as_object().unwrap().values().next().unwrap()["status"],
        "PRIMARY"
    );
    assert_eq!(json["version"], STATE_VERSION);
    let back: Reconciler = serde_json::from_value(json).unwrap();
    assert_eq!(back, r);
}

#[test]
fn a_deployment_restored_from_an_older_cutovers_rows_carries_on_where_it_was() {
    check(
        "
        0s declare
        1s start
        2s applied
        3s healthy blue
        10s deploy d-1
        11s start
        11s applied
        11s restart-from-rows
        12s healthy green
        13s applied
        14s released
        15s stopped
        ",
        expect![[r#"
            0s       start-task t-0-2 of ts-0-1 (web:1)
            0s       start-task t-0-3 of ts-0-1 (web:1)
            0s       push-routes v1 app/web: blue=blue green=0% test=blue
            1s       push-routes v2 app/web: blue=blue green=0% test=blue blue=[9001]
            1s       push-routes v3 app/web: blue=blue green=0% test=blue blue=[9001,9002]
            10s      d-1: status InProgress
            10s      d-1: event BeforeInstall Skipped
            10s      d-1: event Install InProgress
            10s      d-1: start-green
            10s      start-task t-0-5 of ts-0-4 (web:2)
            10s      start-task t-0-6 of ts-0-4 (web:2)
            10s      push-routes v4 app/web: blue=blue green=0% test=blue blue=[9001,9002]
            11s      push-routes v5 app/web: blue=blue green=0% test=blue blue=[9001,9002] green=[9003]
            11s      push-routes v6 app/web: blue=blue green=0% test=blue blue=[9001,9002] green=[9003,9004]
            11s      -- restart from rows --
            12s      d-1: event Install Succeeded
            12s      d-1: event AfterInstall Skipped
            12s      d-1: event AllowTestTraffic Skipped: no test listener
            12s      d-1: event AfterAllowTestTraffic Skipped: no test listener
            12s      d-1: event BeforeAllowTraffic Skipped
            12s      d-1: event AllowTraffic InProgress
            12s      d-1: route prod green=100% test=blue
            12s      push-routes v7 app/web: blue=blue green=100% test=blue blue=[9001,9002] green=[9003,9004]
            13s      d-1: event AllowTraffic Succeeded
            13s      d-1: event AfterAllowTraffic Skipped
            13s      d-1: event End InProgress
            13s      d-1: terminate-blue
            13s      d-1: event End Succeeded
            13s      d-1: status Succeeded
            13s      d-1: finished Succeeded
            13s      closed d-1 (Succeeded, production 100% on green)
            13s      push-routes v8 app/web: blue=green green=0% test=blue green=[9003,9004]
            14s      stop-task t-0-2
            14s      stop-task t-0-3
            15s      task-set-retired ts-0-1 (web:1) with [t-0-2 STOPPED, t-0-3 STOPPED]
            --
            ts-0-4 web:2 PRIMARY desired=2 tg=green
              t-0-5 RUNNING UNKNOWN
              t-0-6 RUNNING UNKNOWN
            group app/web primary=ts-0-4 active=- leftover=-
        "#]],
    );
}

#[test]
fn after_a_restart_a_hook_in_flight_runs_again_with_a_new_execution_and_routing_is_pushed_again() {
    check(
        "
        0s declare
        1s start
        2s applied
        3s healthy blue
        10s deploy d-1 hook=AfterInstall
        11s start
        11s applied
        12s healthy green
        13s resume
        14s hook-ok d-1 AfterInstall-1
        15s hook-ok d-1 AfterInstall-2
        16s applied
        17s released
        18s stopped
        ",
        expect![[r#"
            0s       start-task t-0-2 of ts-0-1 (web:1)
            0s       start-task t-0-3 of ts-0-1 (web:1)
            0s       push-routes v1 app/web: blue=blue green=0% test=blue
            1s       push-routes v2 app/web: blue=blue green=0% test=blue blue=[9001]
            1s       push-routes v3 app/web: blue=blue green=0% test=blue blue=[9001,9002]
            10s      d-1: status InProgress
            10s      d-1: event BeforeInstall Skipped
            10s      d-1: event Install InProgress
            10s      d-1: start-green
            10s      start-task t-0-5 of ts-0-4 (web:2)
            10s      start-task t-0-6 of ts-0-4 (web:2)
            10s      push-routes v4 app/web: blue=blue green=0% test=blue blue=[9001,9002]
            11s      push-routes v5 app/web: blue=blue green=0% test=blue blue=[9001,9002] green=[9003]
            11s      push-routes v6 app/web: blue=blue green=0% test=blue blue=[9001,9002] green=[9003,9004]
            12s      d-1: event Install Succeeded
            12s      d-1: event AfterInstall InProgress
            12s      run-hook d-1 AfterInstall-hook (exec AfterInstall-1)
            12s      d-1: run-hook AfterInstall AfterInstall-hook (exec AfterInstall-1)
            13s      -- restart --
            13s      d-1: route prod green=0% test=blue
            13s      d-1: start-green
            13s      cancel-hook d-1 AfterInstall-1
            13s      d-1: cancel-hook AfterInstall-1
            13s      run-hook d-1 AfterInstall-hook (exec AfterInstall-2)
            13s      d-1: run-hook AfterInstall AfterInstall-hook (exec AfterInstall-2)
            13s      d-1: event AfterInstall InProgress: execution AfterInstall-1 replaced by AfterInstall-2 after a restart
            13s      push-routes v7 app/web: blue=blue green=0% test=blue blue=[9001,9002] green=[9003,9004]
            14s      rejected: deployment d-1: no hook execution `AfterInstall-1` is waiting for a result: it already reported, timed out, was cancelled, or was replaced after a control-plane restart; report for the execution id of the latest run-hook
            15s      d-1: event AfterInstall Succeeded: execution AfterInstall-1 replaced by AfterInstall-2 after a restart
            15s      d-1: event AllowTestTraffic Skipped: no test listener
            15s      d-1: event AfterAllowTestTraffic Skipped: no test listener
            15s      d-1: event BeforeAllowTraffic Skipped
            15s      d-1: event AllowTraffic InProgress
            15s      d-1: route prod green=100% test=blue
            15s      push-routes v8 app/web: blue=blue green=100% test=blue blue=[9001,9002] green=[9003,9004]
            16s      d-1: event AllowTraffic Succeeded
            16s      d-1: event AfterAllowTraffic Skipped
            16s      d-1: event End InProgress
            16s      d-1: terminate-blue
            16s      d-1: event End Succeeded
            16s      d-1: status Succeeded
            16s      d-1: finished Succeeded
            16s      closed d-1 (Succeeded, production 100% on green)
            16s      push-routes v9 app/web: blue=green green=0% test=blue green=[9003,9004]
            17s      stop-task t-0-2
            17s      stop-task t-0-3
            18s      task-set-retired ts-0-1 (web:1) with [t-0-2 STOPPED, t-0-3 STOPPED]
            --
            ts-0-4 web:2 PRIMARY desired=2 tg=green
              t-0-5 RUNNING UNKNOWN
              t-0-6 RUNNING UNKNOWN
            group app/web primary=ts-0-4 active=- leftover=-
        "#]],
    );
}

/// Found by the simulation (seed 103 of `crates/simulation`): green's last tasks died and their
/// removal was being pushed, so the health report was not about the latest table; the
/// deployment was not told that green had lost every target, and the continue moved production
/// onto a green with no task. Green losing its last healthy task is known without the data
/// plane's report: the deployment fails at once.
#[test]
fn green_losing_its_last_task_fails_the_deployment_before_production_moves_onto_it() {
    check(
        "
        0s declare
        1s start
        2s applied
        3s healthy blue
        10s deploy d-1 ready-wait=10m
        11s start
        11s applied
        12s healthy green
        20s exit t-0-5 137 killed
        20s exit t-0-6 137 killed
        21s continue d-1 ready
        ",
        expect![[r#"
            0s       start-task t-0-2 of ts-0-1 (web:1)
            0s       start-task t-0-3 of ts-0-1 (web:1)
            0s       push-routes v1 app/web: blue=blue green=0% test=blue
            1s       push-routes v2 app/web: blue=blue green=0% test=blue blue=[9001]
            1s       push-routes v3 app/web: blue=blue green=0% test=blue blue=[9001,9002]
            10s      d-1: status InProgress
            10s      d-1: event BeforeInstall Skipped
            10s      d-1: event Install InProgress
            10s      d-1: start-green
            10s      start-task t-0-5 of ts-0-4 (web:2)
            10s      start-task t-0-6 of ts-0-4 (web:2)
            10s      push-routes v4 app/web: blue=blue green=0% test=blue blue=[9001,9002]
            11s      push-routes v5 app/web: blue=blue green=0% test=blue blue=[9001,9002] green=[9003]
            11s      push-routes v6 app/web: blue=blue green=0% test=blue blue=[9001,9002] green=[9003,9004]
            12s      d-1: event Install Succeeded
            12s      d-1: event AfterInstall Skipped
            12s      d-1: event AllowTestTraffic Skipped: no test listener
            12s      d-1: event AfterAllowTestTraffic Skipped: no test listener
            12s      d-1: status Ready
            20s      remove-task t-0-5
            20s      start-task t-0-7 of ts-0-4 (web:2)
            20s      push-routes v7 app/web: blue=blue green=0% test=blue blue=[9001,9002] green=[9004]
            20s      remove-task t-0-6
            20s      d-1: status Failed
            20s      d-1: finished Failed CUSTOMER_APPLICATION_UNHEALTHY: green is unhealthy: green target group green has no healthy targets
            20s      push-routes v8 app/web: blue=blue green=0% test=blue blue=[9001,9002]
            20.500s  start-task t-0-8 of ts-0-4 (web:2)
            21s      rejected: deployment d-1 has already completed
            --
            ts-0-1 web:1 PRIMARY desired=2 tg=blue
              t-0-2 RUNNING UNKNOWN
              t-0-3 RUNNING UNKNOWN
            ts-0-4 web:2 ACTIVE desired=2 tg=green failures=1
              t-0-5 STOPPED UNKNOWN (killed (exit code 137))
              t-0-6 STOPPED UNKNOWN (killed (exit code 137))
              t-0-7 PROVISIONING UNKNOWN
              t-0-8 PROVISIONING UNKNOWN
            group app/web primary=ts-0-1 active=- leftover=d-1
        "#]],
    );
}

/// Found by the simulation (seeds 105583 and 104893 of `crates/simulation`): a scale-in that
/// arrived in the pass where green became healthy enough for the new count was applied after the
/// deployment was told, so Install succeeded and production moved onto green, and then the
/// scale-in took out green's only healthy task (the newest). Scale-ins now come first, and green
/// is judged on the tasks that stay.
#[test]
fn a_scale_in_is_applied_before_green_is_judged_so_production_never_moves_onto_a_task_it_removes() {
    check(
        "
        0s declare
        1s start
        2s applied
        3s healthy blue
        10s deploy d-1
        11s start
        11s applied
        12s exit t-0-5 137 killed
        13s start
        13s applied
        14s healthy green 9005
        15s declare count=1
        16s applied
        17s healthy green
        17s applied
        ",
        expect![[r#"
            0s       start-task t-0-2 of ts-0-1 (web:1)
            0s       start-task t-0-3 of ts-0-1 (web:1)
            0s       push-routes v1 app/web: blue=blue green=0% test=blue
            1s       push-routes v2 app/web: blue=blue green=0% test=blue blue=[9001]
            1s       push-routes v3 app/web: blue=blue green=0% test=blue blue=[9001,9002]
            10s      d-1: status InProgress
            10s      d-1: event BeforeInstall Skipped
            10s      d-1: event Install InProgress
            10s      d-1: start-green
            10s      start-task t-0-5 of ts-0-4 (web:2)
            10s      start-task t-0-6 of ts-0-4 (web:2)
            10s      push-routes v4 app/web: blue=blue green=0% test=blue blue=[9001,9002]
            11s      push-routes v5 app/web: blue=blue green=0% test=blue blue=[9001,9002] green=[9003]
            11s      push-routes v6 app/web: blue=blue green=0% test=blue blue=[9001,9002] green=[9003,9004]
            12s      remove-task t-0-5
            12s      push-routes v7 app/web: blue=blue green=0% test=blue blue=[9001,9002] green=[9004]
            12.500s  start-task t-0-7 of ts-0-4 (web:2)
            13s      push-routes v8 app/web: blue=blue green=0% test=blue blue=[9001,9002] green=[9004,9005]
            15s      push-routes v9 app/web: blue=blue green=0% test=blue blue=[9001] green=[9004]
            17s      stop-task t-0-3
            17s      d-1: event Install Succeeded
            17s      d-1: event AfterInstall Skipped
            17s      d-1: event AllowTestTraffic Skipped: no test listener
            17s      d-1: event AfterAllowTestTraffic Skipped: no test listener
            17s      d-1: event BeforeAllowTraffic Skipped
            17s      d-1: event AllowTraffic InProgress
            17s      d-1: route prod green=100% test=blue
            17s      push-routes v10 app/web: blue=blue green=100% test=blue blue=[9001] green=[9004]
            17s      d-1: event AllowTraffic Succeeded
            17s      d-1: event AfterAllowTraffic Skipped
            17s      d-1: event End InProgress
            17s      d-1: terminate-blue
            17s      d-1: event End Succeeded
            17s      d-1: status Succeeded
            17s      d-1: finished Succeeded
            17s      closed d-1 (Succeeded, production 100% on green)
            17s      push-routes v11 app/web: blue=green green=0% test=blue green=[9004]
            45s      stop-task t-0-7
            47s      stop-task t-0-2
            --
            ts-0-1 web:1 DRAINING desired=0 tg=blue
              t-0-2 STOPPING UNKNOWN (deployment d-1 replaced blue with green)
              t-0-3 STOPPING UNKNOWN (service scaled in to 1 task(s))
            ts-0-4 web:2 PRIMARY desired=1 tg=green
              t-0-5 STOPPED UNKNOWN (killed (exit code 137))
              t-0-6 RUNNING HEALTHY
              t-0-7 STOPPING HEALTHY (service scaled in to 1 task(s))
            group app/web primary=ts-0-4 active=- leftover=-
        "#]],
    );
}

#[test]
fn a_state_that_only_saw_time_pass_is_not_worth_writing_and_a_routes_change_pushes_a_new_version() {
    let at = Timestamp::from_millis;
    let mut r = Reconciler::new(1, 0, at(1_000));
    let first = r.observe(Observation::Tick, at(1_000)).unwrap();
    assert!(matches!(first.as_slice(), [Effect::PushRoutes { version: 1, .. }]), "{first:?}");
    r.observe(Observation::RoutesApplied { version: 1 }, at(1_100)).unwrap();

    let before = r.clone();
    assert_eq!(r.observe(Observation::Tick, at(9_000)).unwrap(), []);
    assert!(!r.differs_from(&before), "only the time seen changed");

    let pushed = r.observe(Observation::RoutesChanged, at(9_500)).unwrap();
    assert!(matches!(pushed.as_slice(), [Effect::PushRoutes { version: 2, .. }]), "{pushed:?}");
    assert!(r.differs_from(&before));
}
