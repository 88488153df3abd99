//! Fuzz target `sql`: see `velo_engine::fuzzing::app_with`, with every
//! connector of the build (the Kafka keys are validated too).
#![no_main]

use std::sync::LazyLock;

static ENGINE: LazyLock<velo_engine::Engine> = LazyLock::new(|| {
    let mut r = velo_connectors::registry::Registry::builtin();
    velo_kafka::register(&mut r);
    velo_engine::Engine::new(r)
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| velo_engine::fuzzing::app_with(data, &ENGINE));
