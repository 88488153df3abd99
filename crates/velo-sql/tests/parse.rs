//! Front-end tests: statement forms, URIs, annotations, WITH values, errors.

use velo_sql::{StatementKind, parse_app};

#[test]
fn bare_select_with_props() {
    let app = parse_app("SELECT * FROM o WITH ('o.type' = 'datagen', 'batch.size' = 10);").unwrap();
    let s = &app.statements[0];
    assert_eq!(s.kind, StatementKind::Select);
    assert_eq!(s.with.get("o.type").map(String::as_str), Some("datagen"));
    assert_eq!(s.with.get("batch.size").map(String::as_str), Some("10"));
    assert_eq!(s.sources[0].name, "o");
}

#[test]
fn statement_forms_uris_annotations() {
    let sql = "-- @application: demo\n-- @unknown_thing: 1\nCREATE STREAM s AS\nSELECT a.x FROM 'file:///d/*.csv?format=csv' a JOIN b ON a.k = b.k WHERE a.x > 1\nINTO out1, 'file:///o/x.parquet'\nWITH ('out1.type' = 'stdout', format = 'parquet', 'cols' = ['a', 'b'], n = -3, flag = true);\n\nINSERT INTO sink SELECT * FROM t;\n-- @job_name: third\nCREATE TABLE agg AS SELECT k, COUNT(*) FROM t GROUP BY k EMIT CHANGES;\nCREATE STREAM src (id BIGINT NOT NULL, name VARCHAR) WITH ('src.type' = 'file_source');\n";
    let app = parse_app(sql).unwrap();
    assert_eq!(app.annotation("application"), Some("demo"));
    assert_eq!(app.statements.len(), 4);
    let s = &app.statements[0];
    assert_eq!(
        (s.kind, s.name.as_str(), s.line),
        (StatementKind::CreateStream, "s", 3)
    );
    assert_eq!(
        s.sources[0].uri.as_deref(),
        Some("file:///d/*.csv?format=csv")
    );
    assert_eq!(s.sources[1].name, "b");
    assert_eq!(s.sinks[0].name, "out1");
    assert_eq!(s.sinks[1].uri.as_deref(), Some("file:///o/x.parquet"));
    assert_eq!(s.with["cols"], "a,b");
    assert_eq!(s.with["n"], "-3");
    assert_eq!(s.with["flag"], "true");
    assert_eq!(
        s.annotations.len(),
        2,
        "annotations before the statement are kept with it"
    );
    assert!(
        s.text.starts_with("CREATE STREAM s AS") && s.text.ends_with("flag = true)"),
        "{}",
        s.text
    );
    let ins = &app.statements[1];
    assert_eq!(
        (ins.kind, ins.sinks[0].name.as_str()),
        (StatementKind::InsertInto, "sink")
    );
    let t = &app.statements[2];
    assert_eq!(
        (t.kind, t.emit.as_deref()),
        (StatementKind::CreateTable, Some("CHANGES"))
    );
    assert_eq!(t.annotations[0].name, "job_name");
    let d = &app.statements[3];
    assert_eq!((d.kind, d.columns.len()), (StatementKind::SourceDecl, 2));
}

#[test]
fn errors_carry_line_column_and_quote() {
    let e = parse_app("SELECT a\nFROM t\nWHERE a >\nINTO x;").unwrap_err();
    assert_eq!(e.line, 4, "{e}");
    assert!(e.snippet.contains("INTO x;"), "{e}");
    let e = parse_app("CREATE VIEW v AS SELECT 1").unwrap_err();
    assert!(
        e.message.contains("expected STREAM or TABLE after CREATE"),
        "{e}"
    );
    let e = parse_app("SELECT * FROM t INTO x WITH ('a' 'b')").unwrap_err();
    assert!(
        e.message.contains("expected '=' after property 'a'") && e.column == 34,
        "{e}"
    );
    let e = parse_app("-- only a comment\n").unwrap_err();
    assert!(e.message.contains("no statements"), "{e}");
    let e = parse_app("DELETE FROM t").unwrap_err();
    assert!(e.message.contains("expected CREATE STREAM"), "{e}");
}

