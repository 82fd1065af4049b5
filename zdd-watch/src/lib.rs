//! `zdd-watch`: the watch window after the switch.
//!
//! A release can pass its health check and fail ten seconds later: it
//! crashes under real traffic, its HEALTHCHECK turns, or it answers 500 on
//! every real path while `/healthz` says ok. zdd-watch stands between the
//! routing step and zdd-retire: the new replicas serve, the old ones are
//! drained but still running, and for `--for D` it watches the new ones
//! through the engine (exited, unhealthy) and, with `--socket`, through
//! HAProxy's own view (the server's check DOWN, `hrsp_5xx` and `eresp`
//! counted from the start of the window). The first failure ends the
//! window at once: the records say why (`health`, `health_reason`,
//! `watch: failed`) and it exits 1, so the deploy's rollback makes the old
//! servers ready again (they are warm and checked: traffic is back on them
//! as soon as they are) and withdraws the new ones. After D with no
//! failure every new record says `watch: passed` and the old ones may go.
//! The rule is [`judge::judge`].

pub mod judge;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::HealthStatusEnum;
use bollard::Docker;
use clap::Parser;
use tokio::sync::broadcast::error::RecvError;
use zdd_core::cli::{CommonArgs, Outcome, Progress};
use zdd_core::interrupt::Interrupt;
use zdd_core::jsonl::{self, RecordWriter};
use zdd_core::record::{ContainerRecord, Role, Watch};
use zdd_core::{docker, duration, Error, Result};
use zdd_route::haproxy::{Endpoint, Runtime, ServerState};
use zdd_route::{standby, DEFAULT_SERVER_OPTIONS};

use crate::judge::{Engine, Failure, Server, Watched};

/// Watch the new replicas for a while after the switch, the old ones kept
/// warm; fail at the first sign the release is bad.
///
/// Reads the records of the routing step (or zdd-health, without a load
/// balancer). Watches every `new` container that is not retired for --for:
/// it fails when one exits or turns unhealthy (the engine), or, with
/// --socket/--backend, when HAProxy's check calls its server DOWN or the
/// new servers answer more than --max-errors failed responses (hrsp_5xx +
/// eresp in `show stat`, counted from the start of the window). Writes the
/// records back: `watch: passed` on every new one, or `watch: failed` with
/// the failed replica's `health` and `health_reason` (exit 1), at once, so
/// the rollback can put the old servers back within moments.
#[derive(Debug, Parser)]
#[command(name = "zdd-watch", version, after_help = zdd_core::exit::HELP)]
pub struct Args {
    /// How long to watch (`10s`, `1m`).
    #[arg(long = "for", value_name = "DURATION", value_parser = duration::parse)]
    pub window: Duration,

    /// HAProxy's Runtime API (a socket path or host:port), to judge by
    /// its check and its counters as well.
    #[arg(long, requires = "backend")]
    pub socket: Option<String>,

    /// The HAProxy backend the new replicas serve in.
    #[arg(long, requires = "socket")]
    pub backend: Option<String>,

    /// Failed responses (5xx or response errors) the new replicas may
    /// answer in the window, together, before the release counts as bad.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_errors: u64,

    /// How often to look.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = duration::parse)]
    pub interval: Duration,

    #[command(flatten)]
    pub common: CommonArgs,
}

