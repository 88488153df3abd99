//! The Nexmark example apps (`examples/nexmark/`) on the `nexmark`
//! generator: each one's streaming output equals DataFusion's batch answer
//! to the same SELECT over the same generated bids.

use std::path::Path;

use arrow::array::RecordBatch;
use velo_connectors::nexmark::{NexmarkConfig, NexmarkSource, Table, schema_of};

const EVENTS: u64 = 250_000;

/// The SELECT of an example app: between `AS` and `INTO`.
fn select_of(app: &str) -> String {
    let start = app.find("SELECT").expect("a SELECT");
    let end = app.find("INTO out").expect("INTO out");
    app[start..end].to_string()
}

/// JSON Lines rows as sorted text.
fn sorted_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            // parse and print again: one key order, one number format
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.to_string()
        })
        .collect();
    v.sort();
    v
}

/// DataFusion's answer to `sql` over the generated tables and the CSV
/// files of `examples` (each a table named after the file), as JSON Lines.
fn batch_answer(tables: &[(&str, RecordBatch)], examples: &Path, sql: &str) -> String {
    let mut oracle = crate::common::BatchOracle::new();
    for (name, batch) in tables {
        oracle = oracle.table(name, batch.clone());
    }
    for csv in csv_files(examples) {
        oracle = oracle.csv(&csv.file_stem().unwrap().to_string_lossy(), &csv);
    }
    oracle.jsonl_answer(sql)
}

/// The side tables of the examples (`side_input.csv` of q13).
fn csv_files(examples: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect()
}

/// q12's windows are on processing time: which window a bid lands in
/// depends on when it is read. What must hold is that every bid is counted
/// once: its rows summed per bidder, as JSON Lines.
fn counts_per_bidder(text: &str) -> String {
    let mut per: std::collections::BTreeMap<i64, i64> = Default::default();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(
            v["starttime"].is_string() && v["endtime"].is_string(),
            "{l}"
        );
        *per.entry(v["bidder"].as_i64().unwrap()).or_default() += v["bid_count"].as_i64().unwrap();
    }
    per.into_iter()
        .map(|(b, n)| serde_json::json!({"bidder": b, "bid_count": n}).to_string() + "\n")
        .collect()
}

