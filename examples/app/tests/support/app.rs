//! The app under test: the real binary as a child process, plain HTTP/1.1
//! requests to it, and the SQL of the notes schema's migrations.
//!
//! Shared by the notes and client tests, which both drive the app from
//! outside as a load balancer and a deploy's migration step would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use zdd_e2e::free_port;

use super::json::{Json, Listing};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_zdd-example-app");

/// Generous bound for things that should take milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// v1's migration.
pub const V1_CREATE: &str = "CREATE TABLE notes (id bigserial primary key, name text, \
                         created_at timestamptz not null default now())";
/// v2's expand migration.
pub const V2_EXPAND: &str = "ALTER TABLE notes ADD COLUMN title text";
/// v2's data migration.
pub const V2_BACKFILL: &str = "UPDATE notes SET title = name WHERE title IS NULL";
/// v3's contract migration.
pub const V3_CONTRACT: &str = "ALTER TABLE notes DROP COLUMN name";

// ---------------------------------------------------------------- the app

/// The app, running as a child process, killed when dropped.
pub struct App {
    child: Child,
    pub port: u16,
    /// Every line the app printed on stderr so far.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl App {
    /// Starts the app with `SCHEMA_VERSION=version` on `database_url` and
    /// waits until it listens.
    pub fn start(database_url: &str, version: &str) -> App {
        App::start_with(&[
            ("DATABASE_URL", database_url),
            ("SCHEMA_VERSION", version),
            ("APP_VERSION", version),
        ])
    }

    pub fn start_with(env: &[(&str, &str)]) -> App {
        let port = free_port();
        let mut child = Command::new(BIN)
            .env_clear()
            .env("PORT", port.to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, listening) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = sender.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&stderr);
        let pipe = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
        let line = listening
            .recv_timeout(PATIENCE)
            .expect("the app did not say it was listening");
        assert!(line.contains("listening on"), "{line}");
        App {
            child,
            port,
            stderr,
        }
    }

    pub fn get(&self, target: &str) -> Response {
        request(self.port, "GET", target, None)
    }

    pub fn post(&self, target: &str, body: &str) -> Response {
        request(self.port, "POST", target, Some(body))
    }

    /// `GET /api/notes?add=TEXT` (TEXT form-encoded), expecting a 200.
    #[track_caller]
    pub fn add(&self, text: &str) -> Listing {
        let response = self.get(&format!("/api/notes?add={}", form_encode(text)));
        assert_eq!(response.status, 200, "{response:?}");
        response.listing()
    }

    /// `GET /api/notes`, expecting a 200.
    #[track_caller]
    pub fn list(&self) -> Listing {
        let response = self.get("/api/notes");
        assert_eq!(response.status, 200, "{response:?}");
        response.listing()
    }

    /// `(db_queries, db_errors)` from `/api/stats`.
    #[track_caller]
    pub fn stats(&self) -> (i64, i64) {
        let response = self.get("/api/stats");
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.content_type.as_deref(), Some("application/json"));
        let json = Json::parse(&response.body);
        assert_eq!(json.get("version").as_str(), Some(self.version().as_str()));
        (
            json.get("db_queries").as_i64().unwrap(),
            json.get("db_errors").as_i64().unwrap(),
        )
    }

    /// The `SCHEMA_VERSION` the app reports in `X-App-Version` (the tests
    /// set both alike).
    pub fn version(&self) -> String {
        self.get("/").body.trim_end().to_owned()
    }

    /// Waits for a stderr line containing `text`; returns it.
    #[track_caller]
    pub fn stderr_line(&self, text: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let lines = self.stderr.lock().unwrap();
            if let Some(line) = lines.iter().find(|line| line.contains(text)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no stderr line with {text:?} in {lines:?}"
            );
            drop(lines);
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- HTTP

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

impl Response {
    /// The body as a notes listing.
    #[track_caller]
    pub fn listing(&self) -> Listing {
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/json"),
            "{self:?}"
        );
        Listing::parse(&self.body)
    }
}

/// One request on a connection of its own.
pub fn request(port: u16, method: &str, target: &str, body: Option<&str>) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    if let Some(body) = body {
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    raw.push_str(body.unwrap_or(""));
    stream.write_all(raw.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let content_type = lines
        .filter_map(|line| line.split_once(": "))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.to_owned());
    Response {
        status,
        content_type,
        body: body.to_owned(),
    }
}

/// `text` for a query string: unreserved bytes as they are, a space as
/// `+`, everything else `%XX`.
pub fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
