//! Sink health and circuit breakers under `velo server`: a sink whose
//! target is unavailable for 30 s mid-run (its output folder replaced by a
//! file, which even root cannot write into). With a circuit breaker,
//! RetryWithBackoff holds the epoch for as long as it takes (the job's
//! `max_retries` alone would have stopped it within a second), the status
//! and the metrics say the sink is reconnecting with its circuit open, and
//! once the folder is back every record is written, exactly once.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::wait_for;
use crate::server::{Server, drop_file, ids_written, sample, scrape};

fn guarded_app(dir: &Path, breaker: bool) -> String {
    let circuit = if breaker {
        "'out.circuit_breaker.failure_threshold' = '2', 'out.circuit_breaker.reset_timeout' = '2s',"
    } else {
        ""
    };
    format!(
        "CREATE STREAM guarded AS SELECT id FROM incoming INTO out
         WITH ('incoming.type' = 'file_source', 'incoming.path' = '{d}/in/*.jsonl',
               'incoming.watch' = 'true', 'incoming.watch_interval' = '50ms', 'incoming.schema' = 'id BIGINT',
               'out.type' = 'file_sink', 'out.path' = '{d}/out/out.jsonl', {circuit}
               'failure_strategy' = 'RetryWithBackoff', 'max_retries' = '2', 'retry_backoff' = '100ms',
               'batch.timeout' = '100ms', 'use_transactions' = 'true');",
        d = dir.display()
    )
}

/// Makes `dir/out` unwritable: the folder moved away, a file in its place.
fn break_output(dir: &Path) {
    std::fs::rename(dir.join("out"), dir.join("out.away")).unwrap();
    std::fs::write(dir.join("out"), "not a folder").unwrap();
}

fn mend_output(dir: &Path) {
    std::fs::remove_file(dir.join("out")).unwrap();
    std::fs::rename(dir.join("out.away"), dir.join("out")).unwrap();
}

