//! `delta_source`: a Delta table as input.
//!
//! - `mode = 'snapshot'` (the default): the table as of a version
//!   (`version`), a time (`timestamp`) or now; bounded.
//! - `mode = 'follow'`: the rows each new commit appends, from
//!   `starting_version` (or the next commit); unbounded.
//! - `mode = 'snapshot_and_follow'`: the snapshot, then every commit after
//!   it: the backfill-then-live pattern, with nothing read twice or missed
//!   at the hand-over.
//!
//! The position is the table version being read, whether it is read as a
//! snapshot or as one commit's additions, and how far into it (the file,
//! in path order, and the rows of that file already delivered), so a
//! resumed job goes on at the row where its checkpoint stands. Following a
//! table reads appends; a commit that deletes or rewrites rows
//! (`dataChange` removes: DELETE, UPDATE, MERGE, overwrite) stops the job
//! with an error that says so, as compaction commits (no data change) are
//! skipped. Tables with deletion vectors or column mapping are refused when
//! opened.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::DeltaTable;
use futures::StreamExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc::Sender;
use velo_config::{ConfigError, ConnectorConfig, KeySpec, KeyType};
use velo_connectors::{
    ConnectorError, Position, Result, Source, SourceEvent, SourceReader, source,
};

use crate::read::{self, DataFile};
use crate::table::Location;

/// Keys of `delta_source`.
pub const SOURCE_KEYS: &[KeySpec] = velo_connectors::with_store_keys![
    KeySpec::new(
        "path",
        KeyType::String,
        None,
        "The table: a directory (relative to the SQL file) or an object-store URL such as s3://bucket/tables/orders (required; a delta:// URI sets it)",
    ),
    KeySpec::new(
        "mode",
        KeyType::Enum(&["snapshot", "follow", "snapshot_and_follow"]),
        Some("snapshot"),
        "snapshot: the table as of version/timestamp (bounded); follow: the rows each new commit appends; snapshot_and_follow: the snapshot, then every commit after it",
    ),
    KeySpec::new(
        "version",
        KeyType::UInt,
        None,
        "snapshot: read the table as of this version (time travel)",
    ),
    KeySpec::new(
        "timestamp",
        KeyType::String,
        None,
        "snapshot: read the table as of this time (RFC 3339, e.g. 2026-12-01T00:00:00Z)",
    ),
    KeySpec::new(
        "starting_version",
        KeyType::UInt,
        None,
        "follow: the first commit to read (default: the commit after the current version)",
    ),
    KeySpec::new(
        "poll_interval",
        KeyType::Duration,
        Some("1s"),
        "follow: how often the log is checked for new commits",
    ),
];

/// How the table is read.
pub use velo_connectors::source::TableMode as Mode;

/// What `delta_source` was configured with.
#[derive(Debug, Clone)]
pub struct DeltaSourceConfig {
    /// How the table is read.
    pub mode: Mode,
    /// `version`.
    pub version: Option<u64>,
    /// `timestamp`.
    pub timestamp: Option<chrono::DateTime<chrono::Utc>>,
    /// `starting_version`.
    pub starting_version: Option<u64>,
    /// `poll_interval`.
    pub poll_interval: Duration,
}

impl DeltaSourceConfig {
    /// From the resolved connector config.
    pub fn from_config(cfg: &ConnectorConfig) -> std::result::Result<Self, ConfigError> {
        crate::table::configured_path(cfg)?;
        let mode = Mode::from_config(cfg)?;
        let version = cfg.uint("version")?;
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
        if version.is_some() && timestamp.is_some() {
            return Err(cfg.invalid(
                "timestamp",
                cfg.get("timestamp").unwrap_or_default(),
                "no value when version is set: give one of version and timestamp",
            ));
        }
        let starting_version = cfg.uint("starting_version")?;
        if mode == Mode::Follow && (version.is_some() || timestamp.is_some()) {
            return Err(cfg.invalid(
                "mode",
                "follow",
                "snapshot or snapshot_and_follow with version/timestamp (follow reads new commits from starting_version)",
            ));
        }
        if mode != Mode::Follow && starting_version.is_some() {
            return Err(cfg.invalid(
                "starting_version",
                &starting_version.unwrap_or_default().to_string(),
                "no value unless mode = 'follow' (snapshot_and_follow follows from the snapshot's version)",
            ));
        }
        Ok(Self {
            mode,
            version,
            timestamp,
            starting_version,
            poll_interval: cfg
                .duration("poll_interval")?
                .unwrap_or(Duration::from_secs(1))
                .max(Duration::from_millis(10)),
        })
    }
}

