#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tdxlab::fuzzing::tdvf_image(data));
