//! CloudWatch metric alarms: the definition ([`AlarmSpec`]), its validation, and the stateful
//! [`Alarm`] that evaluates a series with CloudWatch's algorithm and keeps its state history.
//!
//! # Evaluation (`Alarm::evaluate(store, now)`)
//!
//! Only complete periods are evaluated: the newest is the one that ended at or before `now`.
//! The alarm looks at an **evaluation range** of `R = N + max(2, ⌊N/3⌋)` periods (N = evaluation
//! periods; AWS fetches "more than N" without saying how many, and its reference tables use R = 5
//! for N = 3). Datapoints are breaching when `value OP threshold` holds. Then, in this order:
//!
//! 1. **Low sample count.** With a percentile statistic and
//!    `evaluate_low_sample_count_percentile: ignore`, if the newest period of the range has a
//!    datapoint with fewer samples than [`Percentile::low_sample_threshold`] (`10/(1−p)` for
//!    p ≥ 0.5, `10/p` below), the state does not change ("the alarm state does not change during
//!    periods with too few samples"). Older low-sample datapoints are evaluated normally.
//! 2. **At least N real datapoints in the range:** the most recent N are the window; missing data
//!    does not matter. ALARM when at least M of them breach, OK otherwise.
//! 3. **No datapoint in the range:** `missing` → INSUFFICIENT_DATA, `ignore` → state kept,
//!    `breaching` → ALARM, `notBreaching` → OK.
//! 4. **Some, but fewer than N (k):** the window is the k real datapoints plus the N − k newest
//!    periods without data (as few fills as possible), in time order.
//!    - `breaching` / `notBreaching`: the fills count as breaching / not breaching; ALARM when at
//!      least M of the N breach, OK otherwise.
//!    - `missing` / `ignore`: the fills do not count. ALARM when at least M real datapoints
//!      breach. Otherwise, if some real datapoint does not breach: OK. Otherwise (all k breach,
//!      k < M) the **premature-alarm guard** applies: when the oldest of them is at least M periods
//!      old (the newest period of the range is 1 period old) the alarm goes to ALARM with
//!      `missing` and keeps its state with `ignore` (AWS's table: `- - X - -` → ALARM / retain);
//!      when it is younger, the state is kept until more data arrives or it has aged
//!      (`- - - - X` does not alarm yet).
//!
//! Checked against AWS's reference tables (N = M = 3, R = 5): `0 - X - X` → OK in every mode;
//! `- - - - -` → INSUFFICIENT_DATA / kept / ALARM / OK; `0 X X - X` → ALARM; `- - X - -` → ALARM
//! (missing) / kept (ignore); and N = 3, M = 2: `0 - X - -` → OK except `breaching` → ALARM.
//!
//! **Cadence.** Call `evaluate` at least once per period, ideally right after each period boundary
//! ([`Alarm::next_evaluation`]): a period is evaluated as soon as it is complete, so with a 1 s
//! period a breach is seen within a second of the period that contains it. Evaluating more often is
//! harmless (the same data gives the same state), and a missed boundary only delays a transition.
//!
//! **Where cutover chose** (AWS is silent): the range size above; "some real datapoints, all
//! breaching, too young" keeps the state rather than going to OK; the low-sample rule looks at the
//! newest period; time given to an alarm never goes backwards (earlier `now`s are clamped).
//!
//! # Reasons and history
//!
//! Every evaluation returns an [`Evaluation`] whose `reason` is CloudWatch-style text with the
//! numbers (`Threshold Crossed: 2 out of the last 3 datapoints [7.0 (12:00:01), 5.0 (12:00:02)]
//! were greater than or equal to the threshold (5.0) (minimum 2 datapoints for OK -> ALARM
//! transition).`; times are the period starts in UTC) and whose `data` ([`ReasonData`]) carries
//! the same facts for machines: every datapoint of the window with its value, sample count and how
//! it counted. Each state change is appended to a history of at most [`HISTORY_MAX`] transitions.
//! Reason texts list at most [`REASON_LIST_MAX`] datapoints and reason data at most
//! [`REASON_DATAPOINTS_MAX`] (the newest), so a one-day alarm on a 1 s period stays small.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use model::Timestamp;
use serde::{Deserialize, Serialize};

use crate::metric::{
    Datapoint, MetricId, PERIOD_SECS_MAX, Percentile, Period, Statistic, check_text,
};
use crate::series::{MetricSeries, MetricStore, PeriodError, SeriesConfig};

