#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ci::fuzzing::webhook_payload(data));
