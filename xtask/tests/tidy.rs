//! The workspace passes `tidy` (`cargo xtask tidy` prints the same findings), and `tidy` reads a
//! real workspace: a tiny one under `tests/fixtures/` breaks every rule once.

use std::path::{Path, PathBuf};

use xtask::tidy::{self, Finding};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn the_workspace_is_tidy() {
    let findings = tidy::check(&workspace_root()).unwrap_or_else(|e| panic!("tidy: {e}"));
    let report: Vec<String> = findings.iter().map(Finding::to_string).collect();
    assert!(report.is_empty(), "tidy found (run `cargo xtask tidy`):\n{}", report.join("\n"));
}

#[test]
fn a_workspace_that_breaks_every_rule_gets_one_finding_per_break() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/untidy");
    let findings = tidy::check(&fixture).unwrap_or_else(|e| panic!("tidy: {e}"));
    let report: Vec<String> = findings.iter().map(Finding::to_string).collect();
    let expected = [
        "crates/model/Cargo.toml:1: `model` is a pure crate (no IO) and may not depend on `tokio`; move the code that needs it into a crate that does IO (control, proxy, runtime, store…), or, if `tokio` does no IO, add it to ALLOWED in xtask/src/tidy/purity.rs",
        "crates/model/src/lib.rs:4: `std::fs::read_to_string` is files, which a pure crate does not touch; take the result as an argument (time as `now: Timestamp`) and let the caller do the IO",
        "crates/model/Cargo.toml:1: `model` depends on `tokio`, which none of its sources uses: remove it from [dependencies] (or move it to [dev-dependencies] if only tests use it)",
        "ARCHITECTURE.md:5: this invariant names no test that enforces it (\"- **Invariant:** `model` reads no files.…\"): name it in backticks, as `crate/path.rs::test_name`, `it/file.rs::test_name` or a test file, or write one",
        "ARCHITECTURE.md:6: `model/src/lib.rs::tests::reads_nothing`: crates/model/src/lib.rs has no test function or test module `reads_nothing`: fix the name",
        "crates/model/src/lib.rs:3: function `load` is 125 lines, over the bound of 120: split it into named steps (functions that each do one job, called in sequence)",
    ];
    assert_eq!(report, expected, "\n{}", report.join("\n"));
}
