//! Routing through HAProxy's Runtime API: servers added with `add server`
//! and confirmed UP by HAProxy's own check, drained until their sessions
//! reach 0, deleted when zdd added them and put in maintenance otherwise
//! (a `server` line of the configuration, a `server-template` slot, anyone
//! else's server is never deleted), and `--prune`/`--sync`'s sweep of the
//! servers no live container has the address of.
//!
//! Tested against a real HAProxy, in `tests/haproxy.rs`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use zdd_core::cli::Progress;

use super::POLL;
use super::{accepts_connections, poll_each, BringUpFailure, Drained, Proxy, Service};
use crate::haproxy::{self, Runtime, RuntimeError, ServerStat, ServerState};
use crate::plan::{named_for, replica_shaped, unused_name, Action, Item};
use crate::standby;

/// How long `del server` is retried while HAProxy says the server still has
/// connections (after `shutdown sessions server`).
const REMOVE_GRACE: Duration = Duration::from_secs(2);

/// A server name (or several, when more than one server has the address)
/// for each item being waited on.
type Waiting<'a> = Vec<(&'a Item, Vec<String>)>;

/// One HAProxy backend, through the Runtime API.
pub(crate) struct HaproxyBackend {
    pub(crate) runtime: Runtime,
    pub(crate) backend: String,
    pub(crate) server_options: String,
    pub(crate) up_timeout: Duration,
    pub(crate) drain_timeout: Duration,
    /// The weight every server this step routes gets: `weight 100%` (its
    /// full, initial weight), or a canary's share.
    pub(crate) weight: String,
    pub(crate) progress: Progress,
}

impl Proxy for HaproxyBackend {
    fn canary(&mut self, new: &[&Item], percent: u8) -> Result<(), String> {
        let each = self
            .canary_weight_each(new, percent)
            .map_err(|e| format!("reading the weights for the canary: {e}"))?;
        self.weight = format!("weight {each}");
        Ok(())
    }

    fn bring_up(&mut self, items: &[&Item], restoring: bool) -> Vec<Result<(), BringUpFailure>> {
        let mut results: HashMap<usize, Result<(), BringUpFailure>> = HashMap::new();
        let mut waiting: Waiting = Vec::new();
        for item in items {
            match self.ensure_in_service(item) {
                Ok(names) => waiting.push((item, names)),
                Err(e) => {
                    let failure = BringUpFailure {
                        message: e.to_string(),
                        readied: false,
                    };
                    results.insert(item.index, Err(failure));
                }
            }
        }
        for (item, result) in self.wait_up(&waiting, restoring) {
            let result = result.map_err(|message| BringUpFailure {
                message,
                readied: true,
            });
            results.insert(item.index, result);
        }
        items
            .iter()
            .map(|i| results.remove(&i.index).expect("every item answered"))
            .collect()
    }

