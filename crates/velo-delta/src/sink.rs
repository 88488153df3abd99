//! `delta_sink`: every epoch of the job is one Delta commit.
//!
//! The epoch protocol maps onto a Delta write as follows:
//! - `write`: batches stream into Parquet data files of the table
//!   (deltalake's `RecordBatchWriter`: partition directories, column
//!   statistics, a new file at `target_file_size`). Files not yet in the
//!   log are invisible to every reader.
//! - `prepare_commit`: the files are finished; their `add` actions (and a
//!   `metaData` action when `schema.mode = 'merge'` widened the schema)
//!   become the epoch's recovery token, which the engine stores in its
//!   checkpoint.
//! - `commit`: one commit with those actions and, with `use_transactions`, a
//!   `txn` action (app id = the job's name, version = the epoch). A run
//!   that died after its checkpoint but before the commit finishes it from
//!   the token on restart (`recover`), unless the table's `txn` shows the
//!   epoch is already there: an epoch is in the table exactly once.
//! - `abort`: the epoch's files stay unreferenced (`velo delta vacuum`
//!   removes them).
//!
//! After a commit: a checkpoint every `checkpoint_interval` versions and a
//! compaction every `optimize_interval` commits ([`crate::maintenance`]).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use deltalake::DeltaTable;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, MetadataExt, StructType, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use velo_connectors::{ChangeBatch, ChangeOp, ConnectorError, Result, Sink, SinkCapabilities};

use crate::config::DeltaSinkConfig;
use crate::table::Location;

/// An epoch's finished files, not yet committed: the recovery token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Staged {
    epoch: u64,
    actions: Vec<Action>,
    /// A MERGE (removes and adds) rather than an append.
    #[serde(default)]
    merge: bool,
}

/// The Delta sink.
pub struct DeltaSink {
    name: String,
    cfg: DeltaSinkConfig,
    location: Location,
    handle: Handle,
    /// The query's schema (`set_schema`).
    schema: Option<SchemaRef>,
    /// The table, opened (or created) at the first epoch.
    table: Option<DeltaTable>,
    /// The epoch being written.
    writer: Option<RecordBatchWriter>,
    transactional: bool,
    staged: Option<Staged>,
    /// The table's last `txn` version of this job when the run began.
    committed_epoch: Option<i64>,
    /// Commits made by this run, for `optimize_interval`.
    commits: u64,
    /// The result is updating: its batches are changes (`set_changelog`).
    changelog: bool,
    /// The key of a MERGE: `merge_on`, else the result's key.
    key_columns: Vec<String>,
    /// A MERGE epoch's changes, applied at `prepare_commit`.
    changes: Vec<ChangeBatch>,
}

impl std::fmt::Debug for DeltaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeltaSink({} -> {})", self.name, self.location.shown)
    }
}

impl DeltaSink {
    /// A sink writing to `location`; nothing is contacted until the first
    /// epoch. Called on the runtime.
    pub fn new(name: &str, cfg: DeltaSinkConfig, location: Location) -> Result<Self> {
        let handle = Handle::try_current().map_err(|_| {
            ConnectorError::Internal("the Delta sink is created outside the runtime".into())
        })?;
        Ok(Self {
            name: name.to_string(),
            cfg,
            location,
            handle,
            schema: None,
            table: None,
            writer: None,
            transactional: false,
            staged: None,
            committed_epoch: None,
            commits: 0,
            changelog: false,
            key_columns: Vec::new(),
            changes: Vec::new(),
        })
    }

    /// Whether epochs are MERGEs by key rather than appends.
    fn merges(&self) -> bool {
        self.changelog || self.cfg.merge
    }

