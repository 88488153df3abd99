//! The source side: [`Source`] describes a named input, [`SourceReader`] is
//! the running reader the engine pulls [`SourceEvent`]s from.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::Result;

/// A record that could not be decoded, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRecord {
    /// Source name.
    pub source: String,
    /// File (or topic/partition) it came from.
    pub location: String,
    /// 1-based line or record number.
    pub line: u64,
    /// What was wrong.
    pub error: String,
    /// The raw record text (truncated to 4 KiB).
    pub raw: String,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bad record in source '{}' at {}:{}: {}",
            self.source, self.location, self.line, self.error
        )
    }
}

/// Where a source stands: for each of its parts (a Kafka `topic/partition`,
/// a file) the position of the next record to read. Sources that can resume
/// report one with every batch; the engine stores the one of its last
/// committed epoch (consumer group, checkpoint) and hands it back on restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Part name -> next offset.
    pub parts: std::collections::BTreeMap<String, i64>,
}

/// Commits a source's [`Position`] back to where it lives (a Kafka consumer
/// group), after every sink has acknowledged the epoch that reached it.
pub trait PositionCommitter: Send + Sync {
    /// Commits `pos`; `sync` waits for the broker's answer.
    fn commit(&self, pos: &Position, sync: bool) -> Result<()>;
    /// What a transactional sink of the same system needs to send these
    /// positions inside its own transaction (the Kafka consumer whose group
    /// they belong to); `None` for others.
    fn transaction_context(&self) -> Option<TransactionContext> {
        None
    }
    /// The engine did not commit `pos`, because a sink missed the epoch
    /// that reached it (LogAndContinue goes on without that sink): what
    /// that epoch read is not safely written everywhere. A source that acts
    /// on what it has read (deletes read files) must not act on it.
    fn skipped(&self, _pos: &Position) {}
    /// How far behind each part (a Kafka partition, as `topic/partition`)
    /// the committed position is, in records, as last known; empty when
    /// the source cannot tell.
    fn lag(&self) -> Vec<(String, i64)> {
        Vec::new()
    }
}

/// What a source hands to a transactional sink of the same system so that
/// the sink commits the epoch's source position inside its own transaction
/// (read-process-write exactly once without the engine's checkpoint). Plain
/// data: a sink that does not know a variant ignores it, and the engine's
/// checkpoint still carries the position.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransactionContext {
    /// A Kafka consumer of `group`: a Kafka sink sends the epoch's offsets to
    /// its transaction as this member of the group (so a fenced, older
    /// member cannot commit), finding the consumer by `consumer`, its id
    /// among the consumers the Kafka connector keeps in the
    /// [`crate::ConnectorContext`] (librdkafka's group metadata cannot
    /// leave the client as data).
    KafkaGroup {
        /// The consumer group.
        group: String,
        /// The consumer's id in the connector context.
        consumer: u64,
    },
}

/// What a running source produces.
#[derive(Debug)]
pub enum SourceEvent {
    /// Decoded records.
    Batch(RecordBatch),
    /// Decoded records and the source's position just after them. The engine
    /// never splits such a batch across epochs, so the position of an epoch
    /// is exactly that of its last batch.
    Positioned(RecordBatch, Position),
    /// Decoded records from several parts of the source (Kafka partitions),
    /// with the source's position just after them if it has one (then the
    /// batch is never split across epochs, as for [`Self::Positioned`]).
    /// `parts` names where the rows came from as runs over the batch, in
    /// order: (part, number of rows). The watermark of an event-time source
    /// is the minimum over its parts.
    Parts {
        /// The records.
        batch: RecordBatch,
        /// The position after them, if the source reports positions.
        position: Option<Position>,
        /// (part, rows) runs covering the batch.
        parts: Vec<(std::sync::Arc<str>, usize)>,
    },
    /// The parts the source reads from now on (Kafka partitions after a
    /// rebalance): the watermark waits for each of them, also before it
    /// delivers a record (or until it is idle for `watermark.idle_timeout`),
    /// and forgets parts not listed.
    PartsAssigned(Vec<std::sync::Arc<str>>),
    /// A record that could not be decoded.
    Bad(BadRecord),
    /// A fatal error (the source stops), with its kind.
    Error(crate::ConnectorError),
}

