//! Collisions and self-harm refused before anything runs (`validate` and
//! `run` both resolve through here): two statements with one name (one
//! would resume from the other's checkpoint), two sinks writing one file or
//! path template (in one job or several: their epochs would overwrite and
//! cut back each other's files), a dead-letter file shared by jobs, and a
//! sink that writes into a source's input (it would be truncated before it
//! is read, or read back forever).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use velo_config::{ConnectorConfig, Role};
use velo_sql::AppSpec;

use crate::EngineError;
use crate::plan::JobPlan;

/// The placeholder a path template may hold for the job's name, so that the
/// jobs of one application can share keys (`dlq.path`) and not a file.
pub const JOB_PLACEHOLDER: &str = "{job}";

/// Every collision of the application's jobs. Fills in `{job}` in the
/// paths of file sinks first.
pub fn check(app: &AppSpec, jobs: &mut [JobPlan]) -> Vec<EngineError> {
    let mut errors = duplicate_names(app, jobs);
    for j in jobs.iter_mut() {
        let name = j.name.clone();
        for c in j.sinks.iter_mut().chain(j.dlq.iter_mut()) {
            if let Some(p) = c.props.get_mut("path") {
                *p = p.replace(JOB_PLACEHOLDER, &name);
            }
        }
    }
    errors.extend(shared_outputs(jobs));
    errors.extend(outputs_into_inputs(jobs));
    errors
}

/// Two statements (queries or source declarations) with one name, or two
/// jobs with one name.
fn duplicate_names(app: &AppSpec, jobs: &[JobPlan]) -> Vec<EngineError> {
    let mut errors = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for st in &app.statements {
        if let Some(line) = seen.insert(st.name.as_str(), st.line) {
            errors.push(EngineError::Invalid(format!(
                "line {}: a statement named '{}' already stands at line {line}; statement names must be unique (each job keeps its checkpoint under its name): rename one",
                st.line, st.name
            )));
        }
    }
    let mut jobs_seen: BTreeMap<&str, &str> = BTreeMap::new();
    for j in jobs {
        if let Some(other) = jobs_seen.insert(j.name.as_str(), j.statement.name.as_str())
            && other != j.statement.name
        {
            errors.push(EngineError::Invalid(format!(
                "the statements '{other}' and '{}' both run as job '{}' (job.name or -- @job_name); job names must be unique: rename one",
                j.statement.name, j.name
            )));
        }
    }
    errors
}

/// A file a job writes: its path template made absolute and normalized.
struct Output<'a> {
    job: &'a str,
    cfg: &'a ConnectorConfig,
    path: PathBuf,
}

impl Output<'_> {
    fn describe(&self) -> String {
        if self.cfg.name == "dlq" {
            format!("the dead-letter sink of job '{}'", self.job)
        } else {
            format!("sink '{}' of job '{}'", self.cfg.name, self.job)
        }
    }
}

/// The files and templates the jobs write (file sinks and dead-letter files).
fn outputs(jobs: &[JobPlan]) -> Vec<Output<'_>> {
    let mut out = Vec::new();
    for j in jobs {
        for c in j.sinks.iter().chain(j.dlq.iter()) {
            if c.kind != "file" || c.role != Role::Sink {
                continue;
            }
            if let Some(p) = c.get("path") {
                out.push(Output {
                    job: &j.name,
                    cfg: c,
                    path: normalize(&c.path(p)),
                });
            }
        }
    }
    out
}

/// The files and path templates `job` writes (file sinks and its
/// dead-letter file), absolute and normalized: a job server compares them
/// with those of the jobs it hosts already.
pub fn file_outputs(job: &JobPlan) -> Vec<PathBuf> {
    outputs(std::slice::from_ref(job))
        .into_iter()
        .map(|o| o.path)
        .collect()
}

/// One error per file (or template) written by more than one sink.
fn shared_outputs(jobs: &[JobPlan]) -> Vec<EngineError> {
    let mut by_path: BTreeMap<PathBuf, Vec<Output<'_>>> = BTreeMap::new();
    for o in outputs(jobs) {
        by_path.entry(o.path.clone()).or_default().push(o);
    }
    by_path
        .into_iter()
        .filter(|(_, writers)| writers.len() > 1)
        .map(|(path, writers)| {
            let hint = if writers.iter().all(|w| w.cfg.name == "dlq") {
                format!(
                    "put {JOB_PLACEHOLDER} in 'dlq.path' (e.g. 'dead-letters-{JOB_PLACEHOLDER}.jsonl') so that each job writes its own"
                )
            } else {
                "give each its own path".to_string()
            };
            EngineError::Invalid(format!(
                "{} all write '{}': their epochs would overwrite each other's output; {hint}",
                writers
                    .iter()
                    .map(Output::describe)
                    .collect::<Vec<_>>()
                    .join(", "),
                path.display()
            ))
        })
        .collect()
}

/// One error per output that writes into what a file source reads.
fn outputs_into_inputs(jobs: &[JobPlan]) -> Vec<EngineError> {
    // every input once, with the sources that read it
    let mut inputs: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for j in jobs {
        for src in j
            .sources
            .iter()
            .filter(|s| s.kind == "file" && s.role == Role::Source)
        {
            if let Some(p) = src.get("path") {
                let readers = inputs.entry(normalize(&src.path(p))).or_default();
                let who = format!("source '{}' of job '{}'", src.name, j.name);
                if !readers.contains(&who) {
                    readers.push(who);
                }
            }
        }
    }
    let mut errors = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for o in outputs(jobs) {
        if !seen.insert((o.path.clone(), o.describe())) {
            continue;
        }
        // the template as it renders now, and as written
        let rendered = PathBuf::from(velo_connectors::template::render(
            &o.path.to_string_lossy(),
            chrono::Local::now(),
            1,
        ));
        for (input, readers) in &inputs {
            let pattern = glob::Pattern::new(&input.to_string_lossy()).ok();
            let hit = o.path == *input
                || rendered == *input
                || rendered.starts_with(input)
                || pattern
                    .as_ref()
                    .is_some_and(|p| p.matches_path(&rendered) || p.matches_path(&o.path));
            if hit {
                errors.push(EngineError::Invalid(format!(
                    "{} writes '{}', which {} read(s): the input would be overwritten before it is read, or read back forever; write the output somewhere else",
                    o.describe(),
                    o.path.display(),
                    readers.join(" and ")
                )));
            }
        }
    }
    errors
}

/// `p` absolute, with `.` and `..` resolved as written (the file need not
/// exist) and its existing directory part resolved through symbolic links.
pub fn normalize(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    // the longest existing prefix through its links (`/tmp` -> `/private/tmp`)
    let mut head = out.clone();
    let mut tail = Vec::new();
    while !head.as_os_str().is_empty() {
        if let Ok(real) = std::fs::canonicalize(&head) {
            let mut r = real;
            for t in tail.iter().rev() {
                r.push(t);
            }
            return r;
        }
        match (head.file_name().map(|f| f.to_os_string()), head.parent()) {
            (Some(name), Some(parent)) => {
                tail.push(name);
                head = parent.to_path_buf();
            }
            _ => break,
        }
    }
    out
}
