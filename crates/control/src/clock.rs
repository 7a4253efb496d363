//! The control plane's time: [`store::clock`], which reads the OS clock once and then advances
//! on the monotonic clock, as [`Timestamp`]s.
//!
//! Wall-clock milliseconds, because deadlines are stored and must mean the same thing after a
//! restart; advanced monotonically, because a clock stepped by NTP must change no duration a
//! deployment measures (a hook's timeout, a canary's interval, a drain), and never goes backwards.

use model::Timestamp;

pub fn now() -> Timestamp {
    Timestamp(store::clock::now_ms())
}
