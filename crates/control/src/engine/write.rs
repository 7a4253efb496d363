//! What one decision writes, in one transaction, before any of its effects is performed: the
//! reconciler's whole state (`persisted::save`), the rows the API reads that changed with it
//! (`project`), and the history its effects make (deployment events, retired task sets with their
//! last tasks, closed deployments). A transaction the store refuses leaves all of it unwritten,
//! and the executor then keeps its previous state.

use std::collections::BTreeMap;

use model::Timestamp;
use reconciler::{Effect, Reconciler};
use store::{DocumentStore, Tx};

use super::project::{DeploymentUpdate, Projection, project, task_row};
use crate::declared::{GroupState, KIND_RETIRED_TASK_SET};
use crate::deployment::DeploymentBody;
use crate::narrate::{Sides, effect_sentence};

/// Writes `state` and `effects`; returns the projection written, to compare the next one with.
/// `previous` is the projection written last (empty after a start: everything is written).
pub fn write(
    tx: &Tx<'_>,
    state: &Reconciler,
    previous: &Projection,
    effects: &[Effect],
    now: Timestamp,
) -> store::Result<Projection> {
    crate::persisted::save(tx, state, now)?;
    let next = project(state, now);
    write_changed_rows(tx, previous, &next, now)?;
    for effect in effects {
        record(tx, effect, now)?;
    }
    Ok(next)
}

fn write_changed_rows(
    tx: &Tx<'_>,
    previous: &Projection,
    next: &Projection,
    now: Timestamp,
) -> store::Result<()> {
    let old_sets: BTreeMap<&str, _> = previous.task_sets.iter().map(|ts| (&*ts.id, ts)).collect();
    for ts in &next.task_sets {
        let same = old_sets.get(&*ts.id).is_some_and(|old| {
            store::TaskSetRow { updated_at: ts.updated_at, ..(*old).clone() } == *ts
        });
        if !same {
            tx.task_set_put(ts)?;
        }
    }
    let old_tasks: BTreeMap<&str, _> = previous.tasks.iter().map(|t| (&*t.id, t)).collect();
    for task in next.tasks.iter().filter(|t| old_tasks.get(&*t.id) != Some(t)) {
        tx.task_put(task)?;
    }
    for (key, group_state) in &next.group_states {
        if previous.group_states.get(key) != Some(group_state) {
            tx.doc_put::<GroupState>(key, group_state, now.as_millis())?;
        }
    }
    let old_deployments: BTreeMap<&str, _> =
        previous.deployments.iter().map(|d| (&*d.id, d)).collect();
    for update in next.deployments.iter().filter(|d| old_deployments.get(&*d.id) != Some(d)) {
        update_deployment(tx, update, now)?;
    }
    Ok(())
}

/// Writes the state's part of a deployment into its stored row (which its creation wrote).
fn update_deployment(tx: &Tx<'_>, update: &DeploymentUpdate, now: Timestamp) -> store::Result<()> {
    let id = &update.id;
    let mut row = tx
        .deployment_get(id)?
        .ok_or_else(|| store::Error::Conflict(format!("deployment {id} has no row")))?;
    let mut body: DeploymentBody = serde_json::from_str(&row.body)?;
    update.apply_to(&mut row, &mut body, now)?;
    tx.deployment_put(&row)
}

/// The history an effect makes; effects that leave the process are performed after the commit.
fn record(tx: &Tx<'_>, effect: &Effect, now: Timestamp) -> store::Result<()> {
    let at = now.as_millis();
    match effect {
        Effect::Rollout { deployment_id, effect } => {
            let Some(row) = tx.deployment_get(deployment_id)? else { return Ok(()) };
            let body: DeploymentBody = serde_json::from_str(&row.body)?;
            let sides = Sides {
                blue_target_group: &body.blue_target_group,
                green_target_group: &body.green_target_group,
            };
            tx.event_append(deployment_id, at, "effect", &effect_sentence(effect, sides)).map(drop)
        }
        Effect::Event { deployment_id, kind, message } => {
            tx.event_append(deployment_id, at, kind.as_str(), message).map(drop)
        }
        Effect::TaskSetRetired { task_set, tasks } => {
            // Its stopped tasks stay listed: they keep naming its task definition.
            for task in tasks {
                tx.task_put(&task_row(task, task_set))?;
            }
            let td = serde_json::to_string(&task_set.task_definition)?;
            tx.resource_put(KIND_RETIRED_TASK_SET, &task_set.id, &td, at)?;
            tx.task_set_delete(&task_set.id)
        }
        Effect::DeploymentClosed(deployment) => {
            update_deployment(tx, &DeploymentUpdate::of(deployment), now)
        }
        Effect::StartTask(_)
        | Effect::StopTask { .. }
        | Effect::RemoveTask { .. }
        | Effect::RunHook { .. }
        | Effect::CancelHook { .. }
        | Effect::PushRoutes { .. }
        | Effect::ShutDown => Ok(()),
    }
}
