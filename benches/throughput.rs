//! Throughput benchmark (not a test): release mode, `cargo bench --bench throughput`.
//!
//! Scenarios, each over the same 1M-row JSON Lines file (~100 bytes a row,
//! generated once under `target/bench-data/`):
//! 1. JSONL -> filter + projection -> Parquet
//! 2. JSONL -> filter + projection -> Parquet and JSON Lines (two sinks)
//! 3. generator -> filter + projection -> Parquet
//!
//! Reports wall-clock rows/s and MB/s, and rows per CPU-second (user + system
//! time of this process), which is the per-core figure. Pin it to one core
//! with `taskset -c 0 cargo bench --bench throughput` for a strict one-core run.
//! `BENCH_ROWS` changes the row count, `BENCH_RUNS` the repetitions (best kept).

use std::path::{Path, PathBuf};
use std::time::Instant;

mod common;

use common::{cpu_seconds, env_or, orders_jsonl, run_sql};

struct Outcome {
    wall: f64,
    cpu: f64,
    rows: u64,
}

fn run(sql: &str, dir: &Path) -> Outcome {
    let (c0, t0) = (cpu_seconds(), Instant::now());
    let rows = run_sql(sql, dir, velo_engine::Shutdown::default());
    Outcome {
        wall: t0.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - c0,
        rows,
    }
}

fn main() {
    // `cargo bench` passes --bench; any other argument filters scenarios by name
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let rows: u64 = env_or("BENCH_ROWS", 1_000_000);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    let input = root.join(format!("orders_{rows}.jsonl"));
    orders_jsonl(&input, rows);
    let bytes = std::fs::metadata(&input).unwrap().len() as f64;
    let out = tempfile::tempdir().unwrap();
    let src = format!(
        "'orders.type' = 'file_source', 'orders.path' = '{}'",
        input.display()
    );
    let select = "SELECT order_id, customer_id, amount * 1.1 AS gross, status FROM orders WHERE amount > 100 AND status <> 'CANCELLED'";
    let scenarios = [
        (
            "jsonl_to_parquet",
            format!(
                "{select} INTO pq WITH ({src}, 'pq.type' = 'file_sink', 'pq.path' = '{}/a.parquet');",
                out.path().display()
            ),
            bytes,
        ),
        (
            "jsonl_to_parquet_and_jsonl",
            format!(
                "{select} INTO pq, js WITH ({src}, 'pq.type' = 'file_sink', 'pq.path' = '{0}/b.parquet', 'js.type' = 'file_sink', 'js.path' = '{0}/b.jsonl');",
                out.path().display()
            ),
            bytes,
        ),
        (
            "datagen_to_parquet",
            format!(
                "SELECT order_id, customer_id, amount * 1.1 AS gross, status FROM gen WHERE amount > 100 AND status <> 'CANCELLED' INTO pq WITH ('gen.type' = 'datagen', 'gen.rows' = '{rows}', 'gen.columns' = 'order_id:sequence(1000000), customer_id:int(0,49999), amount:float(0,1000), status:oneof(NEW|PAID|SHIPPED|CANCELLED), region:oneof(eu-west|us-east|ap-south), ts:timestamp(1)', 'pq.type' = 'file_sink', 'pq.path' = '{}/c.parquet');",
                out.path().display()
            ),
            0.0,
        ),
    ];
    println!(
        "machine: {} cores; input: {rows} rows, {:.1} MB JSON Lines ({:.0} bytes/row)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        bytes / 1e6,
        bytes / rows as f64
    );
    println!(
        "{:<28} {:>12} {:>10} {:>16} {:>8} {:>8}",
        "scenario", "rows/s", "MB/s", "rows/cpu-second", "wall s", "cpu s"
    );
    for (name, sql, in_bytes) in &scenarios {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let best = (0..runs)
            .map(|_| run(sql, out.path()))
            .min_by(|a, b| a.wall.total_cmp(&b.wall))
            .unwrap();
        assert_eq!(best.rows, rows, "{name} read every row");
        let mbps = if *in_bytes > 0.0 {
            format!("{:.0}", in_bytes / 1e6 / best.wall)
        } else {
            "-".into()
        };
        println!(
            "{name:<28} {:>12.0} {mbps:>10} {:>16.0} {:>8.3} {:>8.2}",
            best.rows as f64 / best.wall,
            best.rows as f64 / best.cpu.max(1e-9),
            best.wall,
            best.cpu
        );
    }
}