/// Longest alarm name, in characters (CloudWatch: 255).
pub const ALARM_NAME_CHARS_MAX: usize = 255;
/// State transitions kept per alarm (CloudWatch keeps 14 days; cutover keeps a count).
pub const HISTORY_MAX: usize = 100;
/// Datapoints listed in a reason text; the rest are counted (`… 3 more`).
pub const REASON_LIST_MAX: usize = 10;
/// Datapoints kept in [`ReasonData`] lists (the newest).
pub const REASON_DATAPOINTS_MAX: usize = 100;
/// Longest reason given to [`Alarm::set_state`], in bytes.
pub const SET_STATE_REASON_BYTES_MAX: usize = 1024;

/// CloudWatch's comparison operators (without the anomaly-band ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ComparisonOperator {
    GreaterThanOrEqualToThreshold,
    GreaterThanThreshold,
    LessThanThreshold,
    LessThanOrEqualToThreshold,
}

impl ComparisonOperator {
    pub fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            ComparisonOperator::GreaterThanOrEqualToThreshold => value >= threshold,
            ComparisonOperator::GreaterThanThreshold => value > threshold,
            ComparisonOperator::LessThanThreshold => value < threshold,
            ComparisonOperator::LessThanOrEqualToThreshold => value <= threshold,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ComparisonOperator::GreaterThanOrEqualToThreshold => "GreaterThanOrEqualToThreshold",
            ComparisonOperator::GreaterThanThreshold => "GreaterThanThreshold",
            ComparisonOperator::LessThanThreshold => "LessThanThreshold",
            ComparisonOperator::LessThanOrEqualToThreshold => "LessThanOrEqualToThreshold",
        }
    }

    /// As CloudWatch words it in reasons: "greater than or equal to".
    fn phrase(self) -> &'static str {
        match self {
            ComparisonOperator::GreaterThanOrEqualToThreshold => "greater than or equal to",
            ComparisonOperator::GreaterThanThreshold => "greater than",
            ComparisonOperator::LessThanThreshold => "less than",
            ComparisonOperator::LessThanOrEqualToThreshold => "less than or equal to",
        }
    }
}

/// A text that is not one of CloudWatch's comparison operators.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown comparison operator `{0}`; use GreaterThanOrEqualToThreshold, GreaterThanThreshold, LessThanThreshold or LessThanOrEqualToThreshold"
)]
pub struct UnknownComparisonOperator(pub String);

impl FromStr for ComparisonOperator {
    type Err = UnknownComparisonOperator;
    fn from_str(text: &str) -> Result<ComparisonOperator, UnknownComparisonOperator> {
        [
            ComparisonOperator::GreaterThanOrEqualToThreshold,
            ComparisonOperator::GreaterThanThreshold,
            ComparisonOperator::LessThanThreshold,
            ComparisonOperator::LessThanOrEqualToThreshold,
        ]
        .into_iter()
        .find(|op| op.as_str() == text)
        .ok_or_else(|| UnknownComparisonOperator(text.to_string()))
    }
}

impl fmt::Display for ComparisonOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// CloudWatch's `TreatMissingData`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TreatMissingData {
    /// All missing ⇒ INSUFFICIENT_DATA; otherwise missing periods are not counted.
    #[default]
    Missing,
    /// Missing periods are good.
    NotBreaching,
    /// Missing periods are bad.
    Breaching,
    /// Missing periods keep the current state.
    Ignore,
}

impl TreatMissingData {
    pub fn as_str(self) -> &'static str {
        match self {
            TreatMissingData::Missing => "missing",
            TreatMissingData::NotBreaching => "notBreaching",
            TreatMissingData::Breaching => "breaching",
            TreatMissingData::Ignore => "ignore",
        }
    }

    /// How CloudWatch's reasons name it: `[Missing]`, `[NonBreaching]`, `[Breaching]`, `[Ignore]`.
    fn label(self) -> &'static str {
        match self {
            TreatMissingData::Missing => "Missing",
            TreatMissingData::NotBreaching => "NonBreaching",
            TreatMissingData::Breaching => "Breaching",
            TreatMissingData::Ignore => "Ignore",
        }
    }
}

/// A text that is not one of CloudWatch's ways to treat missing data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown treat-missing-data `{0}`; use missing, notBreaching, breaching or ignore")]
pub struct UnknownTreatMissingData(pub String);

