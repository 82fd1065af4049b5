//! The evidence the destructive steps act on, written once.
//!
//! Two decisions can cause an outage, and each has one rule here that every
//! tool asks:
//!
//! - [`old_release_may_go`]: may the old replicas be drained (zdd-route)
//!   or removed (zdd-retire)? Only when the stream holds at least one new
//!   replica and every new replica is live (not retired), healthy, and
//!   routed where a routing step ran. [`new_replicas_still_serve`] repeats
//!   the check on the engine just before anything is removed: a replica
//!   that crashed after its health check is not evidence.
//! - [`rollback_may_withdraw`]: may a rollback withdraw and remove the new
//!   replicas it started? Only when the old release serves again: where a
//!   routing step ran, every live old replica is routed and not drained
//!   (the restore succeeded). A rollback never removes the last serving
//!   capacity.
//!
//! And one fact about each new replica, [`started_by_this_run`]: a rollback
//! acts only on the replicas its own run started (`"started": true`, set by
//! zdd-scale); replicas that served before the run are never touched by it.

use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerSummaryStateEnum, HealthStatusEnum,
};

use crate::docker::{self, Docker};
use crate::record::{ContainerRecord, Health, Role};
use crate::{Error, Result};

/// Whether the new replicas must be routed before the old may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// A routing step runs now (zdd-route): every new replica must be routed.
    Required,
    /// As the records say: every new replica must be routed when any new
    /// record carries a `routed` field (a routing step ran upstream).
    AsRecorded,
}

/// Why the old release may not go, if it may not.
pub fn old_release_may_go<'a>(
    containers: impl IntoIterator<Item = &'a ContainerRecord>,
    routing: Routing,
) -> std::result::Result<(), String> {
    let new: Vec<&ContainerRecord> = containers
        .into_iter()
        .filter(|c| c.role == Some(Role::New))
        .collect();
    if new.is_empty() {
        return Err("the input holds no `new` container, so nothing would replace them".into());
    }
    if let Some(retired) = new.iter().find(|c| c.retired == Some(true)) {
        return Err(format!(
            "new container {} was retired, so it serves nothing",
            retired.label()
        ));
    }
    if let Some(sick) = new.iter().find(|c| c.health != Some(Health::Healthy)) {
        let health = sick.health.map_or("unchecked", Health::as_str);
        let reason = sick
            .health_reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        return Err(format!(
            "new container {} is {health}{reason}",
            sick.label()
        ));
    }
    let must_be_routed = match routing {
        Routing::Required => true,
        Routing::AsRecorded => new.iter().any(|c| c.routed.is_some()),
    };
    if must_be_routed {
        if let Some(unrouted) = new.iter().find(|c| c.routed != Some(true)) {
            return Err(format!(
                "new container {} is not routed (the load balancer does not report it UP)",
                unrouted.label()
            ));
        }
    }
    Ok(())
}

/// Whether this run started the container (zdd-scale's `"started": true`).
/// A record without the field was not started by the run that holds it.
pub fn started_by_this_run(container: &ContainerRecord) -> bool {
    container.role == Some(Role::New) && container.started == Some(true)
}

/// Why a rollback may not withdraw the new replicas it started, if it may
/// not. Once an old replica was retired the switch is done and there is
/// no old release to go back to. Where a routing step ran (any record has `routed` or `drained`),
/// every old replica that is still there (not retired, with an address)
/// must be in service: not drained (or made ready again by the restore)
/// and not reported down (`routed: false`, a restore that failed).
/// Otherwise the rollback would leave no capacity serving.
pub fn rollback_may_withdraw<'a>(
    containers: impl IntoIterator<Item = &'a ContainerRecord> + Clone,
) -> std::result::Result<(), String> {
    if let Some(gone) = containers
        .clone()
        .into_iter()
        .find(|c| c.role == Some(Role::Old) && c.retired == Some(true))
    {
        return Err(format!(
            "the switch is done: old container {} was already retired, so the new release is what serves",
            gone.label()
        ));
    }
    let routing_ran = containers
        .clone()
        .into_iter()
        .any(|c| c.routed.is_some() || c.drained.is_some());
    if !routing_ran {
        return Ok(());
    }
    let not_back: Vec<&str> = containers
        .into_iter()
        .filter(|c| c.role == Some(Role::Old))
        .filter(|c| c.retired != Some(true) && c.address.is_some())
        .filter(|c| c.routed == Some(false) || c.drained == Some(true))
        .map(ContainerRecord::label)
        .collect();
    if not_back.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the old release does not serve again (not restored in the load balancer: {}), so the new replicas keep serving",
            not_back.join(", ")
        ))
    }
}

