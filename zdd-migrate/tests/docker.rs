//! `contract`'s release check and `run`'s one-off container, against the
//! real Docker engine.
//!
//! No image can be pulled, so the test image is assembled `FROM scratch`
//! from files on this machine: the zdd-migrate binary under test (it is
//! the "application's migration command" the one-off runs) with the
//! libraries `ldd` lists for it, `/bin/sleep` to stand in for a running
//! replica, and two migration folders. Everything a test creates carries
//! `zdd.e2e=1` and its own `zdd.test=<id>`, and is removed when the
//! sandbox is dropped, also on panic.

mod support;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{Listen, Migrations, Pg, Project};
use zdd_e2e::{docker_ok, run_command};

/// What one test creates on the engine: the end-to-end harness's sandbox
/// (its id, a folder, and removal of everything labelled with the id when
/// dropped) and the test image, which carries that label.
struct Sandbox {
    env: zdd_e2e::Sandbox,
    image: String,
}

impl Sandbox {
    fn new(name: &str) -> Sandbox {
        let env = zdd_e2e::Sandbox::new(&format!("migrate-{name}"));
        let context = env.dir.join("image");
        std::fs::create_dir_all(&context).unwrap();
        build_context(&context);
        let image = env.build_image("migrate", &context, "COPY . /\n");
        Sandbox { env, image }
    }

    fn id(&self) -> &str {
        &self.env.id
    }

    /// A running stand-in replica of `service` at `release`.
    fn replica(&self, service: &str, release: &str, extra: &[&str]) -> String {
        let service_label = format!("zdd.service={service}");
        let release_label = format!("zdd.release={release}");
        let mut args = vec![
            "run",
            "-d",
            "--label",
            &service_label,
            "--label",
            &release_label,
        ];
        args.extend(extra);
        args.extend([self.image.as_str(), "/sleep", "300"]);
        docker_ok(&args)
    }

    /// A stand-in replica of `service` at `release` that was created and
    /// never started, as a stopped one is: not a running replica.
    fn stopped_replica(&self, service: &str, release: &str) -> String {
        let service_label = format!("zdd.service={service}");
        let release_label = format!("zdd.release={release}");
        docker_ok(&[
            "create",
            "--label",
            &service_label,
            "--label",
            &release_label,
            &self.image,
            "/sleep",
            "300",
        ])
    }

    /// A network labelled for cleanup: (name, gateway, subnet).
    fn network(&self) -> (String, String, String) {
        let name = self.env.network("net");
        let ipam = |field: &str| {
            docker_ok(&[
                "network",
                "inspect",
                "-f",
                &format!("{{{{(index .IPAM.Config 0).{field}}}}}"),
                &name,
            ])
        };
        let (gateway, subnet) = (ipam("Gateway"), ipam("Subnet"));
        (name, gateway, subnet)
    }

    /// The sandbox's containers, stopped ones too.
    fn containers(&self, filters: &[&str]) -> Vec<String> {
        self.env.container_ids(true, filters)
    }
}

/// The image's files: this zdd-migrate (stripped when `strip` is there),
/// `sleep`, their libraries, and the migration folders.
fn build_context(dir: &Path) {
    let binary = support::binary();
    let binary = binary.as_path();
    let target = dir.join("zdd-migrate");
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&target)
        .arg(binary)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(binary, &target).unwrap();
    }
    std::fs::copy("/bin/sleep", dir.join("sleep")).unwrap();
    for library in libraries(&[binary, Path::new("/bin/sleep")]) {
        let to = dir.join(library.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&library, &to).unwrap();
    }
    let accounts = "-- zdd: phase=expand\nCREATE TABLE accounts (id bigserial PRIMARY KEY, owner text);\nINSERT INTO accounts (owner) VALUES ('migrated from a one-off');\n";
    let good = dir.join("migrations");
    std::fs::create_dir_all(&good).unwrap();
    std::fs::write(good.join("0001_accounts.sql"), accounts).unwrap();
    // The next release: one more migration, which fails.
    let bad = dir.join("migrations-bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("0001_accounts.sql"), accounts).unwrap();
    std::fs::write(
        bad.join("0002_broken.sql"),
        "-- zdd: phase=expand\nINSERT INTO no_such_table VALUES (1);\n",
    )
    .unwrap();
}

/// The shared libraries (and the loader) `ldd` lists for `binaries`.
fn libraries(binaries: &[&Path]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for binary in binaries {
        let out = Command::new("ldd").arg(binary).output().expect("run ldd");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(path) = path.filter(|p| p.starts_with('/')) {
                let path = PathBuf::from(path);
                if !found.contains(&path) {
                    found.push(path);
                }
            }
        }
    }
    found
}

fn run_with_stdin(args: &[&str], stdin: &str) -> zdd_e2e::Run {
    run_command(support::command(args), stdin)
}

