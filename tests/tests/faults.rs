//! zdd-deploy as a process: SIGKILL, SIGTERM and SIGINT at each step
//! (build, scale, health, route, retire) under load through HAProxy, a
//! lock that dies with the deploy, and its own dependencies.
//!
//! After every signal: no request failed, one release serves (the old
//! one, or the new one when the signal came after the switch), and the
//! next deploy is not refused and converges, leaving exactly its replicas
//! and nothing else.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use zdd_e2e::{
    all_container_ids, assert_no_failures, deploy, deploy_command, http_get, newest_run, prebuild,
    replica_addresses, replica_ids, signal_group, signal_process, stage_with, wait_for,
    wait_for_run_step, Haproxy, Load, Run, Sandbox, Scenario, CLIENTS,
};

/// Every release of these tests keeps accepting for 1.5 s after SIGTERM,
/// so the retire step lasts long enough to be interrupted.
const SHUTDOWN_DELAY: (&str, &str) = ("SHUTDOWN_DELAY_MS", "1500");

/// Where in the deploy the signal lands: the step, the file that appears
/// when it starts, how long after that, and the new release's environment
/// that makes the step last.
struct Point {
    step: &'static str,
    output: &'static str,
    after: Duration,
    env: &'static [(&'static str, &'static str)],
}

const POINTS: [Point; 5] = [
    Point {
        step: "build",
        output: "01-image.jsonl",
        after: Duration::from_millis(300),
        env: &[],
    },
    Point {
        step: "scale",
        output: "02-scaled.jsonl",
        after: Duration::from_millis(50),
        env: &[],
    },
    Point {
        step: "health",
        output: "03-health.jsonl",
        after: Duration::from_millis(300),
        env: &[("STARTUP_DELAY_MS", "2000")],
    },
    Point {
        step: "route",
        output: "04-routed.jsonl",
        after: Duration::from_millis(300),
        env: &[],
    },
    Point {
        step: "retire",
        output: "06-retired.jsonl",
        after: Duration::from_millis(300),
        env: &[],
    },
];

#[derive(Clone, Copy)]
enum Delivery {
    /// `kill -9` of the script and the tool it runs.
    KillGroup,
    /// `kill PID`: SIGTERM to the script alone (a CI runner, systemd).
    TermScript,
    /// Ctrl-C: SIGINT to the whole process group.
    InterruptGroup,
}

impl Delivery {
    fn name(self) -> &'static str {
        match self {
            Delivery::KillGroup => "SIGKILL",
            Delivery::TermScript => "SIGTERM",
            Delivery::InterruptGroup => "SIGINT",
        }
    }

    fn send(self, child: &Child) {
        match self {
            Delivery::KillGroup => signal_group(child.id(), libc::SIGKILL),
            Delivery::TermScript => signal_process(child.id(), libc::SIGTERM),
            Delivery::InterruptGroup => signal_group(child.id(), libc::SIGINT),
        }
    }

    /// The exit code the deploy must end with (None: killed).
    fn exit_code(self) -> Option<i32> {
        match self {
            Delivery::KillGroup => None,
            Delivery::TermScript => Some(143),
            Delivery::InterruptGroup => Some(130),
        }
    }
}

