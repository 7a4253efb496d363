//! Series: every statistic, periods, percentiles (exact and sketched), retention.

use std::time::Duration;

use super::at;
use crate::series::{BUCKETS_MAX, EXACT_DISTINCT_VALUES_MAX};
use crate::{
    MetricId, MetricSeries, MetricStore, Percentile, Period, RecordError, SeriesConfig, Statistic,
};

fn stat(text: &str) -> Statistic {
    text.parse().unwrap()
}

fn series() -> MetricSeries {
    MetricSeries::new(MetricId::new("TargetResponseTime"), SeriesConfig::default())
}

fn secs(n: u32) -> Period {
    Period::from_secs(n).unwrap()
}

/// The only period of `[from, to)` with data, with `period`.
fn one_period(series: &MetricSeries, period: Period, from: f64, to: f64) -> crate::PeriodStats {
    let mut stats = series.stats(period, at(from), at(to)).unwrap();
    assert_eq!(stats.len(), 1, "{stats:?}");
    stats.remove(0)
}

#[test]
fn every_statistic_on_a_synthetic_series() {
    let mut s = series();
    // Period 12:00:00 (1 s) holds 1..=10 out of order; its neighbours must not leak in.
    for (i, v) in [7.0, 3.0, 10.0, 1.0, 5.0, 2.0, 9.0, 4.0, 8.0, 6.0].into_iter().enumerate() {
        s.record(at(i as f64 * 0.09), v).unwrap();
    }
    s.record(at(-0.5), 1000.0).unwrap();
    s.record(at(1.0), -1000.0).unwrap();
    let p = one_period(&s, Period::ONE_SECOND, 0.0, 1.0);
    let table = [
        ("SampleCount", 10.0),
        ("Sum", 55.0),
        ("Average", 5.5),
        ("Minimum", 1.0),
        ("Maximum", 10.0),
        ("p0", 1.0),
        ("p10", 1.0),
        ("p10.01", 2.0),
        ("p50", 5.0),
        ("p50.5", 6.0),
        ("p90", 9.0),
        ("p99", 10.0),
        ("p99.99", 10.0),
        ("p100", 10.0),
    ];
    for (name, want) in table {
        assert_eq!(p.value(stat(name)), want, "{name}");
    }
    assert!(p.percentiles_are_exact());
    assert_eq!(p.start, at(0.0));
    assert_eq!(p.to_string(), "12:00:00 n=10 sum=55.0 min=1.0 max=10.0");
}

#[test]
fn percentiles_are_nearest_rank_without_interpolation() {
    // The textbook nearest-rank example: 15, 20, 35, 40, 50.
    let mut s = series();
    for v in [50.0, 15.0, 40.0, 20.0, 35.0] {
        s.record(at(0.5), v).unwrap();
    }
    let p = one_period(&s, Period::ONE_SECOND, 0.0, 1.0);
    let got: Vec<(String, f64)> = ["p5", "p20", "p30", "p40", "p50", "p75", "p100"]
        .into_iter()
        .map(|name| (name.to_string(), p.value(stat(name))))
        .collect();
    let want = [15.0, 15.0, 20.0, 20.0, 35.0, 40.0, 50.0];
    assert_eq!(got.iter().map(|(_, v)| *v).collect::<Vec<_>>(), want, "{got:?}");
}

#[test]
fn record_n_counts_each_value_like_a_histogram_bucket() {
    let mut s = series();
    s.record_n(at(0.1), 0.005, 90).unwrap();
    s.record_n(at(0.2), 0.5, 9).unwrap();
    s.record_n(at(0.3), 2.5, 1).unwrap();
    s.record_n(at(0.4), 99.0, 0).unwrap();
    let p = one_period(&s, Period::ONE_SECOND, 0.0, 1.0);
    assert_eq!(p.sample_count(), 100);
    assert_eq!(p.value(stat("p90")), 0.005);
    assert_eq!(p.value(stat("p91")), 0.5);
    assert_eq!(p.value(stat("p99")), 0.5);
    assert_eq!(p.value(stat("p99.5")), 2.5);
    assert_eq!(p.maximum(), 2.5, "a zero count records nothing");
    assert!((p.sum() - (0.45 + 4.5 + 2.5)).abs() < 1e-9);
}

