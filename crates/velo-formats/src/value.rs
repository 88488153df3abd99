//! Message values to Arrow and back: JSON through arrow-json on the
//! concatenated payloads, Avro through arrow-avro (Confluent wire format with
//! a schema registry, or plain binary with an inline schema), and raw
//! string/bytes. A set of messages is decoded in one call; only when that
//! fails is it decoded message by message to set the bad ones aside.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow_avro::reader::{Decoder as AvroDecoder, ReaderBuilder as AvroReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use velo_connectors::{ConnectorError, Result};

use crate::schema_registry::SchemaRegistry;

/// Value/key encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per message.
    Json,
    /// Avro: Confluent wire format with a schema registry, or plain Avro
    /// binary with an inline schema file.
    Avro,
    /// Protobuf, described by a descriptor set file.
    Protobuf,
    /// The payload as UTF-8 text (one `value` column).
    String,
    /// The payload as bytes (one `value` column).
    Bytes,
}

/// The names a configuration may give a format ([`Format::parse`]).
pub const FORMAT_NAMES: &[&str] = &[
    "json", "avro", "protobuf", "proto", "string", "bytes", "text", "raw", "binary",
];

impl Format {
    /// The format a configuration names (`json` for anything unknown: the
    /// key's type check refuses unknown names first).
    pub fn parse(v: &str) -> Self {
        match v.trim().to_ascii_lowercase().as_str() {
            "avro" => Format::Avro,
            "protobuf" | "proto" => Format::Protobuf,
            "string" | "text" => Format::String,
            "bytes" | "raw" | "binary" => Format::Bytes,
            _ => Format::Json,
        }
    }
}

/// The decoded values of a set of messages.
pub struct Decoded {
    /// Value columns of the good messages, in order.
    pub batch: RecordBatch,
    /// Indices (into the input) of the messages in `batch`.
    pub good: Vec<usize>,
    /// Indices and errors of the messages that could not be decoded.
    pub bad: Vec<(usize, String)>,
}

/// Decodes message values of one source.
pub enum ValueDecoder {
    /// arrow-json.
    Json {
        /// Value schema.
        schema: SchemaRef,
        /// Cached decoder.
        decoder: Option<arrow::json::reader::Decoder>,
        /// Rows per batch.
        batch_size: usize,
    },
    /// arrow-avro.
    Avro(Box<AvroState>),
    /// Protobuf with a descriptor set.
    Protobuf(Box<crate::protobuf::ProtoDecoder>),
    /// UTF-8 text in a `value` column.
    String,
    /// Bytes in a `value` column.
    Bytes,
}

/// Avro decoding state: the reader schema, the writer schemas met so far.
pub struct AvroState {
    registry: Option<Arc<SchemaRegistry>>,
    reader: AvroSchema,
    writers: HashMap<u32, AvroSchema>,
    unknown: HashMap<u32, String>,
    decoder: Option<AvroDecoder>,
    schema: SchemaRef,
    batch_size: usize,
    /// Plain binary messages (inline schema): a Confluent prefix with id 0 is added.
    plain: bool,
}

const PLAIN_ID: u32 = 0;

fn other(e: impl std::fmt::Display) -> ConnectorError {
    crate::error::format_error(e)
}

impl AvroState {
    /// A decoder into `reader` for messages in the Confluent wire format.
    pub fn registry(
        registry: Arc<SchemaRegistry>,
        reader_id: u32,
        reader: String,
        batch_size: usize,
    ) -> Result<Self> {
        let reader = AvroSchema::new(reader);
        let mut writers = HashMap::new();
        writers.insert(reader_id, reader.clone());
        Self::build(Some(registry), reader, writers, batch_size, false)
    }

    /// A decoder for plain Avro binary messages written with `schema`.
    pub fn inline(schema: String, batch_size: usize) -> Result<Self> {
        let reader = AvroSchema::new(schema);
        let mut writers = HashMap::new();
        writers.insert(PLAIN_ID, reader.clone());
        Self::build(None, reader, writers, batch_size, true)
    }

