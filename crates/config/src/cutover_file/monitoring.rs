//! `alarms` and `metric_filters` in cutover.yaml: CloudWatch's metric alarms and CloudWatch Logs'
//! metric filters in cutover's spelling. Each item becomes the `alarms` crate's spec and is checked
//! by that crate's own validation, so the rules live in one place; this module adds where each
//! problem was written and the references between items.

use std::collections::BTreeSet;

use ::alarms::judge::{JudgeCriteria, JudgedMetric, JudgedSource};
use ::alarms::{
    AlarmSpec, ComparisonOperator, FilterPattern, LowSampleCountPercentile, MetricFilter,
    MetricFilterSpec, MetricId, Period, Statistic, TreatMissingData,
};

use super::{GroupMeta, Loc, Named, check_unique, name, required_string, unknown};
use crate::taskdef::optional;
use syntax::decode::{BareNumber, Cx, Field, Fields, quote};
use syntax::diag::{Pos, suggest};
use syntax::tree::{Node, Value};

/// The load balancer's metrics an alarm can watch, each kept per target group (CloudWatch's
/// names, from namespace `AWS/ApplicationELB`).
pub const LOAD_BALANCER_METRICS: [&str; 19] = [
    "RequestCount",
    "HTTPCode_Target_2XX_Count",
    "HTTPCode_Target_4XX_Count",
    "HTTPCode_Target_5XX_Count",
    "HTTPCode_ELB_5XX_Count",
    "TargetResponseTime",
    "HealthyHostCount",
    "UnHealthyHostCount",
    // cutover's own: retry on blue's retries and spent budget, on the group that failed.
    "RetryCount",
    "RetryBudgetExhaustedCount",
    // cutover's own: a shadow phase's copies, on the group they were sent to (green).
    "MirroredRequestCount",
    "MirroredTarget_2XX_Count",
    "MirroredTarget_3XX_Count",
    "MirroredTarget_4XX_Count",
    "MirroredTarget_5XX_Count",
    "MirroredELB_5XX_Count",
    "MirroredMismatchCount",
    "MirroredDroppedCount",
    "MirroredTargetResponseTime",
];
/// The dimension of load-balancer metrics: `target_group=<name>`.
pub const TARGET_GROUP_DIMENSION: &str = "target_group";
/// The dimension of metric-filter metrics: `service=<name>`.
pub const SERVICE_DIMENSION: &str = "service";
/// `target_group: green`: the green target group of the deployment being watched.
pub const GREEN: &str = "green";

/// A metric alarm (`alarms:` in cutover.yaml).
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmDecl {
    /// CloudWatch's alarm; `spec.validate()` accepts it. Its metric has the dimension
    /// `target_group=<name>` or `service=<name>`, and none for [`AlarmDimension::Green`], whose
    /// target group is only known once a deployment runs: see [`AlarmDecl::spec_for`].
    pub spec: AlarmSpec,
    pub dimension: AlarmDimension,
    /// `kind: canary-judge`: how green is judged against blue. Its `spec` then watches the
    /// judge's verdicts ([`JUDGE_METRIC`], 1 for a period judged worse, 0 for one judged not
    /// worse, none for one with too few samples) on green: ALARM when M of the last N periods
    /// were judged worse.
    pub judge: Option<JudgeCriteria>,
}

/// The series of a canary judge's verdicts, one datapoint per judged period (dimensions `judge=`
/// the alarm's name and `target_group=` green's).
pub const JUDGE_METRIC: &str = "CanaryJudge";

/// Which series of the metric an alarm watches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AlarmDimension {
    /// `target_group: NAME`: a load-balancer metric of one declared target group.
    TargetGroup(String),
    /// `target_group: green`: a load-balancer metric of whichever target group is green (holds
    /// the replacement tasks) in the deployment that watches the alarm. Blue and green take turns
    /// in a deployment group's two target groups, so a fixed target group is the new version in
    /// one deployment and the old one in the next.
    Green,
    /// `service: NAME`: a metric that a metric filter produces from the service's task logs.
    Service(String),
}

impl AlarmDecl {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The alarm on a concrete series: for [`AlarmDimension::Green`], the metric of
    /// `green_target_group` (`None` without one); otherwise `spec` as it is.
    pub fn spec_for(&self, green_target_group: Option<&str>) -> Option<AlarmSpec> {
        match (&self.dimension, green_target_group) {
            (AlarmDimension::Green, None) => None,
            (AlarmDimension::Green, Some(tg)) => {
                let mut spec = self.spec.clone();
                spec.metric = spec.metric.with(TARGET_GROUP_DIMENSION, tg);
                Some(spec)
            }
            _ => Some(self.spec.clone()),
        }
    }
}

/// A log metric filter (`metric_filters:` in cutover.yaml).
#[derive(Clone, Debug, PartialEq)]
pub struct MetricFilterDecl {
    /// The service whose task logs (each stdout and stderr line) the filter reads.
    pub service: String,
    /// CloudWatch Logs' filter; `alarms::MetricFilter::new` accepts it. Its metric has the
    /// dimension `service=<service>`.
    pub spec: MetricFilterSpec,
}

/// Longest metric name a filter may produce (CloudWatch: 255).
const METRIC_NAME_LENGTH_MAX: usize = 255;
/// The longest period an alarm can have is one day, so at most this many evaluation periods.
const EVALUATION_PERIODS_MAX: u32 = 86_400;

