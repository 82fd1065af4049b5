//! The stat cache (`ROOT/cache`): the sha256 of each file of a folder
//! source by device, inode, size, mtime and ctime, so that an unchanged
//! build is published again without being read.
//!
//! A file whose device, inode, size, modification and change times all
//! equal the cached ones has the cached hash, as `git status` and `make`
//! assume. The change time (`ctime`) cannot be set back by a program, so
//! `touch -d` cannot fool it. A file changed within the same clock tick as
//! it was hashed could still look unchanged, so entries younger than
//! [`RACY`] are never stored ("racily clean" in git's words); they are
//! simply hashed again next time. The cache is only a speed-up: `--rehash`
//! ignores it, and a damaged cache is ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::hash::{hex, parse_hex, FileKey, Sha};

/// Entries changed less than this long before the publish started are not
/// cached (see the module docs).
pub const RACY: Duration = Duration::from_secs(2);

/// Whether the file changed too close to `started` to be cached.
fn racy(key: &FileKey, started: SystemTime) -> bool {
    let started_ns = started
        .checked_sub(RACY)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    key.mtime_ns >= started_ns || key.ctime_ns >= started_ns
}

const CACHE_HEADER: &str = "zdd-assets stat cache 1";

/// Hashes of source files by path and [`FileKey`].
#[derive(Debug, Default)]
pub struct StatCache {
    entries: HashMap<PathBuf, (FileKey, Sha)>,
}

impl StatCache {
    /// Loads the cache; a missing or damaged file is an empty cache.
    pub fn load(path: &Path) -> Self {
        let Ok(text) = std::fs::read_to_string(path) else {
            return StatCache::default();
        };
        let mut lines = text.lines();
        if lines.next() != Some(CACHE_HEADER) {
            return StatCache::default();
        }
        let mut entries = HashMap::new();
        for line in lines {
            let mut fields = line.splitn(7, ' ');
            let mut next = || fields.next();
            let parsed = (|| {
                let sha = parse_hex(next()?)?;
                let key = FileKey {
                    size: next()?.parse().ok()?,
                    mtime_ns: next()?.parse().ok()?,
                    ctime_ns: next()?.parse().ok()?,
                    dev: next()?.parse().ok()?,
                    ino: next()?.parse().ok()?,
                };
                Some((PathBuf::from(next()?), (key, sha)))
            })();
            match parsed {
                Some((path, entry)) => {
                    entries.insert(path, entry);
                }
                None => return StatCache::default(),
            }
        }
        StatCache { entries }
    }

    pub fn get(&self, path: &Path, key: &FileKey) -> Option<Sha> {
        match self.entries.get(path) {
            Some((cached, sha)) if cached == key => Some(*sha),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records a hash unless the file is too fresh to trust its times.
    pub fn insert(&mut self, path: PathBuf, key: FileKey, sha: Sha, started: SystemTime) {
        if !racy(&key, started) {
            self.entries.insert(path, (key, sha));
        }
    }

    /// Whether this cache holds exactly the entries of `other`.
    pub fn same_as(&self, other: &StatCache) -> bool {
        self.entries == other.entries
    }

    /// The cache as text (written by the caller through a temporary file).
    pub fn to_text(&self) -> String {
        let mut entries: Vec<_> = self.entries.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = String::with_capacity(entries.len() * 160 + 32);
        out.push_str(CACHE_HEADER);
        out.push('\n');
        for (path, (key, sha)) in entries {
            let Some(path) = path.to_str().filter(|p| !p.contains('\n')) else {
                continue;
            };
            out.push_str(&format!(
                "{} {} {} {} {} {} {path}\n",
                hex(sha),
                key.size,
                key.mtime_ns,
                key.ctime_ns,
                key.dev,
                key.ino
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_round_trips_and_skips_fresh_files() {
        let key = |mtime_ns| FileKey {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns,
            ctime_ns: mtime_ns,
        };
        let now = SystemTime::now();
        let now_ns = now.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i128;
        let mut cache = StatCache::default();
        cache.insert(
            "/a b/old".into(),
            key(now_ns - 10_000_000_000),
            [7; 32],
            now,
        );
        cache.insert("/fresh".into(), key(now_ns - 1_000_000), [8; 32], now);
        assert_eq!(cache.len(), 1);
        let dir =
            std::env::temp_dir().join(format!("zdd-assets-cache-test-{}", std::process::id()));
        std::fs::write(&dir, cache.to_text()).unwrap();
        let loaded = StatCache::load(&dir);
        std::fs::remove_file(&dir).unwrap();
        assert!(loaded.same_as(&cache));
        assert_eq!(
            loaded.get(Path::new("/a b/old"), &key(now_ns - 10_000_000_000)),
            Some([7; 32])
        );
        assert_eq!(loaded.get(Path::new("/a b/old"), &key(now_ns)), None);
    }
}
