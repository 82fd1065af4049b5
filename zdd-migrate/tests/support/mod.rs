//! Test support: the real binary and migration folders; the throwaway
//! PostgreSQL servers are the shared test crate's ([`zdd_e2e::postgres`]).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

pub use zdd_e2e::{run_command, Run, Scratch};

/// The binary under test.
pub fn binary() -> PathBuf {
    zdd_e2e::binary("zdd-migrate")
}

/// `zdd-migrate ARGS`, with no `DATABASE_URL` from outside.
pub fn command(args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command.args(args).env_remove("DATABASE_URL");
    command
}

/// Runs the binary with no stdin and no `DATABASE_URL` from outside.
pub fn run(args: &[&str]) -> Run {
    run_command(command(args), "")
}

/// Waits for a spawned run.
pub fn finish(child: std::process::Child) -> Run {
    Run::from(child.wait_with_output().unwrap())
}

/// What zdd-migrate's runs say about migrations.
pub trait Migrations {
    /// `(version, status)` of every `migration` record.
    fn statuses(&self) -> Vec<(i64, String)>;
}

impl Migrations for Run {
    fn statuses(&self) -> Vec<(i64, String)> {
        self.of_type("migration")
            .iter()
            .map(|r| {
                (
                    r["version"].as_i64().unwrap(),
                    r["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

/// A migrations folder in a scratch folder.
pub struct Project {
    pub dir: Scratch,
}

impl Project {
    pub fn new(name: &str) -> Self {
        let dir = Scratch::new(&format!("migrate-{name}"));
        std::fs::create_dir_all(dir.join("migrations")).unwrap();
        Project { dir }
    }

    pub fn migrations(&self) -> PathBuf {
        self.dir.join("migrations")
    }

    /// Writes `migrations/<file>`.
    pub fn write(&self, file: &str, text: &str) -> &Self {
        std::fs::write(self.migrations().join(file), text).unwrap();
        self
    }

    /// A SQLite database path in the folder.
    pub fn sqlite(&self) -> String {
        self.dir.join("app.db").display().to_string()
    }

    /// `zdd-migrate ARGS --dir migrations` (subcommand first).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = command(args);
        command.arg("--dir").arg(self.migrations());
        command
    }

    /// Runs `zdd-migrate ARGS --dir migrations` (subcommand first).
    pub fn run(&self, args: &[&str]) -> Run {
        run_command(self.command(args), "")
    }

    /// Starts `zdd-migrate ARGS --dir migrations` without waiting.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// Two `up` runs raced: both succeed, one applied every version in
/// `versions`, the other applied nothing. Returns (worker, waiter).
#[track_caller]
pub fn one_runner_applied(a: Run, b: Run, versions: &[i64]) -> (Run, Run) {
    a.expect_code(0);
    b.expect_code(0);
    let (worker, waiter) = if a.statuses().is_empty() {
        (b, a)
    } else {
        (a, b)
    };
    let applied: Vec<(i64, String)> = versions.iter().map(|v| (*v, "applied".into())).collect();
    assert_eq!(worker.statuses(), applied);
    assert!(waiter.statuses().is_empty(), "{}", waiter.stdout);
    (worker, waiter)
}

// ---------------------------------------------------------------- PostgreSQL

#[allow(unused_imports)] // each test binary uses part of it
pub use zdd_e2e::postgres::{pg, Listen, Pg};
