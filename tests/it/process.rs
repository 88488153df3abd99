//! Tests that drive the `velo` process: crashes, signals, retries, watch
//! mode, Parquet input, bounded memory. They wait on conditions (output
//! appearing, a log line), never on fixed sleeps, and assert no timings.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use crate::common::{files_below, published, signal, spawn, velo, wait_for};

#[test]
fn sigkill_never_leaves_a_partial_file_visible() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("app.sql"),
        "SELECT id, pad FROM gen INTO tx WITH ('gen.type' = 'datagen', 'gen.rate' = '20000', 'gen.columns' = 'id:sequence(1), pad:string(200)',
         'tx.type' = 'file_sink', 'tx.path' = 'out/tx.jsonl', 'use_transactions' = 'true', 'batch.size' = '1000');",
    )
    .unwrap();
    for round in 0..3 {
        let mut child = spawn(d.path(), &["run", "app.sql"]);
        let before = published(&d.path().join("out"), "tx-").len();
        wait_for(Duration::from_secs(60), "epochs to be published", || {
            published(&d.path().join("out"), "tx-").len() >= before + 2 + round
        });
        signal(&child, "-KILL");
        let _ = child.wait();
        // every visible file is a whole epoch: exactly 1000 complete JSON lines
        for f in published(&d.path().join("out"), "tx-") {
            let text = std::fs::read_to_string(d.path().join("out").join(&f)).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 1000, "{} holds a partial epoch", f.display());
            for l in lines {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("{}: torn line {l:?}: {e}", f.display()));
            }
        }
    }
    // a restart cleans up the temporary files a killed run left behind
    let before = published(&d.path().join("out"), "tx-").len();
    let mut child = spawn(d.path(), &["run", "app.sql"]);
    wait_for(Duration::from_secs(60), "a new epoch after restart", || {
        published(&d.path().join("out"), "tx-").len() > before
    });
    signal(&child, "-INT");
    assert!(child.wait().unwrap().success());
    assert!(
        !files_below(d.path())
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".tmp")),
        "temporary files left: {:?}",
        files_below(d.path())
    );
}

/// The `id` of every JSON Lines row, in order.
fn ids_of_jsonl(text: &str) -> Vec<u64> {
    text.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// Large batches are encoded off the sink's thread, several at once, and
/// still written in order: CSV with one header, a JSON array, JSON Lines,
/// across epochs and files.
#[test]
fn text_files_encoded_ahead_keep_order_and_one_header() {
    let d = tempfile::tempdir().unwrap();
    let (ok, log) = crate::common::run_app(
        d.path(),
        "SELECT id, name, amount FROM gen INTO c, a, l
         WITH ('gen.type' = 'datagen', 'gen.rows' = '50000',
               'gen.columns' = 'id:sequence(1), name:string(12), amount:float(0,100)',
               'batch.size' = '7000',
               'c.type' = 'file_sink', 'c.path' = 'out/rows.csv', 'c.format' = 'csv',
               'a.type' = 'file_sink', 'a.path' = 'out/rows.json', 'a.format' = 'json_array',
               'l.type' = 'file_sink', 'l.path' = 'out/rows.jsonl');",
    );
    assert!(ok, "{log}");
    let ids = 1..=50_000u64;
    let csv = std::fs::read_to_string(d.path().join("out/rows.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("id,name,amount"), "one header first");
    let got: Vec<u64> = lines
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(got.iter().copied().eq(ids.clone()), "CSV rows in order");
    let arr: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("out/rows.json")).unwrap())
            .unwrap();
    let got: Vec<u64> = arr
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert!(got.iter().copied().eq(ids.clone()), "JSON array in order");
    let got = ids_of_jsonl(&std::fs::read_to_string(d.path().join("out/rows.jsonl")).unwrap());
    assert!(got.iter().copied().eq(ids), "JSON Lines in order");
}

#[test]
fn ctrl_c_commits_the_current_epoch_and_exits_cleanly() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("app.sql"),
        "SELECT id FROM gen INTO out WITH ('gen.type' = 'datagen', 'gen.rate' = '5000', 'gen.columns' = 'id:sequence(1)',
         'out.type' = 'file_sink', 'out.path' = 'out/ids.jsonl', 'batch.timeout' = '200ms');",
    )
    .unwrap();
    let mut child = spawn(d.path(), &["run", "app.sql"]);
    let out = d.path().join("out/ids.jsonl");
    wait_for(Duration::from_secs(60), "output", || {
        std::fs::metadata(&out)
            .map(|m| m.len() > 1000)
            .unwrap_or(false)
    });
    signal(&child, "-INT");
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    let ids = ids_of_jsonl(&std::fs::read_to_string(&out).unwrap());
    // everything read was written: no gaps, nothing lost at the stop
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    let read: u64 = err
        .split("records read")
        .next()
        .unwrap()
        .rsplit(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(read, ids.len() as u64, "{err}");
}

