//! Planning's check of change modes: what each source produces and each
//! sink accepts ([`ChangeMode`], declared by the connector's registry
//! entry), against what the query does with it.
//!
//! - An updating result (a GROUP BY without a window on a stream, EMIT
//!   CHANGES, or the rows of a changelog source passed through) goes only
//!   into sinks that accept changes: an append-only sink would turn every
//!   update into a second row and lose every delete.
//! - A changelog source (CDC, a table's change feed, a compacted topic)
//!   cannot feed an aggregate, a window, a join or DISTINCT yet: their
//!   state would need retraction (taking back what an update or a delete
//!   replaces), which this engine does not have. A query that only filters
//!   and projects passes the changes through, `_op` included.

use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::LogicalPlan;
use velo_connectors::ChangeMode;
use velo_connectors::changelog::OP_COLUMN;

use super::PreparedJob;
use crate::{EngineError, Result};

/// Refuses a source or a sink whose change mode the query cannot honour.
pub(super) fn check_change_modes(p: &PreparedJob) -> Result<()> {
    let registry = p.plan.engine.registry();
    let refuse = |m: String| EngineError::Invalid(format!("job '{}': {m}", p.plan.name));
    let mut passes_changes = None;
    for cfg in changelog_sources(p) {
        if let Some(op) = stateful_operator(&p.logical) {
            return Err(refuse(format!(
                "source '{}' ({}_source) produces a changelog (updates and deletes), and the query feeds it into {op}, which would need to take back what each update or delete replaces (retraction, not supported yet); read it with a query that only filters and projects (keeping {OP_COLUMN}), or read the table's snapshot instead of its changes",
                cfg.name, cfg.kind
            )));
        }
        if p.logical
            .schema()
            .field_with_unqualified_name(OP_COLUMN)
            .is_err()
        {
            return Err(refuse(format!(
                "source '{}' ({}_source) produces a changelog, and the query drops its {OP_COLUMN} column, so every update and delete would arrive as a new row; select {OP_COLUMN} (SELECT *, or list it)",
                cfg.name, cfg.kind
            )));
        }
        passes_changes.get_or_insert(cfg.name.clone());
    }
    let why = if p.is_changelog() {
        "the query's result is updating (a GROUP BY without a window on a stream, or EMIT CHANGES)"
            .to_string()
    } else if let Some(src) = passes_changes {
        format!("the query passes on the changes of source '{src}'")
    } else {
        return Ok(());
    };
    for cfg in &p.plan.sinks {
        let mode = registry
            .change_mode(cfg)
            .map_err(|e| refuse(e.to_string()))?;
        if mode == ChangeMode::AppendOnly {
            return Err(refuse(format!(
                "sink '{}' ({}_sink) {}, and {why}: each update would be one more row and deletes would be lost. Write it to a sink that applies changes by key (kafka_sink) or stores them with {OP_COLUMN} (file_sink), or give the aggregate a window (GROUP BY TUMBLE(...)) so that each row written is final",
                cfg.name,
                cfg.kind,
                mode.describe()
            )));
        }
    }
    Ok(())
}

/// The sources of `p` that produce a changelog (their kind's
/// [`ChangeMode`] has changes).
pub(super) fn changelog_sources(
    p: &PreparedJob,
) -> impl Iterator<Item = &velo_config::ConnectorConfig> {
    p.plan.sources.iter().filter(|c| {
        p.plan
            .engine
            .registry()
            .change_mode(c)
            .is_ok_and(|m| m.has_changes())
    })
}

