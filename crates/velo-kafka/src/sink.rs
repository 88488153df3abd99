//! `kafka_sink`: one message per result row. Values are encoded a batch at a
//! time (arrow-json lines, arrow-avro rows with the Confluent prefix, or a
//! raw column); keys come from `key.field` columns. In Simple mode an epoch
//! is acknowledged once the producer has flushed and every delivery report
//! came back without error; in Transactional mode the epoch is one Kafka
//! transaction, with the driving Kafka source's offsets sent in it.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use velo_connectors::{
    ConnectorError, Position, Result, Sink, SinkCapabilities, TransactionContext,
};

use crate::config::{Format, KafkaSinkConfig};
use crate::source::{Consumer_, Consumers};
use velo_formats::schema_registry::SchemaRegistry;

/// Delivery reports: counts failures and keeps the first error.
pub struct DeliveryContext {
    name: String,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::log_librdkafka(&self.name, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let text = format!("Kafka: {error}: {reason}");
        if crate::may_log(&text) {
            tracing::warn!(sink = %self.name, "{text}");
        }
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().expect("delivery lock");
            if first.is_none() {
                *first = Some(e.to_string());
            }
        }
    }
}

/// The encoded values of one batch.
enum Values {
    /// JSON lines: row `i` is between `offsets[i]` and `offsets[i + 1]` (newline dropped).
    Lines(Vec<u8>, Vec<usize>),
    /// Avro rows with the Confluent prefix.
    Avro(arrow_avro::writer::EncodedRows),
    /// A text or binary column, as is.
    Column(ArrayRef),
}

impl Values {
    /// Row `i`'s payload (`None`: a null value, sent as a tombstone).
    fn row(&self, i: usize) -> Option<&[u8]> {
        match self {
            Values::Lines(data, o) => Some(&data[o[i]..o[i + 1] - 1]),
            Values::Avro(rows) => Some(&rows.bytes()[rows.offsets()[i]..rows.offsets()[i + 1]]),
            Values::Column(c) if c.is_null(i) => None,
            Values::Column(c) => Some(match c.as_binary_opt::<i32>() {
                Some(b) => b.value(i),
                None => c.as_string::<i32>().value(i).as_bytes(),
            }),
        }
    }
}

/// Row `i`'s key: the single key column's text, or the key columns joined
/// with `|` in `buf`; `None` when every key column is null.
fn row_key<'a>(cols: &'a [ArrayRef], i: usize, buf: &'a mut String) -> Option<&'a str> {
    if cols.is_empty() || cols.iter().all(|c| c.is_null(i)) {
        return None;
    }
    if let [one] = cols {
        return Some(one.as_string::<i32>().value(i));
    }
    buf.clear();
    for (n, c) in cols.iter().enumerate() {
        if n > 0 {
            buf.push('|');
        }
        if !c.is_null(i) {
            buf.push_str(c.as_string::<i32>().value(i));
        }
    }
    Some(buf)
}

/// The Kafka sink.
pub struct KafkaSink {
    name: String,
    cfg: KafkaSinkConfig,
    producer: Option<BaseProducer<DeliveryContext>>,
    transactional: bool,
    txn_ready: bool,
    in_txn: bool,
    schema: Option<SchemaRef>,
    avro: Option<arrow_avro::writer::Encoder>,
    registry: Option<Arc<SchemaRegistry>>,
    /// Where the consumers of the job's Kafka sources are registered.
    consumers: Arc<Consumers>,
    /// This epoch's source offsets and the group member that sends them in
    /// the transaction.
    pending_offsets: Option<(Position, Arc<Consumer_>)>,
    /// The result is updating: its deletes are tombstones.
    changelog: bool,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("name", &self.name)
            .field("topic", &self.cfg.topic)
            .finish()
    }
}

/// How long one wait for delivery reports lasts. rdkafka's
/// `BaseProducer::poll` blocks for its whole timeout even after it has
/// served the reports (and `flush` polls 100 ms at a time), so a flush
/// that waits in one long poll costs every epoch at least 100 ms.
const FLUSH_POLL: Duration = Duration::from_millis(1);

/// Waits until every message sent so far is acknowledged (or failed), or
/// `timeout` passes: librdkafka's flush, in short polls, so an epoch's
/// commit waits for the broker's answer and not for a poll timeout.
fn flush(p: &BaseProducer<DeliveryContext>, timeout: Duration) -> rdkafka::error::KafkaResult<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match p.flush(FLUSH_POLL) {
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
                if std::time::Instant::now() < deadline => {}
            r => return r,
        }
    }
}

