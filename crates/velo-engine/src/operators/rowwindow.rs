//! Row-window functions on streams: `f(...) OVER (PARTITION BY k ORDER BY
//! ts ...)` over an unbounded input. LAG and LEAD, ROW_NUMBER, RANK and
//! DENSE_RANK, aggregates and FIRST/LAST/NTH_VALUE over a ROWS frame of n
//! rows (Velostream's `ROWS WINDOW BUFFER n ROWS`), and running aggregates
//! from a key's first row (`SUM(x) OVER (PARTITION BY k ORDER BY ts)`).
//!
//! Where it sits: in place of DataFusion's window operator (and the sort
//! under it) over a stream, put there by the one bottom-up pass of
//! [`crate::operators::join::StreamingJoins`]. Every epoch, the epoch's rows are put
//! after the rows each key still needs from earlier epochs (its last n
//! rows: the history), DataFusion's own window operator runs on that,
//! sorted as the OVER clause asks, and only rows that are final go on:
//!
//! - when the ORDER BY column is a stream's event time, a row waits until
//!   the watermark has passed it (no earlier row of its key can still come),
//!   so the result is the batch result over the same rows, in any epoching;
//!   otherwise rows go in the order they arrive;
//! - a row waits for the rows LEAD or a FOLLOWING frame needs, until the end
//!   of input.
//!
//! Functions that count from a key's first row (ROW_NUMBER, RANK,
//! DENSE_RANK, aggregates from UNBOUNDED PRECEDING) are carried per key:
//! counters, and one DataFusion accumulator per key and function. The
//! history, the waiting rows and the per-key state go into checkpoints. A
//! key without rows for `EXPIRE AFTER` (in event time when the ORDER BY is
//! one, else wall-clock) loses its state. Functions that need a whole key
//! (NTILE, PERCENT_RANK, CUME_DIST) are refused on a stream.

use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Accumulator, LogicalPlan, WindowFrameBound, WindowFrameUnits};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::window::{PlainAggregateWindowExpr, WindowExpr};
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use futures::StreamExt;

use crate::time::Watermark;

const HISTORY: &str = "__velo_history";

/// The lowest event time a column can still carry in rows to come.
type LowerBound = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Whether every window function of `plan` (a `Window` node) can run on a
/// stream, as far as the logical plan tells (the physical rule checks the
/// frames).
pub fn is_streamable(plan: &LogicalPlan) -> bool {
    let LogicalPlan::Window(w) = plan else {
        return false;
    };
    w.window_expr.iter().all(|e| {
        let name = e.schema_name().to_string().to_ascii_lowercase();
        !["ntile(", "percent_rank(", "cume_dist("]
            .iter()
            .any(|f| name.starts_with(f))
    })
}

/// The offset of a `lag(x, n)` / `lead(x, n)` window expression, from its
/// lower-cased name (`lag(t.x,int64(3))`, `lag(t.x)`).
fn offset(name: &str) -> usize {
    let args = &name[name.find('(').map_or(0, |i| i + 1)..name.find(')').unwrap_or(name.len())];
    match args.split_once(",int64(") {
        Some((_, n)) => n.trim_end_matches(')').parse().unwrap_or(1),
        None => 1,
    }
}

/// How one function of an OVER clause runs on a stream.
#[derive(Clone)]
enum Need {
    /// DataFusion computes it over the key's last `before` rows, the row and
    /// the `after` rows that follow it: LAG, LEAD, bounded ROWS frames.
    Rows {
        before: usize,
        after: usize,
    },
    /// Counted from the key's first row by the operator.
    RowNumber,
    Rank,
    DenseRank,
    /// An aggregate from the key's first row: one accumulator per key.
    /// `peers`: a RANGE frame, where rows with equal ORDER BY values share
    /// one result.
    Running {
        agg: Arc<AggregateFunctionExpr>,
        peers: bool,
    },
}

/// A bound of a ROWS frame in rows (None: UNBOUNDED).
fn frame_rows(b: &WindowFrameBound) -> Option<usize> {
    match b {
        WindowFrameBound::CurrentRow => Some(0),
        WindowFrameBound::Preceding(v) | WindowFrameBound::Following(v) => {
            match v.cast_to(&DataType::Int64).ok()? {
                ScalarValue::Int64(Some(n)) => Some(n.max(0) as usize),
                _ => None,
            }
        }
    }
}

fn classify(e: &Arc<dyn WindowExpr>) -> Result<Need> {
    let name = e.name().to_ascii_lowercase();
    match name.split('(').next().unwrap_or("") {
        "lag" => {
            return Ok(Need::Rows {
                before: offset(&name),
                after: 0,
            });
        }
        "lead" => {
            return Ok(Need::Rows {
                before: 0,
                after: offset(&name),
            });
        }
        "row_number" => return Ok(Need::RowNumber),
        "rank" => return Ok(Need::Rank),
        "dense_rank" => return Ok(Need::DenseRank),
        "ntile" | "percent_rank" | "cume_dist" => {
            return Err(DataFusionError::Plan(format!(
                "{} over a stream: it needs every row of its key, which a stream never has; use ROW_NUMBER / RANK, a window (GROUP BY TUMBLE ...) or a bounded input",
                e.name()
            )));
        }
        _ => {}
    }
    let frame = e.get_window_frame();
    if frame.units == WindowFrameUnits::Rows {
        let before = match &frame.start_bound {
            WindowFrameBound::Following(_) => Some(0),
            b => frame_rows(b),
        };
        let after = match &frame.end_bound {
            WindowFrameBound::Preceding(_) => Some(0),
            b => frame_rows(b),
        };
        if let (Some(before), Some(after)) = (before, after) {
            return Ok(Need::Rows { before, after });
        }
    }
    let from_first = matches!(&frame.start_bound, WindowFrameBound::Preceding(v) if v.is_null());
    let to_current = matches!(frame.end_bound, WindowFrameBound::CurrentRow);
    match e.as_any().downcast_ref::<PlainAggregateWindowExpr>() {
        Some(p) if from_first && to_current && frame.units != WindowFrameUnits::Groups => {
            if name.contains(" filter (where ") {
                return Err(DataFusionError::Plan(format!(
                    "{}: FILTER (WHERE ...) in a running aggregate over a stream is not supported; use CASE inside the aggregate",
                    e.name()
                )));
            }
            Ok(Need::Running {
                agg: Arc::new(p.get_aggregate_expr().clone()),
                peers: frame.units == WindowFrameUnits::Range,
            })
        }
        _ => Err(DataFusionError::Plan(format!(
            "{} over a stream: its frame needs rows without bound; use ROWS BETWEEN n PRECEDING AND CURRENT ROW (or OVER (ROWS WINDOW BUFFER n ROWS ...)), or an aggregate from UNBOUNDED PRECEDING to CURRENT ROW",
            e.name()
        ))),
    }
}

