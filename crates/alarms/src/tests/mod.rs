//! In-crate tests: table-driven, with expect-test snapshots where the text is the point
//! (`UPDATE_EXPECT=1` rewrites them).

mod alarm;
mod counter;
mod filter;
mod judge;
mod runs;
mod series;
mod store;

use model::Timestamp;

/// 2023-11-14 12:00:00 UTC: reasons print times of day, and these read well.
const T0: u64 = 1_699_963_200_000;

/// `secs` after (or, negative, before) [`T0`].
fn at(secs: f64) -> Timestamp {
    Timestamp::from_millis((T0 as i64 + (secs * 1000.0).round() as i64) as u64)
}

/// xorshift64: the same sequence at every run (the random replays of `runs` and `store`).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
