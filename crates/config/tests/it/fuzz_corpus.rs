//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the properties the fuzz
//! targets check (`config::fuzzing`), so every input the fuzzer kept is checked on every test run.

use testkit::fuzz_corpus::replay;

#[test]
fn taskdef_corpus_holds_its_properties() {
    replay("taskdef", config::fuzzing::taskdef);
}

#[test]
fn appspec_yaml_corpus_holds_its_properties() {
    replay("appspec_yaml", config::fuzzing::appspec_yaml);
}

#[test]
fn appspec_json_corpus_holds_its_properties() {
    replay("appspec_json", config::fuzzing::appspec_json);
}

#[test]
fn cutover_yaml_corpus_holds_its_properties() {
    replay("cutover_yaml", config::fuzzing::cutover_yaml);
}