/// The running reader: a bounded channel fed by the source's own thread
/// (dropping the reader stops the thread), or a generator run by the task
/// that reads it.
pub struct SourceReader {
    rx: Feed,
    committer: Option<std::sync::Arc<dyn PositionCommitter>>,
}

/// Where a reader's events come from.
enum Feed {
    /// A bounded channel fed by the source's own thread.
    Channel(tokio::sync::mpsc::Receiver<SourceEvent>),
    /// Made on demand by the reading task ([`inline_generator`]).
    Inline(Box<dyn FnMut() -> Option<SourceEvent> + Send>),
}

impl SourceReader {
    /// A reader fed by `rx`.
    pub fn new(rx: tokio::sync::mpsc::Receiver<SourceEvent>) -> Self {
        Self {
            rx: Feed::Channel(rx),
            committer: None,
        }
    }

    /// A reader whose positions are committed through `committer`.
    pub fn with_committer(mut self, committer: std::sync::Arc<dyn PositionCommitter>) -> Self {
        self.committer = Some(committer);
        self
    }

    /// The committer of this reader's positions, if the source has one.
    pub fn committer(&self) -> Option<std::sync::Arc<dyn PositionCommitter>> {
        self.committer.clone()
    }

    /// Next event, or `None` when a bounded source is exhausted.
    pub async fn next(&mut self) -> Option<SourceEvent> {
        match &mut self.rx {
            Feed::Channel(rx) => rx.recv().await,
            Feed::Inline(f) => f(),
        }
    }

    /// Next event if one is ready now; `Err(true)` if the source is exhausted.
    pub fn try_next(&mut self) -> std::result::Result<SourceEvent, bool> {
        use tokio::sync::mpsc::error::TryRecvError;
        match &mut self.rx {
            Feed::Channel(rx) => rx
                .try_recv()
                .map_err(|e| matches!(e, TryRecvError::Disconnected)),
            Feed::Inline(f) => f().ok_or(true),
        }
    }
}

/// The columns a projection leaves out of a source's batches, as nulls (the
/// [`Source::open`] contract: batches keep the source's full schema). One
/// array of nulls per such column is made when the reader opens, for its
/// batch size (at most 64K rows), and sliced for each batch; only a longer
/// batch gets arrays of its own.
#[derive(Debug, Clone)]
pub struct NullColumns {
    /// Per column of the schema: its nulls when it is not read.
    arrays: Vec<Option<arrow::array::ArrayRef>>,
}

impl NullColumns {
    /// For the columns of `schema` that `read` leaves out, in batches of up
    /// to `rows` rows.
    pub fn new(
        schema: &arrow::datatypes::Schema,
        read: impl Fn(usize) -> bool,
        rows: usize,
    ) -> Self {
        let rows = rows.clamp(1, 1 << 16);
        Self {
            arrays: schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| (!read(i)).then(|| arrow::array::new_null_array(f.data_type(), rows)))
                .collect(),
        }
    }

    /// Whether column `i` is read (not filled with nulls).
    pub fn is_read(&self, i: usize) -> bool {
        self.arrays.get(i).is_none_or(Option::is_none)
    }

    /// How many columns are read.
    pub fn read_count(&self) -> usize {
        self.arrays.iter().filter(|a| a.is_none()).count()
    }

    /// The columns of a batch of `n` rows of the whole schema: the columns
    /// read (`read`, in schema order) with the nulls of the others between
    /// them; None when `read` holds more or fewer columns than are read.
    pub fn widen(
        &self,
        read: &[arrow::array::ArrayRef],
        n: usize,
    ) -> Option<Vec<arrow::array::ArrayRef>> {
        let mut read = read.iter();
        let wide = (0..self.arrays.len())
            .map(|i| self.get(i, n).or_else(|| read.next().cloned()))
            .collect::<Option<Vec<_>>>()?;
        read.next().is_none().then_some(wide)
    }

    /// Column `i` as `n` nulls; None for a column that is read.
    pub fn get(&self, i: usize, n: usize) -> Option<arrow::array::ArrayRef> {
        let a = self.arrays.get(i)?.as_ref()?;
        Some(if a.len() >= n {
            a.slice(0, n)
        } else {
            arrow::array::new_null_array(a.data_type(), n)
        })
    }
}

/// Channel capacity between a source thread and the engine: a few batches
/// in flight, so reading stays bounded in memory.
pub const SOURCE_CHANNEL_CAPACITY: usize = 4;

