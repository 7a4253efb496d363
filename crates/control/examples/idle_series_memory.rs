//! The memory an idle target group's metric series take, counted by the allocator.
//!
//! `cargo run -p control --release --example idle_series_memory -- GROUPS HOURS` records what the
//! control plane records for `GROUPS` target groups with no traffic, 4 polls a second for `HOURS`
//! simulated hours (default 10 groups, 3 hours): per group 20 counts of 0 and 2 gauges of an
//! unchanged reading (22 series), each in its own `MetricSeries` with the default configuration
//! (1 s buckets kept 3 hours). It prints the growth of the process' resident memory and the buckets the
//! series cover.

use alarms::{MetricId, MetricSeries, SeriesConfig};
use model::Timestamp;

/// The process' resident memory in bytes (Linux): what the series cost the machine, allocator's
/// overhead included.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("kB");
    kib * 1024
}

const COUNTS_PER_GROUP: usize = 20;
const GAUGES_PER_GROUP: usize = 2;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>().expect("a whole number"));
    let groups = args.next().unwrap_or(10);
    let hours = args.next().unwrap_or(3);
    let before = resident_bytes();
    let mut series: Vec<(MetricSeries, f64)> = Vec::new();
    for group in 0..groups {
        for metric in 0..COUNTS_PER_GROUP + GAUGES_PER_GROUP {
            let id = MetricId::new(format!("Metric{metric}"))
                .with("target_group", format!("tg-{group:04}"));
            let value = if metric < COUNTS_PER_GROUP { 0.0 } else { 3.0 };
            series.push((MetricSeries::new(id, SeriesConfig::default()), value));
        }
    }
    // 2023-11-14 12:00:00 UTC, then a poll every 250 ms.
    let start = 1_699_963_200_000u64;
    for poll in 0..hours * 3600 * 4 {
        let at = Timestamp::from_millis(start + poll * 250);
        for (s, value) in &mut series {
            s.record(at, *value).expect("a sample within the retention");
        }
    }
    let bytes = resident_bytes().saturating_sub(before);
    let n = series.len() as f64;
    let buckets: usize = series.iter().map(|(s, _)| s.len()).sum();
    println!(
        "{groups} idle groups ({} series), {hours} h of 4 polls a second: {bytes} bytes resident, \
         {:.0} bytes and {:.0} buckets per series",
        series.len(),
        bytes as f64 / n,
        buckets as f64 / n
    );
}
