//! Iceberg's file I/O on `object_store`: the [`iceberg::io::Storage`] that
//! every catalog and table of this crate reads and writes through.
//!
//! Object-store URLs (`s3://`, `gs://`, `az://`, `abfss://`) reach their
//! store through the file connector's clients
//! ([`velo_connectors::file::store::Remote`]: the same keys, `AWS_*`
//! environment, retries and shared connections as `s3_source`); local paths
//! and `file://` URLs go to `object_store`'s local file system, whose writes
//! land through a temporary file and a rename (a reader never sees half a
//! metadata file) and which runs its blocking I/O off the runtime threads.
//! Large files are uploaded in parts ([`object_store::buffered::BufWriter`]).
//!
//! Credentials a REST catalog vends for a table (`s3.access-key-id`, ...)
//! fill in keys the connector does not set; the connector's keys win.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig,
    StorageFactory,
};
use iceberg::{Error, ErrorKind};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use velo_connectors::ConnectorContext;
use velo_connectors::file::store::Remote;

/// What a storage is built from: the connector's keys and context. Not
/// serialized (iceberg serializes storages only to ship them to other
/// processes, which this crate never does; the keys hold secrets).
#[derive(Clone, Default)]
pub struct Access {
    keys: BTreeMap<String, String>,
    ctx: Option<ConnectorContext>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Access(..)")
    }
}

impl Access {
    /// Stores reached with the connector's `keys` (the store keys of
    /// `s3_source`: endpoint, region, credentials) and its context.
    pub fn new(keys: &BTreeMap<String, String>, ctx: &ConnectorContext) -> Self {
        Self {
            keys: keys.clone(),
            ctx: Some(ctx.clone()),
        }
    }
}

/// Iceberg's property names for S3 access, as the connector's keys.
const CATALOG_PROPS: &[(&str, &str)] = &[
    ("s3.endpoint", "endpoint"),
    ("s3.region", "region"),
    ("client.region", "region"),
    ("s3.access-key-id", "access_key_id"),
    ("s3.secret-access-key", "secret_access_key"),
    ("s3.session-token", "session_token"),
];

/// The factory handed to iceberg's catalogs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ObjectStorageFactory {
    #[serde(skip)]
    access: Access,
}

impl ObjectStorageFactory {
    /// A factory of storages reached with `access`.
    pub fn new(access: Access) -> Self {
        Self { access }
    }
}

/// Files in one store: the store, its root's URL, the files' paths in it.
pub type Located = (Arc<dyn ObjectStore>, url::Url, Vec<ObjectPath>);

impl ObjectStorageFactory {
    /// The storage of a table or catalog configured with `config`.
    fn storage(&self, config: &StorageConfig) -> ObjectStorage {
        let mut access = self.access.clone();
        for (prop, key) in CATALOG_PROPS {
            if let Some(v) = config.props().get(*prop) {
                access
                    .keys
                    .entry(key.to_string())
                    .or_insert_with(|| v.clone());
            }
        }
        if let Some(v) = config.props().get("s3.path-style-access") {
            access
                .keys
                .entry("virtual_hosted_style".into())
                .or_insert_with(|| (v != "true").to_string());
        }
        if access
            .keys
            .get("endpoint")
            .is_some_and(|e| e.starts_with("http://"))
        {
            access
                .keys
                .entry("allow_http".into())
                .or_insert_with(|| "true".into());
        }
        ObjectStorage {
            access,
            stores: Arc::default(),
        }
    }

