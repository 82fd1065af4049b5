//! Support for the end-to-end tests: the real zdd binaries against the
//! real Docker engine, with the example app as the service.
//!
//! Each test works in a [`Sandbox`]: a unique id that names its service
//! and labels everything it creates (`zdd.test=<id>` on images, and so on
//! every container made from them; networks and Compose projects by
//! name). Dropping the sandbox removes all of it, also when the test
//! panics. `scripts/test` sweeps whatever a killed run left behind
//! (`zdd.e2e=1`).
//!
//! The engine is driven through the `docker` CLI here on purpose: the
//! tests check the tools against what an operator would see, through a
//! client that is not the one under test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

mod deployed;
mod haproxy;
mod load;

pub use deployed::*;
pub use haproxy::Haproxy;
pub use load::Load;

/// The label every image (and so every container) of a test carries.
pub const TEST_LABEL: &str = "zdd.test";
/// The label that marks anything made by an end-to-end test.
pub const E2E_LABEL: &str = "zdd.e2e";

/// What one test creates, removed when dropped.
pub struct Sandbox {
    /// Unique per test run: `zdd-e2e-<name>-<pid>-<n>`.
    pub id: String,
    /// A private temporary folder.
    pub dir: PathBuf,
}

impl Sandbox {
    pub fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("zdd-e2e-{name}-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(&id);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the sandbox folder");
        Sandbox { id, dir }
    }

    /// Writes a build context for the example app: the static binary, and a
    /// Dockerfile setting `APP_VERSION=version`, the extra `env`, a fast
    /// HEALTHCHECK running `/app --probe`, and this sandbox's labels.
    ///
    /// The instructions every test image shares come first and what varies
    /// last, in as few instructions as possible: the engine's classic
    /// builder commits a layer per instruction (~0.8 s each on
    /// fuse-overlayfs), and the shared ones are then a cache hit.
    pub fn app_context(&self, version: &str, env: &[(&str, &str)]) -> PathBuf {
        let dir = self.dir.join(format!("context-{version}"));
        std::fs::create_dir_all(&dir).expect("create the context folder");
        std::fs::copy(example_app(), dir.join("app")).expect("copy the example app");
        let env: String = [("APP_VERSION", version)]
            .iter()
            .chain(env)
            .map(|(key, value)| format!(" {key}={}", dockerfile_quote(value)))
            .collect();
        let dockerfile = format!(
            "FROM scratch\nCOPY app /app\nEXPOSE 8080\n\
             HEALTHCHECK --interval=500ms --timeout=1s --retries=3 --start-period=5s CMD [\"/app\", \"--probe\"]\n\
             ENTRYPOINT [\"/app\"]\n\
             LABEL {TEST_LABEL}={id} {E2E_LABEL}=1\n\
             ENV{env}\n",
            id = self.id
        );
        std::fs::write(dir.join("Dockerfile"), dockerfile).expect("write the Dockerfile");
        dir
    }

    /// Ids of this sandbox's containers matching extra `docker ps` filters
    /// (running only unless `all`).
    pub fn container_ids(&self, all: bool, filters: &[&str]) -> Vec<String> {
        let mut args = vec!["ps", "-q", "--no-trunc"];
        if all {
            args.push("-a");
        }
        let label = format!("label={TEST_LABEL}={}", self.id);
        args.extend(["--filter", &label]);
        for filter in filters {
            args.extend(["--filter", filter]);
        }
        docker_lines(&args)
    }

    /// `docker inspect` of a container, as JSON.
    pub fn inspect(&self, id: &str) -> Value {
        let out = docker(&["inspect", id]);
        let list: Value = serde_json::from_slice(&out.stdout).expect("docker inspect prints JSON");
        list[0].clone()
    }

    /// The versions the running replicas of the sandbox's service (named
    /// after the sandbox) answer `/` with, sorted; one-offs left out.
    pub fn serving_versions(&self) -> Vec<String> {
        let service = format!("label=zdd.service={}", self.id);
        let mut versions: Vec<String> = self
            .container_ids(false, &[&service])
            .iter()
            .map(|id| self.inspect(id))
            .filter(|inspect| inspect["Config"]["Labels"]["zdd.oneoff"].is_null())
            .map(|inspect| {
                let ip = container_ip(&inspect);
                let (status, body) =
                    http_get(&format!("{ip}:8080"), "/").expect("the replica answers");
                assert_eq!(status, 200);
                body.trim().to_owned()
            })
            .collect();
        versions.sort();
        versions
    }

    /// Creates a network labelled for cleanup; returns its name.
    pub fn network(&self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.id);
        let label = format!("{TEST_LABEL}={}", self.id);
        let out = docker(&[
            "network",
            "create",
            "--label",
            &label,
            "--label",
            "zdd.e2e=1",
            &name,
        ]);
        assert!(
            out.status.success(),
            "network create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        name
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let label = format!("label={TEST_LABEL}={}", self.id);
        let project = format!("label=com.docker.compose.project={}", self.id);
        for filter in [&label, &project] {
            let ids = docker_lines(&["ps", "-aq", "--filter", filter]);
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f", "-v"];
                args.extend(ids.iter().map(String::as_str));
                docker(&args);
            }
            let networks = docker_lines(&["network", "ls", "-q", "--filter", filter]);
            if !networks.is_empty() {
                let mut args = vec!["network", "rm"];
                args.extend(networks.iter().map(String::as_str));
                docker(&args);
            }
        }
        let images = docker_lines(&["images", "-q", "--no-trunc", "--filter", &label]);
        if !images.is_empty() {
            let mut args = vec!["rmi", "-f"];
            let mut unique = images.clone();
            unique.sort();
            unique.dedup();
            args.extend(unique.iter().map(String::as_str));
            docker(&args);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A container's IP, as zdd-core picks it: on the network first by name.
pub fn container_ip(inspect: &Value) -> String {
    let networks = inspect["NetworkSettings"]["Networks"]
        .as_object()
        .expect("the container has networks");
    let mut names: Vec<&String> = networks.keys().collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|name| networks[name]["IPAddress"].as_str())
        .find(|ip| !ip.is_empty())
        .expect("the container has an IP")
        .to_owned()
}

