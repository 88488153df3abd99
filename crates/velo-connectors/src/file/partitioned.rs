//! A file sink with `partition_by`: each row goes under the Hive directory
//! of its partition values (`out/date=2024-01-02/region=eu/part-000003.parquet`),
//! locally or on an object store, as Spark, Hive, DuckDB and the file
//! source read them back (the partition columns leave the files and come
//! back from the directories).
//!
//! Each partition an epoch writes gets a [`FileSink`] of its own for that
//! epoch, with files numbered by epoch, transactional or not like the
//! others; all of them prepare, commit or abort together, and are dropped
//! once the epoch is over, so a long run over many dates keeps only the
//! partitions of the epoch in progress.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::config::FileSinkConfig;
use super::sink::FileSink;
use super::store::Remote;
use crate::sink::{Sink, SinkCapabilities};
use crate::{ConnectorError, Result};

/// What Hive escapes in a partition value.
const HIVE_ESCAPED: &AsciiSet = &CONTROLS
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'\'')
    .add(b'*')
    .add(b'/')
    .add(b':')
    .add(b'=')
    .add(b'?')
    .add(b'\\')
    .add(b'{')
    .add(b'[')
    .add(b']')
    .add(b'^');

/// Hive's directory name for a null partition value.
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// The partitioned file sink.
pub struct PartitionedSink {
    name: String,
    cfg: FileSinkConfig,
    remote: Option<Remote>,
    transactional: bool,
    /// The result's schema, and the files' (without the partition columns).
    schema: Option<(SchemaRef, SchemaRef)>,
    epoch: u64,
    /// This epoch's sink of each partition (`date=2024-01-02/region=eu`).
    parts: BTreeMap<String, FileSink>,
    /// Partitions whose earlier run's temporaries were removed already.
    cleaned: HashSet<String>,
}

impl std::fmt::Debug for PartitionedSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionedSink")
            .field("name", &self.name)
            .field("partition_by", &self.cfg.partition_by)
            .finish()
    }
}

impl PartitionedSink {
    /// The sink; `remote` is the object store when the path is a URL.
    pub fn new(name: &str, cfg: FileSinkConfig, remote: Option<Remote>) -> Self {
        Self {
            name: name.to_string(),
            cfg,
            remote,
            transactional: false,
            schema: None,
            epoch: 0,
            parts: BTreeMap::new(),
            cleaned: HashSet::new(),
        }
    }

    /// The sink of partition `key` for this epoch, created (and its epoch
    /// begun) at its first row.
    fn part(&mut self, key: &str) -> Result<&mut FileSink> {
        if !self.parts.contains_key(key) {
            let mut sink = self.make(key)?;
            if !self.cleaned.insert(key.to_string()) {
                sink = sink.without_cleanup();
            }
            sink.begin_epoch(self.epoch)?;
            self.parts.insert(key.to_string(), sink);
        }
        Ok(self.parts.get_mut(key).expect("inserted above"))
    }

    /// A sink writing into partition `key`'s directory.
    fn make(&self, key: &str) -> Result<FileSink> {
        {
            let mut cfg = self.cfg.clone();
            cfg.partition_by.clear();
            cfg.path = match cfg.path.rfind('/') {
                Some(i) => format!("{}/{key}/{}", &cfg.path[..i], &cfg.path[i + 1..]),
                None => format!("{key}/{}", cfg.path),
            };
            let mut sink =
                FileSink::new(&self.name, cfg, self.remote.clone(), false)?.with_files_per_epoch();
            sink.set_transactional(self.transactional);
            if let Some((_, files)) = &self.schema {
                sink.set_schema(files.clone());
            }
            Ok(sink)
        }
    }

