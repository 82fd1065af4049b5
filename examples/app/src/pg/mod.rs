//! A minimal PostgreSQL client: just what the notes API needs.
//!
//! # Why hand-written
//!
//! The app is a statically linked binary in a `FROM scratch` image and
//! depends on std and libc only, on purpose: it builds in seconds, has no
//! supply chain to audit, and nothing in it can surprise a deploy test. A
//! client crate would bring an async runtime or a TLS stack, and a C
//! library would not link statically. The part of the protocol a demo needs
//! is small and stable (protocol 3.0 has not changed since PostgreSQL 7.4),
//! so it is written out here, every message parsed from bytes and unit
//! tested that way.
//!
//! # What is supported
//!
//! - TCP only (`HOST:PORT`), no TLS: the app talks to a database on the
//!   same Docker network.
//! - Authentication `trust` only. Any other request (password, md5,
//!   SCRAM, ...) is an [`Error::Auth`] naming it.
//! - The simple query protocol (`Q`), results in text format. Values are
//!   put into the SQL as string literals made by [`literal`].
//! - Timeouts: [`CONNECT_TIMEOUT`] to connect, [`IO_TIMEOUT`] for every
//!   read and write, so a stuck database fails a request rather than
//!   hanging it.
//!
//! # Escaping
//!
//! [`literal`] doubles single quotes and nothing else. That is the whole
//! escaping rule for a `'...'` literal when `standard_conforming_strings` is
//! on (the default since PostgreSQL 9.1): backslashes are then ordinary
//! characters. The client does not assume it: it reads the setting from the
//! server's ParameterStatus messages (sent at startup and after every
//! change, e.g. a `SET`) and refuses to send a query while it is not `on`,
//! or while `client_encoding` is not `UTF8` (in some multi-byte encodings a
//! quote byte can hide inside a character). A NUL character cannot be sent
//! at all (the query is NUL-terminated), so a query containing one is
//! refused too.
//!
//! # Modules
//!
//! `url` parses `DATABASE_URL`; `protocol` is the wire format, bytes in
//! and out, with no socket; `client` is one session (startup,
//! authentication, simple queries, and the literals whose safety it
//! checks); `pool` reuses sessions across requests. The errors, shared by
//! all of them, are here; so is the public API, re-exported flat as
//! `pg::Url`, `pg::Connection`, ... (the modules themselves are private).

use std::fmt;
use std::io;
use std::time::Duration;

mod client;
mod pool;
mod protocol;
#[cfg(test)]
mod testing;
mod url;

pub use client::{literal, Connection, Outcome};
pub use pool::Pool;
pub use protocol::{
    auth_method, parse_message, query_message, startup_message, terminate_message, Backend,
};
pub use url::{redact_password, Url, DEFAULT_PORT, URL_FORM};

/// How long connecting to the server may take (per address).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a single read or write may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong talking to the database.
#[derive(Debug)]
pub enum Error {
    /// Connecting, reading or writing failed (refused, reset, timed out,
    /// closed); the text says which.
    Io(String),
    /// The server sent something this client does not understand.
    Protocol(String),
    /// The server wants an authentication method other than `trust`.
    Auth(String),
    /// The server answered with an ErrorResponse.
    Server(ServerError),
    /// The client will not send this (see the module docs on escaping).
    Refused(String),
}

/// An ErrorResponse (or NoticeResponse): the fields a log line needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerError {
    /// `ERROR`, `FATAL`, `NOTICE`, ... (field `V`, else `S`).
    pub severity: String,
    /// The SQLSTATE, e.g. `42703` for an undefined column (field `C`).
    pub code: String,
    /// The primary message (field `M`).
    pub message: String,
}

impl Error {
    /// The SQLSTATE of a server error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Server(error) => Some(&error.code),
            _ => None,
        }
    }

    fn io(context: &str, error: io::Error) -> Error {
        let reason = match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".to_owned(),
            io::ErrorKind::UnexpectedEof => "the server closed the connection".to_owned(),
            _ => error.to_string(),
        };
        Error::Io(format!("{context}: {reason}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(text) | Error::Refused(text) => f.write_str(text),
            Error::Protocol(text) => write!(f, "protocol error: {text}"),
            Error::Auth(text) => f.write_str(text),
            Error::Server(error) => write!(f, "{error}"),
        }
    }
}

/// `column "name" does not exist (SQLSTATE 42703)`.
impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)
    }
}

impl std::error::Error for Error {}
