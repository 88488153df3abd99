//! The memory a streaming operator keeps across epochs, accounted in
//! DataFusion's memory pool: each operator partition holds a reservation
//! (`MemoryConsumer`) resized to its state after every change, and shows
//! the size as its `state_bytes` metric (`ExecutionPlan::metrics`). The
//! jobs of a process share the pool of the engine's `RuntimeEnv`, so a
//! limit (`velo run --memory-limit`) holds for all of them: a state that
//! would pass it fails its epoch with an error saying so.

use std::sync::{Arc, Mutex};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, Gauge, MetricBuilder};

/// One operator partition's share of the memory pool.
#[derive(Debug)]
pub(crate) struct StateMemory {
    name: String,
    reservation: Mutex<Option<MemoryReservation>>,
    gauge: Gauge,
}

impl StateMemory {
    /// The memory of partition `partition` of the operator `name`, shown
    /// in `metrics`.
    pub fn new(name: &str, partition: usize, metrics: &ExecutionPlanMetricsSet) -> Arc<Self> {
        Arc::new(Self {
            name: format!("{name}[{partition}]"),
            reservation: Mutex::new(None),
            gauge: MetricBuilder::new(metrics).gauge("state_bytes", partition),
        })
    }

    /// The state now holds `bytes`: the reservation follows (the first
    /// call registers it with the pool of `ctx`). Past the pool's limit the
    /// epoch fails with DataFusion's resources-exhausted error, told what
    /// to do.
    pub fn resize(&self, ctx: &TaskContext, bytes: usize) -> Result<()> {
        self.gauge.set(bytes);
        let mut r = self.reservation.lock().expect("memory reservation");
        let r = r.get_or_insert_with(|| {
            MemoryConsumer::new(self.name.clone()).register(ctx.memory_pool())
        });
        r.try_resize(bytes).map_err(|e| {
            let why = match e.find_root() {
                DataFusionError::ResourcesExhausted(why) => why.clone(),
                other => other.to_string(),
            };
            DataFusionError::ResourcesExhausted(format!(
                "the state of {} needs {bytes} bytes, more than the memory limit leaves ({why}); raise --memory-limit (velo run) or VELO_MAX_MEMORY_MB (velo server), use smaller windows or fewer keys, or set a shorter EXPIRE AFTER",
                self.name
            ))
        })
    }

    /// Bytes reserved now.
    #[cfg(test)]
    pub fn reserved(&self) -> usize {
        self.reservation
            .lock()
            .expect("memory reservation")
            .as_ref()
            .map_or(0, |r| r.size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;

    #[test]
    fn reservation_follows_the_state_and_stops_at_the_limit() {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(1000)))
            .build_arc()
            .unwrap();
        let ctx = TaskContext::default().with_runtime(runtime.clone());
        let metrics = ExecutionPlanMetricsSet::new();
        let a = StateMemory::new("Op", 0, &metrics);
        let b = StateMemory::new("Op", 1, &metrics);
        a.resize(&ctx, 600).unwrap();
        b.resize(&ctx, 300).unwrap();
        assert_eq!((a.reserved(), runtime.memory_pool.reserved()), (600, 900));
        // the pool is shared: 200 more do not fit beside the other 300
        let e = a.resize(&ctx, 800).unwrap_err().to_string();
        assert!(
            e.contains("Op[0] needs 800 bytes") && e.contains("--memory-limit"),
            "{e}"
        );
        assert_eq!(a.reserved(), 600);
        // the metric shows what the state holds, and shrinking frees the pool
        assert_eq!(
            metrics
                .clone_inner()
                .sum_by_name("state_bytes")
                .unwrap()
                .as_usize(),
            1100
        );
        a.resize(&ctx, 0).unwrap();
        assert_eq!(runtime.memory_pool.reserved(), 300);
    }
}
