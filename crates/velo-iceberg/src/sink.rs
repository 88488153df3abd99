//! `iceberg_sink`: every epoch of the job is one Iceberg snapshot.
//!
//! The epoch protocol maps onto an Iceberg write as follows:
//! - `write`: batches stream into Parquet data files under the table's
//!   `data/` folder (iceberg-rust's writers: one file per partition of the
//!   spec, column statistics by field id, a new file at
//!   `target_file_size`). Files no snapshot references are invisible to
//!   every reader.
//! - `prepare_commit`: the files are finished; their descriptions (path,
//!   partition, statistics) become the epoch's recovery token, which the
//!   engine stores in its checkpoint.
//! - `commit`: one append snapshot with those files whose summary carries
//!   `velo.job` (the job) and `velo.epoch` (the epoch), and the table
//!   property `velo.epoch.<job>` set in the same metadata commit. A run
//!   that died after its checkpoint but before the commit finishes it from
//!   the token on restart (`recover`), unless the table shows the epoch is
//!   there already: an epoch is in the table exactly once.
//! - `abort`: the epoch's files stay unreferenced.
//!
//! After a commit, every `expire_interval` commits, snapshots older than
//! `snapshot_max_age` beyond the latest `min_snapshots` are expired, so the
//! table's metadata (read and rewritten by every commit) stays small, and
//! the files only they referenced are deleted; every `compact_interval`
//! commits small files are compacted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use iceberg::Catalog;
use iceberg::spec::{DataFile, FormatVersion, Operation};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use velo_connectors::{
    ChangeBatch, ChangeOp, ConnectorContext, ConnectorError, Result, Sink, SinkCapabilities,
};

use crate::commit::{self, CommitError};
use crate::config::IcebergSinkConfig;
use crate::rewrite::{self, Rewrite};
use crate::table::{self, Columns};
use crate::upsert;
use crate::write::{Writer, to_table_batch};

/// An epoch's finished files, not yet committed: the recovery token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Staged {
    epoch: u64,
    /// The partition spec the files were written with.
    spec_id: i32,
    /// The files, in Iceberg's JSON form of a data file.
    files: Vec<String>,
    /// An upsert's files that the snapshot removes (rewritten without the
    /// changed keys); none: the epoch appends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    removed: Vec<String>,
}

/// The Iceberg sink.
pub struct IcebergSink {
    name: String,
    cfg: IcebergSinkConfig,
    /// The connector's keys (object-store access for the table's files).
    keys: BTreeMap<String, String>,
    ctx: ConnectorContext,
    handle: Handle,
    /// The query's schema (`set_schema`).
    schema: Option<SchemaRef>,
    catalog: Option<Arc<dyn Catalog>>,
    /// The table, opened (or created) at the first epoch.
    table: Option<Table>,
    /// The table's columns.
    columns: Option<Columns>,
    writer: Option<Writer>,
    /// The result is updating: its batches are changes (`set_changelog`).
    changelog: bool,
    /// The key of an upsert: `merge_on`, else the result's key.
    key_columns: Vec<String>,
    /// An upserting epoch's changes, applied at `prepare_commit`.
    changes: Vec<ChangeBatch>,
    transactional: bool,
    staged: Option<Staged>,
    /// The table's last epoch of this job when the run began.
    committed_epoch: Option<u64>,
    /// Commits made by this run, for `expire_interval`.
    commits: u64,
    /// Names this run's data files apart from any other run's.
    run_id: String,
}

impl std::fmt::Debug for IcebergSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IcebergSink({} -> {})", self.name, self.cfg.table.shown)
    }
}

