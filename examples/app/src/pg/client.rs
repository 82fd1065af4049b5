//! One session with the server: connecting, the startup and
//! authentication exchange, and the simple query protocol.
//!
//! [`literal`] lives here too, next to the checks [`Connection::query`]
//! makes before sending (`standard_conforming_strings`, `client_encoding`,
//! no NUL): the escaping is only safe together with them (see the
//! [module docs](super) on escaping).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::protocol::{
    auth_method, parse_message, query_message, startup_message, terminate_message, Backend,
};
use super::{Error, Url, CONNECT_TIMEOUT, IO_TIMEOUT};

/// `text` as an SQL string literal: in single quotes, single quotes
/// doubled. Only safe with `standard_conforming_strings` on and a UTF-8
/// client encoding, which [`Connection::query`] makes sure of; a NUL makes
/// the query refused there.
pub fn literal(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('\'');
    for c in text.chars() {
        if c == '\'' {
            quoted.push('\'');
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}

/// What one statement of a query returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Column names; empty for a statement without rows.
    pub columns: Vec<String>,
    /// Values in text format, `None` for NULL.
    pub rows: Vec<Vec<Option<String>>>,
    /// The command tag, e.g. `SELECT 5`; empty for an empty query.
    pub tag: String,
}

/// One session with the server.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    /// Bytes received but not yet parsed.
    buf: Vec<u8>,
    /// The settings the server reported that [`literal`] depends on.
    standard_conforming_strings: bool,
    client_encoding_utf8: bool,
    /// The transaction status of the last ReadyForQuery: `I` when idle.
    transaction_status: u8,
}

impl Connection {
    /// Connects to `url` and waits until the server is ready for queries.
    pub fn connect(url: &Url) -> Result<Connection, Error> {
        let stream = connect_tcp(&url.host, url.port)?;
        let context = "cannot set socket timeouts";
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| Error::io(context, e))?;
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .map_err(|e| Error::io(context, e))?;
        // Short messages, one round trip each: do not wait to fill packets.
        let _ = stream.set_nodelay(true);
        Connection::start(stream, &url.user, &url.database)
    }

    /// The startup exchange on a connected stream.
    fn start(stream: TcpStream, user: &str, database: &str) -> Result<Connection, Error> {
        let mut connection = Connection {
            stream,
            buf: Vec::new(),
            standard_conforming_strings: false,
            client_encoding_utf8: false,
            transaction_status: b'I',
        };
        connection.send(&startup_message(user, database))?;
        let mut authenticated = false;
        loop {
            match connection.receive()? {
                Backend::Authentication { code: 0, .. } => authenticated = true,
                Backend::Authentication { code, data } => {
                    return Err(Error::Auth(format!(
                        "the server asks for {} authentication, but the example app's \
                         client supports trust authentication only",
                        auth_method(code, &data)
                    )));
                }
                Backend::ParameterStatus { name, value } => connection.set(&name, &value),
                Backend::BackendKeyData { .. }
                | Backend::NoticeResponse(_)
                | Backend::NotificationResponse => {}
                Backend::ErrorResponse(error) => return Err(Error::Server(error)),
                Backend::ReadyForQuery(status) if authenticated => {
                    connection.transaction_status = status;
                    return Ok(connection);
                }
                other => return Err(unexpected(&other, "during startup")),
            }
        }
    }

    /// Runs `sql` (one or more statements) with the simple query protocol
    /// and returns what each statement returned. A server error is
    /// [`Error::Server`]; the connection is still usable after one, but
    /// not after any other error.
    pub fn query(&mut self, sql: &str) -> Result<Vec<Outcome>, Error> {
        self.check_literals_safe()?;
        if sql.contains('\0') {
            return Err(Error::Refused(
                "refusing to send a query containing a NUL character".into(),
            ));
        }
        self.send(&query_message(sql))?;
        let mut outcomes = Vec::new();
        let mut current: Option<Outcome> = None;
        let mut error = None;
        loop {
            let message = match self.receive() {
                Ok(message) => message,
                // A FATAL error is followed by the server closing: report
                // the error, not the closing.
                Err(io_error) => return Err(error.map_or(io_error, Error::Server)),
            };
            match message {
                Backend::RowDescription(columns) => {
                    current = Some(Outcome {
                        columns,
                        ..Outcome::default()
                    });
                }
                Backend::DataRow(values) => {
                    let outcome = current
                        .as_mut()
                        .ok_or_else(|| Error::Protocol("DataRow without RowDescription".into()))?;
                    if values.len() != outcome.columns.len() {
                        return Err(Error::Protocol(format!(
                            "DataRow has {} values for {} columns",
                            values.len(),
                            outcome.columns.len()
                        )));
                    }
                    outcome.rows.push(values);
                }
                Backend::CommandComplete(tag) => {
                    let mut outcome = current.take().unwrap_or_default();
                    outcome.tag = tag;
                    outcomes.push(outcome);
                }
                Backend::EmptyQueryResponse => outcomes.push(Outcome::default()),
                Backend::ErrorResponse(server_error) => error = Some(server_error),
                Backend::ParameterStatus { name, value } => self.set(&name, &value),
                Backend::NoticeResponse(_) | Backend::NotificationResponse => {}
                Backend::ReadyForQuery(status) => {
                    self.transaction_status = status;
                    return match error {
                        Some(error) => Err(Error::Server(error)),
                        None => Ok(outcomes),
                    };
                }
                other => return Err(unexpected(&other, "in answer to a query")),
            }
        }
    }

    /// Whether the session is outside any transaction block, as a pooled
    /// connection must be.
    pub fn is_idle(&self) -> bool {
        self.transaction_status == b'I'
    }

    /// Whether the server has closed this (idle) connection or sent
    /// something unasked, such as the FATAL error of a server shutdown.
    /// Either way the connection is not worth using. Does not block.
    pub fn is_broken(&self) -> bool {
        if !self.buf.is_empty() || self.stream.set_nonblocking(true).is_err() {
            return true;
        }
        let mut byte = [0];
        let broken = match self.stream.peek(&mut byte) {
            Err(error) => error.kind() != io::ErrorKind::WouldBlock,
            // End of stream, or an unsolicited message.
            Ok(_) => true,
        };
        broken || self.stream.set_nonblocking(false).is_err()
    }

    fn set(&mut self, name: &str, value: &str) {
        match name {
            "standard_conforming_strings" => self.standard_conforming_strings = value == "on",
            "client_encoding" => self.client_encoding_utf8 = value.eq_ignore_ascii_case("UTF8"),
            _ => {}
        }
    }

    fn check_literals_safe(&self) -> Result<(), Error> {
        if !self.standard_conforming_strings {
            return Err(Error::Refused(
                "refusing to query: the server did not report standard_conforming_strings=on, \
                 which the example app's SQL literals need"
                    .into(),
            ));
        }
        if !self.client_encoding_utf8 {
            return Err(Error::Refused(
                "refusing to query: the client encoding is not UTF8".into(),
            ));
        }
        Ok(())
    }

    fn send(&mut self, message: &[u8]) -> Result<(), Error> {
        self.stream
            .write_all(message)
            .map_err(|e| Error::io("cannot send to the database", e))
    }

    /// The next message, reading as needed.
    fn receive(&mut self) -> Result<Backend, Error> {
        loop {
            if let Some((message, len)) = parse_message(&self.buf)? {
                self.buf.drain(..len);
                return Ok(message);
            }
            let mut chunk = [0; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(Error::io(
                        "reading from the database",
                        io::ErrorKind::UnexpectedEof.into(),
                    ))
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(Error::io("reading from the database", error)),
            }
        }
    }
}

