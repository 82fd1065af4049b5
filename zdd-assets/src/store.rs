//! Where a release's bytes live, written so that nothing half-written is
//! ever reachable.
//!
//! - The **pool** (`pool/DIR/NAME-HASH.EXT`, and bundler-hashed names as
//!   they are) holds the files served by hashed name, shared by every
//!   release that references them.
//! - The **objects** (`objects/<sha256>`) hold every other content of a
//!   release — pages, files nothing references, names kept with
//!   `--keep-name` — once, whatever release or path it has.
//! - A **release folder** is the whole build at its own paths, each file a
//!   hard link to its pool file or object: an unchanged file costs a
//!   directory entry, not a copy. Should a link fail (a file system
//!   without them, the link-count limit), the file is copied.
//!
//! A new pool file or object is written under `tmp/`, named by what was
//! actually written (a source file that changed since the stat cache saw
//! it gets the name of its new content) and renamed into place; an
//! existing one is never rewritten: the name is the content.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use zdd_core::Result;

use crate::hash::{self, Sha};
use crate::root::{io_failed, ReleaseMeta, Root};
use crate::source::BuildFile;
use crate::url;

/// Creates `path` with `content`.
fn write_new(path: &Path, content: &[u8]) -> Result<()> {
    let mut file = fs::File::create(path).map_err(|e| io_failed("creating", path, e))?;
    file.write_all(content)
        .map_err(|e| io_failed("writing", path, e))
}

/// Copies `from` to a new file `to` (in the kernel where it can:
/// `copy_file_range(2)`).
fn copy_new(from: &Path, to: &Path) -> Result<()> {
    let mut source = fs::File::open(from).map_err(|e| io_failed("reading", from, e))?;
    let mut file = fs::File::create(to).map_err(|e| io_failed("creating", to, e))?;
    std::io::copy(&mut source, &mut file)
        .map(|_| ())
        .map_err(|e| io_failed("copying", from, e))
}

/// Writes a file's content under `tmp/`; returns where, and its hash.
fn stage(root: &Root, file: &BuildFile, content: Option<Vec<u8>>) -> Result<(PathBuf, Sha)> {
    let tmp = root.tmp_path("store");
    match content {
        Some(content) => {
            write_new(&tmp, &content)?;
            Ok((tmp, hash::sha256(&content)))
        }
        None => {
            let mut out = fs::File::create(&tmp).map_err(|e| io_failed("creating", &tmp, e))?;
            let sha = hash::stream_hash(&file.abs, Some(&mut out))
                .map_err(|e| io_failed("copying", &file.abs, e))?;
            Ok((tmp, sha))
        }
    }
}

/// Renames a staged file into place; `false` (and the staged file
/// removed) when something already has that name.
fn commit(tmp: &Path, dest: &Path) -> Result<bool> {
    if dest.exists() {
        let _ = fs::remove_file(tmp);
        return Ok(false);
    }
    fs::rename(tmp, dest).map_err(|e| io_failed("storing", dest, e))?;
    Ok(true)
}

/// Stores a source file at `dest(sha)` unless that exists, `sha` being its
/// hash as known so far (read now, or from the stat cache). Returns the
/// hash of what is stored and whether this call wrote it.
pub fn put_file(
    root: &Root,
    file: &BuildFile,
    sha: Sha,
    content: Option<Vec<u8>>,
    dest: &dyn Fn(&Sha) -> PathBuf,
) -> Result<(Sha, bool)> {
    if dest(&sha).exists() {
        return Ok((sha, false));
    }
    let (tmp, sha) = stage(root, file, content)?;
    let written = commit(&tmp, &dest(&sha))?;
    Ok((sha, written))
}

/// Stores `content` at `dest` unless that exists; whether it wrote.
pub fn put_bytes(root: &Root, dest: &Path, content: &[u8]) -> Result<bool> {
    if dest.exists() {
        return Ok(false);
    }
    let tmp = root.tmp_path("store");
    write_new(&tmp, content)?;
    commit(&tmp, dest)
}

/// Where the content `sha` of the build file `path` goes in the pool.
pub fn pool_name(path: &str, sha: &Sha) -> String {
    url::hashed_path(path, &hash::hex(sha)[..hash::NAME_HEX])
}

/// Creates the pool folders these build paths' files go into.
pub fn make_pool_folders<'a>(root: &Root, paths: impl Iterator<Item = &'a str>) -> Result<()> {
    let pool = root.pool();
    let folders: HashSet<&str> = paths.map(url::parent).collect();
    for folder in folders {
        let dir = pool.join(folder);
        fs::create_dir_all(&dir).map_err(|e| io_failed("creating", &dir, e))?;
    }
    Ok(())
}

/// How many threads hash and link: every core.
fn jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Runs `work` over `items` on every core; results in item order.
pub fn parallel<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|scope| {
        for _ in 0..jobs().min(items.len().max(1)) {
            scope.spawn(|| {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items.len() {
                        break;
                    }
                    mine.push((i, work(&items[i])));
                }
                results
                    .lock()
                    .expect("no panics while holding it")
                    .extend(mine);
            });
        }
    });
    let mut results = results.into_inner().expect("no panics while holding it");
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// One file of a release folder: its build path, and the pool file or
/// object that holds its content.
pub struct Placed<'a> {
    pub path: &'a str,
    pub from: PathBuf,
}

/// Builds `releases/ID` under `tmp/` and renames it into place.
pub fn build_release(
    root: &Root,
    files: &[Placed<'_>],
    manifest: &[u8],
    meta: &ReleaseMeta,
) -> Result<()> {
    let staging = root.tmp_path("release");
    let site = staging.join("site");
    let folders: HashSet<&str> = files.iter().map(|f| url::parent(f.path)).collect();
    fs::create_dir_all(&site).map_err(|e| io_failed("creating", &site, e))?;
    for folder in folders {
        let dir = site.join(folder);
        fs::create_dir_all(&dir).map_err(|e| io_failed("creating", &dir, e))?;
    }
    let results = parallel(files, |file| -> Result<()> {
        let dest = site.join(file.path);
        if fs::hard_link(&file.from, &dest).is_ok() {
            return Ok(());
        }
        copy_new(&file.from, &dest)
    });
    results.into_iter().collect::<Result<Vec<()>>>()?;
    let manifest_path = staging.join("manifest.json");
    fs::write(&manifest_path, manifest).map_err(|e| io_failed("writing", &manifest_path, e))?;
    let meta_path = staging.join("release.json");
    let mut meta_bytes = serde_json::to_vec_pretty(meta).expect("release metadata serializes");
    meta_bytes.push(b'\n');
    fs::write(&meta_path, meta_bytes).map_err(|e| io_failed("writing", &meta_path, e))?;
    let dest = root.release(&meta.id);
    fs::rename(&staging, &dest).map_err(|e| io_failed("creating the release", &dest, e))
}
