//! Releases: deploying one zdd already holds (`--release`, `--rollback`)
//! under load through HAProxy, the history of every deploy, retention, and
//! the stderr each step leaves in its run folder.

use std::time::{Duration, Instant};

use serde_json::Value;
use zdd_e2e::{
    assert_no_failures, deploy, docker, docker_lines, newest_run, redeploy_command, replica_ids,
    run, run_summary, signal_process, stage, summary_steps, versions_at_end, wait_for_run_step,
    Haproxy, Load, Run, Sandbox, CLIENTS,
};

fn redeploy(sandbox: &Sandbox, haproxy: &Haproxy, extra: &[&str]) -> Run {
    let out = redeploy_command(sandbox, haproxy, extra)
        .output()
        .expect("run zdd-deploy");
    Run::from(out)
}

/// `zdd-releases`/`zdd-history ARGS SERVICE` with the sandbox's runs.
fn tool(sandbox: &Sandbox, name: &str, args: &[&str]) -> Run {
    let runs = sandbox.dir.join("runs");
    let mut all: Vec<&str> = args.to_vec();
    all.extend([sandbox.id.as_str(), "--runs-dir", runs.to_str().unwrap()]);
    run(name, &all, "")
}

/// The release of the sandbox's service each version was built as.
fn release_of(deployed: &Run) -> String {
    deployed.role("new")[0]["release"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The images the engine holds for the service (zdd.built-for), by tag.
fn image_tags(sandbox: &Sandbox) -> Vec<String> {
    let filter = format!("label=zdd.built-for={}", sandbox.id);
    let mut tags = docker_lines(&["images", "--filter", &filter, "--format", "{{.Tag}}"]);
    tags.sort();
    tags
}

#[test]
fn rollback_and_an_earlier_release_deploy_without_a_build_under_load() {
    let (sandbox, haproxy) = stage("releases");
    let v1_run = newest_run(&sandbox).unwrap();
    let v1 = run_summary(&v1_run)["to_release"]
        .as_str()
        .unwrap()
        .to_owned();
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);

    let started = Instant::now();
    let v2_deploy = deploy(&sandbox, &haproxy, &sandbox.app_context("v2", &[]), &[]);
    let build_deploy_time = started.elapsed();
    v2_deploy.expect_code(0);
    let v2 = release_of(&v2_deploy);
    let v3_deploy = deploy(&sandbox, &haproxy, &sandbox.app_context("v3", &[]), &[]);
    v3_deploy.expect_code(0);
    let v3 = release_of(&v3_deploy);

    let listed = tool(&sandbox, "zdd-releases", &[]).ok();
    let flags: Vec<(String, bool, bool)> = listed
        .of_type("release")
        .iter()
        .map(|r| {
            (
                r["release"].as_str().unwrap().to_owned(),
                r["serving"] == true,
                r["previous"] == true,
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            (v1.clone(), false, false),
            (v2.clone(), false, true),
            (v3.clone(), true, false)
        ],
        "oldest first; v3 serves, v2 served before it"
    );

    // SIGTERM in the middle of a rollback: it rolls back itself; v3 serves.
    let earlier = newest_run(&sandbox);
    let mut interrupted = redeploy_command(&sandbox, &haproxy, &["--rollback"])
        .spawn()
        .unwrap();
    wait_for_run_step(
        &sandbox,
        earlier.as_ref(),
        "02-scaled.jsonl",
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_millis(50));
    signal_process(interrupted.id(), libc::SIGTERM);
    assert_eq!(interrupted.wait().unwrap().code(), Some(143));
    assert_eq!(sandbox.serving_versions(), ["v3", "v3"]);

    let started = Instant::now();
    let rolled_back = redeploy(&sandbox, &haproxy, &["--rollback"]);
    let rollback_time = started.elapsed();
    rolled_back.expect_code(0);
    assert_eq!(sandbox.serving_versions(), ["v2", "v2"]);
    let rollback_summary = run_summary(&newest_run(&sandbox).unwrap());
    assert_eq!(
        summary_steps(&rollback_summary)[0],
        "release",
        "no build step"
    );
    assert!(!summary_steps(&rollback_summary).contains(&"build".to_owned()));
    assert_eq!(rollback_summary["from_release"], v3.as_str());
    assert_eq!(rollback_summary["to_release"], v2.as_str());

    // Quiet, with retention: the tools' -q and zdd-releases prune in the run.
    let v1_again = redeploy(
        &sandbox,
        &haproxy,
        &["-q", "--keep", "5", "--release", &v1[..8]],
    );
    v1_again.expect_code(0);
    std::thread::sleep(Duration::from_millis(300));
    let load = load.stop();
    assert_no_failures(&load);
    assert_eq!(versions_at_end(&load), ["v1"]);
    assert_eq!(sandbox.serving_versions(), ["v1", "v1"]);
    eprintln!(
        "figures: a deploy with a build {:.1}s, --rollback {:.1}s, {} requests, {} failed",
        build_deploy_time.as_secs_f64(),
        rollback_time.as_secs_f64(),
        load["requests"],
        load["failed"]
    );

    let history = tool(&sandbox, "zdd-history", &[]).ok();
    let deploys: Vec<(String, Value, Value, Value)> = history
        .of_type("deploy")
        .iter()
        .map(|d| {
            (
                d["result"].as_str().unwrap().to_owned(),
                d["from_release"].clone(),
                d["to_release"].clone(),
                d["source"].clone(),
            )
        })
        .collect();
    let r = |s: &str| Value::from(s);
    assert_eq!(
        deploys,
        [
            ("deployed".into(), Value::Null, r(&v1), r("build")),
            ("deployed".into(), r(&v1), r(&v2), r("build")),
            ("deployed".into(), r(&v2), r(&v3), r("build")),
            // Cut short while scaling: zdd-scale never wrote which
            // release served, so the history does not guess.
            ("interrupted".into(), Value::Null, r(&v2), r("release")),
            ("deployed".into(), r(&v3), r(&v2), r("release")),
            ("deployed".into(), r(&v2), r(&v1), r("release")),
        ]
    );
    let table = tool(&sandbox, "zdd-history", &["--table"]).ok();
    assert_eq!(table.stdout.lines().count(), 7, "{}", table.stdout);

    // Keep 2: the serving v1 and the previous v2 stay; v3 goes.
    let pruned = tool(&sandbox, "zdd-releases", &["prune", "--keep", "2"]).ok();
    let gone: Vec<Value> = pruned
        .of_type("release_prune")
        .into_iter()
        .filter(|p| p["kind"] == "image")
        .map(|p| p["release"].clone())
        .collect();
    assert_eq!(gone, [r(&v3)]);
    let mut kept = vec![v1.clone(), v2.clone()];
    kept.sort();
    assert_eq!(image_tags(&sandbox), kept);
    for id in replica_ids(&sandbox) {
        let image = docker_lines(&["inspect", "--format", "{{.Image}}", &id]);
        assert!(
            docker(&["image", "inspect", &image[0]]).status.success(),
            "replica {id} lost its image"
        );
    }
    // The pruned release is still listed, as gone, and cannot be deployed.
    let listed = tool(&sandbox, "zdd-releases", &[]).ok();
    let v3_listed = listed
        .of_type("release")
        .into_iter()
        .find(|r| r["release"] == v3.as_str())
        .unwrap();
    assert_eq!(v3_listed["present"], false);
    let gone = redeploy(&sandbox, &haproxy, &["--release", &v3]);
    gone.expect_code(2);
    assert!(gone.stderr.contains("is gone"), "{}", gone.stderr);
    assert_eq!(sandbox.serving_versions(), ["v1", "v1"]);
}

#[test]
fn releases_zdd_does_not_hold_are_input_errors_and_a_failed_step_keeps_its_stderr() {
    let (sandbox, haproxy) = stage("norelease");
    let before = replica_ids(&sandbox);
    let no_previous = redeploy(&sandbox, &haproxy, &["--rollback"]);
    no_previous.expect_code(2);
    assert!(
        no_previous.stderr.contains("no earlier release"),
        "{}",
        no_previous.stderr
    );
    let unknown = redeploy(&sandbox, &haproxy, &["--release", "feedfacefeedface"]);
    unknown.expect_code(2);
    assert!(
        unknown.stderr.contains("no release `feedfacefeedface`"),
        "{}",
        unknown.stderr
    );
    let both = redeploy(&sandbox, &haproxy, &["--rollback", "--release", "x"]);
    both.expect_code(2);
    assert_eq!(replica_ids(&sandbox), before, "nothing changed");

    // A release that never turns healthy: the health step's stderr stays
    // in the run folder, and it reached the terminal too.
    let broken = sandbox.app_context("v2", &[("NEVER_HEALTHY", "1")]);
    let failed = deploy(&sandbox, &haproxy, &broken, &[]);
    failed.expect_code(1);
    let run_dir = newest_run(&sandbox).unwrap();
    let health_stderr = std::fs::read_to_string(run_dir.join("03-health.stderr")).unwrap();
    assert!(
        health_stderr.contains("unhealthy"),
        "03-health.stderr: {health_stderr}"
    );
    let first = health_stderr.lines().next().unwrap();
    assert!(failed.stderr.contains(first), "{}", failed.stderr);
    assert!(run_dir.join("01-image.stderr").exists());
    assert_eq!(replica_ids(&sandbox), before, "rolled back");
    // The records of the history say so.
    let history = tool(&sandbox, "zdd-history", &["--last", "1"]).ok();
    let last = &history.of_type("deploy")[0];
    assert_eq!(
        (&last["result"], &last["failed_step"]),
        (&Value::from("rolled-back"), &Value::from("health"))
    );
}
