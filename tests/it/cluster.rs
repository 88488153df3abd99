//! Past one machine: `velo run --cluster df://...` on an Apache DataFusion
//! Ballista cluster whose scheduler and two executors are `velo cluster`
//! processes started here on 127.0.0.1. The cluster's answer is compared
//! with the same application run in one process. Also the one-process
//! batch plan over the same listing tables (backfills at batch speed).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::common::{
    free_port, published, read_text, run_and_take, run_in, take_one, velo, wait_for,
    write_id_ts_parquet,
};

/// A scheduler and two executors, killed on drop; their logs in `dir`.
struct Cluster {
    children: Vec<Child>,
    url: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

impl Cluster {
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// Its processes with `env` (an object store's credentials).
    fn start_with(dir: &Path, env: &[(String, String)]) -> Self {
        let start = |args: Vec<String>, log: &str| {
            velo()
                .current_dir(dir)
                .args(&args)
                .envs(env.iter().map(|(k, v)| (k, v)))
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(log)).unwrap())
                .stdin(Stdio::null())
                .spawn()
                .expect("velo cluster starts")
        };
        let sched = free_port();
        let mut c = Cluster {
            children: vec![start(
                vec![
                    "cluster".into(),
                    "scheduler".into(),
                    "--bind".into(),
                    format!("127.0.0.1:{sched}"),
                ],
                "scheduler.log",
            )],
            url: format!("df://127.0.0.1:{sched}"),
        };
        wait_for(Duration::from_secs(30), "the scheduler to listen", || {
            listening(sched)
        });
        for i in 0..2 {
            let (flight, grpc) = (free_port(), free_port());
            let work = dir.join(format!("work-{i}"));
            std::fs::create_dir_all(&work).unwrap();
            c.children.push(start(
                vec![
                    "cluster".into(),
                    "executor".into(),
                    "--scheduler".into(),
                    format!("127.0.0.1:{sched}"),
                    "--bind".into(),
                    format!("127.0.0.1:{flight}"),
                    "--grpc-port".into(),
                    grpc.to_string(),
                    // one slot each: a stage of two or more tasks uses both
                    "--concurrent-tasks".into(),
                    "1".into(),
                    "--work-dir".into(),
                    work.to_string_lossy().into_owned(),
                ],
                &format!("executor-{i}.log"),
            ));
            wait_for(Duration::from_secs(30), "an executor to listen", || {
                listening(flight) && listening(grpc)
            });
        }
        c
    }
}

/// Four days of events as Hive-partitioned Parquet (`lake/day=N/`) and a
/// CSV of the days' labels.
fn lake(dir: &Path) {
    for d in 1..=4i64 {
        let part = dir.join(format!("lake/day=d{d}"));
        std::fs::create_dir_all(&part).unwrap();
        write_id_ts_parquet(&part.join("part-0.parquet"), (d - 1) * 5_000..d * 5_000);
        write_id_ts_parquet(
            &part.join("part-1.parquet"),
            100_000 + d * 1_000..100_000 + d * 1_000 + 700,
        );
    }
    std::fs::write(
        dir.join("days.csv"),
        "day,label\nd1,monday\nd2,tuesday\nd3,wednesday\nd4,thursday\n",
    )
    .unwrap();
}

const APP: &str = r#"CREATE STREAM per_day AS
SELECT e.day, d.label, COUNT(*) AS n, SUM(e.id) AS total, MAX(e.ts) AS last
FROM events e JOIN days d ON e.day = d.day
WHERE e.id % 3 <> 0
GROUP BY e.day, d.label
ORDER BY e.day
INTO out
WITH ('events.type' = 'file_source', 'events.path' = 'lake/**/*.parquet', 'events.format' = 'parquet',
      'days.type' = 'file_source', 'days.path' = 'days.csv', 'days.format' = 'csv',
      'out.type' = 'file_sink', 'out.path' = 'out.jsonl', 'use_transactions' = 'true');"#;

