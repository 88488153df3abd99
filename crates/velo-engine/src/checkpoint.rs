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
use std::path::Path;

use velo_connectors::{ConnectorContext, Position, Storage};

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
    /// The id of the operator each of `operators` belongs to (empty in
    /// checkpoints of earlier versions: then in plan order).
    #[serde(default)]
    pub operator_ids: Vec<String>,
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

/// Where a job's checkpoints live: a folder of the storage layer (a local
/// directory, or a prefix in an object store such as `s3://bucket/prefix`,
/// credentials and endpoint from the standard `AWS_*` environment
/// variables), one per job.
#[derive(Clone, Debug)]
pub struct StateStore(Storage);

impl StateStore {
    /// The checkpoint store of `job` under `root`: a URL (`s3://...`,
    /// `file://...`) or a local directory (relative to `base`); stores come
    /// from `ctx`'s object-store registry.
    pub fn open(root: &str, base: &Path, job: &str, ctx: &ConnectorContext) -> Result<Self> {
        if root.starts_with("memory:") {
            return Err(EngineError::Invalid(format!(
                "state directory '{root}': memory is gone when the process ends, so a restart could not resume; use a local path or s3://bucket/prefix"
            )));
        }
        let storage = Storage::open(root, base, ctx).map_err(|e| {
            EngineError::Invalid(
                e.to_string()
                    .replacen("storage location ", "state directory ", 1),
            )
        })?;
        Ok(Self(storage.child(job)))
    }

    /// The store for messages (a path or a URL).
    pub fn display(&self) -> String {
        self.0.display().to_string()
    }

    fn io(e: velo_connectors::ConnectorError) -> EngineError {
        EngineError::Invalid(format!("checkpoint state: {e}"))
    }

    fn encode_error(&self, e: impl std::fmt::Display) -> EngineError {
        EngineError::Invalid(format!(
            "cannot encode the checkpoint state for '{}': {e}",
            self.display()
        ))
    }

    async fn get(&self, name: &str) -> Result<Option<bytes::Bytes>> {
        self.0.get(name).await.map_err(Self::io)
    }

    async fn put(&self, name: &str, body: Vec<u8>) -> Result<()> {
        self.0.put(name, body.into()).await.map_err(Self::io)
    }

    /// Reads the last checkpoint, if any. A damaged or foreign one is an
    /// error that says what to do, never a panic.
    pub async fn load(&self, job: &str) -> Result<Option<Checkpoint>> {
        let Some(body) = self.get(FILE).await? else {
            return Ok(None);
        };
        let at = format!("{}/{FILE}", self.display());
        let cp: Checkpoint = serde_json::from_slice(&body).map_err(|e| {
            EngineError::Invalid(format!(
                "the checkpoint '{at}' is damaged ({e}); move the state directory away to start from scratch"
            ))
        })?;
        if cp.version != VERSION || cp.job != job {
            return Err(EngineError::Invalid(format!(
                "the checkpoint '{at}' belongs to job '{}' (format {}), not to job '{job}' (format {VERSION}); use another state directory",
                cp.job, cp.version
            )));
        }
        Ok(Some(cp))
    }

    /// Writes `cp` atomically: after this returns, the epoch is committed.
    pub async fn store(&self, cp: &Checkpoint) -> Result<u64> {
        let mut cp = cp.clone();
        cp.version = VERSION;
        let body = serde_json::to_vec_pretty(&cp).map_err(|e| self.encode_error(e))?;
        let bytes = body.len() as u64;
        self.put(FILE, body).await?;
        Ok(bytes)
    }

    /// Writes one Arrow IPC file per operator state for `epoch` (durable
    /// before the checkpoint that names them); returns their names and
    /// their bytes.
    pub async fn store_operator_state(
        &self,
        epoch: u64,
        states: &[arrow::array::RecordBatch],
    ) -> Result<(Vec<String>, u64)> {
        let mut names = Vec::new();
        let mut bytes = 0u64;
        for (i, b) in states.iter().enumerate() {
            let name = format!("window-{i}-epoch-{epoch}.arrow");
            let mut body = Vec::new();
            {
                let mut w = arrow::ipc::writer::FileWriter::try_new(&mut body, &b.schema())
                    .map_err(|e| self.encode_error(e))?;
                w.write(b).map_err(|e| self.encode_error(e))?;
                w.finish().map_err(|e| self.encode_error(e))?;
            }
            bytes += body.len() as u64;
            self.put(&name, body).await?;
            names.push(name);
        }
        Ok((names, bytes))
    }

    /// Reads the operator states a checkpoint names.
    pub async fn load_operator_state(
        &self,
        names: &[String],
    ) -> Result<Vec<arrow::array::RecordBatch>> {
        let mut out = Vec::new();
        for n in names {
            let bad = |e: String| {
                EngineError::Invalid(format!(
                    "the window state '{}/{n}' of the checkpoint is missing or damaged ({e}); move the state directory away to start from scratch",
                    self.display()
                ))
            };
            // only files this store writes, in its own directory
            let own = n.starts_with("window-")
                && n.ends_with(".arrow")
                && !n.contains(['/', '\\'])
                && !n.contains("..");
            if !own {
                return Err(bad("not a state file of this job".into()));
            }
            let body = self.get(n).await?.ok_or_else(|| bad("not found".into()))?;
            // a damaged file is an error, even where the IPC reader would
            // panic on it or allocate what its blocks claim (an abort, which
            // no unwinding catches)
            ipc_blocks_inside(&body).map_err(bad)?;
            let read = std::panic::catch_unwind(|| {
                let r = arrow::ipc::reader::FileReader::try_new(std::io::Cursor::new(&body), None)?;
                let schema = r.schema();
                let batches = r.collect::<std::result::Result<Vec<_>, _>>()?;
                arrow::compute::concat_batches(&schema, &batches)
            });
            match read {
                Ok(Ok(b)) => out.push(b),
                Ok(Err(e)) => return Err(bad(e.to_string())),
                Err(p) => return Err(bad(velo_connectors::source::panic_text(p.as_ref()))),
            }
        }
        Ok(out)
    }

