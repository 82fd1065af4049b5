//! A service created by `docker-compose up` is adopted and rolled out by
//! the tools, and Compose still sees it as its own.

use zdd_e2e::{docker, run, Sandbox};

fn compose(sandbox: &Sandbox, file: &str, args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new("docker-compose")
        .args(["-p", &sandbox.id, "-f", file])
        .args(args)
        .output()
        .expect("run docker-compose");
    assert!(
        out.status.success(),
        "docker-compose {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_compose_service_is_rolled_out_and_stays_in_compose_ps() {
    let sandbox = Sandbox::new("compose");
    let repository = format!("{}-api", sandbox.id);
    let v1_context = sandbox.app_context("v1", &[]);
    let v1 = run(
        "zdd-build",
        &["--repository", &repository, v1_context.to_str().unwrap()],
        "",
    );
    v1.expect_code(0);
    let v1_image = v1.records()[0]["image"].as_str().unwrap().to_owned();

    let file = sandbox.dir.join("docker-compose.yml");
    std::fs::write(
        &file,
        format!("version: \"2.4\"\nservices:\n  api:\n    image: {v1_image}\n    environment:\n      GREETING: hello\n"),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    compose(&sandbox, file, &["up", "-d", "--scale", "api=2"]);

    let v2_context = sandbox.app_context("v2", &[]);
    let v2 = run(
        "zdd-build",
        &[
            "--service",
            "api",
            "--repository",
            &repository,
            v2_context.to_str().unwrap(),
        ],
        "",
    );
    v2.expect_code(0);
    let scaled = run("zdd-scale", &["--project", &sandbox.id], &v2.stdout);
    scaled.expect_code(0);
    assert_eq!(
        scaled.role("old").len(),
        2,
        "the two Compose replicas are adopted as old"
    );
    assert_eq!(scaled.role("new").len(), 2);
    let checked = run("zdd-health", &[], &scaled.stdout);
    checked.expect_code(0);
    run("zdd-retire", &[], &checked.stdout).expect_code(0);

    let ps = compose(&sandbox, file, &["ps"]);
    let listing = String::from_utf8_lossy(&ps.stdout);
    let project = &sandbox.id;
    for number in [3, 4] {
        let name = format!("{project}_api_{number}");
        let line = listing
            .lines()
            .find(|l| l.starts_with(&name))
            .unwrap_or_else(|| panic!("{name} in docker-compose ps:\n{listing}"));
        assert!(line.contains("Up"), "{line}");
    }
    for number in [1, 2] {
        assert!(
            !listing.contains(&format!("{project}_api_{number} ")),
            "{listing}"
        );
    }

    // The new replicas kept the Compose configuration: environment, the
    // project network and the service's DNS alias.
    for record in checked.role("new") {
        let id = record["id"].as_str().unwrap();
        let inspect = &docker_inspect(id);
        let env: Vec<&str> = inspect["Config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(env.contains(&"GREETING=hello"), "{env:?}");
        assert!(env.contains(&"APP_VERSION=v2"), "{env:?}");
        let network = &inspect["NetworkSettings"]["Networks"][format!("{project}_default")];
        let aliases: Vec<&str> = network["Aliases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(aliases.contains(&"api"), "{aliases:?}");
    }
    compose(&sandbox, file, &["down", "--remove-orphans"]);
}

fn docker_inspect(id: &str) -> serde_json::Value {
    let out = docker(&["inspect", id]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone()
}
