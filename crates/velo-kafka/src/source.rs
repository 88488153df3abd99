//! `kafka_source`: a consumer-group member on a thread of its own. Messages
//! are polled in sets of up to `max.poll.records` (librdkafka fetches the
//! partitions in parallel), their values decoded in one call per set
//! ([`crate::format`]) on `decode_threads` threads, and handed to the engine
//! in poll order, each set as one batch with the position after it (next
//! offset per `topic/partition`). Offsets are
//! committed to the group only when the engine says every sink has
//! acknowledged the epoch ([`KafkaCommitter`]); a restarted job resumes from
//! its checkpoint position or from the group's committed offsets. By
//! default the source assigns itself every partition of its topics (no
//! group join, so a restart after a kill reads again at once);
//! `partition.assignment = 'group'` makes it a group member instead.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, MapBuilder, RecordBatch, StringBuilder,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use velo_connectors::{
    BadRecord, ConnectorError, Position, PositionCommitter, Result, Source, SourceEvent,
    SourceReader, TransactionContext,
};

use crate::config::{Assignment, Format, KafkaSourceConfig};
use velo_formats::schema_registry::SchemaRegistry;
use velo_formats::value::{AvroState, ValueDecoder};

/// The metadata columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meta {
    Key,
    Partition,
    Offset,
    Timestamp,
    Headers,
}

const META: &[(&str, Meta)] = &[
    ("_key", Meta::Key),
    ("_partition", Meta::Partition),
    ("_offset", Meta::Offset),
    ("_timestamp", Meta::Timestamp),
    ("_headers", Meta::Headers),
];

fn headers_type() -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(
            vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", DataType::Utf8, true),
            ]
            .into(),
        ),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

fn meta_field(m: Meta, name: &str, key_bytes: bool) -> Field {
    let ty = match m {
        Meta::Key if key_bytes => DataType::Binary,
        Meta::Key => DataType::Utf8,
        Meta::Partition => DataType::Int32,
        Meta::Offset => DataType::Int64,
        Meta::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
        Meta::Headers => headers_type(),
    };
    Field::new(name, ty, true)
}

/// Where an output column comes from.
#[derive(Debug, Clone, Copy)]
enum Col {
    Value(usize),
    Meta(Meta),
}

/// Client callbacks: errors and logs to tracing, the last error kept for
/// messages; partition assignment seeks to the resume position.
pub struct VeloContext {
    name: String,
    last_error: Mutex<Option<String>>,
    resume: Mutex<Option<HashMap<(String, i32), i64>>>,
    /// A rebalance changed the assignment since the reader last looked.
    assignment_changed: std::sync::atomic::AtomicBool,
    /// The consumer holds partitions.
    assigned: std::sync::atomic::AtomicBool,
    /// Each assigned partition's lag (`topic/partition` -> messages between
    /// the group's committed offset and the partition's end), from
    /// librdkafka's statistics.
    lag: Mutex<std::collections::BTreeMap<String, i64>>,
    /// What was read and what the engine has processed, per partition: a
    /// group member hands a revoked partition over only at a committed
    /// offset.
    handover: Handover,
}

/// A group member's partitions handed over at what it processed: the
/// reader notes each partition's next offset as it hands messages to the
/// engine, the committer what the engine acknowledged (every sink
/// committed the epoch). When a rebalance revokes partitions, the member
/// waits until everything it read of them is acknowledged and commits that
/// to the group before it lets them go, so the next owner reads on exactly
/// where it stopped: no record read twice, none skipped (Kafka Streams does
/// the same). Until [`HANDOVER_WAIT`] at most: past it, the new owner reads
/// the unacknowledged records again (at-least-once) and a warning says so.
#[derive(Default)]
struct Handover {
    /// (read, acknowledged) next offsets by `topic/partition`.
    offsets: Mutex<(HashMap<String, i64>, HashMap<String, i64>)>,
    acked: std::sync::Condvar,
    /// The reader stopped: no acknowledgement is coming.
    closing: std::sync::atomic::AtomicBool,
}

/// The longest a group member holds a rebalance to finish its epoch.
const HANDOVER_WAIT: Duration = Duration::from_secs(30);

