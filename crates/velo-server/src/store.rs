//! What the server keeps on disk, under its state directory, so that a
//! restart (also after `kill -9`) finds every deployed application again:
//!
//! ```text
//! <state-dir>/apps/<app>.json      an application: SQL, base directory,
//!                                   profile, overrides, each job's wanted state
//! <state-dir>/checkpoints/<job>/   the job's checkpoints (the engine's state.dir)
//! ```
//!
//! An application file is replaced atomically (written aside, synced,
//! renamed, the folder synced): a crash leaves the old or the new one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, ServerError};

/// Whether a job should run when the server starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Wanted {
    /// Started, and started again after a server restart.
    Running,
    /// Stopped by a user: stays stopped.
    Stopped,
}

/// A deployed application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    /// Its name (the deployment's `name`, else its first job's).
    pub app: String,
    /// The SQL as deployed.
    pub sql: String,
    /// Where its relative paths start.
    pub base_dir: PathBuf,
    /// The global config's profile it was deployed with.
    pub profile: Option<String>,
    /// `name.key=value` overrides it was deployed with.
    pub sets: Vec<(String, String)>,
    /// Each job's wanted state.
    pub jobs: BTreeMap<String, Wanted>,
    /// When it was deployed (RFC 3339).
    pub deployed_at: String,
}

/// The server's state directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating) the state directory `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        std::fs::create_dir_all(root.join("apps")).map_err(|e| {
            ServerError::Io(format!(
                "cannot create the server's state directory {}: {e}; pass --state-dir with a writable folder",
                root.display()
            ))
        })?;
        Ok(Self { root })
    }

    /// Where the jobs' checkpoints go: the `state.dir` of every hosted job.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// The checkpoints of job `job`.
    pub fn job_checkpoints(&self, job: &str) -> PathBuf {
        self.checkpoints().join(job)
    }

    fn app_path(&self, app: &str) -> PathBuf {
        self.root
            .join("apps")
            .join(format!("{}.json", file_name(app)))
    }

    /// Every deployed application, and the files that could not be read
    /// (with why).
    pub fn load(&self) -> (Vec<AppRecord>, Vec<String>) {
        let mut apps = Vec::new();
        let mut errors = Vec::new();
        let dir = match std::fs::read_dir(self.root.join("apps")) {
            Ok(d) => d,
            Err(e) => return (apps, vec![format!("{}: {e}", self.root.display())]),
        };
        let mut paths: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for p in paths {
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<AppRecord>(&b).map_err(|e| e.to_string()))
            {
                Ok(a) => apps.push(a),
                Err(e) => errors.push(format!("{}: {e}", p.display())),
            }
        }
        (apps, errors)
    }

    /// Writes `app` atomically.
    pub fn save(&self, app: &AppRecord) -> Result<()> {
        let path = self.app_path(&app.app);
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            // the SQL may hold credentials: readable by the server's user only
            let mut f = {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?
            };
            f.write_all(&serde_json::to_vec_pretty(app).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(self.root.join("apps"))?.sync_all()
        };
        write().map_err(|e| {
            ServerError::Io(format!(
                "cannot save the application to {}: {e}",
                path.display()
            ))
        })
    }

    /// Removes application `app`.
    pub fn remove(&self, app: &str) -> Result<()> {
        match std::fs::remove_file(self.app_path(app)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ServerError::Io(format!(
                "cannot remove application '{app}': {e}"
            ))),
        }
    }

    fn run_marker(&self, job: &str) -> PathBuf {
        self.root.join("runs").join(file_name(job))
    }

    /// Whether job `job` has run before (on this state directory).
    pub fn has_run(&self, job: &str) -> bool {
        self.run_marker(job).exists()
    }

    /// Notes that job `job` runs: its later runs continue its output. A
    /// marker that cannot be written is logged: the next run would then
    /// replace what a file sink wrote.
    pub fn mark_run(&self, job: &str) {
        let path = self.run_marker(job);
        let written = std::fs::create_dir_all(self.root.join("runs"))
            .and_then(|_| std::fs::write(&path, b""));
        if let Err(e) = written {
            tracing::error!(
                "cannot note that job '{job}' ran ({}: {e}): its next run would replace its file output",
                path.display()
            );
        }
    }

    /// Removes the checkpoints of job `job` (and that it ran).
    pub fn purge(&self, job: &str) -> Result<()> {
        let _ = std::fs::remove_file(self.run_marker(job));
        match std::fs::remove_dir_all(self.job_checkpoints(job)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ServerError::Io(format!(
                "cannot remove the state of job '{job}': {e}"
            ))),
        }
    }
}

/// Bytes a name keeps in its file name: letters, digits, `-`, `_` and `.`
/// (a leading `.` is encoded by [`file_name`]).
const KEPT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

/// A name as a file name: the rest percent-encoded, a leading dot too, so
/// that no name reaches outside the folder or hides.
fn file_name(name: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(name, KEPT).to_string();
    match encoded.strip_prefix('.') {
        Some(rest) => format!("%2E{rest}"),
        None => encoded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str) -> AppRecord {
        AppRecord {
            app: name.into(),
            sql: "CREATE STREAM s AS SELECT 1".into(),
            base_dir: "/tmp".into(),
            profile: None,
            sets: vec![("a.b".into(), "c".into())],
            jobs: [("s".to_string(), Wanted::Running)].into(),
            deployed_at: "2026-12-05T00:00:00Z".into(),
        }
    }

    #[test]
    fn applications_survive_a_reopen_and_names_stay_inside_the_folder() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.save(&app("orders")).unwrap();
        s.save(&app("../../etc/x")).unwrap();
        let (apps, errors) = Store::open(d.path()).unwrap().load();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(apps.len(), 2);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("apps/orders.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "only the server's user reads the SQL");
        assert!(apps.contains(&app("../../etc/x")));
        assert!(d.path().join("apps/%2E.%2F..%2Fetc%2Fx.json").exists());
        s.remove("orders").unwrap();
        assert_eq!(s.load().0, vec![app("../../etc/x")]);
    }

    #[test]
    fn a_damaged_file_is_reported_not_fatal() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.save(&app("good")).unwrap();
        std::fs::write(d.path().join("apps/bad.json"), "{").unwrap();
        let (apps, errors) = s.load();
        assert_eq!(apps.len(), 1);
        assert!(errors[0].contains("bad.json"), "{errors:?}");
    }
}
