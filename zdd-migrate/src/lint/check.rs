//! The checks of one migration, statement by statement.
//!
//! [`Check`] walks the statements in order, updating the [`Schema`] as it
//! goes (so a later statement sees what an earlier one created) and
//! keeping what a rule needs across statements: the tables the migration
//! alters and updates (a backfill in the same migration as the schema
//! change), the tables it drops (a rebuild is a drop and a rename to the
//! old name), an open `BEGIN` in a `transaction=off` file. The rules that
//! need the whole migration are decided in [`Check::finish`].
//!
//! PostgreSQL's lock rules (`index-not-concurrent`, `constraint-not-valid`,
//! …) apply to PostgreSQL only: SQLite has one lock for the whole database,
//! held by zdd-migrate for the whole run anyway. The rules about what the
//! running release sees (drops, renames, NOT NULL, types) apply to both.

use std::collections::{HashMap, HashSet};

use sqlparser::ast::{
    AlterSchemaOperation, AlterTypeOperation, CascadeOption, LockTableMode, ObjectName, ObjectType,
    SchemaName, Statement as Ast, TableConstraint, TableFactor,
};
use sqlparser::parser::Parser;

use super::keywords::{self, Unknown};
use super::schema::{ident_key, name_key, not_null_columns, type_text, Batch, Column, Constraint};
use super::schema::{Index, Schema, Table};
use super::Finding;
use crate::rule::Rule;
use crate::source::{Migration, Phase};
use crate::sql::{Dialect, Statement};

pub(super) struct Check<'a> {
    pub(super) migration: &'a Migration,
    pub(super) dialect: Dialect,
    pub(super) schema: &'a mut Schema,
    batch: &'a Batch,
    pub(super) findings: Vec<Finding>,
    /// `transaction=off`: the line of a BEGIN not committed yet.
    pub(super) open_transaction: Option<usize>,
    /// Existing tables this migration alters.
    pub(super) altered: HashSet<String>,
    /// UPDATEs of existing tables: table, line, whether it has a WHERE.
    updates: Vec<(String, usize, bool)>,
    /// Existing tables this migration dropped → the `drop-table` finding
    /// (index into `findings`), if one was made.
    pub(super) dropped: HashMap<String, Option<usize>>,
    /// Constraints dropped `IF EXISTS` here: an ADD after it can rerun.
    pub(super) dropped_if_exists: HashSet<(String, String)>,
}

impl<'a> Check<'a> {
    pub(super) fn new(
        migration: &'a Migration,
        dialect: Dialect,
        schema: &'a mut Schema,
        batch: &'a Batch,
    ) -> Self {
        Check {
            migration,
            dialect,
            schema,
            batch,
            findings: Vec::new(),
            open_transaction: None,
            altered: HashSet::new(),
            updates: Vec::new(),
            dropped: HashMap::new(),
            dropped_if_exists: HashSet::new(),
        }
    }

    pub(super) fn found(&mut self, rule: Rule, line: usize, message: String) {
        self.findings.push(Finding {
            rule,
            line,
            message,
        });
    }

    pub(super) fn version(&self) -> i64 {
        self.migration.version
    }

    pub(super) fn postgres(&self) -> bool {
        self.dialect == Dialect::Postgres
    }

    pub(super) fn contract(&self) -> bool {
        self.migration.phase == Phase::Contract
    }

    pub(super) fn phase(&self) -> Phase {
        self.migration.phase
    }

    /// Whether what version `made` created is new to this migration.
    pub(super) fn fresh(&self, made: i64) -> bool {
        self.batch.fresh(made, self.version())
    }

    /// Whether `table` is new (created in this migration or its batch).
    pub(super) fn table_is_new(&self, table: &str) -> bool {
        self.schema
            .tables
            .get(table)
            .is_some_and(|t| self.fresh(t.created_in))
    }

    /// Whether the running release may use `table`: it is not new.
    pub(super) fn existing(&self, table: &str) -> bool {
        !self.table_is_new(table)
    }

    pub(super) fn column_is_new(&self, table: &str, column: &str) -> bool {
        self.table_is_new(table)
            || self
                .schema
                .column(table, column)
                .is_some_and(|c| self.fresh(c.added_in))
    }

    pub(super) fn type_is_new(&self, name: &str) -> bool {
        self.schema.types.get(name).is_some_and(|v| self.fresh(*v))
    }

