//! The order of a switch, the same whatever the proxy: in a deploy every
//! new server is up before any old one is drained (and only if
//! [`zdd_core::evidence`] agrees the old release may go); in a rollback
//! every old server is up again before any new one is withdrawn; retired
//! containers' servers are removed last, and `--prune` sweeps what no live
//! container has. The [proxy](crate::proxy) carries out each action; a
//! [`Report`] collects what happened to each record, for `run` to write the
//! records back.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use serde_json::Value;
use zdd_core::cli::Progress;
use zdd_core::evidence::{self, Routing};
use zdd_core::record::ContainerRecord;

use crate::plan::{Action, Item};
use crate::proxy::{Drained, Proxy, Service};
use crate::{FIELD_DRAIN_TIMED_OUT, FIELD_ERROR};

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

/// The routing of one run: the proxy, the settings of the order (from
/// the command line), its progress output and the [`Report`] it fills.
pub(crate) struct Router<P> {
    pub(crate) proxy: P,
    pub(crate) prune: bool,
    pub(crate) canary_weight: Option<u8>,
    pub(crate) progress: Progress,
    pub(crate) report: Report,
}

impl<P: Proxy> Router<P> {
    /// Default mode: route the new, then drain the old, then remove the
    /// retired.
    pub(crate) fn deploy(
        mut self,
        items: &[Item],
        containers: &[(usize, ContainerRecord)],
    ) -> Report {
        if let Some(percent) = self.canary_weight {
            let new: Vec<&Item> = items.iter().filter(|i| i.action == Action::Route).collect();
            match self.proxy.canary(&new, percent) {
                Ok(()) => {}
                Err(message) => {
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

    /// Puts the servers of the items with `action` in service and waits
    /// until the proxy has them up; the report says which are (`routed`).
    fn bring_up(&mut self, items: &[Item], action: Action) {
        let chosen: Vec<&Item> = items.iter().filter(|i| i.action == action).collect();
        let restoring = action == Action::Restore;
        let results = self.proxy.bring_up(&chosen, restoring);
        for (item, result) in chosen.into_iter().zip(results) {
            match result {
                Ok(()) => self.report.success(item, |r| {
                    r.routed = Some(true);
                    if restoring {
                        r.drained = Some(false);
                        r.extra.shift_remove(FIELD_DRAIN_TIMED_OUT);
                    }
                }),
                Err(failure) => {
                    self.progress
                        .error(format_args!("{}: {}", item.describe(), failure.message));
                    self.report.failure(item, &failure.message, |r| {
                        r.routed = Some(false);
                        if restoring && failure.readied {
                            r.drained = Some(false);
                        }
                    });
                }
            }
        }
    }

    /// Drains the items' servers; `done` records each success.
    fn drain(&mut self, items: &[&Item], done: impl Fn(&mut Report, &Item, Drained)) {
        // One without an address is not running: nothing sends to it.
        let items: Vec<&Item> = items
            .iter()
            .copied()
            .filter(|i| i.address.is_some())
            .collect();
        if items.is_empty() {
            return;
        }
        let results = self.proxy.drain(&items);
        for (item, result) in items.iter().zip(results) {
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

    /// Deletes the servers of the items with `action`.
    pub(crate) fn remove_all(&mut self, items: &[Item], action: Action) {
        // A retired container's address may already belong to a live one
        // of the input (addresses are reused); its server is not removed.
        let live: HashSet<SocketAddr> = items
            .iter()
            .filter(|i| i.action != Action::Remove)
            .filter_map(|i| i.address)
            .collect();
        let mut results: Vec<(&Item, Result<(), String>)> = Vec::new();
        let mut to_remove: Vec<&Item> = Vec::new();
        for item in items.iter().filter(|i| i.action == action) {
            match item.address {
                None => {
                    self.progress.info(format_args!(
                        "{} has no address; no server to remove",
                        item.describe()
                    ));
                    results.push((item, Ok(())));
                }
                Some(address) if action == Action::Remove && live.contains(&address) => {
                    self.progress.warn(format_args!(
                        "{} is retired, but a live container of the input has its address; keeping the server",
                        item.describe()
                    ));
                    results.push((item, Ok(())));
                }
                Some(_) => to_remove.push(item),
            }
        }
        if !to_remove.is_empty() {
            let removed = self.proxy.remove(&to_remove);
            results.extend(to_remove.into_iter().zip(removed));
        }
        for (item, result) in results {
            match result {
                Ok(()) => self.report.success(item, |r| r.routed = Some(false)),
                Err(message) => {
                    self.progress
                        .error(format_args!("{}: {message}", item.describe()));
                    self.report.failure(item, &message, |_| {});
                }
            }
        }
    }

    /// --prune: deletes the servers whose address is no live container of
    /// the input.
    fn prune_stale(&mut self, items: &[Item]) {
        let live: HashSet<SocketAddr> = items
            .iter()
            .filter(|i| i.action != Action::Remove)
            .filter_map(|i| i.address)
            .collect();
        let service = items.first().map(|i| Service {
            name: i.record.service.clone(),
            project: i.record.project.clone(),
        });
        if !self.proxy.prune(&live, service.as_ref()) {
            self.report.ok = false;
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
