//! Stream-stream joins bounded in time: `WITHIN INTERVAL` and `BETWEEN`
//! conditions on event time, INNER / LEFT / RIGHT / FULL, three-way, a
//! window over a join. Files with declared event times run as streams, epoch
//! by epoch at random sizes; the result must equal DataFusion's batch answer
//! to the same join over the same files. State must stay bounded by the
//! interval, and survive a crash.

use std::path::Path;

use crate::windows::rows_of_text as rows;

use rand::{Rng, SeedableRng};

/// Orders, payments (most orders paid once, some twice, some never, some
/// payments for unknown orders, payment times around the order's) and
/// shipments; each file in event-time order up to 1.5 s of disorder.
pub(crate) fn write_streams(dir: &Path, seed: u64, orders: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let base = 1_704_067_200_000i64;
    let mut o = Vec::new();
    let mut p = Vec::new();
    let mut s = Vec::new();
    for i in 0..orders as i64 {
        let ts = base + i * 200;
        o.push((
            ts + rng.random_range(0..1_500),
            format!(
                "{{\"order_id\":{i},\"customer\":\"c{}\",\"amount\":{},\"ts\":{ts}}}",
                i % 17,
                rng.random_range(1..500)
            ),
        ));
        let pays = match rng.random_range(0..10) {
            0..=1 => 0,
            2 => 2,
            _ => 1,
        };
        for _ in 0..pays {
            let pts = ts + rng.random_range(-8_000..12_000);
            p.push((
                pts + rng.random_range(0..1_500),
                format!(
                    "{{\"order_id\":{i},\"paid\":{},\"ts\":{pts}}}",
                    rng.random_range(1..500)
                ),
            ));
        }
        if rng.random_bool(0.6) {
            let sts = ts + rng.random_range(0..20_000);
            s.push((
                sts + rng.random_range(0..1_500),
                format!(
                    "{{\"order_id\":{i},\"carrier\":\"k{}\",\"ts\":{sts}}}",
                    i % 3
                ),
            ));
        }
        if rng.random_bool(0.05) {
            let pts = ts + rng.random_range(-5_000..5_000);
            p.push((
                pts + rng.random_range(0..1_500),
                format!("{{\"order_id\":{},\"paid\":1,\"ts\":{pts}}}", 100_000 + i),
            ));
        }
    }
    std::fs::create_dir_all(dir.join("data")).unwrap();
    for (name, mut rows) in [("orders", o), ("payments", p), ("shipments", s)] {
        // sorted by time plus up to 1.5 s: bounded disorder
        rows.sort_by_key(|r| r.0);
        let text: String = rows.into_iter().map(|r| r.1 + "\n").collect();
        std::fs::write(dir.join(format!("data/{name}.jsonl")), text).unwrap();
    }
}

/// The sources' WITH keys: event time in epoch milliseconds, 2 s of
/// allowed disorder.
pub(crate) fn sources(batch: usize) -> String {
    let mut s = format!("'batch.size' = '{batch}'");
    for (name, schema) in [
        (
            "orders",
            "order_id BIGINT, customer VARCHAR, amount BIGINT, ts BIGINT",
        ),
        ("payments", "order_id BIGINT, paid BIGINT, ts BIGINT"),
        ("shipments", "order_id BIGINT, carrier VARCHAR, ts BIGINT"),
    ] {
        s.push_str(&format!(
            ", '{name}.type' = 'file_source', '{name}.path' = 'data/{name}.jsonl', '{name}.schema' = '{schema}',
             '{name}.event.time.field' = 'ts', '{name}.event.time.format' = 'epoch_millis',
             '{name}.watermark.max_out_of_orderness' = '2s'"
        ));
    }
    s
}

/// DataFusion's batch answer to `sql` over the files under `dir/data`, with
/// `ts` read as a timestamp.
pub(crate) fn batch_answer(dir: &Path, sql: &str, cols: &[&str]) -> Vec<String> {
    let mut oracle = crate::common::BatchOracle::new();
    for name in ["orders", "payments", "shipments"] {
        oracle = oracle
            .jsonl(&format!("{name}_raw"), &dir.join(format!("data/{name}.jsonl")))
            .run(&format!(
                "CREATE VIEW {name} AS SELECT * EXCLUDE (ts), to_timestamp_millis(ts) AS ts FROM {name}_raw"
            ));
    }
    rows(&oracle.jsonl_answer(sql), cols)
}

/// The peak join state of a run's summary (`join state: at most N rows`).
fn peak_join_state(log: &str) -> u64 {
    log.split("join state: at most ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no join state line: {log}"))
}

/// (name, streaming query, batch query, output columns)
pub(crate) type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

