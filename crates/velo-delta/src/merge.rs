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

use deltalake::DeltaTable;
use deltalake::kernel::Remove;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::StreamExt;
use velo_connectors::merge::{KeyRange, LastChanges, MergeKeys, last_changes};
use velo_connectors::{ChangeBatch, ConnectorError, Result};

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

/// Whether a file whose statistics are `stats` (the log's JSON) may hold a
/// changed key: false only when some key column's [min, max] in the file
/// misses the changed keys' range of that column.
fn may_hold(stats: Option<&str>, keys: &MergeKeys, ranges: &[Option<KeyRange>]) -> bool {
    let Some(stats) = stats.and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok()) else {
        return true;
    };
    for (col, range) in keys.columns().iter().zip(ranges) {
        let (lo, hi) = (&stats["minValues"][col], &stats["maxValues"][col]);
        let disjoint = match range {
            Some(KeyRange::Int(a, b)) => match (lo.as_i64(), hi.as_i64()) {
                (Some(lo), Some(hi)) => hi < *a || lo > *b,
                _ => false,
            },
            // text statistics may be truncated prefixes: only the lower
            // bound is exact enough to rule a file out
            Some(KeyRange::Text(_, b)) => lo.as_str().is_some_and(|lo| lo > b.as_str()),
            None => false,
        };
        if disjoint {
            return false;
        }
    }
    true
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
    let keys = MergeKeys::new(key_columns, &schema, &format!("the Delta table {shown}"))?;
    // phase 1: the last change per key
    let LastChanges {
        upserts,
        changed: changed_keys,
        ranges,
        deleted,
    } = last_changes(changes, &keys)?;
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
        let rows = read::stream(store.clone(), &file, schema.clone(), 64 * 1024, 0).await?;
        if !keys.any_in(rows, &changed_keys).await? {
            continue;
        }
        // pass 2: its other rows into the new files
        let mut rows = read::stream(store.clone(), &file, schema.clone(), 64 * 1024, 0).await?;
        while let Some(batch) = rows.next().await {
            let kept = keys.without(&batch?, &changed_keys)?;
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

    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// Files are skipped only when their key range misses the changed keys.
    #[test]
    fn statistics_rule_out_files() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let k = MergeKeys::new(&["k".to_string()], &schema, "t").unwrap();
        let r = vec![Some(KeyRange::Int(10, 20))];
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
