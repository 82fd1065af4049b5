//! The notes API: the app's database code, in three versions.
//!
//! A "whole release" changes the database, the frontend and the backend
//! together. Here the change is renaming `notes.name` to `notes.title` the
//! zero-downtime way, expand then contract, over three releases:
//!
//! | release | its migrations | its code writes | its code reads |
//! | --- | --- | --- | --- |
//! | v1 | create `notes (id bigserial primary key, name text, created_at timestamptz not null default now())` | `name` | `name` |
//! | v2 | expand: `ADD COLUMN title text`; data: `UPDATE notes SET title = name WHERE title IS NULL` | `name` and `title` | `coalesce(title, name)` |
//! | v3 | contract: `DROP COLUMN name` | `title` | `title` |
//!
//! `SCHEMA_VERSION` picks which code runs ([`SchemaVersion`]). Each
//! version works on every schema it can meet during a rollout: v1 on the v1
//! and v2 schemas (it never names `title`); v2 on the v2 schema while v1
//! replicas still write rows without a `title` (hence the `coalesce`); v3 on
//! the v2 schema before its contract (`name` is nullable, so leaving it out
//! is fine) and after. v1 on the contracted schema fails, which is what a
//! contract check in a deploy tool must prevent.
//!
//! Every statement sent counts in `db_queries`, every failed database
//! operation (a connection that could not be made included) in
//! `db_errors`; both are shown by `GET /api/stats` and include the
//! `SELECT 1` of `/healthz`. Each failure is also logged on stderr, one
//! line.

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::pg::{self, literal, Connection, Pool};

/// How many notes a listing shows, newest first.
pub const LIST_LIMIT: usize = 5;

/// Which release's database code runs: `SCHEMA_VERSION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaVersion {
    #[default]
    V1,
    V2,
    V3,
}

impl FromStr for SchemaVersion {
    type Err = ();

    /// `v1`, `v2` or `v3`, in any case.
    fn from_str(text: &str) -> Result<SchemaVersion, ()> {
        match text.to_ascii_lowercase().as_str() {
            "v1" => Ok(SchemaVersion::V1),
            "v2" => Ok(SchemaVersion::V2),
            "v3" => Ok(SchemaVersion::V3),
            _ => Err(()),
        }
    }
}

impl SchemaVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaVersion::V1 => "v1",
            SchemaVersion::V2 => "v2",
            SchemaVersion::V3 => "v3",
        }
    }

    /// The statement that adds a note with `text`.
    pub fn insert_sql(self, text: &str) -> String {
        let text = literal(text);
        match self {
            SchemaVersion::V1 => format!("INSERT INTO notes (name) VALUES ({text})"),
            SchemaVersion::V2 => format!("INSERT INTO notes (name, title) VALUES ({text}, {text})"),
            SchemaVersion::V3 => format!("INSERT INTO notes (title) VALUES ({text})"),
        }
    }

    /// The statement that lists the newest notes: id and text.
    pub fn list_sql(self) -> &'static str {
        match self {
            SchemaVersion::V1 => "SELECT id, name FROM notes ORDER BY id DESC LIMIT 5",
            SchemaVersion::V2 => {
                "SELECT id, coalesce(title, name) FROM notes ORDER BY id DESC LIMIT 5"
            }
            SchemaVersion::V3 => "SELECT id, title FROM notes ORDER BY id DESC LIMIT 5",
        }
    }
}

/// One note as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub id: i64,
    /// `None` for a NULL, e.g. a v1 row read by v3 before the backfill.
    pub title: Option<String>,
}

/// The database side of the app: a pool, the version's SQL, the counters.
#[derive(Debug)]
pub struct Database {
    pool: Pool,
    pub schema: SchemaVersion,
    queries: AtomicU64,
    errors: AtomicU64,
}

