//! One job's run: sinks created, state restored from the last checkpoint,
//! then epoch after epoch — read, execute, fan out, then prepare,
//! checkpoint and commit ([`super::commit`]) or recover from the failure
//! ([`super::recover`]) — until its input ends or it is asked to stop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::execute_stream;
use futures::StreamExt;
use velo_config::{FailureStrategy, JobConfig};
use velo_connectors::{BadRecord, Position};

use super::Shutdown;
use super::budget::{Adaptive, budget};
use super::handle::Live;
use super::outputs::{Outputs, dlq_batch};
use super::recover::{Committed, Failed, Next, after_failure, epoch_error};
use crate::changelog::Changelog;
use crate::checkpoint::StateStore;
use crate::plan::{JobPlan, PreparedJob};
use crate::stats::{Counters, JobExecutionStats};
use crate::{EngineError, Result};

/// Marks a `CREATE TABLE` job's table ready when the job ends, however it
/// ends, so that readers never wait for a job that is gone.
struct ReadyOnDrop(Option<Arc<crate::tables::Table>>);

impl Drop for ReadyOnDrop {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.mark_ready();
        }
    }
}

/// Runs one prepared job to the end of its input (or until shutdown),
/// telling `live` how it goes.
pub(crate) async fn run_job(
    p: PreparedJob,
    shutdown: Shutdown,
    live: Arc<Live>,
) -> Result<JobExecutionStats> {
    let r = run(p, shutdown, live.clone()).await;
    live.ended(&r);
    r
}

/// [`run_job`]'s phases.
async fn run(p: PreparedJob, shutdown: Shutdown, live: Arc<Live>) -> Result<JobExecutionStats> {
    let started = Instant::now();
    let _ready = ReadyOnDrop(p.table.clone());
    for l in &p.lookups {
        l.wait_ready(shutdown.receiver()).await;
    }
    let mut run = JobRun::start(p, shutdown, live).await?;
    run.restore().await?;
    run.remember_committed().await?;
    while run.epoch().await? == Flow::Continue {}
    run.finish(started).await
}

/// Whether the job goes on after an epoch.
#[derive(Debug, PartialEq)]
enum Flow {
    Continue,
    Done,
}

/// A running job: what it was prepared with, its outputs, and what it has
/// committed so far.
pub(crate) struct JobRun {
    pub p: PreparedJob,
    pub shutdown: Shutdown,
    /// What the job's handle shows.
    pub live: Arc<Live>,
    /// The job's settings.
    pub job: JobConfig,
    /// The job's name.
    pub name: String,
    /// The changelog of an updating result (keys written so far).
    pub changelog: Option<Changelog>,
    pub out: Outputs,
    /// Where checkpoints go, for a job that commits through them.
    pub state_dir: Option<StateStore>,
    /// Whether a failed epoch can go back to the last committed one
    /// (retries, transactions): `last_committed` is kept.
    pub keep_committed: bool,
    pub last_committed: Option<Committed>,
    /// Per stream (as `p.streams()`, the driving one first): the position
    /// of the last committed epoch.
    pub committed: Vec<Option<Position>>,
    /// Per stream: the records read.
    read_per_stream: Vec<u64>,
    pub epoch: u64,
    pub failed_in_row: u32,
    pub checkpoints_written: u64,
    dead_lettered: u64,
    logged_bad: u64,
    pub records_unwritten: u64,
    adaptive: Adaptive,
    pub stats: JobExecutionStats,
    /// Every stream of the job is bounded.
    bounded: bool,
    task_ctx: Arc<TaskContext>,
}

/// What an epoch's execution produced.
struct Executed {
    /// The query's error, if it failed.
    error: Option<datafusion::error::DataFusionError>,
    /// The epoch's rows, kept when the job is a `CREATE TABLE` (applied to
    /// the table once published) or has subscribers (sent to them once
    /// published).
    table_rows: Vec<RecordBatch>,
}