/// Puts [`RowWindowExec`] in place of a window operator over a stream; part
/// of the one bottom-up pass of [`crate::operators::join::StreamingJoins`].
pub struct StreamingRowWindows {
    states: Arc<crate::operators::state::WindowStates>,
    metrics: Arc<crate::operators::metrics::WindowMetrics>,
    watermark: Arc<Watermark>,
    expire: Option<std::time::Duration>,
}

impl StreamingRowWindows {
    /// Operators that register their state in `states` (checkpoints) and
    /// its size in `metrics`, see the end of input in `watermark`, and drop
    /// a key's state after `expire` without rows.
    pub fn new(
        states: Arc<crate::operators::state::WindowStates>,
        metrics: Arc<crate::operators::metrics::WindowMetrics>,
        watermark: Arc<Watermark>,
        expire: Option<std::time::Duration>,
    ) -> Self {
        Self {
            states,
            metrics,
            watermark,
            expire,
        }
    }

    /// Replaces `p` if it is a window operator over a stream.
    pub fn rewrite(
        &self,
        p: Arc<dyn ExecutionPlan>,
        trace: crate::operators::window::Trace<'_>,
    ) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
        let exprs = if let Some(w) = p.downcast_ref::<BoundedWindowAggExec>() {
            w.window_expr().to_vec()
        } else if let Some(w) = p.downcast_ref::<WindowAggExec>() {
            w.window_expr().to_vec()
        } else {
            return Ok(Transformed::no(p));
        };
        let child = p.children()[0].clone();
        if !child.boundedness().is_unbounded() {
            return Ok(Transformed::no(p));
        }
        let needs: Vec<Need> = exprs.iter().map(classify).collect::<Result<_>>()?;
        // the sort DataFusion put under the window (none when another
        // window's order serves): the operator sorts every epoch itself
        let input = match child.downcast_ref::<SortExec>() {
            Some(sort) => sort.input().clone(),
            None => child,
        };
        let first = exprs.first().expect("a window has functions");
        let partition_by = first.partition_by().to_vec();
        let order_by: Vec<_> = first.order_by().to_vec();
        let sort = LexOrdering::new(
            partition_by
                .iter()
                .map(|e| PhysicalSortExpr::new_default(e.clone()))
                .chain(order_by.iter().cloned()),
        );
        // the ORDER BY column's event time: rows wait for the watermark
        let gate = order_by.first().and_then(|o| {
            let c = o.expr.downcast_ref::<Column>()?;
            if o.options.descending {
                return None;
            }
            Some((c.index(), trace(&input, c.index())?))
        });
        // PARTITION BY columns bounded from below (a window's start or end,
        // an event time): a key below its bound gets no rows again
        let closing: Vec<(usize, LowerBound)> = partition_by
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let c = e.downcast_ref::<Column>()?;
                Some((i, trace(&input, c.index())?))
            })
            .collect();
        refuse_arrival_order(&needs, &order_by, &closing, &input, trace)?;
        let exec = RowWindowExec::try_new(
            p.clone(),
            sort,
            input,
            partition_by,
            order_by.iter().map(|o| o.expr.clone()).collect(),
            needs,
            Bounds {
                gate,
                closing,
                expire: self.expire.map(|d| d.as_millis() as i64),
            },
            self.watermark.clone(),
            self.metrics.clone(),
        )?;
        let desc = datafusion::physical_plan::displayable(&exec as &dyn ExecutionPlan)
            .one_line()
            .to_string();
        let desc = desc.trim();
        self.states.register(
            format!("{desc} [rows]"),
            Arc::new(RowsState(exec.state.clone())),
        );
        self.states.register(
            format!("{desc} [keys]"),
            Arc::new(KeysState(exec.state.clone())),
        );
        Ok(Transformed::yes(Arc::new(exec)))
    }
}

/// What one key carries from epoch to epoch.
#[derive(Debug)]
struct KeyState {
    /// When it last had a row (event or wall-clock milliseconds).
    seen: i64,
    /// Rows so far (ROW_NUMBER), the rank and dense rank of the last one.
    count: u64,
    rank: u64,
    dense: u64,
    /// The ORDER BY values of its last row (ties of RANK across epochs).
    last: Option<OwnedRow>,
    /// One accumulator per running aggregate.
    accs: Vec<Box<dyn Accumulator>>,
}

/// The state of a [`RowWindowExec`].
struct State {
    /// Input schema with the history marker.
    marked: SchemaRef,
    /// Types of the PARTITION BY and ORDER BY values, and their converters
    /// to comparable rows (the one converter that made a row reads it back).
    key_types: Vec<DataType>,
    order_types: Vec<DataType>,
    key_conv: RowConverter,
    order_conv: RowConverter,
    /// The running aggregates, in the order of their functions.
    running: Vec<Arc<AggregateFunctionExpr>>,
    /// The rows kept: history (marker true, already emitted) and rows
    /// waiting to be final (marker false).
    rows: Option<RecordBatch>,
    keys: HashMap<OwnedRow, KeyState>,
    /// Keys and rows last added to the metrics.
    published: (u64, u64),
    /// The earliest event time of the rows waiting (END: none).
    waiting_from: i64,
}

