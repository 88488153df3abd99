//! The global config file and its `profiles:`.
//!
//! Found by `--config`, `VELO_CONFIG_FILE`, `./velo.yaml`,
//! `./configs/velo.yaml`, `~/.velo/config.yaml`, `/etc/velo/config.yaml`, in
//! that order. The active profile is `--profile`, else `VELO_PROFILE`, else the
//! file's `active_profile`. YAML merge keys (`<<: *base`) work. The active
//! profile's keys become variables usable as `${name}` in WITH values and YAML.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use crate::{ConfigError, Result, VarContext};

/// Where to look for the global config file.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// `--config`.
    pub cli_path: Option<PathBuf>,
    /// `--profile`.
    pub cli_profile: Option<String>,
    /// Working directory for `./velo.yaml` and `./configs/velo.yaml`.
    pub cwd: PathBuf,
    /// Home directory for `~/.velo/config.yaml`.
    pub home: Option<PathBuf>,
    /// Environment (`VELO_CONFIG_FILE`, `VELO_PROFILE`); `None` = process env.
    pub env: Option<BTreeMap<String, String>>,
    /// Also look at `/etc/velo/config.yaml` (off in tests).
    pub system: bool,
}

/// The loaded global config.
#[derive(Debug, Clone, Default)]
pub struct GlobalConfig {
    /// The file, if one was found.
    pub path: Option<PathBuf>,
    /// The active profile's name.
    pub profile: Option<String>,
    /// Flattened keys of the active profile (the profile variables).
    pub variables: BTreeMap<String, String>,
}

impl Discovery {
    /// Discovery for the running process.
    pub fn from_process(cli_path: Option<PathBuf>, cli_profile: Option<String>) -> Self {
        Self {
            cli_path,
            cli_profile,
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            home: std::env::var_os("HOME").map(PathBuf::from),
            env: None,
            system: true,
        }
    }

    fn env(&self, k: &str) -> Option<String> {
        match &self.env {
            Some(m) => m.get(k).cloned(),
            None => std::env::var(k).ok(),
        }
        .filter(|v| !v.is_empty())
    }

    /// The candidate files in precedence order.
    pub fn candidates(&self) -> Vec<PathBuf> {
        let mut c = Vec::new();
        if let Some(p) = &self.cli_path {
            c.push(p.clone());
        }
        if let Some(p) = self.env("VELO_CONFIG_FILE") {
            c.push(PathBuf::from(p));
        }
        c.push(self.cwd.join("velo.yaml"));
        c.push(self.cwd.join("configs/velo.yaml"));
        if let Some(h) = &self.home {
            c.push(h.join(".velo/config.yaml"));
        }
        if self.system {
            c.push(PathBuf::from("/etc/velo/config.yaml"));
        }
        c
    }

    /// Finds and loads the global config. An explicit `--config` or
    /// `VELO_CONFIG_FILE` that does not exist is an error; the implicit
    /// locations are optional.
    pub fn load(&self) -> Result<GlobalConfig> {
        let explicit = self
            .cli_path
            .clone()
            .or_else(|| self.env("VELO_CONFIG_FILE").map(PathBuf::from));
        let path = match explicit {
            Some(p) => {
                if !p.is_file() {
                    return Err(ConfigError::Io {
                        path: p,
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "the config file given by --config / VELO_CONFIG_FILE does not exist",
                        ),
                    });
                }
                Some(p)
            }
            None => self.candidates().into_iter().find(|p| p.is_file()),
        };
        let Some(path) = path else {
            return Ok(GlobalConfig::default());
        };
        let env_vars = match &self.env {
            Some(m) => VarContext::with_env(m.clone()),
            None => VarContext::from_env(),
        };
        load_file(
            &path,
            self.cli_profile
                .clone()
                .or_else(|| self.env("VELO_PROFILE")),
            &env_vars,
        )
    }
}

