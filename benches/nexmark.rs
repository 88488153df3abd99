//! Nexmark benchmark (not a test): release mode, `cargo bench --bench nexmark`.
//!
//! Runs every example app in `examples/nexmark/` on the `nexmark` generator
//! with the sink replaced by a `blackhole` (Nexmark measures the engine, not
//! a disk), and reports bids read per second (wall) and per CPU-second (the
//! user and system time of this process, the per-core figure; the generator
//! is included), and the same per CPU-second for the events of the whole
//! Nexmark stream (Nexmark's own unit: q8 reads only the person and auction
//! tables, 8 of every 50 events). The bid table is 46 of every 50 events.
//! Each query runs with the engine's defaults and tuned (epochs of 100,000
//! records); the last column is default against tuned.
//! `BENCH_EVENTS` sets the events of the stream (default 10M), `BENCH_RUNS`
//! the repetitions (best kept), `BENCH_PARTITIONS` the job's `partitions`
//! (default: the number of cores); an argument filters by query name (`q1`).

use std::time::Instant;

mod common;

use common::{cpu_seconds, env_or, run_sql};

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let events: u64 = env_or("BENCH_EVENTS", 10_000_000);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let partitions = match env_or("BENCH_PARTITIONS", 0usize) {
        0 => String::new(),
        n => format!(", 'partitions' = '{n}'"),
    };
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nexmark");
    let mut queries: Vec<(u32, String, String)> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            let n = name.trim_start_matches('q').parse().unwrap_or(999);
            (n, name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    queries.sort();
    let dir = tempfile::tempdir().unwrap();
    // the side tables the apps read beside them (q13's side_input.csv)
    for f in std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
    {
        if f.extension().is_some_and(|e| e == "csv") {
            std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
        }
    }
    println!(
        "Nexmark on the generator, {events} events of the stream, blackhole sink, best of {runs}"
    );
    println!(
        "{:<6} {:>12} {:>14} {:>16} {:>18} {:>9} {:>16} {:>9}",
        "query",
        "rows read",
        "rows/s",
        "rows/CPU-s",
        "events/CPU-s",
        "wall s",
        "tuned rows/CPU-s",
        "default"
    );
    for (_, name, app) in queries {
        if filter.as_deref().is_some_and(|f| name != f) {
            continue;
        }
        // with the engine's defaults, and tuned (epochs of 100,000 records):
        // the defaults should be within 10% of the tuned figure
        let sql = |tuning: &str| {
            let sql = app
                .replace("${NEXMARK_EVENTS:-1000000}", &events.to_string())
                .replace(
                    &format!("'out.type' = 'file_sink', 'out.path' = 'out/{name}.jsonl'"),
                    &format!("'out.type' = 'blackhole'{tuning}{partitions}"),
                );
            assert!(sql.contains("blackhole"), "{name}: the sink is replaced");
            sql
        };
        let (read, rps, rpc, epc, wall) = best_of(runs, events, &sql(""), dir.path());
        let tuned = best_of(runs, events, &sql(", 'batch.size' = '100000'"), dir.path());
        println!(
            "{name:<6} {read:>12} {rps:>14.0} {rpc:>16.0} {epc:>18.0} {wall:>9.2} {:>16.0} {:>8.2}x",
            tuned.2,
            rpc / tuned.2
        );
    }
}

/// The best of `runs` runs of `sql` by rows per CPU-second: (rows read,
/// rows/s, rows per CPU-second, events per CPU-second, wall seconds).
fn best_of(
    runs: usize,
    events: u64,
    sql: &str,
    dir: &std::path::Path,
) -> (u64, f64, f64, f64, f64) {
    let mut best: Option<(u64, f64, f64, f64, f64)> = None;
    for _ in 0..runs {
        let (c0, t0) = (cpu_seconds(), Instant::now());
        let read = run_sql(sql, dir, velo_engine::Shutdown::default());
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - c0;
        let r = (
            read,
            read as f64 / wall,
            read as f64 / cpu,
            events as f64 / cpu,
            wall,
        );
        if best.is_none_or(|b| r.2 > b.2) {
            best = Some(r);
        }
    }
    best.expect("at least one run")
}
