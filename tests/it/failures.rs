//! An epoch that fails leaves no trace (ARCHITECTURE.md decision 7): a
//! windowed, a joined and a row-window job whose sink fails on a random
//! epoch — at write, at prepare, at commit — under RetryWithBackoff over
//! file sources (which go back to the last committed position) must equal
//! DataFusion's batch answer. A failure at write or prepare is read again
//! within the run; one at commit (after the checkpoint) stops the job, and
//! the restart publishes what the checkpoint committed and goes on.
//! Failures are injected with `VELO_FAIL_SINK` (velo-engine `fanout`).

use std::path::Path;

use rand::{Rng, SeedableRng};

use crate::common::run_in;
use crate::windows::{events, oracle, rows_of_published, write_jsonl};

/// The phases a sink can fail in.
const PHASES: &[&str] = &["write", "prepare", "commit"];

/// Runs `dir/app.sql` with sink `sink` failing twice in a row (a write is
/// tried twice with `max_retries` = 1) in `phase` of `epoch`; returns the
/// log of the run(s) that finished it.
fn run_failing(dir: &Path, sink: &str, phase: &str, epoch: u64) -> String {
    let fault = vec![(
        "VELO_FAIL_SINK".to_string(),
        format!("{sink}:{phase}:{epoch}:2"),
    )];
    let o = run_in(dir, &["run", "app.sql"], &fault);
    let log = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        log.contains("injected failure"),
        "{phase}@{epoch}: the fault fires: {log}"
    );
    if phase == "commit" {
        // published nowhere yet committed by the checkpoint: the job stops,
        // and the restart publishes it
        assert_eq!(o.status.code(), Some(2), "{phase}@{epoch}: {log}");
        let o = run_in(dir, &["run", "app.sql"], &[]);
        let again = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "restart after {phase}@{epoch}: {again}");
        assert!(again.contains("resuming after checkpoint"), "{again}");
        format!("{log}\n--- restart ---\n{again}")
    } else {
        assert!(o.status.success(), "{phase}@{epoch}: {log}");
        assert!(
            log.contains("reading it again from the last committed position"),
            "{phase}@{epoch}: the epoch is read again: {log}"
        );
        log
    }
}

/// The job keys of a retrying, checkpointed job at `batch` records per epoch.
fn retrying(batch: usize) -> String {
    format!(
        "'batch.size' = '{batch}', 'failure_strategy' = 'RetryWithBackoff', 'max_retries' = '1', \
         'retry_backoff' = '10ms', 'use_transactions' = 'true', 'state.dir' = 'state'"
    )
}

/// Asserts two sorted row sets are equal, showing the difference.
fn same(what: &str, got: &[String], want: &[String]) {
    let only_got: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(3).collect();
    let only_want: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(3).collect();
    assert!(
        got == want,
        "{what}: {} streaming rows vs {} batch rows; only streaming: {only_got:?}; only batch: {only_want:?}",
        got.len(),
        want.len()
    );
}

#[test]
fn a_window_job_whose_sink_fails_equals_the_batch_answer() {
    let _machine = crate::common::exclusive();
    for (i, phase) in PHASES.iter().enumerate() {
        let seed = 40 + i as u64;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let ev = events(seed, 3_000, 1_500);
        write_jsonl(&dir.join("data/events.jsonl"), &ev);
        let batch = rng.random_range(100..300);
        let epoch = rng.random_range(2..8);
        let app = format!(
            "CREATE STREAM tumbling AS SELECT k, CAST(window_start AS BIGINT) AS ws, COUNT(*) AS n, SUM(v) AS total
               FROM events GROUP BY k, TUMBLE(ts, INTERVAL '1' SECOND) INTO t
               WITH ('events.type' = 'file_source', 'events.path' = 'data/events.jsonl',
                     'events.schema' = 'k VARCHAR, v BIGINT, ts BIGINT',
                     'events.event.time.field' = 'ts', 'events.event.time.format' = 'epoch_millis',
                     'events.watermark.max_out_of_orderness' = '2s', {},
                     't.type' = 'file_sink', 't.path' = 'out/tumble.jsonl');",
            retrying(batch)
        );
        std::fs::write(dir.join("app.sql"), &app).unwrap();
        let log = run_failing(dir, "t", phase, epoch);
        assert!(!log.contains("late:"), "{phase}: nothing is late: {log}");
        let want = oracle(
            &ev,
            "SELECT k, CAST(date_bin(INTERVAL '1 second', ts, TIMESTAMP '1970-01-01T00:00:00') AS BIGINT) AS ws,
                    COUNT(*) AS n, SUM(v) AS total FROM events GROUP BY 1, 2",
        );
        let got = rows_of_published(&dir.join("out"), "tumble", &["k", "ws", "n", "total"]);
        same(
            &format!("tumble, {phase} fails at epoch {epoch}"),
            &got,
            &want,
        );
    }
}

