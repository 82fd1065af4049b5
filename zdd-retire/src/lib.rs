//! `zdd-retire`: stop and remove exactly the replicas being replaced.
//!
//! The one destructive step, so it acts only on evidence (the rules are in
//! [`zdd_core::evidence`], shared with zdd-route): old replicas are retired
//! only when the stream holds at least one new replica and every new
//! replica is healthy, and routed where a routing step ran, and the engine
//! confirms just before that every new replica still runs (and is not
//! `unhealthy`, where it has a HEALTHCHECK). A pipeline cut short, an
//! upstream step that failed, or a new replica that crashed after its
//! check therefore never removes the old release. The new replicas are
//! asked about in one listing, and the labels of the old ones read from
//! another, so the engine's answers do not wait one after another.
//!
//! `--role new` is the rollback: it removes only the new replicas its run
//! started (`"started": true`), never one that served before the run, and
//! only once the old release serves again where a routing step ran (the
//! restore succeeded), so a rollback never removes the last capacity.
//!
//! Each container is retired by id after checking that its labels still
//! make it a replica of the record's service; a container already gone is
//! already retired (running the step again is harmless).

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::{RemoveContainerOptionsBuilder, StopContainerOptionsBuilder};
use clap::Parser;
use futures_util::future::join_all;
use zdd_core::cli::{CommonArgs, Outcome, Progress};
use zdd_core::docker::{self, Docker};
use zdd_core::evidence::{self, Routing};
use zdd_core::jsonl::{self, RecordWriter};
use zdd_core::record::{ContainerRecord, Role};
use zdd_core::service::Service;
use zdd_core::{duration, Error, Result};

/// Stop (SIGTERM, then SIGKILL after the grace period) and remove the
/// containers of one role.
///
/// By default retires the `old` containers, and only if the input holds at
/// least one `new` container, every `new` container is healthy (and
/// routed, where a routing step ran), and the engine confirms every `new`
/// container still runs (and is not `unhealthy` by its HEALTHCHECK);
/// otherwise it refuses, changes nothing and exits 1.
///
/// `--role new` is the rollback: it retires only the new containers this
/// run started (`"started": true`, set by zdd-scale) and keeps those that
/// served before it. Where a routing step ran, it refuses (exit 1,
/// nothing touched) unless every old container is in service again (after
/// `zdd-route --restore`): a rollback never removes the last serving
/// capacity.
///
/// Writes every input record back; retired ones gain `"retired": true`.
#[derive(Debug, Parser)]
#[command(name = "zdd-retire", version, after_help = zdd_core::exit::HELP)]
pub struct Args {
    /// Which containers to retire: `old` (after a good rollout) or `new`
    /// (roll back).
    #[arg(long, default_value = "old")]
    pub role: Role,

