//! The two engines behind one small interface.
//!
//! PostgreSQL is the production engine, SQLite the embedded default (a
//! path is enough to try zdd-migrate). They differ in exactly the places
//! the interface hides:
//!
//! - **the lock**: PostgreSQL's is an advisory lock held by a dedicated
//!   session, polled with `pg_try_advisory_lock` so no one ever waits
//!   inside a transaction (a waiting `ALTER` would queue the application's
//!   queries behind it). SQLite's is the database's own write lock, taken
//!   with `BEGIN IMMEDIATE` and a busy timeout, and held for the whole run;
//!   each migration is a savepoint inside it.
//! - **a migration's transaction**: the migration's SQL and its history row
//!   commit together or not at all.
//! - **statements outside a transaction** (`transaction=off`): sent one at
//!   a time. SQLite commits the run's transaction first and takes the lock
//!   again afterwards.
//!
//! The history table is created on first use, under the lock.

pub mod postgres;
pub mod sqlite;

use std::path::PathBuf;
use std::time::Duration;

use zdd_core::cli::Progress;
use zdd_core::{Error, Result};

use crate::source::Phase;
use crate::sql::Dialect;

/// Where the migrations go, from `--database` / `DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A libpq-style URL (`postgres://…` or `postgresql://…`).
    Postgres(String),
    /// A database file.
    Sqlite(PathBuf),
}

