//! Time series of samples, aggregated into fixed periods with every statistic, in bounded memory.
//!
//! A [`MetricSeries`] keeps one bucket per `resolution` (1 s by default) holding the exact sample
//! count, sum, minimum and maximum, and the distribution of values for percentiles. Queries
//! ([`MetricSeries::stats`]) merge the buckets of any period that is a multiple of the resolution.
//!
//! # Percentiles
//!
//! **Nearest rank**, never interpolated: `pP` of `n` samples is the sample of rank
//! `max(1, ⌈P/100 × n⌉)` in ascending order, so it is always a value that was recorded. `p0` is the
//! minimum and `p100` the maximum.
//!
//! The distribution is kept **exactly** (each distinct value with its count) while a bucket, or a
//! period being queried, holds at most [`EXACT_DISTINCT_VALUES_MAX`] distinct values. That covers
//! every small sample count, and also any number of samples fed from a fixed-bucket histogram (the
//! data plane's response-time histogram has 15 bucket bounds). Beyond that the bucket switches to a
//! logarithmic histogram (a DDSketch) whose answers are within [`SKETCH_RELATIVE_ERROR`] (2 %) of
//! the true sample at that rank, clamped to the exact minimum and maximum. The histogram keeps at
//! most [`SKETCH_BINS_MAX`] bins per sign; beyond ~28 000× between the smallest and largest value
//! the lowest bins are merged, which only coarsens the lowest percentiles. `SampleCount`, `Sum`,
//! `Average`, `Minimum` and `Maximum` are always exact.
//!
//! # Retention and memory
//!
//! A series keeps the buckets whose end is later than `latest − retention`, where `latest` is the
//! latest time it was given (by [`MetricSeries::record`] or [`MetricSeries::prune`]): at most
//! `retention / resolution + 1` buckets, which [`SeriesConfig::new`] caps at [`BUCKETS_MAX`]. A
//! bucket takes at most about 2 KiB while exact (128 values with counts) and 4 KiB as a histogram
//! (2 × 256 bins), so the worst case of the default configuration (1 s for 3 h, like CloudWatch's
//! high-resolution metrics) is about 43 MiB per series, reached only by samples of both signs
//! spread over many decades every second; counters and histogram-fed latencies whose samples
//! change every second take about 1 MiB.
//!
//! Neighbouring buckets with bit-for-bit identical samples are kept once, as a run (first index,
//! length, samples): an idle second (the same number of zero counts, the same gauge reading) costs
//! nothing more than the run it extends, so a series idle for its whole retention is one run, a
//! few hundred bytes with its id, however long the retention. Queries merge a run's share of a
//! period as that many buckets would be merged one by one (sums added as often, counts
//! multiplied), so every answer is the one of keeping each bucket. A sample into the newest
//! second splits that second off its run when it differs, and pruning trims a run's front.
//!
//! A [`MetricStore`] holds at most [`SERIES_MAX`] series. The window follows the latest
//! time seen, so a sample stamped far in the future (a clock jump) ages everything before it out.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use model::Timestamp;
use serde::{Deserialize, Serialize};

use crate::metric::{
    Datapoint, MetricId, MetricIdError, Percentile, Period, PeriodOutOfRange, Statistic,
};

/// Distinct values a bucket (or a queried period) keeps exactly before switching to a histogram.
pub const EXACT_DISTINCT_VALUES_MAX: usize = 128;
/// Bins per sign of the logarithmic histogram.
pub const SKETCH_BINS_MAX: usize = 256;
/// Relative error of a percentile read from the logarithmic histogram.
pub const SKETCH_RELATIVE_ERROR: f64 = 0.02;
/// Most buckets one series may retain (`retention / resolution`).
pub const BUCKETS_MAX: u64 = 100_000;
/// Most series in a [`MetricStore`]: every series of 1,000 target groups (ten load balancers at
/// ALB's quota of 100 each; the control plane records 22 per group) with room for as many again
/// from metric filters. An idle series is one run, a few hundred bytes to a few KiB; a series
/// whose samples change every second keeps its seconds (about 2.6 MB after 3 hours), so memory
/// follows how many series are busy, not how many are held.
pub const SERIES_MAX: usize = 30_000;

/// `γ = (1 + α) / (1 − α)`: bin `k` holds the values in `(γ^(k−1), γ^k]`.
fn ln_gamma() -> f64 {
    ((1.0 + SKETCH_RELATIVE_ERROR) / (1.0 - SKETCH_RELATIVE_ERROR)).ln()
}

/// A dense run of histogram bins for values of one sign, by magnitude.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Bins {
    /// Key of `counts[0]`.
    offset: i32,
    counts: Vec<u64>,
}

