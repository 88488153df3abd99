//! Builds sources and sinks by type name: a [`Registry`] of connector kinds,
//! one entry per kind and role.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use velo_config::keys::{COMMON_CONNECTOR_KEYS, KeySpec};
use velo_config::uri::{UriLocation, UriScheme};
use velo_config::{ConfigError, ConnectorConfig, Role, Warning};

use crate::datagen::{DatagenConfig, DatagenSource};
use crate::file::listing::Files;
use crate::file::{FileSink, FileSinkConfig, FileSource, FileSourceConfig};
use crate::stdout::StdoutSink;
use crate::{BoxFuture, ChangeMode, ConnectorContext, ConnectorError, Result, Sink, Source};

/// How an offline refusal starts.
pub const OFFLINE_MARK: &str = "not checked offline:";

/// Builds a source from its configuration (and a DDL schema, if declared).
pub type SourceCtor = for<'a> fn(
    &'a ConnectorConfig,
    Option<SchemaRef>,
    &'a ConnectorContext,
) -> BoxFuture<'a, Result<Arc<dyn Source>>>;
/// Builds a sink from its configuration.
pub type SinkCtor =
    for<'a> fn(&'a ConnectorConfig, &'a ConnectorContext) -> BoxFuture<'a, Result<Box<dyn Sink>>>;
/// Checks a connector's keys beyond its [`KeySpec`] table (pass-through
/// keys of a client library); returns warnings.
pub type ExtraValidator = fn(&ConnectorConfig) -> Result<Vec<Warning>>;
/// Builds a connector's typed configuration without touching anything
/// (no file, no network): every value is checked as `run` would read it.
pub type ConfigCheck = fn(&ConnectorConfig) -> Result<()>;
/// What stream a configured connector produces (a source) or accepts (a
/// sink), known at planning without creating it.
pub type ChangesOf = fn(&ConnectorConfig) -> ChangeMode;

/// A source of new rows only, or a sink that stores each change as a row.
pub fn append_source_or_change_rows_sink(cfg: &ConnectorConfig) -> ChangeMode {
    match cfg.role {
        Role::Source => ChangeMode::AppendOnly,
        Role::Sink => ChangeMode::ChangeRows,
    }
}

/// One connector kind in one role.
#[derive(Clone, Copy)]
pub struct Kind<C> {
    /// Type name (`file` for `file_source` / `file_sink`).
    pub name: &'static str,
    /// Its keys.
    pub keys: &'static [KeySpec],
    /// The constructor.
    pub create: C,
    /// Keys not in `keys` are handed to this instead of being warned about.
    pub extra: Option<ExtraValidator>,
    /// Reads the typed configuration (`validate` runs it for every
    /// connector, so a bad value fails validation, not the run).
    pub check: ConfigCheck,
    /// What the configured connector produces or accepts; the planner
    /// refuses an updating result into an append-only sink and a changelog
    /// source under an aggregate, a window or a join.
    pub changes: ChangesOf,
}

/// The connector kinds of a build. The engine assembles it from this crate's
/// built-in connectors and the connector crates with heavy SDKs (Kafka).
#[derive(Clone)]
pub struct Registry {
    sources: Vec<Kind<SourceCtor>>,
    sinks: Vec<Kind<SinkCtor>>,
    schemes: Vec<UriScheme>,
}

/// A file source: its files listed and its schema inferred off the
/// runtime's threads.
fn file_source<'a>(
    cfg: &'a ConnectorConfig,
    schema: Option<SchemaRef>,
    ctx: &'a ConnectorContext,
) -> BoxFuture<'a, Result<Arc<dyn Source>>> {
    Box::pin(async move {
        let (name, c) = (cfg.name.clone(), FileSourceConfig::from_config(cfg)?);
        let files = Files::of(&c.path, &cfg.props, ctx)?;
        if ctx.is_offline() && files.is_remote() {
            // an object store is not contacted offline: a declared schema
            // is all there is to know
            let declared = match (schema, &c.schema) {
                (Some(s), _) => s,
                (None, Some(text)) => crate::schema::parse_schema(text)?,
                (None, None) => {
                    return Err(ConnectorError::Other(format!(
                        "{OFFLINE_MARK} the schema of '{}' is read from the store; declare it ('{}.schema' or a column list) to check offline",
                        velo_config::mask(&c.path),
                        cfg.name
                    )));
                }
            };
            return Ok(Arc::new(FileSource::declared(&name, c, declared, files)) as Arc<dyn Source>);
        }
        let s = ctx
            .blocking(move || FileSource::new(&name, c, schema, files))
            .await?;
        Ok(Arc::new(s) as Arc<dyn Source>)
    })
}

