//! `nginx`: the configuration that serves an asset root.
//!
//! Two places, looked up in order:
//!
//! 1. the live release (`ROOT/live`): pages, and every file of the build
//!    at its own path, sent with `Cache-Control: no-cache`, so a browser
//!    revalidates them and sees a switch at once;
//! 2. the pool (`ROOT/pool`): hashed files of every retained release, sent
//!    `public, max-age=31536000, immutable` — the name changes whenever the
//!    content does, so a cached copy is never stale.
//!
//! A name found in neither is a 404. In particular a missing hashed file is
//! never answered with the SPA page (`--spa` serves `index.html` only for
//! paths without an extension): a script URL answered with HTML breaks the
//! page in a way a 404 does not, and a 404 is what makes a too-short
//! retention visible.
//!
//! The live release comes first so that a file of the live build always
//! wins over an older release's pool file of the same name (see
//! [`crate::bundler`] on names that merely look hashed). nginx resolves the
//! `live` symlink on every request (no `open_file_cache` here), so a switch
//! takes effect with the next request, without a reload.

use std::path::Path;

use zdd_core::{Error, Result};

/// The snippet for the asset root at `root` (an absolute path).
pub fn snippet(root: &Path, spa: bool) -> Result<String> {
    let dir = root
        .to_str()
        .ok_or_else(|| Error::Usage(format!("the asset root {} is not UTF-8", root.display())))?;
    if let Some(bad) = dir
        .chars()
        .find(|c| matches!(c, '"' | '\\' | '$') || c.is_control())
    {
        return Err(Error::Usage(format!(
            "the asset root {dir} holds `{}`, which nginx configuration cannot quote safely; \
             use a path without it",
            bad.escape_default()
        )));
    }
    let dir = dir.trim_end_matches('/');
    let fallback = if spa { "@zdd_spa" } else { "=404" };
    let mut text = format!(
        r#"# zdd-assets: serves the asset root {dir}
# Include inside a `server` block (whose `root` may be {dir}/live).
# Note: `add_header` in these locations replaces any `add_header` of the
# server block (nginx does not merge them).

# The live release: pages and the build's own paths, always revalidated.
location / {{
    root "{dir}/live";
    index index.html;
    try_files $uri $uri/ @zdd_pool;
    add_header Cache-Control "no-cache";
}}

# Hashed files of every retained release: the name is the content.
# A missing one is a 404, never the SPA page.
location @zdd_pool {{
    root "{dir}/pool";
    try_files $uri {fallback};
    add_header Cache-Control "public, max-age=31536000, immutable";
}}
"#
    );
    if spa {
        text.push_str(
            r#"
# Client-side routes (no extension) get the live index.html; a missing
# file (with an extension) stays a 404.
location @zdd_spa {
    if ($uri ~ "\.[^/]*$") {
        return 404;
    }
    rewrite ^ /index.html last;
}
"#,
        );
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_both_places_and_the_headers() {
        let text = snippet(Path::new("/srv/site/"), false).unwrap();
        assert!(text.contains(r#"root "/srv/site/live";"#), "{text}");
        assert!(text.contains(r#"root "/srv/site/pool";"#));
        assert!(text.contains("try_files $uri =404;"));
        assert!(text.contains("public, max-age=31536000, immutable"));
        assert!(!text.contains("@zdd_spa"));
        assert!(snippet(Path::new("/srv/site"), true)
            .unwrap()
            .contains("try_files $uri @zdd_spa;"));
    }

    #[test]
    fn refuses_paths_nginx_cannot_quote() {
        for bad in ["/srv/$site", "/srv/a\"b", "/srv/a\\b", "/srv/a\nb"] {
            assert_eq!(
                snippet(Path::new(bad), false).unwrap_err().exit_code(),
                2,
                "{bad}"
            );
        }
    }
}
