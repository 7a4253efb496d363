//! The canary judge on synthetic, seeded traffic: how often it is wrong is counted, not hoped.

use expect_test::expect;

use crate::judge::{
    JudgeCriteria, JudgedMetric, JudgedSource, Observed, Verdict, farrington_manning_z, judge,
    mann_whitney_u, restricted_rates, upper_tail,
};

/// Seeds per false-positive count.
const SEEDS: u64 = 1000;

/// At 99 % confidence a green exactly at the tolerance is judged worse in at most 1 % of
/// windows: 10 of 1000 expected. The bound allows for chance (binomial, n = 1000, p = 0.01:
/// 20 or more happens with probability 0.0016).
const FALSE_POSITIVES_MAX: usize = 20;

/// splitmix64: a seeded generator, so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn standard_normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.unit()).cos()
    }

    fn errors(&mut self, requests: u64, rate: f64) -> u64 {
        (0..requests).filter(|_| self.unit() < rate).count() as u64
    }
}

fn criteria(metric: JudgedMetric, tolerance: f64) -> JudgeCriteria {
    JudgeCriteria {
        metric,
        source: JudgedSource::Served,
        tolerance,
        confidence: 0.99,
        min_samples: 50,
    }
}

fn requests(requests: u64, errors: u64) -> Observed {
    Observed { requests, errors, latencies: Vec::new() }
}

/// The upper bound in seconds of the data plane's response-time bucket of `us` microseconds:
/// eight buckets per doubling (`routes::latency_bucket`'s scheme, repeated here because this crate
/// knows no data plane).
fn binned(us: u64) -> f64 {
    if us < 8 {
        return us as f64 / 1e6;
    }
    let shift = 63 - us.leading_zeros() - 3;
    (((us >> shift) + 1) << shift) as f64 / 1e6 - 1e-6
}

/// `n` response times of a service whose median is `median_ms` (log-normal, σ = 0.5: p99 about
/// 3.2 × the median), binned as the data plane reports them.
fn latencies(rng: &mut Rng, n: u64, median_ms: f64) -> Observed {
    let mut counts: std::collections::BTreeMap<u64, u64> = Default::default();
    for _ in 0..n {
        let ms = median_ms * (0.5 * rng.standard_normal()).exp();
        *counts.entry((ms * 1000.0) as u64).or_default() += 1;
    }
    let mut binned_counts: Vec<(f64, u64)> = Vec::new();
    for (us, count) in counts {
        binned_counts.push((binned(us), count));
    }
    Observed { requests: n, errors: 0, latencies: binned_counts }
}

fn fires(criteria: &JudgeCriteria, blue: &Observed, green: &Observed) -> bool {
    judge(criteria, blue, green).verdict == Verdict::Worse
}

#[test]
fn equal_error_rates_are_judged_worse_no_more_often_than_the_confidence_allows() {
    // Tolerance 0 is the hardest case: equal versions sit exactly on the boundary.
    let strict = criteria(JudgedMetric::ErrorRate, 0.0);
    let mut false_positives = 0;
    for seed in 0..SEEDS {
        let mut rng = Rng(seed);
        let blue = requests(2000, rng.errors(2000, 0.02));
        let green = requests(1500, rng.errors(1500, 0.02));
        false_positives += usize::from(fires(&strict, &blue, &green));
    }
    eprintln!("{false_positives} of {SEEDS} equal-enough windows judged worse");
    assert!(false_positives <= FALSE_POSITIVES_MAX, "{false_positives} of {SEEDS} fired");

    // With the usual 1-point tolerance, equal versions are far from it: never judged worse.
    let usual = criteria(JudgedMetric::ErrorRate, 0.01);
    for seed in 0..SEEDS {
        let mut rng = Rng(seed);
        let blue = requests(2000, rng.errors(2000, 0.02));
        let green = requests(1500, rng.errors(1500, 0.02));
        assert!(
            !fires(&usual, &blue, &green),
            "seed {seed}: {}",
            judge(&usual, &blue, &green).reason()
        );
    }
}

