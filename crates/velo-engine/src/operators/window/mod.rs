//! Windowed aggregation on unbounded input.
//!
//! Where it sits: between the driving source's scan and the rest of the
//! query. The SELECT is first normalised ([`rewrite_query`]): every window
//! syntax users write (`GROUP BY TUMBLE(ts, size)`, `HOP(ts, slide, size)`,
//! `SESSION(ts, gap)`, Velostream's `WINDOW TUMBLING(...)`, `SLIDING(...)`,
//! `SESSION(gap)`) becomes one group expression `tumble(..)` / `hop(..)` /
//! `session(..)` plus its companion `*_end(..)`, and `window_start`,
//! `window_end`, `_window_start`, `TUMBLE_START()` ... refer to them. DataFusion
//! then plans the query as an ordinary aggregate. A physical optimizer rule
//! ([`StreamingWindows`]) swaps that `AggregateExec` for a
//! [`WindowAggregateExec`], which keeps DataFusion's own accumulators
//! (`GroupsAccumulator`, so every aggregate function works) per window across
//! epochs and emits a window's rows once, when the watermark passes its end.
//! Filters, projections, HAVING and expressions stay DataFusion's.

mod exec;
mod functions;
mod rewrite;
mod state;

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::Transformed;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::sql::sqlparser::ast::{Expr, FunctionArg, FunctionArgExpr, FunctionArguments};

pub use exec::WindowAggregateExec;
pub use functions::{to_millis, udfs};
pub use rewrite::rewrite_query;
use state::Inner;

use crate::operators::metrics::WindowMetrics;
use crate::operators::state::{OperatorState, WindowStates};
use crate::time::Watermark;

/// The kinds of window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows.
    Tumble {
        /// Length in ms.
        size: i64,
    },
    /// Overlapping windows.
    Hop {
        /// A window starts every `slide` ms.
        slide: i64,
        /// Length in ms.
        size: i64,
    },
    /// Per key, records less than `gap` apart.
    Session {
        /// Gap in ms.
        gap: i64,
    },
    /// No window: a `GROUP BY` over the whole stream whose results are
    /// updated (emitted again) whenever a group changes.
    Global,
}

/// When a window operator emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emit {
    /// A window's rows once, when the watermark passes its end.
    #[default]
    Final,
    /// Every group that changed, at the end of every epoch (`EMIT CHANGES`,
    /// and every `GROUP BY` without a window on a stream).
    Changes,
}

/// What the query's window needs from the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowInfo {
    /// `tumble`, `hop` or `session`.
    pub function: String,
    /// The time column the window names, `None` for processing time.
    pub time_column: Option<String>,
}

pub(super) const START_FNS: &[&str] = &["tumble", "hop", "session"];
pub(super) const PROCTIME: &str = "velo_proctime";

pub(super) fn fn_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Function(f) => Some(f.name.to_string().to_ascii_lowercase()),
        _ => None,
    }
}

pub(super) fn fn_args(e: &Expr) -> Vec<Expr> {
    let Expr::Function(f) = e else { return vec![] };
    let FunctionArguments::List(l) = &f.args else {
        return vec![];
    };
    l.args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            FunctionArg::Named {
                arg: FunctionArgExpr::Expr(e),
                ..
            } => Some(e.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn parse_expr(sql: &str) -> crate::Result<Expr> {
    let dialect = velo_sql::VeloDialect;
    datafusion::sql::sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| crate::EngineError::Invalid(format!("window expression '{sql}': {e}")))
}

pub(super) fn column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(i.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
        _ => None,
    }
}

/// Whether `plan` aggregates by a window (such aggregates stream).
pub fn is_window_aggregate(plan: &LogicalPlan) -> bool {
    let LogicalPlan::Aggregate(a) = plan else {
        return false;
    };
    a.group_expr.iter().any(|e| {
        matches!(e, datafusion::logical_expr::Expr::ScalarFunction(f) if START_FNS.contains(&f.name()))
    })
}

/// Puts [`WindowAggregateExec`] in place of a windowed (or, updating, any)
/// `AggregateExec` over a stream; run by [`crate::operators::join::StreamingJoins`] in
/// its bottom-up pass over the physical plan.
#[derive(Debug)]
pub struct StreamingWindows {
    watermark: Arc<Watermark>,
    metrics: Arc<WindowMetrics>,
    states: Arc<WindowStates>,
    emit: Emit,
    updating: bool,
    partitions: usize,
    feeds: Vec<Arc<crate::feed::EpochFeed>>,
}

impl StreamingWindows {
    /// A rule whose operators read `watermark`, report their size to
    /// `metrics` and register their state in `states` (checkpoints). With
    /// `updating`, a `GROUP BY` without a window is also replaced, by an
    /// operator that keeps its groups across epochs and emits the changed
    /// ones ([`WindowKind::Global`]); `emit` is how windows emit. A grouped
    /// operator runs in `partitions` partitions; when only projections and
    /// filters sit between it and the scan of one of `feeds`, that scan is
    /// read by as many partitions, so the routing runs on every core too.
    pub fn new(
        watermark: Arc<Watermark>,
        metrics: Arc<WindowMetrics>,
        states: Arc<WindowStates>,
        emit: Emit,
        updating: bool,
        partitions: usize,
        feeds: Vec<Arc<crate::feed::EpochFeed>>,
    ) -> Self {
        Self {
            watermark,
            metrics,
            states,
            emit,
            updating,
            partitions: partitions.max(1),
            feeds,
        }
    }
}

/// Traces output column `col` of a plan to the lowest event time its rows
/// to come can carry (see [`crate::join`]).
pub type Trace<'a> =
    &'a dyn Fn(&Arc<dyn ExecutionPlan>, usize) -> Option<Arc<dyn Fn() -> i64 + Send + Sync>>;

impl StreamingWindows {
    /// Replaces `p` if it is a windowed (or, updating, any) aggregate over
    /// unbounded input. Its children are already streaming operators
    /// (the pass runs bottom-up): a window whose time column `trace` follows
    /// to a lower bound (a window's or join's output) closes by that bound,
    /// others by the job's watermark.
    pub fn rewrite(
        &self,
        p: Arc<dyn ExecutionPlan>,
        trace: Trace<'_>,
    ) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
        let Some(agg) = p.downcast_ref::<AggregateExec>() else {
            return Ok(Transformed::no(p));
        };
        let source = match agg.mode() {
            AggregateMode::Single | AggregateMode::SinglePartitioned => agg,
            AggregateMode::Final | AggregateMode::FinalPartitioned => {
                let mut child = agg.input();
                loop {
                    if let Some(a) = child.downcast_ref::<AggregateExec>() {
                        break a;
                    }
                    match child.children().first() {
                        Some(c) => child = c,
                        None => return Ok(Transformed::no(p.clone())),
                    }
                }
            }
            _ => return Ok(Transformed::no(p.clone())),
        };
        match WindowAggregateExec::try_new(
            source,
            agg.schema(),
            self.watermark.clone(),
            self.metrics.clone(),
            self.emit,
            self.updating,
            self.partitions,
            trace,
            &self.feeds,
        )? {
            Some(w) => {
                let desc = datafusion::physical_plan::displayable(&w as &dyn ExecutionPlan)
                    .one_line()
                    .to_string();
                for (n, i) in w.inners.iter().enumerate() {
                    self.states.register(
                        format!("{} [partition {n}]", desc.trim()),
                        i.clone() as Arc<dyn OperatorState>,
                    );
                }
                Ok(Transformed::yes(Arc::new(w)))
            }
            None => Ok(Transformed::no(p.clone())),
        }
    }
}