pub(super) struct AlarmMeta {
    pub name: Option<Named>,
    pub metric: Option<Named>,
    pub dimension: Option<(AlarmDimension, Loc)>,
}

pub(super) struct FilterMeta {
    pub name: Option<Named>,
    pub service: Option<Named>,
    pub metric: Option<Named>,
}

const ALARM_FIELDS: &[&str] = &[
    "name",
    "kind",
    "metric",
    "target_group",
    "service",
    "statistic",
    "period",
    "evaluation_periods",
    "datapoints_to_alarm",
    "threshold",
    "comparison",
    "treat_missing_data",
    "evaluate_low_sample_count_percentile",
];

pub(super) fn alarm(cx: &mut Cx<'_>, node: &Node, path: &str) -> (Option<AlarmDecl>, AlarmMeta) {
    let mut meta = AlarmMeta { name: None, metric: None, dimension: None };
    let Some(mut f) = cx.map(node, path) else { return (None, meta) };
    let map_loc = Loc::node(node, path);
    match alarm_kind(cx, &mut f) {
        Some(AlarmKind::Metric) => {}
        Some(AlarmKind::CanaryJudge(kind_loc)) => return judge_alarm(cx, f, &map_loc, kind_loc),
        None => return (None, meta),
    }
    meta.name = name(cx, &mut f, "alarm");
    meta.metric = required_string(
        cx,
        &mut f,
        "metric",
        "name the metric to watch, like `metric: HTTPCode_Target_5XX_Count` or a metric filter's \
         metric",
    );
    let dimension = alarm_dimension(cx, &mut f, &map_loc, path);
    meta.dimension = dimension.clone();
    let statistic = f
        .require(
            cx,
            "statistic",
            "add `statistic: Sum` (or Average, Maximum, Minimum, SampleCount, p99)",
        )
        .and_then(|s| statistic(cx, &s));
    let period = f
        .require(cx, "period", "add the length of a datapoint, like `period: 10s` or `period: 1m`")
        .and_then(|p| period(cx, &p));
    let evaluation_periods = f
        .require(
            cx,
            "evaluation_periods",
            "add how many periods are evaluated, like `evaluation_periods: 3`",
        )
        .and_then(|e| {
            cx.u32(e.node, &e.path, 1, EVALUATION_PERIODS_MAX, "evaluation_periods")
                .map(|n| (n, Loc::of(&e)))
        });
    let datapoints_to_alarm = optional(cx, &mut f, "datapoints_to_alarm", |cx, d| {
        cx.u32(d.node, &d.path, 1, EVALUATION_PERIODS_MAX, "datapoints_to_alarm")
            .map(|n| (n, Loc::of(d)))
    });
    let threshold = f
        .require(cx, "threshold", "add the value to compare with, like `threshold: 5`")
        .and_then(|t| number(cx, t.node, &t.path).map(|n| (n, Loc::of(&t))));
    let comparison = f
        .require(
            cx,
            "comparison",
            "add how datapoints compare with the threshold, like `comparison: \">=\"` or \
             GreaterThanOrEqualToThreshold",
        )
        .and_then(|c| comparison_field(cx, &c));
    let treat_missing_data = optional(cx, &mut f, "treat_missing_data", treat_missing_data);
    let low_sample =
        optional(cx, &mut f, "evaluate_low_sample_count_percentile", low_sample_count_percentile);
    f.finish(cx, ALARM_FIELDS, &[]);
    let (
        Some((alarm_name, name_loc)),
        Some((metric, metric_loc)),
        Some((dimension, dimension_loc)),
        Some(statistic),
        Some(period),
        Some((evaluation_periods, n_loc)),
        Some(datapoints_to_alarm),
        Some((threshold, threshold_loc)),
        Some(comparison_operator),
        Some(treat_missing_data),
        Some(low_sample),
    ) = (
        meta.name.clone(),
        meta.metric.clone(),
        dimension,
        statistic,
        period,
        evaluation_periods,
        datapoints_to_alarm,
        threshold,
        comparison,
        treat_missing_data,
        low_sample,
    )
    else {
        return (None, meta);
    };
    let spec = AlarmSpec {
        name: alarm_name,
        metric: metric_id(&metric, &dimension),
        statistic,
        period,
        evaluation_periods,
        datapoints_to_alarm: datapoints_to_alarm.as_ref().map(|(m, _)| *m),
        threshold,
        comparison_operator,
        treat_missing_data: treat_missing_data.unwrap_or_default(),
        evaluate_low_sample_count_percentile: low_sample
            .as_ref()
            .map(|(l, _)| *l)
            .unwrap_or_default(),
    };
    let locs = AlarmLocs {
        map: &map_loc,
        name: &name_loc,
        metric: &metric_loc,
        dimension: &dimension_loc,
        evaluation_periods: &n_loc,
        datapoints_to_alarm: datapoints_to_alarm.as_ref().map(|(_, l)| l),
        threshold: &threshold_loc,
        low_sample: low_sample.as_ref().map(|(_, l)| l),
    };
    if !alarm_is_valid(cx, &spec, &locs) {
        return (None, meta);
    }
    (Some(AlarmDecl { spec, dimension, judge: None }), meta)
}

