//! Integration tests of the build crate: buildspec parsing (seeds and mistakes), the image files,
//! and real builds run by bash in temporary directories.

mod artifacts;
mod fuzz_corpus;
mod image;
mod parse;
mod run;
mod seeds;

use expect_test::Expect;

/// Renders a parse result the way `cutover validate` prints it: every diagnostic on its line.
pub fn check_errors(file: &str, text: &str, expect: Expect) {
    match builder::parse_buildspec(file, text) {
        Ok(parsed) => panic!("expected errors, parsed: {:#?}", parsed.value),
        Err(errors) => expect.assert_eq(&builder::render(&errors.0)),
    }
}

/// The notes of a buildspec that parses.
pub fn check_notes(file: &str, text: &str, expect: Expect) -> builder::BuildSpec {
    match builder::parse_buildspec(file, text) {
        Ok(parsed) => {
            expect.assert_eq(&builder::render(&parsed.notes));
            parsed.value
        }
        Err(errors) => panic!("expected a parse, got:\n{errors}"),
    }
}

use std::path::PathBuf;
use std::time::Duration;

use builder::{BuildContext, BuildResult, MemorySink, PhaseStatus, PhaseType};

/// A source directory and an artifacts directory, side by side in a temporary directory.
pub struct Fixture {
    _tmp: tempfile::TempDir,
    pub src: PathBuf,
    pub out: PathBuf,
}

pub fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let src = tmp.path().join("src");
    let out = tmp.path().join("artifacts");
    std::fs::create_dir_all(&src).expect("source directory");
    Fixture { _tmp: tmp, src, out }
}

impl Fixture {
    pub fn context(&self) -> BuildContext {
        let mut ctx = BuildContext::new("demo:0f4c6b2e", &self.src, &self.out);
        // Generous for a slow CI machine; the timeout test sets its own.
        ctx.timeout = Duration::from_secs(120);
        ctx
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.src.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("parent directory");
        }
        std::fs::write(path, text).expect("write file");
    }
}

/// What a test build left behind.
pub struct Ran {
    pub result: BuildResult,
    pub log: MemorySink,
    pub fx: Fixture,
}

impl Ran {
    pub fn status(&self, phase: PhaseType) -> PhaseStatus {
        self.result.phase(phase).map(|p| p.status).expect("every phase is recorded")
    }

    pub fn statuses(&self) -> Vec<(&'static str, &'static str)> {
        self.result.phases.iter().map(|p| (p.phase.as_str(), p.status.as_str())).collect()
    }
}

pub fn parse(yaml: &str) -> builder::BuildSpec {
    match builder::parse_buildspec("buildspec.yml", yaml) {
        Ok(p) => p.value,
        Err(e) => panic!("test buildspec does not parse:\n{e}"),
    }
}

/// Runs `yaml` in a fresh fixture; `setup` adjusts the context and the source directory.
pub async fn run_build(yaml: &str, setup: impl FnOnce(&Fixture, &mut BuildContext)) -> Ran {
    let spec = parse(yaml);
    let fx = fixture();
    let mut ctx = fx.context();
    setup(&fx, &mut ctx);
    let log = MemorySink::new();
    let result = builder::run(&spec, ctx, log.clone()).await;
    Ran { result, log, fx }
}
