//! `publish`: a build becomes a release, and (by default) the live one.
//!
//! In order, and why in this order:
//!
//! 1. **Check everything that can be checked without writing** — the
//!    root (an asset root, or a new or empty folder), the source (regular
//!    files only; an image is copied out into a temporary folder), and
//!    every HTML and CSS file's references. A usage error here (exit 2)
//!    leaves the root exactly as it was.
//! 2. **Take the lock** (one writer per root) and clear `tmp/`.
//! 3. **Leaves first.** Every file that is not a stylesheet we rewrite is
//!    hashed, on every core; the ones HTML or CSS reference go into the
//!    pool as `name-<hash>.ext`, bundler-hashed ones under their own name.
//!    Then stylesheets, each after the stylesheets it imports, with the
//!    hashed names of what they reference put in — so a stylesheet's own
//!    hash covers the names inside it — then the pages. A pool file is
//!    written to `tmp/` and renamed into place, and never rewritten when
//!    it is already there: the name is the content.
//! 4. **The manifest** (build path → hashed path, sha256, size, SRI) names
//!    the release: its id is the time plus the manifest's hash, so the same
//!    build published again finds its release and reuses it.
//! 5. **The release folder** (the whole build at its paths: pages and
//!    stylesheets rewritten, hashed files hard-linked from the pool) is
//!    built under `tmp/` and renamed into `releases/` whole.
//! 6. **The switch**: sync, then the live symlink is replaced by
//!    `rename(2)`. Until that instant the old release is live and complete;
//!    after it the new one is. Killing the process anywhere leaves one or
//!    the other.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use zdd_core::cli::Progress;
use zdd_core::{Error, Result};

use crate::hash::{self, FileKey, Sha, StatCache, NAME_HEX, STREAM_ABOVE};
use crate::record::ReleaseRecord;
use crate::rewrite::{self, Analysis, Target, Warning};
use crate::root::{io_failed, Activation, ReleaseMeta, Root, RootState};
use crate::source::{self, BuildFile, TempDir};
use crate::{bundler, image, time, url};

/// What `publish` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub source: String,
    pub root: PathBuf,
    pub activate: bool,
    pub strict: bool,
    pub rehash: bool,
    pub lock_wait: Duration,
}

/// `releases/ID/manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub files: BTreeMap<String, ManifestEntry>,
}

/// One file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Its path in the pool (and URL path), when it is served from there:
    /// `css/app-<hash>.css`, or its own path for a bundler-hashed name.
    /// Absent for files served only from the release (pages, files nothing
    /// references).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashed: Option<String>,
    pub sha256: String,
    pub size: u64,
    pub integrity: String,
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Manifest> {
        let bytes = fs::read(path).map_err(|e| io_failed("reading", path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Failed(format!("{} is damaged: {e}", path.display())))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// An HTML page: rewritten, served from the release under its name.
    Page,
    /// A stylesheet we rewrite.
    Sheet,
    /// Anything else (including a bundler's stylesheet): copied as it is.
    Plain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    /// Served from the release only.
    No,
    /// Pooled as `name-<hash>.ext`.
    Ours,
    /// Pooled under its own (bundler-hashed) name.
    Named,
}

struct Node {
    file: BuildFile,
    role: Role,
    text: Option<String>,
    /// `text` holds one char per byte of a file that is not UTF-8.
    latin1: bool,
    analysis: Analysis,
    referenced: bool,
    pool: Pool,
    // Filled in as the build proceeds.
    sha: Option<Sha>,
    size: u64,
    hashed: Option<String>,
    content: Option<Vec<u8>>,
    written: bool,
}

struct Lookup<'a> {
    index: &'a HashMap<String, usize>,
    roles: &'a [Role],
}

impl rewrite::Build for Lookup<'_> {
    fn lookup(&self, path: &str) -> Option<usize> {
        self.index.get(path).copied()
    }
    fn is_page(&self, index: usize) -> bool {
        self.roles[index] == Role::Page
    }
}

struct FinalNames<'a> {
    nodes: &'a [Node],
}

impl rewrite::Names for FinalNames<'_> {
    fn hash(&self, index: usize) -> Option<&str> {
        let node = &self.nodes[index];
        match node.pool {
            Pool::Ours => {
                let hashed = node.hashed.as_deref()?;
                let (stem, _) = url::split_name(hashed.rsplit('/').next()?);
                stem.get(stem.len().checked_sub(NAME_HEX)?..)
            }
            _ => None,
        }
    }
    fn rewritten_integrity(&self, _index: usize) -> Option<&str> {
        None
    }
}