#[test]
fn a_green_exactly_at_the_error_tolerance_is_judged_worse_no_more_often_than_the_confidence_allows()
{
    // Rare errors are where a Wald test goes wrong: blue at 0.5 %, green at 1.5 %, 1 point allowed.
    let c = criteria(JudgedMetric::ErrorRate, 0.01);
    let mut false_positives = 0;
    for seed in 0..SEEDS {
        let mut rng = Rng(seed);
        let blue = requests(1000, rng.errors(1000, 0.005));
        let green = requests(400, rng.errors(400, 0.015));
        false_positives += usize::from(fires(&c, &blue, &green));
    }
    eprintln!("{false_positives} of {SEEDS} equal-enough windows judged worse");
    assert!(false_positives <= FALSE_POSITIVES_MAX, "{false_positives} of {SEEDS} fired");
}

#[test]
fn a_green_failing_beyond_the_tolerance_is_judged_worse() {
    let c = criteria(JudgedMetric::ErrorRate, 0.01);
    let mut caught = 0;
    for seed in 0..SEEDS {
        let mut rng = Rng(seed);
        let blue = requests(2000, rng.errors(2000, 0.01));
        let green = requests(1000, rng.errors(1000, 0.06));
        caught += usize::from(fires(&c, &blue, &green));
    }
    eprintln!("{caught} of {SEEDS} regressions caught");
    assert!(caught >= 990, "only {caught} of {SEEDS} caught");
}

#[test]
fn equal_latencies_are_judged_slower_no_more_often_than_the_confidence_allows() {
    let strict = criteria(JudgedMetric::Latency, 0.0);
    let usual = criteria(JudgedMetric::Latency, 0.10);
    let mut false_positives = 0;
    for seed in 0..SEEDS {
        let mut rng = Rng(seed);
        let blue = latencies(&mut rng, 600, 20.0);
        let green = latencies(&mut rng, 300, 20.0);
        false_positives += usize::from(fires(&strict, &blue, &green));
        assert!(
            !fires(&usual, &blue, &green),
            "seed {seed}: {}",
            judge(&usual, &blue, &green).reason()
        );
    }
    eprintln!("{false_positives} of {SEEDS} equal-enough windows judged worse");
    assert!(false_positives <= FALSE_POSITIVES_MAX, "{false_positives} of {SEEDS} fired");
}

#[test]
fn a_green_thirty_percent_slower_is_judged_slower_beyond_a_ten_percent_tolerance() {
    let c = criteria(JudgedMetric::Latency, 0.10);
    let mut caught = 0;
    for seed in 0..SEEDS {
        let mut rng = Rng(seed);
        let blue = latencies(&mut rng, 600, 20.0);
        let green = latencies(&mut rng, 300, 26.0);
        caught += usize::from(fires(&c, &blue, &green));
    }
    eprintln!("{caught} of {SEEDS} regressions caught");
    assert!(caught >= 990, "only {caught} of {SEEDS} caught");
}

#[test]
fn too_few_samples_are_never_judged_however_bad_green_looks() {
    let c = criteria(JudgedMetric::ErrorRate, 0.01);
    let judgement = judge(&c, &requests(10_000, 0), &requests(49, 49));
    assert_eq!(judgement.verdict, Verdict::TooFewSamples);
    assert_eq!(judgement.test, None);
    let judgement = judge(&c, &requests(49, 0), &requests(10_000, 10_000));
    assert_eq!(judgement.verdict, Verdict::TooFewSamples);

    let c = criteria(JudgedMetric::Latency, 0.10);
    let mut rng = Rng(7);
    let slow = latencies(&mut rng, 49, 2000.0);
    let judgement = judge(&c, &latencies(&mut rng, 5000, 20.0), &slow);
    assert_eq!(judgement.verdict, Verdict::TooFewSamples);
    expect!["too few samples to judge whether green is slower than blue beyond the 10% tolerance: green 49, blue 5000, at least 50 each needed (green vs blue: p50 1.835s vs 20.5ms, p90 4.194s vs 41.0ms, p99 5.767s vs 65.5ms (49 vs 5000 timed answers))"]
        .assert_eq(&judgement.reason());
}

