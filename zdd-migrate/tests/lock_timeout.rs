//! `--lock-timeout` against a real PostgreSQL: a migration statement that
//! waits for a busy table gives up after the timeout, in a transactional
//! migration and in a `transaction=off` one alike, so it never holds the
//! application's queries queued behind it for longer than that.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{pg, Pg};

/// A migrations folder, removed when dropped.
struct Folder(PathBuf);

impl Folder {
    fn new(name: &str) -> Folder {
        let dir = std::env::temp_dir().join(format!(
            "zdd-migrate-lock-timeout-{name}-{}-0",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Folder(dir)
    }

    fn write(&self, file: &str, text: &str) -> &Self {
        std::fs::write(self.0.join(file), text).unwrap();
        self
    }

    fn run(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_zdd-migrate"))
            .args(args)
            .arg("--dir")
            .arg(&self.0)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `migration` as 0002 while another session holds ACCESS SHARE on
/// `users` (a long read of the running release); returns how `up` ended
/// and how long it took, and how long a read of `users` started meanwhile
/// waited.
fn blocked_up(name: &str, migration: &str) -> (i32, String, Duration, Duration, String) {
    let url = pg().database(name);
    let folder = Folder::new(name);
    folder.write(
        "0001_users.sql",
        "-- zdd: phase=expand\nCREATE TABLE users (id bigint PRIMARY KEY, email text);\nINSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 100) g;\n",
    );
    assert_eq!(folder.run(&["up", "-q", "--database", &url]).0, 0);
    folder.write("0002_change.sql", migration);

    let database = Pg::name_of(&url).to_owned();
    // The long read: holds its lock until `up` is done, or 8 s at most
    // (so a migration that never gives up fails the test, not hangs it).
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let (holding, held) = std::sync::mpsc::channel::<()>();
    let holder = {
        let database = database.clone();
        std::thread::spawn(move || {
            let mut reader = pg().client(&database).unwrap();
            let mut long_read = reader.transaction().unwrap();
            long_read
                .batch_execute("SELECT count(*) FROM users")
                .unwrap();
            holding.send(()).unwrap();
            let _ = wait.recv_timeout(Duration::from_secs(8));
            long_read.commit().unwrap();
        })
    };
    held.recv().unwrap();

    // Another read, started while the migration waits: it queues behind
    // the migration's ACCESS EXCLUSIVE request until that gives up.
    let queued = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        let mut client = pg().client(&database).unwrap();
        let started = Instant::now();
        client.batch_execute("SELECT count(*) FROM users").unwrap();
        started.elapsed()
    });
    let started = Instant::now();
    let (code, output) = folder.run(&["up", "--lock-timeout", "1s", "--database", &url]);
    let took = started.elapsed();
    let _ = done.send(());
    holder.join().unwrap();
    let queued = queued.join().unwrap();

    let (_, status) = folder.run(&["status", "--database", &url]);
    (code, output, took, queued, status)
}

#[test]
fn a_transaction_off_statement_gives_up_after_the_lock_timeout() {
    let (code, output, took, queued, status) = blocked_up(
        "lock_timeout_off",
        "-- zdd: phase=expand\n-- zdd: transaction=off\nALTER TABLE users ADD COLUMN IF NOT EXISTS nickname text;\n",
    );
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("lock timeout") && output.contains("55P03"),
        "{output}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        queued < Duration::from_secs(3),
        "the read waited {queued:?}"
    );
    // Outside a transaction a failure needs a person: drift until repair.
    assert!(
        status.contains("\"version\":2,") && status.contains("\"status\":\"failed\""),
        "{status}"
    );
}

#[test]
fn a_transactional_migration_gives_up_after_the_lock_timeout() {
    let (code, output, took, queued, status) = blocked_up(
        "lock_timeout_tx",
        "-- zdd: phase=expand\nALTER TABLE users ADD COLUMN nickname text;\n",
    );
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("55P03"), "{output}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        queued < Duration::from_secs(3),
        "the read waited {queued:?}"
    );
    assert!(status.contains("\"status\":\"failed\""), "{status}");
}

/// Without a competing lock the same migration applies, and the session's
/// lock_timeout does not outlive the statements: zdd-migrate's own
/// bookkeeping afterwards runs without it.
#[test]
fn the_timeout_applies_to_the_statements_only() {
    let url = pg().database("lock_timeout_ok");
    let folder = Folder::new("ok");
    folder
        .write(
            "0001_users.sql",
            "-- zdd: phase=expand\nCREATE TABLE users (id bigint PRIMARY KEY);\n",
        )
        .write(
            "0002_off.sql",
            "-- zdd: phase=expand\n-- zdd: transaction=off\nCREATE TABLE IF NOT EXISTS seen (setting text);\nINSERT INTO seen SELECT current_setting('lock_timeout');\nCREATE INDEX CONCURRENTLY IF NOT EXISTS users_id ON users (id);\n",
        );
    let (code, output) = folder.run(&["up", "--lock-timeout", "750ms", "--database", &url]);
    assert_eq!(code, 0, "{output}");
    let seen: String = pg()
        .client(Pg::name_of(&url))
        .unwrap()
        .query_one("SELECT setting FROM seen", &[])
        .unwrap()
        .get(0);
    assert_eq!(seen, "750ms");
}
