//! Command line and environment.
//!
//! The app is configured by environment variables only, because it runs as
//! PID 1 in a `FROM scratch` image where `docker run -e` (or a deploy tool's
//! equivalent) is the one knob everybody has. The command line merely picks
//! between serving, probing and printing [`HELP`].
//!
//! An empty variable counts as unset, so `PORT=` behaves like no `PORT` at
//! all. A value that does not parse is an error naming the variable, never a
//! silent default: a typo in a test setup should fail loudly.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::time::Duration;

use crate::notes::SchemaVersion;
use crate::pg;

/// The `--help` text. Keep it in step with [`Config::from_lookup`].
pub const HELP: &str = "\
zdd-example-app: a tiny HTTP/1.1 server for zero-downtime deploy demos and tests

USAGE:
    zdd-example-app            serve HTTP on 0.0.0.0:$PORT (127.0.0.1:$PORT if LISTEN_LOOPBACK_ONLY=1)
    zdd-example-app --probe    GET /healthz on 127.0.0.1:$PORT; exit 0 on 200, 1 otherwise
                               (gives up after 2 s; meant for Docker HEALTHCHECK)
    zdd-example-app --help     print this help

ENDPOINTS:
    GET /          200 with body \"$APP_VERSION\\n\"
                   ?delay_ms=N waits N ms before answering (overrides REQUEST_DELAY_MS)
    GET /healthz   200 \"ok\\n\" when ready; 503 if NEVER_HEALTHY=1 or shutting down, or,
                   with DATABASE_URL, if \"SELECT 1\" fails
    HEAD is answered like GET without the body. Other methods get 405, other
    paths 404. Every response carries X-App-Version and X-Served-By (hostname).

  With DATABASE_URL (without it, every /api/ path answers 503):
    GET /api/notes       200 {\"version\":\"v2\",\"notes\":[{\"id\":3,\"title\":\"...\"},...]}
                         the newest 5 notes; \"version\" is SCHEMA_VERSION
    GET /api/notes?add=TEXT
                         adds a note (TEXT URL-decoded, %XX and +), then lists as above
    POST /api/notes      adds a note whose text is the request body; 201, same JSON
    GET /api/stats       200 {\"version\":\"v1\",\"db_queries\":N,\"db_errors\":M}
                         statements sent and failed database operations, /healthz's too
    A database error is a 500 naming it and its SQLSTATE, logged on stderr.

ENVIRONMENT (an empty value counts as unset):
    APP_VERSION=TEXT      version to report (default: dev)
    PORT=N                TCP port to listen on (default: 8080)
    STARTUP_DELAY_MS=N    do not listen until N ms after start (default: 0)
    REQUEST_DELAY_MS=N    wait N ms before answering GET / (default: 0)
    SHUTDOWN_DELAY_MS=N   keep accepting for N ms after SIGTERM/SIGINT (default: 0)
    CRASH_AFTER_MS=N      exit with code 3 N ms after start (default: never)
    NEVER_HEALTHY=1       /healthz always answers 503 (1/true/yes or 0/false/no)
    FAIL_ROOT=1           GET / answers 500 while /healthz stays 200: a release whose
                          health check passes and whose requests fail (1/true/yes or 0/false/no)
    LISTEN_LOOPBACK_ONLY=1
                          listen on 127.0.0.1 instead of 0.0.0.0, so --probe passes
                          but connections to any other address (e.g. a load balancer
                          using the container IP) are refused (1/true/yes or 0/false/no)
    DATABASE_URL=postgres://USER@HOST:PORT/DB
                          PostgreSQL for /api/notes and /healthz (default: none);
                          also postgresql://; PORT defaults to 5432; TCP, no TLS,
                          trust authentication only (a password is accepted, not used)
    SCHEMA_VERSION=v1|v2|v3
                          which release's SQL /api/notes runs (default: v1):
                          v1 writes and reads notes.name; v2 writes name and title,
                          reads coalesce(title, name); v3 writes and reads title

SIGNALS:
    SIGTERM, SIGINT   graceful shutdown: /healthz turns 503 and responses say
                      \"Connection: close\"; after SHUTDOWN_DELAY_MS the listener
                      closes, requests in flight finish, idle connections close,
                      and the process exits 0.

EXIT CODES:
    0  clean shutdown, or --probe found the server healthy
    1  --probe failed, or the server could not run (e.g. port in use)
    2  bad argument or environment variable
    3  crashed on purpose (CRASH_AFTER_MS)
";

/// What the command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Serve,
    Probe,
    Help,
}

impl Command {
    /// Parses the arguments after the program name. The error is a message
    /// for the user.
    pub fn from_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
        let mut args = args.into_iter();
        let command = match args.next() {
            None => return Ok(Command::Serve),
            Some(arg) if arg == "--probe" => Command::Probe,
            Some(arg) if arg == "--help" || arg == "-h" => Command::Help,
            Some(arg) => return Err(format!("unknown argument {arg:?}")),
        };
        match args.next() {
            None => Ok(command),
            Some(extra) => Err(format!("unexpected argument {extra:?}")),
        }
    }
}

