//! `zdd-scale`: start a new release's replicas beside the old ones.
//!
//! Reads the `image` record `zdd-build` wrote and makes sure N replicas of
//! that release run, without stopping anything: the old replicas keep
//! serving until later steps have proven the new ones (start-first). New
//! replicas copy the configuration of the service's newest running
//! container (see [`template`]), or a spec file's on a first deploy, and are
//! started in parallel. Replicas of this release that already run count
//! towards N, so running the step again converges instead of piling up
//! containers.
//!
//! Output: the input records, then one `container` record per replica of
//! the new release (`role: new`, with `started: true` for the replicas
//! this run created and `started: false` for those that served before it,
//! so a rollback removes only the former), then one per other container
//! of the service (`role: old`).

pub mod spec;
pub mod template;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use bollard::models::{ContainerInspectResponse, NetworkConnectRequest, NetworkingConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, ListContainersOptionsBuilder};
use clap::Parser;
use futures_util::future::join_all;
use zdd_core::cli::{CommonArgs, Outcome, Progress};
use zdd_core::docker::{self, Docker};
use zdd_core::jsonl::{self, RecordWriter};
use zdd_core::record::{ContainerRecord, ImageRecord, Role};
use zdd_core::service::Service;
use zdd_core::{labels, Error, Result};

use crate::spec::Spec;
use crate::template::Template;

/// Start replicas of a new release beside the old ones.
///
/// Reads the `image` record written by zdd-build on stdin. Writes the input
/// records, then a `container` record for each replica of the new release
/// (role `new`) and for each other container of the service (role `old`).
/// Nothing is stopped.
#[derive(Debug, Parser)]
#[command(name = "zdd-scale", version, after_help = zdd_core::exit::HELP)]
pub struct Args {
    /// The service (default: the `service` of the image record).
    #[arg(long)]
    pub service: Option<String>,

    /// Deploy this Compose project's service (labels
    /// `com.docker.compose.project` and `…service`). Without it, the
    /// service is zdd's own (label `zdd.service`); a name only Compose
    /// services have is then an input error naming their projects.
    /// `COMPOSE_PROJECT_NAME` is not read.
    #[arg(long)]
    pub project: Option<String>,

    /// The deploy run these replicas belong to: each new container is
    /// labelled `zdd.run=RUN`, so a run killed before its records were
    /// written can still be rolled back (zdd-deploy passes its run id).
    #[arg(long, value_name = "RUN", value_parser = parse_run)]
    pub run: Option<String>,

    /// How many replicas of the new release to run (default: as many as
    /// the service runs now, at least 1).
    #[arg(short = 'n', long, value_parser = clap::value_parser!(u16).range(1..))]
    pub replicas: Option<u16>,

    /// Create replicas from this JSON spec instead of cloning the newest
    /// running container (needed on a first deploy that wants networks,
    /// env or a healthcheck beyond the image's). See docs/protocol.md.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,

    /// The port the service listens on inside the container (default: the
    /// spec's `port`, else the image's lowest exposed TCP port).
    #[arg(long)]
    pub port: Option<u16>,

