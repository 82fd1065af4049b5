//! `ALTER TABLE … ADD COLUMN` on an existing table: what the new column
//! makes PostgreSQL (or SQLite) do to the rows already there.
//!
//! A column added without a default, or with a constant or stable one, is
//! a change of the catalog only. Everything else touches every row under
//! the ACCESS EXCLUSIVE lock `ALTER TABLE` holds: a volatile default, a
//! STORED generated column, a serial or identity column (rewrites), a
//! constraint written inside the column (a scan or an index build). A
//! NOT NULL column without a default breaks the old release's inserts. On
//! SQLite several of these fail outright, and the messages say so.

use sqlparser::ast::{
    ColumnDef, ColumnOption, DataType, Expr, GeneratedExpressionMode, UnaryOperator,
};

use super::check::Check;
use super::schema::{ident_key, type_text, Column};
use crate::rule::Rule;
use crate::sql::Dialect;

impl Check<'_> {
    pub(super) fn add_column(&mut self, table: &str, def: &ColumnDef, line: usize) {
        let column = ident_key(&def.name);
        let options: Vec<&ColumnOption> = def.options.iter().map(|o| &o.option).collect();
        if self.existing(table) {
            self.add_column_not_null(table, &column, def, &options, line);
            self.add_column_default(table, &column, &options, line);
            self.add_column_generated(table, &column, def, &options, line);
            self.add_column_constraints(table, &column, &options, line);
            if self.postgres() && def.data_type == DataType::JSON {
                self.found(
                    Rule::AddColumnJson,
                    line,
                    format!(
                        "ADD COLUMN `{table}.{column}` json: json has no equality operator, so the running release's queries on `{table}` that compare whole rows (SELECT DISTINCT, UNION) start failing"
                    ),
                );
            }
        }
        let not_null = options
            .iter()
            .any(|o| matches!(o, ColumnOption::NotNull | ColumnOption::PrimaryKey(_)));
        let version = self.version();
        if let Some(t) = self.schema.tables.get_mut(table) {
            t.columns.insert(
                column,
                Column {
                    ty: type_text(&def.data_type),
                    not_null,
                    added_in: version,
                },
            );
        }
    }

    fn add_column_not_null(
        &mut self,
        table: &str,
        column: &str,
        def: &ColumnDef,
        options: &[&ColumnOption],
        line: usize,
    ) {
        let not_null = options.iter().any(|o| matches!(o, ColumnOption::NotNull));
        let supplied = options.iter().any(|o| {
            matches!(
                o,
                ColumnOption::Default(_)
                    | ColumnOption::Generated { .. }
                    | ColumnOption::Identity(_)
                    | ColumnOption::Materialized(_)
            )
        });
        if not_null && !supplied && !is_serial(&def.data_type) {
            self.found(
                Rule::AddColumnNotNull,
                line,
                format!(
                    "ADD COLUMN `{table}.{column}` NOT NULL without a DEFAULT: inserts from the old release, which does not know the column, fail (and with rows in `{table}` the statement itself fails)"
                ),
            );
        }
    }

    fn add_column_default(
        &mut self,
        table: &str,
        column: &str,
        options: &[&ColumnOption],
        line: usize,
    ) {
        let Some(default) = options.iter().find_map(|o| match o {
            ColumnOption::Default(expr) => Some(expr),
            _ => None,
        }) else {
            return;
        };
        let message = match self.dialect {
            Dialect::Postgres => match volatile_call(default) {
                Some(function) => format!(
                    "ADD COLUMN `{table}.{column}` DEFAULT {default}: {function}, so PostgreSQL computes it for every existing row and rewrites the whole table under an ACCESS EXCLUSIVE lock; the running release can neither read nor write `{table}` meanwhile"
                ),
                None => return,
            },
            Dialect::Sqlite if !constant(default) => format!(
                "ADD COLUMN `{table}.{column}` DEFAULT {default}: SQLite refuses a non-constant default (CURRENT_TIMESTAMP, an expression in parentheses) when adding a column, so the migration fails"
            ),
            Dialect::Sqlite => return,
        };
        self.found(Rule::AddColumnVolatileDefault, line, message);
    }

    fn add_column_generated(
        &mut self,
        table: &str,
        column: &str,
        def: &ColumnDef,
        options: &[&ColumnOption],
        line: usize,
    ) {
        for option in options {
            let ColumnOption::Generated {
                generation_expr,
                generation_expr_mode,
                ..
            } = option
            else {
                continue;
            };
            match (self.dialect, generation_expr) {
                // PostgreSQL before 18 knows only STORED generated columns.
                (Dialect::Postgres, Some(_))
                    if *generation_expr_mode != Some(GeneratedExpressionMode::Virtual) =>
                {
                    self.found(
                        Rule::AddColumnGeneratedStored,
                        line,
                        format!(
                            "ADD COLUMN `{table}.{column}` GENERATED … STORED computes the value for every existing row and rewrites the whole table under an ACCESS EXCLUSIVE lock: the running release can neither read nor write `{table}` meanwhile"
                        ),
                    );
                }
                (Dialect::Postgres, None) => {
                    self.add_column_serial(table, column, "an identity column", line)
                }
                (Dialect::Sqlite, Some(_))
                    if *generation_expr_mode == Some(GeneratedExpressionMode::Stored) =>
                {
                    self.found(
                        Rule::AddColumnGeneratedStored,
                        line,
                        format!(
                            "ADD COLUMN `{table}.{column}` GENERATED … STORED: SQLite cannot add a STORED generated column to an existing table, so the migration fails (a VIRTUAL one it can)"
                        ),
                    );
                }
                _ => {}
            }
        }
        if self.postgres() {
            if is_serial(&def.data_type) {
                let ty = type_text(&def.data_type);
                self.add_column_serial(table, column, &ty, line);
            } else if options
                .iter()
                .any(|o| matches!(o, ColumnOption::Identity(_)))
            {
                self.add_column_serial(table, column, "an identity column", line);
            }
        }
    }

    fn add_column_serial(&mut self, table: &str, column: &str, what: &str, line: usize) {
        self.found(
            Rule::AddColumnSerial,
            line,
            format!(
                "ADD COLUMN `{table}.{column}` as {what} fills a new sequence value into every existing row, which rewrites the whole table under an ACCESS EXCLUSIVE lock: the running release can neither read nor write `{table}` meanwhile"
            ),
        );
    }

    fn add_column_constraints(
        &mut self,
        table: &str,
        column: &str,
        options: &[&ColumnOption],
        line: usize,
    ) {
        for option in options {
            let message = match (self.dialect, option) {
                (Dialect::Postgres, ColumnOption::ForeignKey(_)) => format!(
                    "ADD COLUMN `{table}.{column}` REFERENCES …: the foreign key is added and checked at once, locking `{table}` and the referenced table against writes while it does"
                ),
                (Dialect::Postgres, ColumnOption::Unique(_) | ColumnOption::PrimaryKey(_)) => format!(
                    "ADD COLUMN `{table}.{column}` UNIQUE / PRIMARY KEY builds the index inside the statement, under an ACCESS EXCLUSIVE lock on `{table}`: the running release can neither read nor write it until the index is built"
                ),
                (Dialect::Postgres, ColumnOption::Check(_)) => format!(
                    "ADD COLUMN `{table}.{column}` CHECK (…): the check is verified against every existing row under an ACCESS EXCLUSIVE lock on `{table}`"
                ),
                (Dialect::Sqlite, ColumnOption::Unique(_) | ColumnOption::PrimaryKey(_)) => format!(
                    "ADD COLUMN `{table}.{column}` UNIQUE / PRIMARY KEY: SQLite cannot add such a column to an existing table, so the migration fails"
                ),
                _ => continue,
            };
            self.found(Rule::AddColumnConstraint, line, message);
        }
    }
}

