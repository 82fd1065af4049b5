//! The build context as a canonical tar, and the content hash that names a
//! release.
//!
//! The release tag is derived from what is built, not from when or where:
//! building the same tree twice, from two checkouts with different mtimes,
//! owners or umasks, must give the same tag, so that an unchanged service is
//! not rebuilt and not redeployed, and a rollback finds the old image under
//! its old name. So the tar is canonical:
//!
//! - entries in a fixed order (each directory's entries sorted by name
//!   bytes, a directory before what is in it);
//! - mtime 0, uid/gid 0, no user or group names;
//! - modes normalised: files 0644, or 0755 if any execute bit is set;
//!   directories 0755; symlinks 0777;
//! - symlinks stored as symlinks (never followed), hard links as plain
//!   files, sockets/FIFOs/devices left out (with a warning).
//!
//! Which files go in follows the docker CLI: `.dockerignore` (see
//! [`crate::dockerignore`]), with the Dockerfile and `.dockerignore` always
//! sent. The same bytes are hashed and sent to the engine, so the hash is
//! exactly what the engine built from. (The archive is held in memory: a
//! build context is source code and assets, and `.dockerignore` is where
//! large build outputs belong.)
//!
//! The context hash also covers what else decides the image: the
//! Dockerfile's path and the build arguments (see
//! [`context_hash`]). A different `--build-arg` is a different release.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};
use zdd_core::{Error, Result};

use crate::dockerignore::{MatchInfo, Matcher};

/// The name of the ignore file at the root of the context.
pub const DOCKERIGNORE: &str = ".dockerignore";

/// A build context, archived.
#[derive(Debug, Clone)]
pub struct Archive {
    /// The tar stream, uncompressed, exactly as it is hashed and sent.
    pub tar: Vec<u8>,
    /// How many entries (files, directories, symlinks) it holds.
    pub entries: usize,
    /// Paths left out because a tar cannot carry them (sockets, FIFOs,
    /// devices), relative to the context.
    pub skipped: Vec<String>,
}

/// Archives the directory `root` as the docker CLI would send it for a
/// build with Dockerfile `dockerfile` (relative to `root`, `/`-separated).
///
/// Every failure here is a usage error (exit 2) naming the path: an
/// unreadable file or directory, a bad `.dockerignore`.
pub fn archive(root: &Path, dockerfile: &str) -> Result<Archive> {
    let matcher = ignore_matcher(root, dockerfile)?;
    let mut walker = Walker {
        matcher,
        builder: tar::Builder::new(Vec::new()),
        entries: 0,
        skipped: Vec::new(),
    };
    walker.walk(root, Path::new(""), None)?;
    let tar = walker
        .builder
        .into_inner()
        .map_err(|e| Error::Failed(format!("cannot write the context archive: {e}")))?;
    Ok(Archive {
        tar,
        entries: walker.entries,
        skipped: walker.skipped,
    })
}

