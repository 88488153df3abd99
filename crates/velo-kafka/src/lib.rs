//! # velo-kafka: the Kafka connector
//!
//! A source and a sink at the two ends of the data path, on librdkafka
//! (rdkafka, default build). The **source** ([`source::KafkaSource`]) is a
//! consumer-group member that decodes message values straight into Arrow
//! batches (velo-formats: arrow-json, arrow-avro with the Confluent wire
//! format and a schema registry, Protobuf with a descriptor set, raw
//! string/bytes), adds the `_key`,
//! `_partition`, `_offset`, `_timestamp`, `_headers` columns on request, and
//! reports its position (next offset per partition) with every batch; the
//! engine commits that position to the group only after every sink has
//! acknowledged the epoch, or stores it in the job's checkpoint. The **sink**
//! ([`sink::KafkaSink`]) writes one message per row, keyed by `key.field`,
//! and runs each epoch as a Kafka transaction in transactional mode. Every
//! key Velostream does not own is librdkafka's ([`config`]).
//!
//! This crate keeps the heavy client library out of the others: the engine
//! adds its kinds to the connector registry with [`register`].

pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod sink;
pub mod source;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
pub use error::KafkaError;
use velo_config::ConnectorConfig;
use velo_connectors::registry::{Kind, Registry};
use velo_connectors::{BoxFuture, ConnectorContext, Result, Sink, Source};

/// Whether a warning with this text may be logged now: the same text at
/// most once every 10 s (a broker that is down repeats itself thousands of
/// times a second).
pub(crate) fn may_log(text: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};
    use std::time::{Duration, Instant};
    static SEEN: LazyLock<Mutex<HashMap<String, Instant>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    // the text without numbers, so "after 3ms" and "after 5ms" count as one
    let key: String = text
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .take(200)
        .collect();
    let mut seen = SEEN.lock().expect("log throttle");
    if seen.len() > 1000 {
        seen.clear();
    }
    match seen.get(&key) {
        Some(t) if t.elapsed() < Duration::from_secs(10) => false,
        _ => {
            seen.insert(key, Instant::now());
            true
        }
    }
}

/// librdkafka's log lines, to tracing: errors as warnings (throttled), the
/// rest as debug.
pub(crate) fn log_librdkafka(
    client: &str,
    level: rdkafka::config::RDKafkaLogLevel,
    fac: &str,
    msg: &str,
) {
    use rdkafka::config::RDKafkaLogLevel as L;
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error => {
            if may_log(msg) {
                tracing::warn!(client, "librdkafka {fac}: {msg}")
            }
        }
        _ => tracing::debug!(client, "librdkafka {fac}: {msg}"),
    }
}

/// A Kafka source: the brokers and topics checked and the schema settled
/// (the schema registry, or sample messages) on the blocking pool; offline,
/// without contacting anything.
fn create_source<'a>(
    cfg: &'a ConnectorConfig,
    schema: Option<SchemaRef>,
    ctx: &'a ConnectorContext,
) -> BoxFuture<'a, Result<Arc<dyn Source>>> {
    Box::pin(async move {
        let (name, c) = (
            cfg.name.clone(),
            config::KafkaSourceConfig::from_config(cfg)?,
        );
        let (offline, consumers) = (ctx.is_offline(), ctx.shared::<source::Consumers>());
        let s = ctx
            .blocking(move || source::KafkaSource::new(&name, c, schema, offline))
            .await?
            .with_consumers(consumers);
        Ok(Arc::new(s) as Arc<dyn Source>)
    })
}

/// A Kafka sink: its producer created (and its transactions initialised)
/// on the blocking pool.
fn create_sink<'a>(
    cfg: &'a ConnectorConfig,
    ctx: &'a ConnectorContext,
) -> BoxFuture<'a, Result<Box<dyn Sink>>> {
    Box::pin(async move {
        let (name, c) = (cfg.name.clone(), config::KafkaSinkConfig::from_config(cfg)?);
        let s = ctx
            .blocking(move || sink::KafkaSink::new(&name, c))
            .await?
            .with_consumers(ctx.shared::<source::Consumers>());
        Ok(Box::new(s) as Box<dyn Sink>)
    })
}

