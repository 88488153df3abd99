//! `velo server`: jobs deployed, watched, stopped, started and dropped
//! through the REST API; limits; restarts with backoff after external
//! errors; a `kill -9` of the server and a restart; the Prometheus
//! metrics read with the official Python parser; the OpenAPI document
//! fuzzed with schemathesis.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{free_port, signal, velo, wait_for, wait_until};

/// A `velo server` on a free port of 127.0.0.1, killed on drop.
pub(crate) struct Server {
    pub child: Child,
    pub port: u16,
    /// The Flight SQL endpoint's port.
    pub flight: u16,
    log: PathBuf,
}

impl Server {
    /// Starts `velo server` in `dir` (state in `dir/state`) and waits until
    /// it answers.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with(dir, env, &[])
    }

    /// [`Self::start`] with more arguments (`--config F`, say).
    pub fn start_with(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        let port = free_port();
        let flight = free_port();
        let log = dir.join(format!("server-{port}.log"));
        let mut c = velo();
        c.current_dir(dir)
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--flight",
                &format!("127.0.0.1:{flight}"),
                "--state-dir",
                "state",
            ])
            .args(args)
            .env("HOME", dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().expect("velo server starts");
        let s = Self {
            child,
            port,
            flight,
            log,
        };
        wait_for(Duration::from_secs(30), "the server to answer", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        s
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request; the status and the body (JSON when it is).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (code, text) = request(self.port, method, path, body);
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (code, v)
    }

    pub fn deploy(&self, sql: &str, name: &str, dir: &Path) -> (u16, Value) {
        self.call(
            "POST",
            "/api/jobs",
            Some(&json!({"sql": sql, "name": name, "base_dir": dir})),
        )
    }

    pub fn status(&self, job: &str) -> Value {
        let (code, v) = self.call("GET", &format!("/api/jobs/{job}/status"), None);
        assert_eq!(code, 200, "{v}");
        v
    }

    /// Waits until job `job` has committed two more epochs (an idle
    /// watching job commits empty ones): whatever it still had to write,
    /// a duplicate say, is written by then.
    pub fn two_more_epochs(&self, job: &str) {
        let epochs = |s: &Self| {
            s.status(job)["metrics"]["batches_processed"]
                .as_u64()
                .unwrap()
        };
        let from = epochs(self);
        wait_for(Duration::from_secs(30), "two more epochs", || {
            epochs(self) >= from + 2
        });
    }

    pub fn wait_status(&self, job: &str, want: &str) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(Duration::from_secs(60), || {
            last = self.status(job);
            last["status"] == want
        });
        assert!(
            ok,
            "job '{job}' never became {want}: {last}\n{}",
            self.log()
        );
        last
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 request with an optional JSON body; the status and the
/// body (read by its Content-Length: WebDriver keeps connections open).
fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    use std::io::{BufRead, Read};
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    // a server that refuses a body (413) may answer and close before the
    // whole body is sent: the write then fails, and the answer is read
    let written = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut r = std::io::BufReader::new(s);
    let mut status = String::new();
    if let Err(e) = r.read_line(&mut status) {
        // nothing to read either: the connection was reset after the answer
        return (0, format!("no answer (write: {written:?}, read: {e})"));
    }
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut length = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap() == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            }
        }
    }
    let mut out = Vec::new();
    match length {
        Some(n) => {
            out.resize(n, 0);
            r.read_exact(&mut out).unwrap();
        }
        None => {
            r.read_to_end(&mut out).unwrap();
        }
    }
    (code, String::from_utf8_lossy(&out).into_owned())
}

/// A job that watches `in_dir/*.jsonl` and writes each record, doubled,
/// to `out_dir/out.jsonl`, exactly once through its checkpoint (so that it
/// resumes after a stop or a crash).
fn watch_app(job: &str, in_dir: &str, out_dir: &str) -> String {
    watch_app_named(job, "incoming", "out", in_dir, out_dir)
}

/// [`watch_app`] with its source and sink named (the connectors of one
/// application share their names).
fn watch_app_named(job: &str, src: &str, sink: &str, in_dir: &str, out_dir: &str) -> String {
    format!(
        "CREATE STREAM {job} AS SELECT id, id * 2 AS twice FROM {src} INTO {sink}
         WITH ('{src}.type' = 'file_source', '{src}.path' = '{in_dir}/*.jsonl',
               '{src}.watch' = 'true', '{src}.watch_interval' = '50ms', '{src}.schema' = 'id BIGINT',
               '{sink}.type' = 'file_sink', '{sink}.path' = '{out_dir}/out.jsonl', 'batch.timeout' = '100ms',
               'use_transactions' = 'true');"
    )
}

