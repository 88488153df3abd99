//! The application parser: statement forms on top of sqlparser's `Parser`.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, Query, SetExpr, TableFactor, TableWithJoins, UnaryOperator, Value,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Span, Token, TokenWithSpan, Tokenizer, Word};

use crate::ast::{Annotation, AppSpec, SinkRef, SourceRef, StatementKind, StatementSpec};
use crate::{SqlError, VeloDialect};

/// Parses a whole application file.
pub fn parse_app(source: &str) -> crate::Result<AppSpec> {
    let annotations = scan_annotations(source);
    let dialect = VeloDialect;
    let tokens = Tokenizer::new(&dialect, source)
        .tokenize_with_location()
        .map_err(|e| {
            SqlError::at(
                source,
                e.location.line as usize,
                e.location.column as usize,
                e.message.clone(),
            )
        })?;
    check_operator_chains(source, &tokens)?;
    let (tokens, uris) = rewrite_uri_sources(tokens);
    let tokens = rewrite_window_clauses(tokens);
    let tokens = rewrite_within(tokens);
    let (tokens, expires) = rewrite_row_buffers(source, tokens)?;
    let (tokens, primary_keys) = rewrite_primary_keys(source, tokens)?;
    let mut p = AppParser {
        source,
        parser: Parser::new(&dialect).with_tokens_with_locations(tokens),
        uris,
        query_count: 0,
        expires,
        primary_keys,
    };
    let mut statements = Vec::new();
    let mut prev_end_line = 0usize;
    loop {
        while p.parser.consume_token(&Token::SemiColon) {}
        if p.parser.peek_token().token == Token::EOF {
            break;
        }
        let mut stmt = p.statement()?;
        stmt.annotations = annotations
            .iter()
            .filter(|a| a.line > prev_end_line && a.line < stmt.line)
            .cloned()
            .collect();
        prev_end_line = p.parser.peek_token().span.start.line as usize;
        statements.push(stmt);
    }
    for a in &annotations {
        if !crate::KNOWN_ANNOTATIONS.contains(&a.name.as_str()) {
            tracing::debug!(line = a.line, "ignoring unknown annotation '@{}'", a.name);
        }
    }
    if statements.is_empty() {
        return Err(SqlError::at(
            source,
            1,
            1,
            "the application has no statements; expected CREATE STREAM ... AS SELECT ..., SELECT ... or INSERT INTO ...",
        ));
    }
    Ok(AppSpec {
        annotations,
        statements,
        source: source.to_string(),
    })
}

/// The most binary operators one expression may chain at one level of
/// parentheses. A chain `a + b + ...` parses into a tree as deep as it is
/// long, which planning, evaluation and even dropping walk recursively: a
/// bound keeps them inside the stack (nesting by parentheses is bounded by
/// the parser's recursion limit).
pub const MAX_OPERATOR_CHAIN: usize = 500;

/// Refuses an expression that chains more than [`MAX_OPERATOR_CHAIN`]
/// binary operators, counted on the tokens (no recursion).
fn check_operator_chains(source: &str, tokens: &[TokenWithSpan]) -> crate::Result<()> {
    // per open parenthesis: operators chained so far, and where the chain began
    let mut levels: Vec<(usize, Span)> = vec![(0, Span::empty())];
    for t in tokens {
        let depth = levels.len();
        let top = levels.last_mut().expect("the outermost level stays");
        match &t.token {
            Token::LParen | Token::LBracket | Token::LBrace => levels.push((0, t.span)),
            Token::RParen | Token::RBracket | Token::RBrace if depth > 1 => {
                levels.pop();
            }
            Token::Comma | Token::SemiColon => top.0 = 0,
            Token::Word(w) if matches!(w.keyword, Keyword::AND | Keyword::OR | Keyword::XOR) => {
                bump(top, t.span)
            }
            // SELECT, FROM, WHERE, WHEN, THEN, AS ... start a new expression
            Token::Word(w) if w.quote_style.is_none() && is_clause_keyword(w.keyword) => top.0 = 0,
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::DuckIntDiv
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Spaceship
            | Token::Caret
            | Token::Ampersand
            | Token::Pipe
            | Token::ShiftLeft
            | Token::ShiftRight => bump(top, t.span),
            _ => {}
        }
        if let Some((n, start)) = levels.last()
            && *n > MAX_OPERATOR_CHAIN
        {
            return Err(SqlError::at(
                source,
                start.start.line as usize,
                start.start.column as usize,
                format!(
                    "this expression chains more than {MAX_OPERATOR_CHAIN} operators without parentheses or commas; split it into smaller expressions (a long OR of equalities reads better as IN (...))"
                ),
            ));
        }
    }
    Ok(())
}

/// Counts one operator of the chain at `top`.
fn bump(top: &mut (usize, Span), at: Span) {
    if top.0 == 0 {
        top.1 = at;
    }
    top.0 += 1;
}

/// Keywords that end one expression and begin another.
fn is_clause_keyword(k: Keyword) -> bool {
    matches!(
        k,
        Keyword::SELECT
            | Keyword::FROM
            | Keyword::WHERE
            | Keyword::GROUP
            | Keyword::HAVING
            | Keyword::ORDER
            | Keyword::BY
            | Keyword::LIMIT
            | Keyword::OFFSET
            | Keyword::ON
            | Keyword::JOIN
            | Keyword::CASE
            | Keyword::WHEN
            | Keyword::THEN
            | Keyword::ELSE
            | Keyword::END
            | Keyword::AS
            | Keyword::INTO
            | Keyword::WITH
            | Keyword::UNION
            | Keyword::EXCEPT
            | Keyword::INTERSECT
            | Keyword::OVER
            | Keyword::PARTITION
            | Keyword::WINDOW
            | Keyword::VALUES
            | Keyword::SET
            | Keyword::WITHIN
    )
}

