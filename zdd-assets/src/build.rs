//! The rewrite, leaves first: what each file of the build is, and the
//! stylesheets and pages with the hashed names of what they reference put
//! in.
//!
//! [`plan`] works from the source alone (before the root is touched, so a
//! `--strict` refusal writes nothing): roles, references, and where each
//! file will be served from. Then [`crate::leaves`] hashes and stores every
//! file that is not rewritten, [`rewrite_sheets`] does the stylesheets in
//! dependency order (imports first, so a stylesheet's own hash covers the
//! names inside it), and [`rewrite_pages`] the pages, last.

use std::collections::{HashMap, HashSet};
use std::fs;

use zdd_core::{Error, Result};

use crate::hash::{self, Sha, NAME_HEX};
use crate::keep::KeepNames;
use crate::manifest::{Manifest, ManifestEntry};
use crate::meter::Meter;
use crate::rewrite::{self, Analysis, Target, Warning};
use crate::root::Root;
use crate::source::BuildFile;
use crate::{bundler, store, url};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An HTML page: rewritten, served from the release under its name.
    Page,
    /// A stylesheet we rewrite.
    Sheet,
    /// Anything else (including a bundler's stylesheet): copied as it is.
    Plain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Served from the release only.
    No,
    /// Pooled as `name-<hash>.ext`.
    Ours,
    /// Pooled under its own (bundler-hashed) name.
    Named,
}

impl Pool {
    /// Where a file that is not bundler-named goes: the pool when
    /// referenced, unless its name is kept.
    pub fn for_plain(referenced: bool, kept: bool) -> Pool {
        if referenced && !kept {
            Pool::Ours
        } else {
            Pool::No
        }
    }
}

pub struct Node {
    pub file: BuildFile,
    pub role: Role,
    pub text: Option<String>,
    /// `text` holds one char per byte of a file that is not UTF-8.
    latin1: bool,
    pub analysis: Analysis,
    pub referenced: bool,
    /// Matched by `--keep-name`: served under its own name.
    pub kept: bool,
    pub pool: Pool,
    // Filled in as the build proceeds.
    pub sha: Option<Sha>,
    pub size: u64,
    pub hashed: Option<String>,
    pub content: Option<Vec<u8>>,
    /// This publish wrote its content (to the pool, or the objects).
    pub written: bool,
}

struct Lookup<'a> {
    index: &'a HashMap<String, usize>,
    roles: &'a [Role],
}

impl rewrite::Build for Lookup<'_> {
    fn lookup(&self, path: &str) -> Option<usize> {
        self.index.get(path).copied()
    }
    fn is_page(&self, index: usize) -> bool {
        self.roles[index] == Role::Page
    }
}

struct FinalNames<'a> {
    nodes: &'a [Node],
}

impl rewrite::Names for FinalNames<'_> {
    fn hash(&self, index: usize) -> Option<&str> {
        let node = &self.nodes[index];
        match node.pool {
            Pool::Ours => {
                let hashed = node.hashed.as_deref()?;
                let (stem, _) = url::split_name(hashed.rsplit('/').next()?);
                stem.get(stem.len().checked_sub(NAME_HEX)?..)
            }
            _ => None,
        }
    }
    fn rewritten_integrity(&self, _index: usize) -> Option<&str> {
        None
    }
}

/// Integrity values of rewritten stylesheets, looked up by index.
struct WithIntegrity<'a> {
    names: FinalNames<'a>,
    integrity: &'a HashMap<usize, String>,
}

impl rewrite::Names for WithIntegrity<'_> {
    fn hash(&self, index: usize) -> Option<&str> {
        self.names.hash(index)
    }
    fn rewritten_integrity(&self, index: usize) -> Option<&str> {
        self.integrity.get(&index).map(String::as_str)
    }
}

fn is_page(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".html") || lower.ends_with(".htm")
}

fn is_sheet(path: &str) -> bool {
    path.to_ascii_lowercase().ends_with(".css")
}

