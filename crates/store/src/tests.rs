use super::*;

#[test]
fn task_definition_revisions_are_never_reused() {
    let store = Store::open_in_memory().unwrap();
    store
        .transaction(|tx| {
            assert_eq!(tx.task_definition_register("web", "{}", 1)?, 1);
            assert_eq!(tx.task_definition_register("web", "{}", 2)?, 2);
            assert!(tx.task_definition_set_status("web", 2, "INACTIVE")?);
            assert_eq!(tx.task_definition_latest("web")?.unwrap().revision, 1);
            assert_eq!(tx.task_definition_register("web", "{}", 3)?, 3);
            assert_eq!(tx.task_definition_register("api", "{}", 3)?, 1);
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_failed_transaction_changes_nothing() {
    let store = Store::open_in_memory().unwrap();
    let result: Result<()> = store.transaction(|tx| {
        tx.resource_put("service", "web", "{}", 1)?;
        Err(Error::Conflict("validation failed".into()))
    });
    assert!(result.is_err());
    let listed = store.read(|tx| tx.resource_list("service")).unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}

#[test]
fn state_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let store = Store::open(&path).unwrap();
        store.transaction(|tx| tx.resource_put("service", "web", r#"{"a":1}"#, 5)).unwrap();
    }
    let store = Store::open(&path).unwrap();
    let body = store.read(|tx| tx.resource_get("service", "web")).unwrap();
    assert_eq!(body.as_deref(), Some(r#"{"a":1}"#));
}

#[test]
fn stopped_tasks_are_pruned_oldest_first() {
    let store = Store::open_in_memory().unwrap();
    store
        .transaction(|tx| {
            for i in 0..5u64 {
                tx.task_put(&TaskRow {
                    id: format!("t{i}"),
                    task_set_id: "ts".into(),
                    service: "web".into(),
                    runtime: model::RuntimeKind::Process,
                    last_status: if i == 4 {
                        model::TaskStatus::Running
                    } else {
                        model::TaskStatus::Stopped
                    },
                    desired_status: model::DesiredStatus::Stopped,
                    health: model::TaskHealth::Unknown,
                    handle: None,
                    addr: None,
                    stop_at: None,
                    stopped_reason: None,
                    created_at: i,
                    started_at: None,
                    stopped_at: Some(i),
                })?;
            }
            assert_eq!(tx.task_prune_stopped(2)?, 2);
            let ids: Vec<String> = tx.task_list(10)?.into_iter().map(|t| t.id).collect();
            assert_eq!(ids, ["t2", "t3", "t4"]);
            Ok(())
        })
        .unwrap();
}

#[test]
fn task_rows_written_with_ecs_names_read_back_typed_and_an_unknown_status_is_an_error() {
    let store = Store::open_in_memory().unwrap();
    store
        .transaction(|tx| {
            // As every earlier build wrote them: statuses as ECS's names in text columns.
            tx.tx.execute(
                "INSERT INTO tasks (id, task_set_id, service, runtime, last_status, desired_status,
                     health, created_at) VALUES ('t1', 'ts', 'web', 'docker', 'DEACTIVATING',
                     'STOPPED', 'HEALTHY', 1), ('t2', 'ts', 'web', 'process', 'PAUSED', 'RUNNING',
                     'UNKNOWN', 2)",
                [],
            )?;
            tx.tx.execute(
                "INSERT INTO task_sets (id, service, task_definition, status, desired_count,
                     created_at, updated_at) VALUES ('ts', 'web', 'web:1', 'DRAINING', 0, 1, 1)",
                [],
            )?;
            Ok(())
        })
        .unwrap();
    let task = store.read(|tx| tx.task_get("t1")).unwrap().unwrap();
    assert_eq!(
        (task.runtime, task.last_status, task.desired_status, task.health),
        (
            model::RuntimeKind::Docker,
            model::TaskStatus::Deactivating,
            model::DesiredStatus::Stopped,
            model::TaskHealth::Healthy
        )
    );
    let set = store.read(|tx| tx.task_set_get("ts")).unwrap().unwrap();
    assert_eq!(set.status, model::TaskSetStatus::Draining);
    let err = store.read(|tx| tx.task_get("t2")).unwrap_err();
    assert!(err.to_string().contains("unknown status `PAUSED`"), "{err}");
}

/// What SQLite plans for `sql`, one step a line.
fn query_plan(store: &Store, sql: &str) -> String {
    let conn = store.lock();
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    // Unbound parameters are NULL: the plan is the one every call gets.
    let mut rows = stmt.raw_query();
    let mut plan = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        plan.push(row.get::<_, String>(3).unwrap());
    }
    plan.join("\n")
}

#[test]
fn the_newest_and_the_active_deployments_are_read_from_indexes_without_sorting_the_history() {
    let store = Store::open_in_memory().unwrap();
    let history = query_plan(&store, &crate::deployment_history_sql());
    assert!(history.contains("USING INDEX deployments_newest"), "{history}");
    let active = query_plan(&store, &crate::deployment_active_sql());
    assert!(active.contains("USING INDEX deployments_active"), "{active}");
    for plan in [history, active] {
        assert!(!plan.contains("TEMP B-TREE"), "sorts the history: {plan}");
    }
}

#[test]
fn a_group_s_newest_deployments_are_listed_however_many_newer_ones_other_groups_have() {
    let store = Store::open_in_memory().unwrap();
    let row = |id: &str, group: &str, at: u64| DeploymentRow {
        id: id.into(),
        application: "web".into(),
        deployment_group: group.into(),
        status: "Succeeded".into(),
        body: "{}".into(),
        machine: "{}".into(),
        created_at: at,
        updated_at: at,
        completed_at: Some(at),
    };
    store
        .transaction(|tx| {
            tx.deployment_put(&row("d-1", "prod", 1))?;
            tx.deployment_put(&row("d-2", "prod", 2))?;
            for at in 3..10 {
                tx.deployment_put(&row(&format!("d-{at}"), "staging", at))?;
            }
            Ok(())
        })
        .unwrap();
    let ids = |group, limit| -> Vec<String> {
        let rows = store.read(|tx| tx.deployment_list_of(group, limit)).unwrap();
        rows.into_iter().map(|r| r.id).collect()
    };
    assert_eq!(ids(Some(("web", "prod")), 2), ["d-2", "d-1"]);
    assert_eq!(ids(Some(("web", "prod")), 1), ["d-2"]);
    assert_eq!(ids(None, 2), ["d-9", "d-8"]);
    assert!(ids(Some(("api", "prod")), 5).is_empty());
}

#[test]
fn each_group_s_last_deployment_is_found_however_many_newer_ones_other_groups_have() {
    let store = Store::open_in_memory().unwrap();
    let row = |id: &str, application: &str, group: &str, at: u64| DeploymentRow {
        id: id.into(),
        application: application.into(),
        deployment_group: group.into(),
        status: "Succeeded".into(),
        body: "{}".into(),
        machine: "{}".into(),
        created_at: at,
        updated_at: at,
        completed_at: Some(at),
    };
    store
        .transaction(|tx| {
            tx.deployment_put(&row("d-old-1", "web", "prod", 1))?;
            tx.deployment_put(&row("d-old-2", "web", "prod", 2))?;
            // Two created in the same millisecond: the greater id is the newer, as in the history.
            tx.deployment_put(&row("d-api-a", "api", "prod", 3))?;
            tx.deployment_put(&row("d-api-b", "api", "prod", 3))?;
            for at in 10..5_010 {
                tx.deployment_put(&row(&format!("d-{at}"), "web", "staging", at))?;
            }
            Ok(())
        })
        .unwrap();
    let last = store.read(|tx| tx.deployment_last_of_each_group()).unwrap();
    let found: Vec<_> = last
        .iter()
        .map(|r| (r.application.as_str(), r.deployment_group.as_str(), r.id.as_str()))
        .collect();
    assert_eq!(
        found,
        [("api", "prod", "d-api-b"), ("web", "prod", "d-old-2"), ("web", "staging", "d-5009")]
    );
}

#[test]
fn the_history_filters_by_group_status_and_time_and_pages_through_equal_times_without_gaps() {
    let store = Store::open_in_memory().unwrap();
    let row = |id: &str, group: &str, status: &str, at: u64| DeploymentRow {
        id: id.into(),
        application: "web".into(),
        deployment_group: group.into(),
        status: status.into(),
        body: "{}".into(),
        machine: "{}".into(),
        created_at: at,
        updated_at: at,
        completed_at: Some(at),
    };
    store
        .transaction(|tx| {
            // d-10..d-19 created at 10..19, with d-20 and d-21 at the same instant as d-19.
            for at in 10..20 {
                let status = if at % 3 == 0 { "Stopped" } else { "Succeeded" };
                let group = if at % 2 == 0 { "prod" } else { "staging" };
                tx.deployment_put(&row(&format!("d-{at}"), group, status, at))?;
            }
            tx.deployment_put(&row("d-20", "staging", "Failed", 19))?;
            tx.deployment_put(&row("d-21", "staging", "Succeeded", 19))?;
            Ok(())
        })
        .unwrap();
    let ids = |query: DeploymentHistory<'_>| -> Vec<String> {
        let rows = store.read(|tx| tx.deployment_history(&query)).unwrap();
        rows.into_iter().map(|r| r.id).collect()
    };
    let all = DeploymentHistory { limit: 100, ..DeploymentHistory::default() };
    let prod = DeploymentHistory { group: Some(("web", "prod")), ..all };
    assert_eq!(ids(prod), ["d-18", "d-16", "d-14", "d-12", "d-10"]);
    assert_eq!(ids(DeploymentHistory { status: Some("Stopped"), ..all }), ["d-18", "d-15", "d-12"]);
    let window = DeploymentHistory { since: Some(12), until: Some(15), ..all };
    assert_eq!(ids(window), ["d-14", "d-13", "d-12"]);
    // Pages of 2, each after the last of the one before: every row once, in order, although
    // three share a creation time.
    let mut pages = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let page = ids(DeploymentHistory {
            before: before.as_deref(),
            limit: 2,
            ..DeploymentHistory::default()
        });
        if page.is_empty() {
            break;
        }
        before = page.last().cloned();
        pages.push(page);
    }
    let listed: Vec<String> = pages.concat();
    assert_eq!(listed, ids(all));
    assert_eq!(&listed[..4], ["d-21", "d-20", "d-19", "d-18"]);
    assert_eq!(listed.len(), 12);
    assert!(ids(DeploymentHistory { before: Some("d-404"), ..all }).is_empty());
}
