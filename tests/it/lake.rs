//! The file connector on an object store: moto's S3 server on 127.0.0.1,
//! the inputs written and the outputs read back by boto3 and pyarrow
//! (`tests/lake/s3.py`), never by velo's own code.

use std::path::Path;

use serde_json::Value;

use crate::common::{Azurite, FakeGcs, Moto, crash_and_resume_with, run_in};

/// Runs `tests/lake/s3.py` against `moto`.
pub(crate) fn s3py(moto: &Moto, args: &[&str]) -> String {
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let mut all = vec![endpoint.as_str()];
    all.extend_from_slice(args);
    lake_py("s3.py", &all)
}

/// Runs `tests/lake/SCRIPT ARGS` (the object stores' independent
/// clients); its output.
fn lake_py(script: &str, args: &[&str]) -> String {
    let python = std::env::var("VELO_PYTHON").unwrap_or_else(|_| "python3".into());
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/lake")
        .join(script);
    let o = std::process::Command::new(python)
        .arg(path)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        o.status.success(),
        "{script} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The objects the README's object-store example reads.
pub fn seed_readme(moto: &Moto) {
    let d = tempfile::tempdir().unwrap();
    let csv = d.path().join("o.csv");
    std::fs::write(&csv, "id,amount,region\n1,5.0,eu\n2,7.5,us\n").unwrap();
    s3py(
        moto,
        &[
            "put",
            "lake",
            "orders/region=eu/o.csv",
            csv.to_str().unwrap(),
        ],
    );
    let gz = d.path().join("e.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, b"{\"id\":1,\"kind\":\"click\"}\n").unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    s3py(
        moto,
        &["put", "lake", "events/e.jsonl.gz", gz.to_str().unwrap()],
    );
}

/// How many objects a run wrote into the bucket `lake` (under `out/` or
/// `archive/`).
pub fn objects_written(moto: &Moto) -> usize {
    dump(moto, "lake", "out/").0.len() + dump(moto, "lake", "archive/").0.len()
}

/// Every object key under `prefix` and the rows of the published ones.
fn dump(moto: &Moto, bucket: &str, prefix: &str) -> (Vec<String>, Vec<Value>) {
    keys_and_rows(&s3py(moto, &["dump", bucket, prefix]))
}

/// The keys and rows of a `dump` document (tests/lake/s3.py, blob.py).
fn keys_and_rows(doc: &str) -> (Vec<String>, Vec<Value>) {
    let v: Value = serde_json::from_str(doc).unwrap();
    let keys = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    (keys, v["rows"].as_array().unwrap().clone())
}

fn ids(rows: &[Value]) -> Vec<i64> {
    let mut v: Vec<i64> = rows
        .iter()
        .map(|r| match &r["id"] {
            Value::String(s) => s.parse().unwrap(),
            other => other.as_i64().unwrap(),
        })
        .collect();
    v.sort();
    v
}

/// Globs over prefixes, Hive directories as columns, hidden and `_`
/// objects skipped, gzip JSON Lines streamed, Parquet read by ranges with
/// its projection; written back as JSON Lines and transactional Parquet
/// objects, named both ways (URI and `s3` type with `bucket`/`prefix`).
#[test]
fn s3_files_are_read_and_written_like_local_ones() {
    let moto = Moto::start("lake");
    s3py(&moto, &["seed", "lake"]);
    let json_sink = "jout WITH ('jout.type' = 's3_sink', 'jout.bucket' = 'lake', \
                     'jout.prefix' = 'out/json/', 'jout.format' = 'jsonl')";
    run_lake_app("s3://lake", json_sink, &moto.env());
    check_lake_outputs("s3://lake", |prefix| dump(&moto, "lake", prefix));
}

/// The same application on Azure Blob Storage (`az://container/...`,
/// Azurite from npm, Microsoft's Python SDK writing the inputs and reading
/// the outputs): one code path for every store, transactional Parquet
/// (staged objects copied into place at the commit) included.
#[test]
fn azure_files_are_read_and_written_like_s3_ones() {
    let azurite = Azurite::start();
    let endpoint = azurite.endpoint();
    blobpy(&["azure", &endpoint, "seed", "lake"]);
    let json_sink = "'az://lake/out/json/?format=jsonl'";
    run_lake_app("az://lake", json_sink, &azurite.env());
    check_lake_outputs("az://lake", |prefix| {
        blob_dump(&["azure", &endpoint, "dump", "lake", prefix])
    });
}

/// Google Cloud Storage (`gs://bucket/...`) read through fake-gcs-server
/// (PyPI, the inputs uploaded through Google's JSON API): globs, Hive
/// columns, gzip JSON Lines and Parquet ranges as on S3. fake-gcs-server
/// has no XML API uploads, which `object_store` writes with, so here a
/// write to `gs://` must fail the run (exit 2, an external failure),
/// saying what the store answered, with nothing published; real GCS
/// writes are not tested here.
#[test]
fn gcs_files_are_read_like_s3_ones_and_a_refused_write_fails_the_run() {
    let gcs = FakeGcs::start();
    let endpoint = gcs.endpoint();
    blobpy(&["gcs", &endpoint, "seed", "lake"]);
    let d = tempfile::tempdir().unwrap();
    let app = "
CREATE STREAM by_region AS SELECT CAST(id AS BIGINT) AS id, amount, region, _file_name AS f
  FROM csvin INTO 'file://out/csv/?format=jsonl' WITH (
    'csvin.type' = 'file_source', 'csvin.path' = 'gs://lake/in/csv/**/*.csv',
    'csvin.metadata_columns' = 'true');
CREATE STREAM names AS SELECT id, name FROM 'gs://lake/in/json/*.jsonl.gz' INTO 'file://out/json/?format=jsonl';
CREATE STREAM even AS SELECT id FROM 'gs://lake/in/pq/t.parquet' WHERE v = 3 INTO 'file://out/pq/?format=jsonl';
";
    std::fs::write(d.path().join("app.sql"), app).unwrap();
    let o = run_in(d.path(), &["run", "app.sql"], &gcs.env());
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    let rows = |dir: &str| -> Vec<Value> {
        let base = d.path().join(dir);
        crate::common::files_below(&base)
            .iter()
            .flat_map(|f| {
                crate::common::read_text(&base.join(f))
                    .lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let csv = rows("out/csv");
    assert_eq!(ids(&csv), (0..120).collect::<Vec<_>>());
    for r in &csv {
        let region = if r["id"].as_i64().unwrap() < 50 {
            "eu"
        } else {
            "us"
        };
        assert_eq!(r["region"], region, "{r}");
        assert_eq!(
            r["f"],
            format!("gs://lake/in/csv/region={region}/part-0.csv")
        );
    }
    assert_eq!(ids(&rows("out/json")), (0..300).collect::<Vec<_>>());
    let want: Vec<i64> = (0..10_000).filter(|i| i % 7 == 3).collect();
    assert_eq!(ids(&rows("out/pq")), want);

    std::fs::write(
        d.path().join("write.sql"),
        "CREATE STREAM w AS SELECT id FROM 'gs://lake/in/pq/t.parquet'
           INTO 'gs://lake/out/pq/?format=parquet' WITH ('use_transactions' = 'true');",
    )
    .unwrap();
    let o = run_in(d.path(), &["run", "write.sql"], &gcs.env());
    let log = String::from_utf8_lossy(&o.stderr);
    // exit 2: an external failure, the records not written counted
    assert_eq!(o.status.code(), Some(2), "{log}");
    assert!(
        log.contains("cannot upload 'gs://lake/out/pq/")
            && log.contains("invalid uploadType")
            && log.contains("10000 records read were not written"),
        "{log}"
    );
    let (keys, rows) = blob_dump(&["gcs", &endpoint, "dump", "lake", "out/"]);
    assert!(rows.is_empty(), "nothing published: {keys:?}");
}

/// Runs `tests/lake/blob.py ARGS` (the Azure and GCS clients).
fn blobpy(args: &[&str]) -> String {
    lake_py("blob.py", args)
}

/// `blob.py ... dump`'s keys and rows.
fn blob_dump(args: &[&str]) -> (Vec<String>, Vec<Value>) {
    keys_and_rows(&blobpy(args))
}

/// The object-store application on `root` (`s3://lake`, `az://lake`):
/// `json_sink` is the `INTO` of its JSON Lines statement.
fn run_lake_app(root: &str, json_sink: &str, env: &[(String, String)]) {
    let d = tempfile::tempdir().unwrap();
    let app = format!(
        "
CREATE STREAM by_region AS SELECT CAST(id AS BIGINT) AS id, amount, region, _file_name AS f
  FROM csvin INTO '{root}/out/csv/?format=jsonl' WITH (
    'csvin.type' = 'file_source', 'csvin.path' = '{root}/in/csv/**/*.csv',
    'csvin.metadata_columns' = 'true');
CREATE STREAM names AS SELECT id, name FROM '{root}/in/json/*.jsonl.gz' INTO {json_sink};
CREATE STREAM even AS SELECT id FROM '{root}/in/pq/t.parquet' WHERE v = 3
  INTO '{root}/out/pq/*.parquet' WITH ('use_transactions' = 'true');
CREATE STREAM parts AS SELECT CAST(id AS BIGINT) AS id, region FROM '{root}/in/csv/**/*.csv'
  INTO '{root}/out/parts/?format=parquet&partition_by=region';
"
    );
    std::fs::write(d.path().join("app.sql"), app).unwrap();
    let o = run_in(d.path(), &["run", "app.sql"], env);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
}

/// What [`run_lake_app`] must have written under `root`, read by `dump`
/// (a prefix's keys and published rows, from the store's own client).
fn check_lake_outputs(root: &str, dump: impl Fn(&str) -> (Vec<String>, Vec<Value>)) {
    // CSV: 120 rows, each with its region from the directory and its object
    let (keys, rows) = dump("out/csv/");
    assert!(
        !keys.is_empty() && keys.iter().all(|k| k.ends_with(".jsonl")),
        "{keys:?}"
    );
    assert_eq!(ids(&rows), (0..120).collect::<Vec<_>>());
    for r in &rows {
        let id = r["id"].as_i64().unwrap();
        let region = if id < 50 { "eu" } else { "us" };
        assert_eq!(r["region"], region, "{r}");
        assert_eq!(
            r["f"],
            format!("{root}/in/csv/region={region}/part-0.csv"),
            "{r}"
        );
        assert_eq!(r["amount"].as_f64().unwrap(), id as f64 * 1.5);
    }
    // gzip JSON Lines
    let (_, rows) = dump("out/json/");
    assert_eq!(ids(&rows), (0..300).collect::<Vec<_>>());
    assert!(rows.iter().all(|r| r["name"] == format!("n{}", r["id"])));
    // Parquet through a transaction: only published objects, nothing hidden left
    let (keys, rows) = dump("out/pq/");
    assert!(
        !keys.is_empty()
            && keys
                .iter()
                .all(|k| k.starts_with("out/pq/part-") && k.ends_with(".parquet")),
        "{keys:?}"
    );
    let want: Vec<i64> = (0..10_000).filter(|i| i % 7 == 3).collect();
    assert_eq!(ids(&rows), want);
    // partition_by: Hive directories, the column out of the files
    let (keys, rows) = dump("out/parts/");
    for k in &keys {
        let ok = ["eu", "us"].iter().any(|r| {
            k.starts_with(&format!("out/parts/region={r}/part-")) && k.ends_with(".parquet")
        });
        assert!(ok, "{keys:?}");
    }
    assert_eq!(ids(&rows), (0..120).collect::<Vec<_>>());
    for r in &rows {
        assert!(
            r.get("region").is_none(),
            "the column is in the directory: {r}"
        );
        let dir = if r["id"].as_i64().unwrap() < 50 {
            "region=eu"
        } else {
            "region=us"
        };
        assert!(r["_object"].as_str().unwrap().contains(dir), "{r}");
    }
}

/// A local partitioned output, read back by DuckDB with Hive partitioning:
/// the same counts and sums per (day, region) as the input.
#[test]
fn partitioned_output_reads_back_in_duckdb() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut csv = String::from("id,day,region\n");
    let mut want: std::collections::BTreeMap<(String, String), (i64, i64)> = Default::default();
    for i in 0..500i64 {
        let day = format!("2024-01-{:02}", 1 + i % 3);
        let region = ["eu", "us", "a/b"][(i % 5 % 3) as usize].to_string();
        csv.push_str(&format!("{i},{day},{region}\n"));
        let e = want.entry((day, region)).or_default();
        e.0 += 1;
        e.1 += i;
    }
    std::fs::write(dir.join("in.csv"), csv).unwrap();
    std::fs::write(
        dir.join("app.sql"),
        "CREATE STREAM p AS SELECT id, day, region FROM 'file://in.csv' INTO out
           WITH ('out.type' = 'file_sink', 'out.path' = 'out/', 'out.format' = 'parquet',
                 'out.partition_by' = 'day, region', 'batch.size' = '100');",
    )
    .unwrap();
    let o = run_in(dir, &["run", "app.sql"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let python = std::env::var("VELO_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = "import duckdb, json, sys
rows = duckdb.sql(\"SELECT day, region, count(*), sum(id) FROM read_parquet('out/**/*.parquet', hive_partitioning=true) GROUP BY ALL ORDER BY ALL\").fetchall()
print(json.dumps([[str(r[0]), r[1], r[2], int(r[3])] for r in rows]))";
    let o = std::process::Command::new(python)
        .current_dir(dir)
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: Vec<(String, String, i64, i64)> = serde_json::from_slice(&o.stdout).unwrap();
    let want: Vec<(String, String, i64, i64)> = want
        .into_iter()
        .map(|((d, r), (n, s))| (d, r, n, s))
        .collect();
    assert_eq!(got, want);
    // the escaped value is a directory of its own
    assert!(dir.join("out/day=2024-01-01/region=a%2Fb").is_dir());
}

/// A windowed job reading Parquet objects and writing transactional JSON
/// Lines objects, crashed right after two of its checkpoints and resumed:
/// every window published once, no temporary object left behind.
#[test]
fn s3_transactional_sink_survives_crashes_exactly_once() {
    let moto = Moto::start("lake");
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // the inputs: two Parquet objects, 100 records per 100 ms window, 60 windows
    std::fs::create_dir_all(dir.join("data")).unwrap();
    for (f, range) in [("a", 0..3_000i64), ("b", 3_000..6_000)] {
        let path = dir.join(format!("data/{f}.parquet"));
        crate::common::write_id_ts_parquet(&path, range);
        s3py(
            &moto,
            &[
                "put",
                "lake",
                &format!("data/{f}.parquet"),
                path.to_str().unwrap(),
            ],
        );
    }
    std::fs::remove_dir_all(dir.join("data")).unwrap();
    let app = "CREATE STREAM w AS SELECT CAST(window_start AS BIGINT) AS ws, COUNT(*) AS n, SUM(id) AS ids
      FROM events GROUP BY TUMBLE(ts, INTERVAL '100' MILLISECOND) INTO out
      WITH ('events.type' = 's3_source', 'events.path' = 's3://lake/data/*.parquet',
            'events.watermark.max_out_of_orderness' = '0ms',
            'use_transactions' = 'true', 'state.dir' = 's3://lake/state', 'batch.size' = '250',
            'out.type' = 's3_sink', 'out.path' = 's3://lake/out/part.jsonl');";
    std::fs::write(dir.join("app.sql"), app).unwrap();
    crash_and_resume_with(dir, &["3", "7"], &moto.env());
    let (keys, rows) = dump(&moto, "lake", "out/");
    assert!(
        keys.iter().all(|k| !k.contains("/.")),
        "no temporary object is left: {keys:?}"
    );
    crate::common::assert_each_window_once(&rows);
    // the source read every object to its end once: a fourth run reads nothing again
    let o = run_in(dir, &["run", "app.sql"], &moto.env());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, again) = dump(&moto, "lake", "out/");
    assert_eq!(
        again.len(),
        rows.len(),
        "a finished run resumed reads nothing twice"
    );
}

/// What a hostile or careless user gets: a clear error naming the place,
/// a failed exit, and never the secret key.
#[test]
fn s3_mistakes_are_clear_errors_that_keep_secrets() {
    let moto = Moto::start("lake");
    s3py(&moto, &["seed", "lake"]);
    let d = tempfile::tempdir().unwrap();
    let run = |app: &str, env: &[(String, String)]| {
        std::fs::write(d.path().join("app.sql"), app).unwrap();
        let o = run_in(d.path(), &["run", "app.sql"], env);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), text)
    };
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    // a bucket that is not there, with credentials as keys: the place is
    // named, the secret is not
    let secret = "wr0ngSecretKeyThatMustNotLeak";
    let (ok, text) = run(
        &format!(
            "CREATE STREAM s AS SELECT * FROM src INTO 'stdout://' WITH (
               'src.type' = 's3_source', 'src.path' = 's3://no-such-bucket/x/*.parquet',
               'src.endpoint' = '{endpoint}', 'src.allow_http' = 'true', 'src.region' = 'us-east-1',
               'src.access_key_id' = 'nobody', 'src.secret_access_key' = '{secret}');"
        ),
        &[],
    );
    assert!(!ok && text.contains("s3://no-such-bucket"), "{text}");
    assert!(!text.contains(secret), "the secret is masked: {text}");
    // no objects match: says so, exits non-zero
    let (ok, text) = run(
        "CREATE STREAM s AS SELECT * FROM 's3://lake/in/nothing/*.csv' INTO 'stdout://';",
        &moto.env(),
    );
    assert!(!ok && text.contains("no objects match"), "{text}");
    // an endpoint nobody listens on: an error, not a hang
    let (ok, text) = run(
        "CREATE STREAM s AS SELECT * FROM src INTO 'stdout://' WITH (
           'src.type' = 's3_source', 'src.path' = 's3://lake/in/pq/t.parquet',
           'src.endpoint' = 'http://127.0.0.1:1', 'src.allow_http' = 'true');",
        &moto.env(),
    );
    assert!(!ok && text.contains("endpoint"), "{text}");
    // an http(s) URL cannot be written, an object cannot be appended to
    let (ok, text) = run(
        "CREATE STREAM s AS SELECT * FROM 's3://lake/in/pq/t.parquet' INTO 'https://example.invalid/x.jsonl';",
        &moto.env(),
    );
    assert!(!ok && text.contains("read-only"), "{text}");
    let (ok, text) = run(
        "CREATE STREAM s AS SELECT * FROM 's3://lake/in/pq/t.parquet' INTO o
           WITH ('o.type' = 's3_sink', 'o.path' = 's3://lake/o/x.jsonl', 'o.append' = 'true');",
        &moto.env(),
    );
    assert!(!ok && text.contains("cannot be appended"), "{text}");
    // validate connects to nothing: a declared schema is enough, else it says what to add
    std::fs::write(
        d.path().join("app.sql"),
        "CREATE STREAM s AS SELECT id FROM src INTO 'stdout://' WITH (
           'src.type' = 's3_source', 'src.path' = 's3://unreachable-bucket/x/*.parquet',
           'src.schema' = 'id BIGINT', 'src.endpoint' = 'http://127.0.0.1:1', 'src.allow_http' = 'true');",
    )
    .unwrap();
    let o = run_in(d.path(), &["validate", "app.sql"], &[]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `delete_after_read` acts only once the epoch that read a file committed:
/// a run whose sink cannot commit leaves every input in place; the run that
/// commits removes them, with every row written.
#[test]
fn delete_after_read_waits_for_the_commit() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir_all(dir.join("in")).unwrap();
    for (f, ids) in [("a", 0..40), ("b", 40..100)] {
        let body: String = std::iter::once("id,v\n".to_string())
            .chain(ids.map(|i| format!("{i},{}\n", i * 2)))
            .collect();
        std::fs::write(dir.join(format!("in/{f}.csv")), body).unwrap();
    }
    std::fs::write(
        dir.join("app.sql"),
        "CREATE STREAM s AS SELECT id, v FROM src INTO out WITH (
           'src.type' = 'file_source', 'src.path' = 'in/*.csv', 'src.delete_after_read' = 'true',
           'out.type' = 'file_sink', 'out.path' = 'out/rows.jsonl', 'batch.size' = '30');",
    )
    .unwrap();
    let fail = [(
        "VELO_FAIL_SINK".to_string(),
        "out:commit:1:1000".to_string(),
    )];
    let o = run_in(dir, &["run", "app.sql"], &fail);
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        dir.join("in/a.csv").exists() && dir.join("in/b.csv").exists(),
        "nothing committed, nothing deleted"
    );
    let o = run_in(dir, &["run", "app.sql"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !dir.join("in/a.csv").exists() && !dir.join("in/b.csv").exists(),
        "both files were read and committed"
    );
    let text = std::fs::read_to_string(dir.join("out/rows.jsonl")).unwrap();
    let mut got: Vec<i64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    got.sort();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
}

/// `move_after_read` on an object store: the objects read are moved into
/// the folder after the commit, under their own names.
#[test]
fn move_after_read_moves_objects_after_the_commit() {
    let moto = Moto::start("lake");
    let d = tempfile::tempdir().unwrap();
    for (f, ids) in [("x", 0..10), ("y", 10..25)] {
        let body: String = ids.map(|i| format!("{{\"id\":{i}}}\n")).collect();
        let local = d.path().join(format!("{f}.jsonl"));
        std::fs::write(&local, body).unwrap();
        s3py(
            &moto,
            &[
                "put",
                "lake",
                &format!("inbox/{f}.jsonl"),
                local.to_str().unwrap(),
            ],
        );
    }
    std::fs::write(
        d.path().join("app.sql"),
        "CREATE STREAM s AS SELECT id FROM src INTO 's3://lake/out/?format=jsonl' WITH (
           'src.type' = 's3_source', 'src.path' = 's3://lake/inbox/', 'src.format' = 'jsonl',
           'src.move_after_read' = 's3://lake/done/');",
    )
    .unwrap();
    let o = run_in(d.path(), &["run", "app.sql"], &moto.env());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (keys, _) = dump(&moto, "lake", "inbox/");
    assert!(keys.is_empty(), "{keys:?}");
    let (keys, _) = dump(&moto, "lake", "done/");
    assert_eq!(keys, ["done/x.jsonl", "done/y.jsonl"]);
    let (_, rows) = dump(&moto, "lake", "out/");
    assert_eq!(ids(&rows), (0..25).collect::<Vec<_>>());
    // a move out of the store the files are in is refused before anything runs
    std::fs::write(
        d.path().join("app.sql"),
        "CREATE STREAM s AS SELECT id FROM src INTO 'stdout://' WITH (
           'src.type' = 's3_source', 'src.path' = 's3://lake/done/', 'src.format' = 'jsonl',
           'src.move_after_read' = 'archive/');",
    )
    .unwrap();
    let o = run_in(d.path(), &["validate", "app.sql"], &moto.env());
    let text = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() && text.contains("move_after_read"),
        "{text}"
    );
}