#[test]
fn ties_are_ranked_together_and_all_tied_values_are_no_evidence() {
    // Every answer in one bucket on both sides: no difference can be seen, and no NaN either.
    let c = criteria(JudgedMetric::Latency, 0.0);
    let same = Observed { requests: 500, errors: 0, latencies: vec![(0.02, 500)] };
    let judgement = judge(&c, &same, &same);
    assert_eq!(judgement.verdict, Verdict::NotWorse);
    let test = judgement.test.unwrap();
    assert_eq!(test.z, 0.0);
    assert!((test.p_value - 0.5).abs() < 1e-7, "{}", test.p_value);

    // Midranks: x = {1, 2, 2}, y = {2, 3}: ranks 1, 3, 3, 3, 5 → Rx = 7, U = 7 − 6 = 1.
    let (u, z) = mann_whitney_u(&[(1.0, 1), (2.0, 2)], &[(2.0, 1), (3.0, 1)]);
    assert_eq!(u, 1.0);
    // Var = 3·2/12 · (6 − (27 − 3)/(5·4)) = 0.5 · 4.8 = 2.4; (1 − 3 + ½) / √2.4.
    assert!((z - (-1.5 / 2.4f64.sqrt())).abs() < 1e-12, "{z}");

    // Heavily binned but clearly shifted by one bucket, with many samples: that is seen.
    let blue = Observed { requests: 1000, errors: 0, latencies: vec![(0.018, 700), (0.020, 300)] };
    let green = Observed { requests: 1000, errors: 0, latencies: vec![(0.018, 300), (0.020, 700)] };
    assert_eq!(judge(&c, &blue, &green).verdict, Verdict::Worse);
    assert_eq!(judge(&c, &green, &blue).verdict, Verdict::NotWorse, "faster is never worse");
}

#[test]
fn the_restricted_rates_maximize_the_likelihood_under_the_tolerance() {
    // Checked against a brute-force search over p₂ on a fine grid.
    for &(x1, n1, x2, n2, delta) in &[
        (40u64, 800u64, 1u64, 1000u64, 0.01),
        (3, 100, 0, 100, 0.01),
        (0, 50, 0, 50, 0.02),
        (20, 1000, 20, 1000, 0.0),
        (500, 600, 10, 700, 0.3),
    ] {
        let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
        let (r1, r2) = restricted_rates(p1, p2, n1 as f64, n2 as f64, delta);
        assert!((r1 - r2 - delta).abs() < 1e-9, "{r1} − {r2} ≠ {delta}");
        let log_likelihood = |q2: f64| {
            let q1 = q2 + delta;
            let term = |x: u64, n: u64, q: f64| {
                let (x, n) = (x as f64, n as f64);
                (if x > 0.0 { x * q.ln() } else { 0.0 })
                    + (if n - x > 0.0 { (n - x) * (1.0 - q).ln() } else { 0.0 })
            };
            term(x1, n1, q1) + term(x2, n2, q2)
        };
        let best = (1..1_000_000)
            .map(|i| i as f64 / 1_000_000.0 * (1.0 - delta))
            .max_by(|a, b| log_likelihood(*a).total_cmp(&log_likelihood(*b)))
            .unwrap();
        assert!((best - r2).abs() < 1e-5, "grid says p̃₂ = {best}, closed form {r2}");
    }
    // With δ = 0 it is the pooled two-proportion z-test.
    let pooled: f64 = 40.0 / 1800.0;
    let z = (40.0 / 800.0 - 0.0) / (pooled * (1.0 - pooled) * (1.0 / 800.0 + 1.0 / 1000.0)).sqrt();
    assert!((farrington_manning_z((40, 800), (0, 1000), 0.0) - z).abs() < 1e-9);
}

