//! The query rewrite: every window syntax to one group expression.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, GroupByExpr, Ident, Query, SelectItem, SetExpr};

use super::*;

/// Normalises the window of `query` (see the module docs). `event_time` is
/// the driving source's declared time column, used by the forms that name
/// none (`WINDOW TUMBLING(INTERVAL '1' MINUTE)`); without one they run on
/// processing time. Returns `None` for a query without a window.
pub fn rewrite_query(
    query: &mut Query,
    event_time: Option<&str>,
) -> crate::Result<Option<WindowInfo>> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Ok(None);
    };
    // windows in subqueries of FROM / JOIN (a join of windowed streams)
    let mut nested = None;
    for twj in &mut select.from {
        for f in
            std::iter::once(&mut twj.relation).chain(twj.joins.iter_mut().map(|j| &mut j.relation))
        {
            if let datafusion::sql::sqlparser::ast::TableFactor::Derived { subquery, .. } = f
                && let Some(w) = rewrite_query(subquery, event_time)?
            {
                nested.get_or_insert(w);
            }
        }
    }
    let GroupByExpr::Expressions(exprs, _) = &mut select.group_by else {
        return Ok(nested);
    };
    let mut found: Option<(usize, String, Vec<Expr>)> = None;
    for (i, e) in exprs.iter().enumerate() {
        let Some(name) = fn_name(e) else { continue };
        let kind = match name.as_str() {
            "tumble" | "tumbling" => "tumble",
            "hop" | "hopping" | "sliding" => "hop",
            "session" => "session",
            _ => continue,
        };
        if found.is_some() {
            return Err(crate::EngineError::Invalid(
                "a query may group by one window only".into(),
            ));
        }
        let mut args = fn_args(e);
        let want = if kind == "hop" { 3 } else { 2 };
        if args.len() + 1 == want {
            let ts = match event_time {
                Some(c) => Expr::Identifier(Ident::new(c)),
                None => parse_expr(&format!("{PROCTIME}()"))?,
            };
            args.insert(0, ts);
        }
        if args.len() != want {
            return Err(crate::EngineError::Invalid(format!(
                "{} takes {}: {e}",
                name.to_ascii_uppercase(),
                match kind {
                    "tumble" => "(time column, size) or (size)",
                    "session" => "(time column, gap) or (gap)",
                    _ if name == "sliding" => "(time column, size, slide) or (size, slide)",
                    _ => "(time column, slide, size) or (slide, size)",
                }
            )));
        }
        if name == "sliding" {
            // SLIDING(ts, size, slide) is HOP(ts, slide, size)
            args.swap(1, 2);
        }
        found = Some((i, kind.to_string(), args));
    }
    let Some((pos, kind, args)) = found else {
        return Ok(nested);
    };
    let arg_text = args
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let start = parse_expr(&format!("{kind}({arg_text})"))?;
    let end = parse_expr(&format!("{kind}_end({arg_text})"))?;
    exprs[pos] = start.clone();
    exprs.push(end.clone());
    let time_column = if fn_name(&args[0]).as_deref() == Some(PROCTIME) {
        None
    } else {
        Some(column_name(&args[0]).ok_or_else(|| {
            crate::EngineError::Invalid(format!(
                "the window's time argument must be a column of the source, not '{}'; declare '<source>.event.time.field' and '<source>.event.time.format' to read another column as event time",
                args[0]
            ))
        })?)
    };
    // window_start / window_end and the *_START() / *_END() functions
    let which = |e: &Expr| -> Option<(bool, String)> {
        match e {
            Expr::Identifier(i) if i.quote_style.is_none() => {
                let l = i.value.to_ascii_lowercase();
                match l.as_str() {
                    "window_start" | "_window_start" => Some((true, l)),
                    "window_end" | "_window_end" => Some((false, l)),
                    _ => None,
                }
            }
            Expr::Function(_) => {
                let n = fn_name(e)?;
                let (w, edge) = n.rsplit_once('_')?;
                if !["tumble", "hop", "session", "tumbling", "sliding", "hopping"].contains(&w) {
                    return None;
                }
                match edge {
                    "start" => Some((true, n)),
                    "end" => Some((false, n)),
                    _ => None,
                }
            }
            _ => None,
        }
    };
    for item in select.projection.iter_mut() {
        if let SelectItem::UnnamedExpr(e) = item
            && let Some((_, alias)) = which(e)
        {
            *item = SelectItem::ExprWithAlias {
                expr: e.clone(),
                alias: Ident::new(alias),
            };
        }
    }
    // this query's own clauses, not the subqueries of its FROM (their
    // windows are their own)
    let mut replace = |e: &mut Expr| {
        if let Some((is_start, _)) = which(e) {
            *e = if is_start { start.clone() } else { end.clone() };
        }
        ControlFlow::<()>::Continue(())
    };
    use datafusion::sql::sqlparser::ast::visit_expressions_mut as visit;
    let _ = visit(&mut select.projection, &mut replace);
    let _ = visit(&mut select.selection, &mut replace);
    let _ = visit(&mut select.group_by, &mut replace);
    let _ = visit(&mut select.having, &mut replace);
    let _ = visit(&mut query.order_by, &mut replace);
    Ok(Some(WindowInfo {
        function: kind,
        time_column,
    }))
}