/// `kind:` of an alarm.
enum AlarmKind {
    /// CloudWatch's metric alarm (the default).
    Metric,
    /// `canary-judge`, written there.
    CanaryJudge(Loc),
}

/// The alarm's `kind`, or None (reported) when it is not one cutover knows.
fn alarm_kind(cx: &mut Cx<'_>, f: &mut Fields<'_>) -> Option<AlarmKind> {
    let Some(kind) = f.get(cx, "kind") else { return Some(AlarmKind::Metric) };
    match cx.str(kind.node, &kind.path)? {
        "metric" => Some(AlarmKind::Metric),
        "canary-judge" => Some(AlarmKind::CanaryJudge(Loc::of(&kind))),
        other => {
            let mut message = format!(
                "unknown alarm kind {}; use `metric` (CloudWatch's metric alarm, the \
                 default) or `canary-judge` (green compared with blue)",
                quote(other)
            );
            if let Some(s) = suggest(other, ["metric", "canary-judge"]) {
                message.push_str(&format!("; did you mean `{s}`?"));
            }
            cx.error(kind.node.pos, &kind.path, message);
            None
        }
    }
}

const JUDGE_FIELDS: &[&str] = &[
    "name",
    "kind",
    "metric",
    "source",
    "tolerance",
    "confidence",
    "min_samples",
    "period",
    "evaluation_periods",
    "datapoints_to_alarm",
];

/// A judged period's length, unless `period` says otherwise.
const JUDGE_PERIOD_SECS: u32 = 10;
/// Judged periods looked at (N) and how many must be judged worse (M), unless told otherwise: at
/// 99 % confidence one period in a hundred of a healthy green is judged worse by chance, two of
/// three in a row about one in 3,000 (see docs/safe-canary.md).
const JUDGE_EVALUATION_PERIODS: u32 = 3;
const JUDGE_DATAPOINTS_TO_ALARM: u32 = 2;
const JUDGE_CONFIDENCE: f64 = 0.99;
/// Spinnaker's advice: at least 50 data points per metric.
const JUDGE_MIN_SAMPLES: u64 = 50;

/// `kind: canary-judge`: green against blue, by `metric: error-rate | latency`.
fn judge_alarm(
    cx: &mut Cx<'_>,
    mut f: Fields<'_>,
    map_loc: &Loc,
    kind_loc: Loc,
) -> (Option<AlarmDecl>, AlarmMeta) {
    let mut meta = AlarmMeta { name: None, metric: None, dimension: None };
    meta.name = name(cx, &mut f, "alarm");
    // Always green's, against blue: the "no group lists it" note points at `kind`.
    meta.dimension = Some((AlarmDimension::Green, kind_loc));
    let metric = f
        .require(cx, "metric", "add what is compared: `metric: error-rate` or `metric: latency`")
        .and_then(|m| match cx.str(m.node, &m.path)? {
            "error-rate" => Some(JudgedMetric::ErrorRate),
            "latency" => Some(JudgedMetric::Latency),
            other => {
                let mut message = format!(
                    "a canary judge compares `error-rate` or `latency`, not {}",
                    quote(other)
                );
                if let Some(s) = suggest(other, ["error-rate", "latency"]) {
                    message.push_str(&format!("; did you mean `{s}`?"));
                }
                cx.error(m.node.pos, &m.path, message);
                None
            }
        });
    let source = optional(cx, &mut f, "source", |cx, s| match cx.str(s.node, &s.path)? {
        "served" => Some(JudgedSource::Served),
        "mirrored" => Some(JudgedSource::Mirrored),
        other => {
            let mut message = format!(
                "a canary judge compares green's `served` requests (the default) or its answers \
                 to a shadow phase's `mirrored` copies, not {}",
                quote(other)
            );
            if let Some(s) = suggest(other, ["served", "mirrored"]) {
                message.push_str(&format!("; did you mean `{s}`?"));
            }
            cx.error(s.node.pos, &s.path, message);
            None
        }
    });
    let tolerance = f
        .require(
            cx,
            "tolerance",
            "add how much worse green may be, like `tolerance: 1%` (percentage points of the \
             error rate) or `tolerance: 10%` (slower)",
        )
        .and_then(|t| percentage(cx, &t).map(|v| (v, Loc::of(&t))));
    let confidence = optional(cx, &mut f, "confidence", |cx, c| {
        number(cx, c.node, &c.path).map(|v| (v, Loc::of(c)))
    });
    let min_samples = optional(cx, &mut f, "min_samples", |cx, m| {
        cx.u32(m.node, &m.path, 0, u32::MAX, "min_samples").map(|v| (u64::from(v), Loc::of(m)))
    });
    let period = optional(cx, &mut f, "period", |cx, p| period(cx, p).map(|v| (v, Loc::of(p))));
    let evaluation_periods = optional(cx, &mut f, "evaluation_periods", |cx, e| {
        cx.u32(e.node, &e.path, 1, EVALUATION_PERIODS_MAX, "evaluation_periods")
            .map(|n| (n, Loc::of(e)))
    });
    let datapoints_to_alarm = optional(cx, &mut f, "datapoints_to_alarm", |cx, d| {
        cx.u32(d.node, &d.path, 1, EVALUATION_PERIODS_MAX, "datapoints_to_alarm")
            .map(|n| (n, Loc::of(d)))
    });
    f.finish(cx, JUDGE_FIELDS, &[]);
    let (
        Some((alarm_name, name_loc)),
        Some(metric),
        Some(source),
        Some((tolerance, tolerance_loc)),
        Some(confidence),
        Some(min_samples),
        Some(period),
        Some(evaluation_periods),
        Some(datapoints_to_alarm),
    ) = (
        meta.name.clone(),
        metric,
        source,
        tolerance,
        confidence,
        min_samples,
        period,
        evaluation_periods,
        datapoints_to_alarm,
    )
    else {
        return (None, meta);
    };
    let parts = JudgeParts {
        name: alarm_name,
        name_loc,
        metric,
        source: source.unwrap_or_default(),
        tolerance: (tolerance, tolerance_loc),
        confidence,
        min_samples,
        period,
        evaluation_periods,
        datapoints_to_alarm,
    };
    (judge_decl(cx, parts, map_loc), meta)
}

