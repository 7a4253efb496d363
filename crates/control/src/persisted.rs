//! The reconciler's state as the store keeps it: one versioned document (`store::Document`), and
//! for a data directory written by an older cutover, which kept that state as rows (task sets,
//! tasks, deployments and group states), the same state built from those rows.

use std::collections::BTreeMap;
use std::time::Duration;

use model::{RuntimeKind, Timestamp};
use reconciler::{ContainerHealth, Reconciler, Restored};
use serde::{Deserialize, Serialize};
use store::{Document, DocumentStore, TaskRow, TaskSetRow, Tx};

use crate::deployment::DeploymentBody;
use crate::state::Snapshot;

/// The one document the reconciler's state is stored as, under [`ReconcilerDoc::NAME`].
/// `reconciler::Reconciler` is another crate's type, so it is stored through this wrapper, which
/// reads and writes the same JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReconcilerDoc(pub Reconciler);

impl ReconcilerDoc {
    pub const NAME: &'static str = "state";
}

impl Document for ReconcilerDoc {
    const KIND: &'static str = "reconciler";
    const VERSION: u32 = reconciler::STATE_VERSION;
}

/// Why the reconciler's state could not be loaded; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(
        "deployment {id}: its stored state machine cannot be read by this build ({source}); run the cutover that wrote it"
    )]
    Machine {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "service {service}: unknown runtime `{found}` (this build runs `process`, `docker` and `swarm`); run the cutover that wrote it"
    )]
    UnknownRuntime { service: String, found: String },
}

/// The stored reconciler state, if this data directory has one.
pub fn load(tx: &Tx<'_>) -> store::Result<Option<Reconciler>> {
    Ok(tx.doc_get::<ReconcilerDoc>(ReconcilerDoc::NAME)?.map(|doc| doc.0))
}

/// Writes the reconciler's whole state; `now` is when.
pub fn save(tx: &Tx<'_>, state: &Reconciler, now: Timestamp) -> store::Result<()> {
    // Serializing borrows would avoid the clone, but `Document` is implemented on the wrapper.
    tx.doc_put(ReconcilerDoc::NAME, &ReconcilerDoc(state.clone()), now.as_millis())
}

/// The reconciler's state as an older cutover's rows describe it: declared services and groups,
/// task sets, tasks, and the deployments that are active or left over. `routes_version` is the
/// routing-table version the data plane serves; `id_salt` is drawn by the caller.
pub fn from_rows(
    tx: &Tx<'_>,
    id_salt: u64,
    routes_version: u64,
    now: Timestamp,
) -> Result<Reconciler, RestoreError> {
    let snapshot = Snapshot::load(tx)?;
    let mut checked = HealthChecked { tx, known: BTreeMap::new() };
    let declared = declared(&snapshot, &mut checked)?;
    let task_sets = snapshot
        .task_sets
        .iter()
        .map(|ts| task_set(ts, &snapshot, &declared, &mut checked))
        .collect::<Result<_, RestoreError>>()?;
    let mut deployments = Vec::new();
    for (id, body) in &snapshot.routing_deployments {
        let Some(row) = tx.deployment_get(id)? else { continue };
        deployments.push(deployment(id, body, &row.machine, &declared, &mut checked)?);
    }
    let tasks = snapshot.tasks.iter().map(task);
    let groups = snapshot
        .group_states
        .iter()
        .map(|(key, state)| {
            let group = reconciler::Group {
                primary_task_set: state.primary_task_set.clone(),
                active_deployment: state.active_deployment.clone(),
                leftover_deployment: state.leftover_deployment.clone(),
            };
            (key.clone(), group)
        })
        .collect();
    let restored = Restored {
        declared,
        task_sets,
        tasks: tasks.collect(),
        deployments,
        groups,
        routes_version,
    };
    Ok(Reconciler::restore(id_salt, restored, now))
}

/// What the reconciler's decisions need of what is declared now (`apply` stores it).
pub fn declared_from(tx: &Tx<'_>) -> Result<reconciler::Declared, RestoreError> {
    declared_of(tx, &Snapshot::load(tx)?)
}

/// What the reconciler's decisions need of what `snapshot` declares, when the caller holds the
/// stored state already (`apply` built it in its plan); the task definitions' health checks are
/// read from the store.
pub fn declared_of(tx: &Tx<'_>, snapshot: &Snapshot) -> Result<reconciler::Declared, RestoreError> {
    declared(snapshot, &mut HealthChecked { tx, known: BTreeMap::new() })
}