/// Everything the server needs to know, read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `APP_VERSION`: the body of `GET /` and the `X-App-Version` header.
    pub version: String,
    /// `PORT`: the TCP port to listen on, on every interface unless
    /// `listen_loopback_only`.
    pub port: u16,
    /// `STARTUP_DELAY_MS`: how long after start to begin listening.
    pub startup_delay: Duration,
    /// `REQUEST_DELAY_MS`: how long `GET /` waits before answering.
    pub request_delay: Duration,
    /// `SHUTDOWN_DELAY_MS`: how long to keep accepting after a signal.
    pub shutdown_delay: Duration,
    /// `CRASH_AFTER_MS`: when to exit with code 3, if ever.
    pub crash_after: Option<Duration>,
    /// `NEVER_HEALTHY`: make `/healthz` answer 503 forever.
    pub never_healthy: bool,
    /// `FAIL_ROOT`: make `GET /` answer 500 (and `/healthz` still 200).
    pub fail_root: bool,
    /// `LISTEN_LOOPBACK_ONLY`: listen on 127.0.0.1 instead of 0.0.0.0, so
    /// that `--probe` (inside the container) passes while a load balancer
    /// connecting to the container's address is refused.
    pub listen_loopback_only: bool,
    /// `DATABASE_URL`: the PostgreSQL server of the notes API, if any.
    pub database_url: Option<pg::Url>,
    /// `SCHEMA_VERSION`: which release's SQL the notes API runs.
    pub schema_version: SchemaVersion,
}

pub const DEFAULT_VERSION: &str = "dev";
pub const DEFAULT_PORT: u16 = 8080;

/// Looks up one environment variable; a function so tests need not touch
/// the real environment.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<OsString>;

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(&|name| std::env::var_os(name))
    }

    /// Reads the variables through `lookup`.
    pub fn from_lookup(lookup: Lookup) -> Result<Config, ConfigError> {
        Ok(Config {
            version: version(lookup)?,
            port: port(lookup)?,
            startup_delay: millis(lookup, "STARTUP_DELAY_MS")?.unwrap_or_default(),
            request_delay: millis(lookup, "REQUEST_DELAY_MS")?.unwrap_or_default(),
            shutdown_delay: millis(lookup, "SHUTDOWN_DELAY_MS")?.unwrap_or_default(),
            crash_after: millis(lookup, "CRASH_AFTER_MS")?,
            never_healthy: flag(lookup, "NEVER_HEALTHY")?,
            fail_root: flag(lookup, "FAIL_ROOT")?,
            listen_loopback_only: flag(lookup, "LISTEN_LOOPBACK_ONLY")?,
            database_url: database_url(lookup)?,
            schema_version: schema_version(lookup)?,
        })
    }
}

/// Reads only `PORT`, for `--probe`: a probe must not fail because of a
/// variable it does not use.
pub fn port_from_env() -> Result<u16, ConfigError> {
    port(&|name| std::env::var_os(name))
}

