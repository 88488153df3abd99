//! Table maintenance: snapshot expiry and compaction, for the sink's
//! `expire_interval` and `compact_interval` and for `velo iceberg expire`
//! and `velo iceberg compact`.
//!
//! Every commit reads and rewrites the table's metadata file, which lists
//! every snapshot; a streaming sink adds one per epoch, so without expiry
//! each commit gets slower than the last. Expiry drops snapshots older than
//! a maximum age beyond the latest few from the metadata (time travel
//! reaches back that far), then deletes the files only they referenced
//! (their manifest lists, manifests, and the data files upserts and
//! compaction replaced), so storage does not grow with every rewrite.
//!
//! A streaming sink also writes small files (an epoch's rows per
//! partition), and readers pay per file. Compaction rewrites each
//! partition's small files into files of `target_file_size`, as one
//! `replace` snapshot (the same rows: readers that follow the table skip
//! it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use iceberg::Catalog;
use iceberg::spec::Operation;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use velo_connectors::{ConnectorError, Result};

use crate::catalog::TableRef;
use crate::commit::{self, CommitError};
use crate::rewrite::{self, Rewrite};
use crate::table::Columns;
use crate::upsert;
use crate::write::{Writer, to_table_batch};

/// What a compaction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Small files rewritten.
    pub files_in: usize,
    /// Files written for them.
    pub files_out: usize,
}

/// Compacts `table`: in each partition with at least `min_files` data
/// files under three quarters of `target_file_size`, those files are
/// rewritten into files of `target_file_size` (their delete files
/// applied), all in one `replace` snapshot. Returns the table after it.
pub async fn compact(
    t: &TableRef,
    catalog: &dyn Catalog,
    table: &Table,
    target_file_size: u64,
    min_files: usize,
) -> Result<(Table, Compacted)> {
    // phase 1: the small files of the partitions that have enough of them
    let spec_id = table.metadata().default_partition_spec_id();
    let mut parts: BTreeMap<String, Vec<iceberg::scan::FileScanTask>> = BTreeMap::new();
    for task in upsert::candidates(table, t, None).await? {
        let spec = task.partition_spec.as_ref().map(|s| s.spec_id());
        if task.file_size_in_bytes >= target_file_size / 4 * 3 || spec.unwrap_or(spec_id) != spec_id
        {
            continue;
        }
        parts
            .entry(format!("{:?}", task.partition))
            .or_default()
            .push(task);
    }
    let chosen: Vec<_> = parts
        .into_values()
        .filter(|files| files.len() >= min_files.max(2))
        .flatten()
        .collect();
    if chosen.is_empty() {
        return Ok((table.clone(), Compacted::default()));
    }
    // phase 2: their rows into new files
    let columns = Columns::of(table, t)?;
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let mut writer = Writer::new(
        table,
        t,
        target_file_size,
        "velo-compact".into(),
        format!("{nanos:x}"),
    )
    .await?;
    for task in &chosen {
        let mut rows = upsert::read(table, t, &columns.arrow, task).await?;
        while let Some(batch) = rows.next().await {
            writer
                .write(to_table_batch(&batch?, &columns, t)?, t)
                .await?;
        }
    }
    let added = writer.close(t).await?;
    let done = Compacted {
        files_in: chosen.len(),
        files_out: added.len(),
    };
    // phase 3: one replace snapshot
    let rewrite = Rewrite {
        operation: Operation::Replace,
        removed: chosen
            .iter()
            .map(|f| f.data_file_path.clone())
            .collect::<HashSet<_>>(),
        added,
        summary: HashMap::from([("velo.compaction".to_string(), "true".to_string())]),
        properties: HashMap::new(),
    };
    let (updates, requirements) = rewrite::build(table, rewrite).await?;
    let after = commit::commit(t, catalog, updates, requirements)
        .await
        .map_err(|e| match e {
            CommitError::Conflict(m) => ConnectorError::Other(format!(
                "{m}; the compaction was dropped (its files stay unreferenced) and can run again"
            )),
            CommitError::Failed(e) => e,
        })?;
    Ok((after, done))
}

/// What an expiry did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// Snapshots removed from the metadata.
    pub snapshots: usize,
    /// Files deleted that only those snapshots referenced.
    pub files: usize,
}

