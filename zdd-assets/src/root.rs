//! The asset root: what is where, and the few operations that must be
//! atomic.
//!
//! ```text
//! ROOT/
//!   zdd-assets.json          marks a zdd asset root (written first, on creation)
//!   lock                     flock(2): one writer at a time
//!   live -> releases/ID/site the live pointer: a symlink, replaced by rename(2)
//!   pool/…                   hashed files of every retained release, by URL path
//!   objects/SHA256           every other file content of the retained releases, once
//!   releases/ID/site/…       one release: the whole build at its own paths, as
//!                            hard links to pool/ or objects/
//!   releases/ID/manifest.json   build path → hashed path, sha256, size, SRI
//!   releases/ID/release.json    id, creation time, manifest hash, totals
//!   history.jsonl            which release went live when
//!   cache                    stat cache of the last directory published
//!   tmp/                     work in progress; emptied by the next writer
//! ```
//!
//! Why this shape:
//!
//! - The web server's root is `ROOT/live`, so what it serves for a page is
//!   decided by one symlink. Replacing it with `rename(2)` is atomic: every
//!   request sees the old release or the new one, and a crash at any
//!   moment leaves one of the two.
//! - Everything a release needs exists before the pointer moves: pool files
//!   and release folders are written under `tmp/` and renamed into place
//!   whole, so nothing ever reaches a served path half-written, and a
//!   killed writer leaves only `tmp/` debris, which the next one removes.
//! - Every file is stored once: a release folder holds hard links to the
//!   pool file or the object with its content, so an unchanged file costs
//!   a directory entry, and deleting a release never takes a byte another
//!   release uses (it holds its own link).
//! - Before the pointer moves, the file system is synced (`syncfs(2)`), so
//!   a power cut cannot leave a pointer on disk whose files are not.
//! - The history is kept apart from the pointer, rewritten whole through
//!   `tmp/` and checked against the pointer: if a writer died between
//!   moving the pointer and recording it, the next one records the switch
//!   at the pointer's own modification time.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::symlink;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zdd_core::{Error, Result};

use crate::time;

/// The file that marks a directory as an asset root.
pub const MARKER: &str = "zdd-assets.json";

/// An asset root.
#[derive(Debug, Clone)]
pub struct Root {
    pub dir: PathBuf,
}

/// What `--root` names, before anything is written.
pub enum RootState {
    /// An asset root.
    Existing(Root),
    /// A missing or empty directory: publishing makes it a root.
    Fresh(PathBuf),
}

impl Root {
    /// `dir`, which must be an asset root (usage error otherwise).
    pub fn open(dir: &Path) -> Result<Root> {
        match Root::inspect(dir)? {
            RootState::Existing(root) => Ok(root),
            RootState::Fresh(_) => Err(Error::Usage(format!(
                "{} is not a zdd asset root (no {MARKER}); publish into it first",
                dir.display()
            ))),
        }
    }

