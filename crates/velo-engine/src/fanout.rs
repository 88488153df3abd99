//! The fan-out operator: every result batch to every sink, concurrently.
//!
//! Each sink runs on a thread of its own behind a bounded channel (sinks do
//! blocking I/O and encoding; the async runtime never waits on them except
//! through the channel, which is also the backpressure). A sink that can
//! encode off its thread ([`velo_connectors::BatchEncoder`]: the text file
//! formats) gets its large batches encoded on the runtime's blocking pool,
//! several at once, and only writes the bytes, in order. A write that fails
//! is retried with exponential backoff and jitter under `RetryWithBackoff`;
//! after that the failure belongs to that sink's epoch and is reported at
//! `prepare`, where the runtime decides by the failure strategy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use tokio::sync::{mpsc, oneshot};
use velo_connectors::{Position, Sink, TransactionContext};

/// What `prepare` reports: rows in the epoch, and what a restart needs to
/// finish publishing it.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Rows written this epoch.
    pub rows: u64,
    /// The sink's commit token ([`Sink::commit_token`]).
    pub token: Option<serde_json::Value>,
}

/// Batches of at least this many rows are encoded ahead of the sink's
/// thread; smaller ones (low-latency epochs) on it, without the hop.
const ENCODE_AHEAD_ROWS: usize = 1024;

/// A sink's failure, with its kind: how the runtime tells a sink that cannot
/// reach its store (retrying may help) from one that cannot take the data.
#[derive(Debug, Clone)]
pub struct SinkFailure {
    /// Who must act on it. A file system or network failing at run time
    /// is external, whatever its error code.
    pub kind: velo_connectors::ErrorKind,
    /// What happened.
    pub message: String,
}

impl std::fmt::Display for SinkFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<velo_connectors::ConnectorError> for SinkFailure {
    fn from(e: velo_connectors::ConnectorError) -> Self {
        let kind = match &e {
            velo_connectors::ConnectorError::Io { .. } => velo_connectors::ErrorKind::External,
            e => e.kind(),
        };
        Self {
            kind,
            message: e.to_string(),
        }
    }
}

impl SinkFailure {
    /// The sink's worker is gone (it cannot happen while the job runs).
    fn stopped(sink: &str) -> Self {
        Self {
            kind: velo_connectors::ErrorKind::Internal,
            message: format!("sink '{sink}' worker stopped"),
        }
    }
}

/// Retry policy for sink writes.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts after the first.
    pub max_retries: u32,
    /// First backoff; doubled per attempt, with jitter.
    pub backoff: Duration,
}

enum Cmd {
    Begin(u64, oneshot::Sender<Result<(), SinkFailure>>),
    /// A batch, and its bytes to come when it is being encoded off the
    /// sink's thread.
    Write(
        RecordBatch,
        Option<oneshot::Receiver<velo_connectors::Result<Vec<u8>>>>,
    ),
    Prepare(u64, oneshot::Sender<Result<Prepared, SinkFailure>>),
    Recover(serde_json::Value, oneshot::Sender<Result<(), SinkFailure>>),
    Position(
        Position,
        Option<TransactionContext>,
        oneshot::Sender<Result<(), SinkFailure>>,
    ),
    Commit(u64, oneshot::Sender<Result<(), SinkFailure>>),
    /// Discards the epoch; `lost`: its rows reach this sink no more (the
    /// other sinks publish them), so they count as failed.
    Abort(u64, bool, oneshot::Sender<Result<(), SinkFailure>>),
    Close(oneshot::Sender<Result<(), SinkFailure>>),
}

/// One sink behind its worker thread.
pub struct SinkHandle {
    /// Sink name.
    pub name: String,
    /// One-line description.
    pub description: String,
    tx: mpsc::Sender<Cmd>,
    /// The sink's encoder, run on the runtime's blocking pool.
    encoder: Option<Arc<dyn velo_connectors::BatchEncoder>>,
    /// Records committed by this sink.
    pub written: Arc<AtomicU64>,
    /// Records this sink failed to write.
    pub failed: Arc<AtomicU64>,
    /// Its health, and its circuit breaker if it has one.
    pub circuit: Arc<crate::circuit::Circuit>,
    /// How long each write call took.
    pub write_seconds: Arc<crate::stats::Histogram>,
    /// How long each epoch's prepare and commit calls took together.
    pub commit_seconds: Arc<crate::stats::Histogram>,
}

