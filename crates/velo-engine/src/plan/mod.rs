//! Planning: from a parsed application to jobs ready to run.
//!
//! [`resolve`] turns the application's statements and configuration into
//! [`JobPlan`]s (connector and job settings resolved, every error
//! collected); [`prepare`] builds a job's sources and feeds, registers them
//! in a DataFusion session ([`session`]: our streaming operators as
//! physical optimizer rules) and plans its query. The runtime
//! (`crate::runtime`) then runs the [`PreparedJob`].

pub mod batch;
mod chain;
mod changes;
pub mod cluster;
pub mod files;
pub mod listing;
pub mod prepare;
pub mod resolve;
pub mod session;

pub use cluster::ClusterPlanner;
pub use prepare::{PreparedJob, Purpose, check_offline, prepare_job};
pub use resolve::{
    AppInputs, AppPlan, JobPlan, PlanOptions, resolve, resolve_all, resolve_inputs, stdout_sink,
};