/// The releases that answer through HAProxy (20 requests), sorted.
fn releases_serving(haproxy: &Haproxy) -> Vec<String> {
    let address = format!("127.0.0.1:{}", haproxy.port);
    let mut versions: Vec<String> = (0..20)
        .map(|_| {
            let (status, body) = http_get(&address, "/").expect("HAProxy answers");
            assert_eq!(status, 200, "HAProxy serves");
            body.trim().to_owned()
        })
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

/// Runs the deploy of `version` and signals it at `point`; returns its
/// exit code and stderr.
fn signalled_deploy(
    sandbox: &Sandbox,
    haproxy: &Haproxy,
    context: &Path,
    point: &Point,
    delivery: Delivery,
) -> (Option<i32>, String) {
    let earlier = newest_run(sandbox);
    let stderr = sandbox.dir.join(format!("stderr-{}", point.step));
    let mut child = deploy_command(sandbox, haproxy, context, &[])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    wait_for_run_step(
        sandbox,
        earlier.as_ref(),
        point.output,
        Duration::from_secs(60),
    );
    std::thread::sleep(point.after);
    delivery.send(&child);
    let status = child.wait().unwrap();
    (status.code(), std::fs::read_to_string(stderr).unwrap())
}

/// Every point of [`POINTS`] with one way of signalling, on one service.
fn signals_at_every_step(name: &str, delivery: Delivery) {
    let (sandbox, haproxy) = stage_with(name, &[SHUTDOWN_DELAY]);
    let mut serving = releases_serving(&haproxy);
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);
    let mut results = Vec::new();
    for (n, point) in POINTS.iter().enumerate() {
        let target = format!("t{n}");
        let mut env = vec![SHUTDOWN_DELAY];
        env.extend_from_slice(point.env);
        let context = sandbox.app_context(&target, &env);
        if point.step != "build" {
            prebuild(&sandbox, &context);
        }
        if point.step == "route" {
            // Requests in flight on the old replicas make the drain last.
            let address = format!("127.0.0.1:{}", haproxy.port);
            // Long enough to outlast the steps before the route however
            // slow the machine is (the helper's 5 s read timeout would cut
            // them, so they are read to the end by hand).
            for _ in 0..4 {
                let address = address.clone();
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut stream = std::net::TcpStream::connect(&address).unwrap();
                    let _ = stream.write_all(
                        b"GET /?delay_ms=8000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                    );
                    let _ = stream.read_to_end(&mut Vec::new());
                });
            }
            // In flight before the deploy starts, so the signal lands in
            // the drain and not after it, however busy the machine is.
            wait_for(
                "the slow requests on the old replicas",
                Duration::from_secs(5),
                || haproxy.sessions() >= 4,
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let (code, stderr) = signalled_deploy(&sandbox, &haproxy, &context, point, delivery);
        let scenario = format!("{} during {}", delivery.name(), point.step);
        assert_eq!(code, delivery.exit_code(), "{scenario}: {stderr}");
        if delivery.exit_code().is_some() {
            // In the step it was meant for: a test that signalled a later
            // step would check the wrong promise.
            assert!(
                stderr.contains(&format!("interrupted during {}", point.step)),
                "{scenario}: {stderr}"
            );
        }
        let after = releases_serving(&haproxy);
        let leftovers = all_container_ids(&sandbox).len() - replica_ids(&sandbox).len();
        match delivery {
            // Nothing rolled back yet (the next run does that); a killed
            // route step may have left both releases routed.
            Delivery::KillGroup => assert!(
                after.iter().all(|v| v == &serving[0] || v == &target),
                "{scenario}: {after:?}"
            ),
            _ if point.step == "retire" => assert!(
                after == serving || after == [target.clone()],
                "{scenario}: one release serves: {after:?}"
            ),
            _ => assert_eq!(after, serving, "{scenario}: the old release serves"),
        }

        // The next deploy is not refused, and converges.
        let next = format!("n{n}");
        let next_context = sandbox.app_context(&next, &[SHUTDOWN_DELAY]);
        let rerun = deploy(&sandbox, &haproxy, &next_context, &["--replicas", "2"]);
        rerun.expect_code(0);
        assert_eq!(
            sandbox.serving_versions(),
            [next.clone(), next.clone()],
            "{scenario}: converged"
        );
        assert_eq!(
            all_container_ids(&sandbox),
            replica_ids(&sandbox),
            "{scenario}: nothing left behind"
        );
        assert_eq!(haproxy.server_addresses(), replica_addresses(&sandbox));
        results.push((scenario, code, after, leftovers, rerun.code));
        serving = vec![next];
    }
    std::thread::sleep(Duration::from_millis(300));
    let load = load.stop();
    assert_no_failures(&load);
    for (scenario, code, after, leftovers, rerun) in &results {
        Scenario {
            name: scenario,
            load: &load,
            exit: code.unwrap_or(-9),
            serving: after,
            leftovers: *leftovers,
            rerun_exit: Some(*rerun),
        }
        .report();
    }
}

#[test]
fn sigkill_at_every_step_is_converged_by_the_next_run() {
    signals_at_every_step("sigkill", Delivery::KillGroup);
}

#[test]
fn sigterm_at_every_step_rolls_back_and_exits_143() {
    signals_at_every_step("sigterm", Delivery::TermScript);
}

#[test]
fn sigint_at_every_step_rolls_back_and_exits_130() {
    signals_at_every_step("sigint", Delivery::InterruptGroup);
}

#[test]
fn the_lock_dies_with_the_deploy_not_with_the_tool_it_ran() {
    let (sandbox, haproxy) = stage_with("orphan", &[]);
    let v2 = sandbox.app_context("v2", &[("STARTUP_DELAY_MS", "3000")]);
    prebuild(&sandbox, &v2);
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);
    let earlier = newest_run(&sandbox);
    let mut child = deploy_command(&sandbox, &haproxy, &v2, &["-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_run_step(
        &sandbox,
        earlier.as_ref(),
        "03-health.jsonl",
        Duration::from_secs(60),
    );
    // SIGKILL to the script alone: its zdd-health lives on, orphaned.
    signal_process(child.id(), libc::SIGKILL);
    let _ = child.wait();
    let next = deploy(&sandbox, &haproxy, &v2, &["--replicas", "2"]);
    let load = load.stop();
    next.expect_code(0);
    assert!(!next.stderr.contains("another deploy"), "{}", next.stderr);
    assert!(next.stderr.contains("did not finish"), "{}", next.stderr);
    assert_no_failures(&load);
    assert_eq!(sandbox.serving_versions(), ["v2", "v2"]);
    assert_eq!(all_container_ids(&sandbox), replica_ids(&sandbox));
}

#[test]
fn a_missing_command_is_named_before_anything_changes() {
    let (sandbox, haproxy) = stage_with("nodate", &[]);
    let before = replica_ids(&sandbox);
    // A PATH with what the script needs but `date`.
    let path = sandbox.dir.join("path");
    std::fs::create_dir_all(&path).unwrap();
    for tool in ["bash", "env", "dirname", "sed"] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap();
        std::os::unix::fs::symlink(found, path.join(tool)).unwrap();
    }
    let v2 = sandbox.app_context("v2", &[]);
    let out = deploy_command(&sandbox, &haproxy, &v2, &[])
        .env("PATH", &path)
        .output()
        .unwrap();
    let refused = Run::from(out);
    refused.expect_code(2);
    assert!(refused.stderr.contains("`date`"), "{}", refused.stderr);
    assert_eq!(all_container_ids(&sandbox), before, "nothing was started");
    assert_eq!(
        std::fs::read_dir(sandbox.dir.join("runs")).unwrap().count(),
        1,
        "no run folder beside the staged deploy's"
    );
}