/// The `.dockerignore` of `root`, with the exceptions the docker CLI adds
/// so the Dockerfile and the `.dockerignore` itself are always sent.
fn ignore_matcher(root: &Path, dockerfile: &str) -> Result<Matcher> {
    let path = root.join(DOCKERIGNORE);
    let text = match fs::read(&path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| Error::Usage(format!("{}: not UTF-8 text", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Matcher::default()),
        Err(e) => return Err(Error::Usage(format!("cannot read {}: {e}", path.display()))),
    };
    let mut matcher =
        Matcher::parse(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
    let keep = |matcher: &mut Matcher, name: &str| -> Result<()> {
        if matcher.matches(name) {
            matcher.push(0, &format!("!{name}")).map_err(|e| {
                Error::Usage(format!(
                    "{}: cannot keep {name} in the context: {e}",
                    path.display()
                ))
            })?;
        }
        Ok(())
    };
    keep(&mut matcher, DOCKERIGNORE)?;
    keep(&mut matcher, dockerfile)?;
    Ok(matcher)
}

struct Walker {
    matcher: Matcher,
    builder: tar::Builder<Vec<u8>>,
    entries: usize,
    skipped: Vec<String>,
}

impl Walker {
    /// Adds what is in `dir` (whose path in the archive is `rel`), given
    /// `dir`'s own ignore results.
    fn walk(&mut self, dir: &Path, rel: &Path, parent: Option<&MatchInfo>) -> Result<()> {
        let unreadable = |e: std::io::Error| {
            Error::Usage(format!("cannot read directory {}: {e}", dir.display()))
        };
        let mut names = fs::read_dir(dir)
            .map_err(unreadable)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(unreadable)?;
        names.sort();

        for name in names {
            let path = dir.join(&name);
            let rel_path = rel.join(&name);
            let rel_text = rel_path.to_string_lossy().into_owned();
            let meta = fs::symlink_metadata(&path)
                .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
            let kind = meta.file_type();
            let (excluded, info) = self.matcher.evaluate(&rel_text, parent);
            if excluded {
                // An excluded directory is still walked (without an entry
                // of its own) when an exception names something below it.
                if kind.is_dir()
                    && self.matcher.has_exceptions()
                    && self.matcher.may_reinclude_below(&rel_text)
                {
                    self.walk(&path, &rel_path, Some(&info))?;
                }
                continue;
            }
            if kind.is_dir() {
                self.append(EntryType::Directory, 0o755, &dir_name(&rel_path), &[])?;
                self.walk(&path, &rel_path, Some(&info))?;
            } else if kind.is_file() {
                let data = fs::read(&path)
                    .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
                let mode = if meta.permissions().mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                self.append(EntryType::Regular, mode, &rel_path, &data)?;
            } else if kind.is_symlink() {
                let target = fs::read_link(&path)
                    .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
                let mut header = header(EntryType::Symlink, 0o777, 0);
                self.builder
                    .append_link(&mut header, &rel_path, &target)
                    .map_err(|e| archive_error(&rel_text, e))?;
                self.entries += 1;
            } else {
                self.skipped.push(rel_text);
            }
        }
        Ok(())
    }

    fn append(&mut self, kind: EntryType, mode: u32, path: &Path, data: &[u8]) -> Result<()> {
        let mut header = header(kind, mode, data.len() as u64);
        self.builder
            .append_data(&mut header, path, data)
            .map_err(|e| archive_error(&path.to_string_lossy(), e))?;
        self.entries += 1;
        Ok(())
    }
}

/// A header with everything but the type, mode and size fixed.
fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// `a/b` → `a/b/`, as the docker CLI names directory entries.
fn dir_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("/");
    PathBuf::from(name)
}

fn archive_error(path: &str, e: std::io::Error) -> Error {
    Error::Usage(format!("cannot add {path} to the context archive: {e}"))
}

/// What besides the files decides the image a build produces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildInputs {
    /// The Dockerfile's path in the context, `/`-separated.
    pub dockerfile: String,
    /// `--build-arg`s, by name.
    pub build_args: BTreeMap<String, String>,
}

