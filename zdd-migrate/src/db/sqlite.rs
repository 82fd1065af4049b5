//! SQLite: the database's write lock is the migration lock.
//!
//! A run takes `BEGIN IMMEDIATE` (with a busy timeout of `--lock-wait`)
//! before it reads the history and keeps that transaction until it is
//! done, so a second runner waits and then reads a history that already
//! has everything in it. Each migration is a savepoint inside the run's
//! transaction: its SQL and its history row are released together, or
//! rolled back together. SQLite's DDL is transactional, so a failed
//! migration leaves nothing behind.
//!
//! A `transaction=off` migration (for statements SQLite refuses inside a
//! transaction, such as `VACUUM`) commits the run so far, runs outside
//! any transaction, and takes the lock again. Its `running` row is
//! committed first, so a crash in between is visible as drift.
//!
//! SQLite cannot say who holds its lock: `status` reports only that it is
//! held.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags};
use zdd_core::cli::Progress;
use zdd_core::{Error, Result};

use super::{After, Engine, HistoryRow, LockState, Mode, Options, RowStatus, SqlError};

pub struct Sqlite {
    conn: Connection,
    path: PathBuf,
    table: String,
    /// The lock wait of the current run, to take the lock again after a
    /// `transaction=off` migration.
    wait: Duration,
    locked: bool,
}

const SAVEPOINT: &str = "zdd_migration";

impl Sqlite {
    pub fn open(path: &Path, mode: Mode, options: &Options) -> Result<Option<Self>> {
        let conn = match mode {
            Mode::ReadOnly => {
                if !path.exists() {
                    return Ok(None);
                }
                // Read-write without create, so `status` can probe the lock;
                // a file we may not write is still readable.
                Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE).or_else(|_| {
                    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                })
            }
            Mode::ReadWrite => Connection::open(path),
        }
        .map_err(|e| {
            Error::Failed(format!(
                "cannot open the SQLite database {}: {}",
                path.display(),
                describe(&e)
            ))
        })?;
        Ok(Some(Sqlite {
            conn,
            path: path.to_owned(),
            table: options.table.clone(),
            wait: Duration::ZERO,
            locked: false,
        }))
    }

    fn failed(&self, action: &str, error: &rusqlite::Error) -> Error {
        Error::Failed(format!(
            "{action} ({}): {}",
            self.path.display(),
            describe(error)
        ))
    }

    /// `BEGIN IMMEDIATE`, waiting up to `wait`; `Ok(false)` when busy.
    fn begin_immediate(&mut self, wait: Duration) -> Result<bool> {
        self.conn
            .busy_timeout(wait)
            .map_err(|e| self.failed("setting the busy timeout", &e))?;
        match self.conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => Ok(true),
            Err(e) if is_busy(&e) => Ok(false),
            Err(e) => Err(self.failed("taking the write lock", &e)),
        }
    }

    fn upsert(conn: &Connection, table: &str, row: &HistoryRow) -> rusqlite::Result<()> {
        conn.execute(
            &format!(
                "INSERT INTO {table} (version, name, phase, transactional, checksum, status, started_at, finished_at, duration_ms, applied_by, error) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                 ON CONFLICT (version) DO UPDATE SET name = excluded.name, phase = excluded.phase, \
                   transactional = excluded.transactional, checksum = excluded.checksum, status = excluded.status, \
                   started_at = excluded.started_at, finished_at = excluded.finished_at, \
                   duration_ms = excluded.duration_ms, applied_by = excluded.applied_by, error = excluded.error"
            ),
            params![
                row.version,
                row.name,
                row.phase.as_str(),
                row.transactional,
                row.checksum,
                row.status.as_str(),
                row.started_at,
                row.finished_at,
                row.duration_ms,
                row.applied_by,
                row.error,
            ],
        )
        .map(drop)
    }

    fn history_exists(&self) -> Result<bool> {
        let name = self.table.rsplit('.').next().unwrap_or(&self.table);
        self.conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [name],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| self.failed("looking for the history table", &e))
    }
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// The message alone (rusqlite's `Display` of a syntax error repeats the
/// whole SQL).
fn describe(error: &rusqlite::Error) -> String {
    match error {
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        other => other.to_string(),
    }
}

/// The error with the line in `sql` it points at, when SQLite says.
fn sql_error(error: &rusqlite::Error, sql: &str) -> SqlError {
    let line = match error {
        rusqlite::Error::SqlInputError {
            sql: rest, offset, ..
        } if *offset >= 0 && sql.ends_with(rest.as_str()) => {
            let at = sql.len() - rest.len() + *offset as usize;
            sql.get(..at).map(|before| before.matches('\n').count() + 1)
        }
        _ => None,
    };
    SqlError {
        message: describe(error),
        line,
    }
}

impl Engine for Sqlite {
    fn lock(&mut self, wait: Duration, progress: &Progress) -> Result<()> {
        self.wait = wait;
        if !self.begin_immediate(Duration::ZERO)? {
            progress.info(format_args!(
                "waiting up to {:.0}s for the migration lock: another connection holds the write lock of {}",
                wait.as_secs_f64(),
                self.path.display()
            ));
            if !self.begin_immediate(wait)? {
                return Err(Error::Failed(format!(
                    "the write lock of {} is still held after {:.1}s (--lock-wait)",
                    self.path.display(),
                    wait.as_secs_f64()
                )));
            }
        }
        self.locked = true;
        Ok(())
    }

    fn unlock(&mut self) -> Result<()> {
        if self.locked {
            self.locked = false;
            self.conn
                .execute_batch("COMMIT")
                .map_err(|e| self.failed("committing the run", &e))?;
        }
        Ok(())
    }

