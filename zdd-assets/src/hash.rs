//! Content hashes: sha256 in hex for names and manifests, base64 for
//! Subresource Integrity, and the stat cache that lets an unchanged build
//! be published again without reading it.
//!
//! The cache is what makes re-publishing cheap: a file whose device,
//! inode, size, modification and change times all equal the cached ones
//! has the cached hash, as `git status` and `make` assume. The change time
//! (`ctime`) cannot be set back by a program, so `touch -d` cannot fool
//! it. A file changed within the same clock tick as it was hashed could
//! still look unchanged, so entries younger than [`RACY`] are never
//! stored ("racily clean" in git's words); they are simply hashed again
//! next time. The cache lives in the asset root and is only a speed-up:
//! `--rehash` ignores it, and a damaged cache is ignored.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// A sha256 digest.
pub type Sha = [u8; 32];

/// Hex digits of a content hash used in a pool name: 64 bits, so that two
/// different files colliding among a million is about a 1 in 30 million
/// chance, over the whole life of an asset root.
pub const NAME_HEX: usize = 16;

/// Entries changed less than this long before the publish started are not
/// cached (see the module docs).
pub const RACY: Duration = Duration::from_secs(2);

/// Files larger than this are hashed and copied in a stream instead of
/// read whole.
pub const STREAM_ABOVE: u64 = 32 << 20;

pub fn sha256(bytes: &[u8]) -> Sha {
    Sha256::digest(bytes).into()
}

pub fn hex(sha: &Sha) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in sha {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

pub fn parse_hex(text: &str) -> Option<Sha> {
    if text.len() != 64 {
        return None;
    }
    let mut sha = [0u8; 32];
    for (i, byte) in sha.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(sha)
}

/// `sha256-<base64>`, the Subresource Integrity form.
pub fn integrity(sha: &Sha) -> String {
    format!("sha256-{}", base64(sha))
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Reads a whole file and hashes it.
pub fn read_and_hash(path: &Path) -> io::Result<(Vec<u8>, Sha)> {
    let bytes = std::fs::read(path)?;
    let sha = sha256(&bytes);
    Ok((bytes, sha))
}

/// Hashes a file in a stream, copying it to `copy` on the way if given.
pub fn stream_hash(path: &Path, mut copy: Option<&mut File>) -> io::Result<Sha> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        if let Some(out) = copy.as_mut() {
            out.write_all(&buffer[..n])?;
        }
    }
    Ok(hasher.finalize().into())
}

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileKey {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }

    /// Whether the file changed too close to `started` to be cached.
    fn racy(&self, started: SystemTime) -> bool {
        let started_ns = started
            .checked_sub(RACY)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        self.mtime_ns >= started_ns || self.ctime_ns >= started_ns
    }
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
        if !key.racy(started) {
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
    fn hex_and_sri_of_known_input() {
        let sha = sha256(b"abc");
        assert_eq!(
            hex(&sha),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(parse_hex(&hex(&sha)), Some(sha));
        // `printf abc | openssl dgst -sha256 -binary | base64`
        assert_eq!(
            integrity(&sha),
            "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }

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
