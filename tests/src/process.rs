//! The binaries of this build, run with their output captured as a
//! [`Run`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;

/// How long one run of a tool may take before the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// The result of running one tool.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// The stdout records, parsed.
    pub fn records(&self) -> Vec<Value> {
        parse_records(&self.stdout)
    }

    /// The only record; panics unless there is exactly one.
    #[track_caller]
    pub fn record(&self) -> Value {
        let records = self.records();
        assert_eq!(
            records.len(),
            1,
            "wanted one record\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        records.into_iter().next().expect("one record")
    }

    /// Panics with the tool's output unless it exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        self.expect_code(0);
        self
    }

    /// The records of one `type`.
    pub fn of_type(&self, kind: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["type"] == kind)
            .collect()
    }

    /// The container records of one role.
    pub fn role(&self, role: &str) -> Vec<Value> {
        self.of_type("container")
            .into_iter()
            .filter(|r| r["role"] == role)
            .collect()
    }

    /// The record of the container named `name`; panics without one.
    #[track_caller]
    pub fn container(&self, name: &str) -> Value {
        self.records()
            .into_iter()
            .find(|r| r["type"] == "container" && r["name"] == name)
            .unwrap_or_else(|| panic!("no record of container {name} in\n{}", self.stdout))
    }

    /// Panics with the tool's stderr unless it exited with `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code {} (wanted {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Parses JSON Lines.
pub fn parse_records(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l}: {e}")))
        .collect()
}

/// Runs a zdd tool with `stdin` as its input.
pub fn run(tool: &str, args: &[&str], stdin: &str) -> Run {
    let mut command = Command::new(binary(tool));
    command.args(args);
    run_command(command, stdin)
}

/// Runs `command` with `stdin` as its input (a pipe, closed once written:
/// an empty one reads as end of input at once), for at most three
/// minutes.
pub fn run_command(command: Command, stdin: &str) -> Run {
    let program = command.get_program().to_string_lossy().into_owned();
    let out = assert_cmd::Command::from_std(command)
        .write_stdin(stdin)
        .timeout(RUN_TIMEOUT)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    Run::from(out)
}

/// The path of a binary of this workspace (a zdd tool, an example app),
/// built from the working tree (once per process) if needed: what every
/// test runs is this build's. Only that binary's package is compiled, so a
/// tool's tests do not wait for, or fail with, the rest of the workspace.
pub fn binary(tool: &str) -> PathBuf {
    build(Some(tool));
    profile_dir().join(tool)
}

/// The folder of all the binaries of this workspace, all built (once per
/// process) if needed: the `ZDD_BIN` of a whole deploy.
pub fn bin_dir() -> PathBuf {
    build(None);
    profile_dir().to_path_buf()
}

/// `target/<profile>`, where the tests' own executables are in `deps/`.
fn profile_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test's own path");
        exe.parent()
            .and_then(Path::parent)
            .expect("tests run from target/<profile>/deps")
            .to_path_buf()
    })
}

/// `cargo build` of one binary (`Some`) or all of them (`None`), unless
/// this process built it already. Builds one at a time: concurrent tests
/// wait for the first.
fn build(tool: Option<&str>) {
    const ALL: &str = "--bins";
    static BUILT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let key = tool.unwrap_or(ALL);
    if built.contains(key) || built.contains(ALL) {
        return;
    }
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // The whole workspace's features either way, so building one binary
    // never undoes the build of all of them.
    cargo.args(["build", "--quiet", "--workspace"]);
    match tool {
        Some(tool) => cargo.args(["--bin", tool]),
        None => cargo.arg(ALL),
    };
    if profile_dir().ends_with("release") {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("run cargo build");
    assert!(status.success(), "{cargo:?} failed");
    built.insert(key.to_owned());
}