    pub(super) fn statement(&mut self, statement: &Statement) {
        let line = statement.line;
        let parsed = Parser::new(self.dialect.parser_dialect())
            .with_tokens_with_locations(statement.tokens.clone())
            .parse_statements();
        match parsed {
            Ok(asts) => {
                for ast in &asts {
                    if !self.migration.transaction {
                        self.rerunnable(ast, line);
                    }
                    self.ast(ast, line);
                }
            }
            Err(error) => match keywords::recognise(&statement.tokens, self.dialect) {
                Ok(known) => self.known(known, line),
                Err(Unknown::DoBlock) => self.found(
                    Rule::ParseError,
                    line,
                    "a DO block: the lint cannot see the statements inside it, so it cannot vouch for them".into(),
                ),
                Err(Unknown::Malformed(why)) => self.found(
                    Rule::ParseError,
                    line,
                    format!("cannot parse `{}`: {why}", snippet(statement.text)),
                ),
                Err(Unknown::Unrecognised) => self.found(
                    Rule::ParseError,
                    line,
                    format!("cannot parse `{}`: {error}", snippet(statement.text)),
                ),
            },
        }
    }

    /// The rules that need the whole migration.
    pub(super) fn finish(mut self) -> Vec<Finding> {
        if let Some(begin) = self.open_transaction.take() {
            self.found(
                Rule::TransactionControl,
                begin,
                "BEGIN without COMMIT in a transaction=off migration: the transaction is still open at the end, so zdd-migrate's record of the migration is written inside it and lost when the session ends, and its locks are held until then".into(),
            );
        }
        for (table, line, has_where) in std::mem::take(&mut self.updates) {
            if self.altered.contains(&table) {
                let what = if has_where {
                    "UPDATE of"
                } else {
                    "UPDATE of the whole table"
                };
                let why = if self.migration.transaction {
                    "in one transaction the ALTER's ACCESS EXCLUSIVE lock is held while the rows are updated, so the running release can neither read nor write the table until the backfill ends"
                } else {
                    "outside a transaction the backfill is still one statement, holding a lock on every row it updates until it ends, so the running release's writes to them wait"
                };
                self.found(
                    Rule::BackfillWithSchemaChange,
                    line,
                    format!("{what} `{table}` in the same migration that alters its schema: {why}"),
                );
            }
        }
        self.findings
    }

    fn ast(&mut self, ast: &Ast, line: usize) {
        match ast {
            Ast::CreateTable(create) => {
                let name = name_key(&create.name);
                if create.if_not_exists && self.schema.tables.contains_key(&name) {
                    return;
                }
                self.create_table(name, &create.columns, &create.constraints);
            }
            Ast::CreateIndex(index) => self.create_index(index, line),
            Ast::Drop {
                object_type,
                names,
                cascade,
                ..
            } => self.drop(*object_type, names, *cascade, line),
            Ast::AlterTable(alter) => self.alter_table(alter, line),
            Ast::AlterSchema(alter) => {
                for operation in &alter.operations {
                    if let AlterSchemaOperation::Rename { name } = operation {
                        self.rename_schema(&name_key(&alter.name), &name_key(name), line);
                    }
                }
            }
            Ast::AlterType(alter) => {
                self.alter_type(&name_key(&alter.name), &alter.operation, line)
            }
            Ast::CreateSchema { schema_name, .. } => {
                let name = match schema_name {
                    SchemaName::Simple(name) | SchemaName::NamedAuthorization(name, _) => {
                        name_key(name)
                    }
                    SchemaName::UnnamedAuthorization(user) => ident_key(user),
                };
                let version = self.version();
                self.schema.schemas.entry(name).or_insert(version);
            }
            Ast::CreateType { name, .. } => {
                let version = self.version();
                self.schema.types.entry(name_key(name)).or_insert(version);
            }
            Ast::CreateDomain(domain) => {
                let version = self.version();
                self.schema
                    .types
                    .entry(name_key(&domain.name))
                    .or_insert(version);
            }
            Ast::Truncate(truncate) if truncate.cascade == Some(CascadeOption::Cascade) => {
                let tables: Vec<String> = truncate
                    .table_names
                    .iter()
                    .map(|t| name_key(&t.name))
                    .collect();
                self.found(
                    Rule::TruncateCascade,
                    line,
                    format!(
                        "TRUNCATE `{}` CASCADE also empties every table with a foreign key to it, which the running release still reads and writes",
                        tables.join("`, `")
                    ),
                );
            }
            Ast::Lock(lock) if self.postgres() => {
                let mode = lock
                    .lock_mode
                    .clone()
                    .unwrap_or(LockTableMode::AccessExclusive);
                let blocks = match mode {
                    LockTableMode::Share | LockTableMode::ShareRowExclusive => "writes",
                    LockTableMode::Exclusive | LockTableMode::AccessExclusive => "reads and writes",
                    _ => return,
                };
                for table in &lock.tables {
                    let table = name_key(&table.name);
                    if self.existing(&table) {
                        self.found(
                            Rule::LockTable,
                            line,
                            format!(
                                "LOCK TABLE `{table}` IN {mode} MODE blocks the running release's {blocks} on it until the migration commits, and waits behind every query already running"
                            ),
                        );
                    }
                }
            }
            Ast::Vacuum(vacuum) => {
                let tables = vacuum.table_name.iter().map(name_key).collect();
                self.vacuum(vacuum.full, tables, line);
            }
            Ast::StartTransaction { .. } => self.transaction(true, line),
            Ast::Commit { .. } | Ast::Rollback { .. } => self.transaction(false, line),
            Ast::Update(update) => {
                if let TableFactor::Table { name, .. } = &update.table.relation {
                    let table = name_key(name);
                    if self.existing(&table) {
                        self.updates.push((table, line, update.selection.is_some()));
                    }
                }
            }
            _ => {}
        }
    }

