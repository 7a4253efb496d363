//! Fine response-time buckets: how the data plane counts each target group's response times so
//! that two versions' distributions can be compared (the canary judge's Mann–Whitney test), not
//! only read at a coarse percentile.
//!
//! The scheme is HdrHistogram's with three significant bits: below 8 µs one bucket per
//! microsecond, then eight buckets per doubling, so a bucket is at most 12.5 % wide whatever the
//! scale (1 ms and 1 s are resolved alike). The index is computed from the value's leading zeros
//! and next three bits, no floating point, on the request path. Values beyond
//! [`LATENCY_MAX_US`] (about 19 hours) share the last bucket.

/// Buckets in a target group's fine histogram.
pub const LATENCY_BUCKETS: usize = 8 + 33 * 8;
/// The largest response time, in microseconds, told apart from larger ones.
pub const LATENCY_MAX_US: u64 = (1 << 36) - 1;

/// The bucket of a response time of `us` microseconds.
#[inline]
pub fn latency_bucket(us: u64) -> usize {
    let us = us.min(LATENCY_MAX_US);
    if us < 8 {
        return us as usize;
    }
    let doubling = 63 - us.leading_zeros() as usize; // ≥ 3
    let next_three_bits = (us >> (doubling - 3)) as usize & 7;
    8 + (doubling - 3) * 8 + next_three_bits
}

/// The largest response time, in microseconds, that falls in bucket `index` (the bound reported
/// for its answers, conservative as Prometheus' `le`).
pub fn latency_bucket_max_us(index: usize) -> u64 {
    if index < 8 {
        return index as u64;
    }
    let index = index.min(LATENCY_BUCKETS - 1);
    let doubling = (index - 8) / 8 + 3;
    let next_three_bits = ((index - 8) % 8) as u64;
    ((8 + next_three_bits + 1) << (doubling - 3)) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_response_time_falls_in_a_bucket_at_most_an_eighth_wide_whose_bound_covers_it() {
        let mut previous_max = None;
        for index in 0..LATENCY_BUCKETS {
            let max = latency_bucket_max_us(index);
            let min = previous_max.map_or(0, |m: u64| m + 1);
            assert_eq!(latency_bucket(min), index, "{min} µs");
            assert_eq!(latency_bucket(max), index, "{max} µs");
            assert!((max - min) as f64 <= min as f64 / 8.0 + 1e-9 || max < 8, "{min}..={max}");
            previous_max = Some(max);
        }
        assert_eq!(previous_max, Some(LATENCY_MAX_US));
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
        // 20 ms and 26 ms (30 % slower) are two buckets apart.
        assert_eq!(latency_bucket(26_000) - latency_bucket(20_000), 3);
    }
}
