//! The manager's decisions, as pure functions of what is on disk and the time: when a
//! certificate is due, how long to back off after a failure, and what to do next.

use std::time::Duration;

use model::Timestamp;
use serde::{Deserialize, Serialize};

/// When a certificate is valid, from its `notBefore` to its `notAfter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validity {
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

impl Validity {
    /// Renewal is due once two thirds of the lifetime have passed (certbot's and Caddy's rule:
    /// 30 days before the end of a 90-day certificate), leaving a third for retries.
    pub fn renewal_due(&self) -> Timestamp {
        let lifetime = self.not_after.as_millis().saturating_sub(self.not_before.as_millis());
        Timestamp::from_millis(self.not_before.as_millis() + lifetime * 2 / 3)
    }

    pub fn covers(&self, now: Timestamp) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// What the manager remembers of one name's attempts, beside its certificate (stored as JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempts {
    /// Failed attempts in a row since the last certificate obtained.
    pub failures: u32,
    /// No new attempt before this, after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// Why the last attempt failed; cleared by a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<Timestamp>,
}

/// The first pause after a failure; each failure in a row doubles it, up to [`BACKOFF_MAX`].
pub const BACKOFF_FIRST: Duration = Duration::from_secs(5);
/// Six hours, so that a certificate never waits long past a CA's outage and a rate limit is not
/// hit again and again.
pub const BACKOFF_MAX: Duration = Duration::from_secs(6 * 3600);

/// How long to wait after `failures` failed attempts in a row (at least one).
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    BACKOFF_FIRST.saturating_mul(1 << doublings).min(BACKOFF_MAX)
}

/// What to do about one name now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Order a certificate now: there is none, or it is due for renewal.
    Obtain,
    /// Nothing until then (renewal due, or the end of a backoff).
    WaitUntil(Timestamp),
}

/// The next step for a name with the certificate `current` (if any is on disk) and `attempts`.
pub fn next(now: Timestamp, current: Option<Validity>, attempts: &Attempts) -> Next {
    if let Some(retry_at) = attempts.retry_at
        && now < retry_at
    {
        return Next::WaitUntil(retry_at);
    }
    match current {
        Some(validity) if now < validity.renewal_due() => Next::WaitUntil(validity.renewal_due()),
        _ => Next::Obtain,
    }
}

/// The attempts after one that failed at `now` with `error`.
pub fn failed(attempts: &Attempts, now: Timestamp, error: String) -> Attempts {
    let failures = attempts.failures.saturating_add(1);
    Attempts {
        failures,
        retry_at: Some(now.saturating_add(backoff(failures))),
        last_error: Some(error),
        last_attempt: Some(now),
    }
}

/// The attempts after a certificate was obtained at `now`.
pub fn succeeded(now: Timestamp) -> Attempts {
    Attempts { last_attempt: Some(now), ..Attempts::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Timestamp {
        Timestamp::from_millis(s * 1000)
    }

    #[test]
    fn a_certificate_is_renewed_at_two_thirds_of_its_lifetime() {
        // Let's Encrypt's 90 days: due 30 days before the end.
        let day = 86_400;
        let v = Validity { not_before: at(10 * day), not_after: at(100 * day) };
        assert_eq!(v.renewal_due(), at(70 * day));
        let none = Attempts::default();
        assert_eq!(next(at(69 * day), Some(v), &none), Next::WaitUntil(at(70 * day)));
        assert_eq!(next(at(70 * day), Some(v), &none), Next::Obtain);
        assert_eq!(next(at(0), None, &none), Next::Obtain, "no certificate yet: now");
        assert!(v.covers(at(99 * day)) && !v.covers(at(100 * day)));
    }

    #[test]
    fn failures_back_off_exponentially_up_to_six_hours() {
        let waits: Vec<u64> = (1..=14).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(
            waits,
            [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 10240, 20480, 21600]
        );
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn a_failure_holds_the_next_attempt_until_its_backoff_and_a_success_clears_it() {
        let v = Validity { not_before: at(0), not_after: at(90) };
        let once = failed(&Attempts::default(), at(60), "CA down".into());
        assert_eq!(once.retry_at, Some(at(65)));
        assert_eq!(next(at(64), Some(v), &once), Next::WaitUntil(at(65)));
        assert_eq!(next(at(65), Some(v), &once), Next::Obtain);
        let twice = failed(&once, at(65), "CA down".into());
        assert_eq!((twice.failures, twice.retry_at), (2, Some(at(75))));
        let ok = succeeded(at(75));
        assert_eq!((ok.failures, ok.retry_at, ok.last_error), (0, None, None));
    }
}
