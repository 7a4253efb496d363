//! The canary judge in the control plane: each complete period of a deployment that watches a
//! `kind: canary-judge` alarm, what blue and green served in it is read from the metric store
//! and judged (`alarms::judge`); the verdict becomes a datapoint of the alarm's series (1 worse,
//! 0 not worse, none with too few samples), so CloudWatch's M-of-N evaluation decides, and the
//! judgement is kept to be shown (`deployments get`, `watch`) and to explain a rollback.

use alarms::judge::{self, JudgedSource, Judgement, Observed, Verdict};
use alarms::{MetricId, MetricStore, Period, Statistic};
use model::Timestamp;
use serde::{Deserialize, Serialize};

/// How long after a period ends it is judged: the data plane's counters are sampled every
/// 250 ms by a task of their own, so the last samples of the period may still be on their way.
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(600);

/// One judged period of one judge alarm in one deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JudgedPeriod {
    /// The alarm's name.
    pub alarm: String,
    pub deployment: String,
    pub blue_target_group: String,
    pub green_target_group: String,
    /// The period judged: `[start, start + period)`.
    pub start: Timestamp,
    pub period_secs: u32,
    pub judgement: Judgement,
    /// Retry on blue's work in the period: green's failures sent again to blue. Periods judged
    /// before this was recorded read as none.
    #[serde(default)]
    pub retries: RetriesSpent,
    /// The shadow phase's copies in the period, when green got any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrored: Option<MirroredTally>,
}

/// What retry on blue spent in a period on a deployment's green target group: the requests it
/// sent again to blue (`RetryCount`) and those it could not because the budget was spent
/// (`RetryBudgetExhaustedCount`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetriesSpent {
    pub retries: u64,
    pub budget_exhausted: u64,
}

impl JudgedPeriod {
    /// `canary judge latency-judge, 12:00:10–12:00:20: green is slower than blue …`.
    pub fn reason(&self) -> String {
        let end = Timestamp(self.start.as_millis() + u64::from(self.period_secs) * 1000);
        format!(
            "canary judge {} on {} (green) vs {} (blue), {}–{}: {}",
            self.alarm,
            self.green_target_group,
            self.blue_target_group,
            crate::monitor::clock_time(self.start),
            crate::monitor::clock_time(end),
            self.judgement.reason()
        )
    }

    pub fn is_worse(&self) -> bool {
        self.judgement.verdict == Verdict::Worse
    }
}

