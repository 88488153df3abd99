//! A bounded file source as a DataFusion listing table
//! ([`velo_connectors::ListingSpec`]): the same files (path, directory or
//! glob), columns and `key=value` partition columns, read by DataFusion's
//! own scans (parallel, partitions pruned, Parquet predicates pushed down)
//! — in this process ([`super::batch`]) or on a cluster's executors
//! ([`super::cluster`]).

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
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

/// `spec` as a listing table.
pub fn table(spec: &ListingSpec) -> datafusion::error::Result<ListingTable> {
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
        .with_table_partition_cols(
            spec.partitions
                .iter()
                .map(|p| (p.clone(), DataType::Utf8))
                .collect(),
        );
    let config = ListingTableConfig::new(url(spec)?)
        .with_listing_options(options)
        .with_schema(spec.file_schema.clone());
    ListingTable::try_new(config)
}
