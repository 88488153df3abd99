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
    let shown = table.identifier().to_string();
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        ConnectorError::Other(format!(
            "cannot {what} of the Iceberg table {shown}: {}",
            velo_config::mask(&e.to_string())
        ))
    };
    if meta.format_version() != FormatVersion::V2 {
        return Err(ConnectorError::Other(format!(
            "the Iceberg table {shown} is format version {}; upserts and compaction write format version 2 tables only",
            meta.format_version()
        )));
    }
    // phase 1: identities of the new snapshot and its files
    let snapshot_id = new_snapshot_id(table);
    let sequence = meta.next_sequence_number();
    let parent = meta.current_snapshot_id();
    let schema = meta.current_schema().clone();
    let mut summary = SnapshotSummaryCollector::default();
    let mut names = (0..).map(|i| {
        format!(
            "{}/metadata/velo-{snapshot_id:x}-m{i}.avro",
            meta.location().trim_end_matches('/')
        )
    });
    // phase 2: the current manifests, rewritten where they list a removed file
    let mut manifests: Vec<ManifestFile> = Vec::new();
    let mut found = 0usize;
    if let Some(current) = meta.current_snapshot() {
        let list = table
            .manifest_list_reader(current)
            .load()
            .await
            .map_err(|e| fail("read the manifest list", &e))?;
        for m in list.consume_entries() {
            if m.content != ManifestContentType::Data || rewrite.removed.is_empty() {
                manifests.push(m);
                continue;
            }
            let manifest = m
                .load_manifest(table.file_io())
                .await
                .map_err(|e| fail("read a manifest", &e))?;
            let hits = manifest
                .entries()
                .iter()
                .filter(|e| e.is_alive() && rewrite.removed.contains(e.file_path()))
                .count();
            if hits == 0 {
                manifests.push(m);
                continue;
            }
            found += hits;
            let spec = meta
                .partition_spec_by_id(m.partition_spec_id)
                .ok_or_else(|| {
                    fail(
                        "rewrite a manifest",
                        &format!("partition spec {} is gone", m.partition_spec_id),
                    )
                })?;
            let mut writer = manifest_writer(
                table,
                names.next().unwrap_or_default(),
                snapshot_id,
                spec.as_ref(),
            )
            .map_err(|e| fail("write a manifest", &e))?;
            for e in manifest.entries().iter().filter(|e| e.is_alive()) {
                let file = e.data_file().clone();
                let seq = e.sequence_number().unwrap_or(m.sequence_number);
                let file_seq = e.file_sequence_number.or(Some(m.min_sequence_number));
                if rewrite.removed.contains(e.file_path()) {
                    summary.remove_file(&file, schema.clone(), spec.clone());
                    writer.add_delete_file(file, seq, file_seq)
                } else {
                    let added_by = e.snapshot_id().unwrap_or(m.added_snapshot_id);
                    writer.add_existing_file(file, added_by, seq, file_seq)
                }
                .map_err(|e| fail("rewrite a manifest", &e))?;
            }
            manifests.push(
                writer
                    .write_manifest_file()
                    .await
                    .map_err(|e| fail("write a manifest", &e))?,
            );
        }
    }
    if found != rewrite.removed.len() {
        return Err(ConnectorError::Other(format!(
            "the Iceberg table {shown} no longer holds {} of the data files this commit replaces; another writer changed it",
            rewrite.removed.len() - found
        )));
    }
    // phase 3: the manifest of the added files
    let spec = meta.default_partition_spec().clone();
    if !rewrite.added.is_empty() {
        let mut writer = manifest_writer(
            table,
            names.next().unwrap_or_default(),
            snapshot_id,
            spec.as_ref(),
        )
        .map_err(|e| fail("write a manifest", &e))?;
        for f in rewrite.added {
            summary.add_file(&f, schema.clone(), spec.clone());
            writer
                .add_file(f, sequence)
                .map_err(|e| fail("write a manifest", &e))?;
        }
        manifests.push(
            writer
                .write_manifest_file()
                .await
                .map_err(|e| fail("write a manifest", &e))?,
        );
    }
    // phase 4: the manifest list and the snapshot
    let list_path = format!(
        "{}/metadata/snap-{snapshot_id}-1-velo.avro",
        meta.location().trim_end_matches('/')
    );
    let out = table
        .file_io()
        .new_output(&list_path)
        .map_err(|e| fail("write the manifest list", &e))?
        .writer()
        .await
        .map_err(|e| fail("write the manifest list", &e))?;
    let mut list = ManifestListWriter::v2(out, snapshot_id, parent, sequence);
    list.add_manifests(manifests.into_iter())
        .map_err(|e| fail("write the manifest list", &e))?;
    list.close()
        .await
        .map_err(|e| fail("write the manifest list", &e))?;
    let mut properties = rewrite.summary;
    let changes = summary.build();
    let previous = meta.current_snapshot().map(|s| s.summary());
    properties.extend(totals(&changes, previous));
    properties.extend(changes);
    let snapshot = Snapshot::builder()
        .with_manifest_list(list_path)
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(parent)
        .with_sequence_number(sequence)
        .with_summary(Summary {
            operation: rewrite.operation,
            additional_properties: properties,
        })
        .with_schema_id(meta.current_schema_id())
        .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
        .build();
    // phase 5: the updates and what they assume
    let mut updates = vec![
        TableUpdate::AddSnapshot { snapshot },
        TableUpdate::SetSnapshotRef {
            ref_name: MAIN_BRANCH.to_string(),
            reference: SnapshotReference::new(
                snapshot_id,
                SnapshotRetention::branch(None, None, None),
            ),
        },
    ];
    if !rewrite.properties.is_empty() {
        updates.push(TableUpdate::SetProperties {
            updates: rewrite.properties,
        });
    }
    let requirements = vec![
        TableRequirement::UuidMatch { uuid: meta.uuid() },
        TableRequirement::RefSnapshotIdMatch {
            r#ref: MAIN_BRANCH.to_string(),
            snapshot_id: parent,
        },
    ];
    Ok((updates, requirements))
}

/// A writer of a format-version-2 data manifest at `path`, for files of
/// `spec` and the table's current schema.
fn manifest_writer(
    table: &Table,
    path: String,
    snapshot_id: i64,
    spec: &PartitionSpec,
) -> iceberg::Result<ManifestWriter> {
    let out = table.file_io().new_output(path)?;
    Ok(ManifestWriterBuilder::new(
        out,
        Some(snapshot_id),
        table.metadata().current_schema().clone(),
        spec.clone(),
    )
    .build_v2_data())
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
