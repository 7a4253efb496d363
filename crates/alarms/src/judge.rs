//! The canary judge: green compared with blue over the same window, with a statistical test,
//! instead of against a fixed threshold someone guessed.
//!
//! Both versions serve production at the same time, so whatever else happens in that window (a
//! slow database, a burst of bad clients) happens to both: a judge that compares them sees only
//! what the release changed, which a fixed threshold cannot (Kayenta's insight: compare against
//! a baseline that runs *now*, never against history).
//!
//! [`judge`] takes what each version served in the window ([`Observed`]: requests, errors, and
//! the distribution of response times as `(value, count)` pairs) and the [`JudgeCriteria`], and
//! answers [`Verdict::Worse`] only when green is worse than blue **beyond the tolerance**, with
//! at least the chosen confidence, and never with fewer than `min_samples` requests on either
//! side ([`Verdict::TooFewSamples`]). Every [`Judgement`] carries both sides' numbers and the
//! test's statistic and p-value, and says so in words ([`Judgement::reason`]).
//!
//! # Error rate: Farrington–Manning's score test
//!
//! H₀: `p_green − p_blue ≤ δ` (δ = the tolerance, in percentage points) against H₁:
//! `p_green − p_blue > δ`, one-sided. The statistic is `z = (p̂_g − p̂_b − δ) / √(p̃_g(1−p̃_g)/n_g +
//! p̃_b(1−p̃_b)/n_b)`, where `p̃` are the maximum-likelihood rates *under H₀* (a closed form, the
//! root of a cubic; Farrington & Manning 1990). With δ = 0 it is the pooled two-proportion
//! z-test. Estimating the variance under H₀ rather than from the observed rates (Wald's test)
//! keeps the false-positive rate at the promised level when errors are rare: a Wald test sees
//! no variance at all on a blue with 0 errors and fires on a green with 2 of 100. Fisher's
//! exact test cannot take a tolerance; the minimum sample size keeps the normal approximation
//! honest instead.
//!
//! # Latency: Mann–Whitney U, on binned data
//!
//! H₀: green's response times divided by `1 + tolerance` are not stochastically greater than
//! blue's, one-sided, with the tie correction and a continuity correction on the normal
//! approximation (as Kayenta's Mann–Whitney classifier). A rank test needs no assumption about
//! the shape of the distribution (response times are skewed and multi-modal) and is not moved
//! by a few huge outliers. The tolerance is a ratio (10 % = "at most 10 % slower"), applied by
//! scaling green's values, so "slower" means the same for a 2 ms and a 2 s service.
//!
//! The data plane reports response times in fixed buckets (`routes::latency_bucket`, at most
//! 12.5 % wide), not per request, so the values here are bucket bounds and many are tied; the
//! tie correction makes the test exact about that, and the only approximation is the bucket
//! width: a slowdown of less than one bucket may look like none, and the tolerance is effectively
//! rounded to a bucket. Percentiles in the summary are nearest-rank on the same buckets.
//!
//! # Normal distribution
//!
//! The upper tail `Q(z) = erfc(z/√2)/2` uses the Chebyshev fit of Numerical Recipes (`erfcc`,
//! relative error below 1.2 × 10⁻⁷ everywhere, tails included): ten lines, where a statistics
//! crate would bring a dependency tree for one function.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::alarm::SpecError;

/// The fewest requests per version a judge may be configured to need: below it the normal
/// approximations of both tests are not worth their name.
pub const MIN_SAMPLES_FLOOR: u64 = 10;
/// The most any judge may be configured to need.
pub const MIN_SAMPLES_MAX: u64 = 1_000_000_000;
/// Confidence bounds: below 0.5 a "worse" verdict would be more often wrong than right; 0.9999
/// is as sure as a normal approximation can honestly be.
pub const CONFIDENCE_MIN: f64 = 0.5;
pub const CONFIDENCE_MAX: f64 = 0.9999;
/// The largest latency tolerance: green may be at most 11 times as slow.
pub const LATENCY_TOLERANCE_MAX: f64 = 10.0;

