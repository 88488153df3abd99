//! The streaming operators: DataFusion `ExecutionPlan`s of our own where
//! state lives across epochs, put in place of DataFusion's by physical
//! optimizer rules. [`window`]: windows and updating aggregates; [`join`]:
//! stream-stream interval joins (its rule runs the others' in one bottom-up
//! pass); [`rowwindow`]: LAG, LEAD, ranks and running aggregates on a
//! stream. What they share: the [`state`] registry (checkpoints), the live
//! [`metrics`] of their size, and their reservation of the memory pool
//! ([`memory`]).

pub mod join;
pub(crate) mod memory;
pub mod metrics;
pub mod rowwindow;
pub mod state;
pub mod window;
