//! The commit of `apply`: one SQLite transaction for everything it declares — the resources, new
//! services' task definitions, the deletions, and (through the pipelines' shell, which the engine
//! owns, in the same transaction) the repositories and pipelines. What follows from it for task sets and tasks is the
//! reconciler's, which the engine hands the stored declaration after the commit.

use model::Timestamp;

use super::pipelines::{ci_error, ci_plan_item};
use super::plan::Plan;
use super::task_definitions::{ServiceTaskDefinitions, register_if_changed};
use crate::declared::*;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::state;

/// Stores `plan` in one transaction. The pipelines' plan items, known only now, are added to the
/// plan.
pub(super) fn commit(
    engine: &mut Engine,
    file: &config::CutoverFile,
    pipelines: &[config::PipelineDecl],
    plan: &mut Plan,
    task_definitions: &ServiceTaskDefinitions,
    now: Timestamp,
) -> Result<(), ApiError> {
    let planned = &*plan;
    let write = |tx: &store::Tx<'_>| write(tx, planned, task_definitions, now);
    match &mut engine.pipelines {
        Some(shell) => {
            let (items, ()) =
                shell.apply_with(&file.repositories, pipelines, write).map_err(ci_error)?;
            plan.items.extend(items.into_iter().map(ci_plan_item));
            Ok(())
        }
        None => Ok(engine.store.transaction(write)?),
    }
}

fn write(
    tx: &store::Tx<'_>,
    plan: &Plan,
    task_definitions: &ServiceTaskDefinitions,
    now: Timestamp,
) -> store::Result<()> {
    let ms = now.as_millis();
    for (kind, name, body) in &plan.writes {
        tx.resource_put(kind, name, body, ms)?;
    }
    for service_name in &plan.revisions_to_register {
        let (td, _) = &task_definitions[service_name];
        register_revision(tx, service_name, td, now)?;
    }
    plan.removed.delete(tx)
}

/// Registers a new service's task definition (unless identical to the family's latest) and
/// completes the service's document with its revision.
fn register_revision(
    tx: &store::Tx<'_>,
    service_name: &str,
    td: &config::TaskDefinition,
    now: Timestamp,
) -> store::Result<()> {
    let (revision, _) = register_if_changed(tx, td, now)?;
    let mut doc: ServiceDoc = state::doc(tx, KIND_SERVICE, service_name)?
        .ok_or_else(|| store::Error::Conflict(format!("service {service_name} vanished")))?;
    doc.task_definition = format!("{}:{revision}", td.family);
    tx.resource_put(KIND_SERVICE, service_name, &serde_json::to_string(&doc)?, now.as_millis())
}
