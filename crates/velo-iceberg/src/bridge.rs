//! The hand-over of batches and schemas between the engine's Arrow (59) and
//! iceberg-rust's (58), through the Arrow C Data Interface.
//!
//! Why the C Data Interface and not Arrow IPC bytes: it is zero-copy (the
//! buffers change owner, nothing is serialized), so a backfill that scans
//! an Iceberg table or writes one pays nothing for the two Arrow versions;
//! and it is the interface Arrow defines for exactly this case, two Arrow
//! implementations in one process. The price is `unsafe`, confined to this
//! module: each `FFI_*` struct is `#[repr(C)]` with the layout the
//! interface fixes, so a value exported by one version is a valid value of
//! the other's type, and it is moved (not copied) across, so its release
//! callback runs exactly once. Every import validates the data against the
//! schema, as arrow's `from_ffi` does for any foreign producer.
//!
//! Nothing outside this module touches an arrow-58 type except through
//! iceberg's own API: the rest of the crate hands arrow-59 values in and
//! gets arrow-59 values out.
#![allow(unsafe_code)]

use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StructArray};
use arrow::datatypes::{Schema, SchemaRef};
use arrow_array_58 as a58;
use arrow_schema_58 as s58;

/// An Arrow 58 record batch (iceberg's).
pub type Batch58 = a58::RecordBatch;
/// An Arrow 58 schema (iceberg's).
pub type Schema58 = s58::Schema;

/// Why a hand-over failed: a type one version cannot represent.
#[derive(Debug)]
pub struct BridgeError(String);

impl std::fmt::Display for BridgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Arrow hand-over to Iceberg: {}", self.0)
    }
}

impl std::error::Error for BridgeError {}

fn err(e: impl std::fmt::Display) -> BridgeError {
    BridgeError(e.to_string())
}

// The interface's structs have one layout in both versions; a mismatch in
// size would be a different ABI, caught here at compile time.
const _: () = {
    assert!(
        std::mem::size_of::<arrow::ffi::FFI_ArrowArray>()
            == std::mem::size_of::<arrow_data_58::ffi::FFI_ArrowArray>()
    );
    assert!(
        std::mem::size_of::<arrow::ffi::FFI_ArrowSchema>()
            == std::mem::size_of::<s58::ffi::FFI_ArrowSchema>()
    );
};

/// Moves an exported 59 schema into 58's type (the same C struct).
fn schema_to_58(s: arrow::ffi::FFI_ArrowSchema) -> s58::ffi::FFI_ArrowSchema {
    // SAFETY: both are the C Data Interface's `struct ArrowSchema`
    // (`#[repr(C)]`, same size asserted above); the value is moved, so its
    // release callback is owned by the result alone.
    unsafe { std::mem::transmute::<arrow::ffi::FFI_ArrowSchema, s58::ffi::FFI_ArrowSchema>(s) }
}

/// Moves an exported 58 schema into 59's type.
fn schema_to_59(s: s58::ffi::FFI_ArrowSchema) -> arrow::ffi::FFI_ArrowSchema {
    // SAFETY: as in `schema_to_58`.
    unsafe { std::mem::transmute::<s58::ffi::FFI_ArrowSchema, arrow::ffi::FFI_ArrowSchema>(s) }
}

/// A schema of the engine as iceberg's Arrow schema (metadata kept: the
/// Parquet field ids iceberg maps columns by travel in it).
pub fn schema_to_iceberg(schema: &Schema) -> Result<Schema58, BridgeError> {
    let ffi = arrow::ffi::FFI_ArrowSchema::try_from(schema).map_err(err)?;
    Schema58::try_from(&schema_to_58(ffi)).map_err(err)
}

/// An iceberg Arrow schema as the engine's.
pub fn schema_from_iceberg(schema: &Schema58) -> Result<Schema, BridgeError> {
    let ffi = s58::ffi::FFI_ArrowSchema::try_from(schema).map_err(err)?;
    Schema::try_from(&schema_to_59(ffi)).map_err(err)
}

/// A batch of the engine as a batch of iceberg's, with `schema` (iceberg's
/// view of the same columns: its field ids in the metadata). Zero-copy.
pub fn batch_to_iceberg(
    batch: &RecordBatch,
    schema: &Arc<Schema58>,
) -> Result<Batch58, BridgeError> {
    let rows = batch.num_rows();
    if batch.num_columns() == 0 {
        let opts = a58::RecordBatchOptions::new().with_row_count(Some(rows));
        return Batch58::try_new_with_options(schema.clone(), Vec::new(), &opts).map_err(err);
    }
    let data = StructArray::from(batch.clone()).into_data();
    let (array, ffi_schema) = arrow::ffi::to_ffi(&data).map_err(err)?;
    // SAFETY: the C struct `ArrowArray` in both versions (size asserted
    // above), moved so that only the importer releases it.
    let array = unsafe {
        std::mem::transmute::<arrow::ffi::FFI_ArrowArray, arrow_data_58::ffi::FFI_ArrowArray>(array)
    };
    let ffi_schema = schema_to_58(ffi_schema);
    // SAFETY: `array` and `ffi_schema` were exported together just above by
    // a conforming producer (arrow 59); `from_ffi` validates the buffers.
    let data = unsafe { a58::ffi::from_ffi(array, &ffi_schema) }.map_err(err)?;
    let columns = a58::StructArray::from(data).into_parts().1;
    Batch58::try_new(schema.clone(), columns).map_err(err)
}

