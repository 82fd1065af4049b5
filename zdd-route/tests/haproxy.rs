//! `zdd-route` against a real HAProxy.
//!
//! Each test starts its own `haproxy -db` (Debian's 2.6 here) from a
//! configuration written into a scratch directory, with an admin Runtime
//! API socket (unix and TCP), a user-level one, a frontend on a free port
//! and an empty backend `web` with an HTTP health check. The "containers"
//! are plain HTTP servers in this test process on 127.0.0.1 ephemeral
//! ports, so records can be written by hand with `address: 127.0.0.1:PORT`
//! and made-up ids; no Docker engine is needed.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::{json, Value};
use zdd_e2e::free_port;
use zdd_route::haproxy::{Endpoint, Runtime, ServerStat, ServerState};

/// Fast checks, so a test waits tenths of a second for a server to be UP.
const FAST_CHECKS: &str = "check inter 100ms fall 2 rise 1";

// --- HAProxy -------------------------------------------------------------

/// A running `haproxy -db`, killed (and its directory removed) on drop.
struct Haproxy {
    child: Child,
    dir: PathBuf,
    /// The admin unix socket.
    socket: PathBuf,
    /// The admin TCP socket, `127.0.0.1:PORT`.
    tcp_socket: String,
    /// A socket at `level user`.
    user_socket: PathBuf,
    /// The frontend routing to backend `web`.
    frontend: u16,
}

