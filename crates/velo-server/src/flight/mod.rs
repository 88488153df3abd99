//! The Arrow Flight SQL endpoint (`velo server --flight ADDR`): Python
//! (ADBC, `pyarrow.flight`), JDBC and ODBC clients deploy and manage jobs
//! and query them, on arrow-flight's [`FlightSqlService`] over tonic.
//!
//! A statement ([`statement`]) is one of:
//! - an application (`CREATE STREAM ... INTO ... WITH (...)`), deployed as
//!   `POST /api/jobs` deploys it; its jobs come back as rows;
//! - `SHOW JOBS`, `SHOW STATUS j`, `STOP JOB j`, `START JOB j`,
//!   `DROP JOB j [PURGE]`;
//! - `SELECT ... FROM j EMIT CHANGES [LIMIT n]`: each epoch job `j`
//!   commits from now on, through the query, until the client cancels or
//!   `n` rows were sent ([`query::Live`]);
//! - any other query, run by DataFusion over the jobs' tables and files
//!   named inline ([`query`]).
//!
//! `GetFlightInfo` does the work of a management statement (once) and
//! plans a query; the ticket it returns names what `DoGet` then streams,
//! once, within [`PENDING_FOR`]. A `DoGet` stream is dropped when the
//! client cancels it, and `CancelFlightInfo` stops one by its ticket.
//! Authentication ([`crate::auth`]) is checked for every call by a tonic
//! interceptor before any of this runs.

pub mod metadata;
pub mod query;
pub mod statement;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus,
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use datafusion::common::ScalarValue;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Auth;
use crate::error::ServerError;
use crate::jobs::{Deploy, JobView, Jobs};
use statement::Statement;

/// How long a ticket waits for its `DoGet`.
pub const PENDING_FOR: Duration = Duration::from_secs(300);
/// Tickets waiting for their `DoGet` at once, and prepared statements
/// open at once: past these, clients are told to fetch or close theirs.
const MAX_PENDING: usize = 1024;
const MAX_PREPARED: usize = 4096;
/// How long a `STOP JOB` waits for the job's epoch to commit.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// What a ticket's `DoGet` streams.
enum Pending {
    /// Rows computed already (a management statement's).
    Rows(SchemaRef, Vec<RecordBatch>),
    /// A planned query.
    Query(SchemaRef, datafusion::prelude::DataFrame),
    /// A subscription, receiving epochs from the moment it was planned.
    Live(query::Live),
}

impl Pending {
    fn schema(&self) -> SchemaRef {
        match self {
            Self::Rows(s, _) | Self::Query(s, _) => s.clone(),
            Self::Live(l) => l.schema.clone(),
        }
    }
}

/// A prepared statement: its text and the parameters bound to it.
struct Prepared {
    sql: String,
    params: Option<Vec<ScalarValue>>,
    at: Instant,
}

#[derive(Default)]
struct Handles {
    pending: HashMap<String, (Instant, Pending)>,
    prepared: HashMap<String, Prepared>,
    /// Streams under way, by ticket: dropping the sender ends the stream.
    running: HashMap<String, futures::stream::AbortHandle>,
}

/// The Flight SQL service over the server's jobs.
#[derive(Clone)]
pub struct FlightSql {
    jobs: Jobs,
    auth: Option<Arc<Auth>>,
    handles: Arc<Mutex<Handles>>,
}

type FlightStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

impl FlightSql {
    /// The service for `jobs`, checking credentials with `auth`.
    pub fn new(jobs: Jobs, auth: Option<Arc<Auth>>) -> Self {
        Self {
            jobs,
            auth,
            handles: Arc::default(),
        }
    }

    fn handles(&self) -> std::sync::MutexGuard<'_, Handles> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `p` for the `DoGet` of the ticket returned; forgets what
    /// waited too long.
    fn keep(&self, p: Pending) -> Result<String, Status> {
        let handle = new_handle();
        let mut h = self.handles();
        h.pending.retain(|_, (at, _)| at.elapsed() < PENDING_FOR);
        if h.pending.len() >= MAX_PENDING {
            return Err(Status::resource_exhausted(format!(
                "{MAX_PENDING} results wait for their DoGet already: fetch (or cancel) them before asking for more"
            )));
        }
        h.pending.insert(handle.clone(), (Instant::now(), p));
        Ok(handle)
    }