fn scan_annotations(source: &str) -> Vec<Annotation> {
    source
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let rest = l
                .trim_start()
                .strip_prefix("--")?
                .trim_start()
                .strip_prefix('@')?;
            let (name, value) = rest.split_once(':')?;
            let name = name.trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '-')
            {
                return None;
            }
            Some(Annotation {
                name: name.to_string(),
                value: value.trim().to_string(),
                line: i + 1,
            })
        })
        .collect()
}

/// Replaces a quoted string right after FROM / JOIN with a generated table
/// name, so that sqlparser sees an ordinary table reference.
fn rewrite_uri_sources(
    mut tokens: Vec<TokenWithSpan>,
) -> (Vec<TokenWithSpan>, BTreeMap<String, String>) {
    let mut uris = BTreeMap::new();
    let mut prev: Option<Keyword> = None;
    for t in tokens.iter_mut() {
        match &t.token {
            Token::Whitespace(_) => continue,
            Token::SingleQuotedString(s)
                if matches!(prev, Some(Keyword::FROM) | Some(Keyword::JOIN))
                    && s.contains("://") =>
            {
                let name = format!("__uri_{}", uris.len() + 1);
                uris.insert(name.clone(), s.clone());
                t.token = Token::Word(Word {
                    value: name,
                    quote_style: None,
                    keyword: Keyword::NoKeyword,
                });
            }
            _ => {}
        }
        prev = match &t.token {
            Token::Word(w) => Some(w.keyword),
            _ => None,
        };
    }
    (tokens, uris)
}

fn is_word(t: &Token, word: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

fn word(value: &str) -> Token {
    Token::Word(Word {
        value: value.to_string(),
        quote_style: None,
        keyword: match value {
            "GROUP" => Keyword::GROUP,
            "BY" => Keyword::BY,
            "INTERVAL" => Keyword::INTERVAL,
            _ => Keyword::NoKeyword,
        },
    })
}

/// The paren depth of a token pass, with marks set at depths (a clause seen
/// in the query at that depth): a mark goes when its parenthesis closes or
/// the statement ends.
#[derive(Default)]
struct Depth {
    depth: i32,
    marks: Vec<i32>,
}

impl Depth {
    /// Follows a parenthesis or a semicolon (other tokens change nothing).
    fn follow(&mut self, t: &Token) {
        match t {
            Token::LParen => self.depth += 1,
            Token::RParen => {
                self.unmark();
                self.depth -= 1;
            }
            Token::SemiColon => {
                self.marks.clear();
                self.depth = 0;
            }
            _ => {}
        }
    }
    fn mark(&mut self) {
        self.marks.push(self.depth);
    }
    fn unmark(&mut self) {
        let d = self.depth;
        self.marks.retain(|m| *m != d);
    }
    fn marked(&self) -> bool {
        self.marks.contains(&self.depth)
    }
    /// Whether the innermost mark is at this depth.
    fn innermost(&self) -> bool {
        self.marks.last() == Some(&self.depth)
    }
}

/// The index of the first token from `from` that is not whitespace.
fn next_sig(tokens: &[TokenWithSpan], from: usize) -> Option<usize> {
    (from..tokens.len()).find(|&k| !matches!(tokens[k].token, Token::Whitespace(_)))
}

/// Velostream's window clause, `... GROUP BY k WINDOW TUMBLING(ts, INTERVAL
/// '1' MINUTE)` (also `SLIDING(...)`, `SESSION(...)`, `HOPPING(...)`, before
/// or after GROUP BY, with or without one), becomes one more GROUP BY
/// expression, `TUMBLING(...)`, which the engine turns into its window.
/// Durations written `5m`, `30s`, `1h`, `500ms`, `1d` inside the clause
/// become intervals.
fn rewrite_window_clauses(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let sig = |from: usize| next_sig(&tokens, from);
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len() + 8);
    // marked: the depths at which this statement already has a GROUP BY
    let mut grouped = Depth::default();
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        grouped.follow(&t.token);
        match &t.token {
            tok if is_word(tok, "GROUP")
                && sig(i + 1).is_some_and(|k| is_word(&tokens[k].token, "BY")) =>
            {
                grouped.mark();
            }
            tok if is_word(tok, "WINDOW") => {
                let clause = sig(i + 1).filter(|&j| {
                    ["TUMBLING", "SLIDING", "SESSION", "HOPPING"]
                        .iter()
                        .any(|w| is_word(&tokens[j].token, w))
                        && sig(j + 1).is_some_and(|k| tokens[k].token == Token::LParen)
                });
                if let Some(j) = clause {
                    let open = sig(j + 1).expect("checked above");
                    let mut d = 0;
                    let mut close = None;
                    for (k, tk) in tokens.iter().enumerate().skip(open) {
                        match tk.token {
                            Token::LParen => d += 1,
                            Token::RParen => {
                                d -= 1;
                                if d == 0 {
                                    close = Some(k);
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                    if let Some(close) = close {
                        let span = t.span;
                        let mk = |token: Token| TokenWithSpan { token, span };
                        let space = || {
                            mk(Token::Whitespace(
                                datafusion::sql::sqlparser::tokenizer::Whitespace::Space,
                            ))
                        };
                        let mut body = Vec::new();
                        let mut k = j;
                        while k <= close {
                            if let Token::Number(n, _) = &tokens[k].token
                                && let Some(Token::Word(u)) = tokens.get(k + 1).map(|t| &t.token)
                            {
                                let unit = match u.value.to_ascii_lowercase().as_str() {
                                    "ms" => Some("milliseconds"),
                                    "s" => Some("seconds"),
                                    "m" => Some("minutes"),
                                    "h" => Some("hours"),
                                    "d" => Some("days"),
                                    _ => None,
                                };
                                if let Some(unit) = unit {
                                    body.push(mk(word("INTERVAL")));
                                    body.push(space());
                                    body.push(mk(Token::SingleQuotedString(format!("{n} {unit}"))));
                                    k += 2;
                                    continue;
                                }
                            }
                            body.push(tokens[k].clone());
                            k += 1;
                        }
                        let after = sig(close + 1).filter(|&a| {
                            is_word(&tokens[a].token, "GROUP")
                                && sig(a + 1).is_some_and(|b| is_word(&tokens[b].token, "BY"))
                        });
                        if grouped.marked() {
                            out.push(mk(Token::Comma));
                            out.push(space());
                            out.extend(body);
                            i = close + 1;
                        } else {
                            out.extend([mk(word("GROUP")), space(), mk(word("BY")), space()]);
                            out.extend(body);
                            grouped.mark();
                            i = close + 1;
                            if let Some(a) = after {
                                // the clause came first: its GROUP BY follows
                                out.push(mk(Token::Comma));
                                i = sig(a + 1).expect("BY") + 1;
                            }
                        }
                        continue;
                    }
                }
            }
            _ => {}
        }
        out.push(t.clone());
        i += 1;
    }
    out
}

/// Milliseconds in a time unit word (`MINUTE`, `minutes`, `s` ...).
fn unit_millis(unit: &str) -> Option<u64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "ms" | "millisecond" | "milliseconds" => 1,
        "s" | "second" | "seconds" => 1_000,
        "m" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        _ => return None,
    })
}

