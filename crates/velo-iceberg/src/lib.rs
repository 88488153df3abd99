//! # velo-iceberg: the Apache Iceberg connector
//!
//! The ends of the data path for Iceberg tables, on iceberg-rust (the
//! `iceberg` crates: tables, REST and SQL catalogs, Parquet data files,
//! manifests). This crate is the only one that compiles them.
//!
//! - [`sink::IcebergSink`] (`iceberg_sink`, `INTO 'iceberg://ns.table'`):
//!   each epoch of the job is one append snapshot whose summary carries
//!   `velo.job` and `velo.epoch`; with `use_transactions` the epoch's files
//!   are in the job's checkpoint until committed, so an epoch is in the
//!   table exactly once across crashes. The table is created from the
//!   query's columns when missing, with `partition_by` transforms
//!   (identity, year/month/day/hour, bucket, truncate); `schema.mode =
//!   'merge'` adds columns; an updating result (or `merge_on`) is applied
//!   by key as copy-on-write overwrite snapshots ([`upsert`], [`rewrite`],
//!   [`commit`]); small files are compacted every `compact_interval`
//!   commits and old snapshots expired every `expire_interval`
//!   ([`maintenance`]).
//! - [`source::IcebergSource`] (`iceberg_source`, `FROM
//!   'iceberg://ns.table'`): a snapshot (time travel by id or timestamp),
//!   the snapshots that follow it, or both, with the position (snapshot,
//!   file, row) in the job's checkpoint.
//! - [`catalog`]: REST catalogs and SQL (SQLite) catalogs; [`storage`]:
//!   the tables' files on local paths and object stores through
//!   `object_store`.
//!
//! iceberg-rust 0.10 is built on Arrow 58 and the engine on Arrow 59:
//! batches cross in [`bridge`] through the Arrow C Data Interface
//! (zero-copy; the only `unsafe` of the crate), so no Arrow 58 type leaves
//! this crate and the engine's graph keeps one Arrow.

pub mod bridge;
pub mod catalog;
pub mod commit;
pub mod config;
pub mod maintenance;
pub mod rewrite;
pub mod sink;
pub mod source;
pub mod storage;
pub mod table;
pub mod upsert;
pub mod write;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use velo_config::ConnectorConfig;
use velo_connectors::registry::{Kind, Registry};
use velo_connectors::{BoxFuture, ChangeMode, ConnectorContext, Result, Sink, Source};

pub use config::{IcebergSinkConfig, SINK_KEYS};
pub use source::{IcebergSourceConfig, SOURCE_KEYS};

fn create_source<'a>(
    cfg: &'a ConnectorConfig,
    schema: Option<SchemaRef>,
    ctx: &'a ConnectorContext,
) -> BoxFuture<'a, Result<Arc<dyn Source>>> {
    Box::pin(async move {
        let c = IcebergSourceConfig::from_config(cfg)?;
        let s = source::IcebergSource::new(&cfg.name, c, &cfg.props, schema, ctx).await?;
        Ok(Arc::new(s) as Arc<dyn Source>)
    })
}

fn create_sink<'a>(
    cfg: &'a ConnectorConfig,
    ctx: &'a ConnectorContext,
) -> BoxFuture<'a, Result<Box<dyn Sink>>> {
    Box::pin(async move {
        let c = IcebergSinkConfig::from_config(cfg)?;
        Ok(Box::new(sink::IcebergSink::new(&cfg.name, c, &cfg.props, ctx)?) as Box<dyn Sink>)
    })
}

/// Adds `iceberg_source`, `iceberg_sink` and the `iceberg://` scheme (the
/// rest of the URI is the table: `iceberg://analytics.orders`, or
/// `iceberg://catalog.analytics.orders`) to `registry`.
pub fn register(registry: &mut Registry) {
    registry.add_scheme(velo_connectors::registry::scheme(
        "iceberg",
        velo_config::uri::UriLocation::Path,
    ));
    registry.add_source(Kind {
        name: "iceberg",
        keys: SOURCE_KEYS,
        create: create_source,
        extra: None,
        check: |c| {
            IcebergSourceConfig::from_config(c)
                .map(drop)
                .map_err(Into::into)
        },
        changes: |_| ChangeMode::AppendOnly,
    });
    registry.add_sink(Kind {
        name: "iceberg",
        keys: SINK_KEYS,
        create: create_sink,
        extra: None,
        check: |c| {
            IcebergSinkConfig::from_config(c)
                .map(drop)
                .map_err(Into::into)
        },
        // appends, or upserts by key (copy-on-write overwrite snapshots)
        changes: |_| ChangeMode::Upsert,
    });
}
