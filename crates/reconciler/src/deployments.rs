//! Deployments: each one's `rollout::Rollout`, what it is told (green's health, alarms, due
//! deadlines), and what its effects mean for task sets and routing.

use std::collections::BTreeSet;

use model::{DeploymentStatus, LifecycleEvent, TaskHealth, TaskSetStatus, TaskStatus, Timestamp};
use rollout::{Input, Rollout};

use crate::decide::{GreenVerdict, GreenView, green_target_group, green_verdict};
use crate::state::{Deployment, Reconciler, TaskSet};
use crate::{Effect, EventKind, NewDeployment, Rejected};

impl Reconciler {
    pub(crate) fn create_deployment(
        &mut self,
        new: NewDeployment,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) -> Result<(), Rejected> {
        let key = new.group.clone();
        let spec = self
            .declared
            .groups
            .get(&key)
            .cloned()
            .ok_or_else(|| Rejected::NoSuchGroup(key.clone()))?;
        let group = self.groups.get(&key).cloned().unwrap_or_default();
        if let Some(active) = group.active_deployment {
            return Err(Rejected::GroupBusy { group: key, active });
        }
        if let Some(leftover) = group.leftover_deployment {
            return Err(Rejected::LeftoverInPlace { group: key, leftover });
        }
        let blue_task_set = group
            .primary_task_set
            .filter(|id| self.task_sets.contains_key(id))
            .ok_or_else(|| Rejected::NoBlue(spec.service.clone()))?;
        let blue_target_group = self.task_sets[&blue_task_set]
            .target_group
            .clone()
            .unwrap_or_else(|| spec.target_groups[0].clone());
        let green = green_target_group(&spec.target_groups, &blue_target_group).to_string();
        let id = new.spec.deployment_id.clone();
        let deployment = Deployment {
            id: id.clone(),
            group: key.clone(),
            machine: Rollout::new(new.spec, now),
            service: spec.service.clone(),
            task_definition: new.task_definition,
            health_checked: new.health_checked,
            blue_task_set,
            green_task_set: None,
            blue_target_group,
            green_target_group: green,
            production_green_percent: 0,
            test_to_green: false,
            green_was_healthy: false,
            green_failure_reported: false,
            alarms: if new.ignore_alarms { Vec::new() } else { spec.alarms.clone() },
            alarms_fed: BTreeSet::new(),
            rolled_back_later: false,
        };
        self.deployments.insert(id.clone(), deployment);
        self.groups.entry(key).or_default().active_deployment = Some(id.clone());
        self.drive(&id, now, out);
        Ok(())
    }

    /// A stop request: to the machine, or, for a leftover asked to roll back, the rollback.
    pub(crate) fn stop(
        &mut self,
        id: &str,
        rollback: Option<bool>,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) -> Result<(), Rejected> {
        let is_leftover =
            self.groups.values().any(|g| g.leftover_deployment.as_deref() == Some(id));
        if is_leftover && rollback == Some(true) {
            self.roll_back_leftover(id, now, out);
            return Ok(());
        }
        self.feed(id, Input::Stop { rollback }, now, out)
    }

    /// Rolls back a deployment that ended without rolling back and left green in place:
    /// production and test traffic go back to blue in one routing change, green drains.
    fn roll_back_leftover(&mut self, id: &str, now: Timestamp, out: &mut Vec<Effect>) {
        let Some(d) = self.deployments.get_mut(id) else { return };
        d.production_green_percent = 0;
        d.test_to_green = false;
        d.rolled_back_later = true;
        let (green, group) = (d.green_task_set.clone(), d.group.clone());
        if let Some(green) = green {
            let reason = format!("deployment {id} was rolled back: green stopped");
            self.drain_task_set(&green, now, &reason);
        }
        if let Some(group) = self.groups.get_mut(&group) {
            group.leftover_deployment = None;
        }
        out.push(Effect::Event {
            deployment_id: id.to_string(),
            kind: EventKind::Rollback,
            message: "rolled back by request: production and test traffic on blue, green stopping"
                .into(),
        });
        // Routing goes back to blue with this very pass; the deployment routes nothing after.
        if let Some(closed) = self.deployments.remove(id) {
            out.push(Effect::DeploymentClosed(Box::new(closed)));
        }
    }

