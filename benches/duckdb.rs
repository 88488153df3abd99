//! velo against DuckDB on the same work, side by side in one run (not a
//! test): release mode, `cargo bench --bench duckdb`.
//!
//! Scenarios (inputs generated once under `target/bench-data/`):
//! - `jsonl_to_parquet`: 5M rows of JSON Lines (~95 bytes a row) -> filter
//!   and projection -> Parquet;
//! - `1brc`: the One Billion Row Challenge at 10M lines (`station;temp`,
//!   413 stations) -> MIN/AVG/MAX per station -> CSV.
//!
//! Each scenario runs `BENCH_RUNS` times (default 3), velo and DuckDB
//! interleaved. The figure is rows per CPU-second of each process: velo's
//! user + system time over its run (in this process), DuckDB's around its
//! query in its own Python process (`SET threads = 1`, DuckDB from pip:
//! `pip install duckdb`; `BENCH_PYTHON` names the interpreter). Medians are
//! reported, and velo / DuckDB. Beside them, the decoder alone (arrow-json
//! or arrow-csv reading the same file into batches on this thread, nothing
//! else): its rate bounds what velo can reach while it keeps those
//! decoders, and `overhead` is the share of velo's CPU time spent beyond
//! decoding. That overhead is split in two by a third velo run, the
//! pass-through: the same source and columns into a `blackhole` sink, no
//! filter, no aggregate, no file written. `pipeline` is what velo adds
//! around the decoder (splitting the file, the decoding threads, the
//! hand-offs to the engine and the sink, the job's setup): the
//! pass-through's CPU beyond the decoder's; `query` is the query's own
//! work (DataFusion's filter, projection or aggregate, the Parquet or CSV
//! writer): velo's CPU beyond the pass-through's. Both are shares of
//! velo's CPU per row and add up to `overhead`. Run it on an otherwise
//! idle machine: under load a multi-threaded process's CPU time inflates.
//! `BENCH_ROWS` and `BENCH_BRC_ROWS` change the sizes; an argument filters
//! by scenario.

use std::io::Write;
use std::path::{Path, PathBuf};

mod common;

use common::{cpu_seconds, env_or, median, orders_jsonl, run_sql};

/// 1BRC lines: `station;temperature` with one decimal, 413 stations.
fn measurements(path: &Path, rows: u64) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
        return;
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension("tmp");
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).unwrap());
    let mut x: u64 = 7;
    for _ in 0..rows {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let station = (x >> 33) % 413;
        let tenths = ((x >> 20) % 1999) as i64 - 999;
        let sign = if tenths < 0 { "-" } else { "" };
        let t = tenths.abs();
        writeln!(w, "Station{station:03};{sign}{}.{}", t / 10, t % 10).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    std::fs::rename(tmp, path).unwrap();
}

/// velo's rows per CPU-second on `sql`.
fn velo(sql: &str, dir: &Path, rows: u64) -> f64 {
    let c0 = cpu_seconds();
    let read = run_sql(sql, dir, velo_engine::Shutdown::default());
    assert_eq!(read, rows, "velo read every row");
    rows as f64 / (cpu_seconds() - c0)
}

/// DuckDB's rows per CPU-second on `query`, on one thread, timed inside
/// its process around the query alone.
fn duckdb(query: &str, rows: u64) -> f64 {
    let script = format!(
        "import duckdb, resource\n\
         c = duckdb.connect()\n\
         c.execute('SET threads = 1')\n\
         c.execute('SET enable_progress_bar = false')\n\
         u = resource.getrusage(resource.RUSAGE_SELF)\n\
         c.execute({query:?})\n\
         v = resource.getrusage(resource.RUSAGE_SELF)\n\
         print(v.ru_utime - u.ru_utime + v.ru_stime - u.ru_stime)\n"
    );
    // the last line: the CPU time (nothing else should print, but a
    // progress bar or a warning once made the joined output unparsable)
    let said = common::python(&script, "duckdb");
    let cpu: f64 = said
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("DuckDB's helper printed no CPU time: {said:?}"));
    rows as f64 / cpu
}

/// Which decoder a scenario's input needs.
#[derive(Clone, Copy)]
enum Decoder {
    /// The orders' JSON Lines.
    Json,
    /// 1BRC's `station;temperature` lines.
    Csv,
}

