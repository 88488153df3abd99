//! The keys of `iceberg_sink` and `iceberg_source`, read into typed
//! configurations (validation runs these too, so a bad value fails `velo
//! validate`, not the run).

use std::time::Duration;

use iceberg::spec::Transform;
use velo_config::{ConfigError, ConnectorConfig, KeySpec, KeyType};

use crate::catalog::TableRef;

/// The catalog and table keys and the object-store keys, then `$k`.
macro_rules! iceberg_keys {
    ($($k:expr),* $(,)?) => {
        velo_connectors::with_store_keys![
            KeySpec::new(
                "table",
                KeyType::String,
                None,
                "The table as namespace.table (required; an iceberg:// URI sets it: iceberg://analytics.orders, or iceberg://catalog.analytics.orders naming the catalog too)",
            ),
            KeySpec::new(
                "path",
                KeyType::String,
                None,
                "Alias of table (an iceberg:// URI sets it)",
            ),
            KeySpec::new(
                "catalog_uri",
                KeyType::String,
                None,
                "The catalog: a REST catalog's URL (http://127.0.0.1:8181) or the SQLite file of a SQL catalog (sqlite:lake/catalog.db, relative to the SQL file) (required)",
            ),
            KeySpec::new(
                "catalog_type",
                KeyType::Enum(&["rest", "sql"]),
                Some("from catalog_uri: sqlite: is sql, http(s) rest"),
                "The kind of catalog",
            ),
            KeySpec::new(
                "catalog_name",
                KeyType::String,
                Some("default (or the first part of a three-part iceberg:// name)"),
                "The catalog's name: a SQL catalog keeps the tables of many catalogs in one file, keyed by it",
            ),
            KeySpec::new(
                "warehouse",
                KeyType::String,
                None,
                "SQL catalog: the folder or URL new tables are created under (required there); REST catalog: the warehouse to use, if the server has several",
            ),
            KeySpec::new(
                "credential",
                KeyType::String,
                None,
                "REST catalog: OAuth2 client credentials as client_id:client_secret (masked in every output)",
            ),
            KeySpec::new(
                "token",
                KeyType::String,
                None,
                "REST catalog: a bearer token (masked in every output)",
            ),
            $($k,)*
        ]
    };
}
pub(crate) use iceberg_keys;

/// Keys of `iceberg_sink`.
pub const SINK_KEYS: &[KeySpec] = iceberg_keys![
    KeySpec::new(
        "partition_by",
        KeyType::String,
        None,
        "A new table's partition spec, comma-separated: a column (identity), year(c), month(c), day(c), hour(c), bucket(N, c) or truncate(W, c) (an existing table keeps its own)",
    ),
    KeySpec::new(
        "target_file_size",
        KeyType::Bytes,
        Some("128MB"),
        "A data file is closed and the next one started at this size",
    ),
    KeySpec::new(
        "schema.mode",
        KeyType::Enum(&["strict", "merge"]),
        Some("strict"),
        "merge: columns the query has and the table lacks are added to the table (optional columns); strict: such a query is refused",
    ),
    velo_connectors::merge::MODE_KEY,
    velo_connectors::merge::MERGE_ON_KEY,
    KeySpec::new(
        "compact_interval",
        KeyType::UInt,
        Some("0"),
        "Compact small data files into files of target_file_size every N commits of the job (0: never; `velo iceberg compact` does it by hand)",
    ),
    KeySpec::new(
        "compact_min_files",
        KeyType::UInt,
        Some("5"),
        "Compaction rewrites a partition once it has this many files under three quarters of target_file_size",
    ),
    KeySpec::new(
        "expire_interval",
        KeyType::UInt,
        Some("100"),
        "Expire old snapshots every N commits of the job (0: never; `velo iceberg expire` does it by hand), so the table's metadata stays small and commits stay fast",
    ),
    KeySpec::new(
        "snapshot_max_age",
        KeyType::Duration,
        Some("5d (Iceberg's history.expire.max-snapshot-age-ms)"),
        "Expiry removes snapshots older than this (time travel reaches back this far) ...",
    ),
    KeySpec::new(
        "min_snapshots",
        KeyType::UInt,
        Some("10"),
        "... but always keeps this many of the latest",
    ),
];

/// One field of a partition spec: a transform of a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionField {
    /// The source column.
    pub column: String,
    /// The transform.
    pub transform: Transform,
}

impl PartitionField {
    /// The partition field's name, as Spark and pyiceberg name it
    /// (`ts_day`, `id_bucket`; the column itself for identity).
    pub fn name(&self) -> String {
        match self.transform {
            Transform::Identity => self.column.clone(),
            Transform::Year => format!("{}_year", self.column),
            Transform::Month => format!("{}_month", self.column),
            Transform::Day => format!("{}_day", self.column),
            Transform::Hour => format!("{}_hour", self.column),
            Transform::Bucket(_) => format!("{}_bucket", self.column),
            Transform::Truncate(_) => format!("{}_trunc", self.column),
            _ => format!("{}_{}", self.column, self.transform),
        }
    }
}

