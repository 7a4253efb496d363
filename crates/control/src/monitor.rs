//! Metrics, log metric filters and alarms: the control plane's CloudWatch.
//!
//! Every pass of the engine calls [`Monitor::tick`]. It samples the data plane's cumulative
//! counters (`GET /v1/metrics`) every [`POLL_INTERVAL`] and records the differences per target
//! group into an `alarms::MetricStore` (1-second resolution), feeds new task-log lines through the
//! declared metric filters, and evaluates every alarm right after each of its period boundaries.
//! An alarm that goes to ALARM is handed to the deployments watching it as `Input::Alarm`, with a
//! reason that carries the datapoints that decided.
//!
//! Nothing counted before a (re)start is counted again: the first reading of the data plane's
//! counters is only a baseline (`alarms::counter`), and task logs already there are read from
//! their end. The time the control plane was down is missing data for alarms.
//!
//! Alarms on the `green` dimension exist once per deployment (keyed `name@deployment`), on the
//! target group that is green in that deployment; the others exist once.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use alarms::counter::{self, Continuity};
use alarms::{
    Alarm, AlarmSpec, AlarmState, MetricFilter, MetricFilterSpec, MetricId, MetricStore,
    SeriesConfig,
};
use model::Timestamp;
use routes::{MetricsSnapshot, RequestCounters};
use serde::{Deserialize, Serialize};

use crate::judging::{self, JudgedPeriod, MirroredTally};

/// How often the data plane's counters are sampled: well inside the shortest (1 s) alarm period.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How much metric history is kept.
const RETENTION: Duration = Duration::from_secs(3 * 3600);
/// At most this much of one log file is read per pass, so a chatty task cannot stall the loop.
const LOG_READ_BYTES_MAX: u64 = 1 << 20;

/// An alarm as stored: CloudWatch's definition and which series it watches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlarmDoc {
    pub spec: AlarmSpec,
    pub dimension: DimensionDoc,
    /// A canary judge's criteria: `spec` then watches its verdicts (`crate::judging`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<alarms::judge::JudgeCriteria>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DimensionDoc {
    TargetGroup(String),
    Green,
    Service(String),
}

impl AlarmDoc {
    pub fn from_decl(decl: &config::AlarmDecl) -> AlarmDoc {
        AlarmDoc {
            spec: decl.spec.clone(),
            dimension: match &decl.dimension {
                config::AlarmDimension::TargetGroup(tg) => DimensionDoc::TargetGroup(tg.clone()),
                config::AlarmDimension::Green => DimensionDoc::Green,
                config::AlarmDimension::Service(s) => DimensionDoc::Service(s.clone()),
            },
            judge: decl.judge,
        }
    }

    /// The concrete alarm for a deployment whose green target group is `green` (None: outside
    /// any deployment, where a `green` alarm has no series).
    pub fn spec_for(&self, green: Option<&str>) -> Option<AlarmSpec> {
        match (&self.dimension, green) {
            (DimensionDoc::Green, None) => None,
            (DimensionDoc::Green, Some(tg)) => {
                let mut spec = self.spec.clone();
                spec.metric = spec.metric.with("target_group", tg);
                Some(spec)
            }
            _ => Some(self.spec.clone()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricFilterDoc {
    pub service: String,
    pub spec: MetricFilterSpec,
}

/// How long after a deployment ended its green's copies are still tallied: the copies of its
/// last moments reach the metric store within the sampling interval and the settling time.
const TALLY_AFTER_END_SECS: u64 = 5;

/// A metric a sample of the data plane records for each target group (ALB's, and cutover's own
/// of shadow traffic): its place among the group's [`GroupSeries`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sampled {
    HealthyHostCount,
    UnHealthyHostCount,
    RetryCount,
    RetryBudgetExhaustedCount,
    RequestCount,
    Target2xx,
    Target3xx,
    Target4xx,
    Target5xx,
    Elb502,
    Elb503,
    Elb504,
    Elb5xx,
    TargetConnectionErrorCount,
    TargetResponseTime,
    MirroredRequestCount,
    MirroredTarget2xx,
    MirroredTarget3xx,
    MirroredTarget4xx,
    MirroredTarget5xx,
    MirroredElb5xx,
    MirroredMismatchCount,
    MirroredDroppedCount,
    MirroredTargetResponseTime,
}

impl Sampled {
    const COUNT: usize = Sampled::MirroredTargetResponseTime as usize + 1;

    fn name(self) -> &'static str {
        match self {
            Sampled::HealthyHostCount => "HealthyHostCount",
            Sampled::UnHealthyHostCount => "UnHealthyHostCount",
            Sampled::RetryCount => "RetryCount",
            Sampled::RetryBudgetExhaustedCount => "RetryBudgetExhaustedCount",
            Sampled::RequestCount => "RequestCount",
            Sampled::Target2xx => "HTTPCode_Target_2XX_Count",
            Sampled::Target3xx => "HTTPCode_Target_3XX_Count",
            Sampled::Target4xx => "HTTPCode_Target_4XX_Count",
            Sampled::Target5xx => "HTTPCode_Target_5XX_Count",
            Sampled::Elb502 => "HTTPCode_ELB_502_Count",
            Sampled::Elb503 => "HTTPCode_ELB_503_Count",
            Sampled::Elb504 => "HTTPCode_ELB_504_Count",
            Sampled::Elb5xx => "HTTPCode_ELB_5XX_Count",
            Sampled::TargetConnectionErrorCount => "TargetConnectionErrorCount",
            Sampled::TargetResponseTime => "TargetResponseTime",
            Sampled::MirroredRequestCount => "MirroredRequestCount",
            Sampled::MirroredTarget2xx => "MirroredTarget_2XX_Count",
            Sampled::MirroredTarget3xx => "MirroredTarget_3XX_Count",
            Sampled::MirroredTarget4xx => "MirroredTarget_4XX_Count",
            Sampled::MirroredTarget5xx => "MirroredTarget_5XX_Count",
            Sampled::MirroredElb5xx => "MirroredELB_5XX_Count",
            Sampled::MirroredMismatchCount => "MirroredMismatchCount",
            Sampled::MirroredDroppedCount => "MirroredDroppedCount",
            Sampled::MirroredTargetResponseTime => "MirroredTargetResponseTime",
        }
    }
}

/// What the monitor knows of one sampled series of a target group in its store.
#[derive(Clone, Copy, Debug, Default)]
enum Known {
    /// Not looked up yet (or forgotten by the store since).
    #[default]
    Unknown,
    Series(alarms::SeriesHandle),
    /// The store was full: refused again until it has forgotten a series (this many so far).
    Refused {
        forgotten: u64,
    },
}

/// The series of one target group's sampled metrics, by [`Sampled`]: a sample records 22 or
/// more metrics for each of up to thousands of groups, 4 times a second, and finds each series
/// here without building its id and looking it up among every other.
type GroupSeries = [Known; Sampled::COUNT];

/// A deployment whose shadow traffic is tallied, second by second.
struct Tallying {
    blue_target_group: String,
    green_target_group: String,
    /// The next second to tally.
    next: u64,
    /// The first second not tallied, once the deployment has ended.
    until: Option<u64>,
}

/// What the monitor needs to know about the world in one pass.
pub struct World<'a> {
    pub alarms: &'a [AlarmDoc],
    pub filters: &'a [MetricFilterDoc],
    /// Active deployments.
    pub deployments: Vec<Watching>,
    /// Log files of live tasks, by service.
    pub logs: BTreeMap<String, Vec<PathBuf>>,
}

/// An active deployment, as alarms see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watching {
    pub id: String,
    pub blue_target_group: String,
    pub green_target_group: String,
    /// The alarm names its group lists.
    pub alarms: Vec<String>,
}

