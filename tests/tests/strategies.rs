//! Rollout strategies under load through a real HAProxy: the watch window
//! (`zdd-deploy --watch`) keeps the old replicas warm after the switch and
//! reverts to them at the first sign the new release is bad.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use zdd_e2e::{
    assert_failures_only, assert_no_failures, bin_with_wrapper, deploy, deploy_command,
    docker_lines, newest_run, parse_records, replica_addresses, replica_ids, run_summary,
    signal_process, stage, summary_steps, versions_at_end, wait_for_run_step, Haproxy, Load,
    Sandbox, CLIENTS,
};

fn records_of(path: &Path) -> Vec<Value> {
    parse_records(&std::fs::read_to_string(path).unwrap())
}

/// Milliseconds between the watch's verdict and the end of the restore,
/// from the two files' modification times.
fn revert_ms(run: &Path) -> u128 {
    let modified = |name: &str| {
        std::fs::metadata(run.join(name))
            .unwrap()
            .modified()
            .unwrap()
    };
    modified("r1-restored.jsonl")
        .duration_since(modified("05-watched.jsonl"))
        .unwrap_or_default()
        .as_millis()
}

#[test]
fn a_release_that_crashes_after_its_health_check_is_reverted_and_a_good_one_passes_the_watch() {
    let (sandbox, haproxy) = stage("watch");
    let before = replica_ids(&sandbox);
    // Healthy after ~0.5 s, then exits 3 s later.
    let crashing = sandbox.app_context(
        "v2",
        &[("STARTUP_DELAY_MS", "500"), ("CRASH_AFTER_MS", "3500")],
    );
    let good = sandbox.app_context("v3", &[]);
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);
    let reverted = deploy(&sandbox, &haproxy, &crashing, &["--watch", "10s"]);
    reverted.expect_code(1);
    assert!(
        reverted.stderr.contains("watch failed; rolling back"),
        "{}",
        reverted.stderr
    );
    let run = newest_run(&sandbox).unwrap();
    assert_eq!(run_summary(&run)["failed_step"], "watch");
    assert_eq!(run_summary(&run)["result"], "rolled-back");
    let watched = records_of(&run.join("05-watched.jsonl"));
    let new: Vec<&Value> = watched.iter().filter(|r| r["role"] == "new").collect();
    assert!(new.iter().all(|r| r["watch"] == "failed"), "{new:?}");
    // Seen by the engine (the replica exited) or first by HAProxy (the
    // connection it refused, the response the crash cut off): either way,
    // the watch failed on it.
    assert!(
        new.iter().any(|r| {
            let reason = r["health_reason"].as_str().unwrap_or("");
            reason.contains("exited") || reason.contains("DOWN") || reason.contains("eresp")
        }),
        "{new:?}"
    );
    assert_eq!(replica_ids(&sandbox), before, "the v1 replicas serve on");
    eprintln!(
        "figures: watch verdict → rollback done: {} ms",
        revert_ms(&run)
    );
    let ready_again = reverted
        .stderr
        .lines()
        .find(|l| l.contains("is ready again"))
        .unwrap_or_else(|| panic!("the watch made no old server ready: {}", reverted.stderr));
    eprintln!("figures: {ready_again}");

    // Both new replicas died in the same instant, with the old servers
    // drained: HAProxy marked each new server DOWN at its first refused
    // connection and sent the retries to the standbys (the old replicas
    // as backups) until the watch made the old servers ready: no request
    // failed. (A moment of load after the rollback, so the last bucket is
    // all after it.)
    std::thread::sleep(Duration::from_millis(600));
    let crash_load = load.stop();
    assert_eq!(versions_at_end(&crash_load), ["v1"]);
    assert_no_failures(&crash_load);
    eprintln!(
        "figures: {} of {} requests failed in the instant both new replicas crashed",
        crash_load["failed"], crash_load["requests"]
    );
    assert_eq!(
        haproxy.server_addresses(),
        replica_addresses(&sandbox),
        "HAProxy lists the v1 replicas once each: the standbys are gone"
    );

    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);
    let passed = deploy(&sandbox, &haproxy, &good, &["--watch", "2s"]);
    passed.expect_code(0);
    std::thread::sleep(Duration::from_millis(300));
    let load = load.stop();
    assert_no_failures(&load);
    assert_eq!(versions_at_end(&load), ["v3"]);
    assert_eq!(sandbox.serving_versions(), ["v3", "v3"]);
    let run = newest_run(&sandbox).unwrap();
    let watched = records_of(&run.join("05-watched.jsonl"));
    assert!(watched
        .iter()
        .filter(|r| r["role"] == "new")
        .all(|r| r["watch"] == "passed"));
}