/// What an epoch read.
pub(crate) struct Read {
    /// Records read from every stream.
    pub records: u64,
    /// Bad records of the sources and rows whose expressions failed.
    pub bad: Vec<BadRecord>,
}

impl JobRun {
    /// Phase: the job's changelog and sinks; whether it checkpoints.
    async fn start(p: PreparedJob, shutdown: Shutdown, live: Arc<Live>) -> Result<Self> {
        let job = p.plan.job.clone();
        let name = p.plan.name.clone();
        let changelog = if p.is_changelog() {
            Some(Changelog::new(&p.physical.schema(), &p.result_keys())?)
        } else {
            None
        };
        // as `PreparedJob::output_schema`, which the job's handle shows
        let schema = changelog
            .as_ref()
            .map(|c| c.schema())
            .unwrap_or_else(|| p.physical.schema());
        let out = Outputs::create(&p, schema).await?;
        live.sinks_created(out.all());
        if p.whole_input && (job.batch_size.is_some() || job.batch_timeout.is_some()) {
            tracing::info!(job = %name, "the query needs its whole bounded input (aggregate/sort/limit): running one epoch");
        }
        // a transactional job on a resumable source commits through a
        // checkpoint; so does any job with windows on one: the source
        // position may only move past records whose open windows are in the
        // checkpoint too
        let state_dir = if (out.transactional || !p.window_states.is_empty()) && resumes(&p) {
            Some(state_dir(&p.plan)?)
        } else {
            None
        };
        if out.transactional && job.state_dir.is_some() && !resumes(&p) {
            for (src, _) in p.streams().filter(|(s, _)| !s.resumable()) {
                tracing::warn!(
                    job = %name,
                    "source '{}' cannot resume from a position: a run restarted after a crash reads it again from the start and publishes its records again (exactly-once across a restart needs sources that resume: files with state.dir, Kafka)",
                    src.name()
                );
            }
        }
        let retry_epochs = job.failure_strategy == FailureStrategy::RetryWithBackoff;
        if state_dir.is_some() || (retry_epochs && rewindable(&p)) {
            for (src, f) in p.streams() {
                if !src.resumes_by_default() {
                    // a file source reports positions only when asked: from the start
                    f.set_resume(Position::default());
                }
            }
        }
        let streams = p.others.len() + 1;
        let bounded = p.streams().all(|(s, _)| s.is_bounded());
        Ok(Self {
            bounded,
            task_ctx: p.ctx.task_ctx(),
            adaptive: Adaptive::new(&job),
            stats: JobExecutionStats {
                job: name.clone(),
                ..Default::default()
            },
            keep_committed: out.transactional || retry_epochs,
            p,
            shutdown,
            live,
            job,
            name,
            changelog,
            out,
            state_dir,
            last_committed: None,
            committed: vec![None; streams],
            read_per_stream: vec![0; streams],
            epoch: 0,
            failed_in_row: 0,
            checkpoints_written: 0,
            dead_lettered: 0,
            logged_bad: 0,
            records_unwritten: 0,
        })
    }

    /// Phase: what a failed epoch goes back to, as the job starts.
    async fn remember_committed(&mut self) -> Result<()> {
        if self.keep_committed {
            self.last_committed =
                Some(Committed::take(&self.p, self.changelog.as_ref(), None).await?);
        }
        Ok(())
    }

