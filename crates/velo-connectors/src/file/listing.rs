//! The files of a file source, wherever they are: a path, directory or glob
//! on the local file system, or a URL, prefix or glob in an object store
//! (one code path from here on: the source lists [`Entry`]s, opens each as
//! a byte stream or a Parquet range reader, and names it by its path or
//! URL). Hive-style directories (`year=2024/month=01/`) give each entry
//! partition values that the source adds as columns.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;

use super::config::list_files;
use super::store::{Object, Remote, split_glob};
use crate::{ConnectorContext, ConnectorError, Result};

/// One file to read.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its path or URL: its name in positions, `_file_name` and messages.
    pub name: String,
    /// Its size in bytes (objects: from the listing; local: at listing).
    pub size: u64,
    /// The object, when it is in an object store.
    object: Option<Object>,
    /// `key=value` directories between the listed root and the file.
    pub partitions: Vec<(String, String)>,
}

/// Where a source's files are.
#[derive(Debug, Clone)]
pub enum Files {
    /// The local file system: `path` is a file, directory or glob.
    Local {
        /// The path, absolute.
        path: String,
    },
    /// An object store.
    Remote {
        /// The store.
        remote: Remote,
        /// The path in the store before any glob character.
        prefix: ObjectPath,
        /// The glob over whole paths in the store, if any.
        pattern: Option<glob::Pattern>,
        /// The URL names one object (no glob, no trailing `/`).
        single: bool,
    },
}

/// How a listing went: what it found, or that the place does not exist.
pub enum Listed {
    /// Files found (possibly none).
    Found(Vec<Entry>),
    /// The file, directory or prefix does not exist.
    Missing,
}

impl Files {
    /// The files of `path` (a local path or glob, or an object store URL).
    /// Contacts nothing yet.
    pub fn of(path: &str, keys: &BTreeMap<String, String>, ctx: &ConnectorContext) -> Result<Self> {
        if !super::store::is_url(path) {
            return Ok(Files::Local {
                path: path.to_string(),
            });
        }
        let (fixed, glob) = split_glob(path);
        let (remote, prefix) = Remote::connect(fixed, keys, ctx)?;
        let pattern = match glob {
            None => None,
            Some(g) => {
                // the glob over the object's path: after `scheme://bucket/`
                let rel = g
                    .split_once("://")
                    .and_then(|(_, r)| r.split_once('/'))
                    .map(|(_, r)| r)
                    .unwrap_or_default();
                Some(glob::Pattern::new(rel).map_err(|e| {
                    ConnectorError::Other(format!(
                        "'{}' is not a valid glob: {e}",
                        velo_config::mask(path)
                    ))
                })?)
            }
        };
        Ok(Files::Remote {
            remote,
            prefix,
            pattern,
            single: glob.is_none() && !path.ends_with('/'),
        })
    }

    /// Whether the files are in an object store.
    pub fn is_remote(&self) -> bool {
        matches!(self, Files::Remote { .. })
    }

    /// The object store of remote files.
    pub fn remote(&self) -> Option<&Remote> {
        match self {
            Files::Remote { remote, .. } => Some(remote),
            Files::Local { .. } => None,
        }
    }

