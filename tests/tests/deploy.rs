//! The full pipeline (scripts/zdd-deploy) through a real HAProxy, under
//! continuous load: zero failed requests, automatic rollback, safe when
//! killed, one deploy at a time.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use zdd_e2e::{
    all_container_ids, assert_no_failures, deploy, deploy_command, http_get, prebuild,
    replica_addresses, replica_ids, signal_group, stage, versions_at_end, Load, Run, Scenario,
    CLIENTS,
};

#[test]
fn a_deploy_under_load_fails_no_request_and_switches_versions() {
    let (sandbox, haproxy) = stage("underload");
    let v2 = sandbox.app_context("v2", &[("STARTUP_DELAY_MS", "500")]);
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);
    let deployed = deploy(&sandbox, &haproxy, &v2, &[]);
    std::thread::sleep(Duration::from_millis(500));
    let load = load.stop();
    deployed.expect_code(0);
    assert_no_failures(&load);
    let versions = load["versions"].as_object().unwrap();
    assert!(
        versions.contains_key("v1") && versions.contains_key("v2"),
        "{versions:?}"
    );
    assert_eq!(versions_at_end(&load), ["v2"]);
    assert_eq!(sandbox.serving_versions(), ["v2", "v2"]);
    assert_eq!(
        haproxy.server_addresses(),
        replica_addresses(&sandbox),
        "HAProxy lists exactly the v2 replicas"
    );
}

