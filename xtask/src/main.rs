//! Workspace automation. `cargo xtask bench-lb` measures cutover's load balancer against the
//! backend alone, nginx and HAProxy with wrk; `cargo xtask backend` is the fixed HTTP backend the
//! benchmark starts (a separate process so it never shares a runtime with what is measured);
//! `cargo xtask bench-rollback` measures how fast an alarm puts a bad release back on blue, what
//! a shadow phase and the canary judge catch;
//! `cargo xtask bench-scale` measures apply, a routing change and idle CPU with 1,000 target groups;
//! `cargo xtask bench-overview` times the console's overview with 10,000 past deployments;
//! `cargo xtask bench-parse` times reading bench-scale's cutover.yaml of 10,000 targets;
//! `cargo xtask tidy` checks the rules of ARCHITECTURE.md that a machine can check.

mod backend;
mod bench;
mod overview;
mod parse;
mod rollback;
mod scale;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench-lb") => bench::run(&args[1..]),
        Some("backend") => backend::run(&args[1..]),
        Some("bench-rollback") => rollback::run(&args[1..]),
        Some("bench-scale") => scale::run(&args[1..]),
        Some("bench-overview") => overview::run(&args[1..]),
        Some("bench-parse") => parse::run(&args[1..]),
        Some("tidy") => xtask::tidy::run(&args[1..]).map_err(|e| anyhow::anyhow!("{e}")),
        _ => {
            eprintln!(
                "usage: cargo xtask bench-lb [--duration SECS] [--connections N] [--threads 1,2] [--lb auto|cutover|example]\n       \
                 cargo xtask bench-rollback [--runs N] [--only retry|shadow|slow] [--debug]\n       \
                 cargo xtask bench-scale [--idle-seconds N] [--debug]\n       \
                 cargo xtask bench-overview [--requests N] [--cutover PATH]\n       \
                 cargo xtask bench-parse [--rounds N] [--file PATH]\n       \
                 cargo xtask tidy\n       \
                 cargo xtask backend --addr ADDR [--threads N] [--name NAME]"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// A loopback address for a server a benchmark starts next. Not port 0: see `testkit::free_port`.
fn free_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], testkit::free_port()))
}

/// The workspace root, and where cargo puts what it builds there (`CARGO_TARGET_DIR` when set).
fn workspace() -> (std::path::PathBuf, std::path::PathBuf) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    (root, target)
}