pub async fn run(args: Args) -> Result<Outcome> {
    let progress = Progress::new("zdd-watch", args.common.quiet);
    let records = jsonl::read_stdin()?;
    let containers = jsonl::require_containers(&records, "zdd-route")?;
    let watched: Vec<(usize, &ContainerRecord, Watched)> = containers
        .iter()
        .filter(|(_, c)| c.role == Some(Role::New) && c.retired != Some(true))
        .map(|(index, c)| {
            let watched = Watched {
                id: c.id.clone(),
                label: c.label().to_owned(),
                address: c.address.clone().unwrap_or_default(),
            };
            (*index, c, watched)
        })
        .collect();
    if watched.is_empty() {
        return Err(Error::input(
            "no `new` container records to watch (expected the records of zdd-route)",
        ));
    }
    let list: Vec<Watched> = watched.iter().map(|(_, _, w)| w.clone()).collect();
    let haproxy = match (&args.socket, &args.backend) {
        (Some(socket), Some(backend)) => {
            let runtime = Runtime::new(Endpoint::parse(socket));
            zdd_route::preflight(&runtime, backend)?;
            Some((runtime, backend.clone()))
        }
        _ => None,
    };
    let docker = docker::connect().await?;
    let mut interrupt = Interrupt::new()?;

    // A server zdd-route added for a replica this run started has counted
    // nothing but this release's answers: all of them count, from the
    // moment it was routed, not from the moment the watch began. Any
    // other's count starts now.
    let counted_from_zero: Vec<&str> = watched
        .iter()
        .filter(|(_, record, _)| zdd_core::evidence::started_by_this_run(record))
        .map(|(_, _, w)| w.address.as_str())
        .collect();
    let first = observe_servers(haproxy.as_ref())?;
    let baseline: HashMap<String, u64> = first
        .iter()
        .flatten()
        .filter(|(address, _)| !counted_from_zero.contains(&address.as_str()))
        .map(|(address, server)| (address.clone(), server.errors))
        .collect();
    // The drained old replicas as HAProxy backups for the window: if every
    // new replica fails in one instant, HAProxy itself sends the requests
    // to the old release before the watch has even seen it.
    let standbys = match &haproxy {
        Some((runtime, backend)) => {
            let old: Vec<&ContainerRecord> = containers
                .iter()
                .map(|(_, c)| c)
                .filter(|c| drained_old(c))
                .collect();
            standby::add(runtime, backend, &old, DEFAULT_SERVER_OPTIONS, &progress)
        }
        None => Vec::new(),
    };

    let sessions_at_start: u64 = sessions(&list, first.as_ref());
    progress.info(format_args!(
        "watching {} new replica(s) for {:?}, the old ones kept warm{}",
        list.len(),
        args.window,
        if haproxy.is_some() {
            format!(", up to {} failed response(s)", args.max_errors)
        } else {
            String::new()
        }
    ));
    // An exit or a health change is looked at the moment the engine says
    // so, not at the next tick.
    let mut events =
        Some(docker::container_events(&docker, list.iter().map(|w| w.id.as_str())).subscribe());
    let started = Instant::now();
    let end = loop {
        let engine = observe_engine(&docker, &list).await?;
        let servers = observe_servers(haproxy.as_ref())?;
        if let Some(failure) =
            judge::judge(&list, &engine, servers.as_ref(), &baseline, args.max_errors)
        {
            break End::Failed(failure, Instant::now());
        }
        if started.elapsed() >= args.window {
            let served = sessions(&list, servers.as_ref()).saturating_sub(sessions_at_start);
            progress.info(format_args!(
                "the new release held for {:?}{}; the old replicas may go",
                args.window,
                if haproxy.is_some() {
                    format!(" ({served} sessions on the new servers)")
                } else {
                    String::new()
                }
            ));
            break End::Passed;
        }
        let tick = args
            .interval
            .min(args.window.saturating_sub(started.elapsed()));
        let event = async {
            match events.as_mut() {
                Some(events) => Some(events.recv().await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            signal = interrupt.next() => break End::Interrupted(signal, Instant::now()),
            // An event: a watched replica that died fails the watch at
            // once; any other, look now. A closed stream (the engine
            // dropped it): the ticks go on.
            event = event => match event {
                Some(Ok(event)) => {
                    if let Some(failure) = judge::died(&list, &event) {
                        break End::Failed(failure, Instant::now());
                    }
                }
                Some(Err(RecvError::Closed)) => events = None,
                _ => {}
            },
        }
    };

    // The instant revert, before anything else: the old servers are warm
    // and checked, so they take traffic the moment they are ready; the
    // rollback that follows withdraws the new ones.
    let mut readied = Vec::new();
    if let (Some(seen), Some((runtime, backend))) = (end.seen(), &haproxy) {
        // The backend's servers are listed once, not once per old replica:
        // every millisecond here is traffic on the failed release.
        match runtime.servers_state(backend) {
            Ok(servers) => {
                for (index, record) in containers.iter().filter(|(_, c)| drained_old(c)) {
                    match make_ready(runtime, backend, &servers, record) {
                        Ok(0) => {}
                        Ok(_) => readied.push((*index, record, seen.elapsed())),
                        Err(e) => progress.error(format_args!(
                            "could not make {} ready again (the rollback tries again): {e}",
                            record.label()
                        )),
                    }
                }
            }
            Err(e) => progress.error(format_args!(
                "could not list the servers of {backend} to make the old ones ready (the rollback tries again): {e}"
            )),
        }
    }

    let mut updated = HashMap::new();
    for (index, record, _) in &watched {
        let mut record = (*record).clone();
        match &end {
            End::Passed => record.watch = Some(Watch::Passed),
            // Not judged: the deploy is being stopped, not failed by it.
            End::Interrupted(..) => {}
            End::Failed(failure, _) => {
                record.watch = Some(Watch::Failed);
                if failure.id.is_none() || failure.id.as_deref() == Some(record.id.as_str()) {
                    record.health = Some(failure.health);
                    record.health_reason = Some(failure.reason.clone());
                }
            }
        }
        updated.insert(*index, record);
    }
    match &end {
        End::Failed(Failure { reason, .. }, _) => progress.error(format_args!(
            "{reason} (after {:.1}s of {:?}); the release fails its watch",
            started.elapsed().as_secs_f64(),
            args.window
        )),
        End::Interrupted(signal, _) => progress.error(format_args!(
            "interrupted by {signal} after {:.1}s of {:?}; the old servers are ready again",
            started.elapsed().as_secs_f64(),
            args.window
        )),
        End::Passed => {}
    }
    for (index, record, after) in readied {
        progress.info(format_args!(
            "{} is ready again, {} ms after the failure was seen",
            record.label(),
            after.as_millis()
        ));
        let mut record = record.clone();
        record.drained = Some(false);
        updated.insert(index, record);
    }
    if let Some((runtime, backend)) = &haproxy {
        standby::remove(runtime, backend, &standbys, &progress);
    }
    RecordWriter::stdout().containers_updated(&records, &updated)?;
    Ok(Outcome::from_success(matches!(end, End::Passed)))
}

/// How the window ended.
enum End {
    Passed,
    /// A watched replica failed, seen at that instant.
    Failed(Failure, Instant),
    /// SIGINT or SIGTERM (the deploy is being stopped and rolls back).
    Interrupted(&'static str, Instant),
}

impl End {
    /// When the old servers were found to be needed again.
    fn seen(&self) -> Option<&Instant> {
        match self {
            End::Passed => None,
            End::Failed(_, seen) | End::Interrupted(_, seen) => Some(seen),
        }
    }
}

/// An old replica the routing step drained and that still runs.
fn drained_old(record: &ContainerRecord) -> bool {
    record.role == Some(Role::Old) && record.drained == Some(true) && record.retired != Some(true)
}

/// Sets every server of `servers` (the backend's) that sends to the
/// record's address ready; how many there were.
fn make_ready(
    runtime: &Runtime,
    backend: &str,
    servers: &[ServerState],
    record: &ContainerRecord,
) -> Result<usize> {
    let Some(address) = record.address.as_deref().and_then(|a| a.parse().ok()) else {
        return Ok(0);
    };
    let failed = |e: zdd_route::haproxy::RuntimeError| Error::Failed(e.to_string());
    let mut made = 0;
    for server in servers
        .iter()
        .filter(|s| s.has_address(&address) && !standby::is_standby(&s.name))
    {
        let command = format!("set server {backend}/{} state ready", server.name);
        runtime.expect(&command, &[""]).map_err(failed)?;
        made += 1;
    }
    Ok(made)
}

/// The engine's view of each watched replica.
async fn observe_engine(docker: &Docker, watched: &[Watched]) -> Result<HashMap<String, Engine>> {
    let mut states = HashMap::new();
    for replica in watched {
        let state = match docker.inspect_container(&replica.id, None).await {
            Ok(inspect) => {
                let state = inspect.state.unwrap_or_default();
                if state.running == Some(true) {
                    let unhealthy = state
                        .health
                        .and_then(|h| h.status)
                        .is_some_and(|s| s == HealthStatusEnum::UNHEALTHY);
                    Engine::Running { unhealthy }
                } else {
                    Engine::Exited {
                        code: state.exit_code,
                    }
                }
            }
            Err(e) if docker::is_not_found(&e) => Engine::Exited { code: None },
            Err(e) => return Err(Error::docker(format!("inspecting {}", replica.label), e)),
        };
        states.insert(replica.id.clone(), state);
    }
    Ok(states)
}

/// HAProxy's view of the backend's servers, by name.
fn observe_servers(haproxy: Option<&(Runtime, String)>) -> Result<Option<HashMap<String, Server>>> {
    let Some((runtime, backend)) = haproxy else {
        return Ok(None);
    };
    let stats = runtime
        .stats(backend)
        .map_err(|e| Error::Failed(format!("reading HAProxy's stats of {backend}: {e}")))?;
    Ok(Some(
        stats
            .into_iter()
            .map(|s| {
                let server = Server {
                    status: s.status,
                    errors: s.hrsp_5xx + s.eresp,
                    sessions: s.stot,
                };
                (s.addr, server)
            })
            .collect(),
    ))
}

fn sessions(watched: &[Watched], servers: Option<&HashMap<String, Server>>) -> u64 {
    servers.map_or(0, |servers| {
        watched
            .iter()
            .filter_map(|w| servers.get(&w.address))
            .map(|s| s.sessions)
            .sum()
    })
}