/// Asks the engine, just before anything is removed, whether every new
/// replica of `containers` still runs, and is not `unhealthy` where it has
/// a HEALTHCHECK. `Ok(Err(why))` when one does not; `Err` when the engine
/// cannot be asked.
///
/// One listing of the replicas answers for all of them: the engine serves
/// a listing from its in-memory view, while an inspect waits for the
/// container's lock, which a HEALTHCHECK exec holds (16 replicas checking
/// every 100 ms on two cores made 16 inspects take 1.8 s). A replica the
/// listing does not show is inspected on its own, so a short id or a race
/// is still answered by the engine.
pub async fn new_replicas_still_serve<'a>(
    docker: &Docker,
    containers: impl IntoIterator<Item = &'a ContainerRecord>,
) -> Result<std::result::Result<(), String>> {
    let new: Vec<&ContainerRecord> = containers
        .into_iter()
        .filter(|c| c.role == Some(Role::New))
        .collect();
    let listed = docker::containers_with_ids(docker, new.iter().map(|c| c.id.as_str())).await?;
    for record in new {
        let now = match listed.iter().find(|c| c.id.as_deref() == Some(&record.id)) {
            Some(summary) => EngineView::of_listing(summary),
            None => match docker.inspect_container(&record.id, None).await {
                Ok(inspect) => EngineView::of_inspect(&inspect),
                Err(e) if docker::is_not_found(&e) => EngineView::Gone,
                Err(e) => return Err(Error::docker(format!("inspecting {}", record.label()), e)),
            },
        };
        if let Err(why) = now.serves() {
            return Ok(Err(format!("new container {} {why}", record.label())));
        }
    }
    Ok(Ok(()))
}

/// What the engine says of a container now, as far as the rule needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EngineView {
    Gone,
    /// Not running, or restarting: its status as the engine words it.
    NotRunning(String),
    Running(Option<HealthStatusEnum>),
}

impl EngineView {
    fn of_inspect(inspect: &ContainerInspectResponse) -> EngineView {
        let state = inspect.state.clone().unwrap_or_default();
        let running = state.status == Some(ContainerStateStatusEnum::RUNNING)
            && state.restarting != Some(true);
        if !running {
            let status = state
                .status
                .map_or("unknown".to_string(), |s| s.to_string());
            let exit = state
                .exit_code
                .map(|c| format!(", exit code {c}"))
                .unwrap_or_default();
            return EngineView::NotRunning(format!("{status}{exit}"));
        }
        EngineView::Running(state.health.and_then(|h| h.status))
    }

    /// From a listing: `State` says running; the health is in `Status`,
    /// worded as `docker ps` shows it (`Up 3 seconds (healthy)`, `(health:
    /// starting)`, `(unhealthy)`).
    fn of_listing(summary: &ContainerSummary) -> EngineView {
        let status = summary.status.clone().unwrap_or_default();
        if summary.state != Some(ContainerSummaryStateEnum::RUNNING) {
            let state = summary
                .state
                .map_or("unknown".to_string(), |s| s.to_string());
            return EngineView::NotRunning(format!("{state} ({status})"));
        }
        let health = if status.ends_with("(healthy)") {
            Some(HealthStatusEnum::HEALTHY)
        } else if status.ends_with("(health: starting)") {
            Some(HealthStatusEnum::STARTING)
        } else if status.ends_with("(unhealthy)") {
            Some(HealthStatusEnum::UNHEALTHY)
        } else {
            None
        };
        EngineView::Running(health)
    }

