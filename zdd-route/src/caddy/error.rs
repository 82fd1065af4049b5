//! What can go wrong talking to Caddy's admin API, said so that the
//! reader knows what to check.

use std::fmt;

use serde_json::Value;

use super::TIMEOUT;

/// Why an admin API request did not give what was asked.
#[derive(Debug)]
pub enum AdminError {
    /// The endpoint is not `host:port` / `http://host:port`.
    BadEndpoint { endpoint: String, problem: String },
    /// An `@id` that cannot be put in a URL path.
    BadId { id: String },
    /// An upstream address that cannot be a `dial`.
    BadDial { dial: String },
    /// No answer: connection refused, a name that does not resolve, a
    /// timeout, a broken connection.
    Transport {
        endpoint: String,
        request: String,
        source: Box<ureq::Error>,
    },
    /// Caddy answered with an error status; `message` is its `error`.
    Refused {
        request: String,
        status: u16,
        message: String,
    },
    /// Caddy's config has no object with this `@id`.
    NoSuchId { id: String },
    /// The `@id` names something else than a `reverse_proxy` handler
    /// (`handler` is its `handler` field, empty when it has none).
    NotReverseProxy { id: String, handler: String },
    /// A `reverse_proxy` handler whose upstreams zdd cannot edit.
    Unsupported { id: String, problem: String },
    /// Caddy answered something that is not what the request returns.
    Unexpected { request: String, problem: String },
    /// The config changed under every attempt (another client editing it).
    Conflict { id: String, attempts: usize },
    /// Caddy refused the `If-Match` of a config that had not changed: its
    /// ETags are not hashed as Caddy 2.6 hashes them.
    EtagRejected,
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::BadEndpoint { endpoint, problem } => write!(
                f,
                "`{endpoint}` is not a Caddy admin endpoint: {problem} (write HOST:PORT or http://HOST:PORT, as in Caddy's `admin.listen`; the default is localhost:2019)"
            ),
            AdminError::BadId { id } => write!(
                f,
                "`{id}` cannot be a Caddy `@id` here: it must be non-empty, without `/`, `?`, `#`, `%` or spaces"
            ),
            AdminError::BadDial { dial } => write!(
                f,
                "`{dial}` is not an upstream address: write HOST:PORT (Caddy's `dial`)"
            ),
            AdminError::Transport {
                endpoint,
                request,
                source,
            } => match transport_problem(source) {
                Transport::Refused => write!(
                    f,
                    "nothing answers at Caddy's admin endpoint {endpoint} (connection refused): is caddy running, and is {endpoint} its `admin.listen` address?"
                ),
                Transport::NoHost => write!(
                    f,
                    "the host of Caddy's admin endpoint {endpoint} does not resolve"
                ),
                Transport::Timeout => write!(
                    f,
                    "Caddy's admin endpoint {endpoint} did not answer `{request}` within {} s",
                    TIMEOUT.as_secs()
                ),
                Transport::Other => write!(
                    f,
                    "Caddy's admin endpoint {endpoint}: `{request}` failed: {source}"
                ),
            },
            AdminError::Refused {
                request,
                status,
                message,
            } => {
                write!(f, "Caddy refused `{request}` (HTTP {status}): {message}")?;
                if *status == 403 && message.contains("host not allowed") {
                    write!(f, " (Caddy checks the Host header: use the address of its `admin.listen`, or list this one in `admin.origins`)")?;
                } else if message.starts_with("loading new config") {
                    write!(f, " (Caddy kept its previous config)")?;
                }
                Ok(())
            }
            AdminError::NoSuchId { id } => write!(
                f,
                "Caddy's config has no object with \"@id\": \"{id}\" (give the reverse_proxy handler zdd routes through `\"@id\": \"{id}\"` in Caddy's JSON config)"
            ),
            AdminError::NotReverseProxy { id, handler } if handler.is_empty() => write!(
                f,
                "Caddy's \"@id\": \"{id}\" is not a handler (it has no `handler` field); zdd needs a `reverse_proxy` handler"
            ),
            AdminError::NotReverseProxy { id, handler } => write!(
                f,
                "Caddy's \"@id\": \"{id}\" is a `{handler}` handler, not a `reverse_proxy` handler"
            ),
            AdminError::Unsupported { id, problem } => {
                write!(f, "Caddy's reverse_proxy \"@id\": \"{id}\" {problem}")
            }
            AdminError::Unexpected { request, problem } => write!(
                f,
                "Caddy's answer to `{request}` is not what zdd expected: {problem}"
            ),
            AdminError::Conflict { id, attempts } => write!(
                f,
                "Caddy's config changed under each of {attempts} attempts to change the upstreams of \"{id}\" (is another client editing it?)"
            ),
            AdminError::EtagRejected => write!(
                f,
                "Caddy refused zdd's If-Match for a config that had not changed: this Caddy hashes its ETags otherwise than Caddy 2.6, the version zdd supports"
            ),
        }
    }
}

