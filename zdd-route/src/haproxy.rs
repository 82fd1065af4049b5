//! A small client for HAProxy's Runtime API (the `stats socket`).
//!
//! The API is used in its non-interactive mode: one connection per command,
//! `command\n` written, the answer read until HAProxy closes the
//! connection. No session state is kept between commands, so a reload of
//! HAProxy between two commands, or another client on the same socket,
//! cannot leave this one confused about which answer belongs to what.
//!
//! [`Runtime::command`] returns the raw answer; HAProxy answers most
//! commands with text, success included (`New server registered.`), so
//! judging an answer is the caller's business, helped by
//! [`Runtime::expect`]. The two listings zdd needs are parsed by their
//! header names, never by position, because HAProxy appends columns from
//! one version to the next:
//!
//! - [`Runtime::servers_state`]: `show servers state BACKEND`, the
//!   configuration side (name, address, port, admin state);
//! - [`Runtime::stats`]: `show stat BACKEND 4 -1`, the traffic side
//!   (current sessions, status as the health check sees it).

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// How long one command may take, connect, write and read together (each
/// phase is bounded by it). A Runtime API command answers in microseconds;
/// this only guards against a socket that accepts and never answers.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the Runtime API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket path (`stats socket /run/haproxy/admin.sock`).
    Unix(PathBuf),
    /// `host:port` (`stats socket 127.0.0.1:9999`).
    Tcp(String),
}

impl Endpoint {
    /// Reads `/run/haproxy/admin.sock`, `admin.sock` (unix) or
    /// `127.0.0.1:9999`, `[::1]:9999`, `lb.internal:9999` (TCP). Anything
    /// with a `/`, or without a numeric `:port` at its end, is a path.
    pub fn parse(text: &str) -> Endpoint {
        if text.contains('/') {
            return Endpoint::Unix(PathBuf::from(text));
        }
        match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Endpoint::Tcp(text.to_owned())
            }
            _ => Endpoint::Unix(PathBuf::from(text)),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp(address) => write!(f, "{address}"),
        }
    }
}

/// Why a Runtime API command did not give what was asked.
#[derive(Debug)]
pub enum RuntimeError {
    /// The socket could not be reached at all.
    Connect {
        endpoint: Endpoint,
        source: io::Error,
    },
    /// The connection broke while sending a command or reading its answer.
    Io {
        endpoint: Endpoint,
        command: String,
        source: io::Error,
    },
    /// HAProxy answered something other than what the command succeeds with.
    Refused { command: String, answer: String },
    /// `show servers state` / `show stat` for a backend HAProxy does not have.
    NoSuchBackend { backend: String },
}

impl RuntimeError {
    /// A sentence about a connection failure that says what to check.
    fn connect_hint(endpoint: &Endpoint, source: &io::Error) -> String {
        match (endpoint, source.kind()) {
            (Endpoint::Unix(path), io::ErrorKind::NotFound) => format!(
                "the HAProxy Runtime API socket {} does not exist (is HAProxy running, with a `stats socket` line?)",
                path.display()
            ),
            (Endpoint::Unix(path), io::ErrorKind::PermissionDenied) => format!(
                "no permission to use the HAProxy Runtime API socket {} (see the `mode`/`user` of its `stats socket` line)",
                path.display()
            ),
            (_, io::ErrorKind::ConnectionRefused) => format!(
                "nothing answers at the HAProxy Runtime API socket {endpoint} (connection refused; is HAProxy running?)"
            ),
            _ => format!("cannot connect to the HAProxy Runtime API at {endpoint}: {source}"),
        }
    }
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Connect { endpoint, source } => {
                write!(f, "{}", RuntimeError::connect_hint(endpoint, source))
            }
            RuntimeError::Io {
                endpoint,
                command,
                source,
            } => write!(
                f,
                "HAProxy Runtime API at {endpoint}: `{command}` failed: {source}"
            ),
            RuntimeError::Refused { command, answer } => {
                let answer = answer.trim();
                let answer = if answer.is_empty() {
                    "(an empty answer)"
                } else {
                    answer
                };
                write!(f, "HAProxy refused `{command}`: {answer}")
            }
            RuntimeError::NoSuchBackend { backend } => {
                write!(f, "HAProxy has no backend `{backend}`")
            }
        }
    }
}