/// Where a reader stands: version `version`, read as a snapshot or as that
/// commit's additions, at file `file` (path order), row `row` of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct At {
    version: u64,
    snapshot: bool,
    file: usize,
    row: usize,
}

impl At {
    fn position(&self) -> Position {
        Position {
            parts: BTreeMap::from([
                ("delta.version".to_string(), self.version as i64),
                ("delta.snapshot".to_string(), self.snapshot as i64),
                ("delta.file".to_string(), self.file as i64),
                ("delta.row".to_string(), self.row as i64),
            ]),
        }
    }

    fn of(p: &Position) -> Option<Self> {
        let get = |k: &str| p.parts.get(k).copied().filter(|v| *v >= 0);
        Some(Self {
            version: get("delta.version")? as u64,
            snapshot: get("delta.snapshot")? == 1,
            file: get("delta.file")? as usize,
            row: get("delta.row")? as usize,
        })
    }
}

/// The Delta source.
pub struct DeltaSource {
    name: String,
    /// The query's filters ([`Source::set_pruning`]).
    pruning: std::sync::Mutex<Option<std::sync::Arc<dyn velo_connectors::source::Pruning>>>,
    /// The table's partition columns.
    partitions: Vec<String>,
    cfg: DeltaSourceConfig,
    location: Location,
    schema: SchemaRef,
    /// Where a reader without a position starts.
    start: At,
    /// A snapshot's data files and the store they are in (bounded
    /// snapshots only), for a batch plan that scans them itself.
    listed: Option<(Vec<DataFile>, std::sync::Arc<dyn object_store::ObjectStore>)>,
}

impl std::fmt::Debug for DeltaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeltaSource({} <- {})", self.name, self.location.shown)
    }
}

impl DeltaSource {
    /// The source of `location`: the table's version and schema settled
    /// (`declared`: a schema given in the SQL, which offline is all there
    /// is to know). Called on the runtime.
    pub async fn new(
        name: &str,
        cfg: DeltaSourceConfig,
        location: Location,
        declared: Option<SchemaRef>,
        offline: bool,
    ) -> Result<Self> {
        if offline {
            let schema = declared.ok_or_else(|| {
                ConnectorError::Other(format!(
                    "{} the schema of the Delta table {} is read from its log; declare it (a column list) to check offline",
                    velo_connectors::registry::OFFLINE_MARK,
                    location.shown
                ))
            })?;
            return Ok(Self {
                name: name.to_string(),
                pruning: Default::default(),
                partitions: Vec::new(),
                start: At {
                    version: 0,
                    snapshot: cfg.mode != Mode::Follow,
                    file: 0,
                    row: 0,
                },
                cfg,
                location,
                schema,
                listed: None,
            });
        }
        let mut table = location.load().await?.ok_or_else(|| {
            ConnectorError::Other(format!(
                "there is no Delta table at {} (no _delta_log); check the path",
                location.shown
            ))
        })?;
        let latest = table.version().unwrap_or(0) as u64;
        if let Some(v) = cfg.version {
            if v > latest {
                return Err(ConnectorError::Other(format!(
                    "the Delta table {} has no version {v}: its newest is {latest}",
                    location.shown
                )));
            }
            table
                .load_version(v as _)
                .await
                .map_err(|e| location.error(&format!("read version {v} of"), &e))?;
        } else if let Some(t) = cfg.timestamp {
            table
                .load_with_datetime(t)
                .await
                .map_err(|e| location.error(&format!("read the version at {t} of"), &e))?;
            before_the_table(&table, t, &location)?;
        }
        let version = table.version().unwrap_or(0) as u64;
        supported(&table, &location)?;
        let snapshot = table.snapshot().map_err(|e| location.error("read", &e))?;
        let schema = snapshot.snapshot().arrow_schema();
        let partitions = snapshot.metadata().partition_columns().to_vec();
        let listed = match cfg.mode {
            Mode::Snapshot => Some((data_files(&table, &location)?, table.object_store())),
            _ => None,
        };
        let start = match cfg.mode {
            Mode::Snapshot | Mode::SnapshotAndFollow => At {
                version,
                snapshot: true,
                file: 0,
                row: 0,
            },
            Mode::Follow => At {
                version: cfg.starting_version.unwrap_or(latest + 1),
                snapshot: false,
                file: 0,
                row: 0,
            },
        };
        Ok(Self {
            name: name.to_string(),
            pruning: Default::default(),
            partitions,
            cfg,
            location,
            schema,
            start,
            listed,
        })
    }
}