impl FromStr for TreatMissingData {
    type Err = UnknownTreatMissingData;
    fn from_str(text: &str) -> Result<TreatMissingData, UnknownTreatMissingData> {
        match text {
            "missing" => Ok(TreatMissingData::Missing),
            "notBreaching" => Ok(TreatMissingData::NotBreaching),
            "breaching" => Ok(TreatMissingData::Breaching),
            "ignore" => Ok(TreatMissingData::Ignore),
            _ => Err(UnknownTreatMissingData(text.to_string())),
        }
    }
}

/// CloudWatch's `EvaluateLowSampleCountPercentile`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LowSampleCountPercentile {
    /// Evaluate percentiles whatever the number of samples.
    #[default]
    Evaluate,
    /// Keep the state while the newest period has too few samples for the percentile.
    Ignore,
}

/// An alarm's state, with CloudWatch's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AlarmState {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "ALARM")]
    Alarm,
    #[serde(rename = "INSUFFICIENT_DATA")]
    InsufficientData,
}

impl AlarmState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }
}

impl fmt::Display for AlarmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A metric alarm as CloudWatch's `PutMetricAlarm` defines it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlarmSpec {
    pub name: String,
    pub metric: MetricId,
    pub statistic: Statistic,
    pub period: Period,
    /// N.
    pub evaluation_periods: u32,
    /// M; `None` means N.
    #[serde(default)]
    pub datapoints_to_alarm: Option<u32>,
    pub threshold: f64,
    pub comparison_operator: ComparisonOperator,
    #[serde(default)]
    pub treat_missing_data: TreatMissingData,
    #[serde(default)]
    pub evaluate_low_sample_count_percentile: LowSampleCountPercentile,
}

/// One problem in an [`AlarmSpec`]: the field and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: &'static str,
    pub message: String,
}

/// An alarm that cannot be evaluated against the store it was given.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("alarm {alarm}: {source}")]
    Period {
        alarm: String,
        #[source]
        source: PeriodError,
    },
    #[error(
        "alarm {alarm} looks back {} ({range} periods of {period}) but the metric store keeps only \
         {}; raise the store's retention or shorten the alarm's period or evaluation periods",
        model::format_duration(*needed), model::format_duration(*retention)
    )]
    RetentionTooShort {
        alarm: String,
        range: u32,
        period: Period,
        needed: Duration,
        retention: Duration,
    },
    #[error("alarm {alarm} watches {expected} but was given the series of {got}")]
    WrongSeries { alarm: String, expected: MetricId, got: MetricId },
}

impl AlarmSpec {
    /// M: `datapoints_to_alarm`, or N when absent.
    pub fn datapoints_to_alarm(&self) -> u32 {
        self.datapoints_to_alarm.unwrap_or(self.evaluation_periods)
    }

    /// R: how many periods an evaluation looks at, `N + max(2, ⌊N/3⌋)`.
    pub fn evaluation_range(&self) -> u32 {
        let n = self.evaluation_periods;
        n.saturating_add((n / 3).max(2))
    }

    /// How far back an evaluation reads: `R × period`.
    pub fn lookback(&self) -> Duration {
        self.period.as_duration().saturating_mul(self.evaluation_range())
    }

    /// The first time at which an evaluation's range holds only periods that began after
    /// `since` (for a reader of metrics that started at `since`, periods without data before it
    /// are unknown rather than missing).
    pub fn range_starts_after(&self, since: Timestamp) -> Timestamp {
        let first_whole = self.period.index_of(since).saturating_add(1);
        self.period.start_of(first_whole.saturating_add(u64::from(self.evaluation_range())))
    }

