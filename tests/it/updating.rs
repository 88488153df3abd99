//! Updating results: a GROUP BY without a window on a stream (or any query
//! with EMIT CHANGES) writes a changelog, every changed group with
//! `_op` = insert / update / delete. Applied in order, the changelog must
//! equal DataFusion's batch answer to the same query.

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};

use crate::common::run_in;
use crate::windows::{oracle, write_jsonl};

/// Events over 60 keys, few records for high keys and many for low ones.
fn skewed(seed: u64, n: usize) -> Vec<(String, i64, i64)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let u: f64 = rng.random();
            let k = format!("k{:02}", (u * u * 60.0) as u32);
            (k, rng.random_range(-50..1000), 1_704_067_200_000 + i as i64)
        })
        .collect()
}

/// What a keyed sink holds after applying the changelog in `path` in order:
/// key -> `|`-joined `cols`; and how many rows of each `_op` there were.
fn apply_changelog(
    path: &Path,
    key: &[&str],
    cols: &[&str],
) -> (BTreeMap<String, String>, BTreeMap<String, usize>) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    apply_changelog_text(&text, key, cols)
}

/// [`apply_changelog`] on the JSON Lines `text`.
pub(crate) fn apply_changelog_text(
    text: &str,
    key: &[&str],
    cols: &[&str],
) -> (BTreeMap<String, String>, BTreeMap<String, usize>) {
    let mut table = BTreeMap::new();
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let k = key
            .iter()
            .map(|c| v[*c].to_string())
            .collect::<Vec<_>>()
            .join("|");
        let op = v["_op"].as_str().unwrap_or_else(|| panic!("no _op: {l}"));
        *ops.entry(op.to_string()).or_default() += 1;
        match op {
            "insert" => {
                assert!(!table.contains_key(&k), "insert of a live key {k}: {l}");
            }
            "update" => {
                assert!(table.contains_key(&k), "update of an unknown key {k}: {l}");
            }
            "delete" => {
                assert!(
                    table.remove(&k).is_some(),
                    "delete of an unknown key {k}: {l}"
                );
                continue;
            }
            other => panic!("unknown _op {other}: {l}"),
        }
        let row = cols
            .iter()
            .map(|c| v[*c].to_string())
            .collect::<Vec<_>>()
            .join("|");
        table.insert(k, row);
    }
    (table, ops)
}

#[test]
fn updating_group_by_equals_the_batch_result_at_random_epoch_sizes() {
    let _machine = crate::common::exclusive();
    for seed in 1..=3u64 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let ev = skewed(seed, 3_000);
        write_jsonl(&dir.join("data/events.jsonl"), &ev);
        // the same answer at any number of partitions
        let parts = [1, 3, 2][seed as usize - 1];
        let batch = rand::rngs::StdRng::seed_from_u64(seed).random_range(20..300);
        let src = format!(
            "'events.type' = 'file_source', 'events.path' = 'data/events.jsonl', \
             'events.schema' = 'k VARCHAR, v BIGINT, ts BIGINT', 'batch.size' = '{batch}', 'partitions' = '{parts}'"
        );
        // a bounded file: EMIT CHANGES makes it stream, epoch by epoch
        let app = format!(
            "CREATE STREAM totals AS SELECT k AS key, COUNT(*) AS n, SUM(v) AS total, MAX(v) AS hi, COUNT(DISTINCT v % 7) AS odd
               FROM events GROUP BY k EMIT CHANGES INTO t
               WITH ({src}, 't.type' = 'file_sink', 't.path' = 'out/totals.jsonl');
             CREATE STREAM few AS SELECT k AS key, COUNT(*) AS n, SUM(v) AS total
               FROM events GROUP BY k HAVING COUNT(*) <= 40 INTO f
               WITH ({src}, 'f.type' = 'file_sink', 'f.path' = 'out/few.jsonl') EMIT CHANGES;
             CREATE STREAM per_second AS SELECT k AS key, window_start, COUNT(*) AS n, SUM(v) AS total
               FROM events GROUP BY k, TUMBLE(ts, INTERVAL '1' SECOND) EMIT CHANGES INTO w
               WITH ({src}, 'events.watermark.max_out_of_orderness' = '0ms',
                     'w.type' = 'file_sink', 'w.path' = 'out/windows.jsonl');"
        );
        let (ok, log) = crate::common::run_app(dir, &app);
        assert!(ok, "seed {seed}: {log}");

        let cols = ["key", "n", "total", "hi", "odd"];
        let (table, ops) = apply_changelog(&dir.join("out/totals.jsonl"), &["key"], &cols);
        let want = oracle(
            &ev,
            "SELECT k AS key, COUNT(*) AS n, SUM(v) AS total, MAX(v) AS hi, COUNT(DISTINCT v % 7) AS odd FROM events GROUP BY k",
        );
        let got: Vec<String> = table.values().cloned().collect();
        assert_eq!(
            got, want,
            "seed {seed}, batch.size {batch}, partitions {parts}: totals"
        );
        assert_eq!(ops.get("insert"), Some(&want.len()), "one insert per key");
        assert!(
            ops.get("update").copied().unwrap_or(0) > want.len(),
            "groups were updated epoch after epoch: {ops:?}"
        );

        let (table, ops) =
            apply_changelog(&dir.join("out/few.jsonl"), &["key"], &["key", "n", "total"]);
        let want = oracle(
            &ev,
            "SELECT k AS key, COUNT(*) AS n, SUM(v) AS total FROM events GROUP BY k HAVING COUNT(*) <= 40",
        );
        let got: Vec<String> = table.values().cloned().collect();
        assert!(want.len() > 5, "some keys stay under the HAVING bound");
        assert_eq!(
            got, want,
            "seed {seed}, batch.size {batch}, partitions {parts}: HAVING"
        );
        assert!(
            ops.get("delete").copied().unwrap_or(0) > 5,
            "keys that outgrew HAVING were deleted: {ops:?}"
        );

        // a window's changes are keyed by its group and its start
        let (table, ops) = apply_changelog(
            &dir.join("out/windows.jsonl"),
            &["key", "window_start"],
            &["key", "n", "total"],
        );
        let mut got: Vec<String> = table.values().cloned().collect();
        got.sort();
        let want = oracle(
            &ev,
            "SELECT k AS key, COUNT(*) AS n, SUM(v) AS total FROM events
             GROUP BY k, date_bin(INTERVAL '1 second', ts, TIMESTAMP '1970-01-01T00:00:00')",
        );
        assert_eq!(
            got, want,
            "seed {seed}, batch.size {batch}, partitions {parts}: windows"
        );
        assert_eq!(
            ops.get("insert"),
            Some(&want.len()),
            "one insert per key and window"
        );
        assert!(
            ops.get("update").copied().unwrap_or(0) > 0,
            "windows were updated while open: {ops:?}"
        );
    }
}

