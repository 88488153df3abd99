//! What table-format sinks share when they apply an updating result by key
//! (copy-on-write MERGE in Delta Lake, upserts in Iceberg): the keys of
//! rows as comparable bytes ([`MergeKeys`]), the last change of each key in
//! an epoch ([`last_changes`]), and the range of the changed keys per key
//! column ([`key_ranges`]), with which a sink skips the data files whose
//! statistics rule every changed key out.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};
use futures::{Stream, StreamExt};

use velo_config::{ConfigError, ConnectorConfig, KeySpec, KeyType};

use crate::{ChangeBatch, ChangeOp, ConnectorError, Result};

/// The `mode` key of a table sink that merges.
pub const MODE_KEY: KeySpec = KeySpec::new(
    "mode",
    KeyType::Enum(&["append", "merge", "upsert"]),
    Some("append; merge for an updating result or with merge_on"),
    "append: every epoch appends its rows in one commit; merge (or upsert): each row replaces the table's row of its key (merge_on), a delete of an updating result removes it",
);

/// The `merge_on` key of a table sink that merges.
pub const MERGE_ON_KEY: KeySpec = KeySpec::new(
    "merge_on",
    KeyType::String,
    Some("the result's key (GROUP BY columns or PRIMARY KEY)"),
    "The key columns, comma-separated, of a MERGE: a row replaces the table's row with the same key",
);

/// How a table sink writes: `mode` and `merge_on`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteMode {
    /// Every row replaces the row of its key (`mode = 'merge'`, or
    /// `merge_on` set); an updating result merges whatever this says.
    pub merge: bool,
    /// `merge_on`: the key; empty: the result's key.
    pub merge_on: Vec<String>,
}

