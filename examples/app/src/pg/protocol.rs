//! The wire format of protocol 3.0: the frontend messages the client
//! sends, and the backend messages it receives, parsed from bytes.
//!
//! Nothing here touches a socket, so every message is unit tested as
//! bytes, and a message that has not fully arrived is just `None` (the
//! caller reads more and tries again).

use super::{Error, ServerError};

/// Protocol version 3.0, as sent in the startup message.
const PROTOCOL_3_0: i32 = 3 << 16;

/// The largest message accepted from the server; anything bigger is taken
/// for a broken stream rather than buffered.
const MAX_MESSAGE_LEN: usize = 64 * 1024 * 1024;

/// The startup message: protocol 3.0, user, database, and settings the
/// rest of the client relies on.
pub fn startup_message(user: &str, database: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    for (name, value) in [
        ("user", user),
        ("database", database),
        ("client_encoding", "UTF8"),
        ("application_name", "zdd-example-app"),
    ] {
        push_cstr(&mut body, name);
        push_cstr(&mut body, value);
    }
    body.push(0);
    // The startup message alone has no type byte.
    let mut message = len_prefix(body.len());
    message.extend_from_slice(&body);
    message
}

/// A simple query (`Q`). The caller has checked that `sql` has no NUL.
pub fn query_message(sql: &str) -> Vec<u8> {
    let mut message = vec![b'Q'];
    message.extend_from_slice(&len_prefix(sql.len() + 1));
    message.extend_from_slice(sql.as_bytes());
    message.push(0);
    message
}

/// Terminate (`X`), sent before closing.
pub fn terminate_message() -> Vec<u8> {
    vec![b'X', 0, 0, 0, 4]
}

/// The 4-byte length of a message whose body (after type and length) is
/// `body_len` bytes; the length counts itself.
fn len_prefix(body_len: usize) -> Vec<u8> {
    let len = i32::try_from(body_len + 4).expect("message under 2 GiB");
    len.to_be_bytes().to_vec()
}

fn push_cstr(buf: &mut Vec<u8>, text: &str) {
    buf.extend_from_slice(text.as_bytes());
    buf.push(0);
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `R`: 0 is AuthenticationOk; anything else a method to name.
    Authentication { code: i32, data: Vec<u8> },
    /// `S`.
    ParameterStatus { name: String, value: String },
    /// `K`.
    BackendKeyData { pid: i32, secret: i32 },
    /// `Z`, with the transaction status (`I`, `T` or `E`).
    ReadyForQuery(u8),
    /// `T`: the column names.
    RowDescription(Vec<String>),
    /// `D`: the values, `None` for NULL.
    DataRow(Vec<Option<String>>),
    /// `C`: the command tag, e.g. `INSERT 0 1`.
    CommandComplete(String),
    /// `I`.
    EmptyQueryResponse,
    /// `E`.
    ErrorResponse(ServerError),
    /// `N`.
    NoticeResponse(ServerError),
    /// `A`: LISTEN/NOTIFY, which may arrive at any time; ignored.
    NotificationResponse,
    /// Any other type byte, which this client never asks for.
    Other(u8),
}

/// Parses the first message in `buf`. Returns it with the number of bytes
/// it took, or `None` if it has not fully arrived yet.
pub fn parse_message(buf: &[u8]) -> Result<Option<(Backend, usize)>, Error> {
    let Some(header) = buf.get(..5) else {
        return Ok(None);
    };
    let tag = header[0];
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let len = usize::try_from(len)
        .ok()
        .filter(|len| (4..=MAX_MESSAGE_LEN).contains(len))
        .ok_or_else(|| {
            Error::Protocol(format!(
                "message {:?} has an invalid length {len}",
                char::from(tag)
            ))
        })?;
    let Some(body) = buf.get(5..1 + len) else {
        return Ok(None);
    };
    let mut body = Fields {
        bytes: body,
        tag,
        pos: 0,
    };
    let message = match tag {
        b'R' => Backend::Authentication {
            code: body.i32()?,
            data: body.rest().to_vec(),
        },
        b'S' => Backend::ParameterStatus {
            name: body.cstr()?,
            value: body.cstr()?,
        },
        b'K' => Backend::BackendKeyData {
            pid: body.i32()?,
            secret: body.i32()?,
        },
        b'Z' => Backend::ReadyForQuery(body.u8()?),
        b'T' => {
            let count = body.count()?;
            let mut names = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                names.push(body.cstr()?);
                // Table OID, column number, type OID, type size, type
                // modifier, format code: not needed for text results.
                body.skip(4 + 2 + 4 + 2 + 4 + 2)?;
            }
            Backend::RowDescription(names)
        }
        b'D' => {
            let count = body.count()?;
            let mut values = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                values.push(match body.i32()? {
                    -1 => None,
                    len => {
                        let len = usize::try_from(len).map_err(|_| body.bad("value length"))?;
                        Some(body.utf8(len)?)
                    }
                });
            }
            Backend::DataRow(values)
        }
        b'C' => Backend::CommandComplete(body.cstr()?),
        b'I' => Backend::EmptyQueryResponse,
        b'E' => Backend::ErrorResponse(body.error_fields()?),
        b'N' => Backend::NoticeResponse(body.error_fields()?),
        b'A' => Backend::NotificationResponse,
        other => Backend::Other(other),
    };
    Ok(Some((message, 1 + len)))
}

