//! The Delta connector end to end: tables written by velo read back by
//! delta-rs for Python and DuckDB's delta extension (`tests/lake/delta.py`),
//! tables written by Python read by velo; local directories and moto's S3
//! on 127.0.0.1; crashes at the checkpoint and kill -9 at random moments.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::common::{Moto, crash_and_resume_with, run_in};

/// Runs `tests/lake/delta.py` with `env` (the S3 settings of a table on
/// moto; `DELTA_APPS` for txn versions).
pub(crate) fn py(args: &[&str], env: &[(String, String)]) -> String {
    let python = std::env::var("VELO_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lake/delta.py");
    let mut c = std::process::Command::new(python);
    c.arg(script).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("python runs");
    assert!(
        o.status.success(),
        "delta.py {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The table as delta-rs for Python reads it.
fn read(table: &Path, apps: &str) -> Value {
    let env = [("DELTA_APPS".to_string(), apps.to_string())];
    serde_json::from_str(&py(&["read", table.to_str().unwrap()], &env)).unwrap()
}

/// The rows as DuckDB's delta_scan reads them.
fn duck(table: &Path) -> Vec<Value> {
    serde_json::from_str(&py(&["duck", table.to_str().unwrap()], &[])).unwrap()
}

fn ids(rows: &[Value], col: &str) -> Vec<i64> {
    let mut v: Vec<i64> = rows.iter().map(|r| r[col].as_i64().unwrap()).collect();
    v.sort();
    v
}

fn run(dir: &Path, env: &[(String, String)]) -> (bool, String) {
    let o = run_in(dir, &["run", "app.sql"], env);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Orders in a CSV file, appended to a partitioned table over several
/// epochs: delta-rs and DuckDB read every row once, the partition column
/// as a column, and the log holds one commit per epoch.
#[test]
fn a_partitioned_table_is_created_and_appended_to() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut csv = String::from("id,region,amount\n");
    for i in 0..100 {
        csv += &format!("{i},{},{}.5\n", ["eu", "us", "apac"][i % 3], i);
    }
    std::fs::write(dir.join("orders.csv"), csv).unwrap();
    std::fs::write(
        dir.join("app.sql"),
        "CREATE STREAM copy AS SELECT id, region, amount FROM orders INTO lake
         WITH ('orders.type' = 'file_source', 'orders.path' = 'orders.csv', 'batch.size' = '25',
               'lake.type' = 'delta_sink', 'lake.path' = 'lake/orders', 'lake.partition_by' = 'region');",
    )
    .unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(ok, "{log}");
    let t = read(&dir.join("lake/orders"), "");
    let rows = t["rows"].as_array().unwrap();
    assert_eq!(ids(rows, "id"), (0..100).collect::<Vec<_>>());
    assert_eq!(t["partitions"], serde_json::json!(["region"]));
    assert!(rows.iter().all(|r| r["region"].as_str().unwrap()
        == ["eu", "us", "apac"][r["id"].as_u64().unwrap() as usize % 3]));
    let ops: Vec<&str> = t["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(ops[0], "CREATE TABLE");
    assert!(
        ops.len() >= 5 && ops[1..].iter().all(|o| *o == "WRITE"),
        "{ops:?}"
    );
    assert!(dir.join("lake/orders/region=eu").is_dir());
    // DuckDB agrees
    let rows = duck(&dir.join("lake/orders"));
    assert_eq!(ids(&rows, "id"), (0..100).collect::<Vec<_>>());
    // the delta:// URI names the same kind of sink
    std::fs::write(
        dir.join("app.sql"),
        "CREATE STREAM again AS SELECT id, region, amount FROM orders INTO 'delta://lake/orders'
         WITH ('orders.type' = 'file_source', 'orders.path' = 'orders.csv');",
    )
    .unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(ok, "{log}");
    let t = read(&dir.join("lake/orders"), "");
    assert_eq!(t["rows"].as_array().unwrap().len(), 200);
}

/// The windowed job of the object-store crash test, into a Delta table
/// with `use_transactions`.
fn windowed_app(dir: &Path, extra: &str) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    for (f, range) in [("a", 0..3_000i64), ("b", 3_000..6_000)] {
        crate::common::write_id_ts_parquet(&dir.join(format!("data/{f}.parquet")), range);
    }
    std::fs::write(
        dir.join("app.sql"),
        format!(
            "CREATE STREAM w AS SELECT CAST(window_start AS BIGINT) AS ws, COUNT(*) AS n, SUM(id) AS ids
             FROM events GROUP BY TUMBLE(ts, INTERVAL '100' MILLISECOND) INTO lake
             WITH ('events.type' = 'file_source', 'events.path' = 'data/*.parquet',
                   'events.watermark.max_out_of_orderness' = '0ms',
                   'use_transactions' = 'true', 'state.dir' = 'state', 'batch.size' = '250'{extra},
                   'lake.type' = 'delta_sink', 'lake.path' = 'lake/windows');"
        ),
    )
    .unwrap();
}

/// Every one of the 60 windows in the table once, with its 100 records;
/// the table's txn for the job is the run's last epoch.
fn assert_windows_once(table: &Path) -> Value {
    let t = read(table, "w");
    crate::common::assert_each_window_once(t["rows"].as_array().unwrap());
    assert!(t["txn"]["w"].as_i64().unwrap() > 0, "{}", t["txn"]);
    t
}

/// Crashed right after two of its checkpoints (before the Delta commit),
/// the job commits the checkpointed epoch on restart, once: every window
/// is in the table exactly once, and a finished run started again adds
/// nothing.
#[test]
fn a_crash_between_checkpoint_and_commit_loses_and_duplicates_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    windowed_app(dir, "");
    let log = crash_and_resume_with(dir, &["3", "7"], &[]);
    assert!(
        log.contains("committing the checkpoint's epoch to the Delta table"),
        "the restart finished the crashed run's commit: {log}"
    );
    let t = assert_windows_once(&dir.join("lake/windows"));
    let (ok, log) = run(dir, &[]);
    assert!(ok, "{log}");
    let again = read(&dir.join("lake/windows"), "w");
    assert_eq!(again["version"], t["version"], "nothing new: {log}");
    // the checkpoint gone, the table refuses to take the epochs again
    std::fs::remove_dir_all(dir.join("state")).unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(!ok, "a run without its checkpoint must not write again");
    assert!(log.contains("already holds epoch"), "{log}");
    assert_eq!(
        read(&dir.join("lake/windows"), "w")["version"],
        t["version"]
    );
}

/// kill -9 at random moments of a paced run (reading, writing data files,
/// committing), four times, then a run to the end: every window once.
#[test]
fn kill_9_at_random_moments_keeps_every_window_once() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    windowed_app(dir, ", 'rate_limit' = '1500'");
    let seed = crate::common::kill_9_at_random_moments(dir, 4);
    let (ok, log) = run(dir, &[]);
    assert!(ok, "seed {seed}: {log}");
    assert_windows_once(&dir.join("lake/windows"));
}