    fn lock_state(&mut self) -> Result<LockState> {
        if self.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
            return Ok(LockState::Unknown);
        }
        if self.begin_immediate(Duration::ZERO)? {
            self.conn
                .execute_batch("ROLLBACK")
                .map_err(|e| self.failed("releasing the lock probe", &e))?;
            Ok(LockState::Free)
        } else {
            Ok(LockState::Held { holder: None })
        }
    }

    fn ensure_history(&mut self) -> Result<()> {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} (
                version INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                phase TEXT NOT NULL,
                transactional INTEGER NOT NULL,
                checksum TEXT NOT NULL,
                status TEXT NOT NULL,
                started_at TEXT NOT NULL,
                finished_at TEXT,
                duration_ms INTEGER,
                applied_by TEXT NOT NULL,
                error TEXT
            )",
            self.table
        );
        self.conn
            .execute_batch(&sql)
            .map_err(|e| self.failed("creating the history table", &e))
    }

    fn history(&mut self) -> Result<Vec<HistoryRow>> {
        if !self.history_exists()? {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT version, name, phase, transactional, checksum, status, started_at, finished_at, duration_ms, applied_by, error \
             FROM {} ORDER BY version",
            self.table
        );
        let read = || -> rusqlite::Result<Vec<(HistoryRow, String, String)>> {
            let mut statement = self.conn.prepare(&sql)?;
            let rows = statement.query_map([], |row| {
                let phase: String = row.get(2)?;
                let status: String = row.get(5)?;
                Ok((
                    HistoryRow {
                        version: row.get(0)?,
                        name: row.get(1)?,
                        phase: crate::source::Phase::Expand,
                        transactional: row.get(3)?,
                        checksum: row.get(4)?,
                        status: RowStatus::Applied,
                        started_at: row.get(6)?,
                        finished_at: row.get(7)?,
                        duration_ms: row.get(8)?,
                        applied_by: row.get(9)?,
                        error: row.get(10)?,
                    },
                    phase,
                    status,
                ))
            })?;
            rows.collect()
        };
        let rows = read().map_err(|e| self.failed("reading the history table", &e))?;
        rows.into_iter()
            .map(|(mut row, phase, status)| {
                row.phase = super::phase_from_db(&phase)?;
                row.status = RowStatus::parse(&status)?;
                Ok(row)
            })
            .collect()
    }

    fn record(&mut self, row: &HistoryRow) -> Result<()> {
        Self::upsert(&self.conn, &self.table, row)
            .map_err(|e| self.failed(&format!("recording migration {}", row.version), &e))
    }

    fn delete(&mut self, version: i64) -> Result<()> {
        self.conn
            .execute(
                &format!("DELETE FROM {} WHERE version = ?1", self.table),
                [version],
            )
            .map(drop)
            .map_err(|e| self.failed(&format!("deleting the history of {version}"), &e))
    }

    fn update_checksum(&mut self, version: i64, checksum: &str) -> Result<()> {
        self.conn
            .execute(
                &format!("UPDATE {} SET checksum = ?2 WHERE version = ?1", self.table),
                params![version, checksum],
            )
            .map(drop)
            .map_err(|e| self.failed(&format!("updating the checksum of {version}"), &e))
    }

    fn run_in_transaction(&mut self, sql: &str, after: After) -> std::result::Result<(), SqlError> {
        let plain = |e: rusqlite::Error| SqlError {
            message: describe(&e),
            line: None,
        };
        self.conn
            .execute_batch(&format!("SAVEPOINT {SAVEPOINT}"))
            .map_err(plain)?;
        let result = self
            .conn
            .execute_batch(sql)
            .map_err(|e| sql_error(&e, sql))
            .and_then(|()| match after {
                After::Record(make_row) => {
                    Self::upsert(&self.conn, &self.table, &make_row()).map_err(plain)
                }
                After::Delete(version) => self
                    .conn
                    .execute(
                        &format!("DELETE FROM {} WHERE version = ?1", self.table),
                        [version],
                    )
                    .map(drop)
                    .map_err(plain),
            });
        match result {
            Ok(()) => self
                .conn
                .execute_batch(&format!("RELEASE {SAVEPOINT}"))
                .map_err(plain),
            Err(e) => {
                // Undo everything the migration did, keep the run's lock.
                let _ = self
                    .conn
                    .execute_batch(&format!("ROLLBACK TO {SAVEPOINT}; RELEASE {SAVEPOINT}"));
                Err(e)
            }
        }
    }

    fn run_statements(
        &mut self,
        statements: &[&str],
    ) -> std::result::Result<(), (usize, SqlError)> {
        let relock_error = |message: String| {
            (
                statements.len(),
                SqlError {
                    message,
                    line: None,
                },
            )
        };
        if self.locked {
            self.conn
                .execute_batch("COMMIT")
                .map_err(|e| relock_error(describe(&e)))?;
        }
        let mut result = Ok(());
        for (index, statement) in statements.iter().enumerate() {
            if let Err(e) = self.conn.execute_batch(statement) {
                result = Err((index, sql_error(&e, statement)));
                break;
            }
        }
        if self.locked {
            match self.begin_immediate(self.wait) {
                Ok(true) => {}
                Ok(false) => {
                    self.locked = false;
                    return Err(relock_error(
                        "could not take the write lock again after the statements ran".into(),
                    ));
                }
                Err(e) => {
                    self.locked = false;
                    return Err(relock_error(e.to_string()));
                }
            }
        }
        result
    }
}
