//! The changelog of an updating query: a `GROUP BY` without a window on a
//! stream, or any query with `EMIT CHANGES`.
//!
//! Where it sits: between the query's output and the fan-out. The window
//! operator ([`crate::operators::window::Emit::Changes`]) emits the current row of every
//! group that changed in an epoch; here each row gets an `_op` column,
//! `insert` the first time its key is written and `update` after that, and a
//! key that changed but is missing from the output (HAVING no longer holds)
//! becomes a `delete` row (key columns set, the others null). Sinks with keys
//! (Kafka: the group key is the message key) apply the rows as upserts; the
//! others store the `_op` column with the row.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, new_null_array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::{DataFusionError, Result};

pub use velo_connectors::sink::OP_COLUMN;
use velo_connectors::sink::{OP_DELETE, OP_INSERT, OP_UPDATE};

/// Labels an updating query's rows and remembers the keys it has written.
pub struct Changelog {
    /// Key columns: (position in the query output, name, name in the
    /// aggregate's output).
    keys: Vec<(usize, String, String)>,
    conv: Option<RowConverter>,
    /// Keys written and not deleted since.
    emitted: HashSet<OwnedRow>,
    /// No key columns: the query has one row (`SELECT COUNT(*) ...`).
    single_emitted: bool,
    schema: SchemaRef,
    query_schema: SchemaRef,
    warned: bool,
}

