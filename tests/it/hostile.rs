//! A hostile user's inputs (issue 18): secrets fed through every path and
//! looked for in every output, stop signals, a glob through a loop of
//! symbolic links, a crafted checkpoint, a record nested 100,000 levels
//! deep, a transactional job run twice without its state directory.

use std::path::Path;
use std::time::Duration;

use crate::common::{files_below, published, run_in, signal, spawn, wait_for};

/// Everything a run printed.
fn output(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn secrets_never_appear_in_any_output() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir_all(dir.join("configs")).unwrap();
    // through YAML: a password, and a PEM block under a key of a file sink
    std::fs::write(
        dir.join("configs/k.yaml"),
        "type: kafka_sink\nbootstrap.servers: 127.0.0.1:1\ntopic: t\nmessage.timeout.ms: 1500\n\
         security.protocol: SASL_PLAINTEXT\nsasl.mechanism: PLAIN\nsasl.username: alice\n\
         sasl.password: S2-yaml-secret-pass\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("configs/out.yaml"),
        "type: file_sink\npath: out/s.jsonl\n\
         ssl_key_pem: |\n  -----BEGIN PRIVATE KEY-----\n  S8pemBodySecret\n  -----END PRIVATE KEY-----\n",
    )
    .unwrap();
    // through WITH, a variable, --set, and a URI's password and query
    std::fs::write(
        dir.join("app.sql"),
        "CREATE STREAM s AS SELECT id FROM gen INTO k, out
         WITH ('gen.type' = 'datagen', 'gen.rows' = '3', 'gen.password' = '${MY_CREDS}',
               'k.config_file' = 'configs/k.yaml', 'out.config_file' = 'configs/out.yaml',
               'gen.secret' = 'S1-with-secret-pass', 'gen.db_pwd' = 'S10-pwd-secret',
               'gen.basic.auth.user.info' = 'alice:S11-userinfo-secret');
         CREATE STREAM u AS SELECT id FROM gen2 INTO 'file://out/u.jsonl?format=jsonl&token=S9-query-token'
         WITH ('gen2.type' = 'datagen', 'gen2.rows' = '1', 'gen2.url' = 'postgres://app:S4-uri-secret@db/x');",
    )
    .unwrap();
    // a malformed Kafka URI with two passwords, refused by validate
    std::fs::write(
        dir.join("bad.sql"),
        "SELECT id FROM 'kafka://alice:S6-uri-pass@127.0.0.1:1,bob:S7-uri-pass@127.0.0.1:2/t?x' INTO o WITH ('o.type' = 'stdout');",
    )
    .unwrap();
    let env = vec![
        ("MY_CREDS".to_string(), "S5-var-secret-creds".to_string()),
        ("VELO_LOG".to_string(), "trace".to_string()),
    ];
    let set = "gen2.api_key=S3-set-secret-config";
    let mut all = String::new();
    for args in [
        vec!["validate", "app.sql", "--set", set],
        vec!["explain", "app.sql", "--set", set],
        vec!["run", "app.sql", "--set", set],
        vec!["validate", "bad.sql"],
        vec!["explain", "bad.sql"],
    ] {
        let o = run_in(dir, &args, &env);
        // (the command line is the test's own; only velo's output counts)
        all.push_str(&format!("\n=== velo {}\n{}", args[0], output(&o)));
    }
    // the runs did run (the Kafka sink's broker is unreachable, so run fails)
    assert!(all.contains("sink out: 3 written"), "{all}");
    assert!(all.contains("invalid URI"), "{all}");
    for secret in [
        "S1-with-secret-pass",
        "S2-yaml-secret-pass",
        "S3-set-secret-config",
        "S4-uri-secret",
        "S5-var-secret-creds",
        "S6-uri-pass",
        "S7-uri-pass",
        "S8pemBodySecret",
        "S9-query-token",
        "S10-pwd-secret",
        "S11-userinfo-secret",
    ] {
        if let Some(at) = all.find(secret) {
            panic!(
                "{secret} printed: ...{}...",
                &all[at.saturating_sub(300)..(at + 100).min(all.len())]
            );
        }
    }
}

#[test]
fn sigterm_and_sighup_stop_like_ctrl_c_and_a_second_signal_aborts() {
    for sig in ["-TERM", "-HUP"] {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        std::fs::write(
            dir.join("app.sql"),
            "SELECT id, pad FROM gen INTO tx WITH ('gen.type' = 'datagen', 'gen.rate' = '20000', 'gen.columns' = 'id:sequence(1), pad:string(100)',
             'tx.type' = 'file_sink', 'tx.path' = 'out/tx.jsonl', 'use_transactions' = 'true', 'batch.size' = '1000');",
        )
        .unwrap();
        let child = spawn(dir, &["run", "app.sql"]);
        wait_for(Duration::from_secs(60), "an epoch published", || {
            !published(&dir.join("out"), "tx-").is_empty()
        });
        signal(&child, sig);
        let o = child.wait_with_output().unwrap();
        let log = output(&o);
        assert!(o.status.success(), "{sig}: a clean stop: {log}");
        assert!(
            log.contains("committing the current epoch") && log.contains("records read"),
            "{sig}: says so and prints the summary: {log}"
        );
        let left: Vec<_> = files_below(dir)
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{sig}: temporary files left: {left:?}");
        // every published epoch is whole
        for f in published(&dir.join("out"), "tx-") {
            let n = std::fs::read_to_string(dir.join("out").join(&f))
                .unwrap()
                .lines()
                .count();
            assert_eq!(n, 1000, "{}", f.display());
        }
    }
    // a second signal aborts at once, saying so: here the first cannot end
    // the epoch, whose Kafka sink waits for an unreachable broker
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(
        dir.join("app.sql"),
        "SELECT id FROM gen INTO k WITH ('gen.type' = 'datagen', 'gen.rate' = '100', 'gen.columns' = 'id:sequence(1)',
         'k.type' = 'kafka_sink', 'k.bootstrap.servers' = '127.0.0.1:1', 'k.topic' = 't',
         'k.message.timeout.ms' = '600000', 'batch.timeout' = '100ms');",
    )
    .unwrap();
    let log_path = dir.join("velo.log");
    let mut child = crate::common::velo()
        .current_dir(dir)
        .args(["run", "app.sql"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let said = |what: &str| {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains(what)
    };
    // the epoch holds records (the progress line, every 10 s): a signal
    // before the first record would stop an empty epoch cleanly
    wait_for(Duration::from_secs(40), "records read", || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("progress: ") && !l.contains("progress: 0 in"))
    });
    signal(&child, "-TERM");
    wait_for(
        Duration::from_secs(30),
        "the first signal to be taken",
        || said("SIGTERM received: committing"),
    );
    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(status.code(), Some(143), "{log}");
    assert!(
        log.contains("SIGTERM received again: aborting now"),
        "{log}"
    );
}

