//! Execution errors on some rows affect only those rows.
//!
//! DataFusion evaluates an expression over a whole batch: one zero divisor,
//! one failed CAST, one bad regular expression among 8,192 rows fails the
//! batch, and with it the epoch. Under `LogAndContinue` and
//! `RetryWithBackoff` (a row's error does not go away by retrying) the
//! operators that evaluate per-row expressions — projections and filters,
//! and aggregate arguments, which [`HoistAggregateArguments`] moves into a
//! projection below their aggregate — run as [`RowSafeExec`]: a batch that
//! fails with an error of the data (not an internal or external one) is
//! evaluated again in halves, down to the rows that fail on their own. Those
//! rows go to the dead-letter route with their error ([`DeadRows`]); the
//! others go on, in order. Under `FailBatch` the plan is left as DataFusion
//! made it and the first such error stops the job.
//!
//! Sits between DataFusion's physical optimizer (a rule of its own, last
//! before the sanity check) and the runtime, which drains [`DeadRows`] into
//! the epoch's dead letters.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::projection::Projector;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce::{LimitedBatchCoalescer, PushBatchStatus};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::{FilterExec, batch_filter};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, StreamExt};
use velo_connectors::BadRecord;

use crate::ErrorKind;

/// The rows of a job that failed on their own, waiting for the runtime to
/// route them (dead-letter sink, log, count) at the end of the epoch.
#[derive(Debug, Default)]
pub struct DeadRows {
    job: String,
    rows: Mutex<Vec<BadRecord>>,
}

impl DeadRows {
    /// The dead rows of `job`.
    pub fn new(job: &str) -> Arc<Self> {
        Arc::new(Self {
            job: job.to_string(),
            rows: Mutex::new(Vec::new()),
        })
    }

    /// The rows collected since the last call.
    pub fn take(&self) -> Vec<BadRecord> {
        std::mem::take(&mut *self.rows.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn push(&self, r: BadRecord) {
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).push(r);
    }
}

/// Whether an error is about the data of some rows (division by zero, a
/// failed cast, an invalid argument), so that isolating the rows makes sense.
fn is_row_error(e: &DataFusionError) -> bool {
    !matches!(
        e.find_root(),
        DataFusionError::External(_) | DataFusionError::ResourcesExhausted(_)
    ) && crate::error::datafusion_kind(e) == ErrorKind::User
}

/// The per-row work of a projection or a filter.
#[derive(Clone)]
enum Op {
    Project(Arc<Projector>),
    Filter {
        predicate: Arc<dyn PhysicalExpr>,
        projection: Option<Vec<usize>>,
    },
}

impl Op {
    fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        match self {
            Self::Project(p) => p.project_batch(batch),
            Self::Filter {
                predicate,
                projection,
            } => {
                let kept = batch_filter(batch, predicate)?;
                match projection {
                    Some(p) => Ok(kept.project(p)?),
                    None => Ok(kept),
                }
            }
        }
    }
}

/// A projection or filter whose failing rows are dead-lettered instead of
/// failing the batch. It computes exactly what the DataFusion operator it
/// replaces computes (and shows as that operator in `explain`).
pub struct RowSafeExec {
    /// The operator it stands for (its display and properties).
    original: Arc<dyn ExecutionPlan>,
    input: Arc<dyn ExecutionPlan>,
    op: Op,
    /// A filter's output is coalesced to this many rows per batch, as
    /// DataFusion's filter does; a projection's batches keep their size.
    coalesce: Option<usize>,
    dead: Arc<DeadRows>,
}

impl fmt::Debug for RowSafeExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RowSafeExec({})", self.original.name())
    }
}

impl RowSafeExec {
    /// Stands in for `plan` if it is a projection or a filter.
    fn try_wrap(plan: &Arc<dyn ExecutionPlan>, dead: &Arc<DeadRows>) -> Result<Option<Self>> {
        let (input, op, coalesce) = if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
            let projector = p.projection_expr().make_projector(&p.input().schema())?;
            (p.input().clone(), Op::Project(Arc::new(projector)), None)
        } else if let Some(f) = plan.downcast_ref::<FilterExec>() {
            if f.fetch().is_some() {
                // a LIMIT inside the filter: rare on streams, left as is
                return Ok(None);
            }
            let op = Op::Filter {
                predicate: f.predicate().clone(),
                projection: f.projection().as_ref().map(|p| p.iter().copied().collect()),
            };
            (f.input().clone(), op, Some(f.batch_size()))
        } else {
            return Ok(None);
        };
        Ok(Some(Self {
            original: plan.clone(),
            input,
            op,
            coalesce,
            dead: dead.clone(),
        }))
    }
}

