//! # velo-config: from `WITH (...)` and YAML files to typed configuration
//!
//! Sits between the SQL front end (`velo-sql`, which hands over the raw
//! `'<name>.<key>' = 'value'` pairs of every statement) and the connector
//! registry (`velo-connectors`, which builds sources and sinks from a
//! [`ConnectorConfig`]). Everything a user can configure passes through here:
//!
//! * **named keys**: `'<name>.<key>'` belongs to the source or sink `<name>`,
//!   keys without a known prefix are job keys ([`props`]);
//! * **config files**: `'<name>.config_file'` YAML, resolved relative to the
//!   SQL file, with single and multi-level `extends`, recursive map merge,
//!   list replacement, dotted-key flattening and cycle detection ([`yaml`]);
//! * **variables**: `${VAR}`, `${VAR:-default}`, `${DATE}`/`${TIME}` and the
//!   variables of the active profile ([`vars`]);
//! * **the global config file** with `profiles:` ([`global`]);
//! * **validation**: unknown keys warn with a did-you-mean suggestion, values
//!   are type-checked against [`keys::KeySpec`] tables ([`keys`]);
//! * **typed job settings**: batching, transactions, failure strategy ([`job`]);
//! * **URIs** used in place of names: `'file:///x/*.csv?format=csv'` ([`uri`]).
//!
//! Nothing here touches the network or a connector SDK.

#[doc(hidden)]
pub mod fuzzing;
pub mod global;
pub mod job;
pub mod keys;
pub mod props;
pub mod secrets;
pub mod text;
pub mod time;
pub mod uri;
pub mod vars;
pub mod yaml;

mod error;

pub use error::{ConfigError, ErrorKind, Result};
pub use job::{BatchStrategy, FailureStrategy, JobConfig, RestartBackoff, RestartPolicy};
pub use keys::{KeySpec, KeyType, Warning};
pub use props::{ConnectorConfig, Origin, Role};
pub use vars::VarContext;

pub use secrets::{display_value, is_secret_key, mask};
