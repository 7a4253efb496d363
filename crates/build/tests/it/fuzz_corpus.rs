//! Replays the committed fuzz corpus of the `buildspec` target (`fuzz/corpus/buildspec/`)
//! through the property it checks (`build::fuzzing::buildspec`), on every test run.

use std::path::PathBuf;

#[test]
fn buildspec_corpus_holds_its_properties() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/buildspec");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut count = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| build::fuzzing::buildspec(&data));
        assert!(outcome.is_ok(), "{}: the property failed on this input", path.display());
        count += 1;
    }
    assert!(count > 0, "{}: no corpus", dir.display());
}
