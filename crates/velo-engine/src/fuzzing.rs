//! Fuzzing entry points of the SQL front end with planning, and of the
//! checkpoint reader (`fuzz/`, and the regression test that replays its
//! corpus). Any input may be refused with an error; none may panic, hang,
//! abort, or make a restart touch a file outside a sink's own directory.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use velo_config::VarContext;

use crate::plan::{PlanOptions, resolve};
use crate::runtime::{Purpose, Shutdown, prepare_job};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the fuzz target")
});

/// [`app_with`] the built-in connectors.
pub fn app(data: &[u8]) {
    app_with(data, &crate::Engine::default())
}

/// An application: parsed and resolved with `engine`'s connectors; its jobs
/// planned by DataFusion with the streaming rewrites when they read only
/// generators (nothing on the machine or the network).
pub fn app_with(data: &[u8], engine: &crate::Engine) {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let opts = PlanOptions {
        no_global: true,
        vars: Some(VarContext::with_env(BTreeMap::from([(
            "A".to_string(),
            "1".to_string(),
        )]))),
        engine: engine.clone(),
        ..Default::default()
    };
    let Ok(plan) = resolve(sql, &dir.path().join("app.sql"), &opts) else {
        return;
    };
    let generators_only = plan.jobs.iter().all(|j| {
        j.sources
            .iter()
            .all(|s| s.kind == "datagen" || s.kind == "generator" || s.kind == "nexmark")
    });
    if generators_only {
        RUNTIME.block_on(async {
            for j in &plan.jobs {
                let _ = prepare_job(j, &Shutdown::default(), Purpose::Check).await;
            }
        });
    }
}

/// A state directory: the first two bytes are the length of
/// `checkpoint.json`, the rest an operator state file. A restart reads the
/// checkpoint and the state it names, and a file sink publishes what the
/// checkpoint says it committed, only if that is the sink's own.
pub fn checkpoint(data: &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let n = (u16::from_le_bytes(*len) as usize).min(rest.len());
    let (json, state) = rest.split_at(n);
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let job_dir = dir.path().join("state/job");
    if std::fs::create_dir_all(&job_dir).is_err()
        || std::fs::write(job_dir.join("checkpoint.json"), json).is_err()
        || std::fs::write(job_dir.join("window-0-epoch-1.arrow"), state).is_err()
    {
        return;
    }
    let Ok(store) = crate::checkpoint::StateStore::open(
        "state",
        dir.path(),
        "job",
        &velo_connectors::ConnectorContext::default(),
    ) else {
        return;
    };
    RUNTIME.block_on(async {
        let _ = store
            .load_operator_state(&["window-0-epoch-1.arrow".to_string()])
            .await;
        let Ok(Some(cp)) = store.load("job").await else {
            return;
        };
        let _ = store.load_operator_state(&cp.operators).await;
        if let Some(token) = cp.sinks.get("out") {
            let cfg = velo_config::ConnectorConfig {
                name: "out".into(),
                role: velo_config::Role::Sink,
                kind: "file".into(),
                props: BTreeMap::from([(
                    "path".to_string(),
                    dir.path()
                        .join("out/x.jsonl")
                        .to_string_lossy()
                        .into_owned(),
                )]),
                origin: velo_config::Origin::Named,
                base_dir: dir.path().to_path_buf(),
                job: "job".into(),
            };
            let engine = crate::Engine::default();
            let created = engine
                .registry()
                .create_sink(&cfg, &engine.connector_context(false))
                .await;
            if let Ok(mut sink) = created {
                let _ = sink.recover(token);
            }
        }
    });
}
