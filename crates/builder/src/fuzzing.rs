//! The property the `buildspec` fuzz target checks (`fuzz/fuzz_targets/buildspec.rs`), here so
//! that this crate's tests replay the committed corpus (`fuzz/corpus/buildspec/`) without
//! cargo-fuzz: a rejected buildspec has errors, each at a real line and column of the file; an
//! accepted one parses again to the same value and notes (`syntax::fuzzing`).

use crate::parse_buildspec;

/// `buildspec.yml`; panics when a property does not hold.
pub fn buildspec(data: &[u8]) {
    syntax::fuzzing::check_parser("buildspec.yml", data, parse_buildspec);
}