#[test]
fn retry_with_backoff_recovers_a_sink_or_stops_without_dropping_an_epoch() {
    let d = tempfile::tempdir().unwrap();
    let data: String = (1..=6).map(|i| format!("{{\"n\": {i}}}\n")).collect();
    std::fs::write(d.path().join("nums.jsonl"), data).unwrap();
    std::fs::write(
        d.path().join("app.sql"),
        "SELECT n FROM nums INTO flaky, stuck, fine WITH ('nums.type' = 'file_source', 'nums.path' = 'nums.jsonl',
         'flaky.type' = 'file_sink', 'flaky.path' = 'flaky/{batch_id}/x.jsonl',
         'stuck.type' = 'file_sink', 'stuck.path' = 'stuck/{batch_id}/x.jsonl',
         'fine.type' = 'file_sink', 'fine.path' = 'fine.jsonl',
         'failure_strategy' = 'RetryWithBackoff', 'max_retries' = '2', 'retry_backoff' = '50ms', 'batch.size' = '3');",
    )
    .unwrap();
    // epoch 1 of 'flaky' cannot open until the test removes the file that
    // stands where its directory goes; 'stuck' can never write epoch 2
    std::fs::create_dir_all(d.path().join("flaky")).unwrap();
    std::fs::write(d.path().join("flaky/000001"), "blocker").unwrap();
    std::fs::create_dir_all(d.path().join("stuck")).unwrap();
    for e in 2..=10 {
        std::fs::write(d.path().join(format!("stuck/{e:06}")), "blocker").unwrap();
    }
    let mut child = spawn(d.path(), &["run", "app.sql"]);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let mut removed = false;
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        if !removed && line.contains("sink=\"flaky\"") && line.contains("retrying") {
            std::fs::remove_file(d.path().join("flaky/000001")).unwrap();
            removed = true;
        }
        log.push_str(&line);
        line.clear();
    }
    // the job stops with the error: no epoch is published past the failed one
    assert_eq!(child.wait().unwrap().code(), Some(2), "{log}");
    assert!(removed, "flaky was never retried: {log}");
    assert!(
        log.contains("failed 3 times in a row (max_retries = 2)") && log.contains("'stuck'"),
        "{log}"
    );
    // epoch 1 reached every sink (flaky after its write was retried) ...
    assert_eq!(
        std::fs::read_to_string(d.path().join("flaky/000001/x.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3,
        "{log}"
    );
    // ... the failed epoch reached none: the other sinks did not publish it
    assert_eq!(
        std::fs::read_to_string(d.path().join("fine.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3,
        "{log}"
    );
    assert!(
        !log.contains("other sinks continue"),
        "RetryWithBackoff never publishes an epoch on some sinks only: {log}"
    );
}

#[test]
fn watch_mode_picks_up_new_files() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("in")).unwrap();
    std::fs::write(
        d.path().join("app.sql"),
        "SELECT id, id * 2 AS twice FROM incoming INTO out WITH ('incoming.type' = 'file_source', 'incoming.path' = 'in/*.jsonl',
         'incoming.watch' = 'true', 'incoming.watch_interval' = '50ms', 'incoming.schema' = 'id BIGINT',
         'out.type' = 'file_sink', 'out.path' = 'out/seen.jsonl', 'batch.timeout' = '100ms');",
    )
    .unwrap();
    let mut child = spawn(d.path(), &["run", "app.sql"]);
    let out = d.path().join("out/seen.jsonl");
    let count = || {
        std::fs::read_to_string(&out)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    // written elsewhere, then moved in: the source must never see half a file
    let drop_file = |name: &str, ids: std::ops::Range<u32>| {
        let tmp = d.path().join(format!("{name}.part"));
        let mut f = std::fs::File::create(&tmp).unwrap();
        for i in ids {
            writeln!(f, "{{\"id\": {i}}}").unwrap();
        }
        drop(f);
        std::fs::rename(tmp, d.path().join("in").join(name)).unwrap();
    };
    drop_file("a.jsonl", 1..4);
    wait_for(Duration::from_secs(30), "first file", || count() == 3);
    drop_file("b.jsonl", 4..6);
    wait_for(Duration::from_secs(30), "second file", || count() == 5);
    assert!(
        child.try_wait().unwrap().is_none(),
        "a watching source keeps the job running"
    );
    signal(&child, "-INT");
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("{\"id\":5,\"twice\":10}"), "{text}");
}