    /// Phase 1 of the first epoch: the table as it is, or a new one with the
    /// query's columns; the query's columns checked against it.
    fn open(&mut self) -> Result<()> {
        if self.table.is_some() {
            return Ok(());
        }
        let schema = self.schema.clone().ok_or_else(|| {
            ConnectorError::Internal("the Delta sink got no schema before its first epoch".into())
        })?;
        // an updating result's operation column is not the table's
        let schema: SchemaRef = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .filter(|f| f.name() != velo_connectors::sink::OP_COLUMN)
                .cloned()
                .collect::<Vec<_>>(),
        ));
        if self.merges() {
            if self.key_columns.is_empty() {
                return Err(ConnectorError::Other(format!(
                    "the Delta sink '{}' merges by key, but the result has no key: set merge_on to the key columns",
                    self.name
                )));
            }
            for k in &self.key_columns {
                if schema.field_with_name(k).is_err() {
                    return Err(ConnectorError::Other(format!(
                        "merge_on names '{k}', which the query does not produce; its columns are: {}",
                        names(&schema)
                    )));
                }
            }
        }
        let loc = self.location.clone();
        let cfg = self.cfg.clone();
        let table = self.handle.block_on(async {
            match loc.load().await? {
                Some(t) => {
                    check_schema(&t, &schema, &cfg, &loc)?;
                    Ok(t)
                }
                None => create(&loc, &schema, &cfg).await,
            }
        })?;
        self.committed_epoch = self.handle.block_on(async {
            let snapshot = table
                .snapshot()
                .map_err(|e| loc.error("read the state of", &e))?;
            snapshot
                .transaction_version(table.log_store().as_ref(), &cfg.app_id)
                .await
                .map_err(|e| loc.error("read the transactions of", &e))
        })?;
        self.table = Some(table);
        Ok(())
    }

    fn table(&self) -> Result<&DeltaTable> {
        self.table
            .as_ref()
            .ok_or_else(|| ConnectorError::Internal("the Delta table is not open".into()))
    }

    /// Commits `staged` as one table version, with the job's `txn` in
    /// transactional mode; then the maintenance its interval asks for.
    fn commit_staged(&mut self, staged: Staged) -> Result<()> {
        if staged.actions.is_empty() {
            return Ok(());
        }
        let loc = self.location.clone();
        let merge = staged.merge;
        let keys = self.key_columns.join(", ");
        let mut props = CommitProperties::default().with_create_checkpoint(false);
        if self.transactional {
            props = props.with_application_transaction(Transaction::new_with_last_update(
                &self.cfg.app_id,
                staged.epoch as i64,
                Some(chrono::Utc::now().timestamp_millis()),
            ));
        }
        let table = self
            .table
            .as_mut()
            .ok_or_else(|| ConnectorError::Internal("the Delta table is not open".into()))?;
        let version = self.handle.block_on(async {
            let snapshot = table
                .snapshot()
                .map_err(|e| loc.error("read the state of", &e))?;
            let partition_by = snapshot.metadata().partition_columns().to_vec();
            let operation = if merge {
                let on = |t: &str| deltalake::protocol::MergePredicate {
                    action_type: t.to_string(),
                    predicate: None,
                };
                DeltaOperation::Merge {
                    predicate: None,
                    merge_predicate: Some(format!("key ({keys})")),
                    matched_predicates: vec![on("update"), on("delete")],
                    not_matched_predicates: vec![on("insert")],
                    not_matched_by_source_predicates: Vec::new(),
                }
            } else {
                DeltaOperation::Write {
                    mode: SaveMode::Append,
                    partition_by: (!partition_by.is_empty()).then_some(partition_by),
                    predicate: None,
                }
            };
            let done = CommitBuilder::from(props)
                .with_actions(staged.actions)
                .with_app_metadata(HashMap::from([(
                    "velo.epoch".to_string(),
                    serde_json::Value::from(staged.epoch),
                )]))
                .build(Some(snapshot), table.log_store(), operation)
                .await
                .map_err(|e| loc.error("commit to", &e))?;
            let version = done.version();
            table.state = Some(done.snapshot());
            Ok::<_, ConnectorError>(version)
        })?;
        self.commits += 1;
        tracing::debug!(sink = %self.name, epoch = staged.epoch, version, "committed to the Delta table");
        self.maintain(version)
    }

    /// Phase after a commit: a checkpoint and a compaction when due. A
    /// failure here loses nothing (the commit stands), so it is logged.
    fn maintain(&mut self, version: u64) -> Result<()> {
        let (ci, oi) = (self.cfg.checkpoint_interval, self.cfg.optimize_interval);
        let loc = self.location.clone();
        let target = self.cfg.target_file_size;
        let table = self
            .table
            .as_mut()
            .ok_or_else(|| ConnectorError::Internal("the Delta table is not open".into()))?;
        if oi > 0 && self.commits.is_multiple_of(oi) {
            match self
                .handle
                .block_on(crate::maintenance::optimize(table, target))
            {
                Ok(m) => {
                    tracing::info!(sink = %self.name, "compacted {} files into {}", m.removed, m.added)
                }
                Err(e) => {
                    tracing::warn!(sink = %self.name, "compaction of {} failed (the data is intact; it runs again after the next {oi} commits): {e}", loc.shown)
                }
            }
        }
        if ci > 0 && version > 0 && version.is_multiple_of(ci) {
            if let Err(e) = self
                .handle
                .block_on(deltalake::checkpoints::create_checkpoint(table, None))
            {
                tracing::warn!(sink = %self.name, "checkpoint of {} at version {version} failed (readers replay the log instead): {}", loc.shown, velo_config::mask(&e.to_string()));
            }
        }
        Ok(())
    }
}

