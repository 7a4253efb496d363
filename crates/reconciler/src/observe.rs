//! The entry points: one observation in, the effects of everything it makes due out; and the
//! tasks' side of reconciling (their reports, their drains, their task sets' counts).

use model::{DesiredStatus, TaskHealth, TaskSetStatus, TaskStatus, Timestamp};

use crate::decide::{drain_over, task_health};
use crate::state::{Reconciler, Task, TaskSet};
use crate::{Command, Declared, Effect, Observation, Rejected, TaskLaunch, TaskProbe};

impl Reconciler {
    /// Takes one observation at `now`, then reconciles. On `Err` nothing changed.
    pub fn observe(
        &mut self,
        observation: Observation,
        now: Timestamp,
    ) -> Result<Vec<Effect>, Rejected> {
        // Time never goes backwards in here, whatever the shell's clock did.
        let now = now.max(self.now);
        let before = self.clone();
        self.now = now;
        let mut out = Vec::new();
        if let Err(rejected) = self.take(observation, now, &mut out) {
            *self = before;
            return Err(rejected);
        }
        self.reconcile(now, &mut out);
        Ok(out)
    }

    /// Carries on after the shell restarted with this state (persisted, or restored from an
    /// older cutover's rows): every deployment's machine resumes (`rollout::Rollout::resume`: its
    /// routing again, green started if it should be, a hook that was running cancelled and run
    /// again with a new execution id, because the process that ran it is gone: hooks are at least
    /// once across a restart), the routing table is pushed again (the data plane may have lost
    /// it), then everything is reconciled as after an observation.
    pub fn resume(&mut self, now: Timestamp) -> Vec<Effect> {
        let now = now.max(self.now);
        self.now = now;
        // A start is a start, also after `cutover down` (whose end the state keeps): the
        // services run again, and the next `down` ends once their tasks have stopped.
        self.shutting_down = false;
        self.shut_down = false;
        let mut out = Vec::new();
        let ids: Vec<String> = self.deployments.keys().cloned().collect();
        for id in ids {
            if let Some(d) = self.deployments.get_mut(&id) {
                d.machine.resume(now);
            }
            self.drive(&id, now, &mut out);
        }
        self.routes.ordered = None;
        self.reconcile(now, &mut out);
        out
    }

