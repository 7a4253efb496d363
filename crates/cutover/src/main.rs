//! `cutover`: one binary for the CLI, the control plane (`cutover up`) and the data plane
//! (`cutover lb`, started by `up`).

mod access;
mod cli;
mod client;
mod login;
mod render;
mod sse;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    if !cli::is_server(&args) {
        end_quietly_on_a_closed_pipe();
    }
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// `cutover … | head` ends the CLI as it ends `cat`: by SIGPIPE, silently, instead of a panic
/// in `println!`. Not for `up` and `lb`: a pipe that a hook or a build closes early must never
/// kill the control plane or the load balancer.
#[allow(unsafe_code)]
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler code; the CLI is still single-threaded
    // here.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