impl std::error::Error for RuntimeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RuntimeError::Connect { source, .. } | RuntimeError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// A client for one HAProxy's Runtime API.
#[derive(Debug, Clone)]
pub struct Runtime {
    endpoint: Endpoint,
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Runtime {
    pub fn new(endpoint: Endpoint) -> Runtime {
        Runtime { endpoint }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn connect(&self) -> Result<Stream> {
        let connect_error = |source| RuntimeError::Connect {
            endpoint: self.endpoint.clone(),
            source,
        };
        let stream = match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = UnixStream::connect(path).map_err(connect_error)?;
                stream
                    .set_read_timeout(Some(IO_TIMEOUT))
                    .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
                    .map_err(connect_error)?;
                Stream::Unix(stream)
            }
            Endpoint::Tcp(address) => {
                let mut last = io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("`{address}` resolves to no address"),
                );
                let addresses = address.to_socket_addrs().map_err(connect_error)?;
                let mut connected = None;
                for candidate in addresses {
                    match TcpStream::connect_timeout(&candidate, IO_TIMEOUT) {
                        Ok(stream) => {
                            connected = Some(stream);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                let stream = connected.ok_or_else(|| connect_error(last))?;
                stream
                    .set_read_timeout(Some(IO_TIMEOUT))
                    .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
                    .map_err(connect_error)?;
                Stream::Tcp(stream)
            }
        };
        Ok(stream)
    }

    /// Sends one command and returns HAProxy's whole answer, as it came.
    ///
    /// A command is one line: a newline or a `;` (which HAProxy reads as
    /// a command separator) in it is refused here, before anything is sent.
    pub fn command(&self, command: &str) -> Result<String> {
        if command.contains(['\n', '\r', ';']) {
            return Err(RuntimeError::Refused {
                command: command.to_owned(),
                answer: "(not sent: a command may not contain a newline or `;`)".into(),
            });
        }
        let io_error = |source| RuntimeError::Io {
            endpoint: self.endpoint.clone(),
            command: command.to_owned(),
            source,
        };
        let line = format!("{command}\n");
        let mut answer = Vec::new();
        match self.connect()? {
            Stream::Unix(mut s) => {
                s.write_all(line.as_bytes()).map_err(io_error)?;
                s.read_to_end(&mut answer).map_err(io_error)?;
            }
            Stream::Tcp(mut s) => {
                s.write_all(line.as_bytes()).map_err(io_error)?;
                s.read_to_end(&mut answer).map_err(io_error)?;
            }
        }
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    /// Sends `command` and returns its answer, trimmed, if it is one of
    /// `accepted` (`""` for the commands that answer nothing on success);
    /// any other answer is [`RuntimeError::Refused`].
    pub fn expect(&self, command: &str, accepted: &[&str]) -> Result<String> {
        let answer = self.command(command)?;
        let trimmed = answer.trim();
        if accepted.contains(&trimmed) {
            Ok(trimmed.to_owned())
        } else {
            Err(RuntimeError::Refused {
                command: command.to_owned(),
                answer,
            })
        }
    }

    /// `show cli level`: `admin`, `operator` or `user`; `None` from an
    /// HAProxy too old to say.
    pub fn cli_level(&self) -> Result<Option<String>> {
        let answer = self.command("show cli level")?;
        let level = answer.trim();
        Ok(match level {
            "admin" | "operator" | "user" => Some(level.to_owned()),
            _ => None,
        })
    }

    /// The servers of `backend`, from `show servers state BACKEND`.
    pub fn servers_state(&self, backend: &str) -> Result<Vec<ServerState>> {
        let command = format!("show servers state {backend}");
        let answer = self.command(&command)?;
        if answer.trim_start().starts_with("Can't find backend") {
            return Err(RuntimeError::NoSuchBackend {
                backend: backend.to_owned(),
            });
        }
        parse_servers_state(&answer).map_err(|problem| RuntimeError::Refused {
            command,
            answer: format!("{} ({problem})", answer.trim()),
        })
    }

    /// The servers' traffic and check figures of `backend`, from
    /// `show stat BACKEND 4 -1` (4: servers only; -1: all of them).
    pub fn stats(&self, backend: &str) -> Result<Vec<ServerStat>> {
        let command = format!("show stat {backend} 4 -1");
        let answer = self.command(&command)?;
        if answer.trim_start().starts_with("No such proxy") {
            return Err(RuntimeError::NoSuchBackend {
                backend: backend.to_owned(),
            });
        }
        parse_stats(&answer).map_err(|problem| RuntimeError::Refused {
            command,
            answer: format!("{} ({problem})", answer.trim()),
        })
    }
}

/// One server as `show servers state` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub backend: String,
    pub name: String,
    /// `srv_addr`: the IP address HAProxy connects to.
    pub addr: String,
    /// `srv_port`; 0 when the server has none (it follows the client's).
    pub port: u16,
    /// `srv_op_state`: 0 stopped, 1 starting, 2 running, 3 stopping.
    pub op_state: u8,
    /// `srv_admin_state`: bit flags (maintenance 0x01/0x02/0x04/0x20/0x40,
    /// drain 0x08/0x10).
    pub admin_state: u8,
}

impl ServerState {
    /// Whether this server sends to `address`: same IP and port.
    pub fn has_address(&self, address: &SocketAddr) -> bool {
        self.port == address.port()
            && match self.addr.parse::<IpAddr>() {
                Ok(ip) => ip == address.ip(),
                Err(_) => false,
            }
    }

    /// Whether an admin state puts it in maintenance (no traffic at all).
    pub fn in_maintenance(&self) -> bool {
        self.admin_state & 0x67 != 0
    }

    /// Whether it is being drained (no new traffic).
    pub fn draining(&self) -> bool {
        self.admin_state & 0x18 != 0
    }
}

/// One server's line of `show stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStat {
    pub backend: String,
    pub name: String,
    /// `qcur`: requests queued for this server.
    pub qcur: u64,
    /// `scur`: sessions it is serving now.
    pub scur: u64,
    /// `status`: `UP`, `DOWN`, `DRAIN`, `MAINT`, `no check`, or a
    /// transition such as `UP 1/2` (up, going down) or `DOWN 1/2`.
    pub status: String,
    /// `check_status`: `L7OK`, `L4CON`, `INI` (no check ran yet), …
    pub check_status: String,
    /// `stot`: sessions it has served in all.
    pub stot: u64,
    /// `hrsp_5xx`: HTTP responses with a 5xx status it answered.
    pub hrsp_5xx: u64,
    /// `eresp`: responses that failed (the server closed or timed out).
    pub eresp: u64,
    /// `addr`: `ip:port` it sends to (empty from an HAProxy that does not
    /// say).
    pub addr: String,
    /// `weight`: its effective weight (0 when the column is missing).
    pub weight: u64,
}

impl ServerStat {
    /// HAProxy's own health check says it is up, with no failure pending.
    pub fn is_up(&self) -> bool {
        self.status == "UP"
    }

