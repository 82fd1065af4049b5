//! Publishing from a built image (`IMAGE:/path`) through the Docker API.
//!
//! No image can be pulled here, so the test builds its own `FROM scratch`
//! images whose build context holds the site. Everything it creates is
//! labelled `zdd.e2e=1` and `zdd.test=<id>` and removed by a guard, also
//! when the test fails.

mod common;

use std::path::Path;

use common::*;
use zdd_e2e::docker;

/// Images (and containers made from them) labelled with one test id.
struct Images {
    id: String,
}

impl Images {
    fn new(name: &str) -> Self {
        Images {
            id: format!("zdd-assets-e2e-{name}-{}", std::process::id()),
        }
    }

    /// Builds `FROM scratch` + `COPY site /site` from a context holding
    /// `site`; returns the tag.
    fn build(&self, tag: &str, context: &Path) -> String {
        let image = format!("{}:{tag}", self.id);
        std::fs::write(
            context.join("Dockerfile"),
            format!(
                "FROM scratch\nCOPY site /site\nLABEL zdd.e2e=1 zdd.test={}\n",
                self.id
            ),
        )
        .unwrap();
        let out = docker(&["build", "-q", "-t", &image, s(context)]);
        assert!(
            out.status.success(),
            "docker build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        image
    }

    fn containers(&self) -> Vec<String> {
        let filter = format!("label=zdd.test={}", self.id);
        let out = docker(&["ps", "-aq", "--filter", &filter]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        let containers = self.containers();
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(containers.iter().map(String::as_str));
            docker(&args);
        }
        let filter = format!("label=zdd.test={}", self.id);
        let out = docker(&["images", "-q", "--filter", &filter]);
        let mut images: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        images.sort();
        images.dedup();
        if !images.is_empty() {
            let mut args = vec!["rmi", "-f"];
            args.extend(images.iter().map(String::as_str));
            docker(&args);
        }
    }
}

#[test]
fn publishing_from_an_image_gives_the_same_release_as_from_the_folder() {
    let t = Scratch::new("image");
    let images = Images::new("same");
    let context = t.path("context");
    write_site(&context.join("site"), &site(1));
    let image = images.build("v1", &context);

    // Into one root: the image's build is the folder's release, reused.
    let root = t.path("root");
    let from_dir = publish(&context.join("site"), &root);
    let from_image = publish(Path::new(&format!("{image}:/site/")), &root);
    assert_eq!(from_image["id"], from_dir["id"]);
    assert_eq!(from_image["reused"], true);
    assert_eq!(from_image["new_files"], 0);

    // Into a fresh root: the same manifest, byte for byte.
    let other = t.path("other");
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
    assert!(images.containers().is_empty(), "{:?}", images.containers());
}

#[test]
fn a_bad_image_source_is_refused_without_writing() {
    let t = Scratch::new("image-bad");
    let images = Images::new("bad");
    let context = t.path("context");
    write_site(&context.join("site"), &site(1));
    std::os::unix::fs::symlink("/etc/passwd", context.join("site/img/passwd")).unwrap();
    let image = images.build("links", &context);
    let root = t.path("root");
    for (source, why) in [
        (format!("{image}:/site"), "symbolic link"),
        (format!("{image}:/nowhere"), "has no /nowhere"),
        (format!("{}:missing:/site", images.id), "no image"),
    ] {
        let run = zdd(&["publish", &source, "--root", s(&root)]);
        assert_eq!(run.code, 2, "{source}: {}", run.stderr);
        assert!(run.stderr.contains(why), "{source}: {}", run.stderr);
        assert!(!root.exists(), "{source}: nothing may be written");
    }
    assert!(images.containers().is_empty(), "{:?}", images.containers());
}
