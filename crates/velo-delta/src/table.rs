//! Where a Delta table lives and how it is opened: a local directory
//! (relative paths against the SQL file's folder) or an object-store URL
//! (`s3://bucket/tables/orders`) reached through the file connector's
//! client for that store ([`velo_connectors::file::store::Remote`]: the
//! same keys, environment, retries and shared connections). Commits on an
//! object store are written with a conditional PUT (put-if-absent), so two
//! writers never both create one version.

use std::sync::{Arc, Once};

use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
};
use deltalake::{DeltaResult, DeltaTable, DeltaTableBuilder};
use url::Url;
use velo_config::{ConfigError, ConnectorConfig};
use velo_connectors::file::store::{self, Remote};
use velo_connectors::{ConnectorContext, ConnectorError, Result};

/// Object-store schemes a table may live on.
pub const SCHEMES: &[&str] = &["s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss"];

/// A table's place, resolved from the connector's `path`.
#[derive(Clone)]
pub struct Location {
    /// The table's URL (`file:///abs/dir/` or `s3://bucket/prefix/`).
    pub url: Url,
    /// The location for messages (credentials masked).
    pub shown: String,
    /// The store's client when the table is on an object store.
    remote: Option<Arc<dyn object_store::ObjectStore>>,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// The `path` key as given (a `delta://` URI sets it): a local directory or
/// an object-store URL; validated without contacting anything.
pub fn configured_path(cfg: &ConnectorConfig) -> std::result::Result<String, ConfigError> {
    let raw = cfg
        .require(
            "path",
            "the table's directory or URL, e.g. 'lake/orders' or 's3://bucket/tables/orders'",
        )?
        .trim()
        .to_string();
    if store::is_url(&raw) {
        let scheme = raw
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default();
        if !SCHEMES.contains(&scheme.as_str()) {
            return Err(cfg.invalid(
                "path",
                &velo_config::mask(&raw),
                "a local directory or a URL of s3://, gs://, az:// or abfss:// (http(s) cannot hold a Delta table)",
            ));
        }
        return Ok(raw);
    }
    let local = raw.strip_prefix("file://").unwrap_or(&raw);
    Ok(cfg.path(local).to_string_lossy().into_owned())
}

impl Location {
    /// The table at `cfg`'s `path`; `create_dir`: a local directory is
    /// created when missing (a sink's new table). Called on the runtime.
    pub fn of(cfg: &ConnectorConfig, ctx: &ConnectorContext, create_dir: bool) -> Result<Self> {
        let path = configured_path(cfg)?;
        let shown = velo_config::mask(&path).into_owned();
        if store::is_url(&path) {
            register_schemes();
            let dir = format!("{}/", path.trim_end_matches('/'));
            let url = Url::parse(&dir)
                .map_err(|e| ConnectorError::Other(format!("'{shown}': not a URL: {e}")))?;
            let (remote, _) = Remote::connect(&dir, &cfg.props, ctx)?;
            return Ok(Self {
                url,
                shown,
                remote: Some(remote.store()),
            });
        }
        let dir = std::path::Path::new(&path);
        if create_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                ConnectorError::Other(format!("cannot create the table directory {shown}: {e}"))
            })?;
        }
        let abs = std::path::absolute(dir)
            .map_err(|e| ConnectorError::Other(format!("'{shown}': {e}")))?;
        let url = Url::from_directory_path(&abs)
            .map_err(|_| ConnectorError::Other(format!("'{shown}' is not an absolute path")))?;
        Ok(Self {
            url,
            shown,
            remote: None,
        })
    }

    /// A local directory (for tests and the command line): no keys.
    pub fn local(dir: &std::path::Path) -> Result<Self> {
        let abs = std::path::absolute(dir)
            .map_err(|e| ConnectorError::Other(format!("'{}': {e}", dir.display())))?;
        let url = Url::from_directory_path(&abs)
            .map_err(|_| ConnectorError::Other(format!("'{}' is not a path", dir.display())))?;
        Ok(Self {
            url,
            shown: dir.display().to_string(),
            remote: None,
        })
    }

    /// The table handle, its log not read yet.
    pub fn table(&self) -> DeltaResult<DeltaTable> {
        let b = DeltaTableBuilder::from_url(self.url.clone())?;
        match &self.remote {
            Some(store) => b
                .with_storage_backend(store.clone(), self.url.clone())
                .build(),
            None => b.build(),
        }
    }

    /// The table with its newest version loaded; `None` when there is no
    /// table there yet.
    pub async fn load(&self) -> Result<Option<DeltaTable>> {
        if self.remote.is_none() && self.url.to_file_path().is_ok_and(|p| !p.exists()) {
            return Ok(None);
        }
        let mut t = self.table().map_err(|e| self.error("open", &e))?;
        match t.load().await {
            Ok(()) => Ok(Some(t)),
            Err(deltalake::DeltaTableError::NotATable(_)) => Ok(None),
            Err(e) => Err(self.error("read the log of", &e)),
        }
    }

    /// A Delta error while doing `what`, in a line a user can act on.
    pub fn error(&self, what: &str, e: &deltalake::DeltaTableError) -> ConnectorError {
        error(what, &self.shown, e)
    }
}

/// `e`, while doing `what` to the table at `shown`, in a line a user can act
/// on (object-store errors get the file connector's hints; secrets masked).
pub fn error(what: &str, shown: &str, e: &deltalake::DeltaTableError) -> ConnectorError {
    let text = match e {
        deltalake::DeltaTableError::ObjectStore { source } => store::store_error(source),
        other => velo_config::mask(&other.to_string()).into_owned(),
    };
    ConnectorError::Other(format!("cannot {what} the Delta table {shown}: {text}"))
}

/// deltalake knows log stores for `file://` and `memory://` only (its cloud
/// crates bring their own SDKs); the object-store schemes use its default
/// log store over our client, which commits with put-if-absent.
fn register_schemes() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let registry = logstore_factories();
        for s in SCHEMES {
            if let Ok(u) = Url::parse(&format!("{s}://")) {
                registry.insert(u, Arc::new(Stores));
            }
        }
    });
}

/// deltalake's default log store, for every object-store scheme.
struct Stores;

impl LogStoreFactory for Stores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}
