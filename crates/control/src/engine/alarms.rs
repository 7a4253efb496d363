//! Alarms for the reconciler: task logs read into the metric filters, every alarm evaluated over
//! the metrics the poller sampled, changed alarm states stored, and the state of every alarm
//! instance observed (the reconciler hands one in ALARM to each deployment watching it, once).

use std::collections::BTreeMap;

use model::Timestamp;
use reconciler::{AlarmReading, Observation};
use tracing::warn;

use super::Engine;
use crate::clock;
use crate::declared::*;
use crate::state;

impl Engine {
    pub(super) fn evaluate_alarms(&mut self) {
        let now = clock::now();
        match self.alarm_readings(now) {
            Ok(Some(readings)) => self.feed(Observation::Alarms(readings)),
            Ok(None) => {}
            Err(err) => warn!("evaluating alarms: {err:#}"),
        }
    }

    /// Every alarm instance's state, or `None` without alarms or metric filters.
    fn alarm_readings(&mut self, now: Timestamp) -> anyhow::Result<Option<Vec<AlarmReading>>> {
        let (alarm_docs, filter_docs): (
            Vec<crate::monitor::AlarmDoc>,
            Vec<crate::monitor::MetricFilterDoc>,
        ) = self
            .store
            .read(|tx| Ok((state::docs(tx, KIND_ALARM)?, state::docs(tx, KIND_METRIC_FILTER)?)))?;
        if alarm_docs.is_empty() && filter_docs.is_empty() {
            return Ok(None);
        }
        let deployments: Vec<(String, String, Vec<String>)> = self
            .state
            .deployments()
            .filter(|d| !d.machine.is_finished())
            .map(|d| (d.id.clone(), d.green_target_group.clone(), d.alarms.clone()))
            .collect();
        let mut logs: BTreeMap<String, Vec<std::path::PathBuf>> = BTreeMap::new();
        for task in self.state.tasks().filter(|t| t.last_status != model::TaskStatus::Stopped) {
            let Some(ts) = self.state.task_set(&task.task_set_id) else { continue };
            if let Some(rt) = self.runtimes.get(ts.runtime.as_str()) {
                logs.entry(ts.service.clone())
                    .or_default()
                    .extend(rt.log_files(&task.id).into_iter().map(|(_, p)| p));
            }
        }
        let greens: BTreeMap<String, String> =
            deployments.iter().map(|(id, green, _)| (id.clone(), green.clone())).collect();
        let world =
            crate::monitor::World { alarms: &alarm_docs, filters: &filter_docs, deployments, logs };
        let changed = self.shared.monitor().evaluate(&world, now);
        if !changed.is_empty() {
            self.store.transaction(|tx| {
                for (key, alarm) in &changed {
                    let body = serde_json::to_string(alarm)?;
                    tx.resource_put(KIND_ALARM_STATE, key, &body, now.as_millis())?;
                }
                Ok(())
            })?;
        }
        let monitor = self.shared.monitor();
        let readings = monitor
            .alarms()
            .iter()
            .map(|(key, alarm)| {
                let in_alarm = alarm.state() == alarms::AlarmState::Alarm;
                // Only an alarm in ALARM says why: an OK one changes nothing worth writing.
                let reason = match (in_alarm, key.split_once('@')) {
                    (false, _) => String::new(),
                    (true, Some((_, id))) => match greens.get(id) {
                        Some(green) => {
                            let requests =
                                green_requests(monitor.store(), green, alarm.spec(), now);
                            format!(
                                "{} ({requests} requests on {green} in that window)",
                                alarm.reason()
                            )
                        }
                        None => alarm.reason().to_string(),
                    },
                    (true, None) => alarm.reason().to_string(),
                };
                AlarmReading { key: key.clone(), in_alarm, reason }
            })
            .collect();
        Ok(Some(readings))
    }
}

/// Requests the green target group received over an alarm's evaluation window: part of the
/// explanation of a rollback.
fn green_requests(
    store: &alarms::MetricStore,
    green: &str,
    spec: &alarms::AlarmSpec,
    now: Timestamp,
) -> u64 {
    let id = alarms::MetricId::new("RequestCount").with("target_group", green);
    let from = Timestamp(now.as_millis().saturating_sub(spec.lookback().as_millis() as u64));
    store
        .series(&id)
        .and_then(|series| series.datapoints(spec.period, alarms::Statistic::Sum, from, now).ok())
        .map_or(0, |points| points.iter().map(|p| p.value as u64).sum())
}
