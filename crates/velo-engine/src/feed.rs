//! The driving source as a streaming DataFusion table.
//!
//! [`EpochFeed`] owns the running [`SourceReader`] across epochs. Each time
//! the physical plan is executed, the scan's [`PartitionStream`] pulls from
//! the feed until the epoch's budget says stop (records, bytes, deadline,
//! eager close, shutdown) or the source ends; DataFusion sees the end of its
//! input and finishes the epoch. A batch that straddles the boundary is
//! sliced and the rest kept for the next epoch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use tokio::sync::Mutex;
use velo_connectors::{BadRecord, Position, PositionCommitter, Source, SourceEvent, SourceReader};

use crate::stats::Counters;
use crate::time::{TimeMode, Watermark, WatermarkTracker};
use velo_config::time::LateData;

/// One row of `batch` as JSON text (for dead-letter records), cut at 4 KiB.
pub(crate) fn row_json(batch: &RecordBatch, row: usize) -> String {
    let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
    let _ = w.write(&batch.slice(row, 1));
    let _ = w.finish();
    let mut text = String::from_utf8_lossy(&w.into_inner())
        .trim_end()
        .to_string();
    if text.len() > 4096 {
        let mut cut = 4096;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Where the current epoch stops.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    /// Records at most.
    pub max_records: Option<usize>,
    /// Arrow bytes at most.
    pub max_bytes: Option<u64>,
    /// Close at this instant.
    pub deadline: Option<Instant>,
    /// Close as soon as no more input is ready (after at least one record).
    pub eager: bool,
    /// Close after this many source batches (`batch.enable = false`: one).
    pub max_batches: Option<usize>,
}

/// What happens to a bad record inside the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRecordPolicy {
    /// Keep it for the dead-letter route and go on.
    Collect,
    /// Fail the epoch.
    Fail,
}

/// The columns the plan reads, gathered from every scan of the table.
#[derive(Debug, Clone)]
enum Projection {
    Unset,
    Cols(std::collections::BTreeSet<usize>),
    All,
}

/// Where the rows of a batch came from: (part, rows) runs in order.
type PartRuns = Vec<(Arc<str>, usize)>;

/// Splits `runs` after `at` rows.
fn split_runs(runs: PartRuns, at: usize) -> (PartRuns, PartRuns) {
    let (mut head, mut tail) = (Vec::new(), Vec::new());
    let mut seen = 0;
    for (part, n) in runs {
        if seen >= at {
            tail.push((part, n));
        } else if seen + n <= at {
            head.push((part, n));
        } else {
            head.push((part.clone(), at - seen));
            tail.push((part, seen + n - at));
        }
        seen += n;
    }
    (head, tail)
}

/// The highest event time of each part among the rows `keep` selects
/// (all rows without it).
fn part_maxima(
    millis: &arrow::array::Int64Array,
    keep: Option<&arrow::array::BooleanArray>,
    runs: &[(Arc<str>, usize)],
) -> Result<Vec<(Arc<str>, i64)>, DataFusionError> {
    let mut out = Vec::with_capacity(runs.len());
    let mut at = 0;
    for (part, n) in runs {
        let slice = millis.slice(at, *n);
        let max = match keep {
            None => arrow::compute::max(&slice),
            Some(k) => {
                let f = arrow::compute::filter(&slice, &k.slice(at, *n))?;
                arrow::compute::max(f.as_primitive::<arrow::datatypes::Int64Type>())
            }
        };
        if let Some(m) = max {
            out.push((part.clone(), m));
        }
        at += n;
    }
    Ok(out)
}

/// One reader of the source: its only one, or one part of a split source.
#[derive(Default)]
struct Reader {
    /// Opened at the first read, once planning has told which columns are used.
    reader: Option<SourceReader>,
    /// The rest of a batch cut at the epoch's record budget, with its parts.
    pending: Option<(RecordBatch, Option<PartRuns>)>,
    exhausted: bool,
    /// The part's name for the watermark (parts of a split source).
    part: Option<Arc<str>>,
    /// `rate_limit`: when this reader's first paced record went out, and
    /// how many have since.
    paced: Option<(Instant, u64)>,
}

/// What the readers of a feed share.
struct State {
    /// Readers that have ended (of `part_records.len()`).
    ended: usize,
    budget: Budget,
    records: usize,
    /// Records of each reader in the epoch (one entry per reader): the
    /// readers of a split source each read their share of the record
    /// budget, so the parts stay level in event time (one running ahead
    /// would keep its windows open).
    part_records: Vec<usize>,
    bytes: u64,
    batches: usize,
    bad: Vec<BadRecord>,
    fatal: Option<(velo_connectors::ErrorKind, String)>,
    /// Position after the last batch delivered (resumable sources).
    position: Option<Position>,
    committer: Option<Arc<dyn PositionCommitter>>,
    /// Event-time watermark of the parts (event time only).
    tracker: Option<WatermarkTracker>,
    /// When the epoch's first record was read.
    first_read: Option<std::time::Instant>,
}

impl State {
    /// The records reader `part` may still deliver in an epoch of `max`
    /// records: what is left of them, and of its share if the source is split.
    fn room(&self, max: usize, part: usize) -> usize {
        let left = max.saturating_sub(self.records);
        match self.part_records.len() {
            1 => left,
            n => left.min(max.div_ceil(n).saturating_sub(self.part_records[part])),
        }
    }
}