    /// What `dir` is: an asset root, or somewhere one may be made. Anything
    /// else is a usage error, so nothing is ever written into a directory
    /// that holds something else.
    pub fn inspect(dir: &Path) -> Result<RootState> {
        match fs::symlink_metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(RootState::Fresh(dir.to_path_buf()))
            }
            Err(e) => {
                return Err(Error::Usage(format!(
                    "cannot read the asset root {}: {e}",
                    dir.display()
                )))
            }
            Ok(_) => {}
        }
        let meta = fs::metadata(dir).map_err(|e| {
            Error::Usage(format!("cannot read the asset root {}: {e}", dir.display()))
        })?;
        if !meta.is_dir() {
            return Err(Error::Usage(format!(
                "the asset root {} is not a directory",
                dir.display()
            )));
        }
        if dir.join(MARKER).is_file() {
            let dir = fs::canonicalize(dir).map_err(|e| {
                Error::Usage(format!("cannot read the asset root {}: {e}", dir.display()))
            })?;
            return Ok(RootState::Existing(Root { dir }));
        }
        let mut entries = fs::read_dir(dir).map_err(|e| {
            Error::Usage(format!("cannot read the asset root {}: {e}", dir.display()))
        })?;
        if entries.next().is_some() {
            return Err(Error::Usage(format!(
                "{} is not a zdd asset root: it is not empty and has no {MARKER}; \
                 give a new or empty directory, or an existing asset root",
                dir.display()
            )));
        }
        Ok(RootState::Fresh(dir.to_path_buf()))
    }

    /// Makes `dir` an asset root: the marker goes first, so a directory
    /// this ever wrote into is recognised as a root afterwards.
    pub fn create(dir: &Path) -> Result<Root> {
        fs::create_dir_all(dir).map_err(|e| io_failed("creating the asset root", dir, e))?;
        let marker = dir.join(MARKER);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
        {
            Ok(mut file) => file
                .write_all(b"{\"zdd-assets\":1}\n")
                .map_err(|e| io_failed("writing", &marker, e))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_failed("creating", &marker, e)),
        }
        let dir = fs::canonicalize(dir).map_err(|e| io_failed("reading", dir, e))?;
        Ok(Root { dir })
    }

    pub fn live(&self) -> PathBuf {
        self.dir.join("live")
    }
    pub fn pool(&self) -> PathBuf {
        self.dir.join("pool")
    }
    /// Contents of files served from releases only, named by sha256.
    pub fn objects(&self) -> PathBuf {
        self.dir.join("objects")
    }
    pub fn object(&self, sha: &crate::hash::Sha) -> PathBuf {
        self.objects().join(crate::hash::hex(sha))
    }
    pub fn releases(&self) -> PathBuf {
        self.dir.join("releases")
    }
    pub fn release(&self, id: &str) -> PathBuf {
        self.releases().join(id)
    }
    pub fn tmp(&self) -> PathBuf {
        self.dir.join("tmp")
    }
    pub fn history_path(&self) -> PathBuf {
        self.dir.join("history.jsonl")
    }
    pub fn cache_path(&self) -> PathBuf {
        self.dir.join("cache")
    }

    /// A fresh path under `tmp/`.
    pub fn tmp_path(&self, what: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.tmp()
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Takes the writer's lock, waiting up to `wait` for another writer.
    /// The kernel drops it when the process dies, so a killed publish
    /// never leaves a stale lock.
    pub fn lock(&self, wait: Duration) -> Result<Lock> {
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_failed("opening", &path, e))?;
        let deadline = Instant::now() + wait;
        loop {
            // SAFETY: flock on a file descriptor we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io_failed("locking", &path, e));
            }
            if Instant::now() >= deadline {
                return Err(Error::Failed(format!(
                    "another zdd-assets is writing to {} (it holds {}); \
                     wait for it or pass --lock-wait",
                    self.dir.display(),
                    path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let lock = Lock { _file: file };
        self.prepare()?;
        Ok(lock)
    }

    /// Under the lock: the folders exist and `tmp/` holds nothing from a
    /// writer that died.
    fn prepare(&self) -> Result<()> {
        for dir in [self.pool(), self.objects(), self.releases()] {
            fs::create_dir_all(&dir).map_err(|e| io_failed("creating", &dir, e))?;
        }
        let tmp = self.tmp();
        let debris = fs::read_dir(&tmp).is_ok_and(|mut entries| entries.next().is_some());
        if debris {
            fs::remove_dir_all(&tmp).map_err(|e| io_failed("cleaning", &tmp, e))?;
        }
        fs::create_dir_all(&tmp).map_err(|e| io_failed("creating", &tmp, e))?;
        Ok(())
    }

    /// The live release's id, from the pointer.
    pub fn live_release(&self) -> Result<Option<String>> {
        let live = self.live();
        let target = match fs::read_link(&live) {
            Ok(target) => target,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_failed("reading the live pointer", &live, e)),
        };
        let text = target.to_string_lossy();
        let id = text
            .strip_prefix("releases/")
            .and_then(|rest| rest.strip_suffix("/site"))
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .ok_or_else(|| {
                Error::Failed(format!(
                    "the live pointer {} points to {text}, not to a release (releases/ID/site)",
                    live.display()
                ))
            })?;
        Ok(Some(id.to_owned()))
    }

    /// When the live pointer was last replaced (its own mtime), in ms.
    fn live_switched_ms(&self) -> Option<u64> {
        fs::symlink_metadata(self.live())
            .and_then(|m| m.modified())
            .ok()
            .map(time::ms_of)
    }

    /// Points `live` at release `id`: sync, a new symlink under `tmp/`,
    /// `rename(2)` over the old one, sync the directory.
    pub fn switch_live(&self, id: &str) -> Result<()> {
        sync_filesystem(&self.dir)?;
        let tmp = self.tmp_path("live");
        symlink(format!("releases/{id}/site"), &tmp)
            .map_err(|e| io_failed("creating the new live pointer", &tmp, e))?;
        let live = self.live();
        fs::rename(&tmp, &live).map_err(|e| io_failed("replacing the live pointer", &live, e))?;
        sync_dir(&self.dir)
    }

    /// The releases in `releases/`, oldest first.
    pub fn list_releases(&self) -> Result<Vec<Listed>> {
        let dir = self.releases();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_failed("listing", &dir, e)),
        };
        let mut listed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_failed("listing", &dir, e))?;
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let meta = fs::read(entry.path().join("release.json"))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<ReleaseMeta>(&bytes).ok())
                .filter(|meta| meta.id == id);
            listed.push(Listed { id, meta });
        }
        listed.sort_by(|a, b| {
            let key = |l: &Listed| l.meta.as_ref().map_or(0, |m| m.created_ms);
            key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
        });
        Ok(listed)
    }

    /// The activation history, with the pointer's truth added when the
    /// last writer died before recording a switch. `true` when it added.
    pub fn history(&self) -> Result<(Vec<Activation>, bool)> {
        let path = self.history_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_failed("reading", &path, e)),
        };
        let mut history = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let activation: Activation = serde_json::from_str(line).map_err(|e| {
                Error::Failed(format!(
                    "{} line {} is damaged ({e}); fix or remove the line",
                    path.display(),
                    n + 1
                ))
            })?;
            history.push(activation);
        }
        let live = self.live_release()?;
        let mut added = false;
        if let Some(live) = live {
            if history.last().map(|a| &a.release) != Some(&live) {
                let at_ms = self.live_switched_ms().unwrap_or_else(time::now_ms);
                history.push(Activation::new(live, at_ms));
                added = true;
            }
        }
        Ok((history, added))
    }

    /// Rewrites the history whole (through `tmp/`).
    pub fn write_history(&self, history: &[Activation]) -> Result<()> {
        let mut text = String::new();
        for activation in history {
            text.push_str(&serde_json::to_string(activation).expect("serializable"));
            text.push('\n');
        }
        self.write_atomic(&self.history_path(), text.as_bytes())
    }

    /// Writes `bytes` to `path` through a temporary file and `rename(2)`.
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = self.tmp_path("file");
        fs::write(&tmp, bytes).map_err(|e| io_failed("writing", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| io_failed("replacing", path, e))
    }
}