/// A bounded join and GROUP BY over Hive-partitioned Parquet and a CSV,
/// run by the cluster's executors (each ran tasks of it), gives the answer
/// of the same application in one process; the sink writes and commits in
/// the `velo run` process.
#[test]
fn a_bounded_query_runs_on_a_ballista_cluster_with_the_local_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    lake(dir);
    std::fs::write(dir.join("app.sql"), APP).unwrap();
    // the answer of one process
    let o = run_in(dir, &["run", "app.sql"], &[]);
    let said_locally = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{said_locally}");
    let output = || take_one(dir, "out");
    let local = output();
    assert_eq!(local.lines().count(), 4, "{local}");
    // the cluster's
    let cluster = Cluster::start(dir);
    let o = run_in(dir, &["run", "app.sql", "--cluster", &cluster.url], &[]);
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{said}");
    assert!(said.contains("runs on the cluster"), "{said}");
    let remote = output();
    assert_eq!(remote, local, "the cluster's answer is the local one");
    // what the executors read, as the scheduler has it from them, is what
    // the local run read: every row of the 8 Parquet files and the 4 days
    assert_eq!(
        reads(&said_locally),
        ["source days: 4 read", "source events: 22800 read"],
        "{said_locally}"
    );
    assert_eq!(reads(&said), reads(&said_locally), "{said}");
    // both executors ran tasks of the job
    for i in 0..2 {
        let log = read_text(&dir.join(format!("executor-{i}.log")));
        assert!(
            log.contains("Finished task"),
            "executor {i} ran no task:\n{log}"
        );
    }
}

/// The records read per source that a run's statistics give.
fn reads(said: &str) -> Vec<String> {
    said.lines()
        .filter(|l| l.trim_start().starts_with("source ") && l.ends_with(" read"))
        .map(|l| l.trim().to_string())
        .collect()
}

/// Parquet on S3 (moto): the scheduler lists and the executors read the
/// objects with their own environment's credentials, none sent by the job;
/// the answer is the one-process run's.
#[test]
fn an_s3_query_runs_on_the_cluster_with_its_processes_credentials() {
    use crate::common::Moto;
    let moto = Moto::start("lake");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    lake(dir);
    for d in 1..=4 {
        for part in 0..2 {
            let key = format!("events/day=d{d}/part-{part}.parquet");
            let local = dir.join(format!("lake/day=d{d}/part-{part}.parquet"));
            crate::lake::s3py(&moto, &["put", "lake", &key, local.to_str().unwrap()]);
        }
    }
    std::fs::remove_dir_all(dir.join("lake")).unwrap();
    let app = APP.replace(
        "'events.type' = 'file_source', 'events.path' = 'lake/**/*.parquet'",
        "'events.type' = 's3_source', 'events.path' = 's3://lake/events/**/*.parquet'",
    );
    assert_ne!(app, APP);
    std::fs::write(dir.join("app.sql"), app).unwrap();
    let output = || take_one(dir, "out");
    let o = run_in(dir, &["run", "app.sql"], &moto.env());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let local = output();
    assert_eq!(local.lines().count(), 4, "{local}");
    let cluster = Cluster::start_with(dir, &moto.env());
    let o = run_in(
        dir,
        &["run", "app.sql", "--cluster", &cluster.url],
        &moto.env(),
    );
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{said}");
    assert!(said.contains("runs on the cluster"), "{said}");
    assert_eq!(output(), local, "the cluster's answer is the local one");
}

