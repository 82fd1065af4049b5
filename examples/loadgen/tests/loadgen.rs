//! End-to-end tests: run the real binary against a small HTTP server that
//! lives in the test and misbehaves on cue, then check the `--json` report
//! against what the server knows it did.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_zdd-loadgen");

/// Generous bound for a run that should take a second or less, so the tests
/// still pass on a busy machine.
const PATIENCE: Duration = Duration::from_secs(10);

/// Which request the test server is answering.
#[derive(Debug, Clone, Copy)]
struct Request {
    /// Over the whole server, from 0.
    number: usize,
    /// The connection's number, from 0.
    connection: usize,
    /// Which request on its connection, from 0.
    on_connection: usize,
}

/// What the test server does with a request it has read.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// Answers `status` with `body` (and `Connection: close` and a close
    /// if the client asked for it).
    Respond(u16, &'static str),
    /// Answers 200 with a chunked body and an `X-App-Version` header.
    RespondChunked {
        header: &'static str,
        body: &'static str,
    },
    /// Answers 200 "v1" without saying so, then closes the connection.
    RespondThenClose,
    /// Waits, then answers 200 "v1".
    Delay(Duration),
    /// Closes the connection without a byte.
    Close,
    /// Resets the connection (RST) without a byte.
    Reset,
    /// Sends the head and part of the body, then closes.
    Truncate,
}

/// An HTTP server on 127.0.0.1, running until the test process ends.
struct Server {
    port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    /// Requests that carried `Connection: close`.
    close_requests: Arc<AtomicUsize>,
}

impl Server {
    fn start(behave: impl Fn(Request) -> Action + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = Server {
            port: listener.local_addr().unwrap().port(),
            connections: Arc::default(),
            requests: Arc::default(),
            close_requests: Arc::default(),
        };
        let behave = Arc::new(behave);
        let (connections, requests, close_requests) = (
            Arc::clone(&server.connections),
            Arc::clone(&server.requests),
            Arc::clone(&server.close_requests),
        );
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let connection = connections.fetch_add(1, Ordering::SeqCst);
                let behave = Arc::clone(&behave);
                let requests = Arc::clone(&requests);
                let close_requests = Arc::clone(&close_requests);
                thread::spawn(move || {
                    serve(stream, connection, &*behave, &requests, &close_requests)
                });
            }
        });
        server
    }

    /// The plain server: 200 "v1\n" to everything.
    fn ok() -> Server {
        Server::start(|_| Action::Respond(200, "v1\n"))
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn serve(
    stream: TcpStream,
    connection: usize,
    behave: &dyn Fn(Request) -> Action,
    requests: &AtomicUsize,
    close_requests: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream);
    for on_connection in 0.. {
        // Read a request head.
        let mut client_closes = false;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            client_closes |= line.eq_ignore_ascii_case("connection: close\r\n");
        }
        let number = requests.fetch_add(1, Ordering::SeqCst);
        if client_closes {
            close_requests.fetch_add(1, Ordering::SeqCst);
        }
        let request = Request {
            number,
            connection,
            on_connection,
        };
        let mut stream = reader.get_ref();
        let connection_header = if client_closes {
            "Connection: close\r\n"
        } else {
            ""
        };
        let respond = |mut stream: &TcpStream, status: u16, body: &str| {
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n{connection_header}\r\n",
                body.len()
            );
            stream.write_all(format!("{head}{body}").as_bytes()).is_ok()
        };
        match behave(request) {
            Action::Respond(status, body) => {
                if !respond(stream, status, body) {
                    return;
                }
            }
            Action::Delay(delay) => {
                thread::sleep(delay);
                if !respond(stream, 200, "v1\n") {
                    return;
                }
            }
            Action::RespondChunked { header, body } => {
                let text = format!(
                    "HTTP/1.1 200 OK\r\nX-App-Version: {header}\r\nTransfer-Encoding: chunked\r\n\
                     {connection_header}\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                    body.len()
                );
                if stream.write_all(text.as_bytes()).is_err() {
                    return;
                }
            }
            Action::RespondThenClose => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nv1\n");
                return;
            }
            Action::Close => return,
            Action::Reset => {
                reset(stream);
                return;
            }
            Action::Truncate => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nv1\n");
                return;
            }
        }
        if client_closes {
            return;
        }
    }
}