/// What a query's filters say about the data a source may skip. The engine
/// evaluates them (with DataFusion); a source that can skip whole files
/// (Hive partitions) or Parquet row groups (by their statistics) asks. The
/// query still applies its filters to what is read: skipping is only ever
/// an optimization, and a source that cannot tell keeps the data.
pub trait Pruning: Send + Sync + std::fmt::Debug {
    /// For each row of `values` (one per file: the source's partition
    /// columns, as strings), whether the file may hold rows the query keeps.
    fn partitions(&self, values: &RecordBatch) -> Vec<bool>;
    /// For each row group of a Parquet file whose Arrow schema is `schema`,
    /// whether it may hold rows the query keeps; `None` when the filters
    /// say nothing about the file's columns.
    fn row_groups(
        &self,
        schema: &SchemaRef,
        metadata: &parquet::file::metadata::ParquetMetaData,
    ) -> Option<Vec<bool>>;
}

/// What a bounded source reads, for a query engine that reads the files
/// itself instead of through the source (one DataFusion batch plan, or a
/// Ballista cluster's executors: `cluster`): the same files, columns and
/// partition columns.
#[derive(Debug, Clone)]
pub struct ListingSpec {
    /// The path, directory or glob, absolute; for a table ([`Self::files`]),
    /// where it is (for messages).
    pub location: String,
    /// How the files are encoded.
    pub format: ListingFormat,
    /// The columns stored in the files.
    pub file_schema: SchemaRef,
    /// Columns whose values a file's place gives (`key=value` directories:
    /// strings; a table format's partition values: the table's types),
    /// after the file's.
    pub partitions: Vec<(String, arrow::datatypes::DataType)>,
    /// For files in an object store: the URL of its root
    /// (`s3://bucket`) and the client configured with the source's keys,
    /// for the reader to register. For a table ([`Self::files`]): the store
    /// its files' paths are in (the URL is not used).
    pub store: Option<(String, std::sync::Arc<dyn object_store::ObjectStore>)>,
    /// A table format's data files (a Delta or Iceberg snapshot), instead
    /// of the files under [`Self::location`].
    pub files: Option<Vec<ListedFile>>,
    /// The URL the paths of [`Self::files`] are relative to
    /// (`s3://bucket/`, `file:///`, a Delta table's `file:///abs/table/`),
    /// for a reader that opens them by URL with its own store (a cluster).
    pub files_root: Option<url::Url>,
    /// The order of the source's columns: the file's columns and the
    /// partition columns as they appear in [`Source::schema`] (`None`: the
    /// file's, then the partitions').
    pub columns: Option<SchemaRef>,
}

/// A data file of a table snapshot ([`ListingSpec::files`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ListedFile {
    /// Its path in [`ListingSpec::store`].
    pub path: object_store::path::Path,
    /// Bytes.
    pub size: u64,
    /// The values of [`ListingSpec::partitions`], in order, as text
    /// (`None`: null).
    pub partition_values: Vec<Option<String>>,
}

/// The encodings a [`ListingSpec`] describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListingFormat {
    /// Apache Parquet.
    Parquet,
    /// Delimited text.
    Csv {
        /// The first line names the columns.
        has_header: bool,
        /// Field delimiter.
        delimiter: u8,
        /// Quote character.
        quote: u8,
    },
    /// One JSON object per line.
    JsonLines,
}