/// Integrity values of rewritten stylesheets, looked up by index.
struct WithIntegrity<'a> {
    names: FinalNames<'a>,
    integrity: &'a HashMap<usize, String>,
}

impl rewrite::Names for WithIntegrity<'_> {
    fn hash(&self, index: usize) -> Option<&str> {
        self.names.hash(index)
    }
    fn rewritten_integrity(&self, index: usize) -> Option<&str> {
        self.integrity.get(&index).map(String::as_str)
    }
}

/// Publishes `options.source` into `options.root`.
pub async fn publish(options: &Options, progress: Progress) -> Result<ReleaseRecord> {
    let started = SystemTime::now();
    let state = Root::inspect(&options.root)?;

    // 1. The source, checked whole before anything is written.
    let (files, _unpacked, cacheable) =
        read_source(&options.source, &options.root, progress).await?;
    let mut warnings = Vec::new();
    let mut nodes = plan(files, &mut warnings)?;
    if options.strict && !warnings.is_empty() {
        let list: Vec<String> = warnings
            .iter()
            .map(|w| format!("  {}:{}: `{}` {}", w.file, w.line, w.url, w.reason))
            .collect();
        return Err(Error::Usage(format!(
            "{} unresolved reference(s) (--strict):\n{}",
            warnings.len(),
            list.join("\n")
        )));
    }

    // 2. The root, locked.
    let root = match state {
        RootState::Existing(root) => root,
        RootState::Fresh(dir) => {
            progress.info(format_args!("making {} an asset root", dir.display()));
            Root::create(&dir)?
        }
    };
    let _lock = root.lock(options.lock_wait)?;
    let (mut history, reconciled) = root.history()?;
    let live_before = root.live_release()?;
    let releases = root.list_releases()?;

    // 3. Leaves, then stylesheets, then pages.
    let known = known_pool_hashes(
        &root,
        live_before.as_deref(),
        releases.last().map(|l| l.id.as_str()),
    );
    let cache = if cacheable && !options.rehash {
        StatCache::load(&root.cache_path())
    } else {
        StatCache::default()
    };
    make_pool_folders(&root, &nodes)?;
    let fresh = hash_plain_files(&root, &mut nodes, &cache, &known, &mut warnings)?;
    rewrite_sheets(&root, &mut nodes, &mut warnings)?;
    rewrite_pages(&mut nodes);

    // 4. The manifest names the release.
    let manifest = manifest(&nodes);
    let manifest_bytes = {
        let mut bytes = serde_json::to_vec(&manifest).expect("a manifest serializes");
        bytes.push(b'\n');
        bytes
    };
    let manifest_sha = hash::hex(&hash::sha256(&manifest_bytes));
    let existing = releases.iter().find(|l| {
        l.meta.as_ref().is_some_and(|m| {
            m.manifest_sha256 == manifest_sha && l.id.ends_with(&manifest_sha[..12])
        })
    });

    // 5. The release folder. The pool files go to disk meanwhile: the sync
    // before the switch then has little left to wait for.
    let early_sync = existing.is_none().then(|| {
        let dir = root.dir.clone();
        std::thread::spawn(move || crate::root::sync_filesystem(&dir))
    });
    let now_ms = time::now_ms();
    let (id, reused, created) = match existing {
        Some(listed) => (
            listed.id.clone(),
            true,
            listed.meta.as_ref().map(|m| m.created.clone()),
        ),
        None => {
            let id = format!("{}-{}", time::compact(now_ms), &manifest_sha[..12]);
            let meta = ReleaseMeta {
                id: id.clone(),
                created: time::rfc3339(now_ms),
                created_ms: now_ms,
                manifest_sha256: manifest_sha.clone(),
                files: nodes.len() as u64,
                bytes: nodes.iter().map(|n| n.size).sum(),
                source: options.source.clone(),
            };
            build_release(&root, &nodes, &manifest_bytes, &meta)?;
            (id, false, Some(meta.created))
        }
    };

    if let Some(early_sync) = early_sync {
        // Only a head start: the switch syncs (and reports errors) itself.
        let _ = early_sync.join();
    }

    // 6. The switch.
    let switched = options.activate && live_before.as_deref() != Some(id.as_str());
    if switched {
        root.switch_live(&id)?;
        history.push(Activation::new(id.clone(), time::now_ms()));
    }
    if switched || reconciled {
        root.write_history(&history)?;
    }
    if cacheable {
        save_cache(&root, &nodes, &cache, &fresh, started);
    }

    let pooled: Vec<&Node> = nodes.iter().filter(|n| n.hashed.is_some()).collect();
    let new: Vec<&&Node> = pooled.iter().filter(|n| n.written).collect();
    let live = root.live_release()?.as_deref() == Some(id.as_str());
    let record = ReleaseRecord {
        id: id.clone(),
        root: root.dir.display().to_string(),
        live,
        previous: live_before.clone().filter(|p| switched && *p != id),
        switched: Some(switched),
        source: Some(options.source.clone()),
        created,
        reused: Some(reused),
        files: Some(nodes.len() as u64),
        bytes: Some(nodes.iter().map(|n| n.size).sum()),
        pooled: Some(pooled.len() as u64),
        new_files: Some(new.len() as u64),
        reused_files: Some((pooled.len() - new.len()) as u64),
        new_bytes: Some(new.iter().map(|n| n.size).sum()),
        warnings: Some(warnings.clone()),
        ..ReleaseRecord::default()
    };
    for warning in &warnings {
        progress.warn(format_args!(
            "{}:{}: `{}` {}",
            warning.file, warning.line, warning.url, warning.reason
        ));
    }
    let elapsed = started.elapsed().unwrap_or_default().as_secs_f64();
    progress.info(format_args!(
        "{} {id}: {} files, {} pooled ({} new, {} already there){} in {elapsed:.2}s",
        if reused {
            "reused release"
        } else {
            "published"
        },
        nodes.len(),
        pooled.len(),
        new.len(),
        pooled.len() - new.len(),
        match (switched, live, &live_before) {
            (true, _, Some(before)) => format!("; live (was {before})"),
            (true, _, None) => "; live".to_string(),
            (false, true, _) => "; already live".to_string(),
            (false, false, _) => "; not activated".to_string(),
        }
    ));
    Ok(record)
}

