//! Job server benchmark (not a test): release mode, `cargo bench --bench server`.
//!
//! Starts the release `velo server` on 127.0.0.1 and measures, from outside
//! the process (its `/proc` figures and its REST API):
//!
//! 1. one job (generator -> tumbling window GROUP BY -> blackhole) alone:
//!    records/s (wall) and per CPU-second of the server;
//! 2. `BENCH_JOBS` (default 50) such jobs at once: their total records/s
//!    against the one job's, and the REST API's latency (p50/p99 of
//!    `GET /api/jobs/{name}/status`, sequential requests) under that load;
//! 3. `BENCH_JOBS` idle jobs (watching an empty folder): the server's
//!    resident memory and threads per idle job.
//!
//! `BENCH_SECONDS` (default 10) is each measuring window.

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// the other benches' helpers, of which this one uses env_or
#[allow(dead_code)]
mod common;

use common::env_or;

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &Path) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_velo"))
        .current_dir(dir)
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--flight",
            "off",
            "--state-dir",
            "state",
        ])
        .env("HOME", dir)
        .env("VELO_MAX_JOBS", "1000")
        .env("VELO_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("velo server starts");
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "the server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { child, port }
}

/// One HTTP/1.1 request; the status and the body.
fn call(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = std::io::BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    let body = rest
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (code, body)
}

fn deploy(s: &Server, name: &str, sql: &str, dir: &Path) {
    let body = serde_json::json!({"sql": sql, "name": name, "base_dir": dir}).to_string();
    let (code, text) = call(s.port, "POST", "/api/jobs", &body);
    assert_eq!(code, 201, "{text}");
}

fn windowed(job: &str) -> String {
    format!(
        "CREATE STREAM {job} AS SELECT key, COUNT(*) AS n, SUM(v) AS total FROM gen_{job}
         GROUP BY key, TUMBLE(ts, INTERVAL '1' SECOND) INTO sink_{job}
         WITH ('gen_{job}.type' = 'datagen', 'gen_{job}.rows' = '2000000000',
               'gen_{job}.columns' = 'key:int(0,999), v:float(0,100), ts:timestamp(1)',
               'gen_{job}.event.time.field' = 'ts', 'partitions' = '1',
               'sink_{job}.type' = 'blackhole');"
    )
}

fn idle(job: &str, dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    format!(
        "CREATE STREAM {job} AS SELECT id FROM src_{job} INTO sink_{job}
         WITH ('src_{job}.type' = 'file_source', 'src_{job}.path' = 'empty/*.jsonl', 'src_{job}.watch' = 'true',
               'src_{job}.schema' = 'id BIGINT', 'sink_{job}.type' = 'blackhole');"
    )
}

/// Records read by every job so far.
fn records(s: &Server) -> u64 {
    let (_, text) = call(s.port, "GET", "/api/status", "");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|j| j["metrics"]["records_processed"].as_u64().unwrap_or(0))
        .sum()
}

/// The server's CPU seconds (user + system), from /proc.
fn server_cpu(s: &Server) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", s.child.id())).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// The server's resident memory (bytes) and threads, from /proc.
fn server_memory_threads(s: &Server) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:") * 1024, field("Threads:"))
}

/// Records/s (wall) and per server CPU-second over `secs`.
fn measure(s: &Server, secs: u64) -> (f64, f64) {
    let (r0, c0, t0) = (records(s), server_cpu(s), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (r1, c1, dt) = (records(s), server_cpu(s), t0.elapsed().as_secs_f64());
    let n = (r1 - r0) as f64;
    (n / dt, n / (c1 - c0).max(1e-9))
}

fn wait_running(s: &Server, n: usize) {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, text) = call(s.port, "GET", "/api/jobs", "");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let running = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["status"] == "Running")
            .count();
        if running >= n {
            return;
        }
        assert!(Instant::now() < until, "only {running} of {n} jobs run");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() {
    let jobs: usize = env_or("BENCH_JOBS", 50);
    let secs: u64 = env_or("BENCH_SECONDS", 10);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // 1. one job alone
    let s = start(dir);
    deploy(&s, "one", &windowed("one"), dir);
    wait_running(&s, 1);
    std::thread::sleep(Duration::from_secs(2));
    let (one_wall, one_cpu) = measure(&s, secs);
    println!("one job:        {one_wall:>12.0} records/s  {one_cpu:>12.0} per server CPU-second");
    drop(s);

    // 2. many jobs at once, and the REST API under that load
    let s = start(&mkdir(dir.join("many")));
    for i in 0..jobs {
        deploy(&s, &format!("j{i}"), &windowed(&format!("j{i}")), dir);
    }
    wait_running(&s, jobs);
    std::thread::sleep(Duration::from_secs(2));
    let (many_wall, many_cpu) = measure(&s, secs);
    println!(
        "{jobs} jobs:       {many_wall:>12.0} records/s  {many_cpu:>12.0} per server CPU-second  ({:.2}x one job's total)",
        many_wall / one_wall
    );
    let mut lat = Vec::new();
    for i in 0..500 {
        let t = Instant::now();
        let (code, _) = call(
            s.port,
            "GET",
            &format!("/api/jobs/j{}/status", i % jobs),
            "",
        );
        lat.push(t.elapsed());
        assert_eq!(code, 200);
    }
    lat.sort();
    println!(
        "REST under load: p50 {:.2} ms, p99 {:.2} ms ({} status requests, one at a time)",
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.len()
    );
    drop(s);

    // 3. idle jobs: what each costs
    let s = start(&mkdir(dir.join("idle")));
    std::thread::sleep(Duration::from_secs(1));
    let (rss0, threads0) = server_memory_threads(&s);
    for i in 0..jobs {
        deploy(&s, &format!("i{i}"), &idle(&format!("i{i}"), dir), dir);
    }
    wait_running(&s, jobs);
    std::thread::sleep(Duration::from_secs(3));
    let (rss1, threads1) = server_memory_threads(&s);
    println!(
        "idle jobs:      {:.2} MiB resident and {:.2} threads per job ({} jobs: {:.1} -> {:.1} MiB, {threads0} -> {threads1} threads)",
        (rss1.saturating_sub(rss0)) as f64 / jobs as f64 / (1 << 20) as f64,
        (threads1.saturating_sub(threads0)) as f64 / jobs as f64,
        jobs,
        rss0 as f64 / (1 << 20) as f64,
        rss1 as f64 / (1 << 20) as f64,
    );
}

fn mkdir(p: std::path::PathBuf) -> std::path::PathBuf {
    std::fs::create_dir_all(&p).unwrap();
    p
}
