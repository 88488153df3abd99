//! Protobuf message values straight into Arrow columns: the message type
//! comes from a descriptor set file (`protoc --include_imports
//! --descriptor_set_out=x.desc`), and the wire format is walked field by
//! field into one builder per column — no per-message objects.
//!
//! Scalar fields (all integer kinds, float, double, bool, string, bytes) and
//! enums (as their value names) become columns. A message type with nested
//! message, repeated or map fields is decoded whole (prost-reflect's
//! `DynamicMessage`) and turned into Arrow columns by field: a message is a
//! struct, a repeated field a list, a map a map (`address['city']`,
//! `items[1]['sku']`, `array_length(tags)`, `attrs['k']` in SQL). An absent
//! field is the type's default, as in proto3, unless the field tracks
//! presence (proto2, proto3 `optional`, messages): then it is null. Messages
//! nested more than 16 deep (recursive types) are cut there, with a warning.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder,
    Int32Builder, Int64Builder, RecordBatch, StringBuilder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
use prost_reflect::{DescriptorPool, EnumDescriptor, Kind, MessageDescriptor};
use velo_connectors::{ConnectorError, Result};

/// One decoded scalar, borrowing strings and bytes from the message.
#[derive(Clone, Copy)]
enum Val<'a> {
    I(i64),
    U(u64),
    F32(f32),
    F64(f64),
    B(bool),
    Bytes(&'a [u8]),
}

struct Col {
    kind: Kind,
    presence: bool,
    ty: DataType,
}

/// The decoder of one message type.
pub struct ProtoDecoder {
    cols: Vec<Col>,
    by_number: HashMap<u32, usize>,
    schema: SchemaRef,
    /// The message, when it has nested, repeated or map fields: decoded
    /// whole, its fields in the schema's order.
    nested: Option<(MessageDescriptor, Vec<prost_reflect::FieldDescriptor>)>,
}

/// How deep nested messages are read (recursive message types stop there).
const MAX_DEPTH: usize = 16;

/// The Arrow type of field `f` (None: nested too deep).
fn field_type(f: &prost_reflect::FieldDescriptor, depth: usize) -> Option<DataType> {
    if f.is_map() {
        let Kind::Message(entry) = f.kind() else {
            return None;
        };
        let k = kind_type(&entry.map_entry_key_field().kind(), depth + 1)?;
        let v = kind_type(&entry.map_entry_value_field().kind(), depth + 1)?;
        return Some(DataType::Map(
            Arc::new(Field::new(
                "entries",
                DataType::Struct(
                    vec![Field::new("key", k, false), Field::new("value", v, true)].into(),
                ),
                false,
            )),
            false,
        ));
    }
    let item = kind_type(&f.kind(), depth)?;
    Some(if f.is_list() {
        DataType::List(Arc::new(Field::new("item", item, true)))
    } else {
        item
    })
}

/// The Arrow type of one value of `kind`.
fn kind_type(kind: &Kind, depth: usize) -> Option<DataType> {
    match kind {
        Kind::Message(m) => {
            if depth >= MAX_DEPTH {
                return None;
            }
            let fields: Vec<Field> = m
                .fields()
                .filter_map(|f| Some(Field::new(f.name(), field_type(&f, depth + 1)?, true)))
                .collect();
            Some(DataType::Struct(fields.into()))
        }
        k => arrow_type(k),
    }
}