/// The feed of one source across epochs.
pub struct EpochFeed {
    name: String,
    schema: SchemaRef,
    source: Arc<dyn Source>,
    batch_rows: usize,
    projection: std::sync::Mutex<Projection>,
    /// One reader, or one per scan partition when the source is split
    /// ([`Self::split`]); a reader's lock is held while it waits for the
    /// source, the state's only briefly.
    readers: std::sync::Mutex<Vec<Arc<Mutex<Reader>>>>,
    state: Mutex<State>,
    policy: BadRecordPolicy,
    counters: Arc<Counters>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// Where to resume (a checkpoint's position).
    resume: std::sync::Mutex<Option<Position>>,
    /// Event time or processing time, if the job needs time.
    time: Option<TimeMode>,
    /// The schema index of the event-time column.
    time_index: Option<usize>,
    /// The watermark this feed moves.
    watermark: Arc<Watermark>,
    /// Scans of the table in the plan: a query that reads the source twice
    /// (a stream joined with its own aggregate) gives every scan every batch.
    scans: std::sync::atomic::AtomicUsize,
    tee: Mutex<Tee>,
    /// The watermarks of the job's other streams: this feed pauses while
    /// it is ahead of the slowest of them (a join keeps what one stream
    /// read ahead of the other).
    others: std::sync::OnceLock<Vec<Arc<Watermark>>>,
    /// `rate_limit`: records per second, at most.
    rate: std::sync::OnceLock<u64>,
    /// The filters the scans of the table were given, for the source to
    /// skip partitions and row groups with.
    filters: std::sync::Mutex<Filters>,
    /// This source's bad and late records.
    mine: Arc<crate::stats::SourceCounts>,
}

/// The filters of a table's scans: pruning is only safe with one set that
/// every scan shares.
#[derive(Debug, Default)]
enum Filters {
    /// No scan yet.
    #[default]
    Unset,
    /// Every scan so far had these.
    Same(Vec<datafusion::logical_expr::Expr>),
    /// Scans differ (a source read twice with different filters).
    Mixed,
}

/// Batches read for one scan and waiting for the others.
#[derive(Default)]
struct Tee {
    queues: Vec<std::collections::VecDeque<RecordBatch>>,
}

impl std::fmt::Debug for EpochFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochFeed")
            .field("source", &self.name)
            .finish()
    }
}

impl EpochFeed {
    /// A feed over `source`, opened at the first read with `batch_rows` rows
    /// per batch, following `time` (event time: the column is read, late
    /// records held back and the watermark moved with every batch).
    pub fn new(
        source: Arc<dyn Source>,
        batch_rows: usize,
        policy: BadRecordPolicy,
        counters: Arc<Counters>,
        shutdown: tokio::sync::watch::Receiver<bool>,
        time: Option<TimeMode>,
    ) -> Result<Arc<Self>, DataFusionError> {
        let mut schema = source.schema();
        let mut time_index = None;
        let mut tracker = None;
        if let Some(TimeMode::Event(t)) = &time {
            let idx = schema.index_of(&t.field).map_err(|_| {
                DataFusionError::Plan(format!(
                    "the event time column '{}' of source '{}' is not one of its columns ({}); fix '{}.event.time.field' or the window's time column",
                    t.field,
                    source.name(),
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    source.name()
                ))
            })?;
            let f = schema.field(idx);
            let ty = crate::time::table_type(f.data_type(), &t.format);
            if &ty != f.data_type() {
                let mut fields: Vec<arrow::datatypes::FieldRef> =
                    schema.fields().iter().cloned().collect();
                fields[idx] = Arc::new(f.as_ref().clone().with_data_type(ty));
                schema = Arc::new(arrow::datatypes::Schema::new_with_metadata(
                    fields,
                    schema.metadata().clone(),
                ));
            }
            time_index = Some(idx);
            tracker = Some(WatermarkTracker::new(t));
        }
        let mine = counters.source(source.name());
        Ok(Arc::new(Self {
            name: source.name().to_string(),
            schema,
            source,
            batch_rows,
            projection: std::sync::Mutex::new(Projection::Unset),
            readers: std::sync::Mutex::new(vec![Arc::default()]),
            state: Mutex::new(State {
                ended: 0,
                budget: Budget::default(),
                records: 0,
                part_records: vec![0],
                bytes: 0,
                batches: 0,
                bad: vec![],
                fatal: None,
                position: None,
                committer: None,
                tracker,
                first_read: None,
            }),
            policy,
            counters,
            shutdown,
            resume: std::sync::Mutex::new(None),
            time,
            time_index,
            watermark: Watermark::new(),
            scans: std::sync::atomic::AtomicUsize::new(0),
            tee: Mutex::new(Tee::default()),
            others: std::sync::OnceLock::new(),
            rate: std::sync::OnceLock::new(),
            filters: std::sync::Mutex::default(),
            mine,
        }))
    }

    /// The error the source failed with, if it did (read without waiting:
    /// `None` while the state is busy).
    pub fn failure(&self) -> Option<String> {
        self.state
            .try_lock()
            .ok()
            .and_then(|s| s.fatal.as_ref().map(|(_, m)| m.clone()))
    }

    /// A scan of the table with `filters` (pushed down by DataFusion as
    /// inexact: the query applies them again).
    pub fn note_filters(&self, filters: &[datafusion::logical_expr::Expr]) {
        let mut f = self.filters.lock().expect("filters lock");
        *f = match &*f {
            Filters::Unset => Filters::Same(filters.to_vec()),
            Filters::Same(v) if v.as_slice() == filters => Filters::Same(v.clone()),
            _ => Filters::Mixed,
        };
    }

    /// Reads at most `per_second` records a second (`rate_limit`), in
    /// batches of a tenth of a second's worth.
    pub fn limit_rate(&self, per_second: u64) {
        let _ = self.rate.set(per_second.max(1));
    }

    /// The rows of a batch a rate-limited feed hands on at once.
    fn rate_chunk(&self) -> Option<usize> {
        self.rate
            .get()
            .map(|r| (*r as usize / 10).clamp(1, self.batch_rows.max(1)))
    }

    /// Waits until `rows` more records keep the reader within its rate; a
    /// stop signal ends the wait.
    async fn pace(&self, r: &mut Reader, rows: usize) {
        let Some(rate) = self.rate.get() else { return };
        let (start, sent) = *r.paced.get_or_insert((Instant::now(), 0));
        let sent = sent + rows as u64;
        r.paced = Some((start, sent));
        let due = start + std::time::Duration::from_secs_f64(sent as f64 / *rate as f64);
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = shutdown.wait_for(|v| *v) => {}
        }
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table's schema (its event-time column as the job reads it).
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Aligns this feed with the job's streams (`all` their watermarks,
    /// its own among them): it reads no further in an epoch while its
    /// watermark is ahead of the lowest of the others' (those not started,
    /// ended, or idle for 5 s do not count).
    pub fn align_with(&self, all: Vec<Arc<Watermark>>) {
        let _ = self.others.set(all);
    }

