//! What each reference of an HTML or CSS file names, and the file's text
//! with hashed names put in.
//!
//! [`analyse`] runs before anything is hashed: it decides, for every
//! reference, whether it names a file of the build (and where its hash
//! will be inserted), an HTML page (pages keep their names: they are the
//! entry points), or nothing we serve (left alone), and turns the rest
//! into warnings. [`apply`] runs once the hashes of a file's targets are
//! known, which is why files are processed leaves first.

use serde::Serialize;

use crate::refs::{Found, Syntax};
use crate::{css, html, url};

/// A problem with one reference; the reference is left as it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The file holding the reference, as a build path.
    pub file: String,
    /// 1-based line of the reference.
    pub line: usize,
    /// The reference as written.
    pub url: String,
    pub reason: String,
}

/// One reference and what it names.
#[derive(Debug, Clone)]
pub struct Reference {
    pub found: Found,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Not a file of this build (`https:`, `data:`, `#…`) or unresolved
    /// (with a warning): left alone.
    Outside,
    /// An HTML page of the build: pages keep their names.
    Page,
    /// A file of the build, by index; `insert_at` is the byte offset in the
    /// referring file where `-<hash>` goes (`None`: cannot be rewritten,
    /// with a warning).
    File {
        index: usize,
        insert_at: Option<usize>,
    },
}

/// What [`analyse`] found in one file.
#[derive(Debug, Default)]
pub struct Analysis {
    pub references: Vec<Reference>,
    /// `(element, start, end)` spans of `integrity` attributes.
    pub integrity: Vec<(usize, usize, usize)>,
}

/// The build as the analysis needs it.
pub trait Build {
    /// The index of the file at a build path.
    fn lookup(&self, path: &str) -> Option<usize>;
    /// Whether the file at `index` is an HTML page.
    fn is_page(&self, index: usize) -> bool;
}

/// Finds and resolves the references of the file `path` (HTML when `html`,
/// else CSS) with content `text`.
pub fn analyse(
    path: &str,
    text: &str,
    html: bool,
    build: &dyn Build,
    warnings: &mut Vec<Warning>,
) -> Analysis {
    let own_dir = url::parent(path);
    let mut analysis = Analysis::default();
    let (found, base_dir) = if html {
        let scan = html::scan(text);
        analysis.integrity = scan.integrity;
        let base_dir = match scan.base {
            None => Ok(own_dir.to_owned()),
            Some((s, e)) => base_folder(own_dir, &text[s..e]).ok_or_else(|| Warning {
                file: path.to_owned(),
                line: line_of(text, s),
                url: text[s..e].to_owned(),
                reason: "relative references cannot be resolved against this <base href>; \
                         they are left as they are"
                    .into(),
            }),
        };
        (scan.found, base_dir)
    } else {
        let mut found = Vec::new();
        css::scan(text, 0, &mut found);
        (found, Ok(own_dir.to_owned()))
    };
    let mut base_warned = false;
    for found in found {
        let raw = &text[found.start..found.end];
        let mut warn = |reason: String| {
            warnings.push(Warning {
                file: path.to_owned(),
                line: line_of(text, found.start),
                url: raw.to_owned(),
                reason,
            })
        };
        let target = match url::split_local(raw) {
            None => Target::Outside,
            Some((raw_path, _)) => {
                let base = match (&base_dir, raw_path.starts_with('/')) {
                    (_, true) => "",
                    (Ok(dir), false) => dir.as_str(),
                    (Err(warning), false) => {
                        if !base_warned {
                            warnings.push(warning.clone());
                            base_warned = true;
                        }
                        analysis.references.push(Reference {
                            found,
                            target: Target::Outside,
                        });
                        continue;
                    }
                };
                resolve(raw_path, base, found.syntax, build, &mut warn)
            }
        };
        analysis.references.push(Reference { found, target });
    }
    analysis
}

fn resolve(
    raw_path: &str,
    base: &str,
    syntax: Syntax,
    build: &dyn Build,
    warn: &mut dyn FnMut(String),
) -> Target {
    let Some(decoded) = syntax.decode(raw_path) else {
        warn("its escapes do not decode to UTF-8".into());
        return Target::Outside;
    };
    let path = match url::resolve(base, &decoded) {
        Ok(path) => path,
        Err(why) => {
            warn(why.describe().into());
            return Target::Outside;
        }
    };
    let Some(index) = build.lookup(&path) else {
        warn(format!("no file {path} in the build"));
        return Target::Outside;
    };
    if build.is_page(index) {
        return Target::Page;
    }
    let name = path.rsplit('/').next().unwrap_or(&path);
    let decode = |text: &str| syntax.decode(text);
    let insert_at = url::insertion_point(raw_path, name, &decode);
    if insert_at.is_none() {
        warn(format!(
            "escapes hide where the name of {path} ends; it is left as written"
        ));
    }
    Target::File { index, insert_at }
}

