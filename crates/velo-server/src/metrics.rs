//! Prometheus metrics of every hosted job and of the process, in the text
//! exposition format (prometheus-client). The seeds' names
//! (`velo_job_sources_total`, `velo_job_sinks_total`,
//! `velo_job_source_records_total`, `velo_job_sink_records_total`) and
//! more in the same style. Labels are the job, source and sink names of the
//! SQL and a fixed set of states: never a record value or a file name, and
//! never a secret.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::jobs::{JobView, Jobs, Phase};

/// What the metrics are written from: the jobs and the memory pool at one
/// moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Every job.
    pub views: Vec<JobView>,
    /// Bytes reserved in the shared memory pool.
    pub pool_reserved: usize,
    /// The pool's limit in MiB, if any.
    pub pool_limit_mb: Option<u64>,
}

impl Snapshot {
    /// The jobs of a server now.
    pub fn of(jobs: &Jobs) -> Self {
        Self {
            views: jobs.list(),
            pool_reserved: jobs.engine().memory_reserved(),
            pool_limit_mb: jobs.limits().max_memory_mb,
        }
    }
}

/// The metrics text of `snapshot` and the process.
pub fn render(snapshot: Snapshot) -> Result<String, String> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(JobsCollector(snapshot)));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        .map_err(|e| format!("cannot write the metrics: {e}"))?;
    Ok(text)
}

/// A source of snapshots: the server's jobs, or `velo run`'s.
pub type Snapshots = std::sync::Arc<dyn Fn() -> Snapshot + Send + Sync>;

/// Binds `addr` and returns the server of `GET /metrics` (and `/health`)
/// to spawn: `velo run --metrics-addr`.
pub async fn metrics_server(
    addr: std::net::SocketAddr,
    snapshots: Snapshots,
) -> crate::Result<impl std::future::Future<Output = ()> + Send> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        crate::ServerError::Io(format!(
            "cannot serve metrics on {addr}: {e}; pass another address with --metrics-addr"
        ))
    })?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let s = snapshots.clone();
                async move { crate::api::metrics_response(render(s())) }
            }),
        )
        .route("/health", axum::routing::get(|| async { "ok" }));
    Ok(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the metrics endpoint failed: {e}");
        }
    })
}

struct JobsCollector(Snapshot);

impl std::fmt::Debug for JobsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobsCollector")
    }
}

/// A family's series: its labels and value.
type Series<'a, V> = Vec<(Vec<(&'static str, &'a str)>, V)>;

fn gauges<V>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: Series<'_, V>,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<V>: EncodeMetric,
{
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: Series<'_, u64>,
) -> Result<(), std::fmt::Error> {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One series per job: `f` of its view.
fn per_job<V>(views: &[JobView], f: impl Fn(&JobView) -> V) -> Series<'_, V> {
    views
        .iter()
        .map(|v| (vec![("job", v.name.as_str())], f(v)))
        .collect()
}

