//! What the unit tests of the protocol, the client and the pool share:
//! backend messages built byte by byte, and a scripted server on a local
//! socket to run the client's state machine against.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;

use super::Url;

/// A URL without a password.
pub(super) fn url(user: &str, host: &str, port: u16, database: &str) -> Url {
    Url {
        user: user.into(),
        password: None,
        host: host.into(),
        port,
        database: database.into(),
    }
}

/// A message with type `tag` and `body`.
pub(super) fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut message = vec![tag];
    message.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    message.extend_from_slice(body);
    message
}

pub(super) fn auth(code: i32, data: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(data);
    msg(b'R', &body)
}

pub(super) fn parameter(name: &str, value: &str) -> Vec<u8> {
    msg(b'S', format!("{name}\0{value}\0").as_bytes())
}

pub(super) fn ready() -> Vec<u8> {
    msg(b'Z', b"I")
}

pub(super) fn row_description(names: &[&str]) -> Vec<u8> {
    let mut body = (names.len() as i16).to_be_bytes().to_vec();
    for name in names {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(&[0; 18]);
    }
    msg(b'T', &body)
}

pub(super) fn data_row(values: &[Option<&str>]) -> Vec<u8> {
    let mut body = (values.len() as i16).to_be_bytes().to_vec();
    for value in values {
        match value {
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(value) => {
                body.extend_from_slice(&(value.len() as i32).to_be_bytes());
                body.extend_from_slice(value.as_bytes());
            }
        }
    }
    msg(b'D', &body)
}

pub(super) fn error_response(tag: u8, code: &str, message: &str) -> Vec<u8> {
    let body = format!("SERROR\0VERROR\0C{code}\0M{message}\0Fparse.c\0L42\0\0");
    msg(tag, body.as_bytes())
}

/// A server that reads the startup message, answers with `greeting`,
/// then answers each query message with the next of `answers`. Returns
/// the URL to connect to and the thread, which gives back the queries.
pub(super) fn scripted(
    greeting: Vec<u8>,
    answers: Vec<Vec<u8>>,
) -> (Url, thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut len = [0; 4];
        stream.read_exact(&mut len).unwrap();
        let mut startup = vec![0; i32::from_be_bytes(len) as usize - 4];
        stream.read_exact(&mut startup).unwrap();
        assert_eq!(&startup[..4], &[0, 3, 0, 0]);
        stream.write_all(&greeting).unwrap();
        let mut queries = Vec::new();
        for answer in answers {
            let mut head = [0; 5];
            stream.read_exact(&mut head).unwrap();
            assert_eq!(head[0], b'Q');
            let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
            let mut sql = vec![0; len as usize - 4];
            stream.read_exact(&mut sql).unwrap();
            assert_eq!(sql.pop(), Some(0));
            queries.push(String::from_utf8(sql).unwrap());
            // Byte by byte, to exercise reassembly.
            for byte in answer {
                stream.write_all(&[byte]).unwrap();
            }
        }
        queries
    });
    (url("u", "127.0.0.1", port, "d"), server)
}

/// What a `trust` server sends after the startup message, with the
/// given `standard_conforming_strings`, up to ReadyForQuery.
pub(super) fn greeting(standard_conforming_strings: &str) -> Vec<u8> {
    let mut bytes = auth(0, b"");
    bytes.extend(parameter("client_encoding", "UTF8"));
    bytes.extend(parameter(
        "standard_conforming_strings",
        standard_conforming_strings,
    ));
    bytes.extend(msg(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]));
    bytes.extend(error_response(b'N', "00000", "hello"));
    bytes.extend(ready());
    bytes
}
