//! The commit of `apply`: one SQLite transaction for everything it changes — the declared
//! resources, new services' task definitions and first task sets, the deletions, and (through
//! `ci`, in the same transaction) the repositories and pipelines.

use model::Timestamp;
use store::TaskSetRow;

use super::pipelines::{ci_error, ci_plan_item};
use super::plan::Plan;
use super::task_definitions::{ServiceTaskDefinitions, register_if_changed};
use crate::declared::*;
use crate::deployment;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::state;

/// Stores `plan` in one transaction; returns the tasks the deletions took out of service. The
/// pipelines' plan items, known only now, are added to the plan.
pub(super) fn commit(
    engine: &Engine,
    file: &spec::CutoverFile,
    pipelines: &[spec::PipelineDecl],
    plan: &mut Plan,
    task_definitions: &ServiceTaskDefinitions,
    now: Timestamp,
) -> Result<Vec<store::TaskRow>, ApiError> {
    let planned = &*plan;
    let write = |tx: &store::Tx<'_>| write(tx, file, planned, task_definitions, now);
    match &engine.ci {
        Some(ci) => {
            let (items, drained) =
                ci.apply_with(&file.repositories, pipelines, write).map_err(ci_error)?;
            plan.items.extend(items.into_iter().map(ci_plan_item));
            Ok(drained)
        }
        None => Ok(engine.store.transaction(write)?),
    }
}

fn write(
    tx: &store::Tx<'_>,
    file: &spec::CutoverFile,
    plan: &Plan,
    task_definitions: &ServiceTaskDefinitions,
    now: Timestamp,
) -> store::Result<Vec<store::TaskRow>> {
    let ms = now.as_millis();
    for (kind, name, body) in &plan.writes {
        tx.resource_put(kind, name, body, ms)?;
    }
    for service_name in &plan.revisions_to_register {
        let (td, _) = &task_definitions[service_name];
        register_revision(tx, service_name, td, now)?;
    }
    for service in &file.services {
        let is_new = plan.new_services.contains(&service.name);
        put_task_sets(tx, &service.name, is_new, ms)?;
    }
    for group in &file.deployment_groups {
        refresh_primary_task_set(tx, group, ms)?;
    }
    plan.removed.delete(tx, now)
}

/// Registers a new service's task definition (unless identical to the family's latest) and
/// completes the service's document with its revision.
fn register_revision(
    tx: &store::Tx<'_>,
    service_name: &str,
    td: &spec::TaskDefinition,
    now: Timestamp,
) -> store::Result<()> {
    let (revision, _) = register_if_changed(tx, td, now)?;
    let mut doc: ServiceDoc = state::doc(tx, KIND_SERVICE, service_name)?
        .ok_or_else(|| store::Error::Conflict(format!("service {service_name} vanished")))?;
    doc.task_definition = format!("{}:{revision}", td.family);
    tx.resource_put(KIND_SERVICE, service_name, &serde_json::to_string(&doc)?, now.as_millis())
}

/// A new service's first task set; an existing service's live task sets take its desired count.
fn put_task_sets(tx: &store::Tx<'_>, service: &str, is_new: bool, ms: u64) -> store::Result<()> {
    let doc: ServiceDoc = state::doc(tx, KIND_SERVICE, service)?
        .ok_or_else(|| store::Error::Conflict(format!("service {service} vanished")))?;
    let sets = tx.task_set_list()?;
    // A service deleted and declared again while its old tasks still drain starts afresh.
    let has_live_set =
        sets.iter().any(|s| s.service == service && s.status != model::TaskSetStatus::Draining);
    if is_new && !has_live_set {
        return tx.task_set_put(&TaskSetRow {
            id: deployment::new_id("ts"),
            service: service.to_string(),
            task_definition: doc.task_definition.clone(),
            target_group: doc.load_balancer.as_ref().map(|lb| lb.target_group.clone()),
            status: model::TaskSetStatus::Primary,
            deployment_id: None,
            desired_count: doc.desired_count,
            created_at: ms,
            updated_at: ms,
        });
    }
    for mut set in sets
        .into_iter()
        .filter(|s| s.service == service && s.status != model::TaskSetStatus::Draining)
    {
        if set.desired_count != doc.desired_count {
            set.desired_count = doc.desired_count;
            set.updated_at = ms;
            tx.task_set_put(&set)?;
        }
    }
    Ok(())
}

/// A group that now deploys another service (one renamed: deleted and created) starts from that
/// service's task set.
fn refresh_primary_task_set(
    tx: &store::Tx<'_>,
    group: &spec::DeploymentGroupSpec,
    ms: u64,
) -> store::Result<()> {
    let key = format!("{}/{}", group.application, group.name);
    let mut state: GroupState = state::doc(tx, KIND_GROUP_STATE, &key)?.unwrap_or_default();
    let stale = match &state.primary_task_set {
        Some(id) => tx.task_set_get(id)?.is_none_or(|ts| {
            ts.service != group.service || ts.status == model::TaskSetStatus::Draining
        }),
        None => true,
    };
    if stale {
        state.primary_task_set = tx
            .task_set_list()?
            .into_iter()
            .find(|s| s.service == group.service && s.status == model::TaskSetStatus::Primary)
            .map(|s| s.id);
        tx.resource_put(KIND_GROUP_STATE, &key, &serde_json::to_string(&state)?, ms)?;
    }
    Ok(())
}