#[test]
fn slow_requests_in_flight_on_the_old_replicas_complete() {
    let (sandbox, haproxy) = stage("slow");
    let v2 = sandbox.app_context("v2", &[]);
    // Build first, so the deploy reaches the switch within the requests' 2 s.
    prebuild(&sandbox, &v2);
    let address = format!("127.0.0.1:{}", haproxy.port);
    let slow: Vec<_> = (0..6)
        .map(|_| {
            let address = address.clone();
            std::thread::spawn(move || http_get(&address, "/?delay_ms=2000"))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let deployed = deploy(&sandbox, &haproxy, &v2, &[]);
    deployed.expect_code(0);
    for request in slow {
        let (status, body) = request
            .join()
            .unwrap()
            .expect("the slow request was answered");
        assert_eq!((status, body.trim()), (200, "v1"));
    }
    // The drain waited for them: the switch came before they ended.
    assert!(deployed.stderr.contains("drain"), "{}", deployed.stderr);
    assert!(
        started.elapsed() > Duration::from_millis(1500),
        "the deploy waited for the drain"
    );
    assert_eq!(sandbox.serving_versions(), ["v2", "v2"]);
}

#[test]
fn broken_and_crashing_releases_roll_back_without_failing_a_request() {
    let (sandbox, haproxy) = stage("rollback");
    let before = replica_addresses(&sandbox);
    let broken = sandbox.app_context("v3", &[("NEVER_HEALTHY", "1")]);
    let crashing = sandbox.app_context(
        "v4",
        &[("STARTUP_DELAY_MS", "3000"), ("CRASH_AFTER_MS", "700")],
    );
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);
    let broken_run = deploy(&sandbox, &haproxy, &broken, &[]);
    let crashing_run = deploy(&sandbox, &haproxy, &crashing, &[]);
    let load = load.stop();

    for (run, name) in [(&broken_run, "v3"), (&crashing_run, "v4")] {
        run.expect_code(1);
        assert!(
            run.stderr.contains("health failed; rolling back"),
            "{name}: {}",
            run.stderr
        );
        assert!(run.stderr.contains("rolled back"), "{name}: {}", run.stderr);
    }
    assert_no_failures(&load);
    assert_eq!(
        load["versions"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["v1"]
    );
    assert_eq!(
        replica_addresses(&sandbox),
        before,
        "the v1 replicas serve on, no more, no fewer"
    );
    assert_eq!(sandbox.serving_versions(), ["v1", "v1"]);
    assert_eq!(
        haproxy.server_addresses(),
        before,
        "HAProxy lists exactly the v1 replicas"
    );
    let serving = sandbox.serving_versions();
    for (run, name) in [
        (&broken_run, "never healthy"),
        (&crashing_run, "crashes while starting"),
    ] {
        Scenario {
            name: &format!("new release {name}"),
            load: &load,
            exit: run.code,
            serving: &serving,
            leftovers: all_container_ids(&sandbox).len() - replica_ids(&sandbox).len(),
            rerun_exit: None,
        }
        .report();
    }
}

#[test]
fn a_killed_deploy_leaves_the_service_serving_and_a_rerun_converges() {
    let (sandbox, haproxy) = stage("killed");
    let v1 = sandbox.app_context("v1", &[("STARTUP_DELAY_MS", "500")]);
    let v2 = sandbox.app_context("v2", &[("STARTUP_DELAY_MS", "500")]);
    // Build both, so every kill lands in the rollout steps.
    for context in [&v1, &v2] {
        prebuild(&sandbox, context);
    }
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);
    // Kill points spread over scale, health, route and retire; alternate
    // the release so every run has work to do.
    for (i, after_ms) in [200u64, 600, 1000, 1400, 1800, 2200]
        .into_iter()
        .enumerate()
    {
        let context: &PathBuf = if i % 2 == 0 { &v2 } else { &v1 };
        let mut child = deploy_command(&sandbox, &haproxy, context, &["-q"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(after_ms));
        // SIGKILL the whole pipeline: the script and the tool it runs.
        signal_group(child.id(), libc::SIGKILL);
        let _ = child.wait();
        let (status, _) =
            http_get(&format!("127.0.0.1:{}", haproxy.port), "/").expect("still serving");
        assert_eq!(status, 200, "serving after a kill at {after_ms} ms");
    }
    let converged = deploy(&sandbox, &haproxy, &v2, &["--replicas", "2"]);
    let load = load.stop();
    converged.expect_code(0);
    assert_no_failures(&load);
    assert_eq!(sandbox.serving_versions(), ["v2", "v2"]);
    assert_eq!(
        haproxy.server_addresses(),
        replica_addresses(&sandbox),
        "HAProxy lists exactly the v2 replicas"
    );
    Scenario {
        name: "SIGKILL at 6 points from scale to retire, then one rerun",
        load: &load,
        exit: -9,
        serving: &sandbox.serving_versions(),
        leftovers: all_container_ids(&sandbox).len() - replica_ids(&sandbox).len(),
        rerun_exit: Some(converged.code),
    }
    .report();
}

#[test]
fn two_deploys_from_two_folders_one_runs_the_other_is_refused_naming_it() {
    let (sandbox, haproxy) = stage("lock");
    let v2 = sandbox.app_context("v2", &[("STARTUP_DELAY_MS", "500")]);
    // Each from its own working directory, with its own runs folder: the
    // lock is the host's, not the folder's.
    let spawn = |folder: &str, extra: &[&str]| {
        let dir = sandbox.dir.join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        let runs = dir.join("runs");
        let mut args = vec!["-q", "--runs-dir", runs.to_str().unwrap()];
        args.extend_from_slice(extra);
        deploy_command(&sandbox, &haproxy, &v2, &args)
            .current_dir(&dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn("a", &[]), spawn("b", &[]));
    let runs: Vec<Run> = [first, second]
        .into_iter()
        .map(|child| Run::from(child.wait_with_output().unwrap()))
        .collect();
    let mut codes: Vec<i32> = runs.iter().map(|r| r.code).collect();
    codes.sort();
    assert_eq!(
        codes,
        [0, 2],
        "one deploys, one is refused: {:?}",
        runs.iter().map(|r| &r.stderr).collect::<Vec<_>>()
    );
    let refused = runs.iter().find(|r| r.code == 2).unwrap();
    assert!(
        refused.stderr.contains("another deploy of") && refused.stderr.contains("pid "),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains(sandbox.dir.to_str().unwrap()),
        "the holder's folder is named: {}",
        refused.stderr
    );
    assert_eq!(sandbox.serving_versions(), ["v2", "v2"]);

    // With --lock-wait, the second waits for the first instead.
    let first = spawn("a", &[]);
    std::thread::sleep(Duration::from_millis(100));
    let second = spawn("b", &["--lock-wait", "60"])
        .wait_with_output()
        .unwrap();
    assert!(first.wait_with_output().unwrap().status.success());
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
}

#[test]
fn dry_run_changes_nothing() {
    let (sandbox, haproxy) = stage("dryrun");
    let before = replica_addresses(&sandbox);
    let v2 = sandbox.app_context("v2", &[]);
    let run = deploy(&sandbox, &haproxy, &v2, &["--dry-run"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("zdd-scale") && run.stdout.contains("zdd-retire"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&before[0]),
        "the running replicas are listed: {}",
        run.stdout
    );
    assert_eq!(replica_addresses(&sandbox), before);
    assert_eq!(sandbox.serving_versions(), ["v1", "v1"]);
}

#[test]
fn a_proxy_that_does_not_answer_is_exit_2_before_anything_changes() {
    let (sandbox, haproxy) = stage("noproxy");
    let before = replica_ids(&sandbox);
    let runs_before = std::fs::read_dir(sandbox.dir.join("runs")).unwrap().count();
    let v2 = sandbox.app_context("v2", &[]);
    let wrong_backend = deploy(&sandbox, &haproxy, &v2, &["--backend", "nope"]);
    wrong_backend.expect_code(2);
    assert!(
        wrong_backend.stderr.contains("no backend `nope`"),
        "{}",
        wrong_backend.stderr
    );
    // Caddy's admin API where nothing listens.
    let down = std::process::Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join("scripts/zdd-deploy"),
    )
    .env("ZDD_BIN", zdd_e2e::bin_dir())
    .env("ZDD_STATE_DIR", sandbox.dir.join("state"))
    .args(["--service", &sandbox.id, "--caddy-admin", "127.0.0.1:1"])
    .args(["--caddy-handler", "api", "--runs-dir"])
    .arg(sandbox.dir.join("runs"))
    .arg(&v2)
    .output()
    .unwrap();
    let down = Run::from(down);
    down.expect_code(2);
    assert!(down.stderr.contains("is caddy running"), "{}", down.stderr);
    assert_eq!(replica_ids(&sandbox), before, "nothing started or stopped");
    assert_eq!(
        std::fs::read_dir(sandbox.dir.join("runs")).unwrap().count(),
        runs_before,
        "no run began"
    );
}
