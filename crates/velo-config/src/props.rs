//! Named properties: `'<name>.<key>'` in WITH, merged with the YAML of
//! `'<name>.config_file'`, variables substituted, type resolved.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{ConfigError, Result, VarContext};

/// Whether a connector is read (FROM/JOIN) or written (INTO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// FROM / JOIN.
    Source,
    /// INTO.
    Sink,
}

impl Role {
    /// `source` / `sink`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Sink => "sink",
        }
    }
}

/// Where a connector's config came from (for `explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Named keys in WITH (and perhaps a config_file).
    Named,
    /// A quoted URI in place of a name.
    Uri(String),
}

/// The resolved configuration of one source or sink.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorConfig {
    /// The name used in the SQL.
    pub name: String,
    /// Source or sink.
    pub role: Role,
    /// Plain connector kind: `file`, `kafka`, `datagen`, `stdout`, ...
    pub kind: String,
    /// Keys without the `<name>.` prefix, YAML merged, inline overriding,
    /// variables substituted. Does not contain `type` or `config_file`.
    pub props: BTreeMap<String, String>,
    /// Where it came from.
    pub origin: Origin,
    /// Directory relative paths are resolved against (the SQL file's).
    pub base_dir: std::path::PathBuf,
    /// The job (statement) it belongs to, once planned; connectors derive
    /// per-job defaults from it (a Kafka consumer group, a transactional id).
    pub job: String,
}

impl ConnectorConfig {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props.get(key).map(String::as_str)
    }

    /// The first present of several alias keys.
    pub fn get_any(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|k| self.get(k))
    }

    /// The full key as the user wrote it, for messages.
    pub fn full_key(&self, key: &str) -> String {
        format!("{}.{}", self.name, key)
    }

    /// The value of `key`, or an error saying to set it.
    pub fn require(&self, key: &str, hint: &str) -> Result<&str> {
        self.get(key).ok_or_else(|| ConfigError::MissingKey {
            key: self.full_key(key),
            hint: hint.to_string(),
        })
    }

    /// `key` parsed as bool (`default` when absent).
    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => {
                crate::keys::parse_bool(v).ok_or_else(|| self.invalid(key, v, "true or false"))
            }
        }
    }

    /// `key` parsed as an unsigned number.
    pub fn uint(&self, key: &str) -> Result<Option<u64>> {
        self.get(key)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| self.invalid(key, v, "a whole number"))
            })
            .transpose()
    }

    /// `key` parsed as a duration (`500ms`, `2s`, `5m`, a bare number of ms).
    pub fn duration(&self, key: &str) -> Result<Option<std::time::Duration>> {
        self.get(key)
            .map(|v| {
                crate::keys::parse_duration(v)
                    .ok_or_else(|| self.invalid(key, v, "a duration such as 500ms, 2s, 5m"))
            })
            .transpose()
    }

    /// An invalid-value error for `key`.
    pub fn invalid(&self, key: &str, value: &str, expected: &str) -> ConfigError {
        ConfigError::InvalidValue {
            key: self.full_key(key),
            value: crate::display_value(key, value).into_owned(),
            expected: expected.to_string(),
        }
    }

    /// A path value resolved against the SQL file's directory.
    pub fn path(&self, value: &str) -> std::path::PathBuf {
        let p = Path::new(value);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// Splits a `type` value into (plain kind, declared role). `kafka_source` ->
/// (`kafka`, Some(Source)); `kafka` -> (`kafka`, None).
pub fn parse_type(value: &str) -> (String, Option<Role>) {
    let v = value.trim().to_ascii_lowercase();
    if let Some(k) = v.strip_suffix("_source") {
        (k.to_string(), Some(Role::Source))
    } else if let Some(k) = v.strip_suffix("_sink") {
        (k.to_string(), Some(Role::Sink))
    } else {
        (v, None)
    }
}

/// Collects the `'<name>.<key>'` entries of `with` (prefix removed).
pub fn named_props(with: &BTreeMap<String, String>, name: &str) -> BTreeMap<String, String> {
    let prefix = format!("{name}.");
    with.iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(&prefix)
                .map(|rest| (rest.to_string(), v.clone()))
        })
        .collect()
}

