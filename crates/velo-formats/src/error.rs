//! The errors of the value formats, each with its kind: what the user must
//! fix (a schema, a descriptor, values that cannot be decoded as a whole) is
//! told apart from a schema registry that failed, where retrying may help.
//! They reach the engine as [`ConnectorError`]s through `From`.

use velo_connectors::{ConnectorError, ErrorKind};

/// An error of a value format.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The schema registry failed or could not be reached.
    #[error("schema registry: {0}")]
    Registry(String),
    /// A schema or descriptor the user must fix, or values that cannot be
    /// decoded or encoded as a whole (not one bad value, which is routed as
    /// a bad record).
    #[error("{0}")]
    Format(String),
}

impl FormatError {
    /// Who must act on it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Registry(_) => ErrorKind::External,
            Self::Format(_) => ErrorKind::User,
        }
    }
}

impl From<FormatError> for ConnectorError {
    fn from(e: FormatError) -> Self {
        ConnectorError::Connector {
            kind: e.kind(),
            source: Box::new(e),
        }
    }
}

/// A format failure, as a connector error (every connector's values that
/// cannot be decoded or encoded as a whole).
pub fn format_error(e: impl std::fmt::Display) -> ConnectorError {
    FormatError::Format(e.to_string()).into()
}

/// A schema registry failure, as a connector error.
pub(crate) fn registry(e: impl std::fmt::Display) -> ConnectorError {
    FormatError::Registry(e.to_string()).into()
}
