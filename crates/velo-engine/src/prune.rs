//! The query's filters as a source's [`Pruning`]: DataFusion evaluates
//! them over a file source's Hive partition values (files of a partition
//! the WHERE clause rules out are not read) and over a Parquet file's
//! row-group statistics (row groups whose min/max rule them out are not
//! fetched). The table scan of a source takes the filters as inexact, so
//! the query still applies them to every row read: pruning only skips.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::conjunction;
use datafusion::physical_expr::execution_props::ExecutionProps;
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::file::metadata::ParquetMetaData;
use velo_connectors::Pruning;

/// A scan's filters, unqualified (`orders.region` -> `region`).
#[derive(Debug)]
pub struct FilterPruning {
    filters: Vec<Expr>,
}

impl FilterPruning {
    /// The pruning of `filters` (the ones DataFusion pushed into a scan).
    pub fn new(filters: &[Expr]) -> Self {
        let unqualified = |e: &Expr| {
            e.clone()
                .transform(|e| {
                    Ok(match e {
                        Expr::Column(c) => {
                            Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
                        }
                        e => Transformed::no(e),
                    })
                })
                .map(|t| t.data)
                .unwrap_or_else(|_| e.clone())
        };
        Self {
            filters: filters.iter().map(unqualified).collect(),
        }
    }

    /// The filters that use only columns of `schema`, as one physical
    /// expression over it.
    fn over(&self, schema: &SchemaRef) -> Option<Arc<dyn PhysicalExpr>> {
        let usable: Vec<Expr> = self
            .filters
            .iter()
            .filter(|f| {
                f.column_refs()
                    .iter()
                    .all(|c| schema.field_with_name(&c.name).is_ok())
            })
            .cloned()
            .collect();
        let expr = conjunction(usable)?;
        let df = DFSchema::try_from(schema.as_ref().clone()).ok()?;
        create_physical_expr(
            &expr,
            &df,
            &ExecutionProps::new(),
            &PhysicalPlanningContext::default(),
        )
        .ok()
    }
}

impl Pruning for FilterPruning {
    fn partitions(&self, values: &RecordBatch) -> Vec<bool> {
        let all = vec![true; values.num_rows()];
        let Some(expr) = self.over(&values.schema()) else {
            return all;
        };
        let kept = expr
            .evaluate(values)
            .and_then(|v| v.into_array(values.num_rows()));
        match kept {
            // a row the filter leaves null is filtered out, as WHERE does
            Ok(a) => match a.as_any().downcast_ref::<BooleanArray>() {
                Some(b) => (0..b.len()).map(|i| b.is_valid(i) && b.value(i)).collect(),
                None => all,
            },
            Err(_) => all,
        }
    }

    fn row_groups(&self, schema: &SchemaRef, metadata: &ParquetMetaData) -> Option<Vec<bool>> {
        let expr = self.over(schema)?;
        let predicate = PruningPredicateBuilder::new()
            .with_file_schema(schema.clone())
            .build(expr)?;
        predicate
            .prune(&RowGroupStatistics { schema, metadata })
            .ok()
    }
}

/// A Parquet file's row-group statistics as DataFusion's pruning reads them.
struct RowGroupStatistics<'a> {
    schema: &'a Schema,
    metadata: &'a ParquetMetaData,
}

impl RowGroupStatistics<'_> {
    fn converter(&self, column: &Column) -> Option<StatisticsConverter<'_>> {
        StatisticsConverter::try_new(
            &column.name,
            self.schema,
            self.metadata.file_metadata().schema_descr(),
        )
        .ok()
    }
}

impl PruningStatistics for RowGroupStatistics<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.converter(column)?
            .row_group_mins(self.metadata.row_groups())
            .ok()
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.converter(column)?
            .row_group_maxes(self.metadata.row_groups())
            .ok()
    }

    fn num_containers(&self) -> usize {
        self.metadata.num_row_groups()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        let counts = self
            .converter(column)?
            .row_group_null_counts(self.metadata.row_groups())
            .ok()?;
        Some(Arc::new(counts))
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        let first = self.schema.fields().first()?;
        let counts = self
            .converter(&Column::new_unqualified(first.name()))?
            .row_group_row_counts(self.metadata.row_groups())
            .ok()??;
        Some(Arc::new(counts))
    }

    fn contained(
        &self,
        _column: &Column,
        _values: &std::collections::HashSet<ScalarValue>,
    ) -> Option<BooleanArray> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn partitions_and_row_groups_the_filters_rule_out_are_skipped() {
        let p = FilterPruning::new(&[
            Expr::Column(Column::new(Some("orders"), "region")).eq(lit("eu")),
            col("id").gt(lit(150i64)),
        ]);
        let values = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "region",
                DataType::Utf8,
                true,
            )])),
            vec![Arc::new(StringArray::from(vec![
                Some("eu"),
                Some("us"),
                None,
            ]))],
        )
        .unwrap();
        assert_eq!(p.partitions(&values), [true, false, false]);

        // a Parquet file of two row groups: ids 0..100 and 100..200
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..200))],
        )
        .unwrap();
        let mut buf = Vec::new();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(100))
            .build();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(buf),
        )
        .unwrap();
        assert_eq!(
            p.row_groups(b.schema(), b.metadata()),
            Some(vec![false, true])
        );
        // filters on columns the file does not have say nothing
        let other = FilterPruning::new(&[col("x").eq(lit(1i64))]);
        assert_eq!(other.row_groups(b.schema(), b.metadata()), None);
    }
}
