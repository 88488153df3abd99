//! `file_source`: reads files on a thread of its own into a bounded channel.

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use tokio::sync::mpsc::Sender;

use super::config::{AfterRead, Compression, FileFormat, FileSourceConfig};
use super::decode::{
    Dec, Decoded, JsonArrayToLines, LineFormat, Unit, UnitFormat, UnitSplitter, decode_unit,
};
use super::listing::{Entry, Files, Listed};
use crate::source::{
    BadRecord, Position, SOURCE_CHANNEL_CAPACITY, Source, SourceEvent, SourceReader, relaxed,
};
use crate::{ConnectorError, Result};

/// Files at least this large are decoded on several threads.
const PARALLEL_DECODE_MIN_BYTES: u64 = 8 << 20;

/// The position of a file read to its end: a resumed source does not open
/// it again (an object is not downloaded again to be skipped).
pub const FILE_DONE: i64 = i64::MAX;

/// A watched object store is listed incrementally (only names after the
/// last one seen); every this many polls it is listed whole, to find an
/// object whose name sorts before ones already read.
const FULL_LISTING_EVERY: u32 = 60;

/// A file source.
#[derive(Debug)]
pub struct FileSource {
    name: String,
    cfg: FileSourceConfig,
    /// Decoded schema (without metadata columns).
    data_schema: SchemaRef,
    /// Output schema (with partition and metadata columns).
    schema: SchemaRef,
    /// Where the files are.
    files: Files,
    /// Columns from `key=value` directories, after the data columns.
    partitions: Vec<String>,
    /// The query's filters, to skip partitions and row groups.
    pruning: std::sync::Mutex<Option<Arc<dyn crate::source::Pruning>>>,
}

fn open_reader(
    files: &Files,
    entry: &Entry,
    compression: Compression,
) -> Result<Box<dyn Read + Send>> {
    let path = Path::new(&entry.name);
    let f = BufReader::with_capacity(256 * 1024, files.open(entry)?);
    let name = entry.name.to_ascii_lowercase();
    let comp = match compression {
        Compression::Auto if name.ends_with(".gz") => Compression::Gzip,
        Compression::Auto if name.ends_with(".zst") || name.ends_with(".zstd") => Compression::Zstd,
        Compression::Auto => Compression::None,
        c => c,
    };
    let r: Box<dyn Read + Send> = match comp {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
        Compression::Zstd => Box::new(
            zstd::Decoder::with_buffer(f)
                .map_err(|e| ConnectorError::io("cannot read zstd", path, e))?,
        ),
        _ => Box::new(f),
    };
    text_stream(path, r)
}

/// How much of a text file is looked at to tell its encoding and line endings.
const SNIFF_BYTES: u64 = 64 * 1024;

/// A text file's bytes as the decoders expect them, read the way a user's
/// other tools read it: a UTF-8 byte-order mark is skipped, and a file with
/// old Mac line endings (CR alone) is read with LF ones; UTF-16 text is
/// refused with how to convert it.
fn text_stream(path: &Path, mut r: Box<dyn Read + Send>) -> Result<Box<dyn Read + Send>> {
    let mut head = Vec::new();
    (&mut r)
        .take(SNIFF_BYTES)
        .read_to_end(&mut head)
        .map_err(|e| ConnectorError::io("cannot read", path, e))?;
    if let Some(order) = velo_config::text::utf16_order(&head) {
        return Err(ConnectorError::Other(format!(
            "'{}' is UTF-16 ({order}) text; velo reads UTF-8: convert it, e.g. `iconv -f UTF-16 -t UTF-8 '{}' > converted`",
            path.display(),
            path.display()
        )));
    }
    let cr_only = head.contains(&b'\r') && !head.contains(&b'\n');
    if head.starts_with(b"\xEF\xBB\xBF") {
        head.drain(..3);
    }
    let whole = std::io::Cursor::new(head).chain(r);
    Ok(if cr_only {
        Box::new(CrToLf {
            inner: whole,
            last_cr: false,
        })
    } else {
        Box::new(whole)
    })
}

/// Reads CR and CRLF line endings as LF.
struct CrToLf<R> {
    inner: R,
    /// The last byte read was a CR (its LF, if one follows, is dropped).
    last_cr: bool,
}

impl<R: Read> Read for CrToLf<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.inner.read(buf)?;
            if n == 0 {
                return Ok(0);
            }
            let mut out = 0;
            for i in 0..n {
                let b = buf[i];
                if b == b'\n' && self.last_cr {
                    self.last_cr = false;
                    continue;
                }
                self.last_cr = b == b'\r';
                buf[out] = if self.last_cr { b'\n' } else { b };
                out += 1;
            }
            if out > 0 {
                return Ok(out);
            }
        }
    }
}

