//! The Kafka connector against real Kafka-protocol brokers started here:
//! tansu (a Kafka-API broker, installed by scripts/test.sh) for consuming,
//! producing, consumer groups, crashes and independent clients; librdkafka's
//! mock cluster for the transactional producer path (tansu has no
//! transactions). Every test starts its own broker on a free 127.0.0.1 port
//! and stops it when done.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::common::{free_port, published, velo, wait_for, wait_until};

/// A tansu broker on a free port, with its data in `dir`; killed on drop.
pub struct Tansu {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("VELO_TANSU") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let p = PathBuf::from(home).join(".cache/velostream/tansu-install/bin/tansu");
    assert!(
        p.exists(),
        "the tansu broker is not installed: run ./scripts/test.sh (it installs it) or set VELO_TANSU"
    );
    p
}

/// Whether process `pid` holds a socket listening on 127.0.0.1:`port`
/// (Linux: the listening inode in /proc/net/tcp among the process's fds).
fn listens(pid: u32, port: u16) -> bool {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let inodes: Vec<String> = tcp
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit_once(':')?.1;
            // state 0A: LISTEN
            (u16::from_str_radix(local_port, 16).ok()? == port && f.get(3)? == &"0A")
                .then(|| f.get(9).map(|s| format!("socket:[{s}]")))
                .flatten()
        })
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|t| inodes.iter().any(|i| t.to_string_lossy() == *i))
            })
        })
        .unwrap_or(false)
}

/// A temporary directory with a broker of its own in it, and its address.
/// (Bound in this order, the broker stops before its directory goes.)
pub(crate) fn with_broker() -> (tempfile::TempDir, Tansu, String) {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Tansu::start(tmp.path());
    let bs = broker.bootstrap();
    (tmp, broker, bs)
}

impl Tansu {
    pub fn start(dir: &Path) -> Self {
        let mut t = Self {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
        };
        t.launch();
        t
    }

    fn launch(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu_bin())
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "sqlite://tansu.db",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("tansu.log")).unwrap())
            .spawn()
            .expect("tansu starts");
        self.child = Some(child);
        // the port was free when picked; if another process took it since,
        // our broker exits and the port answers for someone else's: wait
        // until the listening socket is our broker's own
        let port = self.port;
        let child = self.child.as_mut().expect("just started");
        let pid = child.id();
        let mut exited = None;
        wait_for(Duration::from_secs(20), "tansu to listen", || {
            exited = child.try_wait().unwrap();
            exited.is_some() || listens(pid, port)
        });
        assert!(
            exited.is_none(),
            "tansu exited at start ({exited:?}); port {port} was taken: {}",
            std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default()
        );
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker (data kept).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let res = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("create topics");
    for r in res {
        r.expect("topic created");
    }
}

pub fn produce(bootstrap: &str, topic: &str, msgs: &[(Option<String>, Vec<u8>)]) {
    produce_records(
        bootstrap,
        topic,
        msgs.iter().map(|(k, v)| (None, k.as_deref(), v.as_slice())),
    );
}

/// Sends (partition, key, value) records and waits until all are delivered.
fn produce_records<'a>(
    bootstrap: &str,
    topic: &str,
    msgs: impl Iterator<Item = (Option<i32>, Option<&'a str>, &'a [u8])>,
) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for (partition, k, v) in msgs {
        let mut rec: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic).payload(v);
        if let Some(k) = k {
            rec = rec.key(k);
        }
        if let Some(part) = partition {
            rec = rec.partition(part);
        }
        let mut rec = rec;
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
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// Sends `ids` as `{"id": n}` to one partition of `topic`.
fn produce_ids_to(bootstrap: &str, topic: &str, partition: i32, ids: impl Iterator<Item = u64>) {
    let values: Vec<Vec<u8>> = ids
        .map(|i| format!(r#"{{"id":{i}}}"#).into_bytes())
        .collect();
    produce_records(
        bootstrap,
        topic,
        values.iter().map(|v| (Some(partition), None, v.as_slice())),
    );
}

/// Every message of `topic` (read from the start until `n` arrived or 20 s).
pub fn consume_all(bootstrap: &str, topic: &str, n: usize) -> Vec<(Option<String>, String)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("check-{}", free_port()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let until = Instant::now() + Duration::from_secs(20);
    while out.len() < n && Instant::now() < until {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push((
                m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            ));
        }
    }
    out
}

fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    committed_each(bootstrap, group, topic, partitions)
        .into_iter()
        .map(|o| o.max(0))
        .sum()
}

pub(crate) fn orders(range: std::ops::Range<u64>) -> Vec<(Option<String>, Vec<u8>)> {
    range
        .map(|i| {
            (
                Some(format!("k{}", i % 10)),
                format!(
                    r#"{{"id":{i},"customer":"c{}","amount":{}.5,"status":"{}"}}"#,
                    i % 97,
                    i % 100,
                    if i % 3 == 0 { "PAID" } else { "NEW" }
                )
                .into_bytes(),
            )
        })
        .collect()
}