impl std::error::Error for AdminError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AdminError::Transport { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

enum Transport {
    Refused,
    NoHost,
    Timeout,
    Other,
}

/// Whether a request may not have reached Caddy's admin API, or its
/// answer was lost: refused, reset or closed early.
pub(super) fn broken(error: &ureq::Error) -> bool {
    use std::io::ErrorKind::*;
    match error {
        ureq::Error::Io(e) => matches!(
            e.kind(),
            ConnectionRefused | ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
        ),
        ureq::Error::ConnectionFailed | ureq::Error::Protocol(_) => true,
        _ => false,
    }
}

fn transport_problem(error: &ureq::Error) -> Transport {
    match error {
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Transport::Refused
        }
        ureq::Error::ConnectionFailed => Transport::Refused,
        ureq::Error::HostNotFound => Transport::NoHost,
        ureq::Error::Timeout(_) => Transport::Timeout,
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => Transport::Timeout,
        _ => Transport::Other,
    }
}

pub type Result<T, E = AdminError> = std::result::Result<T, E>;

/// Caddy's `{"error": "…"}`, or the body as it came.
pub(super) fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if v["error"].is_string() => v["error"].as_str().unwrap_or_default().to_owned(),
        _ if text.trim().is_empty() => "(an empty answer)".into(),
        _ => text.trim().to_owned(),
    }
}

pub(super) fn ok_answer(request: &str, status: u16, body: &[u8]) -> Result<()> {
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(AdminError::Refused {
            request: request.to_owned(),
            status,
            message: error_message(body),
        })
    }
}

pub(super) fn json_answer(request: &str, status: u16, body: &[u8]) -> Result<Value> {
    ok_answer(request, status, body)?;
    serde_json::from_slice(body).map_err(|e| AdminError::Unexpected {
        request: request.to_owned(),
        problem: format!("not JSON ({e})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_quote_caddy() {
        let e = AdminError::Refused {
            request: "POST /id/api/upstreams".into(),
            status: 500,
            message: error_message(
                br#"{"error":"loading new config: json: unknown field \"dail\""}"#,
            ),
        };
        assert_eq!(
            e.to_string(),
            "Caddy refused `POST /id/api/upstreams` (HTTP 500): loading new config: json: unknown field \"dail\" (Caddy kept its previous config)"
        );
        let host = AdminError::Refused {
            request: "GET /config/".into(),
            status: 403,
            message: error_message(br#"{"error":"host not allowed: lb:2019"}"#),
        };
        assert!(host.to_string().contains("admin.origins"), "{host}");
        assert_eq!(error_message(b""), "(an empty answer)");
        let id = AdminError::NoSuchId { id: "api".into() }.to_string();
        assert!(id.contains("no object with \"@id\": \"api\""), "{id}");
    }
}
