//! What each request is answered with.
//!
//! This is all the behaviour a deploy tool observes over HTTP, kept apart
//! from sockets and threads so it reads in one go. The only side effect is
//! the `delay_ms` sleep; the shutdown state comes in as an argument.

use std::thread;
use std::time::Duration;

use crate::config::Config;
use crate::http::{query_param, Request, Response, Status};

/// The app's answers, given its configuration and the host it runs on.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    /// Sent in `X-Served-By`, so a client can tell replicas apart.
    pub hostname: String,
}

impl App {
    /// Answers `request`. `shutting_down` is true once SIGTERM or SIGINT has
    /// arrived, which makes `/healthz` fail so load balancers move away.
    pub fn handle(&self, request: &Request, shutting_down: bool) -> Response {
        let response = match (request.method.as_str(), request.path()) {
            ("GET" | "HEAD", "/") => self.root(request),
            ("GET" | "HEAD", "/healthz") => self.healthz(shutting_down),
            (_, "/" | "/healthz") => {
                Response::text(Status::METHOD_NOT_ALLOWED, "method not allowed\n")
                    .with_header("Allow", "GET, HEAD")
            }
            _ => Response::text(Status::NOT_FOUND, "not found\n"),
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
        Response::text(Status::OK, format!("{}\n", self.config.version))
    }

    /// `GET /healthz`.
    fn healthz(&self, shutting_down: bool) -> Response {
        if self.config.never_healthy {
            Response::text(Status::SERVICE_UNAVAILABLE, "unhealthy (NEVER_HEALTHY)\n")
        } else if shutting_down {
            Response::text(Status::SERVICE_UNAVAILABLE, "shutting down\n")
        } else {
            Response::text(Status::OK, "ok\n")
        }
    }

    /// Adds the headers that say which version on which host answered.
    fn identified(&self, response: Response) -> Response {
        response
            .with_header("X-App-Version", &self.config.version)
            .with_header("X-Served-By", &self.hostname)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    fn app(never_healthy: bool) -> App {
        let mut config = Config::from_lookup(&|_| None).unwrap();
        config.version = "v7".to_owned();
        config.never_healthy = never_healthy;
        App {
            config,
            hostname: "box".to_owned(),
        }
    }

    fn get(app: &App, head: &str, shutting_down: bool) -> Response {
        let request = parse_head(head.as_bytes()).unwrap();
        app.handle(&request, shutting_down)
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
}