/// A table on S3 (moto): written by velo, read back by delta-rs for
/// Python, and read by velo's Delta source into a file.
#[test]
fn a_table_on_s3_is_written_and_read() {
    let moto = Moto::start("lake");
    let env = moto.env();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut jsonl = String::new();
    for i in 0..50 {
        jsonl += &format!("{{\"id\":{i},\"kind\":\"k{}\"}}\n", i % 4);
    }
    std::fs::write(dir.join("in.jsonl"), jsonl).unwrap();
    std::fs::write(
        dir.join("app.sql"),
        "CREATE STREAM up AS SELECT id, kind FROM src INTO lake
         WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl', 'batch.size' = '20',
               'lake.type' = 'delta_sink', 'lake.path' = 's3://lake/tables/events', 'lake.partition_by' = 'kind');",
    )
    .unwrap();
    let (ok, log) = run(dir, &env);
    assert!(ok, "{log}");
    let out = py(&["read", "s3://lake/tables/events"], &env);
    let t: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        ids(t["rows"].as_array().unwrap(), "id"),
        (0..50).collect::<Vec<_>>()
    );
    // and back: the Delta source on S3
    std::fs::write(
        dir.join("app.sql"),
        "CREATE STREAM down AS SELECT id, kind FROM 'delta://s3://lake/tables/events' INTO out
         WITH ('out.type' = 'file_sink', 'out.path' = 'back.jsonl');",
    )
    .unwrap();
    let (ok, log) = run(dir, &env);
    assert!(ok, "{log}");
    let back: Vec<Value> = std::fs::read_to_string(dir.join("back.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ids(&back, "id"), (0..50).collect::<Vec<_>>());
    assert!(
        back.iter()
            .all(|r| r["kind"].as_str().unwrap() == format!("k{}", r["id"].as_i64().unwrap() % 4))
    );
}

/// A query with a column the table lacks: refused by default with what to
/// do; `schema.mode = 'merge'` adds it (older rows read it as null).
#[test]
fn new_columns_are_refused_or_merged_by_schema_mode() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let table = dir.join("lake/people");
    py(
        &[
            "write",
            table.to_str().unwrap(),
            "append",
            r#"[{"id": 1, "name": "ann"}]"#,
        ],
        &[],
    );
    std::fs::write(
        dir.join("in.jsonl"),
        "{\"id\":2,\"name\":\"bob\",\"city\":\"oslo\"}\n",
    )
    .unwrap();
    let app = |mode: &str| {
        format!(
            "CREATE STREAM p AS SELECT id, name, city FROM src INTO lake
             WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl',
                   'lake.type' = 'delta_sink', 'lake.path' = 'lake/people'{mode});"
        )
    };
    std::fs::write(dir.join("app.sql"), app("")).unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(!ok, "strict refuses a new column");
    assert!(
        log.contains("no column(s) city") && log.contains("schema.mode = 'merge'"),
        "{log}"
    );
    assert_eq!(read(&table, "")["version"], 0, "nothing was committed");
    std::fs::write(dir.join("app.sql"), app(", 'lake.schema.mode' = 'merge'")).unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(ok, "{log}");
    let t = read(&table, "");
    assert_eq!(t["columns"], serde_json::json!(["id", "name", "city"]));
    let mut rows = t["rows"].as_array().unwrap().clone();
    rows.sort_by_key(|r| r["id"].as_i64());
    assert_eq!(
        Value::Array(rows),
        serde_json::json!([
            {"id": 1, "name": "ann", "city": null},
            {"id": 2, "name": "bob", "city": "oslo"}
        ])
    );
    assert_eq!(duck(&table).len(), 2);
}

