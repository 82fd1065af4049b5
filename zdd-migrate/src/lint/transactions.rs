//! What depends on the migration's transaction: statements that cannot run
//! inside one (CONCURRENTLY, VACUUM), transaction control written into the
//! file, and, in a `transaction=off` migration, statements that could not
//! run again after a failure halfway.
//!
//! zdd-migrate runs a transactional migration in a transaction of its own,
//! so a BEGIN/COMMIT in it ends that transaction early. A `transaction=off`
//! migration is sent statement by statement on the session that also
//! records it: a BEGIN there (nested, or never committed) leaves that
//! session inside a transaction. A failure halfway through a
//! `transaction=off` migration leaves what ran; after `repair`, `up` runs
//! the whole file again, so every statement must be written to succeed the
//! second time (`IF NOT EXISTS`, `IF EXISTS`, a `DROP CONSTRAINT IF EXISTS`
//! before an `ADD CONSTRAINT`).

use sqlparser::ast::{AlterTableOperation, AlterTypeOperation, Statement as Ast};

use super::check::{constraint_name, Check};
use super::schema::{ident_key, name_key};
use crate::rule::Rule;
use crate::sql::Dialect;

impl Check<'_> {
    pub(super) fn concurrently_in_transaction(&mut self, line: usize, what: &str) {
        self.found(
            Rule::ConcurrentlyInTransaction,
            line,
            format!("{what} cannot run inside a transaction block, and this migration runs in one: it fails"),
        );
    }

    pub(super) fn transaction(&mut self, begin: bool, line: usize) {
        if self.migration.transaction {
            self.found(
                Rule::TransactionControl,
                line,
                "transaction control inside a migration that zdd-migrate already runs in a transaction: a COMMIT ends zdd-migrate's transaction early, so a later failure leaves half the migration applied and unrecorded".into(),
            );
            return;
        }
        match (begin, self.open_transaction) {
            (true, Some(open)) => self.found(
                Rule::TransactionControl,
                line,
                format!("BEGIN inside the transaction opened at line {open} (nested): PostgreSQL ignores it with a warning, and the first COMMIT ends both"),
            ),
            (true, None) => self.open_transaction = Some(line),
            (false, Some(open)) => {
                self.open_transaction = None;
                self.found(
                    Rule::TransactionControl,
                    open,
                    "BEGIN … COMMIT inside a transaction=off migration: zdd-migrate records the migration on the same session, and a failure inside leaves that session in an aborted transaction".into(),
                );
            }
            (false, None) => self.found(
                Rule::TransactionControl,
                line,
                "COMMIT or ROLLBACK with no transaction open in a transaction=off migration".into(),
            ),
        }
    }

    pub(super) fn not_rerunnable(&mut self, line: usize, what: &str) {
        self.found(
            Rule::NotRerunnable,
            line,
            format!(
                "{what} in a transaction=off migration: if a later statement fails, what ran stays, and running the migration again (after `repair`) fails on this statement"
            ),
        );
    }

    /// In a `transaction=off` migration every statement must be safe to run
    /// again after a failure halfway.
    pub(super) fn rerunnable(&mut self, ast: &Ast, line: usize) {
        let what = match ast {
            Ast::CreateTable(c) if !c.if_not_exists => "CREATE TABLE without IF NOT EXISTS",
            Ast::CreateIndex(c) if !c.if_not_exists => {
                "CREATE INDEX without IF NOT EXISTS (a failed CONCURRENTLY build also leaves an invalid index behind: drop it IF EXISTS first)"
            }
            Ast::CreateSchema { if_not_exists: false, .. } => "CREATE SCHEMA without IF NOT EXISTS",
            Ast::CreateSequence { if_not_exists: false, .. } => "CREATE SEQUENCE without IF NOT EXISTS",
            Ast::CreateExtension(c) if !c.if_not_exists => "CREATE EXTENSION without IF NOT EXISTS",
            Ast::CreateView(c) if !c.if_not_exists && !c.or_replace => {
                "CREATE VIEW without OR REPLACE or IF NOT EXISTS"
            }
            Ast::Drop { if_exists: false, .. } => "DROP without IF EXISTS",
            Ast::AlterType(alter) => match &alter.operation {
                AlterTypeOperation::AddValue(add) if !add.if_not_exists => {
                    "ALTER TYPE … ADD VALUE without IF NOT EXISTS"
                }
                _ => return,
            },
            Ast::AlterTable(alter) => {
                let table = name_key(&alter.name);
                for operation in &alter.operations {
                    if let Some(what) = self.operation_not_rerunnable(&table, operation) {
                        self.not_rerunnable(line, what);
                    }
                }
                return;
            }
            _ => return,
        };
        self.not_rerunnable(line, what);
    }

    fn operation_not_rerunnable(
        &mut self,
        table: &str,
        operation: &AlterTableOperation,
    ) -> Option<&'static str> {
        match operation {
            AlterTableOperation::AddColumn {
                if_not_exists: false,
                ..
            } => Some(match self.dialect {
                Dialect::Postgres => "ADD COLUMN without IF NOT EXISTS",
                Dialect::Sqlite => "ADD COLUMN (SQLite has no IF NOT EXISTS for it: move it to a transactional migration)",
            }),
            AlterTableOperation::DropColumn {
                if_exists: false, ..
            } => Some("DROP COLUMN without IF EXISTS"),
            AlterTableOperation::DropConstraint {
                if_exists, name, ..
            } => {
                if *if_exists {
                    self.dropped_if_exists
                        .insert((table.to_owned(), ident_key(name)));
                    None
                } else {
                    Some("DROP CONSTRAINT without IF EXISTS")
                }
            }
            AlterTableOperation::AddConstraint { constraint, .. } => {
                let name = constraint_name(constraint);
                let guarded = name.is_some_and(|n| {
                    self.dropped_if_exists
                        .contains(&(table.to_owned(), n))
                });
                (!guarded).then_some(
                    "ADD CONSTRAINT with no `DROP CONSTRAINT IF EXISTS` of it before (it has no IF NOT EXISTS)",
                )
            }
            _ => None,
        }
    }
}
