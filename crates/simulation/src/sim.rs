//! The simulation's loop: one event per step, then every invariant.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use model::{DeploymentStatus, TaskSetStatus, TaskStatus, Timestamp};
use reconciler::{Command, Effect, GroupRoute, Observation, Reconciler};

use crate::client::{self, Quality};
use crate::rng::Rng;
use crate::trace::Trace;
use crate::world::{LoadBalancer, Runtime};
use crate::{Config, Summary, Violation};

/// When every run starts (any time would do; this one reads as 2023).
const START: Timestamp = Timestamp(1_700_000_000_000);

/// Time the world gets after the random phase even when nothing is left to finish.
const QUIET_MIN: Duration = Duration::from_secs(120);
/// Ticks at one instant before the reconciler is deemed to spin.
const TICKS_AT_ONCE_MAX: usize = 2;
/// The longest a crashed control plane stays down.
pub(crate) const RESTART_MAX: Duration = Duration::from_secs(30);
/// `cutover down` stops everything at once; its stops take well under this.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(60);
/// Added to a deployment's bound: pushes, health checks, restart backoff between its steps.
/// The load balancer checks every target this often.
const HEALTH_CHECK_EVERY: Duration = Duration::from_millis(500);
pub(crate) const BOUND_SLACK: Duration = Duration::from_secs(120);

/// Something that happens at a time.
#[derive(Clone, Debug)]
pub(crate) enum Event {
    /// An observation for the control plane. `in_process`: made inside it (an effect's report, a
    /// poll's result), and lost if it crashes first.
    Deliver {
        observation: Observation,
        in_process: bool,
    },
    /// The shell performs an effect, in a task of its own.
    Perform(Effect),
    PollHealth,
    PollTasks,
    PollAlarms,
    TaskExits(String),
    TaskTurnsUnhealthy(String),
    AlarmFlips,
    Client,
    Restart,
}

impl Event {
    /// Whether it happens inside the control plane's process (and dies with it).
    pub(crate) fn in_process(&self) -> bool {
        match self {
            Event::Deliver { in_process, .. } => *in_process,
            Event::Perform(_) | Event::PollHealth | Event::PollTasks | Event::PollAlarms => true,
            _ => false,
        }
    }
}

/// A deployment the reconciler accepted.
#[derive(Clone, Debug)]
pub(crate) struct Tracked {
    pub(crate) group: String,
    pub(crate) bound: Duration,
}

pub(crate) struct Sim {
    pub(crate) seed: u64,
    pub(crate) config: Config,
    pub(crate) rng: Rng,
    /// The world's time.
    pub(crate) now: Timestamp,
    /// The control plane's clock minus the world's, in milliseconds.
    pub(crate) clock_offset_ms: i64,
    pub(crate) queue: BTreeMap<(Timestamp, u64), Event>,
    pub(crate) seq: u64,
    pub(crate) reconciler: Reconciler,
    /// What the shell last wrote, and the control plane's time then.
    pub(crate) persisted: Reconciler,
    pub(crate) persisted_at: Timestamp,
    pub(crate) down: bool,
    pub(crate) paused_until: Option<Timestamp>,
    pub(crate) faults_on: bool,
    pub(crate) runtime: Runtime,
    pub(crate) lb: LoadBalancer,
    pub(crate) alarms: BTreeMap<String, bool>,
    pub(crate) qualities: BTreeMap<String, Quality>,
    pub(crate) counts: BTreeMap<String, u32>,
    pub(crate) delays: BTreeMap<String, Duration>,
    pub(crate) deployments: BTreeMap<String, Tracked>,
    pub(crate) next_deployment: u32,
    /// Stops the shell has been asked for and not yet performed, by task id.
    pub(crate) stops_in_flight: BTreeMap<String, u32>,
    /// Queue keys of in-process hook results, by execution id (a cancel removes them).
    pub(crate) hook_results: BTreeMap<String, (Timestamp, u64)>,
    /// Groups rolled back whose next ordered table must show it.
    pub(crate) rollbacks_pending: BTreeSet<String>,
    pub(crate) last_routes: BTreeMap<String, GroupRoute>,
    pub(crate) next_health_check: Timestamp,
    /// The reconciler reported that every task stopped after `cutover down`.
    pub(crate) shut_down: bool,
    pub(crate) trace: Trace,
    pub(crate) step: u64,
    pub(crate) summary: Summary,
}

