//! What the jobs of one process share: the connector kinds of the build
//! (assembled by the binary from the connector crates; velo-engine names
//! none of them) and DataFusion's runtime environment, whose memory pool
//! every job's operators reserve from.

use std::fmt;
use std::sync::Arc;

use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool, UnboundedMemoryPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use object_store::registry::DefaultObjectStoreRegistry;
use velo_connectors::ConnectorContext;
use velo_connectors::registry::Registry;

/// The engine of a process: a connector registry and a runtime
/// environment, cheap to clone, shared by every job it plans and runs.
#[derive(Clone)]
pub struct Engine {
    registry: Arc<Registry>,
    runtime: Arc<RuntimeEnv>,
    connectors: ConnectorContext,
    /// Plans jobs that name a `cluster`.
    cluster: Option<Arc<dyn crate::plan::ClusterPlanner>>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<_> = self.registry.sources().map(|(k, _)| k).collect();
        f.debug_struct("Engine")
            .field("sources", &kinds)
            .field("memory_pool", &self.runtime.memory_pool)
            .finish()
    }
}

impl Default for Engine {
    /// The built-in connectors of `velo-connectors` only (files,
    /// generators, stdout, blackhole), no memory limit.
    fn default() -> Self {
        Self::new(Registry::builtin())
    }
}

impl Engine {
    /// An engine creating connectors from `registry`, with no memory limit.
    pub fn new(registry: Registry) -> Self {
        Self::with_pool(registry, Arc::new(UnboundedMemoryPool::default()))
    }

    /// An engine whose jobs together may reserve at most `bytes` of memory
    /// for their operators' state: a reservation past it fails the epoch
    /// with DataFusion's "resources exhausted" error naming the operator.
    pub fn with_memory_limit(registry: Registry, bytes: usize) -> Self {
        Self::with_pool(registry, Arc::new(GreedyMemoryPool::new(bytes)))
    }

    fn with_pool(registry: Registry, pool: Arc<dyn MemoryPool>) -> Self {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool)
            .build_arc()
            .expect("a runtime environment without disk or object stores builds");
        Self {
            registry: Arc::new(registry),
            runtime,
            connectors: ConnectorContext::new(Arc::new(DefaultObjectStoreRegistry::new())),
            cluster: None,
        }
    }

    /// Jobs that name a `cluster` are planned by `planner`.
    pub fn with_cluster(mut self, planner: Arc<dyn crate::plan::ClusterPlanner>) -> Self {
        self.cluster = Some(planner);
        self
    }

    /// What plans jobs on a cluster, if this engine has one.
    pub fn cluster(&self) -> Option<Arc<dyn crate::plan::ClusterPlanner>> {
        self.cluster.clone()
    }

    /// What connectors are created with: `check` (validate, explain)
    /// makes them connect to nothing.
    pub fn connector_context(&self, check: bool) -> ConnectorContext {
        if check {
            self.connectors.clone().offline()
        } else {
            self.connectors.clone()
        }
    }

    /// The connector kinds.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The runtime environment every job's session uses.
    pub fn runtime_env(&self) -> Arc<RuntimeEnv> {
        self.runtime.clone()
    }

    /// Bytes reserved now by the operators of every job.
    pub fn memory_reserved(&self) -> usize {
        self.runtime.memory_pool.reserved()
    }
}
