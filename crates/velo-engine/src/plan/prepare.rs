//! Preparing a job: its sources built, the streams among them chosen and
//! given feeds, the lookup tables loaded, everything registered in a
//! DataFusion session and the query planned. The result, a
//! [`PreparedJob`], is what `crate::runtime` runs (and what `explain`
//! shows).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::sqlparser::ast::Query;
use velo_config::FailureStrategy;
use velo_config::time::EventTime;
use velo_connectors::Source;

use crate::feed::{BadRecordPolicy, EpochFeed, SourceTable};
use crate::plan::JobPlan;
use crate::plan::session::{self, Operators};
use crate::runtime::Shutdown;
use crate::stats::Counters;
use crate::time::TimeMode;
use crate::{EngineError, Result};

/// The most partitions a job may have per core of the machine: beyond a
/// few per core they only add memory and scheduling.
pub const PARTITIONS_PER_CORE: usize = 16;

/// A job with its sources built and its query planned.
pub struct PreparedJob {
    /// The plan it came from.
    pub plan: JobPlan,
    /// Driving source.
    pub driver: Arc<dyn Source>,
    /// Its feed.
    pub feed: Arc<EpochFeed>,
    /// The job's other streams (joined with the driving one), each with
    /// its feed.
    pub others: Vec<(Arc<dyn Source>, Arc<EpochFeed>)>,
    /// Lookup tables (bounded JOIN sources, kept in memory across epochs).
    pub lookups: Vec<Arc<crate::lookup::LookupTable>>,
    /// DataFusion's logical plan.
    pub logical: LogicalPlan,
    /// DataFusion's physical plan.
    pub physical: Arc<dyn ExecutionPlan>,
    /// The session.
    pub ctx: SessionContext,
    /// Counters.
    pub counters: Arc<Counters>,
    /// The query needs all input before it can answer (aggregate, sort, limit).
    pub whole_input: bool,
    /// Rows loaded per lookup table.
    pub lookup_rows: BTreeMap<String, u64>,
    /// How the job tells time (event time, processing time, or no time).
    pub time: Option<TimeMode>,
    /// The query's window, if it has one.
    pub window: Option<crate::operators::window::WindowInfo>,
    /// Size of the window state.
    pub window_metrics: Arc<crate::operators::metrics::WindowMetrics>,
    /// The window operators' state (checkpoints).
    pub window_states: Arc<crate::operators::state::WindowStates>,
    /// `CREATE TABLE`: the table its published rows go to.
    pub table: Option<Arc<crate::tables::Table>>,
    /// Rows whose expressions failed on their own, for the dead-letter route.
    pub dead_rows: Arc<crate::rowerrors::DeadRows>,
    /// The query runs as one plan that reads the sources itself (a batch
    /// plan over listing tables, or on a cluster), not through the feeds:
    /// what it scans, to count what it read.
    pub scans: Option<super::batch::Scans>,
    /// How a query that needs its whole input runs (explain's note).
    pub runs_as: String,
}

impl PreparedJob {
    /// Every stream of the job with its feed, the driving one first.
    pub fn streams(&self) -> impl Iterator<Item = (&Arc<dyn Source>, &Arc<EpochFeed>)> {
        std::iter::once((&self.driver, &self.feed)).chain(self.others.iter().map(|(s, f)| (s, f)))
    }

    /// Every stream has ended and everything was delivered.
    pub async fn is_finished(&self) -> bool {
        for (_, f) in self.streams() {
            if !f.is_finished().await {
                return false;
            }
        }
        true
    }

    /// The output is an updating stream (`_op` column, upserts by key): an
    /// operator emits changes.
    pub fn is_changelog(&self) -> bool {
        self.window_states.emits_changes()
    }

    /// The sinks receive changes ([`velo_connectors::ChangeBatch`]es in
    /// their wire form): the result is updating, or a changelog source's
    /// changes pass through (planning checked that `_op` is kept).
    pub fn writes_changes(&self) -> bool {
        self.is_changelog() || super::changes::changelog_sources(self).next().is_some()
    }

