//! The Iceberg connector end to end: tables written by velo read back by
//! pyiceberg and DuckDB's iceberg extension (`tests/lake/iceberg.py`),
//! tables written by pyiceberg read by velo; a SQL catalog on a SQLite file
//! with a local warehouse, and SeaweedFS's REST catalog with its S3 on
//! 127.0.0.1; crashes at the checkpoint and kill -9 at random moments.

use std::path::Path;

use serde_json::{Value, json};

use crate::common::{Weed, crash_and_resume_with, run_in};

/// A SQL catalog in `dir` as pyiceberg opens it.
pub(crate) fn sql_catalog(dir: &Path) -> Value {
    json!({
        "type": "sql",
        "uri": format!("sqlite:///{}", dir.join("lake/catalog.db").display()),
        "warehouse": format!("file://{}", dir.join("lake/warehouse").display()),
    })
}

/// The keys of a velo connector on that catalog, as an `iceberg://` URI's
/// query.
pub(crate) const SQL_Q: &str = "catalog_uri=sqlite:lake/catalog.db&warehouse=lake/warehouse";

/// SeaweedFS's REST catalog and S3 as pyiceberg opens them.
fn rest_catalog(weed: &Weed) -> Value {
    json!({
        "type": "rest",
        "uri": format!("http://127.0.0.1:{}", weed.iceberg),
        "warehouse": "s3://warehouse",
        "credential": format!("{}:{}", crate::common::WEED_KEY.0, crate::common::WEED_KEY.1),
        "s3.endpoint": format!("http://127.0.0.1:{}", weed.s3),
        "s3.access-key-id": crate::common::WEED_KEY.0,
        "s3.secret-access-key": crate::common::WEED_KEY.1,
        "s3.region": "us-east-1",
    })
}

/// The keys of a velo connector on SeaweedFS's REST catalog, as an
/// `iceberg://` URI's query.
fn rest_keys(weed: &Weed) -> String {
    format!(
        "catalog_uri=http://127.0.0.1:{}&warehouse=s3://warehouse&credential={}:{}",
        weed.iceberg,
        crate::common::WEED_KEY.0,
        crate::common::WEED_KEY.1
    )
}

/// Runs `dir/app.sql` against SeaweedFS (a success that prints no
/// secret); returns `table` as pyiceberg reads it there.
fn run_on_weed(weed: &Weed, dir: &Path, table: &str) -> Value {
    let env = weed.env();
    let (ok, log) = run(dir, &env);
    assert!(ok, "{log}");
    assert!(
        !log.contains(crate::common::WEED_KEY.1),
        "the secret leaked: {log}"
    );
    serde_json::from_str(&py(&rest_catalog(weed), &["read", table], &env)).unwrap()
}

/// `velo iceberg CMD TABLE` on the tests' SQL catalog, with `extra` options.
fn iceberg_cli(dir: &Path, cmd: &str, table: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "iceberg",
        cmd,
        table,
        "--catalog-uri",
        "sqlite:lake/catalog.db",
        "--warehouse",
        "lake/warehouse",
    ];
    args.extend_from_slice(extra);
    run_in(dir, &args, &[])
}

/// Runs `tests/lake/iceberg.py` against `catalog`, with `env`.
pub(crate) fn py(catalog: &Value, args: &[&str], env: &[(String, String)]) -> String {
    let python = std::env::var("VELO_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lake/iceberg.py");
    let mut c = std::process::Command::new(python);
    c.arg(script)
        .args(args)
        .env("ICEBERG_CATALOG", catalog.to_string());
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("python runs");
    assert!(
        o.status.success(),
        "iceberg.py {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The table as pyiceberg reads it.
fn read(catalog: &Value, table: &str) -> Value {
    serde_json::from_str(&py(catalog, &["read", table], &[])).unwrap()
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

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Orders in a CSV file, appended to a table partitioned by day and by a
/// bucket of the id over several epochs: pyiceberg and DuckDB read every
/// row once, the spec is the one asked for, and every epoch is one append
/// snapshot whose summary names the job and the epoch.
#[test]
fn a_partitioned_table_is_created_and_appended_to() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut csv = String::from("id,region,amount,ts\n");
    for i in 0..100 {
        csv += &format!(
            "{i},{},{}.5,2026-12-0{}T10:00:00Z\n",
            ["eu", "us", "apac"][i % 3],
            i,
            1 + i % 3
        );
    }
    std::fs::write(dir.join("orders.csv"), csv).unwrap();
    std::fs::write(
        dir.join("app.sql"),
        "CREATE STREAM copy AS SELECT id, region, amount, CAST(ts AS TIMESTAMP) AS ts FROM orders INTO lake
             WITH ('orders.type' = 'file_source', 'orders.path' = 'orders.csv', 'batch.size' = '25',
                   'lake.type' = 'iceberg_sink', 'lake.table' = 'sales.orders',
                   'lake.catalog_uri' = 'sqlite:lake/catalog.db', 'lake.warehouse' = 'lake/warehouse',
                   'lake.partition_by' = 'day(ts), bucket(4, id)');",
    )
    .unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(ok, "{log}");
    let cat = sql_catalog(dir);
    let t = read(&cat, "sales.orders");
    let rows = t["rows"].as_array().unwrap();
    assert_eq!(ids(rows, "id"), (0..100).collect::<Vec<_>>());
    assert!(rows.iter().all(|r| r["region"].as_str().unwrap()
        == ["eu", "us", "apac"][r["id"].as_u64().unwrap() as usize % 3]));
    assert_eq!(
        t["partition"],
        json!([
            {"name": "ts_day", "transform": "day"},
            {"name": "id_bucket", "transform": "bucket[4]"}
        ])
    );
    let snaps = t["snapshots"].as_array().unwrap();
    assert_eq!(
        snaps.len(),
        4,
        "one snapshot per epoch of 25 rows: {snaps:?}"
    );
    for (i, s) in snaps.iter().enumerate() {
        assert_eq!(s["operation"], "append");
        assert_eq!(s["summary"]["velo.job"], "copy");
        assert_eq!(s["summary"]["velo.epoch"], (i + 1).to_string());
    }
    // three days times up to four buckets: one file per partition per epoch
    assert!(t["files"].as_u64().unwrap() >= 12, "{}", t["files"]);
    // DuckDB agrees
    let duck: Vec<Value> = serde_json::from_str(&py(&cat, &["duck", "sales.orders"], &[])).unwrap();
    assert_eq!(ids(&duck, "id"), (0..100).collect::<Vec<_>>());
    // the iceberg:// URI names the same kind of sink; a second job appends
    std::fs::write(
        dir.join("app.sql"),
        format!(
            "CREATE STREAM again AS SELECT id, region, amount, CAST(ts AS TIMESTAMP) AS ts FROM orders
             INTO 'iceberg://sales.orders?{SQL_Q}' WITH ('orders.type' = 'file_source', 'orders.path' = 'orders.csv');"
        ),
    )
    .unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(ok, "{log}");
    assert_eq!(
        read(&cat, "sales.orders")["rows"].as_array().unwrap().len(),
        200
    );
}

/// The windowed job of the other crash tests, into an Iceberg table with
/// `use_transactions`.
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
                   'lake.type' = 'iceberg_sink', 'lake.table' = 'stats.windows',
                   'lake.catalog_uri' = 'sqlite:lake/catalog.db', 'lake.warehouse' = 'lake/warehouse');"
        ),
    )
    .unwrap();
}

