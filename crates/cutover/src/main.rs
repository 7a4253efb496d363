//! `cutover`: one binary for the CLI, the control plane (`cutover up`) and the data plane
//! (`cutover lb`, started by `up`).

mod cli;
mod client;
mod render;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
