//! `zdd-route`: switch an HAProxy backend's traffic from the old replicas
//! to the new ones, through HAProxy's Runtime API, without a reload.
//!
//! This is the step that makes the switch safe to watch rather than safe
//! to hope for. A new replica is routed only when HAProxy's *own* health
//! check reports its server `UP` (zdd-health saw it ready from the host;
//! this confirms the load balancer sees it ready too), and the old replicas
//! are drained only after every new replica is routed, so serving capacity
//! never drops during the switch. A drain waits for the old server's
//! current sessions to reach zero (in-flight requests finish), bounded by
//! its own timeout, separate from the stop grace period of `zdd-retire`.
//!
//! Servers are matched to containers by address (`ip:port`), never by name:
//! a server written in the configuration file, or added by hand or by an
//! earlier run under any name, is adopted as the one for that container.
//! That is also what makes every action idempotent: running the step again
//! finds the server already there, already UP, already drained, already
//! gone, and succeeds.
//!
//! Nothing is changed before the whole input has been checked and the
//! socket and backend have answered, so a bad line, a wrong socket path or
//! a misspelt backend is exit 2 with HAProxy untouched.
//!
//! The Runtime API client and the parsers of its answers are in [`haproxy`].

pub mod haproxy;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;
use zdd_core::cli::{CommonArgs, Outcome, Progress};
use zdd_core::evidence::{self, Routing};
use zdd_core::jsonl::{self, Record, RecordWriter};
use zdd_core::record::{ContainerRecord, Health, Role};
use zdd_core::{duration, Error, Result};

use crate::haproxy::{Endpoint, Runtime, RuntimeError, ServerStat, ServerState};

/// The options a server added with `add server` gets by default. Dynamic
/// servers inherit neither `default-server` nor the defaults a server from
/// the configuration file has, so both are asked for here: the health
/// check, and connection reuse (HAProxy 2.6 gives a dynamic server
/// `pool-purge-delay 0` and no idle pool, so every request would open a
/// new connection to the app: measured at ~25-40% less throughput by
/// scripts/bench-deploy).
///
/// `downinter 100ms` is the interval while a server is down, which is where
/// a freshly added one starts: its first check comes within 100 ms of
/// `enable health` instead of within `inter` (measured: UP after 0.1 s
/// instead of 0.5 s, the route step 0.55 s → 0.13 s). `fastinter 100ms`
/// is the interval while a server is changing state, so a replica that
/// stops answering is taken out 100 ms after its first failed check rather
/// than 500 ms. An UP server is checked every `inter`.
pub const DEFAULT_SERVER_OPTIONS: &str =
    "check inter 500ms downinter 100ms fastinter 100ms fall 2 rise 1 \
     pool-purge-delay 5s pool-max-conn -1";

/// How often HAProxy is asked whether a server is UP or drained.
const POLL: Duration = Duration::from_millis(50);

/// How long `del server` is retried while HAProxy says the server still has
/// connections (after `shutdown sessions server`).
const REMOVE_GRACE: Duration = Duration::from_secs(2);

/// Extra record field: why routing this container failed.
pub const FIELD_ERROR: &str = "route_error";
/// Extra record field: the drain timeout passed with sessions still open.
pub const FIELD_DRAIN_TIMED_OUT: &str = "drain_timed_out";

/// Route the containers of the input through an HAProxy backend, with its
/// Runtime API (no reload).
///
/// Servers are matched to containers by address (the record's `ip:port`
/// against each server's address and port), so a server already in the
/// backend under any name (from the configuration file, or added by
/// someone else) is adopted.
///
/// Default mode, per container record:
///   role new, health healthy
///       Add a server for it (`add server`, `enable health`, `enable
///       server`), or make the server it has ready; then wait until
///       HAProxy's own check reports it UP: `"routed": true`. Not UP
///       within --up-timeout: `"routed": false`, exit 1; the server is
///       left in the backend for the rollback to remove.
///   role new, not healthy
///       Passed through untouched.
///   role old
///       Only once every new container of the input is healthy and UP
///       (otherwise nothing is drained, exit 1): set its server to drain,
///       wait until its sessions reach 0 or --drain-timeout passes:
///       `"drained": true` (plus `"drain_timed_out": true` after a
///       timeout). An old container without a server, or without an
///       address (not running), has nothing to drain.
///   retired true (any role)
///       Put its server in maintenance and delete it: `"routed": false`.
///
/// --restore (the rollback), per container record:
///   role old
///       Set its server ready (add it again if it is missing) and wait
///       until it is UP: `"drained": false`, `"routed": true`.
///   role new, started true (this run created it)
///       Once every old server is UP again: drain its server (sessions
///       to 0, or --drain-timeout), then delete it: `"routed": false`.
///       If an old server could not be restored, the new servers stay
///       (exit 1): a rollback never removes the last serving capacity.
///   role new, not started by this run (it served before)
///       Left as it is.
///   retired true
///       Delete its server, as above.
///
/// Nothing is changed unless the whole input is valid and the socket
/// (`level admin`) and the backend answer; otherwise exit 2.
///
/// Every action is idempotent: a server already UP, drained or gone is
/// success. A command HAProxy refuses is reported with the command and
/// HAProxy's answer, on stderr and in the record's `"route_error"`, and the
/// step exits 1. Every input record is written back, in order.
#[derive(Debug, Parser)]
#[command(
    name = "zdd-route",
    version,
    verbatim_doc_comment,
    after_help = zdd_core::exit::HELP
)]
pub struct Args {
    /// HAProxy's Runtime API socket (`stats socket … level admin`): a unix
    /// socket path, or HOST:PORT for a TCP one.
    #[arg(long, value_name = "SOCKET")]
    pub socket: String,