pub struct Monitor {
    store: MetricStore,
    /// The sampled series of each target group of the latest snapshot.
    sampled: HashMap<String, GroupSeries>,
    last: Option<MetricsSnapshot>,
    next_poll: Timestamp,
    filters: Vec<(MetricFilterDoc, MetricFilter)>,
    /// How far each task log has been read (or skipped).
    offsets: HashMap<PathBuf, u64>,
    /// When the task logs were last read. At the first pass (this monitor just started) and
    /// after a gap, what the logs hold was written while nobody was reading (or was counted by a
    /// previous control plane), so their current lengths are a baseline, as for the load
    /// balancer's counters (`alarms::counter::follows`).
    logs_read_at: Option<Timestamp>,
    alarms: BTreeMap<String, Alarm>,
    /// When each alarm instance is next evaluated.
    due: HashMap<String, Timestamp>,
    /// The first evaluation of this monitor: no metric has data from before it.
    started: Option<Timestamp>,
    /// Per canary-judge instance, the index of the next period to judge.
    judge_next: HashMap<String, u64>,
    /// Per canary-judge instance, the newest judged period.
    judgements: BTreeMap<String, JudgedPeriod>,
    /// Per canary-judge instance, the newest period judged worse: what a rollback names.
    judged_worse: BTreeMap<String, JudgedPeriod>,
    /// Periods judged since the engine last took them (to store them).
    judged_since: Vec<JudgedPeriod>,
    /// Per deployment, where its shadow traffic is tallied.
    mirrored_next: HashMap<String, Tallying>,
    /// Per deployment, its shadow traffic tallied since the engine last took it (to add it to
    /// what is stored).
    mirrored_since: BTreeMap<String, MirroredTally>,
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor::new()
    }
}

impl Monitor {
    pub fn new() -> Monitor {
        let config = SeriesConfig::new(
            alarms::Period::from_secs(1).expect("invariant: 1 s is a valid period"),
            RETENTION,
        )
        .expect("invariant: 1 s resolution with 3 h retention is valid");
        Monitor {
            store: MetricStore::new(config),
            sampled: HashMap::new(),
            last: None,
            next_poll: Timestamp::ZERO,
            filters: Vec::new(),
            offsets: HashMap::new(),
            logs_read_at: None,
            alarms: BTreeMap::new(),
            due: HashMap::new(),
            started: None,
            judge_next: HashMap::new(),
            judgements: BTreeMap::new(),
            judged_worse: BTreeMap::new(),
            judged_since: Vec::new(),
            mirrored_next: HashMap::new(),
            mirrored_since: BTreeMap::new(),
        }
    }

    pub fn store(&self) -> &MetricStore {
        &self.store
    }

    pub fn alarm(&self, key: &str) -> Option<&Alarm> {
        self.alarms.get(key)
    }

    pub fn alarms(&self) -> &BTreeMap<String, Alarm> {
        &self.alarms
    }

    /// Restores alarm state and history kept in the store across a restart.
    pub fn restore(&mut self, saved: Vec<(String, Alarm)>) {
        self.alarms.extend(saved);
    }

    /// Forgets every instance of a deleted alarm (`name` and its `name@deployment` ones).
    pub fn forget_alarm(&mut self, name: &str) {
        let instance = |key: &String| {
            key == name || key.strip_prefix(name).is_some_and(|rest| rest.starts_with('@'))
        };
        self.alarms.retain(|key, _| !instance(key));
        self.due.retain(|key, _| !instance(key));
    }

    pub fn should_poll(&self, now: Timestamp) -> bool {
        now >= self.next_poll
    }

    /// Records what the data plane counted since the previous snapshot. The counters are
    /// cumulative since the data plane started; `alarms::counter` decides what a difference is:
    /// the first snapshot after this monitor starts (a restart of the control plane) and one after
    /// a gap are only baselines, so no datapoint ever holds requests from before a restart.
    pub fn record_snapshot(&mut self, snapshot: MetricsSnapshot, now: Timestamp) {
        self.next_poll = now.saturating_add(POLL_INTERVAL);
        let at = Timestamp(snapshot.taken_at_unix_ms.max(1)).min(now);
        let continuity = counter::continuity(self.last.as_ref().map(reading), reading(&snapshot));
        let previous = self.last.take();
        for (name, tg) in &snapshot.target_groups {
            // Gauges are values of the moment: recorded at every snapshot, a baseline too.
            self.record(Sampled::HealthyHostCount, name, at, tg.healthy_host_count as f64);
            self.record(Sampled::UnHealthyHostCount, name, at, tg.unhealthy_host_count as f64);
            if continuity == Continuity::Baseline {
                continue;
            }
            let before = previous.as_ref().and_then(|p| p.target_groups.get(name));
            // Retry on blue's own counts, on the group whose failures were retried.
            for (metric, now, then) in [
                (Sampled::RetryCount, tg.retries, before.map(|b| b.retries)),
                (
                    Sampled::RetryBudgetExhaustedCount,
                    tg.retry_budget_exhausted,
                    before.map(|b| b.retry_budget_exhausted),
                ),
            ] {
                if let Some(increase) = counter::increase(continuity, then, now) {
                    self.record(metric, name, at, increase as f64);
                }
            }
            self.record_mirrored(name, &tg.mirrored, before.map(|b| &b.mirrored), continuity, at);
            let before = before.map(|b| &b.counters);
            self.record_counts(name, &tg.counters, before, continuity, at);
            if tg.response_time_fine.is_empty() {
                // A data plane of an older cutover (adopted, still serving): coarse buckets only.
                self.record_response_times(
                    Sampled::TargetResponseTime,
                    name,
                    &tg.counters.response_time,
                    before.map(|b| &b.response_time),
                    continuity,
                    at,
                );
            } else {
                let before = previous.as_ref().and_then(|p| p.target_groups.get(name));
                let before = before.map(|b| b.response_time_fine.as_slice());
                self.record_fine_response_times(
                    Sampled::TargetResponseTime,
                    name,
                    &tg.response_time_fine,
                    before,
                    continuity,
                    at,
                );
            }
        }
        // The groups that went: their series stay in the store (alarms may still read them)
        // until they age out.
        if self.sampled.len() > snapshot.target_groups.len() {
            self.sampled.retain(|name, _| snapshot.target_groups.contains_key(name));
        }
        self.last = Some(snapshot);
        self.store.prune(now);
    }