impl Collector for JobsCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let v = &self.0.views;
        gauges(
            &mut enc,
            "velo_server_jobs",
            "Jobs hosted",
            vec![(vec![], v.len() as i64)],
        )?;
        gauges(
            &mut enc,
            "velo_job_sources_total",
            "Sources a job reads",
            per_job(v, |j| j.sources.len() as i64),
        )?;
        gauges(
            &mut enc,
            "velo_job_sinks_total",
            "Sinks a job writes",
            per_job(v, |j| j.sinks.len() as i64),
        )?;
        let mut reads = Vec::new();
        let mut writes = Vec::new();
        for j in v {
            for s in &j.sources {
                let n = j.totals.records_in.get(s).copied().unwrap_or(0);
                reads.push((vec![("job", j.name.as_str()), ("source", s.as_str())], n));
            }
            for s in &j.sinks {
                let n = j.totals.records_out.get(s).copied().unwrap_or(0);
                writes.push((vec![("job", j.name.as_str()), ("sink", s.as_str())], n));
            }
        }
        counters(
            &mut enc,
            "velo_job_source_records",
            "Records read per source",
            reads,
        )?;
        counters(
            &mut enc,
            "velo_job_sink_records",
            "Records written per sink",
            writes,
        )?;
        counters(
            &mut enc,
            "velo_job_records_failed",
            "Bad records and records of failed epochs",
            per_job(v, |j| j.totals.records_failed),
        )?;
        counters(
            &mut enc,
            "velo_job_records_dead_lettered",
            "Bad records sent to the dead-letter sink",
            per_job(v, |j| j.totals.records_dead_lettered),
        )?;
        counters(
            &mut enc,
            "velo_job_records_late",
            "Records behind the watermark",
            per_job(v, |j| j.totals.records_late),
        )?;
        counters(
            &mut enc,
            "velo_job_epochs_committed",
            "Epochs committed on every sink",
            per_job(v, |j| j.totals.epochs),
        )?;
        counters(
            &mut enc,
            "velo_job_epochs_aborted",
            "Epochs that failed and were aborted",
            per_job(v, |j| j.totals.epochs_failed),
        )?;
        counters(
            &mut enc,
            "velo_job_restarts",
            "Automatic restarts after an external error",
            per_job(v, |j| u64::from(j.restarts)),
        )?;
        let mut states = Vec::new();
        for j in v {
            for p in Phase::ALL {
                states.push((
                    vec![("job", j.name.as_str()), ("status", p.as_str())],
                    i64::from(j.phase == p),
                ));
            }
        }
        gauges(
            &mut enc,
            "velo_job_status",
            "1 for the job's status",
            states,
        )?;
        let now = chrono::Utc::now().timestamp_millis();
        let lag: Series<'_, f64> = v
            .iter()
            .filter_map(|j| {
                let w = j.status.as_ref()?.watermark?;
                Some((vec![("job", j.name.as_str())], (now - w) as f64 / 1000.0))
            })
            .collect();
        let source_lag_seconds: Series<'_, f64> = v
            .iter()
            .filter_map(|j| Some((j, j.status.as_ref()?)))
            .flat_map(|(j, s)| {
                s.source_watermarks.iter().map(move |(source, w)| {
                    (
                        vec![("job", j.name.as_str()), ("source", source.as_str())],
                        (now - w) as f64 / 1000.0,
                    )
                })
            })
            .collect();
        let mut circuit = Vec::new();
        let mut opened = Vec::new();
        let mut errors = Vec::new();
        let mut failed = Vec::new();
        for j in v {
            let Some(s) = &j.status else { continue };
            for (sink, h) in &s.sink_health {
                let l = vec![("job", j.name.as_str()), ("sink", sink.as_str())];
                circuit.push((
                    l.clone(),
                    match h.state {
                        velo_engine::circuit::CircuitState::Closed => 0,
                        velo_engine::circuit::CircuitState::Open => 1,
                        velo_engine::circuit::CircuitState::HalfOpen => 2,
                    },
                ));
                opened.push((l.clone(), h.opened));
                errors.push((l.clone(), h.errors));
                failed.push((l, h.records_failed));
            }
        }
        let mut source_failed = Vec::new();
        let mut source_late = Vec::new();
        let mut source_dead = Vec::new();
        let mut health = Vec::new();
        for j in v {
            for (source, t) in &j.totals.source_records {
                if !j.sources.contains(source) {
                    continue;
                }
                let l = vec![("job", j.name.as_str()), ("source", source.as_str())];
                source_failed.push((l.clone(), t.failed));
                source_late.push((l.clone(), t.late));
                source_dead.push((l, t.dead_lettered));
            }
        }
        let summaries: Vec<_> = v.iter().map(crate::api::summary).collect();
        let states = [
            ("connected", crate::api::Health::Connected),
            ("reconnecting", crate::api::Health::Reconnecting),
            ("failed", crate::api::Health::Failed),
            ("disconnected", crate::api::Health::Disconnected),
        ];
        for (j, s) in v.iter().zip(&summaries) {
            for (kind, map) in [("source", &s.sources), ("sink", &s.sinks)] {
                for (name, h) in map {
                    for (state, is) in &states {
                        let on = std::mem::discriminant(h) == std::mem::discriminant(is);
                        health.push((
                            vec![
                                ("job", j.name.as_str()),
                                ("kind", kind),
                                ("name", name.as_str()),
                                ("state", *state),
                            ],
                            i64::from(on),
                        ));
                    }
                }
            }
        }
        counters(
            &mut enc,
            "velo_job_source_records_failed",
            "Records of a source that could not be decoded (or their event time read)",
            source_failed,
        )?;
        counters(
            &mut enc,
            "velo_job_source_records_late",
            "Records of a source behind the watermark (dropped or dead-lettered)",
            source_late,
        )?;
        counters(
            &mut enc,
            "velo_job_source_records_dead_lettered",
            "Bad or late records of a source written to the dead-letter sink",
            source_dead,
        )?;
        gauges(
            &mut enc,
            "velo_job_connector_health",
            "A source's or sink's health: 1 for its state (connected, reconnecting, failed, disconnected), 0 for the others",
            health,
        )?;
        let mut source_lag = Vec::new();
        for j in v {
            let Some(s) = &j.status else { continue };
            for (source, parts) in &s.source_lag {
                for (part, n) in parts {
                    source_lag.push((
                        vec![
                            ("job", j.name.as_str()),
                            ("source", source.as_str()),
                            ("partition", part.as_str()),
                        ],
                        *n,
                    ));
                }
            }
        }
        gauges(
            &mut enc,
            "velo_job_source_lag_records",
            "Records between a source partition's committed position and its end (Kafka consumer lag, from librdkafka's statistics)",
            source_lag,
        )?;
        gauges(
            &mut enc,
            "velo_job_sink_circuit_state",
            "A sink's circuit breaker: 0 closed, 1 open, 2 half-open (current run)",
            circuit,
        )?;
        counters(
            &mut enc,
            "velo_job_sink_circuit_opened",
            "Times a sink's circuit opened (current run)",
            opened,
        )?;
        counters(
            &mut enc,
            "velo_job_sink_errors",
            "Epochs that failed on a sink (current run)",
            errors,
        )?;
        counters(
            &mut enc,
            "velo_job_sink_records_failed",
            "Records a sink failed to write (current run)",
            failed,
        )?;
        gauges(
            &mut enc,
            "velo_job_subscribers",
            "Flight SQL clients subscribed to the job's committed epochs (EMIT CHANGES)",
            v.iter()
                .map(|j| (vec![("job", j.name.as_str())], j.subscribers as i64))
                .collect(),
        )?;
        gauges(
            &mut enc,
            "velo_job_watermark_lag_seconds",
            "How far the job's event-time watermark is behind the wall clock",
            lag,
        )?;
        gauges(
            &mut enc,
            "velo_job_source_watermark_lag_seconds",
            "How far each source's own event-time watermark is behind the wall clock",
            source_lag_seconds,
        )?;
        gauges(
            &mut enc,
            "velo_job_state_rows",
            "Rows the job's streaming operators keep",
            per_job(v, |j| j.status.as_ref().map_or(0, |s| s.state_rows as i64)),
        )?;
        gauges(
            &mut enc,
            "velo_job_state_bytes",
            "Bytes the job's streaming operators keep (their memory-pool reservations)",
            per_job(v, |j| {
                j.status.as_ref().map_or(0, |s| s.memory_bytes as i64)
            }),
        )?;
        self.histograms(
            &mut enc,
            "velo_job_epoch_duration_seconds",
            "Committed epochs, from the start of reading to the commit on every sink (current run)",
            v,
            |j| j.epoch_seconds.as_ref(),
        )?;
        self.histograms(
            &mut enc,
            "velo_job_latency_seconds",
            "End-to-end latency of each committed epoch's first (oldest) record: from being read to the commit on every sink (current run)",
            v,
            |j| j.latency_seconds.as_ref(),
        )?;
        self.histograms(
            &mut enc,
            "velo_job_checkpoint_duration_seconds",
            "Writing each checkpoint durably: operator state and the checkpoint file (current run)",
            v,
            |j| j.checkpoint_seconds.as_ref(),
        )?;
        gauges(
            &mut enc,
            "velo_job_checkpoint_bytes",
            "Bytes of the job's last checkpoint: operator state and the checkpoint file",
            per_job(v, |j| j.checkpoint_bytes as i64),
        )?;
        self.sink_histograms(
            &mut enc,
            "velo_job_sink_write_seconds",
            "Each call handing a sink a batch, retries included (current run)",
            v,
            |h| h.write_seconds.as_ref(),
        )?;
        self.sink_histograms(
            &mut enc,
            "velo_job_sink_commit_seconds",
            "Each epoch's prepare and publish on a sink (current run)",
            v,
            |h| h.commit_seconds.as_ref(),
        )?;
        self.process(&mut enc)
    }
}

