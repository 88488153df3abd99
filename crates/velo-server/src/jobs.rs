//! The jobs a server hosts: deployed (checked, admitted against the
//! limits, saved, started), watched, stopped, started again, dropped, and
//! restarted with backoff after an external error.
//!
//! Each running job has a supervisor task: it plans the job from its
//! saved application, starts it through the engine's [`JobHandle`], waits
//! for it, and decides what its end means (finished, stopped, failed, or a
//! restart after `restart.delay`). A job that fails touches no other job.
//! The table of jobs is behind one lock that no `await` holds; a
//! supervisor whose job was stopped or dropped meanwhile finds its
//! generation outdated and leaves.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use velo_config::global::Discovery;
use velo_config::{ErrorKind, RestartPolicy, VarContext};
use velo_engine::plan::{AppInputs, AppPlan, JobPlan, resolve_inputs};
use velo_engine::runtime::{
    JobHandle, JobMonitor, JobState, JobStatus, Published, Purpose, Tap, prepare_job,
};
use velo_engine::{Engine, EngineError, Shutdown};

use crate::config::Limits;
use crate::error::ServerError;
use crate::store::{AppRecord, Store, Wanted};

/// Committed epochs a subscriber may fall behind before it is told it
/// lagged (each holds that epoch's rows).
const TAP_EPOCHS: usize = 64;

/// What a subscriber of a job receives: its output's schema, and each
/// committed epoch from now on.
pub struct Subscription {
    /// The rows of each epoch (with `_op` for an updating result).
    pub schema: SchemaRef,
    /// The committed epochs.
    pub epochs: tokio::sync::broadcast::Receiver<Arc<Published>>,
}

/// A job's kind as a query sees it.
pub enum Queryable {
    /// A `CREATE TABLE` job: its rows as of its last committed epoch.
    Table(SchemaRef, Vec<arrow::array::RecordBatch>),
    /// A `CREATE STREAM` job: nothing kept, only subscribed to.
    Stream(SchemaRef),
}

/// Where a hosted job is in its life, as the REST API and the metrics
/// name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub enum Phase {
    /// Planned and creating its sources and sinks, or restoring.
    Starting,
    /// Reading and committing epochs.
    Running,
    /// Asked to stop: committing the epoch it is in.
    Stopping,
    /// Stopped by a user after committing; stays stopped across restarts.
    Stopped,
    /// Its bounded input ended and everything was committed.
    Finished,
    /// Stopped on an error that a restart would not cure, or out of restarts.
    Failed,
    /// Failed on an external error; waiting `restart.delay` to start again
    /// from its last checkpoint.
    Restarting,
}

impl Phase {
    /// Whether the job has a supervisor (is not at rest).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Self::Starting | Self::Running | Self::Stopping | Self::Restarting
        )
    }

    /// The name used in documents and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "Starting",
            Self::Running => "Running",
            Self::Stopping => "Stopping",
            Self::Stopped => "Stopped",
            Self::Finished => "Finished",
            Self::Failed => "Failed",
            Self::Restarting => "Restarting",
        }
    }

    /// Every phase (a state-set metric has one series per phase).
    pub const ALL: [Phase; 7] = [
        Self::Starting,
        Self::Running,
        Self::Stopping,
        Self::Stopped,
        Self::Finished,
        Self::Failed,
        Self::Restarting,
    ];
}

/// What the ended runs of a job (before a restart) counted, so that a job's
/// figures keep growing across its restarts.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Records read per source.
    pub records_in: BTreeMap<String, u64>,
    /// Records written per sink.
    pub records_out: BTreeMap<String, u64>,
    /// Epochs committed.
    pub epochs: u64,
    /// Epochs failed.
    pub epochs_failed: u64,
    /// Bad records and records of failed epochs.
    pub records_failed: u64,
    /// Records behind the watermark.
    pub records_late: u64,
    /// Bad records sent to the dead-letter sink.
    pub records_dead_lettered: u64,
    /// Per source: its bad, late and dead-lettered records.
    pub source_records: BTreeMap<String, velo_engine::stats::SourceTotals>,
}

