//! # velo-cluster: Velostream past one machine, on Apache DataFusion Ballista
//!
//! Where it sits: beside the engine, assembled by the binary. A job with
//! the `cluster` key (`velo run --cluster df://host:50050`) is a bounded
//! batch query over files; the engine asks [`Ballista`] (its
//! [`ClusterPlanner`]) for a session of the cluster with the job's sources
//! registered as DataFusion listing tables (a Delta or Iceberg snapshot as
//! the URLs of its data files; a partitioned Delta snapshot as velo's
//! table of its files with their partition values, which [`VeloCodec`]
//! carries to the scheduler), and plans the query there. The
//! Ballista scheduler splits the plan into stages, the executors read the
//! files themselves and exchange shuffles between them, and the final
//! stage's batches stream back into the `velo` process, whose sinks write
//! and commit them as after any epoch (so exactly-once sinks stay so).
//!
//! The scheduler and executor processes are `velo cluster scheduler` and
//! `velo cluster executor` ([`scheduler`], [`executor`]), built from the
//! `ballista-scheduler` and `ballista-executor` crates: nothing else needs
//! installing to start a cluster. They reach object stores (`s3://`,
//! `gs://`, `az://`) with their own credentials ([`EnvStores`]: the
//! standard `AWS_*`, `GOOGLE_*`, `AZURE_*` environment of each process, as
//! Spark or Flink workers do): a job's keys stay in the `velo` process that
//! submits it and are never sent over the cluster's gRPC, which has no
//! authentication or TLS.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use ballista_core::execution_plans::DistributedQueryExec;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{GetJobMetricsParams, GetJobMetricsResult, operator_metric};
use ballista_core::utils::{GrpcClientConfig, create_grpc_client_connection};
use datafusion::execution::SessionStateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::protobuf::LogicalPlanNode;
use velo_connectors::ListingSpec;
use velo_engine::plan::ClusterPlanner;
use velo_engine::plan::files::FileListTable;

/// Plans jobs on a Ballista cluster.
#[derive(Debug, Default)]
pub struct Ballista;

#[async_trait::async_trait]
impl ClusterPlanner for Ballista {
    async fn session(
        &self,
        url: &str,
        tables: &[(String, ListingSpec)],
    ) -> Result<SessionContext, String> {
        let addr = scheduler_address(url)?;
        reachable(url, addr).await?;
        let state = SessionStateBuilder::new()
            .with_config(
                SessionConfig::new_with_ballista()
                    .with_ballista_logical_extension_codec(Arc::new(VeloCodec::default())),
            )
            .with_default_features()
            .build();
        let ctx = SessionContext::remote_with_state(url, state)
            .await
            .map_err(|e| e.to_string())?;
        for (name, spec) in tables {
            let table = velo_engine::plan::listing::cluster_table(spec)
                .map_err(|e| format!("source '{name}': {e}"))?;
            ctx.register_table(name.as_str(), table)
                .map_err(|e| e.to_string())?;
        }
        Ok(ctx)
    }

    async fn scanned(
        &self,
        url: &str,
        plan: &Arc<dyn ExecutionPlan>,
    ) -> Result<Vec<(String, u64)>, String> {
        let Some(job) = job_of(plan) else {
            return Ok(Vec::new());
        };
        let metrics = job_metrics(url, &job).await?;
        Ok(file_scans(&metrics))
    }
}

/// The id of the cluster job the executed `plan` ran as (its
/// `DistributedQueryExec`), if it ran.
fn job_of(plan: &Arc<dyn ExecutionPlan>) -> Option<String> {
    let mut stack = vec![plan.clone()];
    while let Some(p) = stack.pop() {
        if let Some(q) = p.downcast_ref::<DistributedQueryExec<LogicalPlanNode>>() {
            return q.job_id().map(|j| j.to_string());
        }
        stack.extend(p.children().into_iter().cloned());
    }
    None
}

