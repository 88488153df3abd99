//! Reading one data file of a Delta table as the table's rows: the Parquet
//! file streamed from the table's store (range requests: the footer, then
//! the row groups), with the partition columns (kept in the log, not in the
//! file) filled in, and columns older files lack (added later by schema
//! evolution) as nulls.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, new_null_array};
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use velo_connectors::{ConnectorError, Result};

/// A data file: its path in the table's store, its partition values and
/// its size.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFile {
    /// Relative to the table's root (as in the log, URL-decoded).
    pub path: String,
    /// Partition column -> value (`None`: null).
    pub partitions: HashMap<String, Option<String>>,
    /// Bytes.
    pub size: u64,
}

/// What of a file to read: the columns (by name; `None`: all) and the
/// query's filters, to skip row groups by their statistics.
#[derive(Default, Clone)]
pub struct Scan {
    /// Columns the query reads; the others come back null.
    pub columns: Option<Vec<String>>,
    /// The query's filters.
    pub pruning: Option<Arc<dyn velo_connectors::source::Pruning>>,
}

/// The rows of `file` as batches of `schema` (the table's), from row `skip`
/// on, `batch_size` rows at a time.
pub async fn stream(
    store: Arc<dyn ObjectStore>,
    file: &DataFile,
    schema: SchemaRef,
    batch_size: usize,
    skip: usize,
) -> Result<BoxStream<'static, Result<RecordBatch>>> {
    scan(store, file, schema, batch_size, skip, &Scan::default()).await
}

/// [`stream`], reading only what `scan` asks for: the projected column
/// chunks of the row groups the filters may keep.
pub async fn scan(
    store: Arc<dyn ObjectStore>,
    file: &DataFile,
    schema: SchemaRef,
    batch_size: usize,
    skip: usize,
    scan: &Scan,
) -> Result<BoxStream<'static, Result<RecordBatch>>> {
    let path = Path::parse(&file.path).unwrap_or_else(|_| Path::from(file.path.as_str()));
    let shown = file.path.clone();
    let failed = move |e: parquet::errors::ParquetError| {
        ConnectorError::Other(format!("cannot read the data file {shown}: {e}"))
    };
    let reader = ObjectFile {
        store,
        path,
        size: file.size,
    };
    let mut b = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(&failed)?
        .with_batch_size(batch_size.max(1));
    if let Some(cols) = &scan.columns {
        let roots: Vec<usize> = b
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| cols.iter().any(|c| c == f.name()))
            .map(|(i, _)| i)
            .collect();
        let mask = parquet::arrow::ProjectionMask::roots(b.parquet_schema(), roots);
        b = b.with_projection(mask);
    }
    if let Some(keep) = scan
        .pruning
        .as_ref()
        .and_then(|p| p.row_groups(b.schema(), b.metadata()))
        .filter(|k| k.len() == b.metadata().num_row_groups())
    {
        let groups: Vec<usize> = (0..keep.len()).filter(|i| keep[*i]).collect();
        b = b.with_row_groups(groups);
    }
    if skip > 0 {
        b = b.with_offset(skip);
    }
    let rows = b.build().map_err(&failed)?;
    let partitions = file.partitions.clone();
    Ok(rows
        .map(move |r| {
            let batch = r.map_err(&failed)?;
            as_table_rows(batch, &schema, &partitions)
        })
        .boxed())
}

/// `batch` of a data file as rows of `schema`: by name, cast where the file
/// has another type, partition values filled in, missing columns null.
pub fn as_table_rows(
    batch: RecordBatch,
    schema: &SchemaRef,
    partitions: &HashMap<String, Option<String>>,
) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let cols = schema
        .fields()
        .iter()
        .map(|f| -> Result<ArrayRef> {
            if let Some(v) = partitions.get(f.name()) {
                let text: ArrayRef = Arc::new(StringArray::from(vec![v.clone(); n]));
                return arrow::compute::cast(&text, f.data_type()).map_err(|e| {
                    ConnectorError::Other(format!(
                        "the partition value {v:?} of '{}' is not a {}: {e}",
                        f.name(),
                        f.data_type()
                    ))
                });
            }
            match batch.column_by_name(f.name()) {
                Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
                Some(c) => arrow::compute::cast(c, f.data_type()).map_err(ConnectorError::from),
                None => Ok(new_null_array(f.data_type(), n)),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(n));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        cols,
        &opts,
    )?)
}

/// A Parquet file in an object store, read with range requests: the footer
/// (its size known from the log), then the column chunks the reader asks
/// for.
struct ObjectFile {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

fn parquet_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectFile {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}
