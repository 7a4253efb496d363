#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spec::fuzzing::cutover_yaml(data));