/// A table Python wrote in three commits: read as of version 1 (time
/// travel); followed from its snapshot while Python appends, stopped and
/// resumed from the checkpoint (nothing read twice or missed); a DELETE
/// stops a follower with an error that says why.
#[test]
fn the_source_reads_versions_and_follows_commits() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let table = dir.join("lake/src");
    let t = table.to_str().unwrap();
    let append = |from: i64| {
        let rows: Vec<Value> = (from..from + 3)
            .map(|i| serde_json::json!({"id": i, "v": format!("r{i}")}))
            .collect();
        py(
            &["write", t, "append", &Value::Array(rows).to_string()],
            &[],
        );
    };
    append(1);
    append(4);
    append(7);
    // time travel: version 1 holds the first two commits
    std::fs::write(
        dir.join("app.sql"),
        "CREATE STREAM tt AS SELECT id, v FROM src INTO out
         WITH ('src.type' = 'delta_source', 'src.path' = 'lake/src', 'src.version' = '1',
               'out.type' = 'file_sink', 'out.path' = 'v1.jsonl');",
    )
    .unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(ok, "{log}");
    let v1: Vec<Value> = std::fs::read_to_string(dir.join("v1.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ids(&v1, "id"), (1..7).collect::<Vec<_>>());
    // a time before the table: a clear error
    std::fs::write(
        dir.join("app.sql"),
        "CREATE STREAM tt AS SELECT id FROM src INTO out
         WITH ('src.type' = 'delta_source', 'src.path' = 'lake/src', 'src.timestamp' = '2000-01-01',
               'out.type' = 'file_sink', 'out.path' = 'old.jsonl');",
    )
    .unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(
        !ok && log.contains("has no version as of 2000-01-01"),
        "{log}"
    );

    // snapshot, then follow: into a Delta table read by Python
    std::fs::write(
        dir.join("app.sql"),
        "CREATE STREAM live AS SELECT id, v FROM src INTO out
         WITH ('src.type' = 'delta_source', 'src.path' = 'lake/src', 'src.mode' = 'snapshot_and_follow',
               'src.poll_interval' = '100ms', 'use_transactions' = 'true', 'batch.timeout' = '200ms',
               'out.type' = 'delta_sink', 'out.path' = 'lake/copy');",
    )
    .unwrap();
    let copy = dir.join("lake/copy");
    let count = |c: &Path| -> usize {
        if !c.join("_delta_log").is_dir() {
            return 0;
        }
        read(c, "")["rows"].as_array().unwrap().len()
    };
    let child = crate::lake::start_example(dir, &[]);
    let mut appended = false;
    crate::lake::stop_when(child, || {
        let n = count(&copy);
        if n == 9 && !appended {
            append(10);
            appended = true;
        }
        n == 12
    });
    // stopped: two more commits, then a resumed run reads just those
    append(13);
    append(16);
    let child = crate::lake::start_example(dir, &[]);
    crate::lake::stop_when(child, || count(&copy) >= 18);
    let rows = read(&copy, "")["rows"].as_array().unwrap().clone();
    assert_eq!(
        ids(&rows, "id"),
        (1..19).collect::<Vec<_>>(),
        "every row once across the stop"
    );
    // a DELETE in the followed table stops the job with the reason
    py(&["delete", t, "id = 2"], &[]);
    let (ok, log) = run(dir, &[]);
    assert!(!ok, "a followed table's delete fails the job");
    assert!(
        log.contains("removes rows") && log.contains("DELETE"),
        "{log}"
    );
}

/// What a careless or hostile user gets: a clear error naming the table,
/// a failed exit, and never the secret.
#[test]
fn delta_mistakes_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("in.jsonl"), "{\"id\":1}\n").unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "CREATE STREAM a AS SELECT id FROM src INTO out WITH ('src.type' = 'delta_source', 'src.path' = 'nowhere', 'out.type' = 'stdout');",
            "there is no Delta table at",
        ),
        (
            "CREATE STREAM a AS SELECT id FROM src INTO lake WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl', 'lake.type' = 'delta_sink', 'lake.path' = 'https://example.com/t');",
            "http(s) cannot hold a Delta table",
        ),
        (
            "CREATE STREAM a AS SELECT id FROM src INTO lake WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl', 'lake.type' = 'delta_sink', 'lake.path' = 't', 'lake.schema.mode' = 'loose');",
            "expected one of strict, merge",
        ),
        (
            "CREATE STREAM a AS SELECT id FROM src INTO lake WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl', 'lake.type' = 'delta_sink', 'lake.path' = 't', 'lake.partition_by' = 'region');",
            "partition_by names 'region'",
        ),
        (
            "CREATE STREAM a AS SELECT id FROM src INTO lake WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl', 'lake.type' = 'delta_sink', 'lake.path' = 't', 'lake.mode' = 'upsert');",
            "merges by key, but the result has no key: set merge_on",
        ),
        (
            "CREATE STREAM a AS SELECT id FROM src INTO out WITH ('src.type' = 'delta_source', 'src.path' = 't2', 'src.mode' = 'follow', 'src.version' = '3', 'out.type' = 'stdout');",
            "starting_version",
        ),
        (
            "CREATE STREAM a AS SELECT CAST(id AS VARCHAR) AS id FROM src INTO lake WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl', 'lake.type' = 'delta_sink', 'lake.path' = 'ints');",
            "CAST it in the SELECT",
        ),
        (
            "CREATE STREAM a AS SELECT id FROM src INTO lake WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl', 'lake.type' = 'delta_sink', 'lake.path' = 's3://no-such-bucket/t', 'lake.endpoint' = 'http://127.0.0.1:1', 'lake.allow_http' = 'true', 'lake.access_key_id' = 'AKIA1', 'lake.secret_access_key' = 'SuperSecret123');",
            "no-such-bucket",
        ),
    ];
    // a table of integers for the type mismatch
    py(
        &[
            "write",
            dir.join("ints").to_str().unwrap(),
            "append",
            r#"[{"id": 1}]"#,
        ],
        &[],
    );
    for (sql, want) in cases {
        std::fs::write(dir.join("app.sql"), sql).unwrap();
        let (ok, log) = run(dir, &[]);
        assert!(!ok, "{sql} must fail");
        assert!(log.contains(want), "{sql}: wants {want:?} in: {log}");
        assert!(!log.contains("SuperSecret123"), "the secret leaked: {log}");
    }
}

