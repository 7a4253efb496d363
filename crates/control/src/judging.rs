//! The canary judge in the control plane: each complete period of a deployment that watches a
//! `kind: canary-judge` alarm, what blue and green served in it is read from the metric store
//! and judged (`alarms::judge`); the verdict becomes a datapoint of the alarm's series (1 worse,
//! 0 not worse, none with too few samples), so CloudWatch's M-of-N evaluation decides, and the
//! judgement is kept to be shown (`deployments get`, `watch`) and to explain a rollback.

use alarms::judge::{self, Judgement, Observed, Verdict};
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

/// What `target_group` served in `[start, start + period)`: requests, 5xx (its targets' and the
/// load balancer's own), and its response times' distribution.
pub fn observed(
    store: &MetricStore,
    target_group: &str,
    period: Period,
    start: Timestamp,
) -> Observed {
    let end = Timestamp(start.as_millis() + period.millis());
    let stats = |metric: &str| {
        let id = MetricId::new(metric).with("target_group", target_group);
        store.series(&id).and_then(|s| s.stats(period, start, end).ok()).and_then(|mut stats| {
            stats.retain(|p| p.start == start);
            stats.pop()
        })
    };
    let sum = |metric: &str| stats(metric).map_or(0, |p| p.value(Statistic::Sum) as u64);
    Observed {
        requests: sum("RequestCount"),
        errors: sum("HTTPCode_Target_5XX_Count") + sum("HTTPCode_ELB_5XX_Count"),
        latencies: stats("TargetResponseTime").map(|p| p.distribution()).unwrap_or_default(),
    }
}

/// What retry on blue spent on `green_target_group` in `[start, start + period)`.
pub fn retries_spent(
    store: &MetricStore,
    green_target_group: &str,
    period: Period,
    start: Timestamp,
) -> RetriesSpent {
    let sum = |metric: &str| {
        let id = MetricId::new(metric).with("target_group", green_target_group);
        let end = Timestamp(start.as_millis() + period.millis());
        let stats = store.series(&id).and_then(|s| s.stats(period, start, end).ok());
        stats
            .into_iter()
            .flatten()
            .filter(|p| p.start == start)
            .map(|p| p.value(Statistic::Sum))
            .sum::<f64>() as u64
    };
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
    let green = observed(store, green, period, start);
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
