//! The gate before `contract`: does a release older than the one being
//! rolled out still run?
//!
//! A contract migration removes what only the old code needs. Running it
//! while a replica of the old release still serves breaks that replica,
//! so `contract` asks the Docker engine (not a record stream, which may
//! be stale or cut short) for the service's running replicas, by labels
//! as every zdd tool identifies them, and refuses while any of them runs
//! a release other than `--release`. One-off containers (earlier migration
//! runs) are not replicas and never count.
//!
//! Finding no replica at all is refused too, unless the caller says that
//! none is expected (`--no-replicas-expected`): a misspelt `--service` or
//! `--project` would otherwise find nothing, "pass", and drop what the
//! old release still uses.

use zdd_core::docker;
use zdd_core::record::ContainerRecord;
use zdd_core::service::Service;
use zdd_core::Result;

/// What the check found, and whether `contract` may go on.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// Every one of these running replicas (at least one) runs the release.
    Current(usize),
    /// No running replica, and none was expected: nothing can break.
    NoneExpected,
    /// No running replica, though one was expected: refuse.
    NoReplicas,
    /// These running replicas run another release: refuse.
    Older(Vec<ContainerRecord>),
}

impl Gate {
    /// Decides from the running replicas of the service.
    pub fn decide(running: Vec<ContainerRecord>, release: &str, none_expected: bool) -> Gate {
        if running.is_empty() {
            return if none_expected {
                Gate::NoneExpected
            } else {
                Gate::NoReplicas
            };
        }
        let count = running.len();
        let older: Vec<_> = running
            .into_iter()
            .filter(|record| record.release.as_deref() != Some(release))
            .collect();
        if older.is_empty() {
            Gate::Current(count)
        } else {
            Gate::Older(older)
        }
    }

    /// Whether `contract` may apply its migrations.
    pub fn passes(&self) -> bool {
        matches!(self, Gate::Current(_) | Gate::NoneExpected)
    }
}

/// The running replicas of `service`, as the Docker engine lists them.
pub async fn running_replicas(service: &Service) -> Result<Vec<ContainerRecord>> {
    let docker = docker::connect().await?;
    let running = service.containers(&docker, false).await?;
    Ok(running
        .iter()
        .map(|inspect| docker::container_record(inspect, &service.name))
        .collect())
}

/// Asks the engine and decides.
pub async fn check(service: &Service, release: &str, none_expected: bool) -> Result<Gate> {
    Ok(Gate::decide(
        running_replicas(service).await?,
        release,
        none_expected,
    ))
}

/// `` service `api` `` or `` service `api` of Compose project `shop` ``.
pub fn name(service: &Service) -> String {
    match &service.project {
        Some(project) => format!("service `{}` of Compose project `{project}`", service.name),
        None => format!("service `{}`", service.name),
    }
}

/// `api-1f2e3d4c-1 (release 0123abcd…, running)` for each container.
pub fn describe(containers: &[ContainerRecord]) -> String {
    containers
        .iter()
        .map(|c| {
            format!(
                "{} (release {})",
                c.label(),
                c.release.as_deref().unwrap_or("unknown")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(name: &str, release: Option<&str>) -> ContainerRecord {
        serde_json::from_value(serde_json::json!({
            "id": format!("{name}-id"),
            "name": name,
            "service": "api",
            "release": release,
        }))
        .unwrap()
    }

    #[test]
    fn no_replica_refuses_unless_none_is_expected() {
        assert_eq!(Gate::decide(vec![], "r2", false), Gate::NoReplicas);
        assert!(!Gate::NoReplicas.passes());
        assert_eq!(Gate::decide(vec![], "r2", true), Gate::NoneExpected);
        assert!(Gate::NoneExpected.passes());
    }

    #[test]
    fn older_replicas_refuse_even_when_none_is_expected() {
        for none_expected in [false, true] {
            let gate = Gate::decide(
                vec![
                    replica("api-1", Some("r1")),
                    replica("api-2", Some("r2")),
                    replica("api-3", None),
                ],
                "r2",
                none_expected,
            );
            let Gate::Older(older) = &gate else {
                panic!("{gate:?}");
            };
            assert_eq!(
                describe(older),
                "api-1 (release r1), api-3 (release unknown)"
            );
            assert!(!gate.passes());
        }
    }

    #[test]
    fn replicas_of_the_release_pass() {
        let gate = Gate::decide(
            vec![replica("api-1", Some("r2")), replica("api-2", Some("r2"))],
            "r2",
            false,
        );
        assert_eq!(gate, Gate::Current(2));
        assert!(gate.passes());
    }

    #[test]
    fn names_the_project_when_given() {
        assert_eq!(name(&Service::new("api", None)), "service `api`");
        assert_eq!(
            name(&Service::new("api", Some("shop".into()))),
            "service `api` of Compose project `shop`"
        );
    }
}
