use std::path::PathBuf;

pub use velo_config::ErrorKind;

/// Result alias of this crate.
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;

/// Connector errors: configuration (user), I/O (external), data (bad input).
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// Bad or missing configuration.
    #[error(transparent)]
    Config(#[from] velo_config::ConfigError),
    /// An I/O error on a named path.
    #[error("{action} '{path}': {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Arrow encode/decode failure.
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet failure.
    #[error("{0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Anything else a user can act on.
    #[error("{0}")]
    Other(String),
    /// An error of a connector crate of its own (velo-kafka, ...), with
    /// its kind.
    #[error("{source}")]
    Connector {
        /// Who must act on it.
        kind: ErrorKind,
        /// The connector's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A bug: something that cannot happen did (a reader thread panicked).
    #[error("internal error: {0}; please report it")]
    Internal(String),
}

impl ConnectorError {
    /// Who must act on the error: the user (configuration, bad data, a
    /// path that does not exist), an external system (I/O that may work on
    /// retry), or Velostream (a bug).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Config(e) => e.kind(),
            Self::Io { source, .. } => io_kind(source),
            Self::Arrow(arrow::error::ArrowError::IoError(_, e)) => io_kind(e),
            Self::Arrow(_) | Self::Parquet(_) | Self::Other(_) => ErrorKind::User,
            Self::Connector { kind, .. } => *kind,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }

    /// An I/O error on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// The kind of an I/O error: the user's when a path is wrong (missing, not
/// allowed, of the wrong type), else the file system's or network's.
pub fn io_kind(e: &std::io::Error) -> ErrorKind {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound
        | K::PermissionDenied
        | K::NotADirectory
        | K::IsADirectory
        | K::InvalidInput
        | K::InvalidData
        | K::AlreadyExists
        | K::ReadOnlyFilesystem
        | K::InvalidFilename
        | K::UnexpectedEof => ErrorKind::User,
        _ => ErrorKind::External,
    }
}