    /// The key of the records sinks write (Kafka's message key when the sink
    /// names none): the SELECT items marked PRIMARY KEY, else
    /// [`Self::result_keys`].
    pub fn message_keys(&self) -> Vec<String> {
        if !self.plan.statement.primary_key.is_empty() {
            return self.plan.statement.primary_key.clone();
        }
        self.result_keys().into_iter().map(|(k, _)| k).collect()
    }

    /// The key of the job's results: its GROUP BY columns in the output,
    /// as (output name, name in the aggregate); for a windowed changelog
    /// with the window's columns. Kafka's message key, the changelog's key,
    /// a CREATE TABLE's key.
    pub fn result_keys(&self) -> Vec<(String, String)> {
        key_columns_of(&self.logical, self.is_changelog() && self.window.is_some())
    }

    /// The rows every sink receives: the query's, with `_op` added to an
    /// updating result's.
    pub fn output_schema(&self) -> arrow::datatypes::SchemaRef {
        let query = self.physical.schema();
        if !self.is_changelog() {
            return query;
        }
        crate::changelog::Changelog::new(&query, &self.result_keys())
            .map(|c| c.schema())
            .unwrap_or(query)
    }
}

/// What a job is prepared for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// To run: sources connect, lookup tables load.
    Run,
    /// To be checked or explained (`velo validate`, `velo explain`):
    /// connectors contact nothing, lookup tables are registered empty.
    Check,
}

/// Builds sources, registers them and plans the query. Errors name the job
/// and the line of its statement.
pub async fn prepare_job(
    plan: &JobPlan,
    shutdown: &Shutdown,
    purpose: Purpose,
) -> Result<PreparedJob> {
    prepare(plan, shutdown, purpose)
        .await
        .map_err(|e| e.in_job(&plan.name, plan.statement.line))
}

