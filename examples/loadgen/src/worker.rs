//! One worker: a thread that sends requests one after the other, on one
//! keep-alive connection or on a new connection each time, and counts what
//! happens to each.
//!
//! The subtle part is telling a deploy's real failures from the ordinary
//! end of an idle keep-alive connection. A server (or a load balancer, or a
//! replica being retired) may close an idle connection at any moment; if it
//! does so just as the next request goes out, the client sees EOF or a
//! reset with no response byte, although the server never saw the request
//! as one it would answer. Browsers and HAProxy retry such an idempotent
//! request once on a new connection, and so does this worker, counting it
//! in `retried` rather than `failed`. Two things keep this honest:
//!
//! - only a connection that already carried a response is retried, and
//!   only when not a single byte of the response arrived: on a new
//!   connection, or after part of a response, the failure is real;
//! - before reusing a connection, the worker peeks at it without blocking,
//!   and quietly replaces it if the server has already closed it, which is
//!   the common, race-free case of the same thing.
//!
//! A request's timeout covers everything: connecting, sending, the retry,
//! and the last byte of the response.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::http::{self, Cause, ReadError, Response, ResponseReader};
use crate::stats::{Failure, FailureKind, Stats};
use crate::sys;

/// What all workers of a run share.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    /// The start of the run; times in the report count from here.
    pub start: Instant,
    /// Set when the run should end; each worker finishes the request it is
    /// sending and sends no other.
    pub stop: AtomicBool,
    /// Requests begun so far, by all workers. A request takes the next
    /// number before it starts, which is how `--requests` and `--rate` are
    /// shared out without a lock.
    pub issued: AtomicU64,
}

impl Shared {
    pub fn new(config: Config) -> Shared {
        Shared {
            config,
            start: Instant::now(),
            stop: AtomicBool::new(false),
            issued: AtomicU64::new(0),
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// How long a worker waits for the server to close a connection that it
/// said (or was asked) it would close; see [`close_after_server`].
const CLOSE_WAIT: Duration = Duration::from_millis(200);
/// The longest a worker sleeps before looking at the stop flag again while
/// waiting for its turn under `--rate`.
const RATE_POLL: Duration = Duration::from_millis(20);

/// Runs worker number `index` (from 0) until the run stops, and returns
/// what it counted.
pub fn run(shared: &Shared, index: usize) -> Stats {
    let keep_alive = shared.config.mode.worker_keeps_alive(index);
    Worker {
        shared,
        keep_alive,
        request: http::request(&shared.config.url, !keep_alive),
        connection: None,
        stats: Stats::new(shared.config.bucket),
    }
    .run()
}

/// A socket whose reads fail with `TimedOut` at `deadline`.
#[derive(Debug)]
struct Deadlined {
    stream: TcpStream,
    deadline: Instant,
}

impl Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(timed_out());
        }
        self.stream.set_read_timeout(Some(remaining))?;
        match self.stream.read(buf) {
            // What an expired SO_RCVTIMEO looks like on Unix.
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Err(timed_out()),
            result => result,
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out")
}

type Connection = ResponseReader<Deadlined>;

/// Why one attempt at a request failed.
struct AttemptError {
    failure: Failure,
    /// The request may be sent again on a new connection: it went out on a
    /// reused connection and not one byte of a response came back.
    retryable: bool,
}

struct Worker<'a> {
    shared: &'a Shared,
    keep_alive: bool,
    /// The request's bytes, the same every time.
    request: Vec<u8>,
    connection: Option<Connection>,
    stats: Stats,
}

impl Worker<'_> {
    fn run(mut self) -> Stats {
        let config = &self.shared.config;
        while !self.shared.stopping() {
            let number = self.shared.issued.fetch_add(1, Ordering::Relaxed);
            if config.requests.is_some_and(|requests| number >= requests) {
                break;
            }
            if let Some(rate) = config.rate {
                let due = self.shared.start + Duration::from_secs_f64(number as f64 / rate);
                if !self.wait_until(due) {
                    break;
                }
            }
            self.send_one();
        }
        self.stats
    }

    /// Sleeps until `due`; false if the run stopped meanwhile.
    fn wait_until(&self, due: Instant) -> bool {
        loop {
            if self.shared.stopping() {
                return false;
            }
            let now = Instant::now();
            if now >= due {
                return true;
            }
            thread::sleep((due - now).min(RATE_POLL));
        }
    }

