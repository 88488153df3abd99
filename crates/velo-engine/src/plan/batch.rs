//! Backfills at batch speed: a job whose sources are all bounded Parquet
//! files or table snapshots (Delta, Iceberg: their data files,
//! [`super::files`]) and whose query needs no epochs (no window, no updating result,
//! no event time, no tuning of epochs, no checkpoint to resume from) is
//! planned as DataFusion plans a batch query: its sources become listing
//! tables ([`super::listing`]) that DataFusion scans itself, on every core,
//! with partitions pruned and Parquet predicates pushed down, instead of
//! one feed per source. The plan runs as the job's one epoch; its results
//! stream into the sinks, which commit as after any epoch. Sources in CSV
//! or JSON keep velo's own readers, which count and route bad records.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::sqlparser::ast::Query;
use velo_connectors::{ListingFormat, ListingSpec, Source};

use super::cluster::Replanned;
use super::session;
use crate::Result;
use crate::plan::JobPlan;

/// Whether the job runs as one batch plan: the listing tables of its
/// sources if so; why not, otherwise.
pub(crate) fn tables(
    plan: &JobPlan,
    sources: &[Arc<dyn Source>],
    stateful: bool,
    timed: bool,
) -> std::result::Result<Vec<(String, ListingSpec)>, String> {
    let job = &plan.job;
    let asked = [
        (job.batch_size.is_some(), "batch.size"),
        (job.batch_timeout.is_some(), "batch.timeout"),
        (job.rate_limit.is_some(), "rate_limit"),
        (job.state_dir.is_some(), "state.dir"),
    ];
    if let Some((_, key)) = asked.iter().find(|(set, _)| *set) {
        return Err(format!("'{key}' asks for epochs"));
    }
    if stateful {
        return Err("the query has windows or an updating result".into());
    }
    if timed {
        return Err("the query uses event time".into());
    }
    if plan.statement.within.is_some() {
        return Err("the query joins WITHIN an interval".into());
    }
    sources
        .iter()
        .map(|s| match s.listing() {
            Ok(spec) if spec.format == ListingFormat::Parquet => Ok((s.name().to_string(), spec)),
            Ok(_) => Err(format!(
                "source '{}' is not Parquet (velo's own reader counts and routes its bad records)",
                s.name()
            )),
            Err(why) => Err(why),
        })
        .collect()
}