/// [`prepare_job`]'s phases.
async fn prepare(plan: &JobPlan, shutdown: &Shutdown, purpose: Purpose) -> Result<PreparedJob> {
    let counters = Counters::new();
    let cluster = plan.job.cluster.clone();
    let sources = build_sources(plan, purpose).await?;
    let streams = Streams::choose(plan, &sources)?;
    let mut query = plan
        .statement
        .query
        .as_ref()
        .ok_or_else(|| EngineError::Invalid("statement has no query".into()))?
        .clone();
    let (window, time) = window_and_time(plan, &streams, &mut query)?;
    let feeds = Feeds::open(plan, &sources, &streams, &time, &counters, shutdown)?;
    let updating = is_updating(plan, &sources[streams.driver], window.is_some());
    let batch_tables = match &cluster {
        None => super::batch::tables(plan, &sources, window.is_some() || updating, time.is_some()),
        Some(url) => Err(format!("it runs on the cluster at {url}")),
    };
    // a batch plan or a cluster's executors read the lookup tables
    // themselves: loaded once the plan shows it is not one
    let load_lookups = purpose == Purpose::Run && cluster.is_none() && batch_tables.is_err();
    let ops = Operators::new(plan);
    let ctx = session::build(
        plan,
        &feeds,
        &ops,
        partitions(plan)?,
        updating,
        window.is_some(),
    )?;
    feeds.register(&ctx, true)?;
    let mut lookups = Lookups::register(
        plan,
        &ctx,
        &sources,
        &streams,
        &counters,
        shutdown,
        load_lookups,
    )
    .await?;
    if let Some(within) = plan.statement.within {
        if feeds.all.len() < 2 {
            tracing::warn!(job = %plan.name, "WITHIN INTERVAL has no effect: the job joins no two streams with event times");
        }
        crate::operators::join::add_within(&mut query, within, &feeds.all)?;
    }
    let planned = plan_query(
        plan,
        &ctx,
        &feeds,
        &query,
        &sources[streams.driver],
        updating,
    )
    .await?;
    let cluster_tables = match &cluster {
        Some(_) => Some(super::cluster::tables(
            plan,
            &sources,
            window.is_some(),
            updating,
        )?),
        None => None,
    };
    // planned above as the check; run on the cluster, or as one batch
    // plan when that is what the job is
    let replanned = match (&cluster, cluster_tables, purpose) {
        (Some(url), Some(tables), Purpose::Run) => {
            let on = super::cluster::plan(plan, url, &tables, &query).await?;
            tracing::info!(job = %plan.name, "the query runs on the cluster at {url}");
            let scans = super::batch::Scans::on_cluster(plan, url, &tables)?;
            Some((on, scans))
        }
        _ => match &batch_tables {
            Ok(tables) if purpose == Purpose::Run && super::batch::order_free(&planned) => {
                Some(super::batch::plan(plan, &ops.dead_rows, tables, &query).await?)
            }
            other => {
                // a backfill that could have been a batch query: say why not
                let could = purpose == Purpose::Run
                    && cluster.is_none()
                    && super::batch::order_free(&planned)
                    && sources.iter().all(|s| s.is_bounded());
                if let (true, Err(why)) = (could, other) {
                    tracing::info!(job = %plan.name, "streaming its bounded input rather than planning it as a batch query: {why}");
                }
                if purpose == Purpose::Run && cluster.is_none() && !load_lookups {
                    lookups.load(&counters, shutdown).await?;
                }
                None
            }
        },
    };
    // how a whole-input query runs, for explain
    let runs_as = match (&cluster, &batch_tables) {
        (Some(url), _) => format!("on the cluster at {url}"),
        (None, Ok(_)) if super::batch::order_free(&planned) => {
            "as one DataFusion batch plan that scans the sources' files itself (partitions pruned, predicates pushed down; not the streaming plan below)".into()
        }
        (None, Ok(_)) => "as one epoch on velo's own readers (a LIMIT without ORDER BY keeps its input's order)".into(),
        (None, Err(why)) => format!("as one epoch on velo's own readers: {why}"),
    };
    let (ctx, planned, scans) = match replanned {
        Some((on, scans)) => (
            on.ctx,
            Planned {
                logical: on.logical,
                physical: on.physical,
                whole_input: true,
            },
            Some(scans),
        ),
        None => (ctx, planned, None),
    };
    let mut prepared = PreparedJob {
        plan: plan.clone(),
        driver: sources[streams.driver].clone(),
        feed: feeds.all[0].clone(),
        others: feeds.others,
        lookups: lookups.tables,
        logical: planned.logical,
        physical: planned.physical,
        ctx,
        counters,
        whole_input: planned.whole_input,
        lookup_rows: lookups.rows,
        time,
        window,
        window_metrics: ops.metrics,
        window_states: ops.states,
        table: None,
        dead_rows: ops.dead_rows,
        scans,
        runs_as,
    };
    check_primary_key(&prepared)?;
    super::changes::check_change_modes(&prepared)?;
    declare_table(&mut prepared);
    Ok(prepared)
}

/// Plans every job of `app` connecting to nothing (`velo validate`, a
/// server's check of a deployment): their errors join `errors`; a job
/// whose query cannot be checked offline (its schema lives in a remote
/// system) becomes a warning of `app` instead.
pub async fn check_offline(app: &mut super::AppPlan, errors: &mut Vec<EngineError>) {
    let shutdown = crate::Shutdown::default();
    for j in &app.jobs {
        if let Err(e) = prepare_job(j, &shutdown, Purpose::Check).await {
            let msg = e.to_string();
            match msg.find(velo_connectors::registry::OFFLINE_MARK) {
                Some(i) => app
                    .warnings
                    .push(format!("job '{}': query {}", j.name, &msg[i..])),
                None => errors.push(e),
            }
        }
    }
}

/// Phase 1: a source for every FROM/JOIN item.
async fn build_sources(plan: &JobPlan, purpose: Purpose) -> Result<Vec<Arc<dyn Source>>> {
    let ctx = plan.engine.connector_context(purpose == Purpose::Check);
    let mut sources = Vec::new();
    for cfg in &plan.sources {
        let schema = plan.explicit_schemas.get(&cfg.name).cloned();
        let source = plan
            .engine
            .registry()
            .create_source(cfg, schema, &ctx)
            .await
            .map_err(|e| EngineError::SourceCreation {
                name: cfg.name.clone(),
                message: e.to_string(),
                kind: e.kind(),
            })?;
        sources.push(source);
    }
    Ok(sources)
}