/// The first operator of `plan` that keeps state over its input rows.
fn stateful_operator(plan: &LogicalPlan) -> Option<&'static str> {
    let mut found = None;
    let _ = plan.apply(|n| {
        found = match n {
            LogicalPlan::Aggregate(_) => Some("an aggregate (GROUP BY)"),
            LogicalPlan::Window(_) => Some("a window function (OVER)"),
            LogicalPlan::Join(_) => Some("a join"),
            LogicalPlan::Distinct(_) => Some("DISTINCT"),
            _ => None,
        };
        Ok(if found.is_some() {
            datafusion::common::tree_node::TreeNodeRecursion::Stop
        } else {
            datafusion::common::tree_node::TreeNodeRecursion::Continue
        })
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use velo_config::VarContext;
    use velo_config::global::GlobalConfig;
    use velo_connectors::registry::Registry;

    use crate::plan::{AppInputs, Purpose, prepare_job, resolve_inputs};

    /// A registry with two plug-ins built from the built-in kinds: a sink
    /// that only appends (`ledger`) and a source of changes (`cdc`).
    fn engine() -> crate::Engine {
        let mut r = Registry::builtin();
        let mut ledger = r.sink_kind("blackhole").unwrap();
        ledger.name = "ledger";
        ledger.changes = |_| ChangeMode::AppendOnly;
        r.add_sink(ledger);
        let mut cdc = r.source_kind("datagen").unwrap();
        cdc.name = "cdc";
        cdc.changes = |_| ChangeMode::Upsert;
        r.add_source(cdc);
        crate::Engine::new(r)
    }

    /// Plans `query` reading `src_type` into a sink of `sink_type`.
    fn plan(query: &str, src_type: &str, sink_type: &str) -> std::result::Result<(), String> {
        let inputs = AppInputs {
            sql: format!(
                "CREATE STREAM s AS {query} INTO out WITH (
                 'ev.type' = '{src_type}', 'ev.columns' = 'k:int(1,5), v:int(1,9), _op:oneof(insert|update)',
                 'ev.rows' = '10', 'out.type' = '{sink_type}');"
            ),
            base_dir: PathBuf::from("/apps"),
            env: VarContext::with_env(BTreeMap::new()),
            global: GlobalConfig::default(),
            sets: Vec::new(),
            engine: engine(),
        };
        let (app, errors) = resolve_inputs(&inputs).map_err(|e| e.to_string())?;
        assert!(errors.is_empty(), "{errors:?}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(prepare_job(
            &app.jobs[0],
            &crate::Shutdown::default(),
            Purpose::Check,
        ))
        .map(drop)
        .map_err(|e| e.to_string())
    }

    const UPDATING: &str = "SELECT k, COUNT(*) AS n FROM ev GROUP BY k EMIT CHANGES";

    #[test]
    fn an_updating_result_goes_only_into_sinks_that_take_changes() {
        let e = plan(UPDATING, "datagen", "ledger").unwrap_err();
        assert!(
            e.contains("sink 'out' (ledger_sink) appends rows only")
                && e.contains("updating")
                && e.contains("kafka_sink")
                && e.contains("TUMBLE"),
            "{e}"
        );
        plan(UPDATING, "datagen", "blackhole").unwrap();
        // an append-only result goes anywhere
        plan("SELECT k, v FROM ev", "datagen", "ledger").unwrap();
    }

    #[test]
    fn a_changelog_source_feeds_no_state_and_keeps_its_operations() {
        for (query, what) in [
            ("SELECT k, COUNT(*) AS n FROM ev GROUP BY k", "an aggregate"),
            ("SELECT DISTINCT k FROM ev", "DISTINCT"),
            (
                "SELECT k, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v) AS r FROM ev",
                "a window function",
            ),
        ] {
            let e = plan(query, "cdc", "blackhole").unwrap_err();
            assert!(
                e.contains("source 'ev' (cdc_source) produces a changelog")
                    && e.contains(what)
                    && e.contains("retraction"),
                "{query}: {e}"
            );
        }
        let e = plan("SELECT k, v FROM ev", "cdc", "blackhole").unwrap_err();
        assert!(e.contains("drops its _op column"), "{e}");
        // filtered and projected, its changes pass on: into sinks that take them
        plan("SELECT k, v, _op FROM ev WHERE v > 2", "cdc", "blackhole").unwrap();
        let e = plan("SELECT * FROM ev", "cdc", "ledger").unwrap_err();
        assert!(e.contains("passes on the changes of source 'ev'"), "{e}");
    }
}
