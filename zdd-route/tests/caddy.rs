//! zdd-route's Caddy admin API client against a real Caddy.
//!
//! Each test starts its own `caddy run` (Debian's 2.6 here), the
//! workspace's fixture [`zdd_e2e::Caddy`]: a JSON config in a scratch
//! folder, an HTTP server and the admin API on free loopback ports, and a
//! reverse_proxy handler `api` with an active health check and
//! `lb_try_duration`. The upstreams are plain HTTP servers in this test
//! process on 127.0.0.1 ephemeral ports; no Docker engine is needed.
//! Caddy must be installed (`apt-get install -y caddy`): the fixture fails
//! with that hint when it is not.

use std::collections::BTreeSet;
use std::thread;
use std::time::Duration;

use serde_json::json;
use zdd_e2e::{free_port, http_get, wait_for, Caddy, StubReplica, STUB_SLOW};
use zdd_route::caddy::{Admin, AdminError, UpstreamStat};

/// How long a test waits for Caddy to see a change.
const PATIENCE: Duration = Duration::from_secs(5);

/// How long `/slow` takes to answer.
const SLOW: Duration = STUB_SLOW;

/// An HTTP server standing for one replica `api-NAME`; every body is NAME.
struct App(StubReplica);

impl App {
    fn start(name: &str) -> App {
        App(StubReplica::start(name, true))
    }

    fn dial(&self) -> String {
        self.0.address()
    }
}

fn admin(caddy: &Caddy) -> Admin {
    Admin::new(&caddy.admin()).unwrap()
}

/// The bodies of `n` requests through Caddy, all of which must be 200.
fn served(caddy: &Caddy, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| {
            let (status, body) = caddy.get("/");
            assert_eq!(status, 200, "{body}");
            body
        })
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn stat(admin: &Admin, dial: &str) -> Option<UpstreamStat> {
    admin
        .upstream_stats()
        .unwrap()
        .into_iter()
        .find(|s| s.address == dial)
}

/// A `/slow` request through Caddy, on a thread of its own; waits until
/// Caddy counts it on `app`.
fn slow_request_on(caddy: &Caddy, admin: &Admin, app: &App) -> thread::JoinHandle<(u16, String)> {
    let address = caddy.address();
    let slow = thread::spawn(move || http_get(&address, "/slow").expect("the slow request"));
    wait_for("the slow request to reach its upstream", PATIENCE, || {
        stat(admin, &app.dial()).is_some_and(|s| s.num_requests == 1)
    });
    slow
}

#[test]
fn upstreams_are_added_and_removed_once_and_all_of_them_serve() {
    let caddy = Caddy::options().start();
    let admin = admin(&caddy);
    let (a, b) = (App::start("a"), App::start("b"));
    assert_eq!(admin.upstreams("api").unwrap(), Vec::<String>::new());
    assert_eq!(admin.handler("api").unwrap()["handler"], "reverse_proxy");

    assert!(admin.add_upstreams("api", &[&a.dial(), &b.dial()]).unwrap());
    assert_eq!(caddy.upstream_addresses(), [a.dial(), b.dial()]);
    assert_eq!(admin.upstreams("api").unwrap(), [a.dial(), b.dial()]);
    assert_eq!(served(&caddy, 10), set(&["a", "b"]));

    // Again: nothing to change, and Caddy's config is not reloaded.
    assert!(!admin.add_upstream("api", &a.dial()).unwrap());
    assert_eq!(caddy.upstream_addresses(), [a.dial(), b.dial()]);

    assert!(admin.remove_upstream("api", &b.dial()).unwrap());
    assert_eq!(caddy.upstream_addresses(), [a.dial()]);
    assert!(!admin.remove_upstream("api", &b.dial()).unwrap());
    assert_eq!(served(&caddy, 10), set(&["a"]));

    let stats = admin.upstream_stats().unwrap();
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!((stats[0].num_requests, stats[0].fails), (0, 0));
}