    /// The event-time column, if the feed reads event time.
    pub fn time_field(&self) -> Option<&str> {
        match &self.time {
            Some(TimeMode::Event(t)) => Some(&t.field),
            _ => None,
        }
    }

    /// Whether a scan's partition `schema` is this feed's (the same `Arc`).
    pub fn owns(&self, schema: &SchemaRef) -> bool {
        Arc::ptr_eq(&self.schema, schema)
    }

    /// Whether this feed is ahead of the slowest of the others.
    fn ahead(&self) -> bool {
        let Some(others) = self.others.get() else {
            return false;
        };
        // a stream whose watermark has not moved for a while is idle, not
        // slow: the others do not wait for it
        let slowest = others
            .iter()
            .filter(|w| !Arc::ptr_eq(w, &self.watermark) && !w.stalled(ALIGN_IDLE))
            .map(|w| w.get())
            .filter(|w| *w != Watermark::NONE && *w != Watermark::END)
            .min();
        slowest.is_some_and(|m| self.watermark.get() > m)
    }

    /// The watermark this feed moves.
    pub fn watermark(&self) -> Arc<Watermark> {
        self.watermark.clone()
    }

    /// How the job tells time.
    pub fn time(&self) -> Option<&TimeMode> {
        self.time.as_ref()
    }

    /// Reads the event time of `batch`: unreadable times become bad records,
    /// records behind the watermark are late (counted, or dead-lettered),
    /// and the watermark moves past the rest.
    fn apply_time(
        &self,
        s: &mut State,
        batch: RecordBatch,
        parts: Option<PartRuns>,
    ) -> Result<RecordBatch, DataFusionError> {
        let (Some(TimeMode::Event(t)), Some(idx)) = (&self.time, self.time_index) else {
            return Ok(batch);
        };
        let read = crate::time::read_time(batch.column(idx), &t.format, &t.field);
        // the rows as read, for dead letters (the converted column has no
        // value where the time could not be read)
        let raw = batch.clone();
        let mut batch = match read.column.clone() {
            Some(c) => {
                let mut cols = batch.columns().to_vec();
                cols[idx] = c;
                RecordBatch::try_new(self.schema.clone(), cols)?
            }
            None => batch,
        };
        let wm = self.watermark.get();
        let in_time =
            read.errors.is_empty() && arrow::compute::min(&read.millis).is_none_or(|m| m >= wm);
        // a source that names no parts is one part
        let runs = parts.unwrap_or_else(|| vec![(Arc::from(""), read.millis.len())]);
        // the highest event time of each part among the rows kept
        let maxima = if in_time {
            // the usual case: every time readable, none late
            part_maxima(&read.millis, None, &runs)?
        } else {
            let (kept, keep) = self.hold_back(s, (&batch, &raw), &read, t, wm)?;
            batch = kept;
            part_maxima(&read.millis, Some(&keep), &runs)?
        };
        if let Some(tr) = s.tracker.as_mut() {
            let now = Instant::now();
            for (part, max_ts) in &maxima {
                tr.observe(part, *max_ts, now);
            }
            self.follow(tr, now);
        }
        Ok(batch)
    }

    /// Moves the watermark to what the parts of `tr` allow at `now`.
    fn follow(&self, tr: &WatermarkTracker, now: Instant) {
        if let Some(w) = tr.watermark(now) {
            self.watermark.advance(w);
        }
    }

    /// Routes the rows of `batch` with an unreadable or late event time
    /// (bad records, late data); returns the rest and which rows they are.
    fn hold_back(
        &self,
        s: &mut State,
        (batch, raw): (&RecordBatch, &RecordBatch),
        read: &crate::time::ReadTime,
        t: &velo_config::time::EventTime,
        wm: i64,
    ) -> Result<(RecordBatch, arrow::array::BooleanArray), DataFusionError> {
        let mut keep = arrow::array::BooleanBuilder::with_capacity(batch.num_rows());
        let mut bad = read.errors.iter().peekable();
        let mut late = 0u64;
        for (i, ts) in read.millis.iter().enumerate() {
            match ts {
                None => {
                    let e = bad.next().expect("an error for every unreadable time");
                    debug_assert_eq!(e.row, i);
                    Counters::add(&self.counters.records_failed, 1);
                    Counters::add(&self.mine.failed, 1);
                    let r = BadRecord {
                        source: self.name.clone(),
                        location: "event time".into(),
                        line: 0,
                        error: e.error.clone(),
                        raw: row_json(raw, i),
                    };
                    if self.policy == BadRecordPolicy::Fail {
                        let msg = r.to_string();
                        s.bad.push(r);
                        return Err(DataFusionError::External(Box::new(BadRecordError(msg))));
                    }
                    s.bad.push(r);
                    keep.append_value(false);
                }
                Some(ts) if ts < wm => {
                    late += 1;
                    if t.late == LateData::DeadLetter {
                        s.bad.push(BadRecord {
                            source: self.name.clone(),
                            location: "late".into(),
                            line: 0,
                            error: format!(
                                "late record: event time {} is behind the watermark {}",
                                crate::time::show_millis(ts),
                                crate::time::show_millis(wm)
                            ),
                            raw: row_json(raw, i),
                        });
                    }
                    keep.append_value(false);
                }
                Some(_) => keep.append_value(true),
            }
        }
        Counters::add(&self.counters.records_late, late);
        Counters::add(&self.mine.late, late);
        let keep = keep.finish();
        Ok((arrow::compute::filter_record_batch(batch, &keep)?, keep))
    }

    /// The epoch's input ended: in processing time the watermark is now.
    fn end_of_input(&self, exhausted: bool) {
        if exhausted {
            self.watermark.advance(Watermark::END);
        } else if matches!(self.time, Some(TimeMode::Processing)) {
            self.watermark.advance(crate::time::now_millis());
        }
    }