    /// ALB's `…Count` metrics of one target group: the increase of each counter.
    fn record_counts(
        &mut self,
        target_group: &str,
        counters: &RequestCounters,
        before: Option<&RequestCounters>,
        continuity: Continuity,
        at: Timestamp,
    ) {
        type Counter = fn(&RequestCounters) -> u64;
        const COUNTS: [(Sampled, Counter); 9] = [
            (Sampled::RequestCount, |c| c.requests),
            (Sampled::Target2xx, |c| c.target_2xx),
            (Sampled::Target3xx, |c| c.target_3xx),
            (Sampled::Target4xx, |c| c.target_4xx),
            (Sampled::Target5xx, |c| c.target_5xx),
            (Sampled::Elb502, |c| c.elb_502),
            (Sampled::Elb503, |c| c.elb_503),
            (Sampled::Elb504, |c| c.elb_504),
            (Sampled::TargetConnectionErrorCount, |c| c.target_connection_errors),
        ];
        let mut elb_5xx = 0;
        for (metric, value) in COUNTS {
            let Some(increase) = counter::increase(continuity, before.map(value), value(counters))
            else {
                continue;
            };
            if matches!(metric, Sampled::Elb502 | Sampled::Elb503 | Sampled::Elb504) {
                elb_5xx += increase;
            }
            self.record(metric, target_group, at, increase as f64);
        }
        self.record(Sampled::Elb5xx, target_group, at, elb_5xx as f64);
    }

    /// A shadow phase's copies to one target group (cutover's own metrics): how many, how they
    /// ended, how many disagreed with the client's answer or were not sent, and how long they
    /// took.
    fn record_mirrored(
        &mut self,
        target_group: &str,
        mirrored: &routes::MirroredMetrics,
        before: Option<&routes::MirroredMetrics>,
        continuity: Continuity,
        at: Timestamp,
    ) {
        type Counter = fn(&routes::MirroredMetrics) -> u64;
        const COUNTS: [(Sampled, Counter); 8] = [
            (Sampled::MirroredRequestCount, |m| m.counters.requests),
            (Sampled::MirroredTarget2xx, |m| m.counters.target_2xx),
            (Sampled::MirroredTarget3xx, |m| m.counters.target_3xx),
            (Sampled::MirroredTarget4xx, |m| m.counters.target_4xx),
            (Sampled::MirroredTarget5xx, |m| m.counters.target_5xx),
            (Sampled::MirroredElb5xx, |m| m.server_errors() - m.counters.target_5xx),
            (Sampled::MirroredMismatchCount, |m| m.mismatches),
            (Sampled::MirroredDroppedCount, |m| m.dropped),
        ];
        for (metric, value) in COUNTS {
            if let Some(increase) =
                counter::increase(continuity, before.map(value), value(mirrored))
            {
                self.record(metric, target_group, at, increase as f64);
            }
        }
        if mirrored.response_time_fine.is_empty() {
            // A data plane of an older cutover: coarse buckets only.
            self.record_response_times(
                Sampled::MirroredTargetResponseTime,
                target_group,
                &mirrored.counters.response_time,
                before.map(|b| &b.counters.response_time),
                continuity,
                at,
            );
        } else {
            self.record_fine_response_times(
                Sampled::MirroredTargetResponseTime,
                target_group,
                &mirrored.response_time_fine,
                before.map(|b| b.response_time_fine.as_slice()),
                continuity,
                at,
            );
        }
    }

    /// `metric` (`TargetResponseTime`): one sample per request at its bucket's upper bound
    /// (seconds).
    fn record_response_times(
        &mut self,
        metric: Sampled,
        target_group: &str,
        hist: &routes::Histogram,
        prev_hist: Option<&routes::Histogram>,
        continuity: Continuity,
        at: Timestamp,
    ) {
        let increase = |now: u64, then: Option<u64>| {
            counter::increase(continuity, then, now).unwrap_or_default()
        };
        let mut below = 0u64;
        for (i, bound_us) in routes::RESPONSE_TIME_BUCKETS_US.iter().enumerate() {
            let cumulative = increase(
                hist.buckets.get(i).copied().unwrap_or(0),
                prev_hist.map(|p| p.buckets.get(i).copied().unwrap_or(0)),
            );
            let in_bucket = cumulative.saturating_sub(below);
            below = below.max(cumulative);
            if in_bucket > 0 {
                self.record_n(metric, target_group, at, *bound_us as f64 / 1e6, in_bucket);
            }
        }
        let total = increase(hist.count, prev_hist.map(|p| p.count));
        let overflow = total.saturating_sub(below);
        if overflow > 0 {
            let largest =
                *routes::RESPONSE_TIME_BUCKETS_US.last().unwrap_or(&10_000_000) as f64 / 1e6;
            self.record_n(metric, target_group, at, largest, overflow);
        }
    }

    /// `metric` (`TargetResponseTime`, `MirroredTargetResponseTime`) from the fine buckets
    /// (`routes::latency`): one sample per answer at its bucket's largest value, so percentiles
    /// are within 12.5 % and the canary judge can rank two versions' answers against each other.
    fn record_fine_response_times(
        &mut self,
        metric: Sampled,
        target_group: &str,
        buckets: &[(u32, u64)],
        before: Option<&[(u32, u64)]>,
        continuity: Continuity,
        at: Timestamp,
    ) {
        for &(index, answers) in buckets {
            // A bucket the previous snapshot did not list had counted nothing then.
            let then =
                before.map(|b| b.binary_search_by_key(&index, |&(i, _)| i).map_or(0, |at| b[at].1));
            let Some(increase) = counter::increase(continuity, then, answers) else { continue };
            if increase > 0 {
                let us = routes::latency::latency_bucket_max_us(index as usize);
                self.record_n(metric, target_group, at, us as f64 / 1e6, increase);
            }
        }
    }

