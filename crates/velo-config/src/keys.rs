//! Known keys, their types and docs; validation with did-you-mean.
//!
//! Every connector and the job itself publish a `&[KeySpec]` table. The
//! reference page `docs/configuration.md` is tested against these tables so
//! the documentation cannot drift from the code.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{ConfigError, Result};

/// The type of a configuration value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// Any string.
    String,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`).
    Bool,
    /// A non-negative integer.
    UInt,
    /// A number.
    Float,
    /// A duration: `500ms`, `2s`, `5m`, `1h`, or a bare number of milliseconds.
    Duration,
    /// A size: `16777216`, `64KB`, `16MB`, `1GB`.
    Bytes,
    /// One of a fixed set (case-insensitive).
    Enum(&'static [&'static str]),
}

impl KeyType {
    fn expected(&self) -> String {
        match self {
            KeyType::String => "a string".into(),
            KeyType::Bool => "true or false".into(),
            KeyType::UInt => "a whole number".into(),
            KeyType::Float => "a number".into(),
            KeyType::Duration => {
                "a duration such as 500ms, 2s, 5m (a bare number means milliseconds)".into()
            }
            KeyType::Bytes => "a size such as 65536, 64KB, 16MB".into(),
            KeyType::Enum(v) => format!("one of {}", v.join(", ")),
        }
    }

    /// Checks `value` against this type.
    pub fn check(&self, value: &str) -> bool {
        match self {
            KeyType::String => true,
            KeyType::Bool => parse_bool(value).is_some(),
            KeyType::UInt => value.trim().parse::<u64>().is_ok(),
            KeyType::Float => value.trim().parse::<f64>().is_ok(),
            KeyType::Duration => parse_duration(value).is_some(),
            KeyType::Bytes => parse_bytes(value).is_some(),
            KeyType::Enum(v) => v.iter().any(|x| x.eq_ignore_ascii_case(value.trim())),
        }
    }
}

/// One documented key.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// The key (without the `<name>.` prefix). A key ending in `.*` covers
    /// every key below that prefix.
    pub key: &'static str,
    /// Its type.
    pub ty: KeyType,
    /// Default, if any, as text.
    pub default: Option<&'static str>,
    /// One line of documentation.
    pub doc: &'static str,
}

impl KeySpec {
    /// A key.
    pub const fn new(
        key: &'static str,
        ty: KeyType,
        default: Option<&'static str>,
        doc: &'static str,
    ) -> Self {
        Self {
            key,
            ty,
            default,
            doc,
        }
    }

    /// Whether `key` is this key (or below it, for a `.*` key).
    pub fn matches(&self, key: &str) -> bool {
        match self.key.strip_suffix(".*") {
            Some(prefix) => key.starts_with(prefix) && key[prefix.len()..].starts_with('.'),
            None => self.key == key,
        }
    }
}

/// A non-fatal configuration finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Keys every source accepts for being read as a table: the bounded side
/// of a JOIN with the stream, kept in memory across epochs.
pub const TABLE_KEYS: &[KeySpec] = &[KeySpec::new(
    "refresh_interval",
    KeyType::Duration,
    None,
    "A lookup table (a bounded source joined with the stream) is read again this often, between epochs, and the join uses the new rows from then on; a failed reload keeps the old rows (default: read once)",
)];

/// The keys the engine reads on every source, whatever its connector:
/// event time and watermarks, lookup refresh. Client libraries (librdkafka)
/// never see them.
pub fn engine_source_keys() -> [&'static [KeySpec]; 2] {
    [crate::time::EVENT_TIME_KEYS, TABLE_KEYS]
}

/// Keys every sink accepts, read by the engine: its circuit breaker.
pub const SINK_KEYS: &[KeySpec] = &[
    KeySpec::new(
        "circuit_breaker.failure_threshold",
        KeyType::UInt,
        None,
        "After this many failed epochs in a row the sink's circuit opens: for `reset_timeout` the sink is not called at all; RetryWithBackoff holds the job's epoch until then (nothing lost, nothing skipped, and these failures do not count against `max_retries`), LogAndContinue counts the sink's records as failed while the other sinks go on. Then one epoch probes it (half-open): a success closes the circuit, a failure opens it again (default: no circuit breaker)",
    ),
    KeySpec::new(
        "circuit_breaker.reset_timeout",
        KeyType::Duration,
        Some("30s"),
        "How long an open circuit stays open before its probe",
    ),
];

/// The keys the engine reads on every sink, whatever its connector.
pub fn engine_sink_keys() -> [&'static [KeySpec]; 1] {
    [SINK_KEYS]
}

/// A sink's circuit breaker (`<sink>.circuit_breaker.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// Failed epochs in a row that open the circuit.
    pub failure_threshold: u32,
    /// How long it stays open before a probe.
    pub reset_timeout: Duration,
}

