//! The properties the fuzz targets check (`fuzz/fuzz_targets/`), here so that this crate's tests
//! replay the committed corpus (`fuzz/corpus/<target>/`) through the same code without
//! cargo-fuzz. Each function takes any bytes and panics when a property does not hold (the
//! checks every file parser shares are `syntax::fuzzing`'s):
//!
//! - a rejected file has at least one error, and every diagnostic (errors and notes) is at a real
//!   place in the file: its line exists (or is the one just past the end) and its column is
//!   within that line, plus one for its end;
//! - an accepted file parses again to the same value with the same notes (nothing depends on
//!   state or order), and a task definition's stored form (its serde JSON, ECS's own form) loads
//!   back to the same value.

use crate::{parse_appspec, parse_cutover_file, parse_task_definition};
use syntax::fuzzing::check_parser;

/// `taskdef.json`.
pub fn taskdef(data: &[u8]) {
    if let Some(parsed) = check_parser("taskdef.json", data, parse_task_definition) {
        let stored = serde_json::to_string(&parsed.value).expect("a task definition serializes");
        let reloaded = parse_task_definition("stored.json", &stored)
            .unwrap_or_else(|e| panic!("the stored form of an accepted file is refused:\n{e}"));
        assert_eq!(reloaded.value, parsed.value, "the stored form loads back differently");
    }
}

/// `appspec.yaml` (YAML, or JSON: the parser takes both).
pub fn appspec_yaml(data: &[u8]) {
    appspec("appspec.yaml", data);
}

/// `appspec.json`.
pub fn appspec_json(data: &[u8]) {
    appspec("appspec.json", data);
}

fn appspec(file: &str, data: &[u8]) {
    check_parser(file, data, parse_appspec);
}

/// `cutover.yaml`.
pub fn cutover_yaml(data: &[u8]) {
    check_parser("cutover.yaml", data, parse_cutover_file);
}
