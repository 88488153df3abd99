//! `cluster`: a job's bounded query planned for the executors of a
//! cluster (Apache DataFusion Ballista, in the `velo-cluster` crate, which
//! the binary hands the engine as a [`ClusterPlanner`]). The executors read
//! the job's files themselves ([`velo_connectors::ListingSpec`]); the plan
//! that comes back streams the results into this process, where the job's
//! sinks write and commit them as after any epoch.

use std::sync::Arc;

use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::sqlparser::ast::Query;
use velo_connectors::{ListingSpec, Source};

use crate::plan::JobPlan;
use crate::{EngineError, Result};

/// Plans queries on a cluster.
#[async_trait::async_trait]
pub trait ClusterPlanner: Send + Sync + std::fmt::Debug {
    /// A session whose plans run on the cluster at `url` (`df://host:port`),
    /// with `tables` registered by name.
    async fn session(
        &self,
        url: &str,
        tables: &[(String, ListingSpec)],
    ) -> std::result::Result<SessionContext, String>;

    /// The file scans the cluster at `url` ran for the executed `plan`:
    /// each scan's first file (its path in its store) and the rows the
    /// scan produced, as the executors reported them to the scheduler.
    async fn scanned(
        &self,
        url: &str,
        plan: &Arc<dyn ExecutionPlan>,
    ) -> std::result::Result<Vec<(String, u64)>, String>;
}

/// A query planned again in another session (a cluster's, or a batch one).
pub(crate) struct Replanned {
    pub ctx: SessionContext,
    pub logical: LogicalPlan,
    pub physical: Arc<dyn ExecutionPlan>,
}

/// What the cluster would read of each source, or why the job cannot run
/// there: its query must be a bounded batch query over files.
pub(crate) fn tables(
    plan: &JobPlan,
    sources: &[Arc<dyn Source>],
    windowed: bool,
    updating: bool,
) -> Result<Vec<(String, ListingSpec)>> {
    let refuse = |why: String| {
        Err(EngineError::Invalid(format!(
            "job '{}': 'cluster' runs bounded batch queries over files on the cluster's executors, and {why}; run it without 'cluster' (this process runs it the same way, streaming)",
            plan.name
        )))
    };
    if windowed {
        return refuse("this query has windows".into());
    }
    if updating {
        return refuse("this query's result is updating (EMIT CHANGES)".into());
    }
    let mut tables = Vec::new();
    for s in sources {
        match s.listing() {
            Ok(spec) => tables.push((s.name().to_string(), spec)),
            Err(why) => return refuse(why),
        }
    }
    Ok(tables)
}

/// Phase: the query planned again in a session of the cluster at `url`.
pub(crate) async fn plan(
    plan: &JobPlan,
    url: &str,
    tables: &[(String, ListingSpec)],
    query: &Query,
) -> Result<Replanned> {
    let planner = plan.engine.cluster().ok_or_else(|| {
        EngineError::Invalid(format!(
            "job '{}': this build of velo cannot run jobs on a cluster ('cluster' = '{url}')",
            plan.name
        ))
    })?;
    let ctx = planner.session(url, tables).await.map_err(|e| {
        EngineError::Invalid(format!(
            "job '{}': cannot plan on the cluster at '{url}': {e}",
            plan.name
        ))
    })?;
    let logical = velo_sql::lower::to_logical_plan(&ctx.state(), query).await?;
    let logical = super::listing::plain_output(logical)?;
    let physical = ctx.state().create_physical_plan(&logical).await?;
    Ok(Replanned {
        ctx,
        logical,
        physical,
    })
}
