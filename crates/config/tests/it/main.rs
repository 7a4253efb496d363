//! The spec crate's tests, one binary: data-driven checks of rendered diagnostics (file, line,
//! column, path, message) and the seeds' own files. `UPDATE_EXPECT=1 cargo test -p spec`
//! rewrites the snapshots.

mod access;
mod acme;
mod appspec;
mod cutover_file;
mod fuzz_corpus;
mod limits;
mod listener_rules;
mod monitoring;
mod pipelines;
mod positions;
mod retry_on_blue;
mod seeds;
mod shadow_traffic;
mod taskdef;

use expect_test::Expect;

/// Validates `text` as `file` (kind detected as `cutover validate` does) and compares everything
/// it reports, one diagnostic per line, or `ok` when there is nothing to say.
#[track_caller]
pub fn check(file: &str, text: &str, expect: Expect) {
    expect.assert_eq(&render(config::validate(file, text)));
}

pub fn render(result: Result<Vec<config::Diagnostic>, config::Errors>) -> String {
    let lines: Vec<String> = match result {
        Ok(notes) => notes.iter().map(ToString::to_string).collect(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    };
    if lines.is_empty() { "ok\n".to_string() } else { lines.join("\n") + "\n" }
}
