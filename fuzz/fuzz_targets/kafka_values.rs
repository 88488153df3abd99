//! Fuzz target `kafka_values`: see `velo_kafka::fuzzing::values`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| velo_kafka::fuzzing::values(data));
