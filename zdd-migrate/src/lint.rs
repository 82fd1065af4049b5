//! The lint: what in a migration breaks the code that is still running.
//!
//! During a rollout the old release serves traffic against the schema the
//! migration leaves behind, and a statement that takes a strong lock on a
//! busy table stalls every request queued behind it. Each rule names one
//! such change and the safe way to make it (expand, backfill, switch, then
//! contract once the old release is gone).
//!
//! Every statement goes through a real SQL parser (`sqlparser`); a
//! statement it cannot parse is itself a finding (`parse-error`), because
//! the lint cannot vouch for what it cannot read. A few PostgreSQL
//! statements the parser does not know yet (`DROP INDEX CONCURRENTLY`,
//! `REINDEX`) are recognised from their leading keyword tokens instead.
//!
//! "An existing table" means one not created by the migration being
//! checked: the lint follows the whole folder in version order and keeps a
//! small model of the tables and column types the migrations created, so an
//! index on a table created in the same migration is fine, and a type
//! change can be told apart from a widening (which needs the old type).
//! A table the migrations never created is assumed to exist and be busy.
//!
//! A `-- zdd: allow=RULE reason="…"` line silences one rule for its file;
//! allowed findings are still reported (`allowed: true`, with the reason),
//! and an allow that silences nothing is a warning.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;
use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, ColumnDef, ColumnOption, DataType, Ident,
    ObjectName, ObjectNamePart, ObjectType, RenameTableNameKind, Statement as Ast, TableConstraint,
};
use sqlparser::parser::Parser;

use crate::source::{Migration, Phase};
use crate::sql::{self, Dialect, Statement};

/// The lint rules. Their ids are what `allow=` names and what `lint`
/// records carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    Header,
    ParseError,
    DropTable,
    DropColumn,
    RenameTable,
    RenameColumn,
    AddColumnNotNull,
    SetNotNull,
    ChangeColumnType,
    ConstraintNotValid,
    IndexNotConcurrent,
    ConcurrentlyInTransaction,
    TransactionControl,
    UnusedAllow,
}

const ALL: [Rule; 14] = [
    Rule::Header,
    Rule::ParseError,
    Rule::DropTable,
    Rule::DropColumn,
    Rule::RenameTable,
    Rule::RenameColumn,
    Rule::AddColumnNotNull,
    Rule::SetNotNull,
    Rule::ChangeColumnType,
    Rule::ConstraintNotValid,
    Rule::IndexNotConcurrent,
    Rule::ConcurrentlyInTransaction,
    Rule::TransactionControl,
    Rule::UnusedAllow,
];

