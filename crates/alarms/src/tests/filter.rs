//! Metric filters: the pattern language, malformed patterns, values per period, and an alarm fed
//! by a filter.

use expect_test::expect;

use super::at;
use crate::{
    Alarm, AlarmSpec, AlarmState, ComparisonOperator, FilterPattern, LowSampleCountPercentile,
    MetricFilter, MetricFilterSpec, MetricId, MetricStore, Period, Statistic, TreatMissingData,
};

fn matches(pattern: &str, line: &str) -> bool {
    FilterPattern::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}")).matches(line)
}

#[test]
fn term_patterns() {
    let table = [
        ("Error", "GET /x Error: boom", true),
        ("Error", "GET /x error: boom", false),
        ("Error", "ErrorCode=7", true),
        ("ERROR ARGUMENTS", "ERROR: bad ARGUMENTS given", true),
        ("ERROR ARGUMENTS", "ERROR only", false),
        ("?ERROR ?WARN", "WARN disk almost full", true),
        ("?ERROR ?WARN", "INFO all good", false),
        ("ERROR -Exiting", "ERROR retrying", true),
        ("ERROR -Exiting", "ERROR Exiting now", false),
        ("-DEBUG", "INFO started", true),
        ("-DEBUG", "DEBUG noise", false),
        ("ERROR ?db ?cache", "ERROR db timeout", true),
        ("ERROR ?db ?cache", "ERROR web timeout", false),
        ("ERROR ?db ?cache", "WARN db timeout", false),
        ("\"Connection refused\"", "dial tcp: Connection refused", true),
        ("\"Connection refused\"", "Connection was refused", false),
        ("-\"health check\" GET", "GET /health check", false),
        ("-\"health check\" GET", "GET /api", true),
        (r#""say \"hi\"""#, r#"he said: say "hi""#, true),
        ("?\"status: 500\" ?\"status: 503\"", "status: 503 in 2ms", true),
        ("", "anything at all", true),
        ("   ", "", true),
        ("\" \"", "x", true),
        ("\"\"", "x", true),
        ("日本 -語", "日本", true),
    ];
    for (pattern, line, want) in table {
        assert_eq!(matches(pattern, line), want, "{pattern:?} on {line:?}");
    }
}

#[test]
fn json_selectors() {
    let table = [
        (r#"{ $.level = "error" }"#, r#"{"level":"error","msg":"x"}"#, true),
        (r#"{ $.level = "error" }"#, r#"{"level":"ERROR"}"#, false),
        (r#"{ $.level = "error" }"#, r#"level=error"#, false),
        (r#"{ $.level = "error" }"#, r#"{"level":5}"#, false),
        (r#"{ $.level = error }"#, r#"{"level":"error"}"#, true),
        (r#"{ $.level != "info" }"#, r#"{"level":"warn"}"#, true),
        (r#"{ $.level != "info" }"#, r#"{"level":"info"}"#, false),
        (r#"{ $.level != "info" }"#, r#"{"msg":"no level"}"#, false),
        ("{ $.status >= 500 }", r#"{"status":503}"#, true),
        ("{ $.status >= 500 }", r#"{"status":404}"#, false),
        ("{ $.status >= 500 }", r#"{"status":"503"}"#, false),
        ("{ $.status = 500 }", r#"{"status":500.0}"#, true),
        ("{ $.status != 500 }", r#"{"status":200}"#, true),
        ("{ $.latency < 0.25 }", r#"{"latency":0.1}"#, true),
        ("{ $.latency <= -1.5e1 }", r#"{"latency":-15}"#, true),
        ("{ $.latency > 0.25 }", r#"{"latency":0.25}"#, false),
        (
            r#"{ $.latency > 0.25 && $.path = "/api/*" }"#,
            r#"{"latency":0.3,"path":"/api/users"}"#,
            true,
        ),
        (
            r#"{ $.latency > 0.25 && $.path = "/api/*" }"#,
            r#"{"latency":0.3,"path":"/health"}"#,
            false,
        ),
        (r#"{ $.level = "error" || $.status >= 500 }"#, r#"{"level":"info","status":502}"#, true),
        ("{ $.a = 1 || $.b = 1 && $.c = 1 }", r#"{"a":1}"#, true),
        ("{ ($.a = 1 || $.b = 1) && $.c = 1 }", r#"{"a":1}"#, false),
        (r#"{ ($.a = 1 || $.b = 1) && $.c != "x" }"#, r#"{"b":1,"c":"y"}"#, true),
        ("{ $.req.host = *.example.com }", r#"{"req":{"host":"api.example.com"}}"#, true),
        ("{ $.req.host = *.example.com }", r#"{"req":{"host":"example.org"}}"#, false),
        ("{ $.ip = 10.0.* }", r#"{"ip":"10.0.3.4"}"#, true),
        (r#"{ $.msg = "*time*out*" }"#, r#"{"msg":"request time exceeded"}"#, false),
        (r#"{ $.msg = "*time*out*" }"#, r#"{"msg":"timeout: upstream timed out"}"#, true),
        (r#"{ $.items[1] = "b" }"#, r#"{"items":["a","b"]}"#, true),
        (r#"{ $.items[5] = "b" }"#, r#"{"items":["a","b"]}"#, false),
        (r#"{ $.a.b[0].c = 1 }"#, r#"{"a":{"b":[{"c":1}]}}"#, true),
        ("{ $.ok IS TRUE }", r#"{"ok":true}"#, true),
        ("{ $.ok IS TRUE }", r#"{"ok":"true"}"#, false),
        ("{ $.ok IS FALSE }", r#"{"ok":false}"#, true),
        ("{ $.v IS NULL }", r#"{"v":null}"#, true),
        ("{ $.v IS NULL }", r#"{}"#, false),
        ("{ $.trace EXISTS }", r#"{"trace":"abc"}"#, true),
        ("{ $.trace NOT EXISTS }", r#"{"trace":"abc"}"#, false),
        ("{ $.trace NOT EXISTS }", r#"{}"#, true),
        ("{$.status>=500}", r#"  {"status":500}  "#, true),
    ];
    for (pattern, line, want) in table {
        assert_eq!(matches(pattern, line), want, "{pattern} on {line}");
    }
}

#[test]
fn malformed_patterns_say_where_and_what_to_fix() {
    let patterns = [
        "\"unterminated",
        "ERROR ?",
        "ERROR - Exiting",
        "foo\"bar",
        "\"a\"b",
        "ERROR \"\"",
        "[ip, user, status=5*]",
        r#"{ $.level = "error" "#,
        r#"{ level = "error" }"#,
        "{ $.status => 500 }",
        r#"{ $.status > "x" }"#,
        "{ $.a = 1 & $.b = 2 }",
        "{ $.a == 1 }",
        "{ $.a ! 1 }",
        "{ $. = 1 }",
        "{ $ = 1 }",
        "{ $.a[x] = 1 }",
        "{ $.a[0 = 1 }",
        "{ $.a = true }",
        "{ ($.a = 1 }",
        "{ $.a = 1 } extra",
        "{ $.a }",
        "{ $.a IS MAYBE }",
        "{ $.a NOT THERE }",
        "{ $.a = }",
        "{ $.a = 1 $.b = 2 }",
    ];
    let mut out = String::new();
    for p in patterns {
        let err = FilterPattern::parse(p).unwrap_err();
        out.push_str(&format!("{p:<26} {err}\n"));
    }
    let deep = format!("{{ {}$.a = 1{} }}", "(".repeat(40), ")".repeat(40));
    out.push_str(&format!("40 parentheses: {}\n", FilterPattern::parse(&deep).unwrap_err()));
    let long = "x".repeat(1025);
    out.push_str(&format!("1025 characters: {}\n", FilterPattern::parse(&long).unwrap_err()));
    expect![[r#"
        "unterminated              column 1: this quote is never closed; end the phrase with `"`
        ERROR ?                    column 7: `?` must be directly followed by a term, e.g. `?ERROR`
        ERROR - Exiting            column 7: `-` must be directly followed by a term, e.g. `-Exiting`
        foo"bar                    column 4: a quote may only start a term; put the whole term in quotes, e.g. `"status: 500"`
        "a"b                       column 4: put a space after the closing quote of a phrase
        ERROR ""                   column 7: empty phrase `""`; remove it or put text between the quotes
        [ip, user, status=5*]      column 1: space-delimited patterns (`[ip, user, ..., status=5*]`) are not supported; use terms (`ERROR -Exiting`) or a JSON selector (`{ $.status >= 500 }`)
        { $.level = "error"        column 21: expected `&&`, `||` or the closing `}`, found the end of the pattern
        { level = "error" }        column 3: expected a selector like `$.level`, found `level`
        { $.status => 500 }        column 13: expected a value (a number or a string) after `=`, found `>`
        { $.status > "x" }         column 14: `>` compares numbers, but `"x"` is a string
        { $.a = 1 & $.b = 2 }      column 11: `&` is not an operator; write `&&`
        { $.a == 1 }               column 7: write `=` to compare, not `==`
        { $.a ! 1 }                column 7: `!` is not an operator; write `!=` or `NOT EXISTS`
        { $. = 1 }                 column 4: selector `$.` has an empty field name after `.`
        { $ = 1 }                  column 3: select a field, like `$.level`; `$` alone is the whole line
        { $.a[x] = 1 }             column 6: selector `$.a[x]`: an array index is a number, like `[0]`
        { $.a[0 = 1 }              column 6: selector `$.a[0` opens `[` without `]`
        { $.a = true }             column 9: to test for true, write `IS TRUE` instead of a comparison
        { ($.a = 1 }               column 12: expected `)` to close the `(` at column 3, found `}`
        { $.a = 1 } extra          column 13: unexpected `extra` after the closing `}`; put the whole condition inside the braces
        { $.a }                    column 7: expected a comparison (=, !=, <, <=, >, >=), IS TRUE/FALSE/NULL, EXISTS or NOT EXISTS after the selector, found `}`
        { $.a IS MAYBE }           column 10: expected TRUE, FALSE or NULL after IS, found `MAYBE`
        { $.a NOT THERE }          column 11: expected EXISTS after NOT, found `THERE`
        { $.a = }                  column 9: expected a value (a number or a string) after `=`, found `}`
        { $.a = 1 $.b = 2 }        column 11: expected `&&`, `||` or the closing `}`, found `$.b`
        40 parentheses: column 35: parentheses nest deeper than 32
        1025 characters: column 1025: the pattern has 1025 characters; shorten it to at most 1024
    "#]]
    .assert_eq(&out);
}

fn error_filter(default_value: Option<f64>) -> MetricFilterSpec {
    MetricFilterSpec {
        name: "web-errors".to_string(),
        pattern: "Error".to_string(),
        metric: MetricId::new("ErrorCount").with("service", "web"),
        metric_value: "1".to_string(),
        default_value,
    }
}

/// `(period start, SampleCount, Sum)` of every 1 s period with data in the first 10 s.
fn periods(store: &MetricStore, id: &MetricId) -> Vec<(f64, u64, f64)> {
    let Some(series) = store.series(id) else {
        return Vec::new();
    };
    series
        .stats(Period::ONE_SECOND, at(0.0), at(10.0))
        .unwrap()
        .iter()
        .map(|p| ((p.start.as_millis() - super::T0) as f64 / 1000.0, p.sample_count(), p.sum()))
        .collect()
}

#[test]
fn a_filter_counts_per_period_with_its_default_value() {
    let mut store = MetricStore::default();
    let mut filter = MetricFilter::new(error_filter(Some(0.0))).unwrap();
    let lines = [
        (0.1, "GET / 500 Error: boom"),
        (0.2, "GET / 200"),
        (0.9, "Error again"),
        (1.5, "GET / 200"), // a period with logs and no match: default 0
        // 2 s: no logs at all: nothing
        (3.2, "Error once more"),
        (3.1, "late line, counted in the open period"),
    ];
    let recorded: Vec<Option<f64>> =
        lines.iter().map(|&(t, line)| filter.ingest(&mut store, at(t), line).unwrap()).collect();
    assert_eq!(recorded, [Some(1.0), None, Some(1.0), None, Some(1.0), None]);
    let id = filter.spec().metric.clone();
    assert_eq!(periods(&store, &id), [(0.0, 2, 2.0), (1.0, 1, 0.0), (3.0, 1, 1.0)]);
    // Flushing within the open period changes nothing; after it, a matched period adds nothing.
    filter.flush(&mut store, at(3.9)).unwrap();
    filter.flush(&mut store, at(4.0)).unwrap();
    filter.ingest(&mut store, at(5.5), "quiet").unwrap();
    filter.flush(&mut store, at(6.0)).unwrap();
    assert_eq!(periods(&store, &id), [(0.0, 2, 2.0), (1.0, 1, 0.0), (3.0, 1, 1.0), (5.0, 1, 0.0)]);

    // Without a default value, periods without a match are missing data.
    let mut store = MetricStore::default();
    let mut filter = MetricFilter::new(error_filter(None)).unwrap();
    for (t, line) in lines {
        filter.ingest(&mut store, at(t), line).unwrap();
    }
    filter.flush(&mut store, at(10.0)).unwrap();
    assert_eq!(periods(&store, &id), [(0.0, 2, 2.0), (3.0, 1, 1.0)]);
}

#[test]
fn a_filter_can_take_its_value_from_a_json_field() {
    let mut store = MetricStore::default();
    let spec = MetricFilterSpec {
        name: "slow-5xx".to_string(),
        pattern: "{ $.status >= 500 }".to_string(),
        metric: MetricId::new("ErrorLatency").with("service", "web"),
        metric_value: "$.latency".to_string(),
        default_value: None,
    };
    let mut filter = MetricFilter::new(spec).unwrap();
    for (t, line) in [
        (0.1, r#"{"status":503,"latency":0.9}"#),
        (0.2, r#"{"status":200,"latency":0.1}"#),
        (0.3, r#"{"status":500,"latency":"slow"}"#),
        (0.4, r#"{"status":502}"#),
        (0.5, "not json: status 500"),
        (0.6, r#"{"status":500,"latency":1.5}"#),
    ] {
        filter.ingest(&mut store, at(t), line).unwrap();
    }
    let stats = store
        .series(&filter.spec().metric)
        .unwrap()
        .stats(Period::ONE_SECOND, at(0.0), at(1.0))
        .unwrap();
    assert_eq!((stats[0].sample_count(), stats[0].sum(), stats[0].maximum()), (2, 2.4, 1.5));
    assert_eq!(filter.value_of(r#"{"status":500,"latency":2}"#), Some(2.0));
}

#[test]
fn filter_specs_are_validated() {
    let mut out = Vec::new();
    let mut bad = error_filter(None);
    bad.metric_value = "one".to_string();
    out.push(MetricFilter::new(bad).unwrap_err().to_string());
    let mut bad = error_filter(Some(f64::INFINITY));
    bad.pattern = "Error".to_string();
    out.push(MetricFilter::new(bad).unwrap_err().to_string());
    let mut bad = error_filter(None);
    bad.pattern = "{ $.level = }".to_string();
    out.push(MetricFilter::new(bad).unwrap_err().to_string());
    let mut bad = error_filter(None);
    bad.metric_value = "$.a[".to_string();
    out.push(MetricFilter::new(bad).unwrap_err().to_string());
    let mut bad = error_filter(None);
    bad.name = "x".repeat(513);
    out.push(MetricFilter::new(bad).unwrap_err().to_string());
    expect![[r#"
        metric_value: `one` is neither a number (like `1`) nor a JSON selector (like `$.latency`)
        default_value: inf is not a finite number
        pattern: column 13: expected a value (a number or a string) after `=`, found `}`
        metric_value: selector `$.a[` opens `[` without `]`
        name: filter name has 513 characters; shorten it to at most 512"#]]
    .assert_eq(&out.join("\n"));
    let spec: MetricFilterSpec =
        serde_json::from_str(r#"{"name":"e","pattern":"Error","metric":{"name":"ErrorCount"}}"#)
            .unwrap();
    assert_eq!((spec.metric_value.as_str(), spec.default_value), ("1", None));
    let pattern: FilterPattern = serde_json::from_str(r#""?ERROR ?WARN""#).unwrap();
    assert_eq!(serde_json::to_string(&pattern).unwrap(), r#""?ERROR ?WARN""#);
    assert!(serde_json::from_str::<FilterPattern>(r#""\"open""#).is_err());
}

#[test]
fn long_lines_are_matched_on_their_first_256_kib() {
    let mut line = "x".repeat(300 * 1024);
    line.push_str("Error");
    assert!(!matches("Error", &line));
    let line = format!("{}é{}", "x".repeat(256 * 1024 - 1), "Error");
    assert!(!matches("Error", &line), "cut at a character boundary without panicking");
}

#[test]
fn an_error_log_filter_drives_an_alarm() {
    // The seed's alarm: `Error` lines, Sum >= 1 over 1 s, 1 of 1, notBreaching.
    let mut store = MetricStore::default();
    let mut filter = MetricFilter::new(error_filter(Some(0.0))).unwrap();
    let spec = AlarmSpec {
        name: "web-error-logs".to_string(),
        metric: filter.spec().metric.clone(),
        statistic: Statistic::Sum,
        period: Period::ONE_SECOND,
        evaluation_periods: 1,
        datapoints_to_alarm: None,
        threshold: 1.0,
        comparison_operator: ComparisonOperator::GreaterThanOrEqualToThreshold,
        treat_missing_data: TreatMissingData::NotBreaching,
        evaluate_low_sample_count_percentile: LowSampleCountPercentile::Evaluate,
    };
    let mut alarm = Alarm::new(spec, at(0.0)).unwrap();
    filter.ingest(&mut store, at(0.2), "listening on :8080").unwrap();
    filter.flush(&mut store, at(1.0)).unwrap();
    assert_eq!(alarm.evaluate(&store, at(1.0)).unwrap().state, AlarmState::Ok);
    filter.ingest(&mut store, at(1.3), "Error: database unreachable").unwrap();
    filter.ingest(&mut store, at(1.4), "Error: database unreachable").unwrap();
    filter.flush(&mut store, at(2.0)).unwrap();
    let e = alarm.evaluate(&store, at(2.0)).unwrap();
    assert_eq!(e.state, AlarmState::Alarm);
    expect![[r#"Threshold Crossed: 1 out of the last 1 datapoint [2.0 (12:00:01)] was greater than or equal to the threshold (1.0) (minimum 1 datapoint for OK -> ALARM transition)."#]]
        .assert_eq(&e.reason);
    assert_eq!(e.data.window[0].sample_count, 2);
}