/// A converter of values of `types` to comparable rows.
fn converter(types: &[DataType]) -> Result<RowConverter> {
    Ok(RowConverter::new(
        types.iter().map(|t| SortField::new(t.clone())).collect(),
    )?)
}

impl State {
    /// Puts the state's size into `metrics`; returns its bytes: the rows
    /// kept, and per key an estimate (its state without the accumulators'
    /// own allocations, and its encoded key).
    fn publish(&mut self, metrics: &crate::operators::metrics::WindowMetrics) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        let now = (
            self.keys.len() as u64,
            self.rows.as_ref().map_or(0, |r| r.num_rows()) as u64,
        );
        metrics
            .row_keys
            .fetch_add(now.0.wrapping_sub(self.published.0), Relaxed);
        metrics
            .row_rows
            .fetch_add(now.1.wrapping_sub(self.published.1), Relaxed);
        self.published = now;
        self.rows.as_ref().map_or(0, |r| r.get_array_memory_size())
            + self.keys.len() * (std::mem::size_of::<(OwnedRow, KeyState)>() + 64)
    }

    fn new_key(&self, seen: i64) -> Result<KeyState> {
        Ok(KeyState {
            seen,
            count: 0,
            rank: 0,
            dense: 0,
            last: None,
            accs: self
                .running
                .iter()
                .map(|a| a.create_accumulator())
                .collect::<Result<_>>()?,
        })
    }

    /// The schema of the per-key state in checkpoints.
    fn keys_schema(&self) -> Result<SchemaRef> {
        let mut fields = Vec::new();
        for (i, t) in self.key_types.iter().enumerate() {
            fields.push(Field::new(format!("k{i}"), t.clone(), true));
        }
        for (i, t) in self.order_types.iter().enumerate() {
            fields.push(Field::new(format!("o{i}"), t.clone(), true));
        }
        for n in ["seen", "count", "rank", "dense"] {
            fields.push(Field::new(n, DataType::Int64, false));
        }
        for (j, a) in self.running.iter().enumerate() {
            for (m, f) in a.state_fields()?.iter().enumerate() {
                fields.push(Field::new(format!("a{j}_{m}"), f.data_type().clone(), true));
            }
        }
        Ok(Arc::new(Schema::new(fields)))
    }
}

type Shared = Arc<Mutex<State>>;

/// The rows an epoch's window runs over.
struct Gathered {
    /// The input schema with the history marker.
    marked_schema: SchemaRef,
    /// The history of the keys with rows now, and the fresh rows.
    data: RecordBatch,
    /// The history of the other keys, set aside as it is.
    aside: Option<RecordBatch>,
}

/// The window's output rows as the epoch reads them: history markers, keys
/// and ORDER BY values as comparable rows, and the ORDER BY event time.
struct Ranked {
    hist: BooleanArray,
    keys: Rows,
    orders: Rows,
    times: Option<Int64Array>,
}

impl Ranked {
    fn of(exec: &RowWindowExec, st: &State, done: &RecordBatch, n_in: usize) -> Result<Self> {
        let n = done.num_rows();
        Ok(Self {
            hist: history_of(&done.project(&(0..=n_in).collect::<Vec<_>>())?),
            keys: RowWindowExec::rows_of(&exec.partition_by, &st.key_conv, done)?,
            orders: RowWindowExec::rows_of(&exec.order_by, &st.order_conv, done)?,
            times: match (&exec.gate, exec.order_by.first()) {
                (Some(_), Some(e)) => Some(crate::operators::window::to_millis(
                    &e.evaluate(done)?.into_array(n)?,
                )?),
                _ => None,
            },
        })
    }
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn mismatch() -> DataFusionError {
    DataFusionError::Plan(
        "the checkpointed row-window state does not match the query; the query changed: move the state directory away to start from scratch".into(),
    )
}

/// The rows a row window keeps, in checkpoints.
struct RowsState(Shared);

impl crate::operators::state::OperatorState for RowsState {
    fn snapshot(&self) -> Result<RecordBatch> {
        let st = lock(&self.0);
        Ok(st
            .rows
            .clone()
            .unwrap_or_else(|| RecordBatch::new_empty(st.marked.clone())))
    }
    fn restore(&self, batch: RecordBatch) -> Result<()> {
        let mut st = lock(&self.0);
        if batch.schema().fields() != st.marked.fields() {
            return Err(mismatch());
        }
        st.rows = (batch.num_rows() > 0).then_some(batch);
        Ok(())
    }
}

/// The per-key counters and accumulators of a row window, in checkpoints.
struct KeysState(Shared);

impl crate::operators::state::OperatorState for KeysState {
    fn snapshot(&self) -> Result<RecordBatch> {
        let mut st = lock(&self.0);
        let schema = st.keys_schema()?;
        let running = st.running.clone();
        let mut cols: Vec<ArrayRef> = st.key_conv.convert_rows(st.keys.keys().map(|k| k.row()))?;
        // a key has its last ORDER BY values once it had a row
        let lasts: Vec<OwnedRow> = st
            .keys
            .values()
            .map(|k| k.last.clone())
            .collect::<Option<_>>()
            .ok_or_else(|| DataFusionError::Internal("a row-window key without rows".into()))?;
        cols.extend(st.order_conv.convert_rows(lasts.iter().map(|r| r.row()))?);
        let ints = |f: &dyn Fn(&KeyState) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(st.keys.values().map(f)))
        };
        cols.push(ints(&|k| k.seen));
        cols.push(ints(&|k| k.count as i64));
        cols.push(ints(&|k| k.rank as i64));
        cols.push(ints(&|k| k.dense as i64));
        let mut states: Vec<Vec<Vec<ScalarValue>>> = Vec::new();
        for k in st.keys.values_mut() {
            let mut per = Vec::new();
            for (j, acc) in k.accs.iter_mut().enumerate() {
                let s = acc.state()?;
                // some accumulators give their state once: go on from a
                // fresh one holding it
                let mut fresh = running[j].create_accumulator()?;
                fresh.merge_batch(&s.iter().map(|v| v.to_array()).collect::<Result<Vec<_>>>()?)?;
                *acc = fresh;
                per.push(s);
            }
            states.push(per);
        }
        for (j, a) in running.iter().enumerate() {
            for (m, f) in a.state_fields()?.iter().enumerate() {
                let vals: Vec<ScalarValue> = states.iter().map(|s| s[j][m].clone()).collect();
                cols.push(if vals.is_empty() {
                    arrow::array::new_empty_array(f.data_type())
                } else {
                    ScalarValue::iter_to_array(vals)?
                });
            }
        }
        Ok(RecordBatch::try_new_with_options(
            schema,
            cols,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(st.keys.len())),
        )?)
    }
    fn restore(&self, batch: RecordBatch) -> Result<()> {
        let mut st = lock(&self.0);
        if batch.schema().fields() != st.keys_schema()?.fields() {
            return Err(mismatch());
        }
        let (nk, no) = (st.key_types.len(), st.order_types.len());
        let keys = st.key_conv.convert_columns(&batch.columns()[..nk])?;
        let orders = st
            .order_conv
            .convert_columns(&batch.columns()[nk..nk + no])?;
        let int = |c: usize, i: usize| {
            batch
                .column(nk + no + c)
                .as_any()
                .downcast_ref::<Int64Array>()
                .map(|a| a.value(i))
                .unwrap_or(0)
        };
        st.keys.clear();
        for i in 0..batch.num_rows() {
            let mut k = st.new_key(int(0, i))?;
            k.count = int(1, i) as u64;
            k.rank = int(2, i) as u64;
            k.dense = int(3, i) as u64;
            k.last = Some(orders.row(i).owned());
            let mut col = nk + no + 4;
            for (j, a) in st.running.iter().enumerate() {
                let n = a.state_fields()?.len();
                let s: Vec<ArrayRef> = (col..col + n)
                    .map(|c| batch.column(c).slice(i, 1))
                    .collect();
                k.accs[j].merge_batch(&s)?;
                col += n;
            }
            st.keys.insert(keys.row(i).owned(), k);
        }
        Ok(())
    }
}

