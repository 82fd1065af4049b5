//! The binaries of this build, run with their output captured as a
//! [`Run`].

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
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

/// The path of a binary of this workspace (a zdd tool, an example), all
/// of them built (once per process) if needed, so the binaries of this
/// build are what every test runs: `binary("zdd-build").parent()` is a
/// folder with all of them.
pub fn binary(tool: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // target/<profile>/deps/<test> → target/<profile>
        let exe = std::env::current_exe().expect("the test's own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("tests run from target/<profile>/deps")
            .to_path_buf();
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo.args(["build", "--quiet", "--workspace", "--bins"]);
        if profile_dir.ends_with("release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build");
        assert!(status.success(), "cargo build --workspace --bins failed");
        profile_dir
    });
    dir.join(tool)
}
