//! A real Caddy 2 (`caddy run`, Debian's 2.6), for zdd-route's tests and
//! the end-to-end tests that route through Caddy.
//!
//! The config is JSON, written into the test's folder: one `http` server
//! on a free loopback port whose last route is a `reverse_proxy` handler
//! with an `@id` (`api` unless told), an active health check
//! (`GET /healthz` every 200 ms) and `lb_try_duration` (a request whose
//! upstream refuses the connection is tried again on another one instead of
//! failing). The admin API listens on another free loopback port. Caddy's
//! autosave (`autosave.json`) and data folder are kept in the test's folder
//! too (`XDG_CONFIG_HOME`, `XDG_DATA_HOME`), never in the user's home.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::{free_port, http_get, http_request, poll_until, Sandbox, Scratch};

/// A running Caddy, stopped when dropped.
pub struct Caddy {
    /// The HTTP server's port on 127.0.0.1.
    pub port: u16,
    /// The admin API's port on 127.0.0.1.
    pub admin_port: u16,
    /// The `@id` of the reverse_proxy handler traffic goes through.
    pub handler_id: String,
    /// With [`CaddyOptions::drain_handler`]: the `@id` of a reverse_proxy
    /// handler no request is routed to.
    pub drain_id: Option<String>,
    pub config: PathBuf,
    pub log_path: PathBuf,
    /// `XDG_CONFIG_HOME` and `XDG_DATA_HOME` of the process.
    home: PathBuf,
    child: Child,
    _scratch: Option<Scratch>,
}

/// How to start a [`Caddy`]: [`Caddy::options`], then these, then
/// [`CaddyOptions::start`] or [`CaddyOptions::start_in`].
#[derive(Clone, Debug)]
pub struct CaddyOptions {
    handler_id: String,
    drain_id: Option<String>,
    upstreams: Vec<String>,
    routes: Vec<Value>,
    health_checks: bool,
    try_duration: Option<String>,
}

impl CaddyOptions {
    /// The reverse_proxy handler's `@id` (default `api`).
    pub fn handler_id(mut self, id: &str) -> Self {
        self.handler_id = id.to_owned();
        self
    }

    /// An upstream of the handler in the config file (default: none).
    pub fn upstream(mut self, dial: &str) -> Self {
        self.upstreams.push(dial.to_owned());
        self
    }

    /// A second reverse_proxy handler `id`, without upstreams, in a route
    /// that matches no request: where an upstream is parked while its
    /// requests in flight finish, so that `/reverse_proxy/upstreams` keeps
    /// counting them.
    pub fn drain_handler(mut self, id: &str) -> Self {
        self.drain_id = Some(id.to_owned());
        self
    }

    /// A route of its own, put before the handler's.
    pub fn route(mut self, route: Value) -> Self {
        self.routes.push(route);
        self
    }

    /// No active health check.
    pub fn no_health_checks(mut self) -> Self {
        self.health_checks = false;
        self
    }

    /// `load_balancing.try_duration` (default `5s`; `None`: one try).
    pub fn try_duration(mut self, duration: Option<&str>) -> Self {
        self.try_duration = duration.map(str::to_owned);
        self
    }

    /// The JSON config for an HTTP server on `port`, admin on `admin_port`.
    pub fn config(&self, port: u16, admin_port: u16) -> Value {
        let mut handler = json!({
            "handler": "reverse_proxy",
            "@id": self.handler_id,
            "upstreams": self.upstreams.iter().map(|d| json!({"dial": d})).collect::<Vec<_>>(),
            "load_balancing": {"selection_policy": {"policy": "round_robin"}},
        });
        if self.health_checks {
            handler["health_checks"] =
                json!({"active": {"uri": "/healthz", "interval": "200ms", "timeout": "1s"}});
        }
        if let Some(duration) = &self.try_duration {
            handler["load_balancing"]["try_duration"] = json!(duration);
            handler["load_balancing"]["try_interval"] = json!("50ms");
        }
        let mut routes = self.routes.clone();
        if let Some(id) = &self.drain_id {
            routes.push(json!({
                "match": [{"expression": "false"}],
                "handle": [{"handler": "reverse_proxy", "@id": id}],
            }));
        }
        routes.push(json!({"handle": [handler]}));
        json!({
            "admin": {"listen": format!("127.0.0.1:{admin_port}")},
            "apps": {"http": {"servers": {"zdd": {
                "listen": [format!("127.0.0.1:{port}")],
                "routes": routes,
            }}}},
        })
    }

    /// Starts Caddy in a scratch folder of its own.
    pub fn start(self) -> Caddy {
        let scratch = Scratch::new("caddy");
        let mut caddy = self.start_in(scratch.path());
        caddy._scratch = Some(scratch);
        caddy
    }

    /// Starts Caddy with its config, log, autosave and data in `dir`;
    /// waits until its admin API answers.
    pub fn start_in(self, dir: &Path) -> Caddy {
        migrate_queued_connections();
        let (port, admin_port) = (free_port(), free_port());
        let config = dir.join("caddy.json");
        let text = serde_json::to_string_pretty(&self.config(port, admin_port)).unwrap();
        std::fs::write(&config, text).expect("write caddy.json");
        let home = dir.join("caddy-home");
        std::fs::create_dir_all(&home).expect("create caddy's home");
        let log_path = dir.join("caddy.log");
        let mut caddy = Caddy {
            port,
            admin_port,
            handler_id: self.handler_id,
            drain_id: self.drain_id,
            child: spawn(&["run", "--config"], &config, &home, &log_path),
            config,
            log_path,
            home,
            _scratch: None,
        };
        caddy.wait_for_admin();
        caddy
    }
}