/// Runs one seed: the random phase, then the quiescent phase; `Err` is the first violation.
pub fn run(seed: u64, config: &Config) -> Result<Summary, Violation> {
    let mut sim = Sim::new(seed, config.clone());
    sim.start()?;
    while sim.step < sim.config.steps {
        sim.step_once()?;
    }
    sim.quiesce()?;
    sim.summary.seed = seed;
    sim.summary.steps = sim.step;
    sim.summary.simulated_ms = sim.now.as_millis();
    sim.summary.trace_hash = sim.trace.hash();
    Ok(sim.summary)
}

impl Sim {
    fn new(seed: u64, config: Config) -> Sim {
        let mut rng = Rng::new(seed);
        let salt = rng.next_u64();
        let now = START;
        Sim {
            seed,
            config,
            rng,
            now,
            clock_offset_ms: 0,
            queue: BTreeMap::new(),
            seq: 0,
            reconciler: Reconciler::new(salt, 0, now),
            persisted: Reconciler::new(salt, 0, now),
            persisted_at: now,
            down: false,
            paused_until: None,
            faults_on: true,
            runtime: Runtime::default(),
            lb: LoadBalancer::default(),
            alarms: client::ALARMS.iter().map(|a| (a.to_string(), false)).collect(),
            qualities: BTreeMap::new(),
            counts: BTreeMap::new(),
            delays: BTreeMap::new(),
            deployments: BTreeMap::new(),
            next_deployment: 0,
            stops_in_flight: BTreeMap::new(),
            hook_results: BTreeMap::new(),
            rollbacks_pending: BTreeSet::new(),
            last_routes: BTreeMap::new(),
            next_health_check: now,
            shut_down: false,
            trace: Trace::new(),
            step: 0,
            summary: Summary::default(),
        }
    }

    /// `apply` declares both services; the pollers, the load balancer and the client start.
    fn start(&mut self) -> Result<(), Violation> {
        for service in client::SERVICES {
            self.counts.insert(service.to_string(), self.rng.between(1, 3) as u32);
            self.qualities.insert(format!("{service}:1"), Quality::Good);
            for side in ["a", "b"] {
                let delay = self.rng.millis(0, 30_000);
                self.delays.insert(format!("{service}-{side}"), delay);
            }
        }
        self.persist()?;
        let declared = client::declared(&self.counts, &self.delays);
        self.deliver(Observation::Command(Command::Declare(declared)))?;
        self.arm_pollers();
        self.schedule(Duration::from_secs(30), Event::AlarmFlips);
        self.schedule(Duration::from_secs(5), Event::Client);
        Ok(())
    }

    pub(crate) fn arm_pollers(&mut self) {
        for poll in [Event::PollHealth, Event::PollTasks, Event::PollAlarms] {
            let after = self.rng.millis(0, 1_000);
            self.schedule(after, poll);
        }
    }

    pub(crate) fn schedule(&mut self, after: Duration, event: Event) -> (Timestamp, u64) {
        self.seq += 1;
        let key = (self.now.saturating_add(after), self.seq);
        self.queue.insert(key, event);
        key
    }

    /// The control plane's clock: the world's plus the offset that pauses and restarts made.
    pub(crate) fn cp_now(&self) -> Timestamp {
        Timestamp::from_millis((self.now.as_millis() as i64 + self.clock_offset_ms).max(0) as u64)
    }

    /// When, in the world's time, the control plane wakes for the reconciler's next deadline.
    fn wake_at(&self) -> Option<Timestamp> {
        if self.down || self.paused_until.is_some() {
            return None;
        }
        let deadline = self.reconciler.next_deadline()?.as_millis() as i64;
        Some(Timestamp::from_millis((deadline - self.clock_offset_ms).max(0) as u64).max(self.now))
    }