/// What the judge compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JudgedMetric {
    /// The share of requests answered with a 5xx (by the target or by the load balancer).
    ErrorRate,
    /// The time to the response's head.
    Latency,
}

impl JudgedMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            JudgedMetric::ErrorRate => "error-rate",
            JudgedMetric::Latency => "latency",
        }
    }
}

impl fmt::Display for JudgedMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which of green's answers the judge compares with blue's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JudgedSource {
    /// The requests green served: production's share, and the test listener's before it.
    #[default]
    Served,
    /// Green's answers to the copies a shadow phase sends it, which no client sees: green is
    /// judged before it serves anyone. Blue's side is what it served in the same period.
    Mirrored,
}

impl JudgedSource {
    pub fn as_str(self) -> &'static str {
        match self {
            JudgedSource::Served => "served",
            JudgedSource::Mirrored => "mirrored",
        }
    }
}

impl fmt::Display for JudgedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the judge decides.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct JudgeCriteria {
    pub metric: JudgedMetric,
    /// Which of green's answers are judged (criteria stored before this existed judged served
    /// requests).
    #[serde(default)]
    pub source: JudgedSource,
    /// How much worse green may be before it counts as worse: for the error rate, percentage
    /// points as a fraction (0.01: green's rate may exceed blue's by 1 point); for latency, a
    /// ratio (0.10: green may be 10 % slower).
    pub tolerance: f64,
    /// How sure the judge must be that green is worse beyond the tolerance (0.99: a green that is
    /// exactly at the tolerance is judged worse in at most 1 % of windows).
    pub confidence: f64,
    /// Requests each version must have served in the window (latency: answers timed).
    pub min_samples: u64,
}

impl JudgeCriteria {
    /// Every problem at once, each naming its field and the fix.
    pub fn validate(&self) -> Result<(), Vec<SpecError>> {
        let mut errors = Vec::new();
        let mut fail = |field, message: String| errors.push(SpecError { field, message });
        let tolerance_max = match self.metric {
            JudgedMetric::ErrorRate => 1.0,
            JudgedMetric::Latency => LATENCY_TOLERANCE_MAX,
        };
        if !(self.tolerance >= 0.0 && self.tolerance < tolerance_max) {
            fail(
                "tolerance",
                match self.metric {
                    JudgedMetric::ErrorRate => format!(
                        "{} percentage points is not a tolerance for an error rate; give 0 to \
                         less than 100, like `tolerance: 1%`",
                        percent(self.tolerance)
                    ),
                    JudgedMetric::Latency => format!(
                        "{}% slower is not a tolerance for latency; give 0 to less than {}%, \
                         like `tolerance: 10%`",
                        percent(self.tolerance),
                        percent(LATENCY_TOLERANCE_MAX)
                    ),
                },
            );
        }
        if !(CONFIDENCE_MIN..=CONFIDENCE_MAX).contains(&self.confidence) {
            fail(
                "confidence",
                format!(
                    "{} is not a confidence the judge can promise; give {CONFIDENCE_MIN} to \
                     {CONFIDENCE_MAX}, like `confidence: 0.99`",
                    self.confidence
                ),
            );
        }
        if !(MIN_SAMPLES_FLOOR..=MIN_SAMPLES_MAX).contains(&self.min_samples) {
            fail(
                "min_samples",
                format!(
                    "{} requests per version; give {MIN_SAMPLES_FLOOR} to {MIN_SAMPLES_MAX}: \
                     with fewer the tests' normal approximations do not hold",
                    self.min_samples
                ),
            );
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// The p-value below which green is worse: `1 − confidence`.
    pub fn significance(&self) -> f64 {
        1.0 - self.confidence
    }
}

/// What one version served in the judged window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub requests: u64,
    /// Requests answered with a 5xx.
    pub errors: u64,
    /// Response times in seconds, as distinct values with their counts (any order).
    pub latencies: Vec<(f64, u64)>,
}

/// The judge's answer for one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Green is worse than blue beyond the tolerance, with the confidence asked for.
    Worse,
    /// Not shown to be worse beyond the tolerance.
    NotWorse,
    /// A version served fewer than `min_samples` requests: no verdict.
    TooFewSamples,
}