/// The scheduler's record of `job`: each finished stage's operators with
/// the metrics the executors reported.
async fn job_metrics(url: &str, job: &str) -> Result<GetJobMetricsResult, String> {
    let addr = scheduler_address(url)?;
    let channel =
        create_grpc_client_connection(format!("http://{addr}"), &GrpcClientConfig::default())
            .await
            .map_err(|e| format!("cannot reach the scheduler: {e}"))?;
    SchedulerGrpcClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .get_job_metrics(GetJobMetricsParams {
            job_id: job.to_string(),
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|e| {
            format!(
                "the scheduler did not give job {job}'s metrics: {}",
                e.message()
            )
        })
}

/// The file scans among a job's operators (leaves that read files, not
/// shuffles): each one's first file and the rows it produced over all
/// its tasks.
fn file_scans(metrics: &GetJobMetricsResult) -> Vec<(String, u64)> {
    let mut scans = Vec::new();
    for stage in &metrics.stages {
        let ops = &stage.operators;
        for (i, op) in ops.iter().enumerate() {
            // operators come depth-first: a leaf is followed by no child
            let leaf = ops.get(i + 1).is_none_or(|next| next.depth <= op.depth);
            if !leaf || op.operator_type != "DataSourceExec" {
                continue;
            }
            let Some(file) = first_file(&op.operator_desc) else {
                continue;
            };
            let rows = op
                .metrics
                .iter()
                .filter_map(|m| match m.metric {
                    Some(operator_metric::Metric::OutputRows(n)) => Some(n),
                    _ => None,
                })
                .sum();
            scans.push((file, rows));
        }
    }
    scans
}

/// The first file a `DataSourceExec` names in its description
/// (`DataSourceExec: file_groups={2 groups: [[a/b.parquet:0..100, ...]]}, ...`),
/// without its byte range.
fn first_file(desc: &str) -> Option<String> {
    let groups = &desc[desc.find("file_groups={")?..];
    let first = &groups[groups.find("[[")? + 2..];
    let end = first.find([',', ']']).unwrap_or(first.len());
    let file = &first[..end];
    let file = match file.rsplit_once(':') {
        Some((path, range))
            if range.contains("..") && range.chars().all(|c| c.is_ascii_digit() || c == '.') =>
        {
            path
        }
        _ => file,
    };
    (!file.is_empty()).then(|| file.to_string())
}

/// `df://host:port` as a socket address.
fn scheduler_address(url: &str) -> Result<SocketAddr, String> {
    let hostport = url
        .strip_prefix("df://")
        .map(|r| r.trim_end_matches('/'))
        .filter(|r| !r.is_empty())
        .ok_or_else(|| format!("'{url}' is not a Ballista scheduler: write df://host:port"))?;
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:50050")
    };
    hostport
        .to_socket_addrs()
        .map_err(|e| format!("'{url}': {e}"))?
        .next()
        .ok_or_else(|| format!("'{url}' names no address"))
}

/// Fails at once, saying what to do, when nothing listens at the
/// scheduler's address (Ballista's client would only fail at execution).
async fn reachable(url: &str, addr: SocketAddr) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "cannot reach the Ballista scheduler at {url}: {e}; start one with `velo cluster scheduler --bind {addr}` and executors with `velo cluster executor --scheduler {addr}`"
        )),
        Err(_) => Err(format!(
            "the Ballista scheduler at {url} did not answer within 5 s"
        )),
    }
}

/// The object stores of a cluster process: those registered, and for an
/// object-store URL met first in a plan (`s3://bucket`), a client built
/// from this process's environment (velo's own store clients, with no
/// connector keys: `AWS_*` and the like), kept for the next plan.
#[derive(Debug, Default)]
pub struct EnvStores {
    stores: Mutex<HashMap<String, Arc<dyn object_store::ObjectStore>>>,
}

impl EnvStores {
    fn key(url: &url::Url) -> String {
        format!("{}://{}", url.scheme(), url.authority())
    }
}

impl datafusion::execution::object_store::ObjectStoreRegistry for EnvStores {
    fn register_store(
        &self,
        url: &url::Url,
        store: Arc<dyn object_store::ObjectStore>,
    ) -> Option<Arc<dyn object_store::ObjectStore>> {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        stores.insert(Self::key(url), store)
    }

    fn get_store(
        &self,
        url: &url::Url,
    ) -> datafusion::error::Result<Arc<dyn object_store::ObjectStore>> {
        let key = Self::key(url);
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = stores.get(&key) {
            return Ok(s.clone());
        }
        let store: Arc<dyn object_store::ObjectStore> = if url.scheme() == "file" {
            Arc::new(object_store::local::LocalFileSystem::new())
        } else {
            let (remote, _) = velo_connectors::file::store::Remote::connect(
                &format!("{key}/"),
                &Default::default(),
                &Default::default(),
            )
            .map_err(|e| {
                datafusion::error::DataFusionError::External(
                    format!("{e} (a cluster process reads object stores with the credentials of its environment)").into(),
                )
            })?;
            remote.store()
        };
        stores.insert(key, store.clone());
        Ok(store)
    }
}

