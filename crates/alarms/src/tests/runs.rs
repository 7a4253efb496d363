//! A series keeps neighbouring identical buckets as one run; every answer is the one of keeping
//! one bucket per resolution, which the reference here does as the series did before runs.

use std::collections::BTreeMap;
use std::time::Duration;

use model::Timestamp;

use super::{Rng, at};
use crate::series::{Aggregate, EXACT_DISTINCT_VALUES_MAX};
use crate::{MetricId, MetricSeries, Percentile, Period, PeriodStats, RecordError, SeriesConfig};

/// One bucket per resolution, each merged on its own: the series before runs.
struct PerBucket {
    config: SeriesConfig,
    buckets: BTreeMap<u64, Aggregate>,
    latest: Timestamp,
}

impl PerBucket {
    fn new(config: SeriesConfig) -> PerBucket {
        PerBucket { config, buckets: BTreeMap::new(), latest: Timestamp::ZERO }
    }

    fn first_kept(&self, latest: Timestamp) -> u64 {
        let res = self.config.resolution().millis();
        let cutoff = latest.as_millis().saturating_sub(self.config.retention().as_millis() as u64);
        cutoff / res
    }

    fn record_n(&mut self, at: Timestamp, value: f64, n: u64) -> Result<(), RecordError> {
        if !value.is_finite() {
            return Err(RecordError::NotFinite(value));
        }
        let first_kept = self.first_kept(self.latest.max(at));
        let horizon = self.config.resolution().start_of(first_kept);
        if at < horizon {
            return Err(RecordError::TooOld { at, horizon });
        }
        self.prune(at);
        if n == 0 {
            return Ok(());
        }
        let value = if value == 0.0 { 0.0 } else { value };
        let index = self.config.resolution().index_of(at);
        match self.buckets.get_mut(&index) {
            Some(agg) => agg.add(value, n),
            None => {
                self.buckets.insert(index, Aggregate::new(value, n));
            }
        }
        Ok(())
    }

    fn prune(&mut self, now: Timestamp) {
        self.latest = self.latest.max(now);
        let first_kept = self.first_kept(self.latest);
        self.buckets.retain(|&index, _| index >= first_kept);
    }

    fn stats(&self, period: Period, from: Timestamp, to: Timestamp) -> Vec<PeriodStats> {
        let per = u64::from(period.secs() / self.config.resolution().secs());
        let first = period.index_of(from) * per;
        let end = to.as_millis().div_ceil(period.millis()) * per;
        let mut out: Vec<(Timestamp, Aggregate)> = Vec::new();
        for (&index, agg) in self.buckets.range(first..end.max(first)) {
            let start = period.start_of(index / per);
            match out.last_mut() {
                Some((last, merged)) if *last == start => merged.merge(agg, 1),
                _ => out.push((start, agg.clone())),
            }
        }
        out.into_iter()
            .map(|(start, agg)| PeriodStats::from_aggregate(start, period, agg))
            .collect()
    }
}

/// Every statistic of every period, bit for bit (`{:?}` prints each float exactly, -0.0 too).
fn assert_same_stats(got: &[PeriodStats], want: &[PeriodStats], rng: &mut Rng, context: &str) {
    assert_eq!(format!("{got:?}"), format!("{want:?}"), "{context}");
    for (g, w) in got.iter().zip(want) {
        for _ in 0..4 {
            let p = Percentile::from_hundredths(rng.below(10_001) as u16).unwrap();
            assert_eq!(g.percentile(p).to_bits(), w.percentile(p).to_bits(), "{context}: {p:?}");
        }
        assert_eq!(g.average().to_bits(), w.average().to_bits(), "{context}");
        assert_eq!(g.distribution(), w.distribution(), "{context}");
    }
}

