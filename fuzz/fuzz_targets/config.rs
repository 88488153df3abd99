//! Fuzz target `config`: see `velo_config::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| velo_config::fuzzing::config(data));
