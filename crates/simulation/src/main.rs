//! `simulation --seed N` replays one seed and prints its summary; `simulation --seeds N [--from S]`
//! runs seeds S..S+N and prints every violation and the totals. `--steps N` sets the random
//! phase's length. Exits 1 if any seed violated an invariant.

use std::process::ExitCode;
use std::time::Instant;

use simulation::{Config, Summary};

struct Args {
    seed: Option<u64>,
    seeds: u64,
    from: u64,
    steps: Option<u64>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args { seed: None, seeds: 1, from: 0, steps: None };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a number"))?;
        let number: u64 =
            value.parse().map_err(|_| format!("{flag} needs a number, not `{value}`"))?;
        match flag.as_str() {
            "--seed" => parsed.seed = Some(number),
            "--seeds" => parsed.seeds = number,
            "--from" => parsed.from = number,
            "--steps" => parsed.steps = Some(number),
            other => {
                return Err(format!(
                    "unknown option {other}; use --seed N, --seeds N [--from S], --steps N"
                ));
            }
        }
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("simulation: {message}");
            return ExitCode::from(2);
        }
    };
    let mut config = Config::default();
    if let Some(steps) = args.steps {
        config.steps = steps;
    }
    let seeds = match args.seed {
        Some(seed) => seed..seed + 1,
        None => args.from..args.from + args.seeds,
    };
    // The campaign's own running time, for its report; the simulated clock is elsewhere.
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    let mut total = Summary::default();
    let mut violations = 0u64;
    for seed in seeds.clone() {
        match simulation::run(seed, &config) {
            Ok(summary) => {
                if args.seed.is_some() {
                    println!("{summary:?}");
                }
                add(&mut total, &summary);
            }
            Err(violation) => {
                violations += 1;
                println!("{violation}\n");
            }
        }
    }
    println!(
        "{} seeds, {} steps, {} deployments ({} succeeded, {} failed, {} stopped, {} rolled back), \
         {} crashes, {} pauses, {} reload checks, {} violations, in {:.1?}",
        seeds.end - seeds.start,
        total.steps,
        total.deployments,
        total.succeeded,
        total.failed,
        total.stopped,
        total.rolled_back,
        total.crashes,
        total.pauses,
        total.reload_checks,
        violations,
        started.elapsed()
    );
    if violations == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn add(total: &mut Summary, run: &Summary) {
    total.steps += run.steps;
    total.deployments += run.deployments;
    total.succeeded += run.succeeded;
    total.failed += run.failed;
    total.stopped += run.stopped;
    total.rolled_back += run.rolled_back;
    total.crashes += run.crashes;
    total.pauses += run.pauses;
    total.reload_checks += run.reload_checks;
}