/// A cursor over one message's body.
struct Fields<'a> {
    bytes: &'a [u8],
    tag: u8,
    pos: usize,
}

impl<'a> Fields<'a> {
    fn bad(&self, what: &str) -> Error {
        Error::Protocol(format!(
            "message {:?}: truncated or invalid {what}",
            char::from(self.tag)
        ))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| self.bad("field"))?;
        let taken = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(taken)
    }

    fn skip(&mut self, n: usize) -> Result<(), Error> {
        self.take(n).map(drop)
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        rest
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn i32(&mut self) -> Result<i32, Error> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An Int16 count, which must not be negative.
    fn count(&mut self) -> Result<usize, Error> {
        let b = self.take(2)?;
        usize::try_from(i16::from_be_bytes([b[0], b[1]])).map_err(|_| self.bad("count"))
    }

    fn utf8(&mut self, len: usize) -> Result<String, Error> {
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.bad("text (not UTF-8)"))
    }

    /// A NUL-terminated string.
    fn cstr(&mut self) -> Result<String, Error> {
        let rest = &self.bytes[self.pos..];
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.bad("string"))?;
        let text = self.utf8(len)?;
        self.pos += 1;
        Ok(text)
    }

    /// The fields of an ErrorResponse or NoticeResponse.
    fn error_fields(&mut self) -> Result<ServerError, Error> {
        let mut error = ServerError::default();
        loop {
            let code = self.u8()?;
            if code == 0 {
                return Ok(error);
            }
            let value = self.cstr()?;
            match code {
                b'V' => error.severity = value,
                b'S' if error.severity.is_empty() => error.severity = value,
                b'C' => error.code = value,
                b'M' => error.message = value,
                _ => {}
            }
        }
    }
}