/// A sample as the control plane's poll gives them: in stretches of idle seconds (zeros, or the
/// same gauge reading), of traffic, or of bursts of many distinct values (a histogram bucket).
fn sample(rng: &mut Rng, stretch: u64, gauge: f64) -> (f64, u64) {
    match (stretch, rng.below(10)) {
        (0, _) => (0.0, 1),
        (1, _) => (gauge, 1),
        (2, 0..=6) => (0.0, 1),
        (2, 7 | 8) => ([0.25, 1.0, -3.0, 0.1][rng.below(4) as usize], 1 + rng.below(3)),
        (2, _) => (-0.0, rng.below(2)),
        // Beyond the exact limit within a few records: the bucket becomes a histogram.
        _ => ((rng.below(4 * EXACT_DISTINCT_VALUES_MAX as u64) as f64 - 100.0) * 0.37, 1),
    }
}

fn replay(config: SeriesConfig, seed: u64, steps: usize) {
    let mut series = MetricSeries::new(MetricId::new("TargetResponseTime"), config);
    let mut reference = PerBucket::new(config);
    let mut rng = Rng(seed);
    let res = u64::from(config.resolution().secs());
    let retention = config.retention().as_millis() as u64;
    let mut now_ms = 0u64;
    let mut fewest_runs_per_bucket = 1.0f64;
    let (mut stretch, mut gauge) = (0, 0.1);
    for step in 0..steps {
        // Polls a quarter of a second apart, idle stretches, stalls that age buckets out.
        now_ms += match rng.below(400) {
            0 => retention / 2 + rng.below(retention),
            1 => 0,
            _ => 250,
        };
        if rng.below(150) == 0 {
            stretch = [0, 0, 1, 2, 3][rng.below(5) as usize];
            // Sums of these are not their multiples in floating point.
            gauge = [0.1, 0.3, 0.7, 1.1, 2.0][rng.below(5) as usize];
        }
        let records = if stretch >= 2 && rng.below(3) == 0 { 1 + rng.below(4) } else { 1 };
        for _ in 0..records {
            // Late samples: inside the retention, at its edge and beyond it.
            let back = match rng.below(40) {
                0 => rng.below(retention / 2),
                1 => retention - 1000 * res + rng.below(2000 * res),
                _ => 0,
            };
            let when = at(now_ms.saturating_sub(back) as f64 / 1000.0);
            let (value, n) = sample(&mut rng, stretch, gauge);
            let context = format!("step {step}: record {value} x{n} at {when:?}");
            assert_eq!(
                series.record_n(when, value, n),
                reference.record_n(when, value, n),
                "{context}"
            );
        }
        if rng.below(20) == 0 {
            let now = at((now_ms + rng.below(3000)) as f64 / 1000.0);
            series.prune(now);
            reference.prune(now);
        }
        assert_eq!(series.len(), reference.buckets.len(), "step {step}");
        assert!(series.runs() <= series.len(), "step {step}");
        fewest_runs_per_bucket =
            fewest_runs_per_bucket.min(series.runs() as f64 / series.len().max(1) as f64);
        let multiple = [1, 1, 2, 5, 60][rng.below(5) as usize];
        let period = Period::from_secs(config.resolution().secs() * multiple).unwrap();
        let span = retention + 20_000;
        let from = at((now_ms + 10_000).saturating_sub(rng.below(span)) as f64 / 1000.0);
        let to = at((from.as_millis() - at(0.0).as_millis() + rng.below(span)) as f64 / 1000.0);
        let context = format!("step {step}: stats {period} from {from:?} to {to:?}");
        let got = series.stats(period, from, to).unwrap();
        assert_same_stats(&got, &reference.stats(period, from, to), &mut rng, &context);
    }
    // The idle stretches were kept as runs, not bucket by bucket.
    assert!(fewest_runs_per_bucket < 0.5, "{fewest_runs_per_bucket}");
}

#[test]
fn runs_of_identical_buckets_answer_every_statistic_exactly_as_one_bucket_per_resolution() {
    let one_second = SeriesConfig::new(Period::ONE_SECOND, Duration::from_secs(120)).unwrap();
    let two_seconds =
        SeriesConfig::new(Period::from_secs(2).unwrap(), Duration::from_secs(60)).unwrap();
    for seed in [0x9e37_79b9_7f4a_7c15, 0x2545_f491_4f6c_dd1d, 7] {
        replay(one_second, seed, 4000);
        replay(two_seconds, seed, 2000);
    }
}

