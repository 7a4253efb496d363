//! Alarms: AWS's reference tables, M of N, every treat-missing-data mode, the premature-alarm guard,
//! low-sample percentiles, reasons, history, validation.

use std::fmt::Write as _;
use std::time::Duration;

use expect_test::{Expect, expect};
use model::Timestamp;

use super::at;
use crate::alarm::HISTORY_MAX;
use crate::{
    Alarm, AlarmSpec, AlarmState, ComparisonOperator, Decision, EvalError, Evaluation,
    LowSampleCountPercentile, MetricId, MetricSeries, MetricStore, Period, SeriesConfig, Statistic,
    TreatMissingData, Treatment,
};

use AlarmState::{Alarm as ALARM, InsufficientData as INSUFFICIENT, Ok as OK};

fn metric() -> MetricId {
    MetricId::new("HTTPCode_Target_5XX_Count").with("target_group", "web-green")
}

/// `Sum >= 5` over 1 s periods, N of them, M to alarm.
fn spec(n: u32, m: u32, mode: TreatMissingData) -> AlarmSpec {
    AlarmSpec {
        name: "web-green-5xx".to_string(),
        metric: metric(),
        statistic: Statistic::Sum,
        period: Period::ONE_SECOND,
        evaluation_periods: n,
        datapoints_to_alarm: Some(m),
        threshold: 5.0,
        comparison_operator: ComparisonOperator::GreaterThanOrEqualToThreshold,
        treat_missing_data: mode,
        evaluate_low_sample_count_percentile: LowSampleCountPercentile::Evaluate,
    }
}

/// Records one period per word from 12:00:00 (`0`: 0, not breaching; `X`: 10, breaching; `-`: no
/// data) and evaluates once, when the last period has ended, from `initial`.
fn run(spec: &AlarmSpec, pattern: &str, initial: AlarmState) -> Evaluation {
    let words: Vec<&str> = pattern.split_whitespace().collect();
    let mut store = MetricStore::default();
    for (i, word) in words.iter().enumerate() {
        let value = match *word {
            "0" => 0.0,
            "X" => 10.0,
            "-" => continue,
            other => panic!("unknown datapoint {other}"),
        };
        store.record(&spec.metric, at(i as f64 + 0.5), value).unwrap();
    }
    let mut alarm = Alarm::new(spec.clone(), at(0.0)).unwrap();
    alarm.set_state(initial, "test setup", at(0.0));
    alarm.evaluate(&store, at(words.len() as f64)).unwrap()
}

/// The state a pattern leads to in a mode: `kept` when it depends on the state before.
fn outcome(spec: &AlarmSpec, pattern: &str) -> String {
    let from_ok = run(spec, pattern, OK).state;
    let from_alarm = run(spec, pattern, ALARM).state;
    if from_ok == from_alarm { from_ok.to_string() } else { "kept".to_string() }
}