/// A configured input.
pub trait Source: Send + Sync + std::fmt::Debug {
    /// The files this source reads, for an engine that reads them itself
    /// ([`ListingSpec`]); why it cannot be read so, otherwise.
    fn listing(&self) -> std::result::Result<ListingSpec, String> {
        Err(format!(
            "'{}' is not a bounded file source: {}",
            self.name(),
            self.describe()
        ))
    }
    /// The name used in SQL.
    fn name(&self) -> &str;
    /// The query's filters, before the source is opened, for a source that
    /// can skip data ([`Pruning`]); others ignore them.
    fn set_pruning(&self, _pruning: std::sync::Arc<dyn Pruning>) {}
    /// The Arrow schema of its batches.
    fn schema(&self) -> SchemaRef;
    /// Whether the input ends (files) or not (watch, generator at a rate).
    fn is_bounded(&self) -> bool;
    /// Starts reading on a thread of its own. `batch_size` is the preferred
    /// number of rows per batch. `projection` (indices into [`Self::schema`])
    /// names the columns the query uses: a source may decode only those and
    /// fill the others with nulls. Batches always have the full schema.
    fn open(&self, batch_size: usize, projection: Option<&[usize]>) -> Result<SourceReader>;
    /// Like [`Self::open`], resuming at `resume` (a position this source
    /// reported earlier). Sources that cannot resume refuse a position.
    fn open_at(
        &self,
        batch_size: usize,
        projection: Option<&[usize]>,
        resume: Option<&Position>,
    ) -> Result<SourceReader> {
        match resume {
            None => self.open(batch_size, projection),
            Some(_) => Err(crate::ConnectorError::Other(format!(
                "source '{}' cannot resume from a checkpoint position",
                self.name()
            ))),
        }
    }
    /// Whether the source can be read by several readers at once, each
    /// delivering its own share of the records ([`Self::open_part`]): a
    /// partitioned job then reads it on every core.
    fn splittable(&self) -> bool {
        false
    }
    /// Reader `part` of `parts` (from 0) of a [`Self::splittable`] source:
    /// the readers together deliver every record exactly once. A source
    /// that cannot split refuses more than one part.
    fn open_part(
        &self,
        batch_size: usize,
        projection: Option<&[usize]>,
        part: usize,
        parts: usize,
    ) -> Result<SourceReader> {
        match (part, parts) {
            (0, 1) => self.open(batch_size, projection),
            _ => Err(crate::ConnectorError::Other(format!(
                "source '{}' cannot be read in parts",
                self.name()
            ))),
        }
    }
    /// A one-line description for `explain`.
    fn describe(&self) -> String;
    /// Whether the source reports [`Position`]s and can resume from one.
    fn resumable(&self) -> bool {
        false
    }
    /// Whether a job on this source checkpoints and resumes without being
    /// asked (Kafka: a consumer group goes on where it was); `false`: only
    /// with an explicit state directory (files: a second run reads them
    /// again unless told to resume).
    fn resumes_by_default(&self) -> bool {
        true
    }
}

/// Runs a generator (datagen, Nexmark) on a thread of its own. It counts in
/// units (rows, events); `step(at, cap)` builds the event for the units from
/// `at` (at most `cap` of them when paced) and returns it with the next unit,
/// or `None` at the end. With `rate` (units per second) the steps are paced
/// by the wall clock, in tenths of a second.
fn spawn_generator(
    thread_name: String,
    rate: Option<u64>,
    mut step: impl FnMut(u64, Option<u64>) -> Option<(SourceEvent, u64)> + Send + 'static,
) -> Result<SourceReader> {
    let (tx, rx) = tokio::sync::mpsc::channel(SOURCE_CHANNEL_CAPACITY);
    let cap = rate.map(|r| (r / 10).max(1));
    let source = thread_name.clone();
    spawn_reader(thread_name, &source, &tx.clone(), move || {
        let started = std::time::Instant::now();
        let mut at = 0u64;
        loop {
            if let Some(r) = rate {
                let due = started + std::time::Duration::from_secs_f64(at as f64 / r as f64);
                let now = std::time::Instant::now();
                if due > now {
                    std::thread::park_timeout(due - now);
                    if tx.is_closed() {
                        return;
                    }
                    continue;
                }
            }
            let Some((ev, next)) = step(at, cap) else {
                return;
            };
            if tx.blocking_send(ev).is_err() {
                return;
            }
            at = next;
        }
    })?;
    Ok(SourceReader::new(rx))
}

/// The text of a panic's payload.
pub fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// The error event of a reader of `source` that panicked: an internal
/// error that stops the job, never a quiet end of input.
fn panicked(source: &str, p: &(dyn std::any::Any + Send)) -> SourceEvent {
    SourceEvent::Error(crate::ConnectorError::Internal(format!(
        "the reader of source '{source}' panicked: {}",
        panic_text(p)
    )))
}

/// How a table source (Delta, Iceberg) reads its table: its `mode` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableMode {
    /// One version or snapshot, bounded (the default).
    Snapshot,
    /// The rows each new commit or snapshot appends, unbounded.
    Follow,
    /// One version or snapshot, then what each later one appends.
    SnapshotAndFollow,
}