    /// Every problem at once, each naming its field and the fix.
    pub fn validate(&self) -> Result<(), Vec<SpecError>> {
        let mut errors = Vec::new();
        let mut fail = |field, message: String| errors.push(SpecError { field, message });
        if let Err(e) = check_text("alarm name", &self.name, ALARM_NAME_CHARS_MAX) {
            fail("name", e.to_string());
        }
        if let Err(e) = self.metric.validate() {
            fail("metric", e.to_string());
        }
        let n = self.evaluation_periods;
        if n == 0 {
            fail("evaluation_periods", "must be at least 1".to_string());
        } else if u64::from(n) * u64::from(self.period.secs()) > u64::from(PERIOD_SECS_MAX) {
            fail(
                "evaluation_periods",
                format!(
                    "{n} periods of {} span {}, more than one day; evaluation_periods × period \
                     must be at most 86400 seconds",
                    self.period,
                    model::format_duration(self.period.as_duration().saturating_mul(n))
                ),
            );
        }
        match self.datapoints_to_alarm {
            Some(0) => fail("datapoints_to_alarm", "must be at least 1".to_string()),
            Some(m) if m > n => fail(
                "datapoints_to_alarm",
                format!(
                    "{m} datapoints to alarm out of {n} evaluation periods; M must be at most N \
                     (raise evaluation_periods or lower datapoints_to_alarm)"
                ),
            ),
            _ => {}
        }
        if !self.threshold.is_finite() {
            fail("threshold", format!("{} is not a finite number", self.threshold));
        }
        if self.evaluate_low_sample_count_percentile == LowSampleCountPercentile::Ignore
            && self.statistic.percentile().is_none()
        {
            fail(
                "evaluate_low_sample_count_percentile",
                format!(
                    "`ignore` applies only to percentile statistics (pNN) and the statistic is \
                     {}; remove the setting or use a percentile",
                    self.statistic
                ),
            );
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// Whether a store with `config` can serve this alarm: the period must be a multiple of the
    /// store's resolution and the retention must cover the evaluation range. The control plane can
    /// call this when it applies a configuration; `evaluate` checks it too.
    pub fn check_store(&self, config: SeriesConfig) -> Result<(), EvalError> {
        let resolution = config.resolution();
        if !self.period.secs().is_multiple_of(resolution.secs()) {
            return Err(EvalError::Period {
                alarm: self.name.clone(),
                source: PeriodError { period: self.period, resolution },
            });
        }
        let needed = self.lookback();
        if config.retention() < needed {
            return Err(EvalError::RetentionTooShort {
                alarm: self.name.clone(),
                range: self.evaluation_range(),
                period: self.period,
                needed,
                retention: config.retention(),
            });
        }
        Ok(())
    }
}

/// How a datapoint of the window counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Treatment {
    Breaching,
    NotBreaching,
    /// A period without data that did not count (treat-missing-data `missing` or `ignore`).
    Missing,
}

/// One datapoint of the window that decided, real or filled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowPoint {
    /// Start of the period.
    pub start: Timestamp,
    /// `None`: the period had no data and was filled per treat-missing-data.
    pub value: Option<f64>,
    pub sample_count: u64,
    pub treated_as: Treatment,
}

/// Which rule decided an evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Decision {
    /// At least M of the window's datapoints breach (ALARM), or fewer do (OK).
    Threshold,
    /// No datapoint in the whole evaluation range; treat-missing-data decided.
    NoData,
    /// Fewer than M real datapoints, all breaching, the oldest at least M periods old: ALARM
    /// (`missing`) or state kept (`ignore`).
    PrematureAlarmRule,
    /// Fewer than M real datapoints, all breaching, the oldest younger than M periods: state kept.
    PrematureAlarmGuard,
    /// The newest datapoint has too few samples for the percentile: state kept.
    LowSampleCount,
}

/// The facts behind an evaluation, for machines (CloudWatch's `StateReasonData`, extended).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReasonData {
    pub metric: MetricId,
    pub statistic: Statistic,
    pub period: Period,
    pub threshold: f64,
    pub comparison_operator: ComparisonOperator,
    pub evaluation_periods: u32,
    pub datapoints_to_alarm: u32,
    pub treat_missing_data: TreatMissingData,
    /// Start of the oldest period of the evaluation range.
    pub range_start: Timestamp,
    /// End of the newest period of the evaluation range.
    pub range_end: Timestamp,
    /// Every real datapoint in the range, oldest first (at most the newest
    /// [`REASON_DATAPOINTS_MAX`]).
    pub recent_datapoints: Vec<Datapoint>,
    /// The datapoints that decided, real and filled, oldest first (at most the newest
    /// [`REASON_DATAPOINTS_MAX`]).
    pub window: Vec<WindowPoint>,
    /// How many datapoints of the window counted as breaching.
    pub breaching: u32,
    pub decision: Decision,
}

/// The result of one [`Alarm::evaluate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub time: Timestamp,
    pub previous: AlarmState,
    pub state: AlarmState,
    pub reason: String,
    pub data: ReasonData,
}

impl Evaluation {
    pub fn changed(&self) -> bool {
        self.previous != self.state
    }
}

/// One entry of an alarm's state history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub time: Timestamp,
    pub from: AlarmState,
    pub to: AlarmState,
    pub reason: String,
    /// `None` for [`Alarm::set_state`].
    pub data: Option<ReasonData>,
}

/// An alarm with its state, the reason for it, and its history. Created INSUFFICIENT_DATA.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    spec: AlarmSpec,
    state: AlarmState,
    reason: String,
    reason_data: Option<ReasonData>,
    /// When the state last changed.
    state_since: Timestamp,
    /// The latest time the alarm was given; earlier `now`s are clamped to it.
    latest: Timestamp,
    history: VecDeque<Transition>,
}