    /// The earliest time something is due without a new observation: a deployment's deadline,
    /// the end of a drain, a restart after backoff, a push to retry.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let machines = self.deployments.values().filter_map(|d| d.machine.poll_timeout());
        let drains = self
            .tasks
            .values()
            .filter(|t| t.last_status == TaskStatus::Deactivating)
            .filter_map(|t| t.stop_at);
        let restarts = self
            .task_sets
            .values()
            .filter(|ts| self.missing_tasks(ts) > 0 && ts.failures.count > 0)
            .map(|ts| ts.failures.retry_at());
        let pushes = self.routes.retry_at;
        machines.chain(drains).chain(restarts).chain(pushes).min()
    }

    fn take(
        &mut self,
        observation: Observation,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) -> Result<(), Rejected> {
        match observation {
            Observation::Command(command) => return self.command(command, now, out),
            Observation::TaskStarted { task_id, handle, addr } => {
                self.task_started(&task_id, handle, addr, now, out)
            }
            Observation::TaskFailedToStart { task_id, reason } => {
                let reason = format!("task failed to start: {reason}");
                self.task_ended(&task_id, reason, now);
            }
            Observation::TaskInspected { task_id, state } => {
                self.task_inspected(&task_id, state, now, out)
            }
            Observation::TaskStopped { task_id } => {
                if let Some(task) = self.tasks.get_mut(&task_id) {
                    task.last_status = TaskStatus::Stopped;
                    task.stopped_at.get_or_insert(now);
                }
            }
            Observation::TargetHealth(report) => self.health = report,
            Observation::RoutesApplied { version } => {
                self.routes.applied = self.routes.applied.max(version);
            }
            Observation::RoutesFailed { version, error: _ } => self.routes_failed(version, now),
            Observation::Alarms(readings) => self.alarms = readings,
            Observation::HookResult { deployment_id, execution_id, succeeded, message } => {
                let input = rollout::Input::HookResult { execution_id, succeeded, message };
                return self.feed(&deployment_id, input, now, out);
            }
            Observation::RoutesChanged => self.routes.ordered = None,
            Observation::Tick => {}
        }
        Ok(())
    }

    fn command(
        &mut self,
        command: Command,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) -> Result<(), Rejected> {
        match command {
            Command::Declare(declared) => self.declare(declared, now),
            Command::CreateDeployment(new) => return self.create_deployment(*new, now, out),
            Command::Stop { deployment_id, rollback } => {
                return self.stop(&deployment_id, rollback, now, out);
            }
            Command::Continue { deployment_id, wait } => {
                let input = match wait {
                    crate::Wait::Ready => rollout::Input::ContinueReadyWait,
                    crate::Wait::Termination => rollout::Input::ContinueTerminationWait,
                };
                return self.feed(&deployment_id, input, now, out);
            }
            Command::Shutdown => self.shutdown(now, out),
        }
        Ok(())
    }

    fn reconcile(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        self.assess_health();
        self.stop_drained(now, out);
        // Scale-ins before the deployments: green is judged on the tasks that stay (judged
        // before, production could move onto a green whose only healthy task the scale-in then
        // took out).
        self.scale_in(now);
        // Deployments before the rest of the counts: a task set a deployment drains is retired,
        // and one it creates is started, in the same pass.
        self.advance_deployments(now, out);
        self.hand_over_alarms(now, out);
        self.schedule(now, out);
        self.push_routes(now, out);
        self.tell_routes_served(now, out);
        if self.shutting_down
            && !self.shut_down
            && self.tasks.values().all(|t| t.last_status == TaskStatus::Stopped)
        {
            self.shut_down = true;
            out.push(Effect::ShutDown);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Desired state.

    /// What `apply` declared: new services get their primary task set, desired counts follow
    /// the file, deleted services drain, groups find their primary task set.
    fn declare(&mut self, declared: Declared, now: Timestamp) {
        let deleted: Vec<String> = self
            .declared
            .services
            .keys()
            .filter(|name| !declared.services.contains_key(*name))
            .cloned()
            .collect();
        self.declared = declared;
        for name in deleted {
            let sets: Vec<String> = self
                .task_sets
                .values()
                .filter(|ts| ts.service == name)
                .map(|ts| ts.id.clone())
                .collect();
            let reason = format!("service {name} was deleted (no longer in cutover.yaml)");
            for id in sets {
                self.drain_task_set(&id, now, &reason);
            }
        }
        let services = self.declared.services.clone();
        for (name, service) in &services {
            let live = |ts: &&TaskSet| ts.service == *name && ts.status != TaskSetStatus::Draining;
            if !self.task_sets.values().any(|ts| live(&ts)) {
                let id = self.new_id("ts");
                let ts = TaskSet {
                    id: id.clone(),
                    service: name.clone(),
                    task_definition: service.task_definition.clone(),
                    target_group: service.target_group.clone(),
                    status: TaskSetStatus::Primary,
                    deployment_id: None,
                    desired_count: service.desired_count,
                    runtime: service.runtime,
                    health_checked: service.health_checked,
                    failures: Default::default(),
                    created_at: now,
                };
                self.task_sets.insert(id, ts);
                continue;
            }
            for ts in self.task_sets.values_mut().filter(|ts| live(&&**ts)) {
                ts.desired_count = service.desired_count;
            }
        }
        let declared_groups = &self.declared.groups;
        self.groups.retain(|key, _| declared_groups.contains_key(key));
        let groups = self.declared.groups.clone();
        for (key, spec) in groups {
            let group = self.groups.entry(key).or_default();
            let stale = group.primary_task_set.as_ref().is_none_or(|id| {
                self.task_sets.get(id).is_none_or(|ts| {
                    ts.service != spec.service || ts.status == TaskSetStatus::Draining
                })
            });
            if stale {
                group.primary_task_set = self
                    .task_sets
                    .values()
                    .find(|ts| ts.service == spec.service && ts.status == TaskSetStatus::Primary)
                    .map(|ts| ts.id.clone());
            }
        }
    }

    fn shutdown(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        self.shutting_down = true;
        let ids: Vec<String> = self.task_sets.keys().cloned().collect();
        for id in ids {
            let ts = self.task_sets.get_mut(&id).expect("listed");
            ts.status = TaskSetStatus::Draining;
            ts.desired_count = 0;
        }
        // At once rather than after the drain: the operator asked for everything to go.
        let live: Vec<String> = self
            .tasks
            .values()
            .filter(|t| !matches!(t.last_status, TaskStatus::Stopped | TaskStatus::Stopping))
            .map(|t| t.id.clone())
            .collect();
        for id in live {
            self.begin_stop(&id, "cutover down", now, out);
        }
    }

    /// Keeps every task set at its desired count; retires drained ones.
    fn schedule(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        let ids: Vec<String> = self.task_sets.keys().cloned().collect();
        for id in ids {
            let ts = &self.task_sets[&id];
            let live: Vec<&Task> = self.tasks_of(&id).filter(|t| t.is_live()).collect();
            if ts.status == TaskSetStatus::Draining {
                if self.tasks_of(&id).all(|t| t.last_status == TaskStatus::Stopped) {
                    self.retire(&id, out);
                }
                continue;
            }
            if live.len() > ts.desired_count as usize {
                self.deactivate_extras(&id, now);
                continue;
            }
            let missing = self.missing_tasks(ts);
            if missing > 0 && !self.shutting_down && now >= ts.failures.retry_at() {
                for _ in 0..missing {
                    self.start_task(&id, now, out);
                }
            }
        }
    }

    /// Every task set that runs more tasks than it desires deactivates the extra ones.
    fn scale_in(&mut self, now: Timestamp) {
        let ids: Vec<String> = self.task_sets.keys().cloned().collect();
        for id in ids {
            self.deactivate_extras(&id, now);
        }
    }

    /// Deactivates a task set's live tasks beyond its desired count; the newest go first: the
    /// oldest have proven themselves.
    fn deactivate_extras(&mut self, task_set_id: &str, now: Timestamp) {
        let Some(ts) = self.task_sets.get(task_set_id) else { return };
        let desired = ts.desired_count as usize;
        let mut live: Vec<(Timestamp, String)> = self
            .tasks_of(task_set_id)
            .filter(|t| t.is_live())
            .map(|t| (t.created_at, t.id.clone()))
            .collect();
        if ts.status == TaskSetStatus::Draining || live.len() <= desired {
            return;
        }
        live.sort_by(|a, b| b.cmp(a));
        let reason = format!("service scaled in to {desired} task(s)");
        for (_, task_id) in live.iter().take(live.len() - desired) {
            self.deactivate(task_id, now, &reason);
        }
    }

    /// How many tasks a task set lacks.
    pub(crate) fn missing_tasks(&self, ts: &TaskSet) -> usize {
        if ts.status == TaskSetStatus::Draining {
            return 0;
        }
        let live = self.tasks_of(&ts.id).filter(|t| t.is_live()).count();
        (ts.desired_count as usize).saturating_sub(live)
    }

    fn start_task(&mut self, task_set_id: &str, now: Timestamp, out: &mut Vec<Effect>) {
        let task_id = self.new_id("t");
        let ts = &self.task_sets[task_set_id];
        out.push(Effect::StartTask(TaskLaunch {
            task_id: task_id.clone(),
            task_set_id: ts.id.clone(),
            service: ts.service.clone(),
            task_definition: ts.task_definition.clone(),
            runtime: ts.runtime,
            deployment_id: ts.deployment_id.clone(),
        }));
        let task = Task {
            id: task_id.clone(),
            task_set_id: task_set_id.to_string(),
            last_status: TaskStatus::Provisioning,
            desired_status: DesiredStatus::Running,
            health: TaskHealth::Unknown,
            container_health: crate::ContainerHealth::Unknown,
            handle: None,
            addr: None,
            stop_at: None,
            removed_at_version: None,
            stopped_reason: None,
            created_at: now,
            started_at: None,
            stopped_at: None,
        };
        self.tasks.insert(task_id, task);
    }

    /// A drained task set goes; its stopped tasks go with it from here (the shell's history
    /// keeps them).
    fn retire(&mut self, task_set_id: &str, out: &mut Vec<Effect>) {
        let Some(ts) = self.task_sets.remove(task_set_id) else { return };
        let (tasks, kept) = std::mem::take(&mut self.tasks)
            .into_iter()
            .partition(|(_, t)| t.task_set_id == task_set_id);
        self.tasks = kept;
        let tasks = tasks.into_values().collect();
        out.push(Effect::TaskSetRetired { task_set: Box::new(ts), tasks });
    }

    /// Drains a task set: desired count 0, its tasks out of their target group, stopped after
    /// their drain, with `reason` as their stopped reason unless they already have one.
    pub(crate) fn drain_task_set(&mut self, task_set_id: &str, now: Timestamp, reason: &str) {
        let Some(ts) = self.task_sets.get_mut(task_set_id) else { return };
        ts.status = TaskSetStatus::Draining;
        ts.desired_count = 0;
        let live: Vec<String> =
            self.tasks_of(task_set_id).filter(|t| t.is_live()).map(|t| t.id.clone()).collect();
        for id in live {
            self.deactivate(&id, now, reason);
        }
    }

    /// ECS's DEACTIVATING: the task leaves its target group now and is stopped when the target
    /// group's deregistration delay ends, or earlier once the data plane has released it.
    fn deactivate(&mut self, task_id: &str, now: Timestamp, reason: &str) {
        let delay = self
            .tasks
            .get(task_id)
            .and_then(|t| self.task_sets.get(&t.task_set_id))
            .and_then(|ts| ts.target_group.as_ref())
            .and_then(|tg| self.declared.deregistration_delays.get(tg).copied())
            .unwrap_or_default();
        let removed_at_version = self.routes.version + 1;
        let Some(task) = self.tasks.get_mut(task_id) else { return };
        task.desired_status = DesiredStatus::Stopped;
        task.stopped_reason.get_or_insert_with(|| reason.to_string());
        if task.last_status == TaskStatus::Running {
            task.last_status = TaskStatus::Deactivating;
            task.stop_at = Some(now.saturating_add(delay));
            task.removed_at_version = Some(removed_at_version);
        }
    }

    /// Takes a task out of service and asks its runtime to stop it.
    /// A task still being provisioned has nothing to stop yet: it is stopped once its start is
    /// reported.
    fn begin_stop(&mut self, task_id: &str, reason: &str, _now: Timestamp, out: &mut Vec<Effect>) {
        let Some(task) = self.tasks.get_mut(task_id) else { return };
        task.desired_status = DesiredStatus::Stopped;
        task.removed_at_version = None;
        if !reason.is_empty() {
            task.stopped_reason.get_or_insert_with(|| reason.to_string());
        }
        if task.last_status == TaskStatus::Provisioning {
            return;
        }
        task.last_status = TaskStatus::Stopping;
        out.push(Effect::StopTask { task_id: task_id.to_string() });
    }

    fn stop_drained(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        let drained: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.last_status == TaskStatus::Deactivating)
            .filter(|t| drain_over(t.stop_at, t.addr, t.removed_at_version, &self.health, now))
            .map(|t| t.id.clone())
            .collect();
        for id in drained {
            self.begin_stop(&id, "", now, out);
        }
    }

    // -----------------------------------------------------------------------------------------
    // What runtimes report.

    fn task_started(
        &mut self,
        task_id: &str,
        handle: String,
        addr: Option<std::net::SocketAddr>,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) {
        let Some(task) = self.tasks.get_mut(task_id) else { return };
        if task.last_status != TaskStatus::Provisioning {
            return;
        }
        task.handle = Some(handle);
        task.addr = addr;
        task.started_at = Some(now);
        task.last_status = TaskStatus::Running;
        if task.desired_status == DesiredStatus::Stopped {
            // Stopped while starting (a rollback or a shutdown overtook it): stop it now.
            self.begin_stop(task_id, "", now, out);
        }
    }

    /// A task stopped on its own (it exited, vanished, or never started): a failure of its task
    /// set if it was meant to run.
    fn task_ended(&mut self, task_id: &str, reason: String, now: Timestamp) {
        let Some(task) = self.tasks.get_mut(task_id) else { return };
        if task.last_status == TaskStatus::Stopped {
            return;
        }
        let meant_to_run = task.desired_status == DesiredStatus::Running;
        task.last_status = TaskStatus::Stopped;
        task.desired_status = DesiredStatus::Stopped;
        task.health = TaskHealth::Unknown;
        task.stopped_at = Some(now);
        task.stopped_reason.get_or_insert_with(|| reason.clone());
        let task_set_id = task.task_set_id.clone();
        if meant_to_run && let Some(ts) = self.task_sets.get_mut(&task_set_id) {
            ts.failures.note(&reason, now);
        }
    }

    fn task_inspected(
        &mut self,
        task_id: &str,
        state: TaskProbe,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) {
        let Some(task) = self.tasks.get(task_id) else { return };
        if task.last_status != TaskStatus::Running {
            return;
        }
        match state {
            TaskProbe::Running { container } => self.task_running(task_id, container, now, out),
            TaskProbe::Exited { code, reason } => {
                let reason = match code {
                    Some(code) => format!("{reason} (exit code {code})"),
                    None => reason,
                };
                self.task_ended(task_id, reason, now);
                out.push(Effect::RemoveTask { task_id: task_id.to_string() });
            }
            TaskProbe::Gone => {
                self.task_ended(task_id, "task disappeared from its runtime".into(), now)
            }
        }
    }

    fn task_running(
        &mut self,
        task_id: &str,
        container: crate::ContainerHealth,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) {
        let Some(task) = self.tasks.get_mut(task_id) else { return };
        task.container_health = container;
        let meant_to_run = task.desired_status == DesiredStatus::Running;
        let task_set_id = task.task_set_id.clone();
        if container == crate::ContainerHealth::Unhealthy && meant_to_run {
            // ECS replaces a task whose essential container is unhealthy.
            if let Some(ts) = self.task_sets.get_mut(&task_set_id) {
                ts.failures.note("container health check failed", now);
            }
            self.begin_stop(task_id, "task failed its container health check", now, out);
        }
    }

    /// Every running task's health, from its container's and its target's; a healthy task ends
    /// its task set's row of failures.
    fn assess_health(&mut self) {
        for task in self.tasks.values_mut().filter(|t| t.last_status == TaskStatus::Running) {
            let Some(ts) = self.task_sets.get_mut(&task.task_set_id) else { continue };
            let lb_state = match (&ts.target_group, task.addr) {
                (Some(tg), Some(addr)) => self
                    .health
                    .target_groups
                    .get(tg)
                    .and_then(|targets| targets.iter().find(|t| t.addr == addr))
                    .map(|t| t.state),
                _ => None,
            };
            task.health = task_health(
                task.container_health,
                ts.health_checked,
                lb_state,
                ts.target_group.is_some(),
            );
            if task.health == TaskHealth::Healthy && task.desired_status == DesiredStatus::Running {
                ts.failures = Default::default();
            }
        }
    }
}