#[test]
fn periods_merge_the_buckets_they_cover_aligned_to_the_epoch() {
    let mut s = series();
    // One sample per second for two minutes, value = second number.
    for i in 0..120 {
        s.record(at(f64::from(i)), f64::from(i)).unwrap();
    }
    let tens = s.datapoints(secs(10), Statistic::Sum, at(0.0), at(120.0)).unwrap();
    assert_eq!(tens.len(), 12);
    assert_eq!((tens[0].start, tens[0].value, tens[0].sample_count), (at(0.0), 45.0, 10));
    assert_eq!((tens[11].start, tens[11].value), (at(110.0), 1145.0));
    let minutes = s.datapoints(Period::ONE_MINUTE, Statistic::Maximum, at(30.0), at(61.0)).unwrap();
    let got: Vec<_> = minutes.iter().map(|d| (d.start, d.value, d.sample_count)).collect();
    assert_eq!(
        got,
        [(at(0.0), 59.0, 60), (at(60.0), 119.0, 60)],
        "`from` rounds down to the period"
    );
    // A 7 s period is allowed (cutover allows any whole second) and aligned to the epoch.
    let sevens = s.stats(secs(7), at(0.0), at(14.0)).unwrap();
    assert!(sevens.iter().all(|p| p.start.as_millis() % 7000 == 0), "{sevens:?}");
}

#[test]
fn a_period_that_is_not_a_multiple_of_the_resolution_is_refused() {
    let config = SeriesConfig::new(secs(10), Duration::from_secs(3600)).unwrap();
    let s = MetricSeries::new(MetricId::new("m"), config);
    let err = s.stats(secs(15), at(0.0), at(60.0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "period 15s is not a multiple of the series resolution 10s; use a multiple of 10s"
    );
    assert!(s.stats(secs(30), at(0.0), at(60.0)).is_ok());
}

#[test]
fn percentiles_stay_within_two_percent_beyond_the_exact_limit() {
    let mut s = series();
    for i in 1..=10_000u32 {
        s.record(at(0.5), f64::from(i) / 1000.0).unwrap();
    }
    let p = one_period(&s, Period::ONE_SECOND, 0.0, 1.0);
    assert!(!p.percentiles_are_exact());
    for (name, exact) in [("p1", 0.1), ("p50", 5.0), ("p90", 9.0), ("p99", 9.9), ("p99.9", 9.99)] {
        let got = p.value(stat(name));
        assert!((got - exact).abs() / exact <= 0.02, "{name}: {got} vs {exact}");
    }
    assert_eq!((p.minimum(), p.maximum(), p.sample_count()), (0.001, 10.0, 10_000));
    assert_eq!((p.value(stat("p0")), p.value(stat("p100"))), (0.001, 10.0), "ends stay exact");
    assert!((p.average() - 5.0005).abs() < 1e-9);
}

#[test]
fn exactness_holds_up_to_the_distinct_value_limit_across_buckets() {
    let mut s = series();
    // 128 distinct values spread over 4 seconds: exact per bucket and merged.
    for i in 0..EXACT_DISTINCT_VALUES_MAX {
        s.record(at((i % 4) as f64), i as f64).unwrap();
    }
    let p = one_period(&s, secs(4), 0.0, 4.0);
    assert!(p.percentiles_are_exact());
    assert_eq!(p.value(stat("p50")), 63.0);
    // One more distinct value tips the merged period over into the sketch, within 2 %.
    s.record(at(0.0), 1000.0).unwrap();
    let p = one_period(&s, secs(4), 0.0, 4.0);
    assert!(!p.percentiles_are_exact());
    assert!((p.value(stat("p50")) - 64.0).abs() <= 64.0 * 0.02, "{}", p.value(stat("p50")));
}

#[test]
fn sketches_handle_zero_negative_and_widely_spread_values_in_bounded_space() {
    let mut s = series();
    let mut values = Vec::new();
    for i in 0..400 {
        // From -1e6 to +1e6 over twelve decades, and zeros.
        let magnitude = 10f64.powf(f64::from(i % 13) - 6.0) * (1.0 + f64::from(i) / 1000.0);
        let v = match i % 3 {
            0 => -magnitude,
            1 => magnitude,
            _ => 0.0,
        };
        values.push(v);
        s.record(at(0.5), v).unwrap();
    }
    values.sort_by(f64::total_cmp);
    let p = one_period(&s, Period::ONE_SECOND, 0.0, 1.0);
    assert!(!p.percentiles_are_exact());
    // High percentiles of the positive side stay within 2 % (the lowest bins are the ones merged).
    for name in ["p90", "p95", "p99"] {
        let Statistic::Percentile(pct) = stat(name) else { unreachable!() };
        let exact = values[(pct_rank(pct, values.len()) - 1) as usize];
        let got = p.value(stat(name));
        assert!((got - exact).abs() <= exact.abs() * 0.02, "{name}: {got} vs {exact}");
    }
    assert_eq!(p.value(stat("p50")), 0.0, "zeros are exact in the sketch");
    assert_eq!((p.minimum(), p.maximum()), (values[0], values[399]));
    // Bounded: a sketch is at most 2 × 256 bins, whatever the spread.
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.len() < 16 * 1024, "{} bytes", json.len());
}