    /// One batch of a rollout K replicas at a time: start at most K new
    /// replicas, and list as `old` only the oldest old replicas they
    /// replace, so the later steps touch no other (they serve on). Replicas
    /// of the new release that run already count, so running it again
    /// is the next batch. Writes a `batch` record saying how many old
    /// replicas are left for later batches (`old_left`; 0: the last one).
    /// The service keeps its size: without --replicas, as many as run now
    /// of both releases.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u16).range(1..))]
    pub batch: Option<u16>,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Reads the image record and starts the missing replicas.
pub async fn run(args: Args) -> Result<Outcome> {
    let progress = Progress::new("zdd-scale", args.common.quiet);
    let records = jsonl::read_stdin()?;
    let (image_line, image) = the_image_record(&records)?;
    let service_name = args
        .service
        .clone()
        .or_else(|| image.service.clone())
        .ok_or_else(|| {
            Error::Usage(
                "no service named: pass --service, or build with `zdd-build --service NAME`".into(),
            )
        })?;
    let spec = args.spec.as_deref().map(Spec::load).transpose()?;
    let port = args.port.or(spec.as_ref().and_then(|s| s.port));

    let docker = docker::connect().await?;
    docker.inspect_image(&image.image).await.map_err(|e| {
        if docker::is_not_found(&e) {
            Error::input_at(
                image_line,
                format!("image `{}` is not on the engine", image.image),
            )
        } else {
            Error::docker(format!("inspecting image {}", image.image), e)
        }
    })?;

    let service = Service::resolve(&docker, &service_name, args.project.clone()).await?;
    let existing = service.containers(&docker, true).await?;
    let plan = Plan::new(
        &existing,
        &image.release,
        args.replicas,
        args.batch.map(usize::from),
    );

    let template = match (&spec, newest_running(&existing)) {
        (Some(spec), _) => spec.template(),
        (None, Some(newest)) => {
            let old_image = match newest.image.as_deref() {
                Some(id) => docker.inspect_image(id).await.ok(),
                None => None,
            };
            Template::clone_from(newest, old_image.as_ref())
        }
        (None, None) => Template::image_defaults(),
    };
    template.check_startable_beside(&service_name)?;

    progress.info(format_args!(
        "service `{service_name}`: {} replica(s) of release {} wanted, {} already running, starting {}; {} other container(s)",
        plan.wanted,
        image.release,
        plan.reused.len(),
        plan.to_start,
        plan.old.len()
    ));

    let names = replica_names(
        &docker,
        &template,
        &service_name,
        &image.release,
        &existing,
        plan.to_start,
    )
    .await?;
    let mut identity = HashMap::from([
        (labels::SERVICE.to_string(), service_name.clone()),
        (labels::RELEASE.to_string(), image.release.clone()),
    ]);
    if let Some(port) = port {
        identity.insert(labels::PORT.to_string(), port.to_string());
    }
    if let Some(run) = &args.run {
        identity.insert(labels::RUN.to_string(), run.clone());
    }
    let starts = names.into_iter().map(|(name, number)| {
        let mut labels = identity.clone();
        if let Some(number) = number {
            labels.insert(
                labels::compose::CONTAINER_NUMBER.to_string(),
                number.to_string(),
            );
        }
        start_replica(&docker, &template, &image.image, name, labels)
    });
    let started = join_all(starts).await;

    let mut out = RecordWriter::stdout();
    for record in &records {
        out.pass(record)?;
    }
    let mut all_started = true;
    for inspect in &plan.reused {
        let mut record = with_role(docker::container_record(inspect, &service_name), Role::New);
        record.started = Some(false);
        out.container(&record)?;
    }
    for result in started {
        match result {
            Ok(inspect) => {
                let mut record =
                    with_role(docker::container_record(&inspect, &service_name), Role::New);
                record.started = Some(true);
                progress.info(format_args!(
                    "started {} ({})",
                    record.label(),
                    record.address.as_deref().unwrap_or("no address")
                ));
                out.container(&record)?;
            }
            Err(StartFailure { container, error }) => {
                all_started = false;
                progress.error(&error);
                if let Some(inspect) = container {
                    let mut record =
                        with_role(docker::container_record(&inspect, &service_name), Role::New);
                    record.started = Some(true);
                    record.health = Some(zdd_core::record::Health::Exited);
                    record.health_reason = Some(error.to_string());
                    out.container(&record)?;
                }
            }
        }
    }
    for inspect in &plan.old {
        out.container(&with_role(
            docker::container_record(inspect, &service_name),
            Role::Old,
        ))?;
    }
    if let Some(size) = args.batch {
        let batch = BatchRecord {
            size,
            replicas: plan.wanted,
            started: plan.to_start,
            retiring: plan.old.iter().filter(|c| is_running(c)).count(),
            old_left: plan.old_left,
        };
        progress.info(format_args!(
            "batch of {size}: starting {}, replacing {} old replica(s); {} old left for later batches",
            batch.started, batch.retiring, batch.old_left
        ));
        out.write(BATCH, &batch)?;
    }
    Ok(Outcome::from_success(all_started))
}

/// A run id becomes a label value and a folder name: keep it plain.
fn parse_run(text: &str) -> std::result::Result<String, String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if text.is_empty() || text.len() > 128 || !text.chars().all(plain) {
        return Err(format!(
            "`{text}` is not a run id (1 to 128 letters, digits, `-`, `_`, `.`)"
        ));
    }
    Ok(text.to_owned())
}

/// The one `image` record of the input, with its line.
fn the_image_record(records: &[jsonl::Record]) -> Result<(usize, ImageRecord)> {
    let mut images = records.iter().filter(|r| r.is_image());
    let first = images.next().ok_or_else(|| match records.first() {
        None => Error::input("no records; expected the `image` record written by zdd-build"),
        Some(r) => Error::input_at(
            r.line,
            format!(
                "expected an `image` record (from zdd-build), found `{}` and no image record",
                r.kind()
            ),
        ),
    })?;
    if let Some(second) = images.next() {
        return Err(Error::input_at(
            second.line,
            "a second `image` record; zdd-scale rolls out one image at a time",
        ));
    }
    Ok((first.line, first.image()?))
}

