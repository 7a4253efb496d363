//! A coarse millisecond clock for idle timeouts: every read and write stamps its connection with
//! the time, and loading one global atomic is cheaper than asking the OS on every poll.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the clock advances; idle timeouts are exact to about this much.
const TICK: Duration = Duration::from_millis(20);

static STARTED: OnceLock<()> = OnceLock::new();
static NOW_MS: AtomicU64 = AtomicU64::new(0);

/// Starts the clock thread once per process. A plain thread, not a task, because several
/// runtimes (one per test) may come and go in one process.
pub fn ensure_started() {
    STARTED.get_or_init(|| {
        let start = Instant::now();
        let spawned =
            std::thread::Builder::new().name("cutover-lb-clock".into()).spawn(move || {
                loop {
                    std::thread::sleep(TICK);
                    NOW_MS.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(
                "cannot start the idle-timeout clock thread ({e}); idle timeouts will not fire"
            );
        }
    });
}

/// Milliseconds since the clock started.
#[inline]
pub fn now_ms() -> u64 {
    NOW_MS.load(Ordering::Relaxed)
}
