//! The REST API (axum) in the seeds' shapes, and its OpenAPI 3 document
//! generated from these handlers and types (utoipa). Every error is JSON
//! (`{"error": ..., "errors": [...]}`) with a message that says what to do.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use velo_engine::EngineError;
use velo_engine::circuit::CircuitState;

use crate::auth::Auth;
use crate::error::ServerError;
use crate::jobs::{Deploy, JobView, Jobs, Phase};

/// How long `stop` and `DELETE` wait for a job to commit its epoch.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// A deployment: the SQL application and how to run it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The SQL application (CREATE STREAM / CREATE TABLE ... WITH (...)).
    pub sql: String,
    /// The application's name (default: its first job's name).
    #[serde(default)]
    pub name: Option<String>,
    /// The global config's profile to resolve it with.
    #[serde(default)]
    pub profile: Option<String>,
    /// Overrides, as `velo run --set`: `{"orders.topic": "x"}`.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Where the application's relative paths start (`velo deploy` sends
    /// the folder of the SQL file; default: the server's working folder).
    #[serde(default)]
    pub base_dir: Option<String>,
}

/// The jobs a deployment created.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeployResponse {
    /// The application's name.
    pub app: String,
    /// Its jobs, starting.
    pub jobs: Vec<JobSummary>,
    /// What the check found worth knowing (not errors).
    pub warnings: Vec<String>,
}

/// Whether a source or sink is reachable.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub enum Health {
    /// In use by a running job.
    Connected,
    /// Its job is restarting after an external error, or (a sink) its
    /// last epochs failed or its circuit is open.
    Reconnecting,
    /// Its job failed.
    Failed,
    /// Its job is stopped or finished.
    Disconnected,
}

/// A sink's circuit breaker and failures (current run).
#[derive(Debug, Serialize, ToSchema)]
pub struct CircuitDoc {
    /// `closed`, `open` or `half_open` (always `closed` without a breaker).
    pub state: String,
    /// Epochs that failed on the sink in a row.
    pub failures_in_row: u32,
    /// Epochs that failed on the sink.
    pub errors: u64,
    /// Times its circuit opened.
    pub opened: u64,
    /// Records it failed to write.
    pub records_failed: u64,
    /// Its last failure (secrets masked).
    pub last_error: Option<String>,
}

/// A job in the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobSummary {
    /// The job's name.
    pub name: String,
    /// Its application.
    pub app: String,
    /// Where it is in its life.
    pub status: Phase,
    /// Since when (RFC 3339).
    pub since: String,
    /// Its sources and their health.
    pub sources: BTreeMap<String, Health>,
    /// Its sinks and their health.
    pub sinks: BTreeMap<String, Health>,
}

/// A job's figures (seed 001's metrics document).
#[derive(Debug, Serialize, ToSchema)]
pub struct JobMetrics {
    /// Records read from every source.
    pub records_processed: u64,
    /// Records read per second, over the last seconds.
    pub records_per_second: f64,
    /// Records written to every sink.
    pub records_written: u64,
    /// Records written per second, over the last seconds.
    pub written_per_second: f64,
    /// Epochs committed.
    pub batches_processed: u64,
    /// Epochs that failed.
    pub batches_failed: u64,
    /// Errors: failed epochs, and the error the job stopped on.
    pub errors: u64,
    /// Bad records and records of failed epochs.
    pub records_failed: u64,
    /// Records behind the watermark.
    pub records_late: u64,
    /// Bad records sent to the dead-letter sink.
    pub records_dead_lettered: u64,
    /// When the last epoch committed (RFC 3339).
    pub last_record_time: Option<String>,
    /// The memory the job's operator state holds, in MiB.
    pub memory_usage_mb: f64,
    /// Rows the job's operator state holds.
    pub state_rows: u64,
    /// Records read per source.
    pub sources: BTreeMap<String, u64>,
    /// Records written per sink.
    pub sinks: BTreeMap<String, u64>,
}

