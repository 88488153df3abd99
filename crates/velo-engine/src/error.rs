/// Result alias of this crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

pub use velo_config::ErrorKind;

/// Engine errors. User errors (SQL, config, bad record) are told apart from
/// external failures (a sink that cannot write) and internal ones.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The SQL does not parse.
    #[error("{0}")]
    Sql(#[from] velo_sql::SqlError),
    /// The configuration is wrong.
    #[error("{0}")]
    Config(#[from] velo_config::ConfigError),
    /// A source could not be created.
    #[error("Failed to create source '{name}': {message}")]
    SourceCreation {
        /// Source name.
        name: String,
        /// Cause.
        message: String,
        /// Who must act on it: the user (a wrong setting), or an external
        /// system (brokers that cannot be reached).
        kind: ErrorKind,
    },
    /// A source failed while running.
    #[error("source '{name}' failed: {message}")]
    Source {
        /// Source name.
        name: String,
        /// Cause.
        message: String,
        /// Who must act on it.
        kind: ErrorKind,
    },
    /// FailBatch stopped the job at a bad record.
    #[error(
        "job '{job}' stopped (FailBatch) at epoch {epoch}: {record}; nothing of this epoch was published"
    )]
    BadRecord {
        /// Job.
        job: String,
        /// Epoch.
        epoch: u64,
        /// The record.
        record: String,
    },
    /// A sink failed and the failure strategy says stop.
    #[error("job '{job}' stopped at epoch {epoch}: sink '{sink}' failed: {message}")]
    Sink {
        /// Job.
        job: String,
        /// Epoch.
        epoch: u64,
        /// Sink.
        sink: String,
        /// Cause.
        message: String,
        /// Who must act on it.
        kind: ErrorKind,
    },
    /// The query cannot be planned or failed while executing (shown
    /// without DataFusion's wrapping, rule names and plans).
    #[error("{}", datafusion_message(.0))]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// An error of one job, with the statement it came from.
    #[error("job '{job}' (line {line}): {source}")]
    InJob {
        /// The job.
        job: String,
        /// The line of its statement.
        line: usize,
        /// What went wrong.
        source: Box<EngineError>,
    },
    /// An error of a job's statement, shown as its cause alone (the
    /// messages users rely on stay as they are) while its job and line
    /// travel with it for whoever reports them apart (the job server's
    /// JSON errors).
    #[error("{source}")]
    Located {
        /// The job.
        job: String,
        /// The line of its statement.
        line: usize,
        /// What went wrong.
        source: Box<EngineError>,
    },
    /// Something the user must change in the application.
    #[error("{0}")]
    Invalid(String),
    /// A bug: something that cannot happen did.
    #[error("internal error: {0}; please report it")]
    Internal(String),
    /// A sink, store or service failed or cannot be reached: retrying may help.
    #[error("{0}")]
    External(String),
    /// Several errors (validate lists them all).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Many(Vec<EngineError>),
}

impl EngineError {
    /// Who must act on the error (the user, an external system, or
    /// Velostream): it decides retries and the exit code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Sql(_) | Self::Config(_) | Self::Invalid(_) | Self::BadRecord { .. } => {
                ErrorKind::User
            }
            Self::SourceCreation { kind, .. } => *kind,
            Self::Source { kind, .. } => *kind,
            Self::Sink { kind, .. } => *kind,
            Self::External(_) => ErrorKind::External,
            Self::Internal(_) => ErrorKind::Internal,
            Self::DataFusion(e) => datafusion_kind(e),
            Self::Many(all) => all
                .iter()
                .map(|e| e.kind())
                .max()
                .unwrap_or(ErrorKind::User),
            Self::InJob { source, .. } | Self::Located { source, .. } => source.kind(),
        }
    }

    /// This error as one of job `job`, whose statement is at `line`,
    /// unless its message names the job already.
    pub fn in_job(self, job: &str, line: usize) -> Self {
        if matches!(self, Self::InJob { .. }) || self.to_string().contains(&format!("job '{job}'"))
        {
            return self;
        }
        Self::InJob {
            job: job.to_string(),
            line,
            source: Box::new(self),
        }
    }
}

/// A DataFusion error as users read it: the root cause, without the names
/// of the optimizer rules it passed through, DataFusion's category prefix
/// or the plan it may print after its first line.
pub fn datafusion_message(e: &datafusion::error::DataFusionError) -> String {
    let root = e.find_root().to_string();
    let first = root.lines().next().unwrap_or_default();
    let mut msg = first;
    for prefix in [
        "Error during planning: ",
        "Execution error: ",
        "This feature is not implemented: ",
        "Schema error: ",
        "External error: ",
        "Arrow error: ",
    ] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            msg = rest;
            break;
        }
    }
    msg.to_string()
}

/// The kind of a DataFusion error: planning and execution errors are about
/// the query or its data (the user's), I/O and exhausted resources are
/// external, and DataFusion's own "internal" errors are bugs.
pub fn datafusion_kind(e: &datafusion::error::DataFusionError) -> ErrorKind {
    use datafusion::error::DataFusionError as E;
    match e.find_root() {
        E::Internal(_) => ErrorKind::Internal,
        E::IoError(io) => velo_connectors::io_kind(io),
        E::ObjectStore(_) | E::ResourcesExhausted(_) => ErrorKind::External,
        E::External(x) => {
            if let Some(c) = x.downcast_ref::<velo_connectors::ConnectorError>() {
                c.kind()
            } else if let Some(k) = x.downcast_ref::<KindedError>() {
                k.kind
            } else {
                ErrorKind::User
            }
        }
        _ => ErrorKind::User,
    }
}

/// A message with its kind, to carry through DataFusion's `External`.
#[derive(Debug)]
pub struct KindedError {
    /// Who must act on it.
    pub kind: ErrorKind,
    /// What happened.
    pub message: String,
}

impl std::fmt::Display for KindedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for KindedError {}
