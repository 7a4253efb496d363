//! Replays every committed input of the load balancer's fuzz targets (`fuzz/corpus/<target>/`)
//! through the property the target checks (`proxy::fuzzing`), so that each input found once
//! keeps being checked without cargo-fuzz. See fuzz/README.md.

use std::path::PathBuf;

/// Runs `property` on every file of `fuzz/corpus/<target>/`; at least one must exist.
fn replay(target: &str, property: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut replayed = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| property(&data));
        assert!(outcome.is_ok(), "{target}: the property fails on {}", path.display());
        replayed += 1;
    }
    assert!(replayed > 0, "{target}: no corpus in {}", dir.display());
}

#[test]
fn the_http1_request_head_parser_holds_on_its_corpus() {
    replay("h1_request_head", proxy::fuzzing::h1_request_head);
}

#[test]
fn the_chunked_decoder_holds_on_its_corpus() {
    replay("chunked", proxy::fuzzing::chunked);
}

#[test]
fn the_upstream_response_parser_holds_on_its_corpus() {
    replay("upstream_response", proxy::fuzzing::upstream_response);
}
