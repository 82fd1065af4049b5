//! What the migrations so far built, as far as the lint needs it.
//!
//! The lint follows the folder in version order and keeps a small model:
//! tables with their columns (type as written, NOT NULL, the version that
//! added them), named constraints (which columns a CHECK proves NOT NULL,
//! whether it is validated), indexes (which table), and the schemas, types
//! and domains the migrations created. Every object remembers the version
//! that made it, which is how the lint tells a new object from one the
//! running release already uses (see [`Batch`]).
//!
//! Names are folded as PostgreSQL folds them (unquoted identifiers in lower
//! case) and keyed by their last part: `app.users` and `users` are one
//! table. Objects the migrations never created are unknown to the model,
//! and the lint treats them as existing and busy.

use std::collections::{HashMap, HashSet};

use sqlparser::ast::{DataType, Expr, Ident, ObjectName, ObjectNamePart};

use crate::source::{Migration, Phase};

/// Which migrations have not been applied yet: the batch the next `up` (or
/// `contract`) runs. An object created by a migration of the batch that
/// runs in the same step as the one being checked, before it, is new: no
/// running release uses it yet.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pending: HashSet<i64>,
    steps: HashMap<i64, bool>,
}

impl Batch {
    /// No migration is known to be pending: only what the checked
    /// migration itself creates is new (`lint` without `--pending-from`).
    pub fn none() -> Batch {
        Batch::default()
    }

    /// These versions are not applied yet.
    pub fn pending(migrations: &[Migration], pending: impl IntoIterator<Item = i64>) -> Batch {
        Batch {
            pending: pending.into_iter().collect(),
            steps: migrations
                .iter()
                .map(|m| (m.version, m.phase == Phase::Contract))
                .collect(),
        }
    }

    /// Every migration from `version` on is not applied yet.
    pub fn from_version(migrations: &[Migration], version: i64) -> Batch {
        let pending = migrations
            .iter()
            .map(|m| m.version)
            .filter(|v| *v >= version);
        Batch::pending(migrations, pending)
    }

    /// Whether what `made` (a version) created is new to `current`.
    pub fn fresh(&self, made: i64, current: i64) -> bool {
        made == current
            || (self.pending.contains(&made)
                && self.pending.contains(&current)
                && made < current
                && self.steps.get(&made) == self.steps.get(&current))
    }
}

#[derive(Debug, Clone)]
pub struct Column {
    /// The type as [`type_text`] writes it.
    pub ty: String,
    pub not_null: bool,
    pub added_in: i64,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub created_in: i64,
    pub columns: HashMap<String, Column>,
}

/// A named constraint of a table or domain.
#[derive(Debug, Clone)]
pub struct Constraint {
    /// The columns a CHECK proves NOT NULL (`col IS NOT NULL`, alone or
    /// joined with AND).
    pub not_null: Vec<String>,
    /// Validated (added without NOT VALID, or VALIDATE CONSTRAINT ran).
    pub valid: bool,
    /// The version that added it NOT VALID, if it did.
    pub not_valid_in: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Index {
    pub table: String,
    pub created_in: i64,
}

#[derive(Debug, Default)]
pub struct Schema {
    pub tables: HashMap<String, Table>,
    /// (table or domain, constraint name) → the constraint.
    pub constraints: HashMap<(String, String), Constraint>,
    pub indexes: HashMap<String, Index>,
    /// Types and domains the migrations created → version.
    pub types: HashMap<String, i64>,
    /// Schemas the migrations created → version.
    pub schemas: HashMap<String, i64>,
}

impl Schema {
    pub fn column(&self, table: &str, column: &str) -> Option<&Column> {
        self.tables.get(table).and_then(|t| t.columns.get(column))
    }

    /// Whether a validated CHECK on `table` proves `column` NOT NULL.
    pub fn proven_not_null(&self, table: &str, column: &str) -> bool {
        self.constraints
            .iter()
            .any(|((t, _), c)| t == table && c.valid && c.not_null.iter().any(|n| n == column))
    }

    /// `old` is now called `new`: its columns, constraints and indexes go
    /// with it.
    pub fn rename_table(&mut self, old: &str, new: &str) {
        if let Some(table) = self.tables.remove(old) {
            self.tables.insert(new.to_owned(), table);
        }
        let moved: Vec<(String, String)> = self
            .constraints
            .keys()
            .filter(|(t, _)| t == old)
            .cloned()
            .collect();
        for key in moved {
            if let Some(c) = self.constraints.remove(&key) {
                self.constraints.insert((new.to_owned(), key.1), c);
            }
        }
        for index in self.indexes.values_mut() {
            if index.table == old {
                index.table = new.to_owned();
            }
        }
    }

