//! Chained streams: a `CREATE STREAM a AS SELECT ...` read by a later
//! statement of the same application (`CREATE STREAM b AS SELECT ... FROM
//! a`), as Velostream, ksqlDB and Flink users write pipelines.
//!
//! Where it sits: in resolution, before a statement's connectors resolve.
//! A reference to an earlier stream is replaced by that stream's query as a
//! derived table (`FROM (SELECT ...) AS a`), and the stream's sources
//! become the reader's. The reader's job runs the whole chain in memory, in
//! one DataFusion plan, with no broker or channel in between: its
//! checkpoint holds the positions of the chain's sources and the state of
//! all of its operators, so a crash loses and duplicates nothing that a
//! single statement would not. A stream with no INTO that later statements
//! read is only a definition (no job of its own, nothing on stdout); one
//! with sinks also runs as its own job, which reads its sources on its own
//! (Kafka: in a consumer group of its own).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Ident, ObjectName, TableAlias, TableFactor, VisitMut, VisitorMut,
};
use velo_config::Role;
use velo_sql::{AppSpec, StatementKind, StatementSpec};

use crate::{EngineError, Result};

/// The streams of an application that later statements may read, each with
/// its own chain already inlined.
#[derive(Default)]
pub(crate) struct Chains {
    streams: HashMap<String, StatementSpec>,
}

impl Chains {
    /// Remembers `st` (chains inlined) if it is a `CREATE STREAM ... AS
    /// SELECT`.
    pub fn add(&mut self, st: &StatementSpec) {
        if st.kind == StatementKind::CreateStream && st.query.is_some() {
            self.streams.insert(st.name.clone(), st.clone());
        }
    }

    /// `st` with every earlier stream it reads inlined; `st` itself when it
    /// reads none. `with_all` tells a stream from a connector of the same
    /// name (`a.type = 'kafka_source'` reads the topic, not the stream).
    pub fn inline(
        &self,
        st: &StatementSpec,
        with_all: &BTreeMap<String, String>,
    ) -> Result<StatementSpec> {
        let chained: Vec<&StatementSpec> = st
            .sources
            .iter()
            .filter(|r| r.uri.is_none() && r.name != st.name)
            .filter_map(|r| self.streams.get(&r.name))
            .filter(|a| !is_connector(&a.name, with_all))
            .collect();
        if chained.is_empty() {
            return Ok(st.clone());
        }
        let mut out = st.clone();
        let Some(query) = out.query.as_mut() else {
            return Ok(out);
        };
        let mut sources = Vec::new();
        for r in &st.sources {
            match chained.iter().find(|a| a.name == r.name) {
                Some(a) => sources.extend(a.sources.iter().cloned()),
                None => sources.push(r.clone()),
            }
        }
        let mut seen = BTreeSet::new();
        sources.retain(|r| seen.insert(r.name.clone()));
        out.sources = sources;
        for a in &chained {
            out.within = merged(st, a, "WITHIN", out.within, a.within)?;
            out.expire = merged(st, a, "EXPIRE AFTER", out.expire, a.expire)?;
            if a.emit.as_deref() == Some("CHANGES") {
                return Err(EngineError::Invalid(format!(
                    "line {}: '{}' reads the stream '{}', whose result is a changelog (EMIT CHANGES); reading a changelog needs retraction, which is not supported yet: write '{}' into a sink and read that, or move its query into '{}'",
                    st.line, st.name, a.name, a.name, st.name
                )));
            }
        }
        let mut inliner = Inliner { chained: &chained };
        let _ = query.visit(&mut inliner);
        Ok(out)
    }
}

/// Whether `name` is configured as a source connector of its own.
fn is_connector(name: &str, with_all: &BTreeMap<String, String>) -> bool {
    with_all.contains_key(&format!("{name}.config_file"))
        || with_all
            .get(&format!("{name}.type"))
            .is_some_and(|t| velo_config::props::parse_type(t).1 == Some(Role::Source))
}

/// The reader's clause if it has one, else the stream's; two different
/// ones are refused.
fn merged<T: PartialEq + Copy + std::fmt::Debug>(
    st: &StatementSpec,
    a: &StatementSpec,
    clause: &str,
    ours: Option<T>,
    theirs: Option<T>,
) -> Result<Option<T>> {
    match (ours, theirs) {
        (Some(x), Some(y)) if x != y => Err(EngineError::Invalid(format!(
            "line {}: '{}' and the stream '{}' it reads give different {clause} intervals ({x:?} and {y:?}); give one",
            st.line, st.name, a.name
        ))),
        (x, y) => Ok(x.or(y)),
    }
}

/// Replaces table references to chained streams by their queries.
struct Inliner<'a> {
    chained: &'a [&'a StatementSpec],
}

impl VisitorMut for Inliner<'_> {
    type Break = ();

    fn post_visit_table_factor(&mut self, f: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table { name, alias, .. } = f else {
            return ControlFlow::Continue(());
        };
        let Some(a) = self.chained.iter().find(|a| is_named(name, &a.name)) else {
            return ControlFlow::Continue(());
        };
        let Some(q) = &a.query else {
            return ControlFlow::Continue(());
        };
        let alias = alias.clone().unwrap_or(TableAlias {
            explicit: true,
            name: Ident::new(&a.name),
            columns: Vec::new(),
            at: None,
        });
        *f = TableFactor::Derived {
            lateral: false,
            subquery: q.clone(),
            alias: Some(alias),
            sample: None,
        };
        ControlFlow::Continue(())
    }
}

fn is_named(name: &ObjectName, stream: &str) -> bool {
    name.0.len() == 1
        && name.0[0]
            .as_ident()
            .is_some_and(|i| i.value.eq_ignore_ascii_case(stream))
}

/// The streams of `app` that only define a step of a pipeline: no INTO, no
/// sink of their own (`<name>.type`), and read by a later statement. They
/// get no job (their results would otherwise go to stdout).
pub(crate) fn definitions(app: &AppSpec, with_all: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, st) in app.statements.iter().enumerate() {
        if st.kind != StatementKind::CreateStream
            || st.query.is_none()
            || !st.sinks.is_empty()
            || with_all.contains_key(&format!("{}.type", st.name))
            || with_all.contains_key(&format!("{}.config_file", st.name))
        {
            continue;
        }
        let read_later = app.statements[i + 1..].iter().any(|later| {
            later
                .sources
                .iter()
                .any(|r| r.uri.is_none() && r.name == st.name)
        });
        if read_later {
            out.insert(st.name.clone());
        }
    }
    out
}
