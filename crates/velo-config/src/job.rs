//! Typed job settings: the keys without a `<name>.` prefix.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::keys::{KeySpec, KeyType, parse_bool, parse_bytes, parse_duration};
use crate::{ConfigError, Result};

const STRATEGIES: &[&str] = &[
    "fixed_size",
    "FixedSize",
    "low_latency",
    "LowLatency",
    "adaptive_size",
    "AdaptiveSize",
    "memory_based",
    "MemoryBased",
];
const FAILURES: &[&str] = &[
    "LogAndContinue",
    "FailBatch",
    "RetryWithBackoff",
    "log_and_continue",
    "fail_batch",
    "retry_with_backoff",
];

/// Every job key. Aliases from the seeds (`max_batch_size`, `batch_timeout`,
/// `batch.max_size`, `batch.memory_limit_mb`) are accepted.
pub const JOB_KEYS: &[KeySpec] = &[
    KeySpec::new(
        "batch.size",
        KeyType::UInt,
        None,
        "Records per epoch (fixed_size). Unset: no size limit",
    ),
    KeySpec::new("max_batch_size", KeyType::UInt, None, "Alias of batch.size"),
    KeySpec::new("batch.max_size", KeyType::UInt, None, "Alias of batch.size"),
    KeySpec::new(
        "batch.timeout",
        KeyType::Duration,
        Some("1000ms (unbounded sources); none for bounded"),
        "Longest an epoch stays open",
    ),
    KeySpec::new(
        "batch_timeout",
        KeyType::Duration,
        None,
        "Alias of batch.timeout",
    ),
    KeySpec::new(
        "batch.strategy",
        KeyType::Enum(STRATEGIES),
        Some("fixed_size"),
        "How epoch boundaries are chosen",
    ),
    KeySpec::new(
        "batch.enable",
        KeyType::Bool,
        Some("true"),
        "false: every source batch is its own epoch",
    ),
    KeySpec::new(
        "batch.min_size",
        KeyType::UInt,
        Some("100"),
        "adaptive_size: smallest epoch",
    ),
    KeySpec::new(
        "batch.adaptive_max_size",
        KeyType::UInt,
        Some("100000"),
        "adaptive_size: largest epoch",
    ),
    KeySpec::new(
        "batch.target_latency",
        KeyType::Duration,
        Some("200ms"),
        "adaptive_size: epoch processing time to aim for",
    ),
    KeySpec::new(
        "batch.memory_size",
        KeyType::Bytes,
        Some("16MB"),
        "memory_based: Arrow bytes per epoch",
    ),
    KeySpec::new(
        "batch.memory_limit_mb",
        KeyType::UInt,
        None,
        "memory_based: alias of batch.memory_size in MiB",
    ),
    KeySpec::new(
        "batch.low_latency_max_size",
        KeyType::UInt,
        Some("10"),
        "low_latency: records per epoch at most",
    ),
    KeySpec::new(
        "batch.low_latency_wait",
        KeyType::Duration,
        Some("5ms"),
        "low_latency: longest wait for more records",
    ),
    KeySpec::new(
        "batch.eager_processing",
        KeyType::Bool,
        Some("true"),
        "low_latency: close the epoch as soon as input is available",
    ),
    KeySpec::new(
        "use_transactions",
        KeyType::Bool,
        Some("false"),
        "Transactional mode: epochs publish atomically on every sink",
    ),
    KeySpec::new(
        "state.dir",
        KeyType::String,
        Some(".velo-state/<job>"),
        "Checkpoint directory (also `--state-dir`): transactional and windowed jobs store their source positions and operator state here, atomically with the file sinks' epoch, and resume from them. Kafka jobs always checkpoint (default `.velo-state/<job>` beside the SQL file); file jobs only when this is set (they resume at the line after the last committed epoch); a local path relative to the SQL file, or `s3://bucket/prefix` on any S3-compatible store (endpoint and credentials from the standard `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ... environment variables)",
    ),
    KeySpec::new(
        "partitions",
        KeyType::UInt,
        Some("the number of cores"),
        "Partitions of a streaming GROUP BY (windows, updating results): records are hash-routed by the group key and each partition keeps the state of its keys on a core of its own; results are the same for any number (also `-- @num_partitions: N`)",
    ),
    KeySpec::new(
        "failure_strategy",
        KeyType::Enum(FAILURES),
        Some("LogAndContinue"),
        "LogAndContinue, FailBatch or RetryWithBackoff",
    ),
    KeySpec::new(
        "max_retries",
        KeyType::UInt,
        Some("3"),
        "RetryWithBackoff: attempts after the first",
    ),
    KeySpec::new(
        "retry_backoff",
        KeyType::Duration,
        Some("500ms"),
        "RetryWithBackoff: first backoff, doubled each retry, with jitter",
    ),
    KeySpec::new(
        "progress_interval",
        KeyType::UInt,
        Some("10"),
        "Log a progress line every N epochs (non-terminal output)",
    ),
    KeySpec::new("log_progress", KeyType::Bool, Some("true"), "Show progress"),
    KeySpec::new(
        "job.name",
        KeyType::String,
        None,
        "Job name (default: the stream name)",
    ),
];

