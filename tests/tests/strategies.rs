//! Rollout strategies under load through a real HAProxy: the watch window
//! (`zdd-deploy --watch`) keeps the old replicas warm after the switch and
//! reverts to them at the first sign the new release is bad.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use zdd_e2e::{
    assert_no_failures, deploy, newest_run, parse_records, replica_ids, stage, versions_at_end,
    Load, CLIENTS,
};

fn records_of(path: &Path) -> Vec<Value> {
    parse_records(&std::fs::read_to_string(path).unwrap())
}

fn summary(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
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
    assert_eq!(summary(&run)["failed_step"], "watch");
    assert_eq!(summary(&run)["result"], "rolled-back");
    let watched = records_of(&run.join("05-watched.jsonl"));
    let new: Vec<&Value> = watched.iter().filter(|r| r["role"] == "new").collect();
    assert!(new.iter().all(|r| r["watch"] == "failed"), "{new:?}");
    assert!(
        new.iter()
            .any(|r| r["health_reason"].as_str().unwrap_or("").contains("exited")),
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

    // Both new replicas died in the same instant, and the old servers are
    // drained during the watch: the requests HAProxy sent to the dead ones
    // in the moments before the revert got HAProxy's 503, and none of
    // another kind. After the revert, none failed.
    let crash_load = load.stop();
    assert_eq!(versions_at_end(&crash_load), ["v1"]);
    let failures = crash_load["failures"].as_object().unwrap();
    assert!(
        failures
            .iter()
            .all(|(kind, n)| kind == "status_503" || n.as_u64() == Some(0)),
        "{failures:?}"
    );
    eprintln!(
        "figures: {} of {} requests failed (HAProxy 503) in the instant both new replicas crashed, before the revert",
        crash_load["failed"], crash_load["requests"]
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
    assert_eq!(summary(&run)["failed_step"], "watch");
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
    let failures = load["failures"].as_object().unwrap();
    let not_500: Vec<(&String, &Value)> = failures
        .iter()
        .filter(|(kind, n)| kind.as_str() != "status_500" && n.as_u64() != Some(0))
        .collect();
    assert!(not_500.is_empty(), "{failures:?}");
    eprintln!(
        "figures: {} answered 500 by the bad release before the revert, of {} requests; verdict → rollback done {} ms",
        load["failed"],
        load["requests"],
        revert_ms(&run)
    );
}