/// One version's numbers, as shown next to the other's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub requests: u64,
    pub errors: u64,
    /// `errors / requests` (0 without requests).
    pub error_rate: f64,
    /// Answers whose response time was measured.
    pub timed: u64,
    /// Nearest-rank percentiles of the response time, in seconds (None without timed answers).
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

/// The test that was run and what it found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// `Farrington–Manning` or `Mann–Whitney U`.
    pub test: String,
    /// Mann–Whitney's U of green's (scaled) values; None for the error rate.
    pub u: Option<f64>,
    /// The standardized statistic: how many standard errors green is beyond the tolerance.
    pub z: f64,
    /// One-sided: the chance of a `z` at least this large were green exactly at the tolerance.
    pub p_value: f64,
}

/// What the judge saw and decided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub criteria: JudgeCriteria,
    pub verdict: Verdict,
    pub blue: Summary,
    pub green: Summary,
    /// None with too few samples.
    pub test: Option<TestResult>,
}

/// Judges green against blue by `criteria` (see the module docs).
pub fn judge(criteria: &JudgeCriteria, blue: &Observed, green: &Observed) -> Judgement {
    let (blue_summary, green_summary) = (summarize(blue), summarize(green));
    let samples = |s: &Summary| match criteria.metric {
        JudgedMetric::ErrorRate => s.requests,
        JudgedMetric::Latency => s.timed,
    };
    let enough = samples(&blue_summary).min(samples(&green_summary)) >= criteria.min_samples;
    let test = enough.then(|| match criteria.metric {
        JudgedMetric::ErrorRate => {
            let z = farrington_manning_z(
                (green.errors.min(green.requests), green.requests),
                (blue.errors.min(blue.requests), blue.requests),
                criteria.tolerance,
            );
            TestResult {
                test: "Farrington–Manning".to_string(),
                u: None,
                z,
                p_value: upper_tail(z),
            }
        }
        JudgedMetric::Latency => {
            let scale = 1.0 + criteria.tolerance;
            let scaled: Vec<(f64, u64)> =
                green.latencies.iter().map(|&(v, n)| (v / scale, n)).collect();
            let (u, z) = mann_whitney_u(&scaled, &blue.latencies);
            TestResult {
                test: "Mann–Whitney U".to_string(), u: Some(u), z, p_value: upper_tail(z)
            }
        }
    });
    let verdict = match &test {
        None => Verdict::TooFewSamples,
        Some(t) if t.p_value < criteria.significance() => Verdict::Worse,
        Some(_) => Verdict::NotWorse,
    };
    Judgement { criteria: *criteria, verdict, blue: blue_summary, green: green_summary, test }
}

/// One version's numbers: its error rate and its nearest-rank percentiles.
pub fn summarize(observed: &Observed) -> Summary {
    let mut values: Vec<(f64, u64)> =
        observed.latencies.iter().copied().filter(|&(v, n)| v.is_finite() && n > 0).collect();
    values.sort_by(|a, b| a.0.total_cmp(&b.0));
    let timed: u64 = values.iter().map(|&(_, n)| n).sum();
    let at = |p: f64| nearest_rank(&values, timed, p);
    let errors = observed.errors.min(observed.requests);
    Summary {
        requests: observed.requests,
        errors,
        error_rate: if observed.requests == 0 {
            0.0
        } else {
            errors as f64 / observed.requests as f64
        },
        timed,
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
    }
}

/// The value of rank `max(1, ⌈p·n⌉)` in ascending `(value, count)` pairs holding `n` samples.
fn nearest_rank(sorted: &[(f64, u64)], n: u64, p: f64) -> Option<f64> {
    if n == 0 {
        return None;
    }
    let rank = ((p * n as f64).ceil() as u64).clamp(1, n);
    let mut seen = 0;
    sorted
        .iter()
        .find(|&&(_, count)| {
            seen += count;
            seen >= rank
        })
        .map(|&(v, _)| v)
}

