//! Publishing from a built image (`IMAGE:/path`) through the Docker API.
//!
//! No image can be pulled here, so the test builds its own `FROM scratch`
//! images whose build context holds the site, in a sandbox: everything it
//! creates is labelled `zdd.e2e=1` and `zdd.test=<id>` and removed when
//! the sandbox is dropped, also when the test fails.

mod common;

use std::path::Path;

use common::*;
use zdd_e2e::Sandbox;

/// Builds `FROM scratch` + `COPY site /site` from a context holding
/// `site`; returns the image.
fn build(sandbox: &Sandbox, tag: &str, context: &Path) -> String {
    sandbox.build_image(tag, context, "COPY site /site\n")
}

/// Every container of the sandbox, stopped ones too.
fn containers(sandbox: &Sandbox) -> Vec<String> {
    sandbox.container_ids(true, &[])
}

#[test]
fn publishing_from_an_image_gives_the_same_release_as_from_the_folder() {
    let t = Scratch::new("image");
    let sandbox = Sandbox::new("assets-same");
    let context = t.join("context");
    write_site(&context.join("site"), &site(1));
    let image = build(&sandbox, "v1", &context);

    // Into one root: the image's build is the folder's release, reused.
    let root = t.join("root");
    let from_dir = publish(&context.join("site"), &root);
    let from_image = publish(Path::new(&format!("{image}:/site/")), &root);
    assert_eq!(from_image["id"], from_dir["id"]);
    assert_eq!(from_image["reused"], true);
    assert_eq!(from_image["new_files"], 0);

    // Into a fresh root: the same manifest, byte for byte.
    let other = t.join("other");
    let fresh = publish(Path::new(&format!("{image}:/site")), &other);
    let hash = |r: &serde_json::Value| {
        r["id"]
            .as_str()
            .unwrap()
            .split_once('-')
            .unwrap()
            .1
            .to_owned()
    };
    assert_eq!(hash(&fresh), hash(&from_dir));
    let read = |root: &Path, r: &serde_json::Value| {
        std::fs::read(
            root.join("releases")
                .join(r["id"].as_str().unwrap())
                .join("manifest.json"),
        )
        .unwrap()
    };
    assert_eq!(read(&other, &fresh), read(&root, &from_dir));
    live_needs(&other).unwrap();
    // The copy containers are gone.
    assert!(
        containers(&sandbox).is_empty(),
        "{:?}",
        containers(&sandbox)
    );
}

#[test]
fn a_bad_image_source_is_refused_without_writing() {
    let t = Scratch::new("image-bad");
    let sandbox = Sandbox::new("assets-bad");
    let context = t.join("context");
    write_site(&context.join("site"), &site(1));
    std::os::unix::fs::symlink("/etc/passwd", context.join("site/img/passwd")).unwrap();
    let image = build(&sandbox, "links", &context);
    let root = t.join("root");
    for (source, why) in [
        (format!("{image}:/site"), "symbolic link"),
        (format!("{image}:/nowhere"), "has no /nowhere"),
        (format!("{}:missing:/site", sandbox.id), "no image"),
    ] {
        let run = zdd(&["publish", &source, "--root", s(&root)]);
        assert_eq!(run.code, 2, "{source}: {}", run.stderr);
        assert!(run.stderr.contains(why), "{source}: {}", run.stderr);
        assert!(!root.exists(), "{source}: nothing may be written");
    }
    assert!(
        containers(&sandbox).is_empty(),
        "{:?}",
        containers(&sandbox)
    );
}
