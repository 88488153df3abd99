//! Epochs: execute, fan out, commit. One job per query statement; the jobs
//! of an application run concurrently.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNode;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{ExecutionPlan, displayable, execute_stream};
use futures::StreamExt;
use velo_config::{BatchStrategy, FailureStrategy};
use velo_connectors::{BadRecord, Source};

use crate::fanout::{FanOut, Retry, SinkHandle};
use crate::feed::{BadRecordPolicy, Budget, DEFAULT_UNBOUNDED_TIMEOUT, EpochFeed, SourceTable};
use crate::plan::{AppPlan, JobPlan};
use crate::stats::{Counters, JobExecutionStats};
use crate::time::TimeMode;
use crate::{EngineError, Result};

/// The most partitions a job may have per core of the machine: beyond a
/// few per core they only add memory and scheduling.
pub const PARTITIONS_PER_CORE: usize = 16;

/// Stops running jobs after their current epoch.
#[derive(Clone)]
pub struct Shutdown {
    tx: Arc<tokio::sync::watch::Sender<bool>>,
    rx: tokio::sync::watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        Self {
            tx: Arc::new(tx),
            rx,
        }
    }
}

impl Shutdown {
    /// Asks every job to commit its current epoch and stop.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
    /// Whether a stop was asked.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }
    fn receiver(&self) -> tokio::sync::watch::Receiver<bool> {
        self.rx.clone()
    }
}

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
    pub window: Option<crate::window::WindowInfo>,
    /// Size of the window state.
    pub window_metrics: Arc<crate::window::WindowMetrics>,
    /// The window operators' state (checkpoints).
    pub window_states: Arc<crate::window::WindowStates>,
    /// `CREATE TABLE`: the table its published rows go to.
    pub table: Option<Arc<crate::tables::Table>>,
    /// Rows whose expressions failed on their own, for the dead-letter route.
    pub dead_rows: Arc<crate::rowerrors::DeadRows>,
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
}

