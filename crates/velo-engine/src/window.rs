//! Windowed aggregation on unbounded input.
//!
//! Where it sits: between the driving source's scan and the rest of the
//! query. The SELECT is first normalised ([`rewrite_query`]): every window
//! syntax users write (`GROUP BY TUMBLE(ts, size)`, `HOP(ts, slide, size)`,
//! `SESSION(ts, gap)`, Velostream's `WINDOW TUMBLING(...)`, `SLIDING(...)`,
//! `SESSION(gap)`) becomes one group expression `tumble(..)` / `hop(..)` /
//! `session(..)` plus its companion `*_end(..)`, and `window_start`,
//! `window_end`, `_window_start`, `TUMBLE_START()` ... refer to them. DataFusion
//! then plans the query as an ordinary aggregate. A physical optimizer rule
//! ([`StreamingWindows`]) swaps that `AggregateExec` for a
//! [`WindowAggregateExec`], which keeps DataFusion's own accumulators
//! (`GroupsAccumulator`, so every aggregate function works) per window across
//! epochs and emits a window's rows once, when the watermark passes its end.
//! Filters, projections, HAVING and expressions stay DataFusion's.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, TimestampMillisecondArray,
    UInt8Array, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    ColumnarValue, EmitTo, GroupsAccumulator, LogicalPlan, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::{
    EquivalenceProperties, GroupsAccumulatorAdapter, PhysicalExpr, ScalarFunctionExpr,
};
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, aggregate_expressions};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, Query, SelectItem,
    SetExpr,
};
use futures::StreamExt;

use crate::time::Watermark;

/// The kinds of window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows.
    Tumble {
        /// Length in ms.
        size: i64,
    },
    /// Overlapping windows.
    Hop {
        /// A window starts every `slide` ms.
        slide: i64,
        /// Length in ms.
        size: i64,
    },
    /// Per key, records less than `gap` apart.
    Session {
        /// Gap in ms.
        gap: i64,
    },
    /// No window: a `GROUP BY` over the whole stream whose results are
    /// updated (emitted again) whenever a group changes.
    Global,
}

/// When a window operator emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emit {
    /// A window's rows once, when the watermark passes its end.
    #[default]
    Final,
    /// Every group that changed, at the end of every epoch (`EMIT CHANGES`,
    /// and every `GROUP BY` without a window on a stream).
    Changes,
}

/// What the query's window needs from the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowInfo {
    /// `tumble`, `hop` or `session`.
    pub function: String,
    /// The time column the window names, `None` for processing time.
    pub time_column: Option<String>,
}

const START_FNS: &[&str] = &["tumble", "hop", "session"];
const PROCTIME: &str = "velo_proctime";

fn fn_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Function(f) => Some(f.name.to_string().to_ascii_lowercase()),
        _ => None,
    }
}

fn fn_args(e: &Expr) -> Vec<Expr> {
    let Expr::Function(f) = e else { return vec![] };
    let FunctionArguments::List(l) = &f.args else {
        return vec![];
    };
    l.args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            FunctionArg::Named {
                arg: FunctionArgExpr::Expr(e),
                ..
            } => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn parse_expr(sql: &str) -> crate::Result<Expr> {
    let dialect = velo_sql::VeloDialect;
    datafusion::sql::sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| crate::EngineError::Invalid(format!("window expression '{sql}': {e}")))
}

fn column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(i.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
        _ => None,
    }
}

/// Normalises the window of `query` (see the module docs). `event_time` is
/// the driving source's declared time column, used by the forms that name
/// none (`WINDOW TUMBLING(INTERVAL '1' MINUTE)`); without one they run on
/// processing time. Returns `None` for a query without a window.
pub fn rewrite_query(
    query: &mut Query,
    event_time: Option<&str>,
) -> crate::Result<Option<WindowInfo>> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Ok(None);
    };
    // windows in subqueries of FROM / JOIN (a join of windowed streams)
    let mut nested = None;
    for twj in &mut select.from {
        for f in
            std::iter::once(&mut twj.relation).chain(twj.joins.iter_mut().map(|j| &mut j.relation))
        {
            if let datafusion::sql::sqlparser::ast::TableFactor::Derived { subquery, .. } = f
                && let Some(w) = rewrite_query(subquery, event_time)?
            {
                nested.get_or_insert(w);
            }
        }
    }
    let GroupByExpr::Expressions(exprs, _) = &mut select.group_by else {
        return Ok(nested);
    };
    let mut found: Option<(usize, String, Vec<Expr>)> = None;
    for (i, e) in exprs.iter().enumerate() {
        let Some(name) = fn_name(e) else { continue };
        let kind = match name.as_str() {
            "tumble" | "tumbling" => "tumble",
            "hop" | "hopping" | "sliding" => "hop",
            "session" => "session",
            _ => continue,
        };
        if found.is_some() {
            return Err(crate::EngineError::Invalid(
                "a query may group by one window only".into(),
            ));
        }
        let mut args = fn_args(e);
        let want = if kind == "hop" { 3 } else { 2 };
        if args.len() + 1 == want {
            let ts = match event_time {
                Some(c) => Expr::Identifier(Ident::new(c)),
                None => parse_expr(&format!("{PROCTIME}()"))?,
            };
            args.insert(0, ts);
        }
        if args.len() != want {
            return Err(crate::EngineError::Invalid(format!(
                "{} takes {}: {e}",
                name.to_ascii_uppercase(),
                match kind {
                    "tumble" => "(time column, size) or (size)",
                    "session" => "(time column, gap) or (gap)",
                    _ if name == "sliding" => "(time column, size, slide) or (size, slide)",
                    _ => "(time column, slide, size) or (slide, size)",
                }
            )));
        }
        if name == "sliding" {
            // SLIDING(ts, size, slide) is HOP(ts, slide, size)
            args.swap(1, 2);
        }
        found = Some((i, kind.to_string(), args));
    }
    let Some((pos, kind, args)) = found else {
        return Ok(nested);
    };
    let arg_text = args
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let start = parse_expr(&format!("{kind}({arg_text})"))?;
    let end = parse_expr(&format!("{kind}_end({arg_text})"))?;
    exprs[pos] = start.clone();
    exprs.push(end.clone());
    let time_column = if fn_name(&args[0]).as_deref() == Some(PROCTIME) {
        None
    } else {
        Some(column_name(&args[0]).ok_or_else(|| {
            crate::EngineError::Invalid(format!(
                "the window's time argument must be a column of the source, not '{}'; declare '<source>.event.time.field' and '<source>.event.time.format' to read another column as event time",
                args[0]
            ))
        })?)
    };
    // window_start / window_end and the *_START() / *_END() functions
    let which = |e: &Expr| -> Option<(bool, String)> {
        match e {
            Expr::Identifier(i) if i.quote_style.is_none() => {
                let l = i.value.to_ascii_lowercase();
                match l.as_str() {
                    "window_start" | "_window_start" => Some((true, l)),
                    "window_end" | "_window_end" => Some((false, l)),
                    _ => None,
                }
            }
            Expr::Function(_) => {
                let n = fn_name(e)?;
                let (w, edge) = n.rsplit_once('_')?;
                if !["tumble", "hop", "session", "tumbling", "sliding", "hopping"].contains(&w) {
                    return None;
                }
                match edge {
                    "start" => Some((true, n)),
                    "end" => Some((false, n)),
                    _ => None,
                }
            }
            _ => None,
        }
    };
    for item in select.projection.iter_mut() {
        if let SelectItem::UnnamedExpr(e) = item
            && let Some((_, alias)) = which(e)
        {
            *item = SelectItem::ExprWithAlias {
                expr: e.clone(),
                alias: Ident::new(alias),
            };
        }
    }
    // this query's own clauses, not the subqueries of its FROM (their
    // windows are their own)
    let mut replace = |e: &mut Expr| {
        if let Some((is_start, _)) = which(e) {
            *e = if is_start { start.clone() } else { end.clone() };
        }
        ControlFlow::<()>::Continue(())
    };
    use datafusion::sql::sqlparser::ast::visit_expressions_mut as visit;
    let _ = visit(&mut select.projection, &mut replace);
    let _ = visit(&mut select.selection, &mut replace);
    let _ = visit(&mut select.group_by, &mut replace);
    let _ = visit(&mut select.having, &mut replace);
    let _ = visit(&mut query.order_by, &mut replace);
    Ok(Some(WindowInfo {
        function: kind,
        time_column,
    }))
}