    /// The HAProxy backend the service's servers are in. It needs a dynamic
    /// balance algorithm (e.g. roundrobin, leastconn) for servers to be
    /// added.
    #[arg(long, value_name = "NAME", value_parser = parse_backend)]
    pub backend: String,

    /// How long a new server may take to be reported UP by HAProxy's check.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration::parse)]
    pub up_timeout: Duration,

    /// How long to wait for an old server's sessions to reach 0.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration::parse)]
    pub drain_timeout: Duration,

    /// Options for the servers this step adds (`add server BE/NAME IP:PORT
    /// OPTIONS`). Dynamic servers ignore `default-server`; keep `check` so
    /// HAProxy confirms each new server UP.
    #[arg(
        long,
        value_name = "OPTIONS",
        default_value = DEFAULT_SERVER_OPTIONS,
        value_parser = parse_server_options,
        allow_hyphen_values = true
    )]
    pub server_options: String,

    /// Roll back: make the old servers ready again, remove the new ones.
    #[arg(long)]
    pub restore: bool,

    /// The backend serves this service alone and the input lists all its
    /// containers: after routing, delete every server whose address is no
    /// live (not retired) container of the input. Converges a backend
    /// that a killed deploy left with stale servers.
    #[arg(long, conflicts_with = "restore")]
    pub prune: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

fn parse_backend(text: &str) -> std::result::Result<String, String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
    if text.is_empty() || !text.chars().all(valid) {
        return Err(format!(
            "`{text}` is not an HAProxy backend name (letters, digits, `-`, `_`, `.`, `:`)"
        ));
    }
    Ok(text.to_owned())
}

fn parse_server_options(text: &str) -> std::result::Result<String, String> {
    if text.contains(|c: char| c == ';' || c.is_control()) {
        return Err("server options may not contain `;` or control characters".into());
    }
    Ok(text.trim().to_owned())
}

/// What this step does with one container record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Add or ready its server, wait until it is UP.
    Route,
    /// Drain its server, wait until its sessions reach 0.
    Drain,
    /// Maintenance, then delete its server.
    Remove,
    /// (--restore) Ready its server again, wait until it is UP.
    Restore,
    /// (--restore) Drain, then delete its server.
    Withdraw,
}

impl Action {
    /// The action for `record`, if any.
    pub fn for_record(record: &ContainerRecord, restore: bool) -> Option<Action> {
        if record.retired == Some(true) {
            return Some(Action::Remove);
        }
        match (record.role, restore) {
            (Some(Role::New), false) if record.health == Some(Health::Healthy) => {
                Some(Action::Route)
            }
            (Some(Role::Old), false) => Some(Action::Drain),
            (Some(Role::Old), true) => Some(Action::Restore),
            // A rollback withdraws only what its own run started.
            (Some(Role::New), true) if evidence::started_by_this_run(record) => {
                Some(Action::Withdraw)
            }
            _ => None,
        }
    }

    /// Whether the action needs the container's address to do its job.
    /// An old container without one is not running: no server can send to
    /// it, so there is nothing to drain or restore.
    fn needs_address(self) -> bool {
        matches!(self, Action::Route)
    }

    /// Whether the action is pointless without an address.
    fn skipped_without_address(self) -> bool {
        matches!(self, Action::Drain | Action::Restore)
    }
}

/// One container record this step acts on.
#[derive(Debug, Clone)]
pub struct Item {
    /// Index of the record in the input.
    pub index: usize,
    pub record: ContainerRecord,
    pub action: Action,
    pub address: Option<SocketAddr>,
}

