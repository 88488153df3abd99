//! Windows on streams: the streaming result of `velo run` against
//! DataFusion's own batch answer to the equivalent query, late data, the
//! processing-time clock and bounded state on an infinite input.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use rand::{Rng, SeedableRng};

use crate::common::run_in;

/// Events with bounded disorder: `ts` moves forward 37 ms per record, each
/// record jittered up to `disorder_ms` into the past.
pub(crate) fn events(seed: u64, n: usize, disorder_ms: i64) -> Vec<(String, i64, i64)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let base = 1_704_067_200_000i64;
    (0..n)
        .map(|i| {
            let k = format!("k{}", rng.random_range(0..5));
            let v = rng.random_range(-50..1000);
            // a 3 s pause every 300 records closes every session
            let ts =
                base + i as i64 * 37 + (i as i64 / 300) * 3_000 - rng.random_range(0..=disorder_ms);
            (k, v, ts)
        })
        .collect()
}

pub(crate) fn write_jsonl(path: &Path, ev: &[(String, i64, i64)]) {
    let mut s = String::new();
    for (k, v, ts) in ev {
        s.push_str(&format!("{{\"k\":\"{k}\",\"v\":{v},\"ts\":{ts}}}\n"));
    }
    std::fs::write(path, s).unwrap();
}

/// Rows of the JSON Lines files in `dir` named `stem...` as sorted
/// `|`-joined texts of `cols`.
pub(crate) fn rows_of_published(dir: &Path, stem: &str, cols: &[&str]) -> Vec<String> {
    let mut text = String::new();
    for f in crate::common::files_below(dir) {
        if f.to_string_lossy().starts_with(stem) {
            text.push_str(&std::fs::read_to_string(dir.join(f)).unwrap());
        }
    }
    assert!(!text.is_empty(), "no {stem}* output in {}", dir.display());
    rows_of_text(&text, cols)
}

/// Rows of a JSON Lines file as sorted `|`-joined texts of `cols`.
fn rows_of_file(path: &Path, cols: &[&str]) -> Vec<String> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    rows_of_text(&text, cols)
}

/// JSON Lines `text` as sorted `|`-joined texts of `cols`.
pub(crate) fn rows_of_text(text: &str, cols: &[&str]) -> Vec<String> {
    let mut rows: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            cols.iter()
                .map(|c| v[*c].to_string())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    rows.sort();
    rows
}