/// `'5' MINUTES` or `'5 minutes'`: the quoted text and the unit after it.
fn interval(text: &str, unit: Option<&str>) -> Option<std::time::Duration> {
    let mut parts = text.split_whitespace();
    let amount = parts.next().unwrap_or("");
    let unit = unit.or_else(|| parts.next())?;
    let (a, m) = amount
        .parse::<f64>()
        .ok()
        .filter(|a| *a >= 0.0)
        .zip(unit_millis(unit))?;
    Some(std::time::Duration::from_millis((a * m as f64) as u64))
}

/// Velostream's row buffers inside OVER (...): `ROWS WINDOW BUFFER 100
/// ROWS` becomes the frame `ROWS BETWEEN 99 PRECEDING AND CURRENT ROW` (when
/// the clause has no frame of its own), `EXPIRE AFTER INTERVAL '5' MINUTES
/// INACTIVITY` (or `NEVER`) is taken out and returned with where it was
/// written, and `EMIT EVERY RECORD` (what a row window does anyway) is
/// dropped.
#[allow(clippy::type_complexity)]
fn rewrite_row_buffers(
    source: &str,
    tokens: Vec<TokenWithSpan>,
) -> crate::Result<(
    Vec<TokenWithSpan>,
    Vec<((u64, u64), Option<std::time::Duration>)>,
)> {
    let sig = |from: usize| {
        (from..tokens.len()).find(|&k| !matches!(tokens[k].token, Token::Whitespace(_)))
    };
    let words = |from: usize, ws: &[&str]| -> Option<usize> {
        let mut at = from;
        for w in ws {
            let k = sig(at)?;
            if !is_word(&tokens[k].token, w) {
                return None;
            }
            at = k + 1;
        }
        Some(at)
    };
    let err = |t: &TokenWithSpan, m: String| {
        SqlError::at(
            source,
            t.span.start.line as usize,
            t.span.start.column as usize,
            m,
        )
    };
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut expires = Vec::new();
    let mut depth = 0i32;
    // inside OVER (...): its paren depth, the buffer size, whether it has a frame
    let mut over: Option<(i32, Option<u64>, bool)> = None;
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        match &t.token {
            Token::LParen => {
                depth += 1;
                if over.is_none()
                    && out
                        .iter()
                        .rev()
                        .find(|p| !matches!(p.token, Token::Whitespace(_)))
                        .is_some_and(|p| is_word(&p.token, "OVER"))
                {
                    over = Some((depth, None, false));
                }
            }
            Token::RParen => {
                if let Some((d, buffer, framed)) = over
                    && d == depth
                {
                    over = None;
                    if let (Some(n), false) = (buffer, framed) {
                        let frame = format!(" ROWS BETWEEN {} PRECEDING AND CURRENT ROW ", n - 1);
                        let extra = Tokenizer::new(&VeloDialect, &frame)
                            .tokenize()
                            .map_err(|e| err(t, e.message))?;
                        out.extend(extra.into_iter().map(|token| TokenWithSpan {
                            token,
                            span: t.span,
                        }));
                    }
                }
                depth -= 1;
            }
            Token::SemiColon => {
                depth = 0;
                over = None;
            }
            tok if over.is_some_and(|(d, _, _)| d == depth) => {
                let o = over.as_mut().expect("inside OVER");
                if let Some(end) = words(i, &["ROWS", "WINDOW", "BUFFER"]) {
                    let k = sig(end).unwrap_or(end);
                    let n = match tokens.get(k).map(|t| &t.token) {
                        Some(Token::Number(n, _)) => n.parse::<u64>().ok().filter(|n| *n > 0),
                        _ => None,
                    };
                    let Some(n) = n else {
                        return Err(err(
                            t,
                            "expected a number of rows after ROWS WINDOW BUFFER, as in ROWS WINDOW BUFFER 100 ROWS".into(),
                        ));
                    };
                    o.1 = Some(n);
                    i = words(k + 1, &["ROWS"]).unwrap_or(k + 1);
                    continue;
                }
                if let Some(end) = words(i, &["EXPIRE", "AFTER"]) {
                    let at = (t.span.start.line, t.span.start.column);
                    if let Some(end) = words(end, &["NEVER"]) {
                        expires.push((at, None));
                        i = end;
                        continue;
                    }
                    let amount =
                        words(end, &["INTERVAL"]).and_then(sig).and_then(|k| {
                            match &tokens[k].token {
                                Token::SingleQuotedString(s) | Token::Number(s, _) => {
                                    Some((k, s.clone()))
                                }
                                _ => None,
                            }
                        });
                    let parsed = amount.and_then(|(k, text)| {
                        let u = sig(k + 1).filter(|&u| {
                            matches!(&tokens[u].token, Token::Word(w) if w.quote_style.is_none() && unit_millis(&w.value).is_some())
                        });
                        let unit = u.map(|u| tokens[u].token.to_string());
                        let d = interval(&text, unit.as_deref())?;
                        Some((u.unwrap_or(k) + 1, d))
                    });
                    let Some((mut end, d)) = parsed else {
                        return Err(err(
                            t,
                            "expected EXPIRE AFTER INTERVAL '5' MINUTES INACTIVITY or EXPIRE AFTER NEVER".into(),
                        ));
                    };
                    if let Some(e) = words(end, &["INACTIVITY"]) {
                        end = e;
                    }
                    expires.push((at, Some(d)));
                    i = end;
                    continue;
                }
                if let Some(end) = words(i, &["EMIT", "EVERY", "RECORD"]) {
                    i = end;
                    continue;
                }
                if is_word(tok, "EMIT") {
                    return Err(err(
                        t,
                        "a row window emits a result for every record (EMIT EVERY RECORD); other EMIT modes inside OVER (...) are not supported".into(),
                    ));
                }
                if ["ROWS", "RANGE", "GROUPS"].iter().any(|w| is_word(tok, w)) {
                    o.2 = true;
                }
            }
            _ => {}
        }
        out.push(t.clone());
        i += 1;
    }
    Ok((out, expires))
}

