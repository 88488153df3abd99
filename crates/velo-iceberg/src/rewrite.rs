//! Snapshots that replace data files: an `overwrite` (upserts: the files
//! holding changed keys replaced by rewritten ones plus the new rows) or a
//! `replace` (compaction: the same rows in fewer files).
//!
//! The snapshot is built as Iceberg's spec lays it out, with iceberg's own
//! manifest and manifest-list writers: the manifests of the current
//! snapshot that list none of the removed files are kept as they are; each
//! one that does is rewritten with those files marked `DELETED` and its
//! other files `EXISTING` (their sequence numbers kept, so delete files
//! of other engines still apply to them as before); one new manifest lists
//! the added files. The result is the metadata updates and the
//! requirements (the table's uuid and the snapshot it was built on) that
//! [`crate::commit`] sends to the catalog.

use std::collections::{HashMap, HashSet};

use iceberg::spec::{
    DataFile, FormatVersion, MAIN_BRANCH, ManifestContentType, ManifestFile, ManifestListWriter,
    ManifestWriter, ManifestWriterBuilder, Operation, PartitionSpec, Snapshot, SnapshotReference,
    SnapshotRetention, SnapshotSummaryCollector, Summary,
};
use iceberg::table::Table;
use iceberg::{TableRequirement, TableUpdate};
use velo_connectors::{ConnectorError, Result};

/// What one snapshot changes.
#[derive(Debug)]
pub struct Rewrite {
    /// `Overwrite` (upserts) or `Replace` (compaction).
    pub operation: Operation,
    /// The data files it removes, by path (each must be in the table).
    pub removed: HashSet<String>,
    /// The data files it adds (written with the table's default spec).
    pub added: Vec<DataFile>,
    /// Extra summary entries (`velo.job`, `velo.epoch`).
    pub summary: HashMap<String, String>,
    /// Table properties set in the same commit.
    pub properties: HashMap<String, String>,
}

/// The updates and requirements of `rewrite` on `table` as it is; the
/// manifests and the manifest list are written (they are referenced by
/// nothing until the commit).
pub async fn build(
    table: &Table,
    rewrite: Rewrite,
) -> Result<(Vec<TableUpdate>, Vec<TableRequirement>)> {
    let meta = table.metadata();
    if meta.format_version() != FormatVersion::V2 {
        return Err(ConnectorError::Other(format!(
            "the Iceberg table {} is format version {}; upserts and compaction write format version 2 tables only",
            table.identifier(),
            meta.format_version()
        )));
    }
    let mut p = Producer::new(table);
    let mut manifests = p.carry_manifests(&rewrite.removed).await?;
    manifests.extend(p.added_manifest(rewrite.added).await?);
    let list = p.manifest_list(manifests).await?;
    let snapshot = p.snapshot(list, rewrite.operation, rewrite.summary);
    Ok(p.updates(snapshot, rewrite.properties))
}

/// The snapshot being built: its identity, and its counts as the
/// manifests are written.
struct Producer<'a> {
    table: &'a Table,
    snapshot_id: i64,
    sequence: i64,
    summary: SnapshotSummaryCollector,
    manifests_written: usize,
}

impl<'a> Producer<'a> {
    fn new(table: &'a Table) -> Self {
        Self {
            table,
            snapshot_id: new_snapshot_id(table),
            sequence: table.metadata().next_sequence_number(),
            summary: SnapshotSummaryCollector::default(),
            manifests_written: 0,
        }
    }

    fn fail(&self, what: &str, e: &dyn std::fmt::Display) -> ConnectorError {
        ConnectorError::Other(format!(
            "cannot {what} of the Iceberg table {}: {}",
            self.table.identifier(),
            velo_config::mask(&e.to_string())
        ))
    }

    /// A writer of the snapshot's next data manifest, for files of `spec`.
    fn next_manifest(&mut self, spec: &PartitionSpec) -> Result<ManifestWriter> {
        let path = format!(
            "{}/metadata/velo-{:x}-m{}.avro",
            self.table.metadata().location().trim_end_matches('/'),
            self.snapshot_id,
            self.manifests_written
        );
        self.manifests_written += 1;
        let out = self
            .table
            .file_io()
            .new_output(path)
            .map_err(|e| self.fail("write a manifest", &e))?;
        Ok(ManifestWriterBuilder::new(
            out,
            Some(self.snapshot_id),
            self.table.metadata().current_schema().clone(),
            spec.clone(),
        )
        .build_v2_data())
    }

