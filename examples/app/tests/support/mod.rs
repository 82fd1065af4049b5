//! Test support for the notes and client tests: throwaway PostgreSQL
//! servers (here), the app under test ([`app`]), and its JSON ([`json`]).
//!
//! The servers take the same approach as
//! `zdd-migrate/tests/support/mod.rs` (to be merged into the shared
//! test crate): Debian's binaries under `/usr/lib/postgresql/N/bin`,
//! `initdb --auth=trust` into a temporary folder, and `postgres` on it
//! with durability off. PostgreSQL refuses to run as root, so as root
//! both run as the `postgres` user (or `nobody`) with the folder
//! chowned to it. Unlike there, every test gets a server of its own,
//! listening on 127.0.0.1 at a free port (the app speaks TCP only),
//! stopped when the [`Pg`] is dropped; the server also carries
//! `PR_SET_PDEATHSIG`, so the kernel stops it if the test binary is
//! killed. SQL is run with `psql`, so the tests check the app's client
//! against an independent one.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod app;
pub mod json;

use std::ffi::CString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use zdd_e2e::free_port;

/// The prefix of the servers' folders in the temporary folder.
const PREFIX: &str = "zdd-example-app-pg";

/// A PostgreSQL server of the test's own.
pub struct Pg {
    pub port: u16,
    root: PathBuf,
    child: Child,
}

impl Pg {
    /// initdb + postgres; waits until it answers queries.
    pub fn start() -> Pg {
        sweep_stale();
        let bin = bin_dir();
        let user = server_user();
        let root = std::env::temp_dir().join(unique());
        let data = root.join("data");
        std::fs::create_dir_all(&root).unwrap();
        if let Some((uid, gid)) = user {
            chown(&root, uid, gid);
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ])
            .current_dir(&root);
        as_user(&mut initdb, user);
        let init = initdb.output().expect("run initdb");
        assert!(
            init.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        // The port is free when picked, but may be taken before postgres
        // binds it: try a few.
        let log_path = root.join("server.log");
        for _attempt in 0..5 {
            let port = free_port();
            let log = File::create(&log_path).unwrap();
            let mut postgres = Command::new(bin.join("postgres"));
            postgres
                .arg("-D")
                .arg(&data)
                .arg("-k")
                .arg(&root)
                .args(["-p", &port.to_string(), "-h", "127.0.0.1"])
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off", "-c", "max_connections=50"])
                .args(["-c", "shared_buffers=16MB"])
                .current_dir(&root)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            as_user(&mut postgres, user);
            // SAFETY: prctl(2) is async-signal-safe; runs in the child
            // after the uid change, which would clear it.
            unsafe {
                postgres.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
                    Ok(())
                });
            }
            let child = postgres.spawn().expect("start postgres");
            let mut pg = Pg {
                port,
                root: root.clone(),
                child,
            };
            if pg.wait_ready() {
                return pg;
            }
            // Exited, e.g. the port was taken: its Drop would remove the
            // folder, which the next attempt still needs.
            std::mem::forget(pg);
        }
        panic!(
            "postgres did not start: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    /// Waits until the server answers; false if it exited.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.try_psql("SELECT 1").is_ok() {
                return true;
            }
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not answer within 30 s: {}",
                std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `postgres://USER@127.0.0.1:PORT/postgres`.
    pub fn url(&self, user: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's data folder.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Runs `sql` with psql as `postgres`; its output, unaligned and
    /// without headers. Panics on an error.
    #[track_caller]
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|error| panic!("psql {sql:?} failed: {error}"))
    }

    /// Like [`Pg::psql`], the error being psql's stderr.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let output = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "5")
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .stdin(Stdio::null())
            .output()
            .expect("run psql (apt-get install postgresql-client)");
        if output.status.success() {
            Ok(String::from_utf8(output.stdout).unwrap())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

impl Drop for Pg {
    /// Fast shutdown, reap, remove the folder.
    fn drop(&mut self) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// `PREFIX-PID-N`, unique in this process.
fn unique() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{PREFIX}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Removes the folders of earlier test runs that were killed.
fn sweep_stale() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
                continue;
            };
            let Some(Ok(pid)) = rest.split('-').next().map(str::parse::<i32>) else {
                continue;
            };
            // SAFETY: signal 0 only checks that the process exists.
            let gone = unsafe { libc::kill(pid, 0) } != 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
            if gone {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
}

/// Debian's PostgreSQL binaries, the newest version installed.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.retain(|v| v.join("bin/initdb").exists());
    versions.sort_by_key(|v| {
        v.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .pop()
        .map(|v| v.join("bin"))
        .expect("PostgreSQL is not installed: apt-get install -y postgresql")
}

/// As root, the user to run the server as (`postgres`, else `nobody`);
/// otherwise `None`: run as ourselves.
fn server_user() -> Option<(u32, u32)> {
    // Looked up once: getpwnam(3) is not thread-safe, and tests run in
    // parallel.
    static USER: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *USER.get_or_init(|| {
        // SAFETY: geteuid(2) cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        for name in ["postgres", "nobody"] {
            let name = CString::new(name).unwrap();
            // SAFETY: getpwnam(3) returns null or a pointer to an entry
            // valid until the next call, read at once.
            let entry = unsafe { libc::getpwnam(name.as_ptr()) };
            if !entry.is_null() {
                // SAFETY: non-null, see above.
                return Some(unsafe { ((*entry).pw_uid, (*entry).pw_gid) });
            }
        }
        panic!("running as root, but there is neither a `postgres` nor a `nobody` user");
    })
}

fn as_user(command: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
}

fn chown(path: &Path, uid: u32, gid: u32) {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: chown(2) with a NUL-terminated path.
    assert_eq!(
        unsafe { libc::chown(c.as_ptr(), uid, gid) },
        0,
        "chown {path:?}"
    );
}
