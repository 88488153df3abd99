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

/// Keys of `file_source`.
pub const SOURCE_KEYS: &[KeySpec] = &[
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
        "encoding",
        KeyType::Enum(&["UTF-8", "utf8"]),
        Some("UTF-8"),
        "Text encoding (UTF-8 only)",
    ),
];

/// Keys of `file_sink`.
pub const SINK_KEYS: &[KeySpec] = &[
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
        "encryption",
        KeyType::String,
        None,
        "Not supported: rejected with an error",
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
        let raw = cfg.require(
            "path",
            "the file, directory or glob to read, e.g. 'data/orders.csv'",
        )?;
        let path = cfg.path(raw).to_string_lossy().into_owned();
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
}

impl FileSinkConfig {
    /// From the resolved connector config.
    pub fn from_config(cfg: &ConnectorConfig) -> Result<Self, ConfigError> {
        let raw = cfg.require("path", "where to write, e.g. 'out/orders-{date}.jsonl'")?;
        let path = cfg.path(raw).to_string_lossy().into_owned();
        let mut format = FileFormat::resolve(cfg, &path, true)?;
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
        })
    }
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
