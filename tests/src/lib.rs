//! The test support of the whole workspace: the end-to-end tests (the
//! real zdd binaries against the real Docker engine, with the example app
//! as the service) and the integration tests of the tools share it.
//!
//! - [`Scratch`]: a private temporary folder, removed when dropped;
//!   [`unique`] names, [`free_port`], [`wait_for`] / [`poll_until`].
//! - [`binary`], [`bin_dir`]: the binaries of this build; [`run`] and
//!   [`run_command`] capture a run as a [`Run`] (exit code, stdout,
//!   stderr, records).
//! - [`docker`], [`docker_lines`], [`docker_ok`]: the docker CLI.
//! - [`http_get`] / [`http_request`]: a plain-socket HTTP client.
//! - [`Haproxy`]: a real HAProxy with a backend and an admin socket;
//!   [`Caddy`]: a real Caddy 2 with a reverse_proxy handler and its admin API.
//! - [`postgres`]: throwaway PostgreSQL servers; [`Nginx`]: a real nginx.
//! - [`Sandbox`]: what one engine test creates, removed when dropped.
//!
//! Each engine test works in a [`Sandbox`]: a unique id that names its
//! service and labels everything it creates (`zdd.test=<id>` on images,
//! and so on every container made from them; networks and Compose projects
//! by name). Dropping the sandbox removes all of it, also when the test
//! panics. `scripts/test` sweeps whatever a killed run left behind
//! (`zdd.e2e=1`); the first scratch folder a test process makes sweeps the
//! folders of killed test processes.
//!
//! The engine is driven through the `docker` CLI here on purpose: the
//! tests check the tools against what an operator would see, through a
//! client that is not the one under test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

pub mod caddy;
mod deployed;
mod docker;
mod haproxy;
mod http;
mod load;
mod nginx;
pub mod postgres;
mod process;
mod scratch;
mod stub;

pub use caddy::{Caddy, CaddyOptions};
pub use deployed::*;
pub use docker::{container_ip, docker, docker_lines, docker_ok};
pub use haproxy::{Haproxy, HaproxyOptions};
pub use http::{http_get, http_request, Response};
pub use load::Load;
pub use nginx::Nginx;
pub use process::{bin_dir, binary, parse_records, run, run_command, Run};
pub use scratch::{free_port, poll_until, scratch_path, unique, wait_for, Scratch};
pub use stub::{StubReplica, STUB_SLOW};

/// The label every image (and so every container) of a test carries.
pub const TEST_LABEL: &str = "zdd.test";
/// The label that marks anything made by an end-to-end test.
pub const E2E_LABEL: &str = "zdd.e2e";

/// What one test creates, removed when dropped.
pub struct Sandbox {
    /// Unique per test run: `zdd-e2e-<name>-<pid>-<n>`.
    pub id: String,
    /// A private temporary folder, `TMP/<id>`.
    pub dir: PathBuf,
    /// Removes `dir`, after [`Sandbox`]'s own `drop`.
    _scratch: Scratch,
}

impl Sandbox {
    pub fn new(name: &str) -> Self {
        let id = unique(&format!("zdd-e2e-{name}"));
        let scratch = Scratch::named(&id);
        Sandbox {
            id,
            dir: scratch.path().to_path_buf(),
            _scratch: scratch,
        }
    }

    /// The Dockerfile line that labels an image (and every container made
    /// from it) as this sandbox's.
    pub fn label_instruction(&self) -> String {
        format!("LABEL {TEST_LABEL}={} {E2E_LABEL}=1\n", self.id)
    }

