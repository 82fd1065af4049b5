//! Splitting a migration into statements with a real SQL tokenizer.
//!
//! Two things need the statements one by one: the lint (to parse each and
//! name its line) and a `transaction=off` migration on PostgreSQL, whose
//! statements must reach the server one at a time, because a
//! multi-statement query string runs as one implicit transaction and
//! `CREATE INDEX CONCURRENTLY` refuses to run inside one. The tokenizer
//! knows strings, quoted identifiers, comments and dollar-quoted bodies,
//! so a `;` inside any of them does not end a statement (a regex would).
//! The statement text handed to the server is the original text, sliced,
//! never the parser's re-printing of it.

use sqlparser::dialect::{Dialect as SqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

/// The SQL dialect migrations are written in, after the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    pub fn parser_dialect(self) -> &'static dyn SqlDialect {
        match self {
            Dialect::Postgres => &PostgreSqlDialect {},
            Dialect::Sqlite => &SQLiteDialect {},
        }
    }

    pub fn parse(text: &str) -> Option<Dialect> {
        match text {
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            "sqlite" => Some(Dialect::Sqlite),
            _ => None,
        }
    }
}

/// One statement of a file.
#[derive(Debug, Clone)]
pub struct Statement<'a> {
    /// 1-based line of its first token.
    pub line: usize,
    /// The original text, from the first token up to (not including) the
    /// `;`, trimmed.
    pub text: &'a str,
    /// Its tokens, comments and whitespace included, without the `;`.
    pub tokens: Vec<TokenWithSpan>,
}

impl Statement<'_> {
    /// The leading keywords, upper-cased (up to `n`), skipping whitespace
    /// and comments: for recognising statements the parser does not know.
    pub fn leading_words(&self, n: usize) -> Vec<String> {
        self.tokens
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .take(n)
            .map(|t| match &t.token {
                Token::Word(word) => word.value.to_ascii_uppercase(),
                other => other.to_string(),
            })
            .collect()
    }
}

/// A tokenizer error: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitError {
    pub line: usize,
    pub message: String,
}

/// Splits `sql` at the `;` tokens. Statements with nothing but comments
/// are dropped.
pub fn split(dialect: Dialect, sql: &str) -> Result<Vec<Statement<'_>>, SplitError> {
    let tokens = Tokenizer::new(dialect.parser_dialect(), sql)
        .with_unescape(false)
        .tokenize_with_location()
        .map_err(|e| SplitError {
            line: e.location.line as usize,
            message: e.message,
        })?;
    let offsets = Offsets::new(sql);
    let mut statements = Vec::new();
    let mut current: Vec<TokenWithSpan> = Vec::new();
    let mut finish = |current: &mut Vec<TokenWithSpan>, end: usize| {
        let tokens = std::mem::take(current);
        let Some(first) = tokens
            .iter()
            .find(|t| !matches!(t.token, Token::Whitespace(_)))
        else {
            return;
        };
        let start = offsets.of(first.span.start);
        let line = first.span.start.line as usize;
        statements.push(Statement {
            line,
            text: sql[start..end.max(start)].trim_end(),
            tokens,
        });
    };
    for token in tokens {
        match token.token {
            Token::SemiColon => {
                let end = offsets.of(token.span.start);
                finish(&mut current, end);
            }
            Token::EOF => {}
            _ => current.push(token),
        }
    }
    finish(&mut current, sql.len());
    Ok(statements)
}

/// Byte offsets of tokenizer locations (1-based line, 1-based column in
/// characters).
struct Offsets<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Offsets<'a> {
    fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Offsets { text, line_starts }
    }

    fn of(&self, location: Location) -> usize {
        let Some(&line_start) = self
            .line_starts
            .get((location.line as usize).saturating_sub(1))
        else {
            return self.text.len();
        };
        let column = (location.column as usize).saturating_sub(1);
        self.text[line_start..]
            .char_indices()
            .nth(column)
            .map_or(self.text.len(), |(i, _)| line_start + i)
    }
}

/// The 1-based line of the `position`th character (1-based, as PostgreSQL
/// reports error positions) of `text`.
pub fn line_of_char(text: &str, position: usize) -> usize {
    text.chars()
        .take(position.saturating_sub(1))
        .filter(|&c| c == '\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_semicolons_outside_strings_and_bodies() {
        let sql = "-- zdd: phase=expand\nCREATE TABLE a (x text DEFAULT ';');\n\n/* c; */ CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\nSELECT 'é';  -- trailing; comment\n";
        let statements = split(Dialect::Postgres, sql).unwrap();
        let texts: Vec<_> = statements.iter().map(|s| s.text).collect();
        assert_eq!(
            texts,
            [
                "CREATE TABLE a (x text DEFAULT ';')",
                "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql",
                "SELECT 'é'",
            ]
        );
        let lines: Vec<_> = statements.iter().map(|s| s.line).collect();
        assert_eq!(lines, [2, 4, 5]);
    }

    #[test]
    fn last_statement_needs_no_semicolon_and_comments_alone_are_dropped() {
        let statements = split(Dialect::Sqlite, "SELECT 1;\nSELECT 2\n-- done\n").unwrap();
        assert_eq!(statements.len(), 2);
        assert_eq!(statements[1].text, "SELECT 2\n-- done");
        assert!(split(Dialect::Sqlite, "-- nothing\n").unwrap().is_empty());
    }

    #[test]
    fn tokenizer_errors_name_the_line() {
        let err = split(Dialect::Postgres, "SELECT 1;\nSELECT 'open\n").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn leading_words_skip_comments() {
        let statements = split(Dialect::Postgres, "/* x */ drop index concurrently i").unwrap();
        assert_eq!(
            statements[0].leading_words(3),
            ["DROP", "INDEX", "CONCURRENTLY"]
        );
    }

    #[test]
    fn error_positions_become_lines() {
        assert_eq!(line_of_char("a\nbc\nd", 1), 1);
        assert_eq!(line_of_char("a\nbc\nd", 3), 2);
        assert_eq!(line_of_char("a\nbc\nd", 6), 3);
    }
}
