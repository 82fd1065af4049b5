//! The database commands, engine-agnostic: what is pending, what drifted,
//! what runs, and what gets recorded.
//!
//! Every command that changes something takes the lock first and reads
//! the history only then, so a runner that waited for another finds the
//! other's work already recorded and does nothing twice. A migration is
//! recorded in its own transaction (see [`crate::db`]); one that runs
//! outside a transaction leaves a `running` row while it runs, so a crash
//! in the middle shows up as drift instead of passing for applied or
//! pending.
//!
//! `up` and `contract` refuse before running anything when the history
//! and the folder disagree (drift: a file changed or vanished after it was
//! applied, or a `running` row nobody is running), when a migration failed
//! outside a transaction (it may be half applied), or when the lint finds
//! a blocking problem in a migration about to run. `repair` is the way out
//! of the first two, after a person has looked. That part (what is pending,
//! what refuses, the lint judged against the history) is `pending.rs`.

mod pending;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use zdd_core::cli::{Outcome, Progress};
use zdd_core::jsonl::RecordWriter;
use zdd_core::{Error, Result};

use crate::clock;
use crate::db::{After, Engine, HistoryRow, LockState, RowStatus};
use crate::record::{kind, MigrationRecord, Status, StatusRecord};
use crate::source::{Migration, Phase};
use crate::sql::{self, Dialect};

pub use pending::{classify, entries, Entry, Step};
use pending::{label, lint_pending, prepare, runnable};

/// The database side of a command.
pub struct Runner<'a> {
    pub engine: &'a mut dyn Engine,
    pub migrations: &'a [Migration],
    pub dialect: Dialect,
    pub progress: Progress,
    pub lock_wait: Duration,
    /// `user@host`, recorded as `applied_by`.
    pub runner: String,
}

/// Runs `work` holding the lock, and releases it whatever happens.
fn locked<T>(
    engine: &mut dyn Engine,
    wait: Duration,
    progress: &Progress,
    work: impl FnOnce(&mut dyn Engine) -> Result<T>,
) -> Result<T> {
    engine.lock(wait, progress)?;
    let result = work(engine);
    let unlocked = engine.unlock();
    let value = result?;
    unlocked?;
    Ok(value)
}