/// Small files: a checkpoint every N versions and compaction every N
/// commits as job keys; `velo delta optimize` compacts by hand and `velo
/// delta vacuum` deletes the replaced files; readers see the same rows
/// throughout.
#[test]
fn checkpoints_compaction_and_vacuum_keep_a_table_small() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut jsonl = String::new();
    for i in 0..240 {
        jsonl += &format!("{{\"id\":{i}}}\n");
    }
    std::fs::write(dir.join("in.jsonl"), jsonl).unwrap();
    let app = |table: &str, keys: &str| {
        format!(
            "CREATE STREAM s AS SELECT id FROM src INTO lake
             WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl', 'batch.size' = '20',
                   'lake.type' = 'delta_sink', 'lake.path' = '{table}'{keys});"
        )
    };
    // checkpoints every 5 versions, no compaction: 12 small files
    std::fs::write(
        dir.join("app.sql"),
        app("small", ", 'lake.checkpoint_interval' = '5'"),
    )
    .unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(ok, "{log}");
    let small = dir.join("small");
    let t = read(&small, "");
    assert_eq!(t["files"], 12, "{t}");
    let cps: Vec<String> =
        serde_json::from_str(&py(&["checkpoints", small.to_str().unwrap()], &[])).unwrap();
    assert_eq!(
        cps,
        [
            "00000000000000000005.checkpoint.parquet",
            "00000000000000000010.checkpoint.parquet"
        ]
    );
    // by hand: one file, the same rows, an OPTIMIZE in the history
    let o = run_in(
        dir,
        &["delta", "optimize", "small", "--target-file-size", "1MB"],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("compacted 12 files into 1"));
    let t = read(&small, "");
    assert_eq!(t["files"], 1);
    assert_eq!(
        ids(t["rows"].as_array().unwrap(), "id"),
        (0..240).collect::<Vec<_>>()
    );
    assert_eq!(
        t["operations"].as_array().unwrap().last().unwrap(),
        "OPTIMIZE"
    );
    let parquet_files = |p: &Path| {
        std::fs::read_dir(p)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".parquet")
            })
            .count()
    };
    assert_eq!(parquet_files(&small), 13);
    // vacuum: the table's minimum retention holds unless forced
    let o = run_in(dir, &["delta", "vacuum", "small", "--retain", "0h"], &[]);
    assert!(
        !o.status.success(),
        "a retention under the table's minimum is refused"
    );
    let o = run_in(
        dir,
        &["delta", "vacuum", "small", "--retain", "0h", "--force"],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(parquet_files(&small), 1);
    assert_eq!(duck(&small).len(), 240);

    // compaction as a job key: every 4 commits
    std::fs::write(
        dir.join("app.sql"),
        app("auto", ", 'lake.optimize_interval' = '4'"),
    )
    .unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(ok, "{log}");
    let t = read(&dir.join("auto"), "");
    let optimizes = t["operations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| *o == "OPTIMIZE")
        .count();
    assert_eq!(optimizes, 3, "{t}");
    assert!(t["files"].as_u64().unwrap() <= 3, "{t}");
    assert_eq!(
        ids(t["rows"].as_array().unwrap(), "id"),
        (0..240).collect::<Vec<_>>()
    );
}

/// The Delta table's rows as customer -> (n, total).
fn totals_in(table: &Path) -> BTreeMap<String, (i64, i64)> {
    crate::common::customer_totals(read(table, "")["rows"].as_array().unwrap())
}

/// An updating result (GROUP BY ... EMIT CHANGES, with HAVING deleting
/// the groups that pass 200) is applied as a MERGE by the group key every
/// epoch: the table is the batch answer, each key once, and DuckDB agrees;
/// crashed between checkpoint and commit, the MERGE is finished once.
#[test]
fn an_updating_result_is_merged_by_key() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let want = crate::common::customer_orders(dir);
    std::fs::write(
        dir.join("app.sql"),
        "CREATE TABLE totals AS SELECT customer, COUNT(*) AS n, SUM(amount) AS total
         FROM orders GROUP BY customer HAVING SUM(amount) < 200 EMIT CHANGES INTO lake
         WITH ('orders.type' = 'file_source', 'orders.path' = 'orders.jsonl', 'batch.size' = '30',
               'use_transactions' = 'true', 'state.dir' = 'state',
               'lake.type' = 'delta_sink', 'lake.path' = 'lake/totals');",
    )
    .unwrap();
    let log = crash_and_resume_with(dir, &["4"], &[]);
    assert!(
        log.contains("committing the checkpoint's epoch to the Delta table"),
        "{log}"
    );
    let table = dir.join("lake/totals");
    assert_eq!(totals_in(&table), want);
    let t = read(&table, "");
    let ops = t["operations"].as_array().unwrap();
    assert!(
        ops.iter().filter(|o| *o == "MERGE").count() >= 5,
        "one MERGE per epoch: {ops:?}"
    );
    assert_eq!(duck(&table).len(), want.len());
}