/// A canary judge's fields as written, each with where it was.
struct JudgeParts {
    name: String,
    name_loc: Loc,
    metric: JudgedMetric,
    source: JudgedSource,
    tolerance: (f64, Loc),
    confidence: Option<(f64, Loc)>,
    min_samples: Option<(u64, Loc)>,
    period: Option<(Period, Loc)>,
    evaluation_periods: Option<(u32, Loc)>,
    datapoints_to_alarm: Option<(u32, Loc)>,
}

/// The judge's criteria and the alarm on its verdicts, with the defaults; every problem is
/// reported at its field.
fn judge_decl(cx: &mut Cx<'_>, parts: JudgeParts, map_loc: &Loc) -> Option<AlarmDecl> {
    let JudgeParts {
        name: alarm_name,
        name_loc,
        metric,
        source,
        tolerance: (tolerance, tolerance_loc),
        confidence,
        min_samples,
        period,
        evaluation_periods,
        datapoints_to_alarm,
    } = parts;
    let criteria = JudgeCriteria {
        metric,
        source,
        tolerance,
        confidence: confidence.as_ref().map_or(JUDGE_CONFIDENCE, |(c, _)| *c),
        min_samples: min_samples.as_ref().map_or(JUDGE_MIN_SAMPLES, |(m, _)| *m),
    };
    let n = evaluation_periods.as_ref().map_or(JUDGE_EVALUATION_PERIODS, |(n, _)| *n);
    let m = match (&evaluation_periods, &datapoints_to_alarm) {
        (_, Some((m, _))) => *m,
        (None, None) => JUDGE_DATAPOINTS_TO_ALARM,
        (Some(_), None) => n,
    };
    let spec = AlarmSpec {
        metric: MetricId::new(JUDGE_METRIC).with("judge", &alarm_name),
        name: alarm_name,
        statistic: Statistic::Maximum,
        period: period.as_ref().map_or_else(
            || Period::from_secs(JUDGE_PERIOD_SECS).expect("invariant: 10 s is a period"),
            |(p, _)| *p,
        ),
        evaluation_periods: n,
        datapoints_to_alarm: Some(m),
        threshold: 1.0,
        comparison_operator: ComparisonOperator::GreaterThanOrEqualToThreshold,
        // A period with too few samples has no verdict: it neither fires nor clears (with
        // `missing`, one period judged worse by chance followed by two without traffic would
        // alarm by CloudWatch's premature-alarm rule).
        treat_missing_data: TreatMissingData::Ignore,
        evaluate_low_sample_count_percentile: LowSampleCountPercentile::Evaluate,
    };
    let mut valid = true;
    if let Err(errors) = criteria.validate() {
        valid = false;
        for e in errors {
            let loc = match e.field {
                "tolerance" => Some(&tolerance_loc),
                "confidence" => confidence.as_ref().map(|(_, l)| l),
                _ => min_samples.as_ref().map(|(_, l)| l),
            };
            let loc = loc.unwrap_or(map_loc);
            cx.error(loc.pos, &loc.path, e.message);
        }
    }
    let n_loc = evaluation_periods.as_ref().map_or(map_loc, |(_, l)| l);
    let period_loc = period.as_ref().map_or(map_loc, |(_, l)| l);
    let locs = AlarmLocs {
        map: period_loc,
        name: &name_loc,
        metric: map_loc,
        dimension: map_loc,
        evaluation_periods: n_loc,
        datapoints_to_alarm: datapoints_to_alarm.as_ref().map(|(_, l)| l),
        threshold: map_loc,
        low_sample: None,
    };
    if !alarm_is_valid(cx, &spec, &locs) || !valid {
        return None;
    }
    Some(AlarmDecl { spec, dimension: AlarmDimension::Green, judge: Some(criteria) })
}

