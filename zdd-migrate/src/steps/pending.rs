//! What a command finds before it runs anything: which migrations are
//! pending, which drifted, and what stops `up` / `contract` (drift, a
//! failure outside a transaction, a blocking lint finding).
//!
//! The lint is judged against the history here: the migrations `up` or
//! `contract` would run form the unapplied batch (see
//! [`crate::lint::Batch`]).

use std::collections::BTreeMap;

use zdd_core::cli::Progress;
use zdd_core::jsonl::RecordWriter;
use zdd_core::Result;

use crate::db::{HistoryRow, RowStatus};
use crate::lint::{self, Batch, LintRecord};
use crate::record::{kind, MigrationRecord, Status};
use crate::source::{Migration, Phase};
use crate::sql::Dialect;

/// Which migrations a run applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Pending expand and data migrations.
    Up,
    /// Pending contract migrations.
    Contract,
}

impl Step {
    fn takes(self, phase: Phase) -> bool {
        match self {
            Step::Up => phase != Phase::Contract,
            Step::Contract => phase == Phase::Contract,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Step::Up => "up",
            Step::Contract => "contract",
        }
    }
}

/// One version: its file, its history row, or both.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub file: Option<&'a Migration>,
    pub row: Option<&'a HistoryRow>,
}

impl Entry<'_> {
    pub(super) fn version(&self) -> i64 {
        self.file
            .map(|m| m.version)
            .or(self.row.map(|r| r.version))
            .unwrap_or_default()
    }
}

/// Files and history rows side by side, by version.
pub fn entries<'a>(migrations: &'a [Migration], rows: &'a [HistoryRow]) -> Vec<Entry<'a>> {
    let mut by_version: BTreeMap<i64, Entry<'a>> = migrations
        .iter()
        .map(|m| {
            (
                m.version,
                Entry {
                    file: Some(m),
                    row: None,
                },
            )
        })
        .collect();
    for row in rows {
        by_version
            .entry(row.version)
            .or_insert(Entry {
                file: None,
                row: None,
            })
            .row = Some(row);
    }
    by_version.into_values().collect()
}

/// The status of an entry and, for drift, why. `running_elsewhere`: the
/// lock is held by another runner, so a `running` row may be live.
pub fn classify(entry: &Entry, running_elsewhere: bool) -> (Status, Option<String>) {
    let Some(row) = entry.row else {
        return (Status::Pending, None);
    };
    match row.status {
        RowStatus::Applied => match entry.file {
            None => (
                Status::Drift,
                Some("applied, but its file is no longer in the migrations folder".into()),
            ),
            Some(file) if file.checksum != row.checksum => (
                Status::Drift,
                Some("the file changed after it was applied".into()),
            ),
            Some(_) => (Status::Applied, None),
        },
        RowStatus::Failed => (Status::Failed, None),
        RowStatus::Running if running_elsewhere => (Status::Running, None),
        RowStatus::Running => (
            Status::Drift,
            Some(
                "started outside a transaction and never finished (the runner was interrupted): check what it left in the database, then `zdd-migrate repair`"
                    .into(),
            ),
        ),
    }
}

/// What stops `up`/`contract` before anything runs, per entry.
pub(super) fn blocker(entry: &Entry, status: Status, drift: Option<&String>) -> Option<String> {
    let label = label(entry);
    match status {
        Status::Drift => Some(format!(
            "{label}: {}; fix the file or run `zdd-migrate repair`",
            drift.map(String::as_str).unwrap_or("drift")
        )),
        Status::Failed if entry.row.is_some_and(|r| !r.transactional) => Some(format!(
            "{label} failed outside a transaction and may be partly applied; check the database, then `zdd-migrate repair`"
        )),
        _ => None,
    }
}

pub(super) fn label(entry: &Entry) -> String {
    match (entry.file, entry.row) {
        (Some(m), _) => m.label(),
        (None, Some(r)) => format!("{:04}_{}", r.version, r.name),
        (None, None) => String::new(),
    }
}