/// `SELECT symbol PRIMARY KEY, region PRIMARY KEY, price FROM ...`: the
/// columns marked in a SELECT list (by their output name: the alias if
/// there is one) are returned with where they were written, and the marks
/// are taken out.
#[allow(clippy::type_complexity)]
fn rewrite_primary_keys(
    source: &str,
    tokens: Vec<TokenWithSpan>,
) -> crate::Result<(Vec<TokenWithSpan>, Vec<((u64, u64), String)>)> {
    let sig = |from: usize| next_sig(&tokens, from);
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut keys = Vec::new();
    // marked: the depths of the SELECT lists we are in
    let mut lists = Depth::default();
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        lists.follow(&t.token);
        match &t.token {
            tok if is_word(tok, "SELECT") => lists.mark(),
            tok if is_word(tok, "FROM") => lists.unmark(),
            tok if is_word(tok, "PRIMARY")
                && lists.innermost()
                && sig(i + 1).is_some_and(|k| is_word(&tokens[k].token, "KEY")) =>
            {
                let name = out
                    .iter()
                    .rev()
                    .find(|p| !matches!(p.token, Token::Whitespace(_)))
                    .and_then(|p| match &p.token {
                        Token::Word(w) => Some(w.value.clone()),
                        _ => None,
                    });
                let Some(name) = name else {
                    return Err(SqlError::at(
                        source,
                        t.span.start.line as usize,
                        t.span.start.column as usize,
                        "PRIMARY KEY marks a column of the SELECT list: write `symbol PRIMARY KEY` or `expr AS name PRIMARY KEY`",
                    ));
                };
                keys.push(((t.span.start.line, t.span.start.column), name));
                i = sig(i + 1).expect("KEY") + 1;
                continue;
            }
            _ => {}
        }
        out.push(t.clone());
        i += 1;
    }
    Ok((out, keys))
}

