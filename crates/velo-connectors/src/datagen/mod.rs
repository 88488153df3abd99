//! The generator source (`type = 'datagen'`): deterministic rows from column
//! specs, a row count or a rate. The quickstart's input and the benchmark's.

pub mod config;
pub mod source;

pub use config::{DatagenConfig, KEYS};
pub use source::DatagenSource;