/// The window functions as DataFusion scalar functions. `tumble` and
/// `tumble_end` compute their value (so a batch run of the same query is the
/// oracle of the streaming one); the others exist only inside the window
/// operator.
pub fn udfs() -> Vec<ScalarUDF> {
    let mut v: Vec<ScalarUDF> = [
        "tumble",
        "tumble_end",
        "hop",
        "hop_end",
        "session",
        "session_end",
    ]
    .into_iter()
    .map(|n| {
        ScalarUDF::new_from_impl(WindowFn {
            name: n.to_string(),
            signature: Signature::any(
                if n.starts_with("hop") { 3 } else { 2 },
                Volatility::Immutable,
            ),
        })
    })
    .collect();
    v.push(ScalarUDF::new_from_impl(WindowFn {
        name: PROCTIME.to_string(),
        signature: Signature::nullary(Volatility::Volatile),
    }));
    v
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowFn {
    name: String,
    signature: Signature,
}

fn time_type(t: &DataType) -> Result<DataType> {
    match t {
        DataType::Timestamp(_, tz) => Ok(DataType::Timestamp(TimeUnit::Millisecond, tz.clone())),
        t if t.is_integer() => Ok(DataType::Timestamp(TimeUnit::Millisecond, None)),
        t => Err(DataFusionError::Plan(format!(
            "a window's time column must be a timestamp or epoch milliseconds, not {t}; declare '<source>.event.time.format' to read text as time"
        ))),
    }
}

/// Epoch milliseconds of a time column (timestamp of any unit, or integers).
pub fn to_millis(a: &ArrayRef) -> Result<Int64Array> {
    let ms = match a.data_type() {
        DataType::Timestamp(_, _) => {
            arrow::compute::cast(a, &DataType::Timestamp(TimeUnit::Millisecond, None))?
        }
        _ => a.clone(),
    };
    Ok(arrow::compute::cast(&ms, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

/// The longest window (or session gap): 1,000 years.
const MAX_WINDOW_MS: i64 = 1_000 * 366 * 86_400_000;
/// The most windows a HOP window may put one record in (size / slide).
const MAX_WINDOWS_PER_RECORD: i64 = 10_000;

/// Refuses windows whose bounds could overflow or that put a record in
/// more windows than can be kept.
fn check_window(kind: &WindowKind) -> Result<()> {
    let (size, slide) = match *kind {
        WindowKind::Tumble { size } => (size, size),
        WindowKind::Hop { slide, size } => (size, slide),
        WindowKind::Session { gap } => (gap, gap),
        WindowKind::Global => return Ok(()),
    };
    if size > MAX_WINDOW_MS || slide > MAX_WINDOW_MS {
        return Err(DataFusionError::Plan(format!(
            "a window of {} is longer than the 1,000 years a window may span; use a shorter interval",
            crate::time::show_duration(size.max(slide))
        )));
    }
    if size / slide > MAX_WINDOWS_PER_RECORD {
        return Err(DataFusionError::Plan(format!(
            "a HOP window of {} sliding every {} puts each record in {} windows, more than the {MAX_WINDOWS_PER_RECORD} a record may be in; slide by at least {}",
            crate::time::show_duration(size),
            crate::time::show_duration(slide),
            size / slide,
            crate::time::show_duration((size / MAX_WINDOWS_PER_RECORD).max(1))
        )));
    }
    Ok(())
}

fn interval_millis(v: &ScalarValue) -> Result<i64> {
    let Some(ms) = crate::time::fixed_millis(v) else {
        return Err(DataFusionError::Plan(format!(
            "a window size must be a fixed interval such as INTERVAL '1' MINUTE (months and years vary in length), not {v}"
        )));
    };
    if ms <= 0 {
        return Err(DataFusionError::Plan(format!(
            "a window size must be positive, not {ms} ms"
        )));
    }
    Ok(ms)
}

impl ScalarUDFImpl for WindowFn {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if self.name == PROCTIME {
            return Ok(DataType::Timestamp(TimeUnit::Millisecond, None));
        }
        time_type(&arg_types[0])
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        if self.name == PROCTIME {
            return Ok(ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(
                Some(crate::time::now_millis()),
                None,
            )));
        }
        if !self.name.starts_with("tumble") {
            return Err(DataFusionError::Execution(format!(
                "{}() is computed by the window operator of a streaming GROUP BY and cannot be used elsewhere",
                self.name
            )));
        }
        let size = match &args.args[1] {
            ColumnarValue::Scalar(s) => interval_millis(s)?,
            _ => {
                return Err(DataFusionError::Plan(
                    "a window size must be a constant interval".into(),
                ));
            }
        };
        let ts = to_millis(&args.args[0].to_array(n)?)?;
        let end = self.name.ends_with("_end");
        let out: Int64Array = ts.unary(|t| {
            let s = t.div_euclid(size) * size;
            if end { s + size } else { s }
        });
        let tz = match args.return_type() {
            DataType::Timestamp(_, tz) => tz.clone(),
            _ => None,
        };
        let arr = TimestampMillisecondArray::new(out.values().clone(), out.nulls().cloned())
            .with_timezone_opt(tz);
        Ok(ColumnarValue::Array(Arc::new(arr)))
    }
}

/// Whether `plan` aggregates by a window (such aggregates stream).
pub fn is_window_aggregate(plan: &LogicalPlan) -> bool {
    let LogicalPlan::Aggregate(a) = plan else {
        return false;
    };
    a.group_expr.iter().any(|e| {
        matches!(e, datafusion::logical_expr::Expr::ScalarFunction(f) if START_FNS.contains(&f.name()))
    })
}

/// Puts [`WindowAggregateExec`] in place of a windowed (or, updating, any)
/// `AggregateExec` over a stream; run by [`crate::join::StreamingJoins`] in
/// its bottom-up pass over the physical plan.
#[derive(Debug)]
pub struct StreamingWindows {
    watermark: Arc<Watermark>,
    metrics: Arc<WindowMetrics>,
    states: Arc<WindowStates>,
    emit: Emit,
    updating: bool,
    partitions: usize,
    feeds: Vec<Arc<crate::feed::EpochFeed>>,
}

impl StreamingWindows {
    /// A rule whose operators read `watermark`, report their size to
    /// `metrics` and register their state in `states` (checkpoints). With
    /// `updating`, a `GROUP BY` without a window is also replaced, by an
    /// operator that keeps its groups across epochs and emits the changed
    /// ones ([`WindowKind::Global`]); `emit` is how windows emit. A grouped
    /// operator runs in `partitions` partitions; when only projections and
    /// filters sit between it and the scan of one of `feeds`, that scan is
    /// read by as many partitions, so the routing runs on every core too.
    pub fn new(
        watermark: Arc<Watermark>,
        metrics: Arc<WindowMetrics>,
        states: Arc<WindowStates>,
        emit: Emit,
        updating: bool,
        partitions: usize,
        feeds: Vec<Arc<crate::feed::EpochFeed>>,
    ) -> Self {
        Self {
            watermark,
            metrics,
            states,
            emit,
            updating,
            partitions: partitions.max(1),
            feeds,
        }
    }
}

/// The window operators of a job: their state is written with every
/// checkpoint and read back on restart, so no window result is lost or
/// emitted twice across a crash.
#[derive(Default)]
pub struct WindowStates(Mutex<Vec<Arc<dyn OperatorState>>>);

/// The state of a stateful streaming operator, for checkpoints.
pub trait OperatorState: Send + Sync {
    /// The whole state as one batch; the operator goes on unchanged.
    fn snapshot(&self) -> Result<RecordBatch>;
    /// Puts back what [`Self::snapshot`] took.
    fn restore(&self, batch: RecordBatch) -> Result<()>;
    /// Whether it emits changes (the job's output is a changelog).
    fn emits_changes(&self) -> bool {
        false
    }
    /// `EMIT CHANGES`: keys of the groups changed at the last emission.
    fn take_changed(&self) -> Vec<RecordBatch> {
        Vec::new()
    }
}

impl OperatorState for Inner {
    fn snapshot(&self) -> Result<RecordBatch> {
        Inner::snapshot(self)
    }
    fn restore(&self, batch: RecordBatch) -> Result<()> {
        Inner::restore(self, batch)
    }
    fn emits_changes(&self) -> bool {
        self.emit == Emit::Changes
    }
    fn take_changed(&self) -> Vec<RecordBatch> {
        std::mem::take(&mut *self.changed.lock().expect("changed keys"))
    }
}

impl fmt::Debug for WindowStates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "WindowStates({})",
            self.0.lock().map(|v| v.len()).unwrap_or(0)
        )
    }
}

