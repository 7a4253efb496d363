//! Three records a cutover that did not yet run the reconciler as its state stored beside its
//! rows: a task set's failures in a row, the alarm instances already handed to each deployment,
//! and the routing-table version at which a draining task left the table. The reconciler's state
//! holds all three now; `persisted::from_rows` reads these into it when it builds the state of
//! such a data directory, so a restart onto this version loses none of them. Only the tests
//! write them, as that cutover did.

use std::collections::{BTreeMap, BTreeSet};

#[cfg(test)]
use model::Timestamp;
use reconciler::FailureRecord;
use serde::{Deserialize, Serialize};
use store::{Document, DocumentStore, Tx};

/// A task set's failures in a row, under the task set's id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskSetFailures(pub FailureRecord);

impl Document for TaskSetFailures {
    const KIND: &'static str = "task_set_failures";
    const VERSION: u32 = 1;
}

/// The alarm instances (`name`, or `name@deployment`) handed to a deployment, under its id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmsHandedOver {
    pub alarms: BTreeSet<String>,
}

impl Document for AlarmsHandedOver {
    const KIND: &'static str = "alarms_handed_over";
    const VERSION: u32 = 1;
}

/// A deactivating task's drain, under the task's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// The first routing-table version that no longer lists the task.
    pub removed_at_version: u64,
}

impl Document for Drain {
    const KIND: &'static str = "task_drain";
    const VERSION: u32 = 1;
}

/// A task set's failures in a row (none recorded: no failure).
#[cfg(test)]
pub fn failures(tx: &Tx<'_>, task_set_id: &str) -> store::Result<FailureRecord> {
    Ok(tx.doc_get::<TaskSetFailures>(task_set_id)?.unwrap_or_default().0)
}

/// Every task set's failures in a row, by task set id.
pub fn all_failures(tx: &Tx<'_>) -> store::Result<BTreeMap<String, FailureRecord>> {
    Ok(tx.doc_list::<TaskSetFailures>()?.into_iter().map(|(id, doc)| (id, doc.0)).collect())
}

/// One more failure of a task set's tasks.
#[cfg(test)]
pub fn note_failure(
    tx: &Tx<'_>,
    task_set_id: &str,
    reason: &str,
    now: Timestamp,
) -> store::Result<()> {
    let mut record = failures(tx, task_set_id)?;
    record.note(reason, now);
    tx.doc_put(task_set_id, &TaskSetFailures(record), now.as_millis())
}

/// A task set's row of failures ended (a healthy task), or the task set is gone.
#[cfg(test)]
pub fn clear_failures(tx: &Tx<'_>, task_set_id: &str) -> store::Result<()> {
    tx.doc_delete::<TaskSetFailures>(task_set_id).map(drop)
}

/// The routing-table version the engine pushes next: the first one that reflects a change made
/// now. The engine records every version in `routes_version` before it pushes it.
#[cfg(test)]
fn next_routes_version(tx: &Tx<'_>) -> store::Result<u64> {
    let stored = tx.meta_get("routes_version")?.and_then(|v| v.parse::<u64>().ok());
    Ok(stored.unwrap_or(0) + 1)
}

/// A task left its target group now: its drain is over once the data plane serves the next
/// routing-table version without it.
#[cfg(test)]
pub fn note_removal(tx: &Tx<'_>, task_id: &str, now: Timestamp) -> store::Result<()> {
    let drain = Drain { removed_at_version: next_routes_version(tx)? };
    tx.doc_put(task_id, &drain, now.as_millis())
}

/// Every draining task's routing version, by task id.
pub fn removals(tx: &Tx<'_>) -> store::Result<BTreeMap<String, u64>> {
    let drains = tx.doc_list::<Drain>()?;
    Ok(drains.into_iter().map(|(id, drain)| (id, drain.removed_at_version)).collect())
}