/// Every one of the 60 windows in the table once, with its 100 records;
/// the table's property for the job holds the run's last epoch.
fn assert_windows_once(dir: &Path) -> Value {
    let t = read(&sql_catalog(dir), "stats.windows");
    crate::common::assert_each_window_once(t["rows"].as_array().unwrap());
    assert!(
        t["properties"]["velo.epoch.w"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0,
        "{}",
        t["properties"]
    );
    t
}

/// Crashed right after two of its checkpoints (before the Iceberg commit),
/// the job commits the checkpointed epoch on restart, once: every window
/// is in the table exactly once, a finished run started again adds
/// nothing, and without its checkpoint the job refuses to write again.
#[test]
fn a_crash_between_checkpoint_and_commit_loses_and_duplicates_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    windowed_app(dir, "");
    let log = crash_and_resume_with(dir, &["3", "7"], &[]);
    assert!(
        log.contains("committing the checkpoint's epoch to the Iceberg table"),
        "the restart finished the crashed run's commit: {log}"
    );
    let t = assert_windows_once(dir);
    let (ok, log) = run(dir, &[]);
    assert!(ok, "{log}");
    let again = read(&sql_catalog(dir), "stats.windows");
    assert_eq!(again["current"], t["current"], "nothing new: {log}");
    std::fs::remove_dir_all(dir.join("state")).unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(!ok, "a run without its checkpoint must not write again");
    assert!(log.contains("already holds epoch"), "{log}");
    assert_eq!(
        read(&sql_catalog(dir), "stats.windows")["current"],
        t["current"]
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
    assert_windows_once(dir);
}

/// A query with a column the table lacks: refused by default with what to
/// do; `schema.mode = 'merge'` adds it (older rows read it as null).
#[test]
fn new_columns_are_refused_or_merged_by_schema_mode() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cat = sql_catalog(dir);
    py(
        &cat,
        &["write", "crm.people", r#"[{"id": 1, "name": "ann"}]"#],
        &[],
    );
    std::fs::write(
        dir.join("in.jsonl"),
        "{\"id\":2,\"name\":\"bob\",\"city\":\"oslo\"}\n",
    )
    .unwrap();
    let app = |mode: &str| {
        format!(
            "CREATE STREAM p AS SELECT id, name, city FROM src INTO 'iceberg://crm.people?{SQL_Q}{mode}'
             WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl');"
        )
    };
    std::fs::write(dir.join("app.sql"), app("")).unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(!ok, "strict refuses a new column");
    assert!(
        log.contains("no column(s) city") && log.contains("schema.mode = 'merge'"),
        "{log}"
    );
    assert_eq!(
        read(&cat, "crm.people")["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    std::fs::write(dir.join("app.sql"), app("&schema.mode=merge")).unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(ok, "{log}");
    let t = read(&cat, "crm.people");
    assert_eq!(t["columns"], json!(["id", "name", "city"]));
    let mut rows = t["rows"].as_array().unwrap().clone();
    rows.sort_by_key(|r| r["id"].as_i64());
    assert_eq!(
        Value::Array(rows),
        json!([
            {"id": 1, "name": "ann", "city": null},
            {"id": 2, "name": "bob", "city": "oslo"}
        ])
    );
}

/// A table pyiceberg wrote in three appends: read as of its first
/// snapshot (time travel); followed from its snapshot while pyiceberg
/// appends, stopped and resumed from the checkpoint (nothing read twice or
/// missed); a delete stops a follower with an error that says why.
#[test]
fn the_source_reads_snapshots_and_follows_appends() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cat = sql_catalog(dir);
    let append = |from: i64| -> i64 {
        let rows: Vec<Value> = (from..from + 3)
            .map(|i| json!({"id": i, "v": format!("r{i}")}))
            .collect();
        py(
            &cat,
            &["write", "src.events", &Value::Array(rows).to_string()],
            &[],
        )
        .trim()
        .parse()
        .unwrap()
    };
    let first = append(1);
    append(4);
    append(7);
    std::fs::write(
        dir.join("app.sql"),
        format!(
            "CREATE STREAM tt AS SELECT id, v FROM 'iceberg://src.events?{SQL_Q}&snapshot_id={first}' INTO out
             WITH ('out.type' = 'file_sink', 'out.path' = 'first.jsonl');"
        ),
    )
    .unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(ok, "{log}");
    assert_eq!(ids(&jsonl(&dir.join("first.jsonl")), "id"), vec![1, 2, 3]);
    // the current snapshot, with a filter and a projection
    std::fs::write(
        dir.join("app.sql"),
        format!(
            "CREATE STREAM now AS SELECT id FROM 'iceberg://src.events?{SQL_Q}' WHERE id > 2 INTO out
             WITH ('out.type' = 'file_sink', 'out.path' = 'now.jsonl');"
        ),
    )
    .unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(ok, "{log}");
    assert_eq!(
        ids(&jsonl(&dir.join("now.jsonl")), "id"),
        (3..10).collect::<Vec<_>>()
    );
    // a time before the table: a clear error
    std::fs::write(
        dir.join("app.sql"),
        format!(
            "CREATE STREAM tt AS SELECT id FROM 'iceberg://src.events?{SQL_Q}&timestamp=2000-01-01' INTO out
             WITH ('out.type' = 'stdout');"
        ),
    )
    .unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(
        !ok && log.contains("has no snapshot as of 2000-01-01"),
        "{log}"
    );

    // snapshot, then follow: into another Iceberg table, read by pyiceberg
    std::fs::write(
        dir.join("app.sql"),
        "CREATE STREAM live AS SELECT id, v FROM src INTO out
             WITH ('src.type' = 'iceberg_source', 'src.table' = 'src.events', 'src.mode' = 'snapshot_and_follow',
                   'src.catalog_uri' = 'sqlite:lake/catalog.db', 'src.warehouse' = 'lake/warehouse',
                   'src.poll_interval' = '100ms', 'use_transactions' = 'true', 'batch.timeout' = '200ms',
                   'out.type' = 'iceberg_sink', 'out.table' = 'copy.events',
                   'out.catalog_uri' = 'sqlite:lake/catalog.db', 'out.warehouse' = 'lake/warehouse');"
    )
    .unwrap();
    let count = || -> usize {
        let out = std::process::Command::new(
            std::env::var("VELO_PYTHON").unwrap_or_else(|_| "python3".into()),
        )
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lake/iceberg.py"))
        .args(["read", "copy.events"])
        .env("ICEBERG_CATALOG", cat.to_string())
        .output()
        .unwrap();
        if !out.status.success() {
            return 0;
        }
        let t: Value = serde_json::from_slice(&out.stdout).unwrap();
        t["rows"].as_array().unwrap().len()
    };
    let child = crate::lake::start_example(dir, &[]);
    let mut appended = false;
    crate::lake::stop_when(child, || {
        let n = count();
        if n == 9 && !appended {
            append(10);
            appended = true;
        }
        n == 12
    });
    append(13);
    append(16);
    let child = crate::lake::start_example(dir, &[]);
    crate::lake::stop_when(child, || count() >= 18);
    let rows = read(&cat, "copy.events")["rows"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        ids(&rows, "id"),
        (1..19).collect::<Vec<_>>(),
        "every row once across the stop"
    );
    // a delete in the followed table stops the job with the reason
    py(&cat, &["delete", "src.events", "id", "2"], &[]);
    let (ok, log) = run(dir, &[]);
    assert!(!ok, "a followed table's delete fails the job");
    assert!(
        log.contains("deletes rows") || log.contains("overwrites rows"),
        "{log}"
    );
}

/// SeaweedFS's REST catalog with its tables on its S3: a table written by
/// velo is read by pyiceberg, and read back by velo's source.
#[test]
fn a_rest_catalog_on_s3_is_written_and_read() {
    let weed = Weed::start();
    let env = weed.env();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut input = String::new();
    for i in 0..50 {
        input += &format!("{{\"id\":{i},\"kind\":\"k{}\"}}\n", i % 4);
    }
    std::fs::write(dir.join("in.jsonl"), input).unwrap();
    let keys = rest_keys(&weed);
    std::fs::write(
        dir.join("app.sql"),
        format!(
            "CREATE STREAM up AS SELECT id, kind FROM src INTO 'iceberg://lakehouse.events?{keys}&partition_by=kind'
             WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl', 'batch.size' = '20');"
        ),
    )
    .unwrap();
    let t = run_on_weed(&weed, dir, "lakehouse.events");
    assert_eq!(
        ids(t["rows"].as_array().unwrap(), "id"),
        (0..50).collect::<Vec<_>>()
    );
    assert_eq!(t["snapshots"].as_array().unwrap().len(), 3);
    assert!(
        t["metadata"]
            .as_str()
            .unwrap()
            .starts_with("s3://warehouse/"),
        "{}",
        t["metadata"]
    );
    // and back through velo's source
    std::fs::write(
        dir.join("app.sql"),
        format!(
            "CREATE STREAM down AS SELECT id, kind FROM 'iceberg://lakehouse.events?{keys}' INTO out
             WITH ('out.type' = 'file_sink', 'out.path' = 'back.jsonl');"
        ),
    )
    .unwrap();
    let (ok, log) = run(dir, &env);
    assert!(ok, "{log}");
    let back = jsonl(&dir.join("back.jsonl"));
    assert_eq!(ids(&back, "id"), (0..50).collect::<Vec<_>>());
    // a wrong secret: a failed run that names the table, the secret unprinted
    std::fs::write(
        dir.join("app.sql"),
        format!(
            "CREATE STREAM bad AS SELECT id, kind FROM src INTO 'iceberg://lakehouse.events?catalog_uri=http://127.0.0.1:{}&warehouse=s3://warehouse&credential={}:WrongSecret987'
             WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl');",
            weed.iceberg,
            crate::common::WEED_KEY.0
        ),
    )
    .unwrap();
    let (ok, log) = run(dir, &env);
    assert!(!ok, "a wrong credential fails the run: {log}");
    assert!(log.contains("lakehouse.events"), "{log}");
    assert!(!log.contains("WrongSecret987"), "the secret leaked: {log}");
    assert!(
        back.iter()
            .all(|r| r["kind"].as_str().unwrap() == format!("k{}", r["id"].as_i64().unwrap() % 4))
    );
}

/// What a careless or hostile user gets: a clear error naming what to
/// write, a failed exit, and never the secret.
#[test]
fn iceberg_mistakes_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("in.jsonl"), "{\"id\":1}\n").unwrap();
    let sink = |keys: &str| {
        format!(
            "CREATE STREAM a AS SELECT id FROM src INTO lake WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl', 'lake.type' = 'iceberg_sink', {keys});"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (sink("'lake.table' = 'orders', 'lake.catalog_uri' = 'http://127.0.0.1:1'"), "namespace.table"),
        (sink("'lake.table' = 'a.b'"), "catalog_uri"),
        (sink("'lake.table' = 'a.b', 'lake.catalog_uri' = 'thrift://hive:9083'"), "REST catalog's http(s)"),
        (sink("'lake.table' = 'a.b', 'lake.catalog_uri' = 'sqlite:c.db'"), "a SQL catalog needs one"),
        (
            sink("'lake.table' = 'a.b', 'lake.catalog_uri' = 'sqlite:c.db', 'lake.warehouse' = 'w', 'lake.partition_by' = 'week(id)'"),
            "not a partition transform",
        ),
        (
            sink("'lake.table' = 'a.b', 'lake.catalog_uri' = 'sqlite:c.db', 'lake.warehouse' = 'w', 'lake.partition_by' = 'day(region)'"),
            "partition_by names 'region'",
        ),
        (
            sink("'lake.table' = 'a.b', 'lake.catalog_uri' = 'http://127.0.0.1:1', 'lake.token' = 'SuperSecret123'"),
            "a.b",
        ),
        (
            "CREATE STREAM a AS SELECT id FROM src INTO out WITH ('src.type' = 'iceberg_source', 'src.table' = 'no.such', 'src.catalog_uri' = 'sqlite:c.db', 'src.warehouse' = 'w', 'out.type' = 'stdout');".into(),
            "cannot load the Iceberg table default.no.such",
        ),
        (
            "CREATE STREAM a AS SELECT id FROM src INTO out WITH ('src.type' = 'iceberg_source', 'src.table' = 'a.b', 'src.catalog_uri' = 'sqlite:c.db', 'src.warehouse' = 'w', 'src.mode' = 'follow', 'src.snapshot_id' = '3', 'out.type' = 'stdout');".into(),
            "starting_snapshot_id",
        ),
        (
            sink("'lake.table' = 'a.b', 'lake.catalog_uri' = 'sqlite:c.db', 'lake.warehouse' = 'w', 'lake.target_file_size' = 'big'"),
            "target_file_size",
        ),
        (
            sink("'lake.table' = 'a.b', 'lake.catalog_uri' = 'sqlite:c.db', 'lake.warehouse' = 'w', 'lake.mode' = 'sideways'"),
            "expected one of append, merge, upsert",
        ),
        (
            sink("'lake.table' = 'a.b', 'lake.catalog_uri' = 'sqlite:c.db', 'lake.warehouse' = 'w', 'lake.mode' = 'append', 'lake.merge_on' = 'id'"),
            "merge_on makes every row replace the row of its key",
        ),
        (
            sink("'lake.table' = 'm.k', 'lake.catalog_uri' = 'sqlite:c.db', 'lake.warehouse' = 'w', 'lake.merge_on' = 'nope'"),
            "the merge key 'nope' is not a column of the Iceberg table default.m.k",
        ),
        (
            sink("'lake.table' = 'a.b', 'lake.catalog_uri' = 'sqlite:c.db', 'lake.warehouse' = 'w', 'lake.compact_interval' = 'often'"),
            "compact_interval",
        ),
    ];
    for (sql, want) in &cases {
        std::fs::write(dir.join("app.sql"), sql).unwrap();
        let (ok, log) = run(dir, &[]);
        assert!(!ok, "{sql} must fail");
        assert!(log.contains(want), "{sql}: wants {want:?} in: {log}");
        assert!(!log.contains("SuperSecret123"), "the secret leaked: {log}");
    }
}

/// A long-running sink does not grow the metadata without end: with
/// `expire_interval = 3` and no age to keep, each third commit expires all
/// but the latest `min_snapshots`; `velo iceberg expire` does the same by
/// hand; the rows stay.
#[test]
fn old_snapshots_are_expired_by_the_sink_and_the_command_line() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut input = String::new();
    for i in 0..100 {
        input += &format!("{{\"id\":{i}}}\n");
    }
    std::fs::write(dir.join("in.jsonl"), input).unwrap();
    let app = |extra: &str| {
        format!(
            "CREATE STREAM e AS SELECT id FROM src INTO lake
             WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl', 'batch.size' = '10',
                   'lake.type' = 'iceberg_sink', 'lake.table' = 'ops.ids',
                   'lake.catalog_uri' = 'sqlite:lake/catalog.db', 'lake.warehouse' = 'lake/warehouse'{extra});"
        )
    };
    let cat = sql_catalog(dir);
    // no expiry: one snapshot per epoch
    std::fs::write(dir.join("app.sql"), app(", 'lake.expire_interval' = '0'")).unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(ok, "{log}");
    assert_eq!(
        read(&cat, "ops.ids")["snapshots"].as_array().unwrap().len(),
        10
    );
    // the command line keeps the latest 4
    let o = iceberg_cli(
        dir,
        "expire",
        "ops.ids",
        &["--older-than", "0s", "--retain", "4"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("expired 6 snapshots"));
    let t = read(&cat, "ops.ids");
    assert_eq!(t["snapshots"].as_array().unwrap().len(), 4);
    assert_eq!(t["rows"].as_array().unwrap().len(), 100);
    // the sink: ten more epochs, expiring every third commit down to 2
    std::fs::write(
        dir.join("app.sql"),
        app(", 'lake.expire_interval' = '3', 'lake.snapshot_max_age' = '0s', 'lake.min_snapshots' = '2'"),
    )
    .unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(ok, "{log}");
    let t = read(&cat, "ops.ids");
    let n = t["snapshots"].as_array().unwrap().len();
    assert!(
        n <= 3,
        "expired to the latest 2, plus at most one commit since: {n}"
    );
    assert_eq!(t["rows"].as_array().unwrap().len(), 200);
}

