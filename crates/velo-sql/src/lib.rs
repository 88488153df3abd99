//! # velo-sql: the Velostream SQL front end
//!
//! First stage of the data path: an application file (`app.sql`) goes in, an
//! [`AppSpec`] comes out — one [`StatementSpec`] per statement, each with its
//! SELECT as a sqlparser [`Query`](datafusion::sql::sqlparser::ast::Query), the
//! sources it reads (FROM/JOIN), the sinks it writes (INTO), and its
//! `WITH ('k' = 'v', ...)` properties. The SELECT itself is later lowered to a
//! DataFusion `LogicalPlan` by [`lower`], against the tables the engine
//! registers for the sources.
//!
//! The Velostream extensions are parsed on top of sqlparser-rs (the parser
//! DataFusion uses), never by a hand-written SQL parser:
//!
//! * `CREATE STREAM name AS SELECT ... INTO a, b WITH (...)`, `CREATE TABLE
//!   name AS SELECT ...`, bare `SELECT ... INTO ... WITH (...)`, `INSERT INTO
//!   sink SELECT ... WITH (...)`, and source declarations `CREATE STREAM name
//!   (col TYPE, ...) WITH (...)`;
//! * quoted URIs in place of names: `FROM 'file:///data/*.csv?format=csv'`;
//! * `-- @name: value` annotation lines, kept with their statement.
//!
//! This crate has no connector dependencies (STYLE.md: the front end can be
//! tested light).

mod ast;
mod dialect;
mod error;
pub mod lower;
mod parser;

pub use ast::{Annotation, AppSpec, SinkRef, SourceRef, StatementKind, StatementSpec};
pub use dialect::VeloDialect;
pub use error::{Result, SqlError};
pub use parser::{MAX_OPERATOR_CHAIN, parse_app};

/// Annotations Velostream understands; others are kept and ignored with a debug log.
pub const KNOWN_ANNOTATIONS: &[&str] = &[
    "application",
    "name",
    "job_name",
    "version",
    "description",
    "author",
    "num_partitions",
    "partitioning_strategy",
    "job_mode",
    "batch_size",
    "deployment",
    "owner",
];
