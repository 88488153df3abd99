//! Keeping a table that a stream writes to fast to read: compaction
//! (`optimize`: the small files of each partition rewritten into files of
//! the target size, in one commit whose actions carry `dataChange = false`,
//! so readers that follow the table skip it) and `vacuum` (data files no
//! version within the retention period references are deleted: the files
//! compaction replaced, and those of epochs that were aborted).
//!
//! The sink compacts every `optimize_interval` commits; `velo delta
//! optimize|vacuum PATH` does either by hand.

use std::collections::BTreeMap;

use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::StreamExt;
use velo_connectors::{ConnectorError, Result};

use crate::read::{self, DataFile};

/// What a compaction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Files replaced.
    pub removed: usize,
    /// Files written.
    pub added: usize,
    /// The table version of the compaction's commit, if it committed.
    pub version: Option<u64>,
}

/// Rewrites, in each partition, the files smaller than `target` bytes
/// (when there are at least two) into files of about `target` bytes, and
/// commits the exchange as one version. A file with a deletion vector is
/// left alone.
pub async fn optimize(table: &mut DeltaTable, target: u64) -> Result<Compacted> {
    let shown = table_url_shown(table).to_string();
    let err = |what: &str, e: deltalake::DeltaTableError| crate::table::error(what, &shown, &e);
    // phase 1: the small files, by partition
    let snapshot = table.snapshot().map_err(|e| err("read", e))?;
    let schema = snapshot.snapshot().arrow_schema();
    let mut groups: BTreeMap<String, Vec<(DataFile, deltalake::kernel::Remove)>> = BTreeMap::new();
    for f in snapshot.log_data().iter() {
        if f.size() as u64 >= target || f.deletion_vector_descriptor().is_some() {
            continue;
        }
        let partitions = f.partition_values_map();
        let mut key: Vec<_> = partitions.iter().collect();
        key.sort();
        let file = DataFile {
            path: f.path().to_string(),
            partitions: partitions.clone(),
            size: f.size() as u64,
        };
        groups
            .entry(format!("{key:?}"))
            .or_default()
            .push((file, f.remove_action(false)));
    }
    groups.retain(|_, files| files.len() > 1);
    if groups.is_empty() {
        return Ok(Compacted::default());
    }
    // phase 2: the rows rewritten, partition by partition
    let store = table.object_store();
    let mut writer = RecordBatchWriter::for_table(table)
        .map_err(|e| err("compact", e))?
        .with_target_file_size(target);
    let mut removes = Vec::new();
    for files in groups.into_values() {
        for (file, remove) in files {
            let mut rows = read::stream(store.clone(), &file, schema.clone(), 64 * 1024, 0).await?;
            while let Some(batch) = rows.next().await {
                writer.write(batch?).await.map_err(|e| err("compact", e))?;
            }
            removes.push(remove);
        }
    }
    let adds = writer.flush().await.map_err(|e| err("compact", e))?;
    // phase 3: one commit exchanging them
    let (removed, added) = (removes.len(), adds.len());
    let actions: Vec<Action> = removes
        .into_iter()
        .map(Action::Remove)
        .chain(adds.into_iter().map(|mut a| {
            a.data_change = false;
            Action::Add(a)
        }))
        .collect();
    let snapshot = table.snapshot().map_err(|e| err("read", e))?;
    let done = CommitBuilder::from(CommitProperties::default().with_create_checkpoint(false))
        .with_actions(actions)
        .build(
            Some(snapshot),
            table.log_store(),
            DeltaOperation::Optimize {
                predicate: None,
                target_size: target as i64,
            },
        )
        .await
        .map_err(|e| err("commit the compaction of", e))?;
    let version = done.version();
    table.state = Some(done.snapshot());
    Ok(Compacted {
        removed,
        added,
        version: Some(version),
    })
}

/// Deletes the data files no version of the last `retain` references;
/// `dry_run`: only lists them. The table's own minimum retention
/// (`delta.deletedFileRetentionDuration`, 7 days by default) is enforced
/// unless `force`.
pub async fn vacuum(
    table: DeltaTable,
    retain: chrono::Duration,
    dry_run: bool,
    force: bool,
) -> Result<Vec<String>> {
    let shown = table_url_shown(&table).to_string();
    let (_, metrics) = table
        .vacuum()
        .with_retention_period(retain)
        .with_dry_run(dry_run)
        .with_enforce_retention_duration(!force)
        .await
        .map_err(|e| {
            ConnectorError::Other(format!(
                "cannot vacuum the Delta table {shown}: {}",
                velo_config::mask(&e.to_string())
            ))
        })?;
    Ok(metrics.files_deleted)
}

fn table_url_shown(table: &DeltaTable) -> &str {
    table.table_url().as_str()
}

/// The table at `path` (a directory or an object-store URL) with the
/// connector keys `keys` (`endpoint`, `region`, ...: the sink's), for the
/// command line.
pub async fn open_at(
    path: &str,
    keys: &std::collections::BTreeMap<String, String>,
) -> Result<DeltaTable> {
    let mut props = keys.clone();
    props.insert("path".into(), path.to_string());
    let cfg = velo_config::ConnectorConfig {
        name: "table".into(),
        role: velo_config::Role::Sink,
        kind: "delta".into(),
        props,
        origin: velo_config::Origin::Named,
        base_dir: std::env::current_dir().unwrap_or_default(),
        job: String::new(),
    };
    let ctx = velo_connectors::ConnectorContext::default();
    let location = crate::table::Location::of(&cfg, &ctx, false)?;
    location.load().await?.ok_or_else(|| {
        ConnectorError::Other(format!(
            "there is no Delta table at {} (no _delta_log); check the path",
            location.shown
        ))
    })
}