#[test]
fn parquet_input_is_read_and_projected() {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("pq")).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("city", DataType::Utf8, true),
        Field::new("t", DataType::Float64, true),
    ]));
    for (file, ids) in [("a.parquet", 0..3i64), ("b.parquet", 3..6)] {
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(ids.clone())),
                Arc::new(StringArray::from_iter_values(
                    ids.clone().map(|i| format!("c{i}")),
                )),
                Arc::new(Float64Array::from_iter_values(ids.map(|i| i as f64 / 2.0))),
            ],
        )
        .unwrap();
        let f = std::fs::File::create(d.path().join("pq").join(file)).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, schema.clone(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    std::fs::write(
        d.path().join("app.sql"),
        "SELECT city, t FROM 'file://pq/*.parquet' WHERE id % 2 = 1 INTO 'file://out/odd.csv';",
    )
    .unwrap();
    let out = crate::common::run_in(d.path(), &["run", "app.sql"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("out/odd.csv")).unwrap(),
        "city,t\nc1,0.5\nc3,1.5\nc5,2.5\n"
    );
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn a_large_input_streams_through_with_flat_memory() {
    // ~400 MB of JSON Lines, about 4 million rows: far more than the memory
    // the job may use, so it must stream.
    let d = tempfile::tempdir().unwrap();
    {
        let f = std::fs::File::create(d.path().join("big.jsonl")).unwrap();
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        for i in 0..4_000_000u64 {
            writeln!(w, "{{\"id\":{i},\"customer\":\"customer-{:06}\",\"amount\":{}.{:02},\"status\":\"{}\"}}", i % 100_000, i % 1000, i % 100, ["NEW", "PAID", "SHIPPED"][(i % 3) as usize]).unwrap();
        }
    }
    let size = std::fs::metadata(d.path().join("big.jsonl")).unwrap().len();
    assert!(size > 250 << 20, "input is {size} bytes");
    std::fs::write(
        d.path().join("app.sql"),
        "SELECT id, amount FROM big WHERE status = 'PAID' INTO out WITH ('big.type' = 'file_source', 'big.path' = 'big.jsonl',
         'out.type' = 'file_sink', 'out.path' = 'out/paid.jsonl');",
    )
    .unwrap();
    let mut child = velo()
        .current_dir(d.path())
        .args(["run", "app.sql"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Some(p) = peak_rss_kib(pid) {
            peak = peak.max(p);
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(child.wait().unwrap().success(), "{err}");
    assert!(err.contains("4000000 records read"), "{err}");
    // the file is decoded on several threads; the output keeps the file's order
    let ids: Vec<u64> = std::fs::read_to_string(d.path().join("out/paid.jsonl"))
        .unwrap()
        .lines()
        .map(|l| l.split(&[':', ','][..]).nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 1_333_333);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "rows out of file order"
    );
    eprintln!("peak RSS {peak} KiB for {size} bytes of input");
    assert!(
        peak > 0 && peak < 200 * 1024,
        "peak RSS {peak} KiB for a {size}-byte input: reading is not bounded"
    );
}

#[test]
fn a_terminal_shows_a_live_progress_line() {
    // `script` gives velo a pseudo-terminal, as a person at a shell has
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("the util-linux `script` command is needed for this test");
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("app.sql"),
        "SELECT id FROM gen INTO out WITH ('gen.type' = 'datagen', 'gen.rate' = '2000', 'gen.rows' = '3000', 'gen.columns' = 'id:sequence(1)',
         'out.type' = 'file_sink', 'out.path' = 'out/ids.jsonl');",
    )
    .unwrap();
    let cmd = format!("{} run app.sql", env!("CARGO_BIN_EXE_velo"));
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(d.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // the line is redrawn in place: carriage return, clear line, counters, rate
    assert!(text.contains("\r\x1b[2K[query_1] in "), "{text}");
    assert!(text.contains("rows/s"), "{text}");
    assert!(text.contains("3000 records read"), "{text}");
}

/// A lookup table with `refresh_interval` is read again while the stream
/// runs: the join picks up the new rows; without the key it never would.
#[test]
fn lookup_tables_are_reloaded_every_refresh_interval() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let rates = dir.join("data/rates.csv");
    std::fs::write(&rates, "code,rate\nA,1\n").unwrap();
    let app = "CREATE STREAM priced AS SELECT g.id, r.rate FROM gen g JOIN rates r ON g.code = r.code INTO out
      WITH ('gen.type' = 'datagen', 'gen.rate' = '500', 'gen.columns' = 'id:sequence(0), code:oneof(A)',
            'rates.type' = 'file_source', 'rates.path' = 'data/rates.csv', 'rates.refresh_interval' = '200ms',
            'batch.timeout' = '100ms', 'out.type' = 'file_sink', 'out.path' = 'out/p.jsonl');";
    std::fs::write(dir.join("app.sql"), app).unwrap();
    let explain = crate::common::run_in(dir, &["explain", "app.sql"], &[]);
    let text = String::from_utf8_lossy(&explain.stdout).to_string();
    assert!(text.contains("read again every 200ms"), "{text}");
    let mut child = spawn(dir, &["run", "app.sql"]);
    let out = dir.join("out/p.jsonl");
    let rates_seen = || -> Vec<i64> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["rate"].as_i64())
            .collect()
    };
    wait_for(Duration::from_secs(30), "rows joined with rate 1", || {
        rates_seen().len() > 20
    });
    // a new version of the table, put in place atomically
    std::fs::write(dir.join("data/rates.tmp"), "code,rate\nA,2\n").unwrap();
    std::fs::rename(dir.join("data/rates.tmp"), &rates).unwrap();
    wait_for(Duration::from_secs(30), "rows joined with rate 2", || {
        rates_seen()
            .iter()
            .rev()
            .take(20)
            .filter(|r| **r == 2)
            .count()
            == 20
    });
    signal(&child, "-INT");
    assert!(child.wait().unwrap().success());
    let seen = rates_seen();
    let first_new = seen.iter().position(|r| *r == 2).unwrap();
    assert!(first_new > 0, "rate 1 before the change");
    assert!(
        seen[first_new..].iter().all(|r| *r == 2),
        "once reloaded, only the new rows are joined"
    );
}