/// A runtime whose object stores are [`EnvStores`], spilling to `temp`.
fn runtime(
    temp: Option<&std::path::Path>,
) -> datafusion::error::Result<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
    let mut b = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(EnvStores::default()));
    if let Some(t) = temp {
        b = b.with_temp_file_path(t);
    }
    b.build_arc()
}

/// `velo cluster scheduler`: a Ballista scheduler on `bind` (in memory,
/// one scheduler), until the process stops.
pub async fn scheduler(bind: SocketAddr) -> anyhow::Result<()> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    // Ballista's own session, with object stores from the environment:
    // the scheduler lists the files it splits into tasks
    let sessions: ballista_scheduler::SessionBuilder = Arc::new(|config| {
        let state = ballista_core::utils::default_session_builder(config)?;
        Ok(SessionStateBuilder::new_from_existing(state)
            .with_runtime_env(runtime(None)?)
            .build())
    });
    let config = SchedulerConfig {
        bind_host: bind.ip().to_string(),
        bind_port: bind.port(),
        external_host: bind.ip().to_string(),
        override_session_builder: Some(sessions),
        override_logical_codec: Some(Arc::new(VeloCodec::default())),
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&config).await?;
    tracing::info!("Ballista scheduler listening on {bind}");
    ballista_scheduler::scheduler_process::start_server(cluster, bind, Arc::new(config)).await?;
    Ok(())
}

/// What `velo cluster executor` is started with.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler it registers with.
    pub scheduler: SocketAddr,
    /// The address it listens on (its Flight service: shuffle data).
    pub bind: SocketAddr,
    /// Its gRPC port (tasks from the scheduler).
    pub grpc_port: u16,
    /// Tasks it runs at once.
    pub concurrent_tasks: usize,
    /// Where it keeps shuffle files.
    pub work_dir: Option<String>,
}

/// `velo cluster executor`: a Ballista executor that registers with the
/// scheduler and runs its tasks, until the process stops.
pub async fn executor(o: ExecutorOptions) -> anyhow::Result<()> {
    use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
    let host = o.bind.ip().to_string();
    // where shuffles and spills go: the one asked for, else a directory of
    // its own for the life of the process
    let scratch = match &o.work_dir {
        Some(_) => None,
        None => Some(tempfile::tempdir()?),
    };
    let work_dir = o.work_dir.clone().or_else(|| {
        scratch
            .as_ref()
            .map(|d| d.path().to_string_lossy().into_owned())
    });
    let temp = work_dir.clone().map(std::path::PathBuf::from);
    let config = ExecutorProcessConfig {
        bind_host: host.clone(),
        external_host: Some(host),
        port: o.bind.port(),
        grpc_port: o.grpc_port,
        scheduler_host: o.scheduler.ip().to_string(),
        scheduler_port: o.scheduler.port(),
        scheduler_connect_timeout_seconds: 30,
        vcores: o.concurrent_tasks.max(1),
        work_dir,
        override_runtime_producer: Some(Arc::new(move |_| runtime(temp.as_deref()))),
        executor_heartbeat_interval_seconds: 5,
        print_thread_info: false,
        ..Default::default()
    };
    tracing::info!(
        "Ballista executor on {} (tasks from {}, {} at once)",
        o.bind,
        o.scheduler,
        config.vcores
    );
    start_executor_process(Arc::new(config)).await?;
    Ok(())
}

/// Ballista's logical codec, plus velo's table of a snapshot's files
/// ([`FileListTable`]: a partitioned Delta snapshot, whose partition values
/// live in its log): the client encodes it, the scheduler decodes it and
/// plans its scan. Every other node goes through Ballista's codec.
#[derive(Debug, Default)]
pub struct VeloCodec {
    ballista: ballista_core::serde::BallistaLogicalExtensionCodec,
}

/// The first bytes of an encoded [`FileListTable`].
const FILE_LIST: &[u8] = b"velo-file-list:";