#[test]
fn an_idle_series_keeps_three_hours_of_seconds_as_one_run() {
    let mut series = MetricSeries::new(MetricId::new("RequestCount"), SeriesConfig::default());
    let mut gauge = MetricSeries::new(MetricId::new("HealthyHostCount"), SeriesConfig::default());
    // Four polls a second for four hours: each second holds four zero counts, or four readings.
    for quarter in 0..4 * 4 * 3600 {
        let when = at(f64::from(quarter) * 0.25);
        series.record(when, 0.0).unwrap();
        gauge.record(when, 10.0).unwrap();
    }
    // 3 hours of complete seconds and the one being polled, whose four samples are in.
    assert_eq!((series.len(), series.runs()), (3 * 3600 + 1, 1));
    assert_eq!((gauge.len(), gauge.runs()), (3 * 3600 + 1, 1));
    let hour =
        series.stats(Period::from_secs(3600).unwrap(), at(3600.0), at(4.0 * 3600.0)).unwrap();
    let counts: Vec<(u64, f64)> = hour.iter().map(|p| (p.sample_count(), p.sum())).collect();
    assert_eq!(counts, [(4 * 3600, 0.0), (4 * 3600, 0.0), (4 * 3600, 0.0)]);
    // A late sample into an old second splits the run around it.
    series.record(at(3.5 * 3600.0), 1.0).unwrap();
    assert_eq!((series.len(), series.runs()), (3 * 3600 + 1, 3));
}

/// A series as the versions before runs stored it: one bucket per index.
const ONE_BUCKET_PER_INDEX: &str = r#"{"id":{"name":"RequestCount","dimensions":{"target_group":"web"}},
    "config":{"resolution_secs":1,"retention_secs":60},
    "buckets":{
        "1699963200":{"count":1,"sum":0.0,"min":0.0,"max":0.0,"values":{"Exact":[[0.0,1]]}},
        "1699963201":{"count":1,"sum":0.0,"min":0.0,"max":0.0,"values":{"Exact":[[0.0,1]]}},
        "1699963202":{"count":1,"sum":3.0,"min":3.0,"max":3.0,"values":{"Exact":[[3.0,1]]}}},
    "latest":1699963202000}"#;

#[test]
fn a_series_stored_one_bucket_per_index_loads_as_runs_and_stores_as_runs() {
    let config = SeriesConfig::new(Period::ONE_SECOND, Duration::from_secs(60)).unwrap();
    let mut recorded =
        MetricSeries::new(MetricId::new("RequestCount").with("target_group", "web"), config);
    for (second, value) in [(0.0, 0.0), (1.0, 0.0), (2.0, 3.0)] {
        recorded.record(at(second), value).unwrap();
    }
    let loaded: MetricSeries = serde_json::from_str(ONE_BUCKET_PER_INDEX).unwrap();
    assert_eq!(loaded, recorded);
    assert_eq!((loaded.len(), loaded.runs()), (3, 2));
    let stored = serde_json::to_string(&loaded).unwrap();
    assert!(stored.contains(r#""runs":[{"start":1699963200,"len":2,"#), "{stored}");
    assert!(!stored.contains("buckets"), "{stored}");
    assert_eq!(serde_json::from_str::<MetricSeries>(&stored).unwrap(), recorded);
}

#[test]
fn a_stored_series_with_overlapping_runs_is_refused_with_its_id_and_the_run() {
    let overlapping = ONE_BUCKET_PER_INDEX.replace(
        r#""latest""#,
        r#""runs":[{"start":1699963201,"len":5,"agg":{"count":1,"sum":1.0,"min":1.0,"max":1.0,"values":{"Exact":[[1.0,1]]}}}],"latest""#,
    );
    let err = serde_json::from_str::<MetricSeries>(&overlapping).unwrap_err();
    assert_eq!(
        err.to_string(),
        "series RequestCount{target_group=web}: the run of 5 buckets from index 1699963201 is \
         empty or overlaps another; store series as this version writes them"
    );
}
