//! The docker CLI, as the tests drive the engine: through a client that is
//! not the one under test, seeing what an operator would see.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// A container's IP, as zdd-core picks it: on the network first by name.
pub fn container_ip(inspect: &Value) -> String {
    let networks = inspect["NetworkSettings"]["Networks"]
        .as_object()
        .expect("the container has networks");
    let mut names: Vec<&String> = networks.keys().collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|name| networks[name]["IPAddress"].as_str())
        .find(|ip| !ip.is_empty())
        .expect("the container has an IP")
        .to_owned()
}

/// Runs the docker CLI.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the docker CLI")
}

/// Runs the docker CLI and returns its non-empty output lines.
pub fn docker_lines(args: &[&str]) -> Vec<String> {
    let out = docker(args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Runs the docker CLI, panics with its stderr unless it succeeded, and
/// returns its output, trimmed.
#[track_caller]
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
