//! The connection to the Docker engine, and what every tool needs to say
//! about containers.
//!
//! The engine on a deploy host is often older than the API bollard speaks by
//! default, so every connection negotiates the version first. `DOCKER_HOST`
//! is honoured as the docker CLI honours it.

use bollard::errors::Error as DockerError;
use std::time::Duration;

use bollard::models::{ContainerInspectResponse, ContainerSummary, HealthConfig};
use bollard::query_parameters::{ListContainersOptionsBuilder, LogsOptionsBuilder};
use bollard::ClientVersion;
pub use bollard::Docker;
use futures_util::StreamExt;

use crate::labels;
use crate::record::ContainerRecord;
use crate::{Error, Result};

/// Docker's defaults for a HEALTHCHECK that leaves them out.
const DOCKER_DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DOCKER_DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DOCKER_DEFAULT_RETRIES: u32 = 3;

/// Connects to the engine named by `DOCKER_HOST` (default: the local unix
/// socket) and negotiates the API version.
///
/// On a unix socket the version comes from the engine's `/_ping` answer
/// (its `Api-Version` header), as the docker CLI negotiates: `/version`,
/// bollard's way, makes the engine run `runc --version` and
/// `docker-init --version` and ask containerd, 10 ms on an idle engine and
/// several times that on a busy one, for every tool of every deploy.
pub async fn connect() -> Result<Docker> {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let cannot_connect =
        |e| Error::docker(format!("cannot connect to the Docker engine at {host}"), e);
    if let Some(path) = host.strip_prefix("unix://") {
        let path = path.to_owned();
        let pinged = tokio::task::spawn_blocking(move || ping_api_version(&path))
            .await
            .ok()
            .flatten();
        if let Some(server) = pinged {
            let version = if server < *bollard::API_DEFAULT_VERSION {
                server
            } else {
                *bollard::API_DEFAULT_VERSION
            };
            return Docker::connect_with_unix(&host, CONNECT_TIMEOUT_SECS, &version)
                .map_err(cannot_connect);
        }
    }
    let docker = Docker::connect_with_defaults().map_err(cannot_connect)?;
    docker.negotiate_version().await.map_err(|e| {
        Error::docker(
            format!(
                "cannot reach the Docker engine at {host} (is it running? is DOCKER_HOST right?)"
            ),
            e,
        )
    })
}

/// bollard's default request timeout, kept for the connections made here.
const CONNECT_TIMEOUT_SECS: u64 = 120;

/// The API version the engine on the unix socket `path` answers `/_ping`
/// with; `None` when it cannot be asked (the caller falls back to
/// `/version`, whose error says why).
fn ping_api_version(path: &str) -> Option<ClientVersion> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(path).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .ok()?;
    let mut answer = Vec::new();
    stream.take(16 * 1024).read_to_end(&mut answer).ok()?;
    api_version_header(&String::from_utf8_lossy(&answer))
}

/// The `Api-Version: 1.41` header of an HTTP answer of status 200.
fn api_version_header(answer: &str) -> Option<ClientVersion> {
    let head = answer.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?;
    if status.split_whitespace().nth(1) != Some("200") {
        return None;
    }
    let value = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("api-version")
            .then(|| value.trim())
    })?;
    let (major, minor) = value.split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

/// A one-line description of an engine error: its message and HTTP status.
pub fn describe_error(error: &DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{} (HTTP {status_code})", message.trim()),
        other => other.to_string(),
    }
}

/// Whether the engine answered 404 (no such container or image).
pub fn is_not_found(error: &DockerError) -> bool {
    status_of(error) == Some(404)
}

/// Whether the engine answered 409 (name in use, removal in progress).
pub fn is_conflict(error: &DockerError) -> bool {
    status_of(error) == Some(409)
}

/// Whether the engine answered 304 (already started, already stopped).
pub fn is_not_modified(error: &DockerError) -> bool {
    status_of(error) == Some(304)
}

