//! `--keep-name GLOB`: files whose names a script builds from their
//! original name, which must keep it.
//!
//! Sphinx's `doctools.js` toggles an icon by testing
//! `src.substr(-9) == "minus.png"` and swapping in `plus.png`; once the
//! page says `minus-<hash>.png` that test fails and the swap names a file
//! that does not exist. A file matched here is served from the release
//! under its own name (revalidated, like a page), and references to it are
//! left as written. Every file of the build stays at its own path in the
//! release anyway, so the name the script builds is there.
//!
//! A pattern with a `/` is matched against the whole build path
//! (`_static/*.png`), one without against the file name in any folder
//! (`minus.png`, `*.png`). `*` and `?` stay within a path segment, `**`
//! crosses them.

use zdd_core::{Error, Result};

/// The `--keep-name` patterns.
#[derive(Debug, Clone, Default)]
pub struct KeepNames {
    patterns: Vec<String>,
}

impl KeepNames {
    /// Checks the patterns; an empty or absolute one is a usage error.
    pub fn new(patterns: &[String]) -> Result<KeepNames> {
        for pattern in patterns {
            if pattern.is_empty() || pattern.starts_with('/') || pattern.ends_with('/') {
                return Err(Error::Usage(format!(
                    "--keep-name `{pattern}`: give a file name or a path in the build \
                     (`minus.png`, `_static/*.png`), without a leading or trailing /"
                )));
            }
        }
        Ok(KeepNames {
            patterns: patterns.to_vec(),
        })
    }

    /// Whether the build path `path` keeps its name.
    pub fn matches(&self, path: &str) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        self.patterns.iter().any(|pattern| {
            let subject = if pattern.contains('/') { path } else { name };
            glob(pattern.as_bytes(), subject.as_bytes())
        })
    }
}

/// `*` and `?` within a segment, `**` across segments.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', b'*', rest @ ..] => {
            let rest = rest.strip_prefix(b"/").unwrap_or(rest);
            (0..=text.len()).any(|i| glob(rest, &text[i..]))
        }
        [b'*', rest @ ..] => {
            let segment = text.iter().position(|&c| c == b'/').unwrap_or(text.len());
            (0..=segment).any(|i| glob(rest, &text[i..]))
        }
        [b'?', rest @ ..] => {
            matches!(text.first(), Some(&c) if c != b'/') && glob(rest, &text[1..])
        }
        [c, rest @ ..] => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(patterns: &[&str]) -> KeepNames {
        KeepNames::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn a_name_matches_in_any_folder_a_path_from_the_root() {
        let names = keep(&["minus.png", "_static/plus*.png"]);
        assert!(names.matches("minus.png"));
        assert!(names.matches("_static/minus.png"));
        assert!(names.matches("deep/er/minus.png"));
        assert!(names.matches("_static/plus.png"));
        assert!(names.matches("_static/plus-2x.png"));
        assert!(!names.matches("other/plus.png"));
        assert!(!names.matches("_static/sub/plus.png"));
        assert!(!names.matches("_static/minus.png.bak"));
        let deep = keep(&["docs/**/*.svg", "icon-?.png"]);
        assert!(deep.matches("docs/a/b/c.svg"));
        assert!(deep.matches("docs/c.svg"));
        assert!(!deep.matches("img/c.svg"));
        assert!(deep.matches("img/icon-1.png"));
        assert!(!deep.matches("img/icon-12.png"));
    }

    #[test]
    fn refuses_patterns_that_name_no_build_path() {
        for bad in ["", "/abs.png", "dir/"] {
            let err = KeepNames::new(&[bad.to_string()]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            assert!(err.to_string().contains("--keep-name"), "{err}");
        }
    }
}