impl Item {
    /// `api-1 (172.17.0.4:8080)`, for progress.
    fn describe(&self) -> String {
        match self.address {
            Some(address) => format!("{} ({address})", self.record.label()),
            None => self.record.label().to_owned(),
        }
    }
}

/// Checks the container records and decides what to do with each.
///
/// A record this step must act on needs a valid `address`; two live
/// containers with the same address are an input error too (one server
/// would stand for both).
pub fn plan(
    records: &[Record],
    containers: &[(usize, ContainerRecord)],
    restore: bool,
) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut live: HashMap<SocketAddr, usize> = HashMap::new();
    for (index, record) in containers {
        let line = records[*index].line;
        let Some(action) = Action::for_record(record, restore) else {
            continue;
        };
        let address = match &record.address {
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
                Error::input_at(
                    line,
                    format!("`address` is `{text}`, not IP:PORT (e.g. 172.17.0.4:8080)"),
                )
            })?),
            None if action.needs_address() => {
                return Err(Error::input_at(
                    line,
                    format!(
                    "container {} has no `address`; zdd-route matches HAProxy servers by address",
                    record.label()
                ),
                ))
            }
            None if action.skipped_without_address() => continue,
            None => None,
        };
        if let (Some(address), true) = (address, action != Action::Remove) {
            if let Some(other) = live.insert(address, line) {
                return Err(Error::input_at(
                    line,
                    format!(
                        "address {address} is also the address of the container on line {other}"
                    ),
                ));
            }
        }
        items.push(Item {
            index: *index,
            record: record.clone(),
            action,
            address,
        });
    }
    Ok(items)
}

/// A name for a container's server: its name, else its short id, with
/// every character outside `[A-Za-z0-9_.-]` replaced by `_`.
pub fn server_name(record: &ContainerRecord) -> String {
    let base = if record.name.is_empty() {
        record.short_id()
    } else {
        &record.name
    };
    let name = sanitize(base);
    if name.is_empty() {
        "server".into()
    } else {
        name
    }
}

/// `[A-Za-z0-9_.-]` kept, anything else `_`.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A server name for `record` that no server of `servers` has.
fn unused_name(servers: &[ServerState], record: &ContainerRecord) -> String {
    let taken = |name: &str| servers.iter().any(|s| s.name == name);
    let base = server_name(record);
    if !taken(&base) {
        return base;
    }
    let with_id = format!("{base}-{}", sanitize(record.short_id()));
    if !taken(&with_id) {
        return with_id;
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|name| !taken(name))
        .expect("some suffix is free")
}

/// Reads the records, checks the socket and backend, routes, writes the
/// records back.
pub async fn run(args: Args) -> Result<Outcome> {
    let progress = Progress::new("zdd-route", args.common.quiet);
    let records = jsonl::read_stdin()?;
    let containers = jsonl::require_containers(&records, "zdd-health")?;
    let items = plan(&records, &containers, args.restore)?;

    let runtime = Runtime::new(Endpoint::parse(&args.socket));
    preflight(&runtime, &args.backend)?;

    let router = Router {
        runtime,
        backend: args.backend.clone(),
        server_options: args.server_options.clone(),
        up_timeout: args.up_timeout,
        drain_timeout: args.drain_timeout,
        prune: args.prune,
        progress,
        report: Report {
            updated: HashMap::new(),
            ok: true,
        },
    };
    let report = if args.restore {
        router.restore(&items, &containers)
    } else {
        router.deploy(&items, &containers)
    };
    RecordWriter::stdout().containers_updated(&records, &report.updated)?;
    Ok(Outcome::from_success(report.ok))
}

/// Checks, before anything changes, that the socket answers with admin
/// rights and that the backend exists. Every failure is a usage error.
pub fn preflight(runtime: &Runtime, backend: &str) -> Result<()> {
    let endpoint = runtime.endpoint().clone();
    let usage = |e: RuntimeError| match e {
        RuntimeError::Connect { .. } => Error::Usage(e.to_string()),
        RuntimeError::NoSuchBackend { backend } => Error::Usage(format!(
            "HAProxy (Runtime API at {endpoint}) has no backend `{backend}`"
        )),
        other => Error::Usage(format!(
            "checking the HAProxy Runtime API at {endpoint}: {other}"
        )),
    };
    match runtime.cli_level().map_err(usage)? {
        Some(level) if level != "admin" => {
            return Err(Error::Usage(format!(
                "the HAProxy Runtime API at {endpoint} is at level `{level}`; zdd-route needs `level admin` on its `stats socket` line"
            )))
        }
        _ => {}
    }
    runtime.servers_state(backend).map_err(usage)?;
    Ok(())
}

