//! A table format's snapshot (Delta, Iceberg) as a DataFusion table: the
//! data files its log or manifests name ([`velo_connectors::ListedFile`]),
//! scanned by DataFusion's Parquet scan as a listing table's are (in
//! parallel, byte ranges split over the cores, row groups and pages pruned
//! by the pushed-down predicates), with the files whose partition values
//! fail the query's filters left out before anything is read.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::listing::helpers::{expr_applicable_for_cols, filter_partitioned_file};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use velo_connectors::ListingSpec;

/// The data files of one snapshot, as a table with the source's columns.
#[derive(Debug)]
pub struct FileListTable {
    /// The source's columns, in its order.
    schema: SchemaRef,
    /// The columns the files hold.
    file_schema: SchemaRef,
    /// The columns the files' places give.
    partitions: Vec<FieldRef>,
    /// Column `i` of [`Self::schema`] is column `order[i]` of the files'
    /// columns followed by the partition columns.
    order: Vec<usize>,
    /// Where the files are (registered by the session that plans).
    store: ObjectStoreUrl,
    files: Vec<PartitionedFile>,
}

/// A [`FileListTable`] as a cluster's scheduler receives it: plain data
/// (the schemas as Arrow IPC, the files' paths and sizes, their partition
/// values as an Arrow IPC batch of one row per file, typed as they are),
/// so nothing but the table crosses the wire.
#[derive(serde::Serialize, serde::Deserialize)]
struct Wire {
    schema: Vec<u8>,
    file_schema: Vec<u8>,
    order: Vec<usize>,
    store: String,
    files: Vec<(String, u64)>,
    /// An IPC stream of one batch: the partition columns, a row a file.
    values: Vec<u8>,
}

/// `schema` as Arrow IPC bytes.
fn ipc_of(schema: &Schema) -> Vec<u8> {
    arrow::ipc::convert::IpcSchemaEncoder::new()
        .schema_to_fb(schema)
        .finished_data()
        .to_vec()
}

/// The schema [`ipc_of`] gave.
fn schema_of(bytes: &[u8]) -> Result<Schema> {
    let fb = arrow::ipc::root_as_schema(bytes).map_err(|e| {
        DataFusionError::Plan(format!(
            "a snapshot's table received with a bad schema: {e}"
        ))
    })?;
    Ok(arrow::ipc::convert::fb_to_schema(fb))
}

impl FileListTable {
    /// The table of `spec` (which lists its files), its store known to the
    /// session as `store`; `file_schema` as the scan reads it (with string
    /// views or not: [`super::listing::table`]).
    pub fn try_new(
        spec: &ListingSpec,
        file_schema: SchemaRef,
        store: ObjectStoreUrl,
    ) -> Result<Self> {
        let listed = spec.files.as_deref().unwrap_or_default();
        let partitions: Vec<FieldRef> = spec
            .partitions
            .iter()
            .map(|(n, t)| Arc::new(Field::new(n, t.clone(), true)))
            .collect();
        let scanned: Vec<FieldRef> = file_schema
            .fields()
            .iter()
            .cloned()
            .chain(partitions.iter().cloned())
            .collect();
        let (schema, order) = match &spec.columns {
            None => (
                Arc::new(Schema::new(scanned.clone())),
                (0..scanned.len()).collect(),
            ),
            Some(columns) => {
                let order = columns
                    .fields()
                    .iter()
                    .map(|c| {
                        scanned.iter().position(|f| f.name() == c.name()).ok_or_else(|| {
                            DataFusionError::Plan(format!(
                                "the column '{}' of {} is neither in its files nor a partition column",
                                c.name(),
                                spec.location
                            ))
                        })
                    })
                    .collect::<Result<Vec<usize>>>()?;
                let fields: Vec<FieldRef> = order.iter().map(|i| scanned[*i].clone()).collect();
                (Arc::new(Schema::new(fields)), order)
            }
        };
        let files = listed
            .iter()
            .map(|f| {
                let values = partition_values(&f.partition_values, &partitions, &spec.location)?;
                let mut pf = PartitionedFile::new(f.path.to_string(), f.size);
                pf.object_meta.location = f.path.clone();
                Ok(pf.with_partition_values(values))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            schema,
            file_schema,
            partitions,
            order,
            store,
            files,
        })
    }

