//! The blackhole sink (`type = 'blackhole'`): accepts every row and keeps
//! none. The sink of benchmarks (Nexmark measures the engine, not a disk)
//! and of dry runs; the job's statistics still count what it received.

use arrow::array::RecordBatch;
use velo_config::keys::KeySpec;

use crate::Result;
use crate::sink::{Sink, SinkCapabilities};

/// Keys of `blackhole`: none.
pub const KEYS: &[KeySpec] = &[];

/// The blackhole sink.
#[derive(Debug)]
pub struct BlackholeSink {
    name: String,
}

impl BlackholeSink {
    /// A blackhole named `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
        }
    }
}

impl Sink for BlackholeSink {
    fn name(&self) -> &str {
        &self.name
    }
    fn capabilities(&self) -> SinkCapabilities {
        // nothing is published, so nothing can be half-published
        SinkCapabilities { transactions: true }
    }
    fn set_transactional(&mut self, _on: bool) {}
    fn begin_epoch(&mut self, _epoch: u64) -> Result<()> {
        Ok(())
    }
    fn write(&mut self, _batch: &RecordBatch) -> Result<()> {
        Ok(())
    }
    fn prepare_commit(&mut self, _epoch: u64) -> Result<()> {
        Ok(())
    }
    fn commit(&mut self, _epoch: u64) -> Result<()> {
        Ok(())
    }
    fn abort(&mut self, _epoch: u64) -> Result<()> {
        Ok(())
    }
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
    fn describe(&self) -> String {
        "blackhole (rows are counted and dropped)".into()
    }
}