    /// Phase 1: the current snapshot's manifests, each kept as it is or,
    /// where it lists a file of `removed`, rewritten with those files
    /// `DELETED` and the others `EXISTING`. Every file of `removed` must
    /// be live in the table.
    async fn carry_manifests(&mut self, removed: &HashSet<String>) -> Result<Vec<ManifestFile>> {
        let meta = self.table.metadata();
        let Some(current) = meta.current_snapshot() else {
            return self.check_found(removed, 0).map(|_| Vec::new());
        };
        let list = self
            .table
            .manifest_list_reader(current)
            .load()
            .await
            .map_err(|e| self.fail("read the manifest list", &e))?;
        let (mut manifests, mut found) = (Vec::new(), 0usize);
        for m in list.consume_entries() {
            if m.content != ManifestContentType::Data || removed.is_empty() {
                manifests.push(m);
                continue;
            }
            let manifest = m
                .load_manifest(self.table.file_io())
                .await
                .map_err(|e| self.fail("read a manifest", &e))?;
            let hits = manifest
                .entries()
                .iter()
                .filter(|e| e.is_alive() && removed.contains(e.file_path()))
                .count();
            if hits == 0 {
                manifests.push(m);
                continue;
            }
            found += hits;
            let spec = meta
                .partition_spec_by_id(m.partition_spec_id)
                .ok_or_else(|| {
                    self.fail(
                        "rewrite a manifest",
                        &format!("partition spec {} is gone", m.partition_spec_id),
                    )
                })?;
            let schema = meta.current_schema().clone();
            let mut writer = self.next_manifest(spec)?;
            for e in manifest.entries().iter().filter(|e| e.is_alive()) {
                let file = e.data_file().clone();
                let seq = e.sequence_number().unwrap_or(m.sequence_number);
                let file_seq = e.file_sequence_number.or(Some(m.min_sequence_number));
                if removed.contains(e.file_path()) {
                    self.summary
                        .remove_file(&file, schema.clone(), spec.clone());
                    writer.add_delete_file(file, seq, file_seq)
                } else {
                    let added_by = e.snapshot_id().unwrap_or(m.added_snapshot_id);
                    writer.add_existing_file(file, added_by, seq, file_seq)
                }
                .map_err(|e| self.fail("rewrite a manifest", &e))?;
            }
            manifests.push(
                writer
                    .write_manifest_file()
                    .await
                    .map_err(|e| self.fail("write a manifest", &e))?,
            );
        }
        self.check_found(removed, found)?;
        Ok(manifests)
    }

    fn check_found(&self, removed: &HashSet<String>, found: usize) -> Result<()> {
        if found == removed.len() {
            return Ok(());
        }
        Err(ConnectorError::Other(format!(
            "the Iceberg table {} no longer holds {} of the data files this commit replaces; another writer changed it",
            self.table.identifier(),
            removed.len() - found
        )))
    }

    /// Phase 2: the manifest of the added files (none without files).
    async fn added_manifest(&mut self, added: Vec<DataFile>) -> Result<Option<ManifestFile>> {
        if added.is_empty() {
            return Ok(None);
        }
        let meta = self.table.metadata();
        let spec = meta.default_partition_spec().clone();
        let schema = meta.current_schema().clone();
        let mut writer = self.next_manifest(&spec)?;
        for f in added {
            self.summary.add_file(&f, schema.clone(), spec.clone());
            writer
                .add_file(f, self.sequence)
                .map_err(|e| self.fail("write a manifest", &e))?;
        }
        writer
            .write_manifest_file()
            .await
            .map(Some)
            .map_err(|e| self.fail("write a manifest", &e))
    }

    /// Phase 3: the manifest list; returns its path.
    async fn manifest_list(&self, manifests: Vec<ManifestFile>) -> Result<String> {
        let meta = self.table.metadata();
        let path = format!(
            "{}/metadata/snap-{}-1-velo.avro",
            meta.location().trim_end_matches('/'),
            self.snapshot_id
        );
        let fail = |e: iceberg::Error| self.fail("write the manifest list", &e);
        let out = self
            .table
            .file_io()
            .new_output(&path)
            .map_err(fail)?
            .writer()
            .await
            .map_err(fail)?;
        let mut list = ManifestListWriter::v2(
            out,
            self.snapshot_id,
            meta.current_snapshot_id(),
            self.sequence,
        );
        list.add_manifests(manifests.into_iter()).map_err(fail)?;
        list.close().await.map_err(fail)?;
        Ok(path)
    }