impl WindowStates {
    /// Adds an operator's state (in plan order).
    pub fn register(&self, inner: Arc<dyn OperatorState>) {
        self.0.lock().expect("window states").push(inner);
    }

    /// Whether the job has window operators.
    pub fn is_empty(&self) -> bool {
        self.0.lock().expect("window states").is_empty()
    }

    /// Whether an operator emits changes (the job's output is a changelog).
    pub fn emits_changes(&self) -> bool {
        self.0
            .lock()
            .expect("window states")
            .iter()
            .any(|i| i.emits_changes())
    }

    /// `EMIT CHANGES`: the keys of the groups that changed at the last
    /// emission, named like the query's group columns (the changelog turns
    /// those missing from the output, e.g. filtered out by HAVING, into
    /// deletes).
    pub fn take_changed(&self) -> Vec<RecordBatch> {
        self.0
            .lock()
            .expect("window states")
            .iter()
            .flat_map(|i| i.take_changed())
            .collect()
    }

    /// One Arrow batch per operator holding its whole state.
    pub fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        self.0
            .lock()
            .expect("window states")
            .iter()
            .map(|i| i.snapshot())
            .collect()
    }

    /// Puts back what [`Self::snapshot`] took (same query, same order).
    pub fn restore(&self, batches: Vec<RecordBatch>) -> Result<()> {
        let ops = self.0.lock().expect("window states");
        if batches.len() != ops.len() {
            return Err(DataFusionError::Plan(format!(
                "the checkpoint holds the state of {} window operator partition(s) but the query has {}; the query or its 'partitions' changed: run it with the same 'partitions', or move the state directory away to start from scratch",
                batches.len(),
                ops.len()
            )));
        }
        for (op, b) in ops.iter().zip(batches) {
            op.restore(b)?;
        }
        Ok(())
    }
}

/// Traces output column `col` of a plan to the lowest event time its rows
/// to come can carry (see [`crate::join`]).
pub type Trace<'a> =
    &'a dyn Fn(&Arc<dyn ExecutionPlan>, usize) -> Option<Arc<dyn Fn() -> i64 + Send + Sync>>;

impl StreamingWindows {
    /// Replaces `p` if it is a windowed (or, updating, any) aggregate over
    /// unbounded input. Its children are already streaming operators
    /// (the pass runs bottom-up): a window whose time column `trace` follows
    /// to a lower bound (a window's or join's output) closes by that bound,
    /// others by the job's watermark.
    pub fn rewrite(
        &self,
        p: Arc<dyn ExecutionPlan>,
        trace: Trace<'_>,
    ) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
        let Some(agg) = p.downcast_ref::<AggregateExec>() else {
            return Ok(Transformed::no(p));
        };
        let source = match agg.mode() {
            AggregateMode::Single | AggregateMode::SinglePartitioned => agg,
            AggregateMode::Final | AggregateMode::FinalPartitioned => {
                let mut child = agg.input();
                loop {
                    if let Some(a) = child.downcast_ref::<AggregateExec>() {
                        break a;
                    }
                    match child.children().first() {
                        Some(c) => child = c,
                        None => return Ok(Transformed::no(p.clone())),
                    }
                }
            }
            _ => return Ok(Transformed::no(p.clone())),
        };
        match WindowAggregateExec::try_new(
            source,
            agg.schema(),
            self.watermark.clone(),
            self.metrics.clone(),
            self.emit,
            self.updating,
            self.partitions,
            trace,
            &self.feeds,
        )? {
            Some(w) => {
                for i in &w.inners {
                    self.states.register(i.clone() as Arc<dyn OperatorState>);
                }
                Ok(Transformed::yes(Arc::new(w)))
            }
            None => Ok(Transformed::no(p.clone())),
        }
    }
}

/// Live size of the window state (open windows and groups), for tests and
/// metrics.
#[derive(Debug, Default)]
pub struct WindowMetrics {
    /// Open windows (tumble/hop) or buffered rows of open sessions.
    pub open: std::sync::atomic::AtomicU64,
    /// Groups held across all open windows.
    pub groups: std::sync::atomic::AtomicU64,
    /// Bytes held by accumulators and group keys (and join state).
    pub bytes: std::sync::atomic::AtomicU64,
    /// Rows kept by stream-stream joins.
    pub join_rows: std::sync::atomic::AtomicU64,
    /// Keys with state in row windows (OVER).
    pub row_keys: std::sync::atomic::AtomicU64,
    /// Rows row windows keep (history and rows waiting to be final).
    pub row_rows: std::sync::atomic::AtomicU64,
}

struct Win {
    groups: Box<dyn GroupValues>,
    accs: Vec<Box<dyn GroupsAccumulator>>,
    /// `EMIT CHANGES`: the groups updated since the last emission.
    touched: Vec<bool>,
    any_touched: bool,
}

#[derive(Default)]
struct WinState {
    windows: BTreeMap<i64, Win>,
    /// A new window starts with one of these instead of growing a table
    /// from scratch.
    spare: SpareTables,
    /// Session windows: input rows of sessions not yet closed.
    pending: Vec<RecordBatch>,
}

/// Bytes of emptied group tables kept for new windows, per partition.
const SPARE_TABLE_BYTES: usize = 16 << 20;

/// Group tables of emitted windows, empty and kept at their grown size,
/// within [`SPARE_TABLE_BYTES`].
#[derive(Default)]
struct SpareTables {
    tables: Vec<Box<dyn GroupValues>>,
    bytes: usize,
}

impl SpareTables {
    /// Keeps an emitted window's group table for a new window.
    fn keep(&mut self, groups: Box<dyn GroupValues>) {
        let size = groups.size();
        if groups.is_empty() && self.bytes + size <= SPARE_TABLE_BYTES {
            self.bytes += size;
            self.tables.push(groups);
        }
    }

    /// A spare group table, if one is kept.
    fn take(&mut self) -> Option<Box<dyn GroupValues>> {
        let g = self.tables.pop()?;
        self.bytes = self.bytes.saturating_sub(g.size());
        Some(g)
    }
}