fn lines_of(paths: &[PathBuf]) -> Vec<serde_json::Value> {
    paths
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn run(dir: &Path, app: &str, args: &[&str]) -> std::process::Output {
    std::fs::write(dir.join("app.sql"), app).unwrap();
    velo()
        .current_dir(dir)
        .arg("run")
        .arg("app.sql")
        .args(args)
        .output()
        .expect("velo runs")
}

const CRASH_ENV: &str = "VELO_CRASH_AFTER_CHECKPOINT";

/// Starts `velo run` (output to `log`, a file, so a chatty job never
/// blocks on a full pipe) and waits until its consumer has
/// partitions. tansu, the test broker, now and then never completes a
/// member's group join (no assignment for minutes, whatever the timeouts);
/// such a run is stopped and started again, at most four times.
fn spawn_assigned(dir: &Path, app: &str, args: &[&str], env: &[(&str, &str)], log: &Path) -> Child {
    for attempt in 1..=4 {
        std::fs::write(dir.join("app.sql"), app).unwrap();
        let mut child = velo()
            .current_dir(dir)
            .arg("run")
            .arg("app.sql")
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("velo starts");
        let t0 = std::time::Instant::now();
        let started = wait_until(Duration::from_secs(30), || {
            let said = std::fs::read_to_string(log).unwrap_or_default();
            let assigned = said.lines().any(|l| {
                // "assigned N partition(s)", not the note of a consumer
                // still waiting ("no partitions assigned after 5s")
                l.contains("assigned ")
                    && l.contains("partition(s)")
                    && !l.contains("assigned 0 partition")
            });
            assigned || child.try_wait().unwrap().is_some()
        });
        if started {
            // how long a (re)started job waits before it reads again
            eprintln!(
                "started to partitions assigned: {:.1} s",
                t0.elapsed().as_secs_f64()
            );
            return child;
        }
        eprintln!(
            "attempt {attempt}: no partitions after 30 s (broker group join stalled); restarting the job"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("the job never got partitions from the broker in four attempts")
}

/// A run stopped by the crash point right after its `at`-th checkpoint with
/// records: the checkpoint is durable, nothing of that epoch is published or
/// committed (the one window a random kill almost never hits).
fn crash_round(dir: &Path, app: &str, log: &Path, at: u32) {
    let at = at.to_string();
    let mut child = spawn_assigned(dir, app, &[], &[(CRASH_ENV, at.as_str())], log);
    let status = wait_timeout(&mut child, Duration::from_secs(120), log);
    let said = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        !status.success() && said.contains("aborting after the checkpoint"),
        "expected the crash point to fire ({status}): {said}"
    );
}

/// A run SIGKILLed at a random moment once it has published a new file.
fn kill_round(dir: &Path, app: &str, log: &Path, out_dir: &Path, rng: &mut impl rand::Rng) {
    let before = published(out_dir, "part").len();
    let t0 = std::time::Instant::now();
    let mut child = spawn_assigned(dir, app, &[], &[], log);
    wait_until(Duration::from_secs(60), || {
        published(out_dir, "part").len() > before || child.try_wait().unwrap().is_some()
    });
    eprintln!(
        "restart to first published epoch: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // the random kill point itself, not a wait for something
    std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
    if child.try_wait().unwrap().is_some() {
        let said = std::fs::read_to_string(log).unwrap_or_default();
        panic!("the job stopped by itself: {said}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The last run: reads to the end offsets (`stop.at.end`) and succeeds;
/// returns what it logged.
fn final_round(dir: &Path, app: &str, log: &Path) -> String {
    let mut child = spawn_assigned(dir, app, &["--set", "orders.stop.at.end=true"], &[], log);
    let status = wait_timeout(&mut child, Duration::from_secs(180), log);
    let said = std::fs::read_to_string(log).unwrap_or_default();
    assert!(status.success(), "{said}");
    said
}

/// Produces `first` orders, then runs `app` four times, alternating a crash
/// at a checkpoint with a SIGKILL, 3,000 more orders before each run after
/// the first, and a last run to the end; returns the orders produced.
fn crash_kill_and_finish(dir: &Path, bs: &str, app: &str, first: u64) -> u64 {
    use rand::Rng;
    let mut rng = rand::rng();
    let out_dir = dir.join("out");
    let log = dir.join("velo.log");
    let mut produced = first;
    produce(bs, "orders", &orders(0..produced));
    for round in 0..4 {
        if round > 0 {
            produce(bs, "orders", &orders(produced..produced + 3_000));
            produced += 3_000;
        }
        if round % 2 == 0 {
            // crash with state open: it is only in the checkpoint
            crash_round(dir, app, &log, rng.random_range(2..=5));
        } else {
            kill_round(dir, app, &log, &out_dir, &mut rng);
        }
    }
    final_round(dir, app, &log);
    produced
}

/// Waits for `child` to exit; kills it and fails (with its `log`) after `limit`.
fn wait_timeout(child: &mut Child, limit: Duration, log: &Path) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > limit {
            // where it hangs, if gdb is there to tell
            let stacks = Command::new("gdb")
                .args([
                    "-p",
                    &child.id().to_string(),
                    "-batch",
                    "-ex",
                    "thread apply all bt 12",
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let _ = child.kill();
            let _ = child.wait();
            let said = std::fs::read_to_string(log).unwrap_or_default();
            let broker = log
                .parent()
                .and_then(|d| std::fs::read_to_string(d.join("tansu.log")).ok())
                .unwrap_or_default();
            let tail: String = broker.lines().rev().take(30).collect::<Vec<_>>().join("\n");
            panic!(
                "the job did not exit within {limit:?}: {said}\n--- broker log (last lines, newest first) ---\n{tail}\n--- stacks ---\n{stacks}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn kafka_to_kafka_and_file_with_keys_metadata_and_dead_letters() {
    let (tmp, _broker, bs) = with_broker();
    create_topic(&bs, "orders", 3);
    create_topic(&bs, "big", 1);
    let mut msgs = orders(0..600);
    msgs.insert(100, (None, b"{\"id\": 1000, broken".to_vec()));
    msgs.insert(300, (None, b"not json at all".to_vec()));
    produce(&bs, "orders", &msgs);
    let app = format!(
        r#"CREATE STREAM big AS
SELECT id, customer, amount, _key, _partition, _offset FROM orders WHERE amount >= 50
INTO big_topic, audit
WITH (
  'orders.type' = 'kafka_source', 'orders.bootstrap.servers' = '{bs}', 'orders.topic' = 'orders',
  'orders.metadata_columns' = 'true', 'orders.stop.at.end' = 'true',
  'orders.session.timeout.ms' = '10000', 'orders.fetch.max.wait.ms' = '100',
  'orders.no.such.setting' = '1',
  'big_topic.type' = 'kafka_sink', 'big_topic.bootstrap.servers' = '{bs}', 'big_topic.topic' = 'big',
  'big_topic.key.field' = 'customer, id', 'big_topic.linger.ms' = '5', 'big_topic.acks' = 'all',
  'audit.type' = 'file_sink', 'audit.path' = 'audit.jsonl',
  'dlq.path' = 'dead.jsonl', 'batch.size' = '100'
);"#
    );
    let out = run(tmp.path(), &app, &[]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("unknown key 'orders.no.such.setting'"),
        "a key neither Velostream's nor librdkafka's is warned about: {log}"
    );
    let expected: Vec<u64> = (0..600).filter(|i| i % 100 >= 50).collect();
    let audit = lines_of(&[tmp.path().join("audit.jsonl")]);
    let mut ids: Vec<u64> = audit.iter().map(|v| v["id"].as_u64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, expected, "every matching order exactly once");
    for v in &audit {
        let id = v["id"].as_u64().unwrap();
        assert_eq!(v["_key"], format!("k{}", id % 10));
        assert!(v["_partition"].as_i64().unwrap() < 3);
        assert!(v["_offset"].as_i64().unwrap() >= 0);
    }
    let topic = consume_all(&bs, "big", expected.len());
    assert_eq!(topic.len(), expected.len());
    for (k, v) in &topic {
        let v: serde_json::Value = serde_json::from_str(v).unwrap();
        let id = v["id"].as_u64().unwrap();
        assert_eq!(
            k.as_deref(),
            Some(format!("c{}|{id}", id % 97).as_str()),
            "compound key"
        );
    }
    let dead = lines_of(&[tmp.path().join("dead.jsonl")]);
    assert_eq!(dead.len(), 2, "both bad messages dead-lettered: {dead:?}");
    for d in &dead {
        assert!(
            d["location"].as_str().unwrap().starts_with("orders/"),
            "{d}"
        );
        assert!(
            d["record"].as_str().unwrap().contains("broken") || d["record"] == "not json at all"
        );
    }
    assert!(
        log.contains("orders/"),
        "bad messages logged with topic/partition: {log}"
    );
    // offsets committed to the group once the sinks acknowledged
    assert_eq!(committed(&bs, "velo-big", "orders", 3), 602);
}

/// A job killed mid-run and started again reads on from the group's
/// committed offsets at once: the source assigns its partitions itself, so
/// the restart waits for no group rebalance. The job sets a 300 s session
/// timeout: a restart that joined the group would wait that long for the
/// broker to drop the killed member, far past this test's minute.
#[test]
fn at_least_once_across_a_kill_resumes_from_committed_offsets() {
    let _machine = crate::common::exclusive();
    let (tmp, _broker, bs) = with_broker();
    create_topic(&bs, "orders", 2);
    let n = 20_000u64;
    produce(&bs, "orders", &orders(0..n));
    let group = format!("g-{bs}");
    let app = format!(
        r#"CREATE STREAM copy AS SELECT id FROM orders INTO out
WITH ('orders.type' = 'kafka_source', 'orders.bootstrap.servers' = '{bs}', 'orders.topic' = 'orders', 'orders.group.id' = '{group}',
      'orders.session.timeout.ms' = '300000',
      'out.type' = 'file_sink', 'out.path' = 'out.jsonl', 'out.append' = 'true', 'batch.size' = '500');"#
    );
    let log = tmp.path().join("velo.log");
    let mut child = spawn_assigned(tmp.path(), &app, &[], &[], &log);
    let out = tmp.path().join("out.jsonl");
    // killed once it has written output and the group holds committed
    // offsets (commits are asynchronous: a kill before the first one lands
    // rightly reads everything again, which this test is not about)
    let ready = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.lines().count() > 3000)
            && committed(&bs, &group, "orders", 2) > 0
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        ready,
        "no output or no committed offsets within 60 s: {said}"
    );
    let before = std::fs::read_to_string(&out).unwrap().lines().count();
    let at_kill = committed(&bs, &group, "orders", 2);
    // the restart: its first record and the end of the topic, timed
    let t0 = std::time::Instant::now();
    let mut child = spawn_assigned(
        tmp.path(),
        &app,
        &["--set", "orders.stop.at.end=true"],
        &[],
        &log,
    );
    let resumed = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.lines().count() > before)
            || child.try_wait().unwrap().is_some()
    });
    eprintln!(
        "restart after a kill to the first record: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let status = wait_timeout(&mut child, Duration::from_secs(120), &log);
    eprintln!(
        "restart after a kill to the end of the topic: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        resumed,
        "the restarted job wrote nothing within 60 s: {said}"
    );
    assert!(status.success(), "{said}");
    let all = lines_of(&[out]);
    let ids: std::collections::BTreeSet<u64> =
        all.iter().map(|v| v["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len() as u64, n, "nothing lost");
    // resumed from the group's committed offsets, not from the start
    assert!(
        (all.len() as u64) <= n + before as u64 - at_kill as u64,
        "restart re-read only what was not committed ({} lines, {before} before the kill, {at_kill} committed): {said}",
        all.len()
    );
    assert_eq!(
        committed(&bs, &group, "orders", 2),
        n as i64,
        "the restart committed the end of the topic to the group"
    );
}

#[test]
fn exactly_once_into_files_across_kills_and_crash_points() {
    let _machine = crate::common::exclusive();
    use rand::Rng;
    let (tmp, _broker, bs) = with_broker();
    // one partition: with three, tansu (the test broker) now and then never
    // completed the group join of the first run (no assignment for minutes)
    create_topic(&bs, "orders", 1);
    let n = 10_000u64;
    produce(&bs, "orders", &orders(0..n));
    let app = format!(
        r#"CREATE STREAM copy AS SELECT id, amount FROM orders INTO out
WITH ('orders.type' = 'kafka_source', 'orders.bootstrap.servers' = '{bs}', 'orders.topic' = 'orders', 'orders.group.id' = 'g-{bs}',
      'out.type' = 'file_sink', 'out.path' = 'out/part.jsonl',
      'orders.session.timeout.ms' = '6000', 'orders.heartbeat.interval.ms' = '500',
      'use_transactions' = 'true', 'batch.size' = '300');"#
    );
    let mut rng = rand::rng();
    let (mut kills, mut crashes) = (0, 0);
    let mut produced = n;
    let out_dir = tmp.path().join("out");
    let log = tmp.path().join("velo.log");
    for round in 0..10 {
        if round > 0 {
            // more input arrives while the job is down, so every run has work
            produce(&bs, "orders", &orders(produced..produced + 3_000));
            produced += 3_000;
        }
        if round % 2 == 1 {
            crash_round(tmp.path(), &app, &log, rng.random_range(1..=4));
            crashes += 1;
        } else {
            kill_round(tmp.path(), &app, &log, &out_dir, &mut rng);
            kills += 1;
        }
    }
    assert!(kills >= 4, "the job was killed mid-run ({kills} times)");
    assert_eq!(crashes, 5);
    let said = final_round(tmp.path(), &app, &log);
    assert!(said.contains("resuming after checkpoint epoch"), "{said}");
    let files = published(&tmp.path().join("out"), "part");
    assert!(files.len() > 5, "one file per committed epoch: {files:?}");
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for v in lines_of(&files) {
        *counts.entry(v["id"].as_u64().unwrap()).or_default() += 1;
    }
    let dup: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).take(5).collect();
    assert!(dup.is_empty(), "duplicates: {dup:?}");
    assert_eq!(counts.len() as u64, produced, "every input exactly once");
}

#[test]
fn windows_survive_kills_and_crashes_exactly_once() {
    let _machine = crate::common::exclusive();
    let (tmp, _broker, bs) = with_broker();
    // one partition: event time (the id, as milliseconds) arrives in order
    create_topic(&bs, "orders", 1);
    let app = format!(
        r#"CREATE STREAM per_second AS
SELECT CAST(window_start AS BIGINT) AS ws, COUNT(*) AS n, SUM(id) AS ids FROM orders
GROUP BY TUMBLE(id, INTERVAL '1' SECOND) INTO out
WITH ('orders.type' = 'kafka_source', 'orders.bootstrap.servers' = '{bs}', 'orders.topic' = 'orders', 'orders.group.id' = 'g-{bs}',
      'orders.event.time.field' = 'id', 'orders.watermark.max_out_of_orderness' = '0ms',
      'orders.session.timeout.ms' = '6000', 'orders.heartbeat.interval.ms' = '500',
      'out.type' = 'file_sink', 'out.path' = 'out/part.jsonl',
      'use_transactions' = 'true', 'batch.size' = '300');"#
    );
    let out_dir = tmp.path().join("out");
    let produced = crash_kill_and_finish(tmp.path(), &bs, &app, 6_000);
    let mut windows: BTreeMap<u64, (u64, u64, u32)> = BTreeMap::new();
    for v in lines_of(&published(&out_dir, "part")) {
        let e = windows.entry(v["ws"].as_u64().unwrap()).or_default();
        e.0 += v["n"].as_u64().unwrap();
        e.1 += v["ids"].as_u64().unwrap();
        e.2 += 1;
    }
    assert_eq!(windows.len() as u64, produced / 1_000, "{windows:?}");
    for (ws, (n, ids, times)) in &windows {
        let want: u64 = (*ws..ws + 1_000).sum();
        assert_eq!(
            (*n, *ids, *times),
            (1_000, want, 1),
            "window {ws}: every record of it counted, the window emitted once: {windows:?}"
        );
    }
}

/// An updating GROUP BY (no window) on Kafka: its groups and the keys it
/// has written are in the checkpoint, so across crashes and kills every
/// record is counted once and every key inserted once.
#[test]
fn updating_group_by_survives_kills_and_crashes_exactly_once() {
    let _machine = crate::common::exclusive();
    let (tmp, _broker, bs) = with_broker();
    create_topic(&bs, "orders", 1);
    let app = format!(
        r#"CREATE TABLE per_customer AS
SELECT customer, COUNT(*) AS n, SUM(id) AS ids FROM orders GROUP BY customer INTO out
WITH ('orders.type' = 'kafka_source', 'orders.bootstrap.servers' = '{bs}', 'orders.topic' = 'orders', 'orders.group.id' = 'u-{bs}',
      'orders.session.timeout.ms' = '6000', 'orders.heartbeat.interval.ms' = '500',
      'out.type' = 'file_sink', 'out.path' = 'out/part.jsonl',
      'use_transactions' = 'true', 'batch.size' = '300');"#
    );
    let out_dir = tmp.path().join("out");
    let produced = crash_kill_and_finish(tmp.path(), &bs, &app, 6_000);
    // the published files in epoch order are the changelog
    let text: String = published(&out_dir, "part")
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let (table, ops) =
        crate::updating::apply_changelog_text(&text, &["customer"], &["customer", "n", "ids"]);
    let mut want = BTreeMap::new();
    for i in 0..produced {
        let e: &mut (u64, u64) = want.entry(format!("\"c{}\"", i % 97)).or_default();
        e.0 += 1;
        e.1 += i;
    }
    assert_eq!(table.len(), 97, "{table:?}");
    for (c, (n, ids)) in &want {
        assert_eq!(
            table.get(c),
            Some(&format!("{c}|{n}|{ids}")),
            "customer {c}: every record counted once"
        );
    }
    assert_eq!(
        ops.get("insert"),
        Some(&97),
        "each key inserted once: {ops:?}"
    );
}

/// The watermark of a Kafka source is the minimum over its partitions: a
/// partition that lags far behind another does not see its records
/// dropped as late.
#[test]
/// (A consumer-group member: `partition.assignment = 'group'`.)
fn watermark_follows_the_slowest_partition() {
    let _machine = crate::common::exclusive();
    let (tmp, _broker, bs) = with_broker();
    create_topic(&bs, "orders", 2);
    // partition 0 is 20 s of event time ahead; partition 1 has 1 s of it
    produce_ids_to(&bs, "orders", 0, (0..20_000).step_by(10));
    produce_ids_to(&bs, "orders", 1, (0..1_000).step_by(10));
    let group = format!("wm-{bs}");
    let app = format!(
        r#"CREATE STREAM per_second AS
SELECT CAST(window_start AS BIGINT) AS ws, COUNT(*) AS n FROM orders
GROUP BY TUMBLE(id, INTERVAL '1' SECOND) INTO out
WITH ('orders.type' = 'kafka_source', 'orders.bootstrap.servers' = '{bs}', 'orders.topic' = 'orders', 'orders.group.id' = '{group}',
      'orders.event.time.field' = 'id', 'orders.watermark.max_out_of_orderness' = '0ms',
      'orders.partition.assignment' = 'group',
      'orders.session.timeout.ms' = '6000', 'orders.heartbeat.interval.ms' = '500',
      'out.type' = 'file_sink', 'out.path' = 'out/w.jsonl', 'batch.size' = '500',
      'use_transactions' = 'true');"#
    );
    let log = tmp.path().join("velo.log");
    let mut child = spawn_assigned(tmp.path(), &app, &[], &[], &log);
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for(
        Duration::from_secs(60),
        "the first 2,100 records read",
        || committed(&bs, &group, "orders", 2) >= 2_100,
    );
    // partition 1 catches up: 19 s behind partition 0, behind the highest
    // event time seen, but not behind the watermark of the slowest partition
    produce_ids_to(&bs, "orders", 1, (1_000..20_000).step_by(10));
    wait_for(Duration::from_secs(60), "all 4,000 records read", || {
        committed(&bs, &group, "orders", 2) >= 4_000
    });
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = wait_timeout(&mut child, Duration::from_secs(60), &log);
    assert!(status.success(), "{}", said());
    assert!(!said().contains("late:"), "nothing is late: {}", said());
    // the last run reads to the end and flushes the open windows
    final_round(tmp.path(), &app, &log);
    let mut windows: BTreeMap<u64, u64> = BTreeMap::new();
    for v in lines_of(&published(&tmp.path().join("out"), "w")) {
        *windows.entry(v["ws"].as_u64().unwrap()).or_default() += v["n"].as_u64().unwrap();
    }
    assert_eq!(windows.len(), 20, "{windows:?}");
    for (ws, n) in &windows {
        assert_eq!(
            *n, 200,
            "window {ws}: 100 records from each partition: {windows:?}"
        );
    }
}

#[test]
fn broker_unreachable_at_start_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let app = format!(
        r#"CREATE STREAM s AS SELECT * FROM orders INTO out
WITH ('orders.type' = 'kafka_source', 'orders.bootstrap.servers' = '127.0.0.1:{port}', 'orders.topic' = 'orders',
      'orders.connect.timeout' = '3s', 'orders.sasl.password' = 'hunter2',
      'out.type' = 'file_sink', 'out.path' = 'out.jsonl');"#
    );
    let o = run(tmp.path(), &app, &[]);
    let log = text(&o);
    assert!(!o.status.success(), "{log}");
    let err = log
        .lines()
        .find(|l| l.starts_with("Error:"))
        .unwrap_or_else(|| panic!("no error line: {log}"));
    assert!(err.contains("Failed to create source 'orders'"), "{err}");
    assert!(err.contains("Connection refused"), "{err}");
    assert!(
        !log.contains("hunter2"),
        "secrets stay out of the output: {log}"
    );
}

#[test]
fn retry_with_backoff_survives_the_broker_going_away() {
    let _machine = crate::common::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let mut broker = Tansu::start(tmp.path());
    let bs = broker.bootstrap();
    create_topic(&bs, "orders", 2);
    produce(&bs, "orders", &orders(0..5_000));
    let app = format!(
        r#"CREATE STREAM copy AS SELECT id FROM orders INTO out
WITH ('orders.type' = 'kafka_source', 'orders.bootstrap.servers' = '{bs}', 'orders.topic' = 'orders',
      'out.type' = 'file_sink', 'out.path' = 'out.jsonl', 'out.append' = 'true',
      'failure_strategy' = 'RetryWithBackoff', 'max_retries' = '20', 'retry_backoff' = '200ms',
      'batch.size' = '1000');"#
    );
    std::fs::write(tmp.path().join("app.sql"), &app).unwrap();
    let mut child = crate::common::spawn(tmp.path(), &["run", "app.sql"]);
    let out = tmp.path().join("out.jsonl");
    let count = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    wait_for(Duration::from_secs(60), "the first records", || {
        count(&out) >= 5_000
    });
    broker.stop();
    // the outage itself (not a wait for something): 3 s without a broker
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();
    produce(&bs, "orders", &orders(5_000..8_000));
    wait_for(
        Duration::from_secs(120),
        "records produced after the outage",
        || count(&out) >= 8_000,
    );
    crate::common::signal(&child, "-INT");
    let status = child.wait().unwrap();
    let mut err = String::new();
    if let Some(e) = child.stderr.take() {
        for l in BufReader::new(e).lines().map_while(Result::ok) {
            err.push_str(&l);
            err.push('\n');
        }
    }
    assert!(status.success(), "{err}");
    let ids: std::collections::BTreeSet<u64> = lines_of(&[out])
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 8_000, "nothing lost across the outage");
}

fn python() -> String {
    std::env::var("VELO_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn independent_python_client_produces_and_consumes() {
    let (tmp, _broker, bs) = with_broker();
    create_topic(&bs, "readings", 2);
    create_topic(&bs, "alerts", 1);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/client.py");
    let o = Command::new(python())
        .args([script.to_str().unwrap(), "produce", &bs, "readings", "1000"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let app = format!(
        r#"CREATE STREAM alerts AS
SELECT device, temperature, temperature * 1.8 + 32 AS fahrenheit FROM readings WHERE temperature > 30
INTO alerts_topic
WITH ('readings.type' = 'kafka_source', 'readings.bootstrap.servers' = '{bs}', 'readings.topic' = 'readings',
      'readings.stop.at.end' = 'true',
      'alerts_topic.type' = 'kafka_sink', 'alerts_topic.bootstrap.servers' = '{bs}',
      'alerts_topic.topic' = 'alerts', 'alerts_topic.key.field' = 'device');"#
    );
    let out = run(tmp.path(), &app, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let o = Command::new(python())
        .args([script.to_str().unwrap(), "check", &bs, "alerts", "1000"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the Python consumer's check failed: {}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("ok"),
        "{}",
        text(&o)
    );
}

#[test]
fn avro_with_a_schema_registry_and_an_independent_avro_client() {
    let (tmp, _broker, bs) = with_broker();
    create_topic(&bs, "payments", 1);
    create_topic(&bs, "payments_out", 1);
    let reg_port = free_port();
    let support = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka");
    let mut registry = Command::new(python())
        .args([
            support.join("schema_registry.py").to_str().unwrap(),
            &reg_port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reg = format!("http://127.0.0.1:{reg_port}");
    wait_for(Duration::from_secs(20), "the schema registry", || {
        std::net::TcpStream::connect(("127.0.0.1", reg_port)).is_ok()
    });
    // v1 messages, then v2 (a new field with a default), a truncated one and an unknown id
    let o = Command::new(python())
        .args([
            support.join("client.py").to_str().unwrap(),
            "produce-avro",
            &bs,
            "payments",
            &reg,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let app = format!(
        r#"CREATE STREAM paid AS SELECT id, amount, currency FROM payments
INTO out, out_topic
WITH ('payments.type' = 'kafka_source', 'payments.bootstrap.servers' = '{bs}',
      'payments.topic' = 'payments', 'payments.value.format' = 'avro',
      'payments.schema.registry.url' = '{reg}', 'payments.stop.at.end' = 'true',
      'out.type' = 'file_sink', 'out.path' = 'out.jsonl',
      'out_topic.type' = 'kafka_sink', 'out_topic.bootstrap.servers' = '{bs}',
      'out_topic.topic' = 'payments_out', 'out_topic.value.format' = 'avro',
      'out_topic.schema.registry.url' = '{reg}', 'out_topic.key.field' = 'id',
      'dlq.path' = 'dead.jsonl');"#
    );
    let out = run(tmp.path(), &app, &[]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    let rows = lines_of(&[tmp.path().join("out.jsonl")]);
    assert_eq!(rows.len(), 200, "100 v1 + 100 v2 records: {log}");
    // the reader schema is the subject's latest (v2): v1 records get its default
    assert!(rows.iter().filter(|r| r["currency"] == "EUR").count() == 100);
    assert!(rows.iter().filter(|r| r["currency"] == "USD").count() == 100);
    let dead = lines_of(&[tmp.path().join("dead.jsonl")]);
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(
        dead.iter()
            .any(|d| d["error"].as_str().unwrap().contains("unknown schema id"))
    );
    assert!(
        dead.iter()
            .any(|d| d["error"].as_str().unwrap().contains("truncated")
                || d["error"].as_str().unwrap().to_lowercase().contains("eof")
                || d["error"]
                    .as_str()
                    .unwrap()
                    .to_lowercase()
                    .contains("bytes")),
        "{dead:?}"
    );
    // an independent Avro consumer (confluent-kafka + the registry) reads our output
    let o = Command::new(python())
        .args([
            support.join("client.py").to_str().unwrap(),
            "check-avro",
            &bs,
            "payments_out",
            &reg,
        ])
        .output()
        .unwrap();
    let _ = registry.kill();
    let _ = registry.wait();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("ok 200"),
        "{}",
        text(&o)
    );
}

#[test]
fn transactional_kafka_sink_on_the_mock_cluster() {
    use rdkafka::mocking::MockCluster;
    let cluster = MockCluster::new(1).unwrap();
    let bs = cluster.bootstrap_servers();
    cluster.create_topic("in", 2, 1).unwrap();
    cluster.create_topic("out", 1, 1).unwrap();
    produce(&bs, "in", &orders(0..2_000));
    let tmp = tempfile::tempdir().unwrap();
    let app = format!(
        r#"CREATE STREAM copy AS SELECT id, amount FROM src INTO dst
WITH ('src.type' = 'kafka_source', 'src.bootstrap.servers' = '{bs}', 'src.topic' = 'in',
      'src.stop.at.end' = 'true',
      'dst.type' = 'kafka_sink', 'dst.bootstrap.servers' = '{bs}', 'dst.topic' = 'out',
      'use_transactions' = 'true', 'batch.size' = '500', 'state.dir' = 'state');"#
    );
    let out = run(
        tmp.path(),
        &app,
        &["--set", "dst.transaction.timeout.ms=60000"],
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("running in Simple mode"), "{log}");
    let got = consume_all(&bs, "out", 2_000);
    let ids: std::collections::BTreeSet<u64> = got
        .iter()
        .map(|(_, v)| {
            serde_json::from_str::<serde_json::Value>(v).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 2_000, "every epoch's transaction committed");
    // the checkpoint holds the positions of the last epoch
    let cp: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("state/copy/checkpoint.json")).unwrap(),
    )
    .unwrap();
    let total: i64 = cp["position"]["parts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(total, 2_000, "{cp}");
}

/// Message sets decoded on four threads reach the engine in poll order:
/// each partition's offsets in order, none twice or missing, and the
/// checkpoint's position covers exactly what was delivered.
#[test]
fn decoding_threads_keep_each_partitions_order() {
    use rdkafka::mocking::MockCluster;
    let cluster = MockCluster::new(1).unwrap();
    let bs = cluster.bootstrap_servers();
    cluster.create_topic("in", 4, 1).unwrap();
    produce(&bs, "in", &orders(0..20_000));
    let tmp = tempfile::tempdir().unwrap();
    let app = format!(
        r#"CREATE STREAM copy AS SELECT id, _partition AS p, _offset AS o FROM src INTO dst
WITH ('src.type' = 'kafka_source', 'src.bootstrap.servers' = '{bs}', 'src.topic' = 'in',
      'src.stop.at.end' = 'true', 'src.metadata_columns' = 'true',
      'src.max.poll.records' = '37', 'src.decode_threads' = '4',
      'dst.type' = 'file_sink', 'dst.path' = 'out/copy.jsonl',
      'batch.size' = '1000', 'use_transactions' = 'true', 'state.dir' = 'state');"#
    );
    let out = run(tmp.path(), &app, &[]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    // one file per epoch, named in epoch order
    let mut files = crate::common::files_below(&tmp.path().join("out"));
    files.sort();
    let body: String = files
        .iter()
        .map(|f| std::fs::read_to_string(tmp.path().join("out").join(f)).unwrap())
        .collect();
    let mut next: std::collections::BTreeMap<i64, i64> = Default::default();
    let mut ids = std::collections::BTreeSet::new();
    for line in body.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let (p, o) = (v["p"].as_i64().unwrap(), v["o"].as_i64().unwrap());
        let want = next.entry(p).or_insert(0);
        assert_eq!(o, *want, "partition {p}: offset {o} after {}", *want - 1);
        *want += 1;
        assert!(ids.insert(v["id"].as_u64().unwrap()), "{line} twice");
    }
    assert_eq!(ids.len(), 20_000, "every message once");
    assert_eq!(next.len(), 4, "all four partitions read: {next:?}");
    let cp: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("state/copy/checkpoint.json")).unwrap(),
    )
    .unwrap();
    for (part, off) in cp["position"]["parts"].as_object().unwrap() {
        let p: i64 = part.rsplit('/').next().unwrap().parse().unwrap();
        assert_eq!(off.as_i64(), next.get(&p).copied(), "{cp}");
    }
}

#[test]
fn several_topics_headers_byte_keys_and_an_inline_avro_schema() {
    use rdkafka::message::{Header, Headers, OwnedHeaders};
    let (tmp, _broker, bs) = with_broker();
    for t in ["a", "b", "out", "raw"] {
        create_topic(&bs, t, 1);
    }
    // JSON on two topics, with headers
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .create()
        .unwrap();
    for i in 0..100u64 {
        let topic = if i % 2 == 0 { "a" } else { "b" };
        let v = format!(r#"{{"id":{i}}}"#);
        let h = OwnedHeaders::new().insert(Header {
            key: "trace",
            value: Some(&format!("t{i}")),
        });
        p.send(
            BaseRecord::<'_, [u8], str>::to(topic)
                .payload(v.as_str())
                .key(&[0xff, i as u8][..])
                .headers(h),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
    let app = format!(
        r#"CREATE STREAM tagged AS
SELECT id, _headers['trace'] AS trace, _key, '{{"origin":"velo"}}' AS h FROM src
INTO out_topic, audit
WITH ('src.type' = 'kafka_source', 'src.bootstrap.servers' = '{bs}', 'src.topics' = 'a, b',
      'src.metadata_columns' = 'true', 'src.key.format' = 'bytes', 'src.stop.at.end' = 'true',
      'out_topic.type' = 'kafka_sink', 'out_topic.bootstrap.servers' = '{bs}', 'out_topic.topic' = 'out',
      'out_topic.headers.field' = 'h', 'out_topic.key.field' = 'trace',
      'audit.type' = 'file_sink', 'audit.path' = 'audit.jsonl');"#
    );
    let o = run(tmp.path(), &app, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let rows = lines_of(&[tmp.path().join("audit.jsonl")]);
    assert_eq!(rows.len(), 100, "both topics read");
    for r in &rows {
        let id = r["id"].as_u64().unwrap();
        assert_eq!(r["trace"], format!("t{id}"), "header value: {r}");
        assert_eq!(r["_key"], format!("ff{:02x}", id as u8), "binary key: {r}");
    }
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .set("group.id", "hdr-check")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&["out"]).unwrap();
    let mut seen = 0;
    let until = Instant::now() + Duration::from_secs(20);
    while seen < 100 && Instant::now() < until {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let h = m.headers().expect("headers written");
            let origin = h.iter().find(|h| h.key == "origin").expect("origin header");
            assert_eq!(origin.value, Some(&b"velo"[..]));
            assert!(m.key().unwrap().starts_with(b"t"));
            seen += 1;
        }
    }
    assert_eq!(seen, 100);

    // plain Avro binary, decoded with an inline schema file
    let schema = r#"{"type":"record","name":"Reading","fields":[{"name":"id","type":"long"},{"name":"sensor","type":"string"},{"name":"value","type":"double"}]}"#;
    std::fs::write(tmp.path().join("reading.avsc"), schema).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/client.py");
    let o = Command::new(python())
        .args([
            script.to_str().unwrap(),
            "produce-avro-plain",
            &bs,
            "raw",
            tmp.path().join("reading.avsc").to_str().unwrap(),
            "50",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let app = format!(
        r#"CREATE STREAM readings AS SELECT sensor, SUM(value) AS total, COUNT(*) AS n FROM raw GROUP BY sensor ORDER BY sensor
INTO res WITH ('raw.type' = 'kafka_source', 'raw.bootstrap.servers' = '{bs}', 'raw.topic' = 'raw',
      'raw.value.format' = 'avro', 'raw.avro.schema.file' = 'reading.avsc', 'raw.stop.at.end' = 'true',
      'res.type' = 'file_sink', 'res.path' = 'res.jsonl');"#
    );
    let o = run(tmp.path(), &app.replace("INTO res", "INTO res, res_topic").replace(
        "'res.type'",
        &format!("'res_topic.type' = 'kafka_sink', 'res_topic.bootstrap.servers' = '{bs}', 'res_topic.topic' = 'out', 'res.type'"),
    ), &[]);
    assert!(o.status.success(), "{}", text(&o));
    // with no key.field, an aggregate's results are keyed by its group key
    let keyed: Vec<_> = consume_all(&bs, "out", 104).into_iter().skip(100).collect();
    let mut keys: Vec<String> = keyed
        .iter()
        .map(|(k, _)| k.clone().unwrap_or_default())
        .collect();
    keys.sort();
    assert_eq!(keys, ["s0", "s1", "s2", "s3"], "{keyed:?}");
    let res = lines_of(&[tmp.path().join("res.jsonl")]);
    assert_eq!(res.len(), 4);
    let total: f64 = res.iter().map(|r| r["total"].as_f64().unwrap()).sum();
    assert!((total - (0..50).map(|i| i as f64 / 4.0).sum::<f64>()).abs() < 1e-9);
    assert_eq!(res[0]["n"], 13);
}

/// `n` shop.Order messages (and a truncated one) produced by Python's
/// protobuf, with their descriptor set written to `desc`.
fn produce_proto(bs: &str, topic: &str, desc: &Path, n: usize, nested: bool) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/client.py");
    let n = n.to_string();
    let mut args = vec![
        script.to_str().unwrap(),
        "produce-proto",
        bs,
        topic,
        desc.to_str().unwrap(),
        &n,
    ];
    if nested {
        args.push("nested");
    }
    let o = Command::new(python()).args(&args).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn protobuf_values_with_a_descriptor_set() {
    let (tmp, _broker, bs) = with_broker();
    create_topic(&bs, "orders_pb", 2);
    produce_proto(&bs, "orders_pb", &tmp.path().join("shop.desc"), 300, false);
    let app = format!(
        r#"CREATE STREAM paid AS SELECT id, customer, amount, status, delta FROM orders_pb WHERE status = 'PAID'
INTO out WITH ('orders_pb.type' = 'kafka_source', 'orders_pb.bootstrap.servers' = '{bs}',
      'orders_pb.topic' = 'orders_pb', 'orders_pb.value.format' = 'protobuf',
      'orders_pb.protobuf.descriptor.file' = 'shop.desc', 'orders_pb.protobuf.message' = 'shop.Order',
      'orders_pb.stop.at.end' = 'true',
      'out.type' = 'file_sink', 'out.path' = 'out.jsonl', 'dlq.path' = 'dead.jsonl');"#
    );
    let o = run(tmp.path(), &app, &[]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    let mut rows = lines_of(&[tmp.path().join("out.jsonl")]);
    rows.sort_by_key(|r| r["id"].as_u64());
    assert_eq!(rows.len(), 150);
    for r in &rows {
        let id = r["id"].as_i64().unwrap();
        assert_eq!(id % 2, 1);
        assert_eq!(r["customer"], format!("c{}", id % 5));
        assert_eq!(r["amount"].as_f64().unwrap(), id as f64 * 0.5);
        assert_eq!(r["delta"].as_i64().unwrap(), -id, "sint32 zigzag");
    }
    let dead = lines_of(&[tmp.path().join("dead.jsonl")]);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]["error"].as_str().unwrap().contains("truncated"),
        "{dead:?}"
    );
}

/// A message with a nested message, a repeated message, a repeated string
/// and a map: a struct, lists and a map column, read in SQL by field, index
/// and key; a message without its nested message has a null struct.
#[test]
fn protobuf_nested_messages_lists_and_maps() {
    let (tmp, _broker, bs) = with_broker();
    create_topic(&bs, "orders_nested", 1);
    produce_proto(
        &bs,
        "orders_nested",
        &tmp.path().join("shop.desc"),
        90,
        true,
    );
    let app = format!(
        r#"CREATE STREAM flat AS SELECT id, address['city'] AS city, address['zip'] AS zip,
       array_length(tags) AS ntags, array_length(items) AS nitems, items[1]['sku'] AS first_sku,
       items[2]['qty'] AS second_qty, attrs['half'] AS half
FROM orders_nested
INTO out WITH ('orders_nested.type' = 'kafka_source', 'orders_nested.bootstrap.servers' = '{bs}',
      'orders_nested.topic' = 'orders_nested', 'orders_nested.value.format' = 'protobuf',
      'orders_nested.protobuf.descriptor.file' = 'shop.desc', 'orders_nested.protobuf.message' = 'shop.Order',
      'orders_nested.stop.at.end' = 'true',
      'out.type' = 'file_sink', 'out.path' = 'out.jsonl', 'dlq.path' = 'dead.jsonl');"#
    );
    let o = run(tmp.path(), &app, &[]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    let mut rows = lines_of(&[tmp.path().join("out.jsonl")]);
    rows.sort_by_key(|r| r["id"].as_u64());
    assert_eq!(rows.len(), 90, "{log}");
    for r in &rows {
        let id = r["id"].as_i64().unwrap();
        if id % 3 == 0 {
            assert!(r["city"].is_null() && r["zip"].is_null(), "no address: {r}");
        } else {
            assert_eq!(r["city"], format!("city{}", id % 3), "{r}");
            assert_eq!(r["zip"].as_i64(), Some(1000 + id), "{r}");
        }
        let ntags = r["ntags"].as_i64().unwrap_or(0);
        assert_eq!(ntags, id % 4, "{r}");
        assert_eq!(r["nitems"].as_i64().unwrap_or(0), id % 3, "{r}");
        if id % 3 >= 1 {
            assert_eq!(r["first_sku"], format!("s{id}-0"), "{r}");
        }
        if id % 3 == 2 {
            assert_eq!(r["second_qty"].as_i64(), Some(2), "{r}");
        }
        assert_eq!(r["half"].as_i64(), Some(id / 2), "{r}");
    }
    let dead = lines_of(&[tmp.path().join("dead.jsonl")]);
    assert_eq!(dead.len(), 1, "the truncated message: {dead:?}");
}

/// Two topics joined in time: every order with a payment within 5 s of it
/// comes out once; payments too far from their order do not match.
#[test]
fn two_topics_join_within_an_interval() {
    let _machine = crate::common::exclusive();
    let (tmp, _broker, bs) = with_broker();
    create_topic(&bs, "orders", 2);
    create_topic(&bs, "payments", 1);
    let base = 1_704_067_200_000u64;
    let orders: Vec<Vec<u8>> = (0..2_000u64)
        .map(|i| {
            format!(
                r#"{{"id":{i},"customer":"c{}","ts":{}}}"#,
                i % 13,
                base + i * 100
            )
            .into_bytes()
        })
        .collect();
    produce_records(
        &bs,
        "orders",
        orders
            .iter()
            .enumerate()
            .map(|(i, v)| (Some((i % 2) as i32), None, v.as_slice())),
    );
    // a payment for two of every three orders, up to 3 s before or after
    // it; every 50th order also gets one 30 s late, which must not match
    let mut payments: Vec<(u64, Vec<u8>)> = Vec::new();
    for i in 0..2_000u64 {
        if i % 3 != 0 {
            let ts = base + i * 100 + (i % 7) * 1_000 - 3_000;
            payments.push((
                ts,
                format!(r#"{{"id":{i},"amount":{},"ts":{ts}}}"#, i * 2).into_bytes(),
            ));
        }
        if i % 50 == 0 {
            let ts = base + i * 100 + 30_000;
            payments.push((
                ts,
                format!(r#"{{"id":{i},"amount":-1,"ts":{ts}}}"#).into_bytes(),
            ));
        }
    }
    payments.sort_by_key(|p| p.0);
    produce_records(
        &bs,
        "payments",
        payments.iter().map(|(_, v)| (Some(0), None, v.as_slice())),
    );
    let app = format!(
        r#"CREATE STREAM paid AS
SELECT o.id, o.customer, p.amount FROM orders o JOIN payments p ON o.id = p.id
WITHIN INTERVAL '5' SECONDS
INTO out
WITH ('orders.type' = 'kafka_source', 'orders.bootstrap.servers' = '{bs}', 'orders.topic' = 'orders',
      'orders.group.id' = 'join-o-{bs}', 'orders.stop.at.end' = 'true',
      'orders.schema' = 'id BIGINT, customer VARCHAR, ts BIGINT',
      'orders.event.time.field' = 'ts', 'orders.event.time.format' = 'epoch_millis',
      'payments.type' = 'kafka_source', 'payments.bootstrap.servers' = '{bs}', 'payments.topic' = 'payments',
      'payments.group.id' = 'join-p-{bs}', 'payments.stop.at.end' = 'true',
      'payments.schema' = 'id BIGINT, amount BIGINT, ts BIGINT',
      'payments.event.time.field' = 'ts', 'payments.event.time.format' = 'epoch_millis',
      'payments.watermark.max_out_of_orderness' = '1s',
      'out.type' = 'file_sink', 'out.path' = 'out/paid.jsonl', 'batch.size' = '300',
      'use_transactions' = 'true');"#
    );
    let log = tmp.path().join("velo.log");
    let mut child = spawn_assigned(tmp.path(), &app, &[], &[], &log);
    let status = wait_timeout(&mut child, Duration::from_secs(180), &log);
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{said}");
    assert!(!said.contains("late:"), "nothing is late: {said}");
    let mut got: Vec<(u64, i64)> = lines_of(&published(&tmp.path().join("out"), "paid"))
        .iter()
        .map(|v| (v["id"].as_u64().unwrap(), v["amount"].as_i64().unwrap()))
        .collect();
    got.sort();
    let want: Vec<(u64, i64)> = (0..2_000u64)
        .filter(|i| i % 3 != 0)
        .map(|i| (i, (i * 2) as i64))
        .collect();
    assert_eq!(got.len(), want.len(), "{said}");
    assert!(
        got == want,
        "every paid order once, no late payment matched"
    );
}

/// Two Kafka sources of one job do not share the default consumer group
/// (they would rebalance each other): the first keeps `velo-<job>`, the
/// second gets `velo-<job>-<source>`; a group written stays.
#[test]
fn two_kafka_sources_of_a_job_get_groups_of_their_own() {
    use velo_engine::plan::{PlanOptions, resolve};
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("app.sql");
    let sql = "CREATE STREAM paid AS SELECT o.id FROM orders o JOIN payments p ON o.id = p.id
        JOIN refunds r ON o.id = r.id WITHIN INTERVAL '5' SECONDS INTO out
        WITH ('orders.type' = 'kafka_source', 'orders.bootstrap.servers' = '127.0.0.1:1', 'orders.topic' = 'o',
              'payments.type' = 'kafka_source', 'payments.bootstrap.servers' = '127.0.0.1:1', 'payments.topic' = 'p',
              'refunds.type' = 'kafka_source', 'refunds.bootstrap.servers' = '127.0.0.1:1', 'refunds.topic' = 'r',
              'refunds.group.id' = 'mine', 'out.type' = 'stdout');";
    std::fs::write(&path, sql).unwrap();
    let opts = PlanOptions {
        no_global: true,
        engine: velostream::engine(),
        ..Default::default()
    };
    let app = resolve(sql, &path, &opts).unwrap();
    let groups: Vec<(String, Option<String>)> = app.jobs[0]
        .sources
        .iter()
        .map(|c| (c.name.clone(), c.get("group.id").map(str::to_string)))
        .collect();
    assert_eq!(
        groups,
        vec![
            ("orders".into(), None),
            ("payments".into(), Some("velo-paid-payments".into())),
            ("refunds".into(), Some("mine".into())),
        ]
    );
}

/// `SELECT customer PRIMARY KEY, id PRIMARY KEY, ...` keys every message
/// (compound keys joined with `|`), and undecodable messages go to a
/// dead-letter Kafka topic with where they came from.
#[test]
fn primary_key_is_the_message_key_and_dead_letters_go_to_a_topic() {
    let (tmp, _broker, bs) = with_broker();
    create_topic(&bs, "orders", 2);
    create_topic(&bs, "keyed", 1);
    create_topic(&bs, "dead", 1);
    let mut msgs = orders(0..300);
    msgs.insert(50, (None, b"{\"id\": 7, broken".to_vec()));
    msgs.insert(200, (None, b"\x00\x01 not json".to_vec()));
    produce(&bs, "orders", &msgs);
    let app = format!(
        r#"CREATE STREAM keyed AS
SELECT customer PRIMARY KEY, id AS order_id PRIMARY KEY, amount FROM orders
INTO keyed_topic
WITH (
  'orders.type' = 'kafka_source', 'orders.bootstrap.servers' = '{bs}', 'orders.topic' = 'orders',
  'orders.stop.at.end' = 'true', 'orders.session.timeout.ms' = '10000',
  'keyed_topic.type' = 'kafka_sink', 'keyed_topic.bootstrap.servers' = '{bs}', 'keyed_topic.topic' = 'keyed',
  'dlq.type' = 'kafka_sink', 'dlq.bootstrap.servers' = '{bs}', 'dlq.topic' = 'dead',
  'batch.size' = '100'
);"#
    );
    let out = run(tmp.path(), &app, &[]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    let topic = consume_all(&bs, "keyed", 300);
    assert_eq!(topic.len(), 300, "{log}");
    for (k, v) in &topic {
        let v: serde_json::Value = serde_json::from_str(v).unwrap();
        let id = v["order_id"].as_u64().unwrap();
        assert_eq!(
            k.as_deref(),
            Some(format!("c{}|{id}", id % 97).as_str()),
            "PRIMARY KEY columns form the key: {v}"
        );
    }
    let dead = consume_all(&bs, "dead", 2);
    assert_eq!(dead.len(), 2, "both bad messages in the dead-letter topic");
    for (_, v) in &dead {
        let d: serde_json::Value = serde_json::from_str(v).unwrap();
        assert!(
            d["location"].as_str().unwrap().starts_with("orders/"),
            "{d}"
        );
        assert!(d["error"].as_str().is_some_and(|e| !e.is_empty()), "{d}");
    }
}

/// The group's committed offset of each of `topic`'s first `partitions`
/// partitions (-1: none).
fn committed_each(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

/// Scale-out through a consumer group: two `velo` processes with
/// `partition.assignment = 'group'` split a topic's four partitions. When
/// the second joins, the first hands its revoked partitions over at the
/// offsets its committed epochs reached, so no record is processed by
/// both; when the second is SIGKILLed, the first takes its partitions over
/// after the session timeout and reads on from the group's committed
/// offsets: nothing is lost, and the only records processed twice are
/// the killed process's last, uncommitted epoch (at or after the committed
/// offsets seen at the kill).
#[test]
fn group_members_split_a_topic_and_take_over_a_killed_one() {
    let _machine = crate::common::exclusive();
    let (tmp, _broker, bs) = with_broker();
    const PARTS: i32 = 4;
    const PER_PART: i64 = 3_000;
    create_topic(&bs, "orders", PARTS);
    for p in 0..PARTS {
        produce_ids_to(&bs, "orders", p, 0..PER_PART as u64);
    }
    let group = format!("scale-{bs}");
    // paced (rate_limit per process) so that both members work a while
    let app = format!(
        r#"CREATE STREAM tagged AS SELECT id, _partition AS p, _offset AS o FROM orders INTO out
WITH ('orders.type' = 'kafka_source', 'orders.bootstrap.servers' = '{bs}', 'orders.topic' = 'orders', 'orders.group.id' = '{group}',
      'orders.auto.offset.reset' = 'earliest', 'orders.metadata_columns' = 'true',
      'orders.partition.assignment' = 'group', 'orders.stop.at.end' = 'true',
      'orders.session.timeout.ms' = '6000', 'orders.heartbeat.interval.ms' = '500',
      'orders.max.poll.interval.ms' = '10000',
      'out.type' = 'file_sink', 'out.path' = 'out/part.jsonl',
      'batch.size' = '200', 'batch.timeout' = '300ms', 'rate_limit' = '600',
      'use_transactions' = 'true');"#
    );
    let dirs = [tmp.path().join("a"), tmp.path().join("b")];
    let logs = [tmp.path().join("a.log"), tmp.path().join("b.log")];
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let said = |i: usize| std::fs::read_to_string(&logs[i]).unwrap_or_default();
    // phase 1: A alone, then B joins and the partitions are split
    let mut a = spawn_assigned(&dirs[0], &app, &[], &[], &logs[0]);
    let mut b = spawn_assigned(&dirs[1], &app, &[], &[], &logs[1]);
    let both = wait_until(Duration::from_secs(90), || {
        !published(&dirs[0].join("out"), "part").is_empty()
            && !published(&dirs[1].join("out"), "part").is_empty()
    });
    assert!(
        both,
        "both members publish output:\nA: {}\nB: {}",
        said(0),
        said(1)
    );
    // B has committed epochs of its own before it is killed
    wait_for(
        Duration::from_secs(60),
        "B's second epoch published",
        || published(&dirs[1].join("out"), "part").len() >= 2,
    );
    // phase 2: B killed (not A, the group's leader: tansu 0.6 gives no
    // partitions to the survivors of a killed leader, with any client);
    // the offsets it leaves in the group
    assert!(b.try_wait().unwrap().is_none(), "B ran on: {}", said(1));
    b.kill().unwrap();
    b.wait().unwrap();
    let at_kill = committed_each(&bs, &group, "orders", PARTS);
    let status = wait_timeout(&mut a, Duration::from_secs(180), &logs[0]);
    assert!(status.success(), "A finishes the topic: {}", said(0));
    assert!(
        said(0).contains("handed over"),
        "A handed its revoked partitions over when B joined: {}",
        said(0)
    );
    // every record at least once; twice only in A's uncommitted epoch
    let mut seen: BTreeMap<(i64, i64), u32> = BTreeMap::new();
    let mut per_member = [0usize; 2];
    let mut a_read_to_the_end = std::collections::BTreeSet::new();
    for (i, d) in dirs.iter().enumerate() {
        for v in lines_of(&published(&d.join("out"), "part")) {
            let (p, o) = (v["p"].as_i64().unwrap(), v["o"].as_i64().unwrap());
            assert_eq!(v["id"].as_i64().unwrap(), o, "{v}");
            *seen.entry((p, o)).or_default() += 1;
            per_member[i] += 1;
            if i == 0 && o == PER_PART - 1 {
                a_read_to_the_end.insert(p);
            }
        }
    }
    assert!(per_member.iter().all(|n| *n > 0), "{per_member:?}");
    assert_eq!(
        a_read_to_the_end.len(),
        PARTS as usize,
        "A read every partition to its end, B's too: {a_read_to_the_end:?}\n{}",
        said(0)
    );
    let mut twice = 0;
    for p in 0..PARTS as i64 {
        for o in 0..PER_PART {
            let n = seen.get(&(p, o)).copied().unwrap_or(0);
            assert!(
                n >= 1,
                "record {p}/{o} lost (committed at the kill: {at_kill:?})"
            );
            if n > 1 {
                twice += 1;
                assert!(
                    o >= at_kill[p as usize],
                    "record {p}/{o} processed {n} times, below the offset {} committed at the kill",
                    at_kill[p as usize]
                );
            }
        }
    }
    assert_eq!(
        seen.len() as i64,
        PARTS as i64 * PER_PART,
        "no stray records"
    );
    eprintln!(
        "records per member {per_member:?}; processed twice (the killed member's uncommitted epoch): {twice}; committed at the kill {at_kill:?}"
    );
}
