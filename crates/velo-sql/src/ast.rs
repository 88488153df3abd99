use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast::{ColumnDef, Query};

/// A `-- @name: value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    /// The name after `@`.
    pub name: String,
    /// The value after `:`.
    pub value: String,
    /// 1-based line.
    pub line: usize,
}

/// A parsed application file.
#[derive(Debug, Clone)]
pub struct AppSpec {
    /// Every annotation of the file, in order.
    pub annotations: Vec<Annotation>,
    /// The statements, in order.
    pub statements: Vec<StatementSpec>,
    /// The source text.
    pub source: String,
}

impl AppSpec {
    /// The value of an annotation anywhere in the file.
    pub fn annotation(&self, name: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.as_str())
    }

    /// All WITH properties of all statements (later statements override).
    /// Named source/sink keys are application-wide: a source declared in one
    /// statement can be read by another.
    pub fn all_with(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for s in &self.statements {
            m.extend(s.with.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        m
    }
}

/// The statement forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// `CREATE STREAM name AS SELECT ...`.
    CreateStream,
    /// `CREATE TABLE name AS SELECT ...` (keyed/updating result).
    CreateTable,
    /// `SELECT ... [INTO ...] [WITH (...)]`.
    Select,
    /// `INSERT INTO sink SELECT ...`.
    InsertInto,
    /// `CREATE STREAM name (col TYPE, ...) WITH (...)`: declares a source.
    SourceDecl,
}

/// A source referenced in FROM/JOIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    /// Table name as DataFusion will see it (generated for URIs).
    pub name: String,
    /// The URI if the SQL wrote a quoted URI.
    pub uri: Option<String>,
    /// Position of the reference.
    pub line: usize,
    /// Column of the reference.
    pub column: usize,
}

/// A sink in INTO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkRef {
    /// Sink name (generated for URIs).
    pub name: String,
    /// The URI if the SQL wrote a quoted URI.
    pub uri: Option<String>,
    /// Position.
    pub line: usize,
    /// Column.
    pub column: usize,
}

/// One statement of the application.
#[derive(Debug, Clone)]
pub struct StatementSpec {
    /// Form.
    pub kind: StatementKind,
    /// Stream/table name, or `query_<n>` for bare SELECT / INSERT.
    pub name: String,
    /// The SELECT (absent for source declarations).
    pub query: Option<Box<Query>>,
    /// Sources in FROM/JOIN, in order of appearance, deduplicated.
    pub sources: Vec<SourceRef>,
    /// Sinks in INTO (empty: decided by the engine).
    pub sinks: Vec<SinkRef>,
    /// `WITH (...)` properties, keys as written.
    pub with: BTreeMap<String, String>,
    /// Column list of a source declaration.
    pub columns: Vec<ColumnDef>,
    /// `EMIT CHANGES` / `EMIT FINAL`, if written.
    pub emit: Option<String>,
    /// `WITHIN INTERVAL '5' MINUTES`: the event times of joined streams lie
    /// at most this far apart.
    pub within: Option<std::time::Duration>,
    /// `EXPIRE AFTER INTERVAL '5' MINUTES INACTIVITY` in an OVER clause: the
    /// row-window state of a key without rows for that long is dropped.
    pub expire: Option<std::time::Duration>,
    /// `SELECT symbol PRIMARY KEY, ...`: the result columns that form the
    /// key of its records (the Kafka message key), in order.
    pub primary_key: Vec<String>,
    /// Annotations written just before this statement.
    pub annotations: Vec<Annotation>,
    /// 1-based line where the statement starts.
    pub line: usize,
    /// The statement text.
    pub text: String,
}
