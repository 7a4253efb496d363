//! What `apply` will do: every declared resource compared with what the store holds (create,
//! update or no change), the deletions, and the candidate state whose routing table the data
//! plane validates before anything is stored. Planning changes nothing.
//!
//! A plan costs what the file holds, not what the store holds times that: every declared
//! document is compared with the stored bodies read once ([`Stored`], in the transaction that
//! read the current state), and the candidate state takes each kind's declared documents in one
//! pass.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use serde::Serialize;
use store::Store;

use super::removals::{Removals, plan_removals};
use super::task_definitions::{ServiceTaskDefinitions, split_revision};
use crate::api::PlanItem;
use crate::declared::*;
use crate::error::ApiError;
use crate::state::Snapshot;

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

/// The kinds of resource a file declares: what [`Stored`] holds.
const DECLARED_KINDS: [&str; 10] = [
    KIND_LOAD_BALANCER,
    KIND_TARGET_GROUP,
    KIND_DEPLOYMENT_CONFIG,
    KIND_HOOK,
    KIND_ALARM,
    KIND_METRIC_FILTER,
    KIND_ROLE,
    KIND_OIDC_GROUP,
    KIND_SERVICE,
    KIND_DEPLOYMENT_GROUP,
];

/// The stored body of every resource of the kinds a file declares, by kind and name: read in
/// one transaction (the one that reads the current state, so both tell the same story), so
/// that planning a file of thousands of resources is not thousands of reads.
#[derive(Default)]
pub(super) struct Stored(HashMap<&'static str, HashMap<String, String>>);

impl Stored {
    pub(super) fn load(tx: &store::Tx<'_>) -> store::Result<Stored> {
        let mut stored = Stored::default();
        for kind in DECLARED_KINDS {
            stored.0.insert(kind, tx.resource_list(kind)?.into_iter().collect());
        }
        Ok(stored)
    }

    fn body(&self, kind: &str, name: &str) -> Option<&str> {
        self.0.get(kind)?.get(name).map(String::as_str)
    }
}

/// Plans `file` against the stored state `current` and its bodies `stored` (read together);
/// refuses (nothing changed) a change that would cut a deployment short or that cannot be made
/// in place.
pub(super) fn plan(
    store: &Store,
    stored: &Stored,
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
    plan.declare_routing(stored, file, current)?;
    plan.declare_monitoring(stored, file)?;
    for role in &file.access.roles {
        plan.declare(stored, KIND_ROLE, &role.name, &RoleDoc(role.clone()))?;
    }
    for group in &file.access.groups {
        plan.declare(stored, KIND_OIDC_GROUP, &group.group, &GroupDoc(group.clone()))?;
    }
    let mut services = Vec::new();
    for service in &file.services {
        let task_definition = &task_definitions[&service.name];
        services.push(plan.declare_service(
            store,
            (stored, current),
            service,
            task_definition,
            file_name,
            notes,
        )?);
    }
    replace_all(&mut plan.candidate.services, services, |d| d.name.clone());
    let mut groups = Vec::new();
    for group in &file.deployment_groups {
        groups.push(plan.declare_group(stored, group, current)?);
    }
    replace_all(&mut plan.candidate.groups, groups, DeploymentGroupDoc::key);
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

/// `docs` in place of the documents of `list` of the same `key`, or added: the others keep
/// their order, `docs` follow in theirs. One pass, whatever the number of documents.
fn replace_all<T, K: Eq + Hash>(list: &mut Vec<T>, docs: Vec<T>, key: impl Fn(&T) -> K) {
    let replaced: HashSet<K> = docs.iter().map(&key).collect();
    list.retain(|d| !replaced.contains(&key(d)));
    list.extend(docs);
}

impl Plan {
    /// Adds `kind`/`name` to the plan: an item, and a write unless the store holds it as is.
    fn declare<T: Serialize>(
        &mut self,
        stored: &Stored,
        kind: &'static str,
        name: &str,
        doc: &T,
    ) -> Result<(), ApiError> {
        let body = serde_json::to_string(doc)?;
        let item = plan_item(kind, name, stored.body(kind, name), &body);
        if item.action != "no change" {
            self.writes.push((kind, name.to_string(), body));
        }
        self.items.push(item);
        Ok(())
    }

    /// Load balancers, target groups, deployment configs and hooks.
    fn declare_routing(
        &mut self,
        stored: &Stored,
        file: &config::CutoverFile,
        current: &Snapshot,
    ) -> Result<(), ApiError> {
        let mut docs = Vec::new();
        for lb in &file.load_balancers {
            let doc = load_balancer_doc(lb);
            self.declare(stored, KIND_LOAD_BALANCER, &lb.name, &doc)?;
            if let Some(item) = self.items.last_mut() {
                item.detail = rules_summary(&doc);
            }
            docs.push(doc);
        }
        replace_all(&mut self.candidate.load_balancers, docs, |d| d.name.clone());
        let current_groups: HashMap<&str, &TargetGroupDoc> =
            current.target_groups.iter().map(|d| (d.name.as_str(), d)).collect();
        let mut docs = Vec::new();
        for tg in &file.target_groups {
            let mut doc = target_group_doc(tg);
            // Targets registered by hand belong to the target group, not to the file.
            if let Some(stored) = current_groups.get(tg.name.as_str()) {
                doc.registered = stored
                    .registered
                    .iter()
                    .filter(|a| !doc.targets.contains(a))
                    .copied()
                    .collect();
            }
            self.declare(stored, KIND_TARGET_GROUP, &tg.name, &doc)?;
            docs.push(doc);
        }
        replace_all(&mut self.candidate.target_groups, docs, |d| d.name.clone());
        let mut docs = Vec::new();
        for config in &file.deployment_configs {
            let doc = DeploymentConfigDoc::from_model(config);
            self.declare(stored, KIND_DEPLOYMENT_CONFIG, &config.name, &doc)?;
            docs.push(doc);
        }
        replace_all(&mut self.candidate.deployment_configs, docs, |d| d.name.clone());
        let mut docs = Vec::new();
        for hook in &file.hooks {
            let doc = hook_doc(hook);
            self.declare(stored, KIND_HOOK, &hook.name, &doc)?;
            docs.push(doc);
        }
        replace_all(&mut self.candidate.hooks, docs, |d| d.name.clone());
        Ok(())
    }

    /// Alarms and metric filters (the candidate state does not hold them: they do not route).
    fn declare_monitoring(
        &mut self,
        stored: &Stored,
        file: &config::CutoverFile,
    ) -> Result<(), ApiError> {
        for alarm in &file.alarms {
            let doc = crate::monitor::AlarmDoc::from_decl(alarm);
            self.declare(stored, KIND_ALARM, alarm.name(), &doc)?;
        }
        for filter in &file.metric_filters {
            let doc = crate::monitor::MetricFilterDoc {
                service: filter.service.clone(),
                spec: filter.spec.clone(),
            };
            self.declare(stored, KIND_METRIC_FILTER, &filter.spec.name, &doc)?;
        }
        Ok(())
    }

    /// A new service gets its first task set; an existing one keeps its tasks (a new task
    /// definition is released with `cutover deploy`, as on ECS with the CODE_DEPLOY controller).
    /// Returns its document, for the candidate state.
    fn declare_service(
        &mut self,
        store: &Store,
        (stored, current): (&Stored, &Snapshot),
        service: &config::ServiceSpec,
        (td, registered_revision): &(config::TaskDefinition, Option<u32>),
        file_name: &str,
        notes: &mut Vec<String>,
    ) -> Result<ServiceDoc, ApiError> {
        let existing = current.service(&service.name).cloned();
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
        self.declare(stored, KIND_SERVICE, &service.name, &doc)?;
        Ok(doc)
    }

    /// A deployment group changes only while no deployment of it is in progress. Returns its
    /// document, for the candidate state.
    fn declare_group(
        &mut self,
        stored: &Stored,
        group: &config::DeploymentGroupSpec,
        current: &Snapshot,
    ) -> Result<DeploymentGroupDoc, ApiError> {
        let doc = deployment_group_doc(group);
        let key = doc.key();
        let body = serde_json::to_string(&doc)?;
        let before = stored.body(KIND_DEPLOYMENT_GROUP, &key);
        let changed = before.is_some_and(|before| before != body);
        let active = current.group_states.get(&key).and_then(|s| s.active_deployment.as_ref());
        if changed && let Some(active) = active {
            return Err(ApiError::conflict(format!(
                "deployment group {key} has deployment {active} in progress; wait for it \
                 (`cutover deployments watch {active}`) or stop it before changing the group"
            )));
        }
        self.declare(stored, KIND_DEPLOYMENT_GROUP, &key, &doc)?;
        Ok(doc)
    }

    /// The state the store holds once this plan is committed, without reading it again: the
    /// candidate (taken), with the task sets of removed services, which stay stored until the
    /// reconciler has drained them, and new services' documents as the commit completed them
    /// with the revision it registered. `current_task_sets` are those of the state planned
    /// against; `tx` reads the store after the commit.
    pub(super) fn committed(
        &mut self,
        tx: &store::Tx<'_>,
        current_task_sets: Vec<store::TaskSetRow>,
    ) -> store::Result<Snapshot> {
        let mut committed = std::mem::take(&mut self.candidate);
        committed.task_sets = current_task_sets;
        for name in &self.revisions_to_register {
            let Some(stored) = crate::state::doc::<ServiceDoc>(tx, KIND_SERVICE, name)? else {
                continue;
            };
            if let Some(service) = committed.services.iter_mut().find(|s| s.name == *name) {
                *service = stored;
            }
        }
        Ok(committed)
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

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"load_balancers:
  - name: web
    listeners:
      - name: http
        port: 18080
        default_action: { fixed_response: { status_code: 404 } }
        rules:
          - { priority: 1, conditions: [{ host_header: [a.example.com] }], action: { forward: [{ target_group: a, weight: 1 }, { target_group: b, weight: 0 }] } }
target_groups:
  - { name: a, targets: ["127.0.0.1:9"] }
  - { name: b, targets: ["127.0.0.2:9"] }
  - { name: c, targets: ["127.0.0.3:9"] }
"#;

    fn parse(text: &str) -> config::CutoverFile {
        config::parse_cutover_file("cutover.yaml", text).unwrap_or_else(|e| panic!("{e}")).value
    }

    /// Plans `text` against `store` and writes what it would, as the commit does.
    fn plan_and_write(store: &Store, text: &str) -> Plan {
        let file = parse(text);
        let (current, stored) =
            store.read(|tx| Ok((Snapshot::load(tx)?, Stored::load(tx)?))).unwrap();
        let plan = plan(
            store,
            &stored,
            &file,
            "cutover.yaml",
            &current,
            &Default::default(),
            &mut Vec::new(),
        )
        .unwrap();
        store
            .transaction(|tx| {
                for (kind, name, body) in &plan.writes {
                    tx.resource_put(kind, name, body, 1)?;
                }
                plan.removed.delete(tx)
            })
            .unwrap();
        plan
    }

    #[test]
    fn a_plan_of_an_unchanged_file_writes_nothing_and_its_candidate_is_the_stored_state() {
        let store = Store::open_in_memory().unwrap();
        let first = plan_and_write(&store, FILE);
        assert_eq!(first.writes.len(), 4, "the load balancer and three target groups");
        let again = plan_and_write(&store, FILE);
        assert!(again.writes.is_empty(), "{:?}", again.writes);
        assert!(again.items.iter().all(|i| i.action == "no change"), "{:?}", again.items);
        let stored = store.read(Snapshot::load).unwrap();
        assert_eq!(again.candidate.route_table(0), stored.route_table(0));
    }

    #[test]
    fn the_committed_state_declares_and_routes_as_the_store_read_back_after_the_commit() {
        let store = Store::open_in_memory().unwrap();
        plan_and_write(&store, FILE);
        // A routing change (the weights swapped), a target group changed and one removed.
        let changed = FILE
            .replace(
                "a, weight: 1 }, { target_group: b, weight: 0",
                "a, weight: 0 }, { target_group: b, weight: 1",
            )
            .replace("127.0.0.2:9", "127.0.0.4:9")
            .replace("  - { name: c, targets: [\"127.0.0.3:9\"] }\n", "");
        assert_ne!(changed, FILE);
        let current_task_sets = store.read(|tx| tx.task_set_list()).unwrap();
        let mut plan = plan_and_write(&store, &changed);
        assert!(!plan.writes.is_empty() && !plan.removed.target_groups.is_empty());
        let committed = store.read(|tx| plan.committed(tx, current_task_sets)).unwrap();
        let stored = store.read(Snapshot::load).unwrap();
        assert_eq!(committed.route_table(0), stored.route_table(0));
        let (declared, read_back) = store
            .read(|tx| {
                let declared = crate::persisted::declared_of(tx, &committed);
                Ok((declared, crate::persisted::declared_from(tx)))
            })
            .unwrap();
        let read_back = read_back.unwrap();
        assert_eq!(declared.unwrap(), read_back);
        assert_eq!(
            read_back.deregistration_delays.keys().collect::<Vec<_>>(),
            ["a", "b"],
            "the removed target group is no longer declared"
        );
    }

    #[test]
    fn a_plan_writes_only_the_resource_that_changed_and_its_candidate_has_it_once() {
        let store = Store::open_in_memory().unwrap();
        plan_and_write(&store, FILE);
        let changed = FILE.replace("127.0.0.2:9", "127.0.0.4:9");
        let plan = plan_and_write(&store, &changed);
        let written: Vec<(&str, &str)> =
            plan.writes.iter().map(|(kind, name, _)| (*kind, name.as_str())).collect();
        assert_eq!(written, [(KIND_TARGET_GROUP, "b")]);
        let names: Vec<&str> =
            plan.candidate.target_groups.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let b = &plan.candidate.target_groups[1];
        assert_eq!(b.targets, ["127.0.0.4:9".parse::<std::net::SocketAddr>().unwrap()]);
    }
}
