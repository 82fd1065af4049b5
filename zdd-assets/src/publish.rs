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
//! 3. **Leaves first** ([`crate::leaves`], then [`crate::build`]). Every
//!    file that is not a stylesheet we rewrite is hashed, on every core;
//!    the ones HTML or CSS reference go into the pool as `name-<hash>.ext`,
//!    bundler-hashed ones under their own name, the rest into the objects.
//!    Then stylesheets, each after the stylesheets it imports, then the
//!    pages.
//! 4. **The manifest** (build path → hashed path, sha256, size, SRI) names
//!    the release: its id is the time plus the manifest's hash, so the same
//!    build published again finds its release and reuses it.
//! 5. **The release folder** (the whole build at its paths, every file a
//!    hard link to its pool file or object, see [`crate::store`]) is
//!    built under `tmp/` and renamed into `releases/` whole.
//! 6. **The switch**: sync, then the live symlink is replaced by
//!    `rename(2)`. Until that instant the old release is live and complete;
//!    after it the new one is. Killing the process anywhere leaves one or
//!    the other.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use zdd_core::cli::Progress;
use zdd_core::{Error, Result};

use crate::build::{self, Node, Pool, Role};
use crate::cache::StatCache;
use crate::keep::KeepNames;
use crate::leaves;
use crate::meter::Meter;
use crate::record::ReleaseRecord;
use crate::rewrite::Warning;
use crate::root::{Activation, ReleaseMeta, Root, RootState};
use crate::source::{self, BuildFile, TempDir};
use crate::store::{self, Placed};
use crate::{hash, image, time};

/// What `publish` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub source: String,
    pub root: PathBuf,
    pub activate: bool,
    pub strict: bool,
    pub rehash: bool,
    pub lock_wait: Duration,
    /// `--keep-name` patterns.
    pub keep: Vec<String>,
    /// At most one progress line per this long.
    pub progress_every: Duration,
}

/// Publishes `options.source` into `options.root`.
pub async fn publish(options: &Options, progress: Progress) -> Result<ReleaseRecord> {
    let started = SystemTime::now();
    let keep = KeepNames::new(&options.keep)?;
    let state = Root::inspect(&options.root)?;

    // 1. The source, checked whole before anything is written.
    let (files, _unpacked, cacheable) =
        read_source(&options.source, &options.root, progress).await?;
    let mut warnings = Vec::new();
    let mut nodes = build::plan(files, &keep, &mut warnings)?;
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
    let known = leaves::known_pool_hashes(
        &root,
        live_before.as_deref(),
        releases.last().map(|l| l.id.as_str()),
    );
    let cache = if cacheable && !options.rehash {
        StatCache::load(&root.cache_path())
    } else {
        StatCache::default()
    };
    store::make_pool_folders(&root, build::pooled_paths(&nodes))?;
    let meter = Meter::new(
        progress,
        options.progress_every,
        nodes.len() as u64,
        nodes.iter().map(|n| n.file.size()).sum(),
    );
    let fresh = leaves::hash_plain_files(&root, &mut nodes, &cache, &known, &meter, &mut warnings)?;
    build::rewrite_sheets(&root, &mut nodes, &meter, &mut warnings)?;
    build::rewrite_pages(&root, &mut nodes, &meter)?;

    // 4. The manifest names the release.
    let manifest_bytes = build::manifest(&nodes).to_bytes();
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
            store::build_release(&root, &placed(&root, &nodes), &manifest_bytes, &meta)?;
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
    let outcome = Outcome {
        id,
        reused,
        created,
        switched,
        live_before,
        started,
    };
    record(options, &root, &nodes, warnings, outcome, progress)
}

/// What the publish did, for its record.
struct Outcome {
    id: String,
    reused: bool,
    created: Option<String>,
    switched: bool,
    live_before: Option<String>,
    started: SystemTime,
}

/// The `asset_release` record, and the summary line on stderr.
fn record(
    options: &Options,
    root: &Root,
    nodes: &[Node],
    warnings: Vec<Warning>,
    outcome: Outcome,
    progress: Progress,
) -> Result<ReleaseRecord> {
    let (id, switched, reused) = (outcome.id.clone(), outcome.switched, outcome.reused);
    let live_before = &outcome.live_before;

    let pooled: Vec<&Node> = nodes.iter().filter(|n| n.hashed.is_some()).collect();
    let new: Vec<&&Node> = pooled.iter().filter(|n| n.written).collect();
    let stored: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.hashed.is_none() && n.written)
        .collect();
    let live = root.live_release()?.as_deref() == Some(id.as_str());
    let record = ReleaseRecord {
        id: id.clone(),
        root: root.dir.display().to_string(),
        live,
        previous: live_before.clone().filter(|p| switched && *p != id),
        switched: Some(switched),
        source: Some(options.source.clone()),
        created: outcome.created.clone(),
        reused: Some(reused),
        files: Some(nodes.len() as u64),
        bytes: Some(nodes.iter().map(|n| n.size).sum()),
        pooled: Some(pooled.len() as u64),
        new_files: Some(new.len() as u64),
        reused_files: Some((pooled.len() - new.len()) as u64),
        new_bytes: Some(new.iter().map(|n| n.size).sum()),
        stored_files: Some(stored.len() as u64),
        stored_bytes: Some(stored.iter().map(|n| n.size).sum()),
        warnings: Some(warnings.clone()),
        ..ReleaseRecord::default()
    };
    for warning in &warnings {
        progress.warn(format_args!(
            "{}:{}: `{}` {}",
            warning.file, warning.line, warning.url, warning.reason
        ));
    }
    let elapsed = outcome.started.elapsed().unwrap_or_default().as_secs_f64();
    progress.info(format_args!(
        "{} {id}: {} files, {} pooled ({} new, {} already there), {} stored anew{} in {elapsed:.2}s",
        if reused {
            "reused release"
        } else {
            "published"
        },
        nodes.len(),
        pooled.len(),
        new.len(),
        pooled.len() - new.len(),
        stored.len(),
        match (switched, live, live_before) {
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

/// Where each file of the release folder takes its content from.
fn placed<'a>(root: &Root, nodes: &'a [Node]) -> Vec<Placed<'a>> {
    let pool = root.pool();
    nodes
        .iter()
        .filter(|n| n.pool != Pool::Named)
        .map(|n| Placed {
            path: &n.file.path,
            from: match &n.hashed {
                Some(hashed) => pool.join(hashed),
                None => root.object(&n.sha.expect("every file is hashed by now")),
            },
        })
        .collect()
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
        // A file stored from fresh content may differ from what was
        // stat'ed before; only cache what the key describes.
        let key = node.file.key;
        if fresh.contains(&i) || old.get(&node.file.abs, &key) == Some(sha) {
            cache.insert(node.file.abs.clone(), key, sha, started);
        }
    }
    if !cache.same_as(old) {
        let _ = root.write_atomic(&root.cache_path(), cache.to_text().as_bytes());
    }
}