    /// Phase: what `sql` asks for, done (management) or planned (queries).
    async fn plan_statement(
        &self,
        sql: &str,
        params: Option<&[ScalarValue]>,
    ) -> Result<Pending, Status> {
        if sql.len() as u64 > velo_config::text::MAX_TEXT_BYTES {
            return Err(Status::invalid_argument(format!(
                "the statement is larger than {} MiB, the most velo reads of an application: split it",
                velo_config::text::MAX_TEXT_BYTES >> 20
            )));
        }
        let st = statement::classify(sql).map_err(Status::invalid_argument)?;
        tracing::debug!(statement = ?std::mem::discriminant(&st), "flight sql statement");
        match st {
            Statement::Deploy(sql) => {
                let (views, warnings) = self
                    .jobs
                    .deploy(Deploy {
                        sql,
                        ..Default::default()
                    })
                    .await
                    .map_err(status_of)?;
                for w in warnings {
                    tracing::warn!("{w}");
                }
                rows(job_rows(&views))
            }
            Statement::ShowJobs => rows(job_rows(&self.jobs.list())),
            Statement::ShowStatus(j) => {
                let v = self.jobs.get(&j).map_err(status_of)?;
                rows(status_rows(&v))
            }
            Statement::Stop(j) => {
                let v = self.jobs.stop(&j, STOP_WAIT).await.map_err(status_of)?;
                rows(job_rows(&[v]))
            }
            Statement::Start(j) => {
                let v = self.jobs.start(&j).map_err(status_of)?;
                rows(job_rows(&[v]))
            }
            Statement::Drop { job, purge } => {
                let mut v = self.jobs.get(&job).map_err(status_of)?;
                self.jobs
                    .drop_job(&job, purge, STOP_WAIT)
                    .await
                    .map_err(status_of)?;
                v.phase = crate::jobs::Phase::Stopped;
                rows(job_rows(&[v]))
            }
            Statement::Subscribe { query, limit } => {
                self.subscription(query, limit).await.map(Pending::Live)
            }
            Statement::Query(sql) => {
                let ctx = query::ad_hoc_context(&self.jobs).map_err(df_status)?;
                let df = query::plan(&ctx, &sql, params).await.map_err(df_status)?;
                let schema = Arc::new(df.schema().as_arrow().clone());
                Ok(Pending::Query(schema, df))
            }
        }
    }

    /// Phase: a subscription to the one job `query` reads.
    async fn subscription(&self, query: String, limit: Option<u64>) -> Result<query::Live, Status> {
        let names = query::tables_of(&self.jobs, &query)
            .await
            .map_err(df_status)?;
        let job = match names.as_slice() {
            [one] => one.clone(),
            _ => {
                return Err(Status::invalid_argument(
                    "EMIT CHANGES subscribes to one job: SELECT ... FROM <job> [WHERE ...] EMIT CHANGES [LIMIT n]",
                ));
            }
        };
        let sub = self.jobs.subscribe(&job).await.map_err(status_of)?;
        query::Live::new(&self.jobs, job, query, limit, sub)
            .await
            .map_err(df_status)
    }

