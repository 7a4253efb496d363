//! What `apply` will do: every declared resource compared with what the store holds (create,
//! update or no change), the deletions, and the candidate state whose routing table the data
//! plane validates before anything is stored. Planning changes nothing.

use serde::Serialize;
use store::Store;

use super::removals::{Removals, plan_removals};
use super::task_definitions::{ServiceTaskDefinitions, split_revision};
use crate::api::PlanItem;
use crate::declared::*;
use crate::error::ApiError;
use crate::state::{self, Snapshot};

pub(super) struct Plan {
    pub(super) items: Vec<PlanItem>,
    /// (kind, name, body) of every resource to create or update.
    pub(super) writes: Vec<(&'static str, String, String)>,
    /// The state the store holds once the plan is committed.
    pub(super) candidate: Snapshot,
    /// Services this file creates: each gets its first task set.
    pub(super) new_services: Vec<String>,
    /// New services whose task definition comes from a file: the commit registers it.
    pub(super) revisions_to_register: Vec<String>,
    pub(super) removed: Removals,
}

/// Plans `file` against the stored state `current`; refuses (nothing changed) a change that
/// would cut a deployment short or that cannot be made in place.
pub(super) fn plan(
    store: &Store,
    file: &config::CutoverFile,
    file_name: &str,
    current: &Snapshot,
    task_definitions: &ServiceTaskDefinitions,
    notes: &mut Vec<String>,
) -> Result<Plan, ApiError> {
    let mut plan = Plan {
        items: Vec::new(),
        writes: Vec::new(),
        candidate: current.clone(),
        new_services: Vec::new(),
        revisions_to_register: Vec::new(),
        removed: Removals::default(),
    };
    plan.declare_routing(store, file, current)?;
    plan.declare_monitoring(store, file)?;
    for role in &file.access.roles {
        plan.declare(store, KIND_ROLE, &role.name, &RoleDoc(role.clone()))?;
    }
    for group in &file.access.groups {
        plan.declare(store, KIND_OIDC_GROUP, &group.group, &GroupDoc(group.clone()))?;
    }
    for service in &file.services {
        let task_definition = &task_definitions[&service.name];
        plan.declare_service(store, service, task_definition, file_name, notes)?;
    }
    for group in &file.deployment_groups {
        plan.declare_group(store, group, current)?;
    }
    // What the store holds and the file no longer declares is deleted, as Terraform and
    // CloudFormation do. Every refusal comes before any change.
    plan.removed = plan_removals(store, file, current, file_name)?;
    plan.removed.check_pipelines(file, notes);
    plan.remove_from_candidate();
    plan.items.extend(plan.removed.plan_items(current));
    for item in plan.items.iter_mut().filter(|i| i.kind == KIND_ROLE && i.action == "delete") {
        item.detail = crate::access::bound_to_role(store, &item.name)?;
    }
    Ok(plan)
}

/// Whether a declared resource is new, changed or the same as stored.
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

/// What the plan says of a load balancer's listener rules: per listener, each rule's priority
/// and the fields of its conditions, lowest priority first (`prod: 10 host-header, 20
/// host-header+path-pattern`); `None` without rules.
fn rules_summary(doc: &LoadBalancerDoc) -> Option<String> {
    let listeners: Vec<String> = doc
        .listeners
        .iter()
        .filter(|l| !l.rules.is_empty())
        .map(|l| {
            let mut rules: Vec<&routes::Rule> = l.rules.iter().collect();
            rules.sort_by_key(|r| r.priority);
            let rules: Vec<String> = rules
                .iter()
                .map(|r| {
                    let fields: Vec<&str> = r.conditions.iter().map(|c| c.field()).collect();
                    format!("{} {}", r.priority, fields.join("+"))
                })
                .collect();
            format!("{}: {}", l.name, rules.join(", "))
        })
        .collect();
    (!listeners.is_empty()).then(|| format!("rules on {}", listeners.join("; ")))
}

/// `doc` in place of the document of `list` it replaces (by `same`), or added.
fn replace<T>(list: &mut Vec<T>, doc: T, same: impl Fn(&T, &T) -> bool) {
    list.retain(|d| !same(d, &doc));
    list.push(doc);
}

impl Plan {
    /// Adds `kind`/`name` to the plan: an item, and a write unless the store holds it as is.
    fn declare<T: Serialize>(
        &mut self,
        store: &Store,
        kind: &'static str,
        name: &str,
        doc: &T,
    ) -> Result<(), ApiError> {
        let body = serde_json::to_string(doc)?;
        let before = store.read(|tx| tx.resource_get(kind, name))?;
        let item = plan_item(kind, name, before.as_deref(), &body);
        if item.action != "no change" {
            self.writes.push((kind, name.to_string(), body));
        }
        self.items.push(item);
        Ok(())
    }

    /// Load balancers, target groups, deployment configs and hooks.
    fn declare_routing(
        &mut self,
        store: &Store,
        file: &config::CutoverFile,
        current: &Snapshot,
    ) -> Result<(), ApiError> {
        for lb in &file.load_balancers {
            let doc = load_balancer_doc(lb);
            self.declare(store, KIND_LOAD_BALANCER, &lb.name, &doc)?;
            if let Some(item) = self.items.last_mut() {
                item.detail = rules_summary(&doc);
            }
            replace(&mut self.candidate.load_balancers, doc, |a, b| a.name == b.name);
        }
        for tg in &file.target_groups {
            let mut doc = target_group_doc(tg);
            // Targets registered by hand belong to the target group, not to the file.
            if let Some(stored) = current.target_groups.iter().find(|d| d.name == tg.name) {
                doc.registered = stored
                    .registered
                    .iter()
                    .filter(|a| !doc.targets.contains(a))
                    .copied()
                    .collect();
            }
            self.declare(store, KIND_TARGET_GROUP, &tg.name, &doc)?;
            replace(&mut self.candidate.target_groups, doc, |a, b| a.name == b.name);
        }
        for config in &file.deployment_configs {
            let doc = DeploymentConfigDoc::from_model(config);
            self.declare(store, KIND_DEPLOYMENT_CONFIG, &config.name, &doc)?;
            replace(&mut self.candidate.deployment_configs, doc, |a, b| a.name == b.name);
        }
        for hook in &file.hooks {
            let doc = hook_doc(hook);
            self.declare(store, KIND_HOOK, &hook.name, &doc)?;
            replace(&mut self.candidate.hooks, doc, |a, b| a.name == b.name);
        }
        Ok(())
    }