/// A variable whose value is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    /// What a valid value looks like.
    pub expected: &'static str,
    /// What is wrong with this value, when that says more than `expected`.
    pub problem: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {}={:?}: expected {}",
            self.variable, self.value, self.expected
        )?;
        match &self.problem {
            Some(problem) => write!(f, " ({problem})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ConfigError {}

fn version(lookup: Lookup) -> Result<String, ConfigError> {
    const EXPECTED: &str = "text without control characters";
    let Some(version) = text(lookup, "APP_VERSION", EXPECTED)? else {
        return Ok(DEFAULT_VERSION.to_owned());
    };
    // The version goes into a response header, where a line break would
    // forge headers of its own.
    if version.chars().any(char::is_control) {
        return Err(invalid("APP_VERSION", &version, EXPECTED));
    }
    Ok(version)
}

fn port(lookup: Lookup) -> Result<u16, ConfigError> {
    const EXPECTED: &str = "a TCP port number (0-65535)";
    parsed(lookup, "PORT", EXPECTED).map(|port| port.unwrap_or(DEFAULT_PORT))
}

fn database_url(lookup: Lookup) -> Result<Option<pg::Url>, ConfigError> {
    const VARIABLE: &str = "DATABASE_URL";
    let Some(url) = text(lookup, VARIABLE, pg::URL_FORM)? else {
        return Ok(None);
    };
    pg::Url::parse(&url)
        .map(Some)
        .map_err(|problem| ConfigError {
            problem: Some(problem),
            // The password must not reach the logs.
            ..invalid(VARIABLE, pg::redact_password(&url), pg::URL_FORM)
        })
}

fn schema_version(lookup: Lookup) -> Result<SchemaVersion, ConfigError> {
    const EXPECTED: &str = "v1, v2 or v3";
    parsed(lookup, "SCHEMA_VERSION", EXPECTED).map(Option::unwrap_or_default)
}

fn millis(lookup: Lookup, variable: &'static str) -> Result<Option<Duration>, ConfigError> {
    const EXPECTED: &str = "a whole number of milliseconds";
    Ok(parsed(lookup, variable, EXPECTED)?.map(Duration::from_millis))
}

fn flag(lookup: Lookup, variable: &'static str) -> Result<bool, ConfigError> {
    const EXPECTED: &str = "1, true, yes, 0, false or no";
    let Some(value) = text(lookup, variable, EXPECTED)? else {
        return Ok(false);
    };
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(invalid(variable, &value, EXPECTED)),
    }
}

/// A variable parsed with [`str::parse`]; `None` when unset.
fn parsed<T: std::str::FromStr>(
    lookup: Lookup,
    variable: &'static str,
    expected: &'static str,
) -> Result<Option<T>, ConfigError> {
    let Some(value) = text(lookup, variable, expected)? else {
        return Ok(None);
    };
    match value.parse() {
        Ok(parsed) => Ok(Some(parsed)),
        Err(_) => Err(invalid(variable, &value, expected)),
    }
}

/// A variable as UTF-8 text; `None` when unset or empty.
fn text(
    lookup: Lookup,
    variable: &'static str,
    expected: &'static str,
) -> Result<Option<String>, ConfigError> {
    match lookup(variable) {
        None => Ok(None),
        Some(value) if value.is_empty() => Ok(None),
        Some(value) => value
            .into_string()
            .map(Some)
            .map_err(|value| invalid(variable, &value, expected)),
    }
}

fn invalid(
    variable: &'static str,
    value: impl AsRef<OsStr>,
    expected: &'static str,
) -> ConfigError {
    ConfigError {
        variable,
        value: value.as_ref().to_string_lossy().into_owned(),
        expected,
        problem: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(&|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| OsString::from(value))
        })
    }

    fn args(args: &[&str]) -> Result<Command, String> {
        Command::from_args(args.iter().map(OsString::from))
    }

    #[test]
    fn defaults() {
        assert_eq!(
            config(&[]),
            Ok(Config {
                version: "dev".to_owned(),
                port: 8080,
                startup_delay: Duration::ZERO,
                request_delay: Duration::ZERO,
                shutdown_delay: Duration::ZERO,
                crash_after: None,
                never_healthy: false,
                fail_root: false,
                listen_loopback_only: false,
                database_url: None,
                schema_version: SchemaVersion::V1,
            })
        );
    }

    #[test]
    fn every_variable_is_read() {
        let config = config(&[
            ("APP_VERSION", "v2"),
            ("PORT", "9000"),
            ("STARTUP_DELAY_MS", "1"),
            ("REQUEST_DELAY_MS", "2"),
            ("SHUTDOWN_DELAY_MS", "3"),
            ("CRASH_AFTER_MS", "4"),
            ("NEVER_HEALTHY", "1"),
            ("LISTEN_LOOPBACK_ONLY", "1"),
            ("DATABASE_URL", "postgres://app@db:5433/notes"),
            ("SCHEMA_VERSION", "v3"),
        ])
        .unwrap();
        assert_eq!(config.version, "v2");
        assert_eq!(config.port, 9000);
        assert_eq!(config.startup_delay, Duration::from_millis(1));
        assert_eq!(config.request_delay, Duration::from_millis(2));
        assert_eq!(config.shutdown_delay, Duration::from_millis(3));
        assert_eq!(config.crash_after, Some(Duration::from_millis(4)));
        assert!(config.never_healthy);
        assert!(config.listen_loopback_only);
        let url = config.database_url.unwrap();
        assert_eq!(
            (url.user.as_str(), url.host.as_str(), url.port),
            ("app", "db", 5433)
        );
        assert_eq!(url.database, "notes");
        assert_eq!(config.schema_version, SchemaVersion::V3);
    }

    #[test]
    fn empty_means_unset() {
        assert_eq!(config(&[("PORT", ""), ("APP_VERSION", "")]), config(&[]));
        assert_eq!(
            config(&[("NEVER_HEALTHY", ""), ("LISTEN_LOOPBACK_ONLY", "")]),
            config(&[])
        );
        assert_eq!(
            config(&[("DATABASE_URL", ""), ("SCHEMA_VERSION", "")]),
            config(&[])
        );
    }

    #[test]
    fn database_variables() {
        let with_url = config(&[("DATABASE_URL", "postgresql://u@127.0.0.1/d")]).unwrap();
        assert_eq!(with_url.database_url.unwrap().port, 5432);
        for (value, expected) in [
            ("v1", SchemaVersion::V1),
            ("v2", SchemaVersion::V2),
            ("V3", SchemaVersion::V3),
        ] {
            let config = config(&[("SCHEMA_VERSION", value)]).unwrap();
            assert_eq!(config.schema_version, expected, "SCHEMA_VERSION={value}");
        }
        for bad in ["v4", "2", "latest"] {
            let error = config(&[("SCHEMA_VERSION", bad)]).unwrap_err();
            assert_eq!(error.variable, "SCHEMA_VERSION");
            assert!(error.to_string().contains("v1, v2 or v3"), "{error}");
        }
        let error = config(&[("DATABASE_URL", "mysql://u:hunter2@db/d")]).unwrap_err();
        assert_eq!(error.variable, "DATABASE_URL");
        let message = error.to_string();
        assert!(
            message
                .starts_with("invalid DATABASE_URL=\"mysql://u:***@db/d\": expected postgres://"),
            "{message}"
        );
        assert!(message.contains("the scheme must be"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        let error = config(&[("DATABASE_URL", "postgres://u@db:port/d")]).unwrap_err();
        assert!(error.to_string().contains("invalid port"), "{error}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let error = config(&[("PORT", "abc")]).unwrap_err();
        assert_eq!(error.variable, "PORT");
        assert!(
            error.to_string().starts_with("invalid PORT=\"abc\""),
            "{error}"
        );
        assert_eq!(config(&[("PORT", "70000")]).unwrap_err().variable, "PORT");
        let error = config(&[("REQUEST_DELAY_MS", "-5")]).unwrap_err();
        assert_eq!(error.variable, "REQUEST_DELAY_MS");
        assert_eq!(
            config(&[("NEVER_HEALTHY", "maybe")]).unwrap_err().variable,
            "NEVER_HEALTHY"
        );
        assert_eq!(
            config(&[("LISTEN_LOOPBACK_ONLY", "on")])
                .unwrap_err()
                .variable,
            "LISTEN_LOOPBACK_ONLY"
        );
        let error = config(&[("APP_VERSION", "v1\r\nX-Evil: 1")]).unwrap_err();
        assert_eq!(error.variable, "APP_VERSION");
    }

    #[test]
    fn flags() {
        for (value, expected) in [
            ("1", true),
            ("TRUE", true),
            ("yes", true),
            ("0", false),
            ("no", false),
        ] {
            let never_healthy = config(&[("NEVER_HEALTHY", value)]).unwrap();
            assert_eq!(
                never_healthy.never_healthy, expected,
                "NEVER_HEALTHY={value}"
            );
            assert!(!never_healthy.listen_loopback_only, "NEVER_HEALTHY={value}");
            let loopback_only = config(&[("LISTEN_LOOPBACK_ONLY", value)]).unwrap();
            assert_eq!(
                loopback_only.listen_loopback_only, expected,
                "LISTEN_LOOPBACK_ONLY={value}"
            );
            assert!(!loopback_only.never_healthy, "LISTEN_LOOPBACK_ONLY={value}");
        }
    }

    #[test]
    fn command_line() {
        assert_eq!(args(&[]), Ok(Command::Serve));
        assert_eq!(args(&["--probe"]), Ok(Command::Probe));
        assert_eq!(args(&["--help"]), Ok(Command::Help));
        assert_eq!(args(&["-h"]), Ok(Command::Help));
        assert!(args(&["--frobnicate"])
            .unwrap_err()
            .contains("--frobnicate"));
        assert!(args(&["--probe", "extra"]).is_err());
    }

    #[test]
    fn help_mentions_every_variable() {
        for variable in [
            "APP_VERSION",
            "PORT",
            "STARTUP_DELAY_MS",
            "REQUEST_DELAY_MS",
            "SHUTDOWN_DELAY_MS",
            "CRASH_AFTER_MS",
            "NEVER_HEALTHY",
            "LISTEN_LOOPBACK_ONLY",
            "DATABASE_URL",
            "SCHEMA_VERSION",
            "--probe",
            "/api/notes",
            "/api/stats",
        ] {
            assert!(
                HELP.contains(variable),
                "--help does not mention {variable}"
            );
        }
    }
}
