//! What the control plane's shell and the world do with effects, polls, faults and commands;
//! crashes and recovery; and the invariants.

use std::time::Duration;

use model::TaskStatus;
use reconciler::{AlarmReading, Command, Effect, Observation, TaskProbe};

use crate::Violation;
use crate::client::{self, Quality};
use crate::sim::{Event, Sim, Tracked};
use crate::world::RuntimeTask;

/// How a task started in the runtime will behave.
struct Fate {
    fails_to_start: bool,
    exits_after: Option<Duration>,
    container_unhealthy: bool,
    lb_unhealthy_after: Option<Duration>,
}

impl Sim {
    /// Sends a report back to the control plane after a random latency.
    fn reply(&mut self, observation: Observation) {
        let latency = self.rng.millis(0, 200);
        self.schedule(latency, Event::Deliver { observation, in_process: true });
    }

    /// The shell performs an effect; `reply: false` when the process died right after.
    pub(crate) fn perform(&mut self, effect: Effect, reply: bool) {
        let observation = match effect {
            Effect::StartTask(launch) => {
                self.start_task(&launch.task_id, &launch.task_set_id, &launch.task_definition)
            }
            Effect::StopTask { task_id } => {
                if let Some(n) = self.stops_in_flight.get_mut(&task_id) {
                    *n -= 1;
                    if *n == 0 {
                        self.stops_in_flight.remove(&task_id);
                    }
                }
                self.runtime.tasks.remove(&task_id);
                Some(Observation::TaskStopped { task_id })
            }
            Effect::RemoveTask { task_id } => {
                self.runtime.tasks.remove(&task_id);
                None
            }
            Effect::RunHook { deployment_id, execution_id, timeout, .. } => {
                self.run_hook(deployment_id, execution_id, timeout, reply);
                None
            }
            Effect::PushRoutes { version, view } => Some(self.push(version, view)),
            _ => None,
        };
        if let Some(observation) = observation.filter(|_| reply) {
            self.reply(observation);
        }
    }

    fn fate(&mut self, task_definition: &str) -> Fate {
        let quality = self.qualities.get(task_definition).copied().unwrap_or(Quality::Good);
        if quality == Quality::Broken {
            let mut fate = Fate {
                fails_to_start: false,
                exits_after: None,
                container_unhealthy: false,
                lb_unhealthy_after: None,
            };
            match self.rng.below(3) {
                0 => fate.fails_to_start = true,
                1 => fate.exits_after = Some(self.rng.millis(0, 400)),
                _ => fate.lb_unhealthy_after = Some(Duration::ZERO),
            }
            return fate;
        }
        let scale = if quality == Quality::Flaky { 10 } else { 1 };
        let on = self.faults_on;
        let mut chance = |per_mille: u32| on && self.rng.chance(per_mille.saturating_mul(scale));
        let (fails, dies, container, lb) = (
            chance(self.config.start_fails),
            chance(self.config.task_dies),
            chance(self.config.container_unhealthy),
            chance(self.config.lb_unhealthy),
        );
        Fate {
            fails_to_start: fails,
            exits_after: dies.then(|| self.rng.millis(0, 120_000)),
            container_unhealthy: container,
            lb_unhealthy_after: lb.then(|| self.rng.millis(0, 120_000)),
        }
    }

    fn start_task(
        &mut self,
        task_id: &str,
        task_set_id: &str,
        task_definition: &str,
    ) -> Option<Observation> {
        let fate = self.fate(task_definition);
        if fate.fails_to_start {
            let reason = "CannotPullContainerError: image not found".to_string();
            return Some(Observation::TaskFailedToStart { task_id: task_id.to_string(), reason });
        }
        let addr = self.runtime.free_addr();
        let check_from = self.now.saturating_add(self.rng.millis(0, 3_000));
        let task = RuntimeTask {
            task_set_id: task_set_id.to_string(),
            addr,
            check_from,
            container_unhealthy: fate.container_unhealthy,
            lb_unhealthy: fate.lb_unhealthy_after == Some(Duration::ZERO),
            exited: None,
        };
        self.runtime.tasks.insert(task_id.to_string(), task);
        if let Some(after) = fate.exits_after {
            self.schedule(after, Event::TaskExits(task_id.to_string()));
        }
        if let Some(after) = fate.lb_unhealthy_after.filter(|a| !a.is_zero()) {
            self.schedule(after, Event::TaskTurnsUnhealthy(task_id.to_string()));
        }
        Some(Observation::TaskStarted {
            task_id: task_id.to_string(),
            handle: format!("proc-{task_id}"),
            addr: Some(addr),
        })
    }

    pub(crate) fn task_exits(&mut self, task_id: &str) {
        if let Some(task) = self.runtime.tasks.get_mut(task_id).filter(|t| t.is_alive()) {
            task.exited = Some((Some(137), "killed by the simulation".into()));
        }
    }

    /// A hook succeeds, fails or hangs; a process hook reports through the control plane, an
    /// HTTP hook from outside. Some report after their timeout.
    /// `alive`: the control plane lives on (a process hook started just before a crash dies
    /// with it).
    fn run_hook(
        &mut self,
        deployment_id: String,
        execution_id: String,
        timeout: Duration,
        alive: bool,
    ) {
        let external = self.rng.chance(500);
        let (hangs, fails) = if self.faults_on {
            (self.rng.chance(self.config.hook_hangs), self.rng.chance(self.config.hook_fails))
        } else {
            (false, false)
        };
        if hangs || !(external || alive) {
            return;
        }
        // Most hooks report well within their timeout; while faults are on, some report late
        // (their result is then rejected).
        let timeout_ms = timeout.as_millis() as u64;
        let longest = if self.faults_on && self.rng.chance(50) {
            timeout_ms * 6 / 5
        } else {
            (timeout_ms / 2).min(5_000)
        };
        let after = self.rng.millis(0, longest);
        let observation = Observation::HookResult {
            deployment_id,
            execution_id: execution_id.clone(),
            succeeded: !fails,
            message: if fails { "smoke test failed".into() } else { String::new() },
        };
        let key = self.schedule(after, Event::Deliver { observation, in_process: !external });
        if !external {
            self.hook_results.insert(execution_id, key);
        }
    }

