//! Commits of snapshots the sink builds itself (overwrite for upserts,
//! replace for compaction), through the catalog's own commit protocol.
//!
//! iceberg-rust 0.10's transactions produce only append snapshots (and
//! expiry), and the catalog commit they build cannot be built outside the
//! crate. The two catalog protocols are public and small, so this module
//! speaks them directly with iceberg's own update and requirement types:
//! - a REST catalog: `POST /v1/{prefix}/namespaces/{ns}/tables/{table}`
//!   with the requirements and updates (the catalog checks and applies
//!   them atomically; 409 when another writer committed first);
//! - a SQL catalog: the new metadata file written next to the table's,
//!   then the table's row updated only if it still points at the metadata
//!   the updates were built on (a compare-and-swap, as the JDBC catalog
//!   does).
//!
//! Either way the table after the commit is loaded from the catalog.

use std::str::FromStr;

use iceberg::spec::TableMetadataBuilder;
use iceberg::table::Table;
use iceberg::{Catalog, MetadataLocation, TableRequirement, TableUpdate};
use velo_connectors::ConnectorError;

use crate::catalog::{CatalogKind, TableRef};

/// Why a commit did not happen.
#[derive(Debug)]
pub enum CommitError {
    /// The table changed since the updates were built (another writer
    /// committed first): build them again on the table as it is.
    Conflict(String),
    /// Anything else.
    Failed(ConnectorError),
}

impl From<CommitError> for ConnectorError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Conflict(m) => ConnectorError::Other(m),
            CommitError::Failed(e) => e,
        }
    }
}

/// Commits `updates` to the table `t` of `catalog` if `requirements` hold;
/// returns the table after the commit.
pub async fn commit(
    t: &TableRef,
    catalog: &dyn Catalog,
    updates: Vec<TableUpdate>,
    requirements: Vec<TableRequirement>,
) -> std::result::Result<Table, CommitError> {
    match t.kind {
        CatalogKind::Sql => commit_sql(t, catalog, updates, requirements).await?,
        CatalogKind::Rest => commit_rest(t, updates, requirements).await?,
    }
    catalog
        .load_table(&t.ident)
        .await
        .map_err(|e| CommitError::Failed(t.error("load", &e)))
}

fn conflict(t: &TableRef, why: &dyn std::fmt::Display) -> CommitError {
    CommitError::Conflict(format!(
        "the Iceberg table {} changed while this commit was prepared ({}); another writer committed first",
        t.shown,
        velo_config::mask(&why.to_string())
    ))
}

/// A SQL catalog: new metadata, then a compare-and-swap of the table's row.
async fn commit_sql(
    t: &TableRef,
    catalog: &dyn Catalog,
    updates: Vec<TableUpdate>,
    requirements: Vec<TableRequirement>,
) -> std::result::Result<(), CommitError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| CommitError::Failed(t.error(what, e));
    // phase 1: the table as the catalog has it now, and the requirements
    let current = catalog
        .load_table(&t.ident)
        .await
        .map_err(|e| failed("load", &e))?;
    for r in &requirements {
        r.check(Some(current.metadata()))
            .map_err(|e| conflict(t, &e))?;
    }
    // phase 2: the new metadata, written beside the current one
    let location = current
        .metadata_location_result()
        .map_err(|e| failed("locate the metadata of", &e))?
        .to_string();
    let mut builder: TableMetadataBuilder = current
        .metadata()
        .clone()
        .into_builder(Some(location.clone()));
    for u in updates {
        builder = u.apply(builder).map_err(|e| failed("update", &e))?;
    }
    let metadata = builder.build().map_err(|e| failed("update", &e))?.metadata;
    let next = MetadataLocation::from_str(&location)
        .map_err(|e| failed("locate the metadata of", &e))?
        .with_next_version()
        .with_new_metadata(&metadata);
    metadata
        .write_to(current.file_io(), &next)
        .await
        .map_err(|e| failed("write the metadata of", &e))?;
    // phase 3: the catalog's row moved to it only if nobody moved it first
    let file = t
        .sqlite_file
        .as_deref()
        .ok_or_else(|| CommitError::Failed(ConnectorError::Internal("no SQLite file".into())))?;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .busy_timeout(std::time::Duration::from_secs(30));
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(|e| failed("open the SQL catalog of", &e))?;
    let next = next.to_string();
    let done = sqlx::query(
        "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? \
         WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? AND metadata_location = ?",
    )
    .bind(&next)
    .bind(&location)
    .bind(&t.catalog_name)
    .bind(t.ident.namespace().join("."))
    .bind(t.ident.name())
    .bind(&location)
    .execute(&pool)
    .await
    .map_err(|e| failed("commit to", &e))?;
    pool.close().await;
    if done.rows_affected() == 0 {
        // the metadata file just written is referenced by nothing
        let _ = current.file_io().delete(&next).await;
        return Err(conflict(t, &"its catalog row moved"));
    }
    Ok(())
}

