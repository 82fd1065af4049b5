//! Carrying out the [plan](mod@crate::plan) against HAProxy's Runtime API: the
//! order of the actions, the polling of `show stat` until servers are UP
//! or drained, and the deletion of servers.
//!
//! The order is what keeps the switch safe, so it lives here in one place:
//! in a deploy every new server is UP before any old one is drained (and
//! only if [`zdd_core::evidence`] agrees the old release may go); in a
//! rollback every old server is UP again before any new one is withdrawn.
//! A [`Report`] collects what happened to each record, for `run` to write
//! the records back. This is the part that talks to HAProxy, so it is
//! tested against a real one, in `tests/haproxy.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use zdd_core::cli::Progress;
use zdd_core::evidence::{self, Routing};
use zdd_core::record::ContainerRecord;

use crate::haproxy::{self, Runtime, ServerStat, ServerState};
use crate::plan::{unused_name, Action, Item};
use crate::{FIELD_DRAIN_TIMED_OUT, FIELD_ERROR};

/// How often HAProxy is asked whether a server is UP or drained.
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// How long `del server` is retried while HAProxy says the server still has
/// connections (after `shutdown sessions server`).
pub(crate) const REMOVE_GRACE: Duration = Duration::from_secs(2);

/// What happened to the records, for writing them back.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) updated: HashMap<usize, ContainerRecord>,
    pub(crate) ok: bool,
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
    pub(crate) fn success(&mut self, item: &Item, change: impl FnOnce(&mut ContainerRecord)) {
        self.set(item, |record| {
            record.extra.shift_remove(FIELD_ERROR);
            change(record);
        });
    }

    pub(crate) fn failure(
        &mut self,
        item: &Item,
        message: &str,
        change: impl FnOnce(&mut ContainerRecord),
    ) {
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

/// The routing of one run: its settings (from the command line), its
/// progress output and the [`Report`] it fills.
pub(crate) struct Router {
    pub(crate) runtime: Runtime,
    pub(crate) backend: String,
    pub(crate) server_options: String,
    pub(crate) up_timeout: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) prune: bool,
    pub(crate) canary_weight: Option<u8>,
    /// The weight every server this step routes gets: `weight 100%` (its
    /// full, initial weight), or a canary's share.
    pub(crate) weight: String,
    pub(crate) progress: Progress,
    pub(crate) report: Report,
}

impl Router {
    /// Default mode: route the new, then drain the old, then remove the
    /// retired.
    pub(crate) fn deploy(
        mut self,
        items: &[Item],
        containers: &[(usize, ContainerRecord)],
    ) -> Report {
        if let Some(percent) = self.canary_weight {
            match self.canary_weight_each(items, percent) {
                Ok(each) => self.weight = format!("weight {each}"),
                Err(e) => {
                    let message = format!("reading the weights for the canary: {e}");
                    self.progress.error(&message);
                    for item in items.iter().filter(|i| i.action == Action::Route) {
                        self.report
                            .failure(item, &message, |r| r.routed = Some(false));
                    }
                    return self.report;
                }
            }
        }
        self.bring_up(items, Action::Route);
        if self.canary_weight.is_some() {
            // The old servers serve on beside the canary: nothing drains.
            self.remove_all(items, Action::Remove);
            return self.report;
        }

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

    /// --restore: old servers ready and UP first (capacity), then, once
    /// the old release serves again, the new ones this run started drained
    /// and removed; then the retired ones removed.
    pub(crate) fn restore(
        mut self,
        items: &[Item],
        containers: &[(usize, ContainerRecord)],
    ) -> Report {
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
    /// missing) and waits until HAProxy reports them UP; the report says
    /// which are (`routed`).
    fn bring_up(&mut self, items: &[Item], action: Action) {
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
        for (item, result) in self.wait_up(&waiting) {
            match result {
                Ok(()) => {
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
    }

    /// A canary's weight per new server: `percent` of the backend's
    /// traffic, from the weights of the servers that serve now (left as
    /// they are). Weights are whole numbers up to 256, so the share is as
    /// near as they allow; the progress line says what it is.
    fn canary_weight_each(&self, items: &[Item], percent: u8) -> haproxy::Result<u64> {
        let new: Vec<SocketAddr> = items
            .iter()
            .filter(|i| i.action == Action::Route)
            .filter_map(|i| i.address)
            .collect();
        let serving: u64 = self
            .runtime
            .stats(&self.backend)?
            .iter()
            .filter(|s| s.is_up() && !new.iter().any(|a| s.addr == a.to_string()))
            .map(|s| s.weight)
            .sum();
        let wanted = serving as f64 * f64::from(percent) / f64::from(100 - percent);
        let each = ((wanted / new.len().max(1) as f64).round() as u64).clamp(1, 256);
        let total = each * new.len() as u64;
        self.progress.info(format_args!(
            "canary: {} new server(s) at weight {each}: {:.1}% of the backend's traffic (asked {percent}%; the servers serving now weigh {serving})",
            new.len(),
            100.0 * total as f64 / (total + serving).max(1) as f64
        ));
        Ok(each)
    }

    /// The servers of the backend that have `address`.
    pub(crate) fn servers_at(
        &self,
        address: &SocketAddr,
    ) -> haproxy::Result<(Vec<ServerState>, Vec<String>)> {
        let servers = self.runtime.servers_state(&self.backend)?;
        let names = servers
            .iter()
            .filter(|s| s.has_address(address))
            .map(|s| s.name.clone())
            .collect();
        Ok((servers, names))
    }

    pub(crate) fn server_command(&self, verb: &str, name: &str, rest: &str) -> String {
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
            // Before it is enabled: a canary never takes a full share.
            self.runtime.expect(
                &self.server_command("set server", &name, &self.weight),
                &[""],
            )?;
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
            // Its full (initial) weight again after a canary's share, or
            // the canary's.
            self.runtime.expect(
                &self.server_command("set server", name, &self.weight),
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
            let up = servers.iter().all(|(_, s)| s.is_up() || s.is_unchecked());
            // A drained server keeps the UP its last check gave it: after a
            // restore that verdict may predate the container's end, so the
            // address must answer too.
            let stale = up && item.action == Action::Restore && !answers(item.address);
            if up && !stale {
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
            if stale {
                return Some(Err(format!(
                    "HAProxy still reports it UP from an earlier check, but nothing accepts a connection at its address within {} ({})",
                    secs(self.up_timeout),
                    seen.join("; ")
                )));
            }
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

/// How long a restored server's address may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// Whether something accepts a TCP connection at `address` (an item with
/// no address has nothing to check).
fn answers(address: Option<SocketAddr>) -> bool {
    match address {
        None => true,
        Some(address) => std::net::TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).is_ok(),
    }
}

/// `1.2s`.
fn secs(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}
