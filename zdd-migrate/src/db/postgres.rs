//! PostgreSQL: an advisory lock on a session of its own, one transaction
//! per migration.
//!
//! The lock lives on a dedicated connection that does nothing else, so no
//! migration's SQL (a `DISCARD ALL`, a dropped connection after a failed
//! statement) can release it, and waiting for it never happens inside a
//! transaction: `pg_try_advisory_lock` is polled until `--lock-wait`. The
//! lock key is derived from the history table's name, so two applications
//! sharing a database with their own tables do not block each other. The
//! lock session's `application_name` names the runner, which is how
//! `status` and a waiting runner tell who holds it.
//!
//! Every migration statement runs under `--lock-timeout`: a transactional
//! migration gets `SET LOCAL lock_timeout`, the statements of a
//! `transaction=off` one a session-wide `SET lock_timeout` (reset after
//! them). An `ALTER TABLE` stuck behind a long query would otherwise queue
//! every later query on that table behind itself, which is downtime. A
//! `CREATE INDEX CONCURRENTLY` waiting for old transactions to end is
//! waiting for a lock too, and fails the same way after the timeout.

use std::time::{Duration, Instant};

use postgres::{Client, Config, NoTls};
use sha2::{Digest, Sha256};
use zdd_core::cli::Progress;
use zdd_core::{Error, Result};

use super::{After, Engine, HistoryRow, LockState, Mode, Options, RowStatus, SqlError};

pub struct Postgres {
    config: Config,
    client: Client,
    lock_client: Option<Client>,
    table: String,
    key: i64,
    lock_timeout: Duration,
    runner: String,
    described: String,
}

const TIME: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'"#;

impl Postgres {
    pub fn connect(url: &str, mode: Mode, options: &Options) -> Result<Self> {
        let described = super::Target::Postgres(url.into()).describe();
        let mut config: Config = url
            .parse()
            .map_err(|e| Error::Usage(format!("`{described}`: {}", describe(&e))))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("zdd-migrate");
        let mut client = config.connect(NoTls).map_err(|e| {
            Error::Failed(format!("cannot connect to {described}: {}", describe(&e)))
        })?;
        if mode == Mode::ReadOnly {
            client
                .batch_execute("SET default_transaction_read_only = on")
                .map_err(|e| failed("setting the session read-only", &e))?;
        }
        Ok(Postgres {
            config,
            client,
            lock_client: None,
            key: lock_key(&options.table),
            table: options.table.clone(),
            lock_timeout: options.lock_timeout,
            runner: options.runner.clone(),
            described,
        })
    }

    /// The lock's key split the way `pg_locks` shows it (classid, objid).
    fn key_parts(&self) -> (i64, i64) {
        let key = self.key as u64;
        ((key >> 32) as u32 as i64, key as u32 as i64)
    }

    fn holder(&mut self) -> Result<Option<String>> {
        let (classid, objid) = self.key_parts();
        let query = format!(
            "SELECT a.application_name, a.usename::text, COALESCE(host(a.client_addr), 'local'), l.pid, \
                    to_char(a.backend_start AT TIME ZONE 'UTC', {TIME}) \
             FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND l.classid::int8 = $1 AND l.objid::int8 = $2"
        );
        let rows = self
            .client
            .query(&query, &[&classid, &objid])
            .map_err(|e| failed("looking up the lock holder", &e))?;
        Ok(rows.first().map(|row| {
            let app: Option<String> = row.get(0);
            let user: Option<String> = row.get(1);
            let from: Option<String> = row.get(2);
            let pid: i32 = row.get(3);
            let since: Option<String> = row.get(4);
            let mut text = match app.filter(|a| !a.is_empty()) {
                Some(app) => format!("`{app}`"),
                None => "a session".to_owned(),
            };
            text.push_str(&format!(" (server pid {pid}"));
            if let Some(user) = user {
                text.push_str(&format!(", user {user}"));
            }
            if let Some(from) = from {
                text.push_str(&format!(", from {from}"));
            }
            if let Some(since) = since {
                text.push_str(&format!(", connected {since}"));
            }
            text.push(')');
            text
        }))
    }

    fn history_exists(&mut self) -> Result<bool> {
        let row = self
            .client
            .query_one("SELECT to_regclass($1)::text", &[&self.table])
            .map_err(|e| failed("looking for the history table", &e))?;
        Ok(row.get::<_, Option<String>>(0).is_some())
    }

