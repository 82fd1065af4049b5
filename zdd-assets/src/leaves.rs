//! The leaves: every file that is not rewritten (images, fonts, scripts,
//! bundler-named files, files nothing references), hashed on every core
//! and stored — in the pool when it is served by hashed name, as an object
//! otherwise (see [`crate::store`]). A file the stat cache knows is not
//! read, and not written either when its pool file or object is there.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use zdd_core::Result;

use crate::build::{Node, Pool, Role};
use crate::cache::StatCache;
use crate::hash::{self, Sha, STREAM_ABOVE};
use crate::manifest::Manifest;
use crate::meter::Meter;
use crate::rewrite::Warning;
use crate::root::{io_failed, Root};
use crate::source::BuildFile;
use crate::store::{self, parallel};

/// The sha256 of pool files named in the live and the newest release's
/// manifests, to check a bundler-named file against without reading it.
pub fn known_pool_hashes(
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
pub fn hash_plain_files(
    root: &Root,
    nodes: &mut [Node],
    cache: &StatCache,
    known: &HashMap<String, Sha>,
    meter: &Meter,
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
    let results = parallel(&jobs, |(file, pool)| {
        let result = plain(root, file, *pool, cache, known);
        meter.done(file.size());
        result
    });
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
        node.pool = Pool::for_plain(node.referenced, node.kept);
        node.sha = Some(sha);
        match plain(root, &node.file, node.pool, cache, known)? {
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
    let done = |(sha, written): (Sha, bool), hashed: Option<String>| Plain::Done {
        sha,
        hashed,
        written,
        fresh: fresh || written,
    };
    match pool {
        Pool::No => {
            let stored = store::put_file(root, file, sha, content, &|sha| root.object(sha))?;
            Ok(done(stored, None))
        }
        Pool::Ours => {
            let dest = |sha: &Sha| pool_dir.join(store::pool_name(&file.path, sha));
            let stored = store::put_file(root, file, sha, content, &dest)?;
            Ok(done(stored, Some(store::pool_name(&file.path, &stored.0))))
        }
        Pool::Named => {
            let dest: PathBuf = pool_dir.join(&file.path);
            if dest.exists() {
                let pooled = match known.get(&file.path) {
                    Some(sha) => *sha,
                    None => hash::stream_hash(&dest, None)
                        .map_err(|e| io_failed("reading", &dest, e))?,
                };
                if pooled == sha {
                    return Ok(done((sha, false), Some(file.path.clone())));
                }
                return Ok(Plain::Conflict { sha, fresh });
            }
            let stored = store::put_file(root, file, sha, content, &|_| dest.clone())?;
            Ok(done(stored, Some(file.path.clone())))
        }
    }
}
