//! Lowering a statement's SELECT to a DataFusion [`LogicalPlan`], against the
//! tables registered in the session (the engine registers one streaming
//! table per source before calling this).

use datafusion::error::Result;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{Query, Statement};

/// Plans `query` with DataFusion's SQL planner.
pub async fn to_logical_plan(state: &SessionState, query: &Query) -> Result<LogicalPlan> {
    let stmt = DFStatement::Statement(Box::new(Statement::Query(Box::new(query.clone()))));
    state.statement_to_plan(stmt).await
}
