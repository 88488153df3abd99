//! An updating result applied to a Delta table as a MERGE by key
//! (copy-on-write): an epoch's changes reduced to the last change of each
//! key; the data files that may hold one of those keys (by the per-file
//! min/max statistics of the key columns) read, and each file that does
//! hold one rewritten without those rows; the new rows of inserted and
//! updated keys written; all of it one commit (`remove` + `add` actions),
//! so a reader sees the table before or after the epoch, never between.
//!
//! Copy-on-write rather than deletion vectors: delta-rs writes no deletion
//! vectors, and many readers (DuckDB, older Spark) cannot apply them; what
//! the table holds stays plain Parquet, as cheap to read as an append-only
//! table. The cost is on the writer: a file holding a changed key is
//! rewritten whole, so an epoch touching keys spread over every file
//! rewrites the table. Keys that arrive in order (ids, times) stay within
//! few files thanks to the statistics.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};
use deltalake::DeltaTable;
use deltalake::kernel::Remove;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::StreamExt;
use velo_connectors::{ChangeBatch, ChangeOp, ConnectorError, Result};

use crate::read::{self, DataFile};

/// What a merge did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Merged {
    /// Keys written (inserted or updated).
    pub upserted: usize,
    /// Keys deleted.
    pub deleted: usize,
    /// Data files read because their statistics allow a changed key.
    pub files_read: usize,
    /// Data files rewritten (they held a changed key).
    pub files_rewritten: usize,
}

/// The keys of some rows, comparable across batches of the table's types.
struct Keys {
    columns: Vec<String>,
    types: Vec<DataType>,
    converter: RowConverter,
}

