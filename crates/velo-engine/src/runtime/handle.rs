//! A job a host owns: started as a task, watched through a live status
//! (records in and out per source and sink, epochs, watermark, state rows,
//! memory, last error), stopped after the epoch it is in has committed, and
//! waited for. `velo run` runs its jobs through handles; the job server
//! hosts many.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use tokio::task::JoinHandle;

use super::Shutdown;
use super::job::run_job;
use crate::feed::EpochFeed;
use crate::plan::PreparedJob;
use crate::stats::{Counters, JobExecutionStats};
use crate::{EngineError, Result};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Creating its sinks, restoring its checkpoint, loading lookups.
    Starting,
    /// Reading and committing epochs.
    Running,
    /// Asked to stop: finishing the epoch it is in.
    Stopping,
    /// Its input ended or it was stopped; everything read was committed.
    Finished,
    /// It stopped on an error ([`JobStatus::last_error`]).
    Failed,
}

/// A job's status at one moment.
#[derive(Debug, Clone)]
pub struct JobStatus {
    /// The job's name.
    pub job: String,
    /// Where it is in its life.
    pub state: JobState,
    /// Since it was started.
    pub elapsed: Duration,
    /// Epochs committed.
    pub epochs: u64,
    /// Epochs that failed (read again, discarded, or the job's last).
    pub epochs_failed: u64,
    /// When the last epoch committed (ms since the Unix epoch).
    pub committed_at_ms: Option<i64>,
    /// Records read per source (lookup tables: rows loaded).
    pub records_in: BTreeMap<String, u64>,
    /// Records written per sink (published or in the epoch under way).
    pub records_out: BTreeMap<String, u64>,
    /// Each sink's health and circuit.
    pub sink_health: BTreeMap<String, crate::circuit::SinkHealth>,
    /// Per source, the lag of each part (Kafka: `topic/partition` ->
    /// records between the committed offset and the partition's end).
    pub source_lag: BTreeMap<String, BTreeMap<String, i64>>,
    /// Bad records and records of failed epochs.
    pub records_failed: u64,
    /// Records behind the watermark.
    pub records_late: u64,
    /// Bad records written to the dead-letter sink.
    pub records_dead_lettered: u64,
    /// Per source (of the job's sources and lookup tables): its bad, late
    /// and dead-lettered records.
    pub source_records: BTreeMap<String, crate::stats::SourceTotals>,
    /// The error each source that failed ended with.
    pub source_errors: BTreeMap<String, String>,
    /// Each stream's own event-time watermark (ms since the epoch), once
    /// it has one (the job's is the slowest of them).
    pub source_watermarks: BTreeMap<String, i64>,
    /// The watermark of the driving stream (ms since the epoch), once there
    /// is one.
    pub watermark: Option<i64>,
    /// Rows the streaming operators keep: window groups, join rows,
    /// row-window rows.
    pub state_rows: u64,
    /// Bytes the streaming operators keep.
    pub memory_bytes: u64,
    /// The error the job failed with, or the last epoch failure it
    /// recovered from.
    pub last_error: Option<String>,
}

/// One committed epoch's output, as every sink published it (an updating
/// result's rows with their `_op`).
#[derive(Debug)]
pub struct Published {
    /// The job.
    pub job: String,
    /// The epoch.
    pub epoch: u64,
    /// Its rows.
    pub batches: Vec<RecordBatch>,
}

/// Where a job sends each committed epoch's output, for a host's
/// subscribers (a server's `EMIT CHANGES` queries). The job keeps an
/// epoch's rows only while someone subscribes; a subscriber that falls
/// more than the channel's capacity behind is told it lagged.
pub type Tap = tokio::sync::broadcast::Sender<Arc<Published>>;

/// What the status reads of a sink.
struct LiveSink {
    name: String,
    written: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    circuit: Arc<crate::circuit::Circuit>,
    write_seconds: Arc<crate::stats::Histogram>,
    commit_seconds: Arc<crate::stats::Histogram>,
}

