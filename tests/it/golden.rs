//! The golden-file harness: every directory under `tests/sql/` is a case.
//!
//! A case holds `app.sql`, its inputs, and what must come out:
//! * `cmd` — arguments after `velo` (default: `run app.sql`);
//! * `env` — `KEY=VALUE` lines for the run;
//! * `exit` — expected exit code (default 0);
//! * `stdout_contains`, `stderr_contains`, `stderr_not_contains`,
//!   `stdout_not_contains` — one required (or forbidden) text per line;
//! * `expected/` — files that must exist with exactly this content after the
//!   run (relative to the case directory); `X.parquet.jsonl` compares the
//!   Parquet file `X.parquet` as JSON Lines, `X.gz` is compared decompressed;
//! * `files_glob` — lines `<glob> <count>`: how many files must match.
//!
//! Each case runs in a copy of its directory, so outputs never touch the tree.
//!
//! Restart mode: every case that keeps state (GROUP BY, windows, OVER,
//! joins) and expects output files runs again with a state directory and
//! transactional sinks, crashing right after its first checkpoint, then to
//! the end; what its sinks published must be the expected rows (as
//! multisets: a transactional file sink publishes a file per epoch). A case
//! opts out with a `no_restart` file saying why.

use std::path::Path;

use crate::common::{copy_dir, parquet_to_jsonl, read_text, run_in};

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .map(|s| {
            s.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn check_case(case: &Path) -> Result<(), String> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("case");
    copy_dir(case, &dir);
    let cmd = std::fs::read_to_string(case.join("cmd")).unwrap_or_else(|_| "run app.sql".into());
    let args: Vec<&str> = cmd.split_whitespace().collect();
    let env: Vec<(String, String)> = lines(&case.join("env"))
        .iter()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.replace("$CASE", &dir.to_string_lossy())))
        })
        .collect();
    let out = run_in(&dir, &args, &env);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let ctx = || format!("\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    let want_exit: i32 = std::fs::read_to_string(case.join("exit"))
        .map(|s| s.trim().parse().unwrap())
        .unwrap_or(0);
    if out.status.code() != Some(want_exit) {
        return Err(format!(
            "exit code {:?}, expected {want_exit}{}",
            out.status.code(),
            ctx()
        ));
    }
    if stderr.contains("panicked") {
        return Err(format!("velo panicked{}", ctx()));
    }
    for (file, text, must) in [
        ("stdout_contains", &stdout, true),
        ("stderr_contains", &stderr, true),
        ("stdout_not_contains", &stdout, false),
        ("stderr_not_contains", &stderr, false),
    ] {
        for l in lines(&case.join(file)) {
            if text.contains(&l) != must {
                return Err(format!(
                    "{} '{l}'{}",
                    if must { "missing" } else { "unexpected" },
                    ctx()
                ));
            }
        }
    }
    let expected = case.join("expected");
    for rel in crate::common::files_below(&expected) {
        let want = std::fs::read_to_string(expected.join(&rel)).unwrap();
        let rel_s = rel.to_string_lossy().into_owned();
        let got = if let Some(pq) = rel_s.strip_suffix(".parquet.jsonl") {
            let p = dir.join(format!("{pq}.parquet"));
            if !p.exists() {
                return Err(format!("missing output {pq}.parquet{}", ctx()));
            }
            parquet_to_jsonl(&p)
        } else {
            let p = dir.join(&rel);
            if !p.exists() {
                return Err(format!(
                    "missing output {rel_s}; files: {:?}{}",
                    crate::common::files_below(&dir),
                    ctx()
                ));
            }
            read_text(&p)
        };
        if got != want {
            return Err(format!(
                "output {rel_s} differs\n--- want ---\n{want}\n--- got ---\n{got}{}",
                ctx()
            ));
        }
    }
    for l in lines(&case.join("files_glob")) {
        let (pat, n) = l.rsplit_once(' ').unwrap();
        let n: usize = n.parse().unwrap();
        let got = glob::glob(&dir.join(pat).to_string_lossy())
            .unwrap()
            .count();
        if got != n {
            return Err(format!(
                "{got} files match '{pat}', expected {n}; files: {:?}{}",
                crate::common::files_below(&dir),
                ctx()
            ));
        }
    }
    Ok(())
}

