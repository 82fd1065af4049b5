//! A real HAProxy (`haproxy -db`, Debian's), for the end-to-end tests in
//! front of a sandbox's replicas and for zdd-route's own tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, http_get, poll_until, Sandbox, Scratch};

/// A running HAProxy: a frontend on a free loopback port routing to one
/// backend (`app` unless told) with an HTTP check (`GET /healthz`) and a
/// dynamic balance algorithm, and an admin Runtime API socket. Stopped
/// when dropped.
pub struct Haproxy {
    /// The frontend's port on 127.0.0.1.
    pub port: u16,
    /// The admin unix socket.
    pub socket: PathBuf,
    /// With [`HaproxyOptions::tcp_socket`]: the admin TCP socket,
    /// `127.0.0.1:PORT`.
    pub tcp_socket: Option<String>,
    /// With [`HaproxyOptions::user_socket`]: a socket at `level user`.
    pub user_socket: Option<PathBuf>,
    /// The frontend's backend.
    pub backend: String,
    child: Child,
    config: PathBuf,
    log_path: PathBuf,
    /// The folder of its own, when it has one, removed after the process
    /// stopped.
    _scratch: Option<Scratch>,
}

/// How to start a [`Haproxy`]: [`Haproxy::options`], then these, then
/// [`HaproxyOptions::start`].
#[derive(Clone, Debug)]
pub struct HaproxyOptions {
    backend: String,
    servers: Vec<String>,
    tcp_socket: bool,
    user_socket: bool,
}

impl HaproxyOptions {
    /// The backend's name (default `app`).
    pub fn backend(mut self, name: &str) -> Self {
        self.backend = name.to_owned();
        self
    }

    /// A server of the backend in the configuration file:
    /// `NAME ADDRESS [OPTIONS]`, as after `server` (default: none).
    pub fn server(mut self, line: &str) -> Self {
        self.servers.push(line.to_owned());
        self
    }

    /// An admin Runtime API socket on TCP too.
    pub fn tcp_socket(mut self) -> Self {
        self.tcp_socket = true;
        self
    }

    /// A Runtime API socket at `level user` too.
    pub fn user_socket(mut self) -> Self {
        self.user_socket = true;
        self
    }

    /// Starts HAProxy in a scratch folder of its own.
    pub fn start(self) -> Haproxy {
        let scratch = Scratch::new("haproxy");
        let mut haproxy = self.start_in(scratch.path());
        haproxy._scratch = Some(scratch);
        haproxy
    }

    /// Starts HAProxy with its configuration, log and sockets in `dir`;
    /// waits until its admin socket answers.
    pub fn start_in(self, dir: &Path) -> Haproxy {
        let port = free_port();
        let socket = dir.join("admin.sock");
        let user_socket = self.user_socket.then(|| dir.join("user.sock"));
        let tcp_socket = self
            .tcp_socket
            .then(|| format!("127.0.0.1:{}", free_port()));
        let mut lines = vec![
            "global".to_string(),
            format!("    stats socket {} mode 600 level admin", socket.display()),
        ];
        if let Some(user) = &user_socket {
            lines.push(format!(
                "    stats socket {} mode 600 level user",
                user.display()
            ));
        }
        if let Some(tcp) = &tcp_socket {
            lines.push(format!("    stats socket {tcp} level admin"));
        }
        lines.extend([
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
            format!("    default_backend {}", self.backend),
            format!("backend {}", self.backend),
            "    balance roundrobin".into(),
            "    option httpchk GET /healthz".into(),
        ]);
        lines.extend(self.servers.iter().map(|s| format!("    server {s}")));
        let config = dir.join("haproxy.cfg");
        std::fs::write(&config, lines.join("\n") + "\n").expect("write haproxy.cfg");
        let log_path = dir.join("haproxy.log");
        let mut haproxy = Haproxy {
            port,
            socket,
            tcp_socket,
            user_socket,
            backend: self.backend,
            child: spawn(&config, &log_path),
            config,
            log_path,
            _scratch: None,
        };
        haproxy.wait_for_socket();
        haproxy
    }
}

fn spawn(config: &Path, log_path: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("open haproxy.log");
    Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("the log, twice"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start haproxy ({e}): apt-get install -y haproxy"))
}

impl Haproxy {
    /// The end-to-end tests' HAProxy, in the sandbox's folder, with backend
    /// `app`.
    pub fn start(sandbox: &Sandbox) -> Self {
        Haproxy::options().start_in(&sandbox.dir)
    }

    /// The defaults: backend `app`, no server, the admin unix socket only.
    pub fn options() -> HaproxyOptions {
        HaproxyOptions {
            backend: "app".into(),
            servers: Vec::new(),
            tcp_socket: false,
            user_socket: false,
        }
    }

    /// Stops HAProxy and starts it again from its configuration file, as
    /// a host's restart would: the servers added at runtime are gone.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.config, &self.log_path);
        self.wait_for_socket();
    }

    fn wait_for_socket(&mut self) {
        let up = poll_until(Duration::from_secs(10), || {
            self.try_command("show info").is_ok() || !matches!(self.child.try_wait(), Ok(None))
        });
        assert!(
            up && matches!(self.child.try_wait(), Ok(None)),
            "haproxy did not open its admin socket: {}",
            std::fs::read_to_string(&self.log_path).unwrap_or_default()
        );
    }

    fn try_command(&self, command: &str) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(&self.socket)?;
        stream.write_all(format!("{command}\n").as_bytes())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    }

    /// One Runtime API command; HAProxy's answer.
    pub fn command(&self, command: &str) -> String {
        self.try_command(command)
            .unwrap_or_else(|e| panic!("haproxy's admin socket: {command}: {e}"))
    }

    /// `ip:port` of every server in the backend, sorted.
    pub fn server_addresses(&self) -> Vec<String> {
        let state = self.command(&format!("show servers state {}", self.backend));
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

    /// Sessions the backend's servers serve now (`scur` of `show stat`,
    /// summed).
    pub fn sessions(&self) -> u64 {
        let stat = self.command(&format!("show stat {} 4 -1", self.backend));
        let mut lines = stat.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let scur = header
            .iter()
            .position(|h| *h == "scur")
            .expect("show stat has scur");
        lines
            .filter_map(|l| l.split(',').nth(scur))
            .filter_map(|v| v.parse::<u64>().ok())
            .sum()
    }

    /// The frontend, `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.address())
    }

    /// `GET path` through the frontend: the status and body; panics when
    /// nothing answers.
    #[track_caller]
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.address(), path)
            .unwrap_or_else(|| panic!("HAProxy's frontend did not answer GET {path}"))
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
