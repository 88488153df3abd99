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
    /// Files (Arrow IPC, in this directory) holding the state of each
    /// window operator after the epoch.
    #[serde(default)]
    pub operators: Vec<String>,
    /// The watermark after the epoch (epoch milliseconds).
    #[serde(default)]
    pub watermark: Option<i64>,
    /// The job's other streams (joined with the driving one), by source
    /// name: position and watermark after the epoch.
    #[serde(default)]
    pub streams: BTreeMap<String, StreamPosition>,
}

/// Where one of a job's other streams stands after an epoch.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StreamPosition {
    /// Its source position.
    pub position: Position,
    /// Its watermark.
    pub watermark: Option<i64>,
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
        tracing::error!("{CRASH_AFTER_CHECKPOINT}={written}: aborting after the checkpoint");
        std::process::abort();
    }
}

/// Writes one Arrow IPC file per operator state for `epoch` (durable before
/// the checkpoint that names them); returns their names.
pub fn store_operator_state(
    dir: &Path,
    epoch: u64,
    states: &[arrow::array::RecordBatch],
) -> Result<Vec<String>> {
    let io = |what: &str, e: String| {
        EngineError::Invalid(format!(
            "cannot {what} the window state in '{}': {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(|e| io("create", e.to_string()))?;
    let mut names = Vec::new();
    for (i, b) in states.iter().enumerate() {
        let name = format!("window-{i}-epoch-{epoch}.arrow");
        let f = std::fs::File::create(dir.join(&name)).map_err(|e| io("write", e.to_string()))?;
        let mut w = arrow::ipc::writer::FileWriter::try_new(&f, &b.schema())
            .map_err(|e| io("write", e.to_string()))?;
        w.write(b).map_err(|e| io("write", e.to_string()))?;
        w.finish().map_err(|e| io("write", e.to_string()))?;
        f.sync_all().map_err(|e| io("sync", e.to_string()))?;
        names.push(name);
    }
    Ok(names)
}

/// Reads the operator states a checkpoint names.
pub fn load_operator_state(dir: &Path, names: &[String]) -> Result<Vec<arrow::array::RecordBatch>> {
    names
        .iter()
        .map(|n| {
            let path = dir.join(n);
            let bad = |e: String| {
                EngineError::Invalid(format!(
                    "the window state '{}' of the checkpoint is missing or damaged ({e}); move the state directory away to start from scratch",
                    path.display()
                ))
            };
            let f = std::fs::File::open(&path).map_err(|e| bad(e.to_string()))?;
            let r = arrow::ipc::reader::FileReader::try_new(f, None).map_err(|e| bad(e.to_string()))?;
            let schema = r.schema();
            let batches = r
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            arrow::compute::concat_batches(&schema, &batches).map_err(|e| bad(e.to_string()))
        })
        .collect()
}

/// Removes operator state files the current checkpoint no longer names.
pub fn remove_stale_operator_state(dir: &Path, keep: &[String]) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("window-") && name.ends_with(".arrow") && !keep.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_state_round_trips_and_damage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let b = arrow::array::RecordBatch::try_from_iter(vec![(
            "_start",
            std::sync::Arc::new(arrow::array::Int64Array::from(vec![1, 2])) as _,
        )])
        .unwrap();
        let names = store_operator_state(dir.path(), 7, &[b.clone()]).unwrap();
        assert_eq!(load_operator_state(dir.path(), &names).unwrap(), vec![b]);
        std::fs::write(dir.path().join(&names[0]), b"not arrow").unwrap();
        let e = load_operator_state(dir.path(), &names)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("damaged") && e.contains("move the state directory"),
            "{e}"
        );
        let e = load(dir.path(), "j").unwrap();
        assert!(e.is_none());
        std::fs::write(dir.path().join(FILE), b"{").unwrap();
        let e = load(dir.path(), "j").unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
        remove_stale_operator_state(dir.path(), &[]);
        assert!(!dir.path().join(&names[0]).exists());
    }
}
