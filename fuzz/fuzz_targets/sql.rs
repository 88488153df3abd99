//! Fuzz target `sql`: see `velo_engine::fuzzing::app`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| velo_engine::fuzzing::app(data));