fn with_retry<T>(
    retry: Option<Retry>,
    name: &str,
    mut f: impl FnMut() -> velo_connectors::Result<T>,
) -> Result<T, SinkFailure> {
    let mut attempt = 0u32;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) => match retry {
                Some(r) if attempt < r.max_retries => {
                    let base = r.backoff.as_millis() as u64 * (1u64 << attempt.min(16));
                    let jitter = rand::random::<u64>() % (base / 2 + 1);
                    tracing::warn!(
                        sink = name,
                        attempt = attempt + 1,
                        max = r.max_retries,
                        "write failed, retrying in {}ms: {e}",
                        base + jitter
                    );
                    // a dedicated sink thread: waiting here blocks no async task
                    std::thread::park_timeout(Duration::from_millis(base + jitter));
                    attempt += 1;
                }
                _ => return Err(e.into()),
            },
        }
    }
}

/// The environment variable of the failure tests' fault injection.
pub const FAIL_SINK: &str = "VELO_FAIL_SINK";

/// Fault injection for the failure tests: `VELO_FAIL_SINK=sink:phase:epoch:count[,...]`
/// makes `count` calls in a row of `phase` (`begin`, `write`, `prepare`,
/// `commit`) on sink `sink` fail, from the first one in epoch `epoch` on,
/// as a full disk or a vanished directory would. Retries count as calls.
struct Faults(Vec<(String, String, u64, std::sync::atomic::AtomicU64)>);