/// The writer's lock; dropped, it is released.
pub struct Lock {
    _file: File,
}

/// A release folder, with its `release.json` if that could be read.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub meta: Option<ReleaseMeta>,
}

/// `releases/ID/release.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseMeta {
    pub id: String,
    /// When it was published (RFC 3339) and the same in ms.
    pub created: String,
    pub created_ms: u64,
    /// sha256 of `manifest.json`, in hex; its first 12 digits end the id.
    pub manifest_sha256: String,
    pub files: u64,
    pub bytes: u64,
    /// What it was published from (a folder or `IMAGE:/path`).
    pub source: String,
}

/// One line of `history.jsonl`: `release` went live at `at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    pub release: String,
    pub at: String,
    pub at_ms: u64,
}

impl Activation {
    pub fn new(release: String, at_ms: u64) -> Self {
        Activation {
            release,
            at: time::rfc3339(at_ms),
            at_ms,
        }
    }
}

/// An I/O failure on a path, as a failed step (exit 1).
pub fn io_failed(action: &str, path: &Path, e: io::Error) -> Error {
    Error::Failed(format!("{action} {}: {e}", path.display()))
}

/// `syncfs(2)` on the file system holding `dir`: one call that makes every
/// pool file and release folder durable before the pointer moves.
pub fn sync_filesystem(dir: &Path) -> Result<()> {
    let file = File::open(dir).map_err(|e| io_failed("opening", dir, e))?;
    // SAFETY: syncfs on a file descriptor we own.
    if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
        return Err(io_failed("syncing", dir, io::Error::last_os_error()));
    }
    Ok(())
}

/// fsync(2) on a directory, so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let file = File::open(dir).map_err(|e| io_failed("opening", dir, e))?;
    file.sync_all().map_err(|e| io_failed("syncing", dir, e))
}