/// The source's files; for an image, also the temporary folder holding
/// them (dropped last) and whether the stat cache applies (folders only).
async fn read_source(
    source: &str,
    root: &Path,
    progress: Progress,
) -> Result<(Vec<BuildFile>, Option<TempDir>, bool)> {
    let as_path = Path::new(source);
    if as_path.is_dir() {
        let dir = fs::canonicalize(as_path)
            .map_err(|e| Error::Usage(format!("cannot read the source {source}: {e}")))?;
        // Publishing a folder that holds the root would publish the root
        // into itself; a source inside the root can vanish under us
        // (`tmp/` is emptied, releases are pruned).
        let root = absolute(root);
        if root.starts_with(&dir) || dir.starts_with(&root) {
            return Err(Error::Usage(format!(
                "the source {source} and the asset root {} must not contain each other",
                root.display()
            )));
        }
        return Ok((source::walk(&dir, source)?, None, true));
    }
    match image::parse_source(source) {
        Some((image, path)) => {
            let unpacked = image::extract(image, path, progress).await?;
            let files = source::walk(&unpacked.path, source)?;
            Ok((files, Some(unpacked), false))
        }
        None => Err(Error::Usage(format!(
            "the source {source} is neither a directory nor IMAGE:/path"
        ))),
    }
}

/// `path` made absolute with symlinks resolved as far as it exists.
fn absolute(path: &Path) -> PathBuf {
    if let Ok(real) = fs::canonicalize(path) {
        return real;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => absolute(parent).join(name),
        _ => std::env::current_dir().map_or_else(|_| path.to_path_buf(), |cwd| cwd.join(path)),
    }
}

fn is_page(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".html") || lower.ends_with(".htm")
}

fn is_sheet(path: &str) -> bool {
    path.to_ascii_lowercase().ends_with(".css")
}

