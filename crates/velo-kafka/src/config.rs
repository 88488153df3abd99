//! Typed configuration of the Kafka connector: Velostream's own keys, and
//! every other key handed to librdkafka as it is (with the Java client's
//! names mapped where librdkafka's differ).

use std::path::PathBuf;
use std::time::Duration;

use rdkafka::ClientConfig;
use velo_config::keys::{KeySpec, KeyType, did_you_mean};
use velo_config::{ConfigError, ConnectorConfig, Warning};

pub use velo_formats::Format;

const FORMATS: &[&str] = velo_formats::value::FORMAT_NAMES;

fn format_of(v: &str) -> Format {
    Format::parse(v)
}

const BOOTSTRAP: KeySpec = KeySpec::new(
    "bootstrap.servers",
    KeyType::String,
    None,
    "Kafka brokers, `host:port[,host:port]` (required; alias `brokers`)",
);
const BROKERS: KeySpec = KeySpec::new(
    "brokers",
    KeyType::String,
    None,
    "Alias of bootstrap.servers",
);
const FORMAT_ALIAS: KeySpec = KeySpec::new(
    "format",
    KeyType::Enum(FORMATS),
    None,
    "Alias of value.format",
);
const REGISTRY_SUBJECT: KeySpec = KeySpec::new(
    "value.subject",
    KeyType::String,
    Some("<topic>-value"),
    "Schema registry subject of the value schema",
);

/// Keys of `kafka_source` handled by Velostream; every other key goes to librdkafka.
pub const SOURCE_KEYS: &[KeySpec] = &[
    BOOTSTRAP,
    BROKERS,
    KeySpec::new(
        "topic",
        KeyType::String,
        None,
        "Topic to read (or `topics`)",
    ),
    KeySpec::new(
        "topics",
        KeyType::String,
        None,
        "Several topics, comma-separated; all must share one value schema",
    ),
    KeySpec::new(
        "group.id",
        KeyType::String,
        Some("velo-<job name>"),
        "Consumer group; offsets are committed to it after every sink acknowledged an epoch. A job's second and later Kafka sources default to `velo-<job>-<source>`, so that they do not rebalance each other",
    ),
    KeySpec::new(
        "auto.offset.reset",
        KeyType::Enum(&[
            "earliest",
            "latest",
            "smallest",
            "largest",
            "beginning",
            "end",
            "error",
        ]),
        Some("earliest"),
        "Where a group without committed offsets starts",
    ),
    KeySpec::new(
        "value.format",
        KeyType::Enum(FORMATS),
        Some("json"),
        "json, avro (schema registry or `avro.schema.file`), protobuf (`protobuf.descriptor.file`), string, bytes (aliases `format`, `source.format`)",
    ),
    KeySpec::new(
        "protobuf.descriptor.file",
        KeyType::String,
        None,
        "protobuf: a descriptor set (`protoc --include_imports --descriptor_set_out=FILE`)",
    ),
    KeySpec::new(
        "protobuf.message",
        KeyType::String,
        None,
        "protobuf: the full message name, e.g. `shop.Order` (scalar and enum fields become columns)",
    ),
    FORMAT_ALIAS,
    KeySpec::new(
        "source.format",
        KeyType::Enum(FORMATS),
        None,
        "Alias of value.format",
    ),
    KeySpec::new(
        "key.format",
        KeyType::Enum(&["string", "text", "bytes", "raw", "binary", "json"]),
        Some("string"),
        "Type of the `_key` column: string (json keys as their text) or bytes",
    ),
    KeySpec::new(
        "schema.registry.url",
        KeyType::String,
        None,
        "Confluent schema registry for `avro` (messages carry magic byte + schema id)",
    ),
    REGISTRY_SUBJECT,
    KeySpec::new(
        "avro.schema.file",
        KeyType::String,
        None,
        "Avro schema file (.avsc): messages are plain Avro binary in this schema (alias `value.avro.schema.file`)",
    ),
    KeySpec::new(
        "value.avro.schema.file",
        KeyType::String,
        None,
        "Alias of avro.schema.file",
    ),
    KeySpec::new(
        "schema",
        KeyType::String,
        None,
        "Value columns, e.g. `id BIGINT, amount DOUBLE` (default: a DDL column list, or inferred from JSON samples)",
    ),
    KeySpec::new(
        "schema.inference.samples",
        KeyType::UInt,
        Some("100"),
        "JSON messages read from the topic's start to infer a schema",
    ),
    KeySpec::new(
        "metadata_columns",
        KeyType::Bool,
        Some("false"),
        "Add `_key`, `_partition`, `_offset`, `_timestamp`, `_headers` (also available by declaring them in a DDL column list)",
    ),
    KeySpec::new(
        "stop.at.end",
        KeyType::Bool,
        Some("false"),
        "Bounded read: stop at the end offsets seen at start (backfills, tests)",
    ),
    KeySpec::new(
        "partition.assignment",
        KeyType::Enum(&["manual", "group"]),
        Some("manual"),
        "manual: the source reads every partition of its topics itself (from the checkpoint, else the group's committed offsets, else `auto.offset.reset`), finds partitions added later within 10 s, and uses the group only to store offsets, so a restart reads again at once; group: it joins the consumer group and shares the partitions with the group's other members (several velo processes splitting a topic), and a restart after a kill waits for the broker to drop the dead member (`session.timeout.ms`, or at once with `group.instance.id`)",
    ),
    KeySpec::new(
        "max.poll.records",
        KeyType::UInt,
        Some("8192"),
        "Messages per decoded batch at most (the Java client's key)",
    ),
    KeySpec::new(
        "decode_threads",
        KeyType::UInt,
        Some("1"),
        "Threads decoding polled message sets at once (the engine gets them in poll order); more helps large-batch throughput, not small low-latency epochs",
    ),
    KeySpec::new(
        "connect.timeout",
        KeyType::Duration,
        Some("10s"),
        "How long to wait for the brokers at start before failing",
    ),
    KeySpec::new(
        "<librdkafka key>",
        KeyType::String,
        None,
        "Any librdkafka consumer property (`session.timeout.ms`, `fetch.min.bytes`, `security.protocol`, `sasl.*`, `isolation.level`, ...), passed as is; `fetch.max.wait.ms` maps to `fetch.wait.max.ms`; unknown keys are warned about",
    ),
];

