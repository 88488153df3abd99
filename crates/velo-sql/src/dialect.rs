use datafusion::sql::sqlparser::dialect::{Dialect, GenericDialect};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;

/// The Velostream dialect: sqlparser's generic dialect, except that the
/// words that end a Velostream query (`INTO`, `EMIT`, `WITHIN`) are never
/// taken as table or column aliases.
#[derive(Debug, Default, Clone, Copy)]
pub struct VeloDialect;

const RESERVED: &[Keyword] = &[Keyword::INTO, Keyword::WITHIN];

/// Words that end a Velostream query but are not sqlparser keywords.
const RESERVED_WORDS: &[&str] = &["EMIT"];

/// Whether the word just consumed (an alias candidate) ends the query instead.
fn ends_query(kw: &Keyword, parser: &Parser) -> bool {
    if RESERVED.contains(kw) {
        return true;
    }
    match &parser.get_current_token().token {
        datafusion::sql::sqlparser::tokenizer::Token::Word(w) if w.quote_style.is_none() => {
            RESERVED_WORDS
                .iter()
                .any(|r| w.value.eq_ignore_ascii_case(r))
        }
        _ => false,
    }
}

impl Dialect for VeloDialect {
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_delimited_identifier_start(ch)
    }
    fn is_identifier_start(&self, ch: char) -> bool {
        ch.is_alphabetic() || ch == '_'
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_' || ch == '$'
    }
    fn supports_filter_during_aggregation(&self) -> bool {
        true
    }
    fn supports_group_by_expr(&self) -> bool {
        true
    }
    fn supports_window_function_null_treatment_arg(&self) -> bool {
        true
    }
    fn supports_named_fn_args_with_eq_operator(&self) -> bool {
        true
    }
    fn is_table_alias(&self, kw: &Keyword, parser: &mut Parser) -> bool {
        !ends_query(kw, parser) && GenericDialect.is_table_alias(kw, parser)
    }
    fn is_column_alias(&self, kw: &Keyword, parser: &mut Parser) -> bool {
        !ends_query(kw, parser) && GenericDialect.is_column_alias(kw, parser)
    }
}
