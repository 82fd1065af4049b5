//! Statements PostgreSQL (or SQLite) accepts and `sqlparser` does not,
//! read from their tokens.
//!
//! The parser rejects `VACUUM ANALYZE t`, `VACUUM (FULL) t`, `CLUSTER t
//! USING i`, `REINDEX …`, `DROP INDEX CONCURRENTLY …`, `ALTER DOMAIN …`,
//! `ANALYZE (…)` and SQLite's `PRAGMA`. The lint must judge them, not
//! wave them through, so each has a small grammar here, written after the
//! PostgreSQL manual's synopsis. A statement that starts like one of them
//! but does not follow its grammar is a parse error naming what was
//! unexpected; a `DO` block is one too (the lint cannot see inside it).

use sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::sql::Dialect;

/// A statement recognised from its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// Nothing to judge: ANALYZE, PRAGMA, SQLite's REINDEX.
    Harmless,
    Vacuum {
        full: bool,
        tables: Vec<String>,
    },
    Cluster {
        table: Option<String>,
    },
    Reindex {
        /// INDEX, TABLE, SCHEMA, DATABASE or SYSTEM.
        target: String,
        name: Option<String>,
        concurrently: bool,
    },
    DropIndexConcurrently {
        names: Vec<String>,
        if_exists: bool,
    },
    AlterDomain {
        name: String,
        action: Domain,
    },
}

/// What an `ALTER DOMAIN` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Domain {
    AddConstraint {
        name: Option<String>,
        not_valid: bool,
    },
    ValidateConstraint(String),
    SetNotNull,
    DropNotNull,
    RenameTo(String),
    /// DEFAULT, OWNER, SCHEMA, dropping or renaming a constraint.
    Other,
}

/// Why a statement was not recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unknown {
    /// Not one of the statements this module knows.
    Unrecognised,
    /// A `DO` block.
    DoBlock,
    /// Starts like a known statement, then does not follow its grammar.
    Malformed(String),
}

/// Reads the statement from its tokens (comments and whitespace included).
pub fn recognise(tokens: &[TokenWithSpan], dialect: Dialect) -> Result<Known, Unknown> {
    let mut c = Cursor::new(tokens);
    let first = c.peek_word().unwrap_or_default();
    let known = match (first.as_str(), dialect) {
        ("DO", Dialect::Postgres) => return Err(Unknown::DoBlock),
        ("ANALYZE" | "ANALYSE", _) | ("PRAGMA", Dialect::Sqlite) => return Ok(Known::Harmless),
        ("REINDEX", Dialect::Sqlite) => return Ok(Known::Harmless),
        ("VACUUM", _) => c.vacuum(),
        ("CLUSTER", Dialect::Postgres) => c.cluster(),
        ("REINDEX", Dialect::Postgres) => c.reindex(),
        ("DROP", Dialect::Postgres) => c.drop_index_concurrently(),
        ("ALTER", Dialect::Postgres) => c.alter_domain(),
        _ => return Err(Unknown::Unrecognised),
    };
    let known = known.ok_or(Unknown::Unrecognised)?;
    match c.peek() {
        None => Ok(known),
        Some(token) => Err(Unknown::Malformed(format!(
            "unexpected `{token}` at line {}",
            c.line()
        ))),
    }
}

