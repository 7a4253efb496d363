//! What the data plane must serve, as far as the reconciler decides it: how each deployment
//! group routes, and which tasks are targets. The shell turns it into a `routes::RouteTable`
//! with the declared listeners and target groups.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use model::Timestamp;
use serde::{Deserialize, Serialize};

use crate::Effect;
use crate::state::Reconciler;

/// A failed push is tried again after this long.
pub const PUSH_RETRY: Duration = Duration::from_millis(500);

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingView {
    /// By `application/group`.
    pub groups: BTreeMap<String, GroupRoute>,
    /// Addresses of tasks that should receive traffic, by target group.
    pub targets: BTreeMap<String, Vec<SocketAddr>>,
}

/// How one deployment group routes right now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRoute {
    /// The target group blue (the primary task set) is in.
    pub blue_target_group: String,
    pub production_green_percent: u8,
    pub test_to_green: bool,
    /// The share of production copied to green: an active deployment's shadow phase. A view
    /// that differs only in it is a new table to push.
    #[serde(default, skip_serializing_if = "crate::state::is_zero")]
    pub mirror_percent: u8,
    /// A deployment of the group is in progress (a leftover routes, but offers no preview).
    pub deployment_in_progress: bool,
}

impl Reconciler {
    /// The view the data plane should serve now.
    pub fn routing_view(&self) -> RoutingView {
        let mut view = RoutingView::default();
        for (key, spec) in &self.declared.groups {
            let group = self.groups.get(key).cloned().unwrap_or_default();
            let deployment = group
                .active_deployment
                .as_ref()
                .or(group.leftover_deployment.as_ref())
                .and_then(|id| self.deployments.get(id));
            let route = match deployment {
                Some(d) => GroupRoute {
                    blue_target_group: d.blue_target_group.clone(),
                    production_green_percent: d.production_green_percent,
                    test_to_green: d.test_to_green,
                    mirror_percent: if group.active_deployment.is_some() {
                        d.mirror_percent
                    } else {
                        0
                    },
                    deployment_in_progress: group.active_deployment.is_some(),
                },
                None => GroupRoute {
                    blue_target_group: self.blue_target_group(key, spec),
                    production_green_percent: 0,
                    test_to_green: false,
                    mirror_percent: 0,
                    deployment_in_progress: false,
                },
            };
            view.groups.insert(key.clone(), route);
        }
        for task in self.tasks.values().filter(|t| t.is_serving()) {
            let tg = self.task_sets.get(&task.task_set_id).and_then(|ts| ts.target_group.clone());
            if let (Some(tg), Some(addr)) = (tg, task.addr) {
                view.targets.entry(tg).or_default().push(addr);
            }
        }
        for addrs in view.targets.values_mut() {
            addrs.sort();
        }
        view
    }

    /// Blue's target group when no deployment routes: the primary task set's, else the
    /// service's, else the group's first.
    pub(crate) fn blue_target_group(&self, key: &str, spec: &crate::GroupSpec) -> String {
        self.groups
            .get(key)
            .and_then(|g| g.primary_task_set.as_ref())
            .and_then(|id| self.task_sets.get(id))
            .and_then(|ts| ts.target_group.clone())
            .or_else(|| {
                self.declared.services.get(&spec.service).and_then(|s| s.target_group.clone())
            })
            .unwrap_or_else(|| spec.target_groups[0].clone())
    }

    /// Orders a new version when the view changed (or a push failed and its retry is due).
    pub(crate) fn push_routes(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        if self.routes.retry_at.is_some_and(|at| now < at) {
            return;
        }
        let view = self.routing_view();
        if self.routes.ordered.as_ref() == Some(&view) {
            return;
        }
        self.routes.version += 1;
        self.routes.retry_at = None;
        self.routes.ordered = Some(view.clone());
        out.push(Effect::PushRoutes { version: self.routes.version, view });
    }

    /// The data plane did not take `version`: push the current view again shortly.
    pub(crate) fn routes_failed(&mut self, version: u64, now: Timestamp) {
        if version == self.routes.version {
            self.routes.ordered = None;
            self.routes.retry_at = Some(now.saturating_add(PUSH_RETRY));
        }
    }

    /// Whether the health report describes the table last ordered (or a later one).
    pub(crate) fn health_fresh(&self) -> bool {
        self.health.version >= self.routes.version
    }
}
