//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the properties the fuzz
//! targets check (`spec::fuzzing`), so every input the fuzzer kept is checked on every test run.

use testkit::fuzz_corpus::replay;

#[test]
fn taskdef_corpus_holds_its_properties() {
    replay("taskdef", spec::fuzzing::taskdef);
}

#[test]
fn appspec_yaml_corpus_holds_its_properties() {
    replay("appspec_yaml", spec::fuzzing::appspec_yaml);
}

#[test]
fn appspec_json_corpus_holds_its_properties() {
    replay("appspec_json", spec::fuzzing::appspec_json);
}

#[test]
fn cutover_yaml_corpus_holds_its_properties() {
    replay("cutover_yaml", spec::fuzzing::cutover_yaml);
}
