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
                    runtime: "process".into(),
                    last_status: if i == 4 { "RUNNING" } else { "STOPPED" }.into(),
                    desired_status: "STOPPED".into(),
                    health: "UNKNOWN".into(),
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