    /// Builds the image `<id>:<tag>` from `context`, whose Dockerfile is
    /// `FROM scratch`, then `instructions`, then this sandbox's labels;
    /// removed with the sandbox.
    #[track_caller]
    pub fn build_image(&self, tag: &str, context: &Path, instructions: &str) -> String {
        let image = format!("{}:{tag}", self.id);
        let dockerfile = format!("FROM scratch\n{instructions}{}", self.label_instruction());
        std::fs::write(context.join("Dockerfile"), dockerfile).expect("write the Dockerfile");
        let context = context.to_str().expect("a UTF-8 path");
        docker_ok(&["build", "-q", "-t", &image, context]);
        image
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
             {labels}\
             ENV{env}\n",
            labels = self.label_instruction()
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
        let e2e = format!("{E2E_LABEL}=1");
        docker_ok(&[
            "network", "create", "--label", &label, "--label", &e2e, &name,
        ]);
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
        let mut images = docker_lines(&["images", "-q", "--no-trunc", "--filter", &label]);
        images.sort();
        images.dedup();
        if !images.is_empty() {
            let mut args = vec!["rmi", "-f"];
            args.extend(images.iter().map(String::as_str));
            docker(&args);
        }
    }
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

/// The `address` of a container record.
pub fn address(record: &Value) -> String {
    record["address"]
        .as_str()
        .expect("the record has an address")
        .to_owned()
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
    pipeline_command("zdd-deploy", sandbox, haproxy, context, extra)
}

/// `scripts/zdd-deploy` for the sandbox's service through `haproxy` with
/// no build context: `extra` says which release (`--release REL`,
/// `--rollback`).
pub fn redeploy_command(sandbox: &Sandbox, haproxy: &Haproxy, extra: &[&str]) -> Command {
    let mut command = pipeline_base("zdd-deploy", sandbox, haproxy);
    command.args(extra);
    command
}

/// `scripts/SCRIPT` (zdd-deploy, or zdd-release, which passes these
/// options on to zdd-deploy) for the sandbox's service through `haproxy`.
pub fn pipeline_command(
    script: &str,
    sandbox: &Sandbox,
    haproxy: &Haproxy,
    context: &Path,
    extra: &[&str],
) -> Command {
    let mut command = pipeline_base(script, sandbox, haproxy);
    command.args(extra).arg(context);
    command
}

/// `scripts/SCRIPT` with the options every pipeline test passes.
fn pipeline_base(script: &str, sandbox: &Sandbox, haproxy: &Haproxy) -> Command {
    let mut command = pipeline_without_proxy(script, sandbox);
    command
        .args(["--backend", "app"])
        .arg("--haproxy-socket")
        .arg(&haproxy.socket);
    command
}

/// `scripts/zdd-deploy` for the sandbox's service through `caddy`
/// (handler `api`, drain handler `api-draining`), from `context` or, with
/// none, `extra` naming the release.
pub fn caddy_deploy_command(
    sandbox: &Sandbox,
    caddy: &Caddy,
    context: Option<&Path>,
    extra: &[&str],
) -> Command {
    let mut command = pipeline_without_proxy("zdd-deploy", sandbox);
    command
        .args(["--caddy-admin", &caddy.admin()])
        .args(["--caddy-handler", "api"])
        .args(["--caddy-drain-handler", "api-draining"])
        .args(extra);
    if let Some(context) = context {
        command.arg(context);
    }
    command
}

/// `scripts/SCRIPT` with the options every pipeline test passes but the
/// proxy's.
fn pipeline_without_proxy(script: &str, sandbox: &Sandbox) -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut command = Command::new(root.join("scripts").join(script));
    command
        .env("ZDD_BIN", bin_dir())
        // The host-wide state (locks) in the sandbox, removed with it.
        .env("ZDD_STATE_DIR", sandbox.dir.join("state"))
        .args([
            "--service",
            &sandbox.id,
            "--grace",
            "10s",
            // A generous bound for a busy machine; a release that is never
            // healthy still fails at once, when Docker calls it unhealthy.
            "--health-timeout",
            "30s",
        ])
        .arg("--runs-dir")
        .arg(sandbox.dir.join("runs"))
        .stdin(Stdio::null());
    command
}
