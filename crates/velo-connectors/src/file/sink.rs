//! `file_sink`: JSON Lines, JSON, CSV and Parquet files with path templates,
//! rotation, retention and, in transactional mode, atomic per-epoch files.
//!
//! The rendered path is computed at every epoch start; when it changes
//! (`{date}`, `{hour}`, `{batch_id}`, daily/hourly rotation) the current file
//! is closed and a new one opened. Non-transactional epochs append to the
//! open file and are flushed at commit; an aborted epoch is cut off again
//! (line formats are truncated to the last committed length). In
//! transactional mode every epoch is written to a hidden temporary file that
//! is renamed into place at commit, so a crash never leaves a partial file
//! visible. Parquet files are written under a hidden in-progress name and
//! renamed when complete.
//!
//! On an object store (`s3://...`) the same steps run on objects, with what
//! objects allow: an object cannot be appended to or cut back, so every
//! epoch writes objects of its own (numbered by epoch like transactional
//! files), uploaded as they are written and completed before the epoch
//! commits (at-least-once: nothing acknowledged is only in a buffer). In
//! transactional mode an epoch's objects are uploaded under a hidden
//! temporary name and moved to their final name at commit (a server-side
//! copy, then a delete), so a reader of the prefix sees only whole objects
//! of committed epochs; a restart completes the moves of the epoch its
//! checkpoint committed and never writes a committed epoch twice.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::config::{FileFormat, FileSinkConfig, OutCompression, Rotation};
use super::store::{ObjectWriter, Remote};
use crate::sink::{Sink, SinkCapabilities};
use crate::template;
use crate::{ConnectorError, Result};

/// Where a file's bytes go: a local file, or an object being uploaded.
enum Target {
    Local(File),
    Remote(Box<ObjectWriter>),
}

impl Write for Target {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Target::Local(f) => f.write(buf),
            Target::Remote(o) => o.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Target::Local(f) => f.flush(),
            Target::Remote(o) => o.flush(),
        }
    }
}

impl Target {
    /// Makes the written bytes durable: a local file synced, an object
    /// completed (it appears whole).
    fn finish(self) -> std::io::Result<()> {
        match self {
            Target::Local(f) => f.sync_all(),
            Target::Remote(mut o) => o.finish(),
        }
    }
}

/// Counts bytes reaching the file; after an abort it swallows what the
/// dropped writer stack still flushes.
struct Counting {
    file: Target,
    count: Arc<AtomicU64>,
    discard: Arc<AtomicBool>,
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.discard.load(Ordering::Relaxed) {
            return Ok(buf.len());
        }
        let n = self.file.write(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.discard.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.file.flush()
    }
}

enum Enc {
    Plain(BufWriter<Counting>),
    Gzip(flate2::write::GzEncoder<BufWriter<Counting>>),
    Zstd(zstd::Encoder<'static, BufWriter<Counting>>),
}

impl Write for Enc {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Enc::Plain(w) => w.write(buf),
            Enc::Gzip(w) => w.write(buf),
            Enc::Zstd(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Enc::Plain(w) => w.flush(),
            Enc::Gzip(w) => w.flush(),
            Enc::Zstd(w) => w.flush(),
        }
    }
}

impl Enc {
    fn finish(self) -> std::io::Result<Target> {
        let bw = match self {
            Enc::Plain(w) => w,
            Enc::Gzip(w) => w.finish()?,
            Enc::Zstd(w) => w.finish()?,
        };
        let c = bw.into_inner().map_err(|e| e.into_error())?;
        Ok(c.file)
    }
}

/// The rows of `batch` as CSV (no header), JSON Lines or JSON array rows
/// (commas between them, no brackets).
fn encode_lines<W: Write>(
    format: FileFormat,
    delimiter: u8,
    batch: &RecordBatch,
    mut out: W,
) -> std::result::Result<(), ArrowError> {
    match format {
        FileFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(false)
                .with_delimiter(delimiter)
                .build(&mut out);
            w.write(batch)?;
        }
        FileFormat::JsonArray => {
            let mut w = arrow::json::WriterBuilder::new().build::<_, ArrayRows>(&mut out);
            w.write(batch)?;
            w.finish()?;
        }
        _ => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
            w.write(batch)?;
            w.finish()?;
        }
    }
    Ok(())
}

/// Encodes the text formats off the sink's thread ([`crate::BatchEncoder`]).
#[derive(Debug)]
struct LinesEncoder {
    format: FileFormat,
    delimiter: u8,
}

