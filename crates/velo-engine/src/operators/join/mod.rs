//! Stream-stream joins bounded in time (interval joins).
//!
//! Where it sits: in place of DataFusion's join operator wherever both of
//! its inputs are streams (`a JOIN b ON a.k = b.k AND b.ts BETWEEN a.ts -
//! INTERVAL '10' SECOND AND a.ts + INTERVAL '10' SECOND`, or the seeds'
//! `WITHIN INTERVAL '5' MINUTES`, which the engine turns into that
//! condition on the sources' event-time columns).
//!
//! [`IntervalJoinExec`] keeps the rows of both sides across epochs, each side
//! with a hash index on its join keys ([`kept`]). Every epoch it reads both
//! inputs, adds the new rows to their side, looks the new left rows up among
//! all right rows and the new right rows among the old left rows (so every
//! pair is found once), checks the candidates' keys and the join's filter
//! with Arrow kernels (the filter's fixed intervals added as durations, a
//! whole array at a time), and emits the matches at once: an epoch costs
//! what its new rows cost, not what the state holds. The time bound `lo <= right.ts - left.ts <= hi` says how
//! long a row can still find a partner: a left row is dropped once no right
//! row that may still come (event time at or after the lowest time the right
//! input can still produce, its watermark) can be within `hi` of it, and the
//! same for the right side. So state stays bounded by the interval. Outer
//! joins (LEFT, RIGHT, FULL) emit a row that never matched, padded with
//! nulls, when it is dropped: the watermark proves no match can come.
//!
//! The same rule puts the window operators in place ([`crate::window`]), in
//! one bottom-up pass: a join over windows and a window over a join (or
//! over another window) find the time bounds of their inputs by tracing
//! their time column down the plan to a stream's watermark.

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, JoinSide, JoinType, NullEquality, Result, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::utils::{ColumnIndex, JoinFilter};
use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec, SymmetricHashJoinExec};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use futures::StreamExt;

use crate::time::{Watermark, shift};

mod kept;
use kept::Kept;

/// The lowest event time a plan's column can still carry in rows to come.
type LowerBound = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Candidate pairs checked (keys, filter) and joined at a time.
const PAIRS_PER_BATCH: usize = 32 * 1024;
const MATCHED: &str = "__velo_matched";

/// The physical optimizer rule that puts [`IntervalJoinExec`] in place of a
/// join of two streams, the window operators in place of windowed
/// aggregates ([`crate::operators::window::StreamingWindows`]) and row windows in place
/// of OVER (...) ([`crate::operators::rowwindow::StreamingRowWindows`]), in one
/// bottom-up pass.
pub struct StreamingJoins {
    /// The job's streams.
    streams: Vec<Arc<crate::feed::EpochFeed>>,
    /// Windows and updating aggregates, replaced in the same pass.
    windows: crate::operators::window::StreamingWindows,
    /// Row-window functions (OVER), replaced in the same pass.
    row_windows: crate::operators::rowwindow::StreamingRowWindows,
    /// The job's watermark (held back by each join's interval).
    job_watermark: Arc<Watermark>,
    states: Arc<crate::operators::state::WindowStates>,
    metrics: Arc<crate::operators::metrics::WindowMetrics>,
}

impl fmt::Debug for StreamingJoins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamingJoins({} streams)", self.streams.len())
    }
}

impl StreamingJoins {
    /// A rule over the job's `streams`; joins register their state in
    /// `states` and hold `job_watermark` back by their interval.
    pub fn new(
        streams: Vec<Arc<crate::feed::EpochFeed>>,
        windows: crate::operators::window::StreamingWindows,
        row_windows: crate::operators::rowwindow::StreamingRowWindows,
        job_watermark: Arc<Watermark>,
        states: Arc<crate::operators::state::WindowStates>,
        metrics: Arc<crate::operators::metrics::WindowMetrics>,
    ) -> Self {
        Self {
            streams,
            windows,
            row_windows,
            job_watermark,
            states,
            metrics,
        }
    }

    /// The lower bound of column `col` of `plan`, traced down to a stream's
    /// event-time column (None: not an event time, or lost on the way).
    fn lower_bound(&self, plan: &Arc<dyn ExecutionPlan>, col: usize) -> Option<LowerBound> {
        use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
        use datafusion::physical_plan::filter::FilterExec;
        use datafusion::physical_plan::projection::ProjectionExec;
        use datafusion::physical_plan::repartition::RepartitionExec;
        use datafusion::physical_plan::streaming::StreamingTableExec;
        if let Some(scan) = plan.downcast_ref::<StreamingTableExec>() {
            let inner = match scan.projection() {
                Some(p) => *p.get(col)?,
                None => col,
            };
            let s = self.stream_of(scan)?;
            if s.time_field() != Some(s.schema().field(inner).name().as_str()) {
                return None;
            }
            let wm = s.watermark();
            return Some(Arc::new(move || wm.get()));
        }
        if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
            let e = &p.expr().get(col)?.expr;
            let c = match e.downcast_ref::<CastExpr>() {
                Some(cast) if keeps_millis(cast, &p.input().schema()) => cast.expr(),
                _ => e,
            };
            let c = c.downcast_ref::<Column>()?;
            return self.lower_bound(p.input(), c.index());
        }
        if let Some(f) = plan.downcast_ref::<FilterExec>() {
            let inner = match f.projection() {
                Some(p) => *p.get(col)?,
                None => col,
            };
            return self.lower_bound(f.input(), inner);
        }
        if let Some(j) = plan.downcast_ref::<IntervalJoinExec>() {
            return j.lower_bound(col);
        }
        if let Some(w) = plan.downcast_ref::<crate::operators::window::WindowAggregateExec>() {
            return w.lower_bound(col);
        }
        if let Some(r) = plan.downcast_ref::<crate::operators::rowwindow::RowWindowExec>() {
            return r.lower_bound(col);
        }
        if let Some(j) = plan.downcast_ref::<HashJoinExec>() {
            // a stream joined with a table: the stream's side
            let inner = match &j.projection {
                Some(p) => *p.get(col)?,
                None => col,
            };
            let nl = j.left().schema().fields().len();
            return if inner < nl {
                self.lower_bound(j.left(), inner)
            } else {
                self.lower_bound(j.right(), inner - nl)
            };
        }
        if plan.downcast_ref::<CoalescePartitionsExec>().is_some()
            || plan.downcast_ref::<RepartitionExec>().is_some()
            || plan.name() == "CooperativeExec"
            || plan.name() == "CoalesceBatchesExec"
        {
            return self.lower_bound(plan.children().first()?, col);
        }
        None
    }

    /// The stream a scan reads.
    fn stream_of(
        &self,
        scan: &datafusion::physical_plan::streaming::StreamingTableExec,
    ) -> Option<&Arc<crate::feed::EpochFeed>> {
        let part = scan.partitions().first()?;
        self.streams.iter().find(|s| s.owns(part.schema()))
    }

    /// The stream names under `plan`, for messages.
    fn names_under(&self, plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
        use datafusion::physical_plan::streaming::StreamingTableExec;
        let mut out = Vec::new();
        let _ = plan.apply(|p| {
            if let Some(s) = p
                .downcast_ref::<StreamingTableExec>()
                .and_then(|scan| self.stream_of(scan))
            {
                out.push(s.name().to_string());
            }
            Ok(TreeNodeRecursion::Continue)
        });
        out
    }
}

