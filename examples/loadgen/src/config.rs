//! Command line.
//!
//! Parsed by hand (std only). Every value is checked here, before any
//! request is sent, and a bad one is an error that names the flag: a typo in
//! a deploy test should fail loudly with exit code 2, not measure the wrong
//! thing. The URL's host is resolved here too, so a name that does not
//! resolve is a usage error rather than a run full of failed requests.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// The `--help` text. Keep it in step with [`Command::from_args`].
pub const HELP: &str = "\
zdd-loadgen: a small HTTP/1.1 load generator that proves a deploy dropped no request

USAGE:
    zdd-loadgen --url http://HOST[:PORT][/PATH] [OPTIONS]

Sends GET requests from --concurrency threads until a stop condition is met,
then prints a summary on stderr and, with --json, a JSON report on stdout.

OPTIONS:
    --url URL             target; http:// only (required)
    -c, --concurrency N   worker threads, each with its own connection (default: 8)
    --mode MODE           keepalive: each worker reuses one connection (default)
                          close: a new connection per request, sent with
                                 \"Connection: close\"
                          mixed: even-numbered workers keepalive, odd ones close
    --duration TIME       stop after TIME (default 10s when no stop condition is given)
    --until-file PATH     stop once PATH exists (it must not exist at start); lets
                          a script load for exactly as long as a deploy takes
    --requests N          stop after N requests
    --timeout TIME        a request (connect to last byte) failing to finish in
                          TIME fails as a timeout (default: 5s)
    --rate R              send at most R requests per second in total (default:
                          as fast as the workers go)
    --bucket TIME         width of the timeline buckets (default: 500ms)
    --json                print the JSON report on stdout
    -q, --quiet           no summary on stderr
    -h, --help            print this help

    The stop conditions combine: the run stops at the first one met, or on
    SIGTERM/SIGINT (a second signal kills at once). Requests in flight when the
    run stops are finished and counted normally. TIME is a number with a unit:
    ms, s, m or h (e.g. 250ms, 1.5s, 2m); a bare number means seconds.

WHAT COUNTS AS FAILED:
    A response with a status outside 2xx, a refused or reset connection, a
    response cut short (connection closed before the end of the headers or
    body), a timeout, and anything else that is not a complete response (bad
    HTTP, unreachable host). A request on a reused keep-alive connection that
    gets no response byte at all (the server closed the idle connection as the
    request went out) is retried once on a new connection, as browsers and
    HAProxy do for GETs, and counted in \"retried\"; the retry's result is the
    request's result. On a new connection, no response byte is a failure.

REPORT:
    Each 2xx response is counted under its app version: the X-App-Version
    header if present, else the first line of the body. Latency percentiles are
    over 2xx responses, from the start of the request to its last byte
    (including a retry). Timeline buckets are --bucket wide from the start of
    the run; a request falls in the bucket in which it finished.

    {\"requests\":N,\"ok\":N,\"failed\":N,\"retried\":N,\"connections\":N,
     \"failures\":{\"status_503\":N,\"connect_refused\":N,\"reset\":N,\"timeout\":N,
                 \"truncated\":N,\"other\":N},
     \"latency_ms\":{\"p50\":F,\"p90\":F,\"p99\":F,\"max\":F},
     \"rps\":F,\"duration_s\":F,\"stopped_by\":\"duration|until_file|requests|signal\",
     \"url\":S,\"mode\":S,\"concurrency\":N,
     \"versions\":{\"v1\":N},
     \"timeline\":[{\"t\":0.0,\"ok\":N,\"failed\":N,\"retried\":N,\"versions\":{\"v1\":N}}],
     \"first_failures\":[{\"t\":F,\"kind\":S,\"detail\":S}]}

    status_NNN keys appear for the statuses seen; latencies are null when no
    request succeeded; first_failures holds up to 10, earliest first.

EXIT CODES:
    0  every request succeeded (also when none was sent)
    1  at least one request failed, or the run could not start its workers
    2  bad argument, unresolvable host, or --until-file already exists
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Boxed: a `Config` is large and `Help` is nothing.
    Run(Box<Config>),
    Help,
}

/// How workers use connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    KeepAlive,
    Close,
    Mixed,
}