/// The significant tokens of a statement, one at a time.
struct Cursor<'a> {
    tokens: Vec<&'a TokenWithSpan>,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(tokens: &'a [TokenWithSpan]) -> Self {
        Cursor {
            tokens: tokens
                .iter()
                .filter(|t| !matches!(t.token, Token::Whitespace(_)))
                .collect(),
            at: 0,
        }
    }

    fn peek(&self) -> Option<&'a Token> {
        self.tokens.get(self.at).map(|t| &t.token)
    }

    fn line(&self) -> u64 {
        self.tokens.get(self.at).map_or(0, |t| t.span.start.line)
    }

    /// The next token as an upper-case keyword, if it is an unquoted word.
    fn peek_word(&self) -> Option<String> {
        match self.peek() {
            Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
            _ => None,
        }
    }

    fn eat(&mut self, keyword: &str) -> bool {
        if self.peek_word().as_deref() == Some(keyword) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn eat_all(&mut self, keywords: &[&str]) -> bool {
        let start = self.at;
        if keywords.iter().all(|k| self.eat(k)) {
            true
        } else {
            self.at = start;
            false
        }
    }

    fn eat_token(&mut self, token: &Token) -> bool {
        if self.peek() == Some(token) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// A possibly qualified name (`a.b`), keyed by its last part.
    fn name(&mut self) -> Option<String> {
        let mut last = None;
        loop {
            match self.peek() {
                Some(Token::Word(w)) => {
                    // Folded as PostgreSQL folds names (see `ident_key`).
                    last = Some(match w.quote_style {
                        Some(_) => w.value.clone(),
                        None => w.value.to_lowercase(),
                    });
                    self.at += 1;
                }
                _ => return last,
            }
            if !self.eat_token(&Token::Period) {
                return last;
            }
        }
    }

    /// A parenthesised list, if one comes next: its words, upper-cased.
    fn parenthesised(&mut self) -> Option<Vec<String>> {
        if !self.eat_token(&Token::LParen) {
            return None;
        }
        let mut depth = 1;
        let mut words = Vec::new();
        while let Some(token) = self.peek() {
            self.at += 1;
            match token {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(words);
                    }
                }
                Token::Word(w) => words.push(w.value.to_ascii_uppercase()),
                Token::Number(n, _) => words.push(n.clone()),
                _ => {}
            }
        }
        Some(words)
    }

    /// `name [ (columns) ] [, …]`.
    fn tables(&mut self) -> Vec<String> {
        let mut tables = Vec::new();
        while let Some(name) = self.name() {
            tables.push(name);
            self.parenthesised();
            if !self.eat_token(&Token::Comma) {
                break;
            }
        }
        tables
    }

    /// Whether an option list turns `option` on (`FULL`, `FULL true`, but
    /// not `FULL false`).
    fn option_on(options: &[String], option: &str) -> bool {
        options.iter().enumerate().any(|(i, w)| {
            w == option
                && !options
                    .get(i + 1)
                    .is_some_and(|v| matches!(v.as_str(), "FALSE" | "OFF" | "0"))
        })
    }

    /// `VACUUM [ ( options ) ] [ FULL ] [ FREEZE ] [ VERBOSE ] [ ANALYZE ] [ tables ]`
    /// (and SQLite's `VACUUM [schema] [INTO file]`).
    fn vacuum(&mut self) -> Option<Known> {
        self.eat("VACUUM");
        let mut full = self
            .parenthesised()
            .is_some_and(|options| Self::option_on(&options, "FULL"));
        loop {
            if self.eat("FULL") {
                full = true;
            } else if !(self.eat("FREEZE")
                || self.eat("VERBOSE")
                || self.eat("ANALYZE")
                || self.eat("ANALYSE"))
            {
                break;
            }
        }
        let tables = self.tables();
        if self.eat("INTO") {
            self.at += 1;
        }
        Some(Known::Vacuum { full, tables })
    }

    /// `CLUSTER [ VERBOSE ] [ ( options ) ] [ table [ USING index ] ]`, or
    /// the old `CLUSTER index ON table`.
    fn cluster(&mut self) -> Option<Known> {
        self.eat("CLUSTER");
        self.parenthesised();
        self.eat("VERBOSE");
        let mut table = self.name();
        if self.eat("USING") {
            self.name()?;
        } else if self.eat("ON") {
            table = Some(self.name()?);
        }
        Some(Known::Cluster { table })
    }

    /// `REINDEX [ ( options ) ] { INDEX | TABLE | SCHEMA | DATABASE | SYSTEM } [ CONCURRENTLY ] [ name ]`.
    fn reindex(&mut self) -> Option<Known> {
        self.eat("REINDEX");
        let mut concurrently = self
            .parenthesised()
            .is_some_and(|options| Self::option_on(&options, "CONCURRENTLY"));
        let target = self.peek_word().filter(|w| {
            matches!(
                w.as_str(),
                "INDEX" | "TABLE" | "SCHEMA" | "DATABASE" | "SYSTEM"
            )
        })?;
        self.at += 1;
        concurrently |= self.eat("CONCURRENTLY");
        let name = self.name();
        Some(Known::Reindex {
            target,
            name,
            concurrently,
        })
    }

    /// `DROP INDEX CONCURRENTLY [ IF EXISTS ] name [, …] [ CASCADE | RESTRICT ]`.
    fn drop_index_concurrently(&mut self) -> Option<Known> {
        if !self.eat_all(&["DROP", "INDEX", "CONCURRENTLY"]) {
            return None;
        }
        let if_exists = self.eat_all(&["IF", "EXISTS"]);
        let mut names = vec![self.name()?];
        while self.eat_token(&Token::Comma) {
            names.push(self.name()?);
        }
        let _ = self.eat("CASCADE") || self.eat("RESTRICT");
        Some(Known::DropIndexConcurrently { names, if_exists })
    }

    /// `ALTER DOMAIN name action` (one action, as PostgreSQL allows).
    fn alter_domain(&mut self) -> Option<Known> {
        if !self.eat_all(&["ALTER", "DOMAIN"]) {
            return None;
        }
        let name = self.name()?;
        let action = if self.eat("ADD") {
            let constraint = if self.eat("CONSTRAINT") {
                Some(self.name()?)
            } else {
                None
            };
            if self.eat("CHECK") {
                self.parenthesised()?;
            } else if !self.eat_all(&["NOT", "NULL"]) {
                return None;
            }
            Domain::AddConstraint {
                name: constraint,
                not_valid: self.eat_all(&["NOT", "VALID"]),
            }
        } else if self.eat_all(&["VALIDATE", "CONSTRAINT"]) {
            Domain::ValidateConstraint(self.name()?)
        } else if self.eat_all(&["SET", "NOT", "NULL"]) {
            Domain::SetNotNull
        } else if self.eat_all(&["DROP", "NOT", "NULL"]) {
            Domain::DropNotNull
        } else if self.eat_all(&["RENAME", "TO"]) {
            Domain::RenameTo(self.name()?)
        } else if self.eat_all(&["RENAME", "CONSTRAINT"]) {
            self.name()?;
            if !self.eat("TO") {
                return None;
            }
            self.name()?;
            Domain::Other
        } else if self.eat_all(&["DROP", "CONSTRAINT"]) {
            self.eat_all(&["IF", "EXISTS"]);
            self.name()?;
            let _ = self.eat("CASCADE") || self.eat("RESTRICT");
            Domain::Other
        } else if self.eat_all(&["SET", "DEFAULT"]) {
            // The default is an expression: the rest of the statement.
            self.at = self.tokens.len();
            Domain::Other
        } else if self.eat_all(&["DROP", "DEFAULT"]) {
            Domain::Other
        } else if self.eat_all(&["OWNER", "TO"]) || self.eat_all(&["SET", "SCHEMA"]) {
            self.name()?;
            Domain::Other
        } else {
            return None;
        };
        Some(Known::AlterDomain { name, action })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql;

    fn read(dialect: Dialect, text: &str) -> Result<Known, Unknown> {
        let statements = sql::split(dialect, text).unwrap();
        recognise(&statements[0].tokens, dialect)
    }

    fn pg(text: &str) -> Result<Known, Unknown> {
        read(Dialect::Postgres, text)
    }

    #[test]
    fn vacuum_forms() {
        assert_eq!(
            pg("VACUUM ANALYZE t"),
            Ok(Known::Vacuum {
                full: false,
                tables: vec!["t".into()]
            })
        );
        assert_eq!(
            pg("vacuum (full, analyze) app.t (a, b), u"),
            Ok(Known::Vacuum {
                full: true,
                tables: vec!["t".into(), "u".into()]
            })
        );
        assert_eq!(
            pg("VACUUM (FULL false) t"),
            Ok(Known::Vacuum {
                full: false,
                tables: vec!["t".into()]
            })
        );
        assert_eq!(
            pg("VACUUM FULL FREEZE VERBOSE t"),
            Ok(Known::Vacuum {
                full: true,
                tables: vec!["t".into()]
            })
        );
    }

    #[test]
    fn cluster_reindex_drop_index() {
        assert_eq!(
            pg("CLUSTER t USING i"),
            Ok(Known::Cluster {
                table: Some("t".into())
            })
        );
        assert_eq!(
            pg("CLUSTER i ON t"),
            Ok(Known::Cluster {
                table: Some("t".into())
            })
        );
        assert_eq!(pg("CLUSTER"), Ok(Known::Cluster { table: None }));
        assert_eq!(
            pg("REINDEX (VERBOSE) TABLE CONCURRENTLY t"),
            Ok(Known::Reindex {
                target: "TABLE".into(),
                name: Some("t".into()),
                concurrently: true
            })
        );
        assert_eq!(
            pg("REINDEX (CONCURRENTLY) INDEX i"),
            Ok(Known::Reindex {
                target: "INDEX".into(),
                name: Some("i".into()),
                concurrently: true
            })
        );
        assert_eq!(
            pg("DROP INDEX CONCURRENTLY IF EXISTS a, \"B\""),
            Ok(Known::DropIndexConcurrently {
                names: vec!["a".into(), "B".into()],
                if_exists: true
            })
        );
    }

    #[test]
    fn alter_domain() {
        assert_eq!(
            pg("ALTER DOMAIN d ADD CONSTRAINT c CHECK (VALUE > 0) NOT VALID"),
            Ok(Known::AlterDomain {
                name: "d".into(),
                action: Domain::AddConstraint {
                    name: Some("c".into()),
                    not_valid: true
                }
            })
        );
        assert_eq!(
            pg("ALTER DOMAIN d VALIDATE CONSTRAINT c"),
            Ok(Known::AlterDomain {
                name: "d".into(),
                action: Domain::ValidateConstraint("c".into())
            })
        );
        assert_eq!(
            pg("ALTER DOMAIN d SET DEFAULT now() + interval '1 day'"),
            Ok(Known::AlterDomain {
                name: "d".into(),
                action: Domain::Other
            })
        );
    }

    #[test]
    fn what_is_not_recognised() {
        assert_eq!(pg("DO $$ BEGIN END $$"), Err(Unknown::DoBlock));
        assert_eq!(pg("FROBNICATE t"), Err(Unknown::Unrecognised));
        assert!(matches!(
            pg("CLUSTER t USING i extra"),
            Err(Unknown::Malformed(m)) if m.contains("extra")
        ));
        assert_eq!(pg("DROP INDEX i"), Err(Unknown::Unrecognised));
        assert_eq!(
            read(Dialect::Sqlite, "PRAGMA foreign_keys = OFF"),
            Ok(Known::Harmless)
        );
    }
}