fn status_of(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The record for an inspected container of `service`.
///
/// `release` comes from the `zdd.release` label, else the image id (a
/// container zdd did not create still has a release that differs from
/// every other image). `address` is `ip:port` on the container's network:
/// the network named by nothing in particular is chosen deterministically
/// (first by name), the port from the `zdd.port` label or else the lowest
/// exposed TCP port.
pub fn container_record(inspect: &ContainerInspectResponse, service: &str) -> ContainerRecord {
    let id = inspect.id.clone().unwrap_or_default();
    let mut record = ContainerRecord::new(id, service);
    let config = inspect.config.as_ref();
    let labels = config.and_then(|c| c.labels.as_ref());
    let label = |key: &str| labels.and_then(|l| l.get(key)).cloned();

    record.name = inspect
        .name
        .as_deref()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_owned();
    record.project = label(labels::compose::PROJECT);
    record.image = config.and_then(|c| c.image.clone()).unwrap_or_default();
    record.release = label(labels::RELEASE).or_else(|| {
        inspect
            .image
            .as_deref()
            .map(|id| short_image_id(id).to_owned())
    });
    record.state = inspect
        .state
        .as_ref()
        .and_then(|s| s.status)
        .map(|s| s.to_string());

    let port = label(labels::PORT)
        .and_then(|p| p.parse::<u16>().ok())
        .or_else(|| lowest_tcp_port(config.and_then(|c| c.exposed_ports.as_ref())));
    let ip = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|networks| {
            let mut names: Vec<&String> = networks.keys().collect();
            names.sort();
            names.into_iter().find_map(|name| {
                networks[name]
                    .ip_address
                    .clone()
                    .filter(|ip| !ip.is_empty())
            })
        });
    record.address = match (ip, port) {
        (Some(ip), Some(port)) => Some(format!("{ip}:{port}")),
        _ => None,
    };
    record
}

/// The containers carrying the label `key=value` (stopped ones too with
/// `include_stopped`), as the engine lists them.
pub async fn containers_labelled(
    docker: &Docker,
    key: &str,
    value: &str,
    include_stopped: bool,
) -> Result<Vec<ContainerSummary>> {
    let filters =
        std::collections::HashMap::from([("label".to_string(), vec![format!("{key}={value}")])]);
    let options = ListContainersOptionsBuilder::default()
        .all(include_stopped)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .map_err(|e| Error::docker(format!("listing the containers labelled {key}={value}"), e))
}

/// The containers with these full ids (running or not), in one request.
///
/// The engine answers a listing from its in-memory view, without taking
/// each container's lock as `inspect` does (a lock a running HEALTHCHECK
/// exec holds, on a busy host, for tens to hundreds of milliseconds). Only
/// full ids (64 hex digits) are asked for, since the engine matches the
/// `id` filter as a pattern; a container listed here is one of them, and
/// one missing may still exist under another spelling of its id: ask
/// [`Docker::inspect_container`] about it.
pub async fn containers_with_ids(
    docker: &Docker,
    ids: impl IntoIterator<Item = &str>,
) -> Result<Vec<ContainerSummary>> {
    let ids: Vec<String> = ids
        .into_iter()
        .filter(|id| is_full_id(id))
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let filters = std::collections::HashMap::from([("id".to_string(), ids.clone())]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let listed = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| Error::docker(format!("listing {} container(s) by id", ids.len()), e))?;
    Ok(listed
        .into_iter()
        .filter(|c| c.id.as_ref().is_some_and(|id| ids.contains(id)))
        .collect())
}

/// Whether `id` is a full container id: 64 lowercase hex digits.
pub fn is_full_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `sha256:0123…` → `0123456789ab`.
pub fn short_image_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// The lowest TCP port among exposed ports written `8080/tcp` (or `8080`).
pub fn lowest_tcp_port(exposed: Option<&Vec<String>>) -> Option<u16> {
    exposed?
        .iter()
        .filter_map(|p| match p.split_once('/') {
            Some((port, "tcp")) => port.parse().ok(),
            Some(_) => None,
            None => p.parse().ok(),
        })
        .min()
}

/// The last `lines` lines of a container's log (stdout and stderr), for
/// showing why it failed. Errors reading the log are returned as text: the
/// log is a courtesy, never the reason a step fails.
pub async fn log_tail(docker: &Docker, id: &str, lines: usize) -> String {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&lines.to_string())
        .build();
    let mut stream = docker.logs(id, Some(options));
    let mut text = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(output) => text.push_str(&String::from_utf8_lossy(&output.into_bytes())),
            Err(e) => {
                text.push_str(&format!("(could not read the log: {})", describe_error(&e)));
                break;
            }
        }
    }
    text
}