impl Changelog {
    /// A changelog for rows of `query_schema` keyed by the columns `keys`
    /// ((name in the output, name in the aggregate); those not in the output
    /// are ignored).
    pub fn new(query_schema: &SchemaRef, keys: &[(String, String)]) -> Result<Self> {
        if query_schema.field_with_name(OP_COLUMN).is_ok() {
            return Err(DataFusionError::Plan(format!(
                "the query's output already has a column '{OP_COLUMN}'; an updating query (GROUP BY on a stream, EMIT CHANGES) adds it: rename yours"
            )));
        }
        let keys: Vec<(usize, String, String)> = keys
            .iter()
            .filter_map(|(k, g)| {
                query_schema
                    .index_of(k)
                    .ok()
                    .map(|i| (i, k.clone(), g.clone()))
            })
            .collect();
        let conv = if keys.is_empty() {
            None
        } else {
            Some(RowConverter::new(
                keys.iter()
                    .map(|(i, _, _)| SortField::new(query_schema.field(*i).data_type().clone()))
                    .collect(),
            )?)
        };
        let mut fields: Vec<Field> = query_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let key = keys.iter().any(|(k, _, _)| *k == i);
                f.as_ref().clone().with_nullable(f.is_nullable() || !key)
            })
            .collect();
        fields.push(Field::new(OP_COLUMN, DataType::Utf8, false));
        Ok(Self {
            keys,
            conv,
            emitted: HashSet::new(),
            single_emitted: false,
            schema: Arc::new(Schema::new(fields)),
            query_schema: query_schema.clone(),
            warned: false,
        })
    }

    /// The rows the sinks receive: the query's columns and `_op`.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn key_rows(&self, cols: &[ArrayRef]) -> Result<Vec<OwnedRow>> {
        let conv = self.conv.as_ref().expect("keyed changelog");
        let rows = conv.convert_columns(cols)?;
        Ok(rows.iter().map(|r| r.owned()).collect())
    }

    /// Adds `_op` to the query's output `b`; `seen` collects the keys
    /// written this epoch.
    pub fn label(&mut self, b: &RecordBatch, seen: &mut HashSet<OwnedRow>) -> Result<RecordBatch> {
        let ops: Vec<&str> = if self.conv.is_none() {
            (0..b.num_rows())
                .map(|_| {
                    if std::mem::replace(&mut self.single_emitted, true) {
                        OP_UPDATE
                    } else {
                        OP_INSERT
                    }
                })
                .collect()
        } else {
            let cols: Vec<ArrayRef> = self
                .keys
                .iter()
                .map(|(i, _, _)| b.column(*i).clone())
                .collect();
            self.key_rows(&cols)?
                .into_iter()
                .map(|r| {
                    seen.insert(r.clone());
                    if self.emitted.insert(r) {
                        OP_INSERT
                    } else {
                        OP_UPDATE
                    }
                })
                .collect()
        };
        let mut cols = b.columns().to_vec();
        cols.push(Arc::new(StringArray::from(ops)));
        Ok(RecordBatch::try_new(self.schema.clone(), cols)?)
    }

    /// `delete` rows for keys that changed this epoch (`changed`, from the
    /// window operator) and were written before but are not in this epoch's
    /// output (`seen`).
    pub fn deletes(
        &mut self,
        changed: &[RecordBatch],
        seen: &HashSet<OwnedRow>,
    ) -> Result<Option<RecordBatch>> {
        if self.conv.is_none() || changed.is_empty() {
            return Ok(None);
        }
        let mut key_cols: Vec<Vec<ArrayRef>> = vec![Vec::new(); self.keys.len()];
        for b in changed {
            for (k, (i, _, name)) in self.keys.iter().enumerate() {
                let Ok(col) = b.schema().index_of(name) else {
                    if !self.warned {
                        self.warned = true;
                        tracing::warn!(
                            "the changelog cannot tell which group '{name}' belongs to; groups that stop passing HAVING are not deleted"
                        );
                    }
                    return Ok(None);
                };
                let want = self.query_schema.field(*i).data_type();
                let c = b.column(col);
                key_cols[k].push(if c.data_type() == want {
                    c.clone()
                } else {
                    arrow::compute::cast(c, want)?
                });
            }
        }
        let cols: Vec<ArrayRef> = key_cols
            .iter()
            .map(|parts| {
                let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
                Ok(arrow::compute::concat(&refs)?)
            })
            .collect::<Result<_>>()?;
        let mut gone = Vec::new();
        for (i, r) in self.key_rows(&cols)?.into_iter().enumerate() {
            if !seen.contains(&r) && self.emitted.remove(&r) {
                gone.push(i as u32);
            }
        }
        if gone.is_empty() {
            return Ok(None);
        }
        let idx = arrow::array::UInt32Array::from(gone);
        let n = idx.len();
        let mut out: Vec<ArrayRef> = self
            .query_schema
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), n))
            .collect();
        for (k, (i, _, _)) in self.keys.iter().enumerate() {
            out[*i] = arrow::compute::take(&cols[k], &idx, None)?;
        }
        out.push(Arc::new(StringArray::from(vec![OP_DELETE; n])));
        Ok(Some(RecordBatch::try_new(self.schema.clone(), out)?))
    }

    /// The keys written so far, for the checkpoint.
    pub fn snapshot(&self) -> Result<RecordBatch> {
        let mut fields: Vec<Field> = self
            .keys
            .iter()
            .map(|(i, _, _)| self.query_schema.field(*i).clone().with_nullable(true))
            .collect();
        fields.push(Field::new("_single", DataType::Boolean, false));
        let schema = Arc::new(Schema::new(fields));
        let (n, mut cols) = match &self.conv {
            Some(conv) => (
                self.emitted.len(),
                conv.convert_rows(self.emitted.iter().map(|r| r.row()))?,
            ),
            // one row if the single row was written
            None => (usize::from(self.single_emitted), vec![]),
        };
        cols.push(Arc::new(arrow::array::BooleanArray::from(vec![true; n])));
        Ok(RecordBatch::try_new(schema, cols)?)
    }

    /// Puts back a [`Self::snapshot`].
    pub fn restore(&mut self, b: &RecordBatch) -> Result<()> {
        if b.num_columns() != self.keys.len() + 1 {
            return Err(DataFusionError::Plan(
                "the checkpointed changelog keys do not match the query's group columns; the query changed: move the state directory away to start from scratch".into(),
            ));
        }
        self.emitted.clear();
        self.single_emitted = self.conv.is_none() && b.num_rows() > 0;
        if self.conv.is_some() && b.num_rows() > 0 {
            let cols = b.columns()[..self.keys.len()].to_vec();
            self.emitted.extend(self.key_rows(&cols)?);
        }
        Ok(())
    }
}