impl Totals {
    fn add(&mut self, s: &JobStatus) {
        for (k, v) in &s.records_in {
            *self.records_in.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &s.records_out {
            *self.records_out.entry(k.clone()).or_default() += v;
        }
        self.epochs += s.epochs;
        self.epochs_failed += s.epochs_failed;
        self.records_failed += s.records_failed;
        self.records_late += s.records_late;
        self.records_dead_lettered += s.records_dead_lettered;
        for (k, v) in &s.source_records {
            self.source_records.entry(k.clone()).or_default().add(v);
        }
    }

    /// Records read from every source.
    pub fn records_read(&self) -> u64 {
        self.records_in.values().sum()
    }
}

/// One job as the server sees it at a moment.
#[derive(Debug, Clone)]
pub struct JobView {
    /// The job's name.
    pub name: String,
    /// Its application.
    pub app: String,
    /// Where it is.
    pub phase: Phase,
    /// Since when (the last change of phase).
    pub since: DateTime<Utc>,
    /// Why it failed or is restarting (secrets masked).
    pub error: Option<String>,
    /// Automatic restarts so far.
    pub restarts: u32,
    /// Its sources (stream and lookup), by name.
    pub sources: Vec<String>,
    /// Its sinks, by name.
    pub sinks: Vec<String>,
    /// Everything counted, ended runs and the current one together.
    pub totals: Totals,
    /// The current (or last) run's status.
    pub status: Option<JobStatus>,
    /// Records read per second over the last seconds.
    pub records_per_second: f64,
    /// Records written per second over the last seconds.
    pub written_per_second: f64,
    /// How long committed epochs took (current run).
    pub epoch_seconds: Option<velo_engine::stats::HistogramSnapshot>,
    /// How long each committed epoch's first record waited from being read
    /// to the commit (current run).
    pub latency_seconds: Option<velo_engine::stats::HistogramSnapshot>,
    /// How long its checkpoints took (current run).
    pub checkpoint_seconds: Option<velo_engine::stats::HistogramSnapshot>,
    /// Bytes of its last checkpoint (current run; 0 before the first).
    pub checkpoint_bytes: u64,
    /// Clients subscribed to its committed epochs (`EMIT CHANGES`).
    pub subscribers: usize,
}

impl JobView {
    /// A job `velo run` hosts (not a server's): its monitor's status, its
    /// sources and sinks by name.
    pub fn of_monitor(m: &JobMonitor, sources: Vec<String>, sinks: Vec<String>) -> Self {
        let status = m.status();
        let phase = match status.state {
            JobState::Starting => Phase::Starting,
            JobState::Running => Phase::Running,
            JobState::Stopping => Phase::Stopping,
            JobState::Finished => Phase::Finished,
            JobState::Failed => Phase::Failed,
        };
        let mut totals = Totals::default();
        totals.add(&status);
        Self {
            name: m.name().to_string(),
            app: m.name().to_string(),
            phase,
            since: Utc::now() - chrono::Duration::from_std(status.elapsed).unwrap_or_default(),
            error: status.last_error.clone(),
            restarts: 0,
            sources,
            sinks,
            totals,
            status: Some(status),
            records_per_second: 0.0,
            written_per_second: 0.0,
            epoch_seconds: Some(m.epoch_seconds()),
            latency_seconds: Some(m.latency_seconds()),
            checkpoint_seconds: Some(m.checkpoints().0),
            checkpoint_bytes: m.checkpoints().1,
            subscribers: 0,
        }
    }
}

/// A deployment: the application and how to run it.
#[derive(Debug, Clone, Default)]
pub struct Deploy {
    /// The SQL application.
    pub sql: String,
    /// The application's name (default: its first job's).
    pub name: Option<String>,
    /// The global config's profile.
    pub profile: Option<String>,
    /// `name.key=value` overrides.
    pub sets: Vec<(String, String)>,
    /// Where relative paths start (default: the server's working folder).
    pub base_dir: Option<PathBuf>,
}

/// Throughput samples of a job, one a second, for its rate.
#[derive(Debug, Default)]
struct Rate {
    samples: VecDeque<(Instant, u64, u64)>,
}

impl Rate {
    const KEEP: usize = 6;

    fn sample(&mut self, read: u64, written: u64) {
        if self.samples.len() == Self::KEEP {
            self.samples.pop_front();
        }
        self.samples.push_back((Instant::now(), read, written));
    }

    /// Records read and written per second over the samples kept.
    fn per_second(&self) -> (f64, f64) {
        match (self.samples.front(), self.samples.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                let dt = (b.0 - a.0).as_secs_f64();
                (
                    b.1.saturating_sub(a.1) as f64 / dt,
                    b.2.saturating_sub(a.2) as f64 / dt,
                )
            }
            _ => (0.0, 0.0),
        }
    }
}