impl Haproxy {
    /// Starts HAProxy with backend `web` (empty) and, with `legacy_port`,
    /// backend `legacy` holding one server from the configuration file,
    /// `legacy-1` at 127.0.0.1:`legacy_port`.
    fn start(legacy_port: Option<u16>) -> Haproxy {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "zdd-route-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("admin.sock");
        let user_socket = dir.join("user.sock");
        let tcp_socket = format!("127.0.0.1:{}", free_port());
        let frontend = free_port();
        let mut config = format!(
            "global
    stats socket {socket} mode 600 level admin
    stats socket {user} mode 600 level user
    stats socket {tcp_socket} level admin

defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s

frontend fe
    bind 127.0.0.1:{frontend}
    default_backend web

backend web
    balance roundrobin
    option httpchk GET /healthz
",
            socket = socket.display(),
            user = user_socket.display(),
        );
        if let Some(port) = legacy_port {
            config.push_str(&format!(
                "
backend legacy
    balance roundrobin
    option httpchk GET /healthz
    server legacy-1 127.0.0.1:{port} check inter 100ms fall 2 rise 1
"
            ));
        }
        let config_path = dir.join("haproxy.cfg");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.join("haproxy.log")).unwrap();
        let child = Process::new("haproxy")
            .arg("-f")
            .arg(&config_path)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run haproxy ({e}); install it: apt-get install -y haproxy")
            });
        let haproxy = Haproxy {
            child,
            dir,
            socket,
            tcp_socket,
            user_socket,
            frontend,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while haproxy.runtime().command("show info").is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy did not open its socket: {}",
                fs::read_to_string(haproxy.dir.join("haproxy.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(20));
        }
        haproxy
    }

    fn runtime(&self) -> Runtime {
        Runtime::new(Endpoint::Unix(self.socket.clone()))
    }

    fn servers(&self, backend: &str) -> Vec<ServerState> {
        self.runtime().servers_state(backend).unwrap()
    }

    fn server_at(&self, backend: &str, port: u16) -> Option<ServerState> {
        self.servers(backend).into_iter().find(|s| s.port == port)
    }

    fn stat(&self, backend: &str, name: &str) -> ServerStat {
        self.runtime()
            .stats(backend)
            .unwrap()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no server {backend}/{name}"))
    }

    /// `GET path` through the frontend: (status, body).
    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.frontend, path)
    }

    /// zdd-route on the admin unix socket and backend `web`, fast checks.
    fn route(&self, extra: &[&str], input: &str) -> Run {
        let socket = self.socket.to_str().unwrap();
        let mut args = vec!["--socket", socket, "--backend", "web"];
        args.extend(["--server-options", FAST_CHECKS]);
        args.extend(extra);
        zdd_route(&args, input)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

// --- the "containers" ----------------------------------------------------

/// An HTTP server standing for one container: `/healthz` answers 200 while
/// `healthy` (else 503), `/slow` answers after 1.5 s, anything else answers
/// at once; every body is the server's name.
struct App {
    name: String,
    port: u16,
    healthy: Arc<AtomicBool>,
}

impl App {
    fn start(name: &str, healthy: bool) -> App {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let healthy = Arc::new(AtomicBool::new(healthy));
        let (body, health) = (name.to_owned(), healthy.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (body, health) = (body.clone(), health.clone());
                thread::spawn(move || serve(stream, &body, &health));
            }
        });
        App {
            name: name.to_owned(),
            port,
            healthy,
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A container record for this app.
    fn record(&self, role: &str) -> Value {
        json!({
            "type": "container",
            "id": format!("{:0>64}", format!("{:x}", self.port)),
            "name": format!("api-{}", self.name),
            "service": "api",
            "address": self.address(),
            "role": role,
        })
    }

    /// A healthy new replica that this run started (zdd-scale's
    /// `"started": true`).
    fn new_healthy(&self) -> Value {
        let mut record = self.record("new");
        record["started"] = json!(true);
        record["health"] = json!("healthy");
        record["health_reason"] = json!("HTTP /healthz answered 200");
        record
    }
}

fn serve(mut stream: TcpStream, body: &str, healthy: &AtomicBool) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let request = String::from_utf8_lossy(&request);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let status = match path {
        "/healthz" if !healthy.load(Ordering::SeqCst) => "503 Service Unavailable",
        "/slow" => {
            thread::sleep(Duration::from_millis(1500));
            "200 OK"
        }
        _ => "200 OK",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

// --- running zdd-route ---------------------------------------------------

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn records(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The output record of the container named `api-NAME`.
    fn container(&self, app: &App) -> Value {
        let name = format!("api-{}", app.name);
        self.records()
            .into_iter()
            .find(|r| r["name"] == json!(name))
            .unwrap_or_else(|| panic!("no record for {name} in {}", self.stdout))
    }

    fn expect(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

fn zdd_route(args: &[&str], input: &str) -> Run {
    let start = Instant::now();
    let output = Command::cargo_bin("zdd-route")
        .unwrap()
        .args(args)
        .write_stdin(input.to_owned())
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
        took: start.elapsed(),
    }
}

fn lines(records: &[Value]) -> String {
    records.iter().map(|r| format!("{r}\n")).collect()
}

/// Waits until `done` holds, for up to 5 s.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

// --- the tests -----------------------------------------------------------

#[test]
fn a_new_server_is_added_confirmed_up_and_routed_and_a_rerun_converges() {
    let haproxy = Haproxy::start(None);
    let a = App::start("a", true);
    assert!(haproxy.servers("web").is_empty());

    let image = r#"{"type":"image","image":"api:1",  "image_id":"sha256:1","release":"1"}"#;
    let mut record = a.new_healthy();
    record["ticket"] = json!("OPS-42");
    let input = format!("{image}\n{record}\n");
    let run = haproxy.route(&[], &input);
    run.expect(0);
    assert_eq!(
        run.stdout.lines().next(),
        Some(image),
        "passed through as it was"
    );
    let out = run.container(&a);
    assert_eq!(out["routed"], json!(true));
    assert_eq!(out["ticket"], json!("OPS-42"));
    assert!(out.get("route_error").is_none());
    assert!(
        run.stderr
            .contains(&format!("added api-a ({}) to web", a.address())),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("api-a is UP after"), "{}", run.stderr);

    let servers = haproxy.servers("web");
    assert_eq!(servers.len(), 1);
    assert_eq!(
        (servers[0].name.as_str(), servers[0].port),
        ("api-a", a.port)
    );
    assert_eq!(haproxy.stat("web", "api-a").status, "UP");
    assert_eq!(haproxy.get("/"), (200, "a".to_owned()));

    // Again: the server is found by address, nothing is added.
    let again = haproxy.route(&[], &input);
    again.expect(0);
    assert_eq!(again.container(&a)["routed"], json!(true));
    assert_eq!(haproxy.servers("web").len(), 1);
    assert!(
        again.stderr.contains("is in web as server api-a"),
        "{}",
        again.stderr
    );
}

#[test]
fn the_switch_drains_the_old_server_while_its_request_finishes_then_removes_it() {
    let haproxy = Haproxy::start(None);
    let (a, b) = (App::start("a", true), App::start("b", true));
    haproxy.route(&[], &lines(&[a.new_healthy()])).expect(0);

    // A slow request in flight on the old server.
    let frontend = haproxy.frontend;
    let slow = thread::spawn(move || http_get(frontend, "/slow"));
    wait_for("the slow request to reach api-a", || {
        haproxy.stat("web", "api-a").scur == 1
    });

    let run = haproxy.route(&[], &lines(&[a.record("old"), b.new_healthy()]));
    run.expect(0);
    let (old, new) = (run.container(&a), run.container(&b));
    assert_eq!(new["routed"], json!(true));
    assert_eq!(old["drained"], json!(true));
    assert!(old.get("drain_timed_out").is_none());
    assert_eq!(
        slow.join().unwrap(),
        (200, "a".to_owned()),
        "in-flight request"
    );
    assert!(
        run.took >= Duration::from_millis(800),
        "waited for the session"
    );
    let drain_line = format!("draining api-a ({}): 0 sessions after", a.address());
    assert!(run.stderr.contains(&drain_line), "{}", run.stderr);
    // New requests all go to the new server; the old one stays, drained.
    assert_eq!(haproxy.stat("web", "api-a").status, "DRAIN");
    for _ in 0..4 {
        assert_eq!(haproxy.get("/"), (200, "b".to_owned()));
    }
    // The new server was confirmed UP before the drain began.
    let up = run.stderr.find("api-b is UP").unwrap();
    assert!(up < run.stderr.find("draining api-a").unwrap());

    // zdd-retire removed the old container: its server goes.
    let mut retired = old.clone();
    retired["retired"] = json!(true);
    retired["state"] = json!("removed");
    let input = lines(&[retired, new]);
    let run = haproxy.route(&[], &input);
    run.expect(0);
    assert_eq!(run.container(&a)["routed"], json!(false));
    let names: Vec<String> = haproxy.servers("web").into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["api-b"]);
    assert!(run.stderr.contains("removed api-a"), "{}", run.stderr);
    // Gone already is fine.
    haproxy.route(&[], &input).expect(0);
}

#[test]
fn restore_makes_the_drained_old_server_ready_and_removes_the_new_one() {
    let haproxy = Haproxy::start(None);
    let (a, b) = (App::start("a", true), App::start("b", true));
    haproxy.route(&[], &lines(&[a.new_healthy()])).expect(0);
    let switched = haproxy.route(&[], &lines(&[a.record("old"), b.new_healthy()]));
    switched.expect(0);
    assert!(haproxy.server_at("web", a.port).unwrap().draining());

    let input = lines(&[switched.container(&a), switched.container(&b)]);
    let run = haproxy.route(&["--restore"], &input);
    run.expect(0);
    let (old, new) = (run.container(&a), run.container(&b));
    assert_eq!(old["drained"], json!(false));
    assert_eq!(old["routed"], json!(true));
    assert_eq!(new["routed"], json!(false));
    let server = haproxy.server_at("web", a.port).unwrap();
    assert!(!server.draining() && !server.in_maintenance());
    assert_eq!(haproxy.stat("web", &server.name).status, "UP");
    assert!(
        haproxy.server_at("web", b.port).is_none(),
        "new server deleted"
    );
    for _ in 0..4 {
        assert_eq!(haproxy.get("/"), (200, "a".to_owned()));
    }
    // The rollback converges too.
    haproxy.route(&["--restore"], &input).expect(0);
}

#[test]
fn restore_keeps_a_new_server_that_served_before_the_run() {
    let haproxy = Haproxy::start(None);
    let (a, b) = (App::start("a", true), App::start("b", true));
    haproxy.route(&[], &lines(&[a.new_healthy()])).expect(0);
    // A rerun of the release that serves: `a` is reused (started false),
    // `b` is the one this run started.
    let mut reused = a.new_healthy();
    reused["started"] = json!(false);
    let scaled = haproxy.route(&[], &lines(&[reused, b.new_healthy()]));
    scaled.expect(0);

    let input = lines(&[scaled.container(&a), scaled.container(&b)]);
    let run = haproxy.route(&["--restore"], &input);
    run.expect(0);
    assert_eq!(run.container(&a)["routed"], json!(true), "left as it was");
    assert_eq!(run.container(&b)["routed"], json!(false));
    let server = haproxy.server_at("web", a.port).expect("a's server stays");
    assert!(!server.draining() && !server.in_maintenance());
    assert!(haproxy.server_at("web", b.port).is_none());
    for _ in 0..4 {
        assert_eq!(haproxy.get("/"), (200, "a".to_owned()));
    }
}

#[test]
fn a_failed_restore_keeps_the_new_servers_serving() {
    let haproxy = Haproxy::start(None);
    let (a, b) = (App::start("a", true), App::start("b", true));
    haproxy.route(&[], &lines(&[a.new_healthy()])).expect(0);
    let switched = haproxy.route(&[], &lines(&[a.record("old"), b.new_healthy()]));
    switched.expect(0);
    // The old replica stops answering its check: it cannot serve again.
    a.healthy.store(false, Ordering::SeqCst);
    let old_name = haproxy.server_at("web", a.port).unwrap().name;
    wait_for("the old server to be DOWN", || {
        haproxy.stat("web", &old_name).status.starts_with("DOWN")
    });

    let input = lines(&[switched.container(&a), switched.container(&b)]);
    let run = haproxy.route(&["--restore", "--up-timeout", "1s"], &input);
    run.expect(1);
    assert_eq!(run.container(&a)["routed"], json!(false));
    let why = run.container(&b)["route_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(why.contains("not withdrawing the new servers"), "{why}");
    assert!(why.contains("api-a"), "{why}");
    let server = haproxy.server_at("web", b.port).expect("b's server stays");
    assert!(!server.draining() && !server.in_maintenance());
    for _ in 0..4 {
        assert_eq!(haproxy.get("/"), (200, "b".to_owned()));
    }
    a.healthy.store(true, Ordering::SeqCst);
}

#[test]
fn a_server_from_the_config_file_is_adopted_by_address() {
    let legacy = App::start("legacy", true);
    let haproxy = Haproxy::start(Some(legacy.port));
    let m = App::start("m", true);
    let tcp = haproxy.tcp_socket.clone();
    let route = |input: &[Value]| {
        let args = [
            "--socket",
            &tcp,
            "--backend",
            "legacy",
            "--server-options",
            FAST_CHECKS,
        ];
        zdd_route(&args, &lines(input))
    };
    wait_for("legacy-1 to be UP", || {
        haproxy.stat("legacy", "legacy-1").status == "UP"
    });

    // The running release, routed by the config file as `legacy-1`.
    let run = route(&[legacy.new_healthy()]);
    run.expect(0);
    assert_eq!(run.container(&legacy)["routed"], json!(true));
    let names: Vec<String> = haproxy
        .servers("legacy")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["legacy-1"], "adopted, not added");
    assert!(
        run.stderr.contains("is in legacy as server legacy-1"),
        "{}",
        run.stderr
    );

    // Replaced: legacy-1 is drained, then deleted once retired.
    let run = route(&[legacy.record("old"), m.new_healthy()]);
    run.expect(0);
    assert_eq!(run.container(&legacy)["drained"], json!(true));
    assert!(haproxy.server_at("legacy", legacy.port).unwrap().draining());
    let mut retired = run.container(&legacy);
    retired["retired"] = json!(true);
    route(&[retired, run.container(&m)]).expect(0);
    let names: Vec<String> = haproxy
        .servers("legacy")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["api-m"]);
}

#[test]
fn a_new_server_whose_check_fails_is_not_routed_and_nothing_is_drained() {
    let haproxy = Haproxy::start(None);
    let (a, b) = (App::start("a", true), App::start("b", false));
    haproxy.route(&[], &lines(&[a.new_healthy()])).expect(0);

    let input = lines(&[a.record("old"), b.new_healthy()]);
    let run = haproxy.route(&["--up-timeout", "2s"], &input);
    run.expect(1);
    assert!(run.took >= Duration::from_secs(2), "{:?}", run.took);
    assert!(run.took < Duration::from_secs(6), "{:?}", run.took);
    let (old, new) = (run.container(&a), run.container(&b));
    assert_eq!(new["routed"], json!(false));
    let why = new["route_error"].as_str().unwrap();
    assert!(why.contains("did not report it UP within 2.0s"), "{why}");
    assert!(why.contains("web/api-b is `DOWN`"), "{why}");
    assert_eq!(old["drained"], json!(false));
    assert!(old["route_error"]
        .as_str()
        .unwrap()
        .contains("not draining the old servers: new container api-b is not routed"));
    assert!(run.stderr.contains("not draining"), "{}", run.stderr);

    // The failed server stays for the rollback; the old one still serves.
    assert!(haproxy.server_at("web", b.port).is_some());
    let old_server = haproxy.server_at("web", a.port).unwrap();
    assert!(!old_server.draining());
    for _ in 0..3 {
        assert_eq!(haproxy.get("/"), (200, "a".to_owned()));
    }

    // The rollback takes the failed server out.
    haproxy.route(&["--restore"], &run.stdout).expect(0);
    assert!(haproxy.server_at("web", b.port).is_none());
    b.healthy.store(true, Ordering::SeqCst);
}

#[test]
fn a_socket_that_does_not_exist_is_a_usage_error_naming_it() {
    let a = App::start("a", true);
    let socket = "/nonexistent/zdd-route-test/admin.sock";
    let run = zdd_route(
        &["--socket", socket, "--backend", "web"],
        &lines(&[a.new_healthy()]),
    );
    run.expect(2);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains(socket), "{}", run.stderr);
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);

    let run = zdd_route(
        &["--socket", "127.0.0.1:1", "--backend", "web"],
        &lines(&[a.new_healthy()]),
    );
    run.expect(2);
    assert!(run.stderr.contains("127.0.0.1:1"), "{}", run.stderr);
}