impl Mode {
    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keepalive",
            Mode::Close => "close",
            Mode::Mixed => "mixed",
        }
    }

    /// Whether worker number `worker` (from 0) keeps its connection open.
    pub fn worker_keeps_alive(self, worker: usize) -> bool {
        match self {
            Mode::KeepAlive => true,
            Mode::Close => false,
            Mode::Mixed => worker % 2 == 0,
        }
    }
}

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// As given, for the report.
    pub text: String,
    /// Host as written (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// The `Host` header value: host and port as written in the URL.
    pub authority: String,
    /// Path and query, at least `/`.
    pub target: String,
}

impl Url {
    /// Parses `http://host[:port][/path][?query]`. A fragment is dropped, as
    /// clients never send it.
    pub fn parse(text: &str) -> Result<Url, String> {
        let rest = match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "--url: scheme {scheme:?} is not supported, only http"
                ))
            }
            None => return Err(format!("--url: {text:?} is not an http:// URL")),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        if authority.contains('@') {
            return Err("--url: user information in the URL is not supported".to_owned());
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("--url: unclosed '[' in {authority:?}"))?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(|| {
                    format!("--url: unexpected {after:?} after the IPv6 address")
                })?),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("--url: no host in {text:?}"));
        }
        let port = match port {
            None => 80,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|&port| port != 0)
                .ok_or_else(|| format!("--url: bad port {port:?}"))?,
        };
        if target.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err("--url: the path must not contain spaces or control characters".to_owned());
        }
        Ok(Url {
            text: text.to_owned(),
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            target,
        })
    }
}

/// Everything a run needs, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub url: Url,
    /// Where to connect: the URL's host, resolved once at start.
    pub addr: SocketAddr,
    pub concurrency: usize,
    pub mode: Mode,
    pub duration: Option<Duration>,
    pub until_file: Option<PathBuf>,
    pub requests: Option<u64>,
    pub timeout: Duration,
    /// Requests per second, in total.
    pub rate: Option<f64>,
    pub bucket: Duration,
    pub json: bool,
    pub quiet: bool,
}

/// The most workers (threads) a run may have.
pub const MAX_CONCURRENCY: usize = 10_000;
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

impl Command {
    /// Parses the arguments after the program name. The error is a message
    /// for the user.
    pub fn from_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
        let mut parsed = Parsed::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let arg = arg
                .into_string()
                .map_err(|arg| format!("argument {arg:?} is not UTF-8"))?;
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value)),
                _ => (arg.clone(), None),
            };
            let takes_value =
                !matches!(flag.as_str(), "-h" | "--help" | "--json" | "-q" | "--quiet");
            let value = if !takes_value {
                if inline.is_some() {
                    return Err(format!("{flag} takes no value"));
                }
                String::new()
            } else if let Some(value) = inline {
                value.to_owned()
            } else {
                match args.next() {
                    Some(value) => value
                        .into_string()
                        .map_err(|value| format!("{flag}: value {value:?} is not UTF-8"))?,
                    None => return Err(format!("{flag} needs a value")),
                }
            };
            parsed.set(&flag, value)?;
        }
        if parsed.help {
            return Ok(Command::Help);
        }
        parsed
            .into_config()
            .map(|config| Command::Run(Box::new(config)))
    }
}

/// The flags as given, before they are checked against each other.
#[derive(Default)]
struct Parsed {
    help: bool,
    json: bool,
    quiet: bool,
    url: Option<String>,
    concurrency: Option<usize>,
    mode: Option<Mode>,
    duration: Option<Duration>,
    until_file: Option<PathBuf>,
    requests: Option<u64>,
    timeout: Option<Duration>,
    rate: Option<f64>,
    bucket: Option<Duration>,
}

/// Stores `value` in `slot`, refusing a flag given twice (which would
/// otherwise silently mean "the last one").
fn once<T>(slot: &mut Option<T>, flag: &str, value: T) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("{flag} given twice"));
    }
    *slot = Some(value);
    Ok(())
}