/// Which sources are streams (read epoch by epoch) and which one drives.
struct Streams {
    /// Each source's declared event time.
    event_times: Vec<Option<EventTime>>,
    /// Whether each source is a stream; the rest are lookup tables.
    is_stream: Vec<bool>,
    /// The driving stream (the first), or the first source.
    driver: usize,
}

impl Streams {
    /// Phase 2: the streams of the job are its unbounded sources, and, when
    /// two or more of its sources declare an event time, those too (a
    /// temporal join of files runs as a join of streams: same answer,
    /// bounded state).
    fn choose(plan: &JobPlan, sources: &[Arc<dyn Source>]) -> Result<Self> {
        let event_times: Vec<Option<EventTime>> = plan
            .sources
            .iter()
            .map(EventTime::of)
            .collect::<std::result::Result<_, _>>()?;
        let timed = event_times.iter().filter(|d| d.is_some()).count();
        let is_stream: Vec<bool> = sources
            .iter()
            .zip(&event_times)
            .map(|(s, d)| !s.is_bounded() || (timed >= 2 && d.is_some()))
            .collect();
        let driver = is_stream.iter().position(|s| *s).unwrap_or(0);
        Ok(Self {
            event_times,
            is_stream,
            driver,
        })
    }
}

/// Phase 3: the query's window (rewritten into our window functions) and
/// how the job tells time: the driving source's declared event time, else
/// the window's time column, else processing time for a window.
fn window_and_time(
    plan: &JobPlan,
    streams: &Streams,
    query: &mut Query,
) -> Result<(
    Option<crate::operators::window::WindowInfo>,
    Option<TimeMode>,
)> {
    let driver_cfg = &plan.sources[streams.driver];
    let declared = streams.event_times[streams.driver].clone();
    let window = crate::operators::window::rewrite_query(
        query,
        declared.as_ref().map(|t| t.field.as_str()),
    )?;
    let time = match (declared, &window) {
        (Some(t), _) => Some(TimeMode::Event(t)),
        (None, Some(w)) => match &w.time_column {
            // the window names the time column: it is the event time
            Some(c) => {
                let mut cfg = driver_cfg.clone();
                cfg.props.insert("event.time.field".into(), c.clone());
                EventTime::of(&cfg)?.map(TimeMode::Event)
            }
            None => Some(TimeMode::Processing),
        },
        (None, None) => None,
    };
    Ok((window, time))
}

/// The feeds of the job's streams.
pub(crate) struct Feeds {
    /// Every stream's feed, the driving one first.
    pub all: Vec<Arc<EpochFeed>>,
    /// The streams other than the driving one, with their feeds.
    others: Vec<(Arc<dyn Source>, Arc<EpochFeed>)>,
    /// The watermark of the job's operators: the lowest of its streams'
    /// (held back by the intervals of its stream joins).
    pub watermark: Arc<crate::time::Watermark>,
}

