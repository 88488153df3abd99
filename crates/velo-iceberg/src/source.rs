//! `iceberg_source`: an Iceberg table as input.
//!
//! - `mode = 'snapshot'` (the default): the table as of a snapshot
//!   (`snapshot_id`), a time (`timestamp`) or now; bounded. Delete files
//!   (position and equality deletes of other engines' upserts) are applied.
//! - `mode = 'follow'`: the rows each new snapshot appends, from the
//!   snapshot after `starting_snapshot_id` (or after the current one);
//!   unbounded.
//! - `mode = 'snapshot_and_follow'`: the snapshot, then every snapshot
//!   after it: backfill, then live, with nothing read twice or missed at the
//!   hand-over.
//!
//! The position is the snapshot being read, whether as a whole or as the
//! files it added (or finished), the file (in path order) and the rows of
//! it already delivered, so a resumed job goes on at the row where its
//! checkpoint stands. Following reads appends: compaction snapshots
//! (`replace`) are skipped, and a snapshot that deletes or overwrites rows
//! stops the job with an error that says so. So does a gap: snapshots
//! expired before the job read them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use futures::StreamExt;
use iceberg::Catalog;
use iceberg::scan::FileScanTask;
use iceberg::spec::{DataContentType, ManifestStatus, Operation, SnapshotRef};
use iceberg::table::Table;
use tokio::runtime::Handle;
use tokio::sync::mpsc::Sender;
use velo_config::{ConfigError, ConnectorConfig, KeySpec, KeyType};
use velo_connectors::{
    ConnectorContext, ConnectorError, Position, Result, Source, SourceEvent, SourceReader, source,
};

use crate::bridge;
use crate::catalog::TableRef;
use crate::table::Columns;

/// Keys of `iceberg_source`.
pub const SOURCE_KEYS: &[KeySpec] = crate::config::iceberg_keys![
    KeySpec::new(
        "mode",
        KeyType::Enum(&["snapshot", "follow", "snapshot_and_follow"]),
        Some("snapshot"),
        "snapshot: the table as of snapshot_id/timestamp (bounded); follow: the rows each new snapshot appends; snapshot_and_follow: the snapshot, then every snapshot after it",
    ),
    KeySpec::new(
        "snapshot_id",
        KeyType::String,
        None,
        "snapshot: read the table as of this snapshot (time travel)",
    ),
    KeySpec::new(
        "timestamp",
        KeyType::String,
        None,
        "snapshot: read the table as it was at this time (RFC 3339, e.g. 2026-12-01T00:00:00Z)",
    ),
    KeySpec::new(
        "starting_snapshot_id",
        KeyType::String,
        None,
        "follow: read the snapshots after this one (default: those after the current snapshot)",
    ),
    KeySpec::new(
        "poll_interval",
        KeyType::Duration,
        Some("1s"),
        "follow: how often the catalog is asked for new snapshots",
    ),
];

/// How the table is read.
pub use velo_connectors::source::TableMode as Mode;

/// What `iceberg_source` was configured with.
#[derive(Debug, Clone)]
pub struct IcebergSourceConfig {
    /// The table.
    pub table: TableRef,
    /// How the table is read.
    pub mode: Mode,
    /// `snapshot_id`.
    pub snapshot_id: Option<i64>,
    /// `timestamp`.
    pub timestamp: Option<chrono::DateTime<chrono::Utc>>,
    /// `starting_snapshot_id`.
    pub starting_snapshot_id: Option<i64>,
    /// `poll_interval`.
    pub poll_interval: Duration,
}

