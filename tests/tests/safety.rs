//! A rollback removes only what its run started, the old release goes only
//! on evidence the engine confirms, and a rollback never removes the last
//! serving capacity: each case under load through a real HAProxy, with no
//! failed request, the version serving afterwards, and exactly the
//! containers that should be left.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use serde_json::Value;
use zdd_e2e::{
    all_container_ids, assert_no_failures, bin_with_wrapper, deploy, deploy_command, newest_run,
    parse_records, prebuild, replica_addresses, replica_ids, run, run_summary, signal_group, stage,
    versions_seen, wait_for_run_step, Haproxy, Load, Run, Sandbox, Scenario, CLIENTS,
};

/// Reports the scenario to the fault matrix; `serving` is what answers now.
fn report(name: &str, load: &Value, exit: i32, sandbox: &zdd_e2e::Sandbox, rerun: Option<i32>) {
    let serving = sandbox.serving_versions();
    let leftovers = all_container_ids(sandbox).len() - replica_ids(sandbox).len();
    Scenario {
        name,
        load,
        exit,
        serving: &serving,
        leftovers,
        rerun_exit: rerun,
    }
    .report();
}

#[test]
fn a_failed_scale_up_of_the_serving_release_keeps_every_replica_that_served() {
    let (sandbox, haproxy) = stage("scaleup");
    let before = replica_ids(&sandbox);
    let addresses = replica_addresses(&sandbox);
    // The same v1 context: its two replicas are reused, a third is started
    // and cannot be healthy within 300 ms (it listens after 500 ms).
    let v1 = sandbox.app_context("v1", &[("STARTUP_DELAY_MS", "500")]);
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);
    let failed = deploy(
        &sandbox,
        &haproxy,
        &v1,
        &["--replicas", "3", "--health-timeout", "300ms"],
    );
    let load = load.stop();
    failed.expect_code(1);
    assert!(
        failed.stderr.contains("served before this run"),
        "{}",
        failed.stderr
    );
    assert_no_failures(&load);
    assert_eq!(
        replica_ids(&sandbox),
        before,
        "the two v1 replicas serve on"
    );
    assert_eq!(all_container_ids(&sandbox), before, "the third one is gone");
    assert_eq!(haproxy.server_addresses(), addresses);
    assert_eq!(sandbox.serving_versions(), ["v1", "v1"]);
    report(
        "failed scale-up of the serving release",
        &load,
        failed.code,
        &sandbox,
        None,
    );
}

#[test]
fn a_rerun_after_a_killed_deploy_that_then_fails_keeps_the_old_release() {
    let (sandbox, haproxy) = stage("rerun");
    let before = replica_ids(&sandbox);
    let addresses = replica_addresses(&sandbox);
    let v2 = sandbox.app_context("v2", &[("STARTUP_DELAY_MS", "3000")]);
    prebuild(&sandbox, &v2);
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);

    // Killed (SIGKILL, script and tools) while its v2 replicas start.
    let mut child = deploy_command(&sandbox, &haproxy, &v2, &["-q"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let earlier = newest_run(&sandbox);
    let health = wait_for_run_step(
        &sandbox,
        earlier.as_ref(),
        "03-health.jsonl",
        Duration::from_secs(60),
    );
    signal_group(child.id(), libc::SIGKILL);
    let _ = child.wait();
    assert_eq!(
        replica_ids(&sandbox).len(),
        4,
        "the killed run left two v2 replicas"
    );

    // The rerun of the same release fails too (300 ms is too short): the
    // replicas the dead run left must not count as serving ones.
    let rerun = deploy(&sandbox, &haproxy, &v2, &["--health-timeout", "300ms"]);
    let load = load.stop();
    rerun.expect_code(1);
    assert!(rerun.stderr.contains("did not finish"), "{}", rerun.stderr);
    assert_no_failures(&load);
    assert_eq!(versions_seen(&load), ["v1"]);
    assert_eq!(replica_ids(&sandbox), before);
    assert_eq!(
        all_container_ids(&sandbox),
        before,
        "no v2 container is left"
    );
    assert_eq!(haproxy.server_addresses(), addresses);
    assert_eq!(
        run_summary(&health)["result"],
        "killed",
        "the dead run is marked"
    );
    report(
        "rerun after SIGKILL, failing",
        &load,
        rerun.code,
        &sandbox,
        None,
    );
}

#[test]
fn a_new_replica_that_crashes_after_its_health_check_stops_the_retire() {
    let (sandbox, haproxy) = stage("crashlate");
    let before = replica_ids(&sandbox);
    let addresses = replica_addresses(&sandbox);
    let v2 = sandbox.app_context("v2", &[]);
    // Just before the retire step, one new replica dies (docker kill).
    let bin = bin_with_wrapper(
        &sandbox,
        "zdd-retire",
        r#"input=$(cat)
case " $* " in *" --role "*) ;; *)
    id=$(printf '%s\n' "$input" | jq -r 'select(.type=="container" and .role=="new") | .id' | head -1)
    docker kill "$id" >/dev/null ;;
esac
printf '%s\n' "$input" | exec "$REAL" "$@""#,
    );
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);
    let out = deploy_command(&sandbox, &haproxy, &v2, &[])
        .env("ZDD_BIN", &bin)
        .output()
        .unwrap();
    let load = load.stop();
    let result = Run::from(out);
    result.expect_code(1);
    assert!(
        result
            .stderr
            .contains("refusing to retire the old containers")
            && result.stderr.contains("not running"),
        "{}",
        result.stderr
    );
    assert!(result.stderr.contains("rolled back"), "{}", result.stderr);
    assert_no_failures(&load);
    assert_eq!(replica_ids(&sandbox), before, "v1 serves on");
    assert_eq!(
        all_container_ids(&sandbox),
        before,
        "both v2 replicas are gone"
    );
    assert_eq!(haproxy.server_addresses(), addresses);
    assert_eq!(sandbox.serving_versions(), ["v1", "v1"]);
    report(
        "new replica crashes after its health check",
        &load,
        result.code,
        &sandbox,
        None,
    );
}

