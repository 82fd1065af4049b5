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

use zdd_core::docker;
use zdd_core::record::ContainerRecord;
use zdd_core::service::Service;
use zdd_core::Result;

/// The running replicas of `service` whose release is not `release`.
pub async fn older_replicas(service: &Service, release: &str) -> Result<Vec<ContainerRecord>> {
    let docker = docker::connect().await?;
    let running = service.containers(&docker, false).await?;
    Ok(running
        .iter()
        .map(|inspect| docker::container_record(inspect, &service.name))
        .filter(|record| record.release.as_deref() != Some(release))
        .collect())
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