/// One period of the evaluation range.
struct Slot {
    start: Timestamp,
    point: Option<SlotPoint>,
}

struct SlotPoint {
    value: f64,
    sample_count: u64,
    low_sample: bool,
}

/// What `decide` concluded; `state` is the new state.
struct Verdict {
    state: AlarmState,
    decision: Decision,
    window: Vec<WindowPoint>,
    breaching: u32,
    reason: String,
}

impl Alarm {
    /// A new alarm in INSUFFICIENT_DATA ("Unchecked: Initial alarm creation").
    pub fn new(spec: AlarmSpec, now: Timestamp) -> Result<Alarm, Vec<SpecError>> {
        spec.validate()?;
        Ok(Alarm {
            spec,
            state: AlarmState::InsufficientData,
            reason: "Unchecked: Initial alarm creation".to_string(),
            reason_data: None,
            state_since: now,
            latest: now,
            history: VecDeque::new(),
        })
    }

    pub fn spec(&self) -> &AlarmSpec {
        &self.spec
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn state(&self) -> AlarmState {
        self.state
    }

    /// Why the alarm is in its state: the reason of the latest transition.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn reason_data(&self) -> Option<&ReasonData> {
        self.reason_data.as_ref()
    }

    pub fn state_since(&self) -> Timestamp {
        self.state_since
    }

    /// State transitions, oldest first, at most [`HISTORY_MAX`].
    pub fn history(&self) -> impl DoubleEndedIterator<Item = &Transition> + ExactSizeIterator {
        self.history.iter()
    }

    /// Replaces the definition (CloudWatch's `PutMetricAlarm` on an existing alarm): the state and
    /// history are kept; the next evaluation applies the new rules.
    pub fn update_spec(&mut self, spec: AlarmSpec) -> Result<(), Vec<SpecError>> {
        spec.validate()?;
        self.spec = spec;
        Ok(())
    }

    /// Forces a state until the next evaluation (CloudWatch's `SetAlarmState`, for tests and
    /// drills). Recorded in the history when it changes the state.
    pub fn set_state(&mut self, state: AlarmState, reason: &str, now: Timestamp) {
        let now = self.clamp(now);
        let reason = clean(reason, SET_STATE_REASON_BYTES_MAX);
        self.transition(now, state, reason, None);
    }

    /// When the next period completes: the earliest time an evaluation can see new data.
    pub fn next_evaluation(&self, now: Timestamp) -> Timestamp {
        let period = self.spec.period;
        period.start_of(period.index_of(now.max(self.latest)) + 1)
    }

    /// Evaluates the alarm's metric in `store` at `now` and records a transition if the state
    /// changes. A metric the store has never seen is all missing data.
    pub fn evaluate(
        &mut self,
        store: &MetricStore,
        now: Timestamp,
    ) -> Result<Evaluation, EvalError> {
        self.evaluate_with(store.config(), store.series(&self.spec.metric), now)
    }

    /// [`Alarm::evaluate`] against one series (which must be the alarm's metric).
    pub fn evaluate_series(
        &mut self,
        series: &MetricSeries,
        now: Timestamp,
    ) -> Result<Evaluation, EvalError> {
        if series.id() != &self.spec.metric {
            return Err(EvalError::WrongSeries {
                alarm: self.spec.name.clone(),
                expected: self.spec.metric.clone(),
                got: series.id().clone(),
            });
        }
        self.evaluate_with(series.config(), Some(series), now)
    }