    fn build(
        registry: Option<Arc<SchemaRegistry>>,
        reader: AvroSchema,
        writers: HashMap<u32, AvroSchema>,
        batch_size: usize,
        plain: bool,
    ) -> Result<Self> {
        let mut s = Self {
            registry,
            reader,
            writers,
            unknown: HashMap::new(),
            decoder: None,
            schema: Arc::new(Schema::empty()),
            batch_size,
            plain,
        };
        let d = s
            .new_decoder(batch_size)
            .map_err(|e| other(format!("invalid Avro schema: {e}")))?;
        s.schema = d.schema();
        s.decoder = Some(d);
        Ok(s)
    }

    fn new_decoder(&self, batch_size: usize) -> std::result::Result<AvroDecoder, ArrowError> {
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        for (id, s) in &self.writers {
            store.set(Fingerprint::Id(*id), s.clone())?;
        }
        AvroReaderBuilder::new()
            .with_reader_schema(self.reader.clone())
            .with_writer_schema_store(store)
            .with_batch_size(batch_size.max(1))
            .build_decoder()
    }

    /// The Arrow schema of decoded values.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The schema id of a framed message, or why it is not one.
    fn check_frame(&mut self, p: &[u8]) -> std::result::Result<(), String> {
        if self.plain {
            return Ok(());
        }
        if p.len() < 5 || p[0] != 0 {
            return Err(
                "not in the Confluent wire format (magic byte 0, then a 4-byte schema id)".into(),
            );
        }
        let id = u32::from_be_bytes([p[1], p[2], p[3], p[4]]);
        if self.writers.contains_key(&id) {
            return Ok(());
        }
        if let Some(e) = self.unknown.get(&id) {
            return Err(e.clone());
        }
        let found = match &self.registry {
            Some(r) => r.schema_by_id(id),
            None => Ok(None),
        };
        match found {
            Ok(Some(s)) => {
                self.writers.insert(id, AvroSchema::new(s));
                self.decoder = None; // rebuilt with the new writer schema
                Ok(())
            }
            Ok(None) => {
                let e = format!("unknown schema id {id} (not in the schema registry)");
                self.unknown.insert(id, e.clone());
                Err(e)
            }
            Err(e) => Err(format!("schema id {id}: {e}")),
        }
    }

    fn decode(&mut self, payloads: &[&[u8]]) -> std::result::Result<Decoded, ArrowError> {
        let mut bad = Vec::new();
        let mut good = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            match self.check_frame(p) {
                Ok(()) => good.push(i),
                Err(e) => bad.push((i, e)),
            }
        }
        let sel: Vec<&[u8]> = good.iter().map(|i| payloads[*i]).collect();
        let mut dec = match self.decoder.take() {
            Some(d) => d,
            None => self.new_decoder(self.batch_size)?,
        };
        let mut out = Vec::new();
        let ok = avro_all(&mut dec, &sel, self.plain, &mut out);
        let rows: usize = out.iter().map(|b| b.num_rows()).sum();
        if ok.is_ok() && rows == sel.len() {
            self.decoder = Some(dec);
            let batch = arrow::compute::concat_batches(&self.schema, &out)?;
            bad.sort_by_key(|b| b.0);
            return Ok(Decoded { batch, good, bad });
        }
        // one record at a time, a fresh decoder each, to find the bad ones
        let mut kept = Vec::new();
        for i in good {
            let mut one = self.new_decoder(1)?;
            let mut o = Vec::new();
            match avro_all(&mut one, &[payloads[i]], self.plain, &mut o) {
                Ok(()) if o.iter().map(|b| b.num_rows()).sum::<usize>() == 1 => kept.push(i),
                Ok(()) => bad.push((i, "truncated Avro record".into())),
                Err(e) => bad.push((i, e)),
            }
        }
        let sel: Vec<&[u8]> = kept.iter().map(|i| payloads[*i]).collect();
        let mut dec = self.new_decoder(self.batch_size)?;
        let mut out = Vec::new();
        avro_all(&mut dec, &sel, self.plain, &mut out).map_err(ArrowError::ParseError)?;
        bad.sort_by_key(|b| b.0);
        Ok(Decoded {
            batch: arrow::compute::concat_batches(&self.schema, &out)?,
            good: kept,
            bad,
        })
    }
}