    fn create_table(
        &mut self,
        name: String,
        columns: &[sqlparser::ast::ColumnDef],
        constraints: &[TableConstraint],
    ) {
        let version = self.version();
        let columns = columns
            .iter()
            .map(|c| {
                let not_null = c.options.iter().any(|o| {
                    matches!(
                        o.option,
                        sqlparser::ast::ColumnOption::NotNull
                            | sqlparser::ast::ColumnOption::PrimaryKey(_)
                    )
                });
                (
                    ident_key(&c.name),
                    Column {
                        ty: type_text(&c.data_type),
                        not_null,
                        added_in: version,
                    },
                )
            })
            .collect();
        self.schema.drop_table(&name);
        for constraint in constraints {
            if let TableConstraint::Check(check) = constraint {
                if let Some(constraint) = &check.name {
                    self.schema.constraints.insert(
                        (name.clone(), ident_key(constraint)),
                        Constraint {
                            not_null: not_null_columns(&check.expr),
                            valid: true,
                            not_valid_in: None,
                        },
                    );
                }
            }
        }
        self.schema.tables.insert(
            name,
            Table {
                created_in: version,
                columns,
            },
        );
    }

    fn create_index(&mut self, index: &sqlparser::ast::CreateIndex, line: usize) {
        let table = name_key(&index.table_name);
        if index.concurrently {
            if self.postgres() && self.migration.transaction {
                self.concurrently_in_transaction(line, "CREATE INDEX CONCURRENTLY");
            }
        } else if self.postgres() && self.existing(&table) {
            self.found(
                Rule::IndexNotConcurrent,
                line,
                format!(
                    "CREATE INDEX on existing table `{table}` without CONCURRENTLY blocks writes to it (inserts, updates, deletes of the running release) while the index builds"
                ),
            );
        }
        if let Some(name) = &index.name {
            let name = name_key(name);
            if !(index.if_not_exists && self.schema.indexes.contains_key(&name)) {
                let created_in = self.version();
                self.schema
                    .indexes
                    .insert(name, Index { table, created_in });
            }
        }
    }

    fn drop(&mut self, object_type: ObjectType, names: &[ObjectName], cascade: bool, line: usize) {
        for name in names {
            let name = name_key(name);
            match object_type {
                ObjectType::Table => self.drop_table(name, line),
                ObjectType::Index => self.drop_index(&name, line, false),
                ObjectType::Schema => {
                    let new = self.schema.schemas.get(&name).is_some_and(|v| self.fresh(*v));
                    if !self.contract() && !new {
                        let cascade = if cascade {
                            " (CASCADE: with every table, view and function in it)"
                        } else {
                            ""
                        };
                        self.found(
                            Rule::DropSchema,
                            line,
                            format!(
                                "DROP SCHEMA `{name}`{cascade} outside a contract migration (this one is {}): the old release still uses what is in it",
                                self.phase()
                            ),
                        );
                    }
                    self.schema.schemas.remove(&name);
                }
                ObjectType::Database => self.found(
                    Rule::DropDatabase,
                    line,
                    format!(
                        "DROP DATABASE `{name}`: every release using it, the running one included, loses all its data"
                    ),
                ),
                ObjectType::Type => {
                    self.schema.types.remove(&name);
                }
                _ => {}
            }
        }
    }

