//! A service created by `docker-compose up` is adopted and rolled out by
//! the tools, and Compose still sees it as its own.

use std::path::PathBuf;

use serde_json::json;
use zdd_e2e::{
    assert_no_failures, deploy, deploy_command, docker, run, Haproxy, Load, Run, Sandbox, CLIENTS,
};

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

/// A Compose file whose `service` runs v1 of the example app (built as
/// `repository:…`), with `extra` lines for the service; its path.
fn compose_file(sandbox: &Sandbox, repository: &str, service: &str, extra: &str) -> PathBuf {
    let context = sandbox.app_context("v1", &[]);
    let v1 = run(
        "zdd-build",
        &["--repository", repository, context.to_str().unwrap()],
        "",
    );
    v1.expect_code(0);
    let image = v1.records()[0]["image"].as_str().unwrap().to_owned();
    let file = sandbox.dir.join("docker-compose.yml");
    std::fs::write(
        &file,
        format!("version: \"2.4\"\nservices:\n  {service}:\n    image: {image}{extra}\n"),
    )
    .unwrap();
    file
}

#[test]
fn a_compose_service_is_rolled_out_and_stays_in_compose_ps() {
    let sandbox = Sandbox::new("compose");
    let repository = format!("{}-api", sandbox.id);
    let file = compose_file(
        &sandbox,
        &repository,
        "api",
        "\n    environment:\n      GREETING: hello",
    );
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

/// The ids of the running containers of a Compose project, sorted.
fn project_container_ids(sandbox: &Sandbox) -> Vec<String> {
    let filter = format!("label=com.docker.compose.project={}", sandbox.id);
    let mut ids = zdd_e2e::docker_lines(&["ps", "-q", "--no-trunc", "--filter", &filter]);
    ids.sort();
    ids
}

#[test]
fn another_projects_service_of_the_same_name_is_never_touched() {
    let sandbox = Sandbox::new("samename");
    // The Compose service has the very name zdd is asked to deploy.
    let name = sandbox.id.clone();
    let repository = format!("{}-img", sandbox.id);
    let file = compose_file(&sandbox, &repository, &name, "");
    let file = file.to_str().unwrap();
    compose(
        &sandbox,
        file,
        &["up", "-d", "--scale", &format!("{name}=2")],
    );
    let compose_ids = project_container_ids(&sandbox);
    assert_eq!(compose_ids.len(), 2);

    // HAProxy serves the Compose replicas.
    let haproxy = Haproxy::start(&sandbox);
    let socket = haproxy.socket.to_str().unwrap().to_owned();
    let listed = run(
        "zdd-ps",
        &["--project", &sandbox.id, "--role", "new", &name],
        "",
    );
    listed.expect_code(0);
    let healthy: String = listed
        .records()
        .into_iter()
        .map(|mut r| {
            r["health"] = json!("healthy");
            r.to_string() + "\n"
        })
        .collect();
    run(
        "zdd-route",
        &["--socket", &socket, "--backend", "app"],
        &healthy,
    )
    .expect_code(0);
    let load = Load::start(&sandbox, &haproxy.url(), CLIENTS);

    // zdd's own service of that name, first deploy with a spec, with and
    // without COMPOSE_PROJECT_NAME naming the project: refused, exit 2.
    let spec = sandbox.dir.join("spec.json");
    std::fs::write(&spec, r#"{"port": 8080}"#).unwrap();
    let v2 = sandbox.app_context("v2", &[]);
    let spec_arg = ["--spec", spec.to_str().unwrap()];
    let plain = deploy(&sandbox, &haproxy, &v2, &spec_arg);
    let with_env = Run::from(
        deploy_command(&sandbox, &haproxy, &v2, &spec_arg)
            .env("COMPOSE_PROJECT_NAME", &sandbox.id)
            .output()
            .unwrap(),
    );
    for refused in [&plain, &with_env] {
        refused.expect_code(2);
        assert!(
            refused.stderr.contains("ambiguous")
                && refused.stderr.contains(&format!("`{}`", sandbox.id))
                && refused.stderr.contains("--project"),
            "{}",
            refused.stderr
        );
    }
    assert_eq!(project_container_ids(&sandbox), compose_ids, "untouched");
    let own = format!("label=zdd.service={name}");
    assert!(
        zdd_e2e::docker_lines(&["ps", "-aq", "--filter", &own]).is_empty(),
        "no zdd replica was created"
    );

    // With --project, the deploy is that project's, and it switches.
    let adopted = deploy(&sandbox, &haproxy, &v2, &["--project", &sandbox.id]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let load = load.stop();
    adopted.expect_code(0);
    assert_no_failures(&load);
    let now = project_container_ids(&sandbox);
    assert_eq!(now.len(), 2);
    assert!(now.iter().all(|id| !compose_ids.contains(id)), "replaced");
    assert_eq!(zdd_e2e::versions_at_end(&load), ["v2"]);
    compose(&sandbox, file, &["down", "--remove-orphans"]);
}

/// HAProxy as a Compose service: an image built FROM scratch out of the
/// host's binary and the libraries `ldd` lists for it (no image can be
/// pulled here).
fn haproxy_image(sandbox: &Sandbox) -> String {
    let context = sandbox.dir.join("haproxy-image");
    let rootfs = context.join("rootfs");
    let binary = std::fs::canonicalize("/usr/sbin/haproxy").expect("haproxy is installed");
    let ldd = std::process::Command::new("ldd")
        .arg(&binary)
        .output()
        .expect("run ldd");
    let mut files: Vec<PathBuf> = String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().find(|w| w.starts_with('/')))
        .map(PathBuf::from)
        .collect();
    files.push(binary.clone());
    for file in files {
        let target = rootfs.join(file.strip_prefix("/").unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&file, &target).unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
    }
    let at = rootfs.join("usr/sbin/haproxy");
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::fs::copy(&binary, &at).unwrap();
    sandbox.build_image(
        "haproxy",
        &context,
        "COPY rootfs/ /\nENTRYPOINT [\"/usr/sbin/haproxy\", \"-db\", \"-f\", \"/etc/haproxy/haproxy.cfg\"]\n",
    )
}

/// `show stat` of backend `app` over the Runtime API at 127.0.0.1:`port`.
fn show_stat(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.write_all(b"show stat app 4 -1\n");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn a_compose_service_behind_a_dns_server_template_deploys_and_exits_0() {
    let sandbox = Sandbox::new("dnstemplate");
    let (port, admin) = (zdd_e2e::free_port(), zdd_e2e::free_port());
    let config = sandbox.dir.join("haproxy.cfg");
    std::fs::write(
        &config,
        "global\n    stats socket ipv4@0.0.0.0:9999 level admin\n\
         resolvers docker\n    nameserver dns 127.0.0.11:53\n    hold valid 1s\n\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
         \x20   retries 3\n    option redispatch\n    retry-on conn-failure empty-response\n\
         frontend fe\n    bind :8080\n    default_backend app\n\
         backend app\n    balance roundrobin\n    option httpchk GET /healthz\n\
         \x20   server-template api 6 api:8080 check inter 500ms downinter 100ms fall 2 rise 1 resolvers docker init-addr none resolve-prefer ipv4\n",
    )
    .unwrap();
    let haproxy = haproxy_image(&sandbox);
    let repository = format!("{}-api", sandbox.id);
    let lb = format!(
        "\n  lb:\n    image: {haproxy}\n    ports:\n      - \"127.0.0.1:{port}:8080\"\n      - \"127.0.0.1:{admin}:9999\"\n    volumes:\n      - {}:/etc/haproxy/haproxy.cfg:ro",
        config.display()
    );
    let file = compose_file(&sandbox, &repository, "api", &lb);
    let file = file.to_str().unwrap();
    compose(&sandbox, file, &["up", "-d", "--scale", "api=2"]);
    // HAProxy resolves both replicas and its check calls them UP.
    let up = zdd_e2e::poll_until(std::time::Duration::from_secs(30), || {
        show_stat(admin)
            .lines()
            .filter(|l| l.contains(",UP,"))
            .count()
            == 2
    });
    assert!(
        up,
        "HAProxy did not resolve the replicas: {}",
        show_stat(admin)
    );

    let load = Load::start(&sandbox, &format!("http://127.0.0.1:{port}/"), CLIENTS);
    let v2 = sandbox.app_context("v2", &[]);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let out = std::process::Command::new(root.join("scripts/zdd-deploy"))
        .env("ZDD_BIN", zdd_e2e::bin_dir())
        .env("ZDD_STATE_DIR", sandbox.dir.join("state"))
        .args(["--project", &sandbox.id, "--service", "api"])
        .args([
            "--haproxy-socket",
            &format!("127.0.0.1:{admin}"),
            "--backend",
            "app",
        ])
        .args(["--grace", "10s", "--health-timeout", "30s"])
        .arg("--runs-dir")
        .arg(sandbox.dir.join("runs"))
        .arg(&v2)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let load = load.stop();
    let deployed = Run::from(out);
    deployed.expect_code(0);
    assert_no_failures(&load);
    assert_eq!(zdd_e2e::versions_at_end(&load), ["v2"]);
    // No template slot was deleted: all six are still in the backend.
    let stat = show_stat(admin);
    for slot in 1..=6 {
        assert!(
            stat.lines()
                .any(|l| l.starts_with(&format!("app,api{slot},"))),
            "slot api{slot} is gone: {stat}"
        );
    }
    compose(&sandbox, file, &["down", "--remove-orphans"]);
}