/// A Delta snapshot (delta-rs, rows deleted since: the log's files only)
/// joined with an Iceberg snapshot (pyiceberg, a copy-on-write delete) on
/// the cluster: its executors read the snapshots' data files by URL; the
/// answer is the one-process run's; so is a partitioned Delta table's
/// (its partition values from the log, through velo's codec).
#[test]
fn table_snapshots_run_on_the_cluster_with_the_local_answer() {
    use serde_json::{Value, json};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let orders: Vec<Value> = (0..400)
        .map(|i| json!({"id": i, "item": i % 7, "day": format!("d{}", i % 3)}))
        .collect();
    let orders_path = dir.join("lake/orders");
    let t = orders_path.to_str().unwrap();
    crate::delta::py(
        &["write", t, "append", &Value::Array(orders).to_string()],
        &[],
    );
    crate::delta::py(&["delete", t, "id < 40"], &[]);
    let cat = crate::iceberg::sql_catalog(dir);
    for half in 0..2 {
        let items: Vec<Value> = (half * 4..half * 4 + 4)
            .map(|i| json!({"item": i, "price": i * 10 + 1}))
            .collect();
        crate::iceberg::py(
            &cat,
            &["write", "shop.items", &Value::Array(items).to_string()],
            &[],
        );
    }
    crate::iceberg::py(&cat, &["delete", "shop.items", "item", "3"], &[]);
    let app = format!(
        "CREATE STREAM per_day AS
         SELECT o.day, COUNT(*) AS n, SUM(i.price) AS revenue
         FROM orders o JOIN 'iceberg://shop.items?{}' i ON o.item = i.item
         GROUP BY o.day ORDER BY o.day
         INTO out
         WITH ('orders.type' = 'delta_source', 'orders.path' = 'lake/orders',
               'out.type' = 'file_sink', 'out.path' = 'out.jsonl', 'use_transactions' = 'true');",
        crate::iceberg::SQL_Q
    );
    std::fs::write(dir.join("app.sql"), app).unwrap();
    let output = || take_one(dir, "out");
    let o = run_in(dir, &["run", "app.sql"], &[]);
    let said_locally = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{said_locally}");
    let local = output();
    assert_eq!(local.lines().count(), 3, "{local}");
    // ids 40..400 whose item is not 3 (deleted from the items)
    let n: i64 = local
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .sum();
    assert_eq!(
        n,
        (40..400).filter(|i| i % 7 != 3).count() as i64,
        "{local}"
    );
    let cluster = Cluster::start(dir);
    let o = run_in(dir, &["run", "app.sql", "--cluster", &cluster.url], &[]);
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{said}");
    assert!(said.contains("runs on the cluster"), "{said}");
    assert_eq!(output(), local, "the cluster's answer is the local one");
    // each snapshot's rows read, told apart by where their files are
    let read = reads(&said_locally);
    assert!(
        read.contains(&"source orders: 360 read".to_string()),
        "{said_locally}"
    );
    assert!(
        read.iter().any(|r| r.ends_with(": 7 read")),
        "{said_locally}"
    );
    assert_eq!(reads(&said), read, "{said}");
    // a Delta table partitioned by a string and an integer (one value
    // null): the values come from the log, typed as the table says
    let parted = dir.join("lake/parted");
    for part in 0..2 {
        let rows: Vec<Value> = (part * 60..part * 60 + 60)
            .map(|i| {
                let hour = if i % 5 == 4 {
                    Value::Null
                } else {
                    json!(i % 5)
                };
                json!({"id": i, "v": i * 2, "day": format!("d{}", i % 3), "hour": hour})
            })
            .collect();
        crate::delta::py(
            &[
                "write",
                parted.to_str().unwrap(),
                "append",
                &Value::Array(rows).to_string(),
                "day,hour",
            ],
            &[],
        );
    }
    std::fs::write(
        dir.join("p.sql"),
        "CREATE STREAM p AS SELECT day, hour, COUNT(*) AS n, SUM(v) AS v FROM src
           WHERE day <> 'd2' GROUP BY day, hour ORDER BY day, hour INTO out
         WITH ('src.type' = 'delta_source', 'src.path' = 'lake/parted',
               'out.type' = 'file_sink', 'out.path' = 'p.jsonl');
         CREATE STREAM firsts AS SELECT * FROM src WHERE id < 6 ORDER BY id INTO first
         WITH ('src.type' = 'delta_source', 'src.path' = 'lake/parted',
               'first.type' = 'file_sink', 'first.path' = 'first.jsonl');",
    )
    .unwrap();
    let answers = |args: &[&str]| {
        for f in ["p.jsonl", "first.jsonl"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let o = run_in(dir, args, &[]);
        let said = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{said}");
        (
            read_text(&dir.join("p.jsonl")),
            read_text(&dir.join("first.jsonl")),
            said,
        )
    };
    let (local_p, local_first, _) = answers(&["run", "p.sql"]);
    let (p, first, said) = answers(&["run", "p.sql", "--cluster", &cluster.url]);
    assert!(said.contains("runs on the cluster"), "{said}");
    assert_eq!(p, local_p, "the cluster's answer is the local one");
    assert_eq!(
        first, local_first,
        "the cluster's columns are the local ones"
    );
    // and the local one is right: 2 days x 5 hours (one of them null)
    let groups: Vec<Value> = p
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(groups.len(), 10, "{p}");
    for g in &groups {
        let day: i64 = g["day"].as_str().unwrap()[1..].parse().unwrap();
        let hour = g["hour"].as_i64();
        let ids: Vec<i64> = (0..120)
            .filter(|i| i % 3 == day && (if i % 5 == 4 { None } else { Some(i % 5) }) == hour)
            .collect();
        assert_eq!(g["n"].as_i64(), Some(ids.len() as i64), "{g}");
        assert_eq!(
            g["v"].as_i64(),
            Some(ids.iter().map(|i| i * 2).sum::<i64>()),
            "{g}"
        );
    }
    let firsts: Vec<Value> = first
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(firsts.len(), 6, "{first}");
    assert_eq!(
        firsts[1],
        json!({"id": 1, "v": 2, "day": "d1", "hour": 1}),
        "{first}"
    );
    assert_eq!(firsts[4]["hour"], Value::Null, "{first}");
}

/// What cannot run on a cluster is refused before anything runs, saying
/// why; an unreachable scheduler says how to start one.
#[test]
fn cluster_refusals_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    lake(dir);
    let windowed = r#"CREATE STREAM w AS
SELECT window_start, COUNT(*) AS n FROM events GROUP BY TUMBLE(ts, INTERVAL '1' SECOND) INTO out
WITH ('events.type' = 'file_source', 'events.path' = 'lake/**/*.parquet', 'events.format' = 'parquet',
      'events.event.time.field' = 'ts', 'out.type' = 'file_sink', 'out.path' = 'w.jsonl');"#;
    std::fs::write(dir.join("w.sql"), windowed).unwrap();
    let o = run_in(dir, &["run", "w.sql", "--cluster", "df://127.0.0.1:1"], &[]);
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{said}");
    assert!(
        said.contains("'cluster' runs bounded batch queries") && said.contains("windows"),
        "{said}"
    );
    std::fs::write(dir.join("app.sql"), APP).unwrap();
    let port = free_port();
    let o = run_in(
        dir,
        &[
            "run",
            "app.sql",
            "--cluster",
            &format!("df://127.0.0.1:{port}"),
        ],
        &[],
    );
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{said}");
    assert!(
        said.contains("cannot reach the Ballista scheduler")
            && said.contains("velo cluster scheduler"),
        "{said}"
    );
    assert!(published(dir, "out").is_empty(), "nothing written");
    let o = run_in(dir, &["run", "app.sql", "--cluster", "http://x"], &[]);
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success() && said.contains("df://host:port"),
        "{said}"
    );
}

