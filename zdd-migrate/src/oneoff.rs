//! `zdd-migrate run`: the application's own migration command in a
//! one-off container of the new image.
//!
//! Some applications migrate with their own tool (`./manage.py migrate`,
//! `rails db:migrate`, or `zdd-migrate up` shipped inside the image). The
//! command has to run with the new release's code, where the running
//! replicas run, and reach the database they reach; so the one-off:
//!
//! - is created from the new image (`--image`, or the `image` record
//!   zdd-build wrote, which is passed on unchanged);
//! - joins the networks of the service's newest running replica (plus any
//!   `--network`), **without** the replica's network aliases, so Docker's
//!   DNS never answers the service's name with the one-off;
//! - takes the replica's environment (minus what the replica merely
//!   inherited from its own, older image, so the new image's defaults
//!   apply) and its mounts, then `-e`/`-v` on top: the database URL and a
//!   SQLite volume come along;
//! - is labelled `zdd.oneoff=true` with `zdd.service`, so no zdd tool ever
//!   counts, routes or retires it as a replica;
//! - has its log streamed to stderr as it runs, and its exit code is the
//!   step's result. It is removed afterwards (`--keep` keeps it), also when
//!   zdd-migrate is interrupted.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HostConfig,
    NetworkConnectRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use zdd_core::cli::{Outcome, Progress};
use zdd_core::docker::{self, Docker};
use zdd_core::jsonl::{self, RecordWriter};
use zdd_core::service::Service;
use zdd_core::{labels, Error, Result};

use crate::record::{kind, RunRecord};

/// What `zdd-migrate run` is asked to do: its command-line arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Request {
    /// The service (default: the image record's `service`).
    #[arg(long)]
    pub service: Option<String>,
    /// Only replicas of this Compose project are looked at
    /// (COMPOSE_PROJECT_NAME is not read).
    #[arg(long)]
    pub project: Option<String>,
    /// The image to run (default: the `image` record on stdin).
    #[arg(long)]
    pub image: Option<String>,
    /// Another network to join (repeatable).
    #[arg(long = "network", value_name = "NETWORK")]
    pub networks: Vec<String>,
    /// An environment variable, KEY=VALUE (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// A bind mount or volume, SRC:DST[:ro] (repeatable).
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST")]
    pub volumes: Vec<String>,
    /// An extra label, KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Stop the container and fail if it runs longer (e.g. 10m).
    #[arg(long, default_value = "30m", value_parser = zdd_core::duration::parse)]
    pub timeout: Duration,
    /// Keep the container after it exits.
    #[arg(long)]
    pub keep: bool,
    /// The command, after `--` (the image's ENTRYPOINT, if any, stays).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Lines of the log kept for showing under `-q` when the command fails.
const TAIL: usize = 40;

