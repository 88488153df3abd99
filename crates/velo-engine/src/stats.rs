//! Job statistics: what was read, written, failed, and how fast.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Live counters shared by the runtime, the fan-out and the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records read from the driving source.
    pub records_in: AtomicU64,
    /// Result records handed to the sinks.
    pub records_out: AtomicU64,
    /// Bad records and records of failed epochs.
    pub records_failed: AtomicU64,
    /// Committed epochs.
    pub epochs: AtomicU64,
    /// Records older than the watermark (dropped or dead-lettered).
    pub records_late: AtomicU64,
    /// Epochs that failed (read again, discarded or fatal).
    pub epochs_failed: AtomicU64,
    /// Bad records written to the dead-letter sink.
    pub records_dead_lettered: AtomicU64,
    /// When the last epoch committed (ms since the Unix epoch; 0: none yet).
    pub committed_at_ms: AtomicI64,
    /// How long committed epochs took, from the start of reading to the
    /// commit: the longest a record of the epoch waited to be published.
    pub epoch_seconds: Histogram,
    /// How long the first record of each committed epoch waited, from
    /// being read to the commit on every sink: the end-to-end latency of
    /// the epoch's oldest record (ingest to publication).
    pub latency_seconds: Histogram,
    /// How long writing each checkpoint took (operator state and the
    /// checkpoint file, durable).
    pub checkpoint_seconds: Histogram,
    /// Bytes of the last checkpoint (operator state and checkpoint file).
    pub checkpoint_bytes: AtomicU64,
    /// Each source's share of the bad, late and dead-lettered records.
    sources: std::sync::Mutex<BTreeMap<String, Arc<SourceCounts>>>,
}

/// What went wrong with one source's records.
#[derive(Debug, Default)]
pub struct SourceCounts {
    /// Records that could not be decoded (or whose event time could not
    /// be read), or that failed in an expression.
    pub failed: AtomicU64,
    /// Records behind the watermark.
    pub late: AtomicU64,
    /// Of these, records written to the dead-letter sink.
    pub dead_lettered: AtomicU64,
}

/// [`SourceCounts`] read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SourceTotals {
    /// Bad records.
    pub failed: u64,
    /// Late records.
    pub late: u64,
    /// Records dead-lettered.
    pub dead_lettered: u64,
}

impl SourceTotals {
    /// Adds another run's counts.
    pub fn add(&mut self, o: &SourceTotals) {
        self.failed += o.failed;
        self.late += o.late;
        self.dead_lettered += o.dead_lettered;
    }
}

impl Counters {
    /// Shared counters.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    /// Adds to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    /// The counts of source `name` (created at its first use).
    pub fn source(&self, name: &str) -> Arc<SourceCounts> {
        let mut m = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name.to_string()).or_default().clone()
    }
    /// Every source's counts, read now.
    pub fn sources(&self) -> BTreeMap<String, SourceTotals> {
        let m = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .map(|(n, c)| {
                (
                    n.clone(),
                    SourceTotals {
                        failed: Self::get(&c.failed),
                        late: Self::get(&c.late),
                        dead_lettered: Self::get(&c.dead_lettered),
                    },
                )
            })
            .collect()
    }
}

/// Upper bounds (seconds) of [`Histogram`]'s buckets: 1 ms to 5 min.
pub const HISTOGRAM_BOUNDS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A histogram of durations in fixed buckets ([`HISTOGRAM_BOUNDS`]),
/// observed without locks by the job and read by a metrics exporter.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; HISTOGRAM_BOUNDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// A histogram read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Sum of the observations, in seconds.
    pub sum: f64,
    /// How many observations.
    pub count: u64,
    /// The count of each bucket by its upper bound (seconds), not
    /// cumulative; what is above the last bound is `count` less their sum.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = HISTOGRAM_BOUNDS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The observations so far.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets = HISTOGRAM_BOUNDS
            .iter()
            .zip(&self.buckets)
            .map(|(b, n)| (*b, n.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: self.count.load(Ordering::Relaxed),
            buckets,
        }
    }
}

/// The statistics of a finished job (the seeds' `JobExecutionStats`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobExecutionStats {
    /// Job name.
    pub job: String,
    /// Records read per source.
    pub records_read: BTreeMap<String, u64>,
    /// Records written per sink.
    pub records_written: BTreeMap<String, u64>,
    /// Records that failed per sink (write failures).
    pub sink_failures: BTreeMap<String, u64>,
    /// Records processed (read from all sources).
    pub records_processed: u64,
    /// Bad records plus records of failed epochs.
    pub records_failed: u64,
    /// Bad records sent to the dead-letter sink.
    pub records_dead_lettered: u64,
    /// Records older than the watermark.
    pub records_late: u64,
    /// Committed epochs.
    pub batches_processed: u64,
    /// Epochs that failed.
    pub batches_failed: u64,
    /// Arrow batches handed to the sinks.
    pub arrow_batches: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// The most rows stream-stream joins kept at once (their state).
    pub join_rows_peak: u64,
    /// The most keys row windows (OVER) kept state for at once.
    pub row_keys_peak: u64,
    /// The most rows row windows kept at once (history and waiting rows).
    pub row_rows_peak: u64,
    /// Records read whose epoch was discarded (LogAndContinue: their
    /// results reached no sink).
    pub records_unwritten: u64,
    /// Why the results went to stdout instead of the configured sinks.
    pub fallback: Option<String>,
}

impl JobExecutionStats {
    /// Input records per second.
    pub fn records_per_second(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.records_processed as f64 / s
        } else {
            0.0
        }
    }

    /// What the run failed to deliver: empty when every record read was
    /// written to every sink or routed (dead-lettered, dropped as late by
    /// the job's rules). A run with losses does not exit 0.
    pub fn losses(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(why) = &self.fallback {
            out.push(format!(
                "no sink could be created ({why}); the results went to stdout instead"
            ));
        }
        for (sink, n) in &self.sink_failures {
            out.push(format!("sink '{sink}' failed to write {n} records"));
        }
        if self.records_unwritten > 0 {
            out.push(format!(
                "{} records read were not written: their epochs failed and were discarded (failure_strategy LogAndContinue)",
                self.records_unwritten
            ));
        }
        out
    }

    /// A human summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "job '{}': {} records read, {} failed, {} epochs ({} failed), {:.2}s, {:.0} rows/s",
            self.job,
            self.records_processed,
            self.records_failed,
            self.batches_processed,
            self.batches_failed,
            self.elapsed.as_secs_f64(),
            self.records_per_second()
        );
        for (k, v) in &self.records_read {
            s.push_str(&format!("\n  source {k}: {v} read"));
        }
        for (k, v) in &self.records_written {
            let failed = self.sink_failures.get(k).copied().unwrap_or(0);
            s.push_str(&format!(
                "\n  sink {k}: {v} written{}",
                if failed > 0 {
                    format!(", {failed} failed")
                } else {
                    String::new()
                }
            ));
        }
        if self.records_late > 0 {
            s.push_str(&format!(
                "\n  late: {} records behind the watermark",
                self.records_late
            ));
        }
        if self.join_rows_peak > 0 {
            s.push_str(&format!(
                "\n  join state: at most {} rows kept",
                self.join_rows_peak
            ));
        }
        if self.row_keys_peak > 0 {
            s.push_str(&format!(
                "\n  row-window state: at most {} keys, {} rows kept",
                self.row_keys_peak, self.row_rows_peak
            ));
        }
        if self.records_dead_lettered > 0 {
            s.push_str(&format!(
                "\n  dead-letter: {} records",
                self.records_dead_lettered
            ));
        }
        s
    }
}
