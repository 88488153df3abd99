//! # velo-formats: message and object values to Arrow
//!
//! Where it sits: between a connector that reads bytes (a Kafka message, an
//! object or a Redis value) and the engine's Arrow batches. [`value`] turns
//! a set of values into one batch at a time (arrow-json, arrow-avro with the
//! Confluent wire format and a [`schema_registry`] or an inline schema,
//! [`protobuf`] with a descriptor set, raw string/bytes), setting aside the
//! values that cannot be decoded so that the connector routes them as bad
//! records. Connectors depend on this crate; it depends on no connector SDK.

pub mod error;
pub mod protobuf;
pub mod schema_registry;
pub mod value;

pub use error::FormatError;
pub use value::{Decoded, Format, ValueDecoder};