/// Row-window functions on a stream (see the module docs).
pub struct RowWindowExec {
    /// DataFusion's window operator, run every epoch on history + epoch.
    window: Arc<dyn ExecutionPlan>,
    /// PARTITION BY then ORDER BY (None: neither).
    sort: Option<LexOrdering>,
    input: Arc<dyn ExecutionPlan>,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    order_by: Vec<Arc<dyn PhysicalExpr>>,
    needs: Vec<Need>,
    /// Rows each key keeps after it is emitted, and waits for after a row.
    before: usize,
    after: usize,
    /// The ORDER BY column when it is a stream's event time, and its
    /// lower bound.
    gate: Option<(usize, LowerBound)>,
    /// PARTITION BY columns (their positions there) with a lower bound: a
    /// key below it is closed, its state dropped.
    closing: Vec<(usize, LowerBound)>,
    /// The job's watermark: the end of input.
    watermark: Arc<Watermark>,
    expire: Option<i64>,
    metrics: Arc<crate::operators::metrics::WindowMetrics>,
    state: Shared,
    /// `state_bytes`, shown by `ExecutionPlan::metrics`.
    plan_metrics: ExecutionPlanMetricsSet,
    /// The state's reservation of the memory pool.
    memory: Arc<crate::operators::memory::StateMemory>,
    props: Arc<PlanProperties>,
}

impl fmt::Debug for RowWindowExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RowWindowExec(keep {}, wait {})",
            self.before, self.after
        )
    }
}

