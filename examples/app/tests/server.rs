//! End-to-end tests: run the real binary on a free port and talk raw HTTP to
//! it, the way a deploy tool or load balancer would.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use zdd_e2e::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_zdd-example-app");

/// Generous bound for things that should take milliseconds, so the tests
/// still pass on a busy machine.
const PATIENCE: Duration = Duration::from_secs(5);

/// The app, running as a child process, killed when dropped.
struct App {
    child: Child,
    port: u16,
    started: Instant,
    /// Lines the app prints on stdout.
    stdout: mpsc::Receiver<String>,
}

impl App {
    /// Starts the app with only `env` (and `PORT`) set and waits until it
    /// is listening, on the address `env` asks for.
    fn start(env: &[(&str, &str)]) -> App {
        let app = App::spawn(env);
        let line = app.listening_line();
        assert_eq!(
            line,
            format!(
                "zdd-example-app {} listening on {}:{}",
                version(env),
                listen_host(env),
                app.port
            )
        );
        app
    }

    /// Starts the app without waiting for it.
    fn spawn(env: &[(&str, &str)]) -> App {
        let port = free_port();
        let mut child = app_command(port, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        App {
            stdout: lines(child.stdout.take().unwrap()),
            child,
            port,
            started: Instant::now(),
        }
    }

    fn listening_line(&self) -> String {
        self.stdout
            .recv_timeout(PATIENCE)
            .expect("the app did not say it was listening")
    }

    fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) takes plain integers; the child is still ours to
        // signal because it has not been reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits for the app to exit, failing the test after `timeout`.
    fn exit_status(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the app did not exit within {timeout:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything the app printed on stderr; call after it exited.
    fn stderr(&mut self) -> String {
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        stderr
    }

    fn connect(&self) -> Client {
        Client::connect(self.port)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command that runs the app with a clean environment.
fn app_command(port: u16, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PORT", port.to_string())
        .envs(env.iter().copied());
    command
}

fn version<'a>(env: &[(&str, &'a str)]) -> &'a str {
    env.iter()
        .find(|(name, _)| *name == "APP_VERSION")
        .map_or("dev", |(_, value)| value)
}

/// The address the app should say it listens on with `env`.
fn listen_host(env: &[(&str, &str)]) -> Ipv4Addr {
    let loopback_only = env.iter().any(|(name, value)| {
        *name == "LISTEN_LOOPBACK_ONLY"
            && ["1", "true", "yes"].contains(&value.to_ascii_lowercase().as_str())
    });
    if loopback_only {
        Ipv4Addr::LOCALHOST
    } else {
        Ipv4Addr::UNSPECIFIED
    }
}

