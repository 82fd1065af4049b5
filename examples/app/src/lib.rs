//! `zdd-example-app`: a tiny HTTP/1.1 server for zero-downtime deploy demos
//! and end-to-end tests.
//!
//! A deploy tool is tested by deploying something and watching it from
//! outside, so this app makes the interesting cases easy to produce on
//! demand: slow starts, slow requests, crashes, a health check that never
//! passes, and a graceful shutdown that can be observed. It runs as PID 1 in
//! a `FROM scratch` image as a statically linked binary, which is why it
//! depends on std and libc only and is its own health probe.
//!
//! # Endpoints
//!
//! - `GET /`: 200 with body `<APP_VERSION>\n`. `?delay_ms=N` waits N ms
//!   before answering, overriding `REQUEST_DELAY_MS`.
//! - `GET /healthz`: 200 `ok\n` when ready; 503 when `NEVER_HEALTHY` is set
//!   or the app is shutting down.
//!   With `DATABASE_URL`, it also runs `SELECT 1` and answers 503 naming
//!   the error if that fails.
//! - With `DATABASE_URL`, the notes API ([`notes`]); without it, every
//!   `/api/` path answers 503 `no database configured (DATABASE_URL)`:
//!   - `GET /api/notes`: 200 `{"version":"v2","notes":[{"id":3,"title":"..."},...]}`,
//!     the newest 5 notes; `version` is `SCHEMA_VERSION`.
//!   - `GET /api/notes?add=TEXT`: adds a note (TEXT URL-decoded, `%XX` and
//!     `+`), then lists as above, so a GET-only load generator writes and
//!     reads on every request.
//!   - `POST /api/notes`: adds a note whose text is the body; 201, same JSON.
//!   - `GET /api/stats`: `{"version":"v1","db_queries":N,"db_errors":M}`.
//!   - A database error is a 500 `database error: MESSAGE (SQLSTATE XXXXX)`,
//!     counted and logged on stderr.
//! - `HEAD` is answered like `GET` without the body; other methods get 405,
//!   other paths 404. Every response has `Content-Type: text/plain` (the
//!   JSON ones `application/json`), `X-App-Version` and `X-Served-By` (the
//!   host name, i.e. the container).
//!
//! # Environment
//!
//! | variable | default | effect |
//! | --- | --- | --- |
//! | `APP_VERSION` | `dev` | version to report |
//! | `PORT` | `8080` | TCP port to listen on, on 0.0.0.0 (127.0.0.1 with `LISTEN_LOOPBACK_ONLY`) |
//! | `STARTUP_DELAY_MS` | 0 | do not listen until N ms after start, so every kind of probe agrees the app is not ready |
//! | `REQUEST_DELAY_MS` | 0 | `GET /` waits N ms before answering |
//! | `SHUTDOWN_DELAY_MS` | 0 | keep accepting connections for N ms after SIGTERM/SIGINT |
//! | `CRASH_AFTER_MS` | never | N ms after start, print a message and exit with code 3, whatever the app is doing |
//! | `NEVER_HEALTHY` | false | `/healthz` always answers 503 (`1`/`true`/`yes`) |
//! | `LISTEN_LOOPBACK_ONLY` | false | listen on 127.0.0.1 only: `--probe` (a Docker `HEALTHCHECK`) passes, a load balancer connecting to the container's address is refused |
//! | `DATABASE_URL` | none | `postgres://USER@HOST:PORT/DB` (or `postgresql://`): the PostgreSQL server of the notes API and of `/healthz`; TCP, no TLS, `trust` authentication only (see [`pg`]) |
//! | `SCHEMA_VERSION` | `v1` | `v1`, `v2` or `v3`: which release's SQL the notes API runs (see [`notes`]) |
//!
//! An empty value counts as unset; an invalid one is an error naming the
//! variable (exit code 2). See [`config`].
//!
//! # Command line
//!
//! No argument serves; `--probe` checks the health of a server on
//! 127.0.0.1:$PORT (see [`probe`]); `--help` prints [`config::HELP`].
//!
//! # Shutdown
//!
//! SIGTERM or SIGINT starts a graceful shutdown: the app stops looking
//! healthy, keeps accepting for `SHUTDOWN_DELAY_MS`, then closes its
//! listener, finishes the requests in flight and exits 0. See [`server`].
//!
//! # Modules
//!
//! [`config`] reads the command line and environment, [`routes`] decides
//! the answers, [`http`] parses and formats the protocol, [`server`] owns
//! sockets, threads and shutdown, [`probe`] is `--probe`, [`notes`] is the
//! notes API's SQL in its three versions, [`pg`] a minimal PostgreSQL client
//! with its connection pool, and [`sys`] holds the libc calls.

pub mod config;
pub mod http;
pub mod notes;
pub mod pg;
pub mod probe;
pub mod routes;
pub mod server;
pub mod sys;

use std::ffi::OsString;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use config::{Command, Config, HELP};
use routes::App;

/// Exit code for a bad argument or environment variable.
const EXIT_USAGE: u8 = 2;
/// Exit code of the crash that `CRASH_AFTER_MS` asks for.
const EXIT_CRASH: i32 = 3;

/// Runs the program with the arguments after the program name and returns
/// its exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let started = Instant::now();
    match Command::from_args(args) {
        Ok(Command::Serve) => serve(started),
        Ok(Command::Probe) => probe::run(),
        Ok(Command::Help) => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("zdd-example-app: {message}\nRun 'zdd-example-app --help' for usage.");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn serve(started: Instant) -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("zdd-example-app: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Some(after) = config.crash_after {
        crash_at(started + after, after);
    }
    if let Err(error) = sys::install_shutdown_handlers() {
        eprintln!("zdd-example-app: cannot install signal handlers: {error}");
        return ExitCode::FAILURE;
    }
    let app = App::new(config, sys::hostname());
    match server::serve(app, started) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("zdd-example-app: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Makes the process exit with code 3 at `deadline`, from a thread of its
/// own so that nothing the server is doing can delay it.
fn crash_at(deadline: Instant, after: Duration) {
    thread::spawn(move || {
        thread::sleep(deadline.saturating_duration_since(Instant::now()));
        eprintln!(
            "zdd-example-app: crashing as asked (CRASH_AFTER_MS={})",
            after.as_millis()
        );
        std::process::exit(EXIT_CRASH);
    });
}
