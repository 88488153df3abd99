//! The connector kinds of this build: the built-in ones of `velo-connectors`
//! and the Kafka connector of `velo-kafka`.

use std::sync::LazyLock;

use velo_connectors::registry::Registry;

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let mut r = Registry::builtin();
    velo_kafka::register(&mut r);
    r
});

/// Every source and sink kind this build can create.
pub fn registry() -> &'static Registry {
    &REGISTRY
}