/// Farrington–Manning's score statistic for H₀ `p₁ − p₂ ≤ δ` (module docs), with sample 1 =
/// `(x₁ events, n₁ trials)`. Large and positive when sample 1's rate exceeds sample 2's by more
/// than δ; 0 when the rates carry no evidence either way (no variance under H₀).
pub fn farrington_manning_z(one: (u64, u64), two: (u64, u64), delta: f64) -> f64 {
    let (n1, n2) = (one.1 as f64, two.1 as f64);
    if n1 == 0.0 || n2 == 0.0 {
        return 0.0;
    }
    let (p1, p2) = (one.0 as f64 / n1, two.0 as f64 / n2);
    let (r1, r2) = restricted_rates(p1, p2, n1, n2, delta);
    let variance = r1 * (1.0 - r1) / n1 + r2 * (1.0 - r2) / n2;
    if variance.is_nan() || variance <= 0.0 {
        return 0.0;
    }
    (p1 - p2 - delta) / variance.sqrt()
}

/// The maximum-likelihood rates `(p̃₁, p̃₂)` with `p̃₁ − p̃₂ = δ` (Farrington & Manning 1990, the
/// trigonometric root of their cubic).
pub fn restricted_rates(p1: f64, p2: f64, n1: f64, n2: f64, delta: f64) -> (f64, f64) {
    let theta = n2 / n1;
    let a = 1.0 + theta;
    let b = -(1.0 + theta + p1 + theta * p2 + delta * (theta + 2.0));
    let c = delta * delta + delta * (2.0 * p1 + theta + 1.0) + p1 + theta * p2;
    let d = -p1 * delta * (1.0 + delta);
    let v = b.powi(3) / (27.0 * a.powi(3)) - b * c / (6.0 * a * a) + d / (2.0 * a);
    let u = v.signum() * (b * b / (9.0 * a * a) - c / (3.0 * a)).max(0.0).sqrt();
    let cos_arg = if u == 0.0 { 0.0 } else { (v / u.powi(3)).clamp(-1.0, 1.0) };
    let w = (std::f64::consts::PI + cos_arg.acos()) / 3.0;
    let r1 = (2.0 * u * w.cos() - b / (3.0 * a)).clamp(delta, 1.0);
    (r1, (r1 - delta).clamp(0.0, 1.0))
}