impl Bins {
    fn key(magnitude: f64) -> i32 {
        // `magnitude` is finite and positive, so the key is within ±40 000.
        (magnitude.ln() / ln_gamma()).ceil() as i32
    }

    /// The value reported for bin `key`: the point of least relative error within the bin.
    fn value(key: i32) -> f64 {
        let gamma = ln_gamma().exp();
        (f64::from(key) * ln_gamma()).exp() * 2.0 / (1.0 + gamma)
    }

    fn add(&mut self, key: i32, n: u64) {
        if self.counts.is_empty() {
            self.offset = key;
            self.counts.push(n);
            return;
        }
        let (lo, hi, k) = (
            i64::from(self.offset),
            i64::from(self.offset) + self.counts.len() as i64 - 1,
            i64::from(key),
        );
        let new_hi = hi.max(k);
        let new_lo = lo.min(k).max(new_hi - SKETCH_BINS_MAX as i64 + 1);
        if new_lo != lo || new_hi != hi {
            // Bins below `new_lo` collapse into it: the histogram forgets the smallest magnitudes
            // first, which keeps the high percentiles (what alarms watch) accurate.
            let mut counts = vec![0u64; (new_hi - new_lo + 1) as usize];
            for (i, c) in self.counts.iter().enumerate() {
                let at = (lo + i as i64).max(new_lo) - new_lo;
                counts[at as usize] += c;
            }
            self.offset = new_lo as i32;
            self.counts = counts;
        }
        let at = k.max(new_lo) - new_lo;
        self.counts[at as usize] += n;
    }

    /// Adds `other`'s counts `times` over: the same bins as merging it `times` times, since where
    /// a count lands depends on the keys seen, not on the counts.
    fn merge(&mut self, other: &Bins, times: u64) {
        for (i, &c) in other.counts.iter().enumerate() {
            if c > 0 {
                self.add(other.offset + i as i32, c.saturating_mul(times));
            }
        }
    }
}

/// The logarithmic histogram used once a bucket has too many distinct values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Sketch {
    negative: Bins,
    zero: u64,
    positive: Bins,
}

impl Sketch {
    fn add(&mut self, value: f64, n: u64) {
        if value > 0.0 {
            self.positive.add(Bins::key(value), n);
        } else if value < 0.0 {
            self.negative.add(Bins::key(-value), n);
        } else {
            self.zero += n;
        }
    }

    /// The value at 1-based `rank`, ascending.
    fn at_rank(&self, rank: u64) -> f64 {
        let mut seen = 0u64;
        for (i, &c) in self.negative.counts.iter().enumerate().rev() {
            seen += c;
            if seen >= rank {
                return -Bins::value(self.negative.offset + i as i32);
            }
        }
        seen += self.zero;
        if seen >= rank {
            return 0.0;
        }
        for (i, &c) in self.positive.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Bins::value(self.positive.offset + i as i32);
            }
        }
        // Unreachable while counts add up; the caller clamps to the maximum anyway.
        f64::INFINITY
    }
}

/// The distribution of a bucket's values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Values {
    /// Distinct values, ascending, with their counts.
    Exact(Vec<(f64, u64)>),
    Sketch(Sketch),
}

impl Values {
    fn add(&mut self, value: f64, n: u64) {
        match self {
            Values::Exact(pairs) => {
                match pairs.binary_search_by(|(v, _)| v.total_cmp(&value)) {
                    Ok(i) => pairs[i].1 += n,
                    Err(i) => pairs.insert(i, (value, n)),
                }
                if pairs.len() > EXACT_DISTINCT_VALUES_MAX {
                    self.make_sketch();
                }
            }
            Values::Sketch(sketch) => sketch.add(value, n),
        }
    }

    fn make_sketch(&mut self) {
        if let Values::Exact(pairs) = self {
            let mut sketch = Sketch::default();
            for &(v, n) in pairs.iter() {
                sketch.add(v, n);
            }
            *self = Values::Sketch(sketch);
        }
    }

    /// Adds `other`'s values `times` over, as merging it `times` times would: whether and where
    /// the distribution turns into a histogram depends on the distinct values, not their counts.
    fn merge(&mut self, other: &Values, times: u64) {
        match (&mut *self, other) {
            (Values::Exact(_), Values::Exact(theirs)) => {
                for &(v, n) in theirs {
                    self.add(v, n.saturating_mul(times));
                }
            }
            (Values::Sketch(mine), Values::Exact(theirs)) => {
                for &(v, n) in theirs {
                    mine.add(v, n.saturating_mul(times));
                }
            }
            (_, Values::Sketch(theirs)) => {
                self.make_sketch();
                if let Values::Sketch(mine) = self {
                    mine.negative.merge(&theirs.negative, times);
                    mine.zero = mine.zero.saturating_add(theirs.zero.saturating_mul(times));
                    mine.positive.merge(&theirs.positive, times);
                }
            }
        }
    }

