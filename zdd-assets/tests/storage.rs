//! Storage shared across releases, names that are and are not hashed,
//! `--strict` on a real site's page links, `--keep-name`, hard links and
//! progress: the real binary, a real nginx.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use serde_json::Value;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The inode of each file of a release folder, by build path.
fn inodes(root: &Path, id: &str) -> BTreeMap<String, u64> {
    let site = root.join("releases").join(id).join("site");
    files_under(&site)
        .into_iter()
        .map(|path| {
            let ino = std::fs::metadata(site.join(&path)).unwrap().ino();
            (path, ino)
        })
        .collect()
}

/// `prune --keep 0 --min-age 0s`: every release but the live one goes.
fn prune_all_but_live(root: &Path) -> Vec<Value> {
    let args = ["prune", "--root", s(root), "--keep", "0", "--min-age", "0s"];
    zdd(&args).ok().records()
}

/// Publishes `site(1)`, then `site(2)`, into a new root.
fn two_releases(
    name: &str,
) -> (
    Scratch,
    std::path::PathBuf,
    std::path::PathBuf,
    Value,
    Value,
) {
    let t = Scratch::new(name);
    let (root, src) = (t.join("root"), t.join("src"));
    write_site(&src, &site(1));
    let v1 = publish(&src, &root);
    write_site(&src, &site(2));
    let v2 = publish(&src, &root);
    (t, root, src, v1, v2)
}

fn id(record: &Value) -> &str {
    record["id"].as_str().unwrap()
}

#[test]
fn an_unchanged_file_is_stored_once_whatever_it_is() {
    let (_t, root, src, v1, v2) = two_releases("shared");
    // Pages and robots.txt (nothing references it) are stored too.
    assert_eq!(v1["stored_files"], 2, "{v1}");
    // Only the page changed among the files served from the release.
    assert_eq!(v2["stored_files"], 1, "{v2}");
    let (one, two) = (inodes(&root, id(&v1)), inodes(&root, id(&v2)));
    assert_eq!(
        one.keys().collect::<Vec<_>>(),
        two.keys().collect::<Vec<_>>()
    );
    let (m1, m2) = (manifest(&root, id(&v1)), manifest(&root, id(&v2)));
    let mut shared = 0;
    for (path, ino) in &one {
        let same = m1["files"][path]["sha256"] == m2["files"][path]["sha256"];
        assert_eq!(same, *ino == two[path], "{path}: same content ⇔ same file");
        shared += usize::from(same);
    }
    // robots.txt, favicon.ico, the logos, the font: one copy for both.
    assert_eq!(shared, 5, "{one:?}");
    // Re-publishing the same build writes nothing at all.
    let again = publish(&src, &root);
    assert_eq!(
        (again["new_files"].clone(), again["stored_files"].clone()),
        (0.into(), 0.into())
    );
}

#[test]
fn prune_keeps_what_a_kept_release_shares_with_a_deleted_one() {
    let (_t, root, src, v1, v2) = two_releases("shared-prune");
    let records = prune_all_but_live(&root);
    let summary = records.last().unwrap();
    assert_eq!(summary["releases"], 1, "{records:?}");
    // v1's page is the only content no kept release has.
    assert_eq!(summary["objects"], 1, "{summary}");
    assert!(!root.join("releases").join(id(&v1)).exists());
    // Every file of v2, shared with v1 or not, is whole.
    let m2 = manifest(&root, id(&v2));
    let site2 = root.join("releases").join(id(&v2)).join("site");
    for (path, entry) in m2["files"].as_object().unwrap() {
        let served = if entry.get("hashed").is_some() && !site2.join(path).exists() {
            root.join("pool").join(entry["hashed"].as_str().unwrap())
        } else {
            site2.join(path)
        };
        let content = std::fs::read(&served).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            content.len() as u64,
            entry["size"].as_u64().unwrap(),
            "{path}"
        );
    }
    assert_eq!(
        std::fs::read(site2.join("robots.txt")).unwrap(),
        b"User-agent: *\n"
    );
    live_needs(&root).unwrap();
    // The kept contents stay stored: publishing v1 again stores only its
    // page.
    write_site(&src, &site(1));
    assert_eq!(publish(&src, &root)["stored_files"], 1);
}