/// Roles, references and pool kinds, from the source alone.
pub fn plan(
    files: Vec<BuildFile>,
    keep: &KeepNames,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<Node>> {
    let index: HashMap<String, usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.path.clone(), i))
        .collect();
    let mut listed = HashSet::new();
    for manifest in bundler::MANIFESTS {
        if let Some(&i) = index.get(manifest) {
            if let Ok(bytes) = fs::read(&files[i].abs) {
                listed.extend(bundler::listed_in_manifest(&bytes, &|p| {
                    index.contains_key(p)
                }));
            }
        }
    }
    let mut nodes: Vec<Node> = files
        .into_iter()
        .map(|file| {
            let kept = keep.matches(&file.path);
            let named = !is_page(&file.path)
                && !kept
                && bundler::is_hashed_name(&file.path, listed.contains(&file.path));
            let role = if is_page(&file.path) {
                Role::Page
            } else if is_sheet(&file.path) && !named {
                Role::Sheet
            } else {
                Role::Plain
            };
            Node {
                size: file.size(),
                file,
                role,
                text: None,
                latin1: false,
                analysis: Analysis::default(),
                referenced: false,
                kept,
                pool: if named { Pool::Named } else { Pool::No },
                sha: None,
                hashed: None,
                content: None,
                written: false,
            }
        })
        .collect();
    for node in nodes.iter_mut().filter(|n| n.role != Role::Plain) {
        let bytes = fs::read(&node.file.abs).map_err(|e| {
            Error::Usage(format!("cannot read {} of the source: {e}", node.file.path))
        })?;
        node.text = Some(match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                // Not UTF-8 (Latin-1, windows-1252, …): one char per byte,
                // which the rewrite turns back into the same bytes.
                node.latin1 = true;
                e.into_bytes().into_iter().map(char::from).collect()
            }
        });
    }
    let roles: Vec<Role> = nodes.iter().map(|n| n.role).collect();
    let lookup = Lookup {
        index: &index,
        roles: &roles,
    };
    for node in nodes.iter_mut() {
        if let Some(text) = &node.text {
            node.analysis = rewrite::analyse(
                &node.file.path,
                text,
                node.role == Role::Page,
                &lookup,
                warnings,
            );
        }
    }
    let referenced: Vec<usize> = nodes
        .iter()
        .flat_map(|n| n.analysis.references.iter())
        .filter_map(|r| match r.target {
            Target::File { index, .. } => Some(index),
            _ => None,
        })
        .collect();
    for index in referenced {
        let node = &mut nodes[index];
        node.referenced = true;
        if node.pool == Pool::No {
            node.pool = Pool::for_plain(true, node.kept);
        }
    }
    Ok(nodes)
}

/// Stylesheets in dependency order (imports first); references that close
/// an `@import` cycle are left alone, with a warning.
pub fn rewrite_sheets(
    root: &Root,
    nodes: &mut [Node],
    meter: &Meter,
    warnings: &mut Vec<Warning>,
) -> Result<()> {
    let sheets: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].role == Role::Sheet)
        .collect();
    let mut state = vec![0u8; nodes.len()];
    let mut order = Vec::new();
    let mut skip: HashMap<usize, Vec<usize>> = HashMap::new();
    fn visit(
        i: usize,
        nodes: &[Node],
        state: &mut [u8],
        order: &mut Vec<usize>,
        skip: &mut HashMap<usize, Vec<usize>>,
    ) {
        state[i] = 1;
        for (r, reference) in nodes[i].analysis.references.iter().enumerate() {
            if let Target::File { index, .. } = reference.target {
                if nodes[index].role != Role::Sheet {
                    continue;
                }
                match state[index] {
                    0 => visit(index, nodes, state, order, skip),
                    1 => skip.entry(i).or_default().push(r),
                    _ => {}
                }
            }
        }
        state[i] = 2;
        order.push(i);
    }
    for &i in &sheets {
        if state[i] == 0 {
            visit(i, nodes, &mut state, &mut order, &mut skip);
        }
    }
    for i in order {
        let skipped = skip.remove(&i).unwrap_or_default();
        for &r in &skipped {
            let node = &nodes[i];
            let found = &node.analysis.references[r].found;
            let text = node.text.as_deref().unwrap_or_default();
            warnings.push(Warning {
                file: node.file.path.clone(),
                line: rewrite::line_of(text, found.start),
                url: text[found.start..found.end].to_owned(),
                reason: "closes an @import cycle; left as written".into(),
            });
        }
        let text = nodes[i].text.as_deref().unwrap_or_default();
        let content = encode(
            rewrite::apply(text, &nodes[i].analysis, &FinalNames { nodes }, &skipped),
            nodes[i].latin1,
        );
        store_text(root, &mut nodes[i], content, meter)?;
    }
    Ok(())
}