/// Resolves one named connector: inline keys from WITH, the YAML of
/// `config_file` underneath them, variables substituted, type required and
/// checked against the role the SQL gives it.
pub fn resolve_named(
    name: &str,
    role: Role,
    inline: &BTreeMap<String, String>,
    base_dir: &Path,
    vars: &VarContext,
) -> Result<ConnectorConfig> {
    let mut props = BTreeMap::new();
    let mut subst_inline = BTreeMap::new();
    for (k, v) in inline {
        subst_inline.insert(
            k.clone(),
            vars.substitute(v, &format!("WITH '{name}.{k}'"))?,
        );
    }
    if let Some(file) = subst_inline.remove("config_file") {
        let path = base_dir.join(&file);
        props = crate::yaml::load_flat(&path, vars)?;
    }
    props.extend(subst_inline);
    for (k, v) in &props {
        crate::secrets::register_pair(k, v);
    }
    let type_value = props.remove("type").filter(|t| !t.trim().is_empty());
    let Some(type_value) = type_value else {
        return Err(match role {
            Role::Source => ConfigError::MissingSourceType(name.to_string()),
            Role::Sink => ConfigError::MissingSinkType(name.to_string()),
        });
    };
    let (kind, declared) = parse_type(&type_value);
    if let Some(declared) = declared.filter(|d| *d != role) {
        return Err(ConfigError::RoleMismatch {
            name: name.to_string(),
            value: type_value.clone(),
            declared: declared.as_str(),
            used: role.as_str(),
            clause: if role == Role::Source {
                "FROM/JOIN"
            } else {
                "INTO"
            },
            suggestion: format!("{kind}_{}", role.as_str()),
        });
    }
    Ok(ConnectorConfig {
        name: name.to_string(),
        role,
        kind,
        props,
        origin: Origin::Named,
        base_dir: base_dir.to_path_buf(),
        job: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn missing_type_uses_the_seeds_message() {
        let e = resolve_named(
            "orders_source",
            Role::Source,
            &with(&[("path", "x")]),
            Path::new("."),
            &VarContext::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Source type must be explicitly specified for 'orders_source'. Use: 'orders_source.type' with values like 'kafka_source', 'file_source', 'datagen'"
        );
        let e = resolve_named(
            "out",
            Role::Sink,
            &with(&[]),
            Path::new("."),
            &VarContext::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Sink type must be explicitly specified for 'out'. Use: 'out.type'")
        );
    }

    #[test]
    fn compound_and_plain_types_and_role_check() {
        let v = VarContext::default();
        let c = resolve_named(
            "o",
            Role::Source,
            &with(&[("type", "file_source")]),
            Path::new("."),
            &v,
        )
        .unwrap();
        assert_eq!((c.kind.as_str(), c.role), ("file", Role::Source));
        let c = resolve_named(
            "o",
            Role::Sink,
            &with(&[("type", "file")]),
            Path::new("."),
            &v,
        )
        .unwrap();
        assert_eq!((c.kind.as_str(), c.role), ("file", Role::Sink));
        let e = resolve_named(
            "o",
            Role::Source,
            &with(&[("type", "file_sink")]),
            Path::new("."),
            &v,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("used as a source") && e.contains("file_source"),
            "{e}"
        );
    }

    #[test]
    fn yaml_under_inline_with_vars() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("configs")).unwrap();
        std::fs::write(
            d.path().join("configs/src.yaml"),
            "path: data/${NAME:-orders}.csv\nformat: csv\nhas_headers: true\n",
        )
        .unwrap();
        let v = VarContext::with_env(BTreeMap::from([("FMT".into(), "jsonl".into())]));
        let c = resolve_named(
            "s",
            Role::Source,
            &with(&[
                ("type", "file_source"),
                ("config_file", "configs/src.yaml"),
                ("format", "${FMT}"),
            ]),
            d.path(),
            &v,
        )
        .unwrap();
        assert_eq!(c.get("path"), Some("data/orders.csv"));
        assert_eq!(c.get("format"), Some("jsonl"), "inline WITH overrides YAML");
        assert_eq!(c.get("has_headers"), Some("true"));
        assert!(c.get("config_file").is_none() && c.get("type").is_none());
    }
}