#[test]
fn a_root_without_shared_storage_keeps_working() {
    // Releases written before objects/ existed hold their own copies;
    // removing objects/ leaves exactly that.
    let (_t, root, src, v1, _) = two_releases("old-layout");
    std::fs::remove_dir_all(root.join("objects")).unwrap();
    write_site(&src, &site(3));
    let v3 = publish(&src, &root);
    assert_eq!(v3["stored_files"], 2, "{v3}");
    let back = zdd(&["activate", id(&v1), "--root", s(&root), "-q"])
        .ok()
        .record();
    assert_eq!(back["id"], v1["id"]);
    live_needs(&root).unwrap();
    let records = prune_all_but_live(&root);
    assert_eq!(records.last().unwrap()["releases"], 2);
    assert!(std::fs::read_to_string(root.join("live/index.html"))
        .unwrap()
        .contains("<title>v1</title>"));
    live_needs(&root).unwrap();
}

/// A page as Sphinx writes it (python3.11-doc's modindex.html, cut down):
/// links to neighbouring pages, some missing, and doctools' toggler.
fn sphinx_site() -> Vec<(&'static str, Vec<u8>)> {
    let page = r#"<!DOCTYPE html>
<html><head><title>Python Module Index</title>
<link rel="stylesheet" href="_static/pydoctheme.css?v=1" type="text/css" />
<link rel="index" title="Index" href="genindex.html" />
<link rel="search" title="Search" href="search.html" />
<link rel="copyright" title="Copyright" href="copyright.html" />
<link rel="next" title="next" href="library/nothere.html" />
<link rel="prev" title="prev" href="gone.html" />
<link rel="canonical" href="https://docs.python.org/3/py-modindex.html" />
<link rel="shortcut icon" type="image/png" href="_static/py.svg" />
<script src="_static/doctools.js"></script>
</head><body>
<a href="library/email.compat32-message.html">email.message.Message</a>
<a href="_sources/library/email.compat32-message.rst.txt">source</a>
<img src="_static/minus.png" class="toggler" id="toggle-1" alt="-" />
</body></html>
"#;
    vec![
        ("py-modindex.html", page.as_bytes().to_vec()),
        ("index.html", b"<title>index</title>".to_vec()),
        ("genindex.html", b"<title>genindex</title>".to_vec()),
        (
            "library/email.compat32-message.html",
            b"<title>compat32</title>".to_vec(),
        ),
        (
            "_sources/library/email.compat32-message.rst.txt",
            b":mod:`email.message`: Representing an email message using the compat32 API\n"
                .to_vec(),
        ),
        ("_static/pydoctheme.css", b"body { margin: 0 }\n".to_vec()),
        ("_static/py.svg", b"<svg/>".to_vec()),
        ("_static/minus.png", b"\x89PNG minus".to_vec()),
        ("_static/plus.png", b"\x89PNG plus".to_vec()),
        (
            "_static/doctools.js",
            b"if (src.substr(-9) === 'minus.png') src = src.substr(0, src.length - 9) + 'plus.png';\n"
                .to_vec(),
        ),
    ]
}

/// What doctools.js does on a click: the toggler's next `src`.
fn toggled(src: &str) -> String {
    match src.strip_suffix("minus.png") {
        Some(head) => format!("{head}plus.png"),
        None => format!("{}minus.png", &src[..src.len().saturating_sub(8)]),
    }
}