#[test]
fn contract_is_refused_while_an_old_release_runs() {
    let sandbox = Sandbox::new("contract");
    let service = sandbox.id().to_owned();
    let old = sandbox.replica(&service, "r1-old", &[]);
    sandbox.replica(&service, "r2-new", &[]);

    let (project, db) = contract_project("docker-contract");

    let contract = contract_args(&service, &db, &[]);
    let refused = project.run(&contract);
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("still run an older release") && refused.stderr.contains("r1-old"),
        "{}",
        refused.stderr
    );
    assert!(refused.stdout.is_empty());
    let status = project.run(&["status", "--database", &db]);
    assert_eq!(status.statuses()[1], (2, "pending".into()));

    // Without --force, the service and the release are required.
    project.run(&["contract", "--database", &db]).expect_code(2);

    // The old replica is retired; a one-off container of the old release
    // (an earlier migration run) is not a replica and does not count.
    docker_ok(&["rm", "-f", &old]);
    sandbox.replica(&service, "r1-old", &["--label", "zdd.oneoff=true"]);
    let allowed = project.run(&contract);
    allowed.expect_code(0);
    assert_eq!(allowed.statuses(), [(2, "applied".into())]);
}

/// A folder with an expand migration (applied by `up` here) and a pending
/// contract migration, on SQLite.
fn contract_project(name: &str) -> (Project, String) {
    let project = Project::new(name);
    project
        .write(
            "0001_users.sql",
            "-- zdd: phase=expand\nCREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, full_name TEXT);\n",
        )
        .write(
            "0002_drop_name.sql",
            "-- zdd: phase=contract\nALTER TABLE users DROP COLUMN name;\n",
        );
    let db = project.sqlite();
    project.run(&["up", "--database", &db]).expect_code(0);
    (project, db)
}

/// `contract --service SERVICE --release r2-new --database DB`, then
/// `extra`.
fn contract_args<'a>(service: &'a str, db: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "contract",
        "--service",
        service,
        "--release",
        "r2-new",
        "--database",
        db,
    ];
    args.extend(extra);
    args
}

/// The history table's `status` of `version`, `None` without a row.
fn history_status(db: &str, version: i64) -> Option<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut query = conn
        .prepare("SELECT status FROM zdd_migrations WHERE version = ?1")
        .unwrap();
    let mut rows = query.query([version]).unwrap();
    rows.next().unwrap().map(|row| row.get(0).unwrap())
}

/// Whether the contract migration's column drop happened.
fn name_column_exists(db: &str) -> bool {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT count(*) FROM pragma_table_info('users') WHERE name = 'name'",
        [],
        |row| row.get::<_, i64>(0),
    )
    .unwrap()
        == 1
}

#[test]
fn contract_is_refused_when_no_replica_of_the_service_runs() {
    let sandbox = Sandbox::new("contract-none");
    // A misspelt service: nothing carries its name. A stopped container
    // of the service is no running replica either.
    let service = format!("{}-api", sandbox.id());
    sandbox.stopped_replica(&service, "r1-old");
    let (project, db) = contract_project("docker-contract-none");

    let contract = contract_args(&service, &db, &[]);
    let refused = project.run(&contract);
    refused.expect_code(1);
    assert!(
        refused.stderr.contains(&format!(
            "refusing to contract: the Docker engine lists no running replica of service `{service}`"
        )) && refused.stderr.contains("--no-replicas-expected"),
        "{}",
        refused.stderr
    );
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    // Nothing applied: no history row, the column is still there.
    assert_eq!(history_status(&db, 2), None);
    assert!(name_column_exists(&db));
    let status = project.run(&["status", "--database", &db]);
    status.expect_code(0);
    assert_eq!(status.statuses()[1], (2, "pending".into()));
    assert_eq!(status.of_type("migration_status")[0]["pending_contract"], 1);

    // With a Compose project, the message names it too.
    let in_project = project.run(&contract_args(
        &service,
        &db,
        &["--project", "no-such-project"],
    ));
    in_project.expect_code(1);
    assert!(
        in_project.stderr.contains(&format!(
            "no running replica of service `{service}` of Compose project `no-such-project`"
        )),
        "{}",
        in_project.stderr
    );
    assert_eq!(history_status(&db, 2), None);

    // --force still skips the check entirely.
    let forced = project.run(&["contract", "--force", "--database", &db]);
    forced.expect_code(0);
    assert_eq!(forced.statuses(), [(2, "applied".into())]);
    assert_eq!(history_status(&db, 2).as_deref(), Some("applied"));
    assert!(!name_column_exists(&db));
}

#[test]
fn contract_with_no_replicas_expected_applies_when_none_runs_but_not_past_an_old_release() {
    let sandbox = Sandbox::new("contract-expected");
    let service = sandbox.id().to_owned();
    let old = sandbox.replica(&service, "r1-old", &[]);
    let (project, db) = contract_project("docker-contract-expected");

    let contract = contract_args(&service, &db, &["--no-replicas-expected"]);
    // The flag allows finding none, not finding an older release.
    let refused = project.run(&contract);
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("still run an older release") && refused.stderr.contains("r1-old"),
        "{}",
        refused.stderr
    );
    assert_eq!(history_status(&db, 2), None);

    // The service is stopped on purpose: no replica, as expected.
    docker_ok(&["rm", "-f", &old]);
    let applied = project.run(&contract);
    applied.expect_code(0);
    assert_eq!(applied.statuses(), [(2, "applied".into())]);
    assert!(
        applied.stderr.contains(&format!(
            "no running replica of service `{service}`, as --no-replicas-expected says"
        )),
        "{}",
        applied.stderr
    );
    assert_eq!(history_status(&db, 2).as_deref(), Some("applied"));
    assert!(!name_column_exists(&db));
}