/// Writes records `ids` as `dir/name`, moved in whole.
pub(crate) fn drop_file(dir: &Path, name: &str, ids: std::ops::Range<u64>) {
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(format!(".{name}.part"));
    let mut f = std::fs::File::create(&tmp).unwrap();
    for i in ids {
        writeln!(f, "{{\"id\": {i}}}").unwrap();
    }
    drop(f);
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

/// The ids a job wrote below `dir` (every published file).
pub(crate) fn ids_written(dir: &Path) -> Vec<u64> {
    let mut ids = Vec::new();
    for p in crate::common::files_below(dir) {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        for line in std::fs::read_to_string(dir.join(&p))
            .unwrap_or_default()
            .lines()
        {
            let v: Value = serde_json::from_str(line).unwrap();
            ids.push(v["id"].as_u64().unwrap());
        }
    }
    ids.sort_unstable();
    ids
}

pub(crate) fn python() -> String {
    std::env::var("VELO_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Every sample of the server's `/metrics`, parsed by prometheus_client.
pub(crate) fn scrape(port: u16) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/server/metrics_check.py");
    let o = Command::new(python())
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the Prometheus parser refused /metrics: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The value of sample `name` with `labels` (a subset).
pub(crate) fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .and_then(|s| s["value"].as_f64())
}

#[test]
fn jobs_are_deployed_watched_stopped_started_and_dropped_through_the_rest_api() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let s = Server::start(dir, &[("VELO_MAX_JOBS", "2")]);

    // every error of a bad application, with its place and kind
    let bad = "CREATE STREAM x AS SELECT id FROM src INTO out\nWITH ('src.type' = 'datagen', 'src.columns' = 'id:sequence(1)', 'out.type' = 'no_such_sink');";
    let (code, v) = s.deploy(bad, "bad", dir);
    assert_eq!(code, 400, "{v}");
    let errors = v["errors"].as_array().unwrap();
    let sink = errors
        .iter()
        .find(|e| e["message"].as_str().unwrap().contains("no_such"))
        .unwrap_or_else(|| panic!("the unknown sink type is named: {v}"));
    assert_eq!(sink["kind"], "user", "{v}");
    assert!(sink["line"].as_u64().is_some(), "the error says where: {v}");
    let (code, v) = s.deploy("CREATE STREAM AS SELEC", "bad", dir);
    assert_eq!(code, 400, "{v}");
    assert!(v["errors"][0]["column"].as_u64().is_some(), "{v}");
    let huge = json!({"sql": "x".repeat(17 << 20)});
    // the refusal races the upload: a reset before the answer is read is
    // tried again
    let mut answer = s.call("POST", "/api/jobs", Some(&huge));
    for _ in 0..4 {
        if answer.0 != 0 {
            break;
        }
        answer = s.call("POST", "/api/jobs", Some(&huge));
    }
    let (code, v) = answer;
    assert_eq!(code, 413, "{v}");
    assert!(v["error"].as_str().unwrap().contains("16 MiB"), "{v}");
    // a secret in the application never comes back, not even in an error
    // that quotes it (the secret is also the bad value of another key)
    let secret = "CREATE STREAM leaky AS SELECT id FROM src INTO out
        WITH ('src.type' = 'datagen', 'src.columns' = 'id:sequence(1)', 'src.password' = 'hunter2-secret',
              'src.rows' = 'hunter2-secret', 'out.type' = 'blackhole');";
    let (code, v) = s.deploy(secret, "leaky", dir);
    assert_eq!(code, 400, "{v}");
    assert!(!v.to_string().contains("hunter2-secret"), "{v}");
    assert!(
        v.to_string().contains("rows"),
        "the error names the key: {v}"
    );
    // a job name is a folder of the state directory: none reaches outside
    let escape = "CREATE STREAM x AS SELECT id FROM src INTO out
        WITH ('src.type' = 'datagen', 'src.columns' = 'id:sequence(1)', 'out.type' = 'blackhole',
              'job.name' = '../../escape');";
    let (code, v) = s.deploy(escape, "escape", dir);
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("cannot be hosted"),
        "{v}"
    );
    let (code, v) = s.call("POST", "/api/jobs", Some(&json!({"sq": 1})));
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("\"sql\""), "{v}");

    // a job deployed runs
    let (code, v) = s.deploy(&watch_app("doubled", "in", "out"), "first", dir);
    assert_eq!(code, 201, "{v}\n{}", s.log());
    assert_eq!(v["jobs"][0]["name"], "doubled", "{v}");
    s.wait_status("doubled", "Running");
    drop_file(&dir.join("in"), "a.jsonl", 1..4);
    wait_for(Duration::from_secs(30), "3 records written", || {
        ids_written(&dir.join("out")).len() == 3
    });

    // the seeds' list and status documents
    let (code, list) = s.call("GET", "/api/jobs", None);
    assert_eq!(code, 200);
    let job = &list.as_array().unwrap()[0];
    assert_eq!(job["name"], "doubled");
    assert_eq!(job["status"], "Running");
    assert_eq!(job["sources"]["incoming"], "Connected", "{job}");
    assert_eq!(job["sinks"]["out"], "Connected", "{job}");
    let mut st = Value::Null;
    wait_for(
        Duration::from_secs(10),
        "the status to count the records",
        || {
            st = s.status("doubled");
            st["metrics"]["records_written"] == 3
        },
    );
    assert_eq!(st["metrics"]["records_processed"], 3, "{st}");
    assert_eq!(st["metrics"]["sources"]["incoming"], 3, "{st}");
    assert!(
        st["metrics"]["batches_processed"].as_u64().unwrap() >= 1,
        "{st}"
    );
    assert!(st["metrics"]["last_record_time"].is_string(), "{st}");
    let (code, m) = s.call("GET", "/api/jobs/doubled/metrics", None);
    assert_eq!(code, 200);
    assert_eq!(m["records_written"], 3, "{m}");

    // Prometheus, read by the official parser, counts what moved
    let samples = scrape(s.port);
    let job_l = [("job", "doubled")];
    assert_eq!(
        sample(&samples, "velo_job_sources_total", &job_l),
        Some(1.0)
    );
    assert_eq!(sample(&samples, "velo_job_sinks_total", &job_l), Some(1.0));
    assert_eq!(
        sample(
            &samples,
            "velo_job_source_records_total",
            &[("job", "doubled"), ("source", "incoming")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &samples,
            "velo_job_sink_records_total",
            &[("job", "doubled"), ("sink", "out")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &samples,
            "velo_job_status",
            &[("job", "doubled"), ("status", "Running")]
        ),
        Some(1.0)
    );
    assert!(sample(&samples, "velo_job_epoch_duration_seconds_count", &job_l).unwrap() >= 1.0);
    // the transactional job checkpoints each epoch
    assert!(
        sample(
            &samples,
            "velo_job_checkpoint_duration_seconds_count",
            &job_l
        )
        .unwrap()
            >= 1.0
    );
    assert!(sample(&samples, "velo_job_checkpoint_bytes", &job_l).unwrap() > 100.0);
    // the sink's write and commit latencies
    let sink_l = [("job", "doubled"), ("sink", "out")];
    assert!(sample(&samples, "velo_job_sink_write_seconds_count", &sink_l).unwrap() >= 1.0);
    assert!(sample(&samples, "velo_job_sink_commit_seconds_count", &sink_l).unwrap() >= 1.0);
    // the epoch that carried the 3 records: read, then committed a moment later
    let latency = sample(&samples, "velo_job_latency_seconds_count", &job_l).unwrap();
    assert!(latency >= 1.0, "{latency}");
    let sum = sample(&samples, "velo_job_latency_seconds_sum", &job_l).unwrap();
    assert!(sum > 0.0 && sum < 30.0, "{sum}");
    assert!(sample(&samples, "velo_process_resident_memory_bytes", &[]).unwrap() > 0.0);

    // limits and names
    let two = format!(
        "{}\n{}",
        watch_app_named("second", "in2", "out2", "in2", "out2"),
        watch_app_named("third", "in3", "out3", "in3", "out3")
    );
    let (code, v) = s.deploy(&two, "two", dir);
    assert_eq!(code, 422, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("VELO_MAX_JOBS=2"),
        "{v}"
    );
    let (code, v) = s.deploy(&watch_app("doubled", "in", "out"), "again", dir);
    assert_eq!(code, 409, "{v}");
    // another application writing the same file is refused too
    let (code, v) = s.deploy(&watch_app("copycat", "elsewhere", "out"), "copycat", dir);
    assert_eq!(code, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("which job 'doubled' writes already"),
        "{v}"
    );

    // stop commits and stops; input arriving meanwhile waits
    let (code, v) = s.call("POST", "/api/jobs/doubled/stop", None);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "Stopped", "{v}");
    assert_eq!(v["sources"]["incoming"], "Disconnected", "{v}");
    drop_file(&dir.join("in"), "b.jsonl", 4..6);
    // an absence: give a job that wrongly still runs time to read it
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        ids_written(&dir.join("out")).len(),
        3,
        "a stopped job reads nothing"
    );
    let (code, v) = s.call("GET", "/ready", None);
    assert_eq!(code, 200, "a stopped job is not waited for: {v}");

    // start resumes from the checkpoint: the new records once, the old not again
    let (code, v) = s.call("POST", "/api/jobs/doubled/start", None);
    assert_eq!(code, 200, "{v}");
    let (code, _) = s.call("POST", "/api/jobs/doubled/start", None);
    assert!(code == 409 || code == 200, "start of a started job: {code}");
    wait_for(Duration::from_secs(30), "5 records written", || {
        ids_written(&dir.join("out")).len() >= 5
    });
    s.two_more_epochs("doubled");
    assert_eq!(ids_written(&dir.join("out")), vec![1, 2, 3, 4, 5]);
    // 3 read before the stop and 2 after: the first file was not read again
    let v = s.status("doubled");
    assert_eq!(v["metrics"]["records_processed"], 5, "{v}");

    let (code, v) = s.call("GET", "/api/jobs/doubled/explain", None);
    assert_eq!(code, 200, "{v}");
    assert!(v["explain"].as_str().unwrap().contains("incoming"), "{v}");
    assert!(
        !s.log().contains("hunter2-secret"),
        "no secret in the server's log"
    );
    let stored = std::fs::read_dir(dir.join("state/apps")).unwrap().count();
    assert_eq!(stored, 1, "a refused deployment leaves nothing behind");

    // drop, with its state
    assert!(dir.join("state/checkpoints/doubled").exists());
    let (code, v) = s.call("DELETE", "/api/jobs/doubled?purge_state=maybe", None);
    assert_eq!(code, 400, "{v}");
    let (code, _) = s.call("DELETE", "/api/jobs/doubled?purge_state=true", None);
    assert_eq!(code, 204);
    assert!(!dir.join("state/checkpoints/doubled").exists());
    let (code, v) = s.call("GET", "/api/jobs/doubled/status", None);
    assert_eq!(code, 404, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("GET /api/jobs"),
        "{v}"
    );
    let (code, v) = s.call("GET", "/api/jobs", None);
    assert_eq!((code, v), (200, json!([])));
    let (code, v) = s.call("GET", "/nowhere", None);
    assert_eq!(code, 404, "{v}");
    assert!(v["error"].is_string(), "errors are JSON: {v}");
}