/// Makes the coming close of `stream` a reset (RST) instead of a FIN.
fn reset(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the option value is a valid `linger` that outlives the call,
    // and its size is passed with it.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(result, 0);
}

/// A finished run of the load generator.
struct Run {
    status: ExitStatus,
    json: Value,
    stderr: String,
}

impl Run {
    fn n(&self, pointer: &str) -> u64 {
        self.json
            .pointer(pointer)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no {pointer} in {}", self.json))
    }

    /// `(requests, ok, failed, retried)`.
    fn counts(&self) -> (u64, u64, u64, u64) {
        (
            self.n("/requests"),
            self.n("/ok"),
            self.n("/failed"),
            self.n("/retried"),
        )
    }

    fn failures(&self) -> Vec<(String, u64)> {
        let failures = self.json["failures"].as_object().unwrap();
        failures
            .iter()
            .filter(|(_, n)| n.as_u64() != Some(0))
            .map(|(kind, n)| (kind.clone(), n.as_u64().unwrap()))
            .collect()
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (at most [`PATIENCE`]) for the load generator to exit and reads
/// its report.
fn finish(mut child: Child) -> Run {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    let err = thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("zdd-loadgen did not finish in time");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("bad JSON ({error}): {stdout:?}\nstderr: {stderr}"));
    assert_eq!(stdout.lines().count(), 1, "one line of JSON");
    Run {
        status,
        json,
        stderr,
    }
}

fn loadgen(server: &Server, args: &[&str]) -> Run {
    let url = server.url();
    let mut all = vec!["--url", &url, "--json"];
    all.extend_from_slice(args);
    finish(spawn(&all))
}

/// A path in a fresh directory, not yet existing.
fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zdd-loadgen-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("stop")
}

#[test]
fn all_ok_on_keep_alive_connections() {
    let server = Server::ok();
    let run = loadgen(&server, &["--requests", "200", "-c", "4"]);
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.counts(), (200, 200, 0, 0));
    assert_eq!(run.failures(), []);
    assert_eq!(run.json["versions"], serde_json::json!({"v1": 200}));
    assert_eq!(run.json["stopped_by"], "requests");
    assert_eq!(run.json["mode"], "keepalive");
    // One connection per worker, reused for every request.
    assert!(
        server.connections() <= 4,
        "{} connections",
        server.connections()
    );
    assert_eq!(run.n("/connections"), server.connections() as u64);
    assert_eq!(server.close_requests.load(Ordering::SeqCst), 0);
    let p50 = run.json["latency_ms"]["p50"].as_f64().unwrap();
    let max = run.json["latency_ms"]["max"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= max);
    let timeline = run.json["timeline"].as_array().unwrap();
    let ok: u64 = timeline.iter().map(|b| b["ok"].as_u64().unwrap()).sum();
    assert_eq!(ok, 200);
    assert!(run.stderr.contains("200 ok, 0 failed"), "{}", run.stderr);
}

#[test]
fn close_mode_opens_a_connection_per_request() {
    let server = Server::ok();
    let run = loadgen(&server, &["--requests", "50", "-c", "2", "--mode", "close"]);
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.counts(), (50, 50, 0, 0));
    assert_eq!(server.connections(), 50);
    assert_eq!(run.n("/connections"), 50);
    assert_eq!(server.close_requests.load(Ordering::SeqCst), 50);
}

#[test]
fn mixed_mode_splits_the_workers() {
    // A short delay per request keeps both workers busy, whatever the
    // scheduler does.
    let server = Server::start(|_| Action::Delay(Duration::from_millis(5)));
    let run = loadgen(&server, &["--requests", "60", "-c", "2", "--mode", "mixed"]);
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.counts(), (60, 60, 0, 0));
    // Worker 0 keeps one connection; worker 1 opens one per request.
    let closing = server.close_requests.load(Ordering::SeqCst);
    assert!(closing > 0 && closing < 60, "{closing}");
    assert_eq!(server.connections(), closing + 1);
}

