//! What the control plane's samples of the data plane's metrics cost: `bench_metric_samples`
//! feeds `Monitor::record_snapshot` the snapshots of a data plane with 400 and 1,000 target
//! groups, idle (no request: every count is a 0 sample, every gauge the same) and with traffic
//! (every group answers requests in 5 response-time buckets at each sample), 4 samples a second
//! as `cutover up` takes them. The anchor is the previous implementation, kept here: the
//! per-sample API (`MetricStore::record_n` by a `MetricId` built for each sample) into a store
//! that looked each series up in one map by id and pruned every series at every sample.
//!
//! Each case is measured in rounds (the anchor and the monitor in turn, the median round shown)
//! and printed as the time of one sample and the ratio to the anchor. At 1,000 groups the store
//! is full (`alarms::series::SERIES_MAX` series; a group records 22 or more): the samples of the
//! groups beyond it are refused, in both.
//!
//! ```sh
//! cargo run -p control --release --example bench_metric_samples [-- --rounds 5 --samples 80]
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use alarms::series::SERIES_MAX;
use alarms::{MetricId, MetricSeries, SeriesConfig};
use control::monitor::Monitor;
use model::Timestamp;
use routes::{MetricsSnapshot, RequestCounters, TargetGroupMetrics};

/// 2026-01-01 00:00:00 UTC.
const T0: u64 = 1_767_225_600_000;
const SAMPLE_MS: u64 = 250;

/// The metric store as it was: one map by id, every series pruned at every call.
struct PreviousStore {
    config: SeriesConfig,
    series: BTreeMap<MetricId, MetricSeries>,
}

impl PreviousStore {
    fn record_n(&mut self, id: &MetricId, at: Timestamp, value: f64, n: u64) {
        if let Some(series) = self.series.get_mut(id) {
            let _ = series.record_n(at, value, n);
            return;
        }
        // Refused: `RecordError::InvalidMetric` or `RecordError::TooManySeries`.
        if id.validate().is_err() || self.series.len() >= SERIES_MAX {
            return;
        }
        let mut series = MetricSeries::new(id.clone(), self.config);
        if series.record_n(at, value, n).is_ok() {
            self.series.insert(id.clone(), series);
        }
    }

    fn prune(&mut self, now: Timestamp) {
        self.series.retain(|_, s| {
            s.prune(now);
            !s.is_empty()
        });
    }
}

/// The previous monitor's pass over a snapshot: every metric of every group, each sample by id.
fn record_by_id(store: &mut PreviousStore, snapshot: &MetricsSnapshot, previous: &MetricsSnapshot) {
    type Counter = fn(&TargetGroupMetrics) -> u64;
    const COUNTS: [(&str, Counter); 20] = [
        ("RetryCount", |g| g.retries),
        ("RetryBudgetExhaustedCount", |g| g.retry_budget_exhausted),
        ("RequestCount", |g| g.counters.requests),
        ("HTTPCode_Target_2XX_Count", |g| g.counters.target_2xx),
        ("HTTPCode_Target_3XX_Count", |g| g.counters.target_3xx),
        ("HTTPCode_Target_4XX_Count", |g| g.counters.target_4xx),
        ("HTTPCode_Target_5XX_Count", |g| g.counters.target_5xx),
        ("HTTPCode_ELB_502_Count", |g| g.counters.elb_502),
        ("HTTPCode_ELB_503_Count", |g| g.counters.elb_503),
        ("HTTPCode_ELB_504_Count", |g| g.counters.elb_504),
        ("HTTPCode_ELB_5XX_Count", |g| {
            g.counters.elb_502 + g.counters.elb_503 + g.counters.elb_504
        }),
        ("TargetConnectionErrorCount", |g| g.counters.target_connection_errors),
        ("MirroredRequestCount", |g| g.mirrored.counters.requests),
        ("MirroredTarget_2XX_Count", |g| g.mirrored.counters.target_2xx),
        ("MirroredTarget_3XX_Count", |g| g.mirrored.counters.target_3xx),
        ("MirroredTarget_4XX_Count", |g| g.mirrored.counters.target_4xx),
        ("MirroredTarget_5XX_Count", |g| g.mirrored.counters.target_5xx),
        ("MirroredELB_5XX_Count", |g| g.mirrored.server_errors() - g.mirrored.counters.target_5xx),
        ("MirroredMismatchCount", |g| g.mirrored.mismatches),
        ("MirroredDroppedCount", |g| g.mirrored.dropped),
    ];
    let at = Timestamp(snapshot.taken_at_unix_ms);
    for (name, group) in &snapshot.target_groups {
        let before = &previous.target_groups[name];
        let id = |metric: &str| MetricId::new(metric).with("target_group", name);
        store.record_n(&id("HealthyHostCount"), at, group.healthy_host_count as f64, 1);
        store.record_n(&id("UnHealthyHostCount"), at, group.unhealthy_host_count as f64, 1);
        for (metric, counter) in COUNTS {
            store.record_n(&id(metric), at, (counter(group) - counter(before)) as f64, 1);
        }
        let latencies = id("TargetResponseTime");
        for (&(index, answers), &(_, then)) in
            group.response_time_fine.iter().zip(&before.response_time_fine)
        {
            if answers > then {
                let us = routes::latency::latency_bucket_max_us(index as usize);
                store.record_n(&latencies, at, us as f64 / 1e6, answers - then);
            }
        }
    }
    store.prune(at);
}