/// DataFusion's batch answer to `sql` over the events, as sorted rows.
pub(crate) fn oracle(ev: &[(String, i64, i64)], sql: &str) -> Vec<String> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("v", DataType::Int64, false),
        Field::new("ts_ms", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                ev.iter().map(|e| e.0.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(ev.iter().map(|e| e.1))),
            Arc::new(Int64Array::from_iter_values(ev.iter().map(|e| e.2))),
        ],
    )
    .unwrap();
    let oracle = crate::common::BatchOracle::new()
        .table("raw", batch)
        .run("CREATE VIEW events AS SELECT k, v, ts_ms, to_timestamp_millis(ts_ms) AS ts FROM raw");
    {
        let out = oracle.query(sql);
        let text = crate::common::jsonl_of(&out);
        let schema = out[0].schema();
        let cols: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let mut rows: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let o = v.as_object().unwrap();
                cols.iter()
                    .map(|c| {
                        o.get(*c)
                            .cloned()
                            .unwrap_or(serde_json::Value::Null)
                            .to_string()
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect();
        rows.sort();
        rows
    }
}

const COLS: &[&str] = &["k", "ws", "we", "n", "total", "lo", "hi", "odd"];

#[test]
fn windows_equal_datafusion_batch_results_at_random_epoch_sizes() {
    let _machine = crate::common::exclusive();
    for seed in 1..=3u64 {
        // the same answer at any number of partitions
        windows_case(seed, [1, 3, 2][seed as usize - 1], None);
    }
}

/// The same property with a crash right after a random checkpoint in the
/// middle and a restart from the state directory, at 1 and 3 partitions.
#[test]
fn windows_equal_the_batch_results_across_a_crash_in_the_middle() {
    let _machine = crate::common::exclusive();
    for (seed, parts) in [(4u64, 1usize), (5, 3)] {
        let at = rand::rngs::StdRng::seed_from_u64(seed).random_range(2..8);
        windows_case(seed, parts, Some(at));
    }
}

/// Tumbling, hopping and session windows over shuffled events (bounded
/// disorder) at a random epoch size in `parts` partitions, optionally
/// crashed after checkpoint `crash` and resumed; against DataFusion.
fn windows_case(seed: u64, parts: usize, crash: Option<u64>) {
    {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let ev = events(seed, 4_000, 1_500);
        write_jsonl(&dir.join("data/events.jsonl"), &ev);
        let batch = rand::rngs::StdRng::seed_from_u64(seed).random_range(1..600);
        let aggs = "COUNT(*) AS n, SUM(v) AS total, MIN(v) AS lo, MAX(v) AS hi, COUNT(DISTINCT v % 7) FILTER (WHERE v > 0) AS odd";
        let src = format!(
            "'events.type' = 'file_source', 'events.path' = 'data/events.jsonl', \
             'events.schema' = 'k VARCHAR, v BIGINT, ts BIGINT', \
             'events.event.time.field' = 'ts', 'events.event.time.format' = 'epoch_millis', \
             'events.watermark.max_out_of_orderness' = '2s', 'batch.size' = '{batch}', 'partitions' = '{parts}'{}",
            if crash.is_some() {
                ", 'use_transactions' = 'true', 'state.dir' = 'state'"
            } else {
                ""
            }
        );
        let app = format!(
            "CREATE STREAM tumbling AS SELECT k, CAST(window_start AS BIGINT) AS ws, CAST(window_end AS BIGINT) AS we, {aggs}
               FROM events GROUP BY k, TUMBLE(ts, INTERVAL '1' SECOND) INTO t
               WITH ({src}, 't.type' = 'file_sink', 't.path' = 'out/tumble.jsonl');
             CREATE STREAM hopping AS SELECT k, CAST(window_start AS BIGINT) AS ws, CAST(window_end AS BIGINT) AS we, {aggs}
               FROM events WINDOW SLIDING(ts, INTERVAL '3' SECOND, INTERVAL '1' SECOND) GROUP BY k INTO h
               WITH ({src}, 'h.type' = 'file_sink', 'h.path' = 'out/hop.jsonl');
             CREATE STREAM sessions AS SELECT k, CAST(window_start AS BIGINT) AS ws, CAST(window_end AS BIGINT) AS we, {aggs}
               FROM events GROUP BY k, SESSION(ts, INTERVAL '1' SECOND) INTO s
               WITH ({src}, 's.type' = 'file_sink', 's.path' = 'out/session.jsonl');"
        );
        let log = match crash {
            None => {
                let (ok, log) = crate::common::run_app(dir, &app);
                assert!(ok, "seed {seed}: {log}");
                log
            }
            Some(at) => {
                std::fs::write(dir.join("app.sql"), &app).unwrap();
                crate::common::crash_and_resume(dir, &[&at.to_string()])
            }
        };
        assert!(
            !log.contains("late:"),
            "seed {seed}: nothing is late: {log}"
        );

        let aggs_b = "COUNT(*) AS n, SUM(v) AS total, MIN(v) AS lo, MAX(v) AS hi, COUNT(DISTINCT v % 7) FILTER (WHERE v > 0) AS odd";
        let tumble = oracle(
            &ev,
            &format!(
                "SELECT k, CAST(date_bin(INTERVAL '1 second', ts, TIMESTAMP '1970-01-01T00:00:00') AS BIGINT) AS ws,
                        CAST(date_bin(INTERVAL '1 second', ts, TIMESTAMP '1970-01-01T00:00:00') AS BIGINT) + 1000 AS we, {aggs_b}
                 FROM events GROUP BY 1, 2, 3"
            ),
        );
        let hop = oracle(
            &ev,
            &format!(
                "WITH x AS (
                   SELECT k, v, ts_ms,
                          CAST(date_bin(INTERVAL '1 second', ts, TIMESTAMP '1970-01-01T00:00:00') AS BIGINT) - d AS ws
                   FROM events CROSS JOIN (VALUES (0), (1000), (2000)) o(d))
                 SELECT k, ws, ws + 3000 AS we, {aggs_b} FROM x WHERE ws + 3000 > ts_ms GROUP BY k, ws"
            ),
        );
        let session = oracle(
            &ev,
            &format!(
                "WITH s AS (
                   SELECT k, v, ts_ms,
                          CASE WHEN ts_ms - LAG(ts_ms) OVER (PARTITION BY k ORDER BY ts_ms) < 1000 THEN 0 ELSE 1 END AS fresh
                   FROM events),
                 n AS (SELECT k, v, ts_ms, SUM(fresh) OVER (PARTITION BY k ORDER BY ts_ms ROWS UNBOUNDED PRECEDING) AS sid FROM s)
                 SELECT k, MIN(ts_ms) AS ws, MAX(ts_ms) + 1000 AS we, {aggs_b} FROM n GROUP BY k, sid"
            ),
        );
        for (name, want) in [("tumble", tumble), ("hop", hop), ("session", session)] {
            // a transactional sink publishes one file per epoch
            let got = rows_of_published(&dir.join("out"), name, COLS);
            assert!(
                want.len() > 10,
                "{name}: a real workload ({} rows)",
                want.len()
            );
            let only_got: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(3).collect();
            let only_want: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(3).collect();
            assert!(
                got == want,
                "seed {seed}, batch.size {batch}, partitions {parts}, {name}: {} streaming rows vs {} batch rows; only streaming: {only_got:?}; only batch: {only_want:?}",
                got.len(),
                want.len()
            );
        }
    }
}

