//! A data directory that cannot be written (a full disk, an I/O error): how often the engine
//! tries again, what it tells the operator, and the events it holds until they can be written.
//!
//! While the store cannot be written the engine decides nothing new: a decision it cannot write
//! is undone in memory and taken again later (see `Engine::feed`), because every decision is
//! written before it is acted on. What it *can* do is say so, in `cutover status` and in each
//! active deployment's events; those events are held here and written, in order and with the time
//! they happened, as soon as a write succeeds.

use std::time::Duration;

use model::Timestamp;

use crate::api::EventView;

/// Kind of the events that tell a deployment's history about the store.
pub const EVENT_KIND: &str = "store";

/// The first retry after a failed write comes this soon; each next one twice as late.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Retries never come further apart than this, so a freed disk is noticed within seconds.
const LONGEST_RETRY: Duration = Duration::from_secs(5);

/// How long to wait before the attempt after `failed` failed attempts in a row.
pub fn retry_delay(failed: u32) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1u32 << failed.saturating_sub(1).min(16));
    doubled.min(LONGEST_RETRY)
}

/// An event for a deployment's history that the store could not take yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldEvent {
    pub deployment_id: String,
    pub at: Timestamp,
    pub message: String,
}

/// The store has refused writes since `since`.
#[derive(Clone, Debug)]
pub struct StoreOutage {
    /// The latest refusal, e.g. `database error: database or disk is full`.
    pub error: String,
    pub since: Timestamp,
    /// Attempts that failed in a row (the first refusal included).
    pub failed: u32,
    pub retry_at: Timestamp,
    /// Events to write, in this order, once the store takes writes again.
    pub held: Vec<HeldEvent>,
}

impl StoreOutage {
    /// An outage seen at `now`, with a held event for each active deployment.
    pub fn begin(error: String, now: Timestamp, deployments: &[String]) -> StoreOutage {
        let message = format!(
            "cannot write to the data directory ({error}): this deployment waits, acting on \
             nothing it could not write first, and goes on by itself once the store can be \
             written; this event was held in memory until then"
        );
        let held = deployments
            .iter()
            .map(|id| HeldEvent { deployment_id: id.clone(), at: now, message: message.clone() })
            .collect();
        StoreOutage {
            error,
            since: now,
            failed: 1,
            retry_at: now.saturating_add(retry_delay(1)),
            held,
        }
    }

    /// Another attempt failed at `now`.
    pub fn failed_again(&mut self, error: String, now: Timestamp) {
        self.error = error;
        self.failed += 1;
        self.retry_at = now.saturating_add(retry_delay(self.failed));
    }

    /// The line `cutover status` shows.
    pub fn warning(&self, data_dir: &str) -> String {
        format!(
            "the data directory {data_dir} cannot be written since {} ({}): deployments and \
             pipelines wait and act on nothing they could not write; retrying every {} at most; \
             free space there and they go on by themselves",
            utc_time(self.since),
            self.error,
            model::format_duration(LONGEST_RETRY),
        )
    }

    /// What each deployment that was told about the outage hears when it ends at `now`.
    pub fn recovered_events(&self, now: Timestamp) -> Vec<HeldEvent> {
        let message = format!(
            "the data directory can be written again after {}; the deployment goes on",
            model::format_duration(now.since(self.since))
        );
        self.held
            .iter()
            .map(|e| HeldEvent {
                deployment_id: e.deployment_id.clone(),
                at: now,
                message: message.clone(),
            })
            .collect()
    }

    /// The held events of one deployment as the events API shows them, after `after`: numbered
    /// from `last_seq`, the store's last event number, as they will be when written (in order,
    /// all at once), so a watcher that saw them does not see them again.
    pub fn event_views(&self, deployment_id: &str, last_seq: i64, after: i64) -> Vec<EventView> {
        self.held
            .iter()
            .zip(last_seq + 1..)
            .filter(|(e, seq)| e.deployment_id == deployment_id && *seq > after)
            .map(|(e, seq)| EventView {
                seq,
                at: e.at.as_millis(),
                kind: EVENT_KIND.to_string(),
                message: e.message.clone(),
            })
            .collect()
    }
}

/// `HH:MM:SS UTC` of a timestamp.
fn utc_time(at: Timestamp) -> String {
    let secs = at.as_millis() / 1000;
    format!("{:02}:{:02}:{:02} UTC", (secs / 3600) % 24, (secs / 60) % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_a_quarter_second_to_at_most_five_seconds() {
        let delays: Vec<u64> = (1..=7).map(|n| retry_delay(n).as_millis() as u64).collect();
        assert_eq!(delays, [250, 500, 1_000, 2_000, 4_000, 5_000, 5_000]);
        assert_eq!(retry_delay(u32::MAX), LONGEST_RETRY);
    }

    #[test]
    fn the_warning_says_what_failed_since_when_and_what_to_do() {
        let since = Timestamp(((5 * 60 + 12) * 60 + 3) * 1000);
        let outage = StoreOutage::begin("database or disk is full".into(), since, &[]);
        let warning = outage.warning("/srv/cutover");
        assert!(warning.contains("since 05:12:03 UTC (database or disk is full)"), "{warning}");
        assert!(warning.contains("free space there"), "{warning}");
    }

    #[test]
    fn a_failed_retry_pushes_the_next_one_further() {
        let mut outage = StoreOutage::begin("full".into(), Timestamp(1_000), &[]);
        assert_eq!(outage.retry_at, Timestamp(1_250));
        outage.failed_again("still full".into(), Timestamp(1_300));
        assert_eq!((outage.failed, outage.retry_at), (2, Timestamp(1_800)));
        assert_eq!(outage.error, "still full");
    }

    #[test]
    fn held_events_are_shown_with_the_numbers_they_will_be_written_with() {
        let ids = ["d-1".to_string(), "d-2".to_string()];
        let outage = StoreOutage::begin("full".into(), Timestamp(7), &ids);
        let views = outage.event_views("d-2", 40, 0);
        assert_eq!(views.len(), 1);
        assert_eq!((views[0].seq, views[0].at, views[0].kind.as_str()), (42, 7, EVENT_KIND));
        assert!(views[0].message.contains("held in memory"), "{}", views[0].message);
        assert!(outage.event_views("d-2", 40, 42).is_empty(), "a watcher past it sees it once");
    }
}
