//! The only place the control plane reads the OS clock.
//!
//! Wall-clock milliseconds, because deadlines are stored and must mean the same thing after a
//! restart. The value never goes backwards within a process: a clock stepped back by NTP would
//! otherwise make a deployment's schedule jump.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use model::Timestamp;

static LAST: AtomicU64 = AtomicU64::new(0);

pub fn now() -> Timestamp {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let previous = LAST.fetch_max(wall, Ordering::SeqCst);
    Timestamp(previous.max(wall))
}
