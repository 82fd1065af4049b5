//! Against the real engine: a build, a skipped rebuild, a failed build.
//!
//! Only `FROM scratch` images (no registry here). Every image the test
//! builds carries `zdd.e2e=1` and its sandbox's `zdd.test=<id>`, and is
//! removed with the sandbox, also when an assertion fails.

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;
use zdd_e2e::{binary, docker, docker_ok, Sandbox, Scratch};

fn zdd_build() -> Command {
    Command::new(binary("zdd-build"))
}

/// Runs `cmd`, expects exit 0 and exactly one image record; returns it.
fn one_record(cmd: &mut Command) -> serde_json::Map<String, Value> {
    let output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr:\n{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout:\n{stdout}");
    assert!(stdout.ends_with('\n'));
    match serde_json::from_str(lines[0]).unwrap() {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn str_field<'a>(record: &'a serde_json::Map<String, Value>, key: &str) -> &'a str {
    record[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {record:?}"))
}

#[test]
fn builds_skips_and_fails_like_the_engine_says() {
    let sandbox = Sandbox::new("build");
    let repo = sandbox.id.clone();

    let ctx = Scratch::new("engine");
    ctx.write(
        "Dockerfile",
        format!(
            "FROM scratch\nCOPY hello.txt /hello.txt\n{}",
            sandbox.label_instruction()
        ),
    );
    ctx.write("hello.txt", "hello from zdd-build\n");
    ctx.write(".dockerignore", "*.log\n");
    ctx.write("noise.log", "ignored");

    // First run builds.
    let first = one_record(
        zdd_build()
            .args(["--service", "build-test", "--repository", &repo])
            .arg(ctx.path()),
    );
    let image = str_field(&first, "image").to_owned();
    let release = str_field(&first, "release");
    let hash = str_field(&first, "context_hash");
    assert_eq!(first["type"], "image");
    assert_eq!(first["service"], "build-test");
    assert_eq!(first["built"], true);
    assert_eq!(release.len(), 16);
    assert!(
        hash.starts_with("sha256:") && hash.len() == 7 + 64,
        "{hash}"
    );
    assert_eq!(&hash[7..7 + 16], release);
    assert_eq!(image, format!("{repo}:{release}"));
    let image_id = str_field(&first, "image_id");
    assert!(image_id.starts_with("sha256:"), "{image_id}");

    // The image carries the labels, and the file.
    let labels = docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        &image,
    ]);
    let labels: Value = serde_json::from_str(&labels).unwrap();
    assert_eq!(labels["zdd.context-hash"], hash);
    assert!(
        labels.get("zdd.service").is_none(),
        "an image never names a service: a container run from it by hand is no replica"
    );
    assert_eq!(labels["zdd.test"], sandbox.id.as_str());

    // Second run, an ignored file changed: same release, nothing built.
    ctx.write("noise.log", "changed, still ignored");
    let mut second_cmd = zdd_build();
    second_cmd
        .args(["--service", "build-test", "--repository", &repo])
        .arg(ctx.path());
    let output = second_cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        stderr.contains(&format!("zdd-build: {image} already built, skipping")),
        "{stderr}"
    );
    let second = one_record(&mut second_cmd);
    assert_eq!(second["built"], false);
    assert_eq!(second["image"], first["image"]);
    assert_eq!(second["image_id"], first["image_id"]);
    assert_eq!(second["context_hash"], first["context_hash"]);

    // A different build arg is a different release.
    let third = one_record(
        zdd_build()
            .args(["-q", "--service", "build-test", "--repository", &repo])
            .args(["--build-arg", "UNUSED=1"])
            .arg(ctx.path()),
    );
    assert_ne!(third["release"], first["release"]);
    assert_eq!(third["built"], true);

    // A Dockerfile the engine cannot build: exit 1, its message, no record.
    ctx.write("Dockerfile.bad", "FROM scratch\nCOPY missing /x\n");
    let bad = zdd_build()
        .args(["--repository", &repo, "-f"])
        .arg(ctx.join("Dockerfile.bad"))
        .arg(ctx.path())
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains("zdd-build: error: building"))
        .stderr(predicate::str::contains("missing"));
    // Whatever tag it would have had (it has no labels), make sure it is
    // gone.
    let bad_stderr = String::from_utf8_lossy(&bad.get_output().stderr).into_owned();
    if let Some(tag) = bad_stderr
        .split_whitespace()
        .find(|w| w.starts_with(&format!("{repo}:")))
    {
        docker(&["rmi", "-f", tag.trim_end_matches(':')]);
    }
}
