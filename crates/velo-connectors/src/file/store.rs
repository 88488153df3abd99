//! Where the file connector's files live: the local file system or an
//! object store (`s3://`, `gs://`, `az://`/`abfss://`, `http(s)://`), behind
//! one small interface the source and the sink share.
//!
//! The file source and sink run on threads of their own and their decoders
//! and encoders are synchronous (`std::io::Read` / `Write`), so an object
//! store is reached through blocking adapters that wait on the runtime's
//! handle: [`ObjectRead`] streams an object's bytes (memory stays flat on a
//! file of any size), [`ObjectChunks`] serves Parquet's range reads (the
//! footer, then only the column chunks of the projected columns), and
//! [`ObjectWriter`] uploads a file as it is written (one PUT for a small
//! file, a multipart upload past [`PART_BYTES`]) and makes it visible only
//! when it is finished.
//!
//! Each source and sink has its own client, configured from the standard
//! `AWS_*`, `GOOGLE_*`, `AZURE_*` environment (and instance credentials)
//! with the connector's keys over it (`region`, `endpoint`,
//! `access_key_id`, `secret_access_key`, `session_token`, `allow_http`,
//! `virtual_hosted_style`), and retries that give up within 30 seconds.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;
use tokio::runtime::Handle;

use crate::{ConnectorContext, ConnectorError, Result};

/// URL schemes the file connector reads; all but `http(s)` are written too.
pub const SCHEMES: &[&str] = &[
    "s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss", "http", "https",
];

/// The connector keys that configure an object store's client, with the
/// `object_store` option each sets.
pub const STORE_KEYS: &[(&str, &str)] = &[
    ("region", "aws_region"),
    ("endpoint", "aws_endpoint"),
    ("access_key_id", "aws_access_key_id"),
    ("secret_access_key", "aws_secret_access_key"),
    ("session_token", "aws_session_token"),
    ("allow_http", "allow_http"),
    ("virtual_hosted_style", "aws_virtual_hosted_style_request"),
];

/// Multipart uploads start past this many bytes, in parts of this size
/// (S3's minimum part is 5 MiB).
pub const PART_BYTES: usize = 10 << 20;

/// Whether `path` names an object store (`scheme://...` other than `file://`).
pub fn is_url(path: &str) -> bool {
    path.split_once("://").is_some_and(|(s, _)| {
        s != "file" && !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// A store and how to reach it from a blocking thread.
#[derive(Clone)]
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    handle: Handle,
    /// `scheme://authority`, the URL of the store's root.
    root: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.root)
    }
}

/// An object found by a listing.
#[derive(Debug, Clone)]
pub struct Object {
    /// Its URL (`s3://bucket/key`): its name in positions, metadata columns
    /// and messages.
    pub url: String,
    /// Its path in the store.
    pub path: ObjectPath,
    /// Its size in bytes.
    pub size: u64,
}