/// The column of values `vals` (one per row, None: null) of `kind` as `ty`.
fn column(
    vals: &[Option<&prost_reflect::Value>],
    kind: &Kind,
    ty: &DataType,
) -> std::result::Result<ArrayRef, arrow::error::ArrowError> {
    use arrow::array::*;
    use prost_reflect::Value as V;
    let n = vals.len();
    // one scalar kind into its array
    macro_rules! prim {
        ($array:ident, $variant:ident) => {
            Arc::new($array::from_iter(vals.iter().map(|v| match v {
                Some(V::$variant(x)) => Some(*x),
                _ => None,
            })))
        };
    }
    Ok(match ty {
        DataType::List(item) => {
            let mut lens = Vec::with_capacity(n);
            let mut items = Vec::new();
            for v in vals {
                match v {
                    Some(V::List(l)) => {
                        lens.push(l.len());
                        items.extend(l.iter().map(Some));
                    }
                    _ => lens.push(0),
                }
            }
            let values = column(&items, kind, item.data_type())?;
            Arc::new(ListArray::try_new(
                item.clone(),
                arrow::buffer::OffsetBuffer::from_lengths(lens),
                values,
                None,
            )?)
        }
        DataType::Map(entries, _) => {
            let Kind::Message(entry) = kind else {
                return Err(arrow::error::ArrowError::SchemaError("map kind".into()));
            };
            let DataType::Struct(kv) = entries.data_type() else {
                return Err(arrow::error::ArrowError::SchemaError("map entries".into()));
            };
            let mut lens = Vec::with_capacity(n);
            let mut keys: Vec<V> = Vec::new();
            let mut values: Vec<&V> = Vec::new();
            for v in vals {
                match v {
                    Some(V::Map(m)) => {
                        // in key order: the same map is the same row
                        let mut pairs: Vec<_> = m.iter().collect();
                        pairs.sort_by(|a, b| a.0.cmp(b.0));
                        lens.push(pairs.len());
                        for (k, v) in pairs {
                            keys.push(match k {
                                prost_reflect::MapKey::Bool(b) => V::Bool(*b),
                                prost_reflect::MapKey::I32(x) => V::I32(*x),
                                prost_reflect::MapKey::I64(x) => V::I64(*x),
                                prost_reflect::MapKey::U32(x) => V::U32(*x),
                                prost_reflect::MapKey::U64(x) => V::U64(*x),
                                prost_reflect::MapKey::String(x) => V::String(x.clone()),
                            });
                            values.push(v);
                        }
                    }
                    _ => lens.push(0),
                }
            }
            let key_refs: Vec<Option<&V>> = keys.iter().map(Some).collect();
            let value_refs: Vec<Option<&V>> = values.into_iter().map(Some).collect();
            let k = column(
                &key_refs,
                &entry.map_entry_key_field().kind(),
                kv[0].data_type(),
            )?;
            let v = column(
                &value_refs,
                &entry.map_entry_value_field().kind(),
                kv[1].data_type(),
            )?;
            Arc::new(MapArray::try_new(
                entries.clone(),
                arrow::buffer::OffsetBuffer::from_lengths(lens),
                StructArray::try_new(kv.clone(), vec![k, v], None)?,
                None,
                false,
            )?)
        }
        DataType::Struct(fields) => {
            let Kind::Message(m) = kind else {
                return Err(arrow::error::ArrowError::SchemaError("struct kind".into()));
            };
            let msgs: Vec<Option<&prost_reflect::DynamicMessage>> = vals
                .iter()
                .map(|v| match v {
                    Some(V::Message(m)) => Some(m),
                    _ => None,
                })
                .collect();
            let mut children = Vec::with_capacity(fields.len());
            for field in fields.iter() {
                let Some(fd) = m.get_field_by_name(field.name()) else {
                    return Err(arrow::error::ArrowError::SchemaError(field.name().clone()));
                };
                children.push(message_column(&msgs, &fd, field.data_type())?);
            }
            let nulls: arrow::buffer::NullBuffer = msgs.iter().map(|m| m.is_some()).collect();
            Arc::new(StructArray::try_new(fields.clone(), children, Some(nulls))?)
        }
        DataType::Utf8 => Arc::new(StringArray::from_iter(vals.iter().map(|v| match v {
            Some(V::String(s)) => Some(s.clone()),
            Some(V::EnumNumber(x)) => match kind {
                Kind::Enum(e) => Some(enum_name(e, *x as i64)),
                _ => Some(x.to_string()),
            },
            _ => None,
        }))),
        DataType::Binary => Arc::new(BinaryArray::from_iter(vals.iter().map(|v| match v {
            Some(V::Bytes(b)) => Some(b.as_ref()),
            _ => None,
        }))),
        DataType::Boolean => prim!(BooleanArray, Bool),
        DataType::Int32 => prim!(Int32Array, I32),
        DataType::Int64 => prim!(Int64Array, I64),
        DataType::UInt32 => prim!(UInt32Array, U32),
        DataType::UInt64 => prim!(UInt64Array, U64),
        DataType::Float32 => prim!(Float32Array, F32),
        DataType::Float64 => prim!(Float64Array, F64),
        other => {
            return Err(arrow::error::ArrowError::SchemaError(format!(
                "protobuf values as {other}"
            )));
        }
    })
}