impl Feeds {
    /// Phase 4: a feed per stream, each on its own event time; several
    /// streams read at the pace of the slowest (in event time).
    fn open(
        plan: &JobPlan,
        sources: &[Arc<dyn Source>],
        streams: &Streams,
        time: &Option<TimeMode>,
        counters: &Arc<Counters>,
        shutdown: &Shutdown,
    ) -> Result<Self> {
        let policy = if plan.job.failure_strategy == FailureStrategy::FailBatch {
            BadRecordPolicy::Fail
        } else {
            BadRecordPolicy::Collect
        };
        let mut batch_rows = plan.job.batch_size.unwrap_or(8192).min(8192);
        if let Some(rate) = plan.job.rate_limit {
            // sources read a tenth of a second's worth at a time
            batch_rows = batch_rows.min((rate as usize / 10).max(1));
        }
        let driver = &sources[streams.driver];
        let feed = |src: &Arc<dyn Source>, time: Option<TimeMode>| {
            let f = EpochFeed::new(
                src.clone(),
                batch_rows,
                policy,
                counters.clone(),
                shutdown.receiver(),
                time,
            )?;
            if let Some(rate) = plan.job.rate_limit {
                f.limit_rate(rate);
            }
            Ok::<_, datafusion::error::DataFusionError>(f)
        };
        let mut all = vec![feed(driver, time.clone())?];
        let mut others = Vec::new();
        for (i, src) in sources.iter().enumerate() {
            if i == streams.driver || !streams.is_stream[i] {
                continue;
            }
            let Some(t) = streams.event_times[i].clone() else {
                return Err(EngineError::Invalid(format!(
                    "job '{}' reads the streams '{}' and '{}': joining two streams needs the event time of each; declare '{}.event.time.field' (and its format)",
                    plan.name,
                    driver.name(),
                    src.name(),
                    src.name()
                )));
            };
            let f = feed(src, Some(TimeMode::Event(t)))?;
            all.push(f.clone());
            others.push((src.clone(), f));
        }
        if !others.is_empty() && !matches!(time, Some(TimeMode::Event(_))) {
            return Err(EngineError::Invalid(format!(
                "job '{}' joins the stream '{}' with other streams: declare its event time, '{}.event.time.field'",
                plan.name,
                driver.name(),
                driver.name()
            )));
        }
        let watermarks: Vec<_> = all.iter().map(|f| f.watermark()).collect();
        if all.len() > 1 {
            for f in &all {
                f.align_with(watermarks.clone());
            }
        }
        Ok(Self {
            all,
            others,
            watermark: crate::time::Watermark::min_of(watermarks),
        })
    }

    /// Registers every stream as a table of `ctx`: `infinite` keeps it on
    /// the probe side of joins and streaming; a finite table lets a query
    /// that needs its whole (bounded) input run as one epoch.
    fn register(&self, ctx: &SessionContext, infinite: bool) -> Result<()> {
        for f in &self.all {
            ctx.deregister_table(f.name())?;
            ctx.register_table(f.name(), Arc::new(SourceTable::new(f.clone(), infinite)))?;
        }
        Ok(())
    }
}

