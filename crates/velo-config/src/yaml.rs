//! `config_file` YAML: `extends` (single and multi-level, relative to the
//! extending file, with cycle detection), recursive merge (maps merge, lists
//! replace, scalars override) and flattening of nested keys to dotted keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use crate::{ConfigError, Result, VarContext};

/// Reads `path`, resolves its `extends` chain and returns the merged mapping
/// (before flattening and variable substitution).
pub fn load_merged(path: &Path, vars: &VarContext) -> Result<Mapping> {
    let mut stack = Vec::new();
    load_rec(path, vars, &mut stack)
}

/// Reads `path` with `extends`, flattens nested maps to dotted keys and
/// substitutes variables in every value.
pub fn load_flat(path: &Path, vars: &VarContext) -> Result<BTreeMap<String, String>> {
    let merged = load_merged(path, vars)?;
    let mut out = BTreeMap::new();
    flatten("", &Value::Mapping(merged), &mut out);
    let origin = path.display().to_string();
    out.into_iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                vars.substitute(&v, &format!("{origin} (key '{k}')"))?,
            ))
        })
        .collect()
}

fn load_rec(path: &Path, vars: &VarContext, stack: &mut Vec<PathBuf>) -> Result<Mapping> {
    let canonical = std::fs::canonicalize(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(pos) = stack.iter().position(|p| p == &canonical) {
        let mut chain: Vec<String> = stack[pos..]
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        chain.push(canonical.display().to_string());
        return Err(ConfigError::ExtendsCycle(chain.join(" -> ")));
    }
    let value = read_yaml(path)?;
    let mut map = match value {
        Value::Mapping(m) => m,
        Value::Null => Mapping::new(),
        _ => {
            return Err(ConfigError::Yaml {
                path: path.to_path_buf(),
                message: "the top level must be a mapping of keys to values".into(),
            });
        }
    };
    let Some(ext) = map.remove("extends") else {
        return Ok(map);
    };
    let parents: Vec<String> = match ext {
        Value::String(s) => vec![s],
        Value::Sequence(seq) => seq
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => {
            return Err(ConfigError::Yaml {
                path: path.to_path_buf(),
                message: "'extends' must be a file name or a list of file names".into(),
            });
        }
    };
    stack.push(canonical);
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut base = Mapping::new();
    for parent in parents {
        let parent = vars.substitute(&parent, &format!("{} (extends)", path.display()))?;
        let parent_map = load_rec(&dir.join(parent), vars, stack)?;
        merge(&mut base, parent_map);
    }
    stack.pop();
    merge(&mut base, map);
    Ok(base)
}

/// Reads a YAML file with its merge keys (`<<: *base`) applied.
pub fn read_yaml(path: &Path) -> Result<Value> {
    let yaml_err = |e: serde_yaml::Error| ConfigError::Yaml {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let text = crate::text::read_text(path, "config", crate::text::MAX_TEXT_BYTES)?;
    let mut value: Value = serde_yaml::from_str(&text).map_err(yaml_err)?;
    value.apply_merge().map_err(yaml_err)?;
    Ok(value)
}

/// Merges `over` into `base`: maps merge recursively, everything else
/// (lists, scalars) replaces.
pub fn merge(base: &mut Mapping, over: Mapping) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Mapping(b)), Value::Mapping(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Flattens nested mappings to dotted keys; lists become comma-separated
/// values; `null` becomes the empty string.
pub fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Mapping(m) => {
            for (k, v) in m {
                let key = scalar_string(k);
                let full = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&full, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), scalar_string(other));
        }
    }
}

/// A YAML scalar (or list of scalars) as the string a WITH value would hold.
pub fn scalar_string(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Sequence(s) => s.iter().map(scalar_string).collect::<Vec<_>>().join(","),
        Value::Mapping(_) => serde_yaml::to_string(v).unwrap_or_default(),
        Value::Tagged(t) => scalar_string(&t.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    fn vars() -> VarContext {
        VarContext::with_env(BTreeMap::from([(
            "ENVIRONMENT".to_string(),
            "prod".to_string(),
        )]))
    }

    #[test]
    fn multi_level_extends_relative_merge_and_flatten() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "base/common.yaml",
            "compression.type: snappy\nretries: 3\nnested:\n  a: 1\n  b: 2\nlist: [x, y]\n",
        );
        write(
            d.path(),
            "base/kafka.yaml",
            "extends: common.yaml\nbootstrap.servers: \"${KAFKA:-localhost:9092}\"\nnested:\n  b: 20\n",
        );
        let leaf = write(
            d.path(),
            "app/src.yaml",
            "extends: ../base/kafka.yaml\ntopic: orders-${ENVIRONMENT}\nretries: 5\nlist: [z]\n",
        );
        let flat = load_flat(&leaf, &vars()).unwrap();
        assert_eq!(flat["topic"], "orders-prod");
        assert_eq!(flat["retries"], "5", "scalars override");
        assert_eq!(flat["nested.a"], "1", "maps merge");
        assert_eq!(flat["nested.b"], "20");
        assert_eq!(flat["list"], "z", "lists replace");
        assert_eq!(flat["compression.type"], "snappy");
        assert_eq!(flat["bootstrap.servers"], "localhost:9092");
        assert!(!flat.contains_key("extends"));
    }

    #[test]
    fn extends_cycle_is_named() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.yaml", "extends: b.yaml\nx: 1\n");
        write(d.path(), "b.yaml", "extends: c.yaml\n");
        write(d.path(), "c.yaml", "extends: a.yaml\n");
        let e = load_flat(&d.path().join("a.yaml"), &vars())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cycle")
                && e.contains("a.yaml")
                && e.contains("b.yaml")
                && e.contains("c.yaml"),
            "{e}"
        );
    }

    #[test]
    fn multiple_parents_later_wins() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "p1.yaml", "a: 1\nb: 1\n");
        write(d.path(), "p2.yaml", "b: 2\n");
        let leaf = write(d.path(), "leaf.yaml", "extends: [p1.yaml, p2.yaml]\nc: 3\n");
        let flat = load_flat(&leaf, &vars()).unwrap();
        assert_eq!(
            (flat["a"].as_str(), flat["b"].as_str(), flat["c"].as_str()),
            ("1", "2", "3")
        );
    }

    #[test]
    fn missing_var_in_yaml_names_file() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "db.yaml", "password: ${DB_PASSWORD}\n");
        let e = load_flat(&p, &vars()).unwrap_err().to_string();
        assert!(e.contains("DB_PASSWORD") && e.contains("db.yaml"), "{e}");
    }

    #[test]
    fn bad_yaml_and_missing_file() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "bad.yaml", "a: [1, 2\n");
        assert!(matches!(
            load_flat(&p, &vars()),
            Err(ConfigError::Yaml { .. })
        ));
        assert!(matches!(
            load_flat(&d.path().join("none.yaml"), &vars()),
            Err(ConfigError::Io { .. })
        ));
    }
}