#[test]
fn nexmark_queries_equal_the_batch_answer() {
    let _machine = crate::common::exclusive();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nexmark");
    let cfg = NexmarkConfig {
        table: Table::Bid,
        events: Some(EVENTS),
        rate: None,
        event_rate: 10_000,
        start_time: 1_704_067_200_000,
        seed: 42,
        batch_size: 8192,
    };
    let schema = schema_of(Table::Bid);
    let bids = NexmarkSource::generate(&cfg, &schema, 0, EVENTS, None).unwrap();
    assert_eq!(bids.num_rows(), 230_000, "46 of every 50 events are bids");
    let mut tables = vec![("bid", bids)];
    for (name, table) in [("person", Table::Person), ("auction", Table::Auction)] {
        let cfg = NexmarkConfig {
            table,
            ..cfg.clone()
        };
        let batch = NexmarkSource::generate(&cfg, &schema_of(table), 0, EVENTS, None).unwrap();
        tables.push((name, batch));
    }
    let mut checked = 0;
    let mut names: Vec<_> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    names.sort();
    for path in names {
        let q = path.file_stem().unwrap().to_string_lossy().to_string();
        let app = std::fs::read_to_string(&path).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("app.sql"), &app).unwrap();
        for csv in csv_files(&examples) {
            std::fs::copy(&csv, dir.join(csv.file_name().unwrap())).unwrap();
        }
        let o = crate::common::run_in(
            dir,
            // many epochs: the answer may not depend on where they end;
            // 3 partitions, whatever the machine: a windowed GROUP BY
            // then reads the generator in 3 parts
            &[
                "run",
                "app.sql",
                "--set",
                "batch.size=9000",
                "--set",
                "partitions=3",
            ],
            &[("NEXMARK_EVENTS".into(), EVENTS.to_string())],
        );
        assert!(
            o.status.success(),
            "{q}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let mut text = crate::common::read_text(&dir.join(format!("out/{q}.jsonl")));
        if q == "q12" {
            text = counts_per_bidder(&text);
        }
        // an updating result (q4): the rows of its last state, as
        // `key|value` texts (the batch answer's are made the same way)
        let changelog = text.contains("\"_op\"");
        let as_table = |text: &str| -> Vec<String> {
            let mut rows: Vec<String> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    format!("{}|{}", v["category"], v["avg_final"])
                })
                .collect();
            rows.sort();
            rows
        };
        let got = if changelog {
            let (table, ops) = crate::updating::apply_changelog_text(
                &text,
                &["category"],
                &["category", "avg_final"],
            );
            assert!(
                ops.get("update").is_some_and(|n| *n > 0),
                "{q}: updated as auctions close: {ops:?}"
            );
            let mut rows: Vec<String> = table.into_values().collect();
            rows.sort();
            rows
        } else {
            sorted_lines(&text)
        };
        // the same SELECT as a batch query: a tumbling window is date_bin;
        // a query whose batch form is more than replacements has it in
        // examples/nexmark/batch/
        let batch_form = std::fs::read_to_string(examples.join(format!("batch/{q}.sql"))).ok();
        let mut sql = batch_form
            .clone()
            .unwrap_or_else(|| select_of(&app))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        // q5: a sliding window is each row in the five windows it falls in,
        // the maximum per window a GROUP BY on the start
        let hop =
            "FROM bid GROUP BY auction, HOP(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)";
        if sql.contains(hop) {
            let bin = |c: &str| {
                format!("date_bin(INTERVAL '2 seconds', {c}, TIMESTAMP '1970-01-01T00:00:00')")
            };
            sql = sql
                .replace(
                    hop,
                    &format!(
                        "FROM (SELECT *, {} - d AS hop_start FROM bid CROSS JOIN (VALUES (INTERVAL '0 seconds'), (INTERVAL '2 seconds'), (INTERVAL '4 seconds'), (INTERVAL '6 seconds'), (INTERVAL '8 seconds')) hops(d)) hb WHERE hop_start + INTERVAL '10 seconds' > date_time GROUP BY auction, hop_start",
                        bin("date_time")
                    ),
                )
                .replace(
                    "MAX(CountBids.num) AS maxn, window_start AS starttime",
                    &format!("MAX(CountBids.num) AS maxn, {} AS starttime", bin("CountBids.starttime")),
                )
                .replace(
                    "GROUP BY TUMBLE(CountBids.starttime, INTERVAL '2' SECOND)",
                    &format!("GROUP BY {}", bin("CountBids.starttime")),
                )
                .replace("window_start", "hop_start");
        }
        for (size, bin) in [("1' DAY", "1 day"), ("10' SECOND", "10 seconds")] {
            let tumble = format!("TUMBLE(date_time, INTERVAL '{size})");
            if sql.contains(&tumble) {
                let start = format!(
                    "date_bin(INTERVAL '{bin}', date_time, TIMESTAMP '1970-01-01T00:00:00')"
                );
                let end = format!("({start} + INTERVAL '{bin}')");
                sql = sql
                    .replace(&tumble, &start)
                    .replace("window_start", &start)
                    .replace("window_end", &end);
            }
        }
        // q4, q6: every auction is in one window of its open time, which
        // the batch answer does not need
        sql = sql.replace(", TUMBLE(A.date_time, INTERVAL '1' SECOND)", "");
        // q3: the batch answer is the join without its retention bound
        sql = sql.replace(" WITHIN INTERVAL '1' DAY", "");
        let want = if changelog {
            as_table(&batch_answer(&tables, &examples, &sql))
        } else {
            sorted_lines(&batch_answer(&tables, &examples, &sql))
        };
        assert!(!want.is_empty(), "{q}: a real workload");
        assert!(
            got == want,
            "{q}: {} streaming rows vs {} batch rows; first streaming {:?}, first batch {:?}",
            got.len(),
            want.len(),
            got.first(),
            want.first()
        );
        checked += 1;
    }
    assert!(checked >= 21, "every example checked ({checked})");
}

/// The Nexmark queries that cannot be answered on a stream as written
/// (`examples/nexmark/refused/`: q9, q18, q19 rank every row of a key over
/// all time) are refused at planning, each with a message that says why and
/// what to write instead, before any record is read.
#[test]
fn nexmark_queries_that_rank_over_all_time_are_refused_with_the_forms_that_work() {
    let refused = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nexmark/refused");
    let mut names: Vec<_> = std::fs::read_dir(&refused)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3);
    for path in names {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::copy(&path, tmp.path().join("app.sql")).unwrap();
        let o = crate::common::run_in(tmp.path(), &["run", "app.sql"], &[]);
        let log = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{}: {log}", path.display());
        assert!(
            log.contains("on a stream")
                && log.contains("updating result")
                && log.contains("window"),
            "{}: {log}",
            path.display()
        );
        assert!(!tmp.path().join("out").exists(), "nothing written");
    }
}
