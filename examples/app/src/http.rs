//! Just enough HTTP/1.x for this app, written by hand because the binary may
//! depend on std and libc only.
//!
//! Everything here works on bytes and strings, not sockets, so it is unit
//! tested directly; [`crate::server`] does the reading and writing. What is
//! supported is what a deploy tool, a load balancer or `curl` sends:
//! HTTP/1.0 and HTTP/1.1 requests, keep-alive, pipelining, and request bodies
//! framed by `Content-Length` (read into memory up to [`MAX_BODY_LEN`],
//! skipped beyond). A body sent with `Transfer-Encoding` is not decoded; its
//! request is answered and the connection then closed, since the next
//! request cannot be found after it.

/// The most a request head (request line and headers) may take; a longer
/// one is answered with 431.
pub const MAX_HEAD_LEN: usize = 16 * 1024;

/// The most of a request body that is kept for the handler; a longer body
/// is still read (and discarded), so the connection stays usable.
pub const MAX_BODY_LEN: u64 = 64 * 1024;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// As sent, e.g. `GET`; methods are case-sensitive.
    pub method: String,
    /// Path and query as sent, e.g. `/?delay_ms=5`.
    pub target: String,
    pub version: Version,
    /// Name and value of each header in order, the value trimmed.
    pub headers: Vec<(String, String)>,
    /// How the body after the head is delimited.
    pub body: Body,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `Content-Length` bytes follow the head (`Length(0)` when there is no body).
    Length(u64),
    /// A `Transfer-Encoding` body, whose end this parser does not look for.
    Unframed,
}

/// The request body as the handler gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// The whole body (empty when there was none).
    Bytes(Vec<u8>),
    /// A `Content-Length` body longer than [`MAX_BODY_LEN`], discarded.
    TooLarge,
    /// A `Transfer-Encoding` body, not read (see [`Body::Unframed`]).
    Unframed,
}

impl Content {
    /// No body at all.
    pub const EMPTY: Content = Content::Bytes(Vec::new());
}

/// Why a request head was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not valid HTTP/1.x; the text says what was wrong.
    Malformed(&'static str),
    /// Well formed, but not HTTP/1.0 or HTTP/1.1.
    UnsupportedVersion,
}

impl ParseError {
    /// The status to answer with.
    pub fn status(self) -> Status {
        match self {
            ParseError::Malformed(_) => Status::BAD_REQUEST,
            ParseError::UnsupportedVersion => Status::HTTP_VERSION_NOT_SUPPORTED,
        }
    }

    /// A one-line explanation for the response body.
    pub fn reason(self) -> &'static str {
        match self {
            ParseError::Malformed(reason) => reason,
            ParseError::UnsupportedVersion => "only HTTP/1.0 and HTTP/1.1 are supported",
        }
    }
}

/// The length of the request head at the start of `buf`, through the blank
/// line that ends it, or `None` if that line has not arrived yet.
///
/// Lines may end in `\r\n` or a bare `\n`, and blank lines before the
/// request line are skipped, both as RFC 9112 allows.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    let mut seen_request_line = false;
    let mut line_start = 0;
    for (i, &byte) in buf.iter().enumerate() {
        if byte != b'\n' {
            continue;
        }
        let blank = matches!(&buf[line_start..i], b"" | b"\r");
        if blank && seen_request_line {
            return Some(i + 1);
        }
        seen_request_line |= !blank;
        line_start = i + 1;
    }
    None
}

/// Parses a complete request head, as delimited by [`head_len`].
pub fn parse_head(head: &[u8]) -> Result<Request, ParseError> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines().skip_while(|line| line.is_empty());
    let request_line = lines.next().ok_or(ParseError::Malformed("empty request"))?;
    let (method, target, version) = parse_request_line(request_line)?;
    let headers = lines
        .take_while(|line| !line.is_empty())
        .map(parse_header)
        .collect::<Result<Vec<_>, _>>()?;
    let body = body_framing(&headers)?;
    Ok(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        version,
        headers,
        body,
    })
}

