//! # velo-server: the job server (`velo server`)
//!
//! Hosts many SQL applications in one process, on one engine (one
//! connector registry, one memory pool): each job runs through the
//! engine's job handle ([`velo_engine::runtime::JobHandle`]) under a
//! supervisor of its own ([`jobs`]). Above the engine, beside the `velo`
//! command line:
//!
//! - [`api`]: the REST API (deploy, list, status, metrics, explain, stop,
//!   start, drop, health, readiness) and its OpenAPI document;
//! - [`metrics`]: Prometheus metrics of every job and of the process;
//! - [`store`]: the deployed applications and the jobs' checkpoints under
//!   the state directory, so that a restarted server (also after
//!   `kill -9`) resumes every job that was running from its checkpoint;
//! - [`config`]: the listen address, state directory and the limits;
//! - [`client`]: `velo deploy`, `velo jobs`, ... against a running server;
//! - [`error`]: the crate's one error enum, each error with its kind.
//!
//! The binary hands [`serve`] its connector registry; this crate names no
//! connector.

pub mod api;
pub mod client;
pub mod config;
pub mod error;
pub mod jobs;
pub mod metrics;
pub mod store;

use std::collections::BTreeMap;
use std::time::Duration;

use velo_config::VarContext;
use velo_config::global::Discovery;
use velo_connectors::registry::Registry;
use velo_engine::Engine;

pub use config::{Limits, ServerOptions};
pub use error::{Result, ServerError};
pub use jobs::Jobs;

/// How long the jobs get to commit their epoch when the server stops.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(60);

/// Runs the server until `stop` resolves: jobs restored from the state
/// directory, the REST API and metrics on `opts.listen`; then every job
/// commits its epoch and stops (and starts again with the next server).
pub async fn serve(
    registry: Registry,
    opts: ServerOptions,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let jobs = open(registry, &opts)?;
    let listener = std::net::TcpListener::bind(opts.listen).map_err(|e| {
        ServerError::Io(format!(
            "cannot listen on {}: {e}; pass another address with --listen",
            opts.listen
        ))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServerError::Io(e.to_string()))?;
    tracing::info!(
        "velo server listening on http://{addr} (state: {})",
        opts.state_dir.display()
    );
    answer(listener, api::router(jobs.clone()), stop).await?;
    tracing::info!("stopping: every job commits its current epoch");
    jobs.shutdown(SHUTDOWN_WAIT).await;
    Ok(())
}

/// Serves `router` on `listener` until `stop`, on a thread and runtime of
/// its own: jobs that keep every core of the job runtime busy do not slow
/// the API, the metrics or the dashboard down.
async fn answer(
    listener: std::net::TcpListener,
    router: axum::Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (done, finished) = tokio::sync::oneshot::channel::<std::result::Result<(), String>>();
    std::thread::Builder::new()
        .name("velo-api".into())
        .spawn(move || {
            let served = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the API's runtime: {e}"))
                .and_then(|rt| {
                    rt.block_on(async move {
                        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
                        let listener = tokio::net::TcpListener::from_std(listener)
                            .map_err(|e| e.to_string())?;
                        axum::serve(listener, router)
                            .with_graceful_shutdown(stop)
                            .await
                            .map_err(|e| format!("the server failed: {e}"))
                    })
                });
            let _ = done.send(served);
        })
        .map_err(|e| ServerError::Io(format!("cannot start the API's thread: {e}")))?;
    finished
        .await
        .map_err(|_| ServerError::Io("the API's thread ended without a word".into()))?
        .map_err(ServerError::Io)
}

/// Phase: the server's settings, engine and state, and the jobs it hosted
/// before, started again.
fn open(registry: Registry, opts: &ServerOptions) -> Result<Jobs> {
    let global = Discovery::from_process(opts.config.clone(), None)
        .load()
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let limits = Limits::resolve(&env, &global)?;
    let engine = match limits.max_memory_mb {
        Some(mb) => Engine::with_memory_limit(
            registry,
            usize::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX),
        ),
        None => Engine::new(registry),
    };
    let store = store::Store::open(&opts.state_dir)?;
    Ok(Jobs::open(
        engine,
        limits,
        store,
        opts.config.clone(),
        VarContext::from_env(),
    ))
}