/// The full content hash (64 hex digits) of a build: sha256 over the tar
/// bytes, a separator, and a JSON description of `inputs` (Dockerfile
/// path, build args sorted by name). JSON strings make the
/// encoding unambiguous whatever the values contain.
pub fn context_hash(tar: &[u8], inputs: &BuildInputs) -> String {
    let description = serde_json::json!({
        "dockerfile": inputs.dockerfile,
        "build_args": inputs
            .build_args
            .iter()
            .map(|(k, v)| [k.as_str(), v.as_str()])
            .collect::<Vec<_>>(),
    });
    let mut hasher = Sha256::new();
    hasher.update(tar);
    hasher.update(b"\0zdd-build/1\0");
    hasher.update(description.to_string().as_bytes());
    hex(&hasher.finalize())
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, SystemTime};

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "zdd-build-unit-{}-{tag}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn write(&self, rel: &str, data: &str) -> PathBuf {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, data).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn set_mtime(path: &Path, secs: u64) {
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// The sample tree, its files modified at `secs`, with group write
    /// permission or none (only the execute bits must matter).
    fn sample(tag: &str, secs: u64, group_writable: bool) -> Scratch {
        let s = Scratch::new(tag);
        let files = [
            ("Dockerfile", "FROM scratch\nCOPY . /app\n"),
            ("src/main.rs", "fn main() {}\n"),
            ("src/lib/util.rs", "pub fn f() {}\n"),
            ("run.sh", "#!/bin/sh\necho hi\n"),
            ("README.md", "hello\n"),
        ];
        for (rel, data) in files {
            let path = s.write(rel, data);
            set_mtime(&path, secs);
            chmod(&path, if group_writable { 0o664 } else { 0o600 });
        }
        chmod(
            &s.0.join("run.sh"),
            if group_writable { 0o775 } else { 0o700 },
        );
        symlink("src/main.rs", s.0.join("link")).unwrap();
        s
    }

    fn hash_of(dir: &Path) -> String {
        let archive = archive(dir, "Dockerfile").unwrap();
        context_hash(&archive.tar, &BuildInputs::default())
    }

    fn names(dir: &Path) -> Vec<String> {
        let archive = archive(dir, "Dockerfile").unwrap();
        let mut reader = tar::Archive::new(&archive.tar[..]);
        reader
            .entries()
            .unwrap()
            .map(|e| entry_name(&e.unwrap()))
            .collect()
    }

    fn entry_name(entry: &tar::Entry<'_, &[u8]>) -> String {
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        path.trim_end_matches('/').to_owned()
    }

    #[test]
    fn same_tree_same_hash_whatever_the_mtimes_and_modes() {
        let a = sample("a", 1_000_000, false);
        let b = sample("b", 1_700_000_000, true);
        let tar_a = archive(&a.0, "Dockerfile").unwrap();
        let tar_b = archive(&b.0, "Dockerfile").unwrap();
        assert_eq!(tar_a.tar, tar_b.tar);
        assert_eq!(tar_a.entries, 8);
        assert_eq!(hash_of(&a.0), hash_of(&b.0));
        assert_eq!(hash_of(&a.0).len(), 64);
    }

    #[test]
    fn entries_are_sorted_and_normalised() {
        let s = sample("n", 5, true);
        assert_eq!(
            names(&s.0),
            [
                "Dockerfile",
                "README.md",
                "link",
                "run.sh",
                "src",
                "src/lib",
                "src/lib/util.rs",
                "src/main.rs",
            ]
        );
        let archive = archive(&s.0, "Dockerfile").unwrap();
        let mut reader = tar::Archive::new(&archive.tar[..]);
        for entry in reader.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            let path = entry_name(&entry);
            assert_eq!(h.mtime().unwrap(), 0, "{path}");
            assert_eq!(h.uid().unwrap(), 0, "{path}");
            assert_eq!(h.gid().unwrap(), 0, "{path}");
            assert_eq!(h.username().unwrap(), Some(""), "{path}");
            let want = match path.as_str() {
                "run.sh" | "src" | "src/lib" => 0o755,
                "link" => 0o777,
                _ => 0o644,
            };
            assert_eq!(h.mode().unwrap(), want, "{path}");
            if path == "link" {
                assert_eq!(h.entry_type(), EntryType::Symlink);
                assert_eq!(h.link_name().unwrap().unwrap(), Path::new("src/main.rs"));
            }
        }
    }

    #[test]
    fn any_change_changes_the_hash() {
        let s = sample("c", 7, false);
        let base = hash_of(&s.0);

        s.write("README.md", "hellO\n");
        let byte = hash_of(&s.0);
        assert_ne!(byte, base, "a changed byte");

        chmod(&s.0.join("README.md"), 0o700);
        let exec = hash_of(&s.0);
        assert_ne!(exec, byte, "an exec bit");

        s.write("src/new.rs", "");
        let new_file = hash_of(&s.0);
        assert_ne!(new_file, exec, "a new file");

        fs::create_dir(s.0.join("empty")).unwrap();
        assert_ne!(hash_of(&s.0), new_file, "a new directory");
    }

    #[test]
    fn ignored_files_do_not_change_the_hash() {
        let s = sample("i", 9, false);
        s.write(".dockerignore", "*.log\ntarget\n");
        let base = hash_of(&s.0);
        s.write("debug.log", "noise");
        s.write("target/debug/app", "binary");
        assert_eq!(hash_of(&s.0), base);
        assert!(!names(&s.0)
            .iter()
            .any(|n| n.contains("log") || n.contains("target")));
        // But a file that is not ignored does.
        s.write("debug.txt", "noise");
        assert_ne!(hash_of(&s.0), base);
    }

    #[test]
    fn dockerfile_and_dockerignore_are_always_sent() {
        let s = sample("d", 9, false);
        s.write(".dockerignore", "*\n!src\n");
        s.write("docker/api.Dockerfile", "FROM scratch\n");
        let names_default = names(&s.0);
        assert!(names_default.contains(&"Dockerfile".to_owned()));
        assert!(names_default.contains(&".dockerignore".to_owned()));
        assert!(names_default.contains(&"src/main.rs".to_owned()));
        assert!(!names_default.contains(&"README.md".to_owned()));

        // A Dockerfile under an excluded directory: the directory is walked
        // for it, without an entry of its own.
        let archive = archive(&s.0, "docker/api.Dockerfile").unwrap();
        let mut reader = tar::Archive::new(&archive.tar[..]);
        let got: Vec<String> = reader
            .entries()
            .unwrap()
            .map(|e| entry_name(&e.unwrap()))
            .collect();
        assert!(got.contains(&"docker/api.Dockerfile".to_owned()), "{got:?}");
        assert!(!got.contains(&"docker".to_owned()), "{got:?}");
        assert!(!got.contains(&"Dockerfile".to_owned()), "{got:?}");
    }

    #[test]
    fn exceptions_reach_into_excluded_directories() {
        let s = sample("e", 9, false);
        s.write(".dockerignore", "vendor\n!vendor/keep.txt\n");
        s.write("vendor/keep.txt", "k");
        s.write("vendor/drop.txt", "d");
        let got = names(&s.0);
        assert!(got.contains(&"vendor/keep.txt".to_owned()), "{got:?}");
        assert!(!got.contains(&"vendor/drop.txt".to_owned()), "{got:?}");
    }

    #[test]
    fn build_inputs_change_the_hash() {
        let tar = b"same bytes";
        let base = BuildInputs {
            dockerfile: "Dockerfile".into(),
            ..Default::default()
        };
        let h = context_hash(tar, &base);
        let mut with_arg = base.clone();
        with_arg.build_args.insert("MODE".into(), "prod".into());
        let mut other_arg = base.clone();
        other_arg.build_args.insert("MODE".into(), "dev".into());
        let mut other_file = base.clone();
        other_file.dockerfile = "Dockerfile.prod".into();
        let all = [
            h.clone(),
            context_hash(tar, &with_arg),
            context_hash(tar, &other_arg),
            context_hash(tar, &other_file),
        ];
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                assert_ne!(all[i], all[j], "{i} vs {j}");
            }
        }
        assert_eq!(context_hash(tar, &base), h);
    }

    #[test]
    fn a_bad_dockerignore_is_a_usage_error_naming_it() {
        let s = sample("b", 9, false);
        s.write(".dockerignore", "ok\n[broken\n");
        let err = archive(&s.0, "Dockerfile").unwrap_err();
        assert_eq!(err.exit_code(), zdd_core::exit::USAGE);
        assert!(err.to_string().contains(".dockerignore: line 2"), "{err}");
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x01, 0xab, 0xff]), "01abff");
    }
}