/// Mann–Whitney's U of sample `x` against `y` (each `(value, count)`), and the standardized
/// statistic with the tie and continuity corrections: positive when `x` tends to be larger.
pub fn mann_whitney_u(x: &[(f64, u64)], y: &[(f64, u64)]) -> (f64, f64) {
    // (value, count in x, count in y), merged by value.
    let mut all: Vec<(f64, u64, u64)> = x
        .iter()
        .filter(|p| p.0.is_finite())
        .map(|&(v, n)| (v, n, 0))
        .chain(y.iter().filter(|p| p.0.is_finite()).map(|&(v, n)| (v, 0, n)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut nx, mut ny, mut rank_sum_x, mut ties) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let mut below = 0.0f64;
    let mut i = 0;
    while i < all.len() {
        let value = all[i].0;
        let (mut in_x, mut in_y) = (0u64, 0u64);
        while i < all.len() && all[i].0 == value {
            in_x += all[i].1;
            in_y += all[i].2;
            i += 1;
        }
        let (in_x, in_y) = (in_x as f64, in_y as f64);
        let t = in_x + in_y;
        // The tied values share the mean of the ranks below+1 ..= below+t.
        rank_sum_x += in_x * (below + (t + 1.0) / 2.0);
        ties += t * t * t - t;
        below += t;
        nx += in_x;
        ny += in_y;
    }
    let u = rank_sum_x - nx * (nx + 1.0) / 2.0;
    let total = nx + ny;
    if nx == 0.0 || ny == 0.0 {
        return (u, 0.0);
    }
    let variance = nx * ny / 12.0 * ((total + 1.0) - ties / (total * (total - 1.0)));
    if variance.is_nan() || variance <= 0.0 {
        // Every value tied: no evidence either way.
        return (u, 0.0);
    }
    let excess = u - nx * ny / 2.0;
    // Continuity: U moves in steps of ½ (ties), so half a step toward the mean is conservative.
    let corrected = if excess > 0.0 { (excess - 0.5).max(0.0) } else { (excess + 0.5).min(0.0) };
    (u, corrected / variance.sqrt())
}

/// `P(Z ≥ z)` for a standard normal `Z`.
pub fn upper_tail(z: f64) -> f64 {
    if z.is_nan() {
        return 1.0;
    }
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function (Numerical Recipes' `erfcc`, relative error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

impl Judgement {
    /// The judgement in words, with both versions' numbers and the test's result, e.g.
    /// `green is slower than blue beyond the 10% tolerance (green vs blue: p50 26.6ms vs 20.5ms,
    /// p90 53.2ms vs 41.0ms, p99 81.9ms vs 73.7ms (800 vs 800 timed answers)); Mann–Whitney U =
    /// 378934, z = 6.38, p = 8.8e-11 < 0.01 (99% confidence)`.
    pub fn reason(&self) -> String {
        let c = &self.criteria;
        let (b, g) = (&self.blue, &self.green);
        let numbers = match c.metric {
            JudgedMetric::ErrorRate => format!(
                "error rate {}% ({} of {}) vs {}% ({} of {})",
                percent(g.error_rate),
                g.errors,
                g.requests,
                percent(b.error_rate),
                b.errors,
                b.requests
            ),
            JudgedMetric::Latency => format!(
                "p50 {} vs {}, p90 {} vs {}, p99 {} vs {} ({} vs {} timed answers)",
                seconds(g.p50),
                seconds(b.p50),
                seconds(g.p90),
                seconds(b.p90),
                seconds(g.p99),
                seconds(b.p99),
                g.timed,
                b.timed
            ),
        };
        let claim = match c.metric {
            JudgedMetric::ErrorRate => {
                format!("fails more than blue beyond the {} point tolerance", percent(c.tolerance))
            }
            JudgedMetric::Latency => {
                format!("is slower than blue beyond the {}% tolerance", percent(c.tolerance))
            }
        };
        // A judge of mirrored traffic says whose answers it compared.
        let (green, sides) = match c.source {
            JudgedSource::Served => ("green", "green vs blue"),
            JudgedSource::Mirrored => (
                "green, answering copies of production's requests,",
                "green's copies vs blue's clients",
            ),
        };
        let Some(test) = &self.test else {
            let (gs, bs) = match c.metric {
                JudgedMetric::ErrorRate => (g.requests, b.requests),
                JudgedMetric::Latency => (g.timed, b.timed),
            };
            return format!(
                "too few samples to judge whether {green} {claim}: green {gs}, blue {bs}, at \
                 least {} each needed ({sides}: {numbers})",
                c.min_samples
            );
        };
        let (verdict, relation) = match self.verdict {
            Verdict::Worse => (green.to_string(), "<"),
            _ => (format!("{green} is not shown to be worse: it"), "≥"),
        };
        let u = test.u.map_or(String::new(), |u| format!(" = {u}"));
        format!(
            "{verdict} {claim} ({sides}: {numbers}); {}{u}, z = {:.2}, p = {} {relation} {} \
             ({}% confidence)",
            test.test,
            test.z,
            probability(test.p_value),
            probability(c.significance()),
            percent(c.confidence)
        )
    }
}

/// `1.5` for 0.015 (a fraction as a percentage, shortest form).
fn percent(fraction: f64) -> String {
    let value = (fraction * 100.0 * 1e6).round() / 1e6;
    format!("{value}")
}

/// `2.3e-16`, `0.043`.
fn probability(p: f64) -> String {
    if p < 0.001 { format!("{p:.1e}") } else { format!("{}", (p * 1000.0).round() / 1000.0) }
}

/// `26.0ms`, `1.250s`, `-` for none.
fn seconds(value: Option<f64>) -> String {
    match value {
        None => "-".to_string(),
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1000.0),
        Some(s) => format!("{s:.3}s"),
    }
}
