//! Creating a deployment: the request validated completely (group, alarms, AppSpec, task
//! definition, config, hooks, blue and green), then the deployment and its state machine stored
//! in one transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use model::{DeploymentConfig, LifecycleEvent, Timestamp};
use rollout::{AutoRollback, Hook, Rollout, RolloutSpec};
use store::Store;

use super::task_definitions::{
    find_registered, load_task_definition, register_if_changed, split_revision,
};
use crate::api;
use crate::declared::*;
use crate::deployment::{self, DeploymentBody, HookTargetDoc};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::state::{self, Snapshot};

/// Validates a deployment request completely, then creates the deployment: the reconciler takes
/// it, and its row is written with that decision. Returns its id.
pub fn create_deployment(
    engine: &mut Engine,
    request: api::CreateDeploymentRequest,
    now: Timestamp,
) -> Result<String, ApiError> {
    create_deployment_with(engine, request, now, |_, _| Ok(()))
}

/// [`create_deployment`], writing `also` (given the new deployment's id) in the transaction that
/// stores the deployment.
pub fn create_deployment_with(
    engine: &mut Engine,
    request: api::CreateDeploymentRequest,
    now: Timestamp,
    also: impl FnOnce(&store::Tx<'_>, &str) -> store::Result<()>,
) -> Result<String, ApiError> {
    let snapshot = engine.store.read(Snapshot::load)?;
    let group = find_group(&snapshot, &request.group)?;
    let group_state = snapshot.group_states.get(&group.key()).cloned().unwrap_or_default();
    check_group_is_free(&group.key(), &group_state)?;
    // An alarm of the group already in ALARM blocks the deployment (CodeDeploy does the same),
    // unless the caller overrides the alarm configuration for this deployment.
    if !request.ignore_alarms {
        check_no_alarm(&engine.store, &group)?;
    }
    let appspec_file = &request.appspec.name;
    let appspec = config::parse_appspec(appspec_file, &request.appspec.text)
        .map_err(|errors| ApiError::invalid_file(appspec_file, &errors))?
        .value;
    let (td, registered) = resolve_task_definition(&engine.store, &request, &appspec)?;
    config::check_appspec_against(appspec_file, &request.appspec.text, &appspec, &td)
        .map_err(|errors| ApiError::invalid_file(appspec_file, &errors))?;
    let config = resolve_config(&snapshot, &group, request.deployment_config.as_deref())?;
    let (hooks, hook_docs) = resolve_hooks(&snapshot, &group, &appspec, appspec_file)?;
    let blue_task_set = group_state.primary_task_set.clone().ok_or_else(|| {
        ApiError::conflict(format!(
            "service {} has no running task set to deploy over; apply it first",
            group.service
        ))
    })?;
    let (blue_target_group, green_target_group) =
        blue_and_green_target_groups(&snapshot, &group, &blue_task_set)?;

    let id = deployment::new_deployment_id();
    let spec = rollout_spec(&id, &group, &config, hooks);
    let machine = Rollout::new(spec.clone(), now);
    // Registered before the decision: the reconciler names the revision green runs.
    let revision = match registered {
        Some(revision) => revision,
        None => engine.store.transaction(|tx| register_if_changed(tx, &td, now))?.0,
    };
    let decided = reconciler::NewDeployment {
        group: group.key(),
        spec,
        task_definition: format!("{}:{revision}", td.family),
        health_checked: td
            .container_definitions
            .iter()
            .any(|c| c.essential && c.health_check.is_some()),
        ignore_alarms: request.ignore_alarms,
    };
    let new = NewDeployment {
        id: &id,
        group: &group,
        td: &td,
        revision,
        appspec: &appspec,
        config: &config,
        hooks: hook_docs,
        blue_task_set,
        blue_target_group,
        green_target_group,
        description: request.description.clone(),
        ignore_alarms: request.ignore_alarms,
        machine: &machine,
    };
    let command = reconciler::Command::CreateDeployment(Box::new(decided));
    engine.decide_with(reconciler::Observation::Command(command), |tx| {
        new.record(tx, now)?;
        also(tx, &id)
    })?;
    Ok(id)
}

fn find_group(snapshot: &Snapshot, name: &str) -> Result<DeploymentGroupDoc, ApiError> {
    snapshot.group(name).cloned().ok_or_else(|| {
        let known: Vec<String> = snapshot.groups.iter().map(|g| g.key()).collect();
        ApiError::not_found(format!(
            "no deployment group `{name}`; groups are named application/group ({})",
            if known.is_empty() {
                "none applied yet: run `cutover apply -f cutover.yaml`".to_string()
            } else {
                known.join(", ")
            }
        ))
    })
}

/// One deployment runs per group at a time, and not over a green left in place.
fn check_group_is_free(key: &str, group_state: &GroupState) -> Result<(), ApiError> {
    if let Some(active) = &group_state.active_deployment {
        return Err(ApiError::conflict(format!(
            "deployment group {key} already has an active deployment {active}; one deployment runs \
             per group at a time (as on CodeDeploy): wait for it (`cutover deployments watch {active}`) \
             or stop it (`cutover deployments stop {active}`)"
        )));
    }
    if let Some(leftover) = &group_state.leftover_deployment {
        return Err(ApiError::conflict(format!(
            "deployment {leftover} of group {key} ended without rolling back and left its green tasks \
             in place; roll it back first (`cutover deployments rollback {leftover}`)"
        )));
    }
    Ok(())
}

fn check_no_alarm(store: &Store, group: &DeploymentGroupDoc) -> Result<(), ApiError> {
    for name in &group.alarms {
        let saved: Option<crate::documents::AlarmStateDoc> =
            store.read(|tx| state::doc(tx, KIND_ALARM_STATE, name))?;
        if let Some(alarm) = saved.filter(|a| a.state() == alarms::AlarmState::Alarm) {
            return Err(ApiError::conflict(format!(
                "alarm {name} of deployment group {} is in ALARM ({}); fix what it watches, or \
                 deploy anyway with --ignore-alarms (the deployment then ignores the group's alarms)",
                group.key(),
                alarm.reason()
            )));
        }
    }
    Ok(())
}

/// The task definition sent with the request, or the registered one the AppSpec names (with its
/// revision).
fn resolve_task_definition(
    store: &Store,
    request: &api::CreateDeploymentRequest,
    appspec: &config::AppSpec,
) -> Result<(config::TaskDefinition, Option<u32>), ApiError> {
    if let Some(upload) = &request.task_definition {
        return Ok((load_task_definition(upload)?, None));
    }
    let appspec_file = &request.appspec.name;
    let reference = match &appspec.task_definition {
        config::TaskDefinitionRef::Revision { family, revision } => format!("{family}:{revision}"),
        config::TaskDefinitionRef::Latest { family } => family.clone(),
        config::TaskDefinitionRef::Placeholder(p) => {
            return Err(ApiError::bad_request(format!(
                "{appspec_file}: TaskDefinition is the placeholder {p}; pass the task definition \
                 with `--task-definition taskdef.json`"
            )));
        }
    };
    let row = store.read(|tx| find_registered(tx, &reference))?.ok_or_else(|| {
        ApiError::bad_request(format!(
            "{appspec_file}: TaskDefinition `{reference}` is not registered (`cutover task-definitions list`)"
        ))
    })?;
    if row.status != "ACTIVE" {
        return Err(ApiError::bad_request(format!(
            "{appspec_file}: task definition {reference} is INACTIVE and cannot start new tasks"
        )));
    }
    Ok((serde_json::from_str::<config::TaskDefinition>(&row.body)?, Some(row.revision)))
}

/// The config the request names, or the group's: predefined or declared.
fn resolve_config(
    snapshot: &Snapshot,
    group: &DeploymentGroupDoc,
    requested: Option<&str>,
) -> Result<DeploymentConfig, ApiError> {
    let config_name = requested.unwrap_or(&group.deployment_config);
    let custom: Vec<DeploymentConfig> =
        snapshot.deployment_configs.iter().map(|d| d.to_model()).collect();
    config::resolve_deployment_config(config_name, &custom).ok_or_else(|| {
        ApiError::bad_request(format!(
            "deployment config `{config_name}` is neither predefined (CodeDeployDefault.ECS…) nor declared \
             under deployment_configs in cutover.yaml"
        ))
    })
}

type Hooks = (BTreeMap<LifecycleEvent, Hook>, BTreeMap<String, HookTargetDoc>);

/// Each lifecycle event's hook: the AppSpec's, else the deployment group's.
fn resolve_hooks(
    snapshot: &Snapshot,
    group: &DeploymentGroupDoc,
    appspec: &config::AppSpec,
    appspec_file: &str,
) -> Result<Hooks, ApiError> {
    let hook_timeout = Duration::from_millis(group.hook_timeout_ms);
    let mut hook_docs: BTreeMap<String, HookTargetDoc> = BTreeMap::new();
    let mut hooks: BTreeMap<LifecycleEvent, Hook> = BTreeMap::new();
    for event in LifecycleEvent::HOOKABLE {
        let named = appspec.hooks.get(&event).cloned().map(|n| (n, appspec_file)).or_else(|| {
            group.hooks.get(event.as_str()).cloned().map(|n| (n, "deployment group hooks"))
        });
        if let Some((name, source)) = named {
            let doc = deployment::resolve_hook(snapshot, &name, hook_timeout, event, source)?;
            hooks.insert(
                event,
                Hook { name: doc.name.clone(), timeout: Duration::from_millis(doc.timeout_ms) },
            );
            hook_docs.insert(event.as_str().to_string(), doc);
        }
    }
    Ok((hooks, hook_docs))
}

/// Blue is where the primary task set runs; green is the group's other target group.
fn blue_and_green_target_groups(
    snapshot: &Snapshot,
    group: &DeploymentGroupDoc,
    blue_id: &str,
) -> Result<(String, String), ApiError> {
    let blue = snapshot
        .task_set(blue_id)
        .ok_or_else(|| ApiError::internal(format!("primary task set {blue_id} is missing")))?;
    let blue_tg = blue.target_group.clone().unwrap_or_else(|| group.target_groups[0].clone());
    let green_tg = reconciler::green_target_group(&group.target_groups, &blue_tg).to_string();
    Ok((blue_tg, green_tg))
}

fn rollout_spec(
    id: &str,
    group: &DeploymentGroupDoc,
    config: &DeploymentConfig,
    hooks: BTreeMap<LifecycleEvent, Hook>,
) -> RolloutSpec {
    RolloutSpec {
        deployment_id: id.to_string(),
        routing: config.routing,
        has_test_listener: group.test_listener.is_some(),
        hooks,
        ready_wait: group.ready_wait_ms.map(Duration::from_millis),
        termination_wait: Duration::from_millis(group.termination_wait_ms),
        auto_rollback: AutoRollback {
            on_failure: group.auto_rollback.on_failure,
            on_alarm: group.auto_rollback.on_alarm,
            on_stop_request: group.auto_rollback.on_stop_request,
        },
        install_timeout: group
            .install_timeout_ms
            .map_or(rollout::INSTALL_TIMEOUT_DEFAULT, Duration::from_millis),
        mirror: config.mirror,
    }
}

/// Everything a validated deployment request stores.
struct NewDeployment<'a> {
    id: &'a str,
    group: &'a DeploymentGroupDoc,
    td: &'a config::TaskDefinition,
    /// The task definition's registered revision.
    revision: u32,
    appspec: &'a config::AppSpec,
    config: &'a DeploymentConfig,
    hooks: BTreeMap<String, HookTargetDoc>,
    blue_task_set: String,
    blue_target_group: String,
    green_target_group: String,
    description: Option<String>,
    ignore_alarms: bool,
    machine: &'a Rollout,
}