/// The record type that says how far a batched rollout is.
pub const BATCH: &str = "batch";

/// `"type": "batch"`: one batch of `zdd-scale --batch K`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BatchRecord {
    /// K.
    pub size: u16,
    /// The size the service is kept at.
    pub replicas: usize,
    /// New replicas this batch starts.
    pub started: usize,
    /// Running old replicas this batch replaces (listed as `old`).
    pub retiring: usize,
    /// Running old replicas left for later batches (not listed).
    pub old_left: usize,
}

/// Which existing containers are replicas of the new release and which are
/// old, and how many replicas to start.
struct Plan<'a> {
    wanted: usize,
    reused: Vec<&'a ContainerInspectResponse>,
    /// The old containers this step hands on: all of them, or in a batch
    /// the running ones it replaces (oldest first) and every stopped one.
    old: Vec<&'a ContainerInspectResponse>,
    to_start: usize,
    /// Running old replicas a batch leaves alone.
    old_left: usize,
}

impl<'a> Plan<'a> {
    fn new(
        existing: &'a [ContainerInspectResponse],
        release: &str,
        replicas: Option<u16>,
        batch: Option<usize>,
    ) -> Self {
        let (mut reused, mut old): (Vec<_>, Vec<_>) = existing
            .iter()
            .partition(|c| is_running(c) && release_of(c) == Some(release));
        let running_old = old.iter().filter(|c| is_running(c)).count();
        let wanted = match (replicas, batch) {
            (Some(n), _) => n as usize,
            // Mid-rollout both releases serve: the service is all of them.
            (None, Some(_)) => (running_old + reused.len()).max(1),
            (None, None) => running_old.max(reused.len()).max(1),
        };
        // Replicas of this release beyond what is wanted are scaled away
        // like old ones; `existing` is oldest first, so the oldest stay.
        if reused.len() > wanted {
            old.extend(reused.split_off(wanted));
        }
        let mut to_start = wanted - reused.len();
        let mut old_left = 0;
        if let Some(size) = batch {
            to_start = to_start.min(size);
            // Replace only as many running old replicas as keep the
            // service at `wanted`: capacity never drops, and at most
            // `wanted + size` replicas run at once.
            let running_after = reused.len() + to_start + running_old;
            let replacing = running_after.saturating_sub(wanted).min(running_old);
            let mut kept = 0;
            old.retain(|c| {
                if !is_running(c) {
                    return true;
                }
                kept += 1;
                kept <= replacing
            });
            old_left = running_old - replacing;
        }
        Plan {
            wanted,
            reused,
            old,
            to_start,
            old_left,
        }
    }
}

/// The newest running container of the service (`existing` is oldest
/// first): the one to clone.
fn newest_running(existing: &[ContainerInspectResponse]) -> Option<&ContainerInspectResponse> {
    existing.iter().rev().find(|c| is_running(c))
}

fn is_running(container: &ContainerInspectResponse) -> bool {
    container
        .state
        .as_ref()
        .and_then(|s| s.running)
        .unwrap_or(false)
}

fn release_of(container: &ContainerInspectResponse) -> Option<&str> {
    container
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get(labels::RELEASE))
        .map(String::as_str)
}

fn with_role(mut record: ContainerRecord, role: Role) -> ContainerRecord {
    record.role = Some(role);
    record
}

/// Names for `count` new replicas that collide with no container, and for
/// a Compose service the container numbers Compose would give them
/// (`project_service_N`), so `docker-compose ps` lists them as its own.
async fn replica_names(
    docker: &Docker,
    template: &Template,
    service: &str,
    release: &str,
    existing: &[ContainerInspectResponse],
    count: usize,
) -> Result<Vec<(String, Option<u32>)>> {
    if let Some(compose) = &template.compose {
        let highest = existing
            .iter()
            .filter_map(|c| {
                c.config
                    .as_ref()?
                    .labels
                    .as_ref()?
                    .get(labels::compose::CONTAINER_NUMBER)
            })
            .filter_map(|n| n.parse::<u32>().ok())
            .max()
            .unwrap_or(0);
        return Ok((1..=count as u32)
            .map(|i| {
                let number = highest + i;
                (
                    format!("{}_{}_{number}", compose.project, compose.service),
                    Some(number),
                )
            })
            .collect());
    }
    let options = ListContainersOptionsBuilder::default().all(true).build();
    let taken: HashSet<String> = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| Error::docker("listing container names", e))?
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .map(|n| n.trim_start_matches('/').to_owned())
        .collect();
    let short_release = &release[..release.len().min(8)];
    Ok((1..)
        .map(|k| format!("{service}-{short_release}-{k}"))
        .filter(|name| !taken.contains(name))
        .take(count)
        .map(|name| (name, None))
        .collect())
}

