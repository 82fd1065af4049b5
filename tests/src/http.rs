//! A tiny HTTP/1.1 client on a plain socket: one `GET` with
//! `Connection: close`, read to the end. Independent of every HTTP
//! library the tools use.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An HTTP response, header names lowercased.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// `GET http://address/path`: the whole response, or `None` when nothing
/// answers (within 2 s to connect, 5 s to read) or the answer is not HTTP.
pub fn http_request(address: &str, path: &str) -> Option<Response> {
    let addr: SocketAddr = address.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// `GET http://address/path`: the status and body, or `None` when nothing
/// answers.
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    let response = http_request(address, path)?;
    Some((
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
    ))
}