/// Decodes `payloads` with `dec`; errors if one is not a whole record.
fn avro_all(
    dec: &mut AvroDecoder,
    payloads: &[&[u8]],
    plain: bool,
    out: &mut Vec<RecordBatch>,
) -> std::result::Result<(), String> {
    let mut scratch = Vec::new();
    for p in payloads {
        let frame: &[u8] = if plain {
            scratch.clear();
            scratch.push(0);
            scratch.extend_from_slice(&PLAIN_ID.to_be_bytes());
            scratch.extend_from_slice(p);
            &scratch
        } else {
            p
        };
        let mut at = 0;
        while at < frame.len() {
            let n = dec.decode(&frame[at..]).map_err(|e| e.to_string())?;
            if n == 0 {
                if dec.batch_is_empty() {
                    return Err("truncated Avro record".into());
                }
                // full batch or writer schema change: flush and go on
                if let Some(b) = dec.flush().map_err(|e| e.to_string())? {
                    out.push(b);
                }
                continue;
            }
            at += n;
        }
    }
    if let Some(b) = dec.flush().map_err(|e| e.to_string())? {
        out.push(b);
    }
    Ok(())
}

impl ValueDecoder {
    /// A decoder for `format` into `schema` (JSON) or the Avro state's schema.
    pub fn json(schema: SchemaRef, batch_size: usize) -> Self {
        Self::Json {
            schema,
            decoder: None,
            batch_size,
        }
    }

    /// The value schema of a raw format.
    pub fn raw_schema(format: Format) -> SchemaRef {
        let ty = if format == Format::Bytes {
            DataType::Binary
        } else {
            DataType::Utf8
        };
        Arc::new(Schema::new(vec![Field::new("value", ty, true)]))
    }

    /// Decodes the values of a set of messages (`None`: a tombstone, decoded as nulls).
    pub fn decode(
        &mut self,
        payloads: &[Option<&[u8]>],
    ) -> std::result::Result<Decoded, ArrowError> {
        match self {
            ValueDecoder::Json {
                schema,
                decoder,
                batch_size,
            } => {
                let ps: Vec<&[u8]> = payloads.iter().map(|p| p.unwrap_or(b"{}")).collect();
                decode_json(schema, decoder, (*batch_size).max(ps.len()), &ps)
            }
            ValueDecoder::Avro(state) => {
                let mut bad = Vec::new();
                let mut idx = Vec::new();
                let mut ps = Vec::new();
                for (i, p) in payloads.iter().enumerate() {
                    match p {
                        Some(p) => {
                            idx.push(i);
                            ps.push(*p);
                        }
                        None => bad.push((i, "empty message (tombstone) in an Avro topic".into())),
                    }
                }
                let mut d = state.decode(&ps)?;
                d.good = d.good.into_iter().map(|g| idx[g]).collect();
                d.bad = d.bad.into_iter().map(|(g, e)| (idx[g], e)).collect();
                d.bad.extend(bad);
                d.bad.sort_by_key(|b| b.0);
                Ok(d)
            }
            ValueDecoder::Protobuf(p) => {
                let ps: Vec<&[u8]> = payloads.iter().map(|p| p.unwrap_or(b"")).collect();
                p.decode(&ps)
            }
            ValueDecoder::String => {
                let mut good = Vec::new();
                let mut bad = Vec::new();
                let mut vals = Vec::new();
                for (i, p) in payloads.iter().enumerate() {
                    match p.map(std::str::from_utf8) {
                        None => {
                            good.push(i);
                            vals.push(None);
                        }
                        Some(Ok(s)) => {
                            good.push(i);
                            vals.push(Some(s));
                        }
                        Some(Err(e)) => bad.push((i, format!("not valid UTF-8 text: {e}"))),
                    }
                }
                let col: ArrayRef = Arc::new(StringArray::from(vals));
                Ok(Decoded {
                    batch: RecordBatch::try_new(Self::raw_schema(Format::String), vec![col])?,
                    good,
                    bad,
                })
            }
            ValueDecoder::Bytes => {
                let col: ArrayRef = Arc::new(BinaryArray::from(payloads.to_vec()));
                Ok(Decoded {
                    batch: RecordBatch::try_new(Self::raw_schema(Format::Bytes), vec![col])?,
                    good: (0..payloads.len()).collect(),
                    bad: vec![],
                })
            }
        }
    }
}

