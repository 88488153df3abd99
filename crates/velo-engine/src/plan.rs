//! From a parsed application to runnable jobs: configuration resolved for
//! every source, sink and job, errors collected (validate lists them all).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use velo_config::global::Discovery;
use velo_config::props::{named_props, resolve_named};
use velo_config::{ConnectorConfig, JobConfig, Role, VarContext};
use velo_sql::{AppSpec, StatementKind, StatementSpec};

use crate::{EngineError, Result};

/// How to resolve an application.
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
fn validated(c: ConnectorConfig, warnings: &mut Vec<String>) -> Result<ConnectorConfig> {
    let w = crate::connectors::registry()
        .validate(&c)
        .map_err(|e| EngineError::Invalid(e.to_string()))?;
    warnings.extend(w.into_iter().map(|w| w.0));
    Ok(c)
}

/// Parses and resolves `sql` (the text of `sql_path`).
pub fn resolve(sql: &str, sql_path: &Path, opts: &PlanOptions) -> Result<AppPlan> {
    let (plan, mut errors) = resolve_all(sql, sql_path, opts)?;
    match errors.len() {
        0 => Ok(plan),
        1 => Err(errors.remove(0)),
        _ => Err(EngineError::Many(errors)),
    }
}

/// Parses and resolves `sql` as far as it goes: the jobs that resolved, and
/// the errors of the others (`validate` goes on to plan the good jobs and
/// lists every error). An `Err` is an error nothing can be resolved past:
/// the SQL does not parse, the global config cannot be read.
pub fn resolve_all(
    sql: &str,
    sql_path: &Path,
    opts: &PlanOptions,
) -> Result<(AppPlan, Vec<EngineError>)> {
    let app = velo_sql::parse_app(sql)?;
    let base_dir = sql_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let base_dir = if base_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base_dir
    };
    let (vars, profile) = match &opts.vars {
        Some(v) => (v.clone(), None),
        None if opts.no_global => (VarContext::from_env(), None),
        None => {
            let g = Discovery::from_process(opts.config.clone(), opts.profile.clone()).load()?;
            if let Some(p) = &g.path {
                tracing::info!(
                    "global config '{}' (profile: {})",
                    p.display(),
                    g.profile.as_deref().unwrap_or("none")
                );
            }
            (VarContext::from_env().with_profile(g.variables), g.profile)
        }
    };
    let mut with_all = app.all_with();
    for (k, v) in &opts.sets {
        with_all.insert(k.clone(), v.clone());
    }
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    let decls: HashMap<&str, &StatementSpec> = app
        .statements
        .iter()
        .filter(|s| s.kind == StatementKind::SourceDecl)
        .map(|s| (s.name.as_str(), s))
        .collect();
    // every name that owns '<name>.*' keys
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
    let is_job_key = |k: &str| !names.iter().any(|n| k.starts_with(&format!("{n}.")));
    // a source declaration's own keys are named after it: anything else
    // there (ksqlDB's kafka_topic, Flink's connector) is warned about
    for decl in decls.values() {
        let own: BTreeMap<String, String> = decl
            .with
            .iter()
            .filter(|(k, _)| is_job_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let prefix = format!("{}.", decl.name);
        for k in own.keys() {
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
    let tables = Arc::new(crate::tables::Tables::default());
    let mut table_names: Vec<String> = Vec::new();

    let mut jobs = Vec::new();
    for st in app
        .statements
        .iter()
        .filter(|s| s.kind != StatementKind::SourceDecl)
    {
        match resolve_job(
            st,
            &with_all,
            &decls,
            &base_dir,
            &vars,
            opts,
            &is_job_key,
            (&table_names, &tables),
            &mut warnings,
        ) {
            Ok(j) => jobs.push(j),
            Err(e) => errors.push(e),
        }
        if st.kind == StatementKind::CreateTable {
            table_names.push(st.name.clone());
        }
    }
    errors.extend(crate::collisions::check(&app, &mut jobs));
    if jobs.is_empty() && errors.is_empty() {
        errors.push(EngineError::Invalid(
            "the application has no query, only source declarations: add a statement that reads them, e.g. CREATE STREAM out AS SELECT * FROM <source> INTO <sink> WITH (...)".into(),
        ));
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let plan = AppPlan {
        app,
        jobs,
        warnings,
        profile,
        base_dir,
    };
    Ok((plan, errors))
}

#[allow(clippy::too_many_arguments)]
fn resolve_job(
    st: &StatementSpec,
    with_all: &BTreeMap<String, String>,
    decls: &HashMap<&str, &StatementSpec>,
    base_dir: &Path,
    vars: &VarContext,
    opts: &PlanOptions,
    is_job_key: &dyn Fn(&str) -> bool,
    (table_names, tables): (&[String], &Arc<crate::tables::Tables>),
    warnings: &mut Vec<String>,
) -> Result<JobPlan> {
    let mut errors = Vec::new();
    let mut job_props: BTreeMap<String, String> = st
        .with
        .iter()
        .filter(|(k, _)| is_job_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in &opts.sets {
        if is_job_key(k) {
            job_props.insert(k.clone(), v.clone());
        }
    }
    let job_props = job_props
        .into_iter()
        .map(|(k, v)| Ok((k.clone(), vars.substitute(&v, &format!("WITH '{k}'"))?)))
        .collect::<Result<BTreeMap<_, _>>>()?;
    let job = match JobConfig::from_props(&job_props) {
        Ok(j) => j,
        Err(e) => {
            errors.push(EngineError::from(e));
            JobConfig::default()
        }
    };
    if let Ok(w) = velo_config::keys::validate(&job_props, &[velo_config::job::JOB_KEYS], "") {
        warnings.extend(w.into_iter().map(|w| format!("{}: {w}", st.name)));
    }
    let mut sources = Vec::new();
    let mut explicit_schemas = HashMap::new();
    let mut table_refs = Vec::new();
    if st.sources.is_empty() {
        errors.push(EngineError::Invalid(format!("No supported datasource found in query analysis for job '{}': the query reads no table; add FROM <source>", st.name)));
    }
    for r in &st.sources {
        let inline = named_props(with_all, &r.name);
        // a table of an earlier CREATE TABLE statement, unless configured
        // as a connector of its own
        if r.uri.is_none()
            && table_names.contains(&r.name)
            && !inline.contains_key("type")
            && !inline.contains_key("config_file")
        {
            table_refs.push(r.name.clone());
            continue;
        }
        let cfg = match &r.uri {
            Some(uri) => {
                let inline = inline
                    .into_iter()
                    .map(|(k, v)| {
                        Ok((
                            k.clone(),
                            vars.substitute(&v, &format!("WITH '{}.{k}'", r.name))?,
                        ))
                    })
                    .collect::<Result<BTreeMap<_, _>>>();
                inline.and_then(|i| {
                    Ok(velo_config::uri::from_uri(
                        &r.name,
                        uri,
                        Role::Source,
                        base_dir,
                        i,
                    )?)
                })
            }
            None => {
                let mut inline = inline;
                if let Some(decl) = decls.get(r.name.as_str()) {
                    for (k, v) in named_props(&decl.with, &r.name) {
                        inline.entry(k).or_insert(v);
                    }
                    match decl_schema(decl) {
                        Ok(s) => {
                            explicit_schemas.insert(r.name.clone(), s);
                        }
                        Err(e) => errors.push(e),
                    }
                }
                resolve_named(&r.name, Role::Source, &inline, base_dir, vars)
                    .map_err(EngineError::from)
            }
        };
        match cfg.and_then(|c| validated(c, warnings)) {
            Ok(mut c) => {
                c.job = st.name.clone();
                sources.push(c)
            }
            Err(e) => errors.push(e),
        }
    }
    // two Kafka sources of one job in one consumer group would rebalance
    // each other: the second and later get a group of their own
    let mut kafka = sources.iter_mut().filter(|c| c.kind == "kafka");
    kafka.next();
    for c in kafka {
        if c.get("group.id").is_none() {
            let group = format!("velo-{}-{}", c.job, c.name);
            c.props.insert("group.id".into(), group);
        }
    }
    if sources.is_empty() && !table_refs.is_empty() && errors.is_empty() {
        errors.push(EngineError::Invalid(format!(
            "job '{}' reads only the table(s) {} of earlier CREATE TABLE statements; a table is joined with a stream: add the stream to FROM",
            st.name,
            table_refs.join(", ")
        )));
    }
    let mut sinks = Vec::new();
    let mut sink_refs: Vec<(String, Option<String>)> = st
        .sinks
        .iter()
        .map(|s| (s.name.clone(), s.uri.clone()))
        .collect();
    if sink_refs.is_empty() {
        let own = with_all
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
                    warnings.push(format!(
                        "{}: no INTO clause and no '{}.type' sink: writing results to stdout",
                        st.name, st.name
                    ));
                }
                sinks.push(stdout_config("stdout", base_dir));
            }
        }
    }
    for (name, uri) in sink_refs {
        let inline = named_props(with_all, &name);
        let cfg = match uri {
            Some(u) => Ok(velo_config::uri::from_uri(
                &name,
                &u,
                Role::Sink,
                base_dir,
                inline,
            )?),
            None => {
                resolve_named(&name, Role::Sink, &inline, base_dir, vars).map_err(EngineError::from)
            }
        };
        match cfg.and_then(|c| validated(c, warnings)) {
            Ok(mut c) => {
                c.job = st.name.clone();
                sinks.push(c)
            }
            Err(e) => errors.push(e),
        }
    }
    let dlq_props = named_props(with_all, "dlq");
    let dlq = if dlq_props.is_empty() {
        None
    } else {
        let mut p = dlq_props;
        if !p.contains_key("type") && !p.contains_key("config_file") {
            p.insert("type".into(), "file_sink".into());
        }
        if !p.contains_key("format") && p.get("type").is_some_and(|t| t.starts_with("file")) {
            p.insert("format".into(), "jsonl".into());
        }
        match resolve_named("dlq", Role::Sink, &p, base_dir, vars)
            .map_err(EngineError::from)
            .and_then(|c| validated(c, warnings))
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
    };
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
        sources,
        explicit_schemas,
        sinks,
        dlq,
        table_refs,
        tables: tables.clone(),
    })
}