/// Whether `plan` can only answer after all of its input. With `updating`,
/// a GROUP BY (or DISTINCT) streams: it emits its changed groups.
fn needs_whole_input(plan: &LogicalPlan, updating: bool) -> bool {
    // a job with a window runs in epochs anyway: its row windows stream too
    // (over a bounded input alone they run as one batch epoch, the same
    // answer, faster)
    let mut windowed = false;
    let _ = plan.apply(|p| {
        windowed |= crate::window::is_window_aggregate(p);
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    let mut found = false;
    let _ = plan.apply(|p| {
        if crate::window::is_window_aggregate(p)
            || (updating && matches!(p, LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_)))
            || ((updating || windowed) && crate::rowwindow::is_streamable(p))
        {
            return Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue);
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
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    found
}

/// Builds sources, registers them and plans the query. With `load_lookups`
/// false (explain/validate), lookup tables are registered empty. Errors
/// name the job and the line of its statement.
pub async fn prepare_job(
    plan: &JobPlan,
    shutdown: &Shutdown,
    load_lookups: bool,
) -> Result<PreparedJob> {
    prepare(plan, shutdown, load_lookups)
        .await
        .map_err(|e| e.in_job(&plan.name, plan.statement.line))
}

/// [`prepare_job`]'s work.
async fn prepare(plan: &JobPlan, shutdown: &Shutdown, load_lookups: bool) -> Result<PreparedJob> {
    let counters = Counters::new();
    let mut built = Vec::new();
    for cfg in &plan.sources {
        let src = crate::connectors::registry()
            .create_source(cfg, plan.explicit_schemas.get(&cfg.name).cloned())
            .map_err(|e| EngineError::SourceCreation {
                name: cfg.name.clone(),
                message: e.to_string(),
            })?;
        built.push(src);
    }
    // the streams of the job: its unbounded sources, and, when two or more
    // of its sources declare an event time, those too (a temporal join of
    // files runs as a join of streams: same answer, bounded state)
    let event_times: Vec<Option<velo_config::time::EventTime>> = plan
        .sources
        .iter()
        .map(velo_config::time::EventTime::of)
        .collect::<std::result::Result<_, _>>()?;
    let timed = event_times.iter().filter(|d| d.is_some()).count();
    let is_stream: Vec<bool> = built
        .iter()
        .zip(&event_times)
        .map(|(s, d)| !s.is_bounded() || (timed >= 2 && d.is_some()))
        .collect();
    let driver_idx = is_stream.iter().position(|s| *s).unwrap_or(0);
    let driver = built[driver_idx].clone();
    let policy = if plan.job.failure_strategy == FailureStrategy::FailBatch {
        BadRecordPolicy::Fail
    } else {
        BadRecordPolicy::Collect
    };
    let batch_rows = plan.job.batch_size.unwrap_or(8192).min(8192);
    let mut query = plan
        .statement
        .query
        .as_ref()
        .ok_or_else(|| EngineError::Invalid("statement has no query".into()))?
        .clone();
    let driver_cfg = &plan.sources[driver_idx];
    let declared = velo_config::time::EventTime::of(driver_cfg)?;
    let window =
        crate::window::rewrite_query(&mut query, declared.as_ref().map(|t| t.field.as_str()))?;
    let time = match (declared, &window) {
        (Some(t), _) => Some(TimeMode::Event(t)),
        (None, Some(w)) => match &w.time_column {
            // the window names the time column: it is the event time
            Some(c) => {
                let mut cfg = driver_cfg.clone();
                cfg.props.insert("event.time.field".into(), c.clone());
                velo_config::time::EventTime::of(&cfg)?.map(TimeMode::Event)
            }
            None => Some(TimeMode::Processing),
        },
        (None, None) => None,
    };
    let feed = EpochFeed::new(
        driver.clone(),
        batch_rows,
        policy,
        counters.clone(),
        shutdown.receiver(),
        time.clone(),
    )?;
    // the other streams: a feed each, on their own event time
    let mut others: Vec<(Arc<dyn Source>, Arc<EpochFeed>)> = Vec::new();
    for (i, src) in built.iter().enumerate() {
        if i == driver_idx || !is_stream[i] {
            continue;
        }
        let Some(t) = event_times[i].clone() else {
            return Err(EngineError::Invalid(format!(
                "job '{}' reads the streams '{}' and '{}': joining two streams needs the event time of each; declare '{}.event.time.field' (and its format)",
                plan.name,
                driver.name(),
                src.name(),
                src.name()
            )));
        };
        let f = EpochFeed::new(
            src.clone(),
            batch_rows,
            policy,
            counters.clone(),
            shutdown.receiver(),
            Some(TimeMode::Event(t)),
        )?;
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
    // every stream's feed, the driving one first
    let feeds: Vec<Arc<EpochFeed>> = std::iter::once(feed.clone())
        .chain(others.iter().map(|(_, f)| f.clone()))
        .collect();
    let watermarks: Vec<_> = feeds.iter().map(|f| f.watermark()).collect();
    if feeds.len() > 1 {
        // streams read at the pace of the slowest (in event time)
        for f in &feeds {
            f.align_with(watermarks.clone());
        }
    }
    // the watermark of the job's operators: the lowest of its streams'
    // (held back by the intervals of its stream joins)
    let job_watermark = crate::time::Watermark::min_of(watermarks);
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(8192)
        .with_information_schema(false);
    let window_metrics = Arc::new(crate::window::WindowMetrics::default());
    let window_states = Arc::new(crate::window::WindowStates::default());
    // partitions of a streaming GROUP BY: the job key, the annotation, the cores
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
    let emit = match plan.statement.emit.as_deref() {
        Some("CHANGES") => crate::window::Emit::Changes,
        _ => crate::window::Emit::Final,
    };
    // a GROUP BY without a window streams as an updating result on an
    // unbounded input, and on any input with EMIT CHANGES; also on a
    // resumable source read to its end (Kafka with stop.at.end): a run that
    // resumes from committed offsets sees only the new records, so its
    // groups must come from the checkpoint, not from one batch answer
    // A window's results are a stream too: a GROUP BY over them (Nexmark q4)
    // is an updating result over the windows' final rows.
    let updating = emit == crate::window::Emit::Changes
        || ((!driver.is_bounded() || driver.resumable() || window.is_some())
            && plan.statement.emit.as_deref() != Some("FINAL"));
    let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
    {
        // before the sanity check, which refuses an aggregate over
        // unbounded input
        let windows = crate::window::StreamingWindows::new(
            job_watermark.clone(),
            window_metrics.clone(),
            window_states.clone(),
            emit,
            updating,
            partitions,
            feeds.clone(),
        );
        rules.insert(
            rules.len() - 1,
            Arc::new(crate::join::StreamingJoins::new(
                feeds.clone(),
                windows,
                crate::rowwindow::StreamingRowWindows::new(
                    window_states.clone(),
                    window_metrics.clone(),
                    job_watermark.clone(),
                    plan.statement.expire,
                ),
                job_watermark.clone(),
                window_states.clone(),
                window_metrics.clone(),
            )),
        );
    }
    // an error on some rows affects only those rows, unless FailBatch
    let dead_rows = crate::rowerrors::DeadRows::new(&plan.name);
    let isolate_rows = plan.job.failure_strategy != FailureStrategy::FailBatch;
    if isolate_rows {
        rules.insert(
            rules.len() - 1,
            Arc::new(crate::rowerrors::IsolateRowErrors::new(dead_rows.clone())),
        );
    }
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_physical_optimizer_rules(rules)
        .build();
    let ctx = SessionContext::new_with_state(state);
    if isolate_rows {
        ctx.add_optimizer_rule(Arc::new(crate::rowerrors::HoistAggregateArguments));
    }
    for f in crate::window::udfs() {
        ctx.register_udf(f);
    }
    if window.is_some() || updating {
        // COUNT(DISTINCT x) stays one aggregate (its accumulator keeps the
        // distinct values per window) instead of two stacked GROUP BYs
        ctx.remove_optimizer_rule("single_distinct_aggregation_to_group_by");
    }
    ctx.register_table(
        driver.name(),
        Arc::new(SourceTable::new(feed.clone(), true)),
    )?;
    for (src, f) in &others {
        ctx.register_table(src.name(), Arc::new(SourceTable::new(f.clone(), true)))?;
    }
    let mut lookups = Vec::new();
    let mut lookup_rows = BTreeMap::new();
    for (i, src) in built.iter().enumerate() {
        if i == driver_idx || is_stream[i] {
            continue;
        }
        let cfg = &plan.sources[i];
        let refresh = cfg
            .duration("refresh_interval")
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let table = Arc::new(crate::lookup::LookupTable::new(src.clone(), refresh));
        if load_lookups {
            table
                .load(&counters, shutdown.receiver())
                .await
                .map_err(|e| EngineError::Source {
                    name: src.name().into(),
                    message: e.to_string(),
                    kind: crate::error::datafusion_kind(&e),
                })?;
        }
        lookup_rows.insert(src.name().to_string(), table.num_rows());
        ctx.register_table(src.name(), table.provider()?)?;
        lookups.push(table);
    }
    for name in &plan.table_refs {
        let t = plan.tables.get(name).ok_or_else(|| {
            EngineError::Invalid(format!(
                "job '{}' reads the table '{name}' before its CREATE TABLE statement is prepared; put CREATE TABLE {name} before the statements that read it",
                plan.name
            ))
        })?;
        let table = Arc::new(crate::lookup::LookupTable::of_table(&t));
        lookup_rows.insert(name.clone(), table.num_rows());
        ctx.register_table(name.as_str(), table.provider()?)?;
        lookups.push(table);
    }
    if let Some(within) = plan.statement.within {
        if feeds.len() < 2 {
            tracing::warn!(job = %plan.name, "WITHIN INTERVAL has no effect: the job joins no two streams with event times");
        }
        crate::join::add_within(&mut query, within, &feeds)?;
    }
    let query = &query;
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
    // The driving source is declared infinite so that DataFusion keeps it on
    // the probe side of joins and streams it; a query that needs its whole
    // (bounded) input is planned over a finite table and runs as one epoch.
    let logical = if whole_input {
        for f in &feeds {
            ctx.deregister_table(f.name())?;
            ctx.register_table(f.name(), Arc::new(SourceTable::new(f.clone(), false)))?;
        }
        velo_sql::lower::to_logical_plan(&ctx.state(), query).await?
    } else {
        logical
    };
    let physical = ctx.state().create_physical_plan(&logical).await?;
    let mut prepared = PreparedJob {
        plan: plan.clone(),
        driver,
        feed,
        others,
        lookups,
        logical,
        physical,
        ctx,
        counters,
        whole_input,
        lookup_rows,
        time,
        window,
        window_metrics,
        window_states,
        table: None,
        dead_rows,
    };
    let out = prepared.physical.schema();
    for k in &plan.statement.primary_key {
        if out.field_with_name(k).is_err() {
            return Err(EngineError::Invalid(format!(
                "job '{}': PRIMARY KEY '{k}' is not a column of the result ({}); mark a SELECT item by its output name",
                plan.name,
                out.fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    // CREATE TABLE: later statements join with its latest row per key
    if plan.statement.kind == velo_sql::StatementKind::CreateTable {
        let keys = prepared.result_keys().into_iter().map(|(k, _)| k).collect();
        prepared.table = Some(plan.tables.declare(
            &plan.statement.name,
            prepared.physical.schema(),
            keys,
        ));
    }
    Ok(prepared)
}

/// The `explain` text of a job: sources, sinks, config (secrets masked), plans.
pub fn explain_text(p: &PreparedJob) -> String {
    let mut s = format!(
        "Job '{}' ({:?}, line {})\n",
        p.plan.name, p.plan.statement.kind, p.plan.statement.line
    );
    s.push_str(&format!(
        "  Source (driving): {} — {} [{}]\n",
        p.driver.name(),
        p.driver.describe(),
        if p.driver.is_bounded() {
            "bounded"
        } else {
            "unbounded"
        }
    ));
    for (src, f) in &p.others {
        s.push_str(&format!(
            "  Source (stream, joined): {} — {} [{}]{}\n",
            src.name(),
            src.describe(),
            if src.is_bounded() {
                "bounded"
            } else {
                "unbounded"
            },
            match f.time() {
                Some(TimeMode::Event(t)) => format!(", event time {}", t.field),
                _ => String::new(),
            }
        ));
    }
    for l in &p.lookups {
        s.push_str(&format!(
            "  Source (lookup table): {} — {}{}\n",
            l.name(),
            l.describe(),
            l.refresh_interval()
                .map(|d| format!(
                    ", read again every {}",
                    crate::time::show_duration(d.as_millis() as i64)
                ))
                .unwrap_or_default()
        ));
    }
    s.push_str(&match &p.time {
        Some(TimeMode::Event(t)) => format!(
            "  Time: event time from {}.{} ({}), watermark {} behind the highest event time{}, late records: {}\n",
            p.driver.name(),
            t.field,
            match &t.format {
                velo_config::time::TimeFormat::Native => "as stored".to_string(),
                velo_config::time::TimeFormat::EpochMillis => "epoch_millis".to_string(),
                velo_config::time::TimeFormat::EpochSeconds => "epoch_seconds".to_string(),
                velo_config::time::TimeFormat::Iso8601 => "iso8601".to_string(),
                velo_config::time::TimeFormat::Pattern(p) => format!("pattern '{p}'"),
            },
            crate::time::show_duration(t.max_out_of_orderness.as_millis() as i64),
            t.idle_timeout
                .map(|d| format!(", idle parts ignored after {}", crate::time::show_duration(d.as_millis() as i64)))
                .unwrap_or_default(),
            match t.late {
                velo_config::time::LateData::Drop => "dropped and counted",
                velo_config::time::LateData::DeadLetter => "dead-lettered",
            }
        ),
        Some(TimeMode::Processing) => format!(
            "  Time: processing time (no event.time.field declared on '{}'); windows close by the wall clock\n",
            p.driver.name()
        ),
        None => format!(
            "  Time: processing time (no event.time.field declared on '{}')\n",
            p.driver.name()
        ),
    });
    for c in p
        .plan
        .sources
        .iter()
        .chain(p.plan.sinks.iter())
        .chain(p.plan.dlq.iter())
    {
        s.push_str(&format!(
            "  {} {} (type {}):\n",
            if c.role == velo_config::Role::Source {
                "source"
            } else {
                "sink"
            },
            c.name,
            c.kind
        ));
        for (k, v) in &c.props {
            s.push_str(&format!(
                "      {}.{k} = {}\n",
                c.name,
                velo_config::display_value(k, v)
            ));
        }
    }
    let j = &p.plan.job;
    s.push_str(&format!(
        "  Job: strategy {:?}, batch.size {}, batch.timeout {}, use_transactions {}, failure_strategy {:?}, max_retries {}, retry_backoff {:?}\n",
        j.strategy,
        j.batch_size.map(|b| b.to_string()).unwrap_or_else(|| "unlimited".into()),
        j.batch_timeout.map(|d| format!("{d:?}")).unwrap_or_else(|| if p.driver.is_bounded() { "none".into() } else { format!("{DEFAULT_UNBOUNDED_TIMEOUT:?}") }),
        j.use_transactions,
        j.failure_strategy,
        j.max_retries,
        j.retry_backoff
    ));
    for (k, v) in &p.plan.job_props {
        s.push_str(&format!(
            "      {k} = {}\n",
            velo_config::display_value(k, v)
        ));
    }
    if p.whole_input {
        s.push_str("  Note: the query needs its whole (bounded) input: it runs as one epoch\n");
    }
    if p.is_changelog() {
        s.push_str(&format!(
            "  Emit: changes: an updating stream keyed by ({}); every epoch writes the changed groups with {} = insert / update / delete\n",
            p.result_keys()
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
                .join(", "),
            crate::changelog::OP_COLUMN
        ));
    }
    s.push_str(&format!(
        "\n  Logical plan:\n{}\n",
        indent(&p.logical.display_indent().to_string())
    ));
    s.push_str(&format!(
        "  Physical plan:\n{}",
        indent(&displayable(p.physical.as_ref()).indent(true).to_string())
    ));
    s
}

fn indent(t: &str) -> String {
    t.lines().map(|l| format!("    {l}\n")).collect()
}

fn dlq_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("location", DataType::Utf8, false),
        Field::new("line", DataType::UInt64, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("record", DataType::Utf8, false),
    ]))
}

fn dlq_batch(bad: &[BadRecord]) -> RecordBatch {
    RecordBatch::try_new(
        dlq_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                bad.iter().map(|b| b.source.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                bad.iter().map(|b| b.location.as_str()),
            )),
            Arc::new(UInt64Array::from_iter_values(bad.iter().map(|b| b.line))),
            Arc::new(StringArray::from_iter_values(
                bad.iter().map(|b| b.error.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                bad.iter().map(|b| b.raw.as_str()),
            )),
        ],
    )
    .expect("dlq schema matches")
}

/// A progress callback: job name and its live counters, every half second.
pub type Progress = Arc<dyn Fn(&str, &Counters) + Send + Sync>;

/// Runs every job of `app` concurrently, each as a task on the runtime's
/// workers (not on the caller's thread); returns their stats.
pub async fn run_app(
    app: &AppPlan,
    shutdown: Shutdown,
    progress: Option<Progress>,
) -> Result<Vec<JobExecutionStats>> {
    let mut prepared = Vec::new();
    for j in &app.jobs {
        prepared.push(prepare_job(j, &shutdown, true).await?);
    }
    let runs = prepared.into_iter().map(|p| {
        let sd = shutdown.clone();
        let progress = progress.clone();
        async move {
            let counters = p.counters.clone();
            let name = p.plan.name.clone();
            let ticker = progress.map(|f| {
                let (c, name) = (counters.clone(), name.clone());
                tokio::spawn(async move {
                    let mut iv = tokio::time::interval(Duration::from_millis(500));
                    loop {
                        iv.tick().await;
                        f(&name, &c);
                    }
                })
            });
            // on a worker of the runtime, not on the caller's thread: the
            // plan's partitions hand their batches to the job loop without
            // waking one more thread
            let r = match tokio::spawn(run_job(p, sd)).await {
                Ok(r) => r,
                Err(e) if e.is_panic() => Err(EngineError::Internal(format!(
                    "job '{name}' panicked: {}",
                    velo_connectors::source::panic_text(e.into_panic().as_ref())
                ))),
                Err(e) => Err(EngineError::Internal(format!(
                    "job '{name}' was cancelled: {e}"
                ))),
            };
            if let Some(t) = ticker {
                t.abort();
            }
            r
        }
    });
    futures::future::join_all(runs).await.into_iter().collect()
}

struct Adaptive {
    size: usize,
}

fn budget(job: &velo_config::JobConfig, bounded: bool, whole: bool, adaptive: &Adaptive) -> Budget {
    if whole {
        return Budget::default();
    }
    let timeout = job.batch_timeout.or(if bounded {
        None
    } else {
        Some(DEFAULT_UNBOUNDED_TIMEOUT)
    });
    let deadline = timeout.map(|t| Instant::now() + t);
    if !job.batch_enable {
        // no batching: every batch the source delivers is an epoch of its own
        return Budget {
            deadline,
            max_batches: Some(1),
            ..Default::default()
        };
    }
    match &job.strategy {
        BatchStrategy::FixedSize => Budget {
            max_records: job.batch_size,
            deadline,
            ..Default::default()
        },
        BatchStrategy::LowLatency {
            max_size,
            wait,
            eager,
        } => Budget {
            max_records: Some(*max_size),
            deadline: Some(Instant::now() + *wait),
            eager: *eager,
            ..Default::default()
        },
        BatchStrategy::AdaptiveSize { .. } => Budget {
            max_records: Some(adaptive.size),
            deadline,
            ..Default::default()
        },
        BatchStrategy::MemoryBased { bytes } => Budget {
            max_records: job.batch_size,
            max_bytes: Some(*bytes),
            deadline,
            ..Default::default()
        },
    }
}

async fn abort_all(fan: &FanOut, dlq: Option<&SinkHandle>, epoch: u64) {
    for (name, r) in fan.each(|s| s.abort(epoch)).await {
        if let Err(e) = r {
            tracing::error!(sink = name, "abort failed: {e}");
        }
    }
    if let Some(d) = dlq {
        let _ = d.abort(epoch).await;
    }
}

/// Marks a `CREATE TABLE` job's table ready when the job ends, however it
/// ends, so that readers never wait for a job that is gone.
struct ReadyOnDrop(Option<Arc<crate::tables::Table>>);

impl Drop for ReadyOnDrop {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.mark_ready();
        }
    }
}

/// Runs one prepared job to the end of its input (or until shutdown).
pub async fn run_job(p: PreparedJob, shutdown: Shutdown) -> Result<JobExecutionStats> {
    let started = Instant::now();
    let _ready = ReadyOnDrop(p.table.clone());
    for l in &p.lookups {
        l.wait_ready(shutdown.receiver()).await;
    }
    let job = p.plan.job.clone();
    let name = p.plan.name.clone();
    let result_keys = p.result_keys();
    let mut changelog = if p.is_changelog() {
        Some(crate::changelog::Changelog::new(
            &p.physical.schema(),
            &result_keys,
        )?)
    } else {
        None
    };
    let schema = changelog
        .as_ref()
        .map(|c| c.schema())
        .unwrap_or_else(|| p.physical.schema());
    // sinks: create what can be created; all failing falls back to stdout
    // (the seeds' promise), and the run then does not exit 0
    let mut created = Vec::new();
    let mut creation_errors = Vec::new();
    for cfg in &p.plan.sinks {
        match crate::connectors::registry().create_sink(cfg) {
            Ok(s) => {
                tracing::info!(job = %name, "Successfully created sink '{}'", cfg.name);
                created.push(s);
            }
            Err(e) => {
                tracing::warn!(
                    "Job '{name}' failed to create sinks: Failed to create sink '{}': {e}",
                    cfg.name
                );
                creation_errors.push(format!("'{}': {e}", cfg.name));
            }
        }
    }
    let mut fallback = None;
    if created.is_empty() {
        fallback = Some(creation_errors.join("; "));
        tracing::warn!("Job '{name}': no sink could be created; writing results to stdout");
        created.push(
            crate::connectors::registry()
                .create_sink(&crate::plan::stdout_sink(
                    "stdout_fallback",
                    &p.plan.sinks[0].base_dir,
                ))
                .map_err(|e| EngineError::Invalid(e.to_string()))?,
        );
    }
    let key_columns = p.message_keys();
    let all_tx = created.iter().all(|s| s.capabilities().transactions);
    let transactional = job.use_transactions && all_tx;
    if job.use_transactions && !all_tx {
        let non: Vec<&str> = created
            .iter()
            .filter(|s| !s.capabilities().transactions)
            .map(|s| s.name())
            .collect();
        tracing::warn!(
            "Job '{name}': use_transactions requested but sink(s) {} cannot publish atomically; running in Simple mode (at-least-once)",
            non.join(", ")
        );
    }
    let retry = (job.failure_strategy == FailureStrategy::RetryWithBackoff).then_some(Retry {
        max_retries: job.max_retries,
        backoff: job.retry_backoff,
    });
    let fan = FanOut {
        sinks: created
            .into_iter()
            .map(|mut s| {
                s.set_key_columns(&key_columns);
                SinkHandle::spawn(s, schema.clone(), transactional, retry)
            })
            .collect(),
    };
    let dlq = match &p.plan.dlq {
        Some(cfg) => match crate::connectors::registry().create_sink(cfg) {
            Ok(s) => Some(SinkHandle::spawn(s, dlq_schema(), transactional, retry)),
            Err(e) => {
                return Err(EngineError::Invalid(format!(
                    "cannot create the dead-letter sink 'dlq': {e}"
                )));
            }
        },
        None => None,
    };
    let bounded = p.streams().all(|(s, _)| s.is_bounded());
    let mut adaptive = Adaptive {
        size: match job.strategy {
            BatchStrategy::AdaptiveSize { min_size, .. } => min_size,
            _ => 0,
        },
    };
    if p.whole_input && (job.batch_size.is_some() || job.batch_timeout.is_some()) {
        tracing::info!(job = %name, "the query needs its whole bounded input (aggregate/sort/limit): running one epoch");
    }
    let task_ctx = p.ctx.task_ctx();
    let mut stats = JobExecutionStats {
        job: name.clone(),
        ..Default::default()
    };
    let mut dead_lettered = 0u64;
    let mut logged_bad = 0u64;
    let mut epoch = 0u64;
    // a transactional job on a resumable source commits through a checkpoint;
    // so does any job with windows on one: the source position may only move
    // past records whose open windows are in the checkpoint too
    let state_dir = if (transactional || !p.window_states.is_empty()) && resumes(&p) {
        Some(state_dir(&p.plan)?)
    } else {
        None
    };
    let retry_epochs = job.failure_strategy == FailureStrategy::RetryWithBackoff;
    if state_dir.is_some() || (retry_epochs && rewindable(&p)) {
        for (src, f) in p.streams() {
            if !src.resumes_by_default() {
                // a file source reports positions only when asked: from the start
                f.set_resume(velo_connectors::Position::default());
            }
        }
    }
    // per stream (as `p.streams()`, the driving one first): the position of
    // the last committed epoch, and the records read
    let mut committed: Vec<Option<velo_connectors::Position>> = vec![None; p.others.len() + 1];
    let mut read_per_stream: Vec<u64> = vec![0; p.others.len() + 1];
    let mut checkpoints_written = 0u64;
    if let Some(dir) = &state_dir {
        if let Some(cp) = dir.load(&name).await? {
            for (sink, token) in &cp.sinks {
                let handle = fan.sinks.iter().chain(dlq.iter()).find(|h| &h.name == sink);
                if let Some(h) = handle {
                    h.recover(token.clone())
                        .await
                        .map_err(|e| EngineError::Sink {
                            job: name.clone(),
                            epoch: cp.epoch,
                            sink: sink.clone(),
                            message: e.message,
                            kind: e.kind,
                        })?;
                }
            }
            if !cp.operators.is_empty() || !p.window_states.is_empty() {
                let mut states = dir.load_operator_state(&cp.operators).await?;
                let missing = |what: &str| {
                    EngineError::Invalid(format!(
                        "the checkpoint in {} holds no {what}; the query changed: move the state directory away to start from scratch",
                        dir.display()
                    ))
                };
                if let Some(t) = &p.table {
                    let rows = states.pop().ok_or_else(|| missing("table rows"))?;
                    t.restore(rows)?;
                    t.mark_ready();
                }
                if let Some(c) = changelog.as_mut() {
                    let keys = states.pop().ok_or_else(|| missing("changelog keys"))?;
                    c.restore(&keys)?;
                }
                p.window_states.restore(states)?;
            }
            if let Some(wm) = cp.watermark {
                p.feed.watermark().reset(wm);
            }
            p.feed.set_resume(cp.position.clone());
            committed[0] = Some(cp.position);
            for (i, (src, f)) in p.others.iter().enumerate() {
                let Some(sp) = cp.streams.get(src.name()) else {
                    return Err(EngineError::Invalid(format!(
                        "the checkpoint in {} holds no position for the stream '{}'; the query changed: move the state directory away to start from scratch",
                        dir.display(),
                        src.name()
                    )));
                };
                if let Some(wm) = sp.watermark {
                    f.watermark().reset(wm);
                }
                f.set_resume(sp.position.clone());
                committed[i + 1] = Some(sp.position.clone());
            }
            tracing::info!(job = %name, "resuming after checkpoint epoch {} ({})", cp.epoch, dir.display());
            epoch = cp.epoch;
        }
    }
    let mut failed_in_row = 0u32;
    // what a failed epoch goes back to: needed where an epoch can be read
    // again (RetryWithBackoff) or discarded on every sink (transactions)
    let keep_committed = transactional || retry_epochs;
    let mut last_committed = if keep_committed {
        Some(Committed::take(&p, changelog.as_ref(), None).await?)
    } else {
        None
    };
    let mut records_unwritten = 0u64;
    loop {
        epoch += 1;
        let t0 = Instant::now();
        // with several streams, an operator over one of them may have read
        // its end before the others ended (the job's watermark was not the
        // end yet): one more epoch after all ended flushes it
        let ended_before = !p.others.is_empty() && p.is_finished().await;
        for l in &p.lookups {
            l.refresh_if_due(&p.counters, shutdown.receiver()).await;
        }
        for (_, f) in p.streams() {
            f.begin_epoch(budget(&job, bounded, p.whole_input, &adaptive))
                .await;
        }
        let mut begin_failed = Vec::new();
        for (n, r) in fan.each(|s| s.begin(epoch)).await {
            if let Err(e) = r {
                begin_failed.push((n.to_string(), e));
            }
        }
        if let Some(d) = &dlq {
            d.begin(epoch).await.map_err(|e| EngineError::Sink {
                job: name.clone(),
                epoch,
                sink: "dlq".into(),
                message: e.message,
                kind: e.kind,
            })?;
        }
        let plan =
            datafusion::physical_plan::execution_plan::reset_plan_states(p.physical.clone())?;
        let mut exec_err = None;
        let mut seen = std::collections::HashSet::new();
        // CREATE TABLE: the epoch's rows, applied to the table once published
        let mut table_rows: Vec<RecordBatch> = Vec::new();
        match execute_stream(plan, task_ctx.clone()) {
            Ok(mut stream) => {
                while let Some(r) = stream.next().await {
                    let r = match (r, changelog.as_mut()) {
                        (Ok(b), Some(c)) => c.label(&b, &mut seen),
                        (r, _) => r,
                    };
                    let r = r
                        .and_then(|b| crate::rowerrors::without_unprintable_times(b, &p.dead_rows));
                    match r {
                        Ok(b) => {
                            Counters::add(&p.counters.records_out, b.num_rows() as u64);
                            stats.arrow_batches += 1;
                            fan.write(&b).await;
                            if p.table.is_some() {
                                table_rows.push(b);
                            }
                        }
                        Err(e) => {
                            exec_err = Some(e);
                            break;
                        }
                    }
                }
            }
            Err(e) => exec_err = Some(e),
        }
        if let (None, Some(c)) = (&exec_err, changelog.as_mut()) {
            match c.deletes(&p.window_states.take_changed(), &seen) {
                Ok(Some(b)) => {
                    Counters::add(&p.counters.records_out, b.num_rows() as u64);
                    fan.write(&b).await;
                    if p.table.is_some() {
                        table_rows.push(b);
                    }
                }
                Ok(None) => {}
                Err(e) => exec_err = Some(e),
            }
        }
        {
            use std::sync::atomic::Ordering::Relaxed;
            let m = &p.window_metrics;
            stats.join_rows_peak = stats.join_rows_peak.max(m.join_rows.load(Relaxed));
            stats.row_keys_peak = stats.row_keys_peak.max(m.row_keys.load(Relaxed));
            stats.row_rows_peak = stats.row_rows_peak.max(m.row_rows.load(Relaxed));
        }
        // where the epoch's time goes (debug log): the phases it reached
        let mut phases = vec![("executed", t0.elapsed())];
        let mut epoch_records = 0u64;
        let mut bad = Vec::new();
        for (i, (_, f)) in p.streams().enumerate() {
            let n = f.epoch_records().await as u64;
            read_per_stream[i] += n;
            epoch_records += n;
            bad.extend(f.take_bad().await);
        }
        let dead = p.dead_rows.take();
        Counters::add(&p.counters.records_failed, dead.len() as u64);
        bad.extend(dead);
        if !bad.is_empty() {
            for b in &bad {
                logged_bad += 1;
                if logged_bad <= 100 {
                    tracing::warn!(job = %name, "{b}");
                } else if logged_bad.is_multiple_of(10_000) {
                    tracing::warn!(job = %name, "{logged_bad} bad records so far");
                }
            }
            if let Some(d) = &dlq {
                if exec_err.is_none() || job.failure_strategy != FailureStrategy::FailBatch {
                    let _ = d.write(dlq_batch(&bad)).await;
                    dead_lettered += bad.len() as u64;
                }
            }
        }
        if let Some(e) = exec_err {
            abort_all(&fan, dlq.as_ref(), epoch).await;
            stats.batches_failed += 1;
            let error = epoch_error(&p, &job, &name, epoch, e, &bad).await;
            let failed = Failed {
                epoch,
                records: epoch_records,
                discard: false,
                error: &error,
            };
            let next = after_failure(
                &p,
                &job,
                &committed,
                &mut failed_in_row,
                (last_committed.as_ref(), changelog.as_mut()),
                &failed,
                &mut records_unwritten,
            )
            .await;
            if !matches!(next, Ok(Next::ReadAgain)) {
                close_all(&fan, dlq.as_ref()).await;
                return Err(next.err().unwrap_or(error));
            }
        } else {
            // commit protocol: prepare everything, then publish
            let mut failed: Vec<(String, crate::fanout::SinkFailure)> = begin_failed;
            // an epoch that read nothing keeps the last committed position
            // (per stream, with its committer)
            let mut positions = Vec::with_capacity(committed.len());
            for ((_, f), c) in p.streams().zip(&committed) {
                positions.push((
                    f.position().await.or_else(|| c.clone()),
                    f.committer().await,
                ));
            }
            if transactional {
                // a Kafka sink sends every stream's offsets in its transaction
                let mut all = positions[0].0.clone();
                for (o, _) in &positions[1..] {
                    if let (Some(a), Some(o)) = (all.as_mut(), o) {
                        a.parts.extend(o.parts.clone());
                    }
                }
                if let Some(pos) = &all {
                    let ctx = positions[0]
                        .1
                        .as_ref()
                        .and_then(|c| c.transaction_context());
                    for (n, r) in fan.each(|s| s.set_position(pos.clone(), ctx.clone())).await {
                        if let Err(e) = r {
                            failed.push((n.to_string(), e));
                        }
                    }
                }
            }
            phases.push(("sinks asked to prepare", t0.elapsed()));
            let mut tokens = BTreeMap::new();
            for (n, r) in fan.each(|s| s.prepare(epoch)).await {
                match r {
                    Ok(pr) => {
                        if let Some(t) = pr.token {
                            tokens.insert(n.to_string(), t);
                        }
                    }
                    Err(e) => {
                        if !failed.iter().any(|(f, _)| f == n) {
                            failed.push((n.to_string(), e));
                        }
                    }
                }
            }
            if let Some(d) = &dlq {
                match d.prepare(epoch).await {
                    Ok(pr) => {
                        if let Some(t) = pr.token {
                            tokens.insert("dlq".into(), t);
                        }
                    }
                    Err(e) => failed.push(("dlq".into(), e)),
                }
            }
            if !failed.is_empty()
                && (transactional || job.failure_strategy != FailureStrategy::LogAndContinue)
            {
                // the epoch is published nowhere: FailBatch stops, retries
                // read it again, transactions under LogAndContinue drop it
                abort_all(&fan, dlq.as_ref(), epoch).await;
                stats.batches_failed += 1;
                let (sink, message) = failed.remove(0);
                let cause = format!("sink '{sink}' failed: {message}");
                let error = EngineError::Sink {
                    job: name.clone(),
                    epoch,
                    sink,
                    message: message.message,
                    kind: message.kind,
                };
                let lost = Failed {
                    epoch,
                    records: epoch_records,
                    discard: transactional,
                    error: &error,
                };
                let next = after_failure(
                    &p,
                    &job,
                    &committed,
                    &mut failed_in_row,
                    (last_committed.as_ref(), changelog.as_mut()),
                    &lost,
                    &mut records_unwritten,
                )
                .await;
                match next {
                    Ok(Next::ReadAgain) => {}
                    Ok(Next::Discarded) => {
                        tracing::error!(job = %name, epoch, "{cause}; the transaction was aborted on every sink and the epoch's {epoch_records} records are lost (failure_strategy LogAndContinue); the job goes on");
                    }
                    Ok(Next::Stop) | Err(_) => {
                        close_all(&fan, dlq.as_ref()).await;
                        return Err(next.err().unwrap_or(error));
                    }
                }
            } else {
                // the operator state as this epoch leaves it: for the
                // checkpoint and for going back to if a later epoch fails
                let states = match (state_dir.is_some() || keep_committed)
                    .then(|| p.window_states.snapshot())
                    .transpose()
                {
                    Ok(s) => s,
                    Err(e) => {
                        abort_all(&fan, dlq.as_ref(), epoch).await;
                        close_all(&fan, dlq.as_ref()).await;
                        return Err(e.into());
                    }
                };
                // the commit point of a checkpointed job
                if let Some(dir) = &state_dir {
                    let snapshot = Ok::<_, datafusion::error::DataFusionError>(
                        states.clone().expect("taken for a state directory"),
                    )
                    .and_then(|mut s| {
                        if let Some(c) = &changelog {
                            s.push(c.snapshot()?);
                        }
                        // the table with this epoch applied (it is
                        // applied after the commit)
                        if let Some(t) = &p.table {
                            s.push(t.merged(&table_rows)?);
                        }
                        Ok(s)
                    })
                    .map_err(EngineError::from);
                    let stored = async {
                        let operators = dir.store_operator_state(epoch, &snapshot?).await?;
                        let cp = crate::checkpoint::Checkpoint {
                            version: crate::checkpoint::VERSION,
                            job: name.clone(),
                            epoch,
                            position: positions[0].0.clone().unwrap_or_default(),
                            sinks: tokens,
                            watermark: shown_watermark(p.feed.watermark().get()),
                            operators,
                            streams: p
                                .others
                                .iter()
                                .zip(&positions[1..])
                                .map(|((src, f), (pos, _))| {
                                    (
                                        src.name().to_string(),
                                        crate::checkpoint::StreamPosition {
                                            position: pos.clone().unwrap_or_default(),
                                            watermark: shown_watermark(f.watermark().get()),
                                        },
                                    )
                                })
                                .collect(),
                        };
                        dir.store(&cp).await?;
                        dir.remove_stale_operator_state(&cp.operators).await;
                        Ok::<_, EngineError>(())
                    }
                    .await;
                    if let Err(e) = stored {
                        abort_all(&fan, dlq.as_ref(), epoch).await;
                        close_all(&fan, dlq.as_ref()).await;
                        return Err(e);
                    }
                    if epoch_records > 0 {
                        checkpoints_written += 1;
                        crate::checkpoint::crash_point(checkpoints_written);
                    }
                }
                phases.push(("prepared and checkpointed", t0.elapsed()));
                for (sink, message) in &failed {
                    tracing::error!(job = %name, epoch, "sink '{sink}' failed this epoch (other sinks continue): {message}");
                    if let Some(h) = fan.sinks.iter().find(|s| &s.name == sink) {
                        let _ = h.drop_epoch(epoch).await;
                    }
                }
                let failed_ref = &failed;
                let commits = fan
                    .each(|s| async move {
                        if failed_ref.iter().any(|(f, _)| f == &s.name) {
                            Ok(())
                        } else {
                            s.commit(epoch).await
                        }
                    })
                    .await;
                for (n, r) in commits {
                    if let Err(e) = r {
                        tracing::error!(job = %name, epoch, "sink '{n}' failed to publish: {e}");
                        if job.failure_strategy != FailureStrategy::LogAndContinue {
                            close_all(&fan, dlq.as_ref()).await;
                            return Err(EngineError::Sink {
                                job: name,
                                epoch,
                                sink: n.to_string(),
                                message: e.message,
                                kind: e.kind,
                            });
                        }
                    }
                }
                if let Some(d) = &dlq {
                    d.commit(epoch).await.map_err(|e| EngineError::Sink {
                        job: name.clone(),
                        epoch,
                        sink: "dlq".into(),
                        message: e.message,
                        kind: e.kind,
                    })?;
                }
                phases.push(("published", t0.elapsed()));
                if let Some(t) = &p.table {
                    if let Err(e) = t.apply(&table_rows) {
                        tracing::error!(job = %name, epoch, "table '{}' not updated: {e}", t.name());
                    }
                    t.mark_ready();
                }
                // every sink acknowledged: the source may forget what came before
                for ((pos, c), last) in positions.into_iter().zip(committed.iter_mut()) {
                    if let Some(pos) = pos.filter(|_| failed.is_empty()) {
                        if let Some(c) = &c
                            && let Err(e) = c.commit(&pos, false)
                        {
                            tracing::warn!(job = %name, epoch, "{e}");
                        }
                        *last = Some(pos);
                    }
                }
                failed_in_row = 0;
                if keep_committed {
                    let states = states.expect("taken to keep");
                    last_committed =
                        Some(Committed::take(&p, changelog.as_ref(), Some(states)).await?);
                }
                // the empty epoch that only discovers the end of input is not counted
                if epoch_records > 0 || !p.is_finished().await {
                    stats.batches_processed += 1;
                    Counters::add(&p.counters.epochs, 1);
                }
            }
        }
        tracing::debug!(
            job = %name,
            epoch,
            records = epoch_records,
            "epoch took {:?}: {}",
            t0.elapsed(),
            phases
                .iter()
                .map(|(phase, at)| format!("{phase} at {at:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let BatchStrategy::AdaptiveSize {
            min_size,
            max_size,
            target_latency,
        } = job.strategy
        {
            let took = t0.elapsed();
            adaptive.size = if took < target_latency / 2 {
                (adaptive.size * 3 / 2).max(adaptive.size + 1).min(max_size)
            } else if took > target_latency {
                (adaptive.size * 2 / 3).max(min_size)
            } else {
                adaptive.size
            };
        }
        // a whole-input query (aggregate, sort, limit) has answered after its one epoch,
        // even if a LIMIT stopped reading early
        if p.whole_input
            || (p.is_finished().await && (p.others.is_empty() || ended_before))
            || shutdown.is_triggered()
        {
            break;
        }
    }
    for ((_, f), pos) in p.streams().zip(&committed) {
        if let (Some(pos), Some(c)) = (pos, f.committer().await)
            && let Err(e) = c.commit(pos, true)
        {
            tracing::warn!(job = %name, "final offset commit: {e}");
        }
    }
    close_all(&fan, dlq.as_ref()).await;
    stats.elapsed = started.elapsed();
    stats.records_processed = Counters::get(&p.counters.records_in);
    stats.records_read = p.lookup_rows.clone();
    if p.others.is_empty() {
        stats
            .records_read
            .insert(p.driver.name().to_string(), stats.records_processed);
    } else {
        for ((src, _), n) in p.streams().zip(&read_per_stream) {
            stats.records_read.insert(src.name().to_string(), *n);
        }
    }
    stats.records_failed = Counters::get(&p.counters.records_failed);
    stats.records_late = Counters::get(&p.counters.records_late);
    stats.records_dead_lettered = dead_lettered;
    stats.records_unwritten = records_unwritten;
    stats.fallback = fallback;
    for s in &fan.sinks {
        stats.records_written.insert(
            s.name.clone(),
            s.written.load(std::sync::atomic::Ordering::Relaxed),
        );
        let f = s.failed.load(std::sync::atomic::Ordering::Relaxed);
        if f > 0 {
            stats.sink_failures.insert(s.name.clone(), f);
        }
    }
    Ok(stats)
}

/// The GROUP BY columns of the query that are in its output: (output name,
/// name in the aggregate) pairs, the key of its results. The window's own
/// group columns (`window_start` ...) count only with `with_window`.
fn key_columns_of(plan: &LogicalPlan, with_window: bool) -> Vec<(String, String)> {
    use datafusion::common::tree_node::TreeNodeRecursion;
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

/// The checkpoint store of a job: `state.dir` (a local path relative to
/// the SQL file, or an `s3://` URL) or `.velo-state` beside the SQL file,
/// then the job name.
fn state_dir(plan: &JobPlan) -> Result<crate::checkpoint::StateStore> {
    let base = plan
        .sources
        .first()
        .map(|c| c.base_dir.clone())
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    let root = plan.job.state_dir.as_deref().unwrap_or(".velo-state");
    crate::checkpoint::StateStore::open(root, &base, &plan.name)
}

/// Whether the job's source positions are followed: a resumable source
/// that resumes by default (Kafka), or any resumable source with a state
/// directory named (files: a file job run again reads its files again
/// unless told to resume).
fn resumes(p: &PreparedJob) -> bool {
    p.streams()
        .all(|(s, _)| s.resumable() && (s.resumes_by_default() || p.plan.job.state_dir.is_some()))
}

/// A watermark worth storing (not none yet, not the end of input).
fn shown_watermark(w: i64) -> Option<i64> {
    Some(w).filter(|w| *w != crate::time::Watermark::NONE && *w != crate::time::Watermark::END)
}

/// Whether every stream of the job can be read again from a position (an
/// epoch that failed can be re-read).
fn rewindable(p: &PreparedJob) -> bool {
    p.streams().all(|(s, _)| s.resumable())
}

/// What a failed epoch goes back to (ARCHITECTURE.md decision 7): the
/// operator state, the changelog's written keys and every stream's
/// watermark as of the last committed epoch.
struct Committed {
    states: Vec<RecordBatch>,
    changelog: Option<RecordBatch>,
    feeds: Vec<crate::feed::FeedMark>,
}

impl Committed {
    /// The job as it stands now; `states` when the caller already took
    /// them (the checkpoint's snapshot).
    async fn take(
        p: &PreparedJob,
        changelog: Option<&crate::changelog::Changelog>,
        states: Option<Vec<RecordBatch>>,
    ) -> Result<Self> {
        let states = match states {
            Some(s) => s,
            None => p.window_states.snapshot()?,
        };
        let mut feeds = Vec::new();
        for (_, f) in p.streams() {
            feeds.push(f.mark().await);
        }
        Ok(Self {
            states,
            changelog: changelog.map(|c| c.snapshot()).transpose()?,
            feeds,
        })
    }

    /// Puts the job back as it stood.
    async fn restore(
        &self,
        p: &PreparedJob,
        changelog: Option<&mut crate::changelog::Changelog>,
    ) -> Result<()> {
        p.window_states.restore(self.states.clone())?;
        // the changes noted by the failed epoch's emission are void
        let _ = p.window_states.take_changed();
        if let (Some(c), Some(keys)) = (changelog, &self.changelog) {
            c.restore(keys)?;
        }
        for ((_, f), mark) in p.streams().zip(&self.feeds) {
            f.restore_mark(mark).await;
        }
        Ok(())
    }
}

/// An epoch that failed before anything of it was published.
struct Failed<'a> {
    epoch: u64,
    /// Records the epoch read.
    records: u64,
    /// Whether LogAndContinue may drop it (a transaction aborted on every
    /// sink); otherwise LogAndContinue stops as FailBatch does.
    discard: bool,
    error: &'a EngineError,
}

/// What the job does after a failed epoch.
#[derive(Debug, PartialEq)]
enum Next {
    /// The state went back to the last committed epoch and the streams to
    /// its positions: the epoch is read again.
    ReadAgain,
    /// The state went back to the last committed epoch; the epoch's records
    /// are lost (counted).
    Discarded,
    /// The job stops with the epoch's error; nothing past the last committed
    /// epoch was published, so a restart reads it again.
    Stop,
}

/// Decides, by the failure strategy, what follows a failed epoch, and puts
/// the job back to its last committed epoch where it goes on:
/// RetryWithBackoff reads the epoch again after a backoff (`max_retries`
/// failures in a row stop the job with the error), LogAndContinue drops an
/// aborted transaction, anything else stops.
async fn after_failure(
    p: &PreparedJob,
    job: &velo_config::JobConfig,
    positions: &[Option<velo_connectors::Position>],
    failed_in_row: &mut u32,
    (last, changelog): (Option<&Committed>, Option<&mut crate::changelog::Changelog>),
    failed: &Failed<'_>,
    unwritten: &mut u64,
) -> Result<Next> {
    let name = &p.plan.name;
    let epoch = failed.epoch;
    let retry = job.failure_strategy == FailureStrategy::RetryWithBackoff;
    let Some(last) = last.filter(|_| {
        (retry && failed.error.kind() != crate::ErrorKind::User && rewindable(p))
            || (job.failure_strategy == FailureStrategy::LogAndContinue && failed.discard)
    }) else {
        if retry && !rewindable(p) {
            tracing::error!(job = %name, epoch, "the epoch failed and cannot be read again: a source of the job cannot go back to a position");
        }
        return Ok(Next::Stop);
    };
    if !retry {
        last.restore(p, changelog).await?;
        *unwritten += failed.records;
        Counters::add(&p.counters.records_failed, failed.records);
        return Ok(Next::Discarded);
    }
    *failed_in_row += 1;
    if *failed_in_row > job.max_retries {
        let message = format!(
            "job '{name}' stopped: epoch {epoch} failed {} times in a row (max_retries = {}); nothing of it was published, a restart reads it again. Last error: {}",
            *failed_in_row, job.max_retries, failed.error
        );
        return Err(match failed.error.kind() {
            crate::ErrorKind::Internal => EngineError::Internal(message),
            crate::ErrorKind::User => EngineError::Invalid(message),
            crate::ErrorKind::External => EngineError::External(message),
        });
    }
    let wait = job.retry_backoff * (1u32 << (*failed_in_row - 1).min(10));
    tracing::warn!(job = %name, epoch, "epoch failed: {}; reading it again from the last committed position in {wait:?} (attempt {failed_in_row} of {})", failed.error, job.max_retries);
    tokio::time::sleep(wait).await;
    last.restore(p, changelog).await?;
    for ((_, f), c) in p.streams().zip(positions) {
        f.rewind(c.clone().unwrap_or_default()).await;
    }
    Ok(Next::ReadAgain)
}

/// The error of an epoch whose execution failed: a source's own failure,
/// a bad record under FailBatch, or the query's error.
async fn epoch_error(
    p: &PreparedJob,
    job: &velo_config::JobConfig,
    name: &str,
    epoch: u64,
    e: datafusion::error::DataFusionError,
    bad: &[BadRecord],
) -> EngineError {
    for (src, f) in p.streams() {
        if let Some((kind, message)) = f.fatal().await {
            return EngineError::Source {
                name: src.name().to_string(),
                message,
                kind,
            };
        }
    }
    let bad_record = matches!(e.find_root(), datafusion::error::DataFusionError::External(x) if x.is::<crate::feed::BadRecordError>());
    if bad_record && job.failure_strategy == FailureStrategy::FailBatch {
        let record = bad
            .first()
            .map(|b| format!("{b}: {}", b.raw))
            .unwrap_or_else(|| e.to_string());
        return EngineError::BadRecord {
            job: name.to_string(),
            epoch,
            record,
        };
    }
    let kind = crate::error::datafusion_kind(&e);
    let message = format!(
        "job '{name}' stopped at epoch {epoch} ({:?}): {e}; nothing of this epoch was published",
        job.failure_strategy
    );
    match kind {
        crate::ErrorKind::User => EngineError::Invalid(message),
        crate::ErrorKind::External => EngineError::External(message),
        crate::ErrorKind::Internal => EngineError::Internal(message),
    }
}

async fn close_all(fan: &FanOut, dlq: Option<&SinkHandle>) {
    for (n, r) in fan.each(|s| s.close()).await {
        if let Err(e) = r {
            tracing::error!(sink = n, "close failed: {e}");
        }
    }
    if let Some(d) = dlq {
        if let Err(e) = d.close().await {
            tracing::error!(sink = "dlq", "close failed: {e}");
        }
    }
}
