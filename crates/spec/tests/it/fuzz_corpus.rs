//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the properties the fuzz
//! targets check (`spec::fuzzing`), so every input the fuzzer kept is checked on every test run.

use std::path::PathBuf;

/// Runs `property` on every file of `fuzz/corpus/<target>/`; returns how many there were.
pub fn replay(target: &str, property: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut count = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| property(&data));
        assert!(outcome.is_ok(), "{}: the property failed on this input", path.display());
        count += 1;
    }
    count
}

#[test]
fn taskdef_corpus_holds_its_properties() {
    assert!(replay("taskdef", spec::fuzzing::taskdef) > 0);
}

#[test]
fn appspec_yaml_corpus_holds_its_properties() {
    assert!(replay("appspec_yaml", spec::fuzzing::appspec_yaml) > 0);
}

#[test]
fn appspec_json_corpus_holds_its_properties() {
    assert!(replay("appspec_json", spec::fuzzing::appspec_json) > 0);
}

#[test]
fn cutover_yaml_corpus_holds_its_properties() {
    assert!(replay("cutover_yaml", spec::fuzzing::cutover_yaml) > 0);
}
