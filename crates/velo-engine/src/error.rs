/// Result alias of this crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

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
    },
    /// A source failed while running.
    #[error("source '{name}' failed: {message}")]
    Source {
        /// Source name.
        name: String,
        /// Cause.
        message: String,
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
    },
    /// The query cannot be planned or failed while executing.
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// Something the user must change in the application.
    #[error("{0}")]
    Invalid(String),
    /// Several errors (validate lists them all).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Many(Vec<EngineError>),
}