/// The shared state of one window operator.
struct Inner {
    input_schema: SchemaRef,
    schema: SchemaRef,
    kind: WindowKind,
    ts: Arc<dyn PhysicalExpr>,
    /// Where the window start is in the output (`None`: no window).
    start_pos: Option<usize>,
    end_pos: Option<usize>,
    emit: Emit,
    /// (position in the output, expression) of the key columns.
    keys: Vec<(usize, Arc<dyn PhysicalExpr>)>,
    key_schema: SchemaRef,
    aggr: Vec<Arc<AggregateFunctionExpr>>,
    args: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    tz: Option<Arc<str>>,
    watermark: Arc<Watermark>,
    metrics: Arc<WindowMetrics>,
    state: Mutex<WinState>,
    /// `EMIT CHANGES`: the keys of the groups changed at the last emission
    /// (named like the aggregate's output), for the changelog's deletes.
    changed: Mutex<Vec<RecordBatch>>,
    /// This partition's share of the metrics (open, groups, bytes).
    published: [std::sync::atomic::AtomicU64; 3],
    /// The watermark of the last emission: every window ending at or
    /// before it is out (a join over the window's output reads it).
    emitted_through: std::sync::atomic::AtomicI64,
    /// This partition's reservation of the memory pool (set by the
    /// operator when it makes the partitions).
    memory: Option<Arc<crate::memory::StateMemory>>,
}

impl Inner {
    /// The same operator with empty state: another partition of it.
    fn fresh(&self) -> Self {
        Self {
            input_schema: self.input_schema.clone(),
            schema: self.schema.clone(),
            kind: self.kind,
            ts: self.ts.clone(),
            start_pos: self.start_pos,
            end_pos: self.end_pos,
            emit: self.emit,
            keys: self.keys.clone(),
            key_schema: self.key_schema.clone(),
            aggr: self.aggr.clone(),
            args: self.args.clone(),
            filters: self.filters.clone(),
            tz: self.tz.clone(),
            watermark: self.watermark.clone(),
            metrics: self.metrics.clone(),
            state: Mutex::new(WinState::default()),
            changed: Mutex::new(Vec::new()),
            published: Default::default(),
            emitted_through: std::sync::atomic::AtomicI64::new(Watermark::NONE),
            memory: None,
        }
    }

    /// The state's reservation follows its size (the bytes of
    /// [`Self::publish_metrics`]).
    fn reserve(&self, ctx: &TaskContext) -> Result<()> {
        match &self.memory {
            Some(m) => m.resize(
                ctx,
                self.published[2].load(std::sync::atomic::Ordering::Relaxed) as usize,
            ),
            None => Ok(()),
        }
    }
}

/// The streaming window aggregate: one state per partition; with several,
/// its input is hash-routed by the group key, so a key's state lives in one
/// partition for good.
pub struct WindowAggregateExec {
    input: Arc<dyn ExecutionPlan>,
    inners: Vec<Arc<Inner>>,
    /// `state_bytes` per partition, shown by `ExecutionPlan::metrics`.
    plan_metrics: ExecutionPlanMetricsSet,
    props: Arc<PlanProperties>,
}

impl fmt::Debug for WindowAggregateExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WindowAggregateExec({:?})", self.inners[0].kind)
    }
}

fn window_fn(e: &Arc<dyn PhysicalExpr>) -> Option<(&str, &ScalarFunctionExpr)> {
    let f = e.downcast_ref::<ScalarFunctionExpr>()?;
    Some((f.name(), f))
}

fn literal_ms(e: &Arc<dyn PhysicalExpr>) -> Result<i64> {
    match e.downcast_ref::<Literal>() {
        Some(l) => interval_millis(l.value()),
        None => Err(DataFusionError::Plan(format!(
            "a window size must be a constant interval, not {e}"
        ))),
    }
}

fn create_accumulator(a: &Arc<AggregateFunctionExpr>) -> Result<Box<dyn GroupsAccumulator>> {
    if a.groups_accumulator_supported() {
        a.create_groups_accumulator()
    } else {
        let a = a.clone();
        Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
            a.create_accumulator()
        })))
    }
}

impl WindowAggregateExec {
    /// The lowest window start (or end) that output column `col` can still
    /// carry: every window ending at or before the watermark of the last
    /// emission is out, so those to come end after it. Tumbling and hopping
    /// windows emitted once (`EMIT FINAL`) only.
    pub fn lower_bound(&self, col: usize) -> Option<Arc<dyn Fn() -> i64 + Send + Sync>> {
        let first = self.inners.first()?;
        if first.emit != Emit::Final {
            return None;
        }
        let size = match first.kind {
            WindowKind::Tumble { size } | WindowKind::Hop { size, .. } => size,
            _ => return None,
        };
        let back = if Some(col) == first.start_pos {
            size
        } else if Some(col) == first.end_pos {
            0
        } else {
            return None;
        };
        let inners = self.inners.clone();
        Some(Arc::new(move || {
            let through = inners
                .iter()
                .map(|i| i.emitted_through.load(std::sync::atomic::Ordering::Acquire))
                .min()
                .unwrap_or(Watermark::NONE);
            crate::time::shift(through, -back)
        }))
    }

    /// The window operator for `agg`, if it groups by a window.
    #[allow(clippy::too_many_arguments)]
    pub fn try_new(
        agg: &AggregateExec,
        schema: SchemaRef,
        watermark: Arc<Watermark>,
        metrics: Arc<WindowMetrics>,
        emit: Emit,
        updating: bool,
        partitions: usize,
        trace: Trace<'_>,
        feeds: &[Arc<crate::feed::EpochFeed>],
    ) -> Result<Option<Self>> {
        let group = agg.group_expr();
        if group.has_grouping_set() {
            if updating && !matches!(agg.input().boundedness(), Boundedness::Bounded) {
                return Err(DataFusionError::Plan(
                    "GROUPING SETS / ROLLUP / CUBE on a stream are not supported; group by plain columns".into(),
                ));
            }
            return Ok(None);
        }
        let exprs = group.expr();
        let start_pos = exprs
            .iter()
            .position(|(e, _)| window_fn(e).is_some_and(|(n, _)| START_FNS.contains(&n)));
        let (kind, ts, end_pos, emit) = match start_pos {
            // a GROUP BY over a bounded table (a lookup) stays DataFusion's
            None if !updating || matches!(agg.input().boundedness(), Boundedness::Bounded) => {
                return Ok(None);
            }
            None => (
                WindowKind::Global,
                Arc::new(Literal::new(ScalarValue::Int64(Some(0)))) as Arc<dyn PhysicalExpr>,
                None,
                Emit::Changes,
            ),
            Some(start_pos) => {
                let (name, f) = window_fn(&exprs[start_pos].0).expect("found above");
                let args = f.args();
                let kind = match name {
                    "tumble" => WindowKind::Tumble {
                        size: literal_ms(&args[1])?,
                    },
                    "hop" => WindowKind::Hop {
                        slide: literal_ms(&args[1])?,
                        size: literal_ms(&args[2])?,
                    },
                    _ => WindowKind::Session {
                        gap: literal_ms(&args[1])?,
                    },
                };
                check_window(&kind)?;
                if emit == Emit::Changes && matches!(kind, WindowKind::Session { .. }) {
                    return Err(DataFusionError::Plan(
                        "EMIT CHANGES is not available for SESSION windows (a session's rows are only grouped when it closes); use EMIT FINAL".into(),
                    ));
                }
                let end_name = format!("{name}_end");
                let end_pos = exprs
                    .iter()
                    .position(|(e, _)| window_fn(e).is_some_and(|(n, _)| n == end_name));
                (kind, args[0].clone(), end_pos, emit)
            }
        };
        let input = agg.input().clone();
        // a window over a window's or a join's output closes by the lowest
        // time its input can still carry, not by the sources' watermark
        let watermark = match ts
            .downcast_ref::<datafusion::physical_expr::expressions::Column>()
            .and_then(|c| trace(&input, c.index()))
        {
            Some(bound) if start_pos.is_some() => Watermark::from_fn(bound),
            _ => watermark,
        };
        let input_schema = input.schema();
        let keys: Vec<(usize, Arc<dyn PhysicalExpr>)> = exprs
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != start_pos && Some(*i) != end_pos)
            .map(|(i, (e, _))| (i, e.clone()))
            .collect();
        let mut key_fields = Vec::new();
        for (i, e) in &keys {
            key_fields.push(Field::new(
                format!("k{i}"),
                e.data_type(&input_schema)?,
                true,
            ));
        }
        if key_fields.is_empty() {
            key_fields.push(Field::new("k", DataType::UInt8, false));
        }
        let tz = match start_pos.map(|p| schema.field(p).data_type()) {
            Some(DataType::Timestamp(_, tz)) => tz.clone(),
            _ => None,
        };
        let aggr = agg.aggr_expr().to_vec();
        let agg_args = aggregate_expressions(&aggr, &AggregateMode::Single, 0)?;
        // partitions own the keys the hash routes to them; without a key
        // there is one group per window, and one partition
        let partitions = if keys.is_empty() { 1 } else { partitions };
        let input: Arc<dyn ExecutionPlan> = if partitions > 1 {
            // the scan read by every partition at once, when nothing between
            // keeps order or state: the routing runs on every core
            let input = crate::feed::widen_scan(&input, feeds, partitions).unwrap_or(input);
            Arc::new(
                datafusion::physical_plan::repartition::RepartitionExec::try_new(
                    input,
                    Partitioning::Hash(keys.iter().map(|(_, e)| e.clone()).collect(), partitions),
                )?,
            )
        } else if input.output_partitioning().partition_count() > 1 {
            // one partition over a partitioned input (a window over a
            // window): all of it
            Arc::new(
                datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec::new(input),
            )
        } else {
            input
        };
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            match input.boundedness() {
                Boundedness::Bounded => Boundedness::Bounded,
                _ => Boundedness::Unbounded {
                    requires_infinite_memory: false,
                },
            },
        );
        let first = Inner {
            input_schema,
            schema,
            kind,
            ts,
            start_pos,
            end_pos,
            emit,
            keys,
            key_schema: Arc::new(Schema::new(key_fields)),
            aggr,
            args: agg_args,
            filters: agg.filter_expr().to_vec(),
            tz,
            watermark,
            metrics,
            state: Mutex::new(WinState::default()),
            changed: Mutex::new(Vec::new()),
            published: Default::default(),
            emitted_through: std::sync::atomic::AtomicI64::new(Watermark::NONE),
            memory: None,
        };
        let plan_metrics = ExecutionPlanMetricsSet::new();
        let inners = (0..partitions)
            .map(|p| {
                let mut inner = first.fresh();
                inner.memory = Some(crate::memory::StateMemory::new(
                    "WindowAggregateExec",
                    p,
                    &plan_metrics,
                ));
                Arc::new(inner)
            })
            .collect();
        Ok(Some(Self {
            input,
            inners,
            plan_metrics,
            props: Arc::new(props),
        }))
    }
}