/// Whether a case keeps state across epochs, so a crash in the middle can
/// change what it writes if restore is wrong.
fn is_stateful(case: &Path) -> bool {
    let sql = std::fs::read_to_string(case.join("app.sql"))
        .unwrap_or_default()
        .to_ascii_uppercase();
    case.join("expected").is_dir()
        && !case.join("cmd").exists()
        && !case.join("exit").exists()
        && !case.join("no_restart").exists()
        && ["GROUP BY", "OVER (", " JOIN ", "WINDOW "]
            .iter()
            .any(|k| sql.contains(k))
}

/// The lines of every published file next to `want` whose name starts with
/// its stem (`out/x.jsonl` -> `out/x*.jsonl`), sorted; Parquet as JSON Lines.
fn published_lines(dir: &Path, rel: &str) -> Vec<String> {
    let (file, parquet) = match rel.strip_suffix(".parquet.jsonl") {
        Some(pq) => (format!("{pq}.parquet"), true),
        None => (rel.to_string(), false),
    };
    let path = dir.join(&file);
    let parent = path.parent().unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let (stem, ext) = name.split_once('.').unwrap_or((name.as_str(), ""));
    let mut out = Vec::new();
    for f in crate::common::published(parent, stem) {
        if f.parent() != Some(parent) || !f.to_string_lossy().ends_with(ext) {
            continue;
        }
        let text = if parquet {
            parquet_to_jsonl(&f)
        } else {
            read_text(&f)
        };
        out.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_string));
    }
    out.sort();
    out
}

/// Restart mode (see the module docs): `Ok(false)` when the case has too
/// few epochs for the crash to fire.
fn check_restart(case: &Path) -> Result<bool, String> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("case");
    copy_dir(case, &dir);
    let args = [
        "run",
        "app.sql",
        "--set",
        "state.dir=state",
        "--set",
        "use_transactions=true",
    ];
    let env: Vec<(String, String)> = lines(&case.join("env"))
        .iter()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.into(), v.into())))
        .collect();
    let mut crashing = env.clone();
    crashing.push(("VELO_CRASH_AFTER_CHECKPOINT".into(), "1".into()));
    let first = run_in(&dir, &args, &crashing);
    let log = String::from_utf8_lossy(&first.stderr).into_owned();
    if first.status.success() {
        return Ok(false);
    }
    if !log.contains("aborting after the checkpoint") {
        return Err(format!("the crash run failed otherwise:\n{log}"));
    }
    let second = run_in(&dir, &args, &env);
    let log = String::from_utf8_lossy(&second.stderr).into_owned();
    if !second.status.success() || !log.contains("resuming after checkpoint") {
        return Err(format!("the resumed run:\n{log}"));
    }
    let expected = case.join("expected");
    for rel in crate::common::files_below(&expected) {
        let rel = rel.to_string_lossy().into_owned();
        let mut want: Vec<String> = read_text(&expected.join(&rel))
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        want.sort();
        // a CSV file per epoch repeats the header
        let mut got = published_lines(&dir, &rel);
        if rel.ends_with(".csv") && !want.is_empty() {
            let header = read_text(&expected.join(&rel))
                .lines()
                .next()
                .unwrap()
                .to_string();
            got.dedup_by(|a, b| a == b && *a == header);
        }
        if got != want {
            return Err(format!(
                "after a crash and a restart, {rel} differs\n--- want ---\n{}\n--- got ---\n{}\n--- log ---\n{log}",
                want.join("\n"),
                got.join("\n")
            ));
        }
    }
    Ok(true)
}

#[test]
fn golden_stateful_cases_give_the_same_output_across_a_crash() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && is_stateful(p))
        .collect();
    cases.sort();
    let mut failures = Vec::new();
    let mut crashed = 0;
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        match check_restart(case) {
            Ok(c) => {
                crashed += usize::from(c);
                eprintln!(
                    "golden restart {name} ... ok{}",
                    if c { "" } else { " (one epoch: no crash)" }
                );
            }
            Err(e) => failures.push(format!("=== {name}: {e}")),
        }
    }
    assert!(
        crashed >= 3,
        "{crashed} of {} stateful cases crashed and resumed",
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn golden_sql_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql");
    let filter = std::env::var("GOLDEN").ok();
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        match check_case(case) {
            Ok(()) => eprintln!("golden {name} ... ok"),
            Err(e) => {
                eprintln!("golden {name} ... FAILED");
                failures.push(format!("=== {name}: {e}"));
            }
        }
    }
    assert!(ran > 0, "no golden cases ran");
    assert!(
        failures.is_empty(),
        "{} of {ran} golden cases failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
