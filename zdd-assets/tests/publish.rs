//! `zdd-assets` end to end: the real binary, a real nginx.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Every pool path the page at `url` and its stylesheets reference, fetched
/// through nginx; each must answer 200.
fn fetch_all(nginx: &Nginx, page: &str) -> BTreeSet<String> {
    let response = nginx.get(page);
    assert_eq!(response.status, 200, "{page}");
    let html = String::from_utf8(response.body).unwrap();
    let mut seen = BTreeSet::new();
    let mut pending: Vec<(String, String)> = references(&html, true)
        .into_iter()
        .map(|r| ("index.html".to_string(), r))
        .collect();
    while let Some((from, reference)) = pending.pop() {
        let path = site_path(&from, &reference);
        if !seen.insert(path.clone()) {
            continue;
        }
        let response = nginx.get(&format!("/{path}"));
        assert_eq!(response.status, 200, "/{path} (referenced from {from})");
        if path.ends_with(".css") {
            let css = String::from_utf8(response.body).unwrap();
            pending.extend(
                references(&css, false)
                    .into_iter()
                    .map(|r| (path.clone(), r)),
            );
        }
    }
    seen
}

#[test]
fn an_old_page_keeps_loading_after_the_new_release_goes_live() {
    let t = Scratch::new("serve");
    let (root, src) = (t.join("root"), t.join("src"));
    write_site(&src, &site(1));
    let v1 = publish(&src, &root);
    let nginx = common::nginx(&root, &[]);
    let v1_files = fetch_all(&nginx, "/");
    // What the v1 page references is hashed (or bundler-named), never the
    // plain names.
    assert!(
        v1_files.iter().any(|p| p.starts_with("css/app-")),
        "{v1_files:?}"
    );
    assert!(v1_files.contains("assets/vendor-Ab3dE5f7.js"));
    assert!(!v1_files.contains("css/app.css") && !v1_files.contains("img/logo.png"));

    write_site(&src, &site(2));
    let v2 = publish(&src, &root);
    assert_eq!(v2["live"], true);
    assert_eq!(v2["previous"], v1["id"]);
    let v2_files = fetch_all(&nginx, "/");

    // A browser holding the v1 page still loads every file it names, as
    // immutable.
    for path in &v1_files {
        let response = nginx.get(&format!("/{path}"));
        assert_eq!(response.status, 200, "v1's /{path} after v2 went live");
        assert_eq!(response.header("cache-control"), Some(IMMUTABLE), "/{path}");
    }
    // The v2 page loads only v2 files: exactly its manifest's pool paths,
    // with v2's content.
    let v2_pool: BTreeSet<String> = hashed_paths(&manifest(&root, v2["id"].as_str().unwrap()))
        .into_iter()
        .collect();
    assert!(v2_files.is_subset(&v2_pool), "{v2_files:?} ⊄ {v2_pool:?}");
    let changed: Vec<&String> = v2_files.difference(&v1_files).collect();
    // theme.css, and app.css because it imports it; bg.png; app.js.
    assert_eq!(changed.len(), 4, "{changed:?}");
    let app_js = v2_files.iter().find(|p| p.starts_with("js/app-")).unwrap();
    assert_eq!(
        nginx.get(&format!("/{app_js}")).body,
        b"console.log('app v2');\n"
    );

    // Headers: pages are revalidated, hashed files immutable, a missing
    // hashed file is a 404 and not the page.
    for page in ["/", "/index.html", "/robots.txt", "/css/app.css"] {
        let response = nginx.get(page);
        assert_eq!(response.status, 200, "{page}");
        assert_eq!(response.header("cache-control"), Some("no-cache"), "{page}");
    }
    assert!(String::from_utf8_lossy(&nginx.get("/").body).contains("<title>v2</title>"));
    for missing in [
        "/css/app-0123456789abcdef.css",
        "/assets/vendor-Zz9yY8xX.js",
        "/nope.js",
    ] {
        let response = nginx.get(missing);
        assert_eq!(response.status, 404, "{missing}");
        assert!(
            !String::from_utf8_lossy(&response.body).contains("<title>v"),
            "{missing}"
        );
        assert_eq!(response.header("cache-control"), None, "{missing}");
    }

    // Rollback: v1's page is served again, and its files are all there.
    let back = zdd(&["activate", "previous", "--root", s(&root), "-q"])
        .ok()
        .record();
    assert_eq!(back["id"], v1["id"]);
    assert_eq!(back["previous"], v2["id"]);
    assert!(String::from_utf8_lossy(&nginx.get("/").body).contains("<title>v1</title>"));
    assert_eq!(fetch_all(&nginx, "/"), v1_files);
}