/// `merge_on` over plain rows: each row replaces the row of its key in a
/// table Python wrote; the other rows stay as they were.
#[test]
fn merge_on_replaces_rows_by_key() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let table = dir.join("lake/items");
    let initial: Vec<Value> = (0..20)
        .map(|i| serde_json::json!({"id": i, "v": format!("old{i}")}))
        .collect();
    py(
        &[
            "write",
            table.to_str().unwrap(),
            "append",
            &Value::Array(initial).to_string(),
        ],
        &[],
    );
    let mut jsonl = String::new();
    for i in (15..25).chain(16..18) {
        jsonl += &format!("{{\"id\":{i},\"v\":\"new{i}\"}}\n");
    }
    std::fs::write(dir.join("in.jsonl"), jsonl).unwrap();
    std::fs::write(
        dir.join("app.sql"),
        "CREATE STREAM up AS SELECT id, v FROM src INTO lake
         WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl', 'batch.size' = '4',
               'lake.type' = 'delta_sink', 'lake.path' = 'lake/items', 'lake.merge_on' = 'id');",
    )
    .unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(ok, "{log}");
    let mut rows = read(&table, "")["rows"].as_array().unwrap().clone();
    rows.sort_by_key(|r| r["id"].as_i64());
    let want: Vec<Value> = (0..25)
        .map(|i| {
            let v = if i < 15 {
                format!("old{i}")
            } else {
                format!("new{i}")
            };
            serde_json::json!({"id": i, "v": v})
        })
        .collect();
    assert_eq!(rows, want);
}

