//! Row-window functions on streams: `LAG(x, n) OVER (PARTITION BY k ORDER
//! BY ts)` over an unbounded input.
//!
//! Where it sits: in place of DataFusion's window operator (and the sort
//! under it) over the driving source. Every epoch, the rows of the epoch are
//! put after the last `n` rows of each key from earlier epochs (the
//! history), DataFusion's own window operator runs on that, sorted as the
//! OVER clause asks, and only the epoch's rows go on; the history is then
//! cut to the last `n` rows per key, so state stays bounded by the keys.
//! Functions that need every earlier row (ROW_NUMBER, running SUM) or later
//! rows (LEAD) are refused on a stream with a clear error.

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::config::ConfigOptions;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::{LexOrdering, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use futures::StreamExt;

const HISTORY: &str = "__velo_history";

/// Whether every window function of `plan` (a `Window` node) can run on a
/// stream: LAG with a constant offset.
pub fn is_streamable(plan: &LogicalPlan) -> bool {
    let LogicalPlan::Window(w) = plan else {
        return false;
    };
    w.window_expr.iter().all(|e| {
        e.schema_name()
            .to_string()
            .to_ascii_lowercase()
            .starts_with("lag(")
    })
}

/// The offset of a `lag(x, n)` window expression, from its name.
fn lag_offset(name: &str) -> Option<usize> {
    let l = name.to_ascii_lowercase();
    if !l.starts_with("lag(") {
        return None;
    }
    // `lag(t.x,Int64(3))` or `lag(t.x)`
    let args = &l[4..l.find(')').unwrap_or(l.len())];
    match args.split_once(",int64(") {
        Some((_, n)) => n.trim_end_matches(')').parse().ok(),
        None => Some(1),
    }
}

/// The physical optimizer rule that puts [`RowWindowExec`] in place of a
/// window operator over an unbounded input.
#[derive(Debug, Default)]
pub struct StreamingRowWindows {
    states: Arc<crate::window::WindowStates>,
}

impl StreamingRowWindows {
    /// A rule whose operators register their history in `states`
    /// (checkpoints).
    pub fn new(states: Arc<crate::window::WindowStates>) -> Self {
        Self { states }
    }
}

/// The history of a [`RowWindowExec`]: the last rows of every key.
struct History {
    schema: SchemaRef,
    rows: Arc<Mutex<Option<RecordBatch>>>,
}

impl crate::window::OperatorState for History {
    fn snapshot(&self) -> Result<RecordBatch> {
        Ok(self
            .rows
            .lock()
            .expect("history")
            .clone()
            .unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone())))
    }
    fn restore(&self, batch: RecordBatch) -> Result<()> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(DataFusionError::Plan(
                "the checkpointed LAG history does not match the query's input; the query changed: move the state directory away to start from scratch".into(),
            ));
        }
        *self.rows.lock().expect("history") = (batch.num_rows() > 0).then_some(batch);
        Ok(())
    }
}

impl PhysicalOptimizerRule for StreamingRowWindows {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_down(|p| {
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
            let mut keep = 0;
            for e in &exprs {
                match lag_offset(e.name()) {
                    Some(n) => keep = keep.max(n),
                    None => {
                        return Err(DataFusionError::Plan(format!(
                            "{} over a stream: only LAG(x, n) OVER (PARTITION BY ... ORDER BY ...) runs on unbounded input (it needs the last n rows of a key); ROW_NUMBER, RANK, LEAD and running aggregates need all earlier or later rows: use a window (GROUP BY TUMBLE ...) or a bounded input",
                            e.name()
                        )));
                    }
                }
            }
            let Some(sort) = child.downcast_ref::<SortExec>() else {
                return Err(DataFusionError::Plan(
                    "LAG over a stream needs ORDER BY in its OVER clause".into(),
                ));
            };
            let partition_by = exprs
                .first()
                .map(|e| e.partition_by().to_vec())
                .unwrap_or_default();
            let exec = RowWindowExec::try_new(
                p.clone(),
                sort.expr().clone(),
                sort.input().clone(),
                partition_by,
                keep.min(100_000),
            )?;
            self.states.register(Arc::new(History {
                schema: exec.marked.clone(),
                rows: exec.history.clone(),
            }));
            Ok(Transformed::new(
                Arc::new(exec),
                true,
                TreeNodeRecursion::Jump,
            ))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "streaming_row_windows"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// LAG on a stream (see the module docs).
pub struct RowWindowExec {
    /// DataFusion's window operator, run every epoch on history + epoch.
    window: Arc<dyn ExecutionPlan>,
    sort: LexOrdering,
    input: Arc<dyn ExecutionPlan>,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    keep: usize,
    /// Input schema with the history marker.
    marked: SchemaRef,
    history: Arc<Mutex<Option<RecordBatch>>>,
    props: Arc<PlanProperties>,
}

impl fmt::Debug for RowWindowExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RowWindowExec(keep {})", self.keep)
    }
}

impl RowWindowExec {
    fn try_new(
        window: Arc<dyn ExecutionPlan>,
        sort: LexOrdering,
        input: Arc<dyn ExecutionPlan>,
        partition_by: Vec<Arc<dyn PhysicalExpr>>,
        keep: usize,
    ) -> Result<Self> {
        let mut fields: Vec<Field> = input
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(HISTORY, DataType::Boolean, false));
        // emits every epoch, holds a bounded history
        let props = Arc::new(PlanProperties::new(
            datafusion::physical_expr::EquivalenceProperties::new(window.schema()),
            datafusion::physical_plan::Partitioning::UnknownPartitioning(1),
            datafusion::physical_plan::execution_plan::EmissionType::Incremental,
            datafusion::physical_plan::execution_plan::Boundedness::Unbounded {
                requires_infinite_memory: false,
            },
        ));
        Ok(Self {
            window,
            sort,
            input,
            partition_by,
            keep,
            marked: Arc::new(Schema::new(fields)),
            history: Arc::new(Mutex::new(None)),
            props,
        })
    }
}