impl IcebergSourceConfig {
    /// From the resolved connector config.
    pub fn from_config(cfg: &ConnectorConfig) -> std::result::Result<Self, ConfigError> {
        let table = TableRef::from_config(cfg)?;
        let mode = Mode::from_config(cfg)?;
        let id = |key: &str| -> std::result::Result<Option<i64>, ConfigError> {
            cfg.get(key)
                .map(|v| {
                    v.trim()
                        .parse::<i64>()
                        .map_err(|_| cfg.invalid(key, v, "a snapshot id (an integer)"))
                })
                .transpose()
        };
        let snapshot_id = id("snapshot_id")?;
        let starting_snapshot_id = id("starting_snapshot_id")?;
        let timestamp = match cfg.get("timestamp") {
            None => None,
            Some(t) => Some(source::parse_instant(t).ok_or_else(|| {
                cfg.invalid(
                    "timestamp",
                    t,
                    "an RFC 3339 time such as 2026-12-01T00:00:00Z (or a date, 2026-12-01)",
                )
            })?),
        };
        if snapshot_id.is_some() && timestamp.is_some() {
            return Err(cfg.invalid(
                "timestamp",
                cfg.get("timestamp").unwrap_or_default(),
                "no value when snapshot_id is set: give one of them",
            ));
        }
        if mode == Mode::Follow && (snapshot_id.is_some() || timestamp.is_some()) {
            return Err(cfg.invalid(
                "mode",
                "follow",
                "snapshot or snapshot_and_follow with snapshot_id/timestamp (follow reads the snapshots after starting_snapshot_id)",
            ));
        }
        if mode != Mode::Follow && starting_snapshot_id.is_some() {
            return Err(cfg.invalid(
                "starting_snapshot_id",
                cfg.get("starting_snapshot_id").unwrap_or_default(),
                "no value unless mode = 'follow' (snapshot_and_follow follows from its snapshot)",
            ));
        }
        Ok(Self {
            table,
            mode,
            snapshot_id,
            timestamp,
            starting_snapshot_id,
            poll_interval: cfg
                .duration("poll_interval")?
                .unwrap_or(Duration::from_secs(1))
                .max(Duration::from_millis(10)),
        })
    }
}

/// How a snapshot is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The table as of the snapshot.
    Whole = 0,
    /// The files the snapshot added.
    Added = 1,
    /// Done with the snapshot: next come its children.
    Done = 2,
}

/// Where a reader stands: snapshot `snapshot` (0: before the table's
/// first), read as `phase`, at file `file` (path order), row `row` of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct At {
    snapshot: i64,
    phase: Phase,
    file: usize,
    row: usize,
}

impl At {
    fn position(&self) -> Position {
        Position {
            parts: BTreeMap::from([
                ("iceberg.snapshot".to_string(), self.snapshot),
                ("iceberg.phase".to_string(), self.phase as i64),
                ("iceberg.file".to_string(), self.file as i64),
                ("iceberg.row".to_string(), self.row as i64),
            ]),
        }
    }

    fn of(p: &Position) -> Option<Self> {
        let get = |k: &str| p.parts.get(k).copied();
        Some(Self {
            snapshot: get("iceberg.snapshot")?,
            phase: match get("iceberg.phase")? {
                0 => Phase::Whole,
                1 => Phase::Added,
                2 => Phase::Done,
                _ => return None,
            },
            file: usize::try_from(get("iceberg.file")?).ok()?,
            row: usize::try_from(get("iceberg.row")?).ok()?,
        })
    }

    fn done(snapshot: i64) -> Self {
        Self {
            snapshot,
            phase: Phase::Done,
            file: 0,
            row: 0,
        }
    }
}

/// The Iceberg source.
pub struct IcebergSource {
    name: String,
    cfg: IcebergSourceConfig,
    keys: BTreeMap<String, String>,
    ctx: ConnectorContext,
    /// The table's columns as the engine sees them.
    schema: SchemaRef,
    /// Where a reader without a position starts.
    start: At,
    /// A bounded snapshot's data files and their store, for a batch plan
    /// that scans them itself ([`Source::listing`]); why not, otherwise.
    listed: std::result::Result<Listed, String>,
}

/// A snapshot's data files in their store (whose root has that URL).
type Listed = (
    Arc<dyn object_store::ObjectStore>,
    url::Url,
    Vec<velo_connectors::ListedFile>,
);

impl std::fmt::Debug for IcebergSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IcebergSource({} <- {})",
            self.name, self.cfg.table.shown
        )
    }
}