fn parse_request_line(line: &str) -> Result<(&str, &str, Version), ParseError> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Malformed(
            "request line is not METHOD TARGET VERSION",
        ));
    };
    if !is_token(method) {
        return Err(ParseError::Malformed("invalid method"));
    }
    if target.is_empty() || target.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ParseError::Malformed("invalid request target"));
    }
    let version = match version {
        "HTTP/1.1" => Version::Http11,
        "HTTP/1.0" => Version::Http10,
        other if other.starts_with("HTTP/") => return Err(ParseError::UnsupportedVersion),
        _ => return Err(ParseError::Malformed("invalid HTTP version")),
    };
    Ok((method, target, version))
}

fn parse_header(line: &str) -> Result<(String, String), ParseError> {
    let (name, value) = line
        .split_once(':')
        .ok_or(ParseError::Malformed("header line without a colon"))?;
    // Whitespace before the colon, or a line folded onto the previous one,
    // makes the name invalid: RFC 9112 says to reject both.
    if !is_token(name) {
        return Err(ParseError::Malformed("invalid header name"));
    }
    let value = value.trim_matches([' ', '\t']);
    Ok((name.to_owned(), value.to_owned()))
}

fn body_framing(headers: &[(String, String)]) -> Result<Body, ParseError> {
    let named = |wanted: &'static str| {
        headers
            .iter()
            .filter(move |(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.as_str())
    };
    if named("transfer-encoding").next().is_some() {
        return Ok(Body::Unframed);
    }
    // Several Content-Length headers, or one with a list, must all agree.
    let mut length = None;
    for value in named("content-length").flat_map(|value| value.split(',')) {
        let value = value.trim();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::Malformed("invalid Content-Length"));
        }
        let value = value
            .parse::<u64>()
            .map_err(|_| ParseError::Malformed("invalid Content-Length"))?;
        if length.is_some_and(|length| length != value) {
            return Err(ParseError::Malformed("conflicting Content-Length headers"));
        }
        length = Some(value);
    }
    Ok(Body::Length(length.unwrap_or(0)))
}

/// Whether `s` is an RFC 9110 token, the syntax of methods and header names.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Request {
    /// The target without its query, e.g. `/` for `/?delay_ms=5`.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(&self.target, |(path, _)| path)
    }

    /// The target's query, e.g. `delay_ms=5` for `/?delay_ms=5`; empty if none.
    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, query)| query)
    }

    /// Whether the client lets the connection stay open after the response:
    /// HTTP/1.1 does unless it says `Connection: close`, HTTP/1.0 does not
    /// unless it says `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        let options: Vec<String> = self
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, value)| value.split(','))
            .map(|option| option.trim().to_ascii_lowercase())
            .collect();
        let has = |option: &str| options.iter().any(|o| o == option);
        match self.version {
            _ if has("close") => false,
            Version::Http11 => true,
            Version::Http10 => has("keep-alive"),
        }
    }
}

/// The value of the first `key` parameter in a query string such as
/// `a=1&delay_ms=5`, or `None` if there is none. A key without `=` has the
/// value `""`. Values are not percent-decoded; see [`form_decode`].
pub fn query_param<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(name, _)| *name == key)
        .map(|(_, value)| value)
}

/// Decodes a query-string value: `%XX` escapes and `+` for a space, as
/// HTML forms and `curl --data-urlencode` send them. `None` if an escape is
/// malformed or the result is not UTF-8.
pub fn form_decode(value: &str) -> Option<String> {
    percent_decode_with(value, true)
}

/// Decodes `%XX` escapes only (`+` stays a plus), as in the parts of a URL
/// such as a user name. `None` if an escape is malformed or the result is
/// not UTF-8.
pub fn percent_decode(value: &str) -> Option<String> {
    percent_decode_with(value, false)
}

fn percent_decode_with(value: &str, plus_is_space: bool) -> Option<String> {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                // from_str_radix would take a sign ("%+1").
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                decoded.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                decoded.push(b' ');
                i += 1;
            }
            byte => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

/// A response status code with its reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub reason: &'static str,
}