impl Remote {
    /// The store of `url` and the path `url` names in it. Nothing is
    /// contacted yet. `keys` are the connector's keys ([`STORE_KEYS`] are
    /// read). Called on a thread of the runtime (or its blocking pool).
    pub fn connect(
        url: &str,
        keys: &BTreeMap<String, String>,
        ctx: &ConnectorContext,
    ) -> Result<(Self, ObjectPath)> {
        let shown = velo_config::mask(url).into_owned();
        let bad = |m: String| ConnectorError::Other(format!("'{shown}': {m}"));
        let parsed = url::Url::parse(url).map_err(|e| bad(format!("not a URL: {e}")))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(bad(
                "no bucket or host after the scheme: write it as s3://bucket/prefix/*.parquet"
                    .into(),
            ));
        }
        let handle = Handle::try_current().map_err(|_| {
            ConnectorError::Internal("an object store is opened outside the runtime".into())
        })?;
        // the environment first, the connector's keys over it
        let mut opts: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| {
                ["AWS_", "GOOGLE_", "AZURE_"]
                    .iter()
                    .any(|p| k.starts_with(p))
            })
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        for (k, opt) in STORE_KEYS {
            if let Some(v) = keys.get(*k) {
                if *opt == "aws_endpoint" {
                    opts.remove("aws_endpoint_url");
                }
                opts.insert(opt.to_string(), v.clone());
            }
        }
        let (store, path) = ctx
            .shared::<Clients>()
            .get(&parsed, &opts)
            .map_err(|e| bad(store_error(&e)))?;
        let root = format!("{}://{}", parsed.scheme(), parsed.authority());
        Ok((
            Self {
                store,
                handle,
                root,
            },
            path,
        ))
    }

    /// The store's client, rooted at the bucket (for libraries that speak
    /// `object_store` themselves: the Delta connector).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// `scheme://authority`: the URL the store serves.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The URL of `path` in this store.
    pub fn url_of(&self, path: &ObjectPath) -> String {
        format!("{}/{}", self.root, path)
    }

    /// The path in this store of `url` (one this store's [`Self::url_of`]
    /// made, or a rendered sink path under the same root).
    pub fn path_of(&self, url: &str) -> Result<ObjectPath> {
        let rest = url.strip_prefix(&self.root).ok_or_else(|| {
            ConnectorError::Other(format!(
                "'{}' is not in the store '{}'",
                velo_config::mask(url),
                self.root
            ))
        })?;
        ObjectPath::parse(rest.trim_start_matches('/')).map_err(|e| {
            ConnectorError::Other(format!(
                "'{}' is not a valid object name: {e}",
                velo_config::mask(url)
            ))
        })
    }

    fn wait<F: std::future::Future>(&self, f: F) -> F::Output {
        self.handle.block_on(f)
    }

    fn failed(&self, what: &str, url: &str, e: &object_store::Error) -> ConnectorError {
        ConnectorError::Other(format!(
            "cannot {what} '{}': {}",
            velo_config::mask(url),
            store_error(e)
        ))
    }

    /// The objects under `prefix` whose path matches `pattern` (all when
    /// none), sorted by name; names starting with `.` or `_` (another
    /// writer's temporaries, `_SUCCESS`, `_delta_log`) are left out. With
    /// `after`, only names sorting after it (an incremental listing: S3's
    /// `start-after`).
    pub fn list(
        &self,
        prefix: &ObjectPath,
        pattern: Option<&glob::Pattern>,
        after: Option<&ObjectPath>,
    ) -> Result<Vec<Object>> {
        let shown = self.url_of(prefix);
        let listing: BoxStream<'_, object_store::Result<object_store::ObjectMeta>> = match after {
            Some(a) => self.store.list_with_offset(Some(prefix), a),
            None => self.store.list(Some(prefix)),
        };
        let metas: Vec<object_store::Result<object_store::ObjectMeta>> =
            self.wait(listing.collect());
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: true,
        };
        let mut out = Vec::new();
        for m in metas {
            let m = match m {
                Ok(m) => m,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(self.failed("list", &shown, &e)),
            };
            let hidden = m
                .location
                .parts()
                .any(|p| p.as_ref().starts_with('.') || p.as_ref().starts_with('_'));
            if hidden || pattern.is_some_and(|p| !p.matches_with(m.location.as_ref(), opts)) {
                continue;
            }
            out.push(Object {
                url: self.url_of(&m.location),
                path: m.location,
                size: m.size,
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// The size of `path`, or `None` if it does not exist (a HEAD request).
    pub fn size(&self, path: &ObjectPath) -> Result<Option<u64>> {
        match self.wait(self.store.head(path)) {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed("look up", &self.url_of(path), &e)),
        }
    }

    /// The names of the objects directly in the folder `dir` (one listing
    /// request: it also checks that the bucket and the credentials work).
    pub fn names_in(&self, dir: &ObjectPath) -> Result<Vec<String>> {
        let listed = self
            .wait(self.store.list_with_delimiter(Some(dir)))
            .map_err(|e| self.failed("list", &self.url_of(dir), &e))?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect())
    }

    /// The object's bytes as a stream read on demand.
    pub fn open(&self, object: &Object) -> Result<ObjectRead> {
        let got = self
            .wait(self.store.get(&object.path))
            .map_err(|e| self.failed("read", &object.url, &e))?;
        Ok(ObjectRead {
            stream: got.into_stream(),
            buf: Bytes::new(),
            handle: self.handle.clone(),
        })
    }

    /// The object as Parquet's range reader.
    pub fn chunks(&self, object: &Object) -> ObjectChunks {
        ObjectChunks {
            remote: self.clone(),
            path: object.path.clone(),
            size: object.size,
        }
    }

    /// A new object at `path`, written as it comes.
    pub fn create(&self, path: ObjectPath) -> ObjectWriter {
        ObjectWriter {
            remote: self.clone(),
            writer: Some(
                object_store::buffered::BufWriter::with_capacity(
                    self.store.clone(),
                    path.clone(),
                    PART_BYTES,
                )
                .with_max_concurrency(4),
            ),
            path,
        }
    }

    /// Moves `from` to `to` (a copy then a delete on object stores: `to`
    /// appears whole, and doing it again after a crash is harmless while
    /// `from` exists).
    pub fn rename(&self, from: &ObjectPath, to: &ObjectPath) -> Result<()> {
        self.wait(self.store.rename(from, to))
            .map_err(|e| self.failed("publish", &self.url_of(to), &e))
    }

    /// Removes `path`; one that does not exist is not an error.
    pub fn delete(&self, path: &ObjectPath) -> Result<()> {
        match self.wait(self.store.delete(path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed("delete", &self.url_of(path), &e)),
        }
    }
}