pub(crate) const CASES: &[Case] = &[
    (
        "inner_within",
        "SELECT o.order_id, o.customer, p.paid FROM orders o JOIN payments p ON o.order_id = p.order_id WITHIN INTERVAL '10' SECONDS",
        "SELECT o.order_id, o.customer, p.paid FROM orders o JOIN payments p ON o.order_id = p.order_id AND p.ts BETWEEN o.ts - INTERVAL '10' SECOND AND o.ts + INTERVAL '10' SECOND",
        &["order_id", "customer", "paid"],
    ),
    (
        "left_between",
        "SELECT o.order_id, o.amount, p.paid FROM orders o LEFT JOIN payments p ON o.order_id = p.order_id AND p.ts BETWEEN o.ts - INTERVAL '2' SECOND AND o.ts + INTERVAL '5' SECOND",
        "SELECT o.order_id, o.amount, p.paid FROM orders o LEFT JOIN payments p ON o.order_id = p.order_id AND p.ts BETWEEN o.ts - INTERVAL '2' SECOND AND o.ts + INTERVAL '5' SECOND",
        &["order_id", "amount", "paid"],
    ),
    (
        "right_between",
        "SELECT o.amount, p.order_id, p.paid FROM orders o RIGHT JOIN payments p ON o.order_id = p.order_id AND p.ts BETWEEN o.ts - INTERVAL '2' SECOND AND o.ts + INTERVAL '5' SECOND",
        "SELECT o.amount, p.order_id, p.paid FROM orders o RIGHT JOIN payments p ON o.order_id = p.order_id AND p.ts BETWEEN o.ts - INTERVAL '2' SECOND AND o.ts + INTERVAL '5' SECOND",
        &["amount", "order_id", "paid"],
    ),
    (
        "full_within",
        "SELECT o.order_id AS o_id, p.order_id AS p_id, p.paid FROM orders o FULL OUTER JOIN payments p ON o.order_id = p.order_id WITHIN INTERVAL '3' SECONDS",
        "SELECT o.order_id AS o_id, p.order_id AS p_id, p.paid FROM orders o FULL OUTER JOIN payments p ON o.order_id = p.order_id AND p.ts BETWEEN o.ts - INTERVAL '3' SECOND AND o.ts + INTERVAL '3' SECOND",
        &["o_id", "p_id", "paid"],
    ),
    (
        "three_way",
        "SELECT o.order_id, p.paid, s.carrier FROM orders o JOIN payments p ON o.order_id = p.order_id JOIN shipments s ON o.order_id = s.order_id WITHIN INTERVAL '10' SECONDS",
        "SELECT o.order_id, p.paid, s.carrier FROM orders o JOIN payments p ON o.order_id = p.order_id AND p.ts BETWEEN o.ts - INTERVAL '10' SECOND AND o.ts + INTERVAL '10' SECOND JOIN shipments s ON o.order_id = s.order_id AND s.ts BETWEEN o.ts - INTERVAL '10' SECOND AND o.ts + INTERVAL '10' SECOND",
        &["order_id", "paid", "carrier"],
    ),
    (
        "window_over_join",
        "SELECT o.customer, window_start, COUNT(*) AS n, SUM(p.paid) AS paid FROM orders o JOIN payments p ON o.order_id = p.order_id WITHIN INTERVAL '10' SECONDS GROUP BY o.customer, TUMBLE(o.ts, INTERVAL '30' SECOND)",
        "SELECT o.customer, date_bin(INTERVAL '30 seconds', o.ts) AS window_start, COUNT(*) AS n, SUM(p.paid) AS paid FROM orders o JOIN payments p ON o.order_id = p.order_id AND p.ts BETWEEN o.ts - INTERVAL '10' SECOND AND o.ts + INTERVAL '10' SECOND GROUP BY 1, 2",
        &["customer", "window_start", "n", "paid"],
    ),
];

#[test]
fn interval_joins_equal_the_batch_answer_at_random_epoch_sizes() {
    let _machine = crate::common::exclusive();
    // the last seed's stream is long enough that the joins' states drop
    // and compact thousands of rows several times
    for (seed, orders) in [(1u64, 1_500), (2, 1_500), (3, 1_500), (4, 15_000)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write_streams(dir, seed, orders);
        let batch = rand::rngs::StdRng::seed_from_u64(seed).random_range(30..400);
        let with = sources(batch);
        let app: String = CASES
            .iter()
            .map(|(name, sql, _, _)| {
                format!(
                    "CREATE STREAM {name} AS {sql} INTO {name}_out WITH ({with},
                       '{name}_out.type' = 'file_sink', '{name}_out.path' = 'out/{name}.jsonl');\n"
                )
            })
            .collect();
        let (ok, log) = crate::common::run_app(dir, &app);
        assert!(ok, "seed {seed}: {log}");
        assert!(
            !log.contains("late:"),
            "seed {seed}: nothing is late: {log}"
        );
        for (name, _, oracle, cols) in CASES {
            let got = rows(
                &std::fs::read_to_string(dir.join(format!("out/{name}.jsonl"))).unwrap_or_default(),
                cols,
            );
            let want = batch_answer(dir, oracle, cols);
            assert!(
                want.len() > 50,
                "{name}: a meaningful answer ({})",
                want.len()
            );
            if got != want {
                let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(5).collect();
                let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(5).collect();
                panic!(
                    "seed {seed} batch {batch} {name}: {} rows, want {}; extra {extra:?}, missing {missing:?}\n{log}",
                    got.len(),
                    want.len()
                );
            }
        }
    }
}