#[test]
fn emit_and_into_are_not_aliases() {
    let app = parse_app("SELECT * FROM t EMIT CHANGES").unwrap();
    assert_eq!(app.statements[0].emit.as_deref(), Some("CHANGES"));
    let app = parse_app("SELECT * FROM t INTO o").unwrap();
    assert_eq!(app.statements[0].sinks[0].name, "o");
    // EMIT before INTO, or after it (before or after WITH)
    for sql in [
        "SELECT k, COUNT(*) FROM t GROUP BY k EMIT CHANGES INTO o WITH ('o.type' = 'stdout')",
        "SELECT k, COUNT(*) FROM t GROUP BY k INTO o EMIT CHANGES WITH ('o.type' = 'stdout')",
        "SELECT k, COUNT(*) FROM t GROUP BY k INTO o WITH ('o.type' = 'stdout') EMIT CHANGES",
    ] {
        let app = parse_app(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(app.statements[0].emit.as_deref(), Some("CHANGES"), "{sql}");
        assert_eq!(app.statements[0].sinks[0].name, "o", "{sql}");
    }
    assert!(parse_app("SELECT k FROM t GROUP BY k EMIT SOMETIMES INTO o").is_err());
}

/// The seeds write WITHIN after the joins, before WHERE; it may also end the
/// query. The query keeps its WHERE and the interval is the statement's.
#[test]
fn within_interval_may_stand_before_where() {
    for (sql, ms) in [
        (
            "SELECT * FROM a JOIN b ON a.k = b.k WITHIN INTERVAL '5' MINUTES WHERE a.x > 0 INTO o",
            300_000,
        ),
        (
            "SELECT * FROM a JOIN b ON a.k = b.k WITHIN INTERVAL '30 seconds'",
            30_000,
        ),
        (
            "CREATE STREAM s AS SELECT * FROM a LEFT JOIN b ON a.k = b.k WITHIN INTERVAL '2' MINUTE WHERE a.x IS NOT NULL GROUP BY a.k EMIT CHANGES",
            120_000,
        ),
    ] {
        let app = parse_app(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let st = &app.statements[0];
        assert_eq!(
            st.within,
            Some(std::time::Duration::from_millis(ms)),
            "{sql}"
        );
        let q = st.query.as_ref().unwrap().to_string();
        assert!(!q.contains("WITHIN"), "{q}");
        if sql.contains("WHERE") {
            assert!(q.contains("WHERE"), "{q}");
        }
    }
    let e = parse_app("SELECT * FROM a JOIN b ON a.k = b.k WITHIN INTERVAL 'soon'")
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a duration"), "{e}");
}

/// Velostream's row buffer inside OVER (...) becomes a ROWS frame of that
/// many rows; EXPIRE AFTER is the statement's; EMIT EVERY RECORD is what a
/// row window does anyway.
#[test]
fn rows_window_buffer_becomes_a_frame() {
    let app = parse_app(
        "CREATE STREAM s AS SELECT k, AVG(p) OVER (ROWS WINDOW BUFFER 100 ROWS PARTITION BY k ORDER BY ts EMIT EVERY RECORD EXPIRE AFTER INTERVAL '5' MINUTES INACTIVITY) AS a,
                LAG(p) OVER (ROWS WINDOW BUFFER 3 ROWS PARTITION BY k ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW EXPIRE AFTER INTERVAL '30' SECONDS) AS l FROM t INTO o;
         SELECT SUM(p) OVER (ROWS WINDOW BUFFER 10 ROWS PARTITION BY k ORDER BY ts EXPIRE AFTER NEVER) FROM t",
    )
    .unwrap();
    let st = &app.statements[0];
    let q = st.query.as_ref().unwrap().to_string();
    assert!(
        q.contains(
            "AVG(p) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 99 PRECEDING AND CURRENT ROW)"
        ),
        "{q}"
    );
    // an explicit frame stays as written
    assert!(
        q.contains(
            "LAG(p) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW)"
        ),
        "{q}"
    );
    assert!(!q.contains("BUFFER") && !q.contains("EXPIRE"), "{q}");
    assert_eq!(st.expire, Some(std::time::Duration::from_secs(30)));
    assert_eq!(app.statements[1].expire, None);
    for (bad, says) in [
        (
            "SELECT SUM(p) OVER (ROWS WINDOW BUFFER ten ROWS ORDER BY ts) FROM t",
            "a number of rows",
        ),
        (
            "SELECT SUM(p) OVER (ORDER BY ts EXPIRE AFTER soon) FROM t",
            "EXPIRE AFTER INTERVAL",
        ),
        (
            "SELECT SUM(p) OVER (ORDER BY ts EMIT ON BUFFER FULL) FROM t",
            "EMIT EVERY RECORD",
        ),
    ] {
        let e = parse_app(bad).unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

/// `PRIMARY KEY` after SELECT items names the result's key columns (the
/// alias where there is one); a column list's PRIMARY KEY is not touched.
#[test]
fn primary_key_marks_select_items() {
    let app = parse_app(
        "CREATE STREAM k AS SELECT t.region PRIMARY KEY, upper(product) AS p PRIMARY KEY, price,
                (SELECT 1) AS one FROM trades t INTO o;
         SELECT a FROM t",
    )
    .unwrap();
    let st = &app.statements[0];
    assert_eq!(st.primary_key, vec!["region".to_string(), "p".to_string()]);
    let q = st.query.as_ref().unwrap().to_string();
    assert!(!q.contains("PRIMARY"), "{q}");
    assert!(app.statements[1].primary_key.is_empty());
    let e = parse_app("SELECT 1 + PRIMARY KEY FROM t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("PRIMARY KEY marks a column"), "{e}");
}

fn group_by_of(sql: &str) -> String {
    let app = parse_app(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let q = app.statements[0].query.as_ref().unwrap().to_string();
    let at = q
        .find("GROUP BY")
        .unwrap_or_else(|| panic!("no GROUP BY in {q}"));
    q[at..].to_string()
}

#[test]
fn window_clauses_become_group_by_windows() {
    assert_eq!(
        group_by_of(
            "SELECT k, COUNT(*) FROM t GROUP BY k WINDOW TUMBLING(ts, INTERVAL '1' MINUTE) INTO o"
        ),
        "GROUP BY k, TUMBLING(ts, INTERVAL '1' MINUTE)"
    );
    assert_eq!(
        group_by_of("SELECT COUNT(*) FROM t WINDOW SESSION(30s)"),
        "GROUP BY SESSION(INTERVAL '30 seconds')"
    );
    assert_eq!(
        group_by_of(
            "SELECT k, COUNT(*) FROM t WINDOW SLIDING(ts, 10m, 5m) GROUP BY k HAVING COUNT(*) > 1"
        ),
        "GROUP BY SLIDING(ts, INTERVAL '10 minutes', INTERVAL '5 minutes'), k HAVING COUNT(*) > 1"
    );
    // a named window of standard SQL is left alone
    let app = parse_app("SELECT SUM(x) OVER w FROM t WINDOW w AS (PARTITION BY k)").unwrap();
    assert!(
        app.statements[0]
            .query
            .as_ref()
            .unwrap()
            .to_string()
            .contains("WINDOW w AS")
    );
}

#[test]
fn watermark_for_in_a_column_list() {
    let app = parse_app(
        "CREATE STREAM orders (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) WITH ('orders.type' = 'kafka_source')",
    )
    .unwrap();
    let s = &app.statements[0];
    assert_eq!(s.columns.len(), 2);
    assert_eq!(s.with["orders.event.time.field"], "ts");
    assert_eq!(s.with["orders.watermark.max_out_of_orderness"], "5 second");
    let app =
        parse_app("CREATE STREAM o (ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH ('o.type' = 'x')")
            .unwrap();
    assert_eq!(app.statements[0].with["o.watermark.strategy"], "ascending");
    let e = parse_app(
        "CREATE STREAM o (ts TIMESTAMP, WATERMARK FOR ts AS now()) WITH ('o.type' = 'x')",
    )
    .unwrap_err();
    assert!(
        e.message
            .contains("expected WATERMARK FOR ts AS ts - INTERVAL"),
        "{e}"
    );
}

#[test]
fn long_operator_chains_are_refused_not_a_stack_overflow() {
    let chain = |op: &str, n: usize| {
        let terms = vec!["a"; n].join(op);
        format!(
            "SELECT {terms} AS s FROM t WHERE {terms} > 0 INTO o WITH ('t.type' = 'datagen', 'o.type' = 'stdout')"
        )
    };
    // at the limit: fine
    parse_app(&chain(" + ", velo_sql::MAX_OPERATOR_CHAIN)).unwrap();
    for (op, n) in [(" + ", 100_000), (" AND ", 20_000), (" || ", 5_000)] {
        let e = parse_app(&chain(op, n)).unwrap_err().to_string();
        assert!(e.contains("chains more than"), "{e}");
        assert!(e.contains("line 1"), "{e}");
    }
    // long lists are not chains
    let list = (0..50_000)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    parse_app(&format!(
        "SELECT a FROM t WHERE a IN ({list}) INTO o WITH ('t.type' = 'datagen', 'o.type' = 'stdout')"
    ))
    .unwrap();
}
