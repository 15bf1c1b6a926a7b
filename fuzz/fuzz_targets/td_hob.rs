#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tdxlab::fuzzing::td_hob(data));