impl Status {
    pub const OK: Status = Status::new(200, "OK");
    pub const CREATED: Status = Status::new(201, "Created");
    pub const BAD_REQUEST: Status = Status::new(400, "Bad Request");
    pub const NOT_FOUND: Status = Status::new(404, "Not Found");
    pub const METHOD_NOT_ALLOWED: Status = Status::new(405, "Method Not Allowed");
    pub const REQUEST_TIMEOUT: Status = Status::new(408, "Request Timeout");
    pub const LENGTH_REQUIRED: Status = Status::new(411, "Length Required");
    pub const CONTENT_TOO_LARGE: Status = Status::new(413, "Content Too Large");
    pub const HEADERS_TOO_LARGE: Status = Status::new(431, "Request Header Fields Too Large");
    pub const INTERNAL_SERVER_ERROR: Status = Status::new(500, "Internal Server Error");
    pub const SERVICE_UNAVAILABLE: Status = Status::new(503, "Service Unavailable");
    pub const HTTP_VERSION_NOT_SUPPORTED: Status = Status::new(505, "HTTP Version Not Supported");

    const fn new(code: u16, reason: &'static str) -> Status {
        Status { code, reason }
    }
}

/// A response: plain text unless made with [`Response::json`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    /// `text/plain` or `application/json`.
    pub content_type: &'static str,
    /// Headers besides `Content-Type`, `Content-Length` and `Connection`,
    /// which [`Response::to_bytes`] adds.
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Response {
    pub fn text(status: Status, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A response whose body is JSON (UTF-8, as JSON always is).
    pub fn json(status: Status, body: impl Into<String>) -> Response {
        Response {
            content_type: "application/json",
            ..Response::text(status, body)
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The response as sent on the wire. `head_only` leaves out the body
    /// (for `HEAD`) but keeps its `Content-Length`; `keep_alive` picks the
    /// `Connection` header, which is always sent so clients need not guess.
    pub fn to_bytes(&self, head_only: bool, keep_alive: bool) -> Vec<u8> {
        let Status { code, reason } = self.status;
        let mut head = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let connection = if keep_alive { "keep-alive" } else { "close" };
        head.push_str(&format!("Connection: {connection}\r\n\r\n"));
        let mut bytes = head.into_bytes();
        if !head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Request, ParseError> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn head_len_finds_the_blank_line() {
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Some(27));
        assert_eq!(head_len(b"GET / HTTP/1.1\r\n\r\nGET /next"), Some(18));
        assert_eq!(head_len(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: x\r\n\r"), None);
        assert_eq!(head_len(b""), None);
    }

    #[test]
    fn head_len_skips_leading_blank_lines() {
        assert_eq!(head_len(b"\r\n\r\n"), None);
        assert_eq!(head_len(b"\r\nGET / HTTP/1.1\r\n\r\n"), Some(20));
    }

    #[test]
    fn parses_a_request() {
        let request =
            parse("GET /healthz?x=1 HTTP/1.1\r\nHost: example\r\nX-Thing:  a b \r\n\r\n").unwrap();
        assert_eq!(request.method, "GET");
        assert_eq!(request.target, "/healthz?x=1");
        assert_eq!(request.path(), "/healthz");
        assert_eq!(request.query(), "x=1");
        assert_eq!(request.version, Version::Http11);
        assert_eq!(
            request.headers,
            [
                ("Host".into(), "example".into()),
                ("X-Thing".into(), "a b".into())
            ]
        );
        assert_eq!(request.body, Body::Length(0));
    }

    #[test]
    fn parses_leading_blank_lines_and_bare_newlines() {
        let request = parse("\r\nHEAD / HTTP/1.0\nHost: x\n\n").unwrap();
        assert_eq!(request.method, "HEAD");
        assert_eq!(request.version, Version::Http10);
        assert_eq!(request.headers, [("Host".into(), "x".into())]);
    }

    #[test]
    fn rejects_malformed_heads() {
        for head in [
            "\r\n",
            "GET /\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1 extra\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            "GET / FTP/1.0\r\n\r\n",
            "GET / HTTP/1.1\r\nNo colon\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            let result = parse(head);
            assert!(
                matches!(result, Err(ParseError::Malformed(_))),
                "{head:?} gave {result:?}"
            );
        }
        assert_eq!(
            parse("GET / HTTP/2.0\r\n\r\n"),
            Err(ParseError::UnsupportedVersion)
        );
    }

    #[test]
    fn body_framing() {
        let body = |headers: &str| {
            parse(&format!("POST / HTTP/1.1\r\n{headers}\r\n"))
                .unwrap()
                .body
        };
        assert_eq!(body(""), Body::Length(0));
        assert_eq!(body("Content-Length: 12\r\n"), Body::Length(12));
        assert_eq!(
            body("content-length: 5\r\nContent-Length: 5\r\n"),
            Body::Length(5)
        );
        assert_eq!(body("Content-Length: 7, 7\r\n"), Body::Length(7));
        assert_eq!(body("Transfer-Encoding: chunked\r\n"), Body::Unframed);
        assert_eq!(
            body("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"),
            Body::Unframed
        );
    }

    #[test]
    fn keep_alive_follows_version_and_connection_header() {
        let keep_alive = |head: &str| parse(head).unwrap().keep_alive();
        assert!(keep_alive("GET / HTTP/1.1\r\n\r\n"));
        assert!(!keep_alive("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!keep_alive(
            "GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n"
        ));
        assert!(!keep_alive("GET / HTTP/1.0\r\n\r\n"));
        assert!(keep_alive(
            "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
        ));
        assert!(!keep_alive(
            "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"
        ));
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param("delay_ms=5", "delay_ms"), Some("5"));
        assert_eq!(
            query_param("a=1&delay_ms=5&delay_ms=9", "delay_ms"),
            Some("5")
        );
        assert_eq!(query_param("delay_ms", "delay_ms"), Some(""));
        assert_eq!(query_param("delay_ms=", "delay_ms"), Some(""));
        assert_eq!(query_param("x_delay_ms=5", "delay_ms"), None);
        assert_eq!(query_param("", "delay_ms"), None);
        assert_eq!(query_param("a=b=c", "a"), Some("b=c"));
    }

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("plain"), Some("plain".into()));
        assert_eq!(form_decode("a+b%20c"), Some("a b c".into()));
        assert_eq!(form_decode("%2B%25%26%3D"), Some("+%&=".into()));
        assert_eq!(form_decode("caf%C3%A9"), Some("café".into()));
        assert_eq!(form_decode("%e6%97%a5"), Some("日".into()));
        assert_eq!(form_decode("it%27s"), Some("it's".into()));
        assert_eq!(form_decode(""), Some(String::new()));
        // Malformed escapes and bytes that are not UTF-8.
        for bad in ["%", "%4", "%zz", "%+1", "a%-1", "%C3", "%FF"] {
            assert_eq!(form_decode(bad), None, "{bad:?}");
        }
        assert_eq!(percent_decode("a+b%2Fc"), Some("a+b/c".into()));
    }

    #[test]
    fn target_without_query() {
        let request = parse("GET /? HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((request.path(), request.query()), ("/", ""));
        let request = parse("GET /healthz HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((request.path(), request.query()), ("/healthz", ""));
    }

    #[test]
    fn serialises_responses() {
        let response = Response::text(Status::OK, "v1\n").with_header("X-App-Version", "v1");
        assert_eq!(
            String::from_utf8(response.to_bytes(false, true)).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\
             X-App-Version: v1\r\nConnection: keep-alive\r\n\r\nv1\n"
        );
        assert_eq!(
            String::from_utf8(response.to_bytes(true, false)).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\
             X-App-Version: v1\r\nConnection: close\r\n\r\n"
        );
        let json = Response::json(Status::CREATED, "{}");
        assert_eq!(
            String::from_utf8(json.to_bytes(false, true)).unwrap(),
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
             Connection: keep-alive\r\n\r\n{}"
        );
    }
}
