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
    name: String,
    schema: SchemaRef,
    describe: String,
    /// Its source (`None`: a table another statement keeps).
    source: Option<Arc<dyn Source>>,
    rows: Arc<RwLock<Vec<RecordBatch>>>,
    refresh: Option<Duration>,
    loaded_at: std::sync::Mutex<Instant>,
    /// A table of another statement: set once it has its first rows.
    ready: Option<tokio::sync::watch::Receiver<bool>>,
}

impl LookupTable {
    /// An empty table over `source`, reloaded every `refresh` if given.
    pub fn new(source: Arc<dyn Source>, refresh: Option<Duration>) -> Self {
        Self {
            name: source.name().to_string(),
            schema: source.schema(),
            describe: source.describe(),
            source: Some(source),
            rows: Arc::new(RwLock::new(Vec::new())),
            refresh,
            loaded_at: std::sync::Mutex::new(Instant::now()),
            ready: None,
        }
    }

    /// The table `t` of another statement (`CREATE TABLE`): its rows as they
    /// are at each epoch.
    pub fn of_table(t: &crate::tables::Table) -> Self {
        Self {
            name: t.name().to_string(),
            schema: t.schema(),
            describe: format!(
                "the table of the statement CREATE TABLE {} (its latest row per key, as it is at each epoch)",
                t.name()
            ),
            source: None,
            rows: t.rows(),
            refresh: None,
            loaded_at: std::sync::Mutex::new(Instant::now()),
            ready: Some(t.ready()),
        }
    }

    /// Waits until a table of another statement has the rows of its first
    /// epoch (a stream joined with it from the start would otherwise meet an
    /// empty table), or until `shutdown`.
    pub async fn wait_ready(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let Some(mut ready) = self.ready.clone() else {
            return;
        };
        if *ready.borrow() {
            return;
        }
        tracing::info!("waiting for the first rows of table '{}'", self.name);
        tokio::select! {
            _ = ready.wait_for(|r| *r) => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
    }

    /// Its name in SQL.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A one-line description.
    pub fn describe(&self) -> &str {
        &self.describe
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
        let Some(source) = &self.source else {
            return Ok(self.num_rows());
        };
        let feed = EpochFeed::new(
            source.clone(),
            8192,
            BadRecordPolicy::Collect,
            Counters::new(),
            shutdown,
            None,
        )?;
        let batches = feed.drain_all().await.map_err(|e| {
            DataFusionError::Execution(format!("lookup table '{}': {e}", self.name))
        })?;
        for b in feed.take_bad().await {
            tracing::warn!("{b} (lookup table; record skipped)");
            Counters::add(&counters.records_failed, 1);
            Counters::add(&counters.source(&self.name).failed, 1);
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
            Ok(n) => tracing::info!("lookup table '{}' reloaded: {n} rows", self.name),
            Err(e) => {
                // try again at the next interval, keep joining with the old rows
                *self.loaded_at.lock().expect("lookup time") = Instant::now();
                tracing::warn!(
                    "lookup table '{}' could not be reloaded, the old rows stay in use: {e}",
                    self.name
                );
            }
        }
    }

    /// The table for DataFusion: each scan (each epoch) reads the rows held
    /// at that moment.
    pub fn provider(&self) -> Result<Arc<dyn datafusion::catalog::TableProvider>, DataFusionError> {
        let schema = self.schema.clone();
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
