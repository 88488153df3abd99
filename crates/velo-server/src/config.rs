//! The server's settings: where it listens, where it keeps its state, and
//! the limits of seed 001 ("Server-Level Configuration"), from the
//! environment (`VELO_MAX_JOBS`, ...) over the `server:` section of the
//! global config over the defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use velo_config::global::GlobalConfig;

use crate::error::{Result, ServerError};

/// How `velo server` was started.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `--config`: the global config file (profiles, `server:` section).
    pub config: Option<PathBuf>,
    /// `--listen`: the REST API, metrics and dashboard.
    pub listen: SocketAddr,
    /// `--flight`: the Arrow Flight SQL endpoint, if any.
    pub flight: Option<SocketAddr>,
    /// `--state-dir`: deployed applications and every job's checkpoints.
    pub state_dir: PathBuf,
    /// What plans jobs that name a `cluster` (the binary's Ballista planner).
    pub cluster: Option<std::sync::Arc<dyn velo_engine::plan::ClusterPlanner>>,
}

/// TLS for the REST API and the Flight SQL endpoint, from
/// `server.tls.cert` and `server.tls.key` (PEM files).
#[derive(Clone)]
pub struct Tls {
    /// The certificate chain (PEM).
    pub cert: Vec<u8>,
    /// The private key (PEM).
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

impl Tls {
    /// The files `global` names, read; `None` when neither is set.
    pub fn from_config(global: &GlobalConfig) -> Result<Option<Self>> {
        let get = |k: &str| global.variables.get(k).filter(|v| !v.trim().is_empty());
        let read = |k: &str, path: &str| {
            std::fs::read(path)
                .map_err(|e| ServerError::Config(format!("{k}: cannot read '{path}': {e}")))
        };
        match (get("server.tls.cert"), get("server.tls.key")) {
            (None, None) => Ok(None),
            (Some(c), Some(k)) => Ok(Some(Self {
                cert: read("server.tls.cert", c)?,
                key: read("server.tls.key", k)?,
            })),
            _ => Err(ServerError::Config(
                "TLS needs both server.tls.cert and server.tls.key (PEM files)".into(),
            )),
        }
    }
}

/// The limits a deployment is checked against.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// `VELO_MAX_JOBS` / `server.max_jobs`: jobs hosted at once.
    pub max_jobs: usize,
    /// `VELO_MAX_MEMORY_MB` / `server.max_memory_mb`: the memory pool every
    /// job's operator state reserves from (`None`: no limit).
    pub max_memory_mb: Option<u64>,
    /// `VELO_MAX_SOURCES_PER_JOB` / `server.max_sources_per_job`.
    pub max_sources_per_job: usize,
    /// `VELO_MAX_SINKS_PER_JOB` / `server.max_sinks_per_job`.
    pub max_sinks_per_job: usize,
    /// `VELO_BATCH_TIMEOUT_MS` / `server.batch_timeout_ms`: the
    /// `batch.timeout` of jobs that set none.
    pub batch_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_jobs: 50,
            max_memory_mb: None,
            max_sources_per_job: 10,
            max_sinks_per_job: 5,
            batch_timeout: None,
        }
    }
}

/// One limit: its environment variable and its key in the global config.
struct Limit {
    env: &'static str,
    key: &'static str,
}

const MAX_JOBS: Limit = Limit {
    env: "VELO_MAX_JOBS",
    key: "server.max_jobs",
};
const MAX_MEMORY: Limit = Limit {
    env: "VELO_MAX_MEMORY_MB",
    key: "server.max_memory_mb",
};
const MAX_SOURCES: Limit = Limit {
    env: "VELO_MAX_SOURCES_PER_JOB",
    key: "server.max_sources_per_job",
};
const MAX_SINKS: Limit = Limit {
    env: "VELO_MAX_SINKS_PER_JOB",
    key: "server.max_sinks_per_job",
};
const BATCH_TIMEOUT: Limit = Limit {
    env: "VELO_BATCH_TIMEOUT_MS",
    key: "server.batch_timeout_ms",
};

impl Limits {
    /// The limits from `env` (the process environment) over `global`'s
    /// `server:` section over the defaults; a value that is not a positive
    /// whole number is an error naming where it came from.
    pub fn resolve(env: &BTreeMap<String, String>, global: &GlobalConfig) -> Result<Self> {
        let get = |l: &Limit| -> Result<Option<u64>> {
            let (origin, value) = match env.get(l.env).filter(|v| !v.trim().is_empty()) {
                Some(v) => (format!("the environment variable {}", l.env), v),
                None => match global.variables.get(l.key) {
                    Some(v) => (format!("'{}' of the global config", l.key), v),
                    None => return Ok(None),
                },
            };
            match value.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(ServerError::Config(format!(
                    "{origin} is '{value}': write a whole number greater than 0"
                ))),
            }
        };
        let d = Self::default();
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(Self {
            max_jobs: get(&MAX_JOBS)?.map_or(d.max_jobs, size),
            max_memory_mb: get(&MAX_MEMORY)?,
            max_sources_per_job: get(&MAX_SOURCES)?.map_or(d.max_sources_per_job, size),
            max_sinks_per_job: get(&MAX_SINKS)?.map_or(d.max_sinks_per_job, size),
            batch_timeout: get(&BATCH_TIMEOUT)?.map(Duration::from_millis),
        })
    }

    /// The name a refusal gives the limit on jobs (its environment variable).
    pub fn max_jobs_name() -> &'static str {
        MAX_JOBS.env
    }
    /// The name of the limit on sources per job.
    pub fn max_sources_name() -> &'static str {
        MAX_SOURCES.env
    }
    /// The name of the limit on sinks per job.
    pub fn max_sinks_name() -> &'static str {
        MAX_SINKS.env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn the_environment_wins_over_the_config_file_over_the_defaults() {
        let global = GlobalConfig {
            variables: map(&[("server.max_jobs", "7"), ("server.max_sinks_per_job", "2")]),
            ..Default::default()
        };
        let l = Limits::resolve(&map(&[("VELO_MAX_JOBS", "3")]), &global).unwrap();
        assert_eq!(l.max_jobs, 3);
        assert_eq!(l.max_sinks_per_job, 2);
        assert_eq!(l.max_sources_per_job, 10);
        assert_eq!(l.max_memory_mb, None);
        assert_eq!(
            Limits::resolve(&map(&[]), &Default::default()).unwrap(),
            Limits::default()
        );
    }

    #[test]
    fn a_bad_limit_names_where_it_came_from() {
        let e = Limits::resolve(&map(&[("VELO_MAX_MEMORY_MB", "lots")]), &Default::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("VELO_MAX_MEMORY_MB") && e.contains("lots"),
            "{e}"
        );
        let global = GlobalConfig {
            variables: map(&[("server.max_jobs", "0")]),
            ..Default::default()
        };
        let e = Limits::resolve(&map(&[]), &global).unwrap_err().to_string();
        assert!(e.contains("server.max_jobs"), "{e}");
    }
}