#[test]
fn a_missing_backend_or_a_user_level_socket_is_a_usage_error_and_changes_nothing() {
    let haproxy = Haproxy::start(None);
    let a = App::start("a", true);
    let input = lines(&[a.new_healthy()]);
    let socket = haproxy.socket.to_str().unwrap();

    let run = zdd_route(&["--socket", socket, "--backend", "nope"], &input);
    run.expect(2);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("no backend `nope`"), "{}", run.stderr);

    let user = haproxy.user_socket.to_str().unwrap();
    let run = zdd_route(&["--socket", user, "--backend", "web"], &input);
    run.expect(2);
    assert!(run.stderr.contains("level admin"), "{}", run.stderr);
    assert!(haproxy.servers("web").is_empty());
}

#[test]
fn bad_input_is_exit_2_with_its_line_before_anything_changes() {
    let haproxy = Haproxy::start(None);
    let a = App::start("a", true);

    let run = haproxy.route(&[], "");
    run.expect(2);
    assert!(run.stderr.contains("no records"), "{}", run.stderr);

    let run = haproxy.route(&[], &format!("{}\nnot json\n", a.new_healthy()));
    run.expect(2);
    assert!(run.stderr.contains("input line 2"), "{}", run.stderr);

    let run = haproxy.route(&[], "{\"type\":\"image\",\"image\":\"x\"}\n");
    run.expect(2);
    assert!(
        run.stderr.contains("expected `container` records"),
        "{}",
        run.stderr
    );

    let mut no_address = App::start("b", true).new_healthy();
    no_address.as_object_mut().unwrap().remove("address");
    let run = haproxy.route(&[], &lines(&[a.new_healthy(), no_address]));
    run.expect(2);
    assert!(run.stderr.contains("input line 2"), "{}", run.stderr);
    assert!(run.stderr.contains("no `address`"), "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert!(haproxy.servers("web").is_empty(), "nothing added");

    // Input is checked before the socket.
    let run = zdd_route(
        &["--socket", "/nonexistent/admin.sock", "--backend", "web"],
        "{\"type\":\"container\"}\n",
    );
    run.expect(2);
    assert!(run.stderr.contains("missing field `id`"), "{}", run.stderr);
}

#[test]
fn help_documents_the_options_and_exit_codes() {
    let run = zdd_route(&["--help"], "");
    run.expect(0);
    for text in [
        "--socket",
        "--backend",
        "--up-timeout",
        "--drain-timeout",
        "--server-options",
        "--restore",
        "by address",
        "Exit codes",
    ] {
        assert!(run.stdout.contains(text), "`{text}` in\n{}", run.stdout);
    }
}