fn datagen_source<'a>(
    cfg: &'a ConnectorConfig,
    _schema: Option<SchemaRef>,
    _ctx: &'a ConnectorContext,
) -> BoxFuture<'a, Result<Arc<dyn Source>>> {
    Box::pin(async move {
        Ok(Arc::new(DatagenSource::new(
            &cfg.name,
            DatagenConfig::from_config(cfg)?,
        )) as Arc<dyn Source>)
    })
}

fn nexmark_source<'a>(
    cfg: &'a ConnectorConfig,
    _schema: Option<SchemaRef>,
    _ctx: &'a ConnectorContext,
) -> BoxFuture<'a, Result<Arc<dyn Source>>> {
    Box::pin(async move {
        Ok(Arc::new(crate::nexmark::NexmarkSource::new(
            &cfg.name,
            crate::nexmark::NexmarkConfig::from_config(cfg)?,
        )) as Arc<dyn Source>)
    })
}

fn blackhole_sink<'a>(
    cfg: &'a ConnectorConfig,
    _ctx: &'a ConnectorContext,
) -> BoxFuture<'a, Result<Box<dyn Sink>>> {
    Box::pin(async move {
        Ok(Box::new(crate::blackhole::BlackholeSink::new(&cfg.name)) as Box<dyn Sink>)
    })
}

/// A file sink: what an earlier run left uncommitted is cleaned up off the
/// runtime's threads.
fn file_sink<'a>(
    cfg: &'a ConnectorConfig,
    ctx: &'a ConnectorContext,
) -> BoxFuture<'a, Result<Box<dyn Sink>>> {
    Box::pin(async move {
        let (name, c) = (cfg.name.clone(), FileSinkConfig::from_config(cfg)?);
        let remote = if crate::file::store::is_url(&c.path) {
            let (root, _) = c.path.split_at(c.path.find('{').unwrap_or(c.path.len()));
            Some(crate::file::store::Remote::connect(root, &cfg.props, ctx)?.0)
        } else {
            None
        };
        let check = !ctx.is_offline();
        if !c.partition_by.is_empty() {
            // one file sink per partition and epoch; the folder checked once
            let probe = FileSinkConfig {
                partition_by: Vec::new(),
                ..c.clone()
            };
            let (n, r) = (name.clone(), remote.clone());
            ctx.blocking(move || FileSink::new(&n, probe, r, check))
                .await?;
            return Ok(
                Box::new(crate::file::PartitionedSink::new(&name, c, remote)) as Box<dyn Sink>,
            );
        }
        let s = ctx
            .blocking(move || FileSink::new(&name, c, remote, check))
            .await?;
        Ok(Box::new(s) as Box<dyn Sink>)
    })
}

fn stdout_sink<'a>(
    cfg: &'a ConnectorConfig,
    _ctx: &'a ConnectorContext,
) -> BoxFuture<'a, Result<Box<dyn Sink>>> {
    Box::pin(async move { Ok(Box::new(StdoutSink::from_config(cfg)?) as Box<dyn Sink>) })
}

/// A scheme naming the connector kind of the same name.
pub fn scheme(name: &'static str, location: UriLocation) -> UriScheme {
    UriScheme {
        scheme: name,
        kind: name,
        location,
    }
}

/// Kinds the seeds name that later issues add (a clear error, not "unknown").
const PLANNED: &[&str] = &[
    "database",
    "postgres",
    "postgresql",
    "clickhouse",
    "http",
    "elasticsearch",
    "redis",
    "mongodb",
];