/// The parts of a join operator this rule understands.
struct JoinParts {
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    on: Vec<(Arc<dyn PhysicalExpr>, Arc<dyn PhysicalExpr>)>,
    filter: Option<JoinFilter>,
    join_type: JoinType,
    projection: Option<Vec<usize>>,
    null_equality: NullEquality,
}

fn join_parts(p: &Arc<dyn ExecutionPlan>) -> Option<JoinParts> {
    if let Some(j) = p.downcast_ref::<HashJoinExec>() {
        return Some(JoinParts {
            left: j.left().clone(),
            right: j.right().clone(),
            on: j.on().to_vec(),
            filter: j.filter().cloned(),
            join_type: *j.join_type(),
            projection: j.projection.as_ref().map(|p| p.to_vec()),
            null_equality: j.null_equality(),
        });
    }
    if let Some(j) = p.downcast_ref::<SymmetricHashJoinExec>() {
        return Some(JoinParts {
            left: j.left().clone(),
            right: j.right().clone(),
            on: j.on().to_vec(),
            filter: j.filter().cloned(),
            join_type: *j.join_type(),
            projection: None,
            null_equality: j.null_equality(),
        });
    }
    if let Some(j) = p.downcast_ref::<NestedLoopJoinExec>() {
        return Some(JoinParts {
            left: j.left().clone(),
            right: j.right().clone(),
            on: Vec::new(),
            filter: j.filter().cloned(),
            join_type: *j.join_type(),
            projection: j.projection().as_ref().map(|p| p.to_vec()),
            null_equality: NullEquality::NullEqualsNothing,
        });
    }
    None
}

/// Whether `cast` keeps a time's value in milliseconds, so that a lower
/// bound of its input bounds it too: a timestamp to another timestamp, or a
/// millisecond timestamp to BIGINT (`CAST(window_start AS BIGINT)`).
fn keeps_millis(cast: &CastExpr, input: &Schema) -> bool {
    let Ok(from) = cast.expr().data_type(input) else {
        return false;
    };
    matches!(
        (from, cast.cast_type()),
        (DataType::Timestamp(_, _), DataType::Timestamp(_, _))
            | (
                DataType::Timestamp(TimeUnit::Millisecond, _),
                DataType::Int64
            )
    )
}

/// `column ± offset` in milliseconds: the side and index of the column.
fn linear(e: &Arc<dyn PhysicalExpr>, cols: &[ColumnIndex]) -> Option<(JoinSide, usize, i64)> {
    if let Some(c) = e.downcast_ref::<Column>() {
        let ci = cols.get(c.index())?;
        return Some((ci.side, ci.index, 0));
    }
    if let Some(c) = e.downcast_ref::<CastExpr>() {
        return linear(c.expr(), cols);
    }
    let b = e.downcast_ref::<BinaryExpr>()?;
    let sign = match b.op() {
        Operator::Plus => 1,
        Operator::Minus => -1,
        _ => return None,
    };
    let (side, idx, off) = linear(b.left(), cols)?;
    let lit = b.right().downcast_ref::<Literal>()?;
    Some((
        side,
        idx,
        off + sign * crate::time::fixed_millis(lit.value())?,
    ))
}