/// Reads `stdout` line by line on a thread of its own.
fn lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// A parsed response.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// One connection to the app, for as many requests as it allows.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(port: u16) -> Client {
        Client::connect_to(Ipv4Addr::LOCALHOST, port)
    }

    /// Connects to `ip` rather than 127.0.0.1.
    fn connect_to(ip: Ipv4Addr, port: u16) -> Client {
        let stream = TcpStream::connect((ip, port))
            .unwrap_or_else(|error| panic!("cannot connect to {ip}:{port}: {error}"));
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// Sends `raw` as is, without reading anything.
    fn send(&mut self, raw: &str) {
        self.reader.get_mut().write_all(raw.as_bytes()).unwrap();
    }

    /// Sends a GET for `target` on this connection and reads the response.
    fn get(&mut self, target: &str) -> Response {
        self.send(&format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n"));
        self.response(false)
    }

    /// Reads one response; `head_only` for the answer to a HEAD request.
    fn response(&mut self, head_only: bool) -> Response {
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
        let mut response = Response {
            status,
            headers,
            body: String::new(),
        };
        if !head_only {
            let length: usize = response.header("Content-Length").unwrap().parse().unwrap();
            let mut body = vec![0; length];
            self.reader.read_exact(&mut body).unwrap();
            response.body = String::from_utf8(body).unwrap();
        }
        response
    }

    /// Whether the app has closed the connection (read gives end of file).
    fn is_closed(&mut self) -> bool {
        let mut byte = [0];
        matches!(self.reader.read(&mut byte), Ok(0))
    }
}

/// GET `target` on a new connection.
fn get(port: u16, target: &str) -> Response {
    Client::connect(port).get(target)
}

fn is_refused(port: u16) -> bool {
    match TcpStream::connect(("127.0.0.1", port)) {
        Ok(_) => false,
        Err(error) => error.kind() == std::io::ErrorKind::ConnectionRefused,
    }
}

fn probe(port: u16) -> std::process::Output {
    app_command(port, &[]).arg("--probe").output().unwrap()
}

/// How connecting to `ip`:`port` fails, or `None` if it succeeds. Bounded
/// by [`PATIENCE`], so a firewall that drops packets fails the test rather
/// than hanging it.
fn connect_error(ip: Ipv4Addr, port: u16) -> Option<io::ErrorKind> {
    TcpStream::connect_timeout(&SocketAddr::from((ip, port)), PATIENCE)
        .err()
        .map(|error| error.kind())
}

/// The host's IPv4 addresses outside 127.0.0.0/8, such as eth0's or
/// docker0's: the kind of address a load balancer uses to reach a
/// container.
fn non_loopback_ipv4_addresses() -> Vec<Ipv4Addr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs(3) only writes the head of a list to `list`, which
    // is freed below with freeifaddrs(3).
    let result = unsafe { libc::getifaddrs(&mut list) };
    assert_eq!(result, 0, "getifaddrs: {}", io::Error::last_os_error());
    let mut addresses = Vec::new();
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getifaddrs returned, which
        // has not been freed yet.
        let ifa = unsafe { &*entry };
        // SAFETY: a non-null `ifa_addr` points to a sockaddr whose family
        // says what it really is; AF_INET means a sockaddr_in.
        let ip = unsafe {
            if ifa.ifa_addr.is_null() || i32::from((*ifa.ifa_addr).sa_family) != libc::AF_INET {
                None
            } else {
                let sin = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
            }
        };
        if let Some(ip) = ip.filter(|ip| !ip.is_loopback() && !ip.is_unspecified()) {
            if !addresses.contains(&ip) {
                addresses.push(ip);
            }
        }
        entry = ifa.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once; nothing
    // borrowed from it outlives this call.
    unsafe { libc::freeifaddrs(list) };
    addresses
}

#[test]
fn root_answers_the_version() {
    let app = App::start(&[("APP_VERSION", "v1.2.3")]);
    let response = get(app.port, "/");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "v1.2.3\n");
    assert_eq!(response.header("Content-Type"), Some("text/plain"));
    assert_eq!(response.header("X-App-Version"), Some("v1.2.3"));
    assert!(!response.header("X-Served-By").unwrap().is_empty());
}

