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