#[test]
fn a_circuit_breaker_holds_the_epoch_through_a_30s_sink_outage_and_nothing_is_lost() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let s = Server::start(dir, &[]);
    let (code, v) = s.deploy(&guarded_app(dir, true), "guarded", dir);
    assert_eq!(code, 201, "{v}");
    drop_file(&dir.join("in"), "a.jsonl", 0..20);
    wait_for(Duration::from_secs(30), "the first records", || {
        ids_written(&dir.join("out")).len() == 20
    });
    let st = s.status("guarded");
    assert_eq!(st["sinks"]["out"], "Connected", "{st}");
    assert_eq!(st["circuits"]["out"]["state"], "closed", "{st}");

    // the outage: 30 s, records arriving meanwhile
    let outage = Instant::now();
    break_output(dir);
    drop_file(&dir.join("in"), "b.jsonl", 20..40);
    wait_for(Duration::from_secs(30), "the circuit to open", || {
        s.status("guarded")["circuits"]["out"]["state"] == "open"
    });
    let st = s.status("guarded");
    assert_eq!(st["status"], "Running", "{st}");
    assert_eq!(st["sinks"]["out"], "Reconnecting", "{st}");
    assert!(
        st["circuits"]["out"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("out"),
        "{st}"
    );
    let samples = scrape(s.port);
    assert_eq!(
        sample(
            &samples,
            "velo_job_sink_circuit_state",
            &[("job", "guarded"), ("sink", "out")]
        ),
        Some(1.0)
    );
    drop_file(&dir.join("in"), "c.jsonl", 40..50);
    while outage.elapsed() < Duration::from_secs(30) {
        let st = s.status("guarded");
        assert_eq!(
            st["status"],
            "Running",
            "the job held on: {st}\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let st = s.status("guarded");
    assert!(
        st["circuits"]["out"]["opened"].as_u64().unwrap() >= 2,
        "probed and opened again: {st}"
    );
    mend_output(dir);

    // after the outage: everything, once
    wait_for(Duration::from_secs(30), "the held records", || {
        ids_written(&dir.join("out")).len() >= 50
    });
    s.two_more_epochs("guarded");
    assert_eq!(ids_written(&dir.join("out")), (0..50).collect::<Vec<_>>());
    let st = s.status("guarded");
    assert_eq!(st["sinks"]["out"], "Connected", "{st}");
    assert_eq!(st["circuits"]["out"]["state"], "closed", "{st}");
    assert_eq!(st["circuits"]["out"]["failures_in_row"], 0, "{st}");
    assert_eq!(st["metrics"]["records_written"], 50, "{st}");
    let samples = scrape(s.port);
    let l = [("job", "guarded"), ("sink", "out")];
    assert_eq!(
        sample(&samples, "velo_job_sink_circuit_state", &l),
        Some(0.0)
    );
    assert!(sample(&samples, "velo_job_sink_circuit_opened_total", &l).unwrap() >= 2.0);
    assert!(sample(&samples, "velo_job_sink_errors_total", &l).unwrap() >= 3.0);
}

#[test]
fn without_a_circuit_breaker_the_same_outage_stops_the_job_after_max_retries() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let s = Server::start(dir, &[]);
    let (code, v) = s.deploy(&guarded_app(dir, false), "guarded", dir);
    assert_eq!(code, 201, "{v}");
    drop_file(&dir.join("in"), "a.jsonl", 0..20);
    wait_for(Duration::from_secs(30), "the first records", || {
        ids_written(&dir.join("out")).len() == 20
    });
    break_output(dir);
    drop_file(&dir.join("in"), "b.jsonl", 20..40);
    let st = s.wait_status("guarded", "Failed");
    assert_eq!(st["sinks"]["out"], "Failed", "{st}");
    assert!(
        st["error"]
            .as_str()
            .unwrap_or_default()
            .contains("max_retries"),
        "{st}"
    );
    // nothing of the failed epochs was published
    mend_output(dir);
    assert_eq!(ids_written(&dir.join("out")), (0..20).collect::<Vec<_>>());
}

#[test]
fn under_log_and_continue_an_open_circuit_skips_the_sink_and_counts_its_records_as_failed() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // every write of sink 'flaky' fails, as a full disk would
    let s = Server::start(dir, &[("VELO_FAIL_SINK", "flaky:write:1:1000000")]);
    let app = format!(
        "CREATE STREAM split AS SELECT id FROM incoming INTO keep, flaky
         WITH ('incoming.type' = 'file_source', 'incoming.path' = '{d}/in/*.jsonl',
               'incoming.watch' = 'true', 'incoming.watch_interval' = '50ms', 'incoming.schema' = 'id BIGINT',
               'keep.type' = 'file_sink', 'keep.path' = '{d}/keep/out.jsonl',
               'flaky.type' = 'file_sink', 'flaky.path' = '{d}/flaky/out.jsonl',
               'flaky.circuit_breaker.failure_threshold' = '1', 'flaky.circuit_breaker.reset_timeout' = '1s',
               'failure_strategy' = 'LogAndContinue', 'batch.timeout' = '100ms');",
        d = dir.display()
    );
    let (code, v) = s.deploy(&app, "split", dir);
    assert_eq!(code, 201, "{v}");
    for i in 0..30u64 {
        drop_file(&dir.join("in"), &format!("{i}.jsonl"), i * 10..i * 10 + 10);
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for(
        Duration::from_secs(30),
        "the healthy sink to have all",
        || ids_written(&dir.join("keep")).len() == 300,
    );
    s.two_more_epochs("split");
    assert_eq!(ids_written(&dir.join("keep")), (0..300).collect::<Vec<_>>());
    assert_eq!(ids_written(&dir.join("flaky")), Vec::<u64>::new());
    let st = s.status("split");
    assert_eq!(st["status"], "Running", "{st}");
    assert_eq!(st["sinks"]["keep"], "Connected", "{st}");
    assert_eq!(st["sinks"]["flaky"], "Reconnecting", "{st}");
    let flaky = &st["circuits"]["flaky"];
    assert_eq!(flaky["records_failed"], 300, "every record counted: {st}");
    // the sink was called about once a second (its probes), not for each
    // of the ~30 epochs that had records for it
    let attempts = flaky["errors"].as_u64().unwrap();
    assert!((1..=10).contains(&attempts), "{st}");
    assert!(flaky["opened"].as_u64().unwrap() >= 1, "{st}");
    assert_eq!(st["metrics"]["sinks"]["keep"], 300, "{st}");
}

#[test]
fn a_bad_circuit_breaker_is_refused_by_validate() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    for (keys, says) in [
        (
            "'out.circuit_breaker.failure_threshold' = '0'",
            "circuit_breaker.failure_threshold",
        ),
        (
            "'out.circuit_breaker.reset_timeout' = '5s'",
            "set circuit_breaker.failure_threshold too",
        ),
        (
            "'out.circuit_breaker.failure_threshold' = 'three'",
            "circuit_breaker.failure_threshold",
        ),
    ] {
        let app = format!(
            "CREATE STREAM s AS SELECT id FROM gen INTO out
             WITH ('gen.type' = 'datagen', 'gen.columns' = 'id:sequence(1)', 'gen.rows' = '5',
                   'out.type' = 'file_sink', 'out.path' = 'out.jsonl', {keys});"
        );
        std::fs::write(dir.join("app.sql"), app).unwrap();
        let o = crate::common::run_in(dir, &["validate", "app.sql"], &[]);
        let err =
            String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{keys}: {err}");
        assert!(err.contains(says), "{keys}: {err}");
    }
}