/// A hosted job.
struct Hosted {
    app: String,
    /// The files it writes, to refuse another job writing them too.
    outputs: Vec<PathBuf>,
    sources: Vec<String>,
    sinks: Vec<String>,
    phase: Phase,
    since: DateTime<Utc>,
    error: Option<String>,
    restarts: u32,
    /// Bumped when the job is started, stopped while restarting, or
    /// dropped: an older supervisor leaves.
    generation: u64,
    stop_asked: bool,
    monitor: Option<JobMonitor>,
    carried: Totals,
    last: Option<JobStatus>,
    wake: Arc<Notify>,
    rate: Rate,
    /// Where every run of the job sends its committed epochs, for
    /// subscribers (`EMIT CHANGES` over Flight SQL).
    tap: Tap,
    /// The rows it writes, once a run was prepared.
    output: Option<SchemaRef>,
    /// A `CREATE TABLE` job's table, from its current or last run.
    table: Option<Arc<velo_engine::tables::Table>>,
    /// Whether its statement is a `CREATE TABLE`.
    is_table: bool,
}

impl Hosted {
    fn new(app: &str, plan: Option<&JobPlan>) -> Self {
        Self {
            app: app.to_string(),
            outputs: plan.map_or_else(Vec::new, velo_engine::collisions::file_outputs),
            sources: plan.map_or_else(Vec::new, |p| {
                p.sources.iter().map(|c| c.name.clone()).collect()
            }),
            sinks: plan.map_or_else(Vec::new, |p| {
                p.sinks.iter().map(|c| c.name.clone()).collect()
            }),
            phase: Phase::Stopped,
            since: Utc::now(),
            error: None,
            restarts: 0,
            generation: 0,
            stop_asked: false,
            monitor: None,
            carried: Totals::default(),
            last: None,
            wake: Arc::new(Notify::new()),
            rate: Rate::default(),
            tap: tokio::sync::broadcast::channel(TAP_EPOCHS).0,
            output: None,
            table: None,
            is_table: plan
                .is_some_and(|p| p.statement.kind == velo_sql::StatementKind::CreateTable),
        }
    }

    fn set_phase(&mut self, p: Phase) {
        if self.phase != p {
            self.phase = p;
            self.since = Utc::now();
        }
    }

    fn view(&self, name: &str) -> JobView {
        let status = self
            .monitor
            .as_ref()
            .map(JobMonitor::status)
            .or_else(|| self.last.clone());
        let mut totals = self.carried.clone();
        if let Some(s) = status.as_ref().filter(|_| self.monitor.is_some()) {
            totals.add(s);
        }
        let mut phase = self.phase;
        if phase == Phase::Running
            && status
                .as_ref()
                .is_some_and(|s| s.state == JobState::Starting)
        {
            phase = Phase::Starting;
        }
        let (records_per_second, written_per_second) = self.rate.per_second();
        JobView {
            name: name.to_string(),
            app: self.app.clone(),
            phase,
            since: self.since,
            error: self.error.clone(),
            restarts: self.restarts,
            sources: self.sources.clone(),
            sinks: self.sinks.clone(),
            totals,
            status,
            records_per_second,
            written_per_second,
            epoch_seconds: self.monitor.as_ref().map(JobMonitor::epoch_seconds),
            latency_seconds: self.monitor.as_ref().map(JobMonitor::latency_seconds),
            checkpoint_seconds: self.monitor.as_ref().map(|m| m.checkpoints().0),
            checkpoint_bytes: self.monitor.as_ref().map_or(0, |m| m.checkpoints().1),
            subscribers: self.tap.receiver_count(),
        }
    }
}

#[derive(Default)]
struct Table {
    jobs: BTreeMap<String, Hosted>,
    apps: BTreeMap<String, AppRecord>,
}

struct Inner {
    /// The runtime the jobs and their supervisors run on (the REST API
    /// answers on a thread of its own).
    runtime: tokio::runtime::Handle,
    engine: Engine,
    limits: Limits,
    store: Store,
    config: Option<PathBuf>,
    env: VarContext,
    table: Mutex<Table>,
}

/// The jobs of a server; cheap to clone.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

/// How a run of a job ended.
enum Ended {
    /// Its input ended or it was stopped, everything committed.
    Done,
    /// It stopped on `error`.
    Error {
        message: String,
        kind: ErrorKind,
        policy: RestartPolicy,
        committed: bool,
    },
}