/// An updating result (GROUP BY ... EMIT CHANGES, with HAVING deleting the
/// groups that pass 200) into a partitioned table is applied by key every
/// epoch as one overwrite snapshot (copy-on-write: no delete files): the
/// table is the batch answer, each key once, for pyiceberg and DuckDB;
/// crashed between checkpoint and commit, the epoch is committed once.
#[test]
fn an_updating_result_is_upserted_by_key() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let want = crate::common::customer_orders(dir);
    std::fs::write(
        dir.join("app.sql"),
        "CREATE TABLE totals AS SELECT customer, COUNT(*) AS n, SUM(amount) AS total
         FROM orders GROUP BY customer HAVING SUM(amount) < 200 EMIT CHANGES INTO lake
         WITH ('orders.type' = 'file_source', 'orders.path' = 'orders.jsonl', 'batch.size' = '30',
               'use_transactions' = 'true', 'state.dir' = 'state',
               'lake.type' = 'iceberg_sink', 'lake.table' = 'shop.totals',
               'lake.catalog_uri' = 'sqlite:lake/catalog.db', 'lake.warehouse' = 'lake/warehouse',
               'lake.partition_by' = 'bucket(2, customer)');",
    )
    .unwrap();
    let log = crash_and_resume_with(dir, &["4"], &[]);
    assert!(
        log.contains("committing the checkpoint's epoch to the Iceberg table"),
        "{log}"
    );
    let cat = sql_catalog(dir);
    let t = read(&cat, "shop.totals");
    assert_eq!(
        crate::common::customer_totals(t["rows"].as_array().unwrap()),
        want
    );
    let snaps = t["snapshots"].as_array().unwrap();
    let overwrites: Vec<&Value> = snaps
        .iter()
        .filter(|s| s["operation"] == "overwrite")
        .collect();
    assert!(
        overwrites.len() >= 5,
        "one overwrite per epoch that changed rows: {snaps:?}"
    );
    let mut epochs: Vec<u64> = snaps
        .iter()
        .map(|s| {
            s["summary"]["velo.epoch"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let n = epochs.len();
    epochs.dedup();
    assert_eq!(epochs.len(), n, "each epoch once: {snaps:?}");
    for s in &overwrites {
        assert_eq!(
            s["summary"]["total-delete-files"], "0",
            "copy-on-write: {s}"
        );
        assert!(
            s["summary"]["deleted-data-files"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 0,
            "{s}"
        );
    }
    let last = snaps.last().unwrap();
    assert_eq!(
        last["summary"]["total-records"],
        want.len().to_string(),
        "{last}"
    );
    let duck: Vec<Value> = serde_json::from_str(&py(&cat, &["duck", "shop.totals"], &[])).unwrap();
    assert_eq!(crate::common::customer_totals(&duck), want);
}

/// `merge_on` over plain rows into a table pyiceberg created and filled:
/// each row replaces the row of its key, the others stay; the sink's
/// `compact_interval` and `velo iceberg compact` rewrite the small files
/// into fewer without changing a row, as replace snapshots.
#[test]
fn merge_on_replaces_rows_and_compaction_keeps_them() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cat = sql_catalog(dir);
    // ids 0..15: the first two epochs add keys in new files (appends), which
    // the sink then compacts; the third changes keys of those files
    let initial: Vec<Value> = (0..15)
        .map(|i| json!({"id": i, "v": format!("old{i}")}))
        .collect();
    py(
        &cat,
        &["write", "inv.items", &Value::Array(initial).to_string()],
        &[],
    );
    let mut input = String::new();
    for i in (15..25).chain(16..18) {
        input += &format!("{{\"id\":{i},\"v\":\"new{i}\"}}\n");
    }
    std::fs::write(dir.join("in.jsonl"), input).unwrap();
    std::fs::write(
        dir.join("app.sql"),
        format!(
            "CREATE STREAM up AS SELECT id, v FROM src INTO 'iceberg://inv.items?{SQL_Q}&merge_on=id&compact_interval=2&compact_min_files=2'
             WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl', 'batch.size' = '4');"
        ),
    )
    .unwrap();
    let (ok, log) = run(dir, &[]);
    assert!(ok, "{log}");
    let want: Vec<Value> = (0..25)
        .map(|i| json!({"id": i, "v": if i < 15 { format!("old{i}") } else { format!("new{i}") }}))
        .collect();
    let rows_of = |t: &Value| {
        let mut rows = t["rows"].as_array().unwrap().clone();
        rows.sort_by_key(|r| r["id"].as_i64());
        rows
    };
    let t = read(&cat, "inv.items");
    assert_eq!(rows_of(&t), want);
    let ops: Vec<&str> = t["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        ["append", "append", "append", "replace", "overwrite"],
        "pyiceberg's rows, two epochs of new keys, the sink's compaction, an epoch of changed keys"
    );
    // more small files, then compaction by hand
    py(
        &cat,
        &[
            "write",
            "inv.items",
            &json!([{"id": 100, "v": "x"}]).to_string(),
        ],
        &[],
    );
    py(
        &cat,
        &[
            "write",
            "inv.items",
            &json!([{"id": 101, "v": "y"}]).to_string(),
        ],
        &[],
    );
    let before = read(&cat, "inv.items");
    assert!(
        before["files"].as_u64().unwrap() >= 3,
        "{}",
        before["files"]
    );
    let o = iceberg_cli(dir, "compact", "inv.items", &["--target-file-size", "1MB"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("into 1"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let after = read(&cat, "inv.items");
    assert_eq!(after["files"], 1, "one file now");
    assert_eq!(rows_of(&after), rows_of(&before));
    assert_eq!(
        after["snapshots"].as_array().unwrap().last().unwrap()["operation"],
        "replace"
    );
    // expiry down to the latest snapshot deletes the files the upserts and
    // compactions replaced: one data file left on disk, the rows intact
    let parquet = || {
        crate::common::files_below(&dir.join("lake/warehouse"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .count()
    };
    assert!(parquet() > 3, "{}", parquet());
    let o = iceberg_cli(
        dir,
        "expire",
        "inv.items",
        &["--older-than", "0s", "--retain", "1"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        parquet(),
        1,
        "{}: {:?}",
        String::from_utf8_lossy(&o.stdout),
        crate::common::files_below(&dir.join("lake/warehouse"))
    );
    assert_eq!(rows_of(&read(&cat, "inv.items")), rows_of(&before));
    let duck: Vec<Value> = serde_json::from_str(&py(&cat, &["duck", "inv.items"], &[])).unwrap();
    assert_eq!(duck.len(), 27);
}

/// Upserts commit through a REST catalog too (its commit endpoint, with
/// an OAuth token for the credential): the table on SeaweedFS's S3 holds
/// each key once with its last value.
#[test]
fn upserts_commit_through_a_rest_catalog() {
    let weed = Weed::start();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut input = String::new();
    for i in 0..60 {
        input += &format!("{{\"id\":{},\"v\":{i}}}\n", i % 10);
    }
    std::fs::write(dir.join("in.jsonl"), input).unwrap();
    let keys = format!("{}&merge_on=id", rest_keys(&weed));
    std::fs::write(
        dir.join("app.sql"),
        format!(
            "CREATE STREAM up AS SELECT id, v FROM src INTO 'iceberg://lakehouse.latest?{keys}'
             WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl', 'batch.size' = '15');"
        ),
    )
    .unwrap();
    let t = run_on_weed(&weed, dir, "lakehouse.latest");
    let mut rows = t["rows"].as_array().unwrap().clone();
    rows.sort_by_key(|r| r["id"].as_i64());
    let want: Vec<Value> = (0..10).map(|i| json!({"id": i, "v": 50 + i})).collect();
    assert_eq!(rows, want);
    let ops: Vec<&str> = t["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        ["append", "overwrite", "overwrite", "overwrite"],
        "{t}"
    );
}

/// An upserting epoch checkpointed but not committed when another writer
/// rewrote the files it replaces (here a compaction by hand): the restart
/// refuses to commit it, with the reason and a failed exit, rather than
/// bringing back rows or dropping the epoch's changes; the table stays as
/// the other writer left it.
#[test]
fn a_staged_upsert_whose_files_were_rewritten_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // epochs of 5: ids 0-4 and 5-9 are new (two appended files), then
    // 0-2 change (an overwrite replacing the first file)
    let mut input = String::new();
    for i in (0..10).chain(0..3) {
        input += &format!("{{\"id\":{i},\"v\":{i}}}\n");
    }
    std::fs::write(dir.join("in.jsonl"), input).unwrap();
    std::fs::write(
        dir.join("app.sql"),
        format!(
            "CREATE STREAM up AS SELECT id, v FROM src INTO 'iceberg://shop.items?{SQL_Q}&merge_on=id'
             WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl', 'batch.size' = '5',
                   'use_transactions' = 'true', 'state.dir' = 'state');"
        ),
    )
    .unwrap();
    let crash = [("VELO_CRASH_AFTER_CHECKPOINT".to_string(), "3".to_string())];
    let (ok, log) = run(dir, &crash);
    assert!(
        !ok && log.contains("aborting after the checkpoint"),
        "{log}"
    );
    let o = iceberg_cli(dir, "compact", "shop.items", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("compacted 2 small files"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let cat = sql_catalog(dir);
    let compacted = read(&cat, "shop.items");
    let (ok, log) = run(dir, &[]);
    assert!(!ok, "the stale epoch must not be committed: {log}");
    assert!(
        log.contains("no longer holds")
            && log.contains("another writer changed it")
            && log.contains("cannot be committed")
            && log.contains("move the state directory away"),
        "{log}"
    );
    assert_eq!(read(&cat, "shop.items")["current"], compacted["current"]);
}

/// A bounded snapshot under an aggregate runs as one DataFusion batch plan
/// over the data files its manifests name (not those in the warehouse: a
/// copy-on-write DELETE leaves the replaced files behind): the answer and
/// the records read equal to the streaming run's.
#[test]
fn a_bounded_iceberg_aggregate_runs_as_one_batch_plan() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cat = sql_catalog(dir);
    let append = |from: i64, to: i64, create: &[&str]| {
        let rows: Vec<Value> = (from..to)
            .map(|i| {
                let day = ["d1", "d2", "d3"][(i % 3) as usize];
                json!({"id": i, "day": day, "amount": (i % 7) as f64 * 1.5})
            })
            .collect();
        let rows = Value::Array(rows).to_string();
        let mut args = vec!["write", "src.orders", rows.as_str()];
        args.extend_from_slice(create);
        py(&cat, &args, &[]);
    };
    append(0, 300, &["identity", "day"]);
    append(300, 600, &[]);
    append(600, 900, &[]);
    py(&cat, &["delete", "src.orders", "id", "3"], &[]);
    std::fs::write(
        dir.join("app.sql"),
        format!(
            "CREATE STREAM per_day AS
             SELECT day, COUNT(*) AS n, SUM(amount) AS total, MAX(id) AS top
             FROM 'iceberg://src.orders?{SQL_Q}' WHERE day <> 'd3'
             GROUP BY day ORDER BY day
             INTO out WITH ('out.type' = 'file_sink', 'out.path' = 'out.jsonl', 'use_transactions' = 'true');"
        ),
    )
    .unwrap();
    let go = |args: &[&str]| {
        let (out, _, said) = crate::common::run_and_take(dir, args);
        (out, said)
    };
    let (batch, said) = go(&[]);
    assert!(said.contains("one batch plan"), "{said}");
    let (streamed, said) = go(&["--set", "batch.size=100"]);
    assert!(!said.contains("one batch plan"), "{said}");
    assert_eq!(
        batch, streamed,
        "the batch plan answers as the streaming run"
    );
    let rows: Vec<Value> = batch
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{batch}");
    // 600 rows of d1 and d2, less the deleted id 3 (of d1)
    let n: i64 = rows.iter().map(|r| r["n"].as_i64().unwrap()).sum();
    assert_eq!(n, 599, "{batch}");
}

/// Runs an aggregate per `k` over the table `shop.items` of the catalog
/// `keys` into `per_k.jsonl`: whether it succeeded, and its log.
fn read_per_k(dir: &Path, keys: &str, env: &[(String, String)]) -> (bool, String) {
    std::fs::write(
        dir.join("app.sql"),
        format!(
            "CREATE STREAM per_k AS SELECT k, COUNT(*) AS n, SUM(v) AS v
               FROM 'iceberg://shop.items?{keys}' GROUP BY k INTO 'file://per_k.jsonl';"
        ),
    )
    .unwrap();
    run(dir, env)
}

/// The rows of a JSON Lines file ordered by the integer column `by`.
fn jsonl_by(path: &Path, by: &str) -> Vec<Value> {
    let mut rows = jsonl(path);
    rows.sort_by_key(|r| r[by].as_i64());
    rows
}

/// What [`read_per_k`] writes for a table holding `rows` (`id`, `k`, `v`).
fn per_k(rows: &[Value]) -> Vec<Value> {
    (0..7i64)
        .filter_map(|k| {
            let of_k: Vec<&Value> = rows.iter().filter(|r| r["k"] == k).collect();
            let v: i64 = of_k.iter().map(|r| r["v"].as_i64().unwrap()).sum();
            (!of_k.is_empty()).then(|| json!({"k": k, "n": of_k.len(), "v": v}))
        })
        .collect()
}

/// An application that upserts the rows of `ids` (`k` = id % 7, `v` =
/// 1000 + id, from `in.jsonl`) by `id` into `shop.items` of the catalog
/// `keys`.
fn upsert_app(dir: &Path, keys: &str, ids: &[i64]) {
    let input: String = ids
        .iter()
        .map(|i| format!("{{\"id\":{i},\"k\":{},\"v\":{}}}\n", i % 7, 1000 + i))
        .collect();
    std::fs::write(dir.join("in.jsonl"), input).unwrap();
    std::fs::write(
        dir.join("app.sql"),
        format!(
            "CREATE STREAM up AS SELECT id, k, v FROM src INTO 'iceberg://shop.items?{keys}&merge_on=id'
             WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl');"
        ),
    )
    .unwrap();
}

/// Another engine's merge-on-read table: DuckDB's iceberg extension
/// creates a table through SeaweedFS's REST catalog, then DELETEs and
/// UPDATEs rows (position-delete files, the data files left as written).
/// velo reads the snapshot with the deletes applied (its reader, not the
/// batch plan, which says why), and upserting into the table keeps them:
/// the rows DuckDB deleted stay deleted when velo rewrites their file, as
/// pyiceberg and DuckDB read it back.
#[test]
fn another_engines_delete_files_are_applied_when_reading_and_upserting() {
    let weed = Weed::start();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cat = rest_catalog(&weed);
    let env = weed.env();
    let duck = |statements: &[&str]| -> Value {
        let mut args = vec!["duckrest"];
        args.extend_from_slice(statements);
        serde_json::from_str(&py(&cat, &args, &env)).unwrap()
    };
    duck(&[
        "CREATE SCHEMA cat.shop",
        "CREATE TABLE cat.shop.items AS SELECT range AS id, range % 7 AS k, range * 10 AS v FROM range(100)",
        "DELETE FROM cat.shop.items WHERE k = 3",
        "UPDATE cat.shop.items SET v = -1 WHERE id < 5",
    ]);
    // what the table holds: ids not 3 mod 7, v = -1 below 5
    let want = |upserted: &[i64]| -> Vec<Value> {
        (0..100i64)
            .filter(|i| i % 7 != 3)
            .map(|i| {
                let v = if upserted.contains(&i) {
                    1000 + i
                } else if i < 5 {
                    -1
                } else {
                    i * 10
                };
                json!({"id": i, "k": i % 7, "v": v})
            })
            .collect()
    };
    let sorted = |rows: &Value| -> Vec<Value> {
        let mut rows = rows.as_array().unwrap().clone();
        rows.sort_by_key(|r| r["id"].as_i64());
        rows
    };
    let t: Value = serde_json::from_str(&py(&cat, &["read", "shop.items"], &env)).unwrap();
    assert_eq!(
        sorted(&t["rows"]),
        want(&[]),
        "pyiceberg reads DuckDB's deletes"
    );

    // velo reads the snapshot: an aggregate per k
    let (ok, log) = read_per_k(dir, &rest_keys(&weed), &env);
    assert!(ok, "{log}");
    assert!(
        log.contains("rather than planning it as a batch query")
            && log.contains("has delete files"),
        "{log}"
    );
    assert_eq!(jsonl_by(&dir.join("per_k.jsonl"), "k"), per_k(&want(&[])));

    // velo upserts five keys into the table DuckDB deleted from
    let upserted = [1, 7, 8, 9, 11];
    upsert_app(dir, &rest_keys(&weed), &upserted);
    let t = run_on_weed(&weed, dir, "shop.items");
    assert_eq!(
        sorted(&t["rows"]),
        want(&upserted),
        "pyiceberg after the upsert"
    );
    let counted = duck(&["SELECT COUNT(*), SUM(v), COUNT(*) FILTER (k = 3) FROM cat.shop.items"]);
    let total: i64 = want(&upserted)
        .iter()
        .map(|r| r["v"].as_i64().unwrap())
        .sum();
    assert_eq!(counted, json!([[86, total, 0]]), "DuckDB after the upsert");
}

/// Equality deletes, the merge-on-read upserts Flink writes (made here by
/// tests/lake/iceberg.py with pyiceberg's own writers; DuckDB, which reads
/// them, checks the table): velo reads the snapshot with them applied (on
/// its reader; the log says why not as a batch plan), and its upserts by
/// key keep the deleted rows deleted and bring back keys deleted before
/// (their new rows are newer than the deletes), as DuckDB reads it.
#[test]
fn equality_deletes_are_applied_when_reading_and_upserting() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cat = sql_catalog(dir);
    let rows: Vec<Value> = (0..100i64)
        .map(|i| json!({"id": i, "k": i % 7, "v": i * 10}))
        .collect();
    py(
        &cat,
        &["write", "shop.items", &Value::Array(rows).to_string()],
        &[],
    );
    py(&cat, &["eqdelete", "shop.items", "k", "3"], &[]);
    py(&cat, &["eqdelete", "shop.items", "id", "20", "21"], &[]);
    // the rows: none with k = 3, nor ids 20 and 21, but those upserted
    let want = |upserted: &[i64]| -> Vec<Value> {
        (0..100i64)
            .filter(|i| upserted.contains(i) || (i % 7 != 3 && *i != 20 && *i != 21))
            .map(|i| {
                let v = if upserted.contains(&i) {
                    1000 + i
                } else {
                    i * 10
                };
                json!({"id": i, "k": i % 7, "v": v})
            })
            .collect()
    };
    let duck = || -> Vec<Value> {
        let mut rows: Vec<Value> =
            serde_json::from_str(&py(&cat, &["duck", "shop.items"], &[])).unwrap();
        rows.sort_by_key(|r| r["id"].as_i64());
        rows
    };
    assert_eq!(duck(), want(&[]), "DuckDB applies the equality deletes");

    // velo reads the snapshot: an aggregate per k
    let (ok, log) = read_per_k(dir, SQL_Q, &[]);
    assert!(ok, "{log}");
    assert!(log.contains("has delete files"), "{log}");
    assert_eq!(jsonl_by(&dir.join("per_k.jsonl"), "k"), per_k(&want(&[])));

    // velo upserts: 5 and 22 are in the table, 17 (k = 3) and 20 deleted
    let upserted = [5, 17, 20, 22];
    upsert_app(dir, SQL_Q, &upserted);
    let (ok, log) = run(dir, &[]);
    assert!(ok, "{log}");
    assert_eq!(duck(), want(&upserted), "DuckDB after the upsert");
}
