use std::path::PathBuf;

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
}

impl ConnectorError {
    /// An I/O error on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