/// A job's status (seed 001's document, with watermark and lag).
#[derive(Debug, Serialize, ToSchema)]
pub struct JobStatusDoc {
    /// The job's name.
    pub name: String,
    /// Its application.
    pub app: String,
    /// Where it is in its life.
    pub status: Phase,
    /// Since when (RFC 3339).
    pub since: String,
    /// Why it failed or is restarting.
    pub error: Option<String>,
    /// Automatic restarts so far.
    pub restarts: u32,
    /// Its sources and their health.
    pub sources: BTreeMap<String, Health>,
    /// Its sinks and their health.
    pub sinks: BTreeMap<String, Health>,
    /// Its figures.
    pub metrics: JobMetrics,
    /// The event-time watermark (RFC 3339), once there is one.
    pub watermark: Option<String>,
    /// How far the watermark is behind the wall clock, in ms.
    pub lag_ms: Option<i64>,
    /// Flight SQL clients subscribed to its committed epochs.
    pub subscribers: usize,
    /// Each sink's circuit and failures.
    pub circuits: BTreeMap<String, CircuitDoc>,
    /// Per source, each partition's lag in records (Kafka consumer lag).
    pub source_lag: BTreeMap<String, BTreeMap<String, i64>>,
    /// Per source: records read, and its bad, late and dead-lettered ones.
    pub source_records: BTreeMap<String, SourceRecordsDoc>,
    /// Per source with event time: how far its own watermark is behind the
    /// wall clock, in ms (the job's `lag_ms` is the slowest source's).
    pub source_watermark_lag_ms: BTreeMap<String, i64>,
}

/// One source's records.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceRecordsDoc {
    /// Records read.
    pub read: u64,
    /// Records that could not be decoded (or their event time read).
    pub failed: u64,
    /// Records behind the watermark (dropped or dead-lettered).
    pub late: u64,
    /// Bad or late records written to the dead-letter sink.
    pub dead_lettered: u64,
}

/// A job's plan, as `velo explain` prints it (secrets masked).
#[derive(Debug, Serialize, ToSchema)]
pub struct ExplainDoc {
    /// The job's name.
    pub name: String,
    /// Sources, sinks, resolved configuration and query plans.
    pub explain: String,
}

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthDoc {
    /// Always "ok" while the server answers.
    pub status: String,
}

/// Readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyDoc {
    /// Whether every deployed job that should run is running.
    pub ready: bool,
    /// The jobs not running yet.
    pub waiting: Vec<String>,
}

/// One error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorItem {
    /// What is wrong and what to do.
    pub message: String,
    /// Who must act: user, external or internal.
    pub kind: String,
    /// The job it belongs to.
    pub job: Option<String>,
    /// The line of the SQL.
    pub line: Option<usize>,
    /// The column of the SQL.
    pub column: Option<usize>,
}

/// A refused request.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDoc {
    /// The whole message.
    pub error: String,
    /// Each error on its own.
    pub errors: Vec<ErrorItem>,
}

/// An error response.
pub struct ApiError(StatusCode, ErrorDoc);

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>, kind: &str) -> Self {
        let message = velo_config::mask(&message.into()).into_owned();
        Self(
            status,
            ErrorDoc {
                error: message.clone(),
                errors: vec![ErrorItem {
                    message,
                    kind: kind.into(),
                    job: None,
                    line: None,
                    column: None,
                }],
            },
        )
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, "user")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(self.1)).into_response()
    }
}

impl From<ServerError> for ApiError {
    fn from(r: ServerError) -> Self {
        match r {
            ServerError::Invalid(errors) => {
                let mut items = Vec::new();
                for e in &errors {
                    flatten(e, None, None, &mut items);
                }
                let error = items
                    .iter()
                    .map(|i| i.message.clone())
                    .collect::<Vec<_>>()
                    .join("\n");
                Self(
                    StatusCode::BAD_REQUEST,
                    ErrorDoc {
                        error,
                        errors: items,
                    },
                )
            }
            ServerError::Limit(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, m, "user"),
            ServerError::Conflict(m) => Self::new(StatusCode::CONFLICT, m, "user"),
            ServerError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, m, "user"),
            ServerError::Io(m) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, m, "external"),
            // the server's own settings: not the caller's to fix
            ServerError::Config(m) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, m, "user"),
        }
    }
}