impl IcebergSink {
    /// A sink writing to the configured table; nothing is contacted until
    /// the first epoch. Called on the runtime.
    pub fn new(
        name: &str,
        cfg: IcebergSinkConfig,
        keys: &BTreeMap<String, String>,
        ctx: &ConnectorContext,
    ) -> Result<Self> {
        let handle = Handle::try_current().map_err(|_| {
            ConnectorError::Internal("the Iceberg sink is created outside the runtime".into())
        })?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Ok(Self {
            name: name.to_string(),
            cfg,
            keys: keys.clone(),
            ctx: ctx.clone(),
            handle,
            schema: None,
            catalog: None,
            table: None,
            columns: None,
            writer: None,
            changelog: false,
            key_columns: Vec::new(),
            changes: Vec::new(),
            transactional: false,
            staged: None,
            committed_epoch: None,
            commits: 0,
            run_id: format!("{:x}{:x}", nanos, std::process::id()),
        })
    }

    /// Phase 1 of the first epoch: the catalog, the table as it is (or a
    /// new one with the query's columns), the query checked against it, and
    /// the last epoch of this job the table holds.
    fn open(&mut self) -> Result<()> {
        if self.table.is_some() {
            return Ok(());
        }
        let query = self.schema.clone().ok_or_else(|| {
            ConnectorError::Internal("the Iceberg sink got no schema before its first epoch".into())
        })?;
        let t = self.cfg.table.clone();
        let (keys, ctx, cfg) = (self.keys.clone(), self.ctx.clone(), self.cfg.clone());
        let (catalog, table) = self.handle.block_on(async {
            let catalog = t.connect(&keys, &ctx).await?;
            let table =
                table::load_or_create(catalog.as_ref(), &t, &query, &cfg.partition_by).await?;
            let table = evolve(catalog.as_ref(), table, &query, &cfg).await?;
            Ok::<_, ConnectorError>((catalog, table))
        })?;
        let columns = Columns::of(&table, &t)?;
        check_columns(&query, &columns.arrow, &t.shown)?;
        self.committed_epoch = table::committed_epoch(&table, &self.cfg.app_id);
        self.catalog = Some(catalog);
        self.table = Some(table);
        self.columns = Some(columns);
        Ok(())
    }

    fn table(&self) -> Result<&Table> {
        self.table
            .as_ref()
            .ok_or_else(|| ConnectorError::Internal("the Iceberg table is not open".into()))
    }

    /// Whether rows replace rows by key: an updating result, or `mode =
    /// 'merge'` / `merge_on`.
    fn upserts(&self) -> bool {
        self.changelog || self.cfg.write.merge
    }

    /// A writer of new data files for epoch `epoch`.
    fn writer(&self, epoch: u64) -> Result<Writer> {
        let table = self.table()?;
        self.handle.block_on(Writer::new(
            table,
            &self.cfg.table,
            self.cfg.target_file_size,
            format!("velo-{epoch:08}"),
            self.run_id.clone(),
        ))
    }

    /// Phase 1 of an upserting epoch's prepare: its changes applied to the
    /// table copy-on-write; returns the files the snapshot removes.
    fn apply_changes(&mut self, epoch: u64) -> Result<Vec<String>> {
        let changes = std::mem::take(&mut self.changes);
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let table = self.table()?.clone();
        let columns = self
            .columns
            .clone()
            .ok_or_else(|| ConnectorError::Internal("the Iceberg table is not open".into()))?;
        let mut writer = match self.writer.take() {
            Some(w) => w,
            None => self.writer(epoch)?,
        };
        let t = self.cfg.table.clone();
        let keys = self.key_columns.clone();
        let done = self.handle.block_on(upsert::apply(
            &table,
            &t,
            &columns,
            &keys,
            &changes,
            &mut writer,
        ))?;
        self.writer = Some(writer);
        tracing::debug!(sink = %self.name, epoch, upserted = done.upserted, deleted = done.deleted, files_read = done.files_read, files_rewritten = done.removed.len(), "upserts applied to the Iceberg table");
        Ok(done.removed)
    }

