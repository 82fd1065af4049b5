//! `zdd-health`: wait until each new replica is really ready.
//!
//! Never a fixed sleep. Each `new` container is watched until one of:
//! Docker reports it `healthy` (its HEALTHCHECK), a probe from the host
//! passes (`--http PATH`, `--tcp`, or TCP by default for a container with
//! no healthcheck), it dies (failed at once, with its last log lines on
//! stderr), Docker reports it `unhealthy`, or the deadline passes.
//!
//! The engine's event stream drives this rather than polling `inspect`:
//! a health change or a crash is seen within milliseconds. The stream is
//! opened with `since` set just before the containers are first inspected,
//! so an event between the inspect and the subscription is replayed, not
//! lost.
//!
//! Output: every input record, in order; `new` container records gain
//! `health` and `health_reason`.

pub mod probe;

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerInspectResponse, EventMessage, HealthStatusEnum};
use clap::Parser;
use futures_util::future::join_all;
use tokio::sync::broadcast;
use tokio::time::Instant;
use zdd_core::cli::{CommonArgs, Outcome, Progress};
use zdd_core::docker::{self, Docker};
use zdd_core::jsonl::{self, RecordWriter};
use zdd_core::record::{ContainerRecord, Health, Role};
use zdd_core::{duration, Error, Result};

pub use zdd_core::docker::healthcheck_deadline;
use zdd_core::docker::healthcheck_of;

use crate::probe::Probe;

/// The deadline for a probe on a container without a healthcheck.
const PROBE_DEFAULT_DEADLINE: Duration = Duration::from_secs(60);
/// Lines of a dead container's log shown on stderr.
const LOG_TAIL_LINES: usize = 20;

/// Wait until every `new` container is ready, and record its health.
///
/// Readiness is, in order of choice: the probe asked for (`--http`,
/// `--tcp`); else the container's Docker HEALTHCHECK; else a TCP connect to
/// its address. A container that exits or restarts fails at once, with the
/// last lines of its log on stderr. Docker's own `unhealthy` verdict
/// (`retries` failed checks after the start period) is final: give a slow
/// starter a HEALTHCHECK --start-period. The default deadline follows the
/// healthcheck: start period + interval x (retries + 1) + timeout; 60 s for
/// a container without one.
#[derive(Debug, Parser)]
#[command(name = "zdd-health", version, after_help = zdd_core::exit::HELP)]
pub struct Args {
    /// Probe `http://ADDRESS/PATH` from the host; ready on a 2xx answer.
    #[arg(long, value_name = "PATH", conflicts_with = "tcp")]
    pub http: Option<String>,

    /// Probe with a TCP connect to the container's address.
    #[arg(long)]
    pub tcp: bool,

    /// Give up on a container after this long (e.g. 30s, 2m).
    #[arg(long, value_parser = duration::parse)]
    pub timeout: Option<Duration>,

    /// Time between two probe attempts.
    #[arg(long, value_parser = duration::parse, default_value = "100ms")]
    pub probe_interval: Duration,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// What the watch of one container concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub health: Health,
    pub reason: String,
}

impl Verdict {
    fn new(health: Health, reason: impl Into<String>) -> Self {
        Verdict {
            health,
            reason: reason.into(),
        }
    }
}

/// Reads the records, watches the new containers, writes the records back.
pub async fn run(args: Args) -> Result<Outcome> {
    let progress = Progress::new("zdd-health", args.common.quiet);
    let records = jsonl::read_stdin()?;
    let containers = jsonl::require_containers(&records, "zdd-scale")?;
    let new: Vec<&(usize, ContainerRecord)> = containers
        .iter()
        .filter(|(_, c)| c.role == Some(Role::New))
        .collect();
    if new.is_empty() {
        return Err(Error::input_at(
            records[containers[0].0].line,
            "no container with role `new`: nothing to wait for (is this zdd-scale's output?)",
        ));
    }
    let probe = match (&args.http, args.tcp) {
        (Some(path), _) => Some(Probe::Http {
            path: if path.starts_with('/') {
                path.clone()
            } else {
                format!("/{path}")
            },
        }),
        (None, true) => Some(Probe::Tcp),
        (None, false) => None,
    };

    let docker = docker::connect().await?;
    let events = docker::container_events(&docker, new.iter().map(|(_, c)| c.id.as_str()));
    let watches = new.iter().map(|(_, record)| {
        let watch = Watch {
            docker: &docker,
            record,
            probe: probe.clone(),
            timeout: args.timeout,
            probe_interval: args.probe_interval,
            progress,
        };
        watch.run(events.subscribe())
    });
    let verdicts: HashMap<usize, Verdict> = new
        .iter()
        .map(|(index, _)| *index)
        .zip(join_all(watches).await)
        .collect();

    let all_healthy = verdicts.values().all(|v| v.health == Health::Healthy);
    let updated: HashMap<usize, ContainerRecord> = containers
        .iter()
        .filter_map(|(index, container)| {
            let verdict = verdicts.get(index)?;
            let mut container = container.clone();
            container.health = Some(verdict.health);
            container.health_reason = Some(verdict.reason.clone());
            Some((*index, container))
        })
        .collect();
    RecordWriter::stdout().containers_updated(&records, &updated)?;
    Ok(Outcome::from_success(all_healthy))
}

