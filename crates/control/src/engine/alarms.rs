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
use crate::judging::{JudgedPeriod, MirroredTally};
use crate::monitor::Watching;
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
        let deployments: Vec<Watching> = self
            .state
            .deployments()
            .filter(|d| !d.machine.is_finished())
            .map(|d| Watching {
                id: d.id.clone(),
                blue_target_group: d.blue_target_group.clone(),
                green_target_group: d.green_target_group.clone(),
                alarms: d.alarms.clone(),
            })
            .collect();
        // A deployment's shadow traffic is tallied whether or not alarms watch it.
        let tallying = !deployments.is_empty() || self.shared.monitor().tallies_mirrored();
        if alarm_docs.is_empty() && filter_docs.is_empty() && !tallying {
            return Ok(None);
        }
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
            deployments.iter().map(|d| (d.id.clone(), d.green_target_group.clone())).collect();
        let world =
            crate::monitor::World { alarms: &alarm_docs, filters: &filter_docs, deployments, logs };
        let (changed, judged, mirrored) = {
            let mut monitor = self.shared.monitor();
            (monitor.evaluate(&world, now), monitor.take_judged(), monitor.take_mirrored())
        };
        if !changed.is_empty() || !judged.is_empty() || !mirrored.is_empty() {
            self.store.transaction(|tx| {
                for (key, alarm) in &changed {
                    let body = serde_json::to_string(alarm)?;
                    tx.resource_put(KIND_ALARM_STATE, key, &body, now.as_millis())?;
                }
                // The newest judged period of each judge, kept with its deployment for
                // `deployments get` (the metric store behind it lives in memory only).
                for period in &judged {
                    let key = format!("{}@{}", period.alarm, period.deployment);
                    let body = serde_json::to_string(period)?;
                    tx.resource_put(KIND_JUDGED_PERIOD, &key, &body, now.as_millis())?;
                }
                // Each deployment's shadow traffic, added to what earlier passes (and an earlier
                // control plane) stored.
                for (deployment, tally) in &mirrored {
                    let mut total: MirroredTally = tx
                        .resource_get(KIND_MIRRORED, deployment)?
                        .and_then(|body| serde_json::from_str(&body).ok())
                        .unwrap_or_default();
                    total.add(tally);
                    let body = serde_json::to_string(&total)?;
                    tx.resource_put(KIND_MIRRORED, deployment, &body, now.as_millis())?;
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
                    (true, Some(_)) if monitor.judged_worse(key).is_some() => {
                        let judged = monitor.judged_worse(key).expect("invariant: checked above");
                        format!("{} ({})", judged.reason(), judge_window(alarm))
                    }
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

/// Where judged periods are stored, keyed `alarm@deployment`.
pub(crate) const KIND_JUDGED_PERIOD: &str = "judged_period";
/// Where each deployment's shadow traffic is stored, keyed by the deployment.
pub(crate) const KIND_MIRRORED: &str = "mirrored";

/// `deployment`'s shadow traffic, for its view, of the stored `rows` (deployment, body) of
/// [`KIND_MIRRORED`] (None: green got no copy).
pub(crate) fn mirrored_of(
    rows: &[(String, String)],
    deployment: &str,
) -> Option<crate::api::MirroredView> {
    let (_, body) = rows.iter().find(|(key, _)| key == deployment)?;
    let tally = serde_json::from_str::<MirroredTally>(body).ok()?;
    Some(crate::api::MirroredView::of(&tally))
}

/// What `deployment`'s canary judges saw in their newest judged periods, for its view: of the
/// stored `rows` (`alarm@deployment`, body) of [`KIND_JUDGED_PERIOD`].
pub(crate) fn judges_of(rows: &[(String, String)], deployment: &str) -> Vec<crate::api::JudgeView> {
    let suffix = format!("@{deployment}");
    rows.iter()
        .filter(|(key, _)| key.ends_with(&suffix))
        .filter_map(|(_, body)| serde_json::from_str::<JudgedPeriod>(body).ok())
        .map(|period| crate::api::JudgeView {
            reason: period.judgement.reason(),
            alarm: period.alarm,
            period_start: period.start.as_millis(),
            period_secs: period.period_secs,
            blue_target_group: period.blue_target_group,
            green_target_group: period.green_target_group,
            judgement: period.judgement,
            retries: period.retries,
            mirrored: period.mirrored.as_ref().map(crate::api::MirroredView::of),
        })
        .collect()
}

/// How many of the judged periods the alarm looked at were judged worse, in CloudWatch's words
/// (`2 of the last 3 periods of 10s judged worse`).
fn judge_window(alarm: &alarms::Alarm) -> String {
    let spec = alarm.spec();
    let worse = alarm.reason_data().map_or(0, |data| data.breaching);
    format!(
        "{worse} of the last {} judged periods of {}s were worse; {} needed",
        spec.evaluation_periods,
        spec.period.secs(),
        spec.datapoints_to_alarm()
    )
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
