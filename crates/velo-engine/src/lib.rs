//! # velo-engine: the job runtime
//!
//! The middle of the data path. [`plan`] turns a parsed application
//! (`velo-sql`) into runnable jobs: configuration resolved (`velo-config`),
//! sources and sinks built by the connector registry of the process's
//! [`Engine`] (assembled by the binary: the engine depends on no connector
//! SDK), every stream of a job registered in a DataFusion
//! `SessionContext` as a streaming table with a feed of its own ([`feed`]),
//! bounded JOIN sources loaded as in-memory lookup tables ([`lookup`]), and
//! the SELECT planned by DataFusion, with streaming operators of our own
//! where state lives across epochs ([`operators`]: windows and updating
//! aggregates, row windows, stream-stream interval joins). [`runtime`] then runs each job behind a
//! [`runtime::JobHandle`] (live status, stop, wait) in **epochs**
//! (ARCHITECTURE.md decision 2): the batch strategy decides where an epoch
//! ends; the physical plan is executed over what the sources delivered in
//! that epoch; every result batch goes through the [`fanout`] to every sink
//! concurrently; then the epoch is committed — sinks prepare, the
//! [`checkpoint`] is written, sinks publish — with bad records going to the
//! dead-letter sink in the same epoch. Failure strategies and
//! [`stats::JobExecutionStats`] live here too.

pub mod changelog;
pub mod checkpoint;
pub mod circuit;
pub mod collisions;
pub mod docs;
mod engine;
pub mod fanout;
pub mod feed;
#[doc(hidden)]
pub mod fuzzing;
pub mod lookup;
pub mod operators;
pub mod plan;
pub mod prune;
pub mod rowerrors;
pub mod runtime;
pub mod stats;
pub mod tables;
pub mod time;

mod error;

pub use engine::Engine;
pub use error::{EngineError, ErrorKind, KindedError, Result};
pub use plan::{AppPlan, JobPlan, PlanOptions};
pub use runtime::{Shutdown, run_app};
pub use stats::JobExecutionStats;