/// Roles, references and pool kinds, from the source alone.
fn plan(files: Vec<BuildFile>, warnings: &mut Vec<Warning>) -> Result<Vec<Node>> {
    let index: HashMap<String, usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.path.clone(), i))
        .collect();
    let mut listed = HashSet::new();
    for manifest in bundler::MANIFESTS {
        if let Some(&i) = index.get(manifest) {
            if let Ok(bytes) = fs::read(&files[i].abs) {
                listed.extend(bundler::listed_in_manifest(&bytes, &|p| {
                    index.contains_key(p)
                }));
            }
        }
    }
    let mut nodes: Vec<Node> = files
        .into_iter()
        .map(|file| {
            let named = !is_page(&file.path)
                && bundler::is_hashed_name(&file.path, listed.contains(&file.path));
            let role = if is_page(&file.path) {
                Role::Page
            } else if is_sheet(&file.path) && !named {
                Role::Sheet
            } else {
                Role::Plain
            };
            Node {
                size: file.size(),
                file,
                role,
                text: None,
                latin1: false,
                analysis: Analysis::default(),
                referenced: false,
                pool: if named { Pool::Named } else { Pool::No },
                sha: None,
                hashed: None,
                content: None,
                written: false,
            }
        })
        .collect();
    for node in nodes.iter_mut().filter(|n| n.role != Role::Plain) {
        let bytes = fs::read(&node.file.abs).map_err(|e| {
            Error::Usage(format!("cannot read {} of the source: {e}", node.file.path))
        })?;
        node.text = Some(match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                // Not UTF-8 (Latin-1, windows-1252, …): one char per byte,
                // which the rewrite turns back into the same bytes.
                node.latin1 = true;
                e.into_bytes().into_iter().map(char::from).collect()
            }
        });
    }
    let roles: Vec<Role> = nodes.iter().map(|n| n.role).collect();
    let lookup = Lookup {
        index: &index,
        roles: &roles,
    };
    for node in nodes.iter_mut() {
        if let Some(text) = &node.text {
            node.analysis = rewrite::analyse(
                &node.file.path,
                text,
                node.role == Role::Page,
                &lookup,
                warnings,
            );
        }
    }
    let referenced: Vec<usize> = nodes
        .iter()
        .flat_map(|n| n.analysis.references.iter())
        .filter_map(|r| match r.target {
            Target::File { index, .. } => Some(index),
            _ => None,
        })
        .collect();
    for index in referenced {
        let node = &mut nodes[index];
        node.referenced = true;
        if node.pool == Pool::No {
            node.pool = Pool::Ours;
        }
    }
    Ok(nodes)
}

/// The sha256 of pool files named in the live and the newest release's
/// manifests, to check a bundler-named file against without reading it.
fn known_pool_hashes(
    root: &Root,
    live: Option<&str>,
    newest: Option<&str>,
) -> HashMap<String, Sha> {
    let mut known = HashMap::new();
    let ids: HashSet<&str> = [live, newest].into_iter().flatten().collect();
    for id in ids {
        let Ok(manifest) = Manifest::read(&root.release(id).join("manifest.json")) else {
            continue;
        };
        for entry in manifest.files.into_values() {
            if let (Some(hashed), Some(sha)) = (entry.hashed, hash::parse_hex(&entry.sha256)) {
                known.insert(hashed, sha);
            }
        }
    }
    known
}

fn make_pool_folders(root: &Root, nodes: &[Node]) -> Result<()> {
    let pool = root.pool();
    let folders: HashSet<&str> = nodes
        .iter()
        .filter(|n| n.pool != Pool::No)
        .map(|n| url::parent(&n.file.path))
        .collect();
    for folder in folders {
        let dir = pool.join(folder);
        fs::create_dir_all(&dir).map_err(|e| io_failed("creating", &dir, e))?;
    }
    Ok(())
}

/// How many threads hash: every core.
fn jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Runs `work` over `items` on every core; results in item order.
fn parallel<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
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

enum Plain {
    Done {
        sha: Sha,
        hashed: Option<String>,
        written: bool,
        /// Hashed from the content now (not taken from the stat cache).
        fresh: bool,
    },
    /// A bundler-named file whose name the pool holds with other content.
    Conflict { sha: Sha, fresh: bool },
}