/// Adds `kafka_source` and `kafka_sink` to `registry`.
pub fn register(registry: &mut Registry) {
    registry.add_scheme(velo_connectors::registry::scheme(
        "kafka",
        velo_config::uri::UriLocation::Raw,
    ));
    registry.add_source(Kind {
        name: "kafka",
        keys: config::SOURCE_KEYS,
        create: create_source,
        extra: Some(config::validate_passthrough),
        check: |c| {
            config::KafkaSourceConfig::from_config(c)
                .map(drop)
                .map_err(Into::into)
        },
        changes: |_| velo_connectors::ChangeMode::AppendOnly,
    });
    registry.add_sink(Kind {
        name: "kafka",
        keys: config::SINK_KEYS,
        create: create_sink,
        extra: Some(config::validate_passthrough),
        check: |c| {
            config::KafkaSinkConfig::from_config(c)
                .map(drop)
                .map_err(Into::into)
        },
        // the message key is the result's key; a delete is a tombstone
        changes: |_| velo_connectors::ChangeMode::Upsert,
    });
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use arrow::datatypes::{DataType, Field, Schema};
    use rdkafka::mocking::MockCluster;
    use velo_config::{Origin, Role};
    use velo_connectors::{Position, TransactionContext};

    use super::*;

    fn config(role: Role, bs: &str, keys: &[(&str, &str)]) -> ConnectorConfig {
        let mut props: std::collections::BTreeMap<String, String> = keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        props.insert("bootstrap.servers".into(), bs.into());
        ConnectorConfig {
            name: format!("{role:?}").to_lowercase(),
            role,
            kind: "kafka".into(),
            props,
            origin: Origin::Named,
            base_dir: std::env::temp_dir(),
            job: "copy".into(),
        }
    }

    /// The transaction context a Kafka source hands to a transactional Kafka
    /// sink is data (the group and the consumer's id), resolved through the
    /// connector context both were created with: a sink of that context
    /// finds the consumer while its source runs; a sink of another context
    /// (another engine in the process), or after the source stopped, gets
    /// an error that aborts the epoch rather than committing the
    /// transaction without the offsets.
    #[test]
    fn a_transactional_sink_finds_the_consumer_of_its_source() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("in", 1, 1).unwrap();
        let bs = cluster.bootstrap_servers();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let ctx = ConnectorContext::default();
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let src_cfg = config(Role::Source, &bs, &[("topic", "in"), ("group.id", "g")]);
        let sink_cfg = config(Role::Sink, &bs, &[("topic", "out")]);

        // phase 1: the running source's context names its consumer
        let source = rt
            .block_on(create_source(&src_cfg, Some(schema), &ctx))
            .unwrap();
        let reader = source.open(100, None).unwrap();
        let context = reader
            .committer()
            .and_then(|c| c.transaction_context())
            .expect("a Kafka source's committer has a transaction context");
        let TransactionContext::KafkaGroup { group, .. } = &context else {
            panic!("{context:?}")
        };
        assert_eq!(group, "g");
        assert_eq!(ctx.shared::<source::Consumers>().len(), 1);

        // phase 2: a sink of the same context finds it; one of another not
        let mut sink = rt.block_on(create_sink(&sink_cfg, &ctx)).unwrap();
        let pos = Position::default();
        sink.set_epoch_position(&pos, Some(context.clone()))
            .expect("the consumer of the same context is found");
        let mut stranger = rt
            .block_on(create_sink(&sink_cfg, &ConnectorContext::default()))
            .unwrap();
        let e = stranger
            .set_epoch_position(&pos, Some(context.clone()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("consumer of group 'g'") && e.contains("aborted"),
            "{e}"
        );

        // phase 3: an aborted epoch lets go of the consumer, and once the
        // source stopped, it is gone
        sink.abort(0).unwrap();
        drop(reader);
        drop(source);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ctx.shared::<source::Consumers>().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(ctx.shared::<source::Consumers>().is_empty());
        assert!(sink.set_epoch_position(&pos, Some(context)).is_err());
    }
}
