//! The errors of the Kafka connector, each with its kind: what the user
//! must fix (configuration, schemas, topics, values that cannot be encoded)
//! is told apart from what failed outside (brokers; the schema registry's
//! errors are velo-formats'),
//! where retrying may help. They reach the engine as
//! [`ConnectorError`]s through `From`.

use velo_connectors::{ConnectorError, ErrorKind};

/// An error of the Kafka connector.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// A call to the brokers failed: unreachable, timed out, refused.
    #[error("{0}")]
    Broker(String),
    /// The job's configuration, a schema, a descriptor or a topic that the
    /// user must fix.
    #[error("{0}")]
    Setup(String),
}

impl KafkaError {
    /// Who must act on it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Broker(_) => ErrorKind::External,
            Self::Setup(_) => ErrorKind::User,
        }
    }
}

impl From<KafkaError> for ConnectorError {
    fn from(e: KafkaError) -> Self {
        ConnectorError::Connector {
            kind: e.kind(),
            source: Box::new(e),
        }
    }
}

/// A broker call's failure, as a connector error.
pub(crate) fn broker(e: impl std::fmt::Display) -> ConnectorError {
    KafkaError::Broker(e.to_string()).into()
}

/// Something the user must fix, as a connector error.
pub(crate) fn setup(e: impl std::fmt::Display) -> ConnectorError {
    KafkaError::Setup(e.to_string()).into()
}

/// Values that cannot be decoded or encoded as a whole (not one bad
/// record, which is routed as one): velo-formats' error.
pub(crate) use velo_formats::error::format_error;
