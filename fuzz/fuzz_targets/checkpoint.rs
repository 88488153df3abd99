//! Fuzz target `checkpoint`: see `velo_engine::fuzzing::checkpoint`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| velo_engine::fuzzing::checkpoint(data));
