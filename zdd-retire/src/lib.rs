//! `zdd-retire`: stop and remove exactly the replicas being replaced.
//!
//! The one destructive step, so it acts only on evidence in its input
//! (see [`evidence`]): old replicas are retired only when the stream holds
//! at least one new replica and every new replica is healthy, and routed
//! where a routing step ran. A pipeline cut short, or an upstream step that
//! failed, therefore never removes the old release. `--role new` retires
//! the new replicas instead: the rollback, which needs no evidence.
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
use zdd_core::jsonl::{self, RecordWriter};
use zdd_core::record::{ContainerRecord, Health, Role};
use zdd_core::service::Service;
use zdd_core::{duration, Error, Result};

/// Stop (SIGTERM, then SIGKILL after the grace period) and remove the
/// containers of one role.
///
/// By default retires the `old` containers, and only if the input holds at
/// least one `new` container and every `new` container is healthy (and
/// routed, where a routing step ran); otherwise it refuses, changes
/// nothing and exits 1. `--role new` retires the new containers: the
/// rollback. Writes every input record back; retired ones gain
/// `"retired": true`.
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
    if args.role == Role::Old {
        if let Err(refusal) = evidence(&all) {
            progress.error(format_args!(
                "refusing to retire the old containers: {refusal}"
            ));
            let mut out = RecordWriter::stdout();
            for record in &records {
                out.pass(record)?;
            }
            return Ok(Outcome::StepFailed);
        }
    }

    let targets: Vec<&(usize, ContainerRecord)> = containers
        .iter()
        .filter(|(_, c)| c.role == Some(args.role))
        .collect();
    if targets.is_empty() {
        progress.info(format_args!(
            "no `{}` containers to retire",
            args.role.as_str()
        ));
    }
    let docker = if targets.is_empty() {
        None
    } else {
        // A stop blocks for up to the grace period; leave room beyond it.
        Some(
            docker::connect()
                .await?
                .with_timeout(args.grace + Duration::from_secs(60)),
        )
    };
    let results = join_all(targets.iter().map(|(_, record)| {
        retire(
            docker.as_ref().expect("connected when there are targets"),
            record,
            args.grace,
            progress,
        )
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

/// Why the old containers may not be retired, if they may not.
pub fn evidence(containers: &[&ContainerRecord]) -> std::result::Result<(), String> {
    let new: Vec<_> = containers
        .iter()
        .filter(|c| c.role == Some(Role::New))
        .collect();
    if new.is_empty() {
        return Err("the input holds no `new` container, so nothing would replace them".into());
    }
    for container in &new {
        if container.health != Some(Health::Healthy) {
            let health = container.health.map_or("unchecked", Health::as_str);
            let reason = container
                .health_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            return Err(format!(
                "new container {} is {health}{reason}",
                container.label()
            ));
        }
    }
    if new.iter().any(|c| c.routed.is_some()) {
        if let Some(unrouted) = new.iter().find(|c| c.routed != Some(true)) {
            return Err(format!(
                "new container {} is not routed, and a routing step ran",
                unrouted.label()
            ));
        }
    }
    Ok(())
}

/// Stops and removes one container, after checking it is what the record
/// says. A container already gone is success.
async fn retire(
    docker: &Docker,
    record: &ContainerRecord,
    grace: Duration,
    progress: Progress,
) -> Result<()> {
    let name = record.label();
    let inspect = match docker.inspect_container(&record.id, None).await {
        Ok(inspect) => inspect,
        Err(e) if docker::is_not_found(&e) => {
            progress.info(format_args!("{name} is already gone"));
            return Ok(());
        }
        Err(e) => return Err(Error::docker(format!("inspecting {name}"), e)),
    };
    let service = Service::new(&record.service, record.project.clone());
    let labels = inspect
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn container(role: Role, health: Option<Health>, routed: Option<bool>) -> ContainerRecord {
        let mut c = ContainerRecord::new("0123456789abcdef", "api");
        c.role = Some(role);
        c.health = health;
        c.routed = routed;
        c
    }

    #[test]
    fn retires_old_only_when_every_new_is_healthy() {
        let old = container(Role::Old, None, None);
        let good = container(Role::New, Some(Health::Healthy), None);
        let bad = container(Role::New, Some(Health::Unhealthy), None);
        let unchecked = container(Role::New, None, None);
        assert!(evidence(&[&old, &good]).is_ok());
        assert!(evidence(&[&old])
            .unwrap_err()
            .contains("no `new` container"));
        assert!(evidence(&[&old, &good, &bad])
            .unwrap_err()
            .contains("unhealthy"));
        assert!(evidence(&[&old, &unchecked])
            .unwrap_err()
            .contains("unchecked"));
    }

    #[test]
    fn when_routing_ran_every_new_must_be_routed() {
        let old = container(Role::Old, None, None);
        let routed = container(Role::New, Some(Health::Healthy), Some(true));
        let unrouted = container(Role::New, Some(Health::Healthy), Some(false));
        let silent = container(Role::New, Some(Health::Healthy), None);
        assert!(evidence(&[&old, &routed]).is_ok());
        assert!(evidence(&[&old, &routed, &unrouted])
            .unwrap_err()
            .contains("not routed"));
        assert!(evidence(&[&old, &routed, &silent])
            .unwrap_err()
            .contains("not routed"));
    }
}
