//! Row windows on streams (`OVER (PARTITION BY k ORDER BY ts ...)`): the
//! streaming result against DataFusion's batch answer over shuffled input
//! at random epoch sizes and across a crash, and state bounded by the row
//! buffer and by EXPIRE AFTER.

use rand::{Rng, SeedableRng};

use crate::windows::{events, oracle, rows_of_published, write_jsonl};

/// The row-window queries, streaming form and batch form: offsets, ranks,
/// running aggregates, row buffers. Each yields k, v, t and a..d.
pub(crate) const QUERIES: &[(&str, &str)] = &[
    (
        "offsets",
        "LAG(v) OVER (PARTITION BY k ORDER BY ts, v) AS a,
         LAG(v, 3) OVER (PARTITION BY k ORDER BY ts, v) AS b,
         LEAD(v) OVER (PARTITION BY k ORDER BY ts, v) AS c,
         LEAD(v, 2) OVER (PARTITION BY k ORDER BY ts, v) AS d",
    ),
    (
        "ranks",
        "ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts, v) AS a,
         RANK() OVER (PARTITION BY k ORDER BY ts) AS b,
         DENSE_RANK() OVER (PARTITION BY k ORDER BY ts) AS c,
         ROW_NUMBER() OVER (ORDER BY ts, v, k) AS d",
    ),
    (
        "running",
        "SUM(v) OVER (PARTITION BY k ORDER BY ts) AS a,
         COUNT(*) OVER (PARTITION BY k ORDER BY ts, v ROWS UNBOUNDED PRECEDING) AS b,
         AVG(v) OVER (PARTITION BY k ORDER BY ts) AS c,
         MAX(v) OVER (PARTITION BY k ORDER BY ts) AS d",
    ),
    (
        "buffers",
        "AVG(v) OVER (ROWS WINDOW BUFFER 5 ROWS PARTITION BY k ORDER BY ts, v) AS a,
         MIN(v) OVER (PARTITION BY k ORDER BY ts, v ROWS BETWEEN 2 PRECEDING AND 1 FOLLOWING) AS b,
         FIRST_VALUE(v) OVER (ROWS WINDOW BUFFER 3 ROWS PARTITION BY k ORDER BY ts, v) AS c,
         SUM(v) OVER (ROWS WINDOW BUFFER 4 ROWS PARTITION BY k ORDER BY ts, v) AS d",
    ),
];

/// DataFusion's spelling of Velostream's row buffers.
pub(crate) fn batch_form(select: &str) -> String {
    let mut s = select.to_string();
    for n in [3, 4, 5] {
        s = s.replace(
            &format!("ROWS WINDOW BUFFER {n} ROWS PARTITION BY k ORDER BY ts, v)"),
            &format!(
                "PARTITION BY k ORDER BY ts, v ROWS BETWEEN {} PRECEDING AND CURRENT ROW)",
                n - 1
            ),
        );
    }
    s
}

#[test]
fn row_windows_equal_the_batch_answer_at_random_epoch_sizes_and_across_a_crash() {
    let _machine = crate::common::exclusive();
    for (seed, crash) in [(1u64, false), (2, false), (3, true)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        // 1.5 s of disorder; times on a 100 ms grid, so ORDER BY ts has ties;
        // no two rows alike, so ORDER BY ts, v orders every key completely
        let mut seen = std::collections::HashSet::new();
        let ev: Vec<(String, i64, i64)> = events(seed, 3_000, 1_500)
            .into_iter()
            .map(|(k, v, ts)| (k, v, ts / 100 * 100))
            .filter(|e| seen.insert(e.clone()))
            .collect();
        write_jsonl(&dir.join("data/events.jsonl"), &ev);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let batch = rng.random_range(1..400);
        let parts = [1, 3][rng.random_range(0..2)];
        let src = format!(
            "'events.type' = 'file_source', 'events.path' = 'data/events.jsonl', \
             'events.schema' = 'k VARCHAR, v BIGINT, ts BIGINT', \
             'events.event.time.field' = 'ts', 'events.event.time.format' = 'epoch_millis', \
             'events.watermark.max_out_of_orderness' = '2s', 'batch.size' = '{batch}', 'partitions' = '{parts}', \
             'use_transactions' = 'true', 'state.dir' = 'state'"
        );
        let app: String = QUERIES
            .iter()
            .map(|(name, select)| {
                format!(
                    "CREATE STREAM {name} AS SELECT k, v, CAST(ts AS BIGINT) AS t, {select}
                       FROM events EMIT CHANGES INTO o_{name}
                       WITH ({src}, 'o_{name}.type' = 'file_sink', 'o_{name}.path' = 'out/{name}.jsonl');\n"
                )
            })
            .collect();
        std::fs::write(dir.join("app.sql"), &app).unwrap();
        let log = if crash {
            let at = rng.random_range(3..12);
            crate::common::crash_and_resume(dir, &[&at.to_string()])
        } else {
            let (ok, log) = crate::common::run_app(dir, &app);
            assert!(ok, "seed {seed}: {log}");
            log
        };
        assert!(
            !log.contains("late:"),
            "seed {seed}: nothing is late: {log}"
        );
        for (name, select) in QUERIES {
            let want = oracle(
                &ev,
                &format!(
                    "SELECT k, v, CAST(ts AS BIGINT) AS t, {} FROM events",
                    batch_form(select)
                ),
            );
            let got =
                rows_of_published(&dir.join("out"), name, &["k", "v", "t", "a", "b", "c", "d"]);
            assert_eq!(want.len(), ev.len());
            let only_got: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(3).collect();
            let only_want: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(3).collect();
            assert!(
                got == want,
                "seed {seed}, batch.size {batch}, partitions {parts}, crash {crash}, {name}: {} streaming rows vs {} batch rows; only streaming: {only_got:?}; only batch: {only_want:?}",
                got.len(),
                want.len()
            );
        }
    }
}

