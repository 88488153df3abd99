//! The committed configuration reference is the generated one, from the
//! connectors of this build.

#[test]
fn configuration_reference_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = velo_engine::docs::config_reference(&velostream::registry());
    assert!(
        committed == generated,
        "docs/configuration.md is out of date: run `cargo run -q -- config-docs > docs/configuration.md`"
    );
}

/// The ```sql blocks of a Markdown text, with their first lines.
fn sql_blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut current, line.trim_start()) {
            (None, "```sql") => current = Some((i + 2, String::new())),
            (Some(_), "```") => out.push(current.take().unwrap()),
            (Some((_, sql)), _) => {
                sql.push_str(line);
                sql.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

/// Every SQL example of the README is a whole application: `velo validate`
/// accepts it, and those that need no broker run to the end on small input
/// files, so the docs cannot drift from the code.
#[test]
fn every_sql_example_of_the_readme_validates_and_the_local_ones_run() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let blocks = sql_blocks(&readme);
    assert!(blocks.len() >= 7, "{} blocks", blocks.len());
    let mut ran = 0;
    for (line, sql) in blocks {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let files = [
            ("data/readings.csv", "s1,1.5,true\ns2,2.5,false\n"),
            ("data/extra/more.csv", "sensor;value\ns9;9.5\n"),
            (
                "data/trades.csv",
                "symbol,price,qty,ts\nA,10.0,1,1704067200000\nA,11.0,2,1704067201000\nB,5.0,3,1704067200500\n",
            ),
            (
                "data/orders.jsonl",
                "{\"order_id\":1,\"customer\":\"c1\",\"amount\":5.0,\"ts\":1704067200000}\n{\"order_id\":2,\"customer\":\"c2\",\"amount\":7.0,\"ts\":1704067260000}\n",
            ),
            (
                "data/payments.jsonl",
                "{\"order_id\":1,\"paid\":5.0,\"ts\":1704067203000}\n",
            ),
        ];
        for (path, text) in files {
            std::fs::create_dir_all(dir.join(path).parent().unwrap()).unwrap();
            std::fs::write(dir.join(path), text).unwrap();
        }
        std::fs::write(dir.join("app.sql"), &sql).unwrap();
        let o = crate::common::run_in(dir, &["validate", "app.sql"], &[]);
        assert!(
            o.status.success(),
            "README line {line}: velo validate: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        if sql.contains("kafka_") {
            continue;
        }
        // an object store example runs against moto's S3 server, with the
        // objects it reads
        let moto = sql.contains("s3://").then(|| {
            let m = crate::common::Moto::start("lake");
            crate::lake::seed_readme(&m);
            m
        });
        let env: Vec<(String, String)> = match &moto {
            Some(m) => {
                let mut e = m.env();
                e.push(("S3_ENDPOINT".into(), format!("http://127.0.0.1:{}", m.port)));
                e
            }
            None => Vec::new(),
        };
        let o = crate::common::run_in(dir, &["run", "app.sql"], &env);
        assert!(
            o.status.success(),
            "README line {line}: velo run: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let objects = moto.as_ref().map_or(0, crate::lake::objects_written);
        assert!(
            crate::common::files_below(&dir.join("out")).len()
                + usize::from(sql.contains("stdout"))
                + objects
                > 0,
            "README line {line}: wrote nothing"
        );
        ran += 1;
    }
    assert!(ran >= 4, "{ran} examples ran");
}
