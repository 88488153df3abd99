//! Event time of a source: which column holds it, how to read it, how the
//! watermark follows it and what happens to records that arrive too late.

use std::time::Duration;

use crate::keys::{KeySpec, KeyType, parse_duration};
use crate::{ConfigError, ConnectorConfig, Result};

/// Keys every source accepts for event time and watermarks.
pub const EVENT_TIME_KEYS: &[KeySpec] = &[
    KeySpec::new(
        "event.time.field",
        KeyType::String,
        None,
        "Column holding the record's event time; windows and the watermark follow it (default: processing time)",
    ),
    KeySpec::new(
        "event.time.format",
        KeyType::String,
        None,
        "How to read it: `epoch_millis`, `epoch_seconds`, `iso8601` or a strftime pattern such as `%Y-%m-%d %H:%M:%S`; the column becomes a timestamp (default: a timestamp column as is, integers as epoch millis)",
    ),
    KeySpec::new(
        "watermark.strategy",
        KeyType::Enum(&["bounded_out_of_orderness", "ascending"]),
        Some("bounded_out_of_orderness"),
        "`bounded_out_of_orderness`: the watermark trails the highest event time by `watermark.max_out_of_orderness`; `ascending`: event time never goes back",
    ),
    KeySpec::new(
        "watermark.max_out_of_orderness",
        KeyType::Duration,
        Some("5s"),
        "How far behind the highest event time seen a record may still arrive",
    ),
    KeySpec::new(
        "watermark.idle_timeout",
        KeyType::Duration,
        None,
        "A part (Kafka partition) without records for this long stops holding the watermark back, which is the minimum over the parts (default: never)",
    ),
    KeySpec::new(
        "late.data.strategy",
        KeyType::Enum(&["drop", "dead_letter"]),
        Some("drop"),
        "A record older than the watermark: `drop` (counted in records_late) or `dead_letter` (sent to the dead-letter sink with the reason)",
    ),
];

/// How a text or number column is read as event time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeFormat {
    /// A timestamp column as is; integers as epoch milliseconds.
    Native,
    /// Integer milliseconds since 1970.
    EpochMillis,
    /// Integer (or fractional) seconds since 1970.
    EpochSeconds,
    /// RFC 3339 / ISO 8601 text.
    Iso8601,
    /// A strftime pattern (chrono's syntax).
    Pattern(String),
}

/// What happens to a record older than the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateData {
    /// Dropped and counted.
    Drop,
    /// Sent to the dead-letter sink with the reason.
    DeadLetter,
}

/// A source's event-time settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTime {
    /// The time column.
    pub field: String,
    /// How to read it.
    pub format: TimeFormat,
    /// Allowed lateness behind the highest event time (zero for `ascending`).
    pub max_out_of_orderness: Duration,
    /// Idle parts stop holding the watermark after this long.
    pub idle_timeout: Option<Duration>,
    /// Late records.
    pub late: LateData,
}

impl EventTime {
    /// The event-time settings of `cfg`, `None` if it declares no time column.
    pub fn of(cfg: &ConnectorConfig) -> Result<Option<EventTime>> {
        let Some(field) = cfg.get("event.time.field").map(str::trim) else {
            return Ok(None);
        };
        let invalid = |key: &str, value: &str, expected: &str| ConfigError::InvalidValue {
            key: format!("{}.{key}", cfg.name),
            value: value.to_string(),
            expected: expected.to_string(),
        };
        if field.is_empty() {
            return Err(invalid("event.time.field", field, "a column name"));
        }
        let format = match cfg.get("event.time.format").map(str::trim) {
            None => TimeFormat::Native,
            Some(f) => match f.to_ascii_lowercase().as_str() {
                "epoch_millis" | "epoch_ms" | "millis" => TimeFormat::EpochMillis,
                "epoch_seconds" | "epoch_secs" | "epoch" | "seconds" => TimeFormat::EpochSeconds,
                "iso8601" | "iso_8601" | "rfc3339" => TimeFormat::Iso8601,
                _ if f.contains('%') => TimeFormat::Pattern(f.to_string()),
                _ => {
                    return Err(invalid(
                        "event.time.format",
                        f,
                        "epoch_millis, epoch_seconds, iso8601 or a strftime pattern such as %Y-%m-%d %H:%M:%S",
                    ));
                }
            },
        };
        let duration = |key: &str, default: Option<Duration>| -> Result<Option<Duration>> {
            match cfg.get(key) {
                None => Ok(default),
                Some(v) => parse_duration(v)
                    .map(Some)
                    .ok_or_else(|| invalid(key, v, "a duration such as 500ms, 2s, 5m")),
            }
        };
        let ascending = cfg
            .get("watermark.strategy")
            .is_some_and(|s| s.trim().eq_ignore_ascii_case("ascending"));
        let max_out_of_orderness = if ascending {
            Duration::ZERO
        } else {
            duration(
                "watermark.max_out_of_orderness",
                Some(Duration::from_secs(5)),
            )?
            .unwrap_or_default()
        };
        let late = match cfg.get("late.data.strategy").map(str::trim) {
            Some(s) if s.eq_ignore_ascii_case("dead_letter") => LateData::DeadLetter,
            _ => LateData::Drop,
        };
        Ok(Some(EventTime {
            field: field.to_string(),
            format,
            max_out_of_orderness,
            idle_timeout: duration("watermark.idle_timeout", None)?,
            late,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cfg(props: &[(&str, &str)]) -> ConnectorConfig {
        ConnectorConfig {
            name: "orders".into(),
            role: crate::Role::Source,
            kind: "file_source".into(),
            props: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            origin: crate::Origin::Named,
            base_dir: ".".into(),
            job: "j".into(),
        }
    }

    #[test]
    fn defaults_and_choices() {
        assert_eq!(EventTime::of(&cfg(&[])).unwrap(), None);
        let e = EventTime::of(&cfg(&[("event.time.field", "ts")]))
            .unwrap()
            .unwrap();
        assert_eq!(e.format, TimeFormat::Native);
        assert_eq!(e.max_out_of_orderness, Duration::from_secs(5));
        assert_eq!(e.late, LateData::Drop);
        let e = EventTime::of(&cfg(&[
            ("event.time.field", "ts"),
            ("event.time.format", "%Y-%m-%d %H:%M"),
            ("watermark.strategy", "ascending"),
            ("watermark.idle_timeout", "2s"),
            ("late.data.strategy", "dead_letter"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(e.format, TimeFormat::Pattern("%Y-%m-%d %H:%M".into()));
        assert_eq!(e.max_out_of_orderness, Duration::ZERO);
        assert_eq!(e.idle_timeout, Some(Duration::from_secs(2)));
        assert_eq!(e.late, LateData::DeadLetter);
    }

    #[test]
    fn bad_format_names_the_key() {
        let err = EventTime::of(&cfg(&[
            ("event.time.field", "ts"),
            ("event.time.format", "julian"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("orders.event.time.format"), "{err}");
    }
}