/// What `iceberg_sink` was configured with.
#[derive(Debug, Clone)]
pub struct IcebergSinkConfig {
    /// The table.
    pub table: TableRef,
    /// A new table's partition spec.
    pub partition_by: Vec<PartitionField>,
    /// Bytes per data file.
    pub target_file_size: u64,
    /// `schema.mode = 'merge'`.
    pub merge_schema: bool,
    /// Expire snapshots every N commits (0: never).
    pub expire_interval: u64,
    /// Snapshots older than this are expired...
    pub snapshot_max_age: Duration,
    /// ...except the latest N.
    pub min_snapshots: usize,
    /// `mode` and `merge_on`: appends, or rows replacing rows by key.
    pub write: velo_connectors::merge::WriteMode,
    /// Compact every N commits (0: never).
    pub compact_interval: u64,
    /// A partition is compacted once it has this many small files.
    pub compact_min_files: usize,
    /// The job: `velo.job` of the snapshots this sink commits.
    pub app_id: String,
}

impl IcebergSinkConfig {
    /// From the resolved connector config.
    pub fn from_config(cfg: &ConnectorConfig) -> Result<Self, ConfigError> {
        let table = TableRef::from_config(cfg)?;
        let partition_by = match cfg.get("partition_by") {
            None => Vec::new(),
            Some(p) => parse_partition_by(p).map_err(|m| cfg.invalid("partition_by", p, &m))?,
        };
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
        let merge_schema = velo_connectors::schema::merge_mode(cfg)?;
        Ok(Self {
            table,
            partition_by,
            target_file_size,
            merge_schema,
            expire_interval: cfg.uint("expire_interval")?.unwrap_or(100),
            snapshot_max_age: cfg
                .duration("snapshot_max_age")?
                .unwrap_or(Duration::from_secs(5 * 24 * 3600)),
            min_snapshots: cfg.uint("min_snapshots")?.unwrap_or(10).max(1) as usize,
            write: velo_connectors::merge::WriteMode::from_config(cfg)?,
            compact_interval: cfg.uint("compact_interval")?.unwrap_or(0),
            compact_min_files: cfg.uint("compact_min_files")?.unwrap_or(5).max(2) as usize,
            app_id: if cfg.job.is_empty() {
                cfg.name.clone()
            } else {
                cfg.job.clone()
            },
        })
    }
}

/// `day(ts), bucket(16, id), region` as partition fields.
pub fn parse_partition_by(spec: &str) -> Result<Vec<PartitionField>, String> {
    let mut out = Vec::new();
    let mut rest = spec.trim();
    while !rest.is_empty() {
        // one item: up to the next comma outside parentheses
        let mut depth = 0;
        let end = rest
            .char_indices()
            .find(|(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                *c == ',' && depth == 0
            })
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let item = rest[..end].trim();
        rest = rest[end..].trim_start_matches(',').trim();
        out.push(parse_field(item)?);
    }
    if out.is_empty() {
        return Err("one or more columns or transforms, e.g. day(ts), bucket(16, id)".into());
    }
    Ok(out)
}

fn parse_field(item: &str) -> Result<PartitionField, String> {
    let ident = |s: &str| {
        let s = s.trim().trim_matches('"');
        (!s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_'))
            .then(|| s.to_string())
            .ok_or_else(|| format!("'{s}' is not a column name"))
    };
    let Some((func, args)) = item.split_once('(') else {
        return Ok(PartitionField {
            column: ident(item)?,
            transform: Transform::Identity,
        });
    };
    let args = args
        .strip_suffix(')')
        .ok_or_else(|| format!("'{item}' lacks its closing parenthesis"))?;
    let args: Vec<&str> = args.split(',').map(str::trim).collect();
    let func = func.trim().to_ascii_lowercase();
    let width = |s: &str| {
        s.parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("'{s}' in {item} is not a positive number"))
    };
    let (transform, column) = match (func.as_str(), args.as_slice()) {
        ("identity", [c]) => (Transform::Identity, c),
        ("year" | "years", [c]) => (Transform::Year, c),
        ("month" | "months", [c]) => (Transform::Month, c),
        ("day" | "days", [c]) => (Transform::Day, c),
        ("hour" | "hours", [c]) => (Transform::Hour, c),
        ("bucket", [n, c]) => (Transform::Bucket(width(n)?), c),
        ("truncate", [w, c]) => (Transform::Truncate(width(w)?), c),
        _ => {
            return Err(format!(
                "'{item}' is not a partition transform: use a column, year(c), month(c), day(c), hour(c), bucket(N, c) or truncate(W, c)"
            ));
        }
    };
    Ok(PartitionField {
        column: ident(column)?,
        transform,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_specs_parse() {
        let p = parse_partition_by("day(ts), bucket(16, id) ,region,truncate(4,name)").unwrap();
        assert_eq!(
            p.iter()
                .map(|f| (f.column.as_str(), f.transform))
                .collect::<Vec<_>>(),
            vec![
                ("ts", Transform::Day),
                ("id", Transform::Bucket(16)),
                ("region", Transform::Identity),
                ("name", Transform::Truncate(4)),
            ]
        );
        assert_eq!(p[0].name(), "ts_day");
        assert_eq!(p[2].name(), "region");
        for bad in [
            "",
            "day(ts",
            "bucket(0, id)",
            "bucket(id)",
            "week(ts)",
            "a b",
        ] {
            assert!(parse_partition_by(bad).is_err(), "{bad}");
        }
    }
}
