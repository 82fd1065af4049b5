//! A service deployed behind a real HAProxy, and what the deploy tests
//! assert about it: no failed request, which version serves, which
//! containers are left, and what HAProxy routes to.
//!
//! The fault tests also report each scenario as a JSON line to the file
//! `ZDD_FAULTS_REPORT` names, so `scripts/bench-faults` prints the fault
//! matrix from the very runs the tests assert on.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{bin_dir, deploy, poll_until, Haproxy, Sandbox};

/// The load's clients in every deploy test.
pub const CLIENTS: usize = 8;

/// A sandbox with HAProxy and v1 (startup delay 500 ms, plus `env`)
/// deployed as two replicas.
pub fn stage_with(name: &str, env: &[(&str, &str)]) -> (Sandbox, Haproxy) {
    let sandbox = Sandbox::new(name);
    let haproxy = Haproxy::start(&sandbox);
    let mut v1_env = vec![("STARTUP_DELAY_MS", "500")];
    v1_env.extend_from_slice(env);
    let v1 = sandbox.app_context("v1", &v1_env);
    deploy(&sandbox, &haproxy, &v1, &["--replicas", "2"]).expect_code(0);
    (sandbox, haproxy)
}

/// [`stage_with`] and no extra environment.
pub fn stage(name: &str) -> (Sandbox, Haproxy) {
    stage_with(name, &[])
}

/// Builds `context` for the sandbox's service (zdd-build), so a deploy
/// that follows spends no time building; the image record's run.
#[track_caller]
pub fn prebuild(sandbox: &Sandbox, context: &std::path::Path) -> crate::Run {
    crate::run(
        "zdd-build",
        &["--service", &sandbox.id, context.to_str().unwrap()],
        "",
    )
    .ok()
}

/// The ids of the service's running replicas, sorted.
pub fn replica_ids(sandbox: &Sandbox) -> Vec<String> {
    let service = format!("label=zdd.service={}", sandbox.id);
    let mut ids = sandbox.container_ids(false, &[&service]);
    ids.sort();
    ids
}

/// Every container of the sandbox, running or not, sorted.
pub fn all_container_ids(sandbox: &Sandbox) -> Vec<String> {
    let mut ids = sandbox.container_ids(true, &[]);
    ids.sort();
    ids
}

/// The addresses of the service's running replicas, sorted.
pub fn replica_addresses(sandbox: &Sandbox) -> Vec<String> {
    let mut addresses: Vec<String> = replica_ids(sandbox)
        .iter()
        .map(|id| format!("{}:8080", crate::container_ip(&sandbox.inspect(id))))
        .collect();
    addresses.sort();
    addresses
}

/// The load ran and no request failed.
#[track_caller]
pub fn assert_no_failures(load: &Value) {
    assert!(
        load["requests"].as_u64().unwrap() > 100,
        "the load ran: {load}"
    );
    assert_eq!(
        load["failed"], 0,
        "failed requests: {}",
        load["first_failures"]
    );
}

/// The load ran, and every request that failed failed as `kind` (a key of
/// its `failures`, e.g. `status_503`): none refused, reset or dropped.
#[track_caller]
pub fn assert_failures_only(load: &Value, kind: &str) {
    let failures = load["failures"].as_object().expect("the load's failures");
    assert!(
        failures
            .iter()
            .all(|(k, n)| k == kind || n.as_u64() == Some(0)),
        "failures other than {kind}: {failures:?}"
    );
}

/// A run folder's `summary.json`.
pub fn run_summary(run: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(run.join("summary.json")).expect("the run's summary.json");
    serde_json::from_str(&text).expect("summary.json is JSON")
}

/// The names of the steps a run summary lists, in order.
pub fn summary_steps(summary: &Value) -> Vec<String> {
    summary["steps"]
        .as_array()
        .expect("the summary's steps")
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_owned())
        .collect()
}