/// Field `fd` of each message (None: no message) as a column of `ty`.
fn message_column(
    msgs: &[Option<&prost_reflect::DynamicMessage>],
    fd: &prost_reflect::FieldDescriptor,
    ty: &DataType,
) -> std::result::Result<ArrayRef, arrow::error::ArrowError> {
    // absent with presence (optional scalars, messages): null
    let present: Vec<Option<std::borrow::Cow<'_, prost_reflect::Value>>> = msgs
        .iter()
        .map(|m| {
            m.filter(|m| !fd.supports_presence() || m.has_field(fd))
                .map(|m| m.get_field(fd))
        })
        .collect();
    let refs: Vec<Option<&prost_reflect::Value>> = present.iter().map(|v| v.as_deref()).collect();
    column(&refs, &fd.kind(), ty)
}

fn other(e: impl std::fmt::Display) -> ConnectorError {
    crate::error::format_error(e)
}

fn arrow_type(kind: &Kind) -> Option<DataType> {
    Some(match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => DataType::Int32,
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => DataType::Int64,
        Kind::Uint32 | Kind::Fixed32 => DataType::UInt32,
        Kind::Uint64 | Kind::Fixed64 => DataType::UInt64,
        Kind::Float => DataType::Float32,
        Kind::Double => DataType::Float64,
        Kind::Bool => DataType::Boolean,
        Kind::String | Kind::Enum(_) => DataType::Utf8,
        Kind::Bytes => DataType::Binary,
        Kind::Message(_) => return None,
    })
}

impl ProtoDecoder {
    /// Loads `message` from the descriptor set in `descriptor`.
    pub fn new(descriptor: &[u8], message: &str, source: &str) -> Result<Self> {
        let pool = DescriptorPool::decode(descriptor)
            .map_err(|e| other(format!("invalid protobuf descriptor set: {e}")))?;
        let md: MessageDescriptor = pool.get_message_by_name(message).ok_or_else(|| {
            let known: Vec<String> = pool
                .all_messages()
                .map(|m| m.full_name().to_string())
                .collect();
            other(format!(
                "message '{message}' is not in the descriptor set (it has: {})",
                known.join(", ")
            ))
        })?;
        if md
            .fields()
            .any(|f| f.is_list() || f.is_map() || matches!(f.kind(), Kind::Message(_)))
        {
            let mut fields = Vec::new();
            let mut fds = Vec::new();
            let mut cut = Vec::new();
            for f in md.fields() {
                match field_type(&f, 0) {
                    Some(ty) => {
                        fields.push(Field::new(f.name(), ty, true));
                        fds.push(f);
                    }
                    None => cut.push(f.name().to_string()),
                }
            }
            if !cut.is_empty() {
                tracing::warn!(
                    source,
                    "protobuf fields {} of '{message}' nest messages more than {MAX_DEPTH} deep: not read",
                    cut.join(", ")
                );
            }
            return Ok(Self {
                cols: Vec::new(),
                by_number: HashMap::new(),
                schema: Arc::new(Schema::new(fields)),
                nested: Some((md, fds)),
            });
        }
        let mut cols = Vec::new();
        let mut fields = Vec::new();
        let mut by_number = HashMap::new();
        let mut skipped = Vec::new();
        for f in md.fields() {
            let kind = f.kind();
            match arrow_type(&kind).filter(|_| !f.is_list() && !f.is_map()) {
                Some(ty) => {
                    by_number.insert(f.number(), cols.len());
                    fields.push(Field::new(f.name(), ty.clone(), true));
                    cols.push(Col {
                        kind,
                        presence: f.supports_presence(),
                        ty,
                    });
                }
                None => skipped.push(f.name().to_string()),
            }
        }
        if !skipped.is_empty() {
            tracing::warn!(
                source,
                "protobuf fields {} of '{message}' are repeated, maps or messages: not read (not supported yet)",
                skipped.join(", ")
            );
        }
        if cols.is_empty() {
            return Err(other(format!(
                "message '{message}' has no scalar field to read"
            )));
        }
        Ok(Self {
            cols,
            by_number,
            schema: Arc::new(Schema::new(fields)),
            nested: None,
        })
    }