    /// Records the columns one scan of the table reads (None: all of them).
    pub fn note_projection(&self, cols: Option<&Vec<usize>>) {
        let mut p = self.projection.lock().expect("projection lock");
        *p = match (&*p, cols) {
            (_, None) | (Projection::All, _) => Projection::All,
            (Projection::Unset, Some(c)) => Projection::Cols(c.iter().copied().collect()),
            (Projection::Cols(have), Some(c)) => {
                Projection::Cols(have.iter().copied().chain(c.iter().copied()).collect())
            }
        };
    }

    /// Opens reader `part` of `parts`.
    fn open(&self, part: usize, parts: usize) -> velo_connectors::Result<SourceReader> {
        let cols: Option<Vec<usize>> = match &*self.projection.lock().expect("projection lock") {
            // the event time is read whether the query reads it or not
            Projection::Cols(c) => Some(
                c.iter()
                    .copied()
                    .chain(self.time_index)
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            ),
            _ => None,
        };
        if let Filters::Same(f) = &*self.filters.lock().expect("filters lock") {
            if !f.is_empty() {
                self.source
                    .set_pruning(Arc::new(crate::prune::FilterPruning::new(f)));
            }
        }
        let resume = self.resume.lock().expect("resume lock").clone();
        if parts > 1 {
            self.source
                .open_part(self.batch_rows, cols.as_deref(), part, parts)
        } else {
            self.source
                .open_at(self.batch_rows, cols.as_deref(), resume.as_ref())
        }
    }

    /// Resumes the source at `pos` when it opens.
    pub fn set_resume(&self, pos: Position) {
        *self.resume.lock().expect("resume lock") = Some(pos.clone());
    }

    /// The source position after the last delivered batch (resumable sources).
    pub async fn position(&self) -> Option<Position> {
        self.state.lock().await.position.clone()
    }

    /// The committer of the source's positions, once it is open.
    pub async fn committer(&self) -> Option<Arc<dyn PositionCommitter>> {
        self.state.lock().await.committer.clone()
    }

    /// Closes the reader and reopens it at `pos` on the next read: the
    /// records after `pos` are delivered again (an aborted epoch is re-read).
    pub async fn rewind(&self, pos: Position) {
        for r in self.readers() {
            let mut r = r.lock().await;
            (r.reader, r.pending, r.exhausted) = (None, None, false);
        }
        let mut s = self.state.lock().await;
        s.ended = 0;
        s.committer = None;
        s.position = Some(pos.clone());
        *self.resume.lock().expect("resume lock") = Some(pos);
    }

    /// Where the feed's time stands now (taken at a commit).
    pub async fn mark(&self) -> FeedMark {
        FeedMark {
            watermark: self.watermark.get(),
            tracker: self.state.lock().await.tracker.clone(),
        }
    }

    /// Puts the feed's time back where [`Self::mark`] found it: an epoch
    /// that is read again (or discarded) leaves no trace in the watermark,
    /// so its records are not late the second time.
    pub async fn restore_mark(&self, mark: &FeedMark) {
        self.state.lock().await.tracker = mark.tracker.clone();
        self.watermark.reset(mark.watermark);
    }

    /// Starts an epoch with `budget`.
    pub async fn begin_epoch(&self, budget: Budget) {
        let mut s = self.state.lock().await;
        s.budget = budget;
        s.records = 0;
        s.part_records.iter_mut().for_each(|r| *r = 0);
        s.bytes = 0;
        s.batches = 0;
        s.first_read = None;
    }

    /// When the current epoch's first record was read, if one was.
    pub async fn first_read(&self) -> Option<std::time::Instant> {
        self.state.lock().await.first_read
    }

    /// `rows` of this source read by a plan that scanned it itself (a
    /// batch plan over listing tables), counted into the epoch.
    pub async fn read_outside(&self, rows: u64) {
        let mut s = self.state.lock().await;
        if s.first_read.is_none() && rows > 0 {
            s.first_read = Some(std::time::Instant::now());
        }
        s.records += rows as usize;
        Counters::add(&self.counters.records_in, rows);
    }

    /// Records delivered in the current epoch.
    pub async fn epoch_records(&self) -> usize {
        self.state.lock().await.records
    }

    /// The source has ended and everything was delivered.
    pub async fn is_finished(&self) -> bool {
        // a reader ends after its last pending rows
        let s = self.state.lock().await;
        s.ended == s.part_records.len()
    }

    /// Bad records collected since the last call.
    pub async fn take_bad(&self) -> Vec<BadRecord> {
        std::mem::take(&mut self.state.lock().await.bad)
    }

    /// A fatal source error, if one happened.
    pub async fn fatal(&self) -> Option<(velo_connectors::ErrorKind, String)> {
        self.state.lock().await.fatal.clone()
    }

    /// Reads the whole (bounded) source: lookup tables.
    pub async fn drain_all(&self) -> Result<Vec<RecordBatch>, DataFusionError> {
        self.begin_epoch(Budget::default()).await;
        let mut out = Vec::new();
        while let Some(b) = self.next_batch().await {
            out.push(b?);
        }
        Ok(out)
    }

    /// A new scan of the table (one per table reference in the query).
    fn add_scan(&self) -> usize {
        self.scans.fetch_add(1, std::sync::atomic::Ordering::AcqRel)
    }

    /// The next batch of the epoch for scan `scan` from reader `part` (of a
    /// split source): with several scans, each batch read is kept for the
    /// others until they take it.
    async fn next_for(
        &self,
        scan: usize,
        part: usize,
    ) -> Option<Result<RecordBatch, DataFusionError>> {
        // a split source has one scan (`widen_scan`)
        let scans = self.scans.load(std::sync::atomic::Ordering::Acquire);
        if scans <= 1 {
            return self.next_of(part).await;
        }
        let mut t = self.tee.lock().await;
        t.queues.resize_with(scans, Default::default);
        if let Some(b) = t.queues.get_mut(scan).and_then(|q| q.pop_front()) {
            return Some(Ok(b));
        }
        let r = self.next_batch().await;
        if let Some(Ok(b)) = &r {
            for (i, q) in t.queues.iter_mut().enumerate() {
                if i != scan {
                    q.push_back(b.clone());
                }
            }
        }
        r
    }

