//! A real HAProxy in front of a sandbox's replicas.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{free_port, Sandbox};

/// A real HAProxy in front of the sandbox's replicas: a frontend on a free
/// loopback port, an empty backend `app` with an HTTP check, and an admin
/// socket. Stopped when dropped.
pub struct Haproxy {
    pub port: u16,
    pub socket: PathBuf,
    child: std::process::Child,
}

impl Haproxy {
    pub fn start(sandbox: &Sandbox) -> Self {
        let port = free_port();
        let socket = sandbox.dir.join("admin.sock");
        let config = sandbox.dir.join("haproxy.cfg");
        let lines = [
            "global".to_string(),
            format!("    stats socket {} mode 600 level admin", socket.display()),
            "defaults".into(),
            "    mode http".into(),
            "    timeout connect 2s".into(),
            "    timeout client 30s".into(),
            "    timeout server 30s".into(),
            // A request a replica refused or closed before answering never
            // reached the app: safe to try on another replica.
            "    retries 3".into(),
            "    option redispatch".into(),
            "    retry-on conn-failure empty-response".into(),
            "frontend fe".into(),
            format!("    bind 127.0.0.1:{port}"),
            "    default_backend app".into(),
            "backend app".into(),
            "    balance roundrobin".into(),
            "    option httpchk GET /healthz".into(),
        ];
        std::fs::write(&config, lines.join("\n") + "\n").unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy (apt-get install haproxy)");
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(socket.exists(), "haproxy's admin socket did not appear");
        Haproxy {
            port,
            socket,
            child,
        }
    }

    /// One Runtime API command; HAProxy's answer.
    pub fn command(&self, command: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(&self.socket)
            .expect("connect to the admin socket");
        stream.write_all(format!("{command}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    /// `ip:port` of every server in backend `app`, sorted.
    pub fn server_addresses(&self) -> Vec<String> {
        let state = self.command("show servers state app");
        let mut lines = state.lines().skip(1);
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(' ')
            .collect();
        let column = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .expect("show servers state column")
        };
        let (addr, port) = (column("srv_addr"), column("srv_port"));
        let mut addresses: Vec<String> = lines
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let fields: Vec<&str> = l.split(' ').collect();
                format!("{}:{}", fields[addr], fields[port])
            })
            .collect();
        addresses.sort();
        addresses
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
