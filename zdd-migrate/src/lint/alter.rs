//! `ALTER TABLE`: one function per action.
//!
//! Each function judges its action against the model (is the table new?
//! the column? is a CHECK proving NOT NULL validated? what was the old
//! type?) and then updates the model, so the next statement sees the
//! result. On SQLite, whose `ALTER TABLE` (3.54, the one zdd-migrate
//! bundles) only adds, renames and drops columns, renames the table, sets or
//! drops NOT NULL, adds a CHECK and drops a constraint, any other action is
//! `sqlite-alter-unsupported` and nothing else is said about it.

use sqlparser::ast::{
    AlterColumnOperation, AlterTable, AlterTableOperation, DataType, DetachPartitionMode, Ident,
    ObjectName, RenameTableNameKind, TableConstraint,
};

use super::check::{constraint_name, Check};
use super::schema::{ident_key, name_key, not_null_columns, type_text, widens, Constraint};
use crate::rule::Rule;
use crate::sql::Dialect;

impl Check<'_> {
    pub(super) fn alter_table(&mut self, alter: &AlterTable, line: usize) {
        let table = name_key(&alter.name);
        if self.existing(&table) {
            self.altered.insert(table.clone());
        }
        for operation in &alter.operations {
            if self.dialect == Dialect::Sqlite && !sqlite_supports(operation) {
                self.sqlite_unsupported(&table, operation, line);
                continue;
            }
            match operation {
                AlterTableOperation::AddColumn { column_def, .. } => {
                    self.add_column(&table, column_def, line)
                }
                AlterTableOperation::DropColumn { column_names, .. } => {
                    for name in column_names {
                        self.drop_column(&table, &ident_key(name), line);
                    }
                }
                AlterTableOperation::RenameColumn {
                    old_column_name,
                    new_column_name,
                } => self.rename_column(
                    &table,
                    &ident_key(old_column_name),
                    &ident_key(new_column_name),
                    line,
                ),
                AlterTableOperation::RenameTable { table_name } => {
                    let (RenameTableNameKind::To(new) | RenameTableNameKind::As(new)) = table_name;
                    self.rename_table(&table, &name_key(new), line)
                }
                AlterTableOperation::AlterColumn { column_name, op } => {
                    self.alter_column(&table, &ident_key(column_name), op, line)
                }
                AlterTableOperation::ChangeColumn { old_name, .. }
                | AlterTableOperation::ModifyColumn {
                    col_name: old_name, ..
                } => self.change_column(&table, old_name, line),
                AlterTableOperation::AddConstraint {
                    constraint,
                    not_valid,
                } => self.add_constraint(&table, constraint, *not_valid, line),
                AlterTableOperation::ValidateConstraint { name } => {
                    self.validate(&table, &ident_key(name), line)
                }
                AlterTableOperation::DropConstraint { name, .. } => {
                    self.schema
                        .constraints
                        .remove(&(table.clone(), ident_key(name)));
                }
                AlterTableOperation::DetachPartitionOf { partition, mode } => {
                    self.detach_partition(&table, partition, *mode, line)
                }
                _ => {}
            }
        }
    }

    fn alter_column(&mut self, table: &str, column: &str, op: &AlterColumnOperation, line: usize) {
        match op {
            AlterColumnOperation::SetNotNull => self.set_not_null(table, column, line),
            AlterColumnOperation::DropNotNull => self.drop_not_null(table, column, line),
            AlterColumnOperation::SetDataType {
                data_type, using, ..
            } => self.set_type(table, column, data_type, using.is_some(), line),
            _ => {}
        }
    }

    fn drop_column(&mut self, table: &str, column: &str, line: usize) {
        if !self.contract() && !self.column_is_new(table, column) {
            self.found(
                Rule::DropColumn,
                line,
                format!(
                    "DROP COLUMN `{table}.{column}` outside a contract migration (this one is {}): the old release still reads or writes it",
                    self.phase()
                ),
            );
        }
        if let Some(t) = self.schema.tables.get_mut(table) {
            t.columns.remove(column);
        }
    }

    fn rename_column(&mut self, table: &str, old: &str, new: &str, line: usize) {
        if !self.column_is_new(table, old) {
            self.found(
                Rule::RenameColumn,
                line,
                format!(
                    "RENAME COLUMN `{table}.{old}` to `{new}`: the old release still uses the old name, and its queries fail"
                ),
            );
        }
        if let Some(t) = self.schema.tables.get_mut(table) {
            if let Some(column) = t.columns.remove(old) {
                t.columns.insert(new.to_owned(), column);
            }
        }
    }

    /// A rename to the name of a table dropped earlier in this migration is
    /// a rebuild (SQLite's way of changing a column): one finding for the
    /// pair, replacing the `drop-table` one.
    fn rename_table(&mut self, table: &str, new: &str, line: usize) {
        if let Some(drop_finding) = self.dropped.remove(new) {
            let message = format!(
                "rebuilding `{new}` (dropped, then `{table}` renamed to it): rows the running release writes to `{new}` while the copy is made are lost, its indexes and triggers go with the old table, and writes wait for the copy"
            );
            match drop_finding {
                Some(index) => {
                    let finding = &mut self.findings[index];
                    finding.rule = Rule::TableRebuild;
                    finding.message = message;
                }
                None => self.found(Rule::TableRebuild, line, message),
            }
        } else if self.existing(table) {
            self.found(
                Rule::RenameTable,
                line,
                format!(
                    "RENAME table `{table}` to `{new}`: the old release still uses the old name, and its queries fail"
                ),
            );
        }
        self.schema.rename_table(table, new);
    }

    /// PostgreSQL: flagged unless a validated CHECK proves the column (the
    /// scan is skipped then). SQLite has no NOT VALID: flagged outside a
    /// contract migration, where the old release may still leave it empty.
    fn set_not_null(&mut self, table: &str, column: &str, line: usize) {
        let already = self
            .schema
            .column(table, column)
            .is_some_and(|c| c.not_null);
        let safe = match self.dialect {
            Dialect::Postgres => self.schema.proven_not_null(table, column),
            Dialect::Sqlite => self.contract(),
        };
        if self.dialect == Dialect::Sqlite
            && !self.column_is_new(table, column)
            && !already
            && !safe
        {
            self.found(
                Rule::SetNotNull,
                line,
                format!(
                    "SET NOT NULL on `{table}.{column}` outside a contract migration (this one is {}): SQLite checks every row now, and the old release's inserts that leave it empty fail",
                    self.phase()
                ),
            );
        } else if !self.column_is_new(table, column) && !already && !safe {
            let pending_check = self.schema.constraints.iter().find_map(|((t, name), c)| {
                (t == table && !c.valid && c.not_null.iter().any(|n| n == column))
                    .then(|| name.clone())
            });
            let hint = match pending_check {
                Some(name) => format!(" (the CHECK `{name}` that proves it is not validated yet: VALIDATE it in an earlier migration)"),
                None => String::new(),
            };
            self.found(
                Rule::SetNotNull,
                line,
                format!(
                    "SET NOT NULL on `{table}.{column}` scans the whole table under an ACCESS EXCLUSIVE lock, and fails inserts from the old release that leave it empty{hint}"
                ),
            );
        }
        if let Some(c) = self
            .schema
            .tables
            .get_mut(table)
            .and_then(|t| t.columns.get_mut(column))
        {
            c.not_null = true;
        }
    }

    fn drop_not_null(&mut self, table: &str, column: &str, line: usize) {
        if !self.contract() && !self.column_is_new(table, column) {
            self.found(
                Rule::DropNotNull,
                line,
                format!(
                    "DROP NOT NULL on `{table}.{column}` outside a contract migration (this one is {}): the new release may then write NULL, and the running release, which expects a value, fails on those rows",
                    self.phase()
                ),
            );
        }
        if let Some(c) = self
            .schema
            .tables
            .get_mut(table)
            .and_then(|t| t.columns.get_mut(column))
        {
            c.not_null = false;
        }
    }

    fn set_type(
        &mut self,
        table: &str,
        column: &str,
        data_type: &DataType,
        using: bool,
        line: usize,
    ) {
        let old_type = self.schema.column(table, column).map(|c| c.ty.clone());
        let new_type = type_text(data_type);
        if !self.column_is_new(table, column) {
            let widening = !using
                && old_type
                    .as_deref()
                    .is_some_and(|old| widens(old, &new_type));
            if !widening {
                let from = match old_type {
                    Some(t) => format!("from {t} "),
                    None => "(its current type is not known from the migrations) ".into(),
                };
                self.found(
                    Rule::ChangeColumnType,
                    line,
                    format!(
                        "changing the type of `{table}.{column}` {from}to {new_type} rewrites the table under an ACCESS EXCLUSIVE lock, and the old release may not handle the new type"
                    ),
                );
            }
        }
        if let Some(c) = self
            .schema
            .tables
            .get_mut(table)
            .and_then(|t| t.columns.get_mut(column))
        {
            c.ty = new_type;
        }
    }

    /// MySQL's `CHANGE COLUMN` / `MODIFY COLUMN`.
    fn change_column(&mut self, table: &str, column: &Ident, line: usize) {
        if self.existing(table) {
            self.found(
                Rule::ChangeColumnType,
                line,
                format!(
                    "changing column `{table}.{}` rewrites it, and the old release may not handle the result",
                    ident_key(column)
                ),
            );
        }
    }

    fn add_constraint(
        &mut self,
        table: &str,
        constraint: &TableConstraint,
        not_valid: bool,
        line: usize,
    ) {
        if let Some(name) = constraint_name(constraint) {
            let version = self.version();
            let not_null = match constraint {
                TableConstraint::Check(check) => not_null_columns(&check.expr),
                _ => Vec::new(),
            };
            self.schema.constraints.insert(
                (table.to_owned(), name),
                Constraint {
                    not_null,
                    valid: !not_valid,
                    not_valid_in: not_valid.then_some(version),
                },
            );
        }
        if !self.existing(table) || !self.postgres() {
            return;
        }
        let message = match constraint {
            TableConstraint::ForeignKey(_) | TableConstraint::Check(_) if !not_valid => {
                "a new constraint without NOT VALID checks every existing row while it locks the table against writes (a foreign key locks the referenced table too)"
            }
            TableConstraint::Unique(_) | TableConstraint::PrimaryKey(_) => {
                "a new UNIQUE or PRIMARY KEY constraint builds its index under an ACCESS EXCLUSIVE lock: the running release can neither read nor write the table meanwhile"
            }
            TableConstraint::Exclude(_) => {
                "an EXCLUDE constraint cannot be added NOT VALID: it checks every row under an ACCESS EXCLUSIVE lock, blocking the running release's reads and writes"
            }
            _ => return,
        };
        self.found(
            Rule::ConstraintNotValid,
            line,
            format!("{message} (`{table}`)"),
        );
    }

    fn detach_partition(
        &mut self,
        table: &str,
        partition: &ObjectName,
        mode: Option<DetachPartitionMode>,
        line: usize,
    ) {
        if !self.postgres() {
            return;
        }
        let partition = name_key(partition);
        match mode {
            Some(DetachPartitionMode::Concurrently) if self.migration.transaction => {
                self.concurrently_in_transaction(line, "DETACH PARTITION … CONCURRENTLY");
            }
            Some(DetachPartitionMode::Concurrently) => {}
            _ if self.existing(table) => self.found(
                Rule::DetachPartitionNotConcurrent,
                line,
                format!(
                    "DETACH PARTITION `{partition}` from `{table}` without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on `{table}`: the running release's reads and writes of every partition wait"
                ),
            ),
            _ => {}
        }
    }

    fn sqlite_unsupported(&mut self, table: &str, operation: &AlterTableOperation, line: usize) {
        let text = operation.to_string();
        let what: String = text.chars().take(60).collect();
        self.found(
            Rule::SqliteAlterUnsupported,
            line,
            format!(
                "SQLite's ALTER TABLE cannot `{what}` (on `{table}`): the migration fails; changing it needs a rebuild of the table, which the running release sees"
            ),
        );
    }
}

/// What SQLite's `ALTER TABLE` can do (3.54, the SQLite zdd-migrate
/// bundles): add, drop and rename columns, rename the table, set or drop
/// NOT NULL, add a CHECK, drop a constraint.
fn sqlite_supports(operation: &AlterTableOperation) -> bool {
    match operation {
        AlterTableOperation::AddColumn { .. }
        | AlterTableOperation::DropColumn { .. }
        | AlterTableOperation::RenameColumn { .. }
        | AlterTableOperation::RenameTable { .. }
        | AlterTableOperation::DropConstraint { .. } => true,
        AlterTableOperation::AlterColumn { op, .. } => matches!(
            op,
            AlterColumnOperation::SetNotNull | AlterColumnOperation::DropNotNull
        ),
        AlterTableOperation::AddConstraint {
            constraint: TableConstraint::Check(_),
            not_valid: false,
        } => true,
        _ => false,
    }
}