impl DisplayAs for WindowAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let ms = crate::time::show_duration;
        let inner = &self.inners[0];
        let w = match inner.kind {
            WindowKind::Tumble { size } => format!("tumble {}", ms(size)),
            WindowKind::Hop { slide, size } => format!("hop {} every {}", ms(size), ms(slide)),
            WindowKind::Session { gap } => format!("session gap {}", ms(gap)),
            WindowKind::Global => "no window".to_string(),
        };
        let aggs: Vec<&str> = inner.aggr.iter().map(|a| a.name()).collect();
        let on = match inner.kind {
            WindowKind::Global => String::new(),
            _ => format!(" on {}", inner.ts),
        };
        let when = match inner.emit {
            Emit::Final => "when the watermark passes the window end",
            Emit::Changes => "the changed groups every epoch",
        };
        write!(
            f,
            "WindowAggregateExec: {w}{on}, emit {when}, aggr=[{}], partitions={}",
            aggs.join(", "),
            self.inners.len()
        )
    }
}

impl ExecutionPlan for WindowAggregateExec {
    fn name(&self) -> &str {
        "WindowAggregateExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }
    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let i = &self.inners[0];
        datafusion::physical_plan::execution_plan::apply_expression_roots(
            std::iter::once(i.ts.clone())
                .chain(i.keys.iter().map(|(_, e)| e.clone()))
                .chain(i.args.iter().flatten().cloned())
                .chain(i.filters.iter().flatten().cloned()),
            f,
        )
    }
    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.plan_metrics.clone_inner())
    }
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self {
            input: children[0].clone(),
            inners: self.inners.clone(),
            plan_metrics: self.plan_metrics.clone(),
            props: self.props.clone(),
        }))
    }
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let target = context.session_config().batch_size();
        let mut input = self.input.execute(partition, context.clone())?;
        let inner = self.inners[partition].clone();
        let out = futures::stream::once(async move {
            let mut r: Result<Vec<RecordBatch>> = Ok(vec![]);
            while let Some(b) = input.next().await {
                match b {
                    Ok(b) => {
                        if let Err(e) = inner.update(&b).and_then(|_| inner.reserve(&context)) {
                            r = Err(e);
                            break;
                        }
                    }
                    Err(e) => {
                        r = Err(e);
                        break;
                    }
                }
            }
            let items: Vec<Result<RecordBatch>> = match r
                .and_then(|_| inner.emit())
                .and_then(|v| inner.reserve(&context).map(|_| v))
                .and_then(|v| coalesce(v, target))
            {
                Ok(v) => v.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(items)
        })
        .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.inners[0].schema.clone(),
            out,
        )))
    }
}

/// The windows' results as batches of about `target` rows: one small batch
/// per window (a second's keys) would cost every operator and sink
/// downstream a hand-over per window. A result of more than half `target`
/// rows is passed on without a copy, unless at most half `target` rows wait
/// before it (then it is merged with them).
fn coalesce(batches: Vec<RecordBatch>, target: usize) -> Result<Vec<RecordBatch>> {
    if batches.len() < 2 {
        return Ok(batches);
    }
    let mut c = arrow::compute::BatchCoalescer::new(batches[0].schema(), target.max(1))
        .with_biggest_coalesce_batch_size(Some(target.max(2) / 2));
    let mut out = Vec::new();
    for b in batches {
        c.push_batch(b)?;
        while let Some(b) = c.next_completed_batch() {
            out.push(b);
        }
    }
    c.finish_buffered_batch()?;
    while let Some(b) = c.next_completed_batch() {
        out.push(b);
    }
    Ok(out)
}

fn eval(e: &Arc<dyn PhysicalExpr>, b: &RecordBatch) -> Result<ArrayRef> {
    e.evaluate(b)?.into_array(b.num_rows())
}

fn take_all(cols: &[ArrayRef], idx: &UInt32Array) -> Result<Vec<ArrayRef>> {
    cols.iter()
        .map(|c| Ok(arrow::compute::take(c, idx, None)?))
        .collect()
}

/// The rows of each window a batch touches, in the order first touched.
/// Rows come mostly in event-time order, so most go to the window of the row
/// before; the others are found through a (fast-hashed) index.
#[derive(Default)]
struct RowsByWindow {
    windows: Vec<(i64, Vec<u32>)>,
    index: datafusion::common::HashMap<i64, usize>,
    last: usize,
}

impl RowsByWindow {
    fn push(&mut self, start: i64, row: u32) {
        if let Some((s, rows)) = self.windows.get_mut(self.last)
            && *s == start
        {
            rows.push(row);
            return;
        }
        let windows = &mut self.windows;
        let i = *self.index.entry(start).or_insert_with(|| {
            windows.push((start, Vec::new()));
            windows.len() - 1
        });
        self.windows[i].1.push(row);
        self.last = i;
    }
}

/// Picks rows (ascending) out of a batch's columns: a zero-copy slice when
/// they are one run, as they are for a window of in-order rows; a take
/// otherwise.
enum Pick {
    Run(usize, usize),
    Take(UInt32Array),
}