/// What happened to the records, for writing them back.
#[derive(Debug)]
struct Report {
    updated: HashMap<usize, ContainerRecord>,
    ok: bool,
}

impl Report {
    /// The container records as they stand now: each input record, or its
    /// update where this step changed it.
    fn current<'a>(
        &'a self,
        containers: &'a [(usize, ContainerRecord)],
    ) -> Vec<&'a ContainerRecord> {
        containers
            .iter()
            .map(|(index, record)| self.updated.get(index).unwrap_or(record))
            .collect()
    }

    fn set(&mut self, item: &Item, change: impl FnOnce(&mut ContainerRecord)) {
        let record = self
            .updated
            .entry(item.index)
            .or_insert_with(|| item.record.clone());
        change(record);
    }

    /// The record's action succeeded: drop an error a previous run left.
    fn success(&mut self, item: &Item, change: impl FnOnce(&mut ContainerRecord)) {
        self.set(item, |record| {
            record.extra.shift_remove(FIELD_ERROR);
            change(record);
        });
    }

    fn failure(&mut self, item: &Item, message: &str, change: impl FnOnce(&mut ContainerRecord)) {
        self.ok = false;
        self.set(item, |record| {
            record
                .extra
                .insert(FIELD_ERROR.into(), Value::String(message.to_owned()));
            change(record);
        });
    }
}

/// A server name (or several, when more than one server has the address)
/// for each item being waited on.
type Waiting<'a> = Vec<(&'a Item, Vec<String>)>;

/// How one drain ended.
#[derive(Debug, Clone, Copy)]
struct Drained {
    /// Sessions still open when the timeout passed.
    left: Option<u64>,
}

struct Router {
    runtime: Runtime,
    backend: String,
    server_options: String,
    up_timeout: Duration,
    drain_timeout: Duration,
    prune: bool,
    progress: Progress,
    report: Report,
}

impl Router {
    /// Default mode: route the new, then drain the old, then remove the
    /// retired.
    fn deploy(mut self, items: &[Item], containers: &[(usize, ContainerRecord)]) -> Report {
        self.bring_up(items, Action::Route);

        let drains: Vec<&Item> = items.iter().filter(|i| i.action == Action::Drain).collect();
        if !drains.is_empty() {
            let now = self.report.current(containers);
            match evidence::old_release_may_go(now.iter().copied(), Routing::Required) {
                Ok(()) => self.drain(&drains, |report, item, drained| {
                    report.success(item, |r| mark_drained(r, drained))
                }),
                Err(why) => {
                    let message = format!("not draining the old servers: {why}");
                    self.progress.error(&message);
                    for item in drains {
                        self.report
                            .failure(item, &message, |r| r.drained = Some(false));
                    }
                }
            }
        }
        self.remove_all(items, Action::Remove);
        if self.prune {
            self.prune_stale(items);
        }
        self.report
    }

    /// --prune: deletes the servers of the backend whose address is no
    /// live container of the input.
    fn prune_stale(&mut self, items: &[Item]) {
        let live: HashSet<SocketAddr> = items
            .iter()
            .filter(|i| i.action != Action::Remove)
            .filter_map(|i| i.address)
            .collect();
        let servers = match self.runtime.servers_state(&self.backend) {
            Ok(servers) => servers,
            Err(e) => {
                self.progress
                    .error(format_args!("cannot list the servers to prune: {e}"));
                self.report.ok = false;
                return;
            }
        };
        for server in servers
            .iter()
            .filter(|s| !live.iter().any(|a| s.has_address(a)))
        {
            match self.delete_server(&server.name) {
                Ok(()) => self.progress.info(format_args!(
                    "pruned server {}/{} ({}:{}): no live container has its address",
                    self.backend, server.name, server.addr, server.port
                )),
                Err(e) => {
                    self.progress.error(format_args!(
                        "pruning server {}/{}: {e}",
                        self.backend, server.name
                    ));
                    self.report.ok = false;
                }
            }
        }
    }

    /// --restore: old servers ready and UP first (capacity), then, once
    /// the old release serves again, the new ones this run started drained
    /// and removed; then the retired ones removed.
    fn restore(mut self, items: &[Item], containers: &[(usize, ContainerRecord)]) -> Report {
        self.bring_up(items, Action::Restore);

        let withdraws: Vec<&Item> = items
            .iter()
            .filter(|i| i.action == Action::Withdraw)
            .collect();
        let now = self.report.current(containers);
        match evidence::rollback_may_withdraw(now.iter().copied()) {
            Ok(()) => {
                self.drain(&withdraws, |_, _, _| {});
                self.remove_all(items, Action::Withdraw);
            }
            Err(why) if !withdraws.is_empty() => {
                let message = format!("not withdrawing the new servers: {why}");
                self.progress.error(&message);
                for item in withdraws {
                    self.report.failure(item, &message, |_| {});
                }
            }
            Err(_) => {}
        }
        self.remove_all(items, Action::Remove);
        self.report
    }