impl TableMode {
    /// The `mode` key of `cfg`.
    pub fn from_config(
        cfg: &velo_config::ConnectorConfig,
    ) -> std::result::Result<Self, velo_config::ConfigError> {
        match cfg.get("mode").map(|m| m.trim().to_ascii_lowercase()) {
            None => Ok(Self::Snapshot),
            Some(m) => match m.as_str() {
                "snapshot" => Ok(Self::Snapshot),
                "follow" => Ok(Self::Follow),
                "snapshot_and_follow" => Ok(Self::SnapshotAndFollow),
                _ => Err(cfg.invalid("mode", &m, "snapshot, follow or snapshot_and_follow")),
            },
        }
    }
}

/// A point in time a table source reads as of (`timestamp` of the Delta
/// and Iceberg sources): RFC 3339 (`2026-12-01T10:00:00Z`) or a date
/// (`2026-12-01`, its midnight UTC).
pub fn parse_instant(t: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = t.trim();
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
}

/// Starts the reader thread `thread` of `source`, which sends its events
/// on (a clone of) `tx`: a panic in `run` reaches the engine as an internal
/// error event instead of looking like the end of the input.
pub fn spawn_reader(
    thread: String,
    source: &str,
    tx: &tokio::sync::mpsc::Sender<SourceEvent>,
    run: impl FnOnce() + Send + 'static,
) -> Result<()> {
    let (tx, name) = (tx.clone(), source.to_string());
    std::thread::Builder::new()
        .name(thread)
        .spawn(move || {
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
                let _ = tx.blocking_send(panicked(&name, p.as_ref()));
            }
        })
        .map_err(|e| {
            crate::ConnectorError::Other(format!(
                "cannot start a reader thread for source '{source}': {e}"
            ))
        })?;
    Ok(())
}

/// Runs an unpaced generator on the task that reads it: `step` as for
/// [`spawn_generator`], called each time the engine asks for the next event.
/// For the readers of a split source, one per partition: each partition
/// then generates its share on its own core, with no thread in between.
fn inline_generator(
    source: String,
    mut step: impl FnMut(u64, Option<u64>) -> Option<(SourceEvent, u64)> + Send + 'static,
) -> SourceReader {
    let mut at = 0;
    let mut failed = false;
    SourceReader {
        rx: Feed::Inline(Box::new(move || {
            if failed {
                return None;
            }
            let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(at, None)));
            match stepped {
                Ok(r) => {
                    let (ev, next) = r?;
                    at = next;
                    Some(ev)
                }
                Err(p) => {
                    failed = true;
                    Some(panicked(&source, p.as_ref()))
                }
            }
        })),
        committer: None,
    }
}

/// Reader `part` of `parts` of a generator (datagen, Nexmark) that counts in
/// units (rows, events): it makes every `parts`-th block of units, starting
/// at block `part`, up to `total` units, at its share of `rate` (units per
/// second; the shares add up to the rate). A block is `block` units, or,
/// paced, at most a tenth of a second of one part's share (the same for all
/// parts, so that they interleave), which keeps latency low. `make(from, n)`
/// builds the batch of units `[from, from + n)` (an error is handed on as
/// one). The values being a function of the unit number, the parts together
/// make exactly what one reader (`part` 0 of 1) would. Paced, or one reader:
/// on a thread of its own; one of several parts, unpaced: on the task of the
/// partition that reads it (a thread per part only adds hand-overs between
/// the partitions' cores).
pub fn generator_part(
    thread_name: String,
    rate: Option<u64>,
    total: Option<u64>,
    block: u64,
    part: usize,
    parts: usize,
    mut make: impl FnMut(u64, u64) -> Result<arrow::array::RecordBatch> + Send + 'static,
) -> Result<SourceReader> {
    let (part, parts) = (part as u64, parts.max(1) as u64);
    let block = rate.map_or(block, |r| block.min(r / 10 / parts)).max(1);
    let share = |r: u64, k: u64| (u128::from(r) * u128::from(k) / u128::from(parts)) as u64;
    let rate = rate.map(|r| (share(r, part + 1) - share(r, part)).max(1));
    let step = move |at: u64, cap: Option<u64>| {
        // `at` counts this part's units: the unit it stands for
        let from = (at / block * parts + part) * block + at % block;
        let mut n = block - at % block;
        if let Some(total) = total {
            if from >= total {
                return None;
            }
            n = n.min(total - from);
        }
        let n = cap.map_or(n, |c| n.min(c));
        let ev = match make(from, n) {
            Ok(b) => SourceEvent::Batch(b),
            Err(e) => SourceEvent::Error(e),
        };
        Some((ev, at + n))
    };
    if parts > 1 && rate.is_none() {
        Ok(inline_generator(thread_name, step))
    } else {
        spawn_generator(thread_name, rate, step)
    }
}