#[test]
fn an_unchanged_file_keeps_its_name_and_is_stored_once() {
    let t = Scratch::new("once");
    let (root, src) = (t.join("root"), t.join("src"));
    write_site(&src, &site(1));
    let v1 = publish(&src, &root);
    write_site(&src, &site(2));
    let v2 = publish(&src, &root);
    let (m1, m2) = (
        manifest(&root, v1["id"].as_str().unwrap()),
        manifest(&root, v2["id"].as_str().unwrap()),
    );
    for same in [
        "img/logo.png",
        "fonts/f.woff2",
        "img/logo@2x.png",
        "assets/vendor-Ab3dE5f7.js",
    ] {
        assert_eq!(
            m1["files"][same]["hashed"], m2["files"][same]["hashed"],
            "{same}"
        );
    }
    for changed in ["css/theme.css", "css/app.css", "img/bg.png", "js/app.js"] {
        assert_ne!(
            m1["files"][changed]["hashed"], m2["files"][changed]["hashed"],
            "{changed}"
        );
    }
    // app.css did not change, yet its name did: it covers theme.css's name.
    assert_eq!(
        std::fs::read(src.join("css/app.css")).unwrap(),
        site(1)
            .into_iter()
            .find(|(p, _)| *p == "css/app.css")
            .unwrap()
            .1
    );

    let pool = files_under(&root.join("pool"));
    let logos: Vec<_> = pool.iter().filter(|p| p.starts_with("img/logo-")).collect();
    assert_eq!(logos.len(), 1, "{pool:?}");
    assert_eq!(pool.iter().filter(|p| p.starts_with("fonts/f-")).count(), 1);
    // Both releases' copies are the pool file itself (hard links).
    let pooled = std::fs::metadata(root.join("pool").join(logos[0])).unwrap();
    for record in [&v1, &v2] {
        let copy = root
            .join("releases")
            .join(record["id"].as_str().unwrap())
            .join("site/img/logo.png");
        assert_eq!(std::fs::metadata(copy).unwrap().ino(), pooled.ino());
    }
    // The second publish wrote only what changed.
    assert_eq!(v2["new_files"], 4, "{v2}");
    assert_eq!(v2["reused_files"], v2["pooled"].as_u64().unwrap() - 4);

    // The hashed name is the content's sha256, and the manifest says so
    // with an SRI value.
    let entry = &m2["files"]["img/logo.png"];
    let sha = entry["sha256"].as_str().unwrap();
    assert!(entry["hashed"].as_str().unwrap().contains(&sha[..16]));
    assert!(entry["integrity"].as_str().unwrap().starts_with("sha256-"));
}

#[test]
fn the_same_build_published_twice_reuses_its_release() {
    let t = Scratch::new("reuse");
    let (root, src) = (t.join("root"), t.join("src"));
    write_site(&src, &site(1));
    let first = publish(&src, &root);
    assert_eq!(first["reused"], false);
    let again = publish(&src, &root);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["reused"], true);
    assert_eq!(again["switched"], false);
    assert_eq!(again["new_files"], 0);
    // Staged without going live, then activated.
    write_site(&src, &site(2));
    let staged = zdd(&[
        "publish",
        s(&src),
        "--root",
        s(&root),
        "--no-activate",
        "-q",
    ])
    .ok()
    .record();
    assert_eq!(staged["live"], false);
    assert_eq!(live_id(&root).as_deref(), first["id"].as_str());
    let hash = staged["id"].as_str().unwrap().split_once('-').unwrap().1;
    let activated = zdd(&["activate", &hash[..8], "--root", s(&root), "-q"])
        .ok()
        .record();
    assert_eq!(activated["id"], staged["id"]);
    assert_eq!(live_id(&root).as_deref(), staged["id"].as_str());
    // Re-publishing v1 reuses its release and makes it live again.
    write_site(&src, &site(1));
    let back = publish(&src, &root);
    assert_eq!(
        (back["id"].clone(), back["reused"].clone()),
        (first["id"].clone(), true.into())
    );
    assert_eq!(back["switched"], true);
    assert!(files_under(&root.join("tmp")).is_empty());
}

