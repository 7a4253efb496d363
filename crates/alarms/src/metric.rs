//! The vocabulary of metrics: which metric ([`MetricId`]), over how long ([`Period`]), summarised how
//! ([`Statistic`]), and the resulting [`Datapoint`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use model::Timestamp;
use serde::{Deserialize, Serialize};

/// Longest metric name, in characters (CloudWatch: 255).
pub const METRIC_NAME_CHARS_MAX: usize = 255;
/// Most dimensions on one metric (CloudWatch: 30).
pub const DIMENSIONS_MAX: usize = 30;
/// Longest dimension name (255) and value (1024), in characters, as CloudWatch.
pub const DIMENSION_NAME_CHARS_MAX: usize = 255;
pub const DIMENSION_VALUE_CHARS_MAX: usize = 1024;
/// Longest period, and longest `evaluation_periods × period` of an alarm: one day.
pub const PERIOD_SECS_MAX: u32 = 86_400;

/// A metric's identity: its name and its exact set of dimensions, e.g.
/// `HTTPCode_Target_5XX_Count{target_group=web-green}`. Two ids with different dimension sets are
/// different metrics, as in CloudWatch. Dimensions are opaque strings to this crate.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MetricId {
    pub name: String,
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
}

impl MetricId {
    pub fn new(name: impl Into<String>) -> MetricId {
        MetricId { name: name.into(), dimensions: BTreeMap::new() }
    }

    /// The same metric with one more dimension.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> MetricId {
        self.dimensions.insert(name.into(), value.into());
        self
    }

    /// CloudWatch's rules: name 1–255 characters, at most 30 dimensions with names of 1–255 and
    /// values of 1–1024 characters; no control characters anywhere.
    pub fn validate(&self) -> Result<(), MetricIdError> {
        check_text("metric name", &self.name, METRIC_NAME_CHARS_MAX)?;
        if self.dimensions.len() > DIMENSIONS_MAX {
            return Err(MetricIdError::TooManyDimensions {
                metric: self.name.clone(),
                count: self.dimensions.len(),
            });
        }
        for (name, value) in &self.dimensions {
            check_text("dimension name", name, DIMENSION_NAME_CHARS_MAX)?;
            check_text(&format!("value of dimension {name}"), value, DIMENSION_VALUE_CHARS_MAX)?;
        }
        Ok(())
    }
}

impl fmt::Display for MetricId {
    /// `RequestCount{target_group=web-green}`, or just `RequestCount` without dimensions.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.dimensions.is_empty() {
            f.write_str("{")?;
            for (i, (name, value)) in self.dimensions.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{name}={value}")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

/// Why a metric's identity is not one CloudWatch accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetricIdError {
    #[error(transparent)]
    Text(#[from] TextError),
    #[error("metric {metric} has {count} dimensions; at most {DIMENSIONS_MAX} are allowed")]
    TooManyDimensions { metric: String, count: usize },
}

/// Why a name or a dimension's value is not one CloudWatch accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{what} is empty; give it 1 to {max} characters")]
    Empty { what: String, max: usize },
    #[error("{what} has {chars} characters; shorten it to at most {max}")]
    TooLong { what: String, chars: usize, max: usize },
    #[error("{what} `{escaped}` contains the control character {character:?}; remove it")]
    ControlCharacter { what: String, escaped: String, character: char },
}

/// A non-empty text of at most `max` characters without control characters.
pub(crate) fn check_text(what: &str, text: &str, max: usize) -> Result<(), TextError> {
    let what = what.to_string();
    let chars = text.chars().count();
    if chars == 0 {
        return Err(TextError::Empty { what, max });
    }
    if chars > max {
        return Err(TextError::TooLong { what, chars, max });
    }
    if let Some(character) = text.chars().find(|c| c.is_control()) {
        return Err(TextError::ControlCharacter {
            what,
            escaped: text.escape_debug().to_string(),
            character,
        });
    }
    Ok(())
}