/// The folder relative references resolve against under `<base href>`;
/// `None` for a base with a scheme or host (the build cannot tell what
/// that serves).
fn base_folder(own_dir: &str, href: &str) -> Option<String> {
    let decoded = Syntax::Html.decode(href)?;
    if decoded.starts_with("//") || url::has_scheme(&decoded) {
        return None;
    }
    let path = decoded.split(['?', '#']).next().unwrap_or_default();
    let folder = if path.ends_with('/') || path.is_empty() {
        path
    } else {
        url::parent(path)
    };
    let mut segments: Vec<&str> = if folder.starts_with('/') {
        Vec::new()
    } else {
        own_dir.split('/').filter(|s| !s.is_empty()).collect()
    };
    for segment in folder.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop()?;
            }
            other => segments.push(other),
        }
    }
    Some(segments.join("/"))
}

/// The 1-based line holding byte `offset`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// What the rewrite needs to know about each target, once it is final.
pub trait Names {
    /// The hash to insert for the file at `index`, or `None` when it keeps
    /// its name (a bundler's hashed name, a file served from the release).
    fn hash(&self, index: usize) -> Option<&str>;
    /// The Subresource Integrity of the file at `index` when its content is
    /// not the source's (a rewritten stylesheet), so that an `integrity`
    /// attribute naming it must change.
    fn rewritten_integrity(&self, index: usize) -> Option<&str>;
}