impl Handover {
    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, i64>, HashMap<String, i64>)> {
        self.offsets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The reader handed messages up to `next` of `key` to the engine.
    fn read(&self, key: &str, next: i64) {
        self.lock().0.insert(key.to_string(), next);
    }

    /// The engine acknowledged `pos`.
    fn ack(&self, pos: &Position) {
        let mut g = self.lock();
        for (k, off) in &pos.parts {
            let e = g.1.entry(k.clone()).or_insert(*off);
            *e = (*e).max(*off);
        }
        drop(g);
        self.acked.notify_all();
    }

    fn close(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.acked.notify_all();
    }

    /// Waits until every read message of `keys` is acknowledged (or the
    /// reader stops, or [`HANDOVER_WAIT`]); the acknowledged offsets of
    /// `keys`, and the keys still behind. The partitions' entries are
    /// forgotten: a partition assigned again starts from the group's offset.
    fn settle(&self, keys: &[String]) -> (Vec<(String, i64)>, Vec<String>) {
        let until = Instant::now() + HANDOVER_WAIT;
        let behind = |g: &(HashMap<String, i64>, HashMap<String, i64>)| -> Vec<String> {
            keys.iter()
                .filter(|k| {
                    g.0.get(*k)
                        .is_some_and(|r| g.1.get(*k).is_none_or(|a| a < r))
                })
                .cloned()
                .collect()
        };
        let mut g = self.lock();
        loop {
            let left = behind(&g);
            let now = Instant::now();
            if left.is_empty()
                || now >= until
                || self.closing.load(std::sync::atomic::Ordering::Acquire)
            {
                let acked = keys
                    .iter()
                    .filter_map(|k| g.1.get(k).map(|o| (k.clone(), *o)))
                    .collect();
                for k in keys {
                    g.0.remove(k);
                    g.1.remove(k);
                }
                return (acked, left);
            }
            g = self
                .acked
                .wait_timeout(g, (until - now).min(Duration::from_millis(200)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A position as `(topic, partition) -> next offset`.
fn resume_offsets(p: &Position) -> HashMap<(String, i32), i64> {
    p.parts
        .iter()
        .filter_map(|(k, v)| {
            let (t, part) = split_key(k)?;
            Some(((t.to_string(), part), *v))
        })
        .collect()
}

/// A partition's key in positions: `topic/partition`.
fn part_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// [`part_key`] taken apart.
fn split_key(key: &str) -> Option<(&str, i32)> {
    let (t, p) = key.rsplit_once('/')?;
    Some((t, p.parse().ok()?))
}

/// The keys of `tpl`'s partitions.
fn keys_of(tpl: &TopicPartitionList) -> Vec<String> {
    tpl.elements()
        .iter()
        .map(|e| part_key(e.topic(), e.partition()))
        .collect()
}

impl VeloContext {
    fn new(name: &str, resume: Option<&Position>) -> Self {
        let resume = resume.map(resume_offsets);
        Self {
            name: name.to_string(),
            last_error: Mutex::new(None),
            resume: Mutex::new(resume),
            assignment_changed: std::sync::atomic::AtomicBool::new(false),
            assigned: std::sync::atomic::AtomicBool::new(false),
            lag: Mutex::default(),
            handover: Handover::default(),
        }
    }

    fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("error lock").clone()
    }
}

impl ClientContext for VeloContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Error as i32) {
            let mut last = self.last_error.lock().expect("error lock");
            if last.is_none() {
                *last = Some(log_message.to_string());
            }
        }
        crate::log_librdkafka(&self.name, level, fac, log_message);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        // librdkafka's -1: not known (yet); partition -1: the topic's own entry
        let lag = statistics
            .topics
            .iter()
            .flat_map(|(t, topic)| {
                topic
                    .partitions
                    .iter()
                    .filter(|(p, part)| **p >= 0 && part.consumer_lag >= 0)
                    .map(move |(p, part)| (format!("{t}/{p}"), part.consumer_lag))
            })
            .collect();
        *self.lag.lock().expect("lag lock") = lag;
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let text = format!("Kafka: {error}: {reason}");
        if crate::may_log(&text) {
            tracing::warn!(source = %self.name, "{text}");
        }
        *self.last_error.lock().expect("error lock") = Some(reason.to_string());
    }
}

impl ConsumerContext for VeloContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let r = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Some(resume) = self.resume.lock().expect("resume lock").as_ref() {
                    // in place: the list belongs to librdkafka
                    let assigned: Vec<(String, i32)> = tpl
                        .elements()
                        .iter()
                        .map(|e| (e.topic().to_string(), e.partition()))
                        .collect();
                    for key in assigned {
                        if let Some(off) = resume.get(&key) {
                            tracing::info!(source = %self.name, "resuming {}/{} at offset {off} (checkpoint)", key.0, key.1);
                            if let Err(e) =
                                tpl.set_partition_offset(&key.0, key.1, Offset::Offset(*off))
                            {
                                tracing::warn!(source = %self.name, "cannot resume {}/{}: {e}", key.0, key.1);
                            }
                        }
                    }
                }
                tracing::info!(source = %self.name, "assigned {} partition(s)", tpl.count());
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(source = %self.name, "{} partition(s) revoked", tpl.count());
                self.hand_over(consumer, tpl);
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::warn!(source = %self.name, "rebalance error: {other:?}");
                consumer.unassign()
            }
        };
        if let Err(e) = r {
            tracing::warn!(source = %self.name, "rebalance: {e}");
        }
        let holds = consumer.assignment().is_ok_and(|t| t.count() > 0);
        self.assigned
            .store(holds, std::sync::atomic::Ordering::Release);
        self.assignment_changed
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

impl VeloContext {
    /// Revoked partitions leave at what the engine processed of them: the
    /// member waits for its epoch to commit, then commits those offsets to
    /// the group while it still owns the partitions ([`Handover`]).
    fn hand_over(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let keys = keys_of(tpl);
        let t0 = Instant::now();
        let (acked, behind) = self.handover.settle(&keys);
        if !behind.is_empty() {
            tracing::warn!(
                source = %self.name,
                "partition(s) {} revoked with records read but not yet committed after {:.0}s: their next owner reads those records again (at-least-once)",
                behind.join(", "),
                t0.elapsed().as_secs_f64()
            );
        }
        if acked.is_empty() {
            return;
        }
        let pos = Position {
            parts: acked.into_iter().collect(),
        };
        match consumer.commit(&position_list(&pos), CommitMode::Sync) {
            Ok(()) => tracing::info!(
                source = %self.name,
                "handed over {} partition(s) at their processed offsets after {:.1}s",
                keys.len(),
                t0.elapsed().as_secs_f64()
            ),
            Err(e) => tracing::warn!(
                source = %self.name,
                "handing over {} partition(s): offset commit failed ({e}); their next owner may read some records again",
                keys.len()
            ),
        }
    }

    /// Whether the consumer holds partitions now.
    fn has_assignment(&self) -> bool {
        self.assigned.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The source assigned partitions itself (`partition.assignment = manual`).
    fn assigned_manually(&self) {
        self.assigned
            .store(true, std::sync::atomic::Ordering::Release);
        self.assignment_changed
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Manual assignment: the partitions of `topics` the consumer does not hold
/// yet, each at its `resume` offset, else at `otherwise`. At start that is
/// the group's committed offset (librdkafka's stored offset, and
/// `auto.offset.reset` where the group has none); a partition found later
/// was added to the topic while the job ran and is read from its beginning,
/// so that nothing written to it before it was found is skipped (as Flink's
/// KafkaSource does).
fn unassigned_partitions(
    consumer: &Consumer_,
    topics: &[String],
    held: &HashSet<(String, i32)>,
    resume: Option<&HashMap<(String, i32), i64>>,
    otherwise: Offset,
    timeout: Duration,
) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), timeout).map_err(|e| {
            crate::error::broker(format!("cannot read the partitions of '{topic}': {e}"))
        })?;
        for t in md.topics() {
            if let Some(e) = t.error() {
                return Err(crate::error::setup(format!(
                    "cannot read the partitions of '{topic}': {e:?}"
                )));
            }
            for p in t.partitions() {
                let key = (t.name().to_string(), p.id());
                if held.contains(&key) {
                    continue;
                }
                let offset = resume
                    .and_then(|r| r.get(&key))
                    .map_or(otherwise, |o| Offset::Offset(*o));
                tpl.add_partition_offset(t.name(), p.id(), offset)
                    .map_err(crate::error::broker)?;
            }
        }
    }
    Ok(tpl)
}

/// Manual assignment: adds the partitions of `topics` the consumer does not
/// hold (added to a topic since it was assigned) at their beginning;
/// returns how many.
fn assign_new_partitions(
    consumer: &Consumer_,
    topics: &[String],
    timeout: Duration,
) -> Result<usize> {
    let held: HashSet<(String, i32)> = consumer
        .assignment()
        .map_err(crate::error::broker)?
        .elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect();
    let new = unassigned_partitions(consumer, topics, &held, None, Offset::Beginning, timeout)?;
    if new.count() == 0 {
        return Ok(0);
    }
    consumer
        .incremental_assign(&new)
        .map_err(|e| crate::error::broker(format!("cannot assign the new partitions: {e}")))?;
    consumer.context().assigned_manually();
    Ok(new.count())
}