impl Faults {
    fn get() -> &'static Faults {
        static FAULTS: std::sync::LazyLock<Faults> = std::sync::LazyLock::new(|| {
            Faults(
                std::env::var(FAIL_SINK)
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|f| {
                        let p: Vec<&str> = f.split(':').collect();
                        match p.as_slice() {
                            [sink, phase, epoch, count] => Some((
                                sink.to_string(),
                                phase.to_string(),
                                epoch.parse().ok()?,
                                AtomicU64::new(count.parse().ok()?),
                            )),
                            _ => None,
                        }
                    })
                    .collect(),
            )
        });
        &FAULTS
    }

    /// Whether this call of `phase` on `sink` in `epoch` is to fail.
    fn hit(sink: &str, phase: &str, epoch: u64) -> velo_connectors::Result<()> {
        for (s, p, from, left) in &Self::get().0 {
            if s == sink && p == phase && epoch >= *from {
                let was = left
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_ok();
                if was {
                    // as the file system would fail: an I/O error
                    return Err(velo_connectors::ConnectorError::io(
                        "injected failure",
                        sink,
                        std::io::Error::other(format!(
                            "{FAIL_SINK}: injected failure of {phase} in epoch {epoch}"
                        )),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl SinkHandle {
    /// Starts the worker thread for `sink`.
    pub fn spawn(
        mut sink: Box<dyn Sink>,
        schema: SchemaRef,
        transactional: bool,
        retry: Option<Retry>,
        breaker: Option<velo_config::keys::CircuitBreaker>,
    ) -> Self {
        let circuit = Arc::new(crate::circuit::Circuit::new(breaker));
        let c = circuit.clone();
        let write_seconds = Arc::new(crate::stats::Histogram::default());
        let commit_seconds = Arc::new(crate::stats::Histogram::default());
        let (ws, cs) = (write_seconds.clone(), commit_seconds.clone());
        let name = sink.name().to_string();
        sink.set_transactional(transactional);
        sink.set_schema(schema);
        let description = sink.describe();
        let encoder = sink.encoder();
        let (tx, mut rx) = mpsc::channel::<Cmd>(4);
        let written = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (w, fl) = (written.clone(), failed.clone());
        let tname = name.clone();
        std::thread::Builder::new()
            .name(format!("velo-sink-{name}"))
            .spawn(move || {
                let mut epoch_error: Option<SinkFailure> = None;
                let mut epoch_rows = 0u64;
                let mut epoch = 0u64;
                // whether this epoch called the sink (its circuit let it)
                let mut attempted = false;
                // how long this epoch's prepare took
                let mut committing = Duration::ZERO;
                while let Some(cmd) = rx.blocking_recv() {
                    match cmd {
                        Cmd::Begin(e, ack) => {
                            epoch_error = None;
                            epoch_rows = 0;
                            epoch = e;
                            let r = match c.admit() {
                                Err(message) => {
                                    attempted = false;
                                    Err(SinkFailure {
                                        kind: velo_connectors::ErrorKind::External,
                                        message,
                                    })
                                }
                                Ok(()) => {
                                    attempted = true;
                                    with_retry(retry, &tname, || {
                                        Faults::hit(&tname, "begin", e)?;
                                        sink.begin_epoch(e)
                                    })
                                }
                            };
                            if let Err(m) = &r {
                                epoch_error = Some(m.clone());
                            }
                            let _ = ack.send(r);
                        }
                        Cmd::Write(b, bytes) => {
                            epoch_rows += b.num_rows() as u64;
                            if epoch_error.is_some() {
                                continue;
                            }
                            let t = std::time::Instant::now();
                            let r = match bytes.map(|rx| rx.blocking_recv()) {
                                None => with_retry(retry, &tname, || {
                                    Faults::hit(&tname, "write", epoch)?;
                                    sink.write(&b)
                                }),
                                Some(Ok(Ok(bytes))) => with_retry(retry, &tname, || {
                                    Faults::hit(&tname, "write", epoch)?;
                                    sink.write_encoded(&b, &bytes)
                                }),
                                Some(Ok(Err(e))) => Err(e.into()),
                                Some(Err(_)) => Err(SinkFailure {
                                    kind: velo_connectors::ErrorKind::Internal,
                                    message: "the encoding task stopped".into(),
                                }),
                            };
                            ws.observe(t.elapsed());
                            if let Err(m) = r {
                                tracing::error!(sink = %tname, "write failed: {m}");
                                epoch_error = Some(m);
                            }
                        }
                        Cmd::Prepare(e, ack) => {
                            let t = std::time::Instant::now();
                            let r = match epoch_error.take() {
                                Some(m) => Err(m),
                                None => with_retry(retry, &tname, || {
                                    Faults::hit(&tname, "prepare", e)?;
                                    sink.prepare_commit(e)
                                })
                                .map(|_| Prepared {
                                    rows: epoch_rows,
                                    token: sink.commit_token(),
                                }),
                            };
                            if let (Err(m), true) = (&r, attempted) {
                                c.failure(&m.message);
                                attempted = false;
                            }
                            committing = t.elapsed();
                            let _ = ack.send(r);
                        }
                        Cmd::Recover(token, ack) => {
                            let _ = ack.send(sink.recover(&token).map_err(SinkFailure::from));
                        }
                        Cmd::Position(pos, ctx, ack) => {
                            let _ = ack.send(
                                sink.set_epoch_position(&pos, ctx)
                                    .map_err(SinkFailure::from),
                            );
                        }
                        Cmd::Commit(e, ack) => {
                            let t = std::time::Instant::now();
                            let r = with_retry(retry, &tname, || {
                                Faults::hit(&tname, "commit", e)?;
                                sink.commit(e)
                            });
                            cs.observe(committing + t.elapsed());
                            match &r {
                                Ok(()) => {
                                    w.fetch_add(epoch_rows, Ordering::Relaxed);
                                    c.success();
                                }
                                Err(m) => {
                                    fl.fetch_add(epoch_rows, Ordering::Relaxed);
                                    if attempted {
                                        c.failure(&m.message);
                                    }
                                }
                            }
                            attempted = false;
                            epoch_rows = 0;
                            let _ = ack.send(r);
                        }
                        Cmd::Abort(e, lost, ack) => {
                            if lost {
                                fl.fetch_add(epoch_rows, Ordering::Relaxed);
                            }
                            epoch_rows = 0;
                            epoch_error = None;
                            let _ = ack.send(sink.abort(e).map_err(SinkFailure::from));
                        }
                        Cmd::Close(ack) => {
                            let _ = ack.send(sink.close().map_err(SinkFailure::from));
                            return;
                        }
                    }
                }
                // the runtime went away without closing: publish nothing more
                let _ = sink.abort(u64::MAX);
            })
            .expect("spawning a sink thread");
        Self {
            name,
            description,
            tx,
            encoder,
            written,
            failed,
            circuit,
            write_seconds,
            commit_seconds,
        }
    }

    async fn call<T>(
        &self,
        f: impl FnOnce(oneshot::Sender<Result<T, SinkFailure>>) -> Cmd,
    ) -> Result<T, SinkFailure> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(f(tx))
            .await
            .map_err(|_| SinkFailure::stopped(&self.name))?;
        rx.await.map_err(|_| SinkFailure::stopped(&self.name))?
    }

    /// Starts an epoch.
    pub async fn begin(&self, epoch: u64) -> Result<(), SinkFailure> {
        self.call(|a| Cmd::Begin(epoch, a)).await
    }
    /// Makes the epoch durable; returns its record count and commit token.
    pub async fn prepare(&self, epoch: u64) -> Result<Prepared, SinkFailure> {
        self.call(|a| Cmd::Prepare(epoch, a)).await
    }
    /// Finishes publishing an epoch a checkpoint committed (restart).
    pub async fn recover(&self, token: serde_json::Value) -> Result<(), SinkFailure> {
        self.call(|a| Cmd::Recover(token, a)).await
    }
    /// Hands the epoch's source position to the sink (transactional mode).
    pub async fn set_position(
        &self,
        pos: Position,
        ctx: Option<TransactionContext>,
    ) -> Result<(), SinkFailure> {
        self.call(|a| Cmd::Position(pos, ctx, a)).await
    }
    /// Publishes the epoch.
    pub async fn commit(&self, epoch: u64) -> Result<(), SinkFailure> {
        self.call(|a| Cmd::Commit(epoch, a)).await
    }
    /// Discards the epoch.
    pub async fn abort(&self, epoch: u64) -> Result<(), SinkFailure> {
        self.call(|a| Cmd::Abort(epoch, false, a)).await
    }
    /// Discards the epoch on this sink only (the others publish it): its
    /// rows count as this sink's failures.
    pub async fn drop_epoch(&self, epoch: u64) -> Result<(), SinkFailure> {
        self.call(|a| Cmd::Abort(epoch, true, a)).await
    }
    /// Finishes the sink.
    pub async fn close(&self) -> Result<(), SinkFailure> {
        self.call(Cmd::Close).await
    }
    /// Queues a batch. A sink with an encoder gets a large batch encoded
    /// on the runtime's blocking pool, so that several batches are encoded
    /// at once while the sink's thread writes them in order; the queue's
    /// bound limits how many are in flight.
    pub async fn write(&self, batch: RecordBatch) -> Result<(), SinkFailure> {
        let cmd = match &self.encoder {
            Some(enc) if batch.num_rows() >= ENCODE_AHEAD_ROWS => {
                let (tx, rx) = oneshot::channel();
                let (enc, b) = (enc.clone(), batch.clone());
                tokio::task::spawn_blocking(move || {
                    let _ = tx.send(enc.encode(&b));
                });
                Cmd::Write(batch, Some(rx))
            }
            _ => Cmd::Write(batch, None),
        };
        self.tx
            .send(cmd)
            .await
            .map_err(|_| SinkFailure::stopped(&self.name))
    }
}

/// All sinks of a job.
pub struct FanOut {
    /// The sinks.
    pub sinks: Vec<SinkHandle>,
}

impl FanOut {
    /// Hands `batch` to every sink concurrently (a cheap Arc clone each).
    pub async fn write(&self, batch: &RecordBatch) {
        let sends = self.sinks.iter().map(|s| s.write(batch.clone()));
        for r in futures::future::join_all(sends).await {
            if let Err(e) = r {
                tracing::error!("{e}");
            }
        }
    }

    /// Runs `f` on every sink concurrently, returning (name, result) pairs.
    pub async fn each<'a, T, F, Fut>(&'a self, f: F) -> Vec<(&'a str, Result<T, SinkFailure>)>
    where
        F: Fn(&'a SinkHandle) -> Fut,
        Fut: std::future::Future<Output = Result<T, SinkFailure>> + 'a,
    {
        let futs = self.sinks.iter().map(|s| {
            let fut = f(s);
            async move { (s.name.as_str(), fut.await) }
        });
        futures::future::join_all(futs).await
    }
}