    /// One epoch: read, execute and fan out, then commit it or recover
    /// from its failure.
    async fn epoch(&mut self) -> Result<Flow> {
        self.epoch += 1;
        let t0 = Instant::now();
        // with several streams, an operator over one of them may have read
        // its end before the others ended (the job's watermark was not the
        // end yet): one more epoch after all ended flushes it
        let ended_before = !self.p.others.is_empty() && self.p.is_finished().await;
        self.begin_reading().await;
        let begin_failed = self.begin_sinks().await?;
        let executed = self.execute().await;
        self.note_state_sizes();
        let mut phases = vec![("executed", t0.elapsed())];
        let read = self.take_read(executed.error.is_none()).await;
        match executed.error {
            Some(e) => self.execution_failed(e, &read).await?,
            None => {
                let committed = Counters::get(&self.p.counters.epochs);
                self.commit(
                    begin_failed,
                    read.records,
                    executed.table_rows,
                    &mut phases,
                    t0,
                )
                .await?;
                if Counters::get(&self.p.counters.epochs) > committed {
                    self.p.counters.epoch_seconds.observe(t0.elapsed());
                    let mut first: Option<Instant> = None;
                    for (_, f) in self.p.streams() {
                        if let Some(t) = f.first_read().await {
                            first = Some(first.map_or(t, |e| e.min(t)));
                        }
                    }
                    if let Some(t) = first {
                        self.p.counters.latency_seconds.observe(t.elapsed());
                    }
                }
            }
        }
        self.log_epoch(read.records, t0, &phases);
        self.adaptive.adapt(&self.job, t0.elapsed());
        // a whole-input query (aggregate, sort, limit) has answered after
        // its one epoch, even if a LIMIT stopped reading early
        let done = self.p.whole_input
            || (self.p.is_finished().await && (self.p.others.is_empty() || ended_before))
            || self.shutdown.is_triggered();
        Ok(if done { Flow::Done } else { Flow::Continue })
    }

    /// Read phase: lookup tables refreshed when due, every stream given the
    /// epoch's budget.
    async fn begin_reading(&self) {
        for l in &self.p.lookups {
            l.refresh_if_due(&self.p.counters, self.shutdown.receiver())
                .await;
        }
        let stateful = !self.p.window_states.is_empty();
        let budget = budget(
            &self.job,
            self.bounded,
            self.p.whole_input,
            stateful,
            &self.adaptive,
        );
        for (_, f) in self.p.streams() {
            f.begin_epoch(budget.clone()).await;
        }
    }

    /// Every sink begins the epoch; the sinks that failed to, for the
    /// commit to count as failed. The dead-letter sink failing stops the job.
    async fn begin_sinks(&self) -> Result<Vec<(String, crate::fanout::SinkFailure)>> {
        let epoch = self.epoch;
        let mut failed = Vec::new();
        for (n, r) in self.out.fan.each(|s| s.begin(epoch)).await {
            if let Err(e) = r {
                failed.push((n.to_string(), e));
            }
        }
        if let Some(d) = &self.out.dlq {
            d.begin(epoch)
                .await
                .map_err(|e| self.sink_error("dlq", e))?;
        }
        Ok(failed)
    }

    /// Execute and fan-out phase: the plan runs over what the streams
    /// deliver; each result batch (labelled by the changelog of an updating
    /// result) goes to every sink as it comes.
    async fn execute(&mut self) -> Executed {
        let mut seen = std::collections::HashSet::new();
        let mut table_rows = Vec::new();
        let keep = self.p.table.is_some() || self.live.tapped();
        let mut error = None;
        let plan = match datafusion::physical_plan::execution_plan::reset_plan_states(
            self.p.physical.clone(),
        ) {
            Ok(plan) => plan,
            Err(e) => {
                return Executed {
                    error: Some(e),
                    table_rows,
                };
            }
        };
        match execute_stream(plan.clone(), self.task_ctx.clone()) {
            Ok(mut stream) => {
                while let Some(r) = stream.next().await {
                    let r = match (r, self.changelog.as_mut()) {
                        (Ok(b), Some(c)) => c.label(&b, &mut seen),
                        (r, _) => r,
                    };
                    match r.and_then(|b| {
                        crate::rowerrors::without_unprintable_times(b, &self.p.dead_rows)
                    }) {
                        Ok(b) => {
                            self.stats.arrow_batches += 1;
                            self.emit(b, keep.then_some(&mut table_rows)).await;
                        }
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    }
                }
            }
            Err(e) => error = Some(e),
        }
        self.count_scans(&plan).await;
        if let (None, Some(c)) = (&error, self.changelog.as_mut()) {
            // keys whose groups the epoch removed
            match c.deletes(&self.p.window_states.take_changed(), &seen) {
                Ok(Some(b)) => self.emit(b, keep.then_some(&mut table_rows)).await,
                Ok(None) => {}
                Err(e) => error = Some(e),
            }
        }
        Executed { error, table_rows }
    }