    /// Removes operator state files the current checkpoint no longer names.
    pub async fn remove_stale_operator_state(&self, keep: &[String]) {
        // a listing or a removal that fails leaves files for the next
        // checkpoint to remove: nothing refers to them
        for name in self.0.list().await.unwrap_or_default() {
            if name.starts_with("window-") && name.ends_with(".arrow") && !keep.contains(&name) {
                let _ = self.0.delete(&name).await;
            }
        }
    }
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

/// Checks that every block an Arrow IPC file's footer lists lies inside the
/// file: the reader allocates a block's claimed size before it reads it, so
/// a damaged footer could ask for terabytes.
fn ipc_blocks_inside(file: &[u8]) -> std::result::Result<(), String> {
    const MAGIC: &[u8] = b"ARROW1";
    let len = file.len();
    if len < 2 * MAGIC.len() + 4 + 2 || !file.starts_with(MAGIC) || !file.ends_with(MAGIC) {
        return Err("not an Arrow IPC file".into());
    }
    let footer_len_at = len - MAGIC.len() - 4;
    let footer_len = i32::from_le_bytes(
        file[footer_len_at..footer_len_at + 4]
            .try_into()
            .map_err(|_| "truncated footer")?,
    );
    let footer_start = usize::try_from(footer_len)
        .ok()
        .and_then(|l| footer_len_at.checked_sub(l))
        .ok_or("the footer length is out of the file")?;
    let footer = arrow::ipc::root_as_footer(&file[footer_start..footer_len_at])
        .map_err(|e| format!("a damaged footer: {e}"))?;
    let blocks = footer
        .recordBatches()
        .into_iter()
        .flatten()
        .chain(footer.dictionaries().into_iter().flatten());
    for b in blocks {
        let end = u64::try_from(b.offset())
            .ok()
            .zip(u64::try_from(b.metaDataLength()).ok())
            .zip(u64::try_from(b.bodyLength()).ok())
            .and_then(|((o, m), body)| o.checked_add(m)?.checked_add(body));
        if end.is_none_or(|e| e > footer_start as u64) {
            return Err(format!(
                "a block at offset {} of {} + {} bytes lies outside the file ({len} bytes)",
                b.offset(),
                b.metaDataLength(),
                b.bodyLength()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn operator_state_round_trips_and_damage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(
            &dir.path().display().to_string(),
            Path::new("."),
            "j",
            &ConnectorContext::default(),
        )
        .unwrap();
        let at = dir.path().join("j");
        let b = arrow::array::RecordBatch::try_from_iter(vec![(
            "_start",
            std::sync::Arc::new(arrow::array::Int64Array::from(vec![1, 2])) as _,
        )])
        .unwrap();
        let (names, bytes) = store
            .store_operator_state(7, std::slice::from_ref(&b))
            .await
            .unwrap();
        assert!(bytes > 0);
        assert_eq!(store.load_operator_state(&names).await.unwrap(), vec![b]);
        std::fs::write(at.join(&names[0]), b"not arrow").unwrap();
        let e = store
            .load_operator_state(&names)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("damaged") && e.contains("move the state directory"),
            "{e}"
        );
        assert!(store.load("j").await.unwrap().is_none());
        std::fs::write(at.join(FILE), b"{").unwrap();
        let e = store.load("j").await.unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
        store.remove_stale_operator_state(&[]).await;
        assert!(!at.join(&names[0]).exists());
    }

    /// A state file cut short (its footer kept, so the reader would trust
    /// the block sizes it lists) is refused before any block is read.
    #[test]
    fn ipc_blocks_must_lie_inside_the_file() {
        use arrow::array::Int64Array;
        let batch = arrow::array::RecordBatch::try_from_iter([(
            "n",
            std::sync::Arc::new(Int64Array::from_iter_values(0..1000)) as _,
        )])
        .unwrap();
        let mut file = Vec::new();
        {
            let mut w =
                arrow::ipc::writer::FileWriter::try_new(&mut file, &batch.schema()).unwrap();
            w.write(&batch).unwrap();
            w.finish().unwrap();
        }
        assert_eq!(ipc_blocks_inside(&file), Ok(()));
        // 4 KB of the batch's body taken out, magic and footer kept
        let mut cut = file[..2048].to_vec();
        cut.extend_from_slice(&file[2048 + 4096..]);
        let e = ipc_blocks_inside(&cut).unwrap_err();
        assert!(e.contains("outside the file"), "{e}");
        assert!(ipc_blocks_inside(b"ARROW1").is_err());
        assert!(ipc_blocks_inside(&file[..file.len() - 1]).is_err());
    }

    #[test]
    fn state_urls_say_what_is_supported() {
        let ctx = ConnectorContext::default();
        let e = StateStore::open("ftp://b/p", Path::new("."), "j", &ctx)
            .unwrap_err()
            .to_string();
        assert!(e.contains("s3://bucket/prefix"), "{e}");
        let e = StateStore::open("memory:///st", Path::new("."), "j", &ctx)
            .unwrap_err()
            .to_string();
        assert!(e.contains("could not resume"), "{e}");
        let s = StateStore::open("file:///tmp/st", Path::new("."), "j", &ctx).unwrap();
        assert_eq!(s.display(), "/tmp/st/j");
        let s = StateStore::open("state", Path::new("/app"), "j", &ctx).unwrap();
        assert_eq!(s.display(), "/app/state/j");
    }
}
