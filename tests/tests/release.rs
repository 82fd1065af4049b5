//! The whole release (scripts/zdd-release): PostgreSQL schema, frontend
//! and backend updated together, on the real engine, a real PostgreSQL,
//! HAProxy and nginx, under load through nginx's `/api/` (every request
//! writes and reads the notes table, so an error of the old code against
//! the new schema is a failed request).
//!
//! The example app's releases: v1 creates `notes(name)`; v2 adds `title`
//! by expand, backfills it, writes both; v3 backfills what v1 wrote after
//! that, then contracts (drops `name`).

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use zdd_e2e::postgres::{Listen, Pg};
use zdd_e2e::{
    assert_no_failures, bin_dir, docker, http_get, pipeline_command, run, versions_at_end, Haproxy,
    Load, Nginx, Run, Sandbox, CLIENTS,
};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Everything a release of the example app needs, on the sandbox's own
/// network: PostgreSQL on its gateway, HAProxy, an asset root.
struct Stage {
    sandbox: Sandbox,
    haproxy: Haproxy,
    pg: Pg,
    /// The database URL from the host (the server's unix socket).
    database: String,
    spec: PathBuf,
    assets_root: PathBuf,
}

impl Stage {
    fn new(name: &str) -> Stage {
        let sandbox = Sandbox::new(name);
        let haproxy = Haproxy::start(&sandbox);
        let network = sandbox.network("db");
        let ipam = |field: &str| {
            let out = docker(&[
                "network",
                "inspect",
                &network,
                "-f",
                &format!("{{{{(index .IPAM.Config 0).{field}}}}}"),
            ]);
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let (gateway, subnet) = (ipam("Gateway"), ipam("Subnet"));
        let port = TcpListener::bind((gateway.parse::<Ipv4Addr>().unwrap(), 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Pg::start(Some(&Listen {
            address: gateway.clone(),
            subnet,
            port,
        }));
        pg.psql("postgres", "CREATE DATABASE app");
        let spec = sandbox.dir.join("spec.json");
        std::fs::write(
            &spec,
            format!(
                r#"{{"port": 8080, "networks": [{{"name": "{network}"}}], "env": ["DATABASE_URL=postgres://postgres@{gateway}:{port}/app"]}}"#
            ),
        )
        .unwrap();
        let assets_root = sandbox.dir.join("www");
        let database = pg.url("app");
        Stage {
            sandbox,
            haproxy,
            pg,
            database,
            spec,
            assets_root,
        }
    }

    /// Version `version`'s migrations (the example's, up to `last`) and
    /// frontend build (the example's pages, marked with the version).
    fn parts(&self, version: &str, last: u32) -> (PathBuf, PathBuf) {
        let migrations = self.sandbox.dir.join(format!("migrations-{version}"));
        let web = self.sandbox.dir.join(format!("web-{version}"));
        std::fs::create_dir_all(&migrations).unwrap();
        std::fs::create_dir_all(&web).unwrap();
        for entry in std::fs::read_dir(repo().join("examples/app/migrations")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let number: u32 = name.split('_').next().unwrap().parse().unwrap();
            if number <= last {
                std::fs::copy(&path, migrations.join(name)).unwrap();
            }
        }
        for entry in std::fs::read_dir(repo().join("examples/app/web")).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(
                web.join(path.file_name().unwrap()),
                text.replace("@VERSION@", version),
            )
            .unwrap();
        }
        (migrations, web)
    }

    /// `scripts/zdd-release` of `version` (schema `schema`, migrations up
    /// to `last`, the app's `env`), with `extra` zdd-deploy options.
    fn release(
        &self,
        version: &str,
        schema: &str,
        last: u32,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Run {
        let mut app_env = vec![("SCHEMA_VERSION", schema)];
        app_env.extend_from_slice(env);
        let context = self.sandbox.app_context(version, &app_env);
        let (migrations, web) = self.parts(version, last);
        let mut args = vec![
            "--migrations",
            migrations.to_str().unwrap(),
            "--assets",
            web.to_str().unwrap(),
            "--assets-root",
            self.assets_root.to_str().unwrap(),
            "--database",
            &self.database,
        ];
        args.extend_from_slice(extra);
        let out = pipeline_command("zdd-release", &self.sandbox, &self.haproxy, &context, &args)
            .output()
            .expect("run zdd-release");
        Run::from(out)
    }

    /// nginx serving the asset root, `/api/` through HAProxy.
    fn nginx(&self) -> Nginx {
        let root = self.assets_root.to_str().unwrap();
        let snippet = run("zdd-assets", &["nginx", "--root", root], "")
            .ok()
            .stdout;
        let api = format!(
            "location /api/ {{ proxy_pass http://127.0.0.1:{}; }}",
            self.haproxy.port
        );
        Nginx::start(&self.assets_root, &snippet, &api)
    }

    /// The columns of `notes`, in order.
    fn columns(&self) -> String {
        self.pg.psql(
            "app",
            "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'notes'",
        )
    }

    /// The migration versions the history table says are applied.
    fn applied(&self) -> String {
        self.pg.psql(
            "app",
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM zdd_migrations WHERE status = 'applied'",
        )
    }
}

/// The one `release` record of zdd-release's output.
fn record(run: &Run) -> Value {
    let records = run.records();
    assert_eq!(records.len(), 1, "{}\n{}", run.stdout, run.stderr);
    records[0].clone()
}

/// The files a page references (`href`/`src` attributes).
fn references(page: &str) -> Vec<String> {
    page.split(['"', '\''])
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0].ends_with("href=") || w[0].ends_with("src="))
        .map(|w| w[1].to_owned())
        .collect()
}

fn frontend_of(nginx: &Nginx) -> String {
    let page = String::from_utf8(nginx.get("/").body).unwrap();
    let at = page.find("frontend v").expect("the page names its release");
    page[at..at + 11].to_owned()
}

#[test]
fn v1_v2_v3_under_load_every_version_works_against_every_schema_it_meets() {
    let stage = Stage::new("release");
    let spec = ["--replicas", "2", "--spec", stage.spec.to_str().unwrap()];
    let v1 = stage.release("v1", "v1", 1, &[], &spec);
    v1.expect_code(0);
    assert_eq!(record(&v1)["type"], "release_run");
    assert_eq!(record(&v1)["result"], "released");
    let nginx = stage.nginx();
    assert_eq!(frontend_of(&nginx), "frontend v1");
    let v1_page = String::from_utf8(nginx.get("/").body).unwrap();
    let v1_files = references(&v1_page);
    assert!(v1_files.len() >= 3, "{v1_files:?}");

    let api = format!("http://127.0.0.1:{}/api/notes?add=load", nginx.port);
    let load = Load::start(&stage.sandbox, &api, CLIENTS);
    let v2 = stage.release("v2", "v2", 3, &[], &[]);
    v2.expect_code(0);
    let v2_record = record(&v2);
    assert_eq!(v2_record["migrations_applied"], serde_json::json!([2, 3]));
    assert_eq!(
        v2_record["contract"], "none",
        "v2 has no contract migration"
    );
    assert_eq!(frontend_of(&nginx), "frontend v2");
    // A browser holding v1's page still loads every file it names.
    for file in &v1_files {
        assert_eq!(nginx.get(&format!("/{file}")).status, 200, "{file}");
    }
    assert_eq!(stage.columns(), "id,name,created_at,title");

    let v3 = stage.release("v3", "v3", 5, &[], &[]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let load = load.stop();
    v3.expect_code(0);
    let v3_record = record(&v3);
    assert_eq!(v3_record["contract"], "applied", "{v3_record}");
    assert_no_failures(&load);
    assert_eq!(versions_at_end(&load), ["v3"]);
    assert_eq!(stage.columns(), "id,created_at,title");
    assert_eq!(stage.applied(), "1,2,3,4,5");
    assert_eq!(frontend_of(&nginx), "frontend v3");
    // Every note written by any version kept its text: the rows v1 wrote
    // after v2's backfill were backfilled by v3's, before the contract.
    assert_eq!(
        stage
            .pg
            .psql("app", "SELECT count(*) FROM notes WHERE title IS NULL"),
        "0"
    );
}

#[test]
fn a_backend_that_fails_leaves_v1_serving_its_pages_on_the_expanded_schema() {
    let stage = Stage::new("releasefail");
    let spec = ["--replicas", "2", "--spec", stage.spec.to_str().unwrap()];
    stage.release("v1", "v1", 1, &[], &spec).expect_code(0);
    let nginx = stage.nginx();
    let api = format!("http://127.0.0.1:{}/api/notes?add=load", nginx.port);
    let load = Load::start(&stage.sandbox, &api, CLIENTS);
    let v2 = stage.release("v2", "v2", 3, &[("NEVER_HEALTHY", "1")], &[]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let load = load.stop();
    v2.expect_code(1);
    let failed = record(&v2);
    assert_eq!(failed["failed_step"], "backend", "{failed}");
    assert_no_failures(&load);
    assert_eq!(zdd_e2e::versions_seen(&load), ["v1"]);
    // The expand stays: v1 works with it (the load above wrote through it).
    assert_eq!(stage.columns(), "id,name,created_at,title");
    assert_eq!(stage.applied(), "1,2,3");
    // v1's pages stay live; v2's are published, not live.
    assert_eq!(frontend_of(&nginx), "frontend v1");
    let root = stage.assets_root.to_str().unwrap();
    let releases = run("zdd-assets", &["list", "--root", root], "").ok();
    let live: Vec<bool> = releases
        .records()
        .iter()
        .map(|r| r["live"].as_bool().unwrap())
        .collect();
    assert_eq!(live, [true, false], "v1 live, v2 published");
    assert_eq!(
        failed["assets_live"],
        releases.records()[0]["id"],
        "the record says which assets are live"
    );
}

#[test]
fn a_contract_while_v1_replicas_serve_is_refused() {
    let stage = Stage::new("contract");
    let spec = ["--replicas", "2", "--spec", stage.spec.to_str().unwrap()];
    stage.release("v1", "v1", 1, &[], &spec).expect_code(0);
    let (migrations, _) = stage.parts("v3", 5);
    let dir = migrations.to_str().unwrap();
    let migrate = |args: &[&str]| {
        let out = Command::new(bin_dir().join("zdd-migrate"))
            .args(args)
            .args(["--dir", dir, "--database", &stage.database])
            .output()
            .unwrap();
        Run::from(out)
    };
    migrate(&["up"]).expect_code(0);
    let refused = migrate(&[
        "contract",
        "--service",
        &stage.sandbox.id,
        "--release",
        "0123456789abcdef",
    ]);
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("older release"),
        "{}",
        refused.stderr
    );
    assert_eq!(stage.columns(), "id,name,created_at,title", "name stays");
    let (status, body) = http_get(
        &format!("127.0.0.1:{}", stage.haproxy.port),
        "/api/notes?add=x",
    )
    .unwrap();
    assert_eq!(
        (status, body.contains("\"version\":\"v1\"")),
        (200, true),
        "{body}"
    );
}

#[test]
fn the_same_release_from_the_makefile() {
    let stage = Stage::new("makerelease");
    let bin = bin_dir();
    let make = |version: &str, schema: &str, last: u32| {
        let context = stage
            .sandbox
            .app_context(version, &[("SCHEMA_VERSION", schema)]);
        let (migrations, web) = stage.parts(version, last);
        Command::new("make")
            .current_dir(repo())
            .args(["-s", "-f", "examples/Makefile", "release"])
            .arg(format!("SERVICE={}", stage.sandbox.id))
            .arg(format!("ZDD_BIN={}", bin.display()))
            .arg(format!("RUN={}", stage.sandbox.dir.join("make").display()))
            .arg(format!("CONTEXT={}", context.display()))
            .arg(format!("MIGRATIONS={}", migrations.display()))
            .arg(format!("ASSETS={}", web.display()))
            .arg(format!("ASSETS_ROOT={}", stage.assets_root.display()))
            .arg(format!("DATABASE_URL={}", stage.database))
            .arg("REPLICAS=2")
            .arg(format!(
                "NOTIFY_LOG={}",
                stage.sandbox.dir.join("notify.log").display()
            ))
            .output()
            .expect("run make")
    };
    // The Makefile's first deploy clones nothing: give v1 its spec by
    // deploying it with zdd-release, then release v2 and v3 with make.
    let spec = ["--replicas", "2", "--spec", stage.spec.to_str().unwrap()];
    stage.release("v1", "v1", 1, &[], &spec).expect_code(0);
    for (version, last) in [("v2", 3), ("v3", 5)] {
        let out = make(version, version, last);
        assert!(
            out.status.success(),
            "make release {version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(stage.sandbox.serving_versions(), ["v3", "v3"]);
    assert_eq!(stage.columns(), "id,created_at,title");
    let nginx = stage.nginx();
    assert_eq!(frontend_of(&nginx), "frontend v3");
}