impl NewDeployment<'_> {
    /// Stores the deployment and its first event (the group's active deployment is the
    /// reconciler's, written with it).
    fn record(&self, tx: &store::Tx<'_>, now: Timestamp) -> store::Result<()> {
        let body = self.body(format!("{}:{}", self.td.family, self.revision));
        let group = self.group;
        tx.deployment_put(&store::DeploymentRow {
            id: self.id.to_string(),
            application: group.application.clone(),
            deployment_group: group.name.clone(),
            status: self.machine.status().as_str().to_string(),
            body: serde_json::to_string(&body)?,
            machine: serde_json::to_string(self.machine)?,
            created_at: now.as_millis(),
            updated_at: now.as_millis(),
            completed_at: None,
        })?;
        let key = group.key();
        tx.event_append(
            self.id,
            now.as_millis(),
            "created",
            &format!(
                "deploying {} to {key} with {} ({})",
                body.task_definition, self.config.name, self.config.routing
            ),
        )?;
        Ok(())
    }

    fn body(&self, task_definition: String) -> DeploymentBody {
        DeploymentBody {
            application: self.group.application.clone(),
            deployment_group: self.group.name.clone(),
            service: self.group.service.clone(),
            task_definition,
            container_name: self.appspec.container_name.clone(),
            container_port: self.appspec.container_port,
            deployment_config: self.config.name.clone(),
            routing: self.config.routing.to_string(),
            description: self.description.clone(),
            blue_task_set: self.blue_task_set.clone(),
            green_task_set: None,
            blue_target_group: self.blue_target_group.clone(),
            green_target_group: self.green_target_group.clone(),
            hooks: self.hooks.clone(),
            route_production_green_percent: 0,
            route_test_to_green: false,
            route_mirror_percent: 0,
            green_was_healthy: false,
            green_failure_reported: false,
            error_code: None,
            error_message: None,
            rolled_back: false,
            ignore_alarms: self.ignore_alarms,
        }
    }
}