#[test]
fn group_by_on_an_infinite_stream_is_an_updating_result() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // no window, no EMIT: on an unbounded source this is an updating stream
    let app = "CREATE STREAM per_bucket AS SELECT id % 10 AS bucket, COUNT(*) AS n, MAX(id) AS last_id FROM gen
      GROUP BY id % 10 INTO out
      WITH ('gen.type' = 'datagen', 'gen.rate' = '5000', 'gen.columns' = 'id:sequence(0)',
            'batch.timeout' = '100ms', 'out.type' = 'file_sink', 'out.path' = 'out/b.jsonl');";
    std::fs::write(dir.join("app.sql"), app).unwrap();
    let explain = run_in(dir, &["explain", "app.sql"], &[]);
    let text = String::from_utf8_lossy(&explain.stdout).to_string();
    assert!(
        explain.status.success() && text.contains("Emit: changes") && text.contains("(bucket)"),
        "explain names the changelog and its key: {text}{}",
        String::from_utf8_lossy(&explain.stderr)
    );
    let out = dir.join("out/b.jsonl");
    // several epochs of updates
    crate::common::run_until_lines(dir, &out, 50);
    let (table, ops) = apply_changelog(&out, &["bucket"], &["bucket", "n", "last_id"]);
    assert_eq!(table.len(), 10, "{table:?}");
    assert_eq!(ops.get("insert"), Some(&10), "{ops:?}");
    // the count of a bucket is the number of ids seen in it so far
    for row in table.values() {
        let p: Vec<i64> = row.split('|').map(|x| x.parse().unwrap()).collect();
        let (bucket, n, last) = (p[0], p[1], p[2]);
        assert_eq!(last % 10, bucket, "{row}");
        assert_eq!(
            n,
            last / 10 + 1,
            "every id of bucket {bucket} up to {last} counted once: {row}"
        );
    }
}

/// A `CREATE TABLE`'s rows are in its job's checkpoint: after a crash the
/// resumed application has the table back whole, also the keys its job
/// does not touch again, before a later statement reads it.
#[test]
fn a_create_table_survives_a_crash_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    // customer 1 only in the first 300 rows (200 of them), customer 2 in all
    let mut hist = String::from("customer_id,amount\n");
    for i in 0..600 {
        let c = if i < 300 && i % 3 != 0 { 1 } else { 2 };
        hist.push_str(&format!("{c},{}\n", i % 7));
    }
    std::fs::write(dir.join("data/hist.csv"), &hist).unwrap();
    std::fs::write(
        dir.join("data/orders.csv"),
        "id,customer_id\n1,1\n2,2\n3,1\n",
    )
    .unwrap();
    let app = "CREATE TABLE totals AS SELECT customer_id, COUNT(*) AS orders, SUM(amount) AS spent
        FROM hist GROUP BY customer_id INTO t
        WITH ('hist.type' = 'file_source', 'hist.path' = 'data/hist.csv', 'batch.size' = '100',
              'state.dir' = 'state', 'use_transactions' = 'true',
              't.type' = 'file_sink', 't.path' = 'out/totals.jsonl');
      CREATE STREAM enriched AS SELECT o.id, o.customer_id, t.orders, t.spent
        FROM orders o JOIN totals t ON o.customer_id = t.customer_id INTO out
        WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.csv',
              'out.type' = 'file_sink', 'out.path' = 'out/e.jsonl');";
    std::fs::write(dir.join("app.sql"), app).unwrap();
    crate::common::crash_and_resume(dir, &["3"]);
    let want = |c: i64| {
        let rows: Vec<i64> = hist
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(','))
            .filter(|(k, _)| k.parse::<i64>().unwrap() == c)
            .map(|(_, a)| a.parse().unwrap())
            .collect();
        (rows.len() as i64, rows.iter().sum::<i64>())
    };
    let text = std::fs::read_to_string(dir.join("out/e.jsonl")).unwrap();
    let mut ids = Vec::new();
    for l in text.lines() {
        let r: serde_json::Value = serde_json::from_str(l).unwrap();
        let c = r["customer_id"].as_i64().unwrap();
        ids.push(r["id"].as_i64().unwrap());
        if c == 1 {
            assert_eq!(
                (r["orders"].as_i64().unwrap(), r["spent"].as_i64().unwrap()),
                want(1),
                "customer 1 is complete in the restored table: {r}"
            );
        }
    }
    ids.sort();
    assert_eq!(
        ids,
        vec![1, 2, 3],
        "customer 1 was in the table when read: {text}"
    );
}

