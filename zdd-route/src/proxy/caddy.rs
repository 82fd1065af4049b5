//! Routing through Caddy 2's admin API: the upstreams of one
//! `reverse_proxy` handler found by its `@id`.
//!
//! Caddy 2.6 differs from HAProxy where it matters (measured, see
//! `docs/caddy.md`), and this module is shaped by it:
//!
//! - Every change is a whole config reload, so the items of one action go
//!   in one change, and nothing is written when nothing would change.
//! - There is no "UP" to wait for: Caddy routes a new upstream at once and
//!   every reload resets its health state. So a replica is brought up only
//!   after zdd-health found it ready, and "up" is Caddy's config read back
//!   naming it, and its address accepting a connection.
//! - A removed upstream vanishes from `/reverse_proxy/upstreams` while its
//!   requests are still in flight (they finish). So a drain *moves* the
//!   upstream, in one change, to a second handler no request reaches
//!   (`--drain-handler`), and waits until Caddy counts no request in
//!   flight on it (`num_requests`), or the drain timeout.
//! - Upstreams carry no name, so one is matched by its `dial` being the
//!   container's `ip:port`; `--prune` takes out every upstream no live
//!   container of the input has, as for HAProxy a backend that serves the
//!   service alone.
//! - Caddy 2.6 has no weighted balancing: no canary.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use zdd_core::cli::Progress;

use super::{accepts_connections, poll_each, BringUpFailure, Drained, Proxy, Service, POLL};
use crate::caddy::Admin;
use crate::plan::Item;

/// One `reverse_proxy` handler of a Caddy, through its admin API.
pub(crate) struct CaddyHandler {
    pub(crate) admin: Admin,
    /// The `@id` of the handler traffic goes through.
    pub(crate) handler: String,
    /// The `@id` of a handler no request reaches, where upstreams are
    /// parked while their requests in flight finish.
    pub(crate) parking: Option<String>,
    pub(crate) up_timeout: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) progress: Progress,
}

fn dials(items: &[&Item]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i.address)
        .map(|a| a.to_string())
        .collect()
}

fn refs(dials: &[String]) -> Vec<&str> {
    dials.iter().map(String::as_str).collect()
}

impl Proxy for CaddyHandler {
    fn canary(&mut self, _new: &[&Item], _percent: u8) -> Result<(), String> {
        Err("Caddy 2.6 has no weighted load balancing: a canary's share needs HAProxy (--socket, --backend)".into())
    }

    fn bring_up(&mut self, items: &[&Item], _restoring: bool) -> Vec<Result<(), BringUpFailure>> {
        let dials = dials(items);
        let not_set = |message: String| {
            items
                .iter()
                .map(|_| {
                    Err(BringUpFailure {
                        message: message.clone(),
                        readied: false,
                    })
                })
                .collect()
        };
        // Into the served handler and, where a drain of an earlier step
        // parked them (a rollback brings the old ones back), out of the
        // parking one: one change.
        let added = match &self.parking {
            Some(parking) => self
                .admin
                .move_upstreams(parking, &self.handler, &refs(&dials)),
            None => self.admin.add_upstreams(&self.handler, &refs(&dials)),
        };
        match added {
            Ok(changed) => self.progress.info(format_args!(
                "{} {} upstream(s) of Caddy handler `{}`",
                if changed { "made" } else { "already" },
                dials.len(),
                self.handler
            )),
            Err(e) => return not_set(e.to_string()),
        }
        let served = match self.admin.upstreams(&self.handler) {
            Ok(served) => served,
            Err(e) => return not_set(format!("reading the handler back: {e}")),
        };
        let start = Instant::now();
        items
            .iter()
            .map(|item| {
                let address = item.address.expect("planned with an address");
                if !served.contains(&address.to_string()) {
                    return Err(BringUpFailure {
                        message: format!(
                            "Caddy's handler `{}` does not list {address} after the change",
                            self.handler
                        ),
                        readied: true,
                    });
                }
                while !accepts_connections(&address) {
                    if start.elapsed() >= self.up_timeout {
                        return Err(BringUpFailure {
                            message: format!(
                                "nothing accepts a connection at {address} within {:?}",
                                self.up_timeout
                            ),
                            readied: true,
                        });
                    }
                    thread::sleep(POLL);
                }
                self.progress.info(format_args!(
                    "{} is an upstream of Caddy handler `{}`",
                    item.record.label(),
                    self.handler
                ));
                Ok(())
            })
            .collect()
    }