/// Builds the deployment of the ECS deploy action: the service's current task definition with
/// the named containers' images replaced, and an AppSpec for the service's load-balanced
/// container, deployed through the service's deployment group.
pub fn image_definitions_deployment(
    engine: &Engine,
    service: &str,
    images: &[(String, String)],
) -> Result<api::CreateDeploymentRequest, ApiError> {
    let snapshot = engine.store.read(Snapshot::load)?;
    let doc = snapshot
        .service(service)
        .ok_or_else(|| ApiError::not_found(format!("no service `{service}`")))?;
    let group = snapshot.group_of_service(service).ok_or_else(|| {
        ApiError::bad_request(format!(
            "service {service} is in no deployment group; the ECS deploy action releases through one \
             (declare a deployment group for it, or use a `deploy` action)"
        ))
    })?;
    let lb = doc.load_balancer.as_ref().ok_or_else(|| {
        ApiError::bad_request(format!("service {service} has no load balancer to release behind"))
    })?;
    let primary = snapshot
        .group_states
        .get(&group.key())
        .and_then(|s| s.primary_task_set.as_ref())
        .and_then(|id| snapshot.task_set(id))
        .map(|ts| ts.task_definition.clone())
        .unwrap_or_else(|| doc.task_definition.clone());
    let (family, revision) = split_revision(&primary)
        .ok_or_else(|| ApiError::internal(format!("bad task definition id {primary}")))?;
    let row = engine
        .store
        .read(|tx| tx.task_definition_get(&family, revision))?
        .ok_or_else(|| ApiError::internal(format!("task definition {primary} is missing")))?;
    let mut td: config::TaskDefinition = serde_json::from_str(&row.body)?;
    for (container, image) in images {
        let Some(definition) = td.container_definitions.iter_mut().find(|c| c.name == *container)
        else {
            return Err(ApiError::bad_request(format!(
                "imagedefinitions.json names container `{container}`, which task definition {primary} does not have"
            )));
        };
        definition.image = image.clone();
    }
    let appspec = format!(
        "version: 0.0\nResources:\n  - TargetService:\n      Type: AWS::ECS::Service\n      Properties:\n        \
         TaskDefinition: <TASK_DEFINITION>\n        LoadBalancerInfo:\n          ContainerName: \"{}\"\n          \
         ContainerPort: {}\n",
        lb.container_name, lb.container_port
    );
    Ok(api::CreateDeploymentRequest {
        group: group.key(),
        task_definition: Some(api::FileUpload {
            name: "imagedefinitions.json (task definition)".into(),
            text: serde_json::to_string(&td)?,
            base_dir: None,
        }),
        appspec: api::FileUpload {
            name: "imagedefinitions.json (appspec)".into(),
            text: appspec,
            base_dir: None,
        },
        description: Some(format!("ECS deploy action: {} image(s)", images.len())),
        deployment_config: None,
        ignore_alarms: false,
    })
}