/// A REST catalog: the commit endpoint, authenticated as the catalog
/// client is.
async fn commit_rest(
    t: &TableRef,
    updates: Vec<TableUpdate>,
    requirements: Vec<TableRequirement>,
) -> std::result::Result<(), CommitError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| CommitError::Failed(t.error(what, e));
    let client = reqwest::Client::new();
    // phase 1: who we are and where the catalog puts its tables
    let token = rest_token(t, &client).await?;
    let mut config = url::Url::parse(&format!("{}/v1/config", t.uri))
        .map_err(|e| failed("reach the catalog of", &e))?;
    if let Some(w) = &t.warehouse {
        config.query_pairs_mut().append_pair("warehouse", w);
    }
    let config: serde_json::Value = send(t, authorized(client.get(config), &token))
        .await?
        .json()
        .await
        .map_err(|e| failed("read the catalog's configuration for", &e))?;
    let prefix = config["overrides"]["prefix"]
        .as_str()
        .or_else(|| config["defaults"]["prefix"].as_str());
    // phase 2: the commit
    let mut url = url::Url::parse(&t.uri).map_err(|e| failed("reach the catalog of", &e))?;
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|_| failed("reach the catalog of", &"a URL without a path"))?;
        path.pop_if_empty().push("v1");
        if let Some(p) = prefix {
            path.extend(p.split('/'));
        }
        path.push("namespaces")
            .push(&t.ident.namespace().join("\u{1f}"))
            .push("tables")
            .push(t.ident.name());
    }
    let body = serde_json::json!({
        "identifier": {"namespace": t.ident.namespace().as_ref(), "name": t.ident.name()},
        "requirements": requirements,
        "updates": updates,
    });
    let response = authorized(client.post(url), &token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| failed("commit to", &e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    if status.as_u16() == 409 {
        return Err(conflict(t, &text));
    }
    Err(failed("commit to", &format!("HTTP {status}: {text}")))
}

fn authorized(r: reqwest::RequestBuilder, token: &Option<String>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => r.bearer_auth(t),
        None => r,
    }
}

async fn send(
    t: &TableRef,
    r: reqwest::RequestBuilder,
) -> std::result::Result<reqwest::Response, CommitError> {
    let response = r
        .send()
        .await
        .map_err(|e| CommitError::Failed(t.error("reach the catalog of", &e)))?;
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        return Err(CommitError::Failed(
            t.error("reach the catalog of", &format!("HTTP {status}: {text}")),
        ));
    }
    Ok(response)
}

/// The bearer token: `token`, or one the catalog issues for `credential`
/// (OAuth2 client credentials, as the catalog client asks for it).
async fn rest_token(
    t: &TableRef,
    client: &reqwest::Client,
) -> std::result::Result<Option<String>, CommitError> {
    if let Some(token) = t.auth_value("token") {
        return Ok(Some(token.to_string()));
    }
    let Some(credential) = t.auth_value("credential") else {
        return Ok(None);
    };
    let (id, secret) = match credential.split_once(':') {
        Some((id, secret)) => (Some(id), secret),
        None => (None, credential),
    };
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_secret", secret),
        ("scope", "catalog"),
    ];
    if let Some(id) = id {
        form.push(("client_id", id));
    }
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let response = send(
        t,
        client
            .post(format!("{}/v1/oauth/tokens", t.uri))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body),
    )
    .await?;
    let v: serde_json::Value = response
        .json()
        .await
        .map_err(|e| CommitError::Failed(t.error("authenticate to the catalog of", &e)))?;
    v["access_token"]
        .as_str()
        .map(|s| Some(s.to_string()))
        .ok_or_else(|| {
            CommitError::Failed(t.error(
                "authenticate to the catalog of",
                &"the token response has no access_token",
            ))
        })
}