impl Target {
    /// `postgres://…`, `postgresql://…`, `sqlite:PATH`, `sqlite://PATH`, or
    /// a plain path (SQLite).
    pub fn parse(url: &str) -> Result<Target> {
        let url = url.trim();
        if url.is_empty() {
            return Err(Error::Usage(
                "no database: pass --database URL or set DATABASE_URL".into(),
            ));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target::Postgres(url.to_owned()));
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(Error::Usage(format!("`{url}` names no database file")));
            }
            return Ok(Target::Sqlite(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(Error::Usage(format!(
                "unsupported database `{scheme}://…`: use postgres://…, sqlite:PATH or a file path"
            )));
        }
        Ok(Target::Sqlite(PathBuf::from(url)))
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Target::Postgres(_) => Dialect::Postgres,
            Target::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// For messages: the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Target::Postgres(url) => redact(url),
            Target::Sqlite(path) => format!("sqlite:{}", path.display()),
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`; a
/// `password=` query parameter is hidden too.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some(("password", _)) => "password=***".to_owned(),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// The history table's name: an identifier, optionally schema-qualified.
/// It is spliced into SQL, so nothing else is accepted.
pub fn check_table_name(name: &str) -> Result<()> {
    let part_ok = |part: &str| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() <= 2 && parts.iter().all(|p| part_ok(p)) {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "`{name}` is not a table name (letters, digits and _, optionally schema.table)"
        )))
    }
}

/// The state a history row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowStatus {
    /// Started outside a transaction and not finished (or still running).
    Running,
    Applied,
    Failed,
}

impl RowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RowStatus::Running => "running",
            RowStatus::Applied => "applied",
            RowStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Result<RowStatus> {
        match text {
            "running" => Ok(RowStatus::Running),
            "applied" => Ok(RowStatus::Applied),
            "failed" => Ok(RowStatus::Failed),
            other => Err(Error::Failed(format!(
                "the history table holds an unknown status `{other}`"
            ))),
        }
    }
}

/// One row of the history table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub version: i64,
    pub name: String,
    pub phase: Phase,
    pub transactional: bool,
    pub checksum: String,
    pub status: RowStatus,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    /// `user@host` of the runner.
    pub applied_by: String,
    pub error: Option<String>,
}

/// Parses a phase read back from the history table.
fn phase_from_db(text: &str) -> Result<Phase> {
    Phase::parse(text)
        .ok_or_else(|| Error::Failed(format!("the history table holds an unknown phase `{text}`")))
}

/// A statement the database refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    /// The database's message (PostgreSQL: severity, message, SQLSTATE,
    /// detail, hint).
    pub message: String,
    /// 1-based line in the SQL text that was sent, when the database said.
    pub line: Option<usize>,
}

/// Who holds the migration lock, as far as the engine can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    Free,
    Held {
        holder: Option<String>,
    },
    /// The engine could not tell (e.g. a read-only SQLite file).
    Unknown,
}

/// What to do in a migration's transaction after its SQL ran.
pub enum After<'a> {
    /// Record the row the closure makes (it is called after the SQL ran,
    /// so it can carry the finish time).
    Record(&'a dyn Fn() -> HistoryRow),
    /// Delete the history row of this version (a down migration).
    Delete(i64),
}

/// An open database, as the steps use it.
pub trait Engine {
    /// Takes the migration lock, waiting up to `wait` (saying so on
    /// `progress` when it has to wait).
    fn lock(&mut self, wait: Duration, progress: &Progress) -> Result<()>;
    /// Releases the lock (SQLite: commits the run).
    fn unlock(&mut self) -> Result<()>;
    /// Whether someone holds the lock now, without taking it.
    fn lock_state(&mut self) -> Result<LockState>;
    /// Creates the history table if it is missing.
    fn ensure_history(&mut self) -> Result<()>;
    /// Every history row, by version; empty when the table does not exist.
    fn history(&mut self) -> Result<Vec<HistoryRow>>;
    /// Inserts or replaces the row of `row.version`.
    fn record(&mut self, row: &HistoryRow) -> Result<()>;
    /// Deletes the row of `version`.
    fn delete(&mut self, version: i64) -> Result<()>;
    /// Sets the checksum of `version`'s row.
    fn update_checksum(&mut self, version: i64, checksum: &str) -> Result<()>;
    /// Runs `sql` and then `after` in one transaction; on any error
    /// nothing of it stays.
    fn run_in_transaction(&mut self, sql: &str, after: After) -> std::result::Result<(), SqlError>;
    /// Runs each statement on its own, outside any transaction; stops at
    /// the first error and says which statement it was.
    fn run_statements(&mut self, statements: &[&str])
        -> std::result::Result<(), (usize, SqlError)>;
}

/// How a command uses the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `status`, `plan`: never creates or changes anything.
    ReadOnly,
    /// Everything else.
    ReadWrite,
}

/// Options for opening an engine.
#[derive(Debug, Clone)]
pub struct Options {
    pub table: String,
    /// PostgreSQL `lock_timeout` for every migration statement (zero: none).
    pub lock_timeout: Duration,
    /// `user@host`, for the lock holder's name.
    pub runner: String,
}

/// Opens the database. In read-only mode a SQLite file that does not
/// exist yet is an empty database (nothing applied, nothing locked), and
/// is not created.
pub fn open(target: &Target, mode: Mode, options: &Options) -> Result<Box<dyn Engine>> {
    check_table_name(&options.table)?;
    Ok(match target {
        Target::Postgres(url) => Box::new(postgres::Postgres::connect(url, mode, options)?),
        Target::Sqlite(path) => match sqlite::Sqlite::open(path, mode, options)? {
            Some(engine) => Box::new(engine),
            None => Box::new(Empty),
        },
    })
}

/// A database that does not exist yet, for the read-only commands.
struct Empty;

impl Engine for Empty {
    fn lock(&mut self, _: Duration, _: &Progress) -> Result<()> {
        Err(Error::Failed("the database does not exist".into()))
    }
    fn unlock(&mut self) -> Result<()> {
        Ok(())
    }
    fn lock_state(&mut self) -> Result<LockState> {
        Ok(LockState::Free)
    }
    fn ensure_history(&mut self) -> Result<()> {
        Err(Error::Failed("the database does not exist".into()))
    }
    fn history(&mut self) -> Result<Vec<HistoryRow>> {
        Ok(Vec::new())
    }
    fn record(&mut self, _: &HistoryRow) -> Result<()> {
        Err(Error::Failed("the database does not exist".into()))
    }
    fn delete(&mut self, _: i64) -> Result<()> {
        Err(Error::Failed("the database does not exist".into()))
    }
    fn update_checksum(&mut self, _: i64, _: &str) -> Result<()> {
        Err(Error::Failed("the database does not exist".into()))
    }
    fn run_in_transaction(&mut self, _: &str, _: After) -> std::result::Result<(), SqlError> {
        Err(SqlError {
            message: "the database does not exist".into(),
            line: None,
        })
    }
    fn run_statements(&mut self, _: &[&str]) -> std::result::Result<(), (usize, SqlError)> {
        Err((
            0,
            SqlError {
                message: "the database does not exist".into(),
                line: None,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            Target::parse("postgres://u@h/db").unwrap(),
            Target::Postgres("postgres://u@h/db".into())
        );
        assert_eq!(
            Target::parse("sqlite:app.db").unwrap(),
            Target::Sqlite("app.db".into())
        );
        assert_eq!(
            Target::parse("sqlite:///var/app.db").unwrap(),
            Target::Sqlite("/var/app.db".into())
        );
        assert_eq!(
            Target::parse("./data/app.db").unwrap(),
            Target::Sqlite("./data/app.db".into())
        );
        assert!(Target::parse("mysql://h/db").is_err());
        assert!(Target::parse("").is_err());
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/app?sslmode=disable"),
            "postgres://app:***@db:5432/app?sslmode=disable"
        );
        assert_eq!(
            redact("postgresql://db/app?user=a&password=x"),
            "postgresql://db/app?user=a&password=***"
        );
        assert_eq!(redact("postgres://app@db/app"), "postgres://app@db/app");
    }

    #[test]
    fn table_names() {
        assert!(check_table_name("zdd_migrations").is_ok());
        assert!(check_table_name("ops.zdd_migrations").is_ok());
        assert!(check_table_name("x; DROP TABLE y").is_err());
        assert!(check_table_name("a.b.c").is_err());
        assert!(check_table_name("1abc").is_err());
    }
}
