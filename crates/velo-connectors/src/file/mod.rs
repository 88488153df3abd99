//! The file connector: CSV, JSON Lines, JSON arrays and Parquet in, JSON
//! Lines, JSON, CSV and Parquet out; glob paths, gzip/zstd, watch mode,
//! path templates, rotation and atomic per-epoch publishing.

pub mod config;
mod decode;
pub mod listing;
pub mod partitioned;
pub mod sink;
pub mod source;
pub mod store;

pub use config::{FileFormat, FileSinkConfig, FileSourceConfig, SINK_KEYS, SOURCE_KEYS};
pub use partitioned::PartitionedSink;
pub use sink::FileSink;
pub use source::FileSource;