#[test]
fn a_killed_server_resumes_running_jobs_and_keeps_stopped_ones_stopped() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let s = Server::start(dir, &[]);
    for (job, n) in [("kept", "1"), ("paused", "2")] {
        let (code, v) = s.deploy(
            &watch_app(job, &format!("in{n}"), &format!("out{n}")),
            job,
            dir,
        );
        assert_eq!(code, 201, "{v}\n{}", s.log());
    }
    drop_file(&dir.join("in1"), "a.jsonl", 0..100);
    drop_file(&dir.join("in2"), "a.jsonl", 0..100);
    wait_for(Duration::from_secs(30), "both jobs to write", || {
        ids_written(&dir.join("out1")).len() == 100 && ids_written(&dir.join("out2")).len() == 100
    });
    let (code, _) = s.call("POST", "/api/jobs/paused/stop", None);
    assert_eq!(code, 200);

    // kill -9, with more input on its way
    signal(&s.child, "-KILL");
    drop_file(&dir.join("in1"), "b.jsonl", 100..250);
    drop_file(&dir.join("in2"), "b.jsonl", 100..250);
    drop(s);

    let s = Server::start(dir, &[]);
    s.wait_status("kept", "Running");
    wait_for(
        Duration::from_secs(30),
        "the resumed job to catch up",
        || ids_written(&dir.join("out1")).len() >= 250,
    );
    s.two_more_epochs("kept");
    assert_eq!(
        ids_written(&dir.join("out1")),
        (0..250).collect::<Vec<_>>(),
        "every record once"
    );
    // the resumed run read only what came after its checkpoint
    let v = s.status("kept");
    assert_eq!(v["metrics"]["records_processed"], 150, "{v}");
    let v = s.status("paused");
    assert_eq!(v["status"], "Stopped", "{v}");
    assert_eq!(ids_written(&dir.join("out2")).len(), 100);
    let (code, v) = s.call("GET", "/ready", None);
    assert_eq!(code, 200, "{v}");
}

