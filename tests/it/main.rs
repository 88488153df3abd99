//! End-to-end tests: the `velo` binary on SQL applications.
//!
//! One integration-test binary (STYLE.md rule 7) with modules:
//! `golden` runs every case under `tests/sql/`; the others cover what a
//! golden file cannot (crashes, signals, watch mode, memory).

mod chains;
mod cluster;
mod common;
mod delta;
mod docs;
mod failures;
mod flight;
mod fuzz_corpus;
mod golden;
mod health;
mod hostile;
mod iceberg;
mod joins;
mod kafka;
mod lake;
mod nexmark;
mod process;
mod rowwindows;
mod server;
mod topn;
mod updating;
mod windows;
