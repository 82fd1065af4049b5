//! Reusing connections across requests, and the rule for which may be
//! reused.
//!
//! Apart from the client because the pool sees a connection only through
//! its public methods ([`Connection::is_idle`], [`Connection::is_broken`]),
//! and its correctness is a rule of its own: a connection in an unknown
//! state must never serve a second request.

use std::sync::{Mutex, PoisonError};

use super::{Connection, Error, Url};

/// Idle connections to reuse. A request takes one (or connects), puts it
/// back after success and drops it after any error, so a connection in an
/// unknown state is never reused; nor is one left inside a transaction.
/// At most [`Pool::MAX_IDLE`] are kept. A connection is checked before
/// reuse ([`Connection::is_broken`]), so one the server closed while idle
/// (e.g. a database restart) costs no failed request.
#[derive(Debug)]
pub struct Pool {
    url: Url,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    /// Idle connections beyond this many are closed.
    pub const MAX_IDLE: usize = 16;

    pub fn new(url: Url) -> Pool {
        Pool {
            url,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `work` on a connection of the pool.
    pub fn with<T>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut connection = match self.take_idle() {
            Some(connection) => connection,
            None => Connection::connect(&self.url)?,
        };
        let result = work(&mut connection);
        if result.is_ok() && connection.is_idle() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < Pool::MAX_IDLE {
                idle.push(connection);
            }
        }
        result
    }

    /// The most recently used idle connection that still looks alive;
    /// broken ones are dropped on the way.
    fn take_idle(&self) -> Option<Connection> {
        loop {
            // The lock is not held while checking or dropping.
            let connection = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()?;
            if !connection.is_broken() {
                return Some(connection);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::testing::{error_response, greeting, msg, ready, scripted};

    #[test]
    fn the_pool_reuses_idle_connections_only() {
        let answer = |status: &[u8]| {
            let mut bytes = msg(b'C', b"SELECT 1\0");
            bytes.extend(msg(b'Z', status));
            bytes
        };
        // The scripted server takes one connection: the second and third
        // queries only work on the pooled one.
        let (url, server) = scripted(
            greeting("on"),
            vec![answer(b"I"), answer(b"I"), answer(b"T")],
        );
        let pool = Pool::new(url);
        for _ in 0..2 {
            pool.with(|connection| connection.query("SELECT 1"))
                .unwrap();
            assert_eq!(pool.idle.lock().unwrap().len(), 1);
        }
        // Left inside a transaction: not put back.
        pool.with(|connection| connection.query("BEGIN")).unwrap();
        assert_eq!(pool.idle.lock().unwrap().len(), 0);
        assert_eq!(server.join().unwrap(), ["SELECT 1", "SELECT 1", "BEGIN"]);
    }

    #[test]
    fn the_pool_drops_a_connection_after_an_error() {
        let mut failed = error_response(b'E', "42P01", "no table");
        failed.extend(ready());
        let (url, _server) = scripted(greeting("on"), vec![failed]);
        let pool = Pool::new(url);
        let error = pool
            .with(|connection| connection.query("SELECT"))
            .unwrap_err();
        assert_eq!(error.sqlstate(), Some("42P01"));
        assert_eq!(pool.idle.lock().unwrap().len(), 0);
    }
}