impl Drop for Connection {
    /// Says goodbye, so the server does not log an unexpected EOF.
    fn drop(&mut self) {
        let _ = self
            .stream
            .set_write_timeout(Some(Duration::from_millis(100)));
        let _ = self.stream.write_all(&terminate_message());
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

fn unexpected(message: &Backend, when: &str) -> Error {
    Error::Protocol(format!("unexpected {message:?} {when}"))
}

/// Connects to the first address of `host` that answers.
fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, Error> {
    let addresses: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Io(format!("cannot resolve database host {host:?}: {e}")))?
        .collect();
    let mut last_error = None;
    for address in &addresses {
        match TcpStream::connect_timeout(address, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some((address, error)),
        }
    }
    Err(match last_error {
        Some((address, error)) => Error::io(
            &format!("cannot connect to the database at {address}"),
            error,
        ),
        None => Error::Io(format!("database host {host:?} has no address")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::testing::{
        auth, data_row, error_response, greeting, msg, parameter, ready, row_description, scripted,
        url,
    };
    use std::net::TcpListener;
    use std::thread;

    #[test]
    fn literals_double_single_quotes_only() {
        assert_eq!(literal(""), "''");
        assert_eq!(literal("plain"), "'plain'");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("''"), "''''''");
        // With standard_conforming_strings on, a backslash is ordinary.
        assert_eq!(literal(r"a\b\'"), r"'a\b\'''");
        assert_eq!(literal("日本語 🎉"), "'日本語 🎉'");
        assert_eq!(
            literal("'); DROP TABLE notes; --"),
            "'''); DROP TABLE notes; --'"
        );
    }

    #[test]
    fn runs_queries() {
        let mut rows = row_description(&["id", "title"]);
        rows.extend(data_row(&[Some("2"), Some("it's")]));
        rows.extend(data_row(&[Some("1"), None]));
        rows.extend(msg(b'C', b"SELECT 2\0"));
        rows.extend(ready());
        let mut failed = error_response(b'E', "42P01", "relation \"notes\" does not exist");
        failed.extend(ready());
        let mut two = msg(b'C', b"INSERT 0 1\0");
        two.extend(msg(b'I', b""));
        two.extend(ready());
        let (url, server) = scripted(greeting("on"), vec![rows, failed, two]);

        let mut connection = Connection::connect(&url).unwrap();
        // The server waits for a query: nothing to read, not closed.
        assert!(!connection.is_broken());
        let outcomes = connection.query("SELECT id, title FROM notes").unwrap();
        assert_eq!(
            outcomes,
            [Outcome {
                columns: vec!["id".into(), "title".into()],
                rows: vec![
                    vec![Some("2".into()), Some("it's".into())],
                    vec![Some("1".into()), None]
                ],
                tag: "SELECT 2".into(),
            }]
        );
        let error = connection.query("SELECT 1 FROM notes").unwrap_err();
        assert_eq!(error.sqlstate(), Some("42P01"));
        assert_eq!(
            error.to_string(),
            "relation \"notes\" does not exist (SQLSTATE 42P01)"
        );
        // Still in step with the server after the error.
        let outcomes = connection.query("INSERT ...; ;").unwrap();
        assert_eq!(outcomes.len(), 2);
        assert_eq!(outcomes[0].tag, "INSERT 0 1");
        assert_eq!(outcomes[1], Outcome::default());
        assert!(connection.is_idle());
        assert_eq!(
            server.join().unwrap(),
            [
                "SELECT id, title FROM notes",
                "SELECT 1 FROM notes",
                "INSERT ...; ;"
            ]
        );
        // The server thread has gone, closing its end.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !connection.is_broken() {
            assert!(std::time::Instant::now() < deadline);
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn refuses_other_authentication() {
        let (url, _server) = scripted(auth(5, b"salt"), vec![]);
        let error = Connection::connect(&url).unwrap_err();
        assert!(matches!(error, Error::Auth(_)), "{error:?}");
        assert_eq!(
            error.to_string(),
            "the server asks for md5 password authentication, but the example app's \
             client supports trust authentication only"
        );
        let (url, _server) = scripted(auth(10, b"SCRAM-SHA-256\0\0"), vec![]);
        let error = Connection::connect(&url).unwrap_err().to_string();
        assert!(error.contains("SASL (SCRAM-SHA-256)"), "{error}");
    }

    #[test]
    fn reports_startup_errors() {
        let (url, _server) = scripted(
            error_response(b'E', "3D000", "database \"d\" does not exist"),
            vec![],
        );
        let error = Connection::connect(&url).unwrap_err();
        assert_eq!(error.sqlstate(), Some("3D000"));
    }

    #[test]
    fn refuses_to_query_without_standard_conforming_strings() {
        let (url, _server) = scripted(greeting("off"), vec![]);
        let mut connection = Connection::connect(&url).unwrap();
        let error = connection.query("SELECT 'a\\'").unwrap_err();
        assert!(matches!(error, Error::Refused(_)), "{error:?}");
        assert!(error.to_string().contains("standard_conforming_strings"));
    }

    #[test]
    fn follows_setting_changes_and_refuses_nul() {
        let mut answer = parameter("standard_conforming_strings", "off");
        answer.extend(msg(b'C', b"SET\0"));
        answer.extend(ready());
        let (url, _server) = scripted(greeting("on"), vec![answer]);
        let mut connection = Connection::connect(&url).unwrap();
        let error = connection.query("SELECT 'a\0b'").unwrap_err();
        assert!(error.to_string().contains("NUL"), "{error}");
        connection
            .query("SET standard_conforming_strings = off")
            .unwrap();
        assert!(matches!(
            connection.query("SELECT 1"),
            Err(Error::Refused(_))
        ));
    }

    #[test]
    fn a_fatal_error_before_closing_is_reported() {
        let fatal = error_response(b'E', "57P01", "terminating connection");
        let (url, server) = scripted(greeting("on"), vec![fatal]);
        let mut connection = Connection::connect(&url).unwrap();
        let query = thread::spawn(move || connection.query("SELECT 1"));
        server.join().unwrap();
        let error = query.join().unwrap().unwrap_err();
        assert_eq!(error.sqlstate(), Some("57P01"));
    }

    #[test]
    fn connection_refused_is_an_io_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let error = Connection::connect(&url("u", "127.0.0.1", port, "d")).unwrap_err();
        assert!(matches!(error, Error::Io(_)), "{error:?}");
        assert!(error.to_string().contains("cannot connect"), "{error}");
    }
}