/// `row-window state: at most K keys, R rows kept` of a run's summary.
fn row_state(log: &str) -> (u64, u64) {
    let line = log
        .split("row-window state: at most ")
        .nth(1)
        .unwrap_or_else(|| panic!("no row-window state line: {log}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(2)
        .map(|s| s.parse().unwrap())
        .collect();
    (nums[0], nums[1])
}

/// 60,000 generated records, every `id` a new key: EXPIRE AFTER drops a
/// key's state two seconds (of event time) after its last row, so the keys
/// held stay near 2,000, not 60,000; the row buffer keeps 9 earlier rows of
/// each of the 50 keys, not their whole history.
#[test]
fn row_window_state_stays_bounded_by_its_buffer_and_expiry() {
    let _machine = crate::common::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let app = "CREATE STREAM r AS SELECT id, key, value,
        ROW_NUMBER() OVER (PARTITION BY id ORDER BY ts) AS n,
        AVG(value) OVER (ROWS WINDOW BUFFER 10 ROWS PARTITION BY key ORDER BY ts EXPIRE AFTER INTERVAL '2' SECONDS INACTIVITY) AS a
      FROM gen EMIT CHANGES INTO out
      WITH ('gen.type' = 'datagen', 'gen.rows' = '60000', 'gen.columns' = 'id:sequence(0), key:int(0,49), value:int(0,1000), ts:timestamp(1)',
            'gen.event.time.field' = 'ts', 'gen.watermark.max_out_of_orderness' = '0ms', 'batch.size' = '1000',
            'out.type' = 'file_sink', 'out.path' = 'out/r.jsonl');";
    let (ok, log) = crate::common::run_app(dir, app);
    assert!(ok, "{log}");
    let (keys, rows) = row_state(&log);
    assert!(
        keys < 6_000,
        "keys expire 2 s after their last row: {keys} held at most"
    );
    assert!(rows <= 600, "10-row buffers of 50 keys: {rows} rows kept");
    // every record once, each id its own key, and the buffer's average
    let text = std::fs::read_to_string(dir.join("out/r.jsonl")).unwrap();
    let mut by_key: std::collections::BTreeMap<i64, Vec<(i64, i64, f64)>> = Default::default();
    let mut n = 0;
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["n"], 1, "{l}");
        by_key.entry(v["key"].as_i64().unwrap()).or_default().push((
            v["id"].as_i64().unwrap(),
            v["value"].as_i64().unwrap(),
            v["a"].as_f64().unwrap(),
        ));
        n += 1;
    }
    assert_eq!(n, 60_000);
    for rows in by_key.values_mut() {
        rows.sort_by_key(|r| r.0);
        for i in 0..rows.len() {
            let w = &rows[i.saturating_sub(9)..=i];
            let want = w.iter().map(|r| r.1 as f64).sum::<f64>() / w.len() as f64;
            assert!(
                (rows[i].2 - want).abs() < 1e-9,
                "id {}: {} vs {want}",
                rows[i].0,
                rows[i].2
            );
        }
    }
}