impl IcebergSource {
    /// The source of the configured table: its snapshot and schema settled
    /// (`declared`: a schema given in the SQL, which offline is all there
    /// is to know). Called on the runtime.
    pub async fn new(
        name: &str,
        cfg: IcebergSourceConfig,
        keys: &BTreeMap<String, String>,
        declared: Option<SchemaRef>,
        ctx: &ConnectorContext,
    ) -> Result<Self> {
        let t = &cfg.table;
        if ctx.is_offline() {
            let schema = declared.ok_or_else(|| {
                ConnectorError::Other(format!(
                    "{} the schema of the Iceberg table {} is read from its catalog; declare it (a column list) to check offline",
                    velo_connectors::registry::OFFLINE_MARK,
                    t.shown
                ))
            })?;
            let start = At {
                snapshot: 0,
                phase: if cfg.mode == Mode::Follow {
                    Phase::Done
                } else {
                    Phase::Whole
                },
                file: 0,
                row: 0,
            };
            return Ok(Self {
                name: name.to_string(),
                keys: keys.clone(),
                ctx: ctx.clone(),
                cfg,
                schema,
                start,
                listed: Err("has its files listed when the job runs".into()),
            });
        }
        let catalog = t.connect(keys, ctx).await?;
        let table = catalog
            .load_table(&t.ident)
            .await
            .map_err(|e| t.error("load", &e))?;
        let meta = table.metadata();
        let current = meta.current_snapshot().map(|s| s.snapshot_id());
        let chosen = if let Some(id) = cfg.snapshot_id {
            meta.snapshot_by_id(id).map(|s| s.snapshot_id()).ok_or_else(|| {
                ConnectorError::Other(format!(
                    "the Iceberg table {} has no snapshot {id} (expired, or of another table); its current snapshot is {}",
                    t.shown,
                    current.map(|c| c.to_string()).unwrap_or_else(|| "none".into())
                ))
            })?
        } else if let Some(at) = cfg.timestamp {
            as_of(&table, at).ok_or_else(|| {
                ConnectorError::Other(format!(
                    "the Iceberg table {} has no snapshot as of {}: its oldest kept snapshot is newer; give a later timestamp",
                    t.shown,
                    at.to_rfc3339()
                ))
            })?
        } else {
            current.unwrap_or(0)
        };
        let start = match cfg.mode {
            Mode::Snapshot | Mode::SnapshotAndFollow => At {
                snapshot: chosen,
                phase: if chosen == 0 {
                    Phase::Done
                } else {
                    Phase::Whole
                },
                file: 0,
                row: 0,
            },
            Mode::Follow => At::done(cfg.starting_snapshot_id.unwrap_or(chosen)),
        };
        // the columns of the snapshot read (time travel reads its schema)
        let schema = match meta
            .snapshot_by_id(chosen)
            .and_then(|s| s.schema_id())
            .and_then(|id| meta.schema_by_id(id))
        {
            Some(s) if cfg.mode == Mode::Snapshot => Columns::of_schema(s, t)?,
            _ => Columns::of(&table, t)?,
        };
        let schema = plain(&schema.arrow);
        if let Some(d) = declared {
            for f in d.fields() {
                if schema.field_with_name(f.name()).is_err() {
                    return Err(ConnectorError::Other(format!(
                        "the column list names '{}', which the Iceberg table {} does not have; its columns are: {}",
                        f.name(),
                        t.shown,
                        names(&schema)
                    )));
                }
            }
        }
        let listed = match cfg.mode {
            Mode::Snapshot => listed_files(&table, chosen, keys, ctx).await,
            _ => Err("follows the table (unbounded)".into()),
        };
        Ok(Self {
            name: name.to_string(),
            keys: keys.clone(),
            ctx: ctx.clone(),
            cfg,
            schema,
            start,
            listed,
        })
    }
}