impl Pick {
    fn of(rows: &[u32]) -> Self {
        match (rows.first(), rows.last()) {
            (Some(&a), Some(&z)) if (z - a) as usize + 1 == rows.len() => {
                Pick::Run(a as usize, rows.len())
            }
            _ => Pick::Take(UInt32Array::from(rows.to_vec())),
        }
    }

    fn one(&self, c: &ArrayRef) -> Result<ArrayRef> {
        Ok(match self {
            Pick::Run(offset, len) => c.slice(*offset, *len),
            Pick::Take(idx) => arrow::compute::take(c, idx, None)?,
        })
    }

    fn bools(&self, f: &BooleanArray) -> Result<BooleanArray> {
        Ok(match self {
            Pick::Run(offset, len) => f.slice(*offset, *len),
            Pick::Take(idx) => arrow::compute::take(f, idx, None)?.as_boolean().clone(),
        })
    }

    fn all(&self, cols: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
        cols.iter().map(|c| self.one(c)).collect()
    }
}

impl Inner {
    fn key_columns(&self, b: &RecordBatch) -> Result<Vec<ArrayRef>> {
        if self.keys.is_empty() {
            return Ok(vec![Arc::new(UInt8Array::from(vec![0u8; b.num_rows()]))]);
        }
        self.keys.iter().map(|(_, e)| eval(e, b)).collect()
    }

    fn new_window(&self, spare: Option<Box<dyn GroupValues>>) -> Result<Win> {
        let groups = match spare {
            Some(g) => g,
            None => new_group_values(self.key_schema.clone(), &GroupOrdering::None)?,
        };
        Ok(Win {
            groups,
            accs: self
                .aggr
                .iter()
                .map(create_accumulator)
                .collect::<Result<_>>()?,
            touched: Vec::new(),
            any_touched: false,
        })
    }

    /// Feeds the rows of `b` into `w`.
    fn accumulate(
        &self,
        w: &mut Win,
        keys: &[ArrayRef],
        args: &[Vec<ArrayRef>],
        filters: &[Option<BooleanArray>],
    ) -> Result<()> {
        let mut gidx = Vec::with_capacity(keys[0].len());
        w.groups.intern(keys, &mut gidx)?;
        let n = w.groups.len();
        for (i, acc) in w.accs.iter_mut().enumerate() {
            acc.update_batch(&args[i], &gidx, filters[i].as_ref(), n)?;
        }
        if self.emit == Emit::Changes {
            w.touched.resize(n, false);
            for g in gidx {
                w.touched[g] = true;
            }
            w.any_touched = true;
        }
        Ok(())
    }