/// Runs the docker CLI.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the docker CLI")
}

/// Runs the docker CLI and returns its non-empty output lines.
pub fn docker_lines(args: &[&str]) -> Vec<String> {
    let out = docker(args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The result of running one tool.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// The stdout records, parsed.
    pub fn records(&self) -> Vec<Value> {
        parse_records(&self.stdout)
    }

    /// The only record; panics unless there is exactly one.
    #[track_caller]
    pub fn record(&self) -> Value {
        let records = self.records();
        assert_eq!(
            records.len(),
            1,
            "wanted one record\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        records.into_iter().next().expect("one record")
    }

    /// Panics with the tool's output unless it exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        self.expect_code(0);
        self
    }

    /// The container records of one role.
    pub fn role(&self, role: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["type"] == "container" && r["role"] == role)
            .collect()
    }

    /// Panics with the tool's stderr unless it exited with `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code {} (wanted {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Parses JSON Lines.
pub fn parse_records(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l}: {e}")))
        .collect()
}

/// Runs a zdd tool with `stdin` as its input.
pub fn run(tool: &str, args: &[&str], stdin: &str) -> Run {
    let out = assert_cmd::Command::new(binary(tool))
        .args(args)
        .write_stdin(stdin)
        .timeout(Duration::from_secs(180))
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    Run::from(out)
}

/// The path of a zdd tool's binary, built (once per process) if needed.
pub fn binary(tool: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // target/<profile>/deps/<test> → target/<profile>
        let exe = std::env::current_exe().expect("the test's own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("tests run from target/<profile>/deps")
            .to_path_buf();
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo.args(["build", "--quiet", "--workspace", "--bins"]);
        if profile_dir.ends_with("release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build");
        assert!(status.success(), "cargo build --workspace --bins failed");
        profile_dir
    });
    dir.join(tool)
}

/// A value for a Dockerfile `ENV key=value`, double-quoted and escaped so
/// spaces, quotes and `$` arrive as written.
fn dockerfile_quote(value: &str) -> String {
    let escaped = value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('$', "\\$");
    format!("\"{escaped}\"")
}

/// The example app, built statically (so it runs in a `FROM scratch`
/// image), once per process.
pub fn example_app() -> &'static Path {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    APP.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .to_path_buf();
        let target_dir = root.join("target/static");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .args([
                "build",
                "--quiet",
                "--release",
                "--target",
                "x86_64-unknown-linux-gnu",
                "-p",
                "zdd-example-app",
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            .status()
            .expect("run cargo build for the example app");
        assert!(status.success(), "building the static example app failed");
        target_dir.join("x86_64-unknown-linux-gnu/release/zdd-example-app")
    })
}

/// `GET http://address/path` with a plain socket: the status and body, or
/// `None` when nothing answers.
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr = address.parse().ok()?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// The `address` of a container record.
pub fn address(record: &Value) -> String {
    record["address"]
        .as_str()
        .expect("the record has an address")
        .to_owned()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `scripts/zdd-deploy` for the sandbox's service through `haproxy`,
/// with the tools of this build.
pub fn deploy(sandbox: &Sandbox, haproxy: &Haproxy, context: &Path, extra: &[&str]) -> Run {
    let out = deploy_command(sandbox, haproxy, context, extra)
        .output()
        .expect("run zdd-deploy");
    Run::from(out)
}

/// The `scripts/zdd-deploy` command [`deploy`] runs, to spawn it.
pub fn deploy_command(
    sandbox: &Sandbox,
    haproxy: &Haproxy,
    context: &Path,
    extra: &[&str],
) -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut command = Command::new(root.join("scripts/zdd-deploy"));
    command
        .env("ZDD_BIN", binary("zdd-build").parent().unwrap())
        // The host-wide state (locks) in the sandbox, removed with it.
        .env("ZDD_STATE_DIR", sandbox.dir.join("state"))
        .args([
            "--service",
            &sandbox.id,
            "--backend",
            "app",
            "--grace",
            "10s",
            // A generous bound for a busy machine; a release that is never
            // healthy still fails at once, when Docker calls it unhealthy.
            "--health-timeout",
            "30s",
        ])
        .arg("--haproxy-socket")
        .arg(&haproxy.socket)
        .arg("--runs-dir")
        .arg(sandbox.dir.join("runs"))
        .args(extra)
        .arg(context)
        .stdin(Stdio::null());
    command
}