impl RowWindowExec {
    #[allow(clippy::too_many_arguments)]
    fn try_new(
        window: Arc<dyn ExecutionPlan>,
        sort: Option<LexOrdering>,
        input: Arc<dyn ExecutionPlan>,
        partition_by: Vec<Arc<dyn PhysicalExpr>>,
        order_by: Vec<Arc<dyn PhysicalExpr>>,
        needs: Vec<Need>,
        bounds: Bounds,
        watermark: Arc<Watermark>,
        metrics: Arc<crate::operators::metrics::WindowMetrics>,
    ) -> Result<Self> {
        let Bounds {
            gate,
            closing,
            expire,
        } = bounds;
        let schema = input.schema();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(HISTORY, DataType::Boolean, false));
        let (mut before, mut after) = (0, 0);
        let mut running = Vec::new();
        for n in &needs {
            match n {
                Need::Rows {
                    before: b,
                    after: a,
                } => {
                    before = before.max(*b);
                    after = after.max(*a);
                }
                Need::Running { agg, .. } => running.push(agg.clone()),
                // RANK compares with the last row, which the key state keeps
                _ => {}
            }
        }
        let types = |es: &[Arc<dyn PhysicalExpr>]| -> Result<Vec<DataType>> {
            if es.is_empty() {
                return Ok(vec![DataType::Boolean]);
            }
            es.iter().map(|e| e.data_type(&schema)).collect()
        };
        let (key_types, order_types) = (types(&partition_by)?, types(&order_by)?);
        let state = State {
            marked: Arc::new(Schema::new(fields)),
            key_conv: converter(&key_types)?,
            order_conv: converter(&order_types)?,
            key_types,
            order_types,
            running,
            rows: None,
            keys: HashMap::new(),
            published: (0, 0),
            waiting_from: Watermark::END,
        };
        // emits every epoch, holds bounded state per key
        let props = Arc::new(PlanProperties::new(
            datafusion::physical_expr::EquivalenceProperties::new(window.schema()),
            datafusion::physical_plan::Partitioning::UnknownPartitioning(1),
            datafusion::physical_plan::execution_plan::EmissionType::Incremental,
            datafusion::physical_plan::execution_plan::Boundedness::Unbounded {
                requires_infinite_memory: false,
            },
        ));
        let plan_metrics = ExecutionPlanMetricsSet::new();
        Ok(Self {
            window,
            sort,
            input,
            partition_by,
            order_by,
            needs,
            before: before.min(100_000),
            after: after.min(100_000),
            gate,
            closing,
            watermark,
            expire,
            metrics,
            state: Arc::new(Mutex::new(state)),
            memory: crate::operators::memory::StateMemory::new("RowWindowExec", 0, &plan_metrics),
            plan_metrics,
            props,
        })
    }

    fn cloned(&self, input: Arc<dyn ExecutionPlan>) -> Self {
        Self {
            window: self.window.clone(),
            sort: self.sort.clone(),
            input,
            partition_by: self.partition_by.clone(),
            order_by: self.order_by.clone(),
            needs: self.needs.clone(),
            before: self.before,
            after: self.after,
            gate: self.gate.clone(),
            closing: self.closing.clone(),
            watermark: self.watermark.clone(),
            expire: self.expire,
            metrics: self.metrics.clone(),
            state: self.state.clone(),
            plan_metrics: self.plan_metrics.clone(),
            memory: self.memory.clone(),
            props: self.props.clone(),
        }
    }

    /// The lower bound of output column `col`: the ORDER BY event time of
    /// rows still to come, from the input or waiting here.
    pub fn lower_bound(&self, col: usize) -> Option<LowerBound> {
        let (c, input) = self.gate.clone()?;
        if c != col {
            return None;
        }
        let state = self.state.clone();
        Some(Arc::new(move || input().min(lock(&state).waiting_from)))
    }

    /// The values of `exprs` over `batch`, as comparable rows (one constant
    /// column without expressions).
    fn rows_of(
        exprs: &[Arc<dyn PhysicalExpr>],
        conv: &RowConverter,
        batch: &RecordBatch,
    ) -> Result<Rows> {
        let cols: Vec<ArrayRef> = if exprs.is_empty() {
            vec![Arc::new(BooleanArray::from(vec![true; batch.num_rows()]))]
        } else {
            exprs
                .iter()
                .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
                .collect::<Result<_>>()?
        };
        Ok(conv.convert_columns(&cols)?)
    }

    /// The clock of EXPIRE AFTER: the event time of the ORDER BY column, or
    /// the wall clock.
    fn clock(gate_wm: Option<i64>) -> i64 {
        match gate_wm {
            Some(w) if w != Watermark::NONE && w != Watermark::END => w,
            _ => crate::time::now_millis(),
        }
    }

    /// One epoch: the kept rows and `fresh`, through DataFusion's window
    /// operator; returns the rows that are final.
    async fn epoch(
        &self,
        fresh: Vec<RecordBatch>,
        ctx: Arc<TaskContext>,
    ) -> Result<Option<RecordBatch>> {
        let end = self.watermark.get() == Watermark::END;
        let gate_wm = self.gate.as_ref().map(|(_, f)| f());
        let clock = Self::clock(gate_wm);
        let Some(input) = self.gather(&fresh, clock, &ctx)? else {
            return Ok(None);
        };
        let done = self.run_window(&input, ctx.clone()).await?;
        let mut st = lock(&self.state);
        let n_in = input.marked_schema.fields().len() - 1;
        let rows = Ranked::of(self, &st, &done, n_in)?;
        let (ready, groups) = self.final_rows(&rows, gate_wm, end);
        let values = self.count(&mut st, &rows, &done, &groups, &ready, clock)?;
        let expired = self.expire_keys(&mut st, clock)?;
        self.keep(&mut st, &rows, &done, input, &groups, &ready, &expired)?;
        let bytes = st.publish(&self.metrics);
        drop(st);
        self.memory.resize(&ctx, bytes)?;
        self.output(&done, &ready, values, n_in)
    }

    /// Phase 1: the rows the window runs over — the history of the keys
    /// with rows now (and of keys whose rows still wait), and `fresh` —
    /// and the history set aside as it is; `None` when nothing runs (the
    /// state's size is published and reserved then).
    fn gather(
        &self,
        fresh: &[RecordBatch],
        clock: i64,
        ctx: &TaskContext,
    ) -> Result<Option<Gathered>> {
        let mut st = lock(&self.state);
        let marked_schema = st.marked.clone();
        let waiting = st
            .rows
            .as_ref()
            .is_some_and(|r| history_of(r).false_count() > 0);
        if fresh.iter().all(|b| b.num_rows() == 0) && !waiting {
            self.expire_keys(&mut st, clock)?;
            let bytes = st.publish(&self.metrics);
            drop(st);
            self.memory.resize(ctx, bytes)?;
            return Ok(None);
        }
        let mut all: Vec<RecordBatch> = Vec::new();
        let mut aside = None;
        if let Some(rows) = st.rows.take() {
            // the keys of the epoch, compared as their row bytes
            let fresh_keys = fresh
                .iter()
                .map(|b| Self::rows_of(&self.partition_by, &st.key_conv, b))
                .collect::<Result<Vec<_>>>()?;
            let mut now: HashSet<&[u8]> = fresh_keys
                .iter()
                .flat_map(|k| k.iter().map(|r| r.data()))
                .collect();
            let keys = Self::rows_of(&self.partition_by, &st.key_conv, &rows)?;
            let hist = history_of(&rows);
            // a key whose rows still wait runs too: its waiting rows may
            // become final now, and LAG needs their history with them
            now.extend(
                (0..rows.num_rows())
                    .filter(|&i| !hist.value(i))
                    .map(|i| keys.row(i).data()),
            );
            let runs: BooleanArray = (0..rows.num_rows())
                .map(|i| Some(!hist.value(i) || now.contains(keys.row(i).data())))
                .collect();
            all.push(arrow::compute::filter_record_batch(&rows, &runs)?);
            let rest = arrow::compute::filter_record_batch(&rows, &arrow::compute::not(&runs)?)?;
            aside = (rest.num_rows() > 0).then_some(rest);
        }
        for b in fresh {
            all.push(marked(b, &marked_schema, false)?);
        }
        let data = arrow::compute::concat_batches(&marked_schema, &all)?;
        Ok(Some(Gathered {
            marked_schema,
            data,
            aside,
        }))
    }

    /// Phase 2: DataFusion's window operator over the gathered rows
    /// (sorted by PARTITION BY and ORDER BY), as one batch.
    async fn run_window(&self, input: &Gathered, ctx: Arc<TaskContext>) -> Result<RecordBatch> {
        let source = datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
            &[vec![input.data.clone()]],
            input.marked_schema.clone(),
            None,
        )?;
        let sorted: Arc<dyn ExecutionPlan> = match &self.sort {
            Some(o) => Arc::new(SortExec::new(o.clone(), source)),
            None => source,
        };
        use datafusion::physical_plan::execution_plan::{
            ChildrenPropertiesMode, ReplaceChildrenOptions,
        };
        // the marker column changes the schema: properties are recomputed
        let run = self.window.clone().replace_children(
            vec![sorted],
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )?;
        let done = datafusion::physical_plan::collect(run, ctx).await?;
        let Some(first) = done.first() else {
            return Err(DataFusionError::Internal(
                "the window operator gave no rows for the row window's input".into(),
            ));
        };
        Ok(arrow::compute::concat_batches(&first.schema(), &done)?)
    }

    /// Phase 3: which rows are final — past the watermark, with the rows
    /// after them that LEAD / FOLLOWING need — and the runs of rows of one
    /// key, as (start, end).
    fn final_rows(
        &self,
        rows: &Ranked,
        gate_wm: Option<i64>,
        end: bool,
    ) -> (Vec<bool>, Vec<(usize, usize)>) {
        let (keys, hist, times) = (&rows.keys, &rows.hist, &rows.times);
        let n = hist.len();
        let mut ready = vec![false; n];
        let mut groups = Vec::new();
        let mut s = 0;
        while s < n {
            let mut e = s + 1;
            while e < n && keys.row(e) == keys.row(s) {
                e += 1;
            }
            let mut known = s;
            while known < e
                && (hist.value(known)
                    || end
                    || match (times, gate_wm) {
                        (Some(t), Some(wm)) => !t.is_null(known) && t.value(known) < wm,
                        _ => true,
                    })
            {
                known += 1;
            }
            let limit = if end {
                e
            } else {
                known.saturating_sub(self.after).max(s)
            };
            for (i, r) in ready.iter_mut().enumerate().take(limit).skip(s) {
                *r = !hist.value(i);
            }
            groups.push((s, e));
            s = e;
        }
        (ready, groups)
    }

    /// Phase 4: the functions counted from a key's first row (ROW_NUMBER,
    /// RANK, DENSE_RANK, running aggregates) for the final rows, each key's
    /// state carried on.
    fn count(
        &self,
        st: &mut State,
        rows: &Ranked,
        done: &RecordBatch,
        groups: &[(usize, usize)],
        ready: &[bool],
        clock: i64,
    ) -> Result<Vec<Vec<ScalarValue>>> {
        let n = done.num_rows();
        let mut values: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.needs.len()];
        let args: Vec<Option<Vec<ArrayRef>>> = self
            .needs
            .iter()
            .map(|nd| match nd {
                Need::Running { agg, .. } => agg
                    .expressions()
                    .iter()
                    .map(|e| e.evaluate(done)?.into_array(n))
                    .collect::<Result<Vec<_>>>()
                    .map(Some),
                _ => Ok(None),
            })
            .collect::<Result<_>>()?;
        for &(s, e) in groups {
            let Some(first) = (s..e).find(|&i| ready[i]) else {
                continue;
            };
            let key = rows.keys.row(s).owned();
            if !st.keys.contains_key(&key) {
                let k = st.new_key(clock)?;
                st.keys.insert(key.clone(), k);
            }
            let k = st.keys.get_mut(&key).expect("inserted");
            k.seen = clock;
            let mut i = first;
            while i < e && ready[i] {
                // the run of peers (equal ORDER BY values) from i
                let mut j = i + 1;
                while j < e && ready[j] && rows.orders.row(j) == rows.orders.row(i) {
                    j += 1;
                }
                self.count_peers(k, &args, &mut values, (i, j), &rows.orders)?;
                i = j;
            }
        }
        Ok(values)
    }

    /// The counted functions' values for the peers `i..j` of key `k`.
    fn count_peers(
        &self,
        k: &mut KeyState,
        args: &[Option<Vec<ArrayRef>>],
        values: &mut [Vec<ScalarValue>],
        (i, j): (usize, usize),
        orders: &Rows,
    ) -> Result<()> {
        let tie = k.last.as_ref().is_some_and(|l| l.row() == orders.row(i));
        let run = (j - i) as u64;
        if !tie {
            k.rank = k.count + 1;
            k.dense += 1;
        }
        let mut running = 0;
        for (f, nd) in self.needs.iter().enumerate() {
            match nd {
                Need::RowNumber => {
                    values[f].extend((1..=run).map(|r| ScalarValue::UInt64(Some(k.count + r))))
                }
                Need::Rank => values[f].extend((0..run).map(|_| ScalarValue::UInt64(Some(k.rank)))),
                Need::DenseRank => {
                    values[f].extend((0..run).map(|_| ScalarValue::UInt64(Some(k.dense))))
                }
                Need::Running { peers, .. } => {
                    let a = args[f].as_ref().expect("evaluated");
                    let acc = &mut k.accs[running];
                    running += 1;
                    if *peers {
                        acc.update_batch(&a.iter().map(|c| c.slice(i, j - i)).collect::<Vec<_>>())?;
                        let v = acc.evaluate()?;
                        values[f].extend((0..run).map(|_| v.clone()));
                    } else {
                        for r in i..j {
                            acc.update_batch(&a.iter().map(|c| c.slice(r, 1)).collect::<Vec<_>>())?;
                            values[f].push(acc.evaluate()?);
                        }
                    }
                }
                Need::Rows { .. } => {}
            }
        }
        k.count += run;
        k.last = Some(orders.row(i).owned());
        Ok(())
    }

    /// Phase 5: the rows kept — each key's last `before` rows that are
    /// out, the rows still waiting, and the history set aside, less the
    /// keys that expired.
    #[allow(clippy::too_many_arguments)]
    fn keep(
        &self,
        st: &mut State,
        rows: &Ranked,
        done: &RecordBatch,
        input: Gathered,
        groups: &[(usize, usize)],
        ready: &[bool],
        expired: &HashSet<OwnedRow>,
    ) -> Result<()> {
        let (keys, hist) = (&rows.keys, &rows.hist);
        let marked_schema = input.marked_schema;
        let n_in = marked_schema.fields().len() - 1;
        let mut keep: Vec<u32> = Vec::new();
        let mut keep_hist: Vec<bool> = Vec::new();
        st.waiting_from = Watermark::END;
        for &(s, e) in groups {
            let gone = expired.contains(&keys.row(s).owned());
            let out: Vec<usize> = (s..e).filter(|&i| hist.value(i) || ready[i]).collect();
            if !gone {
                for &i in &out[out.len().saturating_sub(self.before)..] {
                    keep.push(i as u32);
                    keep_hist.push(true);
                }
            }
            for i in (s..e).filter(|&i| !hist.value(i) && !ready[i]) {
                keep.push(i as u32);
                keep_hist.push(false);
                if let Some(t) = rows.times.as_ref().filter(|t| !t.is_null(i)) {
                    st.waiting_from = st.waiting_from.min(t.value(i));
                }
            }
        }
        let input_schema = Arc::new(Schema::new(marked_schema.fields()[..n_in].to_vec()));
        let inputs = RecordBatch::try_new(input_schema, done.columns()[..n_in].to_vec())?;
        let kept = arrow::compute::take_record_batch(&inputs, &UInt32Array::from(keep))?;
        let mut cols = kept.columns().to_vec();
        cols.push(Arc::new(BooleanArray::from(keep_hist)));
        let kept = RecordBatch::try_new(marked_schema.clone(), cols)?;
        let mut parts = vec![kept];
        if let Some(rest) = input.aside {
            let rest = if expired.is_empty() {
                rest
            } else {
                let keys = Self::rows_of(&self.partition_by, &st.key_conv, &rest)?;
                let live: BooleanArray = (0..rest.num_rows())
                    .map(|i| Some(!expired.contains(&keys.row(i).owned())))
                    .collect();
                arrow::compute::filter_record_batch(&rest, &live)?
            };
            parts.push(rest);
        }
        let kept = arrow::compute::concat_batches(&marked_schema, &parts)?;
        st.rows = (kept.num_rows() > 0).then_some(kept);
        Ok(())
    }

    /// Phase 6: the final rows, with the counted functions' values.
    fn output(
        &self,
        done: &RecordBatch,
        ready: &[bool],
        values: Vec<Vec<ScalarValue>>,
        n_in: usize,
    ) -> Result<Option<RecordBatch>> {
        let out = arrow::compute::filter_record_batch(done, &BooleanArray::from(ready.to_vec()))?;
        if out.num_rows() == 0 {
            return Ok(None);
        }
        let schema = self.window.schema();
        let mut cols = out.columns().to_vec();
        cols.remove(n_in);
        for (f, v) in values.into_iter().enumerate() {
            if matches!(self.needs[f], Need::Rows { .. }) {
                continue;
            }
            let ty = schema.field(n_in + f).data_type();
            let arr = ScalarValue::iter_to_array(v)?;
            cols[n_in + f] = if arr.data_type() == ty {
                arr
            } else {
                arrow::compute::cast(&arr, ty)?
            };
        }
        Ok(Some(RecordBatch::try_new(schema, cols)?))
    }

    /// Drops the keys without rows for `EXPIRE AFTER` at `clock`, with
    /// their history; returns them.
    /// Also drops the keys that are closed ([`Self::closed_keys`]).
    fn expire_keys(&self, st: &mut State, clock: i64) -> Result<HashSet<OwnedRow>> {
        let mut gone: HashSet<OwnedRow> = match self.expire {
            Some(ttl) => st
                .keys
                .iter()
                .filter(|(_, k)| clock.saturating_sub(k.seen) > ttl)
                .map(|(key, _)| key.clone())
                .collect(),
            None => HashSet::new(),
        };
        gone.extend(self.closed_keys(st)?);
        if gone.is_empty() {
            return Ok(gone);
        }
        st.keys.retain(|key, _| !gone.contains(key));
        // rows still waiting stay: they are input not yet out
        if let Some(rows) = st.rows.take() {
            let keys = Self::rows_of(&self.partition_by, &st.key_conv, &rows)?;
            let hist = history_of(&rows);
            let keep: BooleanArray = (0..rows.num_rows())
                .map(|i| Some(!hist.value(i) || !gone.contains(&keys.row(i).owned())))
                .collect();
            let rows = arrow::compute::filter_record_batch(&rows, &keep)?;
            st.rows = (rows.num_rows() > 0).then_some(rows);
        }
        Ok(gone)
    }
}

