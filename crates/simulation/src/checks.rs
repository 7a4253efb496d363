//! The invariants: after every step ([`Sim::check`]) and on every effect ([`Sim::check_effect`]).

use std::collections::BTreeMap;

use model::{LifecycleEvent, TaskHealth, TaskStatus};
use reconciler::{Effect, RoutingView};

use crate::Violation;
use crate::sim::Sim;

impl Sim {
    /// What must hold after every step.
    pub(crate) fn check(&self) -> Result<(), Violation> {
        if self.down {
            return Ok(());
        }
        let mut active: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for d in self.reconciler.deployments().filter(|d| !d.machine.is_finished()) {
            active.entry(&d.group).or_default().push(&d.id);
        }
        if let Some((group, ids)) = active.iter().find(|(_, ids)| ids.len() > 1) {
            return Err(self.violation(
                "one active deployment per group",
                format!("group {group} has active deployments {ids:?}"),
            ));
        }
        for ts in self.reconciler.task_sets() {
            let live = self.reconciler.tasks().filter(|t| t.task_set_id == ts.id && t.is_live());
            let live = live.count();
            if live > ts.desired_count as usize {
                return Err(self.violation(
                    "no task duplicated",
                    format!(
                        "task set {} has {live} live tasks for {} desired",
                        ts.id, ts.desired_count
                    ),
                ));
            }
        }
        for (id, task) in self.runtime.tasks.iter().filter(|(_, t)| t.is_alive()) {
            // Known and not stopped, and if it is being stopped, its stop is on its way.
            let known = self.reconciler.task(id).is_some_and(|t| {
                !matches!(t.last_status, TaskStatus::Stopped | TaskStatus::Stopping)
            });
            if !known && !self.stops_in_flight.contains_key(id) {
                return Err(self.violation(
                    "no task orphaned",
                    format!(
                        "the runtime runs {id} (task set {}, {}) which the reconciler neither runs \
                         nor stops",
                        task.task_set_id, task.addr
                    ),
                ));
            }
        }
        Ok(())
    }

    /// What must hold of each effect, in the state that decided it.
    pub(crate) fn check_effect(&mut self, effect: &Effect) -> Result<(), Violation> {
        match effect {
            Effect::Rollout { deployment_id, effect: rollout::Effect::Finished(outcome) }
                if outcome.rolled_back =>
            {
                self.note_rollback(deployment_id)
            }
            Effect::Event { deployment_id, kind: reconciler::EventKind::Rollback, .. } => {
                self.note_rollback(deployment_id)
            }
            Effect::PushRoutes { view, .. } => return self.check_routes(view),
            Effect::RunHook { deployment_id, event, .. } => {
                return self.check_hook_sees_its_traffic(deployment_id, *event);
            }
            _ => {}
        }
        Ok(())
    }

    /// A hook after a routing event tests what clients reach: it starts only once the load
    /// balancer serves that routing (test traffic on green for `AfterAllowTestTraffic`, all of
    /// production for `AfterAllowTraffic`).
    fn check_hook_sees_its_traffic(
        &self,
        deployment_id: &str,
        event: LifecycleEvent,
    ) -> Result<(), Violation> {
        let Some(tracked) = self.deployments.get(deployment_id) else { return Ok(()) };
        let served = self.lb.served.groups.get(&tracked.group);
        let sees_it = match event {
            LifecycleEvent::AfterAllowTestTraffic => served.is_some_and(|r| r.test_to_green),
            LifecycleEvent::AfterAllowTraffic => {
                served.is_some_and(|r| r.production_green_percent == 100)
            }
            _ => true,
        };
        if sees_it {
            return Ok(());
        }
        Err(self.violation(
            "a hook after a routing event sees that routing served",
            format!(
                "{event} of {deployment_id} starts while the load balancer serves {:?} (v{})",
                served, self.lb.served_version
            ),
        ))
    }

    fn note_rollback(&mut self, deployment_id: &str) {
        if let Some(tracked) = self.deployments.get(deployment_id) {
            self.rollbacks_pending.insert(tracked.group.clone());
        }
    }

    /// A table ordered of the data plane: weight raised on green only with a healthy green
    /// target; a rollback's table has everything back on blue.
    fn check_routes(&mut self, view: &RoutingView) -> Result<(), Violation> {
        for (key, route) in &view.groups {
            if self.rollbacks_pending.remove(key) {
                let other_active =
                    self.reconciler.group(key).and_then(|g| g.active_deployment.clone());
                if route.production_green_percent != 0
                    || route.test_to_green
                    || (route.deployment_in_progress && other_active.is_none())
                {
                    return Err(self.violation(
                        "a rollback is one routing change",
                        format!("the first table after group {key} rolled back routes {route:?}"),
                    ));
                }
            }
            let raised = self.last_routes.get(key).is_some_and(|before| {
                before.blue_target_group == route.blue_target_group
                    && route.production_green_percent > before.production_green_percent
            });
            if raised {
                let green = self.green_target_group(key, &route.blue_target_group);
                let listed = view.targets.get(&green).is_some_and(|t| !t.is_empty());
                let healthy = self.reconciler.tasks().any(|t| {
                    t.is_serving()
                        && t.health == TaskHealth::Healthy
                        && self
                            .reconciler
                            .task_set(&t.task_set_id)
                            .is_some_and(|ts| ts.target_group.as_deref() == Some(&*green))
                });
                if !listed || !healthy {
                    return Err(self.violation(
                        "weight only onto a healthy green",
                        format!(
                            "group {key} raises production on {green} to {}% with targets listed: \
                             {listed}, a healthy green task: {healthy}",
                            route.production_green_percent
                        ),
                    ));
                }
            }
            self.last_routes.insert(key.clone(), route.clone());
        }
        Ok(())
    }

    fn green_target_group(&self, key: &str, blue: &str) -> String {
        let spec = &self.reconciler.declared().groups[key];
        reconciler::green_target_group(&spec.target_groups, blue).to_string()
    }
}