/// A batch of iceberg's as one of the engine's, with `schema`. Zero-copy.
pub fn batch_from_iceberg(batch: &Batch58, schema: &SchemaRef) -> Result<RecordBatch, BridgeError> {
    let rows = batch.num_rows();
    if batch.num_columns() == 0 {
        let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        return RecordBatch::try_new_with_options(schema.clone(), Vec::new(), &opts).map_err(err);
    }
    let data = a58::Array::into_data(a58::StructArray::from(batch.clone()));
    let (array, ffi_schema) = a58::ffi::to_ffi(&data).map_err(err)?;
    // SAFETY: as in `batch_to_iceberg`, in the other direction.
    let array = unsafe {
        std::mem::transmute::<arrow_data_58::ffi::FFI_ArrowArray, arrow::ffi::FFI_ArrowArray>(array)
    };
    let ffi_schema = schema_to_59(ffi_schema);
    // SAFETY: exported together just above by arrow 58; validated on import.
    let data = unsafe { arrow::ffi::from_ffi(array, &ffi_schema) }.map_err(err)?;
    let columns = StructArray::from(data).into_parts().1;
    RecordBatch::try_new(schema.clone(), columns).map_err(err)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use arrow::array::{
        ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array,
        ListArray, StringArray, StringViewArray, TimestampMicrosecondArray,
    };
    use arrow::datatypes::{DataType, Field, Int32Type, TimeUnit};

    use super::*;

    fn sample() -> RecordBatch {
        let ts = TimestampMicrosecondArray::from(vec![Some(1_700_000_000_000_000), None, Some(0)])
            .with_timezone("UTC");
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
            Some(vec![]),
        ]);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1), None, Some(-3)])),
            Arc::new(Int32Array::from(vec![7, 8, 9])),
            Arc::new(Float64Array::from(vec![1.5, f64::NAN, -0.0])),
            Arc::new(StringArray::from(vec![Some("a"), None, Some("ünï")])),
            Arc::new(StringViewArray::from(vec![
                Some("a string longer than twelve bytes"),
                Some("b"),
                None,
            ])),
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            Arc::new(Date32Array::from(vec![19000, 0, -1])),
            Arc::new(ts),
            Arc::new(
                Decimal128Array::from(vec![Some(12345), None, Some(-1)])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
            Arc::new(list),
        ];
        let mut id = Field::new("id", DataType::Int64, true);
        id.set_metadata(HashMap::from([(
            "PARQUET:field_id".to_string(),
            "1".to_string(),
        )]));
        let fields = vec![
            id,
            Field::new("n", DataType::Int32, false),
            Field::new("x", DataType::Float64, false),
            Field::new("s", DataType::Utf8, true),
            Field::new("v", DataType::Utf8View, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("d", DataType::Date32, false),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("m", DataType::Decimal128(10, 2), true),
            Field::new(
                "l",
                DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true))),
                true,
            ),
        ];
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    /// Every type the engine produces crosses to iceberg's Arrow and back
    /// unchanged (values, nulls, field metadata), also for a slice.
    #[test]
    fn batches_cross_both_ways_unchanged() {
        let b = sample();
        for b in [b.clone(), b.slice(1, 2)] {
            let s58 = Arc::new(schema_to_iceberg(&b.schema()).unwrap());
            assert_eq!(
                s58.field(0).metadata().get("PARQUET:field_id"),
                Some(&"1".to_string())
            );
            let there = batch_to_iceberg(&b, &s58).unwrap();
            assert_eq!(there.num_rows(), b.num_rows());
            assert_eq!(there.num_columns(), b.num_columns());
            let back = batch_from_iceberg(&there, &b.schema()).unwrap();
            assert_eq!(back, b);
            assert_eq!(schema_from_iceberg(&s58).unwrap(), *b.schema());
        }
    }

    #[test]
    fn an_empty_projection_keeps_its_row_count() {
        let schema = Arc::new(Schema::empty());
        let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(5));
        let b = RecordBatch::try_new_with_options(schema.clone(), Vec::new(), &opts).unwrap();
        let s58 = Arc::new(schema_to_iceberg(&schema).unwrap());
        let there = batch_to_iceberg(&b, &s58).unwrap();
        assert_eq!(there.num_rows(), 5);
        assert_eq!(batch_from_iceberg(&there, &schema).unwrap().num_rows(), 5);
    }
}