impl Rule {
    pub fn id(self) -> &'static str {
        match self {
            Rule::Header => "header",
            Rule::ParseError => "parse-error",
            Rule::DropTable => "drop-table",
            Rule::DropColumn => "drop-column",
            Rule::RenameTable => "rename-table",
            Rule::RenameColumn => "rename-column",
            Rule::AddColumnNotNull => "add-column-not-null",
            Rule::SetNotNull => "set-not-null",
            Rule::ChangeColumnType => "change-column-type",
            Rule::ConstraintNotValid => "constraint-not-valid",
            Rule::IndexNotConcurrent => "index-not-concurrent",
            Rule::ConcurrentlyInTransaction => "concurrently-in-transaction",
            Rule::TransactionControl => "transaction-control",
            Rule::UnusedAllow => "unused-allow",
        }
    }

    pub fn parse(id: &str) -> Option<Rule> {
        ALL.into_iter().find(|r| r.id() == id)
    }

    /// Whether an `allow=` line may silence the rule. Broken headers and
    /// the lint's own bookkeeping cannot be waved through.
    pub fn allowable(self) -> bool {
        !matches!(self, Rule::Header | Rule::UnusedAllow)
    }

    pub fn allowable_ids() -> Vec<&'static str> {
        ALL.into_iter()
            .filter(|r| r.allowable())
            .map(Rule::id)
            .collect()
    }

    pub fn severity(self) -> Severity {
        match self {
            Rule::UnusedAllow => Severity::Warning,
            _ => Severity::Error,
        }
    }

    /// The safe alternative, for the `suggestion` field.
    pub fn suggestion(self) -> &'static str {
        match self {
            Rule::Header => "start the file with `-- zdd: phase=expand|data|contract`; optional: `-- zdd: transaction=off`, `-- zdd: allow=RULE reason=\"…\"`",
            Rule::ParseError => "fix the statement; if it is valid SQL the parser does not know, add `-- zdd: allow=parse-error reason=\"…\"` after checking it by hand",
            Rule::DropTable => "stop using the table in a release first, then drop it in a `phase=contract` migration, which runs only after that release has replaced the old one",
            Rule::DropColumn => "stop reading and writing the column in a release first, then drop it in a `phase=contract` migration",
            Rule::RenameTable => "create the new table (or a view with the new name), make the code use it while the old name still works, then drop the old one in a contract migration",
            Rule::RenameColumn => "add the new column, backfill it (phase=data), make the code write both and read the new one, then drop the old column in a contract migration",
            Rule::AddColumnNotNull => "add the column nullable or with a DEFAULT; to require it later: backfill, `ADD CONSTRAINT … CHECK (col IS NOT NULL) NOT VALID`, `VALIDATE CONSTRAINT`, then SET NOT NULL",
            Rule::SetNotNull => "add `CHECK (col IS NOT NULL) NOT VALID`, VALIDATE it in a later migration, then SET NOT NULL (PostgreSQL 12+ skips the table scan when a validated check proves it) and allow this rule with that reason",
            Rule::ChangeColumnType => "add a column of the new type, backfill it in batches (phase=data), switch the code to it, then drop the old column in a contract migration",
            Rule::ConstraintNotValid => "add the constraint `NOT VALID` (it still checks new rows) and `VALIDATE CONSTRAINT` in a later migration, which does not block writes; for UNIQUE or PRIMARY KEY, `CREATE UNIQUE INDEX CONCURRENTLY` first, then `ADD CONSTRAINT … USING INDEX`",
            Rule::IndexNotConcurrent => "use `CREATE INDEX CONCURRENTLY` in a migration with `-- zdd: transaction=off`",
            Rule::ConcurrentlyInTransaction => "add `-- zdd: transaction=off` to the header, and keep the CONCURRENTLY statement in a migration of its own",
            Rule::TransactionControl => "remove BEGIN/COMMIT/ROLLBACK: zdd-migrate runs the migration in a transaction of its own (or set `-- zdd: transaction=off`)",
            Rule::UnusedAllow => "remove the allow line",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// `"type": "lint"`: one finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LintRecord {
    pub file: String,
    pub version: i64,
    pub line: usize,
    pub rule: &'static str,
    pub severity: Severity,
    pub message: String,
    pub suggestion: &'static str,
    /// Silenced by an allow line in the file; does not fail the lint.
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl LintRecord {
    /// Whether the finding stops `lint`, `up` and `contract`.
    pub fn blocks(&self) -> bool {
        self.severity == Severity::Error && !self.allowed
    }
}

/// Lints every migration of the folder, in version order. Returns the
/// findings of each migration, in the order of `migrations`.
pub fn lint(migrations: &[Migration], dialect: Dialect) -> Vec<Vec<LintRecord>> {
    let mut schema = Schema::default();
    migrations
        .iter()
        .map(|m| lint_one(m, dialect, &mut schema))
        .collect()
}

/// A finding before the allow lines are applied.
struct Finding {
    rule: Rule,
    line: usize,
    message: String,
}

fn lint_one(migration: &Migration, dialect: Dialect, schema: &mut Schema) -> Vec<LintRecord> {
    let mut findings: Vec<Finding> = migration
        .all_problems()
        .map(|(path, p)| Finding {
            rule: Rule::Header,
            line: p.line,
            message: if path == migration.path {
                p.message.clone()
            } else {
                format!("{}: {}", path.display(), p.message)
            },
        })
        .collect();
    let mut check = Check {
        migration,
        dialect,
        schema,
        findings: &mut findings,
    };
    match sql::split(dialect, &migration.text) {
        Ok(statements) => {
            for statement in &statements {
                check.statement(statement);
            }
        }
        Err(e) => check.found(
            Rule::ParseError,
            e.line,
            format!("cannot tokenize the SQL: {}", e.message),
        ),
    }
    if let Some(down) = &migration.down {
        if let Err(e) = sql::split(dialect, &down.text) {
            findings.push(Finding {
                rule: Rule::ParseError,
                line: e.line,
                message: format!(
                    "{}: cannot tokenize the SQL: {}",
                    down.path.display(),
                    e.message
                ),
            });
        }
    }

    let mut used = vec![false; migration.allows.len()];
    let mut records: Vec<LintRecord> = findings
        .into_iter()
        .map(|f| {
            let allow = migration.allows.iter().position(|a| a.rule == f.rule);
            if let Some(i) = allow {
                used[i] = true;
            }
            LintRecord {
                file: migration.file(),
                version: migration.version,
                line: f.line,
                rule: f.rule.id(),
                severity: f.rule.severity(),
                message: f.message,
                suggestion: f.rule.suggestion(),
                allowed: allow.is_some(),
                reason: allow.map(|i| migration.allows[i].reason.clone()),
            }
        })
        .collect();
    for (allow, used) in migration.allows.iter().zip(used) {
        if !used {
            records.push(LintRecord {
                file: migration.file(),
                version: migration.version,
                line: allow.line,
                rule: Rule::UnusedAllow.id(),
                severity: Severity::Warning,
                message: format!("`allow={}` silences nothing in this file", allow.rule),
                suggestion: Rule::UnusedAllow.suggestion(),
                allowed: false,
                reason: None,
            });
        }
    }
    records.sort_by_key(|r| r.line);
    records
}

/// What the migrations so far created: enough to tell a new table from an
/// existing one and a widening from a type change.
#[derive(Debug, Default)]
struct Schema {
    tables: HashMap<String, Table>,
}

#[derive(Debug, Clone)]
struct Table {
    /// The version of the migration that created it.
    created_in: i64,
    /// Column name → (type as written, version that added it).
    columns: HashMap<String, (String, i64)>,
}

struct Check<'a> {
    migration: &'a Migration,
    dialect: Dialect,
    schema: &'a mut Schema,
    findings: &'a mut Vec<Finding>,
}

