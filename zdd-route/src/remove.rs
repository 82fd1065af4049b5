//! Taking servers out of the backend: deleting the ones zdd-route added,
//! and putting every other one (a `server` line of the configuration, a
//! `server-template` slot, anyone else's) in maintenance instead, so zdd
//! never deletes a server it did not add; and `--prune`/`--sync`'s sweep of
//! the servers no live container has the address of.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::thread;
use std::time::Instant;

use crate::haproxy::{self, RuntimeError, ServerState};
use crate::plan::{named_for, replica_shaped, Action, Item};
use crate::router::{Router, POLL, REMOVE_GRACE};
use crate::standby;

impl Router {
    /// --prune: deletes the servers of the backend whose address is no
    /// live container of the input.
    pub(crate) fn prune_stale(&mut self, items: &[Item]) {
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
        // An empty template slot (no address yet) is left as it is.
        let has_address = |s: &&ServerState| {
            s.addr
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| !ip.is_unspecified())
        };
        let service = items
            .first()
            .map(|i| (i.record.service.clone(), i.record.project.clone()));
        let ours = |server: &ServerState| {
            service.as_ref().is_some_and(|(name, project)| {
                replica_shaped(&server.name, name, project.as_deref())
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
                    self.report.ok = false;
                }
            }
        }
    }

    /// Deletes the servers of the items with `action`.
    pub(crate) fn remove_all(&mut self, items: &[Item], action: Action) {
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
    fn delete_server(&self, name: &str) -> haproxy::Result<Removal> {
        const GONE: &str = "No such server.";
        const BUSY: &str = "Server still has connections attached to it, cannot remove it.";
        let maint = self.server_command("set server", name, "state maint");
        if self.runtime.expect(&maint, &["", GONE])? == GONE {
            return Ok(Removal::Deleted);
        }
        let del = self.server_command("del server", name, "");
        let start = Instant::now();
        let mut shut_down = false;
        loop {
            let answer = self.runtime.command(&del)?;
            match answer.trim() {
                "Server deleted." | GONE => return Ok(Removal::Deleted),
                refusal if is_configured_server(refusal) => return Ok(Removal::Maintenance),
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