/// What the running job shares with its handle.
pub(crate) struct Live {
    name: String,
    started: Instant,
    counters: Arc<Counters>,
    metrics: Arc<crate::operators::metrics::WindowMetrics>,
    /// The job's plan: its operators' `state_bytes` metrics.
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    /// Every stream's feed, the driving one first, with its records read
    /// in committed or failed epochs.
    streams: Vec<(String, Arc<EpochFeed>, AtomicU64)>,
    lookups: BTreeMap<String, u64>,
    /// Each sink's records written and failed and its health, once the
    /// sinks exist.
    sinks: Mutex<Vec<LiveSink>>,
    state: Mutex<JobState>,
    last_error: Mutex<Option<String>>,
    /// The rows every sink receives: the query's, with `_op` for an
    /// updating result.
    output: SchemaRef,
    /// Each stream's position committer, once it has one (its lag).
    committers: Mutex<Vec<(String, Arc<dyn velo_connectors::PositionCommitter>)>>,
    /// A `CREATE TABLE` job's table (latest row per key).
    table: Option<Arc<crate::tables::Table>>,
    tap: Option<Tap>,
}

impl Live {
    fn new(p: &PreparedJob, tap: Option<Tap>) -> Arc<Self> {
        Arc::new(Self {
            output: p.output_schema(),
            committers: Mutex::default(),
            table: p.table.clone(),
            tap,
            name: p.plan.name.clone(),
            started: Instant::now(),
            counters: p.counters.clone(),
            metrics: p.window_metrics.clone(),
            plan: p.physical.clone(),
            streams: p
                .streams()
                .map(|(s, f)| (s.name().to_string(), f.clone(), AtomicU64::new(0)))
                .collect(),
            lookups: p.lookup_rows.clone(),
            sinks: Mutex::default(),
            state: Mutex::new(JobState::Starting),
            last_error: Mutex::default(),
        })
    }