fn load_file(path: &Path, selected: Option<String>, vars: &VarContext) -> Result<GlobalConfig> {
    let value = crate::yaml::read_yaml(path)?;
    let Value::Mapping(mut root) = value else {
        return Ok(GlobalConfig {
            path: Some(path.to_path_buf()),
            ..Default::default()
        });
    };
    let origin = path.display().to_string();
    let mut profiles = match root.remove("profiles") {
        Some(Value::Mapping(m)) => m,
        _ => serde_yaml::Mapping::new(),
    };
    for (_, p) in profiles.iter_mut() {
        // `<<: *base` inside profiles
        p.apply_merge().map_err(|e| ConfigError::Yaml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    let active = match selected {
        Some(p) => Some(p),
        None => match root.get("active_profile").and_then(Value::as_str) {
            Some(a) => Some(vars.substitute(a, &format!("{origin} (active_profile)"))?),
            None => None,
        },
    };
    let mut variables = BTreeMap::new();
    // top-level keys other than profiles are shared defaults
    for (k, v) in root.iter() {
        let key = crate::yaml::scalar_string(k);
        if key != "active_profile" {
            crate::yaml::flatten(&key, v, &mut variables);
        }
    }
    if let Some(name) = &active {
        match profiles.get(name.as_str()) {
            Some(p) => crate::yaml::flatten("", p, &mut variables),
            None => {
                let known: Vec<String> = profiles.keys().map(crate::yaml::scalar_string).collect();
                return Err(ConfigError::UnknownProfile {
                    profile: name.clone(),
                    path: path.to_path_buf(),
                    known: known.join(", "),
                });
            }
        }
    }
    let variables = variables
        .into_iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                vars.substitute(&v, &format!("{origin} (profile key '{k}')"))?,
            ))
        })
        .collect::<Result<_>>()?;
    Ok(GlobalConfig {
        path: Some(path.to_path_buf()),
        profile: active,
        variables,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = r#"
active_profile: "${VELO_PROFILE:-development}"
profiles:
  base: &base_profile
    log_level: "INFO"
    batch_size: 1000
  development:
    <<: *base_profile
    kafka_brokers: "localhost:9092"
    log_level: "DEBUG"
  production:
    <<: *base_profile
    kafka_brokers: "${KAFKA_BROKERS}"
    log_level: "WARN"
"#;

    fn disco(dir: &Path, env: &[(&str, &str)]) -> Discovery {
        Discovery {
            cli_path: None,
            cli_profile: None,
            cwd: dir.to_path_buf(),
            home: Some(dir.join("home")),
            env: Some(
                env.iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
            ),
            system: false,
        }
    }

    #[test]
    fn discovery_order() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("home/.velo")).unwrap();
        std::fs::create_dir_all(d.path().join("configs")).unwrap();
        std::fs::write(d.path().join("home/.velo/config.yaml"), "who: home\n").unwrap();
        assert_eq!(
            disco(d.path(), &[]).load().unwrap().variables["who"],
            "home"
        );
        std::fs::write(d.path().join("configs/velo.yaml"), "who: configs\n").unwrap();
        assert_eq!(
            disco(d.path(), &[]).load().unwrap().variables["who"],
            "configs"
        );
        std::fs::write(d.path().join("velo.yaml"), "who: cwd\n").unwrap();
        assert_eq!(disco(d.path(), &[]).load().unwrap().variables["who"], "cwd");
        std::fs::write(d.path().join("env.yaml"), "who: env\n").unwrap();
        let envp = d.path().join("env.yaml").display().to_string();
        assert_eq!(
            disco(d.path(), &[("VELO_CONFIG_FILE", &envp)])
                .load()
                .unwrap()
                .variables["who"],
            "env"
        );
        std::fs::write(d.path().join("cli.yaml"), "who: cli\n").unwrap();
        let mut di = disco(d.path(), &[("VELO_CONFIG_FILE", &envp)]);
        di.cli_path = Some(d.path().join("cli.yaml"));
        assert_eq!(di.load().unwrap().variables["who"], "cli");
        di.cli_path = Some(d.path().join("missing.yaml"));
        assert!(
            di.load().is_err(),
            "an explicit --config that does not exist is an error"
        );
    }

    #[test]
    fn profiles_with_merge_keys_and_selection_precedence() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("velo.yaml"), APP).unwrap();
        let g = disco(d.path(), &[]).load().unwrap();
        assert_eq!(
            g.profile.as_deref(),
            Some("development"),
            "active_profile default"
        );
        assert_eq!(g.variables["log_level"], "DEBUG");
        assert_eq!(g.variables["batch_size"], "1000", "<<: *base merged");
        let g = disco(
            d.path(),
            &[
                ("VELO_PROFILE", "production"),
                ("KAFKA_BROKERS", "prod:9092"),
            ],
        )
        .load()
        .unwrap();
        assert_eq!(
            (
                g.variables["kafka_brokers"].as_str(),
                g.variables["log_level"].as_str()
            ),
            ("prod:9092", "WARN")
        );
        let mut di = disco(d.path(), &[("VELO_PROFILE", "production")]);
        di.cli_profile = Some("base".into());
        assert_eq!(
            di.load().unwrap().profile.as_deref(),
            Some("base"),
            "--profile beats VELO_PROFILE"
        );
        let e = disco(d.path(), &[("VELO_PROFILE", "production")])
            .load()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("KAFKA_BROKERS"),
            "production needs KAFKA_BROKERS: {e}"
        );
        let e = disco(d.path(), &[("VELO_PROFILE", "nope")])
            .load()
            .unwrap_err()
            .to_string();
        assert!(e.contains("'nope'") && e.contains("development"), "{e}");
    }
}
