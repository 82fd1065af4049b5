//! The lint rules: their ids, severities and the safe way for each.
//!
//! This module depends on nothing else in the crate: the migration
//! headers ([`crate::source`], whose `allow=` lines name rules) and the
//! lint ([`crate::lint`], which finds them) both use it.
//!
//! The `suggestion` of a rule is the safe alternative, written as the
//! expand/contract steps; the `message` of a finding (made by the lint)
//! says what the statement does and why it breaks the running release or
//! blocks the table.

use std::fmt;

use serde::Serialize;

/// How a finding counts: errors stop `lint`, `up` and `contract`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

macro_rules! rules {
    ($($variant:ident => $id:literal, $suggestion:literal;)*) => {
        /// The lint rules. Their ids are what `allow=` names and what
        /// `lint` records carry.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Rule {
            $($variant,)*
        }

        /// Every rule.
        pub const ALL: &[Rule] = &[$(Rule::$variant,)*];

        impl Rule {
            pub fn id(self) -> &'static str {
                match self {
                    $(Rule::$variant => $id,)*
                }
            }

            /// The safe alternative, for the `suggestion` field.
            pub fn suggestion(self) -> &'static str {
                match self {
                    $(Rule::$variant => $suggestion,)*
                }
            }
        }
    };
}

rules! {
    Header => "header",
        "start the file with `-- zdd: phase=expand|data|contract`; optional: `-- zdd: transaction=off`, `-- zdd: allow=RULE reason=\"…\"`";
    ParseError => "parse-error",
        "fix the statement; if it is valid SQL the parser does not know, check it by hand and add `-- zdd: allow=parse-error reason=\"…\"`";
    DropTable => "drop-table",
        "stop using the table in a release first, then drop it in a `phase=contract` migration, which runs only after that release has replaced the old one";
    DropColumn => "drop-column",
        "stop reading and writing the column in a release first, then drop it in a `phase=contract` migration";
    RenameTable => "rename-table",
        "create the new table (or a view with the new name), make the code use it while the old name still works, then drop the old one in a contract migration";
    RenameColumn => "rename-column",
        "add the new column (expand), backfill it in batches (phase=data), make the code write both and read the new one, then drop the old column in a contract migration";
    AddColumnNotNull => "add-column-not-null",
        "add the column nullable or with a constant DEFAULT; to require it later: backfill (phase=data), `ADD CONSTRAINT … CHECK (col IS NOT NULL) NOT VALID`, `VALIDATE CONSTRAINT` in a later migration, then SET NOT NULL";
    AddColumnVolatileDefault => "add-column-volatile-default",
        "add the column without a default (or with a constant one), `ALTER COLUMN … SET DEFAULT …` for new rows, then backfill the existing rows in batches in a phase=data migration";
    AddColumnGeneratedStored => "add-column-generated-stored",
        "add a plain nullable column, fill it for new rows with a trigger (or from the code), backfill the existing rows in batches (phase=data); or compute the value in a view or the query";
    AddColumnSerial => "add-column-serial",
        "add a plain nullable bigint column, create a sequence, `ALTER COLUMN … SET DEFAULT nextval(…)`, backfill the existing rows in batches (phase=data), then require it with a validated CHECK";
    AddColumnConstraint => "add-column-constraint",
        "add the column plain first; then, in later migrations: `CREATE UNIQUE INDEX CONCURRENTLY` + `ADD CONSTRAINT … UNIQUE USING INDEX` (or PRIMARY KEY USING INDEX), `ADD CONSTRAINT … FOREIGN KEY … NOT VALID` / `CHECK … NOT VALID` + `VALIDATE CONSTRAINT`";
    AddColumnJson => "add-column-json",
        "use jsonb: json has no equality operator, so queries of the running release that compare whole rows (SELECT DISTINCT, UNION, GROUP BY) fail on the table";
    SetNotNull => "set-not-null",
        "add `CHECK (col IS NOT NULL) NOT VALID`, `VALIDATE CONSTRAINT` in a later migration, then SET NOT NULL in a migration after that: PostgreSQL 12+ skips the scan when a validated check proves the column, and the lint knows it. SQLite (no NOT VALID): backfill (phase=data), then SET NOT NULL in a contract migration, once every running release writes the column";
    DropNotNull => "drop-not-null",
        "release code that handles NULL in the column first (while the constraint still holds), then drop NOT NULL in a `phase=contract` migration, once no older release runs";
    ChangeColumnType => "change-column-type",
        "add a column of the new type (expand), write both from the code, backfill it in batches (phase=data), switch reads to it, then drop the old column in a contract migration";
    ConstraintNotValid => "constraint-not-valid",
        "add the constraint `NOT VALID` (it still checks new rows) and `VALIDATE CONSTRAINT` in a later migration, which does not block writes; for UNIQUE or PRIMARY KEY, `CREATE UNIQUE INDEX CONCURRENTLY` first, then `ADD CONSTRAINT … USING INDEX`; an EXCLUDE constraint cannot be added without the scan: only on a new or small table (allow it with the reason)";
    ValidateInSameMigration => "validate-in-same-migration",
        "keep `ADD CONSTRAINT … NOT VALID` in this migration and move `VALIDATE CONSTRAINT` to a later one: in one transaction the validation holds the lock the ADD took for the whole scan";
    IndexNotConcurrent => "index-not-concurrent",
        "use `CREATE INDEX CONCURRENTLY IF NOT EXISTS` in a migration with `-- zdd: transaction=off`";
    DropIndexNotConcurrent => "drop-index-not-concurrent",
        "use `DROP INDEX CONCURRENTLY IF EXISTS` in a migration with `-- zdd: transaction=off`";
    ReindexNotConcurrent => "reindex-not-concurrent",
        "use `REINDEX … CONCURRENTLY` (PostgreSQL 12+) in a migration with `-- zdd: transaction=off`";
    DetachPartitionNotConcurrent => "detach-partition-not-concurrent",
        "use `ALTER TABLE … DETACH PARTITION … CONCURRENTLY` (PostgreSQL 14+) in a migration with `-- zdd: transaction=off`";
    VacuumFull => "vacuum-full",
        "use plain VACUUM (it does not block reads or writes), or rebuild the table online with pg_repack outside the migrations";
    Cluster => "cluster",
        "leave CLUSTER out of migrations; rebuild the table online with pg_repack (`--order-by`), or rely on an index";
    LockTable => "lock-table",
        "do not lock tables by hand: let each statement take the lock it needs, under zdd-migrate's lock timeout; if the order of locks matters, make the statements smaller";
    ConcurrentlyInTransaction => "concurrently-in-transaction",
        "add `-- zdd: transaction=off` to the header, and keep the statement in a migration of its own";
    TransactionControl => "transaction-control",
        "remove BEGIN/COMMIT/ROLLBACK: zdd-migrate runs a migration in a transaction of its own; statements that must run outside one go in a `transaction=off` migration of their own, the others in a transactional migration";
    NotRerunnable => "not-rerunnable",
        "write the statement so it can run again after a failure halfway: `IF NOT EXISTS` / `IF EXISTS` (`CREATE INDEX CONCURRENTLY IF NOT EXISTS`, `DROP INDEX CONCURRENTLY IF EXISTS`, `ADD COLUMN IF NOT EXISTS`), a `DROP CONSTRAINT IF EXISTS` before an `ADD CONSTRAINT`; or move it to a transactional migration";
    DropDatabase => "drop-database",
        "never drop a database from a migration: retire everything that uses it, then drop it by hand";
    DropSchema => "drop-schema",
        "stop using every object in the schema in a release first, then drop it in a `phase=contract` migration";
    TruncateCascade => "truncate-cascade",
        "delete exactly the rows you mean, in batches (phase=data), table by table; never TRUNCATE … CASCADE in a migration";
    RenameSchema => "rename-schema",
        "create the new schema and move or recreate the objects (or views) under it, switch the code, then drop the old one in a contract migration";
    RenameEnumValue => "rename-enum-value",
        "`ALTER TYPE … ADD VALUE` the new label (expand), make the code write the new one and accept both, update the rows in batches (phase=data), then stop accepting the old one";
    RenameType => "rename-type",
        "create the new type (or domain), move the columns to it with the expand/backfill/contract steps, then drop the old one in a contract migration";
    BackfillWithSchemaChange => "backfill-with-schema-change",
        "change the schema in an expand migration, then backfill in a `phase=data` migration of its own, in batches (`UPDATE … WHERE id IN (SELECT id … LIMIT 1000)`)";
    TableRebuild => "table-rebuild",
        "change the table in place where it can be (ADD COLUMN, RENAME, DROP COLUMN in a contract migration); for a new type or constraint: a new column, backfill in batches, switch, drop the old one in a contract migration";
    SqliteAlterUnsupported => "sqlite-alter-unsupported",
        "SQLite's ALTER TABLE adds, renames and drops columns, renames the table, sets or drops NOT NULL, adds a CHECK and drops a constraint, nothing else: for a new type, default or key, add a new column (expand), backfill it (phase=data), switch the code, drop the old one (contract)";
    UnusedAllow => "unused-allow",
        "remove the allow line";
}

impl Rule {
    pub fn parse(id: &str) -> Option<Rule> {
        ALL.iter().copied().find(|r| r.id() == id)
    }

    /// Whether an `allow=` line may silence the rule. Broken headers and
    /// the lint's own bookkeeping cannot be waved through.
    pub fn allowable(self) -> bool {
        !matches!(self, Rule::Header | Rule::UnusedAllow)
    }

    pub fn allowable_ids() -> Vec<&'static str> {
        ALL.iter()
            .copied()
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
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_round_trip_and_are_unique() {
        let mut ids: Vec<&str> = ALL.iter().map(|r| r.id()).collect();
        for rule in ALL {
            assert_eq!(Rule::parse(rule.id()), Some(*rule));
            assert!(!rule.suggestion().is_empty());
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), ALL.len());
        assert!(!Rule::Header.allowable());
        assert!(Rule::DropColumn.allowable());
    }
}
