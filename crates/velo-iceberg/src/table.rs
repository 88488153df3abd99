//! A table's schema as the engine sees it, a new table from the query's
//! columns, and what a table says about the epochs a job committed.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use iceberg::spec::{Schema as IcebergSchema, Transform, UnboundPartitionSpec};
use iceberg::table::Table;
use iceberg::{Catalog, TableCreation};
use velo_connectors::{ConnectorError, Result};

use crate::bridge;
use crate::catalog::TableRef;
use crate::config::PartitionField;

/// The snapshot summary key naming the job that committed a snapshot.
pub const JOB_KEY: &str = "velo.job";
/// The snapshot summary key holding the epoch a snapshot commits.
pub const EPOCH_KEY: &str = "velo.epoch";

/// The table property recording a job's last committed epoch (kept when
/// the snapshots that carry it are expired).
pub fn epoch_property(job: &str) -> String {
    format!("velo.epoch.{job}")
}

/// A table's current schema in both Arrow versions (field ids in the
/// metadata, as iceberg's writers and readers map columns by them).
#[derive(Clone)]
pub struct Columns {
    /// The engine's view.
    pub arrow: SchemaRef,
    /// Iceberg's view of the same.
    pub arrow58: Arc<bridge::Schema58>,
    /// The engine's view with every column nullable: the batches a sink
    /// assembles (required columns are checked row by row first).
    pub relaxed: SchemaRef,
}

impl Columns {
    /// The current schema of `table`.
    pub fn of(table: &Table, t: &TableRef) -> Result<Self> {
        Self::of_schema(table.metadata().current_schema(), t)
    }

    /// The columns of `schema`.
    pub fn of_schema(schema: &IcebergSchema, t: &TableRef) -> Result<Self> {
        let arrow58 = iceberg::arrow::schema_to_arrow_schema(schema)
            .map_err(|e| t.error("read the schema of", &e))?;
        let arrow =
            bridge::schema_from_iceberg(&arrow58).map_err(|e| t.error("read the schema of", &e))?;
        Ok(Self {
            relaxed: velo_connectors::source::relaxed(&arrow),
            arrow: Arc::new(arrow),
            arrow58: Arc::new(arrow58),
        })
    }
}

/// The last epoch `job` committed to `table`: the larger of the table
/// property and the `velo.epoch` of its snapshots by the job.
pub fn committed_epoch(table: &Table, job: &str) -> Option<u64> {
    let meta = table.metadata();
    let from_property = meta
        .properties()
        .get(&epoch_property(job))
        .and_then(|v| v.parse::<u64>().ok());
    let from_snapshots = meta
        .snapshots()
        .filter(|s| {
            s.summary()
                .additional_properties
                .get(JOB_KEY)
                .map(String::as_str)
                == Some(job)
        })
        .filter_map(|s| {
            s.summary()
                .additional_properties
                .get(EPOCH_KEY)?
                .parse::<u64>()
                .ok()
        })
        .max();
    from_property.max(from_snapshots)
}

/// The table, or a new one with the query's columns and `partition_by`
/// (its namespace created when missing).
pub async fn load_or_create(
    catalog: &dyn Catalog,
    t: &TableRef,
    query: &Schema,
    partition_by: &[PartitionField],
) -> Result<Table> {
    if catalog
        .table_exists(&t.ident)
        .await
        .map_err(|e| t.error("look up", &e))?
    {
        return catalog
            .load_table(&t.ident)
            .await
            .map_err(|e| t.error("load", &e));
    }
    let schema = iceberg_schema(query)?;
    let spec = partition_spec(&schema, partition_by)?;
    if !catalog
        .namespace_exists(t.namespace())
        .await
        .map_err(|e| t.error("look up the namespace of", &e))?
    {
        match catalog
            .create_namespace(t.namespace(), HashMap::new())
            .await
        {
            Ok(_) => {}
            // another writer created it first
            Err(e) if e.to_string().to_ascii_lowercase().contains("exist") => {}
            Err(e) => return Err(t.error("create the namespace of", &e)),
        }
    }
    let creation = TableCreation::builder()
        .name(t.ident.name().to_string())
        .schema(schema)
        .partition_spec(spec)
        .properties([(
            "write.parquet.compression-codec".to_string(),
            "zstd".to_string(),
        )])
        .build();
    match catalog.create_table(t.namespace(), creation).await {
        Ok(table) => {
            tracing::info!("created the Iceberg table {}", t.shown);
            Ok(table)
        }
        Err(e) if e.to_string().to_ascii_lowercase().contains("exist") => catalog
            .load_table(&t.ident)
            .await
            .map_err(|e| t.error("load", &e)),
        Err(e) => Err(t.error("create", &e)),
    }
}

/// The query's columns as an Iceberg schema (new field ids), with each
/// type in its Iceberg form ([`iceberg_type`]).
pub fn iceberg_schema(query: &Schema) -> Result<IcebergSchema> {
    let fields: Vec<Field> = query
        .fields()
        .iter()
        .filter(|f| f.name() != velo_connectors::sink::OP_COLUMN)
        .map(|f| {
            iceberg_type(f.data_type())
                .map(|t| Field::new(f.name(), t, f.is_nullable()))
                .map_err(|why| {
                    ConnectorError::Other(format!(
                        "the column '{}' of type {} has no Iceberg type ({why}); CAST it in the SELECT",
                        f.name(),
                        f.data_type()
                    ))
                })
        })
        .collect::<Result<_>>()?;
    let arrow58 = bridge::schema_to_iceberg(&Schema::new(fields))
        .map_err(|e| ConnectorError::Other(e.to_string()))?;
    iceberg::arrow::arrow_schema_to_schema_auto_assign_ids(&arrow58).map_err(|e| {
        ConnectorError::Other(format!("the query's columns have no Iceberg schema: {e}"))
    })
}