    /// Commits `staged` as one snapshot carrying the job and epoch (an
    /// append, or an overwrite when the epoch's upserts rewrote files);
    /// then the maintenance its intervals ask for.
    fn commit_staged(&mut self, staged: Staged) -> Result<()> {
        if staged.files.is_empty() && staged.removed.is_empty() {
            return Ok(());
        }
        let table = self.table()?.clone();
        let catalog = self
            .catalog
            .clone()
            .ok_or_else(|| ConnectorError::Internal("the Iceberg catalog is not open".into()))?;
        let files = decode_files(&table, &staged)?;
        let committed = if staged.removed.is_empty() {
            self.append(table, catalog.as_ref(), staged.epoch, files)?
        } else {
            self.overwrite(table, catalog.as_ref(), &staged, files)?
        };
        tracing::debug!(sink = %self.name, epoch = staged.epoch, snapshot = ?committed.metadata().current_snapshot_id(), removed = staged.removed.len(), "committed to the Iceberg table");
        self.table = Some(committed);
        self.commits += 1;
        self.maintain();
        Ok(())
    }

    /// The summary entries of the snapshot of epoch `epoch`.
    fn stamp(&self, epoch: u64) -> HashMap<String, String> {
        HashMap::from([
            (table::JOB_KEY.to_string(), self.cfg.app_id.clone()),
            (table::EPOCH_KEY.to_string(), epoch.to_string()),
        ])
    }

    /// An epoch of new rows: one fast-append snapshot and the job's epoch
    /// property, in one commit.
    fn append(
        &self,
        table: Table,
        catalog: &dyn Catalog,
        epoch: u64,
        files: Vec<DataFile>,
    ) -> Result<Table> {
        let t = &self.cfg.table;
        let tx = Transaction::new(&table);
        let append = tx
            .fast_append()
            .with_check_duplicate(false)
            .add_data_files(files)
            .set_snapshot_properties(self.stamp(epoch));
        let tx = append.apply(tx).map_err(|e| t.error("commit to", &e))?;
        let props = tx
            .update_table_properties()
            .set(table::epoch_property(&self.cfg.app_id), epoch.to_string());
        let tx = props.apply(tx).map_err(|e| t.error("commit to", &e))?;
        self.handle
            .block_on(tx.commit(catalog))
            .map_err(|e| t.error("commit to", &e))
    }

