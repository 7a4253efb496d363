//! Replays the committed fuzz corpus of the `metric_filter` target (`fuzz/corpus/metric_filter/`)
//! through the property it checks (`alarms::fuzzing::metric_filter`), on every test run.

#[test]
fn metric_filter_corpus_holds_its_properties() {
    testkit::fuzz_corpus::replay("metric_filter", alarms::fuzzing::metric_filter);
}