/// One series of a histogram family.
fn encode_histogram(
    family: &mut prometheus_client::encoding::MetricEncoder,
    labels: &[(&str, &str)],
    h: &velo_engine::stats::HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let in_buckets: u64 = h.buckets.iter().map(|(_, n)| n).sum();
    let count = h.count.max(in_buckets);
    let mut buckets = h.buckets.clone();
    buckets.push((f64::INFINITY, count - in_buckets));
    family
        .encode_family(&labels)?
        .encode_histogram::<NoLabelSet>(h.sum, count, &buckets, None)
}

impl JobsCollector {
    /// One histogram family: `of` each job's snapshot (current run).
    fn histograms(
        &self,
        enc: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        views: &[JobView],
        of: impl Fn(&JobView) -> Option<&velo_engine::stats::HistogramSnapshot>,
    ) -> Result<(), std::fmt::Error> {
        let mut family = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for j in views {
            let Some(h) = of(j) else { continue };
            encode_histogram(&mut family, &[("job", j.name.as_str())], h)?;
        }
        Ok(())
    }

    /// One histogram family per sink: `of` each sink's health (current run).
    fn sink_histograms(
        &self,
        enc: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        views: &[JobView],
        of: impl Fn(&velo_engine::circuit::SinkHealth) -> Option<&velo_engine::stats::HistogramSnapshot>,
    ) -> Result<(), std::fmt::Error> {
        let mut family = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for j in views {
            let Some(s) = &j.status else { continue };
            for (sink, h) in &s.sink_health {
                if let Some(h) = of(h) {
                    let labels = [("job", j.name.as_str()), ("sink", sink.as_str())];
                    encode_histogram(&mut family, &labels, h)?;
                }
            }
        }
        Ok(())
    }

    fn process(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauges(
            enc,
            "velo_memory_pool_reserved_bytes",
            "Memory the jobs' operators hold in the shared pool",
            vec![(vec![], self.0.pool_reserved as i64)],
        )?;
        if let Some(mb) = self.0.pool_limit_mb {
            gauges(
                enc,
                "velo_memory_pool_limit_bytes",
                "The shared pool's limit (VELO_MAX_MEMORY_MB)",
                vec![(vec![], (mb * 1024 * 1024) as i64)],
            )?;
        }
        if let Some(rss) = resident_bytes() {
            gauges(
                enc,
                "velo_process_resident_memory_bytes",
                "The process's resident memory",
                vec![(vec![], rss as i64)],
            )?;
        }
        Ok(())
    }
}

/// The process's resident memory, from `/proc/self/statm` (Linux).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