/// A file job with a state directory resumes where it stopped: its files at
/// the line (Parquet: row) after the last committed epoch, its windows from
/// the checkpoint. Crashed right after checkpoints (the moment a random kill
/// almost never hits), it still publishes every window once, complete.
#[test]
fn file_jobs_resume_from_the_state_directory_exactly_once() {
    resume_exactly_once("jsonl", "state", &[]);
    resume_exactly_once("parquet", "state", &[]);
}

/// The same with the state directory on an S3-compatible object store
/// (moto's server on 127.0.0.1): checkpoints and window state are objects
/// there, nothing is written locally, and the crashes resume from them.
#[test]
fn state_on_an_object_store_resumes_exactly_once() {
    let moto = crate::common::Moto::start("velo-state");
    let dir = resume_exactly_once("jsonl", "s3://velo-state/jobs", &moto.env());
    assert!(!dir.path().join("state").exists() && !dir.path().join(".velo-state").exists());
    let (code, list) =
        crate::common::http(moto.port, "GET", "/velo-state?list-type=2&prefix=jobs/w/");
    assert_eq!(code, 200, "{list}");
    assert!(
        list.contains("jobs/w/checkpoint.json") && list.contains("jobs/w/window-0-epoch-"),
        "the checkpoint and the window state are objects: {list}"
    );
    // a bucket that is not there is a clear error naming the store
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("app.sql"), d.path().join("app.sql")).unwrap();
    std::fs::create_dir_all(d.path().join("data")).unwrap();
    for f in ["a.jsonl", "b.jsonl"] {
        std::fs::copy(
            dir.path().join("data").join(f),
            d.path().join("data").join(f),
        )
        .unwrap();
    }
    // --state-dir takes the URL as written (and wins over the WITH key)
    let o = crate::common::run_in(
        d.path(),
        &["run", "app.sql", "--state-dir", "s3://missing-bucket/jobs"],
        &moto.env(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("s3://missing-bucket/jobs/w"),
        "a missing bucket says where: {err}"
    );
}