/// `1%`, `0.5%`, `10 %`: a percentage, as a fraction.
fn percentage(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<f64> {
    let advice = "write it as a percentage, like `1%` or `10%`";
    let parsed = match &field.node.value {
        Value::Str(text) => text
            .trim()
            .strip_suffix('%')
            .and_then(|number| number.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite()),
        _ => None,
    };
    if parsed.is_none() {
        cx.error(
            field.node.pos,
            &field.path,
            format!("{} is not a percentage; {advice}", cx.describe(field.node)),
        );
    }
    parsed.map(|v| v / 100.0)
}

/// The series an alarm watches: a target group's (or green's), or a service's.
fn alarm_dimension(
    cx: &mut Cx<'_>,
    f: &mut Fields<'_>,
    map_loc: &Loc,
    path: &str,
) -> Option<(AlarmDimension, Loc)> {
    let named = |cx: &mut Cx<'_>, field: &Field<'_>| {
        cx.nonempty(field.node, &field.path).map(|s| (s, Loc::of(field)))
    };
    let target_group = optional(cx, f, "target_group", named);
    let service = optional(cx, f, "service", named);
    match (target_group, service) {
        (Some(Some(_)), Some(Some((_, loc)))) => {
            cx.error(
                loc.pos,
                &loc.path,
                "an alarm watches one series: `target_group` for a load-balancer metric or \
                 `service` for a metric filter's metric, not both; remove one",
            );
            None
        }
        (Some(Some((tg, loc))), Some(None)) if tg == GREEN => Some((AlarmDimension::Green, loc)),
        (Some(Some((tg, loc))), Some(None)) => Some((AlarmDimension::TargetGroup(tg), loc)),
        (Some(None), Some(Some((s, loc)))) => Some((AlarmDimension::Service(s), loc)),
        (Some(None), Some(None)) => {
            cx.error(
                map_loc.pos,
                &super::child_key(path, "target_group"),
                "missing the metric's series: add `target_group: NAME` (or `green`) for a \
                 load-balancer metric, or `service: NAME` for a metric filter's metric",
            );
            None
        }
        _ => None,
    }
}

fn statistic(cx: &mut Cx<'_>, s: &Field<'_>) -> Option<Statistic> {
    let text = cx.str(s.node, &s.path)?;
    match text.parse::<Statistic>() {
        Ok(statistic) => Some(statistic),
        Err(err) => {
            cx.error(s.node.pos, &s.path, err.to_string());
            None
        }
    }
}

fn comparison_field(cx: &mut Cx<'_>, c: &Field<'_>) -> Option<ComparisonOperator> {
    let text = cx.str(c.node, &c.path)?;
    let op = comparison(text);
    if let Err(message) = &op {
        cx.error(c.node.pos, &c.path, message.to_string());
    }
    op.ok()
}

fn treat_missing_data(cx: &mut Cx<'_>, t: &Field<'_>) -> Option<TreatMissingData> {
    let text = cx.str(t.node, &t.path)?;
    const NAMES: [&str; 4] = ["missing", "notBreaching", "breaching", "ignore"];
    match text.parse::<TreatMissingData>() {
        Ok(treat) => Some(treat),
        Err(err) => {
            let mut message = err.to_string();
            if let Some(s) = suggest(text, NAMES) {
                message.push_str(&format!("; did you mean `{s}`?"));
            }
            cx.error(t.node.pos, &t.path, message);
            None
        }
    }
}

fn low_sample_count_percentile(
    cx: &mut Cx<'_>,
    l: &Field<'_>,
) -> Option<(LowSampleCountPercentile, Loc)> {
    match cx.str(l.node, &l.path)? {
        "evaluate" => Some((LowSampleCountPercentile::Evaluate, Loc::of(l))),
        "ignore" => Some((LowSampleCountPercentile::Ignore, Loc::of(l))),
        other => {
            cx.error(
                l.node.pos,
                &l.path,
                format!("{} is not `evaluate` or `ignore`", quote(other)),
            );
            None
        }
    }
}

/// The series of `metric` an alarm watches; green's target group is known only in a deployment.
fn metric_id(metric: &str, dimension: &AlarmDimension) -> MetricId {
    match dimension {
        AlarmDimension::TargetGroup(tg) => MetricId::new(metric).with(TARGET_GROUP_DIMENSION, tg),
        AlarmDimension::Green => MetricId::new(metric),
        AlarmDimension::Service(s) => MetricId::new(metric).with(SERVICE_DIMENSION, s),
    }
}

/// Where an alarm's fields were written, for the errors of CloudWatch's own checks.
struct AlarmLocs<'a> {
    map: &'a Loc,
    name: &'a Loc,
    metric: &'a Loc,
    dimension: &'a Loc,
    evaluation_periods: &'a Loc,
    datapoints_to_alarm: Option<&'a Loc>,
    threshold: &'a Loc,
    low_sample: Option<&'a Loc>,
}

/// Runs CloudWatch's checks of the alarm (`alarms::AlarmSpec::validate`) and reports each
/// failure at the field it is about.
fn alarm_is_valid(cx: &mut Cx<'_>, spec: &AlarmSpec, locs: &AlarmLocs<'_>) -> bool {
    let Err(errors) = spec.validate() else { return true };
    for e in errors {
        let loc = match e.field {
            "name" => locs.name,
            "metric" if e.message.contains("dimension") => locs.dimension,
            "metric" => locs.metric,
            "evaluation_periods" => locs.evaluation_periods,
            "datapoints_to_alarm" => locs.datapoints_to_alarm.unwrap_or(locs.evaluation_periods),
            "threshold" => locs.threshold,
            "evaluate_low_sample_count_percentile" => locs.low_sample.unwrap_or(locs.map),
            _ => locs.map,
        };
        cx.error(loc.pos, &loc.path, e.message);
    }
    false
}

