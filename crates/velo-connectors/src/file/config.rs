//! Typed configuration of the file connector.

use std::path::PathBuf;
use std::time::Duration;

use velo_config::keys::{KeySpec, KeyType, parse_bytes, parse_duration};
use velo_config::{ConfigError, ConnectorConfig};

const FORMATS: &[&str] = &[
    "csv",
    "json",
    "jsonl",
    "jsonlines",
    "json_lines",
    "ndjson",
    "json_array",
    "parquet",
];
const COMPRESSIONS: &[&str] = &[
    "auto",
    "none",
    "gzip",
    "gz",
    "zstd",
    "snappy",
    "uncompressed",
];

/// A key table with the object-store keys after `$k`: the file connector
/// reads and writes object stores with the same keys under every type name
/// (`file`, `s3`), and the table-format connectors (Delta) take the same
/// (with `KeySpec` and `KeyType` in scope).
#[macro_export]
macro_rules! with_store_keys {
    ($($k:expr),* $(,)?) => {
        &[
            $($k,)*
            KeySpec::new("bucket", KeyType::String, None, "Object store: the bucket, when `path` is not a URL (s3 type: `s3://bucket/prefix`)"),
            KeySpec::new("prefix", KeyType::String, None, "Object store: the key prefix (or path template) inside `bucket`"),
            KeySpec::new("region", KeyType::String, Some("AWS_REGION"), "S3: the bucket's region"),
            KeySpec::new("endpoint", KeyType::String, Some("AWS_ENDPOINT_URL"), "S3: an S3-compatible endpoint (MinIO, SeaweedFS, moto), e.g. http://127.0.0.1:9000"),
            KeySpec::new("access_key_id", KeyType::String, Some("AWS_ACCESS_KEY_ID or instance credentials"), "S3: access key id"),
            KeySpec::new("secret_access_key", KeyType::String, Some("AWS_SECRET_ACCESS_KEY"), "S3: secret access key (masked in every output)"),
            KeySpec::new("session_token", KeyType::String, Some("AWS_SESSION_TOKEN"), "S3: session token of temporary credentials (masked)"),
            KeySpec::new("allow_http", KeyType::Bool, Some("false"), "Object store: allow an http:// endpoint"),
            KeySpec::new("virtual_hosted_style", KeyType::Bool, Some("false"), "S3: bucket.endpoint addressing instead of endpoint/bucket"),
        ]
    };
}

/// Keys of `file_source`.
pub const SOURCE_KEYS: &[KeySpec] = with_store_keys![
    KeySpec::new(
        "path",
        KeyType::String,
        None,
        "File, directory or glob (`data/*.csv`), relative to the SQL file (required)",
    ),
    KeySpec::new(
        "format",
        KeyType::Enum(FORMATS),
        Some("from the extension"),
        "csv, json (lines or array, detected), jsonl, json_array, parquet",
    ),
    KeySpec::new(
        "source.format",
        KeyType::Enum(FORMATS),
        None,
        "Alias of format",
    ),
    KeySpec::new(
        "has_headers",
        KeyType::Bool,
        Some("true"),
        "CSV: first line holds column names",
    ),
    KeySpec::new(
        "source.has_headers",
        KeyType::Bool,
        None,
        "Alias of has_headers",
    ),
    KeySpec::new(
        "delimiter",
        KeyType::String,
        Some(","),
        "CSV field delimiter (one character)",
    ),
    KeySpec::new("quote", KeyType::String, Some("\""), "CSV quote character"),
    KeySpec::new(
        "schema",
        KeyType::String,
        Some("inferred"),
        "Explicit schema: `id BIGINT, name VARCHAR, ...`",
    ),
    KeySpec::new(
        "infer_rows",
        KeyType::UInt,
        Some("1000"),
        "Records sampled to infer the schema",
    ),
    KeySpec::new(
        "compression",
        KeyType::Enum(COMPRESSIONS),
        Some("auto"),
        "Input compression; auto: by extension (.gz, .zst)",
    ),
    KeySpec::new(
        "watch",
        KeyType::Bool,
        Some("false"),
        "Keep running and pick up new files as they appear",
    ),
    KeySpec::new(
        "watch_interval",
        KeyType::Duration,
        Some("1s"),
        "How often watch mode looks for new files",
    ),
    KeySpec::new(
        "metadata_columns",
        KeyType::Bool,
        Some("false"),
        "Add `_file_name` and `_row_number` (line in file) columns",
    ),
    KeySpec::new(
        "batch_size",
        KeyType::UInt,
        Some("8192"),
        "Rows per decoded Arrow batch",
    ),
    KeySpec::new(
        "decode_threads",
        KeyType::UInt,
        Some("number of cores"),
        "Threads decoding one large CSV/JSON file (record order is kept)",
    ),
    KeySpec::new(
        "delete_after_read",
        KeyType::Bool,
        Some("false"),
        "Delete each file (or object) once the epoch that read it to its end committed",
    ),
    KeySpec::new(
        "move_after_read",
        KeyType::String,
        None,
        "Move each file (or object) into this folder (same store) once the epoch that read it to its end committed",
    ),
    KeySpec::new(
        "encoding",
        KeyType::Enum(&["UTF-8", "utf8"]),
        Some("UTF-8"),
        "Text encoding (UTF-8 only)",
    ),
];