impl DisplayAs for RowSafeExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.original.fmt_as(t, f)
    }
}

impl ExecutionPlan for RowSafeExec {
    fn name(&self) -> &str {
        self.original.name()
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        self.original.properties()
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }
    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.original.apply_expressions(f)
    }
    fn maintains_input_order(&self) -> Vec<bool> {
        self.original.maintains_input_order()
    }
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        self.original.benefits_from_input_partitioning()
    }
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }
    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let original = self
            .original
            .clone()
            .replace_children(children.clone(), options)?;
        Ok(Arc::new(Self {
            original,
            input: children[0].clone(),
            op: self.op.clone(),
            coalesce: self.coalesce,
            dead: self.dead.clone(),
        }))
    }
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.schema();
        Ok(Box::pin(RowSafeStream {
            input: self.input.execute(partition, context)?,
            op: self.op.clone(),
            dead: self.dead.clone(),
            coalescer: self
                .coalesce
                .map(|n| LimitedBatchCoalescer::new(schema.clone(), n, None)),
            schema,
            done: false,
        }))
    }
}

/// The stream of a [`RowSafeExec`] partition.
struct RowSafeStream {
    input: SendableRecordBatchStream,
    op: Op,
    dead: Arc<DeadRows>,
    coalescer: Option<LimitedBatchCoalescer>,
    schema: SchemaRef,
    done: bool,
}

impl RowSafeStream {
    /// The rows of `batch` that pass, without those that fail on their own.
    fn process(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        match self.op.apply(batch) {
            Ok(b) => Ok(b),
            Err(e) if is_row_error(&e) => isolate(&self.op, batch, e, &self.dead),
            Err(e) => Err(e),
        }
    }

    fn next_batch(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<RecordBatch>>> {
        loop {
            if let Some(c) = self.coalescer.as_mut() {
                if let Some(b) = c.next_completed_batch() {
                    return Poll::Ready(Some(Ok(b)));
                }
            }
            if self.done {
                return Poll::Ready(None);
            }
            match ready!(self.input.poll_next_unpin(cx)) {
                None => {
                    self.done = true;
                    if let Some(c) = self.coalescer.as_mut() {
                        c.finish()?;
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(batch)) => {
                    let out = self.process(&batch)?;
                    match self.coalescer.as_mut() {
                        None if out.num_rows() > 0 => return Poll::Ready(Some(Ok(out))),
                        None => {}
                        Some(c) => {
                            let status = c.push_batch(out)?;
                            debug_assert!(matches!(status, PushBatchStatus::Continue));
                        }
                    }
                }
            }
        }
    }
}

impl Stream for RowSafeStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.next_batch(cx) {
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            other => other,
        }
    }
}