#[test]
fn a_release_that_answers_500_while_its_health_check_passes_is_reverted_by_the_5xx_rule() {
    let (sandbox, haproxy) = stage("watch5xx");
    let before = replica_ids(&sandbox);
    let failing = sandbox.app_context("v2", &[("FAIL_ROOT", "1")]);
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);
    let reverted = deploy(
        &sandbox,
        &haproxy,
        &failing,
        &["--watch", "10s", "--watch-max-errors", "5"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let load = load.stop();
    reverted.expect_code(1);
    let run = newest_run(&sandbox).unwrap();
    assert_eq!(run_summary(&run)["failed_step"], "watch");
    let reason = records_of(&run.join("05-watched.jsonl"))
        .iter()
        .filter(|r| r["role"] == "new")
        .map(|r| r["health_reason"].as_str().unwrap_or("").to_owned())
        .collect::<Vec<_>>()
        .join("; ");
    assert!(reason.contains("hrsp_5xx"), "{reason}");
    assert_eq!(replica_ids(&sandbox), before, "the v1 replicas serve on");
    assert_eq!(versions_at_end(&load), ["v1"]);
    // The only failures are the 500s the bad release answered before the
    // watch saw more than 5 of them: no refused or dropped request.
    assert_failures_only(&load, "status_500");
    eprintln!(
        "figures: {} answered 500 by the bad release before the revert, of {} requests; verdict → rollback done {} ms",
        load["failed"],
        load["requests"],
        revert_ms(&run)
    );
}

/// Samples, every 50 ms until `stop`, the servers HAProxy has UP and ready
/// (`show stat` status `UP`: not draining, not in maintenance) and the
/// running replicas of the service; the fewest and the most seen.
fn sample_capacity(
    haproxy: &Haproxy,
    sandbox: &Sandbox,
    stop: &std::sync::atomic::AtomicBool,
) -> (usize, usize) {
    let (mut fewest_up, mut most_running) = (usize::MAX, 0);
    let filter = format!("label=zdd.service={}", sandbox.id);
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let stat = haproxy.command("show stat app 4 -1");
        let status = stat.lines().next().and_then(|h| {
            h.trim_start_matches("# ")
                .split(',')
                .position(|c| c == "status")
        });
        if let Some(column) = status {
            let up = stat
                .lines()
                .skip(1)
                .filter(|l| l.split(',').nth(column) == Some("UP"))
                .count();
            fewest_up = fewest_up.min(up);
        }
        let running = docker_lines(&["ps", "-q", "--filter", &filter]).len();
        most_running = most_running.max(running);
        std::thread::sleep(Duration::from_millis(50));
    }
    (fewest_up, most_running)
}

#[test]
fn batches_of_one_keep_four_serving_and_at_most_five_running_and_a_failed_batch_rolls_all_back() {
    let (sandbox, haproxy) = stage("batch");
    let v1 = sandbox.app_context("v1", &[("STARTUP_DELAY_MS", "500")]);
    deploy(&sandbox, &haproxy, &v1, &["--replicas", "4"]).expect_code(0);
    let before = replica_ids(&sandbox);
    assert_eq!(before.len(), 4);
    let v2 = sandbox.app_context("v2", &[]);
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);

    let stop = std::sync::atomic::AtomicBool::new(false);
    let (deployed, (fewest_up, most_running)) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| sample_capacity(&haproxy, &sandbox, &stop));
        let deployed = deploy(&sandbox, &haproxy, &v2, &["--batch", "1"]);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        (deployed, sampler.join().unwrap())
    });
    deployed.expect_code(0);
    assert_eq!(sandbox.serving_versions(), ["v2"; 4]);
    assert!(
        fewest_up >= 4,
        "fewest UP servers during the deploy: {fewest_up}"
    );
    assert!(most_running <= 5, "most running replicas: {most_running}");
    let run = newest_run(&sandbox).unwrap();
    let scales = summary_steps(&run_summary(&run))
        .iter()
        .filter(|s| *s == "scale")
        .count();
    assert_eq!(scales, 4, "four batches");
    eprintln!("figures: --batch 1 of 4: fewest UP {fewest_up}, most running {most_running}");

    // v3's third batch fails its health step (a wrapper, so the failure
    // lands exactly there): the third batch is undone and the two before
    // it are rolled back to v2, batch by batch.
    let count = sandbox.dir.join("health-calls");
    let bin = bin_with_wrapper(
        &sandbox,
        "zdd-health",
        &format!(
            "n=$(( $(cat {c} 2>/dev/null || echo 0) + 1 )); echo $n > {c}\n\
             if [ $n = 3 ]; then cat >/dev/null; echo 'zdd-health: failing batch 3 on purpose' >&2; exit 1; fi\n\
             exec \"$REAL\" \"$@\"",
            c = count.display()
        ),
    );
    let v3 = sandbox.app_context("v3", &[]);
    let failed = deploy_command(&sandbox, &haproxy, &v3, &["--batch", "1"])
        .env("ZDD_BIN", &bin)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("rolling back the batch(es) done"),
        "{stderr}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let load = load.stop();
    assert_no_failures(&load);
    assert_eq!(versions_at_end(&load), ["v2"]);
    assert_eq!(sandbox.serving_versions(), ["v2"; 4], "{stderr}");
    let run = newest_run(&sandbox).unwrap();
    assert_eq!(run_summary(&run)["result"], "rolled-back");
    assert_eq!(run_summary(&run)["failed_step"], "health");
}