/// Hashes every plain file (every core) and pools the ones that go to the
/// pool. Returns the indexes hashed from content, for the stat cache.
fn hash_plain_files(
    root: &Root,
    nodes: &mut [Node],
    cache: &StatCache,
    known: &HashMap<String, Sha>,
    warnings: &mut Vec<Warning>,
) -> Result<HashSet<usize>> {
    let mut order: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].role == Role::Plain)
        .collect();
    // Biggest first, so the cores finish together.
    order.sort_by_key(|&i| std::cmp::Reverse(nodes[i].file.size()));
    let jobs: Vec<(&BuildFile, Pool)> = order
        .iter()
        .map(|&i| (&nodes[i].file, nodes[i].pool))
        .collect();
    let results = parallel(&jobs, |(file, pool)| plain(root, file, *pool, cache, known));
    let mut fresh = HashSet::new();
    let mut conflicts = Vec::new();
    for (&i, result) in order.iter().zip(results) {
        match result? {
            Plain::Done {
                sha,
                hashed,
                written,
                fresh: hashed_now,
            } => {
                let node = &mut nodes[i];
                node.sha = Some(sha);
                node.hashed = hashed;
                node.written = written;
                if hashed_now {
                    fresh.insert(i);
                }
            }
            Plain::Conflict {
                sha,
                fresh: hashed_now,
            } => {
                if hashed_now {
                    fresh.insert(i);
                }
                conflicts.push((i, sha));
            }
        }
    }
    for (i, sha) in conflicts {
        let node = &mut nodes[i];
        warnings.push(Warning {
            file: node.file.path.clone(),
            line: 1,
            url: node.file.path.clone(),
            reason: "named like a content hash, but the pool holds other content under \
                     this name from an earlier release; published as an ordinary file"
                .into(),
        });
        node.pool = if node.referenced {
            Pool::Ours
        } else {
            Pool::No
        };
        node.sha = Some(sha);
        if node.pool == Pool::Ours {
            match plain(root, &node.file, Pool::Ours, cache, known)? {
                Plain::Done {
                    sha,
                    hashed,
                    written,
                    ..
                } => {
                    node.sha = Some(sha);
                    node.hashed = hashed;
                    node.written = written;
                }
                Plain::Conflict { .. } => unreachable!("only named files conflict"),
            }
        }
    }
    Ok(fresh)
}

/// Hashes one plain file and pools it if it goes to the pool.
fn plain(
    root: &Root,
    file: &BuildFile,
    pool: Pool,
    cache: &StatCache,
    known: &HashMap<String, Sha>,
) -> Result<Plain> {
    let read_failed = |e| io_failed("reading", &file.abs, e);
    let (sha, content, fresh) = match cache.get(&file.abs, &file.key) {
        Some(sha) => (sha, None, false),
        None if file.size() > STREAM_ABOVE => (
            hash::stream_hash(&file.abs, None).map_err(read_failed)?,
            None,
            true,
        ),
        None => {
            let (content, sha) = hash::read_and_hash(&file.abs).map_err(read_failed)?;
            (sha, Some(content), true)
        }
    };
    let pool_dir = root.pool();
    match pool {
        Pool::No => Ok(Plain::Done {
            sha,
            hashed: None,
            written: false,
            fresh,
        }),
        Pool::Ours => {
            let hashed = url::hashed_path(&file.path, &hash::hex(&sha)[..NAME_HEX]);
            if pool_dir.join(&hashed).exists() {
                return Ok(Plain::Done {
                    sha,
                    hashed: Some(hashed),
                    written: false,
                    fresh,
                });
            }
            // Name the pool file by what is actually written.
            let (tmp, sha) = stage(root, file, content)?;
            let hashed = url::hashed_path(&file.path, &hash::hex(&sha)[..NAME_HEX]);
            let written = commit(&tmp, &pool_dir.join(&hashed))?;
            Ok(Plain::Done {
                sha,
                hashed: Some(hashed),
                written,
                fresh: true,
            })
        }
        Pool::Named => {
            let dest = pool_dir.join(&file.path);
            if dest.exists() {
                let pooled = match known.get(&file.path) {
                    Some(sha) => *sha,
                    None => hash::stream_hash(&dest, None)
                        .map_err(|e| io_failed("reading", &dest, e))?,
                };
                if pooled == sha {
                    return Ok(Plain::Done {
                        sha,
                        hashed: Some(file.path.clone()),
                        written: false,
                        fresh,
                    });
                }
                return Ok(Plain::Conflict { sha, fresh });
            }
            let (tmp, sha) = stage(root, file, content)?;
            let written = commit(&tmp, &dest)?;
            Ok(Plain::Done {
                sha,
                hashed: Some(file.path.clone()),
                written,
                fresh: true,
            })
        }
    }
}

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
    let tmp = root.tmp_path("pool");
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