/// `rate_limit` (seed 004's replay): 300 stored records at 100 a second
/// take at least 2.5 seconds to go through, and all of them arrive; every
/// batch the sink gets is a tenth of a second's worth.
#[test]
fn rate_limit_paces_a_replay() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let body: String = (0..300).map(|i| format!("{{\"id\":{i}}}\n")).collect();
    std::fs::write(dir.join("in.jsonl"), body).unwrap();
    std::fs::write(
        dir.join("app.sql"),
        "CREATE STREAM r AS SELECT id FROM 'file://in.jsonl' INTO 'file://out/r.jsonl'
           WITH ('rate_limit' = '100', 'batch.size' = '1000');",
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    let o = run_in(dir, &["run", "app.sql"], &[]);
    let took = t0.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(dir.join("out/r.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 300);
    assert!(
        took >= std::time::Duration::from_millis(2500),
        "300 records at 100/s went through in {took:?}"
    );
    // a rate of 0 is refused
    std::fs::write(
        dir.join("app.sql"),
        "CREATE STREAM r AS SELECT id FROM 'file://in.jsonl' INTO 'file://out/r.jsonl' WITH ('rate_limit' = '0');",
    )
    .unwrap();
    let o = run_in(dir, &["validate", "app.sql"], &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("rate_limit"));
}

/// An example application of `examples/lake/`, copied into a fresh folder.
pub(crate) fn example(name: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/lake")
        .join(name);
    std::fs::copy(src, d.path().join("app.sql")).unwrap();
    d
}

/// Starts `velo run app.sql` in `dir` with `env`, its stderr kept.
pub(crate) fn start_example(dir: &Path, env: &[(String, String)]) -> std::process::Child {
    let mut cmd = crate::common::velo();
    cmd.current_dir(dir)
        .args(["run", "app.sql"])
        .env("HOME", dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Waits (up to 60 s) until `done` holds, then stops `child` with SIGINT
/// and checks it exits 0 within 30 s (it commits its epoch first).
pub(crate) fn stop_when(mut child: std::process::Child, mut done: impl FnMut() -> bool) {
    let ok = crate::common::wait_until(std::time::Duration::from_secs(60), &mut done);
    crate::common::signal(&child, "-INT");
    let exited = crate::common::wait_until(std::time::Duration::from_secs(30), || {
        child.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(exited, "the job did not stop within 30 s of SIGINT: {err}");
    assert!(out.status.success(), "exit {}: {err}", out.status);
    assert!(ok, "the job did not finish its work in 60 s: {err}");
}

/// Seed 004 example 1 (`examples/lake/kafka_to_s3.sql`): transactions from
/// Kafka into Parquet on S3 partitioned by day, read back with boto3 and
/// pyarrow: every transaction over 100 once, under its day's directory.
#[test]
fn seed_example_1_kafka_to_s3_parquet_partitioned_by_date() {
    let (_tmp, _broker, bs) = crate::kafka::with_broker();
    let moto = Moto::start("data-lake");
    crate::kafka::create_topic(&bs, "transactions", 2);
    let day = 86_400_000i64;
    let t0 = 1_704_153_600_000i64; // 2024-01-02T00:00:00Z
    let msgs: Vec<(Option<String>, Vec<u8>)> = (0..300i64)
        .map(|i| {
            let v = format!(
                r#"{{"customer_id":{},"transaction_id":{i},"amount":{},"timestamp":{}}}"#,
                i % 7,
                i as f64 * 1.1,
                t0 + (i % 3) * day + i
            );
            (None, v.into_bytes())
        })
        .collect();
    crate::kafka::produce(&bs, "transactions", &msgs);
    let d = example("kafka_to_s3.sql");
    let mut env = moto.env();
    env.push(("KAFKA_BROKERS".into(), bs.clone()));
    env.push(("BATCH_TIMEOUT".into(), "1s".into()));
    let child = start_example(d.path(), &env);
    let want: Vec<i64> = (0..300).filter(|i| *i as f64 * 1.1 > 100.0).collect();
    stop_when(child, || {
        dump(&moto, "data-lake", "high-value-transactions/").1.len() >= want.len()
    });
    let (keys, rows) = dump(&moto, "data-lake", "high-value-transactions/");
    assert_eq!(ids_of(&rows, "transaction_id"), want, "each once");
    for r in &rows {
        let id = r["transaction_id"].as_i64().unwrap();
        let day = format!("date=2024-01-0{}", 2 + id % 3);
        assert!(r["_object"].as_str().unwrap().contains(&day), "{r}");
        assert!(r.get("date").is_none(), "{r}");
    }
    assert!(keys.iter().all(|k| !k.contains("/.")), "{keys:?}");
}

fn ids_of(rows: &[Value], col: &str) -> Vec<i64> {
    let mut v: Vec<i64> = rows.iter().map(|r| r[col].as_i64().unwrap()).collect();
    v.sort();
    v
}

/// Seed 004 example 2 (`examples/lake/s3_replay_to_kafka.sql`): stored
/// events replayed from S3 Parquet into a topic at a set rate, read by an
/// independent consumer: the purchases and signups, each once.
#[test]
fn seed_example_2_s3_replay_into_kafka_at_a_rate() {
    let (_tmp, _broker, bs) = crate::kafka::with_broker();
    let moto = Moto::start("warehouse");
    crate::kafka::create_topic(&bs, "replayed-events", 1);
    let d = example("s3_replay_to_kafka.sql");
    // 200 events in two objects; 3 of every 5 are purchases or signups
    let kinds = ["purchase", "view", "signup", "click", "purchase"];
    for (f, range) in [("a", 0..120i64), ("b", 120..200)] {
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("user_id", arrow::datatypes::DataType::Int64, false),
            arrow::datatypes::Field::new("event_type", arrow::datatypes::DataType::Utf8, false),
            arrow::datatypes::Field::new("properties", arrow::datatypes::DataType::Utf8, false),
        ]));
        let ids: Vec<i64> = range.collect();
        let batch = arrow::array::RecordBatch::try_new(
            schema.clone(),
            vec![
                std::sync::Arc::new(arrow::array::Int64Array::from(ids.clone())),
                std::sync::Arc::new(arrow::array::StringArray::from_iter_values(
                    ids.iter().map(|i| kinds[(*i % 5) as usize]),
                )),
                std::sync::Arc::new(arrow::array::StringArray::from_iter_values(
                    ids.iter().map(|i| format!("{{\"n\":{i}}}")),
                )),
            ],
        )
        .unwrap();
        let path = d.path().join(format!("{f}.parquet"));
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            schema,
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        s3py(
            &moto,
            &[
                "put",
                "warehouse",
                &format!("user-events/2024-01/{f}.parquet"),
                path.to_str().unwrap(),
            ],
        );
    }
    let mut env = moto.env();
    env.push(("KAFKA_BROKERS".into(), bs.clone()));
    env.push(("RATE_LIMIT".into(), "100".into()));
    let t0 = std::time::Instant::now();
    let o = run_in(d.path(), &["run", "app.sql"], &env);
    let took = t0.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want: Vec<i64> = (0..200).filter(|i| [0, 2, 4].contains(&(i % 5))).collect();
    // 120 records at 100 a second
    assert!(took >= std::time::Duration::from_millis(1000), "{took:?}");
    let got = crate::kafka::consume_all(&bs, "replayed-events", want.len());
    let rows: Vec<Value> = got
        .iter()
        .map(|(_, v)| serde_json::from_str(v).unwrap())
        .collect();
    assert_eq!(ids_of(&rows, "user_id"), want);
    assert!(rows.iter().all(|r| r["replay_timestamp"].is_string()));
}

/// Seed 004 example 4 (`examples/lake/watch_to_kafka_and_s3.sql`): CSV
/// files dropped into a watched folder reach Kafka and the S3 archive (JSON
/// under the day's folder), and each file is deleted after its commit.
#[test]
fn seed_example_4_file_watch_into_kafka_and_s3() {
    let (_tmp, _broker, bs) = crate::kafka::with_broker();
    let moto = Moto::start("archive");
    crate::kafka::create_topic(&bs, "csv-ingestion", 1);
    let d = example("watch_to_kafka_and_s3.sql");
    std::fs::create_dir_all(d.path().join("incoming")).unwrap();
    let mut env = moto.env();
    env.push(("KAFKA_BROKERS".into(), bs.clone()));
    env.push(("BATCH_TIMEOUT".into(), "500ms".into()));
    let child = start_example(d.path(), &env);
    // two files, the second after the job started
    let file = |name: &str, ids: std::ops::Range<i64>| {
        let body: String = std::iter::once("customer_id,amount\n".to_string())
            .chain(ids.map(|i| format!("{i},{}.25\n", i)))
            .collect();
        let tmp = d.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(tmp, d.path().join("incoming").join(name)).unwrap();
    };
    file("a.csv", 0..30);
    // the second file once the first was read and committed (it is deleted then)
    let first = d.path().join("incoming/a.csv");
    crate::common::wait_for(
        std::time::Duration::from_secs(30),
        "a.csv committed",
        || !first.exists(),
    );
    file("b.csv", 30..75);
    let incoming = d.path().join("incoming");
    stop_when(child, || {
        dump(&moto, "archive", "csv-backup/").1.len() >= 75
            && std::fs::read_dir(&incoming).unwrap().count() == 0
    });
    let (keys, rows) = dump(&moto, "archive", "csv-backup/");
    let today = std::process::Command::new("date")
        .arg("+%Y/%m/%d")
        .output()
        .unwrap();
    let today = String::from_utf8_lossy(&today.stdout).trim().to_string();
    assert!(
        keys.iter()
            .all(|k| k.starts_with(&format!("csv-backup/{today}/part-")) && k.ends_with(".json")),
        "{keys:?}"
    );
    assert_eq!(ids_of(&rows, "customer_id"), (0..75).collect::<Vec<_>>());
    assert!(
        rows.iter()
            .all(|r| r["filename"].as_str().unwrap().ends_with(".csv"))
    );
    let got = crate::kafka::consume_all(&bs, "csv-ingestion", 75);
    let kafka: Vec<Value> = got
        .iter()
        .map(|(_, v)| serde_json::from_str(v).unwrap())
        .collect();
    assert_eq!(ids_of(&kafka, "customer_id"), (0..75).collect::<Vec<_>>());
}

/// WHERE on a Hive partition column skips the other partitions' objects
/// (an unreadable object in a filtered-out partition is never opened),
/// and on a Parquet column skips the row groups its statistics rule out
/// (a damaged row group the filter excludes is never fetched); without the
/// filter both are read and fail.
#[test]
fn filters_skip_partitions_and_row_groups() {
    let moto = Moto::start("lake");
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // partitions: eu and us readable, zz an object that is not gzip at all
    for (key, body) in [
        ("p/region=eu/a.csv.gz", None),
        ("p/region=us/a.csv.gz", None),
        ("p/region=zz/a.csv.gz", Some(b"this is not gzip".to_vec())),
    ] {
        let local = dir.join("obj");
        let body = body.unwrap_or_else(|| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, b"id,amount\n1,2.5\n2,3.5\n").unwrap();
            e.finish().unwrap()
        });
        std::fs::write(&local, body).unwrap();
        s3py(&moto, &["put", "lake", key, local.to_str().unwrap()]);
    }
    let run = |sql: &str| {
        std::fs::write(dir.join("app.sql"), sql).unwrap();
        let o = run_in(dir, &["run", "app.sql"], &moto.env());
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (ok, log) = run(
        "CREATE STREAM s AS SELECT id, region FROM 's3://lake/p/**/*.csv.gz' WHERE region = 'eu'
           INTO 'file://out/eu.jsonl';",
    );
    assert!(ok, "{log}");
    let text = std::fs::read_to_string(dir.join("out/eu.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().all(|l| l.contains("\"region\":\"eu\"")));
    let (ok, log) = run(
        "CREATE STREAM s AS SELECT id, region FROM 's3://lake/p/**/*.csv.gz' WHERE id > 0
           INTO 'file://out/all.jsonl';",
    );
    assert!(!ok && log.contains("region=zz"), "{log}");

    // row groups: ids 0..10000 in 10 groups; the first group's pages damaged
    let path = dir.join("t.parquet");
    crate::common::write_id_ts_parquet(&path, 0..10_000);
    let mut bytes = std::fs::read(&path).unwrap();
    for b in &mut bytes[8..400] {
        *b = 0xAB;
    }
    std::fs::write(&path, bytes).unwrap();
    let (ok, log) = run(
        "CREATE STREAM s AS SELECT id FROM 'file://t.parquet' WHERE id >= 9000 INTO 'file://out/high.jsonl';",
    );
    assert!(ok, "{log}");
    let text = std::fs::read_to_string(dir.join("out/high.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 1000);
    let (ok, _) = run(
        "CREATE STREAM s AS SELECT id FROM 'file://t.parquet' WHERE id < 5 INTO 'file://out/low.jsonl';",
    );
    assert!(
        !ok,
        "the damaged first row group is read when the filter needs it"
    );
}

/// An output object past 10 MiB goes up as a multipart upload (its ETag
/// says how many parts) and arrives whole.
#[test]
fn large_objects_are_multipart_uploads() {
    let moto = Moto::start("lake");
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let rows = 300_000usize;
    let mut csv = String::with_capacity(rows * 48);
    csv.push_str("id,text\n");
    for i in 0..rows {
        csv.push_str(&format!("{i},row {i:08} of the large object test\n"));
    }
    std::fs::write(dir.join("big.csv"), csv).unwrap();
    std::fs::write(
        dir.join("app.sql"),
        "CREATE STREAM s AS SELECT id, text FROM 'file://big.csv'
           INTO 's3://lake/big/out.csv' WITH ('batch.size' = '1000000');",
    )
    .unwrap();
    let o = run_in(dir, &["run", "app.sql"], &moto.env());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (keys, rows_back) = dump(&moto, "lake", "big/");
    assert_eq!(keys, ["big/out-000001.csv"]);
    assert_eq!(rows_back.len(), rows);
    let head: Value = serde_json::from_str(&s3py(&moto, &["head", "lake", &keys[0]])).unwrap();
    let size = head["size"].as_u64().unwrap();
    let etag = head["etag"].as_str().unwrap();
    assert!(size > 10 << 20, "{size}");
    assert!(etag.trim_matches('"').ends_with("-2"), "two parts: {etag}");
}

/// GCS and Azure paths go through the same connector: an application on
/// `gs://` and `abfss://` validates offline with a declared schema, and
/// `explain` shows the keys with the secret masked (the stores themselves:
/// the Azurite and fake-gcs-server tests above).
#[test]
fn gcs_and_azure_urls_validate_and_explain_offline() {
    let d = tempfile::tempdir().unwrap();
    let secret = "s3cr3tValueNeverShown";
    std::fs::write(
        d.path().join("app.sql"),
        format!(
            "CREATE STREAM a AS SELECT id FROM g INTO 'abfss://container@account.dfs.core.windows.net/out/?format=parquet'
               WITH ('g.type' = 'file_source', 'g.path' = 'gs://bucket/events/*.parquet',
                     'g.schema' = 'id BIGINT', 'g.secret_access_key' = '{secret}');"
        ),
    )
    .unwrap();
    for cmd in ["validate", "explain"] {
        let o = run_in(d.path(), &[cmd, "app.sql"], &[]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{cmd}: {text}");
        assert!(!text.contains(secret), "{cmd}: {text}");
        if cmd == "explain" {
            assert!(text.contains("gs://bucket/events/*.parquet"), "{text}");
        }
    }
}

/// A bounded aggregate over Hive-partitioned Parquet on S3 runs as one
/// batch plan whose scans read the objects through the source's own S3
/// client (its endpoint and keys), with the partition pruned by WHERE; the
/// answer is the streaming run's.
#[test]
fn an_s3_parquet_aggregate_runs_as_one_batch_plan() {
    let moto = Moto::start("lake");
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    for day in 1..=3i64 {
        let local = dir.join(format!("d{day}.parquet"));
        crate::common::write_id_ts_parquet(&local, (day - 1) * 1_000..day * 1_000 + 500);
        s3py(
            &moto,
            &[
                "put",
                "lake",
                &format!("orders/day=d{day}/part-0.parquet"),
                local.to_str().unwrap(),
            ],
        );
    }
    let app = "CREATE STREAM s AS SELECT day, COUNT(*) AS n, SUM(id) AS total FROM orders
       WHERE day <> 'd2' GROUP BY day ORDER BY day INTO out
       WITH ('orders.type' = 's3_source', 'orders.path' = 's3://lake/orders/**/*.parquet',
             'out.type' = 'file_sink', 'out.path' = 'out.jsonl');";
    std::fs::write(dir.join("app.sql"), app).unwrap();
    let run = |args: &[&str]| {
        let _ = std::fs::remove_file(dir.join("out.jsonl"));
        let mut all = vec!["run", "app.sql"];
        all.extend_from_slice(args);
        let o = run_in(dir, &all, &moto.env());
        let log = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{log}");
        (std::fs::read_to_string(dir.join("out.jsonl")).unwrap(), log)
    };
    let (batch, log) = run(&[]);
    assert!(log.contains("one batch plan"), "{log}");
    assert!(log.contains("source orders: 3000 read"), "d2 pruned: {log}");
    let (streamed, log) = run(&["--set", "batch.size=700"]);
    assert!(!log.contains("one batch plan"), "{log}");
    assert_eq!(batch, streamed);
    assert_eq!(batch.lines().count(), 2, "{batch}");
}
