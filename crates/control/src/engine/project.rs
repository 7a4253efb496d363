//! The rows the API and the CLI read, as the reconciler's state implies them: a pure function of
//! the state, so that the executor writes them in the transaction that saves the state, and a
//! data directory's rows and its state can never tell two stories.
//!
//! The state holds what is alive (task sets and their tasks, deployments that are active or still
//! route, every group's bookkeeping); the rows also keep history (stopped tasks of retired task
//! sets, finished deployments), which the executor writes from the effects that end them
//! (`TaskSetRetired`, and `DeploymentClosed` through [`DeploymentUpdate::of`]) and never from
//! here. A deployment row also holds what only its creation knew (hooks, container,
//! description): the projection updates the part the state owns, in the stored row.

use std::collections::BTreeMap;

use model::Timestamp;
use reconciler::Reconciler;
use rollout::Rollout;
use store::{DeploymentRow, TaskRow, TaskSetRow};

use crate::declared::GroupState;
use crate::deployment::DeploymentBody;

/// Every row the state implies, written with `now` as their update time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Projection {
    pub task_sets: Vec<TaskSetRow>,
    pub tasks: Vec<TaskRow>,
    /// By `application/group`.
    pub group_states: BTreeMap<String, GroupState>,
    pub deployments: Vec<DeploymentUpdate>,
}

/// The part of a deployment's row and body that the state owns.
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentUpdate {
    pub id: String,
    pub machine: Rollout,
    pub green_task_set: Option<String>,
    pub production_green_percent: u8,
    pub test_to_green: bool,
    pub mirror_percent: u8,
    pub green_was_healthy: bool,
    pub green_failure_reported: bool,
    /// Rolled back after it finished (a leftover rolled back by request).
    pub rolled_back_later: bool,
}

pub fn project(state: &Reconciler, now: Timestamp) -> Projection {
    let task_sets = state.task_sets().map(|ts| task_set_row(ts, now)).collect();
    // Every task's task set is in the state: a retired task set's tasks leave it with it.
    let tasks = state
        .tasks()
        .filter_map(|task| Some(task_row(task, state.task_set(&task.task_set_id)?)))
        .collect();
    let group_states = state
        .groups()
        .map(|(key, group)| {
            let group_state = GroupState {
                primary_task_set: group.primary_task_set.clone(),
                active_deployment: group.active_deployment.clone(),
                leftover_deployment: group.leftover_deployment.clone(),
            };
            (key.to_string(), group_state)
        })
        .collect();
    let deployments = state.deployments().map(DeploymentUpdate::of).collect();
    Projection { task_sets, tasks, group_states, deployments }
}

fn task_set_row(ts: &reconciler::TaskSet, now: Timestamp) -> TaskSetRow {
    TaskSetRow {
        id: ts.id.clone(),
        service: ts.service.clone(),
        task_definition: ts.task_definition.clone(),
        target_group: ts.target_group.clone(),
        status: ts.status,
        deployment_id: ts.deployment_id.clone(),
        desired_count: ts.desired_count,
        created_at: ts.created_at.as_millis(),
        updated_at: now.as_millis(),
    }
}

pub fn task_row(task: &reconciler::Task, ts: &reconciler::TaskSet) -> TaskRow {
    TaskRow {
        id: task.id.clone(),
        task_set_id: task.task_set_id.clone(),
        service: ts.service.clone(),
        runtime: ts.runtime,
        last_status: task.last_status,
        desired_status: task.desired_status,
        health: task.health,
        handle: task.handle.clone(),
        addr: task.addr.map(|addr| addr.to_string()),
        stop_at: task.stop_at.map(Timestamp::as_millis),
        stopped_reason: task.stopped_reason.clone(),
        created_at: task.created_at.as_millis(),
        started_at: task.started_at.map(Timestamp::as_millis),
        stopped_at: task.stopped_at.map(Timestamp::as_millis),
    }
}

impl DeploymentUpdate {
    /// The state's part of a deployment: one it holds, or one that just left it
    /// (`Effect::DeploymentClosed`).
    pub fn of(deployment: &reconciler::Deployment) -> DeploymentUpdate {
        DeploymentUpdate {
            id: deployment.id.clone(),
            machine: deployment.machine.clone(),
            green_task_set: deployment.green_task_set.clone(),
            production_green_percent: deployment.production_green_percent,
            test_to_green: deployment.test_to_green,
            mirror_percent: deployment.mirror_percent,
            green_was_healthy: deployment.green_was_healthy,
            green_failure_reported: deployment.green_failure_reported,
            rolled_back_later: deployment.rolled_back_later,
        }
    }

    /// Writes the state's part into the stored row and its body: status, machine, routing, green,
    /// and once finished its outcome and completion time.
    pub fn apply_to(
        &self,
        row: &mut DeploymentRow,
        body: &mut DeploymentBody,
        now: Timestamp,
    ) -> serde_json::Result<()> {
        body.green_task_set.clone_from(&self.green_task_set);
        body.route_production_green_percent = self.production_green_percent;
        body.route_test_to_green = self.test_to_green;
        body.route_mirror_percent = self.mirror_percent;
        body.green_was_healthy = self.green_was_healthy;
        body.green_failure_reported = self.green_failure_reported;
        let machine = &self.machine;
        row.status = machine.status().as_str().to_string();
        row.machine = serde_json::to_string(machine)?;
        row.updated_at = now.as_millis();
        if let Some(outcome) = machine.outcome() {
            body.rolled_back = outcome.rolled_back;
            if let Some((code, message)) = &outcome.error {
                body.error_code = Some(code.as_str().to_string());
                body.error_message = Some(message.clone());
            }
            row.completed_at.get_or_insert(now.as_millis());
        }
        body.rolled_back |= self.rolled_back_later;
        row.body = serde_json::to_string(body)?;
        Ok(())
    }
}