/// `... JOIN b ON a.k = b.k WITHIN INTERVAL '5' MINUTES WHERE ...`: the
/// WITHIN clause of a query (it may stand before WHERE / GROUP BY, where
/// SQL has no place for it) is moved to the end of its query, where the
/// statement parser reads it.
fn rewrite_within(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let sig = |from: usize| {
        (from..tokens.len()).find(|&k| !matches!(tokens[k].token, Token::Whitespace(_)))
    };
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    // the moved clause and the paren depth of its query
    let mut held: Option<(Vec<TokenWithSpan>, i32)> = None;
    let mut depth = 0i32;
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        let ends_query = match &t.token {
            Token::SemiColon | Token::EOF => true,
            Token::RParen => held.as_ref().is_some_and(|(_, d)| *d == depth),
            tok => {
                held.as_ref().is_some_and(|(_, d)| *d == depth)
                    && ["INTO", "EMIT", "WITH"].iter().any(|w| is_word(tok, w))
            }
        };
        if ends_query && let Some((clause, _)) = held.take() {
            out.extend(clause);
            out.push(TokenWithSpan {
                token: Token::Whitespace(datafusion::sql::sqlparser::tokenizer::Whitespace::Space),
                span: t.span,
            });
        }
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::SemiColon => depth = 0,
            tok if is_word(tok, "WITHIN")
                && held.is_none()
                && sig(i + 1).is_some_and(|k| is_word(&tokens[k].token, "INTERVAL")) =>
            {
                // WITHIN INTERVAL <amount> [unit]
                let k = sig(i + 1).expect("INTERVAL");
                let mut end = sig(k + 1).map_or(k + 1, |a| a + 1);
                if let Some(u) = sig(end)
                    && matches!(&tokens[u].token, Token::Word(w) if w.quote_style.is_none() && unit_millis(&w.value).is_some())
                {
                    end = u + 1;
                }
                held = Some((tokens[i..end.min(tokens.len())].to_vec(), depth));
                i = end;
                continue;
            }
            _ => {}
        }
        out.push(t.clone());
        i += 1;
    }
    if let Some((clause, _)) = held {
        out.extend(clause);
    }
    out
}

struct AppParser<'a> {
    source: &'a str,
    parser: Parser<'a>,
    uris: BTreeMap<String, String>,
    query_count: usize,
    /// `EXPIRE AFTER` of the OVER clauses: where written, and the interval
    /// (None: NEVER).
    expires: Vec<((u64, u64), Option<std::time::Duration>)>,
    /// `PRIMARY KEY` after a SELECT item: where written, and the column.
    primary_keys: Vec<((u64, u64), String)>,
}