/// The time bounds of a join filter: for each pair of a left and a right
/// column that the filter bounds both ways, `lo <= right - left <= hi` in
/// milliseconds (the tightest of its conjuncts). Several pairs may be
/// bounded (`B.ts BETWEEN A.ts AND A.expires` bounds (ts, ts) from below and
/// (expires, ts) from above); which one is the streams' event times is the
/// caller's to tell.
fn time_bounds(filter: &JoinFilter) -> Vec<(usize, usize, i64, i64)> {
    let cols = filter.column_indices();
    let mut conjuncts = vec![filter.expression().clone()];
    // (left column, right column), lowest and highest `right - left`
    type Bound = ((usize, usize), Option<i64>, Option<i64>);
    let mut pairs: Vec<Bound> = Vec::new();
    while let Some(e) = conjuncts.pop() {
        let Some(b) = e.downcast_ref::<BinaryExpr>() else {
            continue;
        };
        if *b.op() == Operator::And {
            conjuncts.push(b.left().clone());
            conjuncts.push(b.right().clone());
            continue;
        }
        let (Some(a), Some(c)) = (linear(b.left(), cols), linear(b.right(), cols)) else {
            continue;
        };
        // a.col + a.off OP c.col + c.off, as right - left OP v
        let (l, r, v, op) = match (a.0, c.0) {
            (JoinSide::Left, JoinSide::Right) => (a.1, c.1, a.2 - c.2, b.op().swap()),
            (JoinSide::Right, JoinSide::Left) => (c.1, a.1, c.2 - a.2, Some(*b.op())),
            _ => continue,
        };
        let Some(op) = op else { continue };
        let at = match pairs.iter().position(|(p, _, _)| *p == (l, r)) {
            Some(i) => i,
            None => {
                pairs.push(((l, r), None, None));
                pairs.len() - 1
            }
        };
        let (_, lo, hi) = &mut pairs[at];
        let (raise_lo, lower_hi) = match op {
            Operator::Gt | Operator::GtEq => (true, false),
            Operator::Lt | Operator::LtEq => (false, true),
            Operator::Eq => (true, true),
            _ => continue,
        };
        if raise_lo {
            *lo = Some(lo.map_or(v, |x| x.max(v)));
        }
        if lower_hi {
            *hi = Some(hi.map_or(v, |x| x.min(v)));
        }
    }
    pairs
        .into_iter()
        .filter_map(|((l, r), lo, hi)| Some((l, r, lo?, hi?)))
        .collect()
}

impl PhysicalOptimizerRule for StreamingJoins {
    /// One bottom-up pass over the plan for joins and windows: each sees
    /// its inputs already as streaming operators, so a join over windows
    /// and a window over a join or a window trace their time bounds.
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|p| {
            let t = self.rewrite_join(p)?;
            if t.transformed {
                return Ok(t);
            }
            let trace = |plan: &Arc<dyn ExecutionPlan>, col| self.lower_bound(plan, col);
            let t = self.windows.rewrite(t.data, &trace)?;
            if t.transformed {
                return Ok(t);
            }
            self.row_windows.rewrite(t.data, &trace)
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "streaming_operators"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

impl StreamingJoins {
    /// Replaces `p` if it is a join of two streams.
    fn rewrite_join(
        &self,
        p: Arc<dyn ExecutionPlan>,
    ) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
        {
            let Some(parts) = join_parts(&p) else {
                return Ok(Transformed::no(p));
            };
            if !parts.left.boundedness().is_unbounded() || !parts.right.boundedness().is_unbounded()
            {
                return Ok(Transformed::no(p));
            }
            let (ln, rn) = (
                self.names_under(&parts.left).join(" ⋈ "),
                self.names_under(&parts.right).join(" ⋈ "),
            );
            if matches!(parts.join_type, JoinType::LeftMark | JoinType::RightMark) {
                return Err(DataFusionError::Plan(format!(
                    "the {} join of the streams {ln} and {rn} (an IN / EXISTS subquery inside an OR) is not supported on streams; write it as a JOIN",
                    parts.join_type
                )));
            }
            let hint = format!(
                "joining the streams {ln} and {rn} needs a time bound on their event-time columns, or its state grows forever: add WITHIN INTERVAL '5' MINUTES after the joins, or AND {rn}.ts BETWEEN {ln}.ts - INTERVAL '10' SECOND AND {ln}.ts + INTERVAL '10' SECOND to the ON condition (with each source's event.time.field)"
            );
            // the bound: from the filter, or an equality of time columns
            // among the keys (a join of windows on their start)
            let mut candidates: Vec<(usize, usize, i64, i64)> =
                parts.filter.as_ref().map(time_bounds).unwrap_or_default();
            for (l, r) in &parts.on {
                if let (Some(l), Some(r)) = (l.downcast_ref::<Column>(), r.downcast_ref::<Column>())
                {
                    candidates.push((l.index(), r.index(), 0, 0));
                }
            }
            let found = candidates.iter().find_map(|&(lt, rt, lo, hi)| {
                Some((
                    lt,
                    rt,
                    lo,
                    hi,
                    self.lower_bound(&parts.left, lt)?,
                    self.lower_bound(&parts.right, rt)?,
                ))
            });
            let Some((lt, rt, lo, hi, lb_left, lb_right)) = found else {
                return Err(DataFusionError::Plan(match candidates.first() {
                    None => hint,
                    Some(&(lt, rt, _, _)) => format!(
                        "{hint}; the bound found compares columns that are not the streams' declared event times ({} and {})",
                        parts.left.schema().field(lt).name(),
                        parts.right.schema().field(rt).name()
                    ),
                }));
            };
            if lo > hi {
                return Err(DataFusionError::Plan(format!(
                    "the time bound of the join of {ln} and {rn} is empty ({lo} ms > {hi} ms)"
                )));
            }
            self.job_watermark.hold_back(hi.max(-lo).max(0));
            let exec = IntervalJoinExec::try_new(
                parts,
                lt,
                rt,
                lo,
                hi,
                lb_left,
                lb_right,
                self.metrics.clone(),
            )?;
            let desc = datafusion::physical_plan::displayable(&exec as &dyn ExecutionPlan)
                .one_line()
                .to_string();
            for side in [JoinSide::Left, JoinSide::Right] {
                self.states.register(
                    format!("{} [{side:?} side]", desc.trim()),
                    Arc::new(SideState {
                        state: exec.state.clone(),
                        side,
                        schema: exec.marked_schema(side),
                    }),
                );
            }
            Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>))
        }
    }
}

/// Both sides' kept rows.
struct JoinState {
    left: Kept,
    right: Kept,
    /// Rows and bytes last added to the metrics.
    published: (u64, u64),
}

/// One side of a join's state, for checkpoints.
struct SideState {
    state: Arc<Mutex<JoinState>>,
    side: JoinSide,
    schema: SchemaRef,
}