/// Keys of `kafka_sink` handled by Velostream; every other key goes to librdkafka.
pub const SINK_KEYS: &[KeySpec] = &[
    BOOTSTRAP,
    BROKERS,
    KeySpec::new("topic", KeyType::String, None, "Topic to write (required)"),
    KeySpec::new(
        "value.format",
        KeyType::Enum(FORMATS),
        Some("json"),
        "json, avro (registered in `schema.registry.url`), string, bytes (alias `format`)",
    ),
    FORMAT_ALIAS,
    KeySpec::new(
        "key.field",
        KeyType::String,
        None,
        "Column(s) forming the message key, comma-separated; compound keys are joined with `|` (alias `key.fields`)",
    ),
    KeySpec::new("key.fields", KeyType::String, None, "Alias of key.field"),
    KeySpec::new(
        "key.format",
        KeyType::Enum(&["string", "text"]),
        Some("string"),
        "Keys are written as UTF-8 text",
    ),
    KeySpec::new(
        "headers.field",
        KeyType::String,
        None,
        "Column holding message headers: a map, or a JSON object as text",
    ),
    KeySpec::new(
        "schema.registry.url",
        KeyType::String,
        None,
        "Schema registry for `avro`: the result schema is registered under `value.subject`",
    ),
    REGISTRY_SUBJECT,
    KeySpec::new(
        "transactional.id",
        KeyType::String,
        Some("velo-<job>-<sink>"),
        "Transactional mode: the producer's transactional id (must be stable across restarts)",
    ),
    KeySpec::new(
        "flush.timeout",
        KeyType::Duration,
        Some("60s"),
        "How long an epoch commit waits for the brokers to acknowledge every message",
    ),
    KeySpec::new(
        "<librdkafka key>",
        KeyType::String,
        None,
        "Any librdkafka producer property (`acks`, `linger.ms`, `batch.size`, `compression.type`, `enable.idempotence`, `security.protocol`, ...), passed as is; unknown keys are warned about",
    ),
];