/// `1s`, `10s`, `1m`; a bare integer counts seconds, as CloudWatch's `Period`.
fn period(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<Period> {
    let d = cx.duration(field.node, &field.path, BareNumber::Seconds)?;
    if d.subsec_nanos() != 0 {
        cx.error(
            field.node.pos,
            &field.path,
            format!(
                "period {} is not a whole number of seconds; alarms count in whole seconds (1s, \
                 10s, 1m…)",
                model::format_duration(d)
            ),
        );
        return None;
    }
    let secs = u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    match Period::from_secs(secs) {
        Ok(p) => Some(p),
        Err(err) => {
            cx.error(field.node.pos, &field.path, err.to_string());
            None
        }
    }
}

/// CloudWatch's operator names, or `>=`, `>`, `<`, `<=`.
fn comparison(text: &str) -> Result<ComparisonOperator, BadComparison> {
    match text {
        ">=" => return Ok(ComparisonOperator::GreaterThanOrEqualToThreshold),
        ">" => return Ok(ComparisonOperator::GreaterThanThreshold),
        "<" => return Ok(ComparisonOperator::LessThanThreshold),
        "<=" => return Ok(ComparisonOperator::LessThanOrEqualToThreshold),
        _ => {}
    }
    if let Ok(op) = text.parse::<ComparisonOperator>() {
        return Ok(op);
    }
    const ALL: [&str; 8] = [
        ">=",
        ">",
        "<",
        "<=",
        "GreaterThanOrEqualToThreshold",
        "GreaterThanThreshold",
        "LessThanThreshold",
        "LessThanOrEqualToThreshold",
    ];
    // `GreaterThanOrEqual` is closer by edits to `GreaterThanThreshold` than to what it starts.
    let lower = text.to_ascii_lowercase();
    let extending: Vec<&str> = ALL
        .iter()
        .copied()
        .filter(|name| lower.len() >= 4 && name.to_ascii_lowercase().starts_with(&lower))
        .collect();
    let guess = match extending[..] {
        [one] => Some(one),
        _ => suggest(text, ALL),
    };
    Err(BadComparison { text: text.to_string(), guess })
}

/// A comparison that is none of CloudWatch's, with the one it most likely meant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} is not a comparison; use `>=` (GreaterThanOrEqualToThreshold), `>` (GreaterThanThreshold), `<` (LessThanThreshold) or `<=` (LessThanOrEqualToThreshold){}",
    quote(.text),
    .guess.map(|s| format!("; did you mean `{s}`?")).unwrap_or_default()
)]
struct BadComparison {
    text: String,
    guess: Option<&'static str>,
}

/// An integer or a decimal number.
fn number(cx: &mut Cx<'_>, node: &Node, path: &str) -> Option<f64> {
    match node.value {
        // Thresholds and values are doubles in CloudWatch too.
        Value::Int(i) => Some(i as f64),
        Value::Float(f) => Some(f),
        _ => {
            cx.type_error(node, path, "number");
            None
        }
    }
}

const FILTER_FIELDS: &[&str] = &["name", "service", "pattern", "metric", "value", "default_value"];

/// `source` is the whole file, to place errors inside the pattern.
pub(super) fn metric_filter(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
    source: &str,
) -> (Option<MetricFilterDecl>, FilterMeta) {
    let mut meta = FilterMeta { name: None, service: None, metric: None };
    let Some(mut f) = cx.map(node, path) else { return (None, meta) };
    let map_loc = Loc::node(node, path);
    meta.name = name(cx, &mut f, "metric filter");
    meta.service =
        required_string(cx, &mut f, "service", "name the service whose task logs the filter reads");
    let pattern = f
        .require(
            cx,
            "pattern",
            "add what to look for in each log line, like `pattern: Error` or `pattern: '{ \
             $.level = \"error\" }'`",
        )
        .and_then(|p| {
            let text = cx.str(p.node, &p.path)?;
            match FilterPattern::parse(text) {
                Ok(_) => Some((text.to_string(), Loc::of(&p))),
                Err(e) => {
                    let pos = pos_in_scalar(source, p.node.pos, text, e.column);
                    cx.error(pos, &p.path, e.message);
                    None
                }
            }
        });
    meta.metric = f
        .require(
            cx,
            "metric",
            "name the count metric the filter produces, like `metric: ApplicationErrorCount`",
        )
        .and_then(|m| {
            let s = cx.string(m.node, &m.path)?;
            let ok = (1..=METRIC_NAME_LENGTH_MAX).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok {
                cx.error(
                    m.node.pos,
                    &m.path,
                    format!(
                        "{} is not a valid metric name: use 1 to {METRIC_NAME_LENGTH_MAX} letters, \
                         digits, `.`, `_` and `-`",
                        quote(&s)
                    ),
                );
                return None;
            }
            if LOAD_BALANCER_METRICS.contains(&s.as_str()) {
                cx.error(
                    m.node.pos,
                    &m.path,
                    format!(
                        "`{s}` is a load-balancer metric; give the filter's metric its own name, \
                         like `ApplicationErrorCount`"
                    ),
                );
                return None;
            }
            Some((s, Loc::of(&m)))
        });
    let value = optional(cx, &mut f, "value", |cx, v| {
        let text = match &v.node.value {
            Value::Int(i) => i.to_string(),
            Value::Float(x) => x.to_string(),
            Value::Str(s) => s.clone(),
            _ => {
                cx.type_error(v.node, &v.path, "number or a JSON selector like `$.latency`");
                return None;
            }
        };
        Some((text, Loc::of(v)))
    });
    let default_value = optional(cx, &mut f, "default_value", |cx, d| {
        number(cx, d.node, &d.path).map(|n| (n, Loc::of(d)))
    });
    f.finish(cx, FILTER_FIELDS, &[]);
    let (
        Some((filter_name, name_loc)),
        Some((service, _)),
        Some((pattern, pattern_loc)),
        Some((metric, metric_loc)),
        Some(value),
        Some(default_value),
    ) = (
        meta.name.clone(),
        meta.service.clone(),
        pattern,
        meta.metric.clone(),
        value,
        default_value,
    )
    else {
        return (None, meta);
    };
    let spec = MetricFilterSpec {
        name: filter_name,
        pattern,
        metric: MetricId::new(metric).with(SERVICE_DIMENSION, &service),
        metric_value: value.as_ref().map_or_else(|| "1".to_string(), |(v, _)| v.clone()),
        default_value: default_value.as_ref().map(|(d, _)| *d),
    };
    if let Err(e) = MetricFilter::new(spec.clone()) {
        let loc = match e.field {
            "name" => &name_loc,
            "metric" => &metric_loc,
            "pattern" => &pattern_loc,
            "metric_value" => value.as_ref().map_or(&map_loc, |(_, l)| l),
            "default_value" => default_value.as_ref().map_or(&map_loc, |(_, l)| l),
            _ => &map_loc,
        };
        cx.error(loc.pos, &loc.path, e.message);
        return (None, meta);
    }
    (Some(MetricFilterDecl { service, spec }), meta)
}

