//! The simulation's budget of seeds, the replay of one seed, and the proof that a seed replays
//! exactly.

use std::time::Instant;

use simulation::{Config, Summary};

/// Seeds run by `cargo test -p simulation` (and `.ci/run`): about 60 s in debug on a loaded
/// 2-core machine. `cargo run -p simulation --release -- --seeds N` runs more.
const BUDGET_SEEDS: u64 = 40;

fn run_or_panic(seed: u64, config: &Config) -> Summary {
    match simulation::run(seed, config) {
        Ok(summary) => summary,
        Err(violation) => panic!("{violation}"),
    }
}

#[test]
fn a_budget_of_seeds_keeps_every_invariant() {
    let config = Config::default();
    // The campaign's own running time, for its report; the simulated clock is elsewhere.
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    let mut steps = 0;
    let mut deployments = 0;
    let mut crashes = 0;
    for seed in 0..BUDGET_SEEDS {
        let summary = run_or_panic(seed, &config);
        steps += summary.steps;
        deployments += summary.deployments;
        crashes += summary.crashes;
    }
    println!(
        "simulation: {BUDGET_SEEDS} seeds x {} steps each on average = {steps} steps, \
         {deployments} deployments, {crashes} crashes, no violation, in {:.1?}",
        steps / BUDGET_SEEDS,
        started.elapsed()
    );
    assert!(deployments > BUDGET_SEEDS * 5, "the client deploys: {deployments} deployments");
    assert!(crashes > BUDGET_SEEDS, "the control plane crashes: {crashes} crashes");
}

/// `SIM_SEED=N cargo test -p simulation -- replay` replays seed N (with `SIM_TRACE=1`, every
/// event goes to stderr). Without `SIM_SEED` it replays seed 0.
#[test]
fn replay() {
    let seed = std::env::var("SIM_SEED").map_or(0, |s| s.parse().expect("SIM_SEED is a number"));
    let summary = run_or_panic(seed, &Config::default());
    println!("{summary:?}");
}

#[test]
fn a_seed_replays_exactly() {
    let config = Config { steps: 2_000, ..Config::default() };
    let first = run_or_panic(7, &config);
    let second = run_or_panic(7, &config);
    assert_eq!(first, second, "the same seed gave two different runs");
    let other = run_or_panic(8, &config);
    assert_ne!(first.trace_hash, other.trace_hash, "two seeds gave the same trace");
}
