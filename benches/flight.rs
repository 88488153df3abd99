//! Flight SQL benchmark (not a test): release mode, `cargo bench --bench
//! flight`. Starts the release `velo server` on 127.0.0.1 and runs
//! benches/flight_fetch.py against it with the real Python clients:
//! a `BENCH_ROWS`-row (default 10M) result fetched through ADBC and
//! pyarrow.flight (MB/s wall and per server CPU-second), the same file
//! served by pyarrow's own Flight server (the peer), and the latency of
//! `EMIT CHANGES` from an epoch's commit to the client.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// the other benches' helpers, of which this one uses env_or
#[allow(dead_code)]
mod common;

use common::env_or;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (rest, flight) = (free_port(), free_port());
    let mut server = Command::new(env!("CARGO_BIN_EXE_velo"))
        .current_dir(dir.path())
        .args(["server", "--listen", &format!("127.0.0.1:{rest}")])
        .args(["--flight", &format!("127.0.0.1:{flight}")])
        .args(["--state-dir", "state"])
        .env("HOME", dir.path())
        .env("VELO_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("velo server starts");
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", flight)).is_err() {
        assert!(Instant::now() < until, "the server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let rows: u64 = env_or("BENCH_ROWS", 10_000_000);
    println!(
        "Flight SQL bench: {} cores, {rows} rows",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let python = std::env::var("VELO_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/flight_fetch.py");
    let status = Command::new(python)
        .arg(script)
        .arg(format!("grpc://127.0.0.1:{flight}"))
        .arg(server.id().to_string())
        .arg(dir.path())
        .arg(rows.to_string())
        .status()
        .expect("python runs");
    let _ = server.kill();
    let _ = server.wait();
    assert!(status.success(), "the driver failed");
}