/// What the reconciler's decisions need of the declared resources.
fn declared(
    snapshot: &Snapshot,
    checked: &mut HealthChecked<'_, '_>,
) -> Result<reconciler::Declared, RestoreError> {
    let mut declared = reconciler::Declared::default();
    for service in &snapshot.services {
        let runtime =
            RuntimeKind::parse(&service.runtime).ok_or_else(|| RestoreError::UnknownRuntime {
                service: service.name.clone(),
                found: service.runtime.clone(),
            })?;
        let spec = reconciler::ServiceSpec {
            runtime,
            task_definition: service.task_definition.clone(),
            desired_count: service.desired_count,
            target_group: service.load_balancer.as_ref().map(|lb| lb.target_group.clone()),
            health_checked: checked.get(&service.task_definition)?,
        };
        declared.services.insert(service.name.clone(), spec);
    }
    for group in &snapshot.groups {
        let spec = reconciler::GroupSpec {
            service: group.service.clone(),
            target_groups: group.target_groups.clone(),
            alarms: group.alarms.clone(),
        };
        declared.groups.insert(group.key(), spec);
    }
    for tg in &snapshot.target_groups {
        let delay = Duration::from_millis(tg.deregistration_delay_ms);
        declared.deregistration_delays.insert(tg.name.clone(), delay);
    }
    Ok(declared)
}

fn task_set(
    row: &TaskSetRow,
    snapshot: &Snapshot,
    declared: &reconciler::Declared,
    checked: &mut HealthChecked<'_, '_>,
) -> Result<reconciler::TaskSet, RestoreError> {
    // The runtime its tasks run on; a task set with no task left takes its service's.
    let runtime = snapshot
        .tasks
        .iter()
        .find(|t| t.task_set_id == row.id)
        .map(|t| t.runtime)
        .or_else(|| declared.services.get(&row.service).map(|s| s.runtime))
        .unwrap_or(RuntimeKind::Process);
    Ok(reconciler::TaskSet {
        id: row.id.clone(),
        service: row.service.clone(),
        task_definition: row.task_definition.clone(),
        target_group: row.target_group.clone(),
        status: row.status,
        deployment_id: row.deployment_id.clone(),
        desired_count: row.desired_count,
        runtime,
        health_checked: checked.get(&row.task_definition)?,
        // A cutover that kept its rows rather than this state counted failures in memory only.
        failures: reconciler::FailureRecord::default(),
        created_at: Timestamp::from_millis(row.created_at),
    })
}

fn task(row: &TaskRow) -> reconciler::Task {
    reconciler::Task {
        id: row.id.clone(),
        task_set_id: row.task_set_id.clone(),
        last_status: row.last_status,
        desired_status: row.desired_status,
        health: row.health,
        // The runtime is asked again after a restart.
        container_health: ContainerHealth::Unknown,
        handle: row.handle.clone(),
        addr: row.addr.as_deref().and_then(|a| a.parse().ok()),
        stop_at: row.stop_at.map(Timestamp::from_millis),
        // Nor did it keep the version at which a draining task left the table.
        removed_at_version: None,
        stopped_reason: row.stopped_reason.clone(),
        created_at: Timestamp::from_millis(row.created_at),
        started_at: row.started_at.map(Timestamp::from_millis),
        stopped_at: row.stopped_at.map(Timestamp::from_millis),
    }
}

fn deployment(
    id: &str,
    body: &DeploymentBody,
    machine: &str,
    declared: &reconciler::Declared,
    checked: &mut HealthChecked<'_, '_>,
) -> Result<reconciler::Deployment, RestoreError> {
    let machine = serde_json::from_str(machine)
        .map_err(|source| RestoreError::Machine { id: id.to_string(), source })?;
    let group = format!("{}/{}", body.application, body.deployment_group);
    let alarms = match declared.groups.get(&group) {
        Some(spec) if !body.ignore_alarms => spec.alarms.clone(),
        _ => Vec::new(),
    };
    Ok(reconciler::Deployment {
        id: id.to_string(),
        group,
        machine,
        service: body.service.clone(),
        task_definition: body.task_definition.clone(),
        health_checked: checked.get(&body.task_definition)?,
        blue_task_set: body.blue_task_set.clone(),
        green_task_set: body.green_task_set.clone(),
        blue_target_group: body.blue_target_group.clone(),
        green_target_group: body.green_target_group.clone(),
        production_green_percent: body.route_production_green_percent,
        test_to_green: body.route_test_to_green,
        mirror_percent: body.route_mirror_percent,
        green_was_healthy: body.green_was_healthy,
        green_failure_reported: body.green_failure_reported,
        alarms,
        alarms_fed: Default::default(),
        rolled_back_later: false,
    })
}