impl RowWindowExec {
    /// Keys whose bounded PARTITION BY column lies below its lower bound
    /// (`PARTITION BY window_start` over a window's results: the window has
    /// closed, no row of it comes again) and that have no rows waiting.
    fn closed_keys(&self, st: &State) -> Result<HashSet<OwnedRow>> {
        let bounds: Vec<(usize, i64)> = self
            .closing
            .iter()
            .map(|(i, f)| (*i, f()))
            .filter(|(_, b)| *b != Watermark::NONE)
            .collect();
        if bounds.is_empty() || st.keys.is_empty() {
            return Ok(HashSet::new());
        }
        let keys: Vec<&OwnedRow> = st.keys.keys().collect();
        let cols = st.key_conv.convert_rows(keys.iter().map(|k| k.row()))?;
        let mut closed = HashSet::new();
        for (i, bound) in bounds {
            let t = crate::operators::window::to_millis(&cols[i])?;
            for (k, v) in keys.iter().zip(t.iter()) {
                if v.is_some_and(|v| v < bound) {
                    closed.insert((*k).clone());
                }
            }
        }
        if let Some(rows) = &st.rows {
            // a key with rows still waiting keeps its state until they go
            let waiting = Self::rows_of(&self.partition_by, &st.key_conv, rows)?;
            let hist = history_of(rows);
            for i in (0..rows.num_rows()).filter(|&i| !hist.value(i)) {
                closed.remove(&waiting.row(i).owned());
            }
        }
        Ok(closed)
    }
}