/// Seed 004 example 5 (`examples/lake/join_to_delta.sql`): orders from
/// Kafka joined with customer history in Parquet on S3, the large ones
/// appended to a Delta table on S3, read back by delta-rs for Python:
/// each large order once, with its customer's segment (or none).
#[test]
fn seed_example_5_kafka_joined_with_s3_into_delta() {
    let (_tmp, _broker, bs) = crate::kafka::with_broker();
    let moto = Moto::start("warehouse");
    crate::lake::s3py(&moto, &["mkbucket", "lakehouse"]);
    crate::kafka::create_topic(&bs, "orders", 2);
    // customers 0..8 have a history; 8 and 9 do not
    let d = crate::lake::example("join_to_delta.sql");
    let dir = d.path();
    let customers = dir.join("customers.parquet");
    {
        use std::sync::Arc;
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("customer_id", arrow::datatypes::DataType::Int64, false),
            arrow::datatypes::Field::new(
                "customer_segment",
                arrow::datatypes::DataType::Utf8,
                false,
            ),
            arrow::datatypes::Field::new(
                "lifetime_value",
                arrow::datatypes::DataType::Float64,
                false,
            ),
        ]));
        let batch = arrow::array::RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(arrow::array::Int64Array::from_iter_values(0..8)),
                Arc::new(arrow::array::StringArray::from_iter_values(
                    (0..8).map(|i| if i % 2 == 0 { "gold" } else { "silver" }),
                )),
                Arc::new(arrow::array::Float64Array::from_iter_values(
                    (0..8).map(|i| i as f64 * 100.0),
                )),
            ],
        )
        .unwrap();
        let f = std::fs::File::create(&customers).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    crate::lake::s3py(
        &moto,
        &[
            "put",
            "warehouse",
            "customers/part-0.parquet",
            customers.to_str().unwrap(),
        ],
    );
    let msgs: Vec<(Option<String>, Vec<u8>)> = (0..200i64)
        .map(|i| {
            let v = format!(
                r#"{{"order_id":{i},"customer_id":{},"product_id":{},"amount":{}}}"#,
                i % 10,
                i % 3,
                i as f64 * 7.5
            );
            (None, v.into_bytes())
        })
        .collect();
    crate::kafka::produce(&bs, "orders", &msgs);
    let mut env = moto.env();
    env.push(("KAFKA_BROKERS".into(), bs.clone()));
    env.push(("BATCH_TIMEOUT".into(), "1s".into()));
    // the current stock of products 0 and 1 (2 has none) in an Iceberg
    // table (a SQL catalog here, its data on S3), written by velo's own
    // Iceberg sink (pyarrow's multipart uploads fail on moto)
    std::fs::write(
        dir.join("stock.csv"),
        "product_id,current_inventory\n0,40\n1,41\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("stock.sql"),
        "CREATE STREAM stock AS SELECT product_id, current_inventory FROM s INTO t
         WITH ('s.type' = 'file_source', 's.path' = 'stock.csv',
               't.type' = 'iceberg_sink', 't.table' = 'catalog.inventory.current_stock',
               't.catalog_uri' = 'sqlite:catalog.db', 't.warehouse' = 's3://warehouse/iceberg');",
    )
    .unwrap();
    let o = run_in(dir, &["run", "stock.sql"], &env);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    env.push(("ICEBERG_CATALOG".into(), "sqlite:catalog.db".into()));
    let want: Vec<i64> = (0..200).filter(|i| *i as f64 * 7.5 > 500.0).collect();
    let table = "s3://lakehouse/enriched_orders";
    let rows = || -> Vec<Value> {
        let args = ["read", table];
        let python = std::env::var("VELO_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lake/delta.py");
        let o = std::process::Command::new(python)
            .arg(script)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap();
        if !o.status.success() {
            return Vec::new(); // no table yet
        }
        let t: Value = serde_json::from_slice(&o.stdout).unwrap();
        t["rows"].as_array().unwrap().clone()
    };
    let child = crate::lake::start_example(dir, &env);
    crate::lake::stop_when(child, || rows().len() >= want.len());
    let rows = rows();
    assert_eq!(ids(&rows, "order_id"), want, "each large order once");
    for r in &rows {
        let c = r["customer_id"].as_i64().unwrap();
        let seg = &r["customer_segment"];
        match c {
            0..8 => {
                assert_eq!(seg, if c % 2 == 0 { "gold" } else { "silver" }, "{r}");
                assert_eq!(r["lifetime_value"].as_f64(), Some(c as f64 * 100.0), "{r}");
            }
            _ => assert!(seg.is_null(), "no history, no segment: {r}"),
        }
        let p = r["order_id"].as_i64().unwrap() % 3;
        let stock = &r["current_inventory"];
        match p {
            0 | 1 => assert_eq!(stock.as_i64(), Some(40 + p), "{r}"),
            _ => assert!(stock.is_null(), "no stock row, no stock: {r}"),
        }
    }
}