impl AppParser<'_> {
    fn err_here(&self, message: impl Into<String>) -> SqlError {
        let t = self.parser.peek_token();
        let found = if t.token == Token::EOF {
            "end of input".to_string()
        } else {
            format!("'{}'", t.token)
        };
        self.err_at(t.span, format!("{}, found {found}", message.into()))
    }

    /// An error at token `t`.
    fn err_at(&self, span: Span, message: String) -> SqlError {
        SqlError::at(
            self.source,
            span.start.line as usize,
            span.start.column as usize,
            message,
        )
    }

    fn wrap(&self, e: datafusion::sql::sqlparser::parser::ParserError) -> SqlError {
        let t = self.parser.peek_token();
        SqlError::from_parser(
            self.source,
            &e.to_string(),
            (t.span.start.line as usize, t.span.start.column as usize),
        )
    }

    fn statement(&mut self) -> crate::Result<StatementSpec> {
        let start = self.parser.peek_token();
        let line = start.span.start.line as usize;
        let start_idx = (line, start.span.start.column as usize);
        let mut kind;
        let mut name;
        let mut sinks = Vec::new();
        if self.parser.parse_keyword(Keyword::CREATE) {
            let _ = self.parser.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
            kind = if self.parser.parse_keyword(Keyword::STREAM) {
                StatementKind::CreateStream
            } else if self.parser.parse_keyword(Keyword::TABLE) {
                StatementKind::CreateTable
            } else {
                return Err(self.err_here("expected STREAM or TABLE after CREATE"));
            };
            let _ = self
                .parser
                .parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
            name = self
                .parser
                .parse_identifier()
                .map_err(|e| self.wrap(e))?
                .value;
            if self.parser.peek_token().token == Token::LParen {
                // source declaration with a column list
                self.parser
                    .expect_token(&Token::LParen)
                    .map_err(|e| self.wrap(e))?;
                let mut columns = Vec::new();
                let mut watermark: Option<(String, Option<String>)> = None;
                loop {
                    if self.parse_word("WATERMARK") {
                        watermark = Some(self.watermark_clause()?);
                    } else {
                        columns.push(self.parser.parse_column_def().map_err(|e| self.wrap(e))?);
                    }
                    if !self.parser.consume_token(&Token::Comma) {
                        break;
                    }
                }
                self.parser
                    .expect_token(&Token::RParen)
                    .map_err(|e| self.wrap(e))?;
                let mut with = if self.parser.parse_keyword(Keyword::WITH) {
                    self.with_props()?
                } else {
                    BTreeMap::new()
                };
                if let Some((column, lag)) = watermark {
                    // keys written in WITH win over the clause
                    with.entry(format!("{name}.event.time.field"))
                        .or_insert(column);
                    match lag {
                        Some(lag) => with
                            .entry(format!("{name}.watermark.max_out_of_orderness"))
                            .or_insert(lag),
                        None => with
                            .entry(format!("{name}.watermark.strategy"))
                            .or_insert_with(|| "ascending".into()),
                    };
                }
                self.end_of_statement()?;
                return Ok(StatementSpec {
                    kind: StatementKind::SourceDecl,
                    name,
                    query: None,
                    sources: vec![],
                    sinks: vec![],
                    with,
                    columns,
                    emit: None,
                    within: None,
                    expire: None,
                    primary_key: vec![],
                    annotations: vec![],
                    line,
                    text: self.text_since(start_idx),
                });
            }
            if !self.parser.parse_keyword(Keyword::AS) {
                return Err(self.err_here(format!(
                    "expected AS SELECT ... or a column list after CREATE STREAM {name}"
                )));
            }
        } else if self.parser.parse_keyword(Keyword::INSERT) {
            if !self.parser.parse_keyword(Keyword::INTO) {
                return Err(self.err_here("expected INTO after INSERT"));
            }
            sinks.push(self.sink_ref()?);
            kind = StatementKind::InsertInto;
            self.query_count += 1;
            name = format!("query_{}", self.query_count);
        } else if matches!(self.parser.peek_token().token, Token::Word(ref w) if matches!(w.keyword, Keyword::SELECT | Keyword::WITH))
            || self.parser.peek_token().token == Token::LParen
        {
            kind = StatementKind::Select;
            self.query_count += 1;
            name = format!("query_{}", self.query_count);
        } else {
            return Err(
                self.err_here("expected CREATE STREAM, CREATE TABLE, SELECT or INSERT INTO")
            );
        }
        let mut query = self.parser.parse_query().map_err(|e| self.wrap(e))?;
        // `FROM t WITH (...)`: sqlparser reads the property list as table hints
        let hints = take_hints(&mut query);
        let mut with = BTreeMap::new();
        if !hints.is_empty() {
            with = self.hints_to_props(hints)?;
        }
        // the WITHIN clause was moved to the end of the query
        let within = if self.parser.parse_keyword(Keyword::WITHIN) {
            Some(self.within_interval()?)
        } else {
            None
        };
        let mut emit = None;
        // EMIT CHANGES may come before INTO too
        if self.parse_word("EMIT") {
            emit = Some(self.emit_mode()?);
        }
        if self.parser.parse_keyword(Keyword::INTO) {
            if kind == StatementKind::InsertInto {
                return Err(
                    self.err_here("INSERT INTO already names the sink; remove the second INTO")
                );
            }
            loop {
                sinks.push(self.sink_ref()?);
                if !self.parser.consume_token(&Token::Comma) {
                    break;
                }
            }
        }
        // EMIT and WITH may come in either order
        for _ in 0..2 {
            if emit.is_none() && self.parse_word("EMIT") {
                emit = Some(self.emit_mode()?);
            } else if self.parser.parse_keyword(Keyword::WITH) {
                with = self.with_props()?;
            }
        }
        self.end_of_statement()?;
        if kind == StatementKind::CreateStream && name.is_empty() {
            kind = StatementKind::Select;
        }
        let sources = self.sources_of(&query);
        // EXPIRE AFTER of this statement's OVER clauses: the shortest
        let end = self.parser.peek_token().span.start;
        let here = |at: &(u64, u64)| {
            *at >= (start_idx.0 as u64, start_idx.1 as u64) && *at < (end.line, end.column)
        };
        let expire = self
            .expires
            .iter()
            .filter(|(at, _)| here(at))
            .filter_map(|(_, d)| *d)
            .min();
        let primary_key = self
            .primary_keys
            .iter()
            .filter(|(at, _)| here(at))
            .map(|(_, k)| k.clone())
            .collect();
        if name.is_empty() {
            name = "query".into();
        }
        Ok(StatementSpec {
            kind,
            name,
            query: Some(query),
            sources,
            sinks,
            with,
            columns: vec![],
            emit,
            within,
            expire,
            primary_key,
            annotations: vec![],
            line,
            text: self.text_since(start_idx),
        })
    }

    /// `INTERVAL '5' MINUTES` or `INTERVAL '5 minutes'` after WITHIN.
    fn within_interval(&mut self) -> crate::Result<std::time::Duration> {
        if !self.parser.parse_keyword(Keyword::INTERVAL) {
            return Err(self.err_here("expected INTERVAL '5' MINUTES after WITHIN"));
        }
        let at = self.parser.peek_token();
        let text = match self.parser.next_token().token {
            Token::SingleQuotedString(s) | Token::Number(s, _) => s,
            _ => {
                return Err(self.err_at(
                    at.span,
                    "expected a quoted amount after WITHIN INTERVAL, as in WITHIN INTERVAL '5' MINUTES".into(),
                ));
            }
        };
        let unit = match self.parser.peek_token().token {
            Token::Word(w) if w.quote_style.is_none() && unit_millis(&w.value).is_some() => {
                self.parser.next_token();
                Some(w.value)
            }
            _ => None,
        };
        match interval(&text, unit.as_deref()) {
            Some(d) => Ok(d),
            None => Err(self.err_at(
                at.span,
                format!("WITHIN INTERVAL '{text}' is not a duration; write it as WITHIN INTERVAL '5' MINUTES (MILLISECONDS, SECONDS, MINUTES, HOURS or DAYS)"),
            )),
        }
    }

    /// `CHANGES` or `FINAL` (after EMIT).
    fn emit_mode(&mut self) -> crate::Result<String> {
        let t = self.parser.next_token();
        match &t.token {
            Token::Word(w)
                if w.value.eq_ignore_ascii_case("CHANGES")
                    || w.value.eq_ignore_ascii_case("FINAL") =>
            {
                Ok(w.value.to_ascii_uppercase())
            }
            _ => Err(self.err_here("expected CHANGES or FINAL after EMIT")),
        }
    }

    /// `WATERMARK FOR ts AS ts - INTERVAL '5' SECOND` (after WATERMARK):
    /// the time column and the allowed lateness (`None`: `AS ts`, ascending).
    fn watermark_clause(&mut self) -> crate::Result<(String, Option<String>)> {
        if !self.parser.parse_keyword(Keyword::FOR) {
            return Err(self.err_here("expected FOR after WATERMARK"));
        }
        let column = self
            .parser
            .parse_identifier()
            .map_err(|e| self.wrap(e))?
            .value;
        if !self.parser.parse_keyword(Keyword::AS) {
            return Err(self.err_here(format!("expected AS after WATERMARK FOR {column}")));
        }
        let at = self.parser.peek_token().span;
        let e = self.parser.parse_expr().map_err(|e| self.wrap(e))?;
        let lag = match &e {
            Expr::Identifier(i) if i.value.eq_ignore_ascii_case(&column) => Ok(None),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Minus,
                right,
            } if matches!(left.as_ref(), Expr::Identifier(i) if i.value.eq_ignore_ascii_case(&column)) => {
                match right.as_ref() {
                    Expr::Interval(iv) => {
                        let value = match iv.value.as_ref() {
                            Expr::Value(v) => match &v.value {
                                Value::SingleQuotedString(s) | Value::Number(s, _) => s.clone(),
                                other => other.to_string(),
                            },
                            other => other.to_string(),
                        };
                        let unit = iv
                            .leading_field
                            .as_ref()
                            .map(|f| f.to_string())
                            .unwrap_or_default();
                        Some(format!("{value} {unit}").trim().to_lowercase())
                    }
                    _ => None,
                }
                .map(Some)
                .ok_or(())
            }
            _ => Err(()),
        }
        .map_err(|_| {
            self.err_at(
                at,
                format!(
                    "expected WATERMARK FOR {column} AS {column} - INTERVAL '5' SECOND (or AS {column} for ascending time), found {e}"
                ),
            )
        })?;
        Ok((column, lag))
    }

    /// Consumes `word` (not a sqlparser keyword) if it comes next.
    fn parse_word(&mut self, word: &str) -> bool {
        match self.parser.peek_token().token {
            Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word) => {
                self.parser.next_token();
                true
            }
            _ => false,
        }
    }

    fn end_of_statement(&self) -> crate::Result<()> {
        match self.parser.peek_token().token {
            Token::SemiColon | Token::EOF => Ok(()),
            _ => Err(self.err_here("expected ';' or the end of the statement (INTO, WITH, EMIT)")),
        }
    }

    fn text_since(&self, start: (usize, usize)) -> String {
        let end = self.parser.peek_token().span.start;
        let (a, b) = (
            offset(self.source, start),
            if end.line == 0 {
                self.source.len()
            } else {
                offset(self.source, (end.line as usize, end.column as usize))
            },
        );
        self.source
            .get(a..b.max(a))
            .unwrap_or("")
            .trim()
            .to_string()
    }

    fn sink_ref(&mut self) -> crate::Result<SinkRef> {
        let t = self.parser.next_token();
        let (line, column) = (t.span.start.line as usize, t.span.start.column as usize);
        match t.token {
            Token::SingleQuotedString(s) => {
                let name = format!("__sink_uri_{line}_{column}");
                Ok(SinkRef {
                    name,
                    uri: Some(s),
                    line,
                    column,
                })
            }
            Token::Word(w)
                if w.keyword == Keyword::NoKeyword
                    || w.quote_style.is_some()
                    || !matches!(w.keyword, Keyword::WITH | Keyword::SELECT) =>
            {
                let mut name = w.value;
                // dotted names are kept whole
                while self.parser.consume_token(&Token::Period) {
                    let n = self.parser.parse_identifier().map_err(|e| self.wrap(e))?;
                    name = format!("{name}.{}", n.value);
                }
                Ok(SinkRef {
                    name,
                    uri: None,
                    line,
                    column,
                })
            }
            other => Err(SqlError::at(
                self.source,
                line,
                column,
                format!("expected a sink name or a quoted URI after INTO, found '{other}'"),
            )),
        }
    }

    /// `( 'k' = 'v', k.k2 = 42, 'list' = ['a', 'b'] )`
    fn with_props(&mut self) -> crate::Result<BTreeMap<String, String>> {
        self.parser
            .expect_token(&Token::LParen)
            .map_err(|e| self.wrap(e))?;
        let mut out = BTreeMap::new();
        if self.parser.consume_token(&Token::RParen) {
            return Ok(out);
        }
        loop {
            let t = self.parser.next_token();
            let mut key = match t.token {
                Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s,
                Token::Word(w) => w.value,
                other => {
                    return Err(self.err_at(
                        t.span,
                        format!("expected a property name such as 'orders.type', found '{other}'"),
                    ));
                }
            };
            while self.parser.consume_token(&Token::Period) {
                match self.parser.next_token().token {
                    Token::Word(w) => key = format!("{key}.{}", w.value),
                    _ => return Err(self.err_here("expected a name after '.' in a property key")),
                }
            }
            if !self.parser.consume_token(&Token::Eq) {
                return Err(self.err_here(format!("expected '=' after property '{key}'")));
            }
            let value = self.prop_value()?;
            if out.insert(key.clone(), value).is_some() {
                tracing::warn!(
                    "property '{key}' is given twice in one WITH clause; the last value wins"
                );
            }
            if self.parser.consume_token(&Token::Comma) {
                if self.parser.consume_token(&Token::RParen) {
                    break; // trailing comma
                }
                continue;
            }
            if self.parser.consume_token(&Token::RParen) {
                break;
            }
            return Err(self.err_here("expected ',' or ')' in WITH (...)"));
        }
        Ok(out)
    }

    fn prop_value(&mut self) -> crate::Result<String> {
        let t = self.parser.next_token();
        Ok(match t.token {
            Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s,
            Token::Number(n, _) => n,
            Token::Minus => match self.parser.next_token().token {
                Token::Number(n, _) => format!("-{n}"),
                _ => return Err(self.err_here("expected a number after '-'")),
            },
            Token::Word(w) => w.value,
            Token::LBracket => {
                let mut items = Vec::new();
                if !self.parser.consume_token(&Token::RBracket) {
                    loop {
                        items.push(self.prop_value()?);
                        if self.parser.consume_token(&Token::RBracket) {
                            break;
                        }
                        if !self.parser.consume_token(&Token::Comma) {
                            return Err(self.err_here("expected ',' or ']' in a list value"));
                        }
                    }
                }
                items.join(",")
            }
            other => {
                return Err(self.err_at(
                    t.span,
                    format!("expected a quoted value, number or list, found '{other}'"),
                ));
            }
        })
    }

    fn hints_to_props(&self, hints: Vec<Expr>) -> crate::Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for h in hints {
            let Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } = &h
            else {
                return Err(
                    self.err_here(format!("expected 'key' = 'value' in WITH (...), found {h}"))
                );
            };
            let key = match left.as_ref() {
                Expr::Value(v) => literal(&v.value),
                Expr::Identifier(i) => i.value.clone(),
                Expr::CompoundIdentifier(parts) => parts
                    .iter()
                    .map(|p| p.value.clone())
                    .collect::<Vec<_>>()
                    .join("."),
                other => {
                    return Err(self.err_here(format!(
                        "expected a property name such as 'orders.type', found {other}"
                    )));
                }
            };
            out.insert(key, expr_value(right));
        }
        Ok(out)
    }

    fn sources_of(&self, query: &Query) -> Vec<SourceRef> {
        let mut out = Vec::new();
        let mut ctes = Vec::new();
        collect_query(query, &mut ctes, &mut out);
        let mut seen = std::collections::HashSet::new();
        out.retain(|s: &SourceRef| seen.insert(s.name.clone()));
        for s in &mut out {
            s.uri = self.uris.get(&s.name).cloned();
        }
        out
    }
}

