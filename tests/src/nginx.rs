//! A real nginx, as the frontend's web server.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, http_request, poll_until, Response, Scratch};

/// A real nginx on a free loopback port: a server whose root is
/// `ROOT/live`, with the asset root's snippet (what `zdd-assets nginx`
/// prints) and any extra lines (e.g. a `location /api/` proxied to a
/// backend). Stopped when dropped (also when a test panics).
pub struct Nginx {
    pub port: u16,
    child: Child,
    /// Its configuration, pid and log, removed after it stopped.
    dir: Scratch,
}

impl Nginx {
    pub fn start(root: &Path, snippet: &str, extra: &str) -> Nginx {
        ensure_nginx();
        let dir = Scratch::new("nginx");
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        dir.write("zdd-assets.conf", snippet);
        let port = free_port();
        let d = dir.path().display();
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
                 {extra}\n    include {d}/zdd-assets.conf;\n  }}\n}}\n",
            root = root.display()
        );
        dir.write("nginx.conf", config);
        let child = Command::new(nginx_binary().expect("nginx is installed"))
            .args([
                "-p",
                &d.to_string(),
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
        let listening = poll_until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
                || !matches!(nginx.child.try_wait(), Ok(None))
        });
        if let Ok(Some(status)) = nginx.child.try_wait() {
            let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
            panic!("nginx exited ({status}): {log}");
        }
        assert!(listening, "nginx did not listen on {port}");
        nginx
    }

    /// `GET path`; panics when nginx does not answer.
    pub fn get(&self, path: &str) -> Response {
        http_request(&format!("127.0.0.1:{}", self.port), path)
            .unwrap_or_else(|| panic!("nginx did not answer GET {path}"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let (Ok(None), Ok(pid)) = (self.child.try_wait(), i32::try_from(self.child.id())) {
            // SIGQUIT would wait for connections; the test is over: SIGTERM.
            // SAFETY: kill(2) signals our child, which is not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            poll_until(Duration::from_secs(5), || {
                !matches!(self.child.try_wait(), Ok(None))
            });
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