/// Phase of [`IcebergSource::new`]: the data files of snapshot `id` (0: the
/// table has none yet), for a batch plan that reads them as Parquet files
/// by column name; why its rows are more than its data files' rows read so
/// (delete files) or its columns not found by name (a renamed column: the
/// files keep the name they were written with).
async fn listed_files(
    table: &Table,
    id: i64,
    keys: &BTreeMap<String, String>,
    ctx: &ConnectorContext,
) -> std::result::Result<Listed, String> {
    let meta = table.metadata();
    let schema = meta
        .snapshot_by_id(id)
        .and_then(|s| s.schema_id())
        .and_then(|sid| meta.schema_by_id(sid))
        .unwrap_or_else(|| meta.current_schema());
    for old in meta.schemas_iter() {
        for f in old.as_struct().fields() {
            if let Some(now) = schema.field_by_id(f.id).filter(|now| now.name != f.name) {
                return Err(format!(
                    "has a renamed column ('{}', once '{}')",
                    now.name, f.name
                ));
            }
        }
    }
    let tasks: Vec<FileScanTask> = if id == 0 {
        Vec::new()
    } else {
        let scan = table
            .scan()
            .snapshot_id(id)
            .build()
            .map_err(|e| e.to_string())?;
        scan.plan_files()
            .await
            .map_err(|e| e.to_string())?
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| e.to_string())?
    };
    if tasks.iter().any(|t| !t.deletes.is_empty()) {
        return Err("has delete files (rows deleted or replaced by upserts)".into());
    }
    if tasks
        .iter()
        .any(|t| t.data_file_format != iceberg::spec::DataFileFormat::Parquet)
    {
        return Err("has data files that are not Parquet".into());
    }
    // one entry per file, whatever the tasks' byte ranges
    let mut sizes = BTreeMap::new();
    for t in &tasks {
        sizes.insert(t.data_file_path.as_str(), t.file_size_in_bytes);
    }
    let paths: Vec<&str> = sizes.keys().copied().collect();
    let factory = crate::storage::ObjectStorageFactory::new(crate::storage::Access::new(keys, ctx));
    let (store, root, located) = factory.locate_all(table.file_io().config(), &paths)?;
    let files = located
        .into_iter()
        .zip(sizes.values())
        .map(|(path, size)| velo_connectors::ListedFile {
            path,
            size: *size,
            partition_values: Vec::new(),
        })
        .collect();
    Ok((store, root, files))
}

/// `schema` without field metadata (the engine's columns are plain).
fn plain(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_metadata(Default::default()))
            .collect::<Vec<_>>(),
    ))
}

fn names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The snapshot that was current at `at`: the last entry of the table's
/// snapshot log at or before it.
fn as_of(table: &Table, at: chrono::DateTime<chrono::Utc>) -> Option<i64> {
    let ms = at.timestamp_millis();
    table
        .metadata()
        .history()
        .iter()
        .filter(|l| l.timestamp_ms <= ms)
        .max_by_key(|l| l.timestamp_ms)
        .map(|l| l.snapshot_id)
}

impl Source for IcebergSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn listing(&self) -> std::result::Result<velo_connectors::ListingSpec, String> {
        let (store, root, files) = self.listed.as_ref().map_err(|why| {
            format!(
                "source '{}' (the Iceberg table {}) {why}",
                self.name, self.cfg.table.shown
            )
        })?;
        Ok(velo_connectors::ListingSpec {
            location: self.cfg.table.shown.clone(),
            format: velo_connectors::ListingFormat::Parquet,
            file_schema: self.schema.clone(),
            partitions: Vec::new(),
            store: Some((self.cfg.table.shown.clone(), store.clone())),
            files: Some(files.clone()),
            files_root: Some(root.clone()),
            columns: None,
        })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn is_bounded(&self) -> bool {
        self.cfg.mode == Mode::Snapshot
    }

    fn open(&self, batch_size: usize, projection: Option<&[usize]>) -> Result<SourceReader> {
        self.open_at(batch_size, projection, None)
    }