/// Manual assignment: warns when the group has members, which this source
/// does not coordinate with: other processes reading the same partitions,
/// or a killed consumer of this job's until the broker drops it.
fn warn_about_members(consumer: &Consumer_, name: &str, group: &str, timeout: Duration) {
    let Ok(list) = consumer.fetch_group_list(Some(group), timeout) else {
        return;
    };
    for g in list.groups().iter().filter(|g| g.name() == group) {
        if g.members().is_empty() {
            continue;
        }
        let ids: Vec<String> = g
            .members()
            .iter()
            .map(|m| format!("{} ({})", m.client_id(), m.client_host()))
            .collect();
        tracing::warn!(
            source = %name,
            "the consumer group '{group}' has {} member(s): {}. This source reads every partition itself ('partition.assignment' = 'manual') and does not share them: if those are other processes splitting the topic with it, set 'partition.assignment' = 'group' on every one; a consumer killed earlier stays listed until the broker times it out ('session.timeout.ms'), and until then the group refuses this source's offset commits (the checkpoint and the next commit carry the position)",
            g.members().len(),
            ids.join(", ")
        );
    }
}

pub(crate) type Consumer_ = BaseConsumer<VeloContext>;

/// Commits positions to the consumer group.
pub struct KafkaCommitter {
    consumer: Arc<Consumer_>,
    /// The consumer's id among the context's [`Consumers`].
    id: u64,
    /// Its group.
    group: String,
    /// Not a member of the group (`partition.assignment = manual`).
    manual: bool,
    /// A refused commit was reported already.
    refused_told: std::sync::atomic::AtomicBool,
}

/// A commit refused because the group has members and this consumer is not
/// one of them (a manually assigned source).
fn refused_by_members(e: &KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    matches!(
        e,
        KafkaError::ConsumerCommit(
            C::UnknownMemberId | C::IllegalGeneration | C::RebalanceInProgress
        )
    )
}

/// The live consumers of the Kafka sources created with one connector
/// context, by id. A transactional Kafka sink finds here the consumer of
/// the source that drives it ([`TransactionContext::KafkaGroup`]) and sends
/// the epoch's offsets as that member of the group: librdkafka's group
/// metadata cannot leave the client as data.
#[derive(Default)]
pub struct Consumers {
    next: std::sync::atomic::AtomicU64,
    live: std::sync::Mutex<HashMap<u64, std::sync::Weak<Consumer_>>>,
}

impl std::fmt::Debug for Consumers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumers")
            .field("live", &self.len())
            .finish()
    }
}

impl Consumers {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, std::sync::Weak<Consumer_>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `consumer` (forgetting those dropped since); its id.
    fn register(&self, consumer: &Arc<Consumer_>) -> u64 {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut live = self.live();
        live.retain(|_, c| c.strong_count() > 0);
        live.insert(id, Arc::downgrade(consumer));
        id
    }

    /// The consumer registered as `id`, while its source runs.
    pub(crate) fn get(&self, id: u64) -> Option<Arc<Consumer_>> {
        self.live().get(&id).and_then(std::sync::Weak::upgrade)
    }

