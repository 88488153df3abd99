//! The server's errors: one enum, each with its kind (who must act), which
//! the REST API turns into its status code and the binary into its exit
//! code.

use velo_config::ErrorKind;
use velo_engine::EngineError;

/// Result alias of this crate.
pub type Result<T, E = ServerError> = std::result::Result<T, E>;

/// Why the server refused or failed to do something.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The application has errors: every one of them.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<EngineError>),
    /// A limit of the server would be passed.
    #[error("{0}")]
    Limit(String),
    /// A name is taken, or the job is not in a state that allows it.
    #[error("{0}")]
    Conflict(String),
    /// No such job.
    #[error("{0}")]
    NotFound(String),
    /// The server's own settings are wrong (a limit, the global config).
    #[error("{0}")]
    Config(String),
    /// The state directory, a socket or a thread failed.
    #[error("{0}")]
    Io(String),
}

impl ServerError {
    /// Who must act on it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(e) => e
                .iter()
                .map(EngineError::kind)
                .max()
                .unwrap_or(ErrorKind::User),
            Self::Limit(_) | Self::Conflict(_) | Self::NotFound(_) | Self::Config(_) => {
                ErrorKind::User
            }
            Self::Io(_) => ErrorKind::External,
        }
    }
}