/// A bounded aggregate over Parquet files runs in one process as one
/// DataFusion batch plan over listing tables (every core, the Hive column
/// pruned and pushed down), with the answer, the records read and the
/// dead-lettered rows of the streaming run (`batch.size` asks for epochs,
/// which keeps the job on velo's own readers); a CSV source stays on them.
#[test]
fn a_bounded_parquet_aggregate_runs_as_one_batch_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    lake(dir);
    // 10 / (id % 5) fails on every fifth row: those rows are dead-lettered
    let app = r#"CREATE STREAM per_day AS
SELECT day, COUNT(*) AS n, SUM(10 / (id % 5)) AS s, MIN(ts) AS first
FROM events WHERE day <> 'd3'
GROUP BY day ORDER BY day
INTO out
WITH ('events.type' = 'file_source', 'events.path' = 'lake/**/*.parquet', 'events.format' = 'parquet',
      'out.type' = 'file_sink', 'out.path' = 'out.jsonl', 'use_transactions' = 'true',
      'dlq.path' = 'dead.jsonl');"#;
    std::fs::write(dir.join("app.sql"), app).unwrap();
    let run = |args: &[&str]| run_and_take(dir, args);
    // explain says how it will run, and why not with batch.size
    let explain = |args: &[&str]| {
        let mut all = vec!["explain", "app.sql"];
        all.extend_from_slice(args);
        let o = run_in(dir, &all, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let said = explain(&[]);
    assert!(
        said.contains("it runs as one DataFusion batch plan"),
        "{said}"
    );
    let said = explain(&["--set", "batch.size=1000"]);
    assert!(
        said.contains("as one epoch on velo's own readers: 'batch.size' asks for epochs"),
        "{said}"
    );
    let (batch, batch_dead, said) = run(&[]);
    assert!(said.contains("one batch plan"), "{said}");
    // days d1, d2, d4: 3 x 5,700 rows read (d3's files pruned by the filter)
    assert!(said.contains("source events: 17100 read"), "{said}");
    let (streamed, streamed_dead, said) = run(&["--set", "batch.size=1000"]);
    assert!(!said.contains("one batch plan"), "{said}");
    assert_eq!(
        batch, streamed,
        "the batch plan answers as the streaming run"
    );
    assert_eq!(batch.lines().count(), 3, "{batch}");
    assert_eq!(batch_dead, 17_100 / 5, "every fifth row dead-lettered");
    assert!(batch.contains(r#""n":4560"#), "the others counted: {batch}");
    assert_eq!(batch_dead, streamed_dead);
}