impl crate::BatchEncoder for LinesEncoder {
    fn encode(&self, batch: &RecordBatch) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(batch.num_rows() * 64);
        encode_lines(self.format, self.delimiter, batch, &mut out)
            .map_err(|e| ConnectorError::Other(format!("cannot encode: {e}")))?;
        Ok(out)
    }
}

/// JSON array rows: commas between rows; brackets are written by the sink
/// so that an array can continue across epochs and be cut back on abort.
#[derive(Debug, Default)]
struct ArrayRows;

impl arrow::json::writer::JsonFormat for ArrayRows {
    fn start_row<W: Write>(&self, w: &mut W, first: bool) -> std::result::Result<(), ArrowError> {
        if !first {
            w.write_all(b",")?;
        }
        Ok(())
    }
}

enum FileWriter {
    Lines {
        enc: Enc,
        rows: u64,
        header_pending: bool,
    },
    Parquet(ArrowWriter<Counting>),
}

struct OpenFile {
    /// Where readers will find it.
    final_path: PathBuf,
    /// Where we write (temporary or in-progress name, or the final path).
    write_path: PathBuf,
    writer: Option<FileWriter>,
    count: Arc<AtomicU64>,
    discard: Arc<AtomicBool>,
    /// Length at the last commit (line formats).
    committed_len: u64,
    /// Length and rows flushed by `prepare_commit`, awaiting `commit`.
    prepared: Option<(u64, u64)>,
    committed_rows: u64,
    /// Rendered template this file belongs to.
    rendered: String,
    rows_total: u64,
}

/// The file sink.
pub struct FileSink {
    name: String,
    cfg: FileSinkConfig,
    schema: Option<SchemaRef>,
    transactional: bool,
    current: Option<OpenFile>,
    /// Transactional: files of this epoch awaiting rename.
    staged: Vec<(PathBuf, PathBuf)>,
    /// Size rotation sequence.
    seq: u64,
    /// Transactional: how far file numbers run ahead of epochs (files of
    /// an earlier run without a checkpoint are not overwritten).
    skip: u64,
    /// Published files, oldest first (retention).
    published: VecDeque<PathBuf>,
    epoch: u64,
    /// Temporaries of a killed run are removed at the first epoch, after
    /// `recover` had the chance to publish the ones a checkpoint committed.
    stale_probe: Option<PathBuf>,
    /// The object store, when the path is a URL.
    remote: Option<Remote>,
    /// Every epoch writes files of its own (object stores, partitioned
    /// output), closed when the epoch is prepared.
    per_epoch: bool,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("name", &self.name)
            .field("path", &self.cfg.path)
            .finish()
    }
}

/// The directory a path template writes under: the directory of its part
/// before the first placeholder (`out/{date}/x.jsonl` -> `out`).
fn template_root(template: &str) -> PathBuf {
    let fixed = &template[..template.find('{').unwrap_or(template.len())];
    let root = if fixed.ends_with('/') {
        Path::new(fixed)
    } else {
        Path::new(fixed).parent().unwrap_or(Path::new(""))
    };
    if root.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        root.to_path_buf()
    }
}

fn hidden(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{tag}"))
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().and_then(|d| {
        File::open(if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        })
        .ok()
    }) {
        let _ = dir.sync_all();
    }
}