    /// A plan that read the sources itself (a batch plan over listing
    /// tables): what its scans read, counted as the feeds count theirs.
    async fn count_scans(&mut self, plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>) {
        let Some(scans) = &self.p.scans else {
            return;
        };
        for (name, n) in scans.rows(plan).await {
            let feed = self
                .p
                .streams()
                .find(|(s, _)| s.name() == name)
                .map(|(_, f)| f.clone());
            match feed {
                Some(f) => f.read_outside(n).await,
                None => {
                    self.p.lookup_rows.insert(name, n);
                }
            }
        }
    }

    /// A result batch to every sink (and to the epoch's kept rows).
    async fn emit(&self, b: RecordBatch, kept: Option<&mut Vec<RecordBatch>>) {
        Counters::add(&self.p.counters.records_out, b.num_rows() as u64);
        self.out.fan.write(&b).await;
        if let Some(kept) = kept {
            kept.push(b);
        }
    }

    /// The peaks of the operators' state, for the run's stats.
    fn note_state_sizes(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let m = &self.p.window_metrics;
        let s = &mut self.stats;
        s.join_rows_peak = s.join_rows_peak.max(m.join_rows.load(Relaxed));
        s.row_keys_peak = s.row_keys_peak.max(m.row_keys.load(Relaxed));
        s.row_rows_peak = s.row_rows_peak.max(m.row_rows.load(Relaxed));
    }

    /// What the epoch read, its bad records logged and, unless the epoch
    /// failed under FailBatch, dead-lettered.
    async fn take_read(&mut self, executed: bool) -> Read {
        let mut records = 0u64;
        let mut bad = Vec::new();
        for (i, (_, f)) in self.p.streams().enumerate() {
            let n = f.epoch_records().await as u64;
            self.read_per_stream[i] += n;
            self.live.read(i, n);
            records += n;
            bad.extend(f.take_bad().await);
        }
        let dead = self.p.dead_rows.take();
        Counters::add(&self.p.counters.records_failed, dead.len() as u64);
        bad.extend(dead);
        if !bad.is_empty() {
            for b in &bad {
                self.logged_bad += 1;
                if self.logged_bad <= 100 {
                    tracing::warn!(job = %self.name, "{b}");
                } else if self.logged_bad.is_multiple_of(10_000) {
                    tracing::warn!(job = %self.name, "{} bad records so far", self.logged_bad);
                }
            }
            if let Some(d) = &self.out.dlq {
                if executed || self.job.failure_strategy != FailureStrategy::FailBatch {
                    let _ = d.write(dlq_batch(&bad)).await;
                    self.dead_lettered += bad.len() as u64;
                    Counters::add(&self.p.counters.records_dead_lettered, bad.len() as u64);
                    // (a row an expression failed on is the query's, not a
                    // source's: it is counted under the job's name, which
                    // the status leaves out of the sources)
                    for b in &bad {
                        Counters::add(&self.p.counters.source(&b.source).dead_lettered, 1);
                    }
                }
            }
        }
        Read { records, bad }
    }

    /// The epoch's execution failed: nothing of it is published; the
    /// failure strategy decides whether it is read again or the job stops.
    async fn execution_failed(
        &mut self,
        e: datafusion::error::DataFusionError,
        read: &Read,
    ) -> Result<()> {
        self.out.abort_all(self.epoch).await;
        self.stats.batches_failed += 1;
        Counters::add(&self.p.counters.epochs_failed, 1);
        let error = epoch_error(&self.p, &self.job, &self.name, self.epoch, e, &read.bad).await;
        self.live.failed_epoch(&error);
        let failed = Failed {
            epoch: self.epoch,
            records: read.records,
            discard: false,
            hold: None,
            error: &error,
        };
        let next = after_failure(self, &failed).await;
        if !matches!(next, Ok(Next::ReadAgain)) {
            self.out.close_all().await;
            return Err(next.err().unwrap_or(error));
        }
        Ok(())
    }