    /// The table as bytes another process makes it again from
    /// ([`Self::from_bytes`]): a cluster's scheduler plans its scan.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let values = Arc::new(Schema::new(self.partitions.clone()));
        let columns = (0..self.partitions.len())
            .map(|c| match self.files.is_empty() {
                true => Ok(arrow::array::new_empty_array(
                    self.partitions[c].data_type(),
                )),
                false => ScalarValue::iter_to_array(
                    self.files.iter().map(|f| f.partition_values[c].clone()),
                ),
            })
            .collect::<Result<Vec<_>>>()?;
        let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(self.files.len()));
        let batch = arrow::array::RecordBatch::try_new_with_options(values, columns, &opts)?;
        let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema())?;
        w.write(&batch)?;
        let wire = Wire {
            schema: ipc_of(&self.schema),
            file_schema: ipc_of(&self.file_schema),
            order: self.order.clone(),
            store: self.store.as_str().to_string(),
            files: self
                .files
                .iter()
                .map(|f| (f.object_meta.location.to_string(), f.object_meta.size))
                .collect(),
            values: w.into_inner()?,
        };
        serde_json::to_vec(&wire).map_err(|e| DataFusionError::External(Box::new(e)))
    }

    /// The table [`Self::to_bytes`] gave.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |what: String| {
            DataFusionError::Plan(format!("a snapshot's table received with {what}"))
        };
        let w: Wire = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let mut values =
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(w.values), None)?;
        let values = values
            .next()
            .transpose()?
            .ok_or_else(|| bad("no partition values".into()))?;
        if values.num_rows() != w.files.len() {
            return Err(bad(format!(
                "{} rows of partition values for {} files",
                values.num_rows(),
                w.files.len()
            )));
        }
        let files = w
            .files
            .into_iter()
            .enumerate()
            .map(|(row, (path, size))| {
                let values = values
                    .columns()
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, row))
                    .collect::<Result<Vec<_>>>()?;
                let mut pf = PartitionedFile::new(path.clone(), size);
                pf.object_meta.location = object_store::path::Path::from(path);
                Ok(pf.with_partition_values(values))
            })
            .collect::<Result<Vec<_>>>()?;
        let schema = Arc::new(schema_of(&w.schema)?);
        let file_schema = Arc::new(schema_of(&w.file_schema)?);
        let partitions: Vec<FieldRef> = values.schema().fields().iter().cloned().collect();
        let width = file_schema.fields().len() + partitions.len();
        if w.order.len() != schema.fields().len() || w.order.iter().any(|i| *i >= width) {
            return Err(bad("columns that do not match its files".into()));
        }
        Ok(Self {
            schema,
            file_schema,
            partitions,
            order: w.order,
            store: ObjectStoreUrl::parse(&w.store)?,
            files,
        })
    }

    fn partition_names(&self) -> Vec<&str> {
        self.partitions.iter().map(|f| f.name().as_str()).collect()
    }
}

/// A file's partition values as the columns' types (the text a Delta log
/// keeps, cast as Delta readers do).
fn partition_values(
    text: &[Option<String>],
    partitions: &[FieldRef],
    location: &str,
) -> Result<Vec<ScalarValue>> {
    if text.len() != partitions.len() {
        return Err(DataFusionError::Plan(format!(
            "a data file of {location} has {} partition values for {} partition columns",
            text.len(),
            partitions.len()
        )));
    }
    partitions
        .iter()
        .zip(text)
        .map(|(f, v)| {
            let array: ArrayRef = Arc::new(StringArray::from(vec![v.clone()]));
            let typed = arrow::compute::cast(&array, f.data_type()).map_err(|e| {
                DataFusionError::Plan(format!(
                    "the partition value {v:?} of '{}' in {location} is not a {}: {e}",
                    f.name(),
                    f.data_type()
                ))
            })?;
            if v.is_some() && typed.is_null(0) {
                return Err(DataFusionError::Plan(format!(
                    "the partition value {v:?} of '{}' in {location} is not a {}",
                    f.name(),
                    f.data_type()
                )));
            }
            ScalarValue::try_from_array(&typed, 0)
        })
        .collect()
}

