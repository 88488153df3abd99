//! The fuzz corpus (`fuzz/corpus/<target>/`) and every input fuzzing found
//! a defect with (`fuzz/regressions/<target>/`), replayed through the same
//! entry points as `cargo fuzz` runs them: each must be handled without a
//! panic, a stack overflow or a hang. `fuzz/README.md` says how to fuzz.

use std::path::Path;

/// A fuzz target's entry point.
type Entry = fn(&[u8]);

/// The fuzz targets and their entry points.
const TARGETS: &[(&str, Entry)] = &[
    ("sql", sql),
    ("config", velo_config::fuzzing::config),
    ("lines", velo_connectors::fuzzing::lines),
    ("kafka_values", velo_kafka::fuzzing::values),
    ("checkpoint", velo_engine::fuzzing::checkpoint),
];

/// The `sql` target with every connector of the build, as `fuzz/` runs it.
fn sql(data: &[u8]) {
    static ENGINE: std::sync::LazyLock<velo_engine::Engine> =
        std::sync::LazyLock::new(velostream::engine);
    velo_engine::fuzzing::app_with(data, &ENGINE)
}

#[test]
fn fuzz_corpus_and_found_defects_replay_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (target, run) in TARGETS {
        let mut inputs = 0;
        for kind in ["corpus", "regressions"] {
            let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
                continue;
            };
            let mut files: Vec<_> = dir.flatten().map(|e| e.path()).collect();
            files.sort();
            for f in files {
                let data = std::fs::read(&f).unwrap();
                // a panic names the input that caused it
                let outcome = std::panic::catch_unwind(|| run(&data));
                assert!(outcome.is_ok(), "{target}: {} panicked", f.display());
                inputs += 1;
            }
        }
        assert!(inputs > 0, "{target}: no corpus");
    }
}
