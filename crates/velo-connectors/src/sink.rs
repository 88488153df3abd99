//! The sink side. The engine's fan-out drives every sink through the epoch
//! protocol on a thread of its own:
//!
//! `begin_epoch` -> `write`* -> `prepare_commit` -> `commit`  (or `abort`)
//!
//! `prepare_commit` makes the epoch durable without publishing it (a
//! transactional file sink closes its temporary file); `commit` publishes it
//! (renames). A non-transactional sink flushes in `prepare_commit`.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::Result;

/// What a sink can do.
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkCapabilities {
    /// Epochs can be published atomically (all or nothing).
    pub transactions: bool,
}

/// A configured output. Methods block; the fan-out calls them off the async runtime.
pub trait Sink: Send + std::fmt::Debug {
    /// The name used in SQL.
    fn name(&self) -> &str;
    /// What the sink supports.
    fn capabilities(&self) -> SinkCapabilities;
    /// Switches to transactional epochs (only if `capabilities().transactions`).
    fn set_transactional(&mut self, on: bool);
    /// The schema of the batches to come (called once before the first epoch).
    fn set_schema(&mut self, _schema: SchemaRef) {}
    /// Starts epoch `epoch`.
    fn begin_epoch(&mut self, epoch: u64) -> Result<()>;
    /// Writes one result batch.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Makes the epoch durable (flush / close temporary file).
    fn prepare_commit(&mut self, epoch: u64) -> Result<()>;
    /// Publishes the epoch.
    fn commit(&mut self, epoch: u64) -> Result<()>;
    /// Discards what the epoch wrote, as far as the sink can.
    fn abort(&mut self, epoch: u64) -> Result<()>;
    /// Finishes: closes files, publishes what is committed.
    fn close(&mut self) -> Result<()>;
    /// A one-line description for `explain`.
    fn describe(&self) -> String;
}