/// Partitions of a streaming GROUP BY: the job key, the annotation, else
/// the cores; no more than the machine can use.
fn partitions(plan: &JobPlan) -> Result<usize> {
    let partitions = match plan.job.partitions {
        Some(n) => n,
        None => match plan
            .statement
            .annotations
            .iter()
            .find(|a| a.name == "num_partitions" || a.name == "partitions")
        {
            Some(a) => a.value.trim().parse::<usize>().map_err(|_| {
                EngineError::Invalid(format!(
                    "line {}: -- @{}: '{}' is not a whole number of partitions",
                    a.line, a.name, a.value
                ))
            })?,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
    }
    .max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let most = (cores * PARTITIONS_PER_CORE).max(PARTITIONS_PER_CORE);
    if partitions > most {
        return Err(EngineError::Invalid(format!(
            "job '{}': {partitions} partitions are more than this machine can use: at most {most} ({PARTITIONS_PER_CORE} per core, {cores} core(s)); each partition keeps state and a task of its own. Set 'partitions' to {cores} (one per core) or leave it unset",
            plan.name
        )));
    }
    Ok(partitions)
}

/// Whether the query's aggregates emit an updating result. A GROUP BY
/// without a window streams as an updating result on an unbounded input,
/// and on any input with EMIT CHANGES; also on a bounded source that
/// resumes where an earlier run stopped (Kafka with stop.at.end, files
/// with a state directory): a run that resumes sees only the new records,
/// so its groups must come from the checkpoint, not from one batch answer.
/// A window's results are a stream too: a GROUP BY over them (Nexmark q4)
/// is an updating result over the windows' final rows. Otherwise a GROUP BY
/// over bounded input is one answer: the final table, without `_op`.
fn is_updating(plan: &JobPlan, driver: &Arc<dyn Source>, windowed: bool) -> bool {
    let resumes = resumes_across_runs(driver.as_ref(), &plan.job);
    plan.statement.emit.as_deref() == Some("CHANGES")
        || ((!driver.is_bounded() || resumes || windowed)
            && plan.statement.emit.as_deref() != Some("FINAL"))
}

/// Whether `source` goes on where an earlier run of the job stopped: it
/// reports positions and resumes by default (Kafka), or the job names a
/// state directory (files, which are otherwise read again in full).
pub(crate) fn resumes_across_runs(source: &dyn Source, job: &velo_config::JobConfig) -> bool {
    source.resumable() && (source.resumes_by_default() || job.state_dir.is_some())
}

/// The job's lookup tables: its bounded JOIN sources and the tables of
/// earlier `CREATE TABLE` statements it reads.
struct Lookups {
    tables: Vec<Arc<crate::lookup::LookupTable>>,
    rows: BTreeMap<String, u64>,
}

impl Lookups {
    /// Loads the tables registered empty.
    async fn load(&mut self, counters: &Arc<Counters>, shutdown: &Shutdown) -> Result<()> {
        for table in &self.tables {
            load_lookup(table, counters, shutdown).await?;
            self.rows.insert(table.name().to_string(), table.num_rows());
        }
        Ok(())
    }

    /// Phase 5: every lookup table loaded (unless `load` is false:
    /// explain and validate register them empty) and registered.
    async fn register(
        plan: &JobPlan,
        ctx: &SessionContext,
        sources: &[Arc<dyn Source>],
        streams: &Streams,
        counters: &Arc<Counters>,
        shutdown: &Shutdown,
        load: bool,
    ) -> Result<Self> {
        let mut tables = Vec::new();
        let mut rows = BTreeMap::new();
        for (i, src) in sources.iter().enumerate() {
            if streams.is_stream[i] || i == streams.driver {
                continue;
            }
            let refresh = plan.sources[i]
                .duration("refresh_interval")
                .map_err(|e| EngineError::Invalid(e.to_string()))?;
            let table = Arc::new(crate::lookup::LookupTable::new(src.clone(), refresh));
            if load {
                load_lookup(&table, counters, shutdown).await?;
            }
            rows.insert(src.name().to_string(), table.num_rows());
            ctx.register_table(src.name(), table.provider()?)?;
            tables.push(table);
        }
        for name in &plan.table_refs {
            let t = plan.tables.get(name).ok_or_else(|| {
                EngineError::Invalid(format!(
                    "job '{}' reads the table '{name}' before its CREATE TABLE statement is prepared; put CREATE TABLE {name} before the statements that read it",
                    plan.name
                ))
            })?;
            let table = Arc::new(crate::lookup::LookupTable::of_table(&t));
            rows.insert(name.clone(), table.num_rows());
            ctx.register_table(name.as_str(), table.provider()?)?;
            tables.push(table);
        }
        Ok(Self { tables, rows })
    }
}

/// Reads a lookup table's source whole.
async fn load_lookup(
    table: &crate::lookup::LookupTable,
    counters: &Arc<Counters>,
    shutdown: &Shutdown,
) -> Result<()> {
    table
        .load(counters, shutdown.receiver())
        .await
        .map_err(|e| EngineError::Source {
            name: table.name().into(),
            message: e.to_string(),
            kind: crate::error::datafusion_kind(&e),
        })?;
    Ok(())
}

/// The planned query.
pub(crate) struct Planned {
    pub logical: LogicalPlan,
    pub physical: Arc<dyn ExecutionPlan>,
    pub whole_input: bool,
}

/// Phase 6: the logical and physical plans. The streams are registered
/// infinite so that DataFusion keeps them on the probe side of joins and
/// streams them; a query that needs its whole (bounded) input is planned
/// again over finite tables and runs as one epoch.
async fn plan_query(
    plan: &JobPlan,
    ctx: &SessionContext,
    feeds: &Feeds,
    query: &Query,
    driver: &Arc<dyn Source>,
    updating: bool,
) -> Result<Planned> {
    let logical = velo_sql::lower::to_logical_plan(&ctx.state(), query).await?;
    let whole_input = needs_whole_input(&logical, updating);
    if whole_input && !driver.is_bounded() {
        return Err(EngineError::Invalid(format!(
            "job '{}': {} over the unbounded source '{}' needs a window: GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), HOP(...) or SESSION(...); or read a bounded input",
            plan.name,
            if updating {
                "ORDER BY / LIMIT / a function that needs every row of its key (NTILE, PERCENT_RANK, CUME_DIST)"
            } else {
                "GROUP BY / ORDER BY / LIMIT / DISTINCT with EMIT FINAL"
            },
            driver.name()
        )));
    }
    let logical = if whole_input {
        feeds.register(ctx, false)?;
        velo_sql::lower::to_logical_plan(&ctx.state(), query).await?
    } else {
        logical
    };
    let physical = ctx.state().create_physical_plan(&logical).await?;
    Ok(Planned {
        logical,
        physical,
        whole_input,
    })
}

/// Whether `plan` can only answer after all of its input. With `updating`,
/// a GROUP BY (or DISTINCT) streams: it emits its changed groups.
fn needs_whole_input(plan: &LogicalPlan, updating: bool) -> bool {
    // a job with a window runs in epochs anyway: its row windows stream too
    // (over a bounded input alone they run as one batch epoch, the same
    // answer, faster)
    let mut windowed = false;
    let _ = plan.apply(|p| {
        windowed |= crate::operators::window::is_window_aggregate(p);
        Ok(TreeNodeRecursion::Continue)
    });
    let mut found = false;
    let _ = plan.apply(|p| {
        if crate::operators::window::is_window_aggregate(p)
            || (updating && matches!(p, LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_)))
            || ((updating || windowed) && crate::operators::rowwindow::is_streamable(p))
        {
            return Ok(TreeNodeRecursion::Continue);
        }
        if matches!(
            p,
            LogicalPlan::Aggregate(_)
                | LogicalPlan::Sort(_)
                | LogicalPlan::Limit(_)
                | LogicalPlan::Window(_)
                | LogicalPlan::Distinct(_)
        ) {
            found = true;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Phase 7: a PRIMARY KEY names a column of the result.
fn check_primary_key(p: &PreparedJob) -> Result<()> {
    let out = p.physical.schema();
    for k in &p.plan.statement.primary_key {
        if out.field_with_name(k).is_err() {
            return Err(EngineError::Invalid(format!(
                "job '{}': PRIMARY KEY '{k}' is not a column of the result ({}); mark a SELECT item by its output name",
                p.plan.name,
                out.fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(())
}

/// Phase 8, `CREATE TABLE`: later statements join with its latest row per
/// key.
fn declare_table(p: &mut PreparedJob) {
    if p.plan.statement.kind == velo_sql::StatementKind::CreateTable {
        let keys = p.result_keys().into_iter().map(|(k, _)| k).collect();
        p.table = Some(
            p.plan
                .tables
                .declare(&p.plan.statement.name, p.physical.schema(), keys),
        );
    }
}

/// The GROUP BY columns of the query that are in its output: (output name,
/// name in the aggregate) pairs, the key of its results. The window's own
/// group columns (`window_start` ...) count only with `with_window`.
fn key_columns_of(plan: &LogicalPlan, with_window: bool) -> Vec<(String, String)> {
    use datafusion::logical_expr::Expr;
    let mut group: Vec<String> = Vec::new();
    let _ = plan.apply(|p| {
        if let LogicalPlan::Aggregate(a) = p {
            for (i, e) in a.group_expr.iter().enumerate() {
                let window = matches!(e, Expr::ScalarFunction(f) if ["tumble", "hop", "session", "tumble_end", "hop_end", "session_end"].contains(&f.name()));
                if !window || with_window {
                    group.push(a.schema.field(i).name().clone());
                }
            }
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    // the SELECT list may rename them: follow the topmost projection
    let mut projected: Option<Vec<(String, String)>> = None;
    let _ = plan.apply(|p| {
        if let LogicalPlan::Projection(pr) = p {
            let mut keys = Vec::new();
            for (i, e) in pr.expr.iter().enumerate() {
                let mut inner = e;
                while let Expr::Alias(a) = inner {
                    inner = &a.expr;
                }
                if let Expr::Column(c) = inner
                    && group.contains(&c.name)
                {
                    keys.push((pr.schema.field(i).name().clone(), c.name.clone()));
                }
            }
            projected = Some(keys);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let mut keys = projected.unwrap_or_else(|| group.into_iter().map(|g| (g.clone(), g)).collect());
    keys.retain(|(k, _)| plan.schema().fields().iter().any(|f| f.name() == k));
    keys
}
