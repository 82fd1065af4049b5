//! `zdd-migrate` against SQLite, through the real binary.

mod support;

use std::time::Duration;

use support::{finish, one_runner_applied, Migrations, Project};

/// A migration slow enough (about a second here) that a second runner
/// started at the same time must wait for the first.
const SLOW_INSERT: &str = "-- zdd: phase=data
INSERT INTO events (n)
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400000)
SELECT x FROM c;
";

fn count(db: &str, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn two_runs_at_once_apply_each_migration_once() {
    let project = Project::new("sqlite-race");
    project
        .write(
            "0001_events.sql",
            "-- zdd: phase=expand\nCREATE TABLE events (n INTEGER NOT NULL);\n",
        )
        .write("0002_fill.sql", SLOW_INSERT)
        .write(
            "0003_kind.sql",
            "-- zdd: phase=expand\nALTER TABLE events ADD COLUMN kind TEXT;\n",
        );
    let db = project.sqlite();
    let a = project.spawn(&["up", "--database", &db]);
    let b = project.spawn(&["up", "--database", &db]);
    let (_, waiter) = one_runner_applied(finish(a), finish(b), &[1, 2, 3]);
    assert!(waiter.stderr.contains("waiting"), "{}", waiter.stderr);
    assert!(waiter.stderr.contains("nothing to do"), "{}", waiter.stderr);
    // The data migration ran once: its rows are there once.
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 400_000);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM zdd_migrations WHERE status = 'applied'"
        ),
        3
    );
}

#[test]
fn a_failing_migration_leaves_nothing_and_stops_the_run() {
    let project = Project::new("sqlite-fail");
    project
        .write(
            "0001_users.sql",
            "-- zdd: phase=expand\nCREATE TABLE users (id INTEGER PRIMARY KEY);\n",
        )
        .write(
            "0002_broken.sql",
            "-- zdd: phase=expand\nCREATE TABLE audit (id INTEGER);\nINSERT INTO audit VALUES (1);\nINSERT INTO missing_table VALUES (1);\n",
        )
        .write(
            "0003_later.sql",
            "-- zdd: phase=expand\nCREATE TABLE later (id INTEGER);\n",
        );
    let db = project.sqlite();
    let run = project.run(&["up", "--database", &db]);
    run.expect_code(1);
    assert_eq!(
        run.statuses(),
        [(1, "applied".into()), (2, "failed".into())]
    );
    assert!(
        run.stderr.contains("no such table: missing_table"),
        "{}",
        run.stderr
    );
    let failed = &run.of_type("migration")[1];
    assert!(failed["error"]
        .as_str()
        .unwrap()
        .contains("0002_broken.sql"));

    // Rolled back: no `audit` table; recorded as failed; 0003 never ran.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM sqlite_master WHERE name IN ('audit', 'later')"
        ),
        0
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (status, error): (String, String) = conn
        .query_row(
            "SELECT status, error FROM zdd_migrations WHERE version = 2",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(status, "failed");
    assert!(error.contains("missing_table"), "{error}");

    // `status` says so and exits 1.
    let status = project.run(&["status", "--database", &db]);
    status.expect_code(1);
    assert!(status.statuses().contains(&(2, "failed".into())));

    // Fixed, it runs again (it failed inside a transaction: nothing stayed).
    project.write(
        "0002_broken.sql",
        "-- zdd: phase=expand\nCREATE TABLE audit (id INTEGER);\nINSERT INTO audit VALUES (1);\n",
    );
    let run = project.run(&["up", "--database", &db]);
    run.expect_code(0);
    assert_eq!(
        run.statuses(),
        [(2, "applied".into()), (3, "applied".into())]
    );
}