fn resume_exactly_once(format: &str, state: &str, env: &[(String, String)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    // two files, 100 records per 100 ms window, 60 windows
    for (f, range) in [("a", 0..3_000i64), ("b", 3_000..6_000)] {
        let path = dir.join(format!("data/{f}.{format}"));
        if format == "parquet" {
            crate::common::write_id_ts_parquet(&path, range);
        } else {
            let mut s = String::new();
            for i in range {
                s.push_str(&format!("{{\"id\":{i},\"ts\":{i}}}\n"));
            }
            std::fs::write(path, s).unwrap();
        }
    }
    let app = format!("CREATE STREAM w AS SELECT CAST(window_start AS BIGINT) AS ws, COUNT(*) AS n, SUM(id) AS ids
      FROM events GROUP BY TUMBLE(ts, INTERVAL '100' MILLISECOND) INTO out
      WITH ('events.type' = 'file_source', 'events.path' = 'data/*.{format}', 'events.schema' = 'id BIGINT, ts BIGINT',
            'events.watermark.max_out_of_orderness' = '0ms',
            'use_transactions' = 'true', 'state.dir' = '{state}', 'batch.size' = '250',
            'out.type' = 'file_sink', 'out.path' = 'out/part.jsonl');");
    std::fs::write(dir.join("app.sql"), app).unwrap();
    crate::common::crash_and_resume_with(dir, &["3", "7"], env);
    let mut windows: std::collections::BTreeMap<i64, (i64, i64, u32)> = Default::default();
    for f in published(&dir.join("out"), "part") {
        for l in std::fs::read_to_string(dir.join("out").join(&f))
            .unwrap()
            .lines()
        {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let e = windows.entry(v["ws"].as_i64().unwrap()).or_default();
            e.0 += v["n"].as_i64().unwrap();
            e.1 += v["ids"].as_i64().unwrap();
            e.2 += 1;
        }
    }
    assert_eq!(windows.len(), 60, "{format}: {windows:?}");
    for (ws, (n, ids, times)) in &windows {
        let want: i64 = (*ws..ws + 100).sum();
        assert_eq!(
            (*n, *ids, *times),
            (100, want, 1),
            "{format}, window {ws}: every record once, the window published once"
        );
    }
    d
}

/// LAG's history (the last row of every key) is in the checkpoint: a file
/// job crashed right after a checkpoint and resumed gives every row its
/// key's previous value, also across the restart.
#[test]
fn lag_history_survives_a_crash() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let mut s = String::new();
    for i in 0..2_000 {
        s.push_str(&format!("{{\"id\":{i},\"k\":{},\"v\":{}}}\n", i % 7, i * 3));
    }
    std::fs::write(dir.join("data/e.jsonl"), s).unwrap();
    let app = "CREATE STREAM w AS SELECT id, k, LAG(v, 1) OVER (PARTITION BY k ORDER BY id) AS prev FROM e INTO out
      WITH ('e.type' = 'file_source', 'e.path' = 'data/e.jsonl', 'e.schema' = 'id BIGINT, k BIGINT, v BIGINT',
            'use_transactions' = 'true', 'state.dir' = 'state', 'batch.size' = '100',
            'out.type' = 'file_sink', 'out.path' = 'out/part.jsonl') EMIT CHANGES;";
    std::fs::write(dir.join("app.sql"), app).unwrap();
    let o = crate::common::run_in(
        dir,
        &["run", "app.sql"],
        &[("VELO_CRASH_AFTER_CHECKPOINT".into(), "4".into())],
    );
    let log = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        !o.status.success() && log.contains("aborting after the checkpoint"),
        "{log}"
    );
    let o = crate::common::run_in(dir, &["run", "app.sql"], &[]);
    let log = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        o.status.success() && log.contains("resuming after checkpoint"),
        "{log}"
    );
    let mut seen = std::collections::BTreeMap::new();
    for f in published(&dir.join("out"), "part") {
        for l in std::fs::read_to_string(dir.join("out").join(&f))
            .unwrap()
            .lines()
        {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let id = v["id"].as_i64().unwrap();
            assert!(
                seen.insert(id, v["prev"].as_i64()).is_none(),
                "id {id} twice"
            );
        }
    }
    assert_eq!(seen.len(), 2_000, "every row once");
    for (id, prev) in &seen {
        let want = (*id >= 7).then(|| (id - 7) * 3);
        assert_eq!(*prev, want, "id {id}");
    }
}