pub async fn run(request: Request, progress: Progress) -> Result<Outcome> {
    for pair in &request.env {
        if !pair.contains('=') {
            return Err(Error::Usage(format!("-e `{pair}`: expected KEY=VALUE")));
        }
    }
    let extra_labels = request
        .labels
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| Error::Usage(format!("--label `{pair}`: expected KEY=VALUE")))
        })
        .collect::<Result<Vec<_>>>()?;

    // The image: named, or the one `image` record of the input.
    let (records, image, release, record_service) = match &request.image {
        Some(image) => (Vec::new(), image.clone(), None, None),
        None => {
            let records = jsonl::read_stdin()?;
            let mut images = records.iter().filter(|r| r.is_image());
            let first = images.next().ok_or_else(|| {
                Error::input(
                    "no `image` record on stdin (from zdd-build); or name the image with --image",
                )
            })?;
            if let Some(second) = images.next() {
                return Err(Error::input_at(
                    second.line,
                    "a second `image` record; run one image's migrations at a time",
                ));
            }
            let image = first.image()?;
            let (reference, release, service) = (image.image, image.release, image.service);
            (records, reference, Some(release), service)
        }
    };
    let service_name = request
        .service
        .clone()
        .or(record_service)
        .ok_or_else(|| Error::Usage("name the service: --service NAME".into()))?;

    let docker = docker::connect().await?;
    docker.inspect_image(&image).await.map_err(|e| {
        if docker::is_not_found(&e) {
            Error::Usage(format!(
                "image `{image}` is not on the engine (zdd never pulls)"
            ))
        } else {
            Error::docker(format!("inspecting image {image}"), e)
        }
    })?;
    let service = Service::new(&service_name, request.project.clone());
    let replicas = service.containers(&docker, false).await?;
    let template = replicas.last();
    let setup = Setup::from_replica(&docker, template, &request).await;

    let started = Instant::now();
    let name = format!(
        "{service_name}-migrate-{}",
        crate::clock::now()
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>()
    );
    let mut container_labels = HashMap::from([
        (labels::ONEOFF.to_string(), "true".to_string()),
        (labels::SERVICE.to_string(), service_name.clone()),
    ]);
    if let Some(release) = &release {
        container_labels.insert(labels::RELEASE.to_string(), release.clone());
    }
    container_labels.extend(extra_labels);

    progress.info(format_args!(
        "running `{}` in a one-off container of {image} on {}",
        request.command.join(" "),
        if setup.networks.is_empty() {
            setup
                .network_mode
                .clone()
                .unwrap_or_else(|| "the default network".into())
        } else {
            format!("network(s) {}", setup.networks.join(", "))
        }
    ));
    let mut record = RunRecord {
        service: service_name.clone(),
        image: image.clone(),
        release: release.clone(),
        container: String::new(),
        name: name.clone(),
        command: request.command.clone(),
        networks: setup.networks.clone(),
        status: "failed",
        exit_code: None,
        duration_ms: 0,
        error: None,
        removed: false,
    };
    let outcome =
        match create_and_start(&docker, &setup, &image, &name, &request, container_labels).await {
            Err((id, error)) => {
                record.container = id.unwrap_or_default();
                record.error = Some(error.to_string());
                progress.error(&error);
                Outcome::StepFailed
            }
            Ok(id) => {
                record.container = id.clone();
                let (exit, tail) = follow(&docker, &id, &name, request.timeout, progress).await;
                match exit {
                    Ok(code) => {
                        record.exit_code = Some(code);
                        if code == 0 {
                            record.status = "succeeded";
                            progress.info(format_args!("{name} exited 0"));
                        } else {
                            record.error = Some(format!("the command exited {code}"));
                            progress.error(format_args!("{name}: the command exited {code}"));
                        }
                    }
                    Err(error) => {
                        record.error = Some(error.clone());
                        progress.error(format_args!("{name}: {error}"));
                    }
                }
                if record.status != "succeeded" && !tail.is_empty() {
                    // Under -q the log was not shown as it ran.
                    let text: Vec<&str> = tail.iter().map(String::as_str).collect();
                    progress.block(
                        format_args!("last lines of {name}'s log:"),
                        &text.join("\n"),
                    );
                }
                Outcome::from_success(record.status == "succeeded")
            }
        };
    if !record.container.is_empty() {
        if request.keep {
            progress.info(format_args!("kept {name} (--keep)"));
        } else {
            record.removed = remove(&docker, &record.container).await;
        }
    }
    record.duration_ms = started.elapsed().as_millis() as i64;

    let mut out = RecordWriter::stdout();
    for input in &records {
        out.pass(input)?;
    }
    out.write(kind::RUN, &record)?;
    Ok(outcome)
}

/// Networks, environment and mounts for the one-off.
#[derive(Debug, Default)]
struct Setup {
    /// `host`, `none` or `container:…` when the replica uses one.
    network_mode: Option<String>,
    networks: Vec<String>,
    env: Vec<String>,
    binds: Vec<String>,
    mounts: Vec<bollard::models::Mount>,
}