impl Registry {
    /// The connectors of this crate: file (and s3, the same connector on
    /// object stores), datagen/generator, nexmark, stdout/console,
    /// blackhole.
    pub fn builtin() -> Self {
        let src = |name, keys, create: SourceCtor, check: ConfigCheck| Kind {
            name,
            keys,
            create,
            extra: None,
            check,
            changes: append_source_or_change_rows_sink,
        };
        let sink = |name, keys, create: SinkCtor, check: ConfigCheck| Kind {
            name,
            keys,
            create,
            extra: None,
            check,
            changes: append_source_or_change_rows_sink,
        };
        let file_src: ConfigCheck = |c| {
            FileSourceConfig::from_config(c)
                .map(drop)
                .map_err(Into::into)
        };
        let file_snk: ConfigCheck =
            |c| FileSinkConfig::from_config(c).map(drop).map_err(Into::into);
        let datagen: ConfigCheck = |c| DatagenConfig::from_config(c).map(drop).map_err(Into::into);
        let nexmark: ConfigCheck = |c| {
            crate::nexmark::NexmarkConfig::from_config(c)
                .map(drop)
                .map_err(Into::into)
        };
        let stdout: ConfigCheck = |c| StdoutSink::from_config(c).map(drop);
        let nothing: ConfigCheck = |_| Ok(());
        Self {
            sources: vec![
                src("file", crate::file::SOURCE_KEYS, file_source, file_src),
                src("datagen", crate::datagen::KEYS, datagen_source, datagen),
                src("generator", crate::datagen::KEYS, datagen_source, datagen),
                src("nexmark", crate::nexmark::KEYS, nexmark_source, nexmark),
                src("s3", crate::file::SOURCE_KEYS, file_source, file_src),
            ],
            sinks: vec![
                sink("file", crate::file::SINK_KEYS, file_sink, file_snk),
                sink("stdout", crate::stdout::KEYS, stdout_sink, stdout),
                sink("console", crate::stdout::KEYS, stdout_sink, stdout),
                sink("blackhole", crate::blackhole::KEYS, blackhole_sink, nothing),
                sink("s3", crate::file::SINK_KEYS, file_sink, file_snk),
            ],
            schemes: vec![
                scheme("file", UriLocation::Path),
                scheme("s3", UriLocation::Url),
                UriScheme {
                    scheme: "s3a",
                    kind: "s3",
                    location: UriLocation::Url,
                },
                scheme("stdout", UriLocation::Ignored),
                scheme("datagen", UriLocation::Ignored),
            ]
            .into_iter()
            .chain(
                // the other object stores: the file connector on a URL
                ["gs", "az", "adl", "azure", "abfs", "abfss", "http", "https"]
                    .into_iter()
                    .map(|s| UriScheme {
                        scheme: s,
                        kind: "file",
                        location: UriLocation::Url,
                    }),
            )
            .collect(),
        }
    }

    /// Adds a URI scheme (`FROM 'kafka://broker/topic'`).
    pub fn add_scheme(&mut self, scheme: UriScheme) {
        self.schemes.push(scheme);
    }

    /// The URI schemes of the registered connectors.
    pub fn schemes(&self) -> &[UriScheme] {
        &self.schemes
    }

    /// Adds a source kind.
    pub fn add_source(&mut self, kind: Kind<SourceCtor>) {
        self.sources.push(kind);
    }

    /// Adds a sink kind.
    pub fn add_sink(&mut self, kind: Kind<SinkCtor>) {
        self.sinks.push(kind);
    }

    /// The source kind `name`, to register a variant of it.
    pub fn source_kind(&self, name: &str) -> Option<Kind<SourceCtor>> {
        self.sources.iter().find(|k| k.name == name).copied()
    }

    /// The sink kind `name`, to register a variant of it.
    pub fn sink_kind(&self, name: &str) -> Option<Kind<SinkCtor>> {
        self.sinks.iter().find(|k| k.name == name).copied()
    }