/// `CREATE TABLE` keeps the latest row per key, and a later statement of the
/// same application joins its stream with it.
#[test]
fn a_later_statement_joins_with_a_create_table() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    // customer c has c * 10 orders of c each
    let mut hist = String::from("customer_id,amount\n");
    for c in 1..=3 {
        for _ in 0..c * 10 {
            hist.push_str(&format!("{c},{c}\n"));
        }
    }
    std::fs::write(dir.join("data/hist.csv"), hist).unwrap();
    let app = "CREATE TABLE totals AS SELECT customer_id, COUNT(*) AS orders, SUM(amount) AS spent
        FROM hist GROUP BY customer_id INTO t
        WITH ('hist.type' = 'file_source', 'hist.path' = 'data/hist.csv',
              't.type' = 'file_sink', 't.path' = 'out/totals.jsonl');
      CREATE STREAM enriched AS SELECT g.id, g.customer_id, t.orders, t.spent
        FROM gen g JOIN totals t ON g.customer_id = t.customer_id INTO out
        WITH ('gen.type' = 'datagen', 'gen.rate' = '1000', 'gen.columns' = 'id:sequence(0), customer_id:int(1,3)',
              'batch.timeout' = '100ms', 'out.type' = 'file_sink', 'out.path' = 'out/e.jsonl');";
    std::fs::write(dir.join("app.sql"), app).unwrap();
    let explain = run_in(dir, &["explain", "app.sql"], &[]);
    let text = String::from_utf8_lossy(&explain.stdout).to_string();
    assert!(
        text.contains(
            "Source (lookup table): totals — the table of the statement CREATE TABLE totals"
        ),
        "{text}{}",
        String::from_utf8_lossy(&explain.stderr)
    );
    let out = dir.join("out/e.jsonl");
    crate::common::run_until_lines(dir, &out, 200);
    let text = std::fs::read_to_string(&out).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for r in &rows {
        let c = r["customer_id"].as_i64().unwrap();
        assert_eq!(r["orders"].as_i64(), Some(c * 10), "{r}");
        assert_eq!(r["spent"].as_i64(), Some(c * c * 10), "{r}");
    }
    // the stream waited for the table: no record met an empty table
    let first = rows
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .min()
        .unwrap();
    assert_eq!(first, 0, "the first records were joined too");
}

/// A GROUP BY over bounded input has one answer, the final table without
/// `_op`, with or without ORDER BY; EMIT CHANGES asks for the changelog.
#[test]
fn bounded_group_by_is_the_final_table_unless_changes_are_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("in.csv"), "k,v\na,1\nb,2\na,3\n").unwrap();
    let run = |tail: &str| {
        let app = format!(
            "CREATE STREAM g AS SELECT k, SUM(v) AS s FROM src GROUP BY k {tail} INTO out
             WITH ('src.type' = 'file_source', 'src.path' = 'in.csv', 'src.format' = 'csv',
                   'out.type' = 'file_sink', 'out.path' = 'out/g.jsonl');"
        );
        let _ = std::fs::remove_dir_all(dir.join("out"));
        std::fs::write(dir.join("app.sql"), app).unwrap();
        let out = crate::common::run_in(dir, &["run", "app.sql"], &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut rows: Vec<String> = std::fs::read_to_string(dir.join("out/g.jsonl"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        rows.sort();
        rows
    };
    let table = vec![
        r#"{"k":"a","s":4}"#.to_string(),
        r#"{"k":"b","s":2}"#.to_string(),
    ];
    assert_eq!(run(""), table);
    assert_eq!(run("ORDER BY k"), table);
    assert!(
        run("EMIT CHANGES")
            .iter()
            .all(|r| r.contains(r#""_op":"insert""#))
    );
}