impl Parsed {
    fn set(&mut self, flag: &str, value: String) -> Result<(), String> {
        match flag {
            "-h" | "--help" => self.help = true,
            "--json" => self.json = true,
            "-q" | "--quiet" => self.quiet = true,
            "--url" => once(&mut self.url, flag, value)?,
            "-c" | "--concurrency" => {
                let n = parse_count(flag, &value)?;
                if n > MAX_CONCURRENCY as u64 {
                    return Err(format!("{flag}: at most {MAX_CONCURRENCY}"));
                }
                once(&mut self.concurrency, flag, n as usize)?
            }
            "--mode" => {
                let mode = match value.as_str() {
                    "keepalive" | "keep-alive" => Mode::KeepAlive,
                    "close" => Mode::Close,
                    "mixed" => Mode::Mixed,
                    _ => {
                        return Err(format!(
                            "--mode: {value:?} is not one of keepalive, close, mixed"
                        ))
                    }
                };
                once(&mut self.mode, flag, mode)?
            }
            "--duration" => once(&mut self.duration, flag, parse_duration(flag, &value)?)?,
            "--until-file" => {
                if value.is_empty() {
                    return Err("--until-file: empty path".to_owned());
                }
                once(&mut self.until_file, flag, PathBuf::from(value))?
            }
            "--requests" => once(&mut self.requests, flag, parse_count(flag, &value)?)?,
            "--timeout" => once(&mut self.timeout, flag, parse_duration(flag, &value)?)?,
            "--rate" => {
                let rate = value
                    .parse::<f64>()
                    .ok()
                    .filter(|rate| rate.is_finite() && *rate > 0.0)
                    .ok_or_else(|| format!("--rate: {value:?} is not a positive number"))?;
                once(&mut self.rate, flag, rate)?
            }
            "--bucket" => once(&mut self.bucket, flag, parse_duration(flag, &value)?)?,
            _ => return Err(format!("unknown argument {flag:?}")),
        }
        Ok(())
    }

    fn into_config(self) -> Result<Config, String> {
        let url = Url::parse(&self.url.ok_or("--url is required")?)?;
        let addr = resolve(&url)?;
        let until_file = self.until_file;
        if let Some(path) = &until_file {
            // A file left over from an earlier run would end this one before
            // it sends anything, and "0 requests, 0 failed" would pass for a
            // clean deploy.
            if path.exists() {
                return Err(format!(
                    "--until-file {} already exists; remove it before starting",
                    path.display()
                ));
            }
        }
        let duration = match (self.duration, &until_file, self.requests) {
            (None, None, None) => Some(DEFAULT_DURATION),
            (duration, _, _) => duration,
        };
        Ok(Config {
            url,
            addr,
            concurrency: self.concurrency.unwrap_or(8),
            mode: self.mode.unwrap_or(Mode::KeepAlive),
            duration,
            until_file,
            requests: self.requests,
            timeout: self.timeout.unwrap_or(Duration::from_secs(5)),
            rate: self.rate,
            bucket: self.bucket.unwrap_or(Duration::from_millis(500)),
            json: self.json,
            quiet: self.quiet,
        })
    }
}

fn resolve(url: &Url) -> Result<SocketAddr, String> {
    let mut addrs = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|error| format!("--url: cannot resolve {:?}: {error}", url.host))?;
    addrs
        .next()
        .ok_or_else(|| format!("--url: {:?} has no address", url.host))
}

/// A whole number of at least 1.
fn parse_count(flag: &str, value: &str) -> Result<u64, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| format!("{flag}: {value:?} is not a whole number of at least 1"))
}