#[test]
fn a_job_failing_on_an_external_error_restarts_with_backoff_and_disturbs_no_other() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let s = Server::start(dir, &[]);
    let (code, v) = s.deploy(&watch_app("healthy", "in", "out"), "healthy", dir);
    assert_eq!(code, 201, "{v}");
    // brokers that are not there: an external error each start
    let closed = free_port();
    let flaky = format!(
        "CREATE STREAM flaky AS SELECT id FROM events INTO sink
         WITH ('events.type' = 'kafka_source', 'events.bootstrap.servers' = '127.0.0.1:{closed}',
               'events.topic' = 't', 'events.schema' = 'id BIGINT', 'events.connect.timeout' = '300ms',
               'sink.type' = 'blackhole',
               'restart.strategy' = 'exponential_backoff', 'restart.delay' = '200ms',
               'restart.max_attempts' = '2');"
    );
    let (code, v) = s.deploy(&flaky, "flaky", dir);
    assert_eq!(code, 201, "{v}\n{}", s.log());
    let mut seen_restarting = false;
    let ok = wait_until(Duration::from_secs(60), || {
        let v = s.status("flaky");
        seen_restarting |= v["status"] == "Restarting";
        v["status"] == "Failed"
    });
    assert!(ok, "{}", s.log());
    let v = s.status("flaky");
    assert_eq!(v["restarts"], 2, "{v}");
    assert!(seen_restarting, "the job went through Restarting");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("cannot reach the Kafka brokers"), "{v}");
    assert_eq!(v["sources"]["events"], "Failed", "{v}");
    assert!(v["since"].is_string(), "{v}");

    // the other job never noticed
    drop_file(&dir.join("in"), "a.jsonl", 0..10);
    wait_for(Duration::from_secs(30), "the healthy job to write", || {
        ids_written(&dir.join("out")).len() == 10
    });
    assert_eq!(s.status("healthy")["status"], "Running");
    let (code, v) = s.call("GET", "/ready", None);
    assert_eq!(code, 503, "a failed job is not ready: {v}");
    assert_eq!(v["waiting"], json!(["flaky"]), "{v}");
    let samples = scrape(s.port);
    assert_eq!(
        sample(&samples, "velo_job_restarts_total", &[("job", "flaky")]),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &samples,
            "velo_job_status",
            &[("job", "flaky"), ("status", "Failed")]
        ),
        Some(1.0)
    );
}