/// The data files of the loaded version of `table`, in path order.
fn data_files(table: &DeltaTable, location: &Location) -> Result<Vec<DataFile>> {
    let snapshot = table.snapshot().map_err(|e| location.error("read", &e))?;
    let mut files: Vec<DataFile> = snapshot
        .log_data()
        .iter()
        .map(|f| DataFile {
            path: f.path().to_string(),
            partitions: f.partition_values_map(),
            size: f.size() as u64,
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Refuses a `timestamp` older than the table's first kept version (delta-rs
/// would give that version, which did not exist at the time asked for).
fn before_the_table(
    table: &DeltaTable,
    t: chrono::DateTime<chrono::Utc>,
    location: &Location,
) -> Result<()> {
    let snapshot = table.snapshot().map_err(|e| location.error("read", &e))?;
    let v = snapshot.version();
    let at = snapshot.snapshot().version_timestamp(v as _);
    if let Some(ms) = at.filter(|ms| *ms > t.timestamp_millis()) {
        let first = chrono::DateTime::from_timestamp_millis(ms)
            .map(|d| d.to_rfc3339())
            .unwrap_or_else(|| ms.to_string());
        return Err(ConnectorError::Other(format!(
            "the Delta table {} has no version as of {}: its oldest version ({v}) was committed at {first}; give a later timestamp",
            location.shown,
            t.to_rfc3339()
        )));
    }
    Ok(())
}

/// Refuses what this reader cannot read right: column mapping (file
/// columns named apart from the table's) and deletion vectors.
fn supported(table: &DeltaTable, location: &Location) -> Result<()> {
    let snapshot = table.snapshot().map_err(|e| location.error("read", &e))?;
    let conf = snapshot.metadata().configuration();
    if conf
        .get("delta.columnMapping.mode")
        .is_some_and(|m| m != "none")
    {
        return Err(ConnectorError::Other(format!(
            "the Delta table {} uses column mapping, which this reader does not support yet",
            location.shown
        )));
    }
    if snapshot
        .log_data()
        .iter()
        .any(|f| f.deletion_vector_descriptor().is_some())
    {
        return Err(ConnectorError::Other(format!(
            "the Delta table {} has deletion vectors, which this reader does not support yet; OPTIMIZE or REORG the table (PURGE) to rewrite them",
            location.shown
        )));
    }
    Ok(())
}

impl Source for DeltaSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn listing(&self) -> std::result::Result<velo_connectors::ListingSpec, String> {
        let Some((files, store)) = &self.listed else {
            return Err(match self.cfg.mode {
                Mode::Snapshot => format!(
                    "source '{}': the Delta table {}'s files are listed when the job runs",
                    self.name, self.location.shown
                ),
                _ => format!(
                    "source '{}' follows the Delta table {} (unbounded)",
                    self.name, self.location.shown
                ),
            });
        };
        let file_schema = std::sync::Arc::new(arrow::datatypes::Schema::new(
            self.schema
                .fields()
                .iter()
                .filter(|f| !self.partitions.contains(f.name()))
                .cloned()
                .collect::<Vec<_>>(),
        ));
        let partitions = self
            .partitions
            .iter()
            .map(|p| {
                let t = self
                    .schema
                    .field_with_name(p)
                    .map(|f| f.data_type().clone())
                    .unwrap_or(arrow::datatypes::DataType::Utf8);
                (p.clone(), t)
            })
            .collect();
        let files = files
            .iter()
            .map(|f| velo_connectors::ListedFile {
                path: object_store::path::Path::parse(&f.path)
                    .unwrap_or_else(|_| object_store::path::Path::from(f.path.as_str())),
                size: f.size,
                partition_values: self
                    .partitions
                    .iter()
                    .map(|p| f.partitions.get(p).cloned().flatten())
                    .collect(),
            })
            .collect();
        Ok(velo_connectors::ListingSpec {
            location: self.location.shown.clone(),
            format: velo_connectors::ListingFormat::Parquet,
            file_schema,
            partitions,
            store: Some((self.location.shown.clone(), store.clone())),
            files: Some(files),
            files_root: Some(self.location.url.clone()),
            columns: Some(self.schema.clone()),
        })
    }

    fn set_pruning(&self, pruning: std::sync::Arc<dyn velo_connectors::source::Pruning>) {
        *self.pruning.lock().unwrap_or_else(|p| p.into_inner()) = Some(pruning);
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
                    "the checkpoint's position for the Delta source '{}' is not one ({:?}); move the state directory away to start over",
                    self.name, p.parts
                ))
            })?,
        };
        let handle = Handle::try_current().map_err(|_| {
            ConnectorError::Internal("the Delta source is opened outside the runtime".into())
        })?;
        let (tx, rx) = tokio::sync::mpsc::channel(source::SOURCE_CHANNEL_CAPACITY);
        let reader = Reader {
            name: self.name.clone(),
            location: self.location.clone(),
            schema: self.schema.clone(),
            mode: self.cfg.mode,
            poll: self.cfg.poll_interval,
            batch_size: batch_size.max(1),
            tx: tx.clone(),
            partitions: self.partitions.clone(),
            scan: read::Scan {
                columns: projection.map(|p| {
                    p.iter()
                        .map(|i| self.schema.field(*i).name().clone())
                        .collect()
                }),
                pruning: self
                    .pruning
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            },
        };
        source::spawn_reader(format!("delta-{}", self.name), &self.name, &tx, move || {
            if let Err(e) = handle.block_on(reader.run(at)) {
                let _ = reader.tx.blocking_send(SourceEvent::Error(e));
            }
        })?;
        Ok(SourceReader::new(rx))
    }

    fn describe(&self) -> String {
        let what = match self.cfg.mode {
            Mode::Snapshot => format!("snapshot at version {}", self.start.version),
            Mode::Follow => format!("following commits from version {}", self.start.version),
            Mode::SnapshotAndFollow => format!(
                "snapshot at version {}, then its commits",
                self.start.version
            ),
        };
        format!("Delta table {} ({what})", self.location.shown)
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
    location: Location,
    schema: SchemaRef,
    mode: Mode,
    poll: Duration,
    batch_size: usize,
    tx: Sender<SourceEvent>,
    /// The table's partition columns.
    partitions: Vec<String>,
    /// The columns and filters of the query.
    scan: read::Scan,
}