/// Stores a rewritten stylesheet or page: in the pool under its hashed
/// name, or (a page, a kept name) as an object.
fn store_text(root: &Root, node: &mut Node, content: Vec<u8>, meter: &Meter) -> Result<()> {
    let sha = hash::sha256(&content);
    node.sha = Some(sha);
    node.size = content.len() as u64;
    if node.pool == Pool::Ours {
        let hashed = store::pool_name(&node.file.path, &sha);
        node.written = store::put_bytes(root, &root.pool().join(&hashed), &content)?;
        node.hashed = Some(hashed);
    } else {
        node.written = store::put_bytes(root, &root.object(&sha), &content)?;
    }
    node.content = Some(content);
    meter.done(node.size);
    Ok(())
}

/// Pages last: every name they reference is final.
pub fn rewrite_pages(root: &Root, nodes: &mut [Node], meter: &Meter) -> Result<()> {
    // A stylesheet we rewrote has new content: an `integrity` naming it
    // must follow.
    let integrity: HashMap<usize, String> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.role == Role::Sheet)
        .filter_map(|(i, n)| n.sha.map(|sha| (i, hash::integrity(&sha))))
        .collect();
    let pages: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].role == Role::Page)
        .collect();
    for i in pages {
        let text = nodes[i].text.as_deref().unwrap_or_default();
        let names = WithIntegrity {
            names: FinalNames { nodes },
            integrity: &integrity,
        };
        let content = encode(
            rewrite::apply(text, &nodes[i].analysis, &names, &[]),
            nodes[i].latin1,
        );
        store_text(root, &mut nodes[i], content, meter)?;
    }
    Ok(())
}

/// A rewritten text as bytes: UTF-8, or one byte per char for a file that
/// was not UTF-8 (the rewrite only inserts ASCII).
fn encode(text: String, latin1: bool) -> Vec<u8> {
    if latin1 {
        text.chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
            .collect()
    } else {
        text.into_bytes()
    }
}

/// The build paths of the files that go into the pool.
pub fn pooled_paths(nodes: &[Node]) -> impl Iterator<Item = &str> {
    nodes
        .iter()
        .filter(|n| n.pool != Pool::No)
        .map(|n| n.file.path.as_str())
}

