//! The connection to the Docker engine, and what every tool needs to say
//! about containers.
//!
//! The engine on a deploy host is often older than the API bollard speaks by
//! default, so every connection negotiates the version first. `DOCKER_HOST`
//! is honoured as the docker CLI honours it.

use bollard::errors::Error as DockerError;
use bollard::models::{ContainerInspectResponse, ContainerSummary};
use bollard::query_parameters::{ListContainersOptionsBuilder, LogsOptionsBuilder};
pub use bollard::Docker;
use futures_util::StreamExt;

use crate::labels;
use crate::record::ContainerRecord;
use crate::{Error, Result};

/// Connects to the engine named by `DOCKER_HOST` (default: the local unix
/// socket) and negotiates the API version.
pub async fn connect() -> Result<Docker> {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let docker = Docker::connect_with_defaults()
        .map_err(|e| Error::docker(format!("cannot connect to the Docker engine at {host}"), e))?;
    docker.negotiate_version().await.map_err(|e| {
        Error::docker(
            format!(
                "cannot reach the Docker engine at {host} (is it running? is DOCKER_HOST right?)"
            ),
            e,
        )
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
