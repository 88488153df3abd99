//! The DataFusion session of a job: one target partition (the job's own
//! operators decide their parallelism), our streaming operators inserted as
//! physical optimizer rules before the sanity check (which refuses an
//! aggregate over unbounded input), row errors isolated unless the job
//! fails whole batches, and our window functions registered.

use std::sync::Arc;

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use velo_config::FailureStrategy;

use crate::Result;
use crate::operators::window::Emit;
use crate::plan::JobPlan;
use crate::plan::prepare::Feeds;

/// What the job's streaming operators share with the runtime: their state
/// (checkpoints), its size, and the rows whose expressions failed.
pub(crate) struct Operators {
    pub metrics: Arc<crate::operators::metrics::WindowMetrics>,
    pub states: Arc<crate::operators::state::WindowStates>,
    pub dead_rows: Arc<crate::rowerrors::DeadRows>,
}

impl Operators {
    pub fn new(plan: &JobPlan) -> Self {
        Self {
            metrics: Arc::default(),
            states: Arc::default(),
            dead_rows: crate::rowerrors::DeadRows::new(&plan.name),
        }
    }
}

/// The session that plans `plan`'s query over `feeds`.
pub(crate) fn build(
    plan: &JobPlan,
    feeds: &Feeds,
    ops: &Operators,
    partitions: usize,
    updating: bool,
    windowed: bool,
) -> Result<SessionContext> {
    let emit = match plan.statement.emit.as_deref() {
        Some("CHANGES") => Emit::Changes,
        _ => Emit::Final,
    };
    let mut rules = PhysicalOptimizer::new().rules;
    let windows = crate::operators::window::StreamingWindows::new(
        feeds.watermark.clone(),
        ops.metrics.clone(),
        ops.states.clone(),
        emit,
        updating,
        partitions,
        feeds.all.clone(),
    );
    let row_windows = crate::operators::rowwindow::StreamingRowWindows::new(
        ops.states.clone(),
        ops.metrics.clone(),
        feeds.watermark.clone(),
        plan.statement.expire,
    );
    rules.insert(
        rules.len() - 1,
        Arc::new(crate::operators::join::StreamingJoins::new(
            feeds.all.clone(),
            windows,
            row_windows,
            feeds.watermark.clone(),
            ops.states.clone(),
            ops.metrics.clone(),
        )),
    );
    // an error on some rows affects only those rows, unless FailBatch
    let isolate_rows = plan.job.failure_strategy != FailureStrategy::FailBatch;
    if isolate_rows {
        rules.insert(
            rules.len() - 1,
            Arc::new(crate::rowerrors::IsolateRowErrors::new(
                ops.dead_rows.clone(),
            )),
        );
    }
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(8192)
        .with_information_schema(false);
    let ctx = context(config, plan.engine.runtime_env(), rules, isolate_rows);
    if windowed || updating {
        // COUNT(DISTINCT x) stays one aggregate (its accumulator keeps the
        // distinct values per window) instead of two stacked GROUP BYs
        ctx.remove_optimizer_rule("single_distinct_aggregation_to_group_by");
    }
    Ok(ctx)
}

/// The session of a job that runs as one batch plan ([`super::batch`]):
/// DataFusion's own planning on every core (the job's `partitions`, else
/// the cores), with the job's row-error isolation and functions.
pub(crate) fn batch(plan: &JobPlan, dead_rows: &Arc<crate::rowerrors::DeadRows>) -> SessionContext {
    let mut rules = PhysicalOptimizer::new().rules;
    let isolate_rows = plan.job.failure_strategy != FailureStrategy::FailBatch;
    if isolate_rows {
        // before DataFusion moves projections into the file scans, where a
        // row's failing expression would fail the whole scan
        let at = rules
            .iter()
            .position(|r| r.name() == "ProjectionPushdown")
            .unwrap_or(rules.len() - 1);
        rules.insert(
            at,
            Arc::new(crate::rowerrors::IsolateRowErrors::new(dead_rows.clone())),
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let config = SessionConfig::new()
        .with_target_partitions(plan.job.partitions.unwrap_or(cores).max(1))
        .with_information_schema(false);
    // the engine's memory pool; object stores of the job's own (its
    // sources' clients, configured with their keys)
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::from_runtime_env(
        &plan.engine.runtime_env(),
    )
    .with_object_store_registry(Arc::new(
        datafusion::execution::object_store::DefaultObjectStoreRegistry::new(),
    ))
    .build_arc()
    .unwrap_or_else(|_| plan.engine.runtime_env());
    context(config, runtime, rules, isolate_rows)
}

/// A session of `config` on `runtime` with the physical optimizer `rules`,
/// aggregate arguments hoisted where rows are isolated, and our functions.
fn context(
    config: SessionConfig,
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    rules: Vec<Arc<dyn datafusion::physical_optimizer::PhysicalOptimizerRule + Send + Sync>>,
    isolate_rows: bool,
) -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rules(rules)
        .build();
    let ctx = SessionContext::new_with_state(state);
    if isolate_rows {
        ctx.add_optimizer_rule(Arc::new(crate::rowerrors::HoistAggregateArguments));
    }
    for f in crate::operators::window::udfs() {
        ctx.register_udf(f);
    }
    ctx
}
