//! CloudWatch's metrics, metric alarms and log metric filters, as pure, deterministic code.
//!
//! The control plane records samples into a [`MetricStore`] (one [`MetricSeries`] per
//! [`MetricId`]), feeds log lines through [`MetricFilter`]s into the same store, and calls
//! [`Alarm::evaluate`] at least once per alarm period. Nothing here reads a clock or touches the
//! world: every entry point takes the time (`model::Timestamp`, milliseconds since the epoch), so a
//! day of alarm history is tested in milliseconds and the same samples at the same times always
//! give the same states and reasons. Alarms, stores and specs are `Serialize`/`Deserialize` (the
//! control plane persists alarm state and history and shows them in its API); filters are rebuilt
//! from their [`MetricFilterSpec`].
//!
//! - [`metric`]: [`MetricId`], [`Period`] (whole seconds, 1 s to 1 day), [`Statistic`]
//!   (`SampleCount`, `Sum`, `Average`, `Minimum`, `Maximum`, `pNN`, `pNN.NN`), [`Datapoint`].
//! - [`series`]: bucketing, retention, statistics, and the percentile rules (nearest rank; exact up
//!   to 128 distinct values per period, then within 2 %).
//! - [`alarm`]: [`AlarmSpec`] and its validation, [`Alarm`] and the evaluation algorithm (M of N,
//!   treat-missing-data, the premature-alarm guard, low-sample percentiles), reasons with the
//!   numbers ([`ReasonData`]), and the bounded state history.
//! - [`counter`]: cumulative counters to increases: baselines, resets, restarts of the source.
//! - [`judge`]: the canary judge: green compared with blue over the same window (error rates by
//!   Farrington–Manning's score test, latencies by Mann–Whitney U), beyond a tolerance, with a
//!   confidence, never on too few samples; a judge alarm watches its verdicts per period.
//! - [`filter`]: the filter-pattern language (terms, `?` OR, `-` exclusion, phrases, JSON
//!   selectors) and per-period metric values with `default_value`.
//!
//! # Wiring it into the control plane
//!
//! Load-balancer metrics come from the data plane's `GET /v1/metrics` (`routes::MetricsSnapshot`),
//! whose counters are cumulative since the data plane started. Poll it well inside the shortest
//! alarm period (every 250 ms for 1 s alarms), turn each counter into an increase with [`counter`]
//! (the first snapshot after the reader starts, or after a gap, is only a baseline; a restarted
//! data plane or a counter that went down counts from zero), and record the increases at the
//! snapshot's `taken_at_unix_ms`, per
//! target group (dimension `target_group=<name>`, and `target=<addr>` for per-target series):
//! `RequestCount` = Δrequests, `HTTPCode_Target_2XX_Count` … `_5XX_Count` = Δtarget_Nxx,
//! `HTTPCode_ELB_5XX_Count` = Δ(elb_502 + elb_503 + elb_504) (and the `_502/_503/_504` series),
//! `TargetConnectionErrorCount`, all with [`MetricStore::record`], **including zeros**, so that a
//! group that serves traffic without errors has a `Sum` of 0 rather than missing data (alarms on
//! counts still use `treat_missing_data: notBreaching`, for when nothing is polled).
//! `TargetResponseTime` (seconds) comes from the Δ of each fine bucket of the group's
//! `response_time_fine` (`routes::latency`, at most 12.5 % wide), recorded with
//! [`MetricStore::record_n`] at the bucket's largest value; from a data plane that has no fine
//! buckets, from the Δ of the coarse response-time histogram: record each
//! bucket's Δcount with [`MetricStore::record_n`] at its upper bound
//! (`routes::RESPONSE_TIME_BUCKETS_US[i]` / 10⁶; the overflow bucket at the largest bound), which
//! keeps percentiles exact at the histogram's resolution and conservative (an upper bound, as
//! Prometheus' `histogram_quantile` without interpolation); record nothing when Δcount is 0, so a
//! period without requests is missing data for latency alarms. `HealthyHostCount` and
//! `UnHealthyHostCount` are gauges: record the snapshot's value at each poll and alarm on
//! `Minimum` or `Maximum`. Task logs (stdout/stderr lines from the process and Docker runtimes) go
//! through each of the service's [`MetricFilter`]s with [`MetricFilter::ingest`] at the time the
//! line was read (dimension `service=<name>`; a log already there when the reader starts is read
//! from its end, as a counter's first value is a baseline); before evaluating, call [`MetricFilter::flush`] and
//! [`Alarm::evaluate`] right after each period boundary ([`Alarm::next_evaluation`]), and feed a
//! change to ALARM of a deployment group's alarm to `rollout` as `Input::Alarm { name, reason }`
//! with the evaluation's reason; keep [`Evaluation::data`] with the deployment to show which
//! datapoints decided. Size the store so its retention covers every alarm's lookback
//! ([`AlarmSpec::check_store`] tells when it does not).
//! A reader that records the same series many times a second (thousands of target groups, 4
//! samples a second) keeps each one's [`SeriesHandle`] ([`MetricStore::handle`]) and records with
//! [`MetricStore::record_n_into`], which finds the series without its id; once the store forgot
//! the series ([`RecordError::Forgotten`]) it records by the id again.

pub mod alarm;
pub mod counter;
pub mod filter;
#[doc(hidden)]
pub mod fuzzing;
pub mod judge;
pub mod metric;
pub mod series;

#[cfg(test)]
mod tests;

pub use alarm::{
    Alarm, AlarmSpec, AlarmState, ComparisonOperator, Decision, EvalError, Evaluation,
    LowSampleCountPercentile, ReasonData, SpecError, Transition, TreatMissingData, Treatment,
    UnknownComparisonOperator, UnknownTreatMissingData, WindowPoint,
};
pub use counter::{Continuity, MAX_READING_GAP, Reading};
pub use filter::{FilterError, FilterPattern, MetricFilter, MetricFilterSpec, PatternError};
pub use metric::{
    Datapoint, MetricId, MetricIdError, Percentile, Period, PeriodOutOfRange, Statistic,
    StatisticError, TextError,
};
pub use series::{
    MetricSeries, MetricStore, PeriodError, PeriodStats, RecordError, SeriesConfig,
    SeriesConfigError, SeriesHandle, SeriesWireError,
};