fn pct_rank(p: Percentile, n: usize) -> u64 {
    (u64::from(p.hundredths()) * n as u64).div_ceil(10_000).max(1)
}

#[test]
fn retention_forgets_old_buckets_and_refuses_samples_older_than_it() {
    let config = SeriesConfig::new(Period::ONE_SECOND, Duration::from_secs(10)).unwrap();
    let mut store = MetricStore::new(config);
    let id = MetricId::new("RequestCount").with("target_group", "web-green");
    for i in 0..100 {
        store.record(&id, at(f64::from(i) + 0.5), 1.0).unwrap();
    }
    let s = store.series(&id).unwrap();
    assert_eq!(s.len(), 11, "at most retention / resolution + 1 buckets");
    let kept = s.datapoints(Period::ONE_SECOND, Statistic::Sum, at(0.0), at(100.0)).unwrap();
    assert_eq!(kept.first().map(|d| d.start), Some(at(89.0)));
    let err = store.record(&id, at(80.0), 1.0).unwrap_err();
    assert!(matches!(err, RecordError::TooOld { .. }), "{err}");
    assert!(err.to_string().contains("older than the series keeps"), "{err}");
    // A late sample inside the retention is fine.
    store.record(&id, at(95.0), 1.0).unwrap();
    // Pruning with the time alone ages everything out, and the store forgets the empty series.
    store.prune(at(200.0));
    assert!(store.series(&id).is_none());
    assert_eq!(store.ids().count(), 0);
}

#[test]
fn configuration_and_samples_have_limits() {
    let err = SeriesConfig::new(Period::ONE_SECOND, Duration::from_secs(2 * 86_400)).unwrap_err();
    assert!(err.to_string().contains(&format!("at most {BUCKETS_MAX}")), "{err}");
    assert!(SeriesConfig::new(secs(60), Duration::from_secs(30)).is_err());
    assert!(SeriesConfig::new(Period::ONE_SECOND, Duration::from_millis(1500)).is_err());
    let mut s = series();
    let err = s.record(at(0.0), f64::NAN).unwrap_err();
    assert_eq!(
        err.to_string(),
        "sample value NaN is not a finite number; record only finite values"
    );
    assert!(matches!(s.record(at(0.0), f64::INFINITY), Err(RecordError::NotFinite(_))));
    let mut store = MetricStore::default();
    let err = store.record(&MetricId::new(""), at(0.0), 1.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid metric: metric name is empty; give it 1 to 255 characters"
    );
}

#[test]
fn statistic_names_parse_print_and_reject_with_advice() {
    for ok in [
        "SampleCount",
        "Sum",
        "Average",
        "Minimum",
        "Maximum",
        "p0",
        "p50",
        "p99",
        "p99.9",
        "p99.99",
        "p100",
        "p9.5",
    ] {
        assert_eq!(stat(ok).to_string(), ok);
    }
    assert_eq!(stat("p99.90").to_string(), "p99.9");
    for bad in ["avg", "P99", "p", "p99.", "p.5", "p100.01", "p101", "p99.999", "p-1", "p1e2"] {
        let err = bad.parse::<Statistic>().unwrap_err();
        assert!(err.to_string().contains(bad), "{bad}: {err}");
    }
    assert!("avg".parse::<Statistic>().unwrap_err().to_string().contains("p99"));
    assert_eq!(serde_json::to_string(&stat("p99.9")).unwrap(), "\"p99.9\"");
}

