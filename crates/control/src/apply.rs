//! `cutover apply`, task-definition registration and deployment creation: everything that turns
//! user files into stored state. Each validates all of its input before writing anything, and
//! writes in one transaction.
//!
//! `apply` follows Terraform's and CloudFormation's semantics: it creates and updates what the
//! file declares and deletes what it created that the file no longer declares (except hosted
//! repositories, whose git data it keeps), refusing with 409 when a deletion would cut a
//! deployment short. See "What `apply` does" in `docs/cutover-yaml.md`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use model::{LifecycleEvent, Timestamp};
use rollout::{AutoRollback, Hook, Rollout, RolloutSpec};
use store::{Store, TaskSetRow};

use crate::api::{self, ApplyResponse, PlanItem};
use crate::declared::*;
use crate::deployment::{self, DeploymentBody, HookTargetDoc};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::state::{self, Snapshot};

/// `family:revision` → (family, revision).
pub fn split_revision(id: &str) -> Option<(String, u32)> {
    let (family, revision) = id.rsplit_once(':')?;
    Some((family.to_string(), revision.parse().ok()?))
}

/// Parses and validates a task definition file, and makes the process runtime's relative
/// `image` directories absolute (relative to the file's own directory), so that the stored
/// revision means the same thing whoever starts its tasks.
pub fn load_task_definition(file: &api::FileUpload) -> Result<spec::TaskDefinition, ApiError> {
    let parsed = spec::parse_task_definition(&file.name, &file.text)
        .map_err(|errors| ApiError::invalid_file(&file.name, &errors))?;
    let mut td = parsed.value;
    if let Some(base) = &file.base_dir {
        for container in &mut td.container_definitions {
            let candidate = Path::new(base).join(&container.image);
            if !Path::new(&container.image).is_absolute()
                && candidate.is_dir()
                && let Ok(absolute) = candidate.canonicalize()
            {
                container.image = absolute.display().to_string();
            }
        }
    }
    Ok(td)
}

/// Registers a revision unless the family's latest active revision is identical; returns it.
fn register_if_changed(
    tx: &store::Tx<'_>,
    td: &spec::TaskDefinition,
    now: Timestamp,
) -> store::Result<(u32, bool)> {
    let body = serde_json::to_string(td)?;
    if let Some(latest) = tx.task_definition_latest(&td.family)? {
        let same =
            serde_json::from_str::<spec::TaskDefinition>(&latest.body).is_ok_and(|l| l == *td);
        if same {
            return Ok((latest.revision, false));
        }
    }
    Ok((tx.task_definition_register(&td.family, &body, now.as_millis())?, true))
}

pub fn register_task_definition(
    store: &Store,
    file: &api::FileUpload,
    now: Timestamp,
) -> Result<(String, u32), ApiError> {
    let td = load_task_definition(file)?;
    let body = serde_json::to_string(&td)?;
    let revision =
        store.transaction(|tx| tx.task_definition_register(&td.family, &body, now.as_millis()))?;
    Ok((td.family, revision))
}

/// Looks a task definition up by `family:revision` or `family` (latest active).
fn find_registered(
    tx: &store::Tx<'_>,
    reference: &str,
) -> store::Result<Option<store::TaskDefinitionRow>> {
    match split_revision(reference) {
        Some((family, revision)) => tx.task_definition_get(&family, revision),
        None => tx.task_definition_latest(reference),
    }
}

