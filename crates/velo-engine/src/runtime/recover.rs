//! Recovery: a job restarted from its last checkpoint (sinks told what
//! they had prepared, operator state, changelog keys, table rows,
//! watermarks and positions put back), and a failed epoch handled by the
//! failure strategy — read again from the last committed epoch, dropped
//! (an aborted transaction under LogAndContinue), or the job stopped.

use arrow::array::RecordBatch;
use velo_config::{FailureStrategy, JobConfig};
use velo_connectors::BadRecord;

use super::commit::{CHANGELOG_ID, TABLE_ID};
use super::job::{JobRun, rewindable};
use crate::changelog::Changelog;
use crate::plan::PreparedJob;
use crate::stats::Counters;
use crate::{EngineError, Result};

impl JobRun {
    /// Phase: the job as its last checkpoint left it, if it has one.
    pub(crate) async fn restore(&mut self) -> Result<()> {
        let Some(dir) = &self.state_dir else {
            return Ok(());
        };
        let Some(cp) = dir.load(&self.name).await? else {
            return Ok(());
        };
        // sinks first: each finishes or discards what it had prepared
        for (sink, token) in &cp.sinks {
            if let Some(h) = self.out.all().find(|h| &h.name == sink) {
                h.recover(token.clone())
                    .await
                    .map_err(|e| EngineError::Sink {
                        job: self.name.clone(),
                        epoch: cp.epoch,
                        sink: sink.clone(),
                        message: e.message,
                        kind: e.kind,
                    })?;
            }
        }
        let p = &self.p;
        if !cp.operators.is_empty() || !p.window_states.is_empty() {
            let mut states = dir.load_operator_state(&cp.operators).await?;
            let missing = |what: &str| {
                EngineError::Invalid(format!(
                    "the checkpoint in {} holds no {what}; the query changed: move the state directory away to start from scratch",
                    dir.display()
                ))
            };
            if cp.operator_ids.len() == states.len() && !states.is_empty() {
                // by operator id
                let mut by_id: Vec<(String, RecordBatch)> =
                    cp.operator_ids.iter().cloned().zip(states).collect();
                let mut take = |id: &str| {
                    let at = by_id.iter().position(|(i, _)| i == id)?;
                    Some(by_id.remove(at).1)
                };
                if let Some(t) = &p.table {
                    t.restore(take(TABLE_ID).ok_or_else(|| missing("table rows"))?)?;
                    t.mark_ready();
                }
                if let Some(c) = self.changelog.as_mut() {
                    c.restore(&take(CHANGELOG_ID).ok_or_else(|| missing("changelog keys"))?)?;
                }
                p.window_states.restore_by_id(by_id)?;
            } else {
                // a checkpoint of an earlier version: in plan order, the
                // changelog's keys, then the table's rows after the operators
                if let Some(t) = &p.table {
                    let rows = states.pop().ok_or_else(|| missing("table rows"))?;
                    t.restore(rows)?;
                    t.mark_ready();
                }
                if let Some(c) = self.changelog.as_mut() {
                    let keys = states.pop().ok_or_else(|| missing("changelog keys"))?;
                    c.restore(&keys)?;
                }
                p.window_states.restore(states)?;
            }
        }
        // every stream back to its position and watermark
        if let Some(wm) = cp.watermark {
            p.feed.watermark().reset(wm);
        }
        p.feed.set_resume(cp.position.clone());
        self.committed[0] = Some(cp.position);
        for (i, (src, f)) in p.others.iter().enumerate() {
            let Some(sp) = cp.streams.get(src.name()) else {
                return Err(EngineError::Invalid(format!(
                    "the checkpoint in {} holds no position for the stream '{}'; the query changed: move the state directory away to start from scratch",
                    dir.display(),
                    src.name()
                )));
            };
            if let Some(wm) = sp.watermark {
                f.watermark().reset(wm);
            }
            f.set_resume(sp.position.clone());
            self.committed[i + 1] = Some(sp.position.clone());
        }
        tracing::info!(job = %self.name, "resuming after checkpoint epoch {} ({})", cp.epoch, dir.display());
        self.epoch = cp.epoch;
        Ok(())
    }
}

/// What a failed epoch goes back to (ARCHITECTURE.md decision 7): the
/// operator state, the changelog's written keys and every stream's
/// watermark as of the last committed epoch.
pub(crate) struct Committed {
    states: Vec<RecordBatch>,
    changelog: Option<RecordBatch>,
    feeds: Vec<crate::feed::FeedMark>,
}

impl Committed {
    /// The job as it stands now; `states` when the caller already took
    /// them (the checkpoint's snapshot).
    pub async fn take(
        p: &PreparedJob,
        changelog: Option<&Changelog>,
        states: Option<Vec<RecordBatch>>,
    ) -> Result<Self> {
        let states = match states {
            Some(s) => s,
            None => p.window_states.snapshot()?,
        };
        let mut feeds = Vec::new();
        for (_, f) in p.streams() {
            feeds.push(f.mark().await);
        }
        Ok(Self {
            states,
            changelog: changelog.map(|c| c.snapshot()).transpose()?,
            feeds,
        })
    }

    /// Puts the job back as it stood.
    async fn restore(&self, p: &PreparedJob, changelog: Option<&mut Changelog>) -> Result<()> {
        p.window_states.restore(self.states.clone())?;
        // the changes noted by the failed epoch's emission are void
        let _ = p.window_states.take_changed();
        if let (Some(c), Some(keys)) = (changelog, &self.changelog) {
            c.restore(keys)?;
        }
        for ((_, f), mark) in p.streams().zip(&self.feeds) {
            f.restore_mark(mark).await;
        }
        Ok(())
    }
}