impl Jobs {
    /// The jobs of a server keeping its state in `store`, planning with
    /// `engine` and the global config `config`: the applications deployed
    /// before are hosted again, and the jobs that were running start again
    /// from their checkpoints. Jobs run on the current tokio runtime,
    /// whichever runtime later calls come from.
    pub fn open(
        engine: Engine,
        limits: Limits,
        store: Store,
        config: Option<PathBuf>,
        env: VarContext,
    ) -> Self {
        let jobs = Self {
            inner: Arc::new(Inner {
                runtime: tokio::runtime::Handle::current(),
                engine,
                limits,
                store,
                config,
                env,
                table: Mutex::default(),
            }),
        };
        jobs.restore();
        jobs.sample_rates();
        jobs
    }

    /// The server's limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The engine the jobs run on.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Phase: the applications saved by an earlier run hosted again.
    fn restore(&self) {
        let (apps, errors) = self.inner.store.load();
        for e in errors {
            tracing::error!("a deployed application could not be read and is not hosted: {e}");
        }
        for app in apps {
            let plans = self.inner.plan(&app).map(|(p, _)| p).ok();
            let mut start = Vec::new();
            {
                let mut t = self.table();
                for (job, wanted) in &app.jobs {
                    let plan = plans
                        .as_ref()
                        .and_then(|p| p.jobs.iter().find(|j| &j.name == job));
                    t.jobs.insert(job.clone(), Hosted::new(&app.app, plan));
                    if *wanted == Wanted::Running {
                        start.push(job.clone());
                    }
                }
                t.apps.insert(app.app.clone(), app);
            }
            for job in start {
                tracing::info!("job '{job}' was running: starting it again from its checkpoint");
                self.spawn(&job);
            }
        }
    }