    fn record(&mut self, metric: Sampled, target_group: &str, at: Timestamp, value: f64) {
        self.record_n(metric, target_group, at, value, 1);
    }

    /// `count` samples of `metric{target_group}`, through the series' handle once it has one.
    fn record_n(
        &mut self,
        metric: Sampled,
        target_group: &str,
        at: Timestamp,
        value: f64,
        count: u64,
    ) {
        let group = match self.sampled.get_mut(target_group) {
            Some(group) => group,
            None => self.sampled.entry(target_group.to_string()).or_default(),
        };
        let known = &mut group[metric as usize];
        // A sample refused for age (the clock jumped) only loses that sample.
        match *known {
            Known::Series(handle) => match self.store.record_n_into(handle, at, value, count) {
                Err(alarms::RecordError::Forgotten) => {}
                _ => return,
            },
            Known::Refused { forgotten } if forgotten == self.store.forgotten() => return,
            Known::Unknown | Known::Refused { .. } => {}
        }
        let id = MetricId::new(metric.name()).with("target_group", target_group);
        *known = match self.store.record_n(&id, at, value, count) {
            Err(alarms::RecordError::TooManySeries) => {
                Known::Refused { forgotten: self.store.forgotten() }
            }
            _ => self.store.handle(&id).map_or(Known::Unknown, Known::Series),
        };
    }

    /// Reads new task-log lines through the declared filters, then evaluates every alarm that is
    /// due. Returns the alarm instances whose state changed, to be stored; which deployments an
    /// alarm in ALARM stops is the engine's decision (it looks at every pass, not only at changes).
    pub fn evaluate(&mut self, world: &World<'_>, now: Timestamp) -> Vec<(String, Alarm)> {
        self.sync_filters(world.filters);
        self.read_logs(world, now);
        for (_, filter) in &mut self.filters {
            let _ = filter.flush(&mut self.store, now);
        }
        self.sync_alarms(world, now);
        self.judge_periods(world, now);
        self.tally_mirrored(world, now);
        let started = *self.started.get_or_insert(now);

        let mut changed = Vec::new();
        for (key, alarm) in &mut self.alarms {
            // Evaluate right after each period boundary (and at once for a new alarm).
            if self.due.get(key).is_some_and(|due| *due > now) {
                continue;
            }
            self.due.insert(key.clone(), alarm.next_evaluation(now));
            if blind_to_the_gap(alarm.spec(), started, now) {
                continue;
            }
            let Ok(evaluation) = alarm.evaluate(&self.store, now) else { continue };
            if evaluation.changed() {
                changed.push((key.clone(), alarm.clone()));
            }
        }
        self.early_breaches(world, now, &mut changed);
        changed
    }

    /// cutover sees every response, so it need not wait for a period to end when the answer is
    /// already certain: for an alarm that needs one breaching datapoint (M = 1) on a statistic
    /// that can only grow within a period (the Sum or SampleCount of a count, the Maximum) with a
    /// "greater than" comparison, a period still open that already breaches will breach when it
    /// closes. Such an alarm goes to ALARM at once, and says so in its reason; the regular
    /// evaluation at the period's end confirms it. Everything else waits for complete periods,
    /// as on CloudWatch.
    fn early_breaches(
        &mut self,
        world: &World<'_>,
        now: Timestamp,
        changed: &mut Vec<(String, Alarm)>,
    ) {
        use alarms::{ComparisonOperator as Op, Statistic};
        for (key, alarm) in &mut self.alarms {
            let spec = alarm.spec();
            if alarm.state() == AlarmState::Alarm || spec.datapoints_to_alarm() != 1 {
                continue;
            }
            let growing_statistic = match spec.statistic {
                Statistic::Maximum => true,
                Statistic::Sum | Statistic::SampleCount => {
                    only_positive_samples(&spec.metric, world.filters)
                }
                _ => false,
            };
            let greater = matches!(
                spec.comparison_operator,
                Op::GreaterThanThreshold | Op::GreaterThanOrEqualToThreshold
            );
            if !growing_statistic || !greater {
                continue;
            }
            let Some(series) = self.store.series(&spec.metric) else { continue };
            let open = spec.period.start_of(spec.period.index_of(now));
            let Ok(points) = series.datapoints(spec.period, spec.statistic, open, now) else {
                continue;
            };
            let Some(point) = points.last().filter(|p| p.start == open) else { continue };
            if !spec.comparison_operator.breaches(point.value, spec.threshold) {
                continue;
            }
            let relation = match spec.comparison_operator {
                Op::GreaterThanThreshold => "greater than",
                _ => "greater than or equal to",
            };
            let reason = format!(
                "Threshold Crossed early: the {}s period still open (since {}) already has {} {}, which is \
                 {relation} the threshold ({}) and can only grow until the period ends (1 datapoint needed)",
                spec.period.secs(),
                crate::monitor::clock_time(open),
                spec.statistic,
                point.value,
                spec.threshold
            );
            alarm.set_state(AlarmState::Alarm, &reason, now);
            changed.push((key.clone(), alarm.clone()));
        }
    }

    /// The newest judged period of each canary-judge instance (`name@deployment`).
    pub fn judgements(&self) -> &BTreeMap<String, JudgedPeriod> {
        &self.judgements
    }

    /// The newest period of a canary-judge instance that was judged worse.
    pub fn judged_worse(&self, key: &str) -> Option<&JudgedPeriod> {
        self.judged_worse.get(key)
    }

    /// The periods judged since the previous call, oldest first.
    pub fn take_judged(&mut self) -> Vec<JudgedPeriod> {
        std::mem::take(&mut self.judged_since)
    }

    /// Whether a deployment's shadow traffic is still being tallied.
    pub fn tallies_mirrored(&self) -> bool {
        !self.mirrored_next.is_empty()
    }

    /// Each deployment's shadow traffic tallied since the previous call: to be added to what
    /// is stored with the deployment.
    pub fn take_mirrored(&mut self) -> BTreeMap<String, MirroredTally> {
        std::mem::take(&mut self.mirrored_since)
    }

