//! The build being published: a folder's regular files, checked before
//! anything is written.
//!
//! Only regular files and folders are accepted. A symbolic link is
//! refused rather than followed, because it can point outside the build
//! (publishing `/etc/passwd` as a static asset is one `ln -s` away) and
//! because the same file under two names would be published twice under
//! two meanings. A hard link is accepted: it is a regular file under
//! another name, each name is published as a file of the build (its
//! content stored once, like any content two files share), and it reaches
//! nothing its maker could not have copied in. File names must be UTF-8:
//! they become URLs and manifest keys.

use std::fs;
use std::path::{Path, PathBuf};

use zdd_core::{Error, Result};

use crate::hash::FileKey;

/// One file of the build.
#[derive(Debug, Clone)]
pub struct BuildFile {
    /// Its path in the build, `/`-separated: `css/app.css`.
    pub path: String,
    /// Where it is on disk.
    pub abs: PathBuf,
    pub key: FileKey,
}

impl BuildFile {
    pub fn size(&self) -> u64 {
        self.key.size
    }
}

/// Every regular file under `dir`, sorted by path. A usage error names the
/// first thing that is not a regular file or folder.
pub fn walk(dir: &Path, shown_as: &str) -> Result<Vec<BuildFile>> {
    let meta = fs::metadata(dir)
        .map_err(|e| Error::Usage(format!("cannot read the source {shown_as}: {e}")))?;
    if !meta.is_dir() {
        return Err(Error::Usage(format!(
            "the source {shown_as} is not a directory"
        )));
    }
    let mut files = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((abs_dir, rel_dir)) = pending.pop() {
        let entries = fs::read_dir(&abs_dir)
            .map_err(|e| Error::Usage(format!("cannot read {}: {e}", shown(shown_as, &rel_dir))))?;
        for entry in entries {
            let entry = entry.map_err(|e| {
                Error::Usage(format!("cannot read {}: {e}", shown(shown_as, &rel_dir)))
            })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(Error::Usage(format!(
                    "{} has a file name that is not UTF-8 ({:?}); names become URLs",
                    shown(shown_as, &rel_dir),
                    name
                )));
            };
            let rel = if rel_dir.is_empty() {
                name.to_owned()
            } else {
                format!("{rel_dir}/{name}")
            };
            let abs = entry.path();
            let meta = fs::symlink_metadata(&abs)
                .map_err(|e| Error::Usage(format!("cannot read {}: {e}", shown(shown_as, &rel))))?;
            let kind = meta.file_type();
            if kind.is_symlink() {
                let target = fs::read_link(&abs)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "?".into());
                return Err(Error::Usage(format!(
                    "the source has a symbolic link: {} -> {target}; zdd-assets publishes \
                     regular files only (a link can point outside the build)",
                    shown(shown_as, &rel)
                )));
            } else if kind.is_dir() {
                pending.push((abs, rel));
            } else if kind.is_file() {
                files.push(BuildFile {
                    path: rel,
                    abs,
                    key: FileKey::of(&meta),
                });
            } else {
                return Err(Error::Usage(format!(
                    "the source has {} which is neither a regular file nor a folder",
                    shown(shown_as, &rel)
                )));
            }
        }
    }
    if files.is_empty() {
        return Err(Error::Usage(format!(
            "the source {shown_as} holds no files"
        )));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn shown(source: &str, rel: &str) -> String {
    if rel.is_empty() {
        source.to_owned()
    } else {
        format!("{}/{rel}", source.trim_end_matches('/'))
    }
}

/// A folder under the system's temporary directory, removed when dropped
/// (also when the publish fails).
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(what: &str) -> Result<TempDir> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "zdd-assets-{what}-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path)
            .map_err(|e| Error::Failed(format!("creating {}: {e}", path.display())))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_regular_files_and_refuses_links() {
        let tmp = TempDir::new("walk-test").unwrap();
        let dir = &tmp.path;
        fs::create_dir_all(dir.join("css/deep")).unwrap();
        fs::write(dir.join("index.html"), "x").unwrap();
        fs::write(dir.join("css/deep/a.css"), "y").unwrap();
        let files = walk(dir, "site").unwrap();
        let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["css/deep/a.css", "index.html"]);
        assert_eq!(files[0].size(), 1);

        std::os::unix::fs::symlink("/etc/passwd", dir.join("css/passwd")).unwrap();
        let err = walk(dir, "site").unwrap_err();
        assert!(
            err.to_string()
                .contains("symbolic link: site/css/passwd -> /etc/passwd"),
            "{err}"
        );
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn an_empty_source_is_refused() {
        let tmp = TempDir::new("walk-empty").unwrap();
        assert!(walk(&tmp.path, "x")
            .unwrap_err()
            .to_string()
            .contains("no files"));
        assert!(walk(&tmp.path.join("nope"), "nope").is_err());
    }
}
