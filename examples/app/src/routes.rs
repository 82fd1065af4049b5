//! What each request is answered with.
//!
//! This is all the behaviour a deploy tool observes over HTTP, kept apart
//! from sockets and threads so it reads in one go. The side effects are the
//! `delay_ms` sleep and, with `DATABASE_URL`, the database (see
//! [`crate::notes`]); the shutdown state comes in as an argument.

use std::thread;
use std::time::Duration;

use crate::config::Config;
use crate::http::{form_decode, query_param, Content, Request, Response, Status, MAX_BODY_LEN};
use crate::notes::Database;

/// The app's answers, given its configuration and the host it runs on.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    /// Sent in `X-Served-By`, so a client can tell replicas apart.
    pub hostname: String,
    /// The notes API's database; `None` without `DATABASE_URL`.
    pub database: Option<Database>,
}

impl App {
    /// The app for `config`, with a (lazily connecting) database pool if
    /// `DATABASE_URL` is set.
    pub fn new(config: Config, hostname: String) -> App {
        let database = config
            .database_url
            .clone()
            .map(|url| Database::new(url, config.schema_version));
        App {
            config,
            hostname,
            database,
        }
    }

    /// Answers `request`, whose body is `content`. `shutting_down` is true
    /// once SIGTERM or SIGINT has arrived, which makes `/healthz` fail so
    /// load balancers move away.
    pub fn handle(&self, request: &Request, content: &Content, shutting_down: bool) -> Response {
        let response = match (request.method.as_str(), request.path()) {
            (_, path) if path.starts_with("/api/") => self.api(request, content),
            ("GET" | "HEAD", "/") => self.root(request),
            ("GET" | "HEAD", "/healthz") => self.healthz(shutting_down),
            (_, "/" | "/healthz") => method_not_allowed("GET, HEAD"),
            _ => not_found(),
        };
        self.identified(response)
    }

    /// The answer to a request that could not be read.
    pub fn error(&self, status: Status, reason: &str) -> Response {
        self.identified(Response::text(status, format!("{reason}\n")))
    }

    /// `GET /`: the version, after `?delay_ms=N` or `REQUEST_DELAY_MS`.
    fn root(&self, request: &Request) -> Response {
        let delay = match query_param(request.query(), "delay_ms") {
            None => self.config.request_delay,
            Some(millis) => match millis.parse() {
                Ok(millis) => Duration::from_millis(millis),
                Err(_) => {
                    return Response::text(
                        Status::BAD_REQUEST,
                        "delay_ms must be a whole number of milliseconds\n",
                    )
                }
            },
        };
        thread::sleep(delay);
        if self.config.fail_root {
            return Response::text(
                Status::INTERNAL_SERVER_ERROR,
                format!("{} fails on purpose (FAIL_ROOT)\n", self.config.version),
            );
        }
        Response::text(Status::OK, format!("{}\n", self.config.version))
    }

    /// `GET /healthz`: with a database, also `SELECT 1` on a pooled
    /// connection.
    fn healthz(&self, shutting_down: bool) -> Response {
        if self.config.never_healthy {
            return Response::text(Status::SERVICE_UNAVAILABLE, "unhealthy (NEVER_HEALTHY)\n");
        }
        if shutting_down {
            return Response::text(Status::SERVICE_UNAVAILABLE, "shutting down\n");
        }
        match self.database.as_ref().map(Database::ping) {
            Some(Err(error)) => Response::text(
                Status::SERVICE_UNAVAILABLE,
                format!("database unavailable: {error}\n"),
            ),
            None | Some(Ok(())) => Response::text(Status::OK, "ok\n"),
        }
    }

    /// Everything under `/api/`: the notes API.
    fn api(&self, request: &Request, content: &Content) -> Response {
        let Some(database) = &self.database else {
            return Response::text(
                Status::SERVICE_UNAVAILABLE,
                "no database configured (DATABASE_URL)\n",
            );
        };
        match (request.method.as_str(), request.path()) {
            ("GET" | "HEAD", "/api/notes") => {
                let add = match query_param(request.query(), "add").map(form_decode) {
                    None => None,
                    Some(Some(text)) => Some(text),
                    Some(None) => {
                        return bad_request("add must be UTF-8 text, URL-encoded (%XX and +)")
                    }
                };
                notes(database, request, add.as_deref(), Status::OK)
            }
            ("POST", "/api/notes") => match content {
                Content::Bytes(body) => match std::str::from_utf8(body) {
                    Ok(text) => notes(database, request, Some(text), Status::CREATED),
                    Err(_) => bad_request("the body must be UTF-8 text"),
                },
                Content::TooLarge => Response::text(
                    Status::CONTENT_TOO_LARGE,
                    format!("a note takes at most {MAX_BODY_LEN} bytes\n"),
                ),
                Content::Unframed => Response::text(
                    Status::LENGTH_REQUIRED,
                    "send the note with a Content-Length\n",
                ),
            },
            ("GET" | "HEAD", "/api/stats") => Response::json(Status::OK, database.stats_json()),
            (_, "/api/notes") => method_not_allowed("GET, HEAD, POST"),
            (_, "/api/stats") => method_not_allowed("GET, HEAD"),
            _ => not_found(),
        }
    }