#[test]
fn activate_rolls_back_and_list_tells_when_each_was_live() {
    let t = Scratch::new("rollback");
    let (root, src) = (t.join("root"), t.join("src"));
    let mut ids = Vec::new();
    for v in 1..=3 {
        write_site(&src, &site(v));
        ids.push(publish(&src, &root)["id"].as_str().unwrap().to_owned());
    }
    let back = zdd(&["activate", &ids[0], "--root", s(&root)]).ok();
    assert!(
        back.stderr
            .contains(&format!("{} is live (was {})", ids[0], ids[2])),
        "{}",
        back.stderr
    );
    assert_eq!(live_id(&root).as_deref(), Some(ids[0].as_str()));
    assert!(std::fs::read_to_string(root.join("live/index.html"))
        .unwrap()
        .contains("<title>v1</title>"));
    live_needs(&root).unwrap();
    // Activating the live release again changes nothing.
    let same = zdd(&["activate", &ids[0], "--root", s(&root), "-q"])
        .ok()
        .record();
    assert_eq!(same["switched"], false);

    let list = zdd(&["list", "--root", s(&root)]).ok().records();
    let listed: Vec<&str> = list.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());
    let live: Vec<bool> = list.iter().map(|r| r["live"].as_bool().unwrap()).collect();
    assert_eq!(live, [true, false, false]);
    let periods = |i: usize| list[i]["live_periods"].as_array().unwrap().clone();
    assert_eq!(periods(0).len(), 2, "v1 was live twice: {:?}", periods(0));
    assert!(periods(0)[1].get("until").is_none(), "and is live now");
    assert_eq!(periods(2)[0]["until"], periods(0)[1]["from"]);
    assert_eq!(list[0]["files"], 11);

    for (bad, why) in [("nope", "no release `nope`"), ("2", "matches 3 releases")] {
        let run = zdd(&["activate", bad, "--root", s(&root)]);
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains(why), "{}", run.stderr);
    }
}

#[test]
fn prune_deletes_by_the_rule_and_never_what_a_kept_release_uses() {
    let t = Scratch::new("prune");
    let (root, src) = (t.join("root"), t.join("src"));
    let mut ids = Vec::new();
    for v in 1..=3 {
        if v == 3 {
            // v1 stopped being live a while ago; v2 stops now.
            std::thread::sleep(Duration::from_millis(1500));
        }
        write_site(&src, &site(v));
        ids.push(publish(&src, &root)["id"].as_str().unwrap().to_owned());
    }
    // File times say everything is old; the rule must not care.
    let touched = Command::new("touch")
        .args(["-h", "-d", "2 days ago"])
        .args(files_under(&root).iter().map(|f| root.join(f)))
        .status()
        .unwrap();
    assert!(touched.success());
    let snapshot = files_under(&root);
    let prune = |args: &[&str]| {
        let mut all = vec!["prune", "--root", s(&root)];
        all.extend(args);
        zdd(&all).ok().records()
    };
    let deleted_releases = |records: &[serde_json::Value]| -> Vec<String> {
        records
            .iter()
            .filter(|r| r["kind"] == "release")
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };

    // Inside the newest 2: only v1 may go. A dry run deletes nothing.
    let dry = prune(&["--keep", "2", "--min-age", "0s", "--dry-run"]);
    assert_eq!(deleted_releases(&dry), [ids[0].clone()]);
    assert!(dry.iter().all(|r| r["dry_run"] == true));
    assert_eq!(files_under(&root), snapshot);
    // An hour's minimum age keeps v1 (it stopped ~1.5 s ago).
    assert!(deleted_releases(&prune(&["--keep", "1", "--min-age", "1h"])).is_empty());
    assert_eq!(files_under(&root), snapshot);

    // v1 stopped more than 1 s ago and goes; v2 stopped just now and stays.
    let done = prune(&["--keep", "1", "--min-age", "1s"]);
    assert_eq!(deleted_releases(&done), [ids[0].clone()]);
    let summary = done.last().unwrap();
    assert_eq!(summary["kind"], "summary");
    assert_eq!(summary["kept"], serde_json::json!([ids[1], ids[2]]));
    let gone: Vec<String> = done
        .iter()
        .filter(|r| r["kind"] == "file")
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    // v1's own versions of theme.css, app.css, bg.png, app.js.
    assert_eq!(gone.len(), 4, "{gone:?}");
    let pool = root.join("pool");
    for id in &ids[1..] {
        for path in hashed_paths(&manifest(&root, id)) {
            assert!(
                pool.join(&path).is_file(),
                "{path} of kept {id} was deleted"
            );
        }
    }
    for path in &gone {
        assert!(!pool.join(path).exists());
    }
    assert!(!root.join("releases").join(&ids[0]).exists());
    live_needs(&root).unwrap();

    // With nothing to keep but the live release, v2 goes too.
    let done = prune(&["--keep", "0", "--min-age", "0s"]);
    assert_eq!(deleted_releases(&done), [ids[1].clone()]);
    let left: BTreeSet<String> = files_under(&pool).into_iter().collect();
    let live: BTreeSet<String> = hashed_paths(&manifest(&root, &ids[2]))
        .into_iter()
        .collect();
    assert_eq!(left, live);
    assert_eq!(live_id(&root).as_deref(), Some(ids[2].as_str()));
    live_needs(&root).unwrap();
}