/// Refuses an OVER clause whose answer on a stream would depend on when
/// rows arrived, over keys that never close (a closing PARTITION BY column,
/// such as a window's start, gives every key all of its rows at once):
///
/// - ordered by a stream's event time descending: the first row (the latest
///   of a key, `ROW_NUMBER() ... = 1`) is known only at the end of input;
/// - ROW_NUMBER / RANK / DENSE_RANK ordered by anything but an event time
///   (`ORDER BY price DESC`): a row's number is given when it arrives, and a
///   later row may rank before it.
///
/// Ordered by an event time ascending, rows wait for the watermark and come
/// in order; the message says what to write instead.
fn refuse_arrival_order(
    needs: &[Need],
    order_by: &[PhysicalSortExpr],
    closing: &[(usize, LowerBound)],
    input: &Arc<dyn ExecutionPlan>,
    trace: crate::operators::window::Trace<'_>,
) -> Result<()> {
    let Some(o) = order_by.first() else {
        return Ok(());
    };
    if !closing.is_empty() {
        return Ok(());
    }
    let time = o
        .expr
        .downcast_ref::<Column>()
        .filter(|c| trace(input, c.index()).is_some());
    match time {
        Some(c) if o.options.descending => Err(DataFusionError::Plan(format!(
            "an OVER clause ordered by the event time '{0}' descending on a stream: the latest row of a key is known only at the end of the input. For the latest row per key write GROUP BY <key> with last_value(<column> ORDER BY {0}) (an updating result: each new latest row replaces the last), or per window GROUP BY <key>, TUMBLE(...); for the first row per key order ascending (ROW_NUMBER() OVER (PARTITION BY <key> ORDER BY {0}) = 1)",
            c.name()
        ))),
        Some(_) => Ok(()),
        None if needs
            .iter()
            .any(|n| matches!(n, Need::RowNumber | Need::Rank | Need::DenseRank)) =>
        {
            Err(DataFusionError::Plan(format!(
                "ROW_NUMBER / RANK / DENSE_RANK ordered by '{}'{} on a stream: a row's number would be given when it arrives, and a later row may rank before it. Rank within windows (PARTITION BY window_start over a windowed GROUP BY: top-N per window), order by the stream's event time (rows then wait for the watermark), or keep the best row per key as an updating result (GROUP BY <key> with MAX / last_value)",
                o.expr
                    .downcast_ref::<Column>()
                    .map_or_else(|| o.expr.to_string(), |c| c.name().to_string()),
                if o.options.descending { " DESC" } else { "" }
            )))
        }
        None => Ok(()),
    }
}