impl Keys {
    fn new(columns: &[String], table: &SchemaRef) -> Result<Self> {
        let types = columns
            .iter()
            .map(|c| {
                table
                    .field_with_name(c)
                    .map(|f| f.data_type().clone())
                    .map_err(|_| {
                        ConnectorError::Other(format!(
                            "the merge key '{c}' is not a column of the Delta table"
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let converter = RowConverter::new(types.iter().cloned().map(SortField::new).collect())?;
        Ok(Self {
            columns: columns.to_vec(),
            types,
            converter,
        })
    }

    /// The key columns of `batch`, as the table's types.
    fn arrays(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        self.columns
            .iter()
            .zip(&self.types)
            .map(|(c, t)| {
                let a = batch.column_by_name(c).ok_or_else(|| {
                    ConnectorError::Other(format!("the result has no merge key column '{c}'"))
                })?;
                if a.data_type() == t {
                    Ok(a.clone())
                } else {
                    Ok(arrow::compute::cast(a, t)?)
                }
            })
            .collect()
    }

    /// Each row's key as bytes.
    fn of(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let rows = self.converter.convert_columns(&self.arrays(batch)?)?;
        Ok(rows.iter().map(|r| r.as_ref().to_vec()).collect())
    }
}

/// The range of one key column's values among the changed keys, for
/// skipping files by their statistics (integers and text only).
#[derive(Debug, Clone)]
enum Range {
    Int(i64, i64),
    /// The greatest changed key (text statistics can only rule out a file
    /// from below: its maximum may be truncated).
    Text(String),
}

fn ranges(keys: &Keys, changed: &RecordBatch) -> Result<Vec<Option<Range>>> {
    keys.arrays(changed)?
        .iter()
        .map(|a| -> Result<Option<Range>> {
            if a.null_count() > 0 {
                return Ok(None);
            }
            Ok(match a.data_type() {
                DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
                    let a = arrow::compute::cast(a, &DataType::Int64)?;
                    let a = a
                        .as_any()
                        .downcast_ref::<arrow::array::Int64Array>()
                        .ok_or_else(|| ConnectorError::Internal("an Int64 cast".into()))?;
                    match (arrow::compute::min(a), arrow::compute::max(a)) {
                        (Some(lo), Some(hi)) => Some(Range::Int(lo, hi)),
                        _ => None,
                    }
                }
                DataType::Utf8 => {
                    let a = a
                        .as_any()
                        .downcast_ref::<arrow::array::StringArray>()
                        .ok_or_else(|| ConnectorError::Internal("a Utf8 array".into()))?;
                    arrow::compute::max_string(a).map(|hi| Range::Text(hi.into()))
                }
                _ => None,
            })
        })
        .collect()
}

/// Whether a file whose statistics are `stats` (the log's JSON) may hold a
/// changed key: false only when some key column's [min, max] in the file
/// misses the changed keys' range of that column.
fn may_hold(stats: Option<&str>, keys: &Keys, ranges: &[Option<Range>]) -> bool {
    let Some(stats) = stats.and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok()) else {
        return true;
    };
    for (col, range) in keys.columns.iter().zip(ranges) {
        let (lo, hi) = (&stats["minValues"][col], &stats["maxValues"][col]);
        let disjoint = match range {
            Some(Range::Int(a, b)) => match (lo.as_i64(), hi.as_i64()) {
                (Some(lo), Some(hi)) => hi < *a || lo > *b,
                _ => false,
            },
            // text statistics may be truncated prefixes: only the lower
            // bound is exact enough to rule a file out
            Some(Range::Text(b)) => lo.as_str().is_some_and(|lo| lo > b.as_str()),
            None => false,
        };
        if disjoint {
            return false;
        }
    }
    true
}

/// The last change of each key in `changes`, in arrival order: the rows to
/// write (inserted or updated keys) and every changed key.
fn reduce(
    changes: &[ChangeBatch],
    keys: &Keys,
) -> Result<(Option<RecordBatch>, RecordBatch, usize)> {
    let Some(first) = changes.first() else {
        return Err(ConnectorError::Internal("a merge of no changes".into()));
    };
    let schema = first.rows().schema();
    let rows = arrow::compute::concat_batches(&schema, changes.iter().map(|c| c.rows()))?;
    let ops: Vec<ChangeOp> = changes
        .iter()
        .flat_map(|c| c.ops().iter().copied())
        .collect();
    let mut last: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, k) in keys.of(&rows)?.into_iter().enumerate() {
        last.insert(k, i);
    }
    let mut finals: Vec<usize> = last.into_values().collect();
    finals.sort_unstable();
    // the key columns only: a delete's other columns are null, whatever
    // the result's schema says of them
    let key_idx = keys
        .columns
        .iter()
        .map(|c| schema.index_of(c))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let changed = arrow::compute::take_record_batch(
        &rows.project(&key_idx)?,
        &arrow::array::UInt32Array::from(finals.iter().map(|i| *i as u32).collect::<Vec<_>>()),
    )?;
    let keep: Vec<u32> = finals
        .iter()
        .filter(|i| ops[**i] != ChangeOp::Delete)
        .map(|i| *i as u32)
        .collect();
    let deleted = finals.len() - keep.len();
    let upserts = (!keep.is_empty())
        .then(|| arrow::compute::take_record_batch(&rows, &arrow::array::UInt32Array::from(keep)))
        .transpose()?;
    Ok((upserts, changed, deleted))
}

/// Applies `changes` keyed by `key_columns` to `table`: the rewritten files
/// and new rows go to `writer` (their `add` actions come from its flush),
/// the replaced files are returned as `remove` actions.
pub async fn apply(
    table: &DeltaTable,
    writer: &mut RecordBatchWriter,
    key_columns: &[String],
    changes: &[ChangeBatch],
) -> Result<(Vec<Remove>, Merged)> {
    let shown = table.table_url().to_string();
    let err = |what: &str, e: deltalake::DeltaTableError| crate::table::error(what, &shown, &e);
    let snapshot = table.snapshot().map_err(|e| err("read", e))?;
    let schema = snapshot.snapshot().arrow_schema();
    let keys = Keys::new(key_columns, &schema)?;
    // phase 1: the last change per key
    let (upserts, changed, deleted) = reduce(changes, &keys)?;
    let changed_keys: HashSet<Vec<u8>> = keys.of(&changed)?.into_iter().collect();
    let ranges = ranges(&keys, &changed)?;
    // phase 2: the files that may hold a changed key, rewritten without it
    let store = table.object_store();
    let mut removes = Vec::new();
    let mut stats = Merged {
        upserted: upserts.as_ref().map_or(0, |u| u.num_rows()),
        deleted,
        ..Merged::default()
    };
    for f in snapshot.log_data().iter() {
        if !may_hold(f.stats().as_deref(), &keys, &ranges) {
            continue;
        }
        if f.deletion_vector_descriptor().is_some() {
            return Err(ConnectorError::Other(format!(
                "the Delta table {shown} has deletion vectors, which this writer cannot merge into yet"
            )));
        }
        let file = DataFile {
            path: f.path().to_string(),
            partitions: f.partition_values_map(),
            size: f.size() as u64,
        };
        stats.files_read += 1;
        // pass 1: does it hold a changed key? (nothing kept in memory)
        let mut hit = false;
        let mut rows = read::stream(store.clone(), &file, schema.clone(), 64 * 1024, 0).await?;
        while let Some(batch) = rows.next().await {
            if keys.of(&batch?)?.iter().any(|k| changed_keys.contains(k)) {
                hit = true;
                break;
            }
        }
        if !hit {
            continue;
        }
        // pass 2: its other rows into the new files
        let mut rows = read::stream(store.clone(), &file, schema.clone(), 64 * 1024, 0).await?;
        while let Some(batch) = rows.next().await {
            let batch = batch?;
            let keep: BooleanArray = keys
                .of(&batch)?
                .iter()
                .map(|k| Some(!changed_keys.contains(k)))
                .collect();
            let kept = filter_record_batch(&batch, &keep)?;
            if kept.num_rows() > 0 {
                writer
                    .write(kept)
                    .await
                    .map_err(|e| err("rewrite a file of", e))?;
            }
        }
        removes.push(f.remove_action(true));
        stats.files_rewritten += 1;
    }
    // phase 3: the keys' new rows
    if let Some(u) = upserts {
        writer.write(u).await.map_err(|e| err("write to", e))?;
    }
    Ok((removes, stats))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn keys() -> Keys {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]));
        Keys::new(&["k".to_string()], &schema).unwrap()
    }