impl RecordBatchStream for RowSafeStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// `batch` without the rows on which `op` fails on their own: those are
/// dead-lettered with their error. The halves are evaluated in order, so
/// the rows that pass keep their order.
fn isolate(
    op: &Op,
    batch: &RecordBatch,
    first: DataFusionError,
    dead: &DeadRows,
) -> Result<RecordBatch> {
    let mut good = Vec::new();
    let mut failed = 0usize;
    // (offset, length, the error the slice failed with, if known)
    let mut todo = vec![(0usize, batch.num_rows(), Some(first))];
    while let Some((at, len, err)) = todo.pop() {
        let slice = batch.slice(at, len);
        let err = match err {
            Some(e) => e,
            None => match op.apply(&slice) {
                Ok(b) => {
                    good.push((at, b));
                    continue;
                }
                Err(e) if is_row_error(&e) => e,
                Err(e) => return Err(e),
            },
        };
        if len == 1 {
            failed += 1;
            dead.push(BadRecord {
                source: dead.job.clone(),
                location: "query".into(),
                line: 0,
                error: first_line(&err),
                raw: crate::feed::row_json(batch, at),
            });
            continue;
        }
        // the second half is pushed first, so the first is evaluated first
        let half = len / 2;
        todo.push((at + half, len - half, None));
        todo.push((at, half, None));
    }
    tracing::debug!(
        job = %dead.job,
        failed,
        rows = batch.num_rows(),
        "rows whose expressions failed were taken out of the batch"
    );
    good.sort_by_key(|(at, _)| *at);
    let schema = match good.first() {
        Some((_, b)) => b.schema(),
        None => return Ok(RecordBatch::new_empty(op_schema(op, batch)?)),
    };
    let batches: Vec<RecordBatch> = good.into_iter().map(|(_, b)| b).collect();
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

/// The output schema of `op` over `batch`'s schema (of an empty slice).
fn op_schema(op: &Op, batch: &RecordBatch) -> Result<SchemaRef> {
    Ok(op.apply(&batch.slice(0, 0))?.schema())
}

/// The root error's message on one line (a regular expression's syntax
/// error spans several).
fn first_line(e: &DataFusionError) -> String {
    e.find_root()
        .to_string()
        .split_whitespace()
        .filter(|w| !w.bytes().all(|b| b == b'~'))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The physical optimizer rule that puts [`RowSafeExec`] in place of every
/// projection and filter of a job's plan.
#[derive(Debug)]
pub struct IsolateRowErrors {
    dead: Arc<DeadRows>,
}

impl IsolateRowErrors {
    /// The rule for a job whose dead rows go to `dead`.
    pub fn new(dead: Arc<DeadRows>) -> Self {
        Self { dead }
    }
}

impl PhysicalOptimizerRule for IsolateRowErrors {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|p| match RowSafeExec::try_wrap(&p, &self.dead)? {
            Some(w) => Ok(Transformed::yes(Arc::new(w) as Arc<dyn ExecutionPlan>)),
            None => Ok(Transformed::no(p)),
        })
        .data()
    }
    fn name(&self) -> &str {
        "velo_isolate_row_errors"
    }
    fn schema_check(&self) -> bool {
        true
    }
}

/// A logical optimizer rule: the arguments (and FILTER conditions) of
/// aggregate functions that are expressions, not columns, are computed by
/// a projection below the aggregate, where a row whose expression fails
/// can be taken out ([`RowSafeExec`]) before it reaches any accumulator.
#[derive(Debug, Default)]
pub struct HoistAggregateArguments;

impl OptimizerRule for HoistAggregateArguments {
    fn name(&self) -> &str {
        "velo_hoist_aggregate_arguments"
    }
    fn supports_rewrite(&self) -> bool {
        true
    }
    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        plan.transform_up(hoist)
    }
}

/// Hoists the computed arguments of one aggregate.
fn hoist(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    use datafusion::logical_expr::expr::AggregateFunction;
    use datafusion::logical_expr::{Aggregate, Projection};
    let LogicalPlan::Aggregate(agg) = plan else {
        return Ok(Transformed::no(plan));
    };
    let computed = |e: &Expr| !matches!(e, Expr::Column(_) | Expr::Literal(..));
    let mut hoisted: Vec<Expr> = Vec::new();
    let mut name_of = |e: &Expr| -> Expr {
        let at = match hoisted.iter().position(|h| h == e) {
            Some(i) => i,
            None => {
                hoisted.push(e.clone());
                hoisted.len() - 1
            }
        };
        Expr::Column(datafusion::common::Column::from_name(format!(
            "__velo_arg_{at}"
        )))
    };
    let mut aggr_expr = Vec::with_capacity(agg.aggr_expr.len());
    let mut changed = false;
    for e in &agg.aggr_expr {
        let (inner, alias) = match e {
            Expr::Alias(a) => (a.expr.as_ref(), Some(a.name.clone())),
            other => (other, None),
        };
        let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
            aggr_expr.push(e.clone());
            continue;
        };
        if !params.args.iter().any(computed) && !params.filter.as_deref().is_some_and(computed) {
            aggr_expr.push(e.clone());
            continue;
        }
        changed = true;
        let mut params = params.clone();
        params.args = params
            .args
            .iter()
            .map(|a| if computed(a) { name_of(a) } else { a.clone() })
            .collect();
        if let Some(f) = params.filter.as_deref().filter(|f| computed(f)) {
            params.filter = Some(Box::new(name_of(f)));
        }
        let new = Expr::AggregateFunction(AggregateFunction {
            func: func.clone(),
            params,
        });
        // the aggregate's output keeps its name
        let name = alias.unwrap_or_else(|| e.schema_name().to_string());
        aggr_expr.push(new.alias(name));
    }
    if !changed {
        return Ok(Transformed::no(LogicalPlan::Aggregate(agg)));
    }
    let input = agg.input.clone();
    let mut exprs: Vec<Expr> = input
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    exprs.extend(
        hoisted
            .into_iter()
            .enumerate()
            .map(|(i, e)| e.alias(format!("__velo_arg_{i}"))),
    );
    let projection = LogicalPlan::Projection(Projection::try_new(exprs, input)?);
    let new = Aggregate::try_new(Arc::new(projection), agg.group_expr.clone(), aggr_expr)?;
    Ok(Transformed::yes(LogicalPlan::Aggregate(new)))
}