/// The clients of a context, one per store and configuration: the sources
/// and sinks of a job (and the jobs of a server) on one bucket share its
/// connections.
#[derive(Default)]
struct Clients(std::sync::Mutex<std::collections::HashMap<String, Arc<dyn ObjectStore>>>);

impl Clients {
    fn get(
        &self,
        url: &url::Url,
        opts: &BTreeMap<String, String>,
    ) -> object_store::Result<(Arc<dyn ObjectStore>, ObjectPath)> {
        let key = format!(
            "{}://{}\n{}",
            url.scheme(),
            url.authority(),
            serde_json::to_string(opts).unwrap_or_default()
        );
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = map.get(&key) {
            let (_, path) = object_store::ObjectStoreScheme::parse(url)?;
            return Ok((store.clone(), ObjectPath::parse(path)?));
        }
        let (store, path) = build_store(url, opts)?;
        map.insert(key, store.clone());
        Ok((store, path))
    }
}

/// How a request to an object store is retried: a few times over at most
/// 30 seconds, so a wrong endpoint or a store that is down is an error
/// soon (the job's failure strategy and restarts take over from there)
/// rather than three minutes of silence.
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig::default(),
        max_retries: 5,
        retry_timeout: std::time::Duration::from_secs(30),
    }
}

/// The client of `url`'s store with `opts` (`object_store` option names;
/// unknown ones are ignored, as `object_store::parse_url_opts` does).
fn build_store(
    url: &url::Url,
    opts: &BTreeMap<String, String>,
) -> object_store::Result<(Arc<dyn ObjectStore>, ObjectPath)> {
    use object_store::ObjectStoreScheme as S;
    macro_rules! build {
        ($builder:expr) => {{
            let b = opts
                .iter()
                .fold($builder.with_url(url.to_string()), |b, (k, v)| {
                    match k.parse() {
                        Ok(k) => b.with_config(k, v),
                        Err(_) => b,
                    }
                });
            Arc::new(b.with_retry(retry()).build()?) as Arc<dyn ObjectStore>
        }};
    }
    let (scheme, path) = S::parse(url)?;
    let path = ObjectPath::parse(path)?;
    let store = match scheme {
        S::AmazonS3 => build!(object_store::aws::AmazonS3Builder::new()),
        S::GoogleCloudStorage => build!(object_store::gcp::GoogleCloudStorageBuilder::new()),
        S::MicrosoftAzure => build!(object_store::azure::MicrosoftAzureBuilder::new()),
        S::Http => {
            let root = &url[..url::Position::BeforePath];
            let b = opts.iter().fold(
                object_store::http::HttpBuilder::new().with_url(root),
                |b, (k, v)| match k.parse() {
                    Ok(k) => b.with_config(k, v),
                    Err(_) => b,
                },
            );
            Arc::new(b.with_retry(retry()).build()?) as Arc<dyn ObjectStore>
        }
        _ => Arc::from(object_store::parse_url_opts(url, opts.iter())?.0),
    };
    Ok((store, path))
}