    /// The sinks were created: their counts join the status.
    pub fn sinks_created<'a>(&self, sinks: impl Iterator<Item = &'a crate::fanout::SinkHandle>) {
        *self.sinks.lock().expect("status lock") = sinks
            .map(|s| LiveSink {
                name: s.name.clone(),
                written: s.written.clone(),
                failed: s.failed.clone(),
                circuit: s.circuit.clone(),
                write_seconds: s.write_seconds.clone(),
                commit_seconds: s.commit_seconds.clone(),
            })
            .collect();
        self.set_state(JobState::Running);
    }

    /// Whether someone subscribes to the job's committed epochs (the job
    /// then keeps each epoch's rows until its commit).
    pub fn tapped(&self) -> bool {
        self.tap.as_ref().is_some_and(|t| t.receiver_count() > 0)
    }

    /// Epoch `epoch` was published with `rows`: to the subscribers.
    pub fn published(&self, epoch: u64, rows: &[RecordBatch]) {
        if let Some(t) = self.tap.as_ref().filter(|t| t.receiver_count() > 0) {
            // no subscriber left between the two calls is no error
            let _ = t.send(Arc::new(Published {
                job: self.name.clone(),
                epoch,
                batches: rows.to_vec(),
            }));
        }
    }

    /// The streams' position committers as of the last commit, by stream
    /// (as `PreparedJob::streams`).
    pub fn committers(
        &self,
        c: impl Iterator<Item = Option<Arc<dyn velo_connectors::PositionCommitter>>>,
    ) {
        let names = self.streams.iter().map(|(n, _, _)| n.clone());
        *self.committers.lock().expect("status lock") =
            names.zip(c).filter_map(|(n, c)| Some((n, c?))).collect();
    }

    /// Stream `i` (as `PreparedJob::streams`) read `n` more records.
    pub fn read(&self, i: usize, n: u64) {
        self.streams[i].2.fetch_add(n, Relaxed);
    }

    /// An epoch failed with `e` (the job may recover).
    pub fn failed_epoch(&self, e: &EngineError) {
        *self.last_error.lock().expect("status lock") = Some(e.to_string());
    }

    /// The job ended with `r`.
    pub fn ended<T>(&self, r: &Result<T>) {
        match r {
            Ok(_) => self.set_state(JobState::Finished),
            Err(e) => {
                self.failed_epoch(e);
                self.set_state(JobState::Failed);
            }
        }
    }

    fn set_state(&self, s: JobState) {
        let mut state = self.state.lock().expect("status lock");
        // a stop asked stays asked until the job ends
        if !(*state == JobState::Stopping && s == JobState::Running) {
            *state = s;
        }
    }

    fn status(&self) -> JobStatus {
        let mut records_in = self.lookups.clone();
        if self.streams.len() == 1 {
            // one stream: the live count, within the epoch under way too
            records_in.insert(
                self.streams[0].0.clone(),
                Counters::get(&self.counters.records_in),
            );
        } else {
            for (name, _, n) in &self.streams {
                records_in.insert(name.clone(), n.load(Relaxed));
            }
        }
        let (records_out, sink_health) = {
            let sinks = self.sinks.lock().expect("status lock");
            let out = sinks
                .iter()
                .map(|s| (s.name.clone(), s.written.load(Relaxed)))
                .collect();
            let health = sinks
                .iter()
                .map(|s| {
                    let mut h = s.circuit.health();
                    h.records_failed = s.failed.load(Relaxed);
                    h.write_seconds = Some(s.write_seconds.snapshot());
                    h.commit_seconds = Some(s.commit_seconds.snapshot());
                    (s.name.clone(), h)
                })
                .collect();
            (out, health)
        };
        let m = &self.metrics;
        let wm = self.streams[0].1.watermark().get();
        JobStatus {
            job: self.name.clone(),
            state: *self.state.lock().expect("status lock"),
            elapsed: self.started.elapsed(),
            epochs: Counters::get(&self.counters.epochs),
            epochs_failed: Counters::get(&self.counters.epochs_failed),
            committed_at_ms: Some(self.counters.committed_at_ms.load(Relaxed)).filter(|t| *t > 0),
            records_in,
            records_out,
            sink_health,
            source_lag: self
                .committers
                .lock()
                .expect("status lock")
                .iter()
                .map(|(n, c)| (n.clone(), c.lag().into_iter().collect()))
                .filter(|(_, l): &(String, BTreeMap<String, i64>)| !l.is_empty())
                .collect(),
            records_failed: Counters::get(&self.counters.records_failed),
            records_late: Counters::get(&self.counters.records_late),
            records_dead_lettered: Counters::get(&self.counters.records_dead_lettered),
            source_records: {
                let known = |n: &String| {
                    self.lookups.contains_key(n) || self.streams.iter().any(|(s, _, _)| s == n)
                };
                self.counters
                    .sources()
                    .into_iter()
                    .filter(|(n, _)| known(n))
                    .collect()
            },
            source_watermarks: self
                .streams
                .iter()
                .filter_map(|(n, f, _)| {
                    let w = f.watermark().get();
                    let known =
                        w != crate::time::Watermark::NONE && w != crate::time::Watermark::END;
                    known.then(|| (n.clone(), w))
                })
                .collect(),
            source_errors: self
                .streams
                .iter()
                .filter_map(|(n, f, _)| f.failure().map(|e| (n.clone(), e)))
                .collect(),
            watermark: Some(wm).filter(|w| {
                *w != crate::time::Watermark::NONE && *w != crate::time::Watermark::END
            }),
            state_rows: m.groups.load(Relaxed)
                + m.join_rows.load(Relaxed)
                + m.row_rows.load(Relaxed),
            memory_bytes: state_bytes(&self.plan),
            last_error: self.last_error.lock().expect("status lock").clone(),
        }
    }
}

/// The bytes the streaming operators of `plan` hold (their reservations of
/// the memory pool).
fn state_bytes(plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>) -> u64 {
    let own = plan
        .metrics()
        .and_then(|m| m.sum_by_name("state_bytes"))
        .map_or(0, |v| v.as_usize() as u64);
    own + plan.children().into_iter().map(state_bytes).sum::<u64>()
}

/// The status and stop of a started job, cheap to clone, apart from the
/// [`JobHandle`] that waits for it.
#[derive(Clone)]
pub struct JobMonitor {
    live: Arc<Live>,
    shutdown: Shutdown,
}

impl JobMonitor {
    /// The job's name.
    pub fn name(&self) -> &str {
        &self.live.name
    }