    fn drop_table(&mut self, table: String, line: usize) {
        if self.existing(&table) {
            let finding = (!self.contract()).then(|| {
                self.found(
                    Rule::DropTable,
                    line,
                    format!(
                        "DROP TABLE `{table}` outside a contract migration (this one is {}): the old release still uses it",
                        self.phase()
                    ),
                );
                self.findings.len() - 1
            });
            self.dropped.insert(table.clone(), finding);
        }
        self.schema.drop_table(&table);
    }

    /// `DROP INDEX`; `concurrently` for `DROP INDEX CONCURRENTLY`.
    pub(super) fn drop_index(&mut self, name: &str, line: usize, concurrently: bool) {
        let new = self
            .schema
            .indexes
            .get(name)
            .is_some_and(|i| self.fresh(i.created_in) || self.table_is_new(&i.table));
        if self.postgres() && !concurrently && !new {
            let on = match self.schema.indexes.get(name) {
                Some(index) => format!("`{}`", index.table),
                None => "its table".into(),
            };
            self.found(
                Rule::DropIndexNotConcurrent,
                line,
                format!(
                    "DROP INDEX `{name}` without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on {on}: the running release's reads and writes wait until it is done, and queue behind any long query already holding the table"
                ),
            );
        }
        self.schema.indexes.remove(name);
    }

    fn rename_schema(&mut self, old: &str, new: &str, line: usize) {
        let made = self.schema.schemas.remove(old);
        if !made.is_some_and(|v| self.fresh(v)) {
            self.found(
                Rule::RenameSchema,
                line,
                format!(
                    "RENAME schema `{old}` to `{new}`: every query of the running release naming `{old}` fails"
                ),
            );
        }
        self.schema
            .schemas
            .insert(new.to_owned(), made.unwrap_or(self.version()));
    }

    fn alter_type(&mut self, name: &str, operation: &AlterTypeOperation, line: usize) {
        match operation {
            AlterTypeOperation::RenameValue(rename) if !self.type_is_new(name) => self.found(
                Rule::RenameEnumValue,
                line,
                format!(
                    "RENAME VALUE {} TO {} of type `{name}`: the running release still writes and compares the old label, and fails on it",
                    rename.from, rename.to
                ),
            ),
            AlterTypeOperation::Rename(rename) => self.rename_type(name, &ident_key(&rename.new_name), line),
            _ => {}
        }
    }

    pub(super) fn rename_type(&mut self, old: &str, new: &str, line: usize) {
        if !self.type_is_new(old) {
            self.found(
                Rule::RenameType,
                line,
                format!(
                    "RENAME type `{old}` to `{new}`: queries of the running release that cast to `{old}` or name it fail"
                ),
            );
        }
        let made = self.schema.types.remove(old).unwrap_or(self.version());
        self.schema.types.insert(new.to_owned(), made);
    }

    /// `VALIDATE CONSTRAINT` of a table's or domain's constraint.
    pub(super) fn validate(&mut self, owner: &str, constraint: &str, line: usize) {
        let version = self.version();
        let key = (owner.to_owned(), constraint.to_owned());
        if let Some(c) = self.schema.constraints.get_mut(&key) {
            c.valid = true;
            if c.not_valid_in == Some(version) && self.migration.transaction {
                self.found(
                    Rule::ValidateInSameMigration,
                    line,
                    format!(
                        "VALIDATE CONSTRAINT `{constraint}` in the migration that added it NOT VALID: in one transaction the ADD's lock on `{owner}` is still held, so the validation scan blocks the running release as if NOT VALID had not been written"
                    ),
                );
            }
        }
    }
}

/// The name of a table constraint, folded.
pub(super) fn constraint_name(constraint: &TableConstraint) -> Option<String> {
    let name = match constraint {
        TableConstraint::Check(c) => c.name.as_ref(),
        TableConstraint::ForeignKey(c) => c.name.as_ref(),
        TableConstraint::Unique(c) => c.name.as_ref(),
        TableConstraint::PrimaryKey(c) => c.name.as_ref(),
        TableConstraint::Exclude(c) => c.name.as_ref(),
        TableConstraint::UniqueUsingIndex(c) | TableConstraint::PrimaryKeyUsingIndex(c) => {
            c.name.as_ref()
        }
        _ => None,
    };
    name.map(ident_key)
}

/// The statement for a message: whitespace collapsed, at most 60
/// characters.
fn snippet(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match collapsed.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &collapsed[..i]),
        None => collapsed,
    }
}