    /// One event (or one wake-up at a deadline), then every invariant.
    pub(crate) fn step_once(&mut self) -> Result<(), Violation> {
        self.step += 1;
        if self.faults_on && !self.down && self.paused_until.is_none() {
            if self.rng.chance(self.config.crash) {
                self.crash();
                return self.check();
            }
            if self.rng.chance(self.config.pause) {
                self.pause();
                return self.check();
            }
        }
        let next = self.queue.keys().next().copied();
        match (self.wake_at(), next) {
            (Some(wake), next) if next.is_none_or(|(at, _)| wake <= at) => {
                self.advance_to(wake);
                self.tick()?;
            }
            (_, Some(key)) => {
                let event = self.queue.remove(&key).expect("listed");
                self.advance_to(key.0);
                self.handle(event)?;
            }
            (_, None) => unreachable!("the pollers never stop"),
        }
        self.check()
    }

    /// Moves the world's time on, with the load balancer's health-check rounds on the way (one
    /// every [`HEALTH_CHECK_EVERY`]; they are not steps of their own, to keep steps for
    /// decisions).
    fn advance_to(&mut self, at: Timestamp) {
        while self.next_health_check <= at {
            self.now = self.now.max(self.next_health_check);
            self.lb.check(&self.runtime, self.now);
            self.next_health_check = self.next_health_check.saturating_add(HEALTH_CHECK_EVERY);
        }
        self.now = self.now.max(at);
    }

    /// A wake-up at the reconciler's deadline. A pass may leave something due at once (a drain
    /// of zero seconds begun by a deployment after the pass stopped the drained tasks), so a
    /// second tick at the same instant is allowed; a third would be a loop.
    fn tick(&mut self) -> Result<(), Violation> {
        let now = self.cp_now();
        for _ in 0..TICKS_AT_ONCE_MAX {
            self.deliver(Observation::Tick)?;
            if self.reconciler.next_deadline().is_none_or(|deadline| deadline > now) {
                return Ok(());
            }
        }
        let deadline = self.reconciler.next_deadline();
        Err(self.violation(
            "the reconciler never spins",
            format!("after {TICKS_AT_ONCE_MAX} ticks at {now}, its next deadline is {deadline:?}"),
        ))
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        if let Some(until) = self.paused_until {
            if self.now >= until {
                self.paused_until = None;
                self.trace.record(format!("{} resumed", self.clock()));
            } else if event.in_process() || matches!(event, Event::Deliver { .. } | Event::Client) {
                // A paused process takes nothing; it finds it all waiting when it resumes.
                self.seq += 1;
                self.queue.insert((until, self.seq), event);
                return Ok(());
            }
        }
        match event {
            Event::Deliver { observation, in_process } => {
                if self.down {
                    // An HTTP hook's callback to an API that is down.
                    debug_assert!(!in_process, "in-process events die with the process");
                    self.trace.record(format!("{} lost (down): {observation:?}", self.clock()));
                    return Ok(());
                }
                self.deliver(observation)
            }
            Event::Perform(effect) => {
                self.perform(effect, true);
                Ok(())
            }
            Event::PollHealth | Event::PollTasks | Event::PollAlarms => {
                self.poll(event);
                Ok(())
            }
            Event::TaskExits(id) => {
                self.task_exits(&id);
                Ok(())
            }
            Event::TaskTurnsUnhealthy(id) => {
                if let Some(task) = self.runtime.tasks.get_mut(&id) {
                    task.lb_unhealthy = true;
                }
                Ok(())
            }
            Event::AlarmFlips => {
                self.flip_alarm();
                Ok(())
            }
            Event::Client => self.client(),
            Event::Restart => self.restart(),
        }
    }

    /// Feeds one observation at the control plane's time, persists the new state, and sends the
    /// effects on their way; on a sample of steps, a reloaded copy takes the same observation.
    pub(crate) fn deliver(&mut self, observation: Observation) -> Result<(), Violation> {
        let now = self.cp_now();
        let twin = if self.rng.chance(self.config.reload_check) {
            self.summary.reload_checks += 1;
            Some(self.reload_check()?)
        } else {
            None
        };
        let line = format!(
            "{} step {} {}",
            self.clock(),
            self.step,
            crate::trace::observation(&observation)
        );
        self.trace.record(line);
        let result = self.reconciler.observe(observation.clone(), now);
        if let Some(mut twin) = twin {
            let twin_result = twin.observe(observation, now);
            if twin_result != result || twin != self.reconciler {
                return Err(self.violation(
                    "reloading changes nothing",
                    format!(
                        "after a reload the same observation gave {twin_result:?} instead of \
                         {result:?}"
                    ),
                ));
            }
        }
        let effects = match result {
            Ok(effects) => effects,
            Err(rejected) => {
                self.summary.rejected_commands += 1;
                self.trace.record(format!("  rejected: {rejected}"));
                return Ok(());
            }
        };
        self.after_decision(effects)
    }

