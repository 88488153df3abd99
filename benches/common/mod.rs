//! What the benchmarks share: CPU time of this process, and running a SQL
//! application in-process.

use std::io::Write;
use std::path::Path;

use velo_engine::plan::{PlanOptions, resolve};

/// The allocator of the `velo` binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// User + system CPU seconds of this process so far.
pub fn cpu_seconds() -> f64 {
    // utime + stime, in clock ticks (100 Hz on Linux)
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Runs `sql` (written to `dir/bench.sql`) to its end or until `shutdown`;
/// returns the records read.
pub fn run_sql(sql: &str, dir: &Path, shutdown: velo_engine::Shutdown) -> u64 {
    let app_path = dir.join("bench.sql");
    std::fs::write(&app_path, sql).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = PlanOptions {
        no_global: true,
        engine: velostream::engine(),
        ..Default::default()
    };
    let app = resolve(sql, &app_path, &opts).expect("bench app resolves");
    let stats = rt
        .block_on(velo_engine::run_app(&app, shutdown, None))
        .expect("bench app runs");
    stats.iter().map(|s| s.records_processed).sum()
}

/// The environment variable `name` parsed, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `rows` orders as JSON Lines (~95 bytes a row) at `path`, written once.
#[allow(dead_code)]
pub fn orders_jsonl(path: &Path, rows: u64) {
    if std::fs::metadata(path)
        .map(|m| m.len() > 0)
        .unwrap_or(false)
    {
        return;
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension("tmp");
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).unwrap());
    let statuses = ["NEW", "PAID", "SHIPPED", "CANCELLED"];
    let regions = ["eu-west", "us-east", "ap-south"];
    let mut x: u64 = 42;
    for i in 0..rows {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let amount = (x >> 33) % 100_000;
        writeln!(
            w,
            "{{\"order_id\":{},\"customer_id\":{},\"amount\":{}.{:02},\"status\":\"{}\",\"region\":\"{}\",\"ts\":{}}}",
            1_000_000 + i,
            (x >> 20) % 50_000,
            amount / 100,
            amount % 100,
            statuses[((x >> 40) % 4) as usize],
            regions[((x >> 45) % 3) as usize],
            1_704_067_200_000u64 + i
        )
        .unwrap();
    }
    w.flush().unwrap();
    drop(w);
    std::fs::rename(tmp, path).unwrap();
}

/// The median of `v`.
#[allow(dead_code)]
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The lines `script` prints, run by `$BENCH_PYTHON` (python3); a failure
/// panics with its stderr and `install`, what to pip-install.
#[allow(dead_code)]
pub fn python(script: &str, install: &str) -> Vec<String> {
    let python = std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python failed (pip install {install}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}
