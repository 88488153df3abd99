//! Top-N per window and deduplication on a stream, checked against
//! DataFusion's batch answer.

use rand::{Rng, SeedableRng};

use crate::windows::{events, oracle, rows_of_published, write_jsonl};

const SOURCE: &str = "'events.type' = 'file_source', 'events.path' = 'data/events.jsonl',
    'events.schema' = 'k VARCHAR, v BIGINT, ts BIGINT',
    'events.event.time.field' = 'ts', 'events.event.time.format' = 'epoch_millis',
    'events.watermark.max_out_of_orderness' = '2s'";

/// The peak keys of a run's `row-window state: at most K keys` line (0
/// without one).
fn peak_row_window_keys(log: &str) -> u64 {
    log.split("row-window state: at most ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .map_or(0, |n| n.parse().unwrap())
}

/// The two busiest keys of every one-second window (ROW_NUMBER over the
/// windows' results, PARTITION BY the window's start), at random epoch
/// sizes and partition counts and across a crash: the batch answer, with
/// each window's ranking state dropped once the window has closed (a
/// stream of windows keeps no state per past window).
#[test]
fn top_n_per_window_equals_the_batch_answer_and_forgets_closed_windows() {
    for (seed, crash) in [(21u64, None), (22, Some(3u64))] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let ev = events(seed, 6_000, 1_500);
        write_jsonl(&dir.join("data/events.jsonl"), &ev);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let job = format!(
            "'batch.size' = '{}', 'partitions' = '{}'{}",
            rng.random_range(100..700),
            rng.random_range(1..4),
            if crash.is_some() {
                ", 'use_transactions' = 'true', 'state.dir' = 'state'"
            } else {
                ""
            }
        );
        let app = format!(
            "CREATE STREAM counts AS
               SELECT k, CAST(window_start AS BIGINT) AS ws, COUNT(*) AS n, SUM(v) AS total
               FROM events GROUP BY k, TUMBLE(ts, INTERVAL '1' SECOND);
             CREATE STREAM top2 AS
               SELECT k, ws, n, total, rn FROM (
                 SELECT k, ws, n, total, ROW_NUMBER() OVER (PARTITION BY ws ORDER BY n DESC, k) AS rn
                 FROM counts)
               WHERE rn <= 2
               INTO out WITH ({SOURCE}, 'out.type' = 'file_sink', 'out.path' = 'out/top2.jsonl', {job});"
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
        let want = oracle(
            &ev,
            "SELECT k, ws, n, total, rn FROM (
               SELECT k, ws, n, total, ROW_NUMBER() OVER (PARTITION BY ws ORDER BY n DESC, k) AS rn
               FROM (SELECT k, CAST(date_bin(INTERVAL '1 second', ts, TIMESTAMP '1970-01-01T00:00:00') AS BIGINT) AS ws,
                            COUNT(*) AS n, SUM(v) AS total
                     FROM events GROUP BY 1, 2))
             WHERE rn <= 2",
        );
        assert!(want.len() > 200, "{}", want.len());
        let got = rows_of_published(&dir.join("out"), "top2", &["k", "ws", "n", "total", "rn"]);
        assert_eq!(got, want, "seed {seed} ({job})");
        // about 200 windows: without closing, one key per window stays
        let peak = peak_row_window_keys(&log);
        assert!(peak <= 10, "seed {seed}: {peak} keys kept: {log}");
    }
}

/// Keep the first row per key on a stream (ROW_NUMBER in event-time order
/// = 1), and the first and last row of each key per window (first_value /
/// last_value of a windowed GROUP BY): the batch answers. Keep-last as
/// ROW_NUMBER in descending event time is refused with the forms that work.
#[test]
fn deduplication_keeps_the_first_or_last_row_per_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let ev = events(31, 4_000, 1_500);
    write_jsonl(&dir.join("data/events.jsonl"), &ev);
    let app = |order: &str| {
        format!(
            "CREATE STREAM firsts AS
               SELECT k, v, CAST(ts AS BIGINT) AS t FROM (
                 SELECT k, v, ts, ROW_NUMBER() OVER (PARTITION BY k ORDER BY {order}) AS rn FROM events)
               WHERE rn = 1 EMIT CHANGES
               INTO f WITH ({SOURCE}, 'batch.size' = '250', 'f.type' = 'file_sink', 'f.path' = 'out/firsts.jsonl');
             CREATE STREAM per_window AS
               SELECT k, CAST(window_start AS BIGINT) AS ws, first_value(v ORDER BY ts, v) AS first_v,
                      last_value(v ORDER BY ts, v) AS last_v
               FROM events GROUP BY k, TUMBLE(ts, INTERVAL '1' SECOND)
               INTO w WITH ('batch.size' = '250', 'partitions' = '2', 'w.type' = 'file_sink', 'w.path' = 'out/per_window.jsonl');"
        )
    };
    let (ok, log) = crate::common::run_app(dir, &app("ts, v"));
    assert!(ok, "{log}");
    assert!(log.contains("epochs"), "{log}");
    let firsts = oracle(
        &ev,
        "SELECT k, v, t FROM (
           SELECT k, v, ts_ms AS t, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts, v) AS rn FROM events)
         WHERE rn = 1",
    );
    assert_eq!(firsts.len(), 5);
    assert_eq!(
        rows_of_published(&dir.join("out"), "firsts", &["k", "v", "t"]),
        firsts
    );
    let per_window = oracle(
        &ev,
        "SELECT k, CAST(date_bin(INTERVAL '1 second', ts, TIMESTAMP '1970-01-01T00:00:00') AS BIGINT) AS ws,
                first_value(v ORDER BY ts, v) AS first_v, last_value(v ORDER BY ts, v) AS last_v
         FROM events GROUP BY 1, 2",
    );
    assert!(per_window.len() > 100);
    assert_eq!(
        rows_of_published(
            &dir.join("out"),
            "per_window",
            &["k", "ws", "first_v", "last_v"]
        ),
        per_window
    );

    std::fs::remove_dir_all(dir.join("out")).unwrap();
    let (ok, log) = crate::common::run_app(dir, &app("ts DESC"));
    assert!(!ok, "{log}");
    assert!(
        log.contains("ordered by the event time 'ts' descending on a stream")
            && log.contains("last_value(<column> ORDER BY ts)"),
        "{log}"
    );
}