/// An object store error in a line a user can act on (the store's own
/// message, which names no secret, with a hint for the usual causes).
pub fn store_error(e: &object_store::Error) -> String {
    let text = e.to_string();
    let hint = match e {
        object_store::Error::NotFound { .. } => "; check the bucket and the path",
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => {
            "; check the credentials (access_key_id / secret_access_key, or the AWS_* environment)"
        }
        _ if text.contains("error sending request") || text.contains("Connect") => {
            "; check the endpoint (endpoint, AWS_ENDPOINT_URL) and that the store is reachable"
        }
        _ => "",
    };
    format!("{}{hint}", velo_config::mask(&text))
}

/// An object's bytes as a blocking reader.
pub struct ObjectRead {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    buf: Bytes,
    handle: Handle,
}

impl Read for ObjectRead {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(std::io::Error::other(store_error(&e))),
                None => return Ok(0),
            }
        }
        let n = self.buf.len().min(out.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf.advance(n);
        Ok(n)
    }
}

/// An object read by ranges (Parquet: the footer, then each column chunk
/// the reader needs).
pub struct ObjectChunks {
    remote: Remote,
    path: ObjectPath,
    size: u64,
}

impl parquet::file::reader::Length for ObjectChunks {
    fn len(&self) -> u64 {
        self.size
    }
}

impl parquet::file::reader::ChunkReader for ObjectChunks {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self
            .get_bytes(start, self.size.saturating_sub(start) as usize)?
            .reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        if length == 0 {
            return Ok(Bytes::new());
        }
        self.remote
            .wait(
                self.remote
                    .store
                    .get_range(&self.path, start..start + length as u64),
            )
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
    }
}

/// A new object, uploaded as it is written and visible once [`finish`]ed:
/// a file smaller than [`PART_BYTES`] is one PUT, a larger one a multipart
/// upload of up to four parts at a time. Dropped or [`abort`]ed, it never
/// appears.
///
/// [`finish`]: ObjectWriter::finish
/// [`abort`]: ObjectWriter::abort
pub struct ObjectWriter {
    remote: Remote,
    writer: Option<object_store::buffered::BufWriter>,
    path: ObjectPath,
}

impl ObjectWriter {
    fn io(&self, e: impl std::fmt::Display) -> std::io::Error {
        std::io::Error::other(format!(
            "cannot upload '{}': {e}",
            self.remote.url_of(&self.path)
        ))
    }

    /// Completes the upload: the object appears whole.
    pub fn finish(&mut self) -> std::io::Result<()> {
        let Some(mut w) = self.writer.take() else {
            return Ok(());
        };
        self.remote.wait(w.shutdown()).map_err(|e| self.io(e))
    }

    /// Gives the upload up: the object does not appear.
    pub fn abort(&mut self) {
        if let Some(mut w) = self.writer.take() {
            let _ = self.remote.wait(w.abort());
        }
    }
}

impl Write for ObjectWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(w) = self.writer.as_mut() else {
            return Err(std::io::Error::other("the upload is finished"));
        };
        let r = self.remote.handle.block_on(w.write_all(buf));
        r.map_err(|e| self.io(e))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // parts go up as they fill; the rest when the object is finished
        Ok(())
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        self.abort();
    }
}

/// The fixed part of a glob (`bucket/logs/2024-*/x.csv` -> `bucket/logs/`)
/// and the pattern, if any.
pub fn split_glob(path: &str) -> (&str, Option<&str>) {
    match path.find(['*', '?', '[']) {
        None => (path, None),
        Some(i) => {
            let cut = path[..i].rfind('/').map(|j| j + 1).unwrap_or(0);
            (&path[..cut], Some(path))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_globs() {
        assert!(is_url("s3://b/k"));
        assert!(is_url("gs://b/k"));
        assert!(!is_url("file:///tmp/x"));
        assert!(!is_url("/tmp/x"));
        assert!(!is_url("data/a://b"));
        assert_eq!(split_glob("s3://b/logs/2024-*/x.csv").0, "s3://b/logs/");
        assert_eq!(split_glob("s3://b/logs/").1, None);
    }

    #[test]
    fn store_keys_that_are_secrets_are_masked() {
        for k in [
            "secret_access_key",
            "session_token",
            "src.secret_access_key",
        ] {
            assert!(velo_config::secrets::is_secret_key(k), "{k}");
        }
    }
}
