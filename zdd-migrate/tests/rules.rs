//! Every lint rule, on every engine it applies to: the unsafe form is
//! flagged with the rule's id, a message and the rule's suggestion (the
//! safe steps); the safe form the suggestion describes is clean.
//!
//! Each case runs the real binary on a folder: the engine's setup as
//! `0001` (applied, so its tables are existing and busy), then the case's
//! migrations as `0002`, `0003`, …. The finding must be in the last one.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use zdd_migrate::rule::Rule;

const PG_SETUP: &str = "-- zdd: phase=expand
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE DOMAIN amount AS numeric(12, 2);
CREATE SCHEMA reporting;
CREATE TABLE users (id bigint PRIMARY KEY, email text, name varchar(50), score integer, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint, total numeric(10, 2));
CREATE TABLE events (id bigint NOT NULL, at timestamptz NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE events_2023 PARTITION OF events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE INDEX users_email ON users (email);
";

const SQLITE_SETUP: &str = "-- zdd: phase=expand
CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, name TEXT, score INTEGER);
CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, total REAL);
CREATE INDEX users_email ON users (email);
";

const E: &str = "-- zdd: phase=expand\n";
const D: &str = "-- zdd: phase=data\n";
const C: &str = "-- zdd: phase=contract\n";
const OFF: &str = "-- zdd: phase=expand\n-- zdd: transaction=off\n";
const DATA_OFF: &str = "-- zdd: phase=data\n-- zdd: transaction=off\n";

#[derive(Clone, Copy, PartialEq)]
enum Engine {
    Postgres,
    Sqlite,
}

/// A rule on one engine: the unsafe migrations and the safe ones. `None`
/// as the safe form: the safe way is not a migration (e.g. drop-database).
struct Case {
    rule: &'static str,
    engine: Engine,
    unsafe_form: &'static [(&'static str, &'static str)],
    safe_form: Option<&'static [(&'static str, &'static str)]>,
}

const fn pg(
    rule: &'static str,
    unsafe_form: &'static [(&'static str, &'static str)],
    safe_form: &'static [(&'static str, &'static str)],
) -> Case {
    Case {
        rule,
        engine: Engine::Postgres,
        unsafe_form,
        safe_form: Some(safe_form),
    }
}

const fn lite(
    rule: &'static str,
    unsafe_form: &'static [(&'static str, &'static str)],
    safe_form: &'static [(&'static str, &'static str)],
) -> Case {
    Case {
        rule,
        engine: Engine::Sqlite,
        unsafe_form,
        safe_form: Some(safe_form),
    }
}