    /// Feeds one input to an active deployment's machine and gives its effects their meaning.
    pub(crate) fn feed(
        &mut self,
        id: &str,
        input: Input,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) -> Result<(), Rejected> {
        let machine = match self.deployments.get_mut(id) {
            Some(d) if !d.machine.is_finished() => &mut d.machine,
            Some(_) => return Err(Rejected::AlreadyCompleted(id.to_string())),
            None => return Err(Rejected::NoSuchDeployment(id.to_string())),
        };
        machine
            .handle_input(input, now)
            .map_err(|source| Rejected::Machine { id: id.to_string(), source })?;
        self.drive(id, now, out);
        Ok(())
    }

    /// Tells each active deployment about green and fires its due deadlines.
    pub(crate) fn advance_deployments(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        let active: Vec<String> = self
            .deployments
            .values()
            .filter(|d| !d.machine.is_finished())
            .map(|d| d.id.clone())
            .collect();
        for id in active {
            if let Some(input) = self.green_input(&id) {
                // A report the machine has no use for (green already failed it) changes nothing.
                let _ = self.feed(&id, input, now, out);
            }
            // The report may have finished and closed it.
            let Some(d) = self.deployments.get_mut(&id) else { continue };
            if d.machine.poll_timeout().is_some_and(|at| at <= now) {
                d.machine.handle_timeout(now);
                self.drive(&id, now, out);
            }
        }
    }

    /// Tells the deployments waiting for the load balancer that it serves their routing, once
    /// it confirmed the table last ordered: that table holds every deployment's latest route.
    /// What they do next may route again; that is pushed in the same pass and told once
    /// confirmed in turn.
    pub(crate) fn tell_routes_served(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        // A deployment goes through two routing events; a third pass finds nothing more.
        for _ in 0..3 {
            let served =
                self.routes.ordered.is_some() && self.routes.applied >= self.routes.version;
            let waiting: Vec<String> = self
                .deployments
                .values()
                .filter(|d| !d.machine.is_finished() && d.machine.awaits_routes_served())
                .map(|d| d.id.clone())
                .collect();
            if !served || waiting.is_empty() {
                return;
            }
            for id in waiting {
                // Every waiting machine takes it; a finished one was filtered out above.
                let _ = self.feed(&id, Input::RoutesServed, now, out);
            }
            self.push_routes(now, out);
        }
    }

    /// What the deployment is to be told about green now, noting it so that each failure is
    /// told once.
    fn green_input(&mut self, id: &str) -> Option<Input> {
        let d = &self.deployments[id];
        let green = self.task_sets.get(d.green_task_set.as_ref()?)?;
        let healthy = self
            .tasks_of(&green.id)
            .filter(|t| t.is_live() && t.last_status == TaskStatus::Running)
            .filter(|t| t.health == TaskHealth::Healthy)
            .count() as u32;
        let view = GreenView {
            target_group: &d.green_target_group,
            desired: green.desired_count,
            healthy,
            failures: &green.failures,
            installing: d.machine.current_event() == Some(LifecycleEvent::Install),
            succeeded: d.machine.status() == DeploymentStatus::Succeeded,
            health_fresh: self.health_fresh(),
            was_healthy: d.green_was_healthy,
            failure_reported: d.green_failure_reported,
        };
        let verdict = green_verdict(&view)?;
        let d = self.deployments.get_mut(id).expect("looked up above");
        Some(match verdict {
            GreenVerdict::Healthy => {
                d.green_was_healthy = true;
                Input::GreenHealthy
            }
            GreenVerdict::Unhealthy(reason) => {
                d.green_failure_reported = true;
                Input::GreenUnhealthy { reason }
            }
        })
    }

    /// Level-triggered, as CodeDeploy polls alarm states: an alarm in ALARM stops every
    /// deployment that watches it while it watches alarms, also one that started watching after
    /// the alarm fired; each alarm instance is handed to a deployment once.
    pub(crate) fn hand_over_alarms(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        let readings = std::mem::take(&mut self.alarms);
        let watching: Vec<String> = self
            .deployments
            .values()
            .filter(|d| d.machine.is_watching_alarms())
            .map(|d| d.id.clone())
            .collect();
        for id in watching {
            let names = self.deployments[&id].alarms.clone();
            for name in names {
                // An alarm on the green target group has an instance per deployment.
                let own = format!("{name}@{id}");
                let key = if readings.iter().any(|r| r.key == own) { own } else { name.clone() };
                let Some(reading) = readings.iter().find(|r| r.key == key && r.in_alarm) else {
                    continue;
                };
                // An earlier alarm of this pass may have finished and closed it.
                let Some(d) = self.deployments.get_mut(&id) else { break };
                if !d.machine.is_watching_alarms() || !d.alarms_fed.insert(key) {
                    continue;
                }
                out.push(Effect::Event {
                    deployment_id: id.clone(),
                    kind: EventKind::Alarm,
                    message: format!("alarm {name} is in ALARM: {}", reading.reason),
                });
                let input = Input::Alarm { name: name.clone(), reason: reading.reason.clone() };
                let _ = self.feed(&id, input, now, out);
            }
        }
        self.alarms = readings;
    }

