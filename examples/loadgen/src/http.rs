//! The client half of HTTP/1.1, written by hand because the crate depends on
//! std (and libc) only.
//!
//! A load generator that is meant to prove "no request failed" must know
//! exactly where each response ends: a body cut short has to be told apart
//! from a complete one, and a keep-alive connection may only be reused when
//! the response said it could be and nothing is left over. So responses are
//! framed as RFC 9112 says: `Content-Length`, `Transfer-Encoding: chunked`,
//! or (neither) "until the server closes", which ends the connection; 1xx
//! interim responses are skipped; 204 and 304 have no body.
//!
//! [`ResponseReader`] works on any [`Read`], so it is unit tested on byte
//! slices; [`crate::worker`] gives it a socket with a deadline.

use std::fmt;
use std::io::{self, Read};

use crate::config::Url;

/// The most a response head (status line and headers) may take.
pub const MAX_HEAD_LEN: usize = 64 * 1024;
/// The most a chunk-size or trailer line may take.
const MAX_LINE_LEN: usize = 4096;
/// How much of the body is kept: enough for its first line, the version.
pub const BODY_PREFIX_LEN: usize = 256;
/// The longest version label reported; longer ones are cut.
const MAX_VERSION_LEN: usize = 64;
/// The label of a 2xx response that names no version.
pub const NO_VERSION: &str = "(none)";