    /// The `FlightInfo` of `p`: its schema and the ticket of its `DoGet`.
    fn info(&self, p: Pending, descriptor: FlightDescriptor) -> Result<FlightInfo, Status> {
        let schema = p.schema();
        let handle = self.keep(p)?;
        let ticket = TicketStatementQuery {
            statement_handle: handle.into_bytes().into(),
        };
        Ok(FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("the result's schema cannot be sent: {e}")))?
            .with_endpoint(
                FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec())),
            )
            .with_descriptor(descriptor)
            .with_ordered(true))
    }

    /// Phase: `DoGet` of a ticket: what it names, streamed once.
    async fn stream(&self, handle: &str) -> Result<FlightStream, Status> {
        let (_, pending) = self.handles().pending.remove(handle).ok_or_else(|| {
            Status::not_found(
                "this ticket was fetched already, cancelled or has expired: execute the statement again",
            )
        })?;
        let schema = pending.schema();
        let batches: BoxStream<'static, Result<RecordBatch, FlightError>> = match pending {
            Pending::Rows(_, rows) => futures::stream::iter(rows.into_iter().map(Ok)).boxed(),
            Pending::Query(_, df) => query::run(df)
                .await
                .map_err(df_status)?
                .map_err(|e| FlightError::ExternalError(Box::new(e)))
                .boxed(),
            Pending::Live(live) => live
                .stream()
                .map_err(|e| FlightError::ExternalError(Box::new(e)))
                .boxed(),
        };
        let (batches, abort) = futures::stream::abortable(batches);
        self.handles().running.insert(handle.to_string(), abort);
        let done = Done {
            handles: self.handles.clone(),
            handle: handle.to_string(),
        };
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches.map(move |b| {
                let _ = &done;
                b
            }))
            .map_err(|e| match e {
                FlightError::Tonic(s) => *s,
                e => Status::internal(velo_config::mask(&e.to_string()).into_owned()),
            });
        Ok(Box::pin(flight))
    }

    /// Cancels what the tickets of `info` name: pending or streaming.
    fn cancel(&self, info: &FlightInfo) -> CancelStatus {
        let mut h = self.handles();
        let mut found = false;
        for e in &info.endpoint {
            let Some(handle) = e.ticket.as_ref().and_then(|t| ticket_handle(&t.ticket)) else {
                continue;
            };
            found |= h.pending.remove(&handle).is_some();
            if let Some(a) = h.running.remove(&handle) {
                a.abort();
                found = true;
            }
        }
        if found {
            CancelStatus::Cancelled
        } else {
            CancelStatus::NotCancellable
        }
    }

    /// The jobs as tables and streams of the one catalog and schema.
    async fn tables(&self) -> Vec<(String, &'static str, Schema)> {
        use crate::jobs::Queryable;
        let known = self.jobs.queryable();
        let mut out = Vec::new();
        for v in self.jobs.list() {
            let (kind, schema) = match known.get(&v.name) {
                Some(Queryable::Table(s, _)) => (metadata::TABLE, s.as_ref().clone()),
                Some(Queryable::Stream(s)) => (metadata::STREAM, s.as_ref().clone()),
                // not run yet: its kind from its statement, its rows planned
                None => (
                    if self.jobs.is_table(&v.name) {
                        metadata::TABLE
                    } else {
                        metadata::STREAM
                    },
                    self.jobs
                        .output_schema(&v.name)
                        .await
                        .map(|s| s.as_ref().clone())
                        .unwrap_or_else(|_| Schema::empty()),
                ),
            };
            out.push((v.name, kind, schema));
        }
        out
    }
}

/// Removes a finished stream's abort handle.
struct Done {
    handles: Arc<Mutex<Handles>>,
    handle: String,
}

impl Drop for Done {
    fn drop(&mut self) {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .running
            .remove(&self.handle);
    }
}

fn new_handle() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The handle inside a ticket's bytes.
fn ticket_handle(bytes: &[u8]) -> Option<String> {
    let any = Any::decode(bytes).ok()?;
    let t: TicketStatementQuery = any.unpack().ok()??;
    String::from_utf8(t.statement_handle.to_vec()).ok()
}

fn rows(batch: RecordBatch) -> Result<Pending, Status> {
    Ok(Pending::Rows(batch.schema(), vec![batch]))
}

/// A server error as the gRPC status a client shows (secrets masked).
fn status_of(e: ServerError) -> Status {
    let m = velo_config::mask(&e.to_string()).into_owned();
    match e {
        ServerError::Invalid(_) => Status::invalid_argument(m),
        ServerError::Limit(_) => Status::resource_exhausted(m),
        ServerError::Conflict(_) => Status::already_exists(m),
        ServerError::NotFound(_) => Status::not_found(m),
        ServerError::Io(_) | ServerError::Config(_) => Status::internal(m),
    }
}

