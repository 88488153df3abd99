//! `velo`: the Velostream command line.
//!
//! Thin wiring only: parse arguments, install logging, hand the SQL file to
//! the engine (`velo-engine`), print results and statistics.
//!
//! * `velo run app.sql [--config F] [--profile P] [--set name.key=value]`
//! * `velo validate app.sql` — parse and resolve everything, connect to nothing
//! * `velo explain app.sql` — sources, sinks, resolved config (secrets
//!   masked) and the DataFusion plans
//! * `velo server` — many applications behind a REST API and Prometheus
//!   metrics (`velo-server`)
//! * `velo deploy app.sql`, `velo jobs`, `velo status|stop|start|drop NAME`
//!   — the same against a running server
//! * `velo cluster scheduler|executor` — the processes of a Ballista
//!   cluster that `velo run --cluster df://HOST:PORT` runs bounded queries on

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use velo_engine::plan::{PlanOptions, resolve};
use velo_engine::runtime::{Purpose, explain_text, prepare_job};
use velo_engine::stats::Counters;
use velo_engine::{EngineError, Shutdown};

/// Arrow batches are allocated and freed at a high rate on every core:
/// mimalloc's per-thread heaps serve that with less locking and fewer
/// page faults than the system allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "velo",
    version,
    about = "Velostream: streaming SQL on Apache Arrow and DataFusion"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a SQL application until its input ends (or Ctrl-C).
    Run(RunArgs),
    /// Parse and resolve an application; report every error; connect to nothing.
    Validate(AppArgs),
    /// Show sources, sinks, resolved configuration and the query plans.
    Explain(AppArgs),
    /// Print the configuration reference (docs/configuration.md).
    ConfigDocs,
    /// Host many applications behind a REST API and Prometheus metrics.
    Server(ServerArgs),
    /// Deploy an application to a running server.
    Deploy(DeployArgs),
    /// List the jobs of a server.
    Jobs(ClientArgs),
    /// Show a job's status and figures.
    Status(JobArgs),
    /// Stop a job after it commits its current epoch.
    Stop(JobArgs),
    /// Start a stopped, finished or failed job again, from its checkpoint.
    Start(JobArgs),
    /// Stop and remove a job.
    Drop(DropArgs),
    /// Maintain a Delta table: compact its small files, or delete the
    /// files no recent version references.
    #[command(subcommand)]
    Delta(DeltaCmd),
    /// Maintain an Iceberg table: expire its old snapshots.
    #[command(subcommand)]
    Iceberg(IcebergCmd),
    /// Run the processes of an Apache DataFusion Ballista cluster, which
    /// `velo run --cluster df://HOST:PORT` runs bounded queries on.
    #[command(subcommand)]
    Cluster(ClusterCmd),
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// The scheduler: plans queries into stages and hands their tasks to
    /// the executors.
    Scheduler {
        /// Where it listens (velo run --cluster df://this).
        #[arg(long, default_value = "127.0.0.1:50050")]
        bind: std::net::SocketAddr,
    },
    /// An executor: registers with the scheduler and runs its tasks,
    /// reading the job's files itself.
    Executor {
        /// The scheduler's address.
        #[arg(long, default_value = "127.0.0.1:50050")]
        scheduler: std::net::SocketAddr,
        /// Where its Flight service (shuffle data) listens.
        #[arg(long, default_value = "127.0.0.1:50051")]
        bind: std::net::SocketAddr,
        /// Its gRPC port (tasks from the scheduler).
        #[arg(long, default_value_t = 50052)]
        grpc_port: u16,
        /// Tasks it runs at once (default: the cores).
        #[arg(long)]
        concurrent_tasks: Option<usize>,
        /// Where it keeps shuffle files (default: a temporary directory).
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum IcebergCmd {
    /// Remove the snapshots older than a period from the table's metadata,
    /// beyond the latest few (time travel reaches back that far; every
    /// commit reads the metadata, so a table that is never expired commits
    /// slower and slower).
    Expire {
        #[command(flatten)]
        at: IcebergTableArgs,
        /// Expire the snapshots older than this (e.g. 5d, 12h).
        #[arg(long, default_value = "5d")]
        older_than: String,
        /// Keep at least this many of the latest snapshots.
        #[arg(long, default_value_t = 10)]
        retain: usize,
    },
    /// Rewrite each partition's small files into files of the target size,
    /// in one replace snapshot (the same rows: readers that follow the
    /// table skip it).
    Compact {
        #[command(flatten)]
        at: IcebergTableArgs,
        /// The size of the files written; files under three quarters of it
        /// are small.
        #[arg(long, default_value = "128MB")]
        target_file_size: String,
        /// Compact a partition once it has this many small files.
        #[arg(long, default_value_t = 2)]
        min_files: usize,
    },
}

/// Which Iceberg table an `iceberg` command works on.
#[derive(clap::Args)]
struct IcebergTableArgs {
    /// The table, namespace.table.
    table: String,
    /// The catalog: a REST catalog's URL or sqlite:PATH.
    #[arg(long)]
    catalog_uri: String,
    /// A SQL catalog's warehouse (or a REST catalog's warehouse name).
    #[arg(long)]
    warehouse: Option<String>,
    /// A connector key (credential, catalog_name, endpoint, ...):
    /// --set key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

impl IcebergTableArgs {
    /// The table, its catalog and their connector keys, opened.
    async fn open(&self) -> Result<velo_iceberg::maintenance::Opened, Failure> {
        let mut keys = keys(&self.sets)?;
        keys.insert("catalog_uri".into(), self.catalog_uri.clone());
        if let Some(w) = &self.warehouse {
            keys.insert("warehouse".into(), w.clone());
        }
        velo_iceberg::maintenance::open_at(&self.table, &keys)
            .await
            .map_err(|e| Failure::user(e.to_string()))
    }
}

/// `--target-file-size`: a size of at least 1KB.
fn target_file_size(v: &str) -> Result<u64, Failure> {
    velo_config::keys::parse_bytes(v)
        .filter(|b| *b >= 1024)
        .ok_or_else(|| {
            Failure::user(format!(
                "--target-file-size {v}: write a size of at least 1KB, such as 128MB"
            ))
        })
}

#[derive(Subcommand)]
enum DeltaCmd {
    /// Rewrite each partition's small files into files of the target size,
    /// in one commit readers that follow the table skip (no data change).
    Optimize {
        /// The table: a directory or an object-store URL (s3://bucket/t).
        path: String,
        /// The size of the files written.
        #[arg(long, default_value = "128MB")]
        target_file_size: String,
        /// A connector key for the store: --set endpoint=http://... (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Delete the data files that no version of the retention period
    /// references (replaced by compaction, or left by aborted epochs).
    Vacuum {
        /// The table: a directory or an object-store URL (s3://bucket/t).
        path: String,
        /// Keep what versions of this period reference (e.g. 168h, 30m).
        #[arg(long, default_value = "168h")]
        retain: String,
        /// List the files without deleting them.
        #[arg(long)]
        dry_run: bool,
        /// Allow a period shorter than the table's own minimum
        /// (delta.deletedFileRetentionDuration): readers of older versions fail.
        #[arg(long)]
        force: bool,
        /// A connector key for the store: --set endpoint=http://... (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
}

#[derive(Args)]
struct ClientArgs {
    /// The server (else VELO_SERVER, else http://127.0.0.1:8080).
    #[arg(long)]
    server: Option<String>,
    /// A bearer token for the server (else VELO_TOKEN).
    #[arg(long)]
    token: Option<String>,
}

impl ClientArgs {
    fn client(&self) -> velo_server::client::Client {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        velo_server::client::Client {
            server: self
                .server
                .clone()
                .or_else(|| env("VELO_SERVER"))
                .unwrap_or_else(|| "http://127.0.0.1:8080".into()),
            token: self.token.clone().or_else(|| env("VELO_TOKEN")),
        }
    }
}

#[derive(Args)]
struct DeployArgs {
    /// The SQL application file.
    file: PathBuf,
    /// The application's name (default: its first job's).
    #[arg(long)]
    name: Option<String>,
    /// Profile of the server's global config.
    #[arg(long)]
    profile: Option<String>,
    /// Override a property: --set name.key=value (repeatable).
    #[arg(long = "set", value_name = "NAME.KEY=VALUE")]
    sets: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct JobArgs {
    /// The job's name.
    name: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct DropArgs {
    /// The job's name.
    name: String,
    /// Also remove the job's checkpoints.
    #[arg(long = "purge-state")]
    purge_state: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct ServerArgs {
    /// Global config file: profiles, and the `server:` section (limits).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address of the REST API, the metrics and the dashboard.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Address of the Arrow Flight SQL endpoint (ADBC, pyarrow.flight,
    /// JDBC), or `off`.
    #[arg(long, value_name = "ADDR|off", default_value = "127.0.0.1:50051", value_parser = flight_addr)]
    flight: FlightAddr,
    /// Where deployed applications and the jobs' checkpoints are kept.
    #[arg(long = "state-dir", value_name = "DIR", default_value = ".velo-server")]
    state_dir: PathBuf,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    app: AppArgs,
    /// Serve the jobs' Prometheus metrics on this address while they run
    /// (GET /metrics), e.g. 127.0.0.1:9464.
    #[arg(long = "metrics-addr", value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Args)]
struct AppArgs {
    /// The SQL application file.
    file: PathBuf,
    /// Global config file (else VELO_CONFIG_FILE, ./velo.yaml, ./configs/velo.yaml, ~/.velo/config.yaml, /etc/velo/config.yaml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Profile of the global config (else VELO_PROFILE, else active_profile).
    #[arg(long)]
    profile: Option<String>,
    /// Override a property: --set name.key=value (repeatable).
    #[arg(long = "set", value_name = "NAME.KEY=VALUE")]
    sets: Vec<String>,
    /// Checkpoint directory (the job key 'state.dir'): a path or s3://bucket/prefix.
    #[arg(long = "state-dir", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The most memory the state of all jobs may hold together (windows,
    /// groups, joins, row windows), e.g. 2GB; a job whose state would pass
    /// it fails its epoch saying so. Default: no limit.
    #[arg(long = "memory-limit", value_name = "SIZE")]
    memory_limit: Option<String>,
    /// Run the jobs' bounded queries on an Apache DataFusion Ballista
    /// cluster (the job key 'cluster'), e.g. df://127.0.0.1:50050.
    #[arg(long, value_name = "df://HOST:PORT")]
    cluster: Option<String>,
}

impl AppArgs {
    fn options(&self) -> Result<PlanOptions, String> {
        let sets = self
            .sets
            .iter()
            .map(|s| {
                s.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                    .ok_or_else(|| format!("--set '{s}' needs the form name.key=value"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut sets = sets;
        if let Some(d) = &self.state_dir {
            // a URL as written; a path relative to where velo runs, like
            // any command-line path
            let text = d.to_string_lossy().into_owned();
            let d = if text.contains("://") {
                text
            } else {
                std::path::absolute(d)
                    .unwrap_or_else(|_| d.clone())
                    .to_string_lossy()
                    .into_owned()
            };
            sets.push(("state.dir".into(), d));
        }
        if let Some(c) = &self.cluster {
            sets.push(("cluster".into(), c.clone()));
        }
        let engine = match &self.memory_limit {
            None => velostream::engine(),
            Some(m) => {
                let bytes = velo_config::keys::parse_bytes(m)
                    .filter(|b| *b > 0)
                    .ok_or_else(|| {
                        format!("--memory-limit '{m}' is not a size: write it as 512MB, 2GB or a number of bytes")
                    })?;
                velo_engine::Engine::with_memory_limit(
                    velostream::registry(),
                    usize::try_from(bytes).unwrap_or(usize::MAX),
                )
                .with_cluster(velostream::cluster())
            }
        };
        Ok(PlanOptions {
            engine,
            config: self.config.clone(),
            profile: self.profile.clone(),
            sets,
            vars: None,
            no_global: false,
        })
    }

    fn read(&self) -> Result<String, Failure> {
        velo_config::text::read_text(&self.file, "SQL", velo_config::text::MAX_TEXT_BYTES)
            .map_err(|e| Failure::from(EngineError::from(e)))
    }
}

/// How a command failed: the exit code of its error's kind (1 user,
/// 2 external, 3 internal) and what to tell the user.
struct Failure {
    code: u8,
    message: String,
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        Self {
            code: e.kind().exit_code(),
            message: e.to_string(),
        }
    }
}

impl Failure {
    /// A mistake in the command line or the application (exit code 1).
    fn user(message: String) -> Self {
        Self { code: 1, message }
    }
}

/// Standard error for log lines, with every secret masked
/// ([`velo_config::mask`]): the fmt layer writes each event through a
/// writer of its own, so each line is masked whole.
struct MaskedStderr;

/// One log event on its way to standard error.
struct MaskedLine(Vec<u8>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MaskedStderr {
    type Writer = MaskedLine;
    fn make_writer(&'a self) -> Self::Writer {
        MaskedLine(Vec::new())
    }
}

impl std::io::Write for MaskedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for MaskedLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let _ =
            std::io::Write::write_all(&mut std::io::stderr(), velo_config::mask(&text).as_bytes());
    }
}

/// Libraries whose info lines are about their own workings (delta-rs logs
/// every snapshot it builds): warnings only, unless the filter names them.
const QUIET: &[&str] = &[
    "datafusion",
    "sqlparser",
    "deltalake_core",
    "delta_kernel",
    "buoyant_kernel",
    "buoyant_kernel_engine",
    "iceberg",
    "iceberg_catalog_rest",
    "iceberg_catalog_sql",
    "sqlx",
];

fn init_logging() {
    let given = std::env::var("VELO_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let mut directives = given.clone();
    for lib in QUIET {
        if !given.contains(lib) {
            directives.push_str(&format!(",{lib}=warn"));
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(MaskedStderr)
        .with_target(false)
        // colour codes only for a person at a terminal, not in log files
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // deep plans and expressions evaluate recursively on the workers
        .thread_stack_size(8 << 20)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.cmd {
            Cmd::Run(a) => run(a).await,
            Cmd::Validate(a) => validate(a).await,
            Cmd::Explain(a) => explain(a).await,
            Cmd::Server(a) => server(a).await,
            Cmd::Deploy(a) => deploy(a).await,
            Cmd::Jobs(a) => print(a.client().jobs().await),
            Cmd::Status(a) => print(a.client.client().status(&a.name).await),
            Cmd::Stop(a) => print(a.client.client().stop(&a.name).await),
            Cmd::Start(a) => print(a.client.client().start(&a.name).await),
            Cmd::Drop(a) => print(a.client.client().drop_job(&a.name, a.purge_state).await),
            Cmd::Delta(c) => delta(c).await,
            Cmd::Iceberg(c) => iceberg(c).await,
            Cmd::Cluster(c) => cluster(c).await,
            Cmd::ConfigDocs => {
                print!(
                    "{}",
                    velo_engine::docs::config_reference(&velostream::registry())
                );
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("Error: {}", velo_config::mask(&f.message));
            ExitCode::from(f.code)
        }
    }
}

/// `--set key=value` options as connector keys.
fn keys(sets: &[String]) -> Result<std::collections::BTreeMap<String, String>, Failure> {
    sets.iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .ok_or_else(|| Failure::user(format!("--set {s}: write it as key=value")))
        })
        .collect()
}

/// `velo iceberg expire|compact`.
/// `velo cluster scheduler|executor`: a Ballista process until stopped.
async fn cluster(c: ClusterCmd) -> Result<(), Failure> {
    let r = match c {
        ClusterCmd::Scheduler { bind } => velo_cluster::scheduler(bind).await,
        ClusterCmd::Executor {
            scheduler,
            bind,
            grpc_port,
            concurrent_tasks,
            work_dir,
        } => {
            velo_cluster::executor(velo_cluster::ExecutorOptions {
                scheduler,
                bind,
                grpc_port,
                concurrent_tasks: concurrent_tasks
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
                work_dir: work_dir.map(|d| d.to_string_lossy().into_owned()),
            })
            .await
        }
    };
    r.map_err(|e| Failure::user(format!("{e:#}")))
}

async fn iceberg(c: IcebergCmd) -> Result<(), Failure> {
    let failed = |e: velo_connectors::ConnectorError| Failure::user(e.to_string());
    match c {
        IcebergCmd::Expire {
            at,
            older_than,
            retain,
        } => {
            let age = velo_config::keys::parse_duration(&older_than).ok_or_else(|| {
                Failure::user(format!(
                    "--older-than {older_than}: write a duration such as 5d"
                ))
            })?;
            let o = at.open().await?;
            let (_, expired) =
                velo_iceberg::maintenance::expire(o.catalog.as_ref(), &o.table, age, retain)
                    .await
                    .map_err(failed)?;
            println!(
                "expired {} snapshots of {} and deleted {} files only they referenced",
                expired.snapshots, at.table, expired.files
            );
            Ok(())
        }
        IcebergCmd::Compact {
            at,
            target_file_size: size,
            min_files,
        } => {
            let target = target_file_size(&size)?;
            let o = at.open().await?;
            let (_, done) = velo_iceberg::maintenance::compact(
                &o.at,
                o.catalog.as_ref(),
                &o.table,
                target,
                min_files,
            )
            .await
            .map_err(failed)?;
            println!(
                "compacted {} small files of {} into {}",
                done.files_in, at.table, done.files_out
            );
            Ok(())
        }
    }
}

/// `velo delta optimize|vacuum`.
async fn delta(c: DeltaCmd) -> Result<(), Failure> {
    let failed = |e: velo_connectors::ConnectorError| Failure::user(e.to_string());
    match c {
        DeltaCmd::Optimize {
            path,
            target_file_size,
            sets,
        } => {
            let target = self::target_file_size(&target_file_size)?;
            let mut table = velo_delta::maintenance::open_at(&path, &keys(&sets)?)
                .await
                .map_err(failed)?;
            let done = velo_delta::maintenance::optimize(&mut table, target)
                .await
                .map_err(failed)?;
            match done.version {
                Some(v) => println!(
                    "compacted {} files into {} (version {v})",
                    done.removed, done.added
                ),
                None => {
                    println!("nothing to compact: no partition has two files under the target size")
                }
            }
            Ok(())
        }
        DeltaCmd::Vacuum {
            path,
            retain,
            dry_run,
            force,
            sets,
        } => {
            let period = velo_config::keys::parse_duration(&retain)
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .ok_or_else(|| {
                    Failure::user(format!("--retain {retain}: write a duration such as 168h"))
                })?;
            let table = velo_delta::maintenance::open_at(&path, &keys(&sets)?)
                .await
                .map_err(failed)?;
            let files = velo_delta::maintenance::vacuum(table, period, dry_run, force)
                .await
                .map_err(failed)?;
            for f in &files {
                println!("{f}");
            }
            eprintln!(
                "{} {} files",
                if dry_run { "would delete" } else { "deleted" },
                files.len()
            );
            Ok(())
        }
    }
}

fn plan(a: &AppArgs) -> Result<velo_engine::AppPlan, Failure> {
    let sql = a.read()?;
    Ok(resolve(
        &sql,
        &a.file,
        &a.options().map_err(Failure::user)?,
    )?)
}

/// SIGINT (Ctrl-C), SIGTERM (what container platforms send) and SIGHUP
/// stop the jobs after they commit their current epoch; a second signal
/// aborts at once, without committing (the epoch is read again on restart).
fn stop_on_signals(shutdown: Shutdown) {
    tokio::spawn(async move {
        let mut signals = match Signals::new() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    "cannot watch for stop signals: {e}; Ctrl-C will kill the job at once"
                );
                return;
            }
        };
        let (name, _) = signals.next().await;
        eprintln!(
            "\n{name} received: committing the current epoch, then stopping (a second signal aborts at once)"
        );
        shutdown.trigger();
        let (name, code) = signals.next().await;
        eprintln!(
            "{name} received again: aborting now; the current epoch is not committed and will be read again on restart"
        );
        std::process::exit(code);
    });
}

/// `--flight`: an address, or none (`off`).
#[derive(Debug, Clone, Copy)]
struct FlightAddr(Option<std::net::SocketAddr>);

fn flight_addr(s: &str) -> Result<FlightAddr, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(FlightAddr(None));
    }
    s.parse()
        .map(|a| FlightAddr(Some(a)))
        .map_err(|e| format!("{e}: write an address like 127.0.0.1:50051, or off"))
}

async fn server(a: ServerArgs) -> Result<(), Failure> {
    let opts = velo_server::ServerOptions {
        config: a.config,
        listen: a.listen,
        flight: a.flight.0,
        state_dir: a.state_dir,
        cluster: Some(velostream::cluster()),
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let Ok(mut signals) = Signals::new() else {
            return;
        };
        let (name, _) = signals.next().await;
        eprintln!(
            "\n{name} received: the jobs commit their current epoch, then the server stops (a second signal aborts at once)"
        );
        let _ = tx.send(());
        let (_, code) = signals.next().await;
        std::process::exit(code);
    });
    let stop = async move {
        let _ = rx.await;
    };
    velo_server::serve(velostream::registry(), opts, stop)
        .await
        .map_err(|e| Failure {
            code: e.kind().exit_code(),
            message: e.to_string(),
        })
}

/// Prints what a server command answered.
fn print(r: Result<String, velo_server::client::ClientError>) -> Result<(), Failure> {
    match r {
        Ok(text) => {
            print!("{text}");
            Ok(())
        }
        Err(e) => Err(Failure {
            code: e.code,
            message: e.message,
        }),
    }
}

async fn deploy(a: DeployArgs) -> Result<(), Failure> {
    let sql = velo_config::text::read_text(&a.file, "SQL", velo_config::text::MAX_TEXT_BYTES)
        .map_err(|e| Failure::from(EngineError::from(e)))?;
    let sets = a
        .sets
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .ok_or_else(|| Failure::user(format!("--set '{s}' needs the form name.key=value")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    print(
        a.client
            .client()
            .deploy(&a.file, sql, a.name, a.profile, sets)
            .await,
    )
}

/// The stop signals velo handles.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal: its name and the exit code of a process it ends
    /// (128 + its number).
    async fn next(&mut self) -> (&'static str, i32) {
        tokio::select! {
            _ = self.int.recv() => ("SIGINT", 130),
            _ = self.term.recv() => ("SIGTERM", 143),
            _ = self.hup.recv() => ("SIGHUP", 129),
        }
    }
}

/// Phase of `run`: with `--metrics-addr`, the metrics endpoint is bound
/// (a clear error before any job starts if it cannot be) and told the
/// jobs once they run.
async fn metrics_endpoint(
    addr: Option<std::net::SocketAddr>,
    app: &velo_engine::AppPlan,
) -> Result<Option<velo_engine::runtime::Started>, Failure> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let names: std::collections::BTreeMap<String, (Vec<String>, Vec<String>)> = app
        .jobs
        .iter()
        .map(|j| {
            let names =
                |c: &[velo_config::ConnectorConfig]| c.iter().map(|c| c.name.clone()).collect();
            (j.name.clone(), (names(&j.sources), names(&j.sinks)))
        })
        .collect();
    let monitors: Arc<std::sync::OnceLock<Vec<velo_engine::runtime::JobMonitor>>> = Arc::default();
    let engine = app.jobs.first().map(|j| j.engine.clone());
    let seen = monitors.clone();
    let snapshots: velo_server::metrics::Snapshots = Arc::new(move || {
        let views = seen
            .get()
            .into_iter()
            .flatten()
            .map(|m| {
                let (sources, sinks) = names.get(m.name()).cloned().unwrap_or_default();
                velo_server::jobs::JobView::of_monitor(m, sources, sinks)
            })
            .collect();
        velo_server::metrics::Snapshot {
            views,
            pool_reserved: engine.as_ref().map_or(0, |e| e.memory_reserved()),
            pool_limit_mb: None,
        }
    });
    let serve = velo_server::metrics::metrics_server(addr, snapshots)
        .await
        .map_err(|e| Failure::user(e.to_string()))?;
    tokio::spawn(serve);
    eprintln!("metrics on http://{addr}/metrics");
    Ok(Some(Box::new(move |m| {
        let _ = monitors.set(m);
    })))
}

async fn run(r: RunArgs) -> Result<(), Failure> {
    let a = r.app;
    let app = plan(&a)?;
    let on_start = metrics_endpoint(r.metrics_addr, &app).await?;
    let shutdown = Shutdown::default();
    stop_on_signals(shutdown.clone());
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let last_log = Arc::new(AtomicU64::new(0));
    let progress: velo_engine::runtime::Progress = Arc::new(move |job: &str, c: &Counters| {
        let secs = started.elapsed().as_secs_f64();
        let (i, o, f) = (
            Counters::get(&c.records_in),
            Counters::get(&c.records_out),
            Counters::get(&c.records_failed),
        );
        let rate = if secs > 0.0 { i as f64 / secs } else { 0.0 };
        if tty {
            eprint!(
                "\r\x1b[2K[{job}] in {i} | out {o} | failed {f} | epochs {} | {rate:.0} rows/s",
                Counters::get(&c.epochs)
            );
        } else if started.elapsed().as_secs() >= last_log.load(Ordering::Relaxed) + 10 {
            last_log.store(started.elapsed().as_secs(), Ordering::Relaxed);
            tracing::info!("[{job}] progress: {i} in, {o} out, {f} failed, {rate:.0} rows/s");
        }
    });
    let stats =
        velo_engine::runtime::run_app_watched(&app, shutdown, Some(progress), on_start).await;
    if tty {
        eprintln!();
    }
    let stats = stats?;
    for s in &stats {
        eprintln!("{}", velo_config::mask(&s.summary()));
    }
    // exit 0 only when every record read was written or routed
    let losses: Vec<String> = stats
        .iter()
        .flat_map(|s| {
            s.losses()
                .into_iter()
                .map(move |l| format!("job '{}': {l}", s.job))
        })
        .collect();
    if losses.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            code: velo_config::ErrorKind::External.exit_code(),
            message: losses.join("\n"),
        })
    }
}

async fn prepare_all(
    app: &velo_engine::AppPlan,
) -> Result<Vec<velo_engine::runtime::PreparedJob>, EngineError> {
    let sd = Shutdown::default();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for j in &app.jobs {
        match prepare_job(j, &sd, Purpose::Check).await {
            Ok(p) => out.push(p),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(EngineError::Many(errors))
    }
}

async fn validate(a: AppArgs) -> Result<(), Failure> {
    // every error: of the jobs that do not resolve, and of planning the others
    let sql = a.read()?;
    let (mut app, mut errors) =
        velo_engine::plan::resolve_all(&sql, &a.file, &a.options().map_err(Failure::user)?)?;
    // connect to nothing: a source whose schema lives in a remote system is
    // reported, and its query left unchecked
    velo_engine::plan::check_offline(&mut app, &mut errors).await;
    if !errors.is_empty() {
        return Err(EngineError::Many(errors).into());
    }
    println!(
        "{}: OK ({} job(s), {} warning(s))",
        a.file.display(),
        app.jobs.len(),
        app.warnings.len()
    );
    for w in &app.warnings {
        println!("  warning: {}", velo_config::mask(w));
    }
    Ok(())
}

async fn explain(a: AppArgs) -> Result<(), Failure> {
    let app = plan(&a)?;
    if let Some(p) = &app.profile {
        println!("Profile: {p}");
    }
    for p in prepare_all(&app).await? {
        println!("{}", velo_config::mask(&explain_text(&p)));
    }
    for w in &app.warnings {
        println!("warning: {}", velo_config::mask(w));
    }
    Ok(())
}