#[test]
fn a_request_in_flight_on_a_removed_upstream_completes() {
    let caddy = Caddy::options().start();
    let admin = admin(&caddy);
    let (a, b) = (App::start("a"), App::start("b"));
    admin.add_upstream("api", &b.dial()).unwrap();
    let slow = slow_request_on(&caddy, &admin, &b);

    admin.add_upstream("api", &a.dial()).unwrap();
    admin.remove_upstream("api", &b.dial()).unwrap();
    // Caddy 2.6 forgets the address at once, its request still in flight:
    // `/reverse_proxy/upstreams` alone cannot tell when it is drained.
    assert_eq!(
        stat(&admin, &b.dial()),
        None,
        "Caddy still lists a removed upstream: the drain in docs/caddy.md may be simpler now"
    );
    assert_eq!(served(&caddy, 4), set(&["a"]));
    assert_eq!(slow.join().unwrap(), (200, "b".to_owned()));
}

#[test]
fn a_parked_upstream_is_counted_down_to_zero_and_gets_no_new_request() {
    let caddy = Caddy::options().drain_handler("api-draining").start();
    let admin = admin(&caddy);
    let (a, b) = (App::start("a"), App::start("b"));
    admin.add_upstream("api", &b.dial()).unwrap();
    let slow = slow_request_on(&caddy, &admin, &b);

    // The switch: the new one in, the old one parked first (so Caddy's
    // pool keeps its counter), then out of the routed handler.
    admin.add_upstream("api", &a.dial()).unwrap();
    assert!(admin.add_upstream("api-draining", &b.dial()).unwrap());
    admin.remove_upstream("api", &b.dial()).unwrap();
    assert_eq!(caddy.upstream_addresses(), [a.dial()]);
    assert_eq!(caddy.upstream_addresses_of("api-draining"), [b.dial()]);

    assert_eq!(stat(&admin, &b.dial()).unwrap().num_requests, 1);
    assert_eq!(served(&caddy, 6), set(&["a"]));
    assert_eq!(slow.join().unwrap(), (200, "b".to_owned()));
    wait_for("the parked upstream to drain", PATIENCE, || {
        stat(&admin, &b.dial()).is_some_and(|s| s.num_requests == 0)
    });

    assert!(admin.remove_upstream("api-draining", &b.dial()).unwrap());
    assert!(!admin.remove_upstream("api-draining", &b.dial()).unwrap());
    assert_eq!(stat(&admin, &b.dial()), None);
    assert_eq!(served(&caddy, 2), set(&["a"]));
}

#[test]
fn an_unknown_id_or_another_handler_is_a_clear_error() {
    let caddy = Caddy::options()
        .route(json!({
            "match": [{"path": ["/static"]}],
            "handle": [{"handler": "static_response", "@id": "static", "body": "hi"}],
        }))
        .start();
    let admin = admin(&caddy);

    let e = admin.handler("nope").unwrap_err();
    assert!(matches!(e, AdminError::NoSuchId { .. }), "{e:?}");
    assert!(e.to_string().contains("\"@id\": \"nope\""), "{e}");
    let e = admin.add_upstream("nope", "127.0.0.1:9").unwrap_err();
    assert!(matches!(e, AdminError::NoSuchId { .. }), "{e:?}");

    let e = admin.upstreams("static").unwrap_err();
    assert!(matches!(e, AdminError::NotReverseProxy { .. }), "{e:?}");
    assert!(e.to_string().contains("`static_response` handler"), "{e}");
    let e = admin.add_upstream("static", "127.0.0.1:9").unwrap_err();
    assert!(matches!(e, AdminError::NotReverseProxy { .. }), "{e:?}");
    assert_eq!(caddy.get("/static"), (200, "hi".to_owned()), "untouched");
}

#[test]
fn a_caddy_that_does_not_answer_is_named_with_what_to_check() {
    let endpoint = format!("127.0.0.1:{}", free_port());
    let e = Admin::new(&endpoint).unwrap().upstreams("api").unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&endpoint) && text.contains("is caddy running"),
        "{text}"
    );
}