#[test]
fn refuses_links_foreign_roots_and_bad_input_without_writing() {
    let t = Scratch::new("refuse");
    let (root, src) = (t.join("root"), t.join("src"));
    write_site(&src, &site(1));

    // A symlink in the source.
    std::os::unix::fs::symlink("/etc/passwd", src.join("img/passwd")).unwrap();
    let run = zdd(&["publish", s(&src), "--root", s(&root)]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("symbolic link"), "{}", run.stderr);
    assert!(!root.exists(), "nothing may be written");
    std::fs::remove_file(src.join("img/passwd")).unwrap();

    // A folder that is not an asset root.
    let foreign = t.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("precious.txt"), "keep me").unwrap();
    for args in [
        vec!["publish", s(&src), "--root", s(&foreign)],
        vec!["list", "--root", s(&foreign)],
        vec![
            "prune",
            "--root",
            s(&foreign),
            "--keep",
            "0",
            "--min-age",
            "0s",
        ],
        vec!["activate", "x", "--root", s(&foreign)],
        vec!["nginx", "--root", s(&foreign)],
    ] {
        let run = zdd(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("not a zdd asset root"),
            "{}",
            run.stderr
        );
        assert!(run.stdout.is_empty());
    }
    assert_eq!(files_under(&foreign), ["precious.txt"]);
    // A file as the root; a missing source; a bad duration.
    let file_root = foreign.join("precious.txt");
    assert_eq!(zdd(&["publish", s(&src), "--root", s(&file_root)]).code, 2);
    assert_eq!(
        zdd(&["publish", s(&t.join("nope")), "--root", s(&root)]).code,
        2
    );
    assert_eq!(
        zdd(&[
            "prune",
            "--root",
            s(&root),
            "--keep",
            "1",
            "--min-age",
            "soon"
        ])
        .code,
        2
    );
    assert!(!root.exists());
    // A root inside the source would publish itself.
    let inside = src.join("root");
    let run = zdd(&["publish", s(&src), "--root", s(&inside)]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("must not contain each other"),
        "{}",
        run.stderr
    );
    assert!(!inside.exists());

    // --strict turns an unresolved reference into a refusal.
    std::fs::write(src.join("index.html"), "<img src=\"img/missing.png\">\n").unwrap();
    let run = zdd(&["publish", s(&src), "--root", s(&root), "--strict"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("img/missing.png"), "{}", run.stderr);
    assert!(!root.exists());
    // Without it, a warning in the record.
    let record = publish(&src, &root);
    let warnings = record["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["file"], "index.html");
    assert_eq!(warnings[0]["line"], 1);
    assert_eq!(warnings[0]["url"], "img/missing.png");
}

#[test]
fn one_writer_at_a_time() {
    let t = Scratch::new("lock");
    let (root, src) = (t.join("root"), t.join("src"));
    write_site(&src, &site(1));
    publish(&src, &root);
    write_site(&src, &site(2));
    let mut holder = Command::new("flock")
        .args([s(&root.join("lock")), "sleep", "1.5"])
        .stdin(Stdio::null())
        .spawn()
        .expect("flock(1) from util-linux");
    std::thread::sleep(Duration::from_millis(300));
    let run = zdd(&["publish", s(&src), "--root", s(&root)]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("another zdd-assets is writing"),
        "{}",
        run.stderr
    );
    let started = Instant::now();
    let waited = zdd(&[
        "publish",
        s(&src),
        "--root",
        s(&root),
        "--lock-wait",
        "10s",
        "-q",
    ])
    .ok();
    assert!(started.elapsed() > Duration::from_millis(500));
    assert_eq!(waited.record()["live"], true);
    holder.wait().unwrap();
}

#[test]
fn spa_mode_serves_routes_but_never_a_missing_file() {
    let t = Scratch::new("spa");
    let (root, src) = (t.join("root"), t.join("src"));
    write_site(&src, &site(1));
    publish(&src, &root);
    let nginx = common::nginx(&root, &["--spa"]);
    for route in ["/", "/account/settings", "/about"] {
        let response = nginx.get(route);
        assert_eq!(response.status, 200, "{route}");
        assert!(
            String::from_utf8_lossy(&response.body).contains("<title>v1</title>"),
            "{route}"
        );
        assert_eq!(
            response.header("cache-control"),
            Some("no-cache"),
            "{route}"
        );
    }
    for missing in [
        "/js/app-0123456789abcdef.js",
        "/img/nope.png",
        "/deep/chunk.js",
    ] {
        assert_eq!(nginx.get(missing).status, 404, "{missing}");
    }
}
