//! Files a bundler already named by their content, which keep their names.
//!
//! Vite/Rollup write `index-BXIyRxgv.js` (8 URL-safe base64 characters),
//! webpack `main.8a3c4d2e.js` or `main.8a3c4d2e.chunk.js`, Angular
//! `main.3f2a1b4c5d6e7f80.js`. Their code loads other chunks by those
//! names at run time, so renaming them would break the application, and
//! hashing them again would add nothing. They go into the pool under
//! their own names, which is what keeps an old page's lazy chunks loadable
//! after a new release goes live.
//!
//! A name counts as hashed when a `-` or `.` separated part of it looks
//! like a digest: 8 or more characters of `[A-Za-z0-9_-]` that mix digits
//! and letters, or upper and lower case (so `bundle`, `20240101` and
//! `settings` do not). When the build carries a Vite or webpack manifest
//! (`.vite/manifest.json`, `manifest.json`, `asset-manifest.json`), the
//! files it lists count with any 8+ character part, since the bundler
//! vouches for them.
//!
//! A wrong guess is safe: if a later build has different content under a
//! name the pool already holds, that file is published as an ordinary file
//! of the release instead (with a warning), and the web server, which
//! looks in the live release before the pool, serves the new content.

use std::collections::HashSet;

use serde_json::Value;

/// Where bundlers put their manifests, relative to the build's root.
pub const MANIFESTS: [&str; 3] = [
    ".vite/manifest.json",
    "manifest.json",
    "asset-manifest.json",
];

/// Whether the build path `path` is named with a content hash; `listed`
/// says a bundler manifest names it.
pub fn is_hashed_name(path: &str, listed: bool) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let stem = match name.rfind('.') {
        Some(i) if i > 0 => &name[..i],
        _ => return false,
    };
    let mut candidates: Vec<&str> = Vec::new();
    for (i, part) in stem.split('.').enumerate() {
        if i > 0 {
            candidates.push(part);
        }
        if let Some((_, tail)) = part.rsplit_once('-') {
            candidates.push(tail);
        }
        // Rollup's hash may itself hold `-`: take its fixed 8 characters.
        if part.len() > 9 && part.is_char_boundary(part.len() - 8) {
            let (head, tail) = part.split_at(part.len() - 8);
            if head.ends_with('-') {
                candidates.push(tail);
            }
        }
    }
    candidates.into_iter().any(|c| looks_like_digest(c, listed))
}

fn looks_like_digest(part: &str, lenient: bool) -> bool {
    if part.len() < 8
        || !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return false;
    }
    if lenient {
        return true;
    }
    let digit = part.bytes().any(|b| b.is_ascii_digit());
    let letter = part.bytes().any(|b| b.is_ascii_alphabetic());
    let upper = part.bytes().any(|b| b.is_ascii_uppercase());
    let lower = part.bytes().any(|b| b.is_ascii_lowercase());
    (digit && letter) || (upper && lower)
}

/// The build paths a bundler manifest lists: every string in it that,
/// without a leading `/` or `./`, is a path of the build.
pub fn listed_in_manifest(
    manifest: &[u8],
    is_build_path: &dyn Fn(&str) -> bool,
) -> HashSet<String> {
    let mut listed = HashSet::new();
    let Ok(value) = serde_json::from_slice::<Value>(manifest) else {
        return listed;
    };
    let mut pending = vec![&value];
    while let Some(value) = pending.pop() {
        match value {
            Value::String(text) => {
                let path = text.trim_start_matches("./").trim_start_matches('/');
                if is_build_path(path) {
                    listed.insert(path.to_owned());
                }
            }
            Value::Array(items) => pending.extend(items),
            Value::Object(fields) => pending.extend(fields.values()),
            _ => {}
        }
    }
    listed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_bundler_names() {
        for hashed in [
            "assets/index-BXIyRxgv.js",
            "assets/vendor-D9f_-x1Q.js",
            "assets/index-6e0a4e0b.css",
            "static/js/main.8a3c4d2e.js",
            "static/js/787.8a3c4d2e.chunk.js",
            "main.3f2a1b4c5d6e7f80.js",
            "img/logo-0123456789abcdef.png",
        ] {
            assert!(is_hashed_name(hashed, false), "{hashed}");
        }
        for plain in [
            "index.html",
            "js/app.js",
            "js/bundle.js",
            "css/settings-page.css",
            "img/photo-20240101.jpg",
            "jquery-3.6.0.min.js",
            "img/icon-192x192.png",
            "fonts/LICENSE",
            "assets/index-abcdefgh.js",
        ] {
            assert!(!is_hashed_name(plain, false), "{plain}");
        }
        // A manifest vouches for a lowercase-only hash.
        assert!(is_hashed_name("assets/index-abcdefgh.js", true));
        assert!(!is_hashed_name("assets/index.js", true));
    }

    #[test]
    fn reads_vite_and_webpack_manifests() {
        let build = [
            "assets/index-abcdefgh.js",
            "assets/index-abcdefgh.css",
            "static/js/main.js",
        ];
        let is_build_path = |p: &str| build.contains(&p);
        let vite = br#"{"index.html":{"file":"assets/index-abcdefgh.js","css":["assets/index-abcdefgh.css"],"isEntry":true}}"#;
        let listed = listed_in_manifest(vite, &is_build_path);
        assert!(listed.contains("assets/index-abcdefgh.js"));
        assert!(listed.contains("assets/index-abcdefgh.css"));
        let webpack =
            br#"{"files":{"main.js":"/static/js/main.js"},"entrypoints":["static/js/main.js"]}"#;
        assert_eq!(
            listed_in_manifest(webpack, &is_build_path),
            HashSet::from(["static/js/main.js".to_string()])
        );
        assert!(listed_in_manifest(b"not json", &is_build_path).is_empty());
    }
}