/// Every batch `reader` delivers, in order (tests of generators).
#[cfg(test)]
pub(crate) fn drain_batches(mut reader: SourceReader) -> Vec<arrow::array::RecordBatch> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut out = Vec::new();
    while let Some(ev) = rt.block_on(reader.next()) {
        let SourceEvent::Batch(b) = ev else {
            panic!("unexpected event {ev:?}");
        };
        out.push(b);
    }
    out
}

/// The full schema with every field nullable: what a source hands out when
/// columns outside the projection are filled with nulls.
pub fn relaxed(schema: &arrow::datatypes::Schema) -> SchemaRef {
    let fields: Vec<arrow::datatypes::Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    std::sync::Arc::new(arrow::datatypes::Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The columns left out come as nulls of their type and of the batch's
    /// length (sliced from one array, or made for a longer batch); the
    /// columns read have none.
    #[test]
    fn null_columns_fill_what_a_projection_leaves_out() {
        use arrow::array::Array;
        use arrow::datatypes::{DataType, Field, Schema};
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
            Field::new("c", DataType::Float64, true),
        ]);
        let nulls = NullColumns::new(&schema, |i| i == 1, 4);
        assert!(nulls.get(1, 3).is_none());
        assert_eq!(
            (0..3).map(|i| nulls.is_read(i)).collect::<Vec<_>>(),
            [false, true, false]
        );
        for n in [0, 3, 4, 9] {
            for (i, t) in [(0, DataType::Int64), (2, DataType::Float64)] {
                let a = nulls.get(i, n).unwrap();
                assert_eq!((a.len(), a.null_count(), a.data_type()), (n, n, &t));
            }
        }
        assert!(nulls.get(3, 1).is_none(), "no such column");
        // the column read goes between the nulls; too few columns: None
        let b: arrow::array::ArrayRef =
            std::sync::Arc::new(arrow::array::StringArray::from(vec!["x"; 5]));
        let wide = nulls.widen(std::slice::from_ref(&b), 5).unwrap();
        assert_eq!(wide.len(), 3);
        assert_eq!(
            (wide[0].null_count(), &wide[1], wide[2].null_count()),
            (5, &b, 5)
        );
        assert!(nulls.widen(&[], 5).is_none());
        assert!(
            nulls.widen(&[b.clone(), b.clone()], 5).is_none(),
            "too many"
        );
    }

    /// A reader thread that panics ends its source with an internal error,
    /// not with what looks like the end of the input.
    #[test]
    fn a_panicking_reader_is_an_internal_error_not_the_end_of_input() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let send = tx.clone();
        spawn_reader("t".into(), "src", &tx, move || {
            let _ = send.blocking_send(SourceEvent::Batch(arrow::array::RecordBatch::new_empty(
                std::sync::Arc::new(arrow::datatypes::Schema::empty()),
            )));
            panic!("boom");
        })
        .unwrap();
        drop(tx);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut reader = SourceReader::new(rx);
        let mut last = None;
        while let Some(ev) = rt.block_on(reader.next()) {
            last = Some(ev);
        }
        match last {
            Some(SourceEvent::Error(e)) => {
                assert_eq!(e.kind(), crate::ErrorKind::Internal);
                assert!(
                    e.to_string()
                        .contains("the reader of source 'src' panicked: boom"),
                    "{e}"
                );
            }
            other => panic!("expected an error event, got {other:?}"),
        }
        // and a generator run on the reading task, too
        let mut r = inline_generator("gen".into(), |_, _| panic!("bad spec"));
        match rt.block_on(r.next()) {
            Some(SourceEvent::Error(e)) => assert!(e.to_string().contains("bad spec"), "{e}"),
            other => panic!("expected an error event, got {other:?}"),
        }
        assert!(rt.block_on(r.next()).is_none());
    }

    #[test]
    fn instants_parse_as_rfc3339_or_dates() {
        assert!(parse_instant("2026-12-01T10:00:00Z").is_some());
        assert!(parse_instant("2026-12-01T10:00:00+01:00").is_some());
        assert!(parse_instant("2026-12-01").is_some());
        assert!(parse_instant("yesterday").is_none());
    }
}