/// The series one kind of a target group's answers is measured in.
struct AnswerSeries {
    requests: &'static str,
    /// 5xx, the targets' and the load balancer's own.
    errors: [&'static str; 2],
    latency: &'static str,
}

/// What a target group served to clients.
const SERVED: AnswerSeries = AnswerSeries {
    requests: "RequestCount",
    errors: ["HTTPCode_Target_5XX_Count", "HTTPCode_ELB_5XX_Count"],
    latency: "TargetResponseTime",
};

/// What a target group answered to a shadow phase's copies.
const MIRRORED: AnswerSeries = AnswerSeries {
    requests: "MirroredRequestCount",
    errors: ["MirroredTarget_5XX_Count", "MirroredELB_5XX_Count"],
    latency: "MirroredTargetResponseTime",
};

/// The statistics of `metric` on `target_group` in the period starting at `start`.
fn period_stats(
    store: &MetricStore,
    metric: &str,
    target_group: &str,
    period: Period,
    start: Timestamp,
) -> Option<alarms::PeriodStats> {
    let end = Timestamp(start.as_millis() + period.millis());
    let id = MetricId::new(metric).with("target_group", target_group);
    let mut stats = store.series(&id)?.stats(period, start, end).ok()?;
    stats.retain(|p| p.start == start);
    stats.pop()
}

/// The Sum of `metric` on `target_group` in the period starting at `start` (0 without data).
fn period_sum(
    store: &MetricStore,
    metric: &str,
    target_group: &str,
    period: Period,
    start: Timestamp,
) -> u64 {
    period_stats(store, metric, target_group, period, start)
        .map_or(0, |p| p.value(Statistic::Sum) as u64)
}

/// What `target_group` answered in `[start, start + period)` (to clients or to copies, as
/// `series` says): requests, 5xx, and its response times' distribution.
fn answers(
    store: &MetricStore,
    series: &AnswerSeries,
    target_group: &str,
    period: Period,
    start: Timestamp,
) -> Observed {
    let sum = |metric: &str| period_sum(store, metric, target_group, period, start);
    Observed {
        requests: sum(series.requests),
        errors: series.errors.iter().map(|metric| sum(metric)).sum(),
        latencies: period_stats(store, series.latency, target_group, period, start)
            .map(|p| p.distribution())
            .unwrap_or_default(),
    }
}

/// What `target_group` served in `[start, start + period)`: requests, 5xx (its targets' and the
/// load balancer's own), and its response times' distribution.
pub fn observed(
    store: &MetricStore,
    target_group: &str,
    period: Period,
    start: Timestamp,
) -> Observed {
    answers(store, &SERVED, target_group, period, start)
}

/// What green answered in `[start, start + period)` as a judge of `source` sees it: the
/// requests it served, or its answers to a shadow phase's copies.
pub fn observed_green(
    store: &MetricStore,
    source: JudgedSource,
    green_target_group: &str,
    period: Period,
    start: Timestamp,
) -> Observed {
    let series = match source {
        JudgedSource::Served => &SERVED,
        JudgedSource::Mirrored => &MIRRORED,
    };
    answers(store, series, green_target_group, period, start)
}

/// What a shadow phase's copies got from green, next to what blue served the clients in the
/// same periods: the figures `deployments get`, `watch` and the console show, for one judged
/// period or summed over a deployment (periods without copies add nothing, blue's side
/// included, so both sides cover the same time).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirroredTally {
    /// Copies sent to green (`MirroredRequestCount`).
    pub copies: u64,
    /// Green's answers to them by status class.
    pub green_2xx: u64,
    pub green_3xx: u64,
    pub green_4xx: u64,
    pub green_5xx: u64,
    /// Copies without an answer: the 502, 503 or 504 the load balancer would have answered.
    pub green_lb_5xx: u64,
    /// Copies whose status class differed from the answer the client got from blue.
    pub mismatches: u64,
    /// Copies not sent: `max_in_flight` were in flight already.
    pub dropped: u64,
    /// Green's response times to the copies, `(microseconds, answers)` ascending, the upper
    /// bounds of the data plane's buckets.
    pub green_response_times_us: Vec<(u64, u64)>,
    /// What blue served its clients in the same periods: requests, 5xx, response times.
    pub blue_requests: u64,
    pub blue_5xx: u64,
    pub blue_response_times_us: Vec<(u64, u64)>,
}

impl MirroredTally {
    /// No copy was sent nor dropped.
    pub fn is_empty(&self) -> bool {
        self.copies == 0 && self.dropped == 0
    }

    /// Adds `other`'s periods to these.
    pub fn add(&mut self, other: &MirroredTally) {
        self.copies += other.copies;
        self.green_2xx += other.green_2xx;
        self.green_3xx += other.green_3xx;
        self.green_4xx += other.green_4xx;
        self.green_5xx += other.green_5xx;
        self.green_lb_5xx += other.green_lb_5xx;
        self.mismatches += other.mismatches;
        self.dropped += other.dropped;
        self.blue_requests += other.blue_requests;
        self.blue_5xx += other.blue_5xx;
        merge_times(&mut self.green_response_times_us, &other.green_response_times_us);
        merge_times(&mut self.blue_response_times_us, &other.blue_response_times_us);
    }

    /// Green's response times to the copies: its percentiles (`alarms::judge::summarize`).
    pub fn green_summary(&self) -> judge::Summary {
        summary(self.copies, self.green_5xx + self.green_lb_5xx, &self.green_response_times_us)
    }