    /// The state is persisted, then the effects leave (checked on their way).
    pub(crate) fn after_decision(&mut self, effects: Vec<Effect>) -> Result<(), Violation> {
        self.persist()?;
        for effect in effects {
            self.trace.record(format!("  -> {}", crate::trace::effect(&effect)));
            self.check_effect(&effect)?;
            self.dispatch(effect);
        }
        Ok(())
    }

    /// The shell writes the whole state before anything it decided leaves the process. What is
    /// written is kept as a copy; it goes through JSON when it is read back (at a restart, and
    /// on the sampled reload checks), which is the same as writing JSON every time, since
    /// serializing is deterministic, at a fraction of the cost.
    fn persist(&mut self) -> Result<(), Violation> {
        self.persisted = self.reconciler.clone();
        self.persisted_at = self.cp_now();
        Ok(())
    }

    /// The state as a new process reads it: written as JSON and read back.
    pub(crate) fn load(&mut self, state: &Reconciler) -> Result<Reconciler, Violation> {
        let json = serde_json::to_string(state)
            .map_err(|e| self.violation("persisted state round-trips", e.to_string()))?;
        self.summary.state_bytes_max = self.summary.state_bytes_max.max(json.len() as u64);
        serde_json::from_str(&json).map_err(|e| {
            self.violation("persisted state round-trips", format!("the state does not load: {e}"))
        })
    }

    /// The live state through JSON; it must come back equal.
    fn reload_check(&mut self) -> Result<Reconciler, Violation> {
        let live = self.reconciler.clone();
        let loaded = self.load(&live)?;
        if loaded != self.reconciler {
            return Err(self.violation(
                "persisted state round-trips",
                "the state read back from JSON differs from the state written".into(),
            ));
        }
        Ok(loaded)
    }

    /// Effects leave in tasks of their own; history effects are only noted.
    fn dispatch(&mut self, effect: Effect) {
        match effect {
            Effect::StartTask(_)
            | Effect::StopTask { .. }
            | Effect::RemoveTask { .. }
            | Effect::RunHook { .. }
            | Effect::PushRoutes { .. } => {
                if let Effect::StopTask { task_id } = &effect {
                    *self.stops_in_flight.entry(task_id.clone()).or_default() += 1;
                }
                let latency = self.rng.millis(0, 300);
                self.schedule(latency, Event::Perform(effect));
            }
            Effect::CancelHook { execution_id, .. } => {
                if let Some(key) = self.hook_results.remove(&execution_id) {
                    self.queue.remove(&key);
                }
            }
            Effect::ShutDown => self.shut_down = true,
            Effect::Rollout { deployment_id, effect: rollout::Effect::Finished(outcome) } => {
                if std::env::var("SIM_DEBUG").is_ok() {
                    let q = self
                        .reconciler
                        .deployment(&deployment_id)
                        .map(|d| self.qualities.get(&d.task_definition).copied());
                    eprintln!("OUTCOME {q:?} {} {outcome}", self.seed);
                }
                match outcome.status {
                    DeploymentStatus::Succeeded => self.summary.succeeded += 1,
                    DeploymentStatus::Failed => self.summary.failed += 1,
                    _ => self.summary.stopped += 1,
                }
                self.summary.rolled_back += u64::from(outcome.rolled_back);
            }
            _ => {}
        }
    }

