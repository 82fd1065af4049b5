//! Throwaway PostgreSQL servers of the tests' own.
//!
//! No PostgreSQL runs on a CI machine, so the tests start their own from
//! Debian's binaries (`apt-get install postgresql`): `initdb` into a
//! temporary folder owned by the `postgres` user (the server refuses to
//! run as root), then `postgres` listening on a unix socket in that folder,
//! and on TCP where containers must reach it ([`Listen`]: a Docker
//! network's gateway) or where a client speaks TCP only
//! ([`Pg::start_loopback`]: 127.0.0.1). One server is shared by all tests
//! of a test binary ([`pg`]), each test getting a fresh database. The
//! shared server cannot be stopped by a `Drop` (statics are never
//! dropped), so it is stopped twice over: an `atexit` handler shuts it
//! down and removes its folder when the test binary exits, and the server
//! carries `PR_SET_PDEATHSIG`, so the kernel stops it even if the test
//! binary is killed. It is spawned from a thread that never ends, because
//! the death signal follows the spawning thread. A server of a test's own ([`Pg::start`]) stops, and
//! its folder is removed, when dropped (also when the test panics); the
//! folders of killed test processes are swept with the other scratch
//! folders ([`crate::scratch_path`]).

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
    /// The TCP address it listens on, if any ([`Listen::address`]).
    address: Option<String>,
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

/// TCP listening for a server that containers (or TCP-only clients) must
/// reach.
pub struct Listen {
    /// The address to listen on (a Docker network's gateway, or 127.0.0.1).
    pub address: String,
    /// The subnet allowed in, CIDR.
    pub subnet: String,
    pub port: u16,
}

impl Listen {
    /// 127.0.0.1 at a free port, trusting only 127.0.0.1: for clients on
    /// this machine that speak TCP only.
    pub fn loopback() -> Listen {
        Listen {
            address: "127.0.0.1".into(),
            subnet: "127.0.0.1/32".into(),
            port: crate::free_port(),
        }
    }
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

/// A fresh scratch folder with an initdb'd cluster in `data` (trusting
/// `listen`'s subnet over TCP) and a socket folder `sock`, owned by the
/// `postgres` user; returns the folder.
fn init(listen: Option<&Listen>) -> PathBuf {
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
    if let Some(listen) = listen {
        let hba = data.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).unwrap();
        text.push_str(&format!("host all all {} trust\n", listen.subnet));
        std::fs::write(&hba, text).unwrap();
    }
    root
}

/// Starts postgres on the cluster in `root` and waits until it accepts
/// connections; if it does not (it exited, e.g. the port was taken), stops
/// it and returns its log, leaving the folder.
fn launch(root: &Path, listen: Option<&Listen>) -> Result<Pg, String> {
    let bin = bin_dir();
    let (uid, gid) = postgres_user();
    let data = root.join("data");
    let socket_dir = root.join("sock");
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
    let log_path = root.join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    chown(&log_path, uid, gid);
    let mut command = Command::new(bin.join("postgres"));
    command
        .arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(&socket_dir)
        .args(["-p", &port.to_string()])
        .args(&args)
        .current_dir(root)
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
        root: root.to_path_buf(),
        socket_dir,
        port,
        address: listen.map(|l| l.address.clone()),
        pid: child.id(),
        counter: AtomicUsize::new(0),
    };
    std::mem::forget(child);
    let mut exited = false;
    let up = crate::poll_until(Duration::from_secs(30), || {
        let mut status = 0;
        // SAFETY: waitpid(2) on our own child, without blocking.
        exited = unsafe { libc::waitpid(pg.pid as i32, &mut status, libc::WNOHANG) } != 0;
        pg.client("postgres").is_ok() || exited
    });
    if up && !exited && pg.client("postgres").is_ok() {
        return Ok(pg);
    }
    if !exited {
        stop(pg.pid);
    }
    // Its Drop would remove the folder, which a next attempt still needs.
    std::mem::forget(pg);
    Err(std::fs::read_to_string(&log_path).unwrap_or_default())
}

impl Pg {
    /// initdb + postgres; waits until it accepts connections.
    pub fn start(listen: Option<&Listen>) -> Pg {
        let root = init(listen);
        launch(&root, listen).unwrap_or_else(|log| {
            let _ = std::fs::remove_dir_all(&root);
            panic!("postgres did not start: {log}")
        })
    }

    /// A server of the test's own on TCP at 127.0.0.1 ([`Listen::loopback`];
    /// [`Pg::tcp_url`]). The port is free when picked, but may be taken
    /// before postgres binds it: a few are tried.
    pub fn start_loopback() -> Pg {
        let mut listen = Listen::loopback();
        let root = init(Some(&listen));
        let mut log = String::new();
        for _attempt in 0..5 {
            match launch(&root, Some(&listen)) {
                Ok(pg) => return pg,
                Err(error) => log = error,
            }
            listen.port = crate::free_port();
        }
        let _ = std::fs::remove_dir_all(&root);
        panic!("postgres did not start: {log}")
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

    /// `postgres://USER@ADDRESS:PORT/DATABASE`, over TCP, for a server
    /// started with a [`Listen`]; `user` is the URL's user info: `name`, or
    /// `name:password`.
    pub fn tcp_url(&self, user: &str, database: &str) -> String {
        let address = self
            .address
            .as_deref()
            .expect("a server started with a Listen");
        format!("postgres://{user}@{address}:{}/{database}", self.port)
    }

    /// Puts `lines` first in `pg_hba.conf` (the first matching line wins:
    /// they go before initdb's `trust` lines) and reloads the server's
    /// configuration. The reload only signals the server: connections a
    /// moment later may still see the old rules.
    pub fn pg_hba_prepend(&self, lines: &str) {
        let hba = self.root.join("data/pg_hba.conf");
        let text = std::fs::read_to_string(&hba).unwrap();
        let newline = if lines.ends_with('\n') { "" } else { "\n" };
        std::fs::write(&hba, format!("{lines}{newline}{text}")).unwrap();
        self.psql("postgres", "SELECT pg_reload_conf()");
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
    stop(pid);
    let _ = std::fs::remove_dir_all(root);
}

/// Fast shutdown and reap.
fn stop(pid: u32) {
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    crate::poll_until(Duration::from_secs(10), || {
        let mut status = 0;
        unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) != 0 }
    });
}

impl Pg {
    /// Runs `sql` with `psql` (a client independent of the code under
    /// test) against `database`; its output, unaligned, tuples only,
    /// trimmed.
    #[track_caller]
    pub fn psql(&self, database: &str, sql: &str) -> String {
        self.psql_output(database, sql).trim().to_owned()
    }

    /// Like [`Pg::psql`], the output exactly as psql prints it: each row
    /// ending in a newline.
    #[track_caller]
    pub fn psql_output(&self, database: &str, sql: &str) -> String {
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
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
