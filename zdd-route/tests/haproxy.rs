//! `zdd-route` against a real HAProxy.
//!
//! Each test starts its own `haproxy -db` (Debian's 2.6 here), the
//! workspace's shared fixture [`zdd_e2e::Haproxy`]: a configuration
//! written into a scratch folder, an admin Runtime API socket (unix, and
//! TCP or a user-level one where a test asks), a frontend on a free port
//! and a backend (`web`, empty, unless a test says otherwise) with an HTTP
//! health check. The "containers" are plain HTTP servers in this test
//! process on 127.0.0.1 ephemeral ports, so records can be written by hand
//! with `address: 127.0.0.1:PORT` and made-up ids; no Docker engine is
//! needed.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zdd_e2e::{http_get, run, wait_for, Haproxy, HaproxyOptions, Run, StubReplica};
use zdd_route::haproxy::{Endpoint, Runtime, ServerStat, ServerState};

/// Fast checks, so a test waits tenths of a second for a server to be UP.
const FAST_CHECKS: &str = "check inter 100ms fall 2 rise 1";

/// How long a test waits for HAProxy to see a change.
const PATIENCE: Duration = Duration::from_secs(5);

// --- HAProxy -------------------------------------------------------------

/// HAProxy with the empty backend `web`.
fn web() -> HaproxyOptions {
    Haproxy::options().backend("web")
}

/// What these tests read from HAProxy, through zdd-route's own Runtime API
/// client, and zdd-route run against it.
trait Routing {
    fn runtime(&self) -> Runtime;
    fn servers(&self, backend: &str) -> Vec<ServerState>;
    fn server_at(&self, backend: &str, port: u16) -> Option<ServerState>;
    fn stat(&self, backend: &str, name: &str) -> ServerStat;
    /// zdd-route on the admin unix socket and the backend, fast checks.
    fn route(&self, extra: &[&str], input: &str) -> Run;
}

impl Routing for Haproxy {
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

    fn route(&self, extra: &[&str], input: &str) -> Run {
        let socket = self.socket.to_str().unwrap();
        let mut args = vec!["--socket", socket, "--backend", &self.backend];
        args.extend(["--server-options", FAST_CHECKS]);
        args.extend(extra);
        zdd_route(&args, input)
    }
}

// --- the "containers" ----------------------------------------------------

/// An HTTP server standing for one container `api-BODY` (the support
/// crate's [`StubReplica`]).
type App = StubReplica;

// --- running zdd-route ---------------------------------------------------

fn zdd_route(args: &[&str], input: &str) -> Run {
    run("zdd-route", args, input)
}

/// `f`'s result and how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed())
}

/// HAProxy (backend `web`) routing to `a`, which serves; `b` (healthy or
/// not) is not routed yet.
fn a_serving(b_healthy: bool) -> (Haproxy, App, App) {
    let haproxy = web().start();
    let (a, b) = (App::start("a", true), App::start("b", b_healthy));
    haproxy
        .route(&[], &lines(&[a.new_healthy()]))
        .expect_code(0);
    (haproxy, a, b)
}

/// zdd-route switching from `a` (old) to `b` (new), which succeeds.
fn switch(haproxy: &Haproxy, a: &App, b: &App) -> Run {
    let run = haproxy.route(&[], &lines(&[a.record("old"), b.new_healthy()]));
    run.expect_code(0);
    run
}

fn lines(records: &[Value]) -> String {
    records.iter().map(|r| format!("{r}\n")).collect()
}

// --- the tests -----------------------------------------------------------

#[test]
fn a_new_server_is_added_confirmed_up_and_routed_and_a_rerun_converges() {
    let haproxy = web().start();
    let a = App::start("a", true);
    assert!(haproxy.servers("web").is_empty());

    let image = r#"{"type":"image","image":"api:1",  "image_id":"sha256:1","release":"1"}"#;
    let mut record = a.new_healthy();
    record["ticket"] = json!("OPS-42");
    let input = format!("{image}\n{record}\n");
    let run = haproxy.route(&[], &input);
    run.expect_code(0);
    assert_eq!(
        run.stdout.lines().next(),
        Some(image),
        "passed through as it was"
    );
    let out = run.container(&a.name);
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
    again.expect_code(0);
    assert_eq!(again.container(&a.name)["routed"], json!(true));
    assert_eq!(haproxy.servers("web").len(), 1);
    assert!(
        again.stderr.contains("is in web as server api-a"),
        "{}",
        again.stderr
    );
}