    /// The one store holding all of `paths` (a table's data files, as its
    /// manifests name them), reached as the table's file I/O (`config`)
    /// reaches it, its root's URL (`s3://bucket/`, `file:///`) and each
    /// file's path in it; why not, when the files are in several stores or
    /// a path cannot be resolved.
    pub fn locate_all(
        &self,
        config: &StorageConfig,
        paths: &[&str],
    ) -> std::result::Result<Located, String> {
        let storage = self.storage(config);
        let mut store: Option<Arc<dyn ObjectStore>> = None;
        let mut located = Vec::with_capacity(paths.len());
        for p in paths {
            let (s, path) = storage.resolve(p).map_err(|e| e.to_string())?;
            match &store {
                Some(first) if !Arc::ptr_eq(first, &s) => {
                    return Err("its data files are in more than one store".into());
                }
                Some(_) => {}
                None => store = Some(s),
            }
            located.push(path);
        }
        let store = match store {
            Some(s) => s,
            None => storage
                .store_of("file://", || Ok(local_store()))
                .map_err(|e| e.to_string())?,
        };
        let root = match paths.first().and_then(|p| url::Url::parse(p).ok()) {
            Some(u) if u.scheme() != "file" && u.has_authority() => {
                format!("{}://{}/", u.scheme(), u.authority())
            }
            _ => "file:///".to_string(),
        };
        let root = url::Url::parse(&root).map_err(|e| e.to_string())?;
        Ok((store, root, located))
    }
}

#[typetag::serde(name = "velo_object_store")]
impl StorageFactory for ObjectStorageFactory {
    fn build(&self, config: &StorageConfig) -> iceberg::Result<Arc<dyn Storage>> {
        Ok(Arc::new(self.storage(config)))
    }
}

/// Iceberg's storage on `object_store`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectStorage {
    #[serde(skip)]
    access: Access,
    /// Clients by `scheme://authority` (one per bucket).
    #[serde(skip)]
    stores: Arc<Mutex<HashMap<String, Arc<dyn ObjectStore>>>>,
}

fn failed(what: &str, path: &str, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Unexpected,
        format!(
            "cannot {what} {}: {}",
            velo_config::mask(path),
            velo_config::mask(&e.to_string())
        ),
    )
}

fn not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl ObjectStorage {
    /// The store holding `path` and the object's path in it.
    fn resolve(&self, path: &str) -> iceberg::Result<(Arc<dyn ObjectStore>, ObjectPath)> {
        let local = |p: &str| -> iceberg::Result<(Arc<dyn ObjectStore>, ObjectPath)> {
            let abs = std::path::absolute(p).map_err(|e| failed("resolve", p, e))?;
            let obj = ObjectPath::from_absolute_path(&abs).map_err(|e| failed("resolve", p, e))?;
            Ok((self.store_of("file://", || Ok(local_store()))?, obj))
        };
        let Some((scheme, _)) = path.split_once("://") else {
            return local(path);
        };
        if scheme.eq_ignore_ascii_case("file") {
            let url = url::Url::parse(path).map_err(|e| failed("resolve", path, e))?;
            let p = url
                .to_file_path()
                .map_err(|_| failed("resolve", path, "not a local path"))?;
            return local(&p.to_string_lossy());
        }
        let url = url::Url::parse(path).map_err(|e| failed("resolve", path, e))?;
        let root = format!("{}://{}", url.scheme(), url.authority());
        let store = self.store_of(&root, || {
            let ctx = self.access.ctx.clone().unwrap_or_default();
            let (remote, _) = Remote::connect(&format!("{root}/"), &self.access.keys, &ctx)
                .map_err(|e| failed("open the store of", path, e))?;
            Ok(remote.store())
        })?;
        let obj = ObjectPath::from_url_path(url.path()).map_err(|e| failed("resolve", path, e))?;
        Ok((store, obj))
    }

    fn store_of(
        &self,
        root: &str,
        make: impl FnOnce() -> iceberg::Result<Arc<dyn ObjectStore>>,
    ) -> iceberg::Result<Arc<dyn ObjectStore>> {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = stores.get(root) {
            return Ok(s.clone());
        }
        let s = make()?;
        stores.insert(root.to_string(), s.clone());
        Ok(s)
    }
}

fn local_store() -> Arc<dyn ObjectStore> {
    Arc::new(object_store::local::LocalFileSystem::new().with_automatic_cleanup(true))
}

#[async_trait::async_trait]
#[typetag::serde(name = "velo_object_storage")]
impl Storage for ObjectStorage {
    async fn exists(&self, path: &str) -> iceberg::Result<bool> {
        let (store, p) = self.resolve(path)?;
        match store.head(&p).await {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(failed("look up", path, e)),
        }
    }