    /// Adds the headers that say which version on which host answered.
    fn identified(&self, response: Response) -> Response {
        response
            .with_header("X-App-Version", &self.config.version)
            .with_header("X-Served-By", &self.hostname)
    }
}

/// Adds a note with `add`, if any, then lists; `status` on success.
fn notes(database: &Database, request: &Request, add: Option<&str>, status: Status) -> Response {
    match add {
        Some("") => return bad_request("the note's text is empty"),
        // PostgreSQL text cannot hold NUL.
        Some(text) if text.contains('\0') => {
            return bad_request("the note's text contains a NUL character")
        }
        _ => {}
    }
    // Method and path only: the query holds the note's text.
    let context = format!("{} {}", request.method, request.path());
    match database.notes(add, &context) {
        Ok(notes) => Response::json(status, database.notes_json(&notes)),
        Err(error) => Response::text(
            Status::INTERNAL_SERVER_ERROR,
            format!("database error: {error}\n"),
        ),
    }
}

fn bad_request(reason: &str) -> Response {
    Response::text(Status::BAD_REQUEST, format!("{reason}\n"))
}

fn method_not_allowed(allow: &'static str) -> Response {
    Response::text(Status::METHOD_NOT_ALLOWED, "method not allowed\n").with_header("Allow", allow)
}