    fn evaluate_with(
        &mut self,
        config: SeriesConfig,
        series: Option<&MetricSeries>,
        now: Timestamp,
    ) -> Result<Evaluation, EvalError> {
        self.spec.check_store(config)?;
        let now = self.clamp(now);
        let spec = &self.spec;
        let period = spec.period;
        // The period containing `now` is still filling; the range ends where it begins.
        let current = period.index_of(now);
        let first = current.saturating_sub(u64::from(spec.evaluation_range()));
        let (from, to) = (period.start_of(first), period.start_of(current));
        let stats = match series {
            Some(series) => series
                .stats(period, from, to)
                .map_err(|source| EvalError::Period { alarm: spec.name.clone(), source })?,
            None => Vec::new(),
        };
        let mut slots: Vec<Slot> =
            (first..current).map(|i| Slot { start: period.start_of(i), point: None }).collect();
        for s in &stats {
            let i = (period.index_of(s.start) - first) as usize;
            slots[i].point = Some(SlotPoint {
                value: s.value(spec.statistic),
                sample_count: s.sample_count(),
                low_sample: s.is_low_sample(spec.statistic),
            });
        }
        let verdict = decide(spec, &slots, self.state);
        let recent_datapoints: Vec<Datapoint> =
            stats.iter().map(|s| s.datapoint(spec.statistic)).collect();
        let data = ReasonData {
            metric: spec.metric.clone(),
            statistic: spec.statistic,
            period,
            threshold: spec.threshold,
            comparison_operator: spec.comparison_operator,
            evaluation_periods: spec.evaluation_periods,
            datapoints_to_alarm: spec.datapoints_to_alarm(),
            treat_missing_data: spec.treat_missing_data,
            range_start: from,
            range_end: to,
            recent_datapoints: newest(recent_datapoints, REASON_DATAPOINTS_MAX),
            window: newest(verdict.window, REASON_DATAPOINTS_MAX),
            breaching: verdict.breaching,
            decision: verdict.decision,
        };
        let evaluation = Evaluation {
            time: now,
            previous: self.state,
            state: verdict.state,
            reason: verdict.reason,
            data,
        };
        if evaluation.changed() {
            self.transition(
                now,
                evaluation.state,
                evaluation.reason.clone(),
                Some(evaluation.data.clone()),
            );
        }
        Ok(evaluation)
    }

    fn clamp(&mut self, now: Timestamp) -> Timestamp {
        self.latest = self.latest.max(now);
        self.latest
    }

    fn transition(
        &mut self,
        now: Timestamp,
        to: AlarmState,
        reason: String,
        data: Option<ReasonData>,
    ) {
        if to == self.state {
            return;
        }
        if self.history.len() >= HISTORY_MAX {
            self.history.pop_front();
        }
        self.history.push_back(Transition {
            time: now,
            from: self.state,
            to,
            reason: reason.clone(),
            data: data.clone(),
        });
        self.state = to;
        self.reason = reason;
        self.reason_data = data;
        self.state_since = now;
    }
}

/// The evaluation algorithm of the module docs, on the periods of the range (oldest first).
fn decide(spec: &AlarmSpec, slots: &[Slot], current: AlarmState) -> Verdict {
    let n = spec.evaluation_periods as usize;
    let m = spec.datapoints_to_alarm() as usize;
    let mode = spec.treat_missing_data;
    let real_point = |slot: &Slot| {
        let point = slot.point.as_ref()?;
        let breaching = spec.comparison_operator.breaches(point.value, spec.threshold);
        Some(WindowPoint {
            start: slot.start,
            value: Some(point.value),
            sample_count: point.sample_count,
            treated_as: if breaching { Treatment::Breaching } else { Treatment::NotBreaching },
        })
    };
    let fill = |slot: &Slot| WindowPoint {
        start: slot.start,
        value: None,
        sample_count: 0,
        treated_as: match mode {
            TreatMissingData::Breaching => Treatment::Breaching,
            TreatMissingData::NotBreaching => Treatment::NotBreaching,
            TreatMissingData::Missing | TreatMissingData::Ignore => Treatment::Missing,
        },
    };
    let text = Text { spec, current, range: slots.len() };

    let real: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].point.is_some()).collect();
    // 1. Too few samples for the percentile in the newest period.
    let low_sample = spec.evaluate_low_sample_count_percentile == LowSampleCountPercentile::Ignore
        && slots.last().and_then(|s| s.point.as_ref()).is_some_and(|p| p.low_sample);
    let (state, decision, window) = if low_sample {
        let window: Vec<WindowPoint> = slots.last().and_then(real_point).into_iter().collect();
        (current, Decision::LowSampleCount, window)
    } else if real.len() >= n {
        // 2. Enough real datapoints: missing data does not matter.
        let window: Vec<WindowPoint> =
            real[real.len() - n..].iter().filter_map(|&i| real_point(&slots[i])).collect();
        let state = threshold_state(&window, m);
        (state, Decision::Threshold, window)
    } else if real.is_empty() {
        // 3. Nothing at all.
        let window: Vec<WindowPoint> =
            slots[slots.len().saturating_sub(n)..].iter().map(fill).collect();
        let state = match mode {
            TreatMissingData::Missing => AlarmState::InsufficientData,
            TreatMissingData::Ignore => current,
            TreatMissingData::Breaching => AlarmState::Alarm,
            TreatMissingData::NotBreaching => AlarmState::Ok,
        };
        (state, Decision::NoData, window)
    } else {
        // 4. Some: fill the newest empty periods, as few as needed to make N.
        let mut fills: Vec<usize> = (0..slots.len())
            .rev()
            .filter(|&i| slots[i].point.is_none())
            .take(n - real.len())
            .collect();
        fills.extend(&real);
        fills.sort_unstable();
        let window: Vec<WindowPoint> = fills
            .iter()
            .map(|&i| real_point(&slots[i]).unwrap_or_else(|| fill(&slots[i])))
            .collect();
        match mode {
            TreatMissingData::Breaching | TreatMissingData::NotBreaching => {
                (threshold_state(&window, m), Decision::Threshold, window)
            }
            TreatMissingData::Missing | TreatMissingData::Ignore => {
                let breaching = count_breaching(&window) as usize;
                if breaching >= m {
                    (AlarmState::Alarm, Decision::Threshold, window)
                } else if breaching < real.len() {
                    (AlarmState::Ok, Decision::Threshold, window)
                } else {
                    // All real datapoints breach, but fewer than M: the premature-alarm guard.
                    let oldest_age = slots.len() - real[0];
                    if oldest_age >= m {
                        let state = if mode == TreatMissingData::Missing {
                            AlarmState::Alarm
                        } else {
                            current
                        };
                        (state, Decision::PrematureAlarmRule, window)
                    } else {
                        (current, Decision::PrematureAlarmGuard, window)
                    }
                }
            }
        }
    };
    let breaching = count_breaching(&window);
    let reason = text.reason(state, decision, &window, &real, slots);
    Verdict { state, decision, window, breaching, reason }
}