    /// HAProxy does not check it; it takes traffic while it is not in
    /// maintenance.
    pub fn is_unchecked(&self) -> bool {
        self.status == "no check"
    }
}

/// Parses `show servers state` output: a format version line (`1`), a
/// `# be_id be_name srv_id srv_name …` header, then one space-separated
/// line per server.
pub fn parse_servers_state(text: &str) -> std::result::Result<Vec<ServerState>, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut header = None;
    for line in lines.by_ref() {
        if let Some(names) = line.strip_prefix('#') {
            header = Some(names.split_whitespace().collect::<Vec<_>>());
            break;
        }
        if line.parse::<u32>().is_err() {
            return Err(format!("expected a format version line, got `{line}`"));
        }
    }
    let header = header.ok_or("no `# be_id be_name …` header line")?;
    let column = columns(
        &header,
        &[
            "be_name",
            "srv_name",
            "srv_addr",
            "srv_op_state",
            "srv_admin_state",
            "srv_port",
        ],
    )?;
    let mut servers = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let field = |name: &str| fields.get(column[name]).copied().unwrap_or("");
        servers.push(ServerState {
            backend: field("be_name").to_owned(),
            name: field("srv_name").to_owned(),
            addr: field("srv_addr").to_owned(),
            port: number(field("srv_port"), "srv_port", line)?,
            op_state: number(field("srv_op_state"), "srv_op_state", line)?,
            admin_state: number(field("srv_admin_state"), "srv_admin_state", line)?,
        });
    }
    Ok(servers)
}

