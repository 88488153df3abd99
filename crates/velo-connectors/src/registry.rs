//! Builds sources and sinks by type name. One line per connector.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use velo_config::keys::{COMMON_CONNECTOR_KEYS, KeySpec};
use velo_config::{ConfigError, ConnectorConfig, Role, Warning};

use crate::datagen::{DatagenConfig, DatagenSource};
use crate::file::{FileSink, FileSinkConfig, FileSource, FileSourceConfig};
use crate::stdout::StdoutSink;
use crate::{ConnectorError, Result, Sink, Source};

/// Source kinds this build can create, with their keys.
pub const SOURCES: &[(&str, &[KeySpec])] = &[
    ("file", crate::file::SOURCE_KEYS),
    ("datagen", crate::datagen::KEYS),
    ("generator", crate::datagen::KEYS),
];

/// Sink kinds this build can create, with their keys.
pub const SINKS: &[(&str, &[KeySpec])] = &[
    ("file", crate::file::SINK_KEYS),
    ("stdout", crate::stdout::KEYS),
    ("console", crate::stdout::KEYS),
];

/// Kinds the seeds name that later issues add (a clear error, not "unknown").
const PLANNED: &[&str] = &[
    "kafka",
    "s3",
    "database",
    "postgres",
    "postgresql",
    "iceberg",
    "delta",
    "clickhouse",
    "http",
    "elasticsearch",
    "redis",
    "mongodb",
];

fn table(role: Role) -> &'static [(&'static str, &'static [KeySpec])] {
    match role {
        Role::Source => SOURCES,
        Role::Sink => SINKS,
    }
}

fn unknown(cfg: &ConnectorConfig) -> ConnectorError {
    let known: Vec<String> = table(cfg.role)
        .iter()
        .map(|(k, _)| format!("{k}_{}", cfg.role.as_str()))
        .collect();
    if PLANNED.contains(&cfg.kind.as_str()) {
        return ConnectorError::Other(format!(
            "{} type '{}' for '{}' is not available in this build yet; available: {}",
            cfg.role.as_str(),
            cfg.kind,
            cfg.name,
            known.join(", ")
        ));
    }
    ConnectorError::Config(ConfigError::UnknownType {
        name: cfg.name.clone(),
        value: cfg.kind.clone(),
        role: cfg.role.as_str(),
        known: known.join(", "),
    })
}

/// Checks the keys of `cfg` against its connector's table: warnings for
/// unknown keys (with did-you-mean), an error for ill-typed values or an
/// unknown type.
pub fn validate(cfg: &ConnectorConfig) -> Result<Vec<Warning>> {
    let keys = table(cfg.role)
        .iter()
        .find(|(k, _)| *k == cfg.kind)
        .map(|(_, k)| *k)
        .ok_or_else(|| unknown(cfg))?;
    Ok(velo_config::keys::validate(
        &cfg.props,
        &[
            keys,
            COMMON_CONNECTOR_KEYS,
            &[
                KeySpec::new("uri", velo_config::KeyType::String, None, ""),
                KeySpec::new("location", velo_config::KeyType::String, None, ""),
            ],
        ],
        &format!("{}.", cfg.name),
    )?)
}

/// Creates a source. `explicit_schema` comes from a DDL column list.
pub fn create_source(
    cfg: &ConnectorConfig,
    explicit_schema: Option<SchemaRef>,
) -> Result<Arc<dyn Source>> {
    match cfg.kind.as_str() {
        "file" => Ok(Arc::new(FileSource::new(
            &cfg.name,
            FileSourceConfig::from_config(cfg)?,
            explicit_schema,
        )?)),
        "datagen" | "generator" => Ok(Arc::new(DatagenSource::new(
            &cfg.name,
            DatagenConfig::from_config(cfg)?,
        ))),
        _ => Err(unknown(cfg)),
    }
}

/// Creates a sink.
pub fn create_sink(cfg: &ConnectorConfig) -> Result<Box<dyn Sink>> {
    match cfg.kind.as_str() {
        "file" => Ok(Box::new(FileSink::new(
            &cfg.name,
            FileSinkConfig::from_config(cfg)?,
        )?)),
        "stdout" | "console" => Ok(Box::new(StdoutSink::from_config(cfg)?)),
        _ => Err(unknown(cfg)),
    }
}