    /// The error of `sink` failing in this epoch.
    pub fn sink_error(&self, sink: &str, e: crate::fanout::SinkFailure) -> EngineError {
        EngineError::Sink {
            job: self.name.clone(),
            epoch: self.epoch,
            sink: sink.to_string(),
            message: e.message,
            kind: e.kind,
        }
    }

    /// Where the epoch's time went (debug log): the phases it reached.
    fn log_epoch(&self, records: u64, t0: Instant, phases: &[(&str, Duration)]) {
        tracing::debug!(
            job = %self.name,
            epoch = self.epoch,
            records,
            "epoch took {:?}: {}",
            t0.elapsed(),
            phases
                .iter()
                .map(|(phase, at)| format!("{phase} at {at:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    /// Phase: the sources told the last committed positions for good, the
    /// sinks closed, the run's stats gathered.
    async fn finish(mut self, started: Instant) -> Result<JobExecutionStats> {
        for ((_, f), pos) in self.p.streams().zip(&self.committed) {
            if let (Some(pos), Some(c)) = (pos, f.committer().await)
                && let Err(e) = c.commit(pos, true)
            {
                tracing::warn!(job = %self.name, "final offset commit: {e}");
            }
        }
        self.out.close_all().await;
        let p = &self.p;
        let stats = &mut self.stats;
        stats.elapsed = started.elapsed();
        stats.records_processed = Counters::get(&p.counters.records_in);
        stats.records_read = p.lookup_rows.clone();
        if p.others.is_empty() {
            stats
                .records_read
                .insert(p.driver.name().to_string(), stats.records_processed);
        } else {
            for ((src, _), n) in p.streams().zip(&self.read_per_stream) {
                stats.records_read.insert(src.name().to_string(), *n);
            }
        }
        stats.records_failed = Counters::get(&p.counters.records_failed);
        stats.records_late = Counters::get(&p.counters.records_late);
        stats.records_dead_lettered = self.dead_lettered;
        stats.records_unwritten = self.records_unwritten;
        stats.fallback = self.out.fallback.take();
        for s in &self.out.fan.sinks {
            stats.records_written.insert(
                s.name.clone(),
                s.written.load(std::sync::atomic::Ordering::Relaxed),
            );
            let f = s.failed.load(std::sync::atomic::Ordering::Relaxed);
            if f > 0 {
                stats.sink_failures.insert(s.name.clone(), f);
            }
        }
        Ok(self.stats)
    }
}

/// The checkpoint store of a job: `state.dir` (a local path relative to
/// the SQL file, or an `s3://` URL) or `.velo-state` beside the SQL file,
/// then the job name.
fn state_dir(plan: &JobPlan) -> Result<StateStore> {
    let base = plan
        .sources
        .first()
        .map(|c| c.base_dir.clone())
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    let root = plan.job.state_dir.as_deref().unwrap_or(".velo-state");
    StateStore::open(
        root,
        &base,
        &plan.name,
        &plan.engine.connector_context(false),
    )
}

/// Whether the job's source positions are followed: a resumable source
/// that resumes by default (Kafka), or any resumable source with a state
/// directory named (files: a file job run again reads its files again
/// unless told to resume).
fn resumes(p: &PreparedJob) -> bool {
    p.streams()
        .all(|(s, _)| crate::plan::prepare::resumes_across_runs(s.as_ref(), &p.plan.job))
}

/// Whether every stream of the job can be read again from a position (an
/// epoch that failed can be re-read).
pub(crate) fn rewindable(p: &PreparedJob) -> bool {
    p.streams().all(|(s, _)| s.resumable())
}