    fn upsert_sql(&self) -> String {
        format!(
            "INSERT INTO {t} (version, name, phase, transactional, checksum, status, started_at, finished_at, duration_ms, applied_by, error) \
             VALUES ($1, $2, $3, $4, $5, $6, CAST($7::text AS timestamptz), CAST($8::text AS timestamptz), $9, $10, $11) \
             ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name, phase = EXCLUDED.phase, \
               transactional = EXCLUDED.transactional, checksum = EXCLUDED.checksum, status = EXCLUDED.status, \
               started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, \
               duration_ms = EXCLUDED.duration_ms, applied_by = EXCLUDED.applied_by, error = EXCLUDED.error",
            t = self.table
        )
    }
}

/// The advisory lock key: the first 8 bytes of sha256 over the table name.
fn lock_key(table: &str) -> i64 {
    let digest = Sha256::digest(format!("zdd-migrate:{table}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// A PostgreSQL error in full: severity, message, SQLSTATE, detail, hint
/// (the client's own `Display` says only "db error").
pub fn describe(error: &postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; DETAIL: {detail}"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; HINT: {hint}"));
        }
        return text;
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn failed(action: &str, error: &postgres::Error) -> Error {
    Error::Failed(format!("{action}: {}", describe(error)))
}

fn sql_error(error: &postgres::Error, sql: &str) -> SqlError {
    let line = error.as_db_error().and_then(|db| match db.position() {
        Some(postgres::error::ErrorPosition::Original(position)) => {
            Some(crate::sql::line_of_char(sql, *position as usize))
        }
        _ => None,
    });
    SqlError {
        message: describe(error),
        line,
    }
}

fn record_params(row: &HistoryRow) -> [Box<dyn postgres::types::ToSql + Sync + '_>; 11] {
    [
        Box::new(row.version),
        Box::new(row.name.as_str()),
        Box::new(row.phase.as_str()),
        Box::new(row.transactional),
        Box::new(row.checksum.as_str()),
        Box::new(row.status.as_str()),
        Box::new(row.started_at.as_str()),
        Box::new(row.finished_at.as_deref()),
        Box::new(row.duration_ms),
        Box::new(row.applied_by.as_str()),
        Box::new(row.error.as_deref()),
    ]
}

impl Engine for Postgres {
    fn lock(&mut self, wait: Duration, progress: &Progress) -> Result<()> {
        let mut config = self.config.clone();
        let name = format!("zdd-migrate {} pid {}", self.runner, std::process::id());
        config.application_name(&name);
        let mut lock_client = config.connect(NoTls).map_err(|e| {
            Error::Failed(format!(
                "cannot open the lock session to {}: {}",
                self.described,
                describe(&e)
            ))
        })?;
        let started = Instant::now();
        let mut said = false;
        loop {
            let got: bool = lock_client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&self.key])
                .map_err(|e| failed("taking the migration lock", &e))?
                .get(0);
            if got {
                self.lock_client = Some(lock_client);
                return Ok(());
            }
            let holder = self.holder()?.unwrap_or_else(|| "another session".into());
            let elapsed = started.elapsed();
            if elapsed >= wait {
                return Err(Error::Failed(format!(
                    "the migration lock is still held by {holder} after {:.1}s (--lock-wait)",
                    elapsed.as_secs_f64()
                )));
            }
            if !said {
                progress.info(format_args!(
                    "waiting up to {:.0}s for the migration lock, held by {holder}",
                    wait.as_secs_f64()
                ));
                said = true;
            }
            std::thread::sleep((wait - elapsed).min(Duration::from_millis(200)));
        }
    }

    fn unlock(&mut self) -> Result<()> {
        if let Some(mut lock_client) = self.lock_client.take() {
            lock_client
                .query_one("SELECT pg_advisory_unlock($1)", &[&self.key])
                .map_err(|e| failed("releasing the migration lock", &e))?;
        }
        Ok(())
    }

    fn lock_state(&mut self) -> Result<LockState> {
        Ok(match self.holder()? {
            Some(holder) => LockState::Held {
                holder: Some(holder),
            },
            None => LockState::Free,
        })
    }

    fn ensure_history(&mut self) -> Result<()> {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} (
                version bigint PRIMARY KEY,
                name text NOT NULL,
                phase text NOT NULL,
                transactional boolean NOT NULL,
                checksum text NOT NULL,
                status text NOT NULL,
                started_at timestamptz NOT NULL,
                finished_at timestamptz,
                duration_ms bigint,
                applied_by text NOT NULL,
                error text
            )",
            self.table
        );
        self.client
            .batch_execute(&sql)
            .map_err(|e| failed(&format!("creating the history table {}", self.table), &e))
    }

    fn history(&mut self) -> Result<Vec<HistoryRow>> {
        if !self.history_exists()? {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT version, name, phase, transactional, checksum, status, \
                    to_char(started_at AT TIME ZONE 'UTC', {TIME}), \
                    to_char(finished_at AT TIME ZONE 'UTC', {TIME}), \
                    duration_ms, applied_by, error \
             FROM {} ORDER BY version",
            self.table
        );
        let rows = self
            .client
            .query(&sql, &[])
            .map_err(|e| failed(&format!("reading the history table {}", self.table), &e))?;
        rows.iter()
            .map(|row| {
                Ok(HistoryRow {
                    version: row.get(0),
                    name: row.get(1),
                    phase: super::phase_from_db(row.get(2))?,
                    transactional: row.get(3),
                    checksum: row.get(4),
                    status: RowStatus::parse(row.get(5))?,
                    started_at: row.get(6),
                    finished_at: row.get(7),
                    duration_ms: row.get(8),
                    applied_by: row.get(9),
                    error: row.get(10),
                })
            })
            .collect()
    }

    fn record(&mut self, row: &HistoryRow) -> Result<()> {
        let sql = self.upsert_sql();
        let params = record_params(row);
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p.as_ref()).collect();
        self.client
            .execute(&sql, &refs)
            .map(drop)
            .map_err(|e| failed(&format!("recording migration {}", row.version), &e))
    }

    fn delete(&mut self, version: i64) -> Result<()> {
        let sql = format!("DELETE FROM {} WHERE version = $1", self.table);
        self.client
            .execute(&sql, &[&version])
            .map(drop)
            .map_err(|e| failed(&format!("deleting the history of {version}"), &e))
    }

    fn update_checksum(&mut self, version: i64, checksum: &str) -> Result<()> {
        let sql = format!("UPDATE {} SET checksum = $2 WHERE version = $1", self.table);
        self.client
            .execute(&sql, &[&version, &checksum])
            .map(drop)
            .map_err(|e| failed(&format!("updating the checksum of {version}"), &e))
    }

    fn run_in_transaction(&mut self, sql: &str, after: After) -> std::result::Result<(), SqlError> {
        let upsert = self.upsert_sql();
        let delete = format!("DELETE FROM {} WHERE version = $1", self.table);
        let lock_timeout = self.lock_timeout.as_millis();
        let plain = |e: postgres::Error| SqlError {
            message: describe(&e),
            line: None,
        };
        // Dropping the transaction without commit rolls it back.
        let mut tx = self.client.transaction().map_err(plain)?;
        if lock_timeout > 0 {
            tx.batch_execute(&format!("SET LOCAL lock_timeout = '{lock_timeout}ms'"))
                .map_err(plain)?;
        }
        tx.batch_execute(sql).map_err(|e| sql_error(&e, sql))?;
        match after {
            After::Record(make_row) => {
                let row = make_row();
                let params = record_params(&row);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    params.iter().map(|p| p.as_ref()).collect();
                tx.execute(&upsert, &refs).map_err(plain)?;
            }
            After::Delete(version) => {
                tx.execute(&delete, &[&version]).map_err(plain)?;
            }
        }
        tx.commit().map_err(plain)
    }

    fn run_statements(
        &mut self,
        statements: &[&str],
    ) -> std::result::Result<(), (usize, SqlError)> {
        // A session-wide lock_timeout, set once: a statement of the file
        // may still `SET lock_timeout` for the ones after it.
        let lock_timeout = self.lock_timeout.as_millis();
        if lock_timeout > 0 {
            self.client
                .batch_execute(&format!("SET lock_timeout = '{lock_timeout}ms'"))
                .map_err(|e| {
                    (
                        0,
                        SqlError {
                            message: describe(&e),
                            line: None,
                        },
                    )
                })?;
        }
        let result = statements
            .iter()
            .enumerate()
            .try_for_each(|(index, statement)| {
                self.client
                    .batch_execute(statement)
                    .map_err(|e| (index, sql_error(&e, statement)))
            });
        if lock_timeout > 0 {
            // Back to the server's default for zdd-migrate's own queries
            // (a failure here shows on the next query anyway).
            let _ = self.client.batch_execute("RESET lock_timeout");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_differ_per_table() {
        assert_eq!(lock_key("zdd_migrations"), lock_key("zdd_migrations"));
        assert_ne!(lock_key("zdd_migrations"), lock_key("other"));
    }
}
