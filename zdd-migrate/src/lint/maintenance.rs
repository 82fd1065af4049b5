//! Maintenance statements and the statements read from their tokens
//! ([`super::keywords`]): VACUUM, CLUSTER, REINDEX, DROP INDEX
//! CONCURRENTLY, ALTER DOMAIN.
//!
//! VACUUM FULL and CLUSTER rewrite a table under an ACCESS EXCLUSIVE lock;
//! REINDEX without CONCURRENTLY blocks writes (and reads using the index).
//! A domain's constraint is checked against every column of the domain,
//! in every table, so `ALTER DOMAIN … ADD CONSTRAINT` wants NOT VALID like
//! a table's.

use super::check::Check;
use super::keywords::{Domain, Known};
use super::schema::Constraint;
use crate::rule::Rule;

impl Check<'_> {
    /// VACUUM, parsed or read from its tokens.
    pub(super) fn vacuum(&mut self, full: bool, tables: Vec<String>, line: usize) {
        if self.migration.transaction {
            self.concurrently_in_transaction(line, "VACUUM");
        }
        if !full || !self.postgres() {
            return;
        }
        let busy: Vec<&String> = tables.iter().filter(|t| self.existing(t)).collect();
        if tables.is_empty() || !busy.is_empty() {
            let what = if tables.is_empty() {
                "every table of the database".to_owned()
            } else {
                format!(
                    "`{}`",
                    busy.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join("`, `")
                )
            };
            self.found(
                Rule::VacuumFull,
                line,
                format!(
                    "VACUUM FULL rewrites {what} under an ACCESS EXCLUSIVE lock: the running release can neither read nor write until the copy is done"
                ),
            );
        }
    }

    /// A statement the parser does not know, read from its tokens.
    pub(super) fn known(&mut self, known: Known, line: usize) {
        let off = !self.migration.transaction;
        match known {
            Known::Harmless => {}
            Known::Vacuum { full, tables } => self.vacuum(full, tables, line),
            Known::Cluster { table } => {
                if table.as_ref().is_some_and(|t| self.table_is_new(t)) {
                    return;
                }
                let what = table.map_or("every previously clustered table".into(), |t| {
                    format!("`{t}`")
                });
                self.found(
                    Rule::Cluster,
                    line,
                    format!(
                        "CLUSTER rewrites {what} under an ACCESS EXCLUSIVE lock: the running release can neither read nor write it until the rewrite is done"
                    ),
                );
            }
            Known::Reindex {
                target,
                name,
                concurrently,
            } => {
                if concurrently {
                    if !off {
                        self.concurrently_in_transaction(line, "REINDEX CONCURRENTLY");
                    }
                    return;
                }
                let new =
                    name.as_ref().is_some_and(|n| match target.as_str() {
                        "TABLE" => self.table_is_new(n),
                        "INDEX" => self.schema.indexes.get(n).is_some_and(|i| {
                            self.fresh(i.created_in) || self.table_is_new(&i.table)
                        }),
                        _ => false,
                    });
                if !new {
                    let name = name.map(|n| format!(" `{n}`")).unwrap_or_default();
                    self.found(
                        Rule::ReindexNotConcurrent,
                        line,
                        format!(
                            "REINDEX {target}{name} without CONCURRENTLY blocks writes to the table while it rebuilds, and reads that would use the index"
                        ),
                    );
                }
            }
            Known::DropIndexConcurrently { names, if_exists } => {
                if !off {
                    self.concurrently_in_transaction(line, "DROP INDEX CONCURRENTLY");
                } else if !if_exists {
                    self.not_rerunnable(line, "DROP INDEX CONCURRENTLY without IF EXISTS");
                }
                for name in names {
                    self.drop_index(&name, line, true);
                }
            }
            Known::AlterDomain { name, action } => self.alter_domain(&name, action, line),
        }
    }

    fn alter_domain(&mut self, domain: &str, action: Domain, line: usize) {
        let new = self.type_is_new(domain);
        match action {
            Domain::AddConstraint { name, not_valid } => {
                if !new && !not_valid {
                    self.found(
                        Rule::ConstraintNotValid,
                        line,
                        format!(
                            "ALTER DOMAIN `{domain}` ADD CONSTRAINT without NOT VALID checks every column of the domain, in every table, while it locks them"
                        ),
                    );
                }
                if let Some(constraint) = name {
                    let version = self.version();
                    self.schema.constraints.insert(
                        (domain.to_owned(), constraint),
                        Constraint {
                            not_null: Vec::new(),
                            valid: !not_valid,
                            not_valid_in: not_valid.then_some(version),
                        },
                    );
                }
            }
            Domain::ValidateConstraint(constraint) => self.validate(domain, &constraint, line),
            Domain::SetNotNull if !new => self.found(
                Rule::SetNotNull,
                line,
                format!(
                    "ALTER DOMAIN `{domain}` SET NOT NULL scans every column of the domain, in every table, under lock, and fails the running release's inserts that leave one empty"
                ),
            ),
            Domain::DropNotNull if !new && !self.contract() => self.found(
                Rule::DropNotNull,
                line,
                format!(
                    "ALTER DOMAIN `{domain}` DROP NOT NULL: the new release may then write NULL where the running release expects a value"
                ),
            ),
            Domain::RenameTo(new_name) => self.rename_type(domain, &new_name, line),
            _ => {}
        }
    }
}