impl crate::operators::state::OperatorState for SideState {
    fn snapshot(&self) -> Result<RecordBatch> {
        let st = self.state.lock().expect("join state");
        let k = if self.side == JoinSide::Left {
            &st.left
        } else {
            &st.right
        };
        let (rows, matched) = k.snapshot()?;
        let mut cols = rows.columns().to_vec();
        cols.push(Arc::new(BooleanArray::from(matched)));
        Ok(RecordBatch::try_new(self.schema.clone(), cols)?)
    }

    fn restore(&self, batch: RecordBatch) -> Result<()> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(DataFusionError::Plan(
                "the checkpointed join state does not match the query's inputs; the query changed: move the state directory away to start from scratch".into(),
            ));
        }
        let n = batch.num_columns() - 1;
        let matched: Vec<bool> = batch
            .column(n)
            .as_boolean()
            .iter()
            .map(|b| b.unwrap_or(false))
            .collect();
        let rows = RecordBatch::try_new(
            Arc::new(Schema::new(self.schema.fields()[..n].to_vec())),
            batch.columns()[..n].to_vec(),
        )?;
        let mut st = self.state.lock().expect("join state");
        let k = if self.side == JoinSide::Left {
            &mut st.left
        } else {
            &mut st.right
        };
        k.restore(rows, matched)
    }
}

/// A join of two streams bounded in time (see the module docs).
pub struct IntervalJoinExec {
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    on: Vec<(Arc<dyn PhysicalExpr>, Arc<dyn PhysicalExpr>)>,
    filter: Option<JoinFilter>,
    join_type: JoinType,
    null_equality: NullEquality,
    /// Over the join's full output (left then right columns).
    projection: Option<Vec<usize>>,
    /// Left columns then right columns, nullable as the join type says.
    full_schema: SchemaRef,
    left_time: usize,
    right_time: usize,
    lo: i64,
    hi: i64,
    lb_left: LowerBound,
    lb_right: LowerBound,
    state: Arc<Mutex<JoinState>>,
    metrics: Arc<crate::operators::metrics::WindowMetrics>,
    /// `state_bytes`, shown by `ExecutionPlan::metrics`.
    plan_metrics: ExecutionPlanMetricsSet,
    /// The state's reservation of the memory pool.
    memory: Arc<crate::operators::memory::StateMemory>,
    props: Arc<PlanProperties>,
}

impl fmt::Debug for IntervalJoinExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IntervalJoinExec({} {}..{} ms)",
            self.join_type, self.lo, self.hi
        )
    }
}

/// The join filter with each `timestamp ± fixed interval` as `timestamp ±
/// duration`: the same values, added over whole arrays instead of one
/// calendar step per row (the calendar arithmetic was a sixth of an interval
/// join's time). A day is 24 hours only without a time zone or in UTC, so
/// an interval with days is kept as it is on zoned timestamps.
fn with_fixed_intervals(filter: JoinFilter) -> Result<JoinFilter> {
    let schema = filter.schema().clone();
    let expr = filter.expression().clone().transform_up(|e| {
        let Some(b) = e.downcast_ref::<BinaryExpr>() else {
            return Ok(Transformed::no(e));
        };
        let Some(lit) = b.right().downcast_ref::<Literal>() else {
            return Ok(Transformed::no(e));
        };
        let duration = match b.left().data_type(&schema)? {
            DataType::Timestamp(unit, tz) if matches!(b.op(), Operator::Plus | Operator::Minus) => {
                let utc = tz
                    .as_deref()
                    .is_none_or(|z| matches!(z, "UTC" | "+00:00" | "Z"));
                duration_of(lit.value(), unit, utc)
            }
            _ => None,
        };
        Ok(match duration {
            Some(d) => Transformed::yes(Arc::new(BinaryExpr::new(
                b.left().clone(),
                *b.op(),
                Arc::new(Literal::new(d)),
            )) as Arc<dyn PhysicalExpr>),
            None => Transformed::no(e),
        })
    })?;
    Ok(JoinFilter::new(
        expr.data,
        filter.column_indices().to_vec(),
        schema,
    ))
}

/// A month-free interval as a duration of `unit` (`None` when it has days
/// and `days_fixed` is false, or does not divide into `unit`).
fn duration_of(v: &ScalarValue, unit: TimeUnit, days_fixed: bool) -> Option<ScalarValue> {
    let (days, nanos) = match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            (i.days as i64, i.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(i)) => (i.days as i64, i.milliseconds as i64 * 1_000_000),
        _ => return None,
    };
    if days != 0 && !days_fixed {
        return None;
    }
    let nanos = days.checked_mul(86_400_000_000_000)?.checked_add(nanos)?;
    let per = match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    };
    if nanos % per != 0 {
        return None;
    }
    let v = Some(nanos / per);
    Some(match unit {
        TimeUnit::Second => ScalarValue::DurationSecond(v),
        TimeUnit::Millisecond => ScalarValue::DurationMillisecond(v),
        TimeUnit::Microsecond => ScalarValue::DurationMicrosecond(v),
        TimeUnit::Nanosecond => ScalarValue::DurationNanosecond(v),
    })
}

/// `schema` with one more column at the end.
fn with_column(schema: &SchemaRef, name: &str, ty: DataType) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(name, ty, false));
    Arc::new(Schema::new(fields))
}