    /// Tallies every second that has ended (and settled) since the previous pass of each
    /// deployment's shadow traffic: the copies green got, and what blue served meanwhile. A
    /// deployment that ended is tallied for [`TALLY_AFTER_END_SECS`] more, so that the copies of
    /// its last moments (a rollback ends the phase at once) are counted too.
    fn tally_mirrored(&mut self, world: &World<'_>, now: Timestamp) {
        let second = alarms::Period::ONE_SECOND;
        let settled = Timestamp(now.as_millis().saturating_sub(judging::SETTLE.as_millis() as u64));
        let complete = second.index_of(settled);
        for deployment in &world.deployments {
            self.mirrored_next.entry(deployment.id.clone()).or_insert_with(|| Tallying {
                blue_target_group: deployment.blue_target_group.clone(),
                green_target_group: deployment.green_target_group.clone(),
                next: second.index_of(now),
                until: None,
            });
        }
        for (id, tallying) in &mut self.mirrored_next {
            if tallying.until.is_none() && !world.deployments.iter().any(|d| d.id == *id) {
                tallying.until = Some(second.index_of(now) + TALLY_AFTER_END_SECS);
            }
            // After a stall, only what the metric store still holds.
            let from = tallying.next.max(complete.saturating_sub(RETENTION.as_secs()));
            let to = tallying.until.map_or(complete, |until| until.min(complete));
            let groups =
                (tallying.blue_target_group.as_str(), tallying.green_target_group.as_str());
            for index in from..to {
                let tally =
                    judging::mirrored_tally(&self.store, groups, second, second.start_of(index));
                if !tally.is_empty() {
                    self.mirrored_since.entry(id.clone()).or_default().add(&tally);
                }
            }
            tallying.next = tallying.next.max(to);
        }
        self.mirrored_next.retain(|_, t| t.until.is_none_or(|until| t.next < until));
    }

    /// Judges every period of every canary-judge instance that has ended (and settled) since
    /// the previous pass, from the first whole period after the instance appeared, and records
    /// each verdict as a datapoint of the instance's alarm, which is then evaluated at once.
    fn judge_periods(&mut self, world: &World<'_>, now: Timestamp) {
        let settled = Timestamp(now.as_millis().saturating_sub(judging::SETTLE.as_millis() as u64));
        for doc in world.alarms {
            let Some(criteria) = &doc.judge else { continue };
            for deployment in &world.deployments {
                let key = format!("{}@{}", doc.spec.name, deployment.id);
                let Some(spec) = self.alarms.get(&key).map(|a| a.spec().clone()) else { continue };
                let period = spec.period;
                // Periods before `complete` have ended and settled.
                let complete = period.index_of(settled);
                let next = *self.judge_next.entry(key.clone()).or_insert(period.index_of(now) + 1);
                // After a stall, only what the alarm still looks at.
                let from = next.max(complete.saturating_sub(u64::from(spec.evaluation_range())));
                for index in from..complete {
                    let start = period.start_of(index);
                    let groups = (
                        deployment.blue_target_group.as_str(),
                        deployment.green_target_group.as_str(),
                    );
                    let judgement =
                        judging::judge_period(&self.store, criteria, groups, period, start);
                    if let Some(value) = judging::datapoint(judgement.verdict) {
                        let _ = self.store.record(&spec.metric, start, value);
                    }
                    let judged = JudgedPeriod {
                        alarm: doc.spec.name.clone(),
                        deployment: deployment.id.clone(),
                        blue_target_group: deployment.blue_target_group.clone(),
                        green_target_group: deployment.green_target_group.clone(),
                        start,
                        period_secs: period.secs(),
                        judgement,
                        retries: judging::retries_spent(&self.store, groups.1, period, start),
                        mirrored: Some(judging::mirrored_tally(&self.store, groups, period, start))
                            .filter(|tally| !tally.is_empty()),
                    };
                    if judged.is_worse() {
                        self.judged_worse.insert(key.clone(), judged.clone());
                    }
                    self.judgements.insert(key.clone(), judged.clone());
                    self.judged_since.push(judged);
                    self.due.remove(&key);
                }
                if complete > next {
                    self.judge_next.insert(key, complete);
                }
            }
        }
        self.judge_next.retain(|key, _| self.alarms.contains_key(key));
        self.judgements.retain(|key, _| self.alarms.contains_key(key));
        self.judged_worse.retain(|key, _| self.alarms.contains_key(key));
    }

    fn sync_filters(&mut self, declared: &[MetricFilterDoc]) {
        let same = declared.len() == self.filters.len()
            && declared.iter().zip(&self.filters).all(|(d, (have, _))| d == have);
        if same {
            return;
        }
        self.filters = declared
            .iter()
            .filter_map(|doc| MetricFilter::new(doc.spec.clone()).ok().map(|f| (doc.clone(), f)))
            .collect();
    }

    /// Feeds the lines appended to task logs since the previous pass through their service's
    /// filters. A log the monitor has not seen before is read from its start (a task started
    /// since), except when the logs are taken as a baseline (see `logs_read_at`); the logs of a
    /// service without filters are skipped to their end, since a filter counts only what is
    /// logged after it exists, as CloudWatch's do.
    fn read_logs(&mut self, world: &World<'_>, now: Timestamp) {
        let continues = counter::follows(self.logs_read_at.replace(now), now);
        for (service, files) in &world.logs {
            let filtered = self.filters.iter().any(|(doc, _)| doc.service == *service);
            for path in files {
                let offset = self
                    .offsets
                    .entry(path.clone())
                    .or_insert_with(|| if continues { 0 } else { log_length(path) });
                if !filtered || !continues {
                    *offset = log_length(path);
                    continue;
                }
                for line in read_new_lines(path, offset) {
                    for (doc, filter) in &mut self.filters {
                        if doc.service == *service {
                            let _ = filter.ingest(&mut self.store, now, &line);
                        }
                    }
                }
            }
        }
    }

    /// Keeps one alarm instance per declared alarm (and per deployment for `green` alarms).
    fn sync_alarms(&mut self, world: &World<'_>, now: Timestamp) {
        let mut wanted: BTreeMap<String, AlarmSpec> = BTreeMap::new();
        for doc in world.alarms {
            match doc.dimension {
                DimensionDoc::Green => {
                    for deployment in &world.deployments {
                        if deployment.alarms.contains(&doc.spec.name)
                            && let Some(spec) = doc.spec_for(Some(&deployment.green_target_group))
                        {
                            wanted.insert(format!("{}@{}", doc.spec.name, deployment.id), spec);
                        }
                    }
                }
                _ => {
                    if let Some(spec) = doc.spec_for(None) {
                        wanted.insert(doc.spec.name.clone(), spec);
                    }
                }
            }
        }
        self.alarms.retain(|key, _| wanted.contains_key(key));
        self.due.retain(|key, _| wanted.contains_key(key));
        for (key, spec) in wanted {
            match self.alarms.get_mut(&key) {
                Some(alarm) if alarm.spec() == &spec => {}
                Some(alarm) => {
                    let _ = alarm.update_spec(spec);
                }
                None => {
                    if key.contains('@') {
                        // A deployment's green target group was idle (or blue) before: what its
                        // series holds is about other tasks, not this release.
                        self.store.remove(&spec.metric);
                    }
                    if let Ok(alarm) = Alarm::new(spec, now) {
                        self.alarms.insert(key, alarm);
                    }
                }
            }
        }
    }
}