impl Runner<'_> {
    /// `plan`: what `step` would run, without the lock and without
    /// changing anything.
    pub fn plan(&mut self, step: Step) -> Result<Outcome> {
        let rows = self.engine.history()?;
        let running_elsewhere = matches!(self.engine.lock_state()?, LockState::Held { .. });
        let entries = entries(self.migrations, &rows);
        let lint = lint_pending(self.migrations, self.dialect, &entries);
        let mut out = RecordWriter::stdout();
        match prepare(self.migrations, &entries, step, &lint, running_elsewhere) {
            Err(refusal) => {
                refusal.write(&mut out, &self.progress)?;
                Ok(Outcome::StepFailed)
            }
            Ok(pending) => {
                for entry in &pending {
                    let record = MigrationRecord::new(entry.file, entry.row, Status::Pending)
                        .with_action("apply");
                    out.write(kind::MIGRATION, &record)?;
                }
                self.progress.info(format_args!(
                    "`{}` would apply {} migration(s)",
                    step.name(),
                    pending.len()
                ));
                Ok(Outcome::Success)
            }
        }
    }

    /// `up` / `contract`: applies the pending migrations of `step`, in
    /// order, stopping at the first failure.
    pub fn apply(&mut self, step: Step) -> Result<Outcome> {
        let migrations = self.migrations;
        let dialect = self.dialect;
        let progress = self.progress;
        let runner = self.runner.clone();
        let mut out = RecordWriter::stdout();
        let wait = self.lock_wait;
        locked(self.engine, wait, &progress, |engine| {
            engine.ensure_history()?;
            let rows = engine.history()?;
            let entries = entries(migrations, &rows);
            let lint = lint_pending(migrations, dialect, &entries);
            // Holding the lock: a `running` row is nobody's.
            let pending: Vec<i64> = match prepare(migrations, &entries, step, &lint, false) {
                Ok(pending) => pending.iter().map(Entry::version).collect(),
                Err(refusal) => {
                    refusal.write(&mut out, &progress)?;
                    progress.error("nothing was run");
                    return Ok(Outcome::StepFailed);
                }
            };
            let contract_pending = entries
                .iter()
                .filter(|e| runnable(e, Step::Contract))
                .count();
            let waiting = (step == Step::Up && contract_pending > 0).then(|| {
                format!("{contract_pending} contract migration(s) wait for `zdd-migrate contract`")
            });
            if pending.is_empty() {
                let applied = rows
                    .iter()
                    .filter(|r| r.status == RowStatus::Applied)
                    .count();
                match &waiting {
                    Some(waiting) => {
                        progress.info(format_args!("nothing to do ({applied} applied; {waiting})"))
                    }
                    None => progress.info(format_args!("nothing to do ({applied} applied)")),
                }
                return Ok(Outcome::Success);
            }
            for version in pending {
                let migration = migrations
                    .iter()
                    .find(|m| m.version == version)
                    .expect("pending versions come from the files");
                let previous = rows.iter().find(|r| r.version == version);
                let (record, ok) =
                    apply_one(engine, migration, previous, dialect, &runner, &progress)?;
                out.write(kind::MIGRATION, &record)?;
                if !ok {
                    progress.error(format_args!(
                        "stopped at {}; later migrations were not run",
                        migration.label()
                    ));
                    return Ok(Outcome::StepFailed);
                }
            }
            if let Some(waiting) = waiting {
                progress.info(waiting);
            }
            Ok(Outcome::Success)
        })
    }

    /// `status`: every migration, then a summary. Exit 1 when something
    /// failed or drifted.
    pub fn status(&mut self, database: String, table: String) -> Result<Outcome> {
        let started = Instant::now();
        let rows = self.engine.history()?;
        let lock = self.engine.lock_state()?;
        let running_elsewhere = matches!(lock, LockState::Held { .. });
        let entries = entries(self.migrations, &rows);
        let mut summary = StatusRecord {
            database,
            table,
            applied: 0,
            pending: 0,
            failed: 0,
            running: 0,
            drift: 0,
            pending_contract: 0,
            locked: match &lock {
                LockState::Free => Some(false),
                LockState::Held { .. } => Some(true),
                LockState::Unknown => None,
            },
            lock_holder: match lock {
                LockState::Held { holder } => holder,
                _ => None,
            },
        };
        let mut out = RecordWriter::stdout();
        for entry in &entries {
            let (status, drift) = classify(entry, running_elsewhere);
            match status {
                Status::Applied => summary.applied += 1,
                Status::Pending | Status::Failed => {
                    if status == Status::Failed {
                        summary.failed += 1;
                    } else {
                        summary.pending += 1;
                    }
                    if entry.file.is_some_and(|m| m.phase == Phase::Contract) {
                        summary.pending_contract += 1;
                    }
                }
                Status::Running => summary.running += 1,
                Status::Drift => summary.drift += 1,
            }
            let mut record = MigrationRecord::new(entry.file, entry.row, status);
            record.drift = drift;
            out.write(kind::MIGRATION, &record)?;
        }
        out.write(kind::STATUS, &summary)?;
        self.progress.info(format_args!(
            "{} applied, {} pending ({} contract), {} failed, {} running, {} drift; lock {} ({} ms)",
            summary.applied,
            summary.pending,
            summary.pending_contract,
            summary.failed,
            summary.running,
            summary.drift,
            match (summary.locked, &summary.lock_holder) {
                (Some(true), Some(holder)) => format!("held by {holder}"),
                (Some(true), None) => "held".into(),
                (Some(false), _) => "free".into(),
                (None, _) => "unknown".into(),
            },
            started.elapsed().as_millis()
        ));
        Ok(Outcome::from_success(
            summary.failed == 0 && summary.drift == 0,
        ))
    }

    /// `down`: takes the most recently applied migration back, if it is an
    /// expand migration with a down file (and is `version`, when given).
    pub fn down(&mut self, version: Option<i64>) -> Result<Outcome> {
        let migrations = self.migrations;
        let dialect = self.dialect;
        let progress = self.progress;
        let wait = self.lock_wait;
        let runner = self.runner.clone();
        locked(self.engine, wait, &progress, |engine| {
            let rows = engine.history()?;
            let Some(latest) = rows
                .iter()
                .filter(|r| r.status == RowStatus::Applied)
                .max_by(|a, b| {
                    a.finished_at
                        .cmp(&b.finished_at)
                        .then(a.version.cmp(&b.version))
                })
            else {
                return Err(Error::Failed("no applied migration to take back".into()));
            };
            let file = migrations.iter().find(|m| m.version == latest.version);
            let name = format!("{:04}_{}", latest.version, latest.name);
            if let Some(wanted) = version {
                if wanted != latest.version {
                    return Err(Error::Failed(format!(
                        "the most recently applied migration is {name}, not {wanted}; `down` only takes back the latest one"
                    )));
                }
            }
            let Some(file) = file else {
                return Err(Error::Failed(format!(
                    "{name}: its file is not in the migrations folder"
                )));
            };
            if file.checksum != latest.checksum {
                return Err(Error::Failed(format!(
                    "{name}: the file changed after it was applied; refusing to take it back"
                )));
            }
            if latest.phase != Phase::Expand {
                return Err(Error::Failed(format!(
                    "{name} is a {} migration; only expand migrations can be taken back",
                    latest.phase
                )));
            }
            let Some(down) = &file.down else {
                return Err(Error::Failed(format!(
                    "{name} has no down file ({}.down.sql)",
                    file.label()
                )));
            };
            progress.info(format_args!(
                "taking back {name} with {}",
                down.path.display()
            ));
            let started = Instant::now();
            let result = if down.transaction {
                engine
                    .run_in_transaction(&down.text, After::Delete(latest.version))
                    .map_err(|e| located(&down.path.display().to_string(), 0, e))
            } else {
                let statements = statements_of(dialect, &down.text);
                let texts: Vec<&str> = statements.iter().map(|(_, t)| *t).collect();
                match engine.run_statements(&texts) {
                    Ok(()) => {
                        engine.delete(latest.version)?;
                        Ok(())
                    }
                    Err((index, e)) => {
                        let line = statements.get(index).map_or(1, |(l, _)| *l);
                        let message = located(&down.path.display().to_string(), line - 1, e);
                        let mut row = latest.clone();
                        row.status = RowStatus::Failed;
                        row.transactional = false;
                        row.applied_by = runner.clone();
                        row.error = Some(format!("down: {message}"));
                        engine.record(&row)?;
                        Err(message)
                    }
                }
            };
            let mut record = MigrationRecord::new(Some(file), None, Status::Pending);
            record.duration_ms = Some(started.elapsed().as_millis() as i64);
            match result {
                Ok(()) => {
                    progress.info(format_args!("took back {name}"));
                    out_write(&record.with_action("reverted"))?;
                    Ok(Outcome::Success)
                }
                Err(message) => {
                    progress.error(format_args!("taking back {name} failed: {message}"));
                    record.status = if down.transaction {
                        Status::Applied
                    } else {
                        Status::Failed
                    };
                    record.error = Some(message);
                    out_write(&record.with_action("revert-failed"))?;
                    Ok(Outcome::StepFailed)
                }
            }
        })
    }

    /// `repair`: clears what stops `up` after a person has looked: failed
    /// and interrupted rows are removed (they run again) or, with
    /// `mark_applied`, marked applied; changed files' checksums are
    /// accepted. Rows whose file is gone are removed only when named.
    pub fn repair(&mut self, version: Option<i64>, mark_applied: bool) -> Result<Outcome> {
        let migrations = self.migrations;
        let progress = self.progress;
        let wait = self.lock_wait;
        let runner = self.runner.clone();
        locked(self.engine, wait, &progress, |engine| {
            let rows = engine.history()?;
            if let Some(v) = version {
                if !rows.iter().any(|r| r.version == v) {
                    return Err(Error::Failed(format!(
                        "migration {v} has no history row; nothing to repair"
                    )));
                }
            }
            let mut out = RecordWriter::stdout();
            let mut changed = 0;
            for entry in entries(migrations, &rows) {
                let Some(row) = entry.row else { continue };
                if version.is_some_and(|v| v != row.version) {
                    continue;
                }
                let (status, _) = classify(&entry, false);
                let action = match (row.status, entry.file) {
                    (RowStatus::Failed | RowStatus::Running, Some(file)) if mark_applied => {
                        let mut fixed = row.clone();
                        fixed.status = RowStatus::Applied;
                        fixed.checksum = file.checksum.clone();
                        fixed.finished_at = Some(clock::now());
                        fixed.applied_by = runner.clone();
                        fixed.error = None;
                        engine.record(&fixed)?;
                        "marked-applied"
                    }
                    (RowStatus::Failed | RowStatus::Running, _) => {
                        engine.delete(row.version)?;
                        "removed"
                    }
                    (RowStatus::Applied, Some(file)) if status == Status::Drift => {
                        engine.update_checksum(row.version, &file.checksum)?;
                        "checksum-updated"
                    }
                    (RowStatus::Applied, None) if version.is_some() => {
                        engine.delete(row.version)?;
                        "removed"
                    }
                    (RowStatus::Applied, None) => {
                        progress.warn(format_args!(
                            "{}: applied, but its file is gone; `repair --version {}` forgets it",
                            label(&entry),
                            row.version
                        ));
                        continue;
                    }
                    (RowStatus::Applied, Some(_)) => continue,
                };
                changed += 1;
                let new_status = match action {
                    "removed" if entry.file.is_some() => Status::Pending,
                    "removed" => Status::Drift,
                    _ => Status::Applied,
                };
                let mut record = MigrationRecord::new(entry.file, Some(row), new_status);
                if action == "checksum-updated" || action == "marked-applied" {
                    record.applied_checksum = None;
                    record.error = None;
                }
                if new_status == Status::Drift {
                    record.drift = Some("forgotten: its history row was removed".into());
                }
                progress.info(format_args!("{}: {action}", label(&entry)));
                out.write(kind::MIGRATION, &record.with_action(action))?;
            }
            if changed == 0 {
                progress.info("nothing to repair");
            }
            Ok(Outcome::Success)
        })
    }
}

