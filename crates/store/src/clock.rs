//! The only place cutover reads the OS clock; the control plane (`control::clock`) and the
//! pipelines (`pipelines`'s driver) both read time here.
//!
//! Times are wall-clock milliseconds, because they are shown and stored, and a stored deadline
//! must mean the same thing after a restart. But the wall clock is read only once, at the first
//! call: from then on the time advances by the monotonic clock. A step of the wall clock (NTP, an
//! operator's `date -s`, a VM resumed) therefore changes no duration measured inside a process —
//! a hook's timeout, a canary's interval, a drain — and the time never goes backwards. A restart
//! reads the wall clock afresh, never earlier than the newest stored timestamp
//! ([`Store::open`](crate::Store::open) calls [`not_before`]), and recomputes what remains of
//! each stored deadline from there.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where a [`Clock`] reads time: the OS, or a test's script.
pub trait Source {
    /// Wall-clock milliseconds since the Unix epoch.
    fn wall_ms(&self) -> u64;
    /// Time on a clock that only moves forward, at the rate of real time, from any origin.
    fn monotonic(&self) -> Duration;
}

/// The operating system's clocks.
pub struct Os;

impl Source for Os {
    #[allow(clippy::disallowed_methods)] // The one reading of the wall clock.
    fn wall_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }

    fn monotonic(&self) -> Duration {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed()
    }
}

/// Wall-clock time read once, then advanced by monotonic time.
pub struct Clock<S> {
    source: S,
    /// The wall clock's and the monotonic clock's readings at the first call.
    anchor: OnceLock<(u64, Duration)>,
    /// Added to every reading: how far [`Clock::not_before`] moved the time forward.
    skew_ms: AtomicU64,
}

impl<S: Source> Clock<S> {
    pub const fn new(source: S) -> Clock<S> {
        Clock { source, anchor: OnceLock::new(), skew_ms: AtomicU64::new(0) }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        let (wall, monotonic) =
            *self.anchor.get_or_init(|| (self.source.wall_ms(), self.source.monotonic()));
        let elapsed = self.source.monotonic().saturating_sub(monotonic).as_millis() as u64;
        wall + elapsed + self.skew_ms.load(Ordering::SeqCst)
    }

    /// Moves the time forward to at least `ms`: a wall clock found behind what an earlier run
    /// stored must not make stored deadlines later than they were meant to be.
    pub fn not_before(&self, ms: u64) {
        let now = self.now_ms();
        if ms > now {
            self.skew_ms.fetch_add(ms - now, Ordering::SeqCst);
        }
    }
}

static CLOCK: Clock<Os> = Clock::new(Os);

/// The process's time in wall-clock milliseconds; see the module's documentation.
pub fn now_ms() -> u64 {
    CLOCK.now_ms()
}

/// Moves the process's time forward to at least `ms` (the newest stored timestamp).
pub fn not_before(ms: u64) {
    CLOCK.not_before(ms)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A wall clock and a monotonic clock a test sets by hand.
    #[derive(Default)]
    struct Script {
        wall_ms: Mutex<u64>,
        monotonic: Mutex<Duration>,
    }

    impl Script {
        fn advance(&self, by: Duration) {
            *self.wall_ms.lock().unwrap() += by.as_millis() as u64;
            *self.monotonic.lock().unwrap() += by;
        }

        fn step_wall(&self, by: i64) {
            let mut wall = self.wall_ms.lock().unwrap();
            *wall = wall.checked_add_signed(by).unwrap();
        }
    }

    impl Source for &Script {
        fn wall_ms(&self) -> u64 {
            *self.wall_ms.lock().unwrap()
        }

        fn monotonic(&self) -> Duration {
            *self.monotonic.lock().unwrap()
        }
    }

    const HOUR_MS: i64 = 3_600_000;

    fn script_at(wall_ms: u64) -> Script {
        Script { wall_ms: Mutex::new(wall_ms), monotonic: Mutex::new(Duration::from_secs(500)) }
    }

    #[test]
    fn starts_at_the_wall_clock_and_advances_with_real_time() {
        let script = script_at(1_000_000);
        let clock = Clock::new(&script);
        assert_eq!(clock.now_ms(), 1_000_000);
        script.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now_ms(), 1_001_500);
    }

    #[test]
    fn a_wall_clock_step_forward_does_not_shorten_a_duration() {
        let script = script_at(10 * HOUR_MS as u64);
        let clock = Clock::new(&script);
        let deadline = clock.now_ms() + 30_000;
        script.advance(Duration::from_secs(4));
        script.step_wall(HOUR_MS);
        assert_eq!(clock.now_ms(), deadline - 26_000, "4 s went by, not an hour");
    }

    #[test]
    fn a_wall_clock_step_backward_neither_freezes_nor_reverses_time() {
        let script = script_at(10 * HOUR_MS as u64);
        let clock = Clock::new(&script);
        let before = clock.now_ms();
        script.step_wall(-HOUR_MS);
        script.advance(Duration::from_secs(3));
        assert_eq!(clock.now_ms(), before + 3_000);
    }

    #[test]
    fn not_before_moves_time_forward_to_the_newest_stored_timestamp_and_never_back() {
        let script = script_at(5_000);
        let clock = Clock::new(&script);
        clock.not_before(9_000);
        assert_eq!(clock.now_ms(), 9_000);
        clock.not_before(1_000);
        assert_eq!(clock.now_ms(), 9_000, "an older timestamp changes nothing");
        script.advance(Duration::from_millis(250));
        assert_eq!(clock.now_ms(), 9_250);
    }
}