fn is_serial(data_type: &DataType) -> bool {
    matches!(
        type_text(data_type).as_str(),
        "serial" | "bigserial" | "smallserial" | "serial2" | "serial4" | "serial8"
    )
}

/// SQLite's idea of a constant default: a literal, possibly signed.
fn constant(expr: &Expr) -> bool {
    match expr {
        Expr::Value(_) => true,
        Expr::UnaryOp {
            op: UnaryOperator::Minus | UnaryOperator::Plus,
            expr,
        } => matches!(expr.as_ref(), Expr::Value(_)),
        _ => false,
    }
}

/// Functions PostgreSQL declares immutable or stable that defaults use:
/// computed once for `ADD COLUMN`, so the table is not rewritten.
const NOT_VOLATILE: &[&str] = &[
    "now",
    "transaction_timestamp",
    "statement_timestamp",
    "current_timestamp",
    "current_date",
    "localtimestamp",
    "current_setting",
    "lower",
    "upper",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "concat",
    "concat_ws",
    "length",
    "abs",
    "round",
    "trunc",
    "floor",
    "ceil",
    "md5",
    "to_char",
    "to_date",
    "to_timestamp",
    "to_json",
    "to_jsonb",
    "json_build_object",
    "jsonb_build_object",
    "json_build_array",
    "jsonb_build_array",
    "make_interval",
    "make_date",
    "make_timestamp",
    "make_timestamptz",
    "date_trunc",
    "timezone",
    "substring",
    "substr",
    "replace",
    "btrim",
    "format",
    "int4range",
    "int8range",
    "numrange",
    "tsrange",
    "tstzrange",
    "daterange",
];