/// How epoch boundaries are chosen (`batch.strategy`).
#[derive(Debug, Clone, PartialEq)]
pub enum BatchStrategy {
    /// `batch.size` records or `batch.timeout`, whichever first.
    FixedSize,
    /// Tiny epochs: `batch.low_latency_max_size`, `batch.low_latency_wait`.
    LowLatency {
        /// Records per epoch at most.
        max_size: usize,
        /// Longest wait for more.
        wait: Duration,
        /// Close as soon as anything arrived.
        eager: bool,
    },
    /// Epoch size adapts so that an epoch takes about `target_latency`.
    AdaptiveSize {
        /// Smallest epoch.
        min_size: usize,
        /// Largest epoch.
        max_size: usize,
        /// Aim.
        target_latency: Duration,
    },
    /// Epochs of about `bytes` Arrow memory.
    MemoryBased {
        /// Bytes per epoch.
        bytes: u64,
    },
}

/// What happens to bad records and failed writes (`failure_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureStrategy {
    /// Count, log (with file:line) and route bad records to the DLQ; go on.
    LogAndContinue,
    /// Stop with an error naming the record; nothing of the epoch published.
    FailBatch,
    /// Retry failed sink writes with exponential backoff and jitter.
    RetryWithBackoff,
}

/// Typed job settings.
#[derive(Debug, Clone, PartialEq)]
pub struct JobConfig {
    /// `batch.size`: records per epoch.
    pub batch_size: Option<usize>,
    /// `batch.timeout`: longest epoch (None = default for the source kind).
    pub batch_timeout: Option<Duration>,
    /// `batch.strategy` with its keys.
    pub strategy: BatchStrategy,
    /// `batch.enable`.
    pub batch_enable: bool,
    /// `use_transactions`.
    pub use_transactions: bool,
    /// `failure_strategy`.
    pub failure_strategy: FailureStrategy,
    /// `max_retries`.
    pub max_retries: u32,
    /// `retry_backoff`.
    pub retry_backoff: Duration,
    /// `progress_interval`.
    pub progress_interval: u64,
    /// `log_progress`.
    pub log_progress: bool,
    /// `state.dir` as written (relative to the SQL file).
    pub state_dir: Option<String>,
    /// `partitions`: `None` = the number of cores.
    pub partitions: Option<usize>,
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            batch_size: None,
            batch_timeout: None,
            strategy: BatchStrategy::FixedSize,
            batch_enable: true,
            use_transactions: false,
            failure_strategy: FailureStrategy::LogAndContinue,
            max_retries: 3,
            retry_backoff: Duration::from_millis(500),
            progress_interval: 10,
            log_progress: true,
            state_dir: None,
            partitions: None,
        }
    }
}

fn norm(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace('_', "")
}

