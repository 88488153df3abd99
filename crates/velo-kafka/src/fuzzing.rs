//! Fuzzing entry point of the Kafka value decoders (`fuzz/`, and the
//! regression test that replays its corpus): arbitrary bytes as message
//! values, an Avro schema or a Protobuf descriptor set. Decoding may fail,
//! record by record or as a whole; it must never panic, hang or abort.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema};
use prost::Message;

use velo_formats::protobuf::ProtoDecoder;
use velo_formats::value::{AvroState, ValueDecoder};

/// The Avro schema of the decoder under test: scalars, a nullable union,
/// an array, a map, an enum and a nested record.
const AVRO_SCHEMA: &str = r#"{"type":"record","name":"Order","fields":[
 {"name":"id","type":"long"},{"name":"name","type":"string"},
 {"name":"amount","type":["null","double"],"default":null},
 {"name":"tags","type":{"type":"array","items":"string"}},
 {"name":"attrs","type":{"type":"map","values":"int"}},
 {"name":"state","type":{"type":"enum","name":"State","symbols":["NEW","PAID"]}},
 {"name":"addr","type":{"type":"record","name":"Addr","fields":[{"name":"city","type":"string"}]}}]}"#;

/// A descriptor set with a flat message and a nested one (lists, maps, a
/// message field), as `protoc --descriptor_set_out` writes it.
static DESCRIPTOR: LazyLock<Vec<u8>> = LazyLock::new(|| {
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{
        DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    };
    let field = |name: &str, number: i32, ty: Type, label: Label, type_name: Option<&str>| {
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            r#type: Some(ty as i32),
            label: Some(label as i32),
            type_name: type_name.map(str::to_string),
            ..Default::default()
        }
    };
    let flat = DescriptorProto {
        name: Some("Flat".into()),
        field: vec![
            field("id", 1, Type::Int64, Label::Optional, None),
            field("name", 2, Type::String, Label::Optional, None),
            field("amount", 3, Type::Double, Label::Optional, None),
            field("ok", 4, Type::Bool, Label::Optional, None),
            field("n", 5, Type::Sint32, Label::Optional, None),
        ],
        ..Default::default()
    };
    let nested = DescriptorProto {
        name: Some("Nested".into()),
        field: vec![
            field("id", 1, Type::Int64, Label::Optional, None),
            field("items", 2, Type::Message, Label::Repeated, Some(".fz.Flat")),
            field("tags", 3, Type::String, Label::Repeated, None),
            field("one", 4, Type::Message, Label::Optional, Some(".fz.Flat")),
        ],
        ..Default::default()
    };
    let file = FileDescriptorProto {
        name: Some("fz.proto".into()),
        package: Some("fz".into()),
        syntax: Some("proto3".into()),
        message_type: vec![flat, nested],
        ..Default::default()
    };
    FileDescriptorSet { file: vec![file] }.encode_to_vec()
});

/// Message payloads from `data`: each is a length byte and that many bytes.
fn payloads(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&n, rest)) = data.split_first() {
        let n = (n as usize).min(rest.len());
        out.push(&rest[..n]);
        data = &rest[n..];
    }
    out
}

/// One fuzz input: its first byte chooses what the rest is.
pub fn values(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => {
            let schema = Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("name", DataType::Utf8, true),
                Field::new(
                    "xs",
                    DataType::List(Arc::new(Field::new("item", DataType::Float64, true))),
                    true,
                ),
            ]));
            let ps: Vec<Option<&[u8]>> = payloads(rest).into_iter().map(Some).collect();
            let _ = ValueDecoder::json(schema, 64).decode(&ps);
            let _ = velo_formats::value::infer_json(
                &ps.iter().flatten().map(|p| p.to_vec()).collect::<Vec<_>>(),
            );
        }
        1 => {
            if let Ok(state) = AvroState::inline(AVRO_SCHEMA.to_string(), 64) {
                let ps: Vec<Option<&[u8]>> = payloads(rest).into_iter().map(Some).collect();
                let _ = ValueDecoder::Avro(Box::new(state)).decode(&ps);
            }
        }
        2 | 3 => {
            let message = if which % 6 == 2 {
                "fz.Flat"
            } else {
                "fz.Nested"
            };
            if let Ok(d) = ProtoDecoder::new(&DESCRIPTOR, message, "fuzz") {
                let _ = d.decode(&payloads(rest));
            }
        }
        // a user's Avro schema file
        4 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = AvroState::inline(text.to_string(), 8);
            }
        }
        // a user's descriptor set
        _ => {
            let _ = ProtoDecoder::new(rest, "fz.Flat", "fuzz");
        }
    }
}
