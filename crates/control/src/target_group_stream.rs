//! `GET /v1/target-groups/{name}/stream`: one target group, live, as server-sent events —
//! `target_group` (as `GET /v1/target-groups/{name}` answers it, without the requests in
//! flight, which move with every request), `forwards` (every listener's default action and rule
//! that forwards to it, at what weight) and `targets` (every registered target with its ALB
//! health state, reason and description, and the task it is), each sent first and again as soon
//! as it changes. The engine wakes it on every change it writes and every health report that
//! moves (`Shared::changed`). The console's target group page follows it.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event, Sse};
use futures_util::Stream;
use routes::{Action, RouteTable, TargetHealth};
use serde::{Deserialize, Serialize};
use store::TaskRow;

use crate::api::TargetGroupView;
use crate::error::ApiError;
use crate::http::AppState;
use crate::state::Snapshot;

/// One listener action that forwards to the target group, as an ALB console lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardView {
    pub load_balancer: String,
    pub listener: String,
    pub port: u16,
    /// The rule's priority; `None` for the listener's default action.
    pub rule_priority: Option<u32>,
    /// This target group's weight in the action (0–999, as on ALB).
    pub weight: u16,
    /// Every weight of the action added up: this group gets `weight / total` of its requests.
    pub total_weight: u32,
}

impl ForwardView {
    /// This group's share of the action's requests, in whole percent.
    pub fn percent(&self) -> u32 {
        match self.total_weight {
            0 => 0,
            total => (u32::from(self.weight) * 100 + total / 2) / total,
        }
    }
}

/// The task a target is, when it is one (a target registered by hand is none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetTask {
    pub id: String,
    pub service: String,
    pub task_set: String,
    pub last_status: String,
}

/// A registered target: its ALB health, and the task it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetView {
    pub health: TargetHealth,
    pub task: Option<TargetTask>,
}

/// One target group as its page shows it.
pub struct TargetGroupState {
    pub target_group: TargetGroupView,
    pub forwards: Vec<ForwardView>,
    pub targets: Vec<TargetView>,
    /// The routing table version the forwards are of.
    pub routes_version: u64,
}

/// The target group `name`: its settings, what forwards to it, its targets' health and tasks.
pub fn target_group_state(state: &AppState, name: &str) -> Result<TargetGroupState, ApiError> {
    let snapshot = state.store.read(Snapshot::load)?;
    let doc =
        snapshot.target_groups.iter().find(|tg| tg.name == name).cloned().ok_or_else(|| {
            ApiError::not_found(format!(
                "no target group `{name}`; `cutover target-groups list` shows them"
            ))
        })?;
    let routes_version = *state.shared.routes_version.read().unwrap_or_else(|p| p.into_inner());
    let forwards = forwards_to(&snapshot.route_table(routes_version), name);
    let mut target_group = crate::http::target_group_view(state, doc);
    // Without the requests in flight, which move with every request.
    for target in &mut target_group.targets {
        target.in_flight = 0;
    }
    let targets = targets_with_tasks(&target_group.targets, &snapshot);
    Ok(TargetGroupState { target_group, forwards, targets, routes_version })
}

/// Every default action and rule of `table`'s listeners that forwards to `target_group`, by
/// load balancer, listener and priority (the default action last, as ALB evaluates it).
pub fn forwards_to(table: &RouteTable, target_group: &str) -> Vec<ForwardView> {
    let mut out = Vec::new();
    for (key, listener) in &table.listeners {
        let (load_balancer, listener_name) = key.split_once('/').unwrap_or(("", key));
        let actions = listener
            .rules
            .iter()
            .map(|rule| (Some(rule.priority), &rule.action))
            .chain([(None, &listener.action)]);
        for (rule_priority, action) in actions {
            let Action::Forward(forward) = action else { continue };
            let Some(this) = forward.target_groups.iter().find(|w| w.name == target_group) else {
                continue;
            };
            out.push(ForwardView {
                load_balancer: load_balancer.to_string(),
                listener: listener_name.to_string(),
                port: listener.bind.port(),
                rule_priority,
                weight: this.weight,
                total_weight: forward.target_groups.iter().map(|w| u32::from(w.weight)).sum(),
            });
        }
    }
    out
}

/// Each target with the task at its address, when a task of a task set bound to this target
/// group is (a task that stopped may leave its address to a newer one: the newest wins).
fn targets_with_tasks(targets: &[TargetHealth], snapshot: &Snapshot) -> Vec<TargetView> {
    let task_at = |target: &TargetHealth| -> Option<&TaskRow> {
        let addr = target.addr.to_string();
        snapshot
            .tasks
            .iter()
            .filter(|t| t.addr.as_deref() == Some(addr.as_str()))
            .max_by_key(|t| t.created_at)
    };
    targets
        .iter()
        .map(|health| TargetView {
            health: health.clone(),
            task: task_at(health).map(|t| TargetTask {
                id: t.id.clone(),
                service: t.service.clone(),
                task_set: t.task_set_id.clone(),
                last_status: t.last_status.to_string(),
            }),
        })
        .collect()
}

fn observe(state: &AppState, name: &str) -> Result<Vec<(&'static str, String, String)>, ApiError> {
    let seen = target_group_state(state, name)?;
    Ok(vec![
        ("target_group", String::new(), serde_json::to_string(&seen.target_group)?),
        ("forwards", String::new(), serde_json::to_string(&seen.forwards)?),
        ("targets", String::new(), serde_json::to_string(&seen.targets)?),
    ])
}

pub async fn target_group_stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    crate::pipeline_stream::follow(state, name, observe)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use routes::{ForwardAction, Listener, Rule, WeightedTargetGroup};

    use super::*;

    fn forward(groups: &[(&str, u16)]) -> Action {
        Action::Forward(ForwardAction::weighted(
            groups
                .iter()
                .map(|(name, weight)| WeightedTargetGroup {
                    name: name.to_string(),
                    weight: *weight,
                })
                .collect(),
        ))
    }

    fn listener(port: u16, action: Action, rules: Vec<Rule>) -> Listener {
        Listener {
            bind: ([127, 0, 0, 1], port).into(),
            tls: None,
            action,
            rules,
            idle_timeout_ms: None,
            limits: Default::default(),
        }
    }

    #[test]
    fn forwards_name_each_rule_and_default_action_with_the_group_s_weight_and_share() {
        let api_rule = Rule {
            priority: 10,
            conditions: vec![routes::rules::Condition::PathPattern {
                values: vec!["/api/*".into()],
            }],
            action: forward(&[("blue", 80), ("green", 20)]),
        };
        let table = RouteTable {
            listeners: BTreeMap::from([
                (
                    "web/prod".to_string(),
                    listener(8080, forward(&[("blue", 1), ("green", 0)]), vec![api_rule]),
                ),
                ("web/test".to_string(), listener(8081, forward(&[("green", 1)]), vec![])),
            ]),
            ..RouteTable::default()
        };
        let seen: Vec<(String, Option<u32>, u16, u32)> = forwards_to(&table, "green")
            .iter()
            .map(|f| {
                (
                    format!("{}/{}:{}", f.load_balancer, f.listener, f.port),
                    f.rule_priority,
                    f.weight,
                    f.percent(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("web/prod:8080".to_string(), Some(10), 20, 20),
                ("web/prod:8080".to_string(), None, 0, 0),
                ("web/test:8081".to_string(), None, 1, 100),
            ]
        );
        assert_eq!(forwards_to(&table, "other"), Vec::new());
    }
}