    /// The partition columns' positions in `schema`, or an error naming
    /// the missing one.
    fn columns(&self, schema: &Schema) -> Result<Vec<usize>> {
        self.cfg
            .partition_by
            .iter()
            .map(|c| {
                schema.index_of(c).map_err(|_| {
                    ConnectorError::Other(format!(
                        "sink '{}': partition column '{c}' is not in the result; its columns: {}",
                        self.name,
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            })
            .collect()
    }

    /// Every sink of the epoch, one after the other; the first error ends it.
    fn each(&mut self, mut f: impl FnMut(&mut FileSink) -> Result<()>) -> Result<()> {
        for sink in self.parts.values_mut() {
            f(sink)?;
        }
        Ok(())
    }
}

/// The directory of each row: `col=value/...` in the order of `columns`.
fn keys_of(batch: &RecordBatch, columns: &[usize]) -> Result<Vec<String>> {
    let mut keys = vec![String::new(); batch.num_rows()];
    for (n, &c) in columns.iter().enumerate() {
        let name = batch.schema().field(c).name().clone();
        let text = arrow::compute::cast(batch.column(c), &DataType::Utf8)?;
        let text = text
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .expect("cast to Utf8");
        for (row, key) in keys.iter_mut().enumerate() {
            if n > 0 {
                key.push('/');
            }
            key.push_str(&name);
            key.push('=');
            if text.is_null(row) {
                key.push_str(NULL_PARTITION);
            } else {
                key.extend(utf8_percent_encode(text.value(row), HIVE_ESCAPED));
            }
        }
    }
    Ok(keys)
}

impl Sink for PartitionedSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> SinkCapabilities {
        SinkCapabilities { transactions: true }
    }

    fn set_transactional(&mut self, on: bool) {
        self.transactional = on;
    }

    fn set_schema(&mut self, schema: SchemaRef) {
        let files = Schema::new(
            schema
                .fields()
                .iter()
                .filter(|f| !self.cfg.partition_by.contains(f.name()))
                .cloned()
                .collect::<Vec<_>>(),
        );
        self.schema = Some((schema, Arc::new(files)));
    }

    fn describe(&self) -> String {
        format!(
            "file {:?} '{}' partitioned by {}{}",
            self.cfg.format,
            velo_config::mask(&self.cfg.path),
            self.cfg.partition_by.join(", "),
            if self.transactional {
                " (transactional)"
            } else {
                ""
            }
        )
    }

    fn begin_epoch(&mut self, epoch: u64) -> Result<()> {
        if let Some((schema, _)) = &self.schema {
            self.columns(schema)?;
        }
        self.epoch = epoch;
        self.parts.clear();
        Ok(())
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.schema.is_none() {
            self.set_schema(batch.schema());
        }
        let columns = self.columns(&batch.schema())?;
        let keys = keys_of(batch, &columns)?;
        let mut rows: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            rows.entry(k.as_str()).or_default().push(i as u32);
        }
        let files = self.schema.as_ref().expect("set above").1.clone();
        let data: Vec<usize> = (0..batch.num_columns())
            .filter(|i| !columns.contains(i))
            .collect();
        for (key, idx) in rows {
            let idx = UInt32Array::from(idx);
            let cols = data
                .iter()
                .map(|&c| arrow::compute::take(batch.column(c), &idx, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let part = RecordBatch::try_new(files.clone(), cols)?;
            self.part(key)?.write(&part)?;
        }
        Ok(())
    }

    fn prepare_commit(&mut self, epoch: u64) -> Result<()> {
        self.each(|s| s.prepare_commit(epoch))
    }

    fn commit(&mut self, epoch: u64) -> Result<()> {
        let r = self.each(|s| s.commit(epoch));
        self.parts.clear();
        r
    }

    fn commit_token(&self) -> Option<serde_json::Value> {
        let tokens: serde_json::Map<String, serde_json::Value> = self
            .parts
            .iter()
            .filter_map(|(k, s)| s.commit_token().map(|t| (k.clone(), t)))
            .collect();
        (!tokens.is_empty()).then_some(serde_json::Value::Object(tokens))
    }

    fn recover(&mut self, token: &serde_json::Value) -> Result<()> {
        let tokens = token.as_object().ok_or_else(|| {
            ConnectorError::Other(format!(
                "sink '{}': unreadable checkpoint entry (expected one entry per partition)",
                self.name
            ))
        })?;
        for (key, t) in tokens {
            // a partition directory, nothing that climbs out of the sink's folder
            if key
                .split('/')
                .any(|d| !d.contains('=') || d == ".." || d.starts_with('.'))
            {
                return Err(ConnectorError::Other(format!(
                    "sink '{}': the checkpoint names the partition '{key}', which this sink does not write; move the state directory away to start from scratch",
                    self.name
                )));
            }
            // (its epoch is not begun: an earlier run's temporaries stay
            // until the checkpoint's ones are published)
            self.make(key)?.recover(t)?;
        }
        Ok(())
    }

    fn abort(&mut self, epoch: u64) -> Result<()> {
        let r = self.each(|s| s.abort(epoch));
        self.parts.clear();
        r
    }

    fn close(&mut self) -> Result<()> {
        let r = self.each(|s| s.close());
        self.parts.clear();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Field;

    #[test]
    fn rows_go_to_escaped_hive_directories() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("d", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some("2024-01-02"),
                    None,
                    Some("a/b=c"),
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
            ],
        )
        .unwrap();
        assert_eq!(
            keys_of(&batch, &[0, 1]).unwrap(),
            [
                "d=2024-01-02/n=1",
                "d=__HIVE_DEFAULT_PARTITION__/n=2",
                "d=a%2Fb%3Dc/n=3"
            ]
        );
    }
}