#[test]
fn error_statuses_are_failures_by_status() {
    let server = Server::start(|request| match request.number % 5 {
        4 => Action::Respond(503, "busy\n"),
        3 => Action::Respond(302, ""),
        _ => Action::Respond(200, "v1\n"),
    });
    let run = loadgen(&server, &["--requests", "50", "-c", "2"]);
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(run.counts(), (50, 30, 20, 0));
    assert_eq!(
        run.failures(),
        [("status_302".to_owned(), 10), ("status_503".to_owned(), 10)]
    );
    // Two workers: which failure is recorded first depends on scheduling,
    // so only what is recorded is checked, not its order.
    let first = run.json["first_failures"].as_array().unwrap();
    assert_eq!(first.len(), 10);
    assert!(
        first
            .iter()
            .all(|f| f["detail"].as_str().unwrap().starts_with("HTTP ")),
        "{first:?}"
    );
    assert!(
        run.stderr
            .contains("failures: status_302 10, status_503 10"),
        "{}",
        run.stderr
    );
}

#[test]
fn resets_and_cut_short_responses_are_failures() {
    let server = Server::start(|request| match request.number % 4 {
        0 => Action::Reset,
        1 => Action::Truncate,
        2 => Action::Close,
        _ => Action::Respond(200, "v1\n"),
    });
    let run = loadgen(&server, &["--requests", "40", "-c", "1", "--mode", "close"]);
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(run.counts(), (40, 10, 30, 0));
    // A new connection closed before any response byte is cut short too.
    assert_eq!(
        run.failures(),
        [("reset".to_owned(), 10), ("truncated".to_owned(), 20)]
    );
    let details: Vec<&str> = run.json["first_failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["detail"].as_str().unwrap())
        .collect();
    assert!(
        details[1].contains("before the end of the response"),
        "{details:?}"
    );
    assert!(
        details[2].contains("before any response byte"),
        "{details:?}"
    );
}

#[test]
fn idle_close_race_on_a_reused_connection_is_retried() {
    // Each connection answers its first request; on the next, the server
    // reads the request and closes (or resets) without a byte, as a server
    // closing an idle connection just as a request arrives does.
    let server = Server::start(|request| match request.on_connection {
        0 => Action::Respond(200, "v1\n"),
        _ if request.connection % 2 == 0 => Action::Close,
        _ => Action::Reset,
    });
    let run = loadgen(&server, &["--requests", "10", "-c", "1"]);
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.counts(), (10, 10, 0, 9));
    assert_eq!(server.connections(), 10);
    assert_eq!(run.n("/connections"), 10);
    let timeline = run.json["timeline"].as_array().unwrap();
    let retried: u64 = timeline
        .iter()
        .map(|b| b["retried"].as_u64().unwrap())
        .sum();
    assert_eq!(retried, 9);
}

#[test]
fn a_retry_is_only_on_a_reused_connection_and_only_once() {
    // Connection 0 answers once; every later connection closes at once.
    let server = Server::start(
        |request| match (request.connection, request.on_connection) {
            (0, 0) => Action::Respond(200, "v1\n"),
            _ => Action::Close,
        },
    );
    let run = loadgen(&server, &["--requests", "3", "-c", "1"]);
    assert_eq!(run.status.code(), Some(1));
    // Request 2 is retried on a new connection, which fails; request 3
    // starts on a new connection and fails without a retry.
    assert_eq!(run.counts(), (3, 1, 2, 1));
    assert_eq!(run.failures(), [("truncated".to_owned(), 2)]);
    assert_eq!(server.connections(), 3);
}

#[test]
fn a_server_closing_idle_connections_causes_no_failure() {
    let server = Server::start(|_| Action::RespondThenClose);
    let run = loadgen(&server, &["--requests", "40", "-c", "2"]);
    assert!(run.status.success(), "{}", run.stderr);
    let (requests, ok, failed, _) = run.counts();
    assert_eq!((requests, ok, failed), (40, 40, 0));
    assert_eq!(server.connections(), 40);
}

#[test]
fn versions_come_from_the_header_or_the_body() {
    let server = Server::start(|request| match request.number % 3 {
        0 => Action::RespondChunked {
            header: "v2",
            body: "hello\n",
        },
        1 => Action::RespondChunked {
            header: "",
            body: "v3\r\nmore",
        },
        _ => Action::Respond(200, ""),
    });
    let run = loadgen(&server, &["--requests", "30", "-c", "1"]);
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(
        run.json["versions"],
        serde_json::json!({"(none)": 10, "v2": 10, "v3": 10})
    );
}