    /// Phase 4: the snapshot, its summary with the counts and totals.
    fn snapshot(
        &self,
        manifest_list: String,
        operation: Operation,
        mut properties: HashMap<String, String>,
    ) -> Snapshot {
        let meta = self.table.metadata();
        let changes = self.summary.build();
        let previous = meta.current_snapshot().map(|s| s.summary());
        properties.extend(totals(&changes, previous));
        properties.extend(changes);
        Snapshot::builder()
            .with_manifest_list(manifest_list)
            .with_snapshot_id(self.snapshot_id)
            .with_parent_snapshot_id(meta.current_snapshot_id())
            .with_sequence_number(self.sequence)
            .with_summary(Summary {
                operation,
                additional_properties: properties,
            })
            .with_schema_id(meta.current_schema_id())
            .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
            .build()
    }

    /// Phase 5: the updates (the snapshot as the main branch, the table
    /// properties) and what they assume (the same table, at the snapshot
    /// they were built on).
    fn updates(
        &self,
        snapshot: Snapshot,
        properties: HashMap<String, String>,
    ) -> (Vec<TableUpdate>, Vec<TableRequirement>) {
        let meta = self.table.metadata();
        let mut updates = vec![
            TableUpdate::AddSnapshot { snapshot },
            TableUpdate::SetSnapshotRef {
                ref_name: MAIN_BRANCH.to_string(),
                reference: SnapshotReference::new(
                    self.snapshot_id,
                    SnapshotRetention::branch(None, None, None),
                ),
            },
        ];
        if !properties.is_empty() {
            updates.push(TableUpdate::SetProperties {
                updates: properties,
            });
        }
        let requirements = vec![
            TableRequirement::UuidMatch { uuid: meta.uuid() },
            TableRequirement::RefSnapshotIdMatch {
                r#ref: MAIN_BRANCH.to_string(),
                snapshot_id: meta.current_snapshot_id(),
            },
        ];
        (updates, requirements)
    }
}

/// The table's totals after a snapshot whose own counts are `changes`.
fn totals(
    changes: &HashMap<String, String>,
    previous: Option<&Summary>,
) -> HashMap<String, String> {
    let num = |m: &HashMap<String, String>, k: &str| {
        m.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0)
    };
    let empty = HashMap::new();
    let before = previous.map_or(&empty, |s| &s.additional_properties);
    let mut out = HashMap::new();
    for (total, added, removed) in [
        ("total-records", "added-records", "deleted-records"),
        ("total-data-files", "added-data-files", "deleted-data-files"),
        ("total-files-size", "added-files-size", "removed-files-size"),
    ] {
        let v = num(before, total) + num(changes, added) - num(changes, removed);
        out.insert(total.to_string(), v.max(0).to_string());
    }
    for kept in [
        "total-delete-files",
        "total-position-deletes",
        "total-equality-deletes",
    ] {
        out.insert(kept.to_string(), num(before, kept).to_string());
    }
    out
}

/// A snapshot id no snapshot of `table` has (positive, random).
fn new_snapshot_id(table: &Table) -> i64 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        let id = (h.finish() >> 1) as i64;
        if id != 0 && table.metadata().snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_follow_the_changes() {
        let changes = HashMap::from([
            ("added-records".to_string(), "10".to_string()),
            ("deleted-records".to_string(), "4".to_string()),
            ("added-data-files".to_string(), "1".to_string()),
            ("deleted-data-files".to_string(), "2".to_string()),
        ]);
        let before = Summary {
            operation: Operation::Append,
            additional_properties: HashMap::from([
                ("total-records".to_string(), "100".to_string()),
                ("total-data-files".to_string(), "5".to_string()),
                ("total-delete-files".to_string(), "1".to_string()),
            ]),
        };
        let t = totals(&changes, Some(&before));
        assert_eq!(t["total-records"], "106");
        assert_eq!(t["total-data-files"], "4");
        assert_eq!(t["total-delete-files"], "1");
        assert_eq!(totals(&changes, None)["total-records"], "6");
    }
}