    /// How long a container may take to stop after SIGTERM before it is
    /// killed (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = duration::parse)]
    pub grace: Duration,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Reads the records, checks the evidence, retires, writes the records.
pub async fn run(args: Args) -> Result<Outcome> {
    let progress = Progress::new("zdd-retire", args.common.quiet);
    let records = jsonl::read_stdin()?;
    let containers = jsonl::require_containers(&records, "zdd-health or `zdd-ps --role`")?;
    let all: Vec<&ContainerRecord> = containers.iter().map(|(_, c)| c).collect();
    let refuse = |why: String| -> Result<Outcome> {
        progress.error(format_args!(
            "refusing to retire the {} containers: {why}; nothing was touched",
            args.role.as_str()
        ));
        RecordWriter::stdout().containers_updated(&records, &HashMap::new())?;
        Ok(Outcome::StepFailed)
    };
    let evidence = match args.role {
        Role::Old => evidence::old_release_may_go(all.iter().copied(), Routing::AsRecorded),
        Role::New => evidence::rollback_may_withdraw(all.iter().copied()),
    };
    if let Err(why) = evidence {
        return refuse(why);
    }

    let targets: Vec<&(usize, ContainerRecord)> = containers
        .iter()
        .filter(|(_, c)| c.role == Some(args.role) && c.retired != Some(true))
        .filter(|(_, c)| match args.role {
            Role::Old => true,
            Role::New if evidence::started_by_this_run(c) => true,
            Role::New => {
                progress.info(format_args!(
                    "keeping {}: it served before this run (`started` is not true); a rollback removes only what its run started",
                    c.label()
                ));
                false
            }
        })
        .collect();
    if targets.is_empty() {
        progress.info(format_args!(
            "no `{}` containers to retire",
            args.role.as_str()
        ));
        RecordWriter::stdout().containers_updated(&records, &HashMap::new())?;
        return Ok(Outcome::Success);
    }
    // A stop blocks for up to the grace period; leave room beyond it.
    let docker = docker::connect()
        .await?
        .with_timeout(args.grace + Duration::from_secs(60));
    if args.role == Role::Old {
        // The records are what the new replicas were; the engine says what
        // they are now (one may have crashed after its health check).
        if let Err(why) = evidence::new_replicas_still_serve(&docker, all.iter().copied()).await? {
            return refuse(why);
        }
    }
    // The labels of every target in one listing; a target it does not show
    // is inspected on its own (see `retire`).
    let listed: HashMap<String, HashMap<String, String>> =
        docker::containers_with_ids(&docker, targets.iter().map(|(_, c)| c.id.as_str()))
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| Some((c.id?, c.labels.unwrap_or_default())))
            .collect();
    let results = join_all(targets.iter().map(|(_, record)| {
        let labels = listed.get(&record.id).cloned();
        retire(&docker, record, labels, args.grace, progress)
    }))
    .await;

    let mut all_retired = true;
    let mut updated = HashMap::new();
    for ((index, container), result) in targets.into_iter().zip(results) {
        let mut container = container.clone();
        match result {
            Ok(()) => {
                container.retired = Some(true);
                container.state = Some("removed".into());
            }
            Err(e) => {
                all_retired = false;
                progress.error(&e);
                container.retired = Some(false);
            }
        }
        updated.insert(*index, container);
    }
    RecordWriter::stdout().containers_updated(&records, &updated)?;
    Ok(Outcome::from_success(all_retired))
}

/// Stops and removes one container, after checking it is what the record
/// says. A container already gone is success. `listed` is its labels from
/// the listing of every target, when the listing showed it; otherwise it
/// is inspected.
async fn retire(
    docker: &Docker,
    record: &ContainerRecord,
    listed: Option<HashMap<String, String>>,
    grace: Duration,
    progress: Progress,
) -> Result<()> {
    let name = record.label();
    let labels = match listed {
        Some(labels) => labels,
        None => match docker.inspect_container(&record.id, None).await {
            Ok(inspect) => inspect.config.and_then(|c| c.labels).unwrap_or_default(),
            Err(e) if docker::is_not_found(&e) => {
                progress.info(format_args!("{name} is already gone"));
                return Ok(());
            }
            Err(e) => return Err(Error::docker(format!("inspecting {name}"), e)),
        },
    };
    let service = Service::new(&record.service, record.project.clone());
    if !service.owns(&labels) {
        return Err(Error::Failed(format!(
            "container {} ({name}) is not a replica of service `{}` by its labels; not touching it",
            record.short_id(),
            record.service
        )));
    }

    progress.info(format_args!(
        "stopping {name} (grace {}s)",
        grace.as_secs_f64()
    ));
    let seconds = grace.as_secs() as i32 + i32::from(grace.subsec_nanos() > 0);
    let stop = StopContainerOptionsBuilder::default().t(seconds).build();
    match docker.stop_container(&record.id, Some(stop)).await {
        Ok(()) => {}
        Err(e) if docker::is_not_modified(&e) || docker::is_not_found(&e) => {}
        Err(e) => return Err(Error::docker(format!("stopping {name}"), e)),
    }
    let remove = RemoveContainerOptionsBuilder::default().build();
    match docker.remove_container(&record.id, Some(remove)).await {
        Ok(()) => {}
        Err(e) if docker::is_not_found(&e) => {}
        // Already being removed (e.g. started with --rm).
        Err(e) if docker::is_conflict(&e) => {}
        Err(e) => return Err(Error::docker(format!("removing {name}"), e)),
    }
    progress.info(format_args!("retired {name}"));
    Ok(())
}
