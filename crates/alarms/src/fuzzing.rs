//! The property the `metric_filter` fuzz target checks (`fuzz/fuzz_targets/metric_filter.rs`),
//! here so that this crate's tests replay the committed corpus (`fuzz/corpus/metric_filter/`)
//! without cargo-fuzz.
//!
//! An input is a pattern (its first line) and log lines (the rest). The pattern either parses,
//! and then keeps its text through its serialized form and matches every line the same way each
//! time without panicking (also as a metric filter whose value is a JSON field), or it is refused
//! with a message and a column inside the pattern (one past its end for "something is missing").

use crate::filter::{FilterPattern, MetricFilter, MetricFilterSpec};
use crate::metric::MetricId;

/// Panics when a property does not hold.
pub fn metric_filter(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (pattern, lines) = text.split_once('\n').unwrap_or((&text, ""));
    let parsed = match FilterPattern::parse(pattern) {
        Ok(parsed) => parsed,
        Err(e) => {
            let columns = pattern.chars().count() + 1;
            assert!(!e.message.is_empty(), "{pattern:?}: an error without a message");
            assert!(
                (1..=columns).contains(&e.column),
                "{pattern:?}: error at column {} of a pattern of {columns} columns: {e}",
                e.column
            );
            return;
        }
    };
    assert_eq!(parsed.as_str(), pattern);
    let stored = serde_json::to_string(&parsed).expect("a pattern serializes");
    let reloaded: FilterPattern = serde_json::from_str(&stored)
        .unwrap_or_else(|e| panic!("{pattern:?}: its serialized form is refused: {e}"));
    assert_eq!(reloaded, parsed, "{pattern:?}: the serialized form loads back differently");
    let filter = MetricFilter::new(MetricFilterSpec {
        name: "fuzz".to_string(),
        pattern: pattern.to_string(),
        metric: MetricId::new("Fuzz"),
        metric_value: "$.value".to_string(),
        default_value: None,
    })
    .unwrap_or_else(|e| panic!("{pattern:?}: parses as a pattern, refused as a filter: {e}"));
    for line in lines.split('\n') {
        let matched = parsed.matches(line);
        assert_eq!(parsed.matches(line), matched, "{pattern:?} on {line:?}: not deterministic");
        if filter.value_of(line).is_some() {
            assert!(matched, "{pattern:?} on {line:?}: a value from a line that does not match");
        }
    }
}