impl DeltaSink {
    /// A MERGE epoch's `prepare_commit`: the changes applied by key into
    /// new files ([`crate::merge`]), staged as removes and adds.
    fn prepare_merge(&mut self, epoch: u64) -> Result<()> {
        let changes = std::mem::take(&mut self.changes);
        if changes.is_empty() {
            self.staged = Some(Staged {
                epoch,
                actions: Vec::new(),
                merge: true,
            });
            return Ok(());
        }
        let loc = self.location.clone();
        let table = self
            .table
            .as_ref()
            .ok_or_else(|| ConnectorError::Internal("the Delta table is not open".into()))?;
        let mut writer = RecordBatchWriter::for_table(table)
            .map_err(|e| loc.error("write to", &e))?
            .with_target_file_size(self.cfg.target_file_size);
        let keys = self.key_columns.clone();
        let (removes, adds, done) = self.handle.block_on(async {
            let (removes, done) = crate::merge::apply(table, &mut writer, &keys, &changes).await?;
            let adds = writer
                .flush()
                .await
                .map_err(|e| loc.error("finish the data files of", &e))?;
            Ok::<_, ConnectorError>((removes, adds, done))
        })?;
        tracing::debug!(sink = %self.name, epoch, ?done, "merge prepared");
        let actions = removes
            .into_iter()
            .map(Action::Remove)
            .chain(adds.into_iter().map(Action::Add))
            .collect();
        self.staged = Some(Staged {
            epoch,
            actions,
            merge: true,
        });
        Ok(())
    }
}

/// A new table with the query's columns (and `partition_by`).
async fn create(loc: &Location, schema: &SchemaRef, cfg: &DeltaSinkConfig) -> Result<DeltaTable> {
    for p in &cfg.partition_by {
        if schema.field_with_name(p).is_err() {
            return Err(ConnectorError::Other(format!(
                "partition_by names '{p}', which the query does not produce; its columns are: {}",
                names(schema)
            )));
        }
    }
    let delta: StructType = delta_schema(schema)?;
    let mut b = loc
        .table()
        .map_err(|e| loc.error("open", &e))?
        .create()
        .with_columns(delta.fields().cloned())
        .with_partition_columns(cfg.partition_by.clone())
        .with_save_mode(SaveMode::ErrorIfExists);
    if let Some(n) = &cfg.table_name {
        b = b.with_table_name(n);
    }
    match b.await {
        Ok(t) => {
            tracing::info!("created the Delta table {}", loc.shown);
            Ok(t)
        }
        // another writer created it first: use theirs
        Err(e) if e.to_string().contains("already exists") => {
            loc.load().await?.ok_or_else(|| loc.error("create", &e))
        }
        Err(e) => Err(loc.error("create", &e)),
    }
}