impl datafusion_proto::logical_plan::LogicalExtensionCodec for VeloCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[datafusion::logical_expr::LogicalPlan],
        ctx: &datafusion::execution::TaskContext,
    ) -> datafusion::error::Result<datafusion::logical_expr::Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(
        &self,
        node: &datafusion::logical_expr::Extension,
        buf: &mut Vec<u8>,
    ) -> datafusion::error::Result<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &datafusion::common::TableReference,
        schema: datafusion::arrow::datatypes::SchemaRef,
        ctx: &datafusion::execution::TaskContext,
    ) -> datafusion::error::Result<Arc<dyn datafusion::datasource::TableProvider>> {
        match buf.strip_prefix(FILE_LIST) {
            Some(table) => Ok(Arc::new(FileListTable::from_bytes(table)?)),
            None => self
                .ballista
                .try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &datafusion::common::TableReference,
        node: Arc<dyn datafusion::datasource::TableProvider>,
        buf: &mut Vec<u8>,
    ) -> datafusion::error::Result<()> {
        match node.downcast_ref::<FileListTable>() {
            Some(table) => {
                buf.extend_from_slice(FILE_LIST);
                buf.extend_from_slice(&table.to_bytes()?);
                Ok(())
            }
            None => self
                .ballista
                .try_encode_table_provider(table_ref, node, buf),
        }
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &datafusion::execution::TaskContext,
    ) -> datafusion::error::Result<Arc<dyn datafusion::datasource::file_format::FileFormatFactory>>
    {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn datafusion::datasource::file_format::FileFormatFactory>,
    ) -> datafusion::error::Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_urls_parse_or_say_how_to_write_them() {
        assert_eq!(
            scheduler_address("df://127.0.0.1:50070").unwrap(),
            "127.0.0.1:50070".parse().unwrap()
        );
        assert_eq!(scheduler_address("df://127.0.0.1").unwrap().port(), 50050);
        let e = scheduler_address("df://").unwrap_err();
        assert!(e.contains("df://host:port"), "{e}");
    }

    /// A job's scans are its leaf DataSourceExecs (not shuffle readers,
    /// not an inner operator), each named by its first file, with the rows
    /// of all its tasks.
    #[test]
    fn a_jobs_file_scans_are_its_leaf_data_sources() {
        use ballista_core::serde::protobuf::{
            JobStageMetrics, OperatorMetric, OperatorWithMetrics,
        };
        let op = |depth, kind: &str, desc: &str, rows: &[u64]| OperatorWithMetrics {
            depth,
            operator_type: kind.into(),
            operator_desc: desc.into(),
            metrics: rows
                .iter()
                .map(|n| OperatorMetric {
                    partition: None,
                    metric: Some(operator_metric::Metric::OutputRows(*n)),
                })
                .collect(),
        };
        let metrics = GetJobMetricsResult {
            stages: vec![
                JobStageMetrics {
                    stage_id: 1,
                    partitions: 2,
                    operators: vec![
                        op(0, "ShuffleWriterExec", "ShuffleWriterExec", &[7]),
                        op(1, "HashJoinExec", "HashJoinExec: mode=Partitioned", &[7]),
                        op(
                            2,
                            "DataSourceExec",
                            "DataSourceExec: file_groups={2 groups: [[tmp/lake/day=d1/part-0.parquet:0..812, tmp/lake/day=d1/part-1.parquet], [tmp/lake/day=d2/part-0.parquet]]}, projection=[id, day], file_type=parquet",
                            &[5000, 700],
                        ),
                        op(
                            2,
                            "DataSourceExec",
                            "DataSourceExec: file_groups={1 group: [[tmp/days.csv]]}, projection=[day, label], file_type=csv, has_header=true",
                            &[4],
                        ),
                    ],
                },
                JobStageMetrics {
                    stage_id: 2,
                    partitions: 1,
                    operators: vec![
                        op(0, "ShuffleWriterExec", "ShuffleWriterExec", &[4]),
                        op(
                            1,
                            "ShuffleReaderExec",
                            "ShuffleReaderExec: partitions=2",
                            &[7],
                        ),
                    ],
                },
            ],
        };
        assert_eq!(
            file_scans(&metrics),
            vec![
                ("tmp/lake/day=d1/part-0.parquet".to_string(), 5700),
                ("tmp/days.csv".to_string(), 4),
            ]
        );
        assert_eq!(
            first_file("DataSourceExec: file_groups={0 groups: []}"),
            None
        );
    }

    #[tokio::test]
    async fn an_unreachable_scheduler_says_how_to_start_one() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("df://127.0.0.1:{port}");
        let Err(e) = Ballista.session(&url, &[]).await else {
            panic!("nothing listens at {url}");
        };
        assert!(e.contains("velo cluster scheduler"), "{e}");
    }
}