    /// Alarms and metric filters (the candidate state does not hold them: they do not route).
    fn declare_monitoring(
        &mut self,
        store: &Store,
        file: &config::CutoverFile,
    ) -> Result<(), ApiError> {
        for alarm in &file.alarms {
            let doc = crate::monitor::AlarmDoc::from_decl(alarm);
            self.declare(store, KIND_ALARM, alarm.name(), &doc)?;
        }
        for filter in &file.metric_filters {
            let doc = crate::monitor::MetricFilterDoc {
                service: filter.service.clone(),
                spec: filter.spec.clone(),
            };
            self.declare(store, KIND_METRIC_FILTER, &filter.spec.name, &doc)?;
        }
        Ok(())
    }

    /// A new service gets its first task set; an existing one keeps its tasks (a new task
    /// definition is released with `cutover deploy`, as on ECS with the CODE_DEPLOY controller).
    fn declare_service(
        &mut self,
        store: &Store,
        service: &config::ServiceSpec,
        (td, registered_revision): &(config::TaskDefinition, Option<u32>),
        file_name: &str,
        notes: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        let existing: Option<ServiceDoc> =
            store.read(|tx| state::doc(tx, KIND_SERVICE, &service.name))?;
        let runtime = match service.runtime {
            config::RuntimeKind::Process => "process",
            config::RuntimeKind::Docker => "docker",
            config::RuntimeKind::Swarm => "swarm",
        };
        let task_definition = match (&existing, registered_revision) {
            (Some(existing), _) => {
                check_service_in_place(store, existing, service, td, runtime, file_name, notes)?;
                existing.task_definition.clone()
            }
            (None, Some(revision)) => format!("{}:{revision}", td.family),
            (None, None) => {
                self.revisions_to_register.push(service.name.clone());
                self.items.push(PlanItem {
                    kind: "task_definition".into(),
                    name: td.family.clone(),
                    action: "create".into(),
                    detail: Some(
                        "registered as a new revision unless identical to the latest".into(),
                    ),
                });
                // The revision is known once registered; the commit completes the document.
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
            self.new_services.push(service.name.clone());
        }
        self.declare(store, KIND_SERVICE, &service.name, &doc)?;
        replace(&mut self.candidate.services, doc, |a, b| a.name == b.name);
        Ok(())
    }

    /// A deployment group changes only while no deployment of it is in progress.
    fn declare_group(
        &mut self,
        store: &Store,
        group: &config::DeploymentGroupSpec,
        current: &Snapshot,
    ) -> Result<(), ApiError> {
        let doc = deployment_group_doc(group);
        let key = doc.key();
        let body = serde_json::to_string(&doc)?;
        let before = store.read(|tx| tx.resource_get(KIND_DEPLOYMENT_GROUP, &key))?;
        let changed = before.is_some_and(|before| before != body);
        let active = current.group_states.get(&key).and_then(|s| s.active_deployment.as_ref());
        if changed && let Some(active) = active {
            return Err(ApiError::conflict(format!(
                "deployment group {key} has deployment {active} in progress; wait for it \
                 (`cutover deployments watch {active}`) or stop it before changing the group"
            )));
        }
        self.declare(store, KIND_DEPLOYMENT_GROUP, &key, &doc)?;
        replace(&mut self.candidate.groups, doc, |a, b| a.key() == b.key());
        Ok(())
    }

    fn remove_from_candidate(&mut self) {
        let (removed, candidate) = (&self.removed, &mut self.candidate);
        candidate.load_balancers.retain(|d| !removed.load_balancers.contains(&d.name));
        candidate.target_groups.retain(|d| !removed.target_groups.contains(&d.name));
        candidate.deployment_configs.retain(|d| !removed.deployment_configs.contains(&d.name));
        candidate.hooks.retain(|d| !removed.hooks.contains(&d.name));
        candidate.services.retain(|d| !removed.services.contains(&d.name));
        candidate.task_sets.retain(|ts| !removed.services.contains(&ts.service));
        candidate.groups.retain(|g| !removed.groups.contains(&g.key()));
        candidate.group_states.retain(|key, _| !removed.groups.contains(key));
    }
}

/// An existing service keeps its tasks and its runtime: a different task definition is a note
/// (release it with `cutover deploy`), a different runtime a refusal.
fn check_service_in_place(
    store: &Store,
    existing: &ServiceDoc,
    service: &config::ServiceSpec,
    td: &config::TaskDefinition,
    runtime: &str,
    file_name: &str,
    notes: &mut Vec<String>,
) -> Result<(), ApiError> {
    let existing_td = split_revision(&existing.task_definition)
        .and_then(|(f, r)| store.read(|tx| tx.task_definition_get(&f, r)).ok().flatten())
        .and_then(|row| serde_json::from_str::<config::TaskDefinition>(&row.body).ok());
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
    Ok(())
}