/// The bytes of a `GET` request for `url`. With `close`, the request asks
/// the server to close the connection after answering.
pub fn request(url: &Url, close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: zdd-loadgen/{}\r\nAccept: */*\r\n{connection}\r\n",
        url.target,
        url.authority,
        env!("CARGO_PKG_VERSION"),
    )
    .into_bytes()
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Whether another request may be sent on the connection: the server
    /// did not ask to close it, and the body did not run until the close.
    pub reusable: bool,
    /// The `X-App-Version` header, trimmed, if present.
    pub version_header: Option<String>,
    /// The first [`BODY_PREFIX_LEN`] bytes of the (de-chunked) body.
    pub body_prefix: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx, the one thing that counts as success.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Which version of the app answered: the `X-App-Version` header if it
    /// is there and not empty, else the first line of the body, trimmed and
    /// cut to 64 characters; [`NO_VERSION`] if both are empty.
    pub fn version(&self) -> String {
        let from_body = || {
            let line = self
                .body_prefix
                .split(|&b| b == b'\n')
                .next()
                .unwrap_or_default();
            String::from_utf8_lossy(line).trim().to_owned()
        };
        let version = match &self.version_header {
            Some(header) if !header.is_empty() => header.clone(),
            _ => from_body(),
        };
        if version.is_empty() {
            return NO_VERSION.to_owned();
        }
        match version.char_indices().nth(MAX_VERSION_LEN) {
            Some((cut, _)) => version[..cut].to_owned(),
            None => version,
        }
    }
}

/// Why no complete response was read.
#[derive(Debug)]
pub enum Cause {
    /// The read failed (reset, timeout, ...).
    Io(io::Error),
    /// The connection was closed before the response was complete.
    Eof,
    /// The bytes are not an HTTP/1.x response; the text says why.
    Malformed(String),
}

/// A failed [`ResponseReader::read_response`].
#[derive(Debug)]
pub struct ReadError {
    pub cause: Cause,
    /// Bytes of this response that had arrived before the failure.
    pub received: u64,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Cause::Io(error) => write!(f, "{error}")?,
            Cause::Eof if self.received == 0 => {
                return write!(f, "connection closed before any response byte")
            }
            Cause::Eof => write!(f, "connection closed before the end of the response")?,
            Cause::Malformed(why) => write!(f, "bad response: {why}")?,
        }
        write!(f, " (after {} response bytes)", self.received)
    }
}

/// Reads responses from a connection, one after the other, keeping bytes
/// that arrive early in a buffer.
#[derive(Debug)]
pub struct ResponseReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Bytes read from `inner` since the current response began.
    received: u64,
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What the head of a response says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    status: u16,
    http10: bool,
    content_length: Option<u64>,
    /// `Some(true)` if the last transfer coding is chunked, `Some(false)`
    /// for any other coding.
    chunked: Option<bool>,
    close: bool,
    keep_alive: bool,
    version_header: Option<String>,
}

impl<R: Read> ResponseReader<R> {
    pub fn new(inner: R) -> ResponseReader<R> {
        ResponseReader {
            inner,
            buf: vec![0; 8 * 1024],
            start: 0,
            end: 0,
            received: 0,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The connection, without the bytes buffered from it.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Whether bytes beyond the last response have arrived. Nothing may
    /// follow a response the client did not ask for, so a connection with
    /// leftovers is not reused.
    pub fn has_buffered(&self) -> bool {
        self.start < self.end
    }

    /// Reads one whole response, skipping 1xx interim responses.
    pub fn read_response(&mut self) -> Result<Response, ReadError> {
        self.received = 0;
        loop {
            let head = self.read_head()?;
            if head.status == 101 {
                return Err(self.malformed("101 Switching Protocols to a GET".to_owned()));
            }
            if head.status < 200 {
                continue;
            }
            let framing = if head.status == 204 || head.status == 304 {
                Framing::None
            } else {
                match (head.chunked, head.content_length) {
                    (Some(true), _) => Framing::Chunked,
                    (Some(false), _) => Framing::UntilClose,
                    (None, Some(length)) => Framing::Length(length),
                    (None, None) => Framing::UntilClose,
                }
            };
            let mut body_prefix = Vec::new();
            match framing {
                Framing::None => {}
                Framing::Length(length) => self.read_exact_body(length, &mut body_prefix)?,
                Framing::Chunked => self.read_chunked_body(&mut body_prefix)?,
                Framing::UntilClose => self.read_body_until_close(&mut body_prefix)?,
            }
            let persistent = if head.http10 {
                head.keep_alive && !head.close
            } else {
                !head.close
            };
            return Ok(Response {
                status: head.status,
                reusable: persistent && framing != Framing::UntilClose,
                version_header: head.version_header,
                body_prefix,
            });
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    fn fill(&mut self) -> Result<usize, ReadError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // Only a head or a line grows the buffer, and both are bounded
            // by their callers.
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    self.received += n as u64;
                    return Ok(n);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    return Err(ReadError {
                        cause: Cause::Io(error),
                        received: self.received,
                    })
                }
            }
        }
    }

    /// [`Self::fill`], where the end of the stream is an error.
    fn fill_some(&mut self) -> Result<(), ReadError> {
        match self.fill()? {
            0 => Err(ReadError {
                cause: Cause::Eof,
                received: self.received,
            }),
            _ => Ok(()),
        }
    }

    fn malformed(&self, why: String) -> ReadError {
        ReadError {
            cause: Cause::Malformed(why),
            received: self.received,
        }
    }

    fn read_head(&mut self) -> Result<Head, ReadError> {
        let mut searched = 0;
        loop {
            let unread = &self.buf[self.start..self.end];
            if let Some(len) = head_len(unread, searched) {
                let head = parse_head(&unread[..len]).map_err(|why| self.malformed(why))?;
                self.start += len;
                return Ok(head);
            }
            if unread.len() > MAX_HEAD_LEN {
                return Err(self.malformed(format!("head longer than {MAX_HEAD_LEN} bytes")));
            }
            // The end of the head cannot start before the last two bytes
            // already searched.
            searched = unread.len().saturating_sub(2);
            self.fill_some()?;
        }
    }

    /// Reads a line (of a chunked body) without its line ending.
    fn read_line(&mut self) -> Result<String, ReadError> {
        loop {
            let unread = &self.buf[self.start..self.end];
            if let Some(newline) = unread.iter().position(|&b| b == b'\n') {
                let line = unread[..newline]
                    .strip_suffix(b"\r")
                    .unwrap_or(&unread[..newline]);
                let line = String::from_utf8_lossy(line).into_owned();
                self.start += newline + 1;
                return Ok(line);
            }
            if unread.len() > MAX_LINE_LEN {
                return Err(self.malformed("chunk line too long".to_owned()));
            }
            self.fill_some()?;
        }
    }

    /// Consumes up to `max` buffered bytes, keeping the start of the body.
    fn take(&mut self, max: u64, body_prefix: &mut Vec<u8>) -> u64 {
        let take = (self.end - self.start).min(usize::try_from(max).unwrap_or(usize::MAX));
        let keep = take.min(BODY_PREFIX_LEN.saturating_sub(body_prefix.len()));
        body_prefix.extend_from_slice(&self.buf[self.start..self.start + keep]);
        self.start += take;
        take as u64
    }

    fn read_exact_body(&mut self, length: u64, body_prefix: &mut Vec<u8>) -> Result<(), ReadError> {
        let mut remaining = length;
        while remaining > 0 {
            if !self.has_buffered() {
                self.fill_some()?;
            }
            remaining -= self.take(remaining, body_prefix);
        }
        Ok(())
    }

    fn read_body_until_close(&mut self, body_prefix: &mut Vec<u8>) -> Result<(), ReadError> {
        loop {
            self.take(u64::MAX, body_prefix);
            if self.fill()? == 0 {
                return Ok(());
            }
        }
    }

    fn read_chunked_body(&mut self, body_prefix: &mut Vec<u8>) -> Result<(), ReadError> {
        loop {
            let line = self.read_line()?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| self.malformed(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, up to a blank line.
                while !self.read_line()?.trim().is_empty() {}
                return Ok(());
            }
            self.read_exact_body(size, body_prefix)?;
            let end = self.read_line()?;
            if !end.is_empty() {
                return Err(self.malformed("chunk longer than its size".to_owned()));
            }
        }
    }
}

/// The length of the head at the start of `buf`, through the blank line
/// that ends it (`\r\n` or bare `\n` line endings), looking for the blank
/// line from `from` on.
fn head_len(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        let newline = i + buf.get(i..)?.iter().position(|&b| b == b'\n')?;
        let after = &buf[newline + 1..];
        if after.starts_with(b"\n") {
            return Some(newline + 2);
        }
        if after.starts_with(b"\r\n") {
            return Some(newline + 3);
        }
        i = newline + 1;
    }
}

/// Parses a response head (status line and headers, through the blank line).
fn parse_head(head: &[u8]) -> Result<Head, String> {
    let text = std::str::from_utf8(head).map_err(|_| "head is not UTF-8".to_owned())?;
    let mut lines = text.lines();
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let http10 = match parts.next() {
        Some("HTTP/1.0") => true,
        Some(version) if version.starts_with("HTTP/1.") => false,
        _ => return Err(format!("bad status line {status_line:?}")),
    };
    let status = parts
        .next()
        .filter(|code| code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|&code| code >= 100)
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut parsed = Head {
        status,
        http10,
        content_length: None,
        chunked: None,
        close: false,
        keep_alive: false,
        version_header: None,
    };
    for line in lines.take_while(|line| !line.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .filter(|(name, _)| !name.is_empty() && !name.contains([' ', '\t']))
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length = value
                .parse::<u64>()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
            if parsed
                .content_length
                .is_some_and(|earlier| earlier != length)
            {
                return Err("conflicting Content-Length headers".to_owned());
            }
            parsed.content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or_default().trim();
            parsed.chunked = Some(last.eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                parsed.close |= token.eq_ignore_ascii_case("close");
                parsed.keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("x-app-version") {
            parsed.version_header = Some(value.to_owned());
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out its bytes `step` at a time, as a slow network would.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    /// Reads every response in `bytes`, delivered `step` bytes at a time.
    fn read_all(bytes: &[u8], step: usize) -> (Vec<Response>, ReadError) {
        let mut reader = ResponseReader::new(Trickle { bytes, step });
        let mut responses = Vec::new();
        loop {
            match reader.read_response() {
                Ok(response) => responses.push(response),
                Err(error) => return (responses, error),
            }
        }
    }

    /// The one response in `bytes`, whatever the read size.
    fn one(bytes: &[u8]) -> Response {
        let mut first = None;
        for step in [1, 2, 7, 4096] {
            let (mut responses, end) = read_all(bytes, step);
            assert_eq!(responses.len(), 1, "step {step}");
            assert!(matches!(end.cause, Cause::Eof), "step {step}: {end:?}");
            assert_eq!(end.received, 0);
            let response = responses.pop().unwrap();
            if let Some(first) = &first {
                assert_eq!(first, &response, "step {step}");
            }
            first = Some(response);
        }
        first.unwrap()
    }

    /// The error reading the (only) response in `bytes`.
    fn failure(bytes: &[u8]) -> ReadError {
        let (responses, error) = read_all(bytes, 3);
        assert!(responses.is_empty(), "{responses:?}");
        error
    }

    #[test]
    fn content_length() {
        let response = one(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Other: a:b\r\n\r\nv1\n");
        assert_eq!(response.status, 200);
        assert!(response.reusable && response.is_success());
        assert_eq!(response.body_prefix, b"v1\n");
        assert_eq!(response.version(), "v1");
    }

    #[test]
    fn several_responses_on_one_connection() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nv1\n\
                      HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n\
                      HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nv2";
        for step in [1, 5, 1000] {
            let (responses, end) = read_all(bytes, step);
            let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
            assert_eq!(statuses, [200, 503, 200]);
            assert!(!responses[1].is_success());
            assert!(responses[1].reusable);
            assert!(!responses[2].reusable);
            assert_eq!(responses[2].version(), "v2");
            assert!(matches!(end.cause, Cause::Eof) && end.received == 0);
        }
    }

    #[test]
    fn version_header_wins_over_body() {
        let response =
            one(b"HTTP/1.1 200 OK\r\nx-app-version:  v7 \r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(response.version(), "v7");
        let response =
            one(b"HTTP/1.1 200 OK\r\nX-App-Version:\r\nContent-Length: 7\r\n\r\n v3\r\nxx");
        assert_eq!(response.version(), "v3");
        assert_eq!(
            one(b"HTTP/1.1 204 No Content\r\n\r\n").version(),
            NO_VERSION
        );
        let long = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}",
            "é".repeat(50)
        );
        assert_eq!(one(long.as_bytes()).version().chars().count(), 50);
        let longer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}",
            "x".repeat(100)
        );
        assert_eq!(one(longer.as_bytes()).version(), "x".repeat(64));
    }

    #[test]
    fn chunked() {
        let response = one(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
                             3;ext=1\r\nv2\n\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\n",
        );
        assert_eq!(response.body_prefix, b"v2\n0123456789abcdef");
        assert!(response.reusable);
        assert_eq!(response.version(), "v2");
        // Transfer-Encoding wins over Content-Length.
        let response = one(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\
                             Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n");
        assert_eq!(response.body_prefix, b"x");
    }

    #[test]
    fn body_until_close_ends_the_connection() {
        let (responses, end) = read_all(b"HTTP/1.1 200 OK\r\n\r\nv1\nmore", 2);
        assert_eq!(responses.len(), 1);
        assert!(!responses[0].reusable);
        assert_eq!(responses[0].body_prefix, b"v1\nmore");
        assert!(matches!(end.cause, Cause::Eof));
    }

    #[test]
    fn keep_alive_rules() {
        let http10 = one(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(!http10.reusable);
        let http10 = one(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n");
        assert!(http10.reusable);
        let close =
            one(b"HTTP/1.1 200 OK\r\nConnection: upgrade, CLOSE\r\nContent-Length: 0\r\n\r\n");
        assert!(!close.reusable);
    }

    #[test]
    fn bare_newlines_and_interim_responses() {
        let response = one(b"HTTP/1.1 100 Continue\n\nHTTP/1.1 200 OK\nContent-Length: 2\n\nok");
        assert_eq!(response.status, 200);
        assert_eq!(response.body_prefix, b"ok");
        let response = one(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n");
        assert_eq!(response.status, 304);
        assert!(response.body_prefix.is_empty());
    }

    #[test]
    fn large_bodies_keep_only_their_start() {
        let mut bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
        bytes.extend(vec![b'a'; 100_000]);
        let response = one(&bytes);
        assert_eq!(response.body_prefix.len(), BODY_PREFIX_LEN);
    }

    #[test]
    fn cut_short() {
        let error = failure(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nv1\n");
        assert!(matches!(error.cause, Cause::Eof));
        assert_eq!(error.received, 42);
        let error = failure(b"HTTP/1.1 200 OK\r\nContent-Le");
        assert!(matches!(error.cause, Cause::Eof));
        assert_eq!(error.received, 27);
        let error = failure(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab");
        assert!(matches!(error.cause, Cause::Eof));
        let error = failure(b"");
        assert!(matches!(error.cause, Cause::Eof));
        assert_eq!(error.received, 0);
        assert_eq!(
            error.to_string(),
            "connection closed before any response byte"
        );
    }

    #[test]
    fn malformed() {
        for bytes in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            let error = failure(bytes);
            assert!(
                matches!(error.cause, Cause::Malformed(_)),
                "{:?}: {error:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        huge.extend(vec![b'a'; MAX_HEAD_LEN + 10]);
        let error = failure(&huge);
        assert!(matches!(error.cause, Cause::Malformed(_)));
    }

    #[test]
    fn leftover_bytes_are_seen() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxEXTRA";
        let mut reader = ResponseReader::new(&bytes[..]);
        reader.read_response().unwrap();
        assert!(reader.has_buffered());
    }

    #[test]
    fn head_len_finds_the_blank_line() {
        assert_eq!(head_len(b"a\r\n\r\nrest", 0), Some(5));
        assert_eq!(head_len(b"a\n\nrest", 0), Some(3));
        assert_eq!(head_len(b"a\r\nb\r\n", 0), None);
        assert_eq!(head_len(b"a\r\nb\r\n\r", 0), None);
        assert_eq!(head_len(b"a\r\nb\r\n\r\n", 4), Some(8));
    }

    #[test]
    fn requests() {
        let url = Url::parse("http://127.0.0.1:8080/x?y").unwrap();
        let text = String::from_utf8(request(&url, true)).unwrap();
        assert!(text.starts_with("GET /x?y HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(text.ends_with("Connection: close\r\n\r\n"));
        let text = String::from_utf8(request(&url, false)).unwrap();
        assert!(!text.contains("Connection"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
