//! Killing `publish` with SIGKILL at many points never leaves a live page
//! that references a missing file, nor a half-written pool file or object.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;
use sha2::{Digest, Sha256};

/// A site with enough files that a publish takes a while: a page, two
/// stylesheets referencing `images` images, and a script; every file's
/// content depends on `v`, so every publish has all of it to do.
fn big_site(v: u32, images: usize) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut css_a = format!("@import \"b.css\";\n.v{v}{{}}\n");
    let mut css_b = String::new();
    for i in 0..images {
        let rule = format!(".i{i}{{background:url(../img/i{i}.png)}}\n");
        if i % 2 == 0 {
            css_a.push_str(&rule);
        } else {
            css_b.push_str(&rule);
        }
        files.push((
            format!("img/i{i}.png"),
            format!("image {i} of v{v} {}", "x".repeat(2000)).into_bytes(),
        ));
    }
    files.push(("css/a.css".into(), css_a.into_bytes()));
    files.push(("css/b.css".into(), css_b.into_bytes()));
    files.push((
        "js/app.js".into(),
        format!("console.log({v});").into_bytes(),
    ));
    files.push((
        "index.html".into(),
        format!(
            "<!doctype html><title>v{v}</title><link rel=\"stylesheet\" href=\"css/a.css\">\
             <script src=\"js/app.js\"></script><img src=\"img/i0.png\">\n"
        )
        .into_bytes(),
    ));
    files
}

fn write(dir: &Path, files: &[(String, Vec<u8>)]) {
    let borrowed: Vec<(&str, Vec<u8>)> =
        files.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
    write_site(dir, &borrowed);
}

/// The invariants that must hold whenever no publish is running.
fn check(root: &Path, context: &str) {
    let id = live_id(root).unwrap_or_else(|| panic!("{context}: the live pointer is not whole"));
    let release = root.join("releases").join(&id);
    assert!(
        release.join("manifest.json").is_file(),
        "{context}: live release {id} has no manifest"
    );
    assert!(
        release.join("release.json").is_file(),
        "{context}: live release {id} has no release.json"
    );
    if let Err(e) = live_needs(root) {
        panic!("{context}: {e}");
    }
    // Every release folder is whole.
    for entry in std::fs::read_dir(root.join("releases")).unwrap() {
        let dir = entry.unwrap().path();
        assert!(
            dir.join("manifest.json").is_file(),
            "{context}: {} is partial",
            dir.display()
        );
        assert!(
            dir.join("site/index.html").is_file(),
            "{context}: {} is partial",
            dir.display()
        );
    }
}

fn sha256_hex(content: &[u8]) -> String {
    Sha256::digest(content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Pool files named with our hash, and objects, hold exactly the content
/// their names say (each checked once: neither ever changes).
fn check_pool(root: &Path, checked: &mut BTreeSet<String>) {
    for sha in files_under(&root.join("objects")) {
        if checked.insert(format!("objects/{sha}")) {
            let content = std::fs::read(root.join("objects").join(&sha)).unwrap();
            assert_eq!(
                sha256_hex(&content),
                sha,
                "object {sha} is not what its name says"
            );
        }
    }
    for path in files_under(&root.join("pool")) {
        if !checked.insert(path.clone()) {
            continue;
        }
        let name = path.rsplit('/').next().unwrap();
        let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
        let Some((_, hash)) = stem.rsplit_once('-') else {
            continue;
        };
        if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            let content = std::fs::read(root.join("pool").join(&path)).unwrap();
            let sha = sha256_hex(&content);
            assert_eq!(
                &sha[..16],
                hash,
                "pool file {path} is not what its name says"
            );
        }
    }
}

#[test]
fn killing_publish_anywhere_never_breaks_the_live_site() {
    let t = Scratch::new("crash");
    let (root, src) = (t.join("root"), t.join("src"));
    let images = 150;

    // How long one whole publish takes here (the quickest of three, the
    // machine may be busy), to spread the kills over it.
    let mut whole = std::time::Duration::MAX;
    for v in 0..3 {
        write(&src, &big_site(10_000 + v, images));
        let started = Instant::now();
        publish(&src, &root);
        whole = whole.min(started.elapsed());
        check(&root, "after a whole publish");
    }
    eprintln!("one publish takes {whole:?}");

    let rounds = 40u32;
    let mut killed = 0;
    let mut checked = BTreeSet::new();
    for round in 1..=rounds {
        write(&src, &big_site(round, images));
        // From the very start to past the end of a publish.
        let delay = whole.mul_f64(1.2 * f64::from(round) / f64::from(rounds));
        let mut child = Command::new(bin())
            .args(["publish", s(&src), "--root", s(&root), "-q"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        if !finished {
            killed += 1;
        }
        let context = format!("round {round}, killed after {delay:?} ({status})");
        check(&root, &context);
        check_pool(&root, &mut checked);
    }
    eprintln!("{killed} of {rounds} publishes were killed before they finished");
    assert!(
        killed >= rounds / 3,
        "only {killed} of {rounds} publishes were killed mid-way"
    );

    // A publish after all that converges: the newest build is live, whole,
    // and the debris of the killed runs is gone.
    write(&src, &big_site(1000, images));
    let record = publish(&src, &root);
    assert_eq!(live_id(&root).as_deref(), record["id"].as_str());
    assert!(std::fs::read_to_string(root.join("live/index.html"))
        .unwrap()
        .contains("<title>v1000</title>"));
    check(&root, "after a publish that ran to the end");
    check_pool(&root, &mut checked);
    assert!(
        files_under(&root.join("tmp")).is_empty(),
        "tmp/ was not emptied"
    );
    // The history agrees with the pointer.
    let list = zdd(&["list", "--root", s(&root)]).ok().records();
    let live: Vec<_> = list.iter().filter(|r| r["live"] == true).collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["id"], record["id"]);
}