/// The name of the authentication method a request `code` asks for.
pub fn auth_method(code: i32, data: &[u8]) -> String {
    match code {
        2 => "Kerberos V5".to_owned(),
        3 => "cleartext password".to_owned(),
        5 => "md5 password".to_owned(),
        7 | 8 => "GSSAPI".to_owned(),
        9 => "SSPI".to_owned(),
        10..=12 => {
            let mechanisms: Vec<String> = data
                .split(|&b| b == 0)
                .filter(|m| !m.is_empty())
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .collect();
            if mechanisms.is_empty() {
                "SASL".to_owned()
            } else {
                format!("SASL ({})", mechanisms.join(", "))
            }
        }
        other => format!("an unknown method (code {other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::testing::{
        auth, data_row, error_response, msg, parameter, ready, row_description,
    };

    #[test]
    fn frontend_messages() {
        let startup = startup_message("u", "d");
        let mut expected = Vec::new();
        expected.extend_from_slice(&[0, 3, 0, 0]);
        expected.extend_from_slice(b"user\0u\0database\0d\0client_encoding\0UTF8\0");
        expected.extend_from_slice(b"application_name\0zdd-example-app\0\0");
        let len = (expected.len() as i32 + 4).to_be_bytes();
        assert_eq!(&startup[..4], &len);
        assert_eq!(&startup[4..], &expected[..]);

        assert_eq!(query_message("SELECT 1"), b"Q\0\0\0\x0dSELECT 1\0".to_vec());
        assert_eq!(terminate_message(), b"X\0\0\0\x04".to_vec());
    }

    fn parse_one(bytes: &[u8]) -> Backend {
        let (message, len) = parse_message(bytes).unwrap().unwrap();
        assert_eq!(len, bytes.len());
        message
    }

    #[test]
    fn parses_backend_messages() {
        assert_eq!(
            parse_one(&auth(0, b"")),
            Backend::Authentication {
                code: 0,
                data: vec![]
            }
        );
        assert_eq!(
            parse_one(&parameter("standard_conforming_strings", "on")),
            Backend::ParameterStatus {
                name: "standard_conforming_strings".into(),
                value: "on".into()
            }
        );
        let mut key = 77i32.to_be_bytes().to_vec();
        key.extend_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(
            parse_one(&msg(b'K', &key)),
            Backend::BackendKeyData {
                pid: 77,
                secret: -5
            }
        );
        assert_eq!(parse_one(&ready()), Backend::ReadyForQuery(b'I'));
        assert_eq!(
            parse_one(&row_description(&["id", "coalesce"])),
            Backend::RowDescription(vec!["id".into(), "coalesce".into()])
        );
        assert_eq!(
            parse_one(&data_row(&[Some("3"), None, Some(""), Some("é")])),
            Backend::DataRow(vec![
                Some("3".into()),
                None,
                Some("".into()),
                Some("é".into())
            ])
        );
        assert_eq!(
            parse_one(&msg(b'C', b"INSERT 0 1\0")),
            Backend::CommandComplete("INSERT 0 1".into())
        );
        assert_eq!(parse_one(&msg(b'I', b"")), Backend::EmptyQueryResponse);
        assert_eq!(
            parse_one(&error_response(
                b'E',
                "42703",
                "column \"name\" does not exist"
            )),
            Backend::ErrorResponse(ServerError {
                severity: "ERROR".into(),
                code: "42703".into(),
                message: "column \"name\" does not exist".into(),
            })
        );
        assert!(matches!(
            parse_one(&error_response(b'N', "00000", "skipping")),
            Backend::NoticeResponse(ServerError { code, .. }) if code == "00000"
        ));
        assert_eq!(parse_one(&msg(b'W', b"xy")), Backend::Other(b'W'));
    }

    #[test]
    fn waits_for_whole_messages() {
        let mut stream = parameter("a", "b");
        stream.extend_from_slice(&ready());
        let first_len = stream.len() - 6;
        for cut in 0..first_len {
            assert_eq!(parse_message(&stream[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (first, len) = parse_message(&stream).unwrap().unwrap();
        assert!(matches!(first, Backend::ParameterStatus { .. }));
        assert_eq!(len, first_len);
        assert_eq!(
            parse_message(&stream[len..]).unwrap(),
            Some((Backend::ReadyForQuery(b'I'), 6))
        );
    }

    #[test]
    fn rejects_malformed_messages() {
        // Length below 4, negative, or absurd.
        for len in [0i32, 3, -1, i32::MAX] {
            let mut bytes = vec![b'Z'];
            bytes.extend_from_slice(&len.to_be_bytes());
            assert!(parse_message(&bytes).is_err(), "length {len}");
        }
        for bad in [
            msg(b'Z', b""),                       // no status byte
            msg(b'S', b"name\0value"),            // unterminated string
            msg(b'D', &[0, 1, 0, 0, 0, 9, b'x']), // value longer than the message
            msg(b'D', &[0xff, 0xff]),             // negative count
            msg(b'C', b"\xff\0"),                 // not UTF-8
            msg(b'E', b"Mno terminator\0"),       // fields not ended by a NUL
            msg(b'K', b"\0\0"),                   // short
        ] {
            assert!(
                matches!(parse_message(&bad), Err(Error::Protocol(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn names_authentication_methods() {
        assert_eq!(auth_method(5, b"salt"), "md5 password");
        assert_eq!(auth_method(3, b""), "cleartext password");
        assert_eq!(
            auth_method(10, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"),
            "SASL (SCRAM-SHA-256-PLUS, SCRAM-SHA-256)"
        );
        assert_eq!(auth_method(42, b""), "an unknown method (code 42)");
    }
}
