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
//! A name counts as hashed only where a `-` or `.` separated part of it is
//! a digest in the form a bundler writes one — not merely a mix of letters
//! and digits, since `email.compat32-message.rst.txt`, `utf8` or `v2` are
//! words, and a mutable file taken for a hashed one is served `immutable`
//! for a year:
//!
//! - lowercase hex of 8, 16, 20, 32, 40 or 64 digits, after `-` or `.`,
//!   with at least one digit and one letter: webpack (`[contenthash]` is
//!   20, `[contenthash:8]` in Create React App), Parcel (8), Angular (16),
//!   Vite 2–3 (8), Propshaft (8; 40 before 1.0), Sprockets (64);
//! - after `-`, 8 characters of esbuild's base32 (`A-Z2-7`: Angular 17+
//!   writes `main-2YQTR5BZ.js`), or of Rollup's base64 (`A-Za-z0-9_-`: Vite
//!   4+ writes `index-BXIyRxgv.js`) with an uppercase letter and not shaped
//!   like words (`Semibold`, `MyWidget`, `Chapter1`).
//!
//! When the build carries a Vite or webpack manifest
//! (`.vite/manifest.json`, `manifest.json`, `asset-manifest.json`), the
//! files it lists count with any part of those alphabets and lengths
//! (also all digits, or Rollup's base36 `a1b2c3d4`), since the bundler
//! vouches for them. A name these rules miss, or one they take wrongly,
//! can be given with `--keep-name` (see [`crate::keep`]), which serves it
//! from the release under its own name.
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

/// Hex digest lengths bundlers write (see the module docs).
const HEX_LENGTHS: [usize; 6] = [8, 16, 20, 32, 40, 64];

/// Whether the build path `path` is named with a content hash; `listed`
/// says a bundler manifest names it.
pub fn is_hashed_name(path: &str, listed: bool) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let stem = match name.rfind('.') {
        Some(i) if i > 0 => &name[..i],
        _ => return false,
    };
    let mut candidates: Vec<(&str, char)> = Vec::new();
    for (i, part) in stem.split('.').enumerate() {
        if i > 0 {
            candidates.push((part, '.'));
        }
        if let Some((_, tail)) = part.rsplit_once('-') {
            candidates.push((tail, '-'));
        }
        // Rollup's hash may itself hold `-`: take its fixed 8 characters.
        if part.len() > 9 && part.is_char_boundary(part.len() - 8) {
            let (head, tail) = part.split_at(part.len() - 8);
            if head.ends_with('-') {
                candidates.push((tail, '-'));
            }
        }
    }
    candidates
        .into_iter()
        .any(|(part, after)| is_digest(part, after, listed))
}

/// Whether `part`, written after the separator `after`, is a digest.
fn is_digest(part: &str, after: char, vouched: bool) -> bool {
    let b = part.as_bytes();
    let all = |f: fn(&u8) -> bool| b.iter().all(f);
    let any = |f: fn(&u8) -> bool| b.iter().any(f);
    if HEX_LENGTHS.contains(&b.len()) && all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return vouched || (any(u8::is_ascii_digit) && any(u8::is_ascii_lowercase));
    }
    if after != '-' || b.len() != 8 {
        return false;
    }
    if all(|c| matches!(c, b'A'..=b'Z' | b'2'..=b'7')) {
        return true; // esbuild
    }
    if !all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-')) {
        return false;
    }
    vouched || (any(u8::is_ascii_uppercase) && !word_shaped(b))
}

/// `Semibold`, `MyWidget`, `Chapter12`, `ABC`: capitalised words, then
/// perhaps a number.
fn word_shaped(b: &[u8]) -> bool {
    let mut i = 0;
    let mut words = 0;
    while i < b.len() && b[i].is_ascii_uppercase() {
        let start = i;
        i += 1;
        while i < b.len() && b[i].is_ascii_lowercase() {
            i += 1;
        }
        if i - start < 2 && !b[start..].iter().all(u8::is_ascii_uppercase) {
            return false;
        }
        words += 1;
    }
    words > 0 && b[i..].iter().all(u8::is_ascii_digit)
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
    fn recognises_the_names_bundlers_write() {
        for hashed in [
            // Vite 4+ (Rollup's base64)
            "assets/index-BXIyRxgv.js",
            "assets/vendor-D9f_-x1Q.js",
            "assets/index-CJ6sK0Xb.css",
            "assets/logo-Dk3Qx_8Z.svg",
            // Vite 2-3 (hex)
            "assets/index.6e0a4e0b.js",
            "assets/index-6e0a4e0b.css",
            // webpack, Create React App
            "static/js/main.8a3c4d2e.js",
            "static/js/787.8a3c4d2e.chunk.js",
            "static/css/main.073c9b0a.css",
            "js/app.2f7a9c1e5b3d4f60a8c1.js",
            // Angular (webpack) and Angular 17+ (esbuild)
            "main.3f2a1b4c5d6e7f80.js",
            "main-2YQTR5BZ.js",
            "chunk-TRRHJYLR.js",
            "polyfills-FFHMD2TL.js",
            // Parcel
            "index.975ef6c8.js",
            "logo.3d6d4a5c.png",
            // Propshaft, Sprockets
            "assets/application-c8b6d5a4.css",
            "assets/application-6d3e8b5c1a2f4e7d9b0c3a5f8e1d4b7a9c2e5f80.css",
            "assets/application-0c7a3e5b9f1d2c4e6a8b0d2f4e6a8c0e2f4a6c8e0b2d4f6a8c0e2f4a6c8e0b2d.js",
            // our own pool names
            "img/logo-0123456789abcdef.png",
        ] {
            assert!(is_hashed_name(hashed, false), "{hashed}");
        }
    }

    #[test]
    fn words_and_versions_are_not_hashes() {
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
            // a Sphinx site (python3.11-doc)
            "_sources/library/email.compat32-message.rst.txt",
            "library/email.compat32-message.html",
            "_static/jquery-3.6.0.js",
            "_static/underscore-1.13.1.js",
            "_static/sphinx_highlight.js",
            "_static/documentation_options.js",
            "_static/minus.png",
            "library/2to3.html",
            "_sources/howto/unicode.rst.txt",
            // words with digits
            "codecs-utf8.txt",
            "api-v2.json",
            "docs/compat32.html",
            "css/base64-encoded.css",
            "lib/sha256-helper.js",
            "data/export-12345678.csv",
            // fonts and components named like words
            "fonts/OpenSans-Semibold.ttf",
            "fonts/Inter-SemiBold.woff2",
            "icons/icon-Settings.svg",
            "components/ui-MyWidget.js",
            "docs/part-Chapter1.html",
            "cafe-deadbeef.txt",
        ] {
            assert!(!is_hashed_name(plain, false), "{plain}");
        }
        // A manifest vouches for a lowercase-only or all-digit hash, never
        // for a word.
        assert!(is_hashed_name("assets/index-abcdefgh.js", true));
        assert!(is_hashed_name("assets/index-a1b2c3d4.js", true));
        assert!(is_hashed_name("static/js/main.12345678.js", true));
        assert!(!is_hashed_name("assets/index.js", true));
        assert!(!is_hashed_name("assets/icon-192x192.png", true));
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