/// Whether an evaluation now would read periods from before this monitor started as missing
/// data and count them as breaching: the time the control plane was down (or not yet up) is not
/// evidence against a release, so such an alarm keeps its state until its evaluation range lies
/// after the start. Other treatments of missing data cannot go to ALARM on a gap.
fn blind_to_the_gap(spec: &AlarmSpec, started: Timestamp, now: Timestamp) -> bool {
    spec.treat_missing_data == alarms::TreatMissingData::Breaching
        && now < spec.range_starts_after(started)
}

/// What `alarms::counter` needs to know about a snapshot to subtract it from the next one.
fn reading(snapshot: &MetricsSnapshot) -> counter::Reading {
    counter::Reading {
        source_started: Timestamp(snapshot.started_at_unix_ms),
        taken: Timestamp(snapshot.taken_at_unix_ms),
    }
}

/// The length of a task log now (0 when it cannot be read: it is read from its start once it
/// can be).
fn log_length(path: &PathBuf) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Lines appended to `path` since `offset` (complete lines only), advancing `offset`.
fn read_new_lines(path: &PathBuf, offset: &mut u64) -> Vec<String> {
    let Ok(mut file) = std::fs::File::open(path) else { return Vec::new() };
    let Ok(len) = file.metadata().map(|m| m.len()) else { return Vec::new() };
    if len < *offset {
        // Truncated or replaced: start over.
        *offset = 0;
    }
    if len == *offset || file.seek(SeekFrom::Start(*offset)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if file.take(LOG_READ_BYTES_MAX).read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let mut complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if complete == 0 && bytes.len() as u64 == LOG_READ_BYTES_MAX {
        // One line longer than the read limit: take it as it is rather than wait forever.
        complete = bytes.len();
    }
    *offset += complete as u64;
    String::from_utf8_lossy(&bytes[..complete]).lines().map(str::to_string).collect()
}

/// Whether every sample of a metric is a non-negative count: the load balancer's `…Count`
/// counters (not the host-count gauges), and filters that count matching lines.
fn only_positive_samples(metric: &MetricId, filters: &[MetricFilterDoc]) -> bool {
    let name = metric.name.as_str();
    if name.ends_with("Count") && !name.ends_with("HostCount") {
        return true;
    }
    filters.iter().any(|f| {
        f.spec.metric.name == metric.name
            && f.spec.metric_value.parse::<f64>().is_ok_and(|v| v >= 0.0)
    })
}

/// `HH:MM:SS` (UTC) of a timestamp, for reasons.
pub fn clock_time(at: Timestamp) -> String {
    let secs = at.as_millis() / 1000;
    format!("{:02}:{:02}:{:02}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use alarms::{MetricId, Period, Statistic};
    use routes::{MetricsSnapshot, TargetGroupMetrics};

    use super::*;

    /// 2026-01-01 00:00:00 UTC.
    const T0: u64 = 1_767_225_600_000;

    fn at(millis: u64) -> Timestamp {
        Timestamp(T0 + millis)
    }

    /// A snapshot of a load balancer started an hour before T0 whose `web-blue` has served
    /// `requests`, `errors` of them 5xx from its targets.
    fn snapshot(taken: Timestamp, requests: u64, errors: u64) -> MetricsSnapshot {
        let mut group = TargetGroupMetrics::default();
        group.counters.requests = requests;
        group.counters.target_5xx = errors;
        MetricsSnapshot {
            started_at_unix_ms: T0 - 3_600_000,
            taken_at_unix_ms: taken.as_millis(),
            target_groups: [("web-blue".to_string(), group)].into(),
            ..MetricsSnapshot::default()
        }
    }

    /// The Sum of `id` over the minute before `now`.
    fn sum(monitor: &Monitor, id: &MetricId, now: Timestamp) -> f64 {
        let Some(series) = monitor.store().series(id) else { return 0.0 };
        let from = Timestamp(now.as_millis() - 60_000);
        let points = series.datapoints(Period::ONE_SECOND, Statistic::Sum, from, now).unwrap();
        points.iter().map(|p| p.value).sum()
    }

    #[test]
    fn a_started_monitor_takes_the_load_balancers_counters_as_a_baseline() {
        let mut monitor = Monitor::new();
        monitor.record_snapshot(snapshot(at(0), 10_000, 20), at(0));
        monitor.record_snapshot(snapshot(at(250), 10_007, 20), at(250));
        let requests = MetricId::new("RequestCount").with("target_group", "web-blue");
        let errors = MetricId::new("HTTPCode_Target_5XX_Count").with("target_group", "web-blue");
        assert_eq!(sum(&monitor, &requests, at(2000)), 7.0, "only what was served since the start");
        assert_eq!(sum(&monitor, &errors, at(2000)), 0.0, "the 20 old 5xx are not new");
    }

    /// A snapshot at `taken` of the groups `names`, each having served `requests`.
    fn groups_snapshot(taken: Timestamp, names: &[String], requests: u64) -> MetricsSnapshot {
        let mut group = TargetGroupMetrics::default();
        group.counters.requests = requests;
        group.healthy_host_count = 2;
        MetricsSnapshot {
            started_at_unix_ms: T0 - 3_600_000,
            taken_at_unix_ms: taken.as_millis(),
            target_groups: names.iter().map(|name| (name.clone(), group.clone())).collect(),
            ..MetricsSnapshot::default()
        }
    }

    #[test]
    fn a_group_that_left_the_snapshots_and_came_back_goes_on_in_its_series() {
        let mut monitor = Monitor::new();
        let (web, api) = ("web-blue".to_string(), "api-blue".to_string());
        let both = [web.clone(), api.clone()];
        monitor.record_snapshot(groups_snapshot(at(0), &both, 10), at(0));
        monitor.record_snapshot(groups_snapshot(at(250), &both, 13), at(250));
        // `web-blue` leaves the table (its handles are dropped) and comes back, counting anew.
        monitor.record_snapshot(groups_snapshot(at(500), std::slice::from_ref(&api), 15), at(500));
        monitor.record_snapshot(groups_snapshot(at(750), &both, 4), at(750));
        let requests = |group: &str| MetricId::new("RequestCount").with("target_group", group);
        assert_eq!(sum(&monitor, &requests("web-blue"), at(2000)), 3.0 + 4.0);
        // (Both groups read 4 at the last snapshot: `api-blue`'s counter went down, a reset.)
        assert_eq!(sum(&monitor, &requests("api-blue"), at(2000)), 3.0 + 2.0 + 4.0);
        let series = monitor.store().series(&requests("web-blue")).unwrap();
        let count = series.datapoints(Period::ONE_SECOND, Statistic::SampleCount, at(0), at(1000));
        assert_eq!(
            count.unwrap()[0].value,
            2.0,
            "a 0 sample is a sample: one per snapshot with the group"
        );
    }

    #[test]
    fn a_group_refused_by_a_full_store_is_recorded_once_a_series_is_forgotten() {
        let mut monitor = Monitor::new();
        // A group records 2 gauges at every snapshot and 20 counts from the second on: the
        // store fills up before the last group's counts, whatever the cap.
        let groups = (alarms::series::SERIES_MAX + 20).div_ceil(22);
        let names: Vec<String> = (0..groups).map(|i| format!("tg-{i:04}")).collect();
        let last = names.last().unwrap().clone();
        monitor.record_snapshot(groups_snapshot(at(0), &names, 0), at(0));
        monitor.record_snapshot(groups_snapshot(at(250), &names, 1), at(250));
        let requests = MetricId::new("RequestCount").with("target_group", last.as_str());
        assert_eq!(monitor.store().len(), alarms::series::SERIES_MAX);
        assert!(monitor.store().series(&requests).is_none(), "the store is full");
        // Only the last group is left; after the gap its snapshot is a baseline, then the other
        // groups' series age out and make room.
        let later = at(250 + RETENTION.as_millis() as u64 + 2_000);
        let only_last = std::slice::from_ref(&last);
        monitor.record_snapshot(groups_snapshot(later, only_last, 1), later);
        assert!(monitor.store().len() < alarms::series::SERIES_MAX);
        let next = Timestamp(later.as_millis() + 250);
        monitor.record_snapshot(groups_snapshot(next, only_last, 6), next);
        assert_eq!(sum(&monitor, &requests, Timestamp(next.as_millis() + 1000)), 5.0);
    }

    /// At 10,000 targets (the `bench-scale` size) a snapshot holds 1,000 target groups; with a
    /// store of 10,000 series the groups after the first 450 by name had no metrics at all, and
    /// their alarms no data.
    #[test]
    fn a_snapshot_of_a_thousand_target_groups_records_every_group_s_series() {
        let mut monitor = Monitor::new();
        let names: Vec<String> = (0..1_000).map(|i| format!("lb{}-tg-{i:04}", i / 100)).collect();
        monitor.record_snapshot(groups_snapshot(at(0), &names, 0), at(0));
        monitor.record_snapshot(groups_snapshot(at(250), &names, 3), at(250));
        let missing: Vec<&String> = names
            .iter()
            .filter(|name| {
                let requests = MetricId::new("RequestCount").with("target_group", name.as_str());
                monitor.store().series(&requests).is_none()
            })
            .collect();
        assert_eq!(missing.len(), 0, "groups without a RequestCount series: {missing:?}");
        let last = MetricId::new("RequestCount").with("target_group", names[999].as_str());
        assert_eq!(sum(&monitor, &last, at(1000)), 3.0);
    }

    fn app_errors_world<'a>(
        filters: &'a [MetricFilterDoc],
        logs: &[&std::path::Path],
    ) -> World<'a> {
        World {
            alarms: &[],
            filters,
            deployments: Vec::new(),
            logs: [("web".to_string(), logs.iter().map(|p| p.to_path_buf()).collect())].into(),
        }
    }

    fn append(path: &std::path::Path, lines: &str) {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        file.write_all(lines.as_bytes()).unwrap();
    }

    #[test]
    fn a_started_monitor_counts_only_log_lines_written_since() {
        let dir = tempfile::tempdir().unwrap();
        let (adopted, started_later) = (dir.path().join("adopted.log"), dir.path().join("new.log"));
        // Lines a task logged before this monitor started (and a previous one counted).
        append(&adopted, &"Error: old\n".repeat(20));
        let metric = MetricId::new("AppErrors").with("service", "web");
        let filters = [MetricFilterDoc {
            service: "web".into(),
            spec: MetricFilterSpec {
                name: "app-errors".into(),
                pattern: "Error".into(),
                metric: metric.clone(),
                metric_value: "1".into(),
                default_value: None,
            },
        }];
        let mut monitor = Monitor::new();
        monitor.evaluate(&app_errors_world(&filters, &[&adopted]), at(0));
        append(&adopted, "Error: new\n");
        monitor.evaluate(&app_errors_world(&filters, &[&adopted]), at(1100));
        assert_eq!(sum(&monitor, &metric, at(3000)), 1.0, "only the line written since");

        // A task started since the monitor: every line of its log is new.
        append(&started_later, "Error: one\nError: two\n");
        monitor.evaluate(&app_errors_world(&filters, &[&adopted, &started_later]), at(2100));
        monitor.evaluate(&app_errors_world(&filters, &[&adopted, &started_later]), at(3100));
        assert_eq!(sum(&monitor, &metric, at(4000)), 3.0);
    }

    #[test]
    fn log_lines_written_while_the_monitor_stalled_are_skipped_not_put_into_one_second() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("task.log");
        append(&log, "started\n");
        let metric = MetricId::new("AppErrors").with("service", "web");
        let filters = [MetricFilterDoc {
            service: "web".into(),
            spec: MetricFilterSpec {
                name: "app-errors".into(),
                pattern: "Error".into(),
                metric: metric.clone(),
                metric_value: "1".into(),
                default_value: None,
            },
        }];
        let mut monitor = Monitor::new();
        monitor.evaluate(&app_errors_world(&filters, &[&log]), at(0));
        // Nothing read for longer than the gap limit: these lines cannot be placed in time.
        append(&log, &"Error: during the stall\n".repeat(30));
        let after_stall = at(counter::MAX_READING_GAP.as_millis() as u64 + 1000);
        monitor.evaluate(&app_errors_world(&filters, &[&log]), after_stall);
        append(&log, "Error: after\n");
        let next = Timestamp(after_stall.as_millis() + 1000);
        monitor.evaluate(&app_errors_world(&filters, &[&log]), next);
        monitor.evaluate(&app_errors_world(&filters, &[&log]), Timestamp(next.as_millis() + 1000));
        assert_eq!(sum(&monitor, &metric, Timestamp(next.as_millis() + 2000)), 1.0);
    }

    /// A canary judge of `source`, on green, 1 s periods, 2 of the last 3 worse fire.
    fn latency_judge(name: &str, source: alarms::judge::JudgedSource) -> AlarmDoc {
        AlarmDoc {
            spec: AlarmSpec {
                name: name.into(),
                metric: MetricId::new("CanaryJudge").with("judge", name),
                statistic: Statistic::Maximum,
                period: Period::ONE_SECOND,
                evaluation_periods: 3,
                datapoints_to_alarm: Some(2),
                threshold: 1.0,
                comparison_operator: alarms::ComparisonOperator::GreaterThanOrEqualToThreshold,
                treat_missing_data: alarms::TreatMissingData::Ignore,
                evaluate_low_sample_count_percentile: Default::default(),
            },
            dimension: DimensionDoc::Green,
            judge: Some(alarms::judge::JudgeCriteria {
                metric: alarms::judge::JudgedMetric::Latency,
                source,
                tolerance: 0.10,
                confidence: 0.99,
                min_samples: 50,
            }),
        }
    }

    /// `(bucket, answers)` of `n` answers split evenly between `ms` − 1 and `ms` + 1.
    fn answered_around(ms: u64, n: u64) -> Vec<(u32, u64)> {
        let bucket = |ms: u64| routes::latency::latency_bucket(ms * 1000) as u32;
        vec![(bucket(ms - 1), n / 2), (bucket(ms + 1), n - n / 2)]
    }

    /// After `pass` passes of 250 ms: blue served 50 client requests a pass around 20 ms, and
    /// green answered 25 copies a pass around 26 ms (30 % slower), 2 of them with a 404 where
    /// blue answered 200; green served no client.
    fn shadowed_snapshot(pass: u64) -> MetricsSnapshot {
        let mut blue = TargetGroupMetrics::default();
        blue.counters.requests = 50 * pass;
        blue.counters.target_2xx = 50 * pass;
        blue.response_time_fine = answered_around(20, 50 * pass);
        let mut green = TargetGroupMetrics::default();
        let copies = &mut green.mirrored;
        copies.counters.requests = 25 * pass;
        copies.counters.target_2xx = 23 * pass;
        copies.counters.target_4xx = 2 * pass;
        copies.mismatches = 2 * pass;
        copies.response_time_fine = answered_around(26, 25 * pass);
        MetricsSnapshot {
            started_at_unix_ms: T0 - 3_600_000,
            taken_at_unix_ms: at(pass * 250).as_millis(),
            target_groups: [("web-blue".to_string(), blue), ("web-green".to_string(), green)]
                .into(),
            ..MetricsSnapshot::default()
        }
    }

    #[test]
    fn a_judge_of_mirrored_traffic_fires_on_a_slower_green_that_served_no_client() {
        use alarms::judge::{JudgedSource, Verdict};
        let docs = [
            latency_judge("shadow-judge", JudgedSource::Mirrored),
            latency_judge("served-judge", JudgedSource::Served),
        ];
        let world = || World {
            alarms: &docs,
            filters: &[],
            deployments: vec![Watching {
                id: "d-1".into(),
                blue_target_group: "web-blue".into(),
                green_target_group: "web-green".into(),
                alarms: vec!["shadow-judge".into(), "served-judge".into()],
            }],
            logs: BTreeMap::new(),
        };
        let mut monitor = Monitor::new();
        let mut tallied = MirroredTally::default();
        for pass in 0..=24 {
            let now = at(pass * 250);
            monitor.record_snapshot(shadowed_snapshot(pass), now);
            monitor.evaluate(&world(), now);
            for tally in monitor.take_mirrored().into_values() {
                tallied.add(&tally);
            }
        }
        let judged = &monitor.judgements()["shadow-judge@d-1"];
        let judgement = &judged.judgement;
        assert_eq!(judgement.verdict, Verdict::Worse, "{}", judged.reason());
        assert_eq!((judgement.green.timed, judgement.blue.timed), (100, 200), "one second's");
        let mirrored = judged.mirrored.as_ref().expect("the period's copies");
        assert_eq!((mirrored.copies, mirrored.green_4xx, mirrored.mismatches), (100, 8, 8));
        assert_eq!(
            monitor.alarm("shadow-judge@d-1").unwrap().state(),
            AlarmState::Alarm,
            "2 of 3 periods judged worse"
        );
        // Green served no client: a judge of served requests has nothing to judge.
        let served = &monitor.judgements()["served-judge@d-1"].judgement;
        assert_eq!(served.verdict, Verdict::TooFewSamples);

        // Every settled second since the deployment appeared is tallied, once: at 6 s, seconds
        // 0–4, the copies of passes 1–19 (pass 0 is the baseline, pass 20 opens second 5).
        assert_eq!(tallied.copies, 19 * 25, "{tallied:?}");
        assert_eq!((tallied.mismatches, tallied.blue_requests), (19 * 2, 19 * 50));
        let (green, blue) = (tallied.green_summary(), tallied.blue_summary());
        assert!(green.p50.unwrap() > blue.p50.unwrap() * 1.2, "{green:?} vs {blue:?}");
    }

    #[test]
    fn a_restart_is_no_breach_for_an_alarm_that_treats_missing_data_as_breaching() {
        let spec = AlarmSpec {
            name: "blue-5xx".into(),
            metric: MetricId::new("HTTPCode_Target_5XX_Count").with("target_group", "web-blue"),
            statistic: Statistic::Sum,
            period: Period::from_secs(10).unwrap(),
            evaluation_periods: 1,
            datapoints_to_alarm: None,
            threshold: 10.0,
            comparison_operator: alarms::ComparisonOperator::GreaterThanOrEqualToThreshold,
            treat_missing_data: alarms::TreatMissingData::Breaching,
            evaluate_low_sample_count_percentile: Default::default(),
        };
        let docs = [AlarmDoc {
            spec: spec.clone(),
            dimension: DimensionDoc::TargetGroup("web-blue".into()),
            judge: None,
        }];
        let world =
            World { alarms: &docs, filters: &[], deployments: Vec::new(), logs: BTreeMap::new() };
        // OK before the restart, as stored; the restarted monitor has no history before `at(0)`.
        let mut saved = Alarm::new(spec, at(0)).unwrap();
        saved.set_state(AlarmState::Ok, "before the restart", at(0));
        let mut monitor = Monitor::new();
        monitor.restore(vec![("blue-5xx".into(), saved)]);
        for pass in 0..=240 {
            let now = at(pass * 250);
            monitor.record_snapshot(snapshot(now, 10_000 + pass, 20), now);
            monitor.evaluate(&world, now);
            let alarm = monitor.alarm("blue-5xx").unwrap();
            assert_eq!(alarm.state(), AlarmState::Ok, "at +{}ms: {}", pass * 250, alarm.reason());
        }
    }
}
