#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| config::fuzzing::appspec_yaml(data));