    /// Blue's answers to its clients in the same periods.
    pub fn blue_summary(&self) -> judge::Summary {
        summary(self.blue_requests, self.blue_5xx, &self.blue_response_times_us)
    }
}

fn summary(requests: u64, errors: u64, times_us: &[(u64, u64)]) -> judge::Summary {
    let latencies = times_us.iter().map(|&(us, n)| (us as f64 / 1e6, n)).collect();
    judge::summarize(&Observed { requests, errors, latencies })
}

/// Response times in seconds as microseconds: the data plane's bucket bounds are whole
/// microseconds, so the same bucket always gets the same key.
fn times_us(latencies: &[(f64, u64)]) -> Vec<(u64, u64)> {
    let mut times: Vec<(u64, u64)> = Vec::new();
    merge_times(
        &mut times,
        &latencies.iter().map(|&(s, n)| ((s * 1e6).round() as u64, n)).collect::<Vec<_>>(),
    );
    times
}

/// Adds `more` into `into`, both `(value, count)` ascending by value.
fn merge_times(into: &mut Vec<(u64, u64)>, more: &[(u64, u64)]) {
    let mut merged: std::collections::BTreeMap<u64, u64> = into.iter().copied().collect();
    for &(value, count) in more {
        *merged.entry(value).or_default() += count;
    }
    *into = merged.into_iter().filter(|&(_, n)| n > 0).collect();
}

/// The shadow phase's copies to `green_target_group` in `[start, start + period)` and what
/// `blue_target_group` served meanwhile; empty when no copy was sent or dropped.
pub fn mirrored_tally(
    store: &MetricStore,
    (blue, green): (&str, &str),
    period: Period,
    start: Timestamp,
) -> MirroredTally {
    let sum = |metric: &str| period_sum(store, metric, green, period, start);
    let (copies, dropped) = (sum("MirroredRequestCount"), sum("MirroredDroppedCount"));
    if copies == 0 && dropped == 0 {
        return MirroredTally::default();
    }
    let green_answers = answers(store, &MIRRORED, green, period, start);
    let blue_answers = answers(store, &SERVED, blue, period, start);
    MirroredTally {
        copies,
        green_2xx: sum("MirroredTarget_2XX_Count"),
        green_3xx: sum("MirroredTarget_3XX_Count"),
        green_4xx: sum("MirroredTarget_4XX_Count"),
        green_5xx: sum("MirroredTarget_5XX_Count"),
        green_lb_5xx: sum("MirroredELB_5XX_Count"),
        mismatches: sum("MirroredMismatchCount"),
        dropped,
        green_response_times_us: times_us(&green_answers.latencies),
        blue_requests: blue_answers.requests,
        blue_5xx: blue_answers.errors,
        blue_response_times_us: times_us(&blue_answers.latencies),
    }
}

/// What retry on blue spent on `green_target_group` in `[start, start + period)`.
pub fn retries_spent(
    store: &MetricStore,
    green_target_group: &str,
    period: Period,
    start: Timestamp,
) -> RetriesSpent {
    let sum = |metric: &str| period_sum(store, metric, green_target_group, period, start);
    RetriesSpent { retries: sum("RetryCount"), budget_exhausted: sum("RetryBudgetExhaustedCount") }
}

/// The judgement of one period.
pub fn judge_period(
    store: &MetricStore,
    criteria: &judge::JudgeCriteria,
    (blue, green): (&str, &str),
    period: Period,
    start: Timestamp,
) -> Judgement {
    let blue = observed(store, blue, period, start);
    let green = observed_green(store, criteria.source, green, period, start);
    judge::judge(criteria, &blue, &green)
}

/// The datapoint a verdict is in the alarm's series (None: no datapoint, too few samples).
pub fn datapoint(verdict: Verdict) -> Option<f64> {
    match verdict {
        Verdict::Worse => Some(1.0),
        Verdict::NotWorse => Some(0.0),
        Verdict::TooFewSamples => None,
    }
}