    fn at_rank(&self, rank: u64) -> f64 {
        match self {
            Values::Exact(pairs) => {
                let mut seen = 0u64;
                for &(v, n) in pairs {
                    seen += n;
                    if seen >= rank {
                        return v;
                    }
                }
                pairs.last().map_or(f64::NAN, |&(v, _)| v)
            }
            Values::Sketch(sketch) => sketch.at_rank(rank),
        }
    }
}

/// The samples of one bucket or period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Aggregate {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    values: Values,
}

impl Aggregate {
    pub(crate) fn new(value: f64, n: u64) -> Aggregate {
        Aggregate {
            count: n,
            sum: value * n as f64,
            min: value,
            max: value,
            values: Values::Exact(vec![(value, n)]),
        }
    }

    pub(crate) fn add(&mut self, value: f64, n: u64) {
        self.count = self.count.saturating_add(n);
        self.sum += value * n as f64;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.values.add(value, n);
    }

    /// Merges `other` `times` over, with exactly the result of merging it `times` times one after
    /// the other (what a run of identical buckets stands for).
    pub(crate) fn merge(&mut self, other: &Aggregate, times: u64) {
        self.count = self.count.saturating_add(other.count.saturating_mul(times));
        if other.sum == 0.0 {
            // Adding a zero again never changes the sum (x + 0 is x once x is not -0.0).
            if times > 0 {
                self.sum += other.sum;
            }
        } else {
            // Floating-point addition is not multiplication: add as often as the buckets were.
            for _ in 0..times {
                self.sum += other.sum;
            }
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.values.merge(&other.values, times);
    }

    /// Bit for bit the same samples: what lets two neighbouring buckets be kept as one run.
    fn is_identical(&self, other: &Aggregate) -> bool {
        let same_bits = |a: f64, b: f64| a.to_bits() == b.to_bits();
        let same_values = match (&self.values, &other.values) {
            (Values::Exact(a), Values::Exact(b)) => {
                a.len() == b.len()
                    && a.iter().zip(b).all(|(x, y)| same_bits(x.0, y.0) && x.1 == y.1)
            }
            // Histograms hold integers only.
            (Values::Sketch(a), Values::Sketch(b)) => a == b,
            _ => false,
        };
        self.count == other.count
            && same_bits(self.sum, other.sum)
            && same_bits(self.min, other.min)
            && same_bits(self.max, other.max)
            && same_values
    }
}

/// Every statistic of one period that holds at least one sample.
#[derive(Clone, Debug, PartialEq)]
pub struct PeriodStats {
    pub start: Timestamp,
    pub period: Period,
    agg: Aggregate,
}

impl PeriodStats {
    /// For the in-crate reference of one bucket per resolution.
    #[cfg(test)]
    pub(crate) fn from_aggregate(start: Timestamp, period: Period, agg: Aggregate) -> PeriodStats {
        PeriodStats { start, period, agg }
    }
}

impl PeriodStats {
    pub fn sample_count(&self) -> u64 {
        self.agg.count
    }

    pub fn sum(&self) -> f64 {
        self.agg.sum
    }

    pub fn average(&self) -> f64 {
        self.agg.sum / self.agg.count as f64
    }

    pub fn minimum(&self) -> f64 {
        self.agg.min
    }

    pub fn maximum(&self) -> f64 {
        self.agg.max
    }

    /// Nearest rank; exact while the period holds at most [`EXACT_DISTINCT_VALUES_MAX`] distinct
    /// values ([`PeriodStats::percentiles_are_exact`]).
    pub fn percentile(&self, p: Percentile) -> f64 {
        // Rank 1 is the minimum and rank n the maximum, both known exactly.
        let rank = p.rank(self.agg.count);
        if rank <= 1 {
            return self.agg.min;
        }
        if rank >= self.agg.count {
            return self.agg.max;
        }
        self.agg.values.at_rank(rank).clamp(self.agg.min, self.agg.max)
    }

    /// The period's samples as distinct values with their counts, ascending: exactly while
    /// [`PeriodStats::percentiles_are_exact`], else the histogram's bins at their values (within
    /// [`SKETCH_RELATIVE_ERROR`]). What a rank test compares two versions by.
    pub fn distribution(&self) -> Vec<(f64, u64)> {
        match &self.agg.values {
            Values::Exact(pairs) => pairs.clone(),
            Values::Sketch(sketch) => {
                let bins = |bins: &Bins, sign: f64| {
                    bins.counts
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| **c > 0)
                        .map(|(i, &c)| (sign * Bins::value(bins.offset + i as i32), c))
                        .collect::<Vec<_>>()
                };
                let mut out: Vec<(f64, u64)> =
                    bins(&sketch.negative, -1.0).into_iter().rev().collect();
                if sketch.zero > 0 {
                    out.push((0.0, sketch.zero));
                }
                out.extend(bins(&sketch.positive, 1.0));
                out
            }
        }
    }

