//! When a watched release has failed: the one rule, on what the engine
//! and the load balancer said at one moment, so it is tested without
//! either.

use std::collections::HashMap;

use bollard::models::EventMessage;
use zdd_core::record::Health;

/// A new replica as the engine reports it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    /// Running; `unhealthy` when its HEALTHCHECK says so.
    Running { unhealthy: bool },
    /// Exited (or gone), with its exit code when known.
    Exited { code: Option<i64> },
}

/// A new replica's server as the load balancer reports it now (the
/// servers are keyed by the address they send to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// `show stat`'s `status`: `UP`, `DOWN`, `UP 1/2`, …
    pub status: String,
    /// `hrsp_5xx + eresp`: responses that failed, since it was added.
    pub errors: u64,
    /// `stot`: sessions it served in all.
    pub sessions: u64,
}

/// A watched replica: its id, its label for people, and the address its
/// server sends to (how a server is found, whatever its name).
#[derive(Debug, Clone)]
pub struct Watched {
    pub id: String,
    pub label: String,
    pub address: String,
}

/// Why the watch failed, and which replica it blames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The replica to blame; `None` when the errors are the release's as a
    /// whole.
    pub id: Option<String>,
    pub health: Health,
    pub reason: String,
}

/// The first failure in one observation, if any: a new replica exited or
/// turned unhealthy (the engine); its server is DOWN by the load
/// balancer's own check, or missing from the backend; or the new servers
/// together answered more than `max_errors` failed responses (5xx or
/// response errors) since the watch began (`baseline`).
pub fn judge(
    watched: &[Watched],
    engine: &HashMap<String, Engine>,
    servers: Option<&HashMap<String, Server>>,
    baseline: &HashMap<String, u64>,
    max_errors: u64,
) -> Option<Failure> {
    for replica in watched {
        match engine.get(&replica.id) {
            Some(Engine::Exited { code }) => {
                let code = code.map_or("?".to_owned(), |c| c.to_string());
                return Some(Failure {
                    id: Some(replica.id.clone()),
                    health: Health::Exited,
                    reason: format!("{} exited (code {code}) during the watch", replica.label),
                });
            }
            Some(Engine::Running { unhealthy: true }) => {
                return Some(Failure {
                    id: Some(replica.id.clone()),
                    health: Health::Unhealthy,
                    reason: format!(
                        "{} turned unhealthy (Docker HEALTHCHECK) during the watch",
                        replica.label
                    ),
                });
            }
            _ => {}
        }
    }
    let servers = servers?;
    let mut errors = 0;
    for replica in watched {
        let Some(server) = servers.get(&replica.address) else {
            return Some(Failure {
                id: Some(replica.id.clone()),
                health: Health::Unhealthy,
                reason: format!(
                    "{}'s server ({}) left the backend during the watch",
                    replica.label, replica.address
                ),
            });
        };
        if server.status.starts_with("DOWN") {
            return Some(Failure {
                id: Some(replica.id.clone()),
                health: Health::Unhealthy,
                reason: format!(
                    "HAProxy calls {}'s server ({}) {} during the watch (its check failed, or it refused a connection)",
                    replica.label, replica.address, server.status
                ),
            });
        }
        let before = baseline.get(&replica.address).copied().unwrap_or(0);
        errors += server.errors.saturating_sub(before);
    }
    (errors > max_errors).then(|| Failure {
        id: None,
        health: Health::Unhealthy,
        reason: format!(
            "the new replicas answered {errors} failed response(s) (HAProxy hrsp_5xx + eresp) during the watch, more than --max-errors {max_errors}"
        ),
    })
}