/// What bounds a row window's wait and state: its ORDER BY event time (rows
/// wait for the watermark), its PARTITION BY columns with a lower bound
/// (closed keys), and `EXPIRE AFTER`.
struct Bounds {
    gate: Option<(usize, LowerBound)>,
    closing: Vec<(usize, LowerBound)>,
    expire: Option<i64>,
}

impl DisplayAs for RowWindowExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "RowWindowExec: each epoch after the last {} row(s) of every key{}{}, over {}",
            self.before,
            if self.after > 0 {
                format!(", a row waiting for the {} after it", self.after)
            } else {
                String::new()
            },
            if self.gate.is_some() {
                ", in event-time order (rows wait for the watermark)"
            } else {
                ""
            },
            self.window.name()
        )
    }
}

/// The history marker of kept rows.
fn history_of(rows: &RecordBatch) -> BooleanArray {
    rows.column(rows.num_columns() - 1)
        .as_any()
        .downcast_ref::<BooleanArray>()
        .expect("the marker")
        .clone()
}

fn marked(batch: &RecordBatch, schema: &SchemaRef, history: bool) -> Result<RecordBatch> {
    let mut cols = batch.columns().to_vec();
    cols.push(Arc::new(BooleanArray::from(vec![
        history;
        batch.num_rows()
    ])));
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

impl ExecutionPlan for RowWindowExec {
    fn name(&self) -> &str {
        "RowWindowExec"
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
        datafusion::physical_plan::execution_plan::apply_expression_roots(
            self.partition_by.iter().chain(&self.order_by).cloned(),
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
        Ok(Arc::new(self.cloned(children[0].clone())))
    }
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        // one operator sees every key: a partitioned input is merged
        let input = if self.input.output_partitioning().partition_count() > 1 {
            Arc::new(CoalescePartitionsExec::new(self.input.clone())) as Arc<dyn ExecutionPlan>
        } else {
            self.input.clone()
        };
        let mut input = input.execute(partition, context.clone())?;
        let me = self.cloned(self.input.clone());
        let schema = self.window.schema();
        let out = futures::stream::once(async move {
            let mut parts: Vec<RecordBatch> = Vec::new();
            while let Some(b) = input.next().await {
                parts.push(b?);
            }
            me.epoch(parts, context).await
        })
        .filter_map(|r| async move { r.transpose() });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, out)))
    }
}

#[cfg(test)]
mod tests {
    use super::offset;

    #[test]
    fn offsets_come_from_the_expression() {
        assert_eq!(offset("lag(t.x,int64(3)) partition by [k]"), 3);
        assert_eq!(offset("lead(t.x) partition by [k]"), 1);
        assert_eq!(offset("lag(t.x,int64(2),int64(0))"), 2);
    }
}
