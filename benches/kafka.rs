//! Kafka benchmark (not a test): release mode, `cargo bench --bench kafka`.
//!
//! Part 1, throughput: 1M JSON messages of ~100 bytes are loaded into a topic
//! (24 partitions) of a broker on 127.0.0.1, then a Velostream job runs
//! Kafka JSON -> filter/project -> Kafka JSON to its end (`stop.at.end`),
//! in Simple mode and with `use_transactions`. Reported: messages/s (wall)
//! and messages per CPU-second of this process (the per-core figure; the
//! broker's CPU is counted too when it runs in this process).
//!
//! Part 2, batch strategies: messages are produced at a steady rate with
//! their send time in the payload; the job (Kafka -> Kafka) runs with each
//! batch strategy while a consumer measures produce-to-visible latency.
//! Reported: throughput and p50/p95 end-to-end latency per strategy.
//!
//! The broker: librdkafka's mock cluster in this process (default; it
//! accepts transactions), or tansu when `BENCH_BROKER=host:port` names a
//! running broker. `BENCH_MESSAGES` changes the message count,
//! `BENCH_RUNS` the repetitions (best kept), `BENCH_RATE` the part-2 rate,
//! `BENCH_DECODE_THREADS` the source's `decode_threads` (default 1).

use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

mod common;

use common::{cpu_seconds, env_or, run_sql};

/// Partitions per topic (the mock cluster keeps ~50k messages per partition).
const PARTITIONS: i32 = 24;

fn producer(bs: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bs)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap()
}

fn payload(i: u64, sent_us: u64) -> String {
    let statuses = ["NEW", "PAID", "SHIPPED", "CANCELLED"];
    format!(
        r#"{{"order_id":{i},"customer_id":{},"amount":{}.{:02},"status":"{}","sent_us":{sent_us}}}"#,
        (i * 7919) % 50_000,
        (i * 31) % 1000,
        i % 100,
        statuses[(i % 4) as usize]
    )
}

fn load(bs: &str, topic: &str, n: u64) -> f64 {
    let p = producer(bs);
    let mut bytes = 0usize;
    for i in 0..n {
        let v = payload(i, 0);
        bytes += v.len();
        let mut rec: BaseRecord<'_, str, str> = BaseRecord::to(topic).payload(v.as_str());
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    // queue full: wait for deliveries to make room
                    let _ = p.flush(Duration::from_millis(100));
                    rec = r;
                }
            }
        }
    }
    p.flush(Duration::from_secs(120)).unwrap();
    bytes as f64 / n as f64
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn job(bs: &str, input: &str, output: &str, extra: &str, bounded: bool) -> String {
    format!(
        "CREATE STREAM bench AS SELECT order_id, customer_id, amount * 1.1 AS gross, status, sent_us FROM orders WHERE status <> 'CANCELLED' INTO out WITH (\
         'orders.type' = 'kafka_source', 'orders.bootstrap.servers' = '{bs}', 'orders.topic' = '{input}', \
         'orders.stop.at.end' = '{bounded}', 'orders.group.id' = 'bench-{input}-{output}', \
         'orders.fetch.max.wait.ms' = '10', \
         'orders.schema' = 'order_id BIGINT, customer_id BIGINT, amount DOUBLE, status VARCHAR, sent_us BIGINT', \
         'out.type' = 'kafka_sink', 'out.bootstrap.servers' = '{bs}', 'out.topic' = '{output}', \
         'out.linger.ms' = '5', 'out.batch.num.messages' = '10000', 'out.queue.buffering.max.messages' = '1000000', \
         'state.dir' = 'state-{output}', 'orders.decode_threads' = '{}' {extra});",
        env_or::<u64>("BENCH_DECODE_THREADS", 1)
    )
}

fn throughput(bs: &str, dir: &Path, create: &dyn Fn(&str)) {
    let n = env_or::<u64>("BENCH_MESSAGES", 1_000_000);
    let runs = env_or::<u64>("BENCH_RUNS", 3);
    create("bench_in");
    let t0 = Instant::now();
    let avg = load(bs, "bench_in", n);
    // the mock cluster keeps a bounded log per partition: count what it holds
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bs)
        .set("group.id", "bench-count")
        .create()
        .unwrap();
    let n: u64 = (0..PARTITIONS)
        .map(|p| {
            let (lo, hi) = c
                .fetch_watermarks("bench_in", p, Duration::from_secs(10))
                .unwrap();
            (hi - lo) as u64
        })
        .sum();
    println!(
        "loaded {} messages of {avg:.0} bytes in {:.1}s; the broker holds {n} of them",
        env_or::<u64>("BENCH_MESSAGES", 1_000_000),
        t0.elapsed().as_secs_f64()
    );
    println!(
        "{:<26} {:>12} {:>18} {:>8} {:>8}",
        "scenario", "msgs/s", "msgs/cpu-second", "wall s", "cpu s"
    );
    for (name, extra) in [
        ("kafka_json_simple", ", 'batch.size' = '50000'"),
        (
            "kafka_json_transactional",
            ", 'batch.size' = '50000', 'use_transactions' = 'true'",
        ),
    ] {
        let mut best: Option<(f64, f64, u64)> = None;
        for r in 0..runs {
            let out = format!("{name}_{r}");
            create(&out);
            let sql = job(bs, "bench_in", &out, extra, true);
            let (c0, t0) = (cpu_seconds(), Instant::now());
            let rows = run_sql(&sql, dir, velo_engine::Shutdown::default());
            let wall = t0.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - c0;
            assert_eq!(rows, n, "{name} read every message");
            if best.is_none_or(|b| wall < b.0) {
                best = Some((wall, cpu, rows));
            }
        }
        let (wall, cpu, rows) = best.unwrap();
        println!(
            "{name:<26} {:>12.0} {:>18.0} {wall:>8.2} {cpu:>8.2}",
            rows as f64 / wall,
            rows as f64 / cpu.max(1e-9)
        );
    }
}