/// Each error of `e` as an item, with its job and place in the SQL.
fn flatten(e: &EngineError, job: Option<&str>, line: Option<usize>, out: &mut Vec<ErrorItem>) {
    match e {
        EngineError::Many(all) => {
            for e in all {
                flatten(e, job, line, out);
            }
        }
        EngineError::InJob {
            job: j,
            line: l,
            source,
        } if matches!(**source, EngineError::Many(_)) => {
            flatten(source, Some(j), Some(*l), out);
        }
        EngineError::Located {
            job: j,
            line: l,
            source,
        } => flatten(source, Some(j), Some(*l), out),
        _ => {
            let (job, line, column) = match e {
                EngineError::Sql(s) => (job.map(str::to_string), Some(s.line), Some(s.column)),
                EngineError::InJob {
                    job, line, source, ..
                } => match &**source {
                    EngineError::Sql(s) => (Some(job.clone()), Some(s.line), Some(s.column)),
                    _ => (Some(job.clone()), Some(*line), None),
                },
                _ => (job.map(str::to_string), line, None),
            };
            let kind = match e.kind() {
                velo_config::ErrorKind::User => "user",
                velo_config::ErrorKind::External => "external",
                velo_config::ErrorKind::Internal => "internal",
            };
            out.push(ErrorItem {
                message: velo_config::mask(&e.to_string()).into_owned(),
                kind: kind.into(),
                job,
                line,
                column,
            });
        }
    }
}

fn health(p: Phase) -> Health {
    match p {
        Phase::Starting | Phase::Running | Phase::Stopping => Health::Connected,
        Phase::Restarting => Health::Reconnecting,
        Phase::Failed => Health::Failed,
        Phase::Stopped | Phase::Finished => Health::Disconnected,
    }
}

fn rfc3339_ms(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// A job's summary; its sources' and sinks' health.
pub(crate) fn summary(v: &JobView) -> JobSummary {
    let h = health(v.phase);
    // a source that ended its job with an error failed (or reconnects
    // while the job restarts); the job's other sources are only stopped
    let errors = v.status.as_ref().map(|s| &s.source_errors);
    let source = |name: &str| match errors {
        Some(e) if e.contains_key(name) => match v.phase {
            Phase::Restarting => Health::Reconnecting,
            Phase::Failed => Health::Failed,
            _ => h,
        },
        Some(e) if !e.is_empty() && matches!(v.phase, Phase::Failed | Phase::Restarting) => {
            Health::Disconnected
        }
        _ => h,
    };
    let sink = |name: &str| {
        let troubled = v
            .status
            .as_ref()
            .and_then(|s| s.sink_health.get(name))
            .is_some_and(|s| s.state != CircuitState::Closed || s.failures_in_row > 0);
        match h {
            Health::Connected if troubled => Health::Reconnecting,
            h => h,
        }
    };
    JobSummary {
        name: v.name.clone(),
        app: v.app.clone(),
        status: v.phase,
        since: v.since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        sources: v.sources.iter().map(|s| (s.clone(), source(s))).collect(),
        sinks: v.sinks.iter().map(|s| (s.clone(), sink(s))).collect(),
    }
}

fn metrics(v: &JobView) -> JobMetrics {
    let t = &v.totals;
    let status = v.status.as_ref();
    JobMetrics {
        records_processed: t.records_read(),
        records_per_second: v.records_per_second,
        records_written: t.records_out.values().sum(),
        written_per_second: v.written_per_second,
        batches_processed: t.epochs,
        batches_failed: t.epochs_failed,
        errors: t.epochs_failed + u64::from(v.phase == Phase::Failed),
        records_failed: t.records_failed,
        records_late: t.records_late,
        records_dead_lettered: t.records_dead_lettered,
        last_record_time: status.and_then(|s| s.committed_at_ms).and_then(rfc3339_ms),
        memory_usage_mb: status.map_or(0.0, |s| s.memory_bytes as f64 / (1024.0 * 1024.0)),
        state_rows: status.map_or(0, |s| s.state_rows),
        sources: t.records_in.clone(),
        sinks: t.records_out.clone(),
    }
}

/// The seeds' status document of a job.
pub(crate) fn status_doc(v: &JobView) -> JobStatusDoc {
    let s = summary(v);
    let watermark = v.status.as_ref().and_then(|s| s.watermark);
    JobStatusDoc {
        name: s.name,
        app: s.app,
        status: s.status,
        since: s.since,
        error: v.error.clone(),
        restarts: v.restarts,
        sources: s.sources,
        sinks: s.sinks,
        metrics: metrics(v),
        watermark: watermark.and_then(rfc3339_ms),
        lag_ms: watermark.map(|w| chrono::Utc::now().timestamp_millis() - w),
        subscribers: v.subscribers,
        source_lag: v
            .status
            .as_ref()
            .map(|s| s.source_lag.clone())
            .unwrap_or_default(),
        source_watermark_lag_ms: v
            .status
            .iter()
            .flat_map(|s| s.source_watermarks.iter())
            .map(|(n, w)| (n.clone(), chrono::Utc::now().timestamp_millis() - w))
            .collect(),
        source_records: v
            .sources
            .iter()
            .map(|n| {
                let t = v.totals.source_records.get(n).copied().unwrap_or_default();
                let doc = SourceRecordsDoc {
                    read: v.totals.records_in.get(n).copied().unwrap_or(0),
                    failed: t.failed,
                    late: t.late,
                    dead_lettered: t.dead_lettered,
                };
                (n.clone(), doc)
            })
            .collect(),
        circuits: v
            .status
            .iter()
            .flat_map(|s| s.sink_health.iter())
            .map(|(n, h)| {
                (
                    n.clone(),
                    CircuitDoc {
                        state: h.state.as_str().into(),
                        failures_in_row: h.failures_in_row,
                        errors: h.errors,
                        opened: h.opened,
                        records_failed: h.records_failed,
                        last_error: h
                            .last_error
                            .as_deref()
                            .map(|e| velo_config::mask(e).into_owned()),
                    },
                )
            })
            .collect(),
    }
}

/// Deploys an application: every error as JSON (400), or the jobs
/// created (201), started at once.
#[utoipa::path(post, path = "/api/jobs", request_body = DeployRequest, tag = "jobs",
    responses(
        (status = 201, description = "The jobs were created and are starting", body = DeployResponse),
        (status = 400, description = "The request or the application has errors: every one", body = ErrorDoc),
        (status = 409, description = "A job or application of that name is deployed", body = ErrorDoc),
        (status = 413, description = "The request is larger than 16 MiB", body = ErrorDoc),
        (status = 422, description = "A limit of the server would be passed", body = ErrorDoc),
        (status = 500, description = "The server could not save the application", body = ErrorDoc),
    ))]