/// The watch of one container.
struct Watch<'a> {
    docker: &'a Docker,
    record: &'a ContainerRecord,
    probe: Option<Probe>,
    timeout: Option<Duration>,
    probe_interval: Duration,
    progress: Progress,
}

impl Watch<'_> {
    async fn run(self, mut events: broadcast::Receiver<EventMessage>) -> Verdict {
        let started = Instant::now();
        let verdict = self
            .with_check_output(self.decide(&mut events, started).await)
            .await;
        let name = self.record.label();
        let elapsed = started.elapsed().as_secs_f64();
        match verdict.health {
            Health::Healthy => self.progress.info(format_args!(
                "{name} is healthy after {elapsed:.2}s ({})",
                verdict.reason
            )),
            _ => self.progress.error(format_args!(
                "{name} is {}: {}",
                verdict.health.as_str(),
                verdict.reason
            )),
        }
        if verdict.health == Health::Exited {
            let log = docker::log_tail(self.docker, &self.record.id, LOG_TAIL_LINES).await;
            self.progress.block(
                format_args!("last {LOG_TAIL_LINES} log lines of {name}:"),
                &log,
            );
        }
        verdict
    }

    async fn decide(
        &self,
        events: &mut broadcast::Receiver<EventMessage>,
        started: Instant,
    ) -> Verdict {
        let inspect = match self.docker.inspect_container(&self.record.id, None).await {
            Ok(inspect) => inspect,
            Err(e) if docker::is_not_found(&e) => {
                return Verdict::new(Health::Exited, "the container no longer exists")
            }
            Err(e) => {
                return Verdict::new(
                    Health::Unhealthy,
                    format!("cannot inspect it: {}", docker::describe_error(&e)),
                )
            }
        };
        if let Some(verdict) = dead(&inspect) {
            return verdict;
        }
        let healthcheck = healthcheck_of(&inspect);
        let deadline = started
            + self.timeout.unwrap_or_else(|| match &healthcheck {
                Some(check) => healthcheck_deadline(check),
                None => PROBE_DEFAULT_DEADLINE,
            });
        let probe = match (&self.probe, &healthcheck) {
            (Some(probe), _) => Some(probe.clone()),
            (None, Some(_)) => None,
            (None, None) => Some(Probe::Tcp),
        };
        let address = match (&probe, &self.record.address) {
            (Some(_), None) => {
                return Verdict::new(Health::None, "no healthcheck and no address to probe (pass --port to zdd-scale, or add a HEALTHCHECK)")
            }
            (_, address) => address.clone(),
        };
        if probe.is_none() && health_status(&inspect) == Some(HealthStatusEnum::HEALTHY) {
            return Verdict::new(Health::Healthy, "Docker healthcheck passed");
        }

        let mut last_failure = String::from("not ready yet");
        let mut next_probe = Instant::now();
        loop {
            let probe_due = probe.is_some();
            tokio::select! {
                biased;
                event = events.recv() => match event {
                    Ok(event) => {
                        if let Some(verdict) = self.on_event(&event, probe.is_none()) {
                            return verdict;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Missed events: ask the engine for the state instead.
                        if let Ok(inspect) = self.docker.inspect_container(&self.record.id, None).await {
                            if let Some(verdict) = dead(&inspect) {
                                return verdict;
                            }
                            if probe.is_none() && health_status(&inspect) == Some(HealthStatusEnum::HEALTHY) {
                                return Verdict::new(Health::Healthy, "Docker healthcheck passed");
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return Verdict::new(Health::Unhealthy, "the Docker event stream ended");
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let waited = started.elapsed().as_secs_f64();
                    return Verdict::new(Health::Unhealthy, format!("not ready after {waited:.1}s (deadline): {last_failure}"));
                }
                _ = tokio::time::sleep_until(next_probe), if probe_due => {
                    let (probe, address) = (probe.clone().expect("probe_due"), address.clone().expect("checked above"));
                    let timeout = self.probe_interval.max(Duration::from_secs(1));
                    let attempt = tokio::task::spawn_blocking(move || probe.attempt(&address, timeout)).await;
                    match attempt {
                        Ok(Ok(())) => {
                            return Verdict::new(Health::Healthy, format!("{} passed", self.probe.as_ref().map_or_else(|| Probe::Tcp.describe(), Probe::describe)));
                        }
                        Ok(Err(reason)) => last_failure = reason,
                        Err(e) => last_failure = format!("probe did not run: {e}"),
                    }
                    next_probe = Instant::now() + self.probe_interval;
                }
            }
        }
    }

    /// Adds the last Docker healthcheck's output to an `unhealthy` verdict
    /// (reported by Docker, or the deadline passed): the reason a person
    /// needs, not just the fact.
    async fn with_check_output(&self, mut verdict: Verdict) -> Verdict {
        if verdict.health != Health::Unhealthy {
            return verdict;
        }
        let Ok(inspect) = self.docker.inspect_container(&self.record.id, None).await else {
            return verdict;
        };
        let output = inspect
            .state
            .and_then(|s| s.health)
            .and_then(|h| h.log)
            .and_then(|log| log.into_iter().last())
            .and_then(|last| last.output)
            .map(|o| o.trim().replace('\n', " / "))
            .filter(|o| !o.is_empty());
        if let Some(output) = output {
            verdict.reason = format!("{}: {output}", verdict.reason);
        }
        verdict
    }

    /// What an engine event says about this container, if anything final.
    fn on_event(&self, event: &EventMessage, docker_health: bool) -> Option<Verdict> {
        let actor = event.actor.as_ref()?;
        if actor.id.as_deref() != Some(self.record.id.as_str()) {
            return None;
        }
        let action = event.action.as_deref()?;
        let attribute = |key: &str| actor.attributes.as_ref().and_then(|a| a.get(key)).cloned();
        match action {
            "die" => {
                let code = attribute("exitCode").unwrap_or_else(|| "?".into());
                Some(Verdict::new(
                    Health::Exited,
                    format!("the container exited with code {code}"),
                ))
            }
            "oom" => Some(Verdict::new(
                Health::Exited,
                "the container ran out of memory",
            )),
            "destroy" => Some(Verdict::new(Health::Exited, "the container was removed")),
            _ => match action
                .strip_prefix("health_status")
                .map(|s| s.trim_start_matches(':').trim())
            {
                Some("healthy") if docker_health => {
                    Some(Verdict::new(Health::Healthy, "Docker healthcheck passed"))
                }
                Some("unhealthy") if docker_health => Some(Verdict::new(
                    Health::Unhealthy,
                    "Docker healthcheck reported unhealthy",
                )),
                _ => None,
            },
        }
    }
}

/// A verdict if the container is not running (or is restarting).
fn dead(inspect: &ContainerInspectResponse) -> Option<Verdict> {
    let state = inspect.state.as_ref()?;
    if state.restarting == Some(true) {
        return Some(Verdict::new(
            Health::Exited,
            format!(
                "the container is restarting (last exit code {})",
                state.exit_code.unwrap_or(0)
            ),
        ));
    }
    if state.running == Some(true) {
        return None;
    }
    let status = state.status.map(|s| s.to_string()).unwrap_or_default();
    Some(Verdict::new(
        Health::Exited,
        format!(
            "the container is {status} (exit code {})",
            state.exit_code.unwrap_or(0)
        ),
    ))
}

fn health_status(inspect: &ContainerInspectResponse) -> Option<HealthStatusEnum> {
    inspect.state.as_ref()?.health.as_ref()?.status
}
