//! The command line without an engine: usage errors are exit 2, name what
//! is wrong, write nothing on stdout and never contact the engine.
//!
//! `DOCKER_HOST` points at a socket that does not exist, so a tool that
//! reached the engine would fail with exit 1, not 2.

use assert_cmd::Command;
use predicates::prelude::*;
use zdd_e2e::{binary, Scratch};

fn zdd_build() -> Command {
    let mut cmd = Command::new(binary("zdd-build"));
    cmd.env("DOCKER_HOST", "unix:///nonexistent/zdd-build-test.sock");
    cmd
}

fn dockerfile_context(tag: &str) -> Scratch {
    let s = Scratch::new(tag);
    s.write("Dockerfile", "FROM scratch\nCOPY hello.txt /hello.txt\n");
    s.write("hello.txt", "hello\n");
    s
}

#[test]
fn missing_context_is_exit_2_naming_it() {
    let s = Scratch::new("missing");
    let missing = s.join("no-such-dir");
    zdd_build()
        .arg(&missing)
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains(missing.to_str().unwrap()))
        .stderr(predicate::str::contains("does not exist"));
}

#[test]
fn context_that_is_a_file_is_exit_2() {
    let s = Scratch::new("file");
    let file = s.write("plain.txt", "x");
    zdd_build()
        .arg(&file)
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("is not a directory"));
}

#[test]
fn no_dockerfile_is_exit_2() {
    let s = Scratch::new("nodockerfile");
    s.write("hello.txt", "hello\n");
    zdd_build()
        .arg(s.path())
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("no Dockerfile in"))
        .stderr(predicate::str::contains("Dockerfile does not exist"));
}

#[test]
fn missing_or_outside_file_is_exit_2() {
    let s = dockerfile_context("file-flag");
    zdd_build()
        .arg("--file")
        .arg(s.join("Dockerfile.prod"))
        .arg(s.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("Dockerfile.prod: no such file"));

    let outside = Scratch::new("outside");
    let other = outside.write("Dockerfile", "FROM scratch\n");
    zdd_build()
        .arg("-f")
        .arg(&other)
        .arg(s.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is outside the context directory"));
}

#[test]
fn bad_build_arg_is_exit_2_naming_it() {
    let s = dockerfile_context("buildarg");
    zdd_build()
        .args(["--build-arg", "=oops"])
        .arg(s.path())
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("--build-arg \"=oops\""));
}

#[test]
fn bad_repository_is_exit_2_naming_it() {
    let s = dockerfile_context("repo");
    zdd_build()
        .args(["--repository", "Api:latest"])
        .arg(s.path())
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("--repository \"Api:latest\""));
}

#[test]
fn bad_dockerignore_is_exit_2_naming_the_line() {
    let s = dockerfile_context("ignore");
    s.write(".dockerignore", "# fine\n*.log\n[unclosed\n");
    zdd_build()
        .arg(s.path())
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains(".dockerignore: line 3"));
}

#[test]
fn a_good_context_gets_as_far_as_the_engine() {
    // Everything checks out, so the only failure left is the unreachable
    // engine: exit 1, not 2, and still no record.
    let s = dockerfile_context("good");
    zdd_build()
        .args(["--service", "api"])
        .arg(s.path())
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains("zdd-build: context "))
        .stderr(predicate::str::contains("zdd-build: error:"));
}

#[test]
fn help_explains_the_record_and_exit_codes() {
    zdd_build()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Exit codes:"))
        .stdout(predicate::str::contains("2  usage or input error"))
        .stdout(predicate::str::contains("\"type\":\"image\""))
        .stdout(predicate::str::contains(".dockerignore"))
        .stdout(predicate::str::contains("--build-arg"))
        .stdout(predicate::str::contains("already built, skipping"));
}

#[test]
fn unknown_flag_is_exit_2() {
    zdd_build()
        .arg("--no-such-flag")
        .assert()
        .code(2)
        .stdout("");
}