/// Whether the query, planned to stream, answers the same in any order of
/// its input rows: it needs its whole input (an aggregate, a sort, a
/// window function) and takes no LIMIT of an unsorted input. (A filter or
/// projection alone keeps the files' order in a streaming run, which a
/// parallel scan would not.)
pub(crate) fn order_free(planned: &super::prepare::Planned) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::LogicalPlan;
    if !planned.whole_input {
        return false;
    }
    let mut unsorted_limit = false;
    let _ = planned.logical.apply(|p| {
        if let LogicalPlan::Limit(l) = p {
            unsorted_limit |= !matches!(l.input.as_ref(), LogicalPlan::Sort(_));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    !unsorted_limit
}

/// Phase of `prepare`: the query planned over `tables` in a session of
/// its own on every core (the job's row-error isolation and functions as
/// in its streaming session), with what it scans.
pub(crate) async fn plan(
    plan: &JobPlan,
    dead_rows: &Arc<crate::rowerrors::DeadRows>,
    tables: &[(String, ListingSpec)],
    query: &Query,
) -> Result<(Replanned, Scans)> {
    let ctx = session::batch(plan, dead_rows);
    let mut stores = Vec::with_capacity(tables.len());
    for (i, (name, spec)) in tables.iter().enumerate() {
        let store = register_store(&ctx, i, name, spec)?;
        ctx.register_table(
            name.as_str(),
            super::listing::table(spec, true, store.clone())?,
        )?;
        stores.push(store);
    }
    let logical = velo_sql::lower::to_logical_plan(&ctx.state(), query).await?;
    let logical = super::listing::plain_output(logical)?;
    let physical = ctx.state().create_physical_plan(&logical).await?;
    tracing::info!(
        job = %plan.name,
        "bounded Parquet input and no epochs needed: one batch plan on {} partitions",
        ctx.state().config().target_partitions()
    );
    Ok((
        Replanned {
            ctx,
            logical,
            physical,
        },
        Scans::of(tables, &stores)?,
    ))
}

/// Phase of [`plan`]: the object store of `spec` made known to `ctx`; for
/// a table snapshot's listed files, under a URL of its own (the store a
/// table format's connector hands over may be rooted at the table), which
/// is returned.
fn register_store(
    ctx: &datafusion::prelude::SessionContext,
    index: usize,
    name: &str,
    spec: &ListingSpec,
) -> Result<Option<ObjectStoreUrl>> {
    let Some((root, store)) = &spec.store else {
        return Ok(None);
    };
    let (url, listed) = if spec.files.is_some() {
        (format!("velo-table-{index}://source"), true)
    } else {
        (root.clone(), false)
    };
    let parsed = url::Url::parse(&url)
        .map_err(|e| crate::EngineError::Invalid(format!("source '{name}': '{url}': {e}")))?;
    ctx.register_object_store(&parsed, store.clone());
    if !listed {
        return Ok(None);
    }
    Ok(Some(ObjectStoreUrl::parse(&url)?))
}

/// The sources a batch plan reads itself, to count what it read.
#[derive(Debug, Clone, Default)]
pub struct Scans {
    tables: Vec<(String, Scanned)>,
    /// Where the plan ran when it ran on a cluster (its planner and URL):
    /// the executors' scans are asked of it.
    cluster: Option<(Arc<dyn super::ClusterPlanner>, String)>,
}

/// How a scan is told to be of a source.
#[derive(Debug, Clone)]
enum Scanned {
    /// Its files are under this location.
    Under(ListingTableUrl),
    /// Its files are in this store (a table snapshot's, registered apart).
    In(ObjectStoreUrl),
}

impl Scans {
    /// The scans of `tables`, whose listed files are in `stores`.
    pub(crate) fn of(
        tables: &[(String, ListingSpec)],
        stores: &[Option<ObjectStoreUrl>],
    ) -> Result<Self> {
        Ok(Self {
            tables: tables
                .iter()
                .enumerate()
                .map(|(i, (n, s))| {
                    let how = match stores.get(i).cloned().flatten() {
                        Some(store) => Scanned::In(store),
                        None => Scanned::Under(super::listing::url(s)?),
                    };
                    Ok((n.clone(), how))
                })
                .collect::<Result<_>>()?,
            cluster: None,
        })
    }

    /// The scans of `tables` on the cluster at `url`, where each source's
    /// files are under its location, or under its snapshot's root (the
    /// URLs the executors open them by, [`super::listing::cluster_table`]).
    pub(crate) fn on_cluster(
        plan: &JobPlan,
        url: &str,
        tables: &[(String, ListingSpec)],
    ) -> Result<Self> {
        let tables = tables
            .iter()
            .map(|(n, s)| {
                let under = match &s.files_root {
                    Some(root) if s.files.is_some() => ListingTableUrl::parse(root.as_str())?,
                    _ => super::listing::url(s)?,
                };
                Ok((n.clone(), Scanned::Under(under)))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            tables,
            cluster: plan.engine.cluster().map(|c| (c, url.to_string())),
        })
    }

    /// Rows each source's scans produced in the executed `plan` (by the
    /// files each scan read): counted in this process, or reported by the
    /// cluster's scheduler for a plan that ran there.
    pub async fn rows(&self, plan: &Arc<dyn ExecutionPlan>) -> BTreeMap<String, u64> {
        let mut rows = BTreeMap::new();
        let scanned = match &self.cluster {
            None => local_scans(plan),
            Some((cluster, url)) => match cluster.scanned(url, plan).await {
                Ok(scans) => scans
                    .into_iter()
                    // the path as the scan shows it: already encoded
                    .map(|(path, n)| {
                        let parsed = object_store::path::Path::parse(&path);
                        (None, parsed.unwrap_or_else(|_| path.into()), n)
                    })
                    .collect(),
                Err(e) => {
                    tracing::warn!("the records read on the cluster at {url} are not known: {e}");
                    Vec::new()
                }
            },
        };
        for (store, path, n) in scanned {
            let source = self.tables.iter().find(|(_, how)| match how {
                Scanned::Under(url) => url.contains(&path, false),
                Scanned::In(s) => store.as_ref() == Some(s),
            });
            // a cluster names a scan by its first file's path only: with
            // one source, every scan is of it
            let source = source.or(match (&self.cluster, self.tables.as_slice()) {
                (Some(_), [only]) => Some(only),
                _ => None,
            });
            match source {
                Some((name, _)) => *rows.entry(name.clone()).or_default() += n,
                None => tracing::debug!("a scan of {path} ({n} rows) is of no source"),
            }
        }
        rows
    }
}

/// The file scans of a plan run in this process: each one's store, first
/// file and the rows it produced.
fn local_scans(
    plan: &Arc<dyn ExecutionPlan>,
) -> Vec<(Option<ObjectStoreUrl>, object_store::path::Path, u64)> {
    let mut scans = Vec::new();
    let mut stack = vec![plan.clone()];
    while let Some(p) = stack.pop() {
        stack.extend(p.children().into_iter().cloned());
        let Some(scan) = p.downcast_ref::<DataSourceExec>() else {
            continue;
        };
        let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>() else {
            continue;
        };
        let Some(file) = config.file_groups.iter().flat_map(|g| g.files()).next() else {
            continue;
        };
        let n = p
            .metrics()
            .and_then(|m| m.output_rows())
            .unwrap_or_default() as u64;
        scans.push((
            Some(config.object_store_url.clone()),
            file.object_meta.location.clone(),
            n,
        ));
    }
    scans
}