/// `batch` without its rows holding a date or time that no calendar can
/// show (`to_timestamp_millis` of a huge number: Arrow stores it, but a
/// JSON or table sink would write `ERROR: ...` text in its place). Such a
/// value is an error of its row: the row is dead-lettered.
pub fn without_unprintable_times(batch: RecordBatch, dead: &DeadRows) -> Result<RecordBatch> {
    use arrow::array::BooleanArray;
    let mut bad: Option<Vec<bool>> = None;
    for (c, col) in batch.columns().iter().enumerate() {
        let Some(ok) = printable_times(col.as_ref()) else {
            continue;
        };
        let marks = bad.get_or_insert_with(|| vec![false; batch.num_rows()]);
        for (row, good) in ok.into_iter().enumerate() {
            if !good && !marks[row] {
                marks[row] = true;
                dead.push(BadRecord {
                    source: dead.job.clone(),
                    location: "query".into(),
                    line: 0,
                    error: format!(
                        "column '{}': the {} value is outside the range of dates and times that can be written",
                        batch.schema().field(c).name(),
                        col.data_type()
                    ),
                    raw: bad_row_json(&batch, row, c),
                });
            }
        }
    }
    match bad {
        None => Ok(batch),
        Some(marks) => {
            let keep = BooleanArray::from(marks.into_iter().map(|b| !b).collect::<Vec<_>>());
            Ok(arrow::compute::filter_record_batch(&batch, &keep)?)
        }
    }
}

/// For a date, time or timestamp column with a value no calendar can show:
/// which rows are fine. `None` when every value is (the usual case: the
/// column's minimum and maximum are checked first).
fn printable_times(col: &dyn arrow::array::Array) -> Option<Vec<bool>> {
    use arrow::array::AsArray;
    use arrow::datatypes::{
        ArrowPrimitiveType, DataType, Date64Type, TimeUnit, TimestampMicrosecondType,
        TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
    };
    fn check<T: ArrowPrimitiveType<Native = i64>>(
        col: &dyn arrow::array::Array,
        ok: impl Fn(i64) -> bool,
    ) -> Option<Vec<bool>> {
        let a = col.as_primitive::<T>();
        let (lo, hi) = (arrow::compute::min(a)?, arrow::compute::max(a)?);
        if ok(lo) && ok(hi) {
            return None;
        }
        Some(a.iter().map(|v| v.is_none_or(&ok)).collect())
    }
    let shown = |ms: Option<chrono::DateTime<chrono::Utc>>| ms.is_some();
    match col.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            check::<TimestampSecondType>(col, |v| shown(chrono::DateTime::from_timestamp(v, 0)))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            check::<TimestampMillisecondType>(col, |v| {
                shown(chrono::DateTime::from_timestamp_millis(v))
            })
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            check::<TimestampMicrosecondType>(col, |v| {
                shown(chrono::DateTime::from_timestamp_micros(v))
            })
        }
        // every i64 of nanoseconds is a date chrono can show
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            check::<TimestampNanosecondType>(col, |_| true)
        }
        DataType::Date64 => {
            check::<Date64Type>(col, |v| shown(chrono::DateTime::from_timestamp_millis(v)))
        }
        _ => None,
    }
}

/// A row for the dead-letter record, with the unprintable column as its
/// raw number (the JSON writer would print the error text).
fn bad_row_json(batch: &RecordBatch, row: usize, col: usize) -> String {
    use arrow::datatypes::DataType;
    let mut cols = batch.columns().to_vec();
    let mut fields: Vec<arrow::datatypes::Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    if let Ok(raw) = arrow::compute::cast(&cols[col], &DataType::Int64) {
        cols[col] = raw;
        fields[col] = fields[col].clone().with_data_type(DataType::Int64);
    }
    match RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), cols) {
        Ok(b) => crate::feed::row_json(&b, row),
        Err(_) => String::new(),
    }
}