impl WriteMode {
    /// Reads `mode` and `merge_on`.
    pub fn from_config(cfg: &ConnectorConfig) -> std::result::Result<Self, ConfigError> {
        let merge_on: Vec<String> = cfg
            .get("merge_on")
            .map(|v| {
                v.split(',')
                    .map(|c| c.trim().trim_matches(['"', '\'']).to_string())
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if cfg.get("merge_on").is_some() && merge_on.is_empty() {
            return Err(cfg.invalid(
                "merge_on",
                cfg.get("merge_on").unwrap_or_default(),
                "key column names separated by commas, e.g. 'id'",
            ));
        }
        let merge = match cfg.get("mode").map(|m| m.trim().to_ascii_lowercase()) {
            None => !merge_on.is_empty(),
            Some(m) if m == "append" => {
                if !merge_on.is_empty() {
                    return Err(cfg.invalid(
                        "mode",
                        "append",
                        "merge (or no mode) with merge_on: merge_on makes every row replace the row of its key",
                    ));
                }
                false
            }
            Some(m) if m == "merge" || m == "upsert" => true,
            Some(m) => return Err(cfg.invalid("mode", &m, "append, merge or upsert")),
        };
        Ok(Self { merge, merge_on })
    }

    /// The key of a merge: `merge_on`, else `result_key` (the result's).
    pub fn key(&self, result_key: &[String]) -> Vec<String> {
        if self.merge_on.is_empty() {
            result_key.to_vec()
        } else {
            self.merge_on.clone()
        }
    }
}

/// The keys of rows, comparable across batches of a table's types.
pub struct MergeKeys {
    columns: Vec<String>,
    types: Vec<DataType>,
    converter: RowConverter,
}

impl MergeKeys {
    /// Keys made of `columns`, with the types they have in `table`
    /// (`what` names the table in messages).
    pub fn new(columns: &[String], table: &SchemaRef, what: &str) -> Result<Self> {
        let types = columns
            .iter()
            .map(|c| {
                table
                    .field_with_name(c)
                    .map(|f| f.data_type().clone())
                    .map_err(|_| {
                        ConnectorError::Other(format!(
                            "the merge key '{c}' is not a column of {what}"
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

    /// The key columns' names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The key columns of `batch`, as the table's types.
    pub fn arrays(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
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
    pub fn of(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let rows = self.converter.convert_columns(&self.arrays(batch)?)?;
        Ok(rows.iter().map(|r| r.as_ref().to_vec()).collect())
    }

    /// The keys of `changed`'s rows, for finding and dropping their rows.
    pub fn set(&self, changed: &RecordBatch) -> Result<KeySet> {
        Ok(KeySet(self.of(changed)?.into_iter().collect()))
    }

    /// Whether a batch of `rows` holds a key of `set` (read up to the
    /// first that does; nothing is kept).
    pub async fn any_in<S>(&self, mut rows: S, set: &KeySet) -> Result<bool>
    where
        S: Stream<Item = Result<RecordBatch>> + Unpin,
    {
        while let Some(batch) = rows.next().await {
            let keys = self.converter.convert_columns(&self.arrays(&batch?)?)?;
            if keys.iter().any(|k| set.0.contains(k.as_ref())) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `batch` without the rows whose key is in `set`.
    pub fn without(&self, batch: &RecordBatch, set: &KeySet) -> Result<RecordBatch> {
        // the keys looked up as they are in the row format: no copy per row
        let keys = self.converter.convert_columns(&self.arrays(batch)?)?;
        let keep: BooleanArray = keys
            .iter()
            .map(|k| Some(!set.0.contains(k.as_ref())))
            .collect();
        Ok(arrow::compute::filter_record_batch(batch, &keep)?)
    }
}

/// Keys as bytes ([`MergeKeys::set`]).
#[derive(Debug, Default)]
pub struct KeySet(HashSet<Vec<u8>>);

/// The range of one key column's values among the changed keys, for
/// skipping files by their statistics (integers and text only).
#[derive(Debug, Clone, PartialEq)]
pub enum KeyRange {
    /// The smallest and greatest changed integer key.
    Int(i64, i64),
    /// The smallest and greatest changed text key (text statistics may be
    /// truncated prefixes: a reader of them compares accordingly).
    Text(String, String),
}

/// Per key column, the range of `changed`'s keys (None: no range, a
/// column with nulls or of another type; every file may hold it).
pub fn key_ranges(keys: &MergeKeys, changed: &RecordBatch) -> Result<Vec<Option<KeyRange>>> {
    keys.arrays(changed)?
        .iter()
        .map(|a| -> Result<Option<KeyRange>> {
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
                        (Some(lo), Some(hi)) => Some(KeyRange::Int(lo, hi)),
                        _ => None,
                    }
                }
                DataType::Utf8 => {
                    let a = a
                        .as_any()
                        .downcast_ref::<arrow::array::StringArray>()
                        .ok_or_else(|| ConnectorError::Internal("a Utf8 array".into()))?;
                    match (arrow::compute::min_string(a), arrow::compute::max_string(a)) {
                        (Some(lo), Some(hi)) => Some(KeyRange::Text(lo.into(), hi.into())),
                        _ => None,
                    }
                }
                _ => None,
            })
        })
        .collect()
}

/// An epoch's changes reduced to the last change of each key.
#[derive(Debug)]
pub struct LastChanges {
    /// The rows to write (keys inserted or updated last), in arrival order.
    pub upserts: Option<RecordBatch>,
    /// Every changed key: its rows in the table are replaced or removed.
    pub changed: KeySet,
    /// Per key column, the range of the changed keys ([`key_ranges`]).
    pub ranges: Vec<Option<KeyRange>>,
    /// How many keys were deleted last.
    pub deleted: usize,
}

/// The last change of each key in `changes`, in arrival order.
pub fn last_changes(changes: &[ChangeBatch], keys: &MergeKeys) -> Result<LastChanges> {
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
        &UInt32Array::from(finals.iter().map(|i| *i as u32).collect::<Vec<_>>()),
    )?;
    let keep: Vec<u32> = finals
        .iter()
        .filter(|i| ops[**i] != ChangeOp::Delete)
        .map(|i| *i as u32)
        .collect();
    let deleted = finals.len() - keep.len();
    let upserts = (!keep.is_empty())
        .then(|| arrow::compute::take_record_batch(&rows, &UInt32Array::from(keep)))
        .transpose()?;
    Ok(LastChanges {
        upserts,
        ranges: key_ranges(keys, &changed)?,
        changed: keys.set(&changed)?,
        deleted,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]))
    }

    fn changes(rows: &[(i64, &str, ChangeOp)]) -> ChangeBatch {
        let b = RecordBatch::try_new(
            schema(),
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
        let k = MergeKeys::new(&["k".to_string()], &schema(), "t").unwrap();
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
        let last = last_changes(&c, &k).unwrap();
        let up = last.upserts.unwrap();
        let v = up.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(
            (0..up.num_rows()).map(|i| v.value(i)).collect::<Vec<_>>(),
            ["a2", "c2"]
        );
        assert_eq!((last.changed.0.len(), last.deleted), (3, 1));
        assert_eq!(last.ranges, vec![Some(KeyRange::Int(1, 3))]);
    }

    #[test]
    fn a_key_not_in_the_table_is_refused() {
        let e = MergeKeys::new(&["x".to_string()], &schema(), "the table t")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("'x' is not a column of the table t"), "{e}");
    }
}
