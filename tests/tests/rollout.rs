//! The backend rollout, end to end: zdd-build | zdd-scale | zdd-health |
//! zdd-retire on the real Docker engine with the example app.

use std::time::Instant;

use zdd_e2e::{address, docker, http_get, run, Run, Sandbox};

/// Builds the example app at `version` for the sandbox's service.
fn build(sandbox: &Sandbox, version: &str, env: &[(&str, &str)]) -> Run {
    let context = sandbox.app_context(version, env);
    let run = run(
        "zdd-build",
        &["--service", &sandbox.id, context.to_str().unwrap()],
        "",
    );
    run.expect_code(0);
    run
}

/// scale → health → retire from an image record; returns each step's run.
fn roll_out(image: &str, scale_args: &[&str]) -> (Run, Run, Run) {
    let scaled = run("zdd-scale", scale_args, image);
    scaled.expect_code(0);
    let checked = run("zdd-health", &[], &scaled.stdout);
    let retired = run("zdd-retire", &["--grace", "5s"], &checked.stdout);
    (scaled, checked, retired)
}

fn exists(id: &str) -> bool {
    docker(&["inspect", id]).status.success()
}

#[test]
fn v2_replaces_exactly_the_v1_replicas_and_a_second_run_converges() {
    let sandbox = Sandbox::new("rollout");
    let v1 = build(&sandbox, "v1", &[]);
    let (_, checked, retired) = roll_out(&v1.stdout, &["--replicas", "2"]);
    checked.expect_code(0);
    retired.expect_code(0);
    assert_eq!(sandbox.serving_versions(), ["v1", "v1"]);
    let v1_ids: Vec<String> = checked
        .role("new")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();

    // Decoys: a one-off container of the service, and a container of
    // another service whose name and labels look alike.
    let image = v1.records()[0]["image"].as_str().unwrap().to_owned();
    let oneoff_name = format!("{}-1-oneoff", sandbox.id);
    let oneoff_label = format!("zdd.service={}", sandbox.id);
    let decoy_name = format!("{}-decoy", sandbox.id);
    let decoy_label = format!("zdd.service={}-worker", sandbox.id);
    for (name, labels) in [
        (&oneoff_name, vec![oneoff_label.as_str(), "zdd.oneoff=true"]),
        (&decoy_name, vec![decoy_label.as_str()]),
    ] {
        let mut args = vec!["run", "-d", "--name", name.as_str()];
        for label in labels {
            args.extend(["--label", label]);
        }
        args.push(&image);
        assert!(docker(&args).status.success());
    }

    let v2 = build(&sandbox, "v2", &[]);
    assert_eq!(v2.records()[0]["built"], true);
    let (scaled, checked, retired) = roll_out(&v2.stdout, &[]);
    checked.expect_code(0);
    retired.expect_code(0);
    assert_eq!(
        scaled.role("new").len(),
        2,
        "as many new replicas as were running"
    );
    assert_eq!(
        scaled.role("old").len(),
        2,
        "the one-off and the decoy are not old replicas"
    );
    let retired_old = retired.role("old");
    assert!(
        retired_old.iter().all(|r| r["retired"] == true),
        "{retired_old:?}"
    );

    assert_eq!(sandbox.serving_versions(), ["v2", "v2"]);
    for id in &v1_ids {
        assert!(!exists(id), "v1 replica {id} is gone");
    }
    for decoy in [&oneoff_name, &decoy_name] {
        let state = sandbox.inspect(decoy);
        assert_eq!(state["State"]["Running"], true, "{decoy} survives");
    }
    // The new replicas carry the service's and release's labels.
    for record in checked.role("new") {
        let labels = &sandbox.inspect(record["id"].as_str().unwrap())["Config"]["Labels"];
        assert_eq!(labels["zdd.service"], sandbox.id.as_str());
        assert_eq!(labels["zdd.release"], v2.records()[0]["release"]);
    }

    // The same rollout again: nothing to build, nothing to start, nothing
    // to retire; the v2 replicas stay.
    let again = build(&sandbox, "v2", &[]);
    assert_eq!(again.records()[0]["built"], false);
    assert_eq!(again.records()[0]["image_id"], v2.records()[0]["image_id"]);
    let (scaled_again, checked_again, retired_again) = roll_out(&again.stdout, &[]);
    checked_again.expect_code(0);
    retired_again.expect_code(0);
    let ids = |run: &Run| {
        let mut ids: Vec<String> = run
            .role("new")
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(&scaled_again),
        ids(&checked),
        "the running v2 replicas are reused"
    );
    // A second retire on the first retire's input changes nothing and succeeds.
    run("zdd-retire", &[], &checked.stdout).expect_code(0);
    assert_eq!(sandbox.serving_versions(), ["v2", "v2"]);
}

