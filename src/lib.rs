//! # velostream: the `velo` binary's library
//!
//! The one place where the connectors of this build are assembled: the
//! built-in ones of `velo-connectors` (files, generators, stdout,
//! blackhole) and each connector crate with a heavy SDK (`velo-kafka`, `velo-delta`, `velo-iceberg`),
//! one registration line each. The engine (`velo-engine`) plans and runs
//! jobs with whatever [`engine`] hands it and names no connector itself.

use velo_connectors::registry::Registry;
use velo_engine::Engine;

/// Every connector kind of this build.
pub fn registry() -> Registry {
    let mut r = Registry::builtin();
    velo_kafka::register(&mut r);
    velo_delta::register(&mut r);
    velo_iceberg::register(&mut r);
    r
}

/// The engine of a `velo` process: [`registry`]'s connectors, no memory
/// limit.
pub fn engine() -> Engine {
    Engine::new(registry())
}
