//! The commit of an epoch (ARCHITECTURE.md decision 2): every sink
//! prepares, the checkpoint is written (the commit point of a checkpointed
//! job), then every sink publishes and the sources may forget what came
//! before. A sink that fails before the commit point fails the epoch on
//! every sink (transactions, FailBatch, retries), or alone under
//! LogAndContinue.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use velo_config::FailureStrategy;
use velo_connectors::{Position, PositionCommitter};

use super::job::JobRun;
use super::recover::{Committed, Failed, Next, after_failure};
use crate::fanout::SinkFailure;
use crate::stats::Counters;
use crate::{EngineError, Result};

/// The sinks that failed this epoch, by name.
type SinkFailures = Vec<(String, SinkFailure)>;

/// Where each stream of the job stands after the epoch, with the committer
/// that tells the source.
type StreamPositions = Vec<(Option<Position>, Option<Arc<dyn PositionCommitter>>)>;

impl JobRun {
    /// Commits the epoch that executed: prepare, checkpoint, publish.
    /// `failed`: the sinks that could not begin it.
    pub(crate) async fn commit(
        &mut self,
        mut failed: SinkFailures,
        records: u64,
        table_rows: Vec<RecordBatch>,
        phases: &mut Vec<(&'static str, Duration)>,
        t0: Instant,
    ) -> Result<()> {
        let positions = self.positions().await;
        self.live
            .committers(positions.iter().map(|(_, c)| c.clone()));
        if self.out.transactional {
            self.send_positions(&positions, &mut failed).await;
        }
        phases.push(("sinks asked to prepare", t0.elapsed()));
        let tokens = self.prepare_sinks(&mut failed).await;
        if !failed.is_empty()
            && (self.out.transactional
                || self.job.failure_strategy != FailureStrategy::LogAndContinue)
        {
            return self.unpublished(failed, records).await;
        }
        // the operator state as this epoch leaves it: for the checkpoint
        // and for going back to if a later epoch fails
        let states = match (self.state_dir.is_some() || self.keep_committed)
            .then(|| self.p.window_states.snapshot())
            .transpose()
        {
            Ok(s) => s,
            Err(e) => return self.stop_unpublished(e.into()).await,
        };
        if let Err(e) = self
            .checkpoint(states.as_ref(), tokens, &positions, &table_rows, records)
            .await
        {
            return self.stop_unpublished(e).await;
        }
        phases.push(("prepared and checkpointed", t0.elapsed()));
        let unpublished = self.publish(&failed).await?;
        failed.extend(unpublished);
        phases.push(("published", t0.elapsed()));
        self.after_publish(positions, &failed, states, &table_rows, records)
            .await
    }

    /// Where each stream stands; an epoch that read nothing keeps the last
    /// committed position (per stream, with its committer).
    async fn positions(&self) -> StreamPositions {
        let mut positions = Vec::with_capacity(self.committed.len());
        for ((_, f), c) in self.p.streams().zip(&self.committed) {
            positions.push((
                f.position().await.or_else(|| c.clone()),
                f.committer().await,
            ));
        }
        positions
    }

    /// A transactional sink (Kafka) sends every stream's offsets in its
    /// transaction.
    async fn send_positions(&self, positions: &StreamPositions, failed: &mut SinkFailures) {
        let mut all = positions[0].0.clone();
        for (o, _) in &positions[1..] {
            if let (Some(a), Some(o)) = (all.as_mut(), o) {
                a.parts.extend(o.parts.clone());
            }
        }
        let Some(pos) = &all else {
            return;
        };
        let ctx = positions[0]
            .1
            .as_ref()
            .and_then(|c| c.transaction_context());
        for (n, r) in self
            .out
            .fan
            .each(|s| s.set_position(pos.clone(), ctx.clone()))
            .await
        {
            if let Err(e) = r {
                failed.push((n.to_string(), e));
            }
        }
    }

    /// Every sink prepares the epoch; their recovery tokens, for the
    /// checkpoint.
    async fn prepare_sinks(
        &self,
        failed: &mut SinkFailures,
    ) -> BTreeMap<String, serde_json::Value> {
        let epoch = self.epoch;
        let mut tokens = BTreeMap::new();
        for (n, r) in self.out.fan.each(|s| s.prepare(epoch)).await {
            match r {
                Ok(pr) => {
                    if let Some(t) = pr.token {
                        tokens.insert(n.to_string(), t);
                    }
                }
                Err(e) => {
                    if !failed.iter().any(|(f, _)| f == n) {
                        failed.push((n.to_string(), e));
                    }
                }
            }
        }
        if let Some(d) = &self.out.dlq {
            match d.prepare(epoch).await {
                Ok(pr) => {
                    if let Some(t) = pr.token {
                        tokens.insert("dlq".into(), t);
                    }
                }
                Err(e) => failed.push(("dlq".into(), e)),
            }
        }
        tokens
    }

    /// A sink failed before the commit point: the epoch is published
    /// nowhere. FailBatch stops, retries read it again, transactions under
    /// LogAndContinue drop it.
    async fn unpublished(&mut self, mut failed: SinkFailures, records: u64) -> Result<()> {
        let epoch = self.epoch;
        self.out.abort_all(epoch).await;
        self.stats.batches_failed += 1;
        Counters::add(&self.p.counters.epochs_failed, 1);
        let hold = self.circuit_hold(&failed);
        let (sink, message) = failed.remove(0);
        let cause = format!("sink '{sink}' failed: {message}");
        let error = self.sink_error(&sink, message);
        self.live.failed_epoch(&error);
        let lost = Failed {
            epoch,
            records,
            discard: self.out.transactional,
            hold,
            error: &error,
        };
        match after_failure(self, &lost).await {
            Ok(Next::ReadAgain) => Ok(()),
            Ok(Next::Discarded) => {
                tracing::error!(job = %self.name, epoch, "{cause}; the transaction was aborted on every sink and the epoch's {records} records are lost (failure_strategy LogAndContinue); the job goes on");
                Ok(())
            }
            next @ (Ok(Next::Stop) | Err(_)) => {
                self.out.close_all().await;
                Err(next.err().unwrap_or(error))
            }
        }
    }

    /// When every sink that failed has a circuit breaker: how long the
    /// epoch waits before it is read again (until the probe of an open
    /// circuit). The breakers then decide, not `max_retries`.
    fn circuit_hold(&self, failed: &SinkFailures) -> Option<std::time::Duration> {
        let mut hold = std::time::Duration::ZERO;
        for (name, _) in failed {
            let sink = self.out.fan.sinks.iter().find(|s| &s.name == name)?;
            hold = hold.max(sink.circuit.hold(self.job.retry_backoff)?);
        }
        (!failed.is_empty()).then_some(hold)
    }

    /// The job stops on `e` before the commit point: the epoch is aborted
    /// on every sink.
    async fn stop_unpublished(&self, e: EngineError) -> Result<()> {
        self.out.abort_all(self.epoch).await;
        self.out.close_all().await;
        Err(e)
    }

    /// The commit point of a checkpointed job: the operator state, the
    /// changelog's keys and the table with this epoch applied, then the
    /// checkpoint naming them with every stream's position and every
    /// sink's token.
    async fn checkpoint(
        &mut self,
        states: Option<&Vec<RecordBatch>>,
        tokens: BTreeMap<String, serde_json::Value>,
        positions: &StreamPositions,
        table_rows: &[RecordBatch],
        records: u64,
    ) -> Result<()> {
        let Some(dir) = &self.state_dir else {
            return Ok(());
        };
        let p = &self.p;
        let mut snapshot = states.expect("taken for a state directory").clone();
        let mut operator_ids = p.window_states.ids();
        if let Some(c) = &self.changelog {
            snapshot.push(c.snapshot()?);
            operator_ids.push(CHANGELOG_ID.into());
        }
        if let Some(t) = &p.table {
            // the table is applied after the commit
            snapshot.push(t.merged(table_rows)?);
            operator_ids.push(TABLE_ID.into());
        }
        let started = std::time::Instant::now();
        let (operators, state_bytes) = dir.store_operator_state(self.epoch, &snapshot).await?;
        let cp = crate::checkpoint::Checkpoint {
            version: crate::checkpoint::VERSION,
            job: self.name.clone(),
            epoch: self.epoch,
            position: positions[0].0.clone().unwrap_or_default(),
            sinks: tokens,
            watermark: shown_watermark(p.feed.watermark().get()),
            operators,
            operator_ids,
            streams: p
                .others
                .iter()
                .zip(&positions[1..])
                .map(|((src, f), (pos, _))| {
                    (
                        src.name().to_string(),
                        crate::checkpoint::StreamPosition {
                            position: pos.clone().unwrap_or_default(),
                            watermark: shown_watermark(f.watermark().get()),
                        },
                    )
                })
                .collect(),
        };
        let cp_bytes = dir.store(&cp).await?;
        let c = &self.p.counters;
        c.checkpoint_seconds.observe(started.elapsed());
        c.checkpoint_bytes
            .store(state_bytes + cp_bytes, std::sync::atomic::Ordering::Relaxed);
        dir.remove_stale_operator_state(&cp.operators).await;
        if records > 0 {
            self.checkpoints_written += 1;
            crate::checkpoint::crash_point(self.checkpoints_written);
        }
        Ok(())
    }

    /// Every sink that prepared publishes the epoch (LogAndContinue: the
    /// failed ones drop it and the others go on).
    /// Returns the sinks that failed to publish (LogAndContinue goes on
    /// without them).
    async fn publish(&self, failed: &SinkFailures) -> Result<SinkFailures> {
        let epoch = self.epoch;
        for (sink, message) in failed {
            tracing::error!(job = %self.name, epoch, "sink '{sink}' failed this epoch (other sinks continue): {message}");
            if let Some(h) = self.out.fan.sinks.iter().find(|s| &s.name == sink) {
                let _ = h.drop_epoch(epoch).await;
            }
        }
        let commits = self
            .out
            .fan
            .each(|s| async move {
                if failed.iter().any(|(f, _)| f == &s.name) {
                    Ok(())
                } else {
                    s.commit(epoch).await
                }
            })
            .await;
        let mut unpublished = SinkFailures::new();
        for (n, r) in commits {
            if let Err(e) = r {
                tracing::error!(job = %self.name, epoch, "sink '{n}' failed to publish: {e}");
                if self.job.failure_strategy != FailureStrategy::LogAndContinue {
                    self.out.close_all().await;
                    return Err(self.sink_error(n, e));
                }
                unpublished.push((n.to_string(), e));
            }
        }
        if let Some(d) = &self.out.dlq {
            d.commit(epoch)
                .await
                .map_err(|e| self.sink_error("dlq", e))?;
        }
        Ok(unpublished)
    }

    /// After every sink acknowledged: the table updated, the sources told
    /// they may forget what came before, the committed state kept, the
    /// epoch counted.
    async fn after_publish(
        &mut self,
        positions: StreamPositions,
        failed: &SinkFailures,
        states: Option<Vec<RecordBatch>>,
        table_rows: &[RecordBatch],
        records: u64,
    ) -> Result<()> {
        let epoch = self.epoch;
        if let Some(t) = &self.p.table {
            if let Err(e) = t.apply(table_rows) {
                tracing::error!(job = %self.name, epoch, "table '{}' not updated: {e}", t.name());
            }
            t.mark_ready();
        }
        self.live.published(epoch, table_rows);
        for ((pos, c), last) in positions.into_iter().zip(self.committed.iter_mut()) {
            let Some(pos) = pos else { continue };
            if !failed.is_empty() {
                // a sink missed this epoch: its position is not committed,
                // and the source learns what that epoch read
                if let Some(c) = &c {
                    c.skipped(&pos);
                }
                continue;
            }
            if let Some(c) = &c
                && let Err(e) = c.commit(&pos, false)
            {
                tracing::warn!(job = %self.name, epoch, "{e}");
            }
            *last = Some(pos);
        }
        self.failed_in_row = 0;
        if self.keep_committed {
            let states = states.expect("taken to keep");
            self.last_committed =
                Some(Committed::take(&self.p, self.changelog.as_ref(), Some(states)).await?);
        }
        // the empty epoch that only discovers the end of input is not counted
        if records > 0 || !self.p.is_finished().await {
            self.stats.batches_processed += 1;
            Counters::add(&self.p.counters.epochs, 1);
            let now = chrono::Utc::now().timestamp_millis();
            self.p
                .counters
                .committed_at_ms
                .store(now, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

/// A watermark worth storing (not none yet, not the end of input).
fn shown_watermark(w: i64) -> Option<i64> {
    Some(w).filter(|w| *w != crate::time::Watermark::NONE && *w != crate::time::Watermark::END)
}

/// The checkpoint's id of the changelog's written keys.
pub(crate) const CHANGELOG_ID: &str = "changelog keys";
/// The checkpoint's id of a `CREATE TABLE`'s rows.
pub(crate) const TABLE_ID: &str = "table rows";
