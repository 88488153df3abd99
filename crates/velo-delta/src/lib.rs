//! # velo-delta: the Delta Lake connector
//!
//! The ends of the data path for Delta tables, on delta-rs (`deltalake`,
//! without its DataFusion integration: the engine's DataFusion stays as it
//! is, and this crate is the only one that compiles the Delta SDK).
//!
//! - [`sink::DeltaSink`] (`delta_sink`, `INTO 'delta://path'`): each epoch
//!   of the job is one Delta commit; with `use_transactions` the commit
//!   carries a `txn` action (app id = the job, version = the epoch) and the
//!   epoch's files are in the job's checkpoint until committed, so an epoch
//!   is in the table exactly once across crashes. The table is created from
//!   the query's columns when missing; `partition_by`, `schema.mode =
//!   'merge'`, `target_file_size`, checkpoints and compaction every N
//!   commits. An updating result (or `merge_on`) is applied as a MERGE by
//!   key ([`merge`]: copy-on-write, one commit per epoch).
//! - [`source::DeltaSource`] (`delta_source`, `FROM 'delta://path'`): a
//!   snapshot (time travel by version or timestamp), the commits that
//!   follow it, or both, with the position (version, file, row) in the
//!   job's checkpoint.
//! - [`maintenance`]: compaction and vacuum, for the sink and for `velo
//!   delta optimize|vacuum`.
//!
//! Tables live on local paths or object stores ([`table::Location`]),
//! reached through the file connector's object-store clients.

pub mod config;
pub mod maintenance;
pub mod merge;
pub mod read;
pub mod sink;
pub mod source;
pub mod table;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use velo_config::ConnectorConfig;
use velo_connectors::registry::{Kind, Registry};
use velo_connectors::{BoxFuture, ChangeMode, ConnectorContext, Result, Sink, Source};

pub use config::{DeltaSinkConfig, SINK_KEYS};
pub use source::{DeltaSourceConfig, SOURCE_KEYS};

fn create_source<'a>(
    cfg: &'a ConnectorConfig,
    schema: Option<SchemaRef>,
    ctx: &'a ConnectorContext,
) -> BoxFuture<'a, Result<Arc<dyn Source>>> {
    Box::pin(async move {
        let c = DeltaSourceConfig::from_config(cfg)?;
        let location = table::Location::of(cfg, ctx, false)?;
        let s = source::DeltaSource::new(&cfg.name, c, location, schema, ctx.is_offline()).await?;
        Ok(Arc::new(s) as Arc<dyn Source>)
    })
}

fn create_sink<'a>(
    cfg: &'a ConnectorConfig,
    ctx: &'a ConnectorContext,
) -> BoxFuture<'a, Result<Box<dyn Sink>>> {
    Box::pin(async move {
        let c = DeltaSinkConfig::from_config(cfg)?;
        let location = table::Location::of(cfg, ctx, !ctx.is_offline())?;
        Ok(Box::new(sink::DeltaSink::new(&cfg.name, c, location)?) as Box<dyn Sink>)
    })
}

/// Adds `delta_source`, `delta_sink` and the `delta://` scheme (the rest of
/// the URI is the table's path or URL: `delta://lake/orders`,
/// `delta://s3://bucket/tables/orders`) to `registry`.
pub fn register(registry: &mut Registry) {
    registry.add_scheme(velo_connectors::registry::scheme(
        "delta",
        velo_config::uri::UriLocation::Path,
    ));
    registry.add_source(Kind {
        name: "delta",
        keys: SOURCE_KEYS,
        create: create_source,
        extra: None,
        check: |c| {
            DeltaSourceConfig::from_config(c)
                .map(drop)
                .map_err(Into::into)
        },
        changes: |_| ChangeMode::AppendOnly,
    });
    registry.add_sink(Kind {
        name: "delta",
        keys: SINK_KEYS,
        create: create_sink,
        extra: None,
        check: |c| {
            DeltaSinkConfig::from_config(c)
                .map(drop)
                .map_err(Into::into)
        },
        // an updating result is applied as a MERGE by its key
        changes: |_| ChangeMode::Upsert,
    });
}