#[test]
fn aws_reference_tables_and_every_treat_missing_data_mode() {
    let rows = [
        // §4.2, N = M = 3, evaluation range 5.
        ("0 - X - X", 3, 3),
        ("- - - - 0", 3, 3),
        ("- - - - -", 3, 3),
        ("0 X X - X", 3, 3),
        ("- - X - -", 3, 3),
        // §4.2, N = 3, M = 2.
        ("0 - X - -", 3, 2),
        // The premature-alarm guard, and a breach that has aged.
        ("- - - - X", 3, 3),
        ("- - - X X", 3, 3),
        ("X - - - -", 3, 3),
        // M of N with N = 5 (range 7): breaches need not be consecutive.
        ("0 0 X 0 X 0 X", 5, 3),
        ("0 0 X 0 X 0 0", 5, 3),
    ];
    let modes = [
        TreatMissingData::Missing,
        TreatMissingData::Ignore,
        TreatMissingData::Breaching,
        TreatMissingData::NotBreaching,
    ];
    let mut out = String::new();
    for (pattern, n, m) in rows {
        assert_eq!(
            pattern.split_whitespace().count() as u32,
            spec(n, m, modes[0]).evaluation_range()
        );
        write!(out, "{pattern:<15} N={n} M={m}:").unwrap();
        for mode in modes {
            write!(out, " {}={}", mode.as_str(), outcome(&spec(n, m, mode), pattern)).unwrap();
        }
        out.push('\n');
    }
    expect![[r#"
        0 - X - X       N=3 M=3: missing=OK ignore=OK breaching=OK notBreaching=OK
        - - - - 0       N=3 M=3: missing=OK ignore=OK breaching=OK notBreaching=OK
        - - - - -       N=3 M=3: missing=INSUFFICIENT_DATA ignore=kept breaching=ALARM notBreaching=OK
        0 X X - X       N=3 M=3: missing=ALARM ignore=ALARM breaching=ALARM notBreaching=ALARM
        - - X - -       N=3 M=3: missing=ALARM ignore=kept breaching=ALARM notBreaching=OK
        0 - X - -       N=3 M=2: missing=OK ignore=OK breaching=ALARM notBreaching=OK
        - - - - X       N=3 M=3: missing=kept ignore=kept breaching=ALARM notBreaching=OK
        - - - X X       N=3 M=3: missing=kept ignore=kept breaching=ALARM notBreaching=OK
        X - - - -       N=3 M=3: missing=ALARM ignore=kept breaching=ALARM notBreaching=OK
        0 0 X 0 X 0 X   N=5 M=3: missing=ALARM ignore=ALARM breaching=ALARM notBreaching=ALARM
        0 0 X 0 X 0 0   N=5 M=3: missing=OK ignore=OK breaching=OK notBreaching=OK
    "#]]
    .assert_eq(&out);
}

#[test]
fn the_window_is_the_newest_n_real_datapoints_when_the_range_has_enough() {
    // `X X 0 - 0`: three real points, so the oldest X is out of the window and missing data does
    // not matter, even `breaching`.
    let e = run(&spec(3, 2, TreatMissingData::Breaching), "X X 0 - 0", OK);
    assert_eq!(e.state, OK);
    let window: Vec<_> = e.data.window.iter().map(|p| (p.start, p.value)).collect();
    assert_eq!(window, [(at(1.0), Some(10.0)), (at(2.0), Some(0.0)), (at(4.0), Some(0.0))]);
    assert_eq!(e.data.recent_datapoints.len(), 4);
    assert_eq!((e.data.range_start, e.data.range_end), (at(0.0), at(5.0)));
}

#[test]
fn gaps_are_filled_with_as_few_datapoints_as_possible_and_the_newest_periods() {
    let e = run(&spec(3, 2, TreatMissingData::Breaching), "0 - X - -", OK);
    let window: Vec<_> = e.data.window.iter().map(|p| (p.start, p.value, p.treated_as)).collect();
    assert_eq!(
        window,
        [
            (at(0.0), Some(0.0), Treatment::NotBreaching),
            (at(2.0), Some(10.0), Treatment::Breaching),
            (at(4.0), None, Treatment::Breaching),
        ]
    );
    assert_eq!((e.state, e.data.breaching, e.data.decision), (ALARM, 2, Decision::Threshold));
}

/// An alarm evaluated after every period of a timeline (one word per 1 s period, as in `run`);
/// prints the state after each period and every transition with its reason.
fn timeline(spec: AlarmSpec, pattern: &str, expect: Expect) {
    let mut store = MetricStore::default();
    let mut alarm = Alarm::new(spec, at(0.0)).unwrap();
    let mut states = Vec::new();
    for (i, word) in pattern.split_whitespace().enumerate() {
        let value = match word {
            "-" => None,
            "X" => Some(10.0),
            other => Some(other.parse::<f64>().unwrap()),
        };
        if let Some(v) = value {
            store.record(&alarm.spec().metric.clone(), at(i as f64 + 0.5), v).unwrap();
        }
        let now = alarm.next_evaluation(at(i as f64 + 0.5));
        assert_eq!(now, at(i as f64 + 1.0));
        let e = alarm.evaluate(&store, now).unwrap();
        states.push(match e.state {
            OK => "OK",
            ALARM => "ALARM",
            INSUFFICIENT => "INSUF",
        });
    }
    let mut out = format!("{}\n", states.join(" "));
    for t in alarm.history() {
        writeln!(out, "{} {} -> {}: {}", crate::alarm::clock(t.time), t.from, t.to, t.reason)
            .unwrap();
    }
    expect.assert_eq(&out);
}

#[test]
fn an_alarm_that_flaps_once_inside_m_of_n_does_not_go_to_alarm() {
    // 2 of 3: one bad second among good ones never alarms; two within three seconds do.
    timeline(
        spec(3, 2, TreatMissingData::NotBreaching),
        "0 0 X 0 0 X 0 0 X 0 X 0",
        expect![[r#"
            OK OK OK OK OK OK OK OK OK OK ALARM OK
            12:00:01 INSUFFICIENT_DATA -> OK: Threshold Crossed: 3 out of the last 3 datapoints [missing (11:59:58), missing (11:59:59), 0.0 (12:00:00)] were not greater than or equal to the threshold (5.0) (2 missing datapoints treated as [NonBreaching]) (minimum 2 datapoints for INSUFFICIENT_DATA -> OK transition).
            12:00:11 OK -> ALARM: Threshold Crossed: 2 out of the last 3 datapoints [10.0 (12:00:08), 10.0 (12:00:10)] were greater than or equal to the threshold (5.0) (minimum 2 datapoints for OK -> ALARM transition).
            12:00:12 ALARM -> OK: Threshold Crossed: 2 out of the last 3 datapoints [0.0 (12:00:09), 0.0 (12:00:11)] were not greater than or equal to the threshold (5.0) (minimum 2 datapoints for ALARM -> OK transition).
        "#]],
    );
}

#[test]
fn transitions_and_history_carry_the_datapoints() {
    timeline(
        spec(3, 2, TreatMissingData::Missing),
        "1 7 5 0 0",
        expect![[r#"
            OK OK ALARM ALARM OK
            12:00:01 INSUFFICIENT_DATA -> OK: Threshold Crossed: 1 out of the last 1 datapoint [1.0 (12:00:00)] was not greater than or equal to the threshold (5.0) (2 missing datapoints treated as [Missing]) (0 breaching, fewer than the 2 needed for ALARM).
            12:00:03 OK -> ALARM: Threshold Crossed: 2 out of the last 3 datapoints [7.0 (12:00:01), 5.0 (12:00:02)] were greater than or equal to the threshold (5.0) (minimum 2 datapoints for OK -> ALARM transition).
            12:00:05 ALARM -> OK: Threshold Crossed: 2 out of the last 3 datapoints [0.0 (12:00:03), 0.0 (12:00:04)] were not greater than or equal to the threshold (5.0) (minimum 2 datapoints for ALARM -> OK transition).
        "#]],
    );
    // The machine-readable side of the OK -> ALARM transition.
    let mut store = MetricStore::default();
    for (i, v) in [1.0, 7.0, 5.0].into_iter().enumerate() {
        store.record(&metric(), at(i as f64), v).unwrap();
    }
    let mut alarm = Alarm::new(spec(3, 2, TreatMissingData::Missing), at(0.0)).unwrap();
    let e = alarm.evaluate(&store, at(3.0)).unwrap();
    assert!(e.changed());
    let data = alarm.reason_data().unwrap();
    assert_eq!(data, &e.data);
    let window: Vec<_> =
        data.window.iter().map(|p| (p.value, p.sample_count, p.treated_as)).collect();
    assert_eq!(
        window,
        [
            (Some(1.0), 1, Treatment::NotBreaching),
            (Some(7.0), 1, Treatment::Breaching),
            (Some(5.0), 1, Treatment::Breaching),
        ]
    );
    assert_eq!((data.breaching, data.datapoints_to_alarm, data.threshold), (2, 2, 5.0));
    assert_eq!(
        (alarm.state(), alarm.state_since(), alarm.reason()),
        (ALARM, at(3.0), e.reason.as_str())
    );
    let json = serde_json::to_value(data).unwrap();
    assert_eq!(
        json["window"][1],
        serde_json::json!({"start": 1_699_963_201_000u64, "value": 7.0, "sample_count": 1, "treated_as": "breaching"})
    );
    assert_eq!(json["comparison_operator"], "GreaterThanOrEqualToThreshold");
    assert_eq!(json["treat_missing_data"], "missing");
    assert_eq!(json["statistic"], "Sum");
}

#[test]
fn the_premature_alarm_guard_waits_until_the_breach_is_m_periods_old() {
    // N = M = 3, missing: a lone breach does not alarm at once, but does once three periods old
    // with nothing newer; then it ages out of the range.
    timeline(
        spec(3, 3, TreatMissingData::Missing),
        "- - X - - - - -",
        expect![[r#"
            INSUF INSUF INSUF INSUF ALARM ALARM ALARM INSUF
            12:00:05 INSUFFICIENT_DATA -> ALARM: Threshold Crossed: the only datapoint received in the last 3 periods [10.0 (12:00:02)] was greater than or equal to the threshold (5.0) and the oldest is 3 periods old, at least the 3 datapoints to alarm; the other periods had no data, treated as [Missing] (minimum 3 datapoints for INSUFFICIENT_DATA -> ALARM transition).
            12:00:08 ALARM -> INSUFFICIENT_DATA: Insufficient Data: no datapoints were received for 5 periods and 3 missing datapoints were treated as [Missing].
        "#]],
    );
    let e = run(&spec(3, 3, TreatMissingData::Missing), "- - - - X", OK);
    assert_eq!((e.state, e.data.decision), (OK, Decision::PrematureAlarmGuard));
    expect!["the only datapoint received in the last 1 period [10.0 (12:00:04)] was greater than or equal to the threshold (5.0), fewer than the 3 datapoints to alarm, and the oldest is only 1 period old: the state stays OK until more data arrives or it is 3 periods old (premature-alarm guard)."]
        .assert_eq(&e.reason);
}

#[test]
fn reasons_name_how_missing_data_was_treated() {
    let mut out = String::new();
    for mode in [
        TreatMissingData::Missing,
        TreatMissingData::Ignore,
        TreatMissingData::Breaching,
        TreatMissingData::NotBreaching,
    ] {
        for pattern in ["- - - - -", "- - - - X", "- - X - -"] {
            let e = run(&spec(3, 3, mode), pattern, OK);
            writeln!(
                out,
                "{} {pattern}: {} {:?}: {}",
                mode.as_str(),
                e.state,
                e.data.decision,
                e.reason
            )
            .unwrap();
        }
    }
    expect![[r#"
        missing - - - - -: INSUFFICIENT_DATA NoData: Insufficient Data: no datapoints were received for 5 periods and 3 missing datapoints were treated as [Missing].
        missing - - - - X: OK PrematureAlarmGuard: the only datapoint received in the last 1 period [10.0 (12:00:04)] was greater than or equal to the threshold (5.0), fewer than the 3 datapoints to alarm, and the oldest is only 1 period old: the state stays OK until more data arrives or it is 3 periods old (premature-alarm guard).
        missing - - X - -: ALARM PrematureAlarmRule: Threshold Crossed: the only datapoint received in the last 3 periods [10.0 (12:00:02)] was greater than or equal to the threshold (5.0) and the oldest is 3 periods old, at least the 3 datapoints to alarm; the other periods had no data, treated as [Missing] (minimum 3 datapoints for OK -> ALARM transition).
        ignore - - - - -: OK NoData: no datapoints were received for 5 periods and missing data is treated as [Ignore]: the state stays OK.
        ignore - - - - X: OK PrematureAlarmGuard: the only datapoint received in the last 1 period [10.0 (12:00:04)] was greater than or equal to the threshold (5.0), fewer than the 3 datapoints to alarm, and the oldest is only 1 period old: the state stays OK until more data arrives or it is 3 periods old (premature-alarm guard).
        ignore - - X - -: OK PrematureAlarmRule: the only datapoint received in the last 3 periods [10.0 (12:00:02)] was greater than or equal to the threshold (5.0) and the oldest is 3 periods old, at least the 3 datapoints to alarm; the other periods had no data and missing data is treated as [Ignore]: the state stays OK.
        breaching - - - - -: ALARM NoData: Threshold Crossed: no datapoints were received for 5 periods and 3 missing datapoints were treated as [Breaching].
        breaching - - - - X: ALARM Threshold: Threshold Crossed: 3 out of the last 3 datapoints [missing (12:00:02), missing (12:00:03), 10.0 (12:00:04)] were greater than or equal to the threshold (5.0) (2 missing datapoints treated as [Breaching]) (minimum 3 datapoints for OK -> ALARM transition).
        breaching - - X - -: ALARM Threshold: Threshold Crossed: 3 out of the last 3 datapoints [10.0 (12:00:02), missing (12:00:03), missing (12:00:04)] were greater than or equal to the threshold (5.0) (2 missing datapoints treated as [Breaching]) (minimum 3 datapoints for OK -> ALARM transition).
        notBreaching - - - - -: OK NoData: Threshold Crossed: no datapoints were received for 5 periods and 3 missing datapoints were treated as [NonBreaching].
        notBreaching - - - - X: OK Threshold: Threshold Crossed: 2 out of the last 3 datapoints [missing (12:00:02), missing (12:00:03)] were not greater than or equal to the threshold (5.0) (2 missing datapoints treated as [NonBreaching]) (minimum 1 datapoint for OK).
        notBreaching - - X - -: OK Threshold: Threshold Crossed: 2 out of the last 3 datapoints [missing (12:00:03), missing (12:00:04)] were not greater than or equal to the threshold (5.0) (2 missing datapoints treated as [NonBreaching]) (minimum 1 datapoint for OK).
    "#]]
    .assert_eq(&out);
}

#[test]
fn every_statistic_and_operator_drives_an_alarm() {
    // One period holding 1, 2, 3, 4, 100: each statistic's exact value sits on the threshold.
    let mut store = MetricStore::default();
    let id = MetricId::new("TargetResponseTime").with("target_group", "web-green");
    for v in [3.0, 100.0, 1.0, 4.0, 2.0] {
        store.record(&id, at(0.25), v).unwrap();
    }
    let cases = [
        ("SampleCount", 5.0),
        ("Sum", 110.0),
        ("Average", 22.0),
        ("Minimum", 1.0),
        ("Maximum", 100.0),
        ("p50", 3.0),
        ("p80", 4.0),
        ("p80.01", 100.0),
        ("p99", 100.0),
    ];
    use ComparisonOperator::*;
    let operators = [
        (GreaterThanOrEqualToThreshold, ALARM),
        (GreaterThanThreshold, OK),
        (LessThanThreshold, OK),
        (LessThanOrEqualToThreshold, ALARM),
    ];
    for (statistic, value) in cases {
        for (op, want) in operators {
            let spec = AlarmSpec {
                metric: id.clone(),
                statistic: statistic.parse().unwrap(),
                threshold: value,
                comparison_operator: op,
                ..spec(1, 1, TreatMissingData::Missing)
            };
            let mut alarm = Alarm::new(spec, at(0.0)).unwrap();
            let e = alarm.evaluate(&store, at(1.0)).unwrap();
            assert_eq!(e.state, want, "{statistic} {op} {value}: {}", e.reason);
            assert_eq!(e.data.window[0].value, Some(value), "{statistic}");
        }
    }
}

#[test]
fn low_sample_percentiles_keep_the_state_only_when_told_to_ignore() {
    let id = MetricId::new("TargetResponseTime").with("target_group", "web-green");
    let p99 = |low: LowSampleCountPercentile| AlarmSpec {
        metric: id.clone(),
        statistic: "p99".parse().unwrap(),
        threshold: 1.0,
        comparison_operator: ComparisonOperator::GreaterThanThreshold,
        evaluate_low_sample_count_percentile: low,
        ..spec(1, 1, TreatMissingData::Missing)
    };
    let mut store = MetricStore::default();
    // Second 0: 10 slow requests (p99 needs 1000 samples). Second 1: 1000 of them.
    store.record_n(&id, at(0.5), 2.5, 10).unwrap();
    store.record_n(&id, at(1.5), 2.5, 1000).unwrap();

    let mut evaluate = Alarm::new(p99(LowSampleCountPercentile::Evaluate), at(0.0)).unwrap();
    assert_eq!(evaluate.evaluate(&store, at(1.0)).unwrap().state, ALARM);

    let mut ignore = Alarm::new(p99(LowSampleCountPercentile::Ignore), at(0.0)).unwrap();
    let e = ignore.evaluate(&store, at(1.0)).unwrap();
    assert_eq!((e.state, e.data.decision), (INSUFFICIENT, Decision::LowSampleCount));
    expect![[r#"the newest datapoint [2.5 (12:00:00)] comes from 10 samples, fewer than the 1000 that p99 needs (evaluateLowSampleCountPercentile is ignore): the state stays INSUFFICIENT_DATA."#]]
        .assert_eq(&e.reason);
    let e = ignore.evaluate(&store, at(2.0)).unwrap();
    assert_eq!((e.state, e.data.decision), (ALARM, Decision::Threshold), "{}", e.reason);
}

#[test]
fn spec_validation_names_every_problem() {
    let mut bad = spec(3, 4, TreatMissingData::Missing);
    bad.name = String::new();
    bad.threshold = f64::NAN;
    bad.evaluate_low_sample_count_percentile = LowSampleCountPercentile::Ignore;
    let mut out: Vec<String> = bad.validate().unwrap_err().iter().map(|e| e.to_string()).collect();
    let mut long = spec(1441, 1, TreatMissingData::Missing);
    long.period = Period::ONE_MINUTE;
    out.extend(long.validate().unwrap_err().iter().map(|e| e.to_string()));
    let mut zero = spec(0, 0, TreatMissingData::Missing);
    zero.metric.dimensions = (0..31).map(|i| (format!("d{i}"), "v".to_string())).collect();
    zero.name = "a\u{7}b".to_string();
    out.extend(zero.validate().unwrap_err().iter().map(|e| e.to_string()));
    expect![[r#"
        name: alarm name is empty; give it 1 to 255 characters
        datapoints_to_alarm: 4 datapoints to alarm out of 3 evaluation periods; M must be at most N (raise evaluation_periods or lower datapoints_to_alarm)
        threshold: NaN is not a finite number
        evaluate_low_sample_count_percentile: `ignore` applies only to percentile statistics (pNN) and the statistic is Sum; remove the setting or use a percentile
        evaluation_periods: 1441 periods of 1m span 24h1m, more than one day; evaluation_periods × period must be at most 86400 seconds
        name: alarm name `a\u{7}b` contains the control character '\u{7}'; remove it
        metric: metric HTTPCode_Target_5XX_Count has 31 dimensions; at most 30 are allowed
        evaluation_periods: must be at least 1
        datapoints_to_alarm: must be at least 1"#]]
    .assert_eq(&out.join("\n"));
    assert!(spec(1440, 1, TreatMissingData::Missing).validate().is_ok());
    let mut default_m = spec(3, 3, TreatMissingData::Missing);
    default_m.datapoints_to_alarm = None;
    assert_eq!(default_m.datapoints_to_alarm(), 3);
    assert!(Alarm::new(bad, at(0.0)).is_err());
}

#[test]
fn an_alarm_needs_a_store_that_can_serve_it() {
    let small =
        MetricStore::new(SeriesConfig::new(Period::ONE_SECOND, Duration::from_secs(10)).unwrap());
    let mut alarm = Alarm::new(spec(10, 1, TreatMissingData::Missing), at(0.0)).unwrap();
    let err = alarm.evaluate(&small, at(20.0)).unwrap_err();
    assert!(matches!(err, EvalError::RetentionTooShort { .. }));
    assert_eq!(
        err.to_string(),
        "alarm web-green-5xx looks back 13s (13 periods of 1s) but the metric store keeps only \
         10s; raise the store's retention or shorten the alarm's period or evaluation periods"
    );
    let coarse =
        MetricStore::new(SeriesConfig::new(Period::ONE_MINUTE, Duration::from_secs(3600)).unwrap());
    let err = Alarm::new(spec(1, 1, TreatMissingData::Missing), at(0.0))
        .unwrap()
        .evaluate(&coarse, at(20.0))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "alarm web-green-5xx: period 1s is not a multiple of the series resolution 1m; use a multiple of 1m"
    );
    assert_eq!(alarm.state(), INSUFFICIENT, "a failed evaluation changes nothing");
    let other = MetricSeries::new(MetricId::new("RequestCount"), SeriesConfig::default());
    let err = alarm.evaluate_series(&other, at(20.0)).unwrap_err();
    assert!(err.to_string().contains("was given the series of RequestCount"), "{err}");
}

#[test]
fn set_state_holds_until_the_next_evaluation_and_history_is_bounded() {
    let mut store = MetricStore::default();
    let mut alarm = Alarm::new(spec(1, 1, TreatMissingData::NotBreaching), at(0.0)).unwrap();
    alarm.set_state(ALARM, "drill:\nforced", at(0.0));
    assert_eq!((alarm.state(), alarm.reason()), (ALARM, "drill: forced"));
    assert_eq!(alarm.evaluate(&store, at(1.0)).unwrap().state, OK);
    // Flap every second for much longer than the history keeps.
    for i in 1..(3 * HISTORY_MAX) {
        store.record(&metric(), at(i as f64), if i % 2 == 0 { 10.0 } else { 0.0 }).unwrap();
        alarm.evaluate(&store, at(i as f64 + 1.0)).unwrap();
    }
    assert_eq!(alarm.history().len(), HISTORY_MAX);
    let last = alarm.history().next_back().unwrap();
    assert_eq!((last.time, last.to), (at((3 * HISTORY_MAX) as f64), alarm.state()));
    assert!(alarm.history().all(|t| t.data.is_some()), "the drill has been pushed out");
}

#[test]
fn evaluation_time_never_goes_backwards_and_a_missing_series_is_missing_data() {
    let store = MetricStore::default();
    let mut alarm = Alarm::new(spec(1, 1, TreatMissingData::Breaching), at(0.0)).unwrap();
    let e = alarm.evaluate(&store, at(10.0)).unwrap();
    assert_eq!((e.state, e.data.decision), (ALARM, Decision::NoData));
    let earlier = alarm.evaluate(&store, at(5.0)).unwrap();
    assert_eq!(earlier.time, at(10.0));
    assert_eq!(alarm.next_evaluation(at(3.0)), at(11.0));
    assert_eq!(alarm.next_evaluation(Timestamp::from_millis(u64::from(u32::MAX))), at(11.0));
}

#[test]
fn an_alarm_round_trips_through_json() {
    let mut store = MetricStore::default();
    store.record(&metric(), at(0.0), 9.0).unwrap();
    let mut alarm = Alarm::new(spec(1, 1, TreatMissingData::NotBreaching), at(0.0)).unwrap();
    alarm.evaluate(&store, at(1.0)).unwrap();
    let json = serde_json::to_string(&alarm).unwrap();
    let back: Alarm = serde_json::from_str(&json).unwrap();
    assert_eq!(back, alarm);
    assert_eq!(back.state(), ALARM);
    let spec_json = serde_json::to_value(alarm.spec()).unwrap();
    assert_eq!(spec_json["period"], 1);
    assert_eq!(spec_json["treat_missing_data"], "notBreaching");
    assert_eq!(spec_json["evaluate_low_sample_count_percentile"], "evaluate");
    assert_eq!(serde_json::to_value(ALARM).unwrap(), "ALARM");
    assert_eq!(serde_json::to_value(INSUFFICIENT).unwrap(), "INSUFFICIENT_DATA");
}

#[test]
fn update_spec_keeps_state_and_history() {
    let mut store = MetricStore::default();
    store.record(&metric(), at(0.0), 9.0).unwrap();
    let mut alarm = Alarm::new(spec(1, 1, TreatMissingData::Missing), at(0.0)).unwrap();
    alarm.evaluate(&store, at(1.0)).unwrap();
    assert_eq!(alarm.state(), ALARM);
    let mut higher = alarm.spec().clone();
    higher.threshold = 50.0;
    alarm.update_spec(higher).unwrap();
    assert_eq!((alarm.state(), alarm.history().len()), (ALARM, 1));
    assert_eq!(alarm.evaluate(&store, at(1.5)).unwrap().state, OK);
    let mut invalid = alarm.spec().clone();
    invalid.evaluation_periods = 0;
    assert!(alarm.update_spec(invalid).is_err());
    assert_eq!(alarm.spec().evaluation_periods, 1);
}

#[test]
fn the_range_starts_after_a_time_once_its_oldest_period_began_after_it() {
    // N = 1 → R = 3 periods of 1 s; started at 12:00:00.5: the first whole period after it is
    // 12:00:01, so at 12:00:04 the range is 12:00:01–12:00:04.
    let s = spec(1, 1, TreatMissingData::Breaching);
    assert_eq!(s.range_starts_after(at(0.5)), at(4.0));
    // Conservatively, the period in which the reader started is never taken as whole.
    assert_eq!(s.range_starts_after(at(0.0)), at(4.0));
    // N = 6 → R = 8.
    assert_eq!(spec(6, 3, TreatMissingData::Breaching).range_starts_after(at(0.5)), at(9.0));
}
