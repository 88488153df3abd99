//! The changelog: one typed representation of changes to keyed rows, for
//! every connector that produces or consumes them.
//!
//! Where it sits: between the engine's updating results (a GROUP BY without
//! a window on a stream, EMIT CHANGES) and the sinks, and, for the change
//! feeds to come (database CDC, table-format change feeds, compacted
//! topics), between those sources and the engine. A [`ChangeBatch`] is rows
//! and one [`ChangeOp`] per row. On the wire between the engine and a sink
//! it travels as the rows with an [`OP_COLUMN`] column (`_op`: `insert`,
//! `update`, `delete`), which is also what sinks that keep every row
//! (files, stdout) store. A connector says what it produces or accepts with
//! a [`ChangeMode`]: the planner refuses an updating result into a sink
//! that only appends, and a changelog source under an aggregate, a window
//! or a join (retraction does not exist yet).

use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use crate::{ConnectorError, Result};

/// The operation column of an updating result (a changelog): every row is
/// an [`OP_INSERT`], [`OP_UPDATE`] or [`OP_DELETE`] of its key.
pub const OP_COLUMN: &str = "_op";
/// A key written for the first time.
pub const OP_INSERT: &str = "insert";
/// A key written again.
pub const OP_UPDATE: &str = "update";
/// A key removed: its key columns are set, the others null.
pub const OP_DELETE: &str = "delete";

/// What a change does to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeOp {
    /// A key written for the first time.
    Insert,
    /// A key written again: the row replaces the key's row.
    Update,
    /// A key removed (its key columns set, the others null).
    Delete,
}

impl ChangeOp {
    /// The operation's name in the [`OP_COLUMN`] column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insert => OP_INSERT,
            Self::Update => OP_UPDATE,
            Self::Delete => OP_DELETE,
        }
    }

    /// The operation named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            OP_INSERT => Some(Self::Insert),
            OP_UPDATE => Some(Self::Update),
            OP_DELETE => Some(Self::Delete),
            _ => None,
        }
    }
}

/// Changes to keyed rows: the rows (without an operation column) and what
/// each does.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeBatch {
    rows: RecordBatch,
    ops: Vec<ChangeOp>,
}

impl ChangeBatch {
    /// Changes `ops` carried by `rows`, one per row.
    pub fn new(rows: RecordBatch, ops: Vec<ChangeOp>) -> Result<Self> {
        if rows.num_rows() != ops.len() {
            return Err(ConnectorError::Other(format!(
                "a change batch of {} rows has {} operations",
                rows.num_rows(),
                ops.len()
            )));
        }
        if rows.schema().field_with_name(OP_COLUMN).is_ok() {
            return Err(ConnectorError::Other(format!(
                "the rows of a change batch already have a column '{OP_COLUMN}'"
            )));
        }
        Ok(Self { rows, ops })
    }

