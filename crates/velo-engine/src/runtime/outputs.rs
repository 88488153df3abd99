//! The job's outputs: its sinks behind the fan-out and its dead-letter
//! sink, created at start (a job whose sinks all fail writes to stdout, the
//! seeds' promise, and does not exit 0), aborted or closed together.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use velo_config::FailureStrategy;
use velo_connectors::{BadRecord, ConnectorContext};

use crate::fanout::{FanOut, Retry, SinkHandle};
use crate::plan::PreparedJob;
use crate::{EngineError, Result};

/// Every sink of a job, each on a task of its own.
pub(crate) struct Outputs {
    /// The sinks of the INTO clause.
    pub fan: FanOut,
    /// The dead-letter sink.
    pub dlq: Option<SinkHandle>,
    /// Why the job writes to stdout instead of its sinks, if it does.
    pub fallback: Option<String>,
    /// Every sink publishes an epoch atomically and the job asked for it.
    pub transactional: bool,
}

impl Outputs {
    /// Creates the sinks of `p` writing records of `schema`.
    pub async fn create(p: &PreparedJob, schema: SchemaRef) -> Result<Self> {
        let job = &p.plan.job;
        let name = &p.plan.name;
        let ctx = p.plan.engine.connector_context(false);
        let (created, fallback) = create_sinks(p, &ctx).await?;
        let all_tx = created.iter().all(|s| s.capabilities().transactions);
        let transactional = job.use_transactions && all_tx;
        if job.use_transactions && !all_tx {
            let non: Vec<&str> = created
                .iter()
                .filter(|s| !s.capabilities().transactions)
                .map(|s| s.name())
                .collect();
            tracing::warn!(
                "Job '{name}': use_transactions requested but sink(s) {} cannot publish atomically; running in Simple mode (at-least-once)",
                non.join(", ")
            );
        }
        let retry = (job.failure_strategy == FailureStrategy::RetryWithBackoff).then_some(Retry {
            max_retries: job.max_retries,
            backoff: job.retry_backoff,
        });
        let key_columns = p.message_keys();
        let changes = p.writes_changes();
        let mut sinks = Vec::with_capacity(created.len());
        for mut s in created {
            s.set_key_columns(&key_columns);
            if changes {
                s.set_changelog();
            }
            if p.plan.continues {
                s.set_continuing();
            }
            let breaker = match p.plan.sinks.iter().find(|c| c.name == s.name()) {
                Some(cfg) => velo_config::keys::CircuitBreaker::of(cfg)
                    .map_err(|e| EngineError::Invalid(e.to_string()))?,
                None => None,
            };
            sinks.push(SinkHandle::spawn(
                s,
                schema.clone(),
                transactional,
                retry,
                breaker,
            ));
        }
        let fan = FanOut { sinks };
        let dlq = match &p.plan.dlq {
            Some(cfg) => match p.plan.engine.registry().create_sink(cfg, &ctx).await {
                Ok(s) => Some(SinkHandle::spawn(
                    s,
                    dlq_schema(),
                    transactional,
                    retry,
                    None,
                )),
                Err(e) => {
                    return Err(EngineError::Invalid(format!(
                        "cannot create the dead-letter sink 'dlq': {e}"
                    )));
                }
            },
            None => None,
        };
        Ok(Self {
            fan,
            dlq,
            fallback,
            transactional,
        })
    }

    /// Every sink and the dead-letter sink, by name.
    pub fn all(&self) -> impl Iterator<Item = &SinkHandle> {
        self.fan.sinks.iter().chain(self.dlq.iter())
    }

    /// Aborts `epoch` on every sink.
    pub async fn abort_all(&self, epoch: u64) {
        for (name, r) in self.fan.each(|s| s.abort(epoch)).await {
            if let Err(e) = r {
                tracing::error!(sink = name, "abort failed: {e}");
            }
        }
        if let Some(d) = &self.dlq {
            let _ = d.abort(epoch).await;
        }
    }

    /// Closes every sink.
    pub async fn close_all(&self) {
        for (n, r) in self.fan.each(|s| s.close()).await {
            if let Err(e) = r {
                tracing::error!(sink = n, "close failed: {e}");
            }
        }
        if let Some(d) = &self.dlq {
            if let Err(e) = d.close().await {
                tracing::error!(sink = "dlq", "close failed: {e}");
            }
        }
    }
}

/// The sinks of a job as created, and why they are stdout instead, if so.
type Created = (Vec<Box<dyn velo_connectors::Sink>>, Option<String>);

/// The sinks of the INTO clause that could be created; when none could,
/// stdout, with the reason.
async fn create_sinks(p: &PreparedJob, ctx: &ConnectorContext) -> Result<Created> {
    let name = &p.plan.name;
    let mut created = Vec::new();
    let mut creation_errors = Vec::new();
    for cfg in &p.plan.sinks {
        match p.plan.engine.registry().create_sink(cfg, ctx).await {
            Ok(s) => {
                tracing::info!(job = %name, "Successfully created sink '{}'", cfg.name);
                created.push(s);
            }
            Err(e) => {
                tracing::warn!(
                    "Job '{name}' failed to create sinks: Failed to create sink '{}': {e}",
                    cfg.name
                );
                creation_errors.push(format!("'{}': {e}", cfg.name));
            }
        }
    }
    if !created.is_empty() {
        return Ok((created, None));
    }
    tracing::warn!("Job '{name}': no sink could be created; writing results to stdout");
    created.push(
        p.plan
            .engine
            .registry()
            .create_sink(
                &crate::plan::stdout_sink("stdout_fallback", &p.plan.sinks[0].base_dir),
                ctx,
            )
            .await
            .map_err(|e| EngineError::Invalid(e.to_string()))?,
    );
    Ok((created, Some(creation_errors.join("; "))))
}

/// The records of the dead-letter sink: where each bad record came from,
/// what was wrong with it, and the record as read.
pub(crate) fn dlq_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("location", DataType::Utf8, false),
        Field::new("line", DataType::UInt64, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("record", DataType::Utf8, false),
    ]))
}

/// `bad` as a batch of [`dlq_schema`].
pub(crate) fn dlq_batch(bad: &[BadRecord]) -> RecordBatch {
    RecordBatch::try_new(
        dlq_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                bad.iter().map(|b| b.source.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                bad.iter().map(|b| b.location.as_str()),
            )),
            Arc::new(UInt64Array::from_iter_values(bad.iter().map(|b| b.line))),
            Arc::new(StringArray::from_iter_values(
                bad.iter().map(|b| b.error.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                bad.iter().map(|b| b.raw.as_str()),
            )),
        ],
    )
    .expect("dlq schema matches")
}
