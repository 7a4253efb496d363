//! A consistent snapshot of the control plane's state, loaded from the store in one transaction,
//! and the questions the engine asks of it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use store::{Document, DocumentStore, TaskRow, TaskSetRow, Tx};

use crate::declared::*;
use crate::deployment::DeploymentBody;
use crate::routing::GroupRouting;

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub load_balancers: Vec<LoadBalancerDoc>,
    pub target_groups: Vec<TargetGroupDoc>,
    pub services: Vec<ServiceDoc>,
    pub deployment_configs: Vec<DeploymentConfigDoc>,
    pub groups: Vec<DeploymentGroupDoc>,
    pub hooks: Vec<HookDoc>,
    pub group_states: BTreeMap<String, GroupState>,
    pub task_sets: Vec<TaskSetRow>,
    pub tasks: Vec<TaskRow>,
    /// Bodies of deployments that route traffic now: active ones and leftovers.
    pub routing_deployments: BTreeMap<String, DeploymentBody>,
}

/// Every stored document of `T`'s kind, read through the versioned store (an older version is
/// upgraded, a newer one refused). `kind` is `T::KIND`, kept so that callers read as before.
pub fn docs<T: Document>(tx: &Tx<'_>, kind: &str) -> store::Result<Vec<T>> {
    debug_assert_eq!(kind, T::KIND);
    Ok(tx.doc_list::<T>()?.into_iter().map(|(_, doc)| doc).collect())
}

/// One stored document, as [`docs`] reads them.
pub fn doc<T: Document>(tx: &Tx<'_>, kind: &str, name: &str) -> store::Result<Option<T>> {
    debug_assert_eq!(kind, T::KIND);
    tx.doc_get::<T>(name)
}

/// Tasks kept in history after they stop.
pub const STOPPED_TASKS_KEPT: u32 = 200;

impl Snapshot {
    pub fn load(tx: &Tx<'_>) -> store::Result<Snapshot> {
        let mut snapshot = Snapshot {
            load_balancers: docs(tx, KIND_LOAD_BALANCER)?,
            target_groups: docs(tx, KIND_TARGET_GROUP)?,
            services: docs(tx, KIND_SERVICE)?,
            deployment_configs: docs(tx, KIND_DEPLOYMENT_CONFIG)?,
            groups: docs(tx, KIND_DEPLOYMENT_GROUP)?,
            hooks: docs(tx, KIND_HOOK)?,
            group_states: tx
                .resource_list(KIND_GROUP_STATE)?
                .into_iter()
                .map(|(name, body)| Ok((name, serde_json::from_str(&body)?)))
                .collect::<store::Result<_>>()?,
            task_sets: tx.task_set_list()?,
            tasks: tx.task_list(0)?,
            routing_deployments: BTreeMap::new(),
        };
        let routing_ids: Vec<String> = snapshot
            .group_states
            .values()
            .flat_map(|s| s.active_deployment.iter().chain(s.leftover_deployment.iter()))
            .cloned()
            .collect();
        for id in routing_ids {
            if let Some(row) = tx.deployment_get(&id)? {
                snapshot.routing_deployments.insert(id, serde_json::from_str(&row.body)?);
            }
        }
        Ok(snapshot)
    }

    pub fn service(&self, name: &str) -> Option<&ServiceDoc> {
        self.services.iter().find(|s| s.name == name)
    }

    pub fn task_set(&self, id: &str) -> Option<&TaskSetRow> {
        self.task_sets.iter().find(|t| t.id == id)
    }

    pub fn group(&self, key: &str) -> Option<&DeploymentGroupDoc> {
        self.groups.iter().find(|g| g.key() == key)
    }

    pub fn group_of_service(&self, service: &str) -> Option<&DeploymentGroupDoc> {
        self.groups.iter().find(|g| g.service == service)
    }

    /// The address a listener is reachable on, as a URL (for hooks).
    pub fn listener_url(&self, r: &ListenerRefDoc) -> Option<String> {
        let lb = self.load_balancers.iter().find(|lb| lb.name == r.load_balancer)?;
        let listener = lb.listeners.iter().find(|l| l.name == r.listener)?;
        let scheme = if listener.tls.is_some() { "https" } else { "http" };
        let host = if listener.bind.ip().is_unspecified() {
            SocketAddr::new([127, 0, 0, 1].into(), listener.bind.port())
        } else {
            listener.bind
        };
        Some(format!("{scheme}://{host}"))
    }

    /// How every deployment group routes now.
    pub fn group_routings(&self) -> Vec<GroupRouting> {
        self.groups
            .iter()
            .map(|group| {
                let state = self.group_states.get(&group.key()).cloned().unwrap_or_default();
                let deployment = state
                    .active_deployment
                    .as_ref()
                    .or(state.leftover_deployment.as_ref())
                    .and_then(|id| self.routing_deployments.get(id));
                if let Some(body) = deployment {
                    return GroupRouting {
                        group: group.clone(),
                        blue_target_group: body.blue_target_group.clone(),
                        production_green_percent: body.route_production_green_percent,
                        test_to_green: body.route_test_to_green,
                        // A shadow phase belongs to a deployment under way.
                        mirror_percent: if state.active_deployment.is_some() {
                            body.route_mirror_percent
                        } else {
                            0
                        },
                        deployment_in_progress: state.active_deployment.is_some(),
                    };
                }
                let blue = state
                    .primary_task_set
                    .as_ref()
                    .and_then(|id| self.task_set(id))
                    .and_then(|ts| ts.target_group.clone())
                    .or_else(|| {
                        self.service(&group.service)
                            .and_then(|s| s.load_balancer.as_ref())
                            .map(|lb| lb.target_group.clone())
                    })
                    .unwrap_or_else(|| group.target_groups[0].clone());
                GroupRouting {
                    group: group.clone(),
                    blue_target_group: blue,
                    production_green_percent: 0,
                    test_to_green: false,
                    mirror_percent: 0,
                    deployment_in_progress: false,
                }
            })
            .collect()
    }

    /// Addresses of tasks that should receive traffic, by target group: running, meant to run,
    /// with an address, in a task set bound to a target group.
    pub fn task_targets(&self) -> BTreeMap<String, Vec<SocketAddr>> {
        let mut out: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
        for task in &self.tasks {
            if task.last_status != model::TaskStatus::Running
                || task.desired_status != model::DesiredStatus::Running
            {
                continue;
            }
            let Some(addr) = task.addr.as_deref().and_then(|a| a.parse().ok()) else { continue };
            let Some(tg) = self.task_set(&task.task_set_id).and_then(|ts| ts.target_group.clone())
            else {
                continue;
            };
            out.entry(tg).or_default().push(addr);
        }
        out
    }

    pub fn route_table(&self, version: u64) -> routes::RouteTable {
        crate::routing::compute(
            version,
            &self.load_balancers,
            &self.target_groups,
            &self.group_routings(),
            &self.task_targets(),
        )
    }
}