    fn drain(&mut self, items: &[&Item]) -> Vec<Result<Drained, String>> {
        let mut results: HashMap<usize, Result<Drained, String>> = HashMap::new();
        let mut waiting: Waiting = Vec::new();
        for item in items {
            let Some(address) = item.address else {
                results.insert(item.index, Ok(Drained { left: None }));
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
                    results.insert(item.index, Ok(Drained { left: None }));
                }
                Ok(names) => waiting.push((item, names)),
                Err(e) => {
                    results.insert(item.index, Err(e.to_string()));
                }
            }
        }
        if !waiting.is_empty() {
            for (item, result) in self.wait_drained(&waiting) {
                results.insert(item.index, result);
            }
        }
        items
            .iter()
            .map(|i| results.remove(&i.index).expect("every item answered"))
            .collect()
    }

    fn remove(&mut self, items: &[&Item]) -> Vec<Result<(), String>> {
        items
            .iter()
            .map(|item| {
                let address = item.address.expect("removed with an address");
                self.remove_servers(item, &address)
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    fn prune(&mut self, live: &HashSet<SocketAddr>, service: Option<&Service>) -> bool {
        let servers = match self.runtime.servers_state(&self.backend) {
            Ok(servers) => servers,
            Err(e) => {
                self.progress
                    .error(format_args!("cannot list the servers to prune: {e}"));
                return false;
            }
        };
        // An empty template slot (no address yet) is left as it is.
        let has_address = |s: &&ServerState| {
            s.addr
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| !ip.is_unspecified())
        };
        let mut ok = true;
        let ours = |server: &ServerState| {
            service.is_some_and(|service| {
                replica_shaped(&server.name, &service.name, service.project.as_deref())
            })
        };
        // A standby lives only during a watch (which holds the deploy's
        // lock): one found now is stale, whatever its address.
        for server in servers.iter().filter(has_address).filter(|s| {
            !live.iter().any(|a| s.has_address(a)) || (standby::is_standby(&s.name) && ours(s))
        }) {
            let ours = ours(server);
            // Someone else's server already in maintenance: nothing to do.
            if !ours && server.in_maintenance() {
                continue;
            }
            // One of zdd's, also in maintenance (a killed deploy stopped
            // between maintenance and delete): deleted.
            let removed = if ours {
                self.delete_server(&server.name)
            } else {
                self.maintain_server(&server.name)
                    .map(|()| Removal::Maintenance)
            };
            match removed {
                Ok(how) => self.progress.info(format_args!(
                    "pruned server {}/{} ({}:{}), {}: {}",
                    self.backend,
                    server.name,
                    server.addr,
                    server.port,
                    match how {
                        Removal::Deleted => "deleted",
                        Removal::Maintenance => "in maintenance (a server zdd did not add)",
                    },
                    if standby::is_standby(&server.name) {
                        "a standby no watch uses"
                    } else {
                        "no live container has its address"
                    }
                )),
                Err(e) => {
                    self.progress.error(format_args!(
                        "pruning server {}/{}: {e}",
                        self.backend, server.name
                    ));
                    ok = false;
                }
            }
        }
        ok
    }
}

impl HaproxyBackend {
    /// A canary's weight per new server: `percent` of the backend's
    /// traffic, from the weights of the servers that serve now (left as
    /// they are). Weights are whole numbers up to 256, so the share is as
    /// near as they allow; the progress line says what it is.
    fn canary_weight_each(&self, items: &[&Item], percent: u8) -> haproxy::Result<u64> {
        let new: Vec<SocketAddr> = items.iter().filter_map(|i| i.address).collect();
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
    /// A [standby](crate::standby) is not among them: it is the watch's,
    /// never made ready or drained by a routing step (only removed with
    /// its container, or pruned).
    fn servers_at(&self, address: &SocketAddr) -> haproxy::Result<(Vec<ServerState>, Vec<String>)> {
        let servers = self.runtime.servers_state(&self.backend)?;
        let names = servers
            .iter()
            .filter(|s| s.has_address(address) && !standby::is_standby(&s.name))
            .map(|s| s.name.clone())
            .collect();
        Ok((servers, names))
    }

    /// The servers at `address`, standbys too: what goes with a retired
    /// container.
    fn all_servers_at(&self, address: &SocketAddr) -> haproxy::Result<Vec<String>> {
        Ok(self
            .runtime
            .servers_state(&self.backend)?
            .iter()
            .filter(|s| s.has_address(address))
            .map(|s| s.name.clone())
            .collect())
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

    /// Polls `show stat` until `conclude` has a result for every waited
    /// item ([`poll_each`]); `conclude` sees the item, its server names,
    /// the current stats and the time since the start.
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
        let results = poll_each(
            waiting,
            |(item, _)| item.index,
            || self.runtime.stats(&self.backend).map_err(|e| e.to_string()),
            |(item, names), stats, elapsed| conclude(item, names, stats, elapsed),
        );
        waiting.iter().map(|(item, _)| *item).zip(results).collect()
    }

    /// Polls until every waited server is UP or the up timeout passes.
    fn wait_up<'a>(
        &self,
        waiting: &Waiting<'a>,
        restoring: bool,
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
            let stale = up && restoring && !answers(item.address);
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
    fn remove_servers(&self, item: &Item, address: &SocketAddr) -> haproxy::Result<()> {
        let names = self.all_servers_at(address)?;
        if names.is_empty() {
            self.progress.info(format_args!(
                "{} is not in {}",
                item.describe(),
                self.backend
            ));
            return Ok(());
        }
        for name in &names {
            let removal = if named_for(name, &item.record) {
                self.delete_server(name)?
            } else {
                self.maintain_server(name)?;
                Removal::Maintenance
            };
            let what = item.describe();
            match removal {
                Removal::Deleted => self.progress.info(format_args!(
                    "removed {what} (server {name}) from {}",
                    self.backend
                )),
                Removal::Maintenance => self.progress.info(format_args!(
                    "put {what} (server {name}) in {} in maintenance: a server zdd did not add is never deleted",
                    self.backend
                )),
            }
        }
        Ok(())
    }

    /// `set server … state maint`: no traffic, nothing deleted.
    fn maintain_server(&self, name: &str) -> haproxy::Result<()> {
        let maint = self.server_command("set server", name, "state maint");
        self.runtime.expect(&maint, &["", "No such server."])?;
        Ok(())
    }

    /// `set server … state maint`, then `del server`; a server that still
    /// has connections gets them shut down, and the delete is retried for a
    /// moment. A server already gone is success. A server of the
    /// configuration (a `server` line, a `server-template` slot) cannot be
    /// deleted, and zdd did not add it: it stays, in maintenance (a DNS
    /// template slot is filled again by HAProxy's resolvers).
    pub(crate) fn delete_server(&self, name: &str) -> haproxy::Result<Removal> {
        delete_server(
            &self.runtime,
            &self.backend,
            name,
            WhileBusy::ShutDownSessions,
        )
    }
}

/// What [`delete_server`] does while HAProxy says the server still has
/// connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhileBusy {
    /// Shut its sessions down and retry for [`REMOVE_GRACE`]: a retired
    /// replica's server, drained already (what is left outlived the drain
    /// timeout).
    ShutDownSessions,
    /// Let what it serves finish, retrying for the given time.
    LetFinish(Duration),
}

/// Puts `BACKEND/NAME` in maintenance and deletes it; a server already
/// gone is success, one of the configuration stays in maintenance.
pub(crate) fn delete_server(
    runtime: &Runtime,
    backend: &str,
    name: &str,
    while_busy: WhileBusy,
) -> haproxy::Result<Removal> {
    const GONE: &str = "No such server.";
    const BUSY: &str = "Server still has connections attached to it, cannot remove it.";
    let maint = format!("set server {backend}/{name} state maint");
    if runtime.expect(&maint, &["", GONE])? == GONE {
        return Ok(Removal::Deleted);
    }
    let del = format!("del server {backend}/{name}");
    let grace = match while_busy {
        WhileBusy::ShutDownSessions => REMOVE_GRACE,
        WhileBusy::LetFinish(grace) => grace,
    };
    let start = Instant::now();
    let mut shut_down = false;
    loop {
        let answer = runtime.command(&del)?;
        match answer.trim() {
            "Server deleted." | GONE => return Ok(Removal::Deleted),
            refusal if is_configured_server(refusal) => return Ok(Removal::Maintenance),
            BUSY if start.elapsed() < grace => {
                if while_busy == WhileBusy::ShutDownSessions && !shut_down {
                    let shutdown = format!("shutdown sessions server {backend}/{name}");
                    runtime.expect(&shutdown, &["", GONE])?;
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

/// How a server left the rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    Deleted,
    /// A server of the configuration: kept, in maintenance.
    Maintenance,
}

/// HAProxy's refusals of `del server` for a server of the configuration
/// ("Only servers added at runtime via <add server> can be deleted.", and
/// for one other settings point to, "This server cannot be removed at
/// runtime due to other configuration elements pointing to it.").
fn is_configured_server(answer: &str) -> bool {
    answer.contains("added at runtime") || answer.contains("cannot be removed at runtime")
}

/// Whether something accepts a TCP connection at `address` (an item with
/// no address has nothing to check).
fn answers(address: Option<SocketAddr>) -> bool {
    address.as_ref().is_none_or(accepts_connections)
}

/// `1.2s`.
fn secs(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}