fn count_breaching(window: &[WindowPoint]) -> u32 {
    window.iter().filter(|p| p.treated_as == Treatment::Breaching).count() as u32
}

fn threshold_state(window: &[WindowPoint], m: usize) -> AlarmState {
    if count_breaching(window) as usize >= m { AlarmState::Alarm } else { AlarmState::Ok }
}

/// Builds reason texts.
struct Text<'a> {
    spec: &'a AlarmSpec,
    current: AlarmState,
    /// Periods in the evaluation range.
    range: usize,
}

impl Text<'_> {
    fn reason(
        &self,
        state: AlarmState,
        decision: Decision,
        window: &[WindowPoint],
        real: &[usize],
        slots: &[Slot],
    ) -> String {
        let spec = self.spec;
        let (n, m) = (spec.evaluation_periods as usize, spec.datapoints_to_alarm() as usize);
        let op = spec.comparison_operator.phrase();
        let threshold = number(spec.threshold);
        let mode = spec.treat_missing_data;
        let label = mode.label();
        let filled = window.iter().filter(|p| p.value.is_none()).count();
        let counted: Vec<&WindowPoint> =
            window.iter().filter(|p| p.treated_as != Treatment::Missing).collect();
        let breaching: Vec<&WindowPoint> =
            counted.iter().copied().filter(|p| p.treated_as == Treatment::Breaching).collect();
        let fill_note = if filled == 0 {
            String::new()
        } else {
            format!(" ({} treated as [{label}])", count(filled, "missing datapoint"))
        };
        match decision {
            Decision::NoData => {
                let head =
                    format!("no datapoints were received for {}", count(self.range, "period"));
                match state {
                    AlarmState::InsufficientData => format!(
                        "Insufficient Data: {head} and {} treated as [{label}].",
                        were(window.len(), "missing datapoint")
                    ),
                    _ if mode == TreatMissingData::Ignore => format!(
                        "{head} and missing data is treated as [{label}]: the state stays {}.",
                        self.current
                    ),
                    _ => format!(
                        "Threshold Crossed: {head} and {} treated as [{label}].",
                        were(window.len(), "missing datapoint")
                    ),
                }
            }
            Decision::Threshold if state == AlarmState::Alarm => format!(
                "Threshold Crossed: {} out of the last {} {} {} the threshold ({threshold}){fill_note} \
                 (minimum {} for {}).",
                breaching.len(),
                count(counted.len(), "datapoint"),
                list(&breaching),
                verb(breaching.len(), op),
                count(m, "datapoint"),
                self.change(state)
            ),
            Decision::Threshold => {
                let ok: Vec<&WindowPoint> = counted
                    .iter()
                    .copied()
                    .filter(|p| p.treated_as == Treatment::NotBreaching)
                    .collect();
                let minimum = if counted.len() == n {
                    format!("minimum {} for {}", count(n - m + 1, "datapoint"), self.change(state))
                } else {
                    format!("{} breaching, fewer than the {m} needed for ALARM", breaching.len())
                };
                format!(
                    "Threshold Crossed: {} out of the last {} {} {} not {op} the threshold \
                     ({threshold}){fill_note} ({minimum}).",
                    ok.len(),
                    count(counted.len(), "datapoint"),
                    list(&ok),
                    if ok.len() == 1 { "was" } else { "were" },
                )
            }
            Decision::PrematureAlarmRule | Decision::PrematureAlarmGuard => {
                let age = real.first().map_or(0, |&i| slots.len() - i);
                let which = match real.len() {
                    1 => "the only datapoint".to_string(),
                    k => format!("all {k} datapoints"),
                };
                let head = format!(
                    "{which} received in the last {} {} {} the threshold ({threshold})",
                    count(age, "period"),
                    list(&breaching),
                    verb(breaching.len(), op),
                );
                if decision == Decision::PrematureAlarmGuard {
                    format!(
                        "{head}, fewer than the {m} datapoints to alarm, and the oldest is only \
                         {} old: the state stays {} until more data arrives or it is {} old \
                         (premature-alarm guard).",
                        count(age, "period"),
                        self.current,
                        count(m, "period")
                    )
                } else if state == AlarmState::Alarm {
                    format!(
                        "Threshold Crossed: {head} and the oldest is {} old, at least the {m} \
                         datapoints to alarm; the other periods had no data, treated as \
                         [{label}] (minimum {} for {}).",
                        count(age, "period"),
                        count(m, "datapoint"),
                        self.change(state)
                    )
                } else {
                    format!(
                        "{head} and the oldest is {} old, at least the {m} datapoints to alarm; \
                         the other periods had no data and missing data is treated as [{label}]: \
                         the state stays {}.",
                        count(age, "period"),
                        self.current
                    )
                }
            }
            Decision::LowSampleCount => {
                window.first().map(|p| self.low_sample(p)).unwrap_or_default()
            }
        }
    }

    fn low_sample(&self, newest: &WindowPoint) -> String {
        let statistic = self.spec.statistic;
        let min = statistic.percentile().and_then(Percentile::low_sample_threshold).unwrap_or(0);
        format!(
            "the newest datapoint {} comes from {}, fewer than the {min} that {statistic} needs \
             (evaluateLowSampleCountPercentile is ignore): the state stays {}.",
            list(&[newest]),
            count(newest.sample_count as usize, "sample"),
            self.current
        )
    }

    /// `OK -> ALARM transition`, or just `ALARM` when the state stays.
    fn change(&self, to: AlarmState) -> String {
        if to == self.current {
            to.to_string()
        } else {
            format!("{} -> {to} transition", self.current)
        }
    }
}