impl JobConfig {
    /// Builds the typed settings from (already validated) job keys.
    pub fn from_props(p: &BTreeMap<String, String>) -> Result<Self> {
        crate::keys::validate(p, &[JOB_KEYS], "")?;
        let get = |k: &str| p.get(k).map(String::as_str);
        let uint = |k: &str| {
            get(k)
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| bad(k, v, "a whole number"))
                })
                .transpose()
        };
        let dur = |k: &str| {
            get(k)
                .map(|v| parse_duration(v).ok_or_else(|| bad(k, v, "a duration")))
                .transpose()
        };
        let boolean = |k: &str| {
            get(k)
                .map(|v| parse_bool(v).ok_or_else(|| bad(k, v, "true or false")))
                .transpose()
        };
        let mut c = JobConfig {
            batch_size: uint("batch.size")?
                .or(uint("max_batch_size")?)
                .or(uint("batch.max_size")?),
            batch_timeout: dur("batch.timeout")?.or(dur("batch_timeout")?),
            ..Default::default()
        };
        if c.batch_size == Some(0) {
            return Err(bad("batch.size", "0", "a number greater than 0"));
        }
        c.batch_enable = boolean("batch.enable")?.unwrap_or(true);
        c.use_transactions = boolean("use_transactions")?.unwrap_or(false);
        c.log_progress = boolean("log_progress")?.unwrap_or(true);
        c.state_dir = get("state.dir").map(str::to_string);
        c.partitions = uint("partitions")?.map(|n| n.max(1));
        if let Some(n) = uint("max_retries")? {
            c.max_retries = n as u32;
        }
        if let Some(d) = dur("retry_backoff")? {
            c.retry_backoff = d;
        }
        if let Some(n) = uint("progress_interval")? {
            c.progress_interval = n as u64;
        }
        c.failure_strategy = match get("failure_strategy").map(norm).as_deref() {
            None | Some("logandcontinue") => FailureStrategy::LogAndContinue,
            Some("failbatch") => FailureStrategy::FailBatch,
            Some("retrywithbackoff") => FailureStrategy::RetryWithBackoff,
            Some(_) => unreachable!("validated against the enum"),
        };
        c.strategy = match get("batch.strategy").map(norm).as_deref() {
            None | Some("fixedsize") => BatchStrategy::FixedSize,
            Some("lowlatency") => BatchStrategy::LowLatency {
                max_size: uint("batch.low_latency_max_size")?.unwrap_or(10).max(1),
                wait: dur("batch.low_latency_wait")?.unwrap_or(Duration::from_millis(5)),
                eager: boolean("batch.eager_processing")?.unwrap_or(true),
            },
            Some("adaptivesize") => {
                let min_size = uint("batch.min_size")?.unwrap_or(100).max(1);
                BatchStrategy::AdaptiveSize {
                    min_size,
                    max_size: uint("batch.adaptive_max_size")?
                        .unwrap_or(100_000)
                        .max(min_size),
                    target_latency: dur("batch.target_latency")?
                        .unwrap_or(Duration::from_millis(200)),
                }
            }
            Some("memorybased") => {
                let bytes = match (get("batch.memory_size"), uint("batch.memory_limit_mb")?) {
                    (Some(v), _) => {
                        parse_bytes(v).ok_or_else(|| bad("batch.memory_size", v, "a size"))?
                    }
                    (None, Some(mb)) => mb as u64 * 1024 * 1024,
                    (None, None) => 16 * 1024 * 1024,
                };
                BatchStrategy::MemoryBased {
                    bytes: bytes.max(1),
                }
            }
            Some(_) => unreachable!("validated against the enum"),
        };
        Ok(c)
    }
}

fn bad(key: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.into(),
        value: value.into(),
        expected: expected.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_aliases() {
        assert_eq!(
            JobConfig::from_props(&props(&[])).unwrap(),
            JobConfig::default()
        );
        let c = JobConfig::from_props(&props(&[
            ("max_batch_size", "100"),
            ("batch_timeout", "2000"),
            ("failure_strategy", "FailBatch"),
            ("use_transactions", "true"),
        ]))
        .unwrap();
        assert_eq!(c.batch_size, Some(100));
        assert_eq!(c.batch_timeout, Some(Duration::from_secs(2)));
        assert_eq!(c.failure_strategy, FailureStrategy::FailBatch);
        assert!(c.use_transactions);
    }

    #[test]
    fn strategies_with_their_keys() {
        let c = JobConfig::from_props(&props(&[
            ("batch.strategy", "low_latency"),
            ("batch.low_latency_max_size", "5"),
            ("batch.low_latency_wait", "10ms"),
            ("batch.eager_processing", "false"),
        ]))
        .unwrap();
        assert_eq!(
            c.strategy,
            BatchStrategy::LowLatency {
                max_size: 5,
                wait: Duration::from_millis(10),
                eager: false
            }
        );
        let c = JobConfig::from_props(&props(&[
            ("batch.strategy", "AdaptiveSize"),
            ("batch.min_size", "50"),
            ("batch.target_latency", "100ms"),
        ]))
        .unwrap();
        assert_eq!(
            c.strategy,
            BatchStrategy::AdaptiveSize {
                min_size: 50,
                max_size: 100_000,
                target_latency: Duration::from_millis(100)
            }
        );
        let c = JobConfig::from_props(&props(&[
            ("batch.strategy", "MemoryBased"),
            ("batch.memory_limit_mb", "256"),
        ]))
        .unwrap();
        assert_eq!(c.strategy, BatchStrategy::MemoryBased { bytes: 256 << 20 });
        let c = JobConfig::from_props(&props(&[
            ("batch.strategy", "memory_based"),
            ("batch.memory_size", "16777216"),
        ]))
        .unwrap();
        assert_eq!(c.strategy, BatchStrategy::MemoryBased { bytes: 16 << 20 });
    }

    #[test]
    fn non_number_batch_size_names_key() {
        let e = JobConfig::from_props(&props(&[("batch.size", "big")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'batch.size'") && e.contains("whole number"),
            "{e}"
        );
        let e = JobConfig::from_props(&props(&[("failure_strategy", "Panic")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("failure_strategy"), "{e}");
    }
}