#[test]
fn keep_alive_serves_several_requests_per_connection() {
    let app = App::start(&[]);
    let mut client = app.connect();
    assert_eq!(client.get("/").body, "dev\n");
    assert_eq!(client.get("/healthz").body, "ok\n");
    client.send("HEAD / HTTP/1.1\r\n\r\n");
    let head = client.response(true);
    assert_eq!(
        (head.status, head.header("Content-Length")),
        (200, Some("4"))
    );
    // A body is skipped, not taken for the next request.
    client.send("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(client.response(false).status, 405);
    // Pipelined requests are answered in order.
    client.send("GET /healthz HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(client.response(false).body, "ok\n");
    let last = client.response(false);
    assert_eq!(
        (last.body.as_str(), last.header("Connection")),
        ("dev\n", Some("close"))
    );
    assert!(client.is_closed());

    let mut client = app.connect();
    client.send("GET / HTTP/1.0\r\n\r\n");
    assert_eq!(client.response(false).header("Connection"), Some("close"));
    assert!(client.is_closed());
}

#[test]
fn errors() {
    let app = App::start(&[]);
    assert_eq!(get(app.port, "/nope").status, 404);
    assert_eq!(get(app.port, "/?delay_ms=soon").status, 400);

    let mut client = app.connect();
    client.send("DELETE /healthz HTTP/1.1\r\n\r\n");
    let response = client.response(false);
    assert_eq!(
        (response.status, response.header("Allow")),
        (405, Some("GET, HEAD"))
    );

    let mut client = app.connect();
    client.send("NONSENSE\r\n\r\n");
    assert_eq!(client.response(false).status, 400);
    assert!(client.is_closed());

    let mut client = app.connect();
    client.send(&format!(
        "GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "x".repeat(20_000)
    ));
    assert_eq!(client.response(false).status, 431);
}

#[test]
fn healthz_is_503_when_never_healthy() {
    let healthy = App::start(&[]);
    let response = get(healthy.port, "/healthz");
    assert_eq!((response.status, response.body.as_str()), (200, "ok\n"));

    let sick = App::start(&[("NEVER_HEALTHY", "1")]);
    assert_eq!(get(sick.port, "/healthz").status, 503);
    assert_eq!(get(sick.port, "/").status, 200);
}

#[test]
fn startup_delay_holds_back_listening() {
    let delay = Duration::from_millis(800);
    let app = App::spawn(&[("STARTUP_DELAY_MS", "800")]);
    thread::sleep(Duration::from_millis(200));
    assert!(is_refused(app.port), "listening before STARTUP_DELAY_MS");
    app.listening_line();
    assert!(app.started.elapsed() >= delay);
    assert_eq!(get(app.port, "/healthz").status, 200);
}

#[test]
fn request_delays() {
    let app = App::start(&[("REQUEST_DELAY_MS", "600")]);
    let timed = |target: &str| {
        let start = Instant::now();
        assert_eq!(get(app.port, target).status, 200);
        start.elapsed()
    };
    assert!(timed("/") >= Duration::from_millis(600));
    assert!(timed("/?delay_ms=0") < Duration::from_millis(500));
    let delayed = timed("/?delay_ms=300");
    assert!(delayed >= Duration::from_millis(300) && delayed < Duration::from_millis(600));
    // The health check is never delayed.
    assert!(timed("/healthz") < Duration::from_millis(500));
}

#[test]
fn crash_after_exits_with_code_3() {
    let mut app = App::spawn(&[("CRASH_AFTER_MS", "300")]);
    let status = app.exit_status(PATIENCE);
    assert!(app.started.elapsed() >= Duration::from_millis(300));
    assert_eq!(status.code(), Some(3));
    assert!(app
        .stderr()
        .contains("zdd-example-app: crashing as asked (CRASH_AFTER_MS=300)"));
}

#[test]
fn probe_exit_codes() {
    let healthy = App::start(&[]);
    let output = probe(healthy.port);
    assert_eq!(output.status.code(), Some(0), "{output:?}");

    let sick = App::start(&[("NEVER_HEALTHY", "1")]);
    let output = probe(sick.port);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("503"));

    let output = probe(free_port());
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot connect"));
}

/// What the end-to-end tests use for "HAProxy's check fails while the
/// Docker HEALTHCHECK passes": the app answers, and `--probe` passes, on
/// 127.0.0.1, but any other address of the host is refused.
#[test]
fn listen_loopback_only_refuses_other_addresses() {
    // `App::start` checks that it says it listens on 127.0.0.1:PORT.
    let loopback = App::start(&[("LISTEN_LOOPBACK_ONLY", "1")]);
    let response = get(loopback.port, "/healthz");
    assert_eq!((response.status, response.body.as_str()), (200, "ok\n"));
    let output = probe(loopback.port);
    assert_eq!(output.status.code(), Some(0), "{output:?}");

    // The host's own non-loopback addresses, and 127.0.0.2: Linux delivers
    // all of 127.0.0.0/8 locally, so only a listener bound to 127.0.0.1
    // itself, not to 0.0.0.0, refuses it. That keeps the test a real check
    // on a machine with no address but loopback.
    let non_loopback = non_loopback_ipv4_addresses();
    eprintln!("non-loopback addresses of this host: {non_loopback:?}");
    let others = non_loopback
        .into_iter()
        .chain([Ipv4Addr::new(127, 0, 0, 2)]);
    // The control: on 0.0.0.0 the app answers on every one of them, so a
    // refusal below comes from the bound address, not a firewall or route.
    let everywhere = App::start(&[]);
    for ip in others {
        let response = Client::connect_to(ip, everywhere.port).get("/healthz");
        assert_eq!(response.status, 200, "app on 0.0.0.0 via {ip}");
        assert_eq!(
            connect_error(ip, loopback.port),
            Some(io::ErrorKind::ConnectionRefused),
            "app with LISTEN_LOOPBACK_ONLY=1 via {ip}:{}",
            loopback.port
        );
    }
    // Still serving on loopback after all that.
    assert_eq!(get(loopback.port, "/").status, 200);
}

#[test]
fn sigterm_lets_the_request_in_flight_finish() {
    let mut app = App::start(&[]);
    let mut slow = app.connect();
    slow.send("GET /?delay_ms=1500 HTTP/1.1\r\n\r\n");
    thread::sleep(Duration::from_millis(300));
    app.signal(libc::SIGTERM);

    let deadline = Instant::now() + PATIENCE;
    while !is_refused(app.port) {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        thread::sleep(Duration::from_millis(20));
    }
    let response = slow.response(false);
    assert_eq!((response.status, response.body.as_str()), (200, "dev\n"));
    assert_eq!(response.header("Connection"), Some("close"));
    let answered = Instant::now();
    drop(slow);

    assert!(app.exit_status(PATIENCE).success());
    assert!(answered.elapsed() < Duration::from_secs(2));
    let stderr = app.stderr();
    assert!(
        stderr.contains("zdd-example-app: shutting down (1 in flight)"),
        "{stderr}"
    );
    assert!(stderr.contains("zdd-example-app: stopped"), "{stderr}");
}

#[test]
fn sigint_closes_idle_connections() {
    let mut app = App::start(&[]);
    let mut idle = app.connect();
    assert_eq!(idle.get("/").status, 200);
    app.signal(libc::SIGINT);
    assert!(app.exit_status(Duration::from_secs(2)).success());
    assert!(idle.is_closed());
}

#[test]
fn shutdown_delay_keeps_accepting_but_fails_health() {
    let mut app = App::start(&[("SHUTDOWN_DELAY_MS", "700")]);
    let signalled = Instant::now();
    app.signal(libc::SIGTERM);
    thread::sleep(Duration::from_millis(100));
    let health = get(app.port, "/healthz");
    assert_eq!(
        (health.status, health.header("Connection")),
        (503, Some("close"))
    );
    assert_eq!(get(app.port, "/").status, 200);

    let deadline = Instant::now() + PATIENCE;
    while !is_refused(app.port) {
        assert!(
            Instant::now() < deadline,
            "still accepting after SHUTDOWN_DELAY_MS"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(signalled.elapsed() >= Duration::from_millis(700));
    assert!(app.exit_status(PATIENCE).success());
}

#[test]
fn command_line_and_environment_errors() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for variable in [
        "APP_VERSION",
        "PORT",
        "STARTUP_DELAY_MS",
        "CRASH_AFTER_MS",
        "LISTEN_LOOPBACK_ONLY",
        "--probe",
    ] {
        assert!(
            help.contains(variable),
            "--help does not mention {variable}"
        );
    }

    let unknown = Command::new(BIN).arg("--bogus").output().unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("--bogus"));

    let bad_port = Command::new(BIN).env("PORT", "abc").output().unwrap();
    assert_eq!(bad_port.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_port.stderr).contains("PORT"));

    // A probe exits 1, never 2, which Docker reserves.
    let bad_probe = Command::new(BIN)
        .env("PORT", "abc")
        .arg("--probe")
        .output()
        .unwrap();
    assert_eq!(bad_probe.status.code(), Some(1));
}