    /// The files, sorted by name. With `after` (an object store's
    /// incremental listing), only those sorting after that URL.
    pub fn list(&self, after: Option<&str>) -> Result<Listed> {
        match self {
            Files::Local { path } => match list_files(path) {
                Ok(files) => Ok(Listed::Found(
                    files
                        .into_iter()
                        .map(|f| {
                            let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
                            let name = f.to_string_lossy().into_owned();
                            let partitions = partitions_of(&name, path);
                            Entry {
                                name,
                                size,
                                object: None,
                                partitions,
                            }
                        })
                        .collect(),
                )),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Listed::Missing),
                Err(e) => Err(ConnectorError::io("cannot read", Path::new(path), e)),
            },
            Files::Remote {
                remote,
                prefix,
                pattern,
                single,
            } => {
                let root = remote.url_of(prefix);
                let entry = |o: Object| Entry {
                    name: o.url.clone(),
                    size: o.size,
                    partitions: partitions_of(&o.url, &root),
                    object: Some(o),
                };
                if *single {
                    // one object, or else a prefix written without its `/`
                    if let Some(size) = remote.size(prefix)? {
                        return Ok(Listed::Found(vec![entry(Object {
                            url: remote.url_of(prefix),
                            path: prefix.clone(),
                            size,
                        })]));
                    }
                }
                let after = after.map(|a| remote.path_of(a)).transpose()?;
                let found = remote.list(prefix, pattern.as_ref(), after.as_ref())?;
                if found.is_empty() && after.is_none() {
                    return Ok(Listed::Missing);
                }
                Ok(Listed::Found(found.into_iter().map(entry).collect()))
            }
        }
    }

    /// The file's bytes, streamed.
    pub fn open(&self, entry: &Entry) -> Result<Box<dyn Read + Send>> {
        match (self, &entry.object) {
            (Files::Remote { remote, .. }, Some(o)) => Ok(Box::new(remote.open(o)?)),
            _ => {
                let f = File::open(&entry.name)
                    .map_err(|e| ConnectorError::io("cannot open", Path::new(&entry.name), e))?;
                Ok(Box::new(f))
            }
        }
    }

    /// The file as Parquet's reader reads it (by ranges on object stores).
    pub fn chunks(&self, entry: &Entry) -> Result<Chunks> {
        match (self, &entry.object) {
            (Files::Remote { remote, .. }, Some(o)) => Ok(Chunks::Remote(remote.chunks(o))),
            _ => Ok(Chunks::Local(File::open(&entry.name).map_err(|e| {
                ConnectorError::io("cannot open", Path::new(&entry.name), e)
            })?)),
        }
    }

    /// Deletes the file or object `name` (a listed entry's name); one
    /// that is gone already is not an error.
    pub fn remove(&self, name: &str) -> Result<()> {
        match self {
            Files::Remote { remote, .. } => remote.delete(&remote.path_of(name)?),
            Files::Local { .. } => match std::fs::remove_file(name) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(ConnectorError::io("cannot delete", Path::new(name), e)),
            },
        }
    }

    /// Moves the file or object `name` into the folder `dir` (same store),
    /// keeping its file name; one that is gone already is not an error.
    pub fn move_into(&self, name: &str, dir: &str) -> Result<()> {
        let file = name.rsplit('/').next().unwrap_or(name);
        let to = format!("{}/{file}", dir.trim_end_matches('/'));
        match self {
            Files::Remote { remote, .. } => {
                let from = remote.path_of(name)?;
                if remote.size(&from)?.is_none() {
                    return Ok(());
                }
                remote.rename(&from, &remote.path_of(&to)?)
            }
            Files::Local { .. } => {
                if !Path::new(name).exists() {
                    return Ok(());
                }
                std::fs::create_dir_all(dir)
                    .map_err(|e| ConnectorError::io("cannot create", Path::new(dir), e))?;
                std::fs::rename(name, &to)
                    .map_err(|e| ConnectorError::io("cannot move", Path::new(name), e))
            }
        }
    }
}

/// A Parquet file to read: a local file or an object read by ranges.
pub enum Chunks {
    /// A local file.
    Local(File),
    /// An object.
    Remote(super::store::ObjectChunks),
}

impl parquet::file::reader::Length for Chunks {
    fn len(&self) -> u64 {
        match self {
            Chunks::Local(f) => f.len(),
            Chunks::Remote(o) => o.len(),
        }
    }
}

impl parquet::file::reader::ChunkReader for Chunks {
    type T = Box<dyn Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(match self {
            Chunks::Local(f) => Box::new(f.get_read(start)?),
            Chunks::Remote(o) => Box::new(o.get_read(start)?),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self {
            Chunks::Local(f) => f.get_bytes(start, length),
            Chunks::Remote(o) => o.get_bytes(start, length),
        }
    }
}

/// The `key=value` directories of `file` below the fixed part of `listed`
/// (the path or URL the source was given, up to its first glob character):
/// `s3://b/t/year=2024/month=01/x.parquet` under `s3://b/t/` gives
/// `[(year, 2024), (month, 01)]`. Values are percent-decoded as Hive and
/// Spark write them.
pub fn partitions_of(file: &str, listed: &str) -> Vec<(String, String)> {
    let (fixed, _) = split_glob(listed);
    let rest = file.strip_prefix(fixed).unwrap_or(file);
    let mut dirs: Vec<&str> = rest.split('/').collect();
    dirs.pop(); // the file's own name
    dirs.into_iter()
        .filter_map(|d| d.split_once('='))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| {
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned();
            (k.to_string(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hive_directories_are_partitions() {
        assert_eq!(
            partitions_of(
                "s3://b/t/year=2024/month=01/x.parquet",
                "s3://b/t/**/*.parquet"
            ),
            vec![
                ("year".to_string(), "2024".to_string()),
                ("month".to_string(), "01".to_string())
            ]
        );
        assert_eq!(
            partitions_of("/d/region=eu%2Fwest/a.csv", "/d/"),
            vec![("region".to_string(), "eu/west".to_string())]
        );
        // a file name with '=' is not a partition, nor is the fixed part
        assert!(partitions_of("/x=1/d/a=b.csv", "/x=1/d/*.csv").is_empty());
    }
}