/// Keys of `file_sink`.
pub const SINK_KEYS: &[KeySpec] = with_store_keys![
    KeySpec::new(
        "path",
        KeyType::String,
        None,
        "Output path or template with {date} {year} {month} {day} {hour} {timestamp} {batch_id} {job} (the job's name; required)",
    ),
    KeySpec::new(
        "format",
        KeyType::Enum(&[
            "jsonl",
            "jsonlines",
            "json_lines",
            "ndjson",
            "json",
            "json_array",
            "csv",
            "parquet",
        ]),
        Some("from the extension"),
        "jsonl, json or json_array (one array per file), csv, parquet",
    ),
    KeySpec::new(
        "append",
        KeyType::Bool,
        Some("false"),
        "Append to an existing file instead of replacing it (line formats)",
    ),
    KeySpec::new(
        "compression",
        KeyType::Enum(&["none", "gzip", "zstd", "snappy", "uncompressed"]),
        Some("none; snappy for parquet"),
        "Line formats: gzip/zstd output; Parquet: snappy/zstd/gzip codec",
    ),
    KeySpec::new(
        "rotation",
        KeyType::String,
        None,
        "hourly, daily or size:64MB",
    ),
    KeySpec::new(
        "max_files",
        KeyType::UInt,
        None,
        "Keep only the newest N files this sink wrote (rotation)",
    ),
    KeySpec::new(
        "has_headers",
        KeyType::Bool,
        Some("true"),
        "CSV: write a header line",
    ),
    KeySpec::new("delimiter", KeyType::String, Some(","), "CSV delimiter"),
    KeySpec::new(
        "buffer_size_bytes",
        KeyType::Bytes,
        Some("1MB"),
        "Write buffer",
    ),
    KeySpec::new(
        "dictionary",
        KeyType::Bool,
        Some("strings only"),
        "Parquet dictionary encoding for every column (true), none (false); default: string columns",
    ),
    KeySpec::new(
        "row_group_size",
        KeyType::UInt,
        Some("122880"),
        "Parquet: rows per row group (the writer holds one group's pages in memory)",
    ),
    KeySpec::new(
        "encryption",
        KeyType::String,
        None,
        "Not supported: rejected with an error",
    ),
    KeySpec::new(
        "partition_by",
        KeyType::String,
        None,
        "Columns (comma-separated) whose values become Hive directories `col=value/` under the path's folder; the columns leave the files; every epoch writes files of its own",
    ),
    KeySpec::new(
        "partition_columns",
        KeyType::String,
        None,
        "Alias of partition_by",
    ),
];

/// File formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Comma (or other) separated values.
    Csv,
    /// One JSON object per line.
    JsonLines,
    /// One JSON array of objects per file.
    JsonArray,
    /// JSON: lines or array, detected from the first byte (sources only).
    JsonAuto,
    /// Apache Parquet.
    Parquet,
}

impl FileFormat {
    fn parse(v: &str, sink: bool) -> Option<Self> {
        Some(match v.trim().to_ascii_lowercase().as_str() {
            "csv" => FileFormat::Csv,
            "jsonl" | "jsonlines" | "json_lines" | "ndjson" => FileFormat::JsonLines,
            "json" if sink => FileFormat::JsonArray,
            "json" => FileFormat::JsonAuto,
            "json_array" => FileFormat::JsonArray,
            "parquet" => FileFormat::Parquet,
            _ => return None,
        })
    }