fn toggler_src(nginx: &Nginx) -> String {
    let page = String::from_utf8(nginx.get("/py-modindex.html").body).unwrap();
    let at = page.find(r#"<img src=""#).unwrap() + 10;
    page[at..at + page[at..].find('"').unwrap()].to_owned()
}

#[test]
fn a_sphinx_page_publishes_strictly_and_its_script_swaps_icons_by_name() {
    let t = Scratch::new("sphinx");
    let (root, src) = (t.join("root"), t.join("src"));
    write_site(&src, &sphinx_site());
    // Page links to missing pages are no asset errors.
    let run = zdd(&[
        "publish",
        s(&src),
        "--root",
        s(&root),
        "--strict",
        "--keep-name",
        "_static/minus.png",
        "--keep-name",
        "plus.png",
        "-q",
    ])
    .ok();
    assert_eq!(run.record()["warnings"], serde_json::json!([]));
    let nginx = common::nginx(&root, &[]);
    let src_attr = toggler_src(&nginx);
    assert_eq!(src_attr, "_static/minus.png");
    for click in [toggled(&src_attr), toggled(&toggled(&src_attr))] {
        let response = nginx.get(&format!("/{click}"));
        assert_eq!(response.status, 200, "{click}");
        assert_eq!(
            response.header("cache-control"),
            Some("no-cache"),
            "{click}"
        );
    }
    // Without --keep-name the swapped name is one that does not exist.
    let plain_root = t.join("plain");
    publish(&src, &plain_root);
    let plain = common::nginx(&plain_root, &[]);
    let hashed = toggler_src(&plain);
    assert!(hashed.starts_with("_static/minus-"), "{hashed}");
    assert_eq!(plain.get(&format!("/{}", toggled(&hashed))).status, 404);

    // The reST source's name is no content hash: it stays mutable.
    let m = manifest(&plain_root, live_id(&plain_root).as_deref().unwrap());
    assert!(
        m["files"]["_sources/library/email.compat32-message.rst.txt"]
            .get("hashed")
            .is_none()
    );
    let response = plain.get("/_sources/library/email.compat32-message.rst.txt");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("cache-control"), Some("no-cache"));
    // The stylesheet is hashed and immutable, the query kept.
    let page = String::from_utf8(plain.get("/py-modindex.html").body).unwrap();
    let at = page.find("_static/pydoctheme-").unwrap();
    let css = &page[at..at + page[at..].find('?').unwrap()];
    assert_eq!(
        plain.get(&format!("/{css}")).header("cache-control"),
        Some(IMMUTABLE)
    );

    // A missing stylesheet is still an asset error, named with its place.
    std::fs::remove_file(src.join("_static/pydoctheme.css")).unwrap();
    let strict_root = t.join("strict");
    let run = zdd(&["publish", s(&src), "--root", s(&strict_root), "--strict"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("1 unresolved reference"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("py-modindex.html:3: `_static/pydoctheme.css?v=1`"),
        "{}",
        run.stderr
    );
    assert!(!strict_root.exists());
}

#[test]
fn a_hard_link_in_the_source_is_published_as_a_file_of_its_own() {
    let t = Scratch::new("hardlink");
    let (root, src) = (t.join("root"), t.join("src"));
    write_site(&src, &site(1));
    std::fs::hard_link(src.join("robots.txt"), src.join("robots-copy.txt")).unwrap();
    let record = publish(&src, &root);
    assert_eq!(record["files"], 12);
    let nginx = common::nginx(&root, &[]);
    for path in ["/robots.txt", "/robots-copy.txt"] {
        let response = nginx.get(path);
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(response.body, b"User-agent: *\n", "{path}");
    }
}

#[test]
fn progress_goes_to_stderr_and_quiet_keeps_the_warnings_in_the_record() {
    let t = Scratch::new("progress");
    let (root, src) = (t.join("root"), t.join("src"));
    let mut files = site(1);
    files.push(("about.html", b"<img src=\"img/missing.png\">".to_vec()));
    write_site(&src, &files);
    let every_file = |extra: &[&str]| {
        let mut args = vec![
            "publish",
            s(&src),
            "--root",
            s(&root),
            "--progress-every",
            "0s",
        ];
        args.extend(extra);
        zdd(&args).ok()
    };
    let run = every_file(&[]);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains(" files, "))
        .collect();
    assert!(lines.len() >= 5, "{}", run.stderr);
    assert!(
        lines.iter().any(|l| l.contains("12 of 12 files")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("warning: about.html:1"),
        "{}",
        run.stderr
    );

    std::fs::write(src.join("about.html"), "<img src=\"img/gone.png\">").unwrap();
    let quiet = every_file(&["-q"]);
    assert_eq!(quiet.stderr, "");
    let warnings = quiet.record()["warnings"].clone();
    assert_eq!(warnings[0]["url"], "img/gone.png", "{warnings}");
}