/// Expires the snapshots of `table` older than `max_age`, keeping the
/// latest `keep`, and deletes the files only they referenced; returns the
/// table after it.
pub async fn expire(
    catalog: &dyn Catalog,
    table: &Table,
    max_age: Duration,
    keep: usize,
) -> Result<(Table, Expired)> {
    let fail = |e: iceberg::Error| {
        ConnectorError::Other(format!(
            "cannot expire the snapshots of {}: {}",
            table.identifier(),
            velo_config::mask(&e.to_string())
        ))
    };
    // phase 1: what the snapshots reference now
    let before = table.metadata().snapshots().len();
    let referenced_before = referenced(table).await.map_err(fail)?;
    // phase 2: the expiry, one metadata commit
    let cutoff = chrono::Utc::now().timestamp_millis() - max_age.as_millis() as i64;
    let tx = Transaction::new(table);
    let action = tx
        .expire_snapshots()
        .expire_older_than_ms(cutoff)
        .retain_last(keep.max(1));
    let tx = action.apply(tx).map_err(fail)?;
    let after = tx.commit(catalog).await.map_err(fail)?;
    let snapshots = before.saturating_sub(after.metadata().snapshots().len());
    if snapshots == 0 {
        return Ok((after, Expired::default()));
    }
    // phase 3: the files no remaining snapshot references. Files of a
    // commit in flight are in no snapshot yet, so not in `referenced_before`.
    let still = referenced(&after).await.map_err(fail)?;
    let mut files = 0;
    for path in referenced_before.difference(&still) {
        match after.file_io().delete(path).await {
            Ok(()) => files += 1,
            Err(e) => {
                tracing::warn!(
                    "cannot delete {path}, which no snapshot of {} references any more: {e}",
                    table.identifier()
                )
            }
        }
    }
    Ok((after, Expired { snapshots, files }))
}

/// Every file the snapshots of `table` reference: manifest lists,
/// manifests, and the live data and delete files of the manifests (a file
/// a manifest lists as deleted is needed only by the snapshots before it,
/// where it is live).
async fn referenced(table: &Table) -> iceberg::Result<HashSet<String>> {
    let mut out = HashSet::new();
    let mut manifests = HashSet::new();
    for s in table.metadata().snapshots() {
        out.insert(s.manifest_list().to_string());
        let list = table.manifest_list_reader(s).load().await?;
        for m in list.entries() {
            if !manifests.insert(m.manifest_path.clone()) {
                continue;
            }
            out.insert(m.manifest_path.clone());
            let manifest = m.load_manifest(table.file_io()).await?;
            out.extend(
                manifest
                    .entries()
                    .iter()
                    .filter(|e| e.is_alive())
                    .map(|e| e.file_path().to_string()),
            );
        }
    }
    Ok(out)
}

/// A table opened for maintenance by [`open_at`].
pub struct Opened {
    /// Which table, as configured.
    pub at: TableRef,
    /// Its catalog.
    pub catalog: std::sync::Arc<dyn Catalog>,
    /// The table as loaded.
    pub table: Table,
}

/// The table `table` (`namespace.table`) of the catalog the connector keys
/// `keys` name (`catalog_uri`, `warehouse`, store keys), and its catalog,
/// for the command line.
pub async fn open_at(
    table: &str,
    keys: &std::collections::BTreeMap<String, String>,
) -> Result<Opened> {
    let mut props = keys.clone();
    props.insert("table".into(), table.to_string());
    let cfg = velo_config::ConnectorConfig {
        name: "table".into(),
        role: velo_config::Role::Sink,
        kind: "iceberg".into(),
        props,
        origin: velo_config::Origin::Named,
        base_dir: std::env::current_dir().unwrap_or_default(),
        job: String::new(),
    };
    let t = crate::catalog::TableRef::from_config(&cfg)?;
    let ctx = velo_connectors::ConnectorContext::default();
    let catalog = t.connect(&cfg.props, &ctx).await?;
    let loaded = catalog
        .load_table(&t.ident)
        .await
        .map_err(|e| t.error("load", &e))?;
    Ok(Opened {
        at: t,
        catalog,
        table: loaded,
    })
}