#[test]
fn the_switch_drains_the_old_server_while_its_request_finishes_then_removes_it() {
    let (haproxy, a, b) = a_serving(true);

    // A slow request in flight on the old server.
    let frontend = haproxy.address();
    let slow = thread::spawn(move || http_get(&frontend, "/slow"));
    wait_for("the slow request to reach api-a", PATIENCE, || {
        haproxy.stat("web", "api-a").scur == 1
    });

    let (run, took) = timed(|| switch(&haproxy, &a, &b));
    let (old, new) = (run.container(&a.name), run.container(&b.name));
    assert_eq!(new["routed"], json!(true));
    assert_eq!(old["drained"], json!(true));
    assert!(old.get("drain_timed_out").is_none());
    assert_eq!(
        slow.join().unwrap(),
        Some((200, "a".to_owned())),
        "in-flight request"
    );
    assert!(took >= Duration::from_millis(800), "waited for the session");
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
    run.expect_code(0);
    assert_eq!(run.container(&a.name)["routed"], json!(false));
    let names: Vec<String> = haproxy.servers("web").into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["api-b"]);
    assert!(run.stderr.contains("removed api-a"), "{}", run.stderr);
    // Gone already is fine.
    haproxy.route(&[], &input).expect_code(0);
}

#[test]
fn restore_makes_the_drained_old_server_ready_and_removes_the_new_one() {
    let (haproxy, a, b) = a_serving(true);
    let switched = switch(&haproxy, &a, &b);
    assert!(haproxy.server_at("web", a.port).unwrap().draining());

    let input = lines(&[switched.container(&a.name), switched.container(&b.name)]);
    let run = haproxy.route(&["--restore"], &input);
    run.expect_code(0);
    let (old, new) = (run.container(&a.name), run.container(&b.name));
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
    haproxy.route(&["--restore"], &input).expect_code(0);
}

#[test]
fn restore_keeps_a_new_server_that_served_before_the_run() {
    let (haproxy, a, b) = a_serving(true);
    // A rerun of the release that serves: `a` is reused (started false),
    // `b` is the one this run started.
    let mut reused = a.new_healthy();
    reused["started"] = json!(false);
    let scaled = haproxy.route(&[], &lines(&[reused, b.new_healthy()]));
    scaled.expect_code(0);

    let input = lines(&[scaled.container(&a.name), scaled.container(&b.name)]);
    let run = haproxy.route(&["--restore"], &input);
    run.expect_code(0);
    assert_eq!(
        run.container(&a.name)["routed"],
        json!(true),
        "left as it was"
    );
    assert_eq!(run.container(&b.name)["routed"], json!(false));
    let server = haproxy.server_at("web", a.port).expect("a's server stays");
    assert!(!server.draining() && !server.in_maintenance());
    assert!(haproxy.server_at("web", b.port).is_none());
    for _ in 0..4 {
        assert_eq!(haproxy.get("/"), (200, "a".to_owned()));
    }
}

#[test]
fn a_failed_restore_keeps_the_new_servers_serving() {
    let (haproxy, a, b) = a_serving(true);
    let switched = switch(&haproxy, &a, &b);
    // The old replica stops answering its check: it cannot serve again.
    a.set_healthy(false);
    let old_name = haproxy.server_at("web", a.port).unwrap().name;
    wait_for("the old server to be DOWN", PATIENCE, || {
        haproxy.stat("web", &old_name).status.starts_with("DOWN")
    });

    let input = lines(&[switched.container(&a.name), switched.container(&b.name)]);
    let run = haproxy.route(&["--restore", "--up-timeout", "1s"], &input);
    run.expect_code(1);
    assert_eq!(run.container(&a.name)["routed"], json!(false));
    let why = run.container(&b.name)["route_error"]
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
    a.set_healthy(true);
}

