//! Tables of an application: what a `CREATE TABLE name AS SELECT ...`
//! statement keeps, the latest row per key, for later statements of the
//! same application to join with.
//!
//! Where it sits: after the table job's commit. Every epoch the table job
//! publishes, its rows are applied to the table (an `_op` = `delete` row
//! removes its key, any other row replaces the row of its key); a later
//! statement that names the table reads it as a lookup table whose rows are
//! the table's at the start of each of its epochs (a processing-time join:
//! the stream sees the table as it is when its records are processed). The
//! table's rows go into its job's checkpoint, so a resumed application has
//! its tables back before any reader starts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use arrow::array::{RecordBatch, UInt32Array};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use datafusion::error::{DataFusionError, Result};

/// The tables of one application, by name.
#[derive(Debug, Default)]
pub struct Tables(Mutex<HashMap<String, Arc<Table>>>);

impl Tables {
    /// Declares the table `name` with the rows of `schema` (the table job's
    /// output, without `_op`), keyed by `keys`.
    pub fn declare(&self, name: &str, schema: SchemaRef, keys: Vec<String>) -> Arc<Table> {
        let t = Arc::new(Table {
            name: name.to_string(),
            schema,
            keys,
            rows: Arc::new(RwLock::new(Vec::new())),
            ready: tokio::sync::watch::channel(false).0,
        });
        self.0
            .lock()
            .expect("tables")
            .insert(name.to_string(), t.clone());
        t
    }

    /// The table `name`, once its statement is prepared.
    pub fn get(&self, name: &str) -> Option<Arc<Table>> {
        self.0.lock().expect("tables").get(name).cloned()
    }
}

/// One table: its latest row per key.
#[derive(Debug)]
pub struct Table {
    name: String,
    schema: SchemaRef,
    keys: Vec<String>,
    rows: Arc<RwLock<Vec<RecordBatch>>>,
    /// Set once the table job has published its first epoch (or ended).
    ready: tokio::sync::watch::Sender<bool>,
}

impl Table {
    /// Says the table holds what its job's first epoch published (or that
    /// its job ended): readers may start.
    pub fn mark_ready(&self) {
        self.ready.send_replace(true);
    }

    /// Tells when [`Self::mark_ready`] was called.
    pub fn ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its rows' schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The rows, shared with the lookup tables that read them.
    pub fn rows(&self) -> Arc<RwLock<Vec<RecordBatch>>> {
        self.rows.clone()
    }

    /// Rows held now.
    pub fn len(&self) -> usize {
        self.rows
            .read()
            .expect("table rows")
            .iter()
            .map(|b| b.num_rows())
            .sum()
    }

    /// Whether it holds no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies one published epoch of the table job: upserts by key, and
    /// deletes for `_op` = `delete` rows. Without key columns every row is
    /// kept.
    pub fn apply(&self, published: &[RecordBatch]) -> Result<()> {
        if published.iter().all(|b| b.num_rows() == 0) {
            return Ok(());
        }
        let merged = self.merged(published)?;
        *self.rows.write().expect("table rows") = vec![merged];
        Ok(())
    }

