//! Helpers for the `zdd-assets` tests: the real binary, a real nginx
//! started per test, a tiny HTTP client that shows headers, and a checker
//! for "every file the live page references exists".
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A private temporary folder, removed when dropped.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "zdd-assets-test-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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

pub use zdd_e2e::{free_port, Run};

pub fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("zdd-assets")
}

/// Runs `zdd-assets ARGS`.
pub fn zdd(args: &[&str]) -> Run {
    let out = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run zdd-assets");
    Run::from(out)
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

/// A real nginx serving an asset root with the snippet `zdd-assets nginx`
/// prints, on a free loopback port. Stopped when dropped (also when a test
/// panics).
pub struct Nginx {
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    pub fn start(root: &Path, extra: &[&str]) -> Nginx {
        ensure_nginx();
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "zdd-assets-nginx-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let mut args = vec!["nginx", "--root", s(root)];
        args.extend(extra);
        let snippet = zdd(&args).ok().stdout;
        std::fs::write(dir.join("zdd-assets.conf"), snippet).unwrap();
        let port = free_port();
        let d = dir.display();
        let mime = if Path::new("/etc/nginx/mime.types").exists() {
            "include /etc/nginx/mime.types;".to_string()
        } else {
            "types { text/html html; text/css css; application/javascript js; }".to_string()
        };
        let config = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  {mime}\n  access_log off;\n\
               client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n\
               fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n\
               scgi_temp_path {d}/tmp/scgi;\n\
               server {{\n    listen 127.0.0.1:{port};\n    root {root}/live;\n\
                 include {d}/zdd-assets.conf;\n  }}\n}}\n",
            root = root.display()
        );
        std::fs::write(dir.join("nginx.conf"), config).unwrap();
        let child = Command::new(nginx_binary().expect("nginx is installed"))
            .args([
                "-p",
                s(&dir),
                "-e",
                &format!("{d}/error.log"),
                "-c",
                &format!("{d}/nginx.conf"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx { port, child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
                panic!("nginx exited ({status}): {log}");
            }
            assert!(Instant::now() < deadline, "nginx did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    pub fn get(&self, path: &str) -> Response {
        http_get(self.port, path)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT would wait for connections; the test is over: SIGTERM.
        send_signal(self.child.id(), 15);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn send_signal(pid: u32, signal: i32) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status();
}

/// nginx from Debian's packages; `scripts/test` installs it when missing.
fn ensure_nginx() {
    assert!(
        nginx_binary().is_some(),
        "these tests need nginx: run them with scripts/test, or apt-get install nginx"
    );
}

/// Where nginx is (Debian puts it in /usr/sbin, which a user's PATH may
/// lack).
fn nginx_binary() -> Option<PathBuf> {
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.exists() {
        return Some(sbin);
    }
    which("nginx").then(|| PathBuf::from("nginx"))
}

fn which(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An HTTP response, headers lowercased.
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// GET `path` from 127.0.0.1:`port` with HTTP/1.1 and `Connection: close`.
pub fn http_get(port: u16, path: &str) -> Response {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}