    /// Sends one request (and its retry, if it needs one) and counts it.
    fn send_one(&mut self) {
        let started = Instant::now();
        let deadline = started + self.shared.config.timeout;
        let mut retried = false;
        let mut result = self.attempt(deadline);
        if let Err(AttemptError {
            retryable: true, ..
        }) = result
        {
            retried = true;
            result = self.attempt(deadline);
        }
        let finished = Instant::now();
        let at = finished.saturating_duration_since(self.shared.start);
        let keep = self.keep_alive
            && matches!(&result, Ok(response) if response.reusable)
            && self.connection.as_ref().is_some_and(|c| !c.has_buffered());
        if !keep {
            if let Some(connection) = self.connection.take() {
                close_after_server(connection);
            }
        }
        match result {
            Ok(response) if response.is_success() => {
                let version = response.version();
                self.stats
                    .record_ok(at, finished - started, retried, &version);
            }
            Ok(response) => {
                let failure = Failure {
                    kind: FailureKind::Status(response.status),
                    detail: format!("HTTP {} from {}", response.status, response.version()),
                };
                self.stats.record_failure(at, retried, failure);
            }
            Err(error) => self.stats.record_failure(at, retried, error.failure),
        }
    }

    /// One try: on the kept connection if it is still usable, else on a new
    /// one.
    fn attempt(&mut self, deadline: Instant) -> Result<Response, AttemptError> {
        let reused = match self.connection.take() {
            Some(connection) if sys::idle_connection_usable(&connection.get_ref().stream) => {
                self.connection = Some(connection);
                true
            }
            // Closed by the server while idle (or holding bytes nobody
            // asked for): not a failure, just the end of that connection.
            Some(_) | None => {
                self.connection = Some(self.connect(deadline)?);
                false
            }
        };
        let Some(connection) = self.connection.as_mut() else {
            unreachable!("a connection was just kept or made");
        };
        connection.get_mut().deadline = deadline;
        if let Err(error) = connection.get_mut().stream.write_all(&self.request) {
            self.connection = None;
            let timeout = is_timeout(&error);
            return Err(AttemptError {
                failure: io_failure(&error, "send", ""),
                retryable: reused && !timeout,
            });
        }
        match connection.read_response() {
            // The caller decides whether to keep the connection, once the
            // response is counted.
            Ok(response) => Ok(response),
            Err(error) => {
                self.connection = None;
                let retryable = reused
                    && error.received == 0
                    && !matches!(&error.cause, Cause::Io(io) if is_timeout(io));
                Err(AttemptError {
                    failure: read_failure(&error),
                    retryable,
                })
            }
        }
    }

    fn connect(&mut self, deadline: Instant) -> Result<Connection, AttemptError> {
        let fail = |failure| AttemptError {
            failure,
            retryable: false,
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(fail(io_failure(&timed_out(), "connect", "")));
        }
        let addr = self.shared.config.addr;
        let stream = TcpStream::connect_timeout(&addr, remaining)
            .map_err(|error| fail(io_failure(&error, "connect", &format!(" to {addr}"))))?;
        self.stats.connections += 1;
        // Requests are small and written whole; do not let Nagle hold one
        // back. The write timeout only matters if the server stops reading.
        let setup = stream
            .set_nodelay(true)
            .and_then(|()| stream.set_write_timeout(Some(self.shared.config.timeout)));
        if let Err(error) = setup {
            return Err(fail(io_failure(&error, "connect", " (socket options)")));
        }
        Ok(ResponseReader::new(Deadlined { stream, deadline }))
    }
}

/// Drops a connection the server is expected to close, after giving it a
/// moment to do so. Whoever closes a TCP connection first keeps it in
/// TIME_WAIT for a minute; with a new connection per request at thousands
/// of requests per second, that must be the server, or the client runs out
/// of local ports within seconds. The wait is not part of any latency.
fn close_after_server(connection: Connection) {
    let mut socket = connection.into_inner();
    socket.deadline = Instant::now() + CLOSE_WAIT;
    let mut scratch = [0u8; 512];
    // EOF is what we wait for; more bytes or an error end the wait too.
    let _ = socket.read(&mut scratch);
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// The failure for an I/O error during `phase`, with `more` after the phase
/// in its detail.
fn io_failure(error: &io::Error, phase: &str, more: &str) -> Failure {
    let kind = match error.kind() {
        io::ErrorKind::ConnectionRefused => FailureKind::ConnectRefused,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => FailureKind::Reset,
        _ if is_timeout(error) => FailureKind::Timeout,
        io::ErrorKind::UnexpectedEof => FailureKind::Truncated,
        _ => FailureKind::Other,
    };
    Failure {
        kind,
        detail: format!("{phase}{more}: {error}"),
    }
}

fn read_failure(error: &ReadError) -> Failure {
    let kind = match &error.cause {
        Cause::Io(io) => io_failure(io, "", "").kind,
        Cause::Eof => FailureKind::Truncated,
        Cause::Malformed(_) => FailureKind::Other,
    };
    Failure {
        kind,
        detail: format!("receive: {error}"),
    }
}
