//! Which table, in which catalog: the keys every Iceberg connector shares,
//! and the catalog client they open.
//!
//! - A REST catalog (`catalog_uri = 'http://127.0.0.1:8181'`): Apache
//!   Polaris, Nessie, Lakekeeper, SeaweedFS, Tabular-style services;
//!   `credential` (OAuth client `id:secret`) or `token` authenticate,
//!   `warehouse` names the warehouse.
//! - A SQL catalog on SQLite (`catalog_uri = 'sqlite:lake/catalog.db'`):
//!   the JDBC catalog's tables (`iceberg_tables`), the same file pyiceberg's
//!   `SqlCatalog` and Spark's JDBC catalog use; `warehouse` is the folder or
//!   URL new tables go under.
//!
//! The table is `namespace.table` (`table` key, or the URI:
//! `iceberg://analytics.orders`; `iceberg://catalog.analytics.orders` also
//! names the catalog). Nothing is contacted until a connector opens it, and
//! never by `validate` or `explain`.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableIdent};
use iceberg_catalog_rest::RestCatalogBuilder;
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};
use velo_config::{ConfigError, ConnectorConfig};
use velo_connectors::{ConnectorContext, ConnectorError, Result};

use crate::storage::{Access, ObjectStorageFactory};

/// The kind of catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogKind {
    /// The Iceberg REST catalog protocol.
    Rest,
    /// The JDBC catalog's tables in a SQLite file.
    Sql,
}

/// A table of a catalog, as configured.
#[derive(Clone)]
pub struct TableRef {
    /// The catalog's kind.
    pub kind: CatalogKind,
    /// The REST URL, or the SQLite file's sqlx URL.
    pub uri: String,
    /// A SQL catalog's SQLite file.
    pub(crate) sqlite_file: Option<std::path::PathBuf>,
    /// The catalog's name.
    pub catalog_name: String,
    /// `warehouse`.
    pub warehouse: Option<String>,
    /// `credential` and `token` (never shown).
    auth: Vec<(String, String)>,
    /// The table.
    pub ident: TableIdent,
    /// How the table is named in messages: `catalog.namespace.table`.
    pub shown: String,
}