impl CircuitBreaker {
    /// The circuit breaker `cfg` configures, if any.
    pub fn of(cfg: &crate::ConnectorConfig) -> crate::Result<Option<Self>> {
        let threshold = cfg.uint("circuit_breaker.failure_threshold")?;
        let reset = cfg.duration("circuit_breaker.reset_timeout")?;
        let Some(n) = threshold else {
            if reset.is_some() {
                return Err(cfg.invalid(
                    "circuit_breaker.reset_timeout",
                    cfg.get("circuit_breaker.reset_timeout").unwrap_or_default(),
                    "a circuit breaker: set circuit_breaker.failure_threshold too",
                ));
            }
            return Ok(None);
        };
        if n == 0 {
            return Err(cfg.invalid(
                "circuit_breaker.failure_threshold",
                "0",
                "a number of failed epochs of 1 or more",
            ));
        }
        Ok(Some(Self {
            failure_threshold: u32::try_from(n).unwrap_or(u32::MAX),
            reset_timeout: reset.unwrap_or(Duration::from_secs(30)),
        }))
    }
}

/// Keys that every connector accepts (handled by the registry/runtime).
pub const COMMON_CONNECTOR_KEYS: &[KeySpec] = &[
    KeySpec::new(
        "type",
        KeyType::String,
        None,
        "Connector type: `file_source`, `file_sink`, `datagen`, `stdout`, ... (required)",
    ),
    KeySpec::new(
        "config_file",
        KeyType::String,
        None,
        "YAML file with this connector's keys, relative to the SQL file",
    ),
];

/// Checks `props` against `specs`: unknown keys become warnings with a
/// did-you-mean suggestion, ill-typed values are errors naming the key.
/// `prefix` is prepended to key names in messages (e.g. `orders.`).
pub fn validate(
    props: &BTreeMap<String, String>,
    specs: &[&[KeySpec]],
    prefix: &str,
) -> Result<Vec<Warning>> {
    let mut warnings = Vec::new();
    for (key, value) in props {
        let spec = specs.iter().flat_map(|s| s.iter()).find(|s| s.matches(key));
        match spec {
            Some(spec) => {
                if !spec.ty.check(value) {
                    return Err(ConfigError::InvalidValue {
                        key: format!("{prefix}{key}"),
                        value: crate::display_value(key, value).into_owned(),
                        expected: spec.ty.expected(),
                    });
                }
            }
            None => {
                let mut msg = format!("unknown key '{prefix}{key}' (ignored)");
                if let Some(s) =
                    did_you_mean(key, specs.iter().flat_map(|s| s.iter()).map(|s| s.key))
                {
                    msg.push_str(&format!("; did you mean '{prefix}{s}'?"));
                } else if let Some(ours) = foreign_key(key) {
                    let owner = if prefix.is_empty() {
                        "<source>."
                    } else {
                        prefix
                    };
                    msg.push_str(&format!(
                        "; '{key}' is another engine's spelling: a source or sink takes '{owner}{ours}' here"
                    ));
                }
                warnings.push(Warning(msg));
            }
        }
    }
    Ok(warnings)
}