/// Removes the hidden temporary files of epochs that a killed run never
/// committed (they were never visible; this only reclaims the space).
fn remove_stale_temporaries(probe: &Path) {
    let Some(stale) = StaleNames::of(probe) else {
        return;
    };
    let dir = match probe.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if stale.matches(&e.file_name().to_string_lossy()) {
            tracing::info!(file = %e.path().display(), "removing an uncommitted temporary file of an earlier run");
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The names of a sink's hidden temporary files, from a rendered path of
/// its: the same stem and extension (another sink may share the stem with
/// another extension), an epoch's `.tmp` or an `.inprogress` Parquet file.
struct StaleNames {
    stem: String,
    ext: String,
}

impl StaleNames {
    fn of(probe: &Path) -> Option<Self> {
        let file = probe.file_name()?.to_string_lossy();
        Some(Self {
            stem: file.split('.').next().unwrap_or_default().to_string(),
            ext: probe
                .extension()
                .map(|e| format!(".{}.", e.to_string_lossy()))
                .unwrap_or_default(),
        })
    }

    fn matches(&self, name: &str) -> bool {
        name.starts_with(&format!(".{}", self.stem))
            && name.contains(&self.ext)
            && (name.ends_with(".tmp") && name.contains(".epoch-") || name.ends_with(".inprogress"))
    }
}

/// [`remove_stale_temporaries`] in an object store's folder.
fn remove_stale_objects(remote: &Remote, probe: &Path) {
    let (Some(dir), Some(stale)) = (probe.parent(), StaleNames::of(probe)) else {
        return;
    };
    let Ok(dir) = remote.path_of(&dir.to_string_lossy()) else {
        return;
    };
    for name in remote.names_in(&dir).unwrap_or_default() {
        if stale.matches(&name) {
            let path = dir.clone().join(name.as_str());
            tracing::info!(object = %remote.url_of(&path), "removing an uncommitted temporary object of an earlier run");
            let _ = remote.delete(&path);
        }
    }
}

impl FileSink {
    /// Creates the sink; checks that the output directory can be created,
    /// or that the object store's folder can be listed.
    /// `check` is false for an offline check: an object store is not
    /// contacted then.
    pub fn new(
        name: &str,
        cfg: FileSinkConfig,
        remote: Option<Remote>,
        check: bool,
    ) -> Result<Self> {
        let probe = template::render(&cfg.path, chrono::Local::now(), 0);
        if let Some(r) = remote.as_ref().filter(|_| check) {
            let dir = Path::new(&probe)
                .parent()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default();
            r.names_in(&r.path_of(&dir)?)?;
        } else if let Some(dir) = Path::new(&probe).parent().filter(|_| remote.is_none()) {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| ConnectorError::io("cannot create output directory", dir, e))?;
                let meta = std::fs::metadata(dir)
                    .map_err(|e| ConnectorError::io("cannot use output directory", dir, e))?;
                if meta.permissions().readonly() {
                    return Err(ConnectorError::io(
                        "cannot write to output directory",
                        dir,
                        std::io::Error::from(std::io::ErrorKind::PermissionDenied),
                    ));
                }
            }
        }
        Ok(Self {
            name: name.to_string(),
            cfg,
            schema: None,
            transactional: false,
            current: None,
            staged: vec![],
            seq: 0,
            skip: 0,
            published: VecDeque::new(),
            epoch: 0,
            stale_probe: Some(PathBuf::from(probe)),
            per_epoch: remote.is_some(),
            remote,
        })
    }

    /// Every epoch writes files of its own, numbered by epoch (the sinks of
    /// a partitioned output: one per partition and epoch).
    pub(crate) fn with_files_per_epoch(mut self) -> Self {
        self.per_epoch = true;
        self
    }

    /// Leaves an earlier run's temporary files alone (another sink of the
    /// same folder removed them already).
    pub(crate) fn without_cleanup(mut self) -> Self {
        self.stale_probe = None;
        self
    }

    /// The object path of `p`, on an object store.
    fn object(&self, p: &Path) -> Result<Option<(&Remote, object_store::path::Path)>> {
        match &self.remote {
            None => Ok(None),
            Some(r) => Ok(Some((r, r.path_of(&p.to_string_lossy())?))),
        }
    }

    /// Whether a file (or object) is at `p`.
    fn exists(&self, p: &Path) -> Result<bool> {
        match self.object(p)? {
            None => Ok(p.is_file()),
            Some((r, o)) => Ok(r.size(&o)?.is_some()),
        }
    }

    /// Moves `from` to `to` (publishing a file).
    fn publish(&self, from: &Path, to: &Path) -> Result<()> {
        match self.object(from)? {
            None => {
                std::fs::rename(from, to)
                    .map_err(|e| ConnectorError::io("cannot publish", to, e))?;
                sync_dir(to);
                Ok(())
            }
            Some((r, o)) => {
                let (_, to_o) = self.object(to)?.expect("the same store");
                r.rename(&o, &to_o)
            }
        }
    }

    /// Removes the file (or object) at `p`, if any.
    fn remove(&self, p: &Path) {
        match self.object(p) {
            Ok(None) => {
                let _ = std::fs::remove_file(p);
            }
            Ok(Some((r, o))) => {
                if let Err(e) = r.delete(&o) {
                    tracing::warn!(sink = %self.name, "{e}");
                }
            }
            Err(_) => {}
        }
    }

    /// Whether a checkpoint's (temporary, final) pair is one this sink
    /// writes: a hidden epoch file next to its final name, inside the
    /// sink's own directory. Anything else in a checkpoint (damaged, or
    /// crafted by whoever can write the state directory) is refused, so a
    /// restart never renames a file that is not the sink's own.
    fn check_own(&self, tmp: &Path, fin: &Path) -> Result<()> {
        let refuse = |why: &str| {
            Err(ConnectorError::Other(format!(
                "sink '{}': the checkpoint names '{}' -> '{}', {why}; the checkpoint is not this sink's: move the state directory away to start from scratch",
                self.name,
                tmp.display(),
                fin.display()
            )))
        };
        let climbs = |p: &Path| {
            p.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        };
        if climbs(tmp) || climbs(fin) {
            return refuse("a path that climbs with '..'");
        }
        let (Some(name), Some(tmp_name)) = (fin.file_name(), tmp.file_name()) else {
            return refuse("a path without a file name");
        };
        let (name, tmp_name) = (name.to_string_lossy(), tmp_name.to_string_lossy());
        let epoch = tmp_name
            .strip_prefix(&format!(".{name}.epoch-"))
            .and_then(|t| t.strip_suffix(".tmp"));
        let is_epoch_file =
            epoch.is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
        if tmp.parent() != fin.parent() || !is_epoch_file {
            return refuse("which is not an epoch's temporary file next to its final name");
        }
        let root = template_root(&self.cfg.path);
        let remote = self.remote.is_some();
        let abs = |p: &Path| {
            if remote {
                p.to_path_buf()
            } else {
                std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
            }
        };
        if !abs(fin).starts_with(abs(&root)) {
            return refuse(&format!(
                "outside the sink's directory '{}'",
                root.display()
            ));
        }
        Ok(())
    }

    fn render(&self, epoch: u64) -> String {
        let now = chrono::Local::now();
        // a transactional file's number: the epoch, after an earlier run's files
        let per_epoch = self.transactional || self.per_epoch;
        let epoch = if per_epoch { epoch + self.skip } else { epoch };
        let mut p = template::render(&self.cfg.path, now, epoch);
        match self.cfg.rotation {
            Some(Rotation::Daily)
                if !["date", "day", "YYYY-MM-DD", "DD"]
                    .iter()
                    .any(|d| template::has(&self.cfg.path, d)) =>
            {
                p = template::with_suffix(&p, &now.format("%Y-%m-%d").to_string())
            }
            Some(Rotation::Hourly)
                if !template::has(&self.cfg.path, "hour")
                    && !template::has(&self.cfg.path, "HH") =>
            {
                p = template::with_suffix(&p, &now.format("%Y-%m-%d-%H").to_string())
            }
            _ => {}
        }
        if per_epoch && !template::has(&self.cfg.path, "batch_id") {
            p = template::with_suffix(&p, &format!("{epoch:06}"));
        }
        p
    }

    fn open(&mut self, mut rendered: String) -> Result<()> {
        let final_of = |sink: &Self, rendered: &str| {
            PathBuf::from(if matches!(sink.cfg.rotation, Some(Rotation::Size(_))) {
                template::with_suffix(rendered, &format!("{:04}", sink.seq))
            } else {
                rendered.to_string()
            })
        };
        let mut final_path = final_of(self, &rendered);
        // an epoch's file is published once: one already there is an
        // earlier run's (a run without the first one's checkpoint starts
        // counting epochs again), so this run's numbers continue after it
        while (self.transactional || self.per_epoch) && self.exists(&final_path)? {
            self.skip += 1;
            rendered = self.render(self.epoch);
            final_path = final_of(self, &rendered);
            if self.skip == 1 {
                tracing::info!(sink = %self.name, "'{}' exists from an earlier run: this run's files are numbered after it", final_path.display());
            }
        }
        if matches!(self.cfg.rotation, Some(Rotation::Size(_))) {
            self.seq += 1;
        }
        let parquet = self.cfg.format == FileFormat::Parquet;
        let write_path = if self.transactional {
            hidden(&final_path, &format!("epoch-{}.tmp", self.epoch))
        } else if parquet && self.remote.is_none() {
            // (an object being uploaded is invisible until it is complete)
            hidden(&final_path, "inprogress")
        } else {
            final_path.clone()
        };
        let (file, existing) = match self.object(&write_path)? {
            Some((r, o)) => (Target::Remote(Box::new(r.create(o))), 0),
            None => {
                if let Some(dir) = final_path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        ConnectorError::io("cannot create output directory", dir, e)
                    })?;
                }
                let append = !self.transactional && !parquet && self.cfg.append;
                let file = OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(append)
                    .truncate(!append)
                    .open(&write_path)
                    .map_err(|e| ConnectorError::io("cannot open output file", &write_path, e))?;
                let existing = file.metadata().map(|m| m.len()).unwrap_or(0);
                (Target::Local(file), existing)
            }
        };
        let count = Arc::new(AtomicU64::new(existing));
        let discard = Arc::new(AtomicBool::new(false));
        let writer = self.make_writer(file, &count, &discard, existing)?;
        self.current = Some(OpenFile {
            final_path,
            write_path,
            writer: Some(writer),
            count,
            discard,
            committed_len: existing,
            prepared: None,
            committed_rows: if existing > 0 { 1 } else { 0 },
            rendered,
            rows_total: 0,
        });
        Ok(())
    }

    fn make_writer(
        &self,
        file: Target,
        count: &Arc<AtomicU64>,
        discard: &Arc<AtomicBool>,
        existing: u64,
    ) -> Result<FileWriter> {
        let counting = Counting {
            file,
            count: count.clone(),
            discard: discard.clone(),
        };
        if self.cfg.format == FileFormat::Parquet {
            let schema = self.schema.clone().ok_or_else(|| {
                ConnectorError::Other("parquet sink needs the schema before the first write".into())
            })?;
            let codec = match self.cfg.compression {
                OutCompression::None => PqCompression::UNCOMPRESSED,
                OutCompression::Snappy => PqCompression::SNAPPY,
                OutCompression::Gzip => PqCompression::GZIP(GzipLevel::default()),
                OutCompression::Zstd => PqCompression::ZSTD(ZstdLevel::default()),
            };
            let mut props = WriterProperties::builder()
                .set_compression(codec)
                .set_max_row_group_row_count(Some(self.cfg.row_group_size));
            match self.cfg.dictionary {
                Some(on) => props = props.set_dictionary_enabled(on),
                None => {
                    // dictionaries pay off for strings; for numbers (mostly distinct) they cost time for nothing
                    props = props.set_dictionary_enabled(false);
                    for f in schema.fields() {
                        if matches!(
                            f.data_type(),
                            DataType::Utf8
                                | DataType::LargeUtf8
                                | DataType::Utf8View
                                | DataType::Binary
                                | DataType::Boolean
                                | DataType::Dictionary(..)
                        ) {
                            props = props.set_column_dictionary_enabled(
                                parquet::schema::types::ColumnPath::from(f.name().as_str()),
                                true,
                            );
                        }
                    }
                }
            }
            let props = props.build();
            return Ok(FileWriter::Parquet(ArrowWriter::try_new(
                counting,
                schema,
                Some(props),
            )?));
        }
        let bw = BufWriter::with_capacity(self.cfg.buffer_size, counting);
        let mut enc = match self.cfg.compression {
            OutCompression::Gzip => Enc::Gzip(flate2::write::GzEncoder::new(
                bw,
                flate2::Compression::fast(),
            )),
            OutCompression::Zstd => Enc::Zstd(
                zstd::Encoder::new(bw, 3)
                    .map_err(|e| ConnectorError::Other(format!("zstd: {e}")))?,
            ),
            _ => Enc::Plain(bw),
        };
        if self.cfg.format == FileFormat::JsonArray && existing == 0 {
            enc.write_all(b"[")
                .map_err(|e| ConnectorError::Other(e.to_string()))?;
        }
        Ok(FileWriter::Lines {
            enc,
            rows: 0,
            header_pending: existing == 0 && self.cfg.has_headers,
        })
    }

    /// Closes the current file: finishes it and, outside transactions,
    /// publishes it. In transactional mode it is staged for commit.
    fn close_current(&mut self) -> Result<()> {
        let Some(mut f) = self.current.take() else {
            return Ok(());
        };
        let file = match f.writer.take() {
            Some(FileWriter::Lines { mut enc, .. }) => {
                if self.cfg.format == FileFormat::JsonArray {
                    enc.write_all(b"]\n")
                        .map_err(|e| ConnectorError::io("cannot write", &f.write_path, e))?;
                }
                enc.finish()
                    .map_err(|e| ConnectorError::io("cannot finish", &f.write_path, e))?
            }
            Some(FileWriter::Parquet(w)) => w.into_inner()?.file,
            None => return Ok(()),
        };
        file.finish()
            .map_err(|e| ConnectorError::io("cannot finish", &f.write_path, e))?;
        if self.transactional {
            if f.rows_total == 0 {
                self.remove(&f.write_path);
            } else {
                // prepare promises that commit can publish: the destination must take a file
                if self.remote.is_none() && f.final_path.is_dir() {
                    let _ = std::fs::remove_file(&f.write_path);
                    return Err(ConnectorError::io(
                        "cannot publish to",
                        &f.final_path,
                        std::io::Error::other("a directory is in the way"),
                    ));
                }
                self.staged.push((f.write_path, f.final_path));
            }
        } else if f.write_path != f.final_path {
            self.publish(&f.write_path, &f.final_path)?;
            self.retain(f.final_path);
        } else {
            self.retain(f.final_path);
        }
        Ok(())
    }

    fn retain(&mut self, published: PathBuf) {
        if !self.published.contains(&published) {
            self.published.push_back(published);
        }
        if let Some(max) = self.cfg.max_files {
            while self.published.len() > max {
                if let Some(old) = self.published.pop_front() {
                    tracing::info!(sink = %self.name, file = %velo_config::mask(&old.to_string_lossy()), "max_files reached: removing oldest file");
                    self.remove(&old);
                }
            }
        }
    }

    /// Writes `batch`, as `encoded` when the engine encoded it already.
    fn write_inner(&mut self, batch: &RecordBatch, encoded: Option<&[u8]>) -> Result<()> {
        if self.schema.is_none() {
            self.schema = Some(batch.schema());
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if let Some(Rotation::Size(limit)) = self.cfg.rotation {
            let full = self
                .current
                .as_ref()
                .is_some_and(|f| f.count.load(Ordering::Relaxed) >= limit);
            if full {
                let rendered = self
                    .current
                    .as_ref()
                    .map(|f| f.rendered.clone())
                    .unwrap_or_default();
                self.close_current()?;
                self.open(rendered)?;
            }
        }
        if self.current.is_none() {
            let r = self.render(self.epoch);
            self.open(r)?;
        }
        let delimiter = self.cfg.delimiter;
        let format = self.cfg.format;
        let f = self.current.as_mut().expect("opened above");
        let path = f.write_path.clone();
        let err = |e: ArrowError| {
            ConnectorError::Other(format!("cannot write '{}': {e}", path.display()))
        };
        let io = |e: std::io::Error| ConnectorError::io("cannot write", &path, e);
        match f.writer.as_mut() {
            Some(FileWriter::Parquet(w)) => w.write(batch)?,
            Some(FileWriter::Lines {
                enc,
                rows,
                header_pending,
            }) => {
                if format == FileFormat::Csv && *header_pending {
                    // the header alone: the rows come encoded without it
                    let mut w = arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .with_delimiter(delimiter)
                        .build(&mut *enc);
                    w.write(&batch.slice(0, 0)).map_err(err)?;
                    *header_pending = false;
                }
                if format == FileFormat::JsonArray && (*rows > 0 || f.committed_rows > 0) {
                    enc.write_all(b",").map_err(io)?;
                }
                match encoded {
                    Some(bytes) => enc.write_all(bytes).map_err(io)?,
                    // encoded here, straight into the file
                    None => encode_lines(format, delimiter, batch, &mut *enc).map_err(err)?,
                }
                *rows += batch.num_rows() as u64;
            }
            None => {
                return Err(ConnectorError::Other(format!(
                    "sink '{}' has no open file",
                    self.name
                )));
            }
        }
        f.rows_total += batch.num_rows() as u64;
        Ok(())
    }
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> SinkCapabilities {
        SinkCapabilities { transactions: true }
    }

    fn set_transactional(&mut self, on: bool) {
        self.transactional = on;
    }

    fn set_continuing(&mut self) {
        // line formats append; transactional and object-store files are new
        // files per epoch anyway; a Parquet file or a JSON array cannot be
        // appended to, so this run writes files of its own next to it
        let lines = matches!(self.cfg.format, FileFormat::JsonLines | FileFormat::Csv);
        if lines && !self.cfg.append {
            tracing::info!(sink = %self.name, "continuing an earlier run of the job: appending to its output instead of replacing it");
            self.cfg.append = true;
        } else if !lines && !self.per_epoch && !self.transactional {
            tracing::info!(sink = %self.name, "continuing an earlier run of the job: its {:?} output is kept, this run writes new numbered files next to it", self.cfg.format);
            self.per_epoch = true;
        }
    }

    fn set_schema(&mut self, schema: SchemaRef) {
        self.schema = Some(schema);
    }

    fn describe(&self) -> String {
        format!(
            "file {:?} '{}'{}",
            self.cfg.format,
            self.cfg.path,
            if self.transactional {
                " (transactional)"
            } else {
                ""
            }
        )
    }

    fn begin_epoch(&mut self, epoch: u64) -> Result<()> {
        if let Some(probe) = self.stale_probe.take() {
            match &self.remote {
                Some(r) => remove_stale_objects(r, &probe),
                None => remove_stale_temporaries(&probe),
            }
        }
        self.epoch = epoch;
        let rendered = self.render(epoch);
        if self
            .current
            .as_ref()
            .is_some_and(|f| f.rendered != rendered)
        {
            self.close_current()?;
        }
        if self.current.is_none() && !self.transactional && !self.per_epoch {
            self.open(rendered)?;
        }
        Ok(())
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.write_inner(batch, None)
    }

    fn encoder(&self) -> Option<Arc<dyn crate::BatchEncoder>> {
        (self.cfg.format != FileFormat::Parquet).then(|| {
            Arc::new(LinesEncoder {
                format: self.cfg.format,
                delimiter: self.cfg.delimiter,
            }) as Arc<dyn crate::BatchEncoder>
        })
    }

    fn write_encoded(&mut self, batch: &RecordBatch, bytes: &[u8]) -> Result<()> {
        self.write_inner(batch, Some(bytes))
    }

    fn prepare_commit(&mut self, _epoch: u64) -> Result<()> {
        if self.transactional || self.per_epoch {
            // (an object is complete, or it is nowhere)
            return self.close_current();
        }
        if let Some(f) = self.current.as_mut() {
            match f.writer.as_mut() {
                Some(FileWriter::Lines { enc, rows, .. }) => {
                    enc.flush()
                        .map_err(|e| ConnectorError::io("cannot flush", &f.write_path, e))?;
                    f.prepared = Some((f.count.load(Ordering::Relaxed), *rows));
                }
                Some(FileWriter::Parquet(w)) => w.flush()?,
                None => {}
            }
        }
        Ok(())
    }

    fn commit(&mut self, _epoch: u64) -> Result<()> {
        // the prepared length becomes the length an abort cuts back to
        if let Some(f) = self.current.as_mut() {
            if let Some((len, rows)) = f.prepared.take() {
                f.committed_len = len;
                f.committed_rows += rows;
                if let Some(FileWriter::Lines { rows: pending, .. }) = f.writer.as_mut() {
                    *pending -= rows;
                }
            }
        }
        for (tmp, fin) in std::mem::take(&mut self.staged) {
            self.publish(&tmp, &fin)?;
            self.retain(fin);
        }
        Ok(())
    }

    fn commit_token(&self) -> Option<serde_json::Value> {
        (!self.staged.is_empty()).then(|| {
            serde_json::json!(
                self.staged
                    .iter()
                    .map(|(t, f)| [t.to_string_lossy(), f.to_string_lossy()])
                    .collect::<Vec<_>>()
            )
        })
    }

    fn recover(&mut self, token: &serde_json::Value) -> Result<()> {
        let pairs: Vec<(PathBuf, PathBuf)> =
            serde_json::from_value(token.clone()).map_err(|e| {
                ConnectorError::Other(format!(
                    "sink '{}': unreadable checkpoint entry: {e}",
                    self.name
                ))
            })?;
        for (tmp, fin) in &pairs {
            self.check_own(tmp, fin)?;
        }
        for (tmp, fin) in pairs {
            if self.exists(&tmp)? {
                tracing::info!(sink = %self.name, file = %velo_config::mask(&fin.to_string_lossy()), "publishing a file the last checkpoint committed");
                self.publish(&tmp, &fin)?;
            } else if !self.exists(&fin)? {
                return Err(ConnectorError::Other(format!(
                    "sink '{}': the checkpoint says '{}' was committed, but neither it nor its temporary file '{}' exists",
                    self.name,
                    fin.display(),
                    tmp.display()
                )));
            }
        }
        Ok(())
    }

    fn abort(&mut self, _epoch: u64) -> Result<()> {
        for (tmp, _) in std::mem::take(&mut self.staged) {
            self.remove(&tmp);
        }
        let Some(mut f) = self.current.take() else {
            return Ok(());
        };
        if self.transactional || self.per_epoch {
            // the epoch's own file goes (an object's upload is given up
            // when its writer is dropped)
            f.discard.store(true, Ordering::Relaxed);
            drop(f.writer.take());
            if self.transactional || self.remote.is_none() {
                self.remove(&f.write_path);
            }
            return Ok(());
        }
        match f.writer.take() {
            Some(FileWriter::Lines { .. }) => {
                // cut the file back to what the last commit published, then continue after it
                f.discard.store(true, Ordering::Relaxed);
                let file = OpenOptions::new()
                    .write(true)
                    .open(&f.write_path)
                    .map_err(|e| ConnectorError::io("cannot reopen", &f.write_path, e))?;
                file.set_len(f.committed_len)
                    .map_err(|e| ConnectorError::io("cannot truncate", &f.write_path, e))?;
                drop(file);
                let file = OpenOptions::new()
                    .append(true)
                    .open(&f.write_path)
                    .map_err(|e| ConnectorError::io("cannot reopen", &f.write_path, e))?;
                let count = Arc::new(AtomicU64::new(f.committed_len));
                let discard = Arc::new(AtomicBool::new(false));
                let w = self.make_writer(Target::Local(file), &count, &discard, f.committed_len)?;
                f.writer = Some(w);
                f.count = count;
                f.discard = discard;
                f.rows_total = f.committed_rows;
                self.current = Some(f);
            }
            Some(FileWriter::Parquet(w)) => {
                // Parquet row groups cannot be taken back: the file is finished with what it holds.
                tracing::warn!(sink = %self.name, "aborted epoch: rows already in the open Parquet file stay in it; use use_transactions = 'true' for all-or-nothing epochs");
                f.writer = Some(FileWriter::Parquet(w));
                self.current = Some(f);
            }
            None => {}
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        self.close_current()?;
        self.commit(self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{Field, Schema};

    fn run_once(cfg: &FileSinkConfig, continuing: bool, ids: std::ops::Range<i64>) {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let mut sink = FileSink::new("out", cfg.clone(), None, true).unwrap();
        sink.set_schema(schema.clone());
        if continuing {
            sink.set_continuing();
        }
        sink.begin_epoch(1).unwrap();
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(ids))])
            .unwrap();
        sink.write(&batch).unwrap();
        sink.prepare_commit(1).unwrap();
        sink.commit(1).unwrap();
        sink.close().unwrap();
    }

    fn config(dir: &std::path::Path, props: &[(&str, &str)]) -> velo_config::ConnectorConfig {
        velo_config::ConnectorConfig {
            name: "out".into(),
            role: velo_config::Role::Sink,
            kind: "file".into(),
            props: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            origin: velo_config::Origin::Named,
            base_dir: dir.to_path_buf(),
            job: "j".into(),
        }
    }

    /// `row_group_size` sets the rows of each Parquet row group; zero is
    /// refused.
    #[test]
    fn parquet_row_groups_hold_row_group_size_rows() {
        use parquet::file::reader::FileReader;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("o.parquet");
        let path_s = path.to_string_lossy().into_owned();
        let cfg = FileSinkConfig::from_config(&config(
            d.path(),
            &[("path", &path_s), ("row_group_size", "4")],
        ))
        .unwrap();
        run_once(&cfg, false, 0..10);
        let reader =
            parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&path).unwrap())
                .unwrap();
        let rows: Vec<i64> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(rows, vec![4, 4, 2]);
        let zero = FileSinkConfig::from_config(&config(
            d.path(),
            &[("path", &path_s), ("row_group_size", "0")],
        ));
        let err = zero.expect_err("0 rows a group is refused").to_string();
        assert!(err.contains("row_group_size"), "{err}");
    }

    /// A job run again after a stop keeps what its Parquet and JSON-array
    /// outputs hold: the new run's rows go to new files next to them.
    #[test]
    fn a_continuing_run_keeps_whole_file_outputs() {
        for (ext, format) in [
            ("parquet", FileFormat::Parquet),
            ("json", FileFormat::JsonArray),
        ] {
            let d = tempfile::tempdir().unwrap();
            let path = d.path().join(format!("o.{ext}"));
            let path_s = path.to_string_lossy().into_owned();
            let mut cfg =
                FileSinkConfig::from_config(&config(d.path(), &[("path", &path_s)])).unwrap();
            cfg.format = format;
            run_once(&cfg, false, 0..10);
            run_once(&cfg, true, 10..25);
            let mut files: Vec<String> = std::fs::read_dir(d.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            assert_eq!(
                files,
                [format!("o-000001.{ext}"), format!("o.{ext}")],
                "{ext}"
            );
        }
    }
}
