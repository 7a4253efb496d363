//! Replays the committed fuzz corpus of the `buildspec` target (`fuzz/corpus/buildspec/`)
//! through the property it checks (`builder::fuzzing::buildspec`), on every test run.

#[test]
fn buildspec_corpus_holds_its_properties() {
    testkit::fuzz_corpus::replay("buildspec", builder::fuzzing::buildspec);
}
