//! One storage layer for local directories and object stores, on
//! `object_store`: a [`Storage`] is a folder (a local directory or a prefix
//! in `s3://`, `file://`, `memory://`) whose objects are read, written
//! whole, listed and deleted by name.
//!
//! Where it sits: under everything that keeps files other than the data of
//! a file sink: the engine's checkpoints and operator state today, the file
//! connector on object stores next. Stores come from the process's
//! [`ObjectStoreRegistry`](object_store::registry::ObjectStoreRegistry) of
//! the [`ConnectorContext`], so every user of one URL shares one client and
//! its credentials (S3: the standard `AWS_*` environment variables).
//!
//! A write is atomic on every store: a reader sees the old object or the new
//! one, never a part (object stores: one PUT; local directories: a temporary
//! file renamed over the old one). On a local directory it is also durable
//! when `put` returns (the file and the directory are synced), which
//! `object_store`'s local store does not do on its own.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::{ConnectorContext, ConnectorError, Result};

/// URL schemes a [`Storage`] opens in this build.
pub const SCHEMES: &[&str] = &[
    "file", "s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss", "memory",
];

/// A folder in a local directory or an object store.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// The folder's path in the store.
    prefix: ObjectPath,
    /// The folder on disk, when the store is the local file system.
    local: Option<PathBuf>,
    /// The folder's URL (or path), for messages.
    shown: String,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Storage {
    /// The folder at `location`: a URL (`s3://bucket/prefix`,
    /// `file:///dir`, `memory:///dir`) or a local path, relative to `base`
    /// unless absolute. Nothing is contacted or created yet.
    pub fn open(location: &str, base: &Path, ctx: &ConnectorContext) -> Result<Self> {
        let shown = velo_config::mask(location).into_owned();
        let bad = |m: String| ConnectorError::Other(format!("storage location '{shown}': {m}"));
        let Some((scheme, _)) = location.split_once("://") else {
            let dir = Path::new(location);
            return Self::local(&if dir.is_absolute() {
                dir.to_path_buf()
            } else {
                base.join(dir)
            })
            .map_err(bad);
        };
        let url = url::Url::parse(location).map_err(|e| bad(e.to_string()))?;
        match scheme {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|_| bad("not a local path".into()))?;
                Self::local(&dir).map_err(bad)
            }
            s if SCHEMES.contains(&s) => {
                let (store, prefix) = ctx
                    .object_stores()
                    .resolve(&url)
                    .map_err(|e| bad(e.to_string()))?;
                Ok(Self {
                    store,
                    prefix,
                    local: None,
                    shown: shown.trim_end_matches('/').to_string(),
                })
            }
            other => Err(bad(format!(
                "'{other}://' cannot hold state; use a local path, s3://bucket/prefix (any S3-compatible store, endpoint in AWS_ENDPOINT_URL), gs://bucket/prefix or az://container/prefix"
            ))),
        }
    }

    /// A local directory as a folder of the local file system's store.
    /// A relative `dir` is relative to the process's working directory, as
    /// for any file the process opens.
    fn local(dir: &Path) -> std::result::Result<Self, String> {
        let absolute = std::path::absolute(dir).map_err(|e| e.to_string())?;
        let url =
            url::Url::from_directory_path(&absolute).map_err(|_| "not a local path".to_string())?;
        let prefix = ObjectPath::from_url_path(url.path()).map_err(|e| e.to_string())?;
        Ok(Self {
            store: Arc::new(object_store::local::LocalFileSystem::new()),
            prefix,
            local: Some(dir.to_path_buf()),
            shown: dir.display().to_string(),
        })
    }

    /// The folder `name` inside this one.
    pub fn child(&self, name: &str) -> Self {
        Self {
            store: self.store.clone(),
            prefix: self.prefix.clone().join(name),
            local: self.local.as_ref().map(|d| d.join(name)),
            shown: format!("{}/{name}", self.shown),
        }
    }

    /// The folder as a path or URL, for messages.
    pub fn display(&self) -> &str {
        &self.shown
    }

    /// The store and the folder's path in it, for readers that take an
    /// `ObjectStore` (DataFusion, Parquet).
    pub fn store(&self) -> (&Arc<dyn ObjectStore>, &ObjectPath) {
        (&self.store, &self.prefix)
    }

    fn io(&self, what: &str, name: &str, e: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Other(format!("cannot {what} '{}/{name}': {e}", self.shown))
    }

    /// The bytes of `name`, or `None` if it does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<Bytes>> {
        match self.store.get(&self.prefix.clone().join(name)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| self.io("read", name, e))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.io("read", name, e)),
        }
    }

    /// Writes `name` whole: afterwards it is durable, and a reader sees the
    /// old contents or the new, never a part.
    pub async fn put(&self, name: &str, body: Bytes) -> Result<()> {
        let Some(dir) = &self.local else {
            return self
                .store
                .put(&self.prefix.clone().join(name), body.into())
                .await
                .map(drop)
                .map_err(|e| self.io("write", name, e));
        };
        let (dir, file) = (dir.clone(), name.to_string());
        tokio::task::spawn_blocking(move || durable_write(&dir, &file, &body))
            .await
            .map_err(|e| self.io("write", name, e))?
            .map_err(|e| self.io("write", name, e))
    }

    /// The names of the objects directly in the folder (none if it does not
    /// exist).
    pub async fn list(&self) -> Result<Vec<String>> {
        if self.local.as_ref().is_some_and(|d| !d.exists()) {
            return Ok(Vec::new());
        }
        let listed = self
            .store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(|e| self.io("list", "", e))?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect())
    }

    /// Removes `name`; one that does not exist is not an error.
    pub async fn delete(&self, name: &str) -> Result<()> {
        match self.store.delete(&self.prefix.clone().join(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.io("delete", name, e)),
        }
    }
}