#[test]
fn checksum_drift_stops_up_until_repair() {
    let project = Project::new("sqlite-drift");
    project.write(
        "0001_users.sql",
        "-- zdd: phase=expand\nCREATE TABLE users (id INTEGER PRIMARY KEY);\n",
    );
    let db = project.sqlite();
    project.run(&["up", "--database", &db]).expect_code(0);

    // Line endings alone are not a change.
    project.write(
        "0001_users.sql",
        "-- zdd: phase=expand\r\nCREATE TABLE users (id INTEGER PRIMARY KEY);\r\n",
    );
    project.run(&["status", "--database", &db]).expect_code(0);

    project
        .write(
            "0001_users.sql",
            "-- zdd: phase=expand\nCREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);\n",
        )
        .write(
            "0002_more.sql",
            "-- zdd: phase=expand\nCREATE TABLE more (id INTEGER);\n",
        );
    let run = project.run(&["up", "--database", &db]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("0001_users: the file changed after it was applied"),
        "{}",
        run.stderr
    );
    assert_eq!(run.statuses(), [(1, "drift".into())]);
    let drift = &run.of_type("migration")[0];
    assert_ne!(drift["checksum"], drift["applied_checksum"]);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM sqlite_master WHERE name = 'more'"
        ),
        0,
        "nothing ran"
    );

    let repair = project.run(&["repair", "--database", &db]);
    repair.expect_code(0);
    assert_eq!(repair.of_type("migration")[0]["action"], "checksum-updated");
    project.run(&["up", "--database", &db]).expect_code(0);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM sqlite_master WHERE name = 'more'"
        ),
        1
    );
}

#[test]
fn an_interrupted_run_outside_a_transaction_is_drift_until_repair() {
    let project = Project::new("sqlite-running");
    project
        .write(
            "0001_users.sql",
            "-- zdd: phase=expand\nCREATE TABLE users (id INTEGER PRIMARY KEY);\n",
        )
        .write(
            "0002_vacuum.sql",
            "-- zdd: phase=data\n-- zdd: transaction=off\nVACUUM;\n",
        );
    let db = project.sqlite();
    // VACUUM cannot run inside a transaction: it works only because the
    // migration runs outside one.
    let run = project.run(&["up", "--database", &db]);
    run.expect_code(0);
    assert_eq!(
        run.of_type("migration")[1]["transaction"],
        serde_json::json!(false)
    );

    // A runner killed in the middle of it leaves its `running` row.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE zdd_migrations SET status = 'running', finished_at = NULL WHERE version = 2",
        [],
    )
    .unwrap();
    drop(conn);
    let status = project.run(&["status", "--database", &db]);
    status.expect_code(1);
    let record = &status.of_type("migration")[1];
    assert_eq!(record["status"], "drift");
    assert!(record["drift"].as_str().unwrap().contains("never finished"));
    let summary = &status.of_type("migration_status")[0];
    assert_eq!(summary["drift"], 1);
    assert_eq!(summary["locked"], false);

    project.write(
        "0003_next.sql",
        "-- zdd: phase=expand\nCREATE TABLE next (id INTEGER);\n",
    );
    let up = project.run(&["up", "--database", &db]);
    up.expect_code(1);
    assert!(up.stderr.contains("repair"), "{}", up.stderr);

    let repair = project.run(&["repair", "--database", &db]);
    repair.expect_code(0);
    assert_eq!(repair.of_type("migration")[0]["action"], "removed");
    let up = project.run(&["up", "--database", &db]);
    up.expect_code(0);
    assert_eq!(
        up.statuses(),
        [(2, "applied".into()), (3, "applied".into())]
    );
}

#[test]
fn lint_errors_stop_up_before_anything_runs() {
    let project = Project::new("sqlite-lint");
    project.write(
        "0001_users.sql",
        "-- zdd: phase=expand\nCREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);\n",
    );
    let db = project.sqlite();
    project.run(&["up", "--database", &db]).expect_code(0);
    project
        .write(
            "0002_email.sql",
            "-- zdd: phase=expand\nALTER TABLE users ADD COLUMN email TEXT;\n",
        )
        .write(
            "0003_drop.sql",
            "-- zdd: phase=expand\n\nALTER TABLE users DROP COLUMN name;\n",
        );
    let run = project.run(&["up", "--database", &db]);
    run.expect_code(1);
    let lint = run.of_type("lint");
    assert_eq!(lint.len(), 1, "{}", run.stdout);
    assert_eq!(lint[0]["rule"], "drop-column");
    assert_eq!(lint[0]["line"], 3);
    assert!(run.stderr.contains("nothing was run"), "{}", run.stderr);
    let status = project.run(&["status", "--database", &db]);
    assert_eq!(
        status.statuses(),
        [
            (1, "applied".into()),
            (2, "pending".into()),
            (3, "pending".into())
        ]
    );

    // The same change as a contract migration is fine, and waits for
    // `contract`.
    project.write(
        "0003_drop.sql",
        "-- zdd: phase=contract\n\nALTER TABLE users DROP COLUMN name;\n",
    );
    let up = project.run(&["up", "--database", &db]);
    up.expect_code(0);
    assert_eq!(up.statuses(), [(2, "applied".into())]);
    assert!(
        up.stderr.contains("wait for `zdd-migrate contract`"),
        "{}",
        up.stderr
    );
}

