//! The window operator as a DataFusion `ExecutionPlan`: one state per
//! partition, its input hash-routed by group key, its state reserved in
//! the memory pool and shown in its metrics.

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::GroupsAccumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::{
    EquivalenceProperties, GroupsAccumulatorAdapter, PhysicalExpr, ScalarFunctionExpr,
};

use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, aggregate_expressions};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::StreamExt;

use crate::time::Watermark;

use super::functions::{check_window, interval_millis};
use super::state::WinState;
use super::*;

/// The streaming window aggregate: one state per partition; with several,
/// its input is hash-routed by the group key, so a key's state lives in one
/// partition for good.
pub struct WindowAggregateExec {
    pub(super) input: Arc<dyn ExecutionPlan>,
    pub(super) inners: Vec<Arc<Inner>>,
    /// `state_bytes` per partition, shown by `ExecutionPlan::metrics`.
    pub(super) plan_metrics: ExecutionPlanMetricsSet,
    pub(super) props: Arc<PlanProperties>,
}

impl fmt::Debug for WindowAggregateExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WindowAggregateExec({:?})", self.inners[0].kind)
    }
}

pub(super) fn window_fn(e: &Arc<dyn PhysicalExpr>) -> Option<(&str, &ScalarFunctionExpr)> {
    let f = e.downcast_ref::<ScalarFunctionExpr>()?;
    Some((f.name(), f))
}

pub(super) fn literal_ms(e: &Arc<dyn PhysicalExpr>) -> Result<i64> {
    match e.downcast_ref::<Literal>() {
        Some(l) => interval_millis(l.value()),
        None => Err(DataFusionError::Plan(format!(
            "a window size must be a constant interval, not {e}"
        ))),
    }
}