/// Parses `show stat … 4 -1` CSV: a `# pxname,svname,…` header, then one
/// line per server (fields with commas come double-quoted).
pub fn parse_stats(text: &str) -> std::result::Result<Vec<ServerStat>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines
        .next()
        .and_then(|l| l.strip_prefix('#'))
        .ok_or("no `# pxname,svname,…` header line")?;
    let header = split_csv(header);
    let names: Vec<&str> = header.iter().map(|s| s.trim()).collect();
    let column = columns(
        &names,
        &["pxname", "svname", "qcur", "scur", "status", "check_status"],
    )?;
    // Counters an older HAProxy (or a test) may not list count as 0.
    let counter = |name: &str| names.iter().position(|&h| h == name);
    let (stot, hrsp_5xx, eresp) = (counter("stot"), counter("hrsp_5xx"), counter("eresp"));
    let addr = counter("addr");
    let weight = counter("weight");
    let mut servers = Vec::new();
    for line in lines {
        let fields = split_csv(line);
        let field = |name: &str| fields.get(column[name]).map(String::as_str).unwrap_or("");
        let count = |at: Option<usize>, name: &str| {
            let text = at.and_then(|i| fields.get(i)).map_or("", String::as_str);
            number_or_zero(text, name, line)
        };
        servers.push(ServerStat {
            backend: field("pxname").to_owned(),
            name: field("svname").to_owned(),
            qcur: number_or_zero(field("qcur"), "qcur", line)?,
            scur: number_or_zero(field("scur"), "scur", line)?,
            status: field("status").to_owned(),
            check_status: field("check_status").to_owned(),
            stot: count(stot, "stot")?,
            hrsp_5xx: count(hrsp_5xx, "hrsp_5xx")?,
            eresp: count(eresp, "eresp")?,
            addr: addr
                .and_then(|i| fields.get(i))
                .cloned()
                .unwrap_or_default(),
            weight: count(weight, "weight")?,
        });
    }
    Ok(servers)
}

fn columns<'a>(
    header: &[&str],
    wanted: &[&'a str],
) -> std::result::Result<HashMap<&'a str, usize>, String> {
    wanted
        .iter()
        .map(|&name| {
            header
                .iter()
                .position(|&h| h == name)
                .map(|i| (name, i))
                .ok_or_else(|| format!("no `{name}` column in the header"))
        })
        .collect()
}

fn number<T: std::str::FromStr>(
    text: &str,
    column: &str,
    line: &str,
) -> std::result::Result<T, String> {
    text.parse()
        .map_err(|_| format!("`{column}` is `{text}`, not a number, in `{line}`"))
}

fn number_or_zero(text: &str, column: &str, line: &str) -> std::result::Result<u64, String> {
    if text.is_empty() {
        Ok(0)
    } else {
        number(text, column, line)
    }
}