    fn from_extension(path: &str, sink: bool) -> Option<Self> {
        let p = path.to_ascii_lowercase();
        let p = p
            .trim_end_matches(".gz")
            .trim_end_matches(".zst")
            .trim_end_matches(".zstd");
        let ext = p.rsplit('.').next()?;
        match ext {
            "csv" | "tsv" => Some(FileFormat::Csv),
            "jsonl" | "ndjson" => Some(FileFormat::JsonLines),
            "json" if sink => Some(FileFormat::JsonArray),
            "json" => Some(FileFormat::JsonAuto),
            "parquet" | "pq" => Some(FileFormat::Parquet),
            "log" | "txt" if sink => Some(FileFormat::JsonLines),
            _ => None,
        }
    }

    fn resolve(cfg: &ConnectorConfig, path: &str, sink: bool) -> Result<Self, ConfigError> {
        match cfg.get_any(&["format", "source.format", "sink.format"]) {
            Some(f) => FileFormat::parse(f, sink).ok_or_else(|| cfg.invalid("format", f, "csv, json, jsonl or parquet")),
            None => FileFormat::from_extension(path, sink).ok_or_else(|| ConfigError::MissingKey {
                key: cfg.full_key("format"),
                hint: format!("cannot tell the format of '{path}' from its extension; set it to csv, json, jsonl or parquet"),
            }),
        }
    }
}

/// Input compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// By extension.
    Auto,
}

/// Typed `file_source` configuration.
#[derive(Debug, Clone)]
pub struct FileSourceConfig {
    /// Path or glob, absolute.
    pub path: String,
    /// Format.
    pub format: FileFormat,
    /// CSV header line.
    pub has_headers: bool,
    /// CSV delimiter.
    pub delimiter: u8,
    /// CSV quote.
    pub quote: u8,
    /// Explicit schema text.
    pub schema: Option<String>,
    /// Inference sample size.
    pub infer_rows: usize,
    /// Input compression.
    pub compression: Compression,
    /// Watch for new files.
    pub watch: bool,
    /// Watch poll interval.
    pub watch_interval: Duration,
    /// `_file_name`, `_row_number`.
    pub metadata_columns: bool,
    /// Rows per batch.
    pub batch_size: usize,
    /// Threads decoding one large line-format file.
    pub decode_threads: usize,
    /// What happens to a file once the epoch that read it committed.
    pub after_read: Option<AfterRead>,
}

/// What a source does with a file it has read, once the epoch that read it
/// to its end committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterRead {
    /// Delete it.
    Delete,
    /// Move it into this folder (a local directory or a URL on the same
    /// store), keeping its name.
    MoveTo(String),
}

fn one_byte(cfg: &ConnectorConfig, key: &str, default: u8) -> Result<u8, ConfigError> {
    match cfg.get(key) {
        None => Ok(default),
        Some("\\t") | Some("tab") => Ok(b'\t'),
        Some(v) if v.len() == 1 => Ok(v.as_bytes()[0]),
        Some(v) => Err(cfg.invalid(key, v, "a single character")),
    }
}

impl FileSourceConfig {
    /// From the resolved connector config.
    pub fn from_config(cfg: &ConnectorConfig) -> Result<Self, ConfigError> {
        let (raw, path) = location(
            cfg,
            "the file, directory, glob or object store URL to read, e.g. 'data/orders.csv' or 's3://bucket/orders/*.parquet'",
        )?;
        let raw = raw.as_str();
        let format = FileFormat::resolve(cfg, &path, false)?;
        let compression = match cfg.get("compression").map(|c| c.to_ascii_lowercase()) {
            None => Compression::Auto,
            Some(c) => match c.as_str() {
                "auto" => Compression::Auto,
                "none" | "uncompressed" | "snappy" => Compression::None,
                "gzip" | "gz" => Compression::Gzip,
                "zstd" => Compression::Zstd,
                _ => return Err(cfg.invalid("compression", &c, "auto, none, gzip or zstd")),
            },
        };
        Ok(Self {
            after_read: after_read(cfg, &path)?,
            path,
            format,
            has_headers: cfg.bool(
                if cfg.get("has_headers").is_some() {
                    "has_headers"
                } else {
                    "source.has_headers"
                },
                true,
            )?,
            delimiter: one_byte(
                cfg,
                "delimiter",
                if raw.ends_with(".tsv") { b'\t' } else { b',' },
            )?,
            quote: one_byte(cfg, "quote", b'"')?,
            schema: cfg.get("schema").map(str::to_string),
            infer_rows: cfg.uint("infer_rows")?.unwrap_or(1000).max(1) as usize,
            compression,
            watch: cfg.bool("watch", false)?,
            watch_interval: match cfg.get("watch_interval") {
                Some(v) => parse_duration(v)
                    .ok_or_else(|| cfg.invalid("watch_interval", v, "a duration"))?,
                None => Duration::from_secs(1),
            },
            metadata_columns: cfg.bool("metadata_columns", false)?,
            batch_size: cfg.uint("batch_size")?.unwrap_or(8192).max(1) as usize,
            decode_threads: match cfg.uint("decode_threads")? {
                Some(n) => n.clamp(1, 64) as usize,
                None => std::thread::available_parallelism()
                    .map(|n| n.get().min(8))
                    .unwrap_or(1),
            },
        })
    }
}