    /// The job's status now.
    pub fn status(&self) -> JobStatus {
        let mut s = self.live.status();
        if s.state == JobState::Running && self.shutdown.is_triggered() {
            s.state = JobState::Stopping;
        }
        s
    }

    /// How long the job's committed epochs took ([`Counters::epoch_seconds`]).
    pub fn epoch_seconds(&self) -> crate::stats::HistogramSnapshot {
        self.live.counters.epoch_seconds.snapshot()
    }

    /// How long the first record of each committed epoch waited from
    /// being read to its commit ([`Counters::latency_seconds`]).
    pub fn latency_seconds(&self) -> crate::stats::HistogramSnapshot {
        self.live.counters.latency_seconds.snapshot()
    }

    /// The rows the job writes: the query's, with `_op` for an updating
    /// result.
    pub fn output_schema(&self) -> SchemaRef {
        self.live.output.clone()
    }

    /// A `CREATE TABLE` job's table: the latest row per key as of its last
    /// committed epoch.
    pub fn table(&self) -> Option<Arc<crate::tables::Table>> {
        self.live.table.clone()
    }

    /// How long its checkpoints took, and the bytes of the last one
    /// ([`Counters::checkpoint_seconds`]).
    pub fn checkpoints(&self) -> (crate::stats::HistogramSnapshot, u64) {
        let c = &self.live.counters;
        (
            c.checkpoint_seconds.snapshot(),
            c.checkpoint_bytes.load(Relaxed),
        )
    }

    /// Asks the job to commit the epoch it is in and stop.
    pub fn stop(&self) {
        self.live.set_state(JobState::Stopping);
        self.shutdown.trigger();
    }
}

/// A started job.
pub struct JobHandle {
    live: Arc<Live>,
    shutdown: Shutdown,
    task: JoinHandle<Result<JobExecutionStats>>,
}

impl JobHandle {
    /// Starts `p` as a task on the current runtime's workers (not on the
    /// caller's thread: the plan's partitions hand their batches to the job
    /// loop without waking one more thread). `shutdown` is the one `p` was
    /// prepared with.
    pub fn start(p: PreparedJob, shutdown: Shutdown) -> Self {
        Self::start_tapped(p, shutdown, None)
    }

    /// [`Self::start`], sending each committed epoch's output to `tap`
    /// while it has receivers.
    pub fn start_tapped(p: PreparedJob, shutdown: Shutdown, tap: Option<Tap>) -> Self {
        let live = Live::new(&p, tap);
        let task = tokio::spawn(run_job(p, shutdown.clone(), live.clone()));
        Self {
            live,
            shutdown,
            task,
        }
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.live.name
    }

    /// The job's live counters (the progress line).
    pub fn counters(&self) -> Arc<Counters> {
        self.live.counters.clone()
    }

    /// The job's status now.
    pub fn status(&self) -> JobStatus {
        let mut s = self.monitor().status();
        let ended = matches!(s.state, JobState::Finished | JobState::Failed);
        if !ended && self.task.is_finished() {
            // the job's task ended without saying how: it panicked
            s.state = JobState::Failed;
        }
        s
    }

    /// Asks the job to commit the epoch it is in and stop. Jobs prepared
    /// with the same [`Shutdown`] stop together.
    pub fn stop(&self) {
        self.monitor().stop();
    }

    /// A watcher of the job that a host keeps while a task of its own
    /// [`wait`](Self::wait)s for the job.
    pub fn monitor(&self) -> JobMonitor {
        JobMonitor {
            live: self.live.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Waits for the job to end: its stats, or the error it stopped with.
    pub async fn wait(self) -> Result<JobExecutionStats> {
        let name = self.live.name.clone();
        let r = match self.task.await {
            Ok(r) => r,
            Err(e) if e.is_panic() => Err(EngineError::Internal(format!(
                "job '{name}' panicked: {}",
                velo_connectors::source::panic_text(e.into_panic().as_ref())
            ))),
            Err(e) => Err(EngineError::Internal(format!(
                "job '{name}' was cancelled: {e}"
            ))),
        };
        self.live.ended(&r);
        r
    }
}