/// Detects JSON lines vs array from the first non-blank byte.
fn json_kind(files: &Files, entry: &Entry, cfg: &FileSourceConfig) -> Result<FileFormat> {
    if cfg.format != FileFormat::JsonAuto {
        return Ok(cfg.format);
    }
    let path = Path::new(&entry.name);
    let mut r = open_reader(files, entry, cfg.compression)?;
    let mut buf = [0u8; 512];
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| ConnectorError::io("cannot read", path, e))?;
        if n == 0 {
            return Ok(FileFormat::JsonLines);
        }
        if let Some(b) = buf[..n].iter().find(|b| !b.is_ascii_whitespace()) {
            return Ok(if *b == b'[' {
                FileFormat::JsonArray
            } else {
                FileFormat::JsonLines
            });
        }
    }
}

fn line_reader(
    files: &Files,
    entry: &Entry,
    cfg: &FileSourceConfig,
) -> Result<(Box<dyn Read + Send>, LineFormat)> {
    let r = open_reader(files, entry, cfg.compression)?;
    Ok(match cfg.format {
        FileFormat::Csv => (
            r,
            LineFormat::Csv {
                delimiter: cfg.delimiter,
                quote: cfg.quote,
            },
        ),
        FileFormat::JsonArray => (Box::new(JsonArrayToLines::new(r)), LineFormat::Json),
        FileFormat::JsonAuto if json_kind(files, entry, cfg)? == FileFormat::JsonArray => {
            (Box::new(JsonArrayToLines::new(r)), LineFormat::Json)
        }
        _ => (r, LineFormat::Json),
    })
}

fn infer(files: &Files, entry: &Entry, cfg: &FileSourceConfig) -> Result<SchemaRef> {
    let path = Path::new(&entry.name);
    let schema = match cfg.format {
        FileFormat::Parquet => {
            let f = files.chunks(entry)?;
            let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                .map_err(|e| {
                    ConnectorError::Other(format!(
                        "'{}' is not a readable Parquet file: {e}",
                        path.display()
                    ))
                })?;
            let s = b.schema().as_ref().clone();
            Schema::new(s.fields().clone())
        }
        FileFormat::Csv => {
            let r = open_reader(files, entry, cfg.compression)?;
            let fmt = arrow::csv::reader::Format::default()
                .with_header(cfg.has_headers)
                .with_delimiter(cfg.delimiter)
                .with_quote(cfg.quote);
            fmt.infer_schema(r, Some(cfg.infer_rows))
                .map_err(|e| {
                    ConnectorError::Other(format!(
                        "cannot infer a schema from '{}': {e}; set the schema explicitly",
                        path.display()
                    ))
                })?
                .0
        }
        _ => {
            let (r, _) = line_reader(files, entry, cfg)?;
            let r = std::io::BufReader::new(LenientLines::new(r));
            arrow::json::reader::infer_json_schema(r, Some(cfg.infer_rows))
                .map_err(|e| {
                    ConnectorError::Other(format!(
                        "cannot infer a schema from '{}': {e}; set the schema explicitly",
                        path.display()
                    ))
                })?
                .0
        }
    };
    if schema.fields().is_empty() {
        return Err(ConnectorError::Other(format!(
            "cannot infer a schema from '{}': no records in the sample; set the schema explicitly",
            path.display()
        )));
    }
    Ok(Arc::new(schema))
}

/// Drops lines that are not JSON objects from the inference sample, so one
/// bad line in the first rows does not stop the job before it starts (it is
/// still reported as a bad record when read).
struct LenientLines<R: Read> {
    inner: std::io::BufReader<R>,
    out: Vec<u8>,
    pos: usize,
}

impl<R: Read> LenientLines<R> {
    fn new(r: R) -> Self {
        Self {
            inner: std::io::BufReader::new(r),
            out: Vec::new(),
            pos: 0,
        }
    }
}