fn check_lb_container(
    service: &spec::ServiceSpec,
    td: &spec::TaskDefinition,
    file: &str,
) -> Result<(), ApiError> {
    let Some(lb) = &service.load_balancer else { return Ok(()) };
    let Some(container) = td.container(&lb.container_name) else {
        return Err(ApiError::bad_request(format!(
            "{file}: service {}: load_balancer.container_name `{}` is not a container of task \
             definition {} (containers: {}); fix one of the two",
            service.name,
            lb.container_name,
            td.family,
            td.container_definitions.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    };
    if !container.port_mappings.iter().any(|p| p.container_port == lb.container_port) {
        return Err(ApiError::bad_request(format!(
            "{file}: service {}: load_balancer.container_port {} is not a containerPort of container \
             `{}` (mapped: {:?}); add a portMappings entry or fix the port",
            service.name,
            lb.container_port,
            container.name,
            container.port_mappings.iter().map(|p| p.container_port).collect::<Vec<_>>()
        )));
    }
    Ok(())
}

fn plan_item(kind: &str, name: &str, before: Option<&str>, after: &str) -> PlanItem {
    let action = match before {
        None => "create",
        Some(before) if before == after => "no change",
        Some(_) => "update",
    };
    PlanItem {
        kind: kind.to_string(),
        name: name.to_string(),
        action: action.to_string(),
        detail: None,
    }
}

pub async fn apply(
    engine: &mut Engine,
    request: api::ApplyRequest,
    now: Timestamp,
) -> Result<ApplyResponse, ApiError> {
    let file_name = request.file.name.clone();
    let parsed = spec::parse_cutover_file(&file_name, &request.file.text)
        .map_err(|errors| ApiError::invalid_file(&file_name, &errors))?;
    let mut notes: Vec<String> = parsed.notes.iter().map(|d| d.to_string()).collect();
    let file = parsed.value;

    // Resolve every service's task definition before anything else.
    let mut service_tds: BTreeMap<String, (spec::TaskDefinition, Option<u32>)> = BTreeMap::new();
    let references = spec::file_references(&request.file.text);
    for (index, service) in file.services.iter().enumerate() {
        let td = match request.referenced.get(&service.task_definition) {
            Some(upload) => (load_task_definition(upload)?, None),
            None if spec::names_a_file(&service.task_definition) => {
                // The client sends every referenced file it finds: this one is not there.
                let field = format!("services[{index}].task_definition");
                let reference = references.iter().find(|r| r.field == field);
                return Err(match (reference, &request.file.base_dir) {
                    (Some(reference), Some(base)) => {
                        let looked_at = Path::new(base).join(&reference.path);
                        let missing =
                            reference.missing(&file_name, &looked_at.display().to_string());
                        ApiError::invalid_file(&file_name, &spec::Errors::one(missing))
                    }
                    _ => ApiError::bad_request(format!(
                        "{file_name}: {field}: task definition file `{}` was not sent with the \
                         file; apply with `cutover apply -f`, which sends the files it names",
                        service.task_definition
                    )),
                });
            }
            None => {
                let registered =
                    engine.store.read(|tx| find_registered(tx, &service.task_definition))?;
                let Some(row) = registered else {
                    let pos = spec::task_definition_pos(&request.file.text, index);
                    let unknown = spec::Diagnostic::error(
                        &file_name,
                        pos.unwrap_or_default(),
                        &format!("services[{index}].task_definition"),
                        format!(
                            "no registered task definition `{}` (`cutover task-definitions \
                             list`); register it, or name a taskdef.json file next to this file",
                            service.task_definition
                        ),
                    );
                    return Err(ApiError::invalid_file(&file_name, &spec::Errors::one(unknown)));
                };
                (serde_json::from_str(&row.body)?, Some(row.revision))
            }
        };
        check_lb_container(service, &td.0, &file_name)?;
        service_tds.insert(service.name.clone(), td);
    }

    let current = engine.store.read(Snapshot::load)?;
    let mut plan = Vec::new();
    let mut writes: Vec<(&'static str, String, String)> = Vec::new();
    let mut candidate = current.clone();

    macro_rules! declare {
        ($kind:expr, $name:expr, $doc:expr, $list:ident) => {{
            let doc = $doc;
            let body = serde_json::to_string(&doc)?;
            let before = engine.store.read(|tx| tx.resource_get($kind, &$name))?;
            let item = plan_item($kind, &$name, before.as_deref(), &body);
            if item.action != "no change" {
                writes.push(($kind, $name.clone(), body));
            }
            plan.push(item);
            candidate.$list.retain(|d| d.name != doc.name);
            candidate.$list.push(doc);
        }};
    }

    for lb in &file.load_balancers {
        declare!(KIND_LOAD_BALANCER, lb.name, load_balancer_doc(lb), load_balancers);
    }
    for tg in &file.target_groups {
        let mut doc = target_group_doc(tg);
        // Targets registered by hand belong to the target group, not to the file.
        if let Some(stored) = current.target_groups.iter().find(|d| d.name == tg.name) {
            doc.registered =
                stored.registered.iter().filter(|a| !doc.targets.contains(a)).copied().collect();
        }
        declare!(KIND_TARGET_GROUP, tg.name, doc, target_groups);
    }
    for config in &file.deployment_configs {
        declare!(
            KIND_DEPLOYMENT_CONFIG,
            config.name,
            DeploymentConfigDoc::from_model(config),
            deployment_configs
        );
    }
    for hook in &file.hooks {
        declare!(KIND_HOOK, hook.name, hook_doc(hook), hooks);
    }
    for alarm in &file.alarms {
        let name = alarm.name().to_string();
        let doc = crate::monitor::AlarmDoc::from_decl(alarm);
        let body = serde_json::to_string(&doc)?;
        let before = engine.store.read(|tx| tx.resource_get(KIND_ALARM, &name))?;
        let item = plan_item(KIND_ALARM, &name, before.as_deref(), &body);
        if item.action != "no change" {
            writes.push((KIND_ALARM, name.clone(), body));
        }
        plan.push(item);
    }
    for filter in &file.metric_filters {
        let name = filter.spec.name.clone();
        let doc = crate::monitor::MetricFilterDoc {
            service: filter.service.clone(),
            spec: filter.spec.clone(),
        };
        let body = serde_json::to_string(&doc)?;
        let before = engine.store.read(|tx| tx.resource_get(KIND_METRIC_FILTER, &name))?;
        let item = plan_item(KIND_METRIC_FILTER, &name, before.as_deref(), &body);
        if item.action != "no change" {
            writes.push((KIND_METRIC_FILTER, name.clone(), body));
        }
        plan.push(item);
    }

    // Services: a new one gets its first task set; an existing one keeps its tasks (a new task
    // definition is released with `cutover deploy`, as on ECS with the CODE_DEPLOY controller).
    let mut new_services = Vec::new();
    let mut revisions_to_register = Vec::new();
    for service in &file.services {
        let existing: Option<ServiceDoc> =
            engine.store.read(|tx| state::doc(tx, KIND_SERVICE, &service.name))?;
        let (td, registered_revision) = &service_tds[&service.name];
        let runtime = match service.runtime {
            spec::RuntimeKind::Process => "process",
            spec::RuntimeKind::Docker => "docker",
        };
        let task_definition = match (&existing, registered_revision) {
            (Some(existing), _) => {
                let existing_td = split_revision(&existing.task_definition)
                    .and_then(|(f, r)| {
                        engine.store.read(|tx| tx.task_definition_get(&f, r)).ok().flatten()
                    })
                    .and_then(|row| serde_json::from_str::<spec::TaskDefinition>(&row.body).ok());
                if existing_td.as_ref() != Some(td) {
                    notes.push(format!(
                        "service {}: its task definition in {file_name} differs from the running one; \
                         apply does not replace running tasks: release it with `cutover deploy`",
                        service.name
                    ));
                }
                if existing.runtime != runtime {
                    return Err(ApiError::conflict(format!(
                        "service {}: the runtime cannot change from {} to {runtime} in place",
                        service.name, existing.runtime
                    )));
                }
                existing.task_definition.clone()
            }
            (None, Some(revision)) => format!("{}:{revision}", td.family),
            (None, None) => {
                revisions_to_register.push(service.name.clone());
                plan.push(PlanItem {
                    kind: "task_definition".into(),
                    name: td.family.clone(),
                    action: "create".into(),
                    detail: Some(
                        "registered as a new revision unless identical to the latest".into(),
                    ),
                });
                // The revision is known once registered; the document is completed then.
                format!("{}:?", td.family)
            }
        };
        let doc = ServiceDoc {
            name: service.name.clone(),
            runtime: runtime.to_string(),
            task_definition,
            desired_count: service.desired_count,
            load_balancer: service.load_balancer.as_ref().map(|lb| ServiceLbDoc {
                target_group: lb.target_group.clone(),
                container_name: lb.container_name.clone(),
                container_port: lb.container_port,
            }),
            network: service.network.clone(),
        };
        if existing.is_none() {
            new_services.push(service.name.clone());
        }
        declare!(KIND_SERVICE, service.name, doc, services);
    }

    for group in &file.deployment_groups {
        let doc = deployment_group_doc(group);
        let key = doc.key();
        let state: GroupState = current.group_states.get(&key).cloned().unwrap_or_default();
        let changed = engine
            .store
            .read(|tx| tx.resource_get(KIND_DEPLOYMENT_GROUP, &key))?
            .is_some_and(|before| before != serde_json::to_string(&doc).unwrap_or_default());
        if changed && let Some(active) = &state.active_deployment {
            return Err(ApiError::conflict(format!(
                "deployment group {key} has deployment {active} in progress; wait for it \
                     (`cutover deployments watch {active}`) or stop it before changing the group"
            )));
        }
        let body = serde_json::to_string(&doc)?;
        let before = engine.store.read(|tx| tx.resource_get(KIND_DEPLOYMENT_GROUP, &key))?;
        let mut item = plan_item(KIND_DEPLOYMENT_GROUP, &key, before.as_deref(), &body);
        item.name = key.clone();
        if item.action != "no change" {
            writes.push((KIND_DEPLOYMENT_GROUP, key.clone(), body));
        }
        plan.push(item);
        candidate.groups.retain(|g| g.key() != key);
        candidate.groups.push(doc);
    }

    // What the store holds and the file no longer declares is deleted, as Terraform and
    // CloudFormation do. Every refusal comes before any change.
    let removed = plan_removals(&engine.store, &file, &current, &file_name)?;
    removed.check_pipelines(&file, &mut notes);
    candidate.load_balancers.retain(|d| !removed.load_balancers.contains(&d.name));
    candidate.target_groups.retain(|d| !removed.target_groups.contains(&d.name));
    candidate.deployment_configs.retain(|d| !removed.deployment_configs.contains(&d.name));
    candidate.hooks.retain(|d| !removed.hooks.contains(&d.name));
    candidate.services.retain(|d| !removed.services.contains(&d.name));
    candidate.task_sets.retain(|ts| !removed.services.contains(&ts.service));
    candidate.groups.retain(|g| !removed.groups.contains(&g.key()));
    candidate.group_states.retain(|key, _| !removed.groups.contains(key));
    plan.extend(removed.plan_items(&current));

    // Repositories and pipelines (validated by `ci` before it changes anything). A watched
    // repository's relative path is relative to cutover.yaml, like every other path in it.
    let ci = engine.ci.clone();
    if ci.is_none() && (!file.repositories.is_empty() || !file.pipelines.is_empty()) {
        return Err(ApiError::conflict("pipelines are not running in this control plane"));
    }
    let mut pipelines = file.pipelines.clone();
    if let Some(base) = &request.file.base_dir {
        for pipeline in &mut pipelines {
            if let spec::SourceLocation::Url { url, .. } = &mut pipeline.source.location
                && !url.contains("://")
                && !Path::new(url.as_str()).is_absolute()
            {
                *url = Path::new(base).join(url.as_str()).display().to_string();
            }
        }
    }
    if let Some(ci) = &ci {
        let items = ci.plan(&file.repositories, &pipelines).map_err(ci_error)?;
        if request.dry_run {
            plan.extend(items.into_iter().map(ci_plan_item));
        }
    }

    if request.dry_run {
        return Ok(ApplyResponse { plan: in_plan_order(plan), applied: false, notes });
    }

    // The data plane validates listeners (ports free, certificates load) before anything is
    // stored: if it refuses the candidate table, nothing changes anywhere. A table it already
    // serves is not sent again, so an unchanged file leaves even the table's version alone.
    let candidate_table = candidate.route_table(0);
    let routes_change = !engine.serves_routes(&candidate_table);
    if routes_change {
        engine.try_routes(candidate_table).await.map_err(|err| {
            ApiError::bad_request(format!(
                "the load balancer refused the new configuration, nothing was changed: {err:#}"
            ))
        })?;
    }

    // One transaction for everything: the declared resources, the deletions and the pipelines.
    let write = |tx: &store::Tx<'_>| -> store::Result<Vec<store::TaskRow>> {
        let ms = now.as_millis();
        for (kind, name, body) in &writes {
            tx.resource_put(kind, name, body, ms)?;
        }
        for service_name in &revisions_to_register {
            let (td, _) = &service_tds[service_name];
            let (revision, _) = register_if_changed(tx, td, now)?;
            let mut doc: ServiceDoc =
                state::doc(tx, KIND_SERVICE, service_name)?.ok_or_else(|| {
                    store::Error::Conflict(format!("service {service_name} vanished"))
                })?;
            doc.task_definition = format!("{}:{revision}", td.family);
            tx.resource_put(KIND_SERVICE, service_name, &serde_json::to_string(&doc)?, ms)?;
        }
        for service in &file.services {
            let doc: ServiceDoc =
                state::doc(tx, KIND_SERVICE, &service.name)?.ok_or_else(|| {
                    store::Error::Conflict(format!("service {} vanished", service.name))
                })?;
            let sets = tx.task_set_list()?;
            // A service deleted and declared again while its old tasks still drain starts afresh.
            let has_live_set = sets
                .iter()
                .any(|s| s.service == service.name && s.status != model::TaskSetStatus::Draining);
            if new_services.contains(&service.name) && !has_live_set {
                tx.task_set_put(&TaskSetRow {
                    id: deployment::new_id("ts"),
                    service: service.name.clone(),
                    task_definition: doc.task_definition.clone(),
                    target_group: doc.load_balancer.as_ref().map(|lb| lb.target_group.clone()),
                    status: model::TaskSetStatus::Primary,
                    deployment_id: None,
                    desired_count: doc.desired_count,
                    created_at: ms,
                    updated_at: ms,
                })?;
            } else {
                for mut set in sets.into_iter().filter(|s| {
                    s.service == service.name && s.status != model::TaskSetStatus::Draining
                }) {
                    if set.desired_count != doc.desired_count {
                        set.desired_count = doc.desired_count;
                        set.updated_at = ms;
                        tx.task_set_put(&set)?;
                    }
                }
            }
        }
        for group in &file.deployment_groups {
            let key = format!("{}/{}", group.application, group.name);
            let mut state: GroupState = state::doc(tx, KIND_GROUP_STATE, &key)?.unwrap_or_default();
            // A group that now deploys another service (one renamed: deleted and created) starts
            // from that service's task set.
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
                    .find(|s| {
                        s.service == group.service && s.status == model::TaskSetStatus::Primary
                    })
                    .map(|s| s.id);
                tx.resource_put(KIND_GROUP_STATE, &key, &serde_json::to_string(&state)?, ms)?;
            }
        }
        removed.delete(tx, now)
    };
    let committed = match &ci {
        Some(ci) => ci.apply_with(&file.repositories, &pipelines, write).map_err(ci_error).map(
            |(items, drained)| {
                plan.extend(items.into_iter().map(ci_plan_item));
                drained
            },
        ),
        None => engine.store.transaction(write).map_err(ApiError::from),
    };
    let drained = match committed {
        Ok(drained) => drained,
        Err(err) => {
            // The candidate table went to the data plane only to be validated: a file that was
            // not stored must not route either, so the stored state's table goes back.
            if routes_change {
                engine.forget_pushed_routes();
                engine.reconcile().await;
            }
            return Err(err);
        }
    };
    engine.note_removals(&drained);
    {
        let mut monitor = engine.shared.monitor.lock().unwrap_or_else(|p| p.into_inner());
        for name in &removed.alarms {
            monitor.forget_alarm(name);
        }
    }
    engine.reconcile().await;
    Ok(ApplyResponse { plan: in_plan_order(plan), applied: true, notes })
}

fn ci_error(err: ci::Error) -> ApiError {
    match err {
        ci::Error::Invalid(m) | ci::Error::NotFound(m) => ApiError::bad_request(m),
        ci::Error::Conflict(m) => ApiError::conflict(m),
        ci::Error::Store(err) => ApiError::from(err),
        other => ApiError::internal(other.to_string()),
    }
}

fn ci_plan_item(i: ci::api::PlanItem) -> PlanItem {
    PlanItem {
        kind: i.kind,
        name: i.name,
        action: if i.action == "unchanged" { "no change".into() } else { i.action },
        detail: i.detail,
    }
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

/// The declared resources the store has and the file no longer declares, by kind.
#[derive(Default)]
struct Removals {
    groups: Vec<String>,
    services: Vec<String>,
    alarms: Vec<String>,
    metric_filters: Vec<String>,
    hooks: Vec<String>,
    deployment_configs: Vec<String>,
    target_groups: Vec<String>,
    load_balancers: Vec<String>,
}

/// Finds what `apply` deletes, and refuses (409, nothing changed) when a deletion would cut a
/// deployment short or leave tasks pointing at something deleted.
fn plan_removals(
    store: &Store,
    file: &spec::CutoverFile,
    current: &Snapshot,
    file_name: &str,
) -> Result<Removals, ApiError> {
    let gone = |declared: &[&str], stored: Vec<String>| -> Vec<String> {
        stored.into_iter().filter(|name| !declared.contains(&name.as_str())).collect()
    };
    let group_keys: Vec<String> =
        file.deployment_groups.iter().map(|g| format!("{}/{}", g.application, g.name)).collect();
    let group_keys: Vec<&str> = group_keys.iter().map(String::as_str).collect();
    let names = |kind: &str| -> Result<Vec<String>, ApiError> {
        Ok(store.read(|tx| tx.resource_list(kind))?.into_iter().map(|(n, _)| n).collect())
    };
    let removed = Removals {
        groups: gone(&group_keys, current.groups.iter().map(|g| g.key()).collect()),
        services: gone(
            &file.services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            current.services.iter().map(|s| s.name.clone()).collect(),
        ),
        alarms: gone(&file.alarms.iter().map(|a| a.name()).collect::<Vec<_>>(), names(KIND_ALARM)?),
        metric_filters: gone(
            &file.metric_filters.iter().map(|f| f.spec.name.as_str()).collect::<Vec<_>>(),
            names(KIND_METRIC_FILTER)?,
        ),
        hooks: gone(
            &file.hooks.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            current.hooks.iter().map(|h| h.name.clone()).collect(),
        ),
        // Only declared configs are stored: the predefined CodeDeployDefault.* ones never are,
        // so they are never deleted.
        deployment_configs: gone(
            &file.deployment_configs.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            current.deployment_configs.iter().map(|c| c.name.clone()).collect(),
        ),
        target_groups: gone(
            &file.target_groups.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            current.target_groups.iter().map(|t| t.name.clone()).collect(),
        ),
        load_balancers: gone(
            &file.load_balancers.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            current.load_balancers.iter().map(|l| l.name.clone()).collect(),
        ),
    };

    for service in &removed.services {
        for group in current.groups.iter().filter(|g| g.service == *service) {
            let key = group.key();
            let state = current.group_states.get(&key);
            if let Some(active) = state.and_then(|s| s.active_deployment.as_ref()) {
                return Err(ApiError::conflict(format!(
                    "service {service} is no longer in {file_name}, but deployment group {key} has \
                     deployment {active} in progress; wait for it (`cutover deployments watch \
                     {active}`) or stop it (`cutover deployments stop {active}`) before removing \
                     the service; nothing was changed"
                )));
            }
        }
    }
    for key in &removed.groups {
        let state = current.group_states.get(key).cloned().unwrap_or_default();
        if let Some(active) = &state.active_deployment {
            return Err(ApiError::conflict(format!(
                "deployment group {key} has deployment {active} in progress; wait for it \
                 (`cutover deployments watch {active}`) or stop it (`cutover deployments stop \
                 {active}`) before removing the group from {file_name}; nothing was changed"
            )));
        }
        let service = current.group(key).map(|g| g.service.clone()).unwrap_or_default();
        if let Some(leftover) = &state.leftover_deployment
            && !removed.services.contains(&service)
        {
            return Err(ApiError::conflict(format!(
                "deployment {leftover} of group {key} ended without rolling back and left its green \
                 tasks of service {service} in place; roll it back first (`cutover deployments \
                 rollback {leftover}`), or remove service {service} too; nothing was changed"
            )));
        }
    }
    // Spec validation already refuses a file whose remaining resources name a deleted one; what
    // it cannot see is where the tasks of a remaining service are registered now (after a
    // deployment, blue is in the group's second target group).
    for ts in &current.task_sets {
        if ts.status == model::TaskSetStatus::Draining || removed.services.contains(&ts.service) {
            continue;
        }
        if let Some(tg) = ts.target_group.as_ref().filter(|tg| removed.target_groups.contains(tg)) {
            return Err(ApiError::conflict(format!(
                "target group {tg} is no longer in {file_name}, but the tasks of service {} (task \
                 set {}) are registered in it; keep {tg} while they run there, or remove service {} \
                 too; nothing was changed",
                ts.service, ts.id, ts.service
            )));
        }
    }
    Ok(removed)
}

impl Removals {
    /// The plan's `delete` items, in the order the deletions happen.
    fn plan_items(&self, current: &Snapshot) -> Vec<PlanItem> {
        let item = |kind: &str, name: &str, detail: Option<String>| PlanItem {
            kind: kind.to_string(),
            name: name.to_string(),
            action: "delete".to_string(),
            detail,
        };
        let mut out = Vec::new();
        for key in &self.groups {
            out.push(item(
                KIND_DEPLOYMENT_GROUP,
                key,
                Some("its deployment history is kept".into()),
            ));
        }
        for name in &self.services {
            let tasks = current
                .tasks
                .iter()
                .filter(|t| t.service == *name && t.last_status != model::TaskStatus::Stopped)
                .count();
            out.push(item(
                KIND_SERVICE,
                name,
                Some(format!(
                    "its {tasks} task(s) leave their target group and stop after the deregistration \
                     delay"
                )),
            ));
        }
        for name in &self.alarms {
            out.push(item(KIND_ALARM, name, None));
        }
        for name in &self.metric_filters {
            out.push(item(KIND_METRIC_FILTER, name, None));
        }
        for name in &self.hooks {
            out.push(item(KIND_HOOK, name, None));
        }
        for name in &self.deployment_configs {
            out.push(item(KIND_DEPLOYMENT_CONFIG, name, None));
        }
        for name in &self.target_groups {
            let registered = current
                .target_groups
                .iter()
                .find(|t| t.name == *name)
                .map_or(0, |t| t.registered.len());
            let detail = (registered > 0)
                .then(|| format!("with its {registered} target(s) registered by hand"));
            out.push(item(KIND_TARGET_GROUP, name, detail));
        }
        for name in &self.load_balancers {
            let binds: Vec<String> = current
                .load_balancers
                .iter()
                .filter(|l| l.name == *name)
                .flat_map(|l| l.listeners.iter().map(|l| l.bind.to_string()))
                .collect();
            out.push(item(
                KIND_LOAD_BALANCER,
                name,
                Some(format!("stops listening on {}", binds.join(", "))),
            ));
        }
        out
    }

    /// Notes for the pipelines that stay but deploy to something this apply deletes.
    fn check_pipelines(&self, file: &spec::CutoverFile, notes: &mut Vec<String>) {
        for pipeline in &file.pipelines {
            for action in pipeline.stages.iter().flat_map(|s| &s.actions) {
                let target = match &action.kind {
                    spec::ActionKind::Deploy(d) => {
                        let key = d.deployment_group.to_string();
                        self.groups.contains(&key).then(|| format!("deployment group {key}"))
                    }
                    spec::ActionKind::DeployEcs(d) => {
                        self.services.contains(&d.service).then(|| format!("service {}", d.service))
                    }
                    _ => None,
                };
                if let Some(target) = target {
                    notes.push(format!(
                        "pipeline {}: action {} deploys to {target}, which this apply deletes; \
                         it fails until {target} exists again",
                        pipeline.name, action.name
                    ));
                }
            }
        }
    }

    /// Deletes, inside the apply's transaction, in an order that keeps references valid:
    /// deployment groups, then services (their tasks leave their target groups and stop after
    /// the deregistration delay, through the engine's usual drain), then what they used. Returns
    /// the tasks taken out of service.
    fn delete(&self, tx: &store::Tx<'_>, now: Timestamp) -> store::Result<Vec<store::TaskRow>> {
        for key in &self.groups {
            tx.resource_delete(KIND_DEPLOYMENT_GROUP, key)?;
            tx.resource_delete(KIND_GROUP_STATE, key)?;
        }
        let mut drained = Vec::new();
        for name in &self.services {
            // Drained before their target groups go: the drain reads the deregistration delay.
            for ts in tx.task_set_list()?.into_iter().filter(|ts| ts.service == *name) {
                let reason = format!("service {name} was deleted (no longer in cutover.yaml)");
                drained.extend(crate::engine::drain_task_set(tx, &ts.id, now, &reason)?);
            }
            tx.resource_delete(KIND_SERVICE, name)?;
        }
        if !self.alarms.is_empty() {
            for (key, _) in tx.resource_list(KIND_ALARM_STATE)? {
                let instance_of = |name: &String| {
                    key == *name
                        || key.strip_prefix(name.as_str()).is_some_and(|r| r.starts_with('@'))
                };
                if self.alarms.iter().any(instance_of) {
                    tx.resource_delete(KIND_ALARM_STATE, &key)?;
                }
            }
        }
        for (kind, names) in [
            (KIND_ALARM, &self.alarms),
            (KIND_METRIC_FILTER, &self.metric_filters),
            (KIND_HOOK, &self.hooks),
            (KIND_DEPLOYMENT_CONFIG, &self.deployment_configs),
            (KIND_TARGET_GROUP, &self.target_groups),
            (KIND_LOAD_BALANCER, &self.load_balancers),
        ] {
            for name in names {
                tx.resource_delete(kind, name)?;
            }
        }
        Ok(drained)
    }
}

/// Validates a deployment request completely, then creates the deployment and its state machine.
pub fn create_deployment(
    engine: &mut Engine,
    request: api::CreateDeploymentRequest,
    now: Timestamp,
) -> Result<(String, Rollout), ApiError> {
    let snapshot = engine.store.read(Snapshot::load)?;
    let group = snapshot.group(&request.group).cloned().ok_or_else(|| {
        let known: Vec<String> = snapshot.groups.iter().map(|g| g.key()).collect();
        ApiError::not_found(format!(
            "no deployment group `{}`; groups are named application/group ({})",
            request.group,
            if known.is_empty() {
                "none applied yet: run `cutover apply -f cutover.yaml`".to_string()
            } else {
                known.join(", ")
            }
        ))
    })?;
    let key = group.key();
    let group_state = snapshot.group_states.get(&key).cloned().unwrap_or_default();
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

    // An alarm of the group already in ALARM blocks the deployment (CodeDeploy does the same),
    // unless the caller overrides the alarm configuration for this deployment.
    if !request.ignore_alarms {
        for name in &group.alarms {
            let saved: Option<crate::documents::AlarmStateDoc> =
                engine.store.read(|tx| state::doc(tx, KIND_ALARM_STATE, name))?;
            if let Some(alarm) = saved.filter(|a| a.state() == alarms::AlarmState::Alarm) {
                return Err(ApiError::conflict(format!(
                    "alarm {name} of deployment group {key} is in ALARM ({}); fix what it watches, or \
                     deploy anyway with --ignore-alarms (the deployment then ignores the group's alarms)",
                    alarm.reason()
                )));
            }
        }
    }

    let appspec_file = &request.appspec.name;
    let appspec = spec::parse_appspec(appspec_file, &request.appspec.text)
        .map_err(|errors| ApiError::invalid_file(appspec_file, &errors))?
        .value;
    let (td, registered) = match &request.task_definition {
        Some(upload) => (load_task_definition(upload)?, None),
        None => {
            let reference = match &appspec.task_definition {
                spec::TaskDefinitionRef::Revision { family, revision } => {
                    format!("{family}:{revision}")
                }
                spec::TaskDefinitionRef::Latest { family } => family.clone(),
                spec::TaskDefinitionRef::Placeholder(p) => {
                    return Err(ApiError::bad_request(format!(
                        "{appspec_file}: TaskDefinition is the placeholder {p}; pass the task definition \
                         with `--task-definition taskdef.json`"
                    )));
                }
            };
            let row = engine.store.read(|tx| find_registered(tx, &reference))?.ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{appspec_file}: TaskDefinition `{reference}` is not registered (`cutover task-definitions list`)"
                ))
            })?;
            if row.status != "ACTIVE" {
                return Err(ApiError::bad_request(format!(
                    "{appspec_file}: task definition {reference} is INACTIVE and cannot start new tasks"
                )));
            }
            (serde_json::from_str::<spec::TaskDefinition>(&row.body)?, Some(row.revision))
        }
    };
    spec::check_appspec_against(appspec_file, &request.appspec.text, &appspec, &td)
        .map_err(|errors| ApiError::invalid_file(appspec_file, &errors))?;

    let config_name =
        request.deployment_config.clone().unwrap_or_else(|| group.deployment_config.clone());
    let custom: Vec<model::DeploymentConfig> =
        snapshot.deployment_configs.iter().map(|d| d.to_model()).collect();
    let config = spec::resolve_deployment_config(&config_name, &custom).ok_or_else(|| {
        ApiError::bad_request(format!(
            "deployment config `{config_name}` is neither predefined (CodeDeployDefault.ECS…) nor declared \
             under deployment_configs in cutover.yaml"
        ))
    })?;

    let hook_timeout = Duration::from_millis(group.hook_timeout_ms);
    let mut hook_docs: BTreeMap<String, HookTargetDoc> = BTreeMap::new();
    let mut hooks: BTreeMap<LifecycleEvent, Hook> = BTreeMap::new();
    for event in LifecycleEvent::HOOKABLE {
        let named =
            appspec.hooks.get(&event).cloned().map(|n| (n, appspec_file.as_str())).or_else(|| {
                group.hooks.get(event.as_str()).cloned().map(|n| (n, "deployment group hooks"))
            });
        if let Some((name, source)) = named {
            let doc = deployment::resolve_hook(&snapshot, &name, hook_timeout, event, source)?;
            hooks.insert(
                event,
                Hook { name: doc.name.clone(), timeout: Duration::from_millis(doc.timeout_ms) },
            );
            hook_docs.insert(event.as_str().to_string(), doc);
        }
    }

    let blue_id = group_state.primary_task_set.clone().ok_or_else(|| {
        ApiError::conflict(format!(
            "service {} has no running task set to deploy over; apply it first",
            group.service
        ))
    })?;
    let blue = snapshot
        .task_set(&blue_id)
        .cloned()
        .ok_or_else(|| ApiError::internal(format!("primary task set {blue_id} is missing")))?;
    let blue_tg = blue.target_group.clone().unwrap_or_else(|| group.target_groups[0].clone());
    let green_tg = reconciler::green_target_group(&group.target_groups, &blue_tg).to_string();

    let id = deployment::new_deployment_id();
    let spec = RolloutSpec {
        deployment_id: id.clone(),
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
        install_timeout: rollout::INSTALL_TIMEOUT_DEFAULT,
    };

    let machine = Rollout::new(spec, now);
    let machine_json = serde_json::to_string(&machine)?;
    let id_for_tx = id.clone();
    engine.store.transaction(|tx| {
        let revision = match registered {
            Some(revision) => revision,
            None => register_if_changed(tx, &td, now)?.0,
        };
        let body = DeploymentBody {
            application: group.application.clone(),
            deployment_group: group.name.clone(),
            service: group.service.clone(),
            task_definition: format!("{}:{revision}", td.family),
            container_name: appspec.container_name.clone(),
            container_port: appspec.container_port,
            deployment_config: config.name.clone(),
            routing: config.routing.to_string(),
            description: request.description.clone(),
            blue_task_set: blue_id.clone(),
            green_task_set: None,
            blue_target_group: blue_tg.clone(),
            green_target_group: green_tg.clone(),
            hooks: hook_docs.clone(),
            route_production_green_percent: 0,
            route_test_to_green: false,
            green_was_healthy: false,
            green_failure_reported: false,
            error_code: None,
            error_message: None,
            rolled_back: false,
            ignore_alarms: request.ignore_alarms,
        };
        tx.deployment_put(&store::DeploymentRow {
            id: id_for_tx.clone(),
            application: group.application.clone(),
            deployment_group: group.name.clone(),
            status: machine.status().as_str().to_string(),
            body: serde_json::to_string(&body)?,
            machine: machine_json.clone(),
            created_at: now.as_millis(),
            updated_at: now.as_millis(),
            completed_at: None,
        })?;
        tx.event_append(
            &id_for_tx,
            now.as_millis(),
            "created",
            &format!(
                "deploying {} to {key} with {} ({})",
                body.task_definition, config.name, config.routing
            ),
        )?;
        let mut state = group_state.clone();
        state.active_deployment = Some(id_for_tx.clone());
        tx.resource_put(KIND_GROUP_STATE, &key, &serde_json::to_string(&state)?, now.as_millis())?;
        Ok(())
    })?;
    Ok((id, machine))
}