#[test]
fn a_join_job_whose_sink_fails_equals_the_batch_answer() {
    let _machine = crate::common::exclusive();
    let (name, streaming, batch_sql, cols) = crate::joins::CASES
        .iter()
        .find(|c| c.0 == "left_between")
        .copied()
        .unwrap();
    for (i, phase) in PHASES.iter().enumerate() {
        let seed = 50 + i as u64;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        crate::joins::write_streams(dir, seed, 1_000);
        let batch = rng.random_range(50..200);
        let epoch = rng.random_range(2..8);
        let with = crate::joins::sources(batch).replacen(
            &format!("'batch.size' = '{batch}'"),
            &retrying(batch),
            1,
        );
        let app = format!(
            "CREATE STREAM {name} AS {streaming} INTO j WITH ({with},
               'j.type' = 'file_sink', 'j.path' = 'out/{name}.jsonl');"
        );
        std::fs::write(dir.join("app.sql"), &app).unwrap();
        let log = run_failing(dir, "j", phase, epoch);
        assert!(!log.contains("late:"), "{phase}: nothing is late: {log}");
        let want = crate::joins::batch_answer(dir, batch_sql, cols);
        let got = rows_of_published(&dir.join("out"), name, cols);
        same(
            &format!("{name}, {phase} fails at epoch {epoch}"),
            &got,
            &want,
        );
    }
}

#[test]
fn a_row_window_job_whose_sink_fails_equals_the_batch_answer() {
    let _machine = crate::common::exclusive();
    let (name, select) = crate::rowwindows::QUERIES
        .iter()
        .find(|q| q.0 == "offsets")
        .copied()
        .unwrap();
    for (i, phase) in PHASES.iter().enumerate() {
        let seed = 60 + i as u64;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let mut seen = std::collections::HashSet::new();
        let ev: Vec<(String, i64, i64)> = events(seed, 2_000, 1_500)
            .into_iter()
            .map(|(k, v, ts)| (k, v, ts / 100 * 100))
            .filter(|e| seen.insert(e.clone()))
            .collect();
        write_jsonl(&dir.join("data/events.jsonl"), &ev);
        let batch = rng.random_range(50..250);
        let epoch = rng.random_range(2..8);
        let app = format!(
            "CREATE STREAM {name} AS SELECT k, v, CAST(ts AS BIGINT) AS t, {select}
               FROM events EMIT CHANGES INTO r
               WITH ('events.type' = 'file_source', 'events.path' = 'data/events.jsonl',
                     'events.schema' = 'k VARCHAR, v BIGINT, ts BIGINT',
                     'events.event.time.field' = 'ts', 'events.event.time.format' = 'epoch_millis',
                     'events.watermark.max_out_of_orderness' = '2s', {},
                     'r.type' = 'file_sink', 'r.path' = 'out/{name}.jsonl');",
            retrying(batch)
        );
        std::fs::write(dir.join("app.sql"), &app).unwrap();
        let log = run_failing(dir, "r", phase, epoch);
        assert!(!log.contains("late:"), "{phase}: nothing is late: {log}");
        let want = oracle(
            &ev,
            &format!(
                "SELECT k, v, CAST(ts AS BIGINT) AS t, {} FROM events",
                crate::rowwindows::batch_form(select)
            ),
        );
        let got = rows_of_published(&dir.join("out"), name, &["k", "v", "t", "a", "b", "c", "d"]);
        same(
            &format!("{name}, {phase} fails at epoch {epoch}"),
            &got,
            &want,
        );
    }
}
