//! Upserts into an Iceberg table (copy-on-write): what they cost velo's
//! writer, and what a reader of the table pays for them. Not a test:
//! release mode, `cargo bench --bench iceberg_upsert`.
//!
//! The table: `BENCH_KEYS` rows (default 1M: id, v, a 40-byte payload),
//! loaded in id order into a SQL-catalog table with data files of
//! `BENCH_FILE_SIZE` (default 8MB); then `BENCH_EPOCHS` epochs (default
//! 10), each upserting `BENCH_CHANGED` keys (default 1% of the keys) with
//! `merge_on = 'id'`. Two key patterns, each on its own table:
//! - `clustered`: each epoch changes a contiguous range of ids (recent
//!   orders, a day's accounts): the files' id bounds rule most files out;
//! - `random`: ids drawn uniformly: every file holds a changed key.
//!
//! Figures:
//! - the writer: velo's CPU-seconds per upsert epoch, and the rows it wrote
//!   per changed key (the copy-on-write amplification);
//! - the reader: DuckDB's iceberg extension (one thread, from pip, its CPU
//!   time in its own process) reading the upserted table, against the same
//!   rows in a table written once; the median of `BENCH_RUNS` (default 3)
//!   interleaved runs, and the ratio. Copy-on-write leaves plain data files
//!   and no delete files, so the ratio should stay near 1.0; a
//!   merge-on-read table (equality deletes) makes that reader join every
//!   row with the deletes until compaction.

use std::path::Path;
use std::sync::Arc;

mod common;

use common::{cpu_seconds, env_or, median, run_sql};

/// `n` rows of (id, v, payload) with ids from `ids`, as Parquet at `path`.
fn rows(path: &Path, ids: &[i64], v: i64) {
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
        Field::new("payload", DataType::Utf8, false),
    ]));
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, schema.clone(), None).unwrap();
    for chunk in ids.chunks(65_536) {
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(chunk.to_vec())),
                Arc::new(Int64Array::from(vec![v; chunk.len()])),
                Arc::new(StringArray::from(
                    chunk
                        .iter()
                        .map(|i| format!("payload-{i:012}-abcdefghijklmnopqr"))
                        .collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap();
        w.write(&b).unwrap();
    }
    w.close().unwrap();
}

/// The catalog keys of the bench's tables, as an `iceberg://` query.
fn keys(dir: &Path, file_size: &str) -> String {
    format!(
        "catalog_uri=sqlite:{}/catalog.db&warehouse={}/warehouse&target_file_size={file_size}&expire_interval=0",
        dir.display(),
        dir.display()
    )
}

/// DuckDB's CPU-seconds reading `table` whole (count, sum, payload
/// lengths), and the row count it saw.
fn duckdb_read(dir: &Path, table: &str) -> (f64, u64) {
    let script = format!(
        "import duckdb, glob, os, resource\n\
         import duckdb_extension_avro as a, duckdb_extension_iceberg as i\n\
         from pyiceberg.catalog.sql import SqlCatalog\n\
         cat = SqlCatalog('default', uri='sqlite:///{d}/catalog.db', warehouse='file://{d}/warehouse')\n\
         meta = cat.load_table('{table}').metadata_location.removeprefix('file://')\n\
         c = duckdb.connect(config={{'allow_unsigned_extensions': 'true', 'autoinstall_known_extensions': 'false'}})\n\
         for m, e in [(a, 'avro'), (i, 'iceberg')]:\n\
         \x20   c.execute(\"LOAD '\" + glob.glob(os.path.join(os.path.dirname(m.__file__), 'extensions', '*', e + '.duckdb_extension'))[0] + \"'\")\n\
         c.execute('SET threads = 1')\n\
         c.execute('SET enable_progress_bar = false')\n\
         r0 = resource.getrusage(resource.RUSAGE_SELF)\n\
         n = c.execute(f\"SELECT count(*), sum(v), sum(length(payload)) FROM iceberg_scan('{{meta}}')\").fetchone()[0]\n\
         r1 = resource.getrusage(resource.RUSAGE_SELF)\n\
         print(n)\n\
         print(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)\n",
        d = dir.display()
    );
    let lines = common::python(
        &script,
        "duckdb==1.5.5 duckdb-extension-iceberg duckdb-extension-avro 'pyiceberg[sql-sqlite]'",
    );
    let n = lines[lines.len() - 2].trim().parse().unwrap();
    let cpu = lines[lines.len() - 1].trim().parse().unwrap();
    (cpu, n)
}