impl std::fmt::Debug for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl TableRef {
    /// Reads the keys; checks them without contacting anything.
    pub fn from_config(cfg: &ConnectorConfig) -> std::result::Result<Self, ConfigError> {
        let (named_catalog, ident) = table_name(cfg)?;
        let raw_uri = cfg
            .require(
                "catalog_uri",
                "the catalog: a REST catalog's URL such as http://127.0.0.1:8181, or sqlite:lake/catalog.db for a SQL catalog",
            )?
            .trim()
            .to_string();
        let lower = raw_uri.to_ascii_lowercase();
        let kind = match cfg
            .get("catalog_type")
            .map(|t| t.trim().to_ascii_lowercase())
        {
            Some(t) if t == "rest" => CatalogKind::Rest,
            Some(t) if t == "sql" || t == "jdbc" => CatalogKind::Sql,
            Some(t) => return Err(cfg.invalid("catalog_type", &t, "rest or sql")),
            None if lower.starts_with("sqlite:") => CatalogKind::Sql,
            None if lower.starts_with("http://") || lower.starts_with("https://") => {
                CatalogKind::Rest
            }
            None => {
                return Err(cfg.invalid(
                    "catalog_uri",
                    &velo_config::mask(&raw_uri),
                    "a REST catalog's http(s):// URL or a sqlite: file (other SQL databases are not supported yet)",
                ));
            }
        };
        let mut sqlite_file = None;
        let uri = match kind {
            CatalogKind::Rest => {
                if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                    return Err(cfg.invalid(
                        "catalog_uri",
                        &velo_config::mask(&raw_uri),
                        "a REST catalog's http(s):// URL",
                    ));
                }
                raw_uri.trim_end_matches('/').to_string()
            }
            CatalogKind::Sql => {
                let Some(rest) = raw_uri.get(7..).filter(|_| lower.starts_with("sqlite:")) else {
                    return Err(cfg.invalid(
                        "catalog_uri",
                        &velo_config::mask(&raw_uri),
                        "sqlite:PATH, the SQLite file of the SQL catalog (other databases are not supported yet)",
                    ));
                };
                let path = rest.strip_prefix("//").unwrap_or(rest);
                let path = path.split('?').next().unwrap_or_default();
                if path.is_empty() || path == ":memory:" {
                    return Err(cfg.invalid(
                        "catalog_uri",
                        &raw_uri,
                        "a SQLite file (sqlite:lake/catalog.db): an in-memory catalog would lose the table when the job ends",
                    ));
                }
                let file = absolute(&cfg.path(path));
                let uri = format!("sqlite://{}?mode=rwc", file.display());
                sqlite_file = Some(file);
                uri
            }
        };
        let warehouse = cfg.get("warehouse").map(|w| w.trim().to_string());
        let warehouse = match (kind, warehouse) {
            (CatalogKind::Sql, None) => {
                return Err(cfg.invalid(
                    "warehouse",
                    "",
                    "the folder or URL new tables go under (a SQL catalog needs one), e.g. 'lake/warehouse' or 's3://bucket/warehouse'",
                ));
            }
            (CatalogKind::Sql, Some(w)) if !velo_connectors::file::store::is_url(&w) => {
                let local = w.strip_prefix("file://").unwrap_or(&w);
                Some(absolute(&cfg.path(local)).to_string_lossy().into_owned())
            }
            (_, w) => w,
        };
        let catalog_name = cfg
            .get("catalog_name")
            .map(|n| n.trim().to_string())
            .or(named_catalog)
            .unwrap_or_else(|| "default".to_string());
        let mut auth = Vec::new();
        for (key, prop) in [("credential", "credential"), ("token", "token")] {
            if let Some(v) = cfg.get(key) {
                if kind == CatalogKind::Sql {
                    return Err(cfg.invalid(
                        key,
                        "***",
                        "nothing for a SQL catalog (only REST catalogs authenticate)",
                    ));
                }
                auth.push((prop.to_string(), v.to_string()));
            }
        }
        let shown = format!(
            "{catalog_name}.{}.{}",
            ident.namespace().join("."),
            ident.name()
        );
        Ok(Self {
            kind,
            uri,
            sqlite_file,
            catalog_name,
            warehouse,
            auth,
            ident,
            shown,
        })
    }

    /// The catalog's client. Called on the runtime; contacts the catalog
    /// (a REST catalog's `/v1/config`; a SQL catalog's file, created with
    /// its tables when missing).
    pub async fn connect(
        &self,
        keys: &std::collections::BTreeMap<String, String>,
        ctx: &ConnectorContext,
    ) -> Result<Arc<dyn Catalog>> {
        let factory = Arc::new(ObjectStorageFactory::new(Access::new(keys, ctx)));
        let mut props: HashMap<String, String> = self.auth.iter().cloned().collect();
        props.insert("uri".into(), self.uri.clone());
        if let Some(w) = &self.warehouse {
            props.insert("warehouse".into(), w.clone());
        }
        let catalog: Arc<dyn Catalog> = match self.kind {
            CatalogKind::Rest => Arc::new(
                RestCatalogBuilder::default()
                    .with_storage_factory(factory)
                    .load(&self.catalog_name, props)
                    .await
                    .map_err(|e| self.error("connect to the REST catalog of", &e))?,
            ),
            CatalogKind::Sql => {
                if let Some(dir) = self.sqlite_file.as_deref().and_then(|f| f.parent()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        ConnectorError::Other(format!(
                            "cannot create the folder of the SQL catalog {}: {e}",
                            dir.display()
                        ))
                    })?;
                }
                Arc::new(
                    SqlCatalogBuilder::default()
                        .sql_bind_style(SqlBindStyle::QMark)
                        .with_storage_factory(factory)
                        .load(&self.catalog_name, props)
                        .await
                        .map_err(|e| self.error("open the SQL catalog of", &e))?,
                )
            }
        };
        Ok(catalog)
    }

    /// An error about this table, with the catalog's message (masked).
    pub fn error(&self, what: &str, e: &dyn std::fmt::Display) -> ConnectorError {
        ConnectorError::Other(format!(
            "cannot {what} the Iceberg table {}: {}",
            self.shown,
            velo_config::mask(&e.to_string())
        ))
    }

    /// The value of the authentication key `key` (`credential`, `token`).
    pub(crate) fn auth_value(&self, key: &str) -> Option<&str> {
        self.auth
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The table's namespace.
    pub fn namespace(&self) -> &NamespaceIdent {
        self.ident.namespace()
    }
}

