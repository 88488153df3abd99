//! `${VAR}` substitution: environment, active profile variables and the
//! dynamic `${DATE}` / `${TIME}` values.

use std::collections::BTreeMap;

use crate::{ConfigError, Result};

/// How deep `${A:-${B:-...}}` defaults may nest.
pub const MAX_DEFAULT_DEPTH: usize = 16;

/// Where variables come from. The environment wins over profile variables so
/// that a deployment can always override a profile from outside.
#[derive(Debug, Clone, Default)]
pub struct VarContext {
    env: BTreeMap<String, String>,
    profile: BTreeMap<String, String>,
    now: Option<chrono::DateTime<chrono::Local>>,
}

impl VarContext {
    /// Variables from the process environment as it is now (a copy: the
    /// context never reads the environment again, so that applications with
    /// different environments can be resolved in one process).
    pub fn from_env() -> Self {
        // a variable that is not UTF-8 is not a variable SQL can name
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Self::with_env(env)
    }

    /// A given environment (an application deployed to a server, tests).
    pub fn with_env(env: BTreeMap<String, String>) -> Self {
        Self {
            env,
            profile: BTreeMap::new(),
            now: None,
        }
    }

    /// Adds the active profile's variables.
    pub fn with_profile(mut self, profile: BTreeMap<String, String>) -> Self {
        self.profile = profile;
        self
    }

    /// Fixes the clock used for `${DATE}`/`${TIME}` (tests).
    pub fn with_now(mut self, now: chrono::DateTime<chrono::Local>) -> Self {
        self.now = Some(now);
        self
    }

    /// The profile variables in effect.
    pub fn profile(&self) -> &BTreeMap<String, String> {
        &self.profile
    }

    fn lookup(&self, name: &str) -> Option<String> {
        if let Some(v) = self.env.get(name) {
            return Some(v.clone());
        }
        if let Some(v) = self.profile.get(name) {
            return Some(v.clone());
        }
        let now = self.now.unwrap_or_else(chrono::Local::now);
        match name {
            "DATE" => Some(now.format("%Y-%m-%d").to_string()),
            "TIME" => Some(now.format("%H%M%S").to_string()),
            "TIMESTAMP" => Some(now.format("%Y%m%dT%H%M%S").to_string()),
            _ => None,
        }
    }

    /// Replaces every `${NAME}` / `${NAME:-default}` in `value`. `origin`
    /// names the file or key for error messages.
    pub fn substitute(&self, value: &str, origin: &str) -> Result<String> {
        self.substitute_at(value, origin, 0)
    }

    /// [`Self::substitute`] inside `depth` enclosing defaults.
    fn substitute_at(&self, value: &str, origin: &str, depth: usize) -> Result<String> {
        if !value.contains("${") {
            return Ok(value.to_string());
        }
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = find_close(after).ok_or_else(|| ConfigError::BadVariable {
                text: excerpt(&rest[start..]),
                origin: origin.to_string(),
            })?;
            let inner = &after[..end];
            let (name, default) = match inner.find(":-") {
                Some(i) => (&inner[..i], Some(&inner[i + 2..])),
                None => (inner, None),
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return Err(ConfigError::BadVariable {
                    text: excerpt(&format!("${{{inner}}}")),
                    origin: origin.to_string(),
                });
            }
            match (self.lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                // defaults may themselves hold variables
                (None, Some(_)) if depth >= MAX_DEFAULT_DEPTH => {
                    return Err(ConfigError::NestedTooDeep {
                        origin: origin.to_string(),
                        depth: MAX_DEFAULT_DEPTH,
                    });
                }
                (None, Some(d)) => out.push_str(&self.substitute_at(d, origin, depth + 1)?),
                (None, None) => {
                    return Err(ConfigError::MissingVariable {
                        var: name.to_string(),
                        origin: origin.to_string(),
                    });
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// At most 60 characters of `text`, for messages.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// Index of the `}` closing a `${` whose body starts at `s`, allowing nested `${..}` in defaults.
fn find_close(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> VarContext {
        let env = BTreeMap::from([
            ("A".to_string(), "1".to_string()),
            ("HOST".to_string(), "db".to_string()),
        ]);
        VarContext::with_env(env)
            .with_profile(BTreeMap::from([("kafka_brokers".into(), "k:9092".into())]))
    }

    #[test]
    fn substitutes_env_defaults_several_and_profile() {
        let c = ctx();
        assert_eq!(c.substitute("x-${A}-${B:-two}", "t").unwrap(), "x-1-two");
        assert_eq!(
            c.substitute("jdbc://${HOST}:${PORT:-5432}/${A}", "t")
                .unwrap(),
            "jdbc://db:5432/1"
        );
        assert_eq!(c.substitute("${kafka_brokers}", "t").unwrap(), "k:9092");
        assert_eq!(c.substitute("${NOPE:-${A}}", "t").unwrap(), "1");
        assert_eq!(c.substitute("${EMPTY:-}", "t").unwrap(), "");
    }

    #[test]
    fn missing_variable_names_variable_and_origin() {
        let e = ctx()
            .substitute("${DB_PASSWORD}", "configs/db.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'DB_PASSWORD'") && e.contains("configs/db.yaml"),
            "{e}"
        );
    }

    #[test]
    fn dynamic_date_time() {
        use chrono::TimeZone;
        let now = chrono::Local.with_ymd_and_hms(2024, 3, 5, 7, 8, 9).unwrap();
        let c = ctx().with_now(now);
        assert_eq!(
            c.substitute("audit-${DATE}.jsonl", "t").unwrap(),
            "audit-2024-03-05.jsonl"
        );
        assert_eq!(c.substitute("${TIME}", "t").unwrap(), "070809");
    }

    #[test]
    fn deeply_nested_defaults_are_refused_not_a_stack_overflow() {
        let deep = |n: usize| format!("{}x{}", "${NOPE:-".repeat(n), "}".repeat(n));
        assert_eq!(
            ctx().substitute(&deep(MAX_DEFAULT_DEPTH), "t").unwrap(),
            "x"
        );
        let e = ctx()
            .substitute(&deep(100_000), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nest more than 16 levels"), "{e}");
    }

    #[test]
    fn malformed_reference_is_an_error() {
        assert!(ctx().substitute("${A", "t").is_err());
        assert!(ctx().substitute("${}", "t").is_err());
    }
}
