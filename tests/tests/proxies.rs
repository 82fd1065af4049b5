//! The proxies people already run: an HAProxy whose backend lists its
//! servers in the configuration file, an HAProxy that restarted and
//! forgot the servers added at runtime (`zdd-route --sync`), and Caddy.

use std::time::Duration;

use zdd_e2e::{
    assert_no_failures, caddy_deploy_command, deploy, replica_addresses, run, run_command, stage,
    versions_at_end, Caddy, Haproxy, Load, Sandbox, CLIENTS,
};

#[test]
fn servers_of_the_configuration_are_drained_and_kept_in_maintenance_never_deleted() {
    // v1 serves; a second HAProxy lists its replicas as `server` lines.
    let (sandbox, _dynamic) = stage("static");
    let v1 = replica_addresses(&sandbox);
    let mut options = Haproxy::options();
    for (i, address) in v1.iter().enumerate() {
        options = options.server(&format!("v1-{i} {address} check inter 500ms"));
    }
    let dir = sandbox.dir.join("static-haproxy");
    std::fs::create_dir_all(&dir).unwrap();
    let haproxy = options.start_in(&dir);
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);
    let v2 = sandbox.app_context("v2", &[]);
    let deployed = deploy(&sandbox, &haproxy, &v2, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let load = load.stop();
    deployed.expect_code(0);
    assert_no_failures(&load);
    assert_eq!(versions_at_end(&load), ["v2"]);
    assert!(
        deployed
            .stderr
            .contains("a server zdd did not add is never deleted"),
        "{}",
        deployed.stderr
    );
    // The configuration's servers are still there, in maintenance; the v2
    // replicas were added beside them.
    let stat = haproxy.command("show stat app 4 -1");
    for i in 0..v1.len() {
        let line = stat
            .lines()
            .find(|l| l.starts_with(&format!("app,v1-{i},")))
            .unwrap_or_else(|| panic!("server v1-{i} was deleted: {stat}"));
        assert!(line.contains(",MAINT,"), "{line}");
    }
    let mut routed = haproxy.server_addresses();
    routed.retain(|a| !v1.contains(a));
    assert_eq!(routed, replica_addresses(&sandbox));
}

#[test]
fn after_an_haproxy_restart_sync_puts_every_replica_back_without_a_deploy() {
    let (sandbox, mut haproxy) = stage("sync");
    let v2 = sandbox.app_context("v2", &[]);
    deploy(&sandbox, &haproxy, &v2, &[]).expect_code(0);

    // A restart forgets the servers added at runtime: nothing serves.
    haproxy.restart();
    assert!(haproxy.server_addresses().is_empty());
    assert_eq!(haproxy.get("/").0, 503);

    let listed = run("zdd-ps", &[&sandbox.id], "").ok();
    let socket = haproxy.socket.to_str().unwrap().to_owned();
    let synced = run(
        "zdd-route",
        &["--sync", "--socket", &socket, "--backend", "app"],
        &listed.stdout,
    );
    synced.expect_code(0);
    assert_eq!(haproxy.server_addresses(), replica_addresses(&sandbox));
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);
    // A second sync while it serves changes nothing and fails nothing.
    let again = run(
        "zdd-route",
        &["--sync", "--socket", &socket, "--backend", "app"],
        &listed.stdout,
    );
    again.expect_code(0);
    std::thread::sleep(Duration::from_millis(1500));
    let load = load.stop();
    assert_no_failures(&load);
    assert_eq!(versions_at_end(&load), ["v2"]);
}

#[test]
fn through_caddy_a_deploy_a_broken_release_and_a_rollback_fail_no_request() {
    let sandbox = Sandbox::new("caddy");
    let caddy = Caddy::options()
        .handler_id("api")
        .drain_handler("api-draining")
        .start_in(&sandbox.dir);
    let deploy = |context: Option<&std::path::Path>, extra: &[&str]| {
        run_command(caddy_deploy_command(&sandbox, &caddy, context, extra), "")
    };
    let v1 = sandbox.app_context("v1", &[("STARTUP_DELAY_MS", "500")]);
    deploy(Some(&v1), &["--replicas", "2"]).expect_code(0);
    let upstreams = || {
        let mut dials = caddy.upstream_addresses();
        dials.sort();
        dials
    };
    assert_eq!(upstreams(), replica_addresses(&sandbox));

    let load = Load::start(&sandbox, &caddy.url(), CLIENTS);
    let v2 = sandbox.app_context("v2", &[("STARTUP_DELAY_MS", "500")]);
    let deployed = deploy(Some(&v2), &[]);
    deployed.expect_code(0);
    assert_eq!(sandbox.serving_versions(), ["v2", "v2"]);
    assert!(
        deployed.stderr.contains("0 requests in flight"),
        "the old upstreams were drained: {}",
        deployed.stderr
    );
    let broken = sandbox.app_context("v3", &[("NEVER_HEALTHY", "1")]);
    deploy(Some(&broken), &[]).expect_code(1);
    assert_eq!(sandbox.serving_versions(), ["v2", "v2"]);
    deploy(None, &["--rollback"]).expect_code(0);
    std::thread::sleep(Duration::from_millis(300));
    let load = load.stop();
    assert_eq!(sandbox.serving_versions(), ["v1", "v1"]);
    assert_eq!(versions_at_end(&load), ["v1"]);
    assert_eq!(
        upstreams(),
        replica_addresses(&sandbox),
        "Caddy's handler lists exactly the v1 replicas"
    );
    assert!(caddy.upstream_addresses_of("api-draining").is_empty());
    // With the host's net.ipv4.tcp_migrate_req=1 (the fixture sees to it),
    // a Caddy reload loses no connection queued on the socket it closes.
    eprintln!(
        "figures: through Caddy, a deploy, a broken release and a rollback: {} requests, {} failed",
        load["requests"], load["failed"]
    );
    assert_no_failures(&load);
}