#[test]
fn timeouts_and_refused_connections() {
    let slow = Server::start(|_| Action::Delay(Duration::from_secs(3)));
    let started = Instant::now();
    let run = loadgen(&slow, &["--requests", "2", "-c", "1", "--timeout", "300ms"]);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(run.counts(), (2, 0, 2, 0));
    assert_eq!(run.failures(), [("timeout".to_owned(), 2)]);
    assert!(run.json["latency_ms"]["p50"].is_null());

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let run = finish(spawn(&[
        "--url",
        &url,
        "--json",
        "--requests",
        "3",
        "-c",
        "1",
    ]));
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(run.counts(), (3, 0, 3, 0));
    assert_eq!(run.failures(), [("connect_refused".to_owned(), 3)]);
    assert_eq!(run.n("/connections"), 0);
}

#[test]
fn until_file_stops_the_run() {
    let server = Server::ok();
    let stop = temp_path("until");
    let url = server.url();
    let args = ["--url", &url, "--json", "-c", "2", "--rate", "200"];
    let child = spawn(&[&args[..], &["--until-file", stop.to_str().unwrap()]].concat());
    thread::sleep(Duration::from_millis(500));
    std::fs::write(&stop, "").unwrap();
    let touched = Instant::now();
    let run = finish(child);
    assert!(touched.elapsed() < Duration::from_secs(2));
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.json["stopped_by"], "until_file");
    let (requests, ok, failed, _) = run.counts();
    assert!(
        requests > 20 && ok == requests && failed == 0,
        "{}",
        run.json
    );

    // A file left over from an earlier run is refused up front.
    let output = Command::new(BIN)
        .args(["--url", &url, "--until-file", stop.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("already exists"));
    assert_eq!(server.requests.load(Ordering::SeqCst) as u64, requests);
    let _ = std::fs::remove_dir_all(stop.parent().unwrap());
}

#[test]
fn sigterm_stops_the_run_with_a_summary() {
    let server = Server::ok();
    let url = server.url();
    let child = spawn(&["--url", &url, "--json", "-c", "2", "--duration", "60s"]);
    thread::sleep(Duration::from_millis(400));
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) takes plain integers; the child has not been reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let signalled = Instant::now();
    let run = finish(child);
    assert!(signalled.elapsed() < Duration::from_secs(2));
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.json["stopped_by"], "signal");
    assert!(run.n("/requests") > 0);
    assert_eq!(run.n("/failed"), 0);
    assert!(run.stderr.contains("stopped by signal"), "{}", run.stderr);
}

#[test]
fn requests_in_flight_at_the_stop_are_finished() {
    let server = Server::start(|_| Action::Delay(Duration::from_millis(600)));
    let run = loadgen(&server, &["-c", "3", "--duration", "200ms"]);
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.counts(), (3, 3, 0, 0));
    assert!(run.json["duration_s"].as_f64().unwrap() >= 0.6);
    assert_eq!(run.json["stopped_by"], "duration");
}

#[test]
fn rate_and_timeline() {
    let server = Server::ok();
    let run = loadgen(
        &server,
        &[
            "-c",
            "4",
            "--rate",
            "40",
            "--duration",
            "1s",
            "--bucket",
            "250ms",
        ],
    );
    assert!(run.status.success(), "{}", run.stderr);
    let requests = run.n("/requests");
    assert!(
        (30..=42).contains(&requests),
        "{requests} requests at 40/s for 1 s"
    );
    let timeline = run.json["timeline"].as_array().unwrap();
    let starts: Vec<f64> = timeline.iter().map(|b| b["t"].as_f64().unwrap()).collect();
    assert_eq!(starts[..4], [0.0, 0.25, 0.5, 0.75]);
    assert!(starts.len() <= 5, "{starts:?}");
    let ok: u64 = timeline.iter().map(|b| b["ok"].as_u64().unwrap()).sum();
    assert_eq!(ok, requests);
    // Paced: no bucket holds much more than its share of 10.
    for bucket in timeline {
        assert!(bucket["ok"].as_u64().unwrap() <= 13, "{bucket}");
    }
}

#[test]
fn usage() {
    let output = Command::new(BIN).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--url is required"));

    let output = Command::new(BIN)
        .args(["--url", "http://127.0.0.1:1/", "--mode", "fast"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--mode"));

    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("USAGE") && help.contains("--until-file") && help.contains("EXIT CODES"));
}
