//! How long reading a cutover.yaml of 10 load balancers, 1,000 target groups and 10,000 targets
//! takes (the file `cargo xtask bench-scale` applies, ~290 KB), next to an anchor that does far
//! less: `serde_json` reading the same data written as JSON, into an untyped value with no
//! positions and no checks. Prints milliseconds per parse for each step and the ratio to the
//! anchor; the median of the rounds, interleaved so that a noisy neighbour hits all alike.
//!
//! ```sh
//! cargo run --release -p config --example bench_parse [-- --rounds 50 --file cutover.yaml]
//! ```

use std::time::{Duration, Instant};

use syntax::{Node, Value};

/// Target groups per load balancer and targets per target group, as in `bench-scale`.
const GROUPS_PER_LB: usize = 100;
const TARGETS_PER_GROUP: usize = 10;
const LOAD_BALANCERS: usize = 10;

fn main() {
    let mut rounds = 50usize;
    let mut file: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--rounds", Some(n)) => rounds = n.parse::<usize>().expect("--rounds N").max(1),
            ("--file", Some(path)) => file = Some(path),
            _ => {
                eprintln!("usage: bench_parse [--rounds N] [--file cutover.yaml]");
                std::process::exit(2);
            }
        }
    }
    let yaml = match &file {
        Some(path) => std::fs::read_to_string(path).expect("read the file"),
        None => cutover_yaml(),
    };
    let doc = syntax::tree::parse("cutover.yaml", &yaml, syntax::tree::Syntax::JsonOrYaml)
        .expect("the benchmark's file parses");
    let json = serde_json::to_string(&to_json(&doc.root)).expect("JSON");
    // Once before timing: the result must be a valid file, or the figures mean nothing.
    config::parse_cutover_file("cutover.yaml", &yaml).expect("a valid cutover.yaml");

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
        "config bench_parse: cutover.yaml of {} KB, median of {rounds} interleaved rounds",
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

/// The file `cargo xtask bench-scale` applies at its large size: load balancers of one listener
/// whose rules forward (by host) to pairs of target groups of 10 static targets each.
fn cutover_yaml() -> String {
    let mut yaml = String::from("load_balancers:\n");
    let mut groups = String::from("target_groups:\n");
    for lb in 0..LOAD_BALANCERS {
        yaml += &format!(
            "  - name: lb{lb}\n    listeners:\n      - name: http\n        port: {}\n        \
             default_action: {{ fixed_response: {{ status_code: 404 }} }}\n        rules:\n          \
             - {{ priority: 1, conditions: [{{ path_pattern: ['/'] }}], action: {{ fixed_response: \
             {{ status_code: 200, body: x }} }} }}\n",
            20_000 + lb
        );
        for pair in 0..GROUPS_PER_LB / 2 {
            let (blue, green) = (format!("lb{lb}-{pair}-b"), format!("lb{lb}-{pair}-g"));
            yaml += &format!(
                "          - {{ priority: {}, conditions: [{{ host_header: [svc{pair}.example.com] }}], \
                 action: {{ forward: [{{ target_group: {blue}, weight: 1 }}, {{ target_group: {green}, weight: 0 }}] }} }}\n",
                pair + 2
            );
            for (k, name) in [blue, green].iter().enumerate() {
                let n = (lb * GROUPS_PER_LB + pair * 2 + k) * TARGETS_PER_GROUP;
                let targets: Vec<String> = (n..n + TARGETS_PER_GROUP)
                    .map(|t| format!("127.89.{}.{}:9", t / 250, t % 250 + 1))
                    .collect();
                groups += &format!("  - {{ name: {name}, targets: [{}] }}\n", targets.join(", "));
            }
        }
    }
    yaml + &groups
}
