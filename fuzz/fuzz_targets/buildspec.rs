#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| builder::fuzzing::buildspec(data));