    /// An upserting epoch: one overwrite snapshot (its files in, the files
    /// it rewrote out) and the job's epoch property. Built again on the
    /// table as it is when another writer committed first (the removed
    /// files must still be there).
    fn overwrite(
        &self,
        mut table: Table,
        catalog: &dyn Catalog,
        staged: &Staged,
        files: Vec<DataFile>,
    ) -> Result<Table> {
        let t = &self.cfg.table;
        let removed: HashSet<String> = staged.removed.iter().cloned().collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let rewrite = Rewrite {
                operation: Operation::Overwrite,
                removed: removed.clone(),
                added: files.clone(),
                summary: self.stamp(staged.epoch),
                properties: HashMap::from([(
                    table::epoch_property(&self.cfg.app_id),
                    staged.epoch.to_string(),
                )]),
            };
            let result = self.handle.block_on(async {
                let (updates, requirements) = rewrite::build(&table, rewrite)
                    .await
                    .map_err(CommitError::Failed)?;
                commit::commit(t, catalog, updates, requirements).await
            });
            match result {
                Ok(committed) => return Ok(committed),
                Err(CommitError::Conflict(m)) if attempt < 4 => {
                    tracing::info!(sink = %self.name, "{m}; committing again on the table as it is now");
                    table = self
                        .handle
                        .block_on(catalog.load_table(&t.ident))
                        .map_err(|e| t.error("load", &e))?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether maintenance every `every` commits is due now.
    fn due(&self, every: u64) -> bool {
        every > 0 && self.commits.is_multiple_of(every)
    }

    /// Phase after a commit: compaction and snapshot expiry when due. A
    /// failure loses nothing (the commit stands), so it is logged.
    fn maintain(&mut self) {
        self.compact();
        self.expire();
    }

    /// Compaction, every `compact_interval` commits.
    fn compact(&mut self) {
        let every = self.cfg.compact_interval;
        if !self.due(every) {
            return;
        }
        let (Some(table), Some(catalog)) = (self.table.clone(), self.catalog.clone()) else {
            return;
        };
        match self.handle.block_on(crate::maintenance::compact(
            &self.cfg.table,
            catalog.as_ref(),
            &table,
            self.cfg.target_file_size,
            self.cfg.compact_min_files,
        )) {
            Ok((table, done)) => {
                if done.files_in > 0 {
                    tracing::info!(sink = %self.name, "compacted {} small files of {} into {}", done.files_in, self.cfg.table.shown, done.files_out);
                }
                self.table = Some(table);
            }
            Err(e) => {
                tracing::warn!(sink = %self.name, "compaction of {} failed (the data is intact; it runs again after the next {every} commits): {e}", self.cfg.table.shown)
            }
        }
    }

    /// Snapshot expiry, every `expire_interval` commits.
    fn expire(&mut self) {
        let every = self.cfg.expire_interval;
        if !self.due(every) {
            return;
        }
        let (Some(table), Some(catalog)) = (self.table.clone(), self.catalog.clone()) else {
            return;
        };
        let max_age = self.cfg.snapshot_max_age;
        let keep = self.cfg.min_snapshots;
        match self.handle.block_on(crate::maintenance::expire(
            catalog.as_ref(),
            &table,
            max_age,
            keep,
        )) {
            Ok((table, expired)) => {
                if expired.snapshots > 0 {
                    tracing::info!(sink = %self.name, "expired {} snapshots of {} and deleted {} files only they referenced", expired.snapshots, self.cfg.table.shown, expired.files);
                }
                self.table = Some(table);
            }
            Err(e) => {
                tracing::warn!(sink = %self.name, "snapshot expiry of {} failed (the data is intact; it runs again after the next {every} commits): {e}", self.cfg.table.shown)
            }
        }
    }

    /// A batch of the query as a batch of the table.
    fn to_table_batch(&self, batch: &RecordBatch) -> Result<crate::bridge::Batch58> {
        let columns = self
            .columns
            .as_ref()
            .ok_or_else(|| ConnectorError::Internal("the Iceberg table is not open".into()))?;
        to_table_batch(batch, columns, &self.cfg.table)
    }
}

/// The staged files as data files of `table`.
fn decode_files(table: &Table, staged: &Staged) -> Result<Vec<DataFile>> {
    let meta = table.metadata();
    let spec = meta.partition_spec_by_id(staged.spec_id).ok_or_else(|| {
        ConnectorError::Other(format!(
            "the checkpoint's Iceberg files were written with partition spec {}, which the table no longer has; move the state directory away to start over",
            staged.spec_id
        ))
    })?;
    let schema = meta.current_schema();
    let ptype = spec
        .partition_type(schema)
        .map_err(|e| ConnectorError::Other(format!("the table's partition type: {e}")))?;
    staged
        .files
        .iter()
        .map(|json| {
            iceberg::spec::deserialize_data_file_from_json(json, staged.spec_id, &ptype, schema)
                .map_err(|e| {
                    ConnectorError::Other(format!(
                        "the checkpoint's Iceberg file cannot be read ({e}); move the state directory away to start over"
                    ))
                })
        })
        .collect()
}

/// Schema evolution, `schema.mode = 'merge'`: the query's columns the table
/// lacks are added as optional columns, in one metadata commit.
async fn evolve(
    catalog: &dyn Catalog,
    table: Table,
    query: &Schema,
    cfg: &IcebergSinkConfig,
) -> Result<Table> {
    let t = &cfg.table;
    let current = table.metadata().current_schema().clone();
    let missing: Vec<&arrow::datatypes::FieldRef> = query
        .fields()
        .iter()
        .filter(|f| f.name() != velo_connectors::sink::OP_COLUMN)
        .filter(|f| current.field_by_name(f.name()).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(table);
    }
    let names = missing
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if !cfg.merge_schema {
        return Err(ConnectorError::Other(format!(
            "the Iceberg table {} has no column(s) {names}: set schema.mode = 'merge' to add them to the table, or leave them out of the SELECT",
            t.shown
        )));
    }
    let added = table::iceberg_schema(&Schema::new(
        missing
            .iter()
            .map(|f| f.as_ref().clone())
            .collect::<Vec<_>>(),
    ))?;
    let tx = Transaction::new(&table);
    let mut update = tx.update_schema();
    for f in added.as_struct().fields() {
        update = update.add_column(iceberg::transaction::AddColumn::optional(
            &f.name,
            (*f.field_type).clone(),
        ));
    }
    let tx = update
        .apply(tx)
        .map_err(|e| t.error("add columns to", &e))?;
    let table = tx
        .commit(catalog)
        .await
        .map_err(|e| t.error("add columns to", &e))?;
    tracing::info!(
        "added the column(s) {names} to the Iceberg table {} (schema.mode = 'merge')",
        t.shown
    );
    Ok(table)
}

/// The query against the table: every column it produces is in the table
/// and converts to the table's type without loss; the table's required
/// columns are all produced.
fn check_columns(query: &Schema, table: &SchemaRef, shown: &str) -> Result<()> {
    for f in query.fields() {
        if f.name() == velo_connectors::sink::OP_COLUMN {
            continue;
        }
        let Ok(t) = table.field_with_name(f.name()) else {
            return Err(ConnectorError::Internal(format!(
                "the column '{}' is missing from the Iceberg table {shown} after schema evolution",
                f.name()
            )));
        };
        let want = table::iceberg_type(f.data_type()).map_err(|why| {
            ConnectorError::Other(format!(
                "the column '{}' of type {} has no Iceberg type ({why}); CAST it in the SELECT",
                f.name(),
                f.data_type()
            ))
        })?;
        if !velo_connectors::schema::widens(&want, t.data_type()) {
            return Err(ConnectorError::Other(format!(
                "the column '{}' is {} in the query and {} in the Iceberg table {shown}: CAST it in the SELECT to the table's type",
                f.name(),
                f.data_type(),
                t.data_type()
            )));
        }
    }
    for f in table.fields() {
        if !f.is_nullable() && query.field_with_name(f.name()).is_err() {
            return Err(ConnectorError::Other(format!(
                "the Iceberg table {shown} requires the column '{}', which the query does not produce",
                f.name()
            )));
        }
    }
    Ok(())
}

impl Sink for IcebergSink {
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
        self.key_columns = self.cfg.write.key(columns);
    }

    fn set_changelog(&mut self) {
        self.changelog = true;
    }

    fn begin_epoch(&mut self, epoch: u64) -> Result<()> {
        self.open()?;
        if self.transactional {
            if let Some(v) = self.committed_epoch.filter(|v| *v >= epoch) {
                return Err(ConnectorError::Other(format!(
                    "the Iceberg table {} already holds epoch {v} of the job '{}', and this run is at epoch {epoch}: the job's checkpoint (state.dir) is missing or older than the table. Writing again would duplicate what the table has. Restore the state directory, or write to a new table, or give the job another name",
                    self.cfg.table.shown, self.cfg.app_id
                )));
            }
        }
        if self.upserts() {
            if self.key_columns.is_empty() {
                self.key_columns = self.cfg.write.key(&[]);
            }
            if self.key_columns.is_empty() {
                return Err(ConnectorError::Other(format!(
                    "the Iceberg sink '{}' upserts by key, but the result has no key: set merge_on to the key columns",
                    self.name
                )));
            }
            self.changes.clear();
        }
        if self.writer.is_none() {
            self.writer = Some(self.writer(epoch)?);
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
        if self.cfg.write.merge {
            // every row replaces the row of its key
            let ops = vec![ChangeOp::Update; batch.num_rows()];
            self.changes.push(ChangeBatch::new(batch.clone(), ops)?);
            return Ok(());
        }
        let rows = self.to_table_batch(batch)?;
        let t = self.cfg.table.clone();
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| ConnectorError::Internal("write outside an epoch".into()))?;
        self.handle.block_on(writer.write(rows, &t))
    }

    fn prepare_commit(&mut self, epoch: u64) -> Result<()> {
        let t = self.cfg.table.clone();
        let removed = if self.upserts() {
            self.apply_changes(epoch)?
        } else {
            Vec::new()
        };
        let files = match self.writer.take() {
            None => Vec::new(),
            Some(w) => self.handle.block_on(w.close(&t))?,
        };
        let table = self.table()?;
        let meta = table.metadata();
        let spec = meta.default_partition_spec();
        let ptype = spec
            .partition_type(meta.current_schema())
            .map_err(|e| t.error("read the partition type of", &e))?;
        let version: FormatVersion = meta.format_version();
        let files = files
            .into_iter()
            .map(|f| {
                iceberg::spec::serialize_data_file_to_json(f, &ptype, version)
                    .map_err(|e| t.error("describe the data files of", &e))
            })
            .collect::<Result<Vec<_>>>()?;
        self.staged = Some(Staged {
            epoch,
            spec_id: spec.spec_id(),
            files,
            removed,
        });
        Ok(())
    }

    fn commit_token(&self) -> Option<serde_json::Value> {
        if !self.transactional {
            return None;
        }
        self.staged
            .as_ref()
            .filter(|s| !s.files.is_empty() || !s.removed.is_empty())
            .and_then(|s| serde_json::to_value(s).ok())
    }

    fn recover(&mut self, token: &serde_json::Value) -> Result<()> {
        let staged: Staged = serde_json::from_value(token.clone()).map_err(|e| {
            ConnectorError::Other(format!(
                "the checkpoint's Iceberg commit for {} cannot be read ({e}); move the state directory away to start over",
                self.cfg.table.shown
            ))
        })?;
        self.open()?;
        if self.committed_epoch.is_some_and(|v| v >= staged.epoch) {
            tracing::info!(sink = %self.name, epoch = staged.epoch, "the Iceberg table already holds the checkpoint's epoch");
            return Ok(());
        }
        tracing::info!(sink = %self.name, epoch = staged.epoch, "committing the checkpoint's epoch to the Iceberg table");
        let epoch = staged.epoch;
        let upserts = !staged.removed.is_empty();
        self.commit_staged(staged).map_err(|e| {
            if !upserts {
                return e;
            }
            ConnectorError::Other(format!(
                "the checkpoint's epoch {epoch} cannot be committed to the Iceberg table {}: {e}. Its upserts were computed against files that are gone, and committing them now would bring rows back or lose changes. While an upserting job writes a table, compact it with the job's compact_interval rather than by another writer; to go on, roll the table back to its snapshot before that writer, or move the state directory away to start over",
                self.cfg.table.shown
            ))
        })?;
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
        // an open writer's files are dropped unfinished; finished ones stay
        // unreferenced (in no snapshot, so expiry does not delete them)
        self.writer = None;
        self.changes.clear();
        if self.staged.take().is_some() {
            tracing::debug!(sink = %self.name, epoch, "the epoch's Iceberg files stay unreferenced");
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        self.writer = None;
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "Iceberg table {} ({} catalog {}{}{}{}{})",
            self.cfg.table.shown,
            match self.cfg.table.kind {
                crate::catalog::CatalogKind::Rest => "REST",
                crate::catalog::CatalogKind::Sql => "SQL",
            },
            velo_config::mask(&self.cfg.table.uri),
            if self.cfg.partition_by.is_empty() {
                String::new()
            } else {
                format!(
                    ", partitioned by {}",
                    self.cfg
                        .partition_by
                        .iter()
                        .map(|p| p.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            if self.cfg.merge_schema {
                ", schema merge"
            } else {
                ""
            },
            if self.upserts() {
                format!(
                    ", upserts by {} (copy-on-write)",
                    if self.key_columns.is_empty() {
                        "the result's key".to_string()
                    } else {
                        self.key_columns.join(", ")
                    }
                )
            } else {
                String::new()
            },
            match self.cfg.compact_interval {
                0 => String::new(),
                n => format!(", compaction every {n} commits"),
            }
        )
    }
}