/// At several partitions the generator is read by a reader per partition,
/// each making every n-th block of rows: the windows are the same at any
/// partition count, every row is counted once and none is late, although
/// the event-time lateness allowed is zero and the readers race each other
/// (the watermark is the minimum over the readers). Also when paced.
#[test]
fn a_generator_read_in_parts_gives_the_same_windows_at_any_partition_count() {
    let _machine = crate::common::exclusive();
    for (rows, rate) in [(40_000u64, None), (12_000, Some(60_000u64))] {
        let mut first: Option<Vec<String>> = None;
        for parts in [1, 2, 3] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path();
            let rate = rate
                .map(|r| format!("'gen.rate' = '{r}', "))
                .unwrap_or_default();
            let app = format!(
                "CREATE STREAM w AS SELECT key, CAST(window_start AS BIGINT) AS ws, COUNT(*) AS n, SUM(value) AS total
                   FROM gen GROUP BY key, TUMBLE(ts, INTERVAL '1' SECOND) INTO out
                   WITH ('gen.type' = 'datagen', 'gen.rows' = '{rows}', {rate}
                         'gen.columns' = 'key:int(0,19), value:int(0,1000), ts:timestamp(1)',
                         'gen.event.time.field' = 'ts', 'gen.watermark.max_out_of_orderness' = '0ms',
                         'batch.size' = '333', 'batch.timeout' = '50ms', 'partitions' = '{parts}',
                         'out.type' = 'file_sink', 'out.path' = 'out/w.jsonl');"
            );
            let (ok, log) = crate::common::run_app(dir, &app);
            assert!(ok, "{parts} partitions: {log}");
            assert!(
                !log.contains("late:"),
                "{parts} partitions: nothing late: {log}"
            );
            let got = rows_of_file(&dir.join("out/w.jsonl"), &["key", "ws", "n", "total"]);
            let counted: u64 = got
                .iter()
                .map(|r| r.split('|').nth(2).unwrap().parse::<u64>().unwrap())
                .sum();
            assert_eq!(
                counted, rows,
                "{parts} partitions {rate}: every row counted once"
            );
            match &first {
                None => first = Some(got),
                Some(want) => assert!(
                    &got == want,
                    "{parts} partitions {rate}: {} windows vs {} at 1 partition",
                    got.len(),
                    want.len()
                ),
            }
        }
    }
}