/// The engine's events for the containers `ids`, fanned out to every
/// receiver of the returned sender. Opened with `since` a second ago, so
/// nothing between now and the stream's first poll is missed (a replica
/// that dies at once is still seen dying).
pub fn container_events<'a>(
    docker: &Docker,
    ids: impl Iterator<Item = &'a str>,
) -> tokio::sync::broadcast::Sender<bollard::models::EventMessage> {
    use std::time::{SystemTime, UNIX_EPOCH};
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(std::time::Duration::from_secs(1));
    let filters = std::collections::HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        ("container".to_string(), ids.map(str::to_owned).collect()),
    ]);
    let options = bollard::query_parameters::EventsOptionsBuilder::default()
        .since(&format!("{}.{:09}", since.as_secs(), since.subsec_nanos()))
        .filters(&filters)
        .build();
    let (sender, _) = tokio::sync::broadcast::channel(256);
    let forward = sender.clone();
    let mut stream = docker.events(Some(options));
    tokio::spawn(async move {
        while let Some(Ok(event)) = stream.next().await {
            // No receiver left means every watcher is done.
            if forward.send(event).is_err() {
                break;
            }
        }
    });
    sender
}

/// The container's effective HEALTHCHECK, unless it has none or `NONE`.
pub fn healthcheck_of(inspect: &ContainerInspectResponse) -> Option<HealthConfig> {
    let check = inspect.config.as_ref()?.healthcheck.clone()?;
    match check.test.as_deref() {
        Some([first, ..]) if first == "NONE" => None,
        Some([]) | None => None,
        Some(_) => Some(check),
    }
}

/// How long Docker may take to call a container healthy before it would
/// call it unhealthy: the start period, then `retries` failed checks (plus
/// one), each taking up to an interval and a timeout.
pub fn healthcheck_deadline(check: &HealthConfig) -> Duration {
    let nanos = |value: Option<i64>, default: Duration| match value {
        Some(n) if n > 0 => Duration::from_nanos(n as u64),
        _ => default,
    };
    let interval = nanos(check.interval, DOCKER_DEFAULT_INTERVAL);
    let timeout = nanos(check.timeout, DOCKER_DEFAULT_TIMEOUT);
    let start_period = nanos(check.start_period, Duration::ZERO);
    let retries = match check.retries {
        Some(n) if n > 0 => n as u32,
        _ => DOCKER_DEFAULT_RETRIES,
    };
    start_period + interval * (retries + 1) + timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_version_comes_from_the_ping_headers() {
        let answer = "HTTP/1.0 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK";
        let version = api_version_header(answer).unwrap();
        assert_eq!((version.major_version, version.minor_version), (1, 41));
        assert!(api_version_header(
            "HTTP/1.0 500 Internal Server Error\r\nApi-Version: 1.41\r\n\r\n"
        )
        .is_none());
        assert!(api_version_header("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nOK").is_none());
    }

    #[test]
    fn only_full_ids_are_listed_by_id() {
        let id = "4e12bd4b16e040a7c87f982d877cebfee472871c733666e540f4db25e3f3122c";
        assert!(is_full_id(id));
        assert!(
            !is_full_id(&id[..12]),
            "a prefix could match another container"
        );
        assert!(!is_full_id(&id.to_uppercase()));
        assert!(
            !is_full_id(&format!("{}.*", &id[..62])),
            "the engine reads it as a pattern"
        );
    }

    #[test]
    fn deadline_follows_the_healthcheck() {
        let check = HealthConfig {
            interval: Some(1_000_000_000),
            timeout: Some(500_000_000),
            retries: Some(3),
            start_period: Some(2_000_000_000),
            ..Default::default()
        };
        assert_eq!(
            healthcheck_deadline(&check),
            Duration::from_millis(2000 + 4000 + 500)
        );
        assert_eq!(
            healthcheck_deadline(&HealthConfig::default()),
            Duration::from_secs(30 * 4 + 30)
        );
    }
}
