//! `zdd-migrate` against a real PostgreSQL (Debian's, started by the test
//! support), through the real binary.

mod support;

use std::time::{Duration, Instant};

use support::{finish, one_runner_applied, pg, Migrations, Pg, Project};

fn query_i64(url: &str, sql: &str) -> i64 {
    pg().client(Pg::name_of(url))
        .unwrap()
        .query_one(sql, &[])
        .unwrap()
        .get(0)
}

#[test]
fn two_runs_at_once_apply_each_migration_once() {
    let url = pg().database("race");
    let project = Project::new("pg-race");
    project
        .write(
            "0001_events.sql",
            "-- zdd: phase=expand\nCREATE TABLE events (id bigserial PRIMARY KEY, note text);\n",
        )
        .write(
            "0002_seed.sql",
            "-- zdd: phase=data\nINSERT INTO events (note) VALUES ('seeded');\nSELECT pg_sleep(1);\n",
        )
        .write(
            "0003_more.sql",
            "-- zdd: phase=expand\nALTER TABLE events ADD COLUMN kind text;\n",
        );
    let a = project.spawn(&["up", "--database", &url]);
    let b = project.spawn(&["up", "--database", &url]);
    let (_, waiter) = one_runner_applied(finish(a), finish(b), &[1, 2, 3]);
    assert!(
        waiter.stderr.contains("waiting") && waiter.stderr.contains("held by `zdd-migrate"),
        "{}",
        waiter.stderr
    );
    assert!(waiter.stderr.contains("nothing to do"), "{}", waiter.stderr);
    assert_eq!(query_i64(&url, "SELECT count(*) FROM events"), 1);
    assert_eq!(
        query_i64(
            &url,
            "SELECT count(*) FROM zdd_migrations WHERE status = 'applied'"
        ),
        3
    );
}