/// Whether a task definition (`family:revision`) gives an essential container a health check,
/// read once per revision (revisions are immutable).
struct HealthChecked<'a, 'tx> {
    tx: &'a Tx<'tx>,
    known: BTreeMap<String, bool>,
}

impl HealthChecked<'_, '_> {
    fn get(&mut self, task_definition: &str) -> store::Result<bool> {
        if let Some(known) = self.known.get(task_definition) {
            return Ok(*known);
        }
        let row = match crate::apply::split_revision(task_definition) {
            Some((family, revision)) => self.tx.task_definition_get(&family, revision)?,
            None => None,
        };
        let checked = row
            .and_then(|row| serde_json::from_str::<config::TaskDefinition>(&row.body).ok())
            .is_some_and(|td| {
                td.container_definitions.iter().any(|c| c.essential && c.health_check.is_some())
            });
        self.known.insert(task_definition.to_string(), checked);
        Ok(checked)
    }
}

#[cfg(test)]
mod tests {
    use model::{DesiredStatus, TaskHealth, TaskSetStatus, TaskStatus};
    use reconciler::Effect;
    use rollout::{AutoRollback, Rollout, RolloutSpec};
    use store::{DeploymentRow, DocumentRow, Store};

    use super::*;
    use crate::declared::*;

    const T0: u64 = 1_700_000_000_000;