/// Keywords the parser prints with a parenthesis after them.
const NOT_FUNCTIONS: &[&str] = &[
    "cast", "try_cast", "extract", "row", "in", "any", "all", "some", "exists", "array",
    "position", "overlay", "trim", "interval", "values", "and", "or", "not", "is", "then", "else",
    "when", "case", "as",
];

/// Functions PostgreSQL declares volatile that show up in defaults.
const VOLATILE: &[&str] = &[
    "random",
    "gen_random_uuid",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "clock_timestamp",
    "timeofday",
    "nextval",
    "txid_current",
    "setseed",
    "random_normal",
];

/// Why a default expression is volatile, naming the function; `None` when
/// it calls only functions known not to be.
fn volatile_call(expr: &Expr) -> Option<String> {
    let text = expr.to_string();
    let mut chars = text.char_indices().peekable();
    let mut word = String::new();
    let mut in_string = false;
    while let Some((_, c)) = chars.next() {
        if in_string {
            in_string = c != '\'';
            continue;
        }
        match c {
            '\'' => {
                in_string = true;
                word.clear();
            }
            c if c.is_alphanumeric() || c == '_' || c == '.' => word.push(c),
            c => {
                let called = c == '(' || (c == ' ' && chars.peek().is_some_and(|(_, n)| *n == '('));
                let name = word.rsplit('.').next().unwrap_or("").to_lowercase();
                word.clear();
                if !called || name.is_empty() || NOT_FUNCTIONS.contains(&name.as_str()) {
                    continue;
                }
                if VOLATILE.contains(&name.as_str()) {
                    return Some(format!("`{name}()` is volatile"));
                }
                if !NOT_VOLATILE.contains(&name.as_str()) {
                    return Some(format!(
                        "`{name}()` is not known to be immutable or stable (PostgreSQL functions are VOLATILE unless declared otherwise)"
                    ));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    use super::*;

    fn expr(text: &str) -> Expr {
        Parser::new(&PostgreSqlDialect {})
            .try_with_sql(text)
            .unwrap()
            .parse_expr()
            .unwrap()
    }

    #[test]
    fn volatile_defaults() {
        for volatile in [
            "gen_random_uuid()",
            "random()",
            "floor(random() * 10)",
            "clock_timestamp()",
            "nextval('s')",
            "my_function()",
            "public.uuid_generate_v4()",
        ] {
            assert!(volatile_call(&expr(volatile)).is_some(), "{volatile}");
        }
        for stable in [
            "now()",
            "CURRENT_TIMESTAMP",
            "0",
            "'random()'",
            "'{}'::jsonb",
            "CAST('a' AS text)",
            "now() + interval '1 day'",
            "ARRAY[]::text[]",
            "lower('X')",
            "(1 + 2)",
        ] {
            assert_eq!(volatile_call(&expr(stable)), None, "{stable}");
        }
    }

    #[test]
    fn sqlite_constants() {
        assert!(constant(&expr("1")));
        assert!(constant(&expr("-1")));
        assert!(constant(&expr("'x'")));
        assert!(!constant(&expr("CURRENT_TIMESTAMP")));
        assert!(!constant(&expr("(1)")));
    }
}