const CASES: &[Case] = &[
    pg("drop-table", &[(E, "DROP TABLE orders;")], &[(C, "DROP TABLE orders;")]),
    lite("drop-table", &[(E, "DROP TABLE orders;")], &[(C, "DROP TABLE orders;")]),
    pg("drop-column", &[(D, "ALTER TABLE users DROP COLUMN name;")], &[(C, "ALTER TABLE users DROP COLUMN name;")]),
    lite("drop-column", &[(E, "ALTER TABLE users DROP COLUMN name;")], &[(C, "ALTER TABLE users DROP COLUMN name;")]),
    pg("rename-table", &[(E, "ALTER TABLE orders RENAME TO purchases;")], &[(E, "CREATE VIEW purchases AS SELECT * FROM orders;")]),
    lite("rename-table", &[(E, "ALTER TABLE orders RENAME TO purchases;")], &[(E, "CREATE VIEW purchases AS SELECT * FROM orders;")]),
    pg("rename-column", &[(E, "ALTER TABLE users RENAME COLUMN name TO full_name;")], &[(E, "ALTER TABLE users ADD COLUMN full_name text;"), (D, "UPDATE users SET full_name = name WHERE id IN (SELECT id FROM users WHERE full_name IS NULL LIMIT 1000);")]),
    lite("rename-column", &[(E, "ALTER TABLE users RENAME COLUMN name TO full_name;")], &[(E, "ALTER TABLE users ADD COLUMN full_name TEXT;"), (D, "UPDATE users SET full_name = name WHERE id IN (SELECT id FROM users WHERE full_name IS NULL LIMIT 1000);")]),
    pg("add-column-not-null", &[(E, "ALTER TABLE users ADD COLUMN plan text NOT NULL;")], &[(E, "ALTER TABLE users ADD COLUMN plan text NOT NULL DEFAULT 'free';")]),
    lite("add-column-not-null", &[(E, "ALTER TABLE users ADD COLUMN plan TEXT NOT NULL;")], &[(E, "ALTER TABLE users ADD COLUMN plan TEXT NOT NULL DEFAULT 'free';")]),
    pg("add-column-volatile-default", &[(E, "ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid();")], &[(E, "ALTER TABLE users ADD COLUMN token uuid;\nALTER TABLE users ALTER COLUMN token SET DEFAULT gen_random_uuid();\nALTER TABLE users ADD COLUMN seen_at timestamptz DEFAULT now();")]),
    lite("add-column-volatile-default", &[(E, "ALTER TABLE users ADD COLUMN seen_at TEXT DEFAULT CURRENT_TIMESTAMP;")], &[(E, "ALTER TABLE users ADD COLUMN seen_at TEXT DEFAULT '1970-01-01';\nALTER TABLE users ADD COLUMN visits INTEGER DEFAULT -1;")]),
    pg("add-column-generated-stored", &[(E, "ALTER TABLE users ADD COLUMN email_lower text GENERATED ALWAYS AS (lower(email)) STORED;")], &[(E, "ALTER TABLE users ADD COLUMN email_lower text;")]),
    lite("add-column-generated-stored", &[(E, "ALTER TABLE users ADD COLUMN email_lower TEXT GENERATED ALWAYS AS (lower(email)) STORED;")], &[(E, "ALTER TABLE users ADD COLUMN email_lower TEXT GENERATED ALWAYS AS (lower(email)) VIRTUAL;")]),
    pg("add-column-serial", &[(E, "ALTER TABLE users ADD COLUMN number bigserial;")], &[(E, "CREATE SEQUENCE users_number_seq;\nALTER TABLE users ADD COLUMN number bigint;\nALTER TABLE users ALTER COLUMN number SET DEFAULT nextval('users_number_seq');")]),
    pg("add-column-constraint", &[(E, "ALTER TABLE orders ADD COLUMN buyer_id bigint REFERENCES users (id);")], &[(E, "ALTER TABLE orders ADD COLUMN buyer_id bigint;\nALTER TABLE orders ADD CONSTRAINT orders_buyer_fk FOREIGN KEY (buyer_id) REFERENCES users (id) NOT VALID;")]),
    pg("add-column-constraint", &[(E, "ALTER TABLE users ADD COLUMN handle text UNIQUE;")], &[(E, "ALTER TABLE users ADD COLUMN handle text;"), (OFF, "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_handle ON users (handle);"), (E, "ALTER TABLE users ADD CONSTRAINT users_handle UNIQUE USING INDEX users_handle;")]),
    lite("add-column-constraint", &[(E, "ALTER TABLE users ADD COLUMN handle TEXT UNIQUE;")], &[(E, "ALTER TABLE users ADD COLUMN handle TEXT;\nCREATE UNIQUE INDEX users_handle ON users (handle);")]),
    pg("add-column-json", &[(E, "ALTER TABLE orders ADD COLUMN data json;")], &[(E, "ALTER TABLE orders ADD COLUMN data jsonb;")]),
    pg("set-not-null", &[(E, "ALTER TABLE users ALTER COLUMN email SET NOT NULL;")], &[(C, "ALTER TABLE users ADD CONSTRAINT users_email_present CHECK (email IS NOT NULL) NOT VALID;"), (C, "ALTER TABLE users VALIDATE CONSTRAINT users_email_present;"), (C, "ALTER TABLE users ALTER COLUMN email SET NOT NULL;")]),
    lite("set-not-null", &[(E, "ALTER TABLE users ALTER COLUMN email SET NOT NULL;")], &[(D, "UPDATE users SET email = 'unknown@example.com' WHERE email IS NULL;"), (C, "ALTER TABLE users ALTER COLUMN email SET NOT NULL;")]),
    lite("drop-not-null", &[(E, "ALTER TABLE users ALTER COLUMN id DROP NOT NULL;")], &[(C, "ALTER TABLE users ALTER COLUMN id DROP NOT NULL;")]),
    pg("drop-not-null", &[(E, "ALTER TABLE users ALTER COLUMN created_at DROP NOT NULL;")], &[(C, "ALTER TABLE users ALTER COLUMN created_at DROP NOT NULL;")]),
    pg("change-column-type", &[(E, "ALTER TABLE users ALTER COLUMN score TYPE bigint;")], &[(E, "ALTER TABLE users ALTER COLUMN name TYPE varchar(100);\nALTER TABLE users ADD COLUMN score_big bigint;")]),
    pg("constraint-not-valid", &[(E, "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id);")], &[(E, "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;")]),
    pg("validate-in-same-migration", &[(E, "ALTER TABLE orders ADD CONSTRAINT orders_total_positive CHECK (total >= 0) NOT VALID;\nALTER TABLE orders VALIDATE CONSTRAINT orders_total_positive;")], &[(E, "ALTER TABLE orders ADD CONSTRAINT orders_total_positive CHECK (total >= 0) NOT VALID;"), (E, "ALTER TABLE orders VALIDATE CONSTRAINT orders_total_positive;")]),
    pg("index-not-concurrent", &[(E, "CREATE INDEX users_name ON users (name);")], &[(OFF, "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_name ON users (name);")]),
    pg("drop-index-not-concurrent", &[(E, "DROP INDEX users_email;")], &[(OFF, "DROP INDEX CONCURRENTLY IF EXISTS users_email;")]),
    pg("reindex-not-concurrent", &[(E, "REINDEX INDEX users_email;")], &[(OFF, "REINDEX INDEX CONCURRENTLY users_email;")]),
    pg("detach-partition-not-concurrent", &[(E, "ALTER TABLE events DETACH PARTITION events_2023;")], &[(OFF, "ALTER TABLE events DETACH PARTITION events_2023 CONCURRENTLY;")]),
    pg("vacuum-full", &[(DATA_OFF, "VACUUM FULL users;")], &[(DATA_OFF, "VACUUM ANALYZE users;")]),
    pg("cluster", &[(D, "CLUSTER users USING users_email;")], &[(D, "ANALYZE users;")]),
    pg("lock-table", &[(E, "LOCK TABLE users;\nALTER TABLE users ADD COLUMN nickname text;")], &[(E, "LOCK TABLE users IN SHARE UPDATE EXCLUSIVE MODE;\nALTER TABLE users ADD COLUMN nickname text;")]),
    pg("concurrently-in-transaction", &[(E, "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_name ON users (name);")], &[(OFF, "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_name ON users (name);")]),
    lite("concurrently-in-transaction", &[(D, "VACUUM;")], &[(DATA_OFF, "VACUUM;")]),
    pg("transaction-control", &[(OFF, "BEGIN;\nALTER TABLE users ADD COLUMN IF NOT EXISTS nickname text;")], &[(E, "ALTER TABLE users ADD COLUMN nickname text;")]),
    lite("transaction-control", &[(E, "BEGIN;\nALTER TABLE users ADD COLUMN nickname TEXT;\nCOMMIT;")], &[(E, "ALTER TABLE users ADD COLUMN nickname TEXT;")]),
    pg("not-rerunnable", &[(OFF, "CREATE INDEX CONCURRENTLY users_name ON users (name);")], &[(OFF, "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_name ON users (name);")]),
    lite("not-rerunnable", &[(DATA_OFF, "CREATE INDEX users_name ON users (name);\nVACUUM;")], &[(DATA_OFF, "CREATE INDEX IF NOT EXISTS users_name ON users (name);\nVACUUM;")]),
    Case {
        rule: "drop-database",
        engine: Engine::Postgres,
        unsafe_form: &[(C, "DROP DATABASE app_old;")],
        safe_form: None,
    },
    pg("drop-schema", &[(E, "DROP SCHEMA reporting;")], &[(C, "DROP SCHEMA reporting;")]),
    pg("truncate-cascade", &[(D, "TRUNCATE users CASCADE;")], &[(D, "DELETE FROM orders WHERE id IN (SELECT id FROM orders ORDER BY id LIMIT 1000);")]),
    pg("rename-schema", &[(E, "ALTER SCHEMA reporting RENAME TO analytics;")], &[(E, "CREATE SCHEMA analytics;")]),
    pg("rename-enum-value", &[(E, "ALTER TYPE mood RENAME VALUE 'sad' TO 'unhappy';")], &[(E, "ALTER TYPE mood ADD VALUE 'unhappy';")]),
    pg("rename-type", &[(E, "ALTER DOMAIN amount RENAME TO money_amount;")], &[(E, "CREATE TYPE feeling AS ENUM ('happy', 'unhappy');")]),
    pg("backfill-with-schema-change", &[(E, "ALTER TABLE users ADD COLUMN locale text;\nUPDATE users SET locale = 'en';")], &[(E, "ALTER TABLE users ADD COLUMN locale text;"), (D, "UPDATE users SET locale = 'en' WHERE id IN (SELECT id FROM users WHERE locale IS NULL LIMIT 1000);")]),
    lite("backfill-with-schema-change", &[(E, "ALTER TABLE users ADD COLUMN locale TEXT;\nUPDATE users SET locale = 'en';")], &[(E, "ALTER TABLE users ADD COLUMN locale TEXT;"), (D, "UPDATE users SET locale = 'en' WHERE id IN (SELECT id FROM users WHERE locale IS NULL LIMIT 1000);")]),
    pg("table-rebuild", &[(C, "CREATE TABLE orders_new (id bigint PRIMARY KEY, user_id bigint NOT NULL, total numeric(10, 2));\nINSERT INTO orders_new SELECT * FROM orders;\nDROP TABLE orders;\nALTER TABLE orders_new RENAME TO orders;")], &[(E, "ALTER TABLE orders ADD COLUMN total_cents bigint;")]),
    lite("table-rebuild", &[(E, "CREATE TABLE orders_new (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users (id), total REAL);\nINSERT INTO orders_new SELECT * FROM orders;\nDROP TABLE orders;\nALTER TABLE orders_new RENAME TO orders;")], &[(E, "ALTER TABLE orders ADD COLUMN buyer_id INTEGER REFERENCES users (id);")]),
    lite("sqlite-alter-unsupported", &[(E, "ALTER TABLE users ALTER COLUMN score TYPE TEXT;")], &[(E, "ALTER TABLE users ADD COLUMN score_text TEXT;"), (D, "UPDATE users SET score_text = score WHERE id IN (SELECT id FROM users WHERE score_text IS NULL LIMIT 1000);")]),
    lite("sqlite-alter-unsupported", &[(E, "ALTER TABLE users ADD CONSTRAINT users_email_unique UNIQUE (email);")], &[(E, "CREATE UNIQUE INDEX users_email_unique ON users (email);\nALTER TABLE users ADD CONSTRAINT users_score_positive CHECK (score > 0);")]),
    pg("parse-error", &[(E, "ALTER TABLE users FROBNICATE COLUMN email;")], &[(DATA_OFF, "VACUUM ANALYZE users;\nVACUUM (VERBOSE, ANALYZE) users;\nANALYZE users;"), (E, "ALTER DOMAIN amount SET DEFAULT 0;\nALTER DOMAIN amount ADD CONSTRAINT amount_positive CHECK (VALUE > 0) NOT VALID;")]),
    lite("parse-error", &[(E, "ALTER TABLE users FROBNICATE;")], &[(E, "PRAGMA foreign_keys = ON;\nREINDEX users_email;")]),
];