    fn push(&mut self, version: u64, view: reconciler::RoutingView) -> Observation {
        let error = |error: &str| Observation::RoutesFailed { version, error: error.into() };
        if self.faults_on && self.rng.chance(self.config.push_unreachable) {
            return error("connection refused");
        }
        let drain_for = self.rng.millis(0, 2_000);
        if !self.lb.apply(version, view, self.now, drain_for) {
            return error("older than the served version");
        }
        self.trace.record(format!("{} load balancer serves version {version}", self.clock()));
        if self.faults_on && self.rng.chance(self.config.push_ack_lost) {
            return error("timed out after 5s");
        }
        Observation::RoutesApplied { version }
    }

    /// A poller's round: its result travels back to the loop; a failed round reports nothing.
    pub(crate) fn poll(&mut self, poll: Event) {
        let lost = self.faults_on && self.rng.chance(self.config.poll_lost);
        let period = match poll {
            Event::PollAlarms => Duration::from_secs(5),
            _ => self.rng.millis(800, 1_200),
        };
        let observations = match (&poll, lost) {
            (_, true) => Vec::new(),
            (Event::PollHealth, _) => vec![Observation::TargetHealth(self.lb.report())],
            (Event::PollAlarms, _) => vec![Observation::Alarms(self.alarm_readings())],
            _ => self.inspections(),
        };
        for observation in observations {
            self.reply(observation);
        }
        self.schedule(period, poll);
    }

    /// What the runtime says about every task the reconciler thinks RUNNING.
    fn inspections(&self) -> Vec<Observation> {
        let running = self.reconciler.tasks().filter(|t| t.last_status == TaskStatus::Running);
        running
            .map(|t| {
                let state = match self.runtime.tasks.get(&t.id) {
                    None => TaskProbe::Gone,
                    Some(RuntimeTask { exited: Some((code, reason)), .. }) => {
                        TaskProbe::Exited { code: *code, reason: reason.clone() }
                    }
                    Some(task) => TaskProbe::Running { container: task.container(self.now) },
                };
                Observation::TaskInspected { task_id: t.id.clone(), state }
            })
            .collect()
    }

    fn alarm_readings(&self) -> Vec<AlarmReading> {
        let reading = |(key, in_alarm): (&String, &bool)| AlarmReading {
            key: key.clone(),
            in_alarm: *in_alarm,
            reason: if *in_alarm { "5 of 5 datapoints above 10".into() } else { String::new() },
        };
        self.alarms.iter().map(reading).collect()
    }

    pub(crate) fn flip_alarm(&mut self) {
        let name = client::ALARMS[self.rng.below(client::ALARMS.len() as u64) as usize];
        let state = self.alarms.entry(name.to_string()).or_default();
        *state = !*state;
        // Alarms are rare and short: most deployments should get through.
        let after =
            if *state { self.rng.millis(5_000, 60_000) } else { self.rng.millis(60_000, 600_000) };
        self.schedule(after, Event::AlarmFlips);
    }

    /// The operator does something; while the control plane is down, the API refuses it.
    pub(crate) fn client(&mut self) -> Result<(), Violation> {
        let after = self.rng.millis(1_000, 20_000);
        self.schedule(after, Event::Client);
        if self.down {
            return Ok(());
        }
        let known: Vec<String> = self.reconciler.deployments().map(|d| d.id.clone()).collect();
        let command = match self.rng.below(10) {
            0..=3 => return self.create_deployment(),
            4 if !known.is_empty() => {
                let id = self.rng.pick(&known).clone();
                client::stop(&mut self.rng, &id)
            }
            5..=7 if !known.is_empty() => {
                let id = self.rng.pick(&known).clone();
                client::continue_(&mut self.rng, &id)
            }
            _ => {
                let service = *self.rng.pick(&client::SERVICES);
                let count = self.rng.between(0, 4) as u32;
                self.counts.insert(service.to_string(), count);
                Command::Declare(client::declared(&self.counts, &self.delays))
            }
        };
        self.deliver(Observation::Command(command))
    }

    fn create_deployment(&mut self) -> Result<(), Violation> {
        self.next_deployment += 1;
        let id = format!("d-{}", self.next_deployment);
        let revision = self.next_deployment + 1;
        let new = client::new_deployment(&mut self.rng, &id, revision);
        let quality = match self.rng.below(10) {
            0..=6 => Quality::Good,
            7..=8 => Quality::Flaky,
            _ => Quality::Broken,
        };
        self.qualities.insert(new.task_definition.clone(), quality);
        let tracked = Tracked {
            group: new.group.clone(),
            bound: client::bound(&new.spec, crate::sim::BOUND_SLACK),
        };
        self.deliver(Observation::Command(Command::CreateDeployment(Box::new(new))))?;
        // Accepted: it starts in `BeforeInstall`, so it is still there after this step.
        if self.reconciler.deployment(&id).is_some() {
            self.summary.deployments += 1;
            self.deployments.insert(id, tracked);
        }
        Ok(())
    }
}
