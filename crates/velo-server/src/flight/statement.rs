//! What a Flight SQL statement asks for: a Velostream application to
//! deploy, a job to manage, a subscription to a job's output, or an ad hoc
//! query for DataFusion. Read with sqlparser's tokenizer, so that comments,
//! quoting and case are those of SQL.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Word};

/// One statement sent by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// `CREATE STREAM ...` / `CREATE TABLE ...`: the whole text is an
    /// application, deployed as `POST /api/jobs` does.
    Deploy(String),
    /// `SHOW JOBS`.
    ShowJobs,
    /// `SHOW STATUS <job>`.
    ShowStatus(String),
    /// `STOP JOB <job>`.
    Stop(String),
    /// `START JOB <job>`.
    Start(String),
    /// `DROP JOB <job> [PURGE]` (`PURGE` also removes its state).
    Drop {
        /// The job.
        job: String,
        /// Whether its checkpoints go too.
        purge: bool,
    },
    /// `SELECT ... FROM <job> ... EMIT CHANGES [LIMIT n]`: each committed
    /// epoch of the job from now on, through `query` (the statement
    /// without `EMIT CHANGES` and its `LIMIT`), until the client cancels
    /// or `limit` rows were sent.
    Subscribe {
        /// The query applied to each epoch's rows.
        query: String,
        /// Rows to send before the stream ends.
        limit: Option<u64>,
    },
    /// Anything else: a query for DataFusion (with `?` placeholders
    /// numbered as `$1`, `$2`, ...).
    Query(String),
}

/// Reads `sql`.
pub fn classify(sql: &str) -> Result<Statement, String> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| format!("the statement cannot be read: {e}"))?;
    let words: Vec<&Token> = tokens.iter().filter(|t| !is_space(t)).collect();
    let word = |i: usize| -> Option<String> {
        match words.get(i) {
            Some(Token::Word(w)) => Some(w.value.to_ascii_uppercase()),
            _ => None,
        }
    };
    let name = |i: usize| -> Result<String, String> {
        match words.get(i) {
            Some(Token::Word(Word { value, .. })) => Ok(value.clone()),
            Some(Token::SingleQuotedString(s)) => Ok(s.clone()),
            _ => Err("name the job: e.g. STOP JOB my_job".into()),
        }
    };
    // a trailing `;` is no second statement
    let end = |i: usize| -> Result<(), String> {
        match words.get(i..) {
            None | Some([]) | Some([Token::SemiColon]) => Ok(()),
            _ => Err(format!(
                "unexpected text after the statement: {}",
                words[i..]
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
        }
    };
    let kw = |i: usize| word(i).unwrap_or_default();
    // `<verb> <noun> <job>` and nothing after it
    let on_job = |f: fn(String) -> Statement| -> Result<Statement, String> {
        let job = name(2)?;
        end(3)?;
        Ok(f(job))
    };
    match (kw(0).as_str(), kw(1).as_str()) {
        ("CREATE", "STREAM" | "TABLE") => Ok(Statement::Deploy(sql.to_string())),
        ("SHOW", "JOBS") => end(2).map(|_| Statement::ShowJobs),
        ("SHOW", "STATUS") => on_job(Statement::ShowStatus),
        ("STOP", "JOB") => on_job(Statement::Stop),
        ("START", "JOB") => on_job(Statement::Start),
        ("DROP", "JOB") => {
            let job = name(2)?;
            let purge = kw(3) == "PURGE";
            end(if purge { 4 } else { 3 })?;
            Ok(Statement::Drop { job, purge })
        }
        _ => Ok(subscription(&tokens).unwrap_or_else(|| Statement::Query(numbered(&tokens)))),
    }
}

fn is_space(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_))
}