    pub fn percentiles_are_exact(&self) -> bool {
        matches!(self.agg.values, Values::Exact(_))
    }

    pub fn value(&self, statistic: Statistic) -> f64 {
        match statistic {
            Statistic::SampleCount => self.agg.count as f64,
            Statistic::Sum => self.sum(),
            Statistic::Average => self.average(),
            Statistic::Minimum => self.minimum(),
            Statistic::Maximum => self.maximum(),
            Statistic::Percentile(p) => self.percentile(p),
        }
    }

    /// True when `statistic` is a percentile and the period has fewer samples than
    /// [`Percentile::low_sample_threshold`].
    pub fn is_low_sample(&self, statistic: Statistic) -> bool {
        statistic
            .percentile()
            .and_then(Percentile::low_sample_threshold)
            .is_some_and(|min| self.agg.count < min)
    }

    pub fn datapoint(&self, statistic: Statistic) -> Datapoint {
        Datapoint { start: self.start, value: self.value(statistic), sample_count: self.agg.count }
    }
}

/// How finely a series keeps its samples and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SeriesConfigWire", into = "SeriesConfigWire")]
pub struct SeriesConfig {
    resolution: Period,
    retention: Duration,
}

#[derive(Serialize, Deserialize)]
struct SeriesConfigWire {
    resolution_secs: u32,
    retention_secs: u64,
}

impl TryFrom<SeriesConfigWire> for SeriesConfig {
    type Error = SeriesConfigError;
    fn try_from(wire: SeriesConfigWire) -> Result<SeriesConfig, SeriesConfigError> {
        SeriesConfig::new(
            Period::from_secs(wire.resolution_secs)?,
            Duration::from_secs(wire.retention_secs),
        )
    }
}

impl From<SeriesConfig> for SeriesConfigWire {
    fn from(config: SeriesConfig) -> SeriesConfigWire {
        SeriesConfigWire {
            resolution_secs: config.resolution.secs(),
            retention_secs: config.retention.as_secs(),
        }
    }
}

impl Default for SeriesConfig {
    /// 1 s buckets kept for 3 hours (CloudWatch keeps 1 s data for 3 hours too).
    fn default() -> SeriesConfig {
        SeriesConfig { resolution: Period::ONE_SECOND, retention: Duration::from_secs(3 * 3600) }
    }
}

/// Why a resolution and a retention do not make a series configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SeriesConfigError {
    #[error(transparent)]
    Period(#[from] PeriodOutOfRange),
    #[error(
        "retention {retention} must be a whole number of seconds and at least the resolution ({resolution})"
    )]
    Retention { retention: String, resolution: Period },
    #[error(
        "retention {retention} at resolution {resolution} keeps {buckets} buckets per series; at most {BUCKETS_MAX} are allowed: shorten the retention or coarsen the resolution"
    )]
    TooManyBuckets { retention: String, resolution: Period, buckets: u64 },
}

impl SeriesConfig {
    /// `retention` must be a whole number of seconds, at least one `resolution`, and at most
    /// [`BUCKETS_MAX`] resolutions.
    pub fn new(resolution: Period, retention: Duration) -> Result<SeriesConfig, SeriesConfigError> {
        let shown = model::format_duration(retention);
        if retention.subsec_nanos() != 0 || retention < resolution.as_duration() {
            return Err(SeriesConfigError::Retention { retention: shown, resolution });
        }
        let buckets = retention.as_secs() / u64::from(resolution.secs());
        if buckets > BUCKETS_MAX {
            return Err(SeriesConfigError::TooManyBuckets {
                retention: shown,
                resolution,
                buckets,
            });
        }
        Ok(SeriesConfig { resolution, retention })
    }

    pub fn resolution(&self) -> Period {
        self.resolution
    }

    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// The start of the oldest bucket that can still be retained at `latest`.
    fn horizon(&self, latest: Timestamp) -> Timestamp {
        let res = self.resolution.millis();
        // Whole seconds (`SeriesConfig::new`): no 128-bit division on every sample.
        let cutoff = latest.as_millis().saturating_sub(self.retention.as_secs() * 1000);
        // A bucket is kept while its end is later than the cutoff.
        Timestamp::from_millis(cutoff / res * res)
    }
}