/// The length of the intervals that samples are aggregated over: a whole number of seconds from 1
/// to 86 400 (one day). Periods are aligned to the Unix epoch, so the 60 s period of 12:00:30 is
/// 12:00:00–12:01:00 (UTC).
///
/// CloudWatch allows 10, 20 and 30 s and multiples of 60 s ([`Period::is_cloudwatch_standard`]);
/// cutover also allows any other whole number of seconds, down to 1 s, because it sees every
/// request and a 1 s period is what makes a sub-second rollback possible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Period(u32);

impl Period {
    pub const ONE_SECOND: Period = Period(1);
    pub const ONE_MINUTE: Period = Period(60);

    pub fn from_secs(secs: u32) -> Result<Period, PeriodOutOfRange> {
        if secs == 0 || secs > PERIOD_SECS_MAX {
            return Err(PeriodOutOfRange { secs });
        }
        Ok(Period(secs))
    }

    pub fn secs(self) -> u32 {
        self.0
    }

    pub fn millis(self) -> u64 {
        u64::from(self.0) * 1000
    }

    pub fn as_duration(self) -> Duration {
        Duration::from_secs(u64::from(self.0))
    }

    /// 10, 20, 30 or a multiple of 60 seconds: what CloudWatch itself accepts.
    pub fn is_cloudwatch_standard(self) -> bool {
        matches!(self.0, 10 | 20 | 30) || self.0.is_multiple_of(60)
    }

    /// The index of the period containing `t` (period `i` is `[i × len, (i + 1) × len)`).
    pub fn index_of(self, t: Timestamp) -> u64 {
        t.as_millis() / self.millis()
    }

    /// The start of period `index`.
    pub fn start_of(self, index: u64) -> Timestamp {
        Timestamp::from_millis(index.saturating_mul(self.millis()))
    }
}

/// A period that is not a whole number of seconds from 1 to a day.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "period {secs}s is out of range; use a whole number of seconds from 1 to {PERIOD_SECS_MAX} (CloudWatch's usual periods are 10, 20, 30 or a multiple of 60)"
)]
pub struct PeriodOutOfRange {
    pub secs: u32,
}

impl TryFrom<u32> for Period {
    type Error = PeriodOutOfRange;
    fn try_from(secs: u32) -> Result<Period, PeriodOutOfRange> {
        Period::from_secs(secs)
    }
}

impl From<Period> for u32 {
    fn from(period: Period) -> u32 {
        period.0
    }
}

impl fmt::Display for Period {
    /// `1s`, `10s`, `1m`, `1h30m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&model::format_duration(self.as_duration()))
    }
}

/// A percentile from `p0` to `p100` with at most two decimals (`p99`, `p99.9`, `p99.99`), kept in
/// hundredths of a percent so that ranks are computed in exact integer arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percentile(u16);

impl Percentile {
    /// `hundredths` of a percent: `9900` is p99. `None` above 10 000.
    pub fn from_hundredths(hundredths: u16) -> Option<Percentile> {
        (hundredths <= 10_000).then_some(Percentile(hundredths))
    }

    pub fn hundredths(self) -> u16 {
        self.0
    }

    /// The nearest rank (1-based) of this percentile among `n ≥ 1` sorted samples:
    /// `max(1, ⌈p × n⌉)`. p0 is the minimum and p100 the maximum.
    pub(crate) fn rank(self, n: u64) -> u64 {
        let scaled = u128::from(self.0) * u128::from(n);
        let rank = scaled.div_ceil(10_000) as u64;
        rank.clamp(1, n.max(1))
    }

    /// The fewest samples that make this percentile statistically significant in CloudWatch's
    /// sense: `10 / (1 − p)` for `0.5 ≤ p < 1`, `10 / p` for `0 < p < 0.5`. `None` for p0 and
    /// p100 (the minimum and the maximum are exact with any number of samples).
    pub fn low_sample_threshold(self) -> Option<u64> {
        let h = u64::from(self.0);
        match h {
            0 | 10_000 => None,
            5_000.. => Some(100_000u64.div_ceil(10_000 - h)),
            _ => Some(100_000u64.div_ceil(h)),
        }
    }
}