#[test]
fn a_server_from_the_config_file_is_adopted_by_address() {
    let legacy = App::start("legacy", true);
    // Backend `legacy` holds one server from the configuration file,
    // `legacy-1`; zdd-route reaches HAProxy over TCP.
    let haproxy = Haproxy::options()
        .backend("legacy")
        .server(&format!("legacy-1 {} {FAST_CHECKS}", legacy.address()))
        .tcp_socket()
        .start();
    let m = App::start("m", true);
    let tcp = haproxy.tcp_socket.clone().unwrap();
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
    wait_for("legacy-1 to be UP", PATIENCE, || {
        haproxy.stat("legacy", "legacy-1").status == "UP"
    });

    // The running release, routed by the config file as `legacy-1`.
    let run = route(&[legacy.new_healthy()]);
    run.expect_code(0);
    assert_eq!(run.container(&legacy.name)["routed"], json!(true));
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

    // Replaced: legacy-1 is drained, then, once retired, put in
    // maintenance: a server of the configuration is never deleted.
    let run = route(&[legacy.record("old"), m.new_healthy()]);
    run.expect_code(0);
    assert_eq!(run.container(&legacy.name)["drained"], json!(true));
    assert!(haproxy.server_at("legacy", legacy.port).unwrap().draining());
    let mut retired = run.container(&legacy.name);
    retired["retired"] = json!(true);
    route(&[retired, run.container(&m.name)]).expect_code(0);
    let names: Vec<String> = haproxy
        .servers("legacy")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["legacy-1", "api-m"]);
    assert!(haproxy
        .server_at("legacy", legacy.port)
        .unwrap()
        .in_maintenance());
}

#[test]
fn a_new_server_whose_check_fails_is_not_routed_and_nothing_is_drained() {
    let (haproxy, a, b) = a_serving(false);

    let input = lines(&[a.record("old"), b.new_healthy()]);
    let (run, took) = timed(|| haproxy.route(&["--up-timeout", "2s"], &input));
    run.expect_code(1);
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    let (old, new) = (run.container(&a.name), run.container(&b.name));
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
    haproxy.route(&["--restore"], &run.stdout).expect_code(0);
    assert!(haproxy.server_at("web", b.port).is_none());
    b.set_healthy(true);
}

#[test]
fn a_socket_that_does_not_exist_is_a_usage_error_naming_it() {
    let a = App::start("a", true);
    let socket = "/nonexistent/zdd-route-test/admin.sock";
    let run = zdd_route(
        &["--socket", socket, "--backend", "web"],
        &lines(&[a.new_healthy()]),
    );
    run.expect_code(2);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains(socket), "{}", run.stderr);
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);

    let run = zdd_route(
        &["--socket", "127.0.0.1:1", "--backend", "web"],
        &lines(&[a.new_healthy()]),
    );
    run.expect_code(2);
    assert!(run.stderr.contains("127.0.0.1:1"), "{}", run.stderr);
}

#[test]
fn a_missing_backend_or_a_user_level_socket_is_a_usage_error_and_changes_nothing() {
    let haproxy = web().user_socket().start();
    let a = App::start("a", true);
    let input = lines(&[a.new_healthy()]);
    let socket = haproxy.socket.to_str().unwrap();

    let run = zdd_route(&["--socket", socket, "--backend", "nope"], &input);
    run.expect_code(2);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("no backend `nope`"), "{}", run.stderr);

    let user = haproxy.user_socket.as_ref().unwrap().to_str().unwrap();
    let run = zdd_route(&["--socket", user, "--backend", "web"], &input);
    run.expect_code(2);
    assert!(run.stderr.contains("level admin"), "{}", run.stderr);
    assert!(haproxy.servers("web").is_empty());
}