#[test]
fn late_records_are_dropped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    // in order except every 10th record, which is 5 s old
    let base = 1_704_067_200_000i64;
    let ev: Vec<(String, i64, i64)> = (0..1_000)
        .map(|i| {
            let ts = base + i * 100 - if i % 10 == 9 { 5_000 } else { 0 };
            ("a".to_string(), 1, ts)
        })
        .collect();
    write_jsonl(&dir.join("data/events.jsonl"), &ev);
    let app = "CREATE STREAM w AS SELECT COUNT(*) AS n FROM events GROUP BY TUMBLE(ts, INTERVAL '10' SECOND) INTO out
      WITH ('events.type' = 'file_source', 'events.path' = 'data/events.jsonl',
            'events.schema' = 'k VARCHAR, v BIGINT, ts BIGINT', 'events.event.time.field' = 'ts',
            'events.watermark.max_out_of_orderness' = '1s', 'batch.size' = '50',
            'out.type' = 'file_sink', 'out.path' = 'out/w.jsonl');";
    std::fs::write(dir.join("app.sql"), app).unwrap();
    let o = run_in(dir, &["run", "app.sql"], &[]);
    let log = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{log}");
    // the first late one (record 9) is not behind the watermark yet: 5 s
    // old at 0.9 s is before the first record
    let late = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("late: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no late count: {log}"));
    let counted: u64 = rows_of_file(&dir.join("out/w.jsonl"), &["n"])
        .iter()
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    // three of the five old records in each batch of 50 after the first are
    // behind the watermark (1 s behind the batch before)
    assert_eq!(late, 57, "{log}");
    assert_eq!(counted + late, 1_000, "every record counted or late");
}

#[test]
fn processing_time_windows_close_by_the_wall_clock() {
    let _machine = crate::common::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let app = "CREATE STREAM per_second AS SELECT window_start, COUNT(*) AS n FROM gen
      WINDOW TUMBLING(INTERVAL '1' SECOND) INTO out
      WITH ('gen.type' = 'datagen', 'gen.rate' = '2000', 'gen.columns' = 'id:sequence',
            'batch.timeout' = '200ms', 'out.type' = 'file_sink', 'out.path' = 'out/w.jsonl');";
    std::fs::write(dir.join("app.sql"), app).unwrap();
    let explain = run_in(dir, &["explain", "app.sql"], &[]);
    let text = String::from_utf8_lossy(&explain.stdout).to_string();
    assert!(
        text.contains("Time: processing time"),
        "explain says how time is told: {text}"
    );
    let out = dir.join("out/w.jsonl");
    // the job never ends by itself: windows are closed by the clock
    crate::common::run_until_lines(dir, &out, 2);
    let rows = rows_of_file(&out, &["n"]);
    let full: Vec<u64> = rows.iter().map(|n| n.parse().unwrap()).collect();
    assert!(
        full.iter().any(|n| *n > 500),
        "a closed second holds about 2000 records: {full:?}"
    );
}

#[test]
fn window_state_stays_flat_on_an_infinite_input() {
    let _machine = crate::common::exclusive();
    use velo_engine::plan::{PlanOptions, resolve};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // 1 ms of event time per record: a 100 ms window every 100 records
    let sql = "CREATE STREAM w AS SELECT key, window_start, COUNT(*) AS n, AVG(value) AS a FROM gen
      GROUP BY key, TUMBLE(ts, INTERVAL '100' MILLISECOND) INTO out
      WITH ('gen.type' = 'datagen', 'gen.rate' = '100000', 'gen.columns' = 'key:int(0,49), value:float(0,1), ts:timestamp(1)',
            'gen.event.time.field' = 'ts', 'gen.watermark.max_out_of_orderness' = '0ms',
            'batch.timeout' = '50ms', 'out.type' = 'file_sink', 'out.path' = 'out/w.jsonl');";
    let path = dir.join("app.sql");
    std::fs::write(&path, sql).unwrap();
    let opts = PlanOptions {
        no_global: true,
        ..Default::default()
    };
    let app = resolve(sql, &path, &opts).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let shutdown = velo_engine::Shutdown::default();
    let (stats, samples, last) = rt.block_on(async {
        let p = velo_engine::runtime::prepare_job(
            &app.jobs[0],
            &shutdown,
            velo_engine::runtime::Purpose::Run,
        )
        .await
        .unwrap();
        // the job's handle: its live status is what is sampled
        let job = velo_engine::runtime::JobHandle::start(p, shutdown.clone());
        let mut samples = Vec::new();
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let s = job.status();
            assert_eq!(s.state, velo_engine::runtime::JobState::Running, "{s:?}");
            samples.push((s.records_in["gen"], s.state_rows, s.memory_bytes));
        }
        job.stop();
        assert_eq!(job.status().state, velo_engine::runtime::JobState::Stopping);
        let last = job.status();
        (job.wait().await.unwrap(), samples, last)
    });
    // the status was live: records, epochs, a watermark, state; and the
    // run's stats continue from it
    assert!(samples[0].0 < samples[samples.len() - 1].0, "{samples:?}");
    assert!(
        last.epochs > 10 && last.watermark.is_some() && last.last_error.is_none(),
        "{last:?}"
    );
    assert!(
        last.records_out["out"] > 0 && samples.iter().any(|s| s.2 > 0),
        "{last:?}"
    );
    let read = stats.records_processed;
    assert!(read >= last.records_in["gen"], "{read} < {last:?}");
    assert!(read > 100_000, "ran over many windows ({read} records)");
    let windows = read / 100;
    // the state holds the windows of at most one epoch: as much at the end
    // as at the start, after thousands of windows
    let half = samples.len() / 2;
    let first = |f: fn(&(u64, u64, u64)) -> u64| samples[..half].iter().map(f).max().unwrap();
    let second = |f: fn(&(u64, u64, u64)) -> u64| samples[half..].iter().map(f).max().unwrap();
    let (g1, g2) = (first(|s| s.1), second(|s| s.1));
    let (b1, b2) = (first(|s| s.2), second(|s| s.2));
    assert!(
        g2 <= g1 * 2 + 100 && b2 <= b1 * 2 + 65_536,
        "state grows with the input after {windows} windows: groups {g1} then {g2}, bytes {b1} then {b2}: {samples:?}"
    );
    assert!(g2 < 50 * 1_000, "{g2} groups held");
    let out = std::fs::read_to_string(dir.join("out/w.jsonl")).unwrap();
    assert!(out.lines().count() as u64 > windows, "windows were emitted");
}