fn json_decoder(
    schema: &SchemaRef,
    batch_size: usize,
) -> std::result::Result<arrow::json::reader::Decoder, ArrowError> {
    arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(batch_size.max(1))
        .build_decoder()
}

/// Feeds every payload (each followed by a newline) to one decoder; the
/// decoder reads values across calls, so nothing is concatenated.
fn json_all(
    dec: &mut arrow::json::reader::Decoder,
    payloads: &[&[u8]],
    out: &mut Vec<RecordBatch>,
) -> std::result::Result<(), ArrowError> {
    for bytes in payloads.iter().copied().flat_map(|p| [p, b"\n".as_slice()]) {
        let mut at = 0;
        while at < bytes.len() {
            let n = dec.decode(&bytes[at..])?;
            if n == 0 {
                match dec.flush()? {
                    Some(b) => out.push(b),
                    None => {
                        return Err(ArrowError::JsonError("incomplete JSON value".into()));
                    }
                }
            }
            at += n;
        }
    }
    if let Some(b) = dec.flush()? {
        out.push(b);
    }
    Ok(())
}

fn decode_json(
    schema: &SchemaRef,
    cache: &mut Option<arrow::json::reader::Decoder>,
    batch_size: usize,
    payloads: &[&[u8]],
) -> std::result::Result<Decoded, ArrowError> {
    let mut dec = match cache.take() {
        Some(d) => d,
        None => json_decoder(schema, batch_size)?,
    };
    let mut out = Vec::new();
    // a message nested too deeply must not reach the decoder (jsondepth)
    let too_deep = |p: &[u8]| velo_connectors::jsondepth::too_deep(p);
    let deep = payloads.iter().any(|p| too_deep(p));
    let fast = if deep {
        Err(ArrowError::JsonError(String::new()))
    } else {
        json_all(&mut dec, payloads, &mut out)
    };
    let rows: usize = out.iter().map(|b| b.num_rows()).sum();
    if fast.is_ok() && rows == payloads.len() {
        *cache = Some(dec);
        return Ok(Decoded {
            batch: arrow::compute::concat_batches(schema, &out)?,
            good: (0..payloads.len()).collect(),
            bad: vec![],
        });
    }
    // isolate the bad messages: each decoded alone (a message holding two
    // values or none is bad too)
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        if too_deep(p) {
            bad.push((i, velo_connectors::jsondepth::too_deep_message()));
            continue;
        }
        let mut one = json_decoder(schema, 2)?;
        let mut o = Vec::new();
        match json_all(&mut one, &[p], &mut o) {
            Ok(()) if o.iter().map(|b| b.num_rows()).sum::<usize>() == 1 => good.push(i),
            Ok(()) => bad.push((i, "expected exactly one JSON value".to_string())),
            Err(e) => bad.push((
                i,
                e.to_string().trim_start_matches("Json error: ").to_string(),
            )),
        }
    }
    let kept: Vec<&[u8]> = good.iter().map(|i| payloads[*i]).collect();
    let mut dec = json_decoder(schema, batch_size)?;
    let mut out = Vec::new();
    json_all(&mut dec, &kept, &mut out)?;
    Ok(Decoded {
        batch: arrow::compute::concat_batches(schema, &out)?,
        good,
        bad,
    })
}

