//! Queries of Flight SQL clients, run by DataFusion beside the jobs: ad
//! hoc over the jobs' tables (each `CREATE TABLE` job's rows as of its
//! last committed epoch) and over bounded files named inline
//! (`SELECT ... FROM '/data/*.parquet'`), and subscriptions (`EMIT
//! CHANGES`) that run the client's query over each epoch a job commits.
//!
//! A query may read; it cannot write or change settings (no DDL, DML,
//! `COPY` or `SET`): the jobs are what writes.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, ParamValues, ScalarValue, TableReference};
use datafusion::datasource::MemTable;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast::error::RecvError;

use super::metadata::{CATALOG, SCHEMA};
use crate::jobs::{Jobs, Queryable, Subscription};

type DfResult<T> = datafusion::error::Result<T>;

/// What a client's query may do: read.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Rows per batch of a query's result: fewer, larger Flight messages.
const RESULT_BATCH_ROWS: usize = 64 * 1024;

/// A fresh context on the engine's memory pool, with the jobs' catalog as
/// the default one and files readable by their path.
fn context(jobs: &Jobs) -> SessionContext {
    let config = SessionConfig::new()
        .with_batch_size(RESULT_BATCH_ROWS)
        .with_information_schema(true)
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
        .with_create_default_catalog_and_schema(true);
    SessionContext::new_with_config_rt(config, jobs.engine().runtime_env()).enable_url_table()
}

/// The context of an ad hoc query: every job's table with its committed
/// rows, every stream job as a name that says to subscribe.
pub fn ad_hoc_context(jobs: &Jobs) -> DfResult<SessionContext> {
    let ctx = context(jobs);
    for (name, q) in jobs.queryable() {
        let provider: Arc<dyn TableProvider> = match q {
            Queryable::Table(schema, rows) => Arc::new(MemTable::try_new(schema, vec![rows])?),
            Queryable::Stream(schema) => Arc::new(StreamJob {
                job: name.clone(),
                schema,
            }),
        };
        ctx.register_table(TableReference::bare(name), provider)?;
    }
    Ok(ctx)
}

/// Plans `sql` (with `params` bound to its `$n` placeholders).
pub async fn plan(
    ctx: &SessionContext,
    sql: &str,
    params: Option<&[ScalarValue]>,
) -> DfResult<DataFrame> {
    let df = ctx.sql_with_options(sql, read_only()).await?;
    match params {
        Some(p) => bind(df, p),
        None => Ok(df),
    }
}

/// Binds `params` to `df`'s placeholders, each cast to the type the
/// query expects of it (a client's integer for a `DOUBLE` column, say).
fn bind(df: DataFrame, params: &[ScalarValue]) -> DfResult<DataFrame> {
    let types = df.logical_plan().get_parameter_types()?;
    let mut values = Vec::with_capacity(params.len());
    for (i, v) in params.iter().enumerate() {
        let want = types.get(&format!("${}", i + 1)).cloned().flatten();
        values.push(match want {
            Some(t) if t != v.data_type() => v.cast_to(&t).map_err(|e| {
                DataFusionError::Plan(format!(
                    "parameter {} is a {} and the query wants a {t}: {e}",
                    i + 1,
                    v.data_type()
                ))
            })?,
            _ => v.clone(),
        });
    }
    df.with_param_values(ParamValues::List(
        values.into_iter().map(Into::into).collect(),
    ))
}

/// The placeholders of `df` as a schema (`$1`, `$2`, ...: their types as
/// far as the query says them), for a prepared statement's parameters.
pub fn parameter_schema(df: &DataFrame) -> DfResult<arrow::datatypes::Schema> {
    let types = df.logical_plan().get_parameter_types()?;
    let mut names: Vec<(usize, String)> = types
        .keys()
        .filter_map(|k| k.strip_prefix('$')?.parse().ok().map(|n| (n, k.clone())))
        .collect();
    names.sort();
    Ok(arrow::datatypes::Schema::new(
        names
            .into_iter()
            .map(|(_, k)| {
                let t = types[&k]
                    .clone()
                    .unwrap_or(arrow::datatypes::DataType::Null);
                arrow::datatypes::Field::new(k, t, true)
            })
            .collect::<Vec<_>>(),
    ))
}