/// A query's error: the client's to fix unless the engine says otherwise.
fn df_status(e: datafusion::error::DataFusionError) -> Status {
    use datafusion::error::DataFusionError as D;
    let m = velo_config::mask(&e.to_string()).into_owned();
    match e.find_root() {
        D::Plan(_) | D::SQL(..) | D::SchemaError(..) | D::NotImplemented(_) => {
            Status::invalid_argument(m)
        }
        D::ResourcesExhausted(_) => Status::resource_exhausted(m),
        D::Internal(_) => Status::internal(m),
        _ => Status::invalid_argument(m),
    }
}

fn text<I: IntoIterator<Item = Option<String>>>(v: I) -> ArrayRef {
    Arc::new(StringArray::from_iter(v))
}

/// One row per job: what `SHOW JOBS` and the management statements answer.
fn job_rows(views: &[JobView]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("app", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("since", DataType::Utf8, false),
        Field::new("sources", DataType::Utf8, false),
        Field::new("sinks", DataType::Utf8, false),
        Field::new("records_in", DataType::UInt64, false),
        Field::new("records_out", DataType::UInt64, false),
        Field::new("records_per_second", DataType::Float64, false),
        Field::new("error", DataType::Utf8, true),
    ]));
    let s = |f: &dyn Fn(&JobView) -> String| text(views.iter().map(|v| Some(f(v))));
    let cols: Vec<ArrayRef> = vec![
        s(&|v| v.name.clone()),
        s(&|v| v.app.clone()),
        s(&|v| v.phase.as_str().to_string()),
        s(&|v| v.since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        s(&|v| v.sources.join(",")),
        s(&|v| v.sinks.join(",")),
        Arc::new(UInt64Array::from_iter_values(
            views.iter().map(|v| v.totals.records_read()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            views
                .iter()
                .map(|v| v.totals.records_out.values().sum::<u64>()),
        )),
        Arc::new(Float64Array::from_iter_values(
            views.iter().map(|v| v.records_per_second),
        )),
        text(views.iter().map(|v| v.error.clone())),
    ];
    RecordBatch::try_new(schema, cols).expect("job rows")
}

/// `SHOW STATUS`: the job's row, with its epochs, failures, watermark and
/// the REST API's status document.
fn status_rows(v: &JobView) -> RecordBatch {
    let jobs = job_rows(std::slice::from_ref(v));
    let t = &v.totals;
    let watermark = v.status.as_ref().and_then(|s| s.watermark);
    let doc = serde_json::to_string(&crate::api::status_doc(v)).unwrap_or_default();
    let mut fields: Vec<Field> = jobs
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut cols = jobs.columns().to_vec();
    for (name, value) in [
        ("subscribers", v.subscribers as u64),
        ("epochs", t.epochs),
        ("epochs_failed", t.epochs_failed),
        ("records_failed", t.records_failed),
        ("records_late", t.records_late),
    ] {
        fields.push(Field::new(name, DataType::UInt64, false));
        cols.push(Arc::new(UInt64Array::from(vec![value])));
    }
    fields.push(Field::new("watermark_ms", DataType::Int64, true));
    cols.push(Arc::new(Int64Array::from(vec![watermark])));
    fields.push(Field::new("document", DataType::Utf8, false));
    cols.push(text([Some(doc)]));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("status row")
}

/// The parameters bound by a `DoPut`: its first row, one value per column.
async fn bound_params(stream: PeekableFlightDataStream) -> Result<Vec<ScalarValue>, Status> {
    let batches: Vec<RecordBatch> =
        arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
            stream.map_err(FlightError::from),
        )
        .try_collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("the parameters cannot be read: {e}")))?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(Vec::new());
    };
    if rows > 1 {
        return Err(Status::invalid_argument(format!(
            "{rows} rows of parameters were bound; a query takes one: execute it once per row"
        )));
    }
    b.columns()
        .iter()
        .map(|c| ScalarValue::try_from_array(c, 0))
        .collect::<Result<_, _>>()
        .map_err(|e| Status::invalid_argument(format!("a parameter cannot be read: {e}")))
}

fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(b) = SchemaAsIpc::new(schema, &Default::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(b)
}

fn one_batch(schema: SchemaRef, batch: Result<RecordBatch, FlightError>) -> FlightStream {
    Box::pin(
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async move { batch }))
            .map_err(Status::from),
    )
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    /// Basic credentials in, a bearer token out (the interceptor checked
    /// them); without authentication configured, an empty token.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let token = match &self.auth {
            Some(a) => {
                let header = request
                    .metadata()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok());
                a.check(header)
                    .map_err(|e| Status::unauthenticated(e.to_string()))?;
                a.issue()
            }
            None => String::new(),
        };
        let out = futures::stream::iter([Ok(HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        })]);
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(out));
        if !token.is_empty() {
            let v = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Status::internal("the issued token is not a header value"))?;
            response.metadata_mut().insert("authorization", v);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let p = self.plan_statement(&query.query, None).await?;
        Ok(Response::new(self.info(p, request.into_inner())?))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = String::from_utf8_lossy(&cmd.prepared_statement_handle).into_owned();
        let (sql, params) = {
            let h = self.handles();
            let p = h.prepared.get(&handle).ok_or_else(|| {
                Status::not_found(
                    "no such prepared statement (closed or expired): prepare it again",
                )
            })?;
            (p.sql.clone(), p.params.clone())
        };
        let p = self.plan_statement(&sql, params.as_deref()).await?;
        Ok(Response::new(self.info(p, request.into_inner())?))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let handle = String::from_utf8_lossy(&ticket.statement_handle).into_owned();
        Ok(Response::new(self.stream(&handle).await?))
    }

    async fn do_put_statement_update(
        &self,
        cmd: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        match self.plan_statement(&cmd.query, None).await? {
            Pending::Rows(_, rows) => Ok(rows.iter().map(|b| b.num_rows() as i64).sum()),
            _ => Err(Status::invalid_argument(
                "a query returns rows: execute it as a query, not as an update",
            )),
        }
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let st = statement::classify(&query.query).map_err(Status::invalid_argument)?;
        let (dataset, parameters) = match &st {
            Statement::Query(sql) => {
                let ctx = query::ad_hoc_context(&self.jobs).map_err(df_status)?;
                let df = query::plan(&ctx, sql, None).await.map_err(df_status)?;
                let params = query::parameter_schema(&df).map_err(df_status)?;
                (df.schema().as_arrow().clone(), params)
            }
            // the rows of a statement that acts are known when it acts
            _ => (Schema::empty(), Schema::empty()),
        };
        let handle = new_handle();
        {
            let mut h = self.handles();
            h.prepared
                .retain(|_, p| p.at.elapsed() < crate::auth::ISSUED_FOR);
            if h.prepared.len() >= MAX_PREPARED {
                return Err(Status::resource_exhausted(format!(
                    "{MAX_PREPARED} prepared statements are open: close the ones no longer used"
                )));
            }
            h.prepared.insert(
                handle.clone(),
                Prepared {
                    sql: query.query,
                    params: None,
                    at: Instant::now(),
                },
            );
        }
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: schema_bytes(&dataset)?,
            parameter_schema: schema_bytes(&parameters)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let handle = String::from_utf8_lossy(&cmd.prepared_statement_handle).into_owned();
        let params = bound_params(request.into_inner()).await?;
        let mut h = self.handles();
        let p = h.prepared.get_mut(&handle).ok_or_else(|| {
            Status::not_found("no such prepared statement (closed or expired): prepare it again")
        })?;
        p.params = Some(params);
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(cmd.prepared_statement_handle),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        let handle = String::from_utf8_lossy(&query.prepared_statement_handle).into_owned();
        self.handles().prepared.remove(&handle);
        Ok(())
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        _request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let info = FlightInfo::decode(query.info)
            .map_err(|e| Status::invalid_argument(format!("not a FlightInfo: {e}")))?;
        // ActionCancelQueryResult.CancelResult: 1 cancelled, 3 not cancellable
        // (the enum is not exported by arrow-flight)
        let result = match self.cancel(&info) {
            CancelStatus::Cancelled => 1,
            _ => 3,
        };
        Ok(ActionCancelQueryResult { result })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let action = request.into_inner();
        if action.r#type != "CancelFlightInfo" {
            return Err(Status::unimplemented(format!(
                "unknown action '{}': ListActions lists the actions",
                action.r#type
            )));
        }
        let req = CancelFlightInfoRequest::decode(action.body)
            .map_err(|e| Status::invalid_argument(format!("not a CancelFlightInfoRequest: {e}")))?;
        let info = req
            .info
            .ok_or_else(|| Status::invalid_argument("CancelFlightInfo needs the FlightInfo"))?;
        let status = self.cancel(&info);
        let body = CancelFlightInfoResult {
            status: status as i32,
        }
        .encode_to_vec();
        let out = futures::stream::iter([Ok(arrow_flight::Result { body: body.into() })]);
        Ok(Response::new(Box::pin(out)))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(vec![Ok(ActionType {
            r#type: "CancelFlightInfo".into(),
            description:
                "Cancel a query by its FlightInfo: its ticket is not served, or its stream ends"
                    .into(),
        })])
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&metadata::SQL_INFO).schema();
        metadata_info(query.as_any(), &schema, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let b = query.into_builder(&metadata::SQL_INFO);
        Ok(Response::new(one_batch(b.schema(), b.build())))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(&metadata::XDBC_TYPES).schema();
        metadata_info(query.as_any(), &schema, request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let b = query.into_builder(&metadata::XDBC_TYPES);
        Ok(Response::new(one_batch(b.schema(), b.build())))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        metadata_info(query.as_any(), &schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append(metadata::CATALOG);
        Ok(Response::new(one_batch(b.schema(), b.build())))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        metadata_info(query.as_any(), &schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append(metadata::CATALOG, metadata::SCHEMA);
        Ok(Response::new(one_batch(b.schema(), b.build())))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        metadata_info(query.as_any(), &schema, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        for (name, kind, schema) in self.tables().await {
            b.append(metadata::CATALOG, metadata::SCHEMA, name, kind, &schema)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(Response::new(one_batch(b.schema(), b.build())))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        metadata_info(query.as_any(), &schema, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append(metadata::TABLE);
        b.append(metadata::STREAM);
        Ok(Response::new(one_batch(b.schema(), b.build())))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// The `FlightInfo` of a metadata command: its own bytes are the ticket.
fn metadata_info(
    command: Any,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(command.encode_to_vec())))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// Refuses every call without valid credentials (the handshake too: it
/// carries a basic user's), before any handler runs.
#[derive(Clone)]
pub struct Authenticate(Option<Arc<Auth>>);

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(auth) = &self.0 else {
            return Ok(request);
        };
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match auth.check(header) {
            Ok(_) => Ok(request),
            Err(e) => Err(Status::unauthenticated(e.to_string())),
        }
    }
}

/// Serves Flight SQL on `listener` until `stop`.
pub async fn serve(
    service: FlightSql,
    listener: tokio::net::TcpListener,
    tls: Option<crate::Tls>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let auth = Authenticate(service.auth.clone());
    let svc = tonic::service::interceptor::InterceptedService::new(
        FlightServiceServer::new(service).max_decoding_message_size(64 << 20),
        auth,
    );
    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = tls {
        builder = builder
            .tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(tonic::transport::Identity::from_pem(&t.cert, &t.key)),
            )
            .map_err(|e| ServerError::Config(format!("server.tls: {e}")))?;
    }
    let incoming = tokio_stream_listener(listener);
    builder
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, stop)
        .await
        .map_err(|e| ServerError::Io(format!("the Flight SQL endpoint failed: {e}")))
}

/// The connections `listener` accepts, as tonic takes them.
fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((r, l))
    })
}

/// Where the Flight SQL endpoint listens, said in the log.
pub fn describe(addr: SocketAddr, tls: bool) -> String {
    format!("{}://{addr}", if tls { "grpc+tls" } else { "grpc" })
}
