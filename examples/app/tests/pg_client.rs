//! The app's PostgreSQL client against a real server, through the app:
//! the pool after errors and after the server goes away, escaping (text
//! round-trips exactly), and authentication (`trust` only).
//!
//! Each test starts its own server and the real binary (see [`support`]).
//! The unit tests in `src/pg/` check the same client against scripted
//! bytes; these check it against PostgreSQL itself.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::app::{App, PATIENCE, V1_CREATE, V2_EXPAND};
use zdd_e2e::postgres::Pg;

/// A statement that fails on the server costs that request only: the
/// connection is dropped, the next request gets a good one, and the pool
/// keeps reusing connections.
#[test]
fn a_server_error_leaves_the_pool_usable() {
    let pg = Pg::start_loopback();
    let app = App::start(&pg.tcp_url("postgres", "postgres"), "v1");

    let failed = app.get("/api/notes");
    assert_eq!(failed.status, 500);
    assert_eq!(
        failed.body,
        "database error: relation \"notes\" does not exist (SQLSTATE 42P01)\n"
    );
    assert_eq!(app.stats(), (1, 1));
    assert_eq!(app.get("/healthz").status, 200);

    pg.psql("postgres", V1_CREATE);
    assert_eq!(app.add("hello").notes, [(1, Some("hello".into()))]);
    for i in 0..20 {
        assert_eq!(app.add(&format!("note {i}")).notes.len(), 5.min(i + 2));
    }
    // Per statement: the failed SELECT, SELECT 1, then INSERT and SELECT
    // for each of the 21 notes.
    assert_eq!(app.stats(), (2 + 2 * 21, 1));
    // One request at a time: one connection, reused. (The one the error
    // dropped may take a moment to go.)
    let deadline = Instant::now() + PATIENCE;
    loop {
        let backends = pg.psql_output(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'zdd-example-app'",
        );
        if backends == "1\n" {
            break;
        }
        assert!(Instant::now() < deadline, "{backends} connections");
        thread::sleep(Duration::from_millis(50));
    }

    // The server goes away: the pooled connection is found dead, a new one
    // cannot be made, and both endpoints say so.
    drop(pg);
    let health = app.get("/healthz");
    assert_eq!(health.status, 503, "{health:?}");
    assert!(
        health
            .body
            .starts_with("database unavailable: cannot connect"),
        "{health:?}"
    );
    let failed = app.get("/api/notes");
    assert_eq!(failed.status, 500);
    assert!(
        failed.body.starts_with("database error: cannot connect"),
        "{failed:?}"
    );
    assert_eq!(app.stats().1, 3);
    app.stderr_line("database error (GET /healthz): cannot connect");
}

/// Quotes, backslashes, SQL, control characters and non-ASCII text come
/// back exactly as sent, through both ways of adding a note, and are
/// stored exactly so.
#[test]
fn text_round_trips() {
    let pg = Pg::start_loopback();
    pg.psql("postgres", V1_CREATE);
    pg.psql("postgres", V2_EXPAND);
    let app = App::start(&pg.tcp_url("postgres", "postgres"), "v2");
    let texts = [
        r#"it's "quoted" and 'twice'' "#,
        r"back\slash \\ \' \n \x41 E'\047'",
        "'); DROP TABLE notes; --",
        "$$dollar$$ $tag$ %41 %%",
        "naïve café, 日本語, emoji 🎉, שלום",
        "line one\nline two\ttab\r\u{1} bell\u{7}",
        "+ plus & amp = eq ? q # hash",
    ];
    for text in texts {
        for (how, listing) in [
            ("add", app.add(text)),
            ("POST", {
                let response = app.post("/api/notes", text);
                assert_eq!(response.status, 201, "{response:?}");
                response.listing()
            }),
        ] {
            let (id, title) = listing.newest();
            assert_eq!(title, Some(text), "{how}");
            let stored = pg.psql_output(
                "postgres",
                &format!("SELECT name = title, title FROM notes WHERE id = {id}"),
            );
            assert_eq!(stored, format!("t|{text}\n"), "{how}");
        }
    }
    assert_eq!(
        pg.psql_output("postgres", "SELECT count(*) FROM notes"),
        format!("{}\n", 2 * texts.len())
    );
    assert_eq!(app.stats().1, 0);
}

/// Only `trust` works: any other method is an error naming it, and so is
/// a server whose string literals would not mean what the app's do.
#[test]
fn only_trust_authentication_and_standard_strings() {
    let pg = Pg::start_loopback();
    pg.psql("postgres", "CREATE ROLE scram LOGIN PASSWORD 'pw'");
    pg.psql(
        "postgres",
        "SET password_encryption = 'md5'; CREATE ROLE md5 LOGIN PASSWORD 'pw'",
    );
    pg.psql("postgres", "CREATE ROLE clear LOGIN PASSWORD 'pw'");
    // The first matching line wins: these go before initdb's trust lines.
    pg.pg_hba_prepend(
        "host all scram 127.0.0.1/32 scram-sha-256\n\
         host all md5 127.0.0.1/32 md5\n\
         host all clear 127.0.0.1/32 password\n",
    );

    for (user, method) in [
        ("scram", "SASL (SCRAM-SHA-256)"),
        ("md5", "md5 password"),
        ("clear", "cleartext password"),
    ] {
        // The password is accepted in the URL, but never sent.
        let url = pg.tcp_url(&format!("{user}:pw"), "postgres");
        let app = App::start(&url, "v1");
        let expected = format!(
            "the server asks for {method} authentication, but the example app's \
             client supports trust authentication only"
        );
        // pg_reload_conf only signals the server: give it a moment.
        let deadline = Instant::now() + PATIENCE;
        let health = loop {
            let health = app.get("/healthz");
            if health.status != 200 || Instant::now() > deadline {
                break health;
            }
            thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(health.status, 503, "{user}: {health:?}");
        assert_eq!(
            health.body,
            format!("database unavailable: {expected}\n"),
            "{user}"
        );
        let failed = app.get("/api/notes");
        assert_eq!(failed.status, 500);
        assert_eq!(failed.body, format!("database error: {expected}\n"));
        app.stderr_line(&expected);
    }

    // With standard_conforming_strings off, a backslash in a literal would
    // be an escape: the app refuses to query rather than mis-escape.
    pg.psql(
        "postgres",
        "ALTER DATABASE postgres SET standard_conforming_strings = off",
    );
    let app = App::start(&pg.tcp_url("postgres", "postgres"), "v1");
    let health = app.get("/healthz");
    assert_eq!(health.status, 503);
    assert!(
        health.body.contains("standard_conforming_strings=on"),
        "{health:?}"
    );
    let failed = app.get("/api/notes?add=a%5Cb");
    assert_eq!(failed.status, 500);
    assert!(failed.body.contains("refusing to query"), "{failed:?}");
}