impl Check<'_> {
    fn found(&mut self, rule: Rule, line: usize, message: String) {
        self.findings.push(Finding {
            rule,
            line,
            message,
        });
    }

    fn version(&self) -> i64 {
        self.migration.version
    }

    /// Whether `table` existed before this migration (or was never created
    /// by one, so it is someone else's and presumably in use).
    fn existing(&self, table: &str) -> bool {
        self.schema
            .tables
            .get(table)
            .is_none_or(|t| t.created_in != self.version())
    }

    fn column_is_new(&self, table: &str, column: &str) -> bool {
        self.schema
            .tables
            .get(table)
            .and_then(|t| t.columns.get(column))
            .is_some_and(|(_, added)| *added == self.version())
    }

    fn postgres(&self) -> bool {
        self.dialect == Dialect::Postgres
    }

    fn statement(&mut self, statement: &Statement) {
        let line = statement.line;
        let words = statement.leading_words(3);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        // Statements the parser does not know, recognised by keyword tokens.
        match words.as_slice() {
            ["DROP", "INDEX", "CONCURRENTLY"] | ["REINDEX", ..] => {
                if self.postgres()
                    && self.migration.transaction
                    && statement
                        .leading_words(6)
                        .iter()
                        .any(|w| w == "CONCURRENTLY")
                {
                    self.concurrently_in_transaction(line);
                }
                return;
            }
            _ => {}
        }
        let parsed = Parser::new(self.dialect.parser_dialect())
            .with_tokens_with_locations(statement.tokens.clone())
            .parse_statements();
        let asts = match parsed {
            Ok(asts) => asts,
            Err(e) => {
                self.found(
                    Rule::ParseError,
                    line,
                    format!("cannot parse the statement: {e}"),
                );
                return;
            }
        };
        for ast in asts {
            self.ast(&ast, line);
        }
    }

    fn concurrently_in_transaction(&mut self, line: usize) {
        self.found(
            Rule::ConcurrentlyInTransaction,
            line,
            "CONCURRENTLY cannot run inside a transaction, and this migration runs in one".into(),
        );
    }

    fn ast(&mut self, ast: &Ast, line: usize) {
        let contract = self.migration.phase == Phase::Contract;
        match ast {
            Ast::CreateTable(create) => {
                let name = table_key(&create.name);
                if create.if_not_exists && self.schema.tables.contains_key(&name) {
                    return;
                }
                let columns = create
                    .columns
                    .iter()
                    .map(|c| {
                        (
                            ident_key(&c.name),
                            (type_text(&c.data_type), self.version()),
                        )
                    })
                    .collect();
                self.schema.tables.insert(
                    name,
                    Table {
                        created_in: self.version(),
                        columns,
                    },
                );
            }
            Ast::CreateIndex(index) => {
                let table = table_key(&index.table_name);
                if index.concurrently {
                    if self.postgres() && self.migration.transaction {
                        self.concurrently_in_transaction(line);
                    }
                } else if self.postgres() && self.existing(&table) {
                    self.found(
                        Rule::IndexNotConcurrent,
                        line,
                        format!(
                            "CREATE INDEX on existing table `{table}` without CONCURRENTLY blocks writes to it while the index builds"
                        ),
                    );
                }
            }
            Ast::Drop {
                object_type: ObjectType::Table,
                names,
                ..
            } => {
                for name in names {
                    let table = table_key(name);
                    if !contract && self.existing(&table) {
                        self.found(
                            Rule::DropTable,
                            line,
                            format!(
                                "DROP TABLE `{table}` outside a contract migration (this one is {}): the old release still uses it",
                                self.migration.phase
                            ),
                        );
                    }
                    self.schema.tables.remove(&table);
                }
            }
            Ast::AlterTable(alter) => {
                let table = table_key(&alter.name);
                for operation in &alter.operations {
                    self.alter(&table, operation, line, contract);
                }
            }
            Ast::StartTransaction { .. } | Ast::Commit { .. } | Ast::Rollback { .. }
                if self.migration.transaction =>
            {
                self.found(
                    Rule::TransactionControl,
                    line,
                    "transaction control inside a migration that zdd-migrate already runs in a transaction".into(),
                );
            }
            _ => {}
        }
    }

    fn alter(&mut self, table: &str, operation: &AlterTableOperation, line: usize, contract: bool) {
        let existing = self.existing(table);
        let version = self.version();
        match operation {
            AlterTableOperation::AddColumn { column_def, .. } => {
                let column = ident_key(&column_def.name);
                if existing && not_null_without_default(column_def) {
                    self.found(
                        Rule::AddColumnNotNull,
                        line,
                        format!(
                            "ADD COLUMN `{column}` NOT NULL without a DEFAULT: inserts from the old release, which does not know the column, fail"
                        ),
                    );
                }
                if let Some(t) = self.schema.tables.get_mut(table) {
                    t.columns
                        .insert(column, (type_text(&column_def.data_type), version));
                }
            }
            AlterTableOperation::DropColumn { column_names, .. } => {
                for name in column_names {
                    let column = ident_key(name);
                    if !contract && existing && !self.column_is_new(table, &column) {
                        self.found(
                            Rule::DropColumn,
                            line,
                            format!(
                                "DROP COLUMN `{table}.{column}` outside a contract migration (this one is {}): the old release still reads or writes it",
                                self.migration.phase
                            ),
                        );
                    }
                    if let Some(t) = self.schema.tables.get_mut(table) {
                        t.columns.remove(&column);
                    }
                }
            }
            AlterTableOperation::RenameColumn {
                old_column_name,
                new_column_name,
            } => {
                let old = ident_key(old_column_name);
                let new = ident_key(new_column_name);
                if existing && !self.column_is_new(table, &old) {
                    self.found(
                        Rule::RenameColumn,
                        line,
                        format!(
                            "RENAME COLUMN `{table}.{old}` to `{new}`: the old release still uses the old name"
                        ),
                    );
                }
                if let Some(t) = self.schema.tables.get_mut(table) {
                    if let Some(column) = t.columns.remove(&old) {
                        t.columns.insert(new, column);
                    }
                }
            }
            AlterTableOperation::RenameTable { table_name } => {
                let (RenameTableNameKind::To(new_name) | RenameTableNameKind::As(new_name)) =
                    table_name;
                let new = table_key(new_name);
                if existing {
                    self.found(
                        Rule::RenameTable,
                        line,
                        format!(
                            "RENAME table `{table}` to `{new}`: the old release still uses the old name"
                        ),
                    );
                }
                if let Some(t) = self.schema.tables.remove(table) {
                    self.schema.tables.insert(new, t);
                }
            }
            AlterTableOperation::AlterColumn { column_name, op } => {
                let column = ident_key(column_name);
                let old_column = !self.column_is_new(table, &column);
                match op {
                    AlterColumnOperation::SetNotNull if existing && old_column => {
                        self.found(
                            Rule::SetNotNull,
                            line,
                            format!(
                                "SET NOT NULL on `{table}.{column}` scans the whole table under an exclusive lock, and fails inserts from the old release that leave it empty"
                            ),
                        );
                    }
                    AlterColumnOperation::SetDataType {
                        data_type, using, ..
                    } => {
                        let old_type = self
                            .schema
                            .tables
                            .get(table)
                            .and_then(|t| t.columns.get(&column))
                            .map(|(ty, _)| ty.clone());
                        let new_type = type_text(data_type);
                        if existing && old_column {
                            let widening = using.is_none()
                                && old_type
                                    .as_deref()
                                    .is_some_and(|old| widens(old, &new_type));
                            if !widening {
                                let from =
                                    old_type.map(|t| format!("from {t} ")).unwrap_or_else(|| {
                                        "(its current type is not known from the migrations) "
                                            .into()
                                    });
                                self.found(
                                    Rule::ChangeColumnType,
                                    line,
                                    format!(
                                        "changing the type of `{table}.{column}` {from}to {new_type} rewrites the table under an exclusive lock, and the old release may not handle the new type"
                                    ),
                                );
                            }
                        }
                        if let Some(t) = self.schema.tables.get_mut(table) {
                            if let Some(entry) = t.columns.get_mut(&column) {
                                entry.0 = new_type;
                            }
                        }
                    }
                    _ => {}
                }
            }
            AlterTableOperation::ChangeColumn { old_name, .. }
            | AlterTableOperation::ModifyColumn {
                col_name: old_name, ..
            } if existing => {
                self.found(
                    Rule::ChangeColumnType,
                    line,
                    format!(
                        "changing column `{table}.{}` rewrites it, and the old release may not handle the result",
                        ident_key(old_name)
                    ),
                );
            }
            AlterTableOperation::AddConstraint {
                constraint,
                not_valid,
            } => {
                if !existing || !self.postgres() {
                    return;
                }
                let message = match constraint {
                    TableConstraint::ForeignKey(_) | TableConstraint::Check(_) if !not_valid => {
                        "a new constraint without NOT VALID checks every existing row while it locks the table"
                    }
                    TableConstraint::Unique(_) | TableConstraint::PrimaryKey(_) => {
                        "a new UNIQUE or PRIMARY KEY constraint builds its index while it blocks writes to the table"
                    }
                    _ => return,
                };
                self.found(
                    Rule::ConstraintNotValid,
                    line,
                    format!("{message} (`{table}`)"),
                );
            }
            _ => {}
        }
    }
}