    /// The rule: running, and not `unhealthy` by its HEALTHCHECK.
    /// `starting` is no verdict yet (a `zdd-health --http` probe passed
    /// before Docker's first check ran, or while its exec waits on a busy
    /// engine); the positive evidence is in the records: the probe, and
    /// the load balancer's own check where a routing step ran.
    fn serves(&self) -> std::result::Result<(), String> {
        match self {
            EngineView::Gone => Err("is gone from the engine".into()),
            EngineView::NotRunning(status) => {
                Err(format!("is {status} on the engine, not running"))
            }
            EngineView::Running(Some(HealthStatusEnum::UNHEALTHY)) => {
                Err("is `unhealthy` by its Docker HEALTHCHECK now".into())
            }
            EngineView::Running(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(role: Role, health: Option<Health>, routed: Option<bool>) -> ContainerRecord {
        let mut c = ContainerRecord::new("0123456789abcdef", "api");
        c.name = format!(
            "{}-{}",
            role.as_str(),
            health.map_or("none", Health::as_str)
        );
        c.role = Some(role);
        c.health = health;
        c.routed = routed;
        c.address = Some("172.17.0.9:8080".into());
        c
    }

    #[test]
    fn the_old_go_only_when_every_new_is_healthy() {
        let old = container(Role::Old, None, None);
        let good = container(Role::New, Some(Health::Healthy), None);
        let bad = container(Role::New, Some(Health::Unhealthy), None);
        let unchecked = container(Role::New, None, None);
        assert!(old_release_may_go([&old, &good], Routing::AsRecorded).is_ok());
        let why = old_release_may_go([&old], Routing::AsRecorded).unwrap_err();
        assert!(why.contains("no `new` container"), "{why}");
        let why = old_release_may_go([&old, &good, &bad], Routing::AsRecorded).unwrap_err();
        assert!(why.contains("unhealthy"), "{why}");
        let why = old_release_may_go([&old, &unchecked], Routing::AsRecorded).unwrap_err();
        assert!(why.contains("unchecked"), "{why}");
    }

    #[test]
    fn a_retired_new_replica_is_no_evidence() {
        let old = container(Role::Old, None, None);
        let good = container(Role::New, Some(Health::Healthy), Some(true));
        let mut gone = container(Role::New, Some(Health::Healthy), Some(true));
        gone.retired = Some(true);
        for routing in [Routing::Required, Routing::AsRecorded] {
            let why = old_release_may_go([&old, &good, &gone], routing).unwrap_err();
            assert!(why.contains("was retired"), "{why}");
            let why = old_release_may_go([&old, &gone], routing).unwrap_err();
            assert!(why.contains("was retired"), "{why}");
        }
    }

    #[test]
    fn routing_is_required_when_it_runs_or_ran() {
        let old = container(Role::Old, None, None);
        let routed = container(Role::New, Some(Health::Healthy), Some(true));
        let unrouted = container(Role::New, Some(Health::Healthy), Some(false));
        let silent = container(Role::New, Some(Health::Healthy), None);
        assert!(old_release_may_go([&old, &routed], Routing::AsRecorded).is_ok());
        assert!(old_release_may_go([&old, &routed], Routing::Required).is_ok());
        // No routing step ran upstream: health is the evidence.
        assert!(old_release_may_go([&old, &silent], Routing::AsRecorded).is_ok());
        // One is running now: every new one must be UP.
        let why = old_release_may_go([&old, &silent], Routing::Required).unwrap_err();
        assert!(why.contains("not routed"), "{why}");
        for input in [[&old, &routed, &unrouted], [&old, &routed, &silent]] {
            let why = old_release_may_go(input, Routing::AsRecorded).unwrap_err();
            assert!(why.contains("not routed"), "{why}");
        }
    }

    #[test]
    fn only_replicas_the_run_started_are_its_own() {
        let mut started = container(Role::New, None, None);
        started.started = Some(true);
        let mut reused = container(Role::New, None, None);
        reused.started = Some(false);
        let unmarked = container(Role::New, None, None);
        let mut old = container(Role::Old, None, None);
        old.started = Some(true);
        assert!(started_by_this_run(&started));
        assert!(!started_by_this_run(&reused));
        assert!(!started_by_this_run(&unmarked));
        assert!(
            !started_by_this_run(&old),
            "an old replica is never the run's"
        );
    }

    #[test]
    fn a_rollback_withdraws_only_once_the_old_serve_again() {
        let new = container(Role::New, Some(Health::Healthy), Some(true));
        let mut restored = container(Role::Old, None, Some(true));
        restored.drained = Some(false);
        let mut still_drained = container(Role::Old, None, Some(true));
        still_drained.drained = Some(true);
        let mut not_up = container(Role::Old, None, Some(false));
        not_up.drained = Some(false);
        let mut stopped = container(Role::Old, None, None);
        stopped.address = None;

        assert!(rollback_may_withdraw([&new, &restored]).is_ok());
        assert!(rollback_may_withdraw([&new, &restored, &stopped]).is_ok());
        // Never drained (the route step stopped before the drain).
        let mut never_drained = container(Role::Old, None, None);
        never_drained.drained = Some(false);
        assert!(rollback_may_withdraw([&new, &never_drained]).is_ok());
        for bad in [&still_drained, &not_up] {
            let why = rollback_may_withdraw([&new, &restored, bad]).unwrap_err();
            assert!(why.contains(&bad.name), "{why}");
            assert!(why.contains("keep serving"), "{why}");
        }
        // No routing step ran (the health step failed): nothing to restore.
        let unrouted_new = container(Role::New, Some(Health::Unhealthy), None);
        let old = container(Role::Old, None, None);
        assert!(rollback_may_withdraw([&unrouted_new, &old]).is_ok());
        // A first deploy: nothing served before.
        assert!(rollback_may_withdraw([&new]).is_ok());
    }

    #[test]
    fn after_an_old_replica_is_retired_there_is_nothing_to_go_back_to() {
        let new = container(Role::New, Some(Health::Healthy), None);
        let mut retired = container(Role::Old, None, None);
        retired.retired = Some(true);
        let other_old = container(Role::Old, None, None);
        let why = rollback_may_withdraw([&new, &other_old, &retired]).unwrap_err();
        assert!(why.contains("switch is done"), "{why}");
        assert!(why.contains(&retired.name), "{why}");
    }

    #[test]
    fn a_listing_says_running_and_health_as_docker_ps_words_it() {
        let listed = |state: ContainerSummaryStateEnum, status: &str| {
            EngineView::of_listing(&ContainerSummary {
                state: Some(state),
                status: Some(status.into()),
                ..Default::default()
            })
        };
        use ContainerSummaryStateEnum::{EXITED, PAUSED, RESTARTING, RUNNING};
        assert!(listed(RUNNING, "Up 3 seconds").serves().is_ok());
        assert!(listed(RUNNING, "Up 2 minutes (healthy)").serves().is_ok());
        let starting = listed(RUNNING, "Up 1 second (health: starting)");
        assert_eq!(
            starting,
            EngineView::Running(Some(HealthStatusEnum::STARTING))
        );
        assert!(starting.serves().is_ok(), "no verdict yet is no refusal");
        assert!(listed(RUNNING, "Up 9 seconds (unhealthy)")
            .serves()
            .unwrap_err()
            .contains("unhealthy"));
        let exited = listed(EXITED, "Exited (3) 1 second ago")
            .serves()
            .unwrap_err();
        assert!(
            exited.contains("exited (Exited (3)") && exited.contains("not running"),
            "{exited}"
        );
        assert!(listed(RESTARTING, "Restarting (1) 2 seconds ago")
            .serves()
            .is_err());
        assert!(listed(PAUSED, "Up 4 seconds (Paused)").serves().is_err());
        assert!(EngineView::Gone.serves().unwrap_err().contains("gone"));
    }
}
