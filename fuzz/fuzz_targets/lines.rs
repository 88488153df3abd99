//! Fuzz target `lines`: see `velo_connectors::fuzzing::lines`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| velo_connectors::fuzzing::lines(data));