async fn deploy(State(jobs): State<Jobs>, body: Body) -> Result<Response, ApiError> {
    let limit = usize::try_from(velo_config::text::MAX_TEXT_BYTES).unwrap_or(usize::MAX);
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the deployment is larger than {} MiB, the most velo reads of an application: split the application",
                limit >> 20
            ),
            "user",
        )
    })?;
    let req: DeployRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the request is not a deployment ({e}): send JSON like {{\"sql\": \"CREATE STREAM ...\", \"name\": \"my-app\"}}"
        ))
    })?;
    let d = Deploy {
        sql: req.sql,
        name: req.name,
        profile: req.profile,
        sets: req.set.into_iter().collect(),
        base_dir: req.base_dir.map(Into::into),
    };
    let (views, warnings) = jobs.deploy(d).await?;
    let app = views.first().map(|v| v.app.clone()).unwrap_or_default();
    let doc = DeployResponse {
        app,
        jobs: views.iter().map(summary).collect(),
        warnings,
    };
    Ok((StatusCode::CREATED, axum::Json(doc)).into_response())
}

/// Every job: name, status, sources and sinks.
#[utoipa::path(get, path = "/api/jobs", tag = "jobs",
    responses((status = 200, description = "The jobs", body = Vec<JobSummary>)))]
async fn list(State(jobs): State<Jobs>) -> axum::Json<Vec<JobSummary>> {
    axum::Json(jobs.list().iter().map(summary).collect())
}

/// A job's status document.
#[utoipa::path(get, path = "/api/jobs/{name}/status", tag = "jobs",
    params(("name" = String, Path, description = "The job's name")),
    responses(
        (status = 200, description = "The job's status", body = JobStatusDoc),
        (status = 404, description = "No such job", body = ErrorDoc),
    ))]
async fn status(
    State(jobs): State<Jobs>,
    Path(name): Path<String>,
) -> Result<axum::Json<JobStatusDoc>, ApiError> {
    Ok(axum::Json(status_doc(&jobs.get(&name)?)))
}