#[test]
fn contract_ignores_compose_project_name_from_the_environment() {
    let sandbox = Sandbox::new("contract-env");
    let service = sandbox.id().to_owned();
    // A zdd replica, in no Compose project: a leftover COMPOSE_PROJECT_NAME
    // read as --project would hide it, and the contract would pass.
    sandbox.replica(&service, "r1-old", &[]);
    let (project, db) = contract_project("docker-contract-env");

    let mut command = project.command(&contract_args(&service, &db, &[]));
    command.env("COMPOSE_PROJECT_NAME", "leftover-project");
    let refused = run_command(command, "");
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("still run an older release")
            && refused.stderr.contains("r1-old")
            && !refused.stderr.contains("leftover-project"),
        "{}",
        refused.stderr
    );
    assert_eq!(history_status(&db, 2), None);
}

#[test]
fn run_executes_a_one_off_that_reaches_the_database_and_fails_the_step_when_it_fails() {
    let sandbox = Sandbox::new("run");
    let service = sandbox.id().to_owned();
    let (network, gateway, subnet) = sandbox.network();

    // A PostgreSQL that only containers on this network may use: it
    // listens on the network's gateway and trusts only its subnet.
    let port = TcpListener::bind((gateway.parse::<Ipv4Addr>().unwrap(), 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Pg::start(Some(&Listen {
        address: gateway.clone(),
        subnet,
        port,
    }));
    server
        .client("postgres")
        .unwrap()
        .batch_execute("CREATE DATABASE app")
        .unwrap();
    let database_url = format!("postgres://postgres@{gateway}:{port}/app");

    // The running replica knows the database; the one-off inherits that.
    let net = format!("--network={network}");
    let env = format!("DATABASE_URL={database_url}");
    let replica = sandbox.replica(&service, "r1", &[&net, "-e", &env]);

    // The image from zdd-build's record on stdin, passed through.
    let image_record = format!(
        "{{\"type\":\"image\",\"service\":\"{service}\",\"image\":\"{}\",\"image_id\":\"sha256:0\",\"release\":\"r2\"}}\n",
        sandbox.image
    );
    let run = run_with_stdin(
        &["run", "--", "/zdd-migrate", "up", "--dir", "/migrations"],
        &image_record,
    );
    run.expect_code(0);
    let records = run.records();
    assert_eq!(records.len(), 2, "{}", run.stdout);
    assert_eq!(records[0]["type"], "image", "the input is passed through");
    let record = &records[1];
    assert_eq!(record["type"], "migration_run");
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["exit_code"], 0);
    assert_eq!(record["release"], "r2");
    assert_eq!(record["removed"], true);
    assert_eq!(record["networks"], Value::from(vec![network.clone()]));
    // Its log was streamed to stderr as it ran.
    assert!(
        run.stderr.contains("zdd-migrate: applied 0001_accounts"),
        "{}",
        run.stderr
    );
    let owner: String = server
        .client("app")
        .unwrap()
        .query_one("SELECT owner FROM accounts", &[])
        .unwrap()
        .get(0);
    assert_eq!(owner, "migrated from a one-off");
    assert!(
        sandbox.containers(&["label=zdd.oneoff=true"]).is_empty(),
        "the one-off was removed"
    );
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Running}}", &replica]),
        "true"
    );

    // A failing command fails the step, with its log on stderr.
    let failed = support::run(&[
        "run",
        "--service",
        &service,
        "--image",
        &sandbox.image,
        "--keep",
        "--",
        "/zdd-migrate",
        "up",
        "--dir",
        "/migrations-bad",
    ]);
    failed.expect_code(1);
    let record = &failed.records()[0];
    assert_eq!(record["status"], "failed");
    assert_eq!(record["exit_code"], 1);
    assert!(
        failed
            .stderr
            .contains(r#"relation "no_such_table" does not exist"#),
        "{}",
        failed.stderr
    );
    // Kept (--keep): labelled as a one-off of the service, never a replica.
    let id = record["container"].as_str().unwrap();
    let labels: Value = serde_json::from_str(&docker_ok(&[
        "inspect",
        "-f",
        "{{json .Config.Labels}}",
        id,
    ]))
    .unwrap();
    assert_eq!(labels["zdd.oneoff"], "true");
    assert_eq!(labels["zdd.service"], service.as_str());

    // A command that cannot start fails the step too.
    let broken = support::run(&[
        "run",
        "--service",
        &service,
        "--image",
        &sandbox.image,
        "--",
        "/no-such-binary",
    ]);
    broken.expect_code(1);
    assert_eq!(broken.records()[0]["status"], "failed");
    drop(server);
}
