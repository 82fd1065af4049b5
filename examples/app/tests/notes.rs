//! The notes API against a real PostgreSQL, across the app's three schema
//! versions through a whole release (v1 → v2 renames `name` to `title` by
//! expand → v3 contracts), and the database variables.
//!
//! Each test starts its own server and the real binary (see [`support`]),
//! and runs its migrations with `psql`, as a deploy's migration step would.
//! The client itself (pool, escaping, authentication) is tested in
//! `pg_client.rs`.

mod support;

use std::process::Command;
use std::thread;

use support::app::{
    form_encode, request, App, BIN, V1_CREATE, V2_BACKFILL, V2_EXPAND, V3_CONTRACT,
};
use zdd_e2e::free_port;
use zdd_e2e::postgres::Pg;

/// The whole release, in the order a deploy tool runs it, with the
/// versions that overlap during each rollout serving at once.
#[test]
fn a_whole_release_expand_then_contract() {
    let pg = Pg::start_loopback();
    pg.psql("postgres", V1_CREATE);

    // Release v1.
    let v1 = App::start(&pg.tcp_url("postgres", "postgres"), "v1");
    assert_eq!(v1.get("/healthz").status, 200);
    let listing = v1.list();
    assert_eq!(listing.version, "v1");
    assert!(listing.notes.is_empty());
    assert_eq!(v1.add("first note").notes, [(1, Some("first note".into()))]);
    let posted = v1.post("/api/notes", "second");
    assert_eq!(posted.status, 201, "{posted:?}");
    assert_eq!(
        posted.listing().titles(),
        [Some("second"), Some("first note")]
    );

    // v2's expand, while v1 serves: v1 never names `title`.
    pg.psql("postgres", V2_EXPAND);
    assert_eq!(
        v1.add("v1 after expand").newest(),
        (3, Some("v1 after expand"))
    );

    // v2 rolls out: v1 and v2 serve at once.
    let v2 = App::start(&pg.tcp_url("postgres", "postgres"), "v2");
    assert_eq!(v2.get("/healthz").status, 200);
    let listing = v2.list();
    assert_eq!(listing.version, "v2");
    // No row has a title yet: v2 reads them through coalesce(title, name).
    assert_eq!(
        listing.titles(),
        [Some("v1 after expand"), Some("second"), Some("first note")]
    );
    assert_eq!(
        pg.psql_output("postgres", "SELECT count(*) FROM notes WHERE title IS NULL"),
        "3\n"
    );
    // v1 writes (name only), v2 reads it back.
    let (id, _) = v1.add("from v1").newest();
    assert_eq!(v2.list().newest(), (id, Some("from v1")));
    assert_eq!(
        pg.psql_output(
            "postgres",
            &format!("SELECT name, title IS NULL FROM notes WHERE id = {id}")
        ),
        "from v1|t\n"
    );
    // v2 writes both columns; v1 reads it back.
    let (id, _) = v2.add("from v2").newest();
    assert_eq!(v1.list().newest(), (id, Some("from v2")));
    assert_eq!(
        pg.psql_output(
            "postgres",
            &format!("SELECT name, title FROM notes WHERE id = {id}")
        ),
        "from v2|from v2\n"
    );
    // Both under concurrent load.
    let handles: Vec<_> = [(v1.port, "v1"), (v2.port, "v2")]
        .into_iter()
        .flat_map(|(port, version)| {
            (0..3).map(move |thread| {
                thread::spawn(move || {
                    for i in 0..10 {
                        let text = format!("{version} load {thread}.{i}");
                        let target = format!("/api/notes?add={}", form_encode(&text));
                        let response = request(port, "GET", &target, None);
                        assert_eq!(response.status, 200, "{version}: {response:?}");
                        let titles = response.listing();
                        assert!(titles.notes.iter().all(|(_, title)| title.is_some()));
                    }
                })
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert_eq!(
        pg.psql_output(
            "postgres",
            "SELECT count(*) FROM notes WHERE name LIKE '% load %'"
        ),
        "60\n"
    );
    assert_eq!(v1.stats().1, 0);
    assert_eq!(v2.stats().1, 0);

    // v1 is retired; then v2's data migration backfills.
    drop(v1);
    pg.psql("postgres", V2_BACKFILL);
    assert_eq!(
        pg.psql_output("postgres", "SELECT count(*) FROM notes WHERE title IS NULL"),
        "0\n"
    );

    // v3 rolls out, before its contract: it leaves the nullable `name` out.
    let v3 = App::start(&pg.tcp_url("postgres", "postgres"), "v3");
    let posted = v3.post("/api/notes", "from v3");
    assert_eq!(posted.status, 201, "{posted:?}");
    let listing = posted.listing();
    assert_eq!(listing.version, "v3");
    assert_eq!(listing.notes.len(), 5);
    assert!(listing.notes.iter().all(|(_, title)| title.is_some()));
    let (id, title) = listing.newest();
    assert_eq!(title, Some("from v3"));
    assert_eq!(
        pg.psql_output(
            "postgres",
            &format!("SELECT name IS NULL, title FROM notes WHERE id = {id}")
        ),
        "t|from v3\n"
    );
    // v2, still serving alongside, reads it through the coalesce.
    assert_eq!(v2.list().newest(), (id, Some("from v3")));

    // v2 is retired; then v3's contract.
    drop(v2);
    pg.psql("postgres", V3_CONTRACT);
    assert_eq!(v3.add("after contract").newest().1, Some("after contract"));
    assert_eq!(v3.list().titles()[1], Some("from v3"));
    assert_eq!(v3.stats().1, 0);

    // What the contract check prevents: v1 on the contracted schema. Its
    // health check passes (SELECT 1), every notes request fails.
    let v1 = App::start(&pg.tcp_url("postgres", "postgres"), "v1");
    assert_eq!(v1.get("/healthz").status, 200);
    let (_, errors) = v1.stats();
    assert_eq!(errors, 0);
    let failed = v1.get("/api/notes");
    assert_eq!(failed.status, 500, "{failed:?}");
    assert_eq!(failed.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        failed.body,
        "database error: column \"name\" does not exist (SQLSTATE 42703)\n"
    );
    assert_eq!(v1.stats().1, 1);
    let failed = v1.post("/api/notes", "v1 after contract");
    assert_eq!(failed.status, 500, "{failed:?}");
    assert!(failed.body.contains("column \"name\""), "{failed:?}");
    assert!(failed.body.contains("42703"), "{failed:?}");
    assert_eq!(v1.stats().1, 2);
    assert_eq!(
        v1.stderr_line("database error (GET /api/notes)"),
        "zdd-example-app: database error (GET /api/notes): \
         column \"name\" does not exist (SQLSTATE 42703)"
    );
    v1.stderr_line("database error (POST /api/notes)");
    // v3 is unaffected.
    assert_eq!(v3.list().newest().1, Some("after contract"));
}

/// Without a database, and with bad database variables.
#[test]
fn database_variables() {
    let app = App::start_with(&[]);
    for target in ["/api/notes", "/api/notes?add=x", "/api/stats"] {
        let response = app.get(target);
        assert_eq!(
            (response.status, response.body.as_str()),
            (503, "no database configured (DATABASE_URL)\n"),
            "{target}"
        );
    }
    assert_eq!(app.get("/healthz").status, 200);

    let run = |env: &[(&str, &str)]| {
        Command::new(BIN)
            .env_clear()
            .env("PORT", free_port().to_string())
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let bad_url = run(&[("DATABASE_URL", "mysql://app:secret@db/notes")]);
    assert_eq!(bad_url.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad_url.stderr);
    assert!(
        stderr.contains("invalid DATABASE_URL=\"mysql://app:***@db/notes\""),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "{stderr}");
    let bad_version = run(&[("SCHEMA_VERSION", "v4")]);
    assert_eq!(bad_version.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_version.stderr).contains("SCHEMA_VERSION"));

    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for text in ["DATABASE_URL", "SCHEMA_VERSION", "/api/notes", "/api/stats"] {
        assert!(help.contains(text), "--help does not mention {text}");
    }
}
