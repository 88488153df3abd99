/// Result alias of this crate.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

/// A SQL error with its position, quoting the offending text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} at line {line}, column {column}\n{snippet}")]
pub struct SqlError {
    /// What is wrong and what to do.
    pub message: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The source line with a caret under the column.
    pub snippet: String,
}

impl SqlError {
    /// An error at `line`:`column` of `source`.
    pub fn at(source: &str, line: usize, column: usize, message: impl Into<String>) -> Self {
        let full = source.lines().nth(line.saturating_sub(1)).unwrap_or("");
        // a long line is shown around the column
        let chars: Vec<char> = full.chars().collect();
        let at = column.saturating_sub(1).min(chars.len());
        let from = at.saturating_sub(40);
        let to = (at + 60).min(chars.len());
        let text: String = format!(
            "{}{}{}",
            if from > 0 { "..." } else { "" },
            chars[from..to].iter().collect::<String>(),
            if to < chars.len() { "..." } else { "" }
        );
        let caret = format!("{}^", " ".repeat(at - from + if from > 0 { 3 } else { 0 }));
        Self {
            message: message.into(),
            line,
            column,
            snippet: format!("  {line:>4} | {text}\n       | {caret}"),
        }
    }

    /// Converts a sqlparser message (which embeds "at Line: L, Column: C").
    pub fn from_parser(source: &str, msg: &str, fallback: (usize, usize)) -> Self {
        let (line, col) = extract_position(msg).unwrap_or(fallback);
        let clean = match msg.find(" at Line:") {
            Some(i) => &msg[..i],
            None => msg,
        };
        let clean = clean.trim_start_matches("sql parser error: ").to_string();
        Self::at(source, line, col, clean)
    }
}

fn extract_position(msg: &str) -> Option<(usize, usize)> {
    let i = msg.find("Line: ")?;
    let rest = &msg[i + 6..];
    let line: usize = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let j = rest.find("Column: ")?;
    let col: usize = rest[j + 8..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((line, col))
}