/// The versions in the last buckets of the load's timeline.
pub fn versions_at_end(load: &Value) -> Vec<String> {
    let timeline = load["timeline"].as_array().unwrap();
    let last = timeline
        .iter()
        .rev()
        .find(|b| !b["versions"].as_object().unwrap().is_empty())
        .unwrap();
    last["versions"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// The versions that answered at any time during the load.
pub fn versions_seen(load: &Value) -> Vec<String> {
    load["versions"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// Sends `signal` to the process `pid`.
pub fn signal_process(pid: u32, signal: i32) {
    let pid = i32::try_from(pid).expect("a pid fits in i32");
    assert!(pid > 1, "never signal pid {pid}");
    // SAFETY: kill(2) with a positive pid signals that process only.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// Sends `signal` to every process in the group led by `pid` (what a
/// terminal's Ctrl-C does, or a CI runner cancelling a job).
pub fn signal_group(pid: u32, signal: i32) {
    let pgid = i32::try_from(pid).expect("a pid fits in i32");
    assert!(pgid > 1, "never signal group {pgid}");
    // SAFETY: kill(2) with a negative pid signals that process group only.
    let rc = unsafe { libc::kill(-pgid, signal) };
    assert_eq!(
        rc,
        0,
        "kill(-{pgid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// The run folder of the sandbox's deploys that was made last.
pub fn newest_run(sandbox: &Sandbox) -> Option<PathBuf> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(sandbox.dir.join("runs"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    runs.sort();
    runs.pop()
}

/// Waits until a run folder other than `earlier` holds `file` (a step's
/// output file appears when the step starts); returns that folder.
#[track_caller]
pub fn wait_for_run_step(
    sandbox: &Sandbox,
    earlier: Option<&PathBuf>,
    file: &str,
    timeout: Duration,
) -> PathBuf {
    let mut run = None;
    poll_until(timeout, || {
        run = newest_run(sandbox).filter(|r| Some(r) != earlier && r.join(file).exists());
        run.is_some()
    });
    run.unwrap_or_else(|| panic!("no new run reached {file} within {timeout:?}"))
}

/// A folder of the zdd binaries of this build in which `tool` is replaced
/// by a shell script (`script` runs with `$REAL` set to the real tool), to
/// inject a fault at one exact point of a deploy. Pass it as `ZDD_BIN`.
pub fn bin_with_wrapper(sandbox: &Sandbox, tool: &str, script: &str) -> PathBuf {
    let real_dir = bin_dir();
    let dir = sandbox.dir.join(format!("bin-{tool}"));
    std::fs::create_dir_all(&dir).unwrap();
    for name in [
        "zdd-build",
        "zdd-scale",
        "zdd-health",
        "zdd-route",
        "zdd-retire",
        "zdd-ps",
        "zdd-run",
        "zdd-releases",
        "zdd-watch",
    ] {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        if name == tool {
            let text = format!(
                "#!/usr/bin/env bash\nREAL={}\n{script}\n",
                real_dir.join(name).display()
            );
            std::fs::write(&link, text).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&link, std::fs::Permissions::from_mode(0o755)).unwrap();
        } else {
            std::os::unix::fs::symlink(real_dir.join(name), &link).unwrap();
        }
    }
    dir
}

/// One scenario of the fault matrix, as `scripts/bench-faults` prints it.
pub struct Scenario<'a> {
    pub name: &'a str,
    pub load: &'a Value,
    pub exit: i32,
    pub serving: &'a [String],
    pub leftovers: usize,
    pub rerun_exit: Option<i32>,
}

impl Scenario<'_> {
    /// Appends the scenario to `$ZDD_FAULTS_REPORT`, if it is set.
    pub fn report(&self) {
        let Some(path) = std::env::var_os("ZDD_FAULTS_REPORT") else {
            return;
        };
        let line = json!({
            "scenario": self.name,
            "requests": self.load["requests"],
            "failed": self.load["failed"],
            "exit": self.exit,
            "serving_after": self.serving,
            "leftovers": self.leftovers,
            "rerun_exit": self.rerun_exit,
        });
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the fault report");
        writeln!(file, "{line}").expect("write the fault report");
    }
}