/// `p` as an absolute path: the catalog stores the locations it is given,
/// and other readers of the catalog run in other directories.
fn absolute(p: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The `table` key (an `iceberg://` URI puts its location in `path`):
/// `namespace.table`, `catalog.namespace.table`, or the same with `/`.
fn table_name(
    cfg: &ConnectorConfig,
) -> std::result::Result<(Option<String>, TableIdent), ConfigError> {
    let raw = cfg
        .get("table")
        .or_else(|| cfg.get("path"))
        .map(|t| t.trim().trim_matches('/').to_string())
        .ok_or_else(|| {
            cfg.invalid(
                "table",
                "",
                "the table as namespace.table, e.g. 'analytics.orders' (or an iceberg://analytics.orders URI)",
            )
        })?;
    let parts: Vec<&str> = raw
        .split(['.', '/'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let bad = || {
        cfg.invalid(
            "table",
            &raw,
            "namespace.table (or catalog.namespace.table), e.g. analytics.orders",
        )
    };
    if parts.len() < 2
        || parts.iter().any(|p| {
            !p.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        })
    {
        return Err(bad());
    }
    let (catalog, rest) = if parts.len() >= 3 {
        (Some(parts[0].to_string()), &parts[1..])
    } else {
        (None, &parts[..])
    };
    let (name, ns) = rest.split_last().ok_or_else(bad)?;
    let ns = NamespaceIdent::from_strs(ns.iter().copied()).map_err(|_| bad())?;
    Ok((catalog, TableIdent::new(ns, name.to_string())))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;

    fn cfg(keys: &[(&str, &str)]) -> ConnectorConfig {
        ConnectorConfig {
            name: "lake".into(),
            role: velo_config::Role::Sink,
            kind: "iceberg".into(),
            props: BTreeMap::from_iter(keys.iter().map(|(k, v)| (k.to_string(), v.to_string()))),
            origin: velo_config::Origin::Named,
            base_dir: PathBuf::from("/apps"),
            job: "job".into(),
        }
    }

    #[test]
    fn names_kinds_and_paths() {
        let t = TableRef::from_config(&cfg(&[
            ("path", "cat.analytics.orders"),
            ("catalog_uri", "sqlite:lake/c.db"),
            ("warehouse", "lake/wh"),
        ]))
        .unwrap();
        assert_eq!(t.kind, CatalogKind::Sql);
        assert_eq!(t.uri, "sqlite:///apps/lake/c.db?mode=rwc");
        assert_eq!(t.warehouse.as_deref(), Some("/apps/lake/wh"));
        assert_eq!(t.shown, "cat.analytics.orders");
        let t = TableRef::from_config(&cfg(&[
            ("table", "a.b"),
            ("catalog_uri", "http://127.0.0.1:8181/"),
            ("token", "sekret"),
        ]))
        .unwrap();
        assert_eq!(t.kind, CatalogKind::Rest);
        assert_eq!(t.uri, "http://127.0.0.1:8181");
        assert_eq!(t.shown, "default.a.b");
        assert!(!format!("{t:?}").contains("sekret"));
    }

    #[test]
    fn bad_keys_say_what_to_write() {
        for (keys, says) in [
            (
                vec![("table", "orders"), ("catalog_uri", "http://x")],
                "namespace.table",
            ),
            (vec![("table", "a.b")], "catalog_uri"),
            (
                vec![("table", "a.b"), ("catalog_uri", "thrift://hive:9083")],
                "REST",
            ),
            (
                vec![("table", "a.b"), ("catalog_uri", "sqlite:c.db")],
                "warehouse",
            ),
            (
                vec![
                    ("table", "a.b"),
                    ("catalog_uri", "sqlite::memory:"),
                    ("warehouse", "w"),
                ],
                "in-memory",
            ),
            (
                vec![("table", "a;b.c"), ("catalog_uri", "http://x")],
                "namespace.table",
            ),
        ] {
            let e = TableRef::from_config(&cfg(&keys)).unwrap_err().to_string();
            assert!(e.contains(says), "{keys:?}: {e}");
        }
    }
}
