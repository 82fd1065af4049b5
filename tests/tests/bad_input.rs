//! Bad input to every tool: exit 2, a message naming the line, and nothing
//! created or removed on the engine.

use zdd_e2e::{docker, run, Sandbox};

/// Malformed variants of a good input, with the line the error must name.
fn malformed(good: &str) -> Vec<(&'static str, String, Option<usize>)> {
    let lines = good.lines().count();
    vec![
        (
            "not JSON",
            format!("{good}this is not json\n"),
            Some(lines + 1),
        ),
        (
            "truncated last line",
            format!("{good}{}", &good.lines().last().unwrap()[..20]),
            Some(lines + 1),
        ),
        ("empty input", String::new(), None),
        (
            "array instead of record",
            format!("{good}[1,2]\n"),
            Some(lines + 1),
        ),
    ]
}

#[test]
fn every_tool_rejects_bad_input_with_exit_2_and_changes_nothing() {
    let sandbox = Sandbox::new("badinput");
    let context = sandbox.app_context("v1", &[]);
    let built = run(
        "zdd-build",
        &["--service", &sandbox.id, context.to_str().unwrap()],
        "",
    );
    built.expect_code(0);
    let scaled = run("zdd-scale", &["--replicas", "1"], &built.stdout);
    scaled.expect_code(0);
    let checked = run("zdd-health", &[], &scaled.stdout);
    checked.expect_code(0);
    let running = sandbox.container_ids(true, &[]);
    assert_eq!(running.len(), 1);

    let image_line = built.stdout.clone();
    let container_lines = checked.stdout.clone();
    // Retire's input names the running replica as old: if the tool acted
    // before checking its input, the replica would be gone.
    let as_old = container_lines.replace("\"role\":\"new\"", "\"role\":\"old\"");
    let healthy_new_and_old = format!("{container_lines}{}", as_old.lines().last().unwrap());
    let cases: Vec<(&str, &[&str], String, &str)> = vec![
        ("zdd-scale", &[], image_line.clone(), "image"),
        ("zdd-health", &[], container_lines.clone(), "container"),
        (
            "zdd-retire",
            &[],
            format!("{healthy_new_and_old}\n"),
            "container",
        ),
    ];
    for (tool, args, good, _) in &cases {
        for (what, input, line) in malformed(good) {
            let result = run(tool, args, &input);
            assert_eq!(
                result.code, 2,
                "{tool} with {what}: exit {}\n{}",
                result.code, result.stderr
            );
            match line {
                Some(line) => assert!(
                    result.stderr.contains(&format!("line {line}")),
                    "{tool} with {what} names line {line}: {}",
                    result.stderr
                ),
                None => assert!(
                    result.stderr.contains("no records"),
                    "{tool} with {what}: {}",
                    result.stderr
                ),
            }
            assert!(
                result.stdout.is_empty(),
                "{tool} with {what} wrote {}",
                result.stdout
            );
        }
    }

    // Wrong record type, and a record missing a field the tool needs.
    let containers_only: String = container_lines
        .lines()
        .filter(|l| l.contains("\"type\":\"container\""))
        .map(|l| format!("{l}\n"))
        .collect();
    let wrong_type = [
        (
            "zdd-scale",
            containers_only.clone(),
            "expected an `image` record",
        ),
        (
            "zdd-health",
            image_line.clone(),
            "expected `container` records",
        ),
        (
            "zdd-retire",
            image_line.clone(),
            "expected `container` records",
        ),
    ];
    for (tool, input, message) in wrong_type {
        let result = run(tool, &[], &input);
        assert_eq!(
            result.code, 2,
            "{tool} with the wrong record type: {}",
            result.stderr
        );
        assert!(result.stderr.contains(message), "{tool}: {}", result.stderr);
    }
    let no_image_id = image_line.replace("\"image\":", "\"picture\":");
    let no_container_id = containers_only.replace("\"id\":", "\"ident\":");
    for (tool, input, field) in [
        ("zdd-scale", no_image_id, "missing field `image`"),
        ("zdd-health", no_container_id.clone(), "missing field `id`"),
        ("zdd-retire", no_container_id, "missing field `id`"),
    ] {
        let result = run(tool, &[], &input);
        assert_eq!(
            result.code, 2,
            "{tool} with a missing field: {}",
            result.stderr
        );
        assert!(result.stderr.contains(field), "{tool}: {}", result.stderr);
        assert!(
            result.stderr.contains("line 1"),
            "{tool}: {}",
            result.stderr
        );
    }

    // Bad arguments to the tools that read none.
    let missing = sandbox.dir.join("no-such-context");
    let result = run("zdd-build", &[missing.to_str().unwrap()], "");
    assert_eq!(result.code, 2, "{}", result.stderr);
    assert!(
        result.stderr.contains("no-such-context"),
        "{}",
        result.stderr
    );
    assert_eq!(run("zdd-ps", &[], "").code, 2);

    // Nothing was created or removed.
    assert_eq!(sandbox.container_ids(true, &[]), running);
    let state = docker(&["inspect", "-f", "{{.State.Running}}", &running[0]]);
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "true");
}
