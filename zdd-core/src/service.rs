//! Which containers are the replicas of a service.
//!
//! A service is exactly one set of containers:
//!
//! - without a project, zdd's own: the label `zdd.service=S` and no Compose
//!   project label;
//! - with a project `P`, that Compose project's service: the labels
//!   `com.docker.compose.project=P` and `com.docker.compose.service=S` (so a
//!   service started with `docker-compose up` is adopted as it is, and the
//!   replicas zdd adds to it carry the same labels).
//!
//! A same-named service of another project is never part of it. A name
//! that could mean either (Compose runs a service `S` and zdd has no
//! replica of its own `S`) is an input error naming the projects
//! ([`Service::resolve`]): guessing would deploy beside, or retire, the
//! wrong containers. One-off containers (`docker-compose run`, migration
//! runs) are never replicas. Names are never parsed: `api-old-backup` is
//! not a replica of `api`. `COMPOSE_PROJECT_NAME` is not read: a variable
//! left in a shell must not change which containers a deploy acts on.

use std::collections::{BTreeMap, HashMap};

use bollard::models::ContainerInspectResponse;
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
        match &self.project {
            None => {
                labels.get(labels::SERVICE) == Some(&self.name)
                    && !labels.contains_key(labels::compose::PROJECT)
            }
            Some(project) => {
                labels.get(labels::compose::PROJECT) == Some(project)
                    && labels.get(labels::compose::SERVICE) == Some(&self.name)
            }
        }
    }

    /// The service `name` (of `project`, if given), checked against the
    /// engine: without a project, a name that only Compose services carry
    /// is ambiguous, an input error naming their projects.
    pub async fn resolve(docker: &Docker, name: &str, project: Option<String>) -> Result<Self> {
        let service = Service::new(name, project);
        if service.project.is_some() {
            return Ok(service);
        }
        let projects = compose_projects_with(docker, name).await?;
        if projects.is_empty() || service.has_any(docker).await? {
            return Ok(service);
        }
        Err(Error::Usage(format!(
            "service `{name}` is ambiguous: Compose project(s) {} run a service `{name}`, and zdd runs no replica of its own `{name}`; pass --project {} to deploy that project's service, or choose another name for zdd's own",
            projects
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", "),
            projects[0]
        )))
    }

    /// Whether the engine has any container of this service, running or
    /// not (from the listing's labels; nothing is inspected).
    async fn has_any(&self, docker: &Docker) -> Result<bool> {
        let key = self.label_key();
        let listed = docker::containers_labelled(docker, key, &self.name, true).await?;
        Ok(listed
            .iter()
            .any(|c| c.labels.as_ref().is_some_and(|l| self.owns(l))))
    }

    /// The label a container of this service is listed by.
    fn label_key(&self) -> &'static str {
        match self.project {
            None => labels::SERVICE,
            Some(_) => labels::compose::SERVICE,
        }
    }

    /// The replicas of this service, oldest first, inspected. With
    /// `include_stopped`, containers that are not running are listed too.
    pub async fn containers(
        &self,
        docker: &Docker,
        include_stopped: bool,
    ) -> Result<Vec<ContainerInspectResponse>> {
        let key = self.label_key();
        let mut ids = BTreeMap::new();
        for summary in docker::containers_labelled(docker, key, &self.name, include_stopped).await?
        {
            let owned = summary.labels.as_ref().is_some_and(|l| self.owns(l));
            if let (true, Some(id)) = (owned, summary.id) {
                ids.insert(id, ());
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

/// The Compose projects that have a (non one-off) container of service
/// `name`, sorted.
async fn compose_projects_with(docker: &Docker, name: &str) -> Result<Vec<String>> {
    let listed = docker::containers_labelled(docker, labels::compose::SERVICE, name, true).await?;
    let projects: std::collections::BTreeSet<String> = listed
        .into_iter()
        .filter_map(|c| c.labels)
        .filter(|l| !is_oneoff(l))
        .filter_map(|l| l.get(labels::compose::PROJECT).cloned())
        .collect();
    Ok(projects.into_iter().collect())
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
    fn without_a_project_only_zdds_own_replicas() {
        let api = Service::new("api", None);
        assert!(api.owns(&labels(&[("zdd.service", "api")])));
        assert!(!api.owns(&labels(&[("com.docker.compose.service", "api")])));
        // A replica zdd added to a Compose project is that project's.
        assert!(!api.owns(&labels(&[
            ("zdd.service", "api"),
            ("com.docker.compose.project", "shop"),
            ("com.docker.compose.service", "api")
        ])));
        assert!(!api.owns(&labels(&[("zdd.service", "api-worker")])));
        assert!(!api.owns(&labels(&[])));
    }

    #[test]
    fn one_off_containers_are_never_replicas() {
        let api = Service::new("api", None);
        assert!(!api.owns(&labels(&[("zdd.service", "api"), ("zdd.oneoff", "true")])));
        let shop_api = Service::new("api", Some("shop".into()));
        assert!(!shop_api.owns(&labels(&[
            ("com.docker.compose.project", "shop"),
            ("com.docker.compose.service", "api"),
            ("com.docker.compose.oneoff", "True")
        ])));
        assert!(shop_api.owns(&labels(&[
            ("com.docker.compose.project", "shop"),
            ("com.docker.compose.service", "api"),
            ("com.docker.compose.oneoff", "False")
        ])));
    }

    #[test]
    fn with_a_project_only_that_projects_service() {
        let api = Service::new("api", Some("shop".into()));
        assert!(api.owns(&labels(&[
            ("com.docker.compose.service", "api"),
            ("com.docker.compose.project", "shop")
        ])));
        assert!(api.owns(&labels(&[
            ("zdd.service", "api"),
            ("com.docker.compose.service", "api"),
            ("com.docker.compose.project", "shop")
        ])));
        assert!(!api.owns(&labels(&[
            ("com.docker.compose.service", "api"),
            ("com.docker.compose.project", "blog")
        ])));
        assert!(!api.owns(&labels(&[("zdd.service", "api")])));
        assert!(!api.owns(&labels(&[
            ("com.docker.compose.service", "web"),
            ("com.docker.compose.project", "shop")
        ])));
    }
}