/// `delete_after_read` / `move_after_read`: one at most, and a move stays
/// in the store the files are in.
fn after_read(cfg: &ConnectorConfig, path: &str) -> Result<Option<AfterRead>, ConfigError> {
    let delete = cfg.bool("delete_after_read", false)?;
    let Some(to) = cfg.get("move_after_read") else {
        return Ok(delete.then_some(AfterRead::Delete));
    };
    if delete {
        return Err(cfg.invalid(
            "move_after_read",
            to,
            "no value while delete_after_read is true: choose one of them",
        ));
    }
    let root = |p: &str| {
        p.split_once("://")
            .map(|(s, r)| format!("{s}://{}", r.split('/').next().unwrap_or_default()))
    };
    let dest = if super::store::is_url(to) {
        to.to_string()
    } else {
        cfg.path(to.strip_prefix("file://").unwrap_or(to))
            .to_string_lossy()
            .into_owned()
    };
    if root(&dest) != root(path) {
        return Err(cfg.invalid(
            "move_after_read",
            &velo_config::mask(to),
            "a folder in the same place as the files read (a local directory for local files, the same bucket for objects)",
        ));
    }
    Ok(Some(AfterRead::MoveTo(
        dest.trim_end_matches('/').to_string(),
    )))
}

/// Rotation policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// New file every hour.
    Hourly,
    /// New file every day.
    Daily,
    /// New file past this many bytes.
    Size(u64),
}

/// Output codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutCompression {
    /// Plain (line formats) / uncompressed (Parquet).
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// snappy (Parquet only).
    Snappy,
}

/// Typed `file_sink` configuration.
#[derive(Debug, Clone)]
pub struct FileSinkConfig {
    /// Path template, absolute.
    pub path: String,
    /// Format.
    pub format: FileFormat,
    /// Append.
    pub append: bool,
    /// Compression.
    pub compression: OutCompression,
    /// Rotation.
    pub rotation: Option<Rotation>,
    /// Keep at most this many files.
    pub max_files: Option<usize>,
    /// CSV header.
    pub has_headers: bool,
    /// CSV delimiter.
    pub delimiter: u8,
    /// Write buffer size.
    pub buffer_size: usize,
    /// Parquet dictionary encoding (None: string columns only).
    pub dictionary: Option<bool>,
    /// Parquet: rows per row group.
    pub row_group_size: usize,
    /// Hive partition columns.
    pub partition_by: Vec<String>,
}

