//! Helpers for the `zdd-assets` tests: the test sites, a real nginx
//! started per test, and a checker for "every file the live page
//! references exists". Scratch folders, running the binary and the HTTP
//! client are the workspace's shared ones (`zdd-e2e`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
#[allow(unused_imports)] // each test binary uses part of it
pub use zdd_e2e::{binary, free_port, http_request, Response, Run, Scratch};

/// Writes `files` (path, content) under `dir`, replacing what was there.
pub fn write_site(dir: &Path, files: &[(&str, Vec<u8>)]) {
    let _ = std::fs::remove_dir_all(dir);
    for (path, content) in files {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }
}

/// A small site: HTML + CSS that references images and fonts + JS. `v`
/// changes the theme stylesheet, the background image and the app
/// script; the logo, the font and the bundler-hashed vendor chunk are the
/// same in every version.
pub fn site(v: u32) -> Vec<(&'static str, Vec<u8>)> {
    let index = format!(
        r#"<!doctype html>
<html><head>
<title>v{v}</title>
<link rel="stylesheet" href="css/app.css">
<link rel="modulepreload" href="/assets/vendor-Ab3dE5f7.js">
<link rel="icon" href="/favicon.ico">
<script type="module" src="js/app.js"></script>
</head><body>
<img src="img/logo.png" srcset="img/logo.png 1x, img/logo@2x.png 2x" alt="logo">
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt="">
<a href="https://example.com/">elsewhere</a> <a href="\#top">top</a>
</body></html>
"#
    );
    vec![
        ("index.html", index.into_bytes()),
        (
            "css/app.css",
            b"@import \"theme.css\";\nbody { background: url(../img/bg.png) repeat; }\n\
              @font-face { font-family: F; src: url(\"../fonts/f.woff2\") format(\"woff2\"); }\n"
                .to_vec(),
        ),
        (
            "css/theme.css",
            format!("h1 {{ color: #{v:06x}; }}\n").into_bytes(),
        ),
        (
            "img/logo.png",
            b"\x89PNG logo, the same in every version".to_vec(),
        ),
        ("img/logo@2x.png", b"\x89PNG logo at 2x".to_vec()),
        (
            "img/bg.png",
            format!("\x7fPNG background v{v}").into_bytes(),
        ),
        (
            "fonts/f.woff2",
            b"wOF2 font, the same in every version".to_vec(),
        ),
        (
            "js/app.js",
            format!("console.log('app v{v}');\n").into_bytes(),
        ),
        (
            "assets/vendor-Ab3dE5f7.js",
            b"export const vendor = 1;\n".to_vec(),
        ),
        ("favicon.ico", b"ICO".to_vec()),
        ("robots.txt", b"User-agent: *\n".to_vec()),
    ]
}

pub fn bin() -> PathBuf {
    binary("zdd-assets")
}

/// Runs `zdd-assets ARGS`.
pub fn zdd(args: &[&str]) -> Run {
    zdd_e2e::run("zdd-assets", args, "")
}

/// `zdd-assets publish SOURCE --root ROOT -q`, which must succeed.
pub fn publish(source: &Path, root: &Path) -> Value {
    zdd(&["publish", s(source), "--root", s(root), "-q"])
        .ok()
        .record()
}

pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A release's manifest.
pub fn manifest(root: &Path, id: &str) -> Value {
    let text =
        std::fs::read_to_string(root.join("releases").join(id).join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The pool paths a manifest lists.
pub fn hashed_paths(manifest: &Value) -> Vec<String> {
    manifest["files"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|e| e["hashed"].as_str().map(str::to_owned))
        .collect()
}

/// The id the live pointer names.
pub fn live_id(root: &Path) -> Option<String> {
    let target = std::fs::read_link(root.join("live")).ok()?;
    let text = target.to_str()?.to_owned();
    Some(
        text.strip_prefix("releases/")?
            .strip_suffix("/site")?
            .to_owned(),
    )
}

/// Every file under `dir`, as `/`-separated relative paths.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((abs, rel)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&abs) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if entry.file_type().unwrap().is_dir() {
                pending.push((entry.path(), child));
            } else {
                out.push(child);
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------- references

/// The local references of an HTML page or stylesheet, as written: the
/// values of `src`, `href` (on `<link>`), `srcset` candidates, CSS `url()`
/// and `@import "…"`. A deliberately independent, simple scanner: the test
/// sites quote every attribute with `"`.
pub fn references(text: &str, html: bool) -> Vec<String> {
    let mut refs = Vec::new();
    if html {
        for tag in text.split('<').skip(1) {
            let tag = tag.split('>').next().unwrap_or_default();
            let name = tag
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            for attr in ["src", "href", "srcset"] {
                if attr == "href" && name != "link" {
                    continue;
                }
                let Some(value) = attribute(tag, attr) else {
                    continue;
                };
                if attr == "srcset" {
                    for candidate in value.split(',') {
                        if let Some(url) = candidate.split_whitespace().next() {
                            refs.push(url.to_owned());
                        }
                    }
                } else {
                    refs.push(value.to_owned());
                }
            }
        }
    } else {
        let mut rest = text;
        while let Some(i) = rest.find("url(") {
            rest = &rest[i + 4..];
            let end = rest.find(')').unwrap();
            refs.push(rest[..end].trim().trim_matches(['"', '\'']).to_owned());
        }
        let mut rest = text;
        while let Some(i) = rest.find("@import \"") {
            rest = &rest[i + 9..];
            let end = rest.find('"').unwrap();
            refs.push(rest[..end].to_owned());
        }
    }
    refs.retain(|r| {
        !(r.is_empty()
            || r.starts_with('#')
            || r.starts_with("data:")
            || r.starts_with("http:")
            || r.starts_with("https:")
            || r.starts_with("//"))
    });
    refs
}

fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    let end = tag[at..].find('"')? + at;
    Some(&tag[at..end])
}

/// `reference` (as written in the file at `from`) as a site path:
/// query and fragment dropped, resolved against `from`'s folder.
pub fn site_path(from: &str, reference: &str) -> String {
    let path = reference.split(['?', '#']).next().unwrap();
    let mut segments: Vec<&str> = if path.starts_with('/') {
        Vec::new()
    } else {
        from.rsplit_once('/')
            .map_or(Vec::new(), |(dir, _)| dir.split('/').collect())
    };
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    segments.join("/")
}

/// Every site path the live `index.html` needs, following stylesheets,
/// with where nginx would find each (live release first, then the pool).
/// Errors name what is missing.
pub fn live_needs(root: &Path) -> Result<BTreeMap<String, PathBuf>, String> {
    let live = root.join("live");
    let pool = root.join("pool");
    let find = |path: &str| -> Option<PathBuf> {
        [live.join(path), pool.join(path)]
            .into_iter()
            .find(|p| p.is_file())
    };
    let index = std::fs::read_to_string(live.join("index.html"))
        .map_err(|e| format!("live/index.html: {e}"))?;
    let mut needed = BTreeMap::new();
    let mut pending: Vec<(String, String)> = references(&index, true)
        .into_iter()
        .map(|r| ("index.html".to_string(), r))
        .collect();
    while let Some((from, reference)) = pending.pop() {
        let path = site_path(&from, &reference);
        if needed.contains_key(&path) {
            continue;
        }
        let Some(file) = find(&path) else {
            return Err(format!(
                "{from} references {reference} ({path}), which is missing"
            ));
        };
        if path.ends_with(".css") {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{path}: {e}"))?;
            pending.extend(
                references(&text, false)
                    .into_iter()
                    .map(|r| (path.clone(), r)),
            );
        }
        needed.insert(path, file);
    }
    Ok(needed)
}

// ---------------------------------------------------------------- nginx

pub use zdd_e2e::Nginx;

/// A real nginx serving an asset root with the snippet `zdd-assets nginx
/// EXTRA…` prints, on a free loopback port.
pub fn nginx(root: &Path, extra: &[&str]) -> Nginx {
    let mut args = vec!["nginx", "--root", s(root)];
    args.extend(extra);
    let snippet = zdd(&args).ok().stdout;
    Nginx::start(root, &snippet, "")
}