/// Java client keys that have a different librdkafka name.
const RENAMED: &[(&str, &str)] = &[
    ("fetch.max.wait.ms", "fetch.wait.max.ms"),
    ("max.partition.fetch.bytes", "max.partition.fetch.bytes"),
];

/// Java client keys with no librdkafka meaning (ignored with a note).
const JAVA_ONLY: &[&str] = &[
    "key.deserializer",
    "value.deserializer",
    "key.serializer",
    "value.serializer",
    "default.api.timeout.ms",
];

/// Keys Velostream always sets itself on consumers.
const OWNED_CONSUMER: &[&str] = &["enable.auto.commit", "enable.auto.offset.store"];

fn own_keys(role: velo_config::Role) -> &'static [KeySpec] {
    match role {
        velo_config::Role::Source => SOURCE_KEYS,
        velo_config::Role::Sink => SINK_KEYS,
    }
}

/// Connector keys every kind accepts (the registry checks them).
fn is_common(key: &str) -> bool {
    matches!(key, "type" | "config_file" | "uri" | "location")
}

/// The librdkafka properties of `cfg`: every key that is not Velostream's,
/// with Java names mapped. Returns (key, value) pairs.
pub fn passthrough(cfg: &ConnectorConfig) -> Vec<(String, String)> {
    let own = own_keys(cfg.role);
    cfg.props
        .iter()
        .filter(|(k, _)| !is_common(k) && !own.iter().any(|s| s.matches(k)))
        .filter(|(k, _)| {
            let engine: &[&[velo_config::KeySpec]] = match cfg.role {
                velo_config::Role::Source => &velo_config::keys::engine_source_keys(),
                velo_config::Role::Sink => &velo_config::keys::engine_sink_keys(),
            };
            !engine.iter().any(|t| t.iter().any(|s| s.matches(k)))
        })
        .filter(|(k, _)| !JAVA_ONLY.contains(&k.as_str()))
        .map(|(k, v)| {
            let k = RENAMED
                .iter()
                .find(|(from, _)| from == k)
                .map(|(_, to)| to.to_string())
                .unwrap_or_else(|| k.clone());
            (k, v.clone())
        })
        .collect()
}

/// Checks the pass-through keys against librdkafka itself: an unknown
/// property is a warning (with did-you-mean), a bad value an error.
pub fn validate_passthrough(cfg: &ConnectorConfig) -> velo_connectors::Result<Vec<Warning>> {
    let mut warnings = Vec::new();
    for k in cfg.props.keys().filter(|k| JAVA_ONLY.contains(&k.as_str())) {
        warnings.push(Warning(format!(
            "'{}' is a Java client setting with no meaning here (ignored): Velostream decodes with '{}.value.format'",
            cfg.full_key(k),
            cfg.name
        )));
    }
    for (k, v) in passthrough(cfg) {
        if OWNED_CONSUMER.contains(&k.as_str()) && cfg.role == velo_config::Role::Source {
            warnings.push(Warning(format!(
                "'{}' is ignored: Velostream commits offsets itself, after every sink acknowledged an epoch",
                cfg.full_key(&k)
            )));
            continue;
        }
        let mut probe = ClientConfig::new();
        probe.set(&k, &v);
        if let Err(e) = probe.create_native_config() {
            let msg = e.to_string();
            if msg.contains("No such configuration property") {
                let mut w = format!(
                    "unknown key '{}' (not a Velostream or librdkafka setting; ignored)",
                    cfg.full_key(&k)
                );
                if let Some(s) = did_you_mean(&k, own_keys(cfg.role).iter().map(|s| s.key)) {
                    w.push_str(&format!("; did you mean '{}.{s}'?", cfg.name));
                }
                warnings.push(Warning(w));
            } else {
                return Err(ConfigError::InvalidValue {
                    key: cfg.full_key(&k),
                    value: velo_config::display_value(&k, &v).into_owned(),
                    expected: format!("a value librdkafka accepts ({msg})"),
                }
                .into());
            }
        }
    }
    Ok(warnings)
}