fn main() {
    let n: i64 = env_or("BENCH_KEYS", 1_000_000);
    let epochs: i64 = env_or("BENCH_EPOCHS", 10);
    let changed: i64 = env_or("BENCH_CHANGED", n / 100);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let file_size: String = env_or("BENCH_FILE_SIZE", "8MB".to_string());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let k = keys(dir, &file_size);
    let all: Vec<i64> = (0..n).collect();
    rows(&dir.join("initial.parquet"), &all, 0);
    println!(
        "iceberg upserts: {n} keys, {epochs} epochs of {changed} changed keys, files of {file_size}; DuckDB {runs} runs"
    );
    println!(
        "| keys | velo CPU-s per epoch | rows written per changed key | DuckDB read, upserted (CPU-s) | DuckDB read, written once | upserted / once |"
    );
    println!("|---|---|---|---|---|---|");
    let mut x: u64 = 7;
    for pattern in ["clustered", "random"] {
        // the updates, `changed` keys per epoch
        let mut ids = Vec::with_capacity((epochs * changed) as usize);
        for e in 0..epochs {
            for j in 0..changed {
                ids.push(match pattern {
                    "clustered" => (e * changed * 3 + j) % n,
                    _ => {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x % n as u64) as i64
                    }
                });
            }
        }
        let updates = dir.join(format!("{pattern}.parquet"));
        rows(&updates, &ids, 1);
        let table = format!("bench.{pattern}");
        // load, then the upsert epochs (timed), then the same rows once
        run_sql(
            &format!(
                "CREATE STREAM load AS SELECT id, v, payload FROM src INTO 'iceberg://{table}?{k}'
                 WITH ('src.type' = 'file_source', 'src.path' = '{}');",
                dir.join("initial.parquet").display()
            ),
            dir,
            velo_engine::Shutdown::default(),
        );
        let before = cpu_seconds();
        run_sql(
            &format!(
                "CREATE STREAM upsert AS SELECT id, v, payload FROM src INTO 'iceberg://{table}?{k}&merge_on=id'
                 WITH ('src.type' = 'file_source', 'src.path' = '{}', 'batch.size' = '{changed}');",
                updates.display()
            ),
            dir,
            velo_engine::Shutdown::default(),
        );
        let per_epoch = (cpu_seconds() - before) / epochs as f64;
        let once = format!("bench.{pattern}_once");
        run_sql(
            &format!(
                "CREATE STREAM copy AS SELECT id, v, payload FROM 'iceberg://{table}?{k}' INTO 'iceberg://{once}?{k}';"
            ),
            dir,
            velo_engine::Shutdown::default(),
        );
        let written: u64 = summary_sum(dir, &table, "added-records");
        let (mut up, mut base) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let (c, rows_up) = duckdb_read(dir, &table);
            let (b, rows_once) = duckdb_read(dir, &once);
            assert_eq!(rows_up, n as u64, "the upserted table holds each key once");
            assert_eq!(rows_once, n as u64);
            up.push(c);
            base.push(b);
        }
        let (up, base) = (median(up), median(base));
        println!(
            "| {pattern} | {per_epoch:.3} | {:.1} | {up:.3} | {base:.3} | {:.2}x |",
            (written.saturating_sub(n as u64)) as f64 / (epochs * changed) as f64,
            up / base
        );
    }
}

/// The sum of a summary entry over the table's snapshots (pyiceberg).
fn summary_sum(dir: &Path, table: &str, key: &str) -> u64 {
    let script = format!(
        "from pyiceberg.catalog.sql import SqlCatalog\n\
         cat = SqlCatalog('default', uri='sqlite:///{d}/catalog.db', warehouse='file://{d}/warehouse')\n\
         t = cat.load_table('{table}')\n\
         print(sum(int(s.summary.get('{key}') or 0) for s in t.metadata.snapshots))\n",
        d = dir.display()
    );
    common::python(&script, "'pyiceberg[sql-sqlite]'")
        .join("")
        .trim()
        .parse()
        .unwrap()
}
