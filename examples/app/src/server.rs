//! Sockets, threads, and the shutdown sequence.
//!
//! One thread per connection: the app serves a few test clients at a time,
//! and blocking code is the easiest to follow. Nothing blocks for long,
//! though. A signal handler can only set a flag ([`sys::shutdown_requested`]),
//! so the accept loop polls the listener and each connection reads with a
//! timeout of `POLL_INTERVAL` (50 ms), and both look at the flag in between.
//!
//! Shutdown, once SIGTERM or SIGINT has arrived:
//!
//! 1. `/healthz` answers 503 and every response says `Connection: close`
//!    (see [`crate::routes`] and `serve_connection`).
//! 2. Connections are still accepted for `SHUTDOWN_DELAY_MS`, giving load
//!    balancers time to see the failing health check first.
//! 3. The listener is closed, so new connections are refused.
//! 4. Requests in flight finish and are answered; idle keep-alive
//!    connections are closed at once.
//! 5. When the last connection is gone, [`serve`] returns and the process
//!    exits 0.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::http::{self, Body, Content, Request, Status};
use crate::routes::App;
use crate::sys;

/// How often blocked loops look at the shutdown flag.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long a request, once its first byte has arrived, may take to arrive
/// in full (head and body). It bounds how long a slow or stuck client can
/// hold up shutdown.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long writing a response may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// After the last response on a connection, how long to wait for the client
/// to close its side (see [`close_gracefully`]).
const LINGER_TIMEOUT: Duration = Duration::from_millis(500);

/// Runs the server until a shutdown signal has been handled in full.
/// `started` is when the process started, which `STARTUP_DELAY_MS` counts
/// from. Errors are those that keep the server from running at all.
pub fn serve(app: App, started: Instant) -> io::Result<()> {
    if !sleep_unless_shutdown(started + app.config.startup_delay) {
        eprintln!("zdd-example-app: shutting down (0 in flight)");
        eprintln!("zdd-example-app: stopped");
        return Ok(());
    }

    // Loopback only: `--probe` still connects (to 127.0.0.1), while a
    // load balancer using the container's address is refused.
    let host = if app.config.listen_loopback_only {
        Ipv4Addr::LOCALHOST
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    let address = SocketAddrV4::new(host, app.config.port);
    let listener = TcpListener::bind(address).map_err(|error| {
        io::Error::new(error.kind(), format!("cannot listen on {address}: {error}"))
    })?;
    // Non-blocking so that a connection that vanishes between poll and
    // accept cannot leave the accept loop stuck.
    listener.set_nonblocking(true)?;
    println!(
        "zdd-example-app {} listening on {}",
        app.config.version,
        listener.local_addr()?
    );
    io::stdout().flush()?;

    let shared = Arc::new(Shared::new(app));
    accept_until(&listener, &shared, sys::shutdown_requested);

    let shutdown_delay = shared.app.config.shutdown_delay;
    if !shutdown_delay.is_zero() {
        eprintln!(
            "zdd-example-app: signal received; accepting for another {} ms (SHUTDOWN_DELAY_MS)",
            shutdown_delay.as_millis()
        );
        let deadline = Instant::now() + shutdown_delay;
        accept_until(&listener, &shared, || Instant::now() >= deadline);
    }

    drop(listener);
    shared.stopping.store(true, Ordering::SeqCst);
    eprintln!(
        "zdd-example-app: shutting down ({} in flight)",
        shared.in_flight.load(Ordering::SeqCst)
    );
    shared.wait_until_all_closed();
    eprintln!("zdd-example-app: stopped");
    Ok(())
}

/// Sleeps until `deadline`, or less if a shutdown signal arrives first.
/// Returns false in that case.
fn sleep_unless_shutdown(deadline: Instant) -> bool {
    loop {
        if sys::shutdown_requested() {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        thread::sleep(left.min(POLL_INTERVAL));
    }
}

/// State shared by the accept loop and the connection threads.
struct Shared {
    app: App,
    /// Set once the listener is closed: idle connections should close too.
    stopping: AtomicBool,
    /// Requests read but not yet fully answered.
    in_flight: AtomicUsize,
    /// Connections open; a mutex so that [`Shared::wait_until_all_closed`]
    /// can wait on `all_closed`. Use [`Shared::open_connections`].
    open: Mutex<usize>,
    all_closed: Condvar,
}

impl Shared {
    fn new(app: App) -> Shared {
        Shared {
            app,
            stopping: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            open: Mutex::new(0),
            all_closed: Condvar::new(),
        }
    }

    /// The number of open connections, locked. Poisoning is ignored: no
    /// code panics while holding the lock, and a count is never half-updated.
    fn open_connections(&self) -> MutexGuard<'_, usize> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_until_all_closed(&self) {
        let open = self.open_connections();
        drop(self.all_closed.wait_while(open, |open| *open > 0));
    }
}

/// Counts one open connection for as long as it lives.
struct ConnectionGuard(Arc<Shared>);

impl ConnectionGuard {
    fn new(shared: &Arc<Shared>) -> ConnectionGuard {
        *shared.open_connections() += 1;
        ConnectionGuard(Arc::clone(shared))
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut open = self.0.open_connections();
        *open -= 1;
        if *open == 0 {
            self.0.all_closed.notify_all();
        }
    }
}

/// Counts one request in flight for as long as it lives.
struct InFlightGuard<'a>(&'a AtomicUsize);