impl IntervalJoinExec {
    #[allow(clippy::too_many_arguments)]
    fn try_new(
        parts: JoinParts,
        left_time: usize,
        right_time: usize,
        lo: i64,
        hi: i64,
        lb_left: LowerBound,
        lb_right: LowerBound,
        metrics: Arc<crate::operators::metrics::WindowMetrics>,
    ) -> Result<Self> {
        let nullable_left = matches!(parts.join_type, JoinType::Right | JoinType::Full);
        let nullable_right = matches!(parts.join_type, JoinType::Left | JoinType::Full);
        let mut fields: Vec<Field> = Vec::new();
        for f in parts.left.schema().fields() {
            fields.push(
                f.as_ref()
                    .clone()
                    .with_nullable(f.is_nullable() || nullable_left),
            );
        }
        for f in parts.right.schema().fields() {
            fields.push(
                f.as_ref()
                    .clone()
                    .with_nullable(f.is_nullable() || nullable_right),
            );
        }
        let full_schema = Arc::new(Schema::new(fields));
        // semi and anti joins give one side's rows
        let out_full = match parts.join_type {
            JoinType::LeftSemi | JoinType::LeftAnti => parts.left.schema(),
            JoinType::RightSemi | JoinType::RightAnti => parts.right.schema(),
            _ => full_schema.clone(),
        };
        let out_schema = match &parts.projection {
            Some(p) => Arc::new(out_full.project(p)?),
            None => out_full,
        };
        let props = Arc::new(PlanProperties::new(
            datafusion::physical_expr::EquivalenceProperties::new(out_schema),
            datafusion::physical_plan::Partitioning::UnknownPartitioning(1),
            datafusion::physical_plan::execution_plan::EmissionType::Incremental,
            datafusion::physical_plan::execution_plan::Boundedness::Unbounded {
                requires_infinite_memory: false,
            },
        ));
        let state = Arc::new(Mutex::new(JoinState {
            left: Kept::new(
                parts.left.schema(),
                parts.on.iter().map(|(l, _)| l.clone()).collect(),
                left_time,
                parts.null_equality,
            ),
            right: Kept::new(
                parts.right.schema(),
                parts.on.iter().map(|(_, r)| r.clone()).collect(),
                right_time,
                parts.null_equality,
            ),
            published: (0, 0),
        }));
        let plan_metrics = ExecutionPlanMetricsSet::new();
        Ok(Self {
            left: parts.left,
            right: parts.right,
            on: parts.on,
            filter: parts.filter.map(with_fixed_intervals).transpose()?,
            join_type: parts.join_type,
            null_equality: parts.null_equality,
            projection: parts.projection,
            full_schema,
            left_time,
            right_time,
            lo,
            hi,
            lb_left,
            lb_right,
            state,
            metrics,
            memory: crate::operators::memory::StateMemory::new(
                "IntervalJoinExec",
                0,
                &plan_metrics,
            ),
            plan_metrics,
            props,
        })
    }

    /// The same operator over the same state.
    fn cloned(&self) -> Self {
        Self {
            left: self.left.clone(),
            right: self.right.clone(),
            on: self.on.clone(),
            filter: self.filter.clone(),
            join_type: self.join_type,
            null_equality: self.null_equality,
            projection: self.projection.clone(),
            full_schema: self.full_schema.clone(),
            left_time: self.left_time,
            right_time: self.right_time,
            lo: self.lo,
            hi: self.hi,
            lb_left: self.lb_left.clone(),
            lb_right: self.lb_right.clone(),
            state: self.state.clone(),
            metrics: self.metrics.clone(),
            plan_metrics: self.plan_metrics.clone(),
            memory: self.memory.clone(),
            props: self.props.clone(),
        }
    }

    /// The schema of one side's state in checkpoints.
    fn marked_schema(&self, side: JoinSide) -> SchemaRef {
        let s = if side == JoinSide::Left {
            self.left.schema()
        } else {
            self.right.schema()
        };
        with_column(&s, MATCHED, DataType::Boolean)
    }

    /// The lowest event time output column `col` can still carry: a left
    /// time column's rows to come pair a new left row (at or after the left
    /// bound) or a new right row with a kept left row at most `hi` earlier;
    /// the same for the right.
    fn lower_bound(&self, col: usize) -> Option<LowerBound> {
        let inner = match &self.projection {
            Some(p) => *p.get(col)?,
            None => col,
        };
        let nl = self.left.schema().fields().len();
        let (lb_l, lb_r) = (self.lb_left.clone(), self.lb_right.clone());
        let (lo, hi) = (self.lo, self.hi);
        if inner == self.left_time {
            Some(Arc::new(move || lb_l().min(shift(lb_r(), -hi))))
        } else if inner == nl + self.right_time {
            Some(Arc::new(move || lb_r().min(shift(lb_l(), lo))))
        } else {
            None
        }
    }

    /// Rows of one side that never matched, padded with nulls.
    fn padded(&self, rows: &RecordBatch, side: JoinSide) -> Result<RecordBatch> {
        let other = if side == JoinSide::Left {
            self.right.schema()
        } else {
            self.left.schema()
        };
        let nulls: Vec<ArrayRef> = other
            .fields()
            .iter()
            .map(|f| arrow::array::new_null_array(f.data_type(), rows.num_rows()))
            .collect();
        let cols = if side == JoinSide::Left {
            rows.columns().iter().cloned().chain(nulls).collect()
        } else {
            nulls
                .into_iter()
                .chain(rows.columns().iter().cloned())
                .collect()
        };
        Ok(RecordBatch::try_new(self.full_schema.clone(), cols)?)
    }

    fn project(&self, b: RecordBatch) -> Result<RecordBatch> {
        Ok(match &self.projection {
            Some(p) => b.project(p)?,
            None => b,
        })
    }

    /// One epoch: the new rows of both sides in, the matches (and the
    /// outer rows the watermark has settled) out. Phases: the new rows
    /// added to their side's state, the new left rows matched with all
    /// right rows and the new right rows with the older left rows (so every
    /// pair is found once), semi joins' first matches, the rows that can no
    /// longer match dropped (outer and anti joins emit those that never
    /// matched), the state compacted and its size published.
    fn epoch(
        &self,
        new_left: RecordBatch,
        new_right: RecordBatch,
        ctx: &TaskContext,
    ) -> Result<Vec<RecordBatch>> {
        let mut guard = self.state.lock().expect("join state");
        let st = &mut *guard;
        let (l_from, r_from) = (st.left.end(), st.right.end());
        st.left.push(new_left, None)?;
        st.right.push(new_right, None)?;
        let mut out = Vec::new();
        let mut firsts = (Vec::new(), Vec::new());
        let (l, r) = st.right.candidates(&st.left, l_from, u64::MAX);
        self.match_pairs(st, &l, &r, &mut firsts, &mut out)?;
        let (r, l) = st.left.candidates(&st.right, r_from, l_from);
        self.match_pairs(st, &l, &r, &mut firsts, &mut out)?;
        out.extend(self.first_matches(st, &firsts)?);
        let settled_l = st.left.expire((self.lb_right)(), self.hi);
        let settled_r = st.right.expire((self.lb_left)(), -self.lo);
        out.extend(self.settled(st, &settled_l, &settled_r)?);
        st.left.compact()?;
        st.right.compact()?;
        self.publish(st, ctx)?;
        Ok(out)
    }