impl Setup {
    async fn from_replica(
        docker: &Docker,
        replica: Option<&ContainerInspectResponse>,
        request: &Request,
    ) -> Setup {
        let mut setup = Setup::default();
        if let Some(replica) = replica {
            let host = replica.host_config.as_ref();
            let mode = host.and_then(|h| h.network_mode.clone());
            match mode.as_deref() {
                Some(m @ ("host" | "none")) => setup.network_mode = Some(m.to_owned()),
                Some(m) if m.starts_with("container:") => setup.network_mode = Some(m.to_owned()),
                _ => {
                    let mut names: Vec<String> = replica
                        .network_settings
                        .as_ref()
                        .and_then(|n| n.networks.as_ref())
                        .map(|n| n.keys().cloned().collect())
                        .unwrap_or_default();
                    names.sort();
                    setup.networks = names;
                }
            }
            // Operator-set environment: what the replica has beyond its image.
            let image_env = match replica.image.as_deref() {
                Some(id) => docker
                    .inspect_image(id)
                    .await
                    .ok()
                    .and_then(|i| i.config)
                    .and_then(|c| c.env)
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            setup.env = replica
                .config
                .as_ref()
                .and_then(|c| c.env.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|e| !image_env.contains(e))
                .collect();
            setup.binds = host.and_then(|h| h.binds.clone()).unwrap_or_default();
            setup.mounts = host.and_then(|h| h.mounts.clone()).unwrap_or_default();
        }
        for network in &request.networks {
            if !setup.networks.contains(network) {
                setup.networks.push(network.clone());
            }
        }
        for pair in &request.env {
            let key = pair.split_once('=').map_or(pair.as_str(), |(k, _)| k);
            setup
                .env
                .retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
            setup.env.push(pair.clone());
        }
        setup.binds.extend(request.volumes.iter().cloned());
        setup
    }
}

/// Creates, connects and starts the one-off; its id, or the id (if it was
/// created) and the error.
async fn create_and_start(
    docker: &Docker,
    setup: &Setup,
    image: &str,
    name: &str,
    request: &Request,
    labels: HashMap<String, String>,
) -> std::result::Result<String, (Option<String>, Error)> {
    let mut networks = setup.networks.iter();
    let first = networks.next();
    let host_config = HostConfig {
        binds: (!setup.binds.is_empty()).then(|| setup.binds.clone()),
        mounts: (!setup.mounts.is_empty()).then(|| setup.mounts.clone()),
        network_mode: setup.network_mode.clone().or_else(|| first.cloned()),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(request.command.clone()),
        env: (!setup.env.is_empty()).then(|| setup.env.clone()),
        labels: Some(labels),
        host_config: Some(host_config),
        networking_config: first.map(|network| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.clone(),
                EndpointSettings::default(),
            )])),
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default().name(name).build();
    let id = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| (None, Error::docker(format!("creating {name}"), e)))?
        .id;
    for network in networks {
        let request = NetworkConnectRequest {
            container: id.clone(),
            endpoint_config: Some(EndpointSettings::default()),
        };
        if let Err(e) = docker.connect_network(network, request).await {
            return Err((
                Some(id),
                Error::docker(format!("connecting {name} to network {network}"), e),
            ));
        }
    }
    if let Err(e) = docker.start_container(&id, None).await {
        return Err((Some(id), Error::docker(format!("starting {name}"), e)));
    }
    Ok(id)
}

/// Streams the log to stderr until the container exits; its exit code (or
/// why there is none) and the last lines of its log.
async fn follow(
    docker: &Docker,
    id: &str,
    name: &str,
    timeout: Duration,
    progress: Progress,
) -> (std::result::Result<i64, String>, VecDeque<String>) {
    let mut tail = VecDeque::new();
    let stream_and_wait = async {
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut logs = docker.logs(id, Some(options));
        let mut pending = String::new();
        let emit = |line: &str, tail: &mut VecDeque<String>| {
            progress.info(format_args!("[{name}] {line}"));
            if tail.len() == TAIL {
                tail.pop_front();
            }
            tail.push_back(line.to_owned());
        };
        while let Some(item) = logs.next().await {
            let Ok(output) = item else { break };
            pending.push_str(&String::from_utf8_lossy(&output.into_bytes()));
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                emit(line.trim_end_matches(['\n', '\r']), &mut tail);
            }
        }
        if !pending.is_empty() {
            emit(pending.trim_end(), &mut tail);
        }
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut wait = docker.wait_container(id, Some(options));
        match wait.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(format!(
                "waiting for it to exit: {}",
                docker::describe_error(&e)
            )),
            None => Err("the engine ended the wait without an exit code".into()),
        }
    };
    let result = tokio::select! {
        result = stream_and_wait => result,
        () = tokio::time::sleep(timeout) => {
            stop(docker, id).await;
            Err(format!("still running after {:.0}s (--timeout); stopped it", timeout.as_secs_f64()))
        }
        signal = zdd_core::interrupt::interrupted() => {
            stop(docker, id).await;
            Err(format!("interrupted by {signal}; stopped it"))
        }
    };
    (result, tail)
}

async fn stop(docker: &Docker, id: &str) {
    let options = StopContainerOptionsBuilder::default().t(10).build();
    let _ = docker.stop_container(id, Some(options)).await;
}

/// Removes the one-off; whether it is gone.
async fn remove(docker: &Docker, id: &str) -> bool {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => true,
        Err(e) => docker::is_not_found(&e),
    }
}
