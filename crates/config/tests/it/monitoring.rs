//! cutover.yaml's `alarms` and `metric_filters`: seed 003's setup, each field's rules (the
//! `alarms` crate's, placed at the field), and the references between alarms, filters, target
//! groups, services and deployment groups.

use alarms::{
    AlarmSpec, ComparisonOperator, LowSampleCountPercentile, MetricFilter, MetricFilterSpec,
    MetricId, Period, Statistic, TreatMissingData,
};
use config::{AlarmDimension, AutoRollback, parse_cutover_file};
use expect_test::expect;

use crate::check;

const SEED_003: &str = include_str!("../data/examples/003-rollback-on-alarm.yaml");
const DOCS: &str = include_str!("../../../../docs/cutover-yaml.md");

#[test]
fn seed_003_example_parses_to_what_it_says() {
    check(
        "cutover.yaml",
        SEED_003,
        expect![[r#"
        ok
    "#]],
    );
    let file = parse_cutover_file("cutover.yaml", SEED_003).unwrap().value;
    let http = file.alarm("http-error-alarm").unwrap();
    assert_eq!(http.dimension, AlarmDimension::Green);
    assert_eq!(
        http.spec,
        AlarmSpec {
            name: "http-error-alarm".to_string(),
            metric: MetricId::new("HTTPCode_Target_5XX_Count"),
            statistic: Statistic::Sum,
            period: Period::from_secs(10).unwrap(),
            evaluation_periods: 2,
            datapoints_to_alarm: None,
            threshold: 10.0,
            comparison_operator: ComparisonOperator::GreaterThanOrEqualToThreshold,
            treat_missing_data: TreatMissingData::NotBreaching,
            evaluate_low_sample_count_percentile: LowSampleCountPercentile::Evaluate,
        }
    );
    assert_eq!(http.spec_for(None), None, "green is only known in a deployment");
    assert_eq!(
        http.spec_for(Some("web-green")).unwrap().metric,
        MetricId::new("HTTPCode_Target_5XX_Count").with("target_group", "web-green")
    );
    let logs = file.alarm("application-error-alarm").unwrap();
    assert_eq!(logs.dimension, AlarmDimension::Service("web".to_string()));
    assert_eq!(logs.spec.metric, MetricId::new("ApplicationErrorCount").with("service", "web"));
    assert_eq!(logs.spec.comparison_operator, ComparisonOperator::GreaterThanOrEqualToThreshold);
    assert_eq!(logs.spec_for(Some("web-green")).as_ref(), Some(&logs.spec));
    let filter = file.metric_filter("application-log-errors").unwrap();
    assert_eq!(filter.service, "web");
    assert_eq!(
        filter.spec,
        MetricFilterSpec {
            name: "application-log-errors".to_string(),
            pattern: "Error".to_string(),
            metric: MetricId::new("ApplicationErrorCount").with("service", "web"),
            metric_value: "1".to_string(),
            default_value: Some(0.0),
        }
    );
    let built = MetricFilter::new(filter.spec.clone()).unwrap();
    assert_eq!(built.value_of("TypeError: x is undefined"), Some(1.0));
    assert_eq!(built.value_of("all good"), None);
    let group = &file.deployment_groups[0];
    assert_eq!(group.alarms, ["http-error-alarm", "application-error-alarm"]);
    assert_eq!(
        group.auto_rollback,
        AutoRollback { on_failure: true, on_alarm: true, on_stop_request: false }
    );
}

#[test]
fn the_docs_show_the_seed_003_example_verbatim() {
    let body: String =
        SEED_003.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    assert!(
        DOCS.contains(body.trim()),
        "docs/cutover-yaml.md must embed crates/config/tests/data/examples/003-rollback-on-alarm.yaml"
    );
}

/// Seed 003 with its `alarms:` section replaced by `alarms` (the group's list still names the two
/// alarms of the example).
fn with_alarms(alarms: &str) -> String {
    let start = SEED_003.find("alarms:\n").unwrap();
    let end = SEED_003.find("deployment_groups:").unwrap();
    format!("{}alarms:\n{alarms}\n{}", &SEED_003[..start], &SEED_003[end..])
}

#[test]
fn alarm_fields_follow_cloudwatch() {
    let text = with_alarms(
        "  - { name: http-error-alarm, metric: RequestCount, target_group: web-blue, statistic: sum, period: 500ms, evaluation_periods: 0, threshold: '10', comparison: '=>' }
  - { name: application-error-alarm, metric: RequestCount, target_group: web-blue, statistic: p99.999, period: 2d, evaluation_periods: 3, datapoints_to_alarm: 0, threshold: 1, comparison: GreaterThanOrEqual, treat_missing_data: not_breaching }
  - { name: m-of-n, metric: RequestCount, target_group: web-blue, statistic: Sum, period: 1m, evaluation_periods: 3, datapoints_to_alarm: 4, threshold: 1, comparison: '<' }
  - { name: too-long, metric: TargetResponseTime, target_group: web-blue, statistic: Average, period: 1h, evaluation_periods: 25, threshold: 1, comparison: '>', evaluate_low_sample_count_percentile: ignore }
  - { name: no-threshold, metric: RequestCount, target_group: web-blue, statistic: Sum, period: 0, evaluation_periods: 1, comparison: '<=', treat_missing_data: sometimes }
  - { name: extra, metric: RequestCount, target_group: web-blue, statistic: Sum, period: 10, evaluation_periods: 1, threshold: .inf, comparison: LessThanThreshold, threshhold: 1 }",
    );
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
            cutover.yaml:35:88: alarms[0].statistic: unknown statistic `sum`; use SampleCount, Sum, Average, Minimum, Maximum or a percentile such as p50, p99 or p99.9
            cutover.yaml:35:101: alarms[0].period: period 500ms is not a whole number of seconds; alarms count in whole seconds (1s, 10s, 1m…)
            cutover.yaml:35:128: alarms[0].evaluation_periods: 0 is out of range: evaluation_periods must be 1 to 86400
            cutover.yaml:35:142: alarms[0].threshold: expected number, found string "10"; write the number without quotes: 10
            cutover.yaml:35:160: alarms[0].comparison: "=>" is not a comparison; use `>=` (GreaterThanOrEqualToThreshold), `>` (GreaterThanThreshold), `<` (LessThanThreshold) or `<=` (LessThanOrEqualToThreshold); did you mean `>=`?
            cutover.yaml:36:95: alarms[1].statistic: percentile `p99.999` has more than two decimals; round it, e.g. p99.99
            cutover.yaml:36:112: alarms[1].period: period 172800s is out of range; use a whole number of seconds from 1 to 86400 (CloudWatch's usual periods are 10, 20, 30 or a multiple of 60)
            cutover.yaml:36:160: alarms[1].datapoints_to_alarm: 0 is out of range: datapoints_to_alarm must be 1 to 86400
            cutover.yaml:36:189: alarms[1].comparison: "GreaterThanOrEqual" is not a comparison; use `>=` (GreaterThanOrEqualToThreshold), `>` (GreaterThanThreshold), `<` (LessThanThreshold) or `<=` (LessThanOrEqualToThreshold); did you mean `GreaterThanOrEqualToThreshold`?
            cutover.yaml:36:229: alarms[1].treat_missing_data: unknown treat-missing-data `not_breaching`; use missing, notBreaching, breaching or ignore; did you mean `notBreaching`?
            cutover.yaml:37:139: alarms[2].datapoints_to_alarm: 4 datapoints to alarm out of 3 evaluation periods; M must be at most N (raise evaluation_periods or lower datapoints_to_alarm)
            cutover.yaml:38:127: alarms[3].evaluation_periods: 25 periods of 1h span 25h, more than one day; evaluation_periods × period must be at most 86400 seconds
            cutover.yaml:38:200: alarms[3].evaluate_low_sample_count_percentile: `ignore` applies only to percentile statistics (pNN) and the statistic is Average; remove the setting or use a percentile
            cutover.yaml:39:5: alarms[4].threshold: missing required field `threshold`; add the value to compare with, like `threshold: 5`
            cutover.yaml:39:97: alarms[4].period: period 0s is out of range; use a whole number of seconds from 1 to 86400 (CloudWatch's usual periods are 10, 20, 30 or a multiple of 60)
            cutover.yaml:39:161: alarms[4].treat_missing_data: unknown treat-missing-data `sometimes`; use missing, notBreaching, breaching or ignore
            cutover.yaml:40:128: alarms[5].threshold: inf is not a finite number
            cutover.yaml:40:165: alarms[5].threshhold: unknown field `threshhold`; did you mean `threshold`?
        "#]],
    );
}

#[test]
fn an_alarm_watches_one_series_of_a_known_metric() {
    let text = with_alarms(
        "  - { name: http-error-alarm, metric: HTTPCode_Target_5XX_Count, service: web, statistic: Sum, period: 10s, evaluation_periods: 1, threshold: 1, comparison: '>=' }
  - { name: application-error-alarm, metric: ApplicationErrorCount, target_group: green, statistic: Sum, period: 10s, evaluation_periods: 1, threshold: 1, comparison: '>=' }
  - { name: typo, metric: HTTPCode_Target_5xx_Count, target_group: web-blue, statistic: Sum, period: 10s, evaluation_periods: 1, threshold: 1, comparison: '>=' }
  - { name: nowhere, metric: Latency, target_group: web-blue, statistic: Sum, period: 10s, evaluation_periods: 1, threshold: 1, comparison: '>=' }
  - { name: other-service, metric: ApplicationErrorCount, service: api, statistic: Sum, period: 10s, evaluation_periods: 1, threshold: 1, comparison: '>=' }
  - { name: unknown-tg, metric: RequestCount, target_group: web-gren, statistic: Sum, period: 10s, evaluation_periods: 1, threshold: 1, comparison: '>=' }
  - { name: both, metric: RequestCount, target_group: web-blue, service: web, statistic: Sum, period: 10s, evaluation_periods: 1, threshold: 1, comparison: '>=' }
  - { name: neither, metric: RequestCount, statistic: Sum, period: 10s, evaluation_periods: 1, threshold: 1, comparison: '>=' }
  - { name: http-error-alarm, metric: RequestCount, target_group: web-blue, statistic: Sum, period: 10s, evaluation_periods: 1, threshold: 1, comparison: '>=' }",
    );
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
            cutover.yaml:35:75: alarms[0].service: `HTTPCode_Target_5XX_Count` is a load-balancer metric, kept per target group; write `target_group: NAME` (or `green`) instead of `service`
            cutover.yaml:36:83: alarms[1].target_group: `ApplicationErrorCount` comes from a metric filter and is kept per service; write `service: web` instead of `target_group`
            cutover.yaml:37:27: alarms[2].metric: no metric `HTTPCode_Target_5xx_Count`: it is neither a load-balancer metric nor produced by a metric filter; did you mean `HTTPCode_Target_5XX_Count`?
            cutover.yaml:38:30: alarms[3].metric: no metric `Latency`: it is neither a load-balancer metric nor produced by a metric filter; metric filters produce: ApplicationErrorCount
            cutover.yaml:39:68: alarms[4].service: no metric filter produces `ApplicationErrorCount` for service `api`; it is produced for: web
            cutover.yaml:40:61: alarms[5].target_group: no target group named `web-gren`; did you mean `web-green`?
            cutover.yaml:41:74: alarms[6].service: an alarm watches one series: `target_group` for a load-balancer metric or `service` for a metric filter's metric, not both; remove one
            cutover.yaml:42:5: alarms[7].target_group: missing the metric's series: add `target_group: NAME` (or `green`) for a load-balancer metric, or `service: NAME` for a metric filter's metric
            cutover.yaml:43:13: alarms[8].name: duplicate alarm name `http-error-alarm` (first on line 35); names must be unique
        "#]],
    );
}

#[test]
fn deployment_groups_name_declared_alarms() {
    let text = SEED_003
        .replace(
            "alarms: [http-error-alarm, application-error-alarm]",
            "alarms: [http-eror-alarm, application-error-alarm, web-blue-5xx, dropped]\n    ignore_poll_alarm_failure: yes",
        )
        .replace(
            "deployment_groups:",
            "  - { name: web-blue-5xx, metric: HTTPCode_Target_5XX_Count, target_group: web-blue, statistic: Sum, period: 10s, evaluation_periods: 1, threshold: 1, comparison: '>=' }
  - { name: unwatched, metric: HTTPCode_Target_5XX_Count, target_group: green, statistic: Sum, period: 10s, evaluation_periods: 1, threshold: 1, comparison: '>=' }

deployment_groups:",
        );
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
            cutover.yaml:65:14: deployment_groups[0].alarms[0]: no alarm named `http-eror-alarm`; did you mean `http-error-alarm`?
            cutover.yaml:65:70: deployment_groups[0].alarms[3]: no alarm named `dropped`; declared alarms: application-error-alarm, http-error-alarm, unwatched, web-blue-5xx
            cutover.yaml:66:32: deployment_groups[0].ignore_poll_alarm_failure: expected boolean, found string "yes"; write true or false
        "#]],
    );
    let fixed = text
        .replace("ignore_poll_alarm_failure: yes", "ignore_poll_alarm_failure: true")
        .replace("http-eror-alarm", "http-error-alarm")
        .replace(", dropped]", "]");
    check(
        "cutover.yaml",
        &fixed,
        expect![[r#"
            note: cutover.yaml:54:76: alarms[2].target_group: `web-blue` serves blue and green in turns in deployment group `deployment-group-node-app-prod`, so this alarm watches the new version in one deployment and the old one in the next; `target_group: green` follows the new version
            note: cutover.yaml:55:73: alarms[3].target_group: no deployment group lists alarm `unwatched`, and `green` only exists in a deployment; add it to a group's `alarms`
        "#]],
    );
    let file = parse_cutover_file("cutover.yaml", &fixed).unwrap().value;
    assert!(file.deployment_groups[0].ignore_poll_alarm_failure);
}

#[test]
fn green_is_the_deployment_s_green_even_with_a_target_group_named_green() {
    let text = SEED_003
        .replace("name: web-green", "name: green")
        .replace("[web-blue, web-green]", "[web-blue, green]");
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
            note: cutover.yaml:37:19: alarms[0].target_group: `green` means the green target group of the deployment being watched, not the target group named `green`
        "#]],
    );
    let file = parse_cutover_file("cutover.yaml", &text).unwrap().value;
    assert_eq!(file.alarm("http-error-alarm").unwrap().dimension, AlarmDimension::Green);
}

#[test]
fn an_unquoted_comparison_is_a_yaml_error_with_advice() {
    check(
        "cutover.yaml",
        &SEED_003.replace("comparison: \">=\"              #", "comparison: >=              #"),
        expect![[r#"
            cutover.yaml:51:17: alarms[1].comparison: invalid YAML: while scanning a block scalar, did not find expected comment or line break; a value starting with `>` or `|` begins a block of text: quote it, like `comparison: ">="`
        "#]],
    );
}

/// Seed 003 with its `metric_filters:` section replaced by `filters`.
fn with_filters(filters: &str) -> String {
    let start = SEED_003.find("metric_filters:\n").unwrap();
    let end = SEED_003.find("alarms:\n").unwrap();
    format!("{}metric_filters:\n{filters}\n{}", &SEED_003[..start], &SEED_003[end..])
}

#[test]
fn pattern_errors_point_inside_the_pattern() {
    let text = with_filters(
        r#"  - { name: application-log-errors, service: web, metric: ApplicationErrorCount, pattern: ERROR -"health check }
  - { name: double, service: web, metric: A, pattern: "{ $.status >= \"500\" }" }
  - { name: single, service: web, metric: B, pattern: '{ $.level = ''error'' && }' }
  - name: plain
    service: web
    metric: C
    pattern: ERROR ? WARN
  - name: block
    service: web
    metric: D
    pattern: |
      [ip, user]
  - { name: json-file-style, service: web, metric: E, pattern: "\u0045RROR \"unclosed" }"#,
    );
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
            cutover.yaml:27:98: metric_filters[0].pattern: this quote is never closed; end the phrase with `"`
            cutover.yaml:28:70: metric_filters[1].pattern: `>=` compares numbers, but `"500"` is a string
            cutover.yaml:29:81: metric_filters[2].pattern: expected a selector like `$.level`, found `}`
            cutover.yaml:33:20: metric_filters[3].pattern: `?` must be directly followed by a term, e.g. `?ERROR`
            cutover.yaml:38:7: metric_filters[4].pattern: space-delimited patterns (`[ip, user, ..., status=5*]`) are not supported; use terms (`ERROR -Exiting`) or a JSON selector (`{ $.status >= 500 }`)
            cutover.yaml:39:76: metric_filters[5].pattern: this quote is never closed; end the phrase with `"`
        "#]],
    );
}

#[test]
fn metric_filter_fields() {
    let text = with_filters(
        r#"  - { name: application-log-errors, service: web, metric: ApplicationErrorCount, pattern: Error, value: '$.latency', default_value: 0 }
  - { name: lb-name, service: web, metric: RequestCount, pattern: Error }
  - { name: bad-value, service: web, metric: Other, pattern: Error, value: many }
  - { name: bad-selector, service: web, metric: Other2, pattern: Error, value: '$.' }
  - { name: bad-default, service: web, metric: Other3, pattern: Error, default_value: zero }
  - { name: no-service, service: wbe, metric: 'Has Space', pattern: Error }
  - { name: application-log-errors, metric: Other4, pattern: Error }"#,
    );
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
            cutover.yaml:28:44: metric_filters[1].metric: `RequestCount` is a load-balancer metric; give the filter's metric its own name, like `ApplicationErrorCount`
            cutover.yaml:29:76: metric_filters[2].value: `many` is neither a number (like `1`) nor a JSON selector (like `$.latency`)
            cutover.yaml:30:80: metric_filters[3].value: selector `$.` has an empty field name after `.`
            cutover.yaml:31:87: metric_filters[4].default_value: expected number, found string "zero"
            cutover.yaml:32:34: metric_filters[5].service: no service named `wbe`; did you mean `web`?
            cutover.yaml:32:47: metric_filters[5].metric: "Has Space" is not a valid metric name: use 1 to 255 letters, digits, `.`, `_` and `-`
            cutover.yaml:33:5: metric_filters[6].service: missing required field `service`; name the service whose task logs the filter reads
            cutover.yaml:33:13: metric_filters[6].name: duplicate metric filter name `application-log-errors` (first on line 27); names must be unique
        "#]],
    );
    let text = with_filters(
        "  - { name: application-log-errors, service: web, metric: ApplicationErrorCount, pattern: '{ $.latency > 1 }', value: '$.latency' }",
    );
    let file = parse_cutover_file("cutover.yaml", &text).unwrap().value;
    let filter = MetricFilter::new(file.metric_filters[0].spec.clone()).unwrap();
    assert_eq!(filter.value_of(r#"{"latency": 2.5}"#), Some(2.5));
    assert_eq!(file.metric_filters[0].spec.default_value, None);
}

#[test]
fn a_canary_judge_alarm_watches_its_verdicts_on_green_with_its_defaults() {
    let text = with_alarms(
        "  - { name: http-error-alarm, kind: canary-judge, metric: error-rate, tolerance: 1% }
  - { name: application-error-alarm, kind: canary-judge, metric: latency, source: mirrored, tolerance: 10%, confidence: 0.999, min_samples: 200, period: 5s, evaluation_periods: 4 }",
    );
    let file = parse_cutover_file("cutover.yaml", &text).unwrap().value;
    let errors = file.alarm("http-error-alarm").unwrap();
    assert_eq!(errors.dimension, AlarmDimension::Green);
    assert_eq!(
        errors.judge,
        Some(alarms::judge::JudgeCriteria {
            metric: alarms::judge::JudgedMetric::ErrorRate,
            source: alarms::judge::JudgedSource::Served,
            tolerance: 0.01,
            confidence: 0.99,
            min_samples: 50,
        })
    );
    assert_eq!(
        errors.spec,
        AlarmSpec {
            name: "http-error-alarm".to_string(),
            metric: MetricId::new("CanaryJudge").with("judge", "http-error-alarm"),
            statistic: Statistic::Maximum,
            period: Period::from_secs(10).unwrap(),
            evaluation_periods: 3,
            datapoints_to_alarm: Some(2),
            threshold: 1.0,
            comparison_operator: ComparisonOperator::GreaterThanOrEqualToThreshold,
            treat_missing_data: TreatMissingData::Ignore,
            evaluate_low_sample_count_percentile: LowSampleCountPercentile::Evaluate,
        }
    );
    let latency = file.alarm("application-error-alarm").unwrap();
    let criteria = latency.judge.unwrap();
    assert_eq!((criteria.tolerance, criteria.confidence, criteria.min_samples), (0.1, 0.999, 200));
    assert_eq!(criteria.source, alarms::judge::JudgedSource::Mirrored);
    assert_eq!(latency.spec.period, Period::from_secs(5).unwrap());
    assert_eq!(
        (latency.spec.evaluation_periods, latency.spec.datapoints_to_alarm()),
        (4, 4),
        "M is N when only N is given, as CloudWatch's"
    );
}

#[test]
fn canary_judge_fields_are_checked_at_their_place() {
    let text = with_alarms(
        "  - { name: http-error-alarm, kind: canary-judge, metric: latencies, tolerance: 10, source: mirored }
  - { name: application-error-alarm, kind: canary-judge, metric: error-rate, tolerance: 120%, confidence: 1.5, min_samples: 3, evaluation_periods: 2, datapoints_to_alarm: 3, threshold: 4 }
  - { name: third, kind: canary_judge, metric: error-rate, tolerance: 1% }",
    );
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
            cutover.yaml:35:59: alarms[0].metric: a canary judge compares `error-rate` or `latency`, not "latencies"; did you mean `latency`?
            cutover.yaml:35:81: alarms[0].tolerance: integer 10 is not a percentage; write it as a percentage, like `1%` or `10%`
            cutover.yaml:35:93: alarms[0].source: a canary judge compares green's `served` requests (the default) or its answers to a shadow phase's `mirrored` copies, not "mirored"; did you mean `mirrored`?
            cutover.yaml:36:89: alarms[1].tolerance: 120 percentage points is not a tolerance for an error rate; give 0 to less than 100, like `tolerance: 1%`
            cutover.yaml:36:107: alarms[1].confidence: 1.5 is not a confidence the judge can promise; give 0.5 to 0.9999, like `confidence: 0.99`
            cutover.yaml:36:125: alarms[1].min_samples: 3 requests per version; give 10 to 1000000000: with fewer the tests' normal approximations do not hold
            cutover.yaml:36:172: alarms[1].datapoints_to_alarm: 3 datapoints to alarm out of 2 evaluation periods; M must be at most N (raise evaluation_periods or lower datapoints_to_alarm)
            cutover.yaml:36:175: alarms[1].threshold: unknown field `threshold`; expected one of: name, kind, metric, source, tolerance, confidence, min_samples, period, evaluation_periods, datapoints_to_alarm
            cutover.yaml:37:26: alarms[2].kind: unknown alarm kind "canary_judge"; use `metric` (CloudWatch's metric alarm, the default) or `canary-judge` (green compared with blue); did you mean `canary-judge`?
        "#]],
    );
}