/// Every job's status document (the dashboard's one call a second).
#[utoipa::path(get, path = "/api/status", tag = "jobs",
    responses((status = 200, description = "Every job's status", body = Vec<JobStatusDoc>)))]
async fn all_status(State(jobs): State<Jobs>) -> axum::Json<Vec<JobStatusDoc>> {
    axum::Json(jobs.list().iter().map(status_doc).collect())
}

/// The dashboard: one page, embedded in the binary, polling the API.
async fn dashboard() -> Response {
    let mut r = include_str!("../assets/dashboard.html").into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// A job's figures.
#[utoipa::path(get, path = "/api/jobs/{name}/metrics", tag = "jobs",
    params(("name" = String, Path, description = "The job's name")),
    responses(
        (status = 200, description = "The job's figures", body = JobMetrics),
        (status = 404, description = "No such job", body = ErrorDoc),
    ))]
async fn job_metrics(
    State(jobs): State<Jobs>,
    Path(name): Path<String>,
) -> Result<axum::Json<JobMetrics>, ApiError> {
    Ok(axum::Json(metrics(&jobs.get(&name)?)))
}

/// A job's sources, sinks, resolved configuration and plans (secrets
/// masked).
#[utoipa::path(get, path = "/api/jobs/{name}/explain", tag = "jobs",
    params(("name" = String, Path, description = "The job's name")),
    responses(
        (status = 200, description = "The job's plan", body = ExplainDoc),
        (status = 400, description = "The job no longer plans (its inputs changed)", body = ErrorDoc),
        (status = 404, description = "No such job", body = ErrorDoc),
        (status = 500, description = "The server's state is damaged", body = ErrorDoc),
    ))]
async fn explain(
    State(jobs): State<Jobs>,
    Path(name): Path<String>,
) -> Result<axum::Json<ExplainDoc>, ApiError> {
    let explain = jobs.explain(&name).await?;
    Ok(axum::Json(ExplainDoc { name, explain }))
}

/// Stops a job after it commits the epoch it is in; it stays stopped
/// across server restarts.
#[utoipa::path(post, path = "/api/jobs/{name}/stop", tag = "jobs",
    params(("name" = String, Path, description = "The job's name")),
    responses(
        (status = 200, description = "The job, stopped (or still stopping after a minute)", body = JobStatusDoc),
        (status = 404, description = "No such job", body = ErrorDoc),
        (status = 500, description = "The server could not save the change", body = ErrorDoc),
    ))]
async fn stop(
    State(jobs): State<Jobs>,
    Path(name): Path<String>,
) -> Result<axum::Json<JobStatusDoc>, ApiError> {
    Ok(axum::Json(status_doc(&jobs.stop(&name, STOP_WAIT).await?)))
}

/// Starts a stopped, finished or failed job again, from its checkpoint.
#[utoipa::path(post, path = "/api/jobs/{name}/start", tag = "jobs",
    params(("name" = String, Path, description = "The job's name")),
    responses(
        (status = 200, description = "The job, starting", body = JobStatusDoc),
        (status = 404, description = "No such job", body = ErrorDoc),
        (status = 409, description = "The job is running already", body = ErrorDoc),
        (status = 500, description = "The server could not save the change", body = ErrorDoc),
    ))]
async fn start(
    State(jobs): State<Jobs>,
    Path(name): Path<String>,
) -> Result<axum::Json<JobStatusDoc>, ApiError> {
    Ok(axum::Json(status_doc(&jobs.start(&name)?)))
}

/// Stops (committing) and removes a job; `purge_state=true` also removes
/// its checkpoints, so that a job deployed again under its name starts
/// from scratch.
#[utoipa::path(delete, path = "/api/jobs/{name}", tag = "jobs",
    params(
        ("name" = String, Path, description = "The job's name"),
        ("purge_state" = Option<bool>, Query, description = "Also remove the job's checkpoints"),
    ),
    responses(
        (status = 204, description = "The job is gone"),
        (status = 400, description = "purge_state is not true or false", body = ErrorDoc),
        (status = 404, description = "No such job", body = ErrorDoc),
        (status = 409, description = "The job is still committing its epoch", body = ErrorDoc),
        (status = 500, description = "The server could not save the change", body = ErrorDoc),
    ))]
