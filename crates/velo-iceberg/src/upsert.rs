//! An updating result applied to an Iceberg table by key, copy-on-write:
//! an epoch's changes reduced to the last change of each key; the data
//! files that may hold one of those keys (Iceberg prunes them by the
//! per-file bounds of the key columns) read, and each file that does hold
//! one rewritten without those rows; the new rows of inserted and updated
//! keys written; all of it one `overwrite` snapshot ([`crate::rewrite`]).
//!
//! Why copy-on-write rather than equality or position deletes: a reader of
//! the table pays nothing for the upserts. Equality deletes make every
//! reader compare each row with every delete of a later snapshot until the
//! table is compacted (the "readers of upsert tables are many times
//! slower" complaint), and position deletes need the writer to find the
//! rows anyway (the read this does) while still leaving readers a merge.
//! The cost is on the writer: a file holding a changed key is rewritten
//! whole, so keys spread over every file rewrite the table each epoch.
//! Keys that arrive in order (ids, times) stay within few files thanks to
//! the bounds; `target_file_size` bounds what one changed key costs.

use std::collections::HashSet;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use futures::StreamExt;
use iceberg::expr::{Predicate, Reference};
use iceberg::scan::FileScanTask;
use iceberg::spec::Datum;
use iceberg::table::Table;
use velo_connectors::merge::{KeyRange, LastChanges, MergeKeys, last_changes};
use velo_connectors::{ChangeBatch, ConnectorError, Result};

use crate::bridge;
use crate::catalog::TableRef;
use crate::table::Columns;
use crate::write::{Writer, to_table_batch};

/// What an upsert did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Upserted {
    /// Keys written (inserted or updated).
    pub upserted: usize,
    /// Keys deleted.
    pub deleted: usize,
    /// Data files read because their bounds allow a changed key.
    pub files_read: usize,
    /// The data files rewritten (they held a changed key): the snapshot
    /// removes them.
    pub removed: Vec<String>,
}

/// Applies `changes` keyed by `key_columns` to `table`: the rewritten
/// files' other rows and the new rows go to `writer`; returns what was
/// done, with the files the snapshot must remove.
pub async fn apply(
    table: &Table,
    t: &TableRef,
    columns: &Columns,
    key_columns: &[String],
    changes: &[ChangeBatch],
    writer: &mut Writer,
) -> Result<Upserted> {
    let keys = MergeKeys::new(
        key_columns,
        &columns.arrow,
        &format!("the Iceberg table {}", t.shown),
    )?;
    // phase 1: the last change per key
    let LastChanges {
        upserts,
        changed: changed_keys,
        ranges,
        deleted,
    } = last_changes(changes, &keys)?;
    let mut done = Upserted {
        upserted: upserts.as_ref().map_or(0, |u| u.num_rows()),
        deleted,
        ..Upserted::default()
    };
    // phase 2: the files whose bounds allow a changed key, rewritten
    // without those keys when they hold one
    let filter = bounds(&keys, &ranges, columns);
    let (key_ids, key_schema) = key_columns_of(table, columns, keys.columns())?;
    for task in candidates(table, t, filter).await? {
        done.files_read += 1;
        // pass 1, the key columns only: does the file hold a changed key?
        let mut keys_only = task.clone();
        keys_only.project_field_ids = key_ids.clone();
        let rows = read(table, t, &key_schema, &keys_only).await?;
        if !keys.any_in(rows, &changed_keys).await? {
            continue;
        }
        // pass 2, whole rows: the file's other rows into the new files
        let mut rows = read(table, t, &columns.arrow, &task).await?;
        while let Some(batch) = rows.next().await {
            let kept = keys.without(&batch?, &changed_keys)?;
            if kept.num_rows() > 0 {
                writer.write(to_table_batch(&kept, columns, t)?, t).await?;
            }
        }
        done.removed.push(task.data_file_path.clone());
    }
    // phase 3: the keys' new rows
    if let Some(u) = upserts {
        writer.write(to_table_batch(&u, columns, t)?, t).await?;
    }
    Ok(done)
}