/// A PRIMARY KEY mark that does not name a result column is refused with
/// the result's columns, before anything runs.
#[test]
fn a_primary_key_must_name_a_result_column() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("data")).unwrap();
    std::fs::write(d.path().join("data/o.csv"), "id,amount\n1,2\n").unwrap();
    let app = "CREATE STREAM k AS SELECT id::BIGINT PRIMARY KEY, amount FROM o INTO out
      WITH ('o.type' = 'file_source', 'o.path' = 'data/o.csv', 'out.type' = 'stdout');";
    let (ok, log) = crate::common::run_app(d.path(), app);
    assert!(
        !ok && log.contains("PRIMARY KEY 'BIGINT' is not a column of the result"),
        "{log}"
    );
}

/// `explain` and `validate` connect to nothing: the Kafka example, whose
/// schema is declared, is explained and validated with its brokers pointed
/// at a port where nothing listens (they used to try the broker and fail).
#[test]
fn explain_and_validate_connect_to_nothing() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let nowhere = "orders.bootstrap.servers=127.0.0.1:9";
    for cmd in ["explain", "validate"] {
        let out =
            crate::common::run_in(&examples, &[cmd, "kafka_orders.sql", "--set", nowhere], &[]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{cmd}: {text}");
        assert!(!text.contains("cannot reach"), "{cmd}: {text}");
    }
    let out = crate::common::run_in(
        &examples,
        &["explain", "kafka_orders.sql", "--set", nowhere],
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Physical plan") && text.contains("127.0.0.1:9"),
        "{text}"
    );
}