#[test]
fn a_new_replica_that_haproxy_cannot_reach_rolls_back_though_docker_calls_it_healthy() {
    let (sandbox, haproxy) = stage("lbcheck");
    let before = replica_ids(&sandbox);
    let addresses = replica_addresses(&sandbox);
    let v2 = sandbox.app_context("v2", &[("LISTEN_LOOPBACK_ONLY", "1")]);
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);
    let failed = deploy(&sandbox, &haproxy, &v2, &["--up-timeout", "3s"]);
    let load = load.stop();
    failed.expect_code(1);
    assert!(failed.stderr.contains("route failed"), "{}", failed.stderr);
    assert!(
        failed.stderr.contains("did not report it UP"),
        "{}",
        failed.stderr
    );
    assert_no_failures(&load);
    assert_eq!(versions_seen(&load), ["v1"]);
    assert_eq!(all_container_ids(&sandbox), before);
    assert_eq!(haproxy.server_addresses(), addresses);
    report(
        "new replica fails HAProxy's check only",
        &load,
        failed.code,
        &sandbox,
        None,
    );
}

#[test]
fn an_image_whose_command_does_not_exist_fails_the_scale_step_and_leaves_nothing() {
    let (sandbox, haproxy) = stage("nocmd");
    let before = replica_ids(&sandbox);
    let addresses = replica_addresses(&sandbox);
    let v3 = sandbox.app_context("v3", &[]);
    let dockerfile = v3.join("Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    std::fs::write(
        &dockerfile,
        text.replace("ENTRYPOINT [\"/app\"]", "ENTRYPOINT [\"/no-such-command\"]"),
    )
    .unwrap();
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);
    let failed = deploy(&sandbox, &haproxy, &v3, &[]);
    let load = load.stop();
    failed.expect_code(1);
    assert!(failed.stderr.contains("scale failed"), "{}", failed.stderr);
    assert_no_failures(&load);
    assert_eq!(
        all_container_ids(&sandbox),
        before,
        "the created replicas that never started are removed too"
    );
    assert_eq!(haproxy.server_addresses(), addresses);
    assert_eq!(sandbox.serving_versions(), ["v1", "v1"]);
    report(
        "image command does not exist",
        &load,
        failed.code,
        &sandbox,
        None,
    );
}

#[test]
fn a_failed_restore_keeps_the_new_replicas_serving() {
    // On a network of its own: the stopped replicas' addresses must not be
    // given to another test's container meanwhile (HAProxy and zdd-route
    // would rightly find something answering there).
    let sandbox = Sandbox::new("restorefail");
    let haproxy = Haproxy::start(&sandbox);
    let network = sandbox.network("private");
    let spec = sandbox.dir.join("spec.json");
    std::fs::write(
        &spec,
        format!(r#"{{"port": 8080, "networks": [{{"name": "{network}"}}]}}"#),
    )
    .unwrap();
    let v1 = sandbox.app_context("v1", &[]);
    deploy(
        &sandbox,
        &haproxy,
        &v1,
        &["--replicas", "2", "--spec", spec.to_str().unwrap()],
    )
    .expect_code(0);
    let old = replica_ids(&sandbox);
    let v2 = sandbox.app_context("v2", &[]);
    let socket = haproxy.socket.to_str().unwrap().to_owned();
    let route = ["--socket", &socket, "--backend", "app"];
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);

    // The steps by hand, up to the switch: v1 drained, v2 serving.
    let built = prebuild(&sandbox, &v2);
    let scaled = run("zdd-scale", &[], &built.stdout).ok();
    let checked = run("zdd-health", &[], &scaled.stdout).ok();
    let routed = run("zdd-route", &route, &checked.stdout).ok();
    // The old replicas stop (drained, so no request is cut): the restore
    // cannot make them serve again.
    for id in &old {
        zdd_e2e::docker(&["stop", "-t", "5", id]);
    }
    let mut restore_args = route.to_vec();
    restore_args.extend(["--restore", "--up-timeout", "2s"]);
    let restored = run("zdd-route", &restore_args, &routed.stdout);
    restored.expect_code(1);
    assert!(
        restored.stderr.contains("not withdrawing the new servers"),
        "{}",
        restored.stderr
    );
    let retired = run("zdd-retire", &["--role", "new"], &restored.stdout);
    retired.expect_code(1);
    assert!(
        retired.stderr.contains("the new replicas keep serving"),
        "{}",
        retired.stderr
    );
    std::thread::sleep(Duration::from_millis(500));
    let load = load.stop();
    assert_no_failures(&load);
    assert_eq!(sandbox.serving_versions(), ["v2", "v2"]);
    let new: Vec<String> = parse_records(&scaled.stdout)
        .iter()
        .filter(|r| r["role"] == "new")
        .map(|r| r["address"].as_str().unwrap().to_owned())
        .collect();
    for address in &new {
        assert!(
            haproxy.server_addresses().contains(address),
            "{address} is still routed"
        );
    }
    report(
        "restore fails after the drain",
        &load,
        retired.code,
        &sandbox,
        None,
    );
}