/// Renames a staged file into the pool; `false` (and the staged file
/// removed) when the pool already has that name.
fn commit(tmp: &Path, dest: &Path) -> Result<bool> {
    if dest.exists() {
        let _ = fs::remove_file(tmp);
        return Ok(false);
    }
    fs::rename(tmp, dest).map_err(|e| io_failed("pooling", dest, e))?;
    Ok(true)
}

/// Puts `content` into the pool at `hashed` unless it is there.
fn pool_content(root: &Root, hashed: &str, content: &[u8]) -> Result<bool> {
    let dest = root.pool().join(hashed);
    if dest.exists() {
        return Ok(false);
    }
    let tmp = root.tmp_path("pool");
    write_new(&tmp, content)?;
    commit(&tmp, &dest)
}

/// Stylesheets in dependency order (imports first); references that close
/// an `@import` cycle are left alone, with a warning.
fn rewrite_sheets(root: &Root, nodes: &mut [Node], warnings: &mut Vec<Warning>) -> Result<()> {
    let sheets: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].role == Role::Sheet)
        .collect();
    let mut state = vec![0u8; nodes.len()];
    let mut order = Vec::new();
    let mut skip: HashMap<usize, Vec<usize>> = HashMap::new();
    fn visit(
        i: usize,
        nodes: &[Node],
        state: &mut [u8],
        order: &mut Vec<usize>,
        skip: &mut HashMap<usize, Vec<usize>>,
    ) {
        state[i] = 1;
        for (r, reference) in nodes[i].analysis.references.iter().enumerate() {
            if let Target::File { index, .. } = reference.target {
                if nodes[index].role != Role::Sheet {
                    continue;
                }
                match state[index] {
                    0 => visit(index, nodes, state, order, skip),
                    1 => skip.entry(i).or_default().push(r),
                    _ => {}
                }
            }
        }
        state[i] = 2;
        order.push(i);
    }
    for &i in &sheets {
        if state[i] == 0 {
            visit(i, nodes, &mut state, &mut order, &mut skip);
        }
    }
    for i in order {
        let skipped = skip.remove(&i).unwrap_or_default();
        for &r in &skipped {
            let node = &nodes[i];
            let found = &node.analysis.references[r].found;
            let text = node.text.as_deref().unwrap_or_default();
            warnings.push(Warning {
                file: node.file.path.clone(),
                line: rewrite::line_of(text, found.start),
                url: text[found.start..found.end].to_owned(),
                reason: "closes an @import cycle; left as written".into(),
            });
        }
        let text = nodes[i].text.as_deref().unwrap_or_default();
        let content = encode(
            rewrite::apply(text, &nodes[i].analysis, &FinalNames { nodes }, &skipped),
            nodes[i].latin1,
        );
        let sha = hash::sha256(&content);
        let node = &mut nodes[i];
        node.sha = Some(sha);
        node.size = content.len() as u64;
        if node.pool == Pool::Ours {
            let hashed = url::hashed_path(&node.file.path, &hash::hex(&sha)[..NAME_HEX]);
            node.written = pool_content(root, &hashed, &content)?;
            node.hashed = Some(hashed);
        }
        node.content = Some(content);
    }
    Ok(())
}

/// Pages last: every name they reference is final.
fn rewrite_pages(nodes: &mut [Node]) {
    // A stylesheet we rewrote has new content: an `integrity` naming it
    // must follow.
    let integrity: HashMap<usize, String> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.role == Role::Sheet)
        .filter_map(|(i, n)| n.sha.map(|sha| (i, hash::integrity(&sha))))
        .collect();
    let pages: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].role == Role::Page)
        .collect();
    for i in pages {
        let text = nodes[i].text.as_deref().unwrap_or_default();
        let names = WithIntegrity {
            names: FinalNames { nodes },
            integrity: &integrity,
        };
        let content = encode(
            rewrite::apply(text, &nodes[i].analysis, &names, &[]),
            nodes[i].latin1,
        );
        let node = &mut nodes[i];
        node.sha = Some(hash::sha256(&content));
        node.size = content.len() as u64;
        node.content = Some(content);
    }
}