#[test]
fn plan_and_status_change_nothing() {
    let project = Project::new("sqlite-plan");
    project
        .write(
            "0001_users.sql",
            "-- zdd: phase=expand\nCREATE TABLE users (id INTEGER PRIMARY KEY);\n",
        )
        .write(
            "0002_drop.sql",
            "-- zdd: phase=contract\nDROP TABLE users;\n",
        );
    let db = project.sqlite();
    let plan = project.run(&["plan", "--database", &format!("sqlite:{db}")]);
    plan.expect_code(0);
    assert_eq!(plan.statuses(), [(1, "pending".into())]);
    assert_eq!(plan.of_type("migration")[0]["action"], "apply");
    let plan = project.run(&["plan", "--contract", "--database", &db]);
    plan.expect_code(1);
    assert!(
        plan.stderr.contains("run `zdd-migrate up` first"),
        "{}",
        plan.stderr
    );
    project.run(&["status", "--database", &db]).expect_code(0);
    assert!(
        !std::path::Path::new(&db).exists(),
        "status created the file"
    );
}

#[test]
fn down_takes_back_the_latest_expand_migration() {
    let project = Project::new("sqlite-down");
    project
        .write(
            "0001_users.sql",
            "-- zdd: phase=expand\nCREATE TABLE users (id INTEGER PRIMARY KEY);\n",
        )
        .write(
            "0002_email.sql",
            "-- zdd: phase=expand\nALTER TABLE users ADD COLUMN email TEXT;\n",
        )
        .write(
            "0002_email.down.sql",
            "ALTER TABLE users DROP COLUMN email;\n",
        );
    let db = project.sqlite();
    project.run(&["up", "--database", &db]).expect_code(0);
    let wrong = project.run(&["down", "--version", "1", "--database", &db]);
    wrong.expect_code(1);
    assert!(wrong.stderr.contains("0002_email"), "{}", wrong.stderr);

    let down = project.run(&["down", "--database", &db]);
    down.expect_code(0);
    assert_eq!(down.of_type("migration")[0]["action"], "reverted");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pragma_table_info('users') WHERE name = 'email'"
        ),
        0
    );
    // 0001 has no down file.
    let again = project.run(&["down", "--database", &db]);
    again.expect_code(1);
    assert!(again.stderr.contains("no down file"), "{}", again.stderr);
    // And 0002 is pending again.
    let up = project.run(&["up", "--database", &db]);
    up.expect_code(0);
    assert_eq!(up.statuses(), [(2, "applied".into())]);
}

#[test]
fn a_held_lock_makes_up_wait_then_give_up() {
    let project = Project::new("sqlite-lock");
    project.write(
        "0001_users.sql",
        "-- zdd: phase=expand\nCREATE TABLE users (id INTEGER PRIMARY KEY);\n",
    );
    let db = project.sqlite();
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();

    let status = project.run(&["status", "--database", &db]);
    status.expect_code(0);
    assert_eq!(status.of_type("migration_status")[0]["locked"], true);

    let started = std::time::Instant::now();
    let run = project.run(&["up", "--lock-wait", "700ms", "--database", &db]);
    run.expect_code(1);
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert!(run.stderr.contains("still held"), "{}", run.stderr);

    holder.execute_batch("COMMIT").unwrap();
    project.run(&["up", "--database", &db]).expect_code(0);
}

#[test]
fn bad_arguments_and_folders_are_usage_errors() {
    let project = Project::new("sqlite-usage");
    let db = project.sqlite();
    project
        .run(&["up", "--database", "mysql://h/db"])
        .expect_code(2);
    project.write("0001_nophase.sql", "CREATE TABLE a (id INTEGER);\n");
    let run = project.run(&["up", "--database", &db]);
    run.expect_code(2);
    assert!(run.stderr.contains("no phase"), "{}", run.stderr);
    std::fs::remove_file(project.migrations().join("0001_nophase.sql")).unwrap();
    project.write("users.sql", "-- zdd: phase=expand\n");
    project.run(&["up", "--database", &db]).expect_code(2);
    assert!(!std::path::Path::new(&db).exists());
    support::run(&["up", "--database", &db, "--dir", "/nonexistent"]).expect_code(2);
    support::run(&["up"]).expect_code(2);
}