impl<'a> InFlightGuard<'a> {
    fn new(counter: &'a AtomicUsize) -> InFlightGuard<'a> {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(counter)
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts connections, each served on its own thread, until `done()`.
fn accept_until(listener: &TcpListener, shared: &Arc<Shared>, mut done: impl FnMut() -> bool) {
    while !done() {
        match sys::wait_readable(listener, POLL_INTERVAL) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(error) => {
                eprintln!("zdd-example-app: poll failed: {error}");
                thread::sleep(POLL_INTERVAL);
                continue;
            }
        }
        match listener.accept() {
            Ok((stream, _peer)) => spawn_connection(stream, shared),
            // Another wakeup for a connection that has already gone.
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            // E.g. out of file descriptors: keep serving the connections we
            // have, and try again a little later rather than spin.
            Err(error) => {
                eprintln!("zdd-example-app: accept failed: {error}");
                thread::sleep(POLL_INTERVAL);
            }
        }
    }
}

fn spawn_connection(stream: TcpStream, shared: &Arc<Shared>) {
    let guard = ConnectionGuard::new(shared);
    let spawned = thread::Builder::new()
        .name("connection".to_owned())
        .spawn(move || {
            // Errors here are the client's doing (reset, timeout, ...); all
            // there is to do is drop the connection, which returning does.
            let _ = serve_connection(stream, &guard.0);
        });
    if let Err(error) = spawned {
        eprintln!("zdd-example-app: cannot start a connection thread: {error}");
    }
}

/// Serves requests on one connection until either side closes it.
fn serve_connection(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL_INTERVAL))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    // Bytes received but not yet used: part of a request, or pipelined ones.
    let mut buf = Vec::new();
    loop {
        let (request, deadline) = match read_request(&mut stream, &mut buf, shared)? {
            Incoming::Request { request, deadline } => (request, deadline),
            Incoming::Closed => return Ok(()),
            Incoming::Rejected(status, reason) => {
                let response = shared.app.error(status, reason);
                stream.write_all(&response.to_bytes(false, false))?;
                return close_gracefully(stream);
            }
        };
        let _in_flight = InFlightGuard::new(&shared.in_flight);
        let content = read_body(&mut stream, &mut buf, request.body, deadline)?;
        let response = shared
            .app
            .handle(&request, &content, sys::shutdown_requested());
        // Checked after handling, which may have slept through a signal.
        let keep_alive = can_keep_alive(&request) && !sys::shutdown_requested();
        stream.write_all(&response.to_bytes(request.method == "HEAD", keep_alive))?;
        if !keep_alive {
            return close_gracefully(stream);
        }
    }
}