    fn open_at(
        &self,
        batch_size: usize,
        projection: Option<&[usize]>,
        resume: Option<&Position>,
    ) -> Result<SourceReader> {
        let at = match resume {
            None => self.start,
            Some(p) if p.parts.is_empty() => self.start,
            Some(p) => At::of(p).ok_or_else(|| {
                ConnectorError::Other(format!(
                    "the checkpoint's position for the Iceberg source '{}' is not one ({:?}); move the state directory away to start over",
                    self.name, p.parts
                ))
            })?,
        };
        let handle = Handle::try_current().map_err(|_| {
            ConnectorError::Internal("the Iceberg source is opened outside the runtime".into())
        })?;
        // the projected columns and the required ones (a batch has the full
        // schema: the columns left out are nulls, which a required one
        // cannot hold)
        let read: Vec<usize> = (0..self.schema.fields().len())
            .filter(|i| {
                projection.is_none_or(|p| p.contains(i)) || !self.schema.field(*i).is_nullable()
            })
            .collect();
        let columns: Vec<String> = read
            .iter()
            .map(|i| self.schema.field(*i).name().clone())
            .collect();
        let decoded = Arc::new(self.schema.project(&read).map_err(|e| {
            ConnectorError::Internal(format!("the projection of an Iceberg source: {e}"))
        })?);
        let nulls =
            velo_connectors::NullColumns::new(&self.schema, |i| read.contains(&i), batch_size);
        let (tx, rx) = tokio::sync::mpsc::channel(source::SOURCE_CHANNEL_CAPACITY);
        let reader = Reader {
            name: self.name.clone(),
            cfg: self.cfg.clone(),
            keys: self.keys.clone(),
            ctx: self.ctx.clone(),
            columns,
            decoded,
            nulls,
            out: self.schema.clone(),
            batch_size: batch_size.max(1),
            tx: tx.clone(),
        };
        source::spawn_reader(
            format!("iceberg-{}", self.name),
            &self.name,
            &tx,
            move || {
                if let Err(e) = handle.block_on(reader.run(at)) {
                    let _ = reader.tx.blocking_send(SourceEvent::Error(e));
                }
            },
        )?;
        Ok(SourceReader::new(rx))
    }

    fn describe(&self) -> String {
        let snap = |s: i64| {
            if s == 0 {
                "no snapshot yet".to_string()
            } else {
                format!("snapshot {s}")
            }
        };
        let what = match self.cfg.mode {
            Mode::Snapshot => snap(self.start.snapshot),
            Mode::Follow => format!(
                "following the snapshots after {}",
                snap(self.start.snapshot)
            ),
            Mode::SnapshotAndFollow => {
                format!("{}, then the snapshots after it", snap(self.start.snapshot))
            }
        };
        format!("Iceberg table {} ({what})", self.cfg.table.shown)
    }

    fn resumable(&self) -> bool {
        true
    }

    fn resumes_by_default(&self) -> bool {
        self.cfg.mode != Mode::Snapshot
    }
}

/// The reading thread's state.
struct Reader {
    name: String,
    cfg: IcebergSourceConfig,
    keys: BTreeMap<String, String>,
    ctx: ConnectorContext,
    /// The columns read, in the order of `decoded`.
    columns: Vec<String>,
    /// The schema of the batches read.
    decoded: SchemaRef,
    /// The columns of `out` not read, as nulls.
    nulls: velo_connectors::NullColumns,
    /// The schema of the batches sent (the source's, whole).
    out: SchemaRef,
    batch_size: usize,
    tx: Sender<SourceEvent>,
}

/// The reader was dropped: stop quietly.
struct Closed;