fn collect_query(q: &Query, ctes: &mut Vec<String>, out: &mut Vec<SourceRef>) {
    if let Some(with) = &q.with {
        for cte in &with.cte_tables {
            collect_query(&cte.query, ctes, out);
            ctes.push(cte.alias.name.value.clone());
        }
    }
    collect_set_expr(&q.body, ctes, out);
}

fn collect_set_expr(s: &SetExpr, ctes: &mut Vec<String>, out: &mut Vec<SourceRef>) {
    match s {
        SetExpr::Select(sel) => {
            for twj in &sel.from {
                collect_twj(twj, ctes, out);
            }
        }
        SetExpr::Query(q) => collect_query(q, ctes, out),
        SetExpr::SetOperation { left, right, .. } => {
            collect_set_expr(left, ctes, out);
            collect_set_expr(right, ctes, out);
        }
        _ => {}
    }
}

fn collect_twj(t: &TableWithJoins, ctes: &mut Vec<String>, out: &mut Vec<SourceRef>) {
    collect_factor(&t.relation, ctes, out);
    for j in &t.joins {
        collect_factor(&j.relation, ctes, out);
    }
}

fn collect_factor(f: &TableFactor, ctes: &mut Vec<String>, out: &mut Vec<SourceRef>) {
    match f {
        TableFactor::Table { name, .. } => {
            let n = name.to_string();
            if !ctes.contains(&n) {
                let span = name
                    .0
                    .first()
                    .and_then(|p| p.as_ident())
                    .map(|i| i.span.start);
                let (line, column) = span
                    .map(|s| (s.line as usize, s.column as usize))
                    .unwrap_or((0, 0));
                let clean = name
                    .0
                    .iter()
                    .filter_map(|p| p.as_ident())
                    .map(|i| i.value.clone())
                    .collect::<Vec<_>>()
                    .join(".");
                out.push(SourceRef {
                    name: clean,
                    uri: None,
                    line,
                    column,
                });
            }
        }
        TableFactor::Derived { subquery, .. } => collect_query(subquery, ctes, out),
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => collect_twj(table_with_joins, ctes, out),
        _ => {}
    }
}