/// LAG on a stream: every row's previous value of its key, also across
/// epochs (the operator keeps the last row of each key); functions that
/// need every row of a key are refused on a stream with a clear error.
#[test]
fn lag_over_a_stream_sees_the_previous_row_of_its_key_across_epochs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let app = "CREATE STREAM w AS SELECT key, id, value, LAG(value, 1) OVER (PARTITION BY key ORDER BY id) AS prev,
        LAG(value, 2) OVER (PARTITION BY key ORDER BY id) AS prev2 FROM gen INTO out
      WITH ('gen.type' = 'datagen', 'gen.rate' = '2000', 'gen.columns' = 'id:sequence(0), key:int(0,4), value:int(0,1000000)',
            'batch.timeout' = '50ms', 'out.type' = 'file_sink', 'out.path' = 'out/w.jsonl');";
    std::fs::write(dir.join("app.sql"), app).unwrap();
    let out = dir.join("out/w.jsonl");
    crate::common::run_until_lines(dir, &out, 500);
    let mut by_key: std::collections::BTreeMap<i64, Vec<serde_json::Value>> = Default::default();
    let text = std::fs::read_to_string(&out).unwrap();
    let mut ids = Vec::new();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        ids.push(v["id"].as_i64().unwrap());
        by_key
            .entry(v["key"].as_i64().unwrap())
            .or_default()
            .push(v);
    }
    ids.sort();
    assert!(
        ids.iter().copied().eq(0..ids.len() as i64),
        "every record once"
    );
    for (k, rows) in by_key.iter_mut() {
        rows.sort_by_key(|r| r["id"].as_i64().unwrap());
        for (i, r) in rows.iter().enumerate() {
            let want = |back: usize| {
                if i >= back {
                    rows[i - back]["value"].clone()
                } else {
                    serde_json::Value::Null
                }
            };
            assert_eq!(r["prev"], want(1), "key {k}, row {r}");
            assert_eq!(r["prev2"], want(2), "key {k}, row {r}");
        }
    }
    // many epochs: the history carried the previous rows over
    assert!(text.lines().count() >= 500);

    let app = app.replace("LAG(value, 2)", "NTILE(4)");
    std::fs::write(dir.join("app.sql"), app).unwrap();
    let o = run_in(dir, &["run", "app.sql"], &[]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        !o.status.success() && err.contains("needs every row of its key"),
        "{err}"
    );
}