/// Velostream's key for a key of ksqlDB's or Flink's `WITH` clauses (which
/// users bring along), if there is one.
pub fn foreign_key(key: &str) -> Option<&'static str> {
    Some(match key.to_ascii_lowercase().as_str() {
        "kafka_topic" | "topic" => "topic",
        "value_format" | "format" | "value.format" => "value.format",
        "key_format" | "key.format" => "key.format",
        "timestamp" => "event.time.field",
        "timestamp_format" => "event.time.format",
        "connector" => "type",
        "properties.bootstrap.servers" | "bootstrap.servers" => "bootstrap.servers",
        "properties.group.id" | "group.id" => "group.id",
        "scan.startup.mode" => "auto.offset.reset",
        "path" => "path",
        _ => return None,
    })
}

/// The closest known key, if one is close enough.
pub fn did_you_mean<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .filter(|k| !k.ends_with(".*"))
        .map(|k| (k, strsim::jaro_winkler(key, k)))
        .filter(|(_, s)| *s >= 0.85)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(k, _)| k)
}

/// `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Splits `12.5 kb` into (12.5, "kb"); negative numbers are refused.
fn number_and_unit(v: &str) -> Option<(f64, String)> {
    let v = v.trim().to_ascii_lowercase();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    Some((n, unit.trim().to_string()))
}

/// `500ms`, `2s`, `2 seconds`, `5m`, `1h`, `1d`; a bare number is milliseconds.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let (n, unit) = number_and_unit(v)?;
    let ms = match unit.as_str() {
        "" | "ms" | "millis" | "milliseconds" => n,
        "us" | "micros" => n / 1000.0,
        "s" | "sec" | "secs" | "second" | "seconds" => n * 1000.0,
        "m" | "min" | "mins" | "minute" | "minutes" => n * 60_000.0,
        "h" | "hour" | "hours" => n * 3_600_000.0,
        "d" | "day" | "days" => n * 86_400_000.0,
        _ => return None,
    };
    Some(Duration::from_micros((ms * 1000.0) as u64))
}

/// `65536`, `64KB`/`64KiB`, `16MB`, `1GB` (powers of 1024).
pub fn parse_bytes(v: &str) -> Option<u64> {
    let (n, unit) = number_and_unit(v)?;
    let mult = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[KeySpec] = &[
        KeySpec::new("batch.size", KeyType::UInt, None, ""),
        KeySpec::new("has_headers", KeyType::Bool, None, ""),
        KeySpec::new("fields.*", KeyType::String, None, ""),
    ];

    #[test]
    fn unknown_key_suggests() {
        let props = BTreeMap::from([("has_header".to_string(), "true".to_string())]);
        let w = validate(&props, &[SPECS], "src.").unwrap();
        assert_eq!(
            w[0].0,
            "unknown key 'src.has_header' (ignored); did you mean 'src.has_headers'?"
        );
        let props = BTreeMap::from([
            ("zzz".to_string(), "1".to_string()),
            ("fields.a.min".to_string(), "1".to_string()),
        ]);
        let w = validate(&props, &[SPECS], "").unwrap();
        assert_eq!(w, vec![Warning("unknown key 'zzz' (ignored)".into())]);
    }

    #[test]
    fn type_errors_name_the_key() {
        let props = BTreeMap::from([("batch.size".to_string(), "lots".to_string())]);
        let e = validate(&props, &[SPECS], "").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid value 'lots' for 'batch.size': expected a whole number"
        );
    }

    #[test]
    fn parsers() {
        assert_eq!(parse_duration("2000ms"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("2000"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("5 minutes"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_bytes("64MB"), Some(64 << 20));
        assert_eq!(parse_bytes("16777216"), Some(16 << 20));
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("maybe"), None);
    }
}