    fn update(&self, b: &RecordBatch) -> Result<()> {
        if b.num_rows() == 0 {
            return Ok(());
        }
        let mut guard = self.state.lock().expect("window state");
        let st = &mut *guard;
        if let WindowKind::Session { .. } = self.kind {
            st.pending.push(b.clone());
            let rows: usize = st.pending.iter().map(|b| b.num_rows()).sum();
            self.set_metric(0, rows as u64);
            return Ok(());
        }
        let keys = self.key_columns(b)?;
        let args: Vec<Vec<ArrayRef>> = self
            .args
            .iter()
            .map(|a| a.iter().map(|e| eval(e, b)).collect::<Result<Vec<_>>>())
            .collect::<Result<_>>()?;
        let filters: Vec<Option<BooleanArray>> = self
            .filters
            .iter()
            .map(|f| {
                f.as_ref()
                    .map(|f| Ok::<_, DataFusionError>(eval(f, b)?.as_boolean().clone()))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        if let WindowKind::Global = self.kind {
            let w = match st.windows.entry(0) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(self.new_window(st.spare.take())?)
                }
            };
            self.accumulate(w, &keys, &args, &filters)?;
            self.publish_metrics(st);
            return Ok(());
        }
        let ts = to_millis(&eval(&self.ts, b)?)?;
        // the usual case: the whole batch falls in one tumbling window
        if let WindowKind::Tumble { size } = self.kind
            && ts.null_count() == 0
            && let (Some(lo), Some(hi)) = (arrow::compute::min(&ts), arrow::compute::max(&ts))
            && lo.div_euclid(size) == hi.div_euclid(size)
        {
            let w = match st.windows.entry(lo.div_euclid(size) * size) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(self.new_window(st.spare.take())?)
                }
            };
            self.accumulate(w, &keys, &args, &filters)?;
            self.publish_metrics(st);
            return Ok(());
        }
        // rows of each window this batch touches
        let mut by_window = RowsByWindow::default();
        for (i, t) in ts.iter().enumerate() {
            let Some(t) = t else { continue };
            match self.kind {
                WindowKind::Tumble { size } => by_window.push(t.div_euclid(size) * size, i as u32),
                WindowKind::Hop { slide, size } => {
                    let mut s = t.div_euclid(slide) * slide;
                    while s + size > t {
                        by_window.push(s, i as u32);
                        s -= slide;
                    }
                }
                WindowKind::Session { .. } | WindowKind::Global => {
                    unreachable!("sessions buffer rows; no window is one group set")
                }
            }
        }
        let all = matches!(&by_window.windows[..], [(_, rows)] if rows.len() == b.num_rows());
        for (start, rows) in by_window.windows {
            let w = match st.windows.entry(start) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(self.new_window(st.spare.take())?)
                }
            };
            if all {
                self.accumulate(w, &keys, &args, &filters)?;
            } else {
                let pick = Pick::of(&rows);
                let k = pick.all(&keys)?;
                let a: Vec<Vec<ArrayRef>> =
                    args.iter().map(|a| pick.all(a)).collect::<Result<_>>()?;
                let f: Vec<Option<BooleanArray>> = filters
                    .iter()
                    .map(|f| f.as_ref().map(|f| pick.bools(f)).transpose())
                    .collect::<Result<_>>()?;
                self.accumulate(w, &k, &a, &f)?;
            }
        }
        self.publish_metrics(st);
        Ok(())
    }

    /// Sets this operator's (partition's) share of a metric: the shared
    /// metric is the sum over partitions.
    fn set_metric(&self, which: usize, v: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let old = self.published[which].swap(v, Relaxed);
        let m = match which {
            0 => &self.metrics.open,
            1 => &self.metrics.groups,
            _ => &self.metrics.bytes,
        };
        m.fetch_add(v.wrapping_sub(old), Relaxed);
    }

    fn publish_metrics(&self, st: &WinState) {
        if !matches!(self.kind, WindowKind::Session { .. }) {
            self.set_metric(0, st.windows.len() as u64);
        }
        let groups: usize = st.windows.values().map(|w| w.groups.len()).sum();
        let bytes: usize = st
            .windows
            .values()
            .map(|w| w.groups.size() + w.accs.iter().map(|a| a.size()).sum::<usize>())
            .sum::<usize>()
            + st.pending
                .iter()
                .map(|b| b.get_array_memory_size())
                .sum::<usize>();
        self.set_metric(1, groups as u64);
        self.set_metric(2, bytes as u64);
    }

    fn window_column(&self, v: i64, n: usize) -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from(vec![v; n]).with_timezone_opt(self.tz.clone()))
    }

    /// One output batch from key columns, window bounds and accumulators.
    fn output(
        &self,
        keys: Vec<ArrayRef>,
        start: ArrayRef,
        end: ArrayRef,
        values: Vec<ArrayRef>,
    ) -> Result<RecordBatch> {
        let n_group = self.keys.len()
            + usize::from(self.start_pos.is_some())
            + usize::from(self.end_pos.is_some());
        let mut cols: Vec<Option<ArrayRef>> = vec![None; n_group];
        if let Some(p) = self.start_pos {
            cols[p] = Some(start);
        }
        if let Some(p) = self.end_pos {
            cols[p] = Some(end);
        }
        if !self.keys.is_empty() {
            for ((p, _), k) in self.keys.iter().zip(keys) {
                cols[*p] = Some(k);
            }
        }
        let mut out: Vec<ArrayRef> = cols
            .into_iter()
            .map(|c| c.expect("every group column"))
            .collect();
        out.extend(values);
        let out = out
            .into_iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    Ok(arrow::compute::cast(&c, f.data_type())?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), out)?)
    }

    /// The whole state as one batch: for windows `_start`, the key columns
    /// and each accumulator's state columns, one row per (window, key); for
    /// sessions the buffered input rows. Accumulators are rebuilt from the
    /// state they gave up, so the operator goes on unchanged.
    fn snapshot(&self) -> Result<RecordBatch> {
        let mut st = self.state.lock().expect("window state");
        if let WindowKind::Session { .. } = self.kind {
            return Ok(arrow::compute::concat_batches(
                &self.input_schema,
                &st.pending,
            )?);
        }
        let mut parts: Vec<Vec<ArrayRef>> = Vec::new();
        let starts: Vec<i64> = st.windows.keys().copied().collect();
        for start in starts {
            let old = st.windows.remove(&start).expect("listed");
            let (w, cols) = self.rebuild(old)?;
            st.windows.insert(start, w);
            let n = cols.first().map(|c| c.len()).unwrap_or(0);
            let mut row: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![start; n]))];
            row.extend(cols);
            parts.push(row);
        }
        let schema = self.state_schema()?;
        if parts.is_empty() {
            return Ok(RecordBatch::new_empty(schema));
        }
        let cols = (0..schema.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn Array> = parts.iter().map(|p| p[c].as_ref()).collect();
                Ok(arrow::compute::concat(&arrays)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(schema, cols)?)
    }

    fn state_schema(&self) -> Result<SchemaRef> {
        let mut fields = vec![Field::new("_start", DataType::Int64, false)];
        for f in self.key_schema.fields() {
            fields.push(f.as_ref().clone().with_nullable(true));
        }
        for (i, a) in self.aggr.iter().enumerate() {
            for (j, f) in a.state_fields()?.iter().enumerate() {
                fields.push(Field::new(format!("a{i}_{j}"), f.data_type().clone(), true));
            }
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    /// Takes a window's keys and accumulator states and builds it anew from
    /// them; returns the new window and the columns (keys, states).
    fn rebuild(&self, mut old: Win) -> Result<(Win, Vec<ArrayRef>)> {
        let keys = old.groups.emit(EmitTo::All)?;
        let mut states = Vec::new();
        for acc in old.accs.iter_mut() {
            states.push(acc.state(EmitTo::All)?);
        }
        let mut w = self.new_window(None)?;
        self.merge_into(&mut w, &keys, &states)?;
        let mut cols = keys;
        cols.extend(states.into_iter().flatten());
        Ok((w, cols))
    }

    fn merge_into(&self, w: &mut Win, keys: &[ArrayRef], states: &[Vec<ArrayRef>]) -> Result<()> {
        if keys.first().is_none_or(|k| k.is_empty()) {
            return Ok(());
        }
        let mut gidx = Vec::with_capacity(keys[0].len());
        w.groups.intern(keys, &mut gidx)?;
        let n = w.groups.len();
        for (acc, st) in w.accs.iter_mut().zip(states) {
            acc.merge_batch(st, &gidx, n)?;
        }
        Ok(())
    }

    /// The accumulator states among state columns (keys first, then each
    /// accumulator's state columns in turn).
    fn split_states(&self, cols: &[ArrayRef]) -> Result<Vec<Vec<ArrayRef>>> {
        let mut states = Vec::new();
        let mut at = self.key_schema.fields().len();
        for a in &self.aggr {
            let k = a.state_fields()?.len();
            states.push(cols[at..at + k].to_vec());
            at += k;
        }
        Ok(states)
    }

    /// Puts back a [`Self::snapshot`].
    fn restore(&self, b: RecordBatch) -> Result<()> {
        let mut st = self.state.lock().expect("window state");
        st.windows.clear();
        st.pending.clear();
        if let WindowKind::Session { .. } = self.kind {
            if b.schema().fields() != self.input_schema.fields() {
                return Err(DataFusionError::Plan(
                    "the checkpointed session state does not match the query's input; the query changed: move the state directory away to start from scratch".into(),
                ));
            }
            if b.num_rows() > 0 {
                st.pending.push(b);
            }
            drop(st);
            return Ok(());
        }
        let want = self.state_schema()?;
        let types = |s: &Schema| {
            s.fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect::<Vec<_>>()
        };
        if types(&b.schema()) != types(&want) {
            return Err(DataFusionError::Plan(
                "the checkpointed window state does not match the query's aggregates; the query changed: move the state directory away to start from scratch".into(),
            ));
        }
        let starts = b.column(0).as_primitive::<Int64Type>().clone();
        let mut rows: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (i, s) in starts.values().iter().enumerate() {
            rows.entry(*s).or_default().push(i as u32);
        }
        let nk = self.key_schema.fields().len();
        for (start, idx) in rows {
            let idx = UInt32Array::from(idx);
            let cols = take_all(&b.columns()[1..], &idx)?;
            let keys = &cols[..nk];
            let states = self.split_states(&cols)?;
            let mut w = self.new_window(None)?;
            self.merge_into(&mut w, keys, &states)?;
            st.windows.insert(start, w);
        }
        self.publish_metrics(&st);
        Ok(())
    }

    /// `EMIT CHANGES`: the current rows of every group changed since the
    /// last emission, then windows the watermark has passed are dropped
    /// (their last rows are out already).
    fn emit_changes(&self) -> Result<Vec<RecordBatch>> {
        let wm = self.watermark.get();
        let mut st = self.state.lock().expect("window state");
        let mut out = Vec::new();
        let mut changed = Vec::new();
        let starts: Vec<i64> = st
            .windows
            .iter()
            .filter(|(_, w)| w.any_touched)
            .map(|(s, _)| *s)
            .collect();
        for start in starts {
            let old = st.windows.remove(&start).expect("listed");
            let touched: Vec<u32> = old
                .touched
                .iter()
                .enumerate()
                .filter(|(_, t)| **t)
                .map(|(i, _)| i as u32)
                .collect();
            // the accumulators give up their state to be read; the window is
            // built again from it and goes on unchanged
            let (w, cols) = self.rebuild(old)?;
            st.windows.insert(start, w);
            let idx = UInt32Array::from(touched);
            let n = idx.len();
            let cols = take_all(&cols, &idx)?;
            let nk = self.key_schema.fields().len();
            // fresh accumulators over the changed groups' states give their values
            let states = self.split_states(&cols)?;
            let gidx: Vec<usize> = (0..n).collect();
            let mut values = Vec::new();
            for (a, s) in self.aggr.iter().zip(&states) {
                let mut acc = create_accumulator(a)?;
                acc.merge_batch(s, &gidx, n)?;
                values.push(acc.evaluate(EmitTo::All)?);
            }
            let keys = cols[..nk].to_vec();
            let (s, e) = match self.kind {
                WindowKind::Tumble { size } | WindowKind::Hop { size, .. } => (start, start + size),
                _ => (0, 0),
            };
            let b = self.output(
                keys,
                self.window_column(s, n),
                self.window_column(e, n),
                values,
            )?;
            if !self.keys.is_empty() {
                let fields: Vec<Field> = self
                    .keys
                    .iter()
                    .map(|(p, _)| self.schema.field(*p).clone())
                    .collect();
                let cols = self
                    .keys
                    .iter()
                    .map(|(p, _)| b.column(*p).clone())
                    .collect();
                changed.push(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?);
            }
            out.push(b);
        }
        if let WindowKind::Tumble { size } | WindowKind::Hop { size, .. } = self.kind {
            while let Some((&start, _)) = st.windows.first_key_value() {
                if start.saturating_add(size) > wm {
                    break;
                }
                st.windows.remove(&start);
            }
        }
        self.publish_metrics(&st);
        *self.changed.lock().expect("changed keys") = changed;
        Ok(out)
    }

    /// Emits every window the watermark has passed.
    fn emit(&self) -> Result<Vec<RecordBatch>> {
        if self.emit == Emit::Changes {
            return self.emit_changes();
        }
        let wm = self.watermark.get();
        let mut st = self.state.lock().expect("window state");
        self.emitted_through
            .fetch_max(wm, std::sync::atomic::Ordering::AcqRel);
        let mut out = Vec::new();
        match self.kind {
            WindowKind::Tumble { size } | WindowKind::Hop { size, .. } => {
                while let Some((&start, _)) = st.windows.first_key_value() {
                    if start.saturating_add(size) > wm {
                        break;
                    }
                    let mut w = st.windows.remove(&start).expect("first key");
                    let n = w.groups.len();
                    if n == 0 {
                        continue;
                    }
                    let keys = w.groups.emit(EmitTo::All)?;
                    st.spare.keep(w.groups);
                    let values = w
                        .accs
                        .iter_mut()
                        .map(|a| a.evaluate(EmitTo::All))
                        .collect::<Result<Vec<_>>>()?;
                    out.push(self.output(
                        keys,
                        self.window_column(start, n),
                        self.window_column(start + size, n),
                        values,
                    )?);
                }
            }
            WindowKind::Session { gap } => {
                if let Some(b) = self.close_sessions(&mut st, gap, wm)? {
                    out.push(b);
                }
            }
            WindowKind::Global => unreachable!("no window emits changes"),
        }
        self.publish_metrics(&st);
        Ok(out)
    }

    /// Sessions: sorts the buffered rows by key and time, cuts sessions at
    /// gaps, aggregates the sessions the watermark has closed and keeps the
    /// rows of the others.
    fn close_sessions(&self, st: &mut WinState, gap: i64, wm: i64) -> Result<Option<RecordBatch>> {
        if st.pending.is_empty() {
            return Ok(None);
        }
        let all = arrow::compute::concat_batches(&self.input_schema, &st.pending)?;
        st.pending.clear();
        let ts = to_millis(&eval(&self.ts, &all)?)?;
        let keys = self.key_columns(&all)?;
        let mut sort_cols: Vec<arrow::compute::SortColumn> = keys
            .iter()
            .map(|k| arrow::compute::SortColumn {
                values: k.clone(),
                options: None,
            })
            .collect();
        sort_cols.push(arrow::compute::SortColumn {
            values: Arc::new(ts.clone()),
            options: None,
        });
        let order = arrow::compute::lexsort_to_indices(&sort_cols, None)?;
        let conv = arrow::row::RowConverter::new(
            keys.iter()
                .map(|k| arrow::row::SortField::new(k.data_type().clone()))
                .collect(),
        )?;
        let rows = conv.convert_columns(&keys)?;
        // walk sessions in (key, time) order
        let mut closed_rows: Vec<u32> = Vec::new();
        let mut closed_gid: Vec<usize> = Vec::new();
        let mut first_rows: Vec<u32> = Vec::new();
        let mut bounds: Vec<(i64, i64)> = Vec::new();
        let mut open_rows: Vec<u32> = Vec::new();
        let mut i = 0;
        let order = order.values();
        while i < order.len() {
            let r0 = order[i] as usize;
            if ts.is_null(r0) {
                i += 1;
                continue;
            }
            let mut j = i + 1;
            let mut last = ts.value(r0);
            while j < order.len() {
                let r = order[j] as usize;
                if rows.row(r) != rows.row(r0) || ts.is_null(r) || ts.value(r) >= last + gap {
                    break;
                }
                last = ts.value(r);
                j += 1;
            }
            let end = last + gap;
            if end <= wm {
                let gid = bounds.len();
                bounds.push((ts.value(r0), end));
                first_rows.push(r0 as u32);
                for &r in &order[i..j] {
                    closed_rows.push(r);
                    closed_gid.push(gid);
                }
            } else {
                open_rows.extend_from_slice(&order[i..j]);
            }
            i = j;
        }
        if !open_rows.is_empty() {
            open_rows.sort_unstable();
            let keep = arrow::compute::take_record_batch(&all, &UInt32Array::from(open_rows))?;
            st.pending.push(keep);
        }
        if bounds.is_empty() {
            return Ok(None);
        }
        let closed = arrow::compute::take_record_batch(&all, &UInt32Array::from(closed_rows))?;
        let n = bounds.len();
        let mut values = Vec::new();
        for (k, a) in self.aggr.iter().enumerate() {
            let mut acc = create_accumulator(a)?;
            let args = self.args[k]
                .iter()
                .map(|e| eval(e, &closed))
                .collect::<Result<Vec<_>>>()?;
            let filter = self.filters[k]
                .as_ref()
                .map(|f| Ok::<_, DataFusionError>(eval(f, &closed)?.as_boolean().clone()))
                .transpose()?;
            acc.update_batch(&args, &closed_gid, filter.as_ref(), n)?;
            values.push(acc.evaluate(EmitTo::All)?);
        }
        let first = UInt32Array::from(first_rows);
        let out_keys = take_all(&keys, &first)?;
        let starts =
            TimestampMillisecondArray::from(bounds.iter().map(|b| b.0).collect::<Vec<_>>())
                .with_timezone_opt(self.tz.clone());
        let ends = TimestampMillisecondArray::from(bounds.iter().map(|b| b.1).collect::<Vec<_>>())
            .with_timezone_opt(self.tz.clone());
        Ok(Some(self.output(
            out_keys,
            Arc::new(starts),
            Arc::new(ends),
            values,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_go_to_their_windows_in_first_touched_order() {
        let mut by = RowsByWindow::default();
        for (start, row) in [(10, 0), (10, 1), (20, 2), (10, 3), (30, 4), (20, 5)] {
            by.push(start, row);
        }
        assert_eq!(
            by.windows,
            vec![(10, vec![0, 1, 3]), (20, vec![2, 5]), (30, vec![4])]
        );
    }

    #[test]
    fn a_run_of_rows_is_a_slice_and_others_are_taken() {
        let col: ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![5, 6, 7, 8, 9]));
        let run = Pick::of(&[1, 2, 3]);
        assert!(matches!(run, Pick::Run(1, 3)));
        let gaps = Pick::of(&[0, 2, 4]);
        assert!(matches!(gaps, Pick::Take(_)));
        let ints = |a: ArrayRef| a.as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(ints(run.one(&col).unwrap()), vec![6, 7, 8]);
        assert_eq!(ints(gaps.one(&col).unwrap()), vec![5, 7, 9]);
    }

    #[test]
    fn small_window_results_leave_as_batches_of_the_target_size() {
        let batch = |from: i64, n: i64| {
            let a: ArrayRef = Arc::new(arrow::array::Int64Array::from_iter_values(from..from + n));
            RecordBatch::try_from_iter([("v", a)]).unwrap()
        };
        // ten windows of 100 rows each, then one of 1,000
        let mut windows: Vec<RecordBatch> = (0..10).map(|i| batch(i * 100, 100)).collect();
        windows.push(batch(1000, 1000));
        let out = coalesce(windows, 256).unwrap();
        let sizes: Vec<usize> = out.iter().map(|b| b.num_rows()).collect();
        assert_eq!(sizes, vec![256, 256, 256, 232, 1000]);
        // every row once, in order
        let all: Vec<i64> = out
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(all, (0..2000).collect::<Vec<_>>());
        // one window's result is left alone
        let one = coalesce(vec![batch(0, 10)], 256).unwrap();
        assert_eq!(one.len(), 1);
    }
}