    async fn metadata(&self, path: &str) -> iceberg::Result<FileMetadata> {
        let (store, p) = self.resolve(path)?;
        let meta = store
            .head(&p)
            .await
            .map_err(|e| failed("look up", path, e))?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> iceberg::Result<Bytes> {
        let (store, p) = self.resolve(path)?;
        let got = store.get(&p).await.map_err(|e| failed("read", path, e))?;
        got.bytes().await.map_err(|e| failed("read", path, e))
    }

    async fn reader(&self, path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        let (store, p) = self.resolve(path)?;
        Ok(Box::new(ObjectRead {
            store,
            path: p,
            shown: path.to_string(),
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> iceberg::Result<()> {
        let (store, p) = self.resolve(path)?;
        store
            .put(&p, bs.into())
            .await
            .map(drop)
            .map_err(|e| failed("write", path, e))
    }

    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        let (store, p) = self.resolve(path)?;
        Ok(Box::new(ObjectWrite {
            writer: Some(BufWriter::new(store, p)),
            shown: path.to_string(),
        }))
    }

    async fn delete(&self, path: &str) -> iceberg::Result<()> {
        let (store, p) = self.resolve(path)?;
        match store.delete(&p).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(failed("delete", path, e)),
        }
    }

    async fn delete_prefix(&self, path: &str) -> iceberg::Result<()> {
        let (store, p) = self.resolve(path)?;
        let listed = store.list(Some(&p)).map_ok(|m| m.location).boxed();
        let mut deleted = store.delete_stream(listed);
        while let Some(r) = deleted.next().await {
            match r {
                Ok(_) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(failed("delete", path, e)),
            }
        }
        Ok(())
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> iceberg::Result<()> {
        while let Some(p) = paths.next().await {
            self.delete(&p).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> iceberg::Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> iceberg::Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

/// Ranged reads of one object.
struct ObjectRead {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    shown: String,
}

#[async_trait::async_trait]
impl FileRead for ObjectRead {
    async fn read(&self, range: Range<u64>) -> iceberg::Result<Bytes> {
        self.store
            .get_range(&self.path, range)
            .await
            .map_err(|e| failed("read", &self.shown, e))
    }
}

/// An upload: visible only once `close` finished it (parts above 10 MB).
struct ObjectWrite {
    writer: Option<BufWriter>,
    shown: String,
}

#[async_trait::async_trait]
impl FileWrite for ObjectWrite {
    async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| failed("write", &self.shown, "the file is closed"))?;
        w.put(bs).await.map_err(|e| failed("write", &self.shown, e))
    }

    async fn close(&mut self) -> iceberg::Result<()> {
        let Some(mut w) = self.writer.take() else {
            return Ok(());
        };
        w.shutdown()
            .await
            .map_err(|e| failed("finish", &self.shown, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Local paths and file:// URLs read, write, list and delete through
    /// the local store; a missing file is absent, not an error.
    #[tokio::test]
    async fn local_files_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let s = ObjectStorageFactory::default()
            .build(&StorageConfig::new())
            .unwrap();
        let plain = d.path().join("a/b/c.json");
        let plain = plain.to_str().unwrap();
        let url = format!("file://{}", d.path().join("a/x y.bin").display());
        assert!(!s.exists(plain).await.unwrap());
        s.write(plain, Bytes::from_static(b"{}")).await.unwrap();
        assert!(s.exists(plain).await.unwrap());
        assert_eq!(s.read(plain).await.unwrap(), Bytes::from_static(b"{}"));
        let mut w = s.writer(&url).await.unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        w.write(Bytes::from_static(b"world")).await.unwrap();
        assert!(!s.exists(&url).await.unwrap(), "not visible before close");
        w.close().await.unwrap();
        assert_eq!(s.metadata(&url).await.unwrap().size, 11);
        let r = s.reader(&url).await.unwrap();
        assert_eq!(r.read(6..11).await.unwrap(), Bytes::from_static(b"world"));
        s.delete_prefix(d.path().join("a").to_str().unwrap())
            .await
            .unwrap();
        assert!(!s.exists(plain).await.unwrap());
        s.delete(plain).await.unwrap();
    }
}