/// A folder of migrations, removed when dropped.
struct Folder(PathBuf);

impl Folder {
    fn new(name: &str, setup: &str, migrations: &[(&str, &str)]) -> Folder {
        // Named `…-PID-N` like the support's folders (swept when that
        // process is gone); N only makes the name unique.
        let dir =
            std::env::temp_dir().join(format!("zdd-migrate-rules-{name}-{}-0", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0001_setup.sql"), setup).unwrap();
        for (i, (header, body)) in migrations.iter().enumerate() {
            let file = dir.join(format!("{:04}_case.sql", i + 2));
            std::fs::write(file, format!("{header}{body}\n")).unwrap();
        }
        Folder(dir)
    }

    /// `zdd-migrate lint --dir FOLDER EXTRA…`: exit code and records.
    fn lint(&self, extra: &[&str]) -> (i32, Vec<Value>) {
        let out = Command::new(env!("CARGO_BIN_EXE_zdd-migrate"))
            .args(["lint", "-q", "--dir"])
            .arg(&self.0)
            .args(extra)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        let records = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (out.status.code().unwrap_or(-1), records)
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dialect(engine: Engine) -> (&'static str, &'static str) {
    match engine {
        Engine::Postgres => ("postgres", PG_SETUP),
        Engine::Sqlite => ("sqlite", SQLITE_SETUP),
    }
}

#[test]
fn every_rule_flags_its_unsafe_form_and_passes_its_safe_form() {
    let mut failures = Vec::new();
    for (n, case) in CASES.iter().enumerate() {
        let (dialect, setup) = dialect(case.engine);
        let rule = Rule::parse(case.rule).unwrap_or_else(|| panic!("no rule {}", case.rule));
        let last = case.unsafe_form.len() as i64 + 1;

        let folder = Folder::new(&format!("{n}-unsafe"), setup, case.unsafe_form);
        let (code, records) = folder.lint(&["--dialect", dialect]);
        let hit = records.iter().find(|r| r["rule"] == case.rule);
        match hit {
            Some(r) => {
                let ok = code == 1
                    && r["version"] == last
                    && r["severity"] == "error"
                    && r["suggestion"] == rule.suggestion()
                    && r["message"].as_str().is_some_and(|m| m.len() > 20);
                if !ok {
                    failures.push(format!(
                        "{} ({dialect}) unsafe: exit {code}, {r}",
                        case.rule
                    ));
                }
            }
            None => failures.push(format!(
                "{} ({dialect}) unsafe form not flagged: {records:?}",
                case.rule
            )),
        }

        if let Some(safe) = case.safe_form {
            let folder = Folder::new(&format!("{n}-safe"), setup, safe);
            let (code, records) = folder.lint(&["--dialect", dialect]);
            if code != 0 || !records.is_empty() {
                failures.push(format!(
                    "{} ({dialect}) safe form flagged: exit {code}, {records:?}",
                    case.rule
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_rule_has_a_case() {
    // header and unused-allow: tests/lint.rs (fixtures 0015, 0016).
    for rule in zdd_migrate::rule::ALL {
        let id = rule.id();
        assert!(
            matches!(id, "header" | "unused-allow") || CASES.iter().any(|c| c.rule == id),
            "no case for {id}"
        );
    }
}

/// The statements of the issue that the parser rejected parse now, and are
/// judged: VACUUM ANALYZE is fine, CLUSTER is flagged as itself.
#[test]
fn statements_the_parser_rejects_are_read_and_judged() {
    let folder = Folder::new(
        "parse",
        PG_SETUP,
        &[
            (DATA_OFF, "VACUUM ANALYZE users;"),
            (D, "CLUSTER users USING users_email;"),
            (
                E,
                "ALTER DOMAIN amount ADD CONSTRAINT amount_positive CHECK (VALUE > 0);",
            ),
            (E, "DO $$ BEGIN PERFORM 1; END $$;"),
        ],
    );
    let (code, records) = folder.lint(&[]);
    assert_eq!(code, 1);
    let found: Vec<(i64, &str)> = records
        .iter()
        .map(|r| (r["version"].as_i64().unwrap(), r["rule"].as_str().unwrap()))
        .collect();
    assert_eq!(
        found,
        [
            (3, "cluster"),
            (4, "constraint-not-valid"),
            (5, "parse-error")
        ]
    );
    assert!(
        records[2]["message"].as_str().unwrap().contains("DO block"),
        "{}",
        records[2]
    );
}

/// A statement that cannot be parsed names itself.
#[test]
fn a_parse_error_names_the_statement() {
    let folder = Folder::new(
        "parse-error",
        PG_SETUP,
        &[(
            E,
            "ALTER TABLE users ALTER COLUMN email SET STORAGE EXTERNAL;",
        )],
    );
    let (code, records) = folder.lint(&[]);
    assert_eq!(code, 1);
    let message = records[0]["message"].as_str().unwrap();
    assert!(
        message.contains("`ALTER TABLE users ALTER COLUMN email SET STORAGE EXTERNAL`"),
        "{message}"
    );
}

/// What an earlier migration of the unapplied batch created is new:
/// `--pending-from` says where the batch starts.
#[test]
fn a_table_created_earlier_in_the_batch_is_new() {
    let folder = Folder::new(
        "batch",
        PG_SETUP,
        &[
            (E, "CREATE TABLE invoices (id bigint PRIMARY KEY, order_id bigint, note text);"),
            (E, "CREATE INDEX invoices_order_id ON invoices (order_id);\nALTER TABLE invoices RENAME COLUMN note TO memo;"),
        ],
    );
    // Without a batch, 0002 counts as applied: invoices is busy.
    let (code, records) = folder.lint(&[]);
    assert_eq!(code, 1);
    let rules: Vec<&str> = records
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["index-not-concurrent", "rename-column"]);
    // 0002 and 0003 are pending together: nobody uses invoices yet.
    let (code, records) = folder.lint(&["--pending-from", "2"]);
    assert_eq!((code, records.len()), (0, 0), "{records:?}");
    // Only 0003 is pending: 0002 has been applied.
    let (code, _) = folder.lint(&["--pending-from", "3"]);
    assert_eq!(code, 1);
}

/// `up` and `plan` take the batch from the history: a column added by a
/// pending migration may be renamed by a later pending one, not once its
/// migration is applied.
#[test]
fn up_judges_against_the_history() {
    let folder = Folder::new(
        "history",
        SQLITE_SETUP,
        &[
            (E, "ALTER TABLE users ADD COLUMN nick TEXT;"),
            (E, "ALTER TABLE users RENAME COLUMN nick TO nickname;"),
        ],
    );
    let db = folder.0.join("app.db");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_zdd-migrate"))
            .args(args)
            .arg("--dir")
            .arg(&folder.0)
            .arg("--database")
            .arg(&db)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // Nothing applied: the whole folder is one batch, nothing is flagged.
    let (code, stdout) = run(&["plan", "-q"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(!stdout.contains("\"lint\""), "{stdout}");
    // Apply 0001 and 0002 only (0003 moved away), then bring 0003 back:
    // the column is now in use, so the rename is flagged.
    let third = folder.0.join("0003_case.sql");
    let text = std::fs::read_to_string(&third).unwrap();
    std::fs::remove_file(&third).unwrap();
    assert_eq!(run(&["up", "-q"]).0, 0);
    std::fs::write(&third, text).unwrap();
    let (code, stdout) = run(&["plan", "-q"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("\"rule\":\"rename-column\""), "{stdout}");
}

/// The SQLite cases against real SQLite: every safe form applies with `up`
/// and `contract`, and the unsafe forms whose message says SQLite refuses
/// them do fail.
#[test]
fn sqlite_agrees() {
    let mut failures = Vec::new();
    for (n, case) in CASES.iter().enumerate() {
        if case.engine != Engine::Sqlite {
            continue;
        }
        if let Some(safe) = case.safe_form {
            let folder = Folder::new(&format!("{n}-apply"), SQLITE_SETUP, safe);
            let db = folder.0.join("app.db");
            for step in [&["up"][..], &["contract", "--force"]] {
                let out = Command::new(env!("CARGO_BIN_EXE_zdd-migrate"))
                    .args(step)
                    .args(["-q", "--dir"])
                    .arg(&folder.0)
                    .arg("--database")
                    .arg(&db)
                    .env_remove("DATABASE_URL")
                    .output()
                    .unwrap();
                if !out.status.success() {
                    failures.push(format!(
                        "{} safe form does not apply: {}{}",
                        case.rule,
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
        }
        let refused = matches!(
            case.rule,
            "add-column-not-null"
                | "add-column-volatile-default"
                | "add-column-generated-stored"
                | "add-column-constraint"
                | "sqlite-alter-unsupported"
                | "concurrently-in-transaction"
        );
        if refused {
            let db = rusqlite::Connection::open_in_memory().unwrap();
            db.execute_batch(SQLITE_SETUP).unwrap();
            db.execute_batch("INSERT INTO users (id, email) VALUES (1, 'a@example.com')")
                .unwrap();
            let body: String = case.unsafe_form.iter().map(|(_, b)| *b).collect();
            if db
                .execute_batch(&format!("BEGIN;\n{body}\nCOMMIT;"))
                .is_ok()
            {
                failures.push(format!("{}: SQLite accepted {body}", case.rule));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