/// Writes `dir/name` through a synced temporary file renamed over it, then
/// syncs the directory: the new contents survive a power cut once this
/// returns, and a crash before leaves the old ones.
fn durable_write(dir: &Path, name: &str, body: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ConnectorContext {
        ConnectorContext::default()
    }

    #[tokio::test]
    async fn a_local_folder_writes_reads_lists_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open("state", dir.path(), &ctx())
            .unwrap()
            .child("job");
        assert_eq!(s.list().await.unwrap(), Vec::<String>::new());
        assert_eq!(s.get("a").await.unwrap(), None);
        s.put("a", Bytes::from_static(b"one")).await.unwrap();
        s.put("a", Bytes::from_static(b"two")).await.unwrap();
        s.put("b", Bytes::from_static(b"")).await.unwrap();
        assert_eq!(s.get("a").await.unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(
            std::fs::read(dir.path().join("state/job/a")).unwrap(),
            b"two"
        );
        let mut names = s.list().await.unwrap();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        s.delete("a").await.unwrap();
        s.delete("a").await.unwrap();
        assert_eq!(s.list().await.unwrap(), ["b"]);
        assert!(s.display().ends_with("state/job"), "{}", s.display());
    }

    #[tokio::test]
    async fn relative_folders_are_under_the_working_directory() {
        let s = Storage::open("state", Path::new("."), &ctx()).unwrap();
        assert_eq!(s.display(), "./state");
        let (_, prefix) = s.store();
        let cwd = std::env::current_dir().unwrap().join("state");
        assert_eq!(format!("/{prefix}"), cwd.display().to_string());
    }

    #[tokio::test]
    async fn file_urls_and_memory_urls_open_the_same_way() {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap();
        let s = Storage::open(url.as_str(), Path::new("/nowhere"), &ctx()).unwrap();
        s.put("x", Bytes::from_static(b"1")).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), b"1");

        let m = Storage::open("memory:///p", Path::new("/"), &ctx()).unwrap();
        m.put("y", Bytes::from_static(b"2")).await.unwrap();
        assert_eq!(m.list().await.unwrap(), ["y"]);
        assert_eq!(m.get("y").await.unwrap().as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn unsupported_urls_say_what_is() {
        let e = Storage::open("ftp://host/x", Path::new("/"), &ctx())
            .unwrap_err()
            .to_string();
        assert!(e.contains("s3://bucket/prefix"), "{e}");
        assert!(e.contains("ftp://"), "{e}");
        let e = Storage::open("ftp://me:hunter2@host/x", Path::new("/"), &ctx())
            .unwrap_err()
            .to_string();
        assert!(
            !e.contains("hunter2")
                && e.contains(&format!("me:{}@host", velo_config::secrets::MASK)),
            "{e}"
        );
    }
}