/// The manifest of the build, once every file is hashed.
pub fn manifest(nodes: &[Node]) -> Manifest {
    let files = nodes
        .iter()
        .map(|node| {
            let sha = node.sha.expect("every file is hashed by now");
            (
                node.file.path.clone(),
                ManifestEntry {
                    hashed: node.hashed.clone(),
                    sha256: hash::hex(&sha),
                    size: node.size,
                    integrity: hash::integrity(&sha),
                },
            )
        })
        .collect();
    Manifest { format: 1, files }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use crate::cache::StatCache;
    use crate::source::{self, TempDir};
    use zdd_core::cli::Progress;

    /// Runs the hashing and rewriting steps over a small build.
    fn build(files: &[(&str, &str)]) -> (Vec<Node>, Vec<Warning>) {
        build_keeping(files, &[])
    }

    /// [`build`] with `--keep-name` patterns.
    fn build_keeping(files: &[(&str, &str)], keep: &[&str]) -> (Vec<Node>, Vec<Warning>) {
        let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_bytes())).collect();
        build_bytes(&files, keep)
    }

    /// [`build`] for files that need not be UTF-8.
    fn build_bytes(files: &[(&str, &[u8])], keep: &[&str]) -> (Vec<Node>, Vec<Warning>) {
        let src = TempDir::new("unit-src").unwrap();
        for (path, content) in files {
            let file = src.path.join(path);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, content).unwrap();
        }
        let dir = TempDir::new("unit-root").unwrap();
        let root = Root::create(&dir.path.join("root")).unwrap();
        let _lock = root.lock(Duration::ZERO).unwrap();
        let mut warnings = Vec::new();
        let keep = KeepNames::new(&keep.iter().map(|k| k.to_string()).collect::<Vec<_>>()).unwrap();
        let files = source::walk(&src.path, "src").unwrap();
        let mut nodes = plan(files, &keep, &mut warnings).unwrap();
        let meter = Meter::new(Progress::new("test", true), Duration::ZERO, 0, 0);
        store::make_pool_folders(&root, pooled_paths(&nodes)).unwrap();
        let cache = StatCache::default();
        crate::leaves::hash_plain_files(
            &root,
            &mut nodes,
            &cache,
            &HashMap::new(),
            &meter,
            &mut warnings,
        )
        .unwrap();
        rewrite_sheets(&root, &mut nodes, &meter, &mut warnings).unwrap();
        rewrite_pages(&root, &mut nodes, &meter).unwrap();
        (nodes, warnings)
    }

    fn node<'a>(nodes: &'a [Node], path: &str) -> &'a Node {
        nodes.iter().find(|n| n.file.path == path).unwrap()
    }

    fn text(node: &Node) -> &str {
        std::str::from_utf8(node.content.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn leaves_first_so_a_name_covers_the_names_inside() {
        let files = [
            (
                "index.html",
                r#"<link rel="stylesheet" href="css/a.css"><script src="/assets/app-Xy12Ab34.js"></script>"#,
            ),
            (
                "css/a.css",
                r#"@import "b.css"; .a{background:url('../img/c.png')}"#,
            ),
            ("css/b.css", ".b{background:url(../img/c.png)}"),
            ("img/c.png", "PNG c"),
            ("assets/app-Xy12Ab34.js", "js"),
            ("robots.txt", "nothing references me"),
        ];
        let (nodes, warnings) = build(&files);
        assert!(warnings.is_empty(), "{warnings:?}");
        let c = node(&nodes, "img/c.png").hashed.clone().unwrap();
        let b = node(&nodes, "css/b.css").hashed.clone().unwrap();
        let a = node(&nodes, "css/a.css").hashed.clone().unwrap();
        assert_eq!(
            c,
            format!(
                "img/c-{}.png",
                &hash::hex(&hash::sha256(b"PNG c"))[..NAME_HEX]
            )
        );
        let c_name = c.rsplit('/').next().unwrap();
        let b_name = b.rsplit('/').next().unwrap();
        assert_eq!(
            text(node(&nodes, "css/b.css")),
            format!(".b{{background:url(../img/{c_name})}}")
        );
        assert_eq!(
            text(node(&nodes, "css/a.css")),
            format!(r#"@import "{b_name}"; .a{{background:url('../img/{c_name}')}}"#)
        );
        // Each stylesheet's name is the hash of its rewritten text.
        for (path, hashed) in [("css/a.css", &a), ("css/b.css", &b)] {
            let sha = hash::sha256(node(&nodes, path).content.as_deref().unwrap());
            assert!(hashed.contains(&hash::hex(&sha)[..NAME_HEX]), "{path}");
        }
        let page = text(node(&nodes, "index.html"));
        assert!(page.contains(&format!(r#"href="{a}""#)), "{page}");
        // The bundler's name is kept, and pooled under it.
        assert!(page.contains(r#"src="/assets/app-Xy12Ab34.js""#), "{page}");
        assert_eq!(
            node(&nodes, "assets/app-Xy12Ab34.js").hashed.as_deref(),
            Some("assets/app-Xy12Ab34.js")
        );
        // Nothing references robots.txt: it stays in the release only.
        assert_eq!(node(&nodes, "robots.txt").hashed, None);
        assert_eq!(node(&nodes, "index.html").hashed, None);
    }

    #[test]
    fn a_change_in_a_leaf_renames_everything_above_it() {
        let files = |c: &'static str| {
            [
                ("index.html", r#"<link rel="stylesheet" href="a.css">"#),
                ("a.css", r#"@import "b.css";"#),
                ("b.css", ".b{background:url(c.png)}"),
                ("c.png", c),
            ]
        };
        let (one, _) = build(&files("one"));
        let (two, _) = build(&files("two"));
        for path in ["a.css", "b.css", "c.png"] {
            assert_ne!(node(&one, path).hashed, node(&two, path).hashed, "{path}");
        }
    }

    #[test]
    fn a_page_that_is_not_utf8_is_rewritten_byte_for_byte() {
        let (nodes, warnings) = build_bytes(
            &[
                ("index.html", b"<p>caf\xe9</p><img src=\"a.png\">\xff"),
                ("a.png", b"png"),
            ],
            &[],
        );
        let hash = &hash::hex(&hash::sha256(b"png"))[..NAME_HEX];
        assert_eq!(
            node(&nodes, "index.html").content.as_deref().unwrap(),
            format!("<p>caf\u{e9}</p><img src=\"a-{hash}.png\">\u{ff}")
                .chars()
                .map(|c| c as u8)
                .collect::<Vec<u8>>()
        );
        assert!(warnings.is_empty());
    }

    #[test]
    fn a_kept_name_is_neither_rewritten_nor_pooled() {
        let files = [
            (
                "index.html",
                r#"<img class="toggler" src="_static/minus.png"><img src="_static/logo.png">
<link rel="stylesheet" href="_static/basic.css">"#,
            ),
            ("_static/minus.png", "minus"),
            ("_static/plus.png", "plus"),
            ("_static/logo.png", "logo"),
            ("_static/basic.css", ".x{background:url(minus.png)}"),
            // a name that merely looks bundler-hashed, kept as it is
            ("_static/app-BXIyRxgv.js", "js"),
        ];
        let (nodes, _) = build_keeping(&files, &["minus.png", "plus.png", "app-*.js"]);
        let page = text(node(&nodes, "index.html"));
        assert!(page.contains(r#"src="_static/minus.png""#), "{page}");
        assert!(!page.contains(r#"src="_static/logo.png""#), "{page}");
        assert_eq!(
            text(node(&nodes, "_static/basic.css")),
            ".x{background:url(minus.png)}"
        );
        for kept in [
            "_static/minus.png",
            "_static/plus.png",
            "_static/app-BXIyRxgv.js",
        ] {
            assert_eq!(node(&nodes, kept).pool, Pool::No, "{kept}");
            assert_eq!(node(&nodes, kept).hashed, None, "{kept}");
        }
        assert!(node(&nodes, "_static/logo.png").hashed.is_some());
    }

    #[test]
    fn an_import_cycle_is_a_warning_not_a_hang() {
        let (nodes, warnings) = build(&[
            ("index.html", r#"<link rel="stylesheet" href="a.css">"#),
            ("a.css", r#"@import "b.css";"#),
            ("b.css", r#"@import "a.css";"#),
        ]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].reason.contains("cycle"));
        assert!(node(&nodes, "a.css").hashed.is_some() && node(&nodes, "b.css").hashed.is_some());
    }
}