/// Splits one CSV line; a field in double quotes may hold commas and `""`.
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from Debian's haproxy 2.6.12: backend `web` with dynamic
    // servers api-1 (UP), api-0 (draining, one session), nocheck (no
    // `check`), down (refused connection) and maint (never enabled).
    const STATE_WEB: &str = include_str!("../testdata/servers-state-web.txt");
    const STAT_WEB: &str = include_str!("../testdata/stat-web.csv");
    // A backend with one server from the configuration file.
    const STATE_STATIC: &str = include_str!("../testdata/servers-state-static.txt");

    #[test]
    fn endpoints_are_paths_or_host_and_port() {
        assert_eq!(
            Endpoint::parse("/run/haproxy/admin.sock"),
            Endpoint::Unix("/run/haproxy/admin.sock".into())
        );
        assert_eq!(
            Endpoint::parse("admin.sock"),
            Endpoint::Unix("admin.sock".into())
        );
        assert_eq!(
            Endpoint::parse("127.0.0.1:9999"),
            Endpoint::Tcp("127.0.0.1:9999".into())
        );
        assert_eq!(
            Endpoint::parse("[::1]:9999"),
            Endpoint::Tcp("[::1]:9999".into())
        );
        assert_eq!(
            Endpoint::parse("lb.internal:9999"),
            Endpoint::Tcp("lb.internal:9999".into())
        );
        assert_eq!(
            Endpoint::parse("./x:9999"),
            Endpoint::Unix("./x:9999".into())
        );
        assert_eq!(
            Endpoint::parse("odd:name"),
            Endpoint::Unix("odd:name".into())
        );
    }

    #[test]
    fn parses_servers_state_by_header_names() {
        let servers = parse_servers_state(STATE_WEB).unwrap();
        let names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["api-1", "api-0", "nocheck", "down", "maint"]);
        let api1 = &servers[0];
        assert_eq!(api1.backend, "web");
        assert_eq!(api1.addr, "127.0.0.1");
        assert_eq!(api1.port, 18083);
        assert_eq!(api1.op_state, 2);
        assert!(!api1.in_maintenance() && !api1.draining());
        assert!(servers[1].draining());
        assert!(servers[4].in_maintenance());
        assert!(api1.has_address(&"127.0.0.1:18083".parse().unwrap()));
        assert!(!api1.has_address(&"127.0.0.1:18082".parse().unwrap()));
        assert!(!api1.has_address(&"127.0.0.2:18083".parse().unwrap()));
    }

    #[test]
    fn parses_a_config_file_server_and_an_empty_backend() {
        let servers = parse_servers_state(STATE_STATIC).unwrap();
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].name, "s1");
        assert_eq!(servers[0].port, 18081);
        let empty = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n\n";
        assert_eq!(parse_servers_state(empty).unwrap(), []);
    }

    #[test]
    fn columns_are_found_wherever_they_are() {
        let text = "1\n# srv_port srv_name be_name srv_admin_state srv_addr srv_op_state extra\n8080 a web 0 ::1 2 x\n";
        let servers = parse_servers_state(text).unwrap();
        assert_eq!(servers[0].name, "a");
        assert!(servers[0].has_address(&"[::1]:8080".parse().unwrap()));
    }

    #[test]
    fn error_answers_are_not_listings() {
        assert!(parse_servers_state("Can't find backend.\n\n").is_err());
        assert!(parse_servers_state("Permission denied\n\n").is_err());
        assert!(parse_stats("No such proxy.\n\n").is_err());
        assert!(parse_servers_state("1\n# be_name srv_name\n")
            .unwrap_err()
            .contains("srv_addr"));
    }

    #[test]
    fn parses_show_stat_csv_by_header_names() {
        let stats = parse_stats(STAT_WEB).unwrap();
        let by_name = |name: &str| stats.iter().find(|s| s.name == name).unwrap().clone();
        assert_eq!(stats.len(), 5);
        let api1 = by_name("api-1");
        assert_eq!(api1.backend, "web");
        assert_eq!((api1.status.as_str(), api1.scur), ("UP", 1));
        assert_eq!(api1.check_status, "L7OK");
        assert_eq!(api1.addr, "127.0.0.1:18083");
        assert!(api1.is_up());
        let api0 = by_name("api-0");
        assert_eq!((api0.status.as_str(), api0.scur), ("DRAIN", 1));
        assert!(!api0.is_up());
        assert!(by_name("nocheck").is_unchecked());
        assert_eq!(by_name("down").status, "DOWN");
        assert_eq!(by_name("down").check_status, "L4CON");
        assert_eq!(by_name("maint").status, "MAINT");
    }

    #[test]
    fn a_transition_is_not_up() {
        let text = "# pxname,svname,qcur,scur,status,check_status\nweb,a,0,0,UP 1/2,INI\nweb,b,,3,DOWN 1/2,L7OK\n";
        let stats = parse_stats(text).unwrap();
        assert!(!stats[0].is_up());
        assert_eq!(
            (stats[0].hrsp_5xx, stats[0].eresp),
            (0, 0),
            "no such columns"
        );
        assert_eq!(stats[1].qcur, 0);
        assert_eq!(stats[1].scur, 3);
    }

    #[test]
    fn csv_fields_may_be_quoted() {
        assert_eq!(
            split_csv(r#"web,a,"Layer7 wrong status, 503","say ""hi""",,x"#),
            [
                "web",
                "a",
                "Layer7 wrong status, 503",
                r#"say "hi""#,
                "",
                "x"
            ]
        );
    }

    #[test]
    fn refusals_quote_command_and_answer() {
        let e = RuntimeError::Refused {
            command: "del server web/a".into(),
            answer: "Only servers in maintenance mode can be deleted.\n".into(),
        };
        assert_eq!(
            e.to_string(),
            "HAProxy refused `del server web/a`: Only servers in maintenance mode can be deleted."
        );
    }

    #[test]
    fn connection_errors_say_what_to_check() {
        let e = RuntimeError::Connect {
            endpoint: Endpoint::parse("/run/haproxy/nope.sock"),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(e
            .to_string()
            .contains("socket /run/haproxy/nope.sock does not exist"));
    }

    #[test]
    fn a_command_is_one_line() {
        let runtime = Runtime::new(Endpoint::parse("/nonexistent/admin.sock"));
        let e = runtime
            .command("show info; shutdown frontend fe")
            .unwrap_err();
        assert!(matches!(e, RuntimeError::Refused { .. }), "{e}");
    }
}
