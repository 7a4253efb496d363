//! The counter-to-datapoint rule: baselines, resets, restarts of the source, normal increases.

use super::at;
use crate::counter::{Continuity, MAX_READING_GAP, Reading, continuity, follows, increase};

/// A reading of a source that started at `started` seconds, taken at `taken` seconds.
fn reading(started: f64, taken: f64) -> Reading {
    Reading { source_started: at(started), taken: at(taken) }
}

#[test]
fn the_first_reading_after_the_reader_starts_is_a_baseline_not_a_datapoint() {
    // A load balancer up for an hour that has served 10,000 requests: a control plane that has
    // just started must not record them as one second's requests.
    let first = continuity(None, reading(-3600.0, 0.0));
    assert_eq!(first, Continuity::Baseline);
    assert_eq!(increase(first, None, 10_000), None);
    // The next reading of the same source is a difference again.
    let next = continuity(Some(reading(-3600.0, 0.0)), reading(-3600.0, 0.25));
    assert_eq!(next, Continuity::Continues);
    assert_eq!(increase(next, Some(10_000), 10_007), Some(7));
}

#[test]
fn a_normal_increase_is_the_difference_including_zero() {
    let c = continuity(Some(reading(0.0, 10.0)), reading(0.0, 10.25));
    assert_eq!(c, Continuity::Continues);
    assert_eq!(increase(c, Some(40), 45), Some(5));
    // No new requests is a datapoint of 0, not missing data.
    assert_eq!(increase(c, Some(45), 45), Some(0));
}

#[test]
fn a_counter_that_went_down_was_reset_and_its_new_value_is_the_increase() {
    // A target group removed and added again between two readings restarted from zero.
    let c = continuity(Some(reading(0.0, 10.0)), reading(0.0, 10.25));
    assert_eq!(increase(c, Some(500), 3), Some(3));
    // A target group created since the previous reading counts from zero too.
    assert_eq!(increase(c, None, 4), Some(4));
}

#[test]
fn a_source_restarted_since_the_previous_reading_counts_its_whole_value() {
    // The load balancer restarted at 10.5 s, after the reading at 10 s: all it counted is new.
    let c = continuity(Some(reading(0.0, 10.0)), reading(10.5, 11.0));
    assert_eq!(c, Continuity::SourceRestarted);
    assert_eq!(increase(c, Some(9_000), 12), Some(12));
    assert_eq!(increase(c, None, 12), Some(12));
}

#[test]
fn a_source_that_cannot_be_placed_after_the_previous_reading_is_a_baseline() {
    // Another process, started before the previous reading: some of its counts may be old.
    let c = continuity(Some(reading(5.0, 10.0)), reading(2.0, 10.25));
    assert_eq!(c, Continuity::Baseline);
    assert_eq!(increase(c, Some(100), 90), None);
}

#[test]
fn a_gap_longer_than_the_limit_or_a_reading_back_in_time_is_a_baseline() {
    let gap = MAX_READING_GAP.as_secs_f64();
    let within = continuity(Some(reading(0.0, 10.0)), reading(0.0, 10.0 + gap));
    assert_eq!(within, Continuity::Continues);
    // A control plane stalled (or stopped) for longer would put all those seconds into one.
    let stalled = continuity(Some(reading(0.0, 10.0)), reading(0.0, 10.0 + gap + 0.001));
    assert_eq!(stalled, Continuity::Baseline);
    assert_eq!(increase(stalled, Some(100), 5_100), None);
    // Even a restarted source: what it counted during a long gap cannot be placed in time.
    let restarted_long_ago = continuity(Some(reading(0.0, 10.0)), reading(11.0, 60.0));
    assert_eq!(restarted_long_ago, Continuity::Baseline);
    let backwards = continuity(Some(reading(0.0, 10.0)), reading(0.0, 9.0));
    assert_eq!(backwards, Continuity::Baseline);
}

#[test]
fn a_reading_follows_the_previous_one_within_the_gap_limit_only() {
    let gap = MAX_READING_GAP.as_secs_f64();
    assert!(!follows(None, at(0.0)), "the first reading is a baseline");
    assert!(follows(Some(at(0.0)), at(0.25)));
    assert!(follows(Some(at(0.0)), at(gap)));
    assert!(!follows(Some(at(0.0)), at(gap + 0.001)));
    assert!(!follows(Some(at(1.0)), at(0.5)), "back in time");
}
