#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pipelines::fuzzing::webhook_payload(data));
