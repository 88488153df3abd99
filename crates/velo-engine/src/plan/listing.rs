//! A bounded source as a DataFusion table ([`velo_connectors::ListingSpec`]):
//! a listing table of its files, or a table snapshot's data files
//! ([`super::files::FileListTable`]); the same files (path, directory or
//! glob), columns and `key=value` partition columns, read by DataFusion's
//! own scans (parallel, partitions pruned, Parquet predicates pushed down)
//! — in this process ([`super::batch`]) or on a cluster's executors
//! ([`super::cluster`]).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::Column;
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, cast};
use velo_connectors::{ListingFormat, ListingSpec};

/// Where `spec`'s files are, as DataFusion lists them. DataFusion takes a
/// glob in a path only; in a URL (`s3://bucket/orders/**/*.parquet`) the
/// glob after the last `/` before its first wildcard is split off here.
pub fn url(spec: &ListingSpec) -> datafusion::error::Result<ListingTableUrl> {
    let at = &spec.location;
    let wild = at.find(['*', '?', '[']);
    match (spec.store.is_some(), wild) {
        (true, Some(w)) => {
            let cut = at[..w].rfind('/').map_or(0, |i| i + 1);
            let base = url::Url::parse(&at[..cut])
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            let glob = glob::Pattern::new(&at[cut..])
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            ListingTableUrl::try_new(base, Some(glob))
        }
        _ => ListingTableUrl::parse(at),
    }
}