/// The field ids of the key columns and their engine schema, in the
/// table's column order (the order the reader returns them in).
fn key_columns_of(
    table: &Table,
    columns: &Columns,
    keys: &[String],
) -> Result<(Vec<i32>, SchemaRef)> {
    let schema = table.metadata().current_schema();
    let mut picked: Vec<(usize, i32)> = Vec::new();
    for k in keys {
        let index = columns.arrow.index_of(k)?;
        let id = schema
            .field_by_name(k)
            .map(|f| f.id)
            .ok_or_else(|| ConnectorError::Internal(format!("the key column '{k}' has no id")))?;
        picked.push((index, id));
    }
    picked.sort_unstable();
    let projected = columns
        .arrow
        .project(&picked.iter().map(|(i, _)| *i).collect::<Vec<_>>())?;
    Ok((
        picked.into_iter().map(|(_, id)| id).collect(),
        std::sync::Arc::new(projected),
    ))
}

/// A predicate that holds for the changed keys (each key column within
/// the changed keys' range), for pruning files by their bounds.
fn bounds(keys: &MergeKeys, ranges: &[Option<KeyRange>], columns: &Columns) -> Option<Predicate> {
    let mut out: Option<Predicate> = None;
    for (col, range) in keys.columns().iter().zip(ranges) {
        let Ok(field) = columns.arrow.field_with_name(col) else {
            continue;
        };
        let pair = match (range, field.data_type()) {
            (Some(KeyRange::Int(lo, hi)), DataType::Int32) => {
                match (i32::try_from(*lo), i32::try_from(*hi)) {
                    (Ok(lo), Ok(hi)) => Some((Datum::int(lo), Datum::int(hi))),
                    _ => None,
                }
            }
            (Some(KeyRange::Int(lo, hi)), DataType::Int64) => {
                Some((Datum::long(*lo), Datum::long(*hi)))
            }
            (Some(KeyRange::Text(lo, hi)), DataType::Utf8 | DataType::LargeUtf8) => {
                Some((Datum::string(lo), Datum::string(hi)))
            }
            _ => None,
        };
        let Some((lo, hi)) = pair else { continue };
        let r = Reference::new(col.as_str());
        let p = r
            .clone()
            .greater_than_or_equal_to(lo)
            .and(r.less_than_or_equal_to(hi));
        out = Some(match out {
            Some(o) => o.and(p),
            None => p,
        });
    }
    out
}

/// The current snapshot's data files that `filter` does not rule out, in
/// path order, each read whole (the filter chooses files; rows are not
/// filtered).
pub(crate) async fn candidates(
    table: &Table,
    t: &TableRef,
    filter: Option<Predicate>,
) -> Result<Vec<FileScanTask>> {
    if table.metadata().current_snapshot().is_none() {
        return Ok(Vec::new());
    }
    let mut scan = table.scan().select_all();
    if let Some(f) = filter {
        scan = scan.with_filter(f);
    }
    let planned = scan
        .build()
        .map_err(|e| t.error("plan a scan of", &e))?
        .plan_files()
        .await
        .map_err(|e| t.error("plan a scan of", &e))?;
    let mut tasks = planned
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<std::result::Result<Vec<FileScanTask>, _>>()
        .map_err(|e| t.error("plan a scan of", &e))?;
    let mut seen = HashSet::new();
    tasks.retain(|task| seen.insert(task.data_file_path.clone()));
    for task in &mut tasks {
        task.predicate = None;
        task.start = 0;
        task.length = task.file_size_in_bytes;
    }
    tasks.sort_by(|a, b| a.data_file_path.cmp(&b.data_file_path));
    Ok(tasks)
}

/// The rows of one data file (its delete files applied), the columns the
/// task projects, as the engine's batches of `schema` (those columns).
pub(crate) async fn read<'a>(
    table: &Table,
    t: &'a TableRef,
    schema: &'a SchemaRef,
    task: &FileScanTask,
) -> Result<futures::stream::BoxStream<'a, Result<RecordBatch>>> {
    let stream = table
        .reader_builder()
        .build()
        .read(Box::pin(futures::stream::iter([Ok(task.clone())])))
        .map_err(|e| t.error("read", &e))?
        .stream();
    Ok(stream
        .map(move |b| {
            let b = b.map_err(|e| t.error("read", &e))?;
            bridge::batch_from_iceberg(&b, schema).map_err(|e| ConnectorError::Other(e.to_string()))
        })
        .boxed())
}
