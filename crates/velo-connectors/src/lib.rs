//! # velo-connectors: sources and sinks
//!
//! Second and last stages of the data path. A **source** ([`Source`]) turns
//! bytes into Arrow `RecordBatch`es (arrow-csv, arrow-json and parquet
//! decoders, never per-record maps) on a thread of its own and hands them to
//! the engine through a bounded channel, so memory stays flat however large
//! the input. Records that cannot be decoded are not dropped: they come out
//! as [`BadRecord`]s (file, line, error, raw text) for the engine's failure
//! strategy. A **sink** ([`Sink`]) receives result batches between
//! `begin_epoch` and `prepare_commit`/`commit` (or `abort`), which is what
//! gives the engine its delivery guarantees; the engine's fan-out runs every
//! sink on its own thread.
//!
//! One connector, one folder (`file/`, `datagen/`, `nexmark/`, `stdout/`),
//! each with its typed configuration; [`registry`] builds them by type name
//! and says what each produces or accepts ([`ChangeMode`]). Shared by all
//! connectors: [`changelog`] (changes to keyed rows, one typed form) and
//! [`storage`] (local directories and object stores, one code path).

pub mod blackhole;
pub mod changelog;
pub mod context;
pub mod datagen;
pub mod file;
#[doc(hidden)]
pub mod fuzzing;
pub mod jsondepth;
pub mod merge;
pub mod nexmark;
pub mod registry;
pub mod schema;
pub mod sink;
pub mod source;
pub mod stdout;
pub mod storage;
pub mod template;

mod error;

pub use changelog::{ChangeBatch, ChangeMode, ChangeOp};
pub use context::{BoxFuture, ConnectorContext};
pub use error::{ConnectorError, ErrorKind, Result, io_kind};
pub use sink::{BatchEncoder, Sink, SinkCapabilities};
pub use source::{
    BadRecord, ListedFile, ListingFormat, ListingSpec, NullColumns, Position, PositionCommitter,
    Pruning, Source, SourceEvent, SourceReader, TransactionContext,
};
pub use storage::Storage;