/// Where character `column` (1-based) of a scalar's value is in the file, for a scalar written on
/// one line: plain, single-quoted or double-quoted (YAML or JSON escapes). Anything else (block
/// scalars, folded lines, a column past the value) points at the scalar itself.
fn pos_in_scalar(source: &str, at: Pos, value: &str, column: usize) -> Pos {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let Some(line) = source.lines().nth((at.line() as usize).saturating_sub(1)) else { return at };
    let written: Vec<char> = line.chars().skip((at.column() as usize).saturating_sub(1)).collect();
    let value: Vec<char> = value.chars().collect();
    let wanted = column.saturating_sub(1).min(value.len());
    let shift = |offset: usize| Pos::new(at.line() as usize, at.column() as usize + offset);
    match written.first() {
        Some('"') => {
            let mut i = 1;
            let mut k = 0;
            while i < written.len() && written[i] != '"' {
                if k == wanted {
                    return shift(i);
                }
                i += match (written[i], written.get(i + 1)) {
                    ('\\', Some('x')) => 4,
                    ('\\', Some('u')) => 6,
                    ('\\', Some('U')) => 10,
                    ('\\', _) => 2,
                    _ => 1,
                };
                k += 1;
            }
            if k == wanted && k == value.len() { shift(i) } else { at }
        }
        Some('\'') => {
            let mut i = 1;
            let mut k = 0;
            while i < written.len() {
                let escaped_quote = written[i] == '\'' && written.get(i + 1) == Some(&'\'');
                if written[i] == '\'' && !escaped_quote {
                    break;
                }
                if k == wanted {
                    return shift(i);
                }
                i += if escaped_quote { 2 } else { 1 };
                k += 1;
            }
            if k == wanted && k == value.len() { shift(i) } else { at }
        }
        Some('|' | '>') | None => at,
        Some(_) if written.starts_with(&value) => shift(wanted),
        Some(_) => at,
    }
}

/// Names, references and kinds of metrics across alarms, metric filters, target groups, services
/// and deployment groups.
pub(super) fn cross_check(
    cx: &mut Cx<'_>,
    alarms: &[AlarmMeta],
    filters: &[FilterMeta],
    target_groups: &[&str],
    services: &[&str],
    groups: &[GroupMeta],
) {
    check_unique(cx, "alarm", alarms.iter().filter_map(|a| a.name.as_ref()));
    check_unique(cx, "metric filter", filters.iter().filter_map(|f| f.name.as_ref()));
    for filter in filters {
        if let Some((service, loc)) = &filter.service
            && !services.contains(&service.as_str())
        {
            unknown(cx, loc, "service", service, services, "services");
        }
    }
    // (metric, service) pairs the filters produce.
    let produced: BTreeSet<(&str, &str)> = filters
        .iter()
        .filter_map(|f| Some((f.metric.as_ref()?.0.as_str(), f.service.as_ref()?.0.as_str())))
        .collect();
    for alarm in alarms {
        let (Some((metric, metric_loc)), Some((dimension, dim_loc))) =
            (&alarm.metric, &alarm.dimension)
        else {
            continue;
        };
        if LOAD_BALANCER_METRICS.contains(&metric.as_str()) {
            check_load_balancer_series(cx, metric, (dimension, dim_loc), target_groups);
        } else {
            check_filter_series(cx, (metric, metric_loc), (dimension, dim_loc), &produced);
        }
    }
    let listed = check_group_alarms(cx, alarms, groups);
    for alarm in alarms {
        if let (Some((alarm_name, _)), Some((AlarmDimension::Green, loc))) =
            (&alarm.name, &alarm.dimension)
            && !listed.contains(alarm_name.as_str())
        {
            cx.note(
                loc.pos,
                &loc.path,
                format!(
                    "no deployment group lists alarm `{alarm_name}`, and `green` only exists in a \
                     deployment; add it to a group's `alarms`"
                ),
            );
        }
    }
}