/// The librdkafka configuration for `cfg`: its pass-through keys that
/// librdkafka knows, plus `bootstrap.servers`.
pub fn client_config(cfg: &ConnectorConfig, servers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", servers);
    for (k, v) in passthrough(cfg) {
        let mut probe = ClientConfig::new();
        probe.set(&k, &v);
        if probe.create_native_config().is_ok() {
            c.set(k, v);
        }
    }
    c
}

/// The job a connector belongs to (its own name before planning).
fn job_or_name(cfg: &ConnectorConfig) -> &str {
    if cfg.job.is_empty() {
        &cfg.name
    } else {
        &cfg.job
    }
}

fn servers(cfg: &ConnectorConfig) -> Result<String, ConfigError> {
    cfg.get_any(&["bootstrap.servers", "brokers"])
        .map(str::to_string)
        .ok_or_else(|| ConfigError::MissingKey {
            key: cfg.full_key("bootstrap.servers"),
            hint: "set it to your brokers, e.g. 'localhost:9092'".into(),
        })
}

/// How a source gets its partitions (`partition.assignment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// Every partition of the topics, assigned by the source itself; the
    /// group only stores offsets.
    Manual,
    /// Consumer-group membership: the broker shares the partitions out.
    Group,
}

/// `kafka_source` settings.
#[derive(Debug, Clone)]
pub struct KafkaSourceConfig {
    /// Brokers.
    pub servers: String,
    /// Topics read.
    pub topics: Vec<String>,
    /// Consumer group.
    pub group_id: String,
    /// Value encoding.
    pub format: Format,
    /// `_key` as bytes instead of text.
    pub key_bytes: bool,
    /// Schema registry.
    pub registry: Option<String>,
    /// Registry subject of the reader schema.
    pub subject: String,
    /// Inline Avro schema file.
    pub avro_schema_file: Option<PathBuf>,
    /// Explicit value columns.
    pub schema: Option<String>,
    /// Protobuf descriptor set and message name.
    pub protobuf: Option<(PathBuf, String)>,
    /// JSON inference sample size.
    pub samples: usize,
    /// Append the metadata columns.
    pub metadata_columns: bool,
    /// Stop at the end offsets seen at start.
    pub stop_at_end: bool,
    /// How partitions are assigned.
    pub assignment: Assignment,
    /// Messages per batch at most.
    pub max_poll_records: usize,
    /// Threads decoding message sets.
    pub decode_threads: usize,
    /// Wait for brokers at start.
    pub connect_timeout: Duration,
    /// librdkafka properties.
    pub client: ClientConfig,
}

