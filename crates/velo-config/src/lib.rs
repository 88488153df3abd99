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

pub mod global;
pub mod job;
pub mod keys;
pub mod props;
pub mod time;
pub mod uri;
pub mod vars;
pub mod yaml;

mod error;

pub use error::{ConfigError, Result};
pub use job::{BatchStrategy, FailureStrategy, JobConfig};
pub use keys::{KeySpec, KeyType, Warning};
pub use props::{ConnectorConfig, Origin, Role};
pub use vars::VarContext;

/// Keys whose values are secrets: never logged, never printed by `explain`.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "auth_header",
        "api_key",
        "apikey",
        "private_key",
        "sasl.jaas",
        "credentials",
        "access_key_id",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// The value to show for `key` in logs and `explain`: `****` for secrets,
/// and the password of a `scheme://user:password@host` URI masked.
pub fn display_value<'a>(key: &str, value: &'a str) -> std::borrow::Cow<'a, str> {
    if is_secret_key(key) {
        return std::borrow::Cow::Borrowed("****");
    }
    if let Some(scheme_end) = value.find("://") {
        let rest = &value[scheme_end + 3..];
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                let start = scheme_end + 3;
                return std::borrow::Cow::Owned(format!(
                    "{}{user}:****{}",
                    &value[..start],
                    &value[start + userinfo.len()..]
                ));
            }
        }
    }
    std::borrow::Cow::Borrowed(value)
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_masked() {
        assert_eq!(super::display_value("connection.password", "x"), "****");
        assert_eq!(super::display_value("sasl.jaas.config", "x"), "****");
        assert_eq!(
            super::display_value("url", "postgresql://app:s3cret@db:5432/x?a=b"),
            "postgresql://app:****@db:5432/x?a=b"
        );
        assert_eq!(super::display_value("path", "data/x.csv"), "data/x.csv");
    }
}