/// The failure a `die` event of a watched replica is, as the engine sends
/// it (before any inspect could say so).
pub fn died(watched: &[Watched], event: &EventMessage) -> Option<Failure> {
    if event.action.as_deref() != Some("die") {
        return None;
    }
    let actor = event.actor.as_ref()?;
    let replica = watched
        .iter()
        .find(|w| actor.id.as_deref() == Some(w.id.as_str()))?;
    let code = actor
        .attributes
        .as_ref()
        .and_then(|a| a.get("exitCode"))
        .map_or("?", String::as_str);
    Some(Failure {
        id: Some(replica.id.clone()),
        health: Health::Exited,
        reason: format!("{} exited (code {code}) during the watch", replica.label),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched() -> Vec<Watched> {
        ["a", "b"]
            .iter()
            .map(|id| Watched {
                id: id.to_string(),
                label: format!("api-{id}"),
                address: format!("srv-{id}"),
            })
            .collect()
    }

    fn running() -> HashMap<String, Engine> {
        HashMap::from([
            ("a".into(), Engine::Running { unhealthy: false }),
            ("b".into(), Engine::Running { unhealthy: false }),
        ])
    }

    fn servers(a_errors: u64, b_status: &str) -> HashMap<String, Server> {
        HashMap::from([
            (
                "srv-a".into(),
                Server {
                    status: "UP".into(),
                    errors: a_errors,
                    sessions: 100,
                },
            ),
            (
                "srv-b".into(),
                Server {
                    status: b_status.into(),
                    errors: 7,
                    sessions: 100,
                },
            ),
        ])
    }

    #[test]
    fn a_die_event_of_a_watched_replica_is_a_failure_at_once() {
        let event = |action: &str, id: &str| EventMessage {
            action: Some(action.into()),
            actor: Some(bollard::models::EventActor {
                id: Some(id.into()),
                attributes: Some(HashMap::from([("exitCode".to_owned(), "3".to_owned())])),
            }),
            ..Default::default()
        };
        let failure = died(&watched(), &event("die", "b")).unwrap();
        assert_eq!(
            (failure.id.as_deref(), failure.health),
            (Some("b"), Health::Exited)
        );
        assert!(failure.reason.contains("code 3"), "{}", failure.reason);
        assert_eq!(died(&watched(), &event("die", "other")), None);
        assert_eq!(died(&watched(), &event("exec_start", "a")), None);
    }

    #[test]
    fn a_healthy_release_passes_and_errors_before_the_watch_do_not_count() {
        let baseline = HashMap::from([("srv-a".to_owned(), 3), ("srv-b".to_owned(), 7)]);
        let up = servers(3, "UP");
        assert_eq!(judge(&watched(), &running(), Some(&up), &baseline, 0), None);
        // Going down but not down yet: not a failure.
        let going = servers(3, "UP 1/2");
        assert_eq!(
            judge(&watched(), &running(), Some(&going), &baseline, 0),
            None
        );
        // Without a load balancer only the engine judges.
        assert_eq!(judge(&watched(), &running(), None, &baseline, 0), None);
    }

    #[test]
    fn an_exit_an_unhealthy_replica_a_down_server_or_errors_fail_it() {
        let baseline = HashMap::from([("srv-a".to_owned(), 3), ("srv-b".to_owned(), 7)]);
        let up = servers(3, "UP");
        let mut engine = running();
        engine.insert("b".into(), Engine::Exited { code: Some(3) });
        let failure = judge(&watched(), &engine, Some(&up), &baseline, 0).unwrap();
        assert_eq!(
            (failure.id.as_deref(), failure.health),
            (Some("b"), Health::Exited)
        );
        assert!(failure.reason.contains("code 3"), "{}", failure.reason);

        engine.insert("b".into(), Engine::Running { unhealthy: true });
        let failure = judge(&watched(), &engine, Some(&up), &baseline, 0).unwrap();
        assert_eq!(failure.health, Health::Unhealthy);

        let down = servers(3, "DOWN 1/2");
        let failure = judge(&watched(), &running(), Some(&down), &baseline, 0).unwrap();
        assert_eq!(failure.id.as_deref(), Some("b"));
        assert!(failure.reason.contains("DOWN"), "{}", failure.reason);

        let erroring = servers(8, "UP");
        assert_eq!(
            judge(&watched(), &running(), Some(&erroring), &baseline, 5),
            None
        );
        let failure = judge(&watched(), &running(), Some(&erroring), &baseline, 4).unwrap();
        assert_eq!(failure.id, None);
        assert!(
            failure.reason.contains("5 failed response"),
            "{}",
            failure.reason
        );

        let mut missing = servers(3, "UP");
        missing.remove("srv-a");
        let failure = judge(&watched(), &running(), Some(&missing), &baseline, 0).unwrap();
        assert!(
            failure.reason.contains("left the backend"),
            "{}",
            failure.reason
        );
    }
}
