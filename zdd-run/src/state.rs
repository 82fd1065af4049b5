//! Where zdd keeps state on a host.
//!
//! One place per host, not per working directory: two deploys of a service
//! started from two folders must find the same lock. `ZDD_STATE_DIR` wins;
//! root uses `/var/lib/zdd` (the FHS place for a program's state); anyone
//! else `$XDG_STATE_HOME/zdd`, by default `~/.local/state/zdd`.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zdd_core::{Error, Result};

/// The state directory, from the environment (not created).
pub fn state_dir() -> Result<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    state_dir_from(
        var("ZDD_STATE_DIR").map(PathBuf::from),
        is_root(),
        var("XDG_STATE_HOME").map(PathBuf::from),
        var("HOME").map(PathBuf::from),
    )
}

/// [`state_dir`] with its inputs given, for tests.
pub fn state_dir_from(
    explicit: Option<PathBuf>,
    root: bool,
    xdg_state_home: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir);
    }
    if root {
        return Ok(PathBuf::from("/var/lib/zdd"));
    }
    if let Some(xdg) = xdg_state_home.filter(|p| p.is_absolute()) {
        return Ok(xdg.join("zdd"));
    }
    match home {
        Some(home) => Ok(home.join(".local/state/zdd")),
        None => Err(Error::Usage(
            "no place for zdd's state: set ZDD_STATE_DIR (or HOME)".into(),
        )),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Creates `dir` (and its parents) private to the user: mode 0700, also
/// when it already existed with a wider mode.
pub fn private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::Usage(format!("cannot create {}: {e}", dir.display())))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::Usage(format!("cannot make {} private: {e}", dir.display())))
}

pub use zdd_core::names::sanitize as file_safe;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_dir_is_per_host_not_per_working_directory() {
        let home = Some(PathBuf::from("/home/ann"));
        let xdg = Some(PathBuf::from("/home/ann/state"));
        assert_eq!(
            state_dir_from(Some("/srv/zdd".into()), true, xdg.clone(), home.clone()).unwrap(),
            PathBuf::from("/srv/zdd")
        );
        assert_eq!(
            state_dir_from(None, true, xdg.clone(), home.clone()).unwrap(),
            PathBuf::from("/var/lib/zdd")
        );
        assert_eq!(
            state_dir_from(None, false, xdg, home.clone()).unwrap(),
            PathBuf::from("/home/ann/state/zdd")
        );
        // A relative XDG_STATE_HOME is invalid by the spec: ignored.
        assert_eq!(
            state_dir_from(None, false, Some("rel".into()), home).unwrap(),
            PathBuf::from("/home/ann/.local/state/zdd")
        );
        let err = state_dir_from(None, false, None, None).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
