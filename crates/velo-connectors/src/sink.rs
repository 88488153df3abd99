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

pub use crate::changelog::{OP_COLUMN, OP_DELETE, OP_INSERT, OP_UPDATE, deletes};

/// What a sink can do.
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkCapabilities {
    /// Epochs can be published atomically (all or nothing).
    pub transactions: bool,
}

/// Turns result batches into a sink's bytes on any thread: the engine
/// encodes several batches at once, ahead of the sink's own thread, which
/// then only writes them ([`Sink::write_encoded`]), in order.
pub trait BatchEncoder: Send + Sync + std::fmt::Debug {
    /// The bytes of `batch`, as the sink would write them.
    fn encode(&self, batch: &RecordBatch) -> Result<Vec<u8>>;
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
    /// The result's key columns (the GROUP BY columns of an aggregate), for
    /// sinks that key their records (Kafka) when no key is configured.
    fn set_key_columns(&mut self, _columns: &[String]) {}
    /// Called once before the first epoch when the result is updating: its
    /// batches are [`crate::changelog::ChangeBatch`]es in their wire form
    /// (the rows and `_op`), which a sink of [`crate::changelog::ChangeMode::Upsert`]
    /// reads with [`crate::changelog::ChangeBatch::from_batch`].
    fn set_changelog(&mut self) {}
    /// Called once before the first epoch when this run continues an
    /// earlier run of the job (a hosted job started again after a stop, a
    /// failure or a server restart): what the earlier run published is
    /// kept, never replaced (a file sink appends to its file).
    fn set_continuing(&mut self) {}
    /// Starts epoch `epoch`.
    fn begin_epoch(&mut self, epoch: u64) -> Result<()>;
    /// Writes one result batch.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// An encoder the engine may run on its own threads (after
    /// `set_schema`); its bytes come back through `write_encoded`. None
    /// (the default): `write` encodes.
    fn encoder(&self) -> Option<std::sync::Arc<dyn BatchEncoder>> {
        None
    }
    /// Writes `batch`, already encoded by [`Sink::encoder`] as `bytes`.
    fn write_encoded(&mut self, batch: &RecordBatch, bytes: &[u8]) -> Result<()> {
        let _ = bytes;
        self.write(batch)
    }
    /// Makes the epoch durable (flush / close temporary file).
    fn prepare_commit(&mut self, epoch: u64) -> Result<()>;
    /// Publishes the epoch.
    fn commit(&mut self, epoch: u64) -> Result<()>;
    /// Discards what the epoch wrote, as far as the sink can.
    fn abort(&mut self, epoch: u64) -> Result<()>;
    /// After `prepare_commit`: what a restarted job needs to finish publishing
    /// this epoch if the process dies before `commit` (stored in the job's
    /// checkpoint). `None`: nothing to finish (the default).
    fn commit_token(&self) -> Option<serde_json::Value> {
        None
    }
    /// On restart, before the first epoch: finishes publishing the epoch that
    /// `token` describes (the checkpoint says it committed). Must be idempotent.
    fn recover(&mut self, _token: &serde_json::Value) -> Result<()> {
        Ok(())
    }
    /// Transactional mode, before `prepare_commit`: the driving source's
    /// position after this epoch, and the source's transaction context, for
    /// a sink that can commit them inside its own transaction (Kafka's
    /// `send_offsets_to_transaction`). Ignored by default.
    fn set_epoch_position(
        &mut self,
        _position: &crate::Position,
        _context: Option<crate::TransactionContext>,
    ) -> Result<()> {
        Ok(())
    }
    /// Finishes: closes files, publishes what is committed.
    fn close(&mut self) -> Result<()>;
    /// A one-line description for `explain`.
    fn describe(&self) -> String;
}