/// A sample that was not recorded.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RecordError {
    #[error("sample value {0} is not a finite number; record only finite values")]
    NotFinite(f64),
    #[error(
        "sample at {at} is older than the series keeps (its oldest bucket may start at \
         {horizon}); record samples within the retention"
    )]
    TooOld { at: Timestamp, horizon: Timestamp },
    #[error(
        "the store already holds {SERIES_MAX} series; prune it or record fewer distinct metrics"
    )]
    TooManySeries,
    #[error("invalid metric: {0}")]
    InvalidMetric(#[from] MetricIdError),
    #[error("the series this handle named was forgotten; record by the metric's id")]
    Forgotten,
}

/// A query with a period the series cannot produce.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "period {period} is not a multiple of the series resolution {resolution}; use a multiple of \
     {resolution}"
)]
pub struct PeriodError {
    pub period: Period,
    pub resolution: Period,
}

/// The samples of one metric, bucketed by `resolution` and bounded by `retention`.
///
/// Neighbouring buckets with identical samples (an idle second: the same count of zeros, or the
/// same gauge reading) are kept once, as a run, so an idle series takes a few runs instead of one
/// bucket per second. Every answer is the one of keeping each bucket on its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SeriesWire", into = "SeriesWire")]
pub struct MetricSeries {
    id: MetricId,
    config: SeriesConfig,
    /// By the bucket index (`time / resolution`) of each run's first bucket. Runs never overlap,
    /// and two neighbouring runs hold different samples once a record is done.
    runs: BTreeMap<u64, Run>,
    /// Buckets the runs cover.
    buckets: u64,
    /// The latest time this series was given.
    latest: Timestamp,
}

/// `len` neighbouring buckets that each hold the samples `agg`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Run {
    len: u64,
    agg: Aggregate,
}

/// A series as stored: `buckets` is the form of the versions that kept one bucket per index (a
/// store they saved still loads); runs are written as `runs`.
#[derive(Serialize, Deserialize)]
struct SeriesWire {
    id: MetricId,
    config: SeriesConfig,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    buckets: BTreeMap<u64, Aggregate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    runs: Vec<RunWire>,
    latest: Timestamp,
}

#[derive(Serialize, Deserialize)]
struct RunWire {
    start: u64,
    len: u64,
    agg: Aggregate,
}

/// A stored series whose runs cannot be a series' buckets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "series {id}: the run of {len} buckets from index {start} is empty or overlaps another; \
     store series as this version writes them"
)]
pub struct SeriesWireError {
    id: String,
    start: u64,
    len: u64,
}

impl TryFrom<SeriesWire> for MetricSeries {
    type Error = SeriesWireError;
    fn try_from(wire: SeriesWire) -> Result<MetricSeries, SeriesWireError> {
        let mut series = MetricSeries::new(wire.id, wire.config);
        series.latest = wire.latest;
        let runs = wire.buckets.into_iter().map(|(start, agg)| RunWire { start, len: 1, agg });
        for run in runs.chain(wire.runs) {
            let overlaps = series.run_at(run.start).is_some()
                || series.runs.range(run.start..).next().is_some_and(|(&next, _)| {
                    run.start.checked_add(run.len).is_none_or(|end| next < end)
                });
            if run.len == 0 || overlaps {
                let id = series.id.to_string();
                return Err(SeriesWireError { id, start: run.start, len: run.len });
            }
            series.buckets += run.len;
            series.runs.insert(run.start, Run { len: run.len, agg: run.agg });
            // Old stores hold one bucket per index: join the identical ones.
            series.coalesce_around(run.start);
        }
        Ok(series)
    }
}

impl From<MetricSeries> for SeriesWire {
    fn from(series: MetricSeries) -> SeriesWire {
        let runs = series
            .runs
            .into_iter()
            .map(|(start, run)| RunWire { start, len: run.len, agg: run.agg })
            .collect();
        SeriesWire {
            id: series.id,
            config: series.config,
            buckets: BTreeMap::new(),
            runs,
            latest: series.latest,
        }
    }
}

impl MetricSeries {
    pub fn new(id: MetricId, config: SeriesConfig) -> MetricSeries {
        MetricSeries { id, config, runs: BTreeMap::new(), buckets: 0, latest: Timestamp::ZERO }
    }

    pub fn id(&self) -> &MetricId {
        &self.id
    }

    pub fn config(&self) -> SeriesConfig {
        self.config
    }