#[async_trait]
impl TableProvider for FileListTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let names = self.partition_names();
        Ok(filters
            .iter()
            .map(|f| {
                if !names.is_empty() && expr_applicable_for_cols(&names, f) {
                    // answered exactly by leaving the file out
                    TableProviderFilterPushDown::Exact
                } else {
                    // pushed into the Parquet scan by DataFusion's
                    // optimizer, and evaluated again above it
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // phase: leave out the files whose partition values fail the filters
        let names = self.partition_names();
        let on_partitions: Vec<Expr> = filters
            .iter()
            .filter(|f| !names.is_empty() && expr_applicable_for_cols(&names, f))
            .cloned()
            .collect();
        let partition_schema = DFSchema::try_from(Schema::new(self.partitions.clone()))?;
        let mut kept = Vec::with_capacity(self.files.len());
        for f in &self.files {
            if let Some(f) = filter_partitioned_file(f.clone(), &on_partitions, &partition_schema)?
            {
                kept.push(f);
            }
        }
        // phase: the columns asked for, in the source's order
        let indices: Vec<usize> = match projection {
            Some(p) => p.iter().map(|i| self.order[*i]).collect(),
            None => self.order.clone(),
        };
        if kept.is_empty() {
            let all: Vec<usize> = (0..self.schema.fields().len()).collect();
            let projected = self.schema.project(projection.unwrap_or(&all))?;
            return Ok(Arc::new(EmptyExec::new(Arc::new(projected))));
        }
        // phase: one Parquet scan over the files, spread over the cores
        let format = ParquetFormat::default();
        let source = format.file_source(
            TableSchema::builder(self.file_schema.clone())
                .with_table_partition_cols(self.partitions.clone())
                .build(),
        );
        let groups = FileGroup::new(kept).split_files(state.config().target_partitions().max(1));
        let config = FileScanConfigBuilder::new(self.store.clone(), source)
            .with_file_groups(groups)
            .with_projection_indices(Some(indices))?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::DataType;
    use datafusion::prelude::SessionContext;
    use velo_connectors::{ListedFile, ListingFormat};

    /// Two files with the column `v`; only the first is the snapshot's.
    fn files(dir: &std::path::Path) -> Vec<ListedFile> {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let mut listed = Vec::new();
        for (i, name) in ["a.parquet", "b.parquet"].iter().enumerate() {
            let path = dir.join(name);
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from(vec![
                    i as i64 * 10,
                    i as i64 * 10 + 1,
                ]))],
            )
            .unwrap();
            let f = std::fs::File::create(&path).unwrap();
            let mut w = parquet::arrow::ArrowWriter::try_new(f, schema.clone(), None).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
            listed.push(ListedFile {
                path: object_store::path::Path::from_absolute_path(&path).unwrap(),
                size: std::fs::metadata(&path).unwrap().len(),
                partition_values: vec![Some(format!("{}", i + 1))],
            });
        }
        listed
    }

    #[tokio::test]
    async fn only_the_listed_files_are_read_with_typed_partitions_in_the_sources_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut listed = files(dir.path());
        let spec = |files: Vec<ListedFile>| ListingSpec {
            location: "the table".into(),
            format: ListingFormat::Parquet,
            file_schema: Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)])),
            partitions: vec![("p".into(), DataType::Int32)],
            store: None,
            files: Some(files),
            files_root: None,
            columns: Some(Arc::new(Schema::new(vec![
                Field::new("p", DataType::Int32, true),
                Field::new("v", DataType::Int64, true),
            ]))),
        };
        let ctx = SessionContext::new();
        let all = FileListTable::try_new(
            &spec(listed.clone()),
            spec(vec![]).file_schema,
            ObjectStoreUrl::local_filesystem(),
        )
        .unwrap();
        // as a cluster's scheduler makes it again from its bytes
        let again = FileListTable::from_bytes(&all.to_bytes().unwrap()).unwrap();
        assert_eq!(again.schema, all.schema);
        let shown = |t: &FileListTable| format!("{:?} {:?}", t.files, t.store);
        assert_eq!(shown(&again), shown(&all));
        ctx.register_table("t", Arc::new(again)).unwrap();
        // bytes that are not a table are an error, not a panic
        assert!(FileListTable::from_bytes(b"{\"location\": 1}").is_err());
        assert!(FileListTable::from_bytes(b"").is_err());
        let rows = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
                arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string()
            }
        };
        // the partition column first, as the source has it, typed
        let got = rows("SELECT * FROM t ORDER BY v").await;
        assert!(got.contains("| p | v  |"), "{got}");
        assert!(got.contains("| 2 | 11 |"), "{got}");
        // a filter on the partition leaves the other file out
        let got = rows("SELECT v FROM t WHERE p = 2 ORDER BY v").await;
        assert_eq!(
            got.lines().filter(|l| l.starts_with("| 1")).count(),
            2,
            "{got}"
        );
        assert!(!got.contains("| 0"), "{got}");
        // only the listed files: the second one is not the snapshot's
        listed.truncate(1);
        let one = FileListTable::try_new(
            &spec(listed),
            spec(vec![]).file_schema,
            ObjectStoreUrl::local_filesystem(),
        )
        .unwrap();
        ctx.register_table("one", Arc::new(one)).unwrap();
        let got = rows("SELECT COUNT(*) AS n, MAX(v) AS m FROM one").await;
        assert!(got.contains("| 2 | 1 |"), "{got}");
        // a partition value that is not of its column's type
        let mut bad = files(dir.path());
        bad[0].partition_values = vec![Some("x".into())];
        let e = FileListTable::try_new(
            &spec(bad),
            spec(vec![]).file_schema,
            ObjectStoreUrl::local_filesystem(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("is not a Int32"), "{e}");
    }
}