fn out_write(record: &MigrationRecord) -> Result<()> {
    RecordWriter::stdout().write(kind::MIGRATION, record)
}

/// Runs one migration and records it; returns its record and whether it
/// succeeded. An `Err` is a failure to record, not of the migration.
fn apply_one(
    engine: &mut dyn Engine,
    migration: &Migration,
    previous: Option<&HistoryRow>,
    dialect: Dialect,
    runner: &str,
    progress: &Progress,
) -> Result<(MigrationRecord, bool)> {
    let label = migration.label();
    if previous.is_some() {
        progress.info(format_args!(
            "{label} failed before inside a transaction; running it again"
        ));
    }
    progress.info(format_args!(
        "applying {label} ({}{})",
        migration.phase,
        if migration.transaction {
            ""
        } else {
            ", outside a transaction"
        }
    ));
    let clock = Instant::now();
    let base = HistoryRow {
        version: migration.version,
        name: migration.name.clone(),
        phase: migration.phase,
        transactional: migration.transaction,
        checksum: migration.checksum.clone(),
        status: RowStatus::Applied,
        started_at: clock::now(),
        finished_at: None,
        duration_ms: None,
        applied_by: runner.to_owned(),
        error: None,
    };
    let finished = |status: RowStatus, error: Option<String>| HistoryRow {
        status,
        finished_at: Some(clock::now()),
        duration_ms: Some(clock.elapsed().as_millis() as i64),
        error,
        ..base.clone()
    };
    let file = migration.file();
    let result: std::result::Result<HistoryRow, String> = if migration.transaction {
        let made = RefCell::new(None);
        let make = || {
            let row = finished(RowStatus::Applied, None);
            *made.borrow_mut() = Some(row.clone());
            row
        };
        match engine.run_in_transaction(&migration.text, After::Record(&make)) {
            Ok(()) => Ok(made
                .into_inner()
                .unwrap_or_else(|| finished(RowStatus::Applied, None))),
            Err(e) => Err(located(&file, 0, e)),
        }
    } else {
        engine.record(&HistoryRow {
            status: RowStatus::Running,
            ..base.clone()
        })?;
        let statements = statements_of(dialect, &migration.text);
        let texts: Vec<&str> = statements.iter().map(|(_, t)| *t).collect();
        match engine.run_statements(&texts) {
            Ok(()) => {
                let row = finished(RowStatus::Applied, None);
                engine.record(&row)?;
                Ok(row)
            }
            Err((index, e)) => {
                let line = statements.get(index).map_or(1, |(l, _)| *l);
                Err(located(&file, line - 1, e))
            }
        }
    };
    match result {
        Ok(row) => {
            progress.info(format_args!(
                "applied {label} in {} ms",
                row.duration_ms.unwrap_or_default()
            ));
            let record = MigrationRecord::new(Some(migration), Some(&row), Status::Applied);
            Ok((record, true))
        }
        Err(message) => {
            let row = finished(RowStatus::Failed, Some(message.clone()));
            engine.record(&row)?;
            progress.error(format_args!("{label} failed: {message}"));
            if !migration.transaction {
                progress.error(format_args!(
                    "{label} ran outside a transaction: what ran before the error stays; check the database, then `zdd-migrate repair`"
                ));
            }
            let record = MigrationRecord::new(Some(migration), Some(&row), Status::Failed);
            Ok((record, false))
        }
    }
}

/// The statements of a `transaction=off` migration with their first
/// lines. Text the tokenizer cannot split goes to the server whole (the
/// lint has already said so, and was overruled by an allow line).
fn statements_of(dialect: Dialect, text: &str) -> Vec<(usize, &str)> {
    match sql::split(dialect, text) {
        Ok(statements) => statements.into_iter().map(|s| (s.line, s.text)).collect(),
        Err(_) => vec![(1, text)],
    }
}

/// `file line N: message`, with the line of the error in the file
/// (`offset`: lines before the text that was sent).
fn located(file: &str, offset: usize, error: crate::db::SqlError) -> String {
    match error.line {
        Some(line) => format!("{file} line {}: {}", line + offset, error.message),
        None if offset > 0 => format!("{file} line {}: {}", offset + 1, error.message),
        None => format!("{file}: {}", error.message),
    }
}