/// The Arrow type an Iceberg column of `t` is written from: strings and
/// binaries of every layout as Utf8 and Binary, timestamps in microseconds
/// (Iceberg v2's unit), small integers widened. Unsigned 64-bit integers
/// have no Iceberg type.
pub fn iceberg_type(t: &DataType) -> std::result::Result<DataType, String> {
    use DataType::*;
    Ok(match t {
        Boolean | Int32 | Int64 | Float32 | Float64 | Date32 | Utf8 | Binary => t.clone(),
        Int8 | Int16 | UInt8 | UInt16 => Int32,
        UInt32 => Int64,
        UInt64 => return Err("unsigned 64-bit; CAST to BIGINT or DECIMAL(20, 0)".into()),
        Float16 => Float32,
        Utf8View | LargeUtf8 => Utf8,
        BinaryView | LargeBinary => Binary,
        FixedSizeBinary(_) => t.clone(),
        Timestamp(_, tz) => Timestamp(TimeUnit::Microsecond, tz.clone()),
        Date64 => Timestamp(TimeUnit::Microsecond, None),
        Time32(_) | Time64(_) => Time64(TimeUnit::Microsecond),
        Decimal128(p, s) if *p <= 38 => Decimal128(*p, *s),
        Decimal32(p, s) | Decimal64(p, s) => Decimal128(*p, *s),
        Dictionary(_, v) => iceberg_type(v)?,
        List(f) | LargeList(f) | ListView(f) | LargeListView(f) | FixedSizeList(f, _) => {
            List(Arc::new(Field::new(
                f.name(),
                iceberg_type(f.data_type())?,
                f.is_nullable(),
            )))
        }
        Struct(fs) => Struct(Fields::from(
            fs.iter()
                .map(|f| {
                    iceberg_type(f.data_type()).map(|t| Field::new(f.name(), t, f.is_nullable()))
                })
                .collect::<std::result::Result<Vec<_>, _>>()?,
        )),
        Map(entries, sorted) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return Err("a map without key and value".into());
            };
            let kv = iceberg_type(&DataType::Struct(kv.clone()))?;
            Map(
                Arc::new(Field::new(entries.name(), kv, entries.is_nullable())),
                *sorted,
            )
        }
        other => return Err(format!("{other} is not supported")),
    })
}

/// `partition_by` as a spec of `schema`'s columns.
fn partition_spec(
    schema: &IcebergSchema,
    partition_by: &[PartitionField],
) -> Result<UnboundPartitionSpec> {
    let mut b = UnboundPartitionSpec::builder();
    for p in partition_by {
        let field = schema.field_by_name(&p.column).ok_or_else(|| {
            ConnectorError::Other(format!(
                "partition_by names '{}', which the query does not produce; its columns are: {}",
                p.column,
                schema
                    .as_struct()
                    .fields()
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if p.transform != Transform::Identity && p.transform.result_type(&field.field_type).is_err()
        {
            return Err(ConnectorError::Other(format!(
                "partition_by: {} cannot apply to the column '{}' of type {}",
                p.transform, p.column, field.field_type
            )));
        }
        b = b
            .add_partition_field(field.id, p.name(), p.transform)
            .map_err(|e| ConnectorError::Other(format!("partition_by: {e}")))?;
    }
    Ok(b.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_types_take_their_iceberg_form() {
        assert_eq!(iceberg_type(&DataType::Utf8View).unwrap(), DataType::Utf8);
        assert_eq!(
            iceberg_type(&DataType::Timestamp(
                TimeUnit::Nanosecond,
                Some("UTC".into())
            ))
            .unwrap(),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(iceberg_type(&DataType::Int16).unwrap(), DataType::Int32);
        let e = iceberg_type(&DataType::UInt64).unwrap_err();
        assert!(e.contains("BIGINT"), "{e}");
        let q = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8View, true),
            Field::new("_op", DataType::Utf8, false),
        ]);
        let s = iceberg_schema(&q).unwrap();
        assert_eq!(
            s.as_struct().fields().len(),
            2,
            "the changelog's _op is not a column"
        );
        assert!(s.field_by_name("id").unwrap().required);
    }

    #[test]
    fn partition_specs_check_their_columns() {
        let q = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]);
        let s = iceberg_schema(&q).unwrap();
        let by = crate::config::parse_partition_by("day(ts), bucket(8, id)").unwrap();
        let spec = partition_spec(&s, &by).unwrap();
        assert_eq!(spec.fields().len(), 2);
        let e = partition_spec(&s, &crate::config::parse_partition_by("day(x)").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("'x'") && e.contains("id, ts"), "{e}");
        let e = partition_spec(&s, &crate::config::parse_partition_by("day(id)").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot apply"), "{e}");
    }
}