/// The decoder alone on `path`: rows per CPU-second of arrow-json or
/// arrow-csv building batches of the columns the query reads, on this
/// thread.
fn decoder_only(decoder: Decoder, path: &Path, rows: u64) -> f64 {
    use arrow::datatypes::{DataType, Field, Schema};
    let file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path).unwrap());
    let c0 = cpu_seconds();
    let read: usize = match decoder {
        Decoder::Json => {
            // the four fields the query reads, as velo's source decodes
            // them (the others are skipped)
            let schema = Schema::new(vec![
                Field::new("order_id", DataType::Int64, true),
                Field::new("customer_id", DataType::Int64, true),
                Field::new("amount", DataType::Float64, true),
                Field::new("status", DataType::Utf8, true),
            ]);
            arrow::json::ReaderBuilder::new(std::sync::Arc::new(schema))
                .with_batch_size(8192)
                .build(file)
                .unwrap()
                .map(|b| b.unwrap().num_rows())
                .sum()
        }
        Decoder::Csv => {
            let schema = Schema::new(vec![
                Field::new("station", DataType::Utf8, true),
                Field::new("t", DataType::Float64, true),
            ]);
            arrow::csv::ReaderBuilder::new(std::sync::Arc::new(schema))
                .with_header(false)
                .with_delimiter(b';')
                .with_batch_size(8192)
                .build(file)
                .unwrap()
                .map(|b| b.unwrap().num_rows())
                .sum()
        }
    };
    assert_eq!(read as u64, rows, "the decoder read every row");
    rows as f64 / (cpu_seconds() - c0)
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let rows: u64 = env_or("BENCH_ROWS", 5_000_000);
    let brc_rows: u64 = env_or("BENCH_BRC_ROWS", 10_000_000);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    let out = tempfile::tempdir().unwrap();
    let o = out.path().display();
    let orders = root.join(format!("orders_{rows}.jsonl"));
    let brc = root.join(format!("measurements_{brc_rows}.txt"));
    // each scenario's source, shared by the query and its pass-through
    // (the same columns into a blackhole sink)
    let orders_src = format!(
        "'orders.type' = 'file_source', 'orders.path' = '{}'",
        orders.display()
    );
    let brc_src = format!(
        "'m.type' = 'file_source', 'm.path' = '{}', 'm.format' = 'csv', 'm.has_headers' = 'false',
         'm.delimiter' = ';', 'm.schema' = 'station VARCHAR, t DOUBLE'",
        brc.display()
    );
    let scenarios = [
        (
            "jsonl_to_parquet",
            rows,
            Decoder::Json,
            &orders,
            format!(
                "SELECT order_id, customer_id, amount * 1.1 AS gross, status FROM orders WHERE amount > 100 AND status <> 'CANCELLED'
                 INTO pq WITH ({orders_src}, 'pq.type' = 'file_sink', 'pq.path' = '{o}/velo.parquet');"
            ),
            format!(
                "SELECT order_id, customer_id, amount, status FROM orders INTO bh WITH ({orders_src}, 'bh.type' = 'blackhole');"
            ),
            format!(
                "COPY (SELECT order_id, customer_id, amount * 1.1 AS gross, status FROM read_json('{}', format = 'newline_delimited',
                   columns = {{order_id: 'BIGINT', customer_id: 'BIGINT', amount: 'DOUBLE', status: 'VARCHAR', region: 'VARCHAR', ts: 'BIGINT'}})
                   WHERE amount > 100 AND status <> 'CANCELLED') TO '{o}/duckdb.parquet' (FORMAT parquet)",
                orders.display()
            ),
        ),
        (
            "1brc",
            brc_rows,
            Decoder::Csv,
            &brc,
            format!(
                "SELECT station, MIN(t) AS mn, AVG(t) AS mean, MAX(t) AS mx FROM m GROUP BY station INTO out
                 WITH ({brc_src}, 'out.type' = 'file_sink', 'out.path' = '{o}/velo.csv');"
            ),
            format!("SELECT station, t FROM m INTO bh WITH ({brc_src}, 'bh.type' = 'blackhole');"),
            format!(
                "COPY (SELECT station, MIN(t) AS mn, AVG(t) AS mean, MAX(t) AS mx FROM read_csv('{}', delim = ';', header = false,
                   columns = {{station: 'VARCHAR', t: 'DOUBLE'}}) GROUP BY station) TO '{o}/duckdb.csv' (HEADER)",
                brc.display()
            ),
        ),
    ];
    println!(
        "velo against DuckDB (one thread), {} cores, median of {runs} interleaved runs, rows per CPU-second",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<18} {:>12} {:>14} {:>14} {:>12} {:>14} {:>14} {:>14} {:>9} {:>9} {:>9}",
        "scenario",
        "rows",
        "velo",
        "DuckDB",
        "velo/DuckDB",
        "decoder alone",
        "decoder/DuckDB",
        "pass-through",
        "overhead",
        "pipeline",
        "query"
    );
    for (name, n, decoder, input, velo_sql, pass_sql, duck_sql) in &scenarios {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        if *name == "1brc" {
            measurements(&brc, brc_rows);
        } else {
            orders_jsonl(&orders, rows);
        }
        let (mut v, mut d, mut a, mut p) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            v.push(velo(velo_sql, out.path(), *n));
            d.push(duckdb(duck_sql, *n));
            a.push(decoder_only(*decoder, input, *n));
            p.push(velo(pass_sql, out.path(), *n));
        }
        let (v, d, a, p) = (median(v), median(d), median(a), median(p));
        // CPU per row beyond decoding, as a share of velo's CPU per row,
        // and its two parts: the pass-through's beyond decoding, velo's
        // beyond the pass-through's
        let overhead = 1.0 - v / a;
        let pipeline = v / p - v / a;
        let query = 1.0 - v / p;
        println!(
            "{name:<18} {n:>12} {v:>14.0} {d:>14.0} {:>11.2}x {a:>14.0} {:>13.2}x {p:>14.0} {:>8.0}% {:>8.0}% {:>8.0}%",
            v / d,
            a / d,
            overhead * 100.0,
            pipeline * 100.0,
            query * 100.0
        );
    }
}