/// The query's columns as a Delta schema, or which column Delta cannot
/// hold and what to do.
fn delta_schema(schema: &Schema) -> Result<StructType> {
    let normalized =
        deltalake::kernel::schema::cast::normalize_for_delta(&Arc::new(schema.clone()));
    for f in normalized.fields() {
        let one = Schema::new(vec![f.as_ref().clone()]);
        let r: std::result::Result<StructType, _> = (&one).try_into_kernel();
        if let Err(e) = r {
            return Err(ConnectorError::Other(format!(
                "the column '{}' of type {} has no Delta type ({e}); CAST it in the SELECT (unsigned integers to BIGINT, for instance)",
                f.name(),
                f.data_type()
            )));
        }
    }
    normalized.as_ref().try_into_kernel().map_err(|e| {
        ConnectorError::Other(format!("the query's columns have no Delta schema: {e}"))
    })
}

/// The query against an existing table: its partitioning as configured,
/// no column it lacks (unless `schema.mode = 'merge'`), and types that
/// convert.
fn check_schema(
    table: &DeltaTable,
    query: &SchemaRef,
    cfg: &DeltaSinkConfig,
    loc: &Location,
) -> Result<()> {
    let snapshot = table
        .snapshot()
        .map_err(|e| loc.error("read the state of", &e))?;
    let parts = snapshot.metadata().partition_columns();
    if !cfg.partition_by.is_empty() && cfg.partition_by != parts {
        return Err(ConnectorError::Other(format!(
            "the Delta table {} is partitioned by ({}), but partition_by says ({}): drop partition_by or write to a new table",
            loc.shown,
            parts.join(", "),
            cfg.partition_by.join(", ")
        )));
    }
    let existing = snapshot.snapshot().arrow_schema();
    let query = deltalake::kernel::schema::cast::normalize_for_delta(query);
    let mut missing = Vec::new();
    for f in query.fields() {
        match existing.field_with_name(f.name()) {
            Err(_) => missing.push(f.name().clone()),
            Ok(t) if !velo_connectors::schema::widens(f.data_type(), t.data_type()) => {
                return Err(ConnectorError::Other(format!(
                    "the column '{}' is {} in the query and {} in the Delta table {}: CAST it in the SELECT to the table's type",
                    f.name(),
                    f.data_type(),
                    t.data_type(),
                    loc.shown
                )));
            }
            Ok(_) => {}
        }
    }
    if !missing.is_empty() {
        if !cfg.merge_schema {
            return Err(ConnectorError::Other(format!(
                "the Delta table {} has no column(s) {}: set schema.mode = 'merge' to add them to the table, or leave them out of the SELECT",
                loc.shown,
                missing.join(", ")
            )));
        }
        if !parts.is_empty() {
            return Err(ConnectorError::Other(format!(
                "schema.mode = 'merge' cannot add the column(s) {} to the partitioned Delta table {} (the Delta writer does not evolve partitioned tables); add them with an ALTER TABLE in Spark or a new table",
                missing.join(", "),
                loc.shown
            )));
        }
    }
    for f in existing.fields() {
        if !f.is_nullable() && query.field_with_name(f.name()).is_err() {
            return Err(ConnectorError::Other(format!(
                "the Delta table {} requires the column '{}' (NOT NULL), which the query does not produce",
                loc.shown,
                f.name()
            )));
        }
    }
    Ok(())
}