impl DisplayAs for RowWindowExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "RowWindowExec: each epoch after the last {} row(s) of every key, over {}",
            self.keep,
            self.window.name()
        )
    }
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
            self.partition_by.iter().cloned(),
            f,
        )
    }
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self {
            window: self.window.clone(),
            sort: self.sort.clone(),
            input: children[0].clone(),
            partition_by: self.partition_by.clone(),
            keep: self.keep,
            marked: self.marked.clone(),
            history: self.history.clone(),
            props: self.props.clone(),
        }))
    }
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let mut input = self.input.execute(partition, context.clone())?;
        let schema = self.window.schema();
        let (window, sort, marked_schema, history, partition_by, keep) = (
            self.window.clone(),
            self.sort.clone(),
            self.marked.clone(),
            self.history.clone(),
            self.partition_by.clone(),
            self.keep,
        );
        let out_schema = schema.clone();
        let out = futures::stream::once(async move {
            let mut parts: Vec<RecordBatch> = Vec::new();
            while let Some(b) = input.next().await {
                parts.push(marked(&b?, &marked_schema, false)?);
            }
            if parts.iter().all(|b| b.num_rows() == 0) {
                return Ok::<_, DataFusionError>(None);
            }
            let mut all = Vec::new();
            if let Some(h) = history.lock().expect("history").take() {
                all.push(h);
            }
            all.extend(parts);
            let data = arrow::compute::concat_batches(&marked_schema, &all)?;
            let source = datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
                &[vec![data]],
                marked_schema.clone(),
                None,
            )?;
            let sorted: Arc<dyn ExecutionPlan> = Arc::new(SortExec::new(sort, source));
            use datafusion::physical_plan::execution_plan::{
                ChildrenPropertiesMode, ReplaceChildrenOptions,
            };
            // the marker column changes the schema: properties are recomputed
            let run = window.replace_children(
                vec![sorted],
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )?;
            let done = datafusion::physical_plan::collect(run, context).await?;
            let done = arrow::compute::concat_batches(&done[0].schema(), &done)?;
            let n_in = marked_schema.fields().len() - 1;
            // the next history: the last `keep` rows of every key, in order
            let keys: Vec<ArrayRef> = partition_by
                .iter()
                .map(|e| e.evaluate(&done)?.into_array(done.num_rows()))
                .collect::<Result<_>>()?;
            let mut tail: Vec<u32> = Vec::new();
            if keys.is_empty() {
                let n = done.num_rows();
                tail.extend((n.saturating_sub(keep)..n).map(|i| i as u32));
            } else {
                let conv = arrow::row::RowConverter::new(
                    keys.iter()
                        .map(|k| arrow::row::SortField::new(k.data_type().clone()))
                        .collect(),
                )?;
                let rows = conv.convert_columns(&keys)?;
                let n = done.num_rows();
                let mut end = n;
                while end > 0 {
                    let mut start = end - 1;
                    while start > 0 && rows.row(start - 1) == rows.row(end - 1) {
                        start -= 1;
                    }
                    tail.extend((end.saturating_sub(keep).max(start)..end).map(|i| i as u32));
                    end = start;
                }
                tail.sort_unstable();
            }
            let input_cols: Vec<ArrayRef> = done.columns()[..n_in].to_vec();
            let kept = RecordBatch::try_new(
                Arc::new(Schema::new(marked_schema.fields()[..n_in].to_vec())),
                input_cols,
            )?;
            let kept = arrow::compute::take_record_batch(&kept, &UInt32Array::from(tail))?;
            *history.lock().expect("history") = Some(marked(&kept, &marked_schema, true)?);
            // the epoch's own rows, without the marker
            let is_new = arrow::compute::not(
                done.column(n_in)
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .expect("the marker"),
            )?;
            let new = arrow::compute::filter_record_batch(&done, &is_new)?;
            let mut cols = new.columns().to_vec();
            cols.remove(n_in);
            Ok(Some(RecordBatch::try_new(out_schema.clone(), cols)?))
        })
        .filter_map(|r| async move { r.transpose() });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, out)))
    }
}

#[cfg(test)]
mod tests {
    use super::lag_offset;

    #[test]
    fn offsets_come_from_the_expression() {
        assert_eq!(lag_offset("lag(t.x,Int64(3)) PARTITION BY [k]"), Some(3));
        assert_eq!(lag_offset("lag(t.x) PARTITION BY [k]"), Some(1));
        assert_eq!(lag_offset("row_number() PARTITION BY [k]"), None);
    }
}