/// Infers a JSON value schema from sample payloads.
pub fn infer_json(samples: &[Vec<u8>]) -> Result<SchemaRef> {
    let values: Vec<serde_json::Value> = samples
        .iter()
        .filter_map(|s| serde_json::from_slice::<serde_json::Value>(s).ok())
        .filter(|v| v.is_object())
        .collect();
    if values.is_empty() {
        return Err(other("no JSON object among the sampled messages"));
    }
    let schema = arrow::json::reader::infer_json_schema_from_iterator(
        values.into_iter().map(Ok::<_, ArrowError>),
    )?;
    Ok(Arc::new(schema))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;

    fn kv() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    #[test]
    fn json_values_bad_ones_by_index_and_a_tombstone_as_nulls() {
        let mut d = ValueDecoder::json(kv(), 2);
        let msgs: Vec<Option<&[u8]>> = vec![
            Some(br#"{"k":"a","v":1}"#),
            Some(b"not json"),
            None,
            Some(br#"{"k":"b","v":"two"}"#),
            Some(br#"{"k":"c","v":3,"extra":true}"#),
        ];
        let out = d.decode(&msgs).unwrap();
        assert_eq!(out.good, vec![0, 2, 4]);
        assert_eq!(out.bad.iter().map(|b| b.0).collect::<Vec<_>>(), vec![1, 3]);
        let v = out.batch.column(1).as_primitive::<Int64Type>();
        assert_eq!((v.value(0), v.is_null(1), v.value(2)), (1, true, 3));
        // the decoder is usable after bad messages
        let again = d.decode(&[Some(br#"{"k":"d","v":4}"#.as_slice())]).unwrap();
        assert_eq!(again.good, vec![0]);
    }

    /// Avro binary of the record {k: string, v: long}: zig-zag varints.
    fn avro_kv(k: &str, v: i64) -> Vec<u8> {
        fn varint(mut n: u64, out: &mut Vec<u8>) {
            while n >= 0x80 {
                out.push((n as u8) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
        }
        let zz = |x: i64| ((x << 1) ^ (x >> 63)) as u64;
        let mut out = Vec::new();
        varint(zz(k.len() as i64), &mut out);
        out.extend_from_slice(k.as_bytes());
        varint(zz(v), &mut out);
        out
    }

    #[test]
    fn plain_avro_values_with_an_inline_schema_and_a_truncated_one_refused() {
        let schema = r#"{"type":"record","name":"kv","fields":[{"name":"k","type":"string"},{"name":"v","type":"long"}]}"#;
        let mut d = ValueDecoder::Avro(Box::new(AvroState::inline(schema.into(), 16).unwrap()));
        let a = avro_kv("a", -3);
        let b = avro_kv("bb", 300);
        let cut = &b[..2];
        let msgs: Vec<Option<&[u8]>> = vec![Some(&a), Some(cut), None, Some(&b)];
        let out = d.decode(&msgs).unwrap();
        assert_eq!(out.good, vec![0, 3]);
        assert_eq!(out.bad.iter().map(|b| b.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!(out.bad[1].1.contains("tombstone"), "{:?}", out.bad);
        let k = out.batch.column(0).as_string::<i32>();
        let v = out.batch.column(1).as_primitive::<Int64Type>();
        assert_eq!(
            (k.value(0), v.value(0), k.value(1), v.value(1)),
            ("a", -3, "bb", 300)
        );
    }

    #[test]
    fn an_invalid_avro_schema_is_refused_with_a_message() {
        let e = AvroState::inline(r#"{"type":"record","name":"x"}"#.into(), 16)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("invalid Avro schema"), "{e}");
    }

    #[test]
    fn text_values_refuse_invalid_utf8_and_bytes_take_anything() {
        let msgs: Vec<Option<&[u8]>> = vec![Some(b"ok"), Some(&[0xff, 0xfe]), None];
        let out = ValueDecoder::String.decode(&msgs).unwrap();
        assert_eq!(out.good, vec![0, 2]);
        assert!(out.bad[0].1.contains("UTF-8"));
        let out = ValueDecoder::Bytes.decode(&msgs).unwrap();
        assert_eq!(out.good, vec![0, 1, 2]);
        assert_eq!(
            out.batch.column(0).as_binary::<i32>().value(1),
            &[0xff, 0xfe]
        );
    }

    #[test]
    fn a_json_schema_is_inferred_from_the_objects_among_the_samples() {
        let s = infer_json(&[
            b"[1]".to_vec(),
            br#"{"a":1,"b":"x"}"#.to_vec(),
            b"junk".to_vec(),
        ])
        .unwrap();
        let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, vec!["a", "b"]);
        assert!(infer_json(&[b"junk".to_vec()]).is_err());
    }
}