    /// Performs what a deployment's machine decided, in order.
    pub(crate) fn drive(&mut self, id: &str, now: Timestamp, out: &mut Vec<Effect>) {
        while let Some(effect) = self.deployments.get_mut(id).and_then(|d| d.machine.poll_effect())
        {
            self.give_meaning(id, &effect, now, out);
            out.push(Effect::Rollout { deployment_id: id.to_string(), effect });
        }
        let finished = self.deployments.get(id).is_some_and(|d| d.machine.is_finished());
        let leftover = self.groups.values().any(|g| g.leftover_deployment.as_deref() == Some(id));
        if finished
            && !leftover
            && let Some(closed) = self.deployments.remove(id)
        {
            out.push(Effect::DeploymentClosed(Box::new(closed)));
        }
    }

    fn give_meaning(
        &mut self,
        id: &str,
        effect: &rollout::Effect,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) {
        use rollout::Effect as E;
        let d = self.deployments.get_mut(id).expect("driven deployments exist");
        match effect {
            E::Status(_) | E::Event { .. } => {}
            E::StartGreen => {
                if d.green_task_set.is_none() {
                    let ts_id = self.new_id("ts");
                    self.start_green(id, ts_id, now);
                }
            }
            E::RunHook { event, execution_id, hook, timeout } => out.push(Effect::RunHook {
                deployment_id: id.to_string(),
                event: *event,
                execution_id: execution_id.clone(),
                hook: hook.clone(),
                timeout: *timeout,
            }),
            E::CancelHook { execution_id } => out.push(Effect::CancelHook {
                deployment_id: id.to_string(),
                execution_id: execution_id.clone(),
            }),
            E::Route { production_green_percent, test_to_green } => {
                d.production_green_percent = *production_green_percent;
                d.test_to_green = *test_to_green;
            }
            E::StopGreen => {
                if let Some(green) = d.green_task_set.clone() {
                    let reason = format!("deployment {id} ended without green: green stopped");
                    self.drain_task_set(&green, now, &reason);
                }
            }
            E::TerminateBlue => self.terminate_blue(id, now),
            E::Finished(outcome) => {
                let green_left_running = outcome.status != DeploymentStatus::Succeeded
                    && !outcome.rolled_back
                    && d.green_task_set.is_some();
                let group = self.groups.entry(d.group.clone()).or_default();
                group.active_deployment = None;
                if green_left_running {
                    group.leftover_deployment = Some(id.to_string());
                }
            }
        }
    }

    /// The green task set, in the idle target group, at the service's desired count.
    fn start_green(&mut self, id: &str, ts_id: String, now: Timestamp) {
        let d = self.deployments.get_mut(id).expect("driven deployments exist");
        let service = self.declared.services.get(&d.service);
        let ts = TaskSet {
            id: ts_id.clone(),
            service: d.service.clone(),
            task_definition: d.task_definition.clone(),
            target_group: Some(d.green_target_group.clone()),
            status: TaskSetStatus::Active,
            deployment_id: Some(id.to_string()),
            desired_count: service.map_or(0, |s| s.desired_count),
            runtime: service.map_or(model::RuntimeKind::Process, |s| s.runtime),
            health_checked: d.health_checked,
            failures: Default::default(),
            created_at: now,
        };
        d.green_task_set = Some(ts_id.clone());
        self.task_sets.insert(ts_id, ts);
    }

    /// Blue drains; green becomes the primary task set.
    fn terminate_blue(&mut self, id: &str, now: Timestamp) {
        let d = &self.deployments[id];
        let (blue, green, group) =
            (d.blue_task_set.clone(), d.green_task_set.clone(), d.group.clone());
        self.drain_task_set(&blue, now, &format!("deployment {id} replaced blue with green"));
        if let Some(green) = green {
            if let Some(ts) = self.task_sets.get_mut(&green) {
                ts.status = TaskSetStatus::Primary;
            }
            self.groups.entry(group).or_default().primary_task_set = Some(green);
        }
    }
}