/// Byte offset of a 1-based (line, column) position.
fn offset(source: &str, (line, col): (usize, usize)) -> usize {
    let mut off = 0;
    for (i, l) in source.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return off
                + l.char_indices()
                    .nth(col.saturating_sub(1))
                    .map(|(b, _)| b)
                    .unwrap_or(l.len());
        }
        off += l.len();
    }
    source.len()
}

fn literal(v: &Value) -> String {
    match v {
        Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
        Value::Number(n, _) => n.to_string(),
        Value::Boolean(b) => b.to_string(),
        other => other.to_string(),
    }
}

fn expr_value(e: &Expr) -> String {
    match e {
        Expr::Value(v) => literal(&v.value),
        Expr::Identifier(i) => i.value.clone(),
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => format!("-{}", expr_value(expr)),
        Expr::Array(a) => a.elem.iter().map(expr_value).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Removes the table hints of the last FROM item (where a trailing
/// `WITH (...)` lands) and returns them.
fn take_hints(q: &mut Query) -> Vec<Expr> {
    fn in_factor(f: &mut TableFactor) -> Vec<Expr> {
        match f {
            TableFactor::Table { with_hints, .. } => std::mem::take(with_hints),
            _ => vec![],
        }
    }
    let SetExpr::Select(sel) = q.body.as_mut() else {
        return vec![];
    };
    let Some(last) = sel.from.last_mut() else {
        return vec![];
    };
    match last.joins.last_mut() {
        Some(j) => in_factor(&mut j.relation),
        None => in_factor(&mut last.relation),
    }
}