/// A rewritten text as bytes: UTF-8, or one byte per char for a file that
/// was not UTF-8 (the rewrite only inserts ASCII).
fn encode(text: String, latin1: bool) -> Vec<u8> {
    if latin1 {
        text.chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
            .collect()
    } else {
        text.into_bytes()
    }
}

fn manifest(nodes: &[Node]) -> Manifest {
    let files = nodes
        .iter()
        .map(|node| {
            let sha = node.sha.expect("every file is hashed by now");
            (
                node.file.path.clone(),
                ManifestEntry {
                    hashed: node.hashed.clone(),
                    sha256: hash::hex(&sha),
                    size: node.size,
                    integrity: hash::integrity(&sha),
                },
            )
        })
        .collect();
    Manifest { format: 1, files }
}

/// Builds `releases/ID` under `tmp/` and renames it into place.
fn build_release(root: &Root, nodes: &[Node], manifest: &[u8], meta: &ReleaseMeta) -> Result<()> {
    let staging = root.tmp_path("release");
    let site = staging.join("site");
    let in_release: Vec<&Node> = nodes.iter().filter(|n| n.pool != Pool::Named).collect();
    let folders: HashSet<&str> = in_release
        .iter()
        .map(|n| url::parent(&n.file.path))
        .collect();
    fs::create_dir_all(&site).map_err(|e| io_failed("creating", &site, e))?;
    for folder in folders {
        let dir = site.join(folder);
        fs::create_dir_all(&dir).map_err(|e| io_failed("creating", &dir, e))?;
    }
    let pool = root.pool();
    let results = parallel(&in_release, |node| -> Result<()> {
        let dest = site.join(&node.file.path);
        if let Some(hashed) = &node.hashed {
            // The same bytes as the pool file: share them.
            let source = pool.join(hashed);
            if fs::hard_link(&source, &dest).is_ok() {
                return Ok(());
            }
        }
        match (&node.content, &node.hashed) {
            (Some(content), _) => write_new(&dest, content),
            (None, Some(hashed)) => copy_new(&pool.join(hashed), &dest),
            (None, None) => copy_new(&node.file.abs, &dest),
        }
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

/// Remembers the hashes of the plain files of a folder source.
fn save_cache(
    root: &Root,
    nodes: &[Node],
    old: &StatCache,
    fresh: &HashSet<usize>,
    started: SystemTime,
) {
    let mut cache = StatCache::default();
    for (i, node) in nodes.iter().enumerate() {
        if node.role != Role::Plain {
            continue;
        }
        let Some(sha) = node.sha else { continue };
        // A file pooled from fresh content may differ from what was
        // stat'ed before; only cache what the key describes.
        let key: FileKey = node.file.key;
        if fresh.contains(&i) || old.get(&node.file.abs, &key) == Some(sha) {
            cache.insert(node.file.abs.clone(), key, sha, started);
        }
    }
    if !cache.same_as(old) {
        let _ = root.write_atomic(&root.cache_path(), cache.to_text().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the hashing and rewriting steps over a small build.
    fn build(files: &[(&str, &str)]) -> (Vec<Node>, Vec<Warning>) {
        let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_bytes())).collect();
        build_bytes(&files)
    }

    /// [`build`] for files that need not be UTF-8.
    fn build_bytes(files: &[(&str, &[u8])]) -> (Vec<Node>, Vec<Warning>) {
        let src = TempDir::new("unit-src").unwrap();
        for (path, content) in files {
            let file = src.path.join(path);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, content).unwrap();
        }
        let dir = TempDir::new("unit-root").unwrap();
        let root = Root::create(&dir.path.join("root")).unwrap();
        let _lock = root.lock(Duration::ZERO).unwrap();
        let mut warnings = Vec::new();
        let mut nodes = plan(source::walk(&src.path, "src").unwrap(), &mut warnings).unwrap();
        make_pool_folders(&root, &nodes).unwrap();
        hash_plain_files(
            &root,
            &mut nodes,
            &StatCache::default(),
            &HashMap::new(),
            &mut warnings,
        )
        .unwrap();
        rewrite_sheets(&root, &mut nodes, &mut warnings).unwrap();
        rewrite_pages(&mut nodes);
        (nodes, warnings)
    }

    fn node<'a>(nodes: &'a [Node], path: &str) -> &'a Node {
        nodes.iter().find(|n| n.file.path == path).unwrap()
    }

    fn text(node: &Node) -> &str {
        std::str::from_utf8(node.content.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn leaves_first_so_a_name_covers_the_names_inside() {
        let files = [
            (
                "index.html",
                r#"<link rel="stylesheet" href="css/a.css"><script src="/assets/app-Xy12Ab34.js"></script>"#,
            ),
            (
                "css/a.css",
                r#"@import "b.css"; .a{background:url('../img/c.png')}"#,
            ),
            ("css/b.css", ".b{background:url(../img/c.png)}"),
            ("img/c.png", "PNG c"),
            ("assets/app-Xy12Ab34.js", "js"),
            ("robots.txt", "nothing references me"),
        ];
        let (nodes, warnings) = build(&files);
        assert!(warnings.is_empty(), "{warnings:?}");
        let c = node(&nodes, "img/c.png").hashed.clone().unwrap();
        let b = node(&nodes, "css/b.css").hashed.clone().unwrap();
        let a = node(&nodes, "css/a.css").hashed.clone().unwrap();
        assert_eq!(
            c,
            format!(
                "img/c-{}.png",
                &hash::hex(&hash::sha256(b"PNG c"))[..NAME_HEX]
            )
        );
        let c_name = c.rsplit('/').next().unwrap();
        let b_name = b.rsplit('/').next().unwrap();
        assert_eq!(
            text(node(&nodes, "css/b.css")),
            format!(".b{{background:url(../img/{c_name})}}")
        );
        assert_eq!(
            text(node(&nodes, "css/a.css")),
            format!(r#"@import "{b_name}"; .a{{background:url('../img/{c_name}')}}"#)
        );
        // Each stylesheet's name is the hash of its rewritten text.
        for (path, hashed) in [("css/a.css", &a), ("css/b.css", &b)] {
            let sha = hash::sha256(node(&nodes, path).content.as_deref().unwrap());
            assert!(hashed.contains(&hash::hex(&sha)[..NAME_HEX]), "{path}");
        }
        let page = text(node(&nodes, "index.html"));
        assert!(page.contains(&format!(r#"href="{a}""#)), "{page}");
        // The bundler's name is kept, and pooled under it.
        assert!(page.contains(r#"src="/assets/app-Xy12Ab34.js""#), "{page}");
        assert_eq!(
            node(&nodes, "assets/app-Xy12Ab34.js").hashed.as_deref(),
            Some("assets/app-Xy12Ab34.js")
        );
        // Nothing references robots.txt: it stays in the release only.
        assert_eq!(node(&nodes, "robots.txt").hashed, None);
        assert_eq!(node(&nodes, "index.html").hashed, None);
    }

    #[test]
    fn a_change_in_a_leaf_renames_everything_above_it() {
        let files = |c: &'static str| {
            [
                ("index.html", r#"<link rel="stylesheet" href="a.css">"#),
                ("a.css", r#"@import "b.css";"#),
                ("b.css", ".b{background:url(c.png)}"),
                ("c.png", c),
            ]
        };
        let (one, _) = build(&files("one"));
        let (two, _) = build(&files("two"));
        for path in ["a.css", "b.css", "c.png"] {
            assert_ne!(node(&one, path).hashed, node(&two, path).hashed, "{path}");
        }
    }

    #[test]
    fn a_page_that_is_not_utf8_is_rewritten_byte_for_byte() {
        let (nodes, warnings) = build_bytes(&[
            ("index.html", b"<p>caf\xe9</p><img src=\"a.png\">\xff"),
            ("a.png", b"png"),
        ]);
        let hash = &hash::hex(&hash::sha256(b"png"))[..NAME_HEX];
        assert_eq!(
            node(&nodes, "index.html").content.as_deref().unwrap(),
            format!("<p>caf\u{e9}</p><img src=\"a-{hash}.png\">\u{ff}")
                .chars()
                .map(|c| c as u8)
                .collect::<Vec<u8>>()
        );
        assert!(warnings.is_empty());
    }

    #[test]
    fn an_import_cycle_is_a_warning_not_a_hang() {
        let (nodes, warnings) = build(&[
            ("index.html", r#"<link rel="stylesheet" href="a.css">"#),
            ("a.css", r#"@import "b.css";"#),
            ("b.css", r#"@import "a.css";"#),
        ]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].reason.contains("cycle"));
        assert!(node(&nodes, "a.css").hashed.is_some() && node(&nodes, "b.css").hashed.is_some());
    }
}