impl FileSinkConfig {
    /// From the resolved connector config.
    pub fn from_config(cfg: &ConnectorConfig) -> Result<Self, ConfigError> {
        let (_, path) = location(
            cfg,
            "where to write, e.g. 'out/orders-{date}.jsonl' or 's3://bucket/orders/{date}/'",
        )?;
        let path = sink_file_name(cfg, path)?;
        let mut format = FileFormat::resolve(cfg, &path, true)?;
        if let Some(scheme) = path.split_once("://").map(|(s, _)| s) {
            if matches!(scheme, "http" | "https") {
                return Err(cfg.invalid(
                    "path",
                    &velo_config::mask(&path),
                    "a writable place: http(s):// is read-only here; write to a local path or an object store (s3://, gs://, az://)",
                ));
            }
        }
        let remote = super::store::is_url(&path);
        if remote && cfg.bool("append", false)? {
            return Err(cfg.invalid(
                "append",
                "true",
                "false: an object cannot be appended to; on an object store every epoch writes new objects",
            ));
        }
        let append = cfg.bool("append", false)?;
        if format == FileFormat::JsonArray && append {
            tracing::warn!(
                "{}: format 'json' with append = true writes JSON Lines (an array document cannot be appended to)",
                cfg.name
            );
            format = FileFormat::JsonLines;
        }
        if let Some(e) = cfg.get("encryption") {
            return Err(cfg.invalid(
                "encryption",
                e,
                "no value: file encryption is not supported; encrypt the volume instead",
            ));
        }
        let default_comp = if format == FileFormat::Parquet {
            OutCompression::Snappy
        } else {
            OutCompression::None
        };
        let compression = match cfg.get("compression").map(|c| c.to_ascii_lowercase()) {
            None => default_comp,
            Some(c) => match c.as_str() {
                "none" | "uncompressed" => OutCompression::None,
                "gzip" | "gz" => OutCompression::Gzip,
                "zstd" => OutCompression::Zstd,
                "snappy" if format == FileFormat::Parquet => OutCompression::Snappy,
                _ => {
                    return Err(cfg.invalid(
                        "compression",
                        &c,
                        if format == FileFormat::Parquet {
                            "snappy, zstd, gzip or none"
                        } else {
                            "gzip, zstd or none"
                        },
                    ));
                }
            },
        };
        let rotation = match cfg.get("rotation").map(|r| r.trim().to_ascii_lowercase()) {
            None => None,
            Some(r) if r == "hourly" => Some(Rotation::Hourly),
            Some(r) if r == "daily" => Some(Rotation::Daily),
            Some(r) if r.starts_with("size:") => Some(Rotation::Size(
                parse_bytes(&r[5..]).filter(|b| *b > 0).ok_or_else(|| {
                    cfg.invalid(
                        "rotation",
                        &r,
                        "hourly, daily or size:<bytes> such as size:64MB",
                    )
                })?,
            )),
            Some(r) => {
                return Err(cfg.invalid(
                    "rotation",
                    &r,
                    "hourly, daily or size:<bytes> such as size:64MB",
                ));
            }
        };
        Ok(Self {
            path,
            format,
            append,
            compression,
            rotation,
            max_files: cfg.uint("max_files")?.map(|n| n.max(1) as usize),
            has_headers: cfg.bool("has_headers", true)?,
            delimiter: one_byte(cfg, "delimiter", b',')?,
            buffer_size: match cfg.get("buffer_size_bytes") {
                Some(v) => parse_bytes(v)
                    .ok_or_else(|| cfg.invalid("buffer_size_bytes", v, "a size"))?
                    as usize,
                None => 1 << 20,
            }
            .max(4096),
            dictionary: match cfg.get("dictionary") {
                Some(_) => Some(cfg.bool("dictionary", true)?),
                None => None,
            },
            row_group_size: match cfg.uint("row_group_size")? {
                Some(0) => {
                    let v = cfg.get("row_group_size").unwrap_or_default();
                    return Err(cfg.invalid("row_group_size", v, "a positive number of rows"));
                }
                Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
                None => DEFAULT_ROW_GROUP_SIZE,
            },
            partition_by: partition_by(cfg)?,
        })
    }
}

/// Rows per Parquet row group by default: DuckDB's size. ArrowWriter keeps a
/// whole group's encoded pages in memory; parquet's default of a million
/// rows holds eight times as much and grows its buffers into fresh pages
/// (benches/RESULTS.md, twelfth session: about 3% per CPU-second on JSON
/// Lines -> Parquet, within the noise).
pub const DEFAULT_ROW_GROUP_SIZE: usize = 122_880;

/// `partition_by` (or `partition_columns`): column names, comma-separated
/// (a YAML list `[a, b]` reads the same).
pub fn partition_by(cfg: &ConnectorConfig) -> Result<Vec<String>, ConfigError> {
    let Some((key, v)) = ["partition_by", "partition_columns"]
        .iter()
        .find_map(|k| cfg.get(k).map(|v| (*k, v)))
    else {
        return Ok(Vec::new());
    };
    let cols: Vec<String> = v
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|c| c.trim().trim_matches(['"', '\'']).to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if cols.is_empty() {
        return Err(cfg.invalid(
            key,
            v,
            "column names separated by commas, e.g. 'date, region'",
        ));
    }
    if cfg.bool("append", false)? {
        return Err(cfg.invalid(
            "append",
            "true",
            "false with partition_by: a partitioned output writes new files every epoch",
        ));
    }
    Ok(cols)
}