    /// The table's rows as one batch, with `published` applied as
    /// [`Self::apply`] would (for the job's checkpoint, written before the
    /// epoch is applied).
    pub fn merged(&self, published: &[RecordBatch]) -> Result<RecordBatch> {
        // a delete's columns other than the key are null, whatever the
        // statement's schema says of them: the rows are merged under a
        // schema of nullable columns, and the deletes never reach the table
        let loose: SchemaRef = Arc::new(arrow::datatypes::Schema::new(
            self.schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let project = |b: &RecordBatch| -> Result<RecordBatch> {
            let cols = self
                .schema
                .fields()
                .iter()
                .map(|f| {
                    b.column_by_name(f.name()).cloned().ok_or_else(|| {
                        DataFusionError::Internal(format!(
                            "table '{}': column '{}' missing from its job's output",
                            self.name,
                            f.name()
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(RecordBatch::try_new(loose.clone(), cols)?)
        };
        let strict = |b: RecordBatch| -> Result<RecordBatch> {
            Ok(RecordBatch::try_new(
                self.schema.clone(),
                b.columns().to_vec(),
            )?)
        };
        let mut all: Vec<RecordBatch> = self.rows.read().expect("table rows").clone();
        let mut deleted: Vec<bool> = vec![false; all.iter().map(|b| b.num_rows()).sum()];
        for b in published {
            all.push(project(b)?);
            match velo_connectors::sink::deletes(b)
                .map_err(|e| DataFusionError::External(Box::new(e)))?
            {
                Some(d) => deleted.extend(d.values().iter()),
                None => deleted.extend(std::iter::repeat_n(false, b.num_rows())),
            }
        }
        let merged = arrow::compute::concat_batches(&loose, &all)?;
        if self.keys.is_empty() {
            let keep: arrow::array::BooleanArray = deleted.iter().map(|d| Some(!d)).collect();
            return strict(arrow::compute::filter_record_batch(&merged, &keep)?);
        }
        // the last row of each key wins; a delete removes the key
        let key_cols =
            self.keys
                .iter()
                .map(|k| {
                    merged.column_by_name(k).cloned().ok_or_else(|| {
                        DataFusionError::Internal(format!("key column '{k}' missing"))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
        let conv = RowConverter::new(
            key_cols
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect(),
        )?;
        let keys = conv.convert_columns(&key_cols)?;
        let mut seen = HashSet::new();
        let mut keep = Vec::new();
        for i in (0..merged.num_rows()).rev() {
            if seen.insert(keys.row(i)) && !deleted[i] {
                keep.push(i as u32);
            }
        }
        keep.reverse();
        strict(arrow::compute::take_record_batch(
            &merged,
            &UInt32Array::from(keep),
        )?)
    }

    /// Puts back the rows of a checkpoint ([`Self::merged`]).
    pub fn restore(&self, rows: RecordBatch) -> Result<()> {
        if rows.schema().fields() != self.schema.fields() {
            return Err(DataFusionError::Plan(format!(
                "the checkpointed rows of table '{}' do not match its statement; the query changed: move the state directory away to start from scratch",
                self.name
            )));
        }
        *self.rows.write().expect("table rows") = vec![rows];
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changelog::OP_COLUMN;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(rows: &[(i64, i64, &str)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
            Field::new(OP_COLUMN, DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    fn contents(t: &Table) -> Vec<(i64, i64)> {
        let rows = t.rows();
        let rows = rows.read().unwrap();
        let mut v: Vec<(i64, i64)> = rows
            .iter()
            .flat_map(|b| {
                let k = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .clone();
                let v = b
                    .column(1)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .clone();
                (0..b.num_rows()).map(move |i| (k.value(i), v.value(i)))
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_last_row_of_a_key_wins_and_deletes_remove_it() {
        let tables = Tables::default();
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
        ]));
        let t = tables.declare("t", schema, vec!["k".into()]);
        t.apply(&[batch(&[
            (1, 10, "insert"),
            (2, 20, "insert"),
            (1, 11, "update"),
        ])])
        .unwrap();
        assert_eq!(contents(&t), vec![(1, 11), (2, 20)]);
        t.apply(&[
            batch(&[(2, 0, "delete"), (3, 30, "insert")]),
            batch(&[(1, 12, "update")]),
        ])
        .unwrap();
        assert_eq!(contents(&t), vec![(1, 12), (3, 30)]);
        // deleted, then written again
        t.apply(&[batch(&[(3, 0, "delete"), (3, 31, "insert")])])
            .unwrap();
        assert_eq!(contents(&t), vec![(1, 12), (3, 31)]);
        assert!(tables.get("t").is_some_and(|x| x.len() == 2));
    }

    /// A statement's column that is never null (`COUNT(*)`) is null in a
    /// delete (HAVING no longer holds): the delete still removes its key.
    #[test]
    fn a_delete_removes_a_key_whose_columns_are_not_null() {
        let tables = Tables::default();
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let t = tables.declare("t", schema, vec!["k".into()]);
        t.apply(&[batch(&[(1, 10, "insert"), (2, 20, "insert")])])
            .unwrap();
        let wire = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
            Field::new(OP_COLUMN, DataType::Utf8, false),
        ]));
        let delete = RecordBatch::try_new(
            wire,
            vec![
                Arc::new(Int64Array::from(vec![2])),
                Arc::new(Int64Array::from(vec![None])),
                Arc::new(StringArray::from(vec!["delete"])),
            ],
        )
        .unwrap();
        t.apply(&[delete]).unwrap();
        assert_eq!(contents(&t), vec![(1, 10)]);
    }
}