    /// The Arrow schema of decoded values.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Reads one message's fields into `row` (last occurrence wins).
    fn scan<'a>(
        &self,
        mut buf: &'a [u8],
        row: &mut [Option<Val<'a>>],
    ) -> std::result::Result<(), String> {
        while !buf.is_empty() {
            let (tag, wt) = decode_key(&mut buf).map_err(|e| e.to_string())?;
            let Some(&i) = self.by_number.get(&tag) else {
                skip_field(wt, tag, &mut buf, DecodeContext::default())
                    .map_err(|e| e.to_string())?;
                continue;
            };
            let kind = &self.cols[i].kind;
            let expected = match kind {
                Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => WireType::ThirtyTwoBit,
                Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => WireType::SixtyFourBit,
                Kind::String | Kind::Bytes => WireType::LengthDelimited,
                _ => WireType::Varint,
            };
            if wt != expected {
                return Err(format!(
                    "field {tag}: wire type {wt:?}, expected {expected:?}"
                ));
            }
            let take = |buf: &mut &'a [u8], n: usize| -> std::result::Result<&'a [u8], String> {
                if buf.len() < n {
                    return Err("truncated message".into());
                }
                let (a, b) = buf.split_at(n);
                *buf = b;
                Ok(a)
            };
            let v = match kind {
                Kind::Float => Val::F32(f32::from_le_bytes(
                    take(&mut buf, 4)?.try_into().expect("4"),
                )),
                Kind::Double => Val::F64(f64::from_le_bytes(
                    take(&mut buf, 8)?.try_into().expect("8"),
                )),
                Kind::Fixed32 => {
                    Val::U(u32::from_le_bytes(take(&mut buf, 4)?.try_into().expect("4")) as u64)
                }
                Kind::Sfixed32 => {
                    Val::I(i32::from_le_bytes(take(&mut buf, 4)?.try_into().expect("4")) as i64)
                }
                Kind::Fixed64 => Val::U(u64::from_le_bytes(
                    take(&mut buf, 8)?.try_into().expect("8"),
                )),
                Kind::Sfixed64 => Val::I(i64::from_le_bytes(
                    take(&mut buf, 8)?.try_into().expect("8"),
                )),
                Kind::String | Kind::Bytes => {
                    let n = decode_varint(&mut buf).map_err(|e| e.to_string())? as usize;
                    let b = take(&mut buf, n)?;
                    if matches!(kind, Kind::String) {
                        std::str::from_utf8(b)
                            .map_err(|e| format!("field {tag} is not UTF-8: {e}"))?;
                    }
                    Val::Bytes(b)
                }
                _ => {
                    let raw = decode_varint(&mut buf).map_err(|e| e.to_string())?;
                    match kind {
                        Kind::Bool => Val::B(raw != 0),
                        Kind::Sint32 | Kind::Sint64 => {
                            Val::I(((raw >> 1) as i64) ^ -((raw & 1) as i64))
                        }
                        Kind::Uint32 | Kind::Uint64 => Val::U(raw),
                        Kind::Int32 | Kind::Enum(_) => Val::I(raw as i32 as i64),
                        _ => Val::I(raw as i64),
                    }
                }
            };
            row[i] = Some(v);
        }
        Ok(())
    }