/// Parses a positive duration such as `250ms`, `1.5s`, `2m`, `1h` or `3`
/// (seconds). Zero is refused: no flag taking a time means anything by it.
pub fn parse_duration(flag: &str, value: &str) -> Result<Duration, String> {
    let bad = || format!("{flag}: {value:?} is not a duration like 500ms, 10s or 2m");
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let number: f64 = number.parse().map_err(|_| bad())?;
    let seconds = number * seconds_per_unit;
    if !(seconds.is_finite() && seconds > 0.0 && seconds < 1e9) {
        return Err(bad());
    }
    let duration = Duration::from_secs_f64(seconds);
    if duration < Duration::from_millis(1) {
        return Err(format!("{flag}: {value:?} is shorter than 1ms"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn config(list: &[&str]) -> Config {
        match Command::from_args(args(list)).unwrap() {
            Command::Run(config) => *config,
            Command::Help => panic!("expected a run"),
        }
    }

    fn error(list: &[&str]) -> String {
        Command::from_args(args(list)).unwrap_err()
    }

    #[test]
    fn defaults() {
        let config = config(&["--url", "http://127.0.0.1:8080"]);
        assert_eq!(config.url.target, "/");
        assert_eq!(config.url.authority, "127.0.0.1:8080");
        assert_eq!(config.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.concurrency, 8);
        assert_eq!(config.mode, Mode::KeepAlive);
        assert_eq!(config.duration, Some(Duration::from_secs(10)));
        assert_eq!(config.requests, None);
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert_eq!(config.bucket, Duration::from_millis(500));
        assert!(!config.json && !config.quiet);
    }

    #[test]
    fn every_flag() {
        let config = config(&[
            "--url=http://127.0.0.1:9/x?y=1",
            "-c",
            "3",
            "--mode",
            "mixed",
            "--requests=7",
            "--timeout",
            "250ms",
            "--rate",
            "12.5",
            "--bucket",
            "1s",
            "--json",
            "-q",
        ]);
        assert_eq!(config.url.target, "/x?y=1");
        assert_eq!(config.concurrency, 3);
        assert_eq!(config.mode, Mode::Mixed);
        // An explicit stop condition replaces the default duration.
        assert_eq!(config.duration, None);
        assert_eq!(config.requests, Some(7));
        assert_eq!(config.timeout, Duration::from_millis(250));
        assert_eq!(config.rate, Some(12.5));
        assert_eq!(config.bucket, Duration::from_secs(1));
        assert!(config.json && config.quiet);
    }

    #[test]
    fn help_wins() {
        assert_eq!(
            Command::from_args(args(&["--help"])).unwrap(),
            Command::Help
        );
        assert_eq!(
            Command::from_args(args(&["--url", "x", "-h"])).unwrap(),
            Command::Help
        );
    }

    #[test]
    fn bad_arguments_are_named() {
        assert!(error(&[]).contains("--url is required"));
        assert!(error(&["--url", "https://x/"]).contains("only http"));
        assert!(error(&["--url", "http://127.0.0.1:0/"]).contains("bad port"));
        assert!(error(&["--url", "http://127.0.0.1", "--bogus"]).contains("--bogus"));
        assert!(error(&["--url", "http://127.0.0.1", "-c", "0"]).contains("-c"));
        assert!(error(&["--url", "http://127.0.0.1", "--mode", "x"]).contains("--mode"));
        assert!(error(&["--url", "http://127.0.0.1", "--duration"]).contains("needs a value"));
        assert!(error(&["--url", "http://127.0.0.1", "--json=1"]).contains("takes no value"));
        assert!(error(&["--url", "http://127.0.0.1", "--rate", "-1"]).contains("--rate"));
        assert!(error(&["--url", "http://a", "--url", "http://b"]).contains("twice"));
        let existing = std::env::temp_dir();
        let existing = existing.to_str().unwrap();
        assert!(
            error(&["--url", "http://127.0.0.1", "--until-file", existing])
                .contains("already exists")
        );
    }

    #[test]
    fn urls() {
        let url = Url::parse("http://example.com").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.target.as_str()),
            ("example.com", 80, "/")
        );
        assert_eq!(url.authority, "example.com");
        let url = Url::parse("HTTP://[::1]:8080/a/b?c#frag").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 8080));
        assert_eq!(url.authority, "[::1]:8080");
        assert_eq!(url.target, "/a/b?c");
        assert_eq!(Url::parse("http://h:1?q").unwrap().target, "/?q");
        assert!(Url::parse("http://:80/").is_err());
        assert!(Url::parse("http://u@h/").is_err());
        assert!(Url::parse("http://h/a b").is_err());
        assert!(Url::parse("http://[::1/").is_err());
        assert!(Url::parse("127.0.0.1:80").is_err());
    }

    #[test]
    fn durations() {
        let ok = |text| parse_duration("--t", text).unwrap();
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("3"), Duration::from_secs(3));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        for bad in ["", "s", "0", "0s", "-1s", "1x", "1 s", "0.1ms", "1.2.3s"] {
            assert!(parse_duration("--t", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mixed_mode_splits_workers() {
        let keep: Vec<bool> = (0..4).map(|w| Mode::Mixed.worker_keeps_alive(w)).collect();
        assert_eq!(keep, [true, false, true, false]);
        assert!(Mode::KeepAlive.worker_keeps_alive(1));
        assert!(!Mode::Close.worker_keeps_alive(0));
    }
}