    /// Makes the servers of the items with `action` ready (adding those
    /// missing) and waits until HAProxy reports them UP. Returns the
    /// indexes of the items that are UP.
    fn bring_up(&mut self, items: &[Item], action: Action) -> HashSet<usize> {
        let mut waiting: Waiting = Vec::new();
        for item in items.iter().filter(|i| i.action == action) {
            match self.ensure_in_service(item) {
                Ok(names) => waiting.push((item, names)),
                Err(e) => {
                    let message = e.to_string();
                    self.progress
                        .error(format_args!("{}: {message}", item.describe()));
                    self.report
                        .failure(item, &message, |r| r.routed = Some(false));
                }
            }
        }
        let mut up = HashSet::new();
        for (item, result) in self.wait_up(&waiting) {
            match result {
                Ok(()) => {
                    up.insert(item.index);
                    self.report.success(item, |r| {
                        r.routed = Some(true);
                        if action == Action::Restore {
                            r.drained = Some(false);
                            r.extra.shift_remove(FIELD_DRAIN_TIMED_OUT);
                        }
                    });
                }
                Err(message) => {
                    self.progress
                        .error(format_args!("{}: {message}", item.describe()));
                    self.report.failure(item, &message, |r| {
                        r.routed = Some(false);
                        if action == Action::Restore {
                            r.drained = Some(false);
                        }
                    });
                }
            }
        }
        up
    }

    /// The servers of the backend that have `address`.
    fn servers_at(&self, address: &SocketAddr) -> haproxy::Result<(Vec<ServerState>, Vec<String>)> {
        let servers = self.runtime.servers_state(&self.backend)?;
        let names = servers
            .iter()
            .filter(|s| s.has_address(address))
            .map(|s| s.name.clone())
            .collect();
        Ok((servers, names))
    }

    fn server_command(&self, verb: &str, name: &str, rest: &str) -> String {
        let command = format!("{verb} {}/{name} {rest}", self.backend);
        command.trim_end().to_owned()
    }

    /// Adds a server for the item, or readies the one(s) it already has.
    fn ensure_in_service(&self, item: &Item) -> haproxy::Result<Vec<String>> {
        let address = item.address.expect("planned with an address");
        let (servers, names) = self.servers_at(&address)?;
        if names.is_empty() {
            let name = unused_name(&servers, &item.record);
            let add = self.server_command(
                "add server",
                &name,
                &format!("{address} {}", self.server_options),
            );
            self.runtime.expect(&add, &["New server registered."])?;
            self.enable_health(&name)?;
            self.runtime
                .expect(&self.server_command("enable server", &name, ""), &[""])?;
            let alias = if name == item.record.label() {
                String::new()
            } else {
                format!(" as server {name}")
            };
            self.progress.info(format_args!(
                "added {} to {}{alias}",
                item.describe(),
                self.backend
            ));
            return Ok(vec![name]);
        }
        for name in &names {
            self.runtime.expect(
                &self.server_command("set server", name, "state ready"),
                &[""],
            )?;
            self.enable_health(name)?;
        }
        self.progress.info(format_args!(
            "{} is in {} as server {}; made it ready",
            item.describe(),
            self.backend,
            names.join(", ")
        ));
        Ok(names)
    }

    fn enable_health(&self, name: &str) -> haproxy::Result<()> {
        self.runtime.expect(
            &self.server_command("enable health", name, ""),
            &[
                "",
                "Health check was not configured on this server, cannot enable.",
            ],
        )?;
        Ok(())
    }