#[test]
fn the_normal_upper_tail_is_accurate_in_the_tails() {
    // Reference values of Q(z).
    for (z, q) in [
        (0.0, 0.5),
        (1.0, 0.158_655_253_931_457_05),
        (2.326_347_874_040_841, 0.01),
        (-1.644_853_626_951_472_2, 0.95),
        (5.0, 2.866_515_718_791_939e-7),
        (10.0, 7.619_853_024_160_527e-24),
    ] {
        let got = upper_tail(z);
        assert!(((got - q) / q).abs() < 2e-7, "Q({z}) = {got}, not {q}");
    }
}

#[test]
fn a_regression_s_reason_carries_both_sides_numbers_and_the_test() {
    let c = criteria(JudgedMetric::ErrorRate, 0.01);
    let judgement = judge(&c, &requests(1000, 1), &requests(800, 40));
    assert_eq!(judgement.verdict, Verdict::Worse);
    expect!["green fails more than blue beyond the 1 point tolerance (green vs blue: error rate 5% (40 of 800) vs 0.1% (1 of 1000)); Farrington–Manning, z = 6.05, p = 7.4e-10 < 0.01 (99% confidence)"]
        .assert_eq(&judgement.reason());

    let c = criteria(JudgedMetric::Latency, 0.10);
    let mut rng = Rng(1);
    let judgement = judge(&c, &latencies(&mut rng, 800, 20.0), &latencies(&mut rng, 800, 26.0));
    assert_eq!(judgement.verdict, Verdict::Worse);
    expect!["green is slower than blue beyond the 10% tolerance (green vs blue: p50 26.6ms vs 20.5ms, p90 53.2ms vs 41.0ms, p99 81.9ms vs 73.7ms (800 vs 800 timed answers)); Mann–Whitney U = 378934, z = 6.38, p = 8.8e-11 < 0.01 (99% confidence)"].assert_eq(&judgement.reason());
}

#[test]
fn a_judge_of_mirrored_traffic_says_it_compared_green_s_copies_with_blue_s_clients() {
    let c =
        JudgeCriteria { source: JudgedSource::Mirrored, ..criteria(JudgedMetric::Latency, 0.10) };
    let mut rng = Rng(1);
    let judgement = judge(&c, &latencies(&mut rng, 800, 20.0), &latencies(&mut rng, 400, 26.0));
    assert_eq!(judgement.verdict, Verdict::Worse);
    expect!["green, answering copies of production's requests, is slower than blue beyond the 10% tolerance (green's copies vs blue's clients: p50 26.6ms vs 20.5ms, p90 53.2ms vs 41.0ms, p99 90.1ms vs 73.7ms (400 vs 800 timed answers)); Mann–Whitney U = 183476, z = 4.15, p = 1.7e-5 < 0.01 (99% confidence)"].assert_eq(&judgement.reason());
    let too_few = judge(&c, &latencies(&mut rng, 800, 20.0), &latencies(&mut rng, 20, 26.0));
    expect!["too few samples to judge whether green, answering copies of production's requests, is slower than blue beyond the 10% tolerance: green 20, blue 800, at least 50 each needed (green's copies vs blue's clients: p50 26.6ms vs 22.5ms, p90 41.0ms vs 41.0ms, p99 73.7ms vs 61.4ms (20 vs 800 timed answers))"].assert_eq(&too_few.reason());
}

#[test]
fn criteria_out_of_range_are_refused_naming_the_field_and_the_fix() {
    let bad = JudgeCriteria {
        metric: JudgedMetric::ErrorRate,
        source: JudgedSource::Served,
        tolerance: 1.5,
        confidence: 0.3,
        min_samples: 2,
    };
    let messages: Vec<String> = bad.validate().unwrap_err().iter().map(|e| e.to_string()).collect();
    expect![[r#"
        [
            "tolerance: 150 percentage points is not a tolerance for an error rate; give 0 to less than 100, like `tolerance: 1%`",
            "confidence: 0.3 is not a confidence the judge can promise; give 0.5 to 0.9999, like `confidence: 0.99`",
            "min_samples: 2 requests per version; give 10 to 1000000000: with fewer the tests' normal approximations do not hold",
        ]
    "#]].assert_debug_eq(&messages);
    assert!(criteria(JudgedMetric::Latency, 0.1).validate().is_ok());
}