/// A producer call's failure (the brokers'), as a connector error.
fn err(e: impl std::fmt::Display) -> ConnectorError {
    crate::error::broker(e)
}

impl KafkaSink {
    /// Creates the sink; the producer connects at the first epoch.
    pub fn new(name: &str, cfg: KafkaSinkConfig) -> Result<Self> {
        let registry = match (cfg.format, &cfg.registry) {
            (Format::Avro, Some(url)) => Some(Arc::new(SchemaRegistry::new(url))),
            (Format::Protobuf, _) => {
                return Err(crate::error::setup(format!(
                    "sink '{name}': protobuf output is not supported yet (value.format json, avro, string or bytes)"
                )));
            }
            (Format::Avro, None) => {
                return Err(crate::error::setup(format!(
                    "sink '{name}' writes Avro: set '{name}.schema.registry.url'"
                )));
            }
            _ => None,
        };
        Ok(Self {
            name: name.to_string(),
            cfg,
            producer: None,
            transactional: false,
            txn_ready: false,
            in_txn: false,
            schema: None,
            avro: None,
            registry,
            consumers: Arc::default(),
            pending_offsets: None,
            changelog: false,
        })
    }

    /// Finds the consumers of the job's Kafka sources in `consumers` (the
    /// connector context's), to send their offsets in its transactions.
    pub fn with_consumers(mut self, consumers: Arc<Consumers>) -> Self {
        self.consumers = consumers;
        self
    }

    fn producer(&mut self) -> Result<&BaseProducer<DeliveryContext>> {
        if self.producer.is_none() {
            let mut c = self.cfg.client.clone();
            if self.transactional {
                c.set("transactional.id", &self.cfg.transactional_id);
            }
            let ctx = DeliveryContext {
                name: self.name.clone(),
                failed: AtomicU64::new(0),
                first_error: Mutex::new(None),
            };
            let p: BaseProducer<DeliveryContext> = c
                .create_with_context(ctx)
                .map_err(|e| err(format!("cannot create a Kafka producer: {e}")))?;
            self.producer = Some(p);
        }
        Ok(self.producer.as_ref().expect("created above"))
    }

    /// Encodes a batch's values once; rows are slices of the result.
    fn encode_values(&mut self, batch: &RecordBatch) -> Result<Values> {
        match self.cfg.format {
            Format::Json => {
                let mut data = Vec::with_capacity(batch.num_rows() * 64);
                let mut w = arrow::json::LineDelimitedWriter::new(&mut data);
                w.write(batch)?;
                w.finish()?;
                drop(w);
                // arrow-json escapes newlines inside values: one line, one row
                let mut offsets = Vec::with_capacity(batch.num_rows() + 1);
                offsets.push(0);
                offsets.extend(
                    data.iter()
                        .enumerate()
                        .filter(|(_, b)| **b == b'\n')
                        .map(|(i, _)| i + 1),
                );
                Ok(Values::Lines(data, offsets))
            }
            Format::Protobuf => unreachable!("refused in new"),
            Format::String | Format::Bytes => {
                let idx = batch.schema().index_of("value").unwrap_or(0);
                let col = batch.column(idx);
                Ok(Values::Column(if col.data_type() == &DataType::Binary {
                    col.clone()
                } else {
                    arrow::compute::cast(col, &DataType::Utf8)?
                }))
            }
            Format::Avro => {
                if self.avro.is_none() {
                    let schema = batch.schema();
                    let avro_schema = arrow_avro::schema::AvroSchema::try_from(schema.as_ref())
                        .map_err(|e| {
                            crate::error::setup(format!("no Avro schema for the result: {e}"))
                        })?;
                    let reg = self.registry.as_ref().expect("checked in new");
                    let id = reg.register(&self.cfg.subject, &avro_schema.json_string)?;
                    let enc = arrow_avro::writer::WriterBuilder::new(schema.as_ref().clone())
                        .with_fingerprint_strategy(arrow_avro::schema::FingerprintStrategy::Id(id))
                        .build_encoder::<arrow_avro::writer::format::AvroSoeFormat>()
                        .map_err(crate::error::format_error)?;
                    self.avro = Some(enc);
                }
                let enc = self.avro.as_mut().expect("built above");
                enc.encode(batch).map_err(crate::error::format_error)?;
                Ok(Values::Avro(enc.flush()))
            }
        }
    }