/// Whether `up`/`contract` would run this entry: no row, or a row that
/// failed inside a transaction (nothing of it stayed, so it is retried).
pub(super) fn runnable(entry: &Entry, step: Step) -> bool {
    let Some(file) = entry.file else {
        return false;
    };
    step.takes(file.phase)
        && match entry.row {
            None => true,
            Some(row) => row.status == RowStatus::Failed && row.transactional,
        }
}

/// Why a migration is not run: lint findings, drift. Written as records,
/// then the command exits 1 having changed nothing.
pub struct Refusal {
    records: Vec<MigrationRecord>,
    lint: Vec<LintRecord>,
    reasons: Vec<String>,
}

impl Refusal {
    pub fn write(self, out: &mut RecordWriter<std::io::Stdout>, progress: &Progress) -> Result<()> {
        for record in &self.records {
            out.write(kind::MIGRATION, record)?;
        }
        for lint in &self.lint {
            out.write(kind::LINT, lint)?;
        }
        for reason in &self.reasons {
            progress.error(reason);
        }
        Ok(())
    }
}

/// The lint of every migration, judged against the history: the
/// migrations `up` or `contract` would run form the batch, so what an
/// earlier one of them creates is new to the later ones of its step.
pub(super) fn lint_pending(
    migrations: &[Migration],
    dialect: Dialect,
    entries: &[Entry],
) -> Vec<Vec<LintRecord>> {
    let pending = entries
        .iter()
        .filter(|e| runnable(e, Step::Up) || runnable(e, Step::Contract))
        .map(Entry::version);
    lint::lint(migrations, dialect, &Batch::pending(migrations, pending))
}

/// What `step` would run, or why it would refuse: the pending migrations
/// in order. `running_elsewhere`: another runner holds the lock.
pub(super) fn prepare<'e>(
    migrations: &[Migration],
    entries: &[Entry<'e>],
    step: Step,
    lint: &[Vec<LintRecord>],
    running_elsewhere: bool,
) -> std::result::Result<Vec<Entry<'e>>, Refusal> {
    let mut refusal = Refusal {
        records: Vec::new(),
        lint: Vec::new(),
        reasons: Vec::new(),
    };
    for entry in entries {
        let (status, drift) = classify(entry, running_elsewhere);
        if let Some(reason) = blocker(entry, status, drift.as_ref()) {
            let mut record = MigrationRecord::new(entry.file, entry.row, status);
            record.drift = drift;
            refusal.records.push(record);
            refusal.reasons.push(reason);
        }
    }
    let pending: Vec<Entry> = entries
        .iter()
        .filter(|e| runnable(e, step))
        .copied()
        .collect();
    if step == Step::Contract {
        let earlier: Vec<String> = entries
            .iter()
            .filter(|e| runnable(e, Step::Up))
            .map(label)
            .collect();
        if !earlier.is_empty() {
            refusal.reasons.push(format!(
                "expand/data migrations are still pending ({}); run `zdd-migrate up` first",
                earlier.join(", ")
            ));
        }
    }
    for entry in &pending {
        let file = entry.file.expect("pending entries have a file");
        let index = migrations
            .iter()
            .position(|m| m.version == file.version)
            .expect("the file is one of the migrations");
        let blocking: Vec<&LintRecord> = lint[index].iter().filter(|l| l.blocks()).collect();
        if !blocking.is_empty() {
            refusal.reasons.push(format!(
                "{}: the lint found {} problem(s) ({}); see the `lint` records",
                file.label(),
                blocking.len(),
                blocking
                    .iter()
                    .map(|l| format!("{} at line {}", l.rule, l.line))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            refusal.lint.extend(blocking.into_iter().cloned());
        }
    }
    if refusal.reasons.is_empty() {
        Ok(pending)
    } else {
        Err(refusal)
    }
}
