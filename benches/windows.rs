//! Windowed aggregation benchmark (not a test): release mode,
//! `cargo bench --bench windows`.
//!
//! The generator (`datagen`, 1 ms of event time per row, 1,000 keys) feeds a
//! windowed GROUP BY with COUNT, SUM, AVG and MAX per key, whose results go to
//! a JSON Lines file:
//! 1. `tumble`: 1-second tumbling windows;
//! 2. `hop`: 10-second windows every 2 seconds (each row in 5 windows);
//! 3. `session`: 100 ms session gap per key;
//!
//! and row windows over the same rows (every row out, with its values over
//! its key's earlier rows, in event-time order):
//! 4. `lag`: `LAG(value)` per key;
//! 5. `running`: `ROW_NUMBER()` and a running `SUM(value)` per key;
//! 6. `buffer`: `AVG(value)` over `ROWS WINDOW BUFFER 100 ROWS` per key.
//!
//! Each runs at 1 and at 2 partitions (`BENCH_PARTITIONS`, default `1,2`):
//! the group key is hash-routed to partitions that aggregate on their own
//! cores. Reports events per second (wall), the speed-up over 1 partition,
//! events per CPU-second (user and system time of this process) and the
//! cores the run kept busy (CPU-seconds per wall second: with `c` of them at
//! 1 partition, 2 cores allow at most a `2 / c` speed-up at the same CPU
//! cost per event).
//! `BENCH_ROWS` sets the rows (default 5M), `BENCH_RUNS` the repetitions
//! (best wall time kept), `BENCH_EPOCH` the records per epoch (default
//! 100,000), `BENCH_KEYS` the distinct keys (default 1,000), `BENCH_SINK=blackhole`
//! drops the results instead of writing them; an argument filters by name.

use std::time::Instant;

mod common;

use common::{cpu_seconds, env_or, run_sql};

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let rows: u64 = env_or("BENCH_ROWS", 5_000_000);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let parts: Vec<usize> = env_or("BENCH_PARTITIONS", "1,2".to_string())
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let agg = "SELECT key, window_start, COUNT(*) AS n, SUM(value) AS total, AVG(value) AS mean, MAX(value) AS top FROM gen";
    let over = "OVER (PARTITION BY key ORDER BY ts)";
    let windows = [
        (
            "tumble",
            format!("{agg} GROUP BY key, TUMBLE(ts, INTERVAL '1' SECOND)"),
        ),
        (
            "hop",
            format!("{agg} GROUP BY key, HOP(ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND)"),
        ),
        (
            "session",
            format!("{agg} GROUP BY key, SESSION(ts, INTERVAL '100' MILLISECOND)"),
        ),
        // EMIT CHANGES: the bounded generator read as a stream, epoch by epoch
        (
            "lag",
            format!("SELECT key, value, LAG(value) {over} AS prev FROM gen EMIT CHANGES"),
        ),
        (
            "running",
            format!(
                "SELECT key, value, ROW_NUMBER() {over} AS n, SUM(value) {over} AS total FROM gen EMIT CHANGES"
            ),
        ),
        (
            "buffer",
            "SELECT key, value, AVG(value) OVER (ROWS WINDOW BUFFER 100 ROWS PARTITION BY key ORDER BY ts) AS mean FROM gen EMIT CHANGES".to_string(),
        ),
    ];
    // the results to a JSON Lines file, or (BENCH_SINK=blackhole) dropped
    let blackhole = env_or("BENCH_SINK", String::new()) == "blackhole";
    // records per epoch, and distinct keys
    let epoch: u64 = env_or("BENCH_EPOCH", 100_000);
    let keys: u64 = env_or("BENCH_KEYS", 1_000);
    let dir = tempfile::tempdir().unwrap();
    println!(
        "windows and row windows over the generator, {rows} events, best of {runs}, results to {}",
        if blackhole {
            "a blackhole"
        } else {
            "a JSON Lines file"
        }
    );
    println!(
        "{:<10} {:>10} {:>14} {:>9} {:>18} {:>6} {:>10}",
        "window", "partitions", "events/s", "speed-up", "events/CPU-s", "cores", "wall s"
    );
    for (name, query) in windows {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let mut single: Option<f64> = None;
        let sink = if blackhole {
            "'out.type' = 'blackhole'".to_string()
        } else {
            format!("'out.type' = 'file_sink', 'out.path' = 'out/{name}.jsonl'")
        };
        for &p in &parts {
            let sql = format!(
                "CREATE STREAM w AS {query} INTO out
             WITH ('gen.type' = 'datagen', 'gen.rows' = '{rows}',
                   'gen.columns' = 'key:int(0,{}), value:float(0,1000), ts:timestamp(1)',
                   'gen.event.time.field' = 'ts', 'gen.watermark.max_out_of_orderness' = '0ms',
                   'batch.size' = '{epoch}', 'partitions' = '{p}', {sink});",
                keys - 1
            );
            let mut best: Option<(f64, f64, f64)> = None;
            for _ in 0..runs {
                let (c0, t0) = (cpu_seconds(), Instant::now());
                let read = run_sql(&sql, dir.path(), velo_engine::Shutdown::default());
                let wall = t0.elapsed().as_secs_f64();
                let cpu = cpu_seconds() - c0;
                assert_eq!(read, rows, "every event read");
                let r = (read as f64 / wall, read as f64 / cpu, wall);
                if best.is_none_or(|b| r.0 > b.0) {
                    best = Some(r);
                }
            }
            let (eps, epc, wall) = best.unwrap();
            let base = *single.get_or_insert(eps);
            println!(
                "{name:<10} {p:>10} {eps:>14.0} {:>8.2}x {epc:>18.0} {:>6.2} {wall:>10.2}",
                eps / base,
                eps / epc
            );
        }
    }
}
