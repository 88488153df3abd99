//! New data files of a table: rows in the table's columns and types,
//! split by its partition spec, rolled over at `target_file_size`, zstd
//! Parquet with column statistics by field id (iceberg-rust's writers).
//! The sink's epochs, its upserts and compaction all write through here.

use arrow::array::{Array, ArrayRef, RecordBatch, new_null_array};
use iceberg::arrow::RecordBatchPartitionSplitter;
use iceberg::spec::{DataFile, DataFileFormat};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::{DataFileWriter, DataFileWriterBuilder};
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use velo_connectors::{ConnectorError, Result};

use crate::bridge;
use crate::catalog::TableRef;
use crate::table::Columns;

type Builder =
    DataFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>;
type PlainWriter =
    DataFileWriter<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>;

/// Open data files.
pub enum Writer {
    /// An unpartitioned table: one rolling file.
    Plain(Box<PlainWriter>),
    /// A partitioned table: rows split by the spec, a file per partition.
    Parted {
        /// A rolling file per partition.
        fanout: Box<FanoutWriter<Builder>>,
        /// Computes each row's partition.
        splitter: Box<RecordBatchPartitionSplitter>,
    },
}

impl Writer {
    /// Files named `{prefix}-{suffix}-*.parquet` in the table's data
    /// folder, with its current schema and default spec.
    pub async fn new(
        table: &Table,
        t: &TableRef,
        target_file_size: u64,
        prefix: String,
        suffix: String,
    ) -> Result<Self> {
        let meta = table.metadata();
        let props = parquet_58::file::properties::WriterProperties::builder()
            .set_compression(parquet_58::basic::Compression::ZSTD(Default::default()))
            .build();
        let parquet = ParquetWriterBuilder::new(props, meta.current_schema().clone());
        let locations = DefaultLocationGenerator::new(meta).map_err(|e| t.error("write to", &e))?;
        let names = DefaultFileNameGenerator::new(prefix, Some(suffix), DataFileFormat::Parquet);
        let rolling = RollingFileWriterBuilder::new(
            parquet,
            target_file_size as usize,
            table.file_io().clone(),
            locations,
            names,
        );
        let builder = DataFileWriterBuilder::new(rolling);
        let spec = meta.default_partition_spec();
        if spec.is_unpartitioned() {
            let w = builder
                .build(None)
                .await
                .map_err(|e| t.error("write to", &e))?;
            return Ok(Writer::Plain(Box::new(w)));
        }
        let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(
            meta.current_schema().clone(),
            spec.clone(),
        )
        .map_err(|e| t.error("partition the rows of", &e))?;
        Ok(Writer::Parted {
            fanout: Box::new(FanoutWriter::new(builder)),
            splitter: Box::new(splitter),
        })
    }

    /// Writes rows of the table's schema.
    pub async fn write(&mut self, rows: bridge::Batch58, t: &TableRef) -> Result<()> {
        match self {
            Writer::Plain(w) => w.write(rows).await.map_err(|e| t.error("write to", &e)),
            Writer::Parted { fanout, splitter } => {
                let parts = splitter
                    .split(&rows)
                    .map_err(|e| t.error("partition the rows of", &e))?;
                for (key, part) in parts {
                    fanout
                        .write(key, part)
                        .await
                        .map_err(|e| t.error("write to", &e))?;
                }
                Ok(())
            }
        }
    }

    /// Finishes the files; returns those holding rows.
    pub async fn close(self, t: &TableRef) -> Result<Vec<DataFile>> {
        let files = match self {
            Writer::Plain(mut w) => w.close().await,
            Writer::Parted { fanout, .. } => fanout.close().await,
        }
        .map_err(|e| t.error("finish the data files of", &e))?;
        Ok(files.into_iter().filter(|f| f.record_count() > 0).collect())
    }
}

/// A batch of the engine as a batch of the table: its columns in the
/// table's order and types, absent ones null; a NULL in a required column
/// is refused.
pub fn to_table_batch(
    batch: &RecordBatch,
    columns: &Columns,
    t: &TableRef,
) -> Result<bridge::Batch58> {
    let schema = &columns.arrow;
    let arrays: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => arrow::compute::cast(c, f.data_type()).map_err(|e| {
                ConnectorError::Other(format!(
                    "the column '{}' ({}) cannot be written as {} to the Iceberg table {}: {e}",
                    f.name(),
                    c.data_type(),
                    f.data_type(),
                    t.shown
                ))
            }),
        })
        .collect::<Result<_>>()?;
    for (f, a) in schema.fields().iter().zip(&arrays) {
        if !f.is_nullable() && a.null_count() > 0 {
            return Err(ConnectorError::Other(format!(
                "the column '{}' is required in the Iceberg table {}, and the query produced a NULL for it: filter or COALESCE it",
                f.name(),
                t.shown
            )));
        }
    }
    let batch = RecordBatch::try_new(columns.relaxed.clone(), arrays)
        .map_err(|e| ConnectorError::Internal(format!("a batch for the Iceberg table: {e}")))?;
    bridge::batch_to_iceberg(&batch, &columns.arrow58)
        .map_err(|e| ConnectorError::Other(e.to_string()))
}