    /// Every second, each job's throughput sample.
    fn sample_rates(&self) {
        let weak = Arc::downgrade(&self.inner);
        self.inner.runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let jobs = Jobs { inner };
                let views = jobs.list();
                let mut t = jobs.table();
                for v in views {
                    if let Some(h) = t.jobs.get_mut(&v.name) {
                        h.rate
                            .sample(v.totals.records_read(), v.totals.records_out.values().sum());
                    }
                }
            }
        });
    }

    /// Every job, by name.
    pub fn list(&self) -> Vec<JobView> {
        self.table().jobs.iter().map(|(n, h)| h.view(n)).collect()
    }

    /// Job `name`.
    pub fn get(&self, name: &str) -> Result<JobView, ServerError> {
        self.table()
            .jobs
            .get(name)
            .map(|h| h.view(name))
            .ok_or_else(|| not_found(name))
    }

    /// Whether every job that should run has started (or finished).
    pub fn ready(&self) -> (bool, Vec<String>) {
        let t = self.table();
        let waiting: Vec<String> = t
            .apps
            .values()
            .flat_map(|a| a.jobs.iter())
            .filter(|(_, w)| **w == Wanted::Running)
            .filter(|(n, _)| {
                t.jobs.get(*n).is_none_or(|h| {
                    let v = h.view(n);
                    !matches!(v.phase, Phase::Running | Phase::Finished)
                })
            })
            .map(|(n, _)| n.clone())
            .collect();
        (waiting.is_empty(), waiting)
    }

    /// The `velo explain` text of job `name` (secrets masked).
    pub async fn explain(&self, name: &str) -> Result<String, ServerError> {
        let job = self.app_of(name).and_then(|a| self.job_plan(&a, name))?;
        let p = prepare_job(&job, &Shutdown::default(), Purpose::Check)
            .await
            .map_err(|e| ServerError::Invalid(vec![e]))?;
        Ok(velo_config::mask(&velo_engine::runtime::explain_text(&p)).into_owned())
    }

    /// Subscribes to job `name`'s committed epochs from now on.
    pub async fn subscribe(&self, name: &str) -> Result<Subscription, ServerError> {
        let epochs = {
            let t = self.table();
            t.jobs
                .get(name)
                .ok_or_else(|| not_found(name))?
                .tap
                .subscribe()
        };
        Ok(Subscription {
            schema: self.output_schema(name).await?,
            epochs,
        })
    }

    /// The rows job `name` writes: known once a run was prepared, else
    /// planned now.
    pub async fn output_schema(&self, name: &str) -> Result<SchemaRef, ServerError> {
        if let Some(s) = self
            .table()
            .jobs
            .get(name)
            .ok_or_else(|| not_found(name))?
            .output
            .clone()
        {
            return Ok(s);
        }
        let job = self.app_of(name).and_then(|a| self.job_plan(&a, name))?;
        let p = prepare_job(&job, &Shutdown::default(), Purpose::Check)
            .await
            .map_err(|e| ServerError::Invalid(vec![e]))?;
        Ok(p.output_schema())
    }

    /// Whether job `name` is a `CREATE TABLE`.
    pub fn is_table(&self, name: &str) -> bool {
        self.table().jobs.get(name).is_some_and(|h| h.is_table)
    }

    /// Every job that has run, as a query sees it: tables with their rows
    /// as of their last committed epoch, streams with their schema.
    pub fn queryable(&self) -> BTreeMap<String, Queryable> {
        let t = self.table();
        t.jobs
            .iter()
            .filter_map(|(n, h)| {
                let q = match (&h.table, &h.output) {
                    (Some(table), _) => {
                        let rows = table.rows();
                        let rows = rows.read().unwrap_or_else(|e| e.into_inner()).clone();
                        Queryable::Table(table.schema(), rows)
                    }
                    (None, Some(schema)) => Queryable::Stream(schema.clone()),
                    (None, None) => return None,
                };
                Some((n.clone(), q))
            })
            .collect()
    }

    fn app_of(&self, job: &str) -> Result<AppRecord, ServerError> {
        let t = self.table();
        let h = t.jobs.get(job).ok_or_else(|| not_found(job))?;
        t.apps
            .get(&h.app)
            .cloned()
            .ok_or_else(|| ServerError::Io(format!("the application of job '{job}' is missing")))
    }

    /// Deploys an application: checked (every error), admitted against
    /// the limits and the names in use, saved, and its jobs started.
    pub async fn deploy(&self, d: Deploy) -> Result<(Vec<JobView>, Vec<String>), ServerError> {
        let record = AppRecord {
            app: String::new(),
            sql: d.sql,
            base_dir: d
                .base_dir
                .or_else(|| std::env::current_dir().ok())
                .unwrap_or_else(|| PathBuf::from(".")),
            profile: d.profile,
            sets: d.sets,
            jobs: BTreeMap::new(),
            deployed_at: Utc::now().to_rfc3339(),
        };
        let (plan, warnings) = self.check(&record).await?;
        let mut record = record;
        record.app = d
            .name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| plan.jobs[0].name.clone());
        record.jobs = plan
            .jobs
            .iter()
            .map(|j| (j.name.clone(), Wanted::Running))
            .collect();
        self.admit(&record, &plan)?;
        if let Err(e) = self.inner.store.save(&record) {
            self.forget(&record);
            return Err(e);
        }
        let names: Vec<String> = record.jobs.keys().cloned().collect();
        for n in &names {
            self.spawn(n);
        }
        let views = names.iter().filter_map(|n| self.get(n).ok()).collect();
        Ok((views, warnings))
    }

    /// Phase: the application resolved and its jobs planned offline, as
    /// `velo validate` does; every error, or the plan and its warnings.
    async fn check(&self, app: &AppRecord) -> Result<(AppPlan, Vec<String>), ServerError> {
        if app.sql.trim().is_empty() {
            return Err(ServerError::Invalid(vec![EngineError::Invalid(
                "the application is empty: send the SQL text of CREATE STREAM / CREATE TABLE statements in 'sql'".into(),
            )]));
        }
        let (mut plan, mut errors) = self
            .inner
            .plan(app)
            .map_err(|e| ServerError::Invalid(vec![e]))?;
        velo_engine::plan::check_offline(&mut plan, &mut errors).await;
        if !errors.is_empty() {
            return Err(ServerError::Invalid(errors));
        }
        if plan.jobs.is_empty() {
            return Err(ServerError::Invalid(vec![EngineError::Invalid(
                "the application has no job: it needs a CREATE STREAM or CREATE TABLE ... AS SELECT statement".into(),
            )]));
        }
        let warnings = plan
            .warnings
            .iter()
            .map(|w| velo_config::mask(w).into_owned())
            .collect();
        Ok((plan, warnings))
    }

    /// Phase: the names are free and the limits hold; the jobs are entered
    /// (stopped) in the same lock, so that two deployments cannot both
    /// take the last place.
    fn admit(&self, app: &AppRecord, plan: &AppPlan) -> Result<(), ServerError> {
        let l = &self.inner.limits;
        for j in &plan.jobs {
            // the name is a folder of the state directory and a URL segment
            let safe = !j.name.is_empty()
                && j.name.len() <= 200
                && !j.name.starts_with('.')
                && j.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !safe {
                return Err(ServerError::Invalid(vec![EngineError::Invalid(format!(
                    "the job name '{}' cannot be hosted: a server's job names are letters, digits, '-', '_' and '.' (not first), at most 200; rename the stream or set 'job.name'",
                    j.name
                ))]));
            }
            if j.sources.len() > l.max_sources_per_job {
                return Err(ServerError::Limit(format!(
                    "job '{}' reads {} sources; this server allows {} per job ({}={}): split the job or raise the limit",
                    j.name,
                    j.sources.len(),
                    l.max_sources_per_job,
                    Limits::max_sources_name(),
                    l.max_sources_per_job
                )));
            }
            if j.sinks.len() > l.max_sinks_per_job {
                return Err(ServerError::Limit(format!(
                    "job '{}' writes {} sinks; this server allows {} per job ({}={}): split the job or raise the limit",
                    j.name,
                    j.sinks.len(),
                    l.max_sinks_per_job,
                    Limits::max_sinks_name(),
                    l.max_sinks_per_job
                )));
            }
        }
        let mut t = self.table();
        if t.apps.contains_key(&app.app) {
            return Err(ServerError::Conflict(format!(
                "an application named '{}' is deployed already: drop its jobs first, or deploy under another name",
                app.app
            )));
        }
        for j in &plan.jobs {
            if t.jobs.contains_key(&j.name) {
                return Err(ServerError::Conflict(format!(
                    "a job named '{0}' is deployed already: DELETE /api/jobs/{0} first, or name the stream differently",
                    j.name
                )));
            }
        }
        for j in &plan.jobs {
            for path in velo_engine::collisions::file_outputs(j) {
                if let Some((other, _)) = t.jobs.iter().find(|(_, h)| h.outputs.contains(&path)) {
                    return Err(ServerError::Conflict(format!(
                        "job '{}' would write '{}', which job '{other}' writes already: their epochs would overwrite each other's output; give it its own path",
                        j.name,
                        path.display()
                    )));
                }
            }
        }
        if t.jobs.len() + plan.jobs.len() > l.max_jobs {
            return Err(ServerError::Limit(format!(
                "the server hosts {} job(s) and this application has {}; it allows {} ({}={}): drop a job or raise the limit",
                t.jobs.len(),
                plan.jobs.len(),
                l.max_jobs,
                Limits::max_jobs_name(),
                l.max_jobs
            )));
        }
        for j in &plan.jobs {
            t.jobs
                .insert(j.name.clone(), Hosted::new(&app.app, Some(j)));
        }
        t.apps.insert(app.app.clone(), app.clone());
        Ok(())
    }

    fn forget(&self, app: &AppRecord) {
        let mut t = self.table();
        for j in app.jobs.keys() {
            t.jobs.remove(j);
        }
        t.apps.remove(&app.app);
    }

    /// Records job `name`'s wanted state in its saved application.
    fn want(&self, name: &str, wanted: Wanted) -> Result<(), ServerError> {
        let record = {
            let mut t = self.table();
            let app = t
                .jobs
                .get(name)
                .map(|h| h.app.clone())
                .ok_or_else(|| not_found(name))?;
            let Some(a) = t.apps.get_mut(&app) else {
                return Err(ServerError::Io(format!(
                    "the application of job '{name}' is missing"
                )));
            };
            a.jobs.insert(name.to_string(), wanted);
            a.clone()
        };
        self.inner.store.save(&record)
    }

    /// Starts a stopped, finished or failed job again (from its checkpoint).
    pub fn start(&self, name: &str) -> Result<JobView, ServerError> {
        let phase = self.get(name)?.phase;
        if phase.is_active() {
            return Err(ServerError::Conflict(format!(
                "job '{name}' is {} already; stop it first to start it again",
                phase.as_str()
            )));
        }
        self.want(name, Wanted::Running)?;
        self.spawn(name);
        self.get(name)
    }

    /// Stops job `name` after it commits the epoch it is in; waits (up to
    /// `wait`) until it has.
    pub async fn stop(&self, name: &str, wait: Duration) -> Result<JobView, ServerError> {
        self.want(name, Wanted::Stopped)?;
        {
            let mut t = self.table();
            let h = t.jobs.get_mut(name).ok_or_else(|| not_found(name))?;
            if h.phase.is_active() {
                h.stop_asked = true;
                match &h.monitor {
                    Some(m) => {
                        m.stop();
                        h.set_phase(Phase::Stopping);
                    }
                    // restarting, or starting without a job yet: a running
                    // supervisor stops its job as soon as it has one
                    None if h.phase == Phase::Restarting => {
                        h.generation += 1;
                        h.set_phase(Phase::Stopped);
                        h.wake.notify_waiters();
                    }
                    None => h.set_phase(Phase::Stopping),
                }
            }
        }
        self.settle(name, wait).await
    }

    /// Waits until job `name` is at rest (or `wait` passed).
    async fn settle(&self, name: &str, wait: Duration) -> Result<JobView, ServerError> {
        let until = Instant::now() + wait;
        loop {
            let v = self.get(name)?;
            if !v.phase.is_active() || Instant::now() >= until {
                return Ok(v);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Drops job `name`: stopped first (committing), then forgotten; with
    /// `purge`, its checkpoints are removed too.
    pub async fn drop_job(
        &self,
        name: &str,
        purge: bool,
        wait: Duration,
    ) -> Result<(), ServerError> {
        let v = self.stop(name, wait).await?;
        if v.phase.is_active() {
            return Err(ServerError::Conflict(format!(
                "job '{name}' is still committing its epoch after {}s; try again",
                wait.as_secs()
            )));
        }
        let record = {
            let mut t = self.table();
            let Some(h) = t.jobs.remove(name) else {
                return Err(not_found(name));
            };
            let app = t.apps.get_mut(&h.app).map(|a| {
                a.jobs.remove(name);
                a.clone()
            });
            if app.as_ref().is_some_and(|a| a.jobs.is_empty()) {
                t.apps.remove(&h.app);
            }
            app
        };
        match record {
            Some(a) if a.jobs.is_empty() => self.inner.store.remove(&a.app),
            Some(a) => self.inner.store.save(&a),
            None => Ok(()),
        }?;
        if purge {
            self.inner.store.purge(name)?;
        }
        Ok(())
    }

    /// Stops every job after its current epoch (the server shuts down);
    /// their wanted states stay as they are, so they start again with the
    /// server.
    pub async fn shutdown(&self, wait: Duration) {
        let names: Vec<String> = {
            let t = self.table();
            for h in t.jobs.values() {
                if let Some(m) = &h.monitor {
                    m.stop();
                }
            }
            t.jobs.keys().cloned().collect()
        };
        for n in names {
            let _ = self.settle(&n, wait).await;
        }
    }

    /// Starts a supervisor for job `name`.
    fn spawn(&self, name: &str) {
        let generation = {
            let mut t = self.table();
            let Some(h) = t.jobs.get_mut(name) else {
                return;
            };
            h.generation += 1;
            h.stop_asked = false;
            h.error = None;
            h.set_phase(Phase::Starting);
            h.generation
        };
        self.inner
            .runtime
            .spawn(supervise(self.clone(), name.to_string(), generation));
    }

    /// Changes job `name` if `generation` is still its own; whether it was.
    fn update(&self, name: &str, generation: u64, f: impl FnOnce(&mut Hosted)) -> bool {
        let mut t = self.table();
        match t.jobs.get_mut(name) {
            Some(h) if h.generation == generation => {
                f(h);
                true
            }
            _ => false,
        }
    }

    /// Phase: one run of job `name`, from planning to its end.
    async fn run_once(&self, name: &str, generation: u64) -> Ended {
        let plan = match self.app_of(name).and_then(|a| self.job_plan(&a, name)) {
            Ok(mut p) => {
                // every run after the job's first continues its output
                p.continues = self.inner.store.has_run(name);
                self.inner.store.mark_run(name);
                p
            }
            Err(e) => {
                return Ended::Error {
                    message: e.to_string(),
                    kind: ErrorKind::User,
                    policy: RestartPolicy::default(),
                    committed: false,
                };
            }
        };
        let policy = plan.job.restart;
        let error = |e: EngineError, committed| Ended::Error {
            message: velo_config::mask(&e.to_string()).into_owned(),
            kind: e.kind(),
            policy,
            committed,
        };
        let shutdown = Shutdown::default();
        let prepared = match prepare_job(&plan, &shutdown, Purpose::Run).await {
            Ok(p) => p,
            Err(e) => return error(e, false),
        };
        let tap = self.table().jobs.get(name).map(|h| h.tap.clone());
        let handle = JobHandle::start_tapped(prepared, shutdown, tap);
        let monitor = handle.monitor();
        let current = self.update(name, generation, |h| {
            h.monitor = Some(monitor.clone());
            h.output = Some(monitor.output_schema());
            h.table = monitor.table();
            if h.stop_asked {
                monitor.stop();
            } else {
                h.set_phase(Phase::Running);
            }
        });
        if !current {
            monitor.stop();
        }
        let r = handle.wait().await;
        let status = monitor.status();
        {
            let mut t = self.table();
            if let Some(h) = t.jobs.get_mut(name) {
                h.carried.add(&status);
                h.last = Some(status.clone());
                h.monitor = None;
            }
        }
        match r {
            Ok(_) => Ended::Done,
            Err(e) => error(e, status.epochs > 0),
        }
    }

    /// The plan of job `name` of `app`, with the server's defaults.
    fn job_plan(&self, app: &AppRecord, name: &str) -> Result<JobPlan, ServerError> {
        let (plan, errors) = self
            .inner
            .plan(app)
            .map_err(|e| ServerError::Invalid(vec![e]))?;
        let Some(mut job) = plan.jobs.into_iter().find(|j| j.name == name) else {
            return Err(ServerError::Invalid(if errors.is_empty() {
                vec![EngineError::Invalid(format!(
                    "job '{name}' is no longer in its application"
                ))]
            } else {
                errors
            }));
        };
        if job.job.batch_timeout.is_none() {
            job.job.batch_timeout = self.inner.limits.batch_timeout;
        }
        Ok(job)
    }
}

impl Inner {
    /// Resolves `app` with the server's inputs: its own SQL, base folder,
    /// profile and overrides, the server's environment and global config,
    /// and the server's checkpoint folder as every job's `state.dir`
    /// (unless the deployment overrides it).
    fn plan(&self, app: &AppRecord) -> Result<(AppPlan, Vec<EngineError>), EngineError> {
        let global = Discovery::from_process(self.config.clone(), app.profile.clone()).load()?;
        let mut sets = vec![(
            "state.dir".to_string(),
            self.store.checkpoints().to_string_lossy().into_owned(),
        )];
        sets.extend(app.sets.iter().cloned());
        resolve_inputs(&AppInputs {
            sql: app.sql.clone(),
            base_dir: app.base_dir.clone(),
            env: self.env.clone(),
            global,
            sets,
            engine: self.engine.clone(),
        })
    }
}

fn not_found(name: &str) -> ServerError {
    ServerError::NotFound(format!(
        "no job named '{name}' is deployed: GET /api/jobs lists the jobs"
    ))
}

/// A job's supervisor: runs it, and after an external error starts it
/// again with backoff as its `restart.*` keys say.
async fn supervise(jobs: Jobs, name: String, generation: u64) {
    let mut attempt = 0u32;
    loop {
        jobs.update(&name, generation, |h| h.set_phase(Phase::Starting));
        let ended = jobs.run_once(&name, generation).await;
        let (message, kind, policy, committed) = match ended {
            Ended::Done => {
                jobs.update(&name, generation, |h| {
                    let p = if h.stop_asked {
                        Phase::Stopped
                    } else {
                        Phase::Finished
                    };
                    h.set_phase(p);
                });
                return;
            }
            Ended::Error {
                message,
                kind,
                policy,
                committed,
            } => (message, kind, policy, committed),
        };
        if committed {
            attempt = 0;
        }
        attempt += 1;
        let mut wait = None;
        let mut wake = None;
        let current = jobs.update(&name, generation, |h| {
            h.error = Some(message.clone());
            wait = (kind == ErrorKind::External && !h.stop_asked)
                .then(|| policy.wait(attempt))
                .flatten();
            match wait {
                Some(_) => {
                    h.restarts += 1;
                    h.set_phase(Phase::Restarting);
                    wake = Some(h.wake.clone());
                }
                // stopped while it failed: stopped, with its error kept
                None if h.stop_asked => h.set_phase(Phase::Stopped),
                None => h.set_phase(Phase::Failed),
            }
        });
        match (current, wait, wake) {
            (true, Some(d), Some(wake)) => {
                tracing::warn!(
                    "job '{name}' failed ({message}); restart {attempt} of {} in {d:?}",
                    policy.max_attempts
                );
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = wake.notified() => {}
                }
            }
            (true, ..) => {
                tracing::error!("job '{name}' failed: {message}");
                return;
            }
            _ => return,
        }
    }
}