    /// How many registered consumers are still alive.
    pub fn len(&self) -> usize {
        self.live()
            .values()
            .filter(|c| c.strong_count() > 0)
            .count()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `topic/partition -> offset` as a librdkafka list.
pub fn position_list(pos: &Position) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (k, off) in &pos.parts {
        if let Some((t, p)) = split_key(k) {
            let _ = tpl.add_partition_offset(t, p, Offset::Offset(*off));
        }
    }
    tpl
}

impl PositionCommitter for KafkaCommitter {
    fn lag(&self) -> Vec<(String, i64)> {
        self.consumer
            .context()
            .lag
            .lock()
            .expect("lag lock")
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    fn commit(&self, pos: &Position, sync: bool) -> Result<()> {
        if pos.parts.is_empty() {
            return Ok(());
        }
        // a group member commits only what it owns: an epoch that ends
        // after a partition was handed over must not move the new owner's
        // offset back
        let owned;
        let pos = if self.manual {
            pos
        } else {
            let held: HashSet<String> = match self.consumer.assignment() {
                Ok(tpl) => keys_of(&tpl).into_iter().collect(),
                Err(_) => HashSet::new(),
            };
            owned = Position {
                parts: pos
                    .parts
                    .iter()
                    .filter(|(k, _)| held.contains(*k))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect(),
            };
            self.consumer.context().handover.ack(&owned);
            &owned
        };
        if pos.parts.is_empty() {
            return Ok(());
        }
        let mode = if sync {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        match self.consumer.commit(&position_list(pos), mode) {
            Err(e) if self.manual && refused_by_members(&e) => {
                // the position is safe in the checkpoint and in the next
                // commit; the group takes commits again once it is empty
                if !self
                    .refused_told
                    .swap(true, std::sync::atomic::Ordering::AcqRel)
                {
                    tracing::info!(
                        "the consumer group refuses offset commits while it has members ({e}), such as a killed consumer the broker has not timed out yet; commits go on and succeed once it has none"
                    );
                }
                Ok(())
            }
            r => r.map_err(|e| crate::error::broker(format!("offset commit failed: {e}"))),
        }
    }

    fn transaction_context(&self) -> Option<TransactionContext> {
        Some(TransactionContext::KafkaGroup {
            group: self.group.clone(),
            consumer: self.id,
        })
    }
}

/// The Kafka source.
#[derive(Debug)]
pub struct KafkaSource {
    name: String,
    cfg: KafkaSourceConfig,
    schema: SchemaRef,
    value_schema: SchemaRef,
    cols: Vec<Col>,
    avro: Option<(Arc<SchemaRegistry>, u32, String)>,
    avro_inline: Option<String>,
    /// Where its running consumers are registered for a transactional sink.
    consumers: Arc<Consumers>,
}

fn connect_error(name: &str, servers: &str, e: &str, ctx: Option<String>) -> ConnectorError {
    let detail = ctx.map(|c| format!(" ({c})")).unwrap_or_default();
    crate::error::broker(format!(
        "cannot reach the Kafka brokers '{servers}' of source '{name}': {e}{detail}; check '{name}.bootstrap.servers' and that the brokers are running"
    ))
}

fn consumer(cfg: &KafkaSourceConfig, name: &str, resume: Option<&Position>) -> Result<Consumer_> {
    let mut client = cfg.client.clone();
    if client.get("statistics.interval.ms").is_none() {
        // each partition's lag, for the job's status and metrics
        client.set("statistics.interval.ms", "1000");
    }
    if cfg.assignment == Assignment::Group && client.get("partition.assignment.strategy").is_none()
    {
        // a rebalance moves only the partitions that change owner (the
        // others keep being read), and each revoked one is handed over at
        // its processed offset; tansu 0.6 also gives a killed member's
        // partitions to the others only this way (with the eager
        // strategies every survivor keeps just its own)
        client.set("partition.assignment.strategy", "cooperative-sticky");
    }
    client
        .create_with_context(VeloContext::new(name, resume))
        .map_err(|e| crate::error::setup(format!("cannot create a Kafka consumer: {e}")))
}

impl KafkaSource {
    /// Connects to the brokers (a clear error if they cannot be reached or a
    /// topic does not exist) and settles the schema.
    /// `offline` (validate, explain): nothing is contacted, and a schema
    /// only the topic or registry could give is refused.
    pub fn new(
        name: &str,
        cfg: KafkaSourceConfig,
        explicit: Option<SchemaRef>,
        offline: bool,
    ) -> Result<Self> {
        if !offline {
            Self::check_brokers(name, &cfg)?;
        }
        let needs_broker = match cfg.format {
            Format::Json => {
                explicit.as_ref().is_none_or(|s| {
                    s.fields()
                        .iter()
                        .all(|f| META.iter().any(|(n, _)| n == f.name()))
                }) && cfg.schema.is_none()
            }
            Format::Avro => cfg.avro_schema_file.is_none(),
            Format::String | Format::Bytes | Format::Protobuf => false,
        };
        if offline && needs_broker {
            return Err(crate::error::setup(format!(
                "{} the schema of source '{name}' comes from {} when the job runs; declare its columns (or '{name}.schema') to have the query checked without connecting",
                velo_connectors::registry::OFFLINE_MARK,
                if cfg.format == Format::Avro {
                    "the schema registry"
                } else {
                    "the topic's messages"
                }
            )));
        }
        Self::build(name, cfg, explicit)
    }

    fn check_brokers(name: &str, cfg: &KafkaSourceConfig) -> Result<()> {
        let probe = consumer(cfg, name, None)?;
        let md = probe
            .fetch_metadata(None, cfg.connect_timeout)
            .map_err(|e| {
                // serve the queued error events, which say why
                let _ = probe.poll(Duration::from_millis(50));
                connect_error(
                    name,
                    &cfg.servers,
                    &e.to_string(),
                    probe.context().last_error(),
                )
            })?;
        if md.brokers().is_empty() {
            return Err(connect_error(
                name,
                &cfg.servers,
                "no broker answered",
                probe.context().last_error(),
            ));
        }
        for t in &cfg.topics {
            let found = md
                .topics()
                .iter()
                .find(|m| m.name() == t)
                .is_some_and(|m| !m.partitions().is_empty());
            if !found {
                return Err(crate::error::setup(format!(
                    "topic '{t}' of source '{name}' does not exist on '{}'; create it first",
                    cfg.servers
                )));
            }
        }
        Ok(())
    }

    fn build(name: &str, cfg: KafkaSourceConfig, explicit: Option<SchemaRef>) -> Result<Self> {
        let (declared_meta, value_fields): (Vec<_>, Vec<_>) = explicit
            .as_ref()
            .map(|s| s.fields().iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .partition(|f| META.iter().any(|(n, _)| n == f.name()));
        let explicit_values = (!value_fields.is_empty())
            .then(|| Arc::new(Schema::new(value_fields)) as SchemaRef)
            .or(match &cfg.schema {
                Some(s) => Some(velo_connectors::schema::parse_schema(s)?),
                None => None,
            });
        let mut avro = None;
        let mut avro_inline = None;
        let value_schema = match cfg.format {
            Format::String | Format::Bytes => ValueDecoder::raw_schema(cfg.format),
            Format::Protobuf => proto_decoder(name, &cfg)?.schema(),
            Format::Avro => {
                if let Some(path) = &cfg.avro_schema_file {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| ConnectorError::io("cannot read Avro schema", path, e))?;
                    let st = AvroState::inline(text.clone(), 1)?;
                    avro_inline = Some(text);
                    st.schema()
                } else {
                    let url = cfg.registry.as_deref().ok_or_else(|| {
                        crate::error::setup(format!(
                            "source '{name}' reads Avro: set '{name}.schema.registry.url' (Confluent wire format) or '{name}.avro.schema.file' (plain Avro)"
                        ))
                    })?;
                    let reg = Arc::new(SchemaRegistry::new(url));
                    let (id, schema) = reg.latest(&cfg.subject)?.ok_or_else(|| {
                        crate::error::setup(format!(
                            "no schema is registered under subject '{}' in the schema registry; register one (or set '{name}.value.subject')",
                            cfg.subject
                        ))
                    })?;
                    let st = AvroState::registry(reg.clone(), id, schema.clone(), 1)?;
                    avro = Some((reg, id, schema));
                    st.schema()
                }
            }
            Format::Json => match explicit_values {
                Some(s) => s,
                None => {
                    let samples = sample(&cfg, name)?;
                    velo_formats::value::infer_json(&samples).map_err(|e| {
                        crate::error::setup(format!(
                            "cannot infer the schema of source '{name}' from topic '{}': {e}; declare its columns (CREATE STREAM {name} (col TYPE, ...)) or set '{name}.schema'",
                            cfg.topics[0]
                        ))
                    })?
                }
            },
        };
        // output columns: DDL order if declared, else values then metadata on request
        let mut fields: Vec<Field> = Vec::new();
        let mut cols = Vec::new();
        match &explicit {
            Some(s) if cfg.format == Format::Json => {
                for f in s.fields() {
                    if let Some((_, m)) = META.iter().find(|(n, _)| n == f.name()) {
                        fields.push(meta_field(*m, f.name(), cfg.key_bytes));
                        cols.push(Col::Meta(*m));
                    } else {
                        let i = value_schema.index_of(f.name())?;
                        fields.push(value_schema.field(i).clone().with_nullable(true));
                        cols.push(Col::Value(i));
                    }
                }
            }
            _ => {
                for (i, f) in value_schema.fields().iter().enumerate() {
                    fields.push(f.as_ref().clone().with_nullable(true));
                    cols.push(Col::Value(i));
                }
                for f in &declared_meta {
                    let (_, m) = META
                        .iter()
                        .find(|(n, _)| n == f.name())
                        .expect("partitioned");
                    fields.push(meta_field(*m, f.name(), cfg.key_bytes));
                    cols.push(Col::Meta(*m));
                }
            }
        }
        if cfg.metadata_columns {
            for (n, m) in META {
                if !fields.iter().any(|f| f.name() == n) {
                    fields.push(meta_field(*m, n, cfg.key_bytes));
                    cols.push(Col::Meta(*m));
                }
            }
        }
        Ok(Self {
            name: name.to_string(),
            schema: Arc::new(Schema::new(fields)),
            value_schema,
            cols,
            avro,
            avro_inline,
            cfg,
            consumers: Arc::default(),
        })
    }

    /// Registers its running consumers in `consumers` (the connector
    /// context's), where a transactional Kafka sink of the same job finds
    /// them.
    pub fn with_consumers(mut self, consumers: Arc<Consumers>) -> Self {
        self.consumers = consumers;
        self
    }

    fn value_decoder(&self, batch: usize) -> Result<ValueDecoder> {
        Ok(match self.cfg.format {
            Format::Json => ValueDecoder::json(self.value_schema.clone(), batch),
            Format::String => ValueDecoder::String,
            Format::Bytes => ValueDecoder::Bytes,
            Format::Protobuf => {
                ValueDecoder::Protobuf(Box::new(proto_decoder(&self.name, &self.cfg)?))
            }
            Format::Avro => match (&self.avro, &self.avro_inline) {
                (Some((reg, id, s)), _) => ValueDecoder::Avro(Box::new(AvroState::registry(
                    reg.clone(),
                    *id,
                    s.clone(),
                    batch,
                )?)),
                (None, Some(s)) => {
                    ValueDecoder::Avro(Box::new(AvroState::inline(s.clone(), batch)?))
                }
                (None, None) => unreachable!("avro source without a schema"),
            },
        })
    }
}

fn proto_decoder(
    name: &str,
    cfg: &KafkaSourceConfig,
) -> Result<velo_formats::protobuf::ProtoDecoder> {
    let (file, message) = cfg.protobuf.as_ref().ok_or_else(|| {
        crate::error::setup(format!(
            "source '{name}' reads protobuf: set '{name}.protobuf.descriptor.file' and '{name}.protobuf.message'"
        ))
    })?;
    let bytes = std::fs::read(file)
        .map_err(|e| ConnectorError::io("cannot read the protobuf descriptor set", file, e))?;
    velo_formats::protobuf::ProtoDecoder::new(&bytes, message, name)
}

/// Reads up to `cfg.samples` messages from the start of the topics.
fn sample(cfg: &KafkaSourceConfig, name: &str) -> Result<Vec<Vec<u8>>> {
    let mut c = cfg.client.clone();
    c.set("group.id", format!("velo-sampler-{name}"));
    let probe: Consumer_ = c
        .create_with_context(VeloContext::new(name, None))
        .map_err(|e| crate::error::setup(format!("cannot create a Kafka consumer: {e}")))?;
    let mut tpl = TopicPartitionList::new();
    let md = probe
        .fetch_metadata(None, cfg.connect_timeout)
        .map_err(crate::error::broker)?;
    let mut any = false;
    for t in md
        .topics()
        .iter()
        .filter(|t| cfg.topics.iter().any(|n| n == t.name()))
    {
        for p in t.partitions() {
            let (lo, hi) = probe
                .fetch_watermarks(t.name(), p.id(), cfg.connect_timeout)
                .unwrap_or((0, 0));
            if hi > lo {
                any = true;
            }
            let _ = tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning);
        }
    }
    if !any {
        return Err(crate::error::setup("the topic has no messages yet"));
    }
    probe.assign(&tpl).map_err(crate::error::broker)?;
    let mut out = Vec::new();
    let until = Instant::now() + cfg.connect_timeout;
    while out.len() < cfg.samples && Instant::now() < until {
        if let Some(Ok(m)) = probe.poll(Duration::from_millis(100)) {
            if let Some(p) = m.payload() {
                out.push(p.to_vec());
            }
        }
    }
    Ok(out)
}

impl KafkaSource {
    /// `partition.assignment = manual`: assigns every partition of the
    /// topics at once, at the checkpoint's offsets where it has them (no
    /// group join, so a restart waits for no dead member).
    fn assign_all(&self, consumer: &Consumer_, resume: Option<&Position>) -> Result<()> {
        let resume = resume.map(resume_offsets);
        let tpl = unassigned_partitions(
            consumer,
            &self.cfg.topics,
            &HashSet::new(),
            resume.as_ref(),
            Offset::Stored,
            self.cfg.connect_timeout,
        )?;
        for e in tpl.elements() {
            if let Offset::Offset(o) = e.offset() {
                tracing::info!(source = %self.name, "resuming {}/{} at offset {o} (checkpoint)", e.topic(), e.partition());
            }
        }
        consumer.assign(&tpl).map_err(|e| {
            crate::error::broker(format!(
                "cannot assign the partitions of {:?}: {e}",
                self.cfg.topics
            ))
        })?;
        tracing::info!(
            source = %self.name,
            "assigned {} partition(s) (every partition of {}; the group '{}' stores offsets only)",
            tpl.count(),
            self.cfg.topics.join(", "),
            self.cfg.group_id
        );
        consumer.context().assigned_manually();
        warn_about_members(
            consumer,
            &self.name,
            &self.cfg.group_id,
            self.cfg.connect_timeout.min(Duration::from_secs(3)),
        );
        Ok(())
    }
}

impl Source for KafkaSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn is_bounded(&self) -> bool {
        self.cfg.stop_at_end
    }