    /// Reads the wire form: `batch`'s [`OP_COLUMN`] column gives the
    /// operations, its other columns the rows. A missing, null or unknown
    /// operation is an error naming the row.
    pub fn from_batch(batch: &RecordBatch) -> Result<Self> {
        let schema = batch.schema();
        let at = schema.index_of(OP_COLUMN).map_err(|_| {
            ConnectorError::Other(format!(
                "an updating result's rows have no '{OP_COLUMN}' column"
            ))
        })?;
        let col = batch.column(at);
        let ops = col.as_any().downcast_ref::<StringArray>().ok_or_else(|| {
            ConnectorError::Other(format!(
                "the '{OP_COLUMN}' column of an updating result is {}, not text",
                col.data_type()
            ))
        })?;
        let ops = (0..ops.len())
            .map(|i| {
                ops.is_valid(i)
                    .then(|| ChangeOp::parse(ops.value(i)))
                    .flatten()
                    .ok_or_else(|| {
                        ConnectorError::Other(format!(
                            "row {i} of an updating result has '{OP_COLUMN}' = {}, not {OP_INSERT}, {OP_UPDATE} or {OP_DELETE}",
                            if ops.is_valid(i) { format!("'{}'", ops.value(i)) } else { "null".into() }
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut rows = batch.clone();
        rows.remove_column(at);
        Ok(Self { rows, ops })
    }

    /// The wire form: the rows with an [`OP_COLUMN`] column last.
    pub fn to_batch(&self) -> Result<RecordBatch> {
        let mut fields: Vec<Field> = self
            .rows
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(OP_COLUMN, DataType::Utf8, false));
        let mut cols = self.rows.columns().to_vec();
        cols.push(Arc::new(StringArray::from_iter_values(
            self.ops.iter().map(|o| o.as_str()),
        )));
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
    }

    /// The rows.
    pub fn rows(&self) -> &RecordBatch {
        &self.rows
    }

    /// Each row's operation.
    pub fn ops(&self) -> &[ChangeOp] {
        &self.ops
    }

    /// Whether each row deletes its key.
    pub fn deletes(&self) -> BooleanArray {
        self.ops
            .iter()
            .map(|o| Some(*o == ChangeOp::Delete))
            .collect()
    }
}

/// Whether each row of `batch` deletes its key (an updating result's
/// `_op` = `delete`); `None` when `batch` has no `_op` column, an error
/// when an operation is null or unknown (never read as an insert).
pub fn deletes(batch: &RecordBatch) -> Result<Option<BooleanArray>> {
    if batch.column_by_name(OP_COLUMN).is_none() {
        return Ok(None);
    }
    ChangeBatch::from_batch(batch).map(|c| Some(c.deletes()))
}

/// What stream a connector produces (a source) or accepts (a sink).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChangeMode {
    /// Appended rows only. A source: every record is new. A sink: an
    /// updating result is refused at planning.
    AppendOnly,
    /// Every change as a row with its [`OP_COLUMN`] (files, stdout): the
    /// sink stores the changes; readers apply them.
    #[default]
    ChangeRows,
    /// Changes applied by key: an update replaces the key's row, a delete
    /// removes it (Kafka: the message key and tombstones). A source of this
    /// mode produces a changelog.
    Upsert,
}

impl ChangeMode {
    /// Whether a stream of this mode may carry updates and deletes.
    pub fn has_changes(self) -> bool {
        self != Self::AppendOnly
    }

    /// How the mode reads in messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::AppendOnly => "appends rows only",
            Self::ChangeRows => "stores each change as a row with its _op column",
            Self::Upsert => "applies changes by key",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    fn rows() -> RecordBatch {
        RecordBatch::try_from_iter([(
            "k",
            Arc::new(Int64Array::from(vec![1, 2, 1])) as Arc<dyn Array>,
        )])
        .unwrap()
    }

    #[test]
    fn the_wire_form_round_trips() {
        let ops = vec![ChangeOp::Insert, ChangeOp::Insert, ChangeOp::Delete];
        let c = ChangeBatch::new(rows(), ops.clone()).unwrap();
        let wire = c.to_batch().unwrap();
        assert_eq!(wire.schema().field(1).name(), OP_COLUMN);
        let back = ChangeBatch::from_batch(&wire).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.ops(), ops);
        assert_eq!(back.deletes(), BooleanArray::from(vec![false, false, true]));
        assert_eq!(deletes(&wire).unwrap(), Some(back.deletes()));
        assert_eq!(deletes(&rows()).unwrap(), None);
    }

    #[test]
    fn bad_operations_are_errors_naming_the_row() {
        let wire = RecordBatch::try_from_iter([
            (
                "k",
                Arc::new(Int64Array::from(vec![1, 2])) as Arc<dyn Array>,
            ),
            (
                OP_COLUMN,
                Arc::new(StringArray::from(vec![Some("insert"), Some("upsert")])) as _,
            ),
        ])
        .unwrap();
        let e = ChangeBatch::from_batch(&wire).unwrap_err().to_string();
        assert!(e.contains("row 1") && e.contains("'upsert'"), "{e}");
        // nor does `deletes` read an unknown operation as an insert
        assert!(deletes(&wire).is_err());
        let e = ChangeBatch::from_batch(&rows()).unwrap_err().to_string();
        assert!(e.contains("no '_op' column"), "{e}");
        let e = ChangeBatch::new(rows(), vec![ChangeOp::Insert])
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 rows has 1 operations"), "{e}");
        assert!(ChangeBatch::new(wire, vec![ChangeOp::Insert; 2]).is_err());
    }

    #[test]
    fn only_append_only_has_no_changes() {
        assert!(!ChangeMode::AppendOnly.has_changes());
        assert!(ChangeMode::ChangeRows.has_changes());
        assert!(ChangeMode::Upsert.has_changes());
        for o in [ChangeOp::Insert, ChangeOp::Update, ChangeOp::Delete] {
            assert_eq!(ChangeOp::parse(o.as_str()), Some(o));
        }
    }
}
