//! `cutover apply`, task-definition registration and deployment creation: everything that turns
//! user files into stored state. Each validates all of its input before writing anything, and
//! writes in one transaction.
//!
//! `apply` follows Terraform's and CloudFormation's semantics: it creates and updates what the
//! file declares and deletes what it created that the file no longer declares (except hosted
//! repositories, whose git data it keeps), refusing with 409 when a deletion would cut a
//! deployment short. See "What `apply` does" in `docs/cutover-yaml.md`.
//!
//! The steps, each in its own module: the file is parsed (`parsed`, which keeps the last parse:
//! a table the data plane checks first means two passes over the same text), certificate paths are made relative to the file (`paths`),
//! the task definitions the services name are resolved
//! (`task_definitions`), the file is planned against the store (`plan`, `removals`,
//! `pipelines`), the data plane validates the candidate routing table when only it can (`check`:
//! a new listener's address, certificates; asked by the API handler outside the engine's loop,
//! which then applies again: see [`ApplyStep`]), the plan is committed
//! in one transaction (`commit`), and only then does the engine push the table it now stores.

mod check;
mod commit;
mod deploy;
mod parsed;
mod paths;
mod pipelines;
mod plan;
mod removals;
mod task_definitions;

use std::collections::BTreeSet;

use model::Timestamp;
use routes::RouteTable;
use serde::{Deserialize, Serialize};

pub use deploy::{create_deployment, create_deployment_with, image_definitions_deployment};
pub use parsed::LastParsed;
pub use task_definitions::{register_task_definition, split_revision, task_spec};

use crate::api::{self, ApplyResponse, PlanItem};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::state::Snapshot;

/// What one pass of `apply` in the engine's loop came to.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyStep {
    Applied(ApplyResponse),
    /// The data plane must check this routing table first (listeners' ports free, certificates
    /// load); the caller asks it, outside the loop, and applies again with it `validated`. With
    /// it, the load balancers whose listeners the swarm's nodes serve, which they check.
    Validate(Box<RouteTable>, BTreeSet<String>),
}

/// Plans the file and, when the data plane serves or has checked the routing table it leads to,
/// commits it. Never waits for the data plane: a table it must check first is handed back, so a
/// rollback never queues behind a slow or hung data plane's answer.
pub fn apply(
    engine: &mut Engine,
    request: api::ApplyRequest,
    validated: Option<&RouteTable>,
    now: Timestamp,
) -> Result<ApplyStep, ApiError> {
    let file_name = &request.file.name;
    let parsed = engine
        .last_parsed
        .parse(file_name, &request.file.text)
        .map_err(|errors| ApiError::invalid_file(file_name, &errors))?;
    let mut notes: Vec<String> = parsed.notes.iter().map(|d| d.to_string()).collect();
    let mut file = parsed.value;
    // First: a listener's default certificate from ACME is absolute in the data directory.
    paths::acme_in_the_data_dir(&mut file, &engine.data_dir);
    paths::certificates_relative_to_the_file(&mut file, &request)?;
    let task_definitions = task_definitions::resolve_for_services(&engine.store, &request, &file)?;
    // The state and the bodies the plan compares with, in one transaction.
    let (current, stored) =
        engine.store.read(|tx| Ok((Snapshot::load(tx)?, plan::Stored::load(tx)?)))?;
    let mut plan = plan::plan(
        &engine.store,
        &stored,
        &file,
        file_name,
        &current,
        &task_definitions,
        &mut notes,
    )?;
    let pipelines = pipelines::with_absolute_sources(&file, request.file.base_dir.as_deref());
    let pipeline_items = pipelines::plan(engine, &file, &pipelines)?;
    if request.dry_run {
        plan.items.extend(pipeline_items);
        let response = ApplyResponse { plan: in_plan_order(plan.items), applied: false, notes };
        return Ok(ApplyStep::Applied(response));
    }

    let table = plan.candidate.route_table(0);
    if !engine.serves_routes(&table) && validated != Some(&table) {
        let cluster = crate::fleet::decide::cluster_load_balancers(
            &plan.candidate.services,
            &plan.candidate.groups,
        );
        if check::needs_data_plane(engine.served_routes(), &table, &cluster) {
            return Ok(ApplyStep::Validate(Box::new(table), cluster));
        }
        check::validate(&table).map_err(refused)?;
    }
    commit::commit(engine, &file, &pipelines, &mut plan, &task_definitions, now)?;
    {
        let mut monitor = engine.shared.monitor.lock().unwrap_or_else(|p| p.into_inner());
        for name in &plan.removed.alarms {
            monitor.forget_alarm(name);
        }
    }
    // Stored: the reconciler takes what is declared now (task sets for new services, counts,
    // deleted services drained) and pushes the new routing table, only now.
    // What the plan built is what the store now holds: the reconciler is declared it without
    // reading the whole state back.
    let committed = engine.store.read(|tx| plan.committed(tx, current.task_sets))?;
    engine.declare_stored(&committed)?;
    Ok(ApplyStep::Applied(ApplyResponse { plan: in_plan_order(plan.items), applied: true, notes }))
}

/// The data plane checks `table` (listeners' ports free, certificates load) and applies nothing:
/// the engine pushes a table only once the store holds it, so a table the store never had (its
/// commit failed: a full disk, a crash) is never served. The swarm's half (the listeners of the
/// `cluster` load balancers) is checked by every answering node's load balancer instead.
pub async fn validate_routes(
    lb: &crate::lb::LbClient,
    table: &RouteTable,
    cluster: &BTreeSet<String>,
) -> Result<(), ApiError> {
    let Some(fleet) = lb.fleet() else {
        return lb.validate_routes(table).await.map_err(|err| refused(format!("{err:#}")));
    };
    let split = crate::fleet::decide::split(table, cluster);
    lb.validate_routes(&split.local).await.map_err(|err| refused(format!("{err:#}")))?;
    match &split.cluster {
        Some(nodes) => fleet.validate(nodes).await.map_err(refused),
        None => Ok(()),
    }
}

/// The data plane's refusal of the table an `apply` leads to, whoever found it.
fn refused(err: String) -> ApiError {
    ApiError::bad_request(format!(
        "the load balancer refused the new configuration, nothing was changed: {err}"
    ))
}

/// Deletions last, dependents first (pipelines deploy to groups, groups use services, services
/// use target groups…); the rest in the order of the file's sections.
fn in_plan_order(mut plan: Vec<PlanItem>) -> Vec<PlanItem> {
    plan.sort_by_key(|item| match (item.action.as_str(), item.kind.as_str()) {
        ("delete", "pipeline") => 1,
        ("delete", _) => 2,
        _ => 0,
    });
    plan
}