/// An epoch that failed before anything of it was published.
pub(crate) struct Failed<'a> {
    pub epoch: u64,
    /// Records the epoch read.
    pub records: u64,
    /// Whether LogAndContinue may drop it (a transaction aborted on every
    /// sink); otherwise LogAndContinue stops as FailBatch does.
    pub discard: bool,
    /// Set when the sinks that failed have circuit breakers: how long
    /// RetryWithBackoff holds the epoch before reading it again, without
    /// counting the failure against `max_retries`.
    pub hold: Option<std::time::Duration>,
    pub error: &'a EngineError,
}

/// What the job does after a failed epoch.
#[derive(Debug, PartialEq)]
pub(crate) enum Next {
    /// The state went back to the last committed epoch and the streams to
    /// its positions: the epoch is read again.
    ReadAgain,
    /// The state went back to the last committed epoch; the epoch's records
    /// are lost (counted).
    Discarded,
    /// The job stops with the epoch's error; nothing past the last committed
    /// epoch was published, so a restart reads it again.
    Stop,
}

/// Decides, by the failure strategy, what follows a failed epoch, and puts
/// the job back to its last committed epoch where it goes on:
/// RetryWithBackoff reads the epoch again after a backoff (`max_retries`
/// failures in a row stop the job with the error), LogAndContinue drops an
/// aborted transaction, anything else stops.
pub(crate) async fn after_failure(run: &mut JobRun, failed: &Failed<'_>) -> Result<Next> {
    let (p, job) = (&run.p, &run.job);
    let name = &p.plan.name;
    let epoch = failed.epoch;
    let retry = job.failure_strategy == FailureStrategy::RetryWithBackoff;
    let Some(last) = run.last_committed.as_ref().filter(|_| {
        (retry && failed.error.kind() != crate::ErrorKind::User && rewindable(p))
            || (job.failure_strategy == FailureStrategy::LogAndContinue && failed.discard)
    }) else {
        if retry && !rewindable(p) {
            tracing::error!(job = %name, epoch, "the epoch failed and cannot be read again: a source of the job cannot go back to a position");
        }
        return Ok(Next::Stop);
    };
    if !retry {
        last.restore(p, run.changelog.as_mut()).await?;
        run.records_unwritten += failed.records;
        Counters::add(&p.counters.records_failed, failed.records);
        return Ok(Next::Discarded);
    }
    if let Some(wait) = failed.hold {
        tracing::warn!(job = %name, epoch, "epoch failed: {}; the sink's circuit breaker holds it for {wait:?}, then reads it again from the last committed position", failed.error);
        let mut stop = run.shutdown.receiver();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return Ok(Next::Stop),
        }
        let p = &run.p;
        last.restore(p, run.changelog.as_mut()).await?;
        for ((_, f), c) in p.streams().zip(&run.committed) {
            f.rewind(c.clone().unwrap_or_default()).await;
        }
        return Ok(Next::ReadAgain);
    }
    run.failed_in_row += 1;
    let tries = run.failed_in_row;
    if tries > job.max_retries {
        let message = format!(
            "job '{name}' stopped: epoch {epoch} failed {tries} times in a row (max_retries = {}); nothing of it was published, a restart reads it again. Last error: {}",
            job.max_retries, failed.error
        );
        return Err(match failed.error.kind() {
            crate::ErrorKind::Internal => EngineError::Internal(message),
            crate::ErrorKind::User => EngineError::Invalid(message),
            crate::ErrorKind::External => EngineError::External(message),
        });
    }
    let wait = job.retry_backoff * (1u32 << (tries - 1).min(10));
    tracing::warn!(job = %name, epoch, "epoch failed: {}; reading it again from the last committed position in {wait:?} (attempt {tries} of {})", failed.error, job.max_retries);
    tokio::time::sleep(wait).await;
    last.restore(p, run.changelog.as_mut()).await?;
    for ((_, f), c) in p.streams().zip(&run.committed) {
        f.rewind(c.clone().unwrap_or_default()).await;
    }
    Ok(Next::ReadAgain)
}

/// The error of an epoch whose execution failed: a source's own failure,
/// a bad record under FailBatch, or the query's error.
pub(crate) async fn epoch_error(
    p: &PreparedJob,
    job: &JobConfig,
    name: &str,
    epoch: u64,
    e: datafusion::error::DataFusionError,
    bad: &[BadRecord],
) -> EngineError {
    for (src, f) in p.streams() {
        if let Some((kind, message)) = f.fatal().await {
            return EngineError::Source {
                name: src.name().to_string(),
                message,
                kind,
            };
        }
    }
    let bad_record = matches!(e.find_root(), datafusion::error::DataFusionError::External(x) if x.is::<crate::feed::BadRecordError>());
    if bad_record && job.failure_strategy == FailureStrategy::FailBatch {
        let record = bad
            .first()
            .map(|b| format!("{b}: {}", b.raw))
            .unwrap_or_else(|| e.to_string());
        return EngineError::BadRecord {
            job: name.to_string(),
            epoch,
            record,
        };
    }
    let kind = crate::error::datafusion_kind(&e);
    let message = format!(
        "job '{name}' stopped at epoch {epoch} ({:?}): {e}; nothing of this epoch was published",
        job.failure_strategy
    );
    match kind {
        crate::ErrorKind::User => EngineError::Invalid(message),
        crate::ErrorKind::External => EngineError::External(message),
        crate::ErrorKind::Internal => EngineError::Internal(message),
    }
}
