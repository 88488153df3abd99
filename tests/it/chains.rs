//! Chained streams: a `CREATE STREAM` read by later statements of the same
//! application, in memory, checked against DataFusion's batch answer, also
//! across a crash.

use rand::{Rng, SeedableRng};

use crate::windows::{events, oracle, rows_of_published, write_jsonl};

/// A filter (a definition only: no INTO), a window over it (with a sink of
/// its own) and a filter over the window's results, at random epoch sizes
/// and partition counts, once straight and once with a crash after a
/// checkpoint.
#[test]
fn a_chain_of_streams_equals_the_batch_answer() {
    for (seed, crash) in [(11u64, None), (12, Some(2u64))] {
        chain_case(seed, crash);
    }
}

fn chain_case(seed: u64, crash: Option<u64>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let ev = events(seed, 4_000, 1_500);
    write_jsonl(&dir.join("data/events.jsonl"), &ev);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let job = format!(
        "'batch.size' = '{}', 'partitions' = '{}'{}",
        rng.random_range(50..600),
        rng.random_range(1..4),
        if crash.is_some() {
            ", 'use_transactions' = 'true', 'state.dir' = 'state'"
        } else {
            ""
        }
    );
    let app = format!(
        "CREATE STREAM positive AS SELECT k, v, ts FROM events WHERE v > 100;
         CREATE STREAM per_second AS
           SELECT k, CAST(window_start AS BIGINT) AS ws, COUNT(*) AS n, SUM(v) AS total
           FROM positive GROUP BY k, TUMBLE(ts, INTERVAL '1' SECOND)
           INTO t WITH ('events.type' = 'file_source', 'events.path' = 'data/events.jsonl',
             'events.schema' = 'k VARCHAR, v BIGINT, ts BIGINT',
             'events.event.time.field' = 'ts', 'events.event.time.format' = 'epoch_millis',
             'events.watermark.max_out_of_orderness' = '2s',
             't.type' = 'file_sink', 't.path' = 'out/per_second.jsonl', {job});
         CREATE STREAM busy AS SELECT k, ws, n FROM per_second WHERE n >= 4
           INTO b WITH ('b.type' = 'file_sink', 'b.path' = 'out/busy.jsonl', {job});"
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
    // 'positive' only defines a step: no job prints its rows
    assert!(!log.contains(r#""v":"#), "seed {seed}: {log}");
    assert!(!log.contains("positive: no INTO"), "seed {seed}: {log}");

    let windows = "SELECT k, CAST(date_bin(INTERVAL '1 second', ts, TIMESTAMP '1970-01-01T00:00:00') AS BIGINT) AS ws,
                          COUNT(*) AS n, SUM(v) AS total
                   FROM events WHERE v > 100 GROUP BY 1, 2";
    let want_windows = oracle(&ev, windows);
    let want_busy = oracle(
        &ev,
        &format!("SELECT k, ws, n FROM ({windows}) WHERE n >= 4"),
    );
    assert!(want_busy.len() > 10 && want_busy.len() < want_windows.len());
    let got_windows = rows_of_published(&dir.join("out"), "per_second", &["k", "ws", "n", "total"]);
    let got_busy = rows_of_published(&dir.join("out"), "busy", &["k", "ws", "n"]);
    assert_eq!(got_windows, want_windows, "seed {seed}: per_second ({job})");
    assert_eq!(got_busy, want_busy, "seed {seed}: busy ({job})");
}

/// A GROUP BY over bounded input is a table; a later statement filters it
/// like HAVING would. A chain that reads a changelog (EMIT CHANGES) is
/// refused, saying what to do.
#[test]
fn a_chain_over_a_grouped_stream_filters_its_table_and_a_changelog_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ev = events(5, 2_000, 0);
    write_jsonl(&dir.join("events.jsonl"), &ev);
    let src = "'events.type' = 'file_source', 'events.path' = 'events.jsonl',
               'events.schema' = 'k VARCHAR, v BIGINT, ts BIGINT'";
    let app = |emit: &str| {
        format!(
            "CREATE STREAM totals AS SELECT k, SUM(v) AS s, COUNT(*) AS n FROM events GROUP BY k {emit};
             CREATE STREAM big AS SELECT k, s FROM totals WHERE n > 390
               INTO out WITH ({src}, 'out.type' = 'file_sink', 'out.path' = 'out/big.jsonl');"
        )
    };
    let (ok, log) = crate::common::run_app(dir, &app(""));
    assert!(ok, "{log}");
    let want = oracle(
        &ev,
        "SELECT k, SUM(v) AS s FROM events GROUP BY k HAVING COUNT(*) > 390",
    );
    assert!(!want.is_empty() && want.len() < 5, "{want:?}");
    assert_eq!(
        rows_of_published(&dir.join("out"), "big", &["k", "s"]),
        want
    );

    let (ok, log) = crate::common::run_app(dir, &app("EMIT CHANGES"));
    assert!(!ok, "{log}");
    assert!(
        log.contains("'big' reads the stream 'totals', whose result is a changelog (EMIT CHANGES)")
            && log.contains("write 'totals' into a sink and read that"),
        "{log}"
    );
}

/// A window over a chained window's results: per-second counts, then
/// five-second sums of them (the batch answer: five-second counts, and the
/// seconds with records in each).
#[test]
fn a_window_over_a_chained_window_equals_the_batch_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let ev = events(13, 4_000, 1_500);
    write_jsonl(&dir.join("data/events.jsonl"), &ev);
    let app = "CREATE STREAM per_second AS
           SELECT k, window_start AS ws, COUNT(*) AS n FROM events GROUP BY k, TUMBLE(ts, INTERVAL '1' SECOND);
         CREATE STREAM per_five AS
           SELECT k, CAST(window_start AS BIGINT) AS w5, SUM(n) AS n5, COUNT(*) AS secs
           FROM per_second GROUP BY k, TUMBLE(ws, INTERVAL '5' SECOND)
           INTO out WITH ('events.type' = 'file_source', 'events.path' = 'data/events.jsonl',
             'events.schema' = 'k VARCHAR, v BIGINT, ts BIGINT',
             'events.event.time.field' = 'ts', 'events.event.time.format' = 'epoch_millis',
             'events.watermark.max_out_of_orderness' = '2s', 'batch.size' = '300', 'partitions' = '2',
             'out.type' = 'file_sink', 'out.path' = 'out/per_five.jsonl');";
    let (ok, log) = crate::common::run_app(dir, app);
    assert!(ok, "{log}");
    let want = oracle(
        &ev,
        "SELECT k, CAST(date_bin(INTERVAL '5 seconds', ts, TIMESTAMP '1970-01-01T00:00:00') AS BIGINT) AS w5,
                COUNT(*) AS n5, COUNT(DISTINCT ts_ms / 1000) AS secs
         FROM events GROUP BY 1, 2",
    );
    assert!(want.len() > 100);
    assert_eq!(
        rows_of_published(&dir.join("out"), "per_five", &["k", "w5", "n5", "secs"]),
        want
    );
}