/// `... EMIT CHANGES [LIMIT n] [;]` at the end of the statement.
fn subscription(tokens: &[Token]) -> Option<Statement> {
    let solid: Vec<usize> = (0..tokens.len())
        .filter(|i| !is_space(&tokens[*i]) && tokens[*i] != Token::SemiColon)
        .collect();
    // EMIT is no keyword of sqlparser: words compared by their text
    let is =
        |i: usize, k: &str| matches!(&tokens[i], Token::Word(w) if w.value.eq_ignore_ascii_case(k));
    let at = solid
        .windows(2)
        .position(|w| is(w[0], "EMIT") && is(w[1], "CHANGES"))?;
    let rest = &solid[at + 2..];
    let limit = match rest {
        [] => None,
        [l, n] if is(*l, "LIMIT") => match &tokens[*n] {
            Token::Number(n, _) => Some(n.parse().ok()?),
            _ => return None,
        },
        _ => return None,
    };
    Some(Statement::Subscribe {
        query: numbered(&tokens[..solid[at]]),
        limit,
    })
}

/// The statement's text with each `?` placeholder numbered (`$1`, `$2`,
/// ...), the placeholders DataFusion binds, and each `'file://...'` table
/// (after FROM or JOIN) written as its path, which may hold a glob.
fn numbered(tokens: &[Token]) -> String {
    let mut n = 0;
    let mut after_from = false;
    let mut out = String::new();
    for t in tokens {
        match t {
            Token::Placeholder(p) if p == "?" => {
                n += 1;
                out.push_str(&format!("${n}"));
            }
            Token::SingleQuotedString(s) if after_from && s.starts_with("file://") => {
                let path = url::Url::parse(s)
                    .ok()
                    .filter(|u| {
                        u.host_str()
                            .is_none_or(|h| h.is_empty() || h == "localhost")
                    })
                    .map(|u| {
                        percent_encoding::percent_decode_str(u.path())
                            .decode_utf8_lossy()
                            .into_owned()
                    });
                match path {
                    Some(p) => out.push_str(&Token::SingleQuotedString(p).to_string()),
                    None => out.push_str(&t.to_string()),
                }
            }
            t => out.push_str(&t.to_string()),
        }
        if !is_space(t) {
            after_from =
                matches!(t, Token::Word(w) if matches!(w.keyword, Keyword::FROM | Keyword::JOIN));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements() {
        let app =
            "-- orders\nCREATE STREAM x AS SELECT * FROM a INTO b WITH ('a.type'='file_source')";
        assert_eq!(classify(app).unwrap(), Statement::Deploy(app.into()));
        assert_eq!(classify("show jobs;").unwrap(), Statement::ShowJobs);
        assert_eq!(
            classify("SHOW STATUS \"my-job\"").unwrap(),
            Statement::ShowStatus("my-job".into())
        );
        assert_eq!(
            classify("stop job j1").unwrap(),
            Statement::Stop("j1".into())
        );
        assert_eq!(
            classify("DROP JOB j1 PURGE").unwrap(),
            Statement::Drop {
                job: "j1".into(),
                purge: true
            }
        );
        assert!(classify("STOP JOB").is_err());
        assert!(classify("STOP JOB a b").is_err());
        assert_eq!(
            classify("SELECT * FROM t WHERE a = ? AND b = '?'").unwrap(),
            Statement::Query("SELECT * FROM t WHERE a = $1 AND b = '?'".into())
        );
        assert_eq!(
            classify("SELECT * FROM 'file:///data/x%20y/*.parquet' WHERE s = 'file:///keep'")
                .unwrap(),
            Statement::Query("SELECT * FROM '/data/x y/*.parquet' WHERE s = 'file:///keep'".into())
        );
        assert_eq!(
            classify("SELECT a FROM j WHERE a > 1 EMIT CHANGES LIMIT 5;").unwrap(),
            Statement::Subscribe {
                query: "SELECT a FROM j WHERE a > 1 ".into(),
                limit: Some(5)
            }
        );
        assert_eq!(
            classify("select * from j emit changes").unwrap(),
            Statement::Subscribe {
                query: "select * from j ".into(),
                limit: None
            }
        );
    }
}