    fn resumable(&self) -> bool {
        true
    }

    fn open(&self, batch_size: usize, projection: Option<&[usize]>) -> Result<SourceReader> {
        self.open_at(batch_size, projection, None)
    }

    fn open_at(
        &self,
        batch_size: usize,
        projection: Option<&[usize]>,
        resume: Option<&Position>,
    ) -> Result<SourceReader> {
        let consumer = Arc::new(consumer(&self.cfg, &self.name, resume)?);
        let topics: Vec<&str> = self.cfg.topics.iter().map(String::as_str).collect();
        let manual = self.cfg.assignment == Assignment::Manual;
        if manual {
            self.assign_all(&consumer, resume)?;
        } else {
            consumer
                .subscribe(&topics)
                .map_err(|e| crate::error::setup(format!("cannot subscribe to {topics:?}: {e}")))?;
        }
        let ends = if self.cfg.stop_at_end {
            let mut ends = HashMap::new();
            let md = consumer
                .fetch_metadata(None, self.cfg.connect_timeout)
                .map_err(crate::error::broker)?;
            for t in md.topics().iter().filter(|t| topics.contains(&t.name())) {
                for p in t.partitions() {
                    let (lo, hi) = consumer
                        .fetch_watermarks(t.name(), p.id(), self.cfg.connect_timeout)
                        .map_err(crate::error::broker)?;
                    ends.insert(format!("{}/{}", t.name(), p.id()), (lo, hi));
                }
            }
            tracing::debug!(source = %self.name, "stop.at.end: end offsets {ends:?}");
            Some(ends)
        } else {
            None
        };
        let wanted: Vec<bool> = (0..self.cols.len())
            .map(|i| projection.is_none_or(|p| p.contains(&i)))
            .collect();
        let (tx, rx) = tokio::sync::mpsc::channel(velo_connectors::source::SOURCE_CHANNEL_CAPACITY);
        let max = self.cfg.max_poll_records.min(batch_size.max(1));
        let builders = (0..self.cfg.decode_threads.max(1))
            .map(|_| {
                Ok(Builder {
                    name: self.name.clone(),
                    decoder: self.value_decoder(max)?,
                    schema: self.schema.clone(),
                    cols: self.cols.clone(),
                    wanted: wanted.clone(),
                    part_names: PartNames::default(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let worker = Worker {
            name: self.name.clone(),
            discovery: manual.then(|| Discovery {
                topics: self.cfg.topics.clone(),
                timeout: self.cfg.connect_timeout,
                checked: Instant::now(),
            }),
            consumer: consumer.clone(),
            builders,
            max,
            position: resume.cloned().unwrap_or_default(),
            ends,
            committed: HashMap::new(),
            committed_checked: Instant::now() - Duration::from_secs(1),
            part_names: PartNames::default(),
            tx: tx.clone(),
        };
        velo_connectors::source::spawn_reader(
            format!("velo-kafka-{}", self.name),
            &self.name,
            &tx,
            move || worker.run(),
        )?;
        Ok(
            SourceReader::new(rx).with_committer(Arc::new(KafkaCommitter {
                id: self.consumers.register(&consumer),
                group: self.cfg.group_id.clone(),
                consumer,
                manual,
                refused_told: std::sync::atomic::AtomicBool::new(false),
            })),
        )
    }

    fn describe(&self) -> String {
        format!(
            "kafka {} from '{}' (group '{}', {:?}){}",
            self.cfg.topics.join(", "),
            self.cfg.servers,
            self.cfg.group_id,
            self.cfg.format,
            if self.cfg.stop_at_end {
                ", stops at the end offsets seen at start"
            } else {
                ""
            }
        )
    }
}

/// Manual assignment: looks for partitions added to the topics.
struct Discovery {
    topics: Vec<String>,
    timeout: Duration,
    checked: Instant,
}

/// How often a manually assigned source looks for new partitions.
const DISCOVER_EVERY: Duration = Duration::from_secs(10);

struct Worker {
    name: String,
    /// Manual assignment (None: the group assigns).
    discovery: Option<Discovery>,
    consumer: Arc<Consumer_>,
    /// One per decoding thread (`decode_threads`).
    builders: Vec<Builder>,
    max: usize,
    position: Position,
    /// stop.at.end: (low, high) watermark per partition at start.
    ends: Option<HashMap<String, (i64, i64)>>,
    /// stop.at.end: the group's committed offsets, checked now and then.
    committed: HashMap<String, i64>,
    committed_checked: Instant,
    /// `topic/partition` names handed out with assignments.
    part_names: PartNames,
    tx: tokio::sync::mpsc::Sender<SourceEvent>,
}

/// What the polling loop hands on, in poll order.
enum Polled<'c> {
    /// Messages and the position right after them.
    Messages(Vec<BorrowedMessage<'c>>, Position),
    /// An event of its own (a new assignment).
    Event(SourceEvent),
}

/// `topic/partition` names, shared between batches.
#[derive(Default)]
struct PartNames(Vec<(String, i32, Arc<str>)>);

impl PartNames {
    fn get(&mut self, topic: &str, partition: i32) -> Arc<str> {
        if let Some((_, _, n)) = self
            .0
            .iter()
            .find(|(t, p, _)| *p == partition && t.as_str() == topic)
        {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(format!("{topic}/{partition}"));
        self.0.push((topic.to_string(), partition, n.clone()));
        n
    }
}

impl Worker {
    /// Manual assignment: every [`DISCOVER_EVERY`], assigns the partitions
    /// added to the topics since (read from their beginning).
    fn discover(&mut self, consumer: &Consumer_) {
        let Some(d) = self.discovery.as_mut() else {
            return;
        };
        if d.checked.elapsed() < DISCOVER_EVERY {
            return;
        }
        d.checked = Instant::now();
        match assign_new_partitions(consumer, &d.topics, d.timeout) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(source = %self.name, "assigned {n} new partition(s), read from their beginning");
            }
            Err(e) => tracing::warn!(source = %self.name, "partition discovery: {e}"),
        }
    }

    /// stop.at.end: every partition has reached the end offset seen at
    /// start (by what was read, or by the group's committed offset when
    /// nothing was left to read).
    fn at_end(&mut self) -> bool {
        let Some(ends) = &self.ends else {
            return false;
        };
        let done = |pos: &Position, committed: &HashMap<String, i64>| {
            ends.iter().all(|(k, (lo, hi))| {
                hi <= lo
                    || pos.parts.get(k).is_some_and(|o| o >= hi)
                    || committed.get(k).is_some_and(|o| o >= hi)
            })
        };
        if done(&self.position, &self.committed) {
            return true;
        }
        if self.committed_checked.elapsed() < Duration::from_millis(500) {
            return false;
        }
        self.committed_checked = Instant::now();
        // of every partition: group members that split the topic end
        // together, when the group has committed every end
        let mut all = TopicPartitionList::new();
        for (t, p) in ends.keys().filter_map(|k| split_key(k)) {
            all.add_partition(t, p);
        }
        if let Ok(tpl) = self.consumer.committed_offsets(all, Duration::from_secs(5)) {
            for e in tpl.elements() {
                if let Offset::Offset(o) = e.offset() {
                    self.committed.insert(part_key(e.topic(), e.partition()), o);
                }
            }
        }
        done(&self.position, &self.committed)
    }

    /// Polls until the engine hangs up or (stop.at.end) the end is reached.
    /// With one builder the messages are decoded on this thread; with more,
    /// sets of messages go round-robin to decoding threads, and one more
    /// thread hands their batches to the engine in poll order (so each
    /// batch's position covers exactly the messages delivered up to it).
    fn run(self) {
        let consumer = self.consumer.clone();
        self.read();
        // no acknowledgement comes any more: a rebalance at close lets go at once
        consumer.context().handover.close();
    }

    /// [`Self::run`]'s reading.
    fn read(mut self) {
        let consumer = self.consumer.clone();
        let mut builders = std::mem::take(&mut self.builders);
        let tx = self.tx.clone();
        if builders.len() <= 1 {
            let Some(mut b) = builders.pop() else {
                return;
            };
            self.poll_loop(&consumer, |work| {
                let events = match work {
                    Polled::Messages(msgs, pos) => b.build(&msgs, pos),
                    Polled::Event(ev) => vec![ev],
                };
                events.into_iter().all(|ev| tx.blocking_send(ev).is_ok())
            });
            return;
        }
        let n = builders.len();
        std::thread::scope(|s| {
            let (done_tx, done_rx) = std::sync::mpsc::channel::<(u64, Vec<SourceEvent>)>();
            let mut jobs = Vec::with_capacity(n);
            for (i, mut b) in builders.into_iter().enumerate() {
                let (job_tx, job_rx) =
                    std::sync::mpsc::sync_channel::<(u64, Vec<BorrowedMessage<'_>>, Position)>(1);
                let done = done_tx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("velo-kafka-{}-decode-{i}", self.name))
                    .spawn_scoped(s, move || {
                        for (seq, msgs, pos) in job_rx {
                            let events = b.build(&msgs, pos);
                            drop(msgs);
                            if done.send((seq, events)).is_err() {
                                return;
                            }
                        }
                    });
                match spawned {
                    Ok(_) => jobs.push(job_tx),
                    Err(e) => {
                        let _ = tx.blocking_send(SourceEvent::Error(
                            velo_connectors::ConnectorError::Internal(format!(
                                "cannot start a decoding thread: {e}"
                            )),
                        ));
                        return;
                    }
                }
            }
            // the engine gets the batches in poll order
            let in_order = done_tx.clone();
            drop(done_tx);
            let to_engine = tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("velo-kafka-{}-order", self.name))
                .spawn_scoped(s, move || {
                    let mut next = 0u64;
                    let mut held: std::collections::BTreeMap<u64, Vec<SourceEvent>> =
                        Default::default();
                    for (seq, events) in done_rx {
                        held.insert(seq, events);
                        while let Some(events) = held.remove(&next) {
                            for ev in events {
                                if to_engine.blocking_send(ev).is_err() {
                                    return;
                                }
                            }
                            next += 1;
                        }
                    }
                });
            if let Err(e) = spawned {
                let _ = tx.blocking_send(SourceEvent::Error(
                    velo_connectors::ConnectorError::Internal(format!(
                        "cannot start the reader's ordering thread: {e}"
                    )),
                ));
                return;
            }
            let mut seq = 0u64;
            self.poll_loop(&consumer, |work| {
                let sent = match work {
                    Polled::Messages(msgs, pos) => jobs[(seq % n as u64) as usize]
                        .send((seq, msgs, pos))
                        .is_ok(),
                    Polled::Event(ev) => in_order.send((seq, vec![ev])).is_ok(),
                };
                seq += 1;
                sent
            });
            // the decoders finish what they have, then the ordering thread
            drop(jobs);
            drop(in_order);
        });
    }

    /// Polls sets of up to `max` messages and hands each on with the
    /// position after it; `hand` says false when the engine is gone.
    fn poll_loop<'c>(&mut self, consumer: &'c Consumer_, mut hand: impl FnMut(Polled<'c>) -> bool) {
        let mut last_warn = Instant::now() - Duration::from_secs(60);
        let started = Instant::now();
        let mut told = Instant::now();
        loop {
            // say what the consumer waits for, while it waits for partitions
            if !consumer.context().has_assignment() && told.elapsed() > WAIT_NOTE_EVERY {
                told = Instant::now();
                tracing::warn!(
                    source = %self.name,
                    "no partitions assigned after {:.0}s: the consumer group is rebalancing, or waits for a member that left without saying so (a killed process) to time out ('session.timeout.ms'); with 'partition.assignment' = 'manual' (the default) a job takes every partition itself and waits for no group; with 'group', setting 'group.instance.id' (static membership) lets a restart take its partitions back at once on a broker that supports it",
                    started.elapsed().as_secs_f64()
                );
            }
            if self.tx.is_closed() || self.at_end() {
                return;
            }
            self.discover(consumer);
            let mut msgs: Vec<BorrowedMessage<'c>> = Vec::new();
            let mut timeout = Duration::from_millis(100);
            while msgs.len() < self.max {
                match consumer.poll(timeout) {
                    Some(Ok(m)) => msgs.push(m),
                    Some(Err(e)) => {
                        if last_warn.elapsed() > Duration::from_secs(5) {
                            tracing::warn!(source = %self.name, "Kafka: {e}");
                            last_warn = Instant::now();
                        }
                        break;
                    }
                    None => break,
                }
                timeout = Duration::ZERO;
            }
            if consumer
                .context()
                .assignment_changed
                .swap(false, std::sync::atomic::Ordering::AcqRel)
            {
                // the watermark waits for every partition the reader now has
                let parts: Vec<Arc<str>> = match consumer.assignment() {
                    Ok(tpl) => tpl
                        .elements()
                        .iter()
                        .map(|e| self.part_names.get(e.topic(), e.partition()))
                        .collect(),
                    Err(e) => {
                        tracing::warn!(source = %self.name, "cannot read the assignment: {e}");
                        Vec::new()
                    }
                };
                if !hand(Polled::Event(SourceEvent::PartsAssigned(parts))) {
                    return;
                }
            }
            if msgs.is_empty() {
                continue;
            }
            // next offset per partition, named once per partition and set
            let mut last: Vec<(&str, i32, i64)> = Vec::new();
            for m in &msgs {
                match last
                    .iter_mut()
                    .find(|(t, p, _)| *p == m.partition() && *t == m.topic())
                {
                    Some(e) => e.2 = e.2.max(m.offset() + 1),
                    None => last.push((m.topic(), m.partition(), m.offset() + 1)),
                }
            }
            let handover = &consumer.context().handover;
            for (t, p, next) in last {
                let key = part_key(t, p);
                if self.discovery.is_none() {
                    handover.read(&key, next);
                }
                self.position.parts.insert(key, next);
            }
            if !hand(Polled::Messages(msgs, self.position.clone())) {
                return;
            }
        }
    }
}

/// How often a consumer without partitions says what it waits for.
const WAIT_NOTE_EVERY: Duration = Duration::from_secs(5);

/// Turns polled messages into the engine's events: decodes the values,
/// routes the undecodable, adds the metadata columns. One per decoding
/// thread.
struct Builder {
    name: String,
    decoder: ValueDecoder,
    schema: SchemaRef,
    cols: Vec<Col>,
    wanted: Vec<bool>,
    part_names: PartNames,
}

impl Builder {
    /// The events of `msgs`, whose last batch carries `position`.
    fn build(&mut self, msgs: &[BorrowedMessage<'_>], position: Position) -> Vec<SourceEvent> {
        let payloads: Vec<Option<&[u8]>> = msgs.iter().map(|m| m.payload()).collect();
        let mut events = Vec::new();
        let decoded = match self.decoder.decode(&payloads) {
            Ok(d) => d,
            Err(e) => {
                events.push(SourceEvent::Error(crate::error::format_error(format!(
                    "decoding failed: {e}"
                ))));
                return events;
            }
        };
        for (i, err) in decoded.bad {
            let m = &msgs[i];
            let raw = m
                .payload()
                .map(|p| String::from_utf8_lossy(&p[..p.len().min(4096)]).into_owned())
                .unwrap_or_default();
            events.push(SourceEvent::Bad(BadRecord {
                source: self.name.clone(),
                location: format!("{}/{}", m.topic(), m.partition()),
                line: m.offset().max(0) as u64,
                error: err,
                raw,
            }));
        }
        let good: Vec<&BorrowedMessage<'_>> = decoded.good.iter().map(|i| &msgs[*i]).collect();
        // the partitions the rows came from, as runs (for the per-partition
        // watermark)
        let mut parts: Vec<(Arc<str>, usize)> = Vec::new();
        let mut run: Option<(&str, i32, usize)> = None;
        for m in &good {
            match &mut run {
                Some((t, p, n)) if *p == m.partition() && *t == m.topic() => *n += 1,
                _ => {
                    if let Some((t, p, n)) = run.take() {
                        parts.push((self.part_names.get(t, p), n));
                    }
                    run = Some((m.topic(), m.partition(), 1));
                }
            }
        }
        if let Some((t, p, n)) = run {
            parts.push((self.part_names.get(t, p), n));
        }
        match self.assemble(&decoded.batch, &good) {
            Ok(batch) => events.push(SourceEvent::Parts {
                batch,
                position: Some(position),
                parts,
            }),
            Err(e) => events.push(SourceEvent::Error(crate::error::format_error(format!(
                "building a batch failed: {e}"
            )))),
        }
        events
    }

    fn assemble(
        &self,
        values: &RecordBatch,
        msgs: &[&BorrowedMessage<'_>],
    ) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
        let n = msgs.len();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.cols.len());
        for (i, c) in self.cols.iter().enumerate() {
            let field = self.schema.field(i);
            if !self.wanted[i] {
                arrays.push(arrow::array::new_null_array(field.data_type(), n));
                continue;
            }
            arrays.push(match c {
                Col::Value(v) => values.column(*v).clone(),
                Col::Meta(Meta::Partition) => Arc::new(Int32Array::from_iter_values(
                    msgs.iter().map(|m| m.partition()),
                )),
                Col::Meta(Meta::Offset) => Arc::new(Int64Array::from_iter_values(
                    msgs.iter().map(|m| m.offset()),
                )),
                Col::Meta(Meta::Timestamp) => Arc::new(TimestampMillisecondArray::from_iter(
                    msgs.iter().map(|m| m.timestamp().to_millis()),
                )),
                Col::Meta(Meta::Key) if field.data_type() == &DataType::Binary => {
                    let mut b = BinaryBuilder::new();
                    for m in msgs {
                        b.append_option(m.key());
                    }
                    Arc::new(b.finish())
                }
                Col::Meta(Meta::Key) => {
                    let mut b = StringBuilder::new();
                    for m in msgs {
                        b.append_option(m.key().map(String::from_utf8_lossy));
                    }
                    Arc::new(b.finish())
                }
                Col::Meta(Meta::Headers) => {
                    let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
                    for m in msgs {
                        if let Some(hs) = m.headers() {
                            for h in hs.iter() {
                                b.keys().append_value(h.key);
                                b.values()
                                    .append_option(h.value.map(String::from_utf8_lossy));
                            }
                        }
                        b.append(true)?;
                    }
                    Arc::new(b.finish())
                }
            });
        }
        RecordBatch::try_new(self.schema.clone(), arrays)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::ClientConfig;
    use rdkafka::mocking::MockCluster;

    /// The two steps of manual assignment on a real client (librdkafka's
    /// mock cluster): the start assigns checkpoint offsets where it has
    /// them and the group's offsets elsewhere; discovery adds what the
    /// consumer does not hold, from the beginning, and nothing twice.
    /// (Neither tansu nor the mock cluster can add partitions to a topic, so
    /// a consumer holding one of three partitions stands for a topic grown
    /// from one to three.)
    #[test]
    fn manual_assignment_starts_at_the_checkpoint_and_finds_new_partitions() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 3, 1).unwrap();
        let consumer: Consumer_ = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "g")
            .create_with_context(VeloContext::new("s", None))
            .unwrap();
        let timeout = Duration::from_secs(10);
        let topics = vec!["t".to_string()];
        let resume = HashMap::from([(("t".to_string(), 1), 42i64)]);
        let tpl = unassigned_partitions(
            &consumer,
            &topics,
            &HashSet::new(),
            Some(&resume),
            Offset::Stored,
            timeout,
        )
        .unwrap();
        let offsets: Vec<(i32, Offset)> = tpl
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect();
        assert_eq!(
            offsets,
            vec![
                (0, Offset::Stored),
                (1, Offset::Offset(42)),
                (2, Offset::Stored)
            ]
        );

        let mut one = TopicPartitionList::new();
        one.add_partition_offset("t", 0, Offset::Beginning).unwrap();
        consumer.assign(&one).unwrap();
        assert!(!consumer.context().has_assignment());
        assert_eq!(
            assign_new_partitions(&consumer, &topics, timeout).unwrap(),
            2
        );
        assert!(consumer.context().has_assignment());
        let held: Vec<i32> = consumer
            .assignment()
            .unwrap()
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        assert_eq!(held, vec![0, 1, 2]);
        assert_eq!(
            assign_new_partitions(&consumer, &topics, timeout).unwrap(),
            0
        );
        let missing = unassigned_partitions(
            &consumer,
            &["nope".to_string()],
            &HashSet::new(),
            None,
            Offset::Stored,
            timeout,
        );
        assert!(missing.is_err(), "{missing:?}");
    }
}
