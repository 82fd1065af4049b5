//! The records zdd-migrate writes. The schema is documented in the
//! crate's README (and `docs/protocol.md`).

use serde::Serialize;

use crate::db::{HistoryRow, RowStatus};
use crate::source::{Migration, Phase};

/// Record types.
pub mod kind {
    pub const MIGRATION: &str = "migration";
    pub const LINT: &str = "lint";
    pub const STATUS: &str = "migration_status";
    pub const RUN: &str = "migration_run";
}

/// Where a migration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not applied (or failed inside a transaction, so `up` tries again).
    Pending,
    Applied,
    /// Failed; the `error` field says why.
    Failed,
    /// Running now, outside a transaction, by the runner holding the lock.
    Running,
    /// History and files disagree; the `drift` field says how.
    Drift,
}

/// `"type": "migration"`: one migration, as a command saw or left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationRecord {
    pub version: i64,
    pub name: String,
    pub phase: Phase,
    /// Whether it runs in a transaction.
    pub transaction: bool,
    pub status: Status,
    /// Why the status is `drift`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
    /// What this command did to it (or, for `plan`, would do).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    /// The migration file, when it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// `sha256:…` of the file (or, with no file, of what was applied).
    pub checksum: String,
    /// The checksum the history recorded, when it differs from the file's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_checksum: Option<String>,
    /// Whether a down file exists.
    pub down: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_by: Option<String>,
    /// The database's error, for `failed` (and what went wrong otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl MigrationRecord {
    /// A record from the file and the history row, whichever exist; the
    /// status is the caller's to decide.
    pub fn new(file: Option<&Migration>, row: Option<&HistoryRow>, status: Status) -> Self {
        let (version, name, phase, transaction, checksum) = match (file, row) {
            (Some(m), _) => (
                m.version,
                m.name.clone(),
                m.phase,
                m.transaction,
                m.checksum.clone(),
            ),
            (None, Some(r)) => (
                r.version,
                r.name.clone(),
                r.phase,
                r.transactional,
                r.checksum.clone(),
            ),
            (None, None) => unreachable!("a migration has a file or a history row"),
        };
        let applied_checksum = row
            .filter(|r| r.checksum != checksum)
            .map(|r| r.checksum.clone());
        MigrationRecord {
            version,
            name,
            phase,
            transaction,
            status,
            drift: None,
            action: None,
            file: file.map(Migration::file),
            checksum,
            applied_checksum,
            down: file.is_some_and(|m| m.down.is_some()),
            started_at: row.map(|r| r.started_at.clone()),
            finished_at: row.and_then(|r| r.finished_at.clone()),
            duration_ms: row.and_then(|r| r.duration_ms),
            applied_by: row.map(|r| r.applied_by.clone()),
            error: row
                .filter(|r| r.status != RowStatus::Applied)
                .and_then(|r| r.error.clone()),
        }
    }

    pub fn with_action(mut self, action: &'static str) -> Self {
        self.action = Some(action);
        self
    }

    /// `0007_add_email`, for messages.
    pub fn label(&self) -> String {
        format!("{:04}_{}", self.version, self.name)
    }
}

/// `"type": "migration_status"`: the summary `status` ends with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusRecord {
    /// The database, without its password.
    pub database: String,
    pub table: String,
    pub applied: usize,
    pub pending: usize,
    pub failed: usize,
    pub running: usize,
    pub drift: usize,
    /// Pending contract migrations (run by `contract`, not `up`).
    pub pending_contract: usize,
    /// Whether a runner holds the migration lock (`null`: cannot tell).
    pub locked: Option<bool>,
    /// Who holds it, when the engine can tell (PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_holder: Option<String>,
}

/// `"type": "migration_run"`: a migration command run in a one-off
/// container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    pub service: String,
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Full container id (empty when it could not be created).
    pub container: String,
    pub name: String,
    pub command: Vec<String>,
    pub networks: Vec<String>,
    /// `succeeded` or `failed`.
    pub status: &'static str,
    /// The command's exit code, when it ran to the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    pub duration_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the container was removed afterwards (`--keep` keeps it).
    pub removed: bool,
}