    /// Buckets retained (with samples).
    pub fn len(&self) -> usize {
        self.buckets as usize
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Runs of identical buckets kept: what the series' memory grows with.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// One sample at `at`: a gauge reading, a latency, or a per-interval count.
    pub fn record(&mut self, at: Timestamp, value: f64) -> Result<(), RecordError> {
        self.record_n(at, value, 1)
    }

    /// `count` samples of the same value at `at` (CloudWatch's `Values`/`Counts`), e.g. one bucket
    /// of a histogram. A zero count records nothing.
    pub fn record_n(&mut self, at: Timestamp, value: f64, count: u64) -> Result<(), RecordError> {
        if !value.is_finite() {
            return Err(RecordError::NotFinite(value));
        }
        let horizon = self.horizon(self.latest.max(at));
        if at < horizon {
            return Err(RecordError::TooOld { at, horizon });
        }
        self.prune(at);
        if count == 0 {
            return Ok(());
        }
        // -0.0 and 0.0 are one value.
        let value = if value == 0.0 { 0.0 } else { value };
        let index = self.config.resolution.index_of(at);
        // Nearly every sample goes to the newest second: found at the last run, with nothing after
        // it to join.
        if let Some(mut last) = self.runs.last_entry() {
            let (start, run) = (*last.key(), last.get_mut());
            if index >= start + run.len {
                self.runs.insert(index, Run { len: 1, agg: Aggregate::new(value, count) });
                self.buckets += 1;
                self.join_previous(index);
                return Ok(());
            }
            if index == start && run.len == 1 {
                run.agg.add(value, count);
                self.join_previous(index);
                return Ok(());
            }
        }
        match self.run_at(index) {
            Some(start) => {
                self.split_off(start, index);
                let run = self.runs.get_mut(&index).expect("invariant: split off above");
                run.agg.add(value, count);
            }
            None => {
                self.runs.insert(index, Run { len: 1, agg: Aggregate::new(value, count) });
                self.buckets += 1;
            }
        }
        self.coalesce_around(index);
        Ok(())
    }

    /// The start of the run that covers bucket `index`, if one does.
    fn run_at(&self, index: u64) -> Option<u64> {
        let (&start, run) = self.runs.range(..=index).next_back()?;
        (index - start < run.len).then_some(start)
    }

    /// Makes bucket `index` of the run starting at `start` a run of its own.
    fn split_off(&mut self, start: u64, index: u64) {
        let run = self.runs.get_mut(&start).expect("invariant: the run covering index");
        if run.len == 1 {
            return;
        }
        let (len, agg) = (run.len, run.agg.clone());
        let before = index - start;
        let after = len - before - 1;
        if before > 0 {
            run.len = before;
        } else {
            self.runs.remove(&start);
        }
        self.runs.insert(index, Run { len: 1, agg: agg.clone() });
        if after > 0 {
            self.runs.insert(index + 1, Run { len: after, agg });
        }
    }

    /// Joins the run starting at `start` to the run before it if that one ends where it starts
    /// and holds identical samples; returns where the joined run starts.
    fn join_previous(&mut self, start: u64) -> u64 {
        let mut runs = self.runs.range(..=start);
        let (Some((_, mine)), Some((&before, run))) = (runs.next_back(), runs.next_back()) else {
            return start;
        };
        if before + run.len != start || !run.agg.is_identical(&mine.agg) {
            return start;
        }
        let len = self.runs.remove(&start).expect("invariant: present").len;
        self.runs.get_mut(&before).expect("invariant: present").len += len;
        before
    }

    /// Joins the run starting at `start` with its neighbours where they touch it and hold
    /// identical samples.
    fn coalesce_around(&mut self, start: u64) {
        let start = self.join_previous(start);
        let run = &self.runs[&start];
        let next = start + run.len;
        if self.runs.get(&next).is_some_and(|after| after.agg.is_identical(&run.agg)) {
            let len = self.runs.remove(&next).expect("invariant: present").len;
            self.runs.get_mut(&start).expect("invariant: present").len += len;
        }
    }

    /// Forgets the buckets that ended at or before `now − retention`. Recording prunes too; call
    /// this for series that stopped receiving samples.
    pub fn prune(&mut self, now: Timestamp) {
        self.latest = self.latest.max(now);
        let horizon = self.horizon(self.latest);
        let first_kept = self.config.resolution.index_of(horizon);
        while let Some(entry) = self.runs.first_entry() {
            let start = *entry.key();
            if start >= first_kept {
                break;
            }
            let run = entry.remove();
            let end = start + run.len;
            if end > first_kept {
                // The run's front aged out; its newer buckets stay.
                self.buckets -= first_kept - start;
                self.runs.insert(first_kept, Run { len: end - first_kept, agg: run.agg });
                break;
            }
            self.buckets -= run.len;
        }
    }

    fn horizon(&self, latest: Timestamp) -> Timestamp {
        self.config.horizon(latest)
    }

    /// The statistics of every period of length `period` that starts in `[from, to)` (`from`
    /// rounded down to the period) and holds at least one sample, oldest first. Periods without
    /// samples are absent, as in CloudWatch.
    pub fn stats(
        &self,
        period: Period,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<PeriodStats>, PeriodError> {
        let res = self.config.resolution;
        if !period.secs().is_multiple_of(res.secs()) {
            return Err(PeriodError { period, resolution: res });
        }
        let per = u64::from(period.secs() / res.secs());
        let first = period.index_of(from) * per;
        let end = to.as_millis().div_ceil(period.millis()) * per;
        if first >= end {
            return Ok(Vec::new());
        }
        // The run covering `first` starts before it.
        let earlier = self.run_at(first).filter(|&start| start < first);
        let runs = earlier.into_iter().chain(self.runs.range(first..end).map(|(&start, _)| start));
        let mut out: Vec<PeriodStats> = Vec::new();
        for start in runs {
            let run = &self.runs[&start];
            let (mut index, run_end) = (start.max(first), (start + run.len).min(end));
            // Each period the run overlaps merges its share of the run's buckets at once.
            while index < run_end {
                let period_index = index / per;
                let share_end = ((period_index + 1) * per).min(run_end);
                let times = share_end - index;
                let start = period.start_of(period_index);
                match out.last_mut() {
                    Some(last) if last.start == start => last.agg.merge(&run.agg, times),
                    _ => {
                        let mut agg = run.agg.clone();
                        if times > 1 {
                            agg.merge(&run.agg, times - 1);
                        }
                        out.push(PeriodStats { start, period, agg });
                    }
                }
                index = share_end;
            }
        }
        Ok(out)
    }

    /// One statistic of every period with samples in `[from, to)`, oldest first.
    pub fn datapoints(
        &self,
        period: Period,
        statistic: Statistic,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Datapoint>, PeriodError> {
        Ok(self.stats(period, from, to)?.iter().map(|s| s.datapoint(statistic)).collect())
    }
}

/// All the series of one control plane, by metric id, with one configuration.
///
/// A series can also be named by a [`SeriesHandle`], which [`MetricStore::record_n_into`] records
/// into without looking its id up: what a caller that records the same metrics many times a second
/// (the control plane's samples of the data plane) keeps.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "StoreWire", into = "StoreWire")]
pub struct MetricStore {
    config: SeriesConfig,
    /// Where each series is in `slots`.
    index: BTreeMap<MetricId, u32>,
    slots: Vec<Slot>,
    /// Slots whose series was forgotten, to be reused.
    free: Vec<u32>,
    /// How many series were forgotten.
    forgotten: u64,
    /// The latest time the store was pruned at. Every series' own latest time has the same
    /// horizon as this one or a later one (a new series is pruned at it when created), so
    /// pruning again at a time of the same horizon would forget nothing and refuse no sample that
    /// is not refused anyway.
    pruned_at: Timestamp,
}

/// One place for a series. Its generation counts the series it has held, so that a handle to a
/// forgotten series never reaches the one that took its place.
#[derive(Clone, Debug)]
struct Slot {
    generation: u32,
    series: Option<MetricSeries>,
}

/// A series of a [`MetricStore`], as [`MetricStore::handle`] names it. It stays valid while the
/// series exists: once the series is forgotten (pruned empty, or removed), recording through the
/// handle fails with [`RecordError::Forgotten`], even if a series of the same id was created
/// since.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeriesHandle {
    slot: u32,
    generation: u32,
}

/// JSON maps need string keys; the series carry their ids.
#[derive(Serialize, Deserialize)]
struct StoreWire {
    config: SeriesConfig,
    series: Vec<MetricSeries>,
}

impl From<StoreWire> for MetricStore {
    fn from(wire: StoreWire) -> MetricStore {
        let mut store = MetricStore::new(wire.config);
        for mut series in wire.series.into_iter().take(SERIES_MAX) {
            series.config = wire.config;
            store.remove(&series.id);
            store.insert(series);
        }
        store
    }
}

impl From<MetricStore> for StoreWire {
    fn from(mut store: MetricStore) -> StoreWire {
        let series = store
            .index
            .values()
            .filter_map(|&slot| store.slots[slot as usize].series.take())
            .collect();
        StoreWire { config: store.config, series }
    }
}

impl PartialEq for MetricStore {
    /// The same configuration and the same series: where they are kept does not matter.
    fn eq(&self, other: &MetricStore) -> bool {
        self.config == other.config
            && self.index.len() == other.index.len()
            && self.all_series().eq(other.all_series())
    }
}

impl Default for MetricStore {
    fn default() -> MetricStore {
        MetricStore::new(SeriesConfig::default())
    }
}

impl MetricStore {
    pub fn new(config: SeriesConfig) -> MetricStore {
        MetricStore {
            config,
            index: BTreeMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            forgotten: 0,
            pruned_at: Timestamp::ZERO,
        }
    }

    pub fn config(&self) -> SeriesConfig {
        self.config
    }

    pub fn record(&mut self, id: &MetricId, at: Timestamp, value: f64) -> Result<(), RecordError> {
        self.record_n(id, at, value, 1)
    }

    /// Creates the series on its first sample; the id is validated then.
    pub fn record_n(
        &mut self,
        id: &MetricId,
        at: Timestamp,
        value: f64,
        count: u64,
    ) -> Result<(), RecordError> {
        if let Some(&slot) = self.index.get(id) {
            let series = self.slots[slot as usize]
                .series
                .as_mut()
                .expect("invariant: an indexed slot holds its series");
            return series.record_n(at, value, count);
        }
        id.validate().map_err(RecordError::InvalidMetric)?;
        if self.index.len() >= SERIES_MAX {
            return Err(RecordError::TooManySeries);
        }
        let mut series = MetricSeries::new(id.clone(), self.config);
        // As though it had been there when the store was last pruned (see `pruned_at`).
        series.prune(self.pruned_at);
        series.record_n(at, value, count)?;
        // No sample (a zero count) makes no series.
        if !series.is_empty() {
            self.insert(series);
        }
        Ok(())
    }

    /// The handle of the series of `id`, if the store holds one.
    pub fn handle(&self, id: &MetricId) -> Option<SeriesHandle> {
        let &slot = self.index.get(id)?;
        Some(SeriesHandle { slot, generation: self.slots[slot as usize].generation })
    }

    /// [`MetricStore::record_n`] into the series `handle` names, found without its id.
    pub fn record_n_into(
        &mut self,
        handle: SeriesHandle,
        at: Timestamp,
        value: f64,
        count: u64,
    ) -> Result<(), RecordError> {
        let series = self
            .slots
            .get_mut(handle.slot as usize)
            .filter(|slot| slot.generation == handle.generation)
            .and_then(|slot| slot.series.as_mut())
            .ok_or(RecordError::Forgotten)?;
        series.record_n(at, value, count)
    }

    pub fn series(&self, id: &MetricId) -> Option<&MetricSeries> {
        let &slot = self.index.get(id)?;
        self.slots[slot as usize].series.as_ref()
    }

    pub fn ids(&self) -> impl Iterator<Item = &MetricId> {
        self.index.keys()
    }

    /// Series held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// How many series this store has forgotten (pruned empty or removed): only a series
    /// forgotten makes room for a new one once the store holds [`SERIES_MAX`], so a caller that
    /// was refused a series needs to try again only once this count changed.
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// Every series, by id.
    fn all_series(&self) -> impl Iterator<Item = &MetricSeries> {
        self.index.values().filter_map(|&slot| self.slots[slot as usize].series.as_ref())
    }

    /// Prunes every series and forgets those left empty. Only a new horizon (the start of the
    /// oldest bucket a series may keep) can forget a bucket, so a time of the horizon the store
    /// was last pruned at costs nothing: called at every sample, the store walks its series once
    /// a resolution.
    pub fn prune(&mut self, now: Timestamp) {
        let before = self.pruned_at;
        self.pruned_at = before.max(now);
        if self.config.horizon(self.pruned_at) == self.config.horizon(before) {
            return;
        }
        let pruned_at = self.pruned_at;
        let mut emptied = Vec::new();
        for slot in &mut self.slots {
            let Some(series) = slot.series.as_mut() else { continue };
            series.prune(pruned_at);
            if series.is_empty() {
                emptied.push(series.id.clone());
            }
        }
        for id in emptied {
            self.remove(&id);
        }
    }

    /// Forgets one series (e.g. when its target group is deleted).
    pub fn remove(&mut self, id: &MetricId) -> Option<MetricSeries> {
        let slot = self.index.remove(id)?;
        let place = &mut self.slots[slot as usize];
        place.generation = place.generation.wrapping_add(1);
        self.free.push(slot);
        self.forgotten += 1;
        place.series.take()
    }

    fn insert(&mut self, series: MetricSeries) {
        let id = series.id.clone();
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize].series = Some(series);
                slot
            }
            None => {
                self.slots.push(Slot { generation: 0, series: Some(series) });
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(id, slot);
    }
}

impl fmt::Display for PeriodStats {
    /// `12:00:01 n=3 sum=12.0 min=1.0 max=7.0`, for debugging and test traces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} n={} sum={:?} min={:?} max={:?}",
            crate::alarm::clock(self.start),
            self.agg.count,
            self.agg.sum,
            self.agg.min,
            self.agg.max
        )
    }
}