    pub fn drop_table(&mut self, table: &str) {
        self.tables.remove(table);
        self.constraints.retain(|(t, _), _| t != table);
        self.indexes.retain(|_, i| i.table != table);
    }
}

/// The columns `expr` proves NOT NULL: `a IS NOT NULL AND b IS NOT NULL`.
pub fn not_null_columns(expr: &Expr) -> Vec<String> {
    match expr {
        Expr::IsNotNull(inner) => match inner.as_ref() {
            Expr::Identifier(ident) => vec![ident_key(ident)],
            Expr::CompoundIdentifier(parts) => parts.last().map(ident_key).into_iter().collect(),
            Expr::Nested(inner) => not_null_columns(&Expr::IsNotNull(inner.clone())),
            _ => Vec::new(),
        },
        Expr::Nested(inner) => not_null_columns(inner),
        Expr::BinaryOp {
            left,
            op: sqlparser::ast::BinaryOperator::And,
            right,
        } => {
            let mut columns = not_null_columns(left);
            columns.extend(not_null_columns(right));
            columns
        }
        _ => Vec::new(),
    }
}

/// A name as PostgreSQL folds it: unquoted identifiers in lower case.
pub fn ident_key(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// The last part of a possibly schema-qualified name.
pub fn name_key(name: &ObjectName) -> String {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(ident)) => ident_key(ident),
        Some(other) => other.to_string().to_lowercase(),
        None => String::new(),
    }
}

/// A type as the parser prints it, in lower case with aliases resolved:
/// `character varying(30)` → `varchar(30)`.
pub fn type_text(data_type: &DataType) -> String {
    let text = data_type.to_string().to_lowercase();
    let text = text.replace(' ', "");
    for (alias, name) in [
        ("charactervarying", "varchar"),
        ("decimal", "numeric"),
        ("integer", "int4"),
        ("int", "int4"),
        ("bigint", "int8"),
        ("smallint", "int2"),
    ] {
        if text == alias {
            return name.into();
        }
        if let Some(rest) = text.strip_prefix(alias) {
            if rest.starts_with('(') {
                return format!("{name}{rest}");
            }
        }
    }
    text
}

/// Whether `old` → `new` is a widening PostgreSQL makes without rewriting
/// the table or rejecting values the old code writes: a longer (or no)
/// varchar limit, varchar to text, more numeric precision at the same
/// scale. Integer widening (int4 → int8) is not: it rewrites the table.
pub fn widens(old: &str, new: &str) -> bool {
    fn split(text: &str) -> (&str, Vec<u64>) {
        match text.split_once('(') {
            Some((base, args)) => (
                base,
                args.trim_end_matches(')')
                    .split(',')
                    .filter_map(|a| a.trim().parse().ok())
                    .collect(),
            ),
            None => (text, Vec::new()),
        }
    }
    let (old_base, old_args) = split(old);
    let (new_base, new_args) = split(new);
    match (old_base, new_base) {
        ("varchar", "text") => true,
        ("varchar", "varchar") => match (old_args.first(), new_args.first()) {
            (_, None) => true,
            (Some(old), Some(new)) => new >= old,
            (None, Some(_)) => false,
        },
        ("numeric", "numeric") => match (old_args.as_slice(), new_args.as_slice()) {
            (_, []) => true,
            ([p], [q]) => q >= p,
            ([p, s], [q, t]) => q >= p && s == t,
            ([p], [q, 0]) => q >= p,
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use sqlparser::ast::Statement;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    use super::*;

    #[test]
    fn widening() {
        assert!(widens("varchar(10)", "varchar(20)"));
        assert!(widens("varchar(10)", "varchar"));
        assert!(widens("varchar(10)", "text"));
        assert!(!widens("varchar(20)", "varchar(10)"));
        assert!(!widens("varchar", "varchar(10)"));
        assert!(widens("numeric(10,2)", "numeric(12,2)"));
        assert!(!widens("numeric(10,2)", "numeric(12,3)"));
        assert!(widens("numeric(10,2)", "numeric"));
        assert!(!widens("int4", "int8"));
        assert!(!widens("text", "varchar(10)"));
    }

    #[test]
    fn type_aliases() {
        let parse = |text: &str| {
            let sql = format!("CREATE TABLE t (c {text})");
            let ast = Parser::parse_sql(&PostgreSqlDialect {}, &sql).unwrap();
            let Statement::CreateTable(create) = &ast[0] else {
                panic!()
            };
            type_text(&create.columns[0].data_type)
        };
        assert_eq!(parse("character varying(30)"), "varchar(30)");
        assert_eq!(parse("VARCHAR(30)"), "varchar(30)");
        assert_eq!(parse("integer"), "int4");
        assert_eq!(parse("decimal(10, 2)"), "numeric(10,2)");
        assert_eq!(parse("text"), "text");
    }

    #[test]
    fn checks_that_prove_not_null() {
        let expr = |text: &str| {
            Parser::new(&PostgreSqlDialect {})
                .try_with_sql(text)
                .unwrap()
                .parse_expr()
                .unwrap()
        };
        assert_eq!(not_null_columns(&expr("email IS NOT NULL")), ["email"]);
        assert_eq!(
            not_null_columns(&expr("(a IS NOT NULL) AND b IS NOT NULL AND c > 0")),
            ["a", "b"]
        );
        assert!(not_null_columns(&expr("a IS NOT NULL OR b IS NOT NULL")).is_empty());
    }

    #[test]
    fn a_batch_is_one_step() {
        let batch = Batch {
            pending: [5, 6, 7].into(),
            steps: [(4, false), (5, false), (6, true), (7, false)].into(),
        };
        assert!(batch.fresh(7, 7));
        assert!(batch.fresh(5, 7), "an earlier pending expand migration");
        assert!(
            !batch.fresh(6, 7),
            "a contract migration runs in another step"
        );
        assert!(!batch.fresh(4, 7), "applied");
        assert!(!batch.fresh(7, 5), "later");
        assert!(!Batch::none().fresh(5, 7));
    }
}