    fn drain(&mut self, items: &[&Item]) -> Vec<Result<Drained, String>> {
        let dials = dials(items);
        let failed = |message: String| items.iter().map(|_| Err(message.clone())).collect();
        // Parked and taken out of the served handler in one change: Caddy
        // keeps counting their requests in flight under the parking one.
        let taken_out = match &self.parking {
            Some(parking) => self
                .admin
                .move_upstreams(&self.handler, parking, &refs(&dials)),
            None => self.admin.remove_upstreams(&self.handler, &refs(&dials)),
        };
        if let Err(e) = taken_out {
            return failed(e.to_string());
        }
        if self.parking.is_none() {
            self.progress.warn(format_args!(
                "taken out of Caddy handler `{}`; their requests in flight finish, but without --drain-handler Caddy cannot count them",
                self.handler
            ));
            return items.iter().map(|_| Ok(Drained { left: None })).collect();
        }
        poll_each(
            items,
            |item| item.index,
            || {
                self.admin
                    .upstream_stats()
                    .map_err(|e| format!("reading Caddy's upstreams: {e}"))
            },
            |item, stats, elapsed| {
                let dial = item.address.map(|a| a.to_string()).unwrap_or_default();
                let in_flight: u64 = stats
                    .iter()
                    .filter(|s| s.address == dial)
                    .map(|s| s.num_requests)
                    .sum();
                if in_flight == 0 {
                    self.progress.info(format_args!(
                        "draining {}: 0 requests in flight after {:.1}s",
                        item.describe(),
                        elapsed.as_secs_f64()
                    ));
                    Some(Ok(Drained { left: None }))
                } else if elapsed >= self.drain_timeout {
                    self.progress.warn(format_args!(
                        "draining {}: {in_flight} request(s) still in flight after {:.1}s (drain timeout); going on",
                        item.describe(),
                        elapsed.as_secs_f64()
                    ));
                    Some(Ok(Drained {
                        left: Some(in_flight),
                    }))
                } else {
                    None
                }
            },
        )
    }

    fn remove(&mut self, items: &[&Item]) -> Vec<Result<(), String>> {
        let dials = dials(items);
        let handlers = std::iter::once(self.handler.clone()).chain(self.parking.clone());
        for handler in handlers {
            if let Err(e) = self.admin.remove_upstreams(&handler, &refs(&dials)) {
                let message = format!("taking them out of Caddy handler `{handler}`: {e}");
                return items.iter().map(|_| Err(message.clone())).collect();
            }
        }
        for item in items {
            self.progress
                .info(format_args!("{} is no upstream of Caddy", item.describe()));
        }
        items.iter().map(|_| Ok(())).collect()
    }

    fn prune(&mut self, live: &HashSet<SocketAddr>, _service: Option<&Service>) -> bool {
        let live: HashSet<String> = live.iter().map(|a| a.to_string()).collect();
        let mut ok = true;
        let handlers = std::iter::once(self.handler.clone()).chain(self.parking.clone());
        for handler in handlers {
            let stale: Vec<String> = match self.admin.upstreams(&handler) {
                Ok(dials) => dials.into_iter().filter(|d| !live.contains(d)).collect(),
                Err(e) => {
                    self.progress
                        .error(format_args!("cannot list the upstreams to prune: {e}"));
                    ok = false;
                    continue;
                }
            };
            if stale.is_empty() {
                continue;
            }
            match self.admin.remove_upstreams(&handler, &refs(&stale)) {
                Ok(_) => self.progress.info(format_args!(
                    "pruned {} from Caddy handler `{handler}`: no live container has the address",
                    stale.join(", ")
                )),
                Err(e) => {
                    self.progress
                        .error(format_args!("pruning Caddy handler `{handler}`: {e}"));
                    ok = false;
                }
            }
        }
        ok
    }
}

/// Where Linux says whether a closing listener's queued connections move
/// to another socket of its `SO_REUSEPORT` group (5.14 and later).
const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Warns when this host resets the connections queued on the socket a
/// Caddy reload closes: Caddy 2.6 opens a new listening socket at every
/// config change (`SO_REUSEPORT`) and closes the old one, and unless
/// `net.ipv4.tcp_migrate_req` is 1 the kernel resets what waited in the
/// old one's queue. Measured: 13 and 22 resets in 20 changes at 8
/// clients opening a connection per request, 0 and 0 with it set.
pub(crate) fn warn_without_request_migration(progress: &Progress) {
    if std::fs::read_to_string(MIGRATE_REQ).is_ok_and(|v| v.trim() == "0") {
        progress.warn(format_args!(
            "{MIGRATE_REQ} is 0: each Caddy reload resets the connections queued on the socket it closes; set `sysctl -w net.ipv4.tcp_migrate_req=1` where Caddy runs (docs/caddy.md)"
        ));
    }
}