/// The connector's location: `path` (a local path, relative to the SQL
/// file, a `file://` URL, or an object store URL kept whole), or else
/// `bucket` and `prefix` (an S3 bucket). Returns the value as given and the
/// resolved location.
pub fn location(cfg: &ConnectorConfig, hint: &str) -> Result<(String, String), ConfigError> {
    if cfg.get("path").is_none() {
        if let Some(bucket) = cfg.get("bucket") {
            let prefix = cfg.get("prefix").unwrap_or("").trim_start_matches('/');
            let url = format!("s3://{}/{prefix}", bucket.trim_matches('/'));
            return Ok((url.clone(), url));
        }
    }
    let raw = cfg.require("path", hint)?.to_string();
    if super::store::is_url(&raw) {
        let scheme = raw
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default();
        if !super::store::SCHEMES.contains(&scheme.as_str()) {
            return Err(cfg.invalid(
                "path",
                &velo_config::mask(&raw),
                "a local path or a URL of s3://, gs://, az://, abfss:// or http(s)://",
            ));
        }
        return Ok((raw.clone(), raw));
    }
    let local = raw.strip_prefix("file://").unwrap_or(&raw);
    let path = cfg.path(local).to_string_lossy().into_owned();
    Ok((raw, path))
}

/// A sink path that names a folder (`s3://b/orders/`, `out/`) or a file
/// `*` (`s3://b/x/*.parquet`, seed 004) gets the file name `part`, with the
/// format's extension when the folder alone is given: every epoch's file is
/// `part-000001.parquet` and so on.
fn sink_file_name(cfg: &ConnectorConfig, path: String) -> Result<String, ConfigError> {
    let (dir, file) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path.as_str()),
    };
    if let Some(rest) = file.strip_prefix('*') {
        return Ok(format!("{dir}part{rest}"));
    }
    if !file.is_empty() {
        return Ok(path);
    }
    let ext = match cfg
        .get_any(&["format", "sink.format"])
        .map(|f| f.trim().to_ascii_lowercase())
    {
        Some(f) if f == "csv" => "csv",
        Some(f) if f == "parquet" => "parquet",
        Some(f) if f == "json" || f == "json_array" => "json",
        Some(_) => "jsonl",
        None => {
            return Err(ConfigError::MissingKey {
                key: cfg.full_key("format"),
                hint: format!(
                    "'{}' names a folder: set the format of its files (parquet, csv, jsonl or json)",
                    velo_config::mask(&path)
                ),
            });
        }
    };
    Ok(format!("{dir}part.{ext}"))
}

/// Files matching a path, glob or directory, sorted.
pub fn list_files(path: &str) -> std::io::Result<Vec<PathBuf>> {
    let p = std::path::Path::new(path);
    if path.ends_with('/') || p.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        v.sort();
        return Ok(v);
    }
    if !path.contains(['*', '?', '[']) {
        return if p.exists() {
            Ok(vec![p.to_path_buf()])
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file",
            ))
        };
    }
    let entries = glob::glob(path)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut v = Vec::new();
    for e in entries {
        let e = e.map_err(|e| {
            std::io::Error::new(
                e.error().kind(),
                format!("{}: {}", e.path().display(), e.error()),
            )
        })?;
        if e.is_file()
            && !e
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            v.push(e);
        }
    }
    v.sort();
    // a file reached twice (a symbolic link, a loop of them under `**`) is
    // read once
    let mut real = std::collections::HashSet::new();
    v.retain(|p| real.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())));
    Ok(v)
}

#[cfg(test)]
mod tests {
    /// The row group size the key documents (`velo config-docs`) is the
    /// one the sink uses when the key is not given.
    #[test]
    fn the_documented_row_group_size_is_the_one_used() {
        let spec = super::SINK_KEYS
            .iter()
            .find(|k| k.key == "row_group_size")
            .expect("the file sink documents row_group_size");
        assert_eq!(
            spec.default.map(str::parse::<usize>),
            Some(Ok(super::DEFAULT_ROW_GROUP_SIZE))
        );
    }
}
