//! Table maintenance: snapshot expiry, for the sink's `expire_interval`
//! and for `velo iceberg expire`.
//!
//! Every commit reads and rewrites the table's metadata file, which lists
//! every snapshot; a streaming sink adds one per epoch, so without expiry
//! each commit gets slower than the last. Expiry drops snapshots older than
//! a maximum age beyond the latest few from the metadata (time travel
//! reaches back that far). The files only those snapshots referenced stay
//! on storage for now.

use std::time::Duration;

use iceberg::Catalog;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use velo_connectors::{ConnectorError, Result};

/// Expires the snapshots of `table` older than `max_age`, keeping the
/// latest `keep`; returns the table after it and how many were expired.
pub async fn expire(
    catalog: &dyn Catalog,
    table: &Table,
    max_age: Duration,
    keep: usize,
) -> Result<(Table, usize)> {
    let before = table.metadata().snapshots().len();
    let cutoff = chrono::Utc::now().timestamp_millis() - max_age.as_millis() as i64;
    let tx = Transaction::new(table);
    let action = tx
        .expire_snapshots()
        .expire_older_than_ms(cutoff)
        .retain_last(keep.max(1));
    let fail = |e: iceberg::Error| {
        ConnectorError::Other(format!(
            "cannot expire the snapshots of {}: {}",
            table.identifier(),
            velo_config::mask(&e.to_string())
        ))
    };
    let tx = action.apply(tx).map_err(fail)?;
    let after = tx.commit(catalog).await.map_err(fail)?;
    let expired = before.saturating_sub(after.metadata().snapshots().len());
    Ok((after, expired))
}

/// The table `table` (`namespace.table`) of the catalog the connector keys
/// `keys` name (`catalog_uri`, `warehouse`, store keys), and its catalog,
/// for the command line.
pub async fn open_at(
    table: &str,
    keys: &std::collections::BTreeMap<String, String>,
) -> Result<(std::sync::Arc<dyn Catalog>, Table)> {
    let mut props = keys.clone();
    props.insert("table".into(), table.to_string());
    let cfg = velo_config::ConnectorConfig {
        name: "table".into(),
        role: velo_config::Role::Sink,
        kind: "iceberg".into(),
        props,
        origin: velo_config::Origin::Named,
        base_dir: std::env::current_dir().unwrap_or_default(),
        job: String::new(),
    };
    let t = crate::catalog::TableRef::from_config(&cfg)?;
    let ctx = velo_connectors::ConnectorContext::default();
    let catalog = t.connect(&cfg.props, &ctx).await?;
    let loaded = catalog
        .load_table(&t.ident)
        .await
        .map_err(|e| t.error("load", &e))?;
    Ok((catalog, loaded))
}