/// The `sample`th snapshot of `groups` groups, each with 10 targets (8 healthy), and with
/// `requests` answered by each group since the previous one.
fn snapshot(groups: usize, sample: u64, requests: u64) -> MetricsSnapshot {
    let answered = sample * requests;
    let target_groups = (0..groups)
        .map(|i| {
            let group = TargetGroupMetrics {
                counters: RequestCounters {
                    requests: answered,
                    target_2xx: answered,
                    ..RequestCounters::default()
                },
                healthy_host_count: 8,
                unhealthy_host_count: 2,
                // Answers spread over 5 fine buckets (2 to 40 ms).
                response_time_fine: [2_000, 5_000, 10_000, 20_000, 40_000]
                    .into_iter()
                    .map(|us| (routes::latency::latency_bucket(us) as u32, answered / 5))
                    .collect(),
                ..TargetGroupMetrics::default()
            };
            (format!("lb-{:02}-tg-{i:04}", i % 10), group)
        })
        .collect();
    MetricsSnapshot {
        started_at_unix_ms: T0 - 60_000,
        taken_at_unix_ms: T0 + sample * SAMPLE_MS,
        target_groups,
        ..MetricsSnapshot::default()
    }
}

struct Case {
    groups: usize,
    requests: u64,
}

/// The time of one sample: the median over `samples` after as many to warm up.
fn measure(
    case: &Case,
    samples: u64,
    mut record: impl FnMut(MetricsSnapshot, &MetricsSnapshot),
) -> Duration {
    let mut previous = snapshot(case.groups, 0, case.requests);
    let mut times = Vec::new();
    for sample in 1..=2 * samples {
        let current = snapshot(case.groups, sample, case.requests);
        // The monitor takes the snapshot it is given, as from the data plane's client.
        let given = current.clone();
        let started = Instant::now();
        record(given, &previous);
        if sample > samples {
            times.push(started.elapsed());
        }
        previous = current;
    }
    times.sort();
    times[times.len() / 2]
}

fn anchor(case: &Case, samples: u64) -> Duration {
    let config = Monitor::new().store().config();
    let mut store = PreviousStore { config, series: BTreeMap::new() };
    measure(case, samples, |current, previous| record_by_id(&mut store, &current, previous))
}

fn monitor(case: &Case, samples: u64) -> Duration {
    let mut monitor = Monitor::new();
    monitor.record_snapshot(snapshot(case.groups, 0, case.requests), Timestamp(T0));
    measure(case, samples, |current, _| {
        let now = Timestamp(current.taken_at_unix_ms);
        monitor.record_snapshot(current, now);
    })
}

fn main() {
    let mut rounds = 5;
    let mut samples = 80;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--rounds", Some(n)) => rounds = n,
            ("--samples", Some(n)) => samples = n,
            _ => {
                eprintln!("usage: bench_metric_samples [--rounds N] [--samples N]");
                std::process::exit(2);
            }
        }
    }
    println!("{:<36} {:>14} {:>14} {:>8}", "one sample of", "anchor (ms)", "now (ms)", "ratio");
    for case in [
        Case { groups: 400, requests: 0 },
        Case { groups: 400, requests: 50 },
        Case { groups: 1000, requests: 0 },
        Case { groups: 1000, requests: 50 },
    ] {
        let mut pairs: Vec<(Duration, Duration)> =
            (0..rounds).map(|_| (anchor(&case, samples), monitor(&case, samples))).collect();
        let ratio =
            |(before, after): &(Duration, Duration)| after.as_secs_f64() / before.as_secs_f64();
        pairs.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
        let (before, after) = pairs[pairs.len() / 2];
        let traffic = if case.requests == 0 {
            "idle".to_string()
        } else {
            format!("{} requests each", case.requests)
        };
        println!(
            "{:<36} {:>14.3} {:>14.3} {:>8.3}",
            format!("{} groups, {traffic}", case.groups),
            before.as_secs_f64() * 1e3,
            after.as_secs_f64() * 1e3,
            after.as_secs_f64() / before.as_secs_f64()
        );
    }
}
