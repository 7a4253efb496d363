//! Wall-clock timestamps in milliseconds, and durations as people write them (`90s`, `5m`, `1h30m`).

use std::fmt;
use std::time::Duration;

/// Milliseconds since the Unix epoch.
///
/// Wall-clock rather than monotonic so that deadlines stored in the database survive a restart of
/// the control plane. Only the control plane's clock module produces them from the OS clock; the
/// pure crates receive them as arguments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub fn from_millis(ms: u64) -> Timestamp {
        Timestamp(ms)
    }

    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.as_millis().min(u64::MAX as u128) as u64))
    }

    /// How long after `earlier` this is; zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// A timestamp travels as its milliseconds (`1733480000000`): the one representation of every
/// persisted document and snapshot (rollout's machine, alarms' history, pipelines' records).
impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(Timestamp)
    }
}

impl fmt::Display for Timestamp {
    /// Prints the offset from the epoch as a humane duration (`5m20s`): in tests the epoch is the
    /// start of the scenario, which makes traces read like a timeline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(Duration::from_millis(self.0)))
    }
}

/// Formats a duration the way `parse_duration` reads it: `0s`, `250ms`, `10s`, `5m`, `1h2m3s`.
pub fn format_duration(d: Duration) -> String {
    let total_ms = d.as_millis();
    if total_ms == 0 {
        return "0s".to_string();
    }
    if total_ms < 1000 {
        return format!("{total_ms}ms");
    }
    let ms = total_ms % 1000;
    let total_s = total_ms / 1000;
    let (h, m, s) = (total_s / 3600, (total_s / 60) % 60, total_s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || ms > 0 {
        if ms > 0 {
            out.push_str(&format!("{s}.{ms:03}s"));
        } else {
            out.push_str(&format!("{s}s"));
        }
    }
    out
}

/// Why text is not a duration; each message shows how to write one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration; write it like `30s`, `5m` or `1h30m`")]
    Empty,
    #[error("invalid duration `{text}`; write it like `30s`, `5m` or `1h30m`")]
    Invalid { text: String },
    #[error("invalid duration `{text}`: number too large")]
    TooLarge { text: String },
    #[error(
        "duration `{text}` has no unit; write `{number}s` for seconds or `{number}m` for minutes"
    )]
    NoUnit { text: String, number: u64 },
    #[error("unknown unit `{unit}` in duration `{text}`; use ms, s, m, h or d")]
    UnknownUnit { text: String, unit: String },
}

/// Parses `250ms`, `10s`, `5m`, `2h`, `1h30m`, `1m30s`, and days (`7d`, `1d12h`: CodePipeline's
/// approval waits 7 days by default, and `168h` reads worse). A bare integer is rejected: callers
/// decide what a unitless number means (AWS fields are whole minutes) before calling this.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(DurationError::Invalid { text: text.to_string() });
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| DurationError::TooLarge { text: text.to_string() })?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            "d" => Duration::from_secs(number.saturating_mul(86_400)),
            "" => return Err(DurationError::NoUnit { text: text.to_string(), number }),
            other => {
                return Err(DurationError::UnknownUnit {
                    text: text.to_string(),
                    unit: other.to_string(),
                });
            }
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON that alarms, rollout and pipelines persisted through their own adapters before
    /// `Timestamp` had serde: plain milliseconds, `null` for none.
    #[test]
    fn timestamps_serialize_as_the_milliseconds_persisted_before() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Stored {
            at: Timestamp,
            ended: Option<Timestamp>,
        }
        let old = r#"{"at":1733480000123,"ended":null}"#;
        let stored: Stored = serde_json::from_str(old).unwrap();
        assert_eq!(stored, Stored { at: Timestamp(1_733_480_000_123), ended: None });
        assert_eq!(serde_json::to_string(&stored).unwrap(), old);
        let ended = Stored { at: Timestamp(5), ended: Some(Timestamp(9)) };
        assert_eq!(serde_json::to_string(&ended).unwrap(), r#"{"at":5,"ended":9}"#);
    }

    #[test]
    fn durations_round_trip_through_text() {
        for text in ["0s", "250ms", "10s", "5m", "1h", "1h30m", "1m30s", "2h0m5s"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{text}");
        }
        assert_eq!(format_duration(Duration::from_secs(320)), "5m20s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.500s");
    }

    #[test]
    fn durations_without_units_are_rejected_with_advice() {
        assert_eq!(
            parse_duration("5").unwrap_err().to_string(),
            "duration `5` has no unit; write `5s` for seconds or `5m` for minutes"
        );
        assert_eq!(
            parse_duration("5w").unwrap_err().to_string(),
            "unknown unit `w` in duration `5w`; use ms, s, m, h or d"
        );
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
    }

    #[test]
    fn durations_take_days() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_duration(" 90s "), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("1d12x").unwrap_err().to_string(),
            "unknown unit `x` in duration `1d12x`; use ms, s, m, h or d"
        );
        assert_eq!(
            parse_duration("2w").unwrap_err().to_string(),
            "unknown unit `w` in duration `2w`; use ms, s, m, h or d"
        );
    }
}