impl Reader {
    /// Reads from `at` on: the snapshot's files, then (following) each
    /// later snapshot's added files, as they appear.
    async fn run(&self, mut at: At) -> Result<()> {
        let t = &self.cfg.table;
        let catalog = t.connect(&self.keys, &self.ctx).await?;
        let mut table = self.load(catalog.as_ref()).await?;
        loop {
            match at.phase {
                Phase::Whole | Phase::Added => {
                    let tasks = self.tasks(&table, at).await?;
                    if self.read_tasks(&table, &tasks, &mut at).await.is_err() {
                        return Ok(());
                    }
                    if at.phase == Phase::Whole && self.cfg.mode == Mode::Snapshot {
                        return Ok(());
                    }
                    at = At::done(at.snapshot);
                    if self
                        .send(RecordBatch::new_empty(self.out.clone()), at)
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
                Phase::Done => {
                    if self.cfg.mode == Mode::Snapshot {
                        return Ok(());
                    }
                    match self.next_after(&table, at.snapshot)? {
                        Some((s, Operation::Append)) => {
                            at = At {
                                snapshot: s,
                                phase: Phase::Added,
                                file: 0,
                                row: 0,
                            };
                        }
                        Some((s, _replace)) => {
                            // a compaction: the same rows in new files
                            at = At::done(s);
                            if self
                                .send(RecordBatch::new_empty(self.out.clone()), at)
                                .await
                                .is_err()
                            {
                                return Ok(());
                            }
                        }
                        None => {
                            tokio::time::sleep(self.cfg.poll_interval).await;
                            if self.tx.is_closed() {
                                return Ok(());
                            }
                            table = self.load(catalog.as_ref()).await?;
                        }
                    }
                }
            }
        }
    }

    async fn load(&self, catalog: &dyn Catalog) -> Result<Table> {
        let t = &self.cfg.table;
        catalog
            .load_table(&t.ident)
            .await
            .map_err(|e| t.error("load", &e))
    }

    /// The snapshot after `after` on the table's current line of snapshots
    /// (0: the first), and its operation; None when there is none yet. A
    /// snapshot that removes rows, and snapshots expired before they were
    /// read, are errors.
    fn next_after(&self, table: &Table, after: i64) -> Result<Option<(i64, Operation)>> {
        let t = &self.cfg.table;
        let meta = table.metadata_ref();
        let Some(current) = meta.current_snapshot() else {
            return Ok(None);
        };
        if current.snapshot_id() == after {
            return Ok(None);
        }
        // walk back from the current snapshot to the child of `after`
        let mut child: Option<SnapshotRef> = None;
        let mut next = Some(current.clone());
        while let Some(s) = next {
            let parent = s.parent_snapshot_id();
            if parent == Some(after) || (after == 0 && parent.is_none()) {
                child = Some(s);
                break;
            }
            next = parent.and_then(|p| meta.snapshot_by_id(p).cloned());
            if next.is_none() {
                return Err(ConnectorError::Other(format!(
                    "the Iceberg table {} no longer has the snapshots after {after}, which this job has not read (expired, or the table was rolled back): rows would be lost. Start over from a snapshot (mode = 'snapshot_and_follow', a new state directory)",
                    t.shown
                )));
            }
        }
        let Some(s) = child else {
            return Ok(None);
        };
        let op = s.summary().operation.clone();
        match op {
            Operation::Append | Operation::Replace => Ok(Some((s.snapshot_id(), op))),
            Operation::Overwrite | Operation::Delete => Err(ConnectorError::Other(format!(
                "snapshot {} of the Iceberg table {} {} rows; following a table reads appended rows only. Restart from a snapshot of the table (mode = 'snapshot_and_follow', a new state directory) to read it as it is now",
                s.snapshot_id(),
                t.shown,
                if op == Operation::Delete {
                    "deletes"
                } else {
                    "overwrites"
                },
            ))),
        }
    }

    /// The files to read at `at`, in path order: the snapshot's (with their
    /// delete files) or those it added.
    async fn tasks(&self, table: &Table, at: At) -> Result<Vec<FileScanTask>> {
        let t = &self.cfg.table;
        let mut tasks = match at.phase {
            Phase::Whole => {
                let scan = table
                    .scan()
                    .snapshot_id(at.snapshot)
                    .select(self.columns.clone())
                    .build()
                    .map_err(|e| t.error("plan a scan of", &e))?;
                let planned = scan
                    .plan_files()
                    .await
                    .map_err(|e| t.error("plan a scan of", &e))?;
                planned
                    .collect::<Vec<_>>()
                    .await
                    .into_iter()
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| t.error("plan a scan of", &e))?
            }
            _ => self.added(table, at.snapshot).await?,
        };
        tasks.sort_by(|a, b| a.data_file_path.cmp(&b.data_file_path));
        Ok(tasks)
    }