#[test]
fn bad_input_is_exit_2_with_its_line_before_anything_changes() {
    let haproxy = web().start();
    let a = App::start("a", true);

    let run = haproxy.route(&[], "");
    run.expect_code(2);
    assert!(run.stderr.contains("no records"), "{}", run.stderr);

    let run = haproxy.route(&[], &format!("{}\nnot json\n", a.new_healthy()));
    run.expect_code(2);
    assert!(run.stderr.contains("input line 2"), "{}", run.stderr);

    let run = haproxy.route(&[], "{\"type\":\"image\",\"image\":\"x\"}\n");
    run.expect_code(2);
    assert!(
        run.stderr.contains("expected `container` records"),
        "{}",
        run.stderr
    );

    let mut no_address = App::start("b", true).new_healthy();
    no_address.as_object_mut().unwrap().remove("address");
    let run = haproxy.route(&[], &lines(&[a.new_healthy(), no_address]));
    run.expect_code(2);
    assert!(run.stderr.contains("input line 2"), "{}", run.stderr);
    assert!(run.stderr.contains("no `address`"), "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert!(haproxy.servers("web").is_empty(), "nothing added");

    // Input is checked before the socket.
    let run = zdd_route(
        &["--socket", "/nonexistent/admin.sock", "--backend", "web"],
        "{\"type\":\"container\"}\n",
    );
    run.expect_code(2);
    assert!(run.stderr.contains("missing field `id`"), "{}", run.stderr);
}

#[test]
fn help_documents_the_options_and_exit_codes() {
    let run = zdd_route(&["--help"], "");
    run.expect_code(0);
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

#[test]
fn prune_deletes_zdds_stale_servers_even_in_maintenance_and_keeps_the_configurations() {
    // A server of the configuration, `web-1`, at an address nothing serves.
    let haproxy = web()
        .server(&format!("web-1 127.0.0.1:1 {FAST_CHECKS}"))
        .start();
    let (a, stale) = (App::start("a", true), App::start("gone", true));
    haproxy
        .route(&[], &lines(&[a.new_healthy(), stale.new_healthy()]))
        .expect_code(0);
    // A killed deploy stopped between `state maint` and `del server`.
    let maint = haproxy.command(&format!("set server web/{} state maint", stale.name));
    assert_eq!(maint.trim(), "");
    drop(stale);

    let run = haproxy.route(&["--prune"], &lines(&[a.new_healthy()]));
    run.expect_code(0);
    let names: Vec<String> = haproxy.servers("web").into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["web-1", "api-a"], "{}", run.stderr);
    assert!(haproxy.server_at("web", 1).unwrap().in_maintenance());
}

#[test]
fn a_standby_serves_only_when_every_new_server_is_down_and_is_deleted_after() {
    let (haproxy, a, b) = a_serving(true);
    switch(&haproxy, &a, &b);
    let old: zdd_core::record::ContainerRecord = serde_json::from_value(a.record("old")).unwrap();
    let progress = zdd_core::cli::Progress::new("test", true);
    let runtime = haproxy.runtime();
    let added = zdd_route::standby::add(&runtime, "web", &[&old], FAST_CHECKS, &progress);
    assert_eq!(added, ["api-a.standby"]);
    // Added twice (a rerun): the same one.
    assert_eq!(
        zdd_route::standby::add(&runtime, "web", &[&old], FAST_CHECKS, &progress),
        added
    );
    wait_for("the standby's first check", PATIENCE, || {
        haproxy.stat("web", "api-a.standby").status == "UP"
    });
    // While the new server serves, the standby takes nothing.
    for _ in 0..5 {
        assert_eq!(haproxy.get("/").1, "b");
    }
    // No new server usable: HAProxy sends to the standby, the old app.
    haproxy.command("set server web/api-b state maint");
    assert_eq!(haproxy.get("/"), (200, "a".to_string()));
    haproxy.command("set server web/api-b state ready");
    zdd_route::standby::remove(&runtime, "web", &added, &progress);
    let names: Vec<String> = haproxy.servers("web").into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["api-a", "api-b"]);

    // One a killed watch left is deleted by --prune, though its address
    // is a live container's.
    zdd_route::standby::add(&runtime, "web", &[&old], FAST_CHECKS, &progress);
    let run = haproxy.route(&["--prune"], &lines(&[a.record("old"), b.new_healthy()]));
    run.expect_code(0);
    assert!(
        run.stderr.contains("a standby no watch uses"),
        "{}",
        run.stderr
    );
    let names: Vec<String> = haproxy.servers("web").into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["api-a", "api-b"]);
}
