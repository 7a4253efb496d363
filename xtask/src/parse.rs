//! `cargo xtask bench-parse`: how long reading the cutover.yaml `bench-scale` applies at its large
//! size takes (10 load balancers, 1,000 target groups, 10,000 targets, ~290 KB), next to an
//! anchor that does far less: `serde_json` reading the same data written as JSON, into an untyped
//! value with no positions and no checks. Prints milliseconds per parse for each step and the
//! ratio to the anchor: the median of the rounds, interleaved so that a noisy neighbour hits all
//! alike.
//!
//! ```sh
//! cargo xtask bench-parse [--rounds 50] [--file cutover.yaml]
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use syntax::{Node, Value};

use crate::scale;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut rounds = 50usize;
    let mut file: Option<String> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => rounds = it.next().context("--rounds N")?.parse::<usize>()?.max(1),
            "--file" => file = Some(it.next().context("--file PATH")?.clone()),
            other => bail!(
                "unknown option {other}; usage: cargo xtask bench-parse [--rounds N] [--file PATH]"
            ),
        }
    }
    let yaml = match &file {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => scale::large_cutover_yaml(),
    };
    let doc = syntax::tree::parse("cutover.yaml", &yaml, syntax::tree::Syntax::JsonOrYaml)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let json = serde_json::to_string(&to_json(&doc.root))?;
    // Once before timing: the result must be a valid file, or the figures mean nothing.
    config::parse_cutover_file("cutover.yaml", &yaml).map_err(|e| anyhow::anyhow!("{e}"))?;

    let (mut anchor, mut tree, mut typed, mut cli) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        anchor.push(timed(|| {
            std::hint::black_box(serde_json::from_str::<serde_json::Value>(&json).is_ok())
        }));
        tree.push(timed(|| {
            std::hint::black_box(
                syntax::tree::parse("cutover.yaml", &yaml, syntax::tree::Syntax::JsonOrYaml)
                    .is_ok(),
            )
        }));
        typed.push(timed(|| {
            std::hint::black_box(config::parse_cutover_file("cutover.yaml", &yaml).is_ok())
        }));
        // `cutover apply`'s own read, to find the task definition files to send along (the
        // benchmark's services name none; every path is asked whether it is a file).
        cli.push(timed(|| {
            std::hint::black_box(
                config::task_definition_files("cutover.yaml", &yaml, |_| true).is_empty(),
            )
        }));
    }
    let (anchor, tree, typed, cli) = (median(anchor), median(tree), median(typed), median(cli));
    println!(
        "cutover bench-parse: cutover.yaml of {} KB, median of {rounds} interleaved rounds",
        yaml.len() / 1024
    );
    println!("{:<52} {:>9} {:>7}", "", "ms/parse", "ratio");
    let rows = [
        ("anchor: serde_json, the same data as JSON, untyped", anchor),
        ("syntax::tree::parse (positioned tree)", tree),
        ("parse_cutover_file (tree, typed, checked)", typed),
        ("task_definition_files (cutover apply's own read)", cli),
    ];
    for (what, d) in rows {
        println!("{what:<52} {:>9.2} {:>7.2}", ms(d), ms(d) / ms(anchor).max(f64::EPSILON));
    }
    Ok(())
}

fn timed(f: impl FnOnce() -> bool) -> Duration {
    let start = Instant::now();
    assert!(f(), "a parse failed");
    start.elapsed()
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The tree as JSON, for the anchor.
fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &node.value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => i64::try_from(*i).map_or(J::Null, J::from),
        Value::Float(f) => J::from(*f),
        Value::Str(s) => J::String(s.clone()),
        Value::Seq(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => {
            J::Object(entries.iter().map(|e| (e.key.clone(), to_json(&e.value))).collect())
        }
    }
}