#[test]
fn a_failing_migration_is_rolled_back_recorded_and_stops_the_run() {
    let url = pg().database("fail");
    let project = Project::new("pg-fail");
    project
        .write(
            "0001_users.sql",
            "-- zdd: phase=expand\nCREATE TABLE users (id bigserial PRIMARY KEY, name text);\n",
        )
        .write(
            "0002_broken.sql",
            "-- zdd: phase=expand\nCREATE TABLE audit (id bigint);\nINSERT INTO audit VALUES (1);\nUPDATE users SET nickname = name;\n",
        )
        .write(
            "0003_later.sql",
            "-- zdd: phase=expand\nCREATE TABLE later (id bigint);\n",
        );
    let run = project.run(&["up", "--database", &url]);
    run.expect_code(1);
    assert_eq!(
        run.statuses(),
        [(1, "applied".into()), (2, "failed".into())]
    );
    // The database's own error, with the file and line it points at.
    assert!(
        run.stderr
            .contains(r#"0002_broken.sql line 4: ERROR: column "nickname" of relation "users" does not exist (SQLSTATE 42703)"#),
        "{}",
        run.stderr
    );
    assert_eq!(
        query_i64(
            &url,
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('audit', 'later')"
        ),
        0,
        "the failed migration left nothing and the next one never ran"
    );
    let row = pg()
        .client(Pg::name_of(&url))
        .unwrap()
        .query_one(
            "SELECT status, error, transactional, duration_ms IS NOT NULL FROM zdd_migrations WHERE version = 2",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    assert!(row.get::<_, String>(1).contains("42703"));
    assert!(row.get::<_, bool>(2));
    assert!(row.get::<_, bool>(3));
}

#[test]
fn create_index_concurrently_runs_outside_a_transaction() {
    let url = pg().database("cic");
    let project = Project::new("pg-cic");
    project
        .write(
            "0001_users.sql",
            "-- zdd: phase=expand\nCREATE TABLE users (id bigserial PRIMARY KEY, email text);\nINSERT INTO users (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 5000) g;\n",
        )
        .write(
            "0002_index.sql",
            "-- zdd: phase=expand\n-- zdd: transaction=off\nCREATE INDEX CONCURRENTLY IF NOT EXISTS users_email ON users (email);\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_email_lower ON users (lower(email));\n",
        );
    let run = project.run(&["up", "--database", &url]);
    run.expect_code(0);
    let index = &run.of_type("migration")[1];
    assert_eq!(index["status"], "applied");
    assert_eq!(index["transaction"], false);
    assert_eq!(
        query_i64(
            &url,
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname IN ('users_email', 'users_email_lower') AND i.indisvalid"
        ),
        2
    );
    assert_eq!(
        query_i64(
            &url,
            "SELECT count(*) FROM zdd_migrations WHERE version = 2 AND NOT transactional AND status = 'applied'"
        ),
        1
    );

    // The same statement in a transactional migration is stopped by the
    // lint before anything runs.
    project.write(
        "0003_again.sql",
        "-- zdd: phase=expand\nCREATE INDEX CONCURRENTLY users_id_email ON users (id, email);\n",
    );
    let run = project.run(&["up", "--database", &url]);
    run.expect_code(1);
    assert_eq!(
        run.of_type("lint")[0]["rule"],
        "concurrently-in-transaction"
    );
}

#[test]
fn status_names_the_lock_holder_and_a_live_running_migration() {
    let url = pg().database("holder");
    let project = Project::new("pg-holder");
    project
        .write(
            "0001_users.sql",
            "-- zdd: phase=expand\nCREATE TABLE users (id bigserial PRIMARY KEY);\n",
        )
        .write(
            "0002_slow.sql",
            "-- zdd: phase=data\n-- zdd: transaction=off\nSELECT pg_sleep(2);\n",
        );
    let up = project.spawn(&["up", "--database", &url]);
    // Wait until the slow migration's `running` row is there.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = project.run(&["status", "--database", &url]);
        if status.statuses().contains(&(2, "running".into())) {
            break status;
        }
        assert!(Instant::now() < deadline, "never saw 0002 running");
        std::thread::sleep(Duration::from_millis(50));
    };
    status.expect_code(0);
    let summary = &status.of_type("migration_status")[0];
    assert_eq!(summary["locked"], true);
    assert_eq!(summary["running"], 1);
    let holder = summary["lock_holder"].as_str().unwrap();
    assert!(
        holder.contains(&format!("pid {}", up.id())) && holder.contains("zdd-migrate"),
        "{holder}"
    );
    // A second runner gives up after --lock-wait, naming the holder.
    let blocked = project.run(&["up", "--lock-wait", "300ms", "--database", &url]);
    blocked.expect_code(1);
    assert!(
        blocked.stderr.contains("still held by `zdd-migrate"),
        "{}",
        blocked.stderr
    );

    finish(up).expect_code(0);
    let status = project.run(&["status", "--database", &url]);
    status.expect_code(0);
    assert_eq!(status.of_type("migration_status")[0]["locked"], false);
    assert_eq!(
        status.statuses(),
        [(1, "applied".into()), (2, "applied".into())]
    );
}

#[test]
fn a_killed_run_outside_a_transaction_is_drift_until_repair() {
    let url = pg().database("killed");
    let project = Project::new("pg-killed");
    project
        .write(
            "0001_users.sql",
            "-- zdd: phase=expand\nCREATE TABLE users (id bigserial PRIMARY KEY, email text);\n",
        )
        .write(
            "0002_slow.sql",
            "-- zdd: phase=expand\n-- zdd: transaction=off\nSELECT pg_sleep(3);\nCREATE INDEX CONCURRENTLY IF NOT EXISTS users_email ON users (email);\n",
        );
    let mut up = project.spawn(&["up", "--database", &url]);
    let running = || -> bool {
        let mut client = pg().client(Pg::name_of(&url)).unwrap();
        let exists: bool = client
            .query_one("SELECT to_regclass('zdd_migrations') IS NOT NULL", &[])
            .unwrap()
            .get(0);
        exists
            && client
                .query_one(
                    "SELECT count(*) FROM zdd_migrations WHERE version = 2 AND status = 'running'",
                    &[],
                )
                .unwrap()
                .get::<_, i64>(0)
                == 1
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !running() {
        assert!(Instant::now() < deadline, "never saw 0002 running");
        std::thread::sleep(Duration::from_millis(50));
    }
    up.kill().unwrap();
    up.wait().unwrap();

    // The lock session died with the runner; its row stays `running`.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = project.run(&["status", "--database", &url]);
        if status.of_type("migration_status")[0]["locked"] == false {
            break status;
        }
        assert!(Instant::now() < deadline, "the lock was never released");
        std::thread::sleep(Duration::from_millis(50));
    };
    status.expect_code(1);
    assert_eq!(status.statuses()[1], (2, "drift".into()));

    let up = project.run(&["up", "--database", &url]);
    up.expect_code(1);
    assert!(up.stderr.contains("never finished"), "{}", up.stderr);

    let repair = project.run(&["repair", "--database", &url]);
    repair.expect_code(0);
    assert_eq!(repair.of_type("migration")[0]["action"], "removed");
    let up = project.run(&["up", "--database", &url, "-q"]);
    up.expect_code(0);
    assert_eq!(up.statuses(), [(2, "applied".into())]);
    assert!(up.stderr.is_empty(), "-q: {}", up.stderr);
}

#[test]
fn a_safe_expand_contract_sequence_passes_lint_and_applies() {
    let url = pg().database("safe");
    let project = Project::new("pg-safe");
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/safe");
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), project.migrations().join(entry.file_name())).unwrap();
    }
    project.run(&["lint"]).expect_code(0);
    let up = project.run(&["up", "--database", &url]);
    up.expect_code(0);
    let applied: Vec<i64> = up.statuses().iter().map(|(v, _)| *v).collect();
    assert_eq!(applied, [1, 2, 3, 4]);
    let plan = project.run(&["plan", "--contract", "--database", &url]);
    plan.expect_code(0);
    let planned: Vec<i64> = plan.statuses().iter().map(|(v, _)| *v).collect();
    assert_eq!(planned, [5, 6, 7, 8]);
    project
        .run(&["contract", "--force", "--database", &url])
        .expect_code(0);
    let client = &mut pg().client(Pg::name_of(&url)).unwrap();
    let columns: Vec<String> = client
        .query(
            "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'users' ORDER BY ordinal_position",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(columns, ["id", "email_address"]);
    let nulls: i64 = client
        .query_one(
            "SELECT count(*) FROM users WHERE email_address IS NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(nulls, 0);
}

#[test]
fn down_and_repair_on_postgres() {
    let url = pg().database("down");
    let project = Project::new("pg-down");
    project
        .write(
            "0001_users.sql",
            "-- zdd: phase=expand\nCREATE TABLE users (id bigserial PRIMARY KEY);\n",
        )
        .write(
            "0002_email.sql",
            "-- zdd: phase=expand\nALTER TABLE users ADD COLUMN email text;\n",
        )
        .write(
            "0002_email.down.sql",
            "ALTER TABLE users DROP COLUMN email;\n",
        );
    project.run(&["up", "--database", &url]).expect_code(0);
    let down = project.run(&["down", "--version", "2", "--database", &url]);
    down.expect_code(0);
    assert_eq!(
        query_i64(
            &url,
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'email'"
        ),
        0
    );
    assert_eq!(query_i64(&url, "SELECT count(*) FROM zdd_migrations"), 1);
    // A file gone after it was applied is drift; repair forgets it only
    // when named.
    std::fs::remove_file(project.migrations().join("0002_email.down.sql")).unwrap();
    std::fs::remove_file(project.migrations().join("0002_email.sql")).unwrap();
    std::fs::remove_file(project.migrations().join("0001_users.sql")).unwrap();
    let status = project.run(&["status", "--database", &url]);
    status.expect_code(1);
    assert_eq!(status.statuses(), [(1, "drift".into())]);
    project.run(&["repair", "--database", &url]).expect_code(0);
    project.run(&["status", "--database", &url]).expect_code(1);
    let repair = project.run(&["repair", "--version", "1", "--database", &url]);
    repair.expect_code(0);
    assert_eq!(repair.of_type("migration")[0]["action"], "removed");
    project.run(&["status", "--database", &url]).expect_code(0);
}