impl Database {
    pub fn new(url: pg::Url, schema: SchemaVersion) -> Database {
        Database {
            pool: Pool::new(url),
            schema,
            queries: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// Adds a note with `add`, if given, then lists the newest ones, on one
    /// connection. `context` names the request in the log line of an error.
    pub fn notes(&self, add: Option<&str>, context: &str) -> Result<Vec<Note>, pg::Error> {
        self.counted(context, |connection| {
            if let Some(text) = add {
                self.run(connection, &self.schema.insert_sql(text))?;
            }
            let outcomes = self.run(connection, self.schema.list_sql())?;
            let rows = outcomes.last().map_or(&[][..], |outcome| &outcome.rows);
            rows.iter().map(|row| note(row)).collect()
        })
    }

    /// `SELECT 1`, for `/healthz`.
    pub fn ping(&self) -> Result<(), pg::Error> {
        self.counted("GET /healthz", |connection| {
            self.run(connection, "SELECT 1").map(drop)
        })
    }

    /// `{"version":"v1","db_queries":N,"db_errors":M}`.
    pub fn stats_json(&self) -> String {
        format!(
            "{{\"version\":{},\"db_queries\":{},\"db_errors\":{}}}",
            json_string(self.schema.as_str()),
            self.queries.load(Ordering::SeqCst),
            self.errors.load(Ordering::SeqCst)
        )
    }

    /// `{"version":"v1","notes":[{"id":3,"title":"..."},...]}`.
    pub fn notes_json(&self, notes: &[Note]) -> String {
        notes_json(self.schema, notes)
    }

    fn run(&self, connection: &mut Connection, sql: &str) -> Result<Vec<pg::Outcome>, pg::Error> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        connection.query(sql)
    }

    /// Runs `work` on a pooled connection; counts and logs a failure.
    fn counted<T>(
        &self,
        context: &str,
        work: impl FnOnce(&mut Connection) -> Result<T, pg::Error>,
    ) -> Result<T, pg::Error> {
        let result = self.pool.with(work);
        if let Err(error) = &result {
            self.errors.fetch_add(1, Ordering::SeqCst);
            let line = format!("zdd-example-app: database error ({context}): {error}");
            // One line, whatever the server's message holds.
            eprintln!("{}", line.replace(|c: char| c.is_control(), " "));
        }
        result
    }
}

/// A listed row: `id` and the text, in that order.
fn note(row: &[Option<String>]) -> Result<Note, pg::Error> {
    let bad = || pg::Error::Protocol(format!("unexpected row {row:?}"));
    let [Some(id), title] = row else {
        return Err(bad());
    };
    Ok(Note {
        id: id.parse().map_err(|_| bad())?,
        title: title.clone(),
    })
}

/// The JSON of a listing.
pub fn notes_json(schema: SchemaVersion, notes: &[Note]) -> String {
    let mut json = format!("{{\"version\":{},\"notes\":[", json_string(schema.as_str()));
    for (i, note) in notes.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        let title = note.title.as_deref().map_or("null".to_owned(), json_string);
        let _ = write!(json, "{{\"id\":{},\"title\":{title}}}", note.id);
    }
    json.push_str("]}");
    json
}

