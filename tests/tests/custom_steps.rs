//! Deploying from a Makefile, with a custom step written in shell + jq
//! (examples/Makefile, examples/steps/zdd-notify).

use std::path::Path;
use std::process::Command;

use zdd_e2e::{bin_dir, parse_records, Sandbox};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// `make -f examples/Makefile TARGET` for the sandbox's service, with
/// the tools of this build.
fn make_command(sandbox: &Sandbox, target: &str) -> Command {
    let bin_dir = bin_dir();
    let mut command = Command::new("make");
    command
        .current_dir(repo())
        .args(["-s", "-f", "examples/Makefile", target])
        .arg(format!("SERVICE={}", sandbox.id))
        .arg(format!("ZDD_BIN={}", bin_dir.display()))
        .arg(format!("RUN={}", sandbox.dir.join("run").display()));
    command
}

fn make(sandbox: &Sandbox, target: &str) -> std::process::Output {
    make_command(sandbox, target).output().expect("run make")
}

fn make_deploy(sandbox: &Sandbox, context: &Path, log: &Path) -> std::process::Output {
    make_command(sandbox, "deploy")
        .arg(format!("CONTEXT={}", context.display()))
        .arg(format!("NOTIFY_LOG={}", log.display()))
        .arg("REPLICAS=2")
        .output()
        .expect("run make")
}

#[test]
fn a_makefile_deploys_with_a_shell_step_in_the_pipeline() {
    let sandbox = Sandbox::new("make");
    let log = sandbox.dir.join("notify.log");
    for version in ["v1", "v2"] {
        let out = make_deploy(&sandbox, &sandbox.app_context(version, &[]), &log);
        assert!(
            out.status.success(),
            "make deploy {version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(sandbox.serving_versions(), ["v2", "v2"]);

    // The custom step's fields survived zdd-retire, and it logged each container.
    let retired = std::fs::read_to_string(sandbox.dir.join("run/5-retired.jsonl")).unwrap();
    let records = parse_records(&retired);
    let new: Vec<_> = records.iter().filter(|r| r["role"] == "new").collect();
    assert_eq!(new.len(), 2);
    for record in &new {
        assert_eq!(record["notified"], true, "{record}");
        assert_eq!(record["deployed_by"], "make", "{record}");
    }
    assert!(records
        .iter()
        .filter(|r| r["role"] == "old")
        .all(|r| r["retired"] == true));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        logged
            .lines()
            .filter(|l| l.contains(" new ") && l.ends_with("health=healthy"))
            .count(),
        4,
        "{logged}"
    );

    // `make rollback` after a good deploy: refused, v2 serves on. And
    // zdd-retire refuses on the finished run's records too, by itself.
    let serving = sandbox.container_ids(false, &[]);
    let out = make(&sandbox, "rollback");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to roll back"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let by_hand = zdd_e2e::run("zdd-retire", &["--role", "new"], &retired);
    by_hand.expect_code(1);
    assert!(
        by_hand.stderr.contains("switch is done"),
        "{}",
        by_hand.stderr
    );
    assert_eq!(sandbox.container_ids(false, &[]), serving);
    assert_eq!(sandbox.serving_versions(), ["v2", "v2"]);

    // A release that never becomes healthy: make fails at the health step
    // and rolls back; v2 serves on.
    let broken = sandbox.app_context("v3", &[("NEVER_HEALTHY", "1")]);
    let out = make_deploy(&sandbox, &broken, &log);
    assert!(!out.status.success());
    assert!(sandbox.dir.join("run/rolled-back.jsonl").exists());
    assert_eq!(sandbox.serving_versions(), ["v2", "v2"]);
}

#[test]
fn the_shell_step_keeps_unknown_records_and_rejects_bad_input() {
    let notify = repo().join("examples/steps/zdd-notify");
    let input = "{\"type\":\"deploy-note\",\"x\":[1,2]}\n{\"type\":\"container\",\"id\":\"c1\",\"service\":\"api\",\"name\":\"api-1\",\"role\":\"new\",\"health\":\"healthy\",\"custom\":{\"a\":1}}\n";
    let out = assert_cmd::Command::new(&notify)
        .args(["--log", "/dev/null"])
        .write_stdin(input)
        .output()
        .unwrap();
    assert!(out.status.success());
    let records = parse_records(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        records[0],
        serde_json::json!({"type": "deploy-note", "x": [1, 2]})
    );
    assert_eq!(records[1]["custom"]["a"], 1);
    assert_eq!(records[1]["notified"], true);

    let out = assert_cmd::Command::new(&notify)
        .write_stdin("{\"type\":\"container\"}\nnot json\n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}