    /// web:1 without a container health check, web:2 with one, as `apply` and `deploy` register
    /// them.
    fn register_task_definitions(tx: &Tx<'_>) -> store::Result<()> {
        for (revision, check) in [(1, ""), (2, r#","healthCheck":{"command":["CMD","true"]}"#)] {
            let text = format!(
                r#"{{"family":"web","containerDefinitions":[{{"name":"web","image":"demo:{revision}","essential":true{check}}}]}}"#
            );
            let td = config::parse_task_definition("taskdef.json", &text).unwrap().value;
            tx.task_definition_register("web", &serde_json::to_string(&td)?, T0)?;
        }
        Ok(())
    }

    /// The declared resources as the cutover before versioned documents stored them (the
    /// quickstart's, from `documents/v0`), the group pointing at `group_state`.
    fn put_declared(tx: &Tx<'_>, group_state: &GroupState) -> store::Result<()> {
        let docs = [
            ("service", "web", include_str!("documents/v0/service.web.json")),
            (
                "deployment_group",
                "web/web-prod",
                include_str!("documents/v0/deployment_group.web.web-prod.json"),
            ),
            ("target_group", "web-blue", include_str!("documents/v0/target_group.web-blue.json")),
            ("target_group", "web-green", include_str!("documents/v0/target_group.web-green.json")),
        ];
        for (kind, name, body) in docs {
            let row = DocumentRow { name: name.into(), version: 0, body: body.trim_end().into() };
            tx.put_document_row(kind, &row, T0)?;
        }
        tx.resource_put(KIND_GROUP_STATE, "web/web-prod", &serde_json::to_string(group_state)?, T0)
    }

    fn blue_rows(tx: &Tx<'_>) -> store::Result<()> {
        tx.task_set_put(&TaskSetRow {
            id: "ts-blue".into(),
            service: "web".into(),
            task_definition: "web:1".into(),
            target_group: Some("web-blue".into()),
            status: TaskSetStatus::Primary,
            deployment_id: None,
            desired_count: 2,
            created_at: T0,
            updated_at: T0,
        })?;
        for (n, port) in [(1, 9001), (2, 9002)] {
            tx.task_put(&TaskRow {
                id: format!("t-blue-{n}"),
                task_set_id: "ts-blue".into(),
                service: "web".into(),
                runtime: RuntimeKind::Process,
                last_status: TaskStatus::Running,
                desired_status: DesiredStatus::Running,
                health: TaskHealth::Healthy,
                handle: Some(format!(r#"{{"pid":{port}}}"#)),
                addr: Some(format!("127.0.0.1:{port}")),
                stop_at: None,
                stopped_reason: None,
                created_at: T0,
                started_at: Some(T0 + 1_000),
                stopped_at: None,
            })?;
        }
        Ok(())
    }

    /// A deployment of web:2 as `cutover deploy` stored it a moment ago: its machine not yet
    /// driven, no green task set yet.
    fn deployment_row(id: &str) -> DeploymentRow {
        let spec = RolloutSpec {
            deployment_id: id.into(),
            routing: model::TrafficRouting::AllAtOnce,
            has_test_listener: true,
            hooks: Default::default(),
            ready_wait: None,
            termination_wait: Duration::from_secs(60),
            auto_rollback: AutoRollback { on_failure: true, ..Default::default() },
            install_timeout: rollout::INSTALL_TIMEOUT_DEFAULT,
            mirror: None,
        };
        let machine = Rollout::new(spec, Timestamp::from_millis(T0 + 5_000));
        let body = DeploymentBody {
            application: "web".into(),
            deployment_group: "web-prod".into(),
            service: "web".into(),
            task_definition: "web:2".into(),
            container_name: "web".into(),
            container_port: 8080,
            deployment_config: "CodeDeployDefault.ECSAllAtOnce".into(),
            routing: "AllAtOnce".into(),
            description: None,
            blue_task_set: "ts-blue".into(),
            green_task_set: None,
            blue_target_group: "web-blue".into(),
            green_target_group: "web-green".into(),
            hooks: Default::default(),
            route_production_green_percent: 0,
            route_test_to_green: false,
            route_mirror_percent: 0,
            green_was_healthy: false,
            green_failure_reported: false,
            error_code: None,
            error_message: None,
            rolled_back: false,
            ignore_alarms: false,
        };
        DeploymentRow {
            id: id.into(),
            application: "web".into(),
            deployment_group: "web-prod".into(),
            status: machine.status().as_str().into(),
            body: serde_json::to_string(&body).unwrap(),
            machine: serde_json::to_string(&machine).unwrap(),
            created_at: T0 + 5_000,
            updated_at: T0 + 5_000,
            completed_at: None,
        }
    }

    /// The rows an older cutover left in the middle of `deploy`: blue serving, the deployment
    /// just created.
    fn store_of_an_older_cutover_mid_deployment() -> Store {
        let store = Store::open_in_memory().unwrap();
        store
            .transaction(|tx| {
                register_task_definitions(tx)?;
                put_declared(
                    tx,
                    &GroupState {
                        primary_task_set: Some("ts-blue".into()),
                        active_deployment: Some("d-1".into()),
                        leftover_deployment: None,
                    },
                )?;
                blue_rows(tx)?;
                tx.deployment_put(&deployment_row("d-1"))
            })
            .unwrap();
        store
    }

    #[test]
    fn rows_of_an_older_cutover_become_the_reconciler_state_and_its_deployment_carries_on() {
        let store = store_of_an_older_cutover_mid_deployment();
        let now = Timestamp::from_millis(T0 + 6_000);
        let mut state = store.read(|tx| Ok(from_rows(tx, 0xabc, 7, now))).unwrap().unwrap();

        let service = &state.declared().services["web"];
        assert_eq!(
            (service.runtime, service.desired_count, service.target_group.as_deref()),
            (RuntimeKind::Process, 2, Some("web-blue"))
        );
        assert!(!service.health_checked, "web:1 has no container health check");
        assert_eq!(
            state.declared().groups["web/web-prod"].target_groups,
            ["web-blue", "web-green"]
        );
        assert_eq!(
            state.declared().deregistration_delays["web-blue"],
            Duration::from_millis(
                serde_json::from_str::<TargetGroupDoc>(include_str!(
                    "documents/v0/target_group.web-blue.json"
                ))
                .unwrap()
                .deregistration_delay_ms
            )
        );
        assert_eq!(state.routes_version(), 7);
        let blue = state.task_set("ts-blue").unwrap();
        assert_eq!((blue.status, blue.runtime), (TaskSetStatus::Primary, RuntimeKind::Process));
        let task = state.task("t-blue-1").unwrap();
        assert_eq!(task.addr, Some("127.0.0.1:9001".parse().unwrap()));
        assert_eq!(task.handle.as_deref(), Some(r#"{"pid":9001}"#));
        assert!(task.is_serving());
        let deployment = state.deployment("d-1").unwrap();
        assert_eq!(
            (deployment.group.as_str(), deployment.blue_target_group.as_str()),
            ("web/web-prod", "web-blue")
        );
        assert!(deployment.health_checked, "web:2 has a container health check");
        assert_eq!(state.group("web/web-prod").unwrap().active_deployment.as_deref(), Some("d-1"));

        // Carrying on: the deployment starts green (two tasks of web:2 in web-green, new ids),
        // and blue's running tasks are neither restarted nor stopped.
        let effects = state.resume(now);
        let started: Vec<_> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::StartTask(launch) => Some(launch.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(started.len(), 2, "{effects:#?}");
        for launch in &started {
            assert_eq!(launch.task_definition, "web:2");
            assert_eq!(launch.deployment_id.as_deref(), Some("d-1"));
            assert!(state.task(&launch.task_id).is_some());
            assert!(launch.task_id.starts_with("t-abc-"), "{}", launch.task_id);
        }
        let green = state.task_set(&started[0].task_set_id).unwrap();
        assert_eq!(green.target_group.as_deref(), Some("web-green"));
        assert!(
            !effects.iter().any(|e| matches!(e, Effect::StopTask { .. })),
            "nothing of blue is stopped: {effects:#?}"
        );
    }

    /// The rows of the data directory, as the API reads them.
    fn rows(store: &Store) -> (Vec<TaskSetRow>, Vec<TaskRow>, GroupState, DeploymentRow) {
        store
            .read(|tx| {
                let group_state = crate::state::doc(tx, KIND_GROUP_STATE, "web/web-prod")?;
                let deployment = tx.deployment_get("d-1")?.expect("d-1");
                Ok((tx.task_set_list()?, tx.task_list(0)?, group_state.expect("group"), deployment))
            })
            .unwrap()
    }

    #[test]
    fn the_rows_projected_from_the_state_restored_from_rows_are_those_rows() {
        let store = store_of_an_older_cutover_mid_deployment();
        let (task_sets, tasks, group_state, deployment) = rows(&store);
        let now = Timestamp::from_millis(T0 + 6_000);
        let state = store.read(|tx| Ok(from_rows(tx, 1, 3, now))).unwrap().unwrap();

        let projection = crate::engine::project::project(&state, now);
        let updated = |ts: &TaskSetRow| TaskSetRow { updated_at: now.as_millis(), ..ts.clone() };
        assert_eq!(projection.task_sets, task_sets.iter().map(updated).collect::<Vec<_>>());
        assert_eq!(projection.tasks, tasks);
        assert_eq!(projection.group_states, BTreeMap::from([("web/web-prod".into(), group_state)]));
        let [update] = &projection.deployments[..] else { panic!("{projection:#?}") };
        let (mut row, mut body) =
            (deployment.clone(), serde_json::from_str(&deployment.body).unwrap());
        update.apply_to(&mut row, &mut body, now).unwrap();
        assert_eq!(row, DeploymentRow { updated_at: now.as_millis(), ..deployment });
    }

    #[test]
    fn a_resumed_deployment_s_green_is_projected_into_its_rows() {
        let store = store_of_an_older_cutover_mid_deployment();
        let (.., deployment) = rows(&store);
        let now = Timestamp::from_millis(T0 + 6_000);
        let mut state = store.read(|tx| Ok(from_rows(tx, 1, 3, now))).unwrap().unwrap();
        state.resume(now);

        let projection = crate::engine::project::project(&state, now);
        let green = projection.task_sets.iter().find(|ts| ts.id != "ts-blue").expect("green");
        assert_eq!(
            (green.task_definition.as_str(), green.target_group.as_deref(), green.status),
            ("web:2", Some("web-green"), TaskSetStatus::Active)
        );
        assert_eq!(green.deployment_id.as_deref(), Some("d-1"));
        let starting: Vec<_> =
            projection.tasks.iter().filter(|t| t.task_set_id == green.id).collect();
        assert_eq!(starting.len(), 2);
        for task in starting {
            assert_eq!((task.service.as_str(), task.runtime), ("web", RuntimeKind::Process));
            assert_eq!(task.last_status, TaskStatus::Provisioning);
            assert_eq!(task.created_at, now.as_millis());
        }
        let (mut row, mut body) =
            (deployment.clone(), serde_json::from_str::<DeploymentBody>(&deployment.body).unwrap());
        projection.deployments[0].apply_to(&mut row, &mut body, now).unwrap();
        assert_eq!(body.green_task_set.as_deref(), Some(green.id.as_str()));
        assert_eq!(row.status, "InProgress");
        assert_eq!(row.completed_at, None);
        let stored: DeploymentBody = serde_json::from_str(&row.body).unwrap();
        assert_eq!(stored, body, "the row holds the body written");
    }

    #[test]
    fn a_leftover_rolled_back_by_request_closes_with_its_rollback_in_its_row() {
        let store = store_of_an_older_cutover_mid_deployment();
        let (.., deployment) = rows(&store);
        let now = Timestamp::from_millis(T0 + 6_000);
        let mut state = store.read(|tx| Ok(from_rows(tx, 1, 3, now))).unwrap().unwrap();
        state.resume(now);
        let stop = |rollback| {
            let command = reconciler::Command::Stop { deployment_id: "d-1".into(), rollback };
            reconciler::Observation::Command(command)
        };
        state.observe(stop(Some(false)), now).unwrap();
        assert_eq!(
            state.group("web/web-prod").unwrap().leftover_deployment.as_deref(),
            Some("d-1")
        );
        let effects = state.observe(stop(Some(true)), now).unwrap();
        let closed = effects
            .iter()
            .find_map(|e| match e {
                Effect::DeploymentClosed(d) => Some(d),
                _ => None,
            })
            .expect("the leftover closes once rolled back");

        let (mut row, mut body) =
            (deployment.clone(), serde_json::from_str::<DeploymentBody>(&deployment.body).unwrap());
        let update = crate::engine::project::DeploymentUpdate::of(closed);
        update.apply_to(&mut row, &mut body, now).unwrap();
        assert_eq!((row.status.as_str(), row.completed_at), ("Stopped", Some(now.as_millis())));
        assert!(body.rolled_back, "{body:?}");
        assert_eq!((body.route_production_green_percent, body.route_test_to_green), (0, false));
        assert!(body.green_task_set.is_some());
    }

    /// A deployment's body and machine as the cutover before the reconciler ran the engine
    /// stored them (`cutover deploy` a moment ago), frozen: they must load into the state and be
    /// written back unchanged, or a data directory of that cutover would be misread.
    const DEPLOYMENT_V0_BODY: &str = include_str!("documents/v0/deployment.d-1.body.json");
    const DEPLOYMENT_V0_MACHINE: &str = include_str!("documents/v0/deployment.d-1.machine.json");

    #[test]
    fn a_deployment_row_of_the_cutover_before_loads_into_the_state_and_is_written_back_unchanged() {
        let store = store_of_an_older_cutover_mid_deployment();
        let frozen = DeploymentRow {
            body: DEPLOYMENT_V0_BODY.trim_end().into(),
            machine: DEPLOYMENT_V0_MACHINE.trim_end().into(),
            ..deployment_row("d-1")
        };
        store.transaction(|tx| tx.deployment_put(&frozen)).unwrap();
        let now = Timestamp::from_millis(T0 + 6_000);
        let mut state = store.read(|tx| Ok(from_rows(tx, 1, 3, now))).unwrap().unwrap();

        let projection = crate::engine::project::project(&state, now);
        let (mut row, mut body) =
            (frozen.clone(), serde_json::from_str::<DeploymentBody>(&frozen.body).unwrap());
        projection.deployments[0].apply_to(&mut row, &mut body, now).unwrap();
        assert_eq!(row.body, frozen.body);
        assert_eq!(row.machine, frozen.machine);
        // And it carries on: green starts.
        let started =
            state.resume(now).iter().filter(|e| matches!(e, Effect::StartTask(_))).count();
        assert_eq!(started, 2);
    }

    #[test]
    fn a_decision_writes_the_state_and_only_the_rows_that_changed() {
        let store = store_of_an_older_cutover_mid_deployment();
        let (t1, t2) = (Timestamp::from_millis(T0 + 6_000), Timestamp::from_millis(T0 + 7_000));
        let mut state = store.read(|tx| Ok(from_rows(tx, 1, 3, t1))).unwrap().unwrap();
        let effects = state.resume(t1);
        let empty = crate::engine::project::Projection::default();
        let written = store
            .transaction(|tx| crate::engine::write::write(tx, &state, &empty, &effects, t1))
            .unwrap();
        assert_eq!(store.read(load).unwrap(), Some(state.clone()));
        let (task_sets, tasks, ..) = rows(&store);
        assert_eq!(tasks.len(), 4, "blue's two and green's two starting: {tasks:?}");
        assert!(task_sets.iter().all(|ts| ts.updated_at == t1.as_millis()));

        // Green's tasks start; blue's rows are not written again.
        let green: Vec<String> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::StartTask(launch) => Some(launch.task_id.clone()),
                _ => None,
            })
            .collect();
        let addr = "127.0.0.1:9100".parse().unwrap();
        let started = reconciler::Observation::TaskStarted {
            task_id: green[0].clone(),
            handle: "{}".into(),
            addr: Some(addr),
        };
        let effects = state.observe(started, t2).unwrap();
        store
            .transaction(|tx| crate::engine::write::write(tx, &state, &written, &effects, t2))
            .unwrap();
        let (task_sets, tasks, ..) = rows(&store);
        assert!(task_sets.iter().all(|ts| ts.updated_at == t1.as_millis()), "{task_sets:?}");
        let task = tasks.iter().find(|t| t.id == green[0]).unwrap();
        assert_eq!(
            (task.last_status, task.addr.as_deref()),
            (TaskStatus::Running, Some("127.0.0.1:9100"))
        );
        assert_eq!(store.read(load).unwrap(), Some(state));
    }

    #[test]
    fn a_leftover_deployment_is_restored_as_routing_and_other_finished_ones_are_history_only() {
        let store = Store::open_in_memory().unwrap();
        store
            .transaction(|tx| {
                register_task_definitions(tx)?;
                put_declared(
                    tx,
                    &GroupState {
                        primary_task_set: Some("ts-blue".into()),
                        active_deployment: None,
                        leftover_deployment: Some("d-left".into()),
                    },
                )?;
                blue_rows(tx)?;
                tx.deployment_put(&deployment_row("d-left"))?;
                tx.deployment_put(&deployment_row("d-old"))
            })
            .unwrap();
        let now = Timestamp::from_millis(T0 + 6_000);
        let state = store.read(|tx| Ok(from_rows(tx, 1, 3, now))).unwrap().unwrap();
        let ids: Vec<_> = state.deployments().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["d-left"]);
        assert_eq!(
            state.group("web/web-prod").unwrap().leftover_deployment.as_deref(),
            Some("d-left")
        );
    }

    #[test]
    fn a_machine_this_build_cannot_read_is_an_error_naming_the_deployment() {
        let store = store_of_an_older_cutover_mid_deployment();
        store
            .transaction(|tx| {
                tx.deployment_put(&DeploymentRow {
                    machine: r#"{"phase":"from the future"}"#.into(),
                    ..deployment_row("d-1")
                })
            })
            .unwrap();
        let now = Timestamp::from_millis(T0 + 6_000);
        let err = store.read(|tx| Ok(from_rows(tx, 1, 3, now))).unwrap().unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(
                "deployment d-1: its stored state machine cannot be read by this build ("
            ) && message.ends_with("); run the cutover that wrote it"),
            "{message}"
        );
    }

    #[test]
    fn the_reconciler_state_is_one_versioned_document_and_a_newer_one_is_refused() {
        let store = store_of_an_older_cutover_mid_deployment();
        let now = Timestamp::from_millis(T0 + 6_000);
        assert_eq!(store.read(load).unwrap(), None, "an older cutover stored no document");
        let mut state = store.read(|tx| Ok(from_rows(tx, 5, 1, now))).unwrap().unwrap();
        state.resume(now);
        store.transaction(|tx| save(tx, &state, now)).unwrap();
        assert_eq!(store.read(load).unwrap(), Some(state.clone()));
        let row = store.read(|tx| tx.document_row("reconciler", "state")).unwrap().unwrap();
        assert_eq!(row.version, i64::from(reconciler::STATE_VERSION));

        let newer = DocumentRow { version: row.version + 1, ..row };
        store.transaction(|tx| tx.put_document_row("reconciler", &newer, T0)).unwrap();
        let err = store.read(load).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "reconciler state was written by a newer cutover (document version {}, this build reads up to {}); upgrade cutover, or run the version that wrote it",
                newer.version,
                reconciler::STATE_VERSION
            )
        );
    }
}