/// `spec` as a table DataFusion scans itself: a listing table of the
/// files under its location, or the listed files of a table snapshot
/// ([`super::files`], whose store the session knows as `store`: the
/// planner registers it); with `views`, Parquet strings and binaries are
/// read as views ([`viewed`]; what a plan in this process reads; a
/// cluster's executors get the plain types).
pub fn table(
    spec: &ListingSpec,
    views: bool,
    store: Option<ObjectStoreUrl>,
) -> datafusion::error::Result<Arc<dyn TableProvider>> {
    let file_schema = if views && spec.format == ListingFormat::Parquet {
        viewed(&spec.file_schema)
    } else {
        spec.file_schema.clone()
    };
    if spec.files.is_some() {
        if spec.format != ListingFormat::Parquet {
            return Err(datafusion::error::DataFusionError::Plan(format!(
                "the data files of {} are not Parquet",
                spec.location
            )));
        }
        let store = store.ok_or_else(|| {
            datafusion::error::DataFusionError::Plan(format!(
                "the data files of {} come with no store to read them from",
                spec.location
            ))
        })?;
        return Ok(Arc::new(super::files::FileListTable::try_new(
            spec,
            file_schema,
            store,
        )?));
    }
    let (format, extension): (Arc<dyn FileFormat>, &str) = match &spec.format {
        ListingFormat::Parquet => (Arc::new(ParquetFormat::default()), ".parquet"),
        ListingFormat::Csv {
            has_header,
            delimiter,
            quote,
        } => (
            Arc::new(
                CsvFormat::default()
                    .with_has_header(*has_header)
                    .with_delimiter(*delimiter)
                    .with_quote(*quote),
            ),
            ".csv",
        ),
        ListingFormat::JsonLines => (Arc::new(JsonFormat::default()), ".json"),
    };
    // a directory: the format's files in it; a file or glob: what it names
    let directory = spec.location.ends_with('/') || std::path::Path::new(&spec.location).is_dir();
    let options = ListingOptions::new(format)
        .with_file_extension(if directory { extension } else { "" })
        .with_table_partition_cols(spec.partitions.clone());
    let config = ListingTableConfig::new(url(spec)?)
        .with_listing_options(options)
        .with_schema(file_schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// `spec` as a cluster's executors read it: [`table`] of its files, or a
/// table snapshot's listed files as a listing table of each file's URL
/// (the scheduler and executors open them with their own stores). A
/// snapshot with partition columns is velo's table of its files instead
/// ([`partitioned_files`]): a listing table reads partition values from
/// directories under its path, which one file's URL has none of.
pub fn cluster_table(spec: &ListingSpec) -> datafusion::error::Result<Arc<dyn TableProvider>> {
    let Some(files) = &spec.files else {
        return table(spec, false, None);
    };
    let refuse = |why: &str| {
        Err(datafusion::error::DataFusionError::Plan(format!(
            "{} {why}",
            spec.location
        )))
    };
    let Some(root) = &spec.files_root else {
        return refuse("names no URL for its files");
    };
    if !spec.partitions.is_empty() {
        return partitioned_files(spec, files, root);
    }
    let urls = files
        .iter()
        .map(|f| {
            let url = root
                .join(f.path.as_ref())
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            ListingTableUrl::try_new(url, None)
        })
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    if urls.is_empty() {
        return Ok(Arc::new(datafusion::datasource::empty::EmptyTable::new(
            spec.file_schema.clone(),
        )));
    }
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension("");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(spec.file_schema.clone());
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// A partitioned snapshot on a cluster: velo's own table of its files
/// ([`super::files::FileListTable`]) with each file's partition values
/// from the table's log, addressed by URL in the executors' stores. The
/// scheduler receives it through velo's codec (`velo-cluster`) and plans
/// its scan as the local batch plan does (files whose values fail the
/// WHERE left out).
fn partitioned_files(
    spec: &ListingSpec,
    files: &[velo_connectors::ListedFile],
    root: &url::Url,
) -> datafusion::error::Result<Arc<dyn TableProvider>> {
    use datafusion::error::DataFusionError;
    let mut store: Option<String> = None;
    let mut located = Vec::with_capacity(files.len());
    for f in files {
        let url = root
            .join(f.path.as_ref())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let at = format!("{}://{}", url.scheme(), url.authority());
        if *store.get_or_insert_with(|| at.clone()) != at {
            return Err(DataFusionError::Plan(format!(
                "{} has data files in two stores ({at} and {})",
                spec.location,
                store.unwrap_or_default()
            )));
        }
        let path = object_store::path::Path::from_url_path(url.path())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        located.push(velo_connectors::ListedFile { path, ..f.clone() });
    }
    let store = ObjectStoreUrl::parse(store.as_deref().unwrap_or("file://"))?;
    let spec = ListingSpec {
        location: spec.location.clone(),
        format: spec.format.clone(),
        file_schema: spec.file_schema.clone(),
        partitions: spec.partitions.clone(),
        store: None,
        files: Some(located),
        files_root: None,
        columns: spec.columns.clone(),
    };
    Ok(Arc::new(super::files::FileListTable::try_new(
        &spec,
        spec.file_schema.clone(),
        store,
    )?))
}

/// `schema` with strings and binaries as views: Parquet's byte arrays are
/// decoded into views of the pages' buffers instead of copied value by
/// value (twice the rows per CPU-second on a string GROUP BY, measured).
fn viewed(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let t = match f.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 => DataType::Utf8View,
                DataType::Binary | DataType::LargeBinary => DataType::BinaryView,
                t => t.clone(),
            };
            f.as_ref().clone().with_data_type(t)
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `plan` with its string views (from [`table`]) cast
/// back to the plain types a streaming run of the query gives, so sinks
/// see the same columns either way; the cast touches result rows only.
pub fn plain_output(plan: LogicalPlan) -> datafusion::error::Result<LogicalPlan> {
    let plain = |t: &DataType| -> Option<DataType> {
        match t {
            DataType::Utf8View => Some(DataType::Utf8),
            DataType::BinaryView => Some(DataType::Binary),
            DataType::Dictionary(_, v) => Some(v.as_ref().clone()),
            _ => None,
        }
    };
    if !plan
        .schema()
        .fields()
        .iter()
        .any(|f| plain(f.data_type()).is_some())
    {
        return Ok(plan);
    }
    let exprs: Vec<Expr> = plan
        .schema()
        .iter()
        .map(|(q, f)| {
            let c = Expr::Column(Column::from((q, f)));
            match plain(f.data_type()) {
                Some(t) => cast(c, t).alias(f.name()),
                None => c,
            }
        })
        .collect();
    LogicalPlanBuilder::from(plan).project(exprs)?.build()
}