/// Runs a planned query.
pub async fn run(df: DataFrame) -> DfResult<SendableRecordBatchStream> {
    df.execute_stream().await
}

/// A subscription's query, planned over the job's output once to know its
/// schema and then over each committed epoch.
pub struct Live {
    job: String,
    query: String,
    limit: Option<u64>,
    sub: Subscription,
    ctx: SessionContext,
    /// The query's result schema.
    pub schema: SchemaRef,
}

impl Live {
    /// `query` over job `job`'s epochs from now on.
    pub async fn new(
        jobs: &Jobs,
        job: String,
        query: String,
        limit: Option<u64>,
        sub: Subscription,
    ) -> DfResult<Self> {
        let ctx = context(jobs);
        let empty = MemTable::try_new(sub.schema.clone(), vec![vec![]])?;
        ctx.register_table(TableReference::bare(job.as_str()), Arc::new(empty))?;
        let df = plan(&ctx, &query, None).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        Ok(Self {
            job,
            query,
            limit,
            sub,
            ctx,
            schema,
        })
    }

    /// The query's rows for each committed epoch, until the job is dropped,
    /// the client goes away, or `limit` rows were sent.
    pub fn stream(self) -> BoxStream<'static, DfResult<RecordBatch>> {
        let sent = 0u64;
        futures::stream::unfold((self, sent), |(mut live, sent)| async move {
            if live.limit.is_some_and(|l| sent >= l) {
                return None;
            }
            let published = match live.sub.epochs.recv().await {
                Ok(p) => p,
                Err(RecvError::Closed) => return None,
                Err(RecvError::Lagged(n)) => {
                    let e = DataFusionError::Execution(format!(
                        "this subscription fell {n} epochs of job '{}' behind and would miss them: read faster (or filter in the query) and subscribe again",
                        live.job
                    ));
                    // one error, then the end
                    live.limit = Some(0);
                    return Some((vec![Err(e)], (live, sent)));
                }
            };
            let rows = live.epoch(&published.batches).await;
            let mut out = Vec::new();
            let mut sent = sent;
            match rows {
                Ok(batches) => {
                    for b in batches {
                        let b = match live.limit {
                            Some(l) if sent + b.num_rows() as u64 > l => {
                                b.slice(0, usize::try_from(l - sent).unwrap_or(0))
                            }
                            _ => b,
                        };
                        sent += b.num_rows() as u64;
                        if b.num_rows() > 0 {
                            out.push(Ok(b));
                        }
                    }
                }
                Err(e) => {
                    live.limit = Some(0);
                    out.push(Err(e));
                }
            }
            Some((out, (live, sent)))
        })
        .flat_map(futures::stream::iter)
        .boxed()
    }

    /// The query over one epoch's rows.
    async fn epoch(&self, batches: &[RecordBatch]) -> DfResult<Vec<RecordBatch>> {
        let table = TableReference::bare(self.job.as_str());
        self.ctx.deregister_table(table.clone())?;
        let rows = MemTable::try_new(self.sub.schema.clone(), vec![batches.to_vec()])?;
        self.ctx.register_table(table, Arc::new(rows))?;
        plan(&self.ctx, &self.query, None).await?.collect().await
    }
}

/// The table names `sql` reads.
pub async fn tables_of(jobs: &Jobs, sql: &str) -> DfResult<Vec<String>> {
    let state = context(jobs).state();
    let statement = state.sql_to_statement(sql, &datafusion::config::Dialect::Generic)?;
    Ok(state
        .resolve_table_references(&statement)?
        .into_iter()
        .map(|t| t.table().to_string())
        .collect())
}

/// A `CREATE STREAM` job named in an ad hoc query: it keeps no rows, so
/// the query is refused with what to do instead.
#[derive(Debug)]
struct StreamJob {
    job: String,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for StreamJob {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Err(DataFusionError::Plan(format!(
            "job '{0}' is a stream: it keeps no rows to query. Add EMIT CHANGES to receive its rows as it commits them (SELECT ... FROM \"{0}\" EMIT CHANGES LIMIT 10), or make it a CREATE TABLE",
            self.job
        )))
    }
}
