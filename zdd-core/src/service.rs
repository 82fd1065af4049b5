//! Which containers are the replicas of a service.
//!
//! A container belongs to service `S` when it carries the zdd label
//! `zdd.service=S`, or the Compose label `com.docker.compose.service=S` (so
//! a service started with `docker-compose up` is adopted as it is). With a
//! project given, the Compose project label must match too. One-off
//! containers (`docker-compose run`, migration runs) are never replicas.
//! Names are never parsed: `api-old-backup` is not a replica of `api`.

use std::collections::{BTreeMap, HashMap};

use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::ListContainersOptionsBuilder;
use futures_util::future::try_join_all;

use crate::docker::{self, Docker};
use crate::labels;
use crate::{Error, Result};

/// A service, as the labels name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    /// The Compose project, to tell apart services of the same name.
    pub project: Option<String>,
}

impl Service {
    pub fn new(name: impl Into<String>, project: Option<String>) -> Self {
        Service {
            name: name.into(),
            project,
        }
    }

    /// Whether a container with these labels is a replica of this service.
    pub fn owns(&self, labels: &HashMap<String, String>) -> bool {
        if is_oneoff(labels) {
            return false;
        }
        let named = labels.get(labels::SERVICE) == Some(&self.name)
            || labels.get(labels::compose::SERVICE) == Some(&self.name);
        let in_project = match &self.project {
            Some(project) => labels.get(labels::compose::PROJECT) == Some(project),
            None => true,
        };
        named && in_project
    }

    /// The replicas of this service, oldest first, inspected. With
    /// `include_stopped`, containers that are not running are listed too.
    pub async fn containers(
        &self,
        docker: &Docker,
        include_stopped: bool,
    ) -> Result<Vec<ContainerInspectResponse>> {
        // The engine ANDs label filters; a replica carries either label, so
        // ask once per label and merge.
        let mut ids = BTreeMap::new();
        for key in [labels::SERVICE, labels::compose::SERVICE] {
            let filters =
                HashMap::from([("label".to_string(), vec![format!("{key}={}", self.name)])]);
            let options = ListContainersOptionsBuilder::default()
                .all(include_stopped)
                .filters(&filters)
                .build();
            let listed = docker.list_containers(Some(options)).await.map_err(|e| {
                Error::docker(format!("listing containers of service `{}`", self.name), e)
            })?;
            for summary in listed {
                let owned = summary.labels.as_ref().is_some_and(|l| self.owns(l));
                if let (true, Some(id)) = (owned, summary.id) {
                    ids.insert(id, ());
                }
            }
        }
        let inspections = ids.into_keys().map(|id| async move {
            match docker.inspect_container(&id, None).await {
                Ok(inspect) => Ok(Some(inspect)),
                // Removed between the listing and now: not a replica any more.
                Err(e) if docker::is_not_found(&e) => Ok(None),
                Err(e) => Err(Error::docker(format!("inspecting container {id}"), e)),
            }
        });
        let mut containers: Vec<_> = try_join_all(inspections)
            .await?
            .into_iter()
            .flatten()
            .collect();
        containers.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        Ok(containers)
    }
}

/// Whether a container is a one-off (never a replica, never routed).
pub fn is_oneoff(labels: &HashMap<String, String>) -> bool {
    labels.get(labels::ONEOFF).is_some_and(|v| v == "true")
        || labels
            .get(labels::compose::ONEOFF)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn owns_by_zdd_or_compose_label() {
        let api = Service::new("api", None);
        assert!(api.owns(&labels(&[("zdd.service", "api")])));
        assert!(api.owns(&labels(&[("com.docker.compose.service", "api")])));
        assert!(!api.owns(&labels(&[("zdd.service", "api-worker")])));
        assert!(!api.owns(&labels(&[])));
    }

    #[test]
    fn one_off_containers_are_never_replicas() {
        let api = Service::new("api", None);
        assert!(!api.owns(&labels(&[("zdd.service", "api"), ("zdd.oneoff", "true")])));
        assert!(!api.owns(&labels(&[
            ("com.docker.compose.service", "api"),
            ("com.docker.compose.oneoff", "True")
        ])));
        assert!(api.owns(&labels(&[
            ("com.docker.compose.service", "api"),
            ("com.docker.compose.oneoff", "False")
        ])));
    }

    #[test]
    fn a_project_must_match_when_given() {
        let api = Service::new("api", Some("shop".into()));
        assert!(api.owns(&labels(&[
            ("com.docker.compose.service", "api"),
            ("com.docker.compose.project", "shop")
        ])));
        assert!(!api.owns(&labels(&[
            ("com.docker.compose.service", "api"),
            ("com.docker.compose.project", "blog")
        ])));
    }
}
