//! The load balancer's property `proxy::fuzzing::h1_request_head` (see there), on coverage-guided input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy::fuzzing::h1_request_head(data));
