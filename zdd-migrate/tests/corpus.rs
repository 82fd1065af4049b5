//! The corpus: unsafe PostgreSQL migrations and their safe forms, written
//! for zdd-migrate after the patterns the squawk linter and the
//! strong_migrations gem document (tests/fixtures/corpus/README.md).
//!
//! - `unsafe/RULE--VARIANT.sql`: must be flagged with RULE (the catch
//!   rate counts these);
//! - `safe/NAME.sql` or `safe/NAME/` (several migrations): must be clean
//!   (a finding is a false alarm).
//!
//! Each case runs after `base.sql` (applied: its tables are busy), as the
//! unapplied batch (`--pending-from 2`). The figures are printed (run with
//! `--nocapture`, or `zdd-migrate/corpus.sh`); the test asserts a catch
//! rate of at least 95% and no false alarm. Against the real PostgreSQL,
//! every safe case applies with `up` and `contract`, and every unsafe one
//! is valid PostgreSQL (it runs, or fails for the reason its rule gives).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use support::{pg, Pg};
use zdd_migrate::sql::{self, Dialect};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus")
}

/// The cases of `unsafe/` or `safe/`, by name.
fn cases(kind: &str) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus().join(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    cases
}

fn name(case: &Path) -> String {
    case.file_stem().unwrap().to_string_lossy().into_owned()
}

/// A migrations folder: the base as 0001, then the case.
struct Folder(PathBuf);

impl Folder {
    fn new(case: &Path) -> Folder {
        // Unique per folder: the tests of this file run in parallel.
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        // Named `…-PID-N` like the support's folders, which it sweeps when
        // that process is gone.
        let dir = std::env::temp_dir().join(format!(
            "zdd-migrate-corpus-{}-{}-{}",
            name(case),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(corpus().join("base.sql"), dir.join("0001_base.sql")).unwrap();
        if case.is_dir() {
            for entry in std::fs::read_dir(case).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
            }
        } else {
            std::fs::copy(case, dir.join("0002_case.sql")).unwrap();
        }
        Folder(dir)
    }

    fn run(&self, args: &[&str], database: Option<&str>) -> (i32, String, String) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_zdd-migrate"));
        command
            .args(args)
            .arg("--dir")
            .arg(&self.0)
            .env_remove("DATABASE_URL");
        if let Some(url) = database {
            command.args(["--database", url]);
        }
        let out = command.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The rules of the lint's findings.
    fn lint(&self) -> Vec<Value> {
        let (_, stdout, _) = self.run(&["lint", "-q", "--pending-from", "2"], None);
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn catch_rate_and_false_alarms() {
    let unsafe_cases = cases("unsafe");
    let safe_cases = cases("safe");
    let mut missed = Vec::new();
    for case in &unsafe_cases {
        let expected = name(case).split("--").next().unwrap().to_owned();
        assert!(
            zdd_migrate::rule::Rule::parse(&expected).is_some(),
            "{}: `{expected}` is not a rule",
            case.display()
        );
        let findings = Folder::new(case).lint();
        let hit = findings
            .iter()
            .any(|f| f["rule"] == expected.as_str() && f["version"].as_i64() > Some(1));
        if !hit {
            missed.push(format!("{}: {findings:?}", name(case)));
        }
    }
    let mut false_alarms = Vec::new();
    for case in &safe_cases {
        let findings = Folder::new(case).lint();
        if !findings.is_empty() {
            false_alarms.push(format!("{}: {findings:?}", name(case)));
        }
    }
    let caught = unsafe_cases.len() - missed.len();
    let rate = 100.0 * caught as f64 / unsafe_cases.len() as f64;
    println!(
        "corpus: {} unsafe, {caught} caught ({rate:.1}%); {} safe, {} false alarm(s)",
        unsafe_cases.len(),
        safe_cases.len(),
        false_alarms.len()
    );
    for line in missed.iter().chain(&false_alarms) {
        println!("  {line}");
    }
    assert!(unsafe_cases.len() >= 45 && safe_cases.len() >= 30);
    assert!(rate >= 95.0, "catch rate {rate:.1}%: missed {missed:#?}");
    assert!(false_alarms.is_empty(), "false alarms: {false_alarms:#?}");
}

#[test]
fn safe_forms_apply_on_postgresql() {
    let mut failures = Vec::new();
    for case in cases("safe") {
        let url = pg().database("safe");
        let folder = Folder::new(&case);
        for step in [&["up", "-q"][..], &["contract", "-q", "--force"]] {
            let (code, stdout, stderr) = folder.run(step, Some(&url));
            if code != 0 {
                failures.push(format!("{} ({}): {stdout}{stderr}", name(&case), step[0]));
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Unsafe cases that PostgreSQL refuses, and why (the rule says so).
const FAIL_ON_PURPOSE: &[&str] = &[
    "concurrently-in-transaction--create-index",
    "concurrently-in-transaction--drop-index",
    "parse-error--garbage",
];

#[test]
fn unsafe_forms_are_real_postgresql() {
    let mut failures = Vec::new();
    pg().client("postgres")
        .unwrap()
        .batch_execute("CREATE DATABASE app_old")
        .unwrap();
    for case in cases("unsafe") {
        let url = pg().database("unsafe");
        let folder = Folder::new(&case);
        std::fs::remove_file(folder.0.join("0002_case.sql")).unwrap();
        let (code, stdout, stderr) = folder.run(&["up", "-q"], Some(&url));
        assert_eq!(code, 0, "the base applies: {stdout}{stderr}");
        // Run the case as zdd-migrate would, without its lint.
        let text = std::fs::read_to_string(&case).unwrap();
        let mut client = pg().client(Pg::name_of(&url)).unwrap();
        let result = if text.contains("-- zdd: transaction=off") {
            sql::split(Dialect::Postgres, &text)
                .unwrap()
                .iter()
                .try_for_each(|s| client.batch_execute(s.text))
        } else {
            client
                .transaction()
                .and_then(|mut tx| tx.batch_execute(&text).and_then(|()| tx.commit()))
        };
        let expected_to_fail = FAIL_ON_PURPOSE.contains(&name(&case).as_str());
        match result {
            Ok(()) if expected_to_fail => failures.push(format!("{}: ran", name(&case))),
            Err(e) if !expected_to_fail => failures.push(format!(
                "{}: {}",
                name(&case),
                zdd_migrate::db::postgres::describe(&e)
            )),
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