/// `text` with every rewritable reference given its hashed name.
/// References listed in `skip` (by position in `analysis.references`) are
/// left alone (an `@import` cycle).
pub fn apply(text: &str, analysis: &Analysis, names: &dyn Names, skip: &[usize]) -> String {
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for (i, reference) in analysis.references.iter().enumerate() {
        let Target::File { index, insert_at } = reference.target else {
            continue;
        };
        if skip.contains(&i) {
            continue;
        }
        if let (Some(at), Some(hash)) = (insert_at, names.hash(index)) {
            edits.push((
                reference.found.start + at,
                reference.found.start + at,
                format!("-{hash}"),
            ));
        }
    }
    for &(element, start, end) in &analysis.integrity {
        let target = analysis.references.iter().find_map(|r| match r.target {
            Target::File { index, .. }
                if r.found.element == Some(element) && matches!(r.found.what, "src" | "href") =>
            {
                Some(index)
            }
            _ => None,
        });
        if let Some(sri) = target.and_then(|index| names.rewritten_integrity(index)) {
            edits.push((start, end, sri.to_owned()));
        }
    }
    if edits.is_empty() {
        return text.to_owned();
    }
    edits.sort_by_key(|e| (e.0, e.1));
    let mut out = String::with_capacity(text.len() + edits.len() * 20);
    let mut at = 0;
    for (start, end, replacement) in edits {
        if start < at {
            continue; // overlapping edits cannot happen; be safe anyway
        }
        out.push_str(&text[at..start]);
        out.push_str(&replacement);
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Files(Vec<&'static str>);

    impl Build for Files {
        fn lookup(&self, path: &str) -> Option<usize> {
            self.0.iter().position(|p| *p == path)
        }
        fn is_page(&self, index: usize) -> bool {
            self.0[index].ends_with(".html")
        }
    }

    struct Hashes(HashMap<usize, &'static str>, HashMap<usize, &'static str>);

    impl Names for Hashes {
        fn hash(&self, index: usize) -> Option<&str> {
            self.0.get(&index).copied()
        }
        fn rewritten_integrity(&self, index: usize) -> Option<&str> {
            self.1.get(&index).copied()
        }
    }

    const FILES: [&str; 9] = [
        "index.html",
        "about.html",
        "css/app.css",
        "css/base.css",
        "img/logo.png",
        "img/logo@2x.png",
        "fonts/a b.woff2",
        "assets/index-BXIyRxgv.js",
        "js/app.js",
    ];

    fn rewrite(path: &str, text: &str, hashes: &[(usize, &'static str)]) -> (String, Vec<Warning>) {
        let build = Files(FILES.to_vec());
        let mut warnings = Vec::new();
        let analysis = analyse(path, text, path.ends_with(".html"), &build, &mut warnings);
        let names = Hashes(hashes.iter().copied().collect(), HashMap::new());
        (apply(text, &analysis, &names, &[]), warnings)
    }

    #[test]
    fn html_references_get_hashed_names_and_keep_their_form() {
        let (out, warnings) = rewrite(
            "index.html",
            r#"<link rel="stylesheet" href="css/app.css?v=1">
<link rel="modulepreload" href="/assets/index-BXIyRxgv.js">
<img src="./img/logo.png#x" srcset="img/logo.png 1x, /img/logo@2x.png 2x">
<a href="about.html">about</a><iframe src="about.html"></iframe>
<script src="js/app.js"></script>"#,
            &[(2, "aaaa"), (4, "bbbb"), (5, "cccc"), (8, "dddd")],
        );
        assert_eq!(
            out,
            r#"<link rel="stylesheet" href="css/app-aaaa.css?v=1">
<link rel="modulepreload" href="/assets/index-BXIyRxgv.js">
<img src="./img/logo-bbbb.png#x" srcset="img/logo-bbbb.png 1x, /img/logo@2x-cccc.png 2x">
<a href="about.html">about</a><iframe src="about.html"></iframe>
<script src="js/app-dddd.js"></script>"#
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn data_absolute_and_fragment_urls_are_untouched() {
        let text = r##"<img src="data:image/png;base64,iVBORw0KGgo="><img src="https://cdn.example/x.png">
<img src="//cdn.example/y.png"><use href="#icon"/><link rel=icon href="">"##;
        let (out, warnings) = rewrite("index.html", text, &[]);
        assert_eq!(out, text);
        assert!(warnings.is_empty(), "{warnings:?}");
        let css = r##"a{background:url(data:image/svg+xml;utf8,<svg/>)} b{background:url("#f")} c{background:url(https://x/y.png)}"##;
        let (out, warnings) = rewrite("css/app.css", css, &[]);
        assert_eq!(out, css);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn css_references_resolve_from_the_stylesheet() {
        let (out, warnings) = rewrite(
            "css/app.css",
            r#"@import "base.css"; @import url('./base.css');
body{background:url(../img/logo.png) no-repeat}
@font-face{src:url("../fonts/a%20b.woff2") format("woff2"), url(../fonts/a\ b.woff2)}"#,
            &[(3, "1111"), (4, "2222"), (6, "3333")],
        );
        assert_eq!(
            out,
            r#"@import "base-1111.css"; @import url('./base-1111.css');
body{background:url(../img/logo-2222.png) no-repeat}
@font-face{src:url("../fonts/a%20b-3333.woff2") format("woff2"), url(../fonts/a\ b-3333.woff2)}"#
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn bundler_names_are_kept() {
        // A file that keeps its name has no hash to insert.
        let (out, _) = rewrite(
            "index.html",
            r#"<script type="module" src="/assets/index-BXIyRxgv.js"></script>"#,
            &[],
        );
        assert_eq!(
            out,
            r#"<script type="module" src="/assets/index-BXIyRxgv.js"></script>"#
        );
    }

    #[test]
    fn unresolved_references_are_warnings_and_left_alone() {
        let text = "<img src=\"img/missing.png\">\n<img src=\"../outside.png\">\n<link rel=stylesheet href=\"css/\">";
        let (out, warnings) = rewrite("index.html", text, &[]);
        assert_eq!(out, text);
        let summary: Vec<_> = warnings
            .iter()
            .map(|w| (w.line, w.url.as_str(), w.reason.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (1, "img/missing.png", "no file img/missing.png in the build"),
                (
                    2,
                    "../outside.png",
                    "climbs out of the build (`..` above its root)"
                ),
                (3, "css/", "names a folder, not a file"),
            ]
        );
    }

    #[test]
    fn base_href_changes_the_folder() {
        let (out, warnings) = rewrite(
            "about.html",
            r#"<base href="/img/"><img src="logo.png"><link rel=stylesheet href="/css/app.css">"#,
            &[(2, "aa"), (4, "bb")],
        );
        assert_eq!(
            out,
            r#"<base href="/img/"><img src="logo-bb.png"><link rel=stylesheet href="/css/app-aa.css">"#
        );
        assert!(warnings.is_empty());
        let (_, warnings) = rewrite(
            "index.html",
            r#"<base href="https://cdn.example/"><img src="a.png"><img src="b.png">"#,
            &[],
        );
        assert_eq!(
            warnings.len(),
            1,
            "one warning for the base, not one per image"
        );
    }

    #[test]
    fn integrity_follows_a_rewritten_file() {
        let build = Files(FILES.to_vec());
        let text = r#"<link rel="stylesheet" href="css/app.css" integrity="sha384-old" crossorigin>
<script src="js/app.js" integrity="sha384-keep"></script>"#;
        let mut warnings = Vec::new();
        let analysis = analyse("index.html", text, true, &build, &mut warnings);
        let names = Hashes(
            HashMap::from([(2, "aa"), (8, "bb")]),
            HashMap::from([(2, "sha256-NEW=")]),
        );
        assert_eq!(
            apply(text, &analysis, &names, &[]),
            r#"<link rel="stylesheet" href="css/app-aa.css" integrity="sha256-NEW=" crossorigin>
<script src="js/app-bb.js" integrity="sha384-keep"></script>"#
        );
    }

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
    }
}