    /// The random phase is over: no more faults or commands; everything must end and converge.
    fn quiesce(&mut self) -> Result<(), Violation> {
        self.faults_on = false;
        self.queue.retain(|_, event| {
            !matches!(
                event,
                Event::TaskExits(_)
                    | Event::TaskTurnsUnhealthy(_)
                    | Event::AlarmFlips
                    | Event::Client
            )
        });
        for state in self.alarms.values_mut() {
            *state = false;
        }
        for task in self.runtime.tasks.values_mut() {
            task.lb_unhealthy = false;
        }
        let bound = self
            .deployments
            .iter()
            .filter(|(id, _)| self.unfinished(id))
            .map(|(_, t)| t.bound)
            .max()
            .unwrap_or_default()
            .max(QUIET_MIN);
        // From when the control plane runs again: a pause or a restart may be under way.
        let back = self.paused_until.unwrap_or(self.now).saturating_add(RESTART_MAX);
        let deadline = back.saturating_add(bound);
        self.trace.record(format!("{} quiescent for {bound:?}", self.clock()));
        while self.now < deadline {
            self.step_once()?;
            let running = !self.down && self.paused_until.is_none();
            if running && self.converged().is_ok() && self.all_ended() {
                return self.shut_down();
            }
        }
        if let Some(id) = self.deployments.keys().find(|id| self.unfinished(id)).cloned() {
            let bound = self.deployments[&id].bound;
            return Err(self.violation(
                "every started deployment ends",
                format!("deployment {id} is still active {bound:?} after faults stopped"),
            ));
        }
        self.converged().map_err(|detail| self.violation("the world converges", detail))
    }

    /// `cutover down`: every task stops, none is left in the runtime, and the reconciler says
    /// so, within [`SHUTDOWN_BOUND`].
    fn shut_down(&mut self) -> Result<(), Violation> {
        self.deliver(Observation::Command(Command::Shutdown))?;
        let deadline = self.now.saturating_add(SHUTDOWN_BOUND);
        while !self.shut_down && self.now < deadline {
            self.step_once()?;
        }
        let alive: Vec<&String> =
            self.runtime.tasks.iter().filter(|(_, t)| t.is_alive()).map(|(id, _)| id).collect();
        if !self.shut_down || !alive.is_empty() {
            return Err(self.violation(
                "shutdown stops every task",
                format!(
                    "{SHUTDOWN_BOUND:?} after `cutover down`, shut down: {}, tasks running: \
                     {alive:?}",
                    self.shut_down
                ),
            ));
        }
        Ok(())
    }

    fn unfinished(&self, id: &str) -> bool {
        self.reconciler.deployment(id).is_some_and(|d| !d.machine.is_finished())
    }

    fn all_ended(&self) -> bool {
        !self.deployments.keys().any(|id| self.unfinished(id))
    }

    /// Every task set at its count with running tasks, the drained ones retired, the latest
    /// table served, nothing running that the reconciler does not know.
    fn converged(&self) -> Result<(), String> {
        for ts in self.reconciler.task_sets() {
            if ts.status == TaskSetStatus::Draining {
                return Err(format!("task set {} is still draining", ts.id));
            }
            if self.qualities.get(&ts.task_definition) == Some(&Quality::Broken) {
                continue;
            }
            let running = self
                .reconciler
                .tasks()
                .filter(|t| t.task_set_id == ts.id && t.is_live())
                .filter(|t| t.last_status == TaskStatus::Running)
                .filter(|t| self.runtime.tasks.get(&t.id).is_some_and(|r| r.is_alive()))
                .count();
            if running != ts.desired_count as usize {
                return Err(format!(
                    "task set {} runs {running} task(s), not {}",
                    ts.id, ts.desired_count
                ));
            }
        }
        if self.lb.served_version != self.reconciler.routes_version() {
            return Err(format!(
                "the load balancer serves version {}, not {}",
                self.lb.served_version,
                self.reconciler.routes_version()
            ));
        }
        for (id, task) in &self.runtime.tasks {
            let known = self.reconciler.task(id).is_some_and(|t| {
                matches!(t.last_status, TaskStatus::Running | TaskStatus::Deactivating)
            });
            if task.is_alive() && !known {
                return Err(format!("the runtime runs {id}, which the reconciler does not run"));
            }
        }
        Ok(())
    }

    /// The times of a trace line: the world's and the control plane's, in seconds since the
    /// start.
    pub(crate) fn clock(&self) -> String {
        let world = self.now.since(START);
        let cp = self.cp_now().since(START);
        format!(
            "t={}.{:03} cp={}.{:03}",
            world.as_secs(),
            world.subsec_millis(),
            cp.as_secs(),
            cp.subsec_millis()
        )
    }

    pub(crate) fn violation(&self, invariant: &'static str, detail: String) -> Violation {
        Violation {
            seed: self.seed,
            step: self.step,
            at: self.clock(),
            invariant,
            detail,
            tail: self.trace.tail().cloned().collect(),
        }
    }
}