/// Why a replica did not start, and the container if it was created.
struct StartFailure {
    container: Option<ContainerInspectResponse>,
    error: Error,
}

/// Creates, connects and starts one replica; returns it inspected.
async fn start_replica(
    docker: &Docker,
    template: &Template,
    image: &str,
    name: String,
    identity: HashMap<String, String>,
) -> std::result::Result<ContainerInspectResponse, StartFailure> {
    let mut body = template.body.clone();
    body.image = Some(image.to_owned());
    body.labels
        .get_or_insert_with(HashMap::new)
        .extend(identity);
    let mut networks = template.networks.iter();
    if let Some(first) = networks.next() {
        body.networking_config = Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                first.network.clone(),
                first.settings.clone(),
            )])),
        });
    }
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    let created = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| StartFailure {
            container: None,
            error: Error::docker(format!("creating replica {name}"), e),
        })?;
    let id = created.id;
    let failed = |error: Error| async {
        StartFailure {
            container: docker.inspect_container(&id, None).await.ok(),
            error,
        }
    };
    for endpoint in networks {
        let request = NetworkConnectRequest {
            container: id.clone(),
            endpoint_config: Some(endpoint.settings.clone()),
        };
        if let Err(e) = docker.connect_network(&endpoint.network, request).await {
            let error = Error::docker(
                format!("connecting {name} to network {}", endpoint.network),
                e,
            );
            return Err(failed(error).await);
        }
    }
    if let Err(e) = docker.start_container(&id, None).await {
        return Err(failed(Error::docker(format!("starting replica {name}"), e)).await);
    }
    docker
        .inspect_container(&id, None)
        .await
        .map_err(|e| StartFailure {
            container: None,
            error: Error::docker(format!("inspecting replica {name}"), e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerConfig, ContainerState};

    fn container(id: &str, release: &str, running: bool) -> ContainerInspectResponse {
        ContainerInspectResponse {
            id: Some(id.into()),
            state: Some(ContainerState {
                running: Some(running),
                ..Default::default()
            }),
            config: Some(ContainerConfig {
                labels: Some(HashMap::from([(
                    labels::RELEASE.to_string(),
                    release.to_string(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ids(list: &[&ContainerInspectResponse]) -> Vec<String> {
        list.iter().map(|c| c.id.clone().unwrap()).collect()
    }

    #[test]
    fn a_batch_starts_k_and_replaces_as_many_of_the_oldest_keeping_the_size() {
        // Four old replicas, oldest first, and a stopped one.
        let mut existing: Vec<_> = (1..=4)
            .map(|i| container(&format!("o{i}"), "v1", true))
            .collect();
        existing.push(container("stopped", "v1", false));
        let plan = Plan::new(&existing, "v2", None, Some(1));
        assert_eq!((plan.wanted, plan.to_start, plan.old_left), (4, 1, 3));
        assert_eq!(ids(&plan.old), ["o1", "stopped"]);

        // The second batch: one v2 runs, o1 is gone.
        let mut existing: Vec<_> = (2..=4)
            .map(|i| container(&format!("o{i}"), "v1", true))
            .collect();
        existing.push(container("n1", "v2", true));
        let plan = Plan::new(&existing, "v2", None, Some(1));
        assert_eq!((plan.wanted, plan.to_start, plan.old_left), (4, 1, 2));
        assert_eq!(ids(&plan.old), ["o2"]);
        assert_eq!(ids(&plan.reused), ["n1"]);

        // The last batch, with K larger than what is left.
        let existing = vec![container("o4", "v1", true), container("n1", "v2", true)];
        let plan = Plan::new(&existing, "v2", Some(2), Some(3));
        assert_eq!((plan.to_start, plan.old_left), (1, 0));
        assert_eq!(ids(&plan.old), ["o4"]);

        // Nothing left: no batch to do.
        let existing = vec![container("n1", "v2", true), container("n2", "v2", true)];
        let plan = Plan::new(&existing, "v2", None, Some(1));
        assert_eq!((plan.to_start, plan.old.len(), plan.old_left), (0, 0, 0));
    }

    #[test]
    fn without_batches_every_old_replica_is_replaced_at_once() {
        let existing: Vec<_> = (1..=3)
            .map(|i| container(&format!("o{i}"), "v1", true))
            .collect();
        let plan = Plan::new(&existing, "v2", None, None);
        assert_eq!((plan.wanted, plan.to_start, plan.old_left), (3, 3, 0));
        assert_eq!(plan.old.len(), 3);
    }
}
