//! The state registry of a job's streaming operators: every operator
//! registers its state, which the runtime snapshots into every checkpoint,
//! restores on restart, and puts back when an epoch fails.

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use datafusion::common::{DataFusionError, Result};

/// The window operators of a job: their state is written with every
/// checkpoint and read back on restart, so no window result is lost or
/// emitted twice across a crash.
///
/// Each state is registered under a stable id that describes its operator
/// (what it computes, over which columns, which partition or side), so a
/// checkpoint is restored into the operator that wrote it, and a query that
/// changed is told apart from one that did not.
#[derive(Default)]
pub struct WindowStates(Mutex<Vec<(String, Arc<dyn OperatorState>)>>);

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
    /// Adds an operator's state under `id` (a second operator with the same
    /// description gets `#2`, in plan order).
    pub fn register(&self, id: String, inner: Arc<dyn OperatorState>) {
        let mut ops = self.0.lock().expect("window states");
        let same = ops
            .iter()
            .filter(|(i, _)| i == &id || i.starts_with(&format!("{id} #")))
            .count();
        let id = if same == 0 {
            id
        } else {
            format!("{id} #{}", same + 1)
        };
        ops.push((id, inner));
    }

    /// The operators' ids, in plan order (the order of [`Self::snapshot`]).
    pub fn ids(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("window states")
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Puts back the states of a checkpoint by operator id: every operator
    /// of the query must find its own, and every state its operator.
    pub fn restore_by_id(&self, mut states: Vec<(String, RecordBatch)>) -> Result<()> {
        let ops = self.0.lock().expect("window states");
        for (id, op) in ops.iter() {
            let Some(at) = states.iter().position(|(s, _)| s == id) else {
                return Err(DataFusionError::Plan(format!(
                    "the checkpoint holds no state for the operator '{id}': the query or its 'partitions' changed; run the query it was written by, or move the state directory away to start from scratch"
                )));
            };
            op.restore(states.remove(at).1)?;
        }
        if !states.is_empty() {
            let ids: Vec<&str> = states.iter().map(|(s, _)| s.as_str()).collect();
            return Err(DataFusionError::Plan(format!(
                "the checkpoint holds state of operators the query no longer has ({}): the query or its 'partitions' changed; run the query it was written by, or move the state directory away to start from scratch",
                ids.join("; ")
            )));
        }
        Ok(())
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
            .any(|(_, i)| i.emits_changes())
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
            .flat_map(|(_, i)| i.take_changed())
            .collect()
    }

    /// One Arrow batch per operator holding its whole state.
    pub fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        self.0
            .lock()
            .expect("window states")
            .iter()
            .map(|(_, i)| i.snapshot())
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
        for ((_, op), b) in ops.iter().zip(batches) {
            op.restore(b)?;
        }
        Ok(())
    }
}