fn not_found() -> Response {
    Response::text(Status::NOT_FOUND, "not found\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    fn app(never_healthy: bool) -> App {
        let mut config = Config::from_lookup(&|_| None).unwrap();
        config.version = "v7".to_owned();
        config.never_healthy = never_healthy;
        App::new(config, "box".to_owned())
    }

    /// An app whose database is a port nobody listens on.
    fn app_with_unreachable_database() -> App {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://u@127.0.0.1:{port}/d");
        let config = Config::from_lookup(&|name| match name {
            "DATABASE_URL" => Some(url.clone().into()),
            "SCHEMA_VERSION" => Some("v2".into()),
            _ => None,
        })
        .unwrap();
        App::new(config, "box".to_owned())
    }

    fn get(app: &App, head: &str, shutting_down: bool) -> Response {
        send(app, head, &Content::EMPTY, shutting_down)
    }

    fn send(app: &App, head: &str, content: &Content, shutting_down: bool) -> Response {
        let request = parse_head(head.as_bytes()).unwrap();
        app.handle(&request, content, shutting_down)
    }

    fn header<'r>(response: &'r Response, name: &str) -> Option<&'r str> {
        response
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value.as_str())
    }

    #[test]
    fn root_answers_the_version() {
        let response = get(&app(false), "GET / HTTP/1.1\r\n\r\n", false);
        assert_eq!(response.status, Status::OK);
        assert_eq!(response.body, "v7\n");
        assert_eq!(header(&response, "X-App-Version"), Some("v7"));
        assert_eq!(header(&response, "X-Served-By"), Some("box"));
    }

    #[test]
    fn with_fail_root_the_root_fails_and_the_health_check_passes() {
        let mut app = app(false);
        app.config.fail_root = true;
        let root = get(&app, "GET / HTTP/1.1\r\n\r\n", false);
        assert_eq!(root.status, Status::INTERNAL_SERVER_ERROR);
        let health = get(&app, "GET /healthz HTTP/1.1\r\n\r\n", false);
        assert_eq!(health.status, Status::OK);
    }

    #[test]
    fn root_rejects_a_bad_delay() {
        let response = get(&app(false), "GET /?delay_ms=soon HTTP/1.1\r\n\r\n", false);
        assert_eq!(response.status, Status::BAD_REQUEST);
    }

    #[test]
    fn healthz() {
        let status = |never_healthy, shutting_down| {
            get(
                &app(never_healthy),
                "GET /healthz HTTP/1.1\r\n\r\n",
                shutting_down,
            )
            .status
        };
        assert_eq!(status(false, false), Status::OK);
        assert_eq!(status(true, false), Status::SERVICE_UNAVAILABLE);
        assert_eq!(status(false, true), Status::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn unknown_paths_and_methods() {
        let app = app(false);
        assert_eq!(
            get(&app, "GET /nope HTTP/1.1\r\n\r\n", false).status,
            Status::NOT_FOUND
        );
        assert_eq!(
            get(&app, "POST /nope HTTP/1.1\r\n\r\n", false).status,
            Status::NOT_FOUND
        );
        let response = get(&app, "POST / HTTP/1.1\r\n\r\n", false);
        assert_eq!(response.status, Status::METHOD_NOT_ALLOWED);
        assert_eq!(header(&response, "Allow"), Some("GET, HEAD"));
        assert_eq!(
            get(&app, "HEAD /healthz HTTP/1.1\r\n\r\n", false).status,
            Status::OK
        );
    }

    #[test]
    fn api_without_a_database() {
        let app = app(false);
        for head in [
            "GET /api/notes HTTP/1.1\r\n\r\n",
            "GET /api/notes?add=x HTTP/1.1\r\n\r\n",
            "POST /api/notes HTTP/1.1\r\n\r\n",
            "GET /api/stats HTTP/1.1\r\n\r\n",
            "GET /api/other HTTP/1.1\r\n\r\n",
        ] {
            let response = get(&app, head, false);
            assert_eq!(response.status, Status::SERVICE_UNAVAILABLE, "{head}");
            assert_eq!(response.body, "no database configured (DATABASE_URL)\n");
            assert_eq!(header(&response, "X-App-Version"), Some("v7"));
        }
        assert_eq!(
            get(&app, "GET /api HTTP/1.1\r\n\r\n", false).status,
            Status::NOT_FOUND
        );
    }

    #[test]
    fn api_with_an_unreachable_database() {
        let app = app_with_unreachable_database();
        let response = get(&app, "GET /api/notes HTTP/1.1\r\n\r\n", false);
        assert_eq!(response.status, Status::INTERNAL_SERVER_ERROR);
        assert!(
            response.body.starts_with("database error: cannot connect"),
            "{}",
            response.body
        );
        let response = get(&app, "GET /healthz HTTP/1.1\r\n\r\n", false);
        assert_eq!(response.status, Status::SERVICE_UNAVAILABLE);
        assert!(response
            .body
            .starts_with("database unavailable: cannot connect"));
        // Shutting down is said without asking the database.
        let response = get(&app, "GET /healthz HTTP/1.1\r\n\r\n", true);
        assert_eq!(response.body, "shutting down\n");

        let stats = get(&app, "GET /api/stats HTTP/1.1\r\n\r\n", false);
        assert_eq!(stats.status, Status::OK);
        assert_eq!(stats.content_type, "application/json");
        assert_eq!(
            stats.body,
            r#"{"version":"v2","db_queries":0,"db_errors":2}"#
        );
    }

    #[test]
    fn api_rejects_bad_requests_before_the_database() {
        let app = app_with_unreachable_database();
        let status = |head: &str, content: Content| send(&app, head, &content, false).status;
        let post = "POST /api/notes HTTP/1.1\r\n\r\n";
        assert_eq!(
            status("GET /api/notes?add=%zz HTTP/1.1\r\n\r\n", Content::EMPTY),
            Status::BAD_REQUEST
        );
        assert_eq!(
            status("GET /api/notes?add= HTTP/1.1\r\n\r\n", Content::EMPTY),
            Status::BAD_REQUEST
        );
        assert_eq!(
            status("GET /api/notes?add=a%00b HTTP/1.1\r\n\r\n", Content::EMPTY),
            Status::BAD_REQUEST
        );
        assert_eq!(status(post, Content::EMPTY), Status::BAD_REQUEST);
        assert_eq!(
            status(post, Content::Bytes(vec![0xff])),
            Status::BAD_REQUEST
        );
        assert_eq!(status(post, Content::TooLarge), Status::CONTENT_TOO_LARGE);
        assert_eq!(status(post, Content::Unframed), Status::LENGTH_REQUIRED);
        let response = send(
            &app,
            "DELETE /api/notes HTTP/1.1\r\n\r\n",
            &Content::EMPTY,
            false,
        );
        assert_eq!(response.status, Status::METHOD_NOT_ALLOWED);
        assert_eq!(header(&response, "Allow"), Some("GET, HEAD, POST"));
        assert_eq!(
            status("POST /api/stats HTTP/1.1\r\n\r\n", Content::EMPTY),
            Status::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            status("GET /api/nope HTTP/1.1\r\n\r\n", Content::EMPTY),
            Status::NOT_FOUND
        );
        // None of these reached the database.
        let stats = get(&app, "GET /api/stats HTTP/1.1\r\n\r\n", false);
        assert!(stats.body.ends_with(r#""db_queries":0,"db_errors":0}"#));
    }
}
