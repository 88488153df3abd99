//! Job checkpoints: the commit record of a transactional job.
//!
//! After every sink has prepared an epoch (files durable under temporary
//! names), the runtime writes one checkpoint file holding the epoch number,
//! the driving source's position after it, and what each sink needs to
//! finish publishing it. Writing that file (temporary name, fsync, rename,
//! fsync of the directory) is the commit point: a job killed before it
//! re-reads the epoch from the previous position and its temporaries are
//! discarded; a job killed after it finishes the publication on restart
//! ([`velo_connectors::Sink::recover`]) and resumes after the epoch. This is
//! how a Kafka source and file sinks get exactly-once together.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use velo_connectors::Position;

use crate::{EngineError, Result};

/// The commit record of one epoch.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// Format version.
    pub version: u32,
    /// Job name.
    pub job: String,
    /// The committed epoch.
    pub epoch: u64,
    /// Driving source position after the epoch.
    pub position: Position,
    /// Per sink: what finishes publishing the epoch.
    pub sinks: BTreeMap<String, serde_json::Value>,
}

const FILE: &str = "checkpoint.json";
/// The checkpoint format written by this build.
pub const VERSION: u32 = 1;

/// The checkpoint directory of `job` under `state_dir`.
pub fn job_dir(state_dir: &Path, job: &str) -> PathBuf {
    state_dir.join(job)
}

/// Reads the last checkpoint, if any. A damaged or foreign one is an error
/// that says what to do, never a panic.
pub fn load(dir: &Path, job: &str) -> Result<Option<Checkpoint>> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(EngineError::Invalid(format!(
                "cannot read the checkpoint '{}': {e}",
                path.display()
            )));
        }
    };
    let cp: Checkpoint = serde_json::from_str(&text).map_err(|e| {
        EngineError::Invalid(format!(
            "the checkpoint '{}' is damaged ({e}); move the state directory away to start from scratch",
            path.display()
        ))
    })?;
    if cp.version != VERSION || cp.job != job {
        return Err(EngineError::Invalid(format!(
            "the checkpoint '{}' belongs to job '{}' (format {}), not to job '{job}' (format {VERSION}); use another state directory",
            path.display(),
            cp.job,
            cp.version
        )));
    }
    Ok(Some(cp))
}

/// Writes `cp` atomically: after this returns, the epoch is committed.
pub fn store(dir: &Path, cp: &Checkpoint) -> Result<()> {
    let io = |what: &str, e: std::io::Error| {
        EngineError::Invalid(format!(
            "cannot {what} the checkpoint in '{}': {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(|e| io("create", e))?;
    let tmp = dir.join(format!(".{FILE}.tmp"));
    let mut cp = cp.clone();
    cp.version = VERSION;
    let body =
        serde_json::to_vec_pretty(&cp).map_err(|e| io("encode", std::io::Error::other(e)))?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("write", e))?;
    f.write_all(&body).map_err(|e| io("write", e))?;
    f.sync_all().map_err(|e| io("sync", e))?;
    drop(f);
    std::fs::rename(&tmp, dir.join(FILE)).map_err(|e| io("publish", e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The environment variable of the crash tests' fault injection.
pub const CRASH_AFTER_CHECKPOINT: &str = "VELO_CRASH_AFTER_CHECKPOINT";

/// Fault injection for the crash tests: with `VELO_CRASH_AFTER_CHECKPOINT=N`
/// the process aborts (no cleanup, like a power cut) right after the N-th
/// checkpoint of an epoch with records in this run is durable, before any sink publishes that epoch
/// and before the source commits its position. This is the one window a
/// random kill almost never hits, and the one only the checkpoint covers.
pub(crate) fn crash_point(written: u64) {
    static AT: std::sync::LazyLock<Option<u64>> = std::sync::LazyLock::new(|| {
        std::env::var(CRASH_AFTER_CHECKPOINT)
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if *AT == Some(written) {
        eprintln!("{CRASH_AFTER_CHECKPOINT}={written}: aborting after the checkpoint");
        std::process::abort();
    }
}
