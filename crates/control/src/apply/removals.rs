//! What `apply` deletes: the declared resources the store has and the file no longer declares,
//! the refusals that keep a deletion from cutting a deployment short, and the deletions
//! themselves, inside the apply's transaction.

use store::Store;

use crate::api::PlanItem;
use crate::declared::*;
use crate::error::ApiError;
use crate::state::Snapshot;

/// The declared resources the store has and the file no longer declares, by kind.
#[derive(Default)]
pub(super) struct Removals {
    pub(super) groups: Vec<String>,
    pub(super) services: Vec<String>,
    pub(super) alarms: Vec<String>,
    pub(super) metric_filters: Vec<String>,
    pub(super) hooks: Vec<String>,
    pub(super) deployment_configs: Vec<String>,
    pub(super) target_groups: Vec<String>,
    pub(super) load_balancers: Vec<String>,
    pub(super) roles: Vec<String>,
    pub(super) oidc_groups: Vec<String>,
}

/// Finds what `apply` deletes, and refuses (409, nothing changed) when a deletion would cut a
/// deployment short or leave tasks pointing at something deleted.
pub(super) fn plan_removals(
    store: &Store,
    file: &config::CutoverFile,
    current: &Snapshot,
    file_name: &str,
) -> Result<Removals, ApiError> {
    let gone = |declared: &[&str], stored: Vec<String>| -> Vec<String> {
        // A set: a file of a thousand target groups is not a million comparisons.
        let declared: std::collections::HashSet<&str> = declared.iter().copied().collect();
        stored.into_iter().filter(|name| !declared.contains(name.as_str())).collect()
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
        roles: gone(
            &file.access.roles.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            names(KIND_ROLE)?,
        ),
        oidc_groups: gone(
            &file.access.groups.iter().map(|g| g.group.as_str()).collect::<Vec<_>>(),
            names(KIND_OIDC_GROUP)?,
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
    pub(super) fn plan_items(&self, current: &Snapshot) -> Vec<PlanItem> {
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
        for name in &self.roles {
            out.push(item(KIND_ROLE, name, None));
        }
        for name in &self.oidc_groups {
            out.push(item(
                KIND_OIDC_GROUP,
                name,
                Some("its members get no role from it at their next sign-in".into()),
            ));
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
    pub(super) fn check_pipelines(&self, file: &config::CutoverFile, notes: &mut Vec<String>) {
        for pipeline in &file.pipelines {
            for action in pipeline.stages.iter().flat_map(|s| &s.actions) {
                let target = match &action.kind {
                    config::ActionKind::Deploy(d) => {
                        let key = d.deployment_group.to_string();
                        self.groups.contains(&key).then(|| format!("deployment group {key}"))
                    }
                    config::ActionKind::DeployEcs(d) => {
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

    /// Deletes, inside the apply's transaction: deployment groups, services (the reconciler
    /// drains their task sets once it is told: their tasks leave their target groups and stop
    /// after the deregistration delay), and what they used.
    pub(super) fn delete(&self, tx: &store::Tx<'_>) -> store::Result<()> {
        for key in &self.groups {
            tx.resource_delete(KIND_DEPLOYMENT_GROUP, key)?;
            tx.resource_delete(KIND_GROUP_STATE, key)?;
        }
        for name in &self.services {
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
            (KIND_ROLE, &self.roles),
            (KIND_OIDC_GROUP, &self.oidc_groups),
        ] {
            for name in names {
                tx.resource_delete(kind, name)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use store::{DeploymentRow, TaskRow, TaskSetRow};

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

    fn parse(text: &str) -> config::CutoverFile {
        config::parse_cutover_file("cutover.yaml", text).unwrap_or_else(|e| panic!("{e}")).value
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

        store.transaction(|tx| removed.delete(tx)).unwrap();

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
            let Err(errors) = config::parse_cutover_file("cutover.yaml", &text) else {
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