#[test]
fn a_glob_through_a_loop_of_symbolic_links_reads_each_file_once() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir_all(dir.join("data/sub")).unwrap();
    std::fs::write(
        dir.join("data/sub/x.jsonl"),
        "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n",
    )
    .unwrap();
    // data/sub/loop -> data: every level of the glob meets x.jsonl again
    std::os::unix::fs::symlink(dir.join("data"), dir.join("data/sub/loop")).unwrap();
    let app = "SELECT n FROM src INTO out WITH ('src.type' = 'file_source', 'src.path' = 'data/**/*.jsonl',
               'out.type' = 'file_sink', 'out.path' = 'out/n.jsonl');";
    let (ok, log) = crate::common::run_app(dir, app);
    assert!(ok, "{log}");
    let text = std::fs::read_to_string(dir.join("out/n.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}\n{log}");
}

#[test]
fn a_crafted_checkpoint_cannot_make_velo_rename_files_outside_the_sink() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("in.jsonl"), "{\"n\":1}\n").unwrap();
    let app = "CREATE STREAM copy AS SELECT n FROM src INTO out WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl',
               'out.type' = 'file_sink', 'out.path' = 'out/n.jsonl', 'use_transactions' = 'true', 'state.dir' = 'state');";
    let (ok, log) = crate::common::run_app(dir, app);
    assert!(ok, "{log}");
    // whoever can write the state directory names a file of the machine
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    let cp_path = dir.join("state/copy/checkpoint.json");
    let mut cp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cp_path).unwrap()).unwrap();
    for target in [
        dir.join("elsewhere.txt"),
        dir.join("out/../stolen.txt"),
        dir.join("out/.n-000009.jsonl.epoch-9.tmp.bak"),
    ] {
        cp["sinks"]["out"] = serde_json::json!([[victim, target]]);
        std::fs::write(&cp_path, cp.to_string()).unwrap();
        let o = run_in(dir, &["run", "app.sql"], &[]);
        let log = output(&o);
        assert!(!o.status.success(), "{log}");
        assert!(log.contains("is not this sink's"), "{log}");
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "keep me",
            "{}: {log}",
            target.display()
        );
        assert!(!target.exists(), "{}", target.display());
    }
}

#[test]
fn a_record_nested_100000_levels_deep_is_a_bad_record() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let deep = |open: &str, close: &str| {
        format!(
            "{{\"n\":2,\"b\":{}1{}}}\n",
            open.repeat(100_000),
            close.repeat(100_000)
        )
    };
    let text = format!(
        "{{\"n\":1,\"b\":\"x\"}}\n{}{}{{\"n\":4,\"b\":\"y\"}}\n",
        deep("[", "]"),
        deep("{\"c\":", "}")
    );
    std::fs::write(dir.join("in.jsonl"), text).unwrap();
    let app = "SELECT n, b FROM src INTO out WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl',
               'out.type' = 'file_sink', 'out.path' = 'out/n.jsonl', 'dlq.path' = 'out/dead.jsonl');";
    let (ok, log) = crate::common::run_app(dir, app);
    assert!(ok, "{log}");
    let good = std::fs::read_to_string(dir.join("out/n.jsonl")).unwrap();
    assert_eq!(good, "{\"n\":1,\"b\":\"x\"}\n{\"n\":4,\"b\":\"y\"}\n");
    let dead = std::fs::read_to_string(dir.join("out/dead.jsonl")).unwrap();
    assert_eq!(dead.lines().count(), 2, "{log}");
    assert!(dead.contains("more than 1000 levels deep"), "{log}");
}

#[test]
fn a_transactional_rerun_without_its_state_directory_continues_the_numbering() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let rows: String = (1..=6).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    std::fs::write(dir.join("in.jsonl"), rows).unwrap();
    let app = "SELECT n FROM src INTO out WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl',
               'out.type' = 'file_sink', 'out.path' = 'out/n.jsonl', 'use_transactions' = 'true', 'batch.size' = '2');";
    for _ in 0..2 {
        let (ok, log) = crate::common::run_app(dir, app);
        assert!(ok, "{log}");
    }
    // two runs, three epochs each: six files, none overwritten
    let files = published(&dir.join("out"), "n-");
    assert_eq!(files.len(), 6, "{files:?}");
    let mut all: Vec<String> = files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(dir.join("out").join(f))
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    all.sort();
    assert_eq!(all.len(), 12, "{all:?}");
    assert!(Path::new(&dir.join("out/n-000006.jsonl")).exists());
}