async fn drop_job(
    State(jobs): State<Jobs>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, ApiError> {
    let mut purge = false;
    let query = query.unwrap_or_default();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k == "purge_state" {
            purge = match v.as_ref() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "purge_state is '{v}': write purge_state=true or purge_state=false"
                    )));
                }
            };
        }
    }
    jobs.drop_job(&name, purge, STOP_WAIT).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Liveness: the server answers.
#[utoipa::path(get, path = "/health", tag = "server",
    responses((status = 200, description = "The server is up", body = HealthDoc)))]
async fn health_check() -> axum::Json<HealthDoc> {
    axum::Json(HealthDoc {
        status: "ok".into(),
    })
}

/// Readiness: every deployed job that should run is running.
#[utoipa::path(get, path = "/ready", tag = "server",
    responses(
        (status = 200, description = "Every job runs", body = ReadyDoc),
        (status = 503, description = "Some jobs do not run yet", body = ReadyDoc),
    ))]
async fn ready(State(jobs): State<Jobs>) -> Response {
    let (ready, waiting) = jobs.ready();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(ReadyDoc { ready, waiting })).into_response()
}

/// The Prometheus metrics of every job and the process.
#[utoipa::path(get, path = "/metrics", tag = "server",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"),
        (status = 500, description = "The metrics could not be written", body = ErrorDoc),
    ))]
async fn prometheus(State(jobs): State<Jobs>) -> Response {
    metrics_response(crate::metrics::render(crate::metrics::Snapshot::of(&jobs)))
}

/// The metrics text as a response in the Prometheus text format.
pub(crate) fn metrics_response(text: Result<String, String>) -> Response {
    match text {
        Ok(text) => {
            let mut r = text.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                ),
            );
            r
        }
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e, "internal").into_response(),
    }
}

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Velostream server",
        description = "Deploy, watch and manage streaming SQL jobs"
    ),
    paths(
        deploy,
        list,
        all_status,
        status,
        job_metrics,
        explain,
        stop,
        start,
        drop_job,
        health_check,
        ready,
        prometheus
    ),
    components(schemas(
        DeployRequest,
        DeployResponse,
        JobSummary,
        JobStatusDoc,
        JobMetrics,
        ExplainDoc,
        HealthDoc,
        ReadyDoc,
        ErrorDoc,
        ErrorItem,
        CircuitDoc,
        SourceRecordsDoc,
        Health,
        Phase
    ))
)]
pub struct ApiDoc;

async fn openapi() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint: /api/openapi.json lists the API",
        "user",
    )
}

/// Refuses a request without valid credentials when `auth` is set (401,
/// asking a browser for a basic user when there are users).
async fn authenticate(
    State(auth): State<Option<Arc<Auth>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(a) = auth else {
        return next.run(request).await;
    };
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match a.check(header) {
        Ok(_) => next.run(request).await,
        Err(e) => {
            let mut r =
                ApiError::new(StatusCode::UNAUTHORIZED, e.to_string(), "user").into_response();
            let challenge = if a.has_users() {
                "Basic realm=\"velo\", charset=\"UTF-8\""
            } else {
                "Bearer realm=\"velo\""
            };
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(challenge),
            );
            r
        }
    }
}

/// The REST API's routes over `jobs`, each call checked against `auth`.
pub fn router(jobs: Jobs, auth: Option<Arc<Auth>>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/api/jobs", post(deploy).get(list))
        .route("/api/status", get(all_status))
        .route("/api/jobs/{name}", axum::routing::delete(drop_job))
        .route("/api/jobs/{name}/status", get(status))
        .route("/api/jobs/{name}/metrics", get(job_metrics))
        .route("/api/jobs/{name}/explain", get(explain))
        .route("/api/jobs/{name}/stop", post(stop))
        .route("/api/jobs/{name}/start", post(start))
        .route("/health", get(health_check))
        .route("/ready", get(ready))
        .route("/metrics", get(prometheus))
        .route("/api/openapi.json", get(openapi))
        .fallback(not_found)
        .with_state(jobs)
        .layer(axum::middleware::from_fn_with_state(auth, authenticate))
}
