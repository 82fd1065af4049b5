//! The decision of what `zdd-route` does with each container record: its
//! [`Action`], the address its server is matched by, and the name a new
//! server gets.
//!
//! This is kept apart from the [`router`](crate::router), which carries the
//! decisions out, because it is the part that must be finished, and found
//! valid, before anything changes: [`plan`] reads only the records, does no
//! I/O, and rejects a bad input (a missing or malformed address, two live
//! containers at one address) as exit 2 with HAProxy untouched. Being pure,
//! it is also what the unit tests below can check without an HAProxy.

use std::collections::HashMap;
use std::net::SocketAddr;

use zdd_core::evidence;
use zdd_core::jsonl::Record;
use zdd_core::record::{ContainerRecord, Health, Role};
use zdd_core::{Error, Result};

use crate::haproxy::ServerState;

/// What the step is asked to do with the whole input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Route the new, drain the old, remove the retired.
    Deploy,
    /// `--restore`: the rollback.
    Restore,
    /// `--sync`: the input is every container of the service (zdd-ps);
    /// each running one is routed, whatever its role.
    Sync,
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
    pub fn for_record(record: &ContainerRecord, mode: Mode) -> Option<Action> {
        if record.retired == Some(true) {
            return Some(Action::Remove);
        }
        if mode == Mode::Sync {
            let running = record.state.as_deref() == Some("running");
            let unhealthy = matches!(record.health, Some(Health::Unhealthy | Health::Exited));
            return (running && !unhealthy).then_some(Action::Route);
        }
        let restore = mode == Mode::Restore;
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
    pub(crate) fn describe(&self) -> String {
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
    mode: Mode,
) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut live: HashMap<SocketAddr, usize> = HashMap::new();
    for (index, record) in containers {
        let line = records[*index].line;
        let Some(action) = Action::for_record(record, mode) else {
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

pub use zdd_core::names::sanitize;

/// A server name for `record` that no server of `servers` has.
pub(crate) fn unused_name(servers: &[ServerState], record: &ContainerRecord) -> String {
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

/// Whether `name` is one [`unused_name`] gives `record`'s server: the
/// servers zdd-route added for that container, the only ones it deletes.
/// Any other server at its address (a `server` line of the configuration,
/// a `server-template` slot, someone else's) is only put in maintenance.
/// A [standby](crate::standby) of the container is one of zdd's too.
pub(crate) fn named_for(name: &str, record: &ContainerRecord) -> bool {
    let name = name
        .strip_suffix(crate::standby::STANDBY_SUFFIX)
        .unwrap_or(name);
    let base = server_name(record);
    let Some(rest) = name.strip_prefix(base.as_str()) else {
        return false;
    };
    let suffix = rest.strip_prefix('-');
    rest.is_empty()
        || suffix == Some(sanitize(record.short_id()).as_str())
        || suffix.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `name` is shaped like the server zdd-route adds for a replica of
/// `service` (named after the container: `SERVICE-RELEASE-N`, or Compose's
/// `PROJECT_SERVICE_N`), for `--prune`, which has no record of the
/// container a stale server was for.
pub(crate) fn replica_shaped(name: &str, service: &str, project: Option<&str>) -> bool {
    let zdd = format!("{}-", sanitize(service));
    let compose = project.map(|p| sanitize(&format!("{p}_{service}_")));
    name.starts_with(&zdd) || compose.is_some_and(|c| name.starts_with(&c))
}

#[cfg(test)]
mod tests {
    use zdd_core::jsonl;

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
        assert_eq!(
            Action::for_record(&healthy, Mode::Deploy),
            Some(Action::Route)
        );
        assert_eq!(Action::for_record(&unhealthy, Mode::Deploy), None);
        assert_eq!(Action::for_record(&old, Mode::Deploy), Some(Action::Drain));
        assert_eq!(
            Action::for_record(&retired, Mode::Deploy),
            Some(Action::Remove)
        );
        assert_eq!(Action::for_record(&plain, Mode::Deploy), None);
        // A rollback withdraws only what its run started.
        assert_eq!(Action::for_record(&healthy, Mode::Restore), None);
        let mut started = healthy.clone();
        started.started = Some(true);
        assert_eq!(
            Action::for_record(&started, Mode::Restore),
            Some(Action::Withdraw)
        );
        let mut started_unhealthy = unhealthy.clone();
        started_unhealthy.started = Some(true);
        assert_eq!(
            Action::for_record(&started_unhealthy, Mode::Restore),
            Some(Action::Withdraw)
        );
        assert_eq!(
            Action::for_record(&old, Mode::Restore),
            Some(Action::Restore)
        );
        assert_eq!(
            Action::for_record(&retired, Mode::Restore),
            Some(Action::Remove)
        );
        // --sync: every running container, whatever its role.
        let mut running = plain.clone();
        running.state = Some("running".into());
        assert_eq!(
            Action::for_record(&running, Mode::Sync),
            Some(Action::Route)
        );
        let mut exited = plain.clone();
        exited.state = Some("exited".into());
        assert_eq!(Action::for_record(&exited, Mode::Sync), None);
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
        let err = plan(&input, &containers, Mode::Deploy).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(err.to_string().contains("no `address`"), "{err}");
        // Unhealthy: not acted on, so no address needed.
        let input = records(concat!(
            r#"{"type":"container","id":"a","service":"api","role":"new","health":"unhealthy"}"#,
            "\n"
        ));
        let containers = jsonl::containers(&input).unwrap();
        assert!(plan(&input, &containers, Mode::Deploy).unwrap().is_empty());
    }

    #[test]
    fn the_plan_rejects_bad_and_shared_addresses() {
        let input = records(concat!(
            r#"{"type":"container","id":"a","service":"api","role":"old","address":"172.17.0.4"}"#,
            "\n"
        ));
        let containers = jsonl::containers(&input).unwrap();
        let err = plan(&input, &containers, Mode::Deploy).unwrap_err();
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
        let err = plan(&input, &containers, Mode::Deploy).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn only_the_names_zdd_gives_a_container_are_deleted() {
        let mut record = container("api-3f2a1b4c-1", Some(Role::Old), None);
        record.id = "0123456789abcdef".into();
        assert!(named_for("api-3f2a1b4c-1", &record));
        assert!(named_for("api-3f2a1b4c-1-2", &record));
        assert!(named_for("api-3f2a1b4c-1-0123456789ab", &record));
        assert!(
            !named_for("web1", &record),
            "a server line of the configuration"
        );
        assert!(
            !named_for("api-3f2a1b4c-10", &record),
            "another container's"
        );
        assert!(replica_shaped("api-3f2a1b4c-1", "api", None));
        assert!(replica_shaped("shop_api_3", "api", Some("shop")));
        assert!(
            !replica_shaped("api1", "api", None),
            "a server-template slot"
        );
    }
}