/// The reader was dropped: stop quietly.
struct Closed;

impl Reader {
    /// Reads from `at` on: the snapshot's files, then (following) each
    /// commit's added files, as they appear.
    async fn run(&self, mut at: At) -> Result<()> {
        let mut table = self
            .location
            .table()
            .map_err(|e| self.location.error("open", &e))?;
        loop {
            let files = if at.snapshot {
                Some(self.snapshot_files(&mut table, at.version).await?)
            } else {
                self.commit_files(&table, at.version).await?
            };
            let Some(files) = files else {
                // the commit is not there yet
                tokio::time::sleep(self.poll).await;
                if self.tx.is_closed() {
                    return Ok(());
                }
                continue;
            };
            if self.read_files(&table, &files, &mut at).await.is_err() {
                return Ok(());
            }
            // the version is read: on to the next commit, or the end
            if at.snapshot && self.mode == Mode::Snapshot {
                return Ok(());
            }
            at = At {
                version: at.version + 1,
                snapshot: false,
                file: 0,
                row: 0,
            };
            if self
                .send(RecordBatch::new_empty(self.schema.clone()), at)
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    }

    /// The data files of version `v`, in path order.
    async fn snapshot_files(&self, table: &mut DeltaTable, v: u64) -> Result<Vec<DataFile>> {
        table
            .load_version(v as _)
            .await
            .map_err(|e| self.location.error(&format!("read version {v} of"), &e))?;
        supported(table, &self.location)?;
        data_files(table, &self.location)
    }

    /// The files commit `v` added with new data, in path order; `None` when
    /// there is no commit `v` yet. A commit that removes data is refused.
    async fn commit_files(&self, table: &DeltaTable, v: u64) -> Result<Option<Vec<DataFile>>> {
        let bytes = table
            .log_store()
            .read_commit_entry(v as _)
            .await
            .map_err(|e| self.location.error(&format!("read commit {v} of"), &e))?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        let mut files = Vec::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let action: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
                ConnectorError::Other(format!(
                    "commit {v} of the Delta table {} is not valid JSON: {e}",
                    self.location.shown
                ))
            })?;
            if let Some(add) = action.get("add") {
                if add.get("dataChange").and_then(|d| d.as_bool()) == Some(false) {
                    continue;
                }
                if add.get("deletionVector").is_some_and(|d| !d.is_null()) {
                    return Err(ConnectorError::Other(format!(
                        "commit {v} of the Delta table {} adds a file with a deletion vector, which this reader does not support yet",
                        self.location.shown
                    )));
                }
                files.push(added_file(add, v, &self.location)?);
            } else if let Some(remove) = action.get("remove") {
                if remove.get("dataChange").and_then(|d| d.as_bool()) != Some(false) {
                    let op = operation(&bytes);
                    return Err(ConnectorError::Other(format!(
                        "commit {v} of the Delta table {} removes rows ({op}); following a table reads appended rows only. Restart from a snapshot of the table (mode = 'snapshot_and_follow', a new state directory) to read it as it is now",
                        self.location.shown
                    )));
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Some(files))
    }