/// The query's WHERE skips data files of a Delta table: a damaged file in
/// a partition the filter rules out is never opened; without the filter
/// the same damage fails the run (the control).
#[test]
fn filters_skip_partitions_of_a_delta_table() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let table = dir.join("lake/regions");
    let rows: Vec<Value> = (0..30)
        .map(|i| {
            let region = ["eu", "us", "ap"][i % 3];
            serde_json::json!({"id": i, "region": region})
        })
        .collect();
    py(
        &[
            "write",
            table.to_str().unwrap(),
            "append",
            &Value::Array(rows).to_string(),
            "region",
        ],
        &[],
    );
    // the 'us' partition's data file damaged
    for e in std::fs::read_dir(table.join("region=us")).unwrap() {
        std::fs::write(e.unwrap().path(), b"not parquet").unwrap();
    }
    let app = |filter: &str| {
        format!(
            "CREATE STREAM f AS SELECT id, region FROM src {filter} INTO out
             WITH ('src.type' = 'delta_source', 'src.path' = 'lake/regions',
                   'out.type' = 'file_sink', 'out.path' = 'out.jsonl');"
        )
    };
    std::fs::write(dir.join("app.sql"), app("WHERE region = 'eu'")).unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(ok, "{log}");
    let got: Vec<Value> = std::fs::read_to_string(dir.join("out.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ids(&got, "id"), (0..30).step_by(3).collect::<Vec<i64>>());
    std::fs::write(dir.join("app.sql"), app("")).unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(
        !ok && log.contains("cannot read the data file"),
        "the control reads the damage: {log}"
    );
}

/// A bounded snapshot under an aggregate runs as one DataFusion batch plan
/// over the snapshot's data files (those its log names, not those in the
/// directory: a DELETE leaves rewritten files behind), partitions pruned
/// by the filter, a column added by schema evolution null in older files,
/// row errors dead-lettered: the answer, records read and dead letters
/// equal to the streaming run's.
#[test]
fn a_bounded_delta_aggregate_runs_as_one_batch_plan() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let table = dir.join("lake/orders");
    let t = table.to_str().unwrap();
    let rows = |from: i64, to: i64, note: bool| -> String {
        let v: Vec<Value> = (from..to)
            .map(|i| {
                let day = ["d1", "d2", "d3"][(i % 3) as usize];
                let mut r =
                    serde_json::json!({"id": i, "day": day, "amount": (i % 7) as f64 * 1.5});
                if note {
                    r["note"] = Value::from(format!("n{i}"));
                }
                r
            })
            .collect();
        Value::Array(v).to_string()
    };
    py(&["write", t, "append", &rows(0, 600, false), "day"], &[]);
    py(
        &["write", t, "append", &rows(600, 900, true), "day", "merge"],
        &[],
    );
    // rewrites the files holding ids 0..30: their old files stay on disk
    py(&["delete", t, "id < 30"], &[]);
    let app = r#"CREATE STREAM per_day AS
SELECT day, COUNT(*) AS n, SUM(amount) AS total, COUNT(note) AS notes, SUM(10 / (id % 5)) AS q
FROM src WHERE day <> 'd3'
GROUP BY day ORDER BY day
INTO out
WITH ('src.type' = 'delta_source', 'src.path' = 'lake/orders',
      'out.type' = 'file_sink', 'out.path' = 'out.jsonl', 'use_transactions' = 'true',
      'dlq.path' = 'dead.jsonl');"#;
    std::fs::write(dir.join("app.sql"), app).unwrap();
    let go = |args: &[&str]| crate::common::run_and_take(dir, args);
    let (batch, batch_dead, said) = go(&[]);
    assert!(said.contains("one batch plan"), "{said}");
    // ids 30..900 of days d1 and d2 (d3 pruned): 580 rows
    assert!(said.contains("source src: 580 read"), "{said}");
    let (streamed, streamed_dead, said) = go(&["--set", "batch.size=100"]);
    assert!(!said.contains("one batch plan"), "{said}");
    assert!(
        said.contains("rather than planning it as a batch query: 'batch.size' asks for epochs"),
        "says why: {said}"
    );
    assert_eq!(
        batch, streamed,
        "the batch plan answers as the streaming run"
    );
    let lines: Vec<Value> = batch
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{batch}");
    let n: i64 = lines.iter().map(|r| r["n"].as_i64().unwrap()).sum();
    let notes: i64 = lines.iter().map(|r| r["notes"].as_i64().unwrap()).sum();
    // the dead-lettered rows (id % 5 == 0) are not counted
    assert_eq!(n + batch_dead as i64, 580, "{batch}");
    assert_eq!(notes, 200 - 40, "the new column, null before it: {batch}");
    assert_eq!(batch_dead, 116, "every fifth row dead-lettered");
    assert_eq!(batch_dead, streamed_dead);
}
