//! The load balancer's property `proxy::fuzzing::chunked` (see there), on coverage-guided input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy::fuzzing::chunked(data));