fn not_null_without_default(column: &ColumnDef) -> bool {
    let options = || column.options.iter().map(|o| &o.option);
    let not_null = options().any(|o| matches!(o, ColumnOption::NotNull));
    let supplied = options().any(|o| {
        matches!(
            o,
            ColumnOption::Default(_)
                | ColumnOption::Generated { .. }
                | ColumnOption::Identity(_)
                | ColumnOption::Materialized(_)
        )
    });
    let serial = matches!(
        type_text(&column.data_type).as_str(),
        "serial" | "bigserial" | "smallserial"
    );
    not_null && !supplied && !serial
}

/// A name as PostgreSQL folds it: unquoted identifiers in lower case.
fn ident_key(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// The table part of a possibly schema-qualified name.
fn table_key(name: &ObjectName) -> String {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(ident)) => ident_key(ident),
        Some(other) => other.to_string().to_lowercase(),
        None => String::new(),
    }
}

/// A type as the parser prints it, in lower case with aliases resolved:
/// `character varying(30)` → `varchar(30)`.
fn type_text(data_type: &DataType) -> String {
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
fn widens(old: &str, new: &str) -> bool {
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
    use super::*;

    #[test]
    fn rule_ids_round_trip() {
        for rule in ALL {
            assert_eq!(Rule::parse(rule.id()), Some(rule));
        }
        assert!(!Rule::Header.allowable());
        assert!(Rule::DropColumn.allowable());
    }

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
            let ast = Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, &sql).unwrap();
            let Ast::CreateTable(create) = &ast[0] else {
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
}