#[test]
fn the_openapi_document_holds_under_schemathesis() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let s = Server::start(dir, &[]);
    let (code, v) = s.deploy(&watch_app("watched", "in", "out"), "watched", dir);
    assert_eq!(code, 201, "{v}");
    let (code, doc) = s.call("GET", "/api/openapi.json", None);
    assert_eq!(code, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    for path in [
        "/api/jobs",
        "/api/status",
        "/api/jobs/{name}/status",
        "/metrics",
        "/ready",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
    // the deployed job's name for the operations on one job (else every
    // call on {name} meets a 404 before it reaches the job logic)
    let config = dir.join("schemathesis.toml");
    std::fs::write(&config, "[parameters]\n\"path.name\" = \"watched\"\n").unwrap();
    let o = Command::new(python())
        .args([
            "-m",
            "schemathesis.cli",
            "--config-file",
            config.to_str().unwrap(),
            "run",
            &format!("http://127.0.0.1:{}/api/openapi.json", s.port),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "25",
            "--workers",
            "1",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        // its cache folder goes to the test's folder, not the checkout
        .current_dir(dir)
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{out}\n{}", s.log());
    assert!(
        out.contains("Tested: 12"),
        "every operation was tried: {out}"
    );
    assert!(
        out.contains(" passed") && !out.contains(" 0 generated"),
        "{out}"
    );
}

#[test]
fn the_command_line_manages_jobs_on_a_server() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let s = Server::start(dir, &[]);
    std::fs::write(dir.join("app.sql"), watch_app("cli_job", "in", "out")).unwrap();
    let server = format!("http://127.0.0.1:{}", s.port);
    let velo_cli = |args: &[&str]| {
        let o = velo()
            .current_dir(dir)
            .args(args)
            .args(["--server", &server])
            .output()
            .unwrap();
        (
            o.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let (code, out) = velo_cli(&["deploy", "app.sql"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("deployed job 'cli_job'"), "{out}");
    s.wait_status("cli_job", "Running");
    // relative paths start at the SQL file's folder, not the server's
    drop_file(&dir.join("in"), "a.jsonl", 0..4);
    wait_for(Duration::from_secs(30), "the job to write", || {
        ids_written(&dir.join("out")).len() == 4
    });
    let (code, out) = velo_cli(&["jobs"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("NAME"), "{out}");
    assert!(
        out.contains("cli_job") && out.contains("Running") && out.contains("incoming"),
        "{out}"
    );
    let (code, out) = velo_cli(&["status", "cli_job"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("records read: 4"), "{out}");
    let (code, out) = velo_cli(&["stop", "cli_job"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Stopped"), "{out}");
    let (code, out) = velo_cli(&["start", "cli_job"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = velo_cli(&["deploy", "app.sql"]);
    assert_eq!(code, Some(1), "a second deployment is refused: {out}");
    assert!(out.contains("deployed already"), "{out}");
    let (code, out) = velo_cli(&["drop", "cli_job", "--purge-state"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = velo_cli(&["status", "cli_job"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no job named 'cli_job'"), "{out}");
    // a server that is not there
    let o = velo()
        .args([
            "jobs",
            "--server",
            &format!("http://127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach the velo server"));
}

#[test]
fn velo_run_serves_the_same_metrics_for_its_foreground_job() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("app.sql"), watch_app("fg", "in", "out")).unwrap();
    let port = free_port();
    let mut child = crate::common::spawn(
        dir,
        &[
            "run",
            "app.sql",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ],
    );
    drop_file(&dir.join("in"), "a.jsonl", 0..7);
    wait_for(Duration::from_secs(30), "the job to write", || {
        ids_written(&dir.join("out")).len() == 7
    });
    let mut samples = Vec::new();
    wait_for(
        Duration::from_secs(10),
        "the metrics to count the records",
        || {
            samples = scrape(port);
            sample(
                &samples,
                "velo_job_sink_records_total",
                &[("job", "fg"), ("sink", "out")],
            ) == Some(7.0)
        },
    );
    assert_eq!(
        sample(
            &samples,
            "velo_job_source_records_total",
            &[("job", "fg"), ("source", "incoming")]
        ),
        Some(7.0)
    );
    assert_eq!(
        sample(&samples, "velo_job_sources_total", &[("job", "fg")]),
        Some(1.0)
    );
    signal(&child, "-INT");
    assert!(child.wait().unwrap().success());
    // an address in use is refused before the job starts
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let o = velo()
        .current_dir(dir)
        .args(["run", "app.sql", "--metrics-addr", &addr])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot serve metrics"));
}

/// A WebDriver session on headless Chromium (Debian's `chromium` and
/// `chromium-driver`, installed by scripts/test.sh), ended on drop.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Self {
        let port = free_port();
        let driver = Command::new(std::env::var("VELO_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into()))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (apt-get install chromium chromium-driver; scripts/test.sh does)");
        wait_for(Duration::from_secs(30), "chromedriver", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": std::env::var("VELO_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--no-first-run", "--window-size=1400,700",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let (code, body) = request(port, "POST", "/session", Some(&caps));
        assert_eq!(code, 200, "a browser session: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let session = v["value"]["sessionId"].as_str().unwrap().to_string();
        Self {
            driver,
            port,
            session,
            _profile: profile,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (code, text) = request(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        );
        assert_eq!(code, 200, "{method} {path}: {text}");
        serde_json::from_str::<Value>(&text).unwrap()["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({"url": url})));
    }

    /// The text of the first element matching `css`, if there is one.
    fn text(&self, css: &str) -> Option<String> {
        let (code, found) = request(
            self.port,
            "POST",
            &format!("/session/{}/element", self.session),
            Some(&json!({"using": "css selector", "value": css})),
        );
        if code != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&found).ok()?;
        let id = v["value"]
            .as_object()?
            .values()
            .next()?
            .as_str()?
            .to_string();
        self.call("GET", &format!("/element/{id}/text"), None)
            .as_str()
            .map(str::to_string)
    }

    fn screenshot(&self, to: &Path) {
        let b64 = self.call("GET", "/screenshot", None);
        let mut child = Command::new("base64")
            .arg("-d")
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(to).unwrap())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b64.as_str().unwrap().as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn the_dashboard_lists_the_jobs_and_its_numbers_move_in_a_real_browser() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let s = Server::start(dir, &[]);
    let generated = "CREATE STREAM generated AS SELECT id, key FROM gen INTO nowhere
        WITH ('gen.type' = 'datagen', 'gen.rate' = '400', 'gen.columns' = 'id:sequence(1), key:int(0,9)',
              'nowhere.type' = 'blackhole', 'batch.timeout' = '200ms');";
    let (code, v) = s.deploy(generated, "generated", dir);
    assert_eq!(code, 201, "{v}");
    let (code, v) = s.deploy(&watch_app("idle", "in", "out"), "idle", dir);
    assert_eq!(code, 201, "{v}");
    s.wait_status("generated", "Running");
    let (code, _) = s.call("POST", "/api/jobs/idle/stop", None);
    assert_eq!(code, 200);

    let b = Browser::start();
    b.open(&format!("http://127.0.0.1:{}/", s.port));
    let count = |css: &str| -> Option<u64> { b.text(css)?.replace(',', "").trim().parse().ok() };
    let mut first = None;
    wait_for(
        Duration::from_secs(30),
        "the dashboard to list the jobs",
        || {
            first = count("tr[data-job='generated'] td.in").filter(|n| *n > 0);
            first.is_some() && b.text("tr[data-job='idle'] td.status").is_some()
        },
    );
    assert_eq!(
        b.text("tr[data-job='generated'] td.status").as_deref(),
        Some("Running")
    );
    assert_eq!(
        b.text("tr[data-job='idle'] td.status").as_deref(),
        Some("Stopped")
    );
    assert!(
        b.text("tr[data-job='generated'] td.sinks")
            .unwrap()
            .contains("nowhere Connected")
    );
    let first = first.unwrap();
    wait_for(Duration::from_secs(30), "the numbers to move", || {
        count("tr[data-job='generated'] td.in").is_some_and(|n| n > first)
            && count("tr[data-job='generated'] td.rate").is_some_and(|r| r > 0)
    });
    assert!(b.text("#summary").unwrap().contains("2 job(s), 1 running"));
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    b.screenshot(&shot);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a screenshot in {}",
        shot.display()
    );
}

#[test]
fn the_servers_memory_limit_and_batch_timeout_apply_to_every_job() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let s = Server::start(
        dir,
        &[
            ("VELO_MAX_MEMORY_MB", "1"),
            ("VELO_BATCH_TIMEOUT_MS", "250"),
        ],
    );
    // the server's batch timeout for a job that sets none
    let plain = "CREATE STREAM plain AS SELECT id FROM src INTO out
        WITH ('src.type' = 'datagen', 'src.columns' = 'id:sequence(1)', 'src.rate' = '10',
              'out.type' = 'blackhole');";
    let (code, v) = s.deploy(plain, "plain", dir);
    assert_eq!(code, 201, "{v}");
    let (code, v) = s.call("GET", "/api/jobs/plain/explain", None);
    assert_eq!(code, 200, "{v}");
    assert!(
        v["explain"]
            .as_str()
            .unwrap()
            .contains("batch.timeout 250ms"),
        "{v}"
    );
    // 200,000 distinct keys in one window of an hour: megabytes of groups
    let big = "CREATE STREAM big AS SELECT key, COUNT(*) AS n FROM gen
        GROUP BY key, TUMBLE(ts, INTERVAL '1' HOUR) INTO out
        WITH ('gen.type' = 'datagen', 'gen.rows' = '200000', 'gen.columns' = 'key:sequence(0), ts:timestamp(0)',
              'gen.event.time.field' = 'ts', 'batch.size' = '50000',
              'out.type' = 'blackhole');";
    let (code, v) = s.deploy(big, "big", dir);
    assert_eq!(code, 201, "{v}");
    let v = s.wait_status("big", "Failed");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("WindowAggregateExec"), "{v}");
    assert!(
        error.contains("VELO_MAX_MEMORY_MB"),
        "names the server's limit: {v}"
    );
    let samples = scrape(s.port);
    assert_eq!(
        sample(&samples, "velo_memory_pool_limit_bytes", &[]),
        Some(1024.0 * 1024.0)
    );
    // what the failed job held went back to the pool
    assert_eq!(
        sample(&samples, "velo_memory_pool_reserved_bytes", &[]),
        Some(0.0)
    );
}

#[test]
fn a_terminated_server_commits_its_jobs_and_starts_them_again() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut s = Server::start(dir, &[]);
    let (code, v) = s.deploy(&watch_app("steady", "in", "out"), "steady", dir);
    assert_eq!(code, 201, "{v}");
    drop_file(&dir.join("in"), "a.jsonl", 0..20);
    wait_for(Duration::from_secs(30), "the job to write", || {
        ids_written(&dir.join("out")).len() == 20
    });
    signal(&s.child, "-TERM");
    let status = s.child.wait().unwrap();
    let log = s.log();
    assert!(status.success(), "{log}");
    assert!(log.contains("every job commits its current epoch"), "{log}");
    drop(s);
    drop_file(&dir.join("in"), "b.jsonl", 20..30);
    let s = Server::start(dir, &[]);
    s.wait_status("steady", "Running");
    wait_for(Duration::from_secs(30), "the job to go on", || {
        ids_written(&dir.join("out")).len() >= 30
    });
    s.two_more_epochs("steady");
    assert_eq!(ids_written(&dir.join("out")), (0..30).collect::<Vec<_>>());
}

/// Six jobs at once — three reading Kafka (exactly-once into files,
/// at-least-once into another topic, at-least-once into a file, which the
/// resumed run appends to rather than replacing it) and three watching folders — and a `kill -9` of the
/// server while more input arrives: after the restart every job runs
/// again from its checkpoint; nothing is lost, and the transactional
/// outputs hold every record exactly once.
#[test]
fn a_killed_server_with_six_kafka_and_file_jobs_resumes_them_all() {
    let _machine = crate::common::exclusive();
    let (tmp, _broker, bs) = crate::kafka::with_broker();
    let dir = tmp.path();
    crate::kafka::create_topic(&bs, "orders", 1);
    crate::kafka::create_topic(&bs, "copied", 1);
    crate::kafka::produce(&bs, "orders", &crate::kafka::orders(0..2000));
    let kafka_app = |job: &str, out: &str, tx: bool| {
        format!(
            "CREATE STREAM {job} AS SELECT id, amount FROM src_{job} INTO out_{job}
             WITH ('src_{job}.type' = 'kafka_source', 'src_{job}.bootstrap.servers' = '{bs}',
                   'src_{job}.topic' = 'orders', 'src_{job}.group.id' = 'g-{job}-{bs}',
                   'src_{job}.session.timeout.ms' = '6000', 'src_{job}.heartbeat.interval.ms' = '500',
                   'out_{job}.type' = 'file_sink', 'out_{job}.path' = '{out}/part.jsonl',
                   'batch.size' = '200', 'batch.timeout' = '200ms', 'use_transactions' = '{tx}');"
        )
    };
    let s = Server::start(dir, &[]);
    let deployments = [
        ("exactly", kafka_app("exactly", "kx", true)),
        (
            "atleast",
            format!(
                "CREATE STREAM atleast AS SELECT id, amount FROM src_atleast INTO copied
                 WITH ('src_atleast.type' = 'kafka_source', 'src_atleast.bootstrap.servers' = '{bs}',
                       'src_atleast.topic' = 'orders', 'src_atleast.group.id' = 'g-atleast-{bs}',
                       'src_atleast.session.timeout.ms' = '6000', 'src_atleast.heartbeat.interval.ms' = '500',
                       'copied.type' = 'kafka_sink', 'copied.bootstrap.servers' = '{bs}', 'copied.topic' = 'copied',
                       'batch.size' = '200', 'batch.timeout' = '200ms');"
            ),
        ),
        ("alofile", kafka_app("alofile", "ka", false)),
        ("f1", watch_app_named("f1", "in_f1", "out_f1", "in1", "out1")),
        ("f2", watch_app_named("f2", "in_f2", "out_f2", "in2", "out2")),
        ("f3", watch_app_named("f3", "in_f3", "out_f3", "in3", "out3")),
    ];
    for (job, sql) in &deployments {
        let (code, v) = s.deploy(sql, job, dir);
        assert_eq!(code, 201, "{v}\n{}", s.log());
    }
    for n in 1..=3 {
        drop_file(&dir.join(format!("in{n}")), "a.jsonl", 0..100);
    }
    wait_for(Duration::from_secs(90), "every job to write", || {
        ids_written(&dir.join("kx")).len() >= 400
            && !ids_written(&dir.join("ka")).is_empty()
            && s.status("atleast")["metrics"]["records_written"].as_u64() > Some(0)
            && (1..=3).all(|n| ids_written(&dir.join(format!("out{n}"))).len() == 100)
    });

    signal(&s.child, "-KILL");
    crate::kafka::produce(&bs, "orders", &crate::kafka::orders(2000..3000));
    for n in 1..=3 {
        drop_file(&dir.join(format!("in{n}")), "b.jsonl", 100..200);
    }
    drop(s);

    let s = Server::start(dir, &[]);
    for (job, _) in &deployments {
        s.wait_status(job, "Running");
    }
    // the distinct ids of topic 'copied' (reading until `n` messages came)
    let copied = |n: usize| {
        let mut ids: Vec<u64> = crate::kafka::consume_all(&bs, "copied", n)
            .iter()
            .map(|(_, v)| {
                serde_json::from_str::<Value>(v).unwrap()["id"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let file_ids = || {
        let mut ids = ids_written(&dir.join("ka"));
        ids.dedup();
        ids
    };
    let counts = || {
        // at least once: duplicates may come first, so read past 3000
        let a = copied(6000);
        (
            ids_written(&dir.join("kx")).len(),
            a.len(),
            file_ids().len(),
            (1..=3)
                .map(|n| ids_written(&dir.join(format!("out{n}"))).len())
                .collect::<Vec<_>>(),
        )
    };
    let caught_up = wait_until(Duration::from_secs(120), || {
        let (kx, ka, kf, files) = counts();
        kx >= 3000 && ka == 3000 && kf == 3000 && files.iter().all(|n| *n >= 200)
    });
    assert!(
        caught_up,
        "every job catches up: {:?}\n{}\n{}",
        counts(),
        s.call("GET", "/api/status", None).1,
        s.log()
    );
    for (job, _) in &deployments {
        s.two_more_epochs(job);
    }
    assert_eq!(
        ids_written(&dir.join("kx")),
        (0..3000).collect::<Vec<_>>(),
        "the transactional Kafka job: every record exactly once"
    );
    for n in 1..=3 {
        assert_eq!(
            ids_written(&dir.join(format!("out{n}"))),
            (0..200).collect::<Vec<_>>(),
            "file job f{n}: every record exactly once"
        );
    }
    assert_eq!(
        copied(usize::MAX),
        (0..3000).collect::<Vec<_>>(),
        "at least once: nothing lost"
    );
    assert_eq!(
        file_ids(),
        (0..3000).collect::<Vec<_>>(),
        "at least once into a file: the resumed run kept the first run's output"
    );
    // the Kafka consumer lag of a caught-up job: 0, per partition
    let l = [
        ("job", "exactly"),
        ("source", "src_exactly"),
        ("partition", "orders/0"),
    ];
    wait_for(Duration::from_secs(20), "the lag to be known", || {
        sample(&scrape(s.port), "velo_job_source_lag_records", &l) == Some(0.0)
    });
    assert_eq!(
        s.status("exactly")["source_lag"]["src_exactly"]["orders/0"],
        0
    );
}

/// Failed, late and dead-lettered records are counted per source, and each
/// source and sink has a health series: a foreground job's `/metrics` read
/// with the Prometheus parser against the records the test sent.
#[test]
fn bad_and_late_records_are_counted_per_source() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(
        dir.join("app.sql"),
        "CREATE STREAM w AS SELECT window_start, COUNT(*) AS n FROM events
           GROUP BY TUMBLE(ts, INTERVAL '1' SECOND) INTO out
         WITH ('events.type' = 'file_source', 'events.path' = 'in/*.jsonl',
               'events.watch' = 'true', 'events.watch_interval' = '50ms',
               'events.schema' = 'id BIGINT, ts BIGINT', 'events.event.time.field' = 'ts',
               'events.watermark.max_out_of_orderness' = '0ms',
               'events.late.data.strategy' = 'dead_letter',
               'out.type' = 'file_sink', 'out.path' = 'out/o.jsonl',
               'dlq.path' = 'dead.jsonl', 'batch.timeout' = '100ms');",
    )
    .unwrap();
    let port = free_port();
    let mut child = crate::common::spawn(
        dir,
        &[
            "run",
            "app.sql",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ],
    );
    let put = |name: &str, body: &str| {
        std::fs::create_dir_all(dir.join("in")).unwrap();
        let tmp = dir.join(format!(".{name}"));
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(tmp, dir.join("in").join(name)).unwrap();
    };
    // ten records at 10 s move the watermark there
    put(
        "a.jsonl",
        &(0..10)
            .map(|i| format!("{{\"id\":{i},\"ts\":{}}}\n", 10_000 + i))
            .collect::<String>(),
    );
    let mut samples = Vec::new();
    wait_for(Duration::from_secs(30), "the first file's records", || {
        samples = scrape(port);
        sample(
            &samples,
            "velo_job_source_records_total",
            &[("job", "w"), ("source", "events")],
        ) == Some(10.0)
    });
    // then three records from second 1 (late) and two lines that are not JSON
    put(
        "b.jsonl",
        "{\"id\":20,\"ts\":1000}\nnot json\n{\"id\":21,\"ts\":1001}\n{broken\n{\"id\":22,\"ts\":1002}\n",
    );
    let events = [("job", "w"), ("source", "events")];
    wait_for(Duration::from_secs(30), "the second file's counts", || {
        samples = scrape(port);
        sample(
            &samples,
            "velo_job_source_records_dead_lettered_total",
            &events,
        ) == Some(5.0)
    });
    assert_eq!(
        sample(&samples, "velo_job_source_records_failed_total", &events),
        Some(2.0)
    );
    assert_eq!(
        sample(&samples, "velo_job_source_records_late_total", &events),
        Some(3.0)
    );
    let dead = std::fs::read_to_string(dir.join("dead.jsonl")).unwrap();
    assert_eq!(dead.lines().count(), 5, "{dead}");
    // the source's own watermark (10 s after 1970) is that far behind now
    let behind = sample(&samples, "velo_job_source_watermark_lag_seconds", &events).unwrap();
    let expected = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - 10.009;
    assert!((behind - expected).abs() < 120.0, "{behind} vs {expected}");
    for (kind, name) in [("source", "events"), ("sink", "out")] {
        let h = |state| {
            sample(
                &samples,
                "velo_job_connector_health",
                &[
                    ("job", "w"),
                    ("kind", kind),
                    ("name", name),
                    ("state", state),
                ],
            )
        };
        assert_eq!(h("connected"), Some(1.0), "{kind} {name}");
        assert_eq!(h("failed"), Some(0.0), "{kind} {name}");
    }
    signal(&child, "-INT");
    assert!(child.wait().unwrap().success());
}

/// The source whose error ended its job is Failed in the status document;
/// the job's other source is only Disconnected; each source's records are
/// in `source_records`.
#[test]
fn the_failing_source_is_the_one_marked_failed() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("users.csv"), "uid,name\n1,ann\n2,bob\n").unwrap();
    let s = Server::start(dir, &[]);
    let app = format!(
        "CREATE STREAM j AS SELECT e.id, u.name FROM events e JOIN users u ON e.uid = u.uid INTO out
         WITH ('events.type' = 'file_source', 'events.path' = '{in_dir}/*.jsonl',
               'events.watch' = 'true', 'events.watch_interval' = '50ms', 'events.schema' = 'id BIGINT, uid BIGINT',
               'users.type' = 'file_source', 'users.path' = '{users}',
               'out.type' = 'file_sink', 'out.path' = '{out}/o.jsonl', 'batch.timeout' = '100ms');",
        in_dir = dir.join("in").display(),
        users = dir.join("users.csv").display(),
        out = dir.join("out").display()
    );
    let (code, v) = s.deploy(&app, "j", dir);
    assert_eq!(code, 201, "{v}");
    std::fs::create_dir_all(dir.join("in")).unwrap();
    std::fs::write(dir.join("in/a.jsonl"), "{\"id\":1,\"uid\":1}\n").unwrap();
    wait_for(Duration::from_secs(30), "the first record", || {
        s.status("j")["source_records"]["events"]["read"] == 1
    });
    // UTF-16 text: the file source refuses it, and the job fails
    let mut utf16 = vec![0xFF, 0xFE];
    for u in "{\"id\":2,\"uid\":2}\n".encode_utf16() {
        utf16.extend_from_slice(&u.to_le_bytes());
    }
    std::fs::write(dir.join("in/b.jsonl"), utf16).unwrap();
    wait_for(Duration::from_secs(30), "the job to fail", || {
        s.status("j")["status"] == "Failed"
    });
    let v = s.status("j");
    assert_eq!(v["sources"]["events"], "Failed", "{v}");
    assert_eq!(v["sources"]["users"], "Disconnected", "{v}");
    assert_eq!(v["source_records"]["users"]["read"], 2, "{v}");
    assert!(v["error"].as_str().unwrap().contains("UTF-16"), "{v}");
}