/// Whether the connection may carry another request after `request`.
fn can_keep_alive(request: &Request) -> bool {
    // After a body we cannot skip, the next request cannot be found.
    request.keep_alive() && request.body != Body::Unframed
}

/// What arrived on a connection.
enum Incoming {
    /// A request, whose head has been taken out of the buffer; its body, if
    /// any, must arrive by `deadline`.
    Request { request: Request, deadline: Instant },
    /// The client closed the connection, or the server is stopping and no
    /// request has begun to arrive.
    Closed,
    /// A request to answer with this status and reason, then close.
    Rejected(Status, &'static str),
}

/// Reads the next request head into `buf` and parses it.
fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    shared: &Shared,
) -> io::Result<Incoming> {
    // The request timeout runs from its first byte, so an idle keep-alive
    // connection can stay open indefinitely.
    let mut deadline = (!buf.is_empty()).then(|| Instant::now() + REQUEST_TIMEOUT);
    let head_len = loop {
        match http::head_len(buf) {
            Some(len) if len <= http::MAX_HEAD_LEN => break len,
            None if buf.len() < http::MAX_HEAD_LEN => {}
            Some(_) | None => {
                return Ok(Incoming::Rejected(
                    Status::HEADERS_TOO_LARGE,
                    "request head too large",
                ));
            }
        }
        match deadline {
            None if shared.stopping.load(Ordering::SeqCst) => return Ok(Incoming::Closed),
            Some(deadline) if Instant::now() >= deadline => {
                return Ok(Incoming::Rejected(
                    Status::REQUEST_TIMEOUT,
                    "request too slow",
                ));
            }
            _ => {}
        }
        match read_some(stream, buf)? {
            Some(0) => return Ok(Incoming::Closed),
            Some(_) => {
                deadline.get_or_insert_with(|| Instant::now() + REQUEST_TIMEOUT);
            }
            None => {}
        }
    };
    let parsed = http::parse_head(&buf[..head_len]);
    buf.drain(..head_len);
    Ok(match parsed {
        Ok(request) => Incoming::Request {
            request,
            deadline: deadline.unwrap_or_else(|| Instant::now() + REQUEST_TIMEOUT),
        },
        Err(error) => Incoming::Rejected(error.status(), error.reason()),
    })
}

/// Takes the request body out of `buf` and the stream: whole if it is at
/// most [`http::MAX_BODY_LEN`] bytes, else discarded.
fn read_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    body: Body,
    deadline: Instant,
) -> io::Result<Content> {
    let Body::Length(mut left) = body else {
        return Ok(Content::Unframed);
    };
    let mut kept = (left <= http::MAX_BODY_LEN).then(Vec::new);
    loop {
        let in_buf = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let taken = buf.drain(..in_buf);
        match &mut kept {
            Some(kept) => kept.extend(taken),
            None => drop(taken),
        }
        left -= in_buf as u64;
        if left == 0 {
            return Ok(kept.map_or(Content::TooLarge, Content::Bytes));
        }
        if Instant::now() >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        if read_some(stream, buf)? == Some(0) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Reads whatever has arrived, appending it to `buf`. Returns the number of
/// bytes read (0 when the client has closed), or `None` if nothing arrived
/// within the read timeout.
fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    let mut chunk = [0; 4096];
    match stream.read(&mut chunk) {
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(Some(n))
        }
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Closes a connection after its last response without losing that response.
///
/// Closing a socket with unread input makes the kernel send a reset, which
/// can destroy a response the client has not read yet. So: signal the end of
/// output, then discard input until the client closes too, for at most
/// [`LINGER_TIMEOUT`].
fn close_gracefully(mut stream: TcpStream) -> io::Result<()> {
    stream.shutdown(Shutdown::Write)?;
    let deadline = Instant::now() + LINGER_TIMEOUT;
    let mut discard = Vec::new();
    while Instant::now() < deadline {
        discard.clear();
        if read_some(&mut stream, &mut discard)? == Some(0) {
            break;
        }
    }
    Ok(())
}