/// Converts a stored task definition into what a runtime starts.
pub fn task_spec(
    task_id: &str,
    service: &ServiceDoc,
    revision: &str,
    deployment_id: Option<String>,
    td: &spec::TaskDefinition,
    lb_container: Option<(String, u16)>,
) -> runtime::TaskSpec {
    runtime::TaskSpec {
        task_id: task_id.to_string(),
        service: service.name.clone(),
        revision: revision.to_string(),
        deployment_id,
        containers: td
            .container_definitions
            .iter()
            .map(|c| runtime::ContainerSpec {
                name: c.name.clone(),
                image: c.image.clone(),
                essential: c.essential,
                entry_point: c.entry_point.clone(),
                command: c.command.clone(),
                environment: c
                    .environment
                    .iter()
                    .map(|kv| (kv.name.clone(), kv.value.clone()))
                    .collect(),
                working_directory: c.working_directory.clone(),
                ports: c.port_mappings.iter().map(|p| p.container_port).collect(),
                health_check: c.health_check.as_ref().map(|h| runtime::HealthCheckSpec {
                    command: h.command.clone(),
                    interval: Duration::from_secs(h.interval.into()),
                    timeout: Duration::from_secs(h.timeout.into()),
                    retries: h.retries,
                    start_period: Duration::from_secs(h.start_period.into()),
                }),
                stop_timeout: Duration::from_secs(c.stop_timeout.unwrap_or(30).into()),
                cpu: c.cpu,
                memory_mib: c.memory,
                memory_reservation_mib: c.memory_reservation,
                depends_on: c
                    .depends_on
                    .iter()
                    .map(|d| (d.container_name.clone(), d.condition.as_str().to_string()))
                    .collect(),
                labels: c.docker_labels.clone(),
            })
            .collect(),
        lb_container,
        cpu: td.cpu.clone(),
        memory: td.memory.clone(),
        network: service.network.clone(),
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
    let mut td: spec::TaskDefinition = serde_json::from_str(&row.body)?;
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

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use store::{DeploymentRow, TaskRow};

    use super::*;

    const HEALTH: &str = "health_check: { interval: 1s, timeout: 500ms }";

    /// Two stacks' worth of resources: web (service, group, listener, target groups) and a
    /// static target group with an alarm on it.
    fn full() -> String {
        format!(
            r#"load_balancers:
  - name: web
    listeners:
      - {{ name: prod, port: 18080 }}
target_groups:
  - {{ name: blue, {HEALTH}, deregistration_delay: 7s }}
  - {{ name: green, {HEALTH} }}
  - {{ name: static, targets: ["127.0.0.1:9"] }}
services:
  - name: web
    task_definition: web:1
    load_balancer: {{ target_group: blue, container_name: web, container_port: 8080 }}
deployment_configs:
  - {{ name: quick, type: AllAtOnce }}
deployment_groups:
  - {{ application: web, name: prod, service: web, deployment_config: quick, target_groups: [blue, green], production_listener: web/prod }}
hooks:
  - {{ name: smoke, run: "true" }}
alarms:
  - {{ name: cpu, metric: HealthyHostCount, target_group: blue, statistic: Minimum, period: 1s, evaluation_periods: 1, threshold: 1, comparison: ">=" }}
  - {{ name: cpu-high, metric: HealthyHostCount, target_group: static, statistic: Minimum, period: 1s, evaluation_periods: 1, threshold: 1, comparison: ">=" }}
"#
        )
    }

    /// Only the static target group and its alarm stay.
    const STATIC_ONLY: &str = r#"target_groups:
  - { name: static, targets: ["127.0.0.1:9"] }
alarms:
  - { name: cpu-high, metric: HealthyHostCount, target_group: static, statistic: Minimum, period: 1s, evaluation_periods: 1, threshold: 1, comparison: ">=" }
"#;

    fn parse(text: &str) -> spec::CutoverFile {
        spec::parse_cutover_file("cutover.yaml", text).unwrap_or_else(|e| panic!("{e}")).value
    }

    /// The service stays, forwarded to by its listener; the group and the green target group go.
    fn without_group() -> String {
        full()
            .replace("{ name: prod, port: 18080 }", "{ name: prod, port: 18080, default_action: { forward: blue } }")
            .replace(&format!("  - {{ name: green, {HEALTH} }}\n"), "")
            .replace(
                "  - { application: web, name: prod, service: web, deployment_config: quick, target_groups: [blue, green], production_listener: web/prod }\n",
                "",
            )
            .replace("deployment_groups:\n", "")
    }

    fn put<T: serde::Serialize>(
        tx: &store::Tx<'_>,
        kind: &str,
        name: &str,
        doc: &T,
    ) -> store::Result<()> {
        tx.resource_put(kind, name, &serde_json::to_string(doc)?, 1)
    }

    /// A store holding `full()` as `apply` writes it, web's task set (in `tg`) with one running
    /// task, the group's state, a finished deployment and alarm states.
    fn store_with(tg: &str, group_state: GroupState) -> Store {
        let store = Store::open_in_memory().unwrap();
        let file = parse(&full());
        store
            .transaction(|tx| {
                for lb in &file.load_balancers {
                    put(tx, KIND_LOAD_BALANCER, &lb.name, &load_balancer_doc(lb))?;
                }
                for t in &file.target_groups {
                    put(tx, KIND_TARGET_GROUP, &t.name, &target_group_doc(t))?;
                }
                for c in &file.deployment_configs {
                    put(tx, KIND_DEPLOYMENT_CONFIG, &c.name, &DeploymentConfigDoc::from_model(c))?;
                }
                for h in &file.hooks {
                    put(tx, KIND_HOOK, &h.name, &hook_doc(h))?;
                }
                for a in &file.alarms {
                    put(tx, KIND_ALARM, a.name(), &crate::monitor::AlarmDoc::from_decl(a))?;
                }
                let service = ServiceDoc {
                    name: "web".into(),
                    runtime: "process".into(),
                    task_definition: "web:1".into(),
                    desired_count: 1,
                    load_balancer: Some(ServiceLbDoc {
                        target_group: "blue".into(),
                        container_name: "web".into(),
                        container_port: 8080,
                    }),
                    network: None,
                };
                put(tx, KIND_SERVICE, "web", &service)?;
                let group = deployment_group_doc(&file.deployment_groups[0]);
                put(tx, KIND_DEPLOYMENT_GROUP, &group.key(), &group)?;
                put(tx, KIND_GROUP_STATE, &group.key(), &group_state)?;
                tx.task_set_put(&TaskSetRow {
                    id: "ts-1".into(),
                    service: "web".into(),
                    task_definition: "web:1".into(),
                    target_group: Some(tg.into()),
                    status: model::TaskSetStatus::Primary,
                    deployment_id: None,
                    desired_count: 1,
                    created_at: 1,
                    updated_at: 1,
                })?;
                tx.task_put(&TaskRow {
                    id: "t-1".into(),
                    task_set_id: "ts-1".into(),
                    service: "web".into(),
                    runtime: model::RuntimeKind::Process,
                    last_status: model::TaskStatus::Running,
                    desired_status: model::DesiredStatus::Running,
                    health: model::TaskHealth::Healthy,
                    handle: None,
                    addr: Some("127.0.0.2:8080".into()),
                    stop_at: None,
                    stopped_reason: None,
                    created_at: 1,
                    started_at: Some(1),
                    stopped_at: None,
                })?;
                tx.deployment_put(&DeploymentRow {
                    id: "d-1".into(),
                    application: "web".into(),
                    deployment_group: "prod".into(),
                    status: "Succeeded".into(),
                    body: "{}".into(),
                    machine: "{}".into(),
                    created_at: 1,
                    updated_at: 2,
                    completed_at: Some(2),
                })?;
                for key in ["cpu", "cpu@d-1", "cpu-high", "cpu-high@d-1"] {
                    tx.resource_put(KIND_ALARM_STATE, key, "{}", 1)?;
                }
                Ok(())
            })
            .unwrap();
        store
    }

    fn removals(store: &Store, text: &str) -> Result<Removals, ApiError> {
        let current = store.read(Snapshot::load).unwrap();
        plan_removals(store, &parse(text), &current, "cutover.yaml")
    }

    fn names(store: &Store, kind: &str) -> Vec<String> {
        store.read(|tx| tx.resource_list(kind)).unwrap().into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn deleting_a_stack_drains_its_tasks_and_keeps_history_and_what_stays() {
        let store = store_with("blue", GroupState::default());
        let removed = removals(&store, STATIC_ONLY).unwrap();
        assert_eq!(removed.groups, ["web/prod"]);
        assert_eq!(removed.services, ["web"]);
        assert_eq!(removed.alarms, ["cpu"]);
        assert_eq!(removed.hooks, ["smoke"]);
        assert_eq!(removed.deployment_configs, ["quick"]);
        assert_eq!(removed.target_groups, ["blue", "green"]);
        assert_eq!(removed.load_balancers, ["web"]);
        let current = store.read(Snapshot::load).unwrap();
        let actions: Vec<(String, String)> =
            removed.plan_items(&current).into_iter().map(|i| (i.kind, i.action)).collect();
        assert_eq!(actions.first(), Some(&("deployment_group".into(), "delete".into())));
        assert_eq!(actions.last(), Some(&("load_balancer".into(), "delete".into())));

        let drained = store.transaction(|tx| removed.delete(tx, Timestamp(1_000))).unwrap();
        // The task leaves its target group and stops after blue's deregistration delay.
        assert_eq!(drained.len(), 1);
        let task = store.read(|tx| tx.task_get("t-1")).unwrap().unwrap();
        assert_eq!(
            (task.last_status.as_str(), task.desired_status.as_str()),
            ("DEACTIVATING", "STOPPED")
        );
        assert_eq!(task.stop_at, Some(8_000));
        assert!(task.stopped_reason.unwrap().contains("service web was deleted"));
        let ts = store.read(|tx| tx.task_set_get("ts-1")).unwrap().unwrap();
        assert_eq!((ts.status.as_str(), ts.desired_count), ("DRAINING", 0));

        for kind in [
            KIND_SERVICE,
            KIND_DEPLOYMENT_GROUP,
            KIND_GROUP_STATE,
            KIND_HOOK,
            KIND_DEPLOYMENT_CONFIG,
            KIND_LOAD_BALANCER,
        ] {
            assert!(names(&store, kind).is_empty(), "{kind}: {:?}", names(&store, kind));
        }
        assert_eq!(names(&store, KIND_TARGET_GROUP), ["static"]);
        assert_eq!(names(&store, KIND_ALARM), ["cpu-high"]);
        // Every instance of the deleted alarm goes; an alarm whose name merely starts alike stays.
        assert_eq!(names(&store, KIND_ALARM_STATE), ["cpu-high", "cpu-high@d-1"]);
        // Deployments are history.
        assert!(store.read(|tx| tx.deployment_get("d-1")).unwrap().is_some());
        // Applying the same file again deletes nothing more.
        let again = removals(&store, STATIC_ONLY).unwrap();
        assert!(again.plan_items(&store.read(Snapshot::load).unwrap()).is_empty());
    }

    #[test]
    fn a_deployment_in_progress_blocks_removing_its_service_or_its_group() {
        let active = GroupState { active_deployment: Some("d-2".into()), ..GroupState::default() };
        let store = store_with("blue", active);
        let err = removals(&store, STATIC_ONLY).err().unwrap();
        assert_eq!(err.status, StatusCode::CONFLICT);
        assert!(
            err.body.error.contains("service web")
                && err.body.error.contains("deployment d-2 in progress")
                && err.body.error.contains("cutover deployments stop d-2"),
            "{}",
            err.body.error
        );
        let err = removals(&store, &without_group()).err().unwrap();
        assert_eq!(err.status, StatusCode::CONFLICT);
        assert!(
            err.body.error.contains("deployment group web/prod has deployment d-2 in progress"),
            "{}",
            err.body.error
        );
    }

    #[test]
    fn a_group_whose_green_was_left_running_goes_only_with_its_service() {
        let leftover =
            GroupState { leftover_deployment: Some("d-3".into()), ..GroupState::default() };
        let store = store_with("blue", leftover);
        let err = removals(&store, &without_group()).err().unwrap();
        assert_eq!(err.status, StatusCode::CONFLICT);
        assert!(err.body.error.contains("cutover deployments rollback d-3"), "{}", err.body.error);
        assert!(removals(&store, STATIC_ONLY).is_ok(), "removing the service too drains green");
    }

    #[test]
    fn a_target_group_where_remaining_tasks_run_is_not_deleted() {
        // After a deployment blue runs in the group's second target group.
        let store = store_with("green", GroupState::default());
        let err = removals(&store, &without_group()).err().unwrap();
        assert_eq!(err.status, StatusCode::CONFLICT);
        assert!(
            err.body.error.contains("target group green") && err.body.error.contains("service web"),
            "{}",
            err.body.error
        );
        // Where the service's tasks run now is fine.
        let store = store_with("blue", GroupState::default());
        let removed = removals(&store, &without_group()).unwrap();
        assert_eq!(removed.target_groups, ["green"]);
        assert!(removed.services.is_empty());
    }

    #[test]
    fn validation_refuses_a_file_that_names_a_resource_it_no_longer_declares() {
        // What apply relies on: nothing that stays can point at something that goes.
        let dangling = [
            ("green", full().replace(&format!("  - {{ name: green, {HEALTH} }}\n"), "")),
            (
                "smoke",
                full().replace("hooks:\n  - { name: smoke, run: \"true\" }\n", "").replace(
                    "production_listener: web/prod }",
                    "production_listener: web/prod, hooks: { AfterInstall: smoke } }",
                ),
            ),
            ("quick", full().replace("deployment_configs:\n  - { name: quick, type: AllAtOnce }\n", "")),
            ("blue", STATIC_ONLY.replace("target_group: static", "target_group: blue")),
            ("web/prod", STATIC_ONLY.replace("target_groups:", "load_balancers:\n  - name: web\n    listeners:\n      - { name: prod, port: 18080 }\ntarget_groups:")),
        ];
        for (missing, text) in dangling {
            let Err(errors) = spec::parse_cutover_file("cutover.yaml", &text) else {
                panic!("accepted without {missing}:\n{text}");
            };
            assert!(errors.to_string().contains(missing), "{errors}");
        }
        // Predefined deployment configs are never stored, so never deleted: only the custom one
        // the file no longer declares goes.
        let store = store_with("blue", GroupState::default());
        let builtin = full()
            .replace("deployment_configs:\n  - { name: quick, type: AllAtOnce }\n", "")
            .replace(
                "deployment_config: quick",
                "deployment_config: CodeDeployDefault.ECSAllAtOnce",
            );
        let removed = removals(&store, &builtin).unwrap();
        assert_eq!(removed.deployment_configs, ["quick"]);
    }
}
