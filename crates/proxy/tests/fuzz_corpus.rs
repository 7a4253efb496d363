//! Replays every committed input of the load balancer's fuzz targets (`fuzz/corpus/<target>/`)
//! through the property the target checks (`proxy::fuzzing`), so that each input found once
//! keeps being checked without cargo-fuzz. See fuzz/README.md.

use testkit::fuzz_corpus::replay;

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