/// Over a long stream the join keeps only what the interval still needs:
/// its peak state is a small part of the input.
#[test]
fn interval_join_state_stays_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_streams(dir, 7, 40_000);
    let app = format!(
        "CREATE STREAM paid AS SELECT o.order_id, p.paid FROM orders o JOIN payments p ON o.order_id = p.order_id
           WITHIN INTERVAL '10' SECONDS INTO out
           WITH ({}, 'out.type' = 'file_sink', 'out.path' = 'out/paid.jsonl');",
        sources(2_000)
    );
    let (ok, log) = crate::common::run_app(dir, &app);
    assert!(ok, "{log}");
    let peak = peak_join_state(&log);
    // 40,000 orders and about 37,000 payments; the interval and the
    // disorder hold about 12 s of each (60 orders), plus one epoch's worth
    assert!(
        peak > 100 && peak < 8_000,
        "peak join state {peak} rows: {log}"
    );
}

/// A crash after a checkpoint loses nothing and duplicates nothing: the
/// join's kept rows and both streams' positions are in the checkpoint.
#[test]
fn interval_join_resumes_after_a_crash_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_streams(dir, 11, 3_000);
    let app = format!(
        "CREATE STREAM paid AS SELECT o.order_id, o.customer, p.paid FROM orders o LEFT JOIN payments p ON o.order_id = p.order_id
           WITHIN INTERVAL '10' SECONDS INTO out
           WITH ({}, 'use_transactions' = 'true', 'state.dir' = 'state',
                 'out.type' = 'file_sink', 'out.path' = 'out/paid.jsonl');",
        sources(150)
    );
    std::fs::write(dir.join("app.sql"), app).unwrap();
    let log = crate::common::crash_and_resume(dir, &["4", "9"]);
    let mut text = String::new();
    for f in crate::common::files_below(&dir.join("out")) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("paid") {
            text.push_str(&std::fs::read_to_string(dir.join("out").join(&f)).unwrap());
        }
    }
    let cols = ["order_id", "customer", "paid"];
    let got = rows(&text, &cols);
    let want = batch_answer(
        dir,
        "SELECT o.order_id, o.customer, p.paid FROM orders o LEFT JOIN payments p ON o.order_id = p.order_id AND p.ts BETWEEN o.ts - INTERVAL '10' SECOND AND o.ts + INTERVAL '10' SECOND",
        &cols,
    );
    assert_eq!(got.len(), want.len(), "{log}");
    assert!(got == want, "the output differs from the batch answer");
}

/// Two streams without a time bound are refused with what to write.
#[test]
fn a_join_of_streams_without_a_time_bound_says_what_to_add() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_streams(dir, 3, 50);
    let app = format!(
        "SELECT o.order_id, p.paid FROM orders o JOIN payments p ON o.order_id = p.order_id INTO out
           WITH ({}, 'out.type' = 'file_sink', 'out.path' = 'out/x.jsonl');",
        sources(10)
    );
    let (ok, log) = crate::common::run_app(dir, &app);
    assert!(!ok, "{log}");
    assert!(
        log.contains("needs a time bound") && log.contains("WITHIN INTERVAL"),
        "{log}"
    );
}

/// Streams of very different rates (auctions are 6 of every 50 Nexmark
/// events, bids 46) are read at the pace of the slowest in event time: the
/// fast one does not run ahead and fill the join's state. Read at the same
/// number of records per epoch, every auction would be read (and kept)
/// long before its bids.
#[test]
fn streams_are_read_at_the_pace_of_the_slowest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let app = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nexmark/j1.sql"),
    )
    .unwrap();
    std::fs::write(dir.join("app.sql"), app).unwrap();
    let o = crate::common::run_in(
        dir,
        &["run", "app.sql", "--set", "batch.size=20000"],
        &[("NEXMARK_EVENTS".into(), "1000000".into())],
    );
    let log = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{log}");
    assert!(log.contains("source auction: 60000 read"), "{log}");
    let peak = peak_join_state(&log);
    // about 20 s of auctions (12,000) and an epoch of bids
    assert!(peak < 35_000, "peak join state {peak} rows: {log}");
}