/// A task is being stopped: its drain is over.
#[cfg(test)]
pub fn forget_removal(tx: &Tx<'_>, task_id: &str) -> store::Result<()> {
    tx.doc_delete::<Drain>(task_id).map(drop)
}

/// The alarm instances already handed to a deployment.
pub fn alarms_handed_over(tx: &Tx<'_>, deployment_id: &str) -> store::Result<BTreeSet<String>> {
    Ok(tx.doc_get::<AlarmsHandedOver>(deployment_id)?.unwrap_or_default().alarms)
}

/// An alarm instance was handed to a deployment.
#[cfg(test)]
pub fn note_alarm_handed_over(
    tx: &Tx<'_>,
    deployment_id: &str,
    key: &str,
    now: Timestamp,
) -> store::Result<()> {
    let mut alarms = alarms_handed_over(tx, deployment_id)?;
    alarms.insert(key.to_string());
    tx.doc_put(deployment_id, &AlarmsHandedOver { alarms }, now.as_millis())
}

/// A deployment finished: it watches no alarm any more.
#[cfg(test)]
pub fn forget_deployment(tx: &Tx<'_>, deployment_id: &str) -> store::Result<()> {
    tx.doc_delete::<AlarmsHandedOver>(deployment_id).map(drop)
}

#[cfg(test)]
mod tests {
    use store::Store;

    use super::*;

    #[test]
    fn failures_count_in_a_row_until_cleared_and_drains_wait_for_the_next_routing_version() {
        let store = Store::open_in_memory().unwrap();
        let at = |ms: u64| Timestamp::from_millis(1_700_000_000_000 + ms);
        store
            .transaction(|tx| {
                note_failure(tx, "ts-1", "exited", at(0))?;
                note_failure(tx, "ts-1", "exited again", at(10))?;
                note_failure(tx, "ts-2", "failed to start", at(20))
            })
            .unwrap();
        let record = store.read(|tx| failures(tx, "ts-1")).unwrap();
        assert_eq!((record.count, record.last_reason.as_str()), (2, "exited again"));
        assert_eq!(record.retry_at(), at(10).saturating_add(reconciler::restart_backoff(2)));
        store.transaction(|tx| clear_failures(tx, "ts-1")).unwrap();
        let all = store.read(all_failures).unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["ts-2"]);
        assert_eq!(store.read(|tx| failures(tx, "ts-1")).unwrap(), FailureRecord::default());

        store
            .transaction(|tx| {
                note_removal(tx, "t-1", at(0))?;
                tx.meta_set("routes_version", "4")?;
                note_removal(tx, "t-2", at(0))
            })
            .unwrap();
        let drains = store.read(removals).unwrap();
        assert_eq!(drains, BTreeMap::from([("t-1".to_string(), 1), ("t-2".to_string(), 5)]));
        store.transaction(|tx| forget_removal(tx, "t-1")).unwrap();
        assert_eq!(store.read(removals).unwrap().len(), 1);
    }

    #[test]
    fn an_alarm_is_handed_to_a_deployment_once_until_the_deployment_is_forgotten() {
        let store = Store::open_in_memory().unwrap();
        let now = Timestamp::from_millis(1_700_000_000_000);
        store
            .transaction(|tx| {
                note_alarm_handed_over(tx, "d-1", "errors@d-1", now)?;
                note_alarm_handed_over(tx, "d-1", "errors@d-1", now)?;
                note_alarm_handed_over(tx, "d-1", "latency", now)
            })
            .unwrap();
        let handed_over = store.read(|tx| alarms_handed_over(tx, "d-1")).unwrap();
        assert_eq!(handed_over.iter().collect::<Vec<_>>(), ["errors@d-1", "latency"]);
        assert!(store.read(|tx| alarms_handed_over(tx, "d-2")).unwrap().is_empty());
        store.transaction(|tx| forget_deployment(tx, "d-1")).unwrap();
        assert!(store.read(|tx| alarms_handed_over(tx, "d-1")).unwrap().is_empty());
    }
}
