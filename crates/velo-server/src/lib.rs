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
//! - [`flight`]: the Arrow Flight SQL endpoint (deploy, manage and query
//!   jobs from ADBC, `pyarrow.flight`, JDBC);
//! - [`auth`]: bearer tokens and basic users for both, TLS through rustls;
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
pub mod auth;
pub mod client;
pub mod config;
pub mod error;
pub mod flight;
pub mod jobs;
pub mod metrics;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use velo_config::VarContext;
use velo_config::global::Discovery;
use velo_connectors::registry::Registry;
use velo_engine::Engine;

pub use config::{Limits, ServerOptions, Tls};
pub use error::{Result, ServerError};
pub use jobs::Jobs;

/// How long the jobs get to commit their epoch when the server stops.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(60);

/// Runs the server until `stop` resolves: jobs restored from the state
/// directory, the REST API and metrics on `opts.listen`, Flight SQL on
/// `opts.flight`; then every job commits its epoch and stops (and starts
/// again with the next server).
pub async fn serve(
    registry: Registry,
    opts: ServerOptions,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (jobs, security) = open(registry, &opts)?;
    let rest = bind(opts.listen, "--listen")?;
    let flight = opts.flight.map(|a| bind(a, "--flight")).transpose()?;
    let (stopped, _) = tokio::sync::watch::channel(false);
    let stopping = {
        let stopped = stopped.clone();
        tokio::spawn(async move {
            stop.await;
            stopped.send_replace(true);
        })
    };
    let until_stopped = || {
        let mut rx = stopped.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let scheme = if security.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        "velo server listening on {scheme}://{} (state: {}; authentication: {})",
        local(&rest)?,
        opts.state_dir.display(),
        if security.auth.is_some() { "on" } else { "off" }
    );
    let flight_task = match flight {
        Some(l) => {
            let addr = local(&l)?;
            l.set_nonblocking(true)
                .map_err(|e| ServerError::Io(e.to_string()))?;
            let l =
                tokio::net::TcpListener::from_std(l).map_err(|e| ServerError::Io(e.to_string()))?;
            tracing::info!(
                "Flight SQL on {}",
                flight::describe(addr, security.tls.is_some())
            );
            let service = flight::FlightSql::new(jobs.clone(), security.auth.clone());
            Some(tokio::spawn(flight::serve(
                service,
                l,
                security.tls.clone(),
                until_stopped(),
            )))
        }
        None => None,
    };
    let router = api::router(jobs.clone(), security.auth.clone());
    let served = answer(rest, router, security.tls.clone(), until_stopped()).await;
    stopping.abort();
    stopped.send_replace(true);
    if let Some(t) = flight_task {
        match t.await {
            Ok(Err(e)) => tracing::error!("{e}"),
            Err(e) => tracing::error!("the Flight SQL endpoint ended: {e}"),
            Ok(Ok(())) => {}
        }
    }
    served?;
    tracing::info!("stopping: every job commits its current epoch");
    jobs.shutdown(SHUTDOWN_WAIT).await;
    Ok(())
}

/// Who may call, and over what.
struct Security {
    auth: Option<Arc<auth::Auth>>,
    tls: Option<Tls>,
}

fn bind(addr: std::net::SocketAddr, flag: &str) -> Result<std::net::TcpListener> {
    std::net::TcpListener::bind(addr).map_err(|e| {
        ServerError::Io(format!(
            "cannot listen on {addr}: {e}; pass another address with {flag}"
        ))
    })
}

fn local(l: &std::net::TcpListener) -> Result<std::net::SocketAddr> {
    l.local_addr().map_err(|e| ServerError::Io(e.to_string()))
}

/// Serves `router` on `listener` (over TLS with `tls`) until `stop`, on a
/// thread and runtime of its own: jobs that keep every core of the job
/// runtime busy do not slow the API, the metrics or the dashboard down.
async fn answer(
    listener: std::net::TcpListener,
    router: axum::Router,
    tls: Option<Tls>,
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
                .and_then(|rt| rt.block_on(serve_api(listener, router, tls, stop)));
            let _ = done.send(served);
        })
        .map_err(|e| ServerError::Io(format!("cannot start the API's thread: {e}")))?;
    finished
        .await
        .map_err(|_| ServerError::Io("the API's thread ended without a word".into()))?
        .map_err(ServerError::Io)
}

async fn serve_api(
    listener: std::net::TcpListener,
    router: axum::Router,
    tls: Option<Tls>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::result::Result<(), String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let Some(tls) = tls else {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        return axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
            .map_err(|e| format!("the server failed: {e}"));
    };
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(tls.cert, tls.key)
        .await
        .map_err(|e| format!("server.tls: the certificate or key cannot be used: {e}"))?;
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        stop.await;
        h.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    axum_server::from_tcp_rustls(listener, config)
        .map_err(|e| e.to_string())?
        .handle(handle)
        .serve(router.into_make_service())
        .await
        .map_err(|e| format!("the server failed: {e}"))
}

/// Phase: the server's settings, engine and state, and the jobs it hosted
/// before, started again.
fn open(registry: Registry, opts: &ServerOptions) -> Result<(Jobs, Security)> {
    // one crypto provider for rustls in the process (REST and Flight)
    let _ = rustls::crypto::ring::default_provider().install_default();
    let global = Discovery::from_process(opts.config.clone(), None)
        .load()
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let security = Security {
        auth: auth::Auth::from_config(&global)?.map(Arc::new),
        tls: Tls::from_config(&global)?,
    };
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let limits = Limits::resolve(&env, &global)?;
    let engine = match limits.max_memory_mb {
        Some(mb) => Engine::with_memory_limit(
            registry,
            usize::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX),
        ),
        None => Engine::new(registry),
    };
    let engine = match &opts.cluster {
        Some(planner) => engine.with_cluster(planner.clone()),
        None => engine,
    };
    let store = store::Store::open(&opts.state_dir)?;
    let jobs = Jobs::open(
        engine,
        limits,
        store,
        opts.config.clone(),
        VarContext::from_env(),
    );
    Ok((jobs, security))
}
