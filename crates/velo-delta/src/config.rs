//! The keys of `delta_sink` and `delta_source`, read into typed
//! configurations (validation runs these too, so a bad value fails
//! `velo validate`, not the run).

use velo_config::{ConfigError, ConnectorConfig, KeySpec, KeyType};

/// Keys of `delta_sink`.
pub const SINK_KEYS: &[KeySpec] = velo_connectors::with_store_keys![
    KeySpec::new(
        "path",
        KeyType::String,
        None,
        "The table: a directory (relative to the SQL file) or an object-store URL such as s3://bucket/tables/orders; created from the query's columns when missing (required; a delta:// URI sets it)",
    ),
    KeySpec::new(
        "partition_by",
        KeyType::String,
        None,
        "A new table's partition columns, comma-separated (an existing table keeps its own)",
    ),
    KeySpec::new(
        "partition_columns",
        KeyType::String,
        None,
        "Alias of partition_by",
    ),
    velo_connectors::merge::MODE_KEY,
    velo_connectors::merge::MERGE_ON_KEY,
    KeySpec::new(
        "schema.mode",
        KeyType::Enum(&["strict", "merge"]),
        Some("strict"),
        "merge: columns the query has and the table lacks are added to the table; strict: such a query is refused",
    ),
    KeySpec::new(
        "target_file_size",
        KeyType::Bytes,
        Some("128MB"),
        "A data file is closed and the next one started at this size",
    ),
    KeySpec::new(
        "checkpoint_interval",
        KeyType::UInt,
        Some("10"),
        "A Delta checkpoint (the table's state in one Parquet file) every N table versions, so a reader or a restart does not replay a long log (0: never)",
    ),
    KeySpec::new(
        "optimize_interval",
        KeyType::UInt,
        Some("0"),
        "Compact small files into files of target_file_size every N commits of the job (0: never; `velo delta optimize` does it by hand)",
    ),
    KeySpec::new(
        "optimize_write",
        KeyType::Bool,
        Some("false"),
        "Seed 004's key: every epoch already writes one file per partition (up to target_file_size); true also compacts every 10 commits unless optimize_interval says otherwise",
    ),
    KeySpec::new(
        "table_name",
        KeyType::String,
        None,
        "A new table's name in its metadata",
    ),
];

/// What `delta_sink` was configured with.
#[derive(Debug, Clone)]
pub struct DeltaSinkConfig {
    /// Partition columns of a new table (checked against an existing one).
    pub partition_by: Vec<String>,
    /// `schema.mode = 'merge'`.
    pub merge_schema: bool,
    /// Bytes per data file.
    pub target_file_size: u64,
    /// Checkpoint every N table versions (0: never).
    pub checkpoint_interval: u64,
    /// Compact every N commits of this sink (0: never).
    pub optimize_interval: u64,
    /// A new table's name.
    pub table_name: Option<String>,
    /// `merge_on`: the key of a MERGE (rows replace rows of their key).
    pub merge_on: Vec<String>,
    /// `mode = 'merge'` or `merge_on` given: every row is an upsert.
    pub merge: bool,
    /// The transaction application id: the job's name.
    pub app_id: String,
}

impl DeltaSinkConfig {
    /// From the resolved connector config.
    pub fn from_config(cfg: &ConnectorConfig) -> Result<Self, ConfigError> {
        crate::table::configured_path(cfg)?;
        let merge_schema = velo_connectors::schema::merge_mode(cfg)?;
        let velo_connectors::merge::WriteMode { merge, merge_on } =
            velo_connectors::merge::WriteMode::from_config(cfg)?;
        let target_file_size = match cfg.get("target_file_size") {
            None => 128 << 20,
            Some(v) => velo_config::keys::parse_bytes(v)
                .filter(|b| *b >= 1024)
                .ok_or_else(|| {
                    cfg.invalid(
                        "target_file_size",
                        v,
                        "a size of at least 1KB, such as 128MB",
                    )
                })?,
        };
        Ok(Self {
            partition_by: velo_connectors::file::config::partition_by(cfg)?,
            merge_schema,
            target_file_size,
            checkpoint_interval: cfg.uint("checkpoint_interval")?.unwrap_or(10),
            optimize_interval: match cfg.uint("optimize_interval")? {
                Some(n) => n,
                None if cfg.bool("optimize_write", false)? => 10,
                None => 0,
            },
            table_name: cfg.get("table_name").map(str::to_string),
            merge_on,
            merge,
            app_id: if cfg.job.is_empty() {
                cfg.name.clone()
            } else {
                cfg.job.clone()
            },
        })
    }
}