    /// Of the candidate pairs (left ids `left`, right ids `right`), those
    /// whose keys are equal and that pass the join's filter: both rows
    /// marked matched (a semi join's first matches noted in `firsts`), the
    /// joined rows added to `out` for the joins that give pairs.
    fn match_pairs(
        &self,
        st: &mut JoinState,
        left: &[u64],
        right: &[u64],
        firsts: &mut (Vec<u64>, Vec<u64>),
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let pairs = matches!(
            self.join_type,
            JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
        );
        let slices = left
            .chunks(PAIRS_PER_BATCH)
            .zip(right.chunks(PAIRS_PER_BATCH));
        for (l, r) in slices {
            let mut ok = st.left.keys_equal(l, &st.right, r)?;
            if let Some(f) = &self.filter {
                let cols = f
                    .column_indices()
                    .iter()
                    .map(|c| match c.side {
                        JoinSide::Left => st.left.gather_column(l, c.index),
                        _ => st.right.gather_column(r, c.index),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let b = kept::batch_of(f.schema().clone(), cols, l.len())?;
                let passed = f.expression().evaluate(&b)?.into_array(l.len())?;
                ok = arrow::compute::and(&ok, passed.as_boolean())?;
            }
            let (l, r): (Vec<u64>, Vec<u64>) = l
                .iter()
                .zip(r)
                .zip(ok.iter())
                .filter(|(_, ok)| *ok == Some(true))
                .map(|((l, r), _)| (*l, *r))
                .unzip();
            for &id in &l {
                if st.left.mark(id) && self.join_type == JoinType::LeftSemi {
                    firsts.0.push(id);
                }
            }
            for &id in &r {
                if st.right.mark(id) && self.join_type == JoinType::RightSemi {
                    firsts.1.push(id);
                }
            }
            if pairs && !l.is_empty() {
                let mut cols = st.left.gather(&l)?.columns().to_vec();
                cols.extend(st.right.gather(&r)?.columns().iter().cloned());
                out.push(self.project(RecordBatch::try_new(self.full_schema.clone(), cols)?)?);
            }
        }
        Ok(())
    }

    /// A semi join's rows that matched for the first time this epoch.
    fn first_matches(
        &self,
        st: &JoinState,
        (left, right): &(Vec<u64>, Vec<u64>),
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for (kept, ids) in [(&st.left, left), (&st.right, right)] {
            if !ids.is_empty() {
                out.push(self.project(kept.gather(ids)?)?);
            }
        }
        Ok(out)
    }

    /// Rows that never matched, once no match can come: outer joins pad
    /// them with nulls, anti joins give them as they are.
    fn settled(&self, st: &JoinState, left: &[u64], right: &[u64]) -> Result<Vec<RecordBatch>> {
        let outer_left = matches!(self.join_type, JoinType::Left | JoinType::Full);
        let outer_right = matches!(self.join_type, JoinType::Right | JoinType::Full);
        let mut out = Vec::new();
        for (kept, ids, side, outer, anti) in [
            (
                &st.left,
                left,
                JoinSide::Left,
                outer_left,
                JoinType::LeftAnti,
            ),
            (
                &st.right,
                right,
                JoinSide::Right,
                outer_right,
                JoinType::RightAnti,
            ),
        ] {
            let anti = self.join_type == anti;
            if (!outer && !anti) || ids.is_empty() {
                continue;
            }
            let r = kept.gather(ids)?;
            out.push(self.project(if anti { r } else { self.padded(&r, side)? })?);
        }
        Ok(out)
    }

    /// The state's rows and bytes to the metrics and the memory
    /// reservation.
    fn publish(&self, st: &mut JoinState, ctx: &TaskContext) -> Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let rows = (st.left.live() + st.right.live()) as u64;
        let bytes = st.left.bytes() + st.right.bytes();
        self.metrics
            .join_rows
            .fetch_add(rows.wrapping_sub(st.published.0), Relaxed);
        self.metrics
            .bytes
            .fetch_add((bytes as u64).wrapping_sub(st.published.1), Relaxed);
        st.published = (rows, bytes as u64);
        self.memory.resize(ctx, bytes)
    }
}

impl DisplayAs for IntervalJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "IntervalJoinExec: {} join of two streams, right.{} - left.{} in [{}, {}], rows kept until the watermark passes",
            self.join_type,
            self.right.schema().field(self.right_time).name(),
            self.left.schema().field(self.left_time).name(),
            crate::time::show_duration(self.lo),
            crate::time::show_duration(self.hi),
        )
    }
}

/// Reads a whole epoch of one input, its partitions at once (each in a
/// task of its own), in partition order.
async fn drain(plan: &Arc<dyn ExecutionPlan>, ctx: Arc<TaskContext>) -> Result<RecordBatch> {
    let schema = plan.schema();
    let parts = datafusion::physical_plan::collect_partitioned(plan.clone(), ctx).await?;
    Ok(arrow::compute::concat_batches(
        &schema,
        parts.iter().flatten(),
    )?)
}