impl<R: Read> Read for LenientLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::BufRead;
        while self.pos >= self.out.len() {
            self.out.clear();
            self.pos = 0;
            let mut line = Vec::new();
            if self.inner.read_until(b'\n', &mut line)? == 0 {
                return Ok(0);
            }
            if serde_json::from_slice::<serde_json::Value>(&line).is_ok_and(|v| v.is_object()) {
                self.out = line;
            }
        }
        let n = (self.out.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl FileSource {
    /// Resolves files and the schema. Fails if nothing matches (unless
    /// watching with an explicit schema) or a file cannot be read.
    pub fn new(
        name: &str,
        cfg: FileSourceConfig,
        explicit_schema: Option<SchemaRef>,
        files: Files,
    ) -> Result<Self> {
        let none_match = |cfg: &FileSourceConfig| {
            ConnectorError::Other(if cfg.watch {
                format!(
                    "no files match '{}' yet; give '{name}.schema' so the source can start before the first file arrives",
                    velo_config::mask(&cfg.path)
                )
            } else if files.is_remote() {
                format!(
                    "no objects match '{}'; check the bucket and the prefix (names starting with '.' or '_' are skipped)",
                    velo_config::mask(&cfg.path)
                )
            } else {
                format!(
                    "no files match '{}'; check the path (relative paths are resolved against the SQL file)",
                    cfg.path
                )
            })
        };
        let listed = match files.list(None)? {
            Listed::Found(f) => f,
            Listed::Missing if cfg.watch => vec![],
            Listed::Missing if files.is_remote() => return Err(none_match(&cfg)),
            Listed::Missing => {
                return Err(ConnectorError::io(
                    "cannot read",
                    Path::new(&cfg.path),
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                ));
            }
        };
        let explicit = match (&cfg.schema, explicit_schema) {
            (_, Some(s)) => Some(s),
            (Some(text), None) => Some(crate::schema::parse_schema(text)?),
            (None, None) => None,
        };
        let data_schema = match explicit {
            Some(s) => s,
            None => {
                let first = listed.first().ok_or_else(|| none_match(&cfg))?;
                infer(&files, first, &cfg)?
            }
        };
        if listed.is_empty() && !cfg.watch {
            return Err(none_match(&cfg));
        }
        // the first file's `key=value` directories, unless a data column has the name
        let partitions: Vec<String> = listed
            .first()
            .map(|f| {
                f.partitions
                    .iter()
                    .map(|(k, _)| k.clone())
                    .filter(|k| data_schema.field_with_name(k).is_err())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self::build(name, cfg, data_schema, files, partitions))
    }

    /// The source of a declared schema, listing nothing: what an offline
    /// check (`velo validate`, `velo explain`) knows of an object store.
    pub fn declared(name: &str, cfg: FileSourceConfig, schema: SchemaRef, files: Files) -> Self {
        Self::build(name, cfg, schema, files, Vec::new())
    }

    fn build(
        name: &str,
        cfg: FileSourceConfig,
        data_schema: SchemaRef,
        files: Files,
        partitions: Vec<String>,
    ) -> Self {
        let mut fields: Vec<Arc<Field>> = data_schema.fields().iter().cloned().collect();
        for p in &partitions {
            fields.push(Arc::new(Field::new(p, DataType::Utf8, true)));
        }
        if cfg.metadata_columns {
            fields.push(Arc::new(Field::new("_file_name", DataType::Utf8, false)));
            fields.push(Arc::new(Field::new("_row_number", DataType::UInt64, false)));
        }
        Self {
            name: name.to_string(),
            cfg,
            data_schema,
            schema: relaxed(&Schema::new(fields)),
            files,
            partitions,
            pruning: std::sync::Mutex::new(None),
        }
    }
}

impl Source for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn set_pruning(&self, pruning: Arc<dyn crate::source::Pruning>) {
        *self.pruning.lock().unwrap_or_else(|p| p.into_inner()) = Some(pruning);
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn is_bounded(&self) -> bool {
        !self.cfg.watch
    }

    fn listing(&self) -> std::result::Result<crate::ListingSpec, String> {
        let name = &self.name;
        let refuse = |why: &str| Err(format!("source '{name}' {why}"));
        if self.cfg.watch {
            return refuse("watches for new files (unbounded)");
        }
        if self.cfg.metadata_columns {
            return refuse("has metadata columns (_file_name, _row_number)");
        }
        if self.cfg.after_read.is_some() {
            return refuse("deletes or moves its files after reading");
        }
        let lower = self.cfg.path.to_ascii_lowercase();
        let compressed = [".gz", ".zst", ".zstd"].iter().any(|e| lower.ends_with(e));
        if !matches!(self.cfg.compression, Compression::None | Compression::Auto) || compressed {
            return refuse("is compressed (gzip/zstd)");
        }
        let format = match self.cfg.format {
            FileFormat::Parquet => crate::ListingFormat::Parquet,
            FileFormat::Csv => crate::ListingFormat::Csv {
                has_header: self.cfg.has_headers,
                delimiter: self.cfg.delimiter,
                quote: self.cfg.quote,
            },
            FileFormat::JsonLines | FileFormat::JsonAuto => crate::ListingFormat::JsonLines,
            FileFormat::JsonArray => return refuse("is JSON arrays (a cluster reads JSON Lines)"),
        };
        Ok(crate::ListingSpec {
            location: self.cfg.path.clone(),
            format,
            file_schema: self.data_schema.clone(),
            partitions: self
                .partitions
                .iter()
                .map(|p| (p.clone(), arrow::datatypes::DataType::Utf8))
                .collect(),
            files: None,
            files_root: None,
            columns: None,
            store: self
                .files
                .remote()
                .map(|r| (r.root().to_string(), r.store())),
        })
    }

    fn describe(&self) -> String {
        format!(
            "file {:?} '{}'{}",
            self.cfg.format,
            velo_config::mask(&self.cfg.path),
            if self.cfg.watch { " (watch)" } else { "" }
        )
    }

    fn open(&self, batch_size: usize, projection: Option<&[usize]>) -> Result<SourceReader> {
        self.open_at(batch_size, projection, None)
    }

    fn resumable(&self) -> bool {
        true
    }

    fn resumes_by_default(&self) -> bool {
        // a file job run twice reads its files twice, unless a state
        // directory is named
        false
    }

    /// Resumes every file at the line (CSV, JSON Lines) or row (Parquet)
    /// after the last unit an earlier run delivered; files not in `resume`
    /// are read from the start.
    fn open_at(
        &self,
        batch_size: usize,
        projection: Option<&[usize]>,
        resume: Option<&Position>,
    ) -> Result<SourceReader> {
        let (tx, rx) = tokio::sync::mpsc::channel(SOURCE_CHANNEL_CAPACITY);
        // acting on read files needs to know when an epoch read one to its end
        let after_read = self
            .cfg
            .after_read
            .clone()
            .map(|a| AfterReading::start(&self.name, self.files.clone(), a, resume));
        let mut cfg = self.cfg.clone();
        cfg.batch_size = cfg.batch_size.min(batch_size.max(1));
        let n_data = self.data_schema.fields().len();
        let wanted = |i: usize| projection.is_none_or(|p| p.contains(&i));
        let data_projection: Option<Vec<usize>> =
            projection.map(|p| p.iter().copied().filter(|i| *i < n_data).collect());
        let n_front = n_data + self.partitions.len();
        let w = Worker {
            name: self.name.clone(),
            file_name_col: cfg.metadata_columns && wanted(n_front),
            row_number_col: cfg.metadata_columns && wanted(n_front + 1),
            files: self.files.clone(),
            partitions: self.partitions.clone(),
            pruning: self
                .pruning
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            nulls: crate::source::NullColumns::new(
                &self.data_schema,
                |i| data_projection.as_ref().is_none_or(|p| p.contains(&i)),
                cfg.batch_size,
            ),
            cfg,
            data_schema: self.data_schema.clone(),
            data_projection,
            schema: self.schema.clone(),
            positioned: resume.is_some() || after_read.is_some(),
            resume: resume.cloned().unwrap_or_default(),
            position: std::cell::RefCell::new(resume.cloned().unwrap_or_default()),
            tx: tx.clone(),
        };
        crate::source::spawn_reader(
            format!("velo-src-{}", self.name),
            &self.name,
            &tx,
            move || w.run(),
        )?;
        Ok(match after_read {
            Some(a) => SourceReader::new(rx).with_committer(Arc::new(a)),
            None => SourceReader::new(rx),
        })
    }
}

/// Files to delete or move, and whom to tell when it is done.
type AfterWork = (Vec<String>, Option<std::sync::mpsc::Sender<()>>);

/// `delete_after_read` / `move_after_read`: the files an epoch read to
/// their end are deleted or moved once it committed (the engine commits a
/// source's position after every sink acknowledged the epoch), on a thread
/// of its own so the engine never waits on a store.
struct AfterReading {
    /// Names to act on, and whom to tell when done (a final commit waits).
    tx: std::sync::Mutex<std::sync::mpsc::Sender<AfterWork>>,
    /// Names already handed over.
    acted: std::sync::Mutex<HashSet<String>>,
}

impl AfterReading {
    fn start(source: &str, files: Files, action: AfterRead, resume: Option<&Position>) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<AfterWork>();
        let name = source.to_string();
        let spawned = std::thread::Builder::new()
            .name(format!("velo-after-read-{source}"))
            .spawn(move || {
                for (names, ack) in rx {
                    for n in names {
                        let r = match &action {
                            AfterRead::Delete => files.remove(&n),
                            AfterRead::MoveTo(dir) => files.move_into(&n, dir),
                        };
                        match r {
                            Ok(()) => tracing::debug!(source = %name, file = %velo_config::mask(&n), "acted on a file read and committed"),
                            // the file was read and committed: it is not lost, only left in place
                            Err(e) => tracing::warn!(source = %name, "{e}; the file stays where it is"),
                        }
                    }
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(source = %source, "cannot start the thread that deletes or moves read files: {e}");
        }
        let me = Self {
            tx: std::sync::Mutex::new(tx),
            acted: Default::default(),
        };
        // what an earlier run committed but had no time to act on
        if let Some(pos) = resume {
            let _ = crate::source::PositionCommitter::commit(&me, pos, false);
        }
        me
    }
}

impl crate::source::PositionCommitter for AfterReading {
    /// Files an epoch read to its end while a sink missed that epoch are
    /// left where they are for good (in this run): their records are not in
    /// every sink, and the file is what they can be read again from.
    fn skipped(&self, pos: &Position) {
        let mut acted = self.acted.lock().unwrap_or_else(|p| p.into_inner());
        for (n, at) in &pos.parts {
            if *at == FILE_DONE && acted.insert(n.clone()) {
                tracing::warn!(file = %velo_config::mask(n), "a sink missed the records of this file: it is not deleted or moved");
            }
        }
    }

    fn commit(&self, pos: &Position, sync: bool) -> Result<()> {
        let fresh: Vec<String> = {
            let mut acted = self.acted.lock().unwrap_or_else(|p| p.into_inner());
            pos.parts
                .iter()
                .filter(|(n, at)| **at == FILE_DONE && acted.insert((*n).clone()))
                .map(|(n, _)| n.clone())
                .collect()
        };
        if fresh.is_empty() && !sync {
            return Ok(());
        }
        let (ack, done) = std::sync::mpsc::channel();
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((fresh, sync.then_some(ack)));
        if sent.is_ok() && sync {
            // the last commit of a run: the files are dealt with before it ends
            let _ = done.recv();
        }
        Ok(())
    }
}

struct Worker {
    name: String,
    cfg: FileSourceConfig,
    /// Where the files are.
    files: Files,
    /// Partition columns, after the data columns.
    partitions: Vec<String>,
    /// The query's filters, to skip partitions and row groups.
    pruning: Option<Arc<dyn crate::source::Pruning>>,
    /// The decoded columns of the file.
    data_schema: SchemaRef,
    /// The data columns the query reads (None: all).
    data_projection: Option<Vec<usize>>,
    /// The data columns it does not read, as nulls.
    nulls: crate::source::NullColumns,
    file_name_col: bool,
    row_number_col: bool,
    /// The output schema (data + metadata columns, all nullable).
    schema: SchemaRef,
    /// Positions asked for (the job checkpoints): every unit goes out as one
    /// batch with the position after it. Otherwise plain batches, which an
    /// epoch may cut anywhere.
    positioned: bool,
    /// Where an earlier run stopped: file -> next line (Parquet: row).
    resume: Position,
    /// Where this run stands (sent with every unit).
    position: std::cell::RefCell<Position>,
    tx: Sender<SourceEvent>,
}

/// The receiver went away: stop quietly.
struct Closed;

impl Worker {
    /// Widens decoded (projected) data to the output schema and fills the
    /// partition and metadata columns.
    fn output(&self, data: RecordBatch, file: &Entry, rows: &[u64]) -> Result<RecordBatch> {
        let n = data.num_rows();
        let mut cols = self.nulls.widen(data.columns(), n).ok_or_else(|| {
            ConnectorError::Internal(format!(
                "file source '{}': the decoder gave {} columns, not the {} the query reads",
                self.name,
                data.num_columns(),
                self.nulls.read_count()
            ))
        })?;
        cols.reserve(self.schema.fields().len() - cols.len());
        for p in &self.partitions {
            let value = file.partitions.iter().find(|(k, _)| k == p).map(|(_, v)| v);
            cols.push(Arc::new(arrow::array::StringArray::from_iter(
                std::iter::repeat_n(value, n),
            )));
        }
        if self.cfg.metadata_columns {
            cols.push(if self.file_name_col {
                Arc::new(arrow::array::StringArray::from_iter_values(
                    std::iter::repeat_n(file.name.as_str(), n),
                ))
            } else {
                arrow::array::new_null_array(&DataType::Utf8, n)
            });
            cols.push(if self.row_number_col {
                Arc::new(arrow::array::UInt64Array::from_iter_values(
                    rows.iter().copied().take(n),
                ))
            } else {
                arrow::array::new_null_array(&DataType::UInt64, n)
            });
        }
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            cols,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
        )?)
    }

    /// Whether each file's partition may hold rows the query keeps (all
    /// when there are no partitions or no filters).
    fn partitions_kept(&self, files: &[Entry]) -> Vec<bool> {
        let all = vec![true; files.len()];
        let Some(p) = self
            .pruning
            .as_ref()
            .filter(|_| !self.partitions.is_empty())
        else {
            return all;
        };
        let fields: Vec<Field> = self
            .partitions
            .iter()
            .map(|c| Field::new(c, DataType::Utf8, true))
            .collect();
        let cols: Vec<arrow::array::ArrayRef> = self
            .partitions
            .iter()
            .map(|c| {
                Arc::new(arrow::array::StringArray::from_iter(files.iter().map(
                    |f| {
                        f.partitions
                            .iter()
                            .find(|(k, _)| k == c)
                            .map(|(_, v)| v.as_str())
                    },
                ))) as arrow::array::ArrayRef
            })
            .collect();
        match RecordBatch::try_new(Arc::new(Schema::new(fields)), cols) {
            Ok(values) => {
                let keep = p.partitions(&values);
                if keep.len() == files.len() { keep } else { all }
            }
            Err(_) => all,
        }
    }

    fn send(&self, ev: SourceEvent) -> std::result::Result<(), Closed> {
        self.tx.blocking_send(ev).map_err(|_| Closed)
    }

    fn run(self) {
        let mut seen: HashSet<String> = HashSet::new();
        let mut sizes: HashMap<String, u64> = HashMap::new();
        let mut first = true;
        // the last object name seen, for an incremental listing (the first
        // listing of a run is whole: a restart finds every unread object)
        let mut after: Option<String> = None;
        let mut polls = 0u32;
        loop {
            polls += 1;
            let incremental = self.files.is_remote() && !polls.is_multiple_of(FULL_LISTING_EVERY);
            let listed = self
                .files
                .list(if incremental { after.as_deref() } else { None });
            let files = match listed {
                Ok(Listed::Found(f)) => f,
                Ok(Listed::Missing) if self.cfg.watch => vec![],
                Ok(Listed::Missing) => {
                    let _ = self.send(SourceEvent::Error(ConnectorError::io(
                        "cannot read",
                        Path::new(&self.cfg.path),
                        std::io::Error::from(std::io::ErrorKind::NotFound),
                    )));
                    return;
                }
                Err(e) => {
                    let _ = self.send(SourceEvent::Error(e));
                    return;
                }
            };
            let keep = self.partitions_kept(&files);
            for (f, keep) in files.into_iter().zip(keep) {
                if after.as_ref().is_none_or(|a| *a < f.name) {
                    after = Some(f.name.clone());
                }
                if seen.contains(&f.name) {
                    continue;
                }
                if !keep {
                    // its partition values fail the query's filters
                    tracing::debug!(source = %self.name, file = %velo_config::mask(&f.name), "skipped: its partition is filtered out");
                    seen.insert(f.name.clone());
                    continue;
                }
                if !first && !self.files.is_remote() {
                    // only pick up a new local file once its size is stable
                    // across two polls (an object appears whole)
                    let size = std::fs::metadata(&f.name).map(|m| m.len()).unwrap_or(0);
                    if sizes.insert(f.name.clone(), size) != Some(size) {
                        continue;
                    }
                }
                seen.insert(f.name.clone());
                sizes.remove(&f.name);
                if self.resume.parts.get(&f.name) == Some(&FILE_DONE) {
                    continue;
                }
                tracing::debug!(source = %self.name, file = %velo_config::mask(&f.name), "reading file");
                match self.read_file(&f) {
                    Ok(()) => {}
                    Err(Ok(Closed)) | Err(Err(Closed)) => return,
                }
                // the file is read to its end: a resumed run skips it unopened
                if self.positioned
                    && self
                        .send_at(
                            RecordBatch::new_empty(self.schema.clone()),
                            &f.name,
                            FILE_DONE,
                        )
                        .is_err()
                {
                    return;
                }
            }
            first = false;
            if !self.cfg.watch || self.tx.is_closed() {
                return;
            }
            std::thread::park_timeout(self.cfg.watch_interval);
            if self.tx.is_closed() {
                return;
            }
        }
    }

    /// Reads one file. An I/O or format error ends the source with an error
    /// event (`Err(Ok)`); a closed channel ends it quietly (`Err(Err)`).
    #[allow(clippy::result_large_err)]
    fn read_file(
        &self,
        entry: &Entry,
    ) -> std::result::Result<(), std::result::Result<Closed, Closed>> {
        let fail = |msg: String| -> std::result::Result<(), std::result::Result<Closed, Closed>> {
            match self.send(SourceEvent::Error(ConnectorError::Other(msg))) {
                Ok(()) => Err(Ok(Closed)),
                Err(c) => Err(Err(c)),
            }
        };
        let file_name = entry.name.clone();
        if self.cfg.format == FileFormat::Parquet {
            return self.read_parquet(entry);
        }
        let (r, fmt) = match line_reader(&self.files, entry, &self.cfg) {
            Ok(x) => x,
            Err(e) => return fail(e.to_string()),
        };
        let mut splitter = UnitSplitter::new(r, fmt.clone());
        if self.cfg.format == FileFormat::Csv && self.cfg.has_headers {
            if let Err(e) = splitter.skip_record() {
                return fail(format!("cannot read '{file_name}': {e}"));
            }
        }
        // an earlier run delivered the units up to this line
        if let Some(&at) = self.resume.parts.get(&file_name) {
            while (splitter.line() as i64) < at {
                match splitter.skip_record() {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => return fail(format!("cannot read '{file_name}': {e}")),
                }
            }
        }
        let uf = UnitFormat {
            fmt,
            schema: self.data_schema.clone(),
            projection: self.data_projection.clone(),
            batch_size: self.cfg.batch_size,
            want_lines: self.row_number_col,
        };
        let big = entry.size >= PARALLEL_DECODE_MIN_BYTES;
        let threads = if big { self.cfg.decode_threads } else { 1 };
        if threads <= 1 {
            let mut dec: Option<Dec> = None;
            loop {
                match splitter.next(uf.batch_size) {
                    Ok(Some(unit)) => {
                        self.emit(entry, unit.next_line, decode_unit(&uf, &unit, &mut dec))?
                    }
                    Ok(None) => return Ok(()),
                    Err(e) => return fail(format!("cannot read '{file_name}': {e}")),
                }
            }
        }
        self.decode_parallel(&mut splitter, &uf, threads, entry)
    }

    /// Decodes units on `threads` threads and hands the results on in file
    /// order, with at most a few units in flight (memory stays bounded).
    #[allow(clippy::result_large_err)]
    fn decode_parallel<R: Read>(
        &self,
        splitter: &mut UnitSplitter<R>,
        uf: &UnitFormat,
        threads: usize,
        entry: &Entry,
    ) -> std::result::Result<(), std::result::Result<Closed, Closed>> {
        use std::sync::mpsc;
        let file_name = entry.name.as_str();
        std::thread::scope(|scope| {
            let (unit_tx, unit_rx) = mpsc::sync_channel::<(u64, Unit)>(threads * 2);
            let unit_rx = Arc::new(std::sync::Mutex::new(unit_rx));
            type Res = (
                u64,
                u64,
                std::result::Result<Decoded, arrow::error::ArrowError>,
            );
            let (res_tx, res_rx) = mpsc::channel::<Res>();
            for _ in 0..threads {
                let (rx, tx) = (unit_rx.clone(), res_tx.clone());
                scope.spawn(move || {
                    let mut dec: Option<Dec> = None;
                    loop {
                        let next = rx.lock().map(|r| r.recv());
                        let Ok(Ok((seq, unit))) = next else { return };
                        let r = decode_unit(uf, &unit, &mut dec);
                        if tx.send((seq, unit.next_line, r)).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(res_tx);
            let mut ready = std::collections::BTreeMap::new();
            let (mut sent, mut next) = (0u64, 0u64);
            let max_in_flight = threads as u64 * 3;
            // hands on every result that is next in file order
            let drain =
                |ready: &mut std::collections::BTreeMap<u64, _>,
                 next: &mut u64|
                 -> std::result::Result<(), std::result::Result<Closed, Closed>> {
                    while let Some((line, r)) = ready.remove(next) {
                        *next += 1;
                        self.emit(entry, line, r)?;
                    }
                    Ok(())
                };
            let outcome = loop {
                let unit = match splitter.next(uf.batch_size) {
                    Ok(Some(u)) => u,
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(format!("cannot read '{file_name}': {e}")),
                };
                while sent - next >= max_in_flight {
                    match res_rx.recv() {
                        Ok((seq, line, r)) => {
                            ready.insert(seq, (line, r));
                        }
                        Err(_) => break,
                    }
                    drain(&mut ready, &mut next)?;
                }
                if unit_tx.send((sent, unit)).is_err() {
                    break Err("decoder threads stopped".to_string());
                }
                sent += 1;
                while let Ok((seq, line, r)) = res_rx.try_recv() {
                    ready.insert(seq, (line, r));
                }
                drain(&mut ready, &mut next)?;
            };
            drop(unit_tx);
            if let Err(msg) = outcome {
                return match self.send(SourceEvent::Error(ConnectorError::Other(msg))) {
                    Ok(()) => Err(Ok(Closed)),
                    Err(c) => Err(Err(c)),
                };
            }
            while next < sent {
                let Ok((seq, line, r)) = res_rx.recv() else {
                    break;
                };
                ready.insert(seq, (line, r));
                drain(&mut ready, &mut next)?;
            }
            Ok(())
        })
    }

    /// Sends one decoded unit: its bad records, then its rows as one batch
    /// with the position after the unit (`next_line` of the file).
    #[allow(clippy::result_large_err)]
    fn emit(
        &self,
        entry: &Entry,
        next_line: u64,
        decoded: std::result::Result<Decoded, arrow::error::ArrowError>,
    ) -> std::result::Result<(), std::result::Result<Closed, Closed>> {
        let fail = |msg: String| match self.send(SourceEvent::Error(ConnectorError::Other(msg))) {
            Ok(()) => Err(Ok(Closed)),
            Err(c) => Err(Err(c)),
        };
        let file_name = entry.name.as_str();
        let (batches, lines, bad) = match decoded {
            Ok(d) => d,
            Err(e) => return fail(format!("cannot decode '{file_name}': {e}")),
        };
        for b in bad {
            self.send(SourceEvent::Bad(BadRecord {
                source: self.name.clone(),
                location: file_name.to_string(),
                line: b.line,
                error: b.error,
                raw: b.raw,
            }))
            .map_err(Err)?;
        }
        if !self.positioned {
            let mut offset = 0;
            for batch in batches {
                let n = batch.num_rows();
                let batch = match self.output(batch, entry, lines.get(offset..).unwrap_or(&[])) {
                    Ok(b) => b,
                    Err(e) => return fail(e.to_string()),
                };
                offset += n;
                self.send(SourceEvent::Batch(batch)).map_err(Err)?;
            }
            return Ok(());
        }
        // one batch per unit: the position after it is exact
        let batch = match batches.len() {
            0 => Ok(RecordBatch::new_empty(self.schema.clone())),
            1 => self.output(batches.into_iter().next().expect("one"), entry, &lines),
            _ => arrow::compute::concat_batches(&batches[0].schema(), &batches)
                .map_err(ConnectorError::from)
                .and_then(|b| self.output(b, entry, &lines)),
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => return fail(e.to_string()),
        };
        self.send_at(batch, file_name, next_line as i64)
    }

    /// Sends `batch` with the position `at` for `file_name`.
    #[allow(clippy::result_large_err)]
    fn send_at(
        &self,
        batch: RecordBatch,
        file_name: &str,
        at: i64,
    ) -> std::result::Result<(), std::result::Result<Closed, Closed>> {
        if !self.positioned {
            return self.send(SourceEvent::Batch(batch)).map_err(Err);
        }
        let pos = {
            let mut p = self.position.borrow_mut();
            p.parts.insert(file_name.to_string(), at);
            p.clone()
        };
        self.send(SourceEvent::Positioned(batch, pos)).map_err(Err)
    }

    #[allow(clippy::result_large_err)]
    fn read_parquet(
        &self,
        entry: &Entry,
    ) -> std::result::Result<(), std::result::Result<Closed, Closed>> {
        let fail = |msg: String| match self.send(SourceEvent::Error(ConnectorError::Other(msg))) {
            Ok(()) => Err(Ok(Closed)),
            Err(c) => Err(Err(c)),
        };
        let file_name = entry.name.as_str();
        let f = match self.files.chunks(entry) {
            Ok(f) => f,
            Err(e) => return fail(e.to_string()),
        };
        // an earlier run delivered this many rows
        let skip = self
            .resume
            .parts
            .get(file_name)
            .copied()
            .unwrap_or(0)
            .max(0) as u64;
        let projected = match &self.data_projection {
            Some(p) => Arc::new(
                self.data_schema
                    .project(p)
                    .expect("projection within the schema"),
            ),
            None => self.data_schema.clone(),
        };
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .and_then(|b| {
                // read only the projected columns, found by name (files may differ in column order)
                let roots: Vec<usize> = b
                    .schema()
                    .fields()
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| projected.field_with_name(f.name()).is_ok())
                    .map(|(i, _)| i)
                    .collect();
                let mask = parquet::arrow::ProjectionMask::roots(b.parquet_schema(), roots);
                // row groups the query's filters rule out by their statistics
                // are not fetched (not when `_row_number` counts every row)
                let keep = match (&self.pruning, self.row_number_col) {
                    (Some(p), false) => p.row_groups(b.schema(), b.metadata()),
                    _ => None,
                };
                let b = match keep {
                    Some(keep) if keep.len() == b.metadata().num_row_groups() => {
                        let groups: Vec<usize> = (0..keep.len()).filter(|i| keep[*i]).collect();
                        if groups.len() < keep.len() {
                            tracing::debug!(source = %self.name, file = %velo_config::mask(file_name), "reading {} of {} row groups", groups.len(), keep.len());
                        }
                        b.with_row_groups(groups)
                    }
                    _ => b,
                };
                b.with_batch_size(self.cfg.batch_size)
                    .with_projection(mask)
                    .with_offset(skip as usize)
                    .build()
            });
        let reader = match reader {
            Ok(r) => r,
            Err(e) => return fail(format!("'{file_name}' is not a readable Parquet file: {e}")),
        };
        let mut row = skip;
        for batch in reader {
            let batch = match batch
                .map_err(ConnectorError::from)
                .and_then(|b| conform(b, &projected))
            {
                Ok(b) => b,
                Err(e) => return fail(format!("cannot read '{file_name}': {e}")),
            };
            let n = batch.num_rows() as u64;
            let rows: Vec<u64> = if self.row_number_col {
                (row + 1..=row + n).collect()
            } else {
                vec![]
            };
            let batch = match self.output(batch, entry, &rows) {
                Ok(b) => b,
                Err(e) => return fail(e.to_string()),
            };
            row += n;
            self.send_at(batch, file_name, row as i64)?;
        }
        Ok(())
    }
}

/// Casts/reorders `batch` to `schema` by column name; missing columns are null.
pub fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let cols = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => arrow::compute::cast(c, f.data_type()).map_err(ConnectorError::from),
            None => Ok(arrow::array::new_null_array(
                f.data_type(),
                batch.num_rows(),
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}