pub(super) fn create_accumulator(
    a: &Arc<AggregateFunctionExpr>,
) -> Result<Box<dyn GroupsAccumulator>> {
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
        let bounded = matches!(agg.input().boundedness(), Boundedness::Bounded);
        let Some(Grouping {
            kind,
            ts,
            start_pos,
            end_pos,
            emit,
        }) = Grouping::of(exprs, updating, bounded, emit)?
        else {
            return Ok(None);
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
        let key_schema = key_schema(&keys, &input_schema)?;
        let tz = match start_pos.map(|p| schema.field(p).data_type()) {
            Some(DataType::Timestamp(_, tz)) => tz.clone(),
            _ => None,
        };
        let aggr = agg.aggr_expr().to_vec();
        let agg_args = aggregate_expressions(&aggr, &AggregateMode::Single, 0)?;
        // partitions own the keys the hash routes to them; without a key
        // there is one group per window, and one partition
        let partitions = if keys.is_empty() { 1 } else { partitions };
        let input = routed(input, &keys, partitions, feeds)?;
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
            key_schema,
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
                inner.memory = Some(crate::operators::memory::StateMemory::new(
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

/// How an aggregate groups: by which window (or none: an updating GROUP
/// BY), on which time, where the window's start and end are among its
/// group expressions, and how it emits.
struct Grouping {
    kind: WindowKind,
    ts: Arc<dyn PhysicalExpr>,
    start_pos: Option<usize>,
    end_pos: Option<usize>,
    emit: Emit,
}

impl Grouping {
    /// The grouping of `exprs`; `None` for an aggregate that stays
    /// DataFusion's (no window, and not updating or over a bounded table).
    fn of(
        exprs: &[(Arc<dyn PhysicalExpr>, String)],
        updating: bool,
        bounded: bool,
        emit: Emit,
    ) -> Result<Option<Self>> {
        let start_pos = exprs
            .iter()
            .position(|(e, _)| window_fn(e).is_some_and(|(n, _)| START_FNS.contains(&n)));
        let Some(start_pos) = start_pos else {
            // a GROUP BY over a bounded table (a lookup) stays DataFusion's
            if !updating || bounded {
                return Ok(None);
            }
            return Ok(Some(Self {
                kind: WindowKind::Global,
                ts: Arc::new(Literal::new(ScalarValue::Int64(Some(0)))),
                start_pos: None,
                end_pos: None,
                emit: Emit::Changes,
            }));
        };
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
        Ok(Some(Self {
            kind,
            ts: args[0].clone(),
            start_pos: Some(start_pos),
            end_pos,
            emit,
        }))
    }
}

/// The schema of the group keys in the operator's state (one constant
/// column when there is no key).
fn key_schema(keys: &[(usize, Arc<dyn PhysicalExpr>)], input: &Schema) -> Result<SchemaRef> {
    let mut fields = Vec::new();
    for (i, e) in keys {
        fields.push(Field::new(format!("k{i}"), e.data_type(input)?, true));
    }
    if fields.is_empty() {
        fields.push(Field::new("k", DataType::UInt8, false));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The operator's input in `partitions` partitions, hash-routed by `keys`.
/// The scan is read by every partition at once when nothing between keeps
/// order or state, so the routing runs on every core; one partition over a
/// partitioned input (a window over a window) takes all of it.
fn routed(
    input: Arc<dyn ExecutionPlan>,
    keys: &[(usize, Arc<dyn PhysicalExpr>)],
    partitions: usize,
    feeds: &[Arc<crate::feed::EpochFeed>],
) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(if partitions > 1 {
        let input = crate::feed::widen_scan(&input, feeds, partitions).unwrap_or(input);
        Arc::new(
            datafusion::physical_plan::repartition::RepartitionExec::try_new(
                input,
                Partitioning::Hash(keys.iter().map(|(_, e)| e.clone()).collect(), partitions),
            )?,
        )
    } else if input.output_partitioning().partition_count() > 1 {
        Arc::new(datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec::new(input))
    } else {
        input
    })
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
pub(super) fn coalesce(batches: Vec<RecordBatch>, target: usize) -> Result<Vec<RecordBatch>> {
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

pub(super) fn eval(e: &Arc<dyn PhysicalExpr>, b: &RecordBatch) -> Result<ArrayRef> {
    e.evaluate(b)?.into_array(b.num_rows())
}

pub(super) fn take_all(cols: &[ArrayRef], idx: &UInt32Array) -> Result<Vec<ArrayRef>> {
    cols.iter()
        .map(|c| Ok(arrow::compute::take(c, idx, None)?))
        .collect()
}

/// The rows of each window a batch touches, in the order first touched.
/// Rows come mostly in event-time order, so most go to the window of the row
/// before; the others are found through a (fast-hashed) index.
#[derive(Default)]
pub(super) struct RowsByWindow {
    pub(super) windows: Vec<(i64, Vec<u32>)>,
    pub(super) index: datafusion::common::HashMap<i64, usize>,
    pub(super) last: usize,
}

impl RowsByWindow {
    pub(super) fn push(&mut self, start: i64, row: u32) {
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
pub(super) enum Pick {
    Run(usize, usize),
    Take(UInt32Array),
}

impl Pick {
    pub(super) fn of(rows: &[u32]) -> Self {
        match (rows.first(), rows.last()) {
            (Some(&a), Some(&z)) if (z - a) as usize + 1 == rows.len() => {
                Pick::Run(a as usize, rows.len())
            }
            _ => Pick::Take(UInt32Array::from(rows.to_vec())),
        }
    }

    pub(super) fn one(&self, c: &ArrayRef) -> Result<ArrayRef> {
        Ok(match self {
            Pick::Run(offset, len) => c.slice(*offset, *len),
            Pick::Take(idx) => arrow::compute::take(c, idx, None)?,
        })
    }

    pub(super) fn bools(&self, f: &BooleanArray) -> Result<BooleanArray> {
        Ok(match self {
            Pick::Run(offset, len) => f.slice(*offset, *len),
            Pick::Take(idx) => arrow::compute::take(f, idx, None)?.as_boolean().clone(),
        })
    }

    pub(super) fn all(&self, cols: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
        cols.iter().map(|c| self.one(c)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;

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