    /// Source kinds and their keys.
    pub fn sources(&self) -> impl Iterator<Item = (&'static str, &'static [KeySpec])> + '_ {
        self.sources.iter().map(|k| (k.name, k.keys))
    }

    /// Sink kinds and their keys.
    pub fn sinks(&self) -> impl Iterator<Item = (&'static str, &'static [KeySpec])> + '_ {
        self.sinks.iter().map(|k| (k.name, k.keys))
    }

    fn names(&self, role: Role) -> Vec<&'static str> {
        match role {
            Role::Source => self.sources.iter().map(|k| k.name).collect(),
            Role::Sink => self.sinks.iter().map(|k| k.name).collect(),
        }
    }

    fn unknown(&self, cfg: &ConnectorConfig) -> ConnectorError {
        let known: Vec<String> = self
            .names(cfg.role)
            .iter()
            .map(|k| format!("{k}_{}", cfg.role.as_str()))
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

    /// What the connector of `cfg` produces (a source) or accepts (a sink).
    pub fn change_mode(&self, cfg: &ConnectorConfig) -> Result<ChangeMode> {
        let changes = match cfg.role {
            Role::Source => self
                .sources
                .iter()
                .find(|k| k.name == cfg.kind)
                .map(|k| k.changes),
            Role::Sink => self
                .sinks
                .iter()
                .find(|k| k.name == cfg.kind)
                .map(|k| k.changes),
        }
        .ok_or_else(|| self.unknown(cfg))?;
        Ok(changes(cfg))
    }

    /// Checks the keys of `cfg` against its connector's table: warnings for
    /// unknown keys (with did-you-mean), an error for ill-typed values or an
    /// unknown type.
    pub fn validate(&self, cfg: &ConnectorConfig) -> Result<Vec<Warning>> {
        let (keys, extra, check) = match cfg.role {
            Role::Source => self
                .sources
                .iter()
                .find(|k| k.name == cfg.kind)
                .map(|k| (k.keys, k.extra, k.check)),
            Role::Sink => self
                .sinks
                .iter()
                .find(|k| k.name == cfg.kind)
                .map(|k| (k.keys, k.extra, k.check)),
        }
        .ok_or_else(|| self.unknown(cfg))?;
        let warnings = self.validate_keys(cfg, keys, extra)?;
        if cfg.role == Role::Sink {
            velo_config::keys::CircuitBreaker::of(cfg)?;
        }
        check(cfg)?;
        Ok(warnings)
    }

    /// The key-table part of [`Self::validate`].
    fn validate_keys(
        &self,
        cfg: &ConnectorConfig,
        keys: &'static [KeySpec],
        extra: Option<ExtraValidator>,
    ) -> Result<Vec<Warning>> {
        let common: &[KeySpec] = &[
            KeySpec::new("uri", velo_config::KeyType::String, None, ""),
            KeySpec::new("location", velo_config::KeyType::String, None, ""),
        ];
        let [time, table]: [&[KeySpec]; 2] = match cfg.role {
            Role::Source => velo_config::keys::engine_source_keys(),
            Role::Sink => [velo_config::keys::SINK_KEYS, &[]],
        };
        let tables = [keys, COMMON_CONNECTOR_KEYS, common, time, table];
        match extra {
            None => Ok(velo_config::keys::validate(
                &cfg.props,
                &tables,
                &format!("{}.", cfg.name),
            )?),
            Some(f) => {
                // typed check of the known keys; the rest goes to the client library
                let known: std::collections::BTreeMap<String, String> = cfg
                    .props
                    .iter()
                    .filter(|(k, _)| tables.iter().any(|t| t.iter().any(|s| s.matches(k))))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let mut w =
                    velo_config::keys::validate(&known, &tables, &format!("{}.", cfg.name))?;
                w.extend(f(cfg)?);
                Ok(w)
            }
        }
    }

    /// Creates a source. `explicit_schema` comes from a DDL column list.
    pub async fn create_source(
        &self,
        cfg: &ConnectorConfig,
        explicit_schema: Option<SchemaRef>,
        ctx: &ConnectorContext,
    ) -> Result<Arc<dyn Source>> {
        match self.sources.iter().find(|k| k.name == cfg.kind) {
            Some(k) => (k.create)(cfg, explicit_schema, ctx).await,
            None => Err(self.unknown(cfg)),
        }
    }

    /// Creates a sink.
    pub async fn create_sink(
        &self,
        cfg: &ConnectorConfig,
        ctx: &ConnectorContext,
    ) -> Result<Box<dyn Sink>> {
        match self.sinks.iter().find(|k| k.name == cfg.kind) {
            Some(k) => (k.create)(cfg, ctx).await,
            None => Err(self.unknown(cfg)),
        }
    }
}