/// `text` as a JSON string, quotes included. Control characters are
/// escaped, everything else (non-ASCII included) is sent as is in UTF-8.
pub fn json_string(text: &str) -> String {
    let mut json = String::with_capacity(text.len() + 2);
    json.push('"');
    for c in text.chars() {
        match c {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            '\n' => json.push_str("\\n"),
            '\r' => json.push_str("\\r"),
            '\t' => json.push_str("\\t"),
            '\u{8}' => json.push_str("\\b"),
            '\u{c}' => json.push_str("\\f"),
            // U+2028 and U+2029 are valid JSON but not valid JavaScript
            // in older engines; escaping them costs nothing.
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let mut units = [0; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(json, "\\u{unit:04x}");
                }
            }
            c => json.push(c),
        }
    }
    json.push('"');
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_versions() {
        assert_eq!("v1".parse(), Ok(SchemaVersion::V1));
        assert_eq!("V2".parse(), Ok(SchemaVersion::V2));
        assert_eq!("v3".parse(), Ok(SchemaVersion::V3));
        for bad in ["", "v4", "2", "v1 ", "version1"] {
            assert_eq!(bad.parse::<SchemaVersion>(), Err(()), "{bad:?}");
        }
        assert_eq!(SchemaVersion::default(), SchemaVersion::V1);
        assert_eq!(SchemaVersion::V3.as_str(), "v3");
    }

    #[test]
    fn each_version_names_only_its_columns() {
        assert_eq!(
            SchemaVersion::V1.insert_sql("it's"),
            "INSERT INTO notes (name) VALUES ('it''s')"
        );
        assert_eq!(
            SchemaVersion::V2.insert_sql("a\\b"),
            "INSERT INTO notes (name, title) VALUES ('a\\b', 'a\\b')"
        );
        assert_eq!(
            SchemaVersion::V3.insert_sql("x"),
            "INSERT INTO notes (title) VALUES ('x')"
        );
        assert!(!SchemaVersion::V1.list_sql().contains("title"));
        assert!(SchemaVersion::V2
            .list_sql()
            .contains("coalesce(title, name)"));
        assert!(!SchemaVersion::V3.list_sql().contains("name"));
        assert!(!SchemaVersion::V3.insert_sql("name").contains("(name"));
        for version in [SchemaVersion::V1, SchemaVersion::V2, SchemaVersion::V3] {
            assert!(version
                .list_sql()
                .ends_with(&format!("ORDER BY id DESC LIMIT {LIST_LIMIT}")));
        }
    }

    #[test]
    fn json_strings() {
        assert_eq!(json_string(""), r#""""#);
        assert_eq!(json_string("plain"), r#""plain""#);
        assert_eq!(json_string(r#"say "hi" \o/"#), r#""say \"hi\" \\o/""#);
        assert_eq!(json_string("a\nb\tc\rd"), r#""a\nb\tc\rd""#);
        assert_eq!(
            json_string("\u{0}\u{1f}\u{7f}\u{8}\u{c}"),
            r#""\u0000\u001f\u007f\b\f""#
        );
        assert_eq!(json_string("café 日本 🎉"), "\"café 日本 🎉\"");
        assert_eq!(json_string("\u{2028}"), r#""\u2028""#);
        assert_eq!(json_string("'single'"), r#""'single'""#);
    }

    #[test]
    fn listing_json() {
        let notes = [
            Note {
                id: 3,
                title: Some("it's \"3\"".into()),
            },
            Note { id: 1, title: None },
        ];
        assert_eq!(
            notes_json(SchemaVersion::V2, &notes),
            r#"{"version":"v2","notes":[{"id":3,"title":"it's \"3\""},{"id":1,"title":null}]}"#
        );
        assert_eq!(
            notes_json(SchemaVersion::V1, &[]),
            r#"{"version":"v1","notes":[]}"#
        );
    }

    #[test]
    fn rows_become_notes() {
        assert_eq!(
            note(&[Some("7".into()), Some("x".into())]).unwrap(),
            Note {
                id: 7,
                title: Some("x".into())
            }
        );
        assert_eq!(note(&[Some("7".into()), None]).unwrap().title, None);
        assert!(note(&[None, Some("x".into())]).is_err());
        assert!(note(&[Some("seven".into()), None]).is_err());
        assert!(note(&[Some("7".into())]).is_err());
    }

    #[test]
    fn an_unreachable_database_is_counted() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = pg::Url::parse(&format!("postgres://u@127.0.0.1:{port}/d")).unwrap();
        let database = Database::new(url, SchemaVersion::V2);
        assert!(database.ping().is_err());
        assert!(database.notes(Some("x"), "test").is_err());
        assert_eq!(
            database.stats_json(),
            r#"{"version":"v2","db_queries":0,"db_errors":2}"#
        );
    }
}