    /// Scan tasks for the data files snapshot `id` added.
    async fn added(&self, table: &Table, id: i64) -> Result<Vec<FileScanTask>> {
        let t = &self.cfg.table;
        let meta = table.metadata();
        let snapshot = meta
            .snapshot_by_id(id)
            .ok_or_else(|| t.error(&format!("find snapshot {id} of"), &"expired"))?;
        let list = table
            .manifest_list_reader(snapshot)
            .load()
            .await
            .map_err(|e| t.error("read the manifest list of", &e))?;
        let schema = meta.current_schema().clone();
        let ids = self
            .columns
            .iter()
            .map(|c| {
                schema
                    .field_by_name(c)
                    .map(|f| f.id)
                    .ok_or_else(|| t.error("read", &format!("the column '{c}' is gone")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut tasks = Vec::new();
        for m in list.entries().iter().filter(|m| m.added_snapshot_id == id) {
            let manifest = m
                .load_manifest(table.file_io())
                .await
                .map_err(|e| t.error("read a manifest of", &e))?;
            for e in manifest.entries() {
                if e.status() != ManifestStatus::Added || e.snapshot_id() != Some(id) {
                    continue;
                }
                if e.content_type() != DataContentType::Data {
                    return Err(ConnectorError::Other(format!(
                        "snapshot {id} of the Iceberg table {} adds delete files; following a table reads appended rows only",
                        t.shown
                    )));
                }
                tasks.push(
                    FileScanTask::builder()
                        .with_file_size_in_bytes(e.file_size_in_bytes())
                        .with_start(0)
                        .with_length(e.file_size_in_bytes())
                        .with_record_count(Some(e.record_count()))
                        .with_data_file_path(e.file_path().to_string())
                        .with_data_file_format(e.file_format())
                        .with_schema(schema.clone())
                        .with_project_field_ids(ids.clone())
                        .with_case_sensitive(true)
                        .build(),
                );
            }
        }
        Ok(tasks)
    }

    /// Streams `tasks` from `at` on, each batch with the position after it.
    async fn read_tasks(
        &self,
        table: &Table,
        tasks: &[FileScanTask],
        at: &mut At,
    ) -> std::result::Result<(), Closed> {
        let t = &self.cfg.table;
        while at.file < tasks.len() {
            let task = tasks[at.file].clone();
            let stream = table
                .reader_builder()
                .with_batch_size(self.batch_size)
                .build()
                .read(Box::pin(futures::stream::iter([Ok(task)])))
                .map(|r| r.stream());
            let mut stream = match stream {
                Ok(s) => s,
                Err(e) => return self.fail(t.error("read", &e)).await,
            };
            let mut seen = 0usize;
            while let Some(batch) = stream.next().await {
                let batch = match batch {
                    Ok(b) => b,
                    Err(e) => return self.fail(t.error("read", &e)).await,
                };
                let n = batch.num_rows();
                // rows a resumed reader delivered before its checkpoint
                let skip = at.row.saturating_sub(seen).min(n);
                seen += n;
                if skip == n {
                    continue;
                }
                let batch = bridge::batch_from_iceberg(&batch.slice(skip, n - skip), &self.decoded)
                    .map_err(|e| t.error("read", &e))
                    .and_then(|b| self.whole(b));
                let batch = match batch {
                    Ok(b) => b,
                    Err(e) => return self.fail(e).await,
                };
                at.row += batch.num_rows();
                self.send(batch, *at).await?;
            }
            at.file += 1;
            at.row = 0;
        }
        Ok(())
    }

    /// A batch of the columns read as one of the source's schema, the
    /// columns not read as nulls.
    fn whole(&self, decoded: RecordBatch) -> Result<RecordBatch> {
        let n = decoded.num_rows();
        let columns = self.nulls.widen(decoded.columns(), n).ok_or_else(|| {
            ConnectorError::Internal(format!(
                "the Iceberg reader gave {} columns for {}",
                decoded.num_columns(),
                self.decoded.fields().len()
            ))
        })?;
        let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(n));
        Ok(RecordBatch::try_new_with_options(
            self.out.clone(),
            columns,
            &opts,
        )?)
    }

    async fn send(&self, batch: RecordBatch, at: At) -> std::result::Result<(), Closed> {
        self.tx
            .send(SourceEvent::Positioned(batch, at.position()))
            .await
            .map_err(|_| Closed)
    }

    async fn fail(&self, e: ConnectorError) -> std::result::Result<(), Closed> {
        let _ = self.tx.send(SourceEvent::Error(e)).await;
        tracing::debug!(source = %self.name, "the Iceberg reader stopped on an error");
        Err(Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_round_trips() {
        let at = At {
            snapshot: 1234567890123,
            phase: Phase::Added,
            file: 3,
            row: 1024,
        };
        assert_eq!(At::of(&at.position()), Some(at));
        assert_eq!(At::of(&Position::default()), None);
    }
}
