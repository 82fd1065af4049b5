//! Standby servers: the drained old replicas kept in the backend as HAProxy
//! `backup` servers while the new release is watched.
//!
//! During a watch the old servers are drained, so HAProxy sends them no
//! new request. If every new replica dies in the same instant (a release
//! that crashes a few seconds after start does exactly that), HAProxy's
//! retries have nowhere to go but the dead servers, and every request of
//! the moments before the watch reverts (the engine reports an exit some
//! 100 ms after the process is gone) is a 503: measured 5 to 89 of them
//! at 8 clients.
//!
//! A standby closes that gap inside HAProxy itself, at packet speed: it is
//! a second server at a drained old replica's address, added with `backup`,
//! so it takes traffic only when no active server is usable. The new
//! servers are added with `observe layer4 error-limit 1 on-error
//! mark-down` ([`crate::DEFAULT_SERVER_OPTIONS`]): the first connection
//! a dead replica refuses marks its server DOWN, HAProxy's retry goes to
//! the next server, and once every new one is DOWN to the standby, the
//! old release. The request is answered; the watch then makes the old
//! servers ready and deletes the standbys.
//!
//! A standby is named after its container with [`STANDBY_SUFFIX`]
//! (`api-1f2e3d4c-1.standby`), so it is zdd's to delete wherever it is
//! found: it lives only during a watch, which holds the deploy's lock, and
//! `--prune` deletes one a killed watch left.

use std::net::SocketAddr;
use std::time::Duration;

use zdd_core::cli::Progress;
use zdd_core::record::ContainerRecord;

use crate::haproxy::{self, Runtime};
use crate::plan::server_name;
use crate::proxy::haproxy::{delete_server, WhileBusy};

/// The end of a standby server's name.
pub const STANDBY_SUFFIX: &str = ".standby";

/// How long a standby that took traffic may take to finish it before it
/// is deleted.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The standby server's name for an old replica.
pub fn standby_name(record: &ContainerRecord) -> String {
    format!("{}{STANDBY_SUFFIX}", server_name(record))
}

/// Whether `name` is a standby's.
pub fn is_standby(name: &str) -> bool {
    name.ends_with(STANDBY_SUFFIX)
}

/// Adds a standby for each old replica (its `address`), checked with
/// `server_options` (HAProxy calls it UP at its first passing check, within
/// `downinter`; this does not wait for that, so the watch starts at once).
/// Returns the names added (or already there). A standby that cannot be
/// added is a warning, not a failure: the watch goes on without it, as it
/// would have before standbys existed.
pub fn add(
    runtime: &Runtime,
    backend: &str,
    replicas: &[&ContainerRecord],
    server_options: &str,
    progress: &Progress,
) -> Vec<String> {
    let mut added = Vec::new();
    for record in replicas {
        let Some(address) = record
            .address
            .as_deref()
            .and_then(|a| a.parse::<SocketAddr>().ok())
        else {
            continue;
        };
        let name = standby_name(record);
        match add_one(runtime, backend, &name, &address, server_options) {
            Ok(()) => added.push(name),
            Err(e) => progress.warn(format_args!(
                "no standby for {} (the watch goes on without it): {e}",
                record.label()
            )),
        }
    }
    if !added.is_empty() {
        progress.info(format_args!(
            "{} standby server(s) added: backups at the old replicas' addresses, for the instant every new one fails",
            added.len()
        ));
    }
    added
}

fn add_one(
    runtime: &Runtime,
    backend: &str,
    name: &str,
    address: &SocketAddr,
    server_options: &str,
) -> haproxy::Result<()> {
    let exists = runtime
        .servers_state(backend)?
        .iter()
        .any(|s| s.name == name);
    if !exists {
        runtime.expect(
            // No pool of idle connections (`pool-max-conn 0`): HAProxy
            // refuses `del server` while it keeps one, and a standby
            // serves only in an instant of failure.
            &format!(
                "add server {backend}/{name} {address} backup {server_options} pool-max-conn 0"
            ),
            &["New server registered."],
        )?;
    }
    runtime.expect(
        &format!("enable health {backend}/{name}"),
        &[
            "",
            "Health check was not configured on this server, cannot enable.",
        ],
    )?;
    runtime.expect(&format!("set server {backend}/{name} state ready"), &[""])?;
    Ok(())
}

/// Deletes the standbys `names`: each is put in maintenance, given up to
/// a few seconds to finish what it serves (it took traffic only if every
/// new server failed), then deleted. One that cannot be deleted stays in
/// maintenance, with a warning: it takes no traffic, and the next
/// `--prune` deletes it.
pub fn remove(runtime: &Runtime, backend: &str, names: &[String], progress: &Progress) {
    for name in names {
        if let Err(e) = remove_one(runtime, backend, name) {
            progress.warn(format_args!(
                "standby {backend}/{name} left in maintenance (the next --prune deletes it): {e}"
            ));
        }
    }
}

fn remove_one(runtime: &Runtime, backend: &str, name: &str) -> haproxy::Result<()> {
    // In maintenance it gets no new request; what it serves finishes, and
    // HAProxy lets go of its connections to the replica a moment later.
    delete_server(runtime, backend, name, WhileBusy::LetFinish(IDLE_TIMEOUT)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_is_named_after_its_container() {
        let record: ContainerRecord = serde_json::from_str(
            r#"{"type":"container","id":"1f2e3d4c5b6a","name":"api-1f2e3d4c-1","service":"api"}"#,
        )
        .unwrap();
        assert_eq!(standby_name(&record), "api-1f2e3d4c-1.standby");
        assert!(is_standby(&standby_name(&record)));
        assert!(!is_standby("api-1f2e3d4c-1"));
    }
}