    /// Streams `files` from `at` on, each batch with the position after it.
    async fn read_files(
        &self,
        table: &DeltaTable,
        files: &[DataFile],
        at: &mut At,
    ) -> std::result::Result<(), Closed> {
        let store = table.object_store();
        let wanted = self.wanted(files);
        while at.file < files.len() {
            let file = &files[at.file];
            if !wanted[at.file] {
                // its partition values fail the query's filters
                at.file += 1;
                at.row = 0;
                continue;
            }
            let rows = read::scan(
                store.clone(),
                file,
                self.schema.clone(),
                self.batch_size,
                at.row,
                &self.scan,
            )
            .await;
            let mut rows = match rows {
                Ok(r) => r,
                Err(e) => return self.fail(e).await,
            };
            while let Some(batch) = rows.next().await {
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

    /// Which of `files` may hold rows the query keeps, by their partition
    /// values (all, without filters or partitions). The list keeps every
    /// file, so positions (file indices) do not depend on the filters.
    fn wanted(&self, files: &[DataFile]) -> Vec<bool> {
        let all = vec![true; files.len()];
        let Some(p) = &self.scan.pruning else {
            return all;
        };
        if self.partitions.is_empty() || files.is_empty() {
            return all;
        }
        // the values as the table's types, so `day = 3` compares numbers
        let (mut fields, mut cols) = (Vec::new(), Vec::new());
        for c in &self.partitions {
            let text: arrow::array::ArrayRef =
                std::sync::Arc::new(arrow::array::StringArray::from_iter(
                    files.iter().map(|f| f.partitions.get(c).cloned().flatten()),
                ));
            let ty = self
                .schema
                .field_with_name(c)
                .map(|f| f.data_type().clone())
                .unwrap_or(arrow::datatypes::DataType::Utf8);
            let Ok(typed) = arrow::compute::cast(&text, &ty) else {
                return all;
            };
            fields.push(arrow::datatypes::Field::new(c, ty, true));
            cols.push(typed);
        }
        match RecordBatch::try_new(
            std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
            cols,
        ) {
            Ok(values) => {
                let keep = p.partitions(&values);
                if keep.len() == files.len() { keep } else { all }
            }
            Err(_) => all,
        }
    }

    async fn send(&self, batch: RecordBatch, at: At) -> std::result::Result<(), Closed> {
        self.tx
            .send(SourceEvent::Positioned(batch, at.position()))
            .await
            .map_err(|_| Closed)
    }

    async fn fail(&self, e: ConnectorError) -> std::result::Result<(), Closed> {
        let _ = self.tx.send(SourceEvent::Error(e)).await;
        tracing::debug!(source = %self.name, "the Delta reader stopped on an error");
        Err(Closed)
    }
}

/// The operation a commit names in its commitInfo (for messages).
fn operation(bytes: &[u8]) -> String {
    bytes
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .find_map(|a| {
            a.get("commitInfo")
                .and_then(|c| c.get("operation"))
                .and_then(|o| o.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "an operation that is not an append".into())
}

/// An `add` action of commit `v` as a data file.
fn added_file(add: &serde_json::Value, v: u64, location: &Location) -> Result<DataFile> {
    let bad = || {
        ConnectorError::Other(format!(
            "commit {v} of the Delta table {} has an add action without a path or size",
            location.shown
        ))
    };
    let raw = add.get("path").and_then(|p| p.as_str()).ok_or_else(bad)?;
    if raw.contains("://") {
        return Err(ConnectorError::Other(format!(
            "commit {v} of the Delta table {} adds a file outside the table ({}), which this reader does not support",
            location.shown,
            velo_config::mask(raw)
        )));
    }
    let path = percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned();
    let size = add.get("size").and_then(|s| s.as_u64()).ok_or_else(bad)?;
    let partitions: HashMap<String, Option<String>> = add
        .get("partitionValues")
        .and_then(|p| p.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
                .collect()
        })
        .unwrap_or_default();
    Ok(DataFile {
        path,
        partitions,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_round_trips() {
        let at = At {
            version: 7,
            snapshot: true,
            file: 3,
            row: 1024,
        };
        assert_eq!(At::of(&at.position()), Some(at));
        assert_eq!(At::of(&Position::default()), None);
    }
}