    /// Polls `show stat` every [`POLL`] until `conclude` has a result for
    /// every waited item. `conclude` sees the item, its server names, the
    /// current stats and the time since the start; a stats request that
    /// fails concludes every open item with its error.
    fn poll_stats<'a, T>(
        &self,
        waiting: &Waiting<'a>,
        mut conclude: impl FnMut(
            &Item,
            &[String],
            &[ServerStat],
            Duration,
        ) -> Option<std::result::Result<T, String>>,
    ) -> Vec<(&'a Item, std::result::Result<T, String>)> {
        let start = Instant::now();
        let mut results: HashMap<usize, std::result::Result<T, String>> = HashMap::new();
        while results.len() < waiting.len() {
            match self.runtime.stats(&self.backend) {
                Ok(stats) => {
                    let elapsed = start.elapsed();
                    for (item, names) in waiting {
                        if results.contains_key(&item.index) {
                            continue;
                        }
                        if let Some(result) = conclude(item, names, &stats, elapsed) {
                            results.insert(item.index, result);
                        }
                    }
                }
                Err(e) => {
                    for (item, _) in waiting {
                        results
                            .entry(item.index)
                            .or_insert_with(|| Err(e.to_string()));
                    }
                }
            }
            if results.len() < waiting.len() {
                thread::sleep(POLL);
            }
        }
        waiting
            .iter()
            .map(|(item, _)| {
                (
                    *item,
                    results.remove(&item.index).expect("every item concluded"),
                )
            })
            .collect()
    }

    /// Polls until every waited server is UP or the up timeout passes.
    fn wait_up<'a>(
        &self,
        waiting: &Waiting<'a>,
    ) -> Vec<(&'a Item, std::result::Result<(), String>)> {
        self.poll_stats(waiting, |item, names, stats, elapsed| {
            let mut servers = Vec::new();
            for name in names {
                match stats.iter().find(|s| &s.name == name) {
                    None => {
                        return Some(Err(format!(
                            "server {}/{name} disappeared from HAProxy",
                            self.backend
                        )))
                    }
                    Some(stat) => servers.push((name, stat)),
                }
            }
            if servers.iter().all(|(_, s)| s.is_up() || s.is_unchecked()) {
                let elapsed = secs(elapsed);
                if servers.iter().any(|(_, s)| s.is_unchecked()) {
                    self.progress.warn(format_args!(
                        "{} takes traffic after {elapsed} but HAProxy does not health-check it (no `check` in its server options)",
                        item.describe()
                    ));
                } else {
                    self.progress.info(format_args!(
                        "{} is UP after {elapsed}",
                        item.record.label()
                    ));
                }
                return Some(Ok(()));
            }
            if elapsed < self.up_timeout {
                return None;
            }
            let seen: Vec<String> = servers
                .iter()
                .map(|(name, s)| {
                    format!(
                        "{}/{name} is `{}`, last check `{}`",
                        self.backend, s.status, s.check_status
                    )
                })
                .collect();
            Some(Err(format!(
                "HAProxy did not report it UP within {} ({}); left in the backend for the rollback",
                secs(self.up_timeout),
                seen.join("; ")
            )))
        })
    }

    /// Sets the items' servers to drain and waits until their sessions
    /// reach 0 or the drain timeout passes; `done` records each success.
    fn drain(&mut self, items: &[&Item], done: impl Fn(&mut Report, &Item, Drained)) {
        let mut waiting: Waiting = Vec::new();
        for item in items {
            let Some(address) = item.address else {
                continue;
            };
            let started = self.servers_at(&address).and_then(|(_, names)| {
                for name in &names {
                    self.runtime.expect(
                        &self.server_command("set server", name, "state drain"),
                        &[""],
                    )?;
                }
                Ok(names)
            });
            match started {
                Ok(names) if names.is_empty() => {
                    if item.action == Action::Drain {
                        self.progress.info(format_args!(
                            "{} is not in {}; nothing routes to it",
                            item.describe(),
                            self.backend
                        ));
                    }
                    done(&mut self.report, item, Drained { left: None });
                }
                Ok(names) => waiting.push((item, names)),
                Err(e) => {
                    let message = e.to_string();
                    self.progress
                        .error(format_args!("{}: {message}", item.describe()));
                    self.report.failure(item, &message, |r| {
                        if item.action == Action::Drain {
                            r.drained = Some(false)
                        }
                    });
                }
            }
        }
        if waiting.is_empty() {
            return;
        }
        for (item, result) in self.wait_drained(&waiting) {
            match result {
                Ok(drained) => done(&mut self.report, item, drained),
                Err(message) => {
                    self.progress
                        .error(format_args!("{}: {message}", item.describe()));
                    self.report.failure(item, &message, |r| {
                        if item.action == Action::Drain {
                            r.drained = Some(false)
                        }
                    });
                }
            }
        }
    }

    /// Polls until the sessions (and queue) of every waited server are 0,
    /// or the drain timeout passes.
    fn wait_drained<'a>(
        &self,
        waiting: &Waiting<'a>,
    ) -> Vec<(&'a Item, std::result::Result<Drained, String>)> {
        self.poll_stats(waiting, |item, names, stats, elapsed| {
            // A server gone meanwhile serves nothing.
            let sessions: u64 = names
                .iter()
                .filter_map(|n| stats.iter().find(|s| &s.name == n))
                .map(|s| s.scur + s.qcur)
                .sum();
            if sessions == 0 {
                self.progress.info(format_args!(
                    "draining {}: 0 sessions after {}",
                    item.describe(),
                    secs(elapsed)
                ));
                Some(Ok(Drained { left: None }))
            } else if elapsed >= self.drain_timeout {
                self.progress.warn(format_args!(
                    "draining {}: {sessions} session(s) still open after {} (drain timeout); going on",
                    item.describe(),
                    secs(elapsed)
                ));
                Some(Ok(Drained {
                    left: Some(sessions),
                }))
            } else {
                None
            }
        })
    }

    /// Deletes the servers of the items with `action`.
    fn remove_all(&mut self, items: &[Item], action: Action) {
        // A retired container's address may already belong to a live one
        // of the input (addresses are reused); its server is not removed.
        let live: HashSet<SocketAddr> = items
            .iter()
            .filter(|i| i.action != Action::Remove)
            .filter_map(|i| i.address)
            .collect();
        for item in items.iter().filter(|i| i.action == action) {
            let result = match item.address {
                None => {
                    self.progress.info(format_args!(
                        "{} has no address; no server to remove",
                        item.describe()
                    ));
                    Ok(())
                }
                Some(address) if action == Action::Remove && live.contains(&address) => {
                    self.progress.warn(format_args!(
                        "{} is retired, but a live container of the input has its address; keeping the server",
                        item.describe()
                    ));
                    Ok(())
                }
                Some(address) => self.remove(item, &address),
            };
            match result {
                Ok(()) => self.report.success(item, |r| r.routed = Some(false)),
                Err(e) => {
                    let message = e.to_string();
                    self.progress
                        .error(format_args!("{}: {message}", item.describe()));
                    self.report.failure(item, &message, |_| {});
                }
            }
        }
    }

    fn remove(&self, item: &Item, address: &SocketAddr) -> haproxy::Result<()> {
        let (_, names) = self.servers_at(address)?;
        if names.is_empty() {
            self.progress.info(format_args!(
                "{} is not in {}",
                item.describe(),
                self.backend
            ));
            return Ok(());
        }
        for name in &names {
            self.delete_server(name)?;
            self.progress.info(format_args!(
                "removed {} (server {name}) from {}",
                item.describe(),
                self.backend
            ));
        }
        Ok(())
    }

    /// `set server … state maint`, then `del server`; a server that still
    /// has connections gets them shut down, and the delete is retried for a
    /// moment. A server already gone is success.
    fn delete_server(&self, name: &str) -> haproxy::Result<()> {
        const GONE: &str = "No such server.";
        const BUSY: &str = "Server still has connections attached to it, cannot remove it.";
        let maint = self.server_command("set server", name, "state maint");
        if self.runtime.expect(&maint, &["", GONE])? == GONE {
            return Ok(());
        }
        let del = self.server_command("del server", name, "");
        let start = Instant::now();
        let mut shut_down = false;
        loop {
            let answer = self.runtime.command(&del)?;
            match answer.trim() {
                "Server deleted." | GONE => return Ok(()),
                BUSY if start.elapsed() < REMOVE_GRACE => {
                    if !shut_down {
                        let shutdown = self.server_command("shutdown sessions server", name, "");
                        self.runtime.expect(&shutdown, &["", GONE])?;
                        shut_down = true;
                    }
                    thread::sleep(POLL);
                }
                _ => {
                    return Err(RuntimeError::Refused {
                        command: del,
                        answer,
                    })
                }
            }
        }
    }
}

