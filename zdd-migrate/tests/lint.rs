//! `zdd-migrate lint` on fixture folders: one file per rule, and a safe
//! expand/contract sequence.

mod support;

use std::path::{Path, PathBuf};

use support::{run, Project};

fn fixtures(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn each_rule_is_caught_with_its_line() {
    let dir = fixtures("lint");
    let lint = run(&["lint", "--dir", dir.to_str().unwrap()]);
    lint.expect_code(1);
    let mut found: Vec<(i64, String, i64, bool)> = lint
        .of_type("lint")
        .iter()
        .map(|r| {
            assert!(!r["suggestion"].as_str().unwrap().is_empty(), "{r}");
            assert!(!r["message"].as_str().unwrap().is_empty(), "{r}");
            assert!(r["file"].as_str().unwrap().ends_with(".sql"), "{r}");
            (
                r["version"].as_i64().unwrap(),
                r["rule"].as_str().unwrap().to_owned(),
                r["line"].as_i64().unwrap(),
                r["allowed"].as_bool().unwrap(),
            )
        })
        .collect();
    found.sort();
    let expected: Vec<(i64, String, i64, bool)> = [
        (2, "drop-table", 2, false),
        (3, "drop-column", 2, false),
        (4, "rename-table", 2, false),
        (5, "rename-column", 2, false),
        (6, "add-column-not-null", 2, false),
        (7, "set-not-null", 2, false),
        (8, "change-column-type", 6, false),
        (9, "constraint-not-valid", 2, false),
        (9, "constraint-not-valid", 4, false),
        (10, "index-not-concurrent", 2, false),
        (11, "concurrently-in-transaction", 2, false),
        (11, "concurrently-in-transaction", 3, false),
        (12, "parse-error", 2, false),
        (13, "transaction-control", 2, false),
        (13, "transaction-control", 4, false),
        (14, "drop-table", 3, true),
        (15, "unused-allow", 2, false),
        (16, "header", 1, false),
    ]
    .into_iter()
    .map(|(v, r, l, a)| (v, r.to_owned(), l, a))
    .collect();
    assert_eq!(found, expected, "{}", lint.stdout);

    let records = lint.of_type("lint");
    let allowed = records.iter().find(|r| r["allowed"] == true).unwrap();
    assert_eq!(
        allowed["reason"],
        "old_log has been unused since release 41"
    );
    let unused = records
        .iter()
        .find(|r| r["rule"] == "unused-allow")
        .unwrap();
    assert_eq!(unused["severity"], "warning");
    assert!(
        lint.stderr
            .contains("16 file(s): 16 error(s), 1 warning(s), 1 allowed"),
        "{}",
        lint.stderr
    );
}

#[test]
fn a_safe_expand_contract_sequence_passes() {
    let dir = fixtures("safe");
    let lint = run(&["lint", "--dir", dir.to_str().unwrap()]);
    lint.expect_code(0);
    assert_eq!(lint.stdout, "", "no findings");
}

#[test]
fn an_allow_line_silences_one_rule_only() {
    let project = Project::new("lint-allow");
    project
        .write(
            "0001_t.sql",
            "-- zdd: phase=expand\nCREATE TABLE t (id bigint, a text, b text);\n",
        )
        .write(
            "0002_x.sql",
            "-- zdd: phase=expand\n-- zdd: allow=drop-column reason=\"a was never read\"\nALTER TABLE t DROP COLUMN a;\nALTER TABLE t RENAME COLUMN b TO c;\n",
        );
    let lint = project.run(&["lint"]);
    lint.expect_code(1);
    let rules: Vec<(String, bool)> = lint
        .of_type("lint")
        .iter()
        .map(|r| (r["rule"].as_str().unwrap().to_owned(), r["allowed"] == true))
        .collect();
    assert_eq!(
        rules,
        [
            ("drop-column".to_owned(), true),
            ("rename-column".to_owned(), false)
        ]
    );
}

#[test]
fn the_sqlite_dialect_parses_sqlite() {
    let project = Project::new("lint-sqlite");
    project.write(
        "0001_t.sql",
        "-- zdd: phase=expand\nCREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT) STRICT;\nCREATE INDEX t_body ON t (body);\n",
    );
    project.run(&["lint", "--dialect", "sqlite"]).expect_code(0);
    // The dialect follows the database URL.
    let mut command = project.command(&["lint"]);
    command.env("DATABASE_URL", "sqlite:app.db");
    support::run_command(command, "").expect_code(0);
}