/// A load-balancer metric is kept per target group: the alarm names one that exists, or green.
fn check_load_balancer_series(
    cx: &mut Cx<'_>,
    metric: &str,
    (dimension, dim_loc): (&AlarmDimension, &Loc),
    target_groups: &[&str],
) {
    match dimension {
        AlarmDimension::Service(_) => cx.error(
            dim_loc.pos,
            &dim_loc.path,
            format!(
                "`{metric}` is a load-balancer metric, kept per target group; write \
                 `target_group: NAME` (or `green`) instead of `service`"
            ),
        ),
        AlarmDimension::TargetGroup(tg) => {
            if !target_groups.contains(&tg.as_str()) {
                let mut known = target_groups.to_vec();
                known.push(GREEN);
                unknown(cx, dim_loc, "target group", tg, &known, "target_groups");
            }
        }
        AlarmDimension::Green => {
            if target_groups.contains(&GREEN) {
                cx.note(
                    dim_loc.pos,
                    &dim_loc.path,
                    "`green` means the green target group of the deployment being \
                     watched, not the target group named `green`",
                );
            }
        }
    }
}

/// Any other metric must come from a metric filter, for the service the alarm names.
fn check_filter_series(
    cx: &mut Cx<'_>,
    (metric, metric_loc): (&str, &Loc),
    (dimension, dim_loc): (&AlarmDimension, &Loc),
    produced: &BTreeSet<(&str, &str)>,
) {
    let filter_metrics: BTreeSet<&str> = produced.iter().map(|(m, _)| *m).collect();
    if !filter_metrics.contains(metric) {
        let mut message = format!(
            "no metric `{metric}`: it is neither a load-balancer metric nor produced by a \
             metric filter"
        );
        let candidates =
            LOAD_BALANCER_METRICS.iter().copied().chain(filter_metrics.iter().copied());
        match suggest(metric, candidates) {
            Some(s) => message.push_str(&format!("; did you mean `{s}`?")),
            None if filter_metrics.is_empty() => message.push_str(&format!(
                "; use a load-balancer metric ({}) or declare a metric filter under \
                 `metric_filters`",
                LOAD_BALANCER_METRICS.join(", ")
            )),
            None => message.push_str(&format!(
                "; metric filters produce: {}",
                filter_metrics.iter().copied().collect::<Vec<_>>().join(", ")
            )),
        }
        cx.error(metric_loc.pos, &metric_loc.path, message);
        return;
    }
    let producers: Vec<&str> =
        produced.iter().filter(|(m, _)| *m == metric).map(|(_, s)| *s).collect();
    match dimension {
        AlarmDimension::Service(service) => {
            if !producers.contains(&service.as_str()) {
                cx.error(
                    dim_loc.pos,
                    &dim_loc.path,
                    format!(
                        "no metric filter produces `{metric}` for service `{service}`; it is \
                         produced for: {}",
                        producers.join(", ")
                    ),
                );
            }
        }
        AlarmDimension::TargetGroup(_) | AlarmDimension::Green => cx.error(
            dim_loc.pos,
            &dim_loc.path,
            format!(
                "`{metric}` comes from a metric filter and is kept per service; write \
                 `service: {}` instead of `target_group`",
                producers[0]
            ),
        ),
    }
}

/// Every alarm a deployment group lists exists; one that watches a target group of the group's
/// blue/green pair gets a note (it watches the new version one time, the old the next). Returns
/// the names listed.
fn check_group_alarms<'a>(
    cx: &mut Cx<'_>,
    alarms: &[AlarmMeta],
    groups: &'a [GroupMeta],
) -> BTreeSet<&'a str> {
    let names: Vec<&str> =
        alarms.iter().filter_map(|a| a.name.as_ref().map(|(n, _)| n.as_str())).collect();
    let mut listed: BTreeSet<&str> = BTreeSet::new();
    for g in groups {
        for (alarm_name, loc) in &g.alarms {
            listed.insert(alarm_name);
            if !names.contains(&alarm_name.as_str()) {
                unknown(cx, loc, "alarm", alarm_name, &names, "alarms");
                continue;
            }
            let pair: Vec<&str> = g
                .target_groups
                .iter()
                .flat_map(|(tgs, _)| tgs.iter().map(|(n, _)| n.as_str()))
                .collect();
            let watched =
                alarms.iter().find(|a| a.name.as_ref().is_some_and(|(n, _)| n == alarm_name));
            if let Some(AlarmMeta {
                dimension: Some((AlarmDimension::TargetGroup(tg), dim_loc)),
                ..
            }) = watched
                && pair.contains(&tg.as_str())
            {
                let group = g.name.as_ref().map_or("?", |(n, _)| n.as_str());
                cx.note(
                    dim_loc.pos,
                    &dim_loc.path,
                    format!(
                        "`{tg}` serves blue and green in turns in deployment group `{group}`, so \
                         this alarm watches the new version in one deployment and the old one in \
                         the next; `target_group: green` follows the new version"
                    ),
                );
            }
        }
    }
    listed
}
