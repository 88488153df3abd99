//! The stdout sink: a table or JSON Lines on standard output; also the
//! fallback when no configured sink could be created.

use std::io::Write;

use arrow::array::RecordBatch;
use velo_config::keys::{KeySpec, KeyType};

use crate::sink::{Sink, SinkCapabilities};
use crate::{ConnectorError, Result};

/// Keys of `stdout`.
pub const KEYS: &[KeySpec] = &[KeySpec::new(
    "format",
    KeyType::Enum(&["table", "jsonl", "json", "csv"]),
    Some("table"),
    "table (pretty), jsonl or csv",
)];

/// Output style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdoutFormat {
    /// Pretty table per batch.
    Table,
    /// One JSON object per line.
    JsonLines,
    /// CSV with a header once.
    Csv,
}

/// The stdout sink.
#[derive(Debug)]
pub struct StdoutSink {
    name: String,
    format: StdoutFormat,
    header_done: bool,
}

impl StdoutSink {
    /// A stdout sink.
    pub fn new(name: &str, format: StdoutFormat) -> Self {
        Self {
            name: name.to_string(),
            format,
            header_done: false,
        }
    }

    /// From config.
    pub fn from_config(cfg: &velo_config::ConnectorConfig) -> Result<Self> {
        let f = match cfg.get("format").map(|s| s.to_ascii_lowercase()).as_deref() {
            None | Some("table") => StdoutFormat::Table,
            Some("jsonl") | Some("json") => StdoutFormat::JsonLines,
            Some("csv") => StdoutFormat::Csv,
            Some(other) => return Err(cfg.invalid("format", other, "table, jsonl or csv").into()),
        };
        Ok(Self::new(&cfg.name, f))
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> &str {
        &self.name
    }
    fn capabilities(&self) -> SinkCapabilities {
        SinkCapabilities {
            transactions: false,
        }
    }
    fn set_transactional(&mut self, _on: bool) {}
    fn begin_epoch(&mut self, _epoch: u64) -> Result<()> {
        Ok(())
    }
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let out = std::io::stdout();
        let mut out = out.lock();
        let io = |e: std::io::Error| ConnectorError::Other(format!("cannot write to stdout: {e}"));
        match self.format {
            StdoutFormat::Table => {
                let t = arrow::util::pretty::pretty_format_batches(std::slice::from_ref(batch))?;
                writeln!(out, "{t}").map_err(io)?;
            }
            StdoutFormat::JsonLines => {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
                w.write(batch)?;
                w.finish()?;
            }
            StdoutFormat::Csv => {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(!self.header_done)
                    .build(&mut out);
                w.write(batch)?;
                self.header_done = true;
            }
        }
        Ok(())
    }
    fn prepare_commit(&mut self, _epoch: u64) -> Result<()> {
        std::io::stdout()
            .flush()
            .map_err(|e| ConnectorError::Other(format!("cannot flush stdout: {e}")))
    }
    fn commit(&mut self, _epoch: u64) -> Result<()> {
        Ok(())
    }
    fn abort(&mut self, _epoch: u64) -> Result<()> {
        Ok(())
    }
    fn close(&mut self) -> Result<()> {
        self.prepare_commit(0)
    }
    fn describe(&self) -> String {
        format!("stdout ({:?})", self.format)
    }
}