fn mark_drained(record: &mut ContainerRecord, drained: Drained) {
    record.drained = Some(true);
    match drained.left {
        Some(_) => {
            record
                .extra
                .insert(FIELD_DRAIN_TIMED_OUT.into(), Value::Bool(true));
        }
        None => {
            record.extra.shift_remove(FIELD_DRAIN_TIMED_OUT);
        }
    }
}

/// `1.2s`.
fn secs(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, role: Option<Role>, health: Option<Health>) -> ContainerRecord {
        let mut c = ContainerRecord::new("0123456789abcdef0123", "api");
        c.name = name.into();
        c.role = role;
        c.health = health;
        c.address = Some("172.17.0.4:8080".into());
        c
    }

    fn state(name: &str) -> ServerState {
        ServerState {
            backend: "web".into(),
            name: name.into(),
            addr: "10.0.0.1".into(),
            port: 80,
            op_state: 2,
            admin_state: 0,
        }
    }

    #[test]
    fn names_are_sanitised() {
        assert_eq!(sanitize("api-98d6f5c2-1"), "api-98d6f5c2-1");
        assert_eq!(sanitize("shop_api.1"), "shop_api.1");
        assert_eq!(sanitize("a/b c:d;é"), "a_b_c_d__");
        let mut c = container("", None, None);
        assert_eq!(server_name(&c), "0123456789ab");
        c.name = "web/1".into();
        assert_eq!(server_name(&c), "web_1");
    }

    #[test]
    fn a_taken_name_gets_the_short_id_then_a_number() {
        let c = container("api-1", None, None);
        assert_eq!(unused_name(&[state("api-0")], &c), "api-1");
        assert_eq!(unused_name(&[state("api-1")], &c), "api-1-0123456789ab");
        assert_eq!(
            unused_name(&[state("api-1"), state("api-1-0123456789ab")], &c),
            "api-1-2"
        );
    }

    #[test]
    fn actions_follow_role_health_and_retired() {
        let healthy = container("a", Some(Role::New), Some(Health::Healthy));
        let unhealthy = container("b", Some(Role::New), Some(Health::Unhealthy));
        let old = container("c", Some(Role::Old), None);
        let mut retired = container("d", Some(Role::Old), None);
        retired.retired = Some(true);
        let plain = container("e", None, None);
        assert_eq!(Action::for_record(&healthy, false), Some(Action::Route));
        assert_eq!(Action::for_record(&unhealthy, false), None);
        assert_eq!(Action::for_record(&old, false), Some(Action::Drain));
        assert_eq!(Action::for_record(&retired, false), Some(Action::Remove));
        assert_eq!(Action::for_record(&plain, false), None);
        // A rollback withdraws only what its run started.
        assert_eq!(Action::for_record(&healthy, true), None);
        let mut started = healthy.clone();
        started.started = Some(true);
        assert_eq!(Action::for_record(&started, true), Some(Action::Withdraw));
        let mut started_unhealthy = unhealthy.clone();
        started_unhealthy.started = Some(true);
        assert_eq!(
            Action::for_record(&started_unhealthy, true),
            Some(Action::Withdraw)
        );
        assert_eq!(Action::for_record(&old, true), Some(Action::Restore));
        assert_eq!(Action::for_record(&retired, true), Some(Action::Remove));
    }

    fn records(lines: &str) -> Vec<Record> {
        jsonl::read_records(lines.as_bytes()).unwrap()
    }

    #[test]
    fn the_plan_needs_addresses_where_it_acts() {
        let input = records(concat!(
            r#"{"type":"image","image":"x","image_id":"y","release":"z"}"#,
            "\n",
            r#"{"type":"container","id":"a","service":"api","role":"new","health":"healthy"}"#,
            "\n"
        ));
        let containers = jsonl::containers(&input).unwrap();
        let err = plan(&input, &containers, false).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(err.to_string().contains("no `address`"), "{err}");
        // Unhealthy: not acted on, so no address needed.
        let input = records(concat!(
            r#"{"type":"container","id":"a","service":"api","role":"new","health":"unhealthy"}"#,
            "\n"
        ));
        let containers = jsonl::containers(&input).unwrap();
        assert!(plan(&input, &containers, false).unwrap().is_empty());
    }

    #[test]
    fn the_plan_rejects_bad_and_shared_addresses() {
        let input = records(concat!(
            r#"{"type":"container","id":"a","service":"api","role":"old","address":"172.17.0.4"}"#,
            "\n"
        ));
        let containers = jsonl::containers(&input).unwrap();
        let err = plan(&input, &containers, false).unwrap_err();
        assert!(err.to_string().contains("not IP:PORT"), "{err}");

        let input = records(concat!(
            r#"{"type":"container","id":"a","service":"api","role":"old","address":"10.0.0.1:80"}"#,
            "\n",
            r#"{"type":"container","id":"b","service":"api","role":"new","health":"healthy","address":"10.0.0.1:80"}"#,
            "\n",
            r#"{"type":"container","id":"c","service":"api","role":"old","retired":true,"address":"10.0.0.1:80"}"#,
            "\n"
        ));
        let containers = jsonl::containers(&input).unwrap();
        let err = plan(&input, &containers, false).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn backend_names_and_server_options_are_checked() {
        assert!(parse_backend("web_api.v2").is_ok());
        assert!(parse_backend("web api").is_err());
        assert!(parse_backend("web/x").is_err());
        assert!(parse_backend("").is_err());
        assert_eq!(
            parse_server_options(" check inter 1s ").unwrap(),
            "check inter 1s"
        );
        assert!(parse_server_options("check; shutdown frontend fe").is_err());
        assert!(parse_server_options("check\ninter 1s").is_err());
    }

    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