    /// Decodes `payloads` into one batch of the good ones; the others are
    /// returned with their errors.
    pub fn decode(
        &self,
        payloads: &[&[u8]],
    ) -> std::result::Result<crate::value::Decoded, arrow::error::ArrowError> {
        if let Some((md, fds)) = &self.nested {
            let mut good = Vec::with_capacity(payloads.len());
            let mut bad = Vec::new();
            let mut msgs = Vec::with_capacity(payloads.len());
            for (i, p) in payloads.iter().enumerate() {
                match prost_reflect::DynamicMessage::decode(md.clone(), *p) {
                    Ok(m) => {
                        msgs.push(m);
                        good.push(i);
                    }
                    Err(e) => bad.push((i, format!("not a valid {} message: {e}", md.full_name()))),
                }
            }
            let refs: Vec<Option<&prost_reflect::DynamicMessage>> = msgs.iter().map(Some).collect();
            let arrays = fds
                .iter()
                .zip(self.schema.fields())
                .map(|(fd, f)| message_column(&refs, fd, f.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            return Ok(crate::value::Decoded {
                batch: RecordBatch::try_new_with_options(
                    self.schema.clone(),
                    arrays,
                    &arrow::array::RecordBatchOptions::new().with_row_count(Some(good.len())),
                )?,
                good,
                bad,
            });
        }
        let mut builders: Vec<Box<dyn ArrayBuilder>> = self
            .cols
            .iter()
            .map(|c| arrow::array::make_builder(&c.ty, payloads.len()))
            .collect();
        let mut good = Vec::with_capacity(payloads.len());
        let mut bad = Vec::new();
        let mut row: Vec<Option<Val<'_>>> = vec![None; self.cols.len()];
        for (i, p) in payloads.iter().enumerate() {
            row.iter_mut().for_each(|v| *v = None);
            if let Err(e) = self.scan(p, &mut row) {
                bad.push((i, e));
                continue;
            }
            for (c, (col, v)) in self.cols.iter().zip(row.iter()).enumerate() {
                append(builders[c].as_mut(), col, *v)
                    .map_err(|e| arrow::error::ArrowError::ParseError(e.to_string()))?;
            }
            good.push(i);
        }
        let arrays: Vec<ArrayRef> = builders.iter_mut().map(|b| b.finish()).collect();
        Ok(crate::value::Decoded {
            batch: RecordBatch::try_new(self.schema.clone(), arrays)?,
            good,
            bad,
        })
    }
}

fn enum_name(e: &EnumDescriptor, n: i64) -> String {
    e.get_value(n as i32)
        .map(|v| v.name().to_string())
        .unwrap_or_else(|| n.to_string())
}

fn append(
    b: &mut dyn ArrayBuilder,
    col: &Col,
    v: Option<Val<'_>>,
) -> std::result::Result<(), String> {
    let v = match (v, col.presence) {
        (Some(v), _) => Some(v),
        (None, true) => None,
        // proto3: an absent field holds its default
        (None, false) => Some(match &col.kind {
            Kind::Float => Val::F32(0.0),
            Kind::Double => Val::F64(0.0),
            Kind::Bool => Val::B(false),
            Kind::String | Kind::Bytes => Val::Bytes(b""),
            Kind::Uint32 | Kind::Uint64 | Kind::Fixed32 | Kind::Fixed64 => Val::U(0),
            _ => Val::I(0),
        }),
    };
    let any = b.as_any_mut();
    macro_rules! put {
        ($t:ty, $conv:expr) => {{
            let bb = any.downcast_mut::<$t>().ok_or("builder type")?;
            bb.append_option(v.map($conv));
        }};
    }
    match (&col.kind, &col.ty) {
        (Kind::Enum(e), _) => {
            let bb = any.downcast_mut::<StringBuilder>().ok_or("builder type")?;
            bb.append_option(v.map(|v| match v {
                Val::I(n) => enum_name(e, n),
                _ => String::new(),
            }));
        }
        (_, DataType::Int32) => put!(Int32Builder, |v| match v {
            Val::I(n) => n as i32,
            _ => 0,
        }),
        (_, DataType::Int64) => put!(Int64Builder, |v| match v {
            Val::I(n) => n,
            _ => 0,
        }),
        (_, DataType::UInt32) => put!(UInt32Builder, |v| match v {
            Val::U(n) => n as u32,
            _ => 0,
        }),
        (_, DataType::UInt64) => put!(UInt64Builder, |v| match v {
            Val::U(n) => n,
            _ => 0,
        }),
        (_, DataType::Float32) => put!(Float32Builder, |v| match v {
            Val::F32(x) => x,
            _ => 0.0,
        }),
        (_, DataType::Float64) => put!(Float64Builder, |v| match v {
            Val::F64(x) => x,
            _ => 0.0,
        }),
        (_, DataType::Boolean) => put!(BooleanBuilder, |v| matches!(v, Val::B(true))),
        (_, DataType::Utf8) => {
            let bb = any.downcast_mut::<StringBuilder>().ok_or("builder type")?;
            match v {
                // checked while scanning
                Some(Val::Bytes(s)) => bb.append_value(String::from_utf8_lossy(s)),
                _ => bb.append_null(),
            }
        }
        (_, DataType::Binary) => put!(BinaryBuilder, |v| match v {
            Val::Bytes(s) => s,
            _ => b"",
        }),
        _ => return Err("unsupported column type".into()),
    }
    Ok(())
}