    /// The key columns as text, checked against the result.
    fn key_columns(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let mut cols = Vec::new();
        for k in &self.cfg.key_fields {
            let i = batch.schema().index_of(k).map_err(|_| {
                crate::error::setup(format!(
                    "sink '{}': key.field '{k}' is not a column of the result ({})",
                    self.name,
                    batch
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            cols.push(arrow::compute::cast(batch.column(i), &DataType::Utf8)?);
        }
        Ok(cols)
    }

    fn headers(&self, batch: &RecordBatch) -> Result<Option<Vec<Option<OwnedHeaders>>>> {
        let Some(h) = &self.cfg.headers_field else {
            return Ok(None);
        };
        let col: &ArrayRef = batch.column(batch.schema().index_of(h).map_err(|_| {
            crate::error::setup(format!(
                "sink '{}': headers.field '{h}' is not a column of the result",
                self.name
            ))
        })?);
        let mut out = Vec::with_capacity(batch.num_rows());
        match col.data_type() {
            DataType::Map(_, _) => {
                let m = col.as_map();
                for r in 0..batch.num_rows() {
                    if m.is_null(r) {
                        out.push(None);
                        continue;
                    }
                    let e = m.value(r);
                    let ks = arrow::compute::cast(e.column(0), &DataType::Utf8)?;
                    let vs = arrow::compute::cast(e.column(1), &DataType::Utf8)?;
                    let (ks, vs) = (ks.as_string::<i32>(), vs.as_string::<i32>());
                    let mut hs = OwnedHeaders::new();
                    for i in 0..ks.len() {
                        hs = hs.insert(Header {
                            key: ks.value(i),
                            value: (!vs.is_null(i)).then(|| vs.value(i)),
                        });
                    }
                    out.push(Some(hs));
                }
            }
            _ => {
                let s = arrow::compute::cast(col, &DataType::Utf8)?;
                let s = s.as_string::<i32>();
                for r in 0..batch.num_rows() {
                    if s.is_null(r) {
                        out.push(None);
                        continue;
                    }
                    let v: serde_json::Value = serde_json::from_str(s.value(r)).map_err(|e| {
                        crate::error::setup(format!(
                            "sink '{}': headers.field '{h}' is not a JSON object: {e}",
                            self.name
                        ))
                    })?;
                    let mut hs = OwnedHeaders::new();
                    if let Some(o) = v.as_object() {
                        for (k, v) in o {
                            let text = match v {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            hs = hs.insert(Header {
                                key: k,
                                value: Some(&text),
                            });
                        }
                    }
                    out.push(Some(hs));
                }
            }
        }
        Ok(Some(out))
    }

    fn delivery_error(&self) -> Option<String> {
        let p = self.producer.as_ref()?;
        let ctx = p.context();
        let n = ctx.failed.swap(0, Ordering::Relaxed);
        let first = ctx.first_error.lock().expect("delivery lock").take();
        (n > 0).then(|| {
            format!(
                "{n} message(s) were not delivered to topic '{}': {}",
                self.cfg.topic,
                first.unwrap_or_default()
            )
        })
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> SinkCapabilities {
        SinkCapabilities { transactions: true }
    }

    fn set_transactional(&mut self, on: bool) {
        self.transactional = on;
    }

    fn set_schema(&mut self, schema: SchemaRef) {
        self.schema = Some(schema);
    }

    fn set_key_columns(&mut self, columns: &[String]) {
        if self.cfg.key_fields.is_empty() && !columns.is_empty() {
            tracing::info!(sink = %self.name, "message key: {} (PRIMARY KEY or group key)", columns.join(", "));
            self.cfg.key_fields = columns.to_vec();
        }
    }

    fn set_changelog(&mut self) {
        self.changelog = true;
    }

    fn begin_epoch(&mut self, _epoch: u64) -> Result<()> {
        let timeout = self.cfg.flush_timeout;
        let transactional = self.transactional;
        let ready = self.txn_ready;
        let p = self.producer()?;
        if transactional {
            if !ready {
                p.init_transactions(timeout)
                    .map_err(|e| err(format!("cannot initialise Kafka transactions: {e}")))?;
            }
            p.begin_transaction()
                .map_err(|e| err(format!("cannot begin a Kafka transaction: {e}")))?;
            self.txn_ready = true;
            self.in_txn = true;
        }
        self.pending_offsets = None;
        Ok(())
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.producer()?;
        let values = self.encode_values(batch)?;
        let keys = self.key_columns(batch)?;
        let mut headers = self.headers(batch)?;
        // an updating result's deletes are tombstones: the key, no value
        let deletes = if self.changelog {
            Some(velo_connectors::ChangeBatch::from_batch(batch)?.deletes())
        } else {
            None
        };
        let p = self.producer.as_ref().expect("created above");
        let topic = self.cfg.topic.as_str();
        let mut compound = String::new();
        for i in 0..batch.num_rows() {
            let mut rec: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic);
            let delete = deletes.as_ref().is_some_and(|d| d.value(i));
            if let Some(v) = values.row(i).filter(|_| !delete) {
                rec = rec.payload(v);
            }
            if let Some(k) = row_key(&keys, i, &mut compound) {
                rec = rec.key(k);
            }
            if let Some(h) = headers.as_mut().and_then(|h| h[i].take()) {
                rec = rec.headers(h);
            }
            let mut rec = rec;
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // the local queue is full: serve delivery reports until there is room
                        p.poll(FLUSH_POLL);
                        rec = r;
                    }
                    Err((e, _)) => {
                        return Err(err(format!("cannot send to topic '{topic}': {e}")));
                    }
                }
            }
        }
        p.poll(Duration::ZERO);
        Ok(())
    }

    fn set_epoch_position(
        &mut self,
        position: &Position,
        context: Option<TransactionContext>,
    ) -> Result<()> {
        self.pending_offsets = match context {
            Some(TransactionContext::KafkaGroup { group, consumer }) => {
                let member = self.consumers.get(consumer).ok_or_else(|| {
                    err(format!(
                        "sink '{}': the consumer of group '{group}' that read this epoch has stopped, so its offsets cannot join the transaction; the epoch is aborted and read again",
                        self.name
                    ))
                })?;
                Some((position.clone(), member))
            }
            // another system's position: the engine's checkpoint carries it
            _ => None,
        };
        Ok(())
    }

    fn prepare_commit(&mut self, _epoch: u64) -> Result<()> {
        let timeout = self.cfg.flush_timeout;
        let Some(p) = self.producer.as_ref() else {
            return Ok(());
        };
        flush(p, timeout).map_err(|e| {
            err(format!(
                "topic '{}': not every message was acknowledged within {timeout:?}: {e}",
                self.cfg.topic
            ))
        })?;
        if let Some(e) = self.delivery_error() {
            return Err(err(e));
        }
        if self.in_txn {
            if let Some((pos, member)) = self.pending_offsets.take() {
                let gm = member.group_metadata().ok_or_else(|| {
                    err("the source's consumer has no group metadata, so its offsets cannot join the transaction")
                })?;
                let tpl = crate::source::position_list(&pos);
                let p = self.producer.as_ref().expect("checked above");
                p.send_offsets_to_transaction(&tpl, &gm, timeout)
                    .map_err(|e| {
                        err(format!(
                            "cannot add the consumed offsets to the transaction: {e}"
                        ))
                    })?;
            }
        }
        Ok(())
    }

    fn commit(&mut self, _epoch: u64) -> Result<()> {
        if self.in_txn {
            let p = self.producer.as_ref().expect("in a transaction");
            p.commit_transaction(self.cfg.flush_timeout)
                .map_err(|e| err(format!("cannot commit the Kafka transaction: {e}")))?;
            self.in_txn = false;
        }
        Ok(())
    }

    fn abort(&mut self, _epoch: u64) -> Result<()> {
        let _ = self.delivery_error();
        // the aborted epoch's offsets are read again, and its source's
        // consumer is not held past it
        self.pending_offsets = None;
        if self.in_txn {
            self.in_txn = false;
            if let Some(p) = self.producer.as_ref() {
                p.abort_transaction(self.cfg.flush_timeout)
                    .map_err(|e| err(format!("cannot abort the Kafka transaction: {e}")))?;
            }
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let Some(p) = self.producer.as_ref() {
            if self.in_txn {
                let _ = p.abort_transaction(self.cfg.flush_timeout);
                self.in_txn = false;
            }
            flush(p, self.cfg.flush_timeout)
                .map_err(|e| err(format!("topic '{}': flush at close: {e}", self.cfg.topic)))?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "kafka topic '{}' at '{}' ({:?}{}){}",
            self.cfg.topic,
            self.cfg.servers,
            self.cfg.format,
            if self.cfg.key_fields.is_empty() {
                String::new()
            } else {
                format!(", key {}", self.cfg.key_fields.join("|"))
            },
            if self.transactional {
                " (transactional)"
            } else {
                ""
            }
        )
    }
}