/// The state of the streaming operators is accounted in the memory pool
/// all jobs of the process share: under `--memory-limit` a window whose
/// groups would pass it fails its epoch with an error saying what to do,
/// and the run does not exit 0; with room, the same job runs to its end.
#[test]
fn window_state_is_held_to_the_memory_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // 200,000 distinct keys in one window of an hour: megabytes of groups
    let app = "CREATE STREAM w AS SELECT key, COUNT(*) AS n FROM gen
        GROUP BY key, TUMBLE(ts, INTERVAL '1' HOUR) INTO out
        WITH ('gen.type' = 'datagen', 'gen.rows' = '200000', 'gen.columns' = 'key:sequence(0), ts:timestamp(0)',
              'gen.event.time.field' = 'ts', 'batch.size' = '50000',
              'out.type' = 'file_sink', 'out.path' = 'out/w.jsonl');";
    std::fs::write(dir.join("app.sql"), app).unwrap();
    let out = crate::common::run_in(dir, &["run", "app.sql", "--memory-limit", "1MB"], &[]);
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("WindowAggregateExec") && log.contains("raise --memory-limit"),
        "{log}"
    );
    // the log is not a terminal: no colour codes in it
    assert!(!log.contains('\u{1b}'), "{log}");
    let out = crate::common::run_in(dir, &["run", "app.sql", "--memory-limit", "1GB"], &[]);
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    let rows = std::fs::read_to_string(dir.join("out/w.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 200_000);
    // a size that is not one is refused before anything runs
    let out = crate::common::run_in(dir, &["run", "app.sql", "--memory-limit", "lots"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a size"));
}

/// Without `batch.size`, a job that keeps state reads a bounded input in
/// epochs of 100,000 records (windows close as the input goes by), not in
/// one epoch that holds every window open to the end; `explain` says so.
#[test]
fn stateful_jobs_read_bounded_input_in_epochs_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let app = "CREATE STREAM w AS SELECT key, COUNT(*) AS n FROM gen
        GROUP BY key, TUMBLE(ts, INTERVAL '1' SECOND) INTO out
        WITH ('gen.type' = 'datagen', 'gen.rows' = '250000', 'gen.columns' = 'key:int(0,9), ts:timestamp(1)',
              'gen.event.time.field' = 'ts', 'gen.watermark.max_out_of_orderness' = '0ms',
              'out.type' = 'file_sink', 'out.path' = 'out/w.jsonl');";
    std::fs::write(dir.join("app.sql"), app).unwrap();
    let out = crate::common::run_in(dir, &["run", "app.sql"], &[]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("250000 records read, 0 failed, 3 epochs"),
        "{text}"
    );
    let counted: u64 = std::fs::read_to_string(dir.join("out/w.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(counted, 250_000);
    let explain = crate::common::run_in(dir, &["explain", "app.sql"], &[]);
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(
        text.contains("batch.size 100000 (the default of a query that keeps state)"),
        "{text}"
    );
}

/// Operator state is checkpointed under a stable id that describes the
/// operator: a query whose window changed between a crash and the restart
/// is refused, naming the operator, instead of restoring one window's state
/// into another (the state has the same shape).
#[test]
fn a_changed_window_does_not_resume_from_the_state_of_the_old_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    write_jsonl(&dir.join("data/events.jsonl"), &events(3, 3_000, 0));
    let app = |size: u32| {
        format!(
            "CREATE STREAM w AS SELECT k, COUNT(*) AS n FROM events GROUP BY k, TUMBLE(ts, INTERVAL '{size}' SECOND)
               INTO out WITH ('events.type' = 'file_source', 'events.path' = 'data/events.jsonl',
                 'events.schema' = 'k VARCHAR, v BIGINT, ts BIGINT',
                 'events.event.time.field' = 'ts', 'events.event.time.format' = 'epoch_millis',
                 'batch.size' = '500', 'state.dir' = 'state', 'use_transactions' = 'true',
                 'out.type' = 'file_sink', 'out.path' = 'out/w.jsonl');"
        )
    };
    std::fs::write(dir.join("app.sql"), app(1)).unwrap();
    let crash = vec![("VELO_CRASH_AFTER_CHECKPOINT".to_string(), "2".to_string())];
    let o = crate::common::run_in(dir, &["run", "app.sql"], &crash);
    assert!(!o.status.success());
    std::fs::write(dir.join("app.sql"), app(2)).unwrap();
    let o = crate::common::run_in(dir, &["run", "app.sql"], &[]);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{log}");
    assert!(
        log.contains(
            "the checkpoint holds no state for the operator 'WindowAggregateExec: tumble 2s"
        ),
        "{log}"
    );
    // the query it was written by resumes
    std::fs::write(dir.join("app.sql"), app(1)).unwrap();
    let o = crate::common::run_in(dir, &["run", "app.sql"], &[]);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && log.contains("resuming after checkpoint"),
        "{log}"
    );
}