#[test]
fn low_sample_thresholds_follow_cloudwatch() {
    let threshold = |name: &str| stat(name).percentile().unwrap().low_sample_threshold();
    assert_eq!(threshold("p99"), Some(1000));
    assert_eq!(threshold("p99.9"), Some(10_000));
    assert_eq!(threshold("p90"), Some(100));
    assert_eq!(threshold("p50"), Some(20));
    assert_eq!(threshold("p25"), Some(40));
    assert_eq!(threshold("p10"), Some(100));
    assert_eq!(threshold("p0"), None);
    assert_eq!(threshold("p100"), None);
    let mut s = series();
    s.record_n(at(0.0), 1.0, 999).unwrap();
    let p = one_period(&s, Period::ONE_SECOND, 0.0, 1.0);
    assert!(p.is_low_sample(stat("p99")));
    assert!(!p.is_low_sample(stat("p90")));
    assert!(!p.is_low_sample(Statistic::Sum));
}

#[test]
fn periods_are_whole_seconds_up_to_a_day() {
    assert!(Period::from_secs(0).unwrap_err().to_string().contains("from 1 to 86400"));
    assert!(Period::from_secs(86_401).is_err());
    assert!(Period::from_secs(86_400).is_ok());
    let standard: Vec<u32> = [1, 7, 10, 20, 30, 45, 60, 120, 90]
        .into_iter()
        .filter(|&s| secs(s).is_cloudwatch_standard())
        .collect();
    assert_eq!(standard, [10, 20, 30, 60, 120]);
    assert_eq!(secs(90).to_string(), "1m30s");
    assert!(serde_json::from_str::<Period>("0").is_err());
}

#[test]
fn a_store_round_trips_through_json() {
    let mut store = MetricStore::default();
    let a = MetricId::new("RequestCount").with("target_group", "web-green");
    let b = MetricId::new("TargetResponseTime").with("target_group", "web-green");
    store.record(&a, at(0.0), 3.0).unwrap();
    for i in 0..300 {
        store.record(&b, at(0.0), f64::from(i) * 0.001).unwrap();
    }
    let json = serde_json::to_string(&store).unwrap();
    let back: MetricStore = serde_json::from_str(&json).unwrap();
    assert_eq!(back, store);
    let p = back.series(&b).unwrap().stats(Period::ONE_SECOND, at(0.0), at(1.0)).unwrap();
    assert_eq!(
        p[0].value(stat("p99")),
        store.series(&b).unwrap().stats(Period::ONE_SECOND, at(0.0), at(1.0)).unwrap()[0]
            .value(stat("p99"))
    );
}

#[test]
fn a_period_s_distribution_is_its_values_with_counts_exact_then_within_two_percent() {
    let mut s = series();
    s.record_n(at(0.1), 0.020, 3).unwrap();
    s.record_n(at(0.2), 0.010, 2).unwrap();
    s.record_n(at(1.5), 0.020, 1).unwrap();
    let p = one_period(&s, secs(2), 0.0, 2.0);
    assert_eq!(p.distribution(), vec![(0.010, 2), (0.020, 4)]);

    // Beyond the exact limit: bins whose counts add up and whose values are within 2 %.
    let mut s = series();
    for i in 1..=1000u32 {
        s.record(at(0.5), f64::from(i) / 1000.0).unwrap();
    }
    let p = one_period(&s, Period::ONE_SECOND, 0.0, 1.0);
    let distribution = p.distribution();
    assert_eq!(distribution.iter().map(|(_, n)| n).sum::<u64>(), 1000);
    assert!(distribution.windows(2).all(|w| w[0].0 < w[1].0), "ascending");
    let mut seen = 0;
    for (value, count) in distribution {
        // The values this bin holds are ranks seen+1 ..= seen+count, i.e. those / 1000.
        for rank in seen + 1..=seen + count {
            let exact = rank as f64 / 1000.0;
            assert!((value - exact).abs() / exact <= 0.02 + 1e-9, "{value} for {exact}");
        }
        seen += count;
    }
}