#[test]
fn a_canary_takes_its_share_beside_the_old_release_then_the_rest_follows_or_it_is_withdrawn() {
    let (sandbox, haproxy) = stage("canary");
    let before = replica_ids(&sandbox);
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);

    // A canary that answers 500: withdrawn after a few of its share of
    // requests; the old replicas never stopped serving.
    let failing = sandbox.app_context("v2", &[("FAIL_ROOT", "1")]);
    let reverted = deploy(
        &sandbox,
        &haproxy,
        &failing,
        &[
            "--canary",
            "10s",
            "--canary-weight",
            "20%",
            "--watch-max-errors",
            "3",
        ],
    );
    reverted.expect_code(1);
    assert!(
        reverted
            .stderr
            .contains("canary: 1 new server(s) at weight"),
        "{}",
        reverted.stderr
    );
    let run = newest_run(&sandbox).unwrap();
    assert_eq!(run_summary(&run)["failed_step"], "canary");
    assert_eq!(run_summary(&run)["result"], "rolled-back");
    assert_eq!(replica_ids(&sandbox), before, "the v1 replicas serve on");
    let bad_load = load.stop();
    assert_failures_only(&bad_load, "status_500");
    eprintln!(
        "figures: a failing canary at 20%: {} of {} requests answered 500 before it was withdrawn",
        bad_load["failed"], bad_load["requests"]
    );

    // A good canary: v3 shares the traffic with v1 for the window, then
    // the rollout goes on.
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);
    let good = sandbox.app_context("v3", &[]);
    let passed = deploy(
        &sandbox,
        &haproxy,
        &good,
        &["--canary", "2s", "--canary-weight", "20%"],
    );
    passed.expect_code(0);
    std::thread::sleep(Duration::from_millis(300));
    let load = load.stop();
    assert_no_failures(&load);
    assert_eq!(versions_at_end(&load), ["v3"]);
    assert_eq!(sandbox.serving_versions(), ["v3", "v3"]);
    let run = newest_run(&sandbox).unwrap();
    let watched = records_of(&run.join("c-05-watched.jsonl"));
    let canary: Vec<&Value> = watched.iter().filter(|r| r["role"] == "new").collect();
    assert_eq!(canary.len(), 1);
    assert_eq!(canary[0]["watch"], "passed");
    let versions = load["versions"].as_object().unwrap();
    let (v1, v3) = (
        versions.get("v1").and_then(Value::as_u64).unwrap_or(0),
        versions.get("v3").and_then(Value::as_u64).unwrap_or(0),
    );
    assert!(v1 > 0 && v3 > 0, "{versions:?}");
    eprintln!("figures: a good canary at 20% for 2 s: v1 {v1}, v3 {v3} requests; 0 failed");
}

#[test]
fn sigterm_during_the_watch_or_between_batches_rolls_back_and_a_rerun_converges() {
    let (sandbox, haproxy) = stage("stratsig");
    let before = replica_ids(&sandbox);
    let v2 = sandbox.app_context("v2", &[]);
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);

    for (extra, file) in [
        (&["--watch", "20s"][..], "05-watched.jsonl"),
        (&["--batch", "1"][..], "b2-02-scaled.jsonl"),
    ] {
        let earlier = newest_run(&sandbox);
        let mut child = deploy_command(&sandbox, &haproxy, &v2, extra)
            .spawn()
            .unwrap();
        wait_for_run_step(&sandbox, earlier.as_ref(), file, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(300));
        signal_process(child.id(), libc::SIGTERM);
        assert_eq!(child.wait().unwrap().code(), Some(143), "{extra:?}");
        // Between batches the retired v1 replicas are started again.
        assert_eq!(sandbox.serving_versions(), ["v1", "v1"], "{extra:?}");
        if extra[0] == "--watch" {
            assert_eq!(replica_ids(&sandbox), before, "the v1 replicas serve on");
            assert_eq!(
                haproxy.server_addresses(),
                replica_addresses(&sandbox),
                "a stopped watch deletes its standbys"
            );
        }
        let run = newest_run(&sandbox).unwrap();
        assert_eq!(run_summary(&run)["result"], "interrupted", "{extra:?}");
    }
    // Run twice: the batched deploy converges, and again changes nothing.
    deploy(&sandbox, &haproxy, &v2, &["--batch", "1"]).expect_code(0);
    let after = replica_ids(&sandbox);
    deploy(&sandbox, &haproxy, &v2, &["--batch", "1"]).expect_code(0);
    assert_eq!(
        replica_ids(&sandbox),
        after,
        "a second run keeps the v2 replicas"
    );
    std::thread::sleep(Duration::from_millis(300));
    let load = load.stop();
    assert_no_failures(&load);
    assert_eq!(sandbox.serving_versions(), ["v2", "v2"]);
}
