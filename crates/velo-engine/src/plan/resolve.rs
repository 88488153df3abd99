//! Resolution: from a parsed application to [`JobPlan`]s, configuration
//! resolved for every source, sink and job, errors collected (validate lists
//! them all).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use velo_config::global::{Discovery, GlobalConfig};
use velo_config::props::{named_props, resolve_named};
use velo_config::{ConnectorConfig, JobConfig, Role, VarContext};
use velo_sql::{AppSpec, StatementKind, StatementSpec};

use crate::{EngineError, Result};

/// How `velo` resolves an application in this process: the command line's
/// options; the environment and the global config are read from the process
/// by [`AppInputs::from_process`].
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--profile`.
    pub profile: Option<String>,
    /// `--set name.key=value`.
    pub sets: Vec<(String, String)>,
    /// Variables (tests); default: process environment + global profile.
    pub vars: Option<VarContext>,
    /// Skip global config discovery (tests).
    pub no_global: bool,
    /// The connectors and runtime of this process.
    pub engine: crate::Engine,
}

/// One runnable job (one query statement).
#[derive(Debug, Clone)]
pub struct JobPlan {
    /// Job name.
    pub name: String,
    /// The statement.
    pub statement: StatementSpec,
    /// Typed job settings.
    pub job: JobConfig,
    /// Raw job keys (for explain).
    pub job_props: BTreeMap<String, String>,
    /// Sources in FROM/JOIN order.
    pub sources: Vec<ConnectorConfig>,
    /// Schemas from DDL column lists, by source name.
    pub explicit_schemas: HashMap<String, SchemaRef>,
    /// Sinks in INTO order (stdout if none).
    pub sinks: Vec<ConnectorConfig>,
    /// Dead-letter sink.
    pub dlq: Option<ConnectorConfig>,
    /// Tables of earlier `CREATE TABLE` statements this query reads.
    pub table_refs: Vec<String>,
    /// The application's tables (shared by its jobs).
    pub tables: Arc<crate::tables::Tables>,
    /// The connectors and runtime it is planned and run with.
    pub engine: crate::Engine,
    /// This run continues an earlier run of the same job (a hosted job
    /// started again): sinks keep what the earlier run wrote instead of
    /// replacing it ([`velo_connectors::Sink::set_continuing`]).
    pub continues: bool,
}

/// A resolved application.
#[derive(Debug, Clone)]
pub struct AppPlan {
    /// The parsed file.
    pub app: AppSpec,
    /// Jobs, in statement order.
    pub jobs: Vec<JobPlan>,
    /// Warnings (unknown keys, stdout fallback, ...), already logged.
    pub warnings: Vec<String>,
    /// The active profile, if any.
    pub profile: Option<String>,
    /// The SQL file's directory.
    pub base_dir: PathBuf,
}

fn stdout_config(name: &str, base_dir: &Path) -> ConnectorConfig {
    ConnectorConfig {
        name: name.to_string(),
        role: Role::Sink,
        kind: "stdout".into(),
        props: BTreeMap::new(),
        origin: velo_config::Origin::Named,
        base_dir: base_dir.to_path_buf(),
        job: String::new(),
    }
}

/// A `stdout` sink config (fallback and default).
pub fn stdout_sink(name: &str, base_dir: &Path) -> ConnectorConfig {
    stdout_config(name, base_dir)
}

fn decl_schema(decl: &StatementSpec) -> Result<SchemaRef> {
    let fields = decl
        .columns
        .iter()
        .map(|c| {
            let t = c.data_type.to_string();
            let dt = velo_connectors::schema::sql_type(&t).ok_or_else(|| {
                EngineError::Invalid(format!(
                    "unsupported column type '{t}' for '{}' in CREATE STREAM {}",
                    c.name.value, decl.name
                ))
            })?;
            let not_null = c.options.iter().any(|o| {
                matches!(
                    o.option,
                    datafusion::sql::sqlparser::ast::ColumnOption::NotNull
                )
            });
            Ok(Field::new(&c.name.value, dt, !not_null))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// Checks a connector's keys against its table; warnings are collected.
fn validated(
    c: ConnectorConfig,
    engine: &crate::Engine,
    warnings: &mut Vec<String>,
) -> Result<ConnectorConfig> {
    let w = engine
        .registry()
        .validate(&c)
        .map_err(|e| EngineError::Invalid(e.to_string()))?;
    warnings.extend(w.into_iter().map(|w| w.0));
    Ok(c)
}

/// Everything an application's resolution reads, given explicitly: its SQL
/// text, the directory its relative paths start from, its environment
/// variables, the global config (active profile and its variables) and the
/// `--set` overrides. Resolution reads nothing of the process (environment,
/// working directory), so applications with different inputs can be
/// resolved and run in one process (a job server).
#[derive(Debug, Clone)]
pub struct AppInputs {
    /// The application's SQL.
    pub sql: String,
    /// Where relative paths (files, `config_file`, state) start.
    pub base_dir: PathBuf,
    /// Environment variables for `${VAR}`.
    pub env: VarContext,
    /// The global config: the active profile and its variables.
    pub global: GlobalConfig,
    /// `name.key=value` overrides.
    pub sets: Vec<(String, String)>,
    /// The connectors and runtime of the process it runs in.
    pub engine: crate::Engine,
}

impl AppInputs {
    /// The inputs of `sql`, the text of the file `sql_path`, as `velo` run
    /// in this process sees them: the process environment and, unless
    /// `opts` says not to, the global config found from the working
    /// directory and home.
    pub fn from_process(sql: &str, sql_path: &Path, opts: &PlanOptions) -> Result<Self> {
        let base_dir = sql_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let (env, global) = match &opts.vars {
            Some(v) => (v.clone(), GlobalConfig::default()),
            None if opts.no_global => (VarContext::from_env(), GlobalConfig::default()),
            None => {
                let g =
                    Discovery::from_process(opts.config.clone(), opts.profile.clone()).load()?;
                if let Some(p) = &g.path {
                    tracing::info!(
                        "global config '{}' (profile: {})",
                        p.display(),
                        g.profile.as_deref().unwrap_or("none")
                    );
                }
                (VarContext::from_env(), g)
            }
        };
        Ok(Self {
            sql: sql.to_string(),
            base_dir,
            env,
            global,
            sets: opts.sets.clone(),
            engine: opts.engine.clone(),
        })
    }
}

/// Parses and resolves `sql` (the text of `sql_path`) with the inputs of
/// this process.
pub fn resolve(sql: &str, sql_path: &Path, opts: &PlanOptions) -> Result<AppPlan> {
    let (plan, mut errors) = resolve_all(sql, sql_path, opts)?;
    match errors.len() {
        0 => Ok(plan),
        1 => Err(errors.remove(0)),
        _ => Err(EngineError::Many(errors)),
    }
}

/// [`resolve_inputs`] with the inputs of this process
/// ([`AppInputs::from_process`]).
pub fn resolve_all(
    sql: &str,
    sql_path: &Path,
    opts: &PlanOptions,
) -> Result<(AppPlan, Vec<EngineError>)> {
    resolve_inputs(&AppInputs::from_process(sql, sql_path, opts)?)
}

/// Parses and resolves an application as far as it goes: the jobs that
/// resolved, and the errors of the others (`validate` goes on to plan the
/// good jobs and lists every error). An `Err` is an error nothing can be
/// resolved past: the SQL does not parse.
pub fn resolve_inputs(inputs: &AppInputs) -> Result<(AppPlan, Vec<EngineError>)> {
    let app = velo_sql::parse_app(&inputs.sql)?;
    let mut with_all = app.all_with();
    for (k, v) in &inputs.sets {
        with_all.insert(k.clone(), v.clone());
    }
    let mut r = Resolver {
        decls: app
            .statements
            .iter()
            .filter(|s| s.kind == StatementKind::SourceDecl)
            .map(|s| (s.name.clone(), s.clone()))
            .collect(),
        names: connector_names(&app, &with_all),
        with_all,
        inputs,
        vars: with_profile(&inputs.env, &inputs.global),
        tables: Arc::new(crate::tables::Tables::default()),
        table_names: Vec::new(),
        warnings: Vec::new(),
    };
    r.warn_about_declaration_keys();
    let mut jobs = Vec::new();
    let mut errors = Vec::new();
    let mut chains = super::chain::Chains::default();
    let definitions = super::chain::definitions(&app, &r.with_all);
    for st in app
        .statements
        .iter()
        .filter(|s| s.kind != StatementKind::SourceDecl)
    {
        match chains.inline(st, &r.with_all) {
            Ok(st) => {
                chains.add(&st);
                if !definitions.contains(&st.name) {
                    match r.job(&st) {
                        Ok(j) => jobs.push(j),
                        // with its job and line: the server reports them apart
                        Err(e) => errors.push(EngineError::Located {
                            job: st.name.clone(),
                            line: st.line,
                            source: Box::new(e),
                        }),
                    }
                }
            }
            Err(e) => errors.push(e),
        }
        if st.kind == StatementKind::CreateTable {
            r.table_names.push(st.name.clone());
        }
    }
    errors.extend(crate::collisions::check(&app, &mut jobs));
    if jobs.is_empty() && errors.is_empty() {
        errors.push(EngineError::Invalid(
            "the application has no query, only source declarations: add a statement that reads them, e.g. CREATE STREAM out AS SELECT * FROM <source> INTO <sink> WITH (...)".into(),
        ));
    }
    for w in &r.warnings {
        tracing::warn!("{w}");
    }
    let plan = AppPlan {
        app,
        jobs,
        warnings: r.warnings,
        profile: inputs.global.profile.clone(),
        base_dir: inputs.base_dir.clone(),
    };
    Ok((plan, errors))
}

/// The environment's variables over the active profile's.
fn with_profile(env: &VarContext, global: &GlobalConfig) -> VarContext {
    if global.variables.is_empty() {
        env.clone()
    } else {
        env.clone().with_profile(global.variables.clone())
    }
}

/// Every name that owns `<name>.*` keys: statements, their sources and
/// sinks, `dlq`, and any name given a type or config file.
fn connector_names(app: &AppSpec, with_all: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = BTreeSet::from(["dlq".to_string()]);
    for s in &app.statements {
        names.insert(s.name.clone());
        names.extend(s.sources.iter().map(|r| r.name.clone()));
        names.extend(s.sinks.iter().map(|r| r.name.clone()));
    }
    for k in with_all.keys() {
        if let Some((n, rest)) = k.split_once('.') {
            if rest == "type" || rest == "config_file" {
                names.insert(n.to_string());
            }
        }
    }
    names
}

/// What resolving the statements of one application shares.
struct Resolver<'a> {
    inputs: &'a AppInputs,
    /// Every WITH key of the application, `--set` applied.
    with_all: BTreeMap<String, String>,
    /// Source declarations (`CREATE STREAM s (cols) WITH (...)`) by name.
    decls: HashMap<String, StatementSpec>,
    /// Names that own `<name>.*` keys.
    names: BTreeSet<String>,
    /// The environment with the profile's variables.
    vars: VarContext,
    /// The application's tables (shared by its jobs).
    tables: Arc<crate::tables::Tables>,
    /// Tables of the `CREATE TABLE` statements resolved so far.
    table_names: Vec<String>,
    warnings: Vec<String>,
}

/// A job's connectors as far as they resolved.
#[derive(Default)]
struct Connectors {
    sources: Vec<ConnectorConfig>,
    explicit_schemas: HashMap<String, SchemaRef>,
    table_refs: Vec<String>,
    sinks: Vec<ConnectorConfig>,
    dlq: Option<ConnectorConfig>,
}

impl Resolver<'_> {
    fn base_dir(&self) -> &Path {
        &self.inputs.base_dir
    }

    /// A key of the job itself (not `<connector>.<key>`).
    fn is_job_key(&self, k: &str) -> bool {
        !self.names.iter().any(|n| {
            k.strip_prefix(n.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
        })
    }

    /// A source declaration's own keys are named after it: anything else
    /// there (ksqlDB's kafka_topic, Flink's connector) is warned about.
    fn warn_about_declaration_keys(&mut self) {
        let mut warnings = Vec::new();
        for decl in self.decls.values() {
            let prefix = format!("{}.", decl.name);
            for k in decl.with.keys().filter(|k| self.is_job_key(k)) {
                let hint = velo_config::keys::foreign_key(k)
                    .map(|ours| format!("; did you mean '{prefix}{ours}'?"))
                    .unwrap_or_else(|| {
                        format!(
                            "; the keys of source '{}' are named '{prefix}<key>'",
                            decl.name
                        )
                    });
                warnings.push(format!(
                    "line {}: CREATE STREAM {} (...) WITH: unknown key '{k}' (ignored){hint}",
                    decl.line, decl.name
                ));
            }
        }
        warnings.sort();
        self.warnings.extend(warnings);
    }

    /// One query statement as a job: its settings, sources, sinks and
    /// dead-letter sink; every error of the statement at once.
    fn job(&mut self, st: &StatementSpec) -> Result<JobPlan> {
        let mut errors = Vec::new();
        let (job, job_props) = self.job_settings(st, &mut errors)?;
        let mut c = Connectors::default();
        self.sources(st, &mut c, &mut errors);
        self.sinks(st, &mut c, &mut errors);
        c.dlq = self.dlq(st, &mut errors);
        if !errors.is_empty() {
            return Err(if errors.len() == 1 {
                errors.remove(0)
            } else {
                EngineError::Many(errors)
            });
        }
        let name = job_props
            .get("job.name")
            .cloned()
            .or_else(|| {
                st.annotations
                    .iter()
                    .find(|a| a.name == "job_name" || a.name == "name")
                    .map(|a| a.value.clone())
            })
            .unwrap_or_else(|| st.name.clone());
        Ok(JobPlan {
            name,
            statement: st.clone(),
            job,
            job_props,
            sources: c.sources,
            explicit_schemas: c.explicit_schemas,
            sinks: c.sinks,
            dlq: c.dlq,
            table_refs: c.table_refs,
            tables: self.tables.clone(),
            engine: self.inputs.engine.clone(),
            continues: false,
        })
    }

    /// The job's own keys (the statement's and `--set`'s), variables
    /// substituted, typed.
    fn job_settings(
        &mut self,
        st: &StatementSpec,
        errors: &mut Vec<EngineError>,
    ) -> Result<(JobConfig, BTreeMap<String, String>)> {
        let mut job_props: BTreeMap<String, String> = st
            .with
            .iter()
            .filter(|(k, _)| self.is_job_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in &self.inputs.sets {
            if self.is_job_key(k) {
                job_props.insert(k.clone(), v.clone());
            }
        }
        let job_props = job_props
            .into_iter()
            .map(|(k, v)| Ok((k.clone(), self.vars.substitute(&v, &format!("WITH '{k}'"))?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        let job = JobConfig::from_props(&job_props).unwrap_or_else(|e| {
            errors.push(EngineError::from(e));
            JobConfig::default()
        });
        if let Ok(w) = velo_config::keys::validate(&job_props, &[velo_config::job::JOB_KEYS], "") {
            self.warnings
                .extend(w.into_iter().map(|w| format!("{}: {w}", st.name)));
        }
        Ok((job, job_props))
    }

    /// The job's sources in FROM/JOIN order: by URI, by name (with the
    /// keys of its declaration and its declared columns), or a table of an
    /// earlier `CREATE TABLE`.
    fn sources(&mut self, st: &StatementSpec, c: &mut Connectors, errors: &mut Vec<EngineError>) {
        if st.sources.is_empty() {
            errors.push(EngineError::Invalid(format!("No supported datasource found in query analysis for job '{}': the query reads no table; add FROM <source>", st.name)));
        }
        for r in &st.sources {
            let inline = named_props(&self.with_all, &r.name);
            // a table of an earlier CREATE TABLE statement, unless
            // configured as a connector of its own
            if r.uri.is_none()
                && self.table_names.contains(&r.name)
                && !inline.contains_key("type")
                && !inline.contains_key("config_file")
            {
                c.table_refs.push(r.name.clone());
                continue;
            }
            let cfg = match &r.uri {
                Some(uri) => self.source_by_uri(&r.name, uri, inline),
                None => {
                    let mut inline = inline;
                    if let Some(decl) = self.decls.get(r.name.as_str()) {
                        for (k, v) in named_props(&decl.with, &r.name) {
                            inline.entry(k).or_insert(v);
                        }
                        match decl_schema(decl) {
                            Ok(s) => {
                                c.explicit_schemas.insert(r.name.clone(), s);
                            }
                            Err(e) => errors.push(e),
                        }
                    }
                    resolve_named(&r.name, Role::Source, &inline, self.base_dir(), &self.vars)
                        .map_err(EngineError::from)
                }
            };
            match cfg.and_then(|c| validated(c, &self.inputs.engine, &mut self.warnings)) {
                Ok(mut cfg) => {
                    cfg.job = st.name.clone();
                    c.sources.push(cfg)
                }
                Err(e) => errors.push(e),
            }
        }
        // two Kafka sources of one job in one consumer group would
        // rebalance each other: the second and later get a group of their own
        let mut kafka = c.sources.iter_mut().filter(|c| c.kind == "kafka");
        kafka.next();
        for c in kafka {
            if c.get("group.id").is_none() {
                let group = format!("velo-{}-{}", c.job, c.name);
                c.props.insert("group.id".into(), group);
            }
        }
        if c.sources.is_empty() && !c.table_refs.is_empty() && errors.is_empty() {
            errors.push(EngineError::Invalid(format!(
                "job '{}' reads only the table(s) {} of earlier CREATE TABLE statements; a table is joined with a stream: add the stream to FROM",
                st.name,
                c.table_refs.join(", ")
            )));
        }
    }

    /// A source named by URI (`FROM 'file://...' AS s`), its WITH keys'
    /// variables substituted.
    fn source_by_uri(
        &self,
        name: &str,
        uri: &str,
        inline: BTreeMap<String, String>,
    ) -> Result<ConnectorConfig> {
        let inline = inline
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    self.vars.substitute(&v, &format!("WITH '{name}.{k}'"))?,
                ))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        Ok(velo_config::uri::from_uri(
            name,
            uri,
            Role::Source,
            self.base_dir(),
            inline,
            self.inputs.engine.registry().schemes(),
        )?)
    }

    /// The job's sinks in INTO order; without INTO, the statement's own
    /// `<name>.type` sink, else stdout.
    fn sinks(&mut self, st: &StatementSpec, c: &mut Connectors, errors: &mut Vec<EngineError>) {
        let mut sink_refs: Vec<(String, Option<String>)> = st
            .sinks
            .iter()
            .map(|s| (s.name.clone(), s.uri.clone()))
            .collect();
        if sink_refs.is_empty() {
            let own = self
                .with_all
                .get(&format!("{}.type", st.name))
                .map(|t| velo_config::props::parse_type(t));
            match own {
                Some((_, role)) if role != Some(Role::Source) => {
                    sink_refs.push((st.name.clone(), None))
                }
                _ => {
                    if matches!(
                        st.kind,
                        StatementKind::CreateStream | StatementKind::CreateTable
                    ) {
                        self.warnings.push(format!(
                            "{}: no INTO clause and no '{}.type' sink: writing results to stdout",
                            st.name, st.name
                        ));
                    }
                    c.sinks.push(stdout_config("stdout", self.base_dir()));
                }
            }
        }
        for (name, uri) in sink_refs {
            let inline = named_props(&self.with_all, &name);
            let cfg = match uri {
                Some(u) => velo_config::uri::from_uri(
                    &name,
                    &u,
                    Role::Sink,
                    self.base_dir(),
                    inline,
                    self.inputs.engine.registry().schemes(),
                )
                .map_err(EngineError::from),
                None => resolve_named(&name, Role::Sink, &inline, self.base_dir(), &self.vars)
                    .map_err(EngineError::from),
            };
            match cfg.and_then(|c| validated(c, &self.inputs.engine, &mut self.warnings)) {
                Ok(mut cfg) => {
                    cfg.job = st.name.clone();
                    c.sinks.push(cfg)
                }
                Err(e) => errors.push(e),
            }
        }
    }

    /// The dead-letter sink, when `dlq.*` keys are given: a JSON Lines
    /// file unless typed otherwise.
    fn dlq(
        &mut self,
        st: &StatementSpec,
        errors: &mut Vec<EngineError>,
    ) -> Option<ConnectorConfig> {
        let mut p = named_props(&self.with_all, "dlq");
        if p.is_empty() {
            return None;
        }
        if !p.contains_key("type") && !p.contains_key("config_file") {
            p.insert("type".into(), "file_sink".into());
        }
        if !p.contains_key("format") && p.get("type").is_some_and(|t| t.starts_with("file")) {
            p.insert("format".into(), "jsonl".into());
        }
        match resolve_named("dlq", Role::Sink, &p, self.base_dir(), &self.vars)
            .map_err(EngineError::from)
            .and_then(|c| validated(c, &self.inputs.engine, &mut self.warnings))
        {
            Ok(mut c) => {
                c.job = st.name.clone();
                Some(c)
            }
            Err(e) => {
                errors.push(e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(dir: &str, env: &[(&str, &str)], profile: &[(&str, &str)]) -> AppInputs {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        AppInputs {
            sql: "CREATE STREAM s AS SELECT * FROM src INTO out WITH (
                'src.type' = 'file_source', 'src.path' = '${IN}', 'src.format' = 'csv',
                'out.type' = 'file_sink', 'out.path' = '${OUT:-default.jsonl}', 'batch.size' = '${BATCH}');"
                .into(),
            base_dir: PathBuf::from(dir),
            env: VarContext::with_env(map(env)),
            global: GlobalConfig {
                profile: Some("p".into()),
                variables: map(profile),
                ..Default::default()
            },
            sets: Vec::new(),
            engine: crate::Engine::default(),
        }
    }

    /// Two applications resolved in one process, each with its own
    /// environment, profile and base directory: nothing comes from the
    /// process (its environment has none of these variables).
    #[test]
    fn resolution_reads_only_its_inputs() {
        let a = inputs(
            "/apps/a",
            &[("IN", "a.csv"), ("OUT", "a.jsonl")],
            &[("BATCH", "10")],
        );
        let b = inputs(
            "/apps/b",
            &[("IN", "b.csv")],
            &[("BATCH", "20"), ("IN", "profile.csv")],
        );
        let (a, ea) = resolve_inputs(&a).unwrap();
        let (b, eb) = resolve_inputs(&b).unwrap();
        assert!(ea.is_empty() && eb.is_empty(), "{ea:?} {eb:?}");
        let (ja, jb) = (&a.jobs[0], &b.jobs[0]);
        assert_eq!(ja.sources[0].get("path"), Some("a.csv"));
        // the environment wins over the profile
        assert_eq!(jb.sources[0].get("path"), Some("b.csv"));
        assert_eq!(ja.sinks[0].get("path"), Some("a.jsonl"));
        assert_eq!(jb.sinks[0].get("path"), Some("default.jsonl"));
        assert_eq!((ja.job.batch_size, jb.job.batch_size), (Some(10), Some(20)));
        assert_eq!(ja.sources[0].base_dir, PathBuf::from("/apps/a"));
        assert_eq!(jb.sinks[0].base_dir, PathBuf::from("/apps/b"));
        assert_eq!(a.profile.as_deref(), Some("p"));
        // a variable neither has is an error naming it, not the process's
        let c = inputs("/apps/c", &[("OUT", "c.jsonl")], &[]);
        let err = match resolve_inputs(&c) {
            Ok((_, e)) => format!("{e:?}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("IN") || err.contains("BATCH"), "{err}");
    }
}
