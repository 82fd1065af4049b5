//! Scratch folders, unique names, free ports and waiting: what every test
//! harness of the workspace needs before it runs anything.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The name prefixes of what the tests put in the temporary folder; the
/// leftovers of killed test processes are swept by these.
const PREFIXES: [&str; 2] = ["zdd-test-", "zdd-e2e-"];

/// A name unique in this machine's running processes: `prefix-PID-N`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A fresh, empty folder `zdd-test-NAME-PID-N` in the temporary folder,
/// for a caller that removes it itself (a [`Scratch`] does).
pub fn scratch_path(name: &str) -> PathBuf {
    fresh_dir(&unique(&format!("zdd-test-{name}")))
}

/// `TMP/name`, emptied and created, after sweeping what killed earlier
/// test processes left in the temporary folder.
pub(crate) fn fresh_dir(name: &str) -> PathBuf {
    sweep_stale();
    let dir = std::env::temp_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch folder");
    dir
}

/// Removes, once per process, the scratch folders (`zdd-test-…-PID-N`,
/// `zdd-e2e-…-PID-N`) whose process is gone: a killed test never ran its
/// `Drop`.
fn sweep_stale() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !PREFIXES.iter().any(|p| name.starts_with(p)) {
                continue;
            }
            let mut parts = name.rsplit('-');
            let (Some(n), Some(pid)) = (parts.next(), parts.next()) else {
                continue;
            };
            let (Ok(_), Ok(pid)) = (n.parse::<usize>(), pid.parse::<i32>()) else {
                continue;
            };
            if pid <= 1 {
                continue;
            }
            // SAFETY: signal 0 only asks whether the process exists.
            let gone = unsafe { libc::kill(pid, 0) } != 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
            if gone {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
}

/// A private temporary folder (`zdd-test-NAME-PID-N`), removed when
/// dropped, also when the test panics.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        Scratch {
            path: scratch_path(name),
        }
    }

    /// The folder `TMP/name` exactly, emptied (for a name made unique by
    /// [`unique`]).
    pub(crate) fn named(name: &str) -> Self {
        Scratch {
            path: fresh_dir(name),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `rel` inside the folder.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// Writes `data` at `rel`, creating parent folders; returns its path.
    pub fn write(&self, rel: &str, data: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path.join(rel);
        std::fs::create_dir_all(path.parent().expect("a file in the folder"))
            .expect("create the parent folders");
        std::fs::write(&path, data).expect("write a scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

/// Polls `done` every 10 ms until it holds (true) or `timeout` passed
/// (false).
pub fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `done` holds; panics naming `what` after `timeout`.
#[track_caller]
pub fn wait_for(what: &str, timeout: Duration, done: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, done),
        "timed out after {timeout:?} waiting for {what}"
    );
}