fn percentile(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p) as usize] as f64 / 1000.0
}

fn strategies(bs: &str, dir: &Path, create: &dyn Fn(&str)) {
    let rate = env_or::<u64>("BENCH_RATE", 20_000);
    let secs = env_or::<u64>("BENCH_SECONDS", 5);
    println!(
        "\nbatch strategies: {rate} msg/s for {secs}s, Kafka -> Kafka, latency = produce to visible at the sink's topic"
    );
    println!(
        "{:<16} {:>12} {:>10} {:>10}",
        "strategy", "msgs/s", "p50 ms", "p95 ms"
    );
    for (name, extra) in [
        (
            "fixed_size",
            ", 'batch.strategy' = 'fixed_size', 'batch.size' = '1000', 'batch.timeout' = '100ms'",
        ),
        (
            "adaptive_size",
            ", 'batch.strategy' = 'adaptive_size', 'batch.target_latency' = '50ms'",
        ),
        (
            "memory_based",
            ", 'batch.strategy' = 'memory_based', 'batch.memory_size' = '1MB', 'batch.timeout' = '100ms'",
        ),
        (
            "low_latency",
            ", 'batch.strategy' = 'low_latency', 'batch.low_latency_max_size' = '100', 'batch.low_latency_wait' = '5ms', 'batch.eager_processing' = 'true'",
        ),
    ] {
        let input = format!("lat_in_{name}");
        let output = format!("lat_out_{name}");
        create(&input);
        create(&output);
        let sql = job(bs, &input, &output, extra, false);
        let shutdown = velo_engine::Shutdown::default();
        let sd = shutdown.clone();
        let d = dir.to_path_buf();
        let engine = std::thread::spawn(move || run_sql(&sql, &d, sd));
        // the reader of the output
        let bs2 = bs.to_string();
        let out2 = output.clone();
        let total = rate * secs;
        let reader = std::thread::spawn(move || {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bs2)
                .set("group.id", format!("lat-{out2}"))
                .set("auto.offset.reset", "earliest")
                .set("fetch.wait.max.ms", "5")
                .create()
                .unwrap();
            c.subscribe(&[&out2]).unwrap();
            let mut lat = Vec::new();
            let until = Instant::now() + Duration::from_secs(secs + 60);
            let mut first: Option<Instant> = None;
            while (lat.len() as u64) < total * 3 / 4 && Instant::now() < until {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                    let v: serde_json::Value =
                        serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
                    let sent = v["sent_us"].as_u64().unwrap_or(0);
                    lat.push(now_us().saturating_sub(sent));
                    first.get_or_insert_with(Instant::now);
                }
            }
            (lat, first.map(|f| f.elapsed()).unwrap_or_default())
        });
        // give the job time to join its group, then produce at the rate
        std::thread::sleep(Duration::from_secs(3));
        let p = producer(bs);
        let start = Instant::now();
        for i in 0..total {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
            let v = payload(i, now_us());
            let rec: BaseRecord<'_, str, str> = BaseRecord::to(&input).payload(v.as_str());
            let _ = p.send(rec);
        }
        p.flush(Duration::from_secs(30)).unwrap();
        let (mut lat, span) = reader.join().unwrap();
        shutdown.trigger();
        let _ = engine.join();
        let got = lat.len() as f64;
        println!(
            "{name:<16} {:>12.0} {:>10.1} {:>10.1}",
            got / span.as_secs_f64().max(1e-9),
            percentile(&mut lat, 0.5),
            percentile(&mut lat, 0.95)
        );
    }
}

fn main() {
    if let Ok(f) = std::env::var("VELO_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(f))
            .with_writer(std::io::stderr)
            .init();
    }
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let dir = tempfile::tempdir().unwrap();
    let external = std::env::var("BENCH_BROKER").ok();
    let mock = match external {
        Some(_) => None,
        None => Some(rdkafka::mocking::MockCluster::new(1).unwrap()),
    };
    let bs = external
        .clone()
        .unwrap_or_else(|| mock.as_ref().unwrap().bootstrap_servers());
    let admin_bs = bs.clone();
    let create = |topic: &str| {
        if let Some(m) = &mock {
            // the mock cluster does not serve CreateTopics
            let _ = m.create_topic(topic, PARTITIONS, 1);
            return;
        }
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            ClientConfig::new()
                .set("bootstrap.servers", &admin_bs)
                .create()
                .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = rt.block_on(admin.create_topics(
            &[rdkafka::admin::NewTopic::new(
                topic,
                PARTITIONS,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &rdkafka::admin::AdminOptions::new(),
        ));
    };
    println!(
        "machine: {} cores; broker: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        if std::env::var("BENCH_BROKER").is_ok() {
            bs.clone()
        } else {
            format!("librdkafka mock cluster at {bs} (in this process)")
        }
    );
    if filter
        .as_ref()
        .is_none_or(|f| "throughput".contains(f.as_str()))
    {
        throughput(&bs, dir.path(), &create);
    }
    if filter
        .as_ref()
        .is_none_or(|f| "strategies".contains(f.as_str()))
    {
        strategies(&bs, dir.path(), &create);
    }
}