/// Makes sure Linux moves the connections queued on a listening socket
/// Caddy closes at a reload to its new one (`net.ipv4.tcp_migrate_req`):
/// Caddy 2.6 opens a new socket at every config change (`SO_REUSEPORT`),
/// and without this the kernel resets what waited in the old one's queue,
/// a failure of the host's setting, not of the deploy (docs/caddy.md).
/// The tests run as root on a machine of their own; one that cannot set
/// it says how.
fn migrate_queued_connections() {
    const SETTING: &str = "/proc/sys/net/ipv4/tcp_migrate_req";
    if std::fs::read_to_string(SETTING).is_ok_and(|v| v.trim() == "1") {
        return;
    }
    std::fs::write(SETTING, "1").unwrap_or_else(|e| {
        panic!(
            "the Caddy tests need `sysctl -w net.ipv4.tcp_migrate_req=1` (writing {SETTING}: {e})"
        )
    });
}

fn spawn(args: &[&str], config: &Path, home: &Path, log_path: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("open caddy.log");
    let mut command = Command::new("caddy");
    command.args(args);
    if args.contains(&"--config") {
        command.arg(config);
    }
    command
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("the log, twice"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("start caddy ({e}): the tests need Caddy 2 (Debian: apt-get install -y caddy)")
        })
}

impl Caddy {
    /// The end-to-end tests' Caddy, in the sandbox's folder, handler `api`.
    pub fn start(sandbox: &Sandbox) -> Self {
        Caddy::options().start_in(&sandbox.dir)
    }

    /// The defaults: handler `api`, no upstream, an active health check on
    /// `/healthz` every 200 ms, `try_duration` 5 s, no drain handler.
    pub fn options() -> CaddyOptions {
        CaddyOptions {
            handler_id: "api".into(),
            drain_id: None,
            upstreams: Vec::new(),
            routes: Vec::new(),
            health_checks: true,
            try_duration: Some("5s".into()),
        }
    }

    /// Stops Caddy and starts it again with `caddy run --config FILE`, as a
    /// host's restart of Debian's `caddy.service` would: the upstreams
    /// added at runtime are gone.
    pub fn restart(&mut self) {
        self.respawn(&["run", "--config"]);
    }

    /// Stops Caddy and starts it again with `caddy run --resume` (Debian's
    /// `caddy-api.service`): the last config, autosaved at every change.
    pub fn restart_resume(&mut self) {
        self.respawn(&["run", "--resume"]);
    }

    fn respawn(&mut self, args: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(args, &self.config, &self.home, &self.log_path);
        self.wait_for_admin();
    }

    /// Where Caddy autosaves the config it runs.
    pub fn autosave_path(&self) -> PathBuf {
        self.home.join("config/caddy/autosave.json")
    }

    fn wait_for_admin(&mut self) {
        let admin = self.admin();
        let up = poll_until(Duration::from_secs(10), || {
            matches!(http_get(&admin, "/config/"), Some((200, _)))
                || !matches!(self.child.try_wait(), Ok(None))
        });
        assert!(
            up && matches!(self.child.try_wait(), Ok(None)),
            "caddy did not open its admin API on {admin}: {}",
            std::fs::read_to_string(&self.log_path).unwrap_or_default()
        );
    }

    /// The admin API, `127.0.0.1:PORT`.
    pub fn admin(&self) -> String {
        format!("127.0.0.1:{}", self.admin_port)
    }

    /// The HTTP server, `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.address())
    }

    /// `GET path` through Caddy: the status and body; panics when nothing
    /// answers.
    #[track_caller]
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.address(), path)
            .unwrap_or_else(|| panic!("Caddy's server did not answer GET {path}"))
    }

    /// The `dial` of every upstream of the handler, in order.
    pub fn upstream_addresses(&self) -> Vec<String> {
        self.upstream_addresses_of(&self.handler_id)
    }

    /// The `dial` of every upstream of the handler `id`, in order.
    pub fn upstream_addresses_of(&self, id: &str) -> Vec<String> {
        let path = format!("/id/{id}/upstreams");
        let response = http_request(&self.admin(), &path)
            .unwrap_or_else(|| panic!("Caddy's admin API did not answer GET {path}"));
        let body = if response.header("transfer-encoding") == Some("chunked") {
            dechunk(&response.body)
        } else {
            response.body
        };
        let body = String::from_utf8_lossy(&body);
        assert_eq!(response.status, 200, "GET {path}: {body}");
        let upstreams: Value = serde_json::from_str(&body).expect("upstreams as JSON");
        upstreams
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|u| u["dial"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The data of a chunked body (Caddy's admin API sends its `ETag` as a
/// trailer, so its answers are chunked); the trailer is dropped.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&raw[..end]);
        let size = size.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            break;
        };
        let start = end + 2;
        if size == 0 || raw.len() < start + size {
            break;
        }
        data.extend_from_slice(&raw[start..start + size]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
    data
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