impl fmt::Display for Percentile {
    /// `p99`, `p99.9`, `p99.99`, `p0`, `p100`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (int, frac) = (self.0 / 100, self.0 % 100);
        match frac {
            0 => write!(f, "p{int}"),
            _ if frac % 10 == 0 => write!(f, "p{int}.{}", frac / 10),
            _ => write!(f, "p{int}.{frac:02}"),
        }
    }
}

/// How a period's samples are summarised into one value, with CloudWatch's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Statistic {
    SampleCount,
    Sum,
    Average,
    Minimum,
    Maximum,
    /// `pNN` or `pNN.N` (CloudWatch's extended statistic). Nearest rank, see [`crate::series`].
    Percentile(Percentile),
}

impl Statistic {
    pub fn percentile(self) -> Option<Percentile> {
        match self {
            Statistic::Percentile(p) => Some(p),
            _ => None,
        }
    }
}

/// Why a text is not one of CloudWatch's statistics.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatisticError {
    #[error(
        "unknown statistic `{0}`; use SampleCount, Sum, Average, Minimum, Maximum or a percentile such as p50, p99 or p99.9"
    )]
    Unknown(String),
    #[error("percentile `{0}` has more than two decimals; round it, e.g. p99.99")]
    TooManyDecimals(String),
    #[error("percentile `{0}` is above p100; use p0 to p100")]
    AboveP100(String),
}

impl FromStr for Statistic {
    type Err = StatisticError;

    /// `SampleCount`, `Sum`, `Average`, `Minimum`, `Maximum`, or `p` followed by a number from 0 to
    /// 100 with at most two decimals.
    fn from_str(text: &str) -> Result<Statistic, StatisticError> {
        match text {
            "SampleCount" => return Ok(Statistic::SampleCount),
            "Sum" => return Ok(Statistic::Sum),
            "Average" => return Ok(Statistic::Average),
            "Minimum" => return Ok(Statistic::Minimum),
            "Maximum" => return Ok(Statistic::Maximum),
            _ => {}
        }
        let Some(number) = text.strip_prefix('p') else {
            return Err(StatisticError::Unknown(text.to_string()));
        };
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || (number.contains('.') && !digits(frac)) {
            return Err(StatisticError::Unknown(text.to_string()));
        }
        if frac.len() > 2 {
            return Err(StatisticError::TooManyDecimals(text.to_string()));
        }
        let int: u32 = int.parse().map_err(|_| StatisticError::AboveP100(text.to_string()))?;
        let frac: u32 =
            if frac.is_empty() { 0 } else { format!("{frac:0<2}").parse().unwrap_or(0) };
        let hundredths = int.saturating_mul(100).saturating_add(frac);
        u16::try_from(hundredths)
            .ok()
            .and_then(Percentile::from_hundredths)
            .map(Statistic::Percentile)
            .ok_or_else(|| StatisticError::AboveP100(text.to_string()))
    }
}

impl fmt::Display for Statistic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Statistic::SampleCount => f.write_str("SampleCount"),
            Statistic::Sum => f.write_str("Sum"),
            Statistic::Average => f.write_str("Average"),
            Statistic::Minimum => f.write_str("Minimum"),
            Statistic::Maximum => f.write_str("Maximum"),
            Statistic::Percentile(p) => p.fmt(f),
        }
    }
}

impl TryFrom<String> for Statistic {
    type Error = StatisticError;
    fn try_from(text: String) -> Result<Statistic, StatisticError> {
        text.parse()
    }
}

impl From<Statistic> for String {
    fn from(statistic: Statistic) -> String {
        statistic.to_string()
    }
}

/// One period's value of one statistic, as CloudWatch's `GetMetricStatistics` returns it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Datapoint {
    /// Start of the period.
    pub start: Timestamp,
    pub value: f64,
    /// How many samples the period holds (what the low-sample rule of percentiles looks at).
    pub sample_count: u64,
}