fn names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Sink for DeltaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> SinkCapabilities {
        SinkCapabilities { transactions: true }
    }

    fn set_transactional(&mut self, on: bool) {
        self.transactional = on;
    }

    fn set_schema(&mut self, schema: SchemaRef) {
        self.schema = Some(schema);
    }

    fn set_key_columns(&mut self, columns: &[String]) {
        self.key_columns = if self.cfg.merge_on.is_empty() {
            columns.to_vec()
        } else {
            self.cfg.merge_on.clone()
        };
    }

    fn set_changelog(&mut self) {
        self.changelog = true;
    }

    fn begin_epoch(&mut self, epoch: u64) -> Result<()> {
        self.open()?;
        if self.transactional {
            if let Some(v) = self.committed_epoch.filter(|v| *v >= epoch as i64) {
                return Err(ConnectorError::Other(format!(
                    "the Delta table {} already holds epoch {v} of the job '{}', and this run is at epoch {epoch}: the job's checkpoint (state.dir) is missing or older than the table. Writing again would duplicate what the table has. Restore the state directory, or write to a new table, or give the job another name",
                    self.location.shown, self.cfg.app_id
                )));
            }
        }
        if self.merges() {
            self.changes.clear();
        } else if self.writer.is_none() {
            let w = RecordBatchWriter::for_table(self.table()?)
                .map_err(|e| self.location.error("write to", &e))?
                .with_target_file_size(self.cfg.target_file_size);
            self.writer = Some(w);
        }
        Ok(())
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.changelog {
            self.changes.push(ChangeBatch::from_batch(batch)?);
            return Ok(());
        }
        if self.cfg.merge {
            // every row replaces the row of its key
            let ops = vec![ChangeOp::Update; batch.num_rows()];
            self.changes.push(ChangeBatch::new(batch.clone(), ops)?);
            return Ok(());
        }
        let mode = if self.cfg.merge_schema {
            WriteMode::MergeSchema
        } else {
            WriteMode::Default
        };
        let loc = &self.location;
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| ConnectorError::Internal("write outside an epoch".into()))?;
        self.handle
            .block_on(writer.write_with_mode(batch.clone(), mode))
            .map_err(|e| loc.error("write to", &e))
    }

    fn prepare_commit(&mut self, epoch: u64) -> Result<()> {
        if self.merges() {
            return self.prepare_merge(epoch);
        }
        let loc = self.location.clone();
        let Some(mut writer) = self.writer.take() else {
            self.staged = Some(Staged {
                epoch,
                actions: Vec::new(),
                merge: false,
            });
            return Ok(());
        };
        // a widened schema (schema.mode = 'merge') is committed with the data
        let widened = writer.arrow_schema();
        let adds = self
            .handle
            .block_on(writer.flush())
            .map_err(|e| loc.error("finish the data files of", &e))?;
        let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
        let snapshot = self
            .table()?
            .snapshot()
            .map_err(|e| loc.error("read", &e))?;
        if !actions.is_empty() && widened.as_ref() != snapshot.snapshot().arrow_schema().as_ref() {
            let widened: StructType = widened
                .as_ref()
                .try_into_kernel()
                .map_err(|e| ConnectorError::Other(format!("the widened schema: {e}")))?;
            if widened != *snapshot.schema() {
                let meta = snapshot
                    .metadata()
                    .clone()
                    .with_schema(&widened)
                    .map_err(|e| {
                        ConnectorError::Other(format!(
                            "cannot evolve the schema of the Delta table {}: {e}",
                            loc.shown
                        ))
                    })?;
                tracing::info!(sink = %self.name, "adding columns to the Delta table {} (schema.mode = 'merge')", loc.shown);
                actions.push(Action::Metadata(meta));
            }
        }
        self.staged = Some(Staged {
            epoch,
            actions,
            merge: false,
        });
        Ok(())
    }

    fn commit_token(&self) -> Option<serde_json::Value> {
        if !self.transactional {
            return None;
        }
        self.staged
            .as_ref()
            .filter(|s| !s.actions.is_empty())
            .and_then(|s| serde_json::to_value(s).ok())
    }

    fn recover(&mut self, token: &serde_json::Value) -> Result<()> {
        let staged: Staged = serde_json::from_value(token.clone()).map_err(|e| {
            ConnectorError::Other(format!(
                "the checkpoint's Delta commit for {} cannot be read ({e}); move the state directory away to start over",
                self.location.shown
            ))
        })?;
        self.open()?;
        if self
            .committed_epoch
            .is_some_and(|v| v >= staged.epoch as i64)
        {
            tracing::info!(sink = %self.name, epoch = staged.epoch, "the Delta table already holds the checkpoint's epoch");
            return Ok(());
        }
        tracing::info!(sink = %self.name, epoch = staged.epoch, "committing the checkpoint's epoch to the Delta table");
        let was = std::mem::replace(&mut self.transactional, true);
        let epoch = staged.epoch as i64;
        let r = self.commit_staged(staged);
        self.transactional = was;
        r?;
        self.committed_epoch = Some(epoch);
        Ok(())
    }

    fn commit(&mut self, epoch: u64) -> Result<()> {
        let Some(staged) = self.staged.take() else {
            return Ok(());
        };
        if staged.epoch != epoch {
            return Err(ConnectorError::Internal(format!(
                "commit of epoch {epoch}, but epoch {} was prepared",
                staged.epoch
            )));
        }
        self.commit_staged(staged)
    }

    fn abort(&mut self, epoch: u64) -> Result<()> {
        if let Some(mut w) = self.writer.take() {
            w.reset();
        }
        self.changes.clear();
        if self.staged.take().is_some() {
            tracing::debug!(sink = %self.name, epoch, "the epoch's Delta files stay unreferenced (velo delta vacuum removes them)");
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let Some(mut w) = self.writer.take() {
            w.reset();
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "Delta table {} ({}{}{})",
            self.location.shown,
            if self.merges() {
                format!("merge on {}", self.key_columns.join(", "))
            } else {
                "append".into()
            },
            if self.cfg.partition_by.is_empty() {
                String::new()
            } else {
                format!(", partitioned by {}", self.cfg.partition_by.join(", "))
            },
            if self.cfg.merge_schema {
                ", schema merge"
            } else {
                ""
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field};

    use super::*;

    fn config() -> DeltaSinkConfig {
        DeltaSinkConfig {
            partition_by: Vec::new(),
            merge_schema: false,
            target_file_size: 1 << 20,
            checkpoint_interval: 0,
            optimize_interval: 0,
            table_name: None,
            merge_on: Vec::new(),
            merge: false,
            app_id: "job".into(),
        }
    }

    fn batch(ids: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids.to_vec()))]).unwrap()
    }

    fn sink(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> DeltaSink {
        let _g = rt.enter();
        let mut s = DeltaSink::new("lake", config(), Location::local(dir).unwrap()).unwrap();
        s.set_transactional(true);
        s.set_schema(batch(&[]).schema());
        s
    }

    fn version_and_txn(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> (u64, Option<i64>) {
        rt.block_on(async {
            let t = Location::local(dir).unwrap().load().await.unwrap().unwrap();
            let txn = t
                .snapshot()
                .unwrap()
                .transaction_version(t.log_store().as_ref(), "job")
                .await
                .unwrap();
            (t.version().unwrap() as u64, txn)
        })
    }

    /// An epoch prepared and checkpointed but not committed (the process
    /// died) is committed by `recover`, once however often recovery runs;
    /// a run that would write that epoch again is refused.
    #[test]
    fn a_checkpointed_epoch_is_committed_exactly_once() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let d = tempfile::tempdir().unwrap();
        let mut first = sink(&rt, d.path());
        first.begin_epoch(1).unwrap();
        first.write(&batch(&[1, 2, 3])).unwrap();
        first.prepare_commit(1).unwrap();
        let token = first
            .commit_token()
            .expect("a transactional epoch has a token");
        drop(first);
        // version 0 is the table's creation; the epoch is not in it
        assert_eq!(version_and_txn(&rt, d.path()), (0, None));
        for _ in 0..2 {
            let mut again = sink(&rt, d.path());
            again.recover(&token).unwrap();
            assert_eq!(version_and_txn(&rt, d.path()), (1, Some(1)));
        }
        let mut stale = sink(&rt, d.path());
        let e = stale.begin_epoch(1).unwrap_err().to_string();
        assert!(e.contains("already holds epoch 1"), "{e}");
        // the next epoch goes on
        stale.begin_epoch(2).unwrap();
        stale.write(&batch(&[4])).unwrap();
        stale.prepare_commit(2).unwrap();
        stale.commit(2).unwrap();
        assert_eq!(version_and_txn(&rt, d.path()), (2, Some(2)));
    }
}
