#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alarms::fuzzing::metric_filter(data));