/// `1 datapoint`, `3 datapoints`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// `1 missing datapoint was`, `3 missing datapoints were`.
fn were(n: usize, noun: &str) -> String {
    format!("{} {}", count(n, noun), if n == 1 { "was" } else { "were" })
}

/// `was greater than`, `were greater than`.
fn verb(n: usize, op: &str) -> String {
    format!("{} {op}", if n == 1 { "was" } else { "were" })
}

/// `[7.0 (12:00:01), missing (12:00:02)]`, the newest [`REASON_LIST_MAX`] only.
fn list(points: &[&WindowPoint]) -> String {
    let skip = points.len().saturating_sub(REASON_LIST_MAX);
    let mut parts: Vec<String> = Vec::new();
    if skip > 0 {
        parts.push(format!("… {skip} more"));
    }
    for p in &points[skip..] {
        let value = p.value.map_or_else(|| "missing".to_string(), number);
        parts.push(format!("{value} ({})", clock(p.start)));
    }
    format!("[{}]", parts.join(", "))
}

/// Shortest text that reads back as the same number, always with a decimal point (`5.0`).
fn number(value: f64) -> String {
    format!("{value:?}")
}

/// `HH:MM:SS` in UTC.
pub(crate) fn clock(t: Timestamp) -> String {
    let secs = t.as_millis() / 1000;
    format!("{:02}:{:02}:{:02}", secs / 3600 % 24, secs / 60 % 60, secs % 60)
}

fn newest<T>(mut items: Vec<T>, max: usize) -> Vec<T> {
    let extra = items.len().saturating_sub(max);
    items.drain(..extra);
    items
}

/// Text from outside, cut to `max` bytes at a character boundary, control characters as spaces.
fn clean(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}
