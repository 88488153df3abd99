//! Lookup tables: the bounded sources a job joins its stream with
//! (stream-table enrichment).
//!
//! Where it sits: beside the driving source's feed. A lookup table is read
//! whole before the first epoch and kept in memory; every epoch's plan scans
//! the rows it holds at that moment, so with `'<table>.refresh_interval'` the
//! table is read again between epochs and the join uses the new rows from the
//! next epoch on. A reload that fails keeps the old rows (and says so).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use velo_connectors::Source;

use crate::feed::{BadRecordPolicy, EpochFeed};
use crate::stats::Counters;

/// One lookup table of a job.
#[derive(Debug)]
pub struct LookupTable {
    /// Its source.
    pub source: Arc<dyn Source>,
    rows: Arc<RwLock<Vec<RecordBatch>>>,
    refresh: Option<Duration>,
    loaded_at: std::sync::Mutex<Instant>,
}

impl LookupTable {
    /// An empty table over `source`, reloaded every `refresh` if given.
    pub fn new(source: Arc<dyn Source>, refresh: Option<Duration>) -> Self {
        Self {
            source,
            rows: Arc::new(RwLock::new(Vec::new())),
            refresh,
            loaded_at: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// Rows held now.
    pub fn num_rows(&self) -> u64 {
        self.rows
            .read()
            .expect("lookup rows")
            .iter()
            .map(|b| b.num_rows() as u64)
            .sum()
    }

    /// The reload interval, if any.
    pub fn refresh_interval(&self) -> Option<Duration> {
        self.refresh
    }

    /// Reads the whole source and puts its rows in place; bad records are
    /// logged and counted in `counters`.
    pub async fn load(
        &self,
        counters: &Arc<Counters>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<u64, DataFusionError> {
        let feed = EpochFeed::new(
            self.source.clone(),
            8192,
            BadRecordPolicy::Collect,
            Counters::new(),
            shutdown,
            None,
        )?;
        let batches = feed.drain_all().await.map_err(|e| {
            DataFusionError::Execution(format!("lookup table '{}': {e}", self.source.name()))
        })?;
        for b in feed.take_bad().await {
            tracing::warn!("{b} (lookup table; record skipped)");
            Counters::add(&counters.records_failed, 1);
        }
        let n = batches.iter().map(|b| b.num_rows() as u64).sum();
        *self.rows.write().expect("lookup rows") = batches;
        *self.loaded_at.lock().expect("lookup time") = Instant::now();
        Ok(n)
    }

    /// Reloads the table if its refresh interval has passed since the last
    /// load; a failed reload keeps the old rows.
    pub async fn refresh_if_due(
        &self,
        counters: &Arc<Counters>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let Some(every) = self.refresh else { return };
        if self.loaded_at.lock().expect("lookup time").elapsed() < every {
            return;
        }
        match self.load(counters, shutdown).await {
            Ok(n) => tracing::info!("lookup table '{}' reloaded: {n} rows", self.source.name()),
            Err(e) => {
                // try again at the next interval, keep joining with the old rows
                *self.loaded_at.lock().expect("lookup time") = Instant::now();
                tracing::warn!(
                    "lookup table '{}' could not be reloaded, the old rows stay in use: {e}",
                    self.source.name()
                );
            }
        }
    }

    /// The table for DataFusion: each scan (each epoch) reads the rows held
    /// at that moment.
    pub fn provider(&self) -> Result<Arc<dyn datafusion::catalog::TableProvider>, DataFusionError> {
        let schema = self.source.schema();
        let part = Arc::new(LookupPartition {
            schema: schema.clone(),
            rows: self.rows.clone(),
        });
        Ok(Arc::new(
            datafusion::catalog::streaming::StreamingTable::try_new(schema, vec![part])?,
        ))
    }
}

#[derive(Debug)]
struct LookupPartition {
    schema: SchemaRef,
    rows: Arc<RwLock<Vec<RecordBatch>>>,
}

impl PartitionStream for LookupPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = self.rows.read().expect("lookup rows").clone();
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(batches.into_iter().map(Ok)),
        ))
    }
}