    fn changes(rows: &[(i64, &str, ChangeOp)]) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]));
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap();
        ChangeBatch::new(b, rows.iter().map(|r| r.2).collect()).unwrap()
    }

    /// The last change of a key wins, across batches; a key deleted last
    /// is not written, one deleted then inserted again is.
    #[test]
    fn the_last_change_of_each_key_wins() {
        let k = keys();
        let c = [
            changes(&[(1, "a", ChangeOp::Insert), (2, "b", ChangeOp::Insert)]),
            changes(&[
                (1, "a2", ChangeOp::Update),
                (2, "", ChangeOp::Delete),
                (3, "c", ChangeOp::Insert),
                (3, "", ChangeOp::Delete),
                (3, "c2", ChangeOp::Insert),
            ]),
        ];
        let (up, changed, deleted) = reduce(&c, &k).unwrap();
        let up = up.unwrap();
        let v = up.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(
            (0..up.num_rows()).map(|i| v.value(i)).collect::<Vec<_>>(),
            ["a2", "c2"]
        );
        assert_eq!((changed.num_rows(), deleted), (3, 1));
    }

    /// Files are skipped only when their key range misses the changed keys.
    #[test]
    fn statistics_rule_out_files() {
        let k = keys();
        let r = vec![Some(Range::Int(10, 20))];
        let stats = |lo: i64, hi: i64| {
            format!(r#"{{"numRecords":5,"minValues":{{"k":{lo}}},"maxValues":{{"k":{hi}}}}}"#)
        };
        assert!(!may_hold(Some(&stats(0, 9)), &k, &r));
        assert!(!may_hold(Some(&stats(21, 30)), &k, &r));
        assert!(may_hold(Some(&stats(0, 10)), &k, &r));
        assert!(may_hold(Some(&stats(15, 16)), &k, &r));
        assert!(may_hold(None, &k, &r), "no statistics: read it");
        assert!(may_hold(Some("{}"), &k, &r));
    }
}