#[test]
fn concurrent_changes_are_all_kept() {
    let caddy = Caddy::options().no_health_checks().start();
    let endpoint = caddy.admin();
    let dials: Vec<String> = (1..=6).map(|n| format!("127.0.0.1:{}", 1000 + n)).collect();
    let threads: Vec<_> = dials
        .chunks(2)
        .map(|pair| {
            let (endpoint, pair) = (endpoint.clone(), pair.to_vec());
            thread::spawn(move || {
                let admin = Admin::new(&endpoint).unwrap();
                for dial in &pair {
                    assert!(admin.add_upstream("api", dial).unwrap());
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let listed: BTreeSet<String> = caddy.upstream_addresses().into_iter().collect();
    assert_eq!(listed, dials.iter().cloned().collect());

    let threads: Vec<_> = dials[..3]
        .iter()
        .map(|dial| {
            let (endpoint, dial) = (endpoint.clone(), dial.clone());
            thread::spawn(move || Admin::new(&endpoint).unwrap().remove_upstream("api", &dial))
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap().unwrap());
    }
    let listed: BTreeSet<String> = caddy.upstream_addresses().into_iter().collect();
    assert_eq!(listed, dials[3..].iter().cloned().collect());
}

#[test]
fn a_refused_connection_is_tried_again_on_another_upstream() {
    // No health check to notice the dead one first: lb_try_duration alone.
    let caddy = Caddy::options().no_health_checks().start();
    let admin = admin(&caddy);
    let a = App::start("a");
    let dead = format!("127.0.0.1:{}", free_port());
    admin.add_upstreams("api", &[&dead, &a.dial()]).unwrap();
    assert_eq!(served(&caddy, 10), set(&["a"]));
}

#[test]
fn a_restart_from_the_file_forgets_runtime_upstreams_and_resume_keeps_them() {
    let (a, b) = (App::start("a"), App::start("b"));
    let mut caddy = Caddy::options().upstream(&a.dial()).start();
    admin(&caddy).add_upstream("api", &b.dial()).unwrap();
    assert!(caddy.autosave_path().exists());

    caddy.restart_resume();
    assert_eq!(caddy.upstream_addresses(), [a.dial(), b.dial()]);
    caddy.restart();
    assert_eq!(caddy.upstream_addresses(), [a.dial()]);
    assert_eq!(served(&caddy, 4), set(&["a"]));
}

// --- zdd-route through Caddy -----------------------------------------------

/// A container record for `app`; a new one is healthy and this run's.
fn record(app: &App, role: &str) -> serde_json::Value {
    match role {
        "new" => app.0.new_healthy(),
        _ => app.0.record(role),
    }
}

fn lines(records: &[serde_json::Value]) -> String {
    records.iter().map(|r| format!("{r}\n")).collect()
}

fn route_through(caddy: &Caddy, extra: &[&str], records: &[serde_json::Value]) -> zdd_e2e::Run {
    let admin = caddy.admin();
    let mut args = vec![
        "--caddy",
        &admin,
        "--handler",
        "api",
        "--drain-handler",
        "api-draining",
    ];
    args.extend_from_slice(extra);
    zdd_e2e::run("zdd-route", &args, &lines(records))
}

#[test]
fn zdd_route_switches_caddy_waits_for_the_old_upstreams_request_and_restores() {
    let caddy = Caddy::options()
        .handler_id("api")
        .drain_handler("api-draining")
        .start();
    let (a, b) = (App::start("a"), App::start("b"));
    route_through(&caddy, &[], &[record(&a, "new")]).expect_code(0);
    assert_eq!(served(&caddy, 4), set(&["a"]));

    // The switch, with a slow request in flight on the old upstream.
    let slow = slow_request_on(&caddy, &admin(&caddy), &a);
    let started = std::time::Instant::now();
    let switched = route_through(&caddy, &[], &[record(&a, "old"), record(&b, "new")]);
    switched.expect_code(0);
    let took = started.elapsed();
    assert_eq!(slow.join().unwrap(), (200, "a".to_string()));
    assert!(
        took >= SLOW / 2,
        "the drain waited for the request in flight ({took:?}): {}",
        switched.stderr
    );
    let out = zdd_e2e::parse_records(&switched.stdout);
    assert_eq!(out[0]["drained"], true, "{out:?}");
    assert_eq!(out[1]["routed"], true, "{out:?}");
    assert_eq!(served(&caddy, 6), set(&["b"]));
    assert_eq!(caddy.upstream_addresses(), [b.dial()]);
    assert_eq!(caddy.upstream_addresses_of("api-draining"), [a.dial()]);
    // Run twice: nothing changes.
    route_through(&caddy, &[], &[record(&a, "old"), record(&b, "new")]).expect_code(0);
    assert_eq!(caddy.upstream_addresses(), [b.dial()]);

    // The rollback: the old upstream back first, then the new one out.
    let mut old = out[0].clone();
    old["drained"] = json!(true);
    let restored = route_through(&caddy, &["--restore"], &[old, out[1].clone()]);
    restored.expect_code(0);
    assert_eq!(served(&caddy, 6), set(&["a"]));
    assert_eq!(caddy.upstream_addresses(), [a.dial()]);

    // A retired container's upstream leaves both handlers; --prune takes
    // out what no live container of the input has.
    let mut retired = record(&b, "new");
    retired["retired"] = json!(true);
    route_through(&caddy, &["--prune"], &[record(&a, "new"), retired]).expect_code(0);
    assert_eq!(caddy.upstream_addresses(), [a.dial()]);
    assert!(caddy.upstream_addresses_of("api-draining").is_empty());
}

#[test]
fn after_a_caddy_restart_sync_puts_the_running_replicas_back() {
    let mut caddy = Caddy::options()
        .handler_id("api")
        .drain_handler("api-draining")
        .start();
    let (a, b) = (App::start("a"), App::start("b"));
    route_through(&caddy, &[], &[record(&a, "new"), record(&b, "new")]).expect_code(0);
    // `caddy run --config FILE` again: the upstreams added at runtime are gone.
    caddy.restart();
    assert!(caddy.upstream_addresses().is_empty());
    // zdd-ps's records: running containers, no role.
    let running = |app: &App| {
        let mut r = record(app, "new");
        r.as_object_mut().unwrap().remove("role");
        r["state"] = json!("running");
        r
    };
    let synced = route_through(&caddy, &["--sync"], &[running(&a), running(&b)]);
    synced.expect_code(0);
    let mut upstreams = caddy.upstream_addresses();
    upstreams.sort();
    let mut expected = vec![a.dial(), b.dial()];
    expected.sort();
    assert_eq!(upstreams, expected);
    assert_eq!(served(&caddy, 8), set(&["a", "b"]));
    // Again: nothing to change.
    route_through(&caddy, &["--sync"], &[running(&a), running(&b)]).expect_code(0);
    assert_eq!(caddy.upstream_addresses().len(), 2);
}

#[test]
fn zdd_route_refuses_an_unknown_caddy_handler_and_a_canary_changing_nothing() {
    let caddy = Caddy::options()
        .handler_id("api")
        .drain_handler("api-draining")
        .start();
    let a = App::start("a");
    let admin = caddy.admin();
    let input = lines(&[record(&a, "new")]);
    let unknown = zdd_e2e::run(
        "zdd-route",
        &["--caddy", &admin, "--handler", "nope"],
        &input,
    );
    unknown.expect_code(2);
    assert!(unknown.stderr.contains("nope"), "{}", unknown.stderr);
    let canary = zdd_e2e::run(
        "zdd-route",
        &[
            "--caddy",
            &admin,
            "--handler",
            "api",
            "--canary-weight",
            "10%",
        ],
        &input,
    );
    canary.expect_code(2);
    let both = zdd_e2e::run(
        "zdd-route",
        &[
            "--caddy",
            &admin,
            "--handler",
            "api",
            "--socket",
            "/x",
            "--backend",
            "b",
        ],
        &input,
    );
    both.expect_code(2);
    assert!(caddy.upstream_addresses().is_empty());
}