impl KafkaSourceConfig {
    /// Reads the source's keys. `job` names the default group.
    pub fn from_config(cfg: &ConnectorConfig) -> Result<Self, ConfigError> {
        let servers = servers(cfg)?;
        let mut topics: Vec<String> = cfg
            .get("topics")
            .map(|t| {
                t.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(t) = cfg.get("topic") {
            topics.insert(0, t.trim().to_string());
        }
        if topics.is_empty() {
            return Err(ConfigError::MissingKey {
                key: cfg.full_key("topic"),
                hint: "name the topic to read (or several in 'topics')".into(),
            });
        }
        let mut client = client_config(cfg, &servers);
        let group_id = cfg
            .get("group.id")
            .map(str::to_string)
            .unwrap_or_else(|| format!("velo-{}", job_or_name(cfg)));
        client.set("group.id", &group_id);
        client.set("enable.auto.commit", "false");
        client.set("enable.auto.offset.store", "false");
        if cfg.get("topic.metadata.refresh.interval.ms").is_none() {
            // a member assigned before the broker reported the topic's
            // partitions (a topic created or grown after the join) is
            // rebalanced at the next metadata refresh: 10 s, not librdkafka's 5 min
            client.set("topic.metadata.refresh.interval.ms", "10000");
        }
        let reset = match cfg
            .get("auto.offset.reset")
            .unwrap_or("earliest")
            .to_ascii_lowercase()
            .as_str()
        {
            "latest" | "largest" | "end" => "latest",
            "error" => "error",
            _ => "earliest",
        };
        client.set("auto.offset.reset", reset);
        let duration = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
            match cfg.get(key) {
                None => Ok(default),
                Some(v) => velo_config::keys::parse_duration(v)
                    .ok_or_else(|| cfg.invalid(key, v, "a duration such as 10s")),
            }
        };
        let subject = cfg
            .get("value.subject")
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}-value", topics[0]));
        Ok(Self {
            servers,
            format: format_of(
                cfg.get_any(&["value.format", "format", "source.format"])
                    .unwrap_or("json"),
            ),
            key_bytes: matches!(
                cfg.get("key.format")
                    .map(|s| s.to_ascii_lowercase())
                    .as_deref(),
                Some("bytes" | "raw" | "binary")
            ),
            registry: cfg.get("schema.registry.url").map(str::to_string),
            subject,
            avro_schema_file: cfg
                .get_any(&["avro.schema.file", "value.avro.schema.file"])
                .map(|p| cfg.path(p)),
            schema: cfg.get("schema").map(str::to_string),
            protobuf: match (
                cfg.get("protobuf.descriptor.file"),
                cfg.get("protobuf.message"),
            ) {
                (Some(f), Some(m)) => Some((cfg.path(f), m.to_string())),
                _ => None,
            },
            samples: cfg.uint("schema.inference.samples")?.unwrap_or(100).max(1) as usize,
            metadata_columns: cfg.bool("metadata_columns", false)?,
            stop_at_end: cfg.bool("stop.at.end", false)?,
            assignment: match cfg
                .get("partition.assignment")
                .map(|v| v.trim().to_ascii_lowercase())
            {
                None => Assignment::Manual,
                Some(v) if v == "manual" => Assignment::Manual,
                Some(v) if v == "group" => Assignment::Group,
                Some(v) => {
                    return Err(cfg.invalid("partition.assignment", &v, "'manual' or 'group'"));
                }
            },
            max_poll_records: cfg
                .uint("max.poll.records")?
                .unwrap_or(8192)
                .clamp(1, 1 << 20) as usize,
            // one by default: two threads finish sooner but spend more
            // CPU per message (see the README's Kafka benchmark)
            decode_threads: cfg.uint("decode_threads")?.unwrap_or(1).clamp(1, 64) as usize,
            connect_timeout: duration("connect.timeout", Duration::from_secs(10))?,
            topics,
            group_id,
            client,
        })
    }
}

/// `kafka_sink` settings.
#[derive(Debug, Clone)]
pub struct KafkaSinkConfig {
    /// Brokers.
    pub servers: String,
    /// Topic written.
    pub topic: String,
    /// Value encoding.
    pub format: Format,
    /// Key columns.
    pub key_fields: Vec<String>,
    /// Header column.
    pub headers_field: Option<String>,
    /// Schema registry.
    pub registry: Option<String>,
    /// Registry subject.
    pub subject: String,
    /// Transactional id (transactional mode).
    pub transactional_id: String,
    /// Commit wait.
    pub flush_timeout: Duration,
    /// librdkafka properties.
    pub client: ClientConfig,
}

impl KafkaSinkConfig {
    /// Reads the sink's keys.
    pub fn from_config(cfg: &ConnectorConfig) -> Result<Self, ConfigError> {
        let servers = servers(cfg)?;
        let topic = cfg
            .require("topic", "name the topic to write")?
            .trim()
            .to_string();
        let flush_timeout = match cfg.get("flush.timeout") {
            None => Duration::from_secs(60),
            Some(v) => velo_config::keys::parse_duration(v)
                .ok_or_else(|| cfg.invalid("flush.timeout", v, "a duration such as 60s"))?,
        };
        Ok(Self {
            client: client_config(cfg, &servers),
            servers,
            format: format_of(cfg.get_any(&["value.format", "format"]).unwrap_or("json")),
            key_fields: cfg
                .get_any(&["key.field", "key.fields"])
                .map(|k| {
                    k.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            headers_field: cfg.get("headers.field").map(str::to_string),
            registry: cfg.get("schema.registry.url").map(str::to_string),
            subject: cfg
                .get("value.subject")
                .map(str::to_string)
                .unwrap_or_else(|| format!("{topic}-value")),
            transactional_id: cfg
                .get("transactional.id")
                .map(str::to_string)
                .unwrap_or_else(|| format!("velo-{}-{}", job_or_name(cfg), cfg.name)),
            flush_timeout,
            topic,
        })
    }
}
