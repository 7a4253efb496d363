//! Cumulative counters (the load balancer's, which count like Prometheus counters from the start
//! of their process) turned into increases that can be recorded as datapoints.
//!
//! A reader subtracts each reading from the previous one. The rule has to say what happens when
//! there is nothing trustworthy to subtract, because the naive answer ("no previous value: the
//! value is the increase") is wrong exactly when it matters: after the reader restarts, a
//! counter's value is everything the source counted in its whole lifetime, and recording it as
//! one datapoint puts hours of requests (and of 5xx) into one second, which an alarm reads as a
//! burst. So:
//!
//! - **Baseline.** The first reading after the reader starts, and any reading that follows a gap
//!   longer than [`MAX_READING_GAP`] (the reader stalled), is only a baseline for the next one:
//!   it is never a datapoint. The time not covered is missing data, which alarms treat with their
//!   `treat_missing_data` rule, as CloudWatch does when a metric stops arriving.
//! - **Source restarted** (a new `started_at`, later than the previous reading): its counters
//!   began at zero after the previous reading, so each whole value is the increase. This is
//!   Prometheus' counter-reset rule, and it is exact here because the gap is bounded: all of it
//!   was counted since the previous reading.
//! - **Same source.** Subtract. A counter that went down was reset (its target group left the
//!   table and came back); as above, its new value is the increase since it restarted from zero,
//!   which happened after the previous reading. A counter the previous reading did not have
//!   (a target group created since) likewise counts from zero.
//!
//! A source that restarted *before* the previous reading (a different process answering) cannot
//! be placed in time, and is a baseline too.

use std::time::Duration;

use model::Timestamp;

/// The longest time between two readings whose difference is still recorded: longer, and the
/// increase is spread over too many seconds to be put at one instant (it would be a false burst),
/// so the reading is a new baseline. Far above a 250 ms sampling interval, so that a busy control
/// plane loses no data. (A restarted reader has no previous reading at all, however quick.)
pub const MAX_READING_GAP: Duration = Duration::from_secs(5);

/// When a source of cumulative counters started counting, and when it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// When the source (a load-balancer process) started: its counters' zero.
    pub source_started: Timestamp,
    /// When the reading was taken.
    pub taken: Timestamp,
}

/// How a reading relates to the one before it, for every counter it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Continuity {
    /// Nothing to subtract: the values are a baseline, not datapoints.
    Baseline,
    /// The source restarted since the previous reading: each value is the increase.
    SourceRestarted,
    /// The same source, read again: subtract.
    Continues,
}

/// Whether a reading at `current` continues one at `previous` (None: the reader's first since it
/// started): what was counted in between can be put at `current`. The same rule holds for any
/// cumulative source, such as the lines appended to a log file.
pub fn follows(previous: Option<Timestamp>, current: Timestamp) -> bool {
    previous
        .is_some_and(|previous| current >= previous && current.since(previous) <= MAX_READING_GAP)
}

/// How `current` follows `previous` (None: the reader's first reading since it started).
pub fn continuity(previous: Option<Reading>, current: Reading) -> Continuity {
    let Some(previous) = previous else { return Continuity::Baseline };
    if !follows(Some(previous.taken), current.taken) {
        return Continuity::Baseline;
    }
    if current.source_started == previous.source_started {
        Continuity::Continues
    } else if current.source_started >= previous.taken {
        Continuity::SourceRestarted
    } else {
        Continuity::Baseline
    }
}

/// The increase of one counter between two readings, or None when `current` is only a baseline.
/// `previous` is the counter's value in the previous reading, None when it did not have it.
pub fn increase(continuity: Continuity, previous: Option<u64>, current: u64) -> Option<u64> {
    match (continuity, previous) {
        (Continuity::Baseline, _) => None,
        (Continuity::SourceRestarted, _) | (Continuity::Continues, None) => Some(current),
        (Continuity::Continues, Some(previous)) if current >= previous => Some(current - previous),
        // Went down: reset to zero after the previous reading, then counted up to `current`.
        (Continuity::Continues, Some(_)) => Some(current),
    }
}