#[test]
fn a_release_that_never_becomes_healthy_is_refused_and_rolled_back() {
    let sandbox = Sandbox::new("unhealthy");
    let v1 = build(&sandbox, "v1", &[]);
    let (_, checked, _) = roll_out(&v1.stdout, &["--replicas", "2"]);
    checked.expect_code(0);

    let v3 = build(&sandbox, "v3", &[("NEVER_HEALTHY", "1")]);
    let scaled = run("zdd-scale", &[], &v3.stdout);
    scaled.expect_code(0);
    let started = Instant::now();
    let checked = run("zdd-health", &[], &scaled.stdout);
    let waited = started.elapsed();
    checked.expect_code(1);
    // The healthcheck runs every 500ms with 3 retries: its deadline is
    // 0.5 × 4 + 1 = 3 s; the tool must give up by then (with slack for
    // a loaded machine), not hang.
    assert!(waited.as_secs_f64() < 10.0, "zdd-health took {waited:?}");
    for record in checked.role("new") {
        assert_eq!(record["health"], "unhealthy", "{record}");
    }

    let refused = run("zdd-retire", &[], &checked.stdout);
    refused.expect_code(1);
    assert!(refused.stderr.contains("refusing"), "{}", refused.stderr);
    assert_eq!(
        refused.stdout, checked.stdout,
        "records pass through unchanged"
    );
    for record in checked.role("old") {
        assert!(exists(record["id"].as_str().unwrap()));
        let (status, body) = http_get(&address(&record), "/").expect("v1 still serves");
        assert_eq!((status, body.trim()), (200, "v1"));
    }

    let rolled_back = run("zdd-retire", &["--role", "new"], &checked.stdout);
    rolled_back.expect_code(0);
    for record in checked.role("new") {
        assert!(
            !exists(record["id"].as_str().unwrap()),
            "v3 replica removed"
        );
    }
    assert_eq!(sandbox.serving_versions(), ["v1", "v1"]);
}

#[test]
fn a_crashing_release_fails_at_the_crash_with_its_log() {
    let sandbox = Sandbox::new("crash");
    let v4 = build(
        &sandbox,
        "v4",
        &[("STARTUP_DELAY_MS", "30000"), ("CRASH_AFTER_MS", "1000")],
    );
    let scaled = run("zdd-scale", &["--replicas", "1"], &v4.stdout);
    scaled.expect_code(0);
    let started = Instant::now();
    let checked = run("zdd-health", &["--timeout", "60s"], &scaled.stdout);
    let waited = started.elapsed();
    checked.expect_code(1);
    let record = &checked.role("new")[0];
    assert_eq!(record["health"], "exited", "{record}");
    assert!(
        record["health_reason"].as_str().unwrap().contains("code 3"),
        "{record}"
    );
    assert!(
        checked.stderr.contains("crashing as asked"),
        "the crash log is shown:\n{}",
        checked.stderr
    );
    // The crash is 1 s after start; the deadline is 60 s away (a bound
    // far from both, so a busy machine does not fail it).
    assert!(
        waited.as_secs_f64() < 20.0,
        "zdd-health reported the crash after {waited:?}"
    );
    run("zdd-retire", &["--role", "new"], &checked.stdout).expect_code(0);
}
