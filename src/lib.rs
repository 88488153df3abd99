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

/// What plans jobs with the `cluster` key: Apache DataFusion Ballista
/// (`velo-cluster`).
pub fn cluster() -> std::sync::Arc<dyn velo_engine::plan::ClusterPlanner> {
    std::sync::Arc::new(velo_cluster::Ballista)
}

/// The engine of a `velo` process: [`registry`]'s connectors, jobs with
/// `cluster` planned on Ballista, no memory limit.
pub fn engine() -> Engine {
    Engine::new(registry()).with_cluster(cluster())
}