    async fn next_batch(&self) -> Option<Result<RecordBatch, DataFusionError>> {
        self.next_of(0).await
    }

    /// The next batch of the epoch from reader `part`.
    async fn next_of(&self, part: usize) -> Option<Result<RecordBatch, DataFusionError>> {
        let r = self.read_batch(part).await;
        if r.is_none() {
            let exhausted = self.is_finished().await;
            self.end_of_input(exhausted);
        }
        r
    }

    /// The feed's readers.
    fn readers(&self) -> Vec<Arc<Mutex<Reader>>> {
        self.readers.lock().expect("readers lock").clone()
    }

    /// Reads the source with `n` readers, one per scan partition, if it can
    /// be split and has not been read yet: each reader delivers its own
    /// share, and the watermark is the minimum over them (each holds it
    /// back until it delivers, as a part of a source does). Whether the
    /// feed is read in `n` parts.
    fn split(&self, n: usize) -> bool {
        if n <= 1 || !self.source.splittable() || self.source.resumable() {
            return false;
        }
        let mut readers = self.readers.lock().expect("readers lock");
        let unread = readers.len() == 1
            && readers[0]
                .try_lock()
                .is_ok_and(|r| r.reader.is_none() && !r.exhausted);
        if !unread {
            return readers.len() == n;
        }
        let Ok(mut s) = self.state.try_lock() else {
            return false;
        };
        let names: Vec<Arc<str>> = (0..n).map(|i| Arc::from(format!("part {i}"))).collect();
        if let Some(tr) = s.tracker.as_mut() {
            tr.assign(&names, Instant::now());
        }
        s.part_records = vec![0; n];
        *readers = names
            .into_iter()
            .map(|name| {
                Arc::new(Mutex::new(Reader {
                    part: Some(name),
                    ..Default::default()
                }))
            })
            .collect();
        true
    }

    /// Reader `part` has ended: it no longer holds the watermark back.
    fn reader_ended(&self, s: &mut State, r: &mut Reader) {
        r.exhausted = true;
        s.ended += 1;
        if let (Some(tr), Some(name)) = (s.tracker.as_mut(), &r.part) {
            tr.forget(name);
            self.follow(tr, Instant::now());
        }
    }

