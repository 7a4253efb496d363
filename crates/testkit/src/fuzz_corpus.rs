//! The committed corpora of the fuzz targets (`fuzz/corpus/<target>/`), replayed by each tested
//! crate's own tests through the property its target checks, so every input the fuzzer kept is
//! checked on every test run without cargo-fuzz (see fuzz/README.md).

use std::path::PathBuf;

/// Runs `property` on every file of `fuzz/corpus/<target>/` and panics, naming the input, on the
/// first that fails it; a target without a corpus fails too. Returns how many inputs it ran.
pub fn replay(target: &str, property: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut replayed = 0;
    for entry in entries {
        let path = entry.expect("a corpus directory entry").path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| property(&data));
        assert!(outcome.is_ok(), "{target}: the property fails on {}", path.display());
        replayed += 1;
    }
    assert!(replayed > 0, "{target}: no corpus in {}", dir.display());
    replayed
}