impl ExecutionPlan for IntervalJoinExec {
    fn name(&self) -> &str {
        "IntervalJoinExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.left, &self.right]
    }
    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        datafusion::physical_plan::execution_plan::apply_expression_roots(
            self.on
                .iter()
                .flat_map(|(l, r)| [l.clone(), r.clone()])
                .chain(self.filter.iter().map(|f| f.expression().clone())),
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
        let mut me = self.cloned();
        me.left = children[0].clone();
        me.right = children[1].clone();
        Ok(Arc::new(me))
    }
    fn execute(
        &self,
        _partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let me = Arc::new(self.cloned());
        let schema = self.schema();
        let out = futures::stream::once(async move {
            // both inputs read their epoch at the same time (each stops at
            // its own feed's budget)
            let (l, r) = futures::join!(
                drain(&me.left, context.clone()),
                drain(&me.right, context.clone())
            );
            me.epoch(l?, r?, &context)
        })
        .flat_map(|r| {
            futures::stream::iter(match r {
                Ok(v) => v.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, out)))
    }
}

/// `WITHIN INTERVAL d`: every JOIN of a stream whose ON condition names
/// another stream gets `AND s.ts BETWEEN o.ts - d AND o.ts + d` on their
/// event-time columns. Joins with tables are left alone.
pub fn add_within(
    query: &mut datafusion::sql::sqlparser::ast::Query,
    within: std::time::Duration,
    streams: &[Arc<crate::feed::EpochFeed>],
) -> crate::Result<()> {
    use datafusion::sql::sqlparser::ast::{
        Expr as SqlExpr, JoinConstraint, JoinOperator, SetExpr, TableFactor,
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Ok(());
    };
    let ms = within.as_millis();
    // a relation that is a stream with an event time: (alias or name as
    // written, its event-time column, the interval in that column's terms:
    // an INTERVAL for a timestamp, whole milliseconds for a number)
    let named = |f: &TableFactor| -> Option<(String, String, String)> {
        let TableFactor::Table { name, alias, .. } = f else {
            return None;
        };
        let table = name.0.last()?.as_ident()?.value.clone();
        let s = streams
            .iter()
            .find(|s| s.name().eq_ignore_ascii_case(&table))?;
        let field = s.time_field()?.to_string();
        let d = match s
            .schema()
            .field_with_name(&field)
            .map(|c| c.data_type().clone())
        {
            Ok(DataType::Timestamp(_, _)) => format!("INTERVAL '{ms} milliseconds'"),
            _ => ms.to_string(),
        };
        Some((
            alias.as_ref().map_or(table, |a| a.name.value.clone()),
            field,
            d,
        ))
    };
    for twj in &mut select.from {
        let mut seen: Vec<(String, String, String)> = named(&twj.relation).into_iter().collect();
        for join in &mut twj.joins {
            let Some(mine) = named(&join.relation) else {
                continue;
            };
            let constraint = match &mut join.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::FullOuter(c) => c,
                _ => continue,
            };
            let JoinConstraint::On(on) = constraint else {
                continue;
            };
            // the other stream this one is joined to: the first named in ON
            let mut other: Option<(String, String, String)> = None;
            let _ = datafusion::sql::sqlparser::ast::visit_expressions(&*on, |e| {
                if let SqlExpr::CompoundIdentifier(parts) = e
                    && parts.len() == 2
                    && other.is_none()
                    && !parts[0].value.eq_ignore_ascii_case(&mine.0)
                    && let Some(s) = seen
                        .iter()
                        .find(|(a, _, _)| a.eq_ignore_ascii_case(&parts[0].value))
                {
                    other = Some(s.clone());
                }
                std::ops::ControlFlow::<()>::Continue(())
            });
            seen.push(mine.clone());
            let ((me, f, _), Some((them, g, d))) = (mine, other) else {
                continue;
            };
            let cond = format!("{me}.{f} BETWEEN {them}.{g} - {d} AND {them}.{g} + {d}");
            let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
            let extra = datafusion::sql::sqlparser::parser::Parser::new(&dialect)
                .try_with_sql(&cond)
                .and_then(|mut p| p.parse_expr())
                .map_err(|e| crate::EngineError::Invalid(format!("WITHIN: {e}")))?;
            *on = SqlExpr::BinaryOp {
                left: Box::new(SqlExpr::Nested(Box::new(on.clone()))),
                op: datafusion::sql::sqlparser::ast::BinaryOperator::And,
                right: Box::new(extra),
            };
        }
        // the joins of subqueries in FROM (a chained stream's query) too
        for f in
            std::iter::once(&mut twj.relation).chain(twj.joins.iter_mut().map(|j| &mut j.relation))
        {
            if let TableFactor::Derived { subquery, .. } = f {
                add_within(subquery, within, streams)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(expr: Arc<dyn PhysicalExpr>) -> JoinFilter {
        // the filter's columns: left.lt (column 2 of the left), right.rt
        let schema = Schema::new(vec![
            Field::new("lt", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("rt", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]);
        JoinFilter::new(
            expr,
            vec![
                ColumnIndex {
                    index: 2,
                    side: JoinSide::Left,
                },
                ColumnIndex {
                    index: 0,
                    side: JoinSide::Right,
                },
            ],
            Arc::new(schema),
        )
    }

    fn col(name: &str, i: usize) -> Arc<dyn PhysicalExpr> {
        Arc::new(Column::new(name, i))
    }

    fn secs(s: i64) -> Arc<dyn PhysicalExpr> {
        Arc::new(Literal::new(ScalarValue::DurationSecond(Some(s))))
    }

    fn bin(
        l: Arc<dyn PhysicalExpr>,
        op: Operator,
        r: Arc<dyn PhysicalExpr>,
    ) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(l, op, r))
    }

    #[test]
    fn fixed_intervals_in_a_filter_become_durations_with_the_same_answers() {
        use arrow::array::TimestampMillisecondArray;
        use arrow::datatypes::IntervalMonthDayNano;
        let interval = |months, days, nanos| {
            Arc::new(Literal::new(ScalarValue::IntervalMonthDayNano(Some(
                IntervalMonthDayNano::new(months, days, nanos),
            )))) as Arc<dyn PhysicalExpr>
        };
        // rt <= lt + i, for seconds, days with millis, a month, sub-millis
        let cases = [
            (interval(0, 0, 20_000_000_000), true),
            (interval(0, 1, 2_000_000), true),
            (interval(0, 0, -3_000_000_000), true),
            (interval(1, 0, 0), false),
            (interval(0, 0, 1_500), false),
        ];
        let ts = TimestampMillisecondArray::from(vec![
            Some(0),
            Some(86_400_000),
            None,
            Some(1_700_000_000_000),
            Some(-5_000),
        ]);
        let rt = TimestampMillisecondArray::from(vec![
            Some(20_000),
            Some(172_800_001),
            Some(3),
            Some(1_700_000_019_999),
            Some(-9_000),
        ]);
        let batch = RecordBatch::try_new(
            filter(col("lt", 0)).schema().clone(),
            vec![Arc::new(ts), Arc::new(rt)],
        )
        .unwrap();
        for (i, rewritten) in cases {
            let f = filter(bin(
                col("rt", 1),
                Operator::LtEq,
                bin(col("lt", 0), Operator::Plus, i),
            ));
            let g = with_fixed_intervals(f.clone()).unwrap();
            let shown = format!("{:?}", g.expression());
            assert_eq!(shown.contains("Duration"), rewritten, "{shown}");
            assert_eq!(
                g.expression().data_type(g.schema()).unwrap(),
                DataType::Boolean
            );
            let a = f
                .expression()
                .evaluate(&batch)
                .unwrap()
                .into_array(5)
                .unwrap();
            let b = g
                .expression()
                .evaluate(&batch)
                .unwrap()
                .into_array(5)
                .unwrap();
            assert_eq!(a.as_boolean(), b.as_boolean(), "{shown}");
        }
        // days on a zoned timestamp stay calendar days
        let zoned = Arc::new(Schema::new(vec![Field::new(
            "lt",
            DataType::Timestamp(TimeUnit::Millisecond, Some("Europe/Paris".into())),
            true,
        )]));
        let f = JoinFilter::new(
            bin(col("lt", 0), Operator::Plus, interval(0, 1, 0)),
            vec![ColumnIndex {
                index: 0,
                side: JoinSide::Left,
            }],
            zoned,
        );
        let g = with_fixed_intervals(f).unwrap();
        assert!(!format!("{:?}", g.expression()).contains("Duration"));
    }

    #[test]
    fn the_time_bound_of_a_between_condition_is_read_from_either_side() {
        // right.rt BETWEEN left.lt - 5s AND left.lt + 10s, written both ways
        let ge = bin(
            col("rt", 1),
            Operator::GtEq,
            bin(col("lt", 0), Operator::Minus, secs(5)),
        );
        let le = bin(
            col("lt", 0),
            Operator::GtEq,
            bin(col("rt", 1), Operator::Minus, secs(10)),
        );
        let f = filter(bin(ge, Operator::And, le));
        assert_eq!(time_bounds(&f), vec![(2, 0, -5_000, 10_000)]);
        // an equality bounds both ways; one side alone is no bound
        let eq = bin(
            col("rt", 1),
            Operator::Eq,
            bin(col("lt", 0), Operator::Plus, secs(1)),
        );
        assert_eq!(time_bounds(&filter(eq)), vec![(2, 0, 1_000, 1_000)]);
        let only_lo = bin(col("rt", 1), Operator::Gt, col("lt", 0));
        assert_eq!(time_bounds(&filter(only_lo)), vec![]);
        // two bounds on one side's column and the other's: the tightest
        let a = bin(
            col("rt", 1),
            Operator::LtEq,
            bin(col("lt", 0), Operator::Plus, secs(10)),
        );
        let b = bin(
            col("rt", 1),
            Operator::LtEq,
            bin(col("lt", 0), Operator::Plus, secs(3)),
        );
        let c = bin(col("rt", 1), Operator::GtEq, col("lt", 0));
        let f = filter(bin(bin(a, Operator::And, b), Operator::And, c));
        assert_eq!(time_bounds(&f), vec![(2, 0, 0, 3_000)]);
    }

    #[test]
    fn a_bound_on_another_column_does_not_hide_the_time_bound() {
        // rt <= le (an auction's expiry), then rt BETWEEN lt AND lt + 1 day:
        // the (lt, rt) pair is bounded both ways whatever the order
        let ts = || DataType::Timestamp(TimeUnit::Millisecond, None);
        let schema = Schema::new(vec![
            Field::new("lt", ts(), true),
            Field::new("rt", ts(), true),
            Field::new("le", ts(), true),
        ]);
        let side = |index, side| ColumnIndex { index, side };
        let day = || Arc::new(Literal::new(ScalarValue::DurationSecond(Some(86_400)))) as _;
        let to_expiry = bin(col("rt", 1), Operator::LtEq, col("le", 2));
        let from = bin(col("rt", 1), Operator::GtEq, col("lt", 0));
        let within = bin(
            col("rt", 1),
            Operator::LtEq,
            bin(col("lt", 0), Operator::Plus, day()),
        );
        for expr in [
            bin(
                bin(to_expiry.clone(), Operator::And, from.clone()),
                Operator::And,
                within.clone(),
            ),
            bin(within, Operator::And, bin(from, Operator::And, to_expiry)),
        ] {
            let f = JoinFilter::new(
                expr,
                vec![
                    side(2, JoinSide::Left),
                    side(0, JoinSide::Right),
                    side(3, JoinSide::Left),
                ],
                Arc::new(schema.clone()),
            );
            assert_eq!(time_bounds(&f), vec![(2, 0, 0, 86_400_000)]);
        }
    }
}
