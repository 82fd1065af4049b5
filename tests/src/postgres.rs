//! Throwaway PostgreSQL servers of the tests' own.
//!
//! No PostgreSQL runs on a CI machine, so the tests start their own from
//! Debian's binaries (`apt-get install postgresql`): `initdb` into a
//! temporary folder owned by the `postgres` user (the server refuses to
//! run as root), then `postgres` listening on a unix socket in that folder,
//! and on TCP where containers must reach it ([`Listen`]: a Docker
//! network's gateway). One server is shared by all tests of a test binary
//! ([`pg`]), each test getting a fresh database. The shared server cannot
//! be stopped by a `Drop` (statics are never dropped), so it is stopped
//! twice over: an `atexit` handler shuts it down and removes its folder
//! when the test binary exits, and the server carries `PR_SET_PDEATHSIG`,
//! so the kernel stops it even if the test binary is killed. It is spawned
//! from a thread that never ends, because the death signal follows the
//! spawning thread. A server of a test's own ([`Pg::start`]) stops when
//! dropped.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// A PostgreSQL server of the test's own.
pub struct Pg {
    pub root: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    pid: u32,
    counter: AtomicUsize,
}

static SHARED: OnceLock<Pg> = OnceLock::new();
/// The shared server's pid and folder, for the `atexit` handler.
static SHARED_AT_EXIT: Mutex<Option<(u32, PathBuf)>> = Mutex::new(None);

/// The server shared by this test binary, started on first use.
pub fn pg() -> &'static Pg {
    SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The death signal is tied to the thread that spawns the server:
        // this one never ends.
        std::thread::spawn(move || {
            tx.send(Pg::start(None)).unwrap();
            loop {
                std::thread::park();
            }
        });
        let pg = rx.recv().expect("the server thread answers");
        *SHARED_AT_EXIT.lock().unwrap() = Some((pg.pid, pg.root.clone()));
        extern "C" fn stop_shared() {
            if let Some((pid, root)) = SHARED_AT_EXIT.lock().ok().and_then(|mut g| g.take()) {
                stop_server(pid, &root);
            }
        }
        unsafe { libc::atexit(stop_shared) };
        pg
    })
}

/// TCP listening for a server that containers must reach.
pub struct Listen {
    /// The address to listen on (a Docker network's gateway).
    pub address: String,
    /// The subnet allowed in, CIDR.
    pub subnet: String,
    pub port: u16,
}

/// Debian's PostgreSQL binaries (the newest installed).
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

fn postgres_user() -> (u32, u32) {
    let name = CString::new("postgres").unwrap();
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !entry.is_null(),
        "no `postgres` system user: apt-get install -y postgresql"
    );
    unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
}

fn chown(path: &Path, uid: u32, gid: u32) {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(
        unsafe { libc::chown(c.as_ptr(), uid, gid) },
        0,
        "chown {path:?}"
    );
}

impl Pg {
    /// initdb + postgres; waits until it accepts connections.
    pub fn start(listen: Option<&Listen>) -> Pg {
        let bin = bin_dir();
        let (uid, gid) = postgres_user();
        let root = crate::scratch_path("migrate-pg");
        let data = root.join("data");
        let socket_dir = root.join("sock");
        std::fs::create_dir_all(&socket_dir).unwrap();
        for path in [&root, &socket_dir] {
            chown(path, uid, gid);
        }
        let init = Command::new(bin.join("initdb"))
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
            .current_dir(&root)
            .uid(uid)
            .gid(gid)
            .output()
            .expect("run initdb");
        assert!(
            init.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = listen.map_or(5432, |l| l.port);
        let mut args = vec![
            "-c".to_string(),
            format!(
                "listen_addresses={}",
                listen.map_or("", |l| l.address.as_str())
            ),
        ];
        for setting in [
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "max_connections=60",
            "shared_buffers=32MB",
        ] {
            args.extend(["-c".to_string(), setting.to_string()]);
        }
        if let Some(listen) = listen {
            let hba = data.join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).unwrap();
            text.push_str(&format!("host all all {} trust\n", listen.subnet));
            std::fs::write(&hba, text).unwrap();
        }
        let log = std::fs::File::create(root.join("server.log")).unwrap();
        let log_path = root.join("server.log");
        chown(&log_path, uid, gid);
        let mut command = Command::new(bin.join("postgres"));
        command
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&socket_dir)
            .args(["-p", &port.to_string()])
            .args(&args)
            .current_dir(&root)
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // Runs after the uid change (which would clear it).
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
                Ok(())
            });
        }
        let child = command.spawn().expect("start postgres");
        let pg = Pg {
            root,
            socket_dir,
            port,
            pid: child.id(),
            counter: AtomicUsize::new(0),
        };
        std::mem::forget(child);
        let exited = || {
            let mut status = 0;
            // SAFETY: waitpid(2) on our own child, without blocking.
            unsafe { libc::waitpid(pg.pid as i32, &mut status, libc::WNOHANG) != 0 }
        };
        let up = crate::poll_until(Duration::from_secs(30), || {
            pg.client("postgres").is_ok() || exited()
        });
        assert!(
            up && pg.client("postgres").is_ok(),
            "postgres did not start: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        pg
    }

    /// A client over the unix socket.
    pub fn client(&self, database: &str) -> Result<postgres::Client, postgres::Error> {
        postgres::Config::new()
            .host_path(&self.socket_dir)
            .port(self.port)
            .user("postgres")
            .dbname(database)
            .connect(postgres::NoTls)
    }

    /// A fresh database; its URL (unix socket).
    pub fn database(&self, name: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let database = format!("{}_{n}", name.replace('-', "_"));
        self.client("postgres")
            .unwrap()
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .unwrap();
        self.url(&database)
    }

    /// `postgres://postgres@<socket dir, percent-encoded>:PORT/DB`.
    pub fn url(&self, database: &str) -> String {
        let host = self.socket_dir.display().to_string().replace('/', "%2F");
        format!("postgres://postgres@{host}:{}/{database}", self.port)
    }

    /// The database name of a URL made by [`Pg::database`].
    pub fn name_of(url: &str) -> &str {
        url.rsplit('/').next().unwrap()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        stop_server(self.pid, &self.root);
    }
}

/// Fast shutdown, reap, remove the folder.
fn stop_server(pid: u32, root: &Path) {
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    crate::poll_until(Duration::from_secs(10), || {
        let mut status = 0;
        unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) != 0 }
    });
    let _ = std::fs::remove_dir_all(root);
}

impl Pg {
    /// Runs `sql` with `psql` (a client independent of the code under
    /// test) against `database`; its output, unaligned, tuples only.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-c", sql])
            .output()
            .expect("run psql (apt-get install postgresql-client)");
        assert!(
            out.status.success(),
            "psql -c {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}