    /// One batch of the epoch for reader `part`, as named phases: the
    /// reader opened at its first read; then until a batch is taken: the
    /// epoch's budget checked, the next batch (a rest cut off earlier, or
    /// the source's next event), cut to the room left, and admitted
    /// (counted, its event times read). `None` ends the reader's epoch.
    async fn read_batch(&self, part: usize) -> Option<Result<RecordBatch, DataFusionError>> {
        let (reader, parts) = {
            let readers = self.readers.lock().expect("readers lock");
            (readers.get(part)?.clone(), readers.len())
        };
        let mut r = reader.lock().await;
        if let Err(e) = self.ensure_open(&mut r, part, parts).await {
            return Some(Err(e));
        }
        loop {
            let (budget, records) = self.room_left(part).await?;
            let (batch, runs, whole) = match r.pending.take() {
                Some((b, runs)) => (b, runs, false),
                None if r.exhausted || self.ahead() => return None,
                None => match self.next_event(&mut r, &budget, records).await {
                    Next::Batch(b, runs, whole) => (b, runs, whole),
                    Next::Again => continue,
                    Next::End(out) => return out,
                },
            };
            // a rate-limited feed hands on a tenth of a second's worth at a time
            let (batch, runs) = match self.rate_chunk() {
                Some(chunk) if !whole && batch.num_rows() > chunk => {
                    keep_tail(&mut r, batch, runs, chunk)
                }
                _ => (batch, runs),
            };
            let mut s = self.state.lock().await;
            let (batch, runs) = fit(&mut s, &mut r, part, batch, runs, whole);
            if batch.num_rows() == 0 {
                continue;
            }
            let rows = batch.num_rows();
            match self.admit(&mut s, part, batch, runs) {
                Ok(b) if b.num_rows() == 0 => continue,
                Ok(b) => {
                    drop(s);
                    self.pace(&mut r, rows).await;
                    return Some(Ok(b));
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Opens reader `part` (of `parts`) at its first read.
    async fn ensure_open(
        &self,
        r: &mut Reader,
        part: usize,
        parts: usize,
    ) -> Result<(), DataFusionError> {
        if r.reader.is_some() || r.exhausted {
            return Ok(());
        }
        match self.open(part, parts) {
            Ok(reader) => {
                if let Some(c) = reader.committer() {
                    self.state.lock().await.committer = Some(c);
                }
                r.reader = Some(reader);
                Ok(())
            }
            Err(e) => {
                let msg = format!("Failed to create source '{}': {e}", self.name);
                let mut s = self.state.lock().await;
                s.fatal = Some((e.kind(), msg.clone()));
                self.reader_ended(&mut s, r);
                Err(DataFusionError::External(msg.into()))
            }
        }
    }

    /// The epoch's budget and the records read so far, or `None` when the
    /// epoch is full (or stopping, with records read).
    async fn room_left(&self, part: usize) -> Option<(Budget, usize)> {
        let s = self.state.lock().await;
        let b = &s.budget;
        if (*self.shutdown.borrow() && s.records > 0)
            || b.max_records.is_some_and(|m| s.room(m, part) == 0)
            || b.max_bytes.is_some_and(|m| s.bytes >= m)
            || b.max_batches.is_some_and(|m| s.batches >= m)
        {
            return None;
        }
        Some((b.clone(), s.records))
    }

    /// The source's next event, waited for until the epoch's deadline (an
    /// eager epoch with records takes only what is ready), and what it
    /// means for the epoch.
    async fn next_event(&self, r: &mut Reader, budget: &Budget, records: usize) -> Next {
        let mut shutdown = self.shutdown.clone();
        let reader = r.reader.as_mut().expect("opened first");
        let event = if budget.eager && records > 0 {
            match reader.try_next() {
                Ok(ev) => Some(ev),
                Err(true) => None,
                Err(false) => return Next::End(None), // nothing ready: close the eager epoch
            }
        } else {
            let deadline = budget.deadline;
            let sleep = async move {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = reader.next() => ev,
                _ = sleep => return Next::End(None),
                _ = shutdown.wait_for(|v| *v) => return Next::End(None),
            }
        };
        let mut s = self.state.lock().await;
        match event {
            None => {
                self.reader_ended(&mut s, r);
                Next::End(None)
            }
            // a part of a split source is one part of the watermark
            Some(SourceEvent::Batch(b)) => {
                let runs = r.part.clone().map(|p| vec![(p, b.num_rows())]);
                Next::Batch(b, runs, false)
            }
            Some(SourceEvent::Positioned(b, pos)) => {
                // never split: the epoch's position is its last batch's
                s.position = Some(pos);
                Next::Batch(b, None, true)
            }
            Some(SourceEvent::Parts {
                batch,
                position,
                parts,
            }) => {
                let whole = position.is_some();
                if let Some(pos) = position {
                    s.position = Some(pos);
                }
                Next::Batch(batch, Some(parts), whole)
            }
            Some(SourceEvent::PartsAssigned(parts)) => {
                if let Some(tr) = s.tracker.as_mut() {
                    tr.assign(&parts, Instant::now());
                }
                Next::Again
            }
            Some(SourceEvent::Bad(rec)) => {
                Counters::add(&self.counters.records_failed, 1);
                Counters::add(&self.mine.failed, 1);
                match self.policy {
                    BadRecordPolicy::Collect => {
                        s.bad.push(rec);
                        Next::Again
                    }
                    BadRecordPolicy::Fail => {
                        let msg = rec.to_string();
                        s.bad.push(rec);
                        Next::End(Some(Err(DataFusionError::External(Box::new(
                            BadRecordError(msg),
                        )))))
                    }
                }
            }
            Some(SourceEvent::Error(e)) => {
                s.fatal = Some((e.kind(), e.to_string()));
                self.reader_ended(&mut s, r);
                Next::End(Some(Err(DataFusionError::External(
                    format!("source '{}': {e}", self.name).into(),
                ))))
            }
        }
    }

    /// Counts a batch into the epoch and reads its event times.
    fn admit(
        &self,
        s: &mut State,
        part: usize,
        batch: RecordBatch,
        runs: Option<PartRuns>,
    ) -> Result<RecordBatch, DataFusionError> {
        if s.first_read.is_none() && batch.num_rows() > 0 {
            s.first_read = Some(std::time::Instant::now());
        }
        s.records += batch.num_rows();
        s.part_records[part] += batch.num_rows();
        s.batches += 1;
        s.bytes += batch.get_array_memory_size() as u64;
        Counters::add(&self.counters.records_in, batch.num_rows() as u64);
        self.apply_time(s, batch, runs)
    }
}

/// What the source's next event means for the epoch being read.
enum Next {
    /// A batch, with its parts, and whether it carries the epoch's position
    /// (then it is never cut).
    Batch(RecordBatch, Option<PartRuns>, bool),
    /// Nothing to take: read again.
    Again,
    /// The reader's epoch ends here, or fails.
    End(Option<Result<RecordBatch, DataFusionError>>),
}

/// `batch` cut to the room the epoch has left (the other readers may have
/// filled it meanwhile); the rest waits in the reader for the next epoch.
fn fit(
    s: &mut State,
    r: &mut Reader,
    part: usize,
    batch: RecordBatch,
    runs: Option<PartRuns>,
    whole: bool,
) -> (RecordBatch, Option<PartRuns>) {
    let Some(max) = s.budget.max_records.filter(|_| !whole) else {
        return (batch, runs);
    };
    let room = s.room(max, part);
    if batch.num_rows() <= room {
        return (batch, runs);
    }
    keep_tail(r, batch, runs, room)
}

/// The first `at` rows of `batch` (with their parts); the rest waits in
/// the reader for the next read.
fn keep_tail(
    r: &mut Reader,
    batch: RecordBatch,
    runs: Option<PartRuns>,
    at: usize,
) -> (RecordBatch, Option<PartRuns>) {
    let (head, tail) = match runs {
        Some(runs) => {
            let (h, t) = split_runs(runs, at);
            (Some(h), Some(t))
        }
        None => (None, None),
    };
    r.pending = Some((batch.slice(at, batch.num_rows() - at), tail));
    (batch.slice(0, at), head)
}

/// Where a feed's time stood at a commit: its watermark and the highest
/// event time of each of its parts.
#[derive(Debug, Clone)]
pub struct FeedMark {
    watermark: i64,
    tracker: Option<WatermarkTracker>,
}

/// The error a FailBatch bad record raises inside the plan.
#[derive(Debug)]
pub struct BadRecordError(pub String);

impl std::fmt::Display for BadRecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadRecordError {}

/// The scan side: one DataFusion partition reading the feed for one epoch
/// (the feed, which of its scans this is, and which of its readers).
#[derive(Debug)]
pub struct FeedPartition(pub Arc<EpochFeed>, pub usize, pub usize);

impl PartitionStream for FeedPartition {
    fn schema(&self) -> &SchemaRef {
        &self.0.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (feed, scan, part) = (self.0.clone(), self.1, self.2);
        let stream = futures::stream::unfold(feed, move |feed| async move {
            feed.next_for(scan, part).await.map(|r| (r, feed))
        });
        Box::pin(RecordBatchStreamAdapter::new(self.0.schema.clone(), stream))
    }
}

/// `plan` with its scan of one of `feeds` read by `n` partitions at once,
/// when only projections and filters sit between `plan` and the scan and
/// the stream has no other scan, so the operators above the scan (filters,
/// projections, the hash routing of a partitioned GROUP BY) run on `n`
/// cores. A source that can be split (the generator) is read by a reader
/// per partition; from any other each partition pulls the epoch's next
/// batch of the one reader (time, lateness and positions are still applied
/// there, in read order). None for anything else (joins, limits, a
/// self-join's shared scan).
pub fn widen_scan(
    plan: &Arc<dyn ExecutionPlan>,
    feeds: &[Arc<EpochFeed>],
    n: usize,
) -> Option<Arc<dyn ExecutionPlan>> {
    if n <= 1 {
        return None;
    }
    if let Some(scan) = plan.downcast_ref::<StreamingTableExec>() {
        let [part] = &scan.partitions()[..] else {
            return None;
        };
        let feed = feeds.iter().find(|f| f.owns(part.schema()))?;
        if scan.limit().is_some() || feed.scans.load(std::sync::atomic::Ordering::Acquire) != 1 {
            return None;
        }
        let split = feed.split(n);
        let parts = (0..n)
            .map(|i| {
                let part = if split { i } else { 0 };
                Arc::new(FeedPartition(feed.clone(), 0, part)) as Arc<dyn PartitionStream>
            })
            .collect();
        let projection = scan.projection().as_ref().map(|p| p.to_vec());
        let wide = StreamingTableExec::try_new(
            feed.schema.clone(),
            parts,
            projection.as_ref(),
            scan.projected_output_ordering(),
            scan.is_infinite(),
            None,
        )
        .ok()?;
        return Some(Arc::new(wide));
    }
    if !matches!(
        plan.name(),
        "ProjectionExec" | "FilterExec" | "CoalesceBatchesExec" | "CooperativeExec"
    ) {
        return None;
    }
    let [child] = &plan.children()[..] else {
        return None;
    };
    let wide = widen_scan(child, feeds, n)?;
    use datafusion::physical_plan::execution_plan::{
        ChildrenPropertiesMode, ReplaceChildrenOptions,
    };
    // the partitioning changes: properties are recomputed
    plan.clone()
        .replace_children(
            vec![wide],
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
        .ok()
}

/// A stream whose watermark has not moved for this long no longer holds
/// the job's other streams back (they read ahead of it).
const ALIGN_IDLE: Duration = Duration::from_secs(5);

/// Default epoch timeout for unbounded sources.
pub const DEFAULT_UNBOUNDED_TIMEOUT: Duration = Duration::from_millis(1000);

/// The driving source as a DataFusion table: each scan tells the feed which
/// columns it reads, so the source decodes only those.
#[derive(Debug)]
pub struct SourceTable {
    feed: Arc<EpochFeed>,
    infinite: bool,
}

impl SourceTable {
    /// A table over `feed`; `infinite` keeps it on the probe side of joins.
    pub fn new(feed: Arc<EpochFeed>, infinite: bool) -> Self {
        Self { feed, infinite }
    }
}

#[async_trait::async_trait]
impl datafusion::catalog::TableProvider for SourceTable {
    fn schema(&self) -> SchemaRef {
        self.feed.schema.clone()
    }

    fn table_type(&self) -> datafusion::logical_expr::TableType {
        datafusion::logical_expr::TableType::Base
    }

    /// Every filter goes to the source as a hint (inexact: the query still
    /// applies it), so a file source can skip what it rules out.
    fn supports_filters_pushdown(
        &self,
        filters: &[&datafusion::logical_expr::Expr],
    ) -> datafusion::error::Result<Vec<datafusion::logical_expr::TableProviderFilterPushDown>> {
        Ok(vec![
            datafusion::logical_expr::TableProviderFilterPushDown::Inexact;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        _state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[datafusion::logical_expr::Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        self.feed.note_projection(projection);
        self.feed.note_filters(filters);
        let exec = datafusion::physical_plan::streaming::StreamingTableExec::try_new(
            self.feed.schema.clone(),
            vec![Arc::new(FeedPartition(
                self.feed.clone(),
                self.feed.add_scan(),
                0,
            ))],
            projection,
            Vec::<datafusion::physical_expr::LexOrdering>::new(),
            self.infinite,
            limit,
        )?;
        Ok(Arc::new(exec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use velo_config::time::{EventTime, LateData, TimeFormat};

    /// A source that replays scripted events.
    #[derive(Debug)]
    struct Scripted {
        schema: SchemaRef,
        events: std::sync::Mutex<Vec<SourceEvent>>,
    }

    impl Source for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn schema(&self) -> SchemaRef {
            self.schema.clone()
        }
        fn is_bounded(&self) -> bool {
            true
        }
        fn open(
            &self,
            _batch_size: usize,
            _projection: Option<&[usize]>,
        ) -> velo_connectors::Result<SourceReader> {
            let events = std::mem::take(&mut *self.events.lock().unwrap());
            let (tx, rx) = tokio::sync::mpsc::channel(events.len().max(1));
            for e in events {
                tx.try_send(e).unwrap();
            }
            Ok(SourceReader::new(rx))
        }
        fn describe(&self) -> String {
            "scripted".into()
        }
    }

    fn parted(schema: &SchemaRef, rows: &[(&str, i64)]) -> SourceEvent {
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.1),
            ))],
        )
        .unwrap();
        let mut parts: PartRuns = Vec::new();
        for (p, _) in rows {
            match parts.last_mut() {
                Some((q, n)) if q.as_ref() == *p => *n += 1,
                _ => parts.push((Arc::from(*p), 1)),
            }
        }
        SourceEvent::Parts {
            batch,
            position: None,
            parts,
        }
    }

    /// A feed over `source` reading event time from its `ts` column, no
    /// lateness allowed, parts idle after `idle`; with its counters and the
    /// shutdown sender (the feed stops when it is dropped).
    fn ts_feed(
        source: Arc<dyn Source>,
        idle: Option<Duration>,
    ) -> (
        Arc<EpochFeed>,
        Arc<Counters>,
        tokio::sync::watch::Sender<bool>,
    ) {
        let counters = Counters::new();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let time = TimeMode::Event(EventTime {
            field: "ts".into(),
            format: TimeFormat::EpochMillis,
            max_out_of_orderness: Duration::ZERO,
            idle_timeout: idle,
            late: LateData::Drop,
        });
        let feed = EpochFeed::new(
            source,
            100,
            BadRecordPolicy::Collect,
            counters.clone(),
            rx,
            Some(time),
        )
        .unwrap();
        (feed, counters, tx)
    }

    #[test]
    fn runs_split_at_any_row() {
        let runs: PartRuns = vec![(Arc::from("a"), 3), (Arc::from("b"), 2)];
        let names = |r: &PartRuns| {
            r.iter()
                .map(|(p, n)| format!("{p}{n}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let (h, t) = split_runs(runs.clone(), 2);
        assert_eq!((names(&h).as_str(), names(&t).as_str()), ("a2", "a1,b2"));
        let (h, t) = split_runs(runs.clone(), 3);
        assert_eq!((names(&h).as_str(), names(&t).as_str()), ("a3", "b2"));
        let (h, t) = split_runs(runs, 4);
        assert_eq!((names(&h).as_str(), names(&t).as_str()), ("a3,b1", "b1"));
    }

    /// A split generator is read by a reader per partition: each is a part
    /// of the watermark, so one racing ahead makes none of the other's
    /// records late, and an ended part no longer holds the watermark.
    #[tokio::test]
    async fn split_readers_each_hold_the_watermark() {
        use velo_connectors::datagen::config::{ColumnKind, ColumnSpec};
        use velo_connectors::datagen::{DatagenConfig, DatagenSource};
        let cfg = DatagenConfig {
            columns: vec![ColumnSpec {
                name: "ts".into(),
                kind: ColumnKind::Timestamp(1),
            }],
            rows: Some(4_000),
            rate: None,
            seed: 1,
            batch_size: 100,
            start_time: 0,
            null_rate: 0.0,
        };
        let (feed, counters, _running) = ts_feed(Arc::new(DatagenSource::new("g", cfg)), None);
        assert!(feed.split(2), "the generator splits");
        assert!(feed.split(2), "planning again keeps the split");
        assert!(
            !feed.split(3),
            "a feed read in two parts is not read in three"
        );
        let wm = feed.watermark();
        // an epoch of 1,000 records: each reader reads its half
        feed.begin_epoch(Budget {
            max_records: Some(1_000),
            ..Default::default()
        })
        .await;
        let mut rows = 0;
        while let Some(b) = feed.next_of(0).await {
            rows += b.unwrap().num_rows();
        }
        assert_eq!(rows, 500, "part 0 stops at its share of the epoch");
        feed.begin_epoch(Budget::default()).await;
        while let Some(b) = feed.next_of(0).await {
            rows += b.unwrap().num_rows();
            assert_eq!(wm.get(), Watermark::NONE, "part 1 has not delivered");
        }
        assert_eq!(rows, 2_000, "part 0: every other block");
        assert!(!feed.is_finished().await, "part 1 has not ended");
        let first = feed.next_of(1).await.unwrap().unwrap();
        assert_eq!(first.num_rows(), 100, "part 1's first block is not late");
        assert_eq!(wm.get(), 199, "part 1 alone holds the watermark");
        while let Some(b) = feed.next_of(1).await {
            rows += b.unwrap().num_rows();
        }
        assert_eq!(rows + 100, 4_000, "every row once");
        assert_eq!(Counters::get(&counters.records_late), 0);
        assert!(feed.is_finished().await);
        assert_eq!(wm.get(), Watermark::END);
    }

    /// The watermark is the minimum over the parts: a part that lags holds
    /// it back (its records are not late), until it is idle.
    #[tokio::test]
    async fn watermark_is_the_minimum_over_parts_until_one_is_idle() {
        let schema: SchemaRef =
            Arc::new(Schema::new(vec![Field::new("ts", DataType::Int64, false)]));
        let events = vec![
            // both partitions assigned: p1 holds the watermark before it
            // delivers anything
            SourceEvent::PartsAssigned(vec![Arc::from("p0"), Arc::from("p1")]),
            parted(&schema, &[("p0", 1_000), ("p0", 2_000)]),
            parted(&schema, &[("p1", 500)]),
            parted(&schema, &[("p0", 10_000)]),
            // p1 is behind p0 but not behind the watermark: not late
            parted(&schema, &[("p1", 600), ("p0", 10_100)]),
            // 550 is behind the watermark (600): late
            parted(&schema, &[("p1", 550)]),
            // after p1 is idle, p0 alone moves the watermark
            parted(&schema, &[("p0", 11_000)]),
        ];
        let source = Arc::new(Scripted {
            schema: schema.clone(),
            events: std::sync::Mutex::new(events),
        });
        let (feed, counters, _running) = ts_feed(source, Some(Duration::from_millis(300)));
        let wm = feed.watermark();
        // one source batch per epoch; rows delivered
        async fn next(feed: &EpochFeed) -> usize {
            feed.begin_epoch(Budget {
                max_batches: Some(1),
                ..Default::default()
            })
            .await;
            match feed.next_batch().await {
                Some(b) => b.unwrap().num_rows(),
                None => 0,
            }
        }
        assert_eq!(next(&feed).await, 2);
        assert_eq!(wm.get(), Watermark::NONE, "p1 has not delivered yet");
        assert_eq!(next(&feed).await, 1);
        assert_eq!(wm.get(), 500, "p1 holds the watermark at 500");
        assert_eq!(next(&feed).await, 1);
        assert_eq!(wm.get(), 500, "p0 alone cannot move it");
        assert_eq!(next(&feed).await, 2, "p1's 600 is not late");
        assert_eq!(wm.get(), 600);
        // 550 < 600: late, dropped and counted
        assert_eq!(next(&feed).await, 0);
        assert_eq!(Counters::get(&counters.records_late), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(next(&feed).await, 1);
        assert_eq!(wm.get(), 11_000, "idle p1 no longer holds the watermark");
    }
}
