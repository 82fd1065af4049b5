//! The lint: what in a migration breaks the code that is still running.
//!
//! During a rollout the old release serves traffic against the schema the
//! migration leaves behind, and a statement that takes a strong lock on a
//! busy table stalls every request queued behind it. Each rule (see
//! [`crate::rule`]) names one such change and the safe way to make it
//! (expand, backfill, switch, then contract once the old release is gone).
//!
//! Every statement goes through a real SQL parser (`sqlparser`). The few
//! PostgreSQL statements it does not know (`VACUUM ANALYZE`, `CLUSTER`,
//! `REINDEX`, `DROP INDEX CONCURRENTLY`, `ALTER DOMAIN`) are read from
//! their tokens by `keywords`; anything else the lint cannot read is
//! itself a finding (`parse-error`, naming the statement), because the lint
//! cannot vouch for what it cannot read.
//!
//! The lint follows the whole folder in version order and keeps a model of
//! what the migrations built (`schema`): tables, column types and NOT
//! NULL, validated CHECKs, indexes, types. An object is **new** when the
//! migration being checked created it, or an earlier migration of the same
//! unapplied batch did ([`Batch`]: `up`, `plan` and `contract` know it from
//! the history table; `lint` from `--pending-from`); what is new blocks no
//! one and no running release uses it. Everything else, including objects
//! the migrations never created, is assumed to exist and be busy.
//!
//! The checks of a statement are in `check` (the statements, and what a
//! rule needs across them), `alter` (one function per `ALTER TABLE`
//! action), `column` (`ADD COLUMN`), `transactions` (what depends on
//! the migration's transaction) and `maintenance` (VACUUM, CLUSTER,
//! REINDEX, ALTER DOMAIN).
//!
//! A `-- zdd: allow=RULE reason="…"` line silences one rule for its file;
//! allowed findings are still reported (`allowed: true`, with the reason),
//! and an allow that silences nothing is a warning.

mod alter;
mod check;
mod column;
mod keywords;
mod maintenance;
mod schema;
mod transactions;

use serde::Serialize;

pub use crate::rule::{Rule, Severity};
pub use schema::Batch;

use crate::source::Migration;
use crate::sql::{self, Dialect};
use check::Check;
use schema::Schema;

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

/// Lints every migration of the folder, in version order, judging each
/// against what the earlier ones built and `batch` (what is not applied
/// yet). Returns the findings of each migration, in the order of
/// `migrations`.
pub fn lint(migrations: &[Migration], dialect: Dialect, batch: &Batch) -> Vec<Vec<LintRecord>> {
    let mut schema = Schema::default();
    migrations
        .iter()
        .map(|m| lint_one(m, dialect, &mut schema, batch))
        .collect()
}

/// A finding before the allow lines are applied.
#[derive(Debug, Clone)]
struct Finding {
    rule: Rule,
    line: usize,
    message: String,
}

fn lint_one(
    migration: &Migration,
    dialect: Dialect,
    schema: &mut Schema,
    batch: &Batch,
) -> Vec<LintRecord> {
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
    match sql::split(dialect, &migration.text) {
        Ok(statements) => {
            let mut check = Check::new(migration, dialect, schema, batch);
            for statement in &statements {
                check.statement(statement);
            }
            findings.extend(check.finish());
        }
        Err(e) => findings.push(Finding {
            rule: Rule::ParseError,
            line: e.line,
            message: format!("cannot tokenize the SQL: {}", e.message),
        }),
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
